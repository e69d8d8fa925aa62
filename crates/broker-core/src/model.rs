//! Domain types: what GURU3 wants, in the broker's own words (no protocol types).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An extension number: 1–32 ASCII digits, kept as text (leading zeros matter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Number(String);

impl Number {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Number {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not an extension number"));
        }
        Ok(Self(s))
    }
}

impl std::str::FromStr for Number {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<Number> for String {
    fn from(n: Number) -> Self {
        n.0
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret string (SIP password, UAK, token), zeroised when dropped. `Debug` redacts it.
///
/// It serialises as its plaintext on purpose, for one reader: the desired-state mirror, which
/// must give the OMM and the PBX the same password again after a restart.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(s.into()))
    }

    /// The plaintext.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl std::hash::Hash for Secret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expose().hash(state);
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A DECT handset: IPEI (`DDDDD DDDDDDD C`) and its authentication key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handset {
    /// Identity.
    pub ipei: String,
    /// 32 hex digits.
    pub uak: Secret,
}

/// What an extension is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Kind {
    /// SIP phone: an Asterisk user with GURU3's password.
    Sip {
        /// Digest password from GURU3.
        password: Secret,
        /// GURU3's `isPremium`: provisioned with the premium endpoint template.
        #[serde(default)]
        premium: bool,
    },
    /// DECT handset: an OMM user and an Asterisk user with a password of our own.
    Dect {
        /// Registration token (dialled from an unbound handset).
        token: Secret,
        /// DECT encryption.
        encryption: bool,
        /// A handset GURU3 knows for this extension.
        handset: Option<Handset>,
    },
    /// Call group: a route, members come separately.
    Group {
        /// Tag before the caller name.
        short_name: String,
    },
    /// GSM, APP, ANNOUNCEMENT, SPECIAL or a future type: recorded, nothing provisioned.
    Other {
        /// The GURU3 type name.
        wire_type: String,
    },
}

impl Kind {
    /// Short name for logs.
    pub fn label(&self) -> &str {
        match self {
            Self::Sip { .. } => "SIP",
            Self::Dect { .. } => "DECT",
            Self::Group { .. } => "GROUP",
            Self::Other { wire_type } => wire_type,
        }
    }
}

/// A call forward, kept by number (GURU3 does not re-send it on a rename of the target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// Target.
    pub target: Number,
    /// `DISABLED`, `ENABLED`, `ON_BUSY`, `ON_UNAVAILABLE`.
    pub mode: String,
    /// Seconds.
    pub delay_s: u32,
}

/// The desired state of one extension (from `UPDATE_EXTENSION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Number.
    pub number: Number,
    /// Display name as GURU3 has it (sanitised per backend).
    pub name: String,
    /// Type-specific part.
    pub kind: Kind,
    /// Forward, if set.
    pub forward: Option<Forward>,
    /// How calls to it are routed (SIP and DECT; kept for every type).
    #[serde(default)]
    pub routing: Routing,
}

/// The routing fields of an `UPDATE_EXTENSION` besides the forward (guru3.md §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Routing {
    /// A second call is offered while in a call.
    pub call_waiting: bool,
    /// May dial out.
    pub allow_dialout: bool,
    /// Prefix trunk.
    pub trunk: bool,
    /// DECT `displayModus`: `NUMBER`, `NUMBER_NAME` or `NAME`.
    pub display: String,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            call_waiting: true,
            allow_dialout: false,
            trunk: false,
            display: "NUMBER_NAME".into(),
        }
    }
}

/// A member of a call group or multiring list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Member number.
    pub number: Number,
    /// Not paused.
    pub active: bool,
    /// Seconds from the start of the call (0–600).
    pub delay_s: u32,
}

/// One GURU3 message, decoded into what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `UPDATE_EXTENSION`.
    Upsert(Extension),
    /// `DELETE_EXTENSION`.
    Delete(Number),
    /// `RENAME_EXTENSION`.
    Rename {
        /// Old number.
        old: Number,
        /// New number.
        new: Number,
    },
    /// `UPDATE_CALLGROUP`: the complete list.
    SetMembers {
        /// Group or multiring extension.
        number: Number,
        /// Its name.
        name: String,
        /// Members.
        members: Vec<Member>,
    },
    /// `UNSUBSCRIBE_DEVICE`.
    Unsubscribe(Number),
    /// `CALL_EXTENSION` (not supported by this broker: recorded and acked).
    CallExtension(Number),
    /// Not from GURU3: an operator's repair of drift (`hexidian reconcile --apply`). Brings
    /// what hexidian owns of this number in the PBX and the OMM in line with the mirror:
    /// re-checks and rewrites what differs, and removes hexidian's objects the mirror does
    /// not have. Foreign objects stay untouched.
    Repair(Number),
    /// `SYNC_STARTED`.
    SyncStarted,
    /// `SYNC_ENDED`.
    SyncEnded,
    /// A message type this broker does not know (recorded and acked).
    Unknown {
        /// The wire type.
        kind: String,
    },
}

/// One message from the feed: its id, type name, raw payload (for the journal) and what it
/// decoded to (or why it did not).
#[derive(Clone)]
pub struct Incoming {
    /// GURU3 message id.
    pub id: i64,
    /// Wire type.
    pub kind: String,
    /// The envelope as received, with passwords, tokens and UAKs redacted by the feed (kept in
    /// the journal for dead letters only; never printed by `Debug`).
    pub raw: String,
    /// What the feed redacted from `raw` (a JSON object of JSON pointer → value), kept apart
    /// so that a dead letter can be replayed; `None` when nothing was redacted. Never shown.
    pub secrets: Option<Secret>,
    /// Decoded command, or the decode error.
    pub command: Result<Command, String>,
}

impl Incoming {
    /// The number the message is about: from the decoded command, else (a message that did
    /// not decode) the `number` or `old_extension` its envelope names, if that is a number.
    pub fn number(&self) -> Option<Number> {
        match &self.command {
            Ok(Command::Upsert(e)) => Some(e.number.clone()),
            Ok(
                Command::Delete(n)
                | Command::Unsubscribe(n)
                | Command::CallExtension(n)
                | Command::Repair(n)
                | Command::SetMembers { number: n, .. },
            ) => Some(n.clone()),
            Ok(Command::Rename { old, .. }) => Some(old.clone()),
            Ok(Command::SyncStarted | Command::SyncEnded | Command::Unknown { .. }) => None,
            Err(_) => {
                let v: serde_json::Value = serde_json::from_str(&self.raw).ok()?;
                let data = v.get("data")?;
                ["number", "old_extension"]
                    .iter()
                    .find_map(|k| data.get(*k)?.as_str()?.parse().ok())
            }
        }
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("raw_len", &self.raw.len())
            .field("command", &self.command)
            .finish()
    }
}

/// What the broker remembers about one number: the latest desired extension and member list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorEntry {
    /// The extension, if GURU3 has one under this number.
    pub extension: Option<Extension>,
    /// The latest member list (group or multiring), possibly for a number without extension.
    pub members: Vec<Member>,
    /// Sync epoch in which the extension was last seen.
    pub seen_epoch: i64,
    /// Sync epoch in which the member list was last sent.
    pub members_epoch: i64,
}

/// What the unbound-handset workflow needs to know of GURU3's DECT extensions, published by
/// the broker whenever its mirror changes.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    by_token: std::collections::HashMap<String, Number>,
    by_ipei: std::collections::HashMap<String, Number>,
    dect: std::collections::HashMap<Number, (String, Option<String>)>,
    roster: std::collections::BTreeMap<Number, Listed>,
    planned: std::collections::HashSet<Number>,
}

/// An extension as the status page lists it: what an operator may see, no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listed {
    /// Display name as GURU3 has it.
    pub name: String,
    /// `SIP`, `DECT`, `GROUP` or GURU3's name of another type.
    pub kind: String,
    /// The IPEI of the handset bound to a DECT extension, as applied.
    pub handset: Option<String>,
}

impl Directory {
    /// The DECT extension whose registration token this is.
    pub fn by_token(&self, token: &str) -> Option<&Number> {
        self.by_token.get(token)
    }

    /// The DECT extension GURU3 knows this handset for.
    pub fn by_ipei(&self, ipei: &str) -> Option<&Number> {
        self.by_ipei.get(ipei)
    }

    /// Whether the number is a DECT extension.
    pub fn is_dect(&self, number: &Number) -> bool {
        self.dect.contains_key(number)
    }

    /// Extensions whose number starts with `query` or whose name contains it (ignoring
    /// case), in number order, at most `limit`; every extension for an empty query.
    pub fn search(&self, query: &str, limit: usize) -> Vec<(&Number, &Listed)> {
        let q = query.trim().to_lowercase();
        self.roster
            .iter()
            .filter(|(n, l)| {
                q.is_empty() || n.as_str().starts_with(&q) || l.name.to_lowercase().contains(&q)
            })
            .take(limit)
            .collect()
    }

    /// Whether the entry of `number` is a plan not yet settled: a message changing it is
    /// being applied or waits for a target (the OMM user of a new DECT extension may not
    /// exist yet).
    pub fn is_planned(&self, number: &Number) -> bool {
        self.planned.contains(number)
    }

    /// Extensions listed.
    pub fn len(&self) -> usize {
        self.roster.len()
    }

    /// Whether no extension is listed.
    pub fn is_empty(&self) -> bool {
        self.roster.is_empty()
    }

    /// Shows the planned entry of `number` (`None`: gone) until [`set`](Self::set) settles it.
    pub fn plan(&mut self, number: &Number, entry: Option<&MirrorEntry>) {
        self.set(number, entry);
        self.planned.insert(number.clone());
    }

    /// Updates the entry of `number` (`None`: gone) as applied.
    pub fn set(&mut self, number: &Number, entry: Option<&MirrorEntry>) {
        self.planned.remove(number);
        match entry.and_then(|e| e.extension.as_ref()) {
            Some(x) => {
                let (kind, handset) = match &x.kind {
                    Kind::Sip { .. } => ("SIP".to_owned(), None),
                    Kind::Dect { handset, .. } => {
                        ("DECT".to_owned(), handset.as_ref().map(|h| h.ipei.clone()))
                    }
                    Kind::Group { .. } => ("GROUP".to_owned(), None),
                    Kind::Other { .. } => ("OTHER".to_owned(), None),
                };
                self.roster.insert(
                    number.clone(),
                    Listed {
                        name: x.name.clone(),
                        kind,
                        handset,
                    },
                );
            }
            None => {
                self.roster.remove(number);
            }
        }
        if let Some((token, ipei)) = self.dect.remove(number) {
            if self.by_token.get(&token) == Some(number) {
                self.by_token.remove(&token);
            }
            if let Some(i) = ipei {
                if self.by_ipei.get(&i) == Some(number) {
                    self.by_ipei.remove(&i);
                }
            }
        }
        if let Some(Extension {
            kind: Kind::Dect { token, handset, .. },
            ..
        }) = entry.and_then(|e| e.extension.as_ref())
        {
            let ipei = handset.as_ref().map(|h| h.ipei.clone());
            // an extension without a token cannot be claimed by token call
            if !token.expose().is_empty() {
                self.by_token
                    .insert(token.expose().to_owned(), number.clone());
            }
            if let Some(i) = &ipei {
                self.by_ipei.insert(i.clone(), number.clone());
            }
            self.dect
                .insert(number.clone(), (token.expose().to_owned(), ipei));
        }
    }
}

/// The directory, shared between the broker (writer) and the unbound-handset workflow.
pub type SharedDirectory = std::sync::Arc<std::sync::RwLock<Directory>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_number_even_when_it_did_not_decode() {
        let msg = |raw: &str, command: Result<Command, String>| Incoming {
            id: 1,
            kind: "UPDATE_EXTENSION".into(),
            raw: raw.into(),
            secrets: None,
            command,
        };
        let n = |s: &str| s.parse::<Number>().unwrap();
        assert_eq!(
            msg("", Ok(Command::Delete(n("2001")))).number(),
            Some(n("2001"))
        );
        assert_eq!(
            msg(
                "",
                Ok(Command::Rename {
                    old: n("2002"),
                    new: n("2020")
                })
            )
            .number(),
            Some(n("2002"))
        );
        assert_eq!(msg("", Ok(Command::SyncEnded)).number(), None);
        let bad = Err("no name".to_owned());
        assert_eq!(
            msg(
                r#"{"id": 1, "data": {"number": "2345", "type": "??"}}"#,
                bad.clone()
            )
            .number(),
            Some(n("2345"))
        );
        assert_eq!(
            msg(r#"{"data": {"old_extension": "2002"}}"#, bad.clone()).number(),
            Some(n("2002"))
        );
        for raw in [
            r#"{"data": {"number": "12; DROP"}}"#,
            "not json",
            r#"{"data": 5}"#,
        ] {
            assert_eq!(msg(raw, bad.clone()).number(), None, "{raw}");
        }
    }

    fn entry(name: &str, kind: Kind) -> MirrorEntry {
        MirrorEntry {
            extension: Some(Extension {
                number: "1".parse().unwrap_or_else(|_| unreachable!()),
                name: name.into(),
                kind,
                forward: None,
                routing: Routing::default(),
            }),
            members: Vec::new(),
            seen_epoch: 0,
            members_epoch: 0,
        }
    }

    #[test]
    fn the_roster_lists_extensions_without_secrets_and_finds_by_number_or_name() {
        let mut d = Directory::default();
        let n = |s: &str| s.parse::<Number>().unwrap_or_else(|_| unreachable!());
        d.set(
            &n("2001"),
            Some(&entry(
                "Tomás <b>",
                Kind::Dect {
                    token: Secret::new("05704191"),
                    encryption: true,
                    handset: Some(Handset {
                        ipei: "03587 0412396 2".into(),
                        uak: Secret::new("FA05689957F199E95B1FE44621BFD6EE"),
                    }),
                },
            )),
        );
        d.set(
            &n("2101"),
            Some(&entry(
                "Kiosk",
                Kind::Sip {
                    password: Secret::new("pw"),
                    premium: false,
                },
            )),
        );
        fn numbers(d: &Directory, q: &str) -> Vec<String> {
            d.search(q, 10).iter().map(|(n, _)| n.to_string()).collect()
        }
        assert_eq!(numbers(&d, ""), ["2001", "2101"]);
        assert_eq!(numbers(&d, "21"), ["2101"]);
        assert_eq!(numbers(&d, "tomÁs"), ["2001"]);
        assert_eq!(numbers(&d, "KIOSK"), ["2101"]);
        let (_, l) = d.search("2001", 1)[0];
        assert_eq!(l.handset.as_deref(), Some("03587 0412396 2"));
        assert_eq!(l.kind, "DECT");
        assert!(!format!("{l:?}").contains("0570"), "no token in the roster");
        d.set(&n("2001"), None);
        assert_eq!(numbers(&d, ""), ["2101"]);
        assert_eq!(d.len(), 1);
        assert!(!d.is_planned(&n("2101")));
        d.plan(&n("2101"), None);
        assert!(d.is_planned(&n("2101")));
        assert!(d.is_empty(), "a planned delete shows at once");
        d.set(&n("2101"), None);
        assert!(!d.is_planned(&n("2101")), "settled");
    }
}

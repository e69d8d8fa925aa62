//! Outbound wire messages (GURU3 → consumer), spec §5–§6.
//!
//! A page from `GET …/messages` is decoded in two steps. [`Page::from_json`] turns the JSON
//! array into [`RawMessage`] envelopes (id, timestamp, type, data) and sets aside elements that
//! are not even envelopes. [`RawMessage::decode`] then turns one envelope into a typed
//! [`Message`]; it fails for that message alone, so one bad message never fails a page.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::types::{AudioHash, Extension, InvalidValue, Ipei, MessageId, SipPassword, Token, Uak};

/// Upper bound for free-text fields (`name`, `location`, …). GURU3 allows 64 characters; the
/// Django admin allows more. Anything beyond this is treated as malformed.
pub const MAX_TEXT_CHARS: usize = 256;

/// Why a message (or a page) could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not JSON of the expected shape.
    #[error("malformed json in {context}")]
    Json {
        /// What was being decoded (`page`, `UPDATE_EXTENSION 52002`, …).
        context: String,
        /// The parser's report.
        #[source]
        source: serde_json::Error,
    },
    /// A field is present but its value is not acceptable.
    #[error("{context}: field `{field}`: {reason}")]
    Invalid {
        /// What was being decoded.
        context: String,
        /// The wire name of the field.
        field: &'static str,
        /// What is wrong with the value.
        reason: InvalidValue,
    },
}

/// The envelope of one outbound message, its `data` not yet interpreted.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    /// The id to acknowledge.
    pub id: MessageId,
    /// Creation time, Unix seconds (GURU3's wall clock).
    pub timestamp: f64,
    /// The wire `type`.
    pub kind: String,
    /// The type-specific payload.
    pub data: Value,
}

/// One GET response: messages in server order, plus elements that were not envelopes.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Well-formed envelopes, in the order GURU3 returned them.
    pub messages: Vec<RawMessage>,
    /// Array elements without a usable `id` (they cannot be acked); kept for reporting.
    pub malformed: Vec<Value>,
    /// How many elements the server returned in total.
    pub returned: usize,
}

impl Page {
    /// Decodes a GET body. Fails only if the body is not a JSON array.
    pub fn from_json(body: &[u8]) -> Result<Self, DecodeError> {
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| DecodeError::Json {
            context: "message page".into(),
            source: e,
        })?;
        let mut page = Self {
            returned: items.len(),
            messages: Vec::with_capacity(items.len()),
            ..Self::default()
        };
        // each envelope's `data` moves into its message: a page is held once, not twice
        for item in items {
            match RawMessage::from_value(item) {
                Ok(m) => page.messages.push(m),
                Err(item) => page.malformed.push(item),
            }
        }
        Ok(page)
    }
}

impl RawMessage {
    /// The message of an envelope, or the envelope back if it has no usable id.
    fn from_value(mut v: Value) -> Result<Self, Value> {
        let Some(id) = v
            .get("id")
            .and_then(Value::as_i64)
            .and_then(|id| MessageId::new(id).ok())
        else {
            return Err(v);
        };
        let Some(obj) = v.as_object_mut() else {
            return Err(v);
        };
        Ok(Self {
            id,
            timestamp: obj.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0),
            kind: obj
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            data: obj.remove("data").unwrap_or(Value::Null),
        })
    }

    /// Interprets `data` according to `type`. Unknown types decode to [`Message::Unknown`].
    pub fn decode(&self) -> Result<Message, DecodeError> {
        let context = format!("{} {}", self.kind, self.id);
        let cx = Cx { context: &context };
        Ok(match self.kind.as_str() {
            "UPDATE_EXTENSION" => {
                Message::UpdateExtension(Box::new(cx.update_extension(&self.data)?))
            }
            "DELETE_EXTENSION" => {
                let w: wire::Number = cx.json(&self.data)?;
                Message::DeleteExtension {
                    number: cx.ext("number", &w.number)?,
                }
            }
            "RENAME_EXTENSION" => {
                let w: wire::Rename = cx.json(&self.data)?;
                Message::RenameExtension {
                    old: cx.ext("old_extension", &w.old_extension)?,
                    new: cx.ext("new_extension", &w.new_extension)?,
                }
            }
            "UPDATE_CALLGROUP" => Message::UpdateCallgroup(cx.callgroup(&self.data)?),
            "UNSUBSCRIBE_DEVICE" => {
                let w: wire::Unsubscribe = cx.json(&self.data)?;
                Message::UnsubscribeDevice {
                    extension: cx.ext("extension", &w.extension)?,
                }
            }
            "CALL_EXTENSION" => {
                let w: wire::Call = cx.json(&self.data)?;
                Message::CallExtension(CallExtension {
                    number: cx.ext("number", &w.number)?,
                    caller_number: cx.text("caller_number", w.caller_number)?,
                    caller_name: cx.text("caller_name", w.caller_name)?,
                    announcement_audio: cx.audio("announcement_audio", &w.announcement_audio)?,
                })
            }
            "SYNC_STARTED" => Message::SyncStarted,
            "SYNC_ENDED" => Message::SyncEnded,
            _ => Message::Unknown {
                kind: self.kind.clone(),
                data: self.data.clone(),
            },
        })
    }
}

/// A decoded outbound message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// The full desired state of one extension (an upsert, not a delta).
    #[doc(alias = "UPDATE_EXTENSION")]
    UpdateExtension(Box<ExtensionUpdate>),
    /// The extension no longer exists (its group memberships vanish silently, spec §6.2).
    #[doc(alias = "DELETE_EXTENSION")]
    DeleteExtension {
        /// The deleted number.
        number: Extension,
    },
    /// The extension got a new number; an `UPDATE_EXTENSION` for `new` follows.
    #[doc(alias = "RENAME_EXTENSION")]
    RenameExtension {
        /// Previous number.
        old: Extension,
        /// New number.
        new: Extension,
    },
    /// The complete accepted member list of a group or multiring extension.
    #[doc(alias = "UPDATE_CALLGROUP")]
    UpdateCallgroup(Callgroup),
    /// Release the handset of a DECT extension (the extension stays).
    #[doc(alias = "UNSUBSCRIBE_DEVICE")]
    UnsubscribeDevice {
        /// The DECT extension.
        extension: Extension,
    },
    /// Place a call and play audio (rental recall).
    #[doc(alias = "CALL_EXTENSION")]
    CallExtension(CallExtension),
    /// Start of a full resync window.
    #[doc(alias = "SYNC_STARTED")]
    SyncStarted,
    /// End of a full resync window.
    #[doc(alias = "SYNC_ENDED")]
    SyncEnded,
    /// A type this crate does not know; kept verbatim.
    Unknown {
        /// The wire `type`.
        kind: String,
        /// The payload.
        data: Value,
    },
}

/// `UPDATE_EXTENSION` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionUpdate {
    /// The number.
    pub number: Extension,
    /// Display name (arbitrary Unicode, may be empty).
    pub name: String,
    /// Free-text location.
    pub location: String,
    /// Prompt language.
    pub announcement_lang: Language,
    /// Custom ringback audio, if any.
    pub ringback_tone: Option<AudioHash>,
    /// Whether a second call is offered while busy.
    pub call_waiting: bool,
    /// May call external destinations.
    pub allow_dialout: bool,
    /// `has_multiring: true` was present (can be stale, spec §9.10).
    pub has_multiring: bool,
    /// Prefix trunk.
    pub trunk: bool,
    /// Call forward, if a target is set.
    pub forward: Option<Forward>,
    /// Type-specific part.
    pub kind: ExtensionKind,
}

/// A configured call forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Target number.
    pub extension: Extension,
    /// When it applies.
    pub mode: ForwardMode,
    /// Seconds before forwarding (`Enabled` only).
    pub delay_s: u32,
}

/// `forward_mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardMode {
    /// Stored but off.
    Disabled,
    /// After `delay_s` seconds (0: at once).
    Enabled,
    /// When busy (and unavailable).
    OnBusy,
    /// When unreachable.
    OnUnavailable,
    /// A mode this crate does not know.
    Unknown(String),
}

/// `announcement_lang`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Language {
    /// `de-DE`
    DeDe,
    /// `en-GB`
    EnGb,
    /// `en-US`
    EnUs,
    /// Something else.
    Unknown(String),
}

/// `displayModus` of a DECT extension.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisplayMode {
    /// `NUMBER`
    Number,
    /// `NUMBER_NAME`
    NumberName,
    /// `NAME`
    Name,
    /// Something else.
    Unknown(String),
}

/// A handset GURU3 knows for a DECT extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handset {
    /// Its identity.
    pub ipei: Ipei,
    /// Its authentication key.
    pub uak: Uak,
}

/// The type-specific fields of an extension.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExtensionKind {
    /// SIP phone registering with GURU3's password.
    Sip {
        /// Digest password.
        password: SipPassword,
        /// Provision on the premium SIP server.
        is_premium: bool,
    },
    /// DECT handset.
    Dect {
        /// Registration token; `None` when GURU3 sent `""` (an extension created by a code
        /// path that skipped the type's initialisation): no token binding for it.
        token: Option<Token>,
        /// Air-interface encryption.
        use_encryption: bool,
        /// Caller-ID display.
        display_mode: DisplayMode,
        /// Known handset, if GURU3 has one.
        handset: Option<Handset>,
    },
    /// Phone on the event GSM network.
    Gsm {
        /// Registration token.
        token: Token,
        /// 2G opt-in.
        use_2g: bool,
        /// 3G opt-in.
        use_3g: bool,
        /// 4G opt-in.
        use_4g: bool,
    },
    /// Call group (members arrive as `UPDATE_CALLGROUP`).
    Group {
        /// Tag shown before group calls (0–3 chars).
        short_name: String,
    },
    /// PBX application.
    App {
        /// Yate-style routing target, `""` if none.
        direct_routing_target: String,
    },
    /// Plays an audio file.
    Announcement {
        /// Audio to play, if not deleted.
        announcement_audio: Option<AudioHash>,
    },
    /// Reserved or internal number.
    Special,
    /// An extension type this crate does not know.
    Unknown(String),
}

impl ExtensionKind {
    /// The wire name of the type.
    pub fn wire_name(&self) -> &str {
        match self {
            Self::Sip { .. } => "SIP",
            Self::Dect { .. } => "DECT",
            Self::Gsm { .. } => "GSM",
            Self::Group { .. } => "GROUP",
            Self::App { .. } => "APP",
            Self::Announcement { .. } => "ANNOUNCEMENT",
            Self::Special => "SPECIAL",
            Self::Unknown(s) => s,
        }
    }
}

/// `UPDATE_CALLGROUP` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Callgroup {
    /// The group or multiring extension.
    pub number: Extension,
    /// Its name.
    pub name: String,
    /// All accepted members (may be empty).
    pub members: Vec<Member>,
}

/// One accepted member of a call group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's number.
    pub extension: Extension,
    /// `false`: paused.
    pub active: bool,
    /// Seconds from the start of the group call (0–600).
    pub delay_s: u32,
}

/// `CALL_EXTENSION` payload (caller fields as on the wire, which GURU3 swaps, spec §6.6).
#[derive(Debug, Clone, PartialEq)]
pub struct CallExtension {
    /// Extension to call.
    pub number: Extension,
    /// Wire `caller_number` (in current GURU3 the label).
    pub caller_number: String,
    /// Wire `caller_name` (in current GURU3 the number).
    pub caller_name: String,
    /// Audio to play.
    pub announcement_audio: Option<AudioHash>,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UpdateExtension(u) => {
                write!(f, "UPDATE_EXTENSION {} ({})", u.number, u.kind.wire_name())
            }
            Self::DeleteExtension { number } => write!(f, "DELETE_EXTENSION {number}"),
            Self::RenameExtension { old, new } => write!(f, "RENAME_EXTENSION {old}→{new}"),
            Self::UpdateCallgroup(g) => {
                write!(
                    f,
                    "UPDATE_CALLGROUP {} ({} members)",
                    g.number,
                    g.members.len()
                )
            }
            Self::UnsubscribeDevice { extension } => write!(f, "UNSUBSCRIBE_DEVICE {extension}"),
            Self::CallExtension(c) => write!(f, "CALL_EXTENSION {}", c.number),
            Self::SyncStarted => f.write_str("SYNC_STARTED"),
            Self::SyncEnded => f.write_str("SYNC_ENDED"),
            Self::Unknown { kind, .. } => write!(f, "unknown message type {kind:?}"),
        }
    }
}

/// The raw serde shapes. Cosmetic fields default when absent; identity and credential fields
/// (number, type, password, token) are required.
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct Number {
        pub(super) number: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Rename {
        pub(super) old_extension: String,
        pub(super) new_extension: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Unsubscribe {
        pub(super) extension: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Call {
        pub(super) number: String,
        #[serde(default)]
        pub(super) caller_number: String,
        #[serde(default)]
        pub(super) caller_name: String,
        #[serde(default)]
        pub(super) announcement_audio: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Dect {
        pub(super) ipei: String,
        pub(super) uak: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Update {
        pub(super) number: String,
        #[serde(rename = "type")]
        pub(super) kind: String,
        #[serde(default)]
        pub(super) name: String,
        #[serde(default)]
        pub(super) location: String,
        #[serde(default)]
        pub(super) announcement_lang: String,
        #[serde(default)]
        pub(super) ringback_tone: String,
        #[serde(default = "yes")]
        pub(super) call_waiting: bool,
        #[serde(default)]
        pub(super) allow_dialout: bool,
        #[serde(default)]
        pub(super) has_multiring: bool,
        #[serde(default)]
        pub(super) trunk: bool,
        pub(super) forward_extension: Option<String>,
        pub(super) forward_mode: Option<String>,
        pub(super) forward_delay: Option<u64>,
        // SIP
        pub(super) password: Option<String>,
        #[serde(default, rename = "isPremium")]
        pub(super) is_premium: bool,
        // DECT / GSM
        pub(super) token: Option<String>,
        #[serde(default, rename = "useEncryption")]
        pub(super) use_encryption: bool,
        #[serde(default, rename = "displayModus")]
        pub(super) display_modus: String,
        pub(super) dect: Option<Dect>,
        #[serde(default, rename = "use2G")]
        pub(super) use_2g: bool,
        #[serde(default, rename = "use3G")]
        pub(super) use_3g: bool,
        #[serde(default, rename = "use4G")]
        pub(super) use_4g: bool,
        // GROUP, APP, ANNOUNCEMENT
        #[serde(default)]
        pub(super) short_name: String,
        #[serde(default)]
        pub(super) direct_routing_target: String,
        #[serde(default)]
        pub(super) announcement_audio: String,
    }

    fn yes() -> bool {
        true
    }

    #[derive(Deserialize)]
    pub(super) struct Member {
        pub(super) extension: String,
        #[serde(default = "yes")]
        pub(super) active: bool,
        #[serde(default)]
        pub(super) delay: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct Callgroup {
        pub(super) number: String,
        #[serde(default)]
        pub(super) name: String,
        pub(super) extensions: Vec<Member>,
    }
}

struct Cx<'a> {
    context: &'a str,
}

impl Cx<'_> {
    fn json<T: for<'de> Deserialize<'de>>(&self, v: &Value) -> Result<T, DecodeError> {
        T::deserialize(v).map_err(|e| DecodeError::Json {
            context: self.context.to_owned(),
            source: e,
        })
    }

    fn bad(&self, field: &'static str, reason: InvalidValue) -> DecodeError {
        DecodeError::Invalid {
            context: self.context.to_owned(),
            field,
            reason,
        }
    }

    fn parse<T: std::str::FromStr<Err = InvalidValue>>(
        &self,
        field: &'static str,
        s: &str,
    ) -> Result<T, DecodeError> {
        s.parse().map_err(|e| self.bad(field, e))
    }

    fn ext(&self, field: &'static str, s: &str) -> Result<Extension, DecodeError> {
        self.parse(field, s)
    }

    fn text(&self, field: &'static str, s: String) -> Result<String, DecodeError> {
        if s.contains('\0') {
            return Err(self.bad(
                field,
                InvalidValue {
                    what: "text",
                    reason: "contains NUL",
                },
            ));
        }
        if s.chars().count() > MAX_TEXT_CHARS {
            return Err(self.bad(
                field,
                InvalidValue {
                    what: "text",
                    reason: "longer than 256 characters",
                },
            ));
        }
        Ok(s)
    }

    fn audio(&self, field: &'static str, s: &str) -> Result<Option<AudioHash>, DecodeError> {
        if s.is_empty() {
            Ok(None)
        } else {
            self.parse(field, s).map(Some)
        }
    }

    fn update_extension(&self, data: &Value) -> Result<ExtensionUpdate, DecodeError> {
        let w: wire::Update = self.json(data)?;
        let need = |field: &'static str, v: Option<String>| {
            v.ok_or_else(|| {
                self.bad(
                    field,
                    InvalidValue {
                        what: field,
                        reason: "missing",
                    },
                )
            })
        };
        let kind = match w.kind.as_str() {
            "SIP" => ExtensionKind::Sip {
                password: self.parse("password", &need("password", w.password)?)?,
                is_premium: w.is_premium,
            },
            "DECT" => ExtensionKind::Dect {
                token: match need("token", w.token)? {
                    t if t.is_empty() => None,
                    t => Some(self.parse("token", &t)?),
                },
                use_encryption: w.use_encryption,
                display_mode: match w.display_modus.as_str() {
                    "NUMBER" => DisplayMode::Number,
                    "NUMBER_NAME" | "" => DisplayMode::NumberName,
                    "NAME" => DisplayMode::Name,
                    other => DisplayMode::Unknown(self.text("displayModus", other.to_owned())?),
                },
                handset: match w.dect {
                    Some(d) => Some(Handset {
                        ipei: self.parse("dect.ipei", &d.ipei)?,
                        uak: self.parse("dect.uak", &d.uak)?,
                    }),
                    None => None,
                },
            },
            "GSM" => ExtensionKind::Gsm {
                token: self.parse("token", &need("token", w.token)?)?,
                use_2g: w.use_2g,
                use_3g: w.use_3g,
                use_4g: w.use_4g,
            },
            "GROUP" => ExtensionKind::Group {
                short_name: self.text("short_name", w.short_name)?,
            },
            "APP" => ExtensionKind::App {
                direct_routing_target: self
                    .text("direct_routing_target", w.direct_routing_target)?,
            },
            "ANNOUNCEMENT" => ExtensionKind::Announcement {
                announcement_audio: self.audio("announcement_audio", &w.announcement_audio)?,
            },
            "SPECIAL" => ExtensionKind::Special,
            other => ExtensionKind::Unknown(self.text("type", other.to_owned())?),
        };
        let forward = match w.forward_extension {
            Some(target) => Some(Forward {
                extension: self.ext("forward_extension", &target)?,
                mode: match w.forward_mode.as_deref() {
                    Some("DISABLED") => ForwardMode::Disabled,
                    Some("ENABLED") | None => ForwardMode::Enabled,
                    Some("ON_BUSY") => ForwardMode::OnBusy,
                    Some("ON_UNAVAILABLE") => ForwardMode::OnUnavailable,
                    Some(other) => {
                        ForwardMode::Unknown(self.text("forward_mode", other.to_owned())?)
                    }
                },
                // no upper bound in GURU3; clamp to ten minutes
                delay_s: w.forward_delay.unwrap_or(0).min(600) as u32,
            }),
            None => None,
        };
        Ok(ExtensionUpdate {
            number: self.ext("number", &w.number)?,
            name: self.text("name", w.name)?,
            location: self.text("location", w.location)?,
            announcement_lang: match w.announcement_lang.as_str() {
                "de-DE" => Language::DeDe,
                "en-GB" => Language::EnGb,
                "en-US" => Language::EnUs,
                other => Language::Unknown(self.text("announcement_lang", other.to_owned())?),
            },
            ringback_tone: self.audio("ringback_tone", &w.ringback_tone)?,
            call_waiting: w.call_waiting,
            allow_dialout: w.allow_dialout,
            has_multiring: w.has_multiring,
            trunk: w.trunk,
            forward,
            kind,
        })
    }

    fn callgroup(&self, data: &Value) -> Result<Callgroup, DecodeError> {
        let w: wire::Callgroup = self.json(data)?;
        let members = w
            .extensions
            .into_iter()
            .map(|m| {
                if m.delay > 600 {
                    return Err(self.bad(
                        "extensions[].delay",
                        InvalidValue {
                            what: "delay",
                            reason: "above 600 seconds",
                        },
                    ));
                }
                Ok(Member {
                    extension: self.ext("extensions[].extension", &m.extension)?,
                    active: m.active,
                    delay_s: m.delay as u32,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Callgroup {
            number: self.ext("number", &w.number)?,
            name: self.text("name", w.name)?,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(kind: &str, data: Value) -> RawMessage {
        RawMessage {
            id: MessageId::new(1).unwrap(),
            timestamp: 0.0,
            kind: kind.into(),
            data,
        }
    }

    fn err(kind: &str, data: Value) -> String {
        raw(kind, data).decode().unwrap_err().to_string()
    }

    #[test]
    fn bad_fields_give_typed_errors_naming_the_field() {
        let base = json!({"number": "2001", "type": "SIP", "password": "x"});
        let with = |k: &str, v: Value| {
            let mut d = base.clone();
            d[k] = v;
            d
        };
        assert_eq!(
            err("UPDATE_EXTENSION", json!({"type": "SIP"})),
            "malformed json in UPDATE_EXTENSION 1"
        );
        assert!(err("UPDATE_EXTENSION", with("number", json!("20a1"))).contains("`number`"));
        assert!(err("UPDATE_EXTENSION", with("number", json!(2001))).contains("malformed json"));
        assert!(err("UPDATE_EXTENSION", with("name", json!("a\0b"))).contains("contains NUL"));
        assert!(
            err("UPDATE_EXTENSION", with("name", json!("x".repeat(10_000))))
                .contains("longer than 256")
        );
        assert!(
            err("UPDATE_EXTENSION", json!({"number": "2001", "type": "SIP"}))
                .contains("`password`")
        );
        assert!(
            err(
                "UPDATE_EXTENSION",
                json!({"number": "2001", "type": "DECT", "token": "12ab"})
            )
            .contains("`token`")
        );
        assert!(
            err(
                "UPDATE_CALLGROUP",
                json!({"number": "1", "extensions": [{"extension": "2", "delay": 601}]})
            )
            .contains("delay")
        );
        // an empty password names what to do about it; an empty DECT token is no error
        assert!(
            err(
                "UPDATE_EXTENSION",
                json!({"number": "2001", "type": "SIP", "password": ""})
            )
            .contains("set a SIP password for this extension in GURU3")
        );
        let tokenless = raw(
            "UPDATE_EXTENSION",
            json!({"number": "2002", "type": "DECT", "token": ""}),
        )
        .decode()
        .unwrap();
        assert!(matches!(
            tokenless,
            Message::UpdateExtension(ref u)
                if matches!(u.kind, ExtensionKind::Dect { token: None, .. })
        ));
        assert!(err("DELETE_EXTENSION", json!(null)).contains("malformed json"));
        assert!(err("RENAME_EXTENSION", json!({"old_extension": "1"})).contains("malformed"));
    }

    #[test]
    fn emoji_names_survive_and_unknown_types_are_kept() {
        let m = raw(
            "UPDATE_EXTENSION",
            json!({"number": "2345", "type": "DECT", "token": "0001", "name": "Tomás R. 📞"}),
        )
        .decode()
        .unwrap();
        let Message::UpdateExtension(u) = m else {
            panic!("{m:?}")
        };
        assert_eq!(u.name, "Tomás R. 📞");
        let m = raw("TELEPORT", json!({"x": 1})).decode().unwrap();
        assert_eq!(
            m,
            Message::Unknown {
                kind: "TELEPORT".into(),
                data: json!({"x": 1})
            }
        );
        let m = raw("UPDATE_EXTENSION", json!({"number": "1", "type": "FAX"}))
            .decode()
            .unwrap();
        assert!(
            matches!(m, Message::UpdateExtension(u) if u.kind == ExtensionKind::Unknown("FAX".into()))
        );
    }

    #[test]
    fn page_keeps_non_envelopes_apart() {
        let page = Page::from_json(
            br#"[{"id": 5, "timestamp": 1.5, "type": "SYNC_ENDED", "data": {}},
                 {"timestamp": 2}, 17, {"id": "6"}, {"id": -3}, {"id": 7, "type": "X"}]"#,
        )
        .unwrap();
        assert_eq!(page.returned, 6);
        assert_eq!(
            page.messages.iter().map(|m| m.id.get()).collect::<Vec<_>>(),
            [5, 7]
        );
        assert_eq!(page.malformed.len(), 4);
        assert!(Page::from_json(b"<html>403</html>").is_err());
        assert!(Page::from_json(b"{}").is_err());
    }
}

//! GURU3's data model as far as the wire protocol shows it, and the messages each user action
//! emits (spec §6–§7), including what GURU3 does *not* send (§9: cascades on rename/delete).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::json::J;

/// Forward settings of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Target number.
    pub target: String,
    /// `DISABLED`, `ENABLED`, `ON_BUSY`, `ON_UNAVAILABLE`.
    pub mode: String,
    /// Seconds.
    pub delay: u32,
}

/// The type-specific part of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// SIP (password generated when empty).
    Sip {
        /// Digest password.
        password: String,
        /// Premium server.
        premium: bool,
    },
    /// DECT (token generated when empty).
    Dect {
        /// Registration token.
        token: String,
        /// `useEncryption`.
        encryption: bool,
        /// `displayModus`.
        display: String,
    },
    /// GSM.
    Gsm {
        /// Registration token.
        token: String,
    },
    /// Call group.
    Group {
        /// Up to 3 characters.
        short_name: String,
    },
    /// Application number.
    App {
        /// Routing target.
        target: String,
    },
    /// Announcement.
    Announcement {
        /// Audio hash or empty.
        audio: String,
    },
    /// Special number.
    Special,
}

impl Kind {
    /// Wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sip { .. } => "SIP",
            Self::Dect { .. } => "DECT",
            Self::Gsm { .. } => "GSM",
            Self::Group { .. } => "GROUP",
            Self::App { .. } => "APP",
            Self::Announcement { .. } => "ANNOUNCEMENT",
            Self::Special => "SPECIAL",
        }
    }

    /// A SIP extension with a generated password.
    pub fn sip() -> Self {
        Self::Sip {
            password: String::new(),
            premium: false,
        }
    }

    /// A DECT extension with a generated token.
    pub fn dect() -> Self {
        Self::Dect {
            token: String::new(),
            encryption: false,
            display: "NUMBER_NAME".into(),
        }
    }

    /// A call group.
    pub fn group(short_name: &str) -> Self {
        Self::Group {
            short_name: short_name.into(),
        }
    }
}

/// A handset known to GURU3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handset {
    /// `DDDDD DDDDDDD C`.
    pub ipei: String,
    /// 32 upper-case hex digits.
    pub uak: String,
}

/// One extension of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Number.
    pub number: String,
    /// Display name.
    pub name: String,
    /// Location.
    pub location: String,
    /// `announcement_lang`.
    pub lang: String,
    /// Ringback hash or empty.
    pub ringback: String,
    /// `call_waiting`.
    pub call_waiting: bool,
    /// `allow_dialout`.
    pub allow_dialout: bool,
    /// `trunk`.
    pub trunk: bool,
    /// Forward, if a target is set.
    pub forward: Option<Forward>,
    /// Type.
    pub kind: Kind,
    /// The handset GURU3 links to this extension (sent as `dect` for DECT extensions).
    pub handset: Option<Handset>,
}

impl Extension {
    /// An extension with GURU3's defaults.
    pub fn new(number: &str, name: &str, kind: Kind) -> Self {
        Self {
            number: number.into(),
            name: name.into(),
            location: String::new(),
            lang: "de-DE".into(),
            ringback: String::new(),
            call_waiting: true,
            allow_dialout: false,
            trunk: false,
            forward: None,
            kind,
            handset: None,
        }
    }
}

/// A group (or multiring) membership row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member number.
    pub extension: String,
    /// Not paused.
    pub active: bool,
    /// Seconds.
    pub delay: u32,
}

impl Member {
    /// An active member with the given delay.
    pub fn new(extension: &str, delay: u32) -> Self {
        Self {
            extension: extension.into(),
            active: true,
            delay,
        }
    }
}

/// A row of the wire-message table.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    pub(crate) id: i64,
    pub(crate) timestamp: f64,
    pub(crate) kind: String,
    pub(crate) data: J,
    pub(crate) delivered: bool,
    /// Committed (visible to GET).
    pub(crate) visible: bool,
}

/// What GURU3 answered to one inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    /// The `id` the client sent (null when absent).
    pub id: serde_json::Value,
    /// `type`.
    pub kind: String,
    /// `data` as sent.
    pub data: serde_json::Value,
    /// `OK` or `NAK`.
    pub status: String,
    /// Reason on NAK.
    pub text: String,
}

/// The event's state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) extensions: BTreeMap<String, Extension>,
    /// group/multiring number → accepted members
    pub(crate) members: BTreeMap<String, Vec<Member>>,
    pub(crate) queue: Vec<Wire>,
    next_id: i64,
    last_ts: f64,
    pub(crate) acked: Vec<i64>,
    pub(crate) inbound: Vec<InboundRecord>,
    pub(crate) gets: u64,
    pub(crate) posts: u64,
}

pub(crate) fn random_digits(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| char::from(b'0' + x % 10)).collect()
}

pub(crate) fn random_alnum(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    b.iter()
        .map(|x| char::from(A[usize::from(*x) % A.len()]))
        .collect()
}

impl State {
    pub(crate) fn new(first_id: i64) -> Self {
        Self {
            extensions: BTreeMap::new(),
            members: BTreeMap::new(),
            queue: Vec::new(),
            next_id: first_id,
            last_ts: 0.0,
            acked: Vec::new(),
            inbound: Vec::new(),
            gets: 0,
            posts: 0,
        }
    }

    /// Appends an uncommitted message and returns its id.
    pub(crate) fn push(&mut self, kind: &str, data: J) -> i64 {
        // the id sequence is shared by all events: leave gaps
        let mut gap = [0u8; 1];
        let _ = getrandom::fill(&mut gap);
        self.next_id += 1 + i64::from(gap[0] % 3);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        // microsecond resolution, strictly increasing
        let ts = ((now.max(self.last_ts + 0.000_001)) * 1e6).round() / 1e6;
        self.last_ts = ts;
        self.queue.push(Wire {
            id: self.next_id,
            timestamp: ts,
            kind: kind.into(),
            data,
            delivered: false,
            visible: false,
        });
        self.next_id
    }

    pub(crate) fn commit(&mut self, ids: &[i64]) {
        for w in self.queue.iter_mut().filter(|w| ids.contains(&w.id)) {
            w.visible = true;
        }
    }

    pub(crate) fn undelivered(&self) -> usize {
        self.queue.iter().filter(|w| !w.delivered).count()
    }

    /// `WireMessage.getWireData` for an UPDATE_EXTENSION.
    fn wire_data(&self, e: &Extension, existed: bool, with_forward: bool) -> J {
        let mut d = J::obj([
            ("number", J::s(&e.number)),
            ("name", J::s(&e.name)),
            ("location", J::s(&e.location)),
            ("announcement_lang", J::s(&e.lang)),
            ("ringback_tone", J::s(&e.ringback)),
            ("call_waiting", J::Bool(e.call_waiting)),
            ("allow_dialout", J::Bool(e.allow_dialout)),
        ]);
        let has_members = self.members.get(&e.number).is_some_and(|m| !m.is_empty());
        if !matches!(e.kind, Kind::Group { .. }) && existed && has_members {
            d.push("has_multiring", J::Bool(true));
        }
        if let (Some(f), true) = (&e.forward, with_forward) {
            d.push("forward_extension", J::s(&f.target));
            d.push("forward_mode", J::s(&f.mode));
            d.push("forward_delay", J::Int(i64::from(f.delay)));
        }
        if e.trunk {
            d.push("trunk", J::Bool(true));
        }
        d.push("type", J::s(e.kind.name()));
        match &e.kind {
            Kind::Sip { password, premium } => {
                d.push("password", J::s(password));
                d.push("isPremium", J::Bool(*premium));
            }
            Kind::Dect {
                token,
                encryption,
                display,
            } => {
                d.push("token", J::s(token));
                d.push("useEncryption", J::Bool(*encryption));
                d.push("displayModus", J::s(display));
                if let Some(h) = &e.handset {
                    d.push(
                        "dect",
                        J::obj([("ipei", J::s(&h.ipei)), ("uak", J::s(&h.uak))]),
                    );
                }
            }
            Kind::Gsm { token } => {
                d.push("token", J::s(token));
                for g in ["use2G", "use3G", "use4G"] {
                    d.push(g, J::Bool(true));
                }
            }
            Kind::Group { short_name } => d.push("short_name", J::s(short_name)),
            Kind::App { target } => d.push("direct_routing_target", J::s(target)),
            Kind::Announcement { audio } => d.push("announcement_audio", J::s(audio)),
            Kind::Special => {}
        }
        d
    }

    fn callgroup_data(&self, number: &str) -> J {
        let name = self
            .extensions
            .get(number)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let members = self.members.get(number).cloned().unwrap_or_default();
        J::obj([
            ("name", J::s(name)),
            ("number", J::s(number)),
            (
                "extensions",
                J::Arr(
                    members
                        .iter()
                        .map(|m| {
                            J::obj([
                                ("extension", J::s(&m.extension)),
                                ("active", J::Bool(m.active)),
                                ("delay", J::Int(i64::from(m.delay))),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    }

    /// Create or edit (the form's save): returns the message ids of the transaction.
    pub(crate) fn save(&mut self, mut e: Extension) -> Result<Vec<i64>, String> {
        check_number(&e.number)?;
        if e.name.contains('\0') {
            return Err("name contains NUL".into());
        }
        if let Some(f) = &e.forward {
            if !self.extensions.contains_key(&f.target) {
                return Err(format!("forward target {} does not exist", f.target));
            }
        }
        let old = self.extensions.get(&e.number).cloned();
        if old.is_none() {
            self.check_prefix_free(&e.number, None)?;
        }
        let mut ids = Vec::new();
        let type_changed = old.as_ref().is_some_and(|o| o.kind.name() != e.kind.name());
        // fresh credentials on creation or type change, or when none were given
        match &mut e.kind {
            Kind::Sip { password, .. } if password.is_empty() || type_changed => {
                *password = random_alnum(8);
            }
            Kind::Dect { token, .. } | Kind::Gsm { token } if token.is_empty() || type_changed => {
                *token = self.fresh_token();
            }
            _ => {}
        }
        if type_changed {
            let was_group = old
                .as_ref()
                .is_some_and(|o| matches!(o.kind, Kind::Group { .. }));
            if was_group || matches!(e.kind, Kind::Group { .. }) {
                self.members.remove(&e.number);
                ids.push(self.push("UPDATE_CALLGROUP", self.callgroup_data(&e.number)));
            }
        }
        let data = self.wire_data(&e, old.is_some(), true);
        self.extensions.insert(e.number.clone(), e);
        ids.push(self.push("UPDATE_EXTENSION", data));
        Ok(ids)
    }

    fn fresh_token(&self) -> String {
        loop {
            let t = random_digits(8);
            let taken = self.extensions.values().any(|e| {
                matches!(&e.kind, Kind::Dect { token, .. } | Kind::Gsm { token } if *token == t)
            });
            if !taken {
                return t;
            }
        }
    }

    fn check_prefix_free(&self, number: &str, except: Option<&str>) -> Result<(), String> {
        for other in self.extensions.keys() {
            if Some(other.as_str()) == except {
                continue;
            }
            if other.starts_with(number) || number.starts_with(other.as_str()) {
                return Err(format!("{number} is not prefix-free against {other}"));
            }
        }
        Ok(())
    }

    pub(crate) fn rename(&mut self, old: &str, new: &str) -> Result<Vec<i64>, String> {
        self.rename_edit(old, new, |_| {})
    }

    /// A rename and an edit of the same extension in one save: GURU3 emits the rename, then
    /// one UPDATE_EXTENSION with the edited data, in one transaction.
    pub(crate) fn rename_edit(
        &mut self,
        old: &str,
        new: &str,
        edit: impl FnOnce(&mut Extension),
    ) -> Result<Vec<i64>, String> {
        check_number(new)?;
        let mut e = self
            .extensions
            .remove(old)
            .ok_or_else(|| format!("no extension {old}"))?;
        if let Err(err) = self.check_prefix_free(new, None) {
            self.extensions.insert(old.into(), e);
            return Err(err);
        }
        e.number = new.into();
        // foreign keys follow silently: memberships and forwards (nothing is sent for them)
        if let Some(m) = self.members.remove(old) {
            self.members.insert(new.into(), m);
        }
        for list in self.members.values_mut() {
            for m in list.iter_mut().filter(|m| m.extension == old) {
                m.extension = new.into();
            }
        }
        for x in self.extensions.values_mut() {
            if let Some(f) = x.forward.as_mut().filter(|f| f.target == old) {
                f.target = new.into();
            }
        }
        let mut ids = vec![self.push(
            "RENAME_EXTENSION",
            J::obj([("old_extension", J::s(old)), ("new_extension", J::s(new))]),
        )];
        edit(&mut e);
        e.number = new.into();
        let data = self.wire_data(&e, true, true);
        self.extensions.insert(new.into(), e);
        ids.push(self.push("UPDATE_EXTENSION", data));
        Ok(ids)
    }

    pub(crate) fn delete(&mut self, number: &str) -> Result<Vec<i64>, String> {
        if !self.extensions.contains_key(number) {
            return Err(format!("no extension {number}"));
        }
        let mut ids = Vec::new();
        let forwarding: Vec<String> = self
            .extensions
            .values()
            .filter(|e| e.forward.as_ref().is_some_and(|f| f.target == number))
            .map(|e| e.number.clone())
            .collect();
        for n in forwarding {
            let mut e = self.extensions[&n].clone();
            e.forward = None;
            let data = self.wire_data(&e, true, true);
            self.extensions.insert(n, e);
            ids.push(self.push("UPDATE_EXTENSION", data));
        }
        self.extensions.remove(number);
        // membership rows go by database cascade: no UPDATE_CALLGROUP
        self.members.remove(number);
        for list in self.members.values_mut() {
            list.retain(|m| m.extension != number);
        }
        ids.push(self.push("DELETE_EXTENSION", J::obj([("number", J::s(number))])));
        Ok(ids)
    }

    pub(crate) fn set_members(
        &mut self,
        number: &str,
        members: Vec<Member>,
    ) -> Result<Vec<i64>, String> {
        let e = self
            .extensions
            .get(number)
            .ok_or_else(|| format!("no extension {number}"))?;
        if matches!(e.kind, Kind::Announcement { .. }) {
            return Err("announcements cannot have members".into());
        }
        for m in &members {
            if !self.extensions.contains_key(&m.extension) {
                return Err(format!("member {} does not exist", m.extension));
            }
            if m.delay > 600 {
                return Err("delay above 600".into());
            }
        }
        self.members.insert(number.into(), members);
        Ok(vec![
            self.push("UPDATE_CALLGROUP", self.callgroup_data(number)),
        ])
    }

    pub(crate) fn unsubscribe(&mut self, number: &str) -> Result<Vec<i64>, String> {
        let e = self
            .extensions
            .get_mut(number)
            .ok_or_else(|| format!("no extension {number}"))?;
        e.handset = None;
        Ok(vec![self.push(
            "UNSUBSCRIBE_DEVICE",
            J::obj([("extension", J::s(number))]),
        )])
    }

    /// The admin "sync" (spec §6.7): returns the ids of the whole window.
    pub(crate) fn resync(&mut self) -> Vec<i64> {
        self.queue.clear();
        let mut ids = vec![self.push("SYNC_STARTED", J::obj([]))];
        let exts: Vec<Extension> = self.extensions.values().cloned().collect();
        for e in &exts {
            let d = self.wire_data(e, true, false);
            ids.push(self.push("UPDATE_EXTENSION", d));
        }
        for e in exts.iter().filter(|e| e.forward.is_some()) {
            let d = self.wire_data(e, true, true);
            ids.push(self.push("UPDATE_EXTENSION", d));
        }
        for e in &exts {
            let has_rows = self.members.get(&e.number).is_some_and(|m| !m.is_empty());
            if matches!(e.kind, Kind::Group { .. }) || has_rows {
                let d = self.callgroup_data(&e.number);
                ids.push(self.push("UPDATE_CALLGROUP", d));
            }
        }
        ids.push(self.push("SYNC_ENDED", J::obj([])));
        ids
    }

    pub(crate) fn call_extension(&mut self, number: &str, audio: &str) -> Vec<i64> {
        // the caller fields are swapped in GURU3 (spec §6.6)
        vec![self.push(
            "CALL_EXTENSION",
            J::obj([
                ("number", J::s(number)),
                ("caller_number", J::s("PoC")),
                ("caller_name", J::s("999")),
                ("announcement_audio", J::s(audio)),
            ]),
        )]
    }

    /// GET: undelivered, committed, by (timestamp, id).
    pub(crate) fn page(&self, max: usize) -> String {
        let mut rows: Vec<&Wire> = self
            .queue
            .iter()
            .filter(|w| !w.delivered && w.visible)
            .collect();
        rows.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp).then(a.id.cmp(&b.id)));
        J::Arr(
            rows.into_iter()
                .take(max)
                .map(|w| {
                    J::obj([
                        ("id", J::Int(w.id)),
                        ("timestamp", J::Float(w.timestamp)),
                        ("type", J::s(&w.kind)),
                        ("data", w.data.clone()),
                    ])
                })
                .collect(),
        )
        .dumps()
    }

    pub(crate) fn ack(&mut self, ids: &[i64]) {
        let set: std::collections::HashSet<i64> = ids.iter().copied().collect();
        for w in self.queue.iter_mut().filter(|w| set.contains(&w.id)) {
            w.delivered = true;
        }
        self.acked.extend_from_slice(ids);
    }

    /// `process_incoming_message`: `Err(())` is an unhandled exception (HTTP 500).
    pub(crate) fn inbound(&mut self, msg: &serde_json::Value) -> Result<J, ()> {
        let obj = msg.as_object().ok_or(())?;
        let id = obj.get("id").cloned().unwrap_or(serde_json::Value::Null);
        let kind = obj.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let data = obj.get("data").cloned().unwrap_or(serde_json::Value::Null);
        let verdict = self.inbound_verdict(obj)?;
        let (status, text) = match verdict {
            None => ("OK", String::new()),
            Some(t) => ("NAK", t),
        };
        self.inbound.push(InboundRecord {
            id: id.clone(),
            kind: kind.into(),
            data,
            status: status.into(),
            text: text.clone(),
        });
        Ok(J::obj([
            ("id", J::from_value(&id)),
            ("status", J::s(status)),
            ("text", J::s(text)),
        ]))
    }

    /// `None`: OK; `Some(text)`: NAK.
    fn inbound_verdict(
        &mut self,
        obj: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<String>, ()> {
        let parse = |t: &str| Ok(Some(format!("Parsing error: {t}")));
        match obj.get("timestamp") {
            None => return parse("Incoming message has no timestamp."),
            Some(t) if !t.is_number() => {
                return parse("Incoming message has invalid timestamp format.");
            }
            Some(_) => {}
        }
        match obj.get("id") {
            None => return parse("Incoming message has no id."),
            // PositiveIntegerField: anything else blows up in the database layer
            Some(v) if v.as_u64().is_none_or(|n| n > 2_147_483_647) => return Err(()),
            Some(_) => {}
        }
        let Some(kind) = obj.get("type") else {
            return parse("Incoming message has no type.");
        };
        let kind = kind.as_str().ok_or(())?;
        if kind.chars().count() > 16 {
            return Err(());
        }
        let Some(data) = obj.get("data") else {
            return parse("Incoming message has no data");
        };
        if kind != "ASSIGN_HANDSET" {
            return Ok(Some(format!(
                "Processing error: Invalid message type: '{kind}'"
            )));
        }
        let data = data.as_object().ok_or(())?;
        let Some(ipei) = data.get("ipei") else {
            return parse("No IPEI provided in data");
        };
        let Some(ext) = data.get("extension") else {
            return parse("No extension provided in data");
        };
        let Some(uak) = data.get("uak") else {
            return parse("No UAK provided in data");
        };
        let ipei = ipei.as_str().ok_or(())?;
        let uak = uak.as_str().ok_or(())?.to_ascii_uppercase();
        let ext = match ext {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !ipei_shape(ipei) {
            return parse("Invalid IPEI format.");
        }
        if uak.len() != 32 || !uak.bytes().all(|b| b.is_ascii_hexdigit()) {
            return parse("Invalid UAK format.");
        }
        if !self.extensions.contains_key(&ext) {
            return Ok(Some("Processing error: Extension not known.".into()));
        }
        // the handset leaves every other extension of the event; no outbound message
        for e in self.extensions.values_mut() {
            if e.handset.as_ref().is_some_and(|h| h.ipei == ipei) {
                e.handset = None;
            }
        }
        if let Some(e) = self.extensions.get_mut(&ext) {
            e.handset = Some(Handset {
                ipei: ipei.into(),
                uak,
            });
        }
        Ok(None)
    }
}

fn ipei_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' '
        && b[6..13].iter().all(u8::is_ascii_digit)
        && b[13] == b' '
        && (b[14].is_ascii_digit() || b[14] == b'*')
}

fn check_number(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{n:?} is not an extension number"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &State) -> Vec<String> {
        s.queue.iter().map(|w| w.kind.clone()).collect()
    }

    #[test]
    fn delete_resends_forwarders_but_not_groups() {
        let mut s = State::new(100);
        s.save(Extension::new("2001", "a", Kind::sip())).unwrap();
        s.save(Extension::new("2345", "b", Kind::dect())).unwrap();
        s.save(Extension::new("1100", "g", Kind::group("INF")))
            .unwrap();
        let mut a = s.extensions["2001"].clone();
        a.forward = Some(Forward {
            target: "2345".into(),
            mode: "ON_BUSY".into(),
            delay: 0,
        });
        s.save(a).unwrap();
        s.set_members("1100", vec![Member::new("2345", 0), Member::new("2001", 5)])
            .unwrap();
        s.queue.clear();
        s.delete("2345").unwrap();
        assert_eq!(kinds(&s), ["UPDATE_EXTENSION", "DELETE_EXTENSION"]);
        assert!(s.queue[0].data.get("forward_extension").is_none());
        assert_eq!(s.members["1100"], [Member::new("2001", 5)]);
    }

    #[test]
    fn type_change_to_group_sends_empty_list_first_and_new_credentials() {
        let mut s = State::new(100);
        s.save(Extension::new("2001", "a", Kind::sip())).unwrap();
        let pw = s.queue[0].data.get("password").cloned();
        s.queue.clear();
        let mut e = s.extensions["2001"].clone();
        e.kind = Kind::group("X");
        s.save(e).unwrap();
        assert_eq!(kinds(&s), ["UPDATE_CALLGROUP", "UPDATE_EXTENSION"]);
        let mut e = s.extensions["2001"].clone();
        e.kind = Kind::sip();
        s.save(e).unwrap();
        assert_ne!(s.queue[3].data.get("password").cloned(), pw);
    }

    #[test]
    fn resync_passes_in_order() {
        let mut s = State::new(100);
        s.save(Extension::new("2001", "a", Kind::sip())).unwrap();
        s.save(Extension::new("2002", "b", Kind::dect())).unwrap();
        let mut a = s.extensions["2001"].clone();
        a.forward = Some(Forward {
            target: "2002".into(),
            mode: "ENABLED".into(),
            delay: 15,
        });
        s.save(a).unwrap();
        s.set_members("2002", vec![Member::new("2001", 5)]).unwrap();
        s.resync();
        assert_eq!(
            kinds(&s),
            [
                "SYNC_STARTED",
                "UPDATE_EXTENSION",
                "UPDATE_EXTENSION",
                "UPDATE_EXTENSION",
                "UPDATE_CALLGROUP",
                "SYNC_ENDED"
            ]
        );
        assert!(s.queue[1].data.get("forward_extension").is_none());
        assert_eq!(s.queue[2].data.get("has_multiring"), Some(&J::Bool(true)));
        assert!(s.queue[3].data.get("forward_extension").is_some());
    }

    #[test]
    fn prefix_freeness_is_enforced() {
        let mut s = State::new(1);
        s.save(Extension::new("2001", "a", Kind::sip())).unwrap();
        assert!(s.save(Extension::new("200", "b", Kind::sip())).is_err());
        assert!(s.save(Extension::new("20011", "b", Kind::sip())).is_err());
        s.save(Extension::new("3000", "c", Kind::sip())).unwrap();
        assert!(s.rename("2001", "300").is_err());
        assert!(s.extensions.contains_key("2001"));
        assert!(s.rename("2001", "20011").is_ok());
    }
}

//! The simulated OMM's state: users, devices, system settings, sessions, faults and the
//! record of received requests.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::crypto::RsaKey;
use crate::table::Table;

/// Attribute map of a record (values as on the wire, secrets in plaintext).
pub type Attrs = BTreeMap<String, String>;

/// Attributes the OMM never returns in clear text.
pub(crate) const SECRET_ATTRS: &[&str] = &["pin", "sipPw", "credentialPw", "serviceAuthPassword"];

/// How sync sessions receive user/device changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EventStyle {
    /// One `EventPPCnf` (observed on real OMMs in sync mode).
    #[default]
    Combined,
    /// `EventPPDevCnf` / `EventPPUserCnf`.
    Separate,
    /// Both.
    Both,
}

/// Subscription mode with its virtual-clock deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Closed.
    Off,
    /// Configured IPEIs may subscribe until `until` (virtual seconds).
    Configured {
        /// Expiry.
        until: i64,
    },
    /// Any IPEI may subscribe until `until`; afterwards `Configured` until `configured_until`.
    Wildcard {
        /// Expiry of the wildcard window.
        until: i64,
        /// Length of the window in seconds (restarted by every wildcard subscription).
        interval: i64,
        /// Expiry of the configured window behind it.
        configured_until: i64,
    },
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Off => "Off",
            Self::Configured { .. } => "Configured",
            Self::Wildcard { .. } => "Wildcard",
        }
    }
}

/// A request the simulator received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Connection number (1-based, in accept order).
    pub session: u64,
    /// Request name.
    pub name: String,
    /// The `seq` attribute.
    pub seq: Option<String>,
    /// Root attributes (the `Open` password is masked).
    pub attrs: Vec<(String, String)>,
    /// Children: element name and attributes (secret values as received, i.e. ciphertext).
    pub children: Vec<(String, Vec<(String, String)>)>,
}

impl Received {
    /// A root attribute.
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Fault injection switches.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Split every outgoing write into chunks of this many bytes.
    pub split_chunks: Option<usize>,
    /// Collect outgoing frames and write them together (up to this many per write).
    pub coalesce: Option<usize>,
    /// Close each connection after it received this many frames.
    pub drop_after: Option<usize>,
    /// Delay the response of these requests (reorders them behind later ones).
    pub delay: HashMap<String, Duration>,
    /// Never answer these requests.
    pub stall: Vec<String>,
    /// Never answer requests about these user numbers (`num` on the request or on its
    /// `user` child): an OMM that chokes on one record and answers everything else.
    pub stall_num: Vec<String>,
    /// Answer these requests with this error code, `times` times.
    pub inject: HashMap<String, (String, usize)>,
    /// Close new TLS connections before the handshake.
    pub refuse_tls: bool,
}

/// Behaviour switches for points the spec leaves open.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// How sync sessions get user/device events.
    pub event_style: EventStyle,
    /// Single-record gets without `maxRecords` return the next higher record instead of `ENoEnt`.
    pub next_higher_get: bool,
    /// Reject duplicate `num` with `EExist`.
    pub unique_num: bool,
    /// Reject control characters and non-BMP characters with `EInvalidChars`.
    pub reject_invalid_chars: bool,
    /// Push the current subscription mode right after a `Subscribe`.
    pub push_mode_on_subscribe: bool,
    /// Idle timeout of a link without requests (virtual time).
    pub idle_timeout: Duration,
    /// `Limits/@records`.
    pub records: usize,
    /// Record every request in [`View::received`](crate::View::received) (off for long
    /// runs: the record grows with every request).
    pub log_requests: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            event_style: EventStyle::Combined,
            next_higher_get: false,
            unique_num: true,
            reject_invalid_chars: false,
            push_mode_on_subscribe: false,
            idle_timeout: Duration::from_secs(300),
            records: 20,
            log_requests: true,
        }
    }
}

pub(crate) enum Outgoing {
    Frame(String),
    Close,
}

pub(crate) struct SessionInfo {
    pub(crate) tx: mpsc::UnboundedSender<Outgoing>,
    pub(crate) open: bool,
    pub(crate) sync: bool,
    pub(crate) subs: Vec<(String, Option<i64>)>,
    pub(crate) last_activity: i64,
}

pub(crate) struct State {
    pub(crate) users: Table,
    pub(crate) devices: Table,
    pub(crate) next_uid: u32,
    pub(crate) next_ppn: u32,
    pub(crate) accounts: Vec<(String, String)>,
    pub(crate) key: RsaKey,
    pub(crate) now: i64,
    pub(crate) mode: Mode,
    pub(crate) ac: String,
    pub(crate) dev_auto_create: bool,
    pub(crate) restricted_dur: String,
    pub(crate) system_name: String,
    pub(crate) sari: String,
    pub(crate) sessions: HashMap<u64, SessionInfo>,
    pub(crate) received: Vec<Received>,
    pub(crate) faults: Faults,
    pub(crate) knobs: Knobs,
    pub(crate) pp_state: BTreeMap<u32, Attrs>,
    pub(crate) last_action: BTreeMap<u32, Attrs>,
}

/// A record change to announce.
pub(crate) enum Change {
    User {
        uid: u32,
        attrs: Attrs,
        deleted: bool,
    },
    Device {
        ppn: u32,
        attrs: Attrs,
        deleted: bool,
    },
    /// The subscription mode was set (its event follows the response that set it).
    Mode,
}

impl State {
    pub(crate) fn new(key: RsaKey, knobs: Knobs) -> Self {
        Self {
            users: Table::new("num"),
            devices: Table::new("ipei"),
            next_uid: 1,
            next_ppn: 1,
            accounts: vec![("omm".into(), "omm".into())],
            key,
            now: 1_732_270_000,
            mode: Mode::Off,
            ac: "0000".into(),
            dev_auto_create: false,
            restricted_dur: "0".into(),
            system_name: "hexidian-sim".into(),
            sari: "1F10187326".into(),
            sessions: HashMap::new(),
            received: Vec::new(),
            faults: Faults::default(),
            knobs,
            pp_state: BTreeMap::new(),
            last_action: BTreeMap::new(),
        }
    }

    /// Renders a user record with fresh ciphertexts for the secrets.
    pub(crate) fn user_xml(&self, attrs: &Attrs) -> String {
        let mut out = String::from("<user");
        for (k, v) in attrs {
            let v = if SECRET_ATTRS.contains(&k.as_str()) {
                self.key.encrypt(v)
            } else {
                v.clone()
            };
            out.push_str(&format!(" {k}=\"{}\"", crate::wire::esc(&v)));
        }
        out.push_str("/>");
        out
    }

    pub(crate) fn pp_xml(attrs: &Attrs) -> String {
        crate::wire::Out::new("pp")
            .attrs(attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .finish()
    }

    fn subscribed(info: &SessionInfo, event_type: &str, id: Option<u32>) -> bool {
        info.subs.iter().any(|(t, filter)| {
            t == event_type
                && (id.is_none()
                    || *filter == Some(-1)
                    || filter.zip(id).is_some_and(|(f, i)| f == i64::from(i)))
        })
    }

    /// Sends the events for a list of changes to every matching session.
    pub(crate) fn emit(&mut self, changes: &[Change]) {
        if changes.iter().any(|c| matches!(c, Change::Mode)) {
            self.emit_mode();
        }
        for info in self.sessions.values() {
            if !info.open {
                continue;
            }
            let style = if info.sync {
                self.knobs.event_style
            } else {
                EventStyle::Separate
            };
            for ch in changes {
                let (combined, separate, type_name, id) = match ch {
                    Change::Mode => continue,
                    Change::User {
                        uid,
                        attrs,
                        deleted,
                    } => {
                        let rec = if *deleted {
                            format!("<user uid=\"{uid}\"/>")
                        } else {
                            self.user_xml(attrs)
                        };
                        let del = if *deleted { " deletedUser=\"1\"" } else { "" };
                        let del2 = if *deleted { " deleted=\"1\"" } else { "" };
                        (
                            format!("<EventPPCnf{del}>{rec}</EventPPCnf>"),
                            format!("<EventPPUserCnf{del2}>{rec}</EventPPUserCnf>"),
                            "PPUserCnf",
                            *uid,
                        )
                    }
                    Change::Device {
                        ppn,
                        attrs,
                        deleted,
                    } => {
                        let rec = if *deleted {
                            format!("<pp ppn=\"{ppn}\"/>")
                        } else {
                            Self::pp_xml(attrs)
                        };
                        let del = if *deleted { " deletedDev=\"1\"" } else { "" };
                        let del2 = if *deleted { " deleted=\"1\"" } else { "" };
                        (
                            format!("<EventPPCnf{del}>{rec}</EventPPCnf>"),
                            format!("<EventPPDevCnf{del2}>{rec}</EventPPDevCnf>"),
                            "PPDevCnf",
                            *ppn,
                        )
                    }
                };
                // In sync mode the combined event follows either subscription.
                let any = Self::subscribed(info, "PPDevCnf", Some(id))
                    || Self::subscribed(info, "PPUserCnf", Some(id));
                if matches!(style, EventStyle::Combined | EventStyle::Both) && any {
                    let _ = info.tx.send(Outgoing::Frame(combined));
                }
                if matches!(style, EventStyle::Separate | EventStyle::Both)
                    && Self::subscribed(info, type_name, Some(id))
                {
                    let _ = info.tx.send(Outgoing::Frame(separate));
                }
            }
        }
    }

    pub(crate) fn emit_mode(&self) {
        let frame = format!("<EventDECTSubscriptionMode mode=\"{}\"/>", self.mode.name());
        for info in self.sessions.values() {
            if info.open && Self::subscribed(info, "DECTSubscriptionMode", None) {
                let _ = info.tx.send(Outgoing::Frame(frame.clone()));
            }
        }
    }

    pub(crate) fn emit_raw(&self, event_type: &str, frame: &str) {
        for info in self.sessions.values() {
            if info.open && Self::subscribed(info, event_type, None) {
                let _ = info.tx.send(Outgoing::Frame(frame.to_owned()));
            }
        }
    }

    /// Advances the virtual clock: subscription-mode expiry and idle timeouts.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d.as_secs() as i64;
        loop {
            let next = match self.mode {
                Mode::Wildcard {
                    until,
                    configured_until,
                    ..
                } if until <= self.now => {
                    if configured_until > self.now {
                        Mode::Configured {
                            until: configured_until,
                        }
                    } else {
                        Mode::Off
                    }
                }
                Mode::Configured { until } if until <= self.now => Mode::Off,
                _ => break,
            };
            self.mode = next;
            self.emit_mode();
        }
        let idle = self.knobs.idle_timeout.as_secs() as i64;
        for info in self.sessions.values() {
            if self.now - info.last_activity >= idle {
                let _ = info.tx.send(Outgoing::Close);
            }
        }
    }

    pub(crate) fn find_device_by_ipei(&self, ipei: &str) -> Option<u32> {
        self.devices.find(ipei)
    }

    /// Unbinds the device `ppn` and its user; returns the changes.
    pub(crate) fn unbind_device(&mut self, ppn: u32) -> Vec<Change> {
        let mut changes = Vec::new();
        let Some(mut dev) = self.devices.get_mut(&ppn) else {
            return changes;
        };
        let uid: u32 = dev.get("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
        if uid == 0 {
            return changes;
        }
        dev.insert("uid".into(), "0".into());
        dev.insert("relType".into(), "Unbound".into());
        dev.insert("timeStamp".into(), self.now.to_string());
        let dev_change: Attrs = [
            ("ppn", ppn.to_string()),
            ("uid", "0".into()),
            ("relType", "Unbound".into()),
            ("timeStamp", self.now.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        changes.push(Change::Device {
            ppn,
            attrs: dev_change,
            deleted: false,
        });
        if let Some(mut user) = self.users.get_mut(&uid) {
            user.insert("ppn".into(), "0".into());
            user.insert("ppnOld".into(), ppn.to_string());
            user.insert("relType".into(), "Unbound".into());
            user.insert("timeStamp".into(), self.now.to_string());
            let ch: Attrs = [
                ("uid", uid.to_string()),
                ("ppn", "0".into()),
                ("ppnOld", ppn.to_string()),
                ("relType", "Unbound".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            changes.push(Change::User {
                uid,
                attrs: ch,
                deleted: false,
            });
        }
        changes
    }
}

/// IPEI parsing of the simulator: spaced or compact decimal form; returns the canonical spaced
/// form if the check character matches.
pub(crate) fn canonical_ipei(s: &str) -> Option<String> {
    let compact: String = s.chars().filter(|c| *c != ' ').collect();
    if compact.len() != 13 || !compact[..12].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let emc: u32 = compact[..5].parse().ok()?;
    let psn: u32 = compact[5..12].parse().ok()?;
    if emc > 65535 || psn > 0xFFFFF {
        return None;
    }
    let sum: u32 = compact[..12]
        .bytes()
        .enumerate()
        .map(|(i, d)| (i as u32 + 1) * u32::from(d - b'0'))
        .sum();
    let check = match sum % 11 {
        10 => '*',
        n => char::from(b'0' + n as u8),
    };
    (compact.as_bytes()[12] as char == check)
        .then(|| format!("{} {} {}", &compact[..5], &compact[5..12], check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipei_canonical() {
        assert_eq!(
            canonical_ipei("0307402202593").as_deref(),
            Some("03074 0220259 3")
        );
        assert_eq!(
            canonical_ipei("10345 0615703 *").as_deref(),
            Some("10345 0615703 *")
        );
        assert_eq!(canonical_ipei("03074 0220259 4"), None);
        assert_eq!(canonical_ipei("99999 0220259 3"), None);
    }
}

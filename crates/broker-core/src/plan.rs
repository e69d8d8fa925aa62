//! The handlers, as pure functions: a command plus the broker's mirror of GURU3's desired
//! state give the PBX changes, the OMM operations and the mirror updates. Nothing here does
//! I/O, so every rule of `guru3.md` §6 and §9 is unit-tested without peers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Command, Extension, Handset, Kind, MirrorEntry, Number, Secret};
use crate::ports::{SipChange, SipUserKind};

/// The mirror: number → latest desired state, plus who refers to whom (member lists and
/// forward targets), so that a delete or a rename finds the entries it rewrites without a
/// scan of every extension.
#[derive(Debug, Default, Clone)]
pub(crate) struct Mirror {
    entries: BTreeMap<Number, MirrorEntry>,
    /// referred number → numbers whose entry lists it as a member or forwards to it
    refs: HashMap<Number, BTreeSet<Number>>,
}

/// The numbers an entry refers to.
fn refs_of(e: &MirrorEntry) -> impl Iterator<Item = &Number> {
    e.members.iter().map(|m| &m.number).chain(
        e.extension
            .as_ref()
            .and_then(|x| x.forward.as_ref())
            .map(|f| &f.target),
    )
}

impl Mirror {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn get(&self, n: &Number) -> Option<&MirrorEntry> {
        self.entries.get(n)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn unindex(&mut self, n: &Number, e: &MirrorEntry) {
        for r in refs_of(e) {
            if let Some(set) = self.refs.get_mut(r) {
                set.remove(n);
                if set.is_empty() {
                    self.refs.remove(r);
                }
            }
        }
    }

    /// Sets the entry of `n`; the previous one.
    pub(crate) fn insert(&mut self, n: Number, e: MirrorEntry) -> Option<MirrorEntry> {
        let prev = self.entries.remove(&n);
        if let Some(p) = &prev {
            self.unindex(&n, p);
        }
        for r in refs_of(&e) {
            self.refs.entry(r.clone()).or_default().insert(n.clone());
        }
        self.entries.insert(n, e);
        prev
    }

    /// Removes the entry of `n`; the previous one.
    pub(crate) fn remove(&mut self, n: &Number) -> Option<MirrorEntry> {
        let prev = self.entries.remove(n)?;
        self.unindex(n, &prev);
        Some(prev)
    }

    /// Numbers whose entry lists `to` as a member or forwards to it.
    pub(crate) fn referring(&self, to: &Number) -> impl Iterator<Item = &Number> {
        self.refs.get(to).into_iter().flatten()
    }
}

#[cfg(test)]
impl Mirror {
    fn contains_key(&self, n: &Number) -> bool {
        self.entries.contains_key(n)
    }
}

#[cfg(test)]
impl std::ops::Index<&Number> for Mirror {
    type Output = MirrorEntry;

    fn index(&self, n: &Number) -> &MirrorEntry {
        &self.entries[n]
    }
}

impl FromIterator<(Number, MirrorEntry)> for Mirror {
    fn from_iter<I: IntoIterator<Item = (Number, MirrorEntry)>>(iter: I) -> Self {
        let mut m = Self::new();
        for (n, e) in iter {
            m.insert(n, e);
        }
        m
    }
}

impl<'a> IntoIterator for &'a Mirror {
    type Item = (&'a Number, &'a MirrorEntry);
    type IntoIter = std::collections::btree_map::Iter<'a, Number, MirrorEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

/// What the handlers need of the mirror they plan against.
pub(crate) trait MirrorMut {
    fn get(&self, n: &Number) -> Option<&MirrorEntry>;
    fn insert(&mut self, n: Number, e: MirrorEntry);
    fn remove(&mut self, n: &Number);
    /// Numbers whose entry refers to `to` (as a member or a forward target) and satisfies
    /// `pred`, in order; found through the index, not by a scan.
    fn referring(&self, to: &Number, pred: &dyn Fn(&MirrorEntry) -> bool) -> Vec<Number>;
}

impl MirrorMut for Mirror {
    fn get(&self, n: &Number) -> Option<&MirrorEntry> {
        Self::get(self, n)
    }
    fn insert(&mut self, n: Number, e: MirrorEntry) {
        Self::insert(self, n, e);
    }
    fn remove(&mut self, n: &Number) {
        Self::remove(self, n);
    }
    fn referring(&self, to: &Number, pred: &dyn Fn(&MirrorEntry) -> bool) -> Vec<Number> {
        Self::referring(self, to)
            .filter(|n| self.get(n).is_some_and(pred))
            .cloned()
            .collect()
    }
}

/// A copy-on-write view of the mirror: planning a run of messages touches only what they
/// change, instead of cloning 10,000 entries for a single edit.
pub(crate) struct Overlay<'a> {
    base: &'a Mirror,
    changed: BTreeMap<Number, Option<MirrorEntry>>,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(base: &'a Mirror) -> Self {
        Self {
            base,
            changed: BTreeMap::new(),
        }
    }
}

impl MirrorMut for Overlay<'_> {
    fn get(&self, n: &Number) -> Option<&MirrorEntry> {
        match self.changed.get(n) {
            Some(e) => e.as_ref(),
            None => self.base.get(n),
        }
    }
    fn insert(&mut self, n: Number, e: MirrorEntry) {
        self.changed.insert(n, Some(e));
    }
    fn remove(&mut self, n: &Number) {
        self.changed.insert(n.clone(), None);
    }
    fn referring(&self, to: &Number, pred: &dyn Fn(&MirrorEntry) -> bool) -> Vec<Number> {
        // the base's index for what the overlay left alone, the (few) changed entries by hand
        let mut out: Vec<Number> = self
            .base
            .referring(to)
            .filter(|n| !self.changed.contains_key(*n))
            .filter(|n| self.base.get(n).is_some_and(pred))
            .cloned()
            .collect();
        out.extend(
            self.changed
                .iter()
                .filter(|(_, e)| e.as_ref().is_some_and(pred))
                .map(|(n, _)| n.clone()),
        );
        out.sort();
        out
    }
}

/// One OMM operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DectOp {
    /// Create/update the user; the SIP password is the outcome of `plan.sip[password_from]`.
    Upsert {
        number: Number,
        name: String,
        token: Secret,
        password_from: usize,
        /// the mirror says nothing changed (a resync's re-check)
        unchanged: bool,
    },
    Delete(Number),
    Rename(Number, Number),
    Bind {
        number: Number,
        handset: Handset,
        encryption: bool,
    },
    Release(Number),
}

impl DectOp {
    /// The number whose operations must stay in order.
    pub(crate) fn key(&self) -> &Number {
        match self {
            Self::Upsert { number, .. }
            | Self::Delete(number)
            | Self::Bind { number, .. }
            | Self::Release(number) => number,
            Self::Rename(old, _) => old,
        }
    }
}

/// What a message needs done.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) sip: Vec<SipChange>,
    pub(crate) dect: Vec<DectOp>,
    /// Mirror entries to store (`None`: forget the number), already applied to the working mirror.
    pub(crate) mirror: Vec<(Number, Option<MirrorEntry>)>,
    /// Recorded without effect (unsupported type), with the reason.
    pub(crate) ignored: Option<String>,
}

impl Plan {
    fn put(&mut self, mirror: &mut impl MirrorMut, number: &Number, entry: MirrorEntry) {
        mirror.insert(number.clone(), entry.clone());
        self.mirror.push((number.clone(), Some(entry)));
    }

    fn remove(&mut self, mirror: &mut impl MirrorMut, number: &Number) {
        mirror.remove(number);
        self.mirror.push((number.clone(), None));
    }
}

/// Longest OMM display name we send (mgr uses 20, the Python hexidian 19).
pub const OMM_NAME_MAX: usize = 19;

/// Display name for the OMM: printable ASCII and German umlauts kept, other characters
/// become `?`, control characters are dropped, at most [`OMM_NAME_MAX`] characters.
pub fn omm_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_control() {
            continue;
        }
        let c = if c.is_ascii() || "äöüÄÖÜß".contains(c) {
            c
        } else {
            '?'
        };
        out.push(c);
        if out.chars().count() == OMM_NAME_MAX {
            break;
        }
    }
    out.trim().to_owned()
}

fn is_dect(e: Option<&Extension>) -> bool {
    matches!(e.map(|e| &e.kind), Some(Kind::Dect { .. }))
}

fn is_user(e: Option<&Extension>) -> bool {
    matches!(
        e.map(|e| &e.kind),
        Some(Kind::Sip { .. } | Kind::Dect { .. })
    )
}

fn is_group(e: Option<&Extension>) -> bool {
    matches!(e.map(|e| &e.kind), Some(Kind::Group { .. }))
}

/// Plans `cmd` against the working mirror (which it updates). `epoch` is the resync
/// generation in progress, if any.
pub(crate) fn plan(cmd: &Command, mirror: &mut impl MirrorMut, epoch: Option<i64>) -> Plan {
    let mut p = Plan::default();
    match cmd {
        Command::Upsert(ext) => upsert(&mut p, mirror, ext, epoch, false),
        Command::Repair(number) => repair(&mut p, mirror, number),
        Command::Delete(number) => {
            let prev = mirror.get(number).and_then(|e| e.extension.clone());
            p.sip.push(SipChange::DeleteExtension(number.clone()));
            // without a mirror entry we cannot know: the OMM adapter's delete is a no-op then
            if prev.is_none() || is_dect(prev.as_ref()) {
                p.dect.push(DectOp::Delete(number.clone()));
            }
            p.remove(mirror, number);
            // GURU3 drops memberships silently (spec §6.2): so do we
            let touched =
                mirror.referring(number, &|e| e.members.iter().any(|m| &m.number == number));
            for n in touched {
                let Some(mut e) = mirror.get(&n).cloned() else {
                    continue;
                };
                e.members.retain(|m| &m.number != number);
                p.put(mirror, &n, e);
            }
        }
        Command::Rename { old, new } => {
            let prev = mirror.get(old).cloned();
            if prev.is_none() && mirror.get(new).is_some() {
                // replay of a rename that was already applied
                return p;
            }
            p.sip.push(SipChange::Rename {
                old: old.clone(),
                new: new.clone(),
            });
            let prev_ext = prev.as_ref().and_then(|e| e.extension.as_ref());
            if prev.is_none() || is_dect(prev_ext) {
                p.dect.push(DectOp::Rename(old.clone(), new.clone()));
            }
            if let Some(mut e) = prev {
                if let Some(x) = e.extension.as_mut() {
                    x.number = new.clone();
                }
                p.remove(mirror, old);
                p.put(mirror, new, e);
            }
            // references GURU3 does not re-send (spec §6.3): member lists and forwards
            let touched = mirror.referring(old, &|e| {
                e.members.iter().any(|m| &m.number == old)
                    || e.extension
                        .as_ref()
                        .and_then(|x| x.forward.as_ref())
                        .is_some_and(|f| &f.target == old)
            });
            for n in touched {
                let Some(mut e) = mirror.get(&n).cloned() else {
                    continue;
                };
                for m in e.members.iter_mut().filter(|m| &m.number == old) {
                    m.number = new.clone();
                }
                if let Some(f) = e
                    .extension
                    .as_mut()
                    .and_then(|x| x.forward.as_mut())
                    .filter(|f| &f.target == old)
                {
                    f.target = new.clone();
                }
                p.put(mirror, &n, e);
            }
        }
        Command::SetMembers {
            number,
            name,
            members,
        } => {
            let mut members = members.clone();
            members.retain(|m| &m.number != number);
            p.sip.push(SipChange::SetMembers {
                number: number.clone(),
                name: name.clone(),
                members: members.clone(),
            });
            let mut e = mirror.get(number).cloned().unwrap_or_default();
            e.members = members;
            if let Some(ep) = epoch {
                e.members_epoch = ep;
            }
            p.put(mirror, number, e);
        }
        Command::Unsubscribe(number) => {
            let Some(mut e) = mirror.get(number).cloned() else {
                return p; // unknown extension: no-op success (spec §9.14)
            };
            if let Some(Extension {
                kind: Kind::Dect { handset, .. },
                ..
            }) = e.extension.as_mut()
            {
                *handset = None;
                p.dect.push(DectOp::Release(number.clone()));
                p.put(mirror, number, e);
            }
        }
        Command::CallExtension(number) => {
            p.ignored = Some(format!(
                "CALL_EXTENSION {number}: placing calls is not supported by this broker"
            ));
        }
        Command::Unknown { kind } => {
            p.ignored = Some(format!("unknown message type {kind:?}"));
        }
        // handled by the engine, which talks to the PBX's sync state
        Command::SyncStarted | Command::SyncEnded => {}
    }
    p
}

/// `Command::Repair`: the mirror's entry upserted as a resync would (every target re-checked),
/// plus the removal of what hexidian may own under the number in a role the entry does not
/// give it; a number the mirror lacks loses every object hexidian owns under it.
fn repair(p: &mut Plan, mirror: &mut impl MirrorMut, number: &Number) {
    let Some(entry) = mirror.get(number).cloned() else {
        p.sip.push(SipChange::DeleteExtension(number.clone()));
        p.dect.push(DectOp::Delete(number.clone()));
        return;
    };
    let ext = entry.extension.as_ref();
    if !is_user(ext) {
        p.sip.push(SipChange::DeleteUser(number.clone()));
    }
    if !is_dect(ext) {
        p.dect.push(DectOp::Delete(number.clone()));
    }
    if let Some(x) = ext {
        if !is_group(ext) {
            p.sip.push(SipChange::NotGroup {
                number: number.clone(),
                name: x.name.clone(),
            });
        }
        upsert(p, mirror, x, None, true);
    }
    if !entry.members.is_empty() || is_group(ext) {
        p.sip.push(SipChange::SetMembers {
            number: number.clone(),
            name: ext.map(|x| x.name.clone()).unwrap_or_default(),
            members: entry.members.clone(),
        });
    }
}

/// `recheck`: upsert the OMM user and bind its handset even if the mirror says nothing
/// changed (a resync's or a repair's check of what the OMM holds).
fn upsert(
    p: &mut Plan,
    mirror: &mut impl MirrorMut,
    ext: &Extension,
    epoch: Option<i64>,
    recheck: bool,
) {
    let number = &ext.number;
    let entry = mirror.get(number).cloned().unwrap_or_default();
    let prev = entry.extension.clone();
    let unchanged = prev.as_ref() == Some(ext);
    let name = ext.name.clone();
    // tear down what the previous type had and this one has not (spec §6.1 "type changes")
    let was_dect = is_dect(prev.as_ref());
    let was_user = is_user(prev.as_ref());
    if is_group(prev.as_ref()) && !matches!(ext.kind, Kind::Group { .. }) {
        p.sip.push(SipChange::NotGroup {
            number: number.clone(),
            name: name.clone(),
        });
    }
    match &ext.kind {
        Kind::Sip { password, premium } => {
            if was_dect || prev.is_none() {
                p.dect.push(DectOp::Delete(number.clone()));
            }
            p.sip.push(SipChange::UpsertUser {
                number: number.clone(),
                kind: SipUserKind::Sip,
                name,
                password: Some(password.clone()),
                premium: *premium,
                routing: ext.routing.clone(),
                forward: ext.forward.clone(),
            });
        }
        Kind::Dect {
            token,
            encryption,
            handset,
        } => {
            p.sip.push(SipChange::UpsertUser {
                number: number.clone(),
                kind: SipUserKind::Dect,
                name: name.clone(),
                password: None,
                premium: false,
                routing: ext.routing.clone(),
                forward: ext.forward.clone(),
            });
            // inside a resync (or a repair) the OMM is always upserted: it may have been
            // changed or emptied behind hexidian's back, and the adapter's upsert is idempotent
            let resync = epoch.is_some() || recheck;
            if !unchanged || resync {
                p.dect.push(DectOp::Upsert {
                    number: number.clone(),
                    name: omm_name(&name),
                    token: token.clone(),
                    password_from: p.sip.len() - 1,
                    unchanged,
                });
                let (known, was_encrypted) = match &prev {
                    Some(Extension {
                        kind:
                            Kind::Dect {
                                handset: h,
                                encryption: e,
                                ..
                            },
                        ..
                    }) => (h.clone(), Some(*e)),
                    _ => (None, None),
                };
                // a missing `dect` is "no information", not "unbind" (spec §6.7); a changed
                // `useEncryption` re-binds so the adapter sets it on the device
                let flag_changed = was_encrypted.is_some_and(|e| e != *encryption);
                let target = handset
                    .as_ref()
                    .or_else(|| known.as_ref().filter(|_| flag_changed));
                if let Some(h) =
                    target.filter(|h| resync || flag_changed || known.as_ref() != Some(*h))
                {
                    p.dect.push(DectOp::Bind {
                        number: number.clone(),
                        handset: h.clone(),
                        encryption: *encryption,
                    });
                }
            }
        }
        Kind::Group { short_name } => {
            if was_user {
                p.sip.push(SipChange::DeleteUser(number.clone()));
            }
            if was_dect {
                p.dect.push(DectOp::Delete(number.clone()));
            }
            p.sip.push(SipChange::UpsertGroup {
                number: number.clone(),
                name,
                short_name: short_name.clone(),
            });
        }
        Kind::Other { .. } => {
            // remove SIP/DECT remnants of the number; the extension is only recorded
            if was_user || prev.is_none() {
                p.sip.push(SipChange::DeleteUser(number.clone()));
            }
            if was_dect || prev.is_none() {
                p.dect.push(DectOp::Delete(number.clone()));
            }
        }
    }
    // a known DECT handset survives an update whose `dect` is absent
    let mut stored = ext.clone();
    if let (
        Kind::Dect {
            handset: h @ None, ..
        },
        Some(Extension {
            kind: Kind::Dect {
                handset: Some(old), ..
            },
            ..
        }),
    ) = (&mut stored.kind, &prev)
    {
        *h = Some(old.clone());
    }
    let mut entry = entry;
    entry.extension = Some(stored);
    if let Some(ep) = epoch {
        entry.seen_epoch = ep;
    }
    p.put(mirror, number, entry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, Member};

    fn n(s: &str) -> Number {
        s.parse().unwrap()
    }

    fn sip(num: &str) -> Extension {
        Extension {
            number: n(num),
            name: format!("User {num}"),
            kind: Kind::Sip {
                password: Secret::new("pw"),
                premium: false,
            },
            forward: None,
            routing: Default::default(),
        }
    }

    #[test]
    fn a_repair_rechecks_the_mirrors_entry_and_removes_what_it_lacks() {
        let mut m = Mirror::new();
        m.insert(
            n("2001"),
            MirrorEntry {
                extension: Some(sip("2001")),
                ..MirrorEntry::default()
            },
        );
        let p = plan(&Command::Repair(n("2001")), &mut m, None);
        let kinds: Vec<&str> = p
            .sip
            .iter()
            .map(|c| match c {
                SipChange::NotGroup { .. } => "not-group",
                SipChange::UpsertUser { .. } => "upsert-user",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["not-group", "upsert-user"]);
        // a SIP number has no OMM user of hexidian's: one there is removed (only if owned)
        assert_eq!(p.dect, [DectOp::Delete(n("2001"))]);
        // the entry itself does not change: nothing to store
        assert_eq!(p.mirror.len(), 1);
        assert_eq!(p.mirror[0].1.as_ref(), m.get(&n("2001")));
        // a number the mirror lacks loses what hexidian owns under it
        let p = plan(&Command::Repair(n("2999")), &mut m, None);
        assert_eq!(p.sip, [SipChange::DeleteExtension(n("2999"))]);
        assert_eq!(p.dect, [DectOp::Delete(n("2999"))]);
        assert!(p.mirror.is_empty());
    }

    #[test]
    fn the_mirror_knows_who_refers_to_a_number() {
        let member = |num: &str| Member {
            number: n(num),
            active: true,
            delay_s: 0,
        };
        let mut m = Mirror::new();
        let group = MirrorEntry {
            members: vec![member("2001"), member("2002")],
            ..MirrorEntry::default()
        };
        m.insert(n("1000"), group.clone());
        let mut fwd = sip("2003");
        fwd.forward = Some(Forward {
            target: n("2001"),
            mode: "ENABLED".into(),
            delay_s: 0,
        });
        m.insert(
            n("2003"),
            MirrorEntry {
                extension: Some(fwd),
                ..MirrorEntry::default()
            },
        );
        let who = |m: &Mirror, to: &str| -> Vec<String> {
            m.referring(&n(to)).map(ToString::to_string).collect()
        };
        assert_eq!(who(&m, "2001"), ["1000", "2003"]);
        assert_eq!(who(&m, "2002"), ["1000"]);
        // a new list replaces the old references; a removed entry takes its own along
        m.insert(
            n("1000"),
            MirrorEntry {
                members: vec![member("2002")],
                ..group
            },
        );
        assert_eq!(who(&m, "2001"), ["2003"]);
        m.remove(&n("2003"));
        assert!(who(&m, "2001").is_empty());
        m.remove(&n("1000"));
        assert!(m.refs.is_empty(), "{:?}", m.refs);
    }

    fn dect(num: &str, handset: Option<&str>) -> Extension {
        Extension {
            number: n(num),
            name: "Kiosk".into(),
            kind: Kind::Dect {
                token: Secret::new("0001"),
                encryption: false,
                handset: handset.map(|i| Handset {
                    ipei: i.into(),
                    uak: Secret::new("AA"),
                }),
            },
            forward: None,
            routing: Default::default(),
        }
    }

    fn apply(m: &mut Mirror, cmd: Command) -> Plan {
        plan(&cmd, m, None)
    }

    #[test]
    fn omm_names_are_sanitised() {
        assert_eq!(omm_name("Tomás R. 📞"), "Tom?s R. ?");
        assert_eq!(
            omm_name("Bühne\u{0}\n \"A\" <x>; ok and more text here"),
            "Bühne \"A\" <x>; ok a"
        );
        assert_eq!(omm_name("   "), "");
    }

    #[test]
    fn dect_update_without_changes_touches_no_omm() {
        let mut m = Mirror::new();
        let first = apply(
            &mut m,
            Command::Upsert(dect("2002", Some("03587 0412396 2"))),
        );
        assert_eq!(first.dect.len(), 2, "{:?}", first.dect);
        let again = apply(
            &mut m,
            Command::Upsert(dect("2002", Some("03587 0412396 2"))),
        );
        assert!(again.dect.is_empty(), "{:?}", again.dect);
        assert_eq!(
            again.sip.len(),
            1,
            "the PBX upsert is cheap and marks the sync epoch"
        );
        // `dect` absent later: keep the handset, no unbind
        let absent = apply(&mut m, Command::Upsert(dect("2002", None)));
        assert!(absent.dect.iter().all(|o| !matches!(o, DectOp::Release(_))));
        assert!(matches!(
            &m[&n("2002")].extension,
            Some(Extension {
                kind: Kind::Dect {
                    handset: Some(_),
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn a_resync_always_upserts_and_binds_dect_users() {
        // the OMM may have lost or changed the user behind hexidian's back
        let mut m = Mirror::new();
        let cmd = Command::Upsert(dect("2002", Some("03587 0412396 2")));
        plan(&cmd, &mut m, None);
        let p = plan(&cmd, &mut m, Some(7));
        assert!(
            matches!(
                p.dect.as_slice(),
                [DectOp::Upsert { .. }, DectOp::Bind { .. }]
            ),
            "{:?}",
            p.dect
        );
    }

    #[test]
    fn a_changed_encryption_flag_reaches_the_bound_handset() {
        let mut m = Mirror::new();
        plan(
            &Command::Upsert(dect("2002", Some("03587 0412396 2"))),
            &mut m,
            None,
        );
        // the next update has no `dect` (no information) but turns encryption on
        let mut e = dect("2002", None);
        if let Kind::Dect { encryption, .. } = &mut e.kind {
            *encryption = true;
        }
        let p = plan(&Command::Upsert(e), &mut m, None);
        assert!(
            p.dect.iter().any(|o| matches!(
                o,
                DectOp::Bind {
                    encryption: true,
                    ..
                }
            )),
            "{:?}",
            p.dect
        );
    }

    #[test]
    fn type_changes_tear_down_the_old_incarnation() {
        let mut m = Mirror::new();
        apply(&mut m, Command::Upsert(dect("2001", None)));
        let p = apply(&mut m, Command::Upsert(sip("2001")));
        assert!(p.dect.contains(&DectOp::Delete(n("2001"))));
        let mut g = sip("2001");
        g.kind = Kind::Group {
            short_name: "X".into(),
        };
        let p = apply(&mut m, Command::Upsert(g));
        assert!(p.sip.contains(&SipChange::DeleteUser(n("2001"))));
        let mut o = sip("2001");
        o.kind = Kind::Other {
            wire_type: "GSM".into(),
        };
        let p = apply(&mut m, Command::Upsert(o));
        assert!(
            p.sip
                .iter()
                .any(|c| matches!(c, SipChange::NotGroup { .. }))
        );
    }

    #[test]
    fn rename_rewrites_members_and_forwards() {
        let mut m = Mirror::new();
        apply(&mut m, Command::Upsert(dect("2002", None)));
        let mut a = sip("2001");
        a.forward = Some(Forward {
            target: n("2002"),
            mode: "ON_BUSY".into(),
            delay_s: 0,
        });
        apply(&mut m, Command::Upsert(a));
        apply(
            &mut m,
            Command::SetMembers {
                number: n("1100"),
                name: "g".into(),
                members: vec![Member {
                    number: n("2002"),
                    active: true,
                    delay_s: 5,
                }],
            },
        );
        let p = apply(
            &mut m,
            Command::Rename {
                old: n("2002"),
                new: n("2020"),
            },
        );
        assert!(p.dect.contains(&DectOp::Rename(n("2002"), n("2020"))));
        assert!(!m.contains_key(&n("2002")));
        assert_eq!(m[&n("2020")].extension.as_ref().unwrap().number, n("2020"));
        assert_eq!(m[&n("1100")].members[0].number, n("2020"));
        assert_eq!(
            m[&n("2001")]
                .extension
                .as_ref()
                .unwrap()
                .forward
                .as_ref()
                .unwrap()
                .target,
            n("2020")
        );
        // the replay is a no-op
        let again = apply(
            &mut m,
            Command::Rename {
                old: n("2002"),
                new: n("2020"),
            },
        );
        assert!(again.sip.is_empty() && again.dect.is_empty());
    }

    #[test]
    fn delete_drops_memberships_and_unknown_numbers_are_fine() {
        let mut m = Mirror::new();
        apply(&mut m, Command::Upsert(sip("2345")));
        apply(
            &mut m,
            Command::SetMembers {
                number: n("1100"),
                name: "g".into(),
                members: vec![
                    Member {
                        number: n("2345"),
                        active: true,
                        delay_s: 0,
                    },
                    Member {
                        number: n("1100"),
                        active: true,
                        delay_s: 0,
                    },
                ],
            },
        );
        assert_eq!(
            m[&n("1100")].members.len(),
            1,
            "a group never contains itself"
        );
        apply(&mut m, Command::Delete(n("2345")));
        assert!(m[&n("1100")].members.is_empty());
        let p = apply(&mut m, Command::Delete(n("9999")));
        assert_eq!(p.sip, [SipChange::DeleteExtension(n("9999"))]);
        assert!(
            apply(&mut m, Command::Unsubscribe(n("9999")))
                .dect
                .is_empty()
        );
    }

    #[test]
    fn unsubscribe_releases_the_handset() {
        let mut m = Mirror::new();
        apply(
            &mut m,
            Command::Upsert(dect("2020", Some("03587 0412396 2"))),
        );
        let p = apply(&mut m, Command::Unsubscribe(n("2020")));
        assert_eq!(p.dect, [DectOp::Release(n("2020"))]);
        assert!(matches!(
            &m[&n("2020")].extension,
            Some(Extension {
                kind: Kind::Dect { handset: None, .. },
                ..
            })
        ));
    }

    #[test]
    fn sync_epochs_are_stamped() {
        let mut m = Mirror::new();
        plan(&Command::Upsert(sip("2001")), &mut m, Some(4));
        plan(
            &Command::SetMembers {
                number: n("2001"),
                name: "a".into(),
                members: vec![],
            },
            &mut m,
            Some(4),
        );
        assert_eq!(
            (m[&n("2001")].seen_epoch, m[&n("2001")].members_epoch),
            (4, 4)
        );
    }
}

//! What the OMM holds, as far as provisioning needs it: a compact projection of every user and
//! device, read once per session in a pipelined pass and kept current by this crate's own
//! writes (under the keys of what they touch) and by the OMM's `…Cnf` events.
//!
//! A full `PpUser` carries some eighty optional attributes; a [`UserRow`] keeps the seven a
//! provisioning decision reads, a [`DevRow`] the five of a device. 10,000 users and handsets
//! take about 2 MB here.
//!
//! While the pass runs the map is *incomplete*: questions are answered by the OMM (and the
//! answers noted here), and a row that was written or announced since the pass started is
//! newer than the pass's copy of it, which is then skipped.

use std::collections::{HashMap, HashSet};

use omm_axi::{Ipei, PpDevice, PpUser, Sensitive, SubscriptionState};

/// What provisioning needs of an OMM user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub(crate) uid: u32,
    pub(crate) num: Box<str>,
    pub(crate) name: Box<str>,
    pub(crate) add_id: Box<str>,
    pub(crate) sip_auth_id: Box<str>,
    pub(crate) hierarchy1: Box<str>,
    pub(crate) hierarchy2: Box<str>,
    /// The bound device, 0 for none.
    pub(crate) ppn: u32,
}

/// What provisioning needs of an OMM device.
#[derive(Debug, Clone, Default)]
pub(crate) struct DevRow {
    pub(crate) ppn: u32,
    pub(crate) ipei: Option<Ipei>,
    /// The bound user, 0 for none.
    pub(crate) uid: u32,
    pub(crate) encrypt: Option<bool>,
    pub(crate) subscribed: bool,
    pub(crate) uak: Option<Sensitive>,
}

fn merge_str(into: &mut Box<str>, from: Option<&String>) {
    if let Some(v) = from {
        if **into != **v {
            *into = v.as_str().into();
        }
    }
}

impl UserRow {
    /// Takes every attribute `u` carries (a full record, or the changed ones of an event).
    fn merge(&mut self, u: &PpUser) {
        merge_str(&mut self.num, u.num.as_ref());
        merge_str(&mut self.name, u.name.as_ref());
        merge_str(&mut self.add_id, u.add_id.as_ref());
        merge_str(&mut self.sip_auth_id, u.sip_auth_id.as_ref());
        merge_str(&mut self.hierarchy1, u.hierarchy1.as_ref());
        merge_str(&mut self.hierarchy2, u.hierarchy2.as_ref());
        if let Some(p) = u.ppn {
            self.ppn = p.get();
        }
    }
}

impl DevRow {
    fn merge(&mut self, d: &PpDevice) {
        if d.ipei.is_some() {
            self.ipei = d.ipei;
        }
        if let Some(u) = d.uid {
            self.uid = u.get();
        }
        if d.encrypt.is_some() {
            self.encrypt = d.encrypt;
        }
        if let Some(s) = &d.s {
            self.subscribed = *s == SubscriptionState::Yes;
        }
        if let Some(uak) = &d.uak {
            self.uak = Some(Sensitive::new(uak.expose()));
        }
    }
}

/// An answer of the map: known to be there, known to be absent, or not known (the pass has
/// not finished: ask the OMM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known<T> {
    Yes(T),
    No,
    Unknown,
}

/// The projection of one session's OMM.
#[derive(Debug, Default)]
pub(crate) struct Map {
    users: HashMap<u32, UserRow>,
    by_num: HashMap<Box<str>, u32>,
    devices: HashMap<u32, DevRow>,
    by_ipei: HashMap<Ipei, u32>,
    complete: bool,
    /// Users and devices written or announced since the pass started.
    touched_users: HashSet<u32>,
    touched_devices: HashSet<u32>,
}

impl Map {
    /// Forgets everything: a new session's pass starts.
    pub(crate) fn restart(&mut self) {
        *self = Self::default();
    }

    /// The pass read everything.
    pub(crate) fn finish(&mut self) {
        self.complete = true;
        self.touched_users = HashSet::new();
        self.touched_devices = HashSet::new();
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.devices.len())
    }

    /// A page of the pass: rows changed since the pass began are newer than the page's.
    pub(crate) fn scanned_users(&mut self, page: &[PpUser]) {
        for u in page {
            if !self.touched_users.contains(&u.uid().get()) {
                self.put_user(u);
            }
        }
    }

    pub(crate) fn scanned_devices(&mut self, page: &[PpDevice]) {
        for d in page {
            if !self.touched_devices.contains(&d.ppn().get()) {
                self.put_device(d);
            }
        }
    }

    /// A user as the OMM answered or announced it (full or changed attributes).
    pub(crate) fn user(&mut self, u: &PpUser) {
        if !self.complete {
            self.touched_users.insert(u.uid().get());
        }
        self.put_user(u);
    }

    fn put_user(&mut self, u: &PpUser) {
        let uid = u.uid().get();
        if uid == 0 {
            return;
        }
        let row = self.users.entry(uid).or_insert_with(|| UserRow {
            uid,
            ..UserRow::default()
        });
        let before = row.num.clone();
        row.merge(u);
        if row.num != before && self.by_num.get(&before) == Some(&uid) {
            self.by_num.remove(&before);
        }
        if !row.num.is_empty() {
            self.by_num.insert(row.num.clone(), uid);
        }
    }

    pub(crate) fn user_gone(&mut self, uid: u32) {
        if !self.complete {
            self.touched_users.insert(uid);
        }
        if let Some(row) = self.users.remove(&uid) {
            if self.by_num.get(&row.num) == Some(&uid) {
                self.by_num.remove(&row.num);
            }
            if row.ppn != 0 {
                if let Some(d) = self.devices.get_mut(&row.ppn).filter(|d| d.uid == uid) {
                    d.uid = 0;
                }
            }
        }
    }

    pub(crate) fn device(&mut self, d: &PpDevice) {
        if !self.complete {
            self.touched_devices.insert(d.ppn().get());
        }
        self.put_device(d);
    }

    fn put_device(&mut self, d: &PpDevice) {
        let ppn = d.ppn().get();
        if ppn == 0 {
            return;
        }
        let row = self.devices.entry(ppn).or_insert_with(|| DevRow {
            ppn,
            ..DevRow::default()
        });
        let before = row.ipei;
        row.merge(d);
        if row.ipei != before {
            if let Some(b) = before {
                if self.by_ipei.get(&b) == Some(&ppn) {
                    self.by_ipei.remove(&b);
                }
            }
        }
        if let Some(i) = row.ipei {
            self.by_ipei.insert(i, ppn);
        }
    }

    pub(crate) fn device_gone(&mut self, ppn: u32) {
        if !self.complete {
            self.touched_devices.insert(ppn);
        }
        if let Some(row) = self.devices.remove(&ppn) {
            if let Some(i) = row.ipei {
                if self.by_ipei.get(&i) == Some(&ppn) {
                    self.by_ipei.remove(&i);
                }
            }
            if let Some(u) = self.users.get_mut(&row.uid).filter(|u| u.ppn == ppn) {
                u.ppn = 0;
            }
        }
    }

    fn known<T>(&self, found: Option<T>) -> Known<T> {
        match found {
            Some(t) => Known::Yes(t),
            None if self.complete => Known::No,
            None => Known::Unknown,
        }
    }

    /// The user with number `num`; only a complete map knows an absence, and only a row
    /// noted since the pass began is trusted before it completes.
    pub(crate) fn by_number(&self, num: &str) -> Known<UserRow> {
        let found = self
            .by_num
            .get(num)
            .and_then(|uid| self.users.get(uid))
            .filter(|u| self.complete || self.touched_users.contains(&u.uid));
        self.known(found.cloned())
    }

    pub(crate) fn by_uid(&self, uid: u32) -> Known<UserRow> {
        let found = self
            .users
            .get(&uid)
            .filter(|u| self.complete || self.touched_users.contains(&u.uid));
        self.known(found.cloned())
    }

    pub(crate) fn by_ipei(&self, ipei: Ipei) -> Known<DevRow> {
        let found = self
            .by_ipei
            .get(&ipei)
            .and_then(|p| self.devices.get(p))
            .filter(|d| self.complete || self.touched_devices.contains(&d.ppn));
        self.known(found.cloned())
    }

    pub(crate) fn by_ppn(&self, ppn: u32) -> Known<DevRow> {
        let found = self
            .devices
            .get(&ppn)
            .filter(|d| self.complete || self.touched_devices.contains(&d.ppn));
        self.known(found.cloned())
    }

    /// A device by ppn, without cloning (a complete map's answer).
    pub(crate) fn device_row(&self, ppn: u32) -> Option<&DevRow> {
        self.devices.get(&ppn)
    }

    /// Every user (a complete map only).
    pub(crate) fn users(&self) -> Option<impl Iterator<Item = &UserRow>> {
        self.complete.then(|| self.users.values())
    }

    /// Every device with its user (a complete map only).
    pub(crate) fn devices(&self) -> Option<impl Iterator<Item = (&DevRow, Option<&UserRow>)>> {
        self.complete.then(|| {
            self.devices
                .values()
                .map(|d| (d, (d.uid != 0).then(|| self.users.get(&d.uid)).flatten()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omm_axi::{Ppn, Uid};

    fn user(uid: u32, num: Option<&str>, ppn: Option<u32>) -> PpUser {
        let mut u = PpUser::default();
        u.uid = Some(Uid::new(uid));
        u.num = num.map(str::to_owned);
        u.ppn = ppn.map(Ppn::new);
        u
    }

    #[test]
    fn a_pass_never_overwrites_what_was_noted_since_it_began() {
        let mut m = Map::default();
        assert_eq!(m.by_number("2001"), Known::Unknown);
        // written while the pass runs, then the pass delivers its older copy
        m.user(&user(1, Some("2001"), None));
        m.scanned_users(&[user(1, Some("1999"), None), user(2, Some("2002"), None)]);
        assert!(matches!(m.by_number("2001"), Known::Yes(u) if u.uid == 1));
        assert_eq!(m.by_number("1999"), Known::Unknown);
        // an unnoted row is not trusted before the pass completes
        assert_eq!(m.by_number("2002"), Known::Unknown);
        m.finish();
        assert!(matches!(m.by_number("2002"), Known::Yes(u) if u.uid == 2));
        assert_eq!(m.by_number("1999"), Known::No);
    }

    #[test]
    fn events_rename_unbind_and_delete() {
        let mut m = Map::default();
        m.finish();
        m.user(&user(1, Some("2001"), Some(5)));
        let mut d = PpDevice::default();
        d.ppn = Some(Ppn::new(5));
        d.uid = Some(Uid::new(1));
        d.ipei = Some("03074 0220259 3".parse().unwrap());
        m.device(&d);
        // a change event carries only what changed
        m.user(&user(1, Some("3001"), None));
        assert_eq!(m.by_number("2001"), Known::No);
        assert!(matches!(m.by_number("3001"), Known::Yes(u) if u.ppn == 5));
        m.user_gone(1);
        assert_eq!(m.by_uid(1), Known::No);
        let Known::Yes(dev) = m.by_ppn(5) else {
            panic!("device gone")
        };
        assert_eq!(dev.uid, 0, "deleting the user frees the handset");
        m.device_gone(5);
        assert!(matches!(m.by_ipei(d.ipei.unwrap()), Known::No));
        assert_eq!(m.counts(), (0, 0));
    }
}

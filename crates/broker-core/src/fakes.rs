//! In-memory models of every port (feature `fakes`): they keep state like the real systems
//! (users, devices, epochs, a queue with an ack flag), so tests assert on outcomes, not calls.
//! The unbound-handset workflow's own ports have theirs in `unbound_handsets::fakes`.
//! The in-memory SIP store and state store also back the demo (`hexidian-demo`) when no PostgreSQL
//! server binaries are installed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::model::{Handset, Incoming, Member, MirrorEntry, Number, Secret};
use crate::ports::{
    BoxFuture, Clock, DectSystem, DectUser, EventFeed, FeedHealth, JournalEntry, JournalStats,
    JournalStatus, PortError, PortErrorKind, PortResult, SipChange, SipOutcome, SipProvisioning,
    SipUserKind, StateOp, StateStore, SweepSummary,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Injected failures: an outage (the peer cannot be asked) for the next `n` calls or until
/// cleared, and "not now" answers (the peer answered, a retry may succeed). Shared with the
/// fakes of other crates' ports.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this many calls cannot reach the peer.
    pub outage: u32,
    /// The peer is down until cleared.
    pub down: bool,
    /// The next this many calls are answered "busy" (transient).
    pub refuse: u32,
    /// Every call is refused as bad data with this code (as a peer that changed its rules
    /// would), until cleared.
    pub reject: Option<String>,
}

impl Faults {
    /// The injected failure for this call, if any (and counts it down).
    pub fn check(&mut self, what: &str) -> PortResult<()> {
        if self.down {
            return Err(PortError::unavailable(format!("{what}: peer is down")));
        }
        if self.outage > 0 {
            self.outage -= 1;
            return Err(PortError::unavailable(format!("{what}: injected outage")));
        }
        if self.refuse > 0 {
            self.refuse -= 1;
            return Err(PortError::transient(format!("{what}: peer answered busy")));
        }
        if let Some(code) = &self.reject {
            return Err(PortError::rejected(format!("{what}: refused ({code})")).with_code(code));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- feed

#[derive(Debug, Default)]
struct FeedState {
    queue: Vec<(Incoming, bool)>,
    acks: Vec<i64>,
    wakers: Vec<Waker>,
    /// the queue changed (a push or an ack) since the last batch was handed out
    changed: bool,
}

/// GURU3's queue: messages stay until acked; a batch is every unacked message, handed out
/// when the queue changed since the last one (as GURU3's websocket wakes its client).
#[derive(Debug, Clone, Default)]
pub struct MemoryFeed {
    inner: Arc<Mutex<FeedState>>,
}

impl MemoryFeed {
    /// Queues a message.
    pub fn push(&self, msg: Incoming) {
        let mut s = lock(&self.inner);
        s.queue.push((msg, false));
        s.changed = true;
        for w in s.wakers.drain(..) {
            w.wake();
        }
    }

    /// Hands every unacked message out again with the next batch, as GURU3 does for a
    /// client's first fetch after a (re)start.
    pub fn wake(&self) {
        let mut s = lock(&self.inner);
        s.changed = true;
        for w in s.wakers.drain(..) {
            w.wake();
        }
    }

    /// Ids acked so far, in order (repeats included).
    pub fn acks(&self) -> Vec<i64> {
        lock(&self.inner).acks.clone()
    }

    /// Ids not yet acked.
    pub fn unacked(&self) -> Vec<i64> {
        lock(&self.inner)
            .queue
            .iter()
            .filter(|(_, a)| !a)
            .map(|(m, _)| m.id)
            .collect()
    }
}

impl EventFeed for MemoryFeed {
    fn next_batch(&self) -> BoxFuture<'_, PortResult<Vec<Incoming>>> {
        Box::pin(futures_util::future::poll_fn(move |cx| {
            let mut s = lock(&self.inner);
            let batch: Vec<Incoming> = s
                .queue
                .iter()
                .filter(|(_, acked)| !acked)
                .map(|(m, _)| m.clone())
                .collect();
            if batch.is_empty() || !s.changed {
                s.wakers.push(cx.waker().clone());
                Poll::Pending
            } else {
                s.changed = false;
                Poll::Ready(Ok(batch))
            }
        }))
    }

    fn ack(&self, ids: Vec<i64>) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        s.changed |= !ids.is_empty();
        for w in s.wakers.drain(..) {
            w.wake();
        }
        for id in ids {
            s.acks.push(id);
            for (m, acked) in &mut s.queue {
                if m.id == id {
                    *acked = true;
                }
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn health(&self) -> FeedHealth {
        FeedHealth {
            push_connected: true,
            last_fetch_ok: true,
            pending_acks: 0,
        }
    }
}

// ---------------------------------------------------------------- DECT

/// An OMM user as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDectUser {
    /// The user record.
    pub user: DectUser,
    /// Attached handset's IPEI.
    pub handset: Option<String>,
    /// Owned by the broker (false: created by someone else).
    pub owned: bool,
}

#[derive(Debug, Default)]
struct DectState {
    users: BTreeMap<Number, FakeDectUser>,
    /// subscribed handsets: IPEI → UAK
    devices: BTreeMap<String, Secret>,
    faults: Faults,
    calls: u64,
}

/// The OMM: users by number, subscribed handsets, relations.
#[derive(Debug, Clone, Default)]
pub struct MemoryDect {
    inner: Arc<Mutex<DectState>>,
}

impl MemoryDect {
    /// The user of a number.
    pub fn user(&self, number: &str) -> Option<FakeDectUser> {
        let n: Number = number.parse().ok()?;
        lock(&self.inner).users.get(&n).cloned()
    }

    /// All user numbers.
    pub fn numbers(&self) -> Vec<String> {
        lock(&self.inner)
            .users
            .keys()
            .map(|n| n.to_string())
            .collect()
    }

    /// Subscribed handsets (IPEIs).
    pub fn devices(&self) -> Vec<String> {
        lock(&self.inner).devices.keys().cloned().collect()
    }

    /// A user created by someone else, holding a handset.
    pub fn seed_foreign_with_handset(&self, number: &str, ipei: &str) {
        self.seed_foreign(number, "Someone else's");
        if let Ok(n) = number.parse::<Number>() {
            if let Some(u) = lock(&self.inner).users.get_mut(&n) {
                u.handset = Some(ipei.into());
            }
        }
    }

    /// A user created by someone else (the broker must never delete it).
    pub fn seed_foreign(&self, number: &str, name: &str) {
        let Ok(n) = number.parse::<Number>() else {
            return;
        };
        lock(&self.inner).users.insert(
            n.clone(),
            FakeDectUser {
                user: DectUser {
                    unchanged: false,
                    number: n,
                    name: name.into(),
                    sip_password: Secret::new(""),
                    token: Secret::new(""),
                },
                handset: None,
                owned: false,
            },
        );
    }

    /// The next `n` calls fail as if the link were down.
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).faults.outage = n;
    }

    /// Removes a user behind the broker's back (as an OMM admin could).
    pub fn remove_behind_back(&self, number: &str) {
        if let Ok(n) = number.parse::<Number>() {
            lock(&self.inner).users.remove(&n);
        }
    }

    /// Takes the OMM down (every call fails as unreachable) or brings it back.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner).faults.down = down;
    }

    /// The next `n` calls are answered "busy" (transient, counted as attempts).
    pub fn refuse_next(&self, n: u32) {
        lock(&self.inner).faults.refuse = n;
    }

    /// Every call is refused as bad data with `code` (`None`: no longer).
    pub fn reject_all(&self, code: Option<&str>) {
        lock(&self.inner).faults.reject = code.map(str::to_owned);
    }

    /// Calls made.
    pub fn calls(&self) -> u64 {
        lock(&self.inner).calls
    }

    fn enter(&self, what: &str) -> PortResult<MutexGuard<'_, DectState>> {
        let mut s = lock(&self.inner);
        s.calls += 1;
        s.faults.check(what)?;
        Ok(s)
    }
}

fn ready<T: Send + 'static>(r: PortResult<T>) -> BoxFuture<'static, PortResult<T>> {
    Box::pin(async move { r })
}

impl DectSystem for MemoryDect {
    fn upsert_user(&self, user: DectUser) -> BoxFuture<'_, PortResult<()>> {
        ready(
            self.enter("upsert_user")
                .and_then(|mut s| match s.users.get_mut(&user.number) {
                    Some(u) if !u.owned => Err(PortError::new(
                        PortErrorKind::Conflict,
                        format!("omm user {} is not ours", user.number),
                    )),
                    Some(u) => {
                        u.user = user;
                        Ok(())
                    }
                    None => {
                        s.users.insert(
                            user.number.clone(),
                            FakeDectUser {
                                user,
                                handset: None,
                                owned: true,
                            },
                        );
                        Ok(())
                    }
                }),
        )
    }

    fn delete_user(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        ready(self.enter("delete_user").map(|mut s| {
            if s.users.get(&number).is_some_and(|u| u.owned) {
                // the handset stays subscribed, unbound
                s.users.remove(&number);
                true
            } else {
                false
            }
        }))
    }

    fn rename_user(&self, old: Number, new: Number) -> BoxFuture<'_, PortResult<()>> {
        ready(self.enter("rename_user").map(|mut s| {
            // an owned user already at `new` is a stale copy (a replay): it is replaced
            let new_free = s.users.get(&new).is_none_or(|u| u.owned);
            if s.users.get(&old).is_some_and(|u| u.owned) && new_free {
                if let Some(mut u) = s.users.remove(&old) {
                    u.user.number = new.clone();
                    s.users.insert(new, u);
                }
            }
        }))
    }

    fn bind_handset(
        &self,
        number: Number,
        handset: Handset,
        _encryption: bool,
    ) -> BoxFuture<'_, PortResult<()>> {
        ready(self.enter("bind_handset").and_then(|mut s| {
            // like the adapter: a handset is never taken from a user someone else owns
            if let Some(holder) = s
                .users
                .values()
                .find(|u| !u.owned && u.handset.as_deref() == Some(handset.ipei.as_str()))
            {
                return Err(PortError::new(
                    PortErrorKind::Conflict,
                    format!(
                        "handset {} is attached to omm user {}, which is not ours",
                        handset.ipei, holder.user.number
                    ),
                ));
            }
            s.devices.insert(handset.ipei.clone(), handset.uak.clone());
            // a handset belongs to one user at most
            for u in s.users.values_mut() {
                if u.handset.as_deref() == Some(handset.ipei.as_str()) {
                    u.handset = None;
                }
            }
            match s.users.get_mut(&number) {
                Some(u) if u.owned => {
                    u.handset = Some(handset.ipei);
                    Ok(())
                }
                _ => Err(PortError::new(
                    PortErrorKind::NotFound,
                    format!("no omm user {number}"),
                )),
            }
        }))
    }

    fn release_handset(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        ready(self.enter("release_handset").map(|mut s| {
            s.users
                .get_mut(&number)
                .filter(|u| u.owned)
                .and_then(|u| u.handset.take())
                .is_some()
        }))
    }

    fn ping(&self) -> BoxFuture<'_, PortResult<()>> {
        ready(self.enter("ping").map(drop))
    }

    fn list_owned(&self) -> BoxFuture<'_, PortResult<Vec<Number>>> {
        ready(self.enter("list_owned").map(|s| {
            s.users
                .iter()
                .filter(|(_, u)| u.owned)
                .map(|(n, _)| n.clone())
                .collect()
        }))
    }
}

// ---------------------------------------------------------------- SIP

/// A PBX user as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSipUser {
    /// SIP or DECT.
    pub kind: SipUserKind,
    /// Display name.
    pub name: String,
    /// Password.
    pub password: Secret,
    seen: i64,
}

#[derive(Debug, Default)]
struct SipState {
    users: BTreeMap<Number, FakeSipUser>,
    groups: BTreeMap<Number, (String, i64)>,
    members: BTreeMap<Number, (Vec<Member>, i64)>,
    epoch: i64,
    in_progress: bool,
    faults: Faults,
    batches: u64,
    /// number → how many more changes of it fail as a lock timeout
    locked: BTreeMap<Number, u32>,
    /// numbers whose change makes the whole transaction run past its statement timeout
    heavy: BTreeSet<Number>,
}

/// The number a change is about.
fn change_number(c: &SipChange) -> &Number {
    match c {
        SipChange::UpsertUser { number, .. }
        | SipChange::UpsertGroup { number, .. }
        | SipChange::SetMembers { number, .. }
        | SipChange::NotGroup { number, .. } => number,
        SipChange::DeleteUser(n)
        | SipChange::DeleteExtension(n)
        | SipChange::Rename { old: n, .. } => n,
    }
}

/// The PBX: users, groups, member lists and the resync epoch.
#[derive(Debug, Clone, Default)]
pub struct MemorySip {
    inner: Arc<Mutex<SipState>>,
}

impl MemorySip {
    /// The user of a number.
    pub fn user(&self, number: &str) -> Option<FakeSipUser> {
        let n: Number = number.parse().ok()?;
        lock(&self.inner).users.get(&n).cloned()
    }

    /// All user numbers.
    pub fn numbers(&self) -> Vec<String> {
        lock(&self.inner)
            .users
            .keys()
            .map(|n| n.to_string())
            .collect()
    }

    /// Group numbers.
    pub fn groups(&self) -> Vec<String> {
        lock(&self.inner)
            .groups
            .keys()
            .map(|n| n.to_string())
            .collect()
    }

    /// Member list of a number.
    pub fn members(&self, number: &str) -> Vec<Member> {
        let Ok(n) = number.parse::<Number>() else {
            return Vec::new();
        };
        lock(&self.inner)
            .members
            .get(&n)
            .map(|m| m.0.clone())
            .unwrap_or_default()
    }

    /// The next `n` batches fail as if the database were unreachable (nothing applied).
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).faults.outage = n;
    }

    /// Takes the database down or brings it back.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner).faults.down = down;
    }

    /// Every transaction with a change of `number` runs past its statement timeout (a change
    /// too heavy for the PBX), while everything else works.
    pub fn make_heavy(&self, number: &str) {
        if let Ok(n) = number.parse() {
            lock(&self.inner).heavy.insert(n);
        }
    }

    /// The next `times` changes of `number` fail as if its row were locked (the rest of
    /// the batch applies).
    pub fn lock_number(&self, number: &str, times: u32) {
        if let Ok(n) = number.parse() {
            lock(&self.inner).locked.insert(n, times);
        }
    }

    /// Batches applied.
    pub fn batches(&self) -> u64 {
        lock(&self.inner).batches
    }
}

fn random_password() -> Secret {
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    Secret::new(
        b.iter()
            .map(|x| char::from(A[usize::from(*x) % A.len()]))
            .collect::<String>(),
    )
}

impl SipState {
    fn change(&mut self, c: SipChange) -> PortResult<SipOutcome> {
        let epoch = if self.in_progress { self.epoch } else { 0 };
        Ok(match c {
            SipChange::UpsertUser {
                number,
                kind,
                name,
                password,
                ..
            } => {
                let pw = match (kind, password, self.users.get(&number)) {
                    (_, Some(p), _) => p,
                    (SipUserKind::Dect | SipUserKind::Temp, None, Some(u)) => u.password.clone(),
                    (SipUserKind::Dect | SipUserKind::Temp, None, None) => random_password(),
                    (SipUserKind::Sip, None, _) => {
                        return Err(PortError::rejected(format!(
                            "sip user {number} without password"
                        )));
                    }
                };
                let created = self
                    .users
                    .insert(
                        number,
                        FakeSipUser {
                            kind,
                            name,
                            password: pw.clone(),
                            seen: epoch,
                        },
                    )
                    .is_none();
                if created {
                    SipOutcome::NewUser(pw)
                } else {
                    SipOutcome::User(pw)
                }
            }
            SipChange::DeleteUser(n) => SipOutcome::Done(self.users.remove(&n).is_some()),
            SipChange::Rename { old, new } => {
                // like asterisk-realtime: a user already at `new` is a stale copy and replaced
                let moved = match self.users.remove(&old) {
                    Some(u) => {
                        self.users.insert(new.clone(), u);
                        true
                    }
                    None => false,
                };
                if let Some(g) = self.groups.remove(&old) {
                    self.groups.insert(new.clone(), g);
                }
                if let Some(m) = self.members.remove(&old) {
                    self.members.insert(new.clone(), m);
                }
                for (list, _) in self.members.values_mut() {
                    for m in list.iter_mut().filter(|m| m.number == old) {
                        m.number = new.clone();
                    }
                }
                SipOutcome::Done(moved)
            }
            SipChange::UpsertGroup { number, name, .. } => {
                self.groups.insert(number, (name, epoch));
                SipOutcome::Done(true)
            }
            SipChange::SetMembers {
                number, members, ..
            } => {
                self.members.insert(number, (members, epoch));
                SipOutcome::Done(true)
            }
            SipChange::NotGroup { number, .. } => {
                SipOutcome::Done(self.groups.remove(&number).is_some())
            }
            SipChange::DeleteExtension(n) => {
                let a = self.users.remove(&n).is_some();
                let b = self.groups.remove(&n).is_some();
                self.members.remove(&n);
                for (list, _) in self.members.values_mut() {
                    list.retain(|m| m.number != n);
                }
                SipOutcome::Done(a || b)
            }
        })
    }
}

impl SipProvisioning for MemorySip {
    fn apply(
        &self,
        changes: Vec<SipChange>,
    ) -> BoxFuture<'_, PortResult<Vec<PortResult<SipOutcome>>>> {
        let mut s = lock(&self.inner);
        if let Some(n) = changes
            .iter()
            .map(change_number)
            .find(|n| s.heavy.contains(*n))
        {
            // nothing of the transaction is applied
            return ready(Err(PortError::new(
                PortErrorKind::Slow,
                format!("sip change of {n}: statement timeout"),
            )));
        }
        let r = s.faults.check("sip apply").map(|()| {
            s.batches += 1;
            changes
                .into_iter()
                .map(|c| {
                    let n = change_number(&c);
                    if let Some(left) = s.locked.get_mut(n).filter(|l| **l > 0) {
                        *left -= 1;
                        return Err(PortError::unavailable(format!(
                            "sip change of {n}: lock timeout"
                        )));
                    }
                    s.change(c)
                })
                .collect()
        });
        ready(r)
    }

    fn begin_sync(&self) -> BoxFuture<'_, PortResult<i64>> {
        let mut s = lock(&self.inner);
        s.epoch += 1;
        s.in_progress = true;
        ready(Ok(s.epoch))
    }

    fn finish_sync(&self, epoch: i64) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        if s.epoch == epoch {
            s.in_progress = false;
        }
        ready(Ok(()))
    }

    fn sweep_sync(&self, epoch: i64) -> BoxFuture<'_, PortResult<SweepSummary>> {
        let mut s = lock(&self.inner);
        if s.epoch != epoch || !s.in_progress {
            return ready(Ok(SweepSummary::default()));
        }
        let users: Vec<Number> = s
            .users
            .iter()
            .filter(|(_, u)| u.seen < epoch && u.kind != SipUserKind::Temp)
            .map(|(n, _)| n.clone())
            .collect();
        let groups: Vec<Number> = s
            .groups
            .iter()
            .filter(|(_, g)| g.1 < epoch)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &users {
            s.users.remove(n);
        }
        for n in &groups {
            s.groups.remove(n);
        }
        s.members.retain(|_, m| m.1 >= epoch);
        ready(Ok(SweepSummary {
            users: users.iter().map(ToString::to_string).collect(),
            groups: groups.iter().map(ToString::to_string).collect(),
        }))
    }

    fn sync_state(&self) -> BoxFuture<'_, PortResult<(i64, bool)>> {
        let s = lock(&self.inner);
        if s.faults.down {
            return ready(Err(PortError::unavailable("sync state: peer is down")));
        }
        ready(Ok((s.epoch, s.in_progress)))
    }

    fn exists(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        let s = lock(&self.inner);
        ready(Ok(s.users.contains_key(&number)))
    }

    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<Number>>> {
        let s = lock(&self.inner);
        if s.faults.down {
            return ready(Err(PortError::unavailable("temporary users: peer is down")));
        }
        ready(Ok(s
            .users
            .iter()
            .filter(|(_, u)| u.kind == SipUserKind::Temp)
            .map(|(n, _)| n.clone())
            .collect()))
    }
}

// ---------------------------------------------------------------- state

#[derive(Debug, Default)]
struct StoreState {
    mirror: BTreeMap<Number, MirrorEntry>,
    journal: BTreeMap<i64, JournalEntry>,
    faults: Faults,
}

/// The broker's mirror and journal.
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    inner: Arc<Mutex<StoreState>>,
}

impl MemoryState {
    /// The journal entry of a message.
    pub fn journal(&self, id: i64) -> Option<JournalEntry> {
        lock(&self.inner).journal.get(&id).cloned()
    }

    /// Ids with the given status.
    pub fn with_status(&self, status: JournalStatus) -> BTreeSet<i64> {
        lock(&self.inner)
            .journal
            .values()
            .filter(|j| j.status == status)
            .map(|j| j.id)
            .collect()
    }

    /// The next `n` commits fail as if the database were unreachable.
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).faults.outage = n;
    }

    /// Takes the state store down or brings it back.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner).faults.down = down;
    }
}

impl StateStore for MemoryState {
    fn load(&self) -> BoxFuture<'_, PortResult<Vec<(Number, MirrorEntry)>>> {
        let s = lock(&self.inner);
        ready(Ok(s
            .mirror
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()))
    }

    fn commit(&self, ops: Vec<StateOp>) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("state commit").map(|()| {
            for op in ops {
                match op {
                    StateOp::Put(n, e) => {
                        s.mirror.insert(n, e);
                    }
                    StateOp::Remove(n) => {
                        s.mirror.remove(&n);
                    }
                    StateOp::Seen {
                        number,
                        seen_epoch,
                        members_epoch,
                    } => {
                        if let Some(e) = s.mirror.get_mut(&number) {
                            e.seen_epoch = e.seen_epoch.max(seen_epoch);
                            e.members_epoch = e.members_epoch.max(members_epoch);
                        }
                    }
                    StateOp::Journal(j) => {
                        s.journal.insert(j.id, j);
                    }
                }
            }
        });
        ready(r)
    }

    fn stats(&self) -> BoxFuture<'_, PortResult<JournalStats>> {
        let s = lock(&self.inner);
        let count = |st| s.journal.values().filter(|j| j.status == st).count() as u64;
        ready(Ok(JournalStats {
            done: count(JournalStatus::Done),
            ignored: count(JournalStatus::Ignored),
            dead: count(JournalStatus::Dead),
        }))
    }

    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, PortResult<Vec<JournalEntry>>> {
        let s = lock(&self.inner);
        ready(Ok(s
            .journal
            .values()
            .rev()
            .filter(|j| j.status == JournalStatus::Dead)
            .take(limit as usize)
            .cloned()
            .collect()))
    }

    fn dead_letter(&self, id: i64) -> BoxFuture<'_, PortResult<Option<(JournalEntry, bool)>>> {
        let s = lock(&self.inner);
        let found = s
            .journal
            .get(&id)
            .filter(|j| j.status == JournalStatus::Dead)
            .map(|j| {
                let later = s.journal.range(id + 1..).any(|(_, l)| {
                    l.status == JournalStatus::Done && l.number.is_some() && l.number == j.number
                });
                (j.clone(), later)
            });
        ready(Ok(found))
    }
}

// ---------------------------------------------------------------- clock

/// A clock whose `sleep` returns at once and moves time forward: retry loops run instantly
/// and deterministically.
#[derive(Debug, Clone)]
pub struct SkipClock {
    base: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl Default for SkipClock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            offset: Arc::default(),
        }
    }
}

impl SkipClock {
    /// Lets `d` pass (as a wall clock would while nobody sleeps).
    pub fn advance(&self, d: Duration) {
        *lock(&self.offset) += d;
    }

    /// Total time slept.
    pub fn slept(&self) -> Duration {
        *lock(&self.offset)
    }
}

impl Clock for SkipClock {
    fn now(&self) -> Instant {
        self.base + *lock(&self.offset)
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        *lock(&self.offset) += d;
        Box::pin(async {})
    }
}

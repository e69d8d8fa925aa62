//! In-memory models of the workflow's ports (feature `fakes`), stateful like the real
//! systems: an OMM's handsets and users with an event queue, the bind store with its outbox,
//! and a GURU3 that accepts every `ASSIGN_HANDSET`. They also back the demo's in-memory store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use broker_core::fakes::Faults;
use broker_core::model::{Number, Secret};
use broker_core::ports::{BoxFuture, PortError, PortErrorKind, PortResult};

use crate::ports::{
    Assign, AssignResult, AssignSink, DectEvent, Device, HandsetState, Handsets, Lookup,
    PendingBind, TempUser,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ready<T: Send + 'static>(r: PortResult<T>) -> BoxFuture<'static, PortResult<T>> {
    Box::pin(async move { r })
}

// ---------------------------------------------------------------- handsets

#[derive(Debug, Clone)]
struct FakeDevice {
    ipei: String,
    uak: Secret,
    subscribed: bool,
    user: Option<Number>,
}

#[derive(Debug, Default)]
struct HandsetsState {
    devices: BTreeMap<u32, FakeDevice>,
    /// user number → temporary
    users: BTreeMap<Number, bool>,
    mode: String,
    events: std::collections::VecDeque<DectEvent>,
    wakers: Vec<Waker>,
    faults: Faults,
    next_ppn: u32,
}

impl HandsetsState {
    fn push(&mut self, ev: DectEvent) {
        self.events.push_back(ev);
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    fn view(&self, ppn: u32) -> Option<Device> {
        let d = self.devices.get(&ppn)?;
        Some(Device {
            ppn,
            ipei: d.ipei.clone(),
            uak: d.uak.clone(),
            subscribed: d.subscribed,
            user: d.user.clone(),
            temp: d
                .user
                .as_ref()
                .is_some_and(|u| self.users.get(u) == Some(&true)),
        })
    }

    fn attach(&mut self, ppn: u32, user: &Number) {
        for d in self.devices.values_mut() {
            if d.user.as_ref() == Some(user) {
                d.user = None;
            }
        }
        if let Some(d) = self.devices.get_mut(&ppn) {
            d.user = Some(user.clone());
        }
        self.push(DectEvent::Device(ppn));
    }
}

/// The OMM's handsets: subscribed devices, users (extension or temporary), relations, the
/// subscription mode and an event queue.
#[derive(Debug, Clone, Default)]
pub struct MemoryHandsets {
    inner: Arc<Mutex<HandsetsState>>,
}

impl MemoryHandsets {
    /// An extension's user (as the broker creates it).
    pub fn add_user(&self, number: &str) {
        if let Ok(n) = number.parse() {
            lock(&self.inner).users.insert(n, false);
        }
    }

    /// Deletes a user; its handset stays subscribed, unbound (and an event says so).
    pub fn delete_user(&self, number: &str) {
        let Ok(n) = number.parse::<Number>() else {
            return;
        };
        let mut s = lock(&self.inner);
        s.users.remove(&n);
        let freed: Vec<u32> = s
            .devices
            .iter()
            .filter(|(_, d)| d.user.as_ref() == Some(&n))
            .map(|(p, _)| *p)
            .collect();
        for p in freed {
            if let Some(d) = s.devices.get_mut(&p) {
                d.user = None;
            }
            s.push(DectEvent::Device(p));
        }
    }

    /// A handset subscribes (new device, unbound; or a known one, which loses its user).
    pub fn subscribe(&self, ipei: &str) -> u32 {
        let mut s = lock(&self.inner);
        let existing = s
            .devices
            .iter()
            .find(|(_, d)| d.ipei == ipei)
            .map(|(p, _)| *p);
        let ppn = match existing {
            Some(p) => p,
            None => {
                s.next_ppn += 1;
                let p = s.next_ppn;
                s.devices.insert(
                    p,
                    FakeDevice {
                        ipei: ipei.into(),
                        uak: Secret::new(format!("{p:032X}")),
                        subscribed: true,
                        user: None,
                    },
                );
                p
            }
        };
        if let Some(d) = s.devices.get_mut(&ppn) {
            d.user = None;
            d.subscribed = true;
        }
        s.push(DectEvent::Device(ppn));
        ppn
    }

    /// A handset leaves the DECT system: its device is deleted (its user stays).
    pub fn remove_device(&self, ppn: u32) {
        let mut s = lock(&self.inner);
        s.devices.remove(&ppn);
        s.push(DectEvent::Device(ppn));
    }

    /// The user number a device is attached to, and whether it is temporary.
    pub fn device(&self, ppn: u32) -> Option<(Option<String>, bool)> {
        let s = lock(&self.inner);
        s.view(ppn).map(|d| (d.user.map(|u| u.to_string()), d.temp))
    }

    /// Users that exist.
    pub fn users(&self) -> Vec<String> {
        lock(&self.inner)
            .users
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// The subscription mode last set.
    pub fn mode(&self) -> String {
        lock(&self.inner).mode.clone()
    }

    /// The next `n` calls fail as if the peer were unreachable.
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).faults.outage = n;
    }
}

impl Handsets for MemoryHandsets {
    fn next_event(&self) -> BoxFuture<'_, DectEvent> {
        Box::pin(futures_util::future::poll_fn(move |cx| {
            let mut s = lock(&self.inner);
            match s.events.pop_front() {
                Some(e) => Poll::Ready(e),
                None => {
                    s.wakers.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        }))
    }

    fn devices(&self) -> BoxFuture<'_, PortResult<Vec<Device>>> {
        let mut s = lock(&self.inner);
        let r = s
            .faults
            .check("devices")
            .map(|()| s.devices.keys().filter_map(|p| s.view(*p)).collect());
        ready(r)
    }

    fn lookup(&self, which: Lookup) -> BoxFuture<'_, PortResult<Option<Device>>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("lookup").map(|()| match which {
            Lookup::Ppn(p) => s.view(p),
            Lookup::User(n) => s
                .devices
                .iter()
                .find(|(_, d)| d.user.as_ref() == Some(&n))
                .and_then(|(p, _)| s.view(*p)),
        });
        ready(r)
    }

    fn give_temp(&self, ppn: u32, number: Number, _pw: Secret) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("give_temp").and_then(|()| {
            if s.users.contains_key(&number) {
                return Err(PortError::new(
                    PortErrorKind::Conflict,
                    format!("{number} is taken"),
                ));
            }
            s.users.insert(number.clone(), true);
            s.attach(ppn, &number);
            Ok(())
        });
        ready(r)
    }

    fn move_to(&self, ppn: u32, extension: Number) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("move_to").and_then(|()| {
            if s.users.get(&extension) != Some(&false) {
                return Err(PortError::new(
                    PortErrorKind::NotFound,
                    format!("no user {extension}"),
                ));
            }
            let current = s.devices.get(&ppn).and_then(|d| d.user.clone());
            if let Some(u) = current.filter(|u| s.users.get(u) == Some(&true)) {
                s.users.remove(&u);
            }
            s.attach(ppn, &extension);
            Ok(())
        });
        ready(r)
    }

    fn set_subscription_mode(&self, mode: String) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("set mode").map(|()| s.mode = mode);
        ready(r)
    }

    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<TempUser>>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("temp users").map(|()| {
            s.users
                .iter()
                .filter(|(_, temp)| **temp)
                .map(|(n, _)| {
                    let ppn = s
                        .devices
                        .iter()
                        .find(|(_, d)| d.user.as_ref() == Some(n))
                        .map(|(p, _)| *p);
                    (n.clone(), ppn)
                })
                .collect()
        });
        ready(r)
    }

    fn remove_temp(&self, number: Number) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("remove temp").map(|()| {
            if s.users.get(&number) == Some(&true) {
                s.users.remove(&number);
                for d in s.devices.values_mut() {
                    if d.user.as_ref() == Some(&number) {
                        d.user = None;
                    }
                }
            }
        });
        ready(r)
    }
}

// ---------------------------------------------------------------- binds

#[derive(Debug, Default)]
struct BindState {
    faults: Faults,
    next_id: i64,
    binds: BTreeMap<i64, PendingBind>,
    /// id → (assign, verdict)
    outbox: BTreeMap<i64, (Assign, Option<AssignResult>)>,
    /// `add_bind` never answers while set
    stall_binds: bool,
}

/// Promised binds and the `ASSIGN_HANDSET` outbox.
#[derive(Debug, Clone, Default)]
pub struct MemoryHandsetState {
    inner: Arc<Mutex<BindState>>,
}

impl MemoryHandsetState {
    /// Every `ASSIGN_HANDSET` queued, with GURU3's verdict once it came.
    pub fn outbox(&self) -> Vec<(Assign, Option<AssignResult>)> {
        lock(&self.inner).outbox.values().cloned().collect()
    }

    /// While set, recording a bind never answers (a database that hangs mid-call).
    pub fn stall_binds(&self, stall: bool) {
        lock(&self.inner).stall_binds = stall;
    }

    /// The next `n` calls fail as if the database were unreachable.
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).faults.outage = n;
    }
}

impl HandsetState for MemoryHandsetState {
    fn add_bind(
        &self,
        ppn: u32,
        temp: Number,
        extension: Number,
    ) -> BoxFuture<'_, PortResult<i64>> {
        let mut s = lock(&self.inner);
        if s.stall_binds {
            return Box::pin(futures_util::future::pending());
        }
        let r = s.faults.check("add bind").map(|()| {
            // one bind per handset, as the database keeps them: the latest target wins
            if let Some(b) = s.binds.values_mut().find(|b| b.ppn == ppn) {
                b.temp = temp.clone();
                b.extension = extension.clone();
                return b.id;
            }
            s.next_id += 1;
            let id = s.next_id;
            s.binds.insert(
                id,
                PendingBind {
                    id,
                    ppn,
                    temp,
                    extension,
                },
            );
            id
        });
        ready(r)
    }

    fn pending_binds(&self) -> BoxFuture<'_, PortResult<Vec<PendingBind>>> {
        ready(Ok(lock(&self.inner).binds.values().cloned().collect()))
    }

    fn drop_bind(&self, id: i64) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("drop bind").map(|()| {
            s.binds.remove(&id);
        });
        ready(r)
    }

    fn finish_bind(
        &self,
        id: i64,
        ipei: String,
        uak: Secret,
        extension: Number,
    ) -> BoxFuture<'_, PortResult<()>> {
        let mut s = lock(&self.inner);
        if s.binds.remove(&id).is_some() {
            s.next_id += 1;
            let oid = s.next_id;
            s.outbox.insert(
                oid,
                (
                    Assign {
                        id: oid,
                        ipei,
                        uak,
                        extension,
                    },
                    None,
                ),
            );
        }
        ready(Ok(()))
    }

    fn outbox_depth(&self) -> BoxFuture<'_, PortResult<u64>> {
        let mut s = lock(&self.inner);
        let r = s
            .faults
            .check("outbox depth")
            .map(|()| s.outbox.values().filter(|(_, r)| r.is_none()).count() as u64);
        ready(r)
    }

    fn pending_assigns(&self, limit: u32) -> BoxFuture<'_, PortResult<Vec<Assign>>> {
        let mut s = lock(&self.inner);
        let r = s.faults.check("pending assigns").map(|()| {
            s.outbox
                .values()
                .filter(|(_, r)| r.is_none())
                .take(limit as usize)
                .map(|(a, _)| a.clone())
                .collect()
        });
        ready(r)
    }

    fn finish_assign(&self, result: AssignResult) -> BoxFuture<'_, PortResult<()>> {
        if let Some(e) = lock(&self.inner).outbox.get_mut(&result.id) {
            e.1 = Some(result);
        }
        ready(Ok(()))
    }
}

// ---------------------------------------------------------------- GURU3

/// GURU3's side of the outbox: accepts every `ASSIGN_HANDSET` and keeps it.
#[derive(Debug, Clone, Default)]
pub struct MemoryAssigns {
    received: Arc<Mutex<Vec<Assign>>>,
    faults: Arc<Mutex<Faults>>,
}

impl MemoryAssigns {
    /// The next `n` submissions fail as if GURU3 were unreachable.
    pub fn fail_next(&self, n: u32) {
        lock(&self.faults).outage = n;
    }

    /// `ASSIGN_HANDSET`s received, in order.
    pub fn assigns(&self) -> Vec<Assign> {
        lock(&self.received).clone()
    }
}

impl AssignSink for MemoryAssigns {
    fn submit(&self, assigns: Vec<Assign>) -> BoxFuture<'_, PortResult<Vec<AssignResult>>> {
        if let Err(e) = lock(&self.faults).check("submit") {
            return ready(Err(e));
        }
        let results = assigns
            .iter()
            .map(|a| AssignResult {
                id: a.id,
                ok: true,
                text: String::new(),
            })
            .collect();
        lock(&self.received).extend(assigns);
        ready(Ok(results))
    }
}

//! Serialisation of OMM changes per number and per handset.
//!
//! The broker (DECT users, their handsets) and the unbound-handset workflow (temporary users,
//! token binds) change the same OMM over one link. Every change holds the keys of what it
//! touches for its whole read-decide-write sequence, so two changes of one number or one
//! handset never interleave, while changes of different keys still run concurrently (the
//! broker runs up to 32 chains at once). Waiters are served in arrival order.
//!
//! Lock order, which rules out deadlocks: numbers first (several at once in sorted order, in
//! one [`Keys::hold`]), then at most one handset, added later with [`Held::add`] once the change
//! has found out which handset it is. Nothing takes a number while holding a handset.
//!
//! A change that read a handset's state before it could hold the handset checks
//! [`Keys::handset_generation`] of that handset: it moves whenever a holder of the handset's
//! key lets go, while it still holds it (so the next holder can never see the old value), and
//! an unchanged generation proves that no serialised change of that handset ran in between and
//! the read is still current. Generations are kept per handset in a fixed number of stripes
//! (handsets sharing a stripe share a counter: at worst a read is repeated once), so 32
//! changes of different handsets at once do not invalidate each other's reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

/// What a change holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    /// An OMM user by number (`num`).
    Number(String),
    /// A handset by device id (`ppn`).
    Handset(u32),
}

/// The table of keys in use: an entry lives while someone holds or waits for it.
#[derive(Debug)]
pub(crate) struct Keys {
    table: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    handsets: [AtomicU64; STRIPES],
}

/// Generation stripes of the handsets.
const STRIPES: usize = 256;

impl Default for Keys {
    fn default() -> Self {
        Self {
            table: Mutex::default(),
            handsets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn stripe(ppn: u32) -> usize {
    ppn as usize % STRIPES
}

impl Keys {
    fn table(&self) -> MutexGuard<'_, HashMap<Key, Arc<tokio::sync::Mutex<()>>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for and holds `numbers` (any order given; taken sorted).
    pub(crate) async fn hold<'a>(&'a self, numbers: impl IntoIterator<Item = &'a str>) -> Held<'a> {
        let mut keys: Vec<Key> = numbers
            .into_iter()
            .map(|n| Key::Number(n.to_owned()))
            .collect();
        keys.sort();
        keys.dedup();
        let mut held = Held {
            keys: self,
            held: Vec::with_capacity(keys.len() + 1),
        };
        for k in keys {
            held.take(k).await;
        }
        held
    }

    /// Moves every time a holder of the key of `ppn` (or of a handset in its stripe) lets go.
    pub(crate) fn handset_generation(&self, ppn: u32) -> u64 {
        self.handsets[stripe(ppn)].load(Ordering::SeqCst)
    }

    /// Keys currently held or waited for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().len()
    }
}

/// Keys held by one change; released when dropped (also when the change is cancelled).
#[derive(Debug)]
pub(crate) struct Held<'a> {
    keys: &'a Keys,
    held: Vec<(Key, Option<OwnedMutexGuard<()>>)>,
}

impl Held<'_> {
    /// Also holds the handset `ppn` (after the numbers; at most one handset per change).
    pub(crate) async fn add(&mut self, ppn: u32) {
        self.take(Key::Handset(ppn)).await;
    }

    async fn take(&mut self, key: Key) {
        if self.held.iter().any(|(k, _)| *k == key) {
            return;
        }
        debug_assert!(
            self.held.iter().all(|(k, _)| *k < key),
            "OMM keys taken out of order: {key:?} after {:?}",
            self.held.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        let lock = Arc::clone(self.keys.table().entry(key.clone()).or_default());
        let guard = lock.lock_owned().await;
        self.held.push((key, Some(guard)));
    }
}

/// Test hook: runs right after a key is let go, to widen the moment in which the next holder
/// may already run.
#[cfg(test)]
static AFTER_RELEASE: Mutex<Option<fn()>> = Mutex::new(None);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut table = self.keys.table();
        for (key, guard) in self.held.drain(..).rev() {
            // the generation moves while the handset is still held: whoever gets it next
            // sees the new value, never the one its stale read was made under
            if let Key::Handset(ppn) = key {
                self.keys.handsets[stripe(ppn)].fetch_add(1, Ordering::SeqCst);
            }
            drop(guard);
            #[cfg(test)]
            if let Some(hook) = *AFTER_RELEASE.lock().unwrap_or_else(|e| e.into_inner()) {
                hook();
            }
            // nobody else holds or waits for it: forget the key (the table stays bounded)
            if table.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                table.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_serialises_and_the_table_empties() {
        let keys = Arc::new(Keys::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (keys, log) = (Arc::clone(&keys), Arc::clone(&log));
            tasks.push(tokio::spawn(async move {
                let mut held = keys.hold(["2001"]).await;
                held.add(7).await;
                log.lock().unwrap().push(format!("start {i}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
                log.lock().unwrap().push(format!("end {i}"));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        for pair in log.chunks(2) {
            assert_eq!(
                pair[0].replace("start", "end"),
                pair[1],
                "interleaved: {log:?}"
            );
        }
        assert_eq!(keys.len(), 0);
        assert_eq!(keys.handset_generation(7), 4);
        assert_eq!(
            keys.handset_generation(8),
            0,
            "another handset's reads stay good"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_holder_of_a_handset_never_sees_the_old_generation() {
        // the releasing thread pauses right after letting go: the waiter runs meanwhile
        #[allow(clippy::disallowed_methods)] // the point: the releasing thread stands still
        fn pause() {
            std::thread::sleep(Duration::from_millis(30));
        }
        *AFTER_RELEASE.lock().unwrap() = Some(pause);
        let keys = Arc::new(Keys::default());
        for _ in 0..5 {
            let mut a = keys.hold(["2001"]).await;
            a.add(7).await;
            // a change read the handset while `a` was changing it, then waits for it
            let read_under = keys.handset_generation(7);
            let k = Arc::clone(&keys);
            let waiter = tokio::spawn(async move {
                let mut b = k.hold(["2002"]).await;
                b.add(7).await;
                k.handset_generation(7)
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(a);
            let seen = waiter.await.unwrap();
            assert_ne!(seen, read_under, "a stale read would be trusted");
        }
        *AFTER_RELEASE.lock().unwrap() = None;
    }

    #[tokio::test]
    async fn different_keys_run_at_once_and_a_cancelled_waiter_frees_its_turn() {
        let keys = Keys::default();
        let a = keys.hold(["2001", "2002"]).await;
        // a different number is free while 2001 and 2002 are held
        let b = tokio::time::timeout(Duration::from_millis(100), keys.hold(["2003"])).await;
        assert!(b.is_ok());
        drop(b);
        // a waiter for 2002 gives up; the key is free again once `a` lets go
        let waiting = tokio::time::timeout(Duration::from_millis(20), keys.hold(["2002"])).await;
        assert!(waiting.is_err());
        drop(a);
        let again = tokio::time::timeout(Duration::from_millis(100), keys.hold(["2002"])).await;
        assert!(again.is_ok());
        drop(again);
        assert_eq!(keys.len(), 0);
    }
}

//! Dead-letter replay through the running broker. `POST /dead-letters/replay` on the admin
//! listener reads each dead letter from the journal (its redacted envelope and, apart, the
//! secrets the feed took out of it), puts the message back together, decodes it with the
//! feed's own decoder and hands the batch to [`ReplayFeed`]: the broker's feed, which gives
//! the broker a waiting replay batch before the next GURU3 page. So a replay is planned,
//! applied, retried, journalled and counted by the same engine as any message; its ack is
//! kept from GURU3, which has it already.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_core::model::Incoming;
use broker_core::ports::{BoxFuture, EventFeed, FeedHealth, PortResult, StateStore};
use tokio::sync::{mpsc, watch};

/// Most dead letters one request replays.
pub(crate) const MAX_PER_REQUEST: usize = 1000;
/// Longest a request waits for its messages' outcome.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// The GURU3 feed plus the batches an operator asked to replay.
pub(crate) struct ReplayFeed {
    inner: Arc<dyn EventFeed>,
    tx: mpsc::Sender<Vec<Incoming>>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<Incoming>>>,
    /// replayed ids the broker has not acked yet
    open: Mutex<HashSet<i64>>,
    /// bumped whenever replayed ids are acked
    acked: watch::Sender<u64>,
}

impl std::fmt::Debug for ReplayFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFeed")
            .field("open", &self.open_ids().len())
            .finish_non_exhaustive()
    }
}

impl ReplayFeed {
    pub(crate) fn new(inner: Arc<dyn EventFeed>) -> Self {
        let (tx, rx) = mpsc::channel(16);
        Self {
            inner,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            open: Mutex::default(),
            acked: watch::channel(0).0,
        }
    }

    fn open_ids(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `batch` for the broker and waits up to `wait` until it has acked every message
    /// of it. Returns the ids it has not acked yet (still retried by the broker).
    pub(crate) async fn replay(
        &self,
        batch: Vec<Incoming>,
        wait: Duration,
    ) -> Result<HashSet<i64>, String> {
        let ids: HashSet<i64> = batch.iter().map(|m| m.id).collect();
        let mut acked = self.acked.subscribe();
        self.open_ids().extend(ids.iter().copied());
        if self.tx.try_send(batch).is_err() {
            let mut open = self.open_ids();
            for id in &ids {
                open.remove(id);
            }
            return Err("too many replays waiting for the broker; try again".into());
        }
        let pending = |open: &HashSet<i64>| -> HashSet<i64> {
            ids.iter().filter(|id| open.contains(id)).copied().collect()
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = pending(&self.open_ids());
            if left.is_empty() {
                return Ok(left);
            }
            match tokio::time::timeout_at(deadline, acked.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(pending(&self.open_ids())),
            }
        }
    }
}

impl EventFeed for ReplayFeed {
    fn next_batch(&self) -> BoxFuture<'_, PortResult<Vec<Incoming>>> {
        Box::pin(async move {
            let mut rx = self.rx.lock().await;
            // a waiting replay first; GURU3's `next_batch` is cancel-safe
            tokio::select! {
                biased;
                Some(batch) = rx.recv() => Ok(batch),
                r = self.inner.next_batch() => r,
            }
        })
    }

    fn ack(&self, mut ids: Vec<i64>) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let replayed = {
                let mut open = self.open_ids();
                let before = ids.len();
                ids.retain(|id| !open.remove(id));
                before - ids.len()
            };
            if replayed > 0 {
                self.acked.send_modify(|n| *n += 1);
            }
            // GURU3 acked a dead letter when it was given up; an empty list still flushes
            self.inner.ack(ids).await
        })
    }

    fn health(&self) -> FeedHealth {
        self.inner.health()
    }
}

/// What became of one dead letter an operator asked to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) id: i64,
    pub(crate) number: Option<String>,
    /// `done`, `dead` (given up again), `pending` (still retried by the broker), `skipped`
    /// (a later message for its number was applied), `unknown` (no such dead letter) or
    /// `unreplayable` (its stored message cannot be put back together).
    pub(crate) outcome: &'static str,
    pub(crate) reason: Option<String>,
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Which {
    Ids(Vec<i64>),
    All,
}

/// Replays dead letters through `feed` and reports each one's outcome, in id order.
pub(crate) async fn run(
    feed: &ReplayFeed,
    state: &dyn StateStore,
    which: Which,
    wait: Duration,
) -> Result<Vec<Outcome>, String> {
    let err = |e: broker_core::ports::PortError| format!("state store: {}", e.report());
    let mut ids = match which {
        Which::Ids(ids) => ids,
        Which::All => state
            .dead_letters(MAX_PER_REQUEST as u32)
            .await
            .map_err(err)?
            .iter()
            .map(|j| j.id)
            .collect(),
    };
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_PER_REQUEST {
        return Err(format!(
            "{} dead letters asked for; at most {MAX_PER_REQUEST} per replay",
            ids.len()
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    let mut batch = Vec::new();
    for id in ids {
        let outcome = |outcome, number: Option<String>, reason: Option<String>| Outcome {
            id,
            number,
            outcome,
            reason,
        };
        let Some((entry, superseded)) = state.dead_letter(id).await.map_err(err)? else {
            out.push(outcome(
                "unknown",
                None,
                Some("no dead letter with this id".into()),
            ));
            continue;
        };
        if superseded {
            out.push(outcome(
                "skipped",
                entry.number,
                Some(
                    "a later message for this number was applied; replaying this one would undo it"
                        .into(),
                ),
            ));
            continue;
        }
        let msg = crate::adapters::restore(&entry.payload, entry.secrets.as_ref()).and_then(|m| {
            let mut msgs = crate::adapters::decode_messages(m.expose().as_bytes())?;
            match (msgs.pop(), msgs.is_empty()) {
                (Some(msg), true) if msg.id == id => Ok(msg),
                _ => Err("its stored envelope is not this one message".into()),
            }
        });
        match msg {
            Ok(msg) => {
                out.push(outcome("pending", entry.number, None));
                batch.push(msg);
            }
            Err(e) => out.push(outcome("unreplayable", entry.number, Some(e))),
        }
    }
    if batch.is_empty() {
        return Ok(out);
    }
    let pending = feed.replay(batch, wait).await?;
    for o in out.iter_mut().filter(|o| o.outcome == "pending") {
        if pending.contains(&o.id) {
            o.reason = Some("still retried by hexidian (see its log and /readyz)".into());
            continue;
        }
        match state.dead_letter(o.id).await.map_err(err)? {
            Some((entry, _)) => {
                o.outcome = "dead";
                o.reason = entry.reason;
            }
            None => o.outcome = "done",
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use broker_core::fakes::MemoryFeed;
    use broker_core::model::{Command, Incoming};

    use super::*;

    fn msg(id: i64) -> Incoming {
        Incoming {
            id,
            kind: "DELETE_EXTENSION".into(),
            raw: String::new(),
            secrets: None,
            command: Ok(Command::Delete("2001".parse().unwrap())),
        }
    }

    #[tokio::test]
    async fn a_replay_goes_ahead_of_a_waiting_fetch_and_its_ack_stays_home() {
        let guru3 = MemoryFeed::default();
        let feed = Arc::new(ReplayFeed::new(Arc::new(guru3.clone())));
        // the broker waits for GURU3, which has nothing
        let broker = {
            let feed = Arc::clone(&feed);
            tokio::spawn(async move {
                let batch = feed.next_batch().await.unwrap();
                let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
                feed.ack(ids.clone()).await.unwrap();
                ids
            })
        };
        let pending = feed
            .replay(vec![msg(7), msg(9)], Duration::from_secs(30))
            .await
            .unwrap();
        assert!(pending.is_empty());
        assert_eq!(broker.await.unwrap(), [7, 9]);
        assert!(guru3.acks().is_empty(), "GURU3 acked these already");
        // GURU3's own messages still flow, and their acks reach it
        guru3.push(msg(10));
        let batch = feed.next_batch().await.unwrap();
        assert_eq!(batch.len(), 1);
        feed.ack(vec![10]).await.unwrap();
        assert_eq!(guru3.acks(), [10]);
    }

    #[tokio::test]
    async fn a_replay_the_broker_does_not_finish_in_time_is_reported_pending() {
        let feed = ReplayFeed::new(Arc::new(MemoryFeed::default()));
        // nobody takes the batch: after the wait both are still open
        let pending = feed
            .replay(vec![msg(1), msg(2)], Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(pending, HashSet::from([1, 2]));
        // a full queue of waiting replays is refused, not blocked on
        for i in 0..15 {
            let _ = feed.replay(vec![msg(100 + i)], Duration::ZERO).await;
        }
        let e = feed
            .replay(vec![msg(200)], Duration::ZERO)
            .await
            .unwrap_err();
        assert!(e.contains("too many replays"), "{e}");
        assert!(!feed.open_ids().contains(&200));
    }
}

//! The delivery loop: GURU3 order, batched PBX writes, concurrent OMM operations, acks only
//! after every target applied a message, bounded retries, dead letters, durable state.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::model::{Command, Incoming, Number};
use crate::plan::{self, DectOp, Mirror, Plan};
use crate::ports::{
    Clock, DectSystem, DectUser, EventFeed, JournalEntry, JournalStatus, PortError, PortErrorKind,
    PortResult, SipOutcome, SipProvisioning, StateOp, StateStore,
};

mod segment;
mod sweep;
mod verdict;

use segment::{Either, select};
use verdict::{Attempts, Breaker, Final, Streak, Verdict, Waiting, log_verdict};

/// The ports the broker runs on.
#[derive(Clone)]
pub struct BrokerPorts {
    /// GURU3.
    pub feed: Arc<dyn EventFeed>,
    /// The OMM.
    pub dect: Arc<dyn DectSystem>,
    /// Asterisk.
    pub sip: Arc<dyn SipProvisioning>,
    /// Our own durable state.
    pub state: Arc<dyn StateStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for BrokerPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerPorts")
    }
}

/// Tuning of the delivery loop.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Refusals of one message ("not now" answers, counted) before it is dead-lettered
    /// (default 5). A peer that cannot be asked at all spends no attempt.
    pub max_attempts: u32,
    /// …or once it has been refused this long, time spent waiting for an unreachable peer
    /// not counted (default 240 s, below GURU3's 300 s banner).
    pub retry_budget: Duration,
    /// First retry delay (default 500 ms), doubling with jitter.
    pub retry_base: Duration,
    /// Largest retry delay (default 30 s).
    pub retry_max: Duration,
    /// Largest delay between probes while a peer is unreachable (default 1 s): how long the
    /// queue may stay still after the peer is back. A probe of a peer whose link is down
    /// fails at once without touching the network, so probing often costs nothing.
    pub stall_probe_max: Duration,
    /// OMM operations in flight at once (default 32).
    pub dect_concurrency: usize,
    /// Largest share of owned OMM users a resync may delete (default 0.5).
    pub max_sweep_fraction: f64,
    /// Dead letters in a row with the same reason (a peer's refusal of the data or an
    /// exhausted "not now", with the same code) that stop the queue as a refusal of
    /// hexidian's set-up would (default 5; 0 or 1: never). Until the streak ends, its dead
    /// letters are neither journaled nor acked, so that the ones that tripped the breaker are
    /// retried, not lost.
    pub breaker_after: u32,
    /// A streak ends, and its dead letters become final, when a message is applied, a dead
    /// letter with another reason comes, or none follows within this time (default 10 s).
    pub breaker_window: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_budget: Duration::from_secs(240),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            stall_probe_max: Duration::from_secs(1),
            dect_concurrency: 32,
            max_sweep_fraction: 0.5,
            breaker_after: 5,
            breaker_window: Duration::from_secs(10),
        }
    }
}

impl BrokerConfig {
    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets [`retry_budget`](Self::retry_budget).
    pub fn retry_budget(mut self, d: Duration) -> Self {
        self.retry_budget = d;
        self
    }

    /// Sets the retry back-off.
    pub fn retry(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max.max(base);
        self
    }

    /// Sets [`stall_probe_max`](Self::stall_probe_max).
    pub fn stall_probe_max(mut self, d: Duration) -> Self {
        self.stall_probe_max = d;
        self
    }

    /// Sets [`dect_concurrency`](Self::dect_concurrency).
    pub fn dect_concurrency(mut self, n: usize) -> Self {
        self.dect_concurrency = n.max(1);
        self
    }

    /// Sets [`breaker_after`](Self::breaker_after) and
    /// [`breaker_window`](Self::breaker_window).
    pub fn breaker(mut self, after: u32, window: Duration) -> Self {
        self.breaker_after = after;
        self.breaker_window = window;
        self
    }

    /// Sets [`max_sweep_fraction`](Self::max_sweep_fraction).
    pub fn max_sweep_fraction(mut self, f: f64) -> Self {
        self.max_sweep_fraction = f;
        self
    }
}

/// The queue is standing still because a peer cannot be asked, or refuses hexidian's set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// Why (the latest failure).
    pub reason: String,
    /// The peer answered, but refuses hexidian itself (a missing privilege or table, an OMM
    /// account without rights): an operator has to fix the set-up.
    pub refused: bool,
    /// The message at the head of the queue.
    pub message: i64,
    /// Since when (the broker's clock).
    pub since: Instant,
}

/// Live counters, shared with the health endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStatus {
    /// Messages applied since start (counted once their journal entry is committed).
    pub done: u64,
    /// Ignored since start.
    pub ignored: u64,
    /// Dead-lettered since start.
    pub dead: u64,
    /// The same by GURU3 message type (at most [`MAX_TYPES`] types; more go to `other`).
    pub by_type: BTreeMap<String, Outcomes>,
    /// Latencies of the broker's steps.
    pub timings: Timings,
    /// Messages waiting for a retry.
    pub backlog: usize,
    /// Dead letters of a streak not yet final (see [`BrokerConfig::breaker_after`]).
    pub unconfirmed_dead: usize,
    /// Dead letters in the journal: counted once at start, then as they are committed.
    pub journal_dead: u64,
    /// The last counted failure, if the broker is currently retrying a refused message.
    pub retrying: Option<String>,
    /// Set while a peer cannot be asked and the queue waits for it.
    pub stalled: Option<Stall>,
    /// Resync epoch in progress.
    pub sync_epoch: Option<i64>,
    /// Batches processed.
    pub batches: u64,
    /// Messages whose outcome is committed since start (the `seq` of the newest in `recent`).
    pub finished: u64,
    /// The latest finished messages, oldest first (at most [`RECENT`]).
    pub recent: std::collections::VecDeque<Recent>,
}

/// How many finished messages [`BrokerStatus::recent`] keeps: more than the broker
/// finishes between two looks of a reader that looks ten times a second.
pub const RECENT: usize = 1024;

/// A finished message, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recent {
    /// Position among the messages finished since start (1, 2, …).
    pub seq: u64,
    /// GURU3 message id.
    pub id: i64,
    /// GURU3 type (`other` for a name that is not one).
    pub kind: String,
    /// The number it was about, where known.
    pub number: Option<String>,
    /// What became of it.
    pub outcome: Outcome,
    /// Why it was ignored or given up.
    pub reason: Option<String>,
}

/// The outcome of a finished message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Applied.
    Done,
    /// Recorded, nothing to do.
    Ignored,
    /// Given up (a dead letter).
    Dead,
}

impl Outcome {
    /// `done`, `ignored` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Ignored => "ignored",
            Self::Dead => "dead",
        }
    }
}

/// Finished messages of one type, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcomes {
    /// Applied.
    pub done: u64,
    /// Recorded, nothing to do.
    pub ignored: u64,
    /// Dead-lettered.
    pub dead: u64,
}

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`]: fixed size, whatever it records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations in microseconds.
    pub sum_us: u64,
    /// Observations.
    pub count: u64,
}

impl Outcomes {
    fn add(&mut self, v: &Verdict) {
        match v {
            Verdict::Done => self.done += 1,
            Verdict::Ignored(_) => self.ignored += 1,
            _ => self.dead += 1,
        }
    }
}

impl Latency {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_us = self
            .sum_us
            .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.count += 1;
    }
}

/// How long the broker's steps take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// A whole round: PBX, OMM and state commit of a batch, acks excluded.
    pub batch: Latency,
    /// One PBX transaction (a run of messages' changes).
    pub pbx: Latency,
    /// The OMM operations of a run (all chains, concurrently).
    pub omm: Latency,
    /// One state commit (journal and mirror).
    pub state: Latency,
    /// Acknowledging a round's messages to GURU3.
    pub ack: Latency,
}

/// Distinct message types counted in [`BrokerStatus::by_type`]; GURU3 may send types this
/// build does not know, and their names must not grow the status without bound.
pub const MAX_TYPES: usize = 32;

/// Fewest messages a round tries after rounds that had to wait.
const MIN_WINDOW: usize = 16;

/// The broker.
pub struct Broker {
    ports: BrokerPorts,
    config: BrokerConfig,
    mirror: Mirror,
    sync: Option<i64>,
    attempts: HashMap<i64, Attempts>,
    tail: Vec<Incoming>,
    /// why the head of the tail waits (set by `settle`, read at the end of `process`)
    waiting: Option<Waiting>,
    stall: Option<Stall>,
    stall_probes: u32,
    /// messages tried per round (see `process`)
    window: usize,
    /// A message that timed out alone while the PBX answered a cheap question: its own
    /// failure, so its further time-outs count as attempts.
    suspect: Option<i64>,
    /// dead letters in a row with the same reason, held back (see `breaker_after`)
    streak: Option<Streak>,
    /// the reason code that tripped the breaker: the queue stands until a retry succeeds
    tripped: Option<String>,
    status: Arc<Mutex<BrokerStatus>>,
    directory: crate::model::SharedDirectory,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("mirror", &self.mirror.len())
            .field("sync", &self.sync)
            .field("tail", &self.tail.len())
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

/// What one call of [`Broker::process`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Ids to acknowledge (applied, ignored or dead-lettered), in order.
    pub acked: Vec<i64>,
    /// Messages left for a retry.
    pub retry: usize,
}

impl Broker {
    /// Loads the mirror and the resync state.
    pub async fn start(ports: BrokerPorts, config: BrokerConfig) -> PortResult<Self> {
        let mirror: Mirror = ports.state.load().await?.into_iter().collect();
        let (epoch, in_progress) = ports.sip.sync_state().await?;
        let sync = in_progress.then_some(epoch);
        // the one count over the journal; from here on the status counts along
        let journal_dead = ports.state.stats().await?.dead;
        tracing::info!(
            extensions = mirror.len(),
            sync_epoch = ?sync,
            "broker state loaded"
        );
        let status = Arc::new(Mutex::new(BrokerStatus {
            sync_epoch: sync,
            journal_dead,
            ..BrokerStatus::default()
        }));
        let directory = crate::model::SharedDirectory::default();
        {
            let mut d = directory.write().unwrap_or_else(|e| e.into_inner());
            for (n, e) in &mirror {
                d.set(n, Some(e));
            }
        }
        Ok(Self {
            ports,
            config,
            mirror,
            sync,
            attempts: HashMap::new(),
            tail: Vec::new(),
            waiting: None,
            stall: None,
            stall_probes: 0,
            window: usize::MAX,
            suspect: None,
            streak: None,
            tripped: None,
            status,
            directory,
        })
    }

    /// GURU3's DECT tokens and known handsets, kept current as messages are applied.
    pub fn directory(&self) -> crate::model::SharedDirectory {
        Arc::clone(&self.directory)
    }

    /// Publishes the mirror's state of these numbers to the directory.
    fn publish<'a>(&self, numbers: impl IntoIterator<Item = &'a Number>) {
        let mut d = self.directory.write().unwrap_or_else(|e| e.into_inner());
        for n in numbers {
            d.set(n, self.mirror.get(n));
        }
    }

    /// A handle on the live counters.
    pub fn status(&self) -> Arc<Mutex<BrokerStatus>> {
        Arc::clone(&self.status)
    }

    /// The mirror entry of a number (for inspection).
    pub fn mirror(&self, number: &Number) -> Option<&crate::model::MirrorEntry> {
        self.mirror.get(number)
    }

    fn with_status(&self, f: impl FnOnce(&mut BrokerStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }

    /// Runs until `shutdown` completes: fetch, process, ack; retries keep GURU3 order. On
    /// shutdown the batch in progress is finished and its acks are sent.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> PortResult<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut fetch_failures = 0u32;
        loop {
            // held dead letters whose streak ended by itself become final
            let expired = self.expire_streak(false).await;
            if !expired.is_empty() {
                self.send_acks(expired).await;
            }
            let t_fetch = self.ports.clock.now();
            let batch = if self.tail.is_empty() {
                let next = self.ports.feed.next_batch();
                // wake up when a held streak is due, without waiting for the next message
                let due = self.streak_deadline().map(|t| {
                    let now = self.ports.clock.now();
                    self.ports.clock.sleep(t.saturating_duration_since(now))
                });
                let next = match due {
                    Some(due) => futures_util::future::Either::Left(async move {
                        match select(next, due).await {
                            Either::Left(r) => Some(r),
                            Either::Right(()) => None,
                        }
                    }),
                    None => futures_util::future::Either::Right(async move { Some(next.await) }),
                };
                match select(std::pin::pin!(next), shutdown.as_mut()).await {
                    Either::Right(()) => break,
                    Either::Left(None) => continue,
                    Either::Left(Some(Ok(b))) => {
                        fetch_failures = 0;
                        b
                    }
                    Either::Left(Some(Err(e))) => {
                        fetch_failures = fetch_failures.saturating_add(1);
                        if fetch_failures == 1 {
                            tracing::warn!(error = %e.report(), "fetching from guru3 failed; retrying");
                        }
                        let d = self.backoff(fetch_failures, self.config.stall_probe_max);
                        if let Either::Right(()) =
                            select(self.ports.clock.sleep(d), shutdown.as_mut()).await
                        {
                            break;
                        }
                        continue;
                    }
                }
            } else {
                // messages held back by the window go on at once; a round that waited backs off
                let d = if self.waiting.is_some() {
                    self.retry_delay()
                } else {
                    Duration::ZERO
                };
                if let Either::Right(()) =
                    select(self.ports.clock.sleep(d), shutdown.as_mut()).await
                {
                    break;
                }
                std::mem::take(&mut self.tail)
            };
            tracing::debug!(
                wait_ms = self.ports.clock.now().duration_since(t_fetch).as_millis() as u64,
                "batch fetched"
            );
            crate::crash::point(crate::crash::BATCH_FETCHED);
            let t_batch = self.ports.clock.now();
            let n = batch.len();
            let report = self.process(batch).await;
            let t_ack = self.ports.clock.now();
            self.with_status(|s| s.timings.batch.observe(t_ack.duration_since(t_batch)));
            if !report.acked.is_empty() {
                self.send_acks(report.acked).await;
            }
            tracing::debug!(
                messages = n,
                process_ms = t_ack.duration_since(t_batch).as_millis() as u64,
                ack_ms = self.ports.clock.now().duration_since(t_ack).as_millis() as u64,
                "batch done"
            );
        }
        // flush whatever the adapter still buffers
        if let Err(e) = self.ports.feed.ack(Vec::new()).await {
            tracing::warn!(error = %e.report(), "final ack flush failed");
        }
        Ok(())
    }

    /// Acknowledges messages whose outcome is committed.
    async fn send_acks(&self, ids: Vec<i64>) {
        if !ids.is_empty() {
            crate::crash::point(crate::crash::ACKS_SENDING);
        }
        let t_ack = self.ports.clock.now();
        match self.ports.feed.ack(ids).await {
            Ok(()) => crate::crash::point(crate::crash::ACKS_SENT),
            // the adapter keeps them and re-sends; replays are harmless
            Err(e) => tracing::warn!(error = %e.report(), "acking failed; will retry"),
        }
        let took = self.ports.clock.now().duration_since(t_ack);
        self.with_status(|s| s.timings.ack.observe(took));
    }

    /// How long to wait before the tail is tried again.
    fn retry_delay(&self) -> Duration {
        if self.stall.is_some() {
            return self.backoff(self.stall_probes.max(1), self.config.stall_probe_max);
        }
        let n = self
            .tail
            .first()
            .and_then(|m| self.attempts.get(&m.id))
            .map_or(1, |a| a.count);
        self.backoff(n, self.config.retry_max)
    }

    /// Exponential back-off from `retry_base`, capped, with jitter in the upper half.
    fn backoff(&self, attempt: u32, max: Duration) -> Duration {
        exp_backoff::delay(self.config.retry_base, max, attempt.saturating_sub(1))
    }

    /// Messages kept for a retry after a transient failure.
    pub fn pending_retry(&self) -> usize {
        self.tail.len()
    }

    /// Processes the messages kept for a retry (what [`run`](Self::run) does after its
    /// back-off).
    pub async fn retry(&mut self) -> BatchReport {
        let tail = std::mem::take(&mut self.tail);
        self.process(tail).await
    }

    /// Processes one batch in order. Resync markers are handled on their own, after
    /// everything before them. Stops at the first message that has to wait (a peer could not
    /// be asked, or answered "not now"); it and everything after it are kept for a retry
    /// (see [`BatchReport::retry`]).
    pub async fn process(&mut self, batch: Vec<Incoming>) -> BatchReport {
        let mut report = BatchReport::default();
        self.waiting = None;
        // GURU3 hands held dead letters out again (they are not acked): they are in hand
        let mut batch = batch;
        if let Some(s) = &self.streak {
            batch.retain(|m| !s.held.iter().any(|h| h.msg.id == m.id));
        }
        // after a round that had to wait, fewer messages per round (halving, at least
        // `MIN_WINDOW`), growing again with every clean round: a replayed run then fits
        // between the faults of a flapping peer
        let held = if batch.len() > self.window {
            batch.split_off(self.window)
        } else {
            Vec::new()
        };
        let tried = batch.len();
        let mut rest = batch.into_iter().peekable();
        let mut segment = Vec::new();
        loop {
            let next = rest.peek();
            let marker = next.is_some_and(|m| {
                matches!(m.command, Ok(Command::SyncStarted | Command::SyncEnded))
            });
            if (next.is_none() || marker) && !segment.is_empty() {
                let seg = std::mem::take(&mut segment);
                let (acked, left) = self.apply_segment(seg).await;
                report.acked.extend(acked);
                if !left.is_empty() {
                    self.tail = left;
                    self.tail.extend(rest);
                    break;
                }
            }
            let Some(msg) = rest.next() else { break };
            if marker {
                // a resync marker does not wait for a streak before it to end
                report.acked.extend(self.expire_streak(true).await);
                let verdict = self.sync_marker(&msg).await;
                let attempts = self.attempts.clone();
                if let Some((v, n)) = self.settle(&msg, verdict) {
                    let journal = self.journal(&msg, &v, n);
                    match self.ports.state.commit(vec![journal]).await {
                        Ok(()) => {
                            report.acked.push(msg.id);
                            self.finished(vec![Final {
                                id: msg.id,
                                kind: msg.kind.clone(),
                                number: None,
                                verdict: v,
                            }]);
                        }
                        Err(e) => {
                            // the marker's effect is idempotent; without its journal entry
                            // it is not acked but run again
                            self.attempts = attempts;
                            self.commit_failed(&msg, &e);
                            self.tail = std::iter::once(msg).chain(rest).collect();
                            break;
                        }
                    }
                } else {
                    self.tail = std::iter::once(msg).chain(rest).collect();
                    break;
                }
            } else {
                segment.push(msg);
            }
        }
        // a time-out may be one heavy message: try the head alone; if it times out alone
        // while the PBX answers a cheap question, its time-outs count as attempts from now on
        let isolate = self
            .waiting
            .as_ref()
            .is_some_and(|w| w.slow || Some(w.message) == self.suspect)
            // an open breaker probes with the head alone
            || self.tripped.is_some();
        if let Some(w) = self.waiting.as_ref().filter(|w| w.slow && tried == 1) {
            let head = w.message;
            // both peers must answer a cheap question: which one timed out is not known
            if self.suspect != Some(head)
                && self.ports.sip.sync_state().await.is_ok()
                && self.ports.dect.ping().await.is_ok()
            {
                tracing::warn!(
                    message = head,
                    reason = %w.reason,
                    "a message times out alone while the PBX and the OMM answer: its own \
                     failure, its attempts count from now on"
                );
                self.suspect = Some(head);
            }
        }
        self.window = if isolate {
            1
        } else if self.waiting.is_some() {
            (tried / 2).max(MIN_WINDOW)
        } else {
            self.window.saturating_mul(2)
        };
        self.tail.extend(held);
        report.retry = self.tail.len();
        self.update_stall(!report.acked.is_empty());
        let backlog = self.tail.len();
        let retrying = self.waiting.as_ref().filter(|w| !w.stalled).map(|w| {
            match self.attempts.get(&w.message) {
                Some(a) => format!("message {} attempt {}: {}", w.message, a.count, w.reason),
                None => format!("message {}: {}", w.message, w.reason),
            }
        });
        let stalled = self.stall.clone();
        self.with_status(|s| {
            s.batches += 1;
            s.backlog = backlog;
            s.retrying = retrying;
            s.stalled = stalled;
            s.sync_epoch = self.sync;
        });
        report
    }

    /// Enters, updates or leaves the stall after a call of `process`; logs only the edges.
    /// A round that got messages through starts the probe back-off afresh: a flapping peer
    /// that lets work through is tried again soon.
    fn update_stall(&mut self, progressed: bool) {
        let now = self.ports.clock.now();
        match self.waiting.as_ref().filter(|w| w.stalled) {
            Some(w) if !self.tail.is_empty() => {
                self.stall_probes = if progressed {
                    1
                } else {
                    self.stall_probes.saturating_add(1)
                };
                match &mut self.stall {
                    Some(s) if s.refused == w.refused => {
                        s.reason.clone_from(&w.reason);
                        s.message = w.message;
                    }
                    other => {
                        if w.refused {
                            tracing::error!(
                                message = w.message,
                                backlog = self.tail.len(),
                                reason = %w.reason,
                                "a peer refuses hexidian's set-up: the queue waits in order, \
                                 acks nothing and retries until the set-up is fixed"
                            );
                        } else {
                            tracing::warn!(
                                message = w.message,
                                backlog = self.tail.len(),
                                reason = %w.reason,
                                "a peer cannot be asked: the queue waits in order and retries without limit"
                            );
                        }
                        let since = other.as_ref().map_or(now, |s| s.since);
                        *other = Some(Stall {
                            reason: w.reason.clone(),
                            refused: w.refused,
                            message: w.message,
                            since,
                        });
                    }
                }
            }
            _ => {
                self.stall_probes = 0;
                if let Some(s) = self.stall.take() {
                    tracing::info!(
                        waited_s = now.duration_since(s.since).as_secs_f64(),
                        "the peer answers again: the queue moves"
                    );
                }
            }
        }
    }

    /// Messages whose outcome is committed: logged, counted (in total and by type) and
    /// listed among the recent ones.
    fn finished(&self, finals: Vec<Final>) {
        for f in &finals {
            log_verdict(f.id, &f.kind, f.number.as_deref(), &f.verdict);
        }
        self.with_status(|s| {
            for f in finals {
                let v = &f.verdict;
                let mut one = Outcomes::default();
                one.add(v);
                s.done += one.done;
                s.ignored += one.ignored;
                s.dead += one.dead;
                s.journal_dead += one.dead;
                // GURU3's type names are upper-case words; anything else, and types past
                // the limit, count as `other`
                let kind = f.kind.as_str();
                let named = !kind.is_empty()
                    && kind.len() <= 40
                    && kind.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                let key =
                    if named && (s.by_type.contains_key(kind) || s.by_type.len() < MAX_TYPES - 1) {
                        kind
                    } else {
                        "other"
                    };
                s.by_type.entry(key.to_owned()).or_default().add(v);
                let (outcome, reason) = match v {
                    Verdict::Done => (Outcome::Done, None),
                    Verdict::Ignored(r) => (Outcome::Ignored, Some(r.clone())),
                    Verdict::Dead(r, _) => (Outcome::Dead, Some(r.clone())),
                    Verdict::Retry(e) | Verdict::Stalled(e) => (Outcome::Dead, Some(e.report())),
                };
                s.finished += 1;
                if s.recent.len() >= RECENT {
                    s.recent.pop_front();
                }
                s.recent.push_back(Recent {
                    seq: s.finished,
                    id: f.id,
                    kind: if named {
                        kind.to_owned()
                    } else {
                        "other".to_owned()
                    },
                    number: f.number,
                    outcome,
                    reason,
                });
            }
        });
    }

    /// A state commit failed: nothing of the run is acked, it is replayed later.
    fn commit_failed(&mut self, head: &Incoming, e: &PortError) {
        let reason = format!("state commit failed: {}", e.report());
        if !e.is_transient() {
            // not an outage: say so every time, an operator has to look
            tracing::error!(error = %e.report(), "state commit refused; the run will be replayed");
        }
        self.waiting = Some(Waiting {
            message: head.id,
            stalled: true,
            refused: e.kind() == PortErrorKind::Refused,
            slow: false,
            reason,
        });
    }
}

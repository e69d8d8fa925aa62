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
    /// Largest delay between probes while a peer is unreachable (default 5 s): how long the
    /// queue may stay still after the peer is back.
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
            stall_probe_max: Duration::from_secs(5),
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

/// Outcome of one message in a batch.
#[derive(Debug)]
enum Verdict {
    Done,
    Ignored(String),
    /// Given up, with the reason and, for a peer's answer that could be the same for every
    /// message, its reason code (see [`BrokerConfig::breaker_after`]).
    Dead(String, Option<String>),
    /// The peer answered "not now": retried, and the attempt counts.
    Retry(PortError),
    /// The peer could not be asked: the queue waits, nothing is spent.
    Stalled(PortError),
}

impl Verdict {
    /// The verdict a failure earns.
    fn of(e: PortError) -> Self {
        if e.stalls_queue() {
            Self::Stalled(e)
        } else if e.is_transient() {
            Self::Retry(e)
        } else {
            Self::dead(&e, e.report())
        }
    }

    /// A final failure after the peer's answer `e`. An answer about the object (missing,
    /// taken) is that message's own; a refusal of the data, a broken invariant, an
    /// exhausted "not now" or time-out may be the same for every message, and feeds the
    /// breaker.
    fn dead(e: &PortError, reason: String) -> Self {
        let systemic = matches!(
            e.kind(),
            PortErrorKind::Rejected
                | PortErrorKind::Transient
                | PortErrorKind::Fatal
                | PortErrorKind::Slow
        );
        Self::Dead(reason, systemic.then(|| e.reason_code()))
    }

    fn waits(&self) -> bool {
        matches!(self, Self::Retry(_) | Self::Stalled(_))
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Done | Self::Ignored(_) => 0,
            Self::Retry(_) => 1,
            Self::Stalled(_) => 2,
            Self::Dead(..) => 3,
        }
    }

    /// Folds another failure of the same message in: a permanent failure overrides a
    /// waiting one, an unreachable peer overrides a "not now", otherwise the first reason
    /// is kept.
    fn merge(slot: &mut Option<Self>, v: Self) {
        if slot.as_ref().is_none_or(|cur| v.rank() > cur.rank()) {
            *slot = Some(v);
        }
    }
}

/// Counted failures of one message.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    count: u32,
    /// time between counted failures (waits for an unreachable peer excluded)
    spent: Duration,
    last: Instant,
}

/// Why the head of the queue waits, as [`Broker::settle`] saw it.
#[derive(Debug)]
struct Waiting {
    message: i64,
    stalled: bool,
    /// the stall is a refusal of hexidian's set-up, not an outage
    refused: bool,
    /// the peer did not finish in time (`PortErrorKind::Slow`): try the message alone
    slow: bool,
    reason: String,
}

/// Dead letters in a row with the same reason code, not final yet: neither journaled nor
/// acked (GURU3 keeps them; a restart gets them again).
#[derive(Debug, Clone)]
struct Streak {
    code: String,
    held: Vec<Held>,
    /// when the latest joined
    last: Instant,
}

/// One dead letter of a [`Streak`].
#[derive(Debug, Clone)]
struct Held {
    msg: Incoming,
    reason: String,
    attempts: u32,
    number: Option<String>,
}

/// A message settled in a round: what is journaled, counted and logged once committed.
struct Final {
    id: i64,
    kind: String,
    number: Option<String>,
    verdict: Verdict,
}

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

/// A run of ordinary messages (no resync marker) as it moves through the phases
/// plan → PBX → DECT → settle → commit.
struct Segment {
    msgs: Vec<Incoming>,
    /// per message: the plan, or why the message could not be decoded
    plans: Vec<Result<Plan, String>>,
    /// per message: the verdict so far (`None`: nothing failed yet)
    verdicts: Vec<Option<Verdict>>,
    /// per message: index of its first change in the PBX batch
    offsets: Vec<usize>,
    /// per PBX change: its outcome
    sip: Vec<PortResult<SipOutcome>>,
}

impl Segment {
    /// The password a PBX change produced, and whether it created the user.
    fn sip_password(&self, i: usize, from: usize) -> (Option<crate::model::Secret>, bool) {
        match self.sip.get(self.offsets[i] + from) {
            Some(Ok(SipOutcome::User(pw))) => (Some(pw.clone()), false),
            Some(Ok(SipOutcome::NewUser(pw))) => (Some(pw.clone()), true),
            _ => (None, false),
        }
    }
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

    async fn sync_marker(&mut self, msg: &Incoming) -> Verdict {
        match msg.command {
            Ok(Command::SyncStarted) => match self.ports.sip.begin_sync().await {
                Ok(epoch) => {
                    tracing::info!(epoch, "resync started");
                    self.sync = Some(epoch);
                    Verdict::Done
                }
                Err(e) => Verdict::of(e),
            },
            Ok(Command::SyncEnded) => {
                let Some(epoch) = self.sync else {
                    return Verdict::Ignored("SYNC_ENDED without a resync in progress".into());
                };
                match self.sweep(epoch).await {
                    Ok(()) => {
                        self.sync = None;
                        Verdict::Done
                    }
                    Err(e) => Verdict::of(e),
                }
            }
            _ => Verdict::Dead("not a sync marker".into(), None),
        }
    }

    /// SYNC_ENDED: sweep the OMM, the PBX and the mirror of what the window did not mention.
    async fn sweep(&mut self, epoch: i64) -> PortResult<()> {
        let t0 = self.ports.clock.now();
        let owned = self.ports.dect.list_owned().await?;
        let t_list = self.ports.clock.now();
        let total = owned.len();
        let stale_dect: Vec<Number> = owned
            .into_iter()
            .filter(|n| {
                !self.mirror.get(n).is_some_and(|e| {
                    e.seen_epoch == epoch
                        && matches!(
                            e.extension.as_ref().map(|x| &x.kind),
                            Some(crate::model::Kind::Dect { .. })
                        )
                })
            })
            .collect();
        // the guard compares with what would be deleted from: the owned OMM users
        if stale_dect.len() > 1
            && stale_dect.len() as f64 > self.config.max_sweep_fraction * total.max(1) as f64
        {
            return Err(PortError::rejected(format!(
                "resync would delete {} of {total} owned OMM users: refused",
                stale_dect.len()
            )));
        }
        // Every step is idempotent and the resync stays open until the last one: a failure
        // or a crash anywhere in here leaves it open, and the SYNC_ENDED that comes again
        // (retried, or redelivered after a restart) sweeps again from where it stopped.
        let summary = self.ports.sip.sweep_sync(epoch).await?;
        crate::crash::point(crate::crash::SWEEP_PBX);
        for n in &stale_dect {
            self.ports.dect.delete_user(n.clone()).await?;
            crate::crash::point(crate::crash::SWEEP_OMM_DELETE);
        }
        // the mirror changes only once its new state is committed
        let mut ops = Vec::new();
        for (n, e) in &self.mirror {
            let drop_ext = e.extension.is_some() && e.seen_epoch < epoch;
            let drop_members = !e.members.is_empty() && e.members_epoch < epoch;
            if !drop_ext && !drop_members {
                continue;
            }
            let mut e = e.clone();
            if drop_ext {
                e.extension = None;
            }
            if drop_members {
                e.members.clear();
            }
            ops.push(if e.extension.is_none() && e.members.is_empty() {
                StateOp::Remove(n.clone())
            } else {
                StateOp::Put(n.clone(), e)
            });
        }
        self.ports.state.commit(ops.clone()).await?;
        crate::crash::point(crate::crash::SWEEP_STATE);
        let mut touched = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                StateOp::Remove(n) => {
                    self.mirror.remove(&n);
                    touched.push(n);
                }
                StateOp::Put(n, e) => {
                    self.mirror.insert(n.clone(), e);
                    touched.push(n);
                }
                _ => {}
            }
        }
        self.publish(&touched);
        self.ports.sip.finish_sync(epoch).await?;
        crate::crash::point(crate::crash::SWEEP_FINISHED);
        tracing::debug!(
            list_owned_ms = t_list.duration_since(t0).as_millis() as u64,
            total_ms = self.ports.clock.now().duration_since(t0).as_millis() as u64,
            "sweep timings"
        );
        tracing::info!(
            epoch,
            pbx_users = summary.users.len(),
            groups = summary.groups.len(),
            omm_users = stale_dect.len(),
            "resync ended, unseen objects swept"
        );
        Ok(())
    }

    /// Decides whether a verdict is final (`Some`, with the attempts it took) or the message
    /// waits for a retry (`None`, and `self.waiting` says why).
    fn settle(&mut self, msg: &Incoming, verdict: Verdict) -> Option<(Verdict, u32)> {
        let now = self.ports.clock.now();
        let verdict = match verdict {
            // it timed out alone before while the PBX answered: this one is the message's own
            Verdict::Stalled(e)
                if e.kind() == PortErrorKind::Slow && self.suspect == Some(msg.id) =>
            {
                Verdict::Retry(e)
            }
            v => v,
        };
        if self.suspect == Some(msg.id) && !verdict.waits() {
            self.suspect = None;
        }
        match verdict {
            Verdict::Stalled(e) => {
                // the peer was not asked: no attempt, and the wait is not budget
                if let Some(a) = self.attempts.get_mut(&msg.id) {
                    a.last = now;
                }
                self.waiting = Some(Waiting {
                    message: msg.id,
                    stalled: true,
                    refused: e.kind() == PortErrorKind::Refused,
                    slow: e.kind() == PortErrorKind::Slow,
                    reason: e.report(),
                });
                None
            }
            Verdict::Retry(e) => {
                let a = self.attempts.entry(msg.id).or_insert(Attempts {
                    count: 0,
                    spent: Duration::ZERO,
                    last: now,
                });
                a.spent += now.duration_since(a.last);
                a.last = now;
                a.count += 1;
                let (n, spent) = (a.count, a.spent);
                if n >= self.config.max_attempts || spent >= self.config.retry_budget {
                    self.attempts.remove(&msg.id);
                    Some((
                        Verdict::dead(
                            &e,
                            format!("still refused after {n} attempts: {}", e.report()),
                        ),
                        n,
                    ))
                } else {
                    tracing::warn!(id = msg.id, kind = %msg.kind, attempt = n, error = %e.report(), "message refused for now, will retry");
                    self.waiting = Some(Waiting {
                        message: msg.id,
                        stalled: false,
                        refused: false,
                        slow: false,
                        reason: e.report(),
                    });
                    None
                }
            }
            v => {
                let failed_before = self.attempts.remove(&msg.id).map_or(0, |a| a.count);
                Some((v, failed_before + 1))
            }
        }
    }

    fn journal(&self, msg: &Incoming, v: &Verdict, attempts: u32) -> StateOp {
        let (status, reason) = match v {
            Verdict::Done => (JournalStatus::Done, None),
            Verdict::Ignored(r) => (JournalStatus::Ignored, Some(r.clone())),
            Verdict::Dead(r, _) => (JournalStatus::Dead, Some(r.clone())),
            Verdict::Retry(e) | Verdict::Stalled(e) => (JournalStatus::Dead, Some(e.report())),
        };
        // only a dead letter keeps its payload (already redacted by the feed), for an operator
        let payload = if status == JournalStatus::Dead {
            msg.raw.clone()
        } else {
            String::new()
        };
        StateOp::Journal(JournalEntry {
            id: msg.id,
            kind: msg.kind.clone(),
            status,
            attempts,
            reason,
            payload,
        })
    }

    /// Plans and applies a run of ordinary messages. Returns the acked prefix and the messages
    /// left for a retry.
    async fn apply_segment(&mut self, msgs: Vec<Incoming>) -> (Vec<i64>, Vec<Incoming>) {
        let t_plan = self.ports.clock.now();
        let mut seg = self.plan_segment(msgs);
        let t_sip = self.ports.clock.now();
        let n_changes = self.apply_pbx(&mut seg).await;
        let t_dect = self.ports.clock.now();
        self.apply_dect(&mut seg).await;
        crate::crash::point(crate::crash::OMM_APPLIED);
        let t_state = self.ports.clock.now();
        let out = self.settle_and_commit(seg).await;
        let t_end = self.ports.clock.now();
        self.with_status(|s| {
            if n_changes > 0 {
                s.timings.pbx.observe(t_dect.duration_since(t_sip));
            }
            s.timings.omm.observe(t_state.duration_since(t_dect));
            s.timings.state.observe(t_end.duration_since(t_state));
        });
        tracing::debug!(
            messages = out.0.len() + out.1.len(),
            pbx_changes = n_changes,
            plan_ms = t_sip.duration_since(t_plan).as_millis() as u64,
            pbx_ms = t_dect.duration_since(t_sip).as_millis() as u64,
            omm_ms = t_state.duration_since(t_dect).as_millis() as u64,
            state_ms = self.ports.clock.now().duration_since(t_state).as_millis() as u64,
            "segment applied"
        );
        out
    }

    /// Phase 1: every message planned against a working copy of the mirror; the directory
    /// learns the planned state before the OMM is touched (a handset this run releases must
    /// not be taken for a known one coming back, one it binds not for a new one).
    fn plan_segment(&self, msgs: Vec<Incoming>) -> Segment {
        let mut plans: Vec<Result<Plan, String>> = Vec::with_capacity(msgs.len());
        {
            let mut work = plan::Overlay::new(&self.mirror);
            for msg in &msgs {
                plans.push(match &msg.command {
                    Ok(cmd) => Ok(plan::plan(cmd, &mut work, self.sync)),
                    Err(e) => Err(e.clone()),
                });
            }
        }
        {
            let mut d = self.directory.write().unwrap_or_else(|e| e.into_inner());
            for p in plans.iter().flatten() {
                for (n, e) in &p.mirror {
                    d.set(n, e.as_ref());
                }
            }
        }
        let verdicts = plans
            .iter()
            .map(|p| match p {
                Err(e) => Some(Verdict::Dead(format!("malformed: {e}"), None)),
                Ok(p) => p.ignored.clone().map(Verdict::Ignored),
            })
            .collect();
        Segment {
            msgs,
            plans,
            verdicts,
            offsets: Vec::new(),
            sip: Vec::new(),
        }
    }

    /// Phase 2: all PBX changes of the segment in one transaction. Returns how many.
    async fn apply_pbx(&self, seg: &mut Segment) -> usize {
        let mut changes = Vec::new();
        for p in &seg.plans {
            seg.offsets.push(changes.len());
            if let Ok(p) = p {
                changes.extend(p.sip.iter().cloned());
            }
        }
        let n = changes.len();
        if changes.is_empty() {
            return 0;
        }
        match self.ports.sip.apply(changes).await {
            Ok(r) => {
                crate::crash::point(crate::crash::PBX_COMMITTED);
                seg.sip = r;
                for (i, p) in seg.plans.iter().enumerate() {
                    let Ok(p) = p else { continue };
                    if seg.verdicts[i].is_some() {
                        continue;
                    }
                    let failed =
                        (0..p.sip.len()).find_map(|k| match seg.sip.get(seg.offsets[i] + k) {
                            Some(Err(e)) => Some(e.summary()),
                            _ => None,
                        });
                    if let Some(e) = failed {
                        seg.verdicts[i] = Some(Verdict::of(e));
                    }
                }
            }
            Err(e) => {
                // nothing was applied: every message that needed the PBX waits or fails
                for (i, p) in seg.plans.iter().enumerate() {
                    if matches!(p, Ok(p) if !p.sip.is_empty()) && seg.verdicts[i].is_none() {
                        seg.verdicts[i] = Some(Verdict::of(e.summary()));
                    }
                }
            }
        }
        n
    }

    /// Phase 3: OMM operations, in GURU3 order within a chain of numbers (a number, and the
    /// numbers a rename in this segment links to it), chains concurrently. Messages after the
    /// first one that waits for the PBX are retried with it, so their OMM operations do not
    /// run now: they would overtake it.
    async fn apply_dect(&self, seg: &mut Segment) {
        let cut = seg
            .verdicts
            .iter()
            .position(|v| v.as_ref().is_some_and(Verdict::waits))
            .unwrap_or(seg.plans.len());
        let mut chains = Chains::default();
        for p in seg.plans[..cut].iter().flatten() {
            for op in &p.dect {
                if let DectOp::Rename(old, new) = op {
                    chains.link(old, new);
                }
            }
        }
        let mut queues: BTreeMap<usize, Vec<(usize, DectOp, Option<crate::model::Secret>)>> =
            BTreeMap::new();
        for (i, p) in seg.plans[..cut].iter().enumerate() {
            let Ok(p) = p else { continue };
            if seg.verdicts[i].is_some() {
                continue;
            }
            for op in &p.dect {
                let mut op = op.clone();
                let pw = match &mut op {
                    DectOp::Upsert {
                        password_from,
                        unchanged,
                        ..
                    } => {
                        let (pw, created) = seg.sip_password(i, *password_from);
                        // a PBX user created now has a new password the OMM must get
                        *unchanged &= !created;
                        pw
                    }
                    _ => None,
                };
                queues
                    .entry(chains.root(op.key()))
                    .or_default()
                    .push((i, op, pw));
            }
        }
        let dect = Arc::clone(&self.ports.dect);
        let failures: Vec<(usize, PortError)> = futures_util::stream::iter(queues.into_values())
            .map(|ops| {
                let dect = Arc::clone(&dect);
                async move {
                    let mut failed: Vec<(usize, PortError)> = Vec::new();
                    for (i, op, pw) in ops {
                        // the rest of a failed message is not tried
                        if failed.iter().any(|(f, _)| *f == i) {
                            continue;
                        }
                        // a later operation of a chain never overtakes an earlier one that waits
                        if failed.iter().any(|(f, e)| *f < i && e.is_transient()) {
                            failed.push((
                                i,
                                PortError::unavailable(
                                    "waits for an earlier message on this number",
                                ),
                            ));
                            continue;
                        }
                        if let Err(e) = run_dect(&*dect, op, pw).await {
                            failed.push((i, e));
                        }
                    }
                    failed
                }
            })
            .buffer_unordered(self.config.dect_concurrency.max(1))
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
        for (i, e) in failures {
            Verdict::merge(&mut seg.verdicts[i], Verdict::of(e));
        }
    }

    /// Phases 4 and 5: verdicts settled in GURU3 order (the prefix up to the first message
    /// that waits is final), then mirror and journal committed in one go. A failed commit
    /// restores the mirror, the attempt counters and the breaker and replays the whole run.
    async fn settle_and_commit(&mut self, seg: Segment) -> (Vec<i64>, Vec<Incoming>) {
        let Segment {
            msgs,
            plans,
            mut verdicts,
            ..
        } = seg;
        let attempts_before = self.attempts.clone();
        let streak_before = self.streak.clone();
        let tripped_before = self.tripped.clone();
        let mut undo: Vec<(Number, Option<crate::model::MirrorEntry>)> = Vec::new();
        let mut acked = Vec::new();
        let mut ops = Vec::new();
        let mut left = Vec::new();
        let mut settled = Vec::new();
        let mut finals: Vec<Final> = Vec::new();
        let mut rest = msgs.into_iter().enumerate();
        for (i, msg) in rest.by_ref() {
            let v = verdicts[i].take().unwrap_or(Verdict::Done);
            let Some((v, attempts)) = self.settle(&msg, v) else {
                left.push(msg);
                break;
            };
            let number = plans[i]
                .as_ref()
                .ok()
                .and_then(|p| p.mirror.first().map(|(n, _)| n.to_string()));
            if let Verdict::Dead(reason, Some(code)) = &v {
                if self.config.breaker_after > 1 {
                    match self.breaker(&msg, code, reason, attempts, number) {
                        Breaker::Held(released) => {
                            self.release(released, &mut ops, &mut acked, &mut finals);
                            settled.push(msg);
                        }
                        Breaker::Tripped(held) => {
                            // the streak goes back to the queue's head, before this message
                            settled.retain(|m: &Incoming| !held.iter().any(|h| h.id == m.id));
                            left.extend(held);
                            left.push(msg);
                            break;
                        }
                    }
                    continue;
                }
            }
            if matches!(v, Verdict::Done) {
                // a message applied: the peers work, a streak of dead letters is final
                if let Some(s) = self.streak.take() {
                    self.release(s.held, &mut ops, &mut acked, &mut finals);
                }
                if let Some(code) = self.tripped.take() {
                    tracing::info!(reason = %code, "a retry succeeded: the breaker closes");
                }
            }
            if let (Verdict::Done | Verdict::Ignored(_), Ok(p)) = (&v, &plans[i]) {
                for (n, entry) in &p.mirror {
                    let prev = match entry {
                        Some(e) => {
                            ops.push(StateOp::Put(n.clone(), e.clone()));
                            self.mirror.insert(n.clone(), e.clone())
                        }
                        None => {
                            ops.push(StateOp::Remove(n.clone()));
                            self.mirror.remove(n)
                        }
                    };
                    undo.push((n.clone(), prev));
                }
            }
            ops.push(self.journal(&msg, &v, attempts));
            acked.push(msg.id);
            finals.push(Final {
                id: msg.id,
                kind: msg.kind.clone(),
                number,
                verdict: v,
            });
            settled.push(msg);
        }
        left.extend(rest.map(|(_, m)| m));
        let committed = self.ports.state.commit(ops).await;
        match committed {
            Ok(()) => {
                crate::crash::point(crate::crash::STATE_COMMITTED);
                self.finished(finals);
            }
            Err(e) => {
                // the targets are applied; without journal and mirror the run is replayed
                // (idempotently) instead of acked, from the state before it
                for (n, prev) in undo.into_iter().rev() {
                    match prev {
                        Some(e) => self.mirror.insert(n, e),
                        None => self.mirror.remove(&n),
                    };
                }
                self.attempts = attempts_before;
                self.streak = streak_before;
                self.tripped = tripped_before;
                if let Some(head) = settled.first().or_else(|| left.first()) {
                    self.commit_failed(head, &e);
                }
                settled.append(&mut left);
                acked.clear();
                left = settled;
            }
        }
        self.publish_unconfirmed();
        // the directory shows what the mirror holds: planned state of messages that died,
        // wait or were not reached is rolled back (a dead DECT create leaves no token)
        let touched: Vec<Number> = plans
            .iter()
            .flatten()
            .flat_map(|p| p.mirror.iter().map(|(n, _)| n.clone()))
            .collect();
        self.publish(&touched);
        (acked, left)
    }

    /// A dead letter with a reason code that may be systemic: it joins the streak of its
    /// code (a streak of another code becomes final), or, as the `breaker_after`-th in a row
    /// or while the breaker is open for its code, stops the queue.
    fn breaker(
        &mut self,
        msg: &Incoming,
        code: &str,
        reason: &str,
        attempts: u32,
        number: Option<String>,
    ) -> Breaker {
        let now = self.ports.clock.now();
        let k = self.config.breaker_after as usize;
        let same = self.streak.as_ref().is_some_and(|s| s.code == code);
        let run = if same {
            self.streak.as_ref().map_or(0, |s| s.held.len())
        } else {
            0
        };
        if self.tripped.as_deref() == Some(code) || run + 1 >= k {
            let held: Vec<Incoming> = self
                .streak
                .take()
                .filter(|s| s.code == code)
                .map(|s| s.held.into_iter().map(|h| h.msg).collect())
                .unwrap_or_default();
            let head = held.first().map_or(msg.id, |m| m.id);
            self.tripped = Some(code.to_owned());
            self.waiting = Some(Waiting {
                message: head,
                stalled: true,
                refused: true,
                slow: false,
                reason: format!(
                    "{k} messages in a row failed for the same reason ({code}), the latest: \
                     {reason}; they are not given up but retried until one succeeds"
                ),
            });
            return Breaker::Tripped(held);
        }
        self.tripped = None;
        let released = match self.streak.take() {
            Some(s) if s.code != code => s.held,
            Some(s) => {
                self.streak = Some(s);
                Vec::new()
            }
            None => Vec::new(),
        };
        tracing::warn!(
            id = msg.id,
            kind = %msg.kind,
            number = number.as_deref().unwrap_or("-"),
            reason,
            "message failed; kept unacknowledged until it is clear the failure is its own"
        );
        let streak = self.streak.get_or_insert_with(|| Streak {
            code: code.to_owned(),
            held: Vec::new(),
            last: now,
        });
        streak.last = now;
        streak.held.push(Held {
            msg: msg.clone(),
            reason: reason.to_owned(),
            attempts,
            number,
        });
        Breaker::Held(released)
    }

    /// Makes held dead letters final in the commit being built.
    fn release(
        &self,
        held: Vec<Held>,
        ops: &mut Vec<StateOp>,
        acked: &mut Vec<i64>,
        finals: &mut Vec<Final>,
    ) {
        for h in held {
            let v = Verdict::Dead(h.reason, None);
            ops.push(self.journal(&h.msg, &v, h.attempts));
            acked.push(h.msg.id);
            finals.push(Final {
                id: h.msg.id,
                kind: h.msg.kind,
                number: h.number,
                verdict: v,
            });
        }
    }

    /// A streak with no new member for `breaker_window` is final: journaled and returned for
    /// the ack. Kept if the commit fails (tried again later).
    async fn expire_streak(&mut self, force: bool) -> Vec<i64> {
        let now = self.ports.clock.now();
        let due = self
            .streak
            .as_ref()
            .is_some_and(|s| force || now.duration_since(s.last) >= self.config.breaker_window);
        if !due {
            return Vec::new();
        }
        let Some(s) = self.streak.take() else {
            return Vec::new();
        };
        let (mut ops, mut acked, mut finals) = (Vec::new(), Vec::new(), Vec::new());
        self.release(s.held.clone(), &mut ops, &mut acked, &mut finals);
        match self.ports.state.commit(ops).await {
            Ok(()) => {
                self.finished(finals);
                self.publish_unconfirmed();
                acked
            }
            Err(e) => {
                tracing::warn!(error = %e.report(), "journaling dead letters failed; will retry");
                self.streak = Some(s);
                Vec::new()
            }
        }
    }

    /// When the held streak becomes final by itself, if there is one.
    fn streak_deadline(&self) -> Option<Instant> {
        self.streak
            .as_ref()
            .map(|s| s.last + self.config.breaker_window)
    }

    fn publish_unconfirmed(&self) {
        let n = self.streak.as_ref().map_or(0, |s| s.held.len());
        self.with_status(|s| s.unconfirmed_dead = n);
    }
}

/// What the breaker made of a dead letter.
enum Breaker {
    /// Held in the streak; these (of an earlier reason) became final.
    Held(Vec<Held>),
    /// The queue stops; these held ones go back before the message.
    Tripped(Vec<Incoming>),
}

/// Numbers whose OMM operations must run in one chain because a rename links them
/// (a small union-find over the numbers of one segment).
#[derive(Default)]
struct Chains {
    ids: HashMap<Number, usize>,
    parent: Vec<usize>,
}

impl Chains {
    fn id(&mut self, n: &Number) -> usize {
        if let Some(&i) = self.ids.get(n) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.ids.insert(n.clone(), i);
        i
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn link(&mut self, a: &Number, b: &Number) {
        let (a, b) = (self.id(a), self.id(b));
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb.max(ra)] = ra.min(rb);
        }
    }

    fn root(&mut self, n: &Number) -> usize {
        let i = self.id(n);
        self.find(i)
    }
}

/// One log line for every message that is not simply applied (journal committed).
fn log_verdict(id: i64, kind: &str, number: Option<&str>, v: &Verdict) {
    let number = number.unwrap_or("-");
    match v {
        Verdict::Done => {}
        Verdict::Ignored(reason) => {
            tracing::warn!(id, kind, number, reason = %reason, "message ignored");
        }
        Verdict::Dead(reason, _) => {
            tracing::error!(id, kind, number, reason = %reason, "message dead-lettered");
        }
        Verdict::Retry(e) | Verdict::Stalled(e) => {
            tracing::error!(id, kind, number, reason = %e.report(), "message dead-lettered");
        }
    }
}

async fn run_dect(
    dect: &dyn DectSystem,
    op: DectOp,
    password: Option<crate::model::Secret>,
) -> PortResult<()> {
    match op {
        DectOp::Upsert {
            number,
            name,
            token,
            unchanged,
            ..
        } => {
            let sip_password = password.ok_or_else(|| {
                PortError::new(PortErrorKind::Fatal, "no SIP password for a DECT user")
            })?;
            dect.upsert_user(DectUser {
                unchanged,
                number,
                name,
                sip_password,
                token,
            })
            .await
        }
        DectOp::Delete(n) => dect.delete_user(n).await.map(drop),
        DectOp::Rename(old, new) => dect.rename_user(old, new).await,
        DectOp::Bind {
            number,
            handset,
            encryption,
        } => dect.bind_handset(number, handset, encryption).await,
        DectOp::Release(n) => dect.release_handset(n).await.map(drop),
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls `a` and `b`, returning the first to finish (without a runtime dependency).
async fn select<A: Future + Unpin, B: Future + Unpin>(a: A, b: B) -> Either<A::Output, B::Output> {
    match futures_util::future::select(a, b).await {
        futures_util::future::Either::Left((x, _)) => Either::Left(x),
        futures_util::future::Either::Right((y, _)) => Either::Right(y),
    }
}

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
pub struct Ports {
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

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports")
    }
}

/// Tuning of the delivery loop.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Transient failures of one message before it is dead-lettered (default 5).
    pub max_attempts: u32,
    /// …or once it has been failing this long (default 240 s, below GURU3's 300 s banner).
    pub retry_budget: Duration,
    /// First retry delay (default 500 ms), doubling with jitter.
    pub retry_base: Duration,
    /// Largest retry delay (default 30 s).
    pub retry_max: Duration,
    /// OMM operations in flight at once (default 32).
    pub dect_concurrency: usize,
    /// Largest share of owned OMM users a resync may delete (default 0.5).
    pub max_sweep_fraction: f64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_budget: Duration::from_secs(240),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            dect_concurrency: 32,
            max_sweep_fraction: 0.5,
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

    /// Sets [`dect_concurrency`](Self::dect_concurrency).
    pub fn dect_concurrency(mut self, n: usize) -> Self {
        self.dect_concurrency = n.max(1);
        self
    }

    /// Sets [`max_sweep_fraction`](Self::max_sweep_fraction).
    pub fn max_sweep_fraction(mut self, f: f64) -> Self {
        self.max_sweep_fraction = f;
        self
    }
}

/// Live counters, shared with the health endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStatus {
    /// Messages applied since start.
    pub done: u64,
    /// Ignored since start.
    pub ignored: u64,
    /// Dead-lettered since start.
    pub dead: u64,
    /// Messages waiting for a retry.
    pub backlog: usize,
    /// The last transient failure, if the broker is currently retrying.
    pub retrying: Option<String>,
    /// Resync epoch in progress.
    pub sync_epoch: Option<i64>,
    /// Batches processed.
    pub batches: u64,
}

/// Outcome of one message in a batch.
#[derive(Debug)]
enum Verdict {
    Done,
    Ignored(String),
    Dead(String),
    Retry(PortError),
}

/// The broker.
pub struct Broker {
    ports: Ports,
    config: BrokerConfig,
    mirror: Mirror,
    sync: Option<i64>,
    attempts: HashMap<i64, (u32, Instant)>,
    tail: Vec<Incoming>,
    status: Arc<Mutex<BrokerStatus>>,
    directory: crate::model::SharedDirectory,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("mirror", &self.mirror.len())
            .field("sync", &self.sync)
            .field("tail", &self.tail.len())
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
    pub async fn start(ports: Ports, config: BrokerConfig) -> PortResult<Self> {
        let mirror: Mirror = ports.state.load().await?.into_iter().collect();
        let (epoch, in_progress) = ports.sip.sync_state().await?;
        let sync = in_progress.then_some(epoch);
        tracing::info!(
            extensions = mirror.len(),
            sync_epoch = ?sync,
            "broker state loaded"
        );
        let status = Arc::new(Mutex::new(BrokerStatus {
            sync_epoch: sync,
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
            status,
            directory,
        })
    }

    /// GURU3's DECT tokens and known handsets, kept current as messages are applied.
    pub fn directory(&self) -> crate::model::SharedDirectory {
        Arc::clone(&self.directory)
    }

    fn publish(&self, n: &Number) {
        let mut d = self.directory.write().unwrap_or_else(|e| e.into_inner());
        d.set(n, self.mirror.get(n));
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
        {
            loop {
                let t_fetch = self.ports.clock.now();
                let batch = if self.tail.is_empty() {
                    let next = self.ports.feed.next_batch();
                    match select(next, shutdown.as_mut()).await {
                        Either::Right(()) => break,
                        Either::Left(Ok(b)) => b,
                        Either::Left(Err(e)) => {
                            tracing::warn!(error = %e.report(), "fetching from guru3 failed");
                            let d = self.backoff(1);
                            if let Either::Right(()) =
                                select(self.ports.clock.sleep(d), shutdown.as_mut()).await
                            {
                                break;
                            }
                            continue;
                        }
                    }
                } else {
                    let head = self.tail[0].id;
                    let n = self.attempts.get(&head).map_or(1, |a| a.0);
                    let d = self.backoff(n);
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
                if !report.acked.is_empty() {
                    if let Err(e) = self.ports.feed.ack(report.acked).await {
                        // the adapter keeps them and re-sends; replays are harmless
                        tracing::warn!(error = %e.report(), "acking failed; will retry");
                    }
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
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .config
            .retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.config.retry_max);
        let mut b = [0u8; 2];
        let r = if getrandom::fill(&mut b).is_ok() {
            f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
        } else {
            0.5
        };
        cap / 2 + (cap / 2).mul_f64(r)
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
    /// everything before them. Stops at the first message that fails transiently; it and
    /// everything after it are kept for a retry (see [`BatchReport::retry`]).
    pub async fn process(&mut self, batch: Vec<Incoming>) -> BatchReport {
        let mut report = BatchReport::default();
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
                let verdict = self.sync_marker(&msg).await;
                if let Some((v, attempts)) = self.settle(&msg, verdict) {
                    let journal = self.journal(&msg, &v, attempts);
                    if let Err(e) = self.ports.state.commit(vec![journal]).await {
                        tracing::warn!(error = %e.report(), "journal write failed");
                    }
                    report.acked.push(msg.id);
                } else {
                    self.tail = std::iter::once(msg).chain(rest).collect();
                    break;
                }
            } else {
                segment.push(msg);
            }
        }
        report.retry = self.tail.len();
        let backlog = self.tail.len();
        let retrying = self.tail.first().and_then(|m| {
            self.attempts
                .get(&m.id)
                .map(|a| format!("message {} ({}) attempt {}", m.id, m.kind, a.0))
        });
        self.with_status(|s| {
            s.batches += 1;
            s.backlog = backlog;
            s.retrying = retrying;
            s.sync_epoch = self.sync;
        });
        report
    }

    async fn sync_marker(&mut self, msg: &Incoming) -> Verdict {
        match msg.command {
            Ok(Command::SyncStarted) => match self.ports.sip.begin_sync().await {
                Ok(epoch) => {
                    tracing::info!(epoch, "resync started");
                    self.sync = Some(epoch);
                    Verdict::Done
                }
                Err(e) => classify(e),
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
                    Err(e) => classify(e),
                }
            }
            _ => Verdict::Dead("not a sync marker".into()),
        }
    }

    /// SYNC_ENDED: sweep the OMM, the PBX and the mirror of what the window did not mention.
    async fn sweep(&mut self, epoch: i64) -> PortResult<()> {
        let t0 = self.ports.clock.now();
        let owned = self.ports.dect.list_owned().await?;
        let t_list = self.ports.clock.now();
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
        let total = self.mirror.len().max(1);
        if stale_dect.len() > 1
            && stale_dect.len() as f64 > self.config.max_sweep_fraction * total as f64
        {
            return Err(PortError::rejected(format!(
                "resync would delete {} of {total} OMM users: refused",
                stale_dect.len()
            )));
        }
        let summary = self.ports.sip.end_sync(epoch).await?;
        for n in &stale_dect {
            self.ports.dect.delete_user(n.clone()).await?;
        }
        let mut ops = Vec::new();
        let numbers: Vec<Number> = self.mirror.keys().cloned().collect();
        for n in numbers {
            let Some(e) = self.mirror.get_mut(&n) else {
                continue;
            };
            let mut changed = false;
            if e.extension.is_some() && e.seen_epoch < epoch {
                e.extension = None;
                changed = true;
            }
            if !e.members.is_empty() && e.members_epoch < epoch {
                e.members.clear();
                changed = true;
            }
            if e.extension.is_none() && e.members.is_empty() {
                self.mirror.remove(&n);
                self.publish(&n);
                ops.push(StateOp::Remove(n));
            } else if changed {
                ops.push(StateOp::Put(n.clone(), e.clone()));
                self.publish(&n);
            }
        }
        self.ports.state.commit(ops).await?;
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

    /// Decides whether a verdict is final (`Some`) or the message stays for a retry (`None`).
    fn settle(&mut self, msg: &Incoming, verdict: Verdict) -> Option<(Verdict, u32)> {
        match verdict {
            Verdict::Retry(e) => {
                let now = self.ports.clock.now();
                let a = self.attempts.entry(msg.id).or_insert((0, now));
                a.0 += 1;
                let (n, since) = *a;
                if n >= self.config.max_attempts
                    || now.duration_since(since) >= self.config.retry_budget
                {
                    self.attempts.remove(&msg.id);
                    tracing::error!(id = msg.id, kind = %msg.kind, attempts = n, error = %e.report(), "giving up on message");
                    Some((
                        Verdict::Dead(format!("still failing after {n} attempts: {}", e.report())),
                        n,
                    ))
                } else {
                    tracing::warn!(id = msg.id, kind = %msg.kind, attempt = n, error = %e.report(), "message failed, will retry");
                    None
                }
            }
            v => {
                let failed_before = self.attempts.remove(&msg.id).map_or(0, |a| a.0);
                Some((v, failed_before + 1))
            }
        }
    }

    fn journal(&self, msg: &Incoming, v: &Verdict, attempts: u32) -> StateOp {
        let (status, reason) = match v {
            Verdict::Done => (JournalStatus::Done, None),
            Verdict::Ignored(r) => (JournalStatus::Ignored, Some(r.clone())),
            Verdict::Dead(r) => (JournalStatus::Dead, Some(r.clone())),
            Verdict::Retry(e) => (JournalStatus::Dead, Some(e.report())),
        };
        match status {
            JournalStatus::Done => self.with_status(|s| s.done += 1),
            JournalStatus::Ignored => self.with_status(|s| s.ignored += 1),
            JournalStatus::Dead => self.with_status(|s| s.dead += 1),
        }
        StateOp::Journal(JournalEntry {
            id: msg.id,
            kind: msg.kind.clone(),
            status,
            attempts,
            reason,
            payload: msg.raw.clone(),
        })
    }

    /// Plans and applies a run of ordinary messages. Returns the acked prefix and the messages
    /// left for a retry.
    async fn apply_segment(&mut self, seg: Vec<Incoming>) -> (Vec<i64>, Vec<Incoming>) {
        // 1. plan every message against a working copy of the mirror
        let t_plan = self.ports.clock.now();
        let mut plans: Vec<Result<Plan, String>> = Vec::with_capacity(seg.len());
        {
            let mut work = plan::Overlay::new(&self.mirror);
            for msg in &seg {
                plans.push(match &msg.command {
                    Ok(cmd) => Ok(plan::plan(cmd, &mut work, self.sync)),
                    Err(e) => Err(e.clone()),
                });
            }
        }
        // the directory learns the desired state before the OMM is touched: a handset this
        // run releases must not be taken for a known one coming back, and one it binds must
        // not be taken for a new one
        {
            let mut d = self.directory.write().unwrap_or_else(|e| e.into_inner());
            for p in plans.iter().flatten() {
                for (n, e) in &p.mirror {
                    d.set(n, e.as_ref());
                }
            }
        }
        // 2. all PBX changes of the segment in one transaction
        let mut offsets = Vec::with_capacity(plans.len());
        let mut changes = Vec::new();
        for p in &plans {
            offsets.push(changes.len());
            if let Ok(p) = p {
                changes.extend(p.sip.iter().cloned());
            }
        }
        let mut verdicts: Vec<Option<Verdict>> = plans
            .iter()
            .map(|p| match p {
                Err(e) => Some(Verdict::Dead(format!("malformed: {e}"))),
                Ok(p) => p.ignored.clone().map(Verdict::Ignored),
            })
            .collect();
        let t_sip = self.ports.clock.now();
        let n_changes = changes.len();
        let sip_results: Vec<PortResult<SipOutcome>> = if changes.is_empty() {
            Vec::new()
        } else {
            match self.ports.sip.apply(changes).await {
                Ok(r) => r,
                Err(e) => {
                    // nothing was applied: every message that needed the PBX waits
                    let reason = e.report();
                    for (i, p) in plans.iter().enumerate() {
                        if matches!(p, Ok(p) if !p.sip.is_empty()) && verdicts[i].is_none() {
                            verdicts[i] = Some(if e.is_transient() {
                                Verdict::Retry(PortError::transient(reason.clone()))
                            } else {
                                Verdict::Dead(reason.clone())
                            });
                        }
                    }
                    Vec::new()
                }
            }
        };
        for (i, p) in plans.iter().enumerate() {
            let Ok(p) = p else { continue };
            if verdicts[i].is_some() {
                continue;
            }
            for k in 0..p.sip.len() {
                if let Some(Err(e)) = sip_results.get(offsets[i] + k) {
                    verdicts[i] = Some(classify(PortError::new(e.kind(), e.report())));
                    break;
                }
            }
        }
        // 3. OMM operations: per number in order, numbers concurrently
        let t_dect = self.ports.clock.now();
        let mut queues: BTreeMap<Number, Vec<(usize, DectOp)>> = BTreeMap::new();
        for (i, p) in plans.iter().enumerate() {
            let Ok(p) = p else { continue };
            if verdicts[i].is_some() {
                continue;
            }
            for op in &p.dect {
                queues
                    .entry(op.key().clone())
                    .or_default()
                    .push((i, op.clone()));
            }
        }
        let dect = Arc::clone(&self.ports.dect);
        let password = |i: usize, from: usize| -> Option<crate::model::Secret> {
            match sip_results.get(offsets[i] + from) {
                Some(Ok(SipOutcome::User(pw))) => Some(pw.clone()),
                _ => None,
            }
        };
        let jobs: Vec<Vec<(usize, DectOp, Option<crate::model::Secret>)>> = queues
            .into_values()
            .map(|ops| {
                ops.into_iter()
                    .map(|(i, op)| {
                        let pw = match &op {
                            DectOp::Upsert { password_from, .. } => password(i, *password_from),
                            _ => None,
                        };
                        (i, op, pw)
                    })
                    .collect()
            })
            .collect();
        let failures: Vec<(usize, PortError)> = futures_util::stream::iter(jobs)
            .map(|ops| {
                let dect = Arc::clone(&dect);
                async move {
                    let mut failed: Vec<(usize, PortError)> = Vec::new();
                    for (i, op, pw) in ops {
                        // a later op of a number never overtakes a failed earlier one
                        if failed.iter().any(|(f, _)| *f <= i) {
                            failed.push((
                                i,
                                PortError::transient("an earlier operation on this number failed"),
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
            if verdicts[i].is_none() || matches!(verdicts[i], Some(Verdict::Retry(_))) {
                let v = classify(e);
                // keep the first transient reason, but a permanent one wins
                if verdicts[i].is_none() || matches!(v, Verdict::Dead(_)) {
                    verdicts[i] = Some(v);
                }
            }
        }
        // 4. settle in order: the prefix up to the first retry is final
        let t_state = self.ports.clock.now();
        let mut acked = Vec::new();
        let mut ops = Vec::new();
        let mut left = Vec::new();
        let mut settled = Vec::new();
        let mut seg = seg.into_iter().enumerate();
        for (i, msg) in seg.by_ref() {
            let v = verdicts[i].take().unwrap_or(Verdict::Done);
            let Some((v, attempts)) = self.settle(&msg, v) else {
                left.push(msg);
                break;
            };
            if let (Verdict::Done | Verdict::Ignored(_), Ok(p)) = (&v, &plans[i]) {
                for (n, entry) in &p.mirror {
                    match entry {
                        Some(e) => {
                            self.mirror.insert(n.clone(), e.clone());
                            ops.push(StateOp::Put(n.clone(), e.clone()));
                        }
                        None => {
                            self.mirror.remove(n);
                            ops.push(StateOp::Remove(n.clone()));
                        }
                    }
                    self.publish(n);
                }
            }
            ops.push(self.journal(&msg, &v, attempts));
            acked.push(msg.id);
            settled.push(msg);
        }
        left.extend(seg.map(|(_, m)| m));
        let n_ops = ops.len();
        let committed = self.ports.state.commit(ops).await;
        let t_end = self.ports.clock.now();
        tracing::debug!(
            messages = acked.len() + left.len(),
            pbx_changes = n_changes,
            state_ops = n_ops,
            plan_ms = t_sip.duration_since(t_plan).as_millis() as u64,
            pbx_ms = t_dect.duration_since(t_sip).as_millis() as u64,
            omm_ms = t_state.duration_since(t_dect).as_millis() as u64,
            state_ms = t_end.duration_since(t_state).as_millis() as u64,
            "segment applied"
        );
        if let Err(e) = committed {
            // the targets are applied; without the journal and mirror the messages are
            // replayed (idempotently) instead of acked
            tracing::warn!(error = %e.report(), "state commit failed; the batch will be replayed");
            self.mirror = self
                .ports
                .state
                .load()
                .await
                .map_or_else(|_| self.mirror.clone(), |m| m.into_iter().collect());
            let mut d = crate::model::Directory::default();
            for (n, e) in &self.mirror {
                d.set(n, Some(e));
            }
            *self.directory.write().unwrap_or_else(|e| e.into_inner()) = d;
            // the whole segment again, in GURU3 order: retrying only what came after the
            // first failure would let the unacked prefix come back after it
            settled.append(&mut left);
            return (Vec::new(), settled);
        }
        (acked, left)
    }
}

/// Transient failures are retried, everything else is given up.
fn classify(e: PortError) -> Verdict {
    if e.is_transient() {
        Verdict::Retry(e)
    } else {
        Verdict::Dead(e.report())
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
            ..
        } => {
            let sip_password = password.ok_or_else(|| {
                PortError::new(PortErrorKind::Fatal, "no SIP password for a DECT user")
            })?;
            dect.upsert_user(DectUser {
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

//! A run of ordinary messages through the phases plan → PBX → DECT (concurrent chains) →
//! settle → commit.

use super::*;

/// A run of ordinary messages (no resync marker) as it moves through the phases
/// plan → PBX → DECT → settle → commit.
pub(super) struct Segment {
    pub(super) msgs: Vec<Incoming>,
    /// per message: the plan, or why the message could not be decoded
    pub(super) plans: Vec<Result<Plan, String>>,
    /// per message: the verdict so far (`None`: nothing failed yet)
    pub(super) verdicts: Vec<Option<Verdict>>,
    /// per message: index of its first change in the PBX batch
    pub(super) offsets: Vec<usize>,
    /// per PBX change: its outcome
    pub(super) sip: Vec<PortResult<SipOutcome>>,
}

impl Segment {
    /// The password a PBX change produced, and whether it created the user.
    pub(super) fn sip_password(
        &self,
        i: usize,
        from: usize,
    ) -> (Option<crate::model::Secret>, bool) {
        match self.sip.get(self.offsets[i] + from) {
            Some(Ok(SipOutcome::User(pw))) => (Some(pw.clone()), false),
            Some(Ok(SipOutcome::NewUser(pw))) => (Some(pw.clone()), true),
            _ => (None, false),
        }
    }
}

/// Numbers whose OMM operations must run in one chain because a rename links them
/// (a small union-find over the numbers of one segment).
#[derive(Default)]
pub(super) struct Chains {
    pub(super) ids: HashMap<Number, usize>,
    pub(super) parent: Vec<usize>,
}

impl Chains {
    pub(super) fn id(&mut self, n: &Number) -> usize {
        if let Some(&i) = self.ids.get(n) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.ids.insert(n.clone(), i);
        i
    }

    pub(super) fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    pub(super) fn link(&mut self, a: &Number, b: &Number) {
        let (a, b) = (self.id(a), self.id(b));
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb.max(ra)] = ra.min(rb);
        }
    }

    pub(super) fn root(&mut self, n: &Number) -> usize {
        let i = self.id(n);
        self.find(i)
    }
}

pub(super) async fn run_dect(
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

pub(super) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls `a` and `b`, returning the first to finish (without a runtime dependency).
pub(super) async fn select<A: Future + Unpin, B: Future + Unpin>(
    a: A,
    b: B,
) -> Either<A::Output, B::Output> {
    match futures_util::future::select(a, b).await {
        futures_util::future::Either::Left((x, _)) => Either::Left(x),
        futures_util::future::Either::Right((y, _)) => Either::Right(y),
    }
}

impl Broker {
    /// Plans and applies a run of ordinary messages. Returns the acked prefix and the messages
    /// left for a retry.
    pub(super) async fn apply_segment(&mut self, msgs: Vec<Incoming>) -> (Vec<i64>, Vec<Incoming>) {
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
    pub(super) fn plan_segment(&self, msgs: Vec<Incoming>) -> Segment {
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
                    d.plan(n, e.as_ref());
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
    pub(super) async fn apply_pbx(&self, seg: &mut Segment) -> usize {
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
    pub(super) async fn apply_dect(&self, seg: &mut Segment) {
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
                        match run_dect(&*dect, op, pw).await {
                            Ok(()) => crate::crash::point(crate::crash::OMM_WRITTEN),
                            Err(e) => failed.push((i, e)),
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
    pub(super) async fn settle_and_commit(&mut self, seg: Segment) -> (Vec<i64>, Vec<Incoming>) {
        let Segment {
            msgs,
            plans,
            mut verdicts,
            ..
        } = seg;
        let ids: Vec<i64> = msgs.iter().map(|m| m.id).collect();
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
            // a message that did not decode still names its number for logs and readiness
            let number = plans[i]
                .as_ref()
                .ok()
                .and_then(|p| p.mirror.first().map(|(n, _)| n.to_string()))
                .or_else(|| msg.number().map(String::from));
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
                            // a resync re-sends most entries as they are: only their epochs
                            // move, and an entry that did not change at all is not written
                            match self.mirror.get(n) {
                                Some(old) if old == e => {}
                                Some(old)
                                    if old.extension == e.extension && old.members == e.members =>
                                {
                                    ops.push(StateOp::Seen {
                                        number: n.clone(),
                                        seen_epoch: e.seen_epoch,
                                        members_epoch: e.members_epoch,
                                    });
                                }
                                _ => ops.push(StateOp::Put(n.clone(), e.clone())),
                            }
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
        // the directory shows what the mirror holds once a message is settled: the planned
        // state of one that died is rolled back (a dead DECT create leaves no token). One that
        // waits or was not reached keeps its planned state until it is retried: the OMM may
        // hold part of it already (a known handset's device created, its attach cut off),
        // and that device must not be taken for a new handset in the meantime.
        let retried: std::collections::HashSet<i64> = left.iter().map(|m| m.id).collect();
        let touched: Vec<Number> = plans
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !retried.contains(id))
            .filter_map(|(p, _)| p.as_ref().ok())
            .flat_map(|p| p.mirror.iter().map(|(n, _)| n.clone()))
            .collect();
        self.publish(&touched);
        (acked, left)
    }
}

//! What became of a message: verdicts, counted attempts, the breaker's streak of dead
//! letters, the journal row.

use super::*;

/// Outcome of one message in a batch.
#[derive(Debug)]
pub(super) enum Verdict {
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
    pub(super) fn of(e: PortError) -> Self {
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
    pub(super) fn dead(e: &PortError, reason: String) -> Self {
        let systemic = matches!(
            e.kind(),
            PortErrorKind::Rejected
                | PortErrorKind::Transient
                | PortErrorKind::Fatal
                | PortErrorKind::Slow
        );
        Self::Dead(reason, systemic.then(|| e.reason_code()))
    }

    pub(super) fn waits(&self) -> bool {
        matches!(self, Self::Retry(_) | Self::Stalled(_))
    }

    pub(super) fn rank(&self) -> u8 {
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
    pub(super) fn merge(slot: &mut Option<Self>, v: Self) {
        if slot.as_ref().is_none_or(|cur| v.rank() > cur.rank()) {
            *slot = Some(v);
        }
    }
}

/// Counted failures of one message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempts {
    pub(super) count: u32,
    /// time between counted failures (waits for an unreachable peer excluded)
    pub(super) spent: Duration,
    pub(super) last: Instant,
}

/// Why the head of the queue waits, as [`Broker::settle`] saw it.
#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) message: i64,
    pub(super) stalled: bool,
    /// the stall is a refusal of hexidian's set-up, not an outage
    pub(super) refused: bool,
    /// the peer did not finish in time (`PortErrorKind::Slow`): try the message alone
    pub(super) slow: bool,
    pub(super) reason: String,
}

/// Dead letters in a row with the same reason code, not final yet: neither journaled nor
/// acked (GURU3 keeps them; a restart gets them again).
#[derive(Debug, Clone)]
pub(super) struct Streak {
    pub(super) code: String,
    pub(super) held: Vec<Held>,
    /// when the latest joined
    pub(super) last: Instant,
}

/// One dead letter of a [`Streak`].
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) msg: Incoming,
    pub(super) reason: String,
    pub(super) attempts: u32,
    pub(super) number: Option<String>,
}

/// A message settled in a round: what is journaled, counted and logged once committed.
pub(super) struct Final {
    pub(super) id: i64,
    pub(super) kind: String,
    pub(super) number: Option<String>,
    pub(super) verdict: Verdict,
}

/// What the breaker made of a dead letter.
pub(super) enum Breaker {
    /// Held in the streak; these (of an earlier reason) became final.
    Held(Vec<Held>),
    /// The queue stops; these held ones go back before the message.
    Tripped(Vec<Incoming>),
}

/// One log line for every message that is not simply applied (journal committed).
pub(super) fn log_verdict(id: i64, kind: &str, number: Option<&str>, v: &Verdict) {
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

impl Broker {
    /// Decides whether a verdict is final (`Some`, with the attempts it took) or the message
    /// waits for a retry (`None`, and `self.waiting` says why).
    pub(super) fn settle(&mut self, msg: &Incoming, verdict: Verdict) -> Option<(Verdict, u32)> {
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

    pub(super) fn journal(&self, msg: &Incoming, v: &Verdict, attempts: u32) -> StateOp {
        let (status, reason) = match v {
            Verdict::Done => (JournalStatus::Done, None),
            Verdict::Ignored(r) => (JournalStatus::Ignored, Some(r.clone())),
            Verdict::Dead(r, _) => (JournalStatus::Dead, Some(r.clone())),
            Verdict::Retry(e) | Verdict::Stalled(e) => (JournalStatus::Dead, Some(e.report())),
        };
        // only a dead letter keeps its payload (already redacted by the feed) and, apart, its
        // secrets, for an operator's replay
        let (payload, secrets) = if status == JournalStatus::Dead {
            (msg.raw.clone(), msg.secrets.clone())
        } else {
            (String::new(), None)
        };
        StateOp::Journal(JournalEntry {
            id: msg.id,
            kind: msg.kind.clone(),
            number: msg.number().map(String::from),
            status,
            attempts,
            reason,
            payload,
            secrets,
        })
    }

    /// A dead letter with a reason code that may be systemic: it joins the streak of its
    /// code (a streak of another code becomes final), or, as the `breaker_after`-th in a row
    /// or while the breaker is open for its code, stops the queue.
    pub(super) fn breaker(
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
    pub(super) fn release(
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
    pub(super) async fn expire_streak(&mut self, force: bool) -> Vec<i64> {
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
    pub(super) fn streak_deadline(&self) -> Option<Instant> {
        self.streak
            .as_ref()
            .map(|s| s.last + self.config.breaker_window)
    }

    pub(super) fn publish_unconfirmed(&self) {
        let n = self.streak.as_ref().map_or(0, |s| s.held.len());
        self.with_status(|s| s.unconfirmed_dead = n);
    }
}

//! `SipProvisioning` over an `asterisk_realtime::Store`; `StateStore` and `HandsetState`
//! over a `hexidian_state::Store` (both on the same session).

use asterisk_realtime::{Change, Extension, Kind, Member, Outcome, SipPassword, Store, UserSpec};
use broker_core::model::{Forward, MirrorEntry, Number, Routing, Secret};
use broker_core::ports::{
    BoxFuture, JournalEntry, JournalStats, PortError, PortErrorKind, PortResult, SipChange,
    SipOutcome, SipProvisioning, SipUserKind, StateOp, StateStore, SweepSummary,
};
use hexidian_state::StateChange;
use unbound_handsets::ports::{Assign, AssignResult, HandsetState, PendingBind};

fn port_error(e: asterisk_realtime::Error) -> PortError {
    // connection loss, timeouts, lock and serialisation conflicts: the peer could not be asked
    let kind = if matches!(e.root(), asterisk_realtime::Error::Timeout) || e.code() == Some("57014")
    {
        // the server did not finish in time: down, or this work is too heavy (the broker
        // finds out which by trying the message alone)
        PortErrorKind::Slow
    } else if e.is_transient() {
        PortErrorKind::Unavailable
    } else if e.is_setup_fault() {
        // a missing grant or table: hexidian's set-up, not the message (stalls the queue)
        PortErrorKind::Refused
    } else if e.is_conflict() {
        PortErrorKind::Conflict
    } else {
        PortErrorKind::Rejected
    };
    let code = e.code().map(str::to_owned);
    let err = PortError::new(kind, format!("postgres: {e}"));
    match code {
        Some(c) => err.with_code(c),
        None => err,
    }
    .with_source(e)
}

/// Longest any one store call may take, waiting for the connection included (the store's
/// own operation timeout is 60 s; the server ends statements after that too).
const CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(65);

/// Bounds a store call: past [`CALL_LIMIT`] it fails as "could not be asked".
fn timed<'a, T: Send + 'a>(
    fut: impl Future<Output = PortResult<T>> + Send + 'a,
) -> BoxFuture<'a, PortResult<T>> {
    Box::pin(async move {
        tokio::time::timeout(CALL_LIMIT, fut)
            .await
            .unwrap_or_else(|_| Err(PortError::unavailable("postgres: no answer in time")))
    })
}

fn ext(n: &Number) -> PortResult<Extension> {
    n.as_str()
        .parse()
        .map_err(|e: asterisk_realtime::InvalidInput| {
            PortError::rejected(format!("extension {n}: {e}"))
        })
}

/// The PBX's routing columns from the mirror's fields. A forward that does not forward
/// (`DISABLED`, or a mode this build does not know) is stored as none.
fn pbx_routing(r: &Routing, forward: Option<&Forward>) -> PortResult<asterisk_realtime::Routing> {
    use asterisk_realtime::{CallerDisplay, ForwardMode, ForwardRule};
    let forward = match forward {
        None => None,
        Some(f) => {
            // the wire names; mirrors written by older builds hold the Debug names
            let mode = match f.mode.as_str() {
                "ENABLED" | "Enabled" => Some(ForwardMode::Always),
                "ON_BUSY" | "OnBusy" => Some(ForwardMode::OnBusy),
                "ON_UNAVAILABLE" | "OnUnavailable" => Some(ForwardMode::OnUnavailable),
                _ => None,
            };
            match mode {
                Some(mode) => Some(ForwardRule {
                    mode,
                    target: ext(&f.target)?,
                    delay_s: i32::try_from(f.delay_s.min(600)).unwrap_or(600),
                }),
                None => None,
            }
        }
    };
    Ok(asterisk_realtime::Routing {
        forward,
        trunk: r.trunk,
        call_waiting: r.call_waiting,
        allow_dialout: r.allow_dialout,
        display: match r.display.as_str() {
            "NUMBER" => CallerDisplay::Number,
            "NAME" => CallerDisplay::Name,
            _ => CallerDisplay::NumberName,
        },
    })
}

fn change(c: SipChange) -> PortResult<Change> {
    Ok(match c {
        SipChange::UpsertUser {
            number,
            kind,
            name,
            password,
            premium,
            routing,
            forward,
        } => Change::UpsertUser(UserSpec {
            premium,
            routing: pbx_routing(&routing, forward.as_ref())?,
            extension: ext(&number)?,
            kind: match kind {
                SipUserKind::Sip => Kind::Sip,
                SipUserKind::Dect => Kind::Dect,
                SipUserKind::Temp => Kind::Temp,
            },
            name,
            password: match password {
                Some(p) => Some(
                    p.expose()
                        .parse::<SipPassword>()
                        .map_err(|e| PortError::rejected(format!("password of {number}: {e}")))?,
                ),
                None => None,
            },
        }),
        SipChange::DeleteUser(n) => Change::DeleteUser(ext(&n)?),
        SipChange::Rename { old, new } => Change::Rename {
            old: ext(&old)?,
            new: ext(&new)?,
        },
        SipChange::UpsertGroup {
            number,
            name,
            short_name,
        } => Change::UpsertGroup {
            extension: ext(&number)?,
            name,
            short_name,
        },
        SipChange::SetMembers {
            number,
            name,
            members,
        } => Change::SetMembers {
            extension: ext(&number)?,
            name,
            members: members
                .iter()
                .map(|m| {
                    Ok(Member {
                        extension: ext(&m.number)?,
                        active: m.active,
                        delay_s: i32::try_from(m.delay_s).unwrap_or(600),
                    })
                })
                .collect::<PortResult<_>>()?,
        },
        SipChange::NotGroup { number, name } => Change::NotGroup {
            extension: ext(&number)?,
            name,
        },
        SipChange::DeleteExtension(n) => Change::DeleteExtension(ext(&n)?),
        _ => return Err(PortError::rejected("unsupported pbx change")),
    })
}

/// Asterisk's PJSIP realtime tables as the broker's SIP provisioning.
#[derive(Debug, Clone)]
pub struct PgSip {
    store: Store,
}

impl PgSip {
    /// Over a connected store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl SipProvisioning for PgSip {
    fn apply(
        &self,
        changes: Vec<SipChange>,
    ) -> BoxFuture<'_, PortResult<Vec<PortResult<SipOutcome>>>> {
        timed(async move {
            // changes that cannot even be expressed fail alone, before the batch
            let mut slots: Vec<Result<usize, PortError>> = Vec::with_capacity(changes.len());
            let mut batch = Vec::new();
            for c in changes {
                slots.push(change(c).map(|c| {
                    batch.push(c);
                    batch.len() - 1
                }));
            }
            let mut results: Vec<Option<asterisk_realtime::Result<Outcome>>> = if batch.is_empty() {
                Vec::new()
            } else {
                self.store
                    .apply(&batch)
                    .await
                    .map_err(port_error)?
                    .into_iter()
                    .map(Some)
                    .collect()
            };
            Ok(slots
                .into_iter()
                .map(|s| {
                    let i = s?;
                    match results.get_mut(i).and_then(Option::take) {
                        Some(Ok(Outcome::User { password, created })) => {
                            let pw = Secret::new(password.expose());
                            Ok(if created {
                                SipOutcome::NewUser(pw)
                            } else {
                                SipOutcome::User(pw)
                            })
                        }
                        Some(Ok(Outcome::Done(b))) => Ok(SipOutcome::Done(b)),
                        Some(Ok(_)) => Ok(SipOutcome::Done(true)),
                        Some(Err(e)) => Err(port_error(e)),
                        None => Err(PortError::transient("missing batch result")),
                    }
                })
                .collect())
        })
    }

    fn begin_sync(&self) -> BoxFuture<'_, PortResult<i64>> {
        timed(async move { self.store.begin_sync().await.map_err(port_error) })
    }

    fn finish_sync(&self, epoch: i64) -> BoxFuture<'_, PortResult<()>> {
        timed(async move { self.store.finish_sync(epoch).await.map_err(port_error) })
    }

    fn sweep_sync(&self, epoch: i64) -> BoxFuture<'_, PortResult<SweepSummary>> {
        timed(async move {
            let r = self.store.sweep(epoch).await.map_err(port_error)?;
            Ok(SweepSummary {
                users: r.users,
                groups: r.groups,
            })
        })
    }

    fn sync_state(&self) -> BoxFuture<'_, PortResult<(i64, bool)>> {
        timed(async move { self.store.sync_state().await.map_err(port_error) })
    }

    fn exists(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        // rows hexidian does not own are refused by the upsert itself (a conflict)
        timed(async move {
            let e = ext(&number)?;
            Ok(self.store.user(&e).await.map_err(port_error)?.is_some())
        })
    }

    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<Number>>> {
        timed(async move {
            let users = self.store.list_managed().await.map_err(port_error)?;
            Ok(users
                .into_iter()
                .filter(|u| u.kind == Some(Kind::Temp))
                .filter_map(|u| u.extension.as_str().parse().ok())
                .collect())
        })
    }
}

/// The broker's mirror and journal in schema `hexidian`, next to the PBX rows.
#[derive(Debug, Clone)]
pub struct PgState {
    store: hexidian_state::Store,
}

impl PgState {
    /// Over an attached state store.
    pub fn new(store: hexidian_state::Store) -> Self {
        Self { store }
    }
}

/// The mirror entries of the stored documents, each with the greatest epochs recorded for it.
pub(crate) fn mirror_entries(docs: Vec<hexidian_state::Desired>) -> Vec<(Number, MirrorEntry)> {
    docs.into_iter()
        .filter_map(|d| {
            let number: Number = d.number.parse().ok()?;
            match serde_json::from_str::<MirrorEntry>(&d.doc) {
                Ok(mut e) => {
                    if let Some((seen, members)) = d.seen {
                        e.seen_epoch = e.seen_epoch.max(seen);
                        e.members_epoch = e.members_epoch.max(members);
                    }
                    Some((number, e))
                }
                Err(e) => {
                    tracing::error!(extension = %number, error = %e, "unreadable mirror entry ignored");
                    None
                }
            }
        })
        .collect()
}

impl StateStore for PgState {
    fn load(&self) -> BoxFuture<'_, PortResult<Vec<(Number, MirrorEntry)>>> {
        timed(async move {
            let docs = self.store.load_desired().await.map_err(port_error)?;
            Ok(mirror_entries(docs))
        })
    }

    fn commit(&self, ops: Vec<StateOp>) -> BoxFuture<'_, PortResult<()>> {
        timed(async move {
            let mut changes = Vec::with_capacity(ops.len());
            for op in ops {
                changes.push(match op {
                    StateOp::Put(n, e) => StateChange::Put {
                        number: ext(&n)?,
                        doc: serde_json::to_string(&e).map_err(|e| {
                            PortError::new(PortErrorKind::Fatal, format!("mirror entry: {e}"))
                        })?,
                    },
                    StateOp::Remove(n) => StateChange::Remove(ext(&n)?),
                    StateOp::Seen {
                        number,
                        seen_epoch,
                        members_epoch,
                    } => StateChange::Seen {
                        number: ext(&number)?,
                        seen_epoch,
                        members_epoch,
                    },
                    StateOp::Journal(j) => StateChange::Journal(j),
                    op => {
                        return Err(PortError::new(
                            PortErrorKind::Fatal,
                            format!("state change this store cannot keep: {op:?}"),
                        ));
                    }
                });
            }
            self.store.commit_state(&changes).await.map_err(port_error)
        })
    }

    fn stats(&self) -> BoxFuture<'_, PortResult<JournalStats>> {
        timed(async move {
            let (done, ignored, dead) = self.store.journal_counts().await.map_err(port_error)?;
            Ok(JournalStats {
                done: done as u64,
                ignored: ignored as u64,
                dead: dead as u64,
            })
        })
    }

    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, PortResult<Vec<JournalEntry>>> {
        timed(async move {
            self.store
                .dead_letters(i64::from(limit))
                .await
                .map_err(port_error)
        })
    }

    fn dead_letter(&self, id: i64) -> BoxFuture<'_, PortResult<Option<(JournalEntry, bool)>>> {
        timed(async move { self.store.dead_letter(id).await.map_err(port_error) })
    }
}

impl HandsetState for PgState {
    fn add_bind(
        &self,
        ppn: u32,
        temp: Number,
        extension: Number,
    ) -> BoxFuture<'_, PortResult<i64>> {
        timed(async move {
            let ppn = i32::try_from(ppn).map_err(|_| PortError::rejected("ppn out of range"))?;
            self.store
                .add_bind(ppn, &ext(&temp)?, &ext(&extension)?)
                .await
                .map_err(port_error)
        })
    }

    fn pending_binds(&self) -> BoxFuture<'_, PortResult<Vec<PendingBind>>> {
        timed(async move {
            let rows = self.store.pending_binds().await.map_err(port_error)?;
            Ok(rows
                .into_iter()
                .filter_map(|b| {
                    Some(PendingBind {
                        id: b.id,
                        ppn: u32::try_from(b.ppn).ok()?,
                        temp: b.temp.parse().ok()?,
                        extension: b.extension.parse().ok()?,
                    })
                })
                .collect())
        })
    }

    fn drop_bind(&self, id: i64) -> BoxFuture<'_, PortResult<()>> {
        timed(async move { self.store.drop_bind(id).await.map_err(port_error) })
    }

    fn finish_bind(
        &self,
        id: i64,
        ipei: String,
        uak: Secret,
        extension: Number,
    ) -> BoxFuture<'_, PortResult<()>> {
        timed(async move {
            self.store
                .finish_bind(id, &ipei, uak.expose(), &ext(&extension)?)
                .await
                .map_err(port_error)
        })
    }

    fn outbox_depth(&self) -> BoxFuture<'_, PortResult<u64>> {
        timed(async move {
            let n = self.store.outbox_depth().await.map_err(port_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn pending_assigns(&self, limit: u32) -> BoxFuture<'_, PortResult<Vec<Assign>>> {
        timed(async move {
            let rows = self
                .store
                .pending_assigns(i64::from(limit))
                .await
                .map_err(port_error)?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    Some(Assign {
                        id: r.id,
                        ipei: r.ipei,
                        uak: Secret::new(r.uak),
                        extension: r.extension.parse().ok()?,
                    })
                })
                .collect())
        })
    }

    fn finish_assign(&self, result: AssignResult) -> BoxFuture<'_, PortResult<()>> {
        timed(async move {
            self.store
                .finish_assign(result.id, result.ok, &result.text)
                .await
                .map_err(port_error)
        })
    }
}

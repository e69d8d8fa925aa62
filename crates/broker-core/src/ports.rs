//! The ports: everything the broker needs from the outside, as object-safe traits held as
//! `Arc<dyn …>`. Signatures use domain types only.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::model::{Forward, Handset, Incoming, Member, MirrorEntry, Number, Routing, Secret};

/// A boxed, sendable future: keeps the traits dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of a port call.
pub type PortResult<T> = Result<T, PortError>;

/// How the broker should react to a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortErrorKind {
    /// The peer could not be asked (link down, connection refused, no answer before the
    /// deadline, database unreachable, lock or serialisation conflict): the queue waits in
    /// order and retries without limit; no attempt is spent.
    Unavailable,
    /// The peer did not finish this request in time, and whether it is down or this request
    /// is too heavy for it is not known yet (a statement timeout). The queue waits as for
    /// [`Unavailable`](Self::Unavailable) and tries the message alone; if it still times out
    /// alone while the peer answers a cheap question, it is the message's own failure: its
    /// attempts are counted and it ends as a dead letter, so that it cannot wedge the queue.
    Slow,
    /// The peer refuses hexidian itself, whatever the message: a privilege or a table it
    /// needs is missing, its OMM account lacks the rights. A fault of the set-up, not of the
    /// message: the queue waits in order as for [`Unavailable`](Self::Unavailable) (no
    /// attempt is spent, nothing is dead-lettered or acked) and says so as an error, until a
    /// retry succeeds.
    Refused,
    /// The peer answered that it cannot do it now ("busy", "in progress"): retried, and
    /// each failure counts towards dead-lettering.
    Transient,
    /// The object does not exist.
    NotFound,
    /// The object exists but belongs to someone else, or a unique key is taken.
    Conflict,
    /// The peer refused the data: retrying will not help.
    Rejected,
    /// Broken configuration or invariant: give up.
    Fatal,
}

/// Longest peer code kept in a [`PortError`] (characters).
const MAX_CODE: usize = 40;

/// A failure reported by an adapter.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct PortError {
    kind: PortErrorKind,
    message: String,
    /// the peer's own code for the failure (an OMM error code, a SQLSTATE)
    code: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PortError {
    /// A new error.
    pub fn new(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    /// Keeps the peer's own code for the failure (an OMM error code such as `EInvalidArgs`, a
    /// SQLSTATE): failures with the same kind and code count as the same reason.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        // a code is a short word; an odd peer's must not grow logs and status
        let mut code: String = code.into();
        if let Some((i, _)) = code.char_indices().nth(MAX_CODE) {
            code.truncate(i);
        }
        self.code = Some(code);
        self
    }

    /// The same failure (kind, code, the whole report as message) without its source: for
    /// one failure that several messages share.
    pub fn summary(&self) -> Self {
        Self {
            kind: self.kind,
            message: self.report(),
            code: self.code.clone(),
            source: None,
        }
    }

    /// The peer's own code for the failure, if it gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// What makes two failures "the same reason" whatever message they hit: the kind and
    /// the peer's code, never the text (which names the object).
    pub fn reason_code(&self) -> String {
        match &self.code {
            Some(c) => format!("{:?} {c}", self.kind),
            None => format!("{:?}", self.kind),
        }
    }

    /// Keeps the underlying error as the source.
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }

    /// Shorthand for "the peer could not be asked".
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Unavailable, message)
    }

    /// Shorthand for a transient error (the peer answered "not now").
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Transient, message)
    }

    /// Shorthand for a rejection.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Rejected, message)
    }

    /// The kind.
    pub fn kind(&self) -> PortErrorKind {
        self.kind
    }

    /// Shorthand for a refusal of hexidian's set-up (see [`PortErrorKind::Refused`]).
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Refused, message)
    }

    /// Whether a retry may succeed (the peer was unavailable, refused hexidian's set-up, which
    /// an operator can fix, or answered "not now").
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            PortErrorKind::Transient
                | PortErrorKind::Unavailable
                | PortErrorKind::Refused
                | PortErrorKind::Slow
        )
    }

    /// Whether the peer could not be asked at all (see [`PortErrorKind::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        self.kind == PortErrorKind::Unavailable
    }

    /// Whether the queue must wait for this to end rather than spend the message's attempts:
    /// the peer cannot be asked, or it refuses hexidian's set-up.
    pub fn stalls_queue(&self) -> bool {
        matches!(
            self.kind,
            PortErrorKind::Unavailable | PortErrorKind::Refused | PortErrorKind::Slow
        )
    }

    /// The message and the chain of sources, for journals and logs.
    pub fn report(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            // adapters often quote their source in the message: name each cause once
            let text = e.to_string();
            if !s.contains(&text) {
                s.push_str(": ");
                s.push_str(&text);
            }
            src = e.source();
        }
        s
    }
}

/// Health of the message feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedHealth {
    /// The push channel (websocket) is up.
    pub push_connected: bool,
    /// The last fetch succeeded.
    pub last_fetch_ok: bool,
    /// Acks not yet confirmed.
    pub pending_acks: usize,
}

/// GURU3: the next messages to process, and their acknowledgement.
pub trait EventFeed: Send + Sync + 'static {
    /// Waits for and returns the next non-empty batch, in GURU3 order.
    fn next_batch(&self) -> BoxFuture<'_, PortResult<Vec<Incoming>>>;
    /// Acknowledges processed messages (buffered and retried by the adapter on failure).
    fn ack(&self, ids: Vec<i64>) -> BoxFuture<'_, PortResult<()>>;
    /// Health for the readiness report.
    fn health(&self) -> FeedHealth;
}

/// What the OMM user of a DECT extension should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DectUser {
    /// Number (`num`, `sipAuthId`, `addId`).
    pub number: Number,
    /// Display name, already sanitised for the OMM.
    pub name: String,
    /// SIP password of the extension's Asterisk user.
    pub sip_password: Secret,
    /// Registration token (kept in the user record for the token call).
    pub token: Secret,
    /// Nothing about the user changed on hexidian's side (a resync re-checks it): an
    /// existing user whose visible fields already match need not be written again.
    pub unchanged: bool,
}

/// The DECT system (OMM): users of DECT extensions and their handsets. Adapters only touch
/// users they own (marked as hexidian's).
pub trait DectSystem: Send + Sync + 'static {
    /// Creates or updates the user of `user.number`.
    fn upsert_user(&self, user: DectUser) -> BoxFuture<'_, PortResult<()>>;
    /// Deletes the owned user of `number` (its handset stays subscribed, unbound); `false`
    /// if there was none.
    fn delete_user(&self, number: Number) -> BoxFuture<'_, PortResult<bool>>;
    /// Gives the owned user of `old` the number `new`.
    fn rename_user(&self, old: Number, new: Number) -> BoxFuture<'_, PortResult<()>>;
    /// Makes the handset known (IPEI + UAK) and attaches it to the user of `number`.
    fn bind_handset(
        &self,
        number: Number,
        handset: Handset,
        encryption: bool,
    ) -> BoxFuture<'_, PortResult<()>>;
    /// Detaches the handset of `number`, keeping it subscribed; `false` if none was attached.
    fn release_handset(&self, number: Number) -> BoxFuture<'_, PortResult<bool>>;
    /// Numbers of all users this broker owns.
    fn list_owned(&self) -> BoxFuture<'_, PortResult<Vec<Number>>>;
    /// A cheap question the OMM answers whenever it answers anything: tells a request that
    /// times out alone from an OMM that answers nothing.
    fn ping(&self) -> BoxFuture<'_, PortResult<()>>;
}

/// The kind of Asterisk user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipUserKind {
    /// SIP extension (GURU3's password).
    Sip,
    /// DECT extension (a password of our own, generated once and kept).
    Dect,
    /// Temporary user of an unbound handset (restricted context, never swept).
    Temp,
}

/// One change to the PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SipChange {
    /// Create or update a user.
    UpsertUser {
        /// Number.
        number: Number,
        /// Kind.
        kind: SipUserKind,
        /// Display name (sanitised by the adapter for caller ID).
        name: String,
        /// For SIP: GURU3's password; for DECT: `None` keeps (or generates) ours.
        password: Option<Secret>,
        /// Provision with the premium endpoint template (GURU3's `isPremium`).
        premium: bool,
        /// Routing fields (GURU3's defaults for temporary users).
        routing: Routing,
        /// Call forward.
        forward: Option<Forward>,
    },
    /// Delete the user of a number (no-op if none).
    DeleteUser(Number),
    /// Rename the user and every group reference.
    Rename {
        /// Old.
        old: Number,
        /// New.
        new: Number,
    },
    /// A GROUP extension.
    UpsertGroup {
        /// Number.
        number: Number,
        /// Name.
        name: String,
        /// Tag.
        short_name: String,
    },
    /// The complete member list of a group or multiring extension.
    SetMembers {
        /// Number.
        number: Number,
        /// Name.
        name: String,
        /// Members.
        members: Vec<Member>,
    },
    /// The number is no longer a GROUP.
    NotGroup {
        /// Number.
        number: Number,
        /// Name.
        name: String,
    },
    /// Remove user, group and memberships of a deleted extension.
    DeleteExtension(Number),
}

/// Result of one [`SipChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipOutcome {
    /// A user was written with this password.
    User(Secret),
    /// A user was created (it did not exist) with this password.
    NewUser(Secret),
    /// Done; whether anything changed.
    Done(bool),
}

/// What a finished resync removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Users deleted.
    pub users: Vec<String>,
    /// Groups deleted.
    pub groups: Vec<String>,
}

/// The PBX (Asterisk realtime tables).
pub trait SipProvisioning: Send + Sync + 'static {
    /// Applies a batch in one transaction; one result per change (a failed change fails alone).
    /// `Err` means nothing was applied.
    fn apply(
        &self,
        changes: Vec<SipChange>,
    ) -> BoxFuture<'_, PortResult<Vec<PortResult<SipOutcome>>>>;
    /// Starts a resync generation; returns its epoch.
    fn begin_sync(&self) -> BoxFuture<'_, PortResult<i64>>;
    /// Sweeps what the resync `epoch` did not see (never temporary users), behind a
    /// mass-deletion guard, and leaves it open: idempotent while it is open.
    fn sweep_sync(&self, epoch: i64) -> BoxFuture<'_, PortResult<SweepSummary>>;
    /// Closes the resync `epoch` once everything else was swept and committed.
    fn finish_sync(&self, epoch: i64) -> BoxFuture<'_, PortResult<()>>;
    /// `(current epoch, in progress)`, to resume after a restart.
    fn sync_state(&self) -> BoxFuture<'_, PortResult<(i64, bool)>>;
    /// Whether any PBX row (owned or not) uses this id.
    fn exists(&self, number: Number) -> BoxFuture<'_, PortResult<bool>>;
    /// The numbers of every temporary user (those of unbound handsets).
    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<Number>>>;
}

/// Outcome of a message in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalStatus {
    /// Applied to every target.
    Done,
    /// Recorded but nothing to do (unknown or unsupported type).
    Ignored,
    /// Given up (malformed, rejected, or still failing after the retry bound).
    Dead,
}

impl JournalStatus {
    /// Stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Ignored => "ignored",
            Self::Dead => "dead",
        }
    }
}

/// One journal row.
#[derive(Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// GURU3 message id.
    pub id: i64,
    /// Wire type.
    pub kind: String,
    /// The number it was about ([`Incoming::number`](crate::model::Incoming::number)), if any.
    pub number: Option<String>,
    /// Outcome.
    pub status: JournalStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was ignored or given up.
    pub reason: Option<String>,
    /// The envelope of a dead letter without its secrets (empty for other outcomes).
    pub payload: String,
    /// A dead letter's secrets ([`Incoming::secrets`](crate::model::Incoming::secrets)), for
    /// a replay; `None` for other outcomes. Never shown.
    pub secrets: Option<Secret>,
}

impl fmt::Debug for JournalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalEntry")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("number", &self.number)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("reason", &self.reason)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("secrets", &self.secrets.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A change to the broker's durable state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StateOp {
    /// Store the mirror entry of a number.
    Put(Number, MirrorEntry),
    /// Forget a number.
    Remove(Number),
    /// The stored entry of a number is unchanged but for its resync epochs (a resync re-sent
    /// it as it was): a store may record the epochs without rewriting the entry. Epochs only
    /// grow; a load gives each entry the greatest epochs stored or recorded for it.
    Seen {
        /// The number.
        number: Number,
        /// [`MirrorEntry::seen_epoch`] now.
        seen_epoch: i64,
        /// [`MirrorEntry::members_epoch`] now.
        members_epoch: i64,
    },
    /// Record a message outcome.
    Journal(JournalEntry),
}

/// Counters of the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Messages done.
    pub done: u64,
    /// Ignored.
    pub ignored: u64,
    /// Dead letters.
    pub dead: u64,
}

/// The broker's own durable state: the desired-state mirror and the journal.
pub trait StateStore: Send + Sync + 'static {
    /// Every mirror entry.
    fn load(&self) -> BoxFuture<'_, PortResult<Vec<(Number, MirrorEntry)>>>;
    /// Applies the ops atomically, in order.
    fn commit(&self, ops: Vec<StateOp>) -> BoxFuture<'_, PortResult<()>>;
    /// Journal counters.
    fn stats(&self) -> BoxFuture<'_, PortResult<JournalStats>>;
    /// The newest dead letters.
    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, PortResult<Vec<JournalEntry>>>;
    /// The dead letter with this message id, with its secrets, and whether a later message
    /// for its number was applied (a replay would undo that).
    fn dead_letter(&self, id: i64) -> BoxFuture<'_, PortResult<Option<(JournalEntry, bool)>>>;
}

/// Time, so back-off and deadlines are testable.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

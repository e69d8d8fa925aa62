//! hexidian's own state in PostgreSQL, beside the PJSIP rows that
//! [`asterisk_realtime`] writes: the message journal (one row per GURU3 message and its
//! outcome), the desired-state mirror (one opaque document per number), token-call binds
//! promised to a caller, and the outbox of `ASSIGN_HANDSET` messages for GURU3.
//!
//! It runs on the [`Session`] of an [`asterisk_realtime::Store`] (one connection, the same
//! timeouts and reconnects) and keeps its tables in a migration ledger of its own
//! (`hexidian.state_migrations`), so that `asterisk-realtime` holds only what Asterisk reads.
//! Together the two are the only crates that write SQL (a tidy test checks it).
//!
//! ```no_run
//! # async fn demo() -> asterisk_realtime::Result<()> {
//! use asterisk_realtime::{Config, Store as Pbx};
//!
//! let (pbx, driver) = Pbx::connect(Config::new("host=/run/postgresql dbname=asterisk")?).await?;
//! tokio::spawn(driver.run());
//! let state = hexidian_state::Store::attach(pbx.session().clone(), true).await?;
//! let (done, ignored, dead) = state.journal_counts().await?;
//! # let _ = (done, ignored, dead);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod binds;
mod journal;
pub mod leader;
mod migrations;
mod sql;

pub use asterisk_realtime::{Error, Result, Session};
pub use binds::{HandsetBind, OutboxEntry};
pub use broker_core::ports::{JournalEntry, JournalStatus};
pub use journal::{DeadLetter, Desired, StateChange};

/// Handle to the state tables. Cheap to clone; shares its session's one-at-a-time queue.
#[derive(Clone, Debug)]
pub struct Store {
    session: Session,
}

impl Store {
    /// Over `session`, whose driver must already run. With `migrate`, the state ledger's
    /// pending migrations are applied first (in one transaction, under the advisory lock all
    /// ledgers share); without, nothing is written ([`pending_migrations`](Self::pending_migrations)
    /// says what is missing).
    pub async fn attach(session: Session, migrate: bool) -> Result<Self> {
        if migrate {
            let mut guard = session.lock().await?;
            let tx = guard.client_mut().transaction().await?;
            migrations::STATE.apply(&tx).await?;
            tx.commit().await?;
        }
        Ok(Self { session })
    }

    /// Migrations of the state tables this build has and the database lacks.
    pub async fn pending_migrations(&self) -> Result<Vec<(i32, &'static str)>> {
        let guard = self.session.lock().await?;
        migrations::STATE.pending(guard.client()).await
    }

    /// The session it runs on.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// PostgreSQL `text` cannot hold NUL: replace it (journal texts echo hostile input).
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

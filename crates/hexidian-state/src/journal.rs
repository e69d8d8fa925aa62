//! The desired-state mirror (one opaque document per number) and the message journal (one
//! row per GURU3 message with its outcome).

use std::time::Duration;

use asterisk_realtime::{Extension, Result};

use crate::{Store, no_nul, sql};

/// Outcome of a message in the broker's journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalStatus {
    /// Applied everywhere.
    Done,
    /// Recorded, nothing to do.
    Ignored,
    /// Given up.
    Dead,
}

impl JournalStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Ignored => "ignored",
            Self::Dead => "dead",
        }
    }

    fn from_db(s: &str) -> Self {
        match s {
            "done" => Self::Done,
            "ignored" => Self::Ignored,
            _ => Self::Dead,
        }
    }
}

/// One row of the broker's message journal.
#[derive(Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// GURU3 message id.
    pub id: i64,
    /// Wire type.
    pub kind: String,
    /// Outcome.
    pub status: JournalStatus,
    /// Attempts.
    pub attempts: i32,
    /// Why it was ignored or given up.
    pub reason: Option<String>,
    /// The message as received (may contain secrets).
    pub payload: String,
}

impl std::fmt::Debug for JournalRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalRow")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("reason", &self.reason)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .finish()
    }
}

/// A change to the broker's state tables.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StateChange {
    /// Store the document of a number (its desired state, opaque to this crate).
    Put {
        /// Extension number.
        number: Extension,
        /// Document.
        doc: String,
    },
    /// Forget a number.
    Remove(Extension),
    /// Record a message outcome.
    Journal(JournalRow),
}

impl Store {
    /// Every stored `(number, document)` of the broker's desired-state mirror.
    pub async fn load_desired(&self) -> Result<Vec<(String, String)>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::B_LOAD, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Applies state changes in one transaction (later changes of a key win), with three
    /// set-based statements however many changes there are.
    pub async fn commit_state(&self, changes: &[StateChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut docs: std::collections::BTreeMap<&str, Option<String>> = Default::default();
        let mut journal: std::collections::BTreeMap<i64, &JournalRow> = Default::default();
        for c in changes {
            match c {
                StateChange::Put { number, doc } => {
                    docs.insert(number.as_str(), Some(no_nul(doc)));
                }
                StateChange::Remove(number) => {
                    docs.insert(number.as_str(), None);
                }
                StateChange::Journal(j) => {
                    journal.insert(j.id, j);
                }
            }
        }
        let (mut put_k, mut put_v, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in docs {
            match v {
                Some(doc) => {
                    put_k.push(k.to_owned());
                    put_v.push(doc);
                }
                None => gone.push(k.to_owned()),
            }
        }
        let rows: Vec<&JournalRow> = journal.into_values().collect();
        let ids: Vec<i64> = rows.iter().map(|j| j.id).collect();
        let kinds: Vec<String> = rows.iter().map(|j| no_nul(&j.kind)).collect();
        let statuses: Vec<&str> = rows.iter().map(|j| j.status.as_str()).collect();
        let attempts: Vec<i32> = rows.iter().map(|j| j.attempts).collect();
        let reasons: Vec<Option<String>> = rows
            .iter()
            .map(|j| j.reason.as_deref().map(no_nul))
            .collect();
        let payloads: Vec<String> = rows.iter().map(|j| no_nul(&j.payload)).collect();
        let mut guard = self.session.lock().await?;
        let tx = guard.client_mut().transaction().await?;
        if !gone.is_empty() {
            tx.execute(sql::B_REMOVE, &[&gone]).await?;
        }
        if !put_k.is_empty() {
            tx.execute(sql::B_PUT, &[&put_k, &put_v]).await?;
        }
        if !ids.is_empty() {
            tx.execute(
                sql::B_JOURNAL,
                &[&ids, &kinds, &statuses, &attempts, &reasons, &payloads],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `(done, ignored, dead)` message counts of the journal.
    pub async fn journal_counts(&self) -> Result<(i64, i64, i64)> {
        let guard = self.session.lock().await?;
        let r = guard.client().query_one(sql::B_COUNTS, &[]).await?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    /// Deletes applied and ignored journal rows last written more than `max_age` ago (at
    /// most 10,000 per call; dead letters are kept). Returns how many.
    pub async fn prune_journal(&self, max_age: Duration) -> Result<u64> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .execute(sql::B_PRUNE, &[&max_age.as_secs_f64()])
            .await?)
    }

    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<JournalRow>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::B_DEAD, &[&limit])
            .await?
            .iter()
            .map(|r| JournalRow {
                id: r.get(0),
                kind: r.get(1),
                status: JournalStatus::from_db(r.get(2)),
                attempts: r.get(3),
                reason: r.get(4),
                payload: r.get(5),
            })
            .collect())
    }
}

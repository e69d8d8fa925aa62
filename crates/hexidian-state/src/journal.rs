//! The desired-state mirror (one opaque document per number) and the message journal (one
//! row per GURU3 message with its outcome).

use std::time::Duration;

use asterisk_realtime::{Extension, Result};
use broker_core::model::Secret;
use broker_core::ports::{JournalEntry, JournalStatus};

use crate::{Store, no_nul, sql};

fn status_text(s: JournalStatus) -> &'static str {
    match s {
        JournalStatus::Done => "done",
        JournalStatus::Ignored => "ignored",
        JournalStatus::Dead => "dead",
    }
}

fn status_from_db(s: &str) -> JournalStatus {
    match s {
        "done" => JournalStatus::Done,
        "ignored" => JournalStatus::Ignored,
        _ => JournalStatus::Dead,
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
    /// The stored document of a number is unchanged but for its resync epochs: recorded
    /// beside it, returned by [`Store::load_desired`].
    Seen {
        /// Extension number.
        number: Extension,
        /// Resync epoch in which its extension was last seen.
        seen_epoch: i64,
        /// Resync epoch in which its member list was last sent.
        members_epoch: i64,
    },
    /// Record a message outcome.
    Journal(JournalEntry),
}

/// A dead letter as an operator lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// GURU3 message id.
    pub id: i64,
    /// Wire type.
    pub kind: String,
    /// The number it was about, if known.
    pub number: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up.
    pub reason: Option<String>,
    /// First recorded (UTC, `2026-12-07T14:03:11Z`).
    pub first_seen: String,
    /// Last written (UTC, same form).
    pub updated_at: String,
    /// A later message for the same number was applied.
    pub superseded: bool,
}

/// A stored document of the broker's desired-state mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Extension number.
    pub number: String,
    /// The document as written.
    pub doc: String,
    /// The greatest epochs recorded by [`StateChange::Seen`] for the number since the
    /// oldest kept resync, if any: `(seen_epoch, members_epoch)`.
    pub seen: Option<(i64, i64)>,
}

impl Store {
    /// Every stored document of the broker's desired-state mirror.
    pub async fn load_desired(&self) -> Result<Vec<Desired>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::B_LOAD, &[])
            .await?
            .iter()
            .map(|r| Desired {
                number: r.get(0),
                doc: r.get(1),
                seen: r.get::<_, Option<i64>>(2).zip(r.get::<_, Option<i64>>(3)),
            })
            .collect())
    }

    /// Applies state changes in one transaction (later changes of a key win), with three
    /// set-based statements however many changes there are.
    pub async fn commit_state(&self, changes: &[StateChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut docs: std::collections::BTreeMap<&str, Option<String>> = Default::default();
        let mut journal: std::collections::BTreeMap<i64, &JournalEntry> = Default::default();
        let (mut seen_n, mut seen_s, mut seen_m) = (Vec::new(), Vec::new(), Vec::new());
        for c in changes {
            match c {
                StateChange::Put { number, doc } => {
                    docs.insert(number.as_str(), Some(no_nul(doc)));
                }
                StateChange::Remove(number) => {
                    docs.insert(number.as_str(), None);
                }
                StateChange::Seen {
                    number,
                    seen_epoch,
                    members_epoch,
                } => {
                    seen_n.push(number.as_str());
                    seen_s.push(*seen_epoch);
                    seen_m.push(*members_epoch);
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
        let rows: Vec<&JournalEntry> = journal.into_values().collect();
        let ids: Vec<i64> = rows.iter().map(|j| j.id).collect();
        let kinds: Vec<String> = rows.iter().map(|j| no_nul(&j.kind)).collect();
        let numbers: Vec<Option<&str>> = rows.iter().map(|j| j.number.as_deref()).collect();
        let statuses: Vec<&str> = rows.iter().map(|j| status_text(j.status)).collect();
        let attempts: Vec<i32> = rows
            .iter()
            .map(|j| i32::try_from(j.attempts).unwrap_or(i32::MAX))
            .collect();
        let reasons: Vec<Option<String>> = rows
            .iter()
            .map(|j| j.reason.as_deref().map(no_nul))
            .collect();
        let payloads: Vec<String> = rows.iter().map(|j| no_nul(&j.payload)).collect();
        let secrets: Vec<Option<&str>> = rows
            .iter()
            .map(|j| j.secrets.as_ref().map(|s| s.expose()))
            .collect();
        let mut guard = self.session.lock().await?;
        let epoch = guard.fence_epoch();
        let tx = guard.transaction().await?;
        if !gone.is_empty() {
            tx.execute(sql::B_REMOVE, &[&gone]).await?;
        }
        if !put_k.is_empty() {
            tx.execute(sql::B_PUT, &[&put_k, &put_v]).await?;
        }
        if let Some(newest) = seen_s.iter().chain(&seen_m).max() {
            tx.execute(sql::B_SEEN_PRUNE, &[newest]).await?;
            tx.execute(sql::B_SEEN, &[&seen_n, &seen_s, &seen_m])
                .await?;
        }
        if !ids.is_empty() {
            tx.execute(
                sql::B_JOURNAL,
                &[
                    &ids, &kinds, &statuses, &attempts, &reasons, &payloads, &numbers, &secrets,
                    &epoch,
                ],
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
        let mut guard = self.session.lock().await?;
        guard.write(sql::B_PRUNE, &[&max_age.as_secs_f64()]).await
    }

    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<JournalEntry>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::B_DEAD, &[&limit])
            .await?
            .iter()
            .map(journal_entry)
            .collect())
    }

    /// The dead letter with this message id (its payload and, apart, its secrets), and
    /// whether a later message for its number was applied.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<(JournalEntry, bool)>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query_opt(sql::B_DEAD_ONE, &[&id])
            .await?
            .map(|r| {
                let mut j = journal_entry(&r);
                j.secrets = r.get::<_, Option<String>>(7).map(Secret::new);
                (j, r.get(8))
            }))
    }

    /// Every dead letter, oldest first (read only: safe while hexidian runs).
    pub async fn dead_letter_list(&self) -> Result<Vec<DeadLetter>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::B_DEAD_LIST, &[])
            .await?
            .iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                kind: r.get(1),
                number: r.get(2),
                attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                reason: r.get(4),
                first_seen: r.get(5),
                updated_at: r.get(6),
                superseded: r.get(7),
            })
            .collect())
    }
}

/// A journal row read by `B_DEAD`/`B_DEAD_ONE` (their columns in that order).
fn journal_entry(r: &tokio_postgres::Row) -> JournalEntry {
    JournalEntry {
        id: r.get(0),
        kind: r.get(1),
        status: status_from_db(r.get(2)),
        attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
        reason: r.get(4),
        payload: r.get(5),
        number: r.get(6),
        secrets: None,
    }
}

//! Resync generations: an epoch marks every row written during a resync, and its end sweeps
//! what it did not see.

use super::{Store, SweepReport};
use crate::error::{Doing, Error, Result};
use crate::sql;

impl Store {
    /// `(current epoch, in progress)` of the resync state.
    pub async fn sync_state(&self) -> Result<(i64, bool)> {
        let guard = self.inner.session.lock().await?;
        let row = guard.client().query_one(sql::B_SYNC, &[]).await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Starts a resync generation (SYNC_STARTED); returns its epoch.
    pub async fn begin_sync(&self) -> Result<i64> {
        let mut guard = self.inner.session.lock().await?;
        let rows = guard.write_query(sql::S_BEGIN, &[]).await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| Error::Schema("starting a resync returned no epoch".into()))
    }

    /// Ends the resync generation `epoch` (SYNC_ENDED): [`sweep`](Self::sweep) and
    /// [`finish_sync`](Self::finish_sync) in one transaction.
    pub async fn end_sync(&self, epoch: i64) -> Result<SweepReport> {
        self.sweep_in(epoch, true).await
    }

    /// Deletes owned users, member lists and groups not seen since the resync generation
    /// `epoch` began, never temporary users, and leaves the resync open: a caller that has
    /// more to sweep elsewhere (the OMM, its own state) ends it with
    /// [`finish_sync`](Self::finish_sync) once all of that is done, so that a crash in between
    /// finds the resync still open and sweeps again (this is idempotent). Refused (nothing
    /// deleted) if more than the configured share of users would go.
    pub async fn sweep(&self, epoch: i64) -> Result<SweepReport> {
        self.sweep_in(epoch, false).await
    }

    /// Closes the resync generation `epoch` (no-op if it is not the open one).
    pub async fn finish_sync(&self, epoch: i64) -> Result<()> {
        let mut guard = self.inner.session.lock().await?;
        guard
            .write_query(sql::S_END, &[&epoch])
            .await
            .doing(|| format!("closing resync {epoch}"))?;
        Ok(())
    }

    async fn sweep_in(&self, epoch: i64, finish: bool) -> Result<SweepReport> {
        let mut guard = self.inner.session.lock().await?;
        let tx = guard.transaction().await?;
        let lt = format!("{}ms", self.inner.config.lock_timeout.as_millis());
        tx.query_one(sql::SET_LOCK_TIMEOUT, &[&lt]).await?;
        let state = tx.query_one(sql::S_STATE, &[]).await?;
        let (current, in_progress): (i64, bool) = (state.get(0), state.get(1));
        if current != epoch || !in_progress {
            // a newer sync started, or this one was already ended: nothing to sweep
            return Ok(SweepReport {
                epoch,
                ..SweepReport::default()
            });
        }
        let guard_row = tx.query_one(sql::S_GUARD, &[&epoch]).await?;
        let (stale, total): (i64, i64) = (guard_row.get(0), guard_row.get(1));
        if total > 0 && stale as f64 > self.inner.config.max_sweep_fraction * total as f64 {
            return Err(Error::SweepRefused {
                stale,
                total,
                epoch,
            });
        }
        let users: Vec<String> = tx
            .query(sql::S_SWEEP_USERS, &[&epoch])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if self.inner.has_contacts && !users.is_empty() {
            tx.execute(sql::S_CONTACTS, &[&users])
                .await
                .doing(|| format!("removing the contacts of {} swept users", users.len()))?;
        }
        let cleared = tx.execute(sql::S_CLEAR_LISTS, &[&epoch]).await?;
        let groups: Vec<String> = tx
            .query(sql::S_SWEEP_GROUPS, &[&epoch])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // a route depends on groups and memberships only, and every change of those rebuilds
        // the routes it touches: all of them are rebuilt only when the sweep removed some
        if cleared > 0 || !groups.is_empty() {
            tx.execute(sql::C_REFRESH, &[&None::<Vec<String>>]).await?;
        }
        if finish {
            tx.query(sql::S_END, &[&epoch]).await?;
        }
        tx.commit().await?;
        Ok(SweepReport {
            epoch,
            users,
            groups,
        })
    }
}

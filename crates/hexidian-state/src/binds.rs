//! Token-call binds promised to a caller, and the outbox of `ASSIGN_HANDSET` messages that
//! tell GURU3 where a handset went.

use asterisk_realtime::{Extension, Result};

use crate::{Store, no_nul, sql};

/// A token-call bind promised to a caller and not yet carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandsetBind {
    /// Id.
    pub id: i64,
    /// OMM device id.
    pub ppn: i32,
    /// The temporary number.
    pub temp: String,
    /// The extension the handset goes to.
    pub extension: String,
}

/// A queued `ASSIGN_HANDSET`.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Id (sent to GURU3 as the message id).
    pub id: i64,
    /// IPEI.
    pub ipei: String,
    /// UAK (key material: not in `Debug`).
    pub uak: String,
    /// Extension.
    pub extension: String,
}

impl std::fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("ipei", &self.ipei)
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Forgets a promised bind that cannot be carried out (its extension is gone, or the
    /// OMM refused the move for good); no `ASSIGN_HANDSET` is queued.
    pub async fn drop_bind(&self, id: i64) -> Result<()> {
        let mut guard = self.session.lock().await?;
        guard.write(sql::H_BIND_DONE, &[&id]).await?;
        Ok(())
    }

    /// Deletes `ASSIGN_HANDSET`s GURU3 answered more than `max_age` ago (at most 10,000 per
    /// call). Returns how many.
    pub async fn prune_outbox(&self, max_age: std::time::Duration) -> Result<u64> {
        let mut guard = self.session.lock().await?;
        guard
            .write(sql::H_OUTBOX_PRUNE, &[&max_age.as_secs_f64()])
            .await
    }

    /// Records a promised bind; returns its id. A handset has one: recording another for
    /// the same handset returns the first's id, retargeted to the new extension.
    pub async fn add_bind(&self, ppn: i32, temp: &Extension, extension: &Extension) -> Result<i64> {
        let mut guard = self.session.lock().await?;
        let rows = guard
            .write_query(
                sql::H_BIND_ADD,
                &[&ppn, &temp.as_str(), &extension.as_str()],
            )
            .await?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| {
            asterisk_realtime::Error::Schema("recording a bind returned no id".into())
        })
    }

    /// Binds not yet carried out, oldest first.
    pub async fn pending_binds(&self) -> Result<Vec<HandsetBind>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::H_BINDS, &[])
            .await?
            .iter()
            .map(|r| HandsetBind {
                id: r.get(0),
                ppn: r.get(1),
                temp: r.get(2),
                extension: r.get(3),
            })
            .collect())
    }

    /// Marks a bind done and queues its `ASSIGN_HANDSET`, in one transaction (a second call
    /// for the same bind queues nothing).
    pub async fn finish_bind(
        &self,
        id: i64,
        ipei: &str,
        uak: &str,
        extension: &Extension,
    ) -> Result<()> {
        let mut guard = self.session.lock().await?;
        let tx = guard.transaction().await?;
        if tx.execute(sql::H_BIND_DONE, &[&id]).await? > 0 {
            tx.execute(
                sql::H_OUTBOX_ADD,
                &[&no_nul(ipei), &no_nul(uak), &extension.as_str()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many `ASSIGN_HANDSET`s wait in the outbox.
    pub async fn outbox_depth(&self) -> Result<i64> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query_one(sql::H_OUTBOX_DEPTH, &[])
            .await?
            .get(0))
    }

    /// Queued `ASSIGN_HANDSET`s, oldest first, at most `limit`.
    pub async fn pending_assigns(&self, limit: i64) -> Result<Vec<OutboxEntry>> {
        let guard = self.session.lock().await?;
        Ok(guard
            .client()
            .query(sql::H_OUTBOX, &[&limit])
            .await?
            .iter()
            .map(|r| OutboxEntry {
                id: r.get(0),
                ipei: r.get(1),
                uak: r.get(2),
                extension: r.get(3),
            })
            .collect())
    }

    /// Records GURU3's verdict on an `ASSIGN_HANDSET` (`ok` or a NAK with its text).
    pub async fn finish_assign(&self, id: i64, ok: bool, text: &str) -> Result<()> {
        let mut guard = self.session.lock().await?;
        let status = if ok { "ok" } else { "nak" };
        guard
            .write(sql::H_OUTBOX_DONE, &[&id, &status, &no_nul(text)])
            .await?;
        Ok(())
    }
}

//! The resync markers: SYNC_STARTED opens an epoch, SYNC_ENDED sweeps what it did not see.

use super::*;

impl Broker {
    pub(super) async fn sync_marker(&mut self, msg: &Incoming) -> Verdict {
        match msg.command {
            Ok(Command::SyncStarted) => match self.ports.sip.begin_sync().await {
                Ok(epoch) => {
                    tracing::info!(epoch, "resync started");
                    self.sync = Some(epoch);
                    Verdict::Done
                }
                Err(e) => Verdict::of(e),
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
                    Err(e) => Verdict::of(e),
                }
            }
            _ => Verdict::Dead("not a sync marker".into(), None),
        }
    }

    /// SYNC_ENDED: sweep the OMM, the PBX and the mirror of what the window did not mention.
    pub(super) async fn sweep(&mut self, epoch: i64) -> PortResult<()> {
        let t0 = self.ports.clock.now();
        let owned = self.ports.dect.list_owned().await?;
        let t_list = self.ports.clock.now();
        let total = owned.len();
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
        // the guard compares with what would be deleted from: the owned OMM users
        if stale_dect.len() > 1
            && stale_dect.len() as f64 > self.config.max_sweep_fraction * total.max(1) as f64
        {
            return Err(PortError::rejected(format!(
                "resync would delete {} of {total} owned OMM users: refused",
                stale_dect.len()
            )));
        }
        // Every step is idempotent and the resync stays open until the last one: a failure
        // or a crash anywhere in here leaves it open, and the SYNC_ENDED that comes again
        // (retried, or redelivered after a restart) sweeps again from where it stopped.
        let summary = self.ports.sip.sweep_sync(epoch).await?;
        crate::crash::point(crate::crash::SWEEP_PBX);
        for n in &stale_dect {
            self.ports.dect.delete_user(n.clone()).await?;
            crate::crash::point(crate::crash::SWEEP_OMM_DELETE);
        }
        // the mirror changes only once its new state is committed
        let mut ops = Vec::new();
        for (n, e) in &self.mirror {
            let drop_ext = e.extension.is_some() && e.seen_epoch < epoch;
            let drop_members = !e.members.is_empty() && e.members_epoch < epoch;
            if !drop_ext && !drop_members {
                continue;
            }
            let mut e = e.clone();
            if drop_ext {
                e.extension = None;
            }
            if drop_members {
                e.members.clear();
            }
            ops.push(if e.extension.is_none() && e.members.is_empty() {
                StateOp::Remove(n.clone())
            } else {
                StateOp::Put(n.clone(), e)
            });
        }
        self.ports.state.commit(ops.clone()).await?;
        crate::crash::point(crate::crash::SWEEP_STATE);
        let mut touched = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                StateOp::Remove(n) => {
                    self.mirror.remove(&n);
                    touched.push(n);
                }
                StateOp::Put(n, e) => {
                    self.mirror.insert(n.clone(), e);
                    touched.push(n);
                }
                _ => {}
            }
        }
        self.publish(&touched);
        self.ports.sip.finish_sync(epoch).await?;
        crate::crash::point(crate::crash::SWEEP_FINISHED);
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
}

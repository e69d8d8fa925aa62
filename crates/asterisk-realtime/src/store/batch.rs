//! One transaction per batch: runs of upserts and member lists go set-based, everything else
//! one change at a time under its own savepoint.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_postgres::{Client, Statement, Transaction};

use super::groups::short_tag;
use super::{Change, Member, Outcome, Store, UserSpec};
use crate::error::{Doing, Error, Result};
use crate::sql;
use crate::types::{Extension, SipPassword, build_callerid, sanitize_display_name};

macro_rules! statements {
    ($($field:ident = $sql:ident),* $(,)?) => {
        pub(super) struct Statements { $(pub(super) $field: Statement,)* }
        impl Statements {
            async fn prepare(c: &Client) -> Result<Self> {
                Ok(Self { $($field: c.prepare(sql::$sql).await?,)* })
            }
        }
    };
}

statements!(
    lock_timeout = SET_LOCK_TIMEOUT,
    lock_id = LOCK_ID,
    lock_ids = LOCK_IDS,
    u_foreigns = U_FOREIGNS,
    u_owner = U_OWNER,
    u_foreign = U_FOREIGN,
    u_aor = U_AOR,
    u_auth_set = U_AUTH_SET,
    u_auth_keep = U_AUTH_KEEP,
    u_endpoint = U_ENDPOINT,
    u_mark = U_MARK,
    p_password = P_PASSWORD,
    p_callerid = P_CALLERID,
    p_display = P_DISPLAY,
    d_endpoint = D_ENDPOINT,
    d_auth = D_AUTH,
    d_aor = D_AOR,
    d_mark = D_MARK,
    r_taken = R_TAKEN,
    r_endpoint = R_ENDPOINT,
    r_auth = R_AUTH,
    r_aor = R_AOR,
    r_mark = R_MARK,
    r_group = R_GROUP,
    r_member = R_MEMBER,
    r_forward = R_FORWARD,
    c_group = C_GROUP,
    c_not_group = C_NOT_GROUP,
    c_list_owner = C_LIST_OWNER,
    c_prune = C_PRUNE,
    c_merge = C_MERGE,
    c_drop_if_plain = C_DROP_IF_PLAIN,
    c_delete = C_DELETE,
    c_unmember = C_UNMEMBER,
    c_ancestors = C_ANCESTORS,
    c_refresh = C_REFRESH,
    ub_aor = UB_AOR,
    ub_auth_set = UB_AUTH_SET,
    ub_auth_keep = UB_AUTH_KEEP,
    ub_endpoint = UB_ENDPOINT,
    ub_mark = UB_MARK,
    ub_seen = UB_SEEN,
    ub_rows = UB_ROWS,
    cb_list_owner = CB_LIST_OWNER,
    cb_prune = CB_PRUNE,
    cb_merge = CB_MERGE,
    cb_drop_if_plain = CB_DROP_IF_PLAIN,
    cb_group = CB_GROUP,
);

impl Store {
    /// Applies `changes` in order in one transaction. A change that fails for a reason of its
    /// own (conflict, invalid input) is rolled back alone and reported in its slot; a database
    /// failure rolls back the whole batch and is returned as `Err`.
    pub async fn apply(&self, changes: &[Change]) -> Result<Vec<Result<Outcome>>> {
        let mut guard = self.inner.session.lock().await?;
        let cached = self
            .inner
            .stmts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|(generation, _)| *generation == guard.generation());
        let stmts = match cached {
            Some((_, s)) => s,
            None => {
                let s = Arc::new(
                    Statements::prepare(guard.client())
                        .await
                        .doing(|| "preparing hexidian's statements".into())?,
                );
                *self.inner.stmts.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((guard.generation(), Arc::clone(&s)));
                s
            }
        };
        let limit = self.inner.config.operation_timeout;
        match tokio::time::timeout(limit, self.apply_in(&mut guard, &stmts, changes)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        }
    }

    pub(super) async fn apply_in(
        &self,
        guard: &mut crate::Guard<'_>,
        st: &Statements,
        changes: &[Change],
    ) -> Result<Vec<Result<Outcome>>> {
        let mut tx = guard.transaction().await?;
        let lt = format!("{}ms", self.inner.config.lock_timeout.as_millis());
        tx.query_one(&st.lock_timeout, &[&lt]).await?;
        let mut out: Vec<Option<Result<Outcome>>> = changes.iter().map(|_| None).collect();
        let mut i = 0;
        while i < changes.len() {
            // runs of user upserts with distinct ids go through the set-based bulk path;
            // group upserts of other ids inside the run commute with them (they touch
            // other rows) and are applied right after it
            let mut users: Vec<(usize, &UserSpec)> = Vec::new();
            let mut groups: Vec<(usize, &Extension)> = Vec::new();
            // ids of the run so far (a run of a thousand must not compare each with each)
            let mut taken: HashSet<&str> = HashSet::new();
            let mut j = i;
            loop {
                match changes.get(j) {
                    Some(Change::UpsertUser(spec)) if taken.insert(spec.extension.as_str()) => {
                        users.push((j, spec));
                    }
                    Some(Change::UpsertGroup { extension, .. })
                        if !users.is_empty() && taken.insert(extension.as_str()) =>
                    {
                        groups.push((j, extension));
                    }
                    _ => break,
                }
                j += 1;
            }
            if users.len() > 1 {
                let specs: Vec<&UserSpec> = users.iter().map(|(_, s)| *s).collect();
                let results = self
                    .bulk_upsert(&tx, st, &specs)
                    .await
                    .doing(|| format!("writing {} users", specs.len()))?;
                for ((k, _), r) in users.iter().zip(results) {
                    out[*k] = Some(r);
                }
                if !groups.is_empty() {
                    let (mut ids, mut names, mut shorts) = (Vec::new(), Vec::new(), Vec::new());
                    for (k, _) in &groups {
                        if let Change::UpsertGroup {
                            extension,
                            name,
                            short_name,
                        } = &changes[*k]
                        {
                            ids.push(extension.as_str());
                            names.push(sanitize_display_name(name));
                            shorts.push(short_tag(short_name));
                        }
                        out[*k] = Some(Ok(Outcome::Done(true)));
                    }
                    // only groups whose name, tag or kind changed can route differently
                    let changed: Vec<String> = tx
                        .query(&st.cb_group, &[&ids, &names, &shorts])
                        .await
                        .doing(|| format!("writing {} groups", ids.len()))?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    if !changed.is_empty() {
                        let changed: Vec<&str> = changed.iter().map(String::as_str).collect();
                        self.refresh_ancestors(&tx, st, &changed)
                            .await
                            .doing(|| format!("routing {} groups", changed.len()))?;
                    }
                }
                i = j;
                continue;
            }
            // so do runs of member lists (a resync's third pass is all of them)
            let mut lists: Vec<(&Extension, &String, &Vec<Member>)> = Vec::new();
            let mut listed: HashSet<&str> = HashSet::new();
            while let Some(Change::SetMembers {
                extension,
                name,
                members,
            }) = changes.get(i + lists.len())
            {
                if !listed.insert(extension.as_str()) {
                    break;
                }
                lists.push((extension, name, members));
            }
            if lists.len() > 1 {
                self.bulk_members(&tx, st, &lists)
                    .await
                    .doing(|| format!("setting the members of {} groups", lists.len()))?;
                for slot in &mut out[i..i + lists.len()] {
                    *slot = Some(Ok(Outcome::Done(true)));
                }
                i += lists.len();
                continue;
            }
            out[i] = Some(self.savepointed(&mut tx, st, &changes[i]).await?);
            i += 1;
        }
        tx.commit().await?;
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Unavailable)))
            .collect())
    }

    /// One change under its own savepoint: a conflict or invalid input fails it alone.
    pub(super) async fn savepointed(
        &self,
        tx: &mut Transaction<'_>,
        st: &Statements,
        change: &Change,
    ) -> Result<Result<Outcome>> {
        let sp = tx.savepoint("change").await?;
        match self.one(&sp, st, change).await.doing(|| change.describe()) {
            Ok(o) => {
                sp.commit().await?;
                Ok(Ok(o))
            }
            Err(e @ (Error::Conflict { .. } | Error::Invalid(_) | Error::Config(_))) => {
                sp.rollback().await?;
                Ok(Err(e))
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn single(&self, change: Change) -> Result<Outcome> {
        self.apply(std::slice::from_ref(&change))
            .await?
            .pop()
            .unwrap_or(Err(Error::Unavailable))
    }

    /// Creates or updates a user (one transaction: AOR → auth → endpoint → ownership mark).
    pub async fn upsert_user(&self, spec: UserSpec) -> Result<Outcome> {
        self.single(Change::UpsertUser(spec)).await
    }

    /// Deletes a user hexidian owns; `Ok(Done(false))` if there was none.
    pub async fn delete_user(&self, extension: Extension) -> Result<Outcome> {
        self.single(Change::DeleteUser(extension)).await
    }

    /// Renames a user (and call-group references) atomically.
    pub async fn rename(&self, old: Extension, new: Extension) -> Result<Outcome> {
        self.single(Change::Rename { old, new }).await
    }

    /// Changes an owned user's password.
    pub async fn set_password(
        &self,
        extension: Extension,
        password: SipPassword,
    ) -> Result<Outcome> {
        self.single(Change::SetPassword(extension, password)).await
    }

    /// Changes an owned user's display name and caller ID.
    pub async fn set_display_name(&self, extension: Extension, name: String) -> Result<Outcome> {
        self.single(Change::SetDisplayName(extension, name)).await
    }

    /// One owned user.
    pub(super) async fn one(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        change: &Change,
    ) -> Result<Outcome> {
        match change {
            Change::UpsertUser(spec) => self.upsert_in(tx, st, spec).await,
            Change::DeleteUser(ext) => self.delete_in(tx, st, ext).await.map(Outcome::Done),
            Change::Rename { old, new } => {
                self.rename_in(tx, st, old, new).await.map(Outcome::Done)
            }
            Change::SetPassword(ext, pw) => {
                tx.query_one(&st.lock_id, &[&ext.as_str()]).await?;
                Ok(Outcome::Done(
                    tx.execute(&st.p_password, &[&ext.as_str(), &pw.expose()])
                        .await?
                        > 0,
                ))
            }
            Change::SetDisplayName(ext, name) => {
                tx.query_one(&st.lock_id, &[&ext.as_str()]).await?;
                let display = sanitize_display_name(name);
                let n = tx
                    .execute(&st.p_callerid, &[&ext.as_str(), &build_callerid(ext, name)])
                    .await?;
                tx.execute(&st.p_display, &[&ext.as_str(), &display])
                    .await?;
                Ok(Outcome::Done(n > 0))
            }
            Change::UpsertGroup {
                extension,
                name,
                short_name,
            } => {
                let short = short_tag(short_name);
                tx.execute(
                    &st.c_group,
                    &[&extension.as_str(), &sanitize_display_name(name), &short],
                )
                .await?;
                self.refresh_ancestors(tx, st, &[extension.as_str()])
                    .await?;
                Ok(Outcome::Done(true))
            }
            Change::SetMembers {
                extension,
                name,
                members,
            } => {
                let mut list: Vec<&Member> = Vec::new();
                for m in members.iter().rev() {
                    if m.extension != *extension && !list.iter().any(|x| x.extension == m.extension)
                    {
                        list.push(m);
                    }
                }
                list.reverse();
                let numbers: Vec<&str> = list.iter().map(|m| m.extension.as_str()).collect();
                let active: Vec<bool> = list.iter().map(|m| m.active).collect();
                let delays: Vec<i32> = list.iter().map(|m| m.delay_s.clamp(0, 600)).collect();
                let n = extension.as_str();
                tx.execute(&st.c_list_owner, &[&n, &sanitize_display_name(name)])
                    .await?;
                tx.execute(&st.c_prune, &[&n, &numbers]).await?;
                tx.execute(&st.c_merge, &[&n, &numbers, &active, &delays])
                    .await?;
                tx.execute(&st.c_drop_if_plain, &[&n]).await?;
                self.refresh_ancestors(tx, st, &[n]).await?;
                Ok(Outcome::Done(true))
            }
            Change::NotGroup { extension, name } => {
                let n = extension.as_str();
                let changed = tx
                    .execute(&st.c_not_group, &[&n, &sanitize_display_name(name)])
                    .await?
                    > 0;
                tx.execute(&st.c_drop_if_plain, &[&n]).await?;
                self.refresh_ancestors(tx, st, &[n]).await?;
                Ok(Outcome::Done(changed))
            }
            Change::DeleteExtension(ext) => {
                let n = ext.as_str();
                let ancestors = self.ancestors(tx, st, &[n]).await?;
                tx.query(&st.c_unmember, &[&n]).await?;
                let group = tx.execute(&st.c_delete, &[&n]).await? > 0;
                let rest: Vec<&str> = ancestors
                    .iter()
                    .map(String::as_str)
                    .filter(|a| *a != n)
                    .collect();
                if !rest.is_empty() {
                    tx.execute(&st.c_refresh, &[&rest]).await?;
                }
                let user = self.delete_in(tx, st, ext).await?;
                Ok(Outcome::Done(group || user || !ancestors.is_empty()))
            }
        }
    }
}

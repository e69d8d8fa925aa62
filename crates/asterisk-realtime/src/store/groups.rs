//! Call groups: their flattened routes, member lists in bulk and the refresh of every group
//! above a changed one.

use tokio_postgres::Transaction;

use super::batch::Statements;
use super::{Member, Route, Store};
use crate::error::Result;
use crate::sql;
use crate::types::{Extension, sanitize_display_name};

impl Store {
    /// Call-group routes (all, or one).
    pub async fn routes(&self, id: Option<&Extension>) -> Result<Vec<Route>> {
        let guard = self.inner.session.lock().await?;
        let rows = guard
            .client()
            .query(sql::C_ROUTE, &[&id.map(Extension::as_str)])
            .await?;
        Ok(rows
            .iter()
            .map(|r| Route {
                id: r.get(0),
                name: r.get(1),
                short_name: r.get(2),
                dialstring: r.get(3),
            })
            .collect())
    }

    /// Members of a call group `(member, active, delay)`; `None` if there is no such group.
    pub async fn members(
        &self,
        id: &Extension,
    ) -> Result<Option<(bool, Vec<(String, bool, i32)>)>> {
        let guard = self.inner.session.lock().await?;
        let rows = guard
            .client()
            .query(sql::C_MEMBERS, &[&id.as_str()])
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let is_group: bool = first.get(3);
        let members = rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, bool>(5),
                    r.get::<_, i32>(6),
                ))
            })
            .collect();
        Ok(Some((is_group, members)))
    }

    /// Rebuilds every call-group route (startup, after a resync).
    pub async fn refresh_all_routes(&self) -> Result<u64> {
        let mut guard = self.inner.session.lock().await?;
        guard.write(sql::C_REFRESH, &[&None::<Vec<String>>]).await
    }

    pub(super) async fn ancestors(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        of: &[&str],
    ) -> Result<Vec<String>> {
        Ok(tx
            .query(&st.c_ancestors, &[&of])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(super) async fn refresh_ancestors(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        of: &[&str],
    ) -> Result<()> {
        let a = self.ancestors(tx, st, of).await?;
        if !a.is_empty() {
            tx.execute(&st.c_refresh, &[&a]).await?;
        }
        Ok(())
    }

    /// Replaces many member lists with four set-based statements and one route refresh.
    pub(super) async fn bulk_members(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        lists: &[(&Extension, &String, &Vec<Member>)],
    ) -> Result<()> {
        let groups: Vec<&str> = lists.iter().map(|l| l.0.as_str()).collect();
        let mut sorted = groups.clone();
        sorted.sort_unstable();
        tx.query(&st.lock_ids, &[&sorted]).await?;
        let names: Vec<String> = lists.iter().map(|l| sanitize_display_name(l.1)).collect();
        let (mut g, mut m, mut a, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (ext, _, members) in lists {
            // duplicates keep the last, the group itself is dropped (as in the single path)
            let mut list: Vec<&Member> = Vec::new();
            for mem in members.iter().rev() {
                if mem.extension != **ext && !list.iter().any(|x| x.extension == mem.extension) {
                    list.push(mem);
                }
            }
            for mem in list.into_iter().rev() {
                g.push(ext.as_str());
                m.push(mem.extension.as_str());
                a.push(mem.active);
                d.push(mem.delay_s.clamp(0, 600));
            }
        }
        // the groups whose route may change: a new owner or name, a member gone, added or
        // changed, a plain list owner dropped; an unchanged list (a resync) refreshes nothing
        let mut rows = tx.query(&st.cb_list_owner, &[&groups, &names]).await?;
        rows.extend(tx.query(&st.cb_prune, &[&groups, &g, &m]).await?);
        rows.extend(tx.query(&st.cb_merge, &[&g, &m, &a, &d]).await?);
        rows.extend(tx.query(&st.cb_drop_if_plain, &[&groups]).await?);
        let changed: std::collections::BTreeSet<String> =
            rows.iter().map(|r| r.get::<_, String>(0)).collect();
        if changed.is_empty() {
            return Ok(());
        }
        let changed: Vec<&str> = changed.iter().map(String::as_str).collect();
        self.refresh_ancestors(tx, st, &changed).await
    }
}

/// A group's tag: up to three ASCII letters or digits.
pub(super) fn short_tag(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect()
}

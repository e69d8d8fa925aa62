//! Users: listing, and the upsert, delete and rename paths inside a batch's transaction.

use tokio_postgres::Transaction;

use super::batch::Statements;
use super::{ManagedUser, Outcome, Store, UserSpec};
use crate::error::{Doing, Error, Result};
use crate::sql::{self, Label};
use crate::types::{
    EndpointTemplate, Extension, Kind, Routing, SipPassword, build_callerid, sanitize_display_name,
};

impl Store {
    /// One owned user.
    pub async fn user(&self, extension: &Extension) -> Result<Option<ManagedUser>> {
        Ok(self.list(Some(extension.as_str())).await?.pop())
    }

    /// Every owned user, with drift indicators.
    pub async fn list_managed(&self) -> Result<Vec<ManagedUser>> {
        self.list(None).await
    }

    async fn list(&self, id: Option<&str>) -> Result<Vec<ManagedUser>> {
        let guard = self.inner.session.lock().await?;
        let rows = guard.client().query(sql::L_USER, &[&id]).await?;
        Ok(rows
            .iter()
            .map(|r| ManagedUser {
                extension: r.get(0),
                kind: Kind::from_db(r.get(1)),
                display_name: r.get(2),
                seen_epoch: r.get(3),
                has_endpoint: r.get(4),
                has_aor: r.get(5),
                has_auth: r.get(6),
                context: r.get(7),
                callerid: r.get(8),
                links_ok: r.get(9),
                password: r.get::<_, Option<String>>(10).and_then(|p| p.parse().ok()),
            })
            .collect())
    }

    /// Endpoints in the given contexts that hexidian does not own: `(id, context)`.
    pub async fn list_foreign(&self, contexts: &[&str]) -> Result<Vec<(String, String)>> {
        let guard = self.inner.session.lock().await?;
        let rows = guard.client().query(sql::L_FOREIGN, &[&contexts]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Upserts many users with a handful of set-based checks and four set-based writes for
    /// the whole run (rows as one JSON parameter each). Per-user failures (conflict, invalid
    /// input) exclude that user before anything is written.
    pub(super) async fn bulk_upsert(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        specs: &[&UserSpec],
    ) -> Result<Vec<Result<Outcome>>> {
        use std::collections::HashMap;

        struct Prepared<'a> {
            index: usize,
            id: &'a str,
            t: &'a EndpointTemplate,
            qualify: i32,
            password: String,
            keep: bool,
            context: &'a str,
            callerid: String,
            display: String,
            kind: &'static str,
            routing: &'a Routing,
        }

        let cfg = &self.inner.config;
        let mut results: Vec<Option<Result<Outcome>>> = specs.iter().map(|_| None).collect();
        for (i, spec) in specs.iter().enumerate() {
            let id = spec.extension.as_str();
            if id.len() > self.inner.schema.max_id_len() {
                results[i] = Some(Err(crate::error::InvalidInput::new(
                    "extension",
                    id,
                    "longer than this schema's ids",
                )
                .into()));
            } else if spec.kind == Kind::Sip && spec.password.is_none() {
                results[i] = Some(Err(Error::Config(format!(
                    "sip user {id} needs a password"
                ))));
            }
        }
        let ids: Vec<&str> = specs.iter().map(|s| s.extension.as_str()).collect();
        // one global lock order, so concurrent batches cannot deadlock
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        tx.query(&st.lock_ids, &[&sorted]).await?;
        // what the rows hold now (the advisory locks keep other writers of these ids out):
        // who owns them, and what a write would change; an id with more than one row (a
        // schema without unique ids) is written as if it had changed
        let rows = tx.query(&st.ub_rows, &[&ids]).await?;
        let mut owners: HashMap<&str, Option<Kind>> = HashMap::new();
        let mut current: HashMap<&str, Option<Current<'_>>> = HashMap::new();
        for r in &rows {
            let id: &str = r.get(0);
            if let Some(kind) = r.get::<_, Option<&str>>(1) {
                owners.insert(id, Kind::from_db(kind));
            }
            current
                .entry(id)
                .and_modify(|c| *c = None)
                .or_insert(Some(Current(r)));
        }
        let unowned: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !owners.contains_key(*id))
            .collect();
        if !unowned.is_empty() {
            for row in tx.query(&st.u_foreigns, &[&unowned]).await? {
                let (id, table): (String, Option<String>) = (row.get(0), row.get(1));
                let Some(table) = table else { continue };
                if cfg.adopt_foreign_rows {
                    tracing::warn!(extension = %id, table, "adopting rows hexidian did not create");
                    continue;
                }
                let table = match table.as_str() {
                    "ps_endpoints" => "ps_endpoints",
                    "ps_aors" => "ps_aors",
                    _ => "ps_auths",
                };
                if let Some(i) = ids.iter().position(|x| *x == id) {
                    results[i].get_or_insert(Err(Error::Conflict {
                        extension: id,
                        table,
                    }));
                }
            }
        }
        let mut work = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let previous = owners.get(spec.extension.as_str()).copied().flatten();
            let (password, keep) = match &spec.password {
                Some(pw) => (pw.expose().to_owned(), false),
                None => (
                    SipPassword::generate()?.expose().to_owned(),
                    previous != Some(Kind::Sip),
                ),
            };
            let t = cfg.template_for(spec);
            work.push(Prepared {
                index: i,
                id: spec.extension.as_str(),
                t,
                qualify: if spec.kind == Kind::Sip {
                    t.qualify_sip
                } else {
                    t.qualify_dect
                },
                password,
                keep,
                context: if spec.kind == Kind::Temp {
                    &t.temp_context
                } else {
                    &t.context
                },
                callerid: build_callerid(&spec.extension, &spec.name),
                display: sanitize_display_name(&spec.name),
                kind: spec.kind.as_str(),
                routing: &spec.routing,
            });
        }
        // a resync re-sends every user: what the rows already hold is compared here and not
        // written again (the statements below see only the rows that differ); enum labels
        // come from fixed sets, every column is compared as PostgreSQL renders it as text
        let yes_no = |b: bool| Label::yes_no(b).0;
        let mut stored: HashMap<String, String> = HashMap::new();
        let (mut aors, mut auth_set, mut auth_keep, mut endpoints, mut marks) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for w in &work {
            let t = w.t;
            let r = w.routing;
            let (forward_mode, forward_target, forward_delay_s) = r.forward_columns();
            let mark = MarkRow {
                id: w.id,
                kind: w.kind,
                display_name: &w.display,
                forward_mode,
                forward_target,
                forward_delay_s,
                trunk: r.trunk,
                call_waiting: r.call_waiting,
                allow_dialout: r.allow_dialout,
                display: r.display.label(),
            };
            let endpoint = EndpointRow {
                id: w.id,
                context: w.context,
                allow: &t.allow,
                transport: t.transport.as_deref(),
                direct_media: yes_no(t.direct_media),
                rtp_symmetric: yes_no(t.rtp_symmetric),
                force_rport: yes_no(t.force_rport),
                rewrite_contact: yes_no(t.rewrite_contact),
                dtmf_mode: t.dtmf_mode.label(),
                callerid: &w.callerid,
            };
            let aor = AorRow {
                id: w.id,
                max_contacts: t.max_contacts,
                remove_existing: yes_no(t.remove_existing),
                qualify_frequency: w.qualify,
            };
            let auth = AuthRow {
                id: w.id,
                auth_type: "userpass",
                password: &w.password,
            };
            let now = current.get(w.id).and_then(Option::as_ref);
            if !now.is_some_and(|c| c.mark_is(&mark)) {
                marks.push(mark);
            }
            if !now.is_some_and(|c| c.endpoint_is(&endpoint)) {
                endpoints.push(endpoint);
            }
            if !now.is_some_and(|c| c.aor_is(&aor)) {
                aors.push(aor);
            }
            match now.and_then(|c| c.auth_holds(&auth, w.keep)) {
                Some(pw) => {
                    stored.insert(w.id.to_owned(), pw.to_owned());
                }
                None if w.keep => auth_keep.push(auth),
                None => auth_set.push(auth),
            }
        }
        let seen: Vec<&str> = work.iter().map(|w| w.id).collect();
        let (marks, aors, endpoints) = (json(&marks)?, json(&aors)?, json(&endpoints)?);
        let (auth_set, auth_keep) = (json(&auth_set)?, json(&auth_keep)?);
        let ((_, set_rows, keep_rows, _, _), _) = futures_util::future::try_join(
            futures_util::future::try_join5(
                rows_of(tx, &st.ub_aor, &aors),
                rows_of(tx, &st.ub_auth_set, &auth_set),
                rows_of(tx, &st.ub_auth_keep, &auth_keep),
                rows_of(tx, &st.ub_endpoint, &endpoints),
                rows_of(tx, &st.ub_mark, &marks),
            ),
            tx.execute(&st.ub_seen, &[&seen]),
        )
        .await?;
        stored.extend(
            set_rows
                .iter()
                .chain(&keep_rows)
                .map(|r| (r.get(0), r.get(1))),
        );
        for w in &work {
            let pw = stored
                .get(w.id)
                .ok_or_else(|| Error::Schema(format!("no ps_auths row came back for {}", w.id)))?;
            let password = pw.parse().map_err(|_| {
                Error::Schema(format!("stored password of {} is not alphanumeric", w.id))
            })?;
            results[w.index] = Some(Ok(Outcome::User {
                password,
                created: !owners.contains_key(w.id),
            }));
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Unavailable)))
            .collect())
    }

    pub(super) async fn upsert_in(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        spec: &UserSpec,
    ) -> Result<Outcome> {
        let cfg = &self.inner.config;
        let t = cfg.template_for(spec);
        let id = spec.extension.as_str();
        if id.len() > self.inner.schema.max_id_len() {
            return Err(crate::error::InvalidInput::new(
                "extension",
                id,
                "longer than this schema's ids",
            )
            .into());
        }
        tx.query_one(&st.lock_id, &[&id]).await?;
        let owner = tx.query_opt(&st.u_owner, &[&id]).await?;
        let previous = owner.as_ref().and_then(|r| Kind::from_db(r.get(0)));
        if owner.is_none() {
            let taken: Option<String> = tx.query_one(&st.u_foreign, &[&id]).await?.get(0);
            if let Some(table) = taken {
                if !cfg.adopt_foreign_rows {
                    let table = match table.as_str() {
                        "ps_endpoints" => "ps_endpoints",
                        "ps_aors" => "ps_aors",
                        _ => "ps_auths",
                    };
                    return Err(Error::Conflict {
                        extension: id.to_owned(),
                        table,
                    });
                }
                tracing::warn!(
                    extension = id,
                    table,
                    "adopting rows hexidian did not create"
                );
            }
        }
        let qualify = if spec.kind == Kind::Sip {
            t.qualify_sip
        } else {
            t.qualify_dect
        };
        tx.execute(
            &st.u_aor,
            &[
                &id,
                &t.max_contacts,
                &Label::yes_no(t.remove_existing),
                &qualify,
            ],
        )
        .await?;
        let userpass = Label("userpass");
        let stored: String = match (spec.kind, &spec.password) {
            (Kind::Sip, None) => {
                return Err(Error::Config(format!("sip user {id} needs a password")));
            }
            (_, Some(pw)) => tx
                .query_one(&st.u_auth_set, &[&id, &pw.expose(), &userpass])
                .await?
                .get(0),
            (_, None) if previous == Some(Kind::Sip) => {
                // the old SIP password was known to the user: never reuse it for DECT
                let fresh = SipPassword::generate()?;
                tx.query_one(&st.u_auth_set, &[&id, &fresh.expose(), &userpass])
                    .await?
                    .get(0)
            }
            (_, None) => {
                let fresh = SipPassword::generate()?;
                tx.query_one(&st.u_auth_keep, &[&id, &fresh.expose(), &userpass])
                    .await?
                    .get(0)
            }
        };
        let context = if spec.kind == Kind::Temp {
            &t.temp_context
        } else {
            &t.context
        };
        let callerid = build_callerid(&spec.extension, &spec.name);
        tx.execute(
            &st.u_endpoint,
            &[
                &id,
                context,
                &t.allow,
                &t.transport,
                &Label::yes_no(t.direct_media),
                &Label::yes_no(t.rtp_symmetric),
                &Label::yes_no(t.force_rport),
                &Label::yes_no(t.rewrite_contact),
                &Label(t.dtmf_mode.label()),
                &callerid,
            ],
        )
        .await?;
        let r = &spec.routing;
        let (mode, target, delay) = r.forward_columns();
        tx.execute(
            &st.u_mark,
            &[
                &id,
                &spec.kind.as_str(),
                &sanitize_display_name(&spec.name),
                &mode,
                &target,
                &delay,
                &r.trunk,
                &r.call_waiting,
                &r.allow_dialout,
                &r.display.label(),
            ],
        )
        .await?;
        let password = stored
            .parse()
            .map_err(|_| Error::Schema(format!("stored password of {id} is not alphanumeric")))?;
        Ok(Outcome::User {
            password,
            created: owner.is_none(),
        })
    }

    pub(super) async fn delete_in(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        ext: &Extension,
    ) -> Result<bool> {
        let id = ext.as_str();
        tx.query_one(&st.lock_id, &[&id]).await?;
        if tx.query_opt(&st.u_owner, &[&id]).await?.is_none() {
            return Ok(false);
        }
        tx.execute(&st.d_endpoint, &[&id]).await?;
        tx.execute(&st.d_auth, &[&id]).await?;
        tx.execute(&st.d_aor, &[&id]).await?;
        tx.execute(&st.d_mark, &[&id]).await?;
        if self.inner.has_contacts {
            tx.execute(sql::D_CONTACTS, &[&id, &format!("{id}^3B@%")])
                .await
                .doing(|| format!("removing the contacts of {id}"))?;
        }
        Ok(true)
    }

    pub(super) async fn rename_in(
        &self,
        tx: &Transaction<'_>,
        st: &Statements,
        old: &Extension,
        new: &Extension,
    ) -> Result<bool> {
        let (o, n) = (old.as_str(), new.as_str());
        if o == n {
            return Ok(false);
        }
        if n.len() > self.inner.schema.max_id_len() {
            return Err(crate::error::InvalidInput::new(
                "extension",
                n,
                "longer than this schema's ids",
            )
            .into());
        }
        // lock both ids in a fixed order so two renames cannot deadlock
        for id in if o < n { [o, n] } else { [n, o] } {
            tx.query_one(&st.lock_id, &[&id]).await?;
        }
        let mut renamed = false;
        if let Some(owner) = tx.query_opt(&st.u_owner, &[&o]).await? {
            let display: String = owner.get(1);
            let taken = tx.query_one(&st.r_taken, &[&n]).await?;
            let (managed, rows): (bool, bool) = (taken.get(0), taken.get(1));
            if managed {
                tracing::warn!(
                    extension = n,
                    "rename target already provisioned by hexidian; replacing the stale user"
                );
                self.delete_in(tx, st, new).await?;
            } else if rows {
                return Err(Error::Conflict {
                    extension: n.to_owned(),
                    table: "ps_endpoints",
                });
            }
            tx.execute(&st.r_endpoint, &[&o, &n, &build_callerid(new, &display)])
                .await?;
            tx.execute(&st.r_auth, &[&o, &n]).await?;
            tx.execute(&st.r_aor, &[&o, &n]).await?;
            tx.execute(&st.r_mark, &[&o, &n]).await?;
            if self.inner.has_contacts {
                tx.execute(sql::D_CONTACTS, &[&o, &format!("{o}^3B@%")])
                    .await
                    .doing(|| format!("removing the contacts of {o}"))?;
            }
            renamed = true;
        }
        let g = tx.execute(&st.r_group, &[&o, &n]).await?;
        let m = tx.execute(&st.r_member, &[&o, &n]).await?;
        let f = tx.execute(&st.r_forward, &[&o, &n]).await?;
        self.refresh_ancestors(tx, st, &[n]).await?;
        Ok(renamed || g > 0 || m > 0 || f > 0)
    }
}

/// Rows of the set-based upserts, as `jsonb_populate_recordset` reads them (field = column).
#[derive(serde::Serialize)]
struct AorRow<'a> {
    id: &'a str,
    max_contacts: i32,
    remove_existing: &'static str,
    qualify_frequency: i32,
}

#[derive(serde::Serialize)]
struct AuthRow<'a> {
    id: &'a str,
    auth_type: &'static str,
    password: &'a str,
}

#[derive(serde::Serialize)]
struct EndpointRow<'a> {
    id: &'a str,
    context: &'a str,
    allow: &'a str,
    transport: Option<&'a str>,
    direct_media: &'static str,
    rtp_symmetric: &'static str,
    force_rport: &'static str,
    rewrite_contact: &'static str,
    dtmf_mode: &'static str,
    callerid: &'a str,
}

#[derive(serde::Serialize)]
struct MarkRow<'a> {
    id: &'a str,
    kind: &'static str,
    display_name: &'a str,
    forward_mode: &'static str,
    forward_target: &'a str,
    forward_delay_s: i32,
    trunk: bool,
    call_waiting: bool,
    allow_dialout: bool,
    display: &'static str,
}

/// Runs a set-based statement over a JSON array of rows; an empty array is not sent.
async fn rows_of(
    tx: &Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    rows: &str,
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    if rows == "[]" {
        return Ok(Vec::new());
    }
    tx.query(stmt, &[&rows]).await
}

/// One JSON array of rows.
fn json<T: serde::Serialize>(rows: &[T]) -> Result<String> {
    serde_json::to_string(rows).map_err(|e| Error::Schema(format!("encoding rows: {e}")))
}

/// The columns of one id's rows as PostgreSQL renders them as text (`None`: NULL), read by
/// [`sql::UB_ROWS`] and compared where they lie in the row: ownership row 1–9, endpoint
/// (presence 10, columns 11–22), auth (23, 24–26), AOR (27, 28–30).
struct Current<'r>(&'r tokio_postgres::Row);

impl Current<'_> {
    fn col(&self, i: usize) -> Option<&str> {
        self.0.get(i)
    }

    /// Columns `from..from + want.len()` equal `want`.
    fn is<'a>(&self, from: usize, want: impl IntoIterator<Item = Option<&'a str>>) -> bool {
        want.into_iter()
            .enumerate()
            .all(|(i, w)| self.col(from + i) == w)
    }

    fn present(&self, i: usize) -> bool {
        self.0.get(i)
    }

    fn mark_is(&self, m: &MarkRow<'_>) -> bool {
        let (delay, trunk, waiting, dialout) = (
            m.forward_delay_s.to_string(),
            m.trunk.to_string(),
            m.call_waiting.to_string(),
            m.allow_dialout.to_string(),
        );
        self.is(
            1,
            [
                Some(m.kind),
                Some(m.display_name),
                Some(m.forward_mode),
                Some(m.forward_target),
                Some(delay.as_str()),
                Some(trunk.as_str()),
                Some(waiting.as_str()),
                Some(dialout.as_str()),
                Some(m.display),
            ],
        )
    }

    fn endpoint_is(&self, e: &EndpointRow<'_>) -> bool {
        self.present(10)
            && self.is(
                11,
                [
                    Some(e.id),
                    Some(e.id),
                    Some(e.context),
                    Some("all"),
                    Some(e.allow),
                    e.transport,
                    Some(e.direct_media),
                    Some(e.rtp_symmetric),
                    Some(e.force_rport),
                    Some(e.rewrite_contact),
                    Some(e.dtmf_mode),
                    Some(e.callerid),
                ],
            )
    }

    fn aor_is(&self, a: &AorRow<'_>) -> bool {
        let (max, qualify) = (a.max_contacts.to_string(), a.qualify_frequency.to_string());
        self.present(27)
            && self.is(
                28,
                [
                    Some(max.as_str()),
                    Some(a.remove_existing),
                    Some(qualify.as_str()),
                ],
            )
    }

    /// The stored password if the auth row already holds what `a` would write: the same
    /// password, or with `keep` any non-empty one.
    fn auth_holds(&self, a: &AuthRow<'_>, keep: bool) -> Option<&str> {
        if !self.present(23) {
            return None;
        }
        let password = self.col(26)?;
        let holds = self.is(24, [Some(a.auth_type), Some(a.id)])
            && if keep {
                !password.is_empty()
            } else {
                password == a.password
            };
        holds.then_some(password)
    }
}

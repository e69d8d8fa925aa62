//! The store: one connection, transactions, operations, reconnects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, oneshot};
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use crate::error::{Error, Result};
use crate::migrations;
use crate::sql::{self, Label};
use crate::types::{
    EndpointTemplate, Extension, Kind, Routing, Schema, SipPassword, build_callerid,
    sanitize_display_name,
};

/// Store settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) template: EndpointTemplate,
    pub(crate) premium_template: Option<EndpointTemplate>,
    pub(crate) lock_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_sweep_fraction: f64,
    pub(crate) adopt_foreign_rows: bool,
    pub(crate) schema: Option<Schema>,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) migrate: bool,
    pub(crate) routing_reader: Option<String>,
}

impl Config {
    /// Settings from a connection string (`postgresql://…` URL or `host=… user=…` form).
    pub fn new(conn: &str) -> Result<Self> {
        let pg: tokio_postgres::Config = conn
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Config(e.to_string()))?;
        Ok(Self::from_pg(pg))
    }

    /// Settings from a ready `tokio_postgres::Config`. TCP connections get keepalives
    /// (idle 30 s, then every 10 s, 3 probes) and a 30 s TCP user timeout, so that a peer that
    /// vanished without closing is noticed in well under a minute.
    pub fn from_pg(mut pg: tokio_postgres::Config) -> Self {
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30));
        Self {
            pg,
            template: EndpointTemplate::default(),
            premium_template: None,
            lock_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            max_sweep_fraction: 0.3,
            adopt_foreign_rows: false,
            schema: None,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(60),
            migrate: true,
            routing_reader: None,
        }
    }

    /// Endpoint settings.
    pub fn template(mut self, t: EndpointTemplate) -> Self {
        self.template = t;
        self
    }

    /// Endpoint settings of premium SIP users (GURU3's `isPremium`: another transport,
    /// context or codecs); default none, so premium users get the regular template.
    pub fn premium_template(mut self, t: Option<EndpointTemplate>) -> Self {
        self.premium_template = t;
        self
    }

    /// The template a user is provisioned with.
    pub(crate) fn template_for(&self, spec: &UserSpec) -> &EndpointTemplate {
        match (
            &self.premium_template,
            spec.premium && spec.kind == Kind::Sip,
        ) {
            (Some(t), true) => t,
            _ => &self.template,
        }
    }

    /// Whether [`Store::connect`] applies pending migrations of hexidian's schema (default
    /// `true`). Off, it only reads; [`Store::pending_migrations`] tells what is missing.
    pub fn apply_migrations(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// The database role Asterisk reads with: when migrations run, it is granted `SELECT` on
    /// the routing views (`hexidian.route`, `hexidian.callgroup_route`) if it exists.
    pub fn routing_reader(mut self, role: Option<String>) -> Self {
        self.routing_reader = role;
        self
    }

    /// `lock_timeout` of every transaction (default 5 s).
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t;
        self
    }

    /// Timeout of connecting (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Largest share of (non-temporary) users a sweep may delete (default 0.3).
    pub fn max_sweep_fraction(mut self, f: f64) -> Self {
        self.max_sweep_fraction = f.clamp(0.0, 1.0);
        self
    }

    /// Take over `ps_*` rows that exist without hexidian's ownership mark (default `false`:
    /// such ids are a [`Error::Conflict`]).
    pub fn adopt_foreign_rows(mut self, on: bool) -> Self {
        self.adopt_foreign_rows = on;
        self
    }

    /// Force a schema generation instead of detecting it.
    pub fn schema(mut self, s: Option<Schema>) -> Self {
        self.schema = s;
        self
    }

    /// Upper bound for one [`Store::apply`] (default 60 s); on expiry the transaction is
    /// rolled back and [`Error::Timeout`] returned. It is also every statement's
    /// `statement_timeout` on the server.
    pub fn operation_timeout(mut self, t: Duration) -> Self {
        self.operation_timeout = t;
        self
    }

    /// Reconnect back-off bounds (default 200 ms … 10 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }
}

/// What a user upsert should write.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// The extension (also every `ps_*` id).
    pub extension: Extension,
    /// SIP, DECT or temporary.
    pub kind: Kind,
    /// Display name from GURU3 (sanitised here).
    pub name: String,
    /// For SIP: the password from GURU3 (required). For DECT/temporary: `None` keeps the
    /// stored password (a new one is generated for new users); `Some` replaces it.
    pub password: Option<SipPassword>,
    /// Use the premium endpoint template ([`Config::premium_template`]; the regular one if
    /// none is configured).
    pub premium: bool,
    /// How the dialplan routes calls to this user (`hexidian.route`).
    pub routing: Routing,
}

/// A call-group member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Member number.
    pub extension: Extension,
    /// `false` = paused: kept but not rung.
    pub active: bool,
    /// Seconds after the call starts (clamped to 0–600).
    pub delay_s: i32,
}

/// One unit of work; a batch applies several in one transaction.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Change {
    /// Create or update a user (AOR, auth, endpoint, ownership mark).
    UpsertUser(UserSpec),
    /// Delete a user hexidian owns (no-op otherwise).
    DeleteUser(Extension),
    /// Rename a user and every call-group reference to it.
    Rename {
        /// Old number.
        old: Extension,
        /// New number.
        new: Extension,
    },
    /// Change the password of an owned user.
    SetPassword(Extension, SipPassword),
    /// Change the display name (and caller ID) of an owned user.
    SetDisplayName(Extension, String),
    /// A GROUP extension (UPDATE_EXTENSION type GROUP).
    UpsertGroup {
        /// Number.
        extension: Extension,
        /// Name.
        name: String,
        /// Up to 3 characters shown before the caller name (sanitised to A-Z a-z 0-9).
        short_name: String,
    },
    /// The complete member list of a group or multiring extension (UPDATE_CALLGROUP).
    SetMembers {
        /// Number.
        extension: Extension,
        /// Name.
        name: String,
        /// Members; duplicates keep the last, the extension itself is dropped.
        members: Vec<Member>,
    },
    /// The extension is no longer a GROUP (UPDATE_EXTENSION of another type).
    NotGroup {
        /// Number.
        extension: Extension,
        /// Name.
        name: String,
    },
    /// Remove the extension everywhere: its user, its group and its memberships.
    DeleteExtension(Extension),
}

/// Result of one change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A user was written; the effective password (push it to the OMM for DECT users).
    User {
        /// Password now stored in `ps_auths`.
        password: SipPassword,
        /// The id was new.
        created: bool,
    },
    /// Whether something was changed or deleted.
    Done(bool),
}

/// An owned user as stored, with drift indicators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedUser {
    /// The extension.
    pub extension: String,
    /// Kind (`None` if the stored kind is unknown).
    pub kind: Option<Kind>,
    /// Sanitised display name.
    pub display_name: String,
    /// Sync epoch of the last upsert.
    pub seen_epoch: i64,
    /// `ps_endpoints` row present.
    pub has_endpoint: bool,
    /// `ps_aors` row present.
    pub has_aor: bool,
    /// `ps_auths` row present.
    pub has_auth: bool,
    /// Endpoint context.
    pub context: Option<String>,
    /// Endpoint caller ID.
    pub callerid: Option<String>,
    /// `auth` and `aors` point at the id itself.
    pub links_ok: bool,
    /// Stored password.
    pub password: Option<SipPassword>,
}

impl ManagedUser {
    /// Whether all three rows exist and point at each other.
    pub fn is_complete(&self) -> bool {
        self.has_endpoint && self.has_aor && self.has_auth && self.links_ok
    }
}

/// A flattened call-group route as the dialplan reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Group number.
    pub id: String,
    /// Name.
    pub name: String,
    /// Short name.
    pub short_name: String,
    /// `Local/<delay>-<target>@hexidian-cg-leg` joined by `&`; empty = nobody to ring.
    pub dialstring: String,
}

/// What a completed resync removed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// The epoch that ended.
    pub epoch: i64,
    /// Users deleted from all three tables.
    pub users: Vec<String>,
    /// Call groups deleted.
    pub groups: Vec<String>,
}

struct Conn {
    client: Client,
    stmts: Option<Arc<Statements>>,
}

macro_rules! statements {
    ($($field:ident = $sql:ident),* $(,)?) => {
        struct Statements { $($field: Statement,)* }
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
    u_owners = U_OWNERS,
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
    cb_list_owner = CB_LIST_OWNER,
    cb_prune = CB_PRUNE,
    cb_merge = CB_MERGE,
    cb_drop_if_plain = CB_DROP_IF_PLAIN,
    cb_group = CB_GROUP,
);

struct Inner {
    config: Config,
    schema: Schema,
    has_contacts: bool,
    conn: Mutex<Option<Conn>>,
    /// Dropping it tells the driver to stop.
    _alive: oneshot::Sender<()>,
    wake: tokio::sync::Notify,
}

/// Handle to hexidian's rows in the Asterisk database. Cheap to clone; operations on one
/// store run one transaction at a time (use [`Store::apply`] to batch).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

type PgConnection =
    Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

/// Keeps the database connection alive and reconnects (with back-off) after it is lost.
/// Spawn it; it ends when every [`Store`] handle is dropped.
#[must_use = "the driver does nothing unless spawned"]
pub struct Driver {
    inner: std::sync::Weak<Inner>,
    config: Config,
    /// The live connection; dropped as soon as it ends, so that the client's requests fail
    /// fast instead of queueing into a connection nobody polls.
    connection: Option<PgConnection>,
    alive: oneshot::Receiver<()>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

async fn open(config: &Config) -> Result<(Client, PgConnection)> {
    // the server ends any statement that runs longer than an operation may take
    let mut pg = config.pg.clone();
    let limit = format!(
        "-c statement_timeout={}",
        config.operation_timeout.as_millis()
    );
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {limit}"),
        _ => limit,
    };
    pg.options(options);
    let fut = pg.connect(NoTls);
    let (client, connection) = tokio::time::timeout(config.connect_timeout, fut)
        .await
        .map_err(|_| Error::Timeout)??;
    Ok((client, Box::pin(connection)))
}

/// Runs `work` on `client` while polling its connection.
async fn with_connection<T>(
    connection: &mut PgConnection,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = work => r,
        r = connection => Err(match r { Err(e) => Error::Db(e), Ok(()) => Error::Unavailable }),
    }
}

async fn migrate(client: &mut Client, reader: Option<&str>) -> Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(migrations::LOCK).await?;
    tx.batch_execute(migrations::BOOTSTRAP).await?;
    let applied: Vec<i32> = tx
        .query(migrations::APPLIED, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, description, ddl) in migrations::MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, description, "applying hexidian schema migration");
        tx.batch_execute(ddl).await?;
        tx.execute(migrations::RECORD, &[version, description])
            .await?;
    }
    if let Some(max) = applied.iter().max() {
        if *max > migrations::MIGRATIONS.last().map_or(0, |m| m.0) {
            return Err(Error::Schema(format!(
                "database has hexidian schema version {max}, newer than this build"
            )));
        }
    }
    if let Some(role) = reader {
        if role.is_empty()
            || role.len() > 63
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(crate::error::InvalidInput::new(
                "routing reader role",
                role,
                "expected 1 to 63 of A-Z a-z 0-9 - _",
            )
            .into());
        }
        let exists: bool = tx.query_one(sql::ROLE_EXISTS, &[&role]).await?.get(0);
        if exists {
            // an identifier cannot be a bind parameter: the server quotes it (format's %I)
            let grant: String = tx.query_one(sql::GRANT_ROUTING, &[&role]).await?.get(0);
            tx.batch_execute(&grant).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn detect(client: &Client, forced: Option<Schema>) -> Result<(Schema, bool)> {
    let rows = client.query(sql::DETECT_SCHEMA, &[]).await?;
    let detected = match rows.first().map(|r| r.get::<_, String>(0)) {
        Some(t) if t == "ast_bool_values" => Schema::Modern,
        Some(t) if t == "yesno_values" => Schema::Legacy,
        Some(t) => {
            return Err(Error::Schema(format!(
                "ps_endpoints.direct_media has unexpected type {t}"
            )));
        }
        None => {
            return Err(Error::Schema(
                "no ps_endpoints table with a direct_media column in the current schema".into(),
            ));
        }
    };
    if let Some(f) = forced {
        if f != detected {
            tracing::warn!(
                ?f,
                ?detected,
                "configured asterisk schema differs from the database"
            );
        }
    }
    let enc: String = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await?
        .get(0);
    if enc != "UTF8" {
        return Err(Error::Schema(format!(
            "server_encoding is {enc}; caller-id limits assume UTF8"
        )));
    }
    let contacts: bool = client.query_one(sql::HAS_CONTACTS, &[]).await?.get(0);
    Ok((forced.unwrap_or(detected), contacts))
}

impl Store {
    /// Connects, applies hexidian's migrations, detects the Asterisk schema, and returns the
    /// store plus the [`Driver`] to spawn.
    pub async fn connect(config: Config) -> Result<(Self, Driver)> {
        config.template.validate()?;
        if let Some(t) = &config.premium_template {
            t.validate()?;
        }
        let (mut client, mut connection) = open(&config).await?;
        let (schema, has_contacts) = with_connection(&mut connection, async {
            if config.migrate {
                migrate(&mut client, config.routing_reader.as_deref()).await?;
            }
            detect(&client, config.schema).await
        })
        .await?;
        let (alive_tx, alive_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            config: config.clone(),
            schema,
            has_contacts,
            conn: Mutex::new(Some(Conn {
                client,
                stmts: None,
            })),
            _alive: alive_tx,
            wake: tokio::sync::Notify::new(),
        });
        let driver = Driver {
            inner: Arc::downgrade(&inner),
            config,
            connection: Some(connection),
            alive: alive_rx,
        };
        Ok((Self { inner }, driver))
    }

    /// Migrations of hexidian's schema this build has and the database lacks.
    pub async fn pending_migrations(&self) -> Result<Vec<(i32, &'static str)>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let present: bool = conn
            .client
            .query_one(sql::HAS_MIGRATIONS, &[])
            .await?
            .get(0);
        let applied: Vec<i32> = if present {
            conn.client
                .query(migrations::APPLIED, &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
        } else {
            Vec::new()
        };
        Ok(migrations::MIGRATIONS
            .iter()
            .filter(|(v, ..)| !applied.contains(v))
            .map(|(v, d, _)| (*v, *d))
            .collect())
    }

    /// The Asterisk schema generation in use.
    pub fn schema(&self) -> Schema {
        self.inner.schema
    }

    /// Backend process id of the current connection (for diagnostics and tests).
    pub async fn backend_pid(&self) -> Result<i32> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0))
    }

    async fn conn(&self) -> Result<MutexGuard<'_, Option<Conn>>> {
        let guard = self.inner.conn.lock().await;
        match guard.as_ref() {
            Some(c) if !c.client.is_closed() => Ok(guard),
            _ => {
                self.inner.wake.notify_one();
                Err(Error::Unavailable)
            }
        }
    }

    /// Applies `changes` in order in one transaction. A change that fails for a reason of its
    /// own (conflict, invalid input) is rolled back alone and reported in its slot; a database
    /// failure rolls back the whole batch and is returned as `Err`.
    pub async fn apply(&self, changes: &[Change]) -> Result<Vec<Result<Outcome>>> {
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(Error::Unavailable)?;
        let stmts = match &conn.stmts {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Statements::prepare(&conn.client).await?);
                conn.stmts = Some(s.clone());
                s
            }
        };
        let limit = self.inner.config.operation_timeout;
        let result =
            match tokio::time::timeout(limit, self.apply_in(&mut conn.client, &stmts, changes))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout),
            };
        if let Err(e) = &result {
            if conn.client.is_closed()
                || e.code()
                    .is_none_or(|c| c.starts_with("08") || c.starts_with("57P"))
            {
                self.inner.wake.notify_one();
            }
        }
        result
    }

    async fn apply_in(
        &self,
        client: &mut Client,
        st: &Statements,
        changes: &[Change],
    ) -> Result<Vec<Result<Outcome>>> {
        let mut tx = client.transaction().await?;
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
            let taken = |users: &[(usize, &UserSpec)],
                         groups: &[(usize, &Extension)],
                         e: &Extension| {
                users.iter().any(|(_, s)| &s.extension == e) || groups.iter().any(|(_, g)| *g == e)
            };
            let mut j = i;
            loop {
                match changes.get(j) {
                    Some(Change::UpsertUser(spec)) if !taken(&users, &groups, &spec.extension) => {
                        users.push((j, spec));
                    }
                    Some(Change::UpsertGroup { extension, .. })
                        if !users.is_empty() && !taken(&users, &groups, extension) =>
                    {
                        groups.push((j, extension));
                    }
                    _ => break,
                }
                j += 1;
            }
            if users.len() > 1 {
                let specs: Vec<&UserSpec> = users.iter().map(|(_, s)| *s).collect();
                let results = self.bulk_upsert(&tx, st, &specs).await?;
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
                    tx.execute(&st.cb_group, &[&ids, &names, &shorts]).await?;
                    self.refresh_ancestors(&tx, st, &ids).await?;
                }
                i = j;
                continue;
            }
            // so do runs of member lists (a resync's third pass is all of them)
            let mut lists: Vec<(&Extension, &String, &Vec<Member>)> = Vec::new();
            while let Some(Change::SetMembers {
                extension,
                name,
                members,
            }) = changes.get(i + lists.len())
            {
                if lists.iter().any(|l| l.0 == extension) {
                    break;
                }
                lists.push((extension, name, members));
            }
            if lists.len() > 1 {
                self.bulk_members(&tx, st, &lists).await?;
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
    async fn savepointed(
        &self,
        tx: &mut Transaction<'_>,
        st: &Statements,
        change: &Change,
    ) -> Result<Result<Outcome>> {
        let sp = tx.savepoint("change").await?;
        match self.one(&sp, st, change).await {
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

    async fn single(&self, change: Change) -> Result<Outcome> {
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
    pub async fn user(&self, extension: &Extension) -> Result<Option<ManagedUser>> {
        Ok(self.list(Some(extension.as_str())).await?.pop())
    }

    /// Every owned user, with drift indicators.
    pub async fn list_managed(&self) -> Result<Vec<ManagedUser>> {
        self.list(None).await
    }

    async fn list(&self, id: Option<&str>) -> Result<Vec<ManagedUser>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let rows = conn.client.query(sql::L_USER, &[&id]).await?;
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
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let rows = conn.client.query(sql::L_FOREIGN, &[&contexts]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Call-group routes (all, or one).
    pub async fn routes(&self, id: Option<&Extension>) -> Result<Vec<Route>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let rows = conn
            .client
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
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let rows = conn.client.query(sql::C_MEMBERS, &[&id.as_str()]).await?;
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
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
            .execute(sql::C_REFRESH, &[&None::<Vec<String>>])
            .await?)
    }

    /// Starts a resync generation (SYNC_STARTED); returns its epoch.
    pub async fn begin_sync(&self) -> Result<i64> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn.client.query_one(sql::S_BEGIN, &[]).await?.get(0))
    }

    /// Ends the resync generation `epoch` (SYNC_ENDED): deletes owned users, member lists and
    /// groups not seen since it began, never temporary users. Refused (nothing deleted, sync
    /// stays open) if more than the configured share of users would go.
    pub async fn end_sync(&self, epoch: i64) -> Result<SweepReport> {
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(Error::Unavailable)?;
        let tx = conn.client.transaction().await?;
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
        if self.inner.has_contacts {
            for id in &users {
                tx.execute(sql::D_CONTACTS, &[&id.as_str(), &format!("{id}^3B@%")])
                    .await?;
            }
        }
        tx.execute(sql::S_CLEAR_LISTS, &[&epoch]).await?;
        let groups: Vec<String> = tx
            .query(sql::S_SWEEP_GROUPS, &[&epoch])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(sql::C_REFRESH, &[&None::<Vec<String>>]).await?;
        tx.query(sql::S_END, &[&epoch]).await?;
        tx.commit().await?;
        Ok(SweepReport {
            epoch,
            users,
            groups,
        })
    }

    async fn one(&self, tx: &Transaction<'_>, st: &Statements, change: &Change) -> Result<Outcome> {
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

    async fn ancestors(
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

    async fn refresh_ancestors(
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
    async fn bulk_members(
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
        tx.execute(&st.cb_list_owner, &[&groups, &names]).await?;
        tx.execute(&st.cb_prune, &[&groups, &g, &m]).await?;
        tx.execute(&st.cb_merge, &[&g, &m, &a, &d]).await?;
        tx.execute(&st.cb_drop_if_plain, &[&groups]).await?;
        self.refresh_ancestors(tx, st, &groups).await
    }

    /// Upserts many users with a handful of set-based checks and four set-based writes for
    /// the whole run (rows as one JSON parameter each). Per-user failures (conflict, invalid
    /// input) exclude that user before anything is written.
    async fn bulk_upsert(
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
        let owners: HashMap<String, Option<Kind>> = tx
            .query(&st.u_owners, &[&ids])
            .await?
            .iter()
            .map(|r| (r.get(0), Kind::from_db(r.get(1))))
            .collect();
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
        // four set-based statements for the whole run; enum labels come from fixed sets
        let yes_no = |b: bool| Label::yes_no(b).0;
        let aors: Vec<serde_json::Value> = work
            .iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.id, "max_contacts": w.t.max_contacts,
                    "remove_existing": yes_no(w.t.remove_existing), "qualify_frequency": w.qualify,
                })
            })
            .collect();
        let auth = |keep: bool| -> String {
            serde_json::Value::Array(
                work.iter()
                    .filter(|w| w.keep == keep)
                    .map(|w| serde_json::json!({"id": w.id, "auth_type": "userpass", "password": w.password}))
                    .collect(),
            )
            .to_string()
        };
        let endpoints: Vec<serde_json::Value> = work
            .iter()
            .map(|w| {
                let t = w.t;
                serde_json::json!({
                    "id": w.id, "context": w.context, "allow": t.allow, "transport": t.transport,
                    "direct_media": yes_no(t.direct_media), "rtp_symmetric": yes_no(t.rtp_symmetric),
                    "force_rport": yes_no(t.force_rport), "rewrite_contact": yes_no(t.rewrite_contact),
                    "dtmf_mode": t.dtmf_mode.label(), "callerid": w.callerid,
                })
            })
            .collect();
        let marks: Vec<serde_json::Value> = work
            .iter()
            .map(|w| {
                let r = w.routing;
                let (mode, target, delay) = r.forward_columns();
                serde_json::json!({
                    "id": w.id, "kind": w.kind, "display_name": w.display,
                    "forward_mode": mode, "forward_target": target, "forward_delay_s": delay,
                    "trunk": r.trunk, "call_waiting": r.call_waiting,
                    "allow_dialout": r.allow_dialout, "display": r.display.label(),
                })
            })
            .collect();
        let marks = serde_json::Value::Array(marks).to_string();
        let (aors, endpoints) = (
            serde_json::Value::Array(aors).to_string(),
            serde_json::Value::Array(endpoints).to_string(),
        );
        let (auth_set, auth_keep) = (auth(false), auth(true));
        let (_, set_rows, keep_rows, _, _) = futures_util::future::try_join5(
            tx.execute(&st.ub_aor, &[&aors]),
            tx.query(&st.ub_auth_set, &[&auth_set]),
            tx.query(&st.ub_auth_keep, &[&auth_keep]),
            tx.execute(&st.ub_endpoint, &[&endpoints]),
            tx.execute(&st.ub_mark, &[&marks]),
        )
        .await?;
        let stored: HashMap<String, String> = set_rows
            .iter()
            .chain(&keep_rows)
            .map(|r| (r.get(0), r.get(1)))
            .collect();
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

    async fn upsert_in(
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

    async fn delete_in(
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
                .await?;
        }
        Ok(true)
    }

    async fn rename_in(
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
                    .await?;
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
    /// Records a promised bind; returns its id.
    pub async fn add_bind(&self, ppn: i32, temp: &Extension, extension: &Extension) -> Result<i64> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
            .query_one(
                sql::H_BIND_ADD,
                &[&ppn, &temp.as_str(), &extension.as_str()],
            )
            .await?
            .get(0))
    }

    /// Binds not yet carried out, oldest first.
    pub async fn pending_binds(&self) -> Result<Vec<HandsetBind>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
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
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(Error::Unavailable)?;
        let tx = conn.client.transaction().await?;
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

    /// Queued `ASSIGN_HANDSET`s, oldest first.
    pub async fn pending_assigns(&self, limit: i64) -> Result<Vec<OutboxEntry>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
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
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let status = if ok { "ok" } else { "nak" };
        conn.client
            .execute(sql::H_OUTBOX_DONE, &[&id, &status, &no_nul(text)])
            .await?;
        Ok(())
    }
}

/// A group's tag: up to three ASCII letters or digits.
fn short_tag(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect()
}

/// PostgreSQL `text` cannot hold NUL: replace it (journal texts echo hostile input).
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

impl Store {
    /// `(current epoch, in progress)` of the resync state.
    pub async fn sync_state(&self) -> Result<(i64, bool)> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let row = conn.client.query_one(sql::B_SYNC, &[]).await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Every stored `(number, document)` of the broker's desired-state mirror.
    pub async fn load_desired(&self) -> Result<Vec<(String, String)>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
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
        let mut guard = self.conn().await?;
        let conn = guard.as_mut().ok_or(Error::Unavailable)?;
        let tx = conn.client.transaction().await?;
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
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        let r = conn.client.query_one(sql::B_COUNTS, &[]).await?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    /// Deletes applied and ignored journal rows last written more than `max_age` ago (at
    /// most 10,000 per call; dead letters are kept). Returns how many.
    pub async fn prune_journal(&self, max_age: Duration) -> Result<u64> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
            .execute(sql::B_PRUNE, &[&max_age.as_secs_f64()])
            .await?)
    }

    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<JournalRow>> {
        let guard = self.conn().await?;
        let conn = guard.as_ref().ok_or(Error::Unavailable)?;
        Ok(conn
            .client
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

impl Driver {
    /// Runs until every [`Store`] is dropped.
    pub async fn run(mut self) {
        let mut delay = self.config.reconnect_min;
        loop {
            // drive the current connection until it ends (or the store goes away)
            if let Some(connection) = self.connection.as_mut() {
                tokio::select! {
                    r = connection => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "database connection lost");
                        }
                    }
                    _ = &mut self.alive => return,
                }
            }
            self.connection = None;
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            *inner.conn.lock().await = None;
            drop(inner);
            // reconnect with exponential back-off and jitter
            loop {
                let jitter = jitter_fraction();
                let wait = delay.mul_f64(0.5 + 0.5 * jitter);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = &mut self.alive => return,
                }
                match open(&self.config).await {
                    Ok((client, connection)) => {
                        let Some(inner) = self.inner.upgrade() else {
                            return;
                        };
                        *inner.conn.lock().await = Some(Conn {
                            client,
                            stmts: None,
                        });
                        self.connection = Some(connection);
                        delay = self.config.reconnect_min;
                        tracing::info!("database connection re-established");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "database reconnect failed");
                        delay = (delay * 2).min(self.config.reconnect_max);
                    }
                }
            }
        }
    }
}

fn jitter_fraction() -> f64 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

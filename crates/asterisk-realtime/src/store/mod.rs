//! The store: PJSIP rows, call groups and routes over one [`Session`].

mod batch;
mod groups;
mod model;
mod sync;
mod users;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

pub use model::{Change, ManagedUser, Member, Outcome, Route, SweepReport, UserSpec};

use crate::error::{Doing, Error, Result};
use crate::migrations;
use crate::session::{self, Driver, Session};
use crate::sql;
use crate::types::{EndpointTemplate, Kind, Schema};

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

    /// The connection settings (a caller that needs a connection of its own, such as a
    /// leadership lock, starts from them).
    pub fn postgres(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// Names the connections in `pg_stat_activity` (`application_name`).
    pub fn application_name(mut self, name: &str) -> Self {
        self.pg.application_name(name);
        self
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

    /// Whether [`Store::connect`] applies pending migrations (see
    /// [`apply_migrations`](Self::apply_migrations)); other ledgers on the same database
    /// follow it.
    pub fn migrates(&self) -> bool {
        self.migrate
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

struct Inner {
    config: Config,
    schema: Schema,
    has_contacts: bool,
    session: Session,
    /// Prepared statements of the connection generation they were prepared on.
    stmts: std::sync::Mutex<Option<(u64, Arc<batch::Statements>)>>,
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

/// A privilege a role lacks (see [`Store::missing_privileges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingPrivilege {
    /// The role.
    pub role: String,
    /// `SELECT`, `DELETE`, `USAGE`, `CREATE`, `EXECUTE`…
    pub privilege: String,
    /// The table, view, schema, function or database.
    pub object: String,
    /// The statement that grants it (run as a superuser or the object's owner); empty when
    /// the role itself is missing.
    pub grant: String,
    /// The role does not exist at all (run the roles file, `hexidian-roles.sql`).
    pub role_missing: bool,
}

impl std::fmt::Display for MissingPrivilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.role_missing {
            write!(
                f,
                "role {} does not exist (hexidian-roles.sql creates it)",
                self.role
            )
        } else {
            write!(
                f,
                "{} lacks {} on {}: {};",
                self.role, self.privilege, self.object, self.grant
            )
        }
    }
}

/// The PBX ledger's migrations, plus the read grant of Asterisk's role, in one transaction.
async fn migrate(client: &mut Client, reader: Option<&str>) -> Result<()> {
    let tx = client.transaction().await?;
    migrations::PBX.apply(&tx).await?;
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
            tx.batch_execute(&grant)
                .await
                .doing(|| format!("granting {role} SELECT on the routing views"))?;
        }
    }
    tx.commit().await?;
    Ok(())
}

impl Store {
    /// Connects, applies the migrations of hexidian's PBX tables, detects the Asterisk
    /// schema, and returns the store plus the [`Driver`] to spawn.
    pub async fn connect(config: Config) -> Result<(Self, Driver)> {
        config.template.validate()?;
        if let Some(t) = &config.premium_template {
            t.validate()?;
        }
        let (mut client, mut connection) = session::open(&config).await?;
        let (schema, has_contacts) = session::with_connection(&mut connection, async {
            if config.migrate {
                migrate(&mut client, config.routing_reader.as_deref()).await?;
            }
            detect(&client, config.schema).await
        })
        .await?;
        let (session, driver) = Session::from_parts(&config, client, connection);
        let inner = Arc::new(Inner {
            config,
            schema,
            has_contacts,
            session,
            stmts: std::sync::Mutex::new(None),
        });
        Ok((Self { inner }, driver))
    }

    /// The connection this store runs on, for crates that keep their own tables beside it.
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    /// Migrations of the PBX tables this build has and the database lacks.
    pub async fn pending_migrations(&self) -> Result<Vec<(i32, &'static str)>> {
        let guard = self.inner.session.lock().await?;
        migrations::PBX.pending(guard.client()).await
    }

    /// What hexidian's role (the one this store connected as) and Asterisk's reader role
    /// lack for what hexidian does and Asterisk reads, each with the `GRANT` that fixes it;
    /// empty when everything is granted. Reads only. An `asterisk_role` that does not exist
    /// is reported as [`MissingPrivilege::role_missing`].
    pub async fn missing_privileges(
        &self,
        asterisk_role: Option<&str>,
    ) -> Result<Vec<MissingPrivilege>> {
        let guard = self.inner.session.lock().await?;
        let c = guard.client();
        let mut out = Vec::new();
        if let Some(role) = asterisk_role {
            let exists: bool = c
                .query_one(sql::ROLE_EXISTS, &[&role])
                .await
                .doing(|| format!("looking up role {role}"))?
                .get(0);
            if !exists {
                out.push(MissingPrivilege {
                    role: role.to_owned(),
                    privilege: "LOGIN".into(),
                    object: "the database".into(),
                    grant: String::new(),
                    role_missing: true,
                });
            }
        }
        let rows = c
            .query(sql::MISSING_PRIVILEGES, &[&asterisk_role])
            .await
            .doing(|| "checking privileges".into())?;
        out.extend(rows.iter().map(|r| MissingPrivilege {
            role: r.get(0),
            privilege: r.get(1),
            object: r.get(2),
            grant: r.get(3),
            role_missing: false,
        }));
        Ok(out)
    }

    /// The Asterisk schema generation in use.
    pub fn schema(&self) -> Schema {
        self.inner.schema
    }

    /// Which of these endpoints are registered: have a contact in `ps_contacts` (Asterisk
    /// keeps them there with `contact=realtime`; none without the table). Reads only.
    pub async fn registered(&self, endpoints: &[String]) -> Result<Vec<String>> {
        let guard = self.inner.session.lock().await?;
        let c = guard.client();
        let has: bool = c.query_one(sql::HAS_CONTACTS, &[]).await?.get(0);
        if !has || endpoints.is_empty() {
            return Ok(Vec::new());
        }
        Ok(c.query(sql::Q_REGISTERED, &[&endpoints])
            .await?
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect())
    }

    /// Backend process id of the current connection (for diagnostics and tests).
    pub async fn backend_pid(&self) -> Result<i32> {
        self.inner.session.backend_pid().await
    }
}

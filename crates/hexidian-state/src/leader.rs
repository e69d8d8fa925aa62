//! Which of several hexidians on one database is active, and the fence that keeps the others
//! from writing.
//!
//! Leadership is a PostgreSQL session advisory lock held on a connection of its own (the *lock
//! connection*, with keepalives and a TCP user timeout: a dead peer's lock goes with its
//! connection). The active renews a lease row through it every quarter of the lease; a
//! standby polls the lock and, when the lease is older than the lease time (an active that is
//! paused or cut off, whose connection PostgreSQL still keeps), ends that holder's
//! connections. Whoever takes the lock moves the **epoch** on (`hexidian.leader`) after ending
//! the previous holder's connections; every write transaction of the active checks, inside
//! itself, that its epoch is still the current one ([`FENCE_QUERY`], a `FOR SHARE` row lock the
//! epoch move waits for), so a write of an old active either committed before the new one took
//! over or not at all.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use asterisk_realtime::{Error, Fence, Result};
use tokio_postgres::{Client, NoTls};

/// The advisory lock key ("hexidian" in ASCII).
pub const LOCK_KEY: i64 = 0x6865_7869_6469_616e;

/// What a fenced write transaction runs first: the current epoch, row-locked until it ends.
pub const FENCE_QUERY: &str = "SELECT epoch FROM hexidian.leader WHERE id = 1 FOR SHARE";

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const LEASE: &str = "SELECT holder, epoch, \
     COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - renewed_at)::float8, 1e9) \
     FROM hexidian.leader_lease WHERE id = 1";
const RENEW: &str = "UPDATE hexidian.leader_lease SET renewed_at = clock_timestamp() \
     WHERE id = 1 AND holder = $1 AND epoch = $2";
const CURRENT: &str = "SELECT epoch FROM hexidian.leader WHERE id = 1";
const HOLDER: &str = "SELECT epoch, holder FROM hexidian.leader WHERE id = 1";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";
/// Lock connections of other instances (standbys waiting to take over).
const STANDBYS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() \
       AND starts_with(application_name, 'hexidian/') AND application_name LIKE '%/lock' \
       AND application_name <> $1";
/// Every connection of a holder: its lock connection and its sessions (`hexidian/<name>…`).
const END_HOLDER: &str = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() \
       AND (application_name = $1 OR starts_with(application_name, $1 || '/'))";
/// Connections that hold a lock on the epoch row (a transaction of an earlier active).
const END_FENCED: &str = "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
     WHERE relation = 'hexidian.leader'::regclass AND pid <> pg_backend_pid()";
const MOVE_EPOCH: &str = "UPDATE hexidian.leader SET epoch = epoch + 1, holder = $1, \
     since = clock_timestamp() WHERE id = 1 RETURNING epoch";
const SET_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', $1, false)";
const TAKE_LEASE: &str = "UPDATE hexidian.leader_lease SET holder = $1, epoch = $2, \
     renewed_at = clock_timestamp() WHERE id = 1";

/// The `application_name` of an instance's sessions (its lock connection adds `/lock`).
pub fn application_name(instance: &str) -> String {
    format!("hexidian/{instance}")
}

/// Whether `name` can name an instance: 1 to 40 of `A-Z a-z 0-9 . _ -`.
pub fn valid_instance_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Who is active, as a standby sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// The active instance's name (empty before anyone was).
    pub name: String,
    /// Its epoch.
    pub epoch: i64,
    /// How long ago it renewed its lease.
    pub renewed_ago: Duration,
}

/// The outcome of one [`Candidate::attempt`].
#[derive(Debug)]
pub enum Attempt {
    /// This instance is active now.
    Active(Box<Lease>),
    /// Another is; it was renewing its lease (or its connections were just ended).
    Standby(Holder),
}

/// Why a [`Lease`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another instance moved the epoch on.
    Superseded,
    /// The lock connection failed or did not answer within half the lease.
    Connection(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Superseded => f.write_str("another instance took over"),
            Self::Connection(e) => write!(f, "the lock connection failed: {e}"),
        }
    }
}

type PgConnection = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// A lock connection. No task drives it: each request polls the connection while it waits
/// (a request of another caller that holds it meanwhile makes progress too), and dropping it
/// closes the socket, which releases the lock.
struct LockConn {
    client: Client,
    connection: tokio::sync::Mutex<Option<PgConnection>>,
}

impl LockConn {
    /// Runs `request` on the client, polling the connection meanwhile.
    async fn run<T>(
        &self,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        tokio::pin!(request);
        let drive = async {
            let mut slot = self.connection.lock().await;
            let Some(connection) = slot.as_mut() else {
                // it ended before: the request fails by itself
                return std::future::pending().await;
            };
            let r = connection.as_mut().await;
            *slot = None;
            match r {
                Err(e) => Error::from(e),
                Ok(()) => Error::Unavailable,
            }
        };
        tokio::select! {
            biased;
            r = &mut request => Ok(r?),
            e = drive => Err(e),
        }
    }
}

impl std::fmt::Debug for LockConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockConn").finish_non_exhaustive()
    }
}

/// One instance competing for leadership.
#[derive(Debug)]
pub struct Candidate {
    pg: tokio_postgres::Config,
    name: String,
    lease: Duration,
    conn: Option<LockConn>,
}

impl Candidate {
    /// `name` tells instances apart ([`valid_instance_name`]); `lease` is how long an active
    /// that stopped renewing keeps leadership before a standby ends its connections.
    pub fn new(config: &asterisk_realtime::Config, name: &str, lease: Duration) -> Result<Self> {
        if !valid_instance_name(name) {
            return Err(Error::Config(format!(
                "instance name {name:?}: 1 to 40 letters, digits, '.', '_' or '-'"
            )));
        }
        let mut pg = config.postgres().clone();
        // a peer that vanished without closing is noticed within about the lease
        let probe = (lease / 3).max(Duration::from_secs(1));
        pg.application_name(format!("{}/lock", application_name(name)))
            .keepalives(true)
            .keepalives_idle(probe)
            .keepalives_interval(probe)
            .keepalives_retries(2)
            .tcp_user_timeout(lease.max(Duration::from_secs(1)))
            .connect_timeout(lease.max(Duration::from_secs(1)));
        Ok(Self {
            pg,
            name: name.to_owned(),
            lease,
            conn: None,
        })
    }

    /// This instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn client(&mut self) -> Result<&LockConn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let (client, connection) = tokio::time::timeout(self.lease, self.pg.connect(NoTls))
                .await
                .map_err(|_| Error::Timeout)??;
            self.conn = Some(LockConn {
                client,
                connection: tokio::sync::Mutex::new(Some(Box::pin(connection))),
            });
        }
        self.conn.as_ref().ok_or(Error::Unavailable)
    }

    /// One try: takes the lock if it is free (and becomes active), else looks at the lease and
    /// ends the connections of an active that stopped renewing it. A standby calls it every
    /// half second or so.
    pub async fn attempt(&mut self) -> Result<Attempt> {
        let r = tokio::time::timeout(self.lease, self.attempt_once()).await;
        self.settle(r)
    }

    /// The outcome of a call bounded by a lease; a failed one drops the lock connection (the
    /// next call opens a new one).
    fn settle<T>(&mut self, r: Result<Result<T>, tokio::time::error::Elapsed>) -> Result<T> {
        let e = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => Error::Timeout,
        };
        self.conn = None;
        Err(e)
    }

    async fn attempt_once(&mut self) -> Result<Attempt> {
        let lease = self.lease;
        let name = self.name.clone();
        let c = self.client().await?;
        let locked: bool = c
            .run(c.client.query_one(TRY_LOCK, &[&LOCK_KEY]))
            .await?
            .get(0);
        let row = c.run(c.client.query_one(LEASE, &[])).await?;
        let holder = Holder {
            name: row.get(0),
            epoch: row.get(1),
            renewed_ago: Duration::from_secs_f64(row.get::<_, f64>(2).clamp(0.0, 1e9)),
        };
        if !locked {
            if !holder.name.is_empty() && holder.renewed_ago > lease {
                // paused or cut off: PostgreSQL still keeps its connections, the lock with them
                let app = application_name(&holder.name);
                let ended: i64 = c.run(c.client.query_one(END_HOLDER, &[&app])).await?.get(0);
                tracing::warn!(
                    active = %holder.name,
                    renewed_ago_s = holder.renewed_ago.as_secs_f64(),
                    connections_ended = ended,
                    "the active instance stopped renewing its lease; its connections are ended"
                );
            }
            return Ok(Attempt::Standby(holder));
        }
        // the previous holder's connections go first: a transaction of it that is still open
        // would hold the epoch row, and a session of it must not write again
        if !holder.name.is_empty() && holder.name != name {
            let app = application_name(&holder.name);
            c.run(c.client.query_one(END_HOLDER, &[&app])).await?;
        }
        let wait = format!("{}ms", (lease.as_millis() / 2).max(100));
        c.run(c.client.query_one(SET_LOCK_TIMEOUT, &[&wait]))
            .await?;
        let epoch = loop {
            match c.run(c.client.query_one(MOVE_EPOCH, &[&name])).await {
                Ok(r) => break r.get::<_, i64>(0),
                // 55P03 lock_not_available: an earlier active's transaction holds the row
                Err(e) if e.code() == Some("55P03") => {
                    c.run(c.client.query_one(END_FENCED, &[])).await?;
                }
                Err(e) => return Err(e),
            }
        };
        c.run(c.client.execute(TAKE_LEASE, &[&name, &epoch]))
            .await?;
        c.run(c.client.query_one(SET_LOCK_TIMEOUT, &[&"0"])).await?;
        tracing::info!(instance = %self.name, epoch, "this instance is active");
        let conn = self.conn.take().ok_or(Error::Unavailable)?;
        Ok(Attempt::Active(Box::new(Lease {
            conn,
            name: self.name.clone(),
            epoch,
            lease,
        })))
    }
}

impl Candidate {
    /// After this instance's lock connection failed while it was active with `epoch`: takes
    /// the lock again and keeps the epoch if nobody moved it on meanwhile (whoever did held
    /// the lock first), so the active goes on through a database restart or a dropped
    /// connection. `None` when the epoch moved on or another instance holds the lock: this
    /// instance must step down.
    pub async fn resume(&mut self, epoch: i64) -> Result<Option<Lease>> {
        let r = tokio::time::timeout(self.lease, self.resume_once(epoch)).await;
        self.settle(r)
    }

    /// How many other instances have a lock connection open (standbys, usually).
    pub async fn others(&mut self) -> Result<i64> {
        let own = format!("{}/lock", application_name(&self.name));
        let lease = self.lease;
        let q = async {
            let c = self.client().await?;
            Ok::<i64, Error>(c.run(c.client.query_one(STANDBYS, &[&own])).await?.get(0))
        };
        let r = tokio::time::timeout(lease, q).await;
        self.settle(r)
    }

    async fn resume_once(&mut self, epoch: i64) -> Result<Option<Lease>> {
        let name = self.name.clone();
        let lease = self.lease;
        let c = self.client().await?;
        let locked: bool = c
            .run(c.client.query_one(TRY_LOCK, &[&LOCK_KEY]))
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let row = c.run(c.client.query_one(HOLDER, &[])).await?;
        let (current, holder): (i64, String) = (row.get(0), row.get(1));
        if current != epoch || holder != name {
            c.run(c.client.query_one(UNLOCK, &[&LOCK_KEY])).await?;
            return Ok(None);
        }
        c.run(c.client.execute(TAKE_LEASE, &[&name, &epoch]))
            .await?;
        tracing::info!(instance = %name, epoch, "the lock connection is back: still active");
        let conn = self.conn.take().ok_or(Error::Unavailable)?;
        Ok(Some(Lease {
            conn,
            name,
            epoch,
            lease,
        }))
    }
}

/// Leadership held: the lock connection and the epoch.
#[derive(Debug)]
pub struct Lease {
    conn: LockConn,
    name: String,
    epoch: i64,
    lease: Duration,
}

impl Lease {
    /// The epoch this instance holds.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The fence for this instance's sessions.
    pub fn fence(&self) -> Fence {
        Fence {
            query: FENCE_QUERY,
            epoch: self.epoch,
        }
    }

    /// Renews the lease every quarter of it, until leadership is lost; says why. Dropping it
    /// (or the lease) stops renewing.
    pub async fn hold(&self) -> Lost {
        let every = self.lease / 4;
        loop {
            tokio::time::sleep(every).await;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.name, &self.epoch];
            let renew = self.conn.run(self.conn.client.execute(RENEW, &params));
            match tokio::time::timeout(self.lease / 2, renew).await {
                Ok(Ok(1)) => {}
                Ok(Ok(_)) => return Lost::Superseded,
                Ok(Err(e)) => return Lost::Connection(e.to_string()),
                Err(_) => return Lost::Connection("no answer within half the lease".into()),
            }
        }
    }

    /// Whether this instance's epoch is still the current one (asked of the database now, on
    /// the lock connection): right before a write the fence cannot cover (the OMM, GURU3).
    pub async fn still_current(&self) -> bool {
        let q = self.conn.run(self.conn.client.query_one(CURRENT, &[]));
        match tokio::time::timeout(self.lease / 2, q).await {
            Ok(Ok(row)) => row.get::<_, i64>(0) == self.epoch,
            _ => false,
        }
    }
}

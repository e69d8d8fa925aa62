//! One PostgreSQL connection that survives outages: handles queue for it one operation at a
//! time, fail fast with [`Error::Unavailable`] while it is down, and a [`Driver`] reconnects
//! with back-off.
//!
//! [`Store`](crate::Store) is built on a session. Other crates that keep their own tables in
//! the same database (hexidian's broker state, say) take the store's session
//! ([`Store::session`](crate::Store::session)) instead of opening a connection of their own,
//! and run their migrations with a [`Ledger`](crate::Ledger).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Transaction};

use crate::error::{Error, Result};
use crate::store::Config;

pub(crate) type PgConnection =
    Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

struct Conn {
    client: Client,
    /// Counts connections: a new one needs its prepared statements again.
    generation: u64,
}

/// Writes on a session are made only while its holder's epoch is the current one: with a
/// fence set ([`Session::set_fence`]), every write transaction runs `query` first and fails with
/// [`Error::Fenced`] unless it returns `epoch`. The query should lock the row it reads (`FOR
/// SHARE`), so that whoever moves the epoch on waits until the transaction has ended: a write
/// then either commits before the epoch moved or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// One row with one `bigint`: the current epoch.
    pub query: &'static str,
    /// The epoch this process holds.
    pub epoch: i64,
}

struct Inner {
    config: Config,
    conn: Mutex<Option<Conn>>,
    fence: std::sync::RwLock<Option<Fence>>,
    /// Dropping it tells the driver to stop.
    _alive: oneshot::Sender<()>,
}

/// Handle to one reconnecting connection. Cheap to clone; one operation at a time.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// The connection, held for one operation (see [`Session::lock`]).
pub struct Guard<'a> {
    conn: MutexGuard<'a, Option<Conn>>,
    fence: Option<Fence>,
}

impl std::fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard<'_> {
    fn conn(&self) -> &Conn {
        // `Session::lock` only hands out a guard over a connection
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("a guard always holds a connection"))
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.conn().client
    }

    /// The client, for transactions.
    pub fn client_mut(&mut self) -> &mut Client {
        match self.conn.as_mut() {
            Some(c) => &mut c.client,
            None => unreachable!("a guard always holds a connection"),
        }
    }

    /// Which connection this is (it changes after every reconnect).
    pub fn generation(&self) -> u64 {
        self.conn().generation
    }

    /// The epoch of the fence set when this guard was taken, if any.
    pub fn fence_epoch(&self) -> Option<i64> {
        self.fence.map(|f| f.epoch)
    }

    /// A write transaction: with a fence set, it checks first (inside the transaction) that
    /// this process's epoch is still the current one, else [`Error::Fenced`].
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        let fence = self.fence;
        let tx = self.client_mut().transaction().await?;
        if let Some(f) = fence {
            let current: i64 = tx.query_one(f.query, &[]).await?.get(0);
            if current != f.epoch {
                return Err(Error::Fenced {
                    held: f.epoch,
                    current,
                });
            }
        }
        Ok(tx)
    }

    /// One write statement, fenced like [`transaction`](Self::transaction); the rows affected.
    pub async fn write(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        if self.fence.is_none() {
            return Ok(self.client().execute(sql, params).await?);
        }
        let tx = self.transaction().await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// One write statement returning rows, fenced like [`transaction`](Self::transaction).
    pub async fn write_query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        if self.fence.is_none() {
            return Ok(self.client().query(sql, params).await?);
        }
        let tx = self.transaction().await?;
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// Opens a connection whose every statement the server ends after `operation_timeout`.
pub(crate) async fn open(config: &Config) -> Result<(Client, PgConnection)> {
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

/// Runs `work` on a client while polling its connection (before a driver exists).
pub(crate) async fn with_connection<T>(
    connection: &mut PgConnection,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = work => r,
        r = connection => Err(match r { Err(e) => Error::from(e), Ok(()) => Error::Unavailable }),
    }
}

impl Session {
    /// Connects with the connection settings of `config` (URL, timeouts, keepalives,
    /// reconnect back-off) and returns the session plus the [`Driver`] to spawn. Nothing is
    /// migrated or checked: [`Store::connect`](crate::Store::connect) does that for the PJSIP
    /// tables.
    pub async fn connect(config: &Config) -> Result<(Self, Driver)> {
        let (client, connection) = open(config).await?;
        Ok(Self::from_parts(config, client, connection))
    }

    pub(crate) fn from_parts(
        config: &Config,
        client: Client,
        connection: PgConnection,
    ) -> (Self, Driver) {
        let (alive_tx, alive_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            config: config.clone(),
            conn: Mutex::new(Some(Conn {
                client,
                generation: 0,
            })),
            fence: std::sync::RwLock::new(None),
            _alive: alive_tx,
        });
        let driver = Driver {
            inner: Arc::downgrade(&inner),
            config: config.clone(),
            connection: Some(connection),
            alive: alive_rx,
            generation: 0,
        };
        (Self { inner }, driver)
    }

    /// Waits for the connection (other operations first); [`Error::Unavailable`] at once
    /// while it is down.
    pub async fn lock(&self) -> Result<Guard<'_>> {
        let conn = self.inner.conn.lock().await;
        match conn.as_ref() {
            Some(c) if !c.client.is_closed() => Ok(Guard {
                conn,
                fence: self.fence(),
            }),
            _ => Err(Error::Unavailable),
        }
    }

    /// Fences every later write transaction of this session (`None`: unfenced, the default).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self
            .inner
            .fence
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fence;
    }

    /// The fence set, if any.
    pub fn fence(&self) -> Option<Fence> {
        *self
            .inner
            .fence
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bound of one operation (also each statement's `statement_timeout`).
    pub fn operation_timeout(&self) -> Duration {
        self.inner.config.operation_timeout
    }

    /// The `lock_timeout` transactions set.
    pub fn lock_timeout(&self) -> Duration {
        self.inner.config.lock_timeout
    }

    /// Backend process id of the current connection (for readiness checks and tests).
    pub async fn backend_pid(&self) -> Result<i32> {
        let guard = self.lock().await?;
        Ok(guard
            .client()
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0))
    }
}

/// Keeps the connection alive and reconnects (with back-off) after it is lost. Spawn it; it
/// ends when every [`Session`] handle is dropped.
#[must_use = "the driver does nothing unless spawned"]
pub struct Driver {
    inner: std::sync::Weak<Inner>,
    config: Config,
    /// The live connection; dropped as soon as it ends, so that the client's requests fail
    /// fast instead of queueing into a connection nobody polls.
    connection: Option<PgConnection>,
    alive: oneshot::Receiver<()>,
    generation: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Driver {
    /// Runs until every [`Session`] is dropped.
    pub async fn run(mut self) {
        loop {
            // drive the current connection until it ends (or the session goes away)
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
            if !self.reconnect().await {
                return;
            }
        }
    }

    /// Reconnects with exponential back-off and jitter; `false` once the session is gone.
    async fn reconnect(&mut self) -> bool {
        let mut backoff =
            exp_backoff::Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                _ = &mut self.alive => return false,
            }
            match open(&self.config).await {
                Ok((client, connection)) => {
                    let Some(inner) = self.inner.upgrade() else {
                        return false;
                    };
                    self.generation += 1;
                    *inner.conn.lock().await = Some(Conn {
                        client,
                        generation: self.generation,
                    });
                    self.connection = Some(connection);
                    tracing::info!("database connection re-established");
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "database reconnect failed"),
            }
        }
    }
}

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
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::store::Config;

pub(crate) type PgConnection =
    Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

struct Conn {
    client: Client,
    /// Counts connections: a new one needs its prepared statements again.
    generation: u64,
}

struct Inner {
    config: Config,
    conn: Mutex<Option<Conn>>,
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
            Some(c) if !c.client.is_closed() => Ok(Guard { conn }),
            _ => Err(Error::Unavailable),
        }
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

//! The hexidian binary as a library: [`start`]/[`run`] wire the adapters over the protocol
//! crates into `broker_core` and serve the admin endpoints; `main.rs` only parses the command
//! line, reads the config file and handles signals.

pub mod adapters;
mod admin;
pub mod asterisk_kit;
pub mod cli;
pub mod config;
mod net;
mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_core::ports::{BoxFuture, Clock, EventFeed, SipProvisioning, StateStore};
use broker_core::{Broker, BrokerConfig, BrokerPorts, BrokerStatus};
use tokio::sync::watch;
use tokio::task::JoinSet;
use unbound_handsets::ports::HandsetState;

use crate::adapters::{Guru3Feed, OmmDect, OmmHandsets, OmmLink, PgSip, PgState};

/// The unbound-handset workflow and its token-call webhook.
#[derive(Debug, Clone)]
pub struct UnboundSettings {
    /// Where the webhook listens (the Asterisk-facing address).
    pub listen: SocketAddr,
    /// Answer token calls within this (default 3 s; later answers are `RETRY`).
    pub deadline: Duration,
    /// The workflow.
    pub config: unbound_handsets::Config,
}

/// Where the PBX rows and the broker's state live.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreSettings {
    /// PostgreSQL with Asterisk's realtime tables (production).
    Postgres(Box<asterisk_realtime::Config>),
    /// Other implementations of the ports (the demo's in-memory store, say).
    Ports(StorePorts),
}

/// The store ports of [`StoreSettings::Ports`]: the PBX, the broker's state and the unbound
/// workflow's binds and outbox. They are shared by the broker and the side tasks.
#[derive(Clone)]
pub struct StorePorts {
    /// PBX rows.
    pub sip: Arc<dyn SipProvisioning>,
    /// Mirror and journal.
    pub state: Arc<dyn StateStore>,
    /// Binds and the ASSIGN_HANDSET outbox.
    pub handsets: Arc<dyn HandsetState>,
}

impl std::fmt::Debug for StorePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePorts").finish_non_exhaustive()
    }
}

/// Everything [`start`] needs, already resolved (secrets read, TLS built).
#[derive(Debug, Clone)]
pub struct Settings {
    /// GURU3 client.
    pub guru3: guru3_client::Config,
    /// GURU3 feed timing.
    pub feed: guru3_client::FeedConfig,
    /// OMM client.
    pub omm: omm_axi::Config,
    /// PBX and state store.
    pub store: StoreSettings,
    /// Delivery loop tuning.
    pub broker: BrokerConfig,
    /// Admin listener (`/healthz`, `/readyz`); `None` to disable.
    pub admin: Option<SocketAddr>,
    /// Unbound handsets and the token-call webhook; `None` to disable.
    pub unbound: Option<UnboundSettings>,
    /// Write each DECT extension's token into its OMM user's `hierarchy2` (default off: any
    /// read-only OMM account could read the tokens and claim extensions with them).
    pub omm_token_field: bool,
}

/// Failures that stop [`start`] or [`run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid settings.
    #[error("configuration: {0}")]
    Config(String),
    /// The GURU3 client refused its configuration.
    #[error("guru3 client")]
    Guru3(#[from] guru3_client::Error),
    /// Binding the admin listener failed.
    #[error("admin listener")]
    Admin(#[source] std::io::Error),
    /// Binding the token-call webhook failed.
    #[error("token-call webhook listener")]
    Webhook(#[source] std::io::Error),
    /// The broker stopped with an error.
    #[error("broker: {0}")]
    Broker(String),
}

/// Tokio time as the broker's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Shared view of the peers, for the admin endpoints.
#[derive(Clone)]
pub(crate) struct Health {
    pub(crate) feed: Arc<Guru3Feed>,
    pub(crate) omm: Arc<OmmLink>,
    pub(crate) pg: Arc<Mutex<Option<asterisk_realtime::Store>>>,
    pub(crate) memory_store: bool,
    pub(crate) state: Arc<Mutex<Option<Arc<dyn StateStore>>>>,
    pub(crate) broker: Arc<Mutex<Option<Arc<Mutex<BrokerStatus>>>>>,
    pub(crate) unbound: Arc<Mutex<Option<unbound_handsets::Unbound>>>,
}

/// A started hexidian.
#[derive(Debug)]
pub struct Running {
    admin_addr: Option<SocketAddr>,
    webhook_addr: Option<SocketAddr>,
    unbound: Arc<Mutex<Option<unbound_handsets::Unbound>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    broker: Arc<Mutex<Option<Arc<Mutex<BrokerStatus>>>>>,
    omm: Arc<OmmLink>,
}

impl Running {
    /// Where `/healthz` and `/readyz` are served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the token-call webhook listens.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// The unbound-handset workflow's counters, once it runs.
    pub fn unbound_status(&self) -> Option<unbound_handsets::Status> {
        self.unbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(unbound_handsets::Unbound::status)
    }

    /// The broker's counters (default until the broker has started).
    pub fn status(&self) -> BrokerStatus {
        let b = self.broker.lock().unwrap_or_else(|e| e.into_inner());
        b.as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// OMM sessions opened so far.
    pub fn omm_connects(&self) -> u64 {
        self.omm.connects()
    }

    /// Graceful stop: the batch in progress is finished and its acks are sent.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Broker(format!("broker task: {e}"))),
        }
    }

    /// Kills everything at once, wherever it is (what a crash does).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Waits until hexidian stops by itself (it only does on a fatal error).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Broker(format!("broker task: {e}"))),
        }
    }
}

/// Starts every component; returns once the admin listener is bound. Peers that are down
/// are retried in the background (the admin endpoints report them).
pub async fn start(settings: Settings) -> Result<Running, Error> {
    if let Some(u) = &settings.unbound {
        if u.config.key.is_none() && !u.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "[unbound] listens on {} without a key: anyone who reaches it could bind \
                 handsets; set key_env or key_file (or listen on loopback)",
                u.listen
            )));
        }
    }
    let client = guru3_client::Client::new(settings.guru3.clone())?;
    let (feed, watcher) = guru3_client::client::feed(client, settings.feed.clone());
    let feed = Arc::new(Guru3Feed::new(feed));
    let omm = OmmLink::new();
    let (stop, stop_rx) = watch::channel(false);
    let health = Health {
        feed: Arc::clone(&feed),
        omm: Arc::clone(&omm),
        pg: Arc::default(),
        memory_store: !matches!(settings.store, StoreSettings::Postgres(_)),
        state: Arc::default(),
        broker: Arc::default(),
        unbound: Arc::default(),
    };
    let admin = match settings.admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(Error::Admin)?,
        ),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let hook = match &settings.unbound {
        Some(u) => Some(
            tokio::net::TcpListener::bind(u.listen)
                .await
                .map_err(Error::Webhook)?,
        ),
        None => None,
    };
    let webhook_addr = hook.as_ref().and_then(|l| l.local_addr().ok());
    let broker_slot = Arc::clone(&health.broker);
    let unbound_slot = Arc::clone(&health.unbound);
    let listeners = Listeners { admin, hook };
    let task = tokio::spawn(supervise(
        settings,
        feed,
        watcher,
        Arc::clone(&omm),
        listeners,
        health,
        stop_rx,
    ));
    Ok(Running {
        admin_addr,
        webhook_addr,
        unbound: unbound_slot,
        stop,
        task,
        broker: broker_slot,
        omm,
    })
}

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let running = start(settings).await?;
    tokio::pin!(shutdown);
    let stop = running.stop.clone();
    let task = running.task;
    tokio::pin!(task);
    tokio::select! {
        r = &mut task => return r.map_err(|e| Error::Broker(e.to_string()))?,
        () = &mut shutdown => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    task.await.map_err(|e| Error::Broker(e.to_string()))?
}

/// Applied and ignored journal rows are kept this long (dead letters stay until an operator
/// removes them).
pub const JOURNAL_KEEP: Duration = Duration::from_secs(7 * 86_400);

/// Deletes old applied and ignored journal rows, hourly (and at start).
async fn prune_journal(store: hexidian_state::Store, mut stop: watch::Receiver<bool>) {
    loop {
        loop {
            match store.prune_journal(JOURNAL_KEEP).await {
                Ok(n) if n >= 10_000 => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(rows = n, "old journal rows pruned");
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "pruning the journal failed; next hour again");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

struct Listeners {
    admin: Option<tokio::net::TcpListener>,
    hook: Option<tokio::net::TcpListener>,
}

async fn supervise(
    settings: Settings,
    feed: Arc<Guru3Feed>,
    watcher: guru3_client::Watcher,
    omm: Arc<OmmLink>,
    listeners: Listeners,
    health: Health,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let Listeners { admin, hook } = listeners;
    // shutdown runs in phases: the broker first (its batch finishes while the links are up),
    // then the listeners and the handset workflow, then the links
    let (services_tx, services) = watch::channel(false);
    let (links_tx, links) = watch::channel(false);
    // every helper task lives in one of these sets: aborting the supervisor ends them all;
    // any of them ending before shutdown stops the process (with an error)
    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    let mut link_tasks: JoinSet<&'static str> = JoinSet::new();
    link_tasks.spawn(named("guru3 websocket watcher", watcher.run()));
    link_tasks.spawn(named(
        "omm link",
        Arc::clone(&omm).maintain(settings.omm.clone(), links.clone()),
    ));
    if let Some(listener) = admin {
        tasks.spawn(named(
            "admin listener",
            admin::serve(listener, health.clone(), services.clone()),
        ));
    }
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    type Stores = (
        Arc<dyn SipProvisioning>,
        Arc<dyn StateStore>,
        Arc<dyn SipProvisioning>,
        Arc<dyn StateStore>,
        Arc<dyn HandsetState>,
    );
    // (broker PBX, broker state, side PBX, side state, handset state): the broker's batches
    // and resync transactions have a connection of their own; readiness, dead letters, the
    // token-call webhook and the unbound workflow use a second one, so they never queue
    // behind a long transaction
    let (sip, state, side_sip, side_state, handset_state): Stores = match &settings.store {
        StoreSettings::Postgres(cfg) => {
            let mut backoff =
                exp_backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                let both = async {
                    let (main, driver) = asterisk_realtime::Store::connect((**cfg).clone()).await?;
                    let (side, side_driver) =
                        asterisk_realtime::Store::connect((**cfg).clone()).await?;
                    // the state tables share the PBX store's session; attaching needs the
                    // driver running, so it is polled here until the attach is done
                    let mut driver = Box::pin(driver.run());
                    let attach =
                        hexidian_state::Store::attach(main.session().clone(), cfg.migrates());
                    let state = tokio::select! {
                        r = attach => r?,
                        () = &mut driver => {
                            return Err(asterisk_realtime::Error::Unavailable);
                        }
                    };
                    let mut side_driver = Box::pin(side_driver.run());
                    let side_state = tokio::select! {
                        // the side connection reads and writes the same tables; they exist now
                        r = hexidian_state::Store::attach(side.session().clone(), false) => r?,
                        () = &mut side_driver => {
                            return Err(asterisk_realtime::Error::Unavailable);
                        }
                    };
                    Ok::<_, asterisk_realtime::Error>((
                        main,
                        driver,
                        state,
                        side,
                        side_driver,
                        side_state,
                    ))
                };
                match both.await {
                    Ok((store, driver, state, side, side_driver, side_state)) => {
                        link_tasks.spawn(named("postgres connection", driver));
                        link_tasks.spawn(named("postgres side connection", side_driver));
                        tasks.spawn(named(
                            "journal pruning",
                            prune_journal(side_state.clone(), services.clone()),
                        ));
                        *health.pg.lock().unwrap_or_else(|e| e.into_inner()) = Some(side.clone());
                        let side_state = Arc::new(PgState::new(side_state));
                        break (
                            Arc::new(PgSip::new(store)),
                            Arc::new(PgState::new(state)),
                            Arc::new(PgSip::new(side)),
                            Arc::clone(&side_state) as Arc<dyn StateStore>,
                            side_state as Arc<dyn HandsetState>,
                        );
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "postgres not reachable; retrying");
                    }
                    Err(e) => return Err(Error::Config(format!("postgres: {e}"))),
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.changed() => {}
                }
                if stopped(&stop) {
                    return Ok(());
                }
            }
        }
        StoreSettings::Ports(p) => (
            Arc::clone(&p.sip),
            Arc::clone(&p.state),
            Arc::clone(&p.sip),
            Arc::clone(&p.state),
            Arc::clone(&p.handsets),
        ),
    };
    *health.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(side_state);
    let assigns = Arc::clone(&feed) as Arc<dyn unbound_handsets::ports::AssignSink>;
    let feed = feed as Arc<dyn EventFeed>;
    let ports = BrokerPorts {
        feed: Arc::clone(&feed),
        dect: Arc::new(OmmDect::new(Arc::clone(&omm)).token_field(settings.omm_token_field)),
        sip: Arc::clone(&sip),
        state,
        clock: Arc::new(SystemClock),
    };
    let broker = loop {
        match Broker::start(ports.clone(), settings.broker.clone()).await {
            Ok(b) => break b,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e.report(), "loading broker state failed; retrying");
            }
            Err(e) => return Err(Error::Broker(e.report())),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
        if stopped(&stop) {
            return Ok(());
        }
    };
    *health.broker.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.status());
    if let (Some(u), Some(listener)) = (&settings.unbound, hook) {
        let unbound = unbound_handsets::Unbound::new(
            unbound_handsets::WorkflowPorts {
                handsets: Arc::new(OmmHandsets::new(Arc::clone(&omm))),
                sip: side_sip,
                state: handset_state,
                guru3: assigns,
                clock: Arc::new(SystemClock),
            },
            u.config.clone(),
            broker.directory(),
        );
        *health.unbound.lock().unwrap_or_else(|e| e.into_inner()) = Some(unbound.clone());
        let limits = webhook::Limits {
            deadline: u.deadline,
        };
        tasks.spawn(named(
            "token-call webhook",
            webhook::serve(listener, unbound.clone(), limits, services.clone()),
        ));
        let stop3 = services.clone();
        tasks.spawn(named("unbound-handset workflow", async move {
            unbound.run(stopped_when(stop3)).await;
        }));
    }
    // the broker stops on the caller's signal, or when a helper task ended unexpectedly
    let (abort_tx, abort) = watch::channel(false);
    let shutdown = {
        let (stop, abort) = (stop.clone(), abort.clone());
        async move {
            tokio::select! {
                () = stopped_when(stop) => {}
                () = stopped_when(abort) => {}
            }
        }
    };
    let (result, failed) =
        watch_tasks(broker.run(shutdown), &mut tasks, &mut link_tasks, &abort_tx).await;
    // phase 2: listeners and the handset workflow; phase 3: the links
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let _ = services_tx.send(true);
    drain(&mut tasks, deadline).await;
    let _ = links_tx.send(true);
    drain_until(&mut link_tasks, deadline, "omm link").await;
    if let Some(what) = failed {
        tracing::error!(task = %what, "a background task ended unexpectedly; hexidian stops");
        return Err(Error::Broker(format!("{what} ended unexpectedly")));
    }
    result.map_err(|e| Error::Broker(e.report()))
}

/// Runs the broker to its end while watching the helper tasks: the first one that ends (it
/// should run until shutdown) is named, and the broker is told to stop after its batch.
async fn watch_tasks<T>(
    run: impl Future<Output = T>,
    tasks: &mut JoinSet<&'static str>,
    link_tasks: &mut JoinSet<&'static str>,
    abort: &watch::Sender<bool>,
) -> (T, Option<String>) {
    tokio::pin!(run);
    let mut failed: Option<String> = None;
    loop {
        tokio::select! {
            r = &mut run => return (r, failed),
            Some(done) = tasks.join_next(), if failed.is_none() => {
                failed = Some(ended(done));
                let _ = abort.send(true);
            }
            Some(done) = link_tasks.join_next(), if failed.is_none() => {
                failed = Some(ended(done));
                let _ = abort.send(true);
            }
        }
    }
}

/// How long the listeners, the workflow and the links get to finish after the broker.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

async fn named(name: &'static str, fut: impl Future<Output = ()>) -> &'static str {
    fut.await;
    name
}

/// Resolves once the flag is set (or its sender is gone).
async fn stopped_when(mut flag: watch::Receiver<bool>) {
    while !*flag.borrow() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}

/// What a task's end says, for the error.
fn ended(done: Result<&'static str, tokio::task::JoinError>) -> String {
    match done {
        Ok(name) => name.to_owned(),
        Err(e) if e.is_panic() => "a background task (panicked)".to_owned(),
        Err(_) => "a background task (cancelled)".to_owned(),
    }
}

/// Waits for every task of `set` until `deadline`, then aborts what is left.
async fn drain(set: &mut JoinSet<&'static str>, deadline: tokio::time::Instant) {
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(_) => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                return;
            }
        }
    }
}

/// Waits (until `deadline`) for the task `name` to end, then aborts the rest: the websocket
/// watcher and the database drivers end only when their handles are dropped, which happens
/// with the supervisor itself.
async fn drain_until(set: &mut JoinSet<&'static str>, deadline: tokio::time::Instant, name: &str) {
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(n))) if n == name => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    set.abort_all();
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn until_aborted(abort: watch::Receiver<bool>) -> &'static str {
        stopped_when(abort).await;
        "broker finished its batch"
    }

    #[tokio::test]
    async fn a_helper_task_that_ends_stops_the_broker_and_is_named() {
        let (abort_tx, abort) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut links = JoinSet::new();
        links.spawn(named("omm link", std::future::pending()));
        tasks.spawn(named("admin listener", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }));
        let (r, failed) =
            watch_tasks(until_aborted(abort), &mut tasks, &mut links, &abort_tx).await;
        assert_eq!(r, "broker finished its batch");
        assert_eq!(failed.as_deref(), Some("admin listener"));
    }

    #[tokio::test]
    async fn a_panicking_helper_task_stops_the_broker() {
        let (abort_tx, abort) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut links = JoinSet::new();
        links.spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            #[allow(clippy::panic)] // the failure under test
            {
                panic!("boom")
            }
        });
        tasks.spawn(named("admin listener", std::future::pending()));
        let (_, failed) =
            watch_tasks(until_aborted(abort), &mut tasks, &mut links, &abort_tx).await;
        assert_eq!(failed.as_deref(), Some("a background task (panicked)"));
    }
}

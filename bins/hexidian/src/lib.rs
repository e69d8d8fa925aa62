//! The hexidian binary as a library: [`start`]/[`run`] wire the adapters over the protocol
//! crates into `broker_core` and serve the admin endpoints; `main.rs` only parses the command
//! line, reads the config file and handles signals.

pub mod adapters;
mod admin;
pub mod asterisk_kit;
pub mod cli;
pub mod config;
mod drift;
mod events;
pub mod ha;
mod metrics;
mod net;
pub mod ops;
mod replay;
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

use crate::adapters::{Guru3Feed, OmmDect, OmmHandsets, OmmLink, OmmStats, PgSip, PgState};
pub use crate::ha::HaSettings;

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
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`); `None` to disable.
    pub admin: Option<SocketAddr>,
    /// Bearer token of the admin listener (every path but `/healthz`); required off loopback.
    pub admin_token: Option<broker_core::model::Secret>,
    /// Clients of the status stream (`/events`, the status page) at once (default 16).
    pub admin_stream_clients: usize,
    /// Unbound handsets and the token-call webhook; `None` to disable.
    pub unbound: Option<UnboundSettings>,
    /// Write each DECT extension's token into its OMM user's `hierarchy2` (default off: any
    /// read-only OMM account could read the tokens and claim extensions with them).
    pub omm_token_field: bool,
    /// How often the broker compares the mirror with the PBX rows and the OMM and reports
    /// drift (`[reconcile] interval_s`); `None`: never.
    pub reconcile_every: Option<Duration>,
    /// Active and standby on one database (`[ha]`).
    pub ha: HaSettings,
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
    pub(crate) omm_stats: Arc<OmmStats>,
    pub(crate) pg: Arc<Mutex<Option<asterisk_realtime::Store>>>,
    pub(crate) memory_store: bool,
    pub(crate) state: Arc<Mutex<Option<Arc<dyn StateStore>>>>,
    pub(crate) broker: Arc<Mutex<Option<Arc<Mutex<BrokerStatus>>>>>,
    pub(crate) unbound: Arc<Mutex<Option<unbound_handsets::Unbound>>>,
    /// What the admin listener's requests must present (none on loopback by default).
    pub(crate) admin_token: Option<broker_core::model::Secret>,
    /// The status stream's publisher side.
    pub(crate) hub: Arc<events::Hub>,
    /// The broker's directory of extensions (for the page's search), once it runs.
    pub(crate) directory: Arc<Mutex<Option<broker_core::model::SharedDirectory>>>,
    /// The broker's feed: GURU3's, plus the dead letters an operator replays.
    pub(crate) replay: Arc<replay::ReplayFeed>,
    /// The last periodic drift check, if it runs.
    pub(crate) drift: Arc<Mutex<Option<drift::Report>>>,
    /// Active or standby.
    pub(crate) ha: Arc<ha::Ha>,
}

impl Health {
    /// A copy of the broker's status, once the broker runs.
    pub(crate) fn broker_status(&self) -> Option<BrokerStatus> {
        self.broker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Reads the broker's live status in place (no copy of its lists), once the broker runs.
    pub(crate) fn with_broker<T>(&self, f: impl FnOnce(&BrokerStatus) -> T) -> Option<T> {
        let slot = self.broker.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .map(|s| f(&s.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// Records the outcome of a periodic drift check.
    pub(crate) fn set_drift(&self, report: drift::Report) {
        *self.drift.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// The last periodic drift check, if one ran.
    pub(crate) fn drift_report(&self) -> Option<drift::Report> {
        self.drift.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The unbound-handset workflow's counters, once it runs.
    pub(crate) fn unbound_status(&self) -> Option<unbound_handsets::Status> {
        self.unbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(unbound_handsets::Unbound::status)
    }
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
    if let Some(addr) = settings.admin {
        if settings.admin_token.is_none() && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "[admin] listens on {addr} without a token: /readyz and /metrics show extension \
                 numbers and failure reasons; set token_env or token_file (or listen on loopback)"
            )));
        }
    }
    let client = guru3_client::Client::new(settings.guru3.clone())?;
    let (feed, watcher) = guru3_client::client::feed(client, settings.feed.clone());
    let feed = Arc::new(Guru3Feed::new(feed));
    let omm = adapters::omm_link();
    let shared_db = matches!(settings.store, StoreSettings::Postgres(_));
    if shared_db && !hexidian_state::leader::valid_instance_name(&settings.ha.instance) {
        return Err(Error::Config(format!(
            "[ha] instance {:?}: 1 to 40 letters, digits, '.', '_' or '-'",
            settings.ha.instance
        )));
    }
    let ha = ha::Ha::new(&settings.ha.instance, !shared_db);
    if shared_db {
        // OMM writes and GURU3 acks only while this instance's epoch is the current one
        omm.set_write_gate(Some(Arc::new(ha::OmmGate(Arc::clone(&ha)))));
        feed.set_gate(Arc::clone(&ha));
    }
    let (stop, stop_rx) = watch::channel(false);
    let health = Health {
        feed: Arc::clone(&feed),
        omm: Arc::clone(&omm),
        omm_stats: Arc::default(),
        pg: Arc::default(),
        memory_store: !matches!(settings.store, StoreSettings::Postgres(_)),
        state: Arc::default(),
        broker: Arc::default(),
        unbound: Arc::default(),
        admin_token: settings.admin_token.clone(),
        hub: events::Hub::new(settings.admin_stream_clients),
        directory: Arc::default(),
        replay: Arc::new(replay::ReplayFeed::new(
            Arc::clone(&feed) as Arc<dyn EventFeed>
        )),
        drift: Arc::default(),
        ha,
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
    // the addresses as bound (a port 0 in the config becomes a real one here)
    if let Some(a) = admin_addr {
        tracing::info!(addr = %a, "admin listener ready");
    }
    if let Some(a) = webhook_addr {
        tracing::info!(addr = %a, "webhook listener ready");
    }
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

/// `hexidian --version`: the package version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HEXIDIAN_COMMIT"),
    ")"
);

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
                    // answered ASSIGN_HANDSETs go with the journal rows of their time
                    match store.prune_outbox(JOURNAL_KEEP).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "answered ASSIGN_HANDSETs pruned"),
                        Err(e) => tracing::debug!(error = %e, "pruning the outbox failed"),
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

/// Tries `attempt` until it succeeds, fails for good, or `stop` is set (`Ok(None)`).
/// `transient` says which failures are worth another try (and how to log them); those are
/// retried after `backoff`'s next delay.
async fn retry_until<T, E, Fut>(
    stop: &mut watch::Receiver<bool>,
    mut backoff: exp_backoff::Backoff,
    what: &str,
    mut attempt: impl FnMut() -> Fut,
    transient: impl Fn(&E) -> Option<String>,
) -> Result<Option<T>, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) => match transient(&e) {
                Some(why) => tracing::warn!(error = %why, "{what}; retrying"),
                None => return Err(e),
            },
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            r = stop.changed() => {
                if r.is_err() {
                    return Ok(None);
                }
            }
        }
    }
}

/// The store ports: the broker's batches and resync transactions have a connection of
/// their own; readiness, dead letters, the token-call webhook and the unbound workflow use a
/// second one, so they never queue behind a long transaction.
struct Stores {
    sip: Arc<dyn SipProvisioning>,
    state: Arc<dyn StateStore>,
    side_sip: Arc<dyn SipProvisioning>,
    side_state: Arc<dyn StateStore>,
    handset_state: Arc<dyn HandsetState>,
    /// PostgreSQL: both sessions (fenced while active) and the state tables to prune.
    pg: Option<(Vec<asterisk_realtime::Session>, hexidian_state::Store)>,
}

impl Stores {
    fn from_ports(p: &StorePorts) -> Self {
        Self {
            sip: Arc::clone(&p.sip),
            state: Arc::clone(&p.state),
            side_sip: Arc::clone(&p.sip),
            side_state: Arc::clone(&p.state),
            handset_state: Arc::clone(&p.handsets),
            pg: None,
        }
    }

    /// Every later write of both sessions checks `fence` first.
    fn fence(&self, fence: asterisk_realtime::Fence) {
        for session in self.pg.iter().flat_map(|(s, _)| s) {
            session.set_fence(Some(fence));
        }
    }
}

/// Both PostgreSQL connections, their drivers (not yet spawned) and the state tables on each.
struct Postgres {
    main: asterisk_realtime::Store,
    main_driver: BoxFuture<'static, ()>,
    main_state: hexidian_state::Store,
    side: asterisk_realtime::Store,
    side_driver: BoxFuture<'static, ()>,
    side_state: hexidian_state::Store,
}

/// Opens both connections and attaches the state tables (migrating them if `cfg` migrates).
async fn connect_postgres(cfg: &asterisk_realtime::Config) -> asterisk_realtime::Result<Postgres> {
    let (main, driver) = asterisk_realtime::Store::connect(cfg.clone()).await?;
    let (side, side_driver) = asterisk_realtime::Store::connect(cfg.clone()).await?;
    // the state tables share the PBX store's session; attaching needs the driver running,
    // so it is polled here until the attach is done (and spawned by the caller afterwards)
    let mut main_driver: BoxFuture<'static, ()> = Box::pin(driver.run());
    let main_state = tokio::select! {
        r = hexidian_state::Store::attach(main.session().clone(), cfg.migrates()) => r?,
        () = &mut main_driver => return Err(asterisk_realtime::Error::Unavailable),
    };
    let mut side_driver: BoxFuture<'static, ()> = Box::pin(side_driver.run());
    let side_state = tokio::select! {
        // the side connection reads and writes the same tables; they exist now
        r = hexidian_state::Store::attach(side.session().clone(), false) => r?,
        () = &mut side_driver => return Err(asterisk_realtime::Error::Unavailable),
    };
    Ok(Postgres {
        main,
        main_driver,
        main_state,
        side,
        side_driver,
        side_state,
    })
}

/// The helper tasks of a supervisor: aborting it ends them all; any of them ending before
/// shutdown stops the process (with an error). Shutdown runs in phases: the broker first (its
/// batch finishes while the links are up), then `tasks` (listeners, the handset workflow),
/// then `links`.
struct Helpers {
    tasks: JoinSet<&'static str>,
    links: JoinSet<&'static str>,
    services: watch::Receiver<bool>,
}

impl Postgres {
    /// Spawns the drivers and the journal pruning; the ports over both connections.
    fn wire(self, helpers: &mut Helpers, health: &Health) -> Stores {
        helpers
            .links
            .spawn(named("postgres connection", self.main_driver));
        helpers
            .links
            .spawn(named("postgres side connection", self.side_driver));
        *health.pg.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.side.clone());
        let sessions = vec![self.main.session().clone(), self.side.session().clone()];
        let prune = self.side_state.clone();
        let side_state = Arc::new(PgState::new(self.side_state));
        Stores {
            sip: Arc::new(PgSip::new(self.main)),
            state: Arc::new(PgState::new(self.main_state)),
            side_sip: Arc::new(PgSip::new(self.side)),
            side_state: Arc::clone(&side_state) as Arc<dyn StateStore>,
            handset_state: side_state as Arc<dyn HandsetState>,
            pg: Some((sessions, prune)),
        }
    }
}

/// Starts the unbound-handset workflow (the webhook, which runs in every role, answers
/// through it from now on).
fn start_unbound(
    u: &UnboundSettings,
    ports: unbound_handsets::WorkflowPorts,
    broker: &Broker,
    active: &mut JoinSet<&'static str>,
    services: watch::Receiver<bool>,
    health: &Health,
) {
    let unbound = unbound_handsets::Unbound::new(ports, u.config.clone(), broker.directory());
    *health.unbound.lock().unwrap_or_else(|e| e.into_inner()) = Some(unbound.clone());
    active.spawn(named("unbound-handset workflow", async move {
        unbound.run(stopped_when(services)).await;
    }));
}

/// How a term as the active instance ended.
enum Term {
    /// Shutdown (asked for, or a task ended): the broker's result and the task that ended.
    Stopped(Result<(), broker_core::ports::PortError>, Option<String>),
    /// Another instance took over, or this one's lock connection failed.
    Lost(hexidian_state::leader::Lost),
}

/// Renews the lease until leadership is lost. A failed lock connection alone is not a loss:
/// the lock is taken again (after a lease when a standby is around: it takes over meanwhile)
/// and the term goes on if the epoch did not move (a database restart, a dropped connection);
/// the OMM and GURU3 gate stays shut until then.
async fn keep_leadership(
    leadership: Option<(
        &mut hexidian_state::leader::Candidate,
        Arc<hexidian_state::leader::Lease>,
    )>,
    lease: Duration,
    health: &Health,
) -> hexidian_state::leader::Lost {
    use hexidian_state::leader::Lost;
    let Some((candidate, mut current)) = leadership else {
        return std::future::pending().await;
    };
    let poll = (lease / 6).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let e = match current.hold().await {
            Lost::Superseded => return Lost::Superseded,
            Lost::Connection(e) => e,
        };
        tracing::warn!(error = %e, "the lock connection failed; taking the lock again");
        let epoch = current.epoch();
        loop {
            // with a standby around, it gets the first chance (it polls several times within
            // a lease): a cut-off active must not win the lock back from one ready to take over
            match candidate.others().await {
                Ok(0) => {}
                Ok(_) => tokio::time::sleep(lease).await,
                Err(_) => {
                    tokio::time::sleep(poll).await;
                    continue;
                }
            }
            match candidate.resume(epoch).await {
                Ok(Some(l)) => {
                    current = Arc::new(l);
                    health.ha.resumed(Arc::clone(&current));
                    break;
                }
                Ok(None) => return Lost::Connection(e),
                // the database is away: nobody can take over meanwhile
                Err(_) => tokio::time::sleep(poll).await,
            }
        }
    }
}

/// Standby until `candidate` becomes active (the role shown as it goes); `None` on shutdown.
async fn until_active(
    candidate: &mut hexidian_state::leader::Candidate,
    lease: Duration,
    stop: &mut watch::Receiver<bool>,
    health: &Health,
) -> Option<hexidian_state::leader::Lease> {
    use hexidian_state::leader::Attempt;
    let poll = (lease / 6).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut failing = false;
    loop {
        match candidate.attempt().await {
            Ok(Attempt::Active(l)) => return Some(*l),
            Ok(Attempt::Standby(h)) => {
                if health.ha.role()
                    != (ha::Role::Standby {
                        active: h.name.clone(),
                        epoch: h.epoch,
                    })
                {
                    tracing::info!(active = %h.name, epoch = h.epoch, "standby: another instance is active");
                }
                health.ha.standby(h.name, h.epoch);
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "standby: cannot ask the database who is active; trying again");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = stopped_when(stop.clone()) => return None,
        }
    }
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
    let (services_tx, services) = watch::channel(false);
    let (links_tx, links) = watch::channel(false);
    let mut helpers = Helpers {
        tasks: JoinSet::new(),
        links: JoinSet::new(),
        services,
    };
    // phase 1: the links, the admin listener and the webhook (readiness tells while the rest
    // starts; a token call is answered RETRY until this instance's handset workflow runs)
    helpers
        .links
        .spawn(named("guru3 websocket watcher", watcher.run()));
    helpers.links.spawn(named(
        "omm link",
        Arc::clone(&omm).maintain(
            settings
                .omm
                .clone()
                .observer(Arc::clone(&health.omm_stats) as Arc<dyn omm_axi::client::Observer>),
            links.clone(),
        ),
    ));
    if let Some(listener) = admin {
        helpers.tasks.spawn(named(
            "admin listener",
            admin::serve(listener, health.clone(), helpers.services.clone()),
        ));
    }
    if let (Some(u), Some(listener)) = (&settings.unbound, hook) {
        let limits = webhook::Limits {
            deadline: u.deadline,
        };
        helpers.tasks.spawn(named(
            "token-call webhook",
            webhook::serve(
                listener,
                Arc::clone(&health.unbound),
                limits,
                helpers.services.clone(),
            ),
        ));
    }
    // phase 2: the stores, retried until PostgreSQL answers
    let mut candidate = None;
    let stores = match &settings.store {
        StoreSettings::Postgres(cfg) => {
            let app = hexidian_state::leader::application_name(&settings.ha.instance);
            let cfg = (**cfg).clone().application_name(&app);
            let pg = retry_until(
                &mut stop,
                exp_backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
                "postgres not reachable",
                || connect_postgres(&cfg),
                |e: &asterisk_realtime::Error| e.is_transient().then(|| e.to_string()),
            )
            .await
            .map_err(|e| Error::Config(format!("postgres: {e}")))?;
            let Some(pg) = pg else {
                return Ok(());
            };
            candidate = Some(
                hexidian_state::leader::Candidate::new(
                    &cfg,
                    &settings.ha.instance,
                    settings.ha.lease,
                )
                .map_err(|e| Error::Config(e.to_string()))?,
            );
            pg.wire(&mut helpers, &health)
        }
        StoreSettings::Ports(p) => Stores::from_ports(p),
    };
    *health.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&stores.side_state));
    // the roles: standby until this instance holds leadership, active until it loses it
    let (result, failed) = loop {
        let lease = match candidate.as_mut() {
            Some(c) => match until_active(c, settings.ha.lease, &mut stop, &health).await {
                Some(l) => Some(Arc::new(l)),
                None => break (Ok(()), None),
            },
            None => None,
        };
        if let Some(l) = &lease {
            stores.fence(l.fence());
            health.ha.activate(Arc::clone(l));
        }
        let term = serve_term(
            &settings,
            &feed,
            &omm,
            &stores,
            &health,
            &mut helpers,
            &mut stop,
            candidate.as_mut().zip(lease),
        )
        .await;
        match term {
            Some(Term::Stopped(r, failed)) => break (r, failed),
            None => break (Ok(()), None),
            Some(Term::Lost(why)) => {
                // the gate closes first: no OMM write, no ack from here on
                health.ha.step_down();
                *health.unbound.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *health.broker.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *health.directory.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::error!(reason = %why, "leadership lost: this instance stops working and becomes a standby");
            }
        }
    };
    // shutdown: listeners and the handset workflow, then the links
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let _ = services_tx.send(true);
    drain(&mut helpers.tasks, deadline).await;
    let _ = links_tx.send(true);
    drain_until(&mut helpers.links, deadline, "omm link").await;
    if let Some(what) = failed {
        tracing::error!(task = %what, "a background task ended unexpectedly; hexidian stops");
        return Err(Error::Broker(format!("{what} ended unexpectedly")));
    }
    result.map_err(|e| Error::Broker(e.report()))
}

/// One term as the active instance (the only one without a database to share): the broker,
/// the handset workflow and the periodic jobs, until shutdown or until `lease` is lost
/// (dropped then, mid-batch: the fence refuses whatever write of it comes late). `None` when
/// shutdown came before the broker could start.
#[allow(clippy::too_many_arguments)]
async fn serve_term(
    settings: &Settings,
    feed: &Arc<Guru3Feed>,
    omm: &Arc<OmmLink>,
    stores: &Stores,
    health: &Health,
    helpers: &mut Helpers,
    stop: &mut watch::Receiver<bool>,
    leadership: Option<(
        &mut hexidian_state::leader::Candidate,
        Arc<hexidian_state::leader::Lease>,
    )>,
) -> Option<Term> {
    let lost = keep_leadership(leadership, settings.ha.lease, health);
    tokio::pin!(lost);
    let mut active: JoinSet<&'static str> = JoinSet::new();
    // the broker, retried until its state loads
    let assigns = Arc::clone(feed) as Arc<dyn unbound_handsets::ports::AssignSink>;
    let ports = BrokerPorts {
        feed: Arc::clone(&health.replay) as Arc<dyn EventFeed>,
        dect: Arc::new(OmmDect::new(Arc::clone(omm)).token_field(settings.omm_token_field)),
        sip: Arc::clone(&stores.sip),
        state: Arc::clone(&stores.state),
        clock: Arc::new(SystemClock),
    };
    let start = retry_until(
        stop,
        exp_backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
        "loading broker state failed",
        || Broker::start(ports.clone(), settings.broker.clone()),
        |e: &broker_core::ports::PortError| e.is_transient().then(|| e.report()),
    );
    let broker = tokio::select! {
        r = start => r,
        why = &mut lost => return Some(Term::Lost(why)),
    };
    let broker = match broker {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => return Some(Term::Stopped(Err(e), None)),
    };
    *health.broker.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.status());
    *health.directory.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.directory());
    // the handset workflow and the periodic jobs
    if let Some(u) = &settings.unbound {
        let ports = unbound_handsets::WorkflowPorts {
            handsets: Arc::new(OmmHandsets::new(Arc::clone(omm))),
            sip: Arc::clone(&stores.side_sip),
            state: Arc::clone(&stores.handset_state),
            guru3: assigns,
            clock: Arc::new(SystemClock),
        };
        start_unbound(
            u,
            ports,
            &broker,
            &mut active,
            helpers.services.clone(),
            health,
        );
    }
    if let Some((_, prune)) = &stores.pg {
        active.spawn(named(
            "journal pruning",
            prune_journal(prune.clone(), helpers.services.clone()),
        ));
    }
    if let Some(every) = settings.reconcile_every {
        active.spawn(named(
            "drift check",
            drift::watch(health.clone(), every, helpers.services.clone()),
        ));
    }
    // run: the broker stops on the caller's signal, or when a helper task ended unexpectedly
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
    let run = watch_tasks(
        broker.run(shutdown),
        [&mut active, &mut helpers.tasks, &mut helpers.links],
        &abort_tx,
    );
    let term = tokio::select! {
        (result, failed) = run => Term::Stopped(result, failed),
        why = &mut lost => Term::Lost(why),
    };
    if matches!(term, Term::Stopped(..)) {
        // the workflow and the jobs finish with the other services
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        drain(&mut active, deadline).await;
    }
    Some(term)
}

/// Runs the broker to its end while watching the helper tasks: the first one that ends (it
/// should run until shutdown) is named, and the broker is told to stop after its batch.
async fn watch_tasks<T, const N: usize>(
    run: impl Future<Output = T>,
    mut sets: [&mut JoinSet<&'static str>; N],
    abort: &watch::Sender<bool>,
) -> (T, Option<String>) {
    tokio::pin!(run);
    let mut failed: Option<String> = None;
    loop {
        // the first task of any set to end (an empty set waits for ever)
        let any_ended = futures_util::future::select_all(sets.iter_mut().map(|s| {
            Box::pin(async move {
                match s.join_next().await {
                    Some(done) => done,
                    None => std::future::pending().await,
                }
            })
        }));
        tokio::select! {
            r = &mut run => return (r, failed),
            (done, _, _) = any_ended, if failed.is_none() => {
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
            watch_tasks(until_aborted(abort), [&mut tasks, &mut links], &abort_tx).await;
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
            watch_tasks(until_aborted(abort), [&mut tasks, &mut links], &abort_tx).await;
        assert_eq!(failed.as_deref(), Some("a background task (panicked)"));
    }
}

//! The OMM session: connect, log in, subscribe, read the OMM into the [`Map`], follow its
//! events, reconnect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use exp_backoff::Backoff;
use omm_axi::{Client, PpDevice, PpUser};
use tokio::sync::{RwLock, mpsc, watch};

use crate::keys::Keys;
use crate::map::{Known, Map};
use crate::{Error, Result, Tags};

/// Page requests of the start-up pass in flight at once.
const SCAN_DEPTH: usize = 8;

/// How long a change waits for the session's pass over the OMM before it asks the OMM
/// itself (10,000 users and handsets are read in well under a second).
const READ_WAIT: Duration = Duration::from_secs(20);

/// Reconnect delays after a refused connection (nothing listens: the OMM is restarting; a
/// retry costs one SYN, so hexidian is back within a second of the OMM).
const REFUSED: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// Reconnect delays after anything else (timeouts, TLS or login failures, a lost session):
/// each attempt may hold a connection slot of the OMM for the whole timeout.
const OTHER: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

/// What happened on the OMM that a handset workflow cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A device appeared or changed (subscribed, bound, unbound); the map already shows it.
    Device(u32),
    /// The subscription mode changed.
    Mode(String),
    /// The session (re)opened and was read, or events were lost: look at everything again.
    Rescan,
}

/// Asked right before every change to the OMM (a broker with a standby: whether this process
/// is still the active one); a closed gate fails the change with [`Error::NotActive`].
pub trait WriteGate: Send + Sync + std::fmt::Debug + 'static {
    /// Whether writing is allowed now.
    fn open(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The OMM session, kept open by [`Link::maintain`]; the one owner of the OMM. Every change
/// holds the keys of the numbers and the handset it touches (`keys.rs`), so changes of one
/// number or one handset never interleave.
#[derive(Debug)]
pub struct Link {
    pub(crate) tags: Tags,
    client: RwLock<Option<Client>>,
    pub(crate) keys: Keys,
    up: AtomicBool,
    connects: AtomicU64,
    map: Mutex<Map>,
    events_tx: mpsc::Sender<Event>,
    events_rx: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    lagged: AtomicBool,
    /// true while a session's pass over the OMM runs
    reading: watch::Sender<bool>,
    gate: std::sync::RwLock<Option<Arc<dyn WriteGate>>>,
}

/// Notes a user event (full record, changed attributes, or a deletion) in the map; the
/// devices it concerns go to `out`.
fn follow_user(map: &mut Map, u: &PpUser, deleted: bool, out: &mut Vec<Event>) {
    let uid = u.uid().get();
    if deleted {
        if let Known::Yes(row) = map.by_uid(uid) {
            if row.ppn != 0 {
                out.push(Event::Device(row.ppn));
            }
        }
        map.user_gone(uid);
        return;
    }
    map.user(u);
    for p in [u.ppn, u.ppn_old].into_iter().flatten() {
        if !p.is_none() {
            out.push(Event::Device(p.get()));
        }
    }
}

/// Notes a device event in the map; the device goes to `out`.
fn follow_device(map: &mut Map, d: &PpDevice, deleted: bool, out: &mut Vec<Event>) {
    if deleted {
        map.device_gone(d.ppn().get());
        return;
    }
    map.device(d);
    if !d.ppn().is_none() {
        out.push(Event::Device(d.ppn().get()));
    }
}

/// What an OMM event changes in the map, and which devices it concerns.
fn follow(map: &mut Map, ev: &omm_axi::Event) -> Vec<Event> {
    use omm_axi::Event as E;
    let mut out = Vec::new();
    match ev {
        E::PpCnf {
            deleted_user,
            deleted_device,
            user,
            device,
        } => {
            if let Some(u) = user {
                follow_user(map, u, *deleted_user, &mut out);
            }
            if let Some(d) = device {
                follow_device(map, d, *deleted_device, &mut out);
            }
        }
        E::PpUserCnf { deleted, user } => follow_user(map, user, *deleted, &mut out),
        E::PpDevCnf { deleted, device } => follow_device(map, device, *deleted, &mut out),
        E::DectSubscriptionMode { mode } => out.push(Event::Mode(mode.as_str().to_owned())),
        E::Lagged(_) => out.push(Event::Rescan),
        _ => {}
    }
    out.dedup();
    out
}

impl Link {
    /// A link that is down until [`Link::maintain`] connects it; writes and recognises the
    /// owner tags `tags`.
    pub fn new(tags: Tags) -> Arc<Self> {
        let (events_tx, rx) = mpsc::channel(4096);
        Arc::new(Self {
            tags,
            client: RwLock::default(),
            keys: Keys::default(),
            up: AtomicBool::default(),
            connects: AtomicU64::default(),
            map: Mutex::default(),
            events_tx,
            events_rx: tokio::sync::Mutex::new(rx),
            lagged: AtomicBool::default(),
            reading: watch::channel(false).0,
            gate: std::sync::RwLock::default(),
        })
    }

    /// Asks `gate` before every change from now on (`None`: always write, the default).
    pub fn set_write_gate(&self, gate: Option<Arc<dyn WriteGate>>) {
        *self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = gate;
    }

    /// [`Error::NotActive`] unless the write gate (if any) is open.
    pub(crate) async fn may_write(&self) -> Result<()> {
        let gate = self
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match gate {
            Some(g) if !g.open().await => Err(Error::NotActive),
            _ => Ok(()),
        }
    }

    /// Whether a session is open.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Sessions opened so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst)
    }

    /// Whether this session's OMM has been read completely (provisioning then answers most
    /// questions without asking the OMM).
    pub fn is_mapped(&self) -> bool {
        self.map().is_complete()
    }

    /// Users and devices the map holds.
    pub fn mapped(&self) -> (usize, usize) {
        self.map().counts()
    }

    /// Every OMM user as this session's map holds it, with its owner and bound handset;
    /// `None` until the map is complete. Costs no request.
    pub fn users(&self) -> Option<Vec<crate::UserView>> {
        let map = self.map();
        let users = map.users()?;
        Some(
            users
                .map(|u| crate::UserView {
                    uid: u.uid,
                    number: u.num.to_string(),
                    name: u.name.to_string(),
                    owner: self.tags.owner_of(Some(&u.hierarchy1), Some(&u.hierarchy2)),
                    ipei: (u.ppn != 0)
                        .then(|| map.device_row(u.ppn).and_then(|d| d.ipei))
                        .flatten(),
                })
                .collect(),
        )
    }

    pub(crate) fn map(&self) -> MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next event (waits; cancel-safe). One reader at a time.
    pub async fn next_event(&self) -> Event {
        let mut rx = self.events_rx.lock().await;
        match rx.recv().await {
            Some(ev) => ev,
            None => std::future::pending().await,
        }
    }

    fn emit(&self, ev: Event) {
        if self.lagged.swap(false, Ordering::SeqCst)
            && self.events_tx.try_send(Event::Rescan).is_err()
        {
            self.lagged.store(true, Ordering::SeqCst);
            return;
        }
        if self.events_tx.try_send(ev).is_err() {
            // nobody keeps up (or listens): the next reader rescans instead
            self.lagged.store(true, Ordering::SeqCst);
        }
    }

    /// Reads every user and device into a fresh map (pipelined pages).
    async fn read_all(&self, client: &Client) -> Result<()> {
        let t0 = Instant::now();
        self.map().restart();
        client
            .scan_users(SCAN_DEPTH, |page| self.map().scanned_users(&page))
            .await?;
        client
            .scan_devices(SCAN_DEPTH, |page| self.map().scanned_devices(&page))
            .await?;
        let mut map = self.map();
        map.finish();
        let (users, devices) = map.counts();
        tracing::info!(
            users,
            devices,
            took_ms = t0.elapsed().as_millis() as u64,
            "omm read"
        );
        Ok(())
    }

    /// Connects, logs in and keeps the session; reconnects with back-off and jitter until
    /// `shutdown` turns true (an observer set on `config` sees every request). A refused connection is retried within a second; other
    /// failures back off up to 30 s.
    pub async fn maintain(
        self: Arc<Self>,
        config: omm_axi::Config,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut refused = Backoff::new(REFUSED.0, REFUSED.1);
        let mut other = Backoff::new(OTHER.0, OTHER.1);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let delay = match omm_axi::connect(&config).await {
                Ok((client, connection, mut events)) => {
                    refused.reset();
                    other.reset();
                    self.map().restart();
                    self.reading.send_replace(true);
                    *self.client.write().await = Some(client.clone());
                    self.up.store(true, Ordering::SeqCst);
                    self.connects.fetch_add(1, Ordering::SeqCst);
                    tracing::info!("omm session open");
                    // requests only progress while `connection` is polled: run them beside it
                    let setup = async {
                        if let Err(e) = client
                            .subscribe(&omm_axi::Subscription::provisioning())
                            .await
                        {
                            tracing::warn!(error = %e, "omm event subscription failed");
                        }
                        if let Err(e) = self.read_all(&client).await {
                            tracing::warn!(error = %e, "omm read failed; changes ask the omm");
                        }
                        self.reading.send_replace(false);
                        // events during the outage are lost: the handset workflow rescans
                        self.emit(Event::Rescan);
                        std::future::pending::<()>().await;
                    };
                    let drain = async {
                        while let Some(ev) = events.recv().await {
                            let out = follow(&mut self.map(), &ev);
                            for d in out {
                                self.emit(d);
                            }
                        }
                        std::future::pending::<()>().await;
                    };
                    let ended = tokio::select! {
                        r = connection => Some(r),
                        () = drain => None,
                        () = setup => None,
                        _ = shutdown.changed() => None,
                    };
                    self.up.store(false, Ordering::SeqCst);
                    self.reading.send_replace(false);
                    self.map().restart();
                    *self.client.write().await = None;
                    match ended {
                        Some(Err(e)) => tracing::warn!(error = %e, "omm session lost"),
                        Some(Ok(())) => tracing::warn!("omm session closed"),
                        None => {
                            if *shutdown.borrow() {
                                return;
                            }
                        }
                    }
                    other.next_delay()
                }
                Err(e) if is_refused(&e) => {
                    tracing::warn!(error = %e, "omm connect refused");
                    refused.next_delay()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "omm connect failed");
                    other.next_delay()
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The open session's client, once the session's pass over the OMM is done (or has
    /// taken longer than [`READ_WAIT`]: then changes ask the OMM themselves).
    pub(crate) async fn client(&self) -> Result<Client> {
        let mut reading = self.reading.subscribe();
        if *reading.borrow_and_update() {
            let _ = tokio::time::timeout(READ_WAIT, reading.wait_for(|r| !*r)).await;
        }
        self.client_now().await
    }

    /// The open session's client at once.
    pub(crate) async fn client_now(&self) -> Result<Client> {
        match &*self.client.read().await {
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => Err(Error::Down),
        }
    }
}

fn is_refused(e: &omm_axi::Error) -> bool {
    matches!(e, omm_axi::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

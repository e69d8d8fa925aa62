//! `DectSystem` over `omm_axi::Client`, plus the link manager that keeps a session open
//! (connect, log in, reconnect with back-off) and reports whether it is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use broker_core::model::Secret as DomainSecret;
use broker_core::model::{Handset, Number};
use broker_core::ports::{BoxFuture, DectSystem, DectUser, PortError, PortErrorKind, PortResult};
use exp_backoff::Backoff;
use omm_axi::{
    Client, ErrorCode, Ipei, PpDevice, PpUser, RelType, Secret, SecretValue, Sensitive,
    SubscriptionState,
};
use tokio::sync::{RwLock, watch};

use super::serial::{Held, Keys};
use unbound_handsets::ports::{DectEvent, Device, Handsets, Lookup, TempUser};

/// `hierarchy1` of every OMM user hexidian creates: users without it are never touched.
pub const OWNER_TAG: &str = "HEXIDIAN";

/// `hierarchy2` of hexidian's temporary users (unbound handsets); never swept by a resync.
pub const TEMP_TAG: &str = "HEXIDIAN-TEMP";

/// Numbers of the users hexidian owns, so a resync's sweep needs no full scan of the OMM
/// (7,000 users are 350 sequential pages). Rebuilt by a background scan after every
/// (re)connect, kept current by the adapter's own creates, deletes and renames; changes made
/// while a scan runs are replayed onto its result.
#[derive(Debug, Default)]
struct OwnedIndex {
    numbers: Option<std::collections::BTreeSet<String>>,
    /// `(number, owned)` changes since the running scan started.
    during_scan: Vec<(String, bool)>,
}

impl OwnedIndex {
    fn note(&mut self, number: &str, owned: bool) {
        match &mut self.numbers {
            Some(set) => {
                if owned {
                    set.insert(number.to_owned());
                } else {
                    set.remove(number);
                }
            }
            None => self.during_scan.push((number.to_owned(), owned)),
        }
    }
}

/// The OMM session, kept open by [`OmmLink::maintain`]; the one owner of the OMM. Both
/// adapters over it ([`OmmDect`] for the broker, [`OmmHandsets`] for the unbound workflow)
/// hold the keys of the numbers and the handset a change touches (`serial.rs`), so changes of
/// one number or one handset never interleave.
#[derive(Debug)]
pub struct OmmLink {
    client: RwLock<Option<Client>>,
    keys: Keys,
    up: AtomicBool,
    connects: AtomicU64,
    owned: std::sync::Mutex<OwnedIndex>,
    events_tx: tokio::sync::mpsc::Sender<DectEvent>,
    events_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<DectEvent>>,
    lagged: AtomicBool,
    stats: Arc<OmmStats>,
}

/// The OMM requests of every session: how many are in flight, how long they took.
#[derive(Debug, Default)]
pub struct OmmStats {
    in_flight: std::sync::atomic::AtomicI64,
    failed: AtomicU64,
    latency: std::sync::Mutex<broker_core::Latency>,
}

impl OmmStats {
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed).max(0)
    }

    /// Requests that were refused, timed out or cut off.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// How long requests took (answered or not).
    pub fn latency(&self) -> broker_core::Latency {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl omm_axi::client::Observer for OmmStats {
    fn started(&self, _request: &str) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, _request: &str, took: Duration, ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(took);
    }
}

impl Default for OmmLink {
    fn default() -> Self {
        let (events_tx, rx) = tokio::sync::mpsc::channel(4096);
        Self {
            client: RwLock::default(),
            keys: Keys::default(),
            up: AtomicBool::default(),
            connects: AtomicU64::default(),
            owned: std::sync::Mutex::default(),
            events_tx,
            events_rx: tokio::sync::Mutex::new(rx),
            stats: Arc::default(),
            lagged: AtomicBool::default(),
        }
    }
}

/// What an OMM event means for the handset workflow.
fn dect_events(ev: &omm_axi::Event) -> Vec<DectEvent> {
    use omm_axi::Event as E;
    let from_user = |u: &PpUser| {
        u.ppn
            .filter(|p| !p.is_none())
            .or(u.ppn_old)
            .filter(|p| !p.is_none())
            .map(|p| DectEvent::Device(p.get()))
    };
    match ev {
        E::PpCnf { user, device, .. } => match (device, user) {
            (Some(d), _) if !d.ppn().is_none() => vec![DectEvent::Device(d.ppn().get())],
            (_, Some(u)) => from_user(u).into_iter().collect(),
            _ => Vec::new(),
        },
        E::PpDevCnf { device, .. } if !device.ppn().is_none() => {
            vec![DectEvent::Device(device.ppn().get())]
        }
        E::PpUserCnf { user, .. } => from_user(user).into_iter().collect(),
        E::DectSubscriptionMode { mode } => vec![DectEvent::Mode(mode.as_str().to_owned())],
        E::Lagged(_) => vec![DectEvent::Rescan],
        _ => Vec::new(),
    }
}

impl OmmLink {
    /// A link that is down until `maintain` connects it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether a session is open.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Sessions opened so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst)
    }

    /// The requests of every session so far.
    pub fn stats(&self) -> &OmmStats {
        &self.stats
    }

    fn emit(&self, ev: DectEvent) {
        if self.lagged.swap(false, Ordering::SeqCst)
            && self.events_tx.try_send(DectEvent::Rescan).is_err()
        {
            self.lagged.store(true, Ordering::SeqCst);
            return;
        }
        if self.events_tx.try_send(ev).is_err() {
            // nobody keeps up (or listens): the next reader rescans instead
            self.lagged.store(true, Ordering::SeqCst);
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, OwnedIndex> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that hexidian created (`true`) or removed (`false`) the user of `number`.
    fn note(&self, number: &str, owned: bool) {
        self.index().note(number, owned);
    }

    /// The owned numbers, if the index is complete.
    fn owned_numbers(&self) -> Option<Vec<String>> {
        self.index()
            .numbers
            .as_ref()
            .map(|s| s.iter().cloned().collect())
    }

    async fn scan(&self, client: &Client) {
        {
            let mut ix = self.index();
            ix.numbers = None;
            ix.during_scan.clear();
        }
        match client.list_users().await {
            Ok(users) => {
                let mut set: std::collections::BTreeSet<String> = users
                    .iter()
                    .filter(|u| owned(u) && !is_temp(u))
                    .filter_map(|u| u.num.clone())
                    .collect();
                let mut ix = self.index();
                for (n, o) in ix.during_scan.drain(..) {
                    if o {
                        set.insert(n);
                    } else {
                        set.remove(&n);
                    }
                }
                tracing::info!(owned = set.len(), "omm users indexed");
                ix.numbers = Some(set);
            }
            Err(e) => tracing::warn!(error = %e, "omm user scan failed; sweeps scan themselves"),
        }
    }

    /// Connects, logs in and keeps the session; reconnects with back-off and jitter until
    /// `shutdown` turns true.
    pub async fn maintain(
        self: Arc<Self>,
        config: omm_axi::Config,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let config = config.observer(Arc::clone(&self.stats) as Arc<dyn omm_axi::client::Observer>);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match omm_axi::connect(&config).await {
                Ok((client, connection, mut events)) => {
                    backoff.reset();
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
                        // events during the outage are lost: the handset workflow rescans
                        self.emit(DectEvent::Rescan);
                        self.scan(&client).await;
                        std::future::pending::<()>().await;
                    };
                    let drain = async {
                        while let Some(ev) = events.recv().await {
                            for d in dect_events(&ev) {
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
                    self.index().numbers = None;
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
                }
                Err(e) => tracing::warn!(error = %e, "omm connect failed"),
            }
            let d = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn client(&self) -> PortResult<Client> {
        match &*self.client.read().await {
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => Err(PortError::unavailable("omm link is down")),
        }
    }
}

fn port_error(e: omm_axi::Error) -> PortError {
    let kind = if matches!(e, omm_axi::Error::Timeout { .. }) {
        // the link is up but this request got no answer in time: the OMM is stuck, or this
        // request is its trouble (the broker finds out which by trying the message alone)
        PortErrorKind::Slow
    } else if e.is_transient() && e.code().is_none() {
        // no answer at all: the connection is gone
        PortErrorKind::Unavailable
    } else if e.is_transient() {
        // the OMM answered "in progress" / "failed": counts as an attempt
        PortErrorKind::Transient
    } else {
        match e.code() {
            Some(ErrorCode::NoEnt) => PortErrorKind::NotFound,
            Some(ErrorCode::Exist) => PortErrorKind::Conflict,
            // the account lacks rights: hexidian's set-up, whatever the message (stalls)
            Some(ErrorCode::Perm | ErrorCode::Auth) => PortErrorKind::Refused,
            _ => PortErrorKind::Rejected,
        }
    };
    let code = e.code().map(|c| c.as_str().to_owned());
    let err = PortError::new(kind, format!("omm: {e}"));
    match code {
        Some(c) => err.with_code(c),
        None => err,
    }
    .with_source(e)
}

/// The OMM as the broker's DECT system.
#[derive(Debug, Clone)]
pub struct OmmDect {
    link: Arc<OmmLink>,
    token_field: bool,
}

impl OmmDect {
    /// Over a maintained link.
    pub fn new(link: Arc<OmmLink>) -> Self {
        Self {
            link,
            token_field: false,
        }
    }

    /// Also writes each user's DECT token into `hierarchy2` (off by default: any OMM account
    /// that may read users would see the tokens).
    pub fn token_field(mut self, on: bool) -> Self {
        self.token_field = on;
        self
    }
}

fn owned(u: &PpUser) -> bool {
    u.hierarchy1.as_deref() == Some(OWNER_TAG)
}

fn is_temp(u: &PpUser) -> bool {
    u.hierarchy2.as_deref() == Some(TEMP_TAG)
}

async fn owned_user(c: &Client, number: &Number) -> PortResult<Option<PpUser>> {
    let user = c
        .fetch_user_by_number(number.as_str())
        .await
        .map_err(port_error)?;
    only_owned(number, user)
}

fn only_owned(number: &Number, user: Option<PpUser>) -> PortResult<Option<PpUser>> {
    match user {
        Some(u) if owned(&u) => Ok(Some(u)),
        Some(_) => Err(PortError::new(
            PortErrorKind::Conflict,
            format!("omm user {number} exists but is not hexidian's"),
        )),
        None => Ok(None),
    }
}

/// The user of `number` (whose key `held` holds), with its handset held too. While the number
/// is held nobody can attach a handset to it (every attach holds its user's number), only
/// take its handset away; so one read after holding the handset is current, and that read
/// is saved when no serialised handset change ran in between.
async fn user_with_handset(
    link: &OmmLink,
    held: &mut Held<'_>,
    c: &Client,
    number: &Number,
) -> PortResult<Option<PpUser>> {
    let generation = link.keys.handset_generation();
    let Some(user) = c
        .fetch_user_by_number(number.as_str())
        .await
        .map_err(port_error)?
    else {
        return Ok(None);
    };
    if user.bound_ppn().is_none() {
        return Ok(Some(user));
    }
    held.add(user.bound_ppn().get()).await;
    if link.keys.handset_generation() == generation {
        return Ok(Some(user));
    }
    c.fetch_user_by_number(number.as_str())
        .await
        .map_err(port_error)
}

/// Detaches `user` from the handset it held when read. That handset's key is not held (a
/// change holds one handset), so another change may have taken it away meanwhile: then there
/// is nothing left to detach.
async fn detach_previous(c: &Client, user: &PpUser) -> PortResult<()> {
    let previous = user.bound_ppn();
    if previous.is_none() {
        return Ok(());
    }
    if let Err(e) = c.detach(previous, user.uid()).await {
        match c.fetch_user(user.uid()).await {
            Ok(Some(now)) if now.bound_ppn() != previous => {}
            _ => return Err(port_error(e)),
        }
    }
    Ok(())
}

/// A handset attached to an OMM user hexidian does not own is never taken from it.
fn foreign_holder(ipei: &str, holder: &PpUser) -> PortError {
    PortError::new(
        PortErrorKind::Conflict,
        format!(
            "handset {ipei} is attached to OMM user {} (uid {}), which hexidian does not own: \
             detach it in the OMM first",
            holder.num.as_deref().unwrap_or("?"),
            holder.uid().get()
        ),
    )
}

/// Whether an OMM user already holds every visible field `fill` would write (the SIP
/// password is opaque ciphertext on the way back and cannot be compared).
fn holds(existing: &PpUser, user: &DectUser, token_field: bool) -> bool {
    let mut want = PpUser::default();
    fill(&mut want, user, token_field);
    let same = |a: &Option<String>, b: &Option<String>| {
        a.as_deref().unwrap_or_default() == b.as_deref().unwrap_or_default()
    };
    same(&existing.name, &want.name)
        && same(&existing.num, &want.num)
        && same(&existing.add_id, &want.add_id)
        && same(&existing.sip_auth_id, &want.sip_auth_id)
        && same(&existing.hierarchy1, &want.hierarchy1)
        && same(&existing.hierarchy2, &want.hierarchy2)
}

/// Deletes the user of `number` if `ours` says it may; whether it did. The number and its
/// handset are held for the read and the delete (deleting a user frees its handset).
async fn delete_owned(
    link: &OmmLink,
    number: &Number,
    ours: fn(&PpUser) -> bool,
) -> PortResult<bool> {
    let mut held = link.keys.hold([number.as_str()]).await;
    let c = link.client().await?;
    match user_with_handset(link, &mut held, &c, number).await? {
        Some(u) if ours(&u) => {
            c.delete_user(u.uid()).await.map_err(port_error)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn fill(u: &mut PpUser, user: &DectUser, token_field: bool) {
    let num = user.number.to_string();
    u.name = Some(user.name.clone());
    u.num = Some(num.clone());
    u.add_id = Some(num.clone());
    u.sip_auth_id = Some(num);
    u.sip_pw = Some(SecretValue::from(Secret::new(user.sip_password.expose())));
    u.hierarchy1 = Some(OWNER_TAG.into());
    // hierarchy fields hold at most 16 characters; the token only where configured
    let token = user.token.expose();
    u.hierarchy2 = Some(if token_field && token.len() <= 16 {
        token.into()
    } else {
        String::new()
    });
}

impl DectSystem for OmmDect {
    fn upsert_user(&self, user: DectUser) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let _held = self.link.keys.hold([user.number.as_str()]).await;
            let c = self.link.client().await?;
            match owned_user(&c, &user.number).await? {
                // a resync's re-check of a user nothing changed about: write only if the OMM
                // lost or changed what it should hold
                Some(existing) if user.unchanged && holds(&existing, &user, self.token_field) => {}
                Some(existing) => {
                    let mut u = PpUser::default();
                    u.uid = Some(existing.uid());
                    fill(&mut u, &user, self.token_field);
                    c.set_user(u).await.map_err(port_error)?;
                }
                None => {
                    let mut u = PpUser::default();
                    fill(&mut u, &user, self.token_field);
                    c.create_user(u).await.map_err(port_error)?;
                    self.link.note(user.number.as_str(), true);
                }
            }
            Ok(())
        })
    }

    fn delete_user(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        Box::pin(async move {
            // the OMM leaves a bound handset subscribed and unbound
            let deleted = delete_owned(&self.link, &number, owned).await?;
            if deleted {
                self.link.note(number.as_str(), false);
            }
            Ok(deleted)
        })
    }

    fn rename_user(&self, old: Number, new: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            // a handset bound to the user stays bound: the numbers are all it changes
            let _held = self.link.keys.hold([old.as_str(), new.as_str()]).await;
            let c = self.link.client().await?;
            let Some(u) = owned_user(&c, &old).await? else {
                return Ok(());
            };
            // an owned user already at `new` is a stale copy (replay): replace it
            if let Some(stale) = owned_user(&c, &new).await? {
                c.delete_user(stale.uid()).await.map_err(port_error)?;
            }
            let mut set = PpUser::default();
            set.uid = Some(u.uid());
            set.num = Some(new.to_string());
            set.add_id = Some(new.to_string());
            set.sip_auth_id = Some(new.to_string());
            c.set_user(set).await.map_err(port_error)?;
            self.link.note(old.as_str(), false);
            self.link.note(new.as_str(), true);
            Ok(())
        })
    }

    fn bind_handset(
        &self,
        number: Number,
        handset: Handset,
        encryption: bool,
    ) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let ipei: Ipei = handset.ipei.parse().map_err(|e| {
                PortError::rejected(format!("invalid ipei {:?}: {e}", handset.ipei))
            })?;
            let mut held = self.link.keys.hold([number.as_str()]).await;
            let c = self.link.client().await?;
            let no_user =
                || PortError::new(PortErrorKind::NotFound, format!("no omm user {number}"));
            let generation = self.link.keys.handset_generation();
            let user = owned_user(&c, &number).await?.ok_or_else(no_user)?;
            let device = match c.fetch_device_by_ipei(ipei).await.map_err(port_error)? {
                Some(d) => d,
                None => {
                    let mut d = PpDevice::default();
                    d.ipei = Some(ipei);
                    d.uak = Some(Sensitive::new(handset.uak.expose()));
                    d.s = Some(SubscriptionState::Yes);
                    d.encrypt = Some(encryption);
                    d.rel_type = Some(RelType::Unbound);
                    d.auto_create = Some(false);
                    c.create_device(&d).await.map_err(port_error)?
                }
            };
            held.add(device.ppn().get()).await;
            // a serialised handset change ran since the reads: read again under the keys
            let (user, device) = if self.link.keys.handset_generation() == generation {
                (user, device)
            } else {
                let user = owned_user(&c, &number).await?.ok_or_else(no_user)?;
                let device = c
                    .fetch_device(device.ppn())
                    .await
                    .map_err(port_error)?
                    .ok_or_else(|| {
                        PortError::unavailable(format!(
                            "handset {} vanished; retrying",
                            handset.ipei
                        ))
                    })?;
                (user, device)
            };
            // GURU3's useEncryption, also for a device that existed already
            if device.encrypt != Some(encryption) {
                let mut set = PpDevice::default();
                set.ppn = Some(device.ppn());
                set.encrypt = Some(encryption);
                c.set_device(&set).await.map_err(port_error)?;
            }
            let bound = device.bound_uid();
            if bound == user.uid() {
                return Ok(());
            }
            if !bound.is_none() {
                match c.fetch_user(bound).await.map_err(port_error)? {
                    Some(u) if !owned(&u) => {
                        return Err(foreign_holder(&handset.ipei, &u));
                    }
                    _ => {
                        c.detach(device.ppn(), bound).await.map_err(port_error)?;
                    }
                }
            }
            detach_previous(&c, &user).await?;
            c.attach(device.ppn(), user.uid(), RelType::Dynamic)
                .await
                .map_err(port_error)?;
            Ok(())
        })
    }

    fn release_handset(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        Box::pin(async move {
            let mut held = self.link.keys.hold([number.as_str()]).await;
            let c = self.link.client().await?;
            let user = user_with_handset(&self.link, &mut held, &c, &number).await?;
            let Some(user) = only_owned(&number, user)? else {
                return Ok(false);
            };
            if user.bound_ppn().is_none() {
                return Ok(false);
            }
            c.detach(user.bound_ppn(), user.uid())
                .await
                .map_err(port_error)?;
            Ok(true)
        })
    }

    fn ping(&self) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            c.ping().await.map(drop).map_err(port_error)
        })
    }

    fn list_owned(&self) -> BoxFuture<'_, PortResult<Vec<Number>>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            if let Some(numbers) = self.link.owned_numbers() {
                return Ok(numbers.iter().filter_map(|n| n.parse().ok()).collect());
            }
            let users = c.list_users().await.map_err(port_error)?;
            Ok(users
                .iter()
                .filter(|u| owned(u) && !is_temp(u))
                .filter_map(|u| u.num.as_deref()?.parse().ok())
                .collect())
        })
    }
}

/// The OMM's handsets for the unbound-handset workflow.
#[derive(Debug, Clone)]
pub struct OmmHandsets {
    link: Arc<OmmLink>,
}

impl OmmHandsets {
    /// Over a maintained link (which forwards the OMM's events).
    pub fn new(link: Arc<OmmLink>) -> Self {
        Self { link }
    }
}

fn device(d: &PpDevice, user: Option<&PpUser>) -> Device {
    Device {
        ppn: d.ppn().get(),
        ipei: d.ipei.map(|i| i.to_string()).unwrap_or_default(),
        uak: DomainSecret::new(
            d.uak
                .as_ref()
                .map(|u| u.expose().to_owned())
                .unwrap_or_default(),
        ),
        subscribed: d.s == Some(SubscriptionState::Yes),
        user: user.and_then(|u| u.num.as_deref()?.parse().ok()),
        temp: user.is_some_and(|u| owned(u) && is_temp(u)),
    }
}

async fn with_user(c: &Client, d: PpDevice) -> PortResult<Device> {
    let uid = d.bound_uid();
    let user = if uid.is_none() {
        None
    } else {
        c.fetch_user(uid).await.map_err(port_error)?
    };
    Ok(device(&d, user.as_ref()))
}

impl Handsets for OmmHandsets {
    fn next_event(&self) -> BoxFuture<'_, DectEvent> {
        Box::pin(async move {
            let mut rx = self.link.events_rx.lock().await;
            match rx.recv().await {
                Some(ev) => ev,
                None => std::future::pending().await,
            }
        })
    }

    fn devices(&self) -> BoxFuture<'_, PortResult<Vec<Device>>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            let users: std::collections::HashMap<u32, PpUser> = c
                .list_users()
                .await
                .map_err(port_error)?
                .into_iter()
                .map(|u| (u.uid().get(), u))
                .collect();
            let devices = c.list_devices().await.map_err(port_error)?;
            Ok(devices
                .iter()
                .map(|d| device(d, users.get(&d.bound_uid().get())))
                .collect())
        })
    }

    fn lookup(&self, which: Lookup) -> BoxFuture<'_, PortResult<Option<Device>>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            match which {
                Lookup::Ppn(ppn) => match c
                    .fetch_device(omm_axi::Ppn::new(ppn))
                    .await
                    .map_err(port_error)?
                {
                    Some(d) => Ok(Some(with_user(&c, d).await?)),
                    None => Ok(None),
                },
                Lookup::User(n) => {
                    let Some(u) = c
                        .fetch_user_by_number(n.as_str())
                        .await
                        .map_err(port_error)?
                    else {
                        return Ok(None);
                    };
                    if u.bound_ppn().is_none() {
                        return Ok(None);
                    }
                    match c.fetch_device(u.bound_ppn()).await.map_err(port_error)? {
                        Some(d) => Ok(Some(device(&d, Some(&u)))),
                        None => Ok(None),
                    }
                }
            }
        })
    }

    fn give_temp(
        &self,
        ppn: u32,
        number: Number,
        sip_password: DomainSecret,
    ) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let mut held = self.link.keys.hold([number.as_str()]).await;
            held.add(ppn).await;
            let c = self.link.client().await?;
            if c.fetch_user_by_number(number.as_str())
                .await
                .map_err(port_error)?
                .is_some()
            {
                return Err(PortError::new(
                    PortErrorKind::Conflict,
                    format!("omm number {number} is taken"),
                ));
            }
            let mut u = PpUser::default();
            fill(
                &mut u,
                &DectUser {
                    unchanged: false,
                    number: number.clone(),
                    name: "Unbound Handset".into(),
                    sip_password,
                    token: DomainSecret::new(""),
                },
                false,
            );
            u.hierarchy2 = Some(TEMP_TAG.into());
            let created = c.create_user(u).await.map_err(port_error)?;
            if let Err(e) = c
                .attach(omm_axi::Ppn::new(ppn), created.uid(), RelType::Dynamic)
                .await
            {
                let _ = c.delete_user(created.uid()).await;
                return Err(port_error(e));
            }
            Ok(())
        })
    }

    fn move_to(&self, ppn: u32, extension: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let mut held = self.link.keys.hold([extension.as_str()]).await;
            held.add(ppn).await;
            let c = self.link.client().await?;
            let ppn = omm_axi::Ppn::new(ppn);
            let target = owned_user(&c, &extension)
                .await?
                .filter(|u| !is_temp(u))
                .ok_or_else(|| {
                    PortError::new(
                        PortErrorKind::NotFound,
                        format!("no omm user {extension} to bind to"),
                    )
                })?;
            let dev = c
                .fetch_device(ppn)
                .await
                .map_err(port_error)?
                .ok_or_else(|| {
                    PortError::new(PortErrorKind::NotFound, format!("no handset {ppn}"))
                })?;
            let bound = dev.bound_uid();
            if bound == target.uid() {
                return Ok(());
            }
            if !bound.is_none() {
                match c.fetch_user(bound).await.map_err(port_error)? {
                    // deleting the temporary user frees the handset in one step
                    Some(u) if owned(&u) && is_temp(&u) => {
                        c.delete_user(bound).await.map_err(port_error)?
                    }
                    Some(u) if !owned(&u) => {
                        let ipei = dev.ipei.map(|i| i.to_string()).unwrap_or_default();
                        return Err(foreign_holder(&ipei, &u));
                    }
                    _ => {
                        c.detach(ppn, bound).await.map_err(port_error)?;
                    }
                }
            }
            detach_previous(&c, &target).await?;
            c.attach(ppn, target.uid(), RelType::Dynamic)
                .await
                .map_err(port_error)?;
            Ok(())
        })
    }

    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<TempUser>>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            let users = c.list_users().await.map_err(port_error)?;
            Ok(users
                .iter()
                .filter(|u| owned(u) && is_temp(u))
                .filter_map(|u| {
                    let n: Number = u.num.as_deref()?.parse().ok()?;
                    let ppn = u.bound_ppn();
                    Some((n, (!ppn.is_none()).then(|| ppn.get())))
                })
                .collect())
        })
    }

    fn remove_temp(&self, number: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            delete_owned(&self.link, &number, |u| owned(u) && is_temp(u)).await?;
            Ok(())
        })
    }

    fn set_subscription_mode(&self, mode: String) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            let m: omm_axi::SubscriptionMode = mode
                .parse()
                .unwrap_or(omm_axi::SubscriptionMode::Configured);
            let timeout = (m == omm_axi::SubscriptionMode::Wildcard).then_some(3);
            c.set_subscription_mode(m, timeout)
                .await
                .map_err(port_error)
        })
    }
}

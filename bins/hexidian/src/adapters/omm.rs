//! `DectSystem` over `omm_axi::Client`, plus the link manager that keeps a session open
//! (connect, log in, reconnect with back-off) and reports whether it is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use broker_core::model::{Handset, Number};
use broker_core::ports::{BoxFuture, DectSystem, DectUser, PortError, PortErrorKind, PortResult};
use omm_axi::proto::Backoff;
use omm_axi::{
    Client, ErrorCode, Ipei, PpDevice, PpUser, RelType, Secret, SecretValue, Sensitive,
    SubscriptionState,
};
use tokio::sync::{RwLock, watch};

/// `hierarchy1` of every OMM user hexidian creates: users without it are never touched.
pub const OWNER_TAG: &str = "HEXIDIAN";

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

/// The OMM session, kept open by [`OmmLink::maintain`].
#[derive(Debug, Default)]
pub struct OmmLink {
    client: RwLock<Option<Client>>,
    up: AtomicBool,
    connects: AtomicU64,
    owned: std::sync::Mutex<OwnedIndex>,
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
                    .filter(|u| owned(u))
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
                    let scan = async {
                        self.scan(&client).await;
                        drop(client);
                        std::future::pending::<()>().await;
                    };
                    let drain = async {
                        // the broker does not use events; keep the channel flowing
                        while events.recv().await.is_some() {}
                        std::future::pending::<()>().await;
                    };
                    let ended = tokio::select! {
                        r = connection => Some(r),
                        () = drain => None,
                        () = scan => None,
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
            _ => Err(PortError::transient("omm link is down")),
        }
    }
}

fn port_error(e: omm_axi::Error) -> PortError {
    let kind = if e.is_transient() {
        PortErrorKind::Transient
    } else {
        match e.code() {
            Some(ErrorCode::NoEnt) => PortErrorKind::NotFound,
            Some(ErrorCode::Exist) => PortErrorKind::Conflict,
            Some(ErrorCode::Perm | ErrorCode::Auth) => PortErrorKind::Fatal,
            _ => PortErrorKind::Rejected,
        }
    };
    PortError::new(kind, format!("omm: {e}")).with_source(e)
}

/// The OMM as the broker's DECT system.
#[derive(Debug, Clone)]
pub struct OmmDect {
    link: Arc<OmmLink>,
}

impl OmmDect {
    /// Over a maintained link.
    pub fn new(link: Arc<OmmLink>) -> Self {
        Self { link }
    }
}

fn owned(u: &PpUser) -> bool {
    u.hierarchy1.as_deref() == Some(OWNER_TAG)
}

async fn owned_user(c: &Client, number: &Number) -> PortResult<Option<PpUser>> {
    match c
        .fetch_user_by_number(number.as_str())
        .await
        .map_err(port_error)?
    {
        Some(u) if owned(&u) => Ok(Some(u)),
        Some(_) => Err(PortError::new(
            PortErrorKind::Conflict,
            format!("omm user {number} exists but is not hexidian's"),
        )),
        None => Ok(None),
    }
}

fn fill(u: &mut PpUser, user: &DectUser) {
    let num = user.number.to_string();
    u.name = Some(user.name.clone());
    u.num = Some(num.clone());
    u.add_id = Some(num.clone());
    u.sip_auth_id = Some(num);
    u.sip_pw = Some(SecretValue::from(Secret::new(user.sip_password.expose())));
    u.hierarchy1 = Some(OWNER_TAG.into());
    // hierarchy fields hold at most 16 characters
    let token = user.token.expose();
    u.hierarchy2 = Some(if token.len() <= 16 {
        token.into()
    } else {
        String::new()
    });
}

impl DectSystem for OmmDect {
    fn upsert_user(&self, user: DectUser) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            match owned_user(&c, &user.number).await? {
                Some(existing) => {
                    let mut u = PpUser::default();
                    u.uid = Some(existing.uid());
                    fill(&mut u, &user);
                    c.set_user(u).await.map_err(port_error)?;
                }
                None => {
                    let mut u = PpUser::default();
                    fill(&mut u, &user);
                    c.create_user(u).await.map_err(port_error)?;
                    self.link.note(user.number.as_str(), true);
                }
            }
            Ok(())
        })
    }

    fn delete_user(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            match c
                .fetch_user_by_number(number.as_str())
                .await
                .map_err(port_error)?
            {
                Some(u) if owned(&u) => {
                    // the OMM leaves a bound handset subscribed and unbound
                    c.delete_user(u.uid()).await.map_err(port_error)?;
                    self.link.note(number.as_str(), false);
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn rename_user(&self, old: Number, new: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
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
            let c = self.link.client().await?;
            let ipei: Ipei = handset.ipei.parse().map_err(|e| {
                PortError::rejected(format!("invalid ipei {:?}: {e}", handset.ipei))
            })?;
            let user = owned_user(&c, &number).await?.ok_or_else(|| {
                PortError::new(PortErrorKind::NotFound, format!("no omm user {number}"))
            })?;
            let device = match c.fetch_device_by_ipei(ipei).await.map_err(port_error)? {
                Some(d) => d,
                None => {
                    let mut d = PpDevice::default();
                    d.ipei = Some(ipei);
                    d.uak = Some(Sensitive(handset.uak.expose().to_owned()));
                    d.s = Some(SubscriptionState::Yes);
                    d.encrypt = Some(encryption);
                    d.rel_type = Some(RelType::Unbound);
                    d.auto_create = Some(false);
                    c.create_device(&d).await.map_err(port_error)?
                }
            };
            let bound = device.bound_uid();
            if bound == user.uid() {
                return Ok(());
            }
            if !bound.is_none() {
                c.detach(device.ppn(), bound).await.map_err(port_error)?;
            }
            if !user.bound_ppn().is_none() {
                c.detach(user.bound_ppn(), user.uid())
                    .await
                    .map_err(port_error)?;
            }
            c.attach(device.ppn(), user.uid(), RelType::Dynamic)
                .await
                .map_err(port_error)?;
            Ok(())
        })
    }

    fn release_handset(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            let Some(user) = owned_user(&c, &number).await? else {
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

    fn list_owned(&self) -> BoxFuture<'_, PortResult<Vec<Number>>> {
        Box::pin(async move {
            let c = self.link.client().await?;
            if let Some(numbers) = self.link.owned_numbers() {
                return Ok(numbers.iter().filter_map(|n| n.parse().ok()).collect());
            }
            let users = c.list_users().await.map_err(port_error)?;
            Ok(users
                .iter()
                .filter(|u| owned(u))
                .filter_map(|u| u.num.as_deref()?.parse().ok())
                .collect())
        })
    }
}

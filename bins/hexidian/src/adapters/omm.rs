//! `DectSystem` and `Handsets` over `omm_provision::Link`: types and errors mapped, nothing
//! more (the provisioning logic, the OMM map and the key serialisation live in
//! `omm-provision`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broker_core::model::Secret as DomainSecret;
use broker_core::model::{Handset, Number};
use broker_core::ports::{BoxFuture, DectSystem, DectUser, PortError, PortErrorKind, PortResult};
use omm_axi::{ErrorCode, Secret, Sensitive};
use omm_provision::{Error, HandsetSpec, Link, Tags, UserSpec};
use unbound_handsets::ports::{DectEvent, Device, Handsets, Lookup, TempUser};

/// `hierarchy1` of every OMM user hexidian creates: users without it are never touched.
pub const OWNER_TAG: &str = "HEXIDIAN";

/// `hierarchy2` of hexidian's temporary users (unbound handsets); never swept by a resync.
pub const TEMP_TAG: &str = "HEXIDIAN-TEMP";

/// hexidian's OMM link.
pub type OmmLink = Link;

/// A link with hexidian's tags, down until `maintain` connects it.
pub fn omm_link() -> Arc<Link> {
    Link::new(Tags::new(OWNER_TAG, TEMP_TAG))
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

fn omm_error(e: &omm_axi::Error) -> PortErrorKind {
    if matches!(e, omm_axi::Error::Timeout { .. }) {
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
    }
}

fn port_error(e: Error) -> PortError {
    let kind = match &e {
        Error::Omm(o) => omm_error(o),
        Error::Down | Error::Vanished(_) | Error::NotActive => PortErrorKind::Unavailable,
        Error::NoUser(_) | Error::NoTarget(_) | Error::NoHandset(_) => PortErrorKind::NotFound,
        Error::NotOwned { .. } | Error::ForeignHolder { .. } | Error::Taken(_) => {
            PortErrorKind::Conflict
        }
        _ => PortErrorKind::Rejected,
    };
    let code = e
        .omm()
        .and_then(omm_axi::Error::code)
        .map(|c| c.as_str().to_owned());
    let err = PortError::new(kind, e.to_string());
    match code {
        Some(c) => err.with_code(c),
        None => err,
    }
    .with_source(e)
}

/// The OMM as the broker's DECT system.
#[derive(Debug, Clone)]
pub struct OmmDect {
    link: Arc<Link>,
    token_field: bool,
}

impl OmmDect {
    /// Over a maintained link.
    pub fn new(link: Arc<Link>) -> Self {
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

impl DectSystem for OmmDect {
    fn upsert_user(&self, user: DectUser) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let spec = UserSpec {
                number: user.number.to_string(),
                name: user.name,
                sip_password: Secret::new(user.sip_password.expose()),
                token: self.token_field.then(|| Secret::new(user.token.expose())),
                unchanged: user.unchanged,
            };
            self.link.upsert_user(&spec).await.map_err(port_error)
        })
    }

    fn delete_user(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        // the OMM leaves a bound handset subscribed and unbound
        Box::pin(async move {
            self.link
                .delete_user(number.as_str())
                .await
                .map_err(port_error)
        })
    }

    fn rename_user(&self, old: Number, new: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            self.link
                .rename_user(old.as_str(), new.as_str())
                .await
                .map_err(port_error)
        })
    }

    fn bind_handset(
        &self,
        number: Number,
        handset: Handset,
        encryption: bool,
    ) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let spec = HandsetSpec {
                ipei: handset.ipei.clone(),
                uak: Sensitive::new(handset.uak.expose()),
                encryption,
            };
            self.link
                .bind_handset(number.as_str(), &spec)
                .await
                .map_err(port_error)
        })
    }

    fn release_handset(&self, number: Number) -> BoxFuture<'_, PortResult<bool>> {
        Box::pin(async move {
            self.link
                .release_handset(number.as_str())
                .await
                .map_err(port_error)
        })
    }

    fn ping(&self) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move { self.link.ping().await.map_err(port_error) })
    }

    fn list_owned(&self) -> BoxFuture<'_, PortResult<Vec<Number>>> {
        Box::pin(async move {
            let numbers = self.link.owned_numbers().await.map_err(port_error)?;
            Ok(numbers.iter().filter_map(|n| n.parse().ok()).collect())
        })
    }
}

/// The OMM's handsets for the unbound-handset workflow.
#[derive(Debug, Clone)]
pub struct OmmHandsets {
    link: Arc<Link>,
}

impl OmmHandsets {
    /// Over a maintained link (which forwards the OMM's events).
    pub fn new(link: Arc<Link>) -> Self {
        Self { link }
    }
}

fn device(d: omm_provision::Device) -> Device {
    Device {
        ppn: d.ppn,
        ipei: d.ipei.map(|i| i.to_string()).unwrap_or_default(),
        uak: DomainSecret::new(d.uak.as_ref().map(|u| u.expose()).unwrap_or_default()),
        subscribed: d.subscribed,
        user: d.user.as_deref().and_then(|n| n.parse().ok()),
        temp: d.temp,
    }
}

impl Handsets for OmmHandsets {
    fn next_event(&self) -> BoxFuture<'_, DectEvent> {
        Box::pin(async move {
            loop {
                return match self.link.next_event().await {
                    omm_provision::Event::Device(ppn) => DectEvent::Device(ppn),
                    omm_provision::Event::Mode(m) => DectEvent::Mode(m),
                    omm_provision::Event::Rescan => DectEvent::Rescan,
                    _ => continue,
                };
            }
        })
    }

    fn devices(&self) -> BoxFuture<'_, PortResult<Vec<Device>>> {
        Box::pin(async move {
            let all = self.link.devices().await.map_err(port_error)?;
            Ok(all.into_iter().map(device).collect())
        })
    }

    fn lookup(&self, which: Lookup) -> BoxFuture<'_, PortResult<Option<Device>>> {
        Box::pin(async move {
            let found = match which {
                Lookup::Ppn(ppn) => self.link.device(ppn).await,
                Lookup::User(n) => self.link.device_of(n.as_str()).await,
            };
            Ok(found.map_err(port_error)?.map(device))
        })
    }

    fn give_temp(
        &self,
        ppn: u32,
        number: Number,
        sip_password: DomainSecret,
    ) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            self.link
                .give_temp(ppn, number.as_str(), Secret::new(sip_password.expose()))
                .await
                .map_err(port_error)
        })
    }

    fn move_to(&self, ppn: u32, extension: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            self.link
                .move_to(ppn, extension.as_str())
                .await
                .map_err(port_error)
        })
    }

    fn temp_users(&self) -> BoxFuture<'_, PortResult<Vec<TempUser>>> {
        Box::pin(async move {
            let all = self.link.temp_users().await.map_err(port_error)?;
            Ok(all
                .into_iter()
                .filter_map(|(n, ppn)| Some((n.parse().ok()?, ppn)))
                .collect())
        })
    }

    fn remove_temp(&self, number: Number) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            self.link
                .remove_temp(number.as_str())
                .await
                .map_err(port_error)
        })
    }

    fn set_subscription_mode(&self, mode: String) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            let m: omm_axi::SubscriptionMode = mode
                .parse()
                .unwrap_or(omm_axi::SubscriptionMode::Configured);
            self.link.set_subscription_mode(m).await.map_err(port_error)
        })
    }
}

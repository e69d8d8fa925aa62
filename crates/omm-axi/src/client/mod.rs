//! The async client: a cloneable [`Client`] handle and a [`Connection`] future the caller
//! spawns.

mod config;
mod connection;
#[cfg(feature = "openssl")]
pub mod openssl_tls;
pub mod tls;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub use config::{Config, Observer, PLAIN_PORT, TLS_PORT};
pub use connection::Connection;
pub use tls::Fingerprint;

use crate::error::{Error, ErrorCode, ProtocolError, Result};
use crate::proto::{
    Event, LastPpAction, MAX_RECORDS, PpDevice, PpState, PpUser, Request, Response,
};
use crate::types::{Ipei, Ppn, RelType, Subscription, SubscriptionMode, Uid};

pub(crate) struct Command {
    pub(crate) request: Request,
    pub(crate) reply: oneshot::Sender<Result<Response>>,
}

/// Receiver of unsolicited events.
pub type Events = mpsc::Receiver<Event>;

/// Handle for sending requests; cheap to clone, usable from many tasks at once (requests are
/// pipelined and correlated by `seq`).
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    timeout: Duration,
    observer: config::Observed,
}

/// Connects over TCP (and TLS unless [`Config::plain`]), logs in and returns the handle, the
/// connection future to spawn, and the event receiver.
pub async fn connect(config: &Config) -> Result<(Client, Connection, Events)> {
    if !config.transport_chosen() {
        return Err(Error::Config(
            "choose TLS (Config::tls with client::tls::pinned or with_roots) or Config::plain",
        ));
    }
    let work = async {
        let tcp = TcpStream::connect((config.host.as_str(), config.effective_port())).await?;
        tcp.set_nodelay(true)?;
        #[cfg(feature = "openssl")]
        if let Some(o) = &config.openssl {
            let name = config.server_name.as_deref().unwrap_or(&config.host);
            let stream = o.connect(name, tcp).await?;
            return connection::login(stream, config).await;
        }
        match &config.tls {
            Some(tls) => {
                let name = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| config.host.clone());
                let name = rustls_pki_types::ServerName::try_from(name)
                    .map_err(|_| Error::Config("host is neither a dns name nor an ip address"))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(tls_error)?;
                connection::login(stream, config).await
            }
            None => connection::login(tcp, config).await,
        }
    };
    match tokio::time::timeout(config.connect_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            request: "connect".to_owned(),
            seq: 0,
        }),
    }
}

/// Like [`connect`] over an already established stream (any TLS stack, a test pipe, …).
pub async fn connect_stream<S>(stream: S, config: &Config) -> Result<(Client, Connection, Events)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(config.connect_timeout, connection::login(stream, config)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            request: "Open".to_owned(),
            seq: 0,
        }),
    }
}

fn tls_error(e: std::io::Error) -> Error {
    let is_tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    if is_tls {
        match e
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => match *tls {
                // what a static-RSA-only or TLS < 1.2 peer answers a rustls ClientHello with
                rustls::Error::AlertReceived(
                    rustls::AlertDescription::HandshakeFailure
                    | rustls::AlertDescription::ProtocolVersion
                    | rustls::AlertDescription::InsufficientSecurity,
                ) => Error::TlsLegacyPeer(*tls),
                other => Error::Tls(other),
            },
            _ => Error::Closed,
        }
    } else {
        Error::Io(e)
    }
}

/// Kinds of paged records.
trait Paged: Sized {
    fn request(from: u32) -> Request;
    fn decode(resp: &Response) -> std::result::Result<Vec<Self>, ProtocolError>;
    fn key(&self) -> u32;
}

impl Paged for PpUser {
    fn request(from: u32) -> Request {
        Request::get_pp_user(Uid::new(from), Some(MAX_RECORDS))
    }
    fn decode(resp: &Response) -> std::result::Result<Vec<Self>, ProtocolError> {
        resp.users()
    }
    fn key(&self) -> u32 {
        self.uid().get()
    }
}

impl Paged for PpDevice {
    fn request(from: u32) -> Request {
        Request::get_pp_dev(Ppn::new(from), Some(MAX_RECORDS))
    }
    fn decode(resp: &Response) -> std::result::Result<Vec<Self>, ProtocolError> {
        resp.devices()
    }
    fn key(&self) -> u32 {
        self.ppn().get()
    }
}

/// A cursor over all users or devices, one page (≤ 20 records) per request, until `ENoEnt`.
#[derive(Debug)]
pub struct Pages<R> {
    client: Client,
    next: Option<u32>,
    _kind: std::marker::PhantomData<fn() -> R>,
}

#[allow(private_bounds)]
impl<R: Paged> Pages<R> {
    /// The next page, `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<R>>> {
        let Some(from) = self.next else {
            return Ok(None);
        };
        let page = match self.client.request(R::request(from)).await {
            Ok(resp) => R::decode(&resp)?,
            Err(e) if e.code() == Some(&ErrorCode::NoEnt) => Vec::new(),
            Err(e) => return Err(e),
        };
        // Keys must grow; anything else would loop forever.
        let last = page.iter().map(R::key).max();
        self.next = match last {
            Some(last) if last >= from && last < u32::MAX => Some(last + 1),
            _ => None,
        };
        let page: Vec<R> = page.into_iter().filter(|r| r.key() >= from).collect();
        if page.is_empty() && self.next.is_none() {
            return Ok(None);
        }
        Ok(Some(page))
    }

    /// Collects every remaining record, de-duplicated by key.
    pub async fn collect_all(mut self) -> Result<Vec<R>> {
        let mut out: Vec<R> = Vec::new();
        while let Some(page) = self.next_page().await? {
            for r in page {
                if out.last().is_none_or(|l| l.key() < r.key()) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// The pipelined scan behind [`Client::scan_users`] and [`Client::scan_devices`].
///
/// Requests start at `0, 20, 40, …` before earlier answers are in. A full page that starts at
/// `from` ends at a key of at least `from + 19`, so the windows leave no gap between them;
/// a page that is not full (or `ENoEnt`) says that nothing lies beyond it, and no window past
/// it is started. Where keys are sparse a page reaches further than its window, and the
/// windows it covered are skipped.
async fn scan<R: Paged + Send + 'static>(
    client: &Client,
    depth: usize,
    mut f: impl FnMut(Vec<R>),
) -> Result<()> {
    let stride = MAX_RECORDS;
    let depth = depth.max(1);
    let mut next: Option<u32> = Some(0);
    let mut end: Option<u32> = None;
    let mut seen = std::collections::HashSet::new();
    let mut flight = tokio::task::JoinSet::new();
    loop {
        while flight.len() < depth {
            let Some(from) = next.filter(|n| end.is_none_or(|e| *n < e)) else {
                break;
            };
            next = from.checked_add(stride);
            let c = client.clone();
            flight.spawn(async move { (from, c.request(R::request(from)).await) });
        }
        let Some(joined) = flight.join_next().await else {
            return Ok(());
        };
        let (from, answer) = joined.map_err(|_| Error::Closed)?;
        let page = match answer {
            Ok(resp) => R::decode(&resp)?,
            Err(e) if e.code() == Some(&ErrorCode::NoEnt) => Vec::new(),
            Err(e) => return Err(e),
        };
        let page: Vec<R> = page.into_iter().filter(|r| r.key() >= from).collect();
        let last = page.iter().map(R::key).max();
        if page.len() < stride as usize {
            let stop = last.map_or(from, |l| l.saturating_add(1));
            end = Some(end.map_or(stop, |e| e.min(stop)));
        } else if let Some(l) = last {
            if next.is_some_and(|n| l >= n) {
                next = l.checked_add(1);
            }
        }
        let fresh: Vec<R> = page.into_iter().filter(|r| seen.insert(r.key())).collect();
        if !fresh.is_empty() {
            f(fresh);
        }
    }
}

/// A request the observer was told of; ends it as failed if the caller gave up on it.
struct Watch<'a> {
    observer: &'a dyn Observer,
    name: String,
    t0: std::time::Instant,
    done: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.observer.finished(&self.name, self.t0.elapsed(), false);
        }
    }
}

impl Client {
    /// Sends any request and waits for its response (`Err(Rejected)` on `errCode`).
    pub async fn request(&self, request: Request) -> Result<Response> {
        let Some(observer) = self.observer.0.as_ref() else {
            return self.send(request).await;
        };
        let mut watch = Watch {
            observer: observer.as_ref(),
            name: request.name().to_owned(),
            t0: std::time::Instant::now(),
            done: false,
        };
        observer.started(&watch.name);
        let r = self.send(request).await;
        watch.done = true;
        observer.finished(&watch.name, watch.t0.elapsed(), r.is_ok());
        r
    }

    async fn send(&self, request: Request) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command { request, reply })
            .await
            .map_err(|_| Error::Closed)?;
        // The connection enforces the timeout; this bound only guards against a stuck task.
        match tokio::time::timeout(self.timeout * 2 + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout {
                request: "request".to_owned(),
                seq: 0,
            }),
        }
    }

    /// Whether the connection task has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Round trip; returns the OMM's `timeStamp` if it sent one.
    #[doc(alias = "Ping")]
    pub async fn ping(&self) -> Result<Option<i64>> {
        let resp = self.request(Request::ping(None)).await?;
        Ok(resp.attr("timeStamp").and_then(|t| t.parse().ok()))
    }

    /// Message name → version, for capability detection.
    #[doc(alias = "GetVersions")]
    pub async fn fetch_versions(&self) -> Result<Vec<(String, String)>> {
        let resp = self.request(Request::get_versions()).await?;
        Ok(resp
            .body()
            .attributes()
            .iter()
            .filter(|(k, _)| k != "seq")
            .cloned()
            .collect())
    }

    /// System limits as name → value.
    #[doc(alias = "Limits")]
    pub async fn fetch_limits(&self) -> Result<Vec<(String, String)>> {
        let resp = self.request(Request::limits()).await?;
        Ok(resp
            .body()
            .attributes()
            .iter()
            .filter(|(k, _)| k != "seq")
            .cloned()
            .collect())
    }

    /// The system name.
    #[doc(alias = "GetSystemName")]
    pub async fn fetch_system_name(&self) -> Result<String> {
        let resp = self.request(Request::get_system_name()).await?;
        Ok(resp.required("name")?.to_owned())
    }

    /// Switches event subscriptions on or off.
    #[doc(alias = "Subscribe")]
    pub async fn subscribe(&self, entries: &[Subscription]) -> Result<()> {
        self.request(Request::subscribe(entries)?).await.map(drop)
    }

    /// One user by id; `None` if there is none.
    #[doc(alias = "GetPPUser")]
    pub async fn fetch_user(&self, uid: Uid) -> Result<Option<PpUser>> {
        let resp = match self.request(Request::get_pp_user(uid, Some(1))).await {
            Err(e) if e.code() == Some(&ErrorCode::NoEnt) => return Ok(None),
            r => r?,
        };
        // The OMM may answer with the next higher record: verify the key.
        Ok(resp.users()?.into_iter().find(|u| u.uid() == uid))
    }

    /// One user by number; `None` if there is none.
    #[doc(alias = "GetPPUserByNumber")]
    pub async fn fetch_user_by_number(&self, num: &str) -> Result<Option<PpUser>> {
        match self.request(Request::get_pp_user_by_number(num)).await {
            Err(e) if e.code() == Some(&ErrorCode::NoEnt) => Ok(None),
            r => Ok(r?
                .users()?
                .into_iter()
                .find(|u| u.num.as_deref() == Some(num))),
        }
    }

    /// Pages over all users.
    pub fn user_pages(&self) -> Pages<PpUser> {
        Pages {
            client: self.clone(),
            next: Some(0),
            _kind: std::marker::PhantomData,
        }
    }

    /// All users (paged, de-duplicated).
    pub async fn list_users(&self) -> Result<Vec<PpUser>> {
        self.user_pages().collect_all().await
    }

    /// Reads every user in pages with up to `depth` page requests in flight and hands each
    /// page to `f` as it arrives (see [`Client::scan_devices`]).
    pub async fn scan_users(&self, depth: usize, f: impl FnMut(Vec<PpUser>)) -> Result<()> {
        scan::<PpUser>(self, depth, f).await
    }

    /// Creates a user; returns the full record with the allocated `uid`.
    #[doc(alias = "CreatePPUser")]
    pub async fn create_user(&self, user: PpUser) -> Result<PpUser> {
        Ok(self.request(Request::create_pp_user(user)).await?.user()?)
    }

    /// Changes the set fields of a user (`uid` required); returns the record.
    #[doc(alias = "SetPPUser")]
    pub async fn set_user(&self, user: PpUser) -> Result<PpUser> {
        if user.uid().is_none() {
            return Err(Error::Config("set_user needs a uid"));
        }
        Ok(self.request(Request::set_pp_user(user)).await?.user()?)
    }

    /// Deletes a user.
    #[doc(alias = "DeletePPUser")]
    pub async fn delete_user(&self, uid: Uid) -> Result<()> {
        self.request(Request::delete_pp_user(uid)).await.map(drop)
    }

    /// One device by number; `None` if there is none.
    #[doc(alias = "GetPPDev")]
    pub async fn fetch_device(&self, ppn: Ppn) -> Result<Option<PpDevice>> {
        let resp = match self.request(Request::get_pp_dev(ppn, Some(1))).await {
            Err(e) if e.code() == Some(&ErrorCode::NoEnt) => return Ok(None),
            r => r?,
        };
        Ok(resp.devices()?.into_iter().find(|d| d.ppn() == ppn))
    }

    /// One device by IPEI; `None` if there is none.
    #[doc(alias = "GetPPDevByIPEI")]
    pub async fn fetch_device_by_ipei(&self, ipei: Ipei) -> Result<Option<PpDevice>> {
        match self.request(Request::get_pp_dev_by_ipei(ipei)).await {
            Err(e) if e.code() == Some(&ErrorCode::NoEnt) => Ok(None),
            r => Ok(r?.devices()?.into_iter().next()),
        }
    }

    /// Pages over all devices.
    pub fn device_pages(&self) -> Pages<PpDevice> {
        Pages {
            client: self.clone(),
            next: Some(0),
            _kind: std::marker::PhantomData,
        }
    }

    /// All devices (paged, de-duplicated).
    pub async fn list_devices(&self) -> Result<Vec<PpDevice>> {
        self.device_pages().collect_all().await
    }

    /// Reads every device in pages with up to `depth` page requests in flight (pipelined on
    /// the one connection) and hands each page to `f` as it arrives: pages in no particular
    /// order, each record once. Where [`Client::device_pages`] needs one round trip per page,
    /// this needs about one per `depth` pages when the keys are dense, as the OMM allocates
    /// them.
    pub async fn scan_devices(&self, depth: usize, f: impl FnMut(Vec<PpDevice>)) -> Result<()> {
        scan::<PpDevice>(self, depth, f).await
    }

    /// Pre-provisions a device; returns the record with the allocated `ppn`.
    #[doc(alias = "CreatePPDev")]
    pub async fn create_device(&self, device: &PpDevice) -> Result<PpDevice> {
        Ok(self
            .request(Request::create_pp_dev(device)?)
            .await?
            .device()?)
    }

    /// Changes the set fields of a device (`ppn` required).
    #[doc(alias = "SetPPDev")]
    pub async fn set_device(&self, device: &PpDevice) -> Result<PpDevice> {
        Ok(self.request(Request::set_pp_dev(device)?).await?.device()?)
    }

    /// Deletes a device.
    #[doc(alias = "DeletePPDev")]
    pub async fn delete_device(&self, ppn: Ppn) -> Result<()> {
        self.request(Request::delete_pp_dev(ppn)).await.map(drop)
    }

    /// Binds a user to a device (sync sessions); returns both records.
    #[doc(alias = "SetPP")]
    pub async fn attach(
        &self,
        ppn: Ppn,
        uid: Uid,
        rel_type: RelType,
    ) -> Result<(PpDevice, PpUser)> {
        let resp = self.request(Request::attach(ppn, uid, &rel_type)).await?;
        Ok((resp.device()?, resp.user()?))
    }

    /// Unbinds a user from a device (sync sessions); returns both records.
    #[doc(alias = "SetPP")]
    pub async fn detach(&self, ppn: Ppn, uid: Uid) -> Result<(PpDevice, PpUser)> {
        let resp = self.request(Request::detach(ppn, uid)).await?;
        Ok((resp.device()?, resp.user()?))
    }

    /// Switches an existing binding between `Fixed` and `Dynamic`.
    #[doc(alias = "SetPPUserDevRelation")]
    pub async fn set_relation(&self, uid: Uid, rel_type: RelType) -> Result<()> {
        self.request(Request::set_pp_user_dev_relation(uid, &rel_type))
            .await
            .map(drop)
    }

    /// Current DECT subscription mode.
    #[doc(alias = "GetDECTSubscriptionMode")]
    pub async fn fetch_subscription_mode(&self) -> Result<SubscriptionMode> {
        let resp = self.request(Request::get_dect_subscription_mode()).await?;
        Ok(resp
            .required("mode")?
            .parse()
            .unwrap_or_else(|never| match never {}))
    }

    /// Sets the DECT subscription mode (`timeout_min` for `Wildcard`).
    #[doc(alias = "SetDECTSubscriptionMode")]
    pub async fn set_subscription_mode(
        &self,
        mode: SubscriptionMode,
        timeout_min: Option<u32>,
    ) -> Result<()> {
        self.request(Request::set_dect_subscription_mode(&mode, timeout_min))
            .await
            .map(drop)
    }

    /// Enables automatic device creation on subscription.
    #[doc(alias = "SetDevAutoCreate")]
    pub async fn set_dev_auto_create(&self, enable: bool) -> Result<()> {
        self.request(Request::set_dev_auto_create(enable))
            .await
            .map(drop)
    }

    /// State of a handset.
    #[doc(alias = "GetPPState")]
    pub async fn fetch_pp_state(&self, ppn: Ppn) -> Result<PpState> {
        Ok(self.request(Request::get_pp_state(ppn)).await?.pp_state()?)
    }

    /// Last contact of a handset.
    #[doc(alias = "GetLastPPDevAction")]
    pub async fn fetch_last_action(&self, ppn: Ppn) -> Result<LastPpAction> {
        let resp = self.request(Request::get_last_pp_dev_action(ppn)).await?;
        let pp = resp
            .body()
            .child("pp")
            .ok_or_else(|| ProtocolError::MissingChild {
                element: resp.name().to_owned(),
                child: "pp",
            })?;
        Ok(LastPpAction::from_element(pp)?)
    }
}

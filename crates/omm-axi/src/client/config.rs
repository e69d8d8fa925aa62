//! Client configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;

/// Port of the TLS interface.
pub const TLS_PORT: u16 = 12622;
/// Port of the plain-TCP interface (debugging; not offered by newer firmware).
pub const PLAIN_PORT: u16 = 12621;

/// Connection settings. Build with [`Config::new`] and the chainable setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) username: String,
    pub(crate) password: Secret,
    pub(crate) sync_client: bool,
    pub(crate) protocol_version: Option<u32>,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) plain: bool,
    #[cfg(feature = "openssl")]
    pub(crate) openssl: Option<Arc<super::openssl_tls::OpensslTls>>,
    pub(crate) server_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) event_capacity: usize,
    pub(crate) command_capacity: usize,
    pub(crate) max_frame: usize,
    pub(crate) observer: Observed,
}

/// Told of every request a [`Client`](super::Client) makes, when it starts and when it ends
/// (for metrics: requests in flight, their durations). Kept across reconnects.
pub trait Observer: Send + Sync + 'static {
    /// A request is about to be sent.
    fn started(&self, request: &str);
    /// It ended: answered (`ok`), refused, timed out or cut off, after `took`.
    fn finished(&self, request: &str, took: Duration, ok: bool);
}

/// The observer slot of a [`Config`].
#[derive(Clone, Default)]
pub(crate) struct Observed(pub(crate) Option<Arc<dyn Observer>>);

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Config {
    /// An OMM at `host` (name or IP) with an account. TLS must be chosen with
    /// [`tls`](Self::tls) (or [`plain`](Self::plain) for the debugging port).
    pub fn new(
        host: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        Self {
            host: host.into(),
            port: None,
            username: username.into(),
            password: password.into(),
            sync_client: true,
            protocol_version: None,
            tls: None,
            plain: false,
            #[cfg(feature = "openssl")]
            openssl: None,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(60),
            event_capacity: 1024,
            command_capacity: 256,
            max_frame: crate::proto::frame::DEFAULT_MAX_FRAME,
            observer: Observed::default(),
        }
    }

    /// Tells `observer` of every request (see [`Observer`]).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Observed(Some(observer));
        self
    }

    /// TCP port (default 12622 with TLS, 12621 plain).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// TLS settings, see [`tls`](super::tls).
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self.plain = false;
        #[cfg(feature = "openssl")]
        {
            self.openssl = None;
        }
        self
    }

    /// TLS through the OpenSSL backend (feature `openssl`), for firmwares that offer only
    /// static-RSA key exchange or TLS below 1.2; see [`openssl_tls`](super::openssl_tls).
    #[cfg(feature = "openssl")]
    pub fn openssl(mut self, tls: super::openssl_tls::OpensslTls) -> Self {
        self.openssl = Some(Arc::new(tls));
        self.tls = None;
        self.plain = false;
        self
    }

    /// Plain TCP without TLS: the admin password crosses the network in clear text.
    pub fn plain(mut self) -> Self {
        self.plain = true;
        self.tls = None;
        #[cfg(feature = "openssl")]
        {
            self.openssl = None;
        }
        self
    }

    /// Whether a TLS backend or plain TCP was chosen.
    pub(crate) fn transport_chosen(&self) -> bool {
        #[cfg(feature = "openssl")]
        if self.openssl.is_some() {
            return true;
        }
        self.tls.is_some() || self.plain
    }

    /// Name for SNI and certificate verification with [`with_roots`](super::tls::with_roots)
    /// (default: the host).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Log in as user/device synchronisation client (default `true`; needed for `SetPP`).
    pub fn sync_client(mut self, on: bool) -> Self {
        self.sync_client = on;
        self
    }

    /// Send `protocolVersion` in `Open` (default: omitted).
    pub fn protocol_version(mut self, v: Option<u32>) -> Self {
        self.protocol_version = v;
        self
    }

    /// Timeout for TCP connect, TLS handshake and login together (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Timeout of every request (default 10 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Idle time after which a `Ping` is sent (default 60 s; the OMM drops links idle for
    /// 5 minutes). A `Ping` without answer within the request timeout ends the connection.
    pub fn ping_interval(mut self, t: Duration) -> Self {
        self.ping_interval = t.max(Duration::from_millis(10));
        self
    }

    /// Capacity of the event channel (default 1024). When it is full, events are dropped and
    /// an [`Event::Lagged`](crate::Event::Lagged) tells how many.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Largest accepted frame in bytes (default 4 MiB).
    pub fn max_frame(mut self, n: usize) -> Self {
        self.max_frame = n;
        self
    }

    pub(crate) fn effective_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.plain { PLAIN_PORT } else { TLS_PORT })
    }
}

//! The simulator handle and its network side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::crypto::{KeySize, RsaKey};
use crate::handle;
use crate::state::{
    Attrs, Change, Faults, Knobs, Mode, Outgoing, Received, SessionInfo, State, canonical_ipei,
};
use crate::wire::{Node, Out};

/// Which certificate the TLS listener presents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// `fixtures/tls/server.pem`, issued by the test CA for `localhost`/`127.0.0.1`.
    #[default]
    TestCa,
    /// `fixtures/tls/omm-selfsigned.pem`, self-signed like an OMM's built-in certificate.
    SelfSigned,
}

/// Simulator settings.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Behaviour switches.
    pub knobs: Knobs,
    /// RSA key size for secrets.
    pub key_size: KeySize,
    /// TLS certificate.
    pub identity: Identity,
    /// Extra accounts besides `omm`/`omm`.
    pub accounts: Vec<(String, String)>,
    /// Where the TLS listener binds (default `127.0.0.1:0`).
    pub listen: Option<SocketAddr>,
    /// Where the plain-TCP listener binds (default `127.0.0.1:0`).
    pub plain_listen: Option<SocketAddr>,
}

/// A running simulated OMM. Listens on `127.0.0.1:0` with TLS and plain TCP; stops on drop.
#[derive(Debug)]
pub struct Sim {
    shared: Arc<Shared>,
    tls_addr: SocketAddr,
    plain_addr: SocketAddr,
    #[cfg(feature = "openssl")]
    static_rsa_addr: SocketAddr,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    /// TLS 1.2/1.3 through rustls, with the configured [`Identity`].
    Tls,
    /// No TLS.
    Plain,
    /// Like an older OMM firmware: TLS 1.2 with `TLS_RSA_WITH_AES_256_GCM_SHA384` only (static
    /// RSA key exchange, which rustls does not implement), the self-signed RSA certificate.
    #[cfg(feature = "openssl")]
    StaticRsa,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<StateBox>,
    changed: Notify,
    next_session: AtomicU64,
    tls: Arc<rustls::ServerConfig>,
    #[cfg(feature = "openssl")]
    static_rsa: StaticRsa,
}

/// The static-RSA listener's OpenSSL acceptor.
#[cfg(feature = "openssl")]
struct StaticRsa(openssl::ssl::SslAcceptor);

#[cfg(feature = "openssl")]
impl std::fmt::Debug for StaticRsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticRsa(AES256-GCM-SHA384, TLS 1.2)")
    }
}

/// Wrapper so `Shared` can derive `Debug` without printing the whole state.
struct StateBox(State);

impl std::fmt::Debug for StateBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

/// A snapshot for inspection and `wait_for` predicates.
#[derive(Debug, Clone)]
pub struct View {
    /// Users by uid (secrets in plaintext).
    pub users: Vec<(u32, Attrs)>,
    /// Devices by ppn.
    pub devices: Vec<(u32, Attrs)>,
    /// Every request received so far.
    pub received: Vec<Received>,
    /// Number of open (logged-in) sessions.
    pub open_sessions: usize,
    /// Current subscription mode.
    pub mode: Mode,
}

impl View {
    /// The user with this uid.
    pub fn user(&self, uid: u32) -> Option<&Attrs> {
        self.users.iter().find(|(u, _)| *u == uid).map(|(_, a)| a)
    }

    /// The user with this number.
    pub fn user_by_num(&self, num: &str) -> Option<(u32, &Attrs)> {
        self.users
            .iter()
            .find(|(_, a)| a.get("num").map(String::as_str) == Some(num))
            .map(|(u, a)| (*u, a))
    }

    /// The device with this ppn.
    pub fn device(&self, ppn: u32) -> Option<&Attrs> {
        self.devices.iter().find(|(p, _)| *p == ppn).map(|(_, a)| a)
    }

    /// Received requests with this name.
    pub fn requests(&self, name: &str) -> impl Iterator<Item = &Received> {
        let name = name.to_owned();
        self.received.iter().filter(move |r| r.name == name)
    }
}

/// A handset subscription attempt that the simulated OMM refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl Sim {
    /// Starts with default settings.
    pub async fn start() -> Self {
        Self::start_with(SimConfig::default()).await
    }

    /// Starts with `config`; panics if a listener cannot bind (tests bind port 0).
    pub async fn start_with(config: SimConfig) -> Self {
        match Self::try_start_with(config).await {
            Ok(sim) => sim,
            Err(e) => panic!("omm-axi-sim: {e}"),
        }
    }

    /// Starts with `config`, or says which listener could not bind.
    pub async fn try_start_with(config: SimConfig) -> std::io::Result<Self> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (tls_at, plain_at) = (
            config.listen.unwrap_or(loopback),
            config.plain_listen.unwrap_or(loopback),
        );
        let mut state = State::new(RsaKey::builtin(config.key_size), config.knobs);
        state.accounts.extend(config.accounts);
        let identity = match config.identity {
            Identity::TestCa => hexidian_testkit::server_identity(),
            Identity::SelfSigned => hexidian_testkit::omm_selfsigned_identity(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(StateBox(state)),
            changed: Notify::new(),
            next_session: AtomicU64::new(1),
            tls: hexidian_testkit::server_config(identity),
            #[cfg(feature = "openssl")]
            static_rsa: StaticRsa(static_rsa_acceptor()?),
        });
        let bind = async |at: SocketAddr, what: &str| {
            TcpListener::bind(at)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("{what} listener on {at}: {e}")))
        };
        let tls_listener = bind(tls_at, "TLS").await?;
        let plain_listener = bind(plain_at, "plain TCP").await?;
        let tls_addr = tls_listener.local_addr()?;
        let plain_addr = plain_listener.local_addr()?;
        #[allow(unused_mut)]
        let mut tasks = vec![
            tokio::spawn(accept_loop(tls_listener, shared.clone(), Listener::Tls)),
            tokio::spawn(accept_loop(plain_listener, shared.clone(), Listener::Plain)),
        ];
        #[cfg(feature = "openssl")]
        let static_rsa_addr = {
            let l = bind(loopback, "static-RSA TLS").await?;
            let addr = l.local_addr()?;
            tasks.push(tokio::spawn(accept_loop(
                l,
                shared.clone(),
                Listener::StaticRsa,
            )));
            addr
        };
        Ok(Self {
            shared,
            tls_addr,
            plain_addr,
            #[cfg(feature = "openssl")]
            static_rsa_addr,
            tasks: Mutex::new(tasks),
        })
    }

    /// An OMM that is off: both listeners closed (connections are refused, not reset) and
    /// every session dropped. `up` reopens the listeners on the same addresses.
    pub async fn set_listening(&self, up: bool) {
        let lock = || {
            self.tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if !up {
            let old: Vec<JoinHandle<()>> = lock().drain(..).collect();
            for t in old {
                t.abort();
            }
            self.drop_connections();
            return;
        }
        if !lock().is_empty() {
            return;
        }
        let mut fresh = Vec::new();
        #[allow(unused_mut)]
        let mut listeners = vec![
            (self.tls_addr, Listener::Tls),
            (self.plain_addr, Listener::Plain),
        ];
        #[cfg(feature = "openssl")]
        listeners.push((self.static_rsa_addr, Listener::StaticRsa));
        for (addr, tls) in listeners {
            let listener = TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("rebinding {addr}: {e}"));
            fresh.push(tokio::spawn(accept_loop(
                listener,
                self.shared.clone(),
                tls,
            )));
        }
        lock().extend(fresh);
    }

    /// Address of the TLS listener.
    pub fn addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// Address of the plain-TCP listener.
    pub fn plain_addr(&self) -> SocketAddr {
        self.plain_addr
    }

    /// Address of the listener that behaves like an older firmware: TLS 1.2 with
    /// `TLS_RSA_WITH_AES_256_GCM_SHA384` only, presenting the self-signed RSA certificate
    /// (`fixtures/tls/omm-selfsigned.pem`). Feature `openssl`.
    #[cfg(feature = "openssl")]
    pub fn static_rsa_addr(&self) -> SocketAddr {
        self.static_rsa_addr
    }

    fn lock(&self) -> MutexGuard<'_, StateBox> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock().0);
        self.shared.changed.notify_waiters();
        r
    }

    /// A snapshot of the state.
    pub fn view(&self) -> View {
        let g = self.lock();
        let st = &g.0;
        View {
            users: st.users.iter().map(|(k, v)| (*k, v.clone())).collect(),
            devices: st.devices.iter().map(|(k, v)| (*k, v.clone())).collect(),
            received: st.received.clone(),
            open_sessions: st.sessions.values().filter(|s| s.open).count(),
            mode: st.mode,
        }
    }

    /// Waits until `pred` holds for the state (checked after every change), at most `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&View) -> bool,
    ) -> Result<View, View> {
        let wait = async {
            loop {
                let notified = self.shared.changed.notified();
                let view = self.view();
                if pred(&view) {
                    return view;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(v) => Ok(v),
            Err(_) => Err(self.view()),
        }
    }

    /// Changes fault injection.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        self.mutate(|st| f(&mut st.faults));
    }

    /// Changes behaviour knobs.
    pub fn knobs(&self, f: impl FnOnce(&mut Knobs)) {
        self.mutate(|st| f(&mut st.knobs));
    }

    /// Adds a user directly (no events); returns its uid.
    pub fn seed_user(&self, attrs: &[(&str, &str)]) -> u32 {
        self.mutate(|st| {
            let uid = st.next_uid;
            st.next_uid += 1;
            let mut rec: Attrs = [
                ("uid", uid.to_string()),
                ("ppn", "0".into()),
                ("relType", "Unbound".into()),
                ("name", String::new()),
                ("num", String::new()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            rec.extend(
                attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            st.users.insert(uid, rec);
            uid
        })
    }

    /// Adds a device directly (no events); returns its ppn. `ipei` must be valid.
    pub fn seed_device(&self, ipei: &str) -> u32 {
        let ipei = canonical_ipei(ipei).expect("seed_device needs a valid ipei");
        self.mutate(|st| {
            let ppn = st.next_ppn;
            st.next_ppn += 1;
            let rec: Attrs = [
                ("ppn", ppn.to_string()),
                ("uid", "0".into()),
                ("relType", "Unbound".into()),
                ("ipei", ipei),
                ("s", "No".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            st.devices.insert(ppn, rec);
            ppn
        })
    }

    /// Adds a subscribed handset without a user directly (no events), as one that subscribed
    /// before: `uak` is its 32-hex-digit key. Returns its ppn. `ipei` must be valid.
    pub fn seed_subscribed(&self, ipei: &str, uak: &str) -> u32 {
        let ppn = self.seed_device(ipei);
        self.mutate(|st| {
            if let Some(mut d) = st.devices.get_mut(&ppn) {
                d.insert("s".into(), "Yes".into());
                d.insert("uak".into(), uak.to_owned());
            }
        });
        ppn
    }

    /// The handsets of a generated event of `n` extensions: every handset GURU3's generated
    /// event names (`guru3_sim::seed_event` with the same `n`: the same IPEIs and UAKs), and
    /// one in fifty more that GURU3 does not know (they get temporary numbers). All are
    /// subscribed and have no user yet. Returns (known, unknown).
    pub fn seed_event(&self, n: usize) -> (usize, usize) {
        let known: Vec<u32> = (0..n)
            .filter(|i| hexidian_testkit::ids::seeded_handset(*i))
            .map(|i| i as u32)
            .collect();
        for i in &known {
            self.seed_subscribed(
                &hexidian_testkit::ids::ipei(*i),
                &hexidian_testkit::ids::uak(*i),
            );
        }
        let unknown = n.div_ceil(50);
        for k in 0..unknown {
            let i = 900_000 + k as u32;
            self.seed_subscribed(
                &hexidian_testkit::ids::ipei(i),
                &hexidian_testkit::ids::uak(i),
            );
        }
        (known.len(), unknown)
    }

    /// Attaches a device to a user directly (no events), as an OMM admin would with a
    /// dynamic relation; the device counts as subscribed.
    pub fn seed_relation(&self, ppn: u32, uid: u32) {
        self.mutate(|st| {
            if let Some(mut u) = st.users.get_mut(&uid) {
                u.insert("ppn".into(), ppn.to_string());
                u.insert("relType".into(), "Dynamic".into());
            }
            if let Some(mut d) = st.devices.get_mut(&ppn) {
                d.insert("uid".into(), uid.to_string());
                d.insert("relType".into(), "Dynamic".into());
                d.insert("s".into(), "Yes".into());
            }
        });
    }

    /// Changes attributes of a user as an administrator would in the OMM's web interface:
    /// the change is announced to the sessions subscribed to `PPUserCnf`. Returns whether
    /// the user exists.
    pub fn admin_set_user(&self, uid: u32, attrs: &[(&str, &str)]) -> bool {
        self.mutate(|st| {
            let Some(mut u) = st.users.get_mut(&uid) else {
                return false;
            };
            for (k, v) in attrs {
                u.insert((*k).to_owned(), (*v).to_owned());
            }
            let attrs = u.clone();
            drop(u);
            st.emit(&[Change::User {
                uid,
                attrs,
                deleted: false,
            }]);
            true
        })
    }

    /// Deletes a user as an administrator would in the OMM's web interface (its handset
    /// loses the relation), announced to the subscribed sessions. Returns whether it existed.
    pub fn admin_delete_user(&self, uid: u32) -> bool {
        self.mutate(|st| {
            let Some(user) = st.users.remove(&uid) else {
                return false;
            };
            let mut changes = vec![Change::User {
                uid,
                attrs: user.clone(),
                deleted: true,
            }];
            let ppn = user.get("ppn").and_then(|p| p.parse::<u32>().ok());
            if let Some(ppn) = ppn.filter(|p| *p != 0)
                && let Some(mut d) = st.devices.get_mut(&ppn)
            {
                d.insert("uid".into(), "0".into());
                d.insert("relType".into(), "Unbound".into());
                changes.push(Change::Device {
                    ppn,
                    attrs: d.clone(),
                    deleted: false,
                });
            }
            st.emit(&changes);
            true
        })
    }

    /// A handset tries to subscribe with `ac` (spec §8.3 rule 11). Returns its ppn.
    pub fn handset_subscribe(&self, ipei: &str, ac: &str) -> Result<u32, Refused> {
        self.handset_subscribe_with_uak(ipei, ac, None)
    }

    /// [`Sim::handset_subscribe`], the subscription ending with `uak` (32 hex digits: a
    /// handset whose key GURU3 knows) instead of a fresh random key.
    pub fn handset_subscribe_with_uak(
        &self,
        ipei: &str,
        ac: &str,
        uak: Option<&str>,
    ) -> Result<u32, Refused> {
        let ipei = canonical_ipei(ipei).ok_or(Refused("invalid ipei"))?;
        let given = match uak {
            Some(u) if u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(u.to_ascii_uppercase())
            }
            Some(_) => return Err(Refused("the uak is not 32 hex digits")),
            None => None,
        };
        self.mutate(|st| {
            let now = st.now;
            let uak = match given {
                Some(u) => u,
                None => {
                    let mut uak = [0u8; 16];
                    getrandom::fill(&mut uak).map_err(|_| Refused("random"))?;
                    uak.iter().map(|b| format!("{b:02X}")).collect()
                }
            };
            let (wild, configured) = match st.mode {
                Mode::Off => (false, false),
                Mode::Configured { .. } => (false, true),
                Mode::Wildcard { .. } => (true, true),
            };
            let mut changes = Vec::new();
            let ppn = match st.find_device_by_ipei(&ipei) {
                Some(ppn) if st.devices[&ppn].get("s").map(String::as_str) == Some("Yes") => {
                    // re-subscription: the user is unbound, the device stays
                    if !configured {
                        return Err(Refused("subscription closed"));
                    }
                    changes.extend(st.unbind_device(ppn));
                    ppn
                }
                Some(ppn) => {
                    if !configured {
                        return Err(Refused("subscription closed"));
                    }
                    let dev_ac = st.devices[&ppn].get("ac").cloned().unwrap_or_default();
                    let expected = if dev_ac.is_empty() {
                        st.ac.clone()
                    } else {
                        dev_ac
                    };
                    if expected != ac {
                        return Err(Refused("wrong authentication code"));
                    }
                    ppn
                }
                None => {
                    let allowed = wild || (configured && st.dev_auto_create && ac == st.ac);
                    if !allowed {
                        return Err(Refused("unknown ipei"));
                    }
                    let ppn = st.next_ppn;
                    st.next_ppn += 1;
                    let rec: Attrs = [
                        ("ppn", ppn.to_string()),
                        ("uid", "0".into()),
                        ("relType", "Unbound".into()),
                        ("ipei", ipei.clone()),
                        ("s", "No".into()),
                        ("ac", String::new()),
                        ("uak", String::new()),
                        ("encrypt", "0".into()),
                        ("autoCreate", "1".into()),
                        ("hwType", "Unknown".into()),
                        ("timeStamp", now.to_string()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                    st.devices.insert(ppn, rec);
                    if let Mode::Wildcard {
                        interval,
                        configured_until,
                        ..
                    } = st.mode
                    {
                        st.mode = Mode::Wildcard {
                            until: now + interval,
                            interval,
                            configured_until,
                        };
                    }
                    ppn
                }
            };
            let mut d = st.devices.get_mut(&ppn).expect("exists");
            d.insert("s".into(), "Yes".into());
            d.insert("uak".into(), uak);
            d.insert("timeStampSubscription".into(), now.to_string());
            d.insert("timeStamp".into(), now.to_string());
            changes.push(Change::Device {
                ppn,
                attrs: d.clone(),
                deleted: false,
            });
            drop(d);
            st.emit(&changes);
            Ok(ppn)
        })
    }

    /// The subscription settings as an administrator sets them in the OMM's web interface:
    /// the system's authentication code and whether a handset with that code and an
    /// unknown IPEI gets a device (in `Configured` mode). `None` leaves a setting alone.
    pub fn set_subscription_settings(&self, ac: Option<&str>, auto_create: Option<bool>) {
        self.mutate(|st| {
            if let Some(ac) = ac {
                ac.clone_into(&mut st.ac);
            }
            if let Some(on) = auto_create {
                st.dev_auto_create = on;
            }
        });
    }

    /// The system's authentication code and whether unknown devices are created.
    pub fn subscription_settings(&self) -> (String, bool) {
        let g = self.lock();
        (g.0.ac.clone(), g.0.dev_auto_create)
    }

    /// Sets handset state attributes (for `GetPPState`) and announces them as `EventPPState`.
    pub fn set_pp_state(&self, ppn: u32, attrs: &[(&str, &str)]) {
        self.mutate(|st| {
            let entry = st.pp_state.entry(ppn).or_default();
            for (k, v) in attrs {
                entry.insert((*k).to_owned(), (*v).to_owned());
            }
            let ev = Out::new("EventPPState")
                .attr("ppn", &ppn.to_string())
                .attrs(attrs.iter().copied())
                .finish();
            st.emit_raw("PPState", &ev);
        });
    }

    /// Records the last contact of a handset (for `GetLastPPDevAction`).
    pub fn record_pp_action(&self, ppn: u32, tr_type: &str, rfp_id: u32) {
        self.mutate(|st| {
            let rec: Attrs = [
                ("trType", tr_type.to_owned()),
                ("rfpId", rfp_id.to_string()),
                ("relTime", "0".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            st.last_action.insert(ppn, rec);
        });
    }

    /// Sends a raw document (without NUL) to every open session, as if it were an event.
    pub fn inject_event(&self, xml: &str) {
        self.mutate(|st| {
            for s in st.sessions.values().filter(|s| s.open) {
                let _ = s.tx.send(Outgoing::Frame(xml.to_owned()));
            }
        });
    }

    /// Sends raw bytes (may be malformed, may lack the NUL) to every open session.
    pub fn inject_raw(&self, raw: &str) {
        self.mutate(|st| {
            for s in st.sessions.values().filter(|s| s.open) {
                let _ = s.tx.send(Outgoing::Frame(format!("\u{1}{raw}")));
            }
        });
    }

    /// Closes every connection.
    pub fn drop_connections(&self) {
        self.mutate(|st| {
            for s in st.sessions.values() {
                let _ = s.tx.send(Outgoing::Close);
            }
        });
    }

    /// Advances the virtual clock (subscription-mode expiry, idle timeouts).
    pub fn advance(&self, d: Duration) {
        self.mutate(|st| st.advance(d));
    }

    /// Plaintext value of a user's secret attribute, as decrypted by the simulator.
    pub fn user_secret(&self, uid: u32, attr: &str) -> Option<String> {
        self.lock()
            .0
            .users
            .get(&uid)
            .and_then(|u| u.get(attr).cloned())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            t.abort();
        }
        self.drop_connections();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, kind: Listener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            if kind != Listener::Plain {
                let refuse = shared
                    .state
                    .lock()
                    .map(|s| s.0.faults.refuse_tls)
                    .unwrap_or(false);
                if refuse {
                    return;
                }
            }
            match kind {
                Listener::Plain => serve::<TcpStream>(stream, shared).await,
                Listener::Tls => match tokio_rustls::TlsAcceptor::from(shared.tls.clone())
                    .accept(stream)
                    .await
                {
                    Ok(s) => serve(s, shared).await,
                    Err(e) => tracing::debug!(error = %e, "sim: tls handshake failed"),
                },
                #[cfg(feature = "openssl")]
                Listener::StaticRsa => {
                    match accept_static_rsa(&shared.static_rsa.0, stream).await {
                        Ok(s) => serve(s, shared).await,
                        Err(e) => tracing::debug!(error = %e, "sim: static-RSA handshake failed"),
                    }
                }
            }
        });
    }
}

/// The older firmware's TLS: 1.2 only, one static-RSA suite, the self-signed RSA certificate.
#[cfg(feature = "openssl")]
fn static_rsa_acceptor() -> std::io::Result<openssl::ssl::SslAcceptor> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVersion};
    let io = |e: openssl::error::ErrorStack| std::io::Error::other(format!("static-RSA TLS: {e}"));
    let dir = hexidian_testkit::fixtures_dir().join("tls");
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(io)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(io)?;
    b.set_max_proto_version(Some(SslVersion::TLS1_2))
        .map_err(io)?;
    // TLS_RSA_WITH_AES_256_GCM_SHA384 in OpenSSL's name
    b.set_cipher_list("AES256-GCM-SHA384").map_err(io)?;
    b.set_certificate_chain_file(dir.join("omm-selfsigned.pem"))
        .map_err(io)?;
    b.set_private_key_file(dir.join("omm-selfsigned.key"), SslFiletype::PEM)
        .map_err(io)?;
    b.check_private_key().map_err(io)?;
    Ok(b.build())
}

#[cfg(feature = "openssl")]
async fn accept_static_rsa(
    acceptor: &openssl::ssl::SslAcceptor,
    stream: TcpStream,
) -> std::io::Result<tokio_openssl::SslStream<TcpStream>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
    let mut s = tokio_openssl::SslStream::new(ssl, stream).map_err(std::io::Error::other)?;
    std::pin::Pin::new(&mut s)
        .accept()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(s)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(stream: S, shared: Arc<Shared>) {
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut g = shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = g.0.now;
        g.0.sessions.insert(
            id,
            SessionInfo {
                tx: tx.clone(),
                open: false,
                sync: false,
                subs: Vec::new(),
                last_activity: now,
            },
        );
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut frames_in = 0usize;
    'conn: loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                pending.extend_from_slice(&buf[..n]);
                while let Some(pos) = pending.iter().position(|b| *b == 0) {
                    let frame: Vec<u8> = pending.drain(..=pos).take(pos).collect();
                    frames_in += 1;
                    if frame.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let drop_now = on_frame(&shared, id, &frame, &tx);
                    shared.changed.notify_waiters();
                    if drop_now.is_some_and(|k| frames_in >= k) {
                        break 'conn;
                    }
                }
                if pending.len() > 8 * 1024 * 1024 {
                    break;
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                let mut batch = Vec::new();
                let (split, coalesce) = {
                    let g = shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    (g.0.faults.split_chunks, g.0.faults.coalesce)
                };
                let mut next = Some(out);
                let mut count = 0;
                while let Some(o) = next.take() {
                    match o {
                        Outgoing::Close => break 'conn,
                        Outgoing::Frame(f) => {
                            match f.strip_prefix('\u{1}') {
                                Some(raw) => batch.extend_from_slice(raw.as_bytes()),
                                None => {
                                    batch.extend_from_slice(f.as_bytes());
                                    batch.push(0);
                                }
                            }
                        }
                    }
                    count += 1;
                    if coalesce.is_some_and(|c| count < c) {
                        next = rx.try_recv().ok();
                    }
                }
                let chunk = split.unwrap_or(usize::MAX).max(1);
                for part in batch.chunks(chunk) {
                    if wr.write_all(part).await.is_err() || wr.flush().await.is_err() {
                        break 'conn;
                    }
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    let mut g = shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    g.0.sessions.remove(&id);
    drop(g);
    shared.changed.notify_waiters();
}

/// Handles one frame; returns the `drop_after` setting.
fn on_frame(
    shared: &Arc<Shared>,
    id: u64,
    frame: &[u8],
    tx: &mpsc::UnboundedSender<Outgoing>,
) -> Option<usize> {
    let mut g = shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let st = &mut g.0;
    let drop_after = st.faults.drop_after;
    let Some(node) = std::str::from_utf8(frame)
        .ok()
        .and_then(|t| Node::parse(t).ok())
    else {
        tracing::debug!(session = id, "sim: malformed frame ignored");
        return drop_after;
    };
    let seq = node.get("seq").map(str::to_owned);
    if st.knobs.log_requests {
        st.received.push(Received {
            session: id,
            name: node.name.clone(),
            seq: seq.clone(),
            attrs: node
                .attrs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "password" {
                            "<masked>".into()
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect(),
            children: node
                .children
                .iter()
                .map(|c| (c.name.clone(), c.attrs.clone()))
                .collect(),
        });
    }
    let now = st.now;
    let open = match st.sessions.get_mut(&id) {
        Some(s) => {
            s.last_activity = now;
            s.open
        }
        None => return drop_after,
    };
    if st.faults.stall.contains(&node.name) {
        return drop_after;
    }
    let num = node
        .get("num")
        .or_else(|| node.child("user").and_then(|u| u.get("num")));
    if num.is_some_and(|n| st.faults.stall_num.iter().any(|s| s == n)) {
        return drop_after;
    }
    if let Some((code, times)) = st.faults.inject.get_mut(&node.name) {
        if *times > 0 {
            *times -= 1;
            let resp = Out::new(&format!("{}Resp", node.name))
                .seq(seq.as_deref())
                .attr("errCode", code)
                .finish();
            let _ = tx.send(Outgoing::Frame(resp));
            return drop_after;
        }
    }
    let (resp, changes) = if node.name == "Open" {
        (open_session(st, id, &node, open), Vec::new())
    } else if !open {
        (
            Out::new(&format!("{}Resp", node.name))
                .seq(seq.as_deref())
                .attr("errCode", "EAuth")
                .finish(),
            Vec::new(),
        )
    } else {
        handle::request(st, id, &node)
    };
    if !resp.is_empty() {
        match st.faults.delay.get(&node.name).copied() {
            Some(d) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(Outgoing::Frame(resp));
                });
            }
            None => {
                let _ = tx.send(Outgoing::Frame(resp));
            }
        }
    }
    st.emit(&changes);
    drop_after
}

fn open_session(st: &mut State, id: u64, node: &Node, already_open: bool) -> String {
    let seq = node.get("seq");
    let base = |o: Out| {
        o.seq(seq)
            .attr("protocolVersion", "45")
            .attr("ommStbState", "None")
    };
    if already_open {
        return base(Out::new("OpenResp"))
            .attr("errCode", "EForbidden")
            .finish();
    }
    let user = node.get("username").unwrap_or("");
    let pass = node.get("password").unwrap_or("");
    if !st
        .accounts
        .iter()
        .any(|(u, p)| u == user && p == pass && !p.is_empty())
    {
        return base(Out::new("OpenResp"))
            .attr("errCode", "EAuth")
            .attr("info", "authentication failed")
            .finish();
    }
    let sync = node
        .get("UserDeviceSyncClient")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if let Some(s) = st.sessions.get_mut(&id) {
        s.open = true;
        s.sync = sync;
    }
    let clients = st.sessions.values().filter(|s| s.open).count().to_string();
    let key = Out::new("publicKey")
        .attr("modulus", &st.key.modulus_hex())
        .attr("exponent", &st.key.exponent_hex())
        .finish();
    base(Out::new("OpenResp"))
        .attr("ommVersion", "SIP-DECT 8.1SP2 (simulator)")
        .attr("ommAxiSpecVersion", "8.1")
        .attr("axiVersion", "180101")
        .attr("axiClients", &clients)
        .attr("uptime", &(st.now - 1_732_260_000).to_string())
        .attr("EULAConfirm", "1")
        .child(&key)
        .child("<permission>AllCnfWrite</permission>")
        .finish()
}

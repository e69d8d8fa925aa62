//! The simulator's listener and its handle API.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::json::J;
use crate::state::{Extension, InboundRecord, Member, State, random_alnum};

/// Django's `DATA_UPLOAD_MAX_MEMORY_SIZE`.
const MAX_FORM_BYTES: usize = 2_621_440;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct Config {
    /// The event id (its mgr key is generated).
    pub event_id: u32,
    /// Serve HTTPS with the test CA's `localhost`/`127.0.0.1` certificate (default), or plain HTTP.
    pub tls: bool,
    /// Websocket ping interval (Daphne: 20 s).
    pub ping_interval: Duration,
    /// Close a websocket whose pong is this late (Daphne: 30 s).
    pub ping_timeout: Duration,
    /// Message ids start above this.
    pub first_id: i64,
    /// Where it listens (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The event's mgr key (`<event id>$<letters and digits>`); generated when `None`.
    pub key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            event_id: 7,
            tls: true,
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(30),
            first_id: 52000,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            key: None,
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    fail: VecDeque<u16>,
    fail_posts: VecDeque<u16>,
    /// requests answered with an injected error so far
    failed: u64,
    /// (per mille, xorshift state): a share of REST requests answered 503
    ratio: Option<(u32, u64)>,
    delay: Duration,
    lose_acks: u32,
    commit_delay: Option<Duration>,
    refuse_ws: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    config: Config,
    key: String,
    other_key: String,
    frames: broadcast::Sender<usize>,
    changed: watch::Sender<u64>,
    drop_ws: watch::Sender<u64>,
    ws_clients: AtomicUsize,
    /// TCP connections accepted so far
    connections: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// A running GURU3 simulator. Dropping it stops the listener and every connection.
pub struct Guru3Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The accept loop (and with it every connection); `None` while GURU3 is off.
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Guru3Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guru3Sim")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Guru3Sim {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self
            .accept
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }
}

/// Accepts and serves connections until aborted (which ends every connection too).
fn serve(
    listener: TcpListener,
    accept_shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown_rx: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            accept_shared.connections.fetch_add(1, Ordering::SeqCst);
            let shared = Arc::clone(&accept_shared);
            let tls = tls.clone();
            let shutdown = shutdown_rx.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    let shutdown = shutdown.clone();
                    async move { Ok::<_, Infallible>(route(shared, req, shutdown).await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(tcp), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
            // reap finished connections
            while conns.try_join_next().is_some() {}
        }
    })
}

type Resp = Response<Full<Bytes>>;

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn html(status: u16, title: &str) -> Resp {
    respond(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        ),
    )
}

fn empty(status: u16) -> Resp {
    respond(status, "text/html; charset=utf-8", Bytes::new())
}

impl Guru3Sim {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let key = match &config.key {
            Some(k) => {
                let valid = k.split_once('$').is_some_and(|(id, secret)| {
                    id == config.event_id.to_string()
                        && !secret.is_empty()
                        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
                });
                if !valid {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "the mgr key must read {}$<letters and digits>",
                            config.event_id
                        ),
                    ));
                }
                k.clone()
            }
            None => format!("{}${}", config.event_id, random_alnum(64)),
        };
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("listening on {}: {e}", config.listen))
        })?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config.first_id)),
            faults: Mutex::new(Faults::default()),
            key,
            other_key: format!("{}${}", config.event_id + 1, random_alnum(64)),
            config,
            frames: broadcast::channel(1024).0,
            changed: watch::channel(0).0,
            drop_ws: watch::channel(0).0,
            ws_clients: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let tls = shared.config.tls.then(|| {
            tokio_rustls::TlsAcceptor::from(hexidian_testkit::server_config(
                hexidian_testkit::server_identity(),
            ))
        });
        let accept = serve(listener, Arc::clone(&shared), tls.clone(), shutdown_rx);
        Ok(Self {
            shared,
            addr,
            tls,
            accept: Mutex::new(Some(accept)),
            shutdown,
        })
    }

    /// GURU3 off (`false`): the listener is closed, so connections are refused, and every
    /// open connection (websockets included) ends. `true` listens again on the same address.
    pub async fn set_listening(&self, up: bool) {
        if !up {
            let old = self
                .accept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(t) = old {
                t.abort();
                let _ = t.await;
            }
            return;
        }
        let running = self
            .accept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if running {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebinding {}: {e}", self.addr));
        let task = serve(
            listener,
            Arc::clone(&self.shared),
            self.tls.clone(),
            self.shutdown.subscribe(),
        );
        *self
            .accept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The event id.
    pub fn event_id(&self) -> u32 {
        self.shared.config.event_id
    }

    /// The event's mgr key.
    pub fn api_key(&self) -> String {
        self.shared.key.clone()
    }

    /// A valid mgr key of *another* event (id + 1), for "key for another event" checks.
    pub fn other_event_key(&self) -> String {
        self.shared.other_key.clone()
    }

    // ---- driving it like GURU3's users do ----

    fn commit(&self, ids: Vec<i64>, notify: bool) -> Vec<i64> {
        let delay = self.shared.faults().commit_delay;
        {
            let mut st = self.shared.state();
            if delay.is_none() {
                st.commit(&ids);
            }
            if notify {
                // GURU3 sends one frame per saved message, from inside the transaction
                let n = st.undelivered();
                for _ in &ids {
                    let _ = self.shared.frames.send(n);
                }
            }
        }
        if let Some(d) = delay {
            let shared = Arc::clone(&self.shared);
            let ids = ids.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                shared.state().commit(&ids);
                shared.bump();
            });
        }
        self.shared.bump();
        ids
    }

    /// Creates or edits an extension (type changes, new credentials and `has_multiring` as in
    /// GURU3). Returns the ids of the messages it emitted.
    pub fn save(&self, ext: Extension) -> Result<Vec<i64>, String> {
        let ids = self.shared.state().save(ext)?;
        Ok(self.commit(ids, true))
    }

    /// Edits an existing extension in place.
    pub fn edit(&self, number: &str, f: impl FnOnce(&mut Extension)) -> Result<Vec<i64>, String> {
        let mut e = self
            .extension(number)
            .ok_or_else(|| format!("no extension {number}"))?;
        f(&mut e);
        self.save(e)
    }

    /// Renames (memberships and forwards follow silently).
    pub fn rename(&self, old: &str, new: &str) -> Result<Vec<i64>, String> {
        let ids = self.shared.state().rename(old, new)?;
        Ok(self.commit(ids, true))
    }

    /// Renames and edits in one save (what a person changing number and name at once makes
    /// GURU3 emit: RENAME_EXTENSION, then UPDATE_EXTENSION, in one transaction).
    pub fn rename_and_edit(
        &self,
        old: &str,
        new: &str,
        edit: impl FnOnce(&mut Extension),
    ) -> Result<Vec<i64>, String> {
        let ids = self.shared.state().rename_edit(old, new, edit)?;
        Ok(self.commit(ids, true))
    }

    /// Deletes (forwarders re-sent, memberships dropped silently).
    pub fn delete(&self, number: &str) -> Result<Vec<i64>, String> {
        let ids = self.shared.state().delete(number)?;
        Ok(self.commit(ids, true))
    }

    /// Replaces the accepted members of a group or multiring extension.
    pub fn set_members(&self, number: &str, members: Vec<Member>) -> Result<Vec<i64>, String> {
        let ids = self.shared.state().set_members(number, members)?;
        Ok(self.commit(ids, true))
    }

    /// "Unsubscribe handset".
    pub fn unsubscribe(&self, number: &str) -> Result<Vec<i64>, String> {
        let ids = self.shared.state().unsubscribe(number)?;
        Ok(self.commit(ids, true))
    }

    /// The admin "sync": drops the whole queue and writes the sync window (no frames).
    pub fn resync(&self) -> Vec<i64> {
        let ids = self.shared.state().resync();
        self.commit(ids, false)
    }

    /// A rental recall call (no frame, like GURU3's Celery worker).
    pub fn call_extension(&self, number: &str, audio_hash: &str) -> Vec<i64> {
        let ids = self.shared.state().call_extension(number, audio_hash);
        self.commit(ids, false)
    }

    /// Queues an arbitrary message (malformed or future types), with a frame.
    pub fn inject(&self, kind: &str, data: serde_json::Value) -> i64 {
        let id = self.shared.state().push(kind, J::from_value(&data));
        self.commit(vec![id], true);
        id
    }

    /// Flips an acked message back to undelivered (what an admin can do in Django's admin).
    pub fn replay(&self, id: i64) {
        if let Some(w) = self.shared.state().queue.iter_mut().find(|w| w.id == id) {
            w.delivered = false;
        }
        self.shared.bump();
    }

    // ---- faults ----

    /// The next `n` REST requests are answered with `status` (an HTML error page).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared
            .faults()
            .fail
            .extend(std::iter::repeat_n(status, n));
    }

    /// The next `n` POST requests (acks, inbound) are answered with `status`; GETs work.
    pub fn fail_next_posts(&self, n: usize, status: u16) {
        self.shared
            .faults()
            .fail_posts
            .extend(std::iter::repeat_n(status, n));
    }

    /// Forgets every queued injected error (`fail_next`, `fail_next_posts`, `fail_ratio`).
    pub fn clear_faults(&self) {
        let mut f = self.shared.faults();
        f.fail.clear();
        f.fail_posts.clear();
        f.ratio = None;
    }

    /// Answers `percent` % of REST requests with 503, chosen by a generator seeded with `seed`
    /// (0 % to stop).
    pub fn fail_ratio(&self, percent: u32, seed: u64) {
        self.shared.faults().ratio = (percent > 0).then_some((percent.min(100) * 10, seed | 1));
    }

    /// REST requests answered with an injected error so far.
    pub fn failed_count(&self) -> u64 {
        self.shared.faults().failed
    }

    /// Delays every REST response by `d` (zero to stop).
    pub fn set_delay(&self, d: Duration) {
        self.shared.faults().delay = d;
    }

    /// The next `n` POSTs answer 200 but do not mark their acks (a lost ack).
    pub fn lose_next_acks(&self, n: u32) {
        self.shared.faults().lose_acks = n;
    }

    /// New messages become visible to GET only `d` after their frame (the commit race).
    pub fn set_commit_delay(&self, d: Option<Duration>) {
        self.shared.faults().commit_delay = d;
    }

    /// Closes every open websocket abruptly.
    pub fn drop_websockets(&self) {
        self.shared.drop_ws.send_modify(|v| *v += 1);
    }

    /// Refuses websocket upgrades (503) while set.
    pub fn refuse_websockets(&self, refuse: bool) {
        self.shared.faults().refuse_ws = refuse;
    }

    // ---- inspection ----

    /// Every id acknowledged so far, in arrival order (repeats included).
    pub fn acked(&self) -> Vec<i64> {
        self.shared.state().acked.clone()
    }

    /// Undelivered messages as `(id, type)`, in GET order (committed or not).
    pub fn pending(&self) -> Vec<(i64, String)> {
        let st = self.shared.state();
        let mut v: Vec<_> = st.queue.iter().filter(|w| !w.delivered).collect();
        v.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp).then(a.id.cmp(&b.id)));
        v.into_iter().map(|w| (w.id, w.kind.clone())).collect()
    }

    /// How many messages are undelivered (cheap: no copy, no sort).
    pub fn pending_count(&self) -> usize {
        self.shared.state().undelivered()
    }

    /// All messages ever queued (since the last resync) as `(id, type, delivered)`.
    pub fn queue(&self) -> Vec<(i64, String, bool)> {
        let st = self.shared.state();
        st.queue
            .iter()
            .map(|w| (w.id, w.kind.clone(), w.delivered))
            .collect()
    }

    /// An extension as GURU3 stores it.
    pub fn extension(&self, number: &str) -> Option<Extension> {
        self.shared.state().extensions.get(number).cloned()
    }

    /// All extensions.
    pub fn extensions(&self) -> Vec<Extension> {
        self.shared.state().extensions.values().cloned().collect()
    }

    /// Accepted members of a group or multiring extension.
    pub fn members(&self, number: &str) -> Vec<Member> {
        self.shared
            .state()
            .members
            .get(number)
            .cloned()
            .unwrap_or_default()
    }

    /// Inbound messages received and GURU3's verdicts.
    pub fn inbound(&self) -> Vec<InboundRecord> {
        self.shared.state().inbound.clone()
    }

    /// `(GET requests, POST requests)` answered with 200.
    pub fn request_counts(&self) -> (u64, u64) {
        let st = self.shared.state();
        (st.gets, st.posts)
    }

    /// TCP connections accepted so far (websockets included).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Open websockets.
    pub fn websocket_clients(&self) -> usize {
        self.shared.ws_clients.load(Ordering::SeqCst)
    }

    /// Waits (at most 20 s, then panics with `what`) until `pred` holds.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Self) -> bool) {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            rx.borrow_and_update();
            if pred(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!("guru3-sim: timed out waiting for {what}");
            }
        }
    }
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Resp {
    let path = req.uri().path().to_owned();
    if path == "/status/stream/" {
        return websocket(shared, req, shutdown);
    }
    if !path.starts_with("/api/") {
        return html(404, "Not Found");
    }
    let delay = shared.faults().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failed = {
        let mut f = shared.faults();
        let mut status = f.fail.pop_front().or_else(|| {
            (req.method() == Method::POST)
                .then(|| f.fail_posts.pop_front())
                .flatten()
        });
        if let (None, Some((per_mille, rng))) = (status, f.ratio.as_mut()) {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            if *rng % 1000 < u64::from(*per_mille) {
                status = Some(503);
            }
        }
        f.failed += u64::from(status.is_some());
        status
    };
    if let Some(status) = failed {
        shared.bump();
        return html(status, "Server Error (500)");
    }
    let resp = api(&shared, req, &path).await;
    shared.bump();
    resp
}

/// Checks the `ApiKey` header: the event the key belongs to.
fn authenticate(shared: &Shared, headers: &hyper::HeaderMap) -> Option<u32> {
    let key = headers.get("apikey")?.to_str().ok()?;
    let (id, _secret) = key.split_once('$')?;
    id.parse::<u32>().ok()?;
    if key == shared.key {
        Some(shared.config.event_id)
    } else if key == shared.other_key {
        Some(shared.config.event_id + 1)
    } else {
        None
    }
}

async fn api(shared: &Shared, req: Request<Incoming>, path: &str) -> Resp {
    let Some(key_event) = authenticate(shared, req.headers()) else {
        return html(403, "403 Forbidden");
    };
    let Some(event) = path
        .strip_prefix("/api/event/")
        .and_then(|r| r.strip_suffix("/messages"))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<u32>().ok())
    else {
        return html(404, "Not Found");
    };
    if event != shared.config.event_id && event != shared.config.event_id + 1 {
        return html(404, "Not Found");
    }
    if event != key_event {
        return html(403, "403 Forbidden");
    }
    let other = event != shared.config.event_id;
    match *req.method() {
        Method::GET => {
            let max = match query_param(req.uri().query().unwrap_or(""), "max_messages") {
                None => 10,
                Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                    v.parse::<usize>().unwrap_or(usize::MAX)
                }
                Some(_) => return empty(400),
            };
            if other {
                return respond(200, "application/json", "[]");
            }
            let mut st = shared.state();
            st.gets += 1;
            respond(200, "application/json", st.page(max))
        }
        Method::POST => post(shared, req, other).await,
        _ => {
            let mut r = empty(405);
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, POST"));
            r
        }
    }
}

async fn post(shared: &Shared, req: Request<Incoming>, other_event: bool) -> Resp {
    let ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Ok(body) = Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    else {
        return empty(400);
    };
    let body = body.to_bytes();
    let form = if ctype.starts_with("application/x-www-form-urlencoded") {
        parse_urlencoded(&body)
    } else if let Some(b) = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .filter(|_| ctype.starts_with("multipart/form-data"))
    {
        parse_multipart(&body, b.trim_matches('"'))
    } else {
        // Django fills request.POST only from form bodies: JSON leaves it empty
        Vec::new()
    };
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Some(acklist) = field("acklist").filter(|v| !v.is_empty()) else {
        return empty(400);
    };
    let Ok(serde_json::Value::Array(acks)) = serde_json::from_str::<serde_json::Value>(&acklist)
    else {
        return empty(400);
    };
    let Some(acks) = acks
        .iter()
        .map(serde_json::Value::as_i64)
        .collect::<Option<Vec<i64>>>()
    else {
        return empty(400);
    };
    let messages = match field("messages") {
        None => Vec::new(),
        Some(m) => match serde_json::from_str::<serde_json::Value>(&m) {
            Ok(serde_json::Value::Array(v)) => v,
            _ => return empty(400),
        },
    };
    let lose = {
        let mut f = shared.faults();
        let lose = f.lose_acks > 0;
        f.lose_acks = f.lose_acks.saturating_sub(1);
        lose
    };
    let mut st = shared.state();
    st.posts += 1;
    if !lose && !other_event {
        st.ack(&acks);
    }
    let _ = shared.frames.send(st.undelivered());
    let mut results = Vec::new();
    for m in &messages {
        match st.inbound(m) {
            Ok(r) => results.push(r),
            // an unhandled exception in GURU3: acks and earlier messages stay committed
            Err(()) => return html(500, "Server Error (500)"),
        }
    }
    respond(
        200,
        "application/json",
        J::obj([("messages", J::Arr(results))]).dumps(),
    )
}

fn query_param(query: &str, name: &str) -> Option<String> {
    parse_urlencoded(query.as_bytes())
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

/// Lenient like Django's parser: parts are separated by `--boundary`; each part with a
/// `Content-Disposition: form-data; name="…"` header is a field.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let delim = format!("--{boundary}");
    text.split(delim.as_str())
        .filter_map(|part| {
            let part = part.trim_start_matches("\r\n");
            let (headers, value) = part.split_once("\r\n\r\n")?;
            let name = headers
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?
                .split(';')
                .find_map(|p| p.trim().strip_prefix("name="))?
                .trim_matches('"')
                .to_owned();
            Some((name, value.strip_suffix("\r\n").unwrap_or(value).to_owned()))
        })
        .collect()
}

fn websocket(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) -> Resp {
    let key = req
        .headers()
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if authenticate(&shared, req.headers()) != Some(shared.config.event_id) {
        // a known event with a wrong secret crashes GURU3's connect handler
        let same_event = key
            .split_once('$')
            .is_some_and(|(id, _)| id == shared.config.event_id.to_string());
        return if same_event {
            html(500, "Server Error (500)")
        } else {
            html(403, "403 Forbidden")
        };
    }
    if shared.faults().refuse_ws {
        return html(503, "Service Unavailable");
    }
    let upgrade = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(accept) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return empty(400);
    };
    if !upgrade {
        return empty(400);
    }
    let mut frames = shared.frames.subscribe();
    let mut drop_ws = shared.drop_ws.subscribe();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        shared.ws_clients.fetch_add(1, Ordering::SeqCst);
        shared.bump();
        let mut ping = tokio::time::interval(shared.config.ping_interval);
        ping.tick().await;
        let mut awaiting_pong: Option<tokio::time::Instant> = None;
        loop {
            let pong_deadline = awaiting_pong.map(|t| t + shared.config.ping_timeout);
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = drop_ws.changed() => break,
                () = async {
                    match pong_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => break,
                _ = ping.tick() => {
                    if ws.send(Message::Ping(Bytes::from_static(b"daphne"))).await.is_err() {
                        break;
                    }
                    awaiting_pong.get_or_insert_with(tokio::time::Instant::now);
                }
                f = frames.recv() => match f {
                    Ok(n) => {
                        let text = J::obj([("action", J::s("messagecount")), ("queuelength", J::Int(n as i64))]).dumps();
                        if ws.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                m = ws.next() => match m {
                    Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                    // text is parsed as JSON and ignored; bad JSON or binary kills the socket
                    Some(Ok(Message::Text(t))) if serde_json::from_str::<serde_json::Value>(t.as_str()).is_ok() => {}
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    _ => break,
                },
            }
        }
        shared.ws_clients.fetch_sub(1, Ordering::SeqCst);
        shared.bump();
    });
    let mut r = empty(101);
    let h = r.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    h.remove(CONTENT_TYPE);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_like_django() {
        assert_eq!(
            parse_urlencoded(b"acklist=%5B52001%2C+52002%5D&x=a+b%2"),
            [
                ("acklist".to_owned(), "[52001, 52002]".to_owned()),
                ("x".to_owned(), "a b%2".to_owned())
            ]
        );
        // the Python hexidian's hand-built body: no opening delimiter, ends with \r\n---
        let body = b"Content-Disposition: form-data; name=\"acklist\"\r\n\r\n[5]\r\n---";
        assert_eq!(
            parse_multipart(body, "-"),
            [("acklist".to_owned(), "[5]".to_owned())]
        );
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"acklist\"\r\n\r\n[1, 2]\r\n--XyZ--\r\n";
        assert_eq!(
            parse_multipart(body, "XyZ"),
            [("acklist".to_owned(), "[1, 2]".to_owned())]
        );
    }
}

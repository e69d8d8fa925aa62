//! The one HTTP server both listeners (admin, token-call webhook) run on: accepting with
//! back-off on errors, a connection cap in total and per peer address, a header-read timeout
//! and buffer limit against slowloris, a lifetime per connection, and graceful shutdown
//! (requests in flight finish, bounded by a grace period).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// Connections open at once (more are closed right after the accept).
    pub(crate) max_connections: usize,
    /// Connections open at once from one address, so one peer cannot take every slot.
    pub(crate) max_per_peer: usize,
    /// The request head must arrive within this.
    pub(crate) header_timeout: Duration,
    /// No connection lives longer.
    pub(crate) lifetime: Duration,
    /// Requests in flight get this long after the stop.
    pub(crate) grace: Duration,
    /// No connection a handler marked as a stream ([`Connection::stream`]) lives longer.
    pub(crate) stream_lifetime: Duration,
    /// The kernel's send buffer of each connection (`None`: its own, growing to megabytes):
    /// bounds what a peer that does not read can hold in the kernel, and lets a stream
    /// notice such a peer soon.
    pub(crate) send_buffer: Option<usize>,
}

/// What a handler may do to the connection its request came on: found in the request's
/// extensions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connection {
    close: Arc<tokio::sync::Notify>,
    stream: Arc<std::sync::atomic::AtomicBool>,
}

impl Connection {
    /// Closes the connection at once, whatever it is doing (a stream client that does not
    /// read: its writes would wait for ever).
    pub(crate) fn close(&self) {
        self.close.notify_one();
    }

    /// The response is a long-lived stream: the connection may live up to
    /// [`ServeLimits::stream_lifetime`].
    pub(crate) fn stream(&self) {
        self.stream
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ServeLimits {
    /// The listeners' limits.
    pub(crate) const DEFAULT: Self = Self {
        max_connections: 256,
        max_per_peer: 32,
        header_timeout: Duration::from_secs(5),
        lifetime: Duration::from_secs(30),
        grace: Duration::from_secs(3),
        stream_lifetime: Duration::from_secs(15 * 60),
        send_buffer: None,
    };
}

/// Gives a peer's connection slot back when its connection ends.
struct PeerSlot {
    slots: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl PeerSlot {
    fn take(slots: &Arc<Mutex<HashMap<IpAddr, usize>>>, peer: IpAddr, max: usize) -> Option<Self> {
        let mut m = slots.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            slots: Arc::clone(slots),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `stop`, answering every request with `handler(peer,
/// request)`; then lets requests in flight finish within [`ServeLimits::grace`].
pub(crate) async fn serve_http<H, Fut, B>(
    listener: TcpListener,
    what: &'static str,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(IpAddr, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    let per_peer: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    while let Some((tcp, addr)) = accept(&listener, &mut stop, what).await {
        let peer = addr.ip();
        // count live connections only
        while conns.try_join_next().is_some() {}
        if conns.len() >= limits.max_connections {
            continue;
        }
        let Some(slot) = PeerSlot::take(&per_peer, peer, limits.max_per_peer) else {
            continue;
        };
        if let Some(n) = limits.send_buffer {
            if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(n) {
                tracing::debug!(listener = what, error = %e, "send buffer size not set");
            }
        }
        let handler = handler.clone();
        let control = Connection::default();
        let ctl = control.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ctl.clone());
            let answer = handler(peer, req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(16 * 1024);
        let conn = graceful.watch(b.serve_connection(TokioIo::new(tcp), svc));
        conns.spawn(async move {
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = &mut conn => return,
                () = control.close.notified() => return,
                () = tokio::time::sleep(limits.lifetime) => {}
            }
            if control.stream.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::select! {
                    _ = &mut conn => {}
                    () = control.close.notified() => {}
                    () = tokio::time::sleep(limits.stream_lifetime.saturating_sub(limits.lifetime)) => {}
                }
            }
        });
    }
    // stopped: no new connections; those open finish their request and close
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            listener = what,
            "connections still open after the grace period"
        );
    }
}

/// The next connection, or `None` once `stop` fires. Accept errors (EMFILE when the process
/// is out of descriptors, ENFILE, ENOBUFS, …) are retried with a growing pause instead of a
/// busy loop, and logged once per run of failures.
async fn accept(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    what: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut errors = 0u32;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok(a) => {
                if errors > 0 {
                    tracing::info!(listener = what, failures = errors, "accepting works again");
                }
                return Some(a);
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                if errors == 1 {
                    tracing::warn!(listener = what, error = %e, "accept failed; backing off");
                }
                let pause = Duration::from_millis(10u64 << errors.min(7));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

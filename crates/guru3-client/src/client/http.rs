//! HTTP/1.1 requests over TCP or TLS, bounded in time and size. One connection is kept open
//! between the fetches and ack POSTs of the feed (a handshake per request cost a millisecond
//! or two of every edit); a request that finds it closed by the server is sent again once on a
//! new one. Inbound messages (`ASSIGN_HANDSET`) always go on a connection of their own: a
//! POST that may have reached GURU3 is never sent twice.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Config;
use super::ws::Notifications;
use crate::error::{Error, Result};

/// `scheme://host[:port][/prefix]` of a GURU3 instance.
#[derive(Clone, Debug)]
pub(crate) struct BaseUrl {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path prefix without a trailing slash (`""` at the root).
    pub(crate) prefix: String,
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host_for_header(),
            self.port,
            self.prefix
        )
    }
}

impl BaseUrl {
    fn host_for_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl FromStr for BaseUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("guru3 url {s:?}: {why}"));
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with https:// or http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(bad("invalid host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = hyper::client::conn::http1::Connection<TokioIo<Box<dyn Io>>, Full<Bytes>>;
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(crate) struct Http {
    pub(crate) config: Config,
    connector: Option<TlsConnector>,
    /// The idle kept-alive connection, if any (its driver is polled during each request).
    idle: std::sync::Mutex<Option<(Sender, Conn)>>,
}

/// Whether a request may use, and return, the kept-alive connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// An idempotent request (a fetch, an ack): sent again on a new connection if the kept
    /// one turns out closed.
    Yes,
    /// A connection of its own, closed after the answer.
    No,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

impl Http {
    pub(crate) fn new(config: Config) -> Result<Self> {
        let connector = if config.base.tls {
            let tls = match &config.tls {
                Some(t) => Arc::clone(t),
                None => super::tls::with_roots(super::tls::webpki_roots()),
            };
            Some(TlsConnector::from(tls))
        } else {
            None
        };
        if connector.is_some() {
            ServerName::try_from(config.base.host.clone())
                .map_err(|_| Error::Config(format!("invalid tls host {:?}", config.base.host)))?;
        }
        Ok(Self {
            config,
            connector,
            idle: std::sync::Mutex::new(None),
        })
    }

    async fn stream(&self) -> Result<Box<dyn Io>> {
        let base = &self.config.base;
        let fut = async {
            let tcp = TcpStream::connect((base.host.as_str(), base.port)).await?;
            tcp.set_nodelay(true)?;
            Ok::<Box<dyn Io>, Error>(match &self.connector {
                Some(c) => {
                    let name = ServerName::try_from(base.host.clone())
                        .map_err(|_| Error::Config("invalid tls host".into()))?;
                    Box::new(c.connect(name, tcp).await?)
                }
                None => Box::new(tcp),
            })
        };
        tokio::time::timeout(self.config.connect_timeout, fut)
            .await
            .map_err(|_| Error::Timeout { request: "connect" })?
    }

    fn api_key_header(&self) -> Result<HeaderValue> {
        let mut key = HeaderValue::from_str(self.config.api_key.expose())
            .map_err(|_| Error::Config("api key is not a valid header value".into()))?;
        key.set_sensitive(true);
        Ok(key)
    }

    pub(crate) async fn get(&self, request: &'static str, path: &str) -> Result<Bytes> {
        self.send(request, Method::GET, path, None, Reuse::Yes)
            .await
    }

    pub(crate) async fn post(
        &self,
        request: &'static str,
        path: &str,
        body: String,
        reuse: Reuse,
    ) -> Result<Bytes> {
        self.send(request, Method::POST, path, Some(body), reuse)
            .await
    }

    async fn send(
        &self,
        request: &'static str,
        method: Method,
        path: &str,
        body: Option<String>,
        reuse: Reuse,
    ) -> Result<Bytes> {
        let fut = async {
            let kept = match reuse {
                Reuse::Yes => self.idle.lock().unwrap_or_else(|e| e.into_inner()).take(),
                Reuse::No => None,
            };
            if let Some(conn) = kept {
                match self
                    .exchange(conn, request, method.clone(), path, body.clone(), reuse)
                    .await
                {
                    // the server closed the idle connection (or it broke): an idempotent
                    // request goes again on a new one, once; an answer is never retried
                    Err(e @ (Error::Http(_) | Error::Io(_))) => {
                        tracing::debug!(error = %e, "kept guru3 connection failed; reconnecting");
                    }
                    r => return r,
                }
            }
            let io = self.stream().await?;
            let conn = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(Error::Http)?;
            self.exchange(conn, request, method, path, body, reuse)
                .await
        };
        tokio::time::timeout(self.config.request_timeout, fut)
            .await
            .map_err(|_| Error::Timeout { request })?
    }

    /// One request on `conn`; with [`Reuse::Yes`] the connection is kept for the next one
    /// when the exchange completed and neither side asked to close it.
    async fn exchange(
        &self,
        (mut sender, conn): (Sender, Conn),
        request: &'static str,
        method: Method,
        path: &str,
        body: Option<String>,
        reuse: Reuse,
    ) -> Result<Bytes> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.config.base.host_for_header());
        if reuse == Reuse::No {
            req = req.header("connection", "close");
        }
        req = req.header("ApiKey", self.api_key_header()?);
        let body = match body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| Error::Config(format!("building request: {e}")))?;
        let limit = self.config.max_response_bytes;
        let exchange = async {
            sender.ready().await.map_err(Error::Http)?;
            let resp = sender.send_request(req).await.map_err(Error::Http)?;
            let status = resp.status().as_u16();
            let closing = resp
                .headers()
                .get(hyper::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(h) => Error::Http(*h),
                    Err(_) => Error::TooLarge { limit },
                })?
                .to_bytes();
            Ok::<_, Error>((status, body, closing))
        };
        // the connection's driver is polled alongside the exchange, never in a task of its own
        let mut conn = conn;
        let mut conn_done = false;
        let (status, body, closing) = {
            tokio::pin!(exchange);
            loop {
                tokio::select! {
                    r = &mut exchange => break r?,
                    r = &mut conn, if !conn_done => {
                        conn_done = true;
                        r.map_err(Error::Http)?;
                    }
                }
            }
        };
        if reuse == Reuse::Yes && !conn_done && !closing && !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.is_none() {
                *idle = Some((sender, conn));
            }
        }
        if status != 200 {
            return Err(Error::Rejected {
                request,
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        Ok(body)
    }

    /// Opens the notification websocket; frames and messages above 1 MiB end it with an
    /// error.
    pub(crate) async fn websocket(&self) -> Result<Notifications> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let base = &self.config.base;
        let scheme = if base.tls { "wss" } else { "ws" };
        let url = format!(
            "{scheme}://{}:{}{}/status/stream/",
            base.host_for_header(),
            base.port,
            base.prefix
        );
        let mut req = url
            .into_client_request()
            .map_err(|e| Error::Websocket(Box::new(e)))?;
        req.headers_mut().insert("ApiKey", self.api_key_header()?);
        let fut = async {
            let io = self.stream().await?;
            // GURU3's frames are a few bytes of JSON: anything near a megabyte is hostile
            let limits = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .max_message_size(Some(WS_MAX_MESSAGE))
                .max_frame_size(Some(WS_MAX_MESSAGE));
            let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, io, Some(limits))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => Error::Rejected {
                        request: "websocket upgrade",
                        status: resp.status().as_u16(),
                        body: String::new(),
                    },
                    e => Error::Websocket(Box::new(e)),
                })?;
            Ok::<_, Error>(ws)
        };
        let ws = tokio::time::timeout(self.config.request_timeout, fut)
            .await
            .map_err(|_| Error::Timeout {
                request: "websocket upgrade",
            })??;
        Ok(Notifications::new(ws))
    }
}

/// Largest websocket message (and frame) accepted from GURU3: 1 MiB.
pub(crate) const WS_MAX_MESSAGE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let check = |s: &str, want: &str| {
            let got = s.parse::<BaseUrl>().map(|b| b.to_string());
            assert_eq!(got.map_err(|_| ()).as_deref(), Ok(want), "{s}");
        };
        check("https://guru3.example", "https://guru3.example:443");
        check("https://guru3.example/", "https://guru3.example:443");
        check("http://127.0.0.1:8080/g3/", "http://127.0.0.1:8080/g3");
        check("https://[::1]:9/", "https://[::1]:9");
        for bad in [
            "ftp://x",
            "https://",
            "https://h:x",
            "https://u@h",
            "https://h/?a",
            "guru3",
        ] {
            assert!(bad.parse::<BaseUrl>().is_err(), "{bad}");
        }
    }
}

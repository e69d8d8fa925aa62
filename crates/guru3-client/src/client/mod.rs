//! Async REST and websocket client (feature `client`).
//!
//! [`Client`] is a cheap, cloneable handle; every request opens its own connection (GURU3 spends
//! a PBKDF2 verification on each request anyway, so keep-alive buys nothing) and is bounded by
//! the configured timeout. [`Feed`] builds "the next page to process" on top of it.

mod feed;
mod http;
pub mod tls;
mod ws;

use std::sync::Arc;
use std::time::Duration;

pub use feed::{Feed, FeedConfig, FeedStatus, FetchObserver, StatusHandle, Watcher, feed};
pub use ws::{Notification, Notifications};

use crate::error::{Error, Result};
use crate::inbound::{self, Inbound, InboundResult, MAX_ACKS_PER_POST};
use crate::message::Page;
use crate::types::{ApiKey, EventId, MessageId};

/// Where GURU3 is and how to talk to it.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    pub(crate) base: http::BaseUrl,
    pub(crate) api_key: ApiKey,
    pub(crate) event_id: EventId,
    pub(crate) max_messages: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base", &self.base.to_string())
            .field("api_key", &self.api_key)
            .field("event_id", &self.event_id)
            .field("max_messages", &self.max_messages)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A configuration for the GURU3 at `base_url` (`https://host[:port][/prefix]`, or
    /// `http://` for a local test instance). The event id is taken from the key's prefix.
    pub fn new(base_url: &str, api_key: ApiKey) -> Result<Self> {
        Ok(Self {
            base: base_url.parse()?,
            event_id: api_key.event_id(),
            api_key,
            max_messages: 1000,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 64 << 20,
            tls: None,
        })
    }

    /// The event to consume; [`Client::new`] refuses a key whose prefix differs.
    pub fn event_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }

    /// Page size of `GET …/messages` (default 1000, at least 1: a 10,000-message resync in
    /// 11 pages, each acked in one POST of at most [`MAX_ACKS_PER_POST`] ids).
    pub fn max_messages(mut self, n: u32) -> Self {
        self.max_messages = n.max(1);
        self
    }

    /// Bound on each whole request, connect to last body byte (default 30 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Bound on TCP connect plus TLS handshake (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Largest accepted response body (default 64 MiB).
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// TLS settings for `https` (default: the webpki roots, see [`tls::with_roots`]).
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Handle for GURU3's consumer API of one event.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<http::Http>,
}

impl Client {
    /// Checks the configuration (key prefix = event id) and prepares TLS. Does no I/O.
    pub fn new(config: Config) -> Result<Self> {
        if config.api_key.event_id() != config.event_id {
            return Err(Error::Config(format!(
                "api key belongs to event {}, not to event {}",
                config.api_key.event_id(),
                config.event_id
            )));
        }
        Ok(Self {
            inner: Arc::new(http::Http::new(config)?),
        })
    }

    /// The configured event.
    pub fn event_id(&self) -> EventId {
        self.inner.config.event_id
    }

    /// The configured page size.
    pub fn page_size(&self) -> u32 {
        self.inner.config.max_messages
    }

    /// `GET /api/event/<id>/messages?max_messages=<page size>`: the oldest unacked messages.
    pub async fn fetch_messages(&self) -> Result<Page> {
        self.fetch_messages_max(self.inner.config.max_messages)
            .await
    }

    /// Like [`fetch_messages`](Self::fetch_messages) with an explicit page size.
    pub async fn fetch_messages_max(&self, max: u32) -> Result<Page> {
        let path = format!("{}?max_messages={max}", self.messages_path());
        let body = self.inner.get("GET messages", &path).await?;
        Ok(Page::from_json(&body)?)
    }

    /// Acknowledges messages, in POSTs of at most 1000 ids. Unknown or already acked ids are
    /// harmless. An empty slice sends nothing.
    pub async fn ack(&self, ids: &[MessageId]) -> Result<()> {
        for chunk in ids.chunks(MAX_ACKS_PER_POST) {
            let body = inbound::encode_post_body(chunk, &[]);
            self.inner
                .post("POST acks", &self.messages_path(), body, http::Reuse::Yes)
                .await?;
        }
        Ok(())
    }

    /// Submits inbound messages (with an empty `acklist`) and returns GURU3's verdict for each.
    pub async fn submit(&self, messages: &[Inbound]) -> Result<Vec<InboundResult>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let body = inbound::encode_post_body(&[], messages);
        let resp = self
            .inner
            .post("POST inbound", &self.messages_path(), body, http::Reuse::No)
            .await?;
        Ok(inbound::decode_post_response(&resp)?)
    }

    /// Opens the websocket `/status/stream/` (with the `ApiKey` header).
    pub async fn connect_notifications(&self) -> Result<Notifications> {
        self.inner.websocket().await
    }

    fn messages_path(&self) -> String {
        format!(
            "{}/api/event/{}/messages",
            self.inner.config.base.prefix, self.inner.config.event_id
        )
    }
}

//! "The next page of messages to process" (spec §8 steps 2–6).
//!
//! [`feed`] returns a [`Feed`], which the consumer calls in its processing loop, and a
//! [`Watcher`], a future the caller spawns that keeps the websocket open (reconnecting forever
//! with back-off and jitter) and tells the feed when to fetch. The feed fetches
//!
//! * at start and after every websocket (re)connect (a connect or a frame fetches even
//!   while a failed fetch's back-off runs: GURU3 is evidently up),
//! * after a `messagecount` frame whose count rose since the previous frame (the echo of an
//!   ack never does): at once after a quiet period,
//!   else at the end of the debounce window that follows the last frame-triggered fetch,
//! * once more, shortly after a frame whose fetch found nothing new (the frame races the
//!   commit in GURU3),
//! * at once again after a full page,
//! * on a poll timer, whatever the websocket does.
//!
//! Acks are buffered with [`Feed::ack`] and flushed before every fetch and by
//! [`Feed::flush_acks`]; ids whose ack is still pending are filtered out of later pages (and
//! acked again) instead of being handed out twice.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use exp_backoff::Backoff;

use super::Client;
use crate::error::{Error, Result};
use crate::message::Page;
use crate::types::MessageId;

/// Timing of a [`Feed`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FeedConfig {
    /// Fetch at least this often (default 30 s).
    pub poll_interval: Duration,
    /// Frames within this long after a frame-triggered fetch are answered by one more fetch
    /// at the end of the window (default 0: a frame fetches at once, and frames that arrive
    /// while a fetch is under way are answered by one fetch right after it).
    pub debounce: Duration,
    /// Fetch again this long after a frame whose fetch brought nothing new (default 250 ms:
    /// GURU3 sends the frame from inside the saving transaction, so it can precede the commit).
    pub repoll_delay: Duration,
    /// First websocket reconnect delay (default 1 s), doubling up to `reconnect_max`.
    pub reconnect_base: Duration,
    /// Largest websocket reconnect delay (default 60 s).
    pub reconnect_max: Duration,
    /// Reconnect when the websocket is silent this long (GURU3 pings every 20 s; default 75 s).
    pub idle_timeout: Duration,
    /// First delay after a failed fetch (default 1 s), doubling up to `retry_max`.
    pub retry_base: Duration,
    /// Largest delay after failed fetches (default 30 s).
    pub retry_max: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(30),
            debounce: Duration::ZERO,
            repoll_delay: Duration::from_millis(250),
            reconnect_base: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl FeedConfig {
    /// Sets [`poll_interval`](Self::poll_interval).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Sets [`debounce`](Self::debounce).
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// Sets [`repoll_delay`](Self::repoll_delay).
    pub fn repoll_delay(mut self, d: Duration) -> Self {
        self.repoll_delay = d;
        self
    }

    /// Sets the websocket reconnect back-off.
    pub fn reconnect(mut self, base: Duration, max: Duration) -> Self {
        self.reconnect_base = base;
        self.reconnect_max = max.max(base);
        self
    }

    /// Sets the fetch retry back-off.
    pub fn retry(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max.max(base);
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WsState {
    connected: bool,
    connects: u64,
    frames: u64,
    /// `queuelength` of the latest counted frame
    queue_length: u64,
}

/// What the feed knows about its peer, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStatus {
    /// The websocket is open.
    pub websocket_connected: bool,
    /// Successful websocket connects so far.
    pub websocket_connects: u64,
    /// Whether the last fetch succeeded.
    pub last_fetch_ok: bool,
    /// Ids processed but not yet acknowledged to GURU3.
    pub pending_acks: usize,
    /// Fetches done.
    pub fetches: u64,
}

/// A live view of a [`Feed`]'s [`FeedStatus`] that can be read while the feed itself is busy
/// waiting in [`Feed::next_page`] (which holds `&mut Feed`).
#[derive(Debug, Clone)]
pub struct StatusHandle {
    ws: watch::Receiver<WsState>,
    live: std::sync::Arc<std::sync::Mutex<(bool, usize, u64)>>,
}

impl StatusHandle {
    /// The feed's status now.
    pub fn get(&self) -> FeedStatus {
        let ws = *self.ws.borrow();
        let (last_fetch_ok, pending_acks, fetches) = *self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        FeedStatus {
            websocket_connected: ws.connected,
            websocket_connects: ws.connects,
            last_fetch_ok,
            pending_acks,
            fetches,
        }
    }
}

/// Creates the feed and its websocket watcher for `client`.
pub fn feed(client: Client, config: FeedConfig) -> (Feed, Watcher) {
    let (tx, rx) = watch::channel(WsState::default());
    let now = Instant::now();
    let feed = Feed {
        client: client.clone(),
        ws: rx,
        live: std::sync::Arc::default(),
        seen: WsState::default(),
        fetch_now: true,
        next_poll: now + config.poll_interval,
        debounce_at: None,
        repoll_at: None,
        retry_at: None,
        taken: None,
        last_fetch_at: None,
        retry: Backoff::new(config.retry_base, config.retry_max),
        ack_retry: Backoff::new(config.retry_base, config.retry_max),
        refused: Backoff::new(REFUSED.0, REFUSED.1),
        ack_retry_at: None,
        pending_acks: BTreeSet::new(),
        last_fetch_ok: false,
        fetches: 0,
        on_fetch: OnFetch::default(),
        config: config.clone(),
    };
    let watcher = Watcher {
        client,
        tx,
        backoff: Backoff::new(config.reconnect_base, config.reconnect_max),
        refused: Backoff::new(REFUSED.0, REFUSED.1),
        idle_timeout: config.idle_timeout,
    };
    (feed, watcher)
}

/// Pages of messages to process, in GURU3 order, plus the ack buffer.
#[derive(Debug)]
pub struct Feed {
    client: Client,
    config: FeedConfig,
    ws: watch::Receiver<WsState>,
    /// (last fetch ok, pending acks, fetches), published for [`StatusHandle`]
    live: std::sync::Arc<std::sync::Mutex<(bool, usize, u64)>>,
    seen: WsState,
    fetch_now: bool,
    next_poll: Instant,
    debounce_at: Option<Instant>,
    repoll_at: Option<Instant>,
    retry_at: Option<Instant>,
    /// a trigger whose fetch has not finished yet (survives a cancelled `next_page`)
    taken: Option<Trigger>,
    /// when the last frame-triggered fetch finished (the debounce window starts there)
    last_fetch_at: Option<Instant>,
    retry: Backoff,
    ack_retry: Backoff,
    /// after a refused connection (fetch or ack): retried within a second, so the queue
    /// moves as soon as GURU3 is back, however long it was gone
    refused: Backoff,
    /// after a failed ack POST: no fetch before this (its page would only repeat the
    /// messages whose acks are pending)
    ack_retry_at: Option<Instant>,
    pending_acks: BTreeSet<MessageId>,
    last_fetch_ok: bool,
    fetches: u64,
    on_fetch: OnFetch,
}

/// Told how long each fetch took and whether it worked (for metrics).
pub type FetchObserver = std::sync::Arc<dyn Fn(Duration, bool) + Send + Sync>;

#[derive(Default)]
struct OnFetch(Option<FetchObserver>);

impl std::fmt::Debug for OnFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Now,
    Frame,
    Timer,
}

impl Feed {
    /// The underlying client (e.g. for [`Client::submit`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Health of the feed.
    pub fn status(&self) -> FeedStatus {
        let ws = *self.ws.borrow();
        FeedStatus {
            websocket_connected: ws.connected,
            websocket_connects: ws.connects,
            last_fetch_ok: self.last_fetch_ok,
            pending_acks: self.pending_acks.len(),
            fetches: self.fetches,
        }
    }

    /// Tells `observer` how long each fetch takes and whether it works.
    pub fn on_fetch(&mut self, observer: FetchObserver) {
        self.on_fetch = OnFetch(Some(observer));
    }

    /// A handle that reads [`status`](Self::status) live, also while the feed waits.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle {
            ws: self.ws.clone(),
            live: std::sync::Arc::clone(&self.live),
        }
    }

    fn publish(&self) {
        *self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (self.last_fetch_ok, self.pending_acks.len(), self.fetches);
    }

    /// Marks a message as done; it is acknowledged with the next flush.
    pub fn ack(&mut self, id: MessageId) {
        self.pending_acks.insert(id);
        self.publish();
    }

    /// Asks for a fetch at the next [`next_page`](Self::next_page) without waiting for a trigger.
    pub fn fetch_soon(&mut self) {
        self.fetch_now = true;
    }

    /// Sends all buffered acks, in POSTs of at most 1000 ids. What GURU3 did not confirm stays
    /// buffered (re-acking is harmless), and the next fetch waits out a growing back-off.
    pub async fn flush_acks(&mut self) -> Result<()> {
        if self.pending_acks.is_empty() {
            return Ok(());
        }
        let ids: Vec<MessageId> = self.pending_acks.iter().copied().collect();
        for chunk in ids.chunks(crate::inbound::MAX_ACKS_PER_POST) {
            if let Err(e) = self.client.ack(chunk).await {
                let delay = if e.is_refused() {
                    self.refused.next_delay()
                } else {
                    self.ack_retry.next_delay()
                };
                self.ack_retry_at = Some(Instant::now() + delay);
                self.publish();
                return Err(e);
            }
            for id in chunk {
                self.pending_acks.remove(id);
            }
        }
        self.publish();
        self.ack_retry.reset();
        self.refused.reset();
        self.ack_retry_at = None;
        Ok(())
    }

    /// Waits for a trigger, fetches, and returns the next non-empty page (messages whose ack
    /// is still pending are removed from it). A failed fetch is returned as an error; the next
    /// call waits out a growing back-off before it fetches again. Cancel-safe.
    pub async fn next_page(&mut self) -> Result<Page> {
        loop {
            // a trigger taken by a call that was cancelled before its fetch finished is
            // still owed a fetch
            let trigger = match self.taken {
                Some(t) => t,
                None => {
                    let t = self.wait_for_trigger().await;
                    self.taken = Some(t);
                    t
                }
            };
            let failing = self.ack_retry_at.is_some();
            match self.flush_acks().await {
                Err(e) if !failing => {
                    tracing::warn!(error = %e, pending = self.pending_acks.len(), "flushing guru3 acks failed; retrying with back-off");
                }
                Err(e) => tracing::debug!(error = %e, "flushing guru3 acks failed again"),
                Ok(()) if failing => tracing::info!("guru3 acks flushed again"),
                Ok(()) => {}
            }
            self.fetches += 1;
            let t_fetch = Instant::now();
            let fetched = self.client.fetch_messages().await;
            if let Some(f) = &self.on_fetch.0 {
                f(t_fetch.elapsed(), fetched.is_ok());
            }
            self.taken = None;
            let now = Instant::now();
            if trigger == Trigger::Frame {
                self.last_fetch_at = Some(now);
            }
            let mut page = match fetched {
                Ok(p) => p,
                Err(e) => {
                    self.last_fetch_ok = false;
                    self.publish();
                    let delay = if e.is_refused() {
                        self.refused.next_delay()
                    } else {
                        self.retry.next_delay()
                    };
                    self.retry_at = Some(now + delay);
                    self.fetch_now = true;
                    return Err(e);
                }
            };
            // an empty page is a successful fetch too: readiness must see it at once
            self.last_fetch_ok = true;
            self.publish();
            self.retry.reset();
            self.refused.reset();
            self.retry_at = None;
            self.next_poll = now + self.config.poll_interval;
            self.fetch_now = page.returned >= self.client.page_size() as usize;
            // frames that came in while this fetch was under way and announce no more than it
            // brought (a whole queue, not a full page) are answered by it
            let ws = *self.ws.borrow();
            if ws.frames > self.seen.frames
                && !self.fetch_now
                && ws.queue_length <= page.returned as u64
            {
                self.seen.frames = ws.frames;
                self.debounce_at = None;
            }
            let before = page.messages.len();
            page.messages.retain(|m| !self.pending_acks.contains(&m.id));
            if page.messages.len() < before {
                // their acks are still on the way; they go out with the next flush, and the
                // fetch after it waits for the ack back-off (no GET/POST loop while POSTs fail)
                tracing::debug!(
                    skipped = before - page.messages.len(),
                    "messages with pending acks returned again"
                );
                self.fetch_now = true;
                self.retry_at = self.ack_retry_at;
            }
            if !page.messages.is_empty() || !page.malformed.is_empty() {
                return Ok(page);
            }
            if trigger == Trigger::Frame {
                // the frame may have been sent before GURU3 committed: look once more
                self.repoll_at = Some(now + self.config.repoll_delay);
            }
        }
    }

    async fn wait_for_trigger(&mut self) -> Trigger {
        loop {
            let ws = *self.ws.borrow_and_update();
            let now = Instant::now();
            // GURU3 pushing something shows it is up: fetch whatever the REST back-off says
            let mut pushed = false;
            if ws.connects > self.seen.connects {
                self.fetch_now = true;
                pushed = true;
            }
            if ws.frames > self.seen.frames && self.debounce_at.is_none() {
                // leading edge: the first frame after a quiet period fetches at once; frames
                // that come while a fetch is in flight or right after it wait out `debounce`
                // and are answered by one fetch
                let quiet_since = self.last_fetch_at.map(|t| t + self.config.debounce);
                self.debounce_at = Some(quiet_since.filter(|t| *t > now).unwrap_or(now));
                pushed = true;
            }
            self.seen = ws;
            if pushed {
                self.retry_at = None;
            }
            let blocked_until = self.retry_at.filter(|t| *t > now);
            let mut trigger = None;
            if self.fetch_now {
                trigger = Some(Trigger::Now);
            } else if self.debounce_at.is_some_and(|t| t <= now) {
                trigger = Some(Trigger::Frame);
            } else if self.repoll_at.is_some_and(|t| t <= now) || self.next_poll <= now {
                trigger = Some(Trigger::Timer);
            }
            if let (Some(t), None) = (trigger, blocked_until) {
                // one fetch answers every frame seen so far
                self.debounce_at = None;
                self.repoll_at = None;
                self.fetch_now = false;
                return t;
            }
            let wake = [
                blocked_until,
                self.debounce_at,
                self.repoll_at,
                Some(self.next_poll),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + self.config.poll_interval);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                r = self.ws.changed() => {
                    if r.is_err() {
                        // watcher gone: keep polling on timers alone
                        tokio::time::sleep_until(wake).await;
                    }
                }
            }
        }
    }
}

/// Keeps the notification websocket open and tells the [`Feed`] about frames and (re)connects.
/// Spawn [`run`](Self::run); it returns when the feed is dropped.
#[derive(Debug)]
pub struct Watcher {
    client: Client,
    tx: watch::Sender<WsState>,
    backoff: Backoff,
    refused: Backoff,
    idle_timeout: Duration,
}

/// Retry delays after a refused connection: from 100 ms, doubling, at most 1 s.
const REFUSED: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

impl Watcher {
    /// Connects, reads frames, reconnects with exponential back-off and jitter; forever.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                () = self.tx.closed() => return,
                r = self.client.connect_notifications() => match r {
                    Ok(ws) => {
                        self.backoff.reset();
                        self.refused.reset();
                        self.tx.send_modify(|s| {
                            s.connected = true;
                            s.connects += 1;
                        });
                        tracing::info!("guru3 websocket connected");
                        let reason = self.read(ws).await;
                        self.tx.send_modify(|s| s.connected = false);
                        match reason {
                            None => return,
                            Some(e) => tracing::warn!(error = %e, "guru3 websocket lost"),
                        }
                    }
                    Err(e) if e.is_refused() => {
                        tracing::warn!(error = %e, "guru3 websocket connect refused");
                        let delay = self.refused.next_delay();
                        tokio::select! {
                            () = self.tx.closed() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "guru3 websocket connect failed"),
                },
            }
            let delay = self.backoff.next_delay();
            tokio::select! {
                () = self.tx.closed() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Reads until the stream ends; `None` when the feed is gone. Silence is measured from
    /// the last frame of any kind: GURU3's pings keep a quiet socket alive. Only a frame
    /// whose `queuelength` rose since the previous frame can announce a new message (acks,
    /// ours included, only lower it), so only such frames wake the feed; the first frame
    /// after a (re)connect is compared with 0, and the connect itself fetches anyway.
    async fn read(&mut self, mut ws: super::Notifications) -> Option<Error> {
        let mut last = 0u64;
        loop {
            let deadline = ws.last_activity() + self.idle_timeout;
            tokio::select! {
                () = self.tx.closed() => return None,
                r = tokio::time::timeout_at(deadline, ws.next()) => match r {
                    Err(_) => {
                        if ws.last_activity() + self.idle_timeout <= Instant::now() {
                            return Some(Error::Timeout { request: "websocket (silent)" });
                        }
                    }
                    Ok(None) => return Some(Error::Closed),
                    Ok(Some(Err(e))) => return Some(e),
                    Ok(Some(Ok(n))) => {
                        if n.queue_length > last {
                            self.tx.send_modify(|s| {
                                s.frames += 1;
                                s.queue_length = n.queue_length;
                            });
                        }
                        last = n.queue_length;
                    }
                },
            }
        }
    }
}

//! `GET /events`: the status stream, as server-sent events. A client gets one `snapshot`
//! event (peers, counters, stall, the latest finished messages, dead letters, handset
//! activity), then an event per change: `status` (peers, counters, stall), `message` (a
//! message finished), `handset` (a handset got a temporary number, was bound or returned)
//! and `dead_letters` (the newest dead letters, when their count moved).
//!
//! One publisher task compares the live status every [`TICK`] with what it last published
//! and broadcasts the differences, preformatted, to every client: its cost does not depend on
//! the number of clients, nor on the size of the event (no journal scan per tick; the dead
//! letters are read again only when their count moves). Each client has a small queue; a
//! client whose connection takes no event for [`STUCK`], or that falls more than [`BACKLOG`]
//! events behind, is dropped and its connection closed, so nothing buffers without limit. At most a configured number of
//! clients at once; a stream ends by itself after [`STREAM_LIFETIME`] (the browser's
//! `EventSource` reconnects and gets a fresh snapshot).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::Health;

/// How often the publisher looks for changes: the stream's delay from a commit to its event.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Events kept for the clients to take (shared): more than a burst of one tick (the broker
/// keeps 1,024 finished messages for the publisher). A client further behind is dropped.
const BACKLOG: usize = 4096;
/// Events queued for one client's connection.
const CLIENT_QUEUE: usize = 64;
/// A client whose connection takes no event for this long is dropped.
const STUCK: Duration = Duration::from_secs(5);
/// A stream ends after this (the client reconnects).
pub(crate) const STREAM_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Finished messages in the snapshot (the newest).
const SNAPSHOT_MESSAGES: usize = 50;
/// Handsets on a temporary number listed in a `status` event (the first by number).
const TEMPORARIES: usize = 50;
/// Dead letters in the snapshot and in `dead_letters` events.
const DEAD_LETTERS: u32 = 10;

/// The publisher's side: the broadcast of events and what a new client's snapshot needs that
/// the live status does not hold.
pub(crate) struct Hub {
    tx: broadcast::Sender<Bytes>,
    max_clients: usize,
    clients: AtomicUsize,
    dropped: AtomicU64,
    dead_letters: Mutex<Value>,
    /// PostgreSQL's last answer, as the publisher asked it
    pg_up: Mutex<Option<bool>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.clients.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(max_clients: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BACKLOG);
        Arc::new(Self {
            tx,
            max_clients,
            clients: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            dead_letters: Mutex::new(Value::Array(Vec::new())),
            pg_up: Mutex::new(None),
        })
    }

    /// Stream clients connected now.
    pub(crate) fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Clients dropped because they fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One server-sent event: `event: <name>` and the JSON on one `data:` line (JSON never
/// contains a raw newline, so the frame cannot be split or forged by what it carries).
fn frame(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Peers, counters and stall: what a `status` event carries.
fn status(h: &Health, pg_up: Option<bool>) -> Value {
    let feed = broker_core::ports::EventFeed::health(&*h.feed);
    let broker = h.with_broker(broker_json);
    let unbound = h.unbound_status();
    let temporaries: Vec<Value> = h
        .unbound
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|u| u.temporaries(TEMPORARIES))
        .unwrap_or_default()
        .into_iter()
        .map(|(number, ppn)| json!({"number": number, "ppn": ppn}))
        .collect();
    json!({
        "guru3": {
            "last_fetch_ok": feed.last_fetch_ok,
            "websocket_connected": feed.push_connected,
            "pending_acks": feed.pending_acks,
        },
        "omm": {"connected": h.omm.is_up(), "sessions": h.omm.connects()},
        "postgres": {"connected": pg_up},
        "ha": h.ha.json(),
        "broker": broker,
        "drift": h.drift_report().map(|r| r.json()),
        "unbound": unbound.map(|s| json!({
            "temporary": s.temporary,
            "bound": s.bound,
            "returned": s.returned,
            "binds_failed": s.binds_failed,
            "assigns_ok": s.assigns_ok,
            "assigns_nak": s.assigns_nak,
            "last_error": s.last_error,
            "outbox": s.outbox,
            "temporaries": temporaries,
        })),
    })
}

/// The broker's counters and stall, as `/readyz` and the stream show them.
pub(crate) fn broker_json(b: &broker_core::BrokerStatus) -> Value {
    json!({
        "started": true,
        "done": b.done,
        "ignored": b.ignored,
        "dead": b.dead,
        "finished": b.finished,
        "backlog": b.backlog,
        "unconfirmed_dead": b.unconfirmed_dead,
        "retrying": b.retrying,
        "stalled": b.stalled.as_ref().map(|s| json!({
            "reason": s.reason,
            "refused": s.refused,
            "message": s.message,
            "for_s": s.since.elapsed().as_secs(),
        })),
        "sync_epoch": b.sync_epoch,
    })
}

fn message(r: &broker_core::Recent) -> Value {
    json!({
        "seq": r.seq,
        "id": r.id,
        "type": r.kind,
        "number": r.number,
        "outcome": r.outcome.as_str(),
        "reason": r.reason,
    })
}

fn handset(a: &unbound_handsets::Activity) -> Value {
    json!({
        "seq": a.seq,
        "what": a.what,
        "ppn": a.ppn,
        "number": a.number,
        "detail": a.detail,
    })
}

async fn dead_letters(h: &Health) -> Option<Value> {
    let state = h.state.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
    let rows = tokio::time::timeout(Duration::from_secs(2), state.dead_letters(DEAD_LETTERS))
        .await
        .ok()?
        .ok()?;
    Some(Value::Array(
        rows.iter()
            .map(
                |d| json!({"id": d.id, "type": d.kind, "attempts": d.attempts, "reason": d.reason}),
            )
            .collect(),
    ))
}

async fn postgres_up(h: &Health) -> Option<bool> {
    if h.memory_store {
        return Some(true);
    }
    let store = h.pg.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
    Some(
        tokio::time::timeout(Duration::from_secs(2), store.backend_pid())
            .await
            .is_ok_and(|r| r.is_ok()),
    )
}

/// The publisher: every [`TICK`], what changed since the last tick goes out.
pub(crate) async fn publish(h: Health, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_status, mut last_msg, mut last_act, mut last_dead) =
        (Value::Null, 0u64, 0u64, None::<u64>);
    let mut pg_up = None;
    let mut pg_checked: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // PostgreSQL's answer is asked every few seconds, not every tick
        if pg_up.is_none() || pg_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(3)) {
            pg_up = postgres_up(&h).await;
            *hub.pg_up.lock().unwrap_or_else(|e| e.into_inner()) = pg_up;
            pg_checked = Some(tokio::time::Instant::now());
        }
        // the messages finished since the last tick, copied out under the lock (only while
        // someone watches: a resync finishes a thousand per round)
        let watched = hub.tx.receiver_count() > 0;
        let fresh = h.with_broker(|b| {
            let new: Vec<Value> = if watched {
                b.recent
                    .iter()
                    .filter(|r| r.seq > last_msg)
                    .map(message)
                    .collect()
            } else {
                Vec::new()
            };
            (new, b.finished, b.dead)
        });
        if let Some((new, finished, dead)) = fresh {
            if last_dead != Some(dead) {
                if let Some(list) = dead_letters(&h).await {
                    last_dead = Some(dead);
                    let _ = hub.tx.send(frame("dead_letters", &list));
                    *hub.dead_letters.lock().unwrap_or_else(|e| e.into_inner()) = list;
                }
            }
            for m in &new {
                let _ = hub.tx.send(frame("message", m));
            }
            last_msg = last_msg.max(finished);
        }
        if let Some(u) = h.unbound_status() {
            for a in u.activity.iter().filter(|a| a.seq > last_act) {
                let _ = hub.tx.send(frame("handset", &handset(a)));
            }
            last_act = last_act.max(u.activities);
        }
        let mut now = status(&h, pg_up);
        // how long a stall lasts moves every second: not a change of its own
        let key = {
            let mut k = now.clone();
            if let Some(s) = k.pointer_mut("/broker/stalled/for_s") {
                *s = Value::Null;
            }
            k
        };
        if key != last_status {
            last_status = key;
            if let Some(obj) = now.as_object_mut() {
                obj.insert("clients".into(), json!(hub.clients()));
            }
            let _ = hub.tx.send(frame("status", &now));
        }
    }
}

/// Gives a client's slot back when its stream ends.
struct Slot(Arc<Hub>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The response body of one client: the snapshot, then the broadcast, through a bounded
/// queue. `None` when the client limit is reached.
pub(crate) fn subscribe(
    h: &Health,
    hub: &Arc<Hub>,
    conn: Option<crate::net::Connection>,
    mut stop: watch::Receiver<bool>,
) -> Option<mpsc::Receiver<Result<Frame<Bytes>, Infallible>>> {
    let taken = hub
        .clients
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < hub.max_clients).then_some(n + 1)
        });
    if taken.is_err() {
        return None;
    }
    let slot = Slot(Arc::clone(hub));
    // subscribed before the snapshot is taken: nothing falls between them (an event may
    // repeat what the snapshot holds; `seq` tells)
    let mut rx = hub.tx.subscribe();
    let snapshot = snapshot(h, hub);
    let (tx, out) = mpsc::channel(CLIENT_QUEUE);
    if let Some(c) = &conn {
        c.stream();
    }
    let hub = Arc::clone(hub);
    tokio::spawn(async move {
        let _slot = slot;
        // a browser's EventSource waits this long before reconnecting
        let head = Bytes::from_static(b"retry: 1000\n\n");
        let mut ok = tx.try_send(Ok(Frame::data(head))).is_ok()
            && tx.try_send(Ok(Frame::data(snapshot))).is_ok();
        let end = tokio::time::sleep(STREAM_LIFETIME);
        let mut end = std::pin::pin!(end);
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        while ok {
            let next = tokio::select! {
                r = rx.recv() => r,
                _ = keepalive.tick() => Ok(Bytes::from_static(b": keepalive\n\n")),
                () = &mut end => break,
                _ = stop.changed() => break,
                () = tx.closed() => break,
            };
            ok = match next {
                Ok(b) => matches!(
                    tokio::time::timeout(STUCK, tx.send(Ok(Frame::data(b)))).await,
                    Ok(Ok(()))
                ),
                Err(broadcast::error::RecvError::Lagged(_)) => false,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if tx.is_closed() {
                // the client went away (not dropped by us)
                break;
            }
            if !ok {
                // it does not read: its writes would wait for ever
                hub.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::info!("a status stream client fell behind and was dropped");
                if let Some(c) = &conn {
                    c.close();
                }
            }
        }
    });
    Some(out)
}

/// The first event of a stream: everything the page shows.
fn snapshot(h: &Health, hub: &Hub) -> Bytes {
    let unbound = h.unbound_status();
    let messages: Vec<Value> = h
        .with_broker(|b| {
            let skip = b.recent.len().saturating_sub(SNAPSHOT_MESSAGES);
            b.recent.iter().skip(skip).map(message).collect()
        })
        .unwrap_or_default();
    let handsets: Vec<Value> = unbound
        .as_ref()
        .map(|u| u.activity.iter().map(handset).collect())
        .unwrap_or_default();
    let pg_up = *hub.pg_up.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = status(h, pg_up);
    if let Some(obj) = st.as_object_mut() {
        obj.insert("clients".into(), json!(hub.clients()));
    }
    frame(
        "snapshot",
        &json!({
            "status": st,
            "messages": messages,
            "dead_letters": hub.dead_letters.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "handsets": handsets,
        }),
    )
}

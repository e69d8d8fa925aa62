//! `GET /healthz` (the process is alive), `GET /readyz` (each peer's state, backlog and
//! dead letters, 503 while a peer is down) and `GET /metrics` (OpenMetrics) over HTTP/1.1;
//! `POST /dead-letters/replay` (see [`crate::replay`]).

use std::sync::Arc;
use std::time::Duration;

use broker_core::ports::EventFeed;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Health;

type Resp = Response<UnsyncBoxBody<Bytes, std::convert::Infallible>>;

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

pub(crate) async fn serve(listener: TcpListener, health: Health, stop: watch::Receiver<bool>) {
    let limits = crate::net::ServeLimits {
        // a status stream client that does not read fills 64 KiB, not megabytes, before its
        // queue does and it is dropped
        send_buffer: Some(64 * 1024),
        ..crate::net::ServeLimits::DEFAULT
    };
    let publisher = tokio::spawn(crate::events::publish(
        health.clone(),
        Arc::clone(&health.hub),
        stop.clone(),
    ));
    let streams = stop.clone();
    crate::net::serve_http(listener, "admin", limits, stop, move |_peer, req| {
        let health = health.clone();
        let stop = streams.clone();
        async move {
            if req.method() == hyper::Method::POST {
                match req.uri().path() {
                    "/dead-letters/replay" => return replay(&health, req).await,
                    "/reconcile/apply" => return reconcile_apply(&health, req).await,
                    _ => {}
                }
            }
            route(&health, &req, stop).await
        }
    })
    .await;
    publisher.abort();
}

/// `GET /events` (see [`crate::events`]).
fn events(
    health: &Health,
    req: &Request<hyper::body::Incoming>,
    stop: watch::Receiver<bool>,
) -> Resp {
    let conn = req.extensions().get::<crate::net::Connection>().cloned();
    let Some(rx) = crate::events::subscribe(health, &health.hub, conn, stop) else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "too many status stream clients\n".into(),
        );
    };
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Whether the request carries the admin token (`Authorization: Bearer <token>`), compared
/// in constant time; always true without a configured token.
fn authorised(health: &Health, req: &Request<hyper::body::Incoming>) -> bool {
    let Some(token) = &health.admin_token else {
        return true;
    };
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|p| unbound_handsets::webhook::keys_match(p, token.expose().as_bytes()))
}

fn unauthorised() -> Resp {
    let mut r = reply(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        "token required\n".into(),
    );
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// `POST /dead-letters/replay` with `{"ids": [...]}` or `{"all": true}` and optionally
/// `"wait_s"` (default 60): replays dead letters through the running broker and answers each
/// one's outcome. A JSON content type is required, which a browser cannot send to another
/// origin without asking first: a page elsewhere cannot make an operator's browser replay.
async fn replay(health: &Health, req: Request<hyper::body::Incoming>) -> Resp {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        #[serde(default)]
        ids: Vec<i64>,
        #[serde(default)]
        all: bool,
        wait_s: Option<u64>,
    }
    let (ask, req_conn): (Ask, _) = match post_json(health, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"));
    let which = match (ask.all, ask.ids.is_empty()) {
        (true, true) => crate::replay::Which::All,
        (false, false) => crate::replay::Which::Ids(ask.ids),
        _ => return bad("give either ids or all".into()),
    };
    let state = health
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(state) = state else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "hexidian's state store is not connected yet\n".into(),
        );
    };
    let wait = Duration::from_secs(ask.wait_s.unwrap_or(60)).min(crate::replay::MAX_WAIT);
    // the answer may take up to `wait`, longer than an ordinary request's connection lives
    if let Some(conn) = req_conn {
        conn.stream();
    }
    match crate::replay::run(&health.replay, &*state, which, wait).await {
        Ok(results) => {
            let rows: Vec<serde_json::Value> = results
                .iter()
                .map(|o| {
                    json!({"id": o.id, "number": o.number, "outcome": o.outcome, "reason": o.reason})
                })
                .collect();
            reply(
                StatusCode::OK,
                "application/json",
                json!({ "results": rows }).to_string(),
            )
        }
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// `POST /reconcile/apply` with `{}` or `{"wait_s": N}`: repairs the drift of hexidian's
/// own objects through the running broker and answers the drift before and after.
async fn reconcile_apply(health: &Health, req: Request<hyper::body::Incoming>) -> Resp {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        wait_s: Option<u64>,
    }
    let (ask, conn): (Ask, _) = match post_json(health, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let wait = Duration::from_secs(ask.wait_s.unwrap_or(60)).min(crate::replay::MAX_WAIT);
    if let Some(c) = conn {
        c.stream();
    }
    match crate::drift::apply(health, wait).await {
        Ok(a) => reply(
            StatusCode::OK,
            "application/json",
            json!({
                "before": crate::drift::json_rows(&a.before),
                "repaired": a.repaired,
                "pending": a.pending,
                "after": crate::drift::json_rows(&a.after),
            })
            .to_string(),
        ),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// A POST of the admin API: authorised, JSON (a content type a browser cannot send to
/// another origin without asking first), at most 64 KiB, decoded as `T`; and the connection,
/// to mark a long answer. `Err`: the answer to send instead.
async fn post_json<T: serde::de::DeserializeOwned>(
    health: &Health,
    req: Request<hyper::body::Incoming>,
) -> Result<(T, Option<crate::net::Connection>), Resp> {
    if !authorised(health, &req) {
        return Err(unauthorised());
    }
    let json_body = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_body {
        return Err(reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            "Content-Type: application/json required\n".into(),
        ));
    }
    let conn = req.extensions().get::<crate::net::Connection>().cloned();
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "at most 64 KiB\n".into(),
            ));
        }
    };
    match serde_json::from_slice(&body) {
        Ok(v) => Ok((v, conn)),
        Err(e) => Err(reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("unexpected request body: {e}\n"),
        )),
    }
}

async fn route(
    health: &Health,
    req: &Request<hyper::body::Incoming>,
    stop: watch::Receiver<bool>,
) -> Resp {
    if req.method() != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    // liveness stays open (a process supervisor's probe has no token), and so does the
    // page itself, which holds no data: it asks for the token and sends it with its requests
    let open = matches!(req.uri().path(), "/healthz" | "/" | "/page.js");
    if !open && !authorised(health, req) {
        return unauthorised();
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => readyz(health).await,
        "/events" => events(health, req, stop),
        "/extensions" => extensions(health, req.uri().query().unwrap_or("")).await,
        "/" => page(PAGE, "text/html; charset=utf-8"),
        "/page.js" => page(PAGE_JS, "text/javascript; charset=utf-8"),
        "/metrics" => match crate::metrics::render(health) {
            Ok(text) => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "metrics could not be encoded
"
                .into(),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// The status page: plain HTML and JS, served from the binary.
const PAGE: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");

/// A file of the page, with a policy that lets it run only its own script, talk only to
/// this listener and never be framed.
fn page(body: &'static str, content_type: &'static str) -> Resp {
    let mut r = reply(StatusCode::OK, content_type, body.into());
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Longest search text.
const MAX_QUERY: usize = 64;
/// Most extensions one search returns.
const MAX_LISTED: usize = 100;

/// `q` of a query string, percent-decoded; `Err` for a malformed or oversized one.
fn query_param(query: &str, key: &str) -> Result<String, &'static str> {
    let Some(raw) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    else {
        return Ok(String::new());
    };
    if raw.len() > 3 * MAX_QUERY {
        return Err("search text too long");
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        bytes.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [it.next(), it.next()];
                let [Some(h), Some(l)] = hex else {
                    return Err("malformed percent-encoding");
                };
                let digit = |c: u8| (c as char).to_digit(16);
                match (digit(h), digit(l)) {
                    (Some(h), Some(l)) => u8::try_from(h * 16 + l).unwrap_or(b'?'),
                    _ => return Err("malformed percent-encoding"),
                }
            }
            b => b,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| "search text is not UTF-8")?;
    if text.chars().count() > MAX_QUERY {
        return Err("search text too long");
    }
    Ok(text)
}

/// `GET /extensions?q=…`: extensions whose number starts with, or name contains, the text,
/// with the handset bound to them (as applied) and whether their SIP account is registered
/// (a contact in Asterisk's `ps_contacts`).
async fn extensions(h: &Health, query: &str) -> Resp {
    let q = match query_param(query, "q") {
        Ok(q) => q,
        Err(e) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    let dir = h
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(dir) = dir else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the broker has not started yet\n".into(),
        );
    };
    let (total, listed): (usize, Vec<(String, broker_core::model::Listed)>) = {
        let d = dir.read().unwrap_or_else(|e| e.into_inner());
        let found = d
            .search(&q, MAX_LISTED)
            .into_iter()
            .map(|(n, l)| (n.to_string(), l.clone()))
            .collect();
        (d.len(), found)
    };
    let numbers: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
    let store = h.pg.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let registered: Option<std::collections::HashSet<String>> = match store {
        Some(s) => tokio::time::timeout(Duration::from_secs(2), s.registered(&numbers))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|v| v.into_iter().collect()),
        None => None,
    };
    let body = json!({
        "total": total,
        "extensions": listed.iter().map(|(n, l)| json!({
            "number": n,
            "name": l.name,
            "type": l.kind,
            "handset": l.handset,
            // unknown (null) when the PBX did not answer
            "registered": registered.as_ref().map(|r| r.contains(n)),
        })).collect::<Vec<_>>(),
    });
    reply(StatusCode::OK, "application/json", format!("{body}\n"))
}

async fn readyz(h: &Health) -> Resp {
    let feed = h.feed.health();
    let omm_up = h.omm.is_up();
    let store = h.pg.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let pg_up = match store {
        Some(s) => tokio::time::timeout(Duration::from_secs(2), s.backend_pid())
            .await
            .is_ok_and(|r| r.is_ok()),
        None => h.memory_store,
    };
    let state = h.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // the ten newest dead letters (an index scan), never a count over the whole journal
    let dead = match state {
        Some(s) => tokio::time::timeout(Duration::from_secs(2), s.dead_letters(10))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let broker = h.broker_status();
    let stalled = broker.as_ref().and_then(|b| b.stalled.clone());
    let role = h.ha.role();
    // a standby is healthy but not ready: it does no work, and its webhook answers RETRY
    let ready = role.works()
        && feed.last_fetch_ok
        && omm_up
        && pg_up
        && broker.is_some()
        && stalled.is_none();
    let body = json!({
        "ready": ready,
        "ha": h.ha.json(),
        "guru3": {
            "last_fetch_ok": feed.last_fetch_ok,
            "websocket_connected": feed.push_connected,
            "pending_acks": feed.pending_acks,
        },
        "omm": {"connected": omm_up, "sessions": h.omm.connects()},
        "postgres": {"connected": pg_up, "in_memory": h.memory_store},
        "broker": broker.as_ref().map(crate::events::broker_json),
        "unbound_handsets": h.unbound_status().map(|s| {
            json!({
                "temporary": s.temporary,
                "temps_created": s.temps_created,
                "bound": s.bound,
                "binds_failed": s.binds_failed,
                "returned": s.returned,
                "assigns_ok": s.assigns_ok,
                "assigns_nak": s.assigns_nak,
                "last_error": s.last_error,
            })
        }),
        "dead_letters": dead.iter().map(|d| json!({
            "id": d.id, "type": d.kind, "number": d.number, "attempts": d.attempts,
            "reason": d.reason,
        })).collect::<Vec<_>>(),
        "drift": h.drift_report().map(|r| r.json()),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, "application/json", format!("{body:#}\n"))
}

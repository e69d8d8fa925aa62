//! The token-call listener (`POST /token-call`, `/` for dialplans written for the Python
//! version, `/token-call/check` without side effects). Parsing and decisions are in
//! `unbound_handsets`; this is HTTP only: limits, deadlines, one-word bodies.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use unbound_handsets::{Reply, TokenCall, Unbound, webhook::MAX_BODY};

/// Listener settings.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Answer within this (the dialplan waits in `CURL()`); later is `RETRY`.
    pub(crate) deadline: Duration,
}

fn reply(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(r.word().as_bytes())));
    *resp.status_mut() =
        StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

async fn handle(
    unbound: Unbound,
    limits: Limits,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let check = match (req.method(), req.uri().path()) {
        (&hyper::Method::POST, "/token-call" | "/") => false,
        (&hyper::Method::POST, "/token-call/check") => true,
        _ => {
            let mut r = reply(Reply::BadRequest);
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    let key = req
        .headers()
        .get("x-hexidian-key")
        .map(|v| v.as_bytes().to_vec());
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let read = async {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(_) => Err(Reply::BadRequest),
        }
    };
    let body = match tokio::time::timeout(limits.deadline, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return reply(r),
        Err(_) => return reply(Reply::Retry),
    };
    // the decision runs as a task of its own: a caller that hangs up or a deadline that
    // passes never cuts it short (a recorded bind is carried out, a reservation released)
    let work = tokio::spawn(async move {
        let call = TokenCall::parse(content_type.as_deref(), &body);
        unbound
            .token_call_from(Some(peer), key.as_deref(), call, check)
            .await
    });
    let r = match tokio::time::timeout(limits.deadline, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Reply::Error,
        Err(_) => Reply::Retry,
    };
    tracing::info!(status = r.status(), answer = r.word(), check, "token call");
    reply(r)
}

/// Serves token calls through the handset workflow in `slot`; while there is none (a
/// standby, or the workflow not started yet) every call is answered `RETRY`, which the
/// dialplan treats as "try again".
pub(crate) async fn serve(
    listener: TcpListener,
    slot: std::sync::Arc<std::sync::Mutex<Option<Unbound>>>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let serve = crate::net::ServeLimits::DEFAULT;
    crate::net::serve_http(listener, "webhook", serve, stop, move |peer, req| {
        let unbound = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let limits = limits.clone();
        async move {
            match unbound {
                Some(u) => handle(u, limits, peer, req).await,
                None => reply(Reply::Retry),
            }
        }
    })
    .await;
}

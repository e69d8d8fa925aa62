//! The simulators' control API: JSON over plain HTTP/1.1 on loopback, and the client the
//! `ctl` commands and the tests call it with.
//!
//! A simulator supplies one handler from a [`Request`] (method, path segments, JSON body) to
//! a [`Reply`]; this module does the HTTP around it: loopback only (the API has no
//! authentication), bodies up to [`MAX_BODY`], JSON in and out, `{"error": …}` on failure.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// The largest request or reply body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// How long a client call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One control request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// The path's segments (`/extensions/2001` → `["extensions", "2001"]`).
    pub path: Vec<String>,
    /// The JSON body (`null` when there is none).
    pub body: Value,
}

impl Request {
    /// The path's segments as `&str`, for matching.
    pub fn route(&self) -> (&str, Vec<&str>) {
        (
            self.method.as_str(),
            self.path.iter().map(String::as_str).collect(),
        )
    }
}

/// A handler's answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl Reply {
    /// `200` with `body`.
    pub fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }

    /// An error status with `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    /// `404` for a path no endpoint serves.
    pub fn not_found(req: &Request) -> Self {
        Self::error(
            404,
            format!("no endpoint {} /{}", req.method, req.path.join("/")),
        )
    }
}

/// A field of a JSON object body: its string, or a clear error.
pub fn str_field<'a>(body: &'a Value, key: &str) -> Result<&'a str, Reply> {
    body.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Reply::error(400, format!("the body needs a string \"{key}\"")))
}

/// A running control listener; dropping it stops serving.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on `listen`, which must be a loopback address (the API is not
/// authenticated).
pub async fn serve<H, F>(listen: SocketAddr, handler: H) -> std::io::Result<Server>
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the control API listens on loopback only, not {listen}: it has no authentication"
            ),
        ));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("control API on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handler = Arc::clone(&handler);
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, Infallible>(answer(&*handler, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Ok(Server { addr, task })
}

/// [`serve`] for a simulator's command: `handler` gets `shared` and `description` (what the
/// simulator says about itself, to which the control address is added) with each request.
/// Returns the server and the completed description.
pub async fn serve_described<S, H, F>(
    listen: SocketAddr,
    shared: Arc<S>,
    mut description: Value,
    handler: H,
) -> std::io::Result<(Server, Value)>
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Value, Request) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    // the description names the control address, known once it listens
    let info = Arc::new(std::sync::OnceLock::new());
    let handler_info = Arc::clone(&info);
    let server = serve(listen, move |req| {
        let info = handler_info.get().cloned().unwrap_or(Value::Null);
        handler(Arc::clone(&shared), info, req)
    })
    .await?;
    description["control"] = json!(server.addr().to_string());
    let _ = info.set(description.clone());
    Ok((server, description))
}

async fn answer<H, F>(handler: &H, req: hyper::Request<Incoming>) -> Response<Full<Bytes>>
where
    H: Fn(Request) -> F,
    F: Future<Output = Reply>,
{
    let reply = match parse(req).await {
        Ok(req) => handler(req).await,
        Err(reply) => reply,
    };
    let mut text = serde_json::to_vec_pretty(&reply.body).unwrap_or_default();
    text.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn parse(req: hyper::Request<Incoming>) -> Result<Request, Reply> {
    let method = req.method().as_str().to_owned();
    let path: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if path.iter().any(|s| s.contains('%')) {
        return Err(Reply::error(
            400,
            "path segments are plain (numbers, ids); text goes in the JSON body",
        ));
    }
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Reply::error(413, format!("reading the body: {e}")))?
        .to_bytes();
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else if !is_json {
        return Err(Reply::error(415, "send the body as application/json"));
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Reply::error(400, format!("the body is not JSON: {e}")))?
    };
    Ok(Request { method, path, body })
}

/// Calls `method path` on the control API at `addr` with an optional JSON body; the reply's
/// status and JSON body. Transport failures and non-JSON replies are errors.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    tokio::time::timeout(CALL_TIMEOUT, call_inner(addr, method, path, body))
        .await
        .map_err(|_| format!("the control API at {addr} did not answer within {CALL_TIMEOUT:?}"))?
}

async fn call_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("the control API at {addr}: {e} (is the simulator running?)"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("the control API at {addr}: {e}"))?;
    let conn = tokio::spawn(conn);
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string());
    let payload = match body {
        Some(v) => {
            req = req.header(CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?)
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("the control API at {addr}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("the control API at {addr}: reading the reply: {e}"))?
        .to_bytes();
    conn.abort();
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "the control API at {addr} answered {status} with no JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })?;
    Ok((status, value))
}

/// Where a `ctl` command finds the control API: `--control ADDR` or the variable `env`.
#[allow(clippy::disallowed_methods)] // a command's input: where to find the simulator
pub fn address(given: Option<SocketAddr>, env: &str) -> Result<SocketAddr, String> {
    if let Some(a) = given {
        return Ok(a);
    }
    let v = std::env::var(env).map_err(|_| {
        format!("where is the simulator's control API? give --control ADDR or set {env} (the simulator prints it)")
    })?;
    v.trim()
        .parse()
        .map_err(|e| format!("{env}={v:?}: not an address: {e}"))
}

/// What a `ctl` command prints: the reply, or the value at `pointer` (a JSON pointer such as
/// `/token`; a string without its quotes), one line.
pub fn render(v: &Value, pointer: Option<&str>) -> Result<String, String> {
    match pointer {
        None => serde_json::to_string_pretty(v).map_err(|e| e.to_string()),
        Some(p) => match v.pointer(p) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(format!("the reply has nothing at {p}: {v}")),
        },
    }
}

/// Runs one `ctl` request in a fresh runtime and prints its reply (or the value at
/// `pointer`) to standard output; the process's exit code: 0 for a 2xx reply, 1 otherwise
/// (with the error on standard error).
pub fn run_ctl(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    pointer: Option<&str>,
) -> std::process::ExitCode {
    use std::io::Write as _;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting a runtime: {e}")),
    };
    let (status, reply) = match rt.block_on(call(addr, method, path, body)) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if !(200..300).contains(&status) {
        let msg = reply
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| reply.to_string(), str::to_owned);
        return fail(&format!("{status}: {msg}"));
    }
    match render(&reply, pointer) {
        Ok(text) => {
            let _ = writeln!(std::io::stdout(), "{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// A `ctl` command's whole run: the address from `--control` or `env`, the request the
/// command line made (or why it could not), the reply printed. Exit code 2 for a command line
/// that makes no request.
pub fn ctl_main(
    program: &str,
    given: Option<SocketAddr>,
    env: &str,
    request: Result<(&str, String, Option<Value>), String>,
    pointer: Option<&str>,
) -> std::process::ExitCode {
    use std::io::Write as _;
    match address(given, env).and_then(|addr| request.map(|r| (addr, r))) {
        Ok((addr, (method, path, body))) => run_ctl(addr, method, &path, body.as_ref(), pointer),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{program} ctl: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The rows of `endpoints` (method, path, what) that the workspace's README.md lacks in its
/// table form `` | `METHOD` | `PATH` | WHAT | ``.
pub fn missing_from_readme(endpoints: &[(&str, &str, &str)]) -> Vec<String> {
    let readme =
        std::fs::read_to_string(crate::fixtures_dir().join("../README.md")).unwrap_or_default();
    endpoints
        .iter()
        .map(|(method, path, what)| {
            format!("| `{method}` | `{path}` | {} |", what.replace('|', "\\|"))
        })
        .filter(|row| !readme.contains(row.as_str()))
        .collect()
}

fn fail(msg: &str) -> std::process::ExitCode {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "ctl: {msg}");
    std::process::ExitCode::FAILURE
}

/// Writes `vars` as a file a POSIX shell can source (`. FILE`: exported, each value single-quoted),
/// atomically (a reader never sees half of it).
pub fn write_env_file(path: &std::path::Path, vars: &[(&str, String)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (k, v) in vars {
        text.push_str("export ");
        text.push_str(k);
        text.push_str("='");
        text.push_str(&v.replace('\'', "'\\''"));
        text.push_str("'\n");
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> Server {
        serve("127.0.0.1:0".parse().unwrap(), |req: Request| async move {
            match req.route() {
                ("GET", p) if p == ["hello"] => Reply::ok(json!({"hello": "world"})),
                ("POST", p) if p.first() == Some(&"echo") => Reply::ok(json!({
                    "path": req.path, "body": req.body
                })),
                _ => Reply::not_found(&req),
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn json_in_json_out_and_clear_errors() {
        let s = echo().await;
        let (st, v) = call(s.addr(), "GET", "/hello", None).await.unwrap();
        assert_eq!((st, v), (200, json!({"hello": "world"})));
        let body = json!({"name": "O'Brien <&> \u{1F600}"});
        let (st, v) = call(s.addr(), "POST", "/echo/2001/", Some(&body))
            .await
            .unwrap();
        assert_eq!(st, 200);
        assert_eq!(v, json!({"path": ["echo", "2001"], "body": body}));
        let (st, v) = call(s.addr(), "DELETE", "/nothing", None).await.unwrap();
        assert_eq!(st, 404);
        assert!(v["error"].as_str().unwrap().contains("DELETE /nothing"));
        let (st, v) = call(s.addr(), "GET", "/a%20b", None).await.unwrap();
        assert_eq!(st, 400, "{v}");
        // a body that is not JSON, and one too large
        let big = json!({"x": "y".repeat(MAX_BODY)});
        let (st, _) = call(s.addr(), "POST", "/echo", Some(&big)).await.unwrap();
        assert_eq!(st, 413);
        drop(s);
    }

    #[tokio::test]
    async fn loopback_only_and_a_clear_error_when_nobody_listens() {
        let e = serve("0.0.0.0:0".parse().unwrap(), |_req: Request| async {
            Reply::ok(Value::Null)
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("loopback only"), "{e}");
        let s = echo().await;
        let addr = s.addr();
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = call(addr, "GET", "/hello", None).await.unwrap_err();
        assert!(e.contains("is the simulator running?"), "{e}");
    }

    #[test]
    fn render_picks_a_field_and_env_files_quote() {
        let v = json!({"token": "12345678", "n": 3, "a": [{"b": "c"}]});
        assert_eq!(render(&v, Some("/token")).unwrap(), "12345678");
        assert_eq!(render(&v, Some("/n")).unwrap(), "3");
        assert_eq!(render(&v, Some("/a/0/b")).unwrap(), "c");
        assert!(render(&v, Some("/missing")).is_err());
        let dir = std::env::temp_dir().join(format!("hx-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("sim.env");
        write_env_file(
            &f,
            &[("KEY", "7$it's".into()), ("ADDR", "127.0.0.1:1".into())],
        )
        .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". '{}' && printf '%s|%s' \"$KEY\" \"$ADDR\"",
                f.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "7$it's|127.0.0.1:1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

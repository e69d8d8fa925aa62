//! End-to-end tests and benchmarks of hexidian live in `e2e/` and `benches/`; this is what
//! they share.

pub mod process;
mod world;
pub use world::{ASTERISK_ROLE, HEXIDIAN_ROLE, Rng, World, http_get, roles_sql};

/// The value of the OpenMetrics sample `key` (name plus labels, as written) in a `/metrics`
/// text; comment lines are skipped.
pub fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One HTTP/1.1 request over plain TCP (`Connection: close`): `(status, body)`. For the
/// admin and webhook listeners, and for requests no well-behaved client would send.
///
/// # Panics
/// When the connection fails: it is a test helper.
#[allow(clippy::unwrap_used)] // a test helper fails loudly
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

//! What the process tests share: the binary under test; the config and the child process
//! live in `hexidian_e2e::process` (the `scale` benchmark runs hexidian the same way).

pub(crate) use hexidian_e2e::process::{Hexidian, WEBHOOK_KEY, write_config};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hexidian");

fn operator(
    w: &hexidian_e2e::World,
    args: &[&str],
    config: &std::path::Path,
    log: &str,
) -> tokio::process::Command {
    hexidian_e2e::process::operator(BIN, w, args, config, log)
}

/// Runs an [`operator`] command to its end.
pub(crate) async fn command(
    w: &hexidian_e2e::World,
    args: &[&str],
    config: &std::path::Path,
    log: &str,
) -> std::process::Output {
    operator(w, args, config, log).output().await.unwrap()
}

/// Runs an [`operator`] command with `input` on its standard input (log level `warn`).
pub(crate) async fn command_with_input(
    w: &hexidian_e2e::World,
    args: &[&str],
    config: &std::path::Path,
    input: &[u8],
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = operator(w, args, config, "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// A token call as Asterisk's `CURL()` makes it; `None` when the connection ended without an
/// answer (the process died while the call was in flight).
pub(crate) async fn token_call(
    addr: std::net::SocketAddr,
    caller: &str,
    token: &str,
) -> Option<String> {
    let body = serde_json::json!({"callerid": caller, "token": token}).to_string();
    let req = format!(
        "POST /token-call HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nX-Hexidian-Key: {WEBHOOK_KEY}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (_, answer) = out.split_once("\r\n\r\n")?;
    Some(answer.to_owned())
}

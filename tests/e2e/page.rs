//! The status page in a real headless Chromium, driven over the DevTools protocol: it loads,
//! shows the snapshot, shows an applied edit within a second, renders a hostile name as
//! text, says which SIP account is registered, and follows hexidian across a restart. A
//! screenshot is kept under the test's output folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use guru3_sim::{Extension, Kind};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::World;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Debian's Chromium, headless, with a fresh profile and nothing that reaches beyond the
/// machine.
struct Browser {
    child: tokio::process::Child,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> (Self, u16) {
        let profile = std::env::temp_dir().join(format!(
            "hexidian-chromium-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let child = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium (Debian package `chromium`; .ci/run installs it)");
        // Chromium writes the port it took into the profile
        let file = profile.join("DevToolsActivePort");
        let t0 = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse().ok())
            {
                break p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "chromium did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        (Self { child, profile }, port)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A `PUT` to Chromium's DevTools HTTP endpoint, which wants an IP address as `Host` and
/// keeps the connection open: the body is read by its length.
async fn devtools_put(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("chromium's DevTools endpoint did not answer")
            .unwrap();
        assert!(n > 0, "chromium closed the DevTools connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200"), "{text}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap();
            if body.len() >= len {
                return body[..len].to_owned();
            }
        }
    }
}

/// One page of the browser, over its DevTools websocket.
struct Page {
    ws: Ws,
    next: u64,
}

impl Page {
    async fn open(port: u16, url: &str) -> Self {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let body = devtools_put(addr, &format!("/json/new?{url}")).await;
        let target: Value = serde_json::from_str(&body).unwrap();
        let ws_url = target["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await.unwrap();
        Self { ws, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let req = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(req.to_string().into()))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("no answer from chromium")
                .unwrap()
                .unwrap();
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true; how long it took.
    async fn until(&mut self, expr: &str, limit: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.eval(expr).await == Value::Bool(true) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "the page never showed `{expr}`; it shows:\n{}",
                self.eval("document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn screenshot(&mut self, to: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(to, png).unwrap();
    }
}

/// A row of the messages table shows this number.
fn message_row(number: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages tr')].some(r => r.children[3].textContent === {number:?})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_event_live_and_names_as_text() {
    let w = World::new().await;
    let mut settings = w.settings();
    let run = hexidian::start(settings.clone()).await.unwrap();
    let admin = run.admin_addr().unwrap();
    w.save_drained(Extension::new("2001", HOSTILE, Kind::dect()))
        .await;
    w.save_drained(Extension::new("2002", "Registered", Kind::sip()))
        .await;
    w.save_drained(Extension::new("2004", "Kiosk", Kind::sip()))
        .await;
    // Asterisk's realtime contact of 2002: its SIP account is registered
    w.sql
        .execute(
            "INSERT INTO ps_contacts (id, uri, expiration_time, endpoint) \
             VALUES ('2002^3Bsip:2002@10.0.0.7', 'sip:2002@10.0.0.7:5060', 4102444800, '2002')",
            &[],
        )
        .await
        .unwrap();

    let (_browser, port) = Browser::start().await;
    let mut page = Page::open(port, &format!("http://{admin}/")).await;
    page.call("Page.enable", json!({})).await;
    // the snapshot: live, the counters, the messages so far
    page.until(
        "document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(30),
    )
    .await;
    page.until(&message_row("2002"), Duration::from_secs(10))
        .await;
    assert_eq!(
        page.eval("document.getElementById('c-dead').textContent")
            .await,
        "0"
    );
    for peer in ["guru3", "websocket", "omm", "postgres"] {
        page.until(
            &format!("document.getElementById('peer-{peer}').className === 'peer up'"),
            Duration::from_secs(10),
        )
        .await;
    }
    // the extension list: the hostile name is text, nothing of it became an element
    page.until(
        "document.querySelectorAll('#extensions tr').length === 3",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('#extensions tr').children[1].textContent")
            .await,
        HOSTILE
    );
    assert_eq!(
        page.eval("document.querySelectorAll('img').length").await,
        0
    );
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('#extensions tr')].map(r => r.children[0].textContent + ':' + r.children[4].textContent).join(' ')"
        )
        .await,
        "2001:no 2002:yes 2004:no"
    );
    // searching by name
    page.eval(
        "(() => { const s = document.getElementById('search'); s.value = 'kios'; \
         s.dispatchEvent(new Event('input')); })()",
    )
    .await;
    page.until(
        "[...document.querySelectorAll('#extensions tr')].map(r => r.children[0].textContent).join() === '2004'",
        Duration::from_secs(10),
    )
    .await;

    // an edit: on the page within a second of GURU3 getting its ack
    w.guru3
        .save(Extension::new("2003", "Third", Kind::sip()))
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    let took = page
        .until(&message_row("2003"), Duration::from_secs(10))
        .await;
    eprintln!(
        "status page: acked edit shown after {} ms",
        took.as_millis()
    );
    assert!(took <= Duration::from_secs(1), "{took:?}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    page.screenshot(&shot).await;
    eprintln!("status page screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // hexidian restarts on the same address: the page reconnects by itself
    run.stop().await.unwrap();
    page.until(
        "document.getElementById('conn').textContent.startsWith('reconnecting')",
        Duration::from_secs(30),
    )
    .await;
    settings.admin = Some(admin); // the port the first run was given (the page's origin)
    let run = hexidian::start(settings).await.unwrap();
    page.until(
        "document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(30),
    )
    .await;
    w.guru3
        .save(Extension::new("2005", "After the restart", Kind::sip()))
        .unwrap();
    page.until(&message_row("2005"), Duration::from_secs(30))
        .await;
    run.stop().await.unwrap();
}

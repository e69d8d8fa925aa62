//! `/events`, the status stream: a snapshot first, then an event per change; a client that
//! does not read is dropped; the client limit holds.

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{World, http_get, sample};

/// A reader of the stream over a raw socket, as any SSE client sees it.
pub(crate) struct Stream {
    sock: TcpStream,
    buf: String,
}

impl Stream {
    pub(crate) async fn open(addr: std::net::SocketAddr) -> Self {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let mut s = Self {
            sock,
            buf: String::new(),
        };
        while !s.buf.contains("\r\n\r\n") {
            s.fill(Duration::from_secs(10)).await;
        }
        let (head, rest) = s.buf.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        s.buf = rest.to_owned();
        s
    }

    async fn fill(&mut self, limit: Duration) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(limit, self.sock.read(&mut chunk))
            .await
            .expect("the stream went quiet")
            .unwrap();
        assert!(n > 0, "the stream ended");
        self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }

    /// The next event (name, data), skipping comments and the chunked framing.
    pub(crate) async fn next(&mut self, limit: Duration) -> (String, serde_json::Value) {
        let t0 = Instant::now();
        loop {
            let found = self.buf.find("event: ").and_then(|i| {
                let end = self.buf[i..].find("\n\n")?;
                Some((i, i + end))
            });
            if let Some((i, end)) = found {
                let text = self.buf[i..end].to_owned();
                self.buf = self.buf[end + 2..].to_owned();
                let mut lines = text.lines();
                let name = lines.next().unwrap()["event: ".len()..].to_owned();
                let data = lines.next().and_then(|l| l.strip_prefix("data: ")).unwrap();
                return (name, serde_json::from_str(data).unwrap());
            }
            self.fill(limit.saturating_sub(t0.elapsed())).await;
        }
    }
}

/// The value of one sample on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_starts_with_a_snapshot_then_sends_each_change() {
    let w = World::new().await;
    let run = w.start().await;
    let admin = run.admin_addr().unwrap();
    w.save_drained(Extension::new(
        "2001",
        "<img src=x onerror=alert(1)>",
        Kind::dect(),
    ))
    .await;
    let mut s = Stream::open(admin).await;
    let (name, snap) = s.next(Duration::from_secs(10)).await;
    assert_eq!(name, "snapshot");
    let messages = snap["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["number"] == "2001" && m["outcome"] == "done"),
        "{snap}"
    );
    assert_eq!(snap["status"]["broker"]["dead"], 0, "{snap}");
    assert!(snap["dead_letters"].is_array(), "{snap}");
    assert!(snap["handsets"].is_array(), "{snap}");
    let seen = snap["status"]["broker"]["finished"].as_u64().unwrap();
    // every peer's state is known soon: the snapshot's, or a status event's
    let mut pg = snap["status"]["postgres"]["connected"].clone();
    while pg != true {
        let (name, data) = s.next(Duration::from_secs(10)).await;
        if name == "status" {
            pg = data["postgres"]["connected"].clone();
        }
    }

    // an edit: its message event comes, numbered after the snapshot's
    let ids = w
        .guru3
        .save(Extension::new("2002", "Second", Kind::sip()))
        .unwrap();
    let t_saved = Instant::now();
    w.drained(Duration::from_secs(30)).await;
    let t_acked = Instant::now();
    let msg = loop {
        let (name, data) = s.next(Duration::from_secs(10)).await;
        if name == "message" && data["seq"].as_u64().unwrap() > seen {
            break data;
        }
    };
    eprintln!(
        "stream: edit saved → event {} ms; acked → event {} ms",
        t_saved.elapsed().as_millis(),
        t_acked.elapsed().as_millis()
    );
    assert_eq!(msg["id"], ids[0]);
    assert_eq!(msg["number"], "2002");
    assert_eq!(msg["outcome"], "done");

    // the OMM goes away: a status event says so
    w.omm.faults(|f| f.refuse_tls = true);
    w.omm.drop_connections();
    let t0 = Instant::now();
    loop {
        let (name, data) = s.next(Duration::from_secs(30)).await;
        if name == "status" && data["omm"]["connected"] == false {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
    w.omm.faults(|f| f.refuse_tls = false);

    // a message GURU3 sent malformed: a message event and a dead_letters event
    let bad = w.guru3.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "2003", "type": "SIP"}),
    );
    let (mut saw_msg, mut saw_list) = (false, false);
    while !(saw_msg && saw_list) {
        let (name, data) = s.next(Duration::from_secs(60)).await;
        if name == "message" && data["id"] == bad {
            assert_eq!(data["outcome"], "dead");
            assert!(data["reason"].as_str().unwrap().contains("malformed"));
            saw_msg = true;
        }
        if name == "dead_letters" && data.as_array().unwrap().iter().any(|d| d["id"] == bad) {
            saw_list = true;
        }
    }
    run.stop().await.unwrap();
}

/// A client that connects and never reads is dropped once its connection takes no more
/// events, and its connection is closed; a reader keeps getting every event in order; the
/// limit of clients holds, and a place is free again after the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_the_limit_holds() {
    let w = World::new().await;
    let mut settings = w.settings();
    settings.admin_stream_clients = 2; // override: the limit, reached with few clients
    let run = hexidian::start(settings).await.unwrap();
    let admin = run.admin_addr().unwrap();
    // a client that reads the headers and then nothing more, with a small receive window
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock.connect(admin).await.unwrap();
    stuck
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = Stream::open(admin).await;
    let (status, body) = http_get(admin, "/events").await;
    assert_eq!(status, 503, "a third client is refused: {body}");

    // events: a few thousand messages; the reader takes each, in order, none twice
    hexidian_demo::seed(&w.guru3, 1500).unwrap();
    let read = tokio::spawn(async move {
        let mut last_seq = 0;
        loop {
            let (name, data) = reader.next(Duration::from_secs(60)).await;
            if name == "message" {
                let seq = data["seq"].as_u64().unwrap();
                assert!(seq > last_seq, "in order, none twice");
                last_seq = seq;
            }
            if last_seq >= 1500 {
                return reader;
            }
        }
    });
    let t0 = Instant::now();
    loop {
        let (_, text) = http_get(admin, "/metrics").await;
        if sample(&text, "hexidian_stream_dropped_total") >= Some(1.0) {
            assert_eq!(
                sample(&text, "hexidian_stream_clients"),
                Some(1.0),
                "the reader stays"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the client that does not read was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _reader = read.await.unwrap();
    // its connection is closed: what it can still read ends
    let mut sink = vec![0u8; 1 << 16];
    let t0 = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the dropped client's connection stays open"),
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
    // a place is free again
    let _again = Stream::open(admin).await;
    w.drained(Duration::from_secs(120)).await;
    run.stop().await.unwrap();
}

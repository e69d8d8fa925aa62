//! The client's `Connection` against a scripted peer over an in-memory pipe: the test is the
//! OMM and asserts exactly what it received.

use std::time::Duration;

use omm_axi::client::{Config, connect_stream};
use omm_axi::{Error, ErrorCode, Event, Uid};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const MODULUS: &str = include_str!("../../../../fixtures/omm-axi/sim-rsa512.hex");

fn modulus() -> &'static str {
    MODULUS.lines().find_map(|l| l.strip_prefix("n=")).unwrap()
}

struct Peer {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Peer {
    async fn frame(&mut self) -> String {
        loop {
            if let Some(p) = self.buf.iter().position(|b| *b == 0) {
                let f: Vec<u8> = self.buf.drain(..=p).take(p).collect();
                return String::from_utf8(f).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, doc: &str) {
        self.io.write_all(doc.as_bytes()).await.unwrap();
        self.io.write_all(&[0]).await.unwrap();
    }

    async fn send_bytewise(&mut self, doc: &str) {
        for b in doc.as_bytes().iter().chain(&[0]) {
            self.io.write_all(&[*b]).await.unwrap();
        }
    }

    async fn accept_login(&mut self) {
        let open = self.frame().await;
        assert_eq!(
            open,
            r#"<Open seq="1" username="omm" password="pw" UserDeviceSyncClient="true"/>"#
        );
        let m = modulus();
        self.send(&format!(r#"<OpenResp seq="1" protocolVersion="45"><publicKey modulus="{m}" exponent="010001"/></OpenResp>"#)).await;
    }
}

fn seq_of(frame: &str) -> String {
    let start = frame.find("seq=\"").unwrap() + 5;
    frame[start..].split('"').next().unwrap().to_owned()
}

fn pair() -> (DuplexStream, Peer) {
    let (a, b) = tokio::io::duplex(1 << 16);
    (
        a,
        Peer {
            io: b,
            buf: Vec::new(),
        },
    )
}

fn config() -> Config {
    Config::new("omm.invalid", "omm", "pw").plain()
}

#[tokio::test]
async fn login_rejects_wrong_password() {
    let (io, mut peer) = pair();
    let server = tokio::spawn(async move {
        let _ = peer.frame().await;
        peer.send(r#"<OpenResp seq="1" ommStbState="None" protocolVersion="45" errCode="EAuth" info="authentication failed"/>"#).await;
        peer
    });
    let err = connect_stream(io, &config()).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Auth));
    assert_eq!(
        err.to_string(),
        "omm rejected `Open` with EAuth: authentication failed"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn replies_correlate_out_of_order_with_events_between_and_bytewise_delivery() {
    let (io, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.accept_login().await;
        let a = peer.frame().await;
        let b = peer.frame().await;
        let (user_req, dev_req) = if a.starts_with("<GetPPUser ") {
            (a, b)
        } else {
            (b, a)
        };
        assert!(user_req.contains(r#"uid="7" maxRecords="1""#), "{user_req}");
        peer.send_bytewise(&format!(
            r#"<GetPPDevResp seq="{}" errCode="ENoEnt"/>"#,
            seq_of(&dev_req)
        ))
        .await;
        peer.send(r#"<EventDECTSubscriptionMode mode="Wildcard"/>"#)
            .await;
        peer.send_bytewise(&format!(
            r#"<GetPPUserResp seq="{}"><user uid="7" name="Seven"/></GetPPUserResp>"#,
            seq_of(&user_req)
        ))
        .await;
        peer
    });
    let (client, conn, mut events) = connect_stream(io, &config()).await.unwrap();
    tokio::spawn(conn);
    let (user, dev) = tokio::join!(
        client.fetch_user(Uid::new(7)),
        client.fetch_device(omm_axi::Ppn::new(9))
    );
    assert_eq!(user.unwrap().unwrap().name.as_deref(), Some("Seven"));
    assert_eq!(dev.unwrap(), None);
    assert!(matches!(
        events.recv().await,
        Some(Event::DectSubscriptionMode {
            mode: omm_axi::SubscriptionMode::Wildcard
        })
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn single_get_verifies_the_returned_key() {
    let (io, mut peer) = pair();
    tokio::spawn(async move {
        peer.accept_login().await;
        let req = peer.frame().await;
        // an OMM in "next higher record" mode returns uid 9 for uid 8
        peer.send(&format!(
            r#"<GetPPUserResp seq="{}"><user uid="9"/></GetPPUserResp>"#,
            seq_of(&req)
        ))
        .await;
        peer
    });
    let (client, conn, _events) = connect_stream(io, &config()).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(client.fetch_user(Uid::new(8)).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn stalled_reply_times_out_and_link_stays_usable() {
    let (io, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.accept_login().await;
        let _stalled = peer.frame().await;
        let ping = peer.frame().await;
        peer.send(&format!(r#"<PingResp seq="{}"/>"#, seq_of(&ping)))
            .await;
        peer
    });
    let cfg = config().request_timeout(Duration::from_secs(5));
    let (client, conn, _events) = connect_stream(io, &cfg).await.unwrap();
    tokio::spawn(conn);
    let err = client.fetch_system_name().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { ref request, .. } if request == "GetSystemName"),
        "{err:?}"
    );
    assert!(err.is_transient());
    client.ping().await.unwrap();
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_link_sends_ping_and_dies_without_answer() {
    let (io, mut peer) = pair();
    let cfg = config()
        .ping_interval(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(10));
    let server = tokio::spawn(async move {
        peer.accept_login().await;
        let ping = peer.frame().await;
        assert!(ping.starts_with("<Ping seq="), "{ping}");
        peer.send(&format!(r#"<PingResp seq="{}"/>"#, seq_of(&ping)))
            .await;
        let second = peer.frame().await;
        assert!(second.starts_with("<Ping seq="));
        // no answer this time
        peer
    });
    let (client, conn, _events) = connect_stream(io, &cfg).await.unwrap();
    let conn = tokio::spawn(conn);
    let result = conn.await.unwrap();
    assert!(
        matches!(result, Err(Error::Timeout { ref request, .. }) if request == "Ping"),
        "{result:?}"
    );
    assert!(matches!(client.ping().await, Err(Error::Closed)));
    drop(server.await.unwrap());
}

#[tokio::test]
async fn full_event_queue_reports_lag_instead_of_blocking() {
    let (io, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.accept_login().await;
        for i in 1..=5 {
            peer.send(&format!(r#"<EventPPState ppn="{i}"/>"#)).await;
        }
        let req = peer.frame().await;
        peer.send(&format!(r#"<PingResp seq="{}"/>"#, seq_of(&req)))
            .await;
        let req = peer.frame().await;
        peer.send(r#"<EventPPState ppn="6"/>"#).await;
        peer.send(&format!(r#"<PingResp seq="{}"/>"#, seq_of(&req)))
            .await;
        peer
    });
    let (client, conn, mut events) = connect_stream(io, &config().event_capacity(2))
        .await
        .unwrap();
    tokio::spawn(conn);
    // responses still flow while the event queue is full
    client.ping().await.unwrap();
    let ppn = |e: Option<Event>| match e {
        Some(Event::PpState(s)) => s.ppn.unwrap().get(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ppn(events.recv().await), 1);
    assert_eq!(ppn(events.recv().await), 2);
    client.ping().await.unwrap();
    assert!(matches!(events.recv().await, Some(Event::Lagged(3))));
    assert_eq!(ppn(events.recv().await), 6);
    server.await.unwrap();
}

#[tokio::test]
async fn peer_close_fails_pending_requests() {
    let (io, mut peer) = pair();
    tokio::spawn(async move {
        peer.accept_login().await;
        let _ = peer.frame().await;
        drop(peer);
    });
    let (client, conn, _events) = connect_stream(io, &config()).await.unwrap();
    let conn = tokio::spawn(conn);
    assert!(matches!(client.ping().await, Err(Error::Closed)));
    assert!(matches!(conn.await.unwrap(), Err(Error::Closed)));
    assert!(client.is_closed());
}

#[tokio::test]
async fn malformed_frames_do_not_break_the_link() {
    let (io, mut peer) = pair();
    tokio::spawn(async move {
        peer.accept_login().await;
        let req = peer.frame().await;
        peer.send("<Broken").await;
        peer.send("\u{1}\u{2}garbage").await;
        peer.send(r#"<PingResp seq="99999"/>"#).await;
        peer.send(&format!(r#"<PingResp seq="{}"/>"#, seq_of(&req)))
            .await;
        peer
    });
    let (client, conn, _events) = connect_stream(io, &config()).await.unwrap();
    tokio::spawn(conn);
    client.ping().await.unwrap();
}

/// What an observer is told: every request's start and end (answered, timed out, or given up
/// by its caller), so that a count of requests in flight returns to zero.
#[derive(Default)]
struct Seen {
    log: std::sync::Mutex<Vec<String>>,
    in_flight: std::sync::atomic::AtomicI64,
}

impl omm_axi::client::Observer for Seen {
    fn started(&self, request: &str) {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.log.lock().unwrap().push(format!("start {request}"));
    }

    fn finished(&self, request: &str, _took: Duration, ok: bool) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.log.lock().unwrap().push(format!("end {request} {ok}"));
    }
}

#[tokio::test(start_paused = true)]
async fn an_observer_sees_every_request_start_and_end() {
    let (io, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.accept_login().await;
        let ping = peer.frame().await;
        peer.send(&format!(r#"<PingResp seq="{}"/>"#, seq_of(&ping)))
            .await;
        // never answered: it times out, and the next one is given up by its caller
        let _stalled = peer.frame().await;
        let _abandoned = peer.frame().await;
        peer
    });
    let seen = std::sync::Arc::new(Seen::default());
    let cfg = config()
        .request_timeout(Duration::from_secs(5))
        .observer(seen.clone());
    let (client, conn, _events) = connect_stream(io, &cfg).await.unwrap();
    tokio::spawn(conn);
    client.ping().await.unwrap();
    assert!(client.fetch_system_name().await.is_err());
    let abandoned = tokio::time::timeout(Duration::from_secs(1), client.ping()).await;
    assert!(abandoned.is_err(), "the caller gave up first");
    assert_eq!(
        *seen.log.lock().unwrap(),
        [
            "start Ping",
            "end Ping true",
            "start GetSystemName",
            "end GetSystemName false",
            "start Ping",
            "end Ping false",
        ]
    );
    assert_eq!(seen.in_flight.load(std::sync::atomic::Ordering::SeqCst), 0);
    let _peer = server.await.unwrap();
}

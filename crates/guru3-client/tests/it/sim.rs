//! guru3-client against guru3-sim over real TLS, HTTP/1.1 and websockets on loopback.

use std::time::{Duration, Instant};

use bytes::Bytes;
use guru3_client::client::{Client, Config, Feed, FeedConfig, feed, tls};
use guru3_client::{ApiKey, Inbound, InboundStatus, Message, MessageId};
use guru3_sim::{Extension, Guru3Sim, Kind, Member};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::fixtures_dir;

async fn sim() -> Guru3Sim {
    hexidian_testkit::init_tracing();
    Guru3Sim::start(guru3_sim::Config::default()).await.unwrap()
}

fn config_with_key(sim: &Guru3Sim, key: &str) -> Config {
    let key: ApiKey = key.parse().unwrap();
    Config::new(&sim.url(), key)
        .unwrap()
        .tls(tls::with_roots(hexidian_testkit::ca_roots()))
        .request_timeout(Duration::from_secs(5))
}

fn client(sim: &Guru3Sim) -> Client {
    Client::new(config_with_key(sim, &sim.api_key())).unwrap()
}

/// A feed that never polls on its own: only websocket frames and explicit triggers fetch.
fn quiet() -> FeedConfig {
    FeedConfig::default()
        .poll_interval(Duration::from_secs(3600))
        .debounce(Duration::from_millis(20))
        .reconnect(Duration::from_millis(50), Duration::from_millis(200))
        .retry(Duration::from_millis(20), Duration::from_millis(100))
}

/// A feed whose websocket is up and whose start-up fetch found nothing.
async fn quiet_start(sim: &Guru3Sim, cfg: FeedConfig) -> (Feed, tokio::task::JoinHandle<()>) {
    let (mut feed, w) = start_feed(client(sim), cfg);
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    let early = tokio::time::timeout(Duration::from_millis(300), feed.next_page()).await;
    assert!(early.is_err(), "nothing should be there yet");
    (feed, w)
}

fn start_feed(c: Client, cfg: FeedConfig) -> (Feed, tokio::task::JoinHandle<()>) {
    let (f, watcher) = feed(c, cfg);
    (f, tokio::spawn(watcher.run()))
}

async fn next_page(feed: &mut Feed) -> guru3_client::Page {
    tokio::time::timeout(Duration::from_secs(10), feed.next_page())
        .await
        .expect("no page within 10 s")
        .unwrap()
}

fn sip(n: &str) -> Extension {
    Extension::new(n, &format!("User {n}"), Kind::sip())
}

/// A raw HTTP/1.1 request over TLS, for what the client itself would never send.
async fn raw(
    sim: &Guru3Sim,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls::with_roots(hexidian_testkit::ca_roots()));
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_ack_round_trip_in_server_order() {
    let sim = sim().await;
    sim.save(sip("2001")).unwrap();
    sim.save(Extension::new("2002", "Kiosk Nord", Kind::dect()))
        .unwrap();
    sim.set_members("2002", vec![Member::new("2001", 5)])
        .unwrap();
    let c = client(&sim);
    let page = c.fetch_messages().await.unwrap();
    let kinds: Vec<String> = page.messages.iter().map(|m| m.kind.clone()).collect();
    assert_eq!(
        kinds,
        ["UPDATE_EXTENSION", "UPDATE_EXTENSION", "UPDATE_CALLGROUP"]
    );
    let Message::UpdateExtension(u) = page.messages[0].decode().unwrap() else {
        panic!()
    };
    assert_eq!(u.number.as_str(), "2001");
    let ids: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
    c.ack(&ids[..2]).await.unwrap();
    let again = c.fetch_messages().await.unwrap();
    assert_eq!(again.messages.len(), 1);
    assert_eq!(again.messages[0].id, ids[2]);
    c.ack(&ids[2..]).await.unwrap();
    assert!(c.fetch_messages().await.unwrap().messages.is_empty());
    assert_eq!(sim.acked(), ids.iter().map(|i| i.get()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_batched_in_posts_of_at_most_1000() {
    let sim = sim().await;
    for i in 0..2500 {
        sim.inject("SYNC_ENDED", serde_json::json!({"n": i}));
    }
    let c = Client::new(config_with_key(&sim, &sim.api_key()).max_messages(5000)).unwrap();
    let page = c.fetch_messages().await.unwrap();
    assert_eq!(page.messages.len(), 2500);
    let ids: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
    let (_, posts_before) = sim.request_counts();
    c.ack(&ids).await.unwrap();
    assert_eq!(sim.request_counts().1 - posts_before, 3);
    assert!(sim.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_handset_ok_and_nak_with_guru3_texts() {
    let sim = sim().await;
    sim.save(Extension::new("2020", "Kiosk", Kind::dect()))
        .unwrap();
    let c = client(&sim);
    let ok = Inbound::AssignHandset {
        id: 311,
        timestamp: 1766746020.0,
        ipei: "01842 0093371 6".parse().unwrap(),
        uak: "351b50aa981aab5cf7fe6151b2719394".parse().unwrap(),
        extension: "2020".parse().unwrap(),
    };
    let unknown_ext = Inbound::AssignHandset {
        id: 313,
        timestamp: 1766746022.0,
        ipei: "00077 3216549 7".parse().unwrap(),
        uak: "8D886C3AC8B97250AFC43B2F7BABE590".parse().unwrap(),
        extension: "9999".parse().unwrap(),
    };
    let results = c.submit(&[ok, unknown_ext]).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (results[0].id, &results[0].status),
        (311, &InboundStatus::Ok)
    );
    assert_eq!(results[1].status, InboundStatus::Nak);
    assert_eq!(results[1].text, "Processing error: Extension not known.");
    let h = sim.extension("2020").unwrap().handset.unwrap();
    assert_eq!(h.uak, "351B50AA981AAB5CF7FE6151B2719394");
    // GURU3 sends no echo for an assignment, but the next update carries the handset
    assert!(sim.pending().len() == 1);
    sim.edit("2020", |e| e.name = "Kiosk Nord".into()).unwrap();
    let page = c.fetch_messages().await.unwrap();
    let Message::UpdateExtension(u) = page.messages[1].decode().unwrap() else {
        panic!()
    };
    assert!(
        matches!(u.kind, guru3_client::ExtensionKind::Dect { handset: Some(ref h), .. } if h.ipei.as_str() == "01842 0093371 6")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_post_bodies_get_the_sample_answers() {
    let sim = sim().await;
    sim.save(Extension::new("2020", "Kiosk", Kind::dect()))
        .unwrap();
    sim.save(Extension::new("2002", "Other", Kind::dect()))
        .unwrap();
    let key = sim.api_key();
    let path = format!("/api/event/{}/messages", sim.event_id());
    let form = [
        ("ApiKey", key.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    for (req, resp) in [
        ("post-ack-request.json", "post-ack-response.json"),
        (
            "post-assign-handset-request.json",
            "post-assign-handset-response.json",
        ),
    ] {
        let req: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures_dir().join(req)).unwrap()).unwrap();
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures_dir().join(resp)).unwrap()).unwrap();
        let (status, body) = raw(
            &sim,
            "POST",
            &path,
            &form,
            req["raw_body"].as_str().unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            want
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_answers_with_guru3_status_codes() {
    let sim = sim().await;
    let key = sim.api_key();
    let path = format!("/api/event/{}/messages", sim.event_id());
    let h = [("ApiKey", key.as_str())];
    let form = [
        ("ApiKey", key.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let json = [
        ("ApiKey", key.as_str()),
        ("content-type", "application/json"),
    ];
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a str, u16);
    let cases: Vec<Case<'_>> = vec![
        ("GET", path.clone(), &h, "", 200),
        ("GET", format!("{path}/"), &h, "", 404),
        ("GET", format!("{path}?max_messages=ten"), &h, "", 400),
        ("GET", "/api/event/99/messages".into(), &h, "", 404),
        ("GET", path.clone(), &[], "", 403),
        ("PUT", path.clone(), &h, "", 405),
        ("POST", path.clone(), &json, r#"{"acklist": [1]}"#, 400),
        ("POST", path.clone(), &form, "messages=%5B%5D", 400),
        ("POST", path.clone(), &form, "acklist=", 400),
        ("POST", path.clone(), &form, "acklist=%5B1.0%5D", 400),
        ("POST", path.clone(), &form, "acklist=%5Btrue%5D", 400),
        ("POST", path.clone(), &form, "acklist=%7B%7D", 400),
        (
            "POST",
            path.clone(),
            &form,
            "acklist=%5B%5D&messages=%5B17%5D",
            500,
        ),
        ("POST", path.clone(), &form, "acklist=%5B424242%5D", 200),
    ];
    for (method, p, headers, body, want) in cases {
        let (status, _) = raw(&sim, method, &p, headers, body).await;
        assert_eq!(status, want, "{method} {p} {body}");
    }
    let other = sim.other_event_key();
    let (status, _) = raw(&sim, "GET", &path, &[("apikey", other.as_str())], "").await;
    assert_eq!(status, 403, "a key for another event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_403_and_not_transient() {
    let sim = sim().await;
    let wrong = format!("{}$wrongwrongwrong", sim.event_id());
    let c = Client::new(config_with_key(&sim, &wrong)).unwrap();
    let e = c.fetch_messages().await.unwrap_err();
    assert!(e.is_auth() && !e.is_transient(), "{e:?}");
    let e = c.connect_notifications().await.unwrap_err();
    assert!(e.status().is_some_and(|s| s >= 400), "{e:?}");
    // a key for another event is refused before any request
    let other: ApiKey = sim.other_event_key().parse().unwrap();
    let cfg = Config::new(&sim.url(), other)
        .unwrap()
        .event_id(guru3_client::EventId::new(sim.event_id()).unwrap());
    let err = Client::new(cfg).unwrap_err();
    assert!(err.to_string().contains("belongs to event 8"), "{err}");
    assert!(!format!("{err:?}{c:?}").contains("wrongwrongwrong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frame_wakes_the_feed() {
    let sim = sim().await;
    let (mut feed, _w) = start_feed(client(&sim), quiet());
    // the first call fetches at start: nothing there yet, so it waits for a trigger
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    let mut latencies = Vec::new();
    for i in 0..5 {
        let t0 = Instant::now();
        sim.save(sip(&format!("30{i:02}"))).unwrap();
        let page = next_page(&mut feed).await;
        latencies.push(t0.elapsed());
        assert_eq!(page.messages.len(), 1);
        feed.ack(page.messages[0].id);
    }
    feed.flush_acks().await.unwrap();
    assert!(sim.pending().is_empty());
    assert!(feed.status().websocket_connected);
    tracing::info!(?latencies, "frame→page latency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_reconnects_after_a_drop_and_fetches_again() {
    let sim = sim().await;
    let (mut feed, _w) = start_feed(client(&sim), quiet());
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    // the start-up fetch finds nothing
    let early = tokio::time::timeout(Duration::from_millis(300), feed.next_page()).await;
    assert!(early.is_err(), "nothing should be there yet");
    sim.refuse_websockets(true);
    sim.drop_websockets();
    sim.wait_for("websocket gone", |s| s.websocket_clients() == 0)
        .await;
    // no frame reaches us now: the message waits for the reconnect
    sim.inject("SYNC_STARTED", serde_json::json!({}));
    let (gets_down, _) = sim.request_counts();
    sim.refuse_websockets(false);
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages[0].kind, "SYNC_STARTED");
    assert!(sim.request_counts().0 > gets_down);
    assert!(feed.status().websocket_connects >= 2, "{:?}", feed.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_guru3_is_retried_within_a_second_however_long_it_was_off() {
    let sim = sim().await;
    // production retry and reconnect schedules: that is what this is about
    let (mut feed, _w) = start_feed(client(&sim), FeedConfig::default());
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    sim.set_listening(false).await;
    sim.save(sip("2001")).unwrap();
    feed.fetch_soon();
    // six seconds off: the growing back-off of other failures (1, 2, 4 s, …) would try
    // about three times; refused connections are tried again at least every second
    let off = Instant::now() + Duration::from_secs(6);
    let mut refused = 0;
    while Instant::now() < off {
        match tokio::time::timeout_at(off.into(), feed.next_page()).await {
            Err(_) => break,
            Ok(Ok(p)) => panic!("a page while GURU3 is off: {p:?}"),
            Ok(Err(e)) => {
                assert!(e.is_refused(), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 6, "only {refused} tries in 6 s");
    sim.set_listening(true).await;
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages[0].kind, "UPDATE_EXTENSION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_continues_while_the_websocket_is_down() {
    let sim = sim().await;
    sim.refuse_websockets(true);
    let cfg = quiet().poll_interval(Duration::from_millis(200));
    let (mut feed, _w) = start_feed(client(&sim), cfg);
    sim.save(sip("2001")).unwrap();
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages.len(), 1);
    feed.ack(page.messages[0].id);
    // CALL_EXTENSION has no frame in GURU3 either: only the timer finds it
    sim.call_extension("2001", "");
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages[0].kind, "CALL_EXTENSION");
    assert!(!feed.status().websocket_connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_before_commit_is_caught_by_the_repoll() {
    let sim = sim().await;
    let cfg = quiet().repoll_delay(Duration::from_millis(400));
    let (mut feed, _w) = start_feed(client(&sim), cfg);
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    // let the start-up fetch happen and come back empty
    let early = tokio::time::timeout(Duration::from_millis(300), feed.next_page()).await;
    assert!(early.is_err(), "nothing should be there yet");
    sim.set_commit_delay(Some(Duration::from_millis(200)));
    let (gets0, _) = sim.request_counts();
    sim.save(sip("2001")).unwrap();
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages.len(), 1);
    // one fetch for the frame (too early), one re-poll
    assert!(
        sim.request_counts().0 - gets0 >= 2,
        "{:?}",
        sim.request_counts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pages_are_fetched_back_to_back() {
    let sim = sim().await;
    for i in 0..450 {
        sim.inject("SYNC_ENDED", serde_json::json!({"i": i}));
    }
    let c = Client::new(config_with_key(&sim, &sim.api_key()).max_messages(200)).unwrap();
    let (mut feed, _w) = start_feed(c, quiet());
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let page = next_page(&mut feed).await;
        sizes.push(page.messages.len());
        for m in &page.messages {
            feed.ack(m.id);
        }
    }
    assert_eq!(sizes, [200, 200, 50]);
    feed.flush_acks().await.unwrap();
    assert!(sim.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_timeouts_are_transient_and_retried() {
    let sim = sim().await;
    sim.save(sip("2001")).unwrap();
    let (mut feed, _w) = start_feed(client(&sim), quiet());
    sim.fail_next(2, 503);
    let e = feed.next_page().await.unwrap_err();
    assert!(e.is_transient() && e.status() == Some(503), "{e:?}");
    assert!(!feed.status().last_fetch_ok);
    let e = feed.next_page().await.unwrap_err();
    assert!(e.is_transient());
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages.len(), 1);

    let slow = Client::new(
        config_with_key(&sim, &sim.api_key()).request_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    sim.set_delay(Duration::from_secs(2));
    let e = slow.fetch_messages().await.unwrap_err();
    assert!(
        matches!(e, guru3_client::Error::Timeout { .. }) && e.is_transient(),
        "{e:?}"
    );
    sim.set_delay(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_drops_unacked_ids_and_late_acks_are_harmless() {
    let sim = sim().await;
    sim.save(sip("2001")).unwrap();
    sim.save(sip("2002")).unwrap();
    let c = client(&sim);
    let before = c.fetch_messages().await.unwrap();
    assert_eq!(before.messages.len(), 2);
    sim.resync();
    c.ack(&[before.messages[0].id, before.messages[1].id])
        .await
        .unwrap();
    let page = c.fetch_messages().await.unwrap();
    let kinds: Vec<&str> = page.messages.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "SYNC_STARTED",
            "UPDATE_EXTENSION",
            "UPDATE_EXTENSION",
            "SYNC_ENDED"
        ]
    );
    assert!(
        page.messages
            .iter()
            .all(|m| !before.messages.iter().any(|b| b.id == m.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_mean_redelivery_and_pending_acks_are_not_handed_out_twice() {
    let sim = sim().await;
    sim.save(sip("2001")).unwrap();
    let (mut feed, _w) = start_feed(client(&sim), quiet());
    let first = next_page(&mut feed).await;
    let id = first.messages[0].id;
    feed.ack(id);
    sim.lose_next_acks(1);
    feed.flush_acks().await.unwrap();
    // GURU3 answered 200 but kept the message: it comes back (handlers must be idempotent)
    feed.fetch_soon();
    let again = next_page(&mut feed).await;
    assert_eq!(again.messages[0].id, id);
    feed.ack(id);
    feed.flush_acks().await.unwrap();
    assert!(sim.pending().is_empty());
    // the first POST was answered but not applied: one effective ack
    assert_eq!(sim.acked(), [id.get()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_ack_posts_back_off_instead_of_looping() {
    let sim = sim().await;
    sim.save(sip("2001")).unwrap();
    let (mut feed, _w) = start_feed(client(&sim), quiet());
    let first = next_page(&mut feed).await;
    feed.ack(first.messages[0].id);
    sim.fail_next_posts(1_000_000, 503);
    assert!(feed.flush_acks().await.is_err());
    let (gets_before, _) = sim.request_counts();
    let failed_before = sim.failed_count();
    // the page would only repeat the message whose ack is pending: the feed waits
    let r = tokio::time::timeout(Duration::from_secs(2), feed.next_page()).await;
    assert!(r.is_err(), "{r:?}");
    let gets = sim.request_counts().0 - gets_before;
    let posts = sim.failed_count() - failed_before;
    // back-off 20 ms doubling to 100 ms (jitter in the upper half): about 30 rounds in 2 s,
    // not the thousands of a loop
    assert!(
        gets <= 45 && posts <= 45,
        "{gets} GETs, {posts} failed POSTs in 2 s"
    );
    sim.clear_faults();
    // the ack goes out once POSTs work (a hang guard, generous for a loaded machine)
    let t0 = Instant::now();
    while !sim.pending().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the ack never went out once POSTs worked"
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), feed.next_page()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_messages_do_not_fail_the_page() {
    let sim = sim().await;
    sim.save(sip("2001")).unwrap();
    sim.inject("TELEPORT", serde_json::json!({"to": "mars"}));
    sim.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "x'; DROP TABLE", "type": "SIP"}),
    );
    sim.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "2002", "type": "SIP", "password": "p", "name": "\u{0}"}),
    );
    sim.save(sip("2003")).unwrap();
    let page = client(&sim).fetch_messages().await.unwrap();
    let verdicts: Vec<&str> = page
        .messages
        .iter()
        .map(|m| match m.decode() {
            Ok(Message::Unknown { .. }) => "unknown",
            Ok(_) => "ok",
            Err(_) => "error",
        })
        .collect();
    assert_eq!(verdicts, ["ok", "unknown", "error", "error", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_are_answered_so_the_socket_stays_open() {
    hexidian_testkit::init_tracing();
    let sim = Guru3Sim::start(guru3_sim::Config {
        ping_interval: Duration::from_millis(50),
        // generous for a loaded CI machine; still several timeouts within the wait below
        ping_timeout: Duration::from_millis(400),
        ..guru3_sim::Config::default()
    })
    .await
    .unwrap();
    let (feed, _w) = start_feed(client(&sim), quiet());
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    // many ping intervals and several pong timeouts later, still the first connection
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(sim.websocket_clients(), 1);
    assert_eq!(feed.status().websocket_connects, 1, "{:?}", feed.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_frame_ends_the_connection_with_an_error() {
    use futures_util::SinkExt;
    hexidian_testkit::init_tracing();
    // a hostile peer behind GURU3's address: a real websocket server sending 2 MiB
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let big = format!(
            "{{\"messagecount\": 1, \"pad\": \"{}\"}}",
            "x".repeat(2 << 20)
        );
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::text(big))
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let key: ApiKey = "7$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .parse()
        .unwrap();
    let c = Client::new(Config::new(&format!("http://{addr}"), key).unwrap()).unwrap();
    let mut n = c.connect_notifications().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), n.next())
        .await
        .expect("the frame must be refused, not buffered forever");
    assert!(matches!(r, Some(Err(_))), "{r:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_quiet_websocket_alive() {
    hexidian_testkit::init_tracing();
    // daphne's 20 s pings against a 75 s idle timeout, scaled down by 100
    let sim = Guru3Sim::start(guru3_sim::Config {
        ping_interval: Duration::from_millis(200),
        ..guru3_sim::Config::default()
    })
    .await
    .unwrap();
    // override: scaled-down idle timeout, the test is about pings counting as life
    let cfg = quiet().idle_timeout(Duration::from_millis(750));
    let (feed, _w) = start_feed(client(&sim), cfg);
    sim.wait_for("websocket client", |s| s.websocket_clients() == 1)
        .await;
    // four idle timeouts without a messagecount frame
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        feed.status().websocket_connects,
        1,
        "reconnected while pinged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_frame_after_a_quiet_period_fetches_at_once() {
    let sim = sim().await;
    // override: a debounce far longer than the test's patience, so that waiting shows
    let cfg = quiet().debounce(Duration::from_secs(30));
    let (mut feed, _w) = quiet_start(&sim, cfg).await;
    sim.save(sip("2001")).unwrap();
    let page = tokio::time::timeout(Duration::from_secs(5), feed.next_page())
        .await
        .expect("the frame waited for the debounce")
        .unwrap();
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_fetches_at_once_whatever_the_rest_back_off_says() {
    let sim = sim().await;
    // override: a fetch back-off far longer than the test's patience, so that waiting shows
    let cfg = quiet().retry(Duration::from_secs(60), Duration::from_secs(60));
    let (mut feed, _w) = quiet_start(&sim, cfg).await;
    // GURU3 fails once (the feed now backs off for 30–60 s), then is up again
    sim.fail_next(1, 503);
    feed.fetch_soon();
    let failed = tokio::time::timeout(Duration::from_secs(5), feed.next_page())
        .await
        .unwrap();
    assert!(failed.is_err());
    sim.save(sip("2001")).unwrap();
    let page = tokio::time::timeout(Duration::from_secs(5), feed.next_page())
        .await
        .expect("the frame waited for the back-off")
        .unwrap();
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frames_our_own_acks_cause_fetch_nothing() {
    let sim = sim().await;
    let (mut feed, _w) = quiet_start(&sim, quiet()).await;
    sim.save(sip("2001")).unwrap();
    sim.save(sip("2002")).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(
            next_page(&mut feed)
                .await
                .messages
                .into_iter()
                .map(|m| m.id),
        );
    }
    // the frame of the second save may come after the fetch that already brought it (the
    // frame is sent as GURU3 commits, the GET may see the commit first): the feed fetches once
    // more for it (bringing the same two, not acked yet); let that pass before counting
    while let Ok(again) = tokio::time::timeout(Duration::from_millis(1000), feed.next_page()).await
    {
        for m in again.unwrap().messages {
            assert!(got.contains(&m.id), "{m:?}");
        }
    }
    let (gets, _) = sim.request_counts();
    // one ack at a time: GURU3 answers each with a frame (queuelength 1, then 0)
    for id in got {
        feed.ack(id);
        feed.flush_acks().await.unwrap();
    }
    let r = tokio::time::timeout(Duration::from_millis(1500), feed.next_page()).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        sim.request_counts().0,
        gets,
        "no GET for our own acks' frames"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_next_page_does_not_lose_its_fetch() {
    let sim = sim().await;
    let (mut feed, _w) = quiet_start(&sim, quiet()).await;
    // GURU3 is slow: the caller gives up while the frame's fetch is under way
    sim.set_delay(Duration::from_millis(400));
    sim.save(sip("2001")).unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(150), feed.next_page()).await;
    assert!(cancelled.is_err());
    sim.set_delay(Duration::ZERO);
    // the next call fetches without a new trigger (the poll is an hour away)
    let page = next_page(&mut feed).await;
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_and_acks_share_one_connection_and_survive_its_loss() {
    let sim = sim().await;
    let c = client(&sim);
    for i in 0..3 {
        sim.inject("SYNC_ENDED", serde_json::json!({"n": i}));
    }
    let before = sim.connections();
    for _ in 0..3 {
        let page = c.fetch_messages().await.unwrap();
        let ids: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
        c.ack(&ids).await.unwrap();
    }
    assert!(sim.pending().is_empty());
    assert_eq!(
        sim.connections() - before,
        1,
        "three fetches and three acks on one kept connection"
    );
    // GURU3 restarts: the kept connection is gone, the next fetch opens a new one at once
    sim.set_listening(false).await;
    let e = c.fetch_messages().await.unwrap_err();
    assert!(e.is_refused(), "{e:?}");
    sim.set_listening(true).await;
    sim.inject("SYNC_ENDED", serde_json::json!({"n": 9}));
    let page = c.fetch_messages().await.unwrap();
    assert_eq!(page.messages.len(), 1);
    // inbound messages never ride on the kept connection: each gets its own
    let before = sim.connections();
    sim.save(Extension::new("2020", "Kiosk", Kind::dect()))
        .unwrap();
    for id in [1u32, 2] {
        let r = c
            .submit(&[Inbound::AssignHandset {
                id,
                timestamp: 1766746020.0,
                ipei: "01842 0093371 6".parse().unwrap(),
                uak: "351b50aa981aab5cf7fe6151b2719394".parse().unwrap(),
                extension: "2020".parse().unwrap(),
            }])
            .await
            .unwrap();
        assert_eq!(r.len(), 1);
    }
    assert_eq!(sim.connections() - before, 2);
}

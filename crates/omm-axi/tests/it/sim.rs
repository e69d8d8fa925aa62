//! The client against the simulator over real TLS on loopback.

use std::time::Duration;

use omm_axi::client::{Client, Config, Events, connect, tls};
use omm_axi::proto::{PpDevice, PpUser};
use omm_axi::{
    Error, ErrorCode, Event, Fingerprint, Ppn, RelType, Secret, SecretValue, Subscription,
    SubscriptionMode, Uid,
};
use omm_axi_sim::{Identity, Sim, SimConfig};

const WAIT: Duration = Duration::from_secs(10);

fn pinned(stem: &str) -> std::sync::Arc<tls::ClientConfig> {
    let fp: Fingerprint = hexidian_testkit::fingerprint_hex(stem).parse().unwrap();
    tls::pinned(&[fp])
}

fn config(sim: &Sim) -> Config {
    Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .tls(pinned("server"))
}

async fn open(sim: &Sim) -> (Client, Events, tokio::task::JoinHandle<omm_axi::Result<()>>) {
    hexidian_testkit::init_tracing();
    let (client, conn, events) = connect(&config(sim)).await.unwrap();
    (client, events, tokio::spawn(conn))
}

fn user(name: &str, num: &str) -> PpUser {
    let mut u = PpUser::default();
    u.name = Some(name.into());
    u.num = Some(num.into());
    u
}

async fn next_event(events: &mut Events, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.expect("event channel open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event within timeout")
}

#[tokio::test]
async fn login_over_tls_with_pinned_ca_and_selfsigned_certificates() {
    let sim = Sim::start().await;
    let (client, _events, _conn) = open(&sim).await;
    assert_eq!(client.fetch_system_name().await.unwrap(), "hexidian-sim");
    let versions = client.fetch_versions().await.unwrap();
    assert!(versions.iter().any(|(k, _)| k == "SetPP"));
    assert!(
        client
            .fetch_limits()
            .await
            .unwrap()
            .iter()
            .any(|(k, v)| k == "records" && v == "20")
    );

    // chain + name verification against the test CA
    let cfg = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .tls(tls::with_roots(hexidian_testkit::ca_roots()));
    let (c2, conn, _e) = connect(&cfg).await.unwrap();
    tokio::spawn(conn);
    c2.ping().await.unwrap();

    // an OMM-like self-signed certificate: pinning works, CA verification and a wrong pin fail
    let omm = Sim::start_with(SimConfig {
        identity: Identity::SelfSigned,
        ..SimConfig::default()
    })
    .await;
    let ok = Config::new("127.0.0.1", "omm", "omm")
        .port(omm.addr().port())
        .tls(pinned("omm-selfsigned"));
    let (c3, conn, _e) = connect(&ok).await.unwrap();
    tokio::spawn(conn);
    c3.ping().await.unwrap();
    for bad in [
        pinned("server"),
        tls::with_roots(hexidian_testkit::ca_roots()),
    ] {
        let cfg = Config::new("127.0.0.1", "omm", "omm")
            .port(omm.addr().port())
            .tls(bad);
        let err = connect(&cfg).await.unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err:?}");
    }
}

#[tokio::test]
async fn login_rejects_wrong_password_and_requires_a_tls_choice() {
    let sim = Sim::start().await;
    let cfg = Config::new("127.0.0.1", "omm", "wrong")
        .port(sim.addr().port())
        .tls(pinned("server"));
    let err = connect(&cfg).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Auth));
    let err = connect(&Config::new("127.0.0.1", "omm", "omm"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    // plain TCP works when asked for explicitly
    let cfg = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.plain_addr().port())
        .plain();
    let (c, conn, _e) = connect(&cfg).await.unwrap();
    tokio::spawn(conn);
    c.ping().await.unwrap();
    let view = sim.view();
    assert!(
        view.requests("Open")
            .all(|r| r.attr("password") == Some("<masked>"))
    );
}

#[tokio::test]
async fn create_update_delete_users_with_secrets() {
    let sim = Sim::start().await;
    let (client, _events, _conn) = open(&sim).await;
    let mut u = user("Alice", "4711");
    u.pin = Some(SecretValue::Plain(Secret::new("2580")));
    u.sip_pw = Some(SecretValue::Plain(Secret::new("x".repeat(53))));
    u.hierarchy1 = Some("HEXIDIAN".into());
    let created = client.create_user(u).await.unwrap();
    let uid = created.uid();
    assert!(!uid.is_none());
    assert_eq!(created.rel_type, Some(RelType::Unbound));
    assert!(matches!(created.pin, Some(SecretValue::Encrypted(_))));
    assert_eq!(sim.user_secret(uid.get(), "pin").as_deref(), Some("2580"));
    assert_eq!(sim.user_secret(uid.get(), "sipPw"), Some("x".repeat(53)));

    let mut change = PpUser::default();
    change.uid = Some(uid);
    change.name = Some("Alice Example".into());
    let updated = client.set_user(change).await.unwrap();
    assert_eq!(updated.name.as_deref(), Some("Alice Example"));
    assert_eq!(
        client
            .fetch_user_by_number("4711")
            .await
            .unwrap()
            .unwrap()
            .uid(),
        uid
    );

    // the OMM's limits surface as typed errors
    let mut long = PpUser::default();
    long.uid = Some(uid);
    long.name = Some("A name that is far too long for a handset".into());
    let err = client.set_user(long).await.unwrap_err();
    let omm = err.as_omm_error().unwrap();
    assert_eq!(
        (omm.code.clone(), omm.bad.as_deref(), omm.max_len),
        (ErrorCode::TooLong, Some("name"), Some(20))
    );
    let err = client.create_user(user("Dup", "4711")).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Exist));
    // a secret longer than the 512-bit key allows is refused before sending
    let mut too_long = user("Bob", "4712");
    too_long.sip_pw = Some(SecretValue::Plain(Secret::new("y".repeat(54))));
    assert!(matches!(
        client.create_user(too_long).await,
        Err(Error::Secret { field: "sipPw", .. })
    ));

    client.delete_user(uid).await.unwrap();
    assert_eq!(client.fetch_user(uid).await.unwrap(), None);
    assert_eq!(
        client.delete_user(uid).await.unwrap_err().code(),
        Some(&ErrorCode::NoEnt)
    );
}

#[tokio::test]
async fn paging_through_a_thousand_users() {
    let sim = Sim::start().await;
    for i in 0..1000 {
        sim.seed_user(&[
            ("num", &format!("{}", 10_000 + i)),
            ("name", &format!("User {i}")),
        ]);
    }
    let (client, _events, _conn) = open(&sim).await;
    let users = client.list_users().await.unwrap();
    assert_eq!(users.len(), 1000);
    assert!(users.windows(2).all(|w| w[0].uid() < w[1].uid()));
    // 50 pages of 20 plus the ENoEnt that ends the listing
    let gets = sim.view().requests("GetPPUser").count();
    assert_eq!(gets, 51);
    // paging a multiple of 20 and an empty system end cleanly too
    let empty = Sim::start().await;
    let (c2, _e, _j) = open(&empty).await;
    assert!(c2.list_devices().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pipelined_scan_reads_dense_and_sparse_keys_once_each() {
    let sim = Sim::start().await;
    for i in 0..1000 {
        sim.seed_user(&[("num", &format!("{}", 10_000 + i))]);
    }
    let (client, _events, _conn) = open(&sim).await;
    let scan = |c: Client| async move {
        let mut got = Vec::new();
        c.scan_users(8, |page| got.extend(page.iter().map(|u| u.uid().get())))
            .await
            .unwrap();
        got
    };
    let mut got = scan(client.clone()).await;
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=1000).collect::<Vec<u32>>(),
        "dense: every user once"
    );
    // 50 full pages plus at most `depth` requests past the end
    let gets = sim.view().requests("GetPPUser").count();
    assert!((51..=58).contains(&gets), "{gets} page requests");

    // sparse: a hole of 500 and only every 7th user elsewhere
    for uid in 1..=1000u32 {
        if (200..700).contains(&uid) || uid % 7 != 0 {
            client.delete_user(Uid::new(uid)).await.unwrap();
        }
    }
    let want: Vec<u32> = (1..=1000u32)
        .filter(|u| !(200..700).contains(u) && u % 7 == 0)
        .collect();
    let before = sim.view().requests("GetPPUser").count();
    let mut got = scan(client.clone()).await;
    got.sort_unstable();
    assert_eq!(got, want, "sparse: every user once");
    let gets = sim.view().requests("GetPPUser").count() - before;
    assert!(gets <= 60, "{gets} page requests for {} users", want.len());

    // an empty table
    let mut pages = 0;
    client.scan_devices(8, |_| pages += 1).await.unwrap();
    assert_eq!(pages, 0);
}

#[tokio::test]
async fn attach_and_detach_with_events_observed() {
    let sim = Sim::start().await;
    let (client, mut events, _conn) = open(&sim).await;
    client
        .subscribe(&Subscription::provisioning())
        .await
        .unwrap();
    client.set_dev_auto_create(true).await.unwrap();
    client
        .set_subscription_mode(SubscriptionMode::Configured, None)
        .await
        .unwrap();
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::DectSubscriptionMode {
                mode: SubscriptionMode::Configured
            }
        )
    })
    .await;

    let ppn = Ppn::new(sim.handset_subscribe("03074 0220259 3", "0000").unwrap());
    let ev = next_event(&mut events, |e| {
        matches!(
            e,
            Event::PpCnf {
                device: Some(_),
                ..
            }
        )
    })
    .await;
    let Event::PpCnf {
        device: Some(dev), ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(
        (dev.ppn(), dev.auto_create, dev.rel_type.clone()),
        (ppn, Some(true), Some(RelType::Unbound))
    );

    let uid = client
        .create_user(user("Kiosk", "2020"))
        .await
        .unwrap()
        .uid();
    let (dev, usr) = client.attach(ppn, uid, RelType::Dynamic).await.unwrap();
    assert_eq!((dev.bound_uid(), usr.bound_ppn()), (uid, ppn));
    next_event(
        &mut events,
        |e| matches!(e, Event::PpCnf { user: Some(u), .. } if u.ppn == Some(ppn)),
    )
    .await;
    client.set_relation(uid, RelType::Fixed).await.unwrap();
    assert_eq!(sim.view().device(ppn.get()).unwrap()["relType"], "Fixed");

    let (dev, usr) = client.detach(ppn, uid).await.unwrap();
    assert_eq!(
        (dev.bound_uid(), usr.bound_ppn(), usr.ppn_old),
        (Uid::NONE, Ppn::NONE, Some(ppn))
    );
    next_event(
        &mut events,
        |e| matches!(e, Event::PpCnf { user: Some(u), .. } if u.ppn_old == Some(ppn)),
    )
    .await;
    let view = sim.view();
    assert_eq!(view.device(ppn.get()).unwrap()["uid"], "0");
    assert_eq!(view.user(uid.get()).unwrap()["relType"], "Unbound");

    // devices: create, look up by IPEI, change, delete
    let mut d = PpDevice::default();
    d.ipei = Some("10345 0615703 *".parse().unwrap());
    let created = client.create_device(&d).await.unwrap();
    let by_ipei = client
        .fetch_device_by_ipei("10345 0615703 *".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_ipei.ppn(), created.ppn());
    let mut change = PpDevice::default();
    change.ppn = Some(created.ppn());
    change.encrypt = Some(true);
    assert_eq!(
        client.set_device(&change).await.unwrap().encrypt,
        Some(true)
    );
    client.delete_device(created.ppn()).await.unwrap();
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::PpCnf {
                deleted_device: true,
                ..
            }
        )
    })
    .await;
    assert_eq!(client.fetch_device(created.ppn()).await.unwrap(), None);
    assert_eq!(client.list_devices().await.unwrap().len(), 1);

    // state queries
    sim.set_pp_state(ppn.get(), &[("registered", "1"), ("swVersion", "7.2")]);
    let state = client.fetch_pp_state(ppn).await.unwrap();
    assert_eq!(
        (state.registered, state.sw_version.as_deref()),
        (Some(true), Some("7.2"))
    );
    sim.record_pp_action(ppn.get(), "LocReg", 4);
    let last = client.fetch_last_action(ppn).await.unwrap();
    assert_eq!(
        (last.tr_type.as_deref(), last.rfp_id),
        (Some("LocReg"), Some(4))
    );
    assert_eq!(
        client.fetch_subscription_mode().await.unwrap(),
        SubscriptionMode::Configured
    );
}

#[tokio::test]
async fn set_pp_needs_a_sync_session() {
    let sim = Sim::start().await;
    let ppn = Ppn::new(sim.seed_device("03074 0220259 3"));
    let uid = Uid::new(sim.seed_user(&[("num", "1")]));
    let cfg = config(&sim).sync_client(false);
    let (client, conn, _e) = connect(&cfg).await.unwrap();
    tokio::spawn(conn);
    let err = client.attach(ppn, uid, RelType::Dynamic).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Perm));
}

#[tokio::test]
async fn sixty_four_requests_in_flight_over_split_and_coalesced_frames() {
    let sim = Sim::start().await;
    for i in 0..64 {
        sim.seed_user(&[("num", &i.to_string())]);
    }
    sim.faults(|f| {
        f.split_chunks = Some(7);
        f.coalesce = Some(16);
    });
    let (client, _events, _conn) = open(&sim).await;
    let mut tasks = Vec::new();
    for i in 1..=64u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.fetch_user(Uid::new(i)).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let u = t.await.unwrap().unwrap().unwrap();
        assert_eq!(u.uid(), Uid::new(i as u32 + 1));
    }
}

#[tokio::test]
async fn delayed_response_is_overtaken_and_events_may_precede_it() {
    let sim = Sim::start().await;
    let (client, mut events, _conn) = open(&sim).await;
    client
        .subscribe(&Subscription::provisioning())
        .await
        .unwrap();
    sim.faults(|f| {
        f.delay
            .insert("CreatePPUser".into(), Duration::from_millis(300));
    });
    let c2 = client.clone();
    let create = tokio::spawn(async move { c2.create_user(user("Late", "77")).await });
    // the event for the creation arrives before its response
    let ev = next_event(&mut events, |e| {
        matches!(e, Event::PpCnf { user: Some(_), .. })
    })
    .await;
    assert!(
        !create.is_finished(),
        "event should precede the delayed response: {ev:?}"
    );
    client.ping().await.unwrap();
    assert!(!create.is_finished());
    assert_eq!(create.await.unwrap().unwrap().num.as_deref(), Some("77"));
}

#[tokio::test]
async fn stalled_reply_times_out() {
    let sim = Sim::start().await;
    sim.faults(|f| f.stall.push("GetSystemName".into()));
    let cfg = config(&sim).request_timeout(Duration::from_millis(300));
    let (client, conn, _e) = connect(&cfg).await.unwrap();
    tokio::spawn(conn);
    let err = client.fetch_system_name().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    client.ping().await.unwrap();
}

#[tokio::test]
async fn injected_error_codes_are_typed_and_classified() {
    let sim = Sim::start().await;
    sim.faults(|f| {
        f.inject
            .insert("GetPPDev".into(), ("EInProgress".into(), 1));
        f.inject.insert("Ping".into(), ("EBrandNew".into(), 1));
    });
    let (client, _e, _j) = open(&sim).await;
    let err = client.list_devices().await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InProgress));
    assert!(err.is_transient());
    assert!(client.list_devices().await.unwrap().is_empty());
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Unknown("EBrandNew".into())));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn reconnect_after_the_sim_drops_the_link() {
    let sim = Sim::start().await;
    sim.faults(|f| f.drop_after = Some(5));
    let (client, _events, conn) = open(&sim).await;
    // login counts as the first frame: four more requests, then the link is gone
    let mut results = Vec::new();
    for _ in 0..6 {
        results.push(client.ping().await);
    }
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(e) if e.is_transient()))
    );
    assert!(conn.await.unwrap().is_err());
    sim.faults(|f| f.drop_after = None);

    let mut backoff =
        omm_axi::proto::Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    let (client, mut events, _conn) = loop {
        match connect(&config(&sim)).await {
            Ok((c, conn, e)) => break (c, e, tokio::spawn(conn)),
            Err(e) => {
                assert!(e.is_transient(), "{e:?}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    // re-subscribe after reconnecting: subscriptions die with the link
    client
        .subscribe(&Subscription::provisioning())
        .await
        .unwrap();
    client.create_user(user("Back", "1")).await.unwrap();
    next_event(&mut events, |e| matches!(e, Event::PpCnf { .. })).await;
}

#[tokio::test]
async fn idle_timeout_on_the_virtual_clock_drops_the_link() {
    let sim = Sim::start().await;
    let (client, _events, conn) = open(&sim).await;
    client.ping().await.unwrap();
    sim.advance(Duration::from_secs(301));
    assert!(conn.await.unwrap().is_err());
    sim.wait_for(WAIT, |v| v.open_sessions == 0).await.unwrap();
}

#[tokio::test]
async fn subscription_mode_expires_on_the_virtual_clock() {
    let sim = Sim::start().await;
    let (client, mut events, _conn) = open(&sim).await;
    client
        .subscribe(&Subscription::provisioning())
        .await
        .unwrap();
    client
        .set_subscription_mode(SubscriptionMode::Wildcard, Some(2))
        .await
        .unwrap();
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::DectSubscriptionMode {
                mode: SubscriptionMode::Wildcard
            }
        )
    })
    .await;
    // a wildcard subscription of an unknown handset creates an unbound device
    let ppn = sim.handset_subscribe("10345 0615703 *", "9999").unwrap();
    assert_eq!(sim.view().device(ppn).unwrap()["autoCreate"], "1");
    sim.advance(Duration::from_secs(121));
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::DectSubscriptionMode {
                mode: SubscriptionMode::Configured
            }
        )
    })
    .await;
    sim.advance(Duration::from_secs(24 * 3600));
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::DectSubscriptionMode {
                mode: SubscriptionMode::Off
            }
        )
    })
    .await;
    assert!(sim.handset_subscribe("03074 0220259 3", "0000").is_err());
}

#[tokio::test]
async fn unknown_events_and_garbage_from_the_omm_are_survived() {
    let sim = Sim::start().await;
    let (client, mut events, _conn) = open(&sim).await;
    sim.inject_event(r#"<EventRFPState><rfp id="4" state="Connected"/></EventRFPState>"#);
    sim.inject_raw("<Oops\0\u{7f}\0");
    let ev = next_event(&mut events, |_| true).await;
    assert!(
        matches!(ev, Event::Other(ref e) if e.name() == "EventRFPState" && e.child("rfp").is_some()),
        "{ev:?}"
    );
    client.ping().await.unwrap();
}

/// Raw frames over the plain listener: what a foreign OM AXI client sees on the wire.
async fn raw_exchange(sim: &Sim, frames: &[&str], want: usize) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(sim.plain_addr())
        .await
        .unwrap();
    for f in frames {
        s.write_all(f.as_bytes()).await.unwrap();
        s.write_all(b"\0").await.unwrap();
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < want {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {got:?}");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.iter().position(|b| *b == 0) {
                got.push(String::from_utf8_lossy(&buf[..end]).into_owned());
                buf.drain(..=end);
            }
        }
    })
    .await
    .expect("frames within the timeout");
    got
}

#[tokio::test]
async fn sim_answers_get_account_with_the_account_asked_for() {
    let sim = Sim::start().await;
    let got = raw_exchange(
        &sim,
        &[
            r#"<Open seq="1" username="omm" password="omm"/>"#,
            r#"<GetAccount id="1"/>"#,
        ],
        2,
    )
    .await;
    assert!(got[1].starts_with("<GetAccountResp"), "{got:?}");
    assert!(got[1].contains(r#"<account id="1""#), "{got:?}");
    assert!(got[1].contains(r#"username="omm""#), "{got:?}");
}

#[tokio::test]
async fn sim_sends_the_subscription_mode_reply_before_its_event() {
    let sim = Sim::start().await;
    let got = raw_exchange(
        &sim,
        &[
            r#"<Open seq="1" username="omm" password="omm"/>"#,
            r#"<Subscribe seq="2"><e cmd="On" eventType="DECTSubscriptionMode"/></Subscribe>"#,
            r#"<SetDECTSubscriptionMode mode="Configured"/>"#,
        ],
        4,
    )
    .await;
    let reply = got
        .iter()
        .position(|f| f.starts_with("<SetDECTSubscriptionModeResp"));
    let event = got
        .iter()
        .rposition(|f| f.starts_with("<EventDECTSubscriptionMode"));
    assert!(reply.is_some() && event.is_some(), "{got:?}");
    assert!(reply < event, "{got:?}");
}

#[tokio::test]
async fn a_switched_off_sim_refuses_connections_and_comes_back() {
    let sim = Sim::start().await;
    sim.set_listening(false).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = tokio::net::TcpStream::connect(sim.addr())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let Err(e) = connect(&config(&sim)).await else {
        panic!("connected to a switched-off OMM")
    };
    assert!(e.is_transient(), "{e:?}");
    sim.set_listening(true).await;
    let (client, _events, _conn) = open(&sim).await;
    assert_eq!(client.fetch_system_name().await.unwrap(), "hexidian-sim");
}

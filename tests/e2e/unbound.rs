//! Unbound handsets end to end: temporary numbers, token calls over the real webhook, the
//! ASSIGN_HANDSET outbox to guru3-sim, known handsets coming back, crashes and outages.

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Handset, Kind};

use crate::World;

const KEY: &str = "hook-key";

fn settings(w: &World, bind_delay: Duration) -> hexidian::Settings {
    let mut s = w.settings();
    let mut c =
        unbound_handsets::Config::new(unbound_handsets::TempNumbers::new("0100", 8).unwrap());
    c.subscription_mode = Some("Wildcard".into());
    c.bind_delay = bind_delay;
    c.key = Some(broker_core::model::Secret::new(KEY));
    c.per_caller_per_min = 1000;
    c.outbox_interval = Duration::from_millis(100);
    s.unbound = Some(hexidian::UnboundSettings {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        deadline: Duration::from_secs(3),
        config: c,
    });
    s
}

/// POST to the webhook: `(status, body)`.
pub(crate) async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    key: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let headers = [("Content-Type", content_type), ("X-Hexidian-Key", key)];
    hexidian_e2e::http(addr, "POST", path, &headers, body).await
}

pub(crate) fn call(caller: &str, token: &str) -> String {
    serde_json::json!({"callerid": caller, "token": token}).to_string()
}

fn token_of(w: &World, number: &str) -> String {
    match w.guru3.extension(number).unwrap().kind {
        Kind::Dect { token, .. } => token,
        other => panic!("{other:?}"),
    }
}

/// Waits (at most 20 s) until the device of `ipei` is attached to a user; returns the user's
/// attributes.
pub(crate) async fn attached(
    w: &World,
    ipei: &str,
    pred: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let t0 = Instant::now();
    loop {
        let v = w.omm.view();
        if let Some((_, d)) = v
            .devices
            .iter()
            .find(|(_, d)| d.get("ipei").map(String::as_str) == Some(ipei))
        {
            let uid: u32 = d.get("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
            if let Some(u) = v.user(uid) {
                if pred(u) {
                    return u.clone();
                }
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "handset {ipei} not attached as expected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn is_temp(u: &std::collections::BTreeMap<String, String>) -> bool {
    u.get("hierarchy2").map(String::as_str) == Some(hexidian::adapters::TEMP_TAG)
}

/// Waits until the workflow has opened subscription (Wildcard) on the OMM.
async fn subscription_open(w: &World) {
    let t0 = Instant::now();
    while !matches!(w.omm.view().mode, omm_axi_sim::Mode::Wildcard { .. }) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "subscription mode not set"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn has_pbx_user(w: &World, id: &str) -> bool {
    w.sql
        .query_opt("SELECT 1 FROM hexidian.sip_user WHERE id = $1", &[&id])
        .await
        .unwrap()
        .is_some()
}

/// The value of one sample on `/metrics`.
fn sample_of(text: &str, key: &str) -> f64 {
    hexidian_e2e::sample(text, key).unwrap_or_else(|| panic!("{key} not in\n{text}"))
}

async fn temp_rows(w: &World) -> i64 {
    w.sql
        .query_one(
            "SELECT count(*) FROM hexidian.sip_user WHERE kind = 'temp'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_handset_gets_a_temporary_number_and_binds_by_token_call() {
    let w = World::new().await;
    w.guru3
        .save(Extension::new("2001", "Kiosk", Kind::dect()))
        .unwrap();
    let run = hexidian::start(settings(&w, Duration::from_millis(200)))
        .await
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    let hook = run.webhook_addr().unwrap();
    // the workflow opens subscription
    subscription_open(&w).await;
    let ipei = "01842 0093371 6";
    let t0 = Instant::now();
    w.omm.handset_subscribe(ipei, "0000").unwrap();
    let temp = attached(&w, ipei, is_temp).await;
    eprintln!("subscribe → temporary user attached: {:?}", t0.elapsed());
    let temp_number = temp["num"].clone();
    assert!(
        temp_number.starts_with("0100") && temp_number.len() == 8,
        "{temp_number}"
    );
    assert_eq!(temp_rows(&w).await, 1, "the PBX has the temporary user");
    let token = token_of(&w, "2001");
    // the status stream lists the handset on its temporary number, and what happened to it
    let mut stream = crate::stream::Stream::open(run.admin_addr().unwrap()).await;
    let (_, snap) = stream.next(Duration::from_secs(10)).await;
    let listed = snap["status"]["unbound"]["temporaries"].as_array().unwrap();
    assert!(
        listed.iter().any(|t| t["number"] == temp_number.as_str()),
        "{snap}"
    );
    assert!(
        snap["handsets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["what"] == "temporary" && a["number"] == temp_number.as_str()),
        "{snap}"
    );
    drop(stream);

    // every answer of the contract
    let json = "application/json";
    let cases = [
        (
            "/token-call",
            "wrong",
            json,
            call(&temp_number, &token),
            401,
            "UNAUTHORIZED",
        ),
        (
            "/token-call",
            KEY,
            json,
            call(&temp_number, "99999999"),
            404,
            "UNKNOWN_TOKEN",
        ),
        (
            "/token-call",
            KEY,
            json,
            call("2001", &token),
            403,
            "NOT_UNBOUND",
        ),
        (
            "/token-call",
            KEY,
            json,
            "{\"callerid\": 5".to_owned(),
            400,
            "BAD_REQUEST",
        ),
        (
            "/token-call",
            KEY,
            "text/plain",
            call(&temp_number, &token),
            415,
            "BAD_REQUEST",
        ),
        (
            "/token-call",
            KEY,
            json,
            "x".repeat(10_000),
            400,
            "BAD_REQUEST",
        ),
        // the side-effect-free check answers the same question
        (
            "/token-call/check",
            KEY,
            json,
            call(&temp_number, &format!("9955{token}")),
            200,
            "OK",
        ),
    ];
    for (path, key, ct, body, status, word) in cases {
        let got = post(hook, path, key, ct, &body).await;
        assert_eq!(
            got,
            (status, word.to_owned()),
            "{path} {key} {ct} {}",
            &body[..body.len().min(60)]
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        is_temp(&attached(&w, ipei, |_| true).await),
        "the check call changed nothing"
    );

    // the real call (the Python dialplan's path `/`)
    assert_eq!(
        post(hook, "/", KEY, json, &call(&temp_number, &token)).await,
        (200, "OK".to_owned())
    );
    let user = attached(&w, ipei, |u| {
        u.get("num").map(String::as_str) == Some("2001")
    })
    .await;
    assert!(!is_temp(&user));
    assert!(
        w.omm.view().user_by_num(&temp_number).is_none(),
        "the temporary OMM user is gone"
    );
    let t0 = Instant::now();
    while temp_rows(&w).await != 0 || w.guru3.inbound().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "temp user or ASSIGN_HANDSET left over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let inbound = w.guru3.inbound();
    assert_eq!(inbound.len(), 1);
    assert_eq!(
        (inbound[0].kind.as_str(), inbound[0].status.as_str()),
        ("ASSIGN_HANDSET", "OK")
    );
    assert_eq!(inbound[0].data["ipei"], ipei);
    assert_eq!(
        w.guru3.extension("2001").unwrap().handset.unwrap().ipei,
        ipei,
        "GURU3 knows the handset now"
    );

    // a second handset cannot take the same extension
    let other = hexidian_demo::ipei(4242);
    let other = other.as_str();
    w.omm.handset_subscribe(other, "0000").unwrap();
    let t2 = attached(&w, other, is_temp).await;
    assert_eq!(
        post(hook, "/token-call", KEY, json, &call(&t2["num"], &token)).await,
        (409, "ALREADY_BOUND".to_owned())
    );

    // unsubscribing in GURU3 leaves the handset usable: it gets a temporary number again
    w.guru3.unsubscribe("2001").unwrap();
    w.drained(Duration::from_secs(30)).await;
    attached(&w, ipei, is_temp).await;

    // a handset GURU3 knows goes straight back to its extension when it re-subscribes
    let known = "03587 0412396 2";
    let mut kiosk = Extension::new("2002", "Kiosk Nord", Kind::dect());
    kiosk.handset = Some(Handset {
        ipei: known.into(),
        uak: "FA05689957F199E95B1FE44621BFD6EE".into(),
    });
    w.guru3.save(kiosk).unwrap();
    w.drained(Duration::from_secs(30)).await;
    attached(&w, known, |u| {
        u.get("num").map(String::as_str) == Some("2002")
    })
    .await;
    w.omm.handset_subscribe(known, "0000").unwrap();
    attached(&w, known, |u| {
        u.get("num").map(String::as_str) == Some("2002")
    })
    .await;
    // deleting the extension leaves its handset usable as an unbound one
    w.guru3.delete("2002").unwrap();
    w.drained(Duration::from_secs(30)).await;
    attached(&w, known, is_temp).await;
    // the counters follow the OMM's state a moment later
    let t0 = Instant::now();
    loop {
        let status = run.unbound_status().unwrap();
        if status.bound == 1 && status.assigns_ok == 1 && status.temps_created >= 4 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // and /metrics says the same
    let (_, text) = crate::http_get(run.admin_addr().unwrap(), "/metrics").await;
    for line in [
        "hexidian_binds_total{result=\"bound\"} 1",
        "hexidian_binds_total{result=\"failed\"} 0",
        "hexidian_assign_handset_total{result=\"ok\"} 1",
        // the ASSIGN_HANDSET went out: nothing waits in the outbox
        "hexidian_assign_outbox 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    // temporary numbers: at least the ones of this test were given, and the bound handset
    // holds none any more
    let temps = sample_of(&text, "hexidian_temporary_numbers_total");
    assert!(temps >= 1.0, "{text}");
    assert!(
        sample_of(&text, "hexidian_temporary_handsets") < temps,
        "{text}"
    );
    // the refused calls above: a wrong key and a caller that is no temporary user
    for reason in ["key", "caller"] {
        let key = format!("hexidian_webhook_rejections_total{{reason=\"{reason}\"}} ");
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("{key} not in\n{text}"));
        assert!(n >= 1.0, "{key}{n}");
    }
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omm_down_means_retry_and_a_crash_mid_bind_completes_on_restart() {
    let w = World::new().await;
    w.guru3
        .save(Extension::new("2001", "Kiosk", Kind::dect()))
        .unwrap();
    let run = hexidian::start(settings(&w, Duration::from_secs(30)))
        .await
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    subscription_open(&w).await;
    let ipei = "01842 0093371 6";
    w.omm.handset_subscribe(ipei, "0000").unwrap();
    let temp = attached(&w, ipei, is_temp).await["num"].clone();
    let token = token_of(&w, "2001");
    let hook = run.webhook_addr().unwrap();
    let json = "application/json";

    // the OMM goes away: the caller hears RETRY and nothing is recorded
    w.omm.faults(|f| f.refuse_tls = true);
    w.omm.drop_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        post(hook, "/token-call", KEY, json, &call(&temp, &token)).await,
        (503, "RETRY".to_owned())
    );
    let binds: i64 = w
        .sql
        .query_one("SELECT count(*) FROM hexidian.handset_bind", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(binds, 0);
    w.omm.faults(|f| f.refuse_tls = false);
    // a permanent failure (the bind table is gone) is ERROR, and nothing is half-done
    w.sql
        .batch_execute("ALTER TABLE hexidian.handset_bind RENAME TO handset_bind_away")
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = loop {
        let r = post(hook, "/token-call", KEY, json, &call(&temp, &token)).await;
        if r.1 != "RETRY" || t0.elapsed() > Duration::from_secs(20) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(err, (500, "ERROR".to_owned()));
    w.sql
        .batch_execute("ALTER TABLE hexidian.handset_bind_away RENAME TO handset_bind")
        .await
        .unwrap();
    assert!(
        is_temp(&attached(&w, ipei, |_| true).await),
        "still on its temporary number"
    );
    let t0 = Instant::now();
    let ok = loop {
        let r = post(hook, "/token-call", KEY, json, &call(&temp, &token)).await;
        if r.1 != "RETRY" || t0.elapsed() > Duration::from_secs(20) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ok, (200, "OK".to_owned()));
    // the process dies before the (30 s) bind delay is over
    run.abort();
    let binds: i64 = w
        .sql
        .query_one("SELECT count(*) FROM hexidian.handset_bind", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(binds, 1, "the promise is durable");
    // a handset that subscribes while hexidian is down is found by the startup scan
    let late = hexidian_demo::ipei(777);
    w.omm.handset_subscribe(&late, "0000").unwrap();
    let run = hexidian::start(settings(&w, Duration::from_secs(30)))
        .await
        .unwrap();
    attached(&w, &late, is_temp).await;
    attached(&w, ipei, |u| {
        u.get("num").map(String::as_str) == Some("2001")
    })
    .await;
    let t0 = Instant::now();
    // the bound handset's temporary number is gone; the late handset keeps its own
    while w.guru3.inbound().is_empty() || has_pbx_user(&w, &temp).await {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "bind not completed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.guru3.inbound()[0].status, "OK");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_slow_clients_and_the_subscription_mode_are_handled() {
    let w = World::new().await;
    let mut s = settings(&w, Duration::from_millis(100));
    if let Some(u) = s.unbound.as_mut() {
        u.config.per_caller_per_min = 2;
        // the mode must come back through the OMM's event, not the periodic refresh
        u.config.mode_refresh = Duration::from_secs(3600);
    }
    let run = hexidian::start(s).await.unwrap();
    let hook = run.webhook_addr().unwrap();
    let json = "application/json";
    // until its handset workflow runs, the webhook answers every call RETRY (503)
    let t0 = Instant::now();
    while run.unbound_status().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no handset workflow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // two calls a minute per caller, then RETRY (429); another caller is not affected
    let answers: Vec<(u16, String)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                post(
                    hook,
                    "/token-call",
                    KEY,
                    json,
                    &call("01001111", "12345678"),
                )
                .await,
            );
        }
        v
    };
    // not a temporary user: the same answer whatever the token (no token oracle)
    assert_eq!(answers[0], (403, "NOT_UNBOUND".to_owned()));
    assert_eq!(answers[2], (429, "RETRY".to_owned()));
    assert_eq!(
        post(
            hook,
            "/token-call",
            KEY,
            json,
            &call("01002222", "12345678")
        )
        .await
        .0,
        403
    );

    // a client that never finishes its headers is dropped; others are served meanwhile
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(hook).await.unwrap();
    slow.write_all(b"POST /token-call HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(
        post(hook, "/token-call", KEY, json, &call("01003333", "1"))
            .await
            .0,
        403
    );
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the slow connection is closed by the server"
    );

    // the subscription mode is kept: when it expires (virtual clock), it is set again
    subscription_open(&w).await;
    let sets = || w.omm.view().requests("SetDECTSubscriptionMode").count();
    let before = sets();
    // past the Wildcard timeout (3 min), within the OMM's idle limit
    w.omm.advance(Duration::from_secs(4 * 60));
    let t0 = Instant::now();
    while sets() == before || !matches!(w.omm.view().mode, omm_axi_sim::Mode::Wildcard { .. }) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the expired mode was not set again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handset_held_by_a_foreign_omm_user_is_never_taken() {
    let w = World::new().await;
    let known = "03587 0412396 2";
    let ppn = w.omm.seed_device(known);
    let uid = w.omm.seed_user(&[("num", "3000"), ("name", "Reception")]);
    w.omm.seed_relation(ppn, uid);
    let run = w.start_with(settings(&w, Duration::from_millis(200))).await;
    let mut kiosk = Extension::new("2002", "Kiosk", Kind::dect());
    kiosk.handset = Some(Handset {
        ipei: known.into(),
        uak: "FA05689957F199E95B1FE44621BFD6EE".into(),
    });
    w.guru3.save(kiosk).unwrap();
    w.drained(Duration::from_secs(30)).await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 1, "the bind is refused and reported");
    let view = w.omm.view();
    assert_eq!(
        view.device(ppn)
            .and_then(|d| d.get("uid"))
            .map(String::as_str),
        Some(uid.to_string().as_str()),
        "the foreign user keeps its handset"
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_to_listen_off_loopback_without_a_key() {
    let w = World::new().await;
    let mut s = settings(&w, Duration::from_secs(1));
    let u = s.unbound.as_mut().unwrap();
    u.config.key = None;
    u.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let Err(err) = hexidian::start(s).await else {
        panic!("started off loopback without a key")
    };
    assert!(err.to_string().contains("without a key"), "{err}");
    // on loopback it may run without one
    let mut s = settings(&w, Duration::from_secs(1));
    s.unbound.as_mut().unwrap().config.key = None;
    hexidian::start(s).await.unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_webhook_connection() {
    use tokio::io::AsyncReadExt;
    let w = World::new().await;
    let run = w.start_with(settings(&w, Duration::from_secs(1))).await;
    let hook = run.webhook_addr().unwrap();
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(tokio::net::TcpStream::connect(hook).await.unwrap());
    }
    // connections past the per-address cap are closed at once (well before the 5 s header
    // timeout closes the others)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for c in &mut conns {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(20), c.read(&mut b)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 8, "32 of 40 stay open");
    drop(conns);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dect_tokens_stay_out_of_fields_any_omm_reader_sees() {
    let w = World::new().await;
    let run = w.start().await;
    w.save_drained(Extension::new("2001", "Kiosk", Kind::dect()))
        .await;
    let token = w
        .guru3
        .extensions()
        .into_iter()
        .find_map(|e| match e.kind {
            Kind::Dect { token, .. } if e.number == "2001" => Some(token),
            _ => None,
        })
        .unwrap();
    assert!(!token.is_empty());
    let view = w.omm.view();
    let (_, user) = view.user_by_num("2001").unwrap();
    assert!(
        user.values().all(|v| !v.contains(&token)),
        "the token is in the OMM user: {user:?}"
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_encryption_follows_guru3_on_the_handset() {
    let w = World::new().await;
    let run = w.start().await;
    let known = "03587 0412396 2";
    let mut kiosk = Extension::new("2002", "Kiosk", Kind::dect());
    if let Kind::Dect { encryption, .. } = &mut kiosk.kind {
        *encryption = true;
    }
    kiosk.handset = Some(Handset {
        ipei: known.into(),
        uak: "FA05689957F199E95B1FE44621BFD6EE".into(),
    });
    w.guru3.save(kiosk).unwrap();
    w.drained(Duration::from_secs(30)).await;
    let encrypt = |w: &World| {
        w.omm
            .view()
            .devices
            .iter()
            .map(|(_, d)| d)
            .find(|d| d.get("ipei").map(String::as_str) == Some(known))
            .and_then(|d| d.get("encrypt").cloned())
    };
    assert_eq!(encrypt(&w).as_deref(), Some("1"));
    w.guru3
        .edit("2002", |e| {
            if let Kind::Dect { encryption, .. } = &mut e.kind {
                *encryption = false;
            }
        })
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    assert_eq!(
        encrypt(&w).as_deref(),
        Some("0"),
        "the change reached the device"
    );
    run.stop().await.unwrap();
}

/// The broker binding a handset and the workflow moving the same handset, at the same time
/// and many times over: the OMM owner serialises them, so both succeed and the handset ends on
/// exactly one of the two users with the relation consistent on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_workflow_moving_one_handset_at_once_leave_one_consistent_relation() {
    use broker_core::model::{Handset as DomainHandset, Secret};
    use broker_core::ports::{DectSystem, DectUser};
    use hexidian::adapters::{OmmDect, OmmHandsets, omm_link};
    use unbound_handsets::ports::Handsets;

    let guru3 = guru3_sim::Guru3Sim::start(guru3_sim::Config::default())
        .await
        .unwrap();
    let omm = omm_axi_sim::Sim::start().await;
    let s = hexidian_demo::sim_settings(&guru3, &omm, hexidian_demo::memory_store()).unwrap();
    let link = omm_link();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let maintain = tokio::spawn(std::sync::Arc::clone(&link).maintain(s.omm.clone(), stop));
    let t0 = Instant::now();
    while !link.is_up() {
        assert!(t0.elapsed() < Duration::from_secs(10), "omm link not up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dect = OmmDect::new(std::sync::Arc::clone(&link));
    let handsets = OmmHandsets::new(std::sync::Arc::clone(&link));
    let n = |s: &str| s.parse::<broker_core::model::Number>().unwrap();
    for number in ["2001", "2002"] {
        dect.upsert_user(DectUser {
            number: n(number),
            name: format!("User {number}"),
            sip_password: Secret::new("pw-0123456789"),
            token: Secret::new("1234"),
            unchanged: false,
        })
        .await
        .unwrap();
    }
    let handset = DomainHandset {
        ipei: hexidian_demo::ipei(4711),
        uak: Secret::new("0123456789ABCDEF0123456789ABCDEF"),
    };
    dect.bind_handset(n("2001"), handset.clone(), false)
        .await
        .unwrap();
    let uid_of = |number: &str| {
        omm.view()
            .users
            .iter()
            .find(|(_, u)| u.get("num").map(String::as_str) == Some(number))
            .map(|(uid, _)| *uid)
    };
    let ppn = omm
        .view()
        .devices
        .iter()
        .find(|(_, d)| d.get("uid").and_then(|u| u.parse::<u32>().ok()) == uid_of("2001"))
        .map(|(p, _)| *p)
        .expect("the handset is bound to 2001");
    for i in 0..40u32 {
        // the handset on a temporary user, as the workflow leaves an unbound one
        for number in ["2001", "2002"] {
            dect.release_handset(n(number)).await.unwrap();
        }
        let temp = n(&format!("0100{i:04}"));
        handsets
            .give_temp(ppn, temp, Secret::new("temp-password"))
            .await
            .unwrap();
        let (bound, moved) = tokio::join!(
            dect.bind_handset(n("2001"), handset.clone(), false),
            handsets.move_to(ppn, n("2002")),
        );
        bound.unwrap_or_else(|e| panic!("round {i}: the broker's bind failed: {}", e.report()));
        moved.unwrap_or_else(|e| panic!("round {i}: the workflow's move failed: {}", e.report()));
        let v = omm.view();
        let on = v.device(ppn).unwrap()["uid"].parse::<u32>().unwrap();
        let (a, b) = (uid_of("2001").unwrap(), uid_of("2002").unwrap());
        assert!(on == a || on == b, "round {i}: handset on uid {on}");
        for (uid, user) in &v.users {
            let user_ppn = user.get("ppn").map_or("0", String::as_str);
            if *uid == on {
                assert_eq!(user_ppn, ppn.to_string(), "round {i}: holder's side");
            } else {
                assert_ne!(
                    user_ppn,
                    ppn.to_string(),
                    "round {i}: uid {uid} still holds it"
                );
            }
        }
    }
    stop_tx.send(true).unwrap();
    maintain.await.unwrap();
}

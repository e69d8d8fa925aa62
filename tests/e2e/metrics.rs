//! `/metrics` during a scenario: every family moves as the scenario says.

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind};

use crate::{World, http_get, sample};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {body}"
    );
    body
}

/// Scrapes until `f` holds (at most `limit`); the last scrape.
async fn until(
    addr: std::net::SocketAddr,
    limit: Duration,
    what: &str,
    f: impl Fn(&str) -> bool,
) -> String {
    let t0 = Instant::now();
    loop {
        let text = scrape(addr).await;
        if f(&text) {
            return text;
        }
        assert!(t0.elapsed() < limit, "{what} never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_edits_an_omm_outage_and_a_dead_letter() {
    let w = World::new().await;
    let run = w.start().await;
    let admin = run.admin_addr().unwrap();
    let text = until(admin, Duration::from_secs(30), "the links", |t| {
        sample(t, "hexidian_omm_link_up") == Some(1.0)
            && sample(t, "hexidian_guru3_websocket_up") == Some(1.0)
            && sample(t, "hexidian_stalled").is_some()
    })
    .await;
    assert!(
        text.contains("hexidian_build_info{version=\""),
        "build info: {text}"
    );
    let sessions = sample(&text, "hexidian_omm_sessions_total").unwrap();
    assert!(sample(&text, "hexidian_guru3_websocket_connects_total") >= Some(1.0));
    let fetches = sample(&text, "hexidian_guru3_fetches_total").unwrap();
    assert_eq!(sample(&text, "hexidian_stalled"), Some(0.0));

    // edits: done counts what the journal holds as done
    w.save_drained(Extension::new("2001", "First", Kind::dect()))
        .await;
    w.save_drained(Extension::new("2002", "Second", Kind::sip()))
        .await;
    let (done, _, _) = w.journal().await;
    assert!(done >= 2);
    let text = scrape(admin).await;
    assert!(sample(&text, "hexidian_guru3_fetches_total") > Some(fetches));
    assert!(sample(&text, "hexidian_guru3_fetch_duration_seconds_count") > Some(fetches));
    assert!(sample(&text, "hexidian_omm_request_duration_seconds_count") > Some(0.0));
    assert!(sample(&text, "hexidian_omm_requests_in_flight").is_some_and(|v| v >= 0.0));
    until(admin, Duration::from_secs(5), "the done count", |t| {
        sample(t, "hexidian_messages_total{outcome=\"done\"}") == Some(done as f64)
    })
    .await;

    // the OMM goes away: the link, the stall and the backlog show it
    w.omm.faults(|f| f.refuse_tls = true);
    w.omm.drop_connections();
    w.guru3
        .save(Extension::new("2001", "During", Kind::dect()))
        .unwrap();
    let text = until(admin, Duration::from_secs(30), "the stall", |t| {
        sample(t, "hexidian_stalled") == Some(1.0)
            && sample(t, "hexidian_omm_link_up") == Some(0.0)
            && sample(t, "hexidian_backlog") >= Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, "hexidian_stall_refused"), Some(0.0));
    assert!(
        text.contains("hexidian_stall_info{reason=\""),
        "the stall's reason: {text}"
    );
    w.omm.faults(|f| f.refuse_tls = false);
    w.drained(Duration::from_secs(60)).await;
    let text = until(
        admin,
        Duration::from_secs(30),
        "the end of the stall",
        |t| {
            sample(t, "hexidian_stalled") == Some(0.0)
                && sample(t, "hexidian_omm_link_up") == Some(1.0)
        },
    )
    .await;
    assert!(sample(&text, "hexidian_omm_sessions_total").unwrap() > sessions);
    assert_eq!(sample(&text, "hexidian_backlog"), Some(0.0));

    // GURU3's websocket drops: it comes back, and the reconnect is counted
    let connects = sample(&text, "hexidian_guru3_websocket_connects_total").unwrap();
    w.guru3.drop_websockets();
    until(
        admin,
        Duration::from_secs(30),
        "the websocket's reconnect",
        |t| {
            sample(t, "hexidian_guru3_websocket_connects_total") > Some(connects)
                && sample(t, "hexidian_guru3_websocket_up") == Some(1.0)
        },
    )
    .await;

    // a message that cannot be understood is a dead letter, counted once
    w.guru3.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "2003", "type": "SIP"}),
    );
    w.drained(Duration::from_secs(30)).await;
    let (done, ignored, dead) = w.journal().await;
    assert_eq!(dead, 1);
    let text = until(admin, Duration::from_secs(5), "the dead letter", |t| {
        sample(t, "hexidian_messages_total{outcome=\"dead\"}") == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, "hexidian_dead_letters"), Some(1.0));
    assert_eq!(
        sample(&text, "hexidian_messages_total{outcome=\"done\"}"),
        Some(done as f64)
    );
    assert_eq!(
        sample(&text, "hexidian_messages_total{outcome=\"ignored\"}"),
        Some(ignored as f64)
    );
    // and by type: the edits were UPDATE_EXTENSIONs, and so was the one that died
    assert!(
        sample(
            &text,
            "hexidian_messages_by_type_total{type=\"UPDATE_EXTENSION\",outcome=\"dead\"}"
        ) == Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "hexidian_messages_by_type_total{type=\"UPDATE_EXTENSION\",outcome=\"done\"}"
        )
        .is_some_and(|v| v >= 3.0),
        "{text}"
    );
    // the steps' latencies: every round, PBX transaction, state commit and ack is observed
    for family in [
        "hexidian_batch_duration_seconds",
        "hexidian_pbx_transaction_duration_seconds",
        "hexidian_state_commit_duration_seconds",
        "hexidian_ack_duration_seconds",
    ] {
        let count = sample(&text, &format!("{family}_count")).unwrap_or(0.0);
        let inf = sample(&text, &format!("{family}_bucket{{le=\"+Inf\"}}"));
        assert!(count >= 1.0, "{family}: {text}");
        assert_eq!(
            inf,
            Some(count),
            "{family}: the +Inf bucket holds every observation"
        );
    }
    // no secret of the run is exposed
    assert!(!text.contains(w.guru3.api_key().split('$').nth(1).unwrap()));
    run.stop().await.unwrap();
    // after a restart the counters start afresh, the journal's dead letters are still there
    let run = w.start().await;
    let text = until(
        run.admin_addr().unwrap(),
        Duration::from_secs(30),
        "the broker after the restart",
        |t| sample(t, "hexidian_dead_letters").is_some(),
    )
    .await;
    assert_eq!(sample(&text, "hexidian_dead_letters"), Some(1.0));
    assert_eq!(
        sample(&text, "hexidian_messages_total{outcome=\"dead\"}"),
        Some(0.0)
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_wants_its_token_and_never_listens_off_loopback_without_one() {
    let w = World::new().await;
    // off loopback without a token: refused before anything starts
    let mut s = w.settings();
    s.admin = Some(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let err = hexidian::start(s).await.unwrap_err().to_string();
    assert!(err.contains("[admin]") && err.contains("token"), "{err}");
    // with a token, every path but /healthz asks for it
    let mut s = w.settings();
    s.admin_token = Some(broker_core::model::Secret::new("admin-t0ken"));
    let run = w.start_with(s).await;
    let admin = run.admin_addr().unwrap();
    let get = |path: &'static str, auth: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        hexidian_e2e::http(admin, "GET", path, &headers, "").await
    };
    assert_eq!(get("/healthz", None).await.0, 200);
    // the page holds no data: it loads without the token and asks for it
    let (status, page) = get("/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Admin token"), "{page}");
    assert_eq!(
        get("/events", None).await.0,
        401,
        "the stream without a token"
    );
    for path in ["/readyz", "/metrics", "/extensions?q=20"] {
        assert_eq!(get(path, None).await.0, 401, "{path} without a token");
        assert_eq!(
            get(path, Some("Bearer wrong")).await.0,
            401,
            "{path} with a wrong token"
        );
        assert_ne!(
            get(path, Some("Bearer admin-t0ken")).await.0,
            401,
            "{path} with the token"
        );
    }
    let (_, text) = get("/metrics", Some("Bearer admin-t0ken")).await;
    assert!(!text.contains("admin-t0ken"), "the token is never shown");
    run.stop().await.unwrap();
}

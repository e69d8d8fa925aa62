//! hexidian end to end, measured: initial provisioning and a full resync of 10,000 extensions
//! (70 % DECT, a third of them with a known handset, 25 % SIP, 5 % groups) through guru3-sim,
//! omm-axi-sim (TLS) and a throwaway PostgreSQL until every message is acked; then, on a fresh
//! instance at production defaults (examples/hexidian.toml), the latency of single edits from
//! GURU3's save to the ack and the GURU3 requests each costs; and the process's peak RSS
//! (broker and both simulators share the process; PostgreSQL is separate).
//!
//! Then the unbound-handset workflow: subscribe → temporary user attached, and 1,000 webhook
//! calls through the whole validation.
//!
//! `cargo bench -p hexidian-e2e --bench resync [-- <extensions>]`
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Guru3Sim, Kind};
use hexidian::StoreSettings;

async fn drained(sim: &Guru3Sim) {
    while sim.pending_count() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn bench(n: usize) {
    hexidian_testkit::init_tracing();
    let guru3 = Guru3Sim::start(guru3_sim::Config::default()).await.unwrap();
    let omm = omm_axi_sim::Sim::start().await;
    let db = hexidian_testkit::pg::TestDb::new().await;
    let ddl = hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql");
    db.connect()
        .await
        .batch_execute(&std::fs::read_to_string(ddl).unwrap())
        .await
        .unwrap();
    // the documented set-up: the shipped roles file, hexidian as its own role
    db.run_as_superuser_alone(&hexidian_e2e::roles_sql())
        .await
        .unwrap();
    let pg = asterisk_realtime::Config::new(&db.url_as(hexidian_e2e::HEXIDIAN_ROLE))
        .unwrap()
        .routing_reader(Some(hexidian_e2e::ASTERISK_ROLE.into()));
    // production defaults (examples/hexidian.toml), as `hexidian run` configures them
    let production =
        hexidian_demo::sim_settings(&guru3, &omm, StoreSettings::Postgres(Box::new(pg))).unwrap();
    let mut settings = production.clone();
    // GURU3 sends no websocket frame for a resync window; a short poll makes this phase
    // measure processing, not the 30 s poll interval
    settings.feed = settings.feed.poll_interval(Duration::from_millis(50)); // override: see above
    let (dect, sip, groups) = hexidian_demo::seed(&guru3, n).unwrap();
    let run = hexidian::start(settings).await.unwrap();

    let t0 = Instant::now();
    drained(&guru3).await;
    let initial = t0.elapsed();
    println!(
        "initial provisioning: {n} extensions ({dect} DECT, {sip} SIP, {groups} groups, 4 others), {} messages: {:.2} s",
        guru3.queue().len(),
        initial.as_secs_f64()
    );

    let ids = guru3.resync();
    let t0 = Instant::now();
    drained(&guru3).await;
    let resync = t0.elapsed();
    println!(
        "full resync: {} messages until all acked: {:.2} s ({:.0} msgs/s)",
        ids.len(),
        resync.as_secs_f64(),
        ids.len() as f64 / resync.as_secs_f64()
    );
    let owned = omm
        .view()
        .users
        .iter()
        .filter(|(_, a)| {
            a.get("hierarchy1").map(String::as_str) == Some(hexidian::adapters::OWNER_TAG)
        })
        .count();
    assert_eq!(owned, dect, "every DECT extension has its OMM user");

    // single edits at production defaults: a fresh instance configured as `hexidian run`
    run.stop().await.unwrap();
    let run = hexidian::start(production).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (gets0, posts0) = guru3.request_counts();
    // single edits, one at a time, from GURU3's save to the ack
    let mut samples = Vec::new();
    for i in 0..200 {
        let kind = if i % 2 == 0 {
            Kind::sip()
        } else {
            Kind::dect()
        };
        let t0 = Instant::now();
        guru3
            .save(Extension::new(&format!("{}", 90000 + i), "Latency", kind))
            .unwrap();
        drained(&guru3).await;
        samples.push(t0.elapsed());
        // like a person: the next save comes a moment later
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // let late triggers (frames, re-polls) show up in the counts
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (gets, posts) = guru3.request_counts();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "single edit at production defaults (save → websocket frame → fetch → PBX + OMM → ack), 200 edits: p50 {:.1} ms, p99 {:.1} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!(
        "GURU3 requests per edit: {:.2} GET + {:.2} POST",
        (gets - gets0) as f64 / 200.0,
        (posts - posts0) as f64 / 200.0
    );
    // what a Prometheus scrape costs at this size (it reads no journal: the same at any size)
    let admin = run.admin_addr().unwrap();
    let mut scrapes = Vec::new();
    let mut size = 0;
    for _ in 0..50 {
        let t0 = Instant::now();
        let (status, text) = hexidian_e2e::http_get(admin, "/metrics").await;
        scrapes.push(t0.elapsed());
        assert_eq!(status, 200);
        size = text.len();
    }
    scrapes.sort();
    println!(
        "/metrics at {n} extensions: {} bytes, scrape p50 {:.2} ms, max {:.2} ms (50 scrapes)",
        size,
        scrapes[25].as_secs_f64() * 1e3,
        scrapes[49].as_secs_f64() * 1e3
    );
    println!("peak RSS of broker + simulators: {:.0} MiB", peak_rss_mib());
    run.stop().await.unwrap();
}

/// Unbound handsets: subscribe → temporary user attached, and the webhook's latency.
async fn unbound() {
    let guru3 = Guru3Sim::start(guru3_sim::Config::default()).await.unwrap();
    let omm = omm_axi_sim::Sim::start().await;
    for i in 0..20 {
        guru3
            .save(Extension::new(
                &format!("{}", 3000 + i),
                "Kiosk",
                Kind::dect(),
            ))
            .unwrap();
    }
    let mut settings =
        hexidian_demo::sim_settings(&guru3, &omm, hexidian_demo::memory_store()).unwrap();
    if let Some(u) = settings.unbound.as_mut() {
        u.config.subscription_mode = Some("Wildcard".into());
        // the bench measures the validation path, not the rate limits
        u.config.per_caller_per_min = 100_000; // override: see above
        u.config.global_per_s = 100_000; // override: see above
        u.config.per_peer_per_s = 100_000; // override: see above
    }
    let run = hexidian::start(settings).await.unwrap();
    drained(&guru3).await;
    while !matches!(omm.view().mode, omm_axi_sim::Mode::Wildcard { .. }) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut attach = Vec::new();
    let mut temp = String::new();
    for i in 0..50u32 {
        let ipei = hexidian_demo::ipei(900_000 + i);
        let t0 = Instant::now();
        let ppn = omm.handset_subscribe(&ipei, "0000").unwrap();
        loop {
            let v = omm.view();
            let uid = v
                .device(ppn)
                .and_then(|d| d.get("uid"))
                .cloned()
                .unwrap_or_default();
            if uid != "0" && !uid.is_empty() {
                temp = v.user(uid.parse().unwrap()).unwrap()["num"].clone();
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        attach.push(t0.elapsed());
    }
    attach.sort();
    let p = |v: &[Duration], q: f64| {
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
    };
    println!(
        "unbound handset subscribes → temporary user attached, 50 handsets: p50 {:.1} ms, p99 {:.1} ms",
        p(&attach, 0.5),
        p(&attach, 0.99)
    );
    // 1,000 token calls through the whole validation (OMM lookups included), without effect
    let hook = run.webhook_addr().unwrap();
    let Kind::Dect { token, .. } = guru3.extension("3000").unwrap().kind else {
        unreachable!("3000 is a DECT extension")
    };
    let body = format!("{{\"callerid\":\"{temp}\",\"token\":\"9955{token}\"}}");
    let mut calls = Vec::new();
    for _ in 0..1000 {
        let t0 = Instant::now();
        let (status, word) = post(hook, &body).await;
        calls.push(t0.elapsed());
        assert_eq!((status, word.as_str()), (200, "OK"));
    }
    calls.sort();
    println!(
        "webhook check calls (HTTP + validation + 2 OMM lookups), 1,000 calls: p50 {:.2} ms, p99 {:.2} ms",
        p(&calls, 0.5),
        p(&calls, 0.99)
    );
    run.stop().await.unwrap();
}

async fn post(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
    let headers = [("Content-Type", "application/json")];
    hexidian_e2e::http(addr, "POST", "/token-call/check", &headers, body).await
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(n));
    rt.block_on(unbound());
}

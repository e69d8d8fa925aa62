//! hexidian at event size, as an operator runs it: the release binary as its own process with
//! `examples/hexidian.toml` (production defaults, only the peers' addresses filled in),
//! against guru3-sim, omm-axi-sim (TLS) and a throwaway PostgreSQL. The simulators run in this
//! process, not in hexidian's; the OMM simulator counts the requests it receives.
//!
//! Prints: the initial load of N extensions (70 % DECT, a third of them with a known handset,
//! 25 % SIP, 5 % groups) until every message is acked and the OMM requests per new DECT
//! extension; a full resync, from GURU3's first answer to its last ack, and the OMM requests
//! it cost; single edits at that size, GURU3 save → ack; hexidian's RSS during the load and
//! 10 s after a restart; the time from the OMM's (and then GURU3's) return after a 30 s outage
//! until an edit held during it is acked.
//!
//! `cargo bench -p hexidian-e2e --bench scale [-- --extensions N] [--hexidian PATH]
//! [--example PATH] [--pg-log-ms MS] [--quick]` (without `--hexidian` the bench builds
//! `target/release/hexidian` first; `--example` fills in another example config, an older
//! build's own; `--pg-log-ms` sums up the PostgreSQL statements slower than MS during the
//! resync, `--quick` stops after the resync).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind};
use hexidian_e2e::World;
use hexidian_e2e::process::{Hexidian, release_binary, write_config, write_config_from};

struct Args {
    extensions: usize,
    hexidian: Option<PathBuf>,
    /// log PostgreSQL statements slower than this during the resync and sum them up
    pg_log_ms: Option<u32>,
    /// stop after the resync
    quick: bool,
    /// the example config to fill in (an older build's own)
    example: Option<PathBuf>,
}

fn args() -> Args {
    let mut out = Args {
        extensions: 10_000,
        hexidian: None,
        pg_log_ms: None,
        quick: false,
        example: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--extensions" => out.extensions = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--hexidian" => out.hexidian = it.next().map(PathBuf::from),
            "--pg-log-ms" => out.pg_log_ms = it.next().and_then(|v| v.parse().ok()),
            "--quick" => out.quick = true,
            "--example" => out.example = it.next().map(PathBuf::from),
            // cargo bench passes `--bench`
            _ => {}
        }
    }
    out
}

/// OMM requests since `from`, by name (keep-alive pings left out).
fn omm_requests(w: &World, from: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in &w.omm.view().received[from..] {
        if r.name != "Ping" {
            *out.entry(r.name.clone()).or_default() += 1;
        }
    }
    out
}

fn omm_mark(w: &World) -> usize {
    w.omm.view().received.len()
}

fn total(m: &BTreeMap<String, usize>) -> usize {
    m.values().sum()
}

fn show(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until GURU3's queue is empty, sampling hexidian's RSS; the peak in MiB.
async fn drained(w: &World, h: &Hexidian, limit: Duration) -> f64 {
    let t0 = Instant::now();
    let mut peak = 0;
    while w.guru3.pending_count() > 0 {
        peak = peak.max(h.rss_kb());
        assert!(
            t0.elapsed() < limit,
            "not drained within {limit:?}; {} pending; log tail:\n{}",
            w.guru3.pending_count(),
            tail(h)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    peak.max(h.rss_kb()) as f64 / 1024.0
}

fn tail(h: &Hexidian) -> String {
    let log = h.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Sums (seconds) and counts of hexidian's phase histograms, from `/metrics`.
async fn phases(admin: std::net::SocketAddr) -> BTreeMap<String, (f64, f64)> {
    let (_, text) = hexidian_e2e::http_get(admin, "/metrics").await;
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if let Some(h) = name.strip_suffix("_sum") {
            out.entry(h.to_owned()).or_default().0 += v;
        } else if let Some(h) = name.strip_suffix("_count") {
            out.entry(h.to_owned()).or_default().1 += v;
        }
    }
    out
}

/// What the phases cost between two scrapes: `name total s (n)`.
fn phase_delta(a: &BTreeMap<String, (f64, f64)>, b: &BTreeMap<String, (f64, f64)>) -> String {
    b.iter()
        .filter_map(|(k, (s, n))| {
            let (s0, n0) = a.get(k).copied().unwrap_or_default();
            (n - n0 > 0.0).then(|| {
                format!(
                    "{} {:.2} s ({})",
                    k.trim_start_matches("hexidian_"),
                    s - s0,
                    n - n0
                )
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Statements in a PostgreSQL log excerpt (`duration: … ms  statement: …`), summed by text.
fn slow_statements(log: &str) {
    let mut by: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.split("duration: ").nth(1) else {
            continue;
        };
        let Some((ms, text)) = rest.split_once(" ms") else {
            continue;
        };
        let Ok(ms) = ms.trim().parse::<f64>() else {
            continue;
        };
        let text = text.trim_start_matches(|c: char| !c.is_alphabetic());
        // `execute s71: INSERT …`: statements prepared per call get new names
        let text = match text.strip_prefix("execute ") {
            Some(rest) => rest.split_once(": ").map_or(rest, |(_, t)| t),
            None => text,
        };
        let text: String = text.chars().take(110).collect();
        let e = by.entry(text).or_default();
        e.0 += 1;
        e.1 += ms;
    }
    let mut all: Vec<_> = by.into_iter().collect();
    all.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    for (text, (n, ms)) in all.iter().take(25) {
        println!("  pg {ms:>9.1} ms {n:>5}×  {text}");
    }
}

/// GURU3 requests since `(gets0, posts0)` and the broker's phases since `before`.
async fn since(
    w: &World,
    admin: std::net::SocketAddr,
    (gets0, posts0): (u64, u64),
    before: &BTreeMap<String, (f64, f64)>,
) {
    let (gets1, posts1) = w.guru3.request_counts();
    println!(
        "  GURU3 requests: {} GET, {} POST; phases: {}",
        gets1 - gets0,
        posts1 - posts0,
        phase_delta(before, &phases(admin).await)
    );
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3
}

/// Waits until the OMM simulator has `n` sessions open (hexidian is connected).
async fn omm_sessions(w: &World, n: usize) {
    let t0 = Instant::now();
    while w.omm.view().open_sessions != n {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "omm session not open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bench(a: Args, bin: PathBuf) {
    let n = a.extensions;
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = match &a.example {
        Some(example) => write_config_from(&w, &dir, example),
        None => write_config(&w, &dir),
    };
    let bin = bin.to_str().unwrap().to_owned();
    let (dect, sip, groups) = hexidian_demo::seed(&w.guru3, n).unwrap();
    let messages = w.guru3.pending_count();
    println!(
        "hexidian {bin}\nevent: {n} extensions ({dect} DECT, a third with a handset; {sip} SIP; {groups} groups; 4 others), {messages} messages"
    );

    // initial load
    let m = omm_mark(&w);
    let t0 = Instant::now();
    let h = Hexidian::spawn(&bin, &w, &config, None);
    let peak = drained(&w, &h, Duration::from_secs(600)).await;
    let initial = t0.elapsed();
    let asked = omm_requests(&w, m);
    println!(
        "initial load: {:.2} s from process start to the last ack; hexidian CPU {:.2} s; RSS peak {peak:.1} MiB",
        initial.as_secs_f64(),
        h.cpu_s()
    );
    let about = |word: &str| -> usize {
        asked
            .iter()
            .filter(|(k, _)| k.contains(word))
            .map(|(_, v)| v)
            .sum()
    };
    let attach = asked.get("SetPP").copied().unwrap_or(0);
    let (users, devices) = (about("PPUser"), about("PPDev") + attach);
    let handsets = dect.div_ceil(3);
    println!(
        "  OMM requests: {} in all ({}); about users {users} = {:.2} per new DECT extension; about handsets {devices} = {:.2} per handset (~{handsets})",
        total(&asked),
        show(&asked),
        users as f64 / dect as f64,
        devices as f64 / handsets as f64,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // a full resync of an unchanged event; GURU3 announces none, so it is found by the next
    // poll: measured from GURU3's first answer after it to the last ack
    let admin = h.admin().await;
    let before = phases(admin).await;
    if let Some(ms) = a.pg_log_ms {
        let set = format!("ALTER SYSTEM SET log_min_duration_statement = {ms}");
        w.sql.batch_execute(&set).await.unwrap();
        w.sql
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
    }
    let log_from = w.db.server().log().len();
    let (gets0, posts0) = w.guru3.request_counts();
    let m = omm_mark(&w);
    let cpu0 = h.cpu_s();
    let ids = w.guru3.resync();
    while w.guru3.request_counts().0 == gets0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    drained(&w, &h, Duration::from_secs(600)).await;
    let resync = t0.elapsed();
    let asked = omm_requests(&w, m);
    // the workflow's periodic refresh of the subscription mode is not the resync's
    let writes: usize = asked
        .iter()
        .filter(|(k, _)| !k.starts_with("Get") && *k != "SetDECTSubscriptionMode")
        .map(|(_, v)| v)
        .sum();
    println!(
        "resync: {} messages processed in {:.2} s after GURU3's first answer; hexidian CPU {:.2} s",
        ids.len(),
        resync.as_secs_f64(),
        h.cpu_s() - cpu0
    );
    println!(
        "  OMM requests: {} ({writes} writes) ({})",
        total(&asked),
        show(&asked)
    );
    since(&w, admin, (gets0, posts0), &before).await;
    if a.pg_log_ms.is_some() {
        let reset = "ALTER SYSTEM RESET log_min_duration_statement";
        w.sql.batch_execute(reset).await.unwrap();
        w.sql
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        slow_statements(&w.db.server().log()[log_from..]);
    }
    // what an operator's `hexidian reconcile` costs at this size (its own OMM session)
    let t0 = Instant::now();
    let out = hexidian_e2e::process::operator(&bin, &w, &["reconcile", "--json"], &config, "warn")
        .output()
        .await
        .unwrap();
    let took = t0.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    println!(
        "reconcile: {:.2} s for {} extensions, {} PBX users, {} OMM users; drift of hexidian's own {}, foreign {}",
        took.as_secs_f64(),
        v["extensions"],
        v["pbx_users"],
        v["omm_users"],
        v["owned_drift"],
        v["foreign"]
    );
    if a.quick {
        h.kill9().await;
        return;
    }

    // single edits at this size: new extensions and changed names, one at a time
    let mut samples = Vec::new();
    let m = omm_mark(&w);
    let before = phases(admin).await;
    let (gets0, posts0) = w.guru3.request_counts();
    for i in 0..200u32 {
        let e = if i % 2 == 0 {
            let kind = if i % 4 == 0 {
                Kind::sip()
            } else {
                Kind::dect()
            };
            Extension::new(&format!("{}", 90000 + i), "Latency", kind)
        } else {
            // DECT extensions of the seed (every 20th from 10006)
            let number = format!("{}", 10006 + 20 * (i as usize % (n / 20).max(1)));
            let mut e = w.guru3.extension(&number).unwrap();
            e.name = format!("Edited {i}");
            e
        };
        let t0 = Instant::now();
        w.guru3.save(e).unwrap();
        drained(&w, &h, Duration::from_secs(60)).await;
        samples.push(t0.elapsed());
        // like a person: the next save comes a moment later
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = omm_requests(&w, m);
    println!(
        "single edits at {n} extensions, GURU3 save → ack, 200 edits (100 new, 100 name changes): p50 {:.1} ms, p99 {:.1} ms; OMM requests {} ({})",
        pct(&mut samples, 0.5),
        pct(&mut samples, 0.99),
        total(&asked),
        show(&asked)
    );
    since(&w, admin, (gets0, posts0), &before).await;

    // a restart: memory after it has read everything again
    h.kill9().await;
    let m = omm_mark(&w);
    let t0 = Instant::now();
    let h = Hexidian::spawn(&bin, &w, &config, None);
    let admin = h.admin().await;
    loop {
        let (status, _) = hexidian_e2e::http_get(admin, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "not ready after a restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = omm_requests(&w, m);
    println!(
        "restart: ready in {:.2} s; RSS 10 s later {:.1} MiB; OMM requests {} ({})",
        ready.as_secs_f64(),
        h.rss_kb() as f64 / 1024.0,
        total(&asked),
        show(&asked)
    );

    // the OMM off for 30 s with an edit held; then back
    omm_sessions(&w, 1).await;
    w.omm.set_listening(false).await;
    let mut e = w.guru3.extension("10006").unwrap();
    e.name = "During the outage".into();
    w.guru3.save(e).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        w.guru3.pending_count() > 0,
        "the edit was acked without the OMM"
    );
    w.omm.set_listening(true).await;
    let t0 = Instant::now();
    drained(&w, &h, Duration::from_secs(120)).await;
    println!(
        "OMM back after a 30 s outage → the held edit acked: {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    // GURU3 off for 30 s (connections refused) with an edit saved meanwhile; then back
    w.guru3.set_listening(false).await;
    let mut e = w.guru3.extension("10007").unwrap();
    e.name = "Saved while GURU3 was off".into();
    w.guru3.save(e).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    w.guru3.set_listening(true).await;
    let t0 = Instant::now();
    drained(&w, &h, Duration::from_secs(120)).await;
    println!(
        "GURU3 back after a 30 s outage → the edit acked: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    h.kill9().await;
}

fn main() {
    let a = args();
    let bin = a.hexidian.clone().unwrap_or_else(release_binary);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(a, bin));
}

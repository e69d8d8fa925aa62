//! Fetch+ack throughput and websocket-frame→page latency against guru3-sim (TLS, loopback).
//!
//! `cargo bench -p guru3-client --bench feed` prints one line per measurement.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::time::{Duration, Instant};

use guru3_client::client::{Client, Config, FeedConfig, feed, tls};
use guru3_sim::{Extension, Guru3Sim, Kind};

fn client(sim: &Guru3Sim, page: u32) -> Client {
    let config = Config::new(&sim.url(), sim.api_key().parse().unwrap())
        .unwrap()
        .tls(tls::with_roots(hexidian_testkit::ca_roots()))
        .max_messages(page);
    Client::new(config).unwrap()
}

async fn throughput(extensions: usize, page: u32) {
    let sim = Guru3Sim::start(guru3_sim::Config::default()).await.unwrap();
    for i in 0..extensions {
        let kind = if i % 4 == 0 {
            Kind::sip()
        } else {
            Kind::dect()
        };
        sim.save(Extension::new(
            &format!("{:05}", 10000 + i),
            "Bench User",
            kind,
        ))
        .unwrap();
    }
    sim.resync();
    let total = sim.pending().len();
    let (mut feed, watcher) = feed(client(&sim, page), FeedConfig::default());
    tokio::spawn(watcher.run());
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let page = feed.next_page().await.unwrap();
        for m in &page.messages {
            m.decode().unwrap();
            feed.ack(m.id);
            done += 1;
        }
    }
    feed.flush_acks().await.unwrap();
    let elapsed = start.elapsed();
    assert!(sim.pending().is_empty());
    let (gets, posts) = sim.request_counts();
    println!(
        "fetch+decode+ack, {total} messages, page {page:<4} {:>10.0} msgs/s  ({:.2} s, {gets} GETs, {posts} POSTs)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

async fn latency(debounce: Duration, n: usize) {
    let sim = Guru3Sim::start(guru3_sim::Config::default()).await.unwrap();
    let cfg = FeedConfig::default()
        .poll_interval(Duration::from_secs(3600)) // override: only the websocket frame may wake the fetch this measures
        .debounce(debounce); // override: the bench measures each debounce it is given
    let (mut feed, watcher) = feed(client(&sim, 200), cfg);
    tokio::spawn(watcher.run());
    sim.wait_for("websocket", |s| s.websocket_clients() == 1)
        .await;
    // the start-up fetch
    let _ = tokio::time::timeout(Duration::from_millis(200), feed.next_page()).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        sim.save(Extension::new(
            &format!("{:05}", 20000 + i),
            "x",
            Kind::sip(),
        ))
        .unwrap();
        let page = feed.next_page().await.unwrap();
        samples.push(t0.elapsed());
        for m in &page.messages {
            feed.ack(m.id);
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "frame→page latency, debounce {:>4} ms, {n} events  p50 {:>7.2} ms  p99 {:>7.2} ms",
        debounce.as_millis(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        throughput(10_000, 100).await;
        throughput(10_000, 500).await;
        latency(Duration::ZERO, 200).await;
        latency(Duration::from_millis(250), 20).await;
    });
}

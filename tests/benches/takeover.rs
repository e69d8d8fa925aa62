//! Take-over time: two `hexidian run` processes (the release binary, `examples/hexidian.toml`
//! with the peers filled in) on one throwaway PostgreSQL with guru3-sim and omm-axi-sim. Each
//! round kills the active (`kill -9`) while a GURU3 edit waits and measures kill → the standby
//! is active (its `/readyz`) and kill → the edit is applied (the OMM user carries the new
//! name); the killed one comes back as the next standby.
//!
//! `cargo bench -p hexidian-e2e --bench takeover [-- --rounds N] [--extensions N]
//! [--hexidian PATH]` (defaults: 10 rounds, 300 extensions; without `--hexidian` the release
//! binary is built first).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::path::PathBuf;
use std::time::{Duration, Instant};

use guru3_sim::Kind;
use hexidian_e2e::process::{Hexidian, release_binary, write_config};
use hexidian_e2e::{World, http_get};

struct Args {
    rounds: usize,
    extensions: usize,
    hexidian: Option<PathBuf>,
}

fn args() -> Args {
    let mut out = Args {
        rounds: 10,
        extensions: 300,
        hexidian: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => out.rounds = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--extensions" => out.extensions = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--hexidian" => out.hexidian = it.next().map(PathBuf::from),
            // cargo bench passes `--bench`
            _ => {}
        }
    }
    out
}

/// The instance's role (`/readyz` → `ha.role`).
async fn role(admin: std::net::SocketAddr) -> String {
    let (_, body) = http_get(admin, "/readyz").await;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["ha"]["role"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn until_role(h: &Hexidian, admin: std::net::SocketAddr, want: &str) {
    let t0 = Instant::now();
    while role(admin).await != want {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no {want}; its log:\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let bin = a.hexidian.clone().unwrap_or_else(release_binary);
    let bin = bin.to_str().unwrap().to_owned();
    let w = World::new().await;
    hexidian_demo::seed(&w.guru3, a.extensions).unwrap();
    let dir = std::env::temp_dir().join(format!("hexidian-takeover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let mut active = Hexidian::spawn(&bin, &w, &config, None);
    let admin = active.admin().await;
    until_role(&active, admin, "active").await;
    w.drained(Duration::from_secs(600)).await;
    let mut standby = Hexidian::spawn(&bin, &w, &config, None);
    let mut standby_admin = standby.admin().await;
    until_role(&standby, standby_admin, "standby").await;
    let dect: Vec<String> = w
        .guru3
        .extensions()
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::Dect { .. }))
        .map(|e| e.number)
        .collect();
    println!("round  kill→active  kill→applied");
    let (mut to_active, mut to_applied) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let number = &dect[round % dect.len()];
        let name = format!("Take-over round {round}");
        let t0 = Instant::now();
        active.kill9().await;
        let mut e = w.guru3.extension(number).unwrap();
        e.name = name.clone();
        w.guru3.save(e).unwrap();
        until_role(&standby, standby_admin, "active").await;
        let t_active = t0.elapsed();
        loop {
            let applied = w
                .omm
                .view()
                .user_by_num(number)
                .is_some_and(|(_, u)| u.get("name") == Some(&name));
            if applied {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "round {round}: not applied"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let t_applied = t0.elapsed();
        println!("{round:>5}  {t_active:>11.2?}  {t_applied:>12.2?}");
        to_active.push(t_active);
        to_applied.push(t_applied);
        // the killed one comes back as the standby of the new active
        active = standby;
        standby = Hexidian::spawn(&bin, &w, &config, None);
        standby_admin = standby.admin().await;
        until_role(&standby, standby_admin, "standby").await;
    }
    w.drained(Duration::from_secs(600)).await;
    w.assert_converged().await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 0);
    println!(
        "{} rounds: kill→active median {:.2?} (max {:.2?}), kill→applied median {:.2?} (max {:.2?}); converged, 0 dead",
        a.rounds,
        median(&mut to_active),
        to_active.iter().max().unwrap(),
        median(&mut to_applied),
        to_applied.iter().max().unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The long run: hexidian as an operator runs it (the release binary as its own process,
//! `examples/hexidian.toml` with the peers filled in) against guru3-sim, omm-axi-sim (TLS) and
//! a throwaway PostgreSQL, driven at 50 GURU3 changes a second for N minutes with faults on,
//! and handsets going round: unsubscribed in GURU3 (a temporary number), bound back by token
//! call (ASSIGN_HANDSET).
//!
//! Faults all along: the OMM cuts each session after 5,000 requests, GURU3 answers 2 % of
//! requests with 503, drops the websocket every minute and loses an ack every 30 s.
//!
//! Prints hexidian's RSS every minute; at the end, once everything is applied, the lost count
//! (messages never acked, dead letters, and the convergence check of OMM, PBX and mirror
//! against GURU3). Exits non-zero on any loss, or when the RSS at the end is more than 10 %
//! above the RSS after the warm-up (the first fifth of the run, at least 2 minutes).
//!
//! `cargo bench -p hexidian-e2e --bench soak [-- --minutes N] [--rate PER_S]
//! [--extensions N] [--hexidian PATH]` (defaults: 30 minutes, 50/s, 2,000 extensions; without
//! `--hexidian` the release binary is built first).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind, Member};
use hexidian_e2e::process::{Hexidian, WEBHOOK_KEY, release_binary, write_config};
use hexidian_e2e::{Rng, World};

struct Args {
    minutes: u64,
    rate: u64,
    extensions: usize,
    hexidian: Option<PathBuf>,
}

fn args() -> Args {
    let mut out = Args {
        minutes: 30,
        rate: 50,
        extensions: 2000,
        hexidian: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => out.minutes = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--rate" => out.rate = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--extensions" => out.extensions = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--hexidian" => out.hexidian = it.next().map(PathBuf::from),
            // cargo bench passes `--bench`
            _ => {}
        }
    }
    out
}

fn token_of(w: &World, number: &str) -> Option<String> {
    match w.guru3.extension(number)?.kind {
        Kind::Dect { token, .. } => Some(token),
        _ => None,
    }
}

/// The temporary number of the handset `ipei`, if it has one now.
fn temp_number_of(w: &World, ipei: &str) -> Option<String> {
    let v = w.omm.view();
    let (_, d) = v
        .devices
        .iter()
        .find(|(_, d)| d.get("ipei").map(String::as_str) == Some(ipei))?;
    let u = v.user(d.get("uid")?.parse().ok()?)?;
    (u.get("hierarchy2").map(String::as_str) == Some(hexidian::adapters::TEMP_TAG))
        .then(|| u.get("num").cloned())
        .flatten()
}

/// A handset on its way round: unsubscribed from `number` in GURU3, to be bound back.
struct Away {
    number: String,
    ipei: String,
    since: Instant,
    /// its token call was answered OK: the bind and its ASSIGN_HANDSET are on their way
    called: bool,
}

/// Whether GURU3 links the handset to its extension again (the bind is complete).
fn back(w: &World, a: &Away) -> bool {
    w.guru3
        .extension(&a.number)
        .and_then(|e| e.handset)
        .is_some_and(|h| h.ipei == a.ipei)
}

/// One round of the handsets that are away: those GURU3 links again go back to `home`; the
/// oldest one with a temporary number that has not called yet dials its extension's token.
/// The token calls made and answered OK.
async fn round_trip(
    w: &World,
    hook: std::net::SocketAddr,
    away: &mut Vec<Away>,
    home: &mut Vec<(String, String)>,
    min_age: Duration,
) -> (u64, u64) {
    let (mut calls, mut ok) = (0, 0);
    let mut i = 0;
    while i < away.len() {
        if away[i].called && back(w, &away[i]) {
            let a = away.remove(i);
            home.push((a.number, a.ipei));
        } else {
            i += 1;
        }
    }
    let now = Instant::now();
    if let Some(a) = away
        .iter_mut()
        .find(|a| !a.called && now.duration_since(a.since) > min_age)
        && let (Some(temp), Some(token)) = (temp_number_of(w, &a.ipei), token_of(w, &a.number))
    {
        calls += 1;
        if token_call(hook, &temp, &token).await == "OK" {
            ok += 1;
            a.called = true;
        }
    }
    (calls, ok)
}

/// The changes a GURU3 event sees, one at a time, on a pool of extensions of its own (so the
/// event keeps its size) and on the seeded ones.
struct Driver {
    rng: Rng,
    /// extensions the soak created and may rename or delete
    pool: VecDeque<String>,
    next_number: u64,
    base: Vec<String>,
    groups: Vec<String>,
    members: Vec<String>,
    target_pool: usize,
    sent: u64,
}

impl Driver {
    fn step(&mut self, w: &World) {
        let roll = self.rng.below(100);
        let r = match roll {
            0..60 => {
                let n = &self.base[self.rng.below(self.base.len() as u64) as usize];
                let k = self.sent;
                w.guru3.edit(n, |e| e.name = format!("Soak {k} <&>"))
            }
            60..80 if self.pool.len() < self.target_pool || roll < 70 => {
                let n = format!("6{:04}", self.next_number % 10_000);
                self.next_number += 1;
                let kind = if self.rng.below(3) == 0 {
                    Kind::sip()
                } else {
                    Kind::dect()
                };
                let r = w.guru3.save(Extension::new(&n, "Soak new", kind));
                if r.is_ok() {
                    self.pool.push_back(n);
                }
                r
            }
            60..80 => match self.pool.pop_front() {
                Some(n) => w.guru3.delete(&n),
                None => Ok(Vec::new()),
            },
            80..90 => match self.pool.pop_front() {
                Some(old) => {
                    let new = format!("6{:04}", self.next_number % 10_000);
                    self.next_number += 1;
                    let r = w.guru3.rename(&old, &new);
                    self.pool.push_back(if r.is_ok() { new } else { old });
                    r
                }
                None => Ok(Vec::new()),
            },
            _ => {
                let g = &self.groups[self.rng.below(self.groups.len() as u64) as usize];
                let mut m: BTreeSet<String> = BTreeSet::new();
                for _ in 0..1 + self.rng.below(4) {
                    m.insert(
                        self.members[self.rng.below(self.members.len() as u64) as usize].clone(),
                    );
                }
                let list = m
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Member::new(n, 5 * i as u32))
                    .collect();
                w.guru3.set_members(g, list)
            }
        };
        // a change GURU3 refuses (a number taken meanwhile) is a form error, not a message
        let _ = r;
        self.sent += 1;
    }
}

/// One token call: hexidian's answer (empty when it did not answer).
async fn token_call(hook: std::net::SocketAddr, caller: &str, token: &str) -> String {
    let body = serde_json::json!({"callerid": caller, "token": token}).to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Hexidian-Key", WEBHOOK_KEY),
    ];
    let (_, answer) = hexidian_e2e::http(hook, "POST", "/token-call", &headers, &body).await;
    answer.trim().to_owned()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = args();
    let bin = a.hexidian.clone().unwrap_or_else(release_binary);
    let w = World::new().await;
    // the simulator keeps no record of requests: the log would grow with every one
    w.omm.knobs(|k| k.log_requests = false);
    hexidian_demo::seed(&w.guru3, a.extensions).unwrap();
    // the handsets the seeded extensions name, subscribed: bound by the initial load
    w.omm.seed_event(a.extensions);
    let dir = std::env::temp_dir().join(format!("hexidian-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let h = Hexidian::spawn(bin.to_str().unwrap(), &w, &config, None);
    let hook = h.webhook().await;
    let t_load = Instant::now();
    while w.guru3.pending_count() > 0 {
        assert!(t_load.elapsed() < Duration::from_secs(600), "initial load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "soak: {} extensions loaded in {:.1} s; {} min at {}/s with faults; RSS {:.1} MiB",
        w.guru3.extensions().len(),
        t_load.elapsed().as_secs_f64(),
        a.minutes,
        a.rate,
        h.rss_kb() as f64 / 1024.0
    );

    let exts = w.guru3.extensions();
    let of = |f: fn(&Kind) -> bool| -> Vec<String> {
        exts.iter()
            .filter(|e| f(&e.kind))
            .map(|e| e.number.clone())
            .collect()
    };
    let mut with_handset: Vec<(String, String)> = exts
        .iter()
        .filter_map(|e| Some((e.number.clone(), e.handset.as_ref()?.ipei.clone())))
        .collect();
    let mut d = Driver {
        rng: Rng::seeded(),
        pool: VecDeque::new(),
        next_number: 0,
        base: exts.iter().map(|e| e.number.clone()).collect(),
        groups: of(|k| matches!(k, Kind::Group { .. })),
        members: of(|k| matches!(k, Kind::Dect { .. } | Kind::Sip { .. })),
        target_pool: 200,
        sent: 0,
    };

    // faults on
    w.omm.faults(|f| f.drop_after = Some(5000));
    w.guru3.fail_ratio(2, d.rng.below(u64::MAX));

    let t0 = Instant::now();
    let run = Duration::from_secs(a.minutes * 60);
    let warmup = Duration::from_secs((a.minutes * 60 / 5).max(120));
    let tick = Duration::from_micros(1_000_000 / a.rate.max(1));
    let mut next = Instant::now();
    let mut next_minute = t0 + Duration::from_secs(60);
    let mut next_ws = t0 + Duration::from_secs(60);
    let mut next_lost_ack = t0 + Duration::from_secs(30);
    let mut next_cycle = t0 + Duration::from_secs(2);
    let mut away: Vec<Away> = Vec::new();
    let (mut binds, mut unsubscribed, mut calls) = (0u64, 0u64, 0u64);
    let mut samples: Vec<(u64, f64)> = Vec::new();
    let mut baseline: Option<f64> = None;
    while t0.elapsed() < run {
        let now = Instant::now();
        if now >= next {
            d.step(&w);
            next += tick;
        }
        if now >= next_ws {
            w.guru3.drop_websockets();
            next_ws += Duration::from_secs(60);
        }
        if now >= next_lost_ack {
            w.guru3.lose_next_acks(1);
            next_lost_ack += Duration::from_secs(30);
        }
        if now >= next_cycle {
            next_cycle += Duration::from_secs(2);
            // one handset leaves its extension in GURU3 …
            if !with_handset.is_empty() {
                let i = d.rng.below(with_handset.len() as u64) as usize;
                let (number, ipei) = with_handset.swap_remove(i);
                if w.guru3.unsubscribe(&number).is_ok() {
                    unsubscribed += 1;
                    away.push(Away {
                        number,
                        ipei,
                        since: now,
                        called: false,
                    });
                }
            }
            // … and one that left earlier dials its extension's token from its temporary
            // number; it is home again once GURU3 links it (ASSIGN_HANDSET)
            let (c, ok) = round_trip(
                &w,
                hook,
                &mut away,
                &mut with_handset,
                Duration::from_secs(5),
            )
            .await;
            calls += c;
            binds += ok;
        }
        if now >= next_minute {
            next_minute += Duration::from_secs(60);
            let minute = t0.elapsed().as_secs() / 60;
            let rss = h.rss_kb() as f64 / 1024.0;
            samples.push((minute, rss));
            if baseline.is_none() && t0.elapsed() >= warmup {
                baseline = Some(rss);
            }
            println!(
                "minute {minute:>3}: RSS {rss:6.1} MiB; changes {}, pending {}, handsets unsubscribed {unsubscribed}, bound back {binds} ({calls} token calls), away {}, GURU3 503s {}",
                d.sent,
                w.guru3.pending_count(),
                away.len(),
                w.guru3.failed_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // the end: faults off, the away handsets bound back, everything applied
    w.guru3.clear_faults();
    w.omm.faults(|f| f.drop_after = None);
    let t_end = Instant::now();
    while !away.is_empty() {
        assert!(
            t_end.elapsed() < Duration::from_secs(300),
            "handsets not bound back: {:?}; hexidian's log:\n{}",
            away.iter()
                .map(|a| format!(
                    "{} of {} (called {}, temporary {:?})",
                    a.ipei,
                    a.number,
                    a.called,
                    temp_number_of(&w, &a.ipei)
                ))
                .collect::<Vec<_>>(),
            h.log()
        );
        let (c, ok) = round_trip(&w, hook, &mut away, &mut with_handset, Duration::ZERO).await;
        calls += c;
        binds += ok;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("end: every handset bound back");
    // the binds' ASSIGN_HANDSETs reach GURU3 and the UPDATE_EXTENSIONs they cause are applied
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut said = Instant::now();
    while w.guru3.pending_count() > 0 && t_end.elapsed() < Duration::from_secs(900) {
        if said.elapsed() > Duration::from_secs(30) {
            said = Instant::now();
            let p = w.guru3.pending();
            println!(
                "end: {} messages pending, the first {:?}",
                p.len(),
                &p[..p.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("end: GURU3's queue drained");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pending = w.guru3.pending_count();
    let (_, _, dead) = w.journal().await;
    let told_nak = w
        .guru3
        .inbound()
        .iter()
        .filter(|r| r.status != "OK")
        .count();
    let final_rss = h.rss_kb() as f64 / 1024.0;
    let lost = pending as i64 + dead + told_nak as i64;
    println!(
        "end: {} changes, {unsubscribed} handsets unsubscribed and {binds} bound back ({calls} token calls); lost {lost} (never acked {pending}, dead letters {dead}, ASSIGN_HANDSET refused {told_nak}); RSS {final_rss:.1} MiB",
        d.sent
    );
    let curve: Vec<String> = samples.iter().map(|(m, r)| format!("{m}:{r:.1}")).collect();
    println!("RSS curve (minute:MiB): {}", curve.join(" "));
    let mut ok = lost == 0;
    if let Some(b) = baseline {
        let growth = (final_rss - b) / b * 100.0;
        println!(
            "RSS after the warm-up ({} min) {b:.1} MiB, at the end {final_rss:.1} MiB: {growth:+.1} %",
            warmup.as_secs() / 60
        );
        ok &= growth <= 10.0;
    } else {
        println!("run shorter than the warm-up: no growth figure");
    }
    // OMM, PBX rows, routing and mirror against GURU3 (panics on a difference)
    w.assert_converged().await;
    println!("converged: OMM, PBX and mirror hold what GURU3 holds");
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

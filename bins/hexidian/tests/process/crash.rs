//! Kill anywhere: the real `hexidian run`, configured from the example config, dies by
//! `kill -9` at random moments and by abort at every crash point of a batch and of a token
//! bind, across a 2,000-message sync, resyncs, GURU3 users' edits and two token binds. Every
//! restart goes on where the last one died; at the end the OMM, the PBX and the mirror hold
//! what GURU3 holds, nothing is dead, every message is acked and GURU3 has been told of
//! exactly the binds that were made.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use broker_core::crash;
use guru3_sim::{Extension, Kind};
use hexidian_e2e::{Rng, World};

use crate::support::{BIN, Hexidian, token_call, write_config};

/// The attributes of the OMM user the handset `ipei` is attached to.
fn holder(w: &World, ipei: &str) -> Option<BTreeMap<String, String>> {
    let v = w.omm.view();
    let (_, d) = v
        .devices
        .iter()
        .find(|(_, d)| d.get("ipei").map(String::as_str) == Some(ipei))?;
    let uid: u32 = d.get("uid")?.parse().ok()?;
    v.user(uid).cloned()
}

/// Subscribes a new handset (retried until the workflow opened subscription) and waits for
/// its temporary number.
async fn subscribe_for_temp(w: &World, c: &Hexidian, ipei: &str) -> String {
    let t0 = Instant::now();
    while w.omm.handset_subscribe(ipei, "0000").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "subscription never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        if let Some(u) = holder(w, ipei) {
            if u.get("hierarchy2").map(String::as_str) == Some(hexidian::adapters::TEMP_TAG) {
                return u["num"].clone();
            }
        }
        // a hang guard, not a speed limit: the restarted process may be in the middle of a
        // 2,000-message resync on a loaded machine
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "no temporary number; hexidian's log:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn token_of(w: &World, number: &str) -> String {
    match w.guru3.extension(number).unwrap().kind {
        Kind::Dect { token, .. } => token,
        other => panic!("{other:?}"),
    }
}

/// An edit a GURU3 user makes while hexidian is down: a rename, a deletion or a hostile name.
fn edit(w: &World, rng: &mut Rng, round: usize) -> &'static str {
    let exts: Vec<Extension> = w
        .guru3
        .extensions()
        .into_iter()
        .filter(|e| e.number.len() == 5)
        .collect();
    let e = exts[rng.below(exts.len() as u64) as usize].clone();
    match rng.below(3) {
        0 => {
            w.guru3.rename(&e.number, &format!("6{round:04}")).unwrap();
            "rename"
        }
        1 => {
            w.guru3.delete(&e.number).unwrap();
            "delete"
        }
        _ => {
            let mut e = e;
            e.name = format!("</name>'; DROP TABLE ps_auths; -- \u{1F4DE} {round}");
            w.guru3.save(e).unwrap();
            "name"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_anywhere_the_real_process_converges_and_reports_exactly_the_binds_made() {
    let w = World::new().await;
    hexidian_demo::seed(&w.guru3, 2000).unwrap();
    for n in ["2001", "2002"] {
        w.guru3
            .save(Extension::new(n, "Kiosk", Kind::dect()))
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("hexidian-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let mut rng = Rng::seeded();
    let mut record: Vec<String> = Vec::new();
    let batch_points = [
        crash::BATCH_FETCHED,
        crash::PBX_COMMITTED,
        crash::OMM_WRITTEN,
        crash::OMM_APPLIED,
        crash::STATE_COMMITTED,
        crash::ACKS_SENDING,
        crash::ACKS_SENT,
    ];
    let sure = batch_points.len();

    // the sync: each batch boundary once for sure, then abort points and kill -9 at random
    let mut resyncs = 0;
    for round in 0..sure + 14 {
        if w.guru3.pending_count() < 300 {
            w.guru3.resync();
            resyncs += 1;
        }
        let edited = edit(&w, &mut rng, round);
        let armed = match round {
            r if r < sure => Some(batch_points[round]),
            _ if rng.below(2) == 0 => Some(batch_points[rng.below(sure as u64) as usize]),
            _ => None,
        };
        match armed {
            Some(point) => {
                // the first rounds stop at the first hit: a sync of ~2,000 messages is only a
                // few pages of 1,000, so a later hit may not come before the queue is empty
                let n = if round < sure { 1 } else { 1 + rng.below(3) };
                let c = Hexidian::spawn(BIN, &w, &config, Some(&format!("{point}:{n}")));
                let hit = c.aborted_at_or_idle(&w, point).await;
                assert!(hit || round >= sure, "{point} not reached in round {round}");
                record.push(format!(
                    "{edited}, {point}:{n} {}",
                    if hit { "aborted" } else { "not reached" }
                ));
            }
            None => {
                let c = Hexidian::spawn(BIN, &w, &config, None);
                let after = 200 + rng.below(2500);
                tokio::time::sleep(Duration::from_millis(after)).await;
                c.kill9().await;
                record.push(format!("{edited}, kill -9 after {after} ms"));
            }
        }
    }

    // a new handset's temporary user: the process dies after its PBX row, then (the restart
    // giving it one again) after its OMM user; at the end the PBX and the OMM hold the same
    // temporary users, no orphan of the first crash
    let ipei0 = hexidian_demo::ipei(90_000);
    let c = Hexidian::spawn(BIN, &w, &config, Some(crash::TEMP_PBX));
    let t0 = Instant::now();
    while w.omm.handset_subscribe(&ipei0, "0000").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "subscription never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.aborted_at(crash::TEMP_PBX, Duration::from_secs(120))
        .await;
    record.push(format!("{}:1 aborted", crash::TEMP_PBX));
    let c = Hexidian::spawn(BIN, &w, &config, Some(crash::TEMP_GIVEN));
    c.aborted_at(crash::TEMP_GIVEN, Duration::from_secs(120))
        .await;
    record.push(format!("{}:1 aborted", crash::TEMP_GIVEN));

    // bind 1 dies at each of its boundaries in turn: the first child while answering the
    // token call, each restart as it takes the bind up where the last one died
    let ipei1 = hexidian_demo::ipei(90_001);
    let c = Hexidian::spawn(BIN, &w, &config, Some(crash::BIND_RECORDED));
    let hook = c.webhook().await;
    let temp1 = subscribe_for_temp(&w, &c, &ipei1).await;
    let answer = token_call(hook, &temp1, &token_of(&w, "2001")).await;
    assert_eq!(answer, None, "the process died before it answered");
    c.aborted_at(crash::BIND_RECORDED, Duration::from_secs(30))
        .await;
    record.push(format!("{}:1 aborted", crash::BIND_RECORDED));
    for point in [crash::BIND_MOVED, crash::BIND_FINISHED, crash::ASSIGN_SENT] {
        let c = Hexidian::spawn(BIN, &w, &config, Some(point));
        c.aborted_at(point, Duration::from_secs(60)).await;
        record.push(format!("{point}:1 aborted"));
    }

    // bind 2 under kill -9 at random moments of its bind delay and outbox round
    let ipei2 = hexidian_demo::ipei(90_002);
    let c = Hexidian::spawn(BIN, &w, &config, None);
    let hook = c.webhook().await;
    let temp2 = subscribe_for_temp(&w, &c, &ipei2).await;
    let t0 = Instant::now();
    let answer = loop {
        // a RETRY while the restarted process is still catching up is an answer too
        match token_call(hook, &temp2, &token_of(&w, "2002")).await {
            Some(a) if a == "RETRY" && t0.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    assert_eq!(answer.as_deref(), Some("OK"));
    let after = rng.below(3000);
    tokio::time::sleep(Duration::from_millis(after)).await;
    c.kill9().await;
    record.push(format!("bind 2: kill -9 {after} ms after OK"));
    let c = Hexidian::spawn(BIN, &w, &config, None);
    let after = 100 + rng.below(3000);
    tokio::time::sleep(Duration::from_millis(after)).await;
    c.kill9().await;
    record.push(format!("bind 2: kill -9 {after} ms after a restart"));

    // the last run, left alone
    let c = Hexidian::spawn(BIN, &w, &config, None);
    w.drained(Duration::from_secs(180)).await;
    let t0 = Instant::now();
    let want: BTreeSet<(String, String)> = [
        ("2001".to_owned(), ipei1.clone()),
        ("2002".to_owned(), ipei2.clone()),
    ]
    .into();
    let told = |w: &World| -> BTreeSet<(String, String)> {
        w.guru3
            .inbound()
            .iter()
            .filter(|r| r.kind == "ASSIGN_HANDSET" && r.status == "OK")
            .map(|r| {
                (
                    r.data["extension"].as_str().unwrap_or("").to_owned(),
                    r.data["ipei"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    loop {
        let bound = |ipei: &str, n: &str| {
            holder(&w, ipei)
                .and_then(|u| u.get("num").cloned())
                .as_deref()
                == Some(n)
        };
        if bound(&ipei1, "2001") && bound(&ipei2, "2002") && told(&w) == want {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "binds not completed: told GURU3 {:?}, handsets with {:?} / {:?}",
            told(&w),
            holder(&w, &ipei1).map(|u| u["num"].clone()),
            holder(&w, &ipei2).map(|u| u["num"].clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the ASSIGN_HANDSETs caused UPDATE_EXTENSIONs; they are applied too
    w.drained(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill9().await;

    w.assert_converged().await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 0, "nothing was given up");
    assert!(w.guru3.queue().iter().all(|(_, _, delivered)| *delivered));
    // the binds' temporary numbers are gone; handsets whose extension a GURU3 user deleted
    // are unbound again and hold temporary numbers of their own, each with its OMM user
    let temps = w
        .column("SELECT id FROM hexidian.sip_user WHERE kind = 'temp'")
        .await;
    assert!(
        !temps.contains(&temp1) && !temps.contains(&temp2),
        "{temps:?}"
    );
    let view = w.omm.view();
    let omm_temps: BTreeSet<String> = view
        .users
        .iter()
        .map(|(_, a)| a)
        .filter(|a| a.get("hierarchy2").map(String::as_str) == Some(hexidian::adapters::TEMP_TAG))
        .filter_map(|a| a.get("num").cloned())
        .collect();
    assert_eq!(temps, omm_temps, "temporary users in the PBX and the OMM");
    let inbound = w.guru3.inbound();
    assert!(inbound.iter().all(|r| r.status == "OK"), "{inbound:?}");
    assert_eq!(told(&w), want, "GURU3 heard of exactly the binds made");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{} kills ({resyncs} resyncs); {} ASSIGN_HANDSET posts for 2 binds:\n  {}",
        record.len(),
        inbound.len(),
        record.join("\n  ")
    );
    assert!(record.len() >= 25, "{record:?}");
}

/// A resync whose sweep has work in the PBX and the OMM: GURU3 forgets extensions (their
/// deletions go with the rest of the queue when an admin starts a sync, as in GURU3), and
/// the real process dies at each step of the sweep in turn. The restart finishes the sweep
/// from where it died: OMM, PBX and mirror hold what GURU3 holds, nothing is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_a_resync_sweep_is_finished_by_the_restart() {
    let w = World::new().await;
    hexidian_demo::seed(&w.guru3, 80).unwrap();
    let dir = std::env::temp_dir().join(format!("hexidian-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let c = Hexidian::spawn(BIN, &w, &config, None);
    w.drained(Duration::from_secs(120)).await;
    c.kill9().await;
    let points = [
        (crash::SWEEP_PBX, 1),
        (crash::SWEEP_OMM_DELETE, 2),
        (crash::SWEEP_STATE, 1),
        (crash::SWEEP_FINISHED, 1),
    ];
    for (round, (point, n)) in points.into_iter().enumerate() {
        let exts = w.guru3.extensions();
        let pick = |f: fn(&Kind) -> bool, k: usize| -> Vec<String> {
            exts.iter()
                .filter(|e| f(&e.kind))
                .skip(round * 3)
                .take(k)
                .map(|e| e.number.clone())
                .collect()
        };
        let gone: Vec<String> = pick(|k| matches!(k, Kind::Dect { .. }), 2)
            .into_iter()
            .chain(pick(|k| matches!(k, Kind::Sip { .. }), 1))
            .collect();
        for number in &gone {
            w.guru3.delete(number).unwrap();
        }
        w.guru3.resync();
        let c = Hexidian::spawn(BIN, &w, &config, Some(&format!("{point}:{n}")));
        c.aborted_at(point, Duration::from_secs(120)).await;
        let c = Hexidian::spawn(BIN, &w, &config, None);
        w.drained(Duration::from_secs(120)).await;
        c.kill9().await;
        w.assert_converged().await;
        let view = w.omm.view();
        for number in &gone {
            assert!(
                view.user_by_num(number).is_none(),
                "{number} swept from the OMM after a crash at {point}:{n}"
            );
        }
        let (_, _, dead) = w.journal().await;
        assert_eq!(dead, 0, "nothing given up after a crash at {point}:{n}");
        let open = w
            .column("SELECT in_progress::text FROM hexidian.sync_state")
            .await;
        assert!(
            open.iter().all(|v| v == "false"),
            "the resync is closed after a crash at {point}:{n}: {open:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

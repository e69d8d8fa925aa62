//! Crashes and peer outages: the broker converges, loses nothing and acks nothing early.

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind};

use crate::{Rng, World, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_during_a_large_resync_it_converges_on_restart() {
    let w = World::new().await;
    hexidian::demo::seed(&w.guru3, 2000).unwrap();
    let run = w.start().await;
    w.drained(Duration::from_secs(180)).await;
    run.stop().await.unwrap();
    w.assert_converged().await;

    // a resync while hexidian is down, and a few edits GURU3's users make meanwhile
    w.guru3.resync();
    w.guru3.delete("10007").unwrap();
    w.guru3.rename("10008", "20008").unwrap();
    let window = w.guru3.pending().len();
    assert!(window > 2000, "{window}");
    let mut rng = Rng::new();
    let mut kills = 0;
    for _ in 0..6 {
        let run = w.start().await;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(700))).await;
        run.abort(); // wherever it is: mid-transaction, mid-OMM-request, between steps
        kills += 1;
        if w.guru3.pending().is_empty() {
            break;
        }
    }
    let left = w.guru3.pending().len();
    let run = w.start().await;
    w.drained(Duration::from_secs(180)).await;
    run.stop().await.unwrap();
    w.assert_converged().await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 0, "nothing was given up");
    // every message of the window was acknowledged
    assert!(w.guru3.queue().iter().all(|(_, _, delivered)| *delivered));
    eprintln!(
        "{kills} kills during a window of {window} messages; {left} were left for the last run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omm_drops_postgres_kills_and_guru3_errors_converge() {
    let w = World::new().await;
    // the OMM closes every session after 200 frames
    w.omm.faults(|f| f.drop_after = Some(200));
    hexidian::demo::seed(&w.guru3, 400).unwrap();
    w.guru3.fail_next(3, 503);
    let run = w.start().await;
    let killer = w.db.connect().await;
    let own: i32 = w
        .sql
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let t0 = Instant::now();
    let mut round = 0;
    while !w.guru3.pending().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "{} pending",
            w.guru3.pending().len()
        );
        round += 1;
        match round % 4 {
            0 => w.guru3.drop_websockets(),
            1 => {
                killer
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> $1",
                        &[&own],
                    )
                    .await
                    .unwrap();
            }
            2 => w.guru3.fail_next(1, 502),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // and a resync through the same faults
    w.guru3.resync();
    w.drained(Duration::from_secs(180)).await;
    w.assert_converged().await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 0);
    assert!(
        run.omm_connects() >= 3,
        "the OMM link was re-established {} times",
        run.omm_connects()
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acked_while_the_omm_is_down() {
    let w = World::new().await;
    let run = w.start().await;
    w.guru3
        .save(Extension::new("2001", "Before", Kind::dect()))
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    w.omm.faults(|f| f.refuse_tls = true);
    w.omm.drop_connections();
    let ids = w
        .guru3
        .save(Extension::new("2002", "During", Kind::dect()))
        .unwrap();
    w.guru3
        .save(Extension::new("2003", "Sip too", Kind::sip()))
        .unwrap();
    // several retries later the messages are still unacked, in order
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pending: Vec<i64> = w.guru3.pending().iter().map(|p| p.0).collect();
    assert_eq!(pending.first(), ids.first(), "{pending:?}");
    assert_eq!(pending.len(), 2);
    let (status, body) = http_get(run.admin_addr().unwrap(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["omm"]["connected"], false);
    assert!(ready["broker"]["retrying"].is_string(), "{body}");
    w.omm.faults(|f| f.refuse_tls = false);
    w.drained(Duration::from_secs(30)).await;
    w.assert_converged().await;
    run.stop().await.unwrap();
}

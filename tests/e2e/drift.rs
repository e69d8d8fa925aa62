//! The broker's periodic drift check: an OMM user changed behind hexidian's back shows on
//! `/readyz` and `/metrics`, and a GURU3 resync repairs it.

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind};

use crate::{World, http_get};

async fn drift(admin: std::net::SocketAddr) -> serde_json::Value {
    let (_, body) = http_get(admin, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["drift"].clone()
}

/// Waits until a check that ran (not skipped) says `owned` drift.
async fn until_owned(admin: std::net::SocketAddr, owned: u64) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let d = drift(admin).await;
        if d["skipped"].is_null() && d["owned"] == owned {
            return d;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "drift stays {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_hexidians_back_is_reported_and_a_resync_repairs_it() {
    let w = World::new().await;
    let mut s = w.settings();
    s.reconcile_every = Some(Duration::from_millis(500)); // override: a check every 0.5 s instead of every 15 min, so the test need not wait
    let run = w.start_with(s).await;
    w.save_drained(Extension::new("2001", "Lena Brandt", Kind::sip()))
        .await;
    w.save_drained(Extension::new("2002", "Kiosk Nord", Kind::dect()))
        .await;
    let admin = run.admin_addr().unwrap();
    let clean = until_owned(admin, 0).await;
    assert_eq!(clean["items"], serde_json::json!([]), "{clean}");

    // renamed in the OMM's web interface: the OMM announces it, hexidian's map follows
    let (uid, _) = w.omm.view().user_by_num("2002").unwrap();
    assert!(w.omm.admin_set_user(uid, &[("name", "By hand")]));
    let d = until_owned(admin, 1).await;
    let item = &d["items"][0];
    assert_eq!(
        (
            &item["target"],
            &item["number"],
            &item["drift"],
            &item["field"]
        ),
        (
            &serde_json::json!("omm"),
            &serde_json::json!("2002"),
            &serde_json::json!("different"),
            &serde_json::json!("name")
        ),
        "{d}"
    );
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(metrics.contains("hexidian_drift 1"), "{metrics}");
    // the status stream carries it too
    let mut stream = crate::stream::Stream::open(admin).await;
    let (_, snap) = stream.next(Duration::from_secs(10)).await;
    assert_eq!(snap["status"]["drift"]["owned"], 1, "{snap}");
    assert_eq!(
        w.omm.view().user_by_num("2002").unwrap().1["name"],
        "By hand",
        "the check repairs nothing"
    );

    // a GURU3 resync re-checks every user and repairs hexidian's own
    w.guru3.resync();
    w.drained(Duration::from_secs(30)).await;
    until_owned(admin, 0).await;
    assert_eq!(
        w.omm.view().user_by_num("2002").unwrap().1["name"],
        "Kiosk Nord"
    );
    w.assert_converged().await;
    run.stop().await.unwrap();
}

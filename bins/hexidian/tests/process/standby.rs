//! Two real `hexidian run` processes on one database (the example config, the simulators): one
//! is active, the other a standby whose webhook answers RETRY; the standby takes over when the
//! active dies (`kill -9`), when its lock connection is cut (a partition) and when it is paused
//! (`SIGSTOP`) longer than its lease. The old active never writes under its old epoch after the
//! new one began, comes back as a standby, and everything converges.

use std::path::Path;
use std::time::{Duration, Instant};

use hexidian_e2e::{World, http_get};
use serde_json::Value;

use crate::support::{BIN, Hexidian, token_call, write_config};

/// The `ha` part of `/readyz`.
async fn ha(admin: std::net::SocketAddr) -> Value {
    let (_, body) = http_get(admin, "/readyz").await;
    serde_json::from_str::<Value>(&body).map_or(Value::Null, |v| v["ha"].clone())
}

/// Waits until the instance's role is `role` (a hang guard of `limit`, not a speed limit).
async fn until_role(
    h: &Hexidian,
    admin: std::net::SocketAddr,
    role: &str,
    limit: Duration,
) -> Value {
    let t0 = Instant::now();
    loop {
        let v = ha(admin).await;
        if v["role"] == role {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "no {role} within {limit:?}: {v}; its log:\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until hexidian is in the middle of a batch: at least 50 messages applied (journalled)
/// beyond those GURU3 has seen acked.
async fn until_mid_batch(w: &World, total: usize) {
    let t0 = Instant::now();
    loop {
        let journalled: i64 = w
            .sql
            .query_one("SELECT count(*) FROM hexidian.journal", &[])
            .await
            .unwrap()
            .get(0);
        let acked = total - w.guru3.pending_count().min(total);
        if usize::try_from(journalled).unwrap_or(0) >= acked + 50 && acked > 0 {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "never mid-batch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long after `t0` the new active committed its first message (epoch 2).
async fn until_applying(w: &World, t0: Instant) -> Duration {
    loop {
        let n: i64 = w
            .sql
            .query_one("SELECT count(*) FROM hexidian.journal WHERE epoch = 2", &[])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the new active applies nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A running pair: `a` active (epoch 1), `b` its standby, GURU3 busy with a sync.
struct Pair {
    a: Hexidian,
    a_admin: std::net::SocketAddr,
    a_name: String,
    b: Hexidian,
    b_admin: std::net::SocketAddr,
    total: usize,
}

async fn pair(w: &World, dir: &Path) -> Pair {
    hexidian_demo::seed(&w.guru3, 1500).unwrap();
    let total = w.guru3.pending_count();
    let config = write_config(w, dir);
    let a = Hexidian::spawn(BIN, w, &config, None);
    let a_admin = a.admin().await;
    let ha_a = until_role(&a, a_admin, "active", Duration::from_secs(60)).await;
    assert_eq!(ha_a["epoch"], 1, "{ha_a}");
    let a_name = ha_a["instance"].as_str().unwrap().to_owned();
    let b = Hexidian::spawn(BIN, w, &config, None);
    let b_admin = b.admin().await;
    let ha_b = until_role(&b, b_admin, "standby", Duration::from_secs(60)).await;
    assert_eq!(ha_b["active"], a_name.as_str(), "{ha_b}");
    assert_ne!(ha_b["instance"], a_name.as_str());
    // the standby does no work: its webhook says "try again", its /readyz is not ready
    let hook = b.webhook().await;
    assert_eq!(
        token_call(hook, "01000001", "4711").await.as_deref(),
        Some("RETRY")
    );
    let (code, _) = http_get(b_admin, "/readyz").await;
    assert_eq!(code, 503);
    Pair {
        a,
        a_admin,
        a_name,
        b,
        b_admin,
        total,
    }
}

/// What the database shows: no journal row written under epoch 1 after epoch 2 began, rows of
/// both epochs, epoch 2 held by `b`.
async fn assert_fenced(w: &World, b_name: &str) {
    let r = w
        .sql
        .query_one(
            "SELECT l.epoch, l.holder, \
               (SELECT count(*) FROM hexidian.journal j WHERE j.epoch = 1 AND j.updated_at >= l.since), \
               (SELECT count(*) FROM hexidian.journal j WHERE j.epoch = 1), \
               (SELECT count(*) FROM hexidian.journal j WHERE j.epoch = 2) \
             FROM hexidian.leader l",
            &[],
        )
        .await
        .unwrap();
    let (epoch, holder, late, old, new): (i64, String, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    assert_eq!((epoch, holder.as_str()), (2, b_name));
    assert_eq!(
        late, 0,
        "a write of the old active landed after the new one began"
    );
    assert!(
        old > 0 && new > 0,
        "epoch 1: {old} rows, epoch 2: {new} rows"
    );
    eprintln!(
        "fencing: {old} journal rows under epoch 1, all before epoch 2 began; {new} under epoch 2"
    );
}

/// People keep editing in GURU3: 40 extensions get a new name (work for the new active).
fn edits(w: &World) {
    for mut e in w.guru3.extensions().into_iter().take(40) {
        e.name = format!("{} (edited)", e.name);
        w.guru3.save(e).unwrap();
    }
}

async fn converged(w: &World) {
    w.drained(Duration::from_secs(600)).await;
    w.assert_converged().await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 0, "nothing was given up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_mid_sync_and_the_standby_finishes_it() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-standby-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pair(&w, &dir).await;
    until_mid_batch(&w, p.total).await;
    let t0 = Instant::now();
    p.a.kill9().await;
    let ha_b = until_role(&p.b, p.b_admin, "active", Duration::from_secs(60)).await;
    let active_after = t0.elapsed();
    assert_eq!(ha_b["epoch"], 2, "{ha_b}");
    edits(&w);
    let applying_after = until_applying(&w, t0).await;
    eprintln!(
        "take-over after kill -9: active in {active_after:?}, applying in {applying_after:?}"
    );
    converged(&w).await;
    assert_fenced(&w, ha_b["instance"].as_str().unwrap()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_active_stops_writing_before_the_standby_starts_and_rejoins_as_standby() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-standby-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pair(&w, &dir).await;
    until_mid_batch(&w, p.total).await;
    // the active's lock connection is cut; the process itself goes on
    let lock = format!("hexidian/{}/lock", p.a_name);
    let cut: i64 = w
        .sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&lock],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 1);
    let ha_b = until_role(&p.b, p.b_admin, "active", Duration::from_secs(60)).await;
    assert_eq!(ha_b["epoch"], 2, "{ha_b}");
    let b_name = ha_b["instance"].as_str().unwrap().to_owned();
    edits(&w);
    // the old active finds the epoch moved on and becomes a standby of the new one
    let ha_a = until_role(&p.a, p.a_admin, "standby", Duration::from_secs(60)).await;
    let t0 = Instant::now();
    while ha(p.a_admin).await["active"] != b_name.as_str() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{ha_a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.a.log_has("leadership lost"), "{}", p.a.log());
    converged(&w).await;
    assert_fenced(&w, &b_name).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_is_fenced_and_steps_down_without_writing() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-standby-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pair(&w, &dir).await;
    until_mid_batch(&w, p.total).await;
    let t0 = Instant::now();
    p.a.signal("STOP");
    let ha_b = until_role(&p.b, p.b_admin, "active", Duration::from_secs(60)).await;
    let took = t0.elapsed();
    assert_eq!(ha_b["epoch"], 2, "{ha_b}");
    let b_name = ha_b["instance"].as_str().unwrap().to_owned();
    eprintln!("take-over of a paused active (lease 3 s): {took:?}");
    // the new active works while the old one is still paused
    edits(&w);
    let applying = until_applying(&w, t0).await;
    eprintln!("… applying {applying:?} after the pause began");
    p.a.signal("CONT");
    until_role(&p.a, p.a_admin, "standby", Duration::from_secs(60)).await;
    converged(&w).await;
    assert_fenced(&w, &b_name).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

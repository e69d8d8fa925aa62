//! Upserting 10,000 SIP users into a throwaway PostgreSQL: one transaction each vs. batched,
//! and a resync that re-sends them unchanged; and a dense nested call-group hierarchy (8
//! layers of 7 groups, each holding the whole next layer) applied and edited.
//!
//! `cargo bench -p asterisk-realtime --bench upsert` (needs the PostgreSQL server binaries, like
//! the tests).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::time::Instant;

use asterisk_realtime::{Change, Config, Kind, Member, Store, UserSpec};
use hexidian_testkit::pg::TestDb;

const USERS: u32 = 10_000;

fn spec(n: u32, round: u32) -> UserSpec {
    UserSpec {
        premium: false,
        routing: Default::default(),
        extension: format!("{}", 100_000 + n).parse().unwrap(),
        kind: if n % 10 < 7 { Kind::Dect } else { Kind::Sip },
        name: format!("User {n} round {round}"),
        password: if n % 10 < 7 {
            None
        } else {
            Some(format!("Pw{n}x{round}").parse().unwrap())
        },
    }
}

async fn store(db: &TestDb) -> Store {
    let sql = db.connect().await;
    let ddl =
        std::fs::read_to_string(hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql"))
            .unwrap();
    sql.batch_execute(&ddl).await.unwrap();
    let (store, driver) = Store::connect(Config::new(&db.url()).unwrap())
        .await
        .unwrap();
    tokio::spawn(driver.run());
    store
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    nested_hierarchy().await;
    let db = TestDb::new().await;
    let store = store(&db).await;

    let start = Instant::now();
    for n in 0..USERS {
        store.upsert_user(spec(n, 0)).await.unwrap();
    }
    let single = start.elapsed();
    println!(
        "upsert {USERS} users, one transaction each: {:>8.2} s  {:>8.0} users/s",
        single.as_secs_f64(),
        f64::from(USERS) / single.as_secs_f64()
    );

    // same users again (updates), then new ones (inserts), in batches of 1,000 and as one batch
    for (label, round, batch) in [
        ("batched by 1,000 (updates)", 1, 1_000usize),
        ("one batch of 10,000 (updates)", 2, 10_000),
    ] {
        let changes: Vec<Change> = (0..USERS)
            .map(|n| Change::UpsertUser(spec(n, round)))
            .collect();
        let start = Instant::now();
        for chunk in changes.chunks(batch) {
            assert!(store.apply(chunk).await.unwrap().iter().all(Result::is_ok));
        }
        let t = start.elapsed();
        println!(
            "upsert {USERS} users, {label:<30}: {:>8.2} s  {:>8.0} users/s  ({:.1}x faster)",
            t.as_secs_f64(),
            f64::from(USERS) / t.as_secs_f64(),
            single.as_secs_f64() / t.as_secs_f64()
        );
    }
    // a resync that re-sends all of them unchanged, in GURU3's pages of 500
    let changes: Vec<Change> = (0..USERS).map(|n| Change::UpsertUser(spec(n, 2))).collect();
    let start = Instant::now();
    let epoch = store.begin_sync().await.unwrap();
    let mut batches = Vec::new();
    for chunk in changes.chunks(500) {
        let t = Instant::now();
        assert!(store.apply(chunk).await.unwrap().iter().all(Result::is_ok));
        batches.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let swept = store.end_sync(epoch).await.unwrap();
    assert!(swept.users.is_empty());
    let t = start.elapsed();
    batches.sort_by(f64::total_cmp);
    println!(
        "resync of {USERS} unchanged users, batches of 500: {:>8.2} s  (batch p50 {:.1} ms, max {:.1} ms)",
        t.as_secs_f64(),
        batches[batches.len() / 2],
        batches[batches.len() - 1]
    );
    let db2 = TestDb::new().await;
    let fresh = store_for(&db2).await;
    let changes: Vec<Change> = (0..USERS).map(|n| Change::UpsertUser(spec(n, 3))).collect();
    let start = Instant::now();
    for chunk in changes.chunks(1_000) {
        fresh.apply(chunk).await.unwrap();
    }
    let t = start.elapsed();
    println!(
        "upsert {USERS} new users, batched by 1,000       : {:>8.2} s  {:>8.0} users/s  ({:.1}x faster)",
        t.as_secs_f64(),
        f64::from(USERS) / t.as_secs_f64(),
        single.as_secs_f64() / t.as_secs_f64()
    );
}

/// 8 layers of 7 groups, every group holding all 7 of the next layer, the last holding 2 users.
async fn nested_hierarchy() {
    let db = TestDb::new().await;
    let store = store(&db).await;
    let group = |layer: u32, i: u32| -> asterisk_realtime::Extension {
        format!("{}", 3000 + layer * 10 + i).parse().unwrap()
    };
    let member = |e: asterisk_realtime::Extension, delay: i32| Member {
        extension: e,
        active: true,
        delay_s: delay,
    };
    let mut changes = Vec::new();
    for layer in 0..8 {
        for i in 0..7 {
            changes.push(Change::UpsertGroup {
                extension: group(layer, i),
                name: format!("L{layer}G{i}"),
                short_name: String::new(),
            });
        }
    }
    for layer in (0..8).rev() {
        for i in 0..7 {
            let members = if layer == 7 {
                (0..2)
                    .map(|k| member(format!("{}", 4000 + i * 10 + k).parse().unwrap(), 1))
                    .collect()
            } else {
                (0..7)
                    .map(|j| member(group(layer + 1, j), j as i32))
                    .collect()
            };
            changes.push(Change::SetMembers {
                extension: group(layer, i),
                name: format!("L{layer}G{i}"),
                members,
            });
        }
    }
    let start = Instant::now();
    assert!(
        store
            .apply(&changes)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let t = start.elapsed();
    println!(
        "nested groups 8 x 7 (each holding the next layer), applied   : {:>8.3} s",
        t.as_secs_f64()
    );
    // one membership deep down changes: every group above it is routed again
    let edit = [Change::SetMembers {
        extension: group(7, 0),
        name: "L7G0".into(),
        members: vec![member("4000".parse().unwrap(), 2)],
    }];
    let start = Instant::now();
    assert!(store.apply(&edit).await.unwrap().iter().all(Result::is_ok));
    println!(
        "nested groups 8 x 7, one bottom member list edited           : {:>8.3} s",
        start.elapsed().as_secs_f64()
    );
}

async fn store_for(db: &TestDb) -> Store {
    store(db).await
}

//! Upserting 10,000 SIP users into a throwaway PostgreSQL: one transaction each vs. batched.
//!
//! `cargo bench -p asterisk-realtime --bench upsert` (needs the PostgreSQL server binaries, like
//! the tests).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::time::Instant;

use asterisk_realtime::{Change, Config, Kind, Store, UserSpec};
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

async fn store_for(db: &TestDb) -> Store {
    store(db).await
}

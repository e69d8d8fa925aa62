use std::time::Duration;

use asterisk_realtime::{Change, Error};

use crate::{Flavor, count, env, env_with, rows, sip};

async fn until_available<T>(mut f: impl AsyncFnMut() -> Result<T, Error>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn connection_killed_mid_transaction_leaves_no_half_written_user() {
    let e = env_with(Flavor::Modern, |c| {
        c.reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
    })
    .await;
    // another session holds the row 5002 in ps_aors, so the batch blocks half-way
    let mut blocker = e.db.connect().await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute("INSERT INTO ps_aors (id) VALUES ('5002')", &[])
        .await
        .unwrap();

    let store = e.store.clone();
    let batch = tokio::spawn(async move {
        store
            .apply(&[
                Change::UpsertUser(sip("5001", "first", "Secret123")),
                Change::UpsertUser(sip("5002", "blocked", "Secret123")),
            ])
            .await
    });
    // wait until the store's backend waits on the lock, then kill it
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let victim: i32 = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never blocked on the lock"
        );
        let rows = e
            .sql
            .query("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()", &[])
            .await
            .unwrap();
        if let Some(r) = rows.first() {
            break r.get(0);
        }
        tokio::task::yield_now().await;
    };
    e.sql
        .execute("SELECT pg_terminate_backend($1)", &[&victim])
        .await
        .unwrap();
    let err = batch.await.unwrap().unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    tx.rollback().await.unwrap();
    // nothing of the batch is visible, not even the first user
    assert!(rows(&e.sql, "5001").await.is_empty());
    assert!(rows(&e.sql, "5002").await.is_empty());
    assert_eq!(count(&e.sql, "hexidian.sip_user").await, 0);

    // the driver reconnects; re-running the batch completes it
    let changes = [
        Change::UpsertUser(sip("5001", "first", "Secret123")),
        Change::UpsertUser(sip("5002", "blocked", "Secret123")),
    ];
    let store = e.store.clone();
    let results = until_available(async || store.apply(&changes).await).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(rows(&e.sql, "5001").await.len(), 3);
    assert_eq!(rows(&e.sql, "5002").await.len(), 3);
}

#[tokio::test]
async fn lock_timeout_is_a_transient_error() {
    let e = env_with(Flavor::Modern, |c| {
        c.lock_timeout(Duration::from_millis(200))
    })
    .await;
    e.store
        .upsert_user(sip("5100", "x", "Secret123"))
        .await
        .unwrap();
    let mut blocker = e.db.connect().await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "UPDATE ps_auths SET password = 'held' WHERE id = '5100'",
        &[],
    )
    .await
    .unwrap();
    let err = e
        .store
        .set_password(crate::ext("5100"), crate::pw("Other1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("55P03"));
    assert!(err.is_transient());
    tx.rollback().await.unwrap();
    e.store
        .set_password(crate::ext("5100"), crate::pw("Other1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn two_writers_on_the_same_extension_converge() {
    let e = env().await;
    let (other, driver) =
        asterisk_realtime::Store::connect(asterisk_realtime::Config::new(&e.db.url()).unwrap())
            .await
            .unwrap();
    tokio::spawn(driver.run());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 {
            e.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.upsert_user(sip("6000", &format!("writer {i}"), &format!("Pass{i}")))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let r = rows(&e.sql, "6000").await;
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(count(&e.sql, "hexidian.sip_user").await, 1);
    let user = e.store.user(&crate::ext("6000")).await.unwrap().unwrap();
    assert!(user.is_complete());
    // the name and the password come from the same (last) writer
    let winner = user.display_name.trim_start_matches("writer ").to_owned();
    assert_eq!(user.password.unwrap().expose(), format!("Pass{winner}"));
}

#[tokio::test]
async fn database_restart_is_survived() {
    let e = env_with(Flavor::Modern, |c| {
        c.reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
    })
    .await;
    e.store
        .upsert_user(sip("7000", "before", "Secret123"))
        .await
        .unwrap();
    let pid = e.store.backend_pid().await.unwrap();
    e.sql
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let store = e.store.clone();
    until_available(async || store.upsert_user(sip("7001", "after", "Secret123")).await).await;
    assert_ne!(e.store.backend_pid().await.unwrap(), pid);
    assert_eq!(rows(&e.sql, "7001").await.len(), 3);
}

#[tokio::test]
async fn a_row_that_cannot_be_decoded_is_not_an_outage() {
    let e = env().await;
    let row = e.sql.query_one("SELECT 1::int4", &[]).await.unwrap();
    let decode = row.try_get::<_, String>(0).unwrap_err();
    let err = Error::from(decode);
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.code(), None);
    // a closed connection still is one
    let (client, conn) = e.db.config().connect(tokio_postgres::NoTls).await.unwrap();
    drop(conn);
    let closed = client.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(Error::from(closed).is_transient());
}

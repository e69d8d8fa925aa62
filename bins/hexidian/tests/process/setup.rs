//! The documented set-up, followed literally: Asterisk's schema and the shipped roles file as
//! a superuser (the `World`), then `hexidian migrate`, `check-config` and `run` as role
//! `hexidian`. A grant taken away is named by `check-config` with the statement that fixes
//! it, and stalls the queue (nothing dead, nothing acked) until it is given back.

use std::path::Path;
use std::time::{Duration, Instant};

use guru3_sim::{Extension, Kind};
use hexidian_e2e::{World, http_get};

use crate::support::{BIN, Hexidian, write_config};

/// `hexidian <command> --config <config>` with the secrets in the environment, human log
/// lines: (success, stderr).
async fn hexidian(w: &World, command: &str, config: &Path) -> (bool, String) {
    let out = crate::support::command(w, &[command], config, "info").await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn dead_letters(w: &World) -> i64 {
    w.sql
        .query_one(
            "SELECT count(*) FROM hexidian.journal WHERE status = 'dead'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn endpoints(w: &World) -> Vec<String> {
    w.sql
        .query("SELECT id::text FROM ps_endpoints ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_set_up_runs_and_a_revoked_grant_stalls_until_it_is_back() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);

    // step 4 of examples/asterisk/README.md: migrate as role hexidian, no right on the database
    let (ok, err) = hexidian(&w, "migrate", &config).await;
    assert!(ok, "hexidian migrate as role hexidian failed:\n{err}");
    let (ok, err) = hexidian(&w, "check-config", &config).await;
    assert!(ok, "check-config after the documented set-up:\n{err}");
    assert!(err.contains("postgres: ok"), "{err}");

    let run = Hexidian::spawn(BIN, &w, &config, None);
    let admin = run.admin().await;
    w.save_drained(Extension::new("2001", "Before", Kind::sip()))
        .await;
    // a registration Asterisk stored in the database (contact=realtime)
    w.sql
        .execute(
            "INSERT INTO ps_contacts (id, uri, endpoint) VALUES ('2001^3B@abc', 'sip:2001@127.0.0.1', '2001')",
            &[],
        )
        .await
        .unwrap();

    // an operator (or a re-created table) takes a grant away
    w.sql
        .batch_execute("REVOKE DELETE ON ps_contacts FROM hexidian")
        .await
        .unwrap();
    let (ok, err) = hexidian(&w, "check-config", &config).await;
    assert!(
        !ok,
        "check-config passed without DELETE on ps_contacts:\n{err}"
    );
    eprintln!("check-config with DELETE on ps_contacts revoked:\n{err}");
    assert!(
        err.contains(
            "hexidian lacks DELETE on ps_contacts: GRANT DELETE ON ps_contacts TO hexidian;"
        ),
        "{err}"
    );

    // a rename must remove the old number's contact: refused, so the queue waits
    w.guru3.rename("2001", "2003").unwrap();
    w.guru3
        .save(Extension::new("2004", "Later", Kind::sip()))
        .unwrap();
    let t0 = Instant::now();
    let mut seen = None;
    while t0.elapsed() < Duration::from_secs(12) {
        assert!(w.guru3.pending_count() >= 2, "acked while refused");
        assert_eq!(dead_letters(&w).await, 0, "dead-lettered while refused");
        let (status, body) = http_get(admin, "/readyz").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stalled = &v["broker"]["stalled"];
        if stalled["refused"] == true {
            assert_eq!(status, 503, "{body}");
            seen = stalled["reason"].as_str().map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reason = seen.unwrap_or_else(|| panic!("/readyz never showed the refusal\n{}", run.log()));
    assert!(
        reason.contains(
            "permission denied for table ps_contacts (42501) while removing the contacts of 2001"
        ),
        "{reason}"
    );
    assert!(run.log_has("refuses hexidian's set-up"), "{}", run.log());
    assert_eq!(endpoints(&w).await, ["2001"]);

    // the grant is back: the queue moves by itself, in order, nothing lost
    w.sql
        .batch_execute("GRANT DELETE ON ps_contacts TO hexidian")
        .await
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    assert_eq!(endpoints(&w).await, ["2003", "2004"]);
    let contacts: i64 = w
        .sql
        .query_one("SELECT count(*) FROM ps_contacts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(contacts, 0, "the old number's contact stayed");
    assert_eq!(dead_letters(&w).await, 0);
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    run.kill9().await;
    let _ = std::fs::remove_dir_all(&dir);
}

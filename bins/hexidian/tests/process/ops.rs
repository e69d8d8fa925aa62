//! Operator commands beside a running hexidian: `hexidian dead-letters list` (its database)
//! and `hexidian status` (its admin API).

use std::path::Path;
use std::time::Duration;

use guru3_sim::{Extension, Kind};
use hexidian_e2e::World;

use crate::support::{BIN, Hexidian, write_config};

/// `hexidian <args…> --config <config>`: (success, stdout, stderr).
async fn hexidian(w: &World, args: &[&str], config: &Path) -> (bool, String, String) {
    let out = crate::support::command(w, args, config, "warn").await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_with_their_number_while_hexidian_runs() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    // before hexidian ever ran: the tables are missing, and the command says what to do
    let (ok, _, err) = hexidian(&w, &["dead-letters", "list"], &config).await;
    assert!(!ok);
    assert!(err.contains("hexidian migrate"), "{err}");
    let run = Hexidian::spawn(BIN, &w, &config, None);
    w.save_drained(Extension::new("2001", "First", Kind::sip()))
        .await;
    let (ok, out, err) = hexidian(&w, &["dead-letters", "list"], &config).await;
    assert!(ok, "{err}");
    assert_eq!(out, "no dead letters\n");

    // two messages GURU3 could not have sent (no name, no type) name their numbers; the
    // reason of the second carries a terminal escape sequence in its number field
    w.guru3
        .inject("UPDATE_EXTENSION", serde_json::json!({"number": "2345"}));
    w.guru3.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "2346", "name": "\u{1b}[2J"}),
    );
    w.drained(Duration::from_secs(30)).await;
    // a later, valid message for 2345 makes its dead letter moot
    w.save_drained(Extension::new("2345", "Fixed", Kind::sip()))
        .await;

    let (ok, out, err) = hexidian(&w, &["dead-letters", "list", "--json"], &config).await;
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let got: Vec<(Option<&str>, bool, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["number"].as_str(),
                r["superseded"].as_bool().unwrap(),
                r["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("2345"), true, "UPDATE_EXTENSION"),
            (Some("2346"), false, "UPDATE_EXTENSION")
        ],
        "{out}"
    );
    for r in &rows {
        assert!(r["attempts"].as_u64().unwrap() >= 1, "{r}");
        assert!(!r["reason"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["last_try"].as_str().unwrap().ends_with('Z'), "{r}");
    }

    // the running process's readiness, from its admin API
    let admin = run.admin().await.to_string();
    let (ok, out, err) = hexidian(&w, &["status", "--admin", &admin], &config).await;
    assert!(ok, "{out}{err}");
    eprintln!("{out}");
    assert!(out.contains(": READY"), "{out}");
    assert!(out.contains("2 dead"), "{out}");
    assert!(out.contains("2346"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "a terminal escape reached the status:\n{out}"
    );
    let (ok, out, err) = hexidian(&w, &["status", "--json", "--admin", &admin], &config).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dead_letters"][0]["number"], "2346", "{out}");

    let (ok, out, err) = hexidian(&w, &["dead-letters", "list"], &config).await;
    assert!(ok, "{err}");
    eprintln!("{out}");
    assert!(out.contains("2 dead letter(s), 1 superseded"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "a terminal escape reached the table:\n{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("2346")).count(),
        1,
        "{out}"
    );
    // what a rename of 2345 would do, planned against the running hexidian's stored state,
    // from a file and from standard input; nothing is written
    let before = w.column("SELECT id FROM ps_endpoints").await;
    let rename = dir.join("rename.json");
    std::fs::write(
        &rename,
        r#"{"id": 990001, "timestamp": 1.5, "type": "RENAME_EXTENSION",
            "data": {"old_extension": "2345", "new_extension": "2400"}}"#,
    )
    .unwrap();
    let file = rename.to_str().unwrap();
    let (ok, out, err) = hexidian(&w, &["explain", file], &config).await;
    assert!(ok, "{err}");
    eprintln!("{out}");
    assert!(out.contains("990001 RENAME_EXTENSION 2345: apply"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("pbx") && l.contains("rename") && l.contains("to 2400")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("mirror")
            && l.contains("store")
            && l.contains("2400")
            && l.contains("\"Fixed\"")),
        "the stored mirror was planned against:\n{out}"
    );
    let (ok, out, err) = hexidian(&w, &["explain", "--json", file], &config).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"][0]["decision"], "apply", "{out}");
    assert!(v["mirror_extensions"].as_u64().unwrap() >= 2, "{out}");
    let stdin = crate::support::command_with_input(
        &w,
        &["explain", "-"],
        &config,
        br#"[{"id": 990002, "timestamp": 1.5, "type": "DELETE_EXTENSION", "data": {"number": "2001"}}]"#,
    )
    .await;
    let out = String::from_utf8_lossy(&stdin.stdout);
    assert!(
        stdin.status.success(),
        "{}",
        String::from_utf8_lossy(&stdin.stderr)
    );
    assert!(out.contains("990002 DELETE_EXTENSION 2001: apply"), "{out}");
    assert!(out.contains("delete-extension"), "{out}");
    let (ok, _, err) = hexidian(&w, &["explain", "/nonexistent/message.json"], &config).await;
    assert!(!ok);
    assert!(err.contains("/nonexistent/message.json"), "{err}");
    assert_eq!(w.column("SELECT id FROM ps_endpoints").await, before);
    w.assert_converged().await;

    // without hexidian the status says so
    run.kill9().await;
    let (ok, _, err) = hexidian(&w, &["status", "--admin", &admin], &config).await;
    assert!(!ok);
    assert!(err.contains("is hexidian running?"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

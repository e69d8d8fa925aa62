//! Operator commands beside a running hexidian: `hexidian dead-letters list` (its database)
//! and `hexidian status` (its admin API).

use std::path::Path;
use std::time::Duration;

use guru3_sim::{Extension, Kind, Member};
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

/// A SIP extension whose number a foreign PBX row holds is refused (hexidian only writes what
/// it owns) and given up as a dead letter. `hexidian dead-letters replay` runs it through the
/// running broker: while the row is there it ends dead again; once an operator removed the
/// row it applies, with the password GURU3 sent (kept apart from the redacted payload), ends
/// done once, and GURU3 hears no second ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_after_its_fault_is_gone_ends_done_once() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let run = Hexidian::spawn(BIN, &w, &config, None);
    w.save_drained(Extension::new("2001", "First", Kind::sip()))
        .await;
    w.sql
        .batch_execute("INSERT INTO ps_endpoints (id) VALUES ('2500')")
        .await
        .unwrap();
    let ids = w
        .guru3
        .save(Extension::new("2500", "Taken", Kind::sip()))
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    let id = *ids.last().unwrap();
    let (ok, out, err) = hexidian(&w, &["dead-letters", "list", "--json"], &config).await;
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["id"], id, "{out}");
    assert_eq!(rows[0]["number"], "2500", "{out}");
    let admin = run.admin().await.to_string();
    let id_arg = id.to_string();
    let replay = async |args: &[&str]| {
        let mut all = vec!["dead-letters", "replay", "--admin", admin.as_str()];
        all.extend_from_slice(args);
        hexidian(&w, &all, &config).await
    };

    // what a replay would do, from the journal: the message with its password put back
    let (ok, out, err) = hexidian(&w, &["explain", "--journal", &id_arg], &config).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{id} UPDATE_EXTENSION 2500: apply")),
        "{out}"
    );
    assert!(
        out.contains("SIP user \"Taken\" with GURU3's password"),
        "{out}"
    );
    let password = match w.guru3.extension("2500").unwrap().kind {
        Kind::Sip { password, .. } => password,
        other => panic!("{other:?}"),
    };
    assert!(!out.contains(&password), "a secret in explain's output");
    let (ok, _, err) = hexidian(&w, &["explain", "--journal", "1"], &config).await;
    assert!(!ok);
    assert!(err.contains("no dead letter with id 1"), "{err}");

    // the fault is still there: dead again, said so, exit status non-zero
    let (ok, out, err) = replay(&["--json", &id_arg]).await;
    assert!(!ok, "{out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["outcome"], "dead", "{out}");
    assert!(!rows[0]["reason"].as_str().unwrap().is_empty(), "{out}");

    // an operator removes the foreign row: the replay applies it
    w.sql
        .batch_execute("DELETE FROM ps_endpoints WHERE id = '2500'")
        .await
        .unwrap();
    let (ok, out, err) = replay(&[&id_arg]).await;
    eprintln!("{out}");
    assert!(ok, "{out}{err}");
    assert!(out.contains("done") && out.contains("2500"), "{out}");
    assert!(out.contains("1 dead letter(s): 1 done"), "{out}");
    w.assert_converged().await;
    let (ok, out, err) = hexidian(&w, &["dead-letters", "list"], &config).await;
    assert!(ok, "{err}");
    assert_eq!(out, "no dead letters\n");
    let status: String = w
        .sql
        .query_one("SELECT status FROM hexidian.journal WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "done");
    let secrets: i64 = w
        .sql
        .query_one(
            "SELECT count(*) FROM hexidian.journal WHERE secrets IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(secrets, 0, "an applied message keeps no secret");
    assert_eq!(
        w.guru3.acked().iter().filter(|a| **a == id).count(),
        1,
        "GURU3 acked it when it was given up, and only then"
    );

    // the admin API takes only what a replay can be: JSON (no cross-site form post), known
    // fields, a sane size
    let addr: std::net::SocketAddr = admin.parse().unwrap();
    let post = async |headers: &[(&str, &str)], body: &str| {
        hexidian_e2e::http(addr, "POST", "/dead-letters/replay", headers, body).await
    };
    let json = [("Content-Type", "application/json")];
    let ids = format!("{{\"ids\": [{id}]}}");
    assert_eq!(post(&[("Content-Type", "text/plain")], &ids).await.0, 415);
    assert_eq!(post(&[], &ids).await.0, 415);
    assert_eq!(post(&json, "{\"ids\": \"1; DROP\"}").await.0, 400);
    assert_eq!(post(&json, "{\"ids\": [1], \"all\": true}").await.0, 400);
    assert_eq!(post(&json, "{\"nonsense\": 1}").await.0, 400);
    assert_eq!(post(&json, &"x".repeat(70_000)).await.0, 413);
    let (code, _) = hexidian_e2e::http(addr, "PUT", "/dead-letters/replay", &json, &ids).await;
    assert_eq!(code, 405);

    // once done there is nothing left to replay; asking again changes nothing
    let (ok, out, _) = replay(&["--json", &id_arg]).await;
    assert!(!ok);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["outcome"], "unknown", "{out}");
    let (ok, out, err) = replay(&["--all"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "no dead letters to replay\n");
    w.assert_converged().await;
    run.kill9().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `hexidian omm users|devices|handset`: hexidian's users of extensions are owned, the one
/// it gave a new handset is temporary, a user someone else created is foreign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_omm_listing_marks_owned_temporary_and_foreign_users() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-omm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let foreign_ipei = "03587 0412396 2";
    let ppn = w.omm.seed_device(foreign_ipei);
    let uid = w
        .omm
        .seed_user(&[("num", "3000"), ("name", "Reception \u{1b}[2J")]);
    w.omm.seed_relation(ppn, uid);
    let run = Hexidian::spawn(BIN, &w, &config, None);
    w.save_drained(Extension::new("2001", "Kiosk", Kind::dect()))
        .await;
    // a new handset gets a temporary user once the workflow opened the subscription
    let t0 = std::time::Instant::now();
    while !matches!(w.omm.view().mode, omm_axi_sim::Mode::Wildcard { .. }) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "subscription never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_ipei = "01842 0093371 6";
    w.omm.handset_subscribe(new_ipei, "0000").unwrap();
    let users = loop {
        let (ok, out, err) = hexidian(&w, &["omm", "users", "--json"], &config).await;
        assert!(ok, "{err}");
        let users: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        // created, then attached: the listing may fall between the two
        if users
            .iter()
            .any(|u| u["owner"] == "temporary" && u["ppn"] != 0)
        {
            break users;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no temporary user: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let owner = |num: &str| {
        users
            .iter()
            .find(|u| u["number"] == num)
            .map(|u| u["owner"].as_str().unwrap())
    };
    assert_eq!(owner("2001"), Some("owned"));
    assert_eq!(owner("3000"), Some("foreign"));
    let temp = users.iter().find(|u| u["owner"] == "temporary").unwrap();
    assert_eq!(temp["ipei"], new_ipei, "{temp}");
    assert!(
        temp["number"].as_str().unwrap().starts_with("0100"),
        "{temp}"
    );

    let (ok, out, err) = hexidian(&w, &["omm", "users"], &config).await;
    assert!(ok, "{err}");
    eprintln!("{out}");
    assert!(
        out.contains("3 user(s): 1 foreign, 1 owned, 1 temporary"),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "a terminal escape reached the table:\n{out}"
    );
    let (ok, out, err) = hexidian(&w, &["omm", "devices"], &config).await;
    assert!(ok, "{err}");
    eprintln!("{out}");
    assert!(
        out.contains(foreign_ipei) && out.contains(new_ipei),
        "{out}"
    );
    assert!(out.contains("2 device(s): 1 foreign, 1 temporary"), "{out}");
    let (ok, out, err) = hexidian(&w, &["omm", "handset", foreign_ipei], &config).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("user: 3000") && out.contains("foreign: hexidian never changes it"),
        "{out}"
    );
    let (ok, out, err) = hexidian(&w, &["omm", "handset", "--json", new_ipei], &config).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["user"]["owner"], "temporary", "{out}");
    let (ok, _, err) = hexidian(&w, &["omm", "handset", "12345 1234567 1"], &config).await;
    assert!(!ok);
    assert!(err.contains("no handset") || err.contains("IPEI"), "{err}");
    // nothing was changed by looking
    assert_eq!(
        w.omm
            .view()
            .user_by_num("3000")
            .map(|(_, u)| u.get("name").cloned()),
        Some(Some("Reception \u{1b}[2J".to_owned()))
    );
    run.kill9().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `hexidian reconcile` finds no drift in an event hexidian applied, and every drift made
/// behind its back: an OMM user deleted and one renamed in the OMM's web interface, a foreign
/// OMM user added, a PBX endpoint deleted and a SIP password changed in psql. It changes
/// nothing; `--apply` repairs hexidian's own objects through the running broker and leaves
/// the foreign user alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_lists_drift_made_behind_hexidians_back_and_apply_repairs_only_its_own() {
    let w = World::new().await;
    let dir = std::env::temp_dir().join(format!("hexidian-reconcile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let run = Hexidian::spawn(BIN, &w, &config, None);
    for (n, name, kind) in [
        ("2001", "Lena Brandt", Kind::sip()),
        ("2002", "Kiosk Nord", Kind::dect()),
        ("2003", "Kiosk Süd", Kind::dect()),
        ("2004", "Desk", Kind::sip()),
        ("1100", "Infodesk", Kind::group("INF")),
    ] {
        w.guru3.save(Extension::new(n, name, kind)).unwrap();
    }
    w.guru3
        .set_members("1100", vec![Member::new("2001", 0), Member::new("2002", 5)])
        .unwrap();
    w.drained(Duration::from_secs(30)).await;
    let (ok, out, err) = hexidian(&w, &["reconcile"], &config).await;
    eprintln!("{out}");
    assert!(ok, "{out}{err}");
    assert!(out.contains("no drift"), "{out}");

    // behind hexidian's back
    let view = w.omm.view();
    let (kiosk, _) = view.user_by_num("2002").unwrap();
    let (sued, _) = view.user_by_num("2003").unwrap();
    assert!(w.omm.admin_delete_user(kiosk));
    assert!(w.omm.admin_set_user(sued, &[("name", "Renamed by hand")]));
    w.omm.seed_user(&[("num", "3000"), ("name", "Reception")]);
    w.sql
        .batch_execute(
            "DELETE FROM ps_endpoints WHERE id = '2001'; \
             UPDATE ps_auths SET password = 'changed1' WHERE id = '2004'",
        )
        .await
        .unwrap();
    let before = w.column("SELECT id FROM ps_auths").await;
    let (ok, out, _) = hexidian(&w, &["reconcile"], &config).await;
    eprintln!("{out}");
    assert!(!ok, "drift of hexidian's own objects exits non-zero");
    assert!(
        !out.contains("changed1"),
        "a password in the output:\n{out}"
    );
    let (_, out, _) = hexidian(&w, &["reconcile", "--json"], &config).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got: Vec<(String, String, String, Option<String>, bool)> = v["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap().to_owned(),
                d["number"].as_str().unwrap().to_owned(),
                d["drift"].as_str().unwrap().to_owned(),
                d["field"].as_str().map(str::to_owned),
                d["owned"].as_bool().unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        got,
        [
            (s("omm"), s("2002"), s("missing"), None, true),
            (s("omm"), s("2003"), s("different"), Some(s("name")), true),
            (s("omm"), s("3000"), s("foreign"), None, false),
            (s("pbx"), s("2001"), s("different"), Some(s("rows")), true),
            (
                s("pbx"),
                s("2004"),
                s("different"),
                Some(s("password")),
                true
            ),
        ],
        "{out}"
    );
    assert_eq!(v["owned_drift"], 4, "{out}");
    // looking changed nothing
    assert_eq!(w.column("SELECT id FROM ps_auths").await, before);
    assert!(w.omm.view().user_by_num("2002").is_none());

    // what a resync now would do about it, touching nothing
    let (ok, out, err) = hexidian(&w, &["explain", "--resync"], &config).await;
    eprintln!("{out}");
    assert!(ok, "{err}");
    assert!(out.contains("4 number(s) would change"), "{out}");
    assert!(out.contains("left alone: omm 3000"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("omm") && l.contains("upsert-user") && l.contains("2002")),
        "{out}"
    );
    assert!(w.omm.view().user_by_num("2002").is_none());

    // --apply: the running broker repairs hexidian's own, the foreign user stays
    let admin = run.admin().await.to_string();
    let (ok, out, err) = hexidian(&w, &["reconcile", "--apply", "--admin", &admin], &config).await;
    eprintln!("{out}");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("repaired through the broker: 2001, 2002, 2003, 2004"),
        "{out}"
    );
    let (ok, out, err) = hexidian(&w, &["reconcile"], &config).await;
    eprintln!("{out}");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("1 drift(s): 0 of hexidian's own, 1 foreign"),
        "{out}"
    );
    assert_eq!(
        w.omm
            .view()
            .user_by_num("3000")
            .map(|(_, u)| u["name"].clone()),
        Some("Reception".to_owned())
    );
    w.assert_converged().await;
    // repairs are the broker's own work, journalled apart: GURU3 hears no ack for them
    assert!(w.guru3.acked().iter().all(|id| *id > 0));
    let repairs: i64 = w
        .sql
        .query_one(
            "SELECT count(*) FROM hexidian.journal WHERE id < 0 AND kind = 'RECONCILE' AND status = 'done'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(repairs, 4);
    run.kill9().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

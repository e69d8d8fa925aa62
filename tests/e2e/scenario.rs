//! The whole scenario: every message type, live edits, a resync, hostile input.

use std::time::Duration;

use guru3_sim::{Extension, Forward, Kind, Member};

use crate::{World, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_end_to_end() {
    let w = World::new().await;
    hexidian_demo::seed(&w.guru3, 60).unwrap();
    let run = w.start().await;
    w.drained(Duration::from_secs(60)).await;
    w.assert_converged().await;

    let dects: Vec<Extension> = w
        .guru3
        .extensions()
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::Dect { .. }))
        .collect();
    let with_handset = dects.iter().find(|e| e.handset.is_some()).unwrap().clone();
    let other_handset = dects
        .iter()
        .filter(|e| e.handset.is_some())
        .nth(1)
        .unwrap()
        .clone();
    // rename a DECT extension with a handset: the handset follows, group lists are rewritten
    w.guru3.rename(&with_handset.number, "30000").unwrap();
    // type changes both ways, and a group that becomes a SIP extension
    w.guru3
        .edit(&dects[1].number, |e| e.kind = Kind::sip())
        .unwrap();
    w.guru3.edit("10020", |e| e.kind = Kind::dect()).unwrap(); // was SIP
    w.guru3.edit("10000", |e| e.kind = Kind::sip()).unwrap(); // was a GROUP
    // multiring on a SIP extension, a forward, a delete of a group member (silent cascade)
    w.guru3
        .set_members(
            "10001",
            vec![Member::new("10002", 0), Member::new("10003", 10)],
        )
        .unwrap();
    w.guru3
        .edit("10004", |e| {
            e.forward = Some(Forward {
                target: "10001".into(),
                mode: "ON_BUSY".into(),
                delay: 0,
            })
        })
        .unwrap();
    w.guru3.delete("10021").unwrap();
    // the other handset is released, but stays subscribed
    w.guru3.unsubscribe(&other_handset.number).unwrap();
    // types the broker records but does not act on
    w.guru3.call_extension("10001", "");
    w.guru3
        .inject("TELEPORT_EXTENSION", serde_json::json!({"number": "10001"}));
    w.drained(Duration::from_secs(60)).await;
    w.assert_converged().await;
    let view = w.omm.view();
    let (uid, _) = view.user_by_num("30000").expect("renamed OMM user");
    let h = with_handset.handset.unwrap();
    let dev = view
        .devices
        .iter()
        .find(|(_, d)| d.get("ipei") == Some(&h.ipei))
        .unwrap();
    assert_eq!(
        dev.1.get("uid"),
        Some(&uid.to_string()),
        "the handset followed the rename"
    );
    // the released handset stays subscribed and becomes an unbound one (a temporary number)
    let released = other_handset.handset.unwrap();
    crate::unbound::attached(&w, &released.ipei, |u| {
        u.get("hierarchy2").map(String::as_str) == Some(hexidian::adapters::TEMP_TAG)
    })
    .await;
    assert!(
        view.user_by_num(&dects[1].number).is_none(),
        "DECT→SIP removed the OMM user"
    );

    // a full resync changes nothing and sweeps nothing
    w.guru3.resync();
    w.drained(Duration::from_secs(60)).await;
    w.assert_converged().await;
    let (done, ignored, dead) = w.journal().await;
    assert_eq!(dead, 0);
    assert_eq!(ignored, 2, "CALL_EXTENSION and the unknown type");
    assert!(done > 100);
    // every message was acked
    assert!(w.guru3.queue().iter().all(|(_, _, delivered)| *delivered));

    let (status, body) = http_get(run.admin_addr().unwrap(), "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["omm"]["connected"], true);
    assert_eq!(ready["broker"]["dead"], 0);
    assert_eq!(http_get(run.admin_addr().unwrap(), "/healthz").await.0, 200);
    assert_eq!(http_get(run.admin_addr().unwrap(), "/nope").await.0, 404);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_sanitised_or_dead_lettered_and_the_queue_moves() {
    let w = World::new().await;
    let run = w.start().await;
    let hostile = "Robert'); DROP TABLE ps_endpoints;-- \"\\ <x/> ;^ 📞\u{202e}";
    w.guru3
        .save(Extension::new("2001", hostile, Kind::sip()))
        .unwrap();
    w.guru3
        .save(Extension::new("2002", hostile, Kind::dect()))
        .unwrap();
    // every element of the hostile page, as GURU3 would queue it
    let page: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(hexidian_testkit::fixtures_dir().join("guru3/get-messages-hostile.json"))
            .unwrap(),
    )
    .unwrap();
    for m in &page {
        if let (Some(kind), Some(data)) = (m["type"].as_str(), m.get("data")) {
            w.guru3.inject(kind, data.clone());
        }
    }
    // GURU3's real state for 2001 comes last, and a normal message after everything
    w.guru3
        .save(Extension::new("2001", hostile, Kind::sip()))
        .unwrap();
    w.guru3
        .save(Extension::new("2003", "Normal", Kind::sip()))
        .unwrap();
    w.drained(Duration::from_secs(60)).await;
    w.assert_converged().await;
    let (_, ignored, dead) = w.journal().await;
    assert_eq!(dead, 9, "the malformed messages of the hostile page");
    assert_eq!(ignored, 1, "the unknown type");
    let callerid: String = w
        .sql
        .query_one(
            "SELECT callerid::text FROM ps_endpoints WHERE id = '2001'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        callerid.ends_with("<2001>") && callerid.chars().count() <= 40,
        "{callerid}"
    );
    assert!(
        !callerid.contains(';') && !callerid.contains('^'),
        "{callerid}"
    );
    let endpoints: i64 = w
        .sql
        .query_one("SELECT count(*) FROM ps_endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(endpoints, 3, "nothing was dropped");
    let dead_row: (String, String) = w
        .sql
        .query(
            "SELECT reason, payload FROM hexidian.journal WHERE status = 'dead' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(dead_row.0.contains("malformed"), "{dead_row:?}");
    assert!(
        dead_row.1.contains("\"type\""),
        "the full payload is kept: {dead_row:?}"
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_and_name_changed_in_one_save_leave_one_user_per_number() {
    let w = World::new().await;
    let run = w.start().await;
    let known = "03587 0412396 2";
    let mut bound = Extension::new("3001", "Bound", Kind::dect());
    bound.handset = Some(guru3_sim::Handset {
        ipei: known.into(),
        uak: "FA05689957F199E95B1FE44621BFD6EE".into(),
    });
    w.guru3.save(bound).unwrap();
    w.guru3
        .save(Extension::new("3002", "Plain DECT", Kind::dect()))
        .unwrap();
    w.guru3
        .save(Extension::new("3003", "Softphone", Kind::sip()))
        .unwrap();
    w.save_drained(Extension::new("3004", "Infodesk", Kind::group("INF")))
        .await;
    // one save each: new number and new name (GURU3: RENAME then UPDATE, one page)
    for (old, new) in [
        ("3001", "3201"),
        ("3002", "3202"),
        ("3003", "3203"),
        ("3004", "3204"),
    ] {
        w.guru3
            .rename_and_edit(old, new, |e| e.name = format!("Renamed {new}"))
            .unwrap();
    }
    w.drained(Duration::from_secs(30)).await;
    w.assert_converged().await;
    let (_, _, dead) = w.journal().await;
    assert_eq!(dead, 0, "no rename was refused");
    let view = w.omm.view();
    for (num, name) in [("3201", "Renamed 3201"), ("3202", "Renamed 3202")] {
        let (_, u) = view.user_by_num(num).unwrap();
        assert_eq!(u.get("name").map(String::as_str), Some(name));
    }
    for gone in ["3001", "3002"] {
        assert!(view.user_by_num(gone).is_none(), "stale OMM user {gone}");
    }
    assert_eq!(view.users.len(), 2, "exactly one OMM user per DECT number");
    let holder = view
        .devices
        .iter()
        .map(|(_, d)| d)
        .find(|d| d.get("ipei").map(String::as_str) == Some(known))
        .and_then(|d| d.get("uid").cloned());
    assert_eq!(
        holder,
        view.user_by_num("3201").map(|(uid, _)| uid.to_string()),
        "the handset moved with its extension"
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_provisions_and_an_empty_password_says_what_to_do() {
    let w = World::new().await;
    let run = w.start().await;
    // extensions made by GURU3 code paths that skip the type's initialisation
    w.guru3.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "2050", "name": "No token", "type": "DECT", "token": "",
            "useEncryption": false, "displayModus": "NUMBER_NAME", "location": "", "language": "en-US",
            "ringback": "", "call_waiting": true, "allow_dialout": false}),
    );
    let sip = w.guru3.inject(
        "UPDATE_EXTENSION",
        serde_json::json!({"number": "2051", "name": "No password", "type": "SIP", "password": "",
            "isPremium": false, "location": "", "language": "en-US", "ringback": "",
            "call_waiting": true, "allow_dialout": false}),
    );
    w.drained(Duration::from_secs(30)).await;
    assert!(
        w.omm.view().user_by_num("2050").is_some(),
        "provisioned without token binding"
    );
    let reason: Option<String> = w
        .sql
        .query_one(
            "SELECT reason FROM hexidian.journal WHERE id = $1 AND status = 'dead'",
            &[&sip],
        )
        .await
        .unwrap()
        .get(0);
    let reason = reason.unwrap();
    assert!(reason.contains("set a SIP password"), "{reason}");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_edit_costs_guru3_two_requests() {
    let w = World::new().await;
    let run = w.start().await;
    w.save_drained(Extension::new("2001", "First", Kind::dect()))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..5 {
        let (gets, posts) = w.guru3.request_counts();
        w.guru3
            .edit("2001", |e| e.name = format!("Edit {i}"))
            .unwrap();
        w.drained(Duration::from_secs(30)).await;
        // whatever the edit's own frames and our ack's frame could still trigger
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (g, p) = w.guru3.request_counts();
        assert_eq!((g - gets, p - posts), (1, 1), "edit {i}: GETs and POSTs");
    }
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premium_sip_extensions_get_the_premium_endpoint_template() {
    let w = World::new().await;
    let mut s = w.settings();
    let mut premium = asterisk_realtime::EndpointTemplate::default();
    premium.context = "call-router-premium".into();
    let pg = asterisk_realtime::Config::new(&w.hexidian_url())
        .unwrap()
        .routing_reader(Some(hexidian_e2e::ASTERISK_ROLE.into()))
        .premium_template(Some(premium));
    s.store = hexidian::StoreSettings::Postgres(Box::new(pg));
    let run = hexidian::start(s).await.unwrap();
    let mut vip = Extension::new("2001", "VIP", Kind::sip());
    if let Kind::Sip { premium, .. } = &mut vip.kind {
        *premium = true;
    }
    w.guru3.save(vip).unwrap();
    w.save_drained(Extension::new("2002", "Regular", Kind::sip()))
        .await;
    let context = |id: &'static str| {
        let sql = &w.sql;
        async move {
            sql.query_one("SELECT context FROM ps_endpoints WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(context("2001").await, "call-router-premium");
    assert_eq!(context("2002").await, "call-router");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hexidian_migrate_prepares_both_ledgers_once_and_the_broker_runs_on_them() {
    let w = World::new().await;
    let example = hexidian_testkit::fixtures_dir().join("../examples/hexidian.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let text = text.replace(
        "url = \"host=/run/postgresql dbname=asterisk user=hexidian\"",
        &format!("url = {:?}", w.hexidian_url()),
    );
    assert!(
        text.contains(&w.hexidian_url()),
        "the example's [postgres] url moved"
    );
    let dir = std::env::temp_dir().join(format!("hexidian-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hexidian.toml");
    std::fs::write(&path, text).unwrap();
    let counts = || async {
        let pbx: i64 = w
            .sql
            .query_one("SELECT count(*) FROM hexidian.schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        let state: i64 = w
            .sql
            .query_one("SELECT count(*) FROM hexidian.state_migrations", &[])
            .await
            .unwrap()
            .get(0);
        (pbx, state)
    };
    hexidian::config::migrate(&path).await.unwrap();
    let first = counts().await;
    assert_eq!(first, (4, 8), "PBX ledger 1 and 5-7, state ledger 1-8");
    hexidian::config::migrate(&path).await.unwrap();
    assert_eq!(counts().await, first, "a second migrate runs nothing");
    std::fs::remove_dir_all(&dir).unwrap();
    // the broker's journal and mirror live in the state tables
    let run = w.start().await;
    w.save_drained(Extension::new("2001", "First", Kind::sip()))
        .await;
    let journal: i64 = w
        .sql
        .query_one("SELECT count(*) FROM hexidian.journal", &[])
        .await
        .unwrap()
        .get(0);
    assert!(journal >= 1, "journal rows: {journal}");
    run.stop().await.unwrap();
}

use asterisk_realtime::{Change, Error, Kind, Outcome, UserSpec};

use crate::{count, dect, env, ext, pw, rows, sip};

#[tokio::test]
async fn sip_user_round_trip() {
    let e = env().await;
    let out = e
        .store
        .upsert_user(sip("2001", "Lena Brandt", "e1vdxzqL"))
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::User {
            password: pw("e1vdxzqL"),
            created: true
        }
    );
    assert_eq!(
        rows(&e.sql, "2001").await,
        vec![
            "ps_endpoints: 2001|2001|2001|call-router|all|g722,alaw,ulaw|no|rfc4733|\"Lena Brandt\" <2001>|yes|yes|yes",
            "ps_aors: 2001|1|yes|60",
            "ps_auths: 2001|userpass|2001|e1vdxzqL",
        ]
    );
    // idempotent: the same upsert again changes nothing and reports an existing user
    let again = e
        .store
        .upsert_user(sip("2001", "Lena Brandt", "e1vdxzqL"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Outcome::User {
            password: pw("e1vdxzqL"),
            created: false
        }
    );
    let u = e.store.user(&ext("2001")).await.unwrap().unwrap();
    assert!(u.is_complete());
    assert_eq!(
        (u.kind, u.display_name.as_str()),
        (Some(Kind::Sip), "Lena Brandt")
    );

    // password and caller id updates
    assert_eq!(
        e.store
            .set_password(ext("2001"), pw("NewPass42"))
            .await
            .unwrap(),
        Outcome::Done(true)
    );
    assert_eq!(
        e.store
            .set_display_name(ext("2001"), "Lena B.".into())
            .await
            .unwrap(),
        Outcome::Done(true)
    );
    let r = rows(&e.sql, "2001").await;
    assert!(
        r[0].contains("\"Lena B.\" <2001>") && r[2].ends_with("|NewPass42"),
        "{r:?}"
    );
    assert_eq!(
        e.store.set_password(ext("9999"), pw("x")).await.unwrap(),
        Outcome::Done(false)
    );

    // delete in reverse order, then a no-op delete
    assert_eq!(
        e.store.delete_user(ext("2001")).await.unwrap(),
        Outcome::Done(true)
    );
    assert!(rows(&e.sql, "2001").await.is_empty());
    assert_eq!(
        e.store.delete_user(ext("2001")).await.unwrap(),
        Outcome::Done(false)
    );
    assert_eq!(count(&e.sql, "hexidian.sip_user").await, 0);
}

#[tokio::test]
async fn dect_password_is_generated_once_and_kept() {
    let e = env().await;
    let Outcome::User {
        password: first,
        created: true,
    } = e
        .store
        .upsert_user(dect("2002", "Kiosk Nord"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(first.expose().len(), 16);
    let Outcome::User {
        password: second,
        created: false,
    } = e
        .store
        .upsert_user(dect("2002", "Kiosk Nord 2"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(first, second, "a DECT password must survive updates");
    let r = rows(&e.sql, "2002").await;
    assert!(r[1].ends_with("|0"), "DECT users are not qualified: {r:?}");

    // SIP -> DECT gets a fresh password (the SIP one was known to the user)
    e.store
        .upsert_user(sip("2003", "Type Change", "KnownToUser1"))
        .await
        .unwrap();
    let Outcome::User { password, .. } = e
        .store
        .upsert_user(dect("2003", "Type Change"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(password.expose(), "KnownToUser1");
    assert_eq!(
        e.store.user(&ext("2003")).await.unwrap().unwrap().kind,
        Some(Kind::Dect)
    );

    // temporary users land in the restricted context
    let temp = UserSpec {
        premium: false,
        routing: Default::default(),
        extension: ext("0104242"),
        kind: Kind::Temp,
        name: "Unbound Handset".into(),
        password: None,
    };
    e.store.upsert_user(temp).await.unwrap();
    assert!(rows(&e.sql, "0104242").await[0].contains("|call-router-temp|"));
}

#[tokio::test]
async fn sip_user_without_password_is_rejected() {
    let e = env().await;
    let spec = UserSpec {
        premium: false,
        routing: Default::default(),
        extension: ext("2001"),
        kind: Kind::Sip,
        name: "x".into(),
        password: None,
    };
    assert!(matches!(
        e.store.upsert_user(spec).await,
        Err(Error::Config(_))
    ));
    assert!(rows(&e.sql, "2001").await.is_empty());
}

#[tokio::test]
async fn hostile_names_are_stored_safely() {
    let e = env().await;
    let hostile = [
        "'; DROP TABLE ps_endpoints; --",
        "Bühnentechnik \"Stage\" <Patch>; Rack 3",
        "a^3Bb;c\\d",
        "nul\u{0}byte",
        "Tomás R. 📞📞📞",
        &"x".repeat(10_240),
        "\u{202e}rtl\u{7}bell\r\nnewline",
    ];
    for (i, name) in hostile.iter().enumerate() {
        let number = format!("30{i:02}");
        e.store
            .upsert_user(sip(&number, name, "Secret123"))
            .await
            .unwrap();
        let callerid: String = e
            .sql
            .query_one(
                "SELECT callerid FROM ps_endpoints WHERE id = $1",
                &[&number],
            )
            .await
            .unwrap()
            .get(0);
        assert!(callerid.chars().count() <= 40, "{callerid}");
        assert!(
            !callerid.contains(';')
                && !callerid.contains('^')
                && !callerid.chars().any(char::is_control),
            "{callerid:?}"
        );
        assert!(callerid.ends_with(&format!("<{number}>")), "{callerid}");
    }
    assert_eq!(count(&e.sql, "ps_endpoints").await, hostile.len() as i64);
    // 41-character caller ids cannot happen: the longest name gives exactly 35 - len(number) chars
    let long: String = e
        .sql
        .query_one("SELECT callerid FROM ps_endpoints WHERE id = '3005'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(long.chars().count(), 40);
}

#[tokio::test]
async fn hostile_ids_and_passwords_are_rejected_before_sql() {
    for bad in [
        "'; DROP TABLE ps_endpoints; --",
        "12 34",
        "",
        "2001%",
        "٢٠٠١",
    ] {
        assert!(
            bad.parse::<asterisk_realtime::Extension>().is_err(),
            "{bad}"
        );
    }
    for bad in ["pw;evil", "pw^3B", "p w", "\u{0}", &"a".repeat(81)] {
        assert!(
            bad.parse::<asterisk_realtime::SipPassword>().is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn foreign_rows_are_never_touched() {
    let e = env().await;
    e.sql
        .batch_execute("INSERT INTO ps_endpoints (id, context, callerid) VALUES ('4000', 'operators', 'Operator'); INSERT INTO ps_auths (id, password) VALUES ('4001', 'opsecret')")
        .await
        .unwrap();
    for id in ["4000", "4001"] {
        let err = e
            .store
            .upsert_user(sip(id, "Mine now?", "Secret123"))
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
        assert_eq!(
            e.store.delete_user(ext(id)).await.unwrap(),
            Outcome::Done(false)
        );
    }
    assert_eq!(
        rows(&e.sql, "4000").await,
        vec!["ps_endpoints: 4000|operators|Operator"]
    );
    assert_eq!(rows(&e.sql, "4001").await, vec!["ps_auths: 4001|opsecret"]);
    assert_eq!(
        e.store
            .list_foreign(&["operators", "call-router"])
            .await
            .unwrap(),
        vec![("4000".to_owned(), "operators".to_owned())]
    );
    // the conflicting change is rolled back alone inside a batch; the rest commits
    let results = e
        .store
        .apply(&[
            Change::UpsertUser(sip("4000", "x", "Secret123")),
            Change::UpsertUser(sip("4002", "ok", "Secret123")),
        ])
        .await
        .unwrap();
    assert!(results[0].as_ref().unwrap_err().is_conflict());
    assert!(results[1].is_ok());
    assert_eq!(rows(&e.sql, "4002").await.len(), 3);
}

#[tokio::test]
async fn adoption_of_foreign_rows_when_configured() {
    let e = crate::env_with(crate::Flavor::Modern, |c| c.adopt_foreign_rows(true)).await;
    e.sql
        .batch_execute(
            "INSERT INTO ps_endpoints (id, context, language) VALUES ('4000', 'operators', 'de')",
        )
        .await
        .unwrap();
    e.store
        .upsert_user(sip("4000", "Adopted", "Secret123"))
        .await
        .unwrap();
    // managed columns are overwritten, the operator's other columns survive
    let lang: String = e
        .sql
        .query_one("SELECT language FROM ps_endpoints WHERE id = '4000'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lang, "de");
    assert!(
        e.store
            .user(&ext("4000"))
            .await
            .unwrap()
            .unwrap()
            .is_complete()
    );
}

#[tokio::test]
async fn drift_is_detected() {
    let e = env().await;
    e.store
        .upsert_user(sip("2001", "A", "Secret123"))
        .await
        .unwrap();
    e.store
        .upsert_user(sip("2002", "B", "Secret123"))
        .await
        .unwrap();
    e.sql.batch_execute("DELETE FROM ps_auths WHERE id = '2001'; UPDATE ps_endpoints SET auth = 'other' WHERE id = '2002'").await.unwrap();
    let users = e.store.list_managed().await.unwrap();
    assert_eq!(users.len(), 2);
    assert!(!users[0].has_auth && !users[0].is_complete());
    assert!(users[1].has_auth && !users[1].links_ok);
    // a re-upsert repairs both
    e.store
        .upsert_user(sip("2001", "A", "Secret123"))
        .await
        .unwrap();
    e.store
        .upsert_user(sip("2002", "B", "Secret123"))
        .await
        .unwrap();
    assert!(
        e.store
            .list_managed()
            .await
            .unwrap()
            .iter()
            .all(asterisk_realtime::ManagedUser::is_complete)
    );
}

#[tokio::test]
async fn rename_moves_all_rows_atomically() {
    let e = env().await;
    e.store
        .upsert_user(sip("2002", "Kiosk Nord", "Secret123"))
        .await
        .unwrap();
    assert_eq!(
        e.store.rename(ext("2002"), ext("2020")).await.unwrap(),
        Outcome::Done(true)
    );
    assert!(rows(&e.sql, "2002").await.is_empty());
    assert_eq!(
        rows(&e.sql, "2020").await,
        vec![
            "ps_endpoints: 2020|2020|2020|call-router|all|g722,alaw,ulaw|no|rfc4733|\"Kiosk Nord\" <2020>|yes|yes|yes",
            "ps_aors: 2020|1|yes|60",
            "ps_auths: 2020|userpass|2020|Secret123",
        ]
    );
    // re-running after an unknown commit outcome is a no-op
    assert_eq!(
        e.store.rename(ext("2002"), ext("2020")).await.unwrap(),
        Outcome::Done(false)
    );

    // a failure mid-way (the new id is foreign in ps_aors) leaves the old user intact
    e.store
        .upsert_user(sip("2100", "Old", "Secret123"))
        .await
        .unwrap();
    e.sql
        .batch_execute("INSERT INTO ps_aors (id) VALUES ('2200')")
        .await
        .unwrap();
    let before = rows(&e.sql, "2100").await;
    assert!(
        e.store
            .rename(ext("2100"), ext("2200"))
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(rows(&e.sql, "2100").await, before);
    assert_eq!(rows(&e.sql, "2200").await, vec!["ps_aors: 2200"]);

    // a stale managed user at the target is replaced
    e.store
        .upsert_user(sip("2300", "Stale", "Secret123"))
        .await
        .unwrap();
    e.store.rename(ext("2100"), ext("2300")).await.unwrap();
    assert!(rows(&e.sql, "2300").await[0].contains("\"Old\" <2300>"));
    assert_eq!(count(&e.sql, "hexidian.sip_user").await, 2);
}

#[tokio::test]
async fn batched_upserts_match_single_upserts() {
    use asterisk_realtime::Change;
    let e = env().await;
    e.store
        .upsert_user(sip("8001", "was sip", "KnownToUser1"))
        .await
        .unwrap();
    let Outcome::User { password: kept, .. } =
        e.store.upsert_user(dect("8002", "dect")).await.unwrap()
    else {
        panic!()
    };
    let batch = vec![
        Change::UpsertUser(dect("8001", "now dect")),
        Change::UpsertUser(dect("8002", "dect renamed")),
        Change::UpsertUser(sip("8003", "new sip", "Secret123")),
        Change::UpsertUser(UserSpec {
            premium: false,
            routing: Default::default(),
            extension: ext("8004"),
            kind: Kind::Sip,
            name: "no pw".into(),
            password: None,
        }),
        // a repeated id ends the pipelined run and is applied after it, in order
        Change::UpsertUser(sip("8003", "new sip again", "Secret456")),
    ];
    let out = e.store.apply(&batch).await.unwrap();
    let Ok(Outcome::User {
        password: fresh,
        created: false,
    }) = &out[0]
    else {
        panic!("{:?}", out[0])
    };
    assert_ne!(
        fresh.expose(),
        "KnownToUser1",
        "SIP -> DECT must not keep the SIP password"
    );
    assert_eq!(
        out[1].as_ref().unwrap(),
        &Outcome::User {
            password: kept,
            created: false
        }
    );
    assert_eq!(
        out[2].as_ref().unwrap(),
        &Outcome::User {
            password: pw("Secret123"),
            created: true
        }
    );
    assert!(matches!(out[3], Err(Error::Config(_))));
    assert_eq!(
        out[4].as_ref().unwrap(),
        &Outcome::User {
            password: pw("Secret456"),
            created: false
        }
    );
    assert!(rows(&e.sql, "8003").await[0].contains("\"new sip again\" <8003>"));
    assert!(rows(&e.sql, "8004").await.is_empty());
    assert_eq!(
        e.store.user(&ext("8001")).await.unwrap().unwrap().kind,
        Some(Kind::Dect)
    );
}

#[tokio::test]
async fn group_upserts_inside_a_run_of_users_keep_their_results_in_order() {
    use asterisk_realtime::Change;
    let e = env().await;
    let group = |n: &str| Change::UpsertGroup {
        extension: ext(n),
        name: format!("Group {n}"),
        short_name: "G".into(),
    };
    let batch = vec![
        Change::UpsertUser(sip("8001", "a", "Secret001")),
        group("8100"),
        Change::UpsertUser(sip("8002", "b", "Secret002")),
        // the same id as a user of the run: the run ends before it
        group("8001"),
        Change::UpsertUser(UserSpec {
            premium: false,
            routing: Default::default(),
            extension: ext("8003"),
            kind: Kind::Sip,
            name: "no pw".into(),
            password: None,
        }),
        Change::UpsertUser(sip("8004", "d", "Secret004")),
    ];
    let out = e.store.apply(&batch).await.unwrap();
    assert!(matches!(out[0], Ok(Outcome::User { .. })), "{:?}", out[0]);
    assert!(matches!(out[1], Ok(Outcome::Done(true))), "{:?}", out[1]);
    assert!(matches!(out[2], Ok(Outcome::User { .. })), "{:?}", out[2]);
    assert!(matches!(out[3], Ok(Outcome::Done(true))), "{:?}", out[3]);
    assert!(out[4].is_err(), "a SIP user without password fails alone");
    assert!(matches!(out[5], Ok(Outcome::User { .. })), "{:?}", out[5]);
    let groups: i64 = e
        .sql
        .query_one(
            "SELECT count(*) FROM hexidian.callgroup WHERE is_group",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(groups, 2);
    let users: i64 = e
        .sql
        .query_one("SELECT count(*) FROM ps_endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 3);
}

#[tokio::test]
async fn premium_sip_users_get_the_premium_template_on_both_paths() {
    let mut premium = asterisk_realtime::EndpointTemplate::default();
    premium.context = "call-router-premium".into();
    premium.transport = Some("transport-premium".into());
    premium.allow = "opus,g722".into();
    let e = crate::env_with(crate::Flavor::Modern, |c| c.premium_template(Some(premium))).await;
    let mut vip = sip("2001", "VIP", "e1vdxzqL");
    vip.premium = true;
    let plain = sip("2002", "Plain", "e1vdxzqM");
    // the set-based path (a run of upserts) and the single one
    e.store
        .apply(&[Change::UpsertUser(vip.clone()), Change::UpsertUser(plain)])
        .await
        .unwrap();
    let mut vip3 = sip("2003", "VIP alone", "e1vdxzqN");
    vip3.premium = true;
    e.store.upsert_user(vip3).await.unwrap();
    let row = |id: &'static str| {
        let sql = &e.sql;
        async move {
            let r = sql
                .query_one(
                    "SELECT context, coalesce(transport, ''), allow FROM ps_endpoints WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            )
        }
    };
    let want = (
        "call-router-premium".to_owned(),
        "transport-premium".to_owned(),
        "opus,g722".to_owned(),
    );
    assert_eq!(row("2001").await, want);
    assert_eq!(row("2003").await, want);
    assert_eq!(row("2002").await.0, "call-router");
}

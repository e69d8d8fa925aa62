use asterisk_realtime::{Change, Error, Kind, Member, Outcome, UserSpec};

use crate::{Flavor, count, dect, env, env_with, ext, sip};

#[tokio::test]
async fn resync_sweeps_only_unseen_owned_users_never_temporary_or_foreign() {
    let e = env().await;
    for n in 2000..2010 {
        e.store
            .upsert_user(sip(&n.to_string(), "old", "Secret123"))
            .await
            .unwrap();
    }
    e.store
        .upsert_user(UserSpec {
            premium: false,
            routing: Default::default(),
            extension: ext("0104242"),
            kind: Kind::Temp,
            name: "Unbound Handset".into(),
            password: None,
        })
        .await
        .unwrap();
    e.sql
        .batch_execute("INSERT INTO ps_endpoints (id, context) VALUES ('9000', 'call-router')")
        .await
        .unwrap();
    e.store
        .apply(&[
            Change::UpsertGroup {
                extension: ext("1100"),
                name: "G".into(),
                short_name: String::new(),
            },
            Change::SetMembers {
                extension: ext("1100"),
                name: "G".into(),
                members: vec![Member {
                    extension: ext("2000"),
                    active: true,
                    delay_s: 0,
                }],
            },
            Change::SetMembers {
                extension: ext("2001"),
                name: "multi".into(),
                members: vec![Member {
                    extension: ext("2002"),
                    active: true,
                    delay_s: 0,
                }],
            },
        ])
        .await
        .unwrap();

    // registrations Asterisk keeps in the database: by endpoint, and by AOR id only
    e.sql
        .batch_execute(
            "INSERT INTO ps_contacts (id, uri, endpoint) VALUES \
             ('2008^3B@aaa', 'sip:2008@10.0.0.8', '2008'), ('2009^3B@bbb', 'sip:2009@10.0.0.9', NULL), \
             ('2001^3B@ccc', 'sip:2001@10.0.0.1', '2001')",
        )
        .await
        .unwrap();
    let epoch = e.store.begin_sync().await.unwrap();
    // the resync re-sends 8 of the 10 users and group 1100, but no member lists
    let changes: Vec<Change> = (2000..2008)
        .map(|n| Change::UpsertUser(sip(&n.to_string(), "new", "Secret123")))
        .chain([Change::UpsertGroup {
            extension: ext("1100"),
            name: "G".into(),
            short_name: String::new(),
        }])
        .collect();
    assert!(
        e.store
            .apply(&changes)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let report = e.store.end_sync(epoch).await.unwrap();
    assert_eq!(report.users, ["2008", "2009"]);
    let contacts: Vec<String> = e
        .sql
        .query("SELECT id::text FROM ps_contacts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        contacts,
        ["2001^3B@ccc"],
        "the swept users' contacts are gone"
    );
    assert_eq!(
        report.groups,
        ["2001"],
        "a multiring list not re-sent is empty now"
    );
    assert_eq!(
        count(&e.sql, "hexidian.sip_user").await,
        9,
        "8 users + the temporary one"
    );
    assert_eq!(
        count(&e.sql, "ps_endpoints").await,
        10,
        "8 + temp + foreign 9000"
    );
    assert_eq!(
        e.store
            .members(&ext("1100"))
            .await
            .unwrap()
            .unwrap()
            .1
            .len(),
        0,
        "1100's list was not re-sent"
    );
    let route = e.store.routes(Some(&ext("1100"))).await.unwrap();
    assert_eq!(
        route[0].dialstring, "",
        "the sweep rebuilt the route of the cleared list"
    );
    // ending twice is harmless
    assert!(e.store.end_sync(epoch).await.unwrap().users.is_empty());
}

#[tokio::test]
async fn sweep_guard_refuses_mass_deletion() {
    let e = env_with(Flavor::Modern, |c| c.max_sweep_fraction(0.3)).await;
    for n in 2000..2010 {
        e.store
            .upsert_user(dect(&n.to_string(), "d"))
            .await
            .unwrap();
    }
    let epoch = e.store.begin_sync().await.unwrap();
    e.store.upsert_user(dect("2000", "d")).await.unwrap();
    let err = e.store.end_sync(epoch).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SweepRefused {
                stale: 9,
                total: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        count(&e.sql, "hexidian.sip_user").await,
        10,
        "nothing deleted"
    );
    // a newer sync supersedes the refused one
    let epoch2 = e.store.begin_sync().await.unwrap();
    assert!(epoch2 > epoch);
    let all: Vec<Change> = (2000..2010)
        .map(|n| Change::UpsertUser(dect(&n.to_string(), "d")))
        .collect();
    e.store.apply(&all).await.unwrap();
    assert!(e.store.end_sync(epoch2).await.unwrap().users.is_empty());
    assert!(
        e.store.end_sync(epoch).await.unwrap().users.is_empty(),
        "an outdated epoch sweeps nothing"
    );
}

#[tokio::test]
async fn a_sweep_leaves_the_resync_open_until_it_is_finished() {
    let e = env().await;
    for n in ["2001", "2002", "2003", "2004"] {
        e.store.upsert_user(sip(n, "x", "Secret123")).await.unwrap();
    }
    let epoch = e.store.begin_sync().await.unwrap();
    for n in ["2001", "2003", "2004"] {
        e.store.upsert_user(sip(n, "x", "Secret123")).await.unwrap();
    }
    assert_eq!(e.store.sweep(epoch).await.unwrap().users, ["2002"]);
    assert_eq!(e.store.sync_state().await.unwrap(), (epoch, true));
    // a crash before the finish: the SYNC_ENDED that comes again sweeps again, harmlessly
    assert!(e.store.sweep(epoch).await.unwrap().users.is_empty());
    e.store.finish_sync(epoch).await.unwrap();
    assert_eq!(e.store.sync_state().await.unwrap(), (epoch, false));
    assert_eq!(count(&e.sql, "hexidian.sip_user").await, 3);
}

/// Row versions (`xmin`) of every row an id has, to tell a rewrite from a read.
async fn versions(sql: &tokio_postgres::Client, id: &str) -> Vec<String> {
    const VERSIONS: &str = "SELECT 'ps_endpoints ' || xmin::text FROM ps_endpoints WHERE id = $1 \
        UNION ALL SELECT 'ps_aors ' || xmin::text FROM ps_aors WHERE id = $1 \
        UNION ALL SELECT 'ps_auths ' || xmin::text FROM ps_auths WHERE id = $1 \
        UNION ALL SELECT 'sip_user ' || xmin::text FROM hexidian.sip_user WHERE id = $1";
    let mut out: Vec<String> = sql
        .query(VERSIONS, &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_resync_of_unchanged_users_rewrites_no_row_and_sweeps_none_of_them() {
    unchanged_resync(Flavor::Modern).await;
    unchanged_resync(Flavor::Legacy).await;
}

async fn unchanged_resync(flavor: Flavor) {
    let e = env_with(flavor, |c| c).await;
    let spec = |n: u32| {
        if n % 2 == 0 {
            sip(&n.to_string(), "same", "Secret123")
        } else {
            dect(&n.to_string(), "same")
        }
    };
    let all: Vec<Change> = (2000..2010).map(|n| Change::UpsertUser(spec(n))).collect();
    let first = e.store.apply(&all).await.unwrap();
    let mut before = Vec::new();
    for n in 2000..2010 {
        before.push(versions(&e.sql, &n.to_string()).await);
    }
    let epoch = e.store.begin_sync().await.unwrap();
    // the resync re-sends 2000..2007 unchanged in one batch, 2008 changed, not 2009
    let mut again: Vec<Change> = (2000..2008).map(|n| Change::UpsertUser(spec(n))).collect();
    again.push(Change::UpsertUser(sip("2008", "renamed", "Secret123")));
    let second = e.store.apply(&again).await.unwrap();
    for (a, b) in first.iter().zip(&second).take(8) {
        let (
            Outcome::User { password: p1, .. },
            Outcome::User {
                password: p2,
                created,
            },
        ) = (a.as_ref().unwrap(), b.as_ref().unwrap())
        else {
            panic!("users expected: {a:?} {b:?}")
        };
        assert_eq!(p1.expose(), p2.expose(), "the stored password comes back");
        assert!(!created);
    }
    for n in 2000..2008 {
        let i = (n - 2000) as usize;
        assert_eq!(
            versions(&e.sql, &n.to_string()).await,
            before[i],
            "{n}: re-sent unchanged, no row rewritten"
        );
        assert_eq!(
            e.store
                .user(&ext(&n.to_string()))
                .await
                .unwrap()
                .unwrap()
                .seen_epoch,
            epoch,
            "{n} counts as seen in the open resync"
        );
    }
    assert_ne!(
        versions(&e.sql, "2008").await,
        before[8],
        "a changed user is written"
    );
    // 2007 is renamed during the resync (GURU3 does not re-send it under its new number)
    e.store.rename(ext("2007"), ext("2107")).await.unwrap();
    let report = e.store.end_sync(epoch).await.unwrap();
    assert_eq!(report.users, ["2009"], "only the user not re-sent is swept");
    assert!(e.store.user(&ext("2107")).await.unwrap().is_some());
    // the next resync starts afresh: what it does not re-send is swept
    let epoch2 = e.store.begin_sync().await.unwrap();
    let third: Vec<Change> = (2000..2007).map(|n| Change::UpsertUser(spec(n))).collect();
    e.store.apply(&third).await.unwrap();
    let report = e.store.end_sync(epoch2).await.unwrap();
    assert_eq!(report.users, ["2008", "2107"]);
    let marks: i64 = e
        .sql
        .query_one("SELECT count(*) FROM hexidian.sync_seen", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marks, 1, "only the last epoch's batch marks are kept");
}

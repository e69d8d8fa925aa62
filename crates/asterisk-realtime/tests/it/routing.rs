//! The per-user routing the dialplan reads (`hexidian.route`): written with the user in one
//! transaction (single and bulk paths), carried along by renames, gone with the user.

use asterisk_realtime::{CallerDisplay, Change, ForwardMode, ForwardRule, Routing};

use crate::{Flavor, dect, env, env_with, ext, sip};

async fn route(sql: &tokio_postgres::Client, id: &str) -> Option<String> {
    sql.query_opt(
        "SELECT concat_ws('|', id, kind, forward_mode, forward_target, forward_delay_s, trunk, \
         call_waiting, allow_dialout, display) FROM hexidian.route WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

fn forward(mode: ForwardMode, target: &str, delay_s: i32) -> Routing {
    Routing {
        forward: Some(ForwardRule {
            mode,
            target: ext(target),
            delay_s,
        }),
        ..Routing::default()
    }
}

#[tokio::test]
async fn routing_is_written_with_the_user_in_both_paths_and_on_both_schemas() {
    for flavor in [Flavor::Modern, Flavor::Legacy] {
        let e = env_with(flavor, |c| c).await;
        // single path
        let mut a = sip("2001", "A", "Secret123");
        a.routing = forward(ForwardMode::Always, "2002", 15);
        e.store.upsert_user(a).await.unwrap();
        assert_eq!(
            route(&e.sql, "2001").await.unwrap(),
            "2001|sip|ENABLED|2002|15|no|yes|no|NUMBER_NAME"
        );
        // bulk path (a run of distinct upserts), every field away from its default
        let mut b = dect("2002", "B");
        b.routing = Routing {
            trunk: true,
            call_waiting: false,
            allow_dialout: true,
            display: CallerDisplay::Name,
            ..forward(ForwardMode::OnUnavailable, "2003", 9999)
        };
        let mut c = dect("2003", "C");
        c.routing.display = CallerDisplay::Number;
        e.store
            .apply(&[Change::UpsertUser(b), Change::UpsertUser(c)])
            .await
            .unwrap()
            .into_iter()
            .for_each(|r| drop(r.unwrap()));
        assert_eq!(
            route(&e.sql, "2002").await.unwrap(),
            "2002|dect|ON_UNAVAILABLE|2003|600|yes|no|yes|NAME",
            "delay clamped to 600 s"
        );
        assert_eq!(
            route(&e.sql, "2003").await.unwrap(),
            "2003|dect|||0|no|yes|no|NUMBER"
        );
        // an update without a forward clears it
        e.store
            .upsert_user(sip("2001", "A", "Secret123"))
            .await
            .unwrap();
        assert_eq!(
            route(&e.sql, "2001").await.unwrap(),
            "2001|sip|||0|no|yes|no|NUMBER_NAME"
        );
    }
}

#[tokio::test]
async fn a_rename_moves_the_route_and_rewrites_forwards_to_it_and_a_delete_removes_it() {
    let e = env().await;
    let mut a = sip("2001", "A", "Secret123");
    a.routing = forward(ForwardMode::OnBusy, "2002", 0);
    let mut b = dect("2002", "B");
    b.routing.call_waiting = false;
    e.store.upsert_user(a).await.unwrap();
    e.store.upsert_user(b).await.unwrap();
    e.store.rename(ext("2002"), ext("2202")).await.unwrap();
    assert_eq!(route(&e.sql, "2002").await, None);
    assert_eq!(
        route(&e.sql, "2202").await.unwrap(),
        "2202|dect|||0|no|no|no|NUMBER_NAME"
    );
    assert_eq!(
        route(&e.sql, "2001").await.unwrap(),
        "2001|sip|ON_BUSY|2202|0|no|yes|no|NUMBER_NAME",
        "GURU3 does not re-send forwards on a rename of their target"
    );
    e.store.delete_user(ext("2202")).await.unwrap();
    assert_eq!(route(&e.sql, "2202").await, None);
    // the forward to a number that is gone stays: the dialplan skips it at call time
    assert!(
        route(&e.sql, "2001")
            .await
            .unwrap()
            .contains("ON_BUSY|2202")
    );
}

#[tokio::test]
async fn a_resync_sweeps_the_route_of_an_unseen_user() {
    let e = env().await;
    for n in ["2001", "2002", "2003", "2004"] {
        e.store.upsert_user(sip(n, "A", "Secret123")).await.unwrap();
    }
    let epoch = e.store.begin_sync().await.unwrap();
    for n in ["2001", "2003", "2004"] {
        e.store.upsert_user(sip(n, "A", "Secret123")).await.unwrap();
    }
    e.store.end_sync(epoch).await.unwrap();
    assert!(route(&e.sql, "2001").await.is_some());
    assert_eq!(route(&e.sql, "2002").await, None);
}

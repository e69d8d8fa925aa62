//! What hexidian asks the OMM, counted by the simulator: an initial load asks nothing about
//! SIP extensions and creates each DECT user with one request; a resync of an unchanged event
//! writes nothing and reads nothing; a resync after changes writes once per changed user.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use guru3_sim::{Extension, Handset, Kind};

use crate::World;

/// OMM requests since `from` by name, keep-alive pings and the workflow's periodic refresh of
/// the subscription mode aside.
fn asked(w: &World, from: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in &w.omm.view().received[from..] {
        if r.name != "Ping" && r.name != "SetDECTSubscriptionMode" {
            *out.entry(r.name.clone()).or_default() += 1;
        }
    }
    out
}

fn count(m: &BTreeMap<String, usize>, name: &str) -> usize {
    m.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_omm_is_asked_once_per_new_user_and_never_for_an_unchanged_resync() {
    let w = World::new().await;
    let mut dect = Vec::new();
    for i in 0..60u32 {
        let number = format!("{}", 4000 + i);
        let kind = match i % 4 {
            0 => Kind::sip(),
            1 => Kind::group("G"),
            _ => Kind::dect(),
        };
        let mut e = Extension::new(&number, &format!("User {i}"), kind);
        if let Kind::Dect { .. } = e.kind {
            if i % 3 == 0 {
                e.handset = Some(Handset {
                    ipei: hexidian_demo::ipei(i),
                    uak: "0123456789ABCDEF0123456789ABCDEF".into(),
                });
            }
            dect.push((number.clone(), e.handset.is_some()));
        }
        w.guru3.save(e).unwrap();
    }
    let handsets = dect.iter().filter(|(_, h)| *h).count();
    let mut s = w.settings();
    // a resync announces itself by no websocket frame; the poll finds it (this test counts
    // requests, not time)
    s.feed = s.feed.poll_interval(Duration::from_millis(200)); // override: see above
    let m = w.omm.view().received.len();
    let run = w.start_with(s).await;
    w.drained(Duration::from_secs(60)).await;
    let load = asked(&w, m);
    // the session's one pass over the OMM, then one request per new user and two per new
    // handset (create it, attach it); nothing about SIP extensions, groups or absent numbers
    assert_eq!(count(&load, "CreatePPUser"), dect.len(), "{load:?}");
    assert_eq!(count(&load, "CreatePPDev"), handsets, "{load:?}");
    assert_eq!(count(&load, "SetPP"), handsets, "{load:?}");
    for lookup in [
        "GetPPUserByNumber",
        "GetPPDevByIPEI",
        "SetPPUser",
        "DeletePPUser",
    ] {
        let about: Vec<_> = w.omm.view().received[m..]
            .iter()
            .filter(|r| r.name == lookup)
            .map(|r| (r.attrs.clone(), r.children.clone()))
            .collect();
        assert_eq!(count(&load, lookup), 0, "{lookup}: {load:?} {about:?}");
    }
    w.assert_converged().await;

    // a resync of an unchanged event: nothing written, nothing read; in PostgreSQL no user's
    // rows and no mirror document rewritten
    let m = w.omm.view().received.len();
    let before = row_versions(&w).await;
    w.guru3.resync();
    w.drained(Duration::from_secs(60)).await;
    let resync = asked(&w, m);
    assert_eq!(resync, BTreeMap::new(), "an unchanged resync asked the OMM");
    assert_eq!(
        row_versions(&w).await,
        before,
        "an unchanged resync rewrote rows"
    );

    // three names changed in GURU3: one write each, no lookup
    let m = w.omm.view().received.len();
    for (number, _) in dect.iter().take(3) {
        let mut e = w.guru3.extension(number).unwrap();
        e.name = format!("Renamed {number}");
        w.guru3.save(e).unwrap();
    }
    w.drained(Duration::from_secs(30)).await;
    let edits = asked(&w, m);
    assert_eq!(edits, BTreeMap::from([("SetPPUser".to_owned(), 3)]));

    // two users changed in the OMM by another session (an operator's tool): the events reach
    // hexidian, and the next resync writes exactly those two back
    let (other, conn, _events) = omm_axi::connect(&w.settings().omm).await.unwrap();
    let conn = tokio::spawn(conn);
    for (number, _) in dect.iter().skip(5).take(2) {
        let uid = w.omm.view().user_by_num(number).unwrap().0;
        let mut u = omm_axi::PpUser::default();
        u.uid = Some(omm_axi::Uid::new(uid));
        u.name = Some("Changed in the OMM".into());
        other.set_user(u).await.unwrap();
    }
    conn.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = w.omm.view().received.len();
    let t0 = Instant::now();
    w.guru3.resync();
    w.drained(Duration::from_secs(60)).await;
    let resync = asked(&w, m);
    assert_eq!(
        resync,
        BTreeMap::from([("SetPPUser".to_owned(), 2)]),
        "after {:?}",
        t0.elapsed()
    );
    run.stop().await.unwrap();
    w.assert_converged().await;
}

/// Row versions (`xmin`) of every user's PJSIP and ownership rows and of the mirror documents.
async fn row_versions(w: &World) -> Vec<String> {
    const VERSIONS: &str = "SELECT 'ps_endpoints ' || id || ' ' || xmin::text FROM ps_endpoints \
        UNION ALL SELECT 'ps_aors ' || id || ' ' || xmin::text FROM ps_aors \
        UNION ALL SELECT 'ps_auths ' || id || ' ' || xmin::text FROM ps_auths \
        UNION ALL SELECT 'sip_user ' || id || ' ' || xmin::text FROM hexidian.sip_user \
        UNION ALL SELECT 'desired ' || number || ' ' || xmin::text FROM hexidian.desired";
    let mut out: Vec<String> = w
        .sql
        .query(VERSIONS, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    out.sort();
    out
}

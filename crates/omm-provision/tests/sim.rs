//! Provisioning against the OMM simulator over real TLS on loopback: what it asks the OMM.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions fail loudly too

use std::sync::Arc;
use std::time::{Duration, Instant};

use omm_axi::client::{Config, tls};
use omm_axi::{Fingerprint, Secret, Sensitive};
use omm_axi_sim::Sim;
use omm_provision::{HandsetSpec, Link, Tags, UserSpec};
use tokio::sync::watch;

fn config(sim: &Sim) -> Config {
    let fp: Fingerprint = hexidian_testkit::fingerprint_hex("server").parse().unwrap();
    Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .tls(tls::pinned(&[fp]))
}

struct Running {
    link: Arc<Link>,
    _stop: watch::Sender<bool>,
}

async fn start(sim: &Sim) -> Running {
    hexidian_testkit::init_tracing();
    let link = Link::new(Tags::new("HEXIDIAN", "HEXIDIAN-TEMP"));
    let (stop, rx) = watch::channel(false);
    tokio::spawn(Arc::clone(&link).maintain(config(sim), rx));
    let t0 = Instant::now();
    while !link.is_mapped() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the OMM was not read"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running { link, _stop: stop }
}

/// Requests received since `from` (a count of earlier requests), keep-alive pings aside.
fn since(sim: &Sim, from: usize) -> Vec<String> {
    sim.view().received[from..]
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| n != "Ping")
        .collect()
}

fn mark(sim: &Sim) -> usize {
    sim.view().received.len()
}

fn spec(number: &str, unchanged: bool) -> UserSpec {
    UserSpec {
        number: number.into(),
        name: format!("User {number}"),
        sip_password: Secret::new("pw-0123456789"),
        token: None,
        unchanged,
    }
}

fn handset(n: u32) -> HandsetSpec {
    HandsetSpec {
        ipei: omm_axi::Ipei::new(3074, n).unwrap().to_string(),
        uak: Sensitive::new("0123456789ABCDEF0123456789ABCDEF"),
        encryption: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_costs_one_request_and_a_recheck_of_an_unchanged_event_none() {
    let sim = Sim::start().await;
    let omm = start(&sim).await;
    let link = &omm.link;

    let m = mark(&sim);
    for i in 0..50 {
        link.upsert_user(&spec(&format!("2{i:03}"), false))
            .await
            .unwrap();
    }
    let asked = since(&sim, m);
    assert_eq!(asked.len(), 50, "one request per new user: {asked:?}");
    assert!(asked.iter().all(|n| n == "CreatePPUser"), "{asked:?}");

    let m = mark(&sim);
    for i in 0..10 {
        link.bind_handset(&format!("2{i:03}"), &handset(100 + i))
            .await
            .unwrap();
    }
    let asked = since(&sim, m);
    assert_eq!(
        asked.len(),
        20,
        "a new handset: create it, attach it: {asked:?}"
    );

    // a resync: every user and handset again, nothing changed; numbers the OMM never held
    // (SIP extensions) are deleted in case they were DECT once
    let m = mark(&sim);
    for i in 0..50 {
        link.upsert_user(&spec(&format!("2{i:03}"), true))
            .await
            .unwrap();
    }
    for i in 0..10 {
        link.bind_handset(&format!("2{i:03}"), &handset(100 + i))
            .await
            .unwrap();
    }
    for i in 0..30 {
        assert!(!link.delete_user(&format!("3{i:03}")).await.unwrap());
    }
    let mut owned = link.owned_numbers().await.unwrap();
    owned.sort();
    assert_eq!(owned.len(), 50);
    assert_eq!(
        since(&sim, m),
        Vec::<String>::new(),
        "a recheck asks nothing"
    );

    // a changed name is one write; a delete one request, its handset freed
    let m = mark(&sim);
    let mut renamed = spec("2000", false);
    renamed.name = "Renamed".into();
    link.upsert_user(&renamed).await.unwrap();
    assert!(link.delete_user("2001").await.unwrap());
    assert_eq!(since(&sim, m), ["SetPPUser", "DeletePPUser"]);
    let v = sim.view();
    assert_eq!(v.user_by_num("2000").unwrap().1["name"], "Renamed");
    assert!(v.user_by_num("2001").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_the_omm_in_pipelined_pages_and_rechecks_for_free() {
    let sim = Sim::start().await;
    for i in 0..1000 {
        let n = format!("{}", 10_000 + i);
        let name = format!("User {n}");
        sim.seed_user(&[
            ("num", &n),
            ("name", &name),
            ("addId", &n),
            ("sipAuthId", &n),
            ("hierarchy1", "HEXIDIAN"),
            ("hierarchy2", ""),
        ]);
    }
    sim.seed_user(&[("num", "9999"), ("name", "Foreign")]);
    let omm = start(&sim).await;
    let pages = sim.view().requests("GetPPUser").count();
    assert!(pages <= 60, "{pages} page requests for 1001 users");
    assert_eq!(omm.link.mapped(), (1001, 0));

    let m = mark(&sim);
    for i in 0..1000 {
        omm.link
            .upsert_user(&spec(&format!("{}", 10_000 + i), true))
            .await
            .unwrap();
    }
    assert_eq!(since(&sim, m), Vec::<String>::new());
    // hexidian only touches what it owns
    let err = omm.link.upsert_user(&spec("9999", true)).await.unwrap_err();
    assert!(err.to_string().contains("not this broker's"), "{err}");
    assert!(!omm.link.delete_user("9999").await.unwrap());
    assert_eq!(omm.link.owned_numbers().await.unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_behind_its_back_are_followed_or_found_out() {
    let sim = Sim::start().await;
    let omm = start(&sim).await;
    let link = &omm.link;
    for n in ["2001", "2002"] {
        link.upsert_user(&spec(n, false)).await.unwrap();
    }
    // another session (an operator's tool) renames one and deletes the other: the events
    // reach the map
    let (other, conn, _events) = omm_axi::connect(&config(&sim)).await.unwrap();
    tokio::spawn(conn);
    let v = sim.view();
    let (uid1, _) = v.user_by_num("2001").unwrap();
    let (uid2, _) = v.user_by_num("2002").unwrap();
    let mut set = omm_axi::PpUser::default();
    set.uid = Some(omm_axi::Uid::new(uid1));
    set.name = Some("Changed in the OMM".into());
    other.set_user(set).await.unwrap();
    other.delete_user(omm_axi::Uid::new(uid2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = mark(&sim);
    for n in ["2001", "2002"] {
        link.upsert_user(&spec(n, true)).await.unwrap();
    }
    assert_eq!(since(&sim, m), ["SetPPUser", "CreatePPUser"]);
    let v = sim.view();
    assert_eq!(v.user_by_num("2001").unwrap().1["name"], "User 2001");
    assert!(v.user_by_num("2002").is_some());

    // a user that appeared without any event (the map cannot know it): the OMM's EExist
    // sends the upsert to the OMM, which then updates the one user
    sim.seed_user(&[("num", "2003"), ("hierarchy1", "HEXIDIAN")]);
    let m = mark(&sim);
    link.upsert_user(&spec("2003", false)).await.unwrap();
    assert_eq!(
        since(&sim, m),
        ["CreatePPUser", "GetPPUserByNumber", "SetPPUser"]
    );
    let v = sim.view();
    assert_eq!(
        v.users
            .iter()
            .filter(|(_, u)| u.get("num").map(String::as_str) == Some("2003"))
            .count(),
        1
    );
    assert_eq!(v.user_by_num("2003").unwrap().1["name"], "User 2003");
}

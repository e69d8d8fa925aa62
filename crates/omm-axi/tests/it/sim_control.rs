//! omm-axi-sim's control API (what `omm-axi-sim ctl` calls) driven over HTTP, checked against
//! the simulator's state and against what an omm-axi client sees over OM AXI.

use std::time::{Duration, Instant};

use clap::Parser;
use hexidian_testkit::control::call;
use omm_axi::client::{Client, Config, Events, connect, tls};
use omm_axi::proto::PpUser;
use omm_axi::{ErrorCode, Event, Filter, Fingerprint, Ppn, Subscription};
use omm_axi_sim::cli::{Args, Running, start};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn running() -> Running {
    hexidian_testkit::init_tracing();
    start(&Args::try_parse_from(["omm-axi-sim"]).unwrap())
        .await
        .unwrap()
}

fn config(r: &Running) -> Config {
    let fp: Fingerprint = r.description["fingerprint"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Config::new("127.0.0.1", "omm", "omm")
        .port(r.sim.addr().port())
        .tls(tls::pinned(&[fp]))
}

async fn open(r: &Running) -> (Client, Events) {
    let (client, conn, events) = connect(&config(r)).await.unwrap();
    tokio::spawn(conn);
    (client, events)
}

async fn ctl(r: &Running, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(r.control.addr(), method, path, body.as_ref())
        .await
        .unwrap()
}

async fn ok(r: &Running, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = ctl(r, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

async fn next_event(events: &mut Events, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.expect("event channel open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event within timeout")
}

fn user(name: &str, num: &str) -> PpUser {
    let mut u = PpUser::default();
    u.name = Some(name.into());
    u.num = Some(num.into());
    u
}

#[tokio::test]
async fn handsets_subscribe_and_the_administrator_acts() {
    let r = running().await;
    let (client, mut events) = open(&r).await;
    let mut subs = Subscription::provisioning();
    subs.push(Subscription::on("PPState").ppn(Filter::All));
    client.subscribe(&subs).await.unwrap();
    let info = ok(&r, "GET", "/", None).await;
    assert_eq!(info["control"], r.control.addr().to_string());
    assert_eq!(info["subscription"]["mode"], "Off", "{info}");
    assert_eq!(info["devices"], 1, "{info}");

    // closed: refused as the OMM would, nothing created
    let (st, v) = ctl(
        &r,
        "POST",
        "/handsets",
        Some(json!({"ipei": "03074 0220259 3"})),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown ipei"), "{v}");
    let (st, _) = ctl(
        &r,
        "POST",
        "/handsets",
        Some(json!({"ipei": "not an ipei"})),
    )
    .await;
    assert_eq!(st, 409);

    // the administrator's settings, then the client opens the subscription
    let v = ok(
        &r,
        "PUT",
        "/subscription",
        Some(json!({"ac": "4711", "auto_create": true})),
    )
    .await;
    assert_eq!(v, json!({"ac": "4711", "auto_create": true}));
    client
        .set_subscription_mode(omm_axi::SubscriptionMode::Configured, None)
        .await
        .unwrap();
    let (st, v) = ctl(
        &r,
        "POST",
        "/handsets",
        Some(json!({"ipei": "03074 0220259 3", "ac": "0000"})),
    )
    .await;
    assert_eq!(st, 409, "wrong code: {v}");
    // the system's code by default, a given UAK
    let dev = ok(
        &r,
        "POST",
        "/handsets",
        Some(json!({"ipei": "03074 0220259 3", "uak": "8d886c3ac8b97250afc43b2f7babe590"})),
    )
    .await;
    assert_eq!(dev["s"], "Yes", "{dev}");
    let ppn: u32 = dev["ppn"].as_str().unwrap().parse().unwrap();
    let ev = next_event(
        &mut events,
        |e| matches!(e, Event::PpCnf { device: Some(d), .. } if d.ppn() == Ppn::new(ppn)),
    )
    .await;
    let Event::PpCnf {
        device: Some(d), ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(d.ipei.unwrap().to_string(), "03074 0220259 3");
    assert_eq!(
        r.sim.view().device(ppn).unwrap()["uak"],
        "8D886C3AC8B97250AFC43B2F7BABE590"
    );
    let listed = ok(&r, "GET", "/devices", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        ok(&r, "GET", &format!("/devices/{ppn}"), None).await["ipei"],
        "03074 0220259 3"
    );

    // a handset's state, announced
    ok(
        &r,
        "PUT",
        &format!("/devices/{ppn}/state"),
        Some(json!({"state": "Active"})),
    )
    .await;
    next_event(&mut events, |e| matches!(e, Event::PpState(_))).await;
    let (st, _) = ctl(&r, "PUT", "/devices/999/state", Some(json!({"state": "x"}))).await;
    assert_eq!(st, 404);

    // users: the client creates one; the administrator renames and deletes it
    let uid = client
        .create_user({
            let mut u = user("Ada", "2001");
            u.pin = Some(omm_axi::SecretValue::Plain("1234".into()));
            u
        })
        .await
        .unwrap()
        .uid();
    let users = ok(&r, "GET", "/users", None).await;
    let shown = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["uid"].as_str().and_then(|s| s.parse().ok()) == Some(uid.get()))
        .unwrap()
        .clone();
    assert_eq!(shown["num"], "2001");
    assert_eq!(shown["pin"], "(set)", "secrets never shown: {shown}");
    assert_eq!(ok(&r, "GET", "/numbers/2001", None).await, shown);
    let (st, _) = ctl(&r, "GET", "/numbers/2999", None).await;
    assert_eq!(st, 404);
    ok(
        &r,
        "PUT",
        &format!("/users/{}", uid.get()),
        Some(json!({"name": "Ada <Lovelace> & Co 😀"})),
    )
    .await;
    next_event(
        &mut events,
        |e| matches!(e, Event::PpCnf { user: Some(u), .. } if u.name.as_deref() == Some("Ada <Lovelace> & Co 😀")),
    )
    .await;
    assert_eq!(
        client
            .fetch_user(uid)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("Ada <Lovelace> & Co 😀")
    );
    ok(&r, "DELETE", &format!("/users/{}", uid.get()), None).await;
    assert!(client.fetch_user(uid).await.unwrap().is_none());
    let (st, _) = ctl(&r, "DELETE", &format!("/users/{}", uid.get()), None).await;
    assert_eq!(st, 404);
    let (st, _) = ctl(&r, "GET", "/users/abc", None).await;
    assert_eq!(st, 400);

    // an injected event, and the clock moving the subscription window on
    ok(
        &r,
        "POST",
        "/events",
        Some(json!({"xml": "<EventDECTSubscriptionMode mode=\"Wildcard\"/>"})),
    )
    .await;
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::DectSubscriptionMode {
                mode: omm_axi::SubscriptionMode::Wildcard
            }
        )
    })
    .await;
    let (st, _) = ctl(&r, "POST", "/events", Some(json!({"xml": "a\u{0}b"}))).await;
    assert_eq!(st, 400);
    let m = ok(&r, "POST", "/clock", Some(json!({"seconds": 100_000}))).await;
    assert_eq!(m["mode"], "Off", "{m}");
    let requests = ok(&r, "GET", "/requests", None).await;
    assert!(requests["CreatePPUser"].as_u64() == Some(1), "{requests}");
}

#[tokio::test]
async fn faults_reach_the_client_and_clear() {
    let r = running().await;
    let (client, _events) = open(&r).await;
    // refuse with a given error code, twice
    let v = ok(
        &r,
        "PUT",
        "/faults",
        Some(json!({"refuse": {"CreatePPUser": {"error": "EPerm", "times": 2}}})),
    )
    .await;
    assert_eq!(v["refuse"]["CreatePPUser"]["error"], "EPerm");
    for _ in 0..2 {
        let e = client.create_user(user("A", "2001")).await.unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::Perm), "{e:?}");
    }
    client.create_user(user("A", "2001")).await.unwrap();
    let (st, v) = ctl(
        &r,
        "PUT",
        "/faults",
        Some(json!({"refuse": {"CreatePPUser": {"error": "perm'); DROP"}}})),
    )
    .await;
    assert_eq!(st, 400, "{v}");

    // a delayed answer, then frames split into 7-byte chunks: the client still works
    ok(
        &r,
        "PUT",
        "/faults",
        Some(json!({"delay_ms": {"Ping": 300}, "split_chunks": 7})),
    )
    .await;
    let t = Instant::now();
    client.ping().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(client.list_users().await.unwrap().len(), 1);
    ok(&r, "DELETE", "/faults", None).await;

    // cut every connection after 3 frames: this one dies on the third request
    ok(
        &r,
        "PUT",
        "/faults",
        Some(json!({"clear": true, "drop_after": 3})),
    )
    .await;
    let (c2, _e2) = open(&r).await; // Open is the first frame
    c2.ping().await.unwrap();
    assert!(c2.ping().await.is_err() || c2.ping().await.is_err());
    ok(&r, "DELETE", "/faults", None).await;

    // TLS refused while set
    ok(&r, "PUT", "/faults", Some(json!({"refuse_tls": true}))).await;
    assert!(connect(&config(&r)).await.is_err());
    ok(&r, "PUT", "/faults", Some(json!({"refuse_tls": false}))).await;
    let (c3, _e3) = open(&r).await;
    c3.ping().await.unwrap();

    // dropped, down (refused), up again
    ok(&r, "POST", "/drop", None).await;
    tokio::time::timeout(WAIT, async {
        while c3.ping().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    ok(&r, "POST", "/down", None).await;
    let e = connect(&config(&r)).await.unwrap_err();
    assert!(!e.to_string().is_empty());
    ok(&r, "POST", "/up", None).await;
    let (c4, _e4) = open(&r).await;
    c4.ping().await.unwrap();

    for (body, needle) in [
        (json!({"gremlins": 1}), "unknown fault"),
        (json!({"drop_after": -1}), "whole number"),
        (json!({"stall": "Ping"}), "list"),
    ] {
        let (st, v) = ctl(&r, "PUT", "/faults", Some(body)).await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
}

#[tokio::test]
async fn the_env_file_tells_a_shell_everything() {
    let dir = std::env::temp_dir().join(format!("omm-sim-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("omm.env");
    let r = start(
        &Args::try_parse_from(["omm-axi-sim", "--env-file", file.to_str().unwrap()]).unwrap(),
    )
    .await
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}' && printf '%s:%s %s/%s %s %s' \"$OMM_AXI_SIM_HOST\" \"$OMM_AXI_SIM_PORT\" \"$OMM_AXI_SIM_USER\" \"$OMM_AXI_SIM_PASSWORD\" \"$OMM_AXI_SIM_FINGERPRINT\" \"$OMM_AXI_SIM_CONTROL\"",
            file.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{} omm/omm {} {}",
            r.sim.addr(),
            hexidian_testkit::fingerprint_hex("server"),
            r.control.addr()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

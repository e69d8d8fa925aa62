//! guru3-sim's control API (what `guru3-sim ctl` calls) driven over HTTP, checked against
//! the simulator's state and against what guru3-client then sees on the consumer API.

use std::time::Duration;

use clap::Parser;
use guru3_client::client::{Client, Config, tls};
use guru3_client::{ApiKey, ExtensionKind, Inbound, Message};
use guru3_sim::cli::{Args, Running, start};
use hexidian_testkit::control::call;
use serde_json::{Value, json};

async fn running(extra: &[&str]) -> Running {
    hexidian_testkit::init_tracing();
    let mut argv = vec!["guru3-sim"];
    argv.extend_from_slice(extra);
    start(&Args::try_parse_from(argv).unwrap()).await.unwrap()
}

fn client(r: &Running) -> Client {
    let key: ApiKey = r.sim.api_key().parse().unwrap();
    Client::new(
        Config::new(&r.sim.url(), key)
            .unwrap()
            .tls(tls::with_roots(hexidian_testkit::ca_roots()))
            .request_timeout(Duration::from_secs(5)),
    )
    .unwrap()
}

/// `method path [body]` on the control API: the status and reply.
async fn ctl(r: &Running, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(r.control.addr(), method, path, body.as_ref())
        .await
        .unwrap()
}

/// The same, expecting 200.
async fn ok(r: &Running, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = ctl(r, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

/// Fetches everything pending, acks it, and returns the decoded messages.
async fn drain(c: &Client) -> Vec<Message> {
    let page = c.fetch_messages().await.unwrap();
    let ids: Vec<_> = page.messages.iter().map(|m| m.id).collect();
    c.ack(&ids).await.unwrap();
    page.messages.iter().map(|m| m.decode().unwrap()).collect()
}

fn update(m: &Message) -> &guru3_client::ExtensionUpdate {
    match m {
        Message::UpdateExtension(u) => u,
        other => panic!("not an update: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_of_every_type_are_created_changed_renamed_and_deleted() {
    let r = running(&["--seed", "0"]).await;
    let c = client(&r);
    drain(&c).await;
    let base = r.sim.extensions().len();
    let info = ok(&r, "GET", "/", None).await;
    assert_eq!(info["api_key"], r.sim.api_key());
    assert_eq!(info["control"], r.control.addr().to_string());

    // create: a DECT extension with a linked handset, and one of every other type
    let v = ok(
        &r,
        "POST",
        "/extensions",
        Some(
            json!({"number": "2001", "type": "DECT", "name": "Ada <&> 😀", "encryption": true,
            "handset": {"ipei": "00077 3216549 7", "uak": "8D886C3AC8B97250AFC43B2F7BABE590"}}),
        ),
    )
    .await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v}");
    for (n, t, extra) in [
        ("2002", "SIP", json!({"premium": true})),
        ("2003", "GSM", json!({})),
        ("2004", "GROUP", json!({"short_name": "OPS"})),
        ("2005", "APP", json!({"target": "echo"})),
        ("2006", "ANNOUNCEMENT", json!({"audio": ""})),
        ("2007", "SPECIAL", json!({})),
    ] {
        let mut body = json!({"number": n, "type": t, "name": format!("T {t}")});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ok(&r, "POST", "/extensions", Some(body)).await;
    }
    let seen = drain(&c).await;
    assert_eq!(seen.len(), 7);
    let dect = update(&seen[0]);
    assert_eq!(dect.name, "Ada <&> 😀");
    let ExtensionKind::Dect {
        token,
        use_encryption,
        handset,
        ..
    } = &dect.kind
    else {
        panic!("{dect:?}")
    };
    assert!(use_encryption);
    assert_eq!(
        handset.as_ref().unwrap().ipei.to_string(),
        "00077 3216549 7"
    );
    // the generated token is what GET shows
    let shown = ok(&r, "GET", "/extensions/2001", None).await;
    assert_eq!(
        shown["token"].as_str(),
        token.as_ref().map(|t| t.as_str()),
        "{shown}"
    );
    assert!(matches!(
        update(&seen[1]).kind,
        ExtensionKind::Sip {
            is_premium: true,
            ..
        }
    ));
    assert_eq!(
        ok(&r, "GET", "/extensions", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        base + 7
    );

    // change a field, and the type
    ok(
        &r,
        "PATCH",
        "/extensions/2002",
        Some(json!({"name": "Desk", "forward": {"target": "2001", "mode": "ON_BUSY", "delay": 5}})),
    )
    .await;
    ok(
        &r,
        "PATCH",
        "/extensions/2003",
        Some(json!({"type": "SIP"})),
    )
    .await;
    let seen = drain(&c).await;
    let desk = update(&seen[0]);
    assert_eq!(desk.name, "Desk");
    assert_eq!(desk.forward.as_ref().unwrap().delay_s, 5);
    assert!(matches!(update(&seen[1]).kind, ExtensionKind::Sip { .. }));
    assert_eq!(r.sim.extension("2003").unwrap().kind.name(), "SIP");

    // members of a group and of a multiring
    ok(
        &r,
        "PUT",
        "/extensions/2004/members",
        Some(json!({"members": [{"extension": "2001", "delay": 0}, {"extension": "2002", "delay": 10, "active": false}]})),
    )
    .await;
    ok(
        &r,
        "PUT",
        "/extensions/2002/members",
        Some(json!({"members": [{"extension": "2001"}]})),
    )
    .await;
    let seen = drain(&c).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::UpdateCallgroup(g) if g.number.as_str() == "2004" && g.members.len() == 2)),
        "{seen:?}"
    );
    assert_eq!(r.sim.members("2004").len(), 2);
    assert!(!r.sim.members("2004")[1].active);
    assert_eq!(r.sim.members("2002").len(), 1);

    // rename alone, and rename with a change in the same save
    ok(
        &r,
        "POST",
        "/extensions/2005/rename",
        Some(json!({"to": "2015"})),
    )
    .await;
    ok(
        &r,
        "POST",
        "/extensions/2006/rename",
        Some(json!({"to": "2016", "name": "Weather"})),
    )
    .await;
    let seen = drain(&c).await;
    let renames = seen
        .iter()
        .filter(|m| matches!(m, Message::RenameExtension { .. }))
        .count();
    assert_eq!(renames, 2, "{seen:?}");
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::UpdateExtension(u) if u.number.as_str() == "2016" && u.name == "Weather"))
    );
    assert!(r.sim.extension("2005").is_none() && r.sim.extension("2015").is_some());

    // unsubscribe the handset, delete, resync
    ok(&r, "POST", "/extensions/2001/unsubscribe", None).await;
    assert!(r.sim.extension("2001").unwrap().handset.is_none());
    ok(&r, "DELETE", "/extensions/2007", None).await;
    let seen = drain(&c).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::DeleteExtension { number } if number.as_str() == "2007")),
        "{seen:?}"
    );
    let v = ok(&r, "POST", "/resync", None).await;
    assert!(v["messages"].as_array().unwrap().len() >= 6, "{v}");
    let seen = drain(&c).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::SyncStarted | Message::SyncEnded)),
        "{seen:?}"
    );

    // refusals: clear, and nothing queued
    let before = r.sim.queue().len();
    for (method, path, body, status, needle) in [
        ("GET", "/extensions/4040", None, 404, "no extension 4040"),
        (
            "POST",
            "/extensions",
            Some(json!({"number": "2001", "type": "SIP"})),
            409,
            "exists",
        ),
        (
            "POST",
            "/extensions",
            Some(json!({"number": "2020", "type": "FAX"})),
            400,
            "SIP, DECT",
        ),
        (
            "PATCH",
            "/extensions/2001",
            Some(json!({"password": "x"})),
            400,
            "does not apply",
        ),
        (
            "POST",
            "/extensions",
            Some(json!({"number": "20'; DROP", "type": "SIP"})),
            409,
            "",
        ),
        ("DELETE", "/extensions/4040", None, 404, ""),
        (
            "POST",
            "/extensions/2001/rename",
            Some(json!({})),
            400,
            "\"to\"",
        ),
        (
            "PUT",
            "/faults",
            Some(json!({"gremlins": 1})),
            400,
            "unknown fault",
        ),
        ("GET", "/nowhere", None, 404, "no endpoint"),
    ] {
        let (st, v) = ctl(&r, method, path, body).await;
        assert_eq!(st, status, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(r.sim.queue().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_injected_messages_replays_and_inbound_answers() {
    let r = running(&[]).await;
    let c = client(&r);
    let q = ok(&r, "GET", "/queue", None).await;
    let pending = q["pending"].as_u64().unwrap();
    assert!(pending >= 3, "{q}");
    let page = c.fetch_messages().await.unwrap();
    let first = page.messages[0].id;
    c.ack(&[first]).await.unwrap();
    let q = ok(&r, "GET", "/queue", None).await;
    assert_eq!(q["pending"].as_u64().unwrap(), pending - 1);
    assert_eq!(q["acked"], json!([first.get()]));
    let listed = q["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == first.get())
        .unwrap()
        .clone();
    assert_eq!(listed["delivered"], true);
    assert!(q["requests"]["get"].as_u64().unwrap() >= 1);

    // an injected message of a future type, and a replay of the acked one
    let v = ok(
        &r,
        "POST",
        "/messages",
        Some(json!({"type": "FUTURE_THING", "data": {"x": [1, 2]}})),
    )
    .await;
    let injected = v["messages"][0].as_i64().unwrap();
    ok(
        &r,
        "POST",
        &format!("/messages/{}/replay", first.get()),
        None,
    )
    .await;
    let page = c.fetch_messages().await.unwrap();
    let ids: Vec<i64> = page.messages.iter().map(|m| m.id.get()).collect();
    assert!(
        ids.contains(&injected) && ids.contains(&first.get()),
        "{ids:?}"
    );
    let future = page
        .messages
        .iter()
        .find(|m| m.id.get() == injected)
        .unwrap();
    assert_eq!(future.kind, "FUTURE_THING");
    assert_eq!(future.data, json!({"x": [1, 2]}));
    let (st, _) = ctl(&r, "POST", "/messages/999999999/replay", None).await;
    assert_eq!(st, 404);

    // the inbound ASSIGN_HANDSET and GURU3's answer
    let number = r.sim.extensions()[0].number.clone();
    c.submit(&[Inbound::AssignHandset {
        id: 5,
        timestamp: 1766746020.0,
        ipei: "00077 3216549 7".parse().unwrap(),
        uak: "8D886C3AC8B97250AFC43B2F7BABE590".parse().unwrap(),
        extension: number.parse().unwrap(),
    }])
    .await
    .unwrap();
    let inbound = ok(&r, "GET", "/inbound", None).await;
    assert_eq!(inbound[0]["type"], "ASSIGN_HANDSET", "{inbound}");
    assert_eq!(inbound[0]["data"]["extension"], number.as_str());
    assert!(
        inbound[0]["status"] == "OK" || inbound[0]["status"] == "NAK",
        "{inbound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_reach_the_client_and_clear() {
    let r = running(&[]).await;
    let c = client(&r);
    // the next two requests fail with 500, the third works
    ok(
        &r,
        "PUT",
        "/faults",
        Some(json!({"fail_next": 2, "status": 500})),
    )
    .await;
    for _ in 0..2 {
        let e = c.fetch_messages().await.unwrap_err();
        assert!(e.to_string().contains("500"), "{e}");
    }
    let page = c.fetch_messages().await.unwrap();
    let ids: Vec<_> = page.messages.iter().map(|m| m.id).collect();
    // POSTs only: acks fail, GETs work
    ok(&r, "PUT", "/faults", Some(json!({"fail_next_posts": 1}))).await;
    assert!(c.ack(&ids).await.is_err());
    c.fetch_messages().await.unwrap();
    // a lost ack: 200, but the messages stay pending
    ok(&r, "PUT", "/faults", Some(json!({"lose_acks": 1}))).await;
    c.ack(&ids).await.unwrap();
    assert_eq!(r.sim.pending_count(), ids.len());
    c.ack(&ids).await.unwrap();
    assert_eq!(r.sim.pending_count(), 0);
    // every request fails, then none after the faults are cleared
    ok(&r, "PUT", "/faults", Some(json!({"fail_ratio": 100}))).await;
    assert!(c.fetch_messages().await.is_err());
    let q = ok(&r, "GET", "/queue", None).await;
    assert!(q["requests"]["failed"].as_u64().unwrap() >= 4, "{q}");
    ok(&r, "DELETE", "/faults", None).await;
    c.fetch_messages().await.unwrap();
    // latency
    ok(&r, "PUT", "/faults", Some(json!({"delay_ms": 300}))).await;
    let t = std::time::Instant::now();
    c.fetch_messages().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    ok(&r, "DELETE", "/faults", None).await;

    // websockets: refused while set, dropped on demand
    ok(
        &r,
        "PUT",
        "/faults",
        Some(json!({"refuse_websockets": true})),
    )
    .await;
    assert!(c.connect_notifications().await.is_err());
    ok(
        &r,
        "PUT",
        "/faults",
        Some(json!({"refuse_websockets": false})),
    )
    .await;
    let ws = c.connect_notifications().await.unwrap();
    r.sim
        .wait_for("a websocket", |s| s.websocket_clients() == 1)
        .await;
    ok(&r, "PUT", "/faults", Some(json!({"drop_websockets": true}))).await;
    r.sim
        .wait_for("the websocket dropped", |s| s.websocket_clients() == 0)
        .await;
    drop(ws);

    // down: refused; up: served again on the same address
    ok(&r, "POST", "/down", None).await;
    let e = c.fetch_messages().await.unwrap_err();
    assert!(!e.to_string().is_empty());
    ok(&r, "POST", "/up", None).await;
    c.fetch_messages().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_env_file_tells_a_shell_everything() {
    let dir = std::env::temp_dir().join(format!("guru3-sim-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("guru3.env");
    let r = running(&["--env-file", file.to_str().unwrap()]).await;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}' && printf '%s\\n%s\\n%s\\n%s' \"$GURU3_SIM_URL\" \"$GURU3_SIM_KEY\" \"$GURU3_SIM_CONTROL\" \"$GURU3_SIM_CA\"",
            file.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r.sim.url());
    assert_eq!(lines[1], r.sim.api_key());
    assert_eq!(lines[2], r.control.addr().to_string());
    assert!(std::path::Path::new(lines[3]).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

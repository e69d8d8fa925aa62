//! The control API: JSON over HTTP on loopback, a thin layer over [`Guru3Sim`]'s methods, so
//! that a person (through `guru3-sim ctl`) or another tool can act as GURU3's users and
//! administrators and inject faults while the simulator runs.
//!
//! Every change answers `{"messages": [ids]}`: the wire messages it queued.

use std::sync::Arc;
use std::time::Duration;

use hexidian_testkit::control::{Reply, Request};
use serde_json::{Map, Value, json};

use crate::{Extension, Forward, Guru3Sim, Handset, Kind, Member};

/// Every endpoint, for `--help` texts and the README: (method, path, what it does).
pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/",
        "URL, event id, mgr key, CA file, extensions and pending messages",
    ),
    ("GET", "/extensions", "every extension"),
    (
        "POST",
        "/extensions",
        "create one: {\"number\", \"type\", \"name\", …fields}",
    ),
    (
        "GET",
        "/extensions/{number}",
        "one extension, with its members",
    ),
    (
        "PATCH",
        "/extensions/{number}",
        "change fields (a new \"type\" changes the type)",
    ),
    ("DELETE", "/extensions/{number}", "delete it"),
    (
        "POST",
        "/extensions/{number}/rename",
        "{\"to\": NEW, …fields changed in the same save}",
    ),
    (
        "PUT",
        "/extensions/{number}/members",
        "{\"members\": [{\"extension\", \"delay\", \"active\"}]} of a group or multiring",
    ),
    (
        "POST",
        "/extensions/{number}/unsubscribe",
        "unsubscribe its handset",
    ),
    ("POST", "/resync", "the admin's resync"),
    (
        "GET",
        "/queue",
        "the messages with id, type and delivered; pending; acked ids; requests served",
    ),
    (
        "POST",
        "/messages",
        "queue any message: {\"type\", \"data\"}",
    ),
    (
        "POST",
        "/messages/{id}/replay",
        "mark an acked message undelivered again",
    ),
    (
        "GET",
        "/inbound",
        "the inbound messages received (ASSIGN_HANDSET) and GURU3's answers",
    ),
    (
        "PUT",
        "/faults",
        "{\"clear\", \"fail_ratio\", \"seed\", \"fail_next\", \"fail_next_posts\", \"status\", \"delay_ms\", \"lose_acks\", \"commit_delay_ms\", \"refuse_websockets\", \"drop_websockets\"}",
    ),
    ("DELETE", "/faults", "clear every fault"),
    (
        "POST",
        "/down",
        "stop listening: connections refused, websockets closed",
    ),
    ("POST", "/up", "listen again on the same address"),
];

/// Answers one control request on `sim`; `info` describes the simulator for `GET /`.
pub async fn handle(sim: &Arc<Guru3Sim>, info: &Value, req: Request) -> Reply {
    match route(sim, info, &req).await {
        Ok(r) | Err(r) => r,
    }
}

fn changed(ids: Vec<i64>) -> Reply {
    Reply::ok(json!({ "messages": ids }))
}

fn refused(e: String) -> Reply {
    let status = if e.starts_with("no extension") {
        404
    } else {
        409
    };
    Reply::error(status, e)
}

async fn route(sim: &Arc<Guru3Sim>, info: &Value, req: &Request) -> Result<Reply, Reply> {
    let body = &req.body;
    let (method, path) = req.route();
    let reply = match (method, path.as_slice()) {
        ("GET", []) => {
            let mut v = info.clone();
            v["extensions"] = json!(sim.extensions().len());
            v["pending"] = json!(sim.pending_count());
            Reply::ok(v)
        }
        ("GET", ["extensions"]) => Reply::ok(Value::Array(
            sim.extensions()
                .iter()
                .map(|e| to_json(e, &sim.members(&e.number)))
                .collect(),
        )),
        ("POST", ["extensions"]) => {
            let fields = object(body)?;
            let number = hexidian_testkit::control::str_field(body, "number")?;
            if sim.extension(number).is_some() {
                return Err(Reply::error(
                    409,
                    format!("extension {number} exists: PATCH it or rename it"),
                ));
            }
            let kind = match fields.get("type") {
                Some(t) => kind_named(t)?,
                None => return Err(Reply::error(400, "the body needs a \"type\"")),
            };
            let mut e = Extension::new(number, "", kind);
            apply(&mut e, fields, &["number"])?;
            sim.save(e).map_or_else(refused, changed)
        }
        ("GET", ["extensions", n]) => match sim.extension(n) {
            Some(e) => Reply::ok(to_json(&e, &sim.members(n))),
            None => Reply::error(404, format!("no extension {n}")),
        },
        ("PATCH", ["extensions", n]) => {
            let fields = object(body)?;
            let mut e = sim
                .extension(n)
                .ok_or_else(|| Reply::error(404, format!("no extension {n}")))?;
            apply(&mut e, fields, &[])?;
            sim.save(e).map_or_else(refused, changed)
        }
        ("DELETE", ["extensions", n]) => sim.delete(n).map_or_else(refused, changed),
        ("POST", ["extensions", n, "rename"]) => {
            let fields = object(body)?;
            let to = hexidian_testkit::control::str_field(body, "to")?;
            let mut probe = sim
                .extension(n)
                .ok_or_else(|| Reply::error(404, format!("no extension {n}")))?;
            // check the fields before anything is queued
            apply(&mut probe, fields, &["to"])?;
            if fields.len() == 1 {
                sim.rename(n, to).map_or_else(refused, changed)
            } else {
                sim.rename_and_edit(n, to, |e| {
                    let _ = apply(e, fields, &["to"]);
                })
                .map_or_else(refused, changed)
            }
        }
        ("PUT", ["extensions", n, "members"]) => {
            let list = body
                .get("members")
                .and_then(Value::as_array)
                .ok_or_else(|| Reply::error(400, "the body needs \"members\": [...]"))?;
            let members = list.iter().map(member).collect::<Result<Vec<_>, _>>()?;
            sim.set_members(n, members).map_or_else(refused, changed)
        }
        ("POST", ["extensions", n, "unsubscribe"]) => {
            sim.unsubscribe(n).map_or_else(refused, changed)
        }
        ("POST", ["resync"]) => changed(sim.resync()),
        ("GET", ["queue"]) => {
            let (gets, posts) = sim.request_counts();
            Reply::ok(json!({
                "messages": sim.queue().into_iter().map(|(id, kind, delivered)| {
                    json!({"id": id, "type": kind, "delivered": delivered})
                }).collect::<Vec<_>>(),
                "pending": sim.pending_count(),
                "acked": sim.acked(),
                "requests": {"get": gets, "post": posts, "failed": sim.failed_count()},
                "websocket_clients": sim.websocket_clients(),
            }))
        }
        ("POST", ["messages"]) => {
            let kind = hexidian_testkit::control::str_field(body, "type")?;
            let data = body.get("data").cloned().unwrap_or(Value::Null);
            changed(vec![sim.inject(kind, data)])
        }
        ("POST", ["messages", id, "replay"]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| Reply::error(400, format!("message id {id:?} is not a number")))?;
            if !sim.queue().iter().any(|(i, _, _)| *i == id) {
                return Err(Reply::error(404, format!("no message {id}")));
            }
            sim.replay(id);
            changed(vec![id])
        }
        ("GET", ["inbound"]) => Reply::ok(Value::Array(
            sim.inbound()
                .into_iter()
                .map(|r| {
                    json!({"id": r.id, "type": r.kind, "data": r.data, "status": r.status, "text": r.text})
                })
                .collect(),
        )),
        ("PUT", ["faults"]) => faults(sim, body)?,
        ("DELETE", ["faults"]) => {
            clear_faults(sim);
            Reply::ok(json!({"faults": "cleared"}))
        }
        ("POST", ["down"]) => {
            sim.set_listening(false).await;
            Reply::ok(json!({"listening": false}))
        }
        ("POST", ["up"]) => {
            sim.set_listening(true).await;
            Reply::ok(json!({"listening": true}))
        }
        _ => Reply::not_found(req),
    };
    Ok(reply)
}

fn object(body: &Value) -> Result<&Map<String, Value>, Reply> {
    body.as_object()
        .ok_or_else(|| Reply::error(400, "the body must be a JSON object"))
}

fn clear_faults(sim: &Guru3Sim) {
    sim.clear_faults();
    sim.set_delay(Duration::ZERO);
    sim.lose_next_acks(0);
    sim.set_commit_delay(None);
    sim.refuse_websockets(false);
}

fn faults(sim: &Guru3Sim, body: &Value) -> Result<Reply, Reply> {
    let fields = object(body)?;
    let num = |k: &str| -> Result<Option<u64>, Reply> {
        match fields.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Reply::error(400, format!("\"{k}\" must be a whole number"))),
        }
    };
    let flag = |k: &str| -> Result<Option<bool>, Reply> {
        match fields.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Reply::error(400, format!("\"{k}\" must be true or false"))),
        }
    };
    const KNOWN: &[&str] = &[
        "clear",
        "fail_ratio",
        "seed",
        "fail_next",
        "fail_next_posts",
        "status",
        "delay_ms",
        "lose_acks",
        "commit_delay_ms",
        "refuse_websockets",
        "drop_websockets",
    ];
    if let Some(k) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Reply::error(
            400,
            format!("unknown fault {k:?}; known: {}", KNOWN.join(", ")),
        ));
    }
    let status = num("status")?.unwrap_or(503);
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (400..600).contains(s))
        .ok_or_else(|| Reply::error(400, "\"status\" must be an HTTP error status (400–599)"))?;
    let count = |v: u64| usize::try_from(v.min(1_000_000)).unwrap_or(1_000_000);
    if flag("clear")? == Some(true) {
        clear_faults(sim);
    }
    if let Some(p) = num("fail_ratio")? {
        if p > 100 {
            return Err(Reply::error(400, "\"fail_ratio\" is a percentage (0–100)"));
        }
        sim.fail_ratio(p as u32, num("seed")?.unwrap_or(1));
    }
    if let Some(n) = num("fail_next")? {
        sim.fail_next(count(n), status);
    }
    if let Some(n) = num("fail_next_posts")? {
        sim.fail_next_posts(count(n), status);
    }
    if let Some(ms) = num("delay_ms")? {
        sim.set_delay(Duration::from_millis(ms.min(600_000)));
    }
    if let Some(n) = num("lose_acks")? {
        sim.lose_next_acks(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if let Some(ms) = num("commit_delay_ms")? {
        sim.set_commit_delay((ms > 0).then(|| Duration::from_millis(ms.min(600_000))));
    }
    if let Some(on) = flag("refuse_websockets")? {
        sim.refuse_websockets(on);
    }
    if flag("drop_websockets")? == Some(true) {
        sim.drop_websockets();
    }
    Ok(Reply::ok(json!({"faults": fields})))
}

fn member(v: &Value) -> Result<Member, Reply> {
    let extension = hexidian_testkit::control::str_field(v, "extension")?;
    let delay = v.get("delay").map_or(Ok(0), |d| {
        d.as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| Reply::error(400, "a member's \"delay\" is whole seconds"))
    })?;
    let active = v.get("active").map_or(Ok(true), |a| {
        a.as_bool()
            .ok_or_else(|| Reply::error(400, "a member's \"active\" is true or false"))
    })?;
    Ok(Member {
        extension: extension.into(),
        active,
        delay,
    })
}

/// An extension (and its members) as the control API shows it.
pub fn to_json(e: &Extension, members: &[Member]) -> Value {
    let mut v = json!({
        "number": e.number,
        "type": e.kind.name(),
        "name": e.name,
        "location": e.location,
        "lang": e.lang,
        "ringback": e.ringback,
        "call_waiting": e.call_waiting,
        "allow_dialout": e.allow_dialout,
        "trunk": e.trunk,
        "forward": e.forward.as_ref().map(|f| json!({"target": f.target, "mode": f.mode, "delay": f.delay})),
        "handset": e.handset.as_ref().map(|h| json!({"ipei": h.ipei, "uak": h.uak})),
        "members": members.iter().map(|m| json!({"extension": m.extension, "active": m.active, "delay": m.delay})).collect::<Vec<_>>(),
    });
    let extra = match &e.kind {
        Kind::Sip { password, premium } => json!({"password": password, "premium": premium}),
        Kind::Dect {
            token,
            encryption,
            display,
        } => json!({"token": token, "encryption": encryption, "display": display}),
        Kind::Gsm { token } => json!({"token": token}),
        Kind::Group { short_name } => json!({"short_name": short_name}),
        Kind::App { target } => json!({"target": target}),
        Kind::Announcement { audio } => json!({"audio": audio}),
        Kind::Special => json!({}),
    };
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    v
}

fn kind_named(v: &Value) -> Result<Kind, Reply> {
    let name = v.as_str().unwrap_or_default().to_ascii_uppercase();
    Ok(match name.as_str() {
        "SIP" => Kind::sip(),
        "DECT" => Kind::dect(),
        "GSM" => Kind::Gsm {
            token: String::new(),
        },
        "GROUP" => Kind::group(""),
        "APP" => Kind::App {
            target: String::new(),
        },
        "ANNOUNCEMENT" => Kind::Announcement {
            audio: String::new(),
        },
        "SPECIAL" => Kind::Special,
        _ => {
            return Err(Reply::error(
                400,
                format!("type {v}: one of SIP, DECT, GSM, GROUP, APP, ANNOUNCEMENT, SPECIAL"),
            ));
        }
    })
}

/// Applies the fields of a create, change or rename body to `e` (`skip`: keys handled by
/// the caller). A field that does not exist, or does not fit the extension's type, is an
/// error and nothing is changed.
fn apply(e: &mut Extension, fields: &Map<String, Value>, skip: &[&str]) -> Result<(), Reply> {
    let mut next = e.clone();
    if let Some(t) = fields.get("type") {
        let kind = kind_named(t)?;
        if kind.name() != next.kind.name() {
            next.kind = kind;
        }
    }
    for (k, v) in fields {
        if skip.contains(&k.as_str()) || k == "type" {
            continue;
        }
        let bad = |what: &str| Reply::error(400, format!("\"{k}\" must be {what}"));
        let text = || v.as_str().map(str::to_owned).ok_or_else(|| bad("a string"));
        let flag = || v.as_bool().ok_or_else(|| bad("true or false"));
        match (k.as_str(), &mut next.kind) {
            ("name", _) => next.name = text()?,
            ("location", _) => next.location = text()?,
            ("lang", _) => next.lang = text()?,
            ("ringback", _) => next.ringback = text()?,
            ("call_waiting", _) => next.call_waiting = flag()?,
            ("allow_dialout", _) => next.allow_dialout = flag()?,
            ("trunk", _) => next.trunk = flag()?,
            ("forward", _) if v.is_null() => next.forward = None,
            ("forward", _) => {
                let target = hexidian_testkit::control::str_field(v, "target")?;
                let mode = v.get("mode").and_then(Value::as_str).unwrap_or("ENABLED");
                let delay = v.get("delay").and_then(Value::as_u64).unwrap_or(0);
                next.forward = Some(Forward {
                    target: target.into(),
                    mode: mode.into(),
                    delay: u32::try_from(delay).map_err(|_| bad("whole seconds"))?,
                });
            }
            ("handset", _) if v.is_null() => next.handset = None,
            ("handset", _) => {
                next.handset = Some(Handset {
                    ipei: hexidian_testkit::control::str_field(v, "ipei")?.into(),
                    uak: hexidian_testkit::control::str_field(v, "uak")?.into(),
                });
            }
            ("password", Kind::Sip { password, .. }) => *password = text()?,
            ("premium", Kind::Sip { premium, .. }) => *premium = flag()?,
            ("token", Kind::Dect { token, .. } | Kind::Gsm { token }) => *token = text()?,
            ("encryption", Kind::Dect { encryption, .. }) => *encryption = flag()?,
            ("display", Kind::Dect { display, .. }) => *display = text()?,
            ("short_name", Kind::Group { short_name }) => *short_name = text()?,
            ("target", Kind::App { target }) => *target = text()?,
            ("audio", Kind::Announcement { audio }) => *audio = text()?,
            (
                "password" | "premium" | "token" | "encryption" | "display" | "short_name"
                | "target" | "audio",
                kind,
            ) => {
                return Err(Reply::error(
                    400,
                    format!("\"{k}\" does not apply to a {} extension", kind.name()),
                ));
            }
            _ => return Err(Reply::error(400, format!("unknown field \"{k}\""))),
        }
    }
    *e = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fit_the_type_or_are_refused_whole() {
        let mut e = Extension::new("2001", "Ada", Kind::dect());
        let body = json!({"name": "Ada L.", "encryption": true, "token": "12345678"});
        apply(&mut e, body.as_object().unwrap(), &[]).unwrap();
        assert_eq!(e.name, "Ada L.");
        assert!(
            matches!(&e.kind, Kind::Dect { token, encryption: true, .. } if token == "12345678")
        );
        // a SIP field on a DECT extension: refused, nothing changed
        let before = e.clone();
        let body = json!({"name": "X", "password": "pw"});
        let r = apply(&mut e, body.as_object().unwrap(), &[]).unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.body["error"].as_str().unwrap().contains("DECT"), "{r:?}");
        assert_eq!(e, before);
        // a type change takes that type's fields
        let body = json!({"type": "sip", "password": "pw", "premium": true});
        apply(&mut e, body.as_object().unwrap(), &[]).unwrap();
        assert_eq!(
            e.kind,
            Kind::Sip {
                password: "pw".into(),
                premium: true
            }
        );
        let r = apply(&mut e, json!({"colour": 1}).as_object().unwrap(), &[]).unwrap_err();
        assert!(r.body["error"].as_str().unwrap().contains("colour"));
        let r = apply(&mut e, json!({"type": "FAX"}).as_object().unwrap(), &[]).unwrap_err();
        assert!(r.body["error"].as_str().unwrap().contains("GROUP"));
        let r = apply(&mut e, json!({"trunk": "yes"}).as_object().unwrap(), &[]).unwrap_err();
        assert!(r.body["error"].as_str().unwrap().contains("true or false"));
    }

    #[test]
    fn every_type_round_trips_through_its_json() {
        for t in [
            "SIP",
            "DECT",
            "GSM",
            "GROUP",
            "APP",
            "ANNOUNCEMENT",
            "SPECIAL",
        ] {
            let kind = kind_named(&json!(t)).unwrap();
            let e = Extension::new("3000", "T", kind);
            let v = to_json(&e, &[]);
            assert_eq!(v["type"], t);
            let mut back = Extension::new("3000", "", Kind::Special);
            let mut fields = v.as_object().unwrap().clone();
            fields.remove("members");
            apply(&mut back, &fields, &["number"]).unwrap();
            assert_eq!(back, e, "{t}");
        }
    }
}

#[cfg(test)]
mod readme {
    #[test]
    fn the_readme_lists_every_endpoint() {
        let missing = hexidian_testkit::control::missing_from_readme(super::ENDPOINTS);
        assert!(missing.is_empty(), "README.md lacks the rows {missing:#?}");
    }
}

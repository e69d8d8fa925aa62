//! The control API: JSON over HTTP on loopback, a thin layer over [`Sim`]'s methods, so that
//! a person (through `omm-axi-sim ctl`) or another DECT tool can subscribe handsets, act as
//! the OMM's administrator, send events and inject faults while the simulator runs.

use std::sync::Arc;
use std::time::Duration;

use hexidian_testkit::control::{Reply, Request, str_field};
use serde_json::{Map, Value, json};

use crate::state::SECRET_ATTRS;
use crate::{Attrs, Faults, Mode, Sim};

/// Every endpoint, for the README: (method, path, what it does).
pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/",
        "addresses, account, CA file, fingerprint, subscription settings, counts",
    ),
    ("GET", "/users", "every user (secret attributes masked)"),
    ("GET", "/users/{uid}", "one user"),
    ("GET", "/numbers/{num}", "the user with that number"),
    (
        "PUT",
        "/users/{uid}",
        "change attributes as the OMM's administrator would: {\"name\": …}",
    ),
    (
        "DELETE",
        "/users/{uid}",
        "delete a user as the administrator would",
    ),
    ("GET", "/devices", "every device (handset)"),
    ("GET", "/devices/{ppn}", "one device"),
    (
        "POST",
        "/handsets",
        "a handset subscribes: {\"ipei\", \"ac\"?, \"uak\"?}",
    ),
    (
        "PUT",
        "/devices/{ppn}/state",
        "set a handset's state (GetPPState), announced as EventPPState: {\"state\": …}",
    ),
    (
        "PUT",
        "/subscription",
        "the administrator's subscription settings: {\"ac\", \"auto_create\"}",
    ),
    (
        "POST",
        "/events",
        "send every session an event: {\"xml\": …} (a whole document) or {\"raw\": …} (bytes as they are, malformed too)",
    ),
    ("GET", "/requests", "the requests received, counted by name"),
    (
        "PUT",
        "/faults",
        "{\"clear\", \"drop_after\", \"delay_ms\": {REQUEST: ms}, \"split_chunks\", \"coalesce\", \"refuse\": {REQUEST: {\"error\", \"times\"}}, \"stall\": [REQUEST], \"refuse_tls\"}",
    ),
    ("DELETE", "/faults", "clear every fault"),
    (
        "POST",
        "/drop",
        "close every connection (the listeners stay)",
    ),
    (
        "POST",
        "/down",
        "stop listening: connections refused, sessions closed",
    ),
    ("POST", "/up", "listen again on the same addresses"),
    (
        "POST",
        "/clock",
        "advance the virtual clock: {\"seconds\"} (subscription windows, idle timeouts)",
    ),
];

/// Answers one control request on `sim`; `info` describes the simulator for `GET /`.
pub async fn handle(sim: &Arc<Sim>, info: &Value, req: Request) -> Reply {
    match route(sim, info, &req).await {
        Ok(r) | Err(r) => r,
    }
}

/// A record as the control API shows it: secrets masked, as the OMM never shows them.
fn record(attrs: &Attrs) -> Value {
    Value::Object(
        attrs
            .iter()
            .map(|(k, v)| {
                let v = if SECRET_ATTRS.contains(&k.as_str()) && !v.is_empty() {
                    "(set)".to_owned()
                } else {
                    v.clone()
                };
                (k.clone(), Value::String(v))
            })
            .collect(),
    )
}

fn id(s: &str, what: &str) -> Result<u32, Reply> {
    s.parse()
        .map_err(|_| Reply::error(400, format!("{what} {s:?} is not a number")))
}

fn mode(m: Mode) -> Value {
    match m {
        Mode::Off => json!({"mode": "Off"}),
        Mode::Configured { until } => json!({"mode": "Configured", "until": until}),
        Mode::Wildcard {
            until,
            configured_until,
            ..
        } => json!({"mode": "Wildcard", "until": until, "configured_until": configured_until}),
    }
}

/// A JSON object of strings as attribute pairs.
fn attrs_of(body: &Value) -> Result<Vec<(String, String)>, Reply> {
    let obj = body
        .as_object()
        .ok_or_else(|| Reply::error(400, "the body must be a JSON object of attributes"))?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), if *b { "1" } else { "0" }.to_owned())),
            _ => Err(Reply::error(
                400,
                format!("attribute {k:?}: a string, number or boolean"),
            )),
        })
        .collect()
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn route(sim: &Arc<Sim>, info: &Value, req: &Request) -> Result<Reply, Reply> {
    let body = &req.body;
    let (method, path) = req.route();
    let reply = match (method, path.as_slice()) {
        ("GET", []) => {
            let view = sim.view();
            let (ac, auto_create) = sim.subscription_settings();
            let mut v = info.clone();
            v["users"] = json!(view.users.len());
            v["devices"] = json!(view.devices.len());
            v["open_sessions"] = json!(view.open_sessions);
            v["subscription"] = mode(view.mode);
            v["subscription"]["ac"] = json!(ac);
            v["subscription"]["auto_create"] = json!(auto_create);
            Reply::ok(v)
        }
        ("GET", ["users"]) => Reply::ok(Value::Array(
            sim.view().users.iter().map(|(_, a)| record(a)).collect(),
        )),
        ("GET", ["users", uid]) => {
            let uid = id(uid, "uid")?;
            match sim.view().user(uid) {
                Some(a) => Reply::ok(record(a)),
                None => Reply::error(404, format!("no user {uid}")),
            }
        }
        ("GET", ["numbers", num]) => match sim.view().user_by_num(num) {
            Some((_, a)) => Reply::ok(record(a)),
            None => Reply::error(404, format!("no user with number {num}")),
        },
        ("PUT", ["users", uid]) => {
            let uid = id(uid, "uid")?;
            let attrs = attrs_of(body)?;
            if attrs.iter().any(|(k, _)| k == "uid") {
                return Err(Reply::error(400, "a user's uid does not change"));
            }
            if !sim.admin_set_user(uid, &pairs(&attrs)) {
                return Err(Reply::error(404, format!("no user {uid}")));
            }
            Reply::ok(sim.view().user(uid).map(record).unwrap_or_default())
        }
        ("DELETE", ["users", uid]) => {
            let uid = id(uid, "uid")?;
            if !sim.admin_delete_user(uid) {
                return Err(Reply::error(404, format!("no user {uid}")));
            }
            Reply::ok(json!({"deleted": uid}))
        }
        ("GET", ["devices"]) => Reply::ok(Value::Array(
            sim.view().devices.iter().map(|(_, a)| record(a)).collect(),
        )),
        ("GET", ["devices", ppn]) => {
            let ppn = id(ppn, "ppn")?;
            match sim.view().device(ppn) {
                Some(a) => Reply::ok(record(a)),
                None => Reply::error(404, format!("no device {ppn}")),
            }
        }
        ("POST", ["handsets"]) => {
            let ipei = str_field(body, "ipei")?;
            let (ac, _) = sim.subscription_settings();
            let ac = body.get("ac").and_then(Value::as_str).unwrap_or(&ac);
            let uak = body.get("uak").and_then(Value::as_str);
            match sim.handset_subscribe_with_uak(ipei, ac, uak) {
                Ok(ppn) => Reply::ok(sim.view().device(ppn).map(record).unwrap_or_default()),
                Err(refused) => Reply::error(409, format!("subscription refused: {}", refused.0)),
            }
        }
        ("PUT", ["devices", ppn, "state"]) => {
            let ppn = id(ppn, "ppn")?;
            if sim.view().device(ppn).is_none() {
                return Err(Reply::error(404, format!("no device {ppn}")));
            }
            let attrs = attrs_of(body)?;
            sim.set_pp_state(ppn, &pairs(&attrs));
            Reply::ok(json!({"ppn": ppn, "state": body}))
        }
        ("PUT", ["subscription"]) => {
            let ac = body.get("ac").and_then(Value::as_str);
            if ac.is_some_and(|a| {
                a.is_empty() || a.len() > 8 || !a.bytes().all(|b| b.is_ascii_digit())
            }) {
                return Err(Reply::error(400, "\"ac\" is 1 to 8 digits"));
            }
            let auto_create = body.get("auto_create").and_then(Value::as_bool);
            sim.set_subscription_settings(ac, auto_create);
            let (ac, auto_create) = sim.subscription_settings();
            Reply::ok(json!({"ac": ac, "auto_create": auto_create}))
        }
        ("POST", ["events"]) => match (
            body.get("xml").and_then(Value::as_str),
            body.get("raw").and_then(Value::as_str),
        ) {
            (Some(xml), None) if !xml.contains('\0') => {
                sim.inject_event(xml);
                Reply::ok(json!({"sent_to": sim.view().open_sessions}))
            }
            (None, Some(raw)) => {
                sim.inject_raw(raw);
                Reply::ok(json!({"sent_to": sim.view().open_sessions}))
            }
            _ => Reply::error(400, "give either \"xml\" (one document, no NUL) or \"raw\""),
        },
        ("GET", ["requests"]) => {
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for r in sim.view().received {
                *counts.entry(r.name).or_default() += 1;
            }
            Reply::ok(json!(counts))
        }
        ("PUT", ["faults"]) => {
            let fields = body
                .as_object()
                .ok_or_else(|| Reply::error(400, "the body must be a JSON object"))?;
            let mut next = Faults::default();
            // start from the current faults (unless "clear"): only the given ones change
            if fields.get("clear") != Some(&Value::Bool(true)) {
                sim.faults(|f| next = f.clone());
            }
            set_faults(&mut next, fields)?;
            let shown = faults_json(&next);
            sim.faults(|f| *f = next);
            Reply::ok(shown)
        }
        ("DELETE", ["faults"]) => {
            sim.faults(|f| *f = Faults::default());
            Reply::ok(faults_json(&Faults::default()))
        }
        ("POST", ["drop"]) => {
            sim.drop_connections();
            Reply::ok(json!({"dropped": true}))
        }
        ("POST", ["down"]) => {
            sim.set_listening(false).await;
            Reply::ok(json!({"listening": false}))
        }
        ("POST", ["up"]) => {
            sim.set_listening(true).await;
            Reply::ok(json!({"listening": true}))
        }
        ("POST", ["clock"]) => {
            let s = body
                .get("seconds")
                .and_then(Value::as_u64)
                .ok_or_else(|| Reply::error(400, "the body needs \"seconds\": a whole number"))?;
            sim.advance(Duration::from_secs(s.min(365 * 86_400)));
            Reply::ok(mode(sim.view().mode))
        }
        _ => Reply::not_found(req),
    };
    Ok(reply)
}

/// Whether `code` looks like an OM AXI error code (`EPerm`, `ENoEnt`, `ETooLong`, …: an
/// `E`, a capital, letters), so a typo is refused rather than sent.
fn is_error_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() >= 3
        && b.len() <= 40
        && b[0] == b'E'
        && b[1].is_ascii_uppercase()
        && b.iter().all(u8::is_ascii_alphanumeric)
}

/// A refusal without `times`: until the faults are cleared.
const UNTIL_CLEARED: u64 = u32::MAX as u64;

fn set_faults(f: &mut Faults, fields: &Map<String, Value>) -> Result<(), Reply> {
    let count = |k: &str, v: &Value| -> Result<Option<usize>, Reply> {
        if v.is_null() {
            return Ok(None);
        }
        v.as_u64()
            .filter(|n| *n > 0)
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .ok_or_else(|| Reply::error(400, format!("\"{k}\" is a whole number above 0, or null")))
    };
    let names = |k: &str, v: &Value| -> Result<Vec<String>, Reply> {
        v.as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| Reply::error(400, format!("\"{k}\" is a list of request names")))
    };
    for (k, v) in fields {
        match k.as_str() {
            "clear" => {}
            "drop_after" => f.drop_after = count(k, v)?,
            "split_chunks" => f.split_chunks = count(k, v)?,
            "coalesce" => f.coalesce = count(k, v)?,
            "refuse_tls" => {
                f.refuse_tls = v
                    .as_bool()
                    .ok_or_else(|| Reply::error(400, "\"refuse_tls\" is true or false"))?;
            }
            "stall" => f.stall = names(k, v)?,
            "stall_num" => f.stall_num = names(k, v)?,
            "delay_ms" => {
                let obj = v.as_object().ok_or_else(|| {
                    Reply::error(400, "\"delay_ms\" is {\"RequestName\": milliseconds}")
                })?;
                f.delay.clear();
                for (req, ms) in obj {
                    let ms = ms.as_u64().ok_or_else(|| {
                        Reply::error(400, format!("delay of {req}: whole milliseconds"))
                    })?;
                    if ms > 0 {
                        f.delay
                            .insert(req.clone(), Duration::from_millis(ms.min(600_000)));
                    }
                }
            }
            "refuse" => {
                let obj = v.as_object().ok_or_else(|| {
                    Reply::error(
                        400,
                        "\"refuse\" is {\"RequestName\": {\"error\": \"EPerm\", \"times\": N}}",
                    )
                })?;
                f.inject.clear();
                for (req, how) in obj {
                    let code = how.get("error").and_then(Value::as_str).unwrap_or("EPerm");
                    if !is_error_code(code) {
                        return Err(Reply::error(
                            400,
                            format!(
                                "error {code:?}: an OM AXI error code such as EPerm, ENoEnt, EInval"
                            ),
                        ));
                    }
                    let times = how
                        .get("times")
                        .and_then(Value::as_u64)
                        .unwrap_or(UNTIL_CLEARED);
                    f.inject.insert(
                        req.clone(),
                        (
                            code.to_owned(),
                            usize::try_from(times).unwrap_or(usize::MAX),
                        ),
                    );
                }
            }
            _ => {
                return Err(Reply::error(
                    400,
                    format!(
                        "unknown fault {k:?}; known: clear, drop_after, delay_ms, split_chunks, coalesce, refuse, stall, stall_num, refuse_tls"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn faults_json(f: &Faults) -> Value {
    json!({
        "drop_after": f.drop_after,
        "split_chunks": f.split_chunks,
        "coalesce": f.coalesce,
        "refuse_tls": f.refuse_tls,
        "stall": f.stall,
        "stall_num": f.stall_num,
        "delay_ms": f.delay.iter().map(|(k, d)| (k.clone(), json!(d.as_millis() as u64))).collect::<Map<_, _>>(),
        "refuse": f.inject.iter().map(|(k, (code, times))| (k.clone(), json!({"error": code, "times": times}))).collect::<Map<_, _>>(),
    })
}

#[cfg(test)]
mod readme {
    #[test]
    fn the_readme_lists_every_endpoint() {
        let missing = hexidian_testkit::control::missing_from_readme(super::ENDPOINTS);
        assert!(missing.is_empty(), "README.md lacks the rows {missing:#?}");
    }
}

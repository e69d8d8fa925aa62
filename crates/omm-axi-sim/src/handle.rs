//! Request handlers: one function per OM AXI request, each returning the response document
//! and the record changes to announce.

use crate::state::{Attrs, Change, Mode, SECRET_ATTRS, State, canonical_ipei};
use crate::wire::{Node, Out};

type Reply = (String, Vec<Change>);

fn err(name: &str, seq: Option<&str>, code: &str, extra: &[(&str, &str)]) -> Reply {
    (
        Out::new(&format!("{name}Resp"))
            .seq(seq)
            .attr("errCode", code)
            .attrs(extra.iter().copied())
            .finish(),
        Vec::new(),
    )
}

fn ok(name: &str, seq: Option<&str>) -> Out {
    Out::new(&format!("{name}Resp")).seq(seq)
}

const USER_LIMITS: &[(&str, usize)] = &[
    ("name", 20),
    ("hierarchy1", 16),
    ("hierarchy2", 16),
    ("num", 64),
    ("addId", 64),
    ("sipAuthId", 64),
];
const USER_READ_ONLY: &[&str] = &[
    "uid",
    "ppn",
    "relType",
    "timeStamp",
    "timeStampAdmin",
    "timeStampRelation",
    "ppnOld",
    "CUS",
    "HAS",
    "HSS",
    "HRS",
    "HCS",
    "SRS",
    "SCS",
    "CDS",
    "HBS",
    "BTS",
    "SWS",
    "configurationDataLoaded",
    "calculatedSipPort",
];
const DEV_READ_ONLY: &[&str] = &[
    "ppn",
    "uid",
    "relType",
    "timeStamp",
    "timeStampAdmin",
    "timeStampRelation",
    "timeStampRoaming",
    "timeStampSubscription",
    "capMessaging",
    "capMessagingForInternalUse",
    "capEnhLocating",
    "capBluetooth",
    "ethAddr",
    "ppProfileCapability",
    "ppDefaultProfileLoaded",
];

fn user_defaults(uid: u32, now: i64) -> Attrs {
    let mut a = Attrs::new();
    for (k, v) in [
        ("relType", "Unbound"),
        ("ppn", "0"),
        ("lang", "English"),
        ("forwardState", "Off"),
        ("forwardTime", "0"),
        ("forwardDest", ""),
        ("holdRingBackTime", "3"),
        ("autoAnswer", "Global"),
        ("microphoneMute", "Global"),
        ("warningTone", "Global"),
        ("allowBargeIn", "Global"),
        ("msgRight", "1"),
        ("sendVcardRight", "1"),
        ("BTsensitivity", "high"),
        ("conferenceServerType", "Global"),
        ("monitoringMode", "Off"),
        ("name", ""),
        ("num", ""),
        ("hierarchy1", ""),
        ("hierarchy2", ""),
        ("addId", ""),
        ("sipAuthId", ""),
        ("sosNum", ""),
        ("voiceboxNum", ""),
        ("callWaitingDisabled", "0"),
        ("external", "0"),
        ("trackingActive", "0"),
        ("locatable", "0"),
        ("BTlocatable", "0"),
        ("locRight", "0"),
        ("recvVcardRight", "0"),
        ("keepLocalPB", "0"),
        ("vip", "0"),
        ("sipRegisterCheck", "0"),
        ("allowVideoStream", "0"),
        ("ppData", ""),
        ("fixedSipPort", "0"),
        ("pin", ""),
        ("sipPw", ""),
        ("credentialPw", ""),
        ("serviceAuthPassword", ""),
        ("configurationDataLoaded", "0"),
    ] {
        a.insert(k.into(), v.into());
    }
    for s in [
        "CUS", "HAS", "HSS", "HRS", "HCS", "SRS", "SCS", "CDS", "HBS", "BTS", "SWS",
    ] {
        a.insert(s.into(), "Unknown".into());
    }
    a.insert("uid".into(), uid.to_string());
    a.insert("timeStamp".into(), now.to_string());
    a
}

fn dev_defaults(ppn: u32, now: i64) -> Attrs {
    let mut a = Attrs::new();
    for (k, v) in [
        ("relType", "Unbound"),
        ("uid", "0"),
        ("s", "No"),
        ("ac", ""),
        ("uak", ""),
        ("encrypt", "0"),
        ("autoCreate", "0"),
        ("hwType", "Unknown"),
        ("capMessaging", "0"),
        ("capMessagingForInternalUse", "0"),
        ("capEnhLocating", "0"),
        ("capBluetooth", "0"),
        ("ethAddr", ""),
        ("ppProfileCapability", "0"),
        ("ppDefaultProfileLoaded", "0"),
        ("subscribeToPARIOnly", "0"),
    ] {
        a.insert(k.into(), v.into());
    }
    a.insert("ppn".into(), ppn.to_string());
    a.insert("timeStamp".into(), now.to_string());
    a
}

fn bool_attr(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Validates and decrypts user attributes from a request; `Err` is the error reply.
fn user_input(st: &State, name: &str, seq: Option<&str>, node: &Node) -> Result<Attrs, Reply> {
    let mut out = Attrs::new();
    for (k, v) in &node.attrs {
        if let Some((_, max)) = USER_LIMITS.iter().find(|(n, _)| n == k) {
            if v.chars().count() > *max {
                return Err(err(
                    name,
                    seq,
                    "ETooLong",
                    &[("bad", k), ("maxLen", &max.to_string())],
                ));
            }
        }
        if st.knobs.reject_invalid_chars
            && v.chars()
                .any(|c| (c as u32) < 0x20 && c != '\n' || (c as u32) > 0xFFFF)
        {
            return Err(err(name, seq, "EInvalidChars", &[("bad", k)]));
        }
        if SECRET_ATTRS.contains(&k.as_str()) {
            match st.key.decrypt(v) {
                Some(plain) => out.insert(k.clone(), plain),
                None => {
                    return Err(err(
                        name,
                        seq,
                        "EInval",
                        &[("bad", k), ("info", "cannot decrypt")],
                    ));
                }
            };
        } else if !USER_READ_ONLY.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

fn num_taken(st: &State, num: &str, except: u32) -> bool {
    st.knobs.unique_num && !num.is_empty() && st.users.taken(num, except)
}

fn paged(st: &State, name: &str, seq: Option<&str>, req: &Node, users: bool) -> Reply {
    let key = if users { "uid" } else { "ppn" };
    let Some(from) = req.get(key).and_then(|v| v.parse::<u32>().ok()) else {
        return err(name, seq, "EMissing", &[("bad", key)]);
    };
    let max = match req.get("maxRecords") {
        None => None,
        Some(m) => match m.parse::<usize>() {
            Ok(m) if m <= st.knobs.records => Some(m),
            _ => return err(name, seq, "EInval", &[("bad", "maxRecords")]),
        },
    };
    let table = if users { &st.users } else { &st.devices };
    let selected: Vec<u32> = match max {
        Some(m) => table.ids_from(from).take(m.max(1)).collect(),
        None if st.knobs.next_higher_get => table.ids_from(from).take(1).collect(),
        None => table.ids_from(from).take_while(|i| *i == from).collect(),
    };
    if selected.is_empty() {
        return err(name, seq, "ENoEnt", &[]);
    }
    let mut out = ok(name, seq);
    for id in selected {
        out = out.child(&if users {
            st.user_xml(&st.users[&id])
        } else {
            State::pp_xml(&st.devices[&id])
        });
    }
    (out.finish(), Vec::new())
}

/// Dispatches one request of an opened session.
pub(crate) fn request(st: &mut State, session: u64, req: &Node) -> Reply {
    let name = req.name.as_str();
    let seq = req.get("seq");
    let sync = st.sessions.get(&session).is_some_and(|s| s.sync);
    let now = st.now;
    match name {
        "Ping" => {
            let ts = now.to_string();
            (
                ok(name, seq)
                    .attr("timeStamp", req.get("timeStamp").unwrap_or(&ts))
                    .finish(),
                Vec::new(),
            )
        }
        "GetVersions" => {
            let mut out = ok(name, seq);
            for (k, v) in [
                ("Open", "1.0.18"),
                ("Ping", "1.0.2"),
                ("Subscribe", "3.1.2"),
                ("GetPPUser", "1.2.8"),
                ("SetPPUser", "1.1.9"),
                ("CreatePPUser", "1.1.11"),
                ("DeletePPUser", "1.0.4"),
                ("GetPPUserByNumber", "1.0.0"),
                ("GetPPDev", "2.0.0"),
                ("GetPPDevByIPEI", "2.0.0"),
                ("CreatePPDev", "2.0.0"),
                ("SetPPDev", "2.0.0"),
                ("DeletePPDev", "1.0.3"),
                ("SetPP", "2.0.0"),
                ("GetPP", "2.0.0"),
                ("SetPPUserDevRelation", "1.0.2"),
                ("EventPPCnf", "2.0.0"),
                ("GetDECTSubscriptionMode", "1.0.0"),
                ("SetDECTSubscriptionMode", "1.0.1"),
                ("GetPPState", "1.1.0"),
                ("GetLastPPDevAction", "1.0.0"),
                ("Limits", "1.3.0"),
            ] {
                out = out.attr(k, v);
            }
            (out.finish(), Vec::new())
        }
        "Limits" => (
            ok(name, seq)
                .attrs([
                    ("axiClients", "100"),
                    ("ppnNum", "10000"),
                    ("userId", "10000"),
                    ("rfpNum", "2048"),
                ])
                .attr("records", &st.knobs.records.to_string())
                .finish(),
            Vec::new(),
        ),
        "GetSystemName" => (
            ok(name, seq).attr("name", &st.system_name).finish(),
            Vec::new(),
        ),
        "GetSARI" => (ok(name, seq).attr("sari", &st.sari).finish(), Vec::new()),
        "GetPublicKey" => (
            ok(name, seq)
                .attr("modulus", &st.key.modulus_hex())
                .attr("exponent", &st.key.exponent_hex())
                .finish(),
            Vec::new(),
        ),
        "GetStbState" => (
            ok(name, seq).attr("ommStbState", "None").finish(),
            Vec::new(),
        ),
        "GetAccount" => {
            // ids count from 1 (the first account is 1); `id` asks for one, none for all
            let wanted = req.get("id").and_then(|v| v.parse::<usize>().ok());
            if wanted.is_some_and(|w| w == 0 || w > st.accounts.len()) {
                return err(name, seq, "ENoEnt", &[]);
            }
            let accounts: Vec<String> = st
                .accounts
                .iter()
                .enumerate()
                .map(|(i, a)| (i + 1, a))
                .filter(|(i, _)| wanted.is_none_or(|w| w == *i))
                .map(|(i, (u, _))| {
                    Out::new("account")
                        .attr("id", &i.to_string())
                        .attr("username", u)
                        .attr("active", "1")
                        .finish()
                })
                .collect();
            (
                accounts
                    .iter()
                    .fold(ok(name, seq), |o, a| o.child(a))
                    .finish(),
                Vec::new(),
            )
        }
        "GetDECTAuthCode" => (ok(name, seq).attr("ac", &st.ac).finish(), Vec::new()),
        "SetDECTAuthCode" => {
            st.ac = req.get("ac").unwrap_or("").to_owned();
            st.emit_raw(
                "SystemCnf",
                &Out::new("EventDECTAuthCodeCnf").attr("ac", &st.ac).finish(),
            );
            (ok(name, seq).finish(), Vec::new())
        }
        "GetDevAutoCreate" => (
            ok(name, seq)
                .attr("enable", if st.dev_auto_create { "1" } else { "0" })
                .finish(),
            Vec::new(),
        ),
        "SetDevAutoCreate" => match req.get("enable").and_then(bool_attr) {
            Some(on) => {
                st.dev_auto_create = on;
                (
                    ok(name, seq)
                        .attr("enable", if on { "1" } else { "0" })
                        .finish(),
                    Vec::new(),
                )
            }
            None => err(name, seq, "EInval", &[("bad", "enable")]),
        },
        "GetRestrictedSubscriptionDuration" => (
            ok(name, seq)
                .attr("restrictedSubscrDur", &st.restricted_dur)
                .finish(),
            Vec::new(),
        ),
        "SetRestrictedSubscriptionDuration" => {
            st.restricted_dur = req.get("restrictedSubscrDur").unwrap_or("0").to_owned();
            (ok(name, seq).finish(), Vec::new())
        }
        "GetPPDevSummary" => {
            let subscribed = st
                .devices
                .values()
                .filter(|d| d.get("s").map(String::as_str) == Some("Yes"))
                .count();
            let first = st.devices.first_id().unwrap_or(0);
            (
                ok(name, seq)
                    .attr("nRecords", &st.devices.len().to_string())
                    .attr("ppnFirst", &first.to_string())
                    .attr("subscribedDevs", &subscribed.to_string())
                    .finish(),
                Vec::new(),
            )
        }
        "GetPPUserSummary" => {
            let first = st.users.first_id().unwrap_or(0);
            (
                ok(name, seq)
                    .attr("nRecords", &st.users.len().to_string())
                    .attr("uidFirst", &first.to_string())
                    .finish(),
                Vec::new(),
            )
        }
        "Subscribe" => subscribe(st, session, name, seq, req),
        "GetPPUser" => paged(st, name, seq, req, true),
        "GetPPDev" => paged(st, name, seq, req, false),
        "GetPPUserByNumber" => {
            let num = req.get("num").unwrap_or("");
            match st.users.find(num).and_then(|uid| st.users.get(&uid)) {
                Some(u) => (ok(name, seq).child(&st.user_xml(u)).finish(), Vec::new()),
                None => err(name, seq, "ENoEnt", &[]),
            }
        }
        "GetPPDevByIPEI" => {
            let found = req
                .get("ipei")
                .and_then(canonical_ipei)
                .and_then(|i| st.find_device_by_ipei(&i));
            match found {
                Some(ppn) => (
                    ok(name, seq)
                        .child(&State::pp_xml(&st.devices[&ppn]))
                        .finish(),
                    Vec::new(),
                ),
                None => err(name, seq, "ENoEnt", &[]),
            }
        }
        "CreatePPUser" => create_user(st, name, seq, req),
        "SetPPUser" => set_user(st, name, seq, req),
        "DeletePPUser" => delete_user(st, name, seq, req),
        "CreatePPDev" => create_dev(st, name, seq, req, sync),
        "SetPPDev" => set_dev(st, name, seq, req, sync),
        "DeletePPDev" => {
            let Some(ppn) = req
                .get("ppn")
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|p| st.devices.contains_key(p))
            else {
                return err(name, seq, "ENoEnt", &[]);
            };
            let mut changes = st.unbind_device(ppn);
            st.devices.remove(&ppn);
            changes.push(Change::Device {
                ppn,
                attrs: Attrs::new(),
                deleted: true,
            });
            (ok(name, seq).finish(), changes)
        }
        "SetPP" => set_pp(st, name, seq, req, sync),
        "GetPP" => {
            let uid = req
                .get("uid")
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            let ppn = req
                .get("ppn")
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            let mut out = ok(name, seq);
            if let Some(u) = st.users.get(&uid) {
                out = out.child(&st.user_xml(u));
            }
            if let Some(d) = st.devices.get(&ppn) {
                out = out.child(&State::pp_xml(d));
            }
            (out.finish(), Vec::new())
        }
        "SetPPUserDevRelation" => {
            let uid = req
                .get("uid")
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            let rel = req.get("relType").unwrap_or("");
            let Some(user) = st.users.get(&uid) else {
                return err(name, seq, "ENoEnt", &[]);
            };
            let ppn: u32 = user.get("ppn").and_then(|p| p.parse().ok()).unwrap_or(0);
            if ppn == 0 || !matches!(rel, "Fixed" | "Dynamic") {
                return err(name, seq, "EInval", &[("bad", "relType")]);
            }
            let mut changes = Vec::new();
            for (is_user, id) in [(true, uid), (false, ppn)] {
                let rec = if is_user {
                    st.users.get_mut(&id)
                } else {
                    st.devices.get_mut(&id)
                };
                if let Some(mut rec) = rec {
                    rec.insert("relType".into(), rel.into());
                    rec.insert("timeStamp".into(), now.to_string());
                }
                let attrs: Attrs = [
                    (if is_user { "uid" } else { "ppn" }, id.to_string()),
                    ("relType", rel.to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                changes.push(if is_user {
                    Change::User {
                        uid: id,
                        attrs,
                        deleted: false,
                    }
                } else {
                    Change::Device {
                        ppn: id,
                        attrs,
                        deleted: false,
                    }
                });
            }
            (
                ok(name, seq)
                    .attr("uid", &uid.to_string())
                    .attr("relType", rel)
                    .finish(),
                changes,
            )
        }
        "GetDECTSubscriptionMode" => (
            ok(name, seq).attr("mode", st.mode.name()).finish(),
            Vec::new(),
        ),
        "SetDECTSubscriptionMode" => {
            let day = 24 * 3600;
            let mode = match req.get("mode") {
                Some("Off") => Mode::Off,
                Some("Configured") => Mode::Configured { until: now + day },
                Some("Wildcard") => {
                    let minutes = req
                        .get("timeout")
                        .and_then(|t| t.parse::<i64>().ok())
                        .unwrap_or(3);
                    if !(1..=60).contains(&minutes) {
                        return err(name, seq, "EInval", &[("bad", "timeout")]);
                    }
                    Mode::Wildcard {
                        until: now + minutes * 60,
                        interval: minutes * 60,
                        configured_until: now + day,
                    }
                }
                _ => return err(name, seq, "EInval", &[("bad", "mode")]),
            };
            st.mode = mode;
            // the reply goes out first, then the event it causes (as on a real OMM)
            (
                ok(name, seq).attr("mode", mode.name()).finish(),
                vec![Change::Mode],
            )
        }
        "GetPPState" => {
            let Some(ppn) = req
                .get("ppn")
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|p| st.devices.contains_key(p))
            else {
                return err(name, seq, "ENoEnt", &[]);
            };
            let mut out = ok(name, seq).attr("ppn", &ppn.to_string());
            let defaults: Attrs = [
                ("onHook", "1"),
                ("registered", "0"),
                ("silentCharging", "0"),
                ("callState", "none"),
                ("swVersion", ""),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let mut merged = defaults;
            if let Some(s) = st.pp_state.get(&ppn) {
                merged.extend(s.clone());
            }
            out = out.attrs(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            (out.finish(), Vec::new())
        }
        "GetLastPPDevAction" => {
            let ppn = req
                .get("ppn")
                .or_else(|| req.get("id"))
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            if !st.devices.contains_key(&ppn) {
                return err(name, seq, "ENoEnt", &[]);
            }
            let mut rec: Attrs = [
                ("ppn", ppn.to_string()),
                ("trType", "None".to_owned()),
                ("rfpId", "0".to_owned()),
                ("relTime", "0".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            if let Some(a) = st.last_action.get(&ppn) {
                rec.extend(a.clone());
            }
            (
                ok(name, seq).child(&State::pp_xml(&rec)).finish(),
                Vec::new(),
            )
        }
        _ => err(name, seq, "EInval", &[("info", "unknown request")]),
    }
}

fn subscribe(st: &mut State, session: u64, name: &str, seq: Option<&str>, req: &Node) -> Reply {
    let entries: Vec<&Node> = req.children.iter().filter(|c| c.name == "e").collect();
    if entries.is_empty() || entries.len() > 20 {
        return err(name, seq, "EInval", &[]);
    }
    let mut parsed = Vec::new();
    for e in &entries {
        let Some(t) = e.get("eventType").filter(|t| !t.is_empty()) else {
            return err(name, seq, "EInval", &[("eventType", "")]);
        };
        let on = match e.get("cmd") {
            Some("On") => true,
            Some("Off") => false,
            _ => return err(name, seq, "EInval", &[("eventType", t)]),
        };
        let filter = e
            .get("ppn")
            .or_else(|| e.get("uid"))
            .or_else(|| e.get("rfpId"))
            .and_then(|v| v.parse::<i64>().ok());
        parsed.push((t.to_owned(), on, filter));
    }
    let push_mode = st.knobs.push_mode_on_subscribe
        && parsed
            .iter()
            .any(|(t, on, _)| *on && t == "DECTSubscriptionMode");
    if let Some(info) = st.sessions.get_mut(&session) {
        for (t, on, filter) in parsed {
            info.subs.retain(|(et, f)| !(et == &t && *f == filter));
            if on {
                info.subs.push((t, filter));
            }
        }
    }
    let reply = (ok(name, seq).finish(), Vec::new());
    if push_mode {
        if let Some(info) = st.sessions.get(&session) {
            let _ = info.tx.send(crate::state::Outgoing::Frame(reply.0));
            let _ = info.tx.send(crate::state::Outgoing::Frame(format!(
                "<EventDECTSubscriptionMode mode=\"{}\"/>",
                st.mode.name()
            )));
        }
        return (String::new(), Vec::new());
    }
    reply
}

fn create_user(st: &mut State, name: &str, seq: Option<&str>, req: &Node) -> Reply {
    let Some(node) = req.child("user") else {
        return err(name, seq, "EMissing", &[("bad", "user")]);
    };
    let input = match user_input(st, name, seq, node) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let uid = match node.get("uid").map(str::parse::<u32>) {
        None | Some(Ok(0)) => st.next_uid,
        Some(Ok(u)) if !st.users.contains_key(&u) => u,
        Some(Ok(_)) => return err(name, seq, "EExist", &[("bad", "uid")]),
        Some(Err(_)) => return err(name, seq, "EInval", &[("bad", "uid")]),
    };
    if let Some(num) = input.get("num") {
        if num_taken(st, num, 0) {
            return err(name, seq, "EExist", &[("bad", "num")]);
        }
    }
    st.next_uid = st.next_uid.max(uid + 1);
    let mut rec = user_defaults(uid, st.now);
    rec.extend(input);
    let xml = st.user_xml(&rec);
    st.users.insert(uid, rec.clone());
    (
        ok(name, seq).child(&xml).finish(),
        vec![Change::User {
            uid,
            attrs: rec,
            deleted: false,
        }],
    )
}

fn set_user(st: &mut State, name: &str, seq: Option<&str>, req: &Node) -> Reply {
    let Some(node) = req.child("user") else {
        return err(name, seq, "EMissing", &[("bad", "user")]);
    };
    let Some(uid) = node
        .get("uid")
        .and_then(|u| u.parse::<u32>().ok())
        .filter(|u| st.users.contains_key(u))
    else {
        return err(name, seq, "ENoEnt", &[]);
    };
    let input = match user_input(st, name, seq, node) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Some(num) = input.get("num") {
        if num_taken(st, num, uid) {
            return err(name, seq, "EExist", &[("bad", "num")]);
        }
    }
    let now = st.now;
    let mut rec = st.users.get_mut(&uid).expect("checked above");
    let mut changed = Attrs::new();
    for (k, v) in input {
        if rec.get(&k) != Some(&v) {
            changed.insert(k.clone(), v.clone());
            rec.insert(k, v);
        }
    }
    let mut changes = Vec::new();
    if !changed.is_empty() {
        rec.insert("timeStamp".into(), now.to_string());
        changed.insert("uid".into(), uid.to_string());
        changed.insert("timeStamp".into(), now.to_string());
        changes.push(Change::User {
            uid,
            attrs: changed,
            deleted: false,
        });
    }
    drop(rec);
    let xml = st.user_xml(&st.users[&uid]);
    (ok(name, seq).child(&xml).finish(), changes)
}

fn delete_user(st: &mut State, name: &str, seq: Option<&str>, req: &Node) -> Reply {
    let uid = match (req.get("uid"), req.get("num")) {
        (Some(u), _) => u.parse::<u32>().ok().filter(|u| st.users.contains_key(u)),
        (None, Some(num)) => st.users.find(num),
        (None, None) => return err(name, seq, "EMissing", &[("bad", "uid")]),
    };
    let Some(uid) = uid else {
        return err(name, seq, "ENoEnt", &[]);
    };
    let ppn: u32 = st.users[&uid]
        .get("ppn")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut changes = Vec::new();
    if ppn != 0 {
        changes = st.unbind_device(ppn);
        changes.retain(|c| matches!(c, Change::Device { .. }));
    }
    st.users.remove(&uid);
    changes.push(Change::User {
        uid,
        attrs: Attrs::new(),
        deleted: true,
    });
    (ok(name, seq).finish(), changes)
}

fn dev_input(name: &str, seq: Option<&str>, node: &Node, sync: bool) -> Result<Attrs, Reply> {
    let mut out = Attrs::new();
    for (k, v) in &node.attrs {
        match k.as_str() {
            "ipei" => match canonical_ipei(v) {
                Some(i) => out.insert(k.clone(), i),
                None => return Err(err(name, seq, "EInval", &[("bad", "ipei")])),
            },
            "s" | "uak" if !sync => return Err(err(name, seq, "EPerm", &[("bad", k)])),
            "encrypt" | "autoCreate" | "subscribeToPARIOnly" => match bool_attr(v) {
                Some(b) => out.insert(k.clone(), if b { "1" } else { "0" }.into()),
                None => return Err(err(name, seq, "EInval", &[("bad", k)])),
            },
            k2 if DEV_READ_ONLY.contains(&k2) => None,
            _ => out.insert(k.clone(), v.clone()),
        };
    }
    Ok(out)
}

fn create_dev(st: &mut State, name: &str, seq: Option<&str>, req: &Node, sync: bool) -> Reply {
    let Some(node) = req.child("pp") else {
        return err(name, seq, "EMissing", &[("bad", "pp")]);
    };
    let input = match dev_input(name, seq, node, sync) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(ipei) = input.get("ipei") else {
        return err(name, seq, "EMissing", &[("bad", "ipei")]);
    };
    if st.find_device_by_ipei(ipei).is_some() {
        return err(name, seq, "EExist", &[("bad", "ipei")]);
    }
    let ppn = match node.get("ppn").map(str::parse::<u32>) {
        None | Some(Ok(0)) => st.next_ppn,
        Some(Ok(p)) if !st.devices.contains_key(&p) => p,
        Some(_) => return err(name, seq, "EExist", &[("bad", "ppn")]),
    };
    st.next_ppn = st.next_ppn.max(ppn + 1);
    let mut rec = dev_defaults(ppn, st.now);
    rec.extend(input);
    let xml = State::pp_xml(&rec);
    st.devices.insert(ppn, rec.clone());
    (
        ok(name, seq).child(&xml).finish(),
        vec![Change::Device {
            ppn,
            attrs: rec,
            deleted: false,
        }],
    )
}

fn set_dev(st: &mut State, name: &str, seq: Option<&str>, req: &Node, sync: bool) -> Reply {
    let Some(node) = req.child("pp") else {
        return err(name, seq, "EMissing", &[("bad", "pp")]);
    };
    let Some(ppn) = node
        .get("ppn")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| st.devices.contains_key(p))
    else {
        return err(name, seq, "ENoEnt", &[]);
    };
    let input = match dev_input(name, seq, node, sync) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Some(ipei) = input.get("ipei") {
        if st.find_device_by_ipei(ipei).is_some_and(|p| p != ppn) {
            return err(name, seq, "EExist", &[("bad", "ipei")]);
        }
    }
    let changes = apply_dev(st, ppn, input);
    (
        ok(name, seq)
            .child(&State::pp_xml(&st.devices[&ppn]))
            .finish(),
        changes,
    )
}

fn apply_dev(st: &mut State, ppn: u32, input: Attrs) -> Vec<Change> {
    let now = st.now;
    let mut rec = st.devices.get_mut(&ppn).expect("caller checked");
    let mut changed = Attrs::new();
    for (k, v) in input {
        if rec.get(&k) != Some(&v) {
            changed.insert(k.clone(), v.clone());
            rec.insert(k, v);
        }
    }
    if changed.is_empty() {
        return Vec::new();
    }
    rec.insert("timeStamp".into(), now.to_string());
    changed.insert("ppn".into(), ppn.to_string());
    vec![Change::Device {
        ppn,
        attrs: changed,
        deleted: false,
    }]
}

fn set_pp(st: &mut State, name: &str, seq: Option<&str>, req: &Node, sync: bool) -> Reply {
    if !sync {
        return err(
            name,
            seq,
            "EPerm",
            &[("info", "SetPP needs a UserDeviceSyncClient session")],
        );
    }
    let pp = req.child("pp");
    let user = req.child("user");
    let ppn = pp
        .and_then(|p| p.get("ppn"))
        .or_else(|| user.and_then(|u| u.get("ppn")))
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    let uid = user
        .and_then(|u| u.get("uid"))
        .or_else(|| pp.and_then(|p| p.get("uid")))
        .and_then(|u| u.parse::<u32>().ok())
        .unwrap_or(0);
    let rel = pp
        .and_then(|p| p.get("relType"))
        .or_else(|| user.and_then(|u| u.get("relType")));
    let mut changes = Vec::new();
    match (user, rel) {
        // attach
        (Some(_), Some("Dynamic" | "Fixed")) if ppn != 0 && uid != 0 => {
            if !st.devices.contains_key(&ppn) || !st.users.contains_key(&uid) {
                return err(name, seq, "ENoEnt", &[]);
            }
            let rel = rel.unwrap_or("Dynamic").to_owned();
            let cur_dev_uid: u32 = st.devices[&ppn]
                .get("uid")
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
            let cur_user_ppn: u32 = st.users[&uid]
                .get("ppn")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if cur_dev_uid != uid && cur_dev_uid != 0 {
                changes.extend(st.unbind_device(ppn));
            }
            if cur_user_ppn != ppn && cur_user_ppn != 0 {
                changes.extend(st.unbind_device(cur_user_ppn));
            }
            let now = st.now.to_string();
            let mut d = st.devices.get_mut(&ppn).expect("checked");
            d.insert("uid".into(), uid.to_string());
            d.insert("relType".into(), rel.clone());
            d.insert("timeStamp".into(), now.clone());
            let mut u = st.users.get_mut(&uid).expect("checked");
            u.insert("ppn".into(), ppn.to_string());
            u.insert("relType".into(), rel.clone());
            u.insert("timeStamp".into(), now.clone());
            let mk = |pairs: [(&str, String); 4]| {
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Attrs>()
            };
            changes.push(Change::User {
                uid,
                attrs: mk([
                    ("uid", uid.to_string()),
                    ("ppn", ppn.to_string()),
                    ("relType", rel.clone()),
                    ("timeStamp", now.clone()),
                ]),
                deleted: false,
            });
            changes.push(Change::Device {
                ppn,
                attrs: mk([
                    ("ppn", ppn.to_string()),
                    ("uid", uid.to_string()),
                    ("relType", rel),
                    ("timeStamp", now),
                ]),
                deleted: false,
            });
        }
        // detach
        (Some(_), Some("Unbound")) | (Some(_), None) if ppn != 0 || uid != 0 => {
            let target = if ppn != 0 {
                ppn
            } else {
                st.users
                    .get(&uid)
                    .and_then(|u| u.get("ppn"))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0)
            };
            if target == 0 || !st.devices.contains_key(&target) {
                if !st.users.contains_key(&uid) {
                    return err(name, seq, "ENoEnt", &[]);
                }
            } else {
                changes.extend(st.unbind_device(target));
            }
        }
        // device-only change
        (None, _) if ppn != 0 => {
            if !st.devices.contains_key(&ppn) {
                return err(name, seq, "ENoEnt", &[]);
            }
            let mut input = match dev_input(name, seq, pp.expect("ppn came from pp"), true) {
                Ok(a) => a,
                Err(r) => return r,
            };
            input.remove("relType");
            changes.extend(apply_dev(st, ppn, input));
        }
        _ => return err(name, seq, "EInval", &[("bad", "relType")]),
    }
    let mut out = ok(name, seq);
    if let Some(d) = st.devices.get(&ppn) {
        out = out.child(&State::pp_xml(d));
    }
    if let Some(u) = st.users.get(&uid) {
        out = out.child(&st.user_xml(u));
    }
    (out.finish(), changes)
}

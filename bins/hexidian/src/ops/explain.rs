//! `hexidian explain`: what the broker would do with GURU3 messages, planned by the broker's
//! own planner ([`broker_core::explain`]) against the mirror stored in PostgreSQL. It reads
//! the database and writes nothing; it asks neither GURU3 nor the OMM. `--resync` plans a
//! full resync now: it reads the PBX rows and the OMM (its own session) as `reconcile` does,
//! and plans the repair of each number that differs, as a resync's re-check would make it.

use std::io::Read;
use std::path::{Path, PathBuf};

use broker_core::explain::{Decision, Explanation};

use super::{printable, with_stores};

/// The largest message file `explain` reads (a GET page of 1,000 messages is ~1 MB).
const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// Where the messages to explain come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A JSON file: one GURU3 message envelope, or an array of them.
    File(PathBuf),
    /// The same, on standard input.
    Stdin,
    /// A dead letter of the journal, by message id (with its secrets put back).
    Journal(i64),
    /// A full resync now: GURU3 re-sends what the mirror holds.
    Resync,
}

fn read_input(source: &Source) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let (what, read) = match source {
        Source::Journal(_) | Source::Resync => return Ok(body),
        Source::File(p) => (
            p.display().to_string(),
            std::fs::File::open(p).and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut body)),
        ),
        Source::Stdin => (
            "standard input".to_owned(),
            std::io::stdin()
                .lock()
                .take(MAX_INPUT + 1)
                .read_to_end(&mut body),
        ),
    };
    read.map_err(|e| format!("{what}: {e}"))?;
    if body.len() as u64 > MAX_INPUT {
        return Err(format!("{what}: larger than {MAX_INPUT} bytes"));
    }
    Ok(body)
}

/// `hexidian explain`: the plan of every message of `source`, as text or (`json`) one JSON
/// object.
pub async fn explain(path: &Path, source: Source, json: bool) -> Result<String, String> {
    if let Source::Resync = source {
        return resync(path, json).await;
    }
    let body = read_input(&source)?;
    let (mirror, sync, dead) = with_stores(path, async |pbx, state| {
        let dead = match source {
            Source::Journal(id) => Some(state.dead_letter(id).await?.map(|(j, _)| j)),
            _ => None,
        };
        let sync = pbx.sync_state().await?;
        let docs = state.load_desired().await?;
        Ok((crate::adapters::mirror_entries(docs), sync, dead))
    })
    .await?;
    let msgs = match (&source, dead) {
        (Source::Journal(id), Some(None)) => {
            return Err(format!(
                "no dead letter with id {id} (only dead letters keep their message)"
            ));
        }
        (_, Some(Some(j))) => {
            let m = crate::adapters::restore(&j.payload, j.secrets.as_ref())
                .map_err(|e| format!("dead letter {}: {e}", j.id))?;
            crate::adapters::decode_messages(m.expose().as_bytes())?
        }
        _ => crate::adapters::decode_messages(&body)?,
    };
    let size = mirror.len();
    let plans = broker_core::explain::explain(&msgs, mirror, sync);
    let epoch = sync.1.then_some(sync.0);
    Ok(if json {
        format!("{}\n", to_json(&plans, size, epoch))
    } else {
        to_text(&plans, size, epoch)
    })
}

/// `explain --resync`: the drift ([`crate::drift::compare`]) and, per number with drift of
/// hexidian's own, the planner's repair (a resync's re-check of that number, or the sweep of
/// what the mirror lacks).
async fn resync(path: &Path, json: bool) -> Result<String, String> {
    let (mirror, sync, users, routes) = with_stores(path, async |pbx, state| {
        let docs = state.load_desired().await?;
        Ok((
            crate::adapters::mirror_entries(docs),
            pbx.sync_state().await?,
            pbx.list_managed().await?,
            pbx.routes(None).await?,
        ))
    })
    .await?;
    let omm = super::omm::read(path).await?.views();
    let (plans, found) = resync_plan(mirror, &users, &routes, &omm, sync);
    Ok(if json {
        let mut v = to_json(&plans, 0, sync.1.then_some(sync.0));
        v["drift"] = serde_json::Value::Array(crate::drift::json_rows(&found));
        format!("{v}\n")
    } else {
        resync_text(&plans, &found)
    })
}

/// The repair plan of every number whose own objects drifted, and the drift.
fn resync_plan(
    mirror: Vec<(broker_core::model::Number, broker_core::model::MirrorEntry)>,
    users: &[asterisk_realtime::ManagedUser],
    routes: &[asterisk_realtime::Route],
    omm: &[omm_provision::UserView],
    sync: (i64, bool),
) -> (Vec<Explanation>, Vec<crate::drift::Drift>) {
    let found = crate::drift::compare(&mirror, users, routes, omm);
    let mut numbers: Vec<&str> = found
        .iter()
        .filter(|d| d.owned)
        .map(|d| d.number.as_str())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let msgs: Vec<broker_core::model::Incoming> = numbers
        .iter()
        .filter_map(|n| n.parse().ok())
        .map(|n| broker_core::model::Incoming {
            id: 0,
            kind: "RESYNC".into(),
            raw: String::new(),
            secrets: None,
            command: Ok(broker_core::model::Command::Repair(n)),
        })
        .collect();
    let plans = broker_core::explain::explain(&msgs, mirror, sync);
    (plans, found)
}

fn resync_text(plans: &[Explanation], found: &[crate::drift::Drift]) -> String {
    let mut out = format!(
        "a full resync now, if GURU3 still holds what the mirror holds: {} number(s) would \
         change; every other one is re-checked and nothing written. Nothing was written.\n",
        plans.len()
    );
    for d in found.iter().filter(|d| !d.owned) {
        out.push_str(&format!(
            "left alone: {} {} {}\n",
            d.target,
            printable(&d.number),
            printable(&d.detail)
        ));
    }
    for p in plans {
        let number = p.number.as_deref().unwrap_or("-");
        out.push_str(&format!("\n{number}:\n"));
        for d in found.iter().filter(|d| d.owned && d.number == number) {
            out.push_str(&format!(
                "  drift  {:<6} {:<10} {:<9} {}\n",
                d.target,
                d.kind,
                d.field.unwrap_or("-"),
                printable(&d.detail)
            ));
        }
        for s in &p.steps {
            out.push_str(&step_line(s));
        }
    }
    out
}

/// One step as an indented line of a plan.
fn step_line(s: &broker_core::explain::Step) -> String {
    let line = format!(
        "  {:<6} {:<16} {:<10} {}",
        s.target.as_str(),
        s.action,
        s.number,
        printable(&s.detail)
    );
    format!("{}\n", line.trim_end())
}

fn decision(d: &Decision) -> (&'static str, Option<&str>) {
    match d {
        Decision::Apply => ("apply", None),
        Decision::Ignored(r) => ("ignored", Some(r)),
        Decision::Malformed(r) => ("malformed", Some(r)),
        Decision::Sync(r) => ("resync", Some(r)),
    }
}

fn to_json(plans: &[Explanation], mirror: usize, epoch: Option<i64>) -> serde_json::Value {
    let messages: Vec<serde_json::Value> = plans
        .iter()
        .map(|p| {
            let (decision, reason) = decision(&p.decision);
            let steps: Vec<serde_json::Value> = p
                .steps
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "target": s.target.as_str(), "action": s.action,
                        "number": s.number, "detail": s.detail,
                    })
                })
                .collect();
            serde_json::json!({
                "id": p.id, "type": p.kind, "number": p.number, "decision": decision,
                "reason": reason, "unchanged": p.unchanged, "steps": steps,
            })
        })
        .collect();
    serde_json::json!({
        "mirror_extensions": mirror, "resync_epoch": epoch, "messages": messages,
    })
}

fn to_text(plans: &[Explanation], mirror: usize, epoch: Option<i64>) -> String {
    let mut out = format!(
        "planned against the stored mirror ({mirror} numbers, {}); nothing was written\n",
        match epoch {
            Some(e) => format!("resync epoch {e} in progress"),
            None => "no resync in progress".into(),
        }
    );
    for p in plans {
        out.push_str(&format!("\n{} {}", p.id, printable(&p.kind)));
        if let Some(n) = &p.number {
            out.push_str(&format!(" {n}"));
        }
        match decision(&p.decision) {
            ("resync", Some(r)) => out.push_str(&format!(": {}", printable(r))),
            (d, Some(r)) => out.push_str(&format!(": {d}: {}", printable(r))),
            (d, None) => out.push_str(&format!(": {d}")),
        }
        if p.unchanged {
            out.push_str(" (the mirror already holds it: the targets are re-checked, only what differs is written)");
        } else if p.steps.is_empty() && p.decision == Decision::Apply {
            out.push_str(" (nothing to change)");
        }
        out.push('\n');
        for s in &p.steps {
            out.push_str(&step_line(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use broker_core::model::{Command, MirrorEntry, Number};

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/guru3")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn messages(name: &str) -> Vec<broker_core::model::Incoming> {
        crate::adapters::decode_messages(&fixture(name)).expect(name)
    }

    /// A stored mirror as the broker leaves it after these single messages: each extension
    /// and member list as GURU3 sent it.
    fn mirror(names: &[&str]) -> Vec<(Number, MirrorEntry)> {
        let mut out: std::collections::BTreeMap<Number, MirrorEntry> = Default::default();
        for m in names.iter().flat_map(|n| messages(n)) {
            match m.command.expect("fixture decodes") {
                Command::Upsert(x) => {
                    let n = x.number.clone();
                    out.entry(n).or_default().extension = Some(x);
                }
                Command::SetMembers {
                    number, members, ..
                } => out.entry(number).or_default().members = members,
                other => panic!("not a mirror fixture: {other:?}"),
            }
        }
        out.into_iter().collect()
    }

    const EVENT: &[&str] = &[
        "update-extension-sip.json",
        "update-extension-dect-with-handset.json",
        "update-extension-group.json",
        "update-callgroup-group.json",
    ];

    fn text(name: &str, stored: Vec<(Number, MirrorEntry)>, sync: (i64, bool)) -> String {
        let size = stored.len();
        let plans = broker_core::explain::explain(&messages(name), stored, sync);
        to_text(&plans, size, sync.1.then_some(sync.0))
    }

    #[test]
    fn a_rename_moves_the_user_and_every_reference_to_it() {
        insta::assert_snapshot!(text("rename-extension.json", mirror(EVENT), (3, false)));
    }

    #[test]
    fn each_message_type_of_a_resync_and_live_edits() {
        // the fixture's whole story against an empty mirror: every type, the resync markers,
        // a rename whose member lists GURU3 does not re-send, a delete, an unsupported type
        insta::assert_snapshot!(text(
            "get-messages-mixed-batch.json",
            Vec::new(),
            (3, false)
        ));
    }

    #[test]
    fn single_messages_against_a_stored_event() {
        let mut out = String::new();
        for name in [
            "update-extension-sip.json",
            "update-extension-dect-no-handset.json",
            "update-extension-gsm.json",
            "update-callgroup-multiring-cleared.json",
            "delete-extension.json",
            "unsubscribe-device.json",
            "call-extension.json",
            "sync-started.json",
            "sync-ended.json",
        ] {
            out.push_str(&format!("== {name}\n"));
            out.push_str(&text(name, mirror(EVENT), (3, true)));
        }
        insta::assert_snapshot!(out);
    }

    fn pbx_user(
        n: &str,
        kind: asterisk_realtime::Kind,
        name: &str,
        pw: &str,
    ) -> asterisk_realtime::ManagedUser {
        asterisk_realtime::ManagedUser {
            extension: n.into(),
            kind: Some(kind),
            display_name: asterisk_realtime::sanitize_display_name(name),
            seen_epoch: 3,
            has_endpoint: true,
            has_aor: true,
            has_auth: true,
            context: Some("hexidian-users".into()),
            callerid: None,
            links_ok: true,
            password: pw.parse().ok(),
        }
    }

    fn omm_user(
        uid: u32,
        n: &str,
        name: &str,
        owner: omm_provision::Owner,
        ipei: Option<&str>,
    ) -> omm_provision::UserView {
        omm_provision::UserView {
            uid,
            number: n.into(),
            name: name.into(),
            owner,
            ipei: ipei.map(|i| i.parse().unwrap()),
        }
    }

    #[test]
    fn a_resync_plan_repairs_what_drifted_and_sweeps_what_the_mirror_lacks() {
        use asterisk_realtime::Kind as K;
        use omm_provision::Owner::{Foreign, Owned};
        // the PBX: 2001's password changed in psql, 2500 left over; the group's route is there
        let users = [
            pbx_user("2001", K::Sip, "Lena Brandt", "changed1"),
            pbx_user("2002", K::Dect, "Kiosk Nord", "generated1"),
            pbx_user("2500", K::Sip, "Gone", "whatever1"),
        ];
        let routes = [asterisk_realtime::Route {
            id: "1100".into(),
            name: "Infodesk".into(),
            short_name: "INF".into(),
            dialstring: String::new(),
        }];
        // the OMM: 2002's handset lost, 2600 left over, someone else's 3000
        let omm = [
            omm_user(1, "2002", "Kiosk Nord", Owned, None),
            omm_user(2, "2600", "Old", Owned, None),
            omm_user(3, "3000", "Reception", Foreign, Some("03587 0412396 2")),
        ];
        let (plans, found) = resync_plan(mirror(EVENT), &users, &routes, &omm, (3, false));
        insta::assert_snapshot!(resync_text(&plans, &found));
    }

    #[test]
    fn json_names_every_step_and_no_secret() {
        let stored = mirror(EVENT);
        let size = stored.len();
        let plans = broker_core::explain::explain(
            &messages("update-extension-dect-with-handset.json"),
            Vec::new(),
            (0, false),
        );
        let v = to_json(&plans, size, None);
        let text = v.to_string();
        for secret in ["05704191", "FA05689957F199E95B1FE44621BFD6EE"] {
            assert!(!text.contains(secret), "{text}");
        }
        let steps = v["messages"][0]["steps"].as_array().unwrap();
        let actions: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| (s["target"].as_str().unwrap(), s["action"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            [
                ("pbx", "upsert-user"),
                ("omm", "upsert-user"),
                ("omm", "bind-handset"),
                ("mirror", "store")
            ]
        );
        assert_eq!(v["messages"][0]["decision"], "apply");
    }

    #[test]
    fn a_resend_of_what_the_mirror_holds_is_a_re_check() {
        let out = text("update-extension-sip.json", mirror(EVENT), (3, false));
        assert!(out.contains("the mirror already holds it"), "{out}");
        assert!(!out.contains("mirror store"), "{out}");
        // during a resync the same message only marks the number seen
        let out = text("update-extension-sip.json", mirror(EVENT), (4, true));
        assert!(out.contains("mark-seen"), "{out}");
    }

    #[test]
    fn input_that_is_not_a_message_is_refused_clearly() {
        for (body, want) in [
            (&b"{"[..], "not a GURU3 message"),
            (b"[{\"no\": \"id\"}]", "not message envelopes"),
            (b"42", "not a GURU3 message"),
        ] {
            let e = crate::adapters::decode_messages(body).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}

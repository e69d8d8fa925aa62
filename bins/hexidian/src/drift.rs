//! Drift between the mirror (GURU3's desired state as hexidian last applied it) and what the
//! PBX rows and the OMM hold: missing, extra, different (with the field), and foreign OMM
//! users hexidian never touches. Pure: `hexidian reconcile` and the broker's periodic check
//! gather the inputs and call [`compare`].

use std::collections::{BTreeMap, HashMap};

use asterisk_realtime::{Kind as PbxKind, ManagedUser, Route};
use broker_core::model::{Extension, Kind, MirrorEntry, Number};
use omm_provision::{Owner, UserView};

use crate::ops::printable;

/// One difference between the mirror and a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    /// `pbx` or `omm`.
    pub(crate) target: &'static str,
    pub(crate) number: String,
    /// `missing`, `extra`, `different` or `foreign`.
    pub(crate) kind: &'static str,
    /// What differs, for `different`.
    pub(crate) field: Option<&'static str>,
    /// hexidian owns what is wrong (or should exist), so repairing it is hexidian's job;
    /// `false`: someone else's object, only reported.
    pub(crate) owned: bool,
    /// For a person (never a secret).
    pub(crate) detail: String,
}

fn drift(
    target: &'static str,
    number: &str,
    kind: &'static str,
    field: Option<&'static str>,
    owned: bool,
    detail: String,
) -> Drift {
    Drift {
        target,
        number: number.to_owned(),
        kind,
        field,
        owned,
        detail,
    }
}

/// The PBX's side: every user hexidian owns and every call-group route.
fn pbx_drift(
    want: &BTreeMap<String, &Extension>,
    users: &[ManagedUser],
    routes: &[Route],
    out: &mut Vec<Drift>,
) {
    let have: HashMap<&str, &ManagedUser> =
        users.iter().map(|u| (u.extension.as_str(), u)).collect();
    for (n, x) in want {
        let expect = match &x.kind {
            Kind::Sip { .. } => PbxKind::Sip,
            Kind::Dect { .. } => PbxKind::Dect,
            _ => continue,
        };
        let Some(u) = have.get(n.as_str()) else {
            out.push(drift(
                "pbx",
                n,
                "missing",
                None,
                true,
                format!("{} user {:?} has no PBX user", x.kind.label(), x.name),
            ));
            continue;
        };
        if u.kind != Some(expect) {
            out.push(drift(
                "pbx",
                n,
                "different",
                Some("kind"),
                true,
                format!(
                    "a {} extension, stored as {}",
                    x.kind.label(),
                    u.kind.map_or("an unknown kind", |k| match k {
                        PbxKind::Sip => "SIP",
                        PbxKind::Dect => "DECT",
                        PbxKind::Temp => "a temporary user",
                    })
                ),
            ));
        }
        if !u.is_complete() {
            let mut lost = Vec::new();
            for (has, table) in [
                (u.has_endpoint, "ps_endpoints"),
                (u.has_aor, "ps_aors"),
                (u.has_auth, "ps_auths"),
            ] {
                if !has {
                    lost.push(table);
                }
            }
            let detail = if lost.is_empty() {
                "its rows do not point at each other".to_owned()
            } else {
                format!("no row in {}", lost.join(", "))
            };
            out.push(drift("pbx", n, "different", Some("rows"), true, detail));
        }
        if let Kind::Sip { password, .. } = &x.kind
            && u.has_auth
            && u.password.as_ref().map(|p| p.expose()) != Some(password.expose())
        {
            out.push(drift(
                "pbx",
                n,
                "different",
                Some("password"),
                true,
                "the SIP password is not GURU3's".into(),
            ));
        }
        let name = asterisk_realtime::sanitize_display_name(&x.name);
        if u.has_endpoint && u.display_name != name {
            out.push(drift(
                "pbx",
                n,
                "different",
                Some("name"),
                true,
                format!("{:?}, GURU3 has {name:?}", printable(&u.display_name)),
            ));
        }
    }
    for u in users {
        let temp = u.kind == Some(PbxKind::Temp);
        if !temp && !want.contains_key(&u.extension) {
            out.push(drift(
                "pbx",
                &u.extension,
                "extra",
                None,
                true,
                format!(
                    "hexidian's user {:?} is no SIP or DECT extension in GURU3",
                    printable(&u.display_name)
                ),
            ));
        }
    }
    let groups: HashMap<&str, &Route> = routes.iter().map(|r| (r.id.as_str(), r)).collect();
    for (n, x) in want {
        if matches!(x.kind, Kind::Group { .. }) && !groups.contains_key(n.as_str()) {
            out.push(drift(
                "pbx",
                n,
                "missing",
                None,
                true,
                format!("group {:?} has no route", x.name),
            ));
        }
    }
    for r in routes {
        let is_group = want
            .get(&r.id)
            .is_some_and(|x| matches!(x.kind, Kind::Group { .. }));
        if !is_group {
            out.push(drift(
                "pbx",
                &r.id,
                "extra",
                None,
                true,
                format!("route of group {:?}, no GROUP in GURU3", printable(&r.name)),
            ));
        }
    }
}

/// The OMM's side: a user per DECT extension, hexidian's users without one, foreign users.
fn omm_drift(want: &BTreeMap<String, &Extension>, omm: &[UserView], out: &mut Vec<Drift>) {
    let by_num: HashMap<&str, &UserView> = omm
        .iter()
        .filter(|u| !u.number.is_empty())
        .map(|u| (u.number.as_str(), u))
        .collect();
    for (n, x) in want {
        let Kind::Dect { handset, .. } = &x.kind else {
            continue;
        };
        let Some(u) = by_num.get(n.as_str()) else {
            out.push(drift(
                "omm",
                n,
                "missing",
                None,
                true,
                format!("DECT user {:?} is not in the OMM", x.name),
            ));
            continue;
        };
        if u.owner != Owner::Owned {
            // reported below with every foreign user
            continue;
        }
        let name = broker_core::omm_name(&x.name);
        if u.name != name {
            out.push(drift(
                "omm",
                n,
                "different",
                Some("name"),
                true,
                format!("{:?}, GURU3 has {name:?}", printable(&u.name)),
            ));
        }
        if let Some(h) = handset {
            let want_ipei = h.ipei.parse::<omm_axi::Ipei>().ok();
            if u.ipei.is_none() || u.ipei != want_ipei {
                out.push(drift(
                    "omm",
                    n,
                    "different",
                    Some("handset"),
                    true,
                    format!(
                        "bound to {}, GURU3 has {}",
                        u.ipei
                            .map_or_else(|| "no handset".to_owned(), |i| i.to_string()),
                        h.ipei
                    ),
                ));
            }
        }
    }
    for u in omm {
        let num = u.number.as_str();
        match u.owner {
            Owner::Owned => {
                let dect = want
                    .get(num)
                    .is_some_and(|x| matches!(x.kind, Kind::Dect { .. }));
                if !dect {
                    out.push(drift(
                        "omm",
                        num,
                        "extra",
                        None,
                        true,
                        format!(
                            "hexidian's user {:?} is no DECT extension in GURU3",
                            printable(&u.name)
                        ),
                    ));
                }
            }
            Owner::Temporary => {}
            Owner::Foreign => {
                let clash = want.get(num).map_or(String::new(), |x| {
                    format!(
                        "; GURU3 has {} {:?} under this number",
                        x.kind.label(),
                        x.name
                    )
                });
                out.push(drift(
                    "omm",
                    num,
                    "foreign",
                    None,
                    false,
                    format!(
                        "user {:?} is not hexidian's: never changed{clash}",
                        printable(&u.name)
                    ),
                ));
            }
        }
    }
}

/// Every drift between the mirror and the targets, by target and number.
pub(crate) fn compare(
    mirror: &[(Number, MirrorEntry)],
    users: &[ManagedUser],
    routes: &[Route],
    omm: &[UserView],
) -> Vec<Drift> {
    let want: BTreeMap<String, &Extension> = mirror
        .iter()
        .filter_map(|(n, e)| Some((n.to_string(), e.extension.as_ref()?)))
        .collect();
    let mut out = Vec::new();
    pbx_drift(&want, users, routes, &mut out);
    omm_drift(&want, omm, &mut out);
    out.sort_by(|a, b| (a.target, &a.number, a.kind).cmp(&(b.target, &b.number, b.kind)));
    out
}

/// Drift as JSON rows.
pub(crate) fn json_rows(found: &[Drift]) -> Vec<serde_json::Value> {
    found
        .iter()
        .map(|d| {
            serde_json::json!({
                "target": d.target, "number": d.number, "drift": d.kind,
                "field": d.field, "owned": d.owned, "detail": d.detail,
            })
        })
        .collect()
}

/// Most drift items a report keeps for `/readyz` and the status stream (the counts are whole).
const KEEP: usize = 50;

/// The outcome of the broker's last periodic check.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// When it ran, RFC 3339 UTC.
    pub(crate) checked_at: String,
    /// Drift of hexidian's own objects.
    pub(crate) owned: usize,
    /// Foreign OMM users.
    pub(crate) foreign: usize,
    /// The first [`KEEP`] items.
    pub(crate) items: Vec<Drift>,
    /// Why the check did not run (the broker was busy, a peer was down).
    pub(crate) skipped: Option<String>,
}

impl Report {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "checked_at": self.checked_at, "owned": self.owned, "foreign": self.foreign,
            "skipped": self.skipped, "items": json_rows(&self.items),
        })
    }
}

fn now_utc() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One comparison from what the running process holds: the mirror from the state store,
/// the PBX's rows, the OMM from the link's map (no OMM request). `Err`: why it could not run.
pub(crate) async fn check_once(h: &crate::Health) -> Result<Vec<Drift>, String> {
    if let Some(b) = h.broker_status() {
        if b.stalled.is_some() || b.backlog > 0 {
            return Err("the broker is busy with messages".into());
        }
    } else {
        return Err("the broker is not running yet".into());
    }
    let pg = h.pg.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let state = h.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (Some(pg), Some(state)) = (pg, state) else {
        return Err("PostgreSQL is not connected (or hexidian runs on the in-memory store)".into());
    };
    let omm = h.omm.users().ok_or("the OMM is not read completely yet")?;
    let (epoch_open, users, routes) = async {
        Ok::<_, asterisk_realtime::Error>((
            pg.sync_state().await?.1,
            pg.list_managed().await?,
            pg.routes(None).await?,
        ))
    }
    .await
    .map_err(|e| format!("postgres: {e}"))?;
    if epoch_open {
        return Err("a GURU3 resync is in progress".into());
    }
    let mirror = state.load().await.map_err(|e| e.report())?;
    Ok(compare(&mirror, &users, &routes, &omm))
}

/// The broker's periodic check: every `every`, compares; drift of hexidian's own objects
/// counts only if a second comparison a few seconds later still finds it (a message applied
/// between the reads is no drift). Reports to the log, `/readyz`, the status stream and
/// `/metrics`; repairs nothing.
pub(crate) async fn watch(
    h: crate::Health,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let key = |d: &Drift| (d.target, d.number.clone(), d.kind, d.field);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let mut report = Report {
            checked_at: now_utc(),
            ..Report::default()
        };
        let first = match check_once(&h).await {
            Ok(found) => found,
            Err(why) => {
                tracing::debug!(reason = %why, "drift check skipped");
                report.skipped = Some(why);
                h.set_drift(report);
                continue;
            }
        };
        let found = if first.iter().any(|d| d.owned) {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
                _ = stop.changed() => return,
            }
            let earlier: std::collections::HashSet<_> = first.iter().map(key).collect();
            match check_once(&h).await {
                Ok(again) => again
                    .into_iter()
                    .filter(|d| !d.owned || earlier.contains(&key(d)))
                    .collect(),
                Err(_) => first.into_iter().filter(|d| !d.owned).collect(),
            }
        } else {
            first
        };
        report.owned = found.iter().filter(|d| d.owned).count();
        report.foreign = found.len() - report.owned;
        if report.owned > 0 {
            let sample: Vec<String> = found
                .iter()
                .filter(|d| d.owned)
                .take(5)
                .map(|d| format!("{} {} {}", d.target, d.number, d.kind))
                .collect();
            tracing::warn!(
                owned = report.owned,
                foreign = report.foreign,
                first = %sample.join(", "),
                "drift between GURU3's extensions and the PBX or the OMM (hexidian reconcile lists it; a GURU3 resync repairs it)"
            );
        }
        report.items = found.into_iter().take(KEEP).collect();
        h.set_drift(report);
    }
}

/// What `POST /reconcile/apply` did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied {
    pub(crate) before: Vec<Drift>,
    /// The numbers repaired through the broker.
    pub(crate) repaired: Vec<String>,
    /// Repairs the broker had not finished within the wait (it keeps retrying them).
    pub(crate) pending: Vec<String>,
    pub(crate) after: Vec<Drift>,
}

/// Repairs hexidian's own drift through the running broker: one `Command::Repair` per
/// number with drift of hexidian's own objects, queued like a replay (journalled under
/// negative ids, never acked to GURU3), then compares again.
pub(crate) async fn apply(h: &crate::Health, wait: std::time::Duration) -> Result<Applied, String> {
    let before = check_once(h).await?;
    let mut numbers: Vec<String> = before
        .iter()
        .filter(|d| d.owned)
        .map(|d| d.number.clone())
        .collect();
    numbers.sort();
    numbers.dedup();
    let mut out = Applied {
        before,
        ..Applied::default()
    };
    if numbers.is_empty() {
        out.after = out.before.clone();
        return Ok(out);
    }
    // ids GURU3 never uses: negative, unique per run
    let base = -std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(1))
        .saturating_mul(1000);
    let mut ids = HashMap::new();
    let mut batch = Vec::new();
    for (i, n) in numbers.iter().enumerate() {
        let Ok(number) = n.parse::<Number>() else {
            continue;
        };
        let id = base - i as i64;
        ids.insert(id, n.clone());
        batch.push(broker_core::model::Incoming {
            id,
            kind: "RECONCILE".into(),
            raw: String::new(),
            secrets: None,
            command: Ok(broker_core::model::Command::Repair(number)),
        });
    }
    out.repaired = ids.values().cloned().collect();
    out.repaired.sort();
    let pending = h.replay.replay(batch, wait).await?;
    out.pending = pending
        .iter()
        .filter_map(|id| ids.get(id).cloned())
        .collect();
    out.pending.sort();
    out.after = match check_once(h).await {
        Ok(after) => after,
        Err(why) => return Err(format!("repairs queued; the check after them: {why}")),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        // a leap day and the turn of a century that is a leap year
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_796_645_045), "2026-12-07T12:04:05Z");
    }
}

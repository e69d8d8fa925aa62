//! `hexidian reconcile`: compares the mirror (GURU3's desired state as hexidian last applied
//! it) with the PBX rows and the OMM, and lists every drift: missing, extra, different (with
//! the field), and foreign objects hexidian never touches. Reads PostgreSQL and opens its own
//! OM AXI session; writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use asterisk_realtime::{Kind as PbxKind, ManagedUser, Route};
use broker_core::model::{Extension, Kind, MirrorEntry, Number};
use omm_provision::Owner;

use super::omm::{Snapshot, owner};
use super::{printable, with_stores};

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
fn omm_drift(want: &BTreeMap<String, &Extension>, omm: &Snapshot, out: &mut Vec<Drift>) {
    let by_num: HashMap<&str, &omm_axi::PpUser> = omm
        .users
        .values()
        .filter_map(|u| Some((u.num.as_deref()?, u)))
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
        if owner(u) != Owner::Owned {
            // reported below with every foreign user
            continue;
        }
        let name = broker_core::omm_name(&x.name);
        if u.name.as_deref().unwrap_or("") != name {
            out.push(drift(
                "omm",
                n,
                "different",
                Some("name"),
                true,
                format!(
                    "{:?}, GURU3 has {name:?}",
                    printable(u.name.as_deref().unwrap_or(""))
                ),
            ));
        }
        if let Some(h) = handset {
            let bound = u
                .ppn
                .and_then(|p| omm.devices.get(&p.get()))
                .and_then(|d| d.ipei)
                .map(|i| i.to_string());
            let want_ipei = h.ipei.parse::<omm_axi::Ipei>().map(|i| i.to_string());
            if bound.as_deref() != want_ipei.as_deref().ok() {
                out.push(drift(
                    "omm",
                    n,
                    "different",
                    Some("handset"),
                    true,
                    format!(
                        "bound to {}, GURU3 has {}",
                        bound.as_deref().unwrap_or("no handset"),
                        h.ipei
                    ),
                ));
            }
        }
    }
    for u in omm.users.values() {
        let num = u.num.as_deref().unwrap_or("");
        match owner(u) {
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
                            printable(u.name.as_deref().unwrap_or(""))
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
                        printable(u.name.as_deref().unwrap_or(""))
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
    omm: &Snapshot,
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

/// `hexidian reconcile`: the drift as a table or (`json`) one JSON object, and whether
/// hexidian owns any of it (then `Ok((_, false))`).
pub async fn reconcile(path: &Path, json: bool) -> Result<(String, bool), String> {
    let (mirror, users, routes) = with_stores(path, async |pbx, state| {
        let docs = state.load_desired().await?;
        Ok((
            crate::adapters::mirror_entries(docs),
            pbx.list_managed().await?,
            pbx.routes(None).await?,
        ))
    })
    .await?;
    let omm = super::omm::read(path).await?;
    let found = compare(&mirror, &users, &routes, &omm);
    let owned = found.iter().filter(|d| d.owned).count();
    let clean = owned == 0;
    let extensions = mirror.iter().filter(|(_, e)| e.extension.is_some()).count();
    if json {
        let rows: Vec<serde_json::Value> = found
            .iter()
            .map(|d| {
                serde_json::json!({
                    "target": d.target, "number": d.number, "drift": d.kind,
                    "field": d.field, "owned": d.owned, "detail": d.detail,
                })
            })
            .collect();
        let v = serde_json::json!({
            "extensions": extensions, "pbx_users": users.len(), "pbx_groups": routes.len(),
            "omm_users": omm.users.len(), "owned_drift": owned,
            "foreign": found.len() - owned, "drift": rows,
        });
        return Ok((format!("{v}\n"), clean));
    }
    let mut out = format!(
        "{extensions} extension(s) in the mirror; PBX: {} user(s), {} group(s); OMM: {} user(s)\n",
        users.len(),
        routes.len(),
        omm.users.len()
    );
    if found.is_empty() {
        out.push_str("no drift\n");
        return Ok((out, true));
    }
    out.push_str(&format!(
        "{:<6} {:<12} {:<10} {:<9} {:<9} {}\n",
        "TARGET", "NUMBER", "DRIFT", "FIELD", "OWNER", "DETAIL"
    ));
    for d in &found {
        out.push_str(&format!(
            "{:<6} {:<12} {:<10} {:<9} {:<9} {}\n",
            d.target,
            printable(&d.number),
            d.kind,
            d.field.unwrap_or("-"),
            if d.owned { "hexidian" } else { "foreign" },
            d.detail
        ));
    }
    out.push_str(&format!(
        "{} drift(s): {owned} of hexidian's own, {} foreign\n",
        found.len(),
        found.len() - owned
    ));
    Ok((out, clean))
}

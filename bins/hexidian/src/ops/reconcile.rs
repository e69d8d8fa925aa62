//! `hexidian reconcile`: compares the mirror (GURU3's desired state as hexidian last applied
//! it) with the PBX rows and the OMM ([`crate::drift`]) and lists every drift. Reads
//! PostgreSQL and opens its own OM AXI session; writes nothing.

use std::path::Path;

use crate::drift::{compare, json_rows};

use super::{printable, with_stores};

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
    let omm = super::omm::read(path).await?.views();
    let found = compare(&mirror, &users, &routes, &omm);
    let owned = found.iter().filter(|d| d.owned).count();
    let clean = owned == 0;
    let extensions = mirror.iter().filter(|(_, e)| e.extension.is_some()).count();
    if json {
        let rows = json_rows(&found);
        let v = serde_json::json!({
            "extensions": extensions, "pbx_users": users.len(), "pbx_groups": routes.len(),
            "omm_users": omm.len(), "owned_drift": owned,
            "foreign": found.len() - owned, "drift": rows,
        });
        return Ok((format!("{v}\n"), clean));
    }
    let mut out = format!(
        "{extensions} extension(s) in the mirror; PBX: {} user(s), {} group(s); OMM: {} user(s)\n",
        users.len(),
        routes.len(),
        omm.len()
    );
    out.push_str(&table(&json_rows(&found)));
    Ok((out, clean))
}

/// Drift rows (as [`json_rows`] makes them, or as the admin API sends them) for a terminal.
fn table(rows: &[serde_json::Value]) -> String {
    if rows.is_empty() {
        return "no drift\n".into();
    }
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| "-".to_owned(), printable);
    let mut out = format!(
        "{:<6} {:<12} {:<10} {:<9} {:<9} {}\n",
        "TARGET", "NUMBER", "DRIFT", "FIELD", "OWNER", "DETAIL"
    );
    let mut owned = 0;
    for d in rows {
        let mine = d["owned"].as_bool() == Some(true);
        owned += usize::from(mine);
        out.push_str(&format!(
            "{:<6} {:<12} {:<10} {:<9} {:<9} {}\n",
            s(&d["target"]),
            s(&d["number"]),
            s(&d["drift"]),
            s(&d["field"]),
            if mine { "hexidian" } else { "foreign" },
            s(&d["detail"])
        ));
    }
    out.push_str(&format!(
        "{} drift(s): {owned} of hexidian's own, {} foreign\n",
        rows.len(),
        rows.len() - owned
    ));
    out
}

/// `hexidian reconcile --apply`: asks the running hexidian (its admin API) to repair the drift
/// of its own objects through its broker; the drift before and after as text or (`json`) one
/// JSON object, and whether none of hexidian's own is left.
pub async fn reconcile_apply(
    path: &Path,
    admin: Option<std::net::SocketAddr>,
    wait: std::time::Duration,
    json: bool,
) -> Result<(String, bool), String> {
    let (addr, token) = super::admin_endpoint(path, admin)?;
    let ask = serde_json::json!({ "wait_s": wait.as_secs() });
    let v = super::admin_post(addr, token.as_deref(), "/reconcile/apply", &ask, wait).await?;
    let rows = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let clean = rows("after")
        .iter()
        .all(|d| d["owned"].as_bool() != Some(true));
    if json {
        return Ok((format!("{v}\n"), clean));
    }
    let list = |k: &str| -> Vec<String> {
        rows(k)
            .iter()
            .filter_map(|n| n.as_str().map(printable))
            .collect()
    };
    let (repaired, pending) = (list("repaired"), list("pending"));
    let mut out = format!("before:\n{}", table(&rows("before")));
    if repaired.is_empty() {
        out.push_str("nothing of hexidian's own to repair\n");
        return Ok((out, clean));
    }
    out.push_str(&format!(
        "repaired through the broker: {}\n",
        repaired.join(", ")
    ));
    if !pending.is_empty() {
        out.push_str(&format!(
            "still retried by hexidian: {} (see its log and /readyz)\n",
            pending.join(", ")
        ));
    }
    out.push_str(&format!("after:\n{}", table(&rows("after"))));
    Ok((out, clean))
}

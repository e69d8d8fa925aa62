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

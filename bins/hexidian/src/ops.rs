//! Operator commands for a terminal. Each says what it talks to: these read hexidian's tables
//! in PostgreSQL directly (read only, so they are safe while hexidian runs).

use std::path::Path;

use crate::config::FileConfig;

/// Connects to the database of the config file without migrating anything and runs `f` on
/// hexidian's state tables.
async fn with_state<T>(
    path: &Path,
    f: impl AsyncFnOnce(&hexidian_state::Store) -> Result<T, asterisk_realtime::Error>,
) -> Result<T, String> {
    let file = FileConfig::load(path)?;
    let url = file.postgres_url()?;
    let cfg = asterisk_realtime::Config::new(&url)
        .map_err(|e| format!("postgres url: {e}"))?
        .apply_migrations(false);
    let (session, driver) = asterisk_realtime::Session::connect(&cfg)
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    let task = tokio::spawn(driver.run());
    let out = async {
        let state = hexidian_state::Store::attach(session, false).await?;
        let pending = state.pending_migrations().await?;
        if !pending.is_empty() {
            return Ok(Err(format!(
                "hexidian's state tables in this database lack {} migration(s) of this build: \
                 run `hexidian migrate` (or let `hexidian run` apply them)",
                pending.len()
            )));
        }
        f(&state).await.map(Ok)
    }
    .await
    .map_err(|e| format!("postgres: {e}"))
    .and_then(|r| r);
    task.abort();
    out
}

/// `hexidian dead-letters list`: every dead letter of the journal, oldest first, as a table or
/// (`json`) one JSON array.
pub async fn dead_letters_list(path: &Path, json: bool) -> Result<String, String> {
    let list = with_state(path, async |s| s.dead_letter_list().await).await?;
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id, "type": d.kind, "number": d.number, "attempts": d.attempts,
                    "reason": d.reason, "first_seen": d.first_seen, "last_try": d.updated_at,
                    "superseded": d.superseded,
                })
            })
            .collect();
        return Ok(format!("{}\n", serde_json::Value::Array(rows)));
    }
    if list.is_empty() {
        return Ok("no dead letters\n".into());
    }
    let mut out = format!(
        "{:<10} {:<18} {:<12} {:>8}  {:<20}  {}\n",
        "ID", "TYPE", "NUMBER", "ATTEMPTS", "LAST TRY (UTC)", "REASON"
    );
    for d in &list {
        let mut reason = printable(d.reason.as_deref().unwrap_or("-"));
        if d.superseded {
            reason.push_str(" [superseded: a later message for this number was applied]");
        }
        out.push_str(&format!(
            "{:<10} {:<18} {:<12} {:>8}  {:<20}  {}\n",
            d.id,
            printable(&d.kind),
            d.number.as_deref().unwrap_or("-"),
            d.attempts,
            d.updated_at.replace('T', " ").trim_end_matches('Z'),
            reason
        ));
    }
    let moot = list.iter().filter(|d| d.superseded).count();
    out.push_str(&format!(
        "{} dead letter(s), {moot} superseded\n",
        list.len()
    ));
    Ok(out)
}

/// Text from GURU3 or a peer for a terminal: control characters (escape sequences, line
/// breaks) shown escaped, long texts cut.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(300)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_text_has_no_control_characters() {
        assert_eq!(super::printable("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert!(super::printable(&"x".repeat(400)).ends_with('…'));
    }
}

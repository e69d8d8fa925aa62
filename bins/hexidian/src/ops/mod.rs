//! Operator commands for a terminal. Each says what it talks to: `dead-letters list` and
//! `explain` read hexidian's tables in PostgreSQL directly (read only, so they are safe while
//! hexidian runs); `status` and `dead-letters replay` ask the running hexidian's admin API (a
//! replay goes through its broker, so nothing races it).

use std::path::Path;

use crate::config::FileConfig;

mod explain;
mod omm;
mod progress;
mod reconcile;
pub use explain::{Source, explain};
pub use omm::{OmmList, omm};
pub use reconcile::{reconcile, reconcile_apply};

/// Connects to the database of the config file without migrating anything and runs `f` on
/// hexidian's PBX tables and its state tables.
async fn with_stores<T>(
    path: &Path,
    f: impl AsyncFnOnce(
        &asterisk_realtime::Store,
        &hexidian_state::Store,
    ) -> Result<T, asterisk_realtime::Error>,
) -> Result<T, String> {
    let file = FileConfig::load(path)?;
    let url = file.postgres_url()?;
    let cfg = asterisk_realtime::Config::new(&url)
        .map_err(|e| format!("postgres url: {e}"))?
        .apply_migrations(false);
    let (pbx, driver) = asterisk_realtime::Store::connect(cfg)
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    let task = tokio::spawn(driver.run());
    let out = async {
        let state = hexidian_state::Store::attach(pbx.session().clone(), false).await?;
        let pending =
            pbx.pending_migrations().await?.len() + state.pending_migrations().await?.len();
        if pending > 0 {
            return Ok(Err(format!(
                "hexidian's tables in this database lack {pending} migration(s) of this build: \
                 run `hexidian migrate` (or let `hexidian run` apply them)"
            )));
        }
        f(&pbx, &state).await.map(Ok)
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
    let list = with_stores(path, async |_, s| s.dead_letter_list().await).await?;
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
pub(crate) fn printable(s: &str) -> String {
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

/// `hexidian status`: the running hexidian's `/readyz` (from `[admin] listen`, with the admin
/// token when one is configured) for a terminal, or (`json`) as it came, and whether it is
/// ready.
pub async fn status(
    path: &Path,
    admin: Option<std::net::SocketAddr>,
    json: bool,
) -> Result<(String, bool), String> {
    let (addr, token) = admin_endpoint(path, admin)?;
    let (code, body) = admin_request(addr, "/readyz", token.as_deref(), None)
        .await
        .map_err(|e| format!("hexidian's admin API at {addr}: {e} (is hexidian running?)"))?;
    if code == 401 {
        return Err(format!(
            "hexidian's admin API at {addr} wants a token: set [admin] token_env or token_file"
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("hexidian's admin API at {addr} answered {code}: {e}"))?;
    let ready = v["ready"].as_bool() == Some(true);
    let text = if json {
        format!("{v:#}\n")
    } else {
        readiness_text(addr, &v)
    };
    Ok((text, ready))
}

/// Dead letters per replay request of `dead-letters replay`.
const REPLAY_BATCH: usize = 50;

/// `hexidian dead-letters replay`: asks the running hexidian (its admin API) to run the dead
/// letters `ids` (or `all` of them) through its broker again, waits up to `wait` for their
/// outcome, and reports each one as a table or (`json`) one JSON array. `Ok(false)` when
/// some did not end applied (skipped ones, made moot by a later message, do not count).
pub async fn dead_letters_replay(
    path: &Path,
    admin: Option<std::net::SocketAddr>,
    ids: &[i64],
    all: bool,
    wait: std::time::Duration,
    json: bool,
) -> Result<(String, bool), String> {
    let (addr, token) = admin_endpoint(path, admin)?;
    let ids: Vec<i64> = if all {
        // every dead letter, oldest first, from the journal (read only)
        with_stores(path, async |_, s| s.dead_letter_list().await)
            .await?
            .iter()
            .map(|d| d.id)
            .collect()
    } else {
        ids.to_vec()
    };
    // in batches, so that a long replay shows its progress
    let mut rows = Vec::with_capacity(ids.len());
    let mut progress = progress::Progress::new("replaying", Some(ids.len() as u64));
    for chunk in ids.chunks(REPLAY_BATCH) {
        let ask = serde_json::json!({"ids": chunk, "wait_s": wait.as_secs()});
        let v = admin_post(addr, token.as_deref(), "/dead-letters/replay", &ask, wait).await?;
        rows.extend(v["results"].as_array().cloned().unwrap_or_default());
        progress.add(chunk.len() as u64);
    }
    progress.finish();
    let fine = rows
        .iter()
        .all(|r| matches!(r["outcome"].as_str(), Some("done" | "skipped")));
    if json {
        return Ok((format!("{}\n", serde_json::Value::Array(rows)), fine));
    }
    if rows.is_empty() {
        return Ok(("no dead letters to replay\n".into(), true));
    }
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| "-".to_owned(), printable);
    let mut out = format!(
        "{:<10} {:<12} {:<13} {}\n",
        "ID", "NUMBER", "OUTCOME", "REASON"
    );
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &rows {
        let outcome = s(&r["outcome"]);
        *counts.entry(outcome.clone()).or_default() += 1;
        out.push_str(&format!(
            "{:<10} {:<12} {:<13} {}\n",
            r["id"].as_i64().unwrap_or_default(),
            s(&r["number"]),
            outcome,
            s(&r["reason"])
        ));
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.push_str(&format!(
        "{} dead letter(s): {}\n",
        rows.len(),
        summary.join(", ")
    ));
    Ok((out, fine))
}

/// `POST path` of the admin API with the JSON `ask`, for work that may take up to `wait`
/// (the answer comes when the broker is done, or after `wait`): the JSON it answers.
async fn admin_post(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    path: &str,
    ask: &serde_json::Value,
    wait: std::time::Duration,
) -> Result<serde_json::Value, String> {
    let limit = wait + std::time::Duration::from_secs(30);
    let (code, body) = admin_request(addr, path, token, Some((ask.to_string(), limit)))
        .await
        .map_err(|e| format!("hexidian's admin API at {addr}: {e} (is hexidian running?)"))?;
    match code {
        200 => serde_json::from_str(&body)
            .map_err(|e| format!("hexidian's admin API at {addr} answered: {e}")),
        401 => Err(format!(
            "hexidian's admin API at {addr} wants a token: set [admin] token_env or token_file"
        )),
        _ => Err(format!(
            "hexidian refused {path} ({code}): {}",
            printable(body.trim())
        )),
    }
}

/// Where the running hexidian's admin API listens (`admin`, else `[admin] listen` of the
/// config; a wildcard address is reached over loopback), and its token if one is configured.
fn admin_endpoint(
    path: &Path,
    admin: Option<std::net::SocketAddr>,
) -> Result<(std::net::SocketAddr, Option<String>), String> {
    let file = FileConfig::load(path)?;
    let listen = match admin {
        Some(a) => a.to_string(),
        None => file.admin.listen.trim().to_owned(),
    };
    if listen.is_empty() {
        return Err("[admin] listen is empty: this hexidian serves no admin API to ask".into());
    }
    let mut addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| format!("[admin] listen {listen:?}: {e}"))?;
    // a wildcard listener is reached over loopback
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let token = match (&file.admin.token_env, &file.admin.token_file) {
        (None, None) => None,
        (env, f) => Some(
            crate::config::secret("[admin] token", env, f)?
                .trim()
                .to_owned(),
        ),
    };
    Ok((addr, token))
}

fn readiness_text(addr: std::net::SocketAddr, v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let yes = |b: &serde_json::Value| b.as_bool() == Some(true);
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let s = |x: &serde_json::Value| printable(x.as_str().unwrap_or("-"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hexidian at {addr}: {}",
        if yes(&v["ready"]) {
            "READY"
        } else {
            "NOT READY"
        }
    );
    let h = &v["ha"];
    if h.is_object() {
        let role = s(&h["role"]);
        let epoch = h["epoch"]
            .as_i64()
            .map_or_else(String::new, |e| format!(", epoch {e}"));
        let active = match (role.as_str(), h["active"].as_str()) {
            ("standby", Some(a)) => format!(" (active: {})", printable(a)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  role      {role} as {}{epoch}{active}, {} takeover(s)",
            s(&h["instance"]),
            n(&h["takeovers"])
        );
    }
    let g = &v["guru3"];
    let _ = writeln!(
        out,
        "  guru3     last fetch {}, websocket {}, {} ack(s) pending",
        if yes(&g["last_fetch_ok"]) {
            "ok"
        } else {
            "FAILED"
        },
        if yes(&g["websocket_connected"]) {
            "connected"
        } else {
            "DOWN"
        },
        n(&g["pending_acks"])
    );
    let o = &v["omm"];
    let _ = writeln!(
        out,
        "  omm       {} ({} session(s) so far)",
        if yes(&o["connected"]) {
            "connected"
        } else {
            "DOWN"
        },
        n(&o["sessions"])
    );
    let p = &v["postgres"];
    let _ = writeln!(
        out,
        "  postgres  {}{}",
        if yes(&p["connected"]) {
            "connected"
        } else {
            "DOWN"
        },
        if yes(&p["in_memory"]) {
            " (in memory: nothing kept across a restart)"
        } else {
            ""
        }
    );
    let b = &v["broker"];
    if b.is_null() {
        let _ = writeln!(out, "  broker    not started yet");
    } else {
        let _ = writeln!(
            out,
            "  broker    since start {} done, {} ignored, {} dead; backlog {}{}",
            n(&b["done"]),
            n(&b["ignored"]),
            n(&b["dead"]),
            n(&b["backlog"]),
            match b["sync_epoch"].as_i64() {
                Some(e) => format!("; resync {e} in progress"),
                None => String::new(),
            }
        );
        if !b["stalled"].is_null() {
            let st = &b["stalled"];
            let _ = writeln!(
                out,
                "            STALLED for {} s at message {}: {}",
                n(&st["for_s"]),
                n(&st["message"]),
                s(&st["reason"])
            );
        }
        if !b["retrying"].is_null() {
            let _ = writeln!(out, "            retrying {}", s(&b["retrying"]));
        }
    }
    let u = &v["unbound_handsets"];
    if !u.is_null() {
        let _ = writeln!(
            out,
            "  handsets  {} temporary now, {} bound, {} bind(s) failed, {} ASSIGN_HANDSET ok, {} refused",
            n(&u["temporary"]),
            n(&u["bound"]),
            n(&u["binds_failed"]),
            n(&u["assigns_ok"]),
            n(&u["assigns_nak"])
        );
    }
    let d = &v["drift"];
    if !d.is_null() {
        if d["skipped"].is_null() {
            let _ = writeln!(
                out,
                "  drift     {} of hexidian's own, {} foreign OMM user(s) at {} (all: hexidian reconcile)",
                n(&d["owned"]),
                n(&d["foreign"]),
                s(&d["checked_at"])
            );
        } else {
            let _ = writeln!(
                out,
                "  drift     not checked at {}: {}",
                s(&d["checked_at"]),
                s(&d["skipped"])
            );
        }
    }
    let dead = v["dead_letters"].as_array().cloned().unwrap_or_default();
    if dead.is_empty() {
        let _ = writeln!(out, "  no dead letters");
    } else {
        let _ = writeln!(
            out,
            "  newest dead letters (all: hexidian dead-letters list):"
        );
        for d in &dead {
            let _ = writeln!(
                out,
                "    {:<10} {:<18} {:<12} {}",
                n(&d["id"]),
                s(&d["type"]),
                s(&d["number"]),
                s(&d["reason"])
            );
        }
    }
    out
}

/// A request to the admin API over plain HTTP/1.1 (it listens on loopback, or behind the
/// token): `GET path`, or with `post` = `(JSON body, how long the answer may take)` a `POST`;
/// (status, body). A `GET` is answered within 5 s.
async fn admin_request(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    post: Option<(String, std::time::Duration)>,
) -> Result<(u16, String), String> {
    let limit = post
        .as_ref()
        .map_or(std::time::Duration::from_secs(5), |(_, t)| *t);
    use http_body_util::BodyExt;
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let mut req = match &post {
            None => hyper::Request::get(path),
            Some(_) => {
                hyper::Request::post(path).header(hyper::header::CONTENT_TYPE, "application/json")
            }
        }
        .header(hyper::header::HOST, addr.to_string());
        if let Some(t) = token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = post.map(|(b, _)| bytes::Bytes::from(b)).unwrap_or_default();
        let req = req
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        conn.abort();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no answer within {} s", limit.as_secs()))?
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_text_has_no_control_characters() {
        assert_eq!(super::printable("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert!(super::printable(&"x".repeat(400)).ends_with('…'));
    }
}

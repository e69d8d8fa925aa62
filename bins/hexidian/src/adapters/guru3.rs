//! `EventFeed` over `guru3_client::Feed`: decodes envelopes into domain commands; and the
//! unbound workflow's `AssignSink` (`ASSIGN_HANDSET` through the same client).

use broker_core::model::{
    Command, Extension, Forward, Handset, Incoming, Kind, Member, Number, Routing, Secret,
};
use broker_core::ports::{BoxFuture, EventFeed, FeedHealth, PortError, PortErrorKind, PortResult};
use guru3_client::{DisplayMode, ExtensionKind, Feed, ForwardMode, Message, MessageId, RawMessage};
use tokio::sync::Mutex;
use unbound_handsets::ports::{Assign, AssignResult, AssignSink};

/// The GURU3 message feed.
#[derive(Debug)]
pub struct Guru3Feed {
    feed: Mutex<Feed>,
    client: guru3_client::Client,
    status: guru3_client::client::StatusHandle,
    /// how long GURU3's fetches take
    fetch_latency: std::sync::Arc<std::sync::Mutex<broker_core::Latency>>,
    /// DECT extensions already reported for having no token (bounded)
    tokenless: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Asked right before every ack and ASSIGN_HANDSET (with a standby: still active?)
    gate: std::sync::OnceLock<std::sync::Arc<crate::ha::Ha>>,
}

impl Guru3Feed {
    /// Wraps a feed (its watcher is spawned by the caller).
    pub fn new(mut feed: Feed) -> Self {
        let fetch_latency: std::sync::Arc<std::sync::Mutex<broker_core::Latency>> =
            std::sync::Arc::default();
        let observed = std::sync::Arc::clone(&fetch_latency);
        feed.on_fetch(std::sync::Arc::new(move |took, _ok| {
            observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .observe(took);
        }));
        Self {
            client: feed.client().clone(),
            status: feed.status_handle(),
            feed: Mutex::new(feed),
            fetch_latency,
            tokenless: std::sync::Mutex::default(),
            gate: std::sync::OnceLock::new(),
        }
    }

    /// Acks and ASSIGN_HANDSETs go out only while `ha` may write.
    pub fn set_gate(&self, ha: std::sync::Arc<crate::ha::Ha>) {
        let _ = self.gate.set(ha);
    }

    async fn may_write(&self) -> PortResult<()> {
        match self.gate.get() {
            Some(ha) if !ha.may_write().await => Err(PortError::new(
                PortErrorKind::Unavailable,
                "not the active instance: nothing is sent to GURU3",
            )),
            _ => Ok(()),
        }
    }

    /// How long GURU3's fetches took.
    pub fn fetch_latency(&self) -> broker_core::Latency {
        *self.fetch_latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The feed's counters (websocket connects, fetches) besides its health.
    pub fn status(&self) -> guru3_client::client::FeedStatus {
        self.status.get()
    }

    /// Says once per extension that a DECT extension came without a token.
    fn note_tokenless(&self, messages: &[Incoming]) {
        for m in messages {
            if let Ok(Command::Upsert(Extension {
                number,
                kind: Kind::Dect { token, .. },
                ..
            })) = &m.command
            {
                if token.expose().is_empty() {
                    let mut seen = self.tokenless.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.len() < 10_000 && seen.insert(number.to_string()) {
                        tracing::warn!(extension = %number, "DECT extension without a token: provisioned without token binding");
                    }
                }
            }
        }
    }
}

pub(crate) fn port_error(e: guru3_client::Error) -> PortError {
    // connection loss, timeouts, lock and serialisation conflicts: the peer could not be asked
    let kind = if e.is_transient() {
        PortErrorKind::Unavailable
    } else if e.is_auth() {
        PortErrorKind::Fatal
    } else {
        PortErrorKind::Rejected
    };
    PortError::new(kind, format!("guru3: {e}")).with_source(e)
}

impl EventFeed for Guru3Feed {
    fn next_batch(&self) -> BoxFuture<'_, PortResult<Vec<Incoming>>> {
        Box::pin(async move {
            let mut feed = self.feed.lock().await;
            let page = feed.next_page().await.map_err(port_error)?;
            for m in &page.malformed {
                // without an id it can never be acked: GURU3 will keep returning it
                tracing::error!(element = %m.to_string().chars().take(200).collect::<String>(), "guru3 returned an element without a usable id");
            }
            // each message's JSON is dropped as soon as it is decoded
            let messages: Vec<Incoming> = page.messages.into_iter().map(incoming).collect();
            self.note_tokenless(&messages);
            Ok(messages)
        })
    }

    fn ack(&self, ids: Vec<i64>) -> BoxFuture<'_, PortResult<()>> {
        Box::pin(async move {
            self.may_write().await?;
            let mut feed = self.feed.lock().await;
            for id in ids {
                if let Ok(id) = MessageId::new(id) {
                    feed.ack(id);
                }
            }
            feed.flush_acks().await.map_err(port_error)
        })
    }

    fn health(&self) -> FeedHealth {
        let s = self.status.get();
        FeedHealth {
            push_connected: s.websocket_connected,
            last_fetch_ok: s.last_fetch_ok,
            pending_acks: s.pending_acks,
        }
    }
}

impl AssignSink for Guru3Feed {
    fn submit(&self, assigns: Vec<Assign>) -> BoxFuture<'_, PortResult<Vec<AssignResult>>> {
        Box::pin(async move {
            self.may_write().await?;
            // the client is cheap to clone: do not hold the feed (the broker's loop waits in it)
            let client = self.client.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let mut msgs = Vec::new();
            let mut refused = Vec::new();
            for a in &assigns {
                let parsed = (
                    u32::try_from(a.id).ok().filter(|id| *id <= 2_147_483_647),
                    a.ipei.parse::<guru3_client::Ipei>(),
                    a.uak.expose().parse::<guru3_client::Uak>(),
                    a.extension.as_str().parse::<guru3_client::Extension>(),
                );
                match parsed {
                    (Some(id), Ok(ipei), Ok(uak), Ok(extension)) => {
                        msgs.push(guru3_client::Inbound::AssignHandset {
                            id,
                            timestamp: now,
                            ipei,
                            uak,
                            extension,
                        });
                    }
                    _ => refused.push(AssignResult {
                        id: a.id,
                        ok: false,
                        text: "not sent: invalid ipei, uak, extension or id".into(),
                    }),
                }
            }
            let results = client.submit(&msgs).await.map_err(port_error)?;
            Ok(results
                .into_iter()
                .map(|r| AssignResult {
                    id: r.id,
                    ok: r.status == guru3_client::InboundStatus::Ok,
                    text: r.text,
                })
                .chain(refused)
                .collect())
        })
    }
}

/// Keys whose values are secrets in GURU3's messages (SIP password, DECT/GSM token, UAK).
const SECRET_KEYS: [&str; 3] = ["password", "token", "uak"];

/// Replaces every secret value in a message body, at any depth, by `"<redacted>"`, and
/// returns what it replaced as a JSON object of JSON pointer (RFC 6901) → value.
fn redact(v: &mut serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut taken = serde_json::Map::new();
    let mut stack = vec![(String::new(), v)];
    while let Some((path, v)) = stack.pop() {
        let step = |k: &str| format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) && !v.is_null() {
                        let secret = std::mem::replace(v, "<redacted>".into());
                        taken.insert(step(k), secret);
                    } else {
                        stack.push((step(k), v));
                    }
                }
            }
            serde_json::Value::Array(a) => {
                stack.extend(
                    a.iter_mut()
                        .enumerate()
                        .map(|(i, v)| (step(&i.to_string()), v)),
                );
            }
            _ => {}
        }
    }
    taken
}

/// A stored dead letter as GURU3 sent it: its redacted envelope with the secrets
/// [`redact`] took out put back.
pub(crate) fn restore(envelope: &str, secrets: Option<&Secret>) -> Result<Secret, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(envelope).map_err(|e| format!("stored envelope: {e}"))?;
    if let Some(secrets) = secrets {
        let taken: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(secrets.expose())
                .map_err(|_| "its stored secrets are not a JSON object".to_owned())?;
        for (pointer, value) in taken {
            let slot = v
                .pointer_mut(&pointer)
                .ok_or_else(|| format!("its stored envelope has no {pointer}"))?;
            *slot = value;
        }
    }
    Ok(Secret::new(v.to_string()))
}

/// Messages as GURU3 sends them (one envelope, or an array of them as a GET page brings),
/// decoded exactly as fetched ones are.
pub(crate) fn decode_messages(body: &[u8]) -> Result<Vec<Incoming>, String> {
    let one = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let page = if one {
        let mut array = Vec::with_capacity(body.len() + 2);
        array.push(b'[');
        array.extend_from_slice(body);
        array.push(b']');
        guru3_client::Page::from_json(&array)
    } else {
        guru3_client::Page::from_json(body)
    }
    .map_err(|e| format!("not a GURU3 message or an array of them: {e}"))?;
    if !page.malformed.is_empty() {
        return Err(format!(
            "{} of {} element(s) are not message envelopes (an `id`, a `type` and `data`)",
            page.malformed.len(),
            page.returned
        ));
    }
    Ok(page.messages.into_iter().map(incoming).collect())
}

fn incoming(raw: RawMessage) -> Incoming {
    let command = raw.decode().map_err(|e| e.to_string()).and_then(command);
    // the envelope is what a dead letter keeps: without secrets
    let mut envelope = serde_json::json!({
        "id": raw.id.get(),
        "timestamp": raw.timestamp,
        "type": raw.kind,
        "data": raw.data,
    });
    let taken = redact(&mut envelope);
    Incoming {
        id: raw.id.get(),
        kind: raw.kind,
        raw: envelope.to_string(),
        secrets: (!taken.is_empty())
            .then(|| Secret::new(serde_json::Value::Object(taken).to_string())),
        command,
    }
}

fn num(e: &guru3_client::Extension) -> Result<Number, String> {
    e.as_str().parse()
}

/// Maps a decoded GURU3 message to what it asks of the broker.
pub(crate) fn command(m: Message) -> Result<Command, String> {
    Ok(match m {
        Message::UpdateExtension(u) => {
            let display = match &u.kind {
                ExtensionKind::Dect { display_mode, .. } => match display_mode {
                    DisplayMode::Number => "NUMBER",
                    DisplayMode::Name => "NAME",
                    _ => "NUMBER_NAME",
                },
                _ => "NUMBER_NAME",
            }
            .to_owned();
            let kind = match u.kind {
                ExtensionKind::Sip {
                    password,
                    is_premium,
                } => Kind::Sip {
                    password: Secret::new(password.expose()),
                    premium: is_premium,
                },
                ExtensionKind::Dect {
                    token,
                    use_encryption,
                    handset,
                    ..
                } => Kind::Dect {
                    token: Secret::new(token.as_ref().map_or("", |t| t.as_str())),
                    encryption: use_encryption,
                    handset: handset.map(|h| Handset {
                        ipei: h.ipei.as_str().to_owned(),
                        uak: Secret::new(h.uak.expose()),
                    }),
                },
                ExtensionKind::Group { short_name } => Kind::Group { short_name },
                other => Kind::Other {
                    wire_type: other.wire_name().to_owned(),
                },
            };
            Command::Upsert(Extension {
                number: num(&u.number)?,
                name: u.name,
                kind,
                forward: match u.forward {
                    Some(f) => Some(Forward {
                        target: num(&f.extension)?,
                        mode: match f.mode {
                            ForwardMode::Disabled => "DISABLED".into(),
                            ForwardMode::Enabled => "ENABLED".into(),
                            ForwardMode::OnBusy => "ON_BUSY".into(),
                            ForwardMode::OnUnavailable => "ON_UNAVAILABLE".into(),
                            ForwardMode::Unknown(m) => m,
                            _ => "UNKNOWN".into(),
                        },
                        delay_s: f.delay_s,
                    }),
                    None => None,
                },
                routing: Routing {
                    call_waiting: u.call_waiting,
                    allow_dialout: u.allow_dialout,
                    trunk: u.trunk,
                    display,
                },
            })
        }
        Message::DeleteExtension { number } => Command::Delete(num(&number)?),
        Message::RenameExtension { old, new } => Command::Rename {
            old: num(&old)?,
            new: num(&new)?,
        },
        Message::UpdateCallgroup(g) => Command::SetMembers {
            number: num(&g.number)?,
            name: g.name,
            members: g
                .members
                .iter()
                .map(|m| {
                    Ok(Member {
                        number: num(&m.extension)?,
                        active: m.active,
                        delay_s: m.delay_s,
                    })
                })
                .collect::<Result<_, String>>()?,
        },
        Message::UnsubscribeDevice { extension } => Command::Unsubscribe(num(&extension)?),
        Message::CallExtension(c) => Command::CallExtension(num(&c.number)?),
        Message::SyncStarted => Command::SyncStarted,
        Message::SyncEnded => Command::SyncEnded,
        Message::Unknown { kind, .. } => Command::Unknown { kind },
        other => Command::Unknown {
            kind: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_keep_no_secret() {
        let body = br#"[{"id": 52001, "timestamp": 1.5, "type": "UPDATE_EXTENSION", "data": {
            "number": "2002", "name": "A", "type": "DECT", "token": "05704191",
            "dect": {"ipei": "03587 0412396 2", "uak": "FA05689957F199E95B1FE44621BFD6EE"}}},
            {"id": 52002, "timestamp": 1.5, "type": "UPDATE_EXTENSION", "data": {
            "number": "2001", "name": "B", "type": "SIP", "password": "e1vdxzqL"}}]"#;
        let page = guru3_client::Page::from_json(body).unwrap();
        for m in page.messages {
            let i = incoming(m);
            for secret in ["05704191", "FA05689957F199E95B1FE44621BFD6EE", "e1vdxzqL"] {
                assert!(!i.raw.contains(secret), "{}", i.raw);
                assert!(!format!("{i:?}").contains(secret));
            }
            assert!(i.raw.contains("<redacted>") && i.raw.contains("number"));
            assert!(i.command.is_ok(), "decoding still sees the secrets");
            // what a replay decodes: the message as GURU3 sent it
            let back = restore(&i.raw, i.secrets.as_ref()).unwrap();
            let again = decode_messages(back.expose().as_bytes()).unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(
                format!("{:?}", again[0].command.as_ref().unwrap()),
                format!("{:?}", i.command.as_ref().unwrap())
            );
            assert_eq!(again[0].raw, i.raw);
        }
    }

    #[test]
    fn secrets_under_hostile_keys_and_in_arrays_are_put_back_where_they_were() {
        let mut v = serde_json::json!({"id": 1, "type": "X", "data": {
            "a/b~c": {"Token": "t1"}, "list": [{"uak": "u1"}, {"password": null}]}});
        let original = v.clone();
        let taken = redact(&mut v);
        assert_eq!(taken.len(), 2, "{taken:?}");
        assert!(!v.to_string().contains("t1") && !v.to_string().contains("u1"));
        let secrets = Secret::new(serde_json::Value::Object(taken).to_string());
        let back = restore(&v.to_string(), Some(&secrets)).unwrap();
        let back: serde_json::Value = serde_json::from_str(back.expose()).unwrap();
        assert_eq!(back, original);
        // secrets that do not fit the envelope are refused, not guessed
        let wrong = Secret::new(r#"{"/data/nowhere/password": "x"}"#);
        assert!(
            restore(&v.to_string(), Some(&wrong))
                .unwrap_err()
                .contains("/data/nowhere")
        );
    }
}

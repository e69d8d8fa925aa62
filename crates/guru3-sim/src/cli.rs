//! The `guru3-sim` command: options, seeding, the control API, what it prints for a client,
//! and `guru3-sim ctl …`, the control API's client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hexidian_testkit::control;
use serde_json::{Map, Value, json};

use crate::{Config, Guru3Sim};

/// The variable `guru3-sim ctl` reads the control API's address from.
pub const CONTROL_ENV: &str = "GURU3_SIM_CONTROL";

/// A GURU3 simulator for manual runs: the consumer REST API and the status websocket
/// (guru3.md), serving until Ctrl-C, with a control API on loopback that `guru3-sim ctl`
/// drives.
#[derive(Debug, Parser)]
#[command(name = "guru3-sim", version, about)]
pub struct Args {
    /// Where to listen (the test certificate names 127.0.0.1 and localhost only; use --plain
    /// elsewhere)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS
    #[arg(long)]
    pub plain: bool,
    /// The event id (its mgr key is generated at start)
    #[arg(long, default_value_t = 7)]
    pub event_id: u32,
    /// Read the event's mgr key (`<event id>$<letters and digits>`) from this file instead of
    /// generating one (a demo whose client reads the same file, e.g. a compose secret)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Populate a generated event of N extensions: DECT (every third with a handset, the ones
    /// `omm-axi-sim --seed N` subscribes), SIP, call groups with members and one of each
    /// other type. Without it: three example extensions
    #[arg(long, value_name = "N")]
    pub seed: Option<usize>,
    /// Where the control API listens (loopback only: it has no authentication)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write what a client needs as shell variables (GURU3_SIM_URL, GURU3_SIM_KEY,
    /// GURU3_SIM_EVENT, GURU3_SIM_CA, GURU3_SIM_CONTROL) to this file, for `. FILE`
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Print what a client needs as one JSON object instead of text
    #[arg(long)]
    pub print_json: bool,
    /// Drive a running simulator instead of starting one
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `guru3-sim ctl …`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a running simulator through its control API (prints the JSON reply)
    Ctl(CtlArgs),
}

impl Args {
    /// The simulator's configuration.
    pub fn config(&self) -> Result<Config, String> {
        let key = match &self.key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Config {
            event_id: self.event_id,
            tls: !self.plain,
            listen: self.listen,
            key,
            ..Config::default()
        })
    }
}

/// A running simulator with its control API, as the command starts it.
#[derive(Debug)]
pub struct Running {
    /// The simulator.
    pub sim: Arc<Guru3Sim>,
    /// Its control API.
    pub control: control::Server,
    /// What [`describe`] says about it, with the control address.
    pub description: Value,
}

/// Starts the simulator `args` describe, seeds it, serves its control API and writes the
/// env file if asked.
pub async fn start(args: &Args) -> Result<Running, String> {
    let sim = Arc::new(
        Guru3Sim::start(args.config()?)
            .await
            .map_err(|e| e.to_string())?,
    );
    seed(&sim, args).map_err(|e| format!("seeding: {e}"))?;
    let (control, description) = control::serve_described(
        args.control,
        Arc::clone(&sim),
        describe(&sim, !args.plain),
        |sim, info, req| async move { crate::control::handle(&sim, &info, req).await },
    )
    .await
    .map_err(|e| e.to_string())?;
    if let Some(path) = &args.env_file {
        let s = |k: &str| description[k].as_str().unwrap_or_default().to_owned();
        control::write_env_file(
            path,
            &[
                ("GURU3_SIM_URL", s("url")),
                ("GURU3_SIM_KEY", s("api_key")),
                ("GURU3_SIM_EVENT", sim.event_id().to_string()),
                ("GURU3_SIM_CA", s("ca_file")),
                (CONTROL_ENV, s("control")),
            ],
        )
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(Running {
        sim,
        control,
        description,
    })
}

/// Populates `sim` as `args` asks.
pub fn seed(sim: &Guru3Sim, args: &Args) -> Result<(), String> {
    match args.seed {
        Some(n) => crate::seed_event(sim, n).map(|_| ()),
        None => crate::seed_example(sim),
    }
}

/// Everything a client needs: URL, event id, API key, CA file, and what the queue holds.
pub fn describe(sim: &Guru3Sim, tls: bool) -> Value {
    json!({
        "url": sim.url(),
        "event_id": sim.event_id(),
        "api_key": sim.api_key(),
        "ca_file": tls.then(|| hexidian_testkit::fixtures_dir().join("tls/ca.pem").display().to_string()),
        "extensions": sim.extensions().len(),
        "pending": sim.pending_count(),
    })
}

/// [`describe`] for a person.
pub fn describe_text(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    format!(
        "guru3-sim listening\n  url:        {}\n  event id:   {}\n  api key:    {}\n  ca:         {}\n  extensions: {}\n  queue:      {} messages pending\n  control:    {} (export {CONTROL_ENV}={}; guru3-sim ctl --help)\nCtrl-C stops\n",
        s("url"),
        s("event_id"),
        s("api_key"),
        s("ca_file"),
        s("extensions"),
        s("pending"),
        s("control"),
        s("control")
    )
}

/// `guru3-sim ctl [--control ADDR] [--get POINTER] ACTION`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The control API's address (default: $GURU3_SIM_CONTROL; the simulator prints it)
    #[arg(long, value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// Print only the reply's value at this JSON pointer (e.g. `/token`), strings unquoted
    #[arg(long, value_name = "POINTER")]
    pub get: Option<String>,
    /// What to do
    #[command(subcommand)]
    pub action: Ctl,
}

/// What `guru3-sim ctl` asks the simulator to do: GURU3's users and administrators, and
/// faults. Every change prints the ids of the wire messages it queued.
#[derive(Debug, Subcommand)]
pub enum Ctl {
    /// URL, event id, mgr key, CA file, extensions, pending messages
    Info,
    /// Every extension
    List,
    /// One extension with its members
    Show {
        /// The extension's number
        number: String,
    },
    /// Create an extension (credentials are generated unless given)
    Create {
        /// The new number
        number: String,
        /// SIP, DECT, GSM, GROUP, APP, ANNOUNCEMENT or SPECIAL
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change an extension's fields (`--type` changes its type, with new credentials)
    Update {
        /// The extension's number
        number: String,
        /// A new type
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Give an extension another number, optionally changing fields in the same save
    Rename {
        /// The current number
        number: String,
        /// The new number
        to: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Delete an extension
    Delete {
        /// The extension's number
        number: String,
    },
    /// Set the members of a call group, or the multiring of any other extension (none: empty)
    Members {
        /// The group's (or multiring extension's) number
        number: String,
        /// Members as `NUMBER[:DELAY_S[:paused]]`
        members: Vec<String>,
    },
    /// Unsubscribe an extension's handset
    Unsubscribe {
        /// The extension's number
        number: String,
    },
    /// The administrator's resync: every extension and group queued again
    Resync,
    /// The message queue: every message with id, type and whether it was acked; acked ids
    Queue,
    /// Inbound messages received (ASSIGN_HANDSET) and GURU3's answers
    Inbound,
    /// Queue any message, e.g. an unknown type or malformed data
    Inject {
        /// The message's `type`
        kind: String,
        /// Its `data`, as JSON
        data: String,
    },
    /// Mark an acked message undelivered again
    Replay {
        /// The message id
        id: i64,
    },
    /// Inject faults (several at once); `--clear` clears them all first
    Fault(FaultArgs),
    /// Stop listening: connections refused, websockets closed
    Down,
    /// Listen again on the same address
    Up,
}

/// The fields of an extension that `create`, `update` and `rename` set.
#[derive(Debug, Default, clap::Args)]
pub struct Fields {
    /// Display name
    #[arg(long)]
    pub name: Option<String>,
    /// Location
    #[arg(long)]
    pub location: Option<String>,
    /// Announcement language (e.g. de-DE)
    #[arg(long)]
    pub lang: Option<String>,
    /// Ringback tone hash
    #[arg(long)]
    pub ringback: Option<String>,
    /// Call waiting
    #[arg(long, value_name = "BOOL")]
    pub call_waiting: Option<bool>,
    /// May call out of the event
    #[arg(long, value_name = "BOOL")]
    pub allow_dialout: Option<bool>,
    /// Trunk (a prefix of numbers)
    #[arg(long, value_name = "BOOL")]
    pub trunk: Option<bool>,
    /// Forward as `TARGET[:MODE[:DELAY_S]]` (MODE: ENABLED, ON_BUSY, ON_UNAVAILABLE,
    /// DISABLED), or `none`
    #[arg(long, value_name = "FORWARD")]
    pub forward: Option<String>,
    /// The handset GURU3 links to a DECT extension: its IPEI (with --uak), or `none`
    #[arg(long)]
    pub ipei: Option<String>,
    /// The linked handset's UAK (32 hex digits)
    #[arg(long)]
    pub uak: Option<String>,
    /// SIP password
    #[arg(long)]
    pub password: Option<String>,
    /// SIP premium server
    #[arg(long, value_name = "BOOL")]
    pub premium: Option<bool>,
    /// DECT or GSM token
    #[arg(long)]
    pub token: Option<String>,
    /// DECT encryption
    #[arg(long, value_name = "BOOL")]
    pub encryption: Option<bool>,
    /// DECT display mode (e.g. NUMBER_NAME)
    #[arg(long)]
    pub display: Option<String>,
    /// A call group's short name (up to 3 characters)
    #[arg(long)]
    pub short_name: Option<String>,
    /// An app extension's routing target
    #[arg(long)]
    pub target: Option<String>,
    /// An announcement's audio hash
    #[arg(long)]
    pub audio: Option<String>,
}

impl Fields {
    /// The JSON fields the control API takes.
    pub fn to_json(&self) -> Result<Map<String, Value>, String> {
        let mut m = Map::new();
        let texts = [
            ("name", &self.name),
            ("location", &self.location),
            ("lang", &self.lang),
            ("ringback", &self.ringback),
            ("password", &self.password),
            ("token", &self.token),
            ("display", &self.display),
            ("short_name", &self.short_name),
            ("target", &self.target),
            ("audio", &self.audio),
        ];
        for (k, v) in texts {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        let flags = [
            ("call_waiting", self.call_waiting),
            ("allow_dialout", self.allow_dialout),
            ("trunk", self.trunk),
            ("premium", self.premium),
            ("encryption", self.encryption),
        ];
        for (k, v) in flags {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(f) = &self.forward {
            let v = if f == "none" {
                Value::Null
            } else {
                let mut parts = f.split(':');
                let target = parts.next().unwrap_or_default();
                let mode = parts.next().unwrap_or("ENABLED");
                let delay: u32 = match parts.next() {
                    Some(d) => d
                        .parse()
                        .map_err(|_| format!("--forward {f}: the delay is whole seconds"))?,
                    None => 0,
                };
                json!({"target": target, "mode": mode, "delay": delay})
            };
            m.insert("forward".into(), v);
        }
        match (&self.ipei, &self.uak) {
            (Some(i), _) if i == "none" => {
                m.insert("handset".into(), Value::Null);
            }
            (Some(ipei), Some(uak)) => {
                m.insert("handset".into(), json!({"ipei": ipei, "uak": uak}));
            }
            (None, None) => {}
            _ => return Err("--ipei and --uak go together (or --ipei none)".into()),
        }
        Ok(m)
    }
}

/// `guru3-sim ctl fault`.
#[derive(Debug, Default, clap::Args)]
pub struct FaultArgs {
    /// Clear every fault first
    #[arg(long)]
    pub clear: bool,
    /// Answer this percentage of REST requests with 503 (0 stops)
    #[arg(long, value_name = "PERCENT")]
    pub fail_ratio: Option<u64>,
    /// Seed of the generator choosing them
    #[arg(long)]
    pub seed: Option<u64>,
    /// Answer the next N REST requests with --status
    #[arg(long, value_name = "N")]
    pub fail_next: Option<u64>,
    /// Answer the next N POSTs (acks, inbound) with --status; GETs work
    #[arg(long, value_name = "N")]
    pub fail_next_posts: Option<u64>,
    /// The status of those failures (default 503)
    #[arg(long)]
    pub status: Option<u64>,
    /// Delay every REST response (0 stops)
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// The next N acks answer 200 but are not recorded (lost acks)
    #[arg(long, value_name = "N")]
    pub lose_acks: Option<u64>,
    /// New messages become visible this long after their websocket frame (0 stops)
    #[arg(long, value_name = "MS")]
    pub commit_delay_ms: Option<u64>,
    /// Refuse websocket upgrades (503) while true
    #[arg(long, value_name = "BOOL")]
    pub refuse_websockets: Option<bool>,
    /// Close every open websocket now
    #[arg(long)]
    pub drop_websockets: bool,
}

impl Ctl {
    /// The control request for this action: method, path, body.
    pub fn request(&self) -> Result<(&'static str, String, Option<Value>), String> {
        let with = |mut fields: Map<String, Value>, extra: &[(&str, Value)]| {
            for (k, v) in extra {
                fields.insert((*k).into(), v.clone());
            }
            Some(Value::Object(fields))
        };
        Ok(match self {
            Self::Info => ("GET", "/".into(), None),
            Self::List => ("GET", "/extensions".into(), None),
            Self::Show { number } => ("GET", format!("/extensions/{number}"), None),
            Self::Create {
                number,
                kind,
                fields,
            } => (
                "POST",
                "/extensions".into(),
                with(
                    fields.to_json()?,
                    &[("number", json!(number)), ("type", json!(kind))],
                ),
            ),
            Self::Update {
                number,
                kind,
                fields,
            } => {
                let extra: Vec<(&str, Value)> = kind.iter().map(|k| ("type", json!(k))).collect();
                (
                    "PATCH",
                    format!("/extensions/{number}"),
                    with(fields.to_json()?, &extra),
                )
            }
            Self::Rename { number, to, fields } => (
                "POST",
                format!("/extensions/{number}/rename"),
                with(fields.to_json()?, &[("to", json!(to))]),
            ),
            Self::Delete { number } => ("DELETE", format!("/extensions/{number}"), None),
            Self::Members { number, members } => {
                let list = members
                    .iter()
                    .map(|m| member_arg(m))
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    "PUT",
                    format!("/extensions/{number}/members"),
                    Some(json!({ "members": list })),
                )
            }
            Self::Unsubscribe { number } => {
                ("POST", format!("/extensions/{number}/unsubscribe"), None)
            }
            Self::Resync => ("POST", "/resync".into(), None),
            Self::Queue => ("GET", "/queue".into(), None),
            Self::Inbound => ("GET", "/inbound".into(), None),
            Self::Inject { kind, data } => {
                let data: Value =
                    serde_json::from_str(data).map_err(|e| format!("the data is not JSON: {e}"))?;
                (
                    "POST",
                    "/messages".into(),
                    Some(json!({"type": kind, "data": data})),
                )
            }
            Self::Replay { id } => ("POST", format!("/messages/{id}/replay"), None),
            Self::Fault(f) if f.clear && f.is_empty() => ("DELETE", "/faults".into(), None),
            Self::Fault(f) => ("PUT", "/faults".into(), Some(f.to_json())),
            Self::Down => ("POST", "/down".into(), None),
            Self::Up => ("POST", "/up".into(), None),
        })
    }
}

impl FaultArgs {
    fn is_empty(&self) -> bool {
        self.to_json().as_object().is_none_or(Map::is_empty)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let nums = [
            ("fail_ratio", self.fail_ratio),
            ("seed", self.seed),
            ("fail_next", self.fail_next),
            ("fail_next_posts", self.fail_next_posts),
            ("status", self.status),
            ("delay_ms", self.delay_ms),
            ("lose_acks", self.lose_acks),
            ("commit_delay_ms", self.commit_delay_ms),
        ];
        for (k, v) in nums {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(on) = self.refuse_websockets {
            m.insert("refuse_websockets".into(), json!(on));
        }
        if self.drop_websockets {
            m.insert("drop_websockets".into(), json!(true));
        }
        if self.clear && !m.is_empty() {
            m.insert("clear".into(), json!(true));
        }
        Value::Object(m)
    }
}

fn member_arg(m: &str) -> Result<Value, String> {
    let mut parts = m.split(':');
    let extension = parts.next().unwrap_or_default();
    let delay: u32 = match parts.next() {
        Some(d) => d
            .parse()
            .map_err(|_| format!("member {m}: the delay is whole seconds"))?,
        None => 0,
    };
    let active = match parts.next() {
        None => true,
        Some("paused") => false,
        Some(other) => return Err(format!("member {m}: {other:?} is not `paused`")),
    };
    Ok(json!({"extension": extension, "delay": delay, "active": active}))
}

/// Runs `guru3-sim ctl …`: one request, its reply on standard output.
pub fn run_ctl(args: &CtlArgs) -> std::process::ExitCode {
    control::ctl_main(
        "guru3-sim",
        args.control,
        CONTROL_ENV,
        args.action.request(),
        args.get.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_version_are_answered_not_run() {
        for flag in ["--help", "--version"] {
            let e = Args::try_parse_from(["guru3-sim", flag]).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ),
                "{flag}: {e}"
            );
        }
        let help = Args::try_parse_from(["guru3-sim", "--help"])
            .unwrap_err()
            .to_string();
        for option in [
            "--listen",
            "--seed",
            "--print-json",
            "--plain",
            "--event-id",
        ] {
            assert!(help.contains(option), "{help}");
        }
        assert!(Args::try_parse_from(["guru3-sim", "--listen", "nowhere"]).is_err());
    }

    fn ctl(argv: &[&str]) -> (&'static str, String, Option<Value>) {
        let mut all = vec!["guru3-sim", "ctl"];
        all.extend_from_slice(argv);
        let args = Args::try_parse_from(all).unwrap();
        let Some(Command::Ctl(c)) = args.command else {
            panic!("not ctl")
        };
        c.action.request().unwrap()
    }

    #[test]
    fn ctl_commands_become_control_requests() {
        let (m, p, b) = ctl(&[
            "create",
            "2001",
            "--type",
            "dect",
            "--name",
            "Ada",
            "--encryption",
            "true",
            "--forward",
            "2002:ON_BUSY:5",
        ]);
        assert_eq!((m, p.as_str()), ("POST", "/extensions"));
        assert_eq!(
            b.unwrap(),
            json!({"number": "2001", "type": "dect", "name": "Ada", "encryption": true,
                "forward": {"target": "2002", "mode": "ON_BUSY", "delay": 5}})
        );
        let (m, p, b) = ctl(&["members", "2004", "2001", "2002:10:paused"]);
        assert_eq!((m, p.as_str()), ("PUT", "/extensions/2004/members"));
        assert_eq!(
            b.unwrap()["members"],
            json!([{"extension": "2001", "delay": 0, "active": true},
                   {"extension": "2002", "delay": 10, "active": false}])
        );
        let (m, p, b) = ctl(&["rename", "2001", "2011", "--ipei", "none"]);
        assert_eq!((m, p.as_str()), ("POST", "/extensions/2001/rename"));
        assert_eq!(b.unwrap(), json!({"to": "2011", "handset": null}));
        assert_eq!(ctl(&["fault", "--clear"]).0, "DELETE");
        let (m, _, b) = ctl(&["fault", "--fail-next", "3", "--status", "502"]);
        assert_eq!(
            (m, b.unwrap()),
            ("PUT", json!({"fail_next": 3, "status": 502}))
        );
        let (_, p, _) = ctl(&["update", "2001", "--type", "sip"]);
        assert_eq!(p, "/extensions/2001");
        // bad arguments are refused before any request
        let args = Args::try_parse_from(["guru3-sim", "ctl", "members", "2004", "2001:x"]).unwrap();
        let Some(Command::Ctl(c)) = args.command else {
            panic!()
        };
        assert!(c.action.request().unwrap_err().contains("whole seconds"));
        let args = Args::try_parse_from([
            "guru3-sim",
            "ctl",
            "update",
            "2001",
            "--ipei",
            "00077 3216549 7",
        ])
        .unwrap();
        let Some(Command::Ctl(c)) = args.command else {
            panic!()
        };
        assert!(c.action.request().unwrap_err().contains("--uak"));
    }

    #[tokio::test]
    async fn a_seeded_simulator_describes_itself_for_a_client() {
        let args = Args::try_parse_from(["guru3-sim", "--seed", "40", "--print-json"]).unwrap();
        let sim = Guru3Sim::start(args.config().unwrap()).await.unwrap();
        seed(&sim, &args).unwrap();
        let v = describe(&sim, !args.plain);
        // 40 generated extensions and four of the types hexidian only records
        assert_eq!(v["extensions"], 44, "{v}");
        assert!(v["pending"].as_u64().unwrap() >= 44, "{v}");
        assert!(
            v["url"].as_str().unwrap().starts_with("https://127.0.0.1:"),
            "{v}"
        );
        assert!(v["api_key"].as_str().unwrap().starts_with("7$"), "{v}");
        assert!(std::path::Path::new(v["ca_file"].as_str().unwrap()).exists());
        let text = describe_text(&v);
        assert!(text.contains(v["api_key"].as_str().unwrap()), "{text}");
        // handsets: the generator's, with valid IPEIs
        let with_handset = sim
            .extensions()
            .iter()
            .filter(|e| e.handset.is_some())
            .count();
        assert_eq!(
            with_handset,
            (0..40)
                .filter(|i| hexidian_testkit::ids::seeded_handset(*i))
                .count()
        );
    }

    #[tokio::test]
    async fn the_mgr_key_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("guru3-sim-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("guru3-key");
        let path = file.to_str().unwrap();
        std::fs::write(&file, "7$composeDemo42\n").unwrap();
        let args = Args::try_parse_from(["guru3-sim", "--key-file", path]).unwrap();
        let sim = Guru3Sim::start(args.config().unwrap()).await.unwrap();
        assert_eq!(sim.api_key(), "7$composeDemo42");
        // another event's key, or one with other characters, is refused
        for bad in ["8$composeDemo42", "7$with space", "7$"] {
            std::fs::write(&file, bad).unwrap();
            let e = Guru3Sim::start(args.config().unwrap()).await.unwrap_err();
            assert!(
                e.to_string().contains("7$<letters and digits>"),
                "{bad}: {e}"
            );
        }
        let missing =
            Args::try_parse_from(["guru3-sim", "--key-file", "/nonexistent/key"]).unwrap();
        assert!(missing.config().unwrap_err().contains("/nonexistent/key"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let first = Guru3Sim::start(Config::default()).await.unwrap();
        let args =
            Args::try_parse_from(["guru3-sim", "--listen", &first.addr().to_string()]).unwrap();
        let e = Guru3Sim::start(args.config().unwrap()).await.unwrap_err();
        assert!(e.to_string().contains(&first.addr().to_string()), "{e}");
    }
}

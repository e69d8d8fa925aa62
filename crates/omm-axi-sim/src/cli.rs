//! The `omm-axi-sim` command: options, seeding, the control API, what it prints for a
//! client, and `omm-axi-sim ctl …`, the control API's client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hexidian_testkit::control;
use serde_json::{Map, Value, json};

use crate::{Sim, SimConfig};

/// The variable `omm-axi-sim ctl` reads the control API's address from.
pub const CONTROL_ENV: &str = "OMM_AXI_SIM_CONTROL";

/// An OMM simulator for manual runs: OM AXI over TLS and plain TCP (omm-axi.md), account
/// `omm`/`omm`, serving until Ctrl-C, with a control API on loopback that `omm-axi-sim ctl`
/// drives.
#[derive(Debug, Parser)]
#[command(name = "omm-axi-sim", version, about)]
pub struct Args {
    /// Where the TLS listener binds
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where the plain-TCP listener binds
    #[arg(long, default_value = "127.0.0.1:0")]
    pub plain_listen: SocketAddr,
    /// Subscribe the handsets of a generated event of N extensions: the ones
    /// `guru3-sim --seed N` names (same IPEIs and UAKs) and one in fifty more that GURU3 does
    /// not know. Without it: one handset
    #[arg(long, value_name = "N")]
    pub seed: Option<usize>,
    /// Where the control API listens (loopback only: it has no authentication)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write what a client needs as shell variables (OMM_AXI_SIM_HOST, _PORT,
    /// _PLAIN_PORT, _USER, _PASSWORD, _FINGERPRINT, _CA, _CONTROL; built with the `openssl`
    /// feature also _STATIC_RSA_PORT and _STATIC_RSA_FINGERPRINT of the listener like an older
    /// firmware) to this file, for `. FILE`
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Print what a client needs as one JSON object instead of text
    #[arg(long)]
    pub print_json: bool,
    /// Drive a running simulator instead of starting one
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `omm-axi-sim ctl …`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a running simulator through its control API (prints the JSON reply)
    Ctl(CtlArgs),
}

impl Args {
    /// The simulator's configuration.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            listen: Some(self.listen),
            plain_listen: Some(self.plain_listen),
            ..SimConfig::default()
        }
    }
}

/// A running simulator with its control API, as the command starts it.
#[derive(Debug)]
pub struct Running {
    /// The simulator.
    pub sim: Arc<Sim>,
    /// Its control API.
    pub control: control::Server,
    /// What [`describe`] says about it, with the control address.
    pub description: Value,
}

/// Starts the simulator `args` describe, seeds it, serves its control API and writes the
/// env file if asked.
pub async fn start(args: &Args) -> Result<Running, String> {
    let sim = Arc::new(
        Sim::try_start_with(args.config())
            .await
            .map_err(|e| e.to_string())?,
    );
    seed(&sim, args);
    let (control, description) = control::serve_described(
        args.control,
        Arc::clone(&sim),
        describe(&sim),
        |sim, info, req| async move { crate::control::handle(&sim, &info, req).await },
    )
    .await
    .map_err(|e| e.to_string())?;
    if let Some(path) = &args.env_file {
        let s = |k: &str| description[k].as_str().unwrap_or_default().to_owned();
        #[allow(unused_mut)]
        let mut vars = vec![
            ("OMM_AXI_SIM_HOST", sim.addr().ip().to_string()),
            ("OMM_AXI_SIM_PORT", sim.addr().port().to_string()),
            (
                "OMM_AXI_SIM_PLAIN_PORT",
                sim.plain_addr().port().to_string(),
            ),
            ("OMM_AXI_SIM_USER", s("user")),
            ("OMM_AXI_SIM_PASSWORD", s("password")),
            ("OMM_AXI_SIM_FINGERPRINT", s("fingerprint")),
            ("OMM_AXI_SIM_CA", s("ca_file")),
            (CONTROL_ENV, s("control")),
        ];
        #[cfg(feature = "openssl")]
        vars.extend([
            (
                "OMM_AXI_SIM_STATIC_RSA_PORT",
                sim.static_rsa_addr().port().to_string(),
            ),
            (
                "OMM_AXI_SIM_STATIC_RSA_FINGERPRINT",
                hexidian_testkit::fingerprint_hex("omm-selfsigned"),
            ),
        ]);
        control::write_env_file(path, &vars)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(Running {
        sim,
        control,
        description,
    })
}

/// Populates `sim` as `args` asks; the number of handsets GURU3 knows and does not know.
pub fn seed(sim: &Sim, args: &Args) -> (usize, usize) {
    match args.seed {
        Some(n) => sim.seed_event(n),
        None => {
            sim.seed_subscribed(
                &hexidian_testkit::ids::ipei(900_000),
                &hexidian_testkit::ids::uak(900_000),
            );
            (0, 1)
        }
    }
}

/// Everything a client needs: addresses, account, CA file and the certificate's
/// fingerprint (for pinning), and what it holds.
pub fn describe(sim: &Sim) -> Value {
    let view = sim.view();
    #[allow(unused_mut)]
    let mut d = json!({
        "tls": sim.addr().to_string(),
        "plain": sim.plain_addr().to_string(),
        "user": "omm",
        "password": "omm",
        "ca_file": hexidian_testkit::fixtures_dir().join("tls/ca.pem").display().to_string(),
        "fingerprint": hexidian_testkit::fingerprint_hex("server"),
        "users": view.users.len(),
        "devices": view.devices.len(),
    });
    #[cfg(feature = "openssl")]
    {
        d["static_rsa"] = json!(sim.static_rsa_addr().to_string());
        d["static_rsa_fingerprint"] = json!(hexidian_testkit::fingerprint_hex("omm-selfsigned"));
    }
    d
}

/// [`describe`] for a person.
pub fn describe_text(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let legacy = match &v["static_rsa"] {
        Value::String(addr) => format!(
            "  static RSA:  {addr} (TLS 1.2, TLS_RSA_WITH_AES_256_GCM_SHA384 only; fingerprint {})\n",
            s("static_rsa_fingerprint")
        ),
        _ => String::new(),
    };
    format!(
        "omm-axi-sim listening\n  tls:         {}\n  plain tcp:   {}\n{legacy}  account:     {}/{}\n  ca:          {}\n  fingerprint: {}\n  holds:       {} users, {} devices\n  control:     {} (export {CONTROL_ENV}={}; omm-axi-sim ctl --help)\nCtrl-C stops\n",
        s("tls"),
        s("plain"),
        s("user"),
        s("password"),
        s("ca_file"),
        s("fingerprint"),
        s("users"),
        s("devices"),
        s("control"),
        s("control")
    )
}

/// `omm-axi-sim ctl [--control ADDR] [--get POINTER] ACTION`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The control API's address (default: $OMM_AXI_SIM_CONTROL; the simulator prints it)
    #[arg(long, value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// Print only the reply's value at this JSON pointer (e.g. `/0/num`), strings unquoted
    #[arg(long, value_name = "POINTER")]
    pub get: Option<String>,
    /// What to do
    #[command(subcommand)]
    pub action: Ctl,
}

/// What `omm-axi-sim ctl` asks the simulator to do: handsets, the OMM's administrator, OM
/// AXI events and faults.
#[derive(Debug, Subcommand)]
pub enum Ctl {
    /// Addresses, account, CA file, fingerprint, subscription settings, counts
    Info,
    /// Every user (secret attributes masked)
    Users,
    /// One user
    User {
        /// Its uid
        uid: u32,
    },
    /// The user with a number
    Number {
        /// Its `num`
        num: String,
    },
    /// Change a user's attributes as the OMM's administrator would (announced as an event)
    SetUser {
        /// Its uid
        uid: u32,
        /// Attributes as `NAME=VALUE`
        #[arg(required = true)]
        attrs: Vec<String>,
    },
    /// Delete a user as the OMM's administrator would (announced as an event)
    DeleteUser {
        /// Its uid
        uid: u32,
    },
    /// Every device (handset)
    Devices,
    /// One device
    Device {
        /// Its ppn
        ppn: u32,
    },
    /// A handset subscribes (announced as an event; refused as the OMM would: closed
    /// subscription, unknown IPEI, wrong code)
    Subscribe {
        /// Its IPEI, `DDDDD DDDDDDD C`
        ipei: String,
        /// The authentication code it dials (default: the system's)
        #[arg(long)]
        ac: Option<String>,
        /// The key it ends up with (32 hex digits; default: a fresh one)
        #[arg(long)]
        uak: Option<String>,
    },
    /// Set a handset's state (GetPPState), announced as EventPPState
    State {
        /// Its ppn
        ppn: u32,
        /// Attributes as `NAME=VALUE`
        #[arg(required = true)]
        attrs: Vec<String>,
    },
    /// The administrator's subscription settings
    Subscription {
        /// The system's authentication code
        #[arg(long)]
        ac: Option<String>,
        /// Create a device for a handset with an unknown IPEI and the right code
        #[arg(long, value_name = "BOOL")]
        auto_create: Option<bool>,
    },
    /// Send every session an event: one XML document, or with --raw any bytes
    Event {
        /// The document (or text)
        text: String,
        /// Send it as it is, without the framing checks (malformed frames)
        #[arg(long)]
        raw: bool,
    },
    /// The requests received, counted by name
    Requests,
    /// Inject faults (several at once); `--clear` clears them all first
    Fault(FaultArgs),
    /// Close every connection (the listeners stay)
    Drop,
    /// Stop listening: connections refused, sessions closed
    Down,
    /// Listen again on the same addresses
    Up,
    /// Advance the virtual clock (subscription windows, idle timeouts)
    Clock {
        /// Seconds
        seconds: u64,
    },
}

/// `omm-axi-sim ctl fault`.
#[derive(Debug, Default, clap::Args)]
pub struct FaultArgs {
    /// Clear every fault first
    #[arg(long)]
    pub clear: bool,
    /// Close each connection after it received N frames (0: off)
    #[arg(long, value_name = "N")]
    pub drop_after: Option<u64>,
    /// Delay the answers to a request: `REQUEST=MS` (repeatable; replaces the delays)
    #[arg(long, value_name = "REQUEST=MS")]
    pub delay: Vec<String>,
    /// Split every write into chunks of N bytes (0: off)
    #[arg(long, value_name = "N")]
    pub split: Option<u64>,
    /// Write up to N frames together (0: off)
    #[arg(long, value_name = "N")]
    pub coalesce: Option<u64>,
    /// Refuse a request with an error code: `REQUEST=CODE[:TIMES]`, e.g. `CreatePPUser=EPerm`
    /// (repeatable; replaces the refusals; without TIMES: until cleared)
    #[arg(long, value_name = "REQUEST=CODE[:TIMES]")]
    pub refuse: Vec<String>,
    /// Never answer a request (repeatable; replaces the list)
    #[arg(long, value_name = "REQUEST")]
    pub stall: Vec<String>,
    /// Close new TLS connections before the handshake while true
    #[arg(long, value_name = "BOOL")]
    pub refuse_tls: Option<bool>,
}

fn name_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?}: NAME=VALUE"))
}

fn attrs_json(attrs: &[String]) -> Result<Value, String> {
    let mut m = Map::new();
    for a in attrs {
        let (k, v) = name_value(a)?;
        m.insert(k, Value::String(v));
    }
    Ok(Value::Object(m))
}

impl FaultArgs {
    fn to_json(&self) -> Result<Map<String, Value>, String> {
        let mut m = Map::new();
        let off_or = |n: u64| if n == 0 { Value::Null } else { json!(n) };
        for (k, v) in [
            ("drop_after", self.drop_after),
            ("split_chunks", self.split),
            ("coalesce", self.coalesce),
        ] {
            if let Some(n) = v {
                m.insert(k.into(), off_or(n));
            }
        }
        if !self.delay.is_empty() {
            let mut d = Map::new();
            for s in &self.delay {
                let (req, ms) = name_value(s)?;
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("--delay {s}: whole milliseconds"))?;
                d.insert(req, json!(ms));
            }
            m.insert("delay_ms".into(), Value::Object(d));
        }
        if !self.refuse.is_empty() {
            let mut r = Map::new();
            for s in &self.refuse {
                let (req, how) = name_value(s)?;
                let (code, times) = match how.split_once(':') {
                    Some((c, t)) => (
                        c.to_owned(),
                        Some(
                            t.parse::<u64>()
                                .map_err(|_| format!("--refuse {s}: TIMES is a number"))?,
                        ),
                    ),
                    None => (how, None),
                };
                let mut v = json!({ "error": code });
                if let Some(t) = times {
                    v["times"] = json!(t);
                }
                r.insert(req, v);
            }
            m.insert("refuse".into(), Value::Object(r));
        }
        if !self.stall.is_empty() {
            m.insert("stall".into(), json!(self.stall));
        }
        if let Some(on) = self.refuse_tls {
            m.insert("refuse_tls".into(), json!(on));
        }
        Ok(m)
    }
}

impl Ctl {
    /// The control request for this action: method, path, body.
    pub fn request(&self) -> Result<(&'static str, String, Option<Value>), String> {
        Ok(match self {
            Self::Info => ("GET", "/".into(), None),
            Self::Users => ("GET", "/users".into(), None),
            Self::User { uid } => ("GET", format!("/users/{uid}"), None),
            Self::Number { num } => ("GET", format!("/numbers/{num}"), None),
            Self::SetUser { uid, attrs } => {
                ("PUT", format!("/users/{uid}"), Some(attrs_json(attrs)?))
            }
            Self::DeleteUser { uid } => ("DELETE", format!("/users/{uid}"), None),
            Self::Devices => ("GET", "/devices".into(), None),
            Self::Device { ppn } => ("GET", format!("/devices/{ppn}"), None),
            Self::Subscribe { ipei, ac, uak } => {
                let mut body = json!({ "ipei": ipei });
                if let Some(ac) = ac {
                    body["ac"] = json!(ac);
                }
                if let Some(uak) = uak {
                    body["uak"] = json!(uak);
                }
                ("POST", "/handsets".into(), Some(body))
            }
            Self::State { ppn, attrs } => (
                "PUT",
                format!("/devices/{ppn}/state"),
                Some(attrs_json(attrs)?),
            ),
            Self::Subscription { ac, auto_create } => {
                let mut body = json!({});
                if let Some(ac) = ac {
                    body["ac"] = json!(ac);
                }
                if let Some(on) = auto_create {
                    body["auto_create"] = json!(on);
                }
                ("PUT", "/subscription".into(), Some(body))
            }
            Self::Event { text, raw } => {
                let key = if *raw { "raw" } else { "xml" };
                ("POST", "/events".into(), Some(json!({ key: text })))
            }
            Self::Requests => ("GET", "/requests".into(), None),
            Self::Fault(f) => {
                let mut m = f.to_json()?;
                if m.is_empty() {
                    if !f.clear {
                        return Err("name a fault (or --clear); see --help".into());
                    }
                    ("DELETE", "/faults".into(), None)
                } else {
                    if f.clear {
                        m.insert("clear".into(), json!(true));
                    }
                    ("PUT", "/faults".into(), Some(Value::Object(m)))
                }
            }
            Self::Drop => ("POST", "/drop".into(), None),
            Self::Down => ("POST", "/down".into(), None),
            Self::Up => ("POST", "/up".into(), None),
            Self::Clock { seconds } => {
                ("POST", "/clock".into(), Some(json!({ "seconds": seconds })))
            }
        })
    }
}

/// Runs `omm-axi-sim ctl …`: one request, its reply on standard output.
pub fn run_ctl(args: &CtlArgs) -> std::process::ExitCode {
    control::ctl_main(
        "omm-axi-sim",
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
            let e = Args::try_parse_from(["omm-axi-sim", flag]).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ),
                "{flag}: {e}"
            );
        }
        let help = Args::try_parse_from(["omm-axi-sim", "--help"])
            .unwrap_err()
            .to_string();
        for option in ["--listen", "--plain-listen", "--seed", "--print-json"] {
            assert!(help.contains(option), "{help}");
        }
    }

    fn ctl(argv: &[&str]) -> Result<(&'static str, String, Option<Value>), String> {
        let mut all = vec!["omm-axi-sim", "ctl"];
        all.extend_from_slice(argv);
        let args = Args::try_parse_from(all).unwrap();
        let Some(Command::Ctl(c)) = args.command else {
            panic!("not ctl")
        };
        c.action.request()
    }

    #[test]
    fn ctl_commands_become_control_requests() {
        let (m, p, b) = ctl(&["subscribe", "03074 0220259 3", "--ac", "4711"]).unwrap();
        assert_eq!((m, p.as_str()), ("POST", "/handsets"));
        assert_eq!(b.unwrap(), json!({"ipei": "03074 0220259 3", "ac": "4711"}));
        let (m, p, b) = ctl(&["set-user", "12", "name=Ada=L", "num=2001"]).unwrap();
        assert_eq!((m, p.as_str()), ("PUT", "/users/12"));
        assert_eq!(b.unwrap(), json!({"name": "Ada=L", "num": "2001"}));
        let (m, _, b) = ctl(&[
            "fault",
            "--clear",
            "--refuse",
            "CreatePPUser=EPerm:2",
            "--refuse",
            "SetPP=ENoMem",
            "--delay",
            "Ping=300",
            "--drop-after",
            "0",
        ])
        .unwrap();
        assert_eq!(m, "PUT");
        assert_eq!(
            b.unwrap(),
            json!({"clear": true, "drop_after": null, "delay_ms": {"Ping": 300},
                "refuse": {"CreatePPUser": {"error": "EPerm", "times": 2}, "SetPP": {"error": "ENoMem"}}})
        );
        assert_eq!(ctl(&["fault", "--clear"]).unwrap().0, "DELETE");
        assert!(ctl(&["fault"]).unwrap_err().contains("--clear"));
        assert!(
            ctl(&["state", "3", "novalue"])
                .unwrap_err()
                .contains("NAME=VALUE")
        );
        let (_, _, b) = ctl(&["event", "<x", "--raw"]).unwrap();
        assert_eq!(b.unwrap(), json!({"raw": "<x"}));
        assert!(Args::try_parse_from(["omm-axi-sim", "ctl", "user", "abc"]).is_err());
    }

    #[tokio::test]
    async fn a_seeded_simulator_holds_the_generated_events_handsets() {
        let args = Args::try_parse_from(["omm-axi-sim", "--seed", "100"]).unwrap();
        let sim = Sim::try_start_with(args.config()).await.unwrap();
        let (known, unknown) = seed(&sim, &args);
        assert_eq!(
            known,
            (0..100)
                .filter(|i| hexidian_testkit::ids::seeded_handset(*i))
                .count()
        );
        assert_eq!(unknown, 2);
        let v = describe(&sim);
        assert_eq!(v["devices"], known + unknown, "{v}");
        assert_eq!(v["users"], 0, "{v}");
        // every device subscribed with its UAK, on the IPEIs GURU3's generated event names
        let view = sim.view();
        for (_, d) in &view.devices {
            assert_eq!(d["s"], "Yes");
            assert_eq!(d["uak"].len(), 32);
        }
        let first = (0..100)
            .find(|i| hexidian_testkit::ids::seeded_handset(*i))
            .unwrap();
        let ipei = hexidian_testkit::ids::ipei(first as u32);
        assert!(
            view.devices.iter().any(|(_, d)| d["ipei"] == ipei),
            "{ipei}"
        );
        assert!(describe_text(&v).contains(v["fingerprint"].as_str().unwrap()));
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let first = Sim::start().await;
        let taken = first.addr().to_string();
        let args = Args::try_parse_from(["omm-axi-sim", "--listen", &taken]).unwrap();
        let e = Sim::try_start_with(args.config()).await.unwrap_err();
        assert!(e.to_string().contains(&taken), "{e}");
    }
}

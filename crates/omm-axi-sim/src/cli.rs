//! The `omm-axi-sim` command: options, seeding, and what it prints for a client.

use std::net::SocketAddr;

use clap::Parser;

use crate::{Sim, SimConfig};

/// An OMM simulator for manual runs: OM AXI over TLS and plain TCP (omm-axi.md), account
/// `omm`/`omm`, serving until Ctrl-C.
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
    /// Print what a client needs as one JSON object instead of text
    #[arg(long)]
    pub print_json: bool,
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
pub fn describe(sim: &Sim) -> serde_json::Value {
    let view = sim.view();
    serde_json::json!({
        "tls": sim.addr().to_string(),
        "plain": sim.plain_addr().to_string(),
        "user": "omm",
        "password": "omm",
        "ca_file": hexidian_testkit::fixtures_dir().join("tls/ca.pem").display().to_string(),
        "fingerprint": hexidian_testkit::fingerprint_hex("server"),
        "users": view.users.len(),
        "devices": view.devices.len(),
    })
}

/// [`describe`] for a person.
pub fn describe_text(v: &serde_json::Value) -> String {
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!(
        "omm-axi-sim listening\n  tls:         {}\n  plain tcp:   {}\n  account:     {}/{}\n  ca:          {}\n  fingerprint: {}\n  holds:       {} users, {} devices\nCtrl-C stops\n",
        s("tls"),
        s("plain"),
        s("user"),
        s("password"),
        s("ca_file"),
        s("fingerprint"),
        s("users"),
        s("devices")
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

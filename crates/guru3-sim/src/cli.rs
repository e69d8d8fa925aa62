//! The `guru3-sim` command: options, seeding, and what it prints for a client.

use std::net::SocketAddr;

use clap::Parser;

use crate::{Config, Guru3Sim};

/// A GURU3 simulator for manual runs: the consumer REST API and the status websocket
/// (guru3.md), serving until Ctrl-C.
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
    /// Populate a generated event of N extensions: DECT (every third with a handset, the ones
    /// `omm-axi-sim --seed N` subscribes), SIP, call groups with members and one of each
    /// other type. Without it: three example extensions
    #[arg(long, value_name = "N")]
    pub seed: Option<usize>,
    /// Print what a client needs as one JSON object instead of text
    #[arg(long)]
    pub print_json: bool,
}

impl Args {
    /// The simulator's configuration.
    pub fn config(&self) -> Config {
        Config {
            event_id: self.event_id,
            tls: !self.plain,
            listen: self.listen,
            ..Config::default()
        }
    }
}

/// Populates `sim` as `args` asks.
pub fn seed(sim: &Guru3Sim, args: &Args) -> Result<(), String> {
    match args.seed {
        Some(n) => crate::seed_event(sim, n).map(|_| ()),
        None => crate::seed_example(sim),
    }
}

/// Everything a client needs: URL, event id, API key, CA file, and what the queue holds.
pub fn describe(sim: &Guru3Sim, tls: bool) -> serde_json::Value {
    serde_json::json!({
        "url": sim.url(),
        "event_id": sim.event_id(),
        "api_key": sim.api_key(),
        "ca_file": tls.then(|| hexidian_testkit::fixtures_dir().join("tls/ca.pem").display().to_string()),
        "extensions": sim.extensions().len(),
        "pending": sim.pending_count(),
    })
}

/// [`describe`] for a person.
pub fn describe_text(v: &serde_json::Value) -> String {
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    format!(
        "guru3-sim listening\n  url:        {}\n  event id:   {}\n  api key:    {}\n  ca:         {}\n  extensions: {}\n  queue:      {} messages pending\nCtrl-C stops\n",
        s("url"),
        s("event_id"),
        s("api_key"),
        s("ca_file"),
        s("extensions"),
        s("pending")
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

    #[tokio::test]
    async fn a_seeded_simulator_describes_itself_for_a_client() {
        let args = Args::try_parse_from(["guru3-sim", "--seed", "40", "--print-json"]).unwrap();
        let sim = Guru3Sim::start(args.config()).await.unwrap();
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
    async fn a_taken_address_is_a_clear_error() {
        let first = Guru3Sim::start(Config::default()).await.unwrap();
        let args =
            Args::try_parse_from(["guru3-sim", "--listen", &first.addr().to_string()]).unwrap();
        let e = Guru3Sim::start(args.config()).await.unwrap_err();
        assert!(e.to_string().contains(&first.addr().to_string()), "{e}");
    }
}

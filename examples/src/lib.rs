//! Shared set-up for the examples: connect to a real OMM from environment variables, or to an
//! embedded simulator with `--sim`.

use omm_axi::Fingerprint;
use omm_axi::client::{Config, tls};
use omm_axi_sim::Sim;

/// Either a real OMM or a simulator that lives as long as this value.
#[derive(Debug)]
pub struct Target {
    /// Client configuration.
    pub config: Config,
    /// The simulator, when one was started.
    pub sim: Option<Sim>,
}

/// `--sim` starts a simulator seeded with a few users and handsets; otherwise the OMM comes
/// from `OMM_HOST`, `OMM_PORT` (default 12622), `OMM_USER`, `OMM_PASSWORD` and
/// `OMM_FINGERPRINT` (SHA-256 of the OMM's certificate, hex).
pub async fn target() -> Result<Target, String> {
    if std::env::args().any(|a| a == "--sim") {
        let sim = Sim::start().await;
        for (num, name) in [
            ("2001", "Lena Brandt"),
            ("2002", "Kiosk Nord"),
            ("4711", "Buehnentechnik"),
        ] {
            sim.seed_user(&[("num", num), ("name", name)]);
        }
        sim.seed_device("03074 0220259 3");
        sim.seed_device("10345 0615703 *");
        let fp: Fingerprint = hexidian_testkit::fingerprint_hex("server")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let config = Config::new("127.0.0.1", "omm", "omm")
            .port(sim.addr().port())
            .tls(tls::pinned(&[fp]));
        return Ok(Target {
            config,
            sim: Some(sim),
        });
    }
    #[allow(clippy::disallowed_methods)] // examples read their settings from the environment
    let var = |k: &str| std::env::var(k).map_err(|_| format!("set {k} (or pass --sim)"));
    let (host, user, password) = (var("OMM_HOST")?, var("OMM_USER")?, var("OMM_PASSWORD")?);
    let fp: Fingerprint = var("OMM_FINGERPRINT")?
        .parse()
        .map_err(|e| format!("OMM_FINGERPRINT: {e}"))?;
    let mut config = Config::new(host, user, password).tls(tls::pinned(&[fp]));
    if let Ok(port) = var("OMM_PORT") {
        config = config.port(
            port.parse()
                .map_err(|_| "OMM_PORT must be a number".to_owned())?,
        );
    }
    Ok(Target { config, sim: None })
}

/// Positional arguments (everything except flags).
pub fn positional() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

//! What the process tests share: the binary under test; the config and the child process
//! live in `hexidian_e2e::process` (the `scale` benchmark runs hexidian the same way).

pub(crate) use hexidian_e2e::process::{Hexidian, OMM_PASSWORD, WEBHOOK_KEY, write_config};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hexidian");

/// `hexidian <args…> --config <config>` as an operator runs it beside the peers of `w`: the
/// secrets in the environment, `RUST_LOG` as given, human log lines without colour.
pub(crate) async fn command(
    w: &hexidian_e2e::World,
    args: &[&str],
    config: &std::path::Path,
    log: &str,
) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(["--log-format", "human"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", log)
        .env("NO_COLOR", "1")
        .env("HEXIDIAN_GURU3_KEY", w.guru3.api_key())
        .env("HEXIDIAN_WEBHOOK_KEY", WEBHOOK_KEY)
        .env("HEXIDIAN_TEST_OMM_PASSWORD", OMM_PASSWORD)
        .output()
        .await
        .unwrap()
}

//! The command line as an operator uses it.

use std::process::Command;

fn hexidian(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hexidian"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_what_is_missing() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hexidian.toml");
    let (ok, _, err) = hexidian(&["check-config", "--config", example]);
    assert!(!ok);
    assert!(err.contains("HEXIDIAN_GURU3_KEY"), "{err}");
    let (ok, _, err) = hexidian(&["run", "--config", "/nonexistent.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[test]
fn the_old_demo_command_names_the_new_one() {
    let (ok, _, err) = hexidian(&["demo", "--exit", "--memory"]);
    assert!(!ok);
    assert!(
        err.contains("cargo run -p hexidian-demo -- --exit --memory"),
        "{err}"
    );
}

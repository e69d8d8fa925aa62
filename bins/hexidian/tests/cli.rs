//! The command line as an operator uses it.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

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
fn demo_runs_the_whole_scenario_and_checks_it() {
    let (ok, out, err) = hexidian(&["demo", "--exit", "--extensions", "40"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("ok: OMM and GURU3 agree"), "{out}");
    assert!(out.contains("dead-lettered 0"), "{out}");
}

#[test]
fn demo_without_postgres_uses_the_memory_store() {
    let (ok, out, err) = hexidian(&["demo", "--exit", "--memory", "--extensions", "20"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("PBX store: in memory"), "{out}");
    assert!(out.contains("ok: OMM and GURU3 agree"), "{out}");
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

//! Every example runs against the simulator and prints what it promises.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn omm_list_against_the_sim() {
    let out = run(env!("CARGO_BIN_EXE_omm_list"), &["--sim"]);
    assert!(
        out.contains("3 users") && out.contains("2 devices") && out.contains("03074 0220259 3"),
        "{out}"
    );
}

#[test]
fn omm_watch_against_the_sim() {
    let out = run(env!("CARGO_BIN_EXE_omm_watch"), &["--sim"]);
    assert!(
        out.contains("DectSubscriptionMode") && out.contains("01842 0093371 6"),
        "{out}"
    );
}

#[test]
fn omm_attach_against_the_sim() {
    let out = run(env!("CARGO_BIN_EXE_omm_attach"), &["--sim"]);
    assert!(
        out.contains("attached ppn 1 to uid 1 (number 2001), relation Some(Dynamic)"),
        "{out}"
    );
}

#[test]
fn guru3_tail_against_the_sim() {
    let out = run(env!("CARGO_BIN_EXE_guru3_tail"), &["--sim"]);
    assert!(
        out.contains("UPDATE_EXTENSION 2001 (SIP)")
            && out.contains("UPDATE_CALLGROUP 1100 (2 members)")
            && out.contains("RENAME_EXTENSION 2002→2020")
            && out.contains("6 messages shown, none acked"),
        "{out}"
    );
}

#[test]
fn examples_explain_missing_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_omm_list"))
        .env_remove("OMM_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OMM_HOST"));
    let out = Command::new(env!("CARGO_BIN_EXE_guru3_tail"))
        .env_remove("GURU3_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GURU3_KEY"));
}

//! The demo binary as the README runs it.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hexidian-demo"))
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
    let (ok, out, err) = demo(&["--exit", "--extensions", "40"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("ok: OMM and GURU3 agree"), "{out}");
    assert!(out.contains("dead-lettered 0"), "{out}");
}

#[test]
fn demo_without_postgres_uses_the_memory_store() {
    let (ok, out, err) = demo(&["--exit", "--memory", "--extensions", "20"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("PBX store: in memory"), "{out}");
    assert!(out.contains("ok: OMM and GURU3 agree"), "{out}");
}

#[test]
fn sigterm_stops_gracefully() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_hexidian-demo"))
        .args(["--memory", "--extensions", "10"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("stay up until Ctrl-C") {
            break;
        }
    }
    assert!(seen.contains("ok: OMM and GURU3 agree"), "{seen}");
    // keep reading, as a terminal would
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    rest.join().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

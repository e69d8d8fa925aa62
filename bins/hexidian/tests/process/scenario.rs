//! README "Trying it by hand": `examples/sim-scenario.sh` as written, on this build's binaries:
//! `hexidian run` with the example config pointed at guru3-sim, omm-axi-sim and the demo's
//! throwaway PostgreSQL; an extension created and a handset subscribed through the
//! simulators' `ctl` commands, the token call made with curl, the bind watched.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A loopback port free a moment ago (the script's admin and webhook listeners need known
/// addresses: the operator's `hexidian status` finds the admin API through the config).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_readme_scenario_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let hexidian = Path::new(env!("CARGO_BIN_EXE_hexidian"));
    let bin_dir = hexidian.parent().unwrap();
    // `cargo test` builds this package's binary only; the simulators' and the demo's are built
    // here, into the same directory (never `-p hexidian`: that would replace the binary the
    // crash tests run, which has the crash points)
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "-q",
            "-p",
            "guru3-sim",
            "-p",
            "omm-axi-sim",
            "-p",
            "hexidian-demo",
            "--bins",
        ])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(built.success(), "building the simulators");
    for b in ["guru3-sim", "omm-axi-sim", "hexidian-demo"] {
        assert!(bin_dir.join(b).exists(), "{b} not in {}", bin_dir.display());
    }
    let work = std::env::temp_dir().join(format!("hexidian-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let t = Instant::now();
    let out = Command::new("timeout")
        .args(["300", "bash"])
        .arg(root.join("examples/sim-scenario.sh"))
        .env("HEXIDIAN_BIN_DIR", bin_dir)
        .env("HEXIDIAN_ADMIN", format!("127.0.0.1:{}", free_port()))
        .env("HEXIDIAN_WEBHOOK", format!("127.0.0.1:{}", free_port()))
        .env("HEXIDIAN_SCENARIO_DIR", &work)
        .env_remove("GURU3_SIM_CONTROL")
        .env_remove("OMM_AXI_SIM_CONTROL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the scenario failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    for step in [
        "== 7. the handset is bound to 4711, and GURU3 is told",
        "hexidian answers: OK",
        "\"type\": \"ASSIGN_HANDSET\"",
        "scenario complete: handset 03074 0220259 3 is extension 4711",
    ] {
        assert!(stdout.contains(step), "{step:?} missing:\n{stdout}");
    }
    // no secret in what it printed: the webhook key stays in the environment
    assert!(!stdout.contains("scenario-webhook-key"), "{stdout}");
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("scenario: {:.1} s\n", t.elapsed().as_secs_f64()).as_bytes(),
    );
    assert!(t.elapsed() < Duration::from_secs(300));
    std::fs::remove_dir_all(&work).unwrap();
}

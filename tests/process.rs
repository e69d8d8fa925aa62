//! `hexidian run` as its own process: the example config filled in for a [`World`], and one
//! child process with its log. The process tests of `bins/hexidian` and the `scale` benchmark
//! share it.

#![allow(clippy::unwrap_used)] // a test helper fails loudly

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_core::crash;
use tokio::io::AsyncBufReadExt;

use crate::World;

pub const WEBHOOK_KEY: &str = "crash-test-hook-key";
pub const OMM_PASSWORD: &str = "omm";
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;

/// `examples/hexidian.toml` with this world's peers and loopback listeners filled in; every
/// tuning value (page size, poll interval, retry limits, bind delay, …) stays as shipped.
pub fn write_config(w: &World, dir: &Path) -> PathBuf {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hexidian.toml");
    write_config_from(w, dir, Path::new(example))
}

/// [`write_config`] from another example config (an older build's, to measure it as shipped).
pub fn write_config_from(w: &World, dir: &Path, example: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(example).unwrap();
    let ca = hexidian_testkit::fixtures_dir().join("tls/ca.pem");
    let fp = hexidian_testkit::fingerprint_hex("server");
    let edits: [(&str, &str, String); 11] = [
        ("guru3", "url", format!("{:?}", w.guru3.url())),
        (
            "guru3",
            "ca_file",
            format!("{:?}", ca.display().to_string()),
        ),
        ("omm", "host", "\"127.0.0.1\"".into()),
        ("omm", "port", w.omm.addr().port().to_string()),
        ("omm", "user", "\"omm\"".into()),
        ("omm", "password_file", String::new()),
        ("omm", "fingerprints", format!("[{fp:?}]")),
        ("postgres", "url", format!("{:?}", w.hexidian_url())),
        ("admin", "listen", "\"127.0.0.1:0\"".into()),
        ("unbound", "listen", "\"127.0.0.1:0\"".into()),
        // the simulator's handsets subscribe without being configured first
        ("unbound", "subscription_mode", "\"Wildcard\"".into()),
    ];
    for (section, key, value) in edits {
        text = set(&text, section, key, &value);
    }
    // the OMM password from the environment instead of a file
    text = text.replace(
        "[omm]\n",
        "[omm]\npassword_env = \"HEXIDIAN_TEST_OMM_PASSWORD\"\n",
    );
    text = set(&text, "log", "format", "\"json\"");
    let path = dir.join("hexidian.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The config text with `key` of `[section]` set to `value` (a commented-out default is
/// uncommented); an empty value removes the key. Panics when the key is not in the section,
/// so a changed example config cannot silently leave a value unset.
fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut current = "";
    let mut found = false;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            current = t.trim_start_matches('[').split(']').next().unwrap_or("");
        }
        let bare = t.trim_start_matches("# ");
        let is_key = bare
            .strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with('='));
        if current == section && is_key && !found {
            found = true;
            if !value.is_empty() {
                out.push_str(&format!("{key} = {value}\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(found, "examples/hexidian.toml has no {key} in [{section}]");
    out
}

/// One `hexidian run` child process and what it wrote to stderr.
#[derive(Debug)]
pub struct Hexidian {
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

/// `bin <args…> --config <config>` as an operator runs it beside the peers of `w`: the secrets
/// in the environment, `RUST_LOG` as given, human log lines without colour.
pub fn operator(
    bin: &str,
    w: &World,
    args: &[&str],
    config: &Path,
    log: &str,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(bin);
    c.args(["--log-format", "human"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", log)
        .env("NO_COLOR", "1")
        .env("HEXIDIAN_GURU3_KEY", w.guru3.api_key())
        .env("HEXIDIAN_WEBHOOK_KEY", WEBHOOK_KEY)
        .env("HEXIDIAN_TEST_OMM_PASSWORD", OMM_PASSWORD);
    c
}

impl Hexidian {
    /// Starts the binary `bin`; `crash_at` arms a crash point (`NAME:N`).
    pub fn spawn(bin: &str, w: &World, config: &Path, crash_at: Option<&str>) -> Self {
        // no core files from the aborts: the shell lowers the limit, then becomes hexidian
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -c 0; exec \"$0\" \"$@\"")
            .arg(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("HEXIDIAN_GURU3_KEY", w.guru3.api_key())
            .env("HEXIDIAN_WEBHOOK_KEY", WEBHOOK_KEY)
            .env("HEXIDIAN_TEST_OMM_PASSWORD", OMM_PASSWORD)
            .env_remove(crash::ENV)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(spec) = crash_at {
            cmd.env(crash::ENV, spec);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The webhook's address, once the process has logged it (at most 30 s).
    pub async fn webhook(&self) -> std::net::SocketAddr {
        self.listener("webhook listener ready").await
    }

    /// The admin listener's address (`/readyz`), once the process has logged it.
    pub async fn admin(&self) -> std::net::SocketAddr {
        self.listener("admin listener ready").await
    }

    async fn listener(&self, message: &str) -> std::net::SocketAddr {
        let t0 = Instant::now();
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let f = &v["fields"];
                (f["message"] == message)
                    .then(|| f["addr"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(a) = found {
                return a;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no {message:?} logged; stderr:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's resident memory now (kB, from `/proc`).
    pub fn rss_kb(&self) -> u64 {
        let pid = self.child.id().unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// CPU time the process used so far (user + system, seconds, from `/proc`).
    pub fn cpu_s(&self) -> f64 {
        let pid = self.child.id().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // fields after the command name (which may hold spaces): utime is the 12th, stime the 13th
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        // clock ticks: 100 per second on Linux
        f.iter().sum::<u64>() as f64 / 100.0
    }

    /// `kill -s <signal>` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {signal} {pid}");
    }

    /// The lines the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `kill -9`, and the proof that it was that signal that ended the process.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let status = self.child.wait().await.unwrap();
        assert!(
            status.signal() == Some(SIGKILL) || status.code().is_some(),
            "{status:?}"
        );
    }

    /// Waits until the process aborted at `point` (at most `limit`).
    pub async fn aborted_at(mut self, point: &str, limit: Duration) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "hexidian did not reach {point} within {limit:?}; stderr:\n{}",
                self.log.lock().unwrap().join("\n")
            ),
        };
        // the pipe may still hold the last line
        let t0 = Instant::now();
        while !self.log_has(&format!("crash point {point} reached")) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "exited ({status:?}) but not at {point}; stderr:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status.signal(), Some(SIGABRT), "{status:?}");
    }

    /// Waits for an abort at `point`, or kills the process once GURU3's queue has stayed empty
    /// for 3 s (the point was not reached: there was no more work). True if it aborted there.
    pub async fn aborted_at_or_idle(mut self, w: &World, point: &str) -> bool {
        let t0 = Instant::now();
        let mut idle_since = None;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let sref = Self {
                    child: self.child,
                    log: self.log,
                };
                assert_eq!(status.signal(), Some(SIGABRT), "{status:?}");
                sref.aborted_at(point, Duration::from_secs(1)).await;
                return true;
            }
            if w.guru3.pending_count() == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(3) {
                    self.kill9().await;
                    return false;
                }
            } else {
                idle_since = None;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "hexidian neither reached {point} nor drained the queue"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The release binary (`cargo build --release -p hexidian`), built now: what the benchmarks
/// measure when no `--hexidian` is given.
pub fn release_binary() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "hexidian",
            "--bin",
            "hexidian",
        ])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "building the release binary failed");
    #[allow(clippy::disallowed_methods)] // where cargo put it
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    target.join("release/hexidian")
}

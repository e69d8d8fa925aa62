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

#[test]
fn version_names_the_package_version_and_the_commit() {
    let (ok, out, _) = hexidian(&["--version"]);
    assert!(ok);
    let line = out.trim();
    let commit = line
        .strip_prefix(concat!("hexidian ", env!("CARGO_PKG_VERSION"), " (commit "))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    // what git says of this checkout, where there is one
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match git {
        Some(head) if std::env::var_os("HEXIDIAN_COMMIT").is_none() => {
            assert_eq!(commit, head, "{line}");
        }
        _ => assert!(!commit.is_empty(), "{line}"),
    }
}

/// `check-config --offline` on the example: the settings, secrets and certificates are read,
/// no peer is asked (its peers are example addresses); the OMM password from systemd's
/// credentials folder.
#[test]
fn check_config_offline_reads_the_example_with_systemd_credentials() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hexidian.toml");
    let creds = std::env::temp_dir().join(format!("hexidian-creds-{}", std::process::id()));
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("omm-password"), "s3cret-omm\n").unwrap();
    let run = |with_creds: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hexidian"));
        c.args(["check-config", "--offline", "--config", example])
            .env("RUST_LOG", "info")
            .env("HEXIDIAN_GURU3_KEY", "7$abcDEF123")
            .env("HEXIDIAN_WEBHOOK_KEY", "hook-key")
            .env_remove("CREDENTIALS_DIRECTORY");
        if with_creds {
            c.env("CREDENTIALS_DIRECTORY", &creds);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(true);
    assert!(ok, "{err}");
    assert!(err.contains("offline: no peer contacted"), "{err}");
    assert!(!err.contains("s3cret") && !err.contains("abcDEF"), "{err}");
    let (ok, err) = run(false);
    assert!(!ok);
    assert!(
        err.contains("CREDENTIALS_DIRECTORY") && err.contains("LoadCredential"),
        "{err}"
    );
    std::fs::remove_dir_all(&creds).unwrap();
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names), log lines start with their
/// syslog priority and carry no timestamp; elsewhere they carry one.
#[test]
fn log_lines_for_the_journal_have_a_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("hexidian-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hexidian.toml");
    let run = |name: &str, journal: bool| {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let m = file.metadata().unwrap();
        let stream = if journal {
            format!("{}:{}", m.dev(), m.ino())
        } else {
            format!("{}:{}", m.dev(), m.ino() + 1)
        };
        // a check-config that passes (one INFO line), then one that fails (its error)
        for creds in [true, false] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_hexidian"));
            c.args(["check-config", "--offline", "--config", example])
                .env("RUST_LOG", "info")
                .env("JOURNAL_STREAM", &stream)
                .env("HEXIDIAN_GURU3_KEY", "7$abcDEF123")
                .env("HEXIDIAN_WEBHOOK_KEY", "hook-key")
                .env_remove("CREDENTIALS_DIRECTORY")
                .stderr(file.try_clone().unwrap());
            if creds {
                c.env("CREDENTIALS_DIRECTORY", &dir);
            }
            assert_eq!(c.status().unwrap().success(), creds);
        }
        std::fs::read_to_string(&path).unwrap()
    };
    std::fs::write(dir.join("omm-password"), "omm").unwrap();
    let journal = run("journal.log", true);
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 2, "{journal}");
    assert!(lines[0].starts_with("<6>"), "{journal}");
    assert!(lines[0].contains("offline"), "{journal}");
    assert!(lines[1].starts_with("<3>hexidian: "), "{journal}");
    assert!(!has_date(&journal), "no timestamp: {journal}");
    let elsewhere = run("file.log", false);
    let first = elsewhere.lines().next().unwrap_or_default();
    assert!(!first.starts_with('<'), "{elsewhere}");
    assert!(has_date(first), "a timestamp: {elsewhere}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether `text` holds an ISO date (`dddd-dd-dd`).
fn has_date(text: &str) -> bool {
    let digit = |b: &u8| b.is_ascii_digit();
    text.as_bytes().windows(10).any(|w| {
        w[..4].iter().all(digit)
            && w[4] == b'-'
            && w[5..7].iter().all(digit)
            && w[7] == b'-'
            && w[8..].iter().all(digit)
    })
}

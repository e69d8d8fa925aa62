//! Workspace hygiene rules as plain tests (ARCHITECTURE.md, STYLE §10).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Member directories listed in the root manifest.
fn members() -> Vec<PathBuf> {
    let manifest = read(&root().join("Cargo.toml"));
    let list = manifest
        .split("members = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    list.split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| root().join(m))
        .collect()
}

/// Package name and its in-workspace dependencies, split into normal and dev.
fn deps(dir: &Path, names: &[String]) -> (String, Vec<String>, Vec<String>) {
    let text = read(&dir.join("Cargo.toml"));
    let mut name = String::new();
    let (mut normal, mut dev) = (Vec::new(), Vec::new());
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let key = line
            .split(['=', '.'])
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if section == "[package]" && key == "name" {
            name = line.split('"').nth(1).unwrap().to_owned();
        }
        // a package may name itself as a dev-dependency to turn on its own test features
        if names.contains(&key) && key != name {
            match section.as_str() {
                "[dependencies]" => normal.push(key),
                "[dev-dependencies]" => dev.push(key),
                _ => {}
            }
        }
    }
    (name, normal, dev)
}

#[test]
fn every_member_opts_into_workspace_lints() {
    for m in members() {
        let text = read(&m.join("Cargo.toml"));
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{} does not opt into [workspace.lints]",
            m.display()
        );
    }
}

#[test]
fn dependency_directions_hold() {
    let dirs = members();
    let names: Vec<String> = dirs.iter().map(|d| deps(d, &[]).0).collect();
    let graph: BTreeMap<String, (Vec<String>, Vec<String>)> = dirs
        .iter()
        .map(|d| {
            let (n, normal, dev) = deps(d, &names);
            (n, (normal, dev))
        })
        .collect();
    let leaves = ["omm-axi", "guru3-client", "asterisk-realtime"];
    // the one back-off every crate may use
    let backoff = |d: &&String| d.as_str() == "exp-backoff";
    for (name, (normal, dev)) in &graph {
        assert!(
            !normal.iter().any(|d| d == "hexidian-e2e"),
            "{name} depends on the end-to-end test world (a dev-dependency at most)"
        );
        let all: Vec<&String> = normal.iter().chain(dev).collect();
        match name.as_str() {
            n if leaves.contains(&n) => assert!(
                normal.iter().all(|d| backoff(&d)),
                "{n} is a reusable leaf but depends on {normal:?}"
            ),
            "exp-backoff" | "hexidian-testkit" => {
                assert!(all.is_empty(), "{name} must not depend on {all:?}")
            }
            "broker-core" => assert!(all.iter().all(backoff), "{name} must not depend on {all:?}"),
            "hexidian-state" => assert!(
                normal
                    .iter()
                    .all(|d| ["asterisk-realtime", "broker-core", "exp-backoff"]
                        .contains(&d.as_str())),
                "{name} depends on {normal:?}"
            ),
            // DECT provisioning: over the OMM client only, reusable without hexidian
            "omm-provision" => assert!(
                normal
                    .iter()
                    .all(|d| ["omm-axi", "exp-backoff"].contains(&d.as_str())),
                "{name} depends on {normal:?}"
            ),
            "unbound-handsets" => assert!(
                normal.iter().all(|d| d == "broker-core"),
                "{name} depends on {normal:?}"
            ),
            n if n.ends_with("-sim") => {
                let client = n.trim_end_matches("-sim");
                assert!(
                    !all.iter().any(|d| *d == client),
                    "{n} must not depend on the client it simulates"
                );
                assert!(
                    normal.iter().all(|d| d == "hexidian-testkit"),
                    "{n} depends on {normal:?}"
                );
            }
            "hexidian" => {
                let allowed = [
                    "broker-core",
                    "unbound-handsets",
                    "guru3-client",
                    "omm-axi",
                    "omm-provision",
                    "asterisk-realtime",
                    "hexidian-state",
                    "exp-backoff",
                ];
                assert!(
                    normal.iter().all(|d| allowed.contains(&d.as_str())),
                    "the production binary depends on {normal:?}"
                );
                // the production binary: no simulator, no testkit, no fakes, no demo
                assert!(
                    !normal.iter().any(|d| d.ends_with("-sim")
                        || d == "hexidian-testkit"
                        || d == "hexidian-demo"),
                    "the production binary depends on {normal:?}"
                );
                let text = read(&root().join("bins/hexidian/Cargo.toml"));
                let deps = text.split("[dev-dependencies]").next().unwrap_or_default();
                assert!(
                    !deps.contains("fakes"),
                    "the production binary turns on broker-core's fakes"
                );
            }
            "hexidian-demo" => assert!(
                normal.iter().any(|d| d == "hexidian"),
                "the demo runs the production library, not a copy of it"
            ),
            // the end-to-end tests: their library is the test world (simulators, throwaway
            // database, the demo's seeding), which only tests may use (checked below)
            "hexidian-e2e" => {}
            other => assert!(
                !normal.iter().any(|d| d == "hexidian-demo"),
                "{other} depends on the demo (a dev-dependency at most)"
            ),
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_the_two_store_crates_write_sql() {
    // asterisk-realtime writes what Asterisk reads, hexidian-state what hexidian keeps;
    // tests and the demo load Asterisk's own schema from fixtures, which is not ours
    let writers = ["asterisk-realtime", "hexidian-state"];
    let statements = [
        "INSERT INTO",
        "DELETE FROM",
        "UPDATE hexidian",
        "UPDATE ps_",
        "CREATE TABLE",
        "ALTER TABLE",
        "DROP TABLE",
        "CREATE VIEW",
        "TRUNCATE ",
    ];
    let mut checked = 0;
    for m in members() {
        let (name, _, _) = deps(&m, &[]);
        if writers.contains(&name.as_str()) {
            continue;
        }
        let manifest = read(&m.join("Cargo.toml"));
        let normal = manifest
            .split("[dev-dependencies]")
            .next()
            .unwrap_or_default();
        let links_pg = normal
            .lines()
            .any(|l| l.trim_start().starts_with("tokio-postgres"));
        assert!(
            // the test world reads the PBX tables to compare them with GURU3
            !links_pg || ["hexidian", "hexidian-testkit", "hexidian-e2e"].contains(&name.as_str()),
            "{name} links tokio-postgres: SQL belongs in {writers:?}"
        );
        let mut files = Vec::new();
        rust_files(&m.join("src"), &mut files);
        // this file names the statements it looks for
        files.retain(|f| !f.ends_with("testkit/src/tidy.rs"));
        for f in files {
            let full = read(&f);
            let code = full.split("#[cfg(test)]").next().unwrap_or_default();
            for s in statements {
                assert!(
                    !code.contains(s),
                    "{} holds `{s}`: SQL belongs in {writers:?}",
                    f.display()
                );
            }
            if name == "hexidian" {
                // the binary parses connection strings (for the Asterisk kit), nothing more
                for used in code.split("tokio_postgres::").skip(1) {
                    assert!(
                        used.starts_with("Config") || used.starts_with("config::Host"),
                        "{} uses tokio_postgres::{}",
                        f.display(),
                        used.chars().take(30).collect::<String>()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} files checked");
}

#[test]
fn proto_modules_do_no_io() {
    let mut files = Vec::new();
    for m in members() {
        rust_files(&m.join("src/proto"), &mut files);
    }
    // guru3-client keeps its sans-IO part in top-level modules
    for f in ["message.rs", "types.rs", "inbound.rs"] {
        files.push(root().join("crates/guru3-client/src").join(f));
    }
    assert!(!files.is_empty(), "no proto modules found");
    for f in files {
        let full = read(&f);
        // unit tests may make up instants; only the module's own code is checked
        let text = full.split("#[cfg(test)]").next().unwrap_or_default();
        for banned in [
            "tokio",
            "rustls",
            "std::net",
            "std::fs",
            "Instant::now",
            "SystemTime::now",
        ] {
            assert!(
                !text.contains(banned),
                "{} mentions `{banned}`: proto code must not do I/O or read the clock",
                f.display()
            );
        }
    }
}

#[test]
fn every_fixture_directory_has_a_readme() {
    for e in std::fs::read_dir(root().join("fixtures"))
        .unwrap()
        .flatten()
    {
        if e.path().is_dir() {
            assert!(
                e.path().join("README.md").exists(),
                "{} has no README.md",
                e.path().display()
            );
        }
    }
}

#[test]
fn no_unreviewed_snapshots() {
    fn walk(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() && name != "target" && !name.starts_with('.') {
                walk(&p);
            } else {
                assert!(
                    !name.ends_with(".snap.new") && !name.ends_with(".pending-snap"),
                    "unreviewed snapshot {}",
                    p.display()
                );
            }
        }
    }
    walk(&root().join("crates"));
}

#[tokio::test]
async fn throwaway_postgres_works_for_root_and_non_root() {
    let db = crate::pg::TestDb::new().await;
    let client = db.connect().await;
    let row = client.query_one("SELECT current_user::text, current_setting('server_encoding'), current_setting('fsync')", &[]).await.unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0).as_str(),
            row.get::<_, String>(1).as_str(),
            row.get::<_, String>(2).as_str()
        ),
        ("postgres", "UTF8", "off")
    );
    let other = crate::pg::TestDb::new().await;
    assert_ne!(db.name(), other.name());
}

//! A throwaway PostgreSQL server for tests, from the machine's own binaries.
//!
//! One server per test binary (started on first use, stopped when the last [`TestDb`] is
//! dropped), one fresh database per test. The cluster comes from a template made by `initdb`
//! once per test binary (UTF8, trust auth, no sync) and copied; the postmaster listens only on a
//! Unix socket in a short directory under `/tmp`, with fsync off. When the tests run as root,
//! `initdb` and `postgres` run as the `postgres` (or `nobody`) system user, because PostgreSQL
//! refuses to run as root. Directories of killed test runs are reaped on the next start.
//!
//! Binaries are looked up in `HEXIDIAN_PG_BIN`, then `pg_config --bindir`, then the newest
//! `/usr/lib/postgresql/*/bin`, then `PATH`. Without them the test fails and says what to
//! install; it never skips.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

const PREFIX: &str = "hxpg-";
/// The cluster's superuser. Not `hexidian`: the tests that follow the documented set-up
/// create that role with the shipped roles file and connect hexidian as it.
const SUPERUSER: &str = "postgres";

#[derive(Debug, Clone)]
struct Env {
    bin: PathBuf,
    /// uid/gid to run the server as (when the tests run as root).
    run_as: Option<(u32, u32)>,
}

fn has_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// Where the PostgreSQL server binaries are (`HEXIDIAN_PG_BIN`, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`, then `PATH`), or what to install.
pub fn server_binaries() -> Result<PathBuf, String> {
    find_bin()
}

fn find_bin() -> Result<PathBuf, String> {
    #[allow(clippy::disallowed_methods)] // testkit reads its one setting from the environment
    if let Ok(dir) = std::env::var("HEXIDIAN_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_binaries(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "HEXIDIAN_PG_BIN={} has no initdb/pg_ctl/postgres",
                dir.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_binaries(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| has_binaries(p))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    #[allow(clippy::disallowed_methods)] // PATH lookup
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').map(PathBuf::from) {
        if has_binaries(&dir) {
            return Ok(dir);
        }
    }
    Err(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the \
         `postgresql` package or set HEXIDIAN_PG_BIN to their directory"
            .to_owned(),
    )
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid/gid of `postgres`, else `nobody`, from /etc/passwd.
fn service_user() -> Result<(u32, u32), String> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("reading /etc/passwd: {e}"))?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == wanted {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    return Ok((uid, gid));
                }
            }
        }
    }
    Err("running as root, but there is neither a `postgres` nor a `nobody` user to run PostgreSQL as".into())
}

fn env() -> Result<Env, String> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let bin = find_bin()?;
        let run_as = if is_root() {
            Some(service_user()?)
        } else {
            None
        };
        Ok(Env { bin, run_as })
    })
    .clone()
}

fn run(env: &Env, program: &str, args: &[&str]) -> Result<Output, String> {
    let mut cmd = Command::new(env.bin.join(program));
    cmd.args(args).env("LC_ALL", "C").env("TZ", "UTC");
    if let Some((uid, gid)) = env.run_as {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn make_dir(env: &Env, path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    if let Some((uid, gid)) = env.run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stops and removes directories left by test processes that no longer exist.
fn reap_stale(env: &Env) {
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let data = e.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = run(
                env,
                "pg_ctl",
                &[
                    "stop",
                    "-m",
                    "immediate",
                    "-w",
                    "-D",
                    &data.to_string_lossy(),
                ],
            );
        }
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// The initdb'd template cluster of this test process.
fn template(env: &Env) -> Result<PathBuf, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            reap_stale(env);
            let root = PathBuf::from(format!("/tmp/{PREFIX}{}-tpl", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            make_dir(env, &root)?;
            let data = root.join("data");
            run(
                env,
                "initdb",
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
            )?;
            Ok(data)
        })
        .clone()
}

/// A running server; stopped (`pg_ctl stop -m immediate`) and removed on drop.
#[derive(Debug)]
pub struct PgServer {
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    env: Env,
    opts: String,
}

impl PgServer {
    fn start() -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let env = env()?;
        let tpl = template(&env)?;
        let root = PathBuf::from(format!(
            "/tmp/{PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        make_dir(&env, &root)?;
        let data = root.join("data");
        let status = Command::new("cp")
            .args(["-a", &tpl.to_string_lossy(), &data.to_string_lossy()])
            .status()
            .map_err(|e| format!("copying the template cluster: {e}"))?;
        if !status.success() {
            return Err("copying the template cluster failed".into());
        }
        let socket_dir = root.clone();
        let opts = format!(
            "-k {} -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB",
            socket_dir.display()
        );
        let server = Self {
            root,
            data,
            socket_dir,
            env,
            opts,
        };
        server.pg_ctl_start()?;
        Ok(server)
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.root.join("log");
        run(
            &self.env,
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-s",
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &self.opts,
            ],
        )
        .map(drop)
        .map_err(|e| {
            format!(
                "{e}\nserver log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Stops the server (`pg_ctl stop -m fast`): clients see their connections closed and
    /// new connections refused, as when an operator stops PostgreSQL.
    pub fn stop(&self) -> Result<(), String> {
        run(
            &self.env,
            "pg_ctl",
            &[
                "stop",
                "-m",
                "fast",
                "-w",
                "-s",
                "-D",
                &self.data.to_string_lossy(),
            ],
        )
        .map(drop)
    }

    /// Starts a stopped server again, on the same socket.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    /// Directory of the Unix socket (use as `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = run(
            &self.env,
            "pg_ctl",
            &[
                "stop",
                "-m",
                "immediate",
                "-w",
                "-s",
                "-D",
                &self.data.to_string_lossy(),
            ],
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn shared_server() -> Arc<PgServer> {
    static SERVER: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
    let mut slot = SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = slot.upgrade() {
        return s;
    }
    let server =
        Arc::new(PgServer::start().unwrap_or_else(|e| panic!("throwaway PostgreSQL: {e}")));
    *slot = Arc::downgrade(&server);
    server
}

/// A fresh, empty database on the test binary's server. Keep it alive for the whole test.
#[derive(Debug)]
pub struct TestDb {
    server: Arc<PgServer>,
    name: String,
}

impl TestDb {
    /// Creates a new database (panics with a clear message if PostgreSQL is unavailable).
    pub async fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let server = shared_server();
        let name = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
        let db = Self { server, name };
        let admin = db.connect_to("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", db.name))
            .await
            .expect("create test database");
        db
    }

    /// A database on a server of its own, for a test that stops or restarts PostgreSQL
    /// (the shared server must stay up for the other tests).
    pub async fn dedicated() -> Self {
        let server =
            Arc::new(PgServer::start().unwrap_or_else(|e| panic!("throwaway PostgreSQL: {e}")));
        let db = Self {
            server,
            name: "hexidian".into(),
        };
        let admin = db.connect_to("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", db.name))
            .await
            .expect("create test database");
        db
    }

    /// Database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server.
    pub fn server(&self) -> &PgServer {
        &self.server
    }

    /// Connection settings for this database (superuser, Unix socket).
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(self.server.socket_dir())
            .user(SUPERUSER)
            .dbname(&self.name);
        c
    }

    /// A libpq-style connection string for this database (superuser).
    pub fn url(&self) -> String {
        self.url_as(SUPERUSER)
    }

    /// A libpq-style connection string for this database as `role` (trust authentication:
    /// no password).
    pub fn url_as(&self, role: &str) -> String {
        format!(
            "host={} user={role} dbname={}",
            self.server.socket_dir().display(),
            self.name
        )
    }

    /// Runs `sql` as the superuser on this database, one such script at a time in this test
    /// process: for scripts that create or alter roles, which belong to the whole server.
    pub async fn run_as_superuser_alone(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = ONE.lock().await;
        self.connect().await.batch_execute(sql).await
    }

    /// A connected client (its connection task is spawned on the current runtime).
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_to(&self.name).await
    }

    async fn connect_to(&self, dbname: &str) -> tokio_postgres::Client {
        let mut c = self.config();
        c.dbname(dbname);
        let (client, conn) = c
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test postgres: {e}\n{}", self.server.log()));
        tokio::spawn(conn);
        client
    }
}

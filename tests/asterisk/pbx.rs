//! A real Asterisk in a throw-away directory: the relocatable build from `../shared/asterisk/`
//! (or `HEXIDIAN_ASTERISK`: a tarball, or an installed tree with `sbin/asterisk`), started on
//! loopback with the kit `hexidian asterisk-config` wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the Asterisk tree comes from, or why there is none.
fn source() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("HEXIDIAN_ASTERISK") {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("HEXIDIAN_ASTERISK={} does not exist", p.display()))
        };
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/asterisk");
    let tarball = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("asterisk-") && n.ends_with(".tar.xz"))
        });
    tarball.ok_or_else(|| format!("no asterisk-*.tar.xz in {}", dir.display()))
}

/// The root of an extracted (once per test process) or installed tree: `sbin/asterisk`
/// and `lib/asterisk/modules` below it.
pub(crate) fn tree() -> Result<PathBuf, String> {
    static TREE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TREE.get_or_init(|| {
        let src = source()?;
        if src.is_dir() {
            return if src.join("sbin/asterisk").exists() {
                Ok(src)
            } else {
                Err(format!("{} has no sbin/asterisk", src.display()))
            };
        }
        let out = std::env::temp_dir().join(format!("hexidian-asterisk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let status = Command::new("tar")
            .arg("-xJf")
            .arg(&src)
            .arg("-C")
            .arg(&out)
            .status()
            .map_err(|e| format!("tar: {e}"))?;
        if !status.success() {
            return Err(format!("extracting {} failed", src.display()));
        }
        let root = std::fs::read_dir(&out)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.join("sbin/asterisk").exists())
            .ok_or_else(|| format!("{} holds no sbin/asterisk", src.display()))?;
        Ok(root)
    })
    .clone()
}

/// Debian's prompts (`asterisk-core-sounds-en-gsm`), or `HEXIDIAN_ASTERISK_SOUNDS`.
pub(crate) fn sounds() -> Option<PathBuf> {
    let p = std::env::var_os("HEXIDIAN_ASTERISK_SOUNDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/asterisk/sounds"));
    p.join("en").is_dir().then_some(p)
}

/// A running Asterisk; stopped and its directory removed on drop (kept with
/// `HEXIDIAN_KEEP_ASTERISK=1`, for a look at its logs).
pub(crate) struct Asterisk {
    dir: PathBuf,
    bin: PathBuf,
    child: Child,
}

impl Asterisk {
    /// Starts Asterisk with the kit files in `kit` and waits until it has fully booted.
    pub(crate) async fn start(kit: &Path) -> Result<Self, String> {
        let root = tree()?;
        let dir = tempdir("ast")?;
        for d in [
            "etc",
            "run",
            "log",
            "spool",
            "lib",
            "db",
            "keys/keys",
            "data",
        ] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        if let Some(s) = sounds() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(s, dir.join("data/sounds")).map_err(|e| e.to_string())?;
        }
        let modules = std::env::var_os("HEXIDIAN_ASTERISK_MODULES")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("lib/asterisk/modules"));
        let etc = dir.join("etc");
        let conf = format!(
            "[directories]\nastetcdir => {d}/etc\nastmoddir => {m}\nastvarlibdir => {d}/lib\n\
             astdbdir => {d}/db\nastkeydir => {d}/keys\nastdatadir => {d}/data\n\
             astspooldir => {d}/spool\nastrundir => {d}/run\nastlogdir => {d}/log\n\
             astsbindir => {r}/sbin\n[options]\nverbose = 3\n",
            d = dir.display(),
            m = modules.display(),
            r = root.display()
        );
        let write = |name: &str, text: &str| {
            std::fs::write(etc.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("asterisk.conf", &conf)?;
        write("modules.conf", "[modules]\nautoload = yes\n")?;
        write(
            "logger.conf",
            "[general]\n[logfiles]\nmessages.log => notice,warning,error,verbose\n",
        )?;
        // the kit exactly as generated
        for e in std::fs::read_dir(kit).map_err(|e| e.to_string())? {
            let p = e.map_err(|e| e.to_string())?.path();
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, etc.join(name)).map_err(|e| e.to_string())?;
            }
        }
        let bin = root.join("sbin/asterisk");
        let out = std::fs::File::create(dir.join("asterisk.out")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .arg("-C")
            .arg(etc.join("asterisk.conf"))
            .args(["-f", "-n"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let a = Self { dir, bin, child };
        let t0 = Instant::now();
        loop {
            if a.cli("core waitfullybooted").contains("fully booted") {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("asterisk did not boot in 30 s:\n{}", a.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(a)
    }

    /// One CLI command (`asterisk -rx`), its output.
    pub(crate) fn cli(&self, command: &str) -> String {
        Command::new(&self.bin)
            .arg("-C")
            .arg(self.dir.join("etc/asterisk.conf"))
            .arg("-rx")
            .arg(command)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The ids `pjsip show endpoints` lists.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cli("pjsip show endpoints")
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("Endpoint:"))
            .filter_map(|rest| rest.split_whitespace().next())
            .filter(|w| !w.starts_with('<'))
            .map(|w| w.split('/').next().unwrap_or(w).to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Asterisk's `messages.log`.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/messages.log")).unwrap_or_default()
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        // nothing of this Asterisk needs to survive: no graceful shutdown
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("HEXIDIAN_KEEP_ASTERISK").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("asterisk directory kept: {}", self.dir.display());
        }
    }
}

/// A fresh directory under the system's temp dir.
pub(crate) fn tempdir(what: &str) -> Result<PathBuf, String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "hexidian-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

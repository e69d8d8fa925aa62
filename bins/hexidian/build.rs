//! Records the commit the binary is built from, for `hexidian --version`: `HEXIDIAN_COMMIT`
//! if set (a build from a source tarball or a container context without `.git`), else what
//! `git rev-parse` says, else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HEXIDIAN_COMMIT");
    #[allow(clippy::disallowed_methods)] // a build script's input
    let commit = std::env::var("HEXIDIAN_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HEXIDIAN_COMMIT={}", commit.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // build again when HEAD moves: HEAD itself, the branch it names, packed refs
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&dir);
        let head = dir.join("HEAD");
        let branch = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.trim().strip_prefix("ref: ").map(|r| dir.join(r)));
        // a path that does not exist would run this script on every build
        for p in [Some(head), branch, Some(dir.join("packed-refs"))]
            .into_iter()
            .flatten()
            .filter(|p| p.exists())
        {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    Some(commit)
}

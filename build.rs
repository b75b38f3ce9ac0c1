//! Records the git commit for `--version` and the build-info metric; "unknown" without git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OP_SIDECAR_GIT_COMMIT");
    // A build without .git (the container image) passes the commit in.
    let commit = std::env::var("OP_SIDECAR_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty() && s != "unknown")
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OP_SIDECAR_GIT_COMMIT={commit}");
    // Re-run when HEAD moves (a worktree's .git is a file, so ask git where HEAD lives). No
    // git at all (a source tarball, a Docker context without .git) is fine.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &r]));
        watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watch.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

//! Build info: the git revision Steward is built from (`steward --version`,
//! `steward_build_info`): `STEWARD_BUILD_REVISION` when set, else the checkout's HEAD, else
//! `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    // A build without the git directory (a container build) may name its revision.
    println!("cargo:rerun-if-env-changed=STEWARD_BUILD_REVISION");
    let given = std::env::var("STEWARD_BUILD_REVISION")
        .ok()
        .filter(|revision| !revision.trim().is_empty());
    let revision = given
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STEWARD_GIT_REVISION={revision}");
    println!("cargo:rerun-if-changed=build.rs");
    // Built again when HEAD moves: the file naming the branch, the branch's ref, packed refs
    // (paths as git resolves them, worktrees included). Only paths that exist: cargo runs a
    // build script again on every build while a path it watches is missing.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}

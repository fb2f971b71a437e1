//! Build script: records what `pgboot --version` reports besides the crate
//! version, so a binary found in an image or a bug report says where it came
//! from: the git revision it was built from, the target triple (musl or glibc,
//! `x86_64` or `aarch64`) and the cargo profile.
//!
//! Outside a git checkout (a crates.io tarball, `cargo install pgboot`) the
//! revision is "unknown"; `PGBOOT_GIT_REVISION` in the environment overrides
//! it (a release build from an exported tree).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn revision() -> String {
    println!("cargo:rerun-if-env-changed=PGBOOT_GIT_REVISION");
    if let Ok(rev) = std::env::var("PGBOOT_GIT_REVISION") {
        return rev;
    }
    // Only a checkout of pgboot itself counts: a crate unpacked inside some
    // other repository must not report that repository's revision.
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let top = git(&[
        "-C",
        &manifest_dir.to_string_lossy(),
        "rev-parse",
        "--show-toplevel",
    ]);
    if top.map(PathBuf::from) != Some(manifest_dir.clone()) {
        return "unknown".to_owned();
    }
    let dir = manifest_dir.to_string_lossy().into_owned();
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it
    // points at (a commit), wherever a worktree keeps them.
    for path in [
        git(&["-C", &dir, "rev-parse", "--git-path", "HEAD"]),
        git(&["-C", &dir, "rev-parse", "--symbolic-full-name", "HEAD"])
            .and_then(|r| git(&["-C", &dir, "rev-parse", "--git-path", &r])),
        git(&["-C", &dir, "rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    {
        let path = manifest_dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let Some(rev) = git(&["-C", &dir, "rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // Uncommitted changes to tracked files make the revision a lie: say so.
    let dirty = git(&["-C", &dir, "status", "--porcelain", "--untracked-files=no"]).is_some();
    if dirty { format!("{rev}-dirty") } else { rev }
}

fn main() {
    println!("cargo:rustc-env=PGBOOT_GIT_REVISION={}", revision());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=PGBOOT_TARGET={target}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=PGBOOT_PROFILE={profile}");
}

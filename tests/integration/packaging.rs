//! What a shipped binary says about itself: `--version` names the git
//! revision it was built from, its target triple and its cargo profile, so a
//! binary found in an image or attached to a bug report can be traced.
//! (The images, compose stack and manifests are checked by
//! `scripts/lint-packaging` and `scripts/test-containers`.)

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::pgboot::{pgboot, run};

const T: Duration = Duration::from_secs(10);

/// The checkout's HEAD as build.rs abbreviates it, or None outside git.
fn head_revision() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_revision_target_and_profile() {
    let (code, out, err) = run(pgboot(&["--version"]), T);
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    let details = line
        .strip_prefix(&format!("pgboot {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| {
            panic!("expected 'pgboot VERSION (REVISION TARGET PROFILE)', got {line:?}")
        });
    let fields: Vec<&str> = details.split(' ').collect();
    let [revision, target, profile] = fields[..] else {
        panic!("expected three build details, got {details:?}");
    };

    match head_revision() {
        // The build script runs when HEAD moves, not on every edit, so the
        // "-dirty" mark may lag; the commit itself may not.
        Some(head) => assert_eq!(revision.trim_end_matches("-dirty"), head, "{line}"),
        None => assert_eq!(revision, "unknown", "{line}"),
    }
    assert!(
        target.starts_with(&format!("{}-", std::env::consts::ARCH)) && target.contains("-linux-"),
        "target {target:?} is not this machine's {} Linux",
        std::env::consts::ARCH
    );
    let expected_profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    assert_eq!(profile, expected_profile, "{line}");
}

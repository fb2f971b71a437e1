//! Preflight: what is local is checked before waiting for Postgres, so a
//! typo fails in milliseconds, not after `--wait-timeout`, and never after
//! migrations were applied.
//!
//! Needs the configuration. Returns nothing, or the error: the migrations
//! directory and its files (64 for a missing directory, 65 for a file that
//! would fail or lie — see `migrate::load_dir`), and the executables of the
//! migration command and of COMMAND (127 not found, 126 not executable), as
//! `execvp` would find them. An empty migrations directory is allowed (a
//! new project) but said loudly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::config::MigrateConfig;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::migrate;

/// Checks the migrations: the directory and its files, or the command's executable.
///
/// # Errors
/// As [`migrate::load_dir`] and [`executable`].
pub fn migrations(m: &MigrateConfig) -> Result<()> {
    if let Some(dir) = &m.dir
        && migrate::load_dir(dir)?.is_empty()
    {
        tracing::warn!(
            dir = %dir.display(),
            "--migrations names a directory with no migration files: nothing will be applied; \
             is it the right directory (a volume not mounted, a wrong path)?"
        );
    }
    if let Some(argv) = &m.command {
        executable(
            OsStr::new(&argv[0]),
            "the migration command (--migrate-cmd)",
        )?;
    }
    Ok(())
}

/// Finds `program` as `execvp` would: a path when it holds a `/`, else the
/// first match along `PATH`.
///
/// # Errors
/// 127 when nothing by that name exists, 126 when what exists cannot be
/// executed (not a regular file, or no execute permission).
pub fn executable(program: &OsStr, what: &str) -> Result<PathBuf> {
    let shown = program.to_string_lossy();
    let candidates: Vec<PathBuf> = if shown.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .map(|d| d.join(program))
            .collect()
    };
    let mut found_unusable: Option<PathBuf> = None;
    for c in candidates {
        match runnable(&c) {
            Some(true) => return Ok(c),
            Some(false) => {
                found_unusable.get_or_insert(c);
            }
            None => {}
        }
    }
    match found_unusable {
        Some(p) => Err(Error::Spawn {
            message: format!(
                "{what}: {} cannot be executed (not a regular file with execute permission); \
                 fix its mode or the path",
                p.display()
            ),
            exit: Exit::NotExecutable,
        }),
        None => Err(Error::Spawn {
            message: format!(
                "{what}: `{shown}` not found{}; check the name, or install it in the image",
                if shown.contains('/') { "" } else { " in PATH" }
            ),
            exit: Exit::NotFound,
        }),
    }
}

/// `Some(true)` for an executable regular file, `Some(false)` for something
/// that exists but cannot be run, `None` for nothing there.
fn runnable(p: &Path) -> Option<bool> {
    let meta = std::fs::metadata(p).ok()?;
    // access(2) answers for this process: root may run any file with an
    // execute bit, others need the bit that applies to them.
    Some(meta.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_along_path_and_by_path() {
        assert!(executable(OsStr::new("sh"), "COMMAND").is_ok());
        assert!(executable(OsStr::new("/bin/sh"), "COMMAND").is_ok());
        let e = executable(OsStr::new("no-such-program-pgboot"), "COMMAND").unwrap_err();
        assert_eq!(e.exit(), Exit::NotFound);
        assert!(e.to_string().contains("not found in PATH"), "{e}");
        let e = executable(OsStr::new("/etc/passwd"), "COMMAND").unwrap_err();
        assert_eq!(e.exit(), Exit::NotExecutable);
        let e = executable(OsStr::new("/etc"), "COMMAND").unwrap_err();
        assert_eq!(e.exit(), Exit::NotExecutable);
    }
}

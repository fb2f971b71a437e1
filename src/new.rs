//! `pgboot new NAME`: a new migration file for the built-in runner, named
//! as sqlx names them (`<YYYYMMDDHHMMSS>_<NAME>.sql`, or an `.up.sql` /
//! `.down.sql` pair with `--reversible`).
//!
//! Needs the validated name and the directory (created if missing). Returns
//! the paths written. Refuses (64) a name another migration of the directory
//! already has; never overwrites a file. No database.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// One file, or sqlx's reversible pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<version>_<name>.sql`.
    Simple,
    /// `<version>_<name>.up.sql` and `<version>_<name>.down.sql`.
    Reversible,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewConfig {
    /// The migration's name (validated by [`check_name`]).
    pub name: String,
    /// The migrations directory.
    pub dir: PathBuf,
    /// One file or a pair.
    pub layout: Layout,
}

/// The longest name taken: file names stay well under the 255-byte limit.
const MAX_NAME: usize = 100;

/// A name sqlx reads back as the migration's description: ASCII letters,
/// digits, `_` and `-`, starting with a letter or digit.
///
/// # Errors
/// What is wrong with it, and what to write instead.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let suggestion = || {
        name.trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    if name.is_empty() {
        return Err("empty; name the migration, e.g. `add_users`".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "longer than {MAX_NAME} characters; use a shorter name"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "only ASCII letters, digits, `_` and `-` are allowed in a migration's name; e.g. `{}`",
            suggestion()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or a digit".into());
    }
    Ok(())
}

/// The version and name of a migration file (`12_add_users.up.sql` →
/// `(12, "add_users")`), or `None` for any other file.
fn parse_file_name(file: &str) -> Option<(i64, &str)> {
    let stem = file
        .strip_suffix(".up.sql")
        .or_else(|| file.strip_suffix(".down.sql"))
        .or_else(|| file.strip_suffix(".sql"))?;
    let (version, name) = stem.split_once('_')?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((version.parse().ok()?, name))
}

/// Creates the file (or pair); returns the paths written.
///
/// # Errors
/// 64: the name is taken in the directory, or the directory cannot be
/// created or written.
pub fn create(cfg: &NewConfig) -> Result<Vec<PathBuf>> {
    let cannot = |what: &str, path: &Path, e: &std::io::Error| {
        Error::Usage(format!(
            "cannot {what} {}: {e}; check the path given by --migrations (PGBOOT_MIGRATIONS)",
            path.display()
        ))
    };
    std::fs::create_dir_all(&cfg.dir).map_err(|e| cannot("create", &cfg.dir, &e))?;
    let entries = std::fs::read_dir(&cfg.dir).map_err(|e| cannot("read", &cfg.dir, &e))?;
    let mut highest = 0;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some((version, name)) = file.to_str().and_then(parse_file_name) else {
            continue;
        };
        if name.eq_ignore_ascii_case(&cfg.name) {
            return Err(Error::Usage(format!(
                "a migration named {:?} exists already: {}; choose another name",
                cfg.name,
                cfg.dir.join(&file).display()
            )));
        }
        highest = highest.max(version);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let stamp: i64 = crate::civil::compact(now).parse().unwrap_or(0);
    // Above every version there is, so the new file sorts (and applies) last
    // even within the same second, or after a file dated in the future.
    let version = stamp.max(highest.saturating_add(1));
    let files: Vec<(String, String)> = match cfg.layout {
        Layout::Simple => vec![(format!("{version}_{}.sql", cfg.name), body(&cfg.name, "up"))],
        Layout::Reversible => vec![
            (
                format!("{version}_{}.up.sql", cfg.name),
                body(&cfg.name, "up"),
            ),
            (
                format!("{version}_{}.down.sql", cfg.name),
                body(&cfg.name, "down"),
            ),
        ],
    };
    let mut written = Vec::new();
    for (file, text) in files {
        let path = cfg.dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| cannot("create", &path, &e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| cannot("write", &path, &e))?;
        written.push(path);
    }
    Ok(written)
}

fn body(name: &str, direction: &str) -> String {
    let what = if direction == "down" {
        "undoes"
    } else {
        "applies"
    };
    format!(
        "-- {name}: the SQL this migration {what}.\n\
         -- pgboot refuses a file with no statement, so this one is not applied until it has one.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_suggestion() {
        assert!(check_name("add_users").is_ok());
        assert!(check_name("2fa-codes").is_ok());
        let e = check_name("add users").unwrap_err();
        assert!(e.contains("add_users"), "{e}");
        assert!(check_name("").is_err());
        assert!(check_name("_x").is_err());
        assert!(check_name("../etc").is_err());
        assert!(check_name(&"a".repeat(101)).is_err());
    }

    #[test]
    fn file_names_parse_as_sqlx_reads_them() {
        assert_eq!(
            parse_file_name("20260101000000_add_users.sql"),
            Some((20_260_101_000_000, "add_users"))
        );
        assert_eq!(parse_file_name("3_x.up.sql"), Some((3, "x")));
        assert_eq!(parse_file_name("3_x.down.sql"), Some((3, "x")));
        assert_eq!(parse_file_name("README.md"), None);
        assert_eq!(parse_file_name("v3_x.sql"), None);
    }
}

//! libpq's password file (`passfile`, `PGPASSFILE`, else `~/.pgpass`): the
//! password for a host, port, database and user, when none is given.
//!
//! Lines are `hostname:port:database:username:password`, `*` matches
//! anything, `\` escapes `:` and `\`, `#` starts a comment; the first
//! matching line wins. As in libpq, a file others may read is ignored with
//! a warning, and a missing file is no error.
//!
//! See: <https://www.postgresql.org/docs/current/libpq-pgpass.html>.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What a password-file line is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    /// The host name as given, or `localhost` for the default socket.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// The database name.
    pub database: &'a str,
    /// The user name.
    pub user: &'a str,
}

/// The password `file` holds for `key`, if it holds one and may be used.
#[must_use]
pub fn lookup(file: &Path, key: Key<'_>) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %file.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less: ignored, as libpq does"
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    find(&text, key)
}

/// The password of the first line of `text` that matches `key`.
fn find(text: &str, key: Key<'_>) -> Option<String> {
    let port = key.port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split(line);
            let [host, p, db, user, password] = fields.as_slice() else {
                return None;
            };
            let ok = |field: &str, want: &str| field == "*" || field == want;
            (ok(host, key.host) && ok(p, &port) && ok(db, key.database) && ok(user, key.user))
                .then(|| password.clone())
        })
}

/// Splits a line at unescaped `:`, unescaping `\:` and `\\`; the last field
/// takes the rest of the line.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let last = fields.len() - 1;
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields[last].push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields[last].push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key<'static> = Key {
        host: "db1",
        port: 5432,
        database: "app",
        user: "app",
    };

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text =
            "# comment\nother:5432:app:app:no\ndb1:*:app:app:pa\\:ss\\\\word\ndb1:5432:*:*:later\n";
        assert_eq!(find(text, KEY).as_deref(), Some("pa:ss\\word"));
        assert_eq!(find("*:*:*:*:any:thing", KEY).as_deref(), Some("any:thing"));
        assert_eq!(find("db1:5433:app:app:x", KEY), None);
        assert_eq!(find("db1:5432:app", KEY), None);
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let file = std::env::temp_dir().join(format!("pgboot-pgpass-{}", std::process::id()));
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&file, KEY), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&file, KEY).as_deref(), Some("secret"));
        std::fs::remove_file(&file).unwrap();
    }
}

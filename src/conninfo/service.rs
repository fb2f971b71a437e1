//! libpq's connection service file (`pg_service.conf`): a named service's
//! settings, used for what the URL does not set, before the environment.
//!
//! Needs the service's name (`service` in the URL, else `PGSERVICE`) and
//! the environment. Looks in `PGSERVICEFILE` (else `~/.pg_service.conf`),
//! then in `PGSYSCONFDIR/pg_service.conf` (else Debian's
//! `/etc/postgresql-common/pg_service.conf`), as libpq does; the first file
//! that defines the service is the only one read.
//!
//! See: <https://www.postgresql.org/docs/current/libpq-pgservice.html>.

use std::path::{Path, PathBuf};

use crate::conninfo::keywords::{Settings, Source};
use crate::error::Error;

/// Where Debian's libpq looks for the system-wide service file when
/// `PGSYSCONFDIR` is not set.
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The files to search for a service, in libpq's order.
fn candidates(env: &dyn Fn(&str) -> Option<String>) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    match env("PGSERVICEFILE").filter(|v| !v.is_empty()) {
        // Named explicitly: it must exist.
        Some(file) => out.push((PathBuf::from(file), true)),
        None => {
            if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
                out.push((Path::new(&home).join(".pg_service.conf"), false));
            }
        }
    }
    let sysconf = env("PGSYSCONFDIR")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_SYSCONFDIR.to_string());
    out.push((Path::new(&sysconf).join("pg_service.conf"), false));
    out
}

/// Adds the settings of the service `settings` names (if any) to
/// `settings`, under what is already there.
///
/// # Errors
/// The service is defined nowhere, `PGSERVICEFILE` names a file that cannot
/// be read, or the file's entry is malformed or holds a keyword pgboot
/// refuses: 64 when the service was named by `PGSERVICE`, 78 otherwise.
pub fn apply(settings: &mut Settings, env: &dyn Fn(&str) -> Option<String>) -> Result<(), Error> {
    let Some(name) = settings.value("service").map(str::to_string) else {
        return Ok(());
    };
    for (file, required) in candidates(env) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(e) => {
                return Err(settings.invalid(
                    "service",
                    &format!(
                        "cannot be looked up: the service file {} (PGSERVICEFILE) cannot be read: {e}",
                        file.display()
                    ),
                ));
            }
        };
        let Some(entries) = section(&text, &name).map_err(|line| {
            settings.invalid(
                "service",
                &format!(
                    "cannot be used: line {line} of {} is neither [service], key=value nor a # comment",
                    file.display()
                ),
            )
        })?
        else {
            continue;
        };
        for (key, value) in entries {
            if key == "service" {
                return Err(settings.invalid(
                    "service",
                    &format!(
                        "cannot be used: {} nests another service, which libpq forbids",
                        file.display()
                    ),
                ));
            }
            settings.set(&key, value, Source::Service(name.clone(), file.clone()))?;
        }
        return Ok(());
    }
    Err(settings.invalid(
        "service",
        "names a service defined in no service file (looked in PGSERVICEFILE or \
         ~/.pg_service.conf, then PGSYSCONFDIR/pg_service.conf)",
    ))
}

/// The `key=value` lines of section `[name]`, or `None` when the file has
/// no such section; `Err(line number)` for a line that is none of a section
/// header, an assignment, a comment or blank.
fn section(text: &str, name: &str) -> Result<Option<Vec<(String, String)>>, usize> {
    let mut found: Option<Vec<(String, String)>> = None;
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.strip_suffix(']').ok_or(i + 1)?;
            // libpq reads the first section of that name only.
            inside = header == name && found.is_none();
            if inside {
                found = Some(Vec::new());
            }
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(i + 1)?;
        if inside && let Some(entries) = found.as_mut() {
            entries.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# services\n[other]\nhost=elsewhere\n\n[app]\nhost = db1\nport=6543\n  dbname=app\n";

    #[test]
    fn a_section_is_found_by_name() {
        let s = section(FILE, "app").unwrap().unwrap();
        assert_eq!(
            s,
            [
                ("host".to_string(), "db1".to_string()),
                ("port".into(), "6543".into()),
                ("dbname".into(), "app".into())
            ]
        );
        assert_eq!(section(FILE, "missing").unwrap(), None);
        assert_eq!(section("[app]\nnonsense\n", "app"), Err(2));
    }

    #[test]
    fn service_settings_go_under_the_url_and_over_the_environment() {
        let dir = std::env::temp_dir().join(format!("pgboot-service-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pg_service.conf");
        std::fs::write(&file, FILE).unwrap();
        let path = file.display().to_string();
        let env = move |k: &str| (k == "PGSERVICEFILE").then(|| path.clone());
        let mut s = Settings::new("DATABASE_URL");
        s.set("port", "7000".into(), Source::Url).unwrap();
        s.set("service", "app".into(), Source::Url).unwrap();
        apply(&mut s, &env).unwrap();
        assert_eq!(s.value("port"), Some("7000"));
        assert_eq!(s.value("host"), Some("db1"));
        assert!(s.describe("host").contains("service \"app\""));
        let mut s = Settings::new("DATABASE_URL");
        s.set("service", "nope".into(), Source::Env("PGSERVICE"))
            .unwrap();
        let e = apply(&mut s, &env).unwrap_err();
        assert!(matches!(e, Error::Usage(_)) && e.to_string().starts_with("PGSERVICE "));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

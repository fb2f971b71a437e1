//! libpq's connection URI, parsed as libpq parses it: several hosts
//! (`db1:5432,db2:5433`), bracketed IPv6 addresses, a percent-encoded
//! Unix-socket directory as the host (`%2Frun%2Fpostgresql`), and query
//! parameters that are libpq keywords (`?host=/run/postgresql`).
//!
//! Needs the URL and where it came from. Returns its [`Settings`] (all with
//! [`Source::Url`]) and the password as written, for redaction. Errors say
//! what is wrong and never contain the URL or its password.
//!
//! See: <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-URIS>.

use crate::conninfo::keywords::{Settings, Source};
use crate::error::Error;

/// A parsed URL: its settings, and its password exactly as written (it
/// may be percent-encoded), so that messages can be scrubbed of both forms.
#[derive(Debug)]
pub struct Parsed {
    /// The URL's settings.
    pub settings: Settings,
    /// The password as it appears in the URL, when there is one.
    pub raw_password: Option<String>,
}

/// Parses `url`, which came from `origin` (`--database-url (DATABASE_URL)`).
///
/// # Errors
/// A malformed URL (78), naming `origin` and what is wrong, never the URL.
pub fn parse(url: &str, origin: &str) -> Result<Parsed, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "{origin} is not a valid database URL: {why}; write it as \
             postgres://USER:PASSWORD@HOST:PORT/DATABASE and percent-encode \
             special characters in the password"
        ))
    };
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| {
            Error::Config(format!(
                "{origin} is not a postgres:// or postgresql:// URL; \
                 write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ))
        })?;
    let mut settings = Settings::new(origin);
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let before_query = before_query.split('#').next().unwrap_or("");
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };

    let mut raw_password = None;
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            let user = decode(user).map_err(|e| bad(&format!("the user name {e}")))?;
            settings.set("user", user, Source::Url)?;
        }
        if let Some(p) = password {
            raw_password = Some(p.to_string());
            let p = decode(p).map_err(|e| bad(&format!("the password {e}")))?;
            settings.set("password", p, Source::Url)?;
        }
    }

    if !hostlist.is_empty() {
        let (hosts, ports) = split_hosts(hostlist).map_err(|e| bad(&e))?;
        if hosts.iter().any(|h| !h.is_empty()) {
            settings.set("host", hosts.join(","), Source::Url)?;
        }
        if ports.iter().any(|p| !p.is_empty()) {
            settings.set("port", ports.join(","), Source::Url)?;
        }
    }

    if let Some(path) = path.filter(|p| !p.is_empty()) {
        let db = decode(path).map_err(|e| bad(&format!("the database name {e}")))?;
        settings.set("dbname", db, Source::Url)?;
    }

    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad(&format!(
                "the query parameter {} has no value (write key=value)",
                crate::conninfo::printable(&decode(pair).unwrap_or_default())
            )));
        };
        let key = decode(key).map_err(|e| bad(&format!("a query parameter name {e}")))?;
        let value = decode(value).map_err(|e| {
            bad(&format!(
                "the value of {} {e}",
                crate::conninfo::printable(&key)
            ))
        })?;
        settings.set(&key, value, Source::Url)?;
    }
    Ok(Parsed {
        settings,
        raw_password,
    })
}

/// Splits `h1:p1,[::1]:p2,h3` into hosts and ports, each percent-decoded
/// (an empty port means the default).
fn split_hosts(list: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for spec in list.split(',') {
        let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return Err("an IPv6 address lacks its closing `]`".into());
            };
            match after {
                "" => (addr, ""),
                a => match a.strip_prefix(':') {
                    Some(p) => (addr, p),
                    None => return Err("unexpected text after an IPv6 address".into()),
                },
            }
        } else {
            match spec.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (spec, ""),
            }
        };
        hosts.push(decode(host).map_err(|e| format!("a host name {e}"))?);
        ports.push(decode(port).map_err(|e| format!("a port {e}"))?);
    }
    Ok((hosts, ports))
}

/// Percent-decodes `s` as libpq does: `%XX` only (`+` stays `+`), and no
/// `%00`.
fn decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has an invalid percent-encoding (write % as %25)")?;
            if hex == 0 {
                return Err("holds %00, which is forbidden");
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not valid UTF-8 once percent-decoded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    fn value(p: &Parsed, k: &str) -> Option<String> {
        p.settings.value(k).map(str::to_string)
    }

    #[test]
    fn the_usual_url() {
        let p = parse(
            "postgres://app:s3cr%40t@db.example:6543/app?sslmode=require",
            "X",
        )
        .unwrap();
        assert_eq!(value(&p, "user").as_deref(), Some("app"));
        assert_eq!(value(&p, "password").as_deref(), Some("s3cr@t"));
        assert_eq!(p.raw_password.as_deref(), Some("s3cr%40t"));
        assert_eq!(value(&p, "host").as_deref(), Some("db.example"));
        assert_eq!(value(&p, "port").as_deref(), Some("6543"));
        assert_eq!(value(&p, "dbname").as_deref(), Some("app"));
        assert_eq!(value(&p, "sslmode").as_deref(), Some("require"));
    }

    #[test]
    fn several_hosts_ipv6_and_default_ports() {
        let p = parse("postgresql://u@db1:5432,[::1]:5433,db3/app", "X").unwrap();
        assert_eq!(value(&p, "host").as_deref(), Some("db1,::1,db3"));
        assert_eq!(value(&p, "port").as_deref(), Some("5432,5433,"));
    }

    #[test]
    fn socket_directories_as_host() {
        let p = parse("postgresql://app@/app?host=/run/postgresql", "X").unwrap();
        assert_eq!(value(&p, "host").as_deref(), Some("/run/postgresql"));
        assert_eq!(value(&p, "dbname").as_deref(), Some("app"));
        let p = parse("postgresql://%2Frun%2Fpostgresql:5433/app", "X").unwrap();
        assert_eq!(value(&p, "host").as_deref(), Some("/run/postgresql"));
        assert_eq!(value(&p, "port").as_deref(), Some("5433"));
        let p = parse("postgres:///app", "X").unwrap();
        assert_eq!(value(&p, "host"), None);
    }

    #[test]
    fn malformed_urls_are_config_errors_without_the_password() {
        for url in [
            "mysql://u:hunter22@db/x",
            "postgres://u:hunter22@db/x?sslmode",
            "postgres://u:hunter22@[::1/x",
            "postgres://u:hunter22%zz@db/x",
            "postgres://u:hunter22@db/x?unknown=1",
            "postgres://u:hunter22@db/x?ssl-mode=require",
        ] {
            let e = parse(url, "DATABASE_URL").unwrap_err();
            assert_eq!(e.exit(), Exit::Config, "{url}");
            let m = e.to_string();
            assert!(m.contains("DATABASE_URL") && !m.contains("hunter22"), "{m}");
        }
    }
}

//! libpq's connection keywords: which pgboot honours, which it accepts only
//! with the value it behaves as anyway, and which it refuses; and where each
//! setting came from, so that an error names the URL parameter, the service
//! file entry or the environment variable at fault.
//!
//! libpq refuses a keyword it does not know (`invalid connection option`),
//! and so does pgboot: a setting it cannot honour is refused, never ignored.
//! See: <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS>,
//! <https://www.postgresql.org/docs/current/libpq-envars.html>.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Error;

/// What pgboot does with a keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Honoured as libpq does.
    Honoured,
    /// Accepted only with one of these values (compared case-insensitively),
    /// the ones that describe what pgboot does anyway; refused otherwise.
    Only(&'static [&'static str]),
    /// Refused whatever its value: pgboot cannot do what it asks.
    Refused,
}

/// One libpq keyword, its environment variable, and pgboot's support.
#[derive(Debug, Clone, Copy)]
pub struct Keyword {
    /// The keyword, as in a URL's query string or a service file.
    pub name: &'static str,
    /// The `PG*` variable libpq reads it from, when there is one.
    pub env: Option<&'static str>,
    /// What pgboot does with it.
    pub support: Support,
}

const fn kw(name: &'static str, env: Option<&'static str>, support: Support) -> Keyword {
    Keyword { name, env, support }
}

/// Every keyword libpq knows (`PostgreSQL` 18), in libpq's documentation order.
pub const KEYWORDS: &[Keyword] = &[
    kw("host", Some("PGHOST"), Support::Honoured),
    kw("hostaddr", Some("PGHOSTADDR"), Support::Honoured),
    kw("port", Some("PGPORT"), Support::Honoured),
    kw("dbname", Some("PGDATABASE"), Support::Honoured),
    kw("user", Some("PGUSER"), Support::Honoured),
    kw("password", Some("PGPASSWORD"), Support::Honoured),
    kw("passfile", Some("PGPASSFILE"), Support::Honoured),
    kw("require_auth", Some("PGREQUIREAUTH"), Support::Refused),
    // pgboot's client never asks for channel binding; `prefer` falls back to
    // what it does, `require` cannot be met.
    kw(
        "channel_binding",
        Some("PGCHANNELBINDING"),
        Support::Only(&["disable", "prefer"]),
    ),
    kw(
        "connect_timeout",
        Some("PGCONNECT_TIMEOUT"),
        Support::Honoured,
    ),
    // The client encoding of pgboot's own sessions is always UTF8.
    kw(
        "client_encoding",
        Some("PGCLIENTENCODING"),
        Support::Only(&["utf8", "utf-8", "unicode", "auto"]),
    ),
    // `options` is honoured by sqlx itself from PGOPTIONS; from a URL it is
    // passed on as the startup packet's `options`.
    kw("options", Some("PGOPTIONS"), Support::Honoured),
    kw("application_name", Some("PGAPPNAME"), Support::Honoured),
    kw("fallback_application_name", None, Support::Honoured),
    kw("keepalives", None, Support::Refused),
    kw("keepalives_idle", None, Support::Refused),
    kw("keepalives_interval", None, Support::Refused),
    kw("keepalives_count", None, Support::Refused),
    kw("tcp_user_timeout", None, Support::Refused),
    kw("replication", None, Support::Refused),
    // No GSSAPI in pgboot: `prefer` falls back to what it does.
    kw(
        "gssencmode",
        Some("PGGSSENCMODE"),
        Support::Only(&["disable", "prefer"]),
    ),
    kw("sslmode", Some("PGSSLMODE"), Support::Honoured),
    kw(
        "sslnegotiation",
        Some("PGSSLNEGOTIATION"),
        Support::Only(&["postgres"]),
    ),
    kw(
        "sslcompression",
        Some("PGSSLCOMPRESSION"),
        Support::Only(&["0"]),
    ),
    kw("sslcert", Some("PGSSLCERT"), Support::Honoured),
    kw("sslkey", Some("PGSSLKEY"), Support::Honoured),
    kw("sslkeylogfile", None, Support::Refused),
    kw("sslpassword", None, Support::Refused),
    kw(
        "sslcertmode",
        Some("PGSSLCERTMODE"),
        Support::Only(&["allow"]),
    ),
    kw("sslrootcert", Some("PGSSLROOTCERT"), Support::Honoured),
    kw("sslcrl", Some("PGSSLCRL"), Support::Refused),
    kw("sslcrldir", Some("PGSSLCRLDIR"), Support::Refused),
    // rustls always sends SNI for a host name.
    kw("sslsni", Some("PGSSLSNI"), Support::Only(&["1"])),
    kw("requirepeer", Some("PGREQUIREPEER"), Support::Refused),
    // rustls speaks TLS 1.2 and 1.3, libpq's default range.
    kw(
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Support::Only(&["tlsv1", "tlsv1.1", "tlsv1.2"]),
    ),
    kw(
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Support::Only(&["tlsv1.3"]),
    ),
    kw(
        "min_protocol_version",
        Some("PGMINPROTOCOLVERSION"),
        Support::Only(&["3.0"]),
    ),
    kw(
        "max_protocol_version",
        Some("PGMAXPROTOCOLVERSION"),
        Support::Refused,
    ),
    kw("krbsrvname", Some("PGKRBSRVNAME"), Support::Refused),
    kw("gsslib", Some("PGGSSLIB"), Support::Refused),
    kw("gssdelegation", Some("PGGSSDELEGATION"), Support::Refused),
    kw("scram_client_key", None, Support::Refused),
    kw("scram_server_key", None, Support::Refused),
    kw("service", Some("PGSERVICE"), Support::Honoured),
    kw(
        "target_session_attrs",
        Some("PGTARGETSESSIONATTRS"),
        Support::Honoured,
    ),
    kw(
        "load_balance_hosts",
        Some("PGLOADBALANCEHOSTS"),
        Support::Only(&["disable"]),
    ),
    // Obsolete, but still read by libpq: `1` means sslmode=require.
    kw("requiressl", Some("PGREQUIRESSL"), Support::Refused),
];

/// The keyword named `name`, if libpq knows it.
#[must_use]
pub fn keyword(name: &str) -> Option<&'static Keyword> {
    KEYWORDS.iter().find(|k| k.name == name)
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The database URL (its authority, path or query string).
    Url,
    /// A service file entry: the service's name and the file.
    Service(String, PathBuf),
    /// A `PG*` environment variable.
    Env(&'static str),
}

/// One setting's value and origin.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The value, percent-decoded where it came from a URL.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// The settings of one connection, by keyword, with libpq's precedence
/// applied by the order in which they are added: the first wins.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How the URL was given (`--database-url (DATABASE_URL)`), for messages.
    pub origin: String,
    values: BTreeMap<&'static str, Setting>,
}

impl Settings {
    /// No settings yet; `origin` names where the URL came from.
    #[must_use]
    pub fn new(origin: &str) -> Settings {
        Settings {
            origin: origin.to_string(),
            values: BTreeMap::new(),
        }
    }

    /// Sets `name` from `source`, replacing what the same source set before
    /// (in a URL the last `key=value` wins, as in libpq) but never what an
    /// earlier, stronger source set. An unknown keyword, or one pgboot
    /// refuses, is an error naming it (and never echoing its value).
    ///
    /// # Errors
    /// 78 when it came from the URL or a service file, 64 from the environment.
    pub fn set(&mut self, name: &str, value: String, source: Source) -> Result<(), Error> {
        let Some(k) = keyword(name) else {
            return Err(self.error_at(
                &source,
                name,
                "is not a connection parameter libpq knows; remove it \
                 (sqlx-style spellings such as ssl-mode are not accepted: write sslmode)",
            ));
        };
        match k.support {
            Support::Honoured => {}
            Support::Only(values) if values.iter().any(|v| v.eq_ignore_ascii_case(&value)) => {}
            Support::Only(values) => {
                return Err(self.error_at(
                    &source,
                    k.name,
                    &format!(
                        "asks for something pgboot cannot do; it accepts only {} (or leave it unset)",
                        values.join(", ")
                    ),
                ));
            }
            Support::Refused => {
                return Err(self.error_at(
                    &source,
                    k.name,
                    "is not supported by pgboot; remove it (see the README's libpq compatibility table)",
                ));
            }
        }
        match self.values.get(k.name) {
            Some(old) if old.source != source => {}
            _ => {
                self.values.insert(k.name, Setting { value, source });
            }
        }
        Ok(())
    }

    /// The setting of `name`, when one is set.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.values.get(name)
    }

    /// The value of `name`, when one is set (an empty value counts as unset,
    /// as in libpq).
    #[must_use]
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name)
            .map(|s| s.value.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Where `name` was set, for a message: `PGSSLMODE`, `sslmode in
    /// --database-url (DATABASE_URL)`, or `sslmode in service "x" (file)`.
    #[must_use]
    pub fn describe(&self, name: &str) -> String {
        match self.get(name).map(|s| &s.source) {
            Some(source) => self.describe_at(source, name),
            None => format!("the default {name}"),
        }
    }

    fn describe_at(&self, source: &Source, name: &str) -> String {
        let name = crate::conninfo::printable(name);
        match source {
            Source::Url => format!("parameter {name} of {}", self.origin),
            Source::Service(service, file) => format!(
                "{name} in service \"{}\" of {}",
                crate::conninfo::printable(service),
                file.display()
            ),
            Source::Env(var) => (*var).to_string(),
        }
    }

    /// The error for `name`'s value, saying `why`: exit 64 when the
    /// environment set it (a bad environment value), 78 when the URL or a
    /// service file did (a malformed URL or configuration).
    #[must_use]
    pub fn invalid(&self, name: &str, why: &str) -> Error {
        match self.get(name) {
            Some(s) => self.error_at(&s.source.clone(), name, why),
            None => Error::Config(format!("{name} {why}")),
        }
    }

    fn error_at(&self, source: &Source, name: &str, why: &str) -> Error {
        let what = self.describe_at(source, name);
        match source {
            Source::Env(_) => Error::Usage(format!("{what} {why}")),
            Source::Url | Source::Service(..) => Error::Config(format!("{what} {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    #[test]
    fn keywords_are_unique_and_every_variable_names_one() {
        for (i, k) in KEYWORDS.iter().enumerate() {
            assert!(
                KEYWORDS[i + 1..].iter().all(|o| o.name != k.name),
                "{}",
                k.name
            );
            if let Some(env) = k.env {
                assert!(env.starts_with("PG"), "{env}");
            }
        }
    }

    #[test]
    fn the_first_source_wins_and_the_last_value_of_a_source() {
        let mut s = Settings::new("DATABASE_URL");
        s.set("port", "1".into(), Source::Url).unwrap();
        s.set("port", "2".into(), Source::Url).unwrap();
        s.set("port", "3".into(), Source::Env("PGPORT")).unwrap();
        assert_eq!(s.value("port"), Some("2"));
        assert_eq!(s.describe("port"), "parameter port of DATABASE_URL");
    }

    #[test]
    fn unknown_and_refused_keywords_are_errors_naming_them_not_their_values() {
        let mut s = Settings::new("DATABASE_URL");
        let e = s
            .set("passwrod", "hunter22".into(), Source::Url)
            .unwrap_err();
        assert_eq!(e.exit(), Exit::Config);
        assert!(e.to_string().contains("passwrod") && !e.to_string().contains("hunter22"));
        let e = s
            .set("sslpassword", "hunter22".into(), Source::Url)
            .unwrap_err();
        assert!(e.to_string().contains("sslpassword") && !e.to_string().contains("hunter22"));
        let e = s
            .set("gssencmode", "require".into(), Source::Env("PGGSSENCMODE"))
            .unwrap_err();
        assert_eq!(e.exit(), Exit::Usage);
        assert!(e.to_string().starts_with("PGGSSENCMODE "), "{e}");
        s.set("gssencmode", "Prefer".into(), Source::Env("PGGSSENCMODE"))
            .unwrap();
    }
}

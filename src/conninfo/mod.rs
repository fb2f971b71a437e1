//! Where Postgres is: a database URL and libpq's environment turned into an
//! ordered list of candidate hosts, each with the options sqlx connects
//! with, plus what may be shown of them and what must be scrubbed.
//!
//! Needs the URL (or none: libpq's variables alone), where it came from, and
//! what the connection is for. Returns a [`ConnInfo`]. libpq's precedence
//! holds: the URL, then the service file (`service`, `PGSERVICE`), then the
//! `PG*` environment, then libpq's defaults. Every keyword is honoured as
//! libpq does or refused (`keywords.rs`); a bad value is an error naming
//! where it came from and never echoing it: 64 from the environment, 78
//! from the URL or a service file, and TLS that cannot be right is 78.
//!
//! Waiting, retrying and the session check are `wait.rs`'s; this module
//! does no I/O beyond reading the service and password files and checking
//! the TLS files.
//!
//! See: <https://www.postgresql.org/docs/current/libpq-connect.html>,
//! CONTRACT.md "Configuration" and "Waiting", issue 8.

pub mod keywords;
mod pgpass;
mod service;
mod url;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::error::Error;
use keywords::{KEYWORDS, Settings, Source};

/// What the connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Waiting only: `target_session_attrs` as the URL says.
    AsGiven,
    /// The lock and migrations: a writable primary, whatever else the URL
    /// says; a URL asking for a standby or a read-only session is refused.
    Writable,
}

/// libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that accepts the connection.
    Any,
    /// A session that accepts read-write transactions by default.
    ReadWrite,
    /// A session that does not.
    ReadOnly,
    /// A server not in hot standby.
    Primary,
    /// A server in hot standby.
    Standby,
    /// A standby if any host is one, else any server.
    PreferStandby,
}

/// What a connected server says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// `pg_is_in_recovery()`: a hot standby.
    pub in_recovery: bool,
    /// `transaction_read_only` of a new session: a standby, or
    /// `default_transaction_read_only` on.
    pub read_only: bool,
}

impl SessionAttrs {
    const ALL: [(&'static str, SessionAttrs); 6] = [
        ("any", SessionAttrs::Any),
        ("read-write", SessionAttrs::ReadWrite),
        ("read-only", SessionAttrs::ReadOnly),
        ("primary", SessionAttrs::Primary),
        ("standby", SessionAttrs::Standby),
        ("prefer-standby", SessionAttrs::PreferStandby),
    ];

    /// libpq's spelling.
    #[must_use]
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("any", |(n, _)| n)
    }

    fn parse(s: &str) -> Option<SessionAttrs> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }

    /// Whether a server in `state` is what was asked for. `PreferStandby`
    /// accepts only a standby here; the caller falls back to any server
    /// once every host has been tried.
    #[must_use]
    pub fn accepts(self, state: ServerState) -> bool {
        match self {
            SessionAttrs::Any => true,
            SessionAttrs::ReadWrite => !state.read_only,
            SessionAttrs::ReadOnly => state.read_only,
            SessionAttrs::Primary => !state.in_recovery,
            SessionAttrs::Standby | SessionAttrs::PreferStandby => state.in_recovery,
        }
    }
}

/// A file the TLS handshake reads, and the option that named it.
#[derive(Debug, Clone)]
pub struct TlsFile {
    /// `sslrootcert`, `PGSSLCERT`, `parameter sslkey of DATABASE_URL`…
    pub option: String,
    /// The file.
    pub path: PathBuf,
}

/// One host to try.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The options sqlx connects with.
    pub opts: PgConnectOptions,
    /// `host:port`, or the socket's path, for messages.
    pub addr: String,
    /// The files TLS will read: each must be readable before a connection
    /// is tried, else the error names the option and the file.
    pub files: Vec<TlsFile>,
    /// `sslmode=…` and the files, for a TLS failure's message.
    pub tls: String,
}

impl Candidate {
    /// Checks that every TLS file can be read.
    ///
    /// # Errors
    /// A message naming the option and the file (never its contents).
    pub fn check_files(&self) -> Result<(), String> {
        for f in &self.files {
            if let Err(e) = std::fs::File::open(&f.path) {
                return Err(format!(
                    "{} names {}, which cannot be read ({e}); fix the path or the file's permissions",
                    f.option,
                    printable(&f.path.display().to_string())
                ));
            }
        }
        Ok(())
    }
}

/// Everything pgboot knows of where Postgres is.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The hosts, in the order they are tried.
    pub candidates: Vec<Candidate>,
    /// Which server is wanted.
    pub attrs: SessionAttrs,
    /// `connect_timeout`: the limit of one host's try; `None` is no limit.
    pub connect_timeout: Option<Duration>,
    /// The user name, for messages.
    pub user: String,
    /// The database name, for messages.
    pub database: String,
    /// Every password this configuration holds, to scrub from messages.
    pub secrets: Vec<String>,
}

/// Where libpq looks for the Unix socket when no host is given: Debian's
/// build uses the first, upstream's the second.
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];
const DEFAULT_PORT: u16 = 5432;

/// Resolves the URL (or `None`) from `origin`, with the environment `env`,
/// for `purpose`.
///
/// # Errors
/// 64 for a bad environment value or a URL that asks a lock target for a
/// standby, 78 for a malformed URL, a bad service file, or TLS that cannot
/// be right; each names the variable, parameter or file.
pub fn resolve(
    url: Option<&str>,
    origin: &str,
    purpose: Purpose,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnInfo, Error> {
    let (settings, mut secrets) = gather(url, origin, env)?;
    let attrs = session_attrs(&settings, purpose)?;
    let connect_timeout = connect_timeout(&settings)?;
    let endpoints = endpoints(&settings)?;
    // TLS is for TCP only: a socket-only configuration is not refused for
    // TLS files it never uses (libpq never reads them either).
    let tls = Tls::resolve(&settings, env, endpoints.iter().any(|e| e.socket.is_none()))?;

    // sqlx reads PGUSER, PGPASSWORD, PGOPTIONS… itself; every field that
    // matters is set below from the settings, so its own reading only
    // supplies PGOPTIONS and the operating-system user name.
    let base = PgConnectOptions::new_without_pgpass();
    let user = settings
        .value("user")
        .map_or_else(|| base.get_username().to_string(), str::to_string);
    let database = settings.value("dbname").unwrap_or(&user).to_string();
    let passfile = settings
        .value("passfile")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let mut base = base
        .username(&user)
        .database(&database)
        .disable_statement_logging()
        // No `extra_float_digits` in the startup packet: a stock PgBouncer
        // rejects unknown startup parameters (08P01) unless told to ignore
        // them, and pgboot reads no floats.
        .extra_float_digits(None);
    if let Some(name) = settings
        .value("application_name")
        .or_else(|| settings.value("fallback_application_name"))
    {
        base = base.application_name(name);
    }
    if let Some(s) = settings
        .get("options")
        .filter(|s| s.source != Source::Env("PGOPTIONS"))
    {
        let pairs = options(&s.value).ok_or_else(|| {
            settings.invalid(
                "options",
                "is not a list of -c name=value (or --name=value) settings",
            )
        })?;
        base = base.options(pairs);
    }

    let mut candidates = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let password = settings.value("password").map(str::to_string).or_else(|| {
            pgpass::lookup(
                passfile.as_ref()?,
                pgpass::Key {
                    host: ep.pgpass_host(),
                    port: ep.port,
                    database: &database,
                    user: &user,
                },
            )
        });
        let mut opts = base.clone().port(ep.port);
        if let Some(pw) = password {
            opts = opts.password(&pw);
            secrets.push(pw);
        }
        candidates.push(candidate(&ep, opts, &tls, &settings)?);
    }
    secrets.sort();
    secrets.dedup();
    secrets.retain(|s| s.len() >= 2);
    Ok(ConnInfo {
        candidates,
        attrs,
        connect_timeout,
        user,
        database,
        secrets,
    })
}

/// The settings from the URL, the service file and the environment, in
/// libpq's precedence, and the passwords among them.
fn gather(
    url: Option<&str>,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Settings, Vec<String>), Error> {
    let mut secrets = Vec::new();
    let mut settings = match url {
        Some(u) => {
            let parsed = url::parse(u, origin)?;
            secrets.extend(parsed.raw_password);
            parsed.settings
        }
        None => Settings::new(origin),
    };
    // The service is looked up before the environment fills the rest: in
    // libpq a service file's settings beat the PG* variables.
    if let Some(v) = env("PGSERVICE").filter(|v| !v.is_empty()) {
        settings.set("service", v, Source::Env("PGSERVICE"))?;
    }
    service::apply(&mut settings, env)?;
    for k in KEYWORDS {
        if let Some(var) = k.env
            && let Some(v) = env(var).filter(|v| !v.is_empty())
        {
            settings.set(k.name, v, Source::Env(var))?;
        }
    }
    if let Some(pw) = settings.value("password") {
        secrets.push(pw.to_string());
    }
    Ok((settings, secrets))
}

/// The candidate for one endpoint: a Unix socket (libpq ignores sslmode
/// there: Postgres offers no TLS on a socket), or TCP with the TLS settings.
fn candidate(
    ep: &Endpoint,
    opts: PgConnectOptions,
    tls: &Tls,
    settings: &Settings,
) -> Result<Candidate, Error> {
    if let Some(dir) = &ep.socket {
        return Ok(Candidate {
            addr: format!("{}/.s.PGSQL.{}", dir.display(), ep.port),
            opts: opts.socket(dir).ssl_mode(PgSslMode::Disable),
            files: Vec::new(),
            tls: "a Unix socket (no TLS)".into(),
        });
    }
    let connect_to = ep.hostaddr.as_ref().or(ep.host.as_ref()).map_or("", |s| s);
    if matches!(tls.mode, PgSslMode::VerifyFull)
        && let (Some(h), Some(a)) = (&ep.host, &ep.hostaddr)
        && h != a
    {
        return Err(settings.invalid(
            "hostaddr",
            "cannot be combined with a host name under sslmode=verify-full: pgboot \
             verifies the certificate against the address it connects to; \
             remove hostaddr, or use sslmode=verify-ca",
        ));
    }
    Ok(Candidate {
        addr: if connect_to.contains(':') {
            format!("[{connect_to}]:{}", ep.port)
        } else {
            format!("{connect_to}:{}", ep.port)
        },
        opts: tls.apply(opts.host(connect_to)),
        files: tls.files.clone(),
        tls: tls.describe(),
    })
}

/// One `host`/`hostaddr`/`port` triple of the lists.
#[derive(Debug)]
struct Endpoint {
    host: Option<String>,
    hostaddr: Option<String>,
    port: u16,
    socket: Option<PathBuf>,
    socket_default: bool,
}

impl Endpoint {
    /// The host name a password file's line is matched against: as libpq,
    /// `localhost` for the default socket or no host at all.
    fn pgpass_host(&self) -> &str {
        match (&self.host, &self.hostaddr) {
            _ if self.socket_default => "localhost",
            (Some(h), _) => h,
            (None, Some(a)) => a,
            (None, None) => "localhost",
        }
    }
}

/// libpq's comma-separated `host`, `hostaddr` and `port` lists, matched up.
fn endpoints(settings: &Settings) -> Result<Vec<Endpoint>, Error> {
    let list = |k: &str| -> Vec<String> {
        settings
            .value(k)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let hosts = list("host");
    let addrs = list("hostaddr");
    let ports = list("port");
    let n = hosts.len().max(addrs.len()).max(1);
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(settings.invalid(
            "hostaddr",
            &format!(
                "lists {} addresses for {} host names; give one per host",
                addrs.len(),
                hosts.len()
            ),
        ));
    }
    if ports.len() > 1 && ports.len() != n {
        return Err(settings.invalid(
            "port",
            &format!(
                "lists {} ports for {n} hosts; give one port for all, or one per host",
                ports.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let host = hosts.get(i).filter(|h| !h.is_empty()).cloned();
        let hostaddr = addrs.get(i).filter(|h| !h.is_empty()).cloned();
        if let Some(a) = &hostaddr
            && a.parse::<std::net::IpAddr>().is_err()
        {
            return Err(settings.invalid(
                "hostaddr",
                "is not a numeric IP address (use host for a name)",
            ));
        }
        let port = match ports.get(i).or_else(|| ports.first()).map(String::as_str) {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                settings.invalid("port", "is not a port number (an integer from 1 to 65535)")
            })?,
        };
        // A hostaddr means TCP; a host starting with `/` is a socket
        // directory; neither means libpq's default socket.
        let (socket, socket_default) = match (&host, &hostaddr) {
            (Some(h), None) if h.starts_with('/') => (Some(PathBuf::from(h)), false),
            (None, None) => (Some(default_socket_dir()), true),
            _ => (None, false),
        };
        out.push(Endpoint {
            host,
            hostaddr,
            port,
            socket,
            socket_default,
        });
    }
    Ok(out)
}

fn default_socket_dir() -> PathBuf {
    DEFAULT_SOCKET_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIRS[1]))
}

/// `target_session_attrs`, and what the lock target makes of it.
fn session_attrs(settings: &Settings, purpose: Purpose) -> Result<SessionAttrs, Error> {
    let attrs = match settings.value("target_session_attrs") {
        None => SessionAttrs::Any,
        Some(v) => SessionAttrs::parse(v).ok_or_else(|| {
            settings.invalid(
                "target_session_attrs",
                "is not one of any, read-write, read-only, primary, standby, prefer-standby",
            )
        })?,
    };
    match (purpose, attrs) {
        (Purpose::AsGiven, a) => Ok(a),
        (
            Purpose::Writable,
            SessionAttrs::Any | SessionAttrs::ReadWrite | SessionAttrs::Primary,
        ) => Ok(SessionAttrs::ReadWrite),
        (Purpose::Writable, a) => Err(Error::Usage(format!(
            "{} asks for target_session_attrs={}, but the lock and migrations need a writable \
             primary; point --migrate-database-url (PGBOOT_MIGRATE_DATABASE_URL) at the primary, \
             or ask for read-write",
            settings.describe("target_session_attrs"),
            a.name()
        ))),
    }
}

/// `connect_timeout` as libpq reads it: whole seconds, zero or less for
/// none, at least 2.
fn connect_timeout(settings: &Settings) -> Result<Option<Duration>, Error> {
    let Some(v) = settings.value("connect_timeout") else {
        return Ok(None);
    };
    let secs: i64 = v.trim().parse().map_err(|_| {
        settings.invalid(
            "connect_timeout",
            "is not a whole number of seconds (0 means no limit)",
        )
    })?;
    Ok(u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.max(2))))
}

/// The `options` keyword's `-c name=value` / `--name=value` settings.
fn options(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut words = s.split_whitespace();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()?
        } else {
            w.strip_prefix("-c").or_else(|| w.strip_prefix("--"))?
        };
        let (k, v) = setting.split_once('=')?;
        out.push((k.to_string(), v.to_string()));
    }
    Some(out)
}

/// The TLS settings every TCP host shares.
#[derive(Debug, Clone)]
struct Tls {
    mode: PgSslMode,
    /// What the user asked for, for messages.
    asked: String,
    root: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    files: Vec<TlsFile>,
}

impl Tls {
    /// The TLS settings; `tcp` says whether any host is reached over TCP
    /// (the mode is checked either way, the files only for TCP).
    fn resolve(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
        tcp: bool,
    ) -> Result<Tls, Error> {
        let asked = settings.value("sslmode").unwrap_or("prefer").to_string();
        let mode = match asked.as_str() {
            "disable" => PgSslMode::Disable,
            // sqlx never retries with TLS after a refused plaintext try;
            // plaintext first is what `allow` asks.
            "allow" => PgSslMode::Allow,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            _ => {
                return Err(settings.invalid(
                    "sslmode",
                    "is not one of disable, allow, prefer, require, verify-ca, verify-full \
                     (note the hyphens); pgboot never falls back to plaintext on a bad sslmode",
                ));
            }
        };
        let mut tls = Tls {
            mode,
            asked,
            root: None,
            client: None,
            files: Vec::new(),
        };
        if !tcp || matches!(mode, PgSslMode::Disable | PgSslMode::Allow) {
            return Ok(tls);
        }
        let home_file = |name: &str| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".postgresql").join(name))
        };
        match settings.value("sslrootcert") {
            // libpq 16: the system's trusted roots, and nothing weaker than
            // verify-full (a public CA vouches for names, not servers).
            Some("system") => {
                if settings.get("sslmode").is_none() {
                    tls.mode = PgSslMode::VerifyFull;
                    "verify-full".clone_into(&mut tls.asked);
                } else if !matches!(mode, PgSslMode::VerifyFull) {
                    return Err(settings.invalid(
                        "sslmode",
                        "must be verify-full with sslrootcert=system (as in libpq)",
                    ));
                }
            }
            Some(path) => {
                tls.files.push(TlsFile {
                    option: settings.describe("sslrootcert"),
                    path: PathBuf::from(path),
                });
                tls.root = Some(PathBuf::from(path));
            }
            None => match home_file("root.crt").filter(|p| p.exists()) {
                Some(p) => tls.root = Some(p),
                None if matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) => {
                    return Err(Error::Config(format!(
                        "{} is {} but no root certificate is configured and \
                         ~/.postgresql/root.crt does not exist; set sslrootcert to the CA's \
                         certificate file, or sslrootcert=system for the system's trusted roots",
                        settings.describe("sslmode"),
                        tls.asked
                    )));
                }
                None => {}
            },
        }
        // libpq verifies against a root certificate whenever it has one,
        // also under prefer and require; and pgboot never falls back to
        // plaintext when a certificate was given to check.
        if tls.root.is_some() && matches!(mode, PgSslMode::Prefer | PgSslMode::Require) {
            tls.mode = PgSslMode::VerifyCa;
        }
        let cert = settings.value("sslcert").map(PathBuf::from);
        let key = settings.value("sslkey").map(PathBuf::from);
        if cert.is_some() || key.is_some() {
            let cert_path = cert.or_else(|| home_file("postgresql.crt"));
            let key_path = key.or_else(|| home_file("postgresql.key"));
            let (Some(c), Some(k)) = (cert_path, key_path) else {
                return Err(Error::Config(
                    "sslcert and sslkey must be given together (HOME is not set, so \
                     ~/.postgresql/ cannot supply the other)"
                        .into(),
                ));
            };
            tls.files.push(TlsFile {
                option: settings.describe("sslcert"),
                path: c.clone(),
            });
            tls.files.push(TlsFile {
                option: settings.describe("sslkey"),
                path: k.clone(),
            });
            tls.client = Some((c, k));
        } else if let (Some(c), Some(k)) =
            (home_file("postgresql.crt"), home_file("postgresql.key"))
            && c.exists()
            && k.exists()
        {
            tls.client = Some((c, k));
        }
        Ok(tls)
    }

    fn apply(&self, mut opts: PgConnectOptions) -> PgConnectOptions {
        opts = opts.ssl_mode(self.mode);
        if let Some(root) = &self.root {
            opts = opts.ssl_root_cert(root);
        }
        if let Some((c, k)) = &self.client {
            opts = opts.ssl_client_cert(c).ssl_client_key(k);
        }
        opts
    }

    fn describe(&self) -> String {
        let mut out = format!("sslmode={}", self.asked);
        if let Some(r) = &self.root {
            out.push_str(", sslrootcert=");
            out.push_str(&printable(&r.display().to_string()));
        }
        out
    }
}

/// `s` with control characters escaped, so that no value forges a log line.
#[must_use]
pub fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;
    use std::collections::HashMap;

    fn with_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .chain([("HOME".to_string(), "/nonexistent".to_string())])
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn resolve_env(url: Option<&str>, vars: &[(&str, &str)]) -> Result<ConnInfo, Error> {
        resolve(url, "DATABASE_URL", Purpose::AsGiven, &with_env(vars))
    }

    #[test]
    fn the_url_beats_the_environment() {
        let c = resolve_env(
            Some("postgres://app:pw@db:6543/app"),
            &[("PGPORT", "7000"), ("PGHOST", "other"), ("PGDATABASE", "x")],
        )
        .unwrap();
        assert_eq!(c.candidates.len(), 1);
        assert_eq!(c.candidates[0].addr, "db:6543");
        assert_eq!(c.database, "app");
        let c = resolve_env(None, &[("PGPORT", "7000"), ("PGHOST", "other")]).unwrap();
        assert_eq!(c.candidates[0].addr, "other:7000");
    }

    #[test]
    fn several_hosts_with_their_ports() {
        let c = resolve_env(
            Some("postgresql://u@db1:5432,db2:5433,[::1]/app?target_session_attrs=read-write&connect_timeout=1"),
            &[],
        )
        .unwrap();
        let addrs: Vec<_> = c.candidates.iter().map(|c| c.addr.as_str()).collect();
        assert_eq!(addrs, ["db1:5432", "db2:5433", "[::1]:5432"]);
        assert_eq!(c.attrs, SessionAttrs::ReadWrite);
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)));
        let c = resolve_env(None, &[("PGHOST", "a,b"), ("PGPORT", "1,2")]).unwrap();
        assert_eq!(c.candidates[1].addr, "b:2");
        let e = resolve_env(None, &[("PGHOST", "a,b,c"), ("PGPORT", "1,2")]).unwrap_err();
        assert!(e.to_string().starts_with("PGPORT "), "{e}");
    }

    #[test]
    fn unix_sockets() {
        let c = resolve_env(Some("postgresql://app@/app?host=/run/postgresql"), &[]).unwrap();
        assert_eq!(c.candidates[0].addr, "/run/postgresql/.s.PGSQL.5432");
        assert_eq!(
            c.candidates[0].opts.get_socket(),
            Some(&PathBuf::from("/run/postgresql"))
        );
        let c = resolve_env(
            Some("postgresql://%2Ftmp%2Fpg:5433/app?sslmode=verify-full"),
            &[],
        )
        .unwrap();
        assert_eq!(c.candidates[0].addr, "/tmp/pg/.s.PGSQL.5433");
    }

    #[test]
    fn bad_environment_values_are_usage_errors_naming_the_variable() {
        for (var, value) in [
            ("PGSSLMODE", "verify_full"),
            ("PGPORT", "54x32"),
            ("PGPORT", "70000"),
            ("PGTARGETSESSIONATTRS", "writable"),
            ("PGCONNECT_TIMEOUT", "soon"),
            ("PGHOSTADDR", "db.example"),
            ("PGSSLCRL", "/crl.pem"),
        ] {
            let e = resolve_env(None, &[(var, value)]).unwrap_err();
            assert_eq!(e.exit(), Exit::Usage, "{var}={value}: {e}");
            let m = e.to_string();
            assert!(m.starts_with(var) && !m.contains(value), "{m}");
        }
    }

    #[test]
    fn bad_url_values_are_config_errors_naming_the_parameter() {
        let e =
            resolve_env(Some("postgres://u:hunter22@db/x?sslmode=verify_full"), &[]).unwrap_err();
        assert_eq!(e.exit(), Exit::Config);
        assert!(
            e.to_string().contains("parameter sslmode of DATABASE_URL"),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter22"));
    }

    #[test]
    fn tls_settings() {
        let c = resolve_env(
            Some("postgres://db/x?sslmode=require&sslrootcert=/ca.pem"),
            &[("PGSSLCERT", "/c.pem"), ("PGSSLKEY", "/k.pem")],
        )
        .unwrap();
        let cand = &c.candidates[0];
        // A root certificate is checked whenever one is given.
        assert!(matches!(cand.opts.get_ssl_mode(), PgSslMode::VerifyCa));
        let options: Vec<_> = cand.files.iter().map(|f| f.option.as_str()).collect();
        assert_eq!(
            options,
            [
                "parameter sslrootcert of DATABASE_URL",
                "PGSSLCERT",
                "PGSSLKEY"
            ]
        );
        let err = cand.check_files().unwrap_err();
        assert!(
            err.contains("sslrootcert") && err.contains("/ca.pem"),
            "{err}"
        );
        // verify-full without any root certificate is refused at once.
        let e = resolve_env(Some("postgres://db/x?sslmode=verify-full"), &[]).unwrap_err();
        assert_eq!(e.exit(), Exit::Config);
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let c = resolve_env(Some("postgres://db/x?sslrootcert=system"), &[]).unwrap();
        assert!(matches!(
            c.candidates[0].opts.get_ssl_mode(),
            PgSslMode::VerifyFull
        ));
        assert!(
            resolve_env(
                Some("postgres://db/x?sslrootcert=system&sslmode=require"),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn the_lock_target_wants_a_writable_primary() {
        let env = with_env(&[]);
        for (attrs, ok) in [
            ("any", true),
            ("read-write", true),
            ("primary", true),
            ("standby", false),
            ("read-only", false),
            ("prefer-standby", false),
        ] {
            let url = format!("postgres://a,b/x?target_session_attrs={attrs}");
            let r = resolve(Some(&url), "DATABASE_URL", Purpose::Writable, &env);
            match r {
                Ok(c) => {
                    assert!(ok, "{attrs}");
                    assert_eq!(c.attrs, SessionAttrs::ReadWrite);
                }
                Err(e) => {
                    assert!(!ok, "{attrs}");
                    assert_eq!(e.exit(), Exit::Usage);
                    assert!(e.to_string().contains("writable primary"), "{e}");
                }
            }
        }
    }

    #[test]
    fn session_attrs_as_libpq_defines_them() {
        let primary = ServerState {
            in_recovery: false,
            read_only: false,
        };
        let ro_primary = ServerState {
            in_recovery: false,
            read_only: true,
        };
        let standby = ServerState {
            in_recovery: true,
            read_only: true,
        };
        for (name, a) in SessionAttrs::ALL {
            assert_eq!(SessionAttrs::parse(name), Some(a));
            assert_eq!(a.name(), name);
            let want = match a {
                SessionAttrs::Any => [true, true, true],
                SessionAttrs::ReadWrite => [true, false, false],
                SessionAttrs::ReadOnly => [false, true, true],
                SessionAttrs::Primary => [true, true, false],
                SessionAttrs::Standby | SessionAttrs::PreferStandby => [false, false, true],
            };
            assert_eq!(
                [
                    a.accepts(primary),
                    a.accepts(ro_primary),
                    a.accepts(standby)
                ],
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn passwords_are_collected_for_redaction() {
        let c = resolve_env(Some("postgres://u:s3cr%40t@db/x"), &[]).unwrap();
        assert!(c.secrets.contains(&"s3cr@t".to_string()));
        assert!(c.secrets.contains(&"s3cr%40t".to_string()));
        let c = resolve_env(None, &[("PGPASSWORD", "envpw")]).unwrap();
        assert!(c.secrets.contains(&"envpw".to_string()));
    }

    #[test]
    fn options_are_parsed() {
        assert_eq!(
            options("-c a=1 --b=2 -cc=3"),
            Some(vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into())
            ])
        );
        assert_eq!(options("nonsense"), None);
    }
}

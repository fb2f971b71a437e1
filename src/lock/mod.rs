//! The lock: a session-level advisory lock on a dedicated connection.
//! The connection is the lock: [`Lock`] owns it, and releasing closes it.
//!
//! Needs a ready connection (from `wait`). Returns a held [`Lock`]. The wait
//! polls `pg_try_advisory_lock` and never blocks in `pg_advisory_lock`: a
//! blocked waiter holds a snapshot, and a `CREATE INDEX CONCURRENTLY` in the
//! holder's migration then waits for it forever (see flyway#1654,
//! golang-migrate#960). Between polls the waiter is idle. Failures: the lock
//! not taken within `--lock-timeout`, or its session gone silent while a
//! command runs (fencing) → exit 75; a transaction-pooling `PgBouncer`
//! between pgboot and Postgres → exit 78, detected before the lock is taken,
//! and a lock that lands on another backend anyway is never acted on nor
//! left behind; the connection lost → `Error::Lost` (boot waits again).
//!
//! Every query here is a simple-protocol query (`sql.rs`), and every one
//! that matters names its backend (`pg_backend_pid()` in the same
//! statement), so a pooler cannot make pgboot believe a lie.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use crate::config::LockKey;
use crate::error::{Error, Result};
use crate::failure::{self, db_error};
use crate::sql::{self, lit};
use crate::wait::Target;

mod pooling;
mod watch;

/// How often a waiter tries the lock. Bounds the handoff latency: a waiter
/// takes a released lock within one interval.
const POLL: Duration = Duration::from_millis(100);
/// How often a waiter logs who holds the lock.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How often a killed holder's backend checks that its client is still there.
const CHECK_INTERVAL_MS: u32 = 1000;

/// Server-side TCP settings for every session that holds the lock or runs
/// under it: a replica cut off by the network (no RST, packets dropped) is
/// found dead after 5 s idle + 3 probes 2 s apart, or 10 s of unacknowledged
/// data, instead of the kernel's default two hours; its backend then ends
/// and the lock is freed within ~15 s. All four are settable by any role;
/// they do nothing on a Unix socket.
const TCP_SETTINGS: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// Settings for the lock session, applied only where the server knows them
/// (`client_connection_check_interval` and `idle_session_timeout` are 14+).
fn session_sql() -> String {
    let mut values = vec![
        ("statement_timeout".to_string(), "0".to_string()),
        ("idle_session_timeout".into(), "0".into()),
        ("idle_in_transaction_session_timeout".into(), "0".into()),
        (
            "client_connection_check_interval".into(),
            CHECK_INTERVAL_MS.to_string(),
        ),
    ];
    values.extend(
        TCP_SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
    );
    let rows: Vec<String> = values
        .iter()
        .map(|(k, v)| format!("({}, {})", lit(k), lit(v)))
        .collect();
    format!(
        "SELECT count(set_config(s.name, s.value, false)) FROM (VALUES {}) AS s(name, value) \
         WHERE s.name IN (SELECT name FROM pg_settings)",
        rows.join(", ")
    )
}

/// The `pg_locks` row of an advisory lock on a 64-bit key: classid holds the
/// high 32 bits, objid the low 32 bits, objsubid is 1. Advisory locks belong
/// to a database, and `pg_locks` lists the whole cluster's: the same key in
/// another database is another lock, its holder and waiters none of ours.
fn lock_row(key: i64) -> String {
    format!(
        "l.locktype = 'advisory' AND l.objsubid = 1 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND l.classid::bigint = (({key}::bigint >> 32) & 4294967295) \
         AND l.objid::bigint = ({key}::bigint & 4294967295)"
    )
}

/// Resolves `--lock-key` to its 64-bit key: a name `K` is the server's
/// `hashtextextended('K', 0)`, so anyone can take the same lock from SQL.
///
/// # Errors
/// The query failed.
pub async fn resolve_key(conn: &mut PgConnection, key: &LockKey) -> Result<i64> {
    match key {
        LockKey::Int(k) => Ok(*k),
        LockKey::Name(name) => {
            sql::scalar(conn, &format!("SELECT hashtextextended({}, 0)", lit(name)))
                .await
                .map_err(|e| db_error("resolving the lock key", &e))
        }
    }
}

/// The key as logs and messages show it: a name with its 64-bit value
/// (`pgboot (-754969824669846524)`), or the integer as given.
#[must_use]
pub fn key_label(key: &LockKey, resolved: i64) -> String {
    match key {
        LockKey::Name(name) => format!("{name} ({resolved})"),
        LockKey::Int(_) => resolved.to_string(),
    }
}

/// Who holds the lock, as `pg_stat_activity` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's backend pid.
    pub pid: i32,
    /// Its `application_name` (`pgboot@HOST` for another pgboot); `None` when empty.
    pub application_name: Option<String>,
    /// What this role may see of the holder's session; `None` when Postgres
    /// hides it (another role's session, and this one lacks `pg_read_all_stats`).
    pub session: Option<SessionDetails>,
}

/// The columns of `pg_stat_activity` Postgres shows only to the session's
/// own role, members of it, and `pg_read_all_stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetails {
    /// Its client address, or `local` for a Unix socket.
    pub client: String,
    /// When its session started (`backend_start`, as Postgres prints it).
    pub since: String,
    /// Its session's age, seconds.
    pub age_s: i64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}",
            self.pid,
            self.application_name
                .as_deref()
                .unwrap_or("no application_name")
        )?;
        match &self.session {
            Some(s) => write!(f, ", from {}, session {}s old)", s.client, s.age_s),
            None => f.write_str(
                "; its client and age are hidden from this role: grant it pg_read_all_stats to see them)",
            ),
        }
    }
}

/// Who holds the advisory lock on `key`, if anyone.
///
/// # Errors
/// The query failed.
pub async fn holder(
    conn: &mut PgConnection,
    key: i64,
) -> std::result::Result<Option<Holder>, sqlx::Error> {
    // Postgres nulls backend_start (and client_addr) for a session this role
    // may not see: a NULL backend_start is "hidden", never "local, 0 s old".
    let q = format!(
        "SELECT a.pid, nullif(a.application_name, ''), a.backend_start IS NOT NULL, \
           coalesce(host(a.client_addr), 'local'), coalesce(a.backend_start::text, ''), \
           coalesce(extract(epoch FROM now() - a.backend_start)::bigint, 0) \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.granted AND {} LIMIT 1",
        lock_row(key)
    );
    let row = sql::row(conn, &q).await?;
    Ok(row.map(|r| Holder {
        pid: r.get(0),
        application_name: r.get(1),
        session: r.get::<bool, _>(2).then(|| SessionDetails {
            client: r.get(3),
            since: r.get(4),
            age_s: r.get(5),
        }),
    }))
}

/// A held advisory lock and the connection that holds it.
pub struct Lock {
    conn: Option<PgConnection>,
    /// The 64-bit key.
    pub key: i64,
    /// The backend pid of the lock session.
    pub backend_pid: i32,
    /// The server's `server_version_num`.
    pub server_version: i32,
    postmaster_start: String,
    acquired: Instant,
    warned_nested: bool,
    ended: bool,
}

/// The `pgboot@HOSTNAME` application name of the lock session.
#[must_use]
pub fn application_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("pgboot@{host}")
}

/// The lock session as prepared: the key resolved, and who the session is.
struct Session {
    key: i64,
    backend_pid: i32,
    server_version: i32,
    postmaster_start: String,
}

/// Prepares `conn` as the lock session: settings, identity, the key resolved.
async fn prepare(conn: &mut PgConnection, key: &LockKey) -> Result<Session> {
    sql::execute(
        conn,
        &format!(
            "SELECT set_config('application_name', {}, false)",
            lit(&application_name())
        ),
    )
    .await
    .map_err(|e| db_error("setting application_name", &e))?;
    sql::execute(conn, &session_sql())
        .await
        .map_err(|e| db_error("configuring the lock session", &e))?;
    let row = sql::row(
        conn,
        "SELECT pg_backend_pid(), current_setting('server_version_num')::int, \
                pg_postmaster_start_time()::text",
    )
    .await
    .map_err(|e| db_error("reading the backend pid", &e))?
    .ok_or_else(|| Error::Internal("SELECT pg_backend_pid() returned no row".into()))?;
    let read = |e: sqlx::Error| db_error("reading the backend pid", &e);
    let (backend_pid, server_version, postmaster_start) = (
        row.try_get(0).map_err(read)?,
        row.try_get(1).map_err(read)?,
        row.try_get(2).map_err(read)?,
    );
    let key = resolve_key(conn, key).await?;
    Ok(Session {
        key,
        backend_pid,
        server_version,
        postmaster_start,
    })
}

/// The lock wait's bookkeeping: when to say who holds the lock, and when to
/// give up.
struct Waiting {
    label: String,
    start: Instant,
    timeout: Duration,
    next_report: Instant,
    first_seen: Option<(i32, Instant)>,
}

impl Waiting {
    fn new(label: String, start: Instant, timeout: Duration) -> Self {
        Waiting {
            label,
            start,
            timeout,
            next_report: start,
            first_seen: None,
        }
    }

    /// Every [`REPORT_EVERY`], logs who holds the lock; past `--lock-timeout`,
    /// the exit-75 error naming the holder.
    async fn report(&mut self, conn: &mut PgConnection, key: i64) -> Result<()> {
        let now = Instant::now();
        let expired = now.duration_since(self.start) >= self.timeout;
        if now < self.next_report && !expired {
            return Ok(());
        }
        let h = holder(conn, key).await.ok().flatten();
        if let Some(h) = &h
            && self.first_seen.is_none_or(|(pid, _)| pid != h.pid)
        {
            self.first_seen = Some((h.pid, now));
        }
        let held_for = self.first_seen.map_or(Duration::ZERO, |(_, t)| now - t);
        if expired {
            return Err(Error::Lock(format!(
                "advisory lock {} not acquired within {} (--lock-timeout); held by {}",
                self.label,
                humantime::format_duration(self.timeout),
                h.map_or_else(
                    || "a session that has just let go".to_string(),
                    |h| format!("{h}, seen holding it for {}s", held_for.as_secs())
                )
            )));
        }
        if let Some(h) = h {
            tracing::info!(
                key = %self.label,
                holder_pid = h.pid,
                holder = %h,
                held_for_s = held_for.as_secs(),
                waited_s = (now - self.start).as_secs(),
                "waiting for the migration lock"
            );
        } else {
            tracing::info!(
                key = %self.label,
                waited_s = (now - self.start).as_secs(),
                "waiting for the migration lock"
            );
        }
        self.next_report = now + REPORT_EVERY;
        Ok(())
    }
}

/// Takes the lock on `conn`, polling until `timeout`.
///
/// # Errors
/// Exit 75 when the timeout passes (naming the holder); exit 78 when a
/// pooler shares server connections (before the lock is taken, or if the
/// lock lands on another backend anyway: then that backend is ended, so the
/// lock is not left behind in the pool); `Error::Lost` when the connection is.
pub async fn acquire(
    target: &Target,
    mut conn: PgConnection,
    key: &LockKey,
    timeout: Duration,
) -> Result<Lock> {
    let start = Instant::now();
    let s = prepare(&mut conn, key).await?;
    pooling::detect(target, &mut conn, &s).await?;
    let label = key_label(key, s.key);
    let key = s.key;
    let mut waiting = Waiting::new(label.clone(), start, timeout);
    let try_lock = format!("SELECT pg_try_advisory_lock({key}), pg_backend_pid()");
    loop {
        let row = sql::row(&mut conn, &try_lock)
            .await
            .and_then(|r| r.ok_or(sqlx::Error::RowNotFound))
            .and_then(|r| Ok((r.try_get::<bool, _>(0)?, r.try_get::<i32, _>(1)?)))
            .map_err(|e| db_error("trying the advisory lock", &e))?;
        match row {
            (got, pid) if pid != s.backend_pid => {
                if got {
                    end_backend(&mut conn, pid).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
                return Err(pooling::pooled_error(
                    key,
                    &format!(
                        "the lock was tried on server backend {pid}, not on this session's {}",
                        s.backend_pid
                    ),
                ));
            }
            (true, _) => break,
            (false, _) => {}
        }
        if let Err(e) = waiting.report(&mut conn, key).await {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
            return Err(e);
        }
        // Jitter keeps several waiters from polling in lockstep.
        let jitter = u64::from(std::process::id() % 20);
        tokio::time::sleep(POLL.saturating_sub(Duration::from_millis(jitter))).await;
    }
    let mut lock = Lock {
        conn: Some(conn),
        key,
        backend_pid: s.backend_pid,
        server_version: s.server_version,
        postmaster_start: s.postmaster_start,
        acquired: Instant::now(),
        warned_nested: false,
        ended: false,
    };
    match lock.held_by_us().await {
        Ok(true) => {}
        Ok(false) => {
            lock.release().await;
            return Err(pooling::pooled_error(
                key,
                "pg_locks does not list the lock under this session's backend",
            ));
        }
        Err(e) => {
            drop(lock);
            return Err(db_error("checking the advisory lock", &e));
        }
    }
    tracing::info!(
        key = %label,
        backend_pid = s.backend_pid,
        waited_ms = crate::logging::ms(start.elapsed()),
        "migration lock acquired"
    );
    Ok(lock)
}

/// Ends server backend `pid` (it holds a lock that is not pgboot's to keep).
/// A role may end its own backends; if this one may not, say so.
async fn end_backend(conn: &mut PgConnection, pid: i32) {
    let q = format!("SELECT pg_terminate_backend({pid})");
    let ended = tokio::time::timeout(Duration::from_secs(3), sql::scalar::<bool>(conn, &q)).await;
    if let Ok(Ok(true)) = ended {
        tracing::warn!(
            backend_pid = pid,
            "ended the pooled server connection that took the advisory lock"
        );
    } else {
        tracing::error!(
            backend_pid = pid,
            "could not end the pooled server connection that took the advisory lock; \
             end it with SELECT pg_terminate_backend({pid})"
        );
    }
}

impl Lock {
    /// The lock connection, for migrations run on it.
    ///
    /// # Panics
    /// Never: the connection is there until `release`.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("the lock's connection is open until release")
    }

    /// How long the lock has been held.
    #[must_use]
    pub fn held(&self) -> Duration {
        self.acquired.elapsed()
    }

    /// Whether the lock session was lost because Postgres itself went away
    /// (shut down, restarted, or recovering from a crash), which ends every
    /// session and rolls back every transaction — the migration command's
    /// too. Evidence: the fencing check saw the session end with an error
    /// (not silence, which a partition gives), and a fresh connection is
    /// refused, or finds a postmaster started since the lock was taken.
    /// A session ended alone (`pg_terminate_backend`) is not this: the
    /// command's sessions may live on, so that is fencing (75).
    pub async fn server_went_away(&self, target: &Target) -> bool {
        if !self.ended {
            return false;
        }
        let Ok(mut c) = crate::wait::try_connect(target, Duration::from_secs(2)).await else {
            return true;
        };
        let now: std::result::Result<String, _> =
            sql::scalar(&mut c, "SELECT pg_postmaster_start_time()::text").await;
        crate::migrate::close(c).await;
        now.map_or(true, |t| t != self.postmaster_start)
    }

    async fn held_by_us(&mut self) -> std::result::Result<bool, sqlx::Error> {
        let q = format!(
            "SELECT count(*) FROM pg_locks l WHERE l.granted AND l.pid = pg_backend_pid() AND {}",
            lock_row(self.key)
        );
        let n: i64 = sql::scalar(self.conn(), &q).await?;
        Ok(n > 0)
    }

    /// Releases the lock explicitly and closes its connection; returns how
    /// long it was held. Never fails: a failed unlock is logged, and closing
    /// the session frees the lock anyway. The unlock names its backend: if it
    /// ran on another one (a pooler), the lock's own backend is ended.
    pub async fn release(mut self) -> Duration {
        let held = self.held();
        let key = self.key;
        let Some(mut conn) = self.conn.take() else {
            return held;
        };
        let unlock = format!("SELECT pg_advisory_unlock({key}), pg_backend_pid()");
        let unlocked =
            tokio::time::timeout(Duration::from_secs(5), sql::row(&mut conn, &unlock)).await;
        match unlocked {
            Ok(Ok(Some(r))) => match (r.try_get::<bool, _>(0), r.try_get::<i32, _>(1)) {
                (Ok(true), Ok(pid)) if pid == self.backend_pid => {
                    tracing::debug!(key, "lock released");
                }
                (_, Ok(pid)) if pid != self.backend_pid => {
                    end_backend(&mut conn, self.backend_pid).await;
                }
                _ => tracing::warn!(
                    key,
                    "pg_advisory_unlock returned false: the lock was not held"
                ),
            },
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(key, error = %e, "unlock failed; closing the session releases the lock");
            }
            Err(_) => tracing::warn!(
                key,
                "unlock timed out; closing the session releases the lock"
            ),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
        held
    }

    /// Gives the lock up after pgboot was cut short (a signal) in the middle
    /// of a statement on the lock session: ends that backend from a fresh
    /// connection, so its transaction rolls back and the lock is freed at
    /// once rather than when the statement ends; then drops the session.
    pub async fn abort(self, target: &Target) {
        let pid = self.backend_pid;
        if let Ok(mut c) = crate::wait::try_connect(target, Duration::from_secs(3)).await {
            let r = sql::execute(&mut c, &format!("SELECT pg_terminate_backend({pid})")).await;
            tracing::debug!(backend_pid = pid, ok = r.is_ok(), "ended the lock session");
            crate::migrate::close(c).await;
        }
        drop(self);
    }

    /// The environment a command run under the lock gets: the lock's
    /// variables, `PGAPPNAME` (see [`command_application_name`]) and, on 14+,
    /// `client_connection_check_interval` in `PGOPTIONS`; with
    /// `ddl_lock_timeout`, `lock_timeout` in `PGOPTIONS` too, after the
    /// user's own (the last `-c` wins).
    #[must_use]
    pub fn child_env(&self, ddl_lock_timeout: Option<Duration>) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGBOOT_LOCK_HELD".to_string(), "1".to_string()),
            ("PGBOOT_LOCK_KEY".to_string(), self.key.to_string()),
        ];
        if user_application_name().is_none() {
            env.push(("PGAPPNAME".to_string(), command_application_name()));
        }
        let mut extra: Vec<String> = TCP_SETTINGS
            .iter()
            .filter(|(k, _)| *k != "tcp_user_timeout" || self.server_version >= 120_000)
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect();
        if self.server_version >= 140_000 {
            extra.push(format!(
                "-c client_connection_check_interval={CHECK_INTERVAL_MS}"
            ));
        }
        if let Some(t) = ddl_lock_timeout {
            extra.push(format!(
                "-c lock_timeout={}ms",
                crate::ddl_retry::lock_timeout_ms(t)
            ));
        }
        let extra = extra.join(" ");
        let opts = match std::env::var("PGOPTIONS") {
            Ok(old) if !old.trim().is_empty() => format!("{old} {extra}"),
            _ => extra,
        };
        env.push(("PGOPTIONS".to_string(), opts));
        env
    }

    /// Waits, at most `timeout`, until no session of the command run under
    /// the lock is left in this database: sessions named
    /// [`command_application_name`] that started while the lock was held.
    ///
    /// A command that pgboot stopped (signal, fencing, timeout) dies at
    /// once, but its backend only notices at its next
    /// `client_connection_check_interval` tick, mid-statement; the lock must
    /// not be released before then, or the next replica migrates while that
    /// backend still runs (about 0.7 s of overlap measured in issue 7).
    /// Never fails: a lost lock session has freed the lock already, and
    /// giving up is logged.
    pub async fn wait_sessions_gone(&mut self, timeout: Duration) {
        let name = command_application_name();
        let start = Instant::now();
        // A session older than the lock cannot be the command's: with a
        // PGAPPNAME of the user's own, the app's other sessions share it.
        let since_s = self.held().as_secs_f64() + 1.0;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let q = format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = {} AND datname = current_database() \
                   AND pid <> pg_backend_pid() \
                   AND backend_start >= now() - make_interval(secs => {since_s})",
                lit(&name)
            );
            let probe = sql::scalar::<i64>(self.conn(), &q);
            match tokio::time::timeout(left.min(Duration::from_secs(1)), probe).await {
                Ok(Ok(0)) => {
                    tracing::debug!(
                        application_name = %name,
                        waited_ms = crate::logging::ms(start.elapsed()),
                        "the command's database sessions are gone"
                    );
                    return;
                }
                Ok(Ok(n)) if start.elapsed() >= timeout => {
                    tracing::warn!(
                        application_name = %name,
                        sessions = n,
                        waited_ms = crate::logging::ms(start.elapsed()),
                        "the stopped command's database sessions are still there; releasing the lock anyway"
                    );
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot look for the command's sessions; the lock session is gone, and the lock with it");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        application_name = %name,
                        "the lock session did not answer while waiting for the command's sessions to end; releasing the lock"
                    );
                    return;
                }
            }
            tokio::time::sleep(SESSIONS_POLL).await;
        }
    }
}

/// How long pgboot waits for a stopped command's sessions to end before it
/// releases the lock anyway: five `client_connection_check_interval` ticks.
pub const SESSIONS_GONE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often it looks.
const SESSIONS_POLL: Duration = Duration::from_millis(20);
/// Postgres keeps the first `NAMEDATALEN - 1` bytes of an `application_name`.
const APPLICATION_NAME_MAX: usize = 63;

/// `PGAPPNAME` from pgboot's environment, when the user set one.
fn user_application_name() -> Option<String> {
    std::env::var("PGAPPNAME").ok().filter(|v| !v.is_empty())
}

/// The `application_name` of the sessions of a command run under the lock,
/// as the server stores it: the user's `PGAPPNAME`, else
/// `pgboot-migrate@HOST:PID` (PID is pgboot's), cut to 63 bytes.
#[must_use]
pub fn command_application_name() -> String {
    let name = user_application_name().unwrap_or_else(|| {
        let host: String = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into())
            .chars()
            // The server replaces what is not printable ASCII; keep the name
            // comparable by never sending such a character.
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        // The pid goes first into the budget: it is what tells replicas on
        // one host apart, and a long host name is cut instead.
        let pid = format!(":{}", std::process::id());
        let room = APPLICATION_NAME_MAX - "pgboot-migrate@".len() - pid.len();
        format!("pgboot-migrate@{}{pid}", &host[..host.len().min(room)])
    });
    truncate_at_char(name, APPLICATION_NAME_MAX)
}

fn truncate_at_char(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl crate::supervise::Watchdog for Lock {
    /// Fencing: the lock session must still be there, still be the same
    /// backend, and still hold the lock; and a session blocked on our very
    /// key means the command takes the same lock itself (a nested lock in
    /// env.py), which deadlocks.
    async fn check(&mut self) -> Option<String> {
        let row = lock_row(self.key);
        let q = format!(
            "SELECT pg_backend_pid(), \
                    (SELECT count(*) FROM pg_locks l WHERE l.granted AND l.pid = pg_backend_pid() AND {row}), \
                    (SELECT string_agg(a.pid || ' (' || coalesce(a.application_name, '') || ')', ', ') \
                       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                      WHERE NOT l.granted AND {row})"
        );
        let key = self.key;
        let probe = sql::row(self.conn(), &q);
        let answer = match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Err(_) => return Some("the lock session did not answer within 3s".into()),
            Ok(Err(e)) => {
                self.ended = failure::connection_lost(&e);
                return Some(format!(
                    "the lock session was lost: {}",
                    failure::classify(&e).text()
                ));
            }
            Ok(Ok(None)) => return Some("the lock session returned nothing".into()),
            Ok(Ok(Some(r))) => (
                r.try_get::<i32, _>(0),
                r.try_get::<i64, _>(1),
                r.try_get::<Option<String>, _>(2),
            ),
        };
        match answer {
            (Ok(pid), _, _) if pid != self.backend_pid => Some(format!(
                "the lock session's statement ran on server backend {pid}, not {}: a pooler",
                self.backend_pid
            )),
            (_, Ok(0), _) => Some("the lock session no longer holds the lock".into()),
            (_, _, Ok(Some(waiters))) => {
                if !self.warned_nested {
                    self.warned_nested = true;
                    tracing::error!(
                        key,
                        waiters = %waiters,
                        "another session is blocked waiting for the very advisory lock pgboot holds for this migration: \
                         the migration command probably takes the same lock itself (e.g. in alembic's env.py) and will \
                         deadlock. pgboot already serialises migrations: skip the command's own lock when \
                         PGBOOT_LOCK_HELD=1, or give pgboot a different --lock-key"
                    );
                }
                None
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                Some(format!("the lock session's answer was unreadable: {e}"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_application_name_fits_what_postgres_keeps() {
        let name = command_application_name();
        assert!(name.len() <= APPLICATION_NAME_MAX, "{name}");
        if user_application_name().is_none() {
            assert!(name.starts_with("pgboot-migrate@"), "{name}");
            assert!(
                name.ends_with(&format!(":{}", std::process::id())),
                "{name}"
            );
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name}");
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_at_char("abcdef".into(), 4), "abcd");
        assert_eq!(truncate_at_char("ab\u{e9}cd".into(), 3), "ab");
        assert_eq!(truncate_at_char("short".into(), 63), "short");
    }
}

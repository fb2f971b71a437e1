//! The lock: a session-level advisory lock on a dedicated connection.
//! The connection is the lock: [`Lock`] owns it, and releasing closes it.
//!
//! Needs a ready connection (from `wait`). Returns a held [`Lock`]. The wait
//! polls `pg_try_advisory_lock` and never blocks in `pg_advisory_lock`: a
//! blocked waiter holds a snapshot, and a `CREATE INDEX CONCURRENTLY` in the
//! holder's migration then waits for it forever (see flyway#1654,
//! golang-migrate#960). Between polls the waiter is idle. Failures: the lock
//! not taken within `--lock-timeout`, or lost while held → exit 75; the lock
//! not held by our own backend (a transaction-pooling `PgBouncer`) → exit 78.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use crate::config::LockKey;
use crate::error::{Error, Result};

/// How often a waiter tries the lock. Bounds the handoff latency: a waiter
/// takes a released lock within one interval.
const POLL: Duration = Duration::from_millis(100);
/// How often a waiter logs who holds the lock.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How often a killed holder's backend checks that its client is still there.
const CHECK_INTERVAL_MS: u32 = 1000;

/// Settings for the lock session, applied only where the server knows them
/// (`client_connection_check_interval` and `idle_session_timeout` are 14+).
const SESSION_SQL: &str = "\
SELECT count(set_config(s.name, s.value, false)) FROM (VALUES
  ('statement_timeout', '0'),
  ('idle_session_timeout', '0'),
  ('idle_in_transaction_session_timeout', '0'),
  ('client_connection_check_interval', $1),
  ('tcp_keepalives_idle', '5'),
  ('tcp_keepalives_interval', '2'),
  ('tcp_keepalives_count', '3')
) AS s(name, value) WHERE s.name IN (SELECT name FROM pg_settings)";

/// The `pg_locks` row of an advisory lock on a 64-bit key: classid holds the
/// high 32 bits, objid the low 32 bits, objsubid is 1. Advisory locks belong
/// to a database, and `pg_locks` lists the whole cluster's: the same key in
/// another database is another lock, its holder and waiters none of ours.
const LOCK_ROW: &str = "l.locktype = 'advisory' AND l.objsubid = 1 \
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
  AND l.classid::bigint = (($1::bigint >> 32) & 4294967295) \
  AND l.objid::bigint = ($1::bigint & 4294967295)";

/// Resolves `--lock-key` to its 64-bit key: a name `K` is the server's
/// `hashtextextended('K', 0)`, so anyone can take the same lock from SQL.
///
/// # Errors
/// The query failed.
pub async fn resolve_key(conn: &mut PgConnection, key: &LockKey) -> Result<i64> {
    match key {
        LockKey::Int(k) => Ok(*k),
        LockKey::Name(name) => sqlx::query_scalar("SELECT hashtextextended($1, 0)")
            .bind(name)
            .fetch_one(conn)
            .await
            .map_err(|e| db_error("resolving the lock key", &e)),
    }
}

fn db_error(what: &str, e: &sqlx::Error) -> Error {
    match crate::wait::classify(e) {
        crate::wait::Failure::Transient(m) | crate::wait::Failure::Refused(m) => {
            Error::Lock(format!("{what}: {m}"))
        }
        crate::wait::Failure::Fatal(m) => Error::Config(format!("{what}: {m}")),
    }
}

/// Who holds the lock, as `pg_stat_activity` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's backend pid.
    pub pid: i32,
    /// Its `application_name` (`pgboot@HOST` for another pgboot).
    pub application_name: String,
    /// Its client address, or `local` for a Unix socket.
    pub client: String,
    /// Its session's age, seconds.
    pub session_age_s: i64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}, from {}, session {}s old)",
            self.pid,
            if self.application_name.is_empty() {
                "no application_name"
            } else {
                &self.application_name
            },
            self.client,
            self.session_age_s
        )
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
    let sql = format!(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), \
           coalesce(extract(epoch FROM now() - a.backend_start)::bigint, 0) \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.granted AND {LOCK_ROW} LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| Holder {
        pid: r.get(0),
        application_name: r.get(1),
        client: r.get(2),
        session_age_s: r.get(3),
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
    acquired: Instant,
    warned_nested: bool,
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

/// Prepares `conn` as the lock session: settings, and the key resolved.
///
/// # Errors
/// A query failed.
pub async fn prepare(conn: &mut PgConnection, key: &LockKey) -> Result<(i64, i32, i32)> {
    sqlx::query("SELECT set_config('application_name', $1, false)")
        .bind(application_name())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("setting application_name", &e))?;
    sqlx::query(SESSION_SQL)
        .bind(CHECK_INTERVAL_MS.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("configuring the lock session", &e))?;
    let row = sqlx::query("SELECT pg_backend_pid(), current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("reading the backend pid", &e))?;
    let key = resolve_key(conn, key).await?;
    Ok((key, row.get(0), row.get(1)))
}

/// Takes the lock on `conn`, polling until `timeout`.
///
/// # Errors
/// Exit 75 when the timeout passes (naming the holder); exit 78 when the
/// lock lands on another backend (a pooler between pgboot and Postgres).
pub async fn acquire(mut conn: PgConnection, key: &LockKey, timeout: Duration) -> Result<Lock> {
    let start = Instant::now();
    let (key, backend_pid, server_version) = prepare(&mut conn, key).await?;
    let mut next_report = start;
    let mut first_seen: Option<(i32, Instant)> = None;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| db_error("trying the advisory lock", &e))?;
        if got {
            break;
        }
        let now = Instant::now();
        if now >= next_report || now >= start + timeout {
            let h = holder(&mut conn, key).await.ok().flatten();
            if let Some(h) = &h {
                if first_seen.is_none_or(|(pid, _)| pid != h.pid) {
                    first_seen = Some((h.pid, now));
                }
            }
            let held_for = first_seen.map_or(Duration::ZERO, |(_, t)| now - t);
            if now >= start + timeout {
                let _ = conn.close().await;
                return Err(Error::Lock(format!(
                    "advisory lock {key} not acquired within {} (--lock-timeout); held by {}",
                    humantime::format_duration(timeout),
                    h.map_or_else(
                        || "a session that has just let go".to_string(),
                        |h| format!("{h}, seen holding it for {}s", held_for.as_secs())
                    )
                )));
            }
            if let Some(h) = h {
                tracing::info!(
                    key,
                    holder_pid = h.pid,
                    holder = %h.application_name,
                    client = %h.client,
                    held_for_s = held_for.as_secs(),
                    waited_s = (now - start).as_secs(),
                    "waiting for the migration lock"
                );
            } else {
                tracing::info!(key, "waiting for the migration lock");
            }
            next_report = now + REPORT_EVERY;
        }
        // Jitter keeps several waiters from polling in lockstep.
        let jitter = u64::from(std::process::id() % 20);
        tokio::time::sleep(POLL.saturating_sub(Duration::from_millis(jitter))).await;
    }
    let mut lock = Lock {
        conn: Some(conn),
        key,
        backend_pid,
        server_version,
        acquired: Instant::now(),
        warned_nested: false,
    };
    if !lock.held_by_us().await.unwrap_or(false) {
        lock.release().await;
        return Err(Error::Config(format!(
            "advisory lock {key} was taken but is not held by this session's backend \
             (pid {backend_pid}): a transaction-pooling PgBouncer sits between pgboot and \
             Postgres; point --migrate-database-url (PGBOOT_MIGRATE_DATABASE_URL) at Postgres \
             directly or at a session-mode pool"
        )));
    }
    tracing::info!(
        key,
        backend_pid,
        waited_ms = start.elapsed().as_millis(),
        "migration lock acquired"
    );
    Ok(lock)
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

    async fn held_by_us(&mut self) -> std::result::Result<bool, sqlx::Error> {
        let sql = format!(
            "SELECT count(*) FROM pg_locks l WHERE l.granted AND l.pid = pg_backend_pid() AND {LOCK_ROW}"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(self.key)
            .fetch_one(self.conn())
            .await?;
        Ok(n > 0)
    }

    /// Releases the lock explicitly and closes its connection. Never fails:
    /// a failed unlock is logged, and closing the session frees the lock anyway.
    pub async fn release(mut self) {
        let key = self.key;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .fetch_one(&mut conn),
        )
        .await;
        match unlocked {
            Ok(Ok(true)) => tracing::debug!(key, "lock released"),
            Ok(Ok(false)) => tracing::warn!(
                key,
                "pg_advisory_unlock returned false: the lock was not held"
            ),
            Ok(Err(e)) => {
                tracing::warn!(key, error = %e, "unlock failed; closing the session releases the lock");
            }
            Err(_) => tracing::warn!(
                key,
                "unlock timed out; closing the session releases the lock"
            ),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
    }

    /// The environment a command run under the lock gets: the lock's
    /// variables, `PGAPPNAME` (see [`command_application_name`]) and, on 14+,
    /// `client_connection_check_interval` in `PGOPTIONS`.
    #[must_use]
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGBOOT_LOCK_HELD".to_string(), "1".to_string()),
            ("PGBOOT_LOCK_KEY".to_string(), self.key.to_string()),
        ];
        if user_application_name().is_none() {
            env.push(("PGAPPNAME".to_string(), command_application_name()));
        }
        if self.server_version >= 140_000 {
            let extra = format!("-c client_connection_check_interval={CHECK_INTERVAL_MS}");
            let opts = match std::env::var("PGOPTIONS") {
                Ok(old) if !old.trim().is_empty() => format!("{old} {extra}"),
                _ => extra,
            };
            env.push(("PGOPTIONS".to_string(), opts));
        }
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
            let probe = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND datname = current_database() \
                   AND pid <> pg_backend_pid() \
                   AND backend_start >= now() - make_interval(secs => $2)",
            )
            .bind(&name)
            .bind(since_s)
            .fetch_one(self.conn());
            match tokio::time::timeout(left.min(Duration::from_secs(1)), probe).await {
                Ok(Ok(0)) => {
                    tracing::debug!(
                        application_name = %name,
                        waited_ms = start.elapsed().as_millis(),
                        "the command's database sessions are gone"
                    );
                    return;
                }
                Ok(Ok(n)) if start.elapsed() >= timeout => {
                    tracing::warn!(
                        application_name = %name,
                        sessions = n,
                        waited_ms = start.elapsed().as_millis(),
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
    /// Fencing: the lock session must still be there and still hold the
    /// lock; and a session blocked on our very key means the command takes
    /// the same lock itself (a nested lock in env.py), which deadlocks.
    async fn check(&mut self) -> Option<String> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM pg_locks l WHERE l.granted AND l.pid = pg_backend_pid() AND {LOCK_ROW}), \
                    (SELECT string_agg(a.pid || ' (' || coalesce(a.application_name, '') || ')', ', ') \
                       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                      WHERE NOT l.granted AND {LOCK_ROW})"
        );
        let key = self.key;
        let probe = sqlx::query_as::<_, (i64, Option<String>)>(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_one(self.conn());
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Err(_) => Some("the lock session did not answer within 3s".into()),
            Ok(Err(e)) => Some(format!("the lock session was lost: {e}")),
            Ok(Ok((0, _))) => Some("the lock session no longer holds the lock".into()),
            Ok(Ok((_, Some(waiters)))) => {
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
            Ok(Ok(_)) => None,
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

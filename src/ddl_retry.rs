//! Rolling deploys: bounded waits for table locks during a migration, and
//! retrying a migration that hit one.
//!
//! Why: a migration's `ALTER TABLE` needs ACCESS EXCLUSIVE, queues behind any
//! open transaction on its table (a report, a `pg_dump`), and every later
//! query on that table queues behind it: the old replicas, still serving,
//! stall for as long as the reader runs (10.4 s measured in issue 9). With
//! `lock_timeout` the migration gives up instead, its transaction rolls back,
//! the queue drains, and pgboot tries again a little later, until
//! `--ddl-retry-for` runs out.
//!
//! Needs `--ddl-lock-timeout`/`--ddl-retry-for` ([`DdlRetry`]) and, to say
//! who blocked a migration, a connection that can read `pg_locks` and
//! `pg_stat_activity`. Returns the backoff before the next attempt, or the
//! error that ends the retries: the budget spent → exit 75 (a lock not
//! acquired in time, like `--lock-timeout`: a later start may succeed);
//! `--migrate-timeout` passed → 65, as when a migration runs too long.
//!
//! See: issue 9.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::config::DdlRetry;
use crate::error::{Error, Result};
use crate::sql;
use crate::wait::Target;

/// The failures that are retried: the migration waited too long for a lock,
/// or was chosen as a deadlock's victim. Either way Postgres rolled back its
/// transaction, so nothing of it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockFailure {
    /// `lock_not_available` (55P03): `lock_timeout` passed (or `NOWAIT`).
    Timeout,
    /// `deadlock_detected` (40P01).
    Deadlock,
}

impl LockFailure {
    /// The failure a SQLSTATE means, if it is one of these.
    #[must_use]
    pub fn from_sqlstate(code: &str) -> Option<LockFailure> {
        match code {
            "55P03" => Some(LockFailure::Timeout),
            "40P01" => Some(LockFailure::Deadlock),
            _ => None,
        }
    }
}

impl fmt::Display for LockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockFailure::Timeout => "a lock timeout (55P03)",
            LockFailure::Deadlock => "a deadlock (40P01)",
        })
    }
}

/// The `lock_timeout` value for `SET`, in milliseconds (a sub-millisecond
/// remainder rounds up: `0` would turn the timeout off).
#[must_use]
pub fn lock_timeout_ms(d: Duration) -> u128 {
    d.as_micros().div_ceil(1000).max(1)
}

/// Who a waiting migration statement waited for, as seen while it waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The lock the migration waited for: the relation and the mode.
    pub waited_for: String,
    /// The blocking backend's pid.
    pub pid: i32,
    /// Its `application_name`; empty when hidden from this role.
    pub application_name: String,
    /// How long its transaction had been open, seconds; `None` when hidden.
    pub in_transaction_s: Option<i64>,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let app = if self.application_name.is_empty() {
            "application_name hidden or empty"
        } else {
            &self.application_name
        };
        write!(f, "{} held by pid {} ({app}", self.waited_for, self.pid)?;
        match self.in_transaction_s {
            Some(s) => write!(f, ", in a transaction for {s}s)"),
            None => f.write_str(")"),
        }
    }
}

/// How often a running migration is looked at for a lock wait. A wait shorter
/// than this may go unseen; the retry is made all the same.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(200);

/// The oldest open transaction blocking a session that `waiter` (a SQL
/// condition on `w`, a `pg_stat_activity` row) selects, while it waits for a
/// lock: found with `pg_blocking_pids()`, described from `pg_locks` and
/// `pg_stat_activity` as far as this role may see them.
///
/// # Errors
/// The query failed.
pub async fn blocker(
    conn: &mut PgConnection,
    waiter: &str,
) -> std::result::Result<Option<Blocker>, sqlx::Error> {
    let q = format!(
        "SELECT coalesce((SELECT coalesce(l.relation::regclass::text, l.locktype) || ' (' || l.mode || ')' \
                            FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted LIMIT 1), 'a lock'), \
                b.pid, coalesce(a.application_name, ''), \
                extract(epoch FROM now() - a.xact_start)::bigint \
         FROM pg_stat_activity w \
         CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid) \
         LEFT JOIN pg_stat_activity a ON a.pid = b.pid \
         WHERE w.wait_event_type = 'Lock' AND {waiter} \
         ORDER BY a.xact_start NULLS LAST LIMIT 1"
    );
    let Some(r) = sql::row(conn, &q).await? else {
        return Ok(None);
    };
    Ok(Some(Blocker {
        waited_for: r.try_get(0)?,
        pid: r.try_get(1)?,
        application_name: r.try_get(2)?,
        in_transaction_s: r.try_get(3)?,
    }))
}

/// Looks, every [`OBSERVE_EVERY`] over a connection of its own, for what
/// blocks backend `pid`, and keeps the last blocker seen in `seen`. Runs
/// until dropped (it is raced against the migration it watches).
pub async fn observe_backend(
    target: &Target,
    pid: i32,
    seen: &mut Option<Blocker>,
) -> std::convert::Infallible {
    let waiter = format!("w.pid = {pid}");
    let mut conn = None;
    loop {
        tokio::time::sleep(OBSERVE_EVERY).await;
        if conn.is_none() {
            conn = crate::wait::try_connect(target, Duration::from_secs(2))
                .await
                .ok();
        }
        if let Some(c) = conn.as_mut() {
            match tokio::time::timeout(Duration::from_secs(2), blocker(c, &waiter)).await {
                Ok(Ok(Some(b))) => *seen = Some(b),
                Ok(Ok(None)) => {}
                // Only a view of the wait is lost; the next look reconnects.
                Ok(Err(_)) | Err(_) => conn = None,
            }
        }
    }
}

/// The retries of one migration (or of the migration command): attempts,
/// backoff, and the limits that end them.
#[derive(Debug)]
pub struct Retrying {
    policy: DdlRetry,
    started: Instant,
    migrate_timeout: Option<Duration>,
    attempt: u32,
}

impl Retrying {
    /// Starts counting now; `migrate_timeout` is `--migrate-timeout`, counted
    /// from now too.
    #[must_use]
    pub fn new(policy: DdlRetry, migrate_timeout: Option<Duration>) -> Self {
        Retrying {
            policy,
            started: Instant::now(),
            migrate_timeout,
            attempt: 0,
        }
    }

    /// A new migration starts: its attempts count from 1 again; the budget
    /// and `--migrate-timeout` go on from the first.
    pub fn next_migration(&mut self) {
        self.attempt = 0;
    }

    /// Attempts made so far (failed ones, and the one running).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt.max(1)
    }

    /// What remains of `--migrate-timeout`, for the next attempt.
    #[must_use]
    pub fn migrate_time_left(&self) -> Option<Duration> {
        self.migrate_timeout
            .map(|t| t.saturating_sub(self.started.elapsed()))
    }

    /// Attempt N of `what` failed with `failure` (Postgres rolled it back);
    /// `seen` is who blocked it. Logs the one WARN line of the retry and
    /// returns the backoff to sleep before the next attempt.
    ///
    /// # Errors
    /// Exit 75 when `--ddl-retry-for` is spent (the backoff before the last
    /// attempt is shortened to start it within the budget); exit 65 when the
    /// next attempt would start after `--migrate-timeout`.
    pub fn after_failure(
        &mut self,
        what: &str,
        failure: LockFailure,
        seen: Option<&Blocker>,
    ) -> Result<Duration> {
        self.attempt = self.attempts();
        let attempt = self.attempt;
        let elapsed = self.started.elapsed();
        // The last backoff is cut short to land within the budget: the
        // retries go on for all of `--ddl-retry-for`, not for all of it
        // but the one backoff that would have overrun it.
        let left = self.policy.retry_for.saturating_sub(elapsed);
        let delay = backoff(attempt, jitter()).min(left);
        let after = elapsed + delay;
        let blocked = seen.map_or_else(
            || "no blocker seen (the wait was shorter than a look)".to_string(),
            ToString::to_string,
        );
        if left.is_zero() {
            return Err(Error::Lock(format!(
                "{what} still failed on {failure} after {attempt} attempts in {}s \
                 (--ddl-retry-for {}); last waited for {blocked}. Nothing of it was applied and the \
                 server is not started: end or wait out that session (pg_stat_activity), then \
                 start again, or give --ddl-retry-for more time",
                elapsed.as_secs(),
                humantime::format_duration(self.policy.retry_for)
            )));
        }
        if let Some(limit) = self.migrate_timeout
            && after > limit
        {
            return Err(Error::Migration(format!(
                "{what} failed on {failure} (attempt {attempt}) and another try would pass \
                 --migrate-timeout ({}); last waited for {blocked}. Nothing of it was applied",
                humantime::format_duration(limit)
            )));
        }
        tracing::warn!(
            what,
            failure = %failure,
            waited_for = seen.map_or("", |b| b.waited_for.as_str()),
            holder_pid = seen.map_or(0, |b| b.pid),
            holder = seen.map_or("", |b| b.application_name.as_str()),
            holder_in_transaction_s = seen.and_then(|b| b.in_transaction_s).unwrap_or(-1),
            attempt,
            next_try_ms = delay.as_millis(),
            "{what} hit {failure} and was rolled back: waited for {blocked}; attempt {attempt}, next try in {:.1}s",
            delay.as_secs_f64()
        );
        self.attempt += 1;
        Ok(delay)
    }
}

/// The backoff after failed attempt `attempt` (1, 2, …): 1 s doubling up to
/// 5 s, times `jitter` in [0.75, 1.25) so that replicas and retries do not
/// fall into step with the blocker's own rhythm.
#[must_use]
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let nominal = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(3))
        .min(Duration::from_secs(5));
    nominal.mul_f64(jitter.clamp(0.75, 1.25))
}

/// A jitter factor in [0.75, 1.25), from the standard library's per-process
/// random hashing keys and the clock.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    // 53 random bits, the precision of an f64's mantissa.
    #[allow(clippy::cast_precision_loss)]
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    0.75 + unit / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lock_timeouts_and_deadlocks_are_retried() {
        assert_eq!(
            LockFailure::from_sqlstate("55P03"),
            Some(LockFailure::Timeout)
        );
        assert_eq!(
            LockFailure::from_sqlstate("40P01"),
            Some(LockFailure::Deadlock)
        );
        for other in ["42P07", "57014", "40001", "23505", ""] {
            assert_eq!(LockFailure::from_sqlstate(other), None, "{other}");
        }
    }

    #[test]
    fn backoff_grows_from_one_to_five_seconds_within_its_jitter() {
        let secs = |n, j| backoff(n, j).as_secs_f64();
        assert!((secs(1, 1.0) - 1.0).abs() < 1e-9);
        assert!((secs(2, 1.0) - 2.0).abs() < 1e-9);
        assert!((secs(3, 1.0) - 4.0).abs() < 1e-9);
        assert!((secs(4, 1.0) - 5.0).abs() < 1e-9);
        assert!((secs(u32::MAX, 1.0) - 5.0).abs() < 1e-9);
        assert!((secs(1, 0.0) - 0.75).abs() < 1e-9);
        assert!((secs(9, 9.0) - 6.25).abs() < 1e-9);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.75..1.25).contains(&j), "{j}");
        }
    }

    #[test]
    fn lock_timeout_is_whole_milliseconds_never_zero() {
        assert_eq!(lock_timeout_ms(Duration::from_secs(2)), 2000);
        assert_eq!(lock_timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(lock_timeout_ms(Duration::from_nanos(1)), 1);
    }

    fn policy(retry_for: Duration) -> DdlRetry {
        DdlRetry {
            lock_timeout: Some(Duration::from_secs(1)),
            retry_for,
        }
    }

    #[test]
    fn retries_end_with_75_when_the_budget_is_spent() {
        let mut r = Retrying::new(policy(Duration::from_mins(1)), None);
        let d = r
            .after_failure("migration 2", LockFailure::Timeout, None)
            .unwrap();
        assert!(d <= Duration::from_millis(1250), "{d:?}");
        assert_eq!(r.attempts(), 2);
        // A backoff longer than what is left of the budget is cut to it: the
        // last attempt starts within the budget, and the next failure ends it.
        let mut r = Retrying::new(policy(Duration::from_millis(100)), None);
        let d = r
            .after_failure("migration 2", LockFailure::Timeout, None)
            .unwrap();
        assert!(d <= Duration::from_millis(100), "{d:?}");
        std::thread::sleep(d + Duration::from_millis(5));
        let seen = Blocker {
            waited_for: "jobs (AccessExclusiveLock)".into(),
            pid: 42,
            application_name: "report".into(),
            in_transaction_s: Some(9),
        };
        let e = r
            .after_failure("migration 2", LockFailure::Deadlock, Some(&seen))
            .unwrap_err();
        assert_eq!(e.exit(), crate::exit::Exit::Lock);
        let m = e.to_string();
        assert!(
            m.contains("--ddl-retry-for") && m.contains("pid 42 (report"),
            "{m}"
        );
    }

    #[test]
    fn retries_end_with_65_when_migrate_timeout_would_pass() {
        let mut r = Retrying::new(
            policy(Duration::from_mins(10)),
            Some(Duration::from_millis(100)),
        );
        let e = r
            .after_failure("the migration command", LockFailure::Timeout, None)
            .unwrap_err();
        assert_eq!(e.exit(), crate::exit::Exit::Migration);
        assert!(e.to_string().contains("--migrate-timeout"), "{e}");
    }
}

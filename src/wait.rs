//! Waiting: connect and run `SELECT 1` until Postgres answers.
//!
//! Needs a database URL (or libpq's `PG*` variables) and a deadline.
//! Returns an open, checked connection. Transient errors (refused, reset,
//! DNS, timeouts, 57P03 starting up, 53300 too many connections…) are
//! retried with exponential backoff and jitter (~50 ms up to ~1 s); errors no
//! wait can fix (authentication, no such database, no privilege, a
//! malformed URL, TLS) end the wait at once with exit 78; the deadline ends
//! it with exit 69, naming host:port and the last error.
//!
//! No message here contains a password or a whole URL: errors are rendered
//! by `failure::classify` and then passed through [`Target::redact`].
//! Refusals are polled every 50 ms for the first few seconds only; a
//! progress line is logged at least every 10 s.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnection;

use crate::conninfo::{self, Candidate, ConnInfo, Purpose, ServerState, SessionAttrs};
use crate::error::{Error, Result};
use crate::failure::{Failure, classify, is_tls};

/// Where pgboot connects: the candidate hosts, and what may be shown of them.
#[derive(Debug, Clone)]
pub struct Target {
    info: ConnInfo,
    /// `host:port` (or the socket path) for messages; the hosts joined by
    /// `,` when the URL names several.
    pub addr: String,
}

impl Target {
    /// Builds the target from a URL, or from libpq's variables when `None`,
    /// with `target_session_attrs` as given. `origin` names where the URL
    /// came from, for the error message.
    ///
    /// # Errors
    /// A malformed URL or TLS configuration (exit 78), a bad `PG*` variable
    /// (64), each named, never echoing the URL or a password.
    pub fn new(url: Option<&str>, origin: &str) -> Result<Target> {
        Target::resolve(url, origin, Purpose::AsGiven)
    }

    /// As [`Target::new`], for the lock and migrations: only a writable
    /// primary will do. A URL asking for a standby or a read-only session
    /// is a usage error (64); meeting only standbys is transient (a
    /// failover may be under way).
    ///
    /// # Errors
    /// As [`Target::new`].
    pub fn writable(url: Option<&str>, origin: &str) -> Result<Target> {
        Target::resolve(url, origin, Purpose::Writable)
    }

    fn resolve(url: Option<&str>, origin: &str, purpose: Purpose) -> Result<Target> {
        let info = conninfo::resolve(url, origin, purpose, &|k| std::env::var(k).ok())?;
        let addr = info
            .candidates
            .iter()
            .map(|c| c.addr.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Target { info, addr })
    }

    /// Removes every secret this target knows from `msg`.
    #[must_use]
    pub fn redact(&self, msg: &str) -> String {
        redact(msg, &self.info.secrets)
    }

    /// `user@host:port/database`, for logs.
    #[must_use]
    pub fn display(&self) -> String {
        format!("{}@{}/{}", self.info.user, self.addr, self.info.database)
    }
}

fn redact(msg: &str, secrets: &[String]) -> String {
    let mut out = msg.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// One attempt: each candidate host in turn (each bounded by
/// `connect_timeout`, all by `limit`), connect, run `SELECT 1` or check the
/// session is what `target_session_attrs` asks for; the first that is wins.
///
/// # Errors
/// The attempt's failure, classified: fatal as soon as one host's failure
/// is (a wrong password or certificate is not fixed by another host);
/// otherwise transient, naming each host tried and what it said, and
/// `Refused` when every host refused.
pub async fn try_connect(
    target: &Target,
    limit: Duration,
) -> std::result::Result<PgConnection, Failure> {
    let info = &target.info;
    let deadline = Instant::now() + limit;
    let several = info.candidates.len() > 1;
    let name = |c: &Candidate, m: &str| {
        if several {
            format!("{}: {m}", c.addr)
        } else {
            m.to_string()
        }
    };
    let mut problems: Vec<Failure> = Vec::new();
    // prefer-standby: the first non-standby, kept in case no host is one.
    let mut fallback: Option<PgConnection> = None;
    for c in &info.candidates {
        let left = deadline.saturating_duration_since(Instant::now());
        let (per_host, why) = match info.connect_timeout {
            Some(t) if t < left => (t, "connect_timeout"),
            _ => (left, "this attempt's limit"),
        };
        if per_host.is_zero() {
            problems.push(Failure::Transient(name(c, "not tried: no time left")));
            continue;
        }
        match tokio::time::timeout(per_host, attempt(c, info.attrs)).await {
            Ok(Ok((conn, state))) if info.attrs.accepts(state) => {
                if let Some(other) = fallback {
                    crate::migrate::close(other).await;
                }
                for p in &problems {
                    tracing::debug!(tried = %target.redact(p.text()), "passed over a host listed earlier");
                }
                return Ok(conn);
            }
            Ok(Ok((conn, _)))
                if info.attrs == SessionAttrs::PreferStandby && fallback.is_none() =>
            {
                fallback = Some(conn);
            }
            Ok(Ok((conn, state))) => {
                crate::migrate::close(conn).await;
                problems.push(Failure::Transient(name(c, &mismatch(info.attrs, state))));
            }
            Ok(Err(Failure::Fatal(m))) => {
                if let Some(other) = fallback {
                    crate::migrate::close(other).await;
                }
                return Err(Failure::Fatal(name(c, &m)));
            }
            Ok(Err(Failure::Refused(m))) => problems.push(Failure::Refused(name(c, &m))),
            Ok(Err(Failure::Transient(m))) => problems.push(Failure::Transient(name(c, &m))),
            Err(_) => problems.push(Failure::Transient(name(
                c,
                &format!(
                    "no answer within {} ({why})",
                    humantime::format_duration(per_host)
                ),
            ))),
        }
    }
    if let Some(conn) = fallback {
        return Ok(conn);
    }
    let text = problems
        .iter()
        .map(Failure::text)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.iter().all(|f| matches!(f, Failure::Refused(_))) {
        Err(Failure::Refused(text))
    } else {
        Err(Failure::Transient(text))
    }
}

/// One host: its TLS files, the connection, and what the server is.
async fn attempt(
    c: &Candidate,
    attrs: SessionAttrs,
) -> std::result::Result<(PgConnection, ServerState), Failure> {
    c.check_files().map_err(Failure::Fatal)?;
    let mut conn = c.opts.connect().await.map_err(|e| match classify(&e) {
        Failure::Fatal(m) if is_tls(&e) => Failure::Fatal(format!("{m} ({})", c.tls)),
        f => f,
    })?;
    if attrs == SessionAttrs::Any {
        crate::sql::execute(&mut conn, "SELECT 1")
            .await
            .map_err(|e| classify(&e))?;
        let any = ServerState {
            in_recovery: false,
            read_only: false,
        };
        return Ok((conn, any));
    }
    // Text, not bool: the simple protocol returns text, and these are
    // compared as libpq compares them.
    let row = crate::sql::row(
        &mut conn,
        "SELECT pg_is_in_recovery()::text, current_setting('transaction_read_only')",
    )
    .await
    .map_err(|e| classify(&e))?;
    let get = |i: usize| -> String {
        row.as_ref()
            .and_then(|r| sqlx::Row::try_get::<String, _>(r, i).ok())
            .unwrap_or_default()
    };
    let state = ServerState {
        in_recovery: get(0) == "true",
        read_only: get(1) == "on",
    };
    Ok((conn, state))
}

/// Why a connected server is not the one asked for.
fn mismatch(attrs: SessionAttrs, state: ServerState) -> String {
    let is = match (state.in_recovery, state.read_only) {
        (true, _) => "is a standby (in recovery)",
        (false, true) => {
            "is a primary whose sessions are read-only (default_transaction_read_only)"
        }
        (false, false) => "is a writable primary",
    };
    let hint = if matches!(attrs, SessionAttrs::ReadWrite | SessionAttrs::Primary) {
        "; waiting for a primary (a failover may be under way)"
    } else {
        ""
    };
    format!(
        "{is}, not what target_session_attrs={} asks for{hint}",
        attrs.name()
    )
}

/// The delay after a refused connection: nothing listens, so a try costs a
/// SYN and a RST; trying often is what detects a starting Postgres quickly.
const REFUSED_RETRY: Duration = Duration::from_millis(50);
/// Refusals are polled at [`REFUSED_RETRY`] only this long into a wait: a
/// container start or a restart takes a few seconds, and a Postgres that is
/// down for longer gets the ordinary backoff (≤ 1 s) instead of ~20 tries a
/// second from every replica.
const REFUSED_FAST_FOR: Duration = Duration::from_secs(3);
/// While waiting, a progress line at least this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The backoff between other attempts: from ~50 ms, doubling, capped near
/// 1 s. backon's jitter adds up to the delay itself, so the cap is 500 ms.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Waits until `target` accepts queries; returns the connection. `lost`
/// says what pgboot was doing when it lost the connection, when this wait
/// is a ride-through rather than the first one (only the messages differ;
/// the budget is `timeout` either way, counted from now).
///
/// # Errors
/// Exit 78 for an error no wait can fix; exit 69 when `timeout` passes.
pub async fn ready(target: &Target, timeout: Duration, lost: Option<&str>) -> Result<PgConnection> {
    let start = Instant::now();
    let deadline = start.checked_add(timeout);
    let last_error: RefCell<Option<String>> = RefCell::new(None);
    let attempts = RefCell::new(0u32);
    let mut last_refused = false;
    let attempt = || async {
        *attempts.borrow_mut() += 1;
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        try_connect(
            target,
            left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
        )
        .await
    };
    let retry = attempt
        .retry(backoff())
        .sleep(tokio::time::sleep)
        .when(Failure::is_transient)
        .adjust(|e, delay| {
            // Right after Postgres starts listening it may still say 57P03
            // for a few ms: the first failure after a run of refusals is
            // retried as quickly, then the backoff takes over again.
            let was_refused = std::mem::replace(&mut last_refused, matches!(e, Failure::Refused(_)));
            if (last_refused || was_refused) && start.elapsed() < REFUSED_FAST_FOR {
                Some(REFUSED_RETRY)
            } else {
                delay
            }
        })
        .notify(|e, after| {
            let msg = target.redact(e.text());
            let first = last_error.borrow().is_none();
            if first {
                tracing::info!(addr = %target.addr, error = %msg, "waiting for Postgres");
            } else {
                tracing::debug!(addr = %target.addr, error = %msg, retry_in_ms = crate::logging::ms(after), "not ready yet");
            }
            *last_error.borrow_mut() = Some(msg);
        });
    let after_loss = lost.map_or_else(String::new, |what| {
        format!(" after the connection was lost while {what}")
    });
    // The progress line comes from a timer, not from a failed attempt: an
    // attempt that hangs (packets dropped) takes up to 5 s, and the line
    // must still come every PROGRESS_EVERY.
    let progress = async {
        let first = tokio::time::Instant::from_std(start + PROGRESS_EVERY);
        let mut tick = tokio::time::interval_at(first, PROGRESS_EVERY);
        loop {
            tick.tick().await;
            let now = Instant::now();
            tracing::info!(
                addr = %target.addr,
                attempts = *attempts.borrow(),
                waited_s = (now - start).as_secs(),
                gives_up_in_s = deadline.map_or(u64::MAX, |d| d.saturating_duration_since(now).as_secs()),
                error = %last_error.borrow().as_deref().unwrap_or("none yet"),
                "still waiting for Postgres"
            );
        }
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, retry) => r,
        never = progress => never,
    };
    match outcome {
        Ok(Ok(conn)) => {
            tracing::debug!(attempts = *attempts.borrow(), "Postgres is ready");
            Ok(conn)
        }
        Ok(Err(Failure::Fatal(m))) => Err(Error::Config(format!(
            "cannot connect to {}: {}",
            target.display(),
            target.redact(&m)
        ))),
        Ok(Err(Failure::Transient(m) | Failure::Refused(m))) => Err(Error::Unavailable(format!(
            "Postgres at {} did not become ready{after_loss}: {}",
            target.addr,
            target.redact(&m)
        ))),
        Err(_) => Err(Error::Unavailable(format!(
            "Postgres at {} did not {} within {} (--wait-timeout){after_loss}; last error: {}",
            target.addr,
            if lost.is_some() {
                "come back"
            } else {
                "become ready"
            },
            humantime::format_duration(timeout),
            last_error.borrow().clone().unwrap_or_else(|| "none".into())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("auth s3cr@t failed", &["s3cr@t".into()]),
            "auth *** failed"
        );
    }

    #[test]
    fn malformed_url_is_config_error_without_password() {
        let e =
            Target::new(Some("postgres://u:hunter22@db:notaport/x"), "DATABASE_URL").unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Config(_)));
        assert!(m.contains("DATABASE_URL") && !m.contains("hunter22"), "{m}");
        let e = Target::new(Some("mysql://u:hunter22@db/x"), "DATABASE_URL").unwrap_err();
        assert!(!e.to_string().contains("hunter22"));
    }

    #[test]
    fn addr_names_host_and_port() {
        let t = Target::new(Some("postgres://u:p@db.example:6543/x"), "x").unwrap();
        assert_eq!(t.addr, "db.example:6543");
        assert_eq!(t.display(), "u@db.example:6543/x");
        let t = Target::new(Some("postgres://u:p@db1,db2:6543/x"), "x").unwrap();
        // As in libpq, a host without a port gets the default one.
        assert_eq!(t.addr, "db1:5432,db2:6543");
    }

    #[test]
    fn a_mismatch_says_what_the_server_is() {
        let standby = ServerState {
            in_recovery: true,
            read_only: true,
        };
        let m = mismatch(SessionAttrs::ReadWrite, standby);
        assert!(m.contains("standby") && m.contains("read-write"), "{m}");
    }
}

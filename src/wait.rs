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
use std::str::FromStr;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::error::{Error, Result};
use crate::failure::{Failure, classify};

/// Where pgboot connects: the options, and what may be shown of them.
#[derive(Debug, Clone)]
pub struct Target {
    /// The options sqlx connects with.
    pub opts: PgConnectOptions,
    /// `host:port` (or the socket path) for messages.
    pub addr: String,
    /// Secrets to scrub from any message: the URL's password, raw and decoded.
    secrets: Vec<String>,
}

impl Target {
    /// Builds the target from a URL, or from libpq's variables when `None`.
    /// `origin` names where the URL came from, for the error message.
    ///
    /// # Errors
    /// A malformed URL (exit 78), with the reason but never the URL.
    pub fn new(url: Option<&str>, origin: &str) -> Result<Target> {
        let mut secrets: Vec<String> = Vec::new();
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            secrets.push(pw);
        }
        let opts = match url {
            None => PgConnectOptions::new(),
            Some(url) => {
                secrets.extend(url_password(url));
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(Error::Config(format!(
                        "{origin} is not a postgres:// or postgresql:// URL; \
                         write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                    )));
                }
                PgConnectOptions::from_str(url).map_err(|e| {
                    let msg = redact(&e.to_string(), &secrets);
                    Error::Config(format!(
                        "{origin} is not a valid database URL ({msg}); \
                         write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE \
                         and percent-encode special characters in the password"
                    ))
                })?
            }
        };
        secrets.retain(|s| s.len() >= 2);
        let addr = match opts.get_socket() {
            Some(dir) => format!("{}/.s.PGSQL.{}", dir.display(), opts.get_port()),
            None if opts.get_host().starts_with('/') => {
                format!("{}/.s.PGSQL.{}", opts.get_host(), opts.get_port())
            }
            None => format!("{}:{}", opts.get_host(), opts.get_port()),
        };
        // No `extra_float_digits` in the startup packet: a stock PgBouncer
        // rejects unknown startup parameters (08P01) unless told to ignore
        // them, and pgboot reads no floats.
        let opts = opts.disable_statement_logging().extra_float_digits(None);
        Ok(Target {
            opts,
            addr,
            secrets,
        })
    }

    /// Removes every secret this target knows from `msg`.
    #[must_use]
    pub fn redact(&self, msg: &str) -> String {
        redact(msg, &self.secrets)
    }

    /// `user@host:port/database`, for logs.
    #[must_use]
    pub fn display(&self) -> String {
        format!(
            "{}@{}/{}",
            self.opts.get_username(),
            self.addr,
            self.opts.get_database().unwrap_or(self.opts.get_username())
        )
    }
}

/// The password part of a URL's userinfo, raw and percent-decoded.
fn url_password(url: &str) -> Vec<String> {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, pw)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let mut out = vec![pw.to_string()];
    let decoded = percent_decode(pw);
    if decoded != pw {
        out.push(decoded);
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn redact(msg: &str, secrets: &[String]) -> String {
    let mut out = msg.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// One attempt: connect (bounded by `limit`) and run `SELECT 1`.
///
/// # Errors
/// The attempt's failure, classified.
pub async fn try_connect(
    target: &Target,
    limit: Duration,
) -> std::result::Result<PgConnection, Failure> {
    let attempt = async {
        let mut conn = target.opts.connect().await.map_err(|e| classify(&e))?;
        crate::sql::execute(&mut conn, "SELECT 1")
            .await
            .map_err(|e| classify(&e))?;
        Ok(conn)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Transient(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        ))),
    }
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
    fn password_is_found_and_redacted() {
        let url = "postgres://app:s3cr%40t@db:5432/app";
        let pw = url_password(url);
        assert_eq!(pw, ["s3cr%40t", "s3cr@t"]);
        assert_eq!(redact("auth s3cr@t failed", &pw), "auth *** failed");
        assert!(url_password("postgres://db/app").is_empty());
        assert!(url_password("postgres://user@db/app").is_empty());
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
    }
}

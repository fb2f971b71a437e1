//! Transaction (and statement) pooling, detected before the advisory lock
//! is taken: a session-level lock taken through a pooler that shares server
//! connections between clients is not pgboot's (exit 78).

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::Session;
use crate::error::{Error, Result};
use crate::failure::{self, db_error};
use crate::sql;
use crate::wait::Target;

/// The exit-78 error for a pooler that shares server connections between
/// clients: a session-level lock taken through it is not pgboot's.
pub(super) fn pooled_error(key: i64, evidence: &str) -> Error {
    Error::Config(format!(
        "a transaction- or statement-pooling pooler (PgBouncer?) sits between pgboot and Postgres: \
         {evidence}. A session-level advisory lock (key {key}) cannot be held through it, so \
         nothing was migrated; point --migrate-database-url (PGBOOT_MIGRATE_DATABASE_URL) at \
         Postgres directly or at a session-mode pool, and keep DATABASE_URL pooled for the server"
    ))
}

/// How many rounds the pooling probe makes. One is enough when the pool is
/// idle; with several clients at once (replicas booting together, an app
/// under load) each round is another chance to catch a server changing
/// hands. With 3 rounds of an earlier probe, 1 of 8 replicas booting
/// together claimed the lock behind a transaction pool
/// (`tests/integration/pooler.rs`); with these 6, none of 640.
const POOL_PROBE_ROUNDS: usize = 6;
/// The longest the probe waits for its second connection or an answer; a
/// session-mode pool with no free server queues it, which proves nothing.
const POOL_PROBE_LIMIT: Duration = Duration::from_secs(2);

/// Detects transaction (or statement) pooling before the lock is taken.
///
/// Each round, the lock session runs a statement marked with its backend
/// pid, and right after it a second client connection opens a transaction
/// (pinning a server connection to itself) and asks for its backend pid and
/// for the last statement the lock session's backend ran. Connected
/// directly or through a session-mode pool, the lock session keeps its own
/// backend, no other client ever gets it, and its last statement is the
/// marked one. Through a transaction pool, the idle lock session's server
/// goes back to the pool between statements: the second client is handed
/// that very backend (`PgBouncer` reuses the most recently released server
/// first), or another client ran a statement on it meanwhile, or the lock
/// session's next statement runs on another backend. Statement pooling
/// refuses the transaction outright.
pub(super) async fn detect(target: &Target, conn: &mut PgConnection, s: &Session) -> Result<()> {
    let Ok(mut other) = crate::wait::try_connect(target, POOL_PROBE_LIMIT).await else {
        tracing::debug!("pooling probe: no second connection; relying on the per-statement checks");
        return Ok(());
    };
    let ours = s.backend_pid;
    let mark = format!("pgboot-pooling-probe-{ours}");
    let marked = format!("SELECT pg_backend_pid() /* {mark} */");
    let pin = format!(
        "BEGIN; SELECT pg_backend_pid(), (SELECT query FROM pg_stat_activity WHERE pid = {ours})"
    );
    let mut verdict = Ok(());
    for _ in 0..POOL_PROBE_ROUNDS {
        let round = async {
            let now: i32 = sql::scalar(conn, &marked).await?;
            if now != ours {
                return Ok(Err(format!(
                    "this session's statements ran on server backends {ours} and {now}"
                )));
            }
            let row = match sql::row(&mut other, &pin).await {
                Ok(row) => row.ok_or(sqlx::Error::RowNotFound)?,
                // The probe's own connection lost proves nothing about pooling.
                Err(e) if failure::connection_lost(&e) => return Ok(Ok(())),
                Err(e) => {
                    return Ok(Err(format!(
                        "a transaction was refused ({})",
                        failure::classify(&e).text()
                    )));
                }
            };
            let theirs: i32 = row.try_get(0)?;
            let last: Option<String> = row.try_get(1)?;
            sql::execute(&mut other, "ROLLBACK").await?;
            // An empty or hidden query text (track_activities off, another
            // role) proves nothing; only another client's statement does.
            let foreign =
                last.filter(|q| !q.is_empty() && !q.starts_with('<') && !q.contains(&mark));
            Ok::<_, sqlx::Error>(if theirs == ours {
                Err(format!(
                    "another client connection was given this session's server backend (pid {ours})"
                ))
            } else if let Some(q) = foreign {
                Err(format!(
                    "this session's server backend (pid {ours}) ran another client's statement between two of its own ({})",
                    q.chars().take(60).collect::<String>()
                ))
            } else {
                Ok(())
            })
        };
        match tokio::time::timeout(POOL_PROBE_LIMIT, round).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(evidence))) => {
                verdict = Err(pooled_error(s.key, &evidence));
                break;
            }
            Ok(Err(e)) if !failure::connection_lost(&e) => {
                tracing::debug!(error = %e, "pooling probe failed; relying on the per-statement checks");
                break;
            }
            Ok(Err(e)) => {
                verdict = Err(db_error("checking for a pooler", &e));
                break;
            }
            Err(_) => {
                tracing::debug!(
                    "pooling probe got no answer in time; relying on the per-statement checks"
                );
                break;
            }
        }
    }
    crate::migrate::close(other).await;
    verdict
}

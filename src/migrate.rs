//! Migrating: the built-in sqlx runner, the external command, and the fast
//! paths that skip the lock when nothing is pending.
//!
//! Needs a ready connection, and for the slow path a held `Lock`. Returns
//! what is pending, or how many migrations ran. Failures: a migration that fails, a checksum
//! mismatch, duplicate versions, a failed earlier migration, `--db-ahead
//! fail` → exit 65, always before touching anything or with the failing
//! migration rolled back; the lock lost while the command runs → exit 75;
//! lock timeouts that outlast `--ddl-retry-for` → exit 75.
//!
//! Built-in: sqlx's format and its `_sqlx_migrations` table, read at run
//! time from the directory. Each migration runs in its own transaction
//! unless its file starts with `-- no-transaction`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrateError, Migration};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use crate::alembic::AlembicState;
use crate::config::{DbAhead, MigrateConfig};
use crate::ddl_retry::{self, LockFailure, Retrying};
use crate::error::{Error, Result};
use crate::failure;
use crate::lock::Lock;
use crate::sql;
use crate::wait::Target;

/// sqlx's bookkeeping table.
pub const TABLE: &str = "_sqlx_migrations";

/// A migration file of the directory.
#[derive(Debug)]
pub struct File {
    /// sqlx's view of it.
    pub migration: Migration,
    /// Where it is, for messages.
    pub path: PathBuf,
}

/// Reads the migrations directory (up migrations only), refusing duplicate versions.
///
/// # Errors
/// Exit 64 when the directory is missing; exit 65 for duplicate versions or an unreadable file.
pub fn load_dir(dir: &Path) -> Result<Vec<File>> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--migrations {}: no such directory; point it at the directory of .sql files",
            dir.display()
        )));
    }
    let resolved = sqlx::migrate::resolve_blocking(dir)
        .map_err(|e| Error::Migration(format!("reading {}: {e}", dir.display())))?;
    let mut files: Vec<File> = resolved
        .into_iter()
        .filter(|(m, _)| !m.migration_type.is_down_migration())
        .map(|(migration, path)| File { migration, path })
        .collect();
    files.sort_by_key(|f| f.migration.version);
    for pair in files.windows(2) {
        if pair[0].migration.version == pair[1].migration.version {
            return Err(Error::Migration(format!(
                "duplicate migration version {}: {} and {}; give one of them a new, higher version",
                pair[0].migration.version,
                pair[0].path.display(),
                pair[1].path.display()
            )));
        }
    }
    for f in &files {
        check_file(f)?;
    }
    Ok(files)
}

/// Refuses a file that would lie or fail halfway: one with no statement
/// (recorded as applied, doing nothing — a file saved empty by mistake), and
/// a `-- no-transaction` file with several statements (Postgres runs what is
/// sent at once in one implicit transaction, so `CREATE INDEX CONCURRENTLY`
/// among them fails with 25001, after the statements before it ran).
fn check_file(f: &File) -> Result<()> {
    let n = crate::statements::count(f.migration.sql.as_str());
    if n == 0 {
        return Err(Error::Migration(format!(
            "{} holds no SQL statement: an empty migration would be recorded as applied and do \
             nothing; write its SQL, or delete the file",
            f.path.display()
        )));
    }
    if f.migration.no_tx && n > 1 {
        return Err(Error::Migration(format!(
            "{} is marked `-- no-transaction` and holds {n} statements: Postgres runs statements \
             sent together in one implicit transaction, so CREATE INDEX CONCURRENTLY among them \
             fails (SQLSTATE 25001) after the others ran; put each statement in a file of its own",
            f.path.display()
        )));
    }
    Ok(())
}

/// A row of `_sqlx_migrations`.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The version.
    pub version: i64,
    /// The description recorded.
    pub description: String,
    /// Whether it completed.
    pub success: bool,
    /// The checksum recorded.
    pub checksum: Vec<u8>,
}

/// The rows of `_sqlx_migrations`, or `None` when the table does not exist.
///
/// # Errors
/// The query failed.
pub async fn applied(conn: &mut PgConnection) -> Result<Option<Vec<Applied>>> {
    let exists: bool = sql::scalar(
        &mut *conn,
        &format!("SELECT to_regclass({}) IS NOT NULL", sql::lit(TABLE)),
    )
    .await
    .map_err(|e| query_error("reading the migration table", &e))?;
    if !exists {
        return Ok(None);
    }
    let rows = sql::rows(
        conn,
        &format!("SELECT version, description, success, checksum FROM {TABLE} ORDER BY version"),
    )
    .await
    .map_err(|e| query_error("reading the migration table", &e))?;
    Ok(Some(
        rows.iter()
            .map(|r| Applied {
                version: r.get(0),
                description: r.get(1),
                success: r.get(2),
                checksum: r.get(3),
            })
            .collect(),
    ))
}

fn query_error(what: &str, e: &sqlx::Error) -> Error {
    crate::failure::db_error(what, e)
}

/// Where the database stands against the directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Indexes into the files, in order, of migrations not yet applied.
    pub pending: Vec<usize>,
    /// Versions in the database that no file has.
    pub ahead: Vec<i64>,
}

/// Compares files and rows; refuses what must not be migrated over.
///
/// # Errors
/// Exit 65: a failed earlier migration, or a checksum that differs from its file.
pub fn assess(files: &[File], applied: &[Applied]) -> Result<Assessment> {
    let by_version: BTreeMap<i64, &File> = files.iter().map(|f| (f.migration.version, f)).collect();
    let name = |v: i64| {
        by_version.get(&v).map_or_else(
            || format!("version {v}"),
            |f| format!("{}", f.path.display()),
        )
    };
    if let Some(dirty) = applied.iter().find(|a| !a.success) {
        return Err(Error::Migration(format!(
            "migration {} ({}) failed partway in an earlier run ({TABLE}.success is false): \
             check the schema and finish or undo that migration by hand, then delete its row \
             from {TABLE}",
            dirty.version,
            name(dirty.version)
        )));
    }
    for a in applied {
        if let Some(f) = by_version.get(&a.version)
            && *f.migration.checksum != *a.checksum
        {
            return Err(Error::Migration(format!(
                "{} was changed after it was applied (checksum differs from {TABLE}): \
                     restore the file as it was applied, and put the change in a new migration",
                f.path.display()
            )));
        }
    }
    let done: BTreeSet<i64> = applied.iter().map(|a| a.version).collect();
    Ok(Assessment {
        pending: files
            .iter()
            .enumerate()
            .filter(|(_, f)| !done.contains(&f.migration.version))
            .map(|(i, _)| i)
            .collect(),
        ahead: applied
            .iter()
            .map(|a| a.version)
            .filter(|v| !by_version.contains_key(v))
            .collect(),
    })
}

/// Applies `--db-ahead` to versions (or revisions) the image does not know.
///
/// # Errors
/// Exit 65 with `fail`.
pub fn db_ahead(ahead: &[String], policy: DbAhead) -> Result<()> {
    if ahead.is_empty() {
        return Ok(());
    }
    let list = ahead.join(", ");
    match policy {
        DbAhead::Warn => {
            tracing::warn!(unknown = %list, "the database holds migrations this image does not know (an older image during a rollout?); going on because --db-ahead=warn");
            Ok(())
        }
        DbAhead::Fail => Err(Error::Migration(format!(
            "the database holds migrations this image does not know: {list}; \
             deploy the newer image, or set --db-ahead=warn to serve anyway"
        ))),
    }
}

/// Reads the directory and the database without the lock: `Some(files)`
/// when something is pending (take the lock), `None` at head.
///
/// # Errors
/// As [`load_dir`], [`applied`], [`assess`], [`db_ahead`].
pub async fn builtin_check(
    conn: &mut PgConnection,
    dir: &Path,
    policy: DbAhead,
) -> Result<Option<Vec<File>>> {
    let files = load_dir(dir)?;
    let rows = applied(conn).await?.unwrap_or_default();
    let a = assess(&files, &rows)?;
    db_ahead(
        &a.ahead.iter().map(ToString::to_string).collect::<Vec<_>>(),
        policy,
    )?;
    if a.pending.is_empty() {
        tracing::info!(
            migrations = files.len(),
            "database at head; nothing to migrate (no lock taken)"
        );
        Ok(None)
    } else {
        Ok(Some(files))
    }
}

/// Applies what is pending, re-checked under the lock. Returns how many ran.
///
/// With `--ddl-lock-timeout`, each transactional migration runs in a
/// transaction of pgboot's own with `SET LOCAL lock_timeout`, and one that
/// fails on a lock timeout or a deadlock is retried (see `ddl_retry.rs`);
/// `target` is for looking, from outside, at who blocks it. A
/// `-- no-transaction` migration runs as before, without `lock_timeout`,
/// and is never retried: its statement is one that cannot run in a
/// transaction, `CREATE INDEX CONCURRENTLY` above all, which cut short by a
/// timeout leaves an INVALID index behind that the next run would trip on
/// (or, with `IF NOT EXISTS`, silently keep); and it waits only in SHARE
/// UPDATE EXCLUSIVE, which blocks no reads or writes.
///
/// # Errors
/// Exit 65 when a migration fails (its transaction rolled back); exit 75
/// when lock timeouts outlast `--ddl-retry-for`.
pub async fn builtin_apply(
    lock: &mut Lock,
    target: &Target,
    files: &[File],
    cfg: &MigrateConfig,
) -> Result<usize> {
    let backend_pid = lock.backend_pid;
    let conn = lock.conn();
    let existing = applied(conn).await?;
    let table_exists = existing.is_some();
    let rows = existing.unwrap_or_default();
    let a = assess(files, &rows)?;
    db_ahead(
        &a.ahead.iter().map(ToString::to_string).collect::<Vec<_>>(),
        cfg.db_ahead,
    )?;
    if a.pending.is_empty() {
        tracing::info!("another replica migrated while this one waited; nothing to do");
        return Ok(0);
    }
    if !table_exists {
        conn.ensure_migrations_table(TABLE)
            .await
            .map_err(|e| bookkeeping_error(&format!("creating {TABLE}"), &e))?;
    }
    // sqlx's own lock (keyed on the database name) as well, so that
    // `sqlx migrate run` run by hand waits for pgboot; session locks nest.
    conn.lock()
        .await
        .map_err(|e| bookkeeping_error("taking sqlx's migration lock", &e))?;
    let mut retrying = Retrying::new(cfg.ddl, cfg.timeout);
    let mut count = 0;
    let mut result = Ok(());
    for &i in &a.pending {
        let f = &files[i];
        let m = &f.migration;
        tracing::info!(version = m.version, description = %m.description, file = %f.path.display(), "applying migration");
        crate::phase::detail(format!("migration {}", f.path.display()));
        let outcome = match cfg.ddl.lock_timeout {
            Some(timeout) if !m.no_tx => {
                retrying.next_migration();
                let bounded = Bounded {
                    target,
                    backend_pid,
                    timeout,
                };
                bounded.apply(conn, f, &mut retrying).await
            }
            _ => conn.apply(TABLE, m).await.map_err(|e| apply_error(f, &e)),
        };
        match outcome {
            Ok(took) => {
                count += 1;
                tracing::info!(
                    version = m.version,
                    took_ms = crate::logging::ms(took),
                    "applied migration"
                );
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if let Err(e) = conn.unlock().await {
        tracing::warn!(error = %e, "releasing sqlx's migration lock failed; closing the session releases it");
    }
    result.map(|()| count)
}

/// A transactional migration run with a bounded wait for locks, on the lock
/// session (backend `backend_pid`), watched from outside over `target`.
struct Bounded<'a> {
    target: &'a Target,
    backend_pid: i32,
    timeout: Duration,
}

impl Bounded<'_> {
    /// Applies `f`, retrying it while it fails on a lock timeout or a
    /// deadlock and `retrying` allows. Returns how long the successful
    /// attempt took.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        f: &File,
        retrying: &mut Retrying,
    ) -> Result<Duration> {
        let what = format!("migration {} ({})", f.migration.version, f.path.display());
        loop {
            let mut seen = None;
            let attempt = tokio::select! {
                r = Box::pin(apply_in_transaction(conn, &f.migration, self.timeout)) => r,
                never = Box::pin(ddl_retry::observe_backend(self.target, self.backend_pid, &mut seen)) => match never {},
            };
            let e = match attempt {
                Ok(took) => return Ok(took),
                Err(e) => e,
            };
            let failure = sqlx_error(&e)
                .and_then(sqlx::Error::as_database_error)
                .and_then(sqlx::error::DatabaseError::code)
                .and_then(|code| LockFailure::from_sqlstate(&code));
            let Some(failure) = failure else {
                return Err(apply_error(f, &e));
            };
            let delay = retrying.after_failure(&what, failure, seen.as_ref())?;
            tokio::time::sleep(delay).await;
        }
    }
}

/// What sqlx's `apply` does for a transactional migration, in a transaction
/// of pgboot's own so that `SET LOCAL lock_timeout` can come first: the
/// file's SQL and its `_sqlx_migrations` row, committed together, then the
/// execution time. The row is the one sqlx writes, column for column
/// (version, description, success, the file's SHA-384 checksum, and
/// `execution_time` -1 until the update), so `sqlx migrate info` and the
/// checksum check agree with it.
async fn apply_in_transaction(
    conn: &mut PgConnection,
    m: &Migration,
    lock_timeout: Duration,
) -> std::result::Result<Duration, MigrateError> {
    let start = Instant::now();
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = {}",
        sql::lit(&format!("{}ms", ddl_retry::lock_timeout_ms(lock_timeout)))
    );
    let row = format!(
        "INSERT INTO {TABLE} ( version, description, success, checksum, execution_time ) \
         VALUES ( {}, {}, TRUE, decode({}, 'hex'), -1 )",
        m.version,
        sql::lit(&m.description),
        sql::lit(&hex(&m.checksum))
    );
    let run = async {
        sql::execute(conn, &begin)
            .await
            .map_err(MigrateError::Execute)?;
        sql::execute(conn, m.sql.as_str())
            .await
            .map_err(|e| MigrateError::ExecuteMigration(e, m.version))?;
        sql::execute(conn, &row)
            .await
            .map_err(MigrateError::Execute)?;
        sql::execute(conn, "COMMIT")
            .await
            .map_err(MigrateError::Execute)
    };
    if let Err(e) = run.await {
        // Back to a usable session for the next attempt; on a lost
        // connection this fails too, and the error above says so.
        let _ = sql::execute(conn, "ROLLBACK").await;
        return Err(e);
    }
    let took = start.elapsed();
    // Like sqlx: the time is bookkeeping only, written after the commit.
    let update = format!(
        "UPDATE {TABLE} SET execution_time = {} WHERE version = {}",
        i64::try_from(took.as_nanos()).unwrap_or(i64::MAX),
        m.version
    );
    if let Err(e) = sql::execute(conn, &update).await {
        tracing::debug!(version = m.version, error = %e, "could not record the execution time");
    }
    Ok(took)
}

/// Lowercase hexadecimal, for `decode(…, 'hex')`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The sqlx error inside a migration error, if there is one.
fn sqlx_error(e: &sqlx::migrate::MigrateError) -> Option<&sqlx::Error> {
    use sqlx::migrate::MigrateError::{Execute, ExecuteMigration};
    match e {
        Execute(e) | ExecuteMigration(e, _) => Some(e),
        _ => None,
    }
}

/// A failure of sqlx's bookkeeping (its table, its lock): a lost connection
/// is a lost connection; anything else is the migration step's failure.
fn bookkeeping_error(what: &str, e: &sqlx::migrate::MigrateError) -> Error {
    match sqlx_error(e) {
        Some(se) if failure::connection_lost(se) => failure::db_error(what, se),
        _ => Error::Migration(format!("{what}: {e}")),
    }
}

/// What a migration that failed means. The connection lost under a
/// transactional migration: Postgres rolled it back, and its row in
/// `_sqlx_migrations` is written in the same transaction, so the re-check
/// after the ride-through tells exactly whether it was applied — a
/// transient `Error::Lost`. Lost under a `-- no-transaction` migration, the
/// outcome is unknown: it is never re-run (65). Its own SQL error: 65.
fn apply_error(f: &File, e: &sqlx::migrate::MigrateError) -> Error {
    let m = &f.migration;
    let lost = sqlx_error(e).filter(|se| failure::connection_lost(se));
    match (lost, m.no_tx) {
        (Some(se), false) => failure::db_error(
            &format!(
                "applying migration {} ({}); Postgres rolled it back",
                m.version,
                f.path.display()
            ),
            se,
        ),
        (Some(se), true) => Error::Migration(format!(
            "the connection was lost while migration {} ({}) ran without a transaction \
             (-- no-transaction): {}. Whether it was applied is unknown, so pgboot will not run it \
             again by itself: check the schema (for CREATE INDEX CONCURRENTLY, an INVALID index \
             in pg_index: drop it), then rerun",
            m.version,
            f.path.display(),
            failure::classify(se).text()
        )),
        (None, no_tx) => {
            let partial = if no_tx {
                " It ran without a transaction (-- no-transaction): statements before the failing one may have been applied; check the schema before rerunning."
            } else {
                " Its transaction was rolled back: nothing of it was applied."
            };
            Error::Migration(format!(
                "migration {} ({}) failed: {}.{partial}",
                m.version,
                f.path.display(),
                migrate_error_text(e)
            ))
        }
    }
}

fn migrate_error_text(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError::{Execute, ExecuteMigration};
    // sqlx reports a failing migration's SQL as `ExecuteMigration`; its
    // Display would add "at line N", a line of Postgres' C source, not of the file.
    if let Execute(sqlx::Error::Database(db)) | ExecuteMigration(sqlx::Error::Database(db), _) = e {
        return format!(
            "{} (SQLSTATE {})",
            db.message(),
            db.code().unwrap_or_default()
        );
    }
    e.to_string()
}

/// Where the database stands against the Alembic command's revision files, read without
/// the lock and without Python.
///
/// # Errors
/// Reading `alembic_version` failed.
pub async fn alembic_state(conn: &mut PgConnection, argv: &[String]) -> Result<AlembicState> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let env_cfg = std::env::var("ALEMBIC_CONFIG").ok();
    let expected = match crate::alembic::expect(argv, &cwd, env_cfg.as_deref()) {
        Ok(e) => e,
        Err(reason) => return Ok(AlembicState::Unknown(reason)),
    };
    let exists: bool = sql::scalar(
        &mut *conn,
        "SELECT to_regclass('alembic_version') IS NOT NULL",
    )
    .await
    .map_err(|e| query_error("reading alembic_version", &e))?;
    let rows = if exists {
        let rows = sql::rows(&mut *conn, "SELECT version_num::text FROM alembic_version")
            .await
            .map_err(|e| query_error("reading alembic_version", &e))?;
        Some(
            rows.iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| query_error("reading alembic_version", &e))?,
        )
    } else {
        None
    };
    Ok(expected.compare(rows))
}

/// Alembic's fast path: `Ok(true)` when the database is exactly at the
/// files' head (skip the lock and Python). `Ok(false)` means take the slow path.
/// `under_lock`: this is the re-check made after taking the lock (only the log differs: the
/// reason the fast path is off was said at INFO by the first check).
///
/// # Errors
/// Exit 65 with `--db-ahead fail` when the database holds a revision no file knows.
pub async fn alembic_at_head(
    conn: &mut PgConnection,
    argv: &[String],
    policy: DbAhead,
    under_lock: bool,
) -> Result<bool> {
    match alembic_state(conn, argv).await? {
        AlembicState::AtHead { heads } => {
            if under_lock {
                tracing::info!(head = %crate::logging::list(&heads), "another replica migrated while this one waited: database at head (alembic_version); nothing to do (no Python run)");
            } else {
                tracing::info!(head = %crate::logging::list(&heads), "database at head (alembic_version); nothing to migrate (no lock taken, no Python run)");
            }
            Ok(true)
        }
        AlembicState::Ahead { unknown, .. } => {
            db_ahead(&unknown.into_iter().collect::<Vec<_>>(), policy)?;
            // warn: the image is older than the database; running its Alembic
            // would fail on the unknown revision, so serve without running it.
            Ok(true)
        }
        AlembicState::Behind { db, heads, pending } => {
            tracing::debug!(
                database = %crate::logging::list(&db),
                files = %crate::logging::list(&heads),
                pending = %crate::logging::list(&pending),
                "alembic_version is behind the files' head"
            );
            Ok(false)
        }
        AlembicState::Unknown(reason) => {
            if under_lock {
                tracing::debug!(reason = %reason, "still cannot tell without running the command");
            } else {
                tracing::info!(reason = %reason, "fast path off: taking the lock and running the migration command");
            }
            Ok(false)
        }
    }
}

/// Closes a connection that is no longer needed, without waiting long.
pub async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
}

//! The database phases as one retryable unit:
//! wait → fast path → lock → migrate → release.
//!
//! Needs the async signals, the database, lock and migration settings.
//! Returns a [`Report`] of what happened, or the error that ends pgboot.
//!
//! Riding through: a connection lost, or a server shutting down or
//! restarting, at any point after the first `SELECT 1` — the fast-path
//! check, the lock wait, the lock session, a transactional built-in
//! migration, a migration command whose server went away — comes back here
//! as `Error::Lost`. It is logged once at WARN, and the unit starts again:
//! wait (the `--wait-timeout` budget counted from the loss), take the lock
//! again, re-check what is applied. Nothing whose outcome is unknown is
//! re-run: `migrate.rs` turns a lost `-- no-transaction` migration into 65.
//!
//! Invariant: every path that takes the lock gives it up in [`settle`], in
//! this file, whatever the outcome.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::alembic::AlembicState;
use crate::config::{DbConfig, LockConfig, MigrateConfig, SuperviseConfig};
use crate::ddl_retry::{self, LockFailure, Retrying};
use crate::error::{Error, Result};
use crate::lock::{self, Lock};
use crate::migrate;
use crate::phase::{self, Phase};
use crate::progress;
use crate::redact::Redacted;
use crate::runtime::interruptible;
use crate::signals::{self, AsyncSignals};
use crate::supervise::{self, Stopped, Watchdog};
use crate::wait::{self, Target};

/// What the database phases did, for the line before the server starts.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Time spent waiting for Postgres, every wait added up.
    pub waited: Duration,
    /// Time the lock was held; `None` when it was not taken (fast path).
    pub locked: Option<Duration>,
    /// Time spent applying migrations or running the migration command.
    pub migrating: Duration,
    /// Migrations (built-in) or Alembic revisions applied; `None` when a
    /// migration command ran whose effect pgboot cannot count.
    pub applied: Option<usize>,
    /// The database's Alembic revisions before and after the command ran.
    pub revisions: Option<(String, String)>,
    /// How many times the connection was lost and the unit started again.
    pub rides: u32,
}

impl Report {
    /// Logs the summary line: before the server starts (`command`), or at
    /// the end of `pgboot migrate` (`None`).
    pub fn log_summary(&self, total: Duration, command: Option<&str>) {
        let (before, after) = self
            .revisions
            .as_ref()
            .map(|(b, a)| (b.as_str(), a.as_str()))
            .unzip();
        tracing::info!(
            waited_ms = crate::logging::ms(self.waited),
            lock_held_ms = self.locked.map_or(0, crate::logging::ms),
            fast_path = self.locked.is_none(),
            migrating_ms = crate::logging::ms(self.migrating),
            migrations = self.applied.map(|n| n as u64),
            revision_before = before,
            revision_after = after,
            reconnects = self.rides,
            total_ms = crate::logging::ms(total),
            command = command.map(|c| tracing::field::display(Redacted(c.to_owned()))),
            "{}",
            if command.is_some() {
                "ready; starting the server"
            } else {
                "migrate done"
            }
        );
    }
}

/// Where the URL of the lock and migrations came from, for messages.
fn url_origin(db: &DbConfig) -> &'static str {
    if db.migrate_url.is_some() {
        "--migrate-database-url (PGBOOT_MIGRATE_DATABASE_URL)"
    } else {
        "--database-url (DATABASE_URL)"
    }
}

/// The target of the lock and migrations.
///
/// # Errors
/// A malformed URL (78).
pub fn lock_target(db: &DbConfig) -> Result<Target> {
    Target::writable(db.lock_url(), url_origin(db))
}

/// `pgboot wait`: until Postgres answers `SELECT 1`.
///
/// # Errors
/// As `wait::ready`, or a signal.
pub async fn wait_only(sigs: &AsyncSignals, db: &DbConfig) -> Result<()> {
    let target = Target::new(db.url.as_deref(), "--database-url (DATABASE_URL)")?;
    phase::enter(Phase::Wait);
    let start = Instant::now();
    let conn = interruptible(sigs, wait::ready(&target, db.wait_timeout, None)).await?;
    migrate::close(conn).await;
    tracing::info!(addr = %target.addr, waited_ms = crate::logging::ms(start.elapsed()), "Postgres is ready");
    Ok(())
}

/// Runs `attempt` on a ready connection; when it comes back with
/// `Error::Lost`, waits for Postgres again and runs it again.
async fn riding_through<T>(
    sigs: &AsyncSignals,
    target: &Target,
    db: &DbConfig,
    mut attempt: impl AsyncFnMut(PgConnection) -> Result<T>,
) -> Result<(T, Duration, u32)> {
    tracing::info!(addr = %target.display(), timeout = %humantime::format_duration(db.wait_timeout), "waiting for Postgres");
    let mut waited = Duration::ZERO;
    let mut lost: Option<String> = None;
    let mut rides = 0;
    loop {
        let start = Instant::now();
        phase::enter(Phase::Wait);
        let conn =
            interruptible(sigs, wait::ready(target, db.wait_timeout, lost.as_deref())).await?;
        waited += start.elapsed();
        phase::enter(Phase::Check);
        if lost.is_some() {
            tracing::info!(
                waited_ms = crate::logging::ms(start.elapsed()),
                "Postgres is back; checking again what is applied"
            );
        } else {
            tracing::info!(waited_ms = crate::logging::ms(waited), "Postgres is ready");
        }
        match attempt(conn).await {
            Err(Error::Lost(what)) => {
                let what = target.redact(&what);
                tracing::warn!(
                    during = %what,
                    "lost the connection to Postgres; waiting for it again (--wait-timeout counts from now), \
                     then taking the lock again and re-checking what is applied"
                );
                lost = Some(what);
                rides += 1;
            }
            r => return r.map(|t| (t, waited, rides)),
        }
    }
}

/// wait → (fast path | lock → migrate → release), riding through a lost
/// connection. Used by the boot and by `pgboot migrate`.
///
/// # Errors
/// 69, 75, 78, 65 or 128+N, as CONTRACT.md's exit table says.
pub async fn migrate(
    sigs: &AsyncSignals,
    db: &DbConfig,
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<Report> {
    phase::enter(Phase::Preflight);
    crate::preflight::migrations(m)?;
    let target = lock_target(db)?;
    let (mut report, waited, rides) =
        riding_through(sigs, &target, db, async |conn| {
            if let Some(dir) = &m.dir {
                builtin(sigs, &target, conn, dir, lock_cfg, m).await
            } else if let Some(argv) = &m.command {
                command(sigs, &target, db, conn, argv, lock_cfg, m).await
            } else {
                tracing::warn!(
                    "neither --migrations nor --migrate-cmd is set: pgboot migrates NOTHING; it only waited for Postgres"
                );
                migrate::close(conn).await;
                Ok(Report::default())
            }
        })
        .await?;
    report.waited = waited;
    report.rides = rides;
    Ok(report)
}

/// Takes the lock on `conn`, unless a signal comes first.
async fn take_lock(
    sigs: &AsyncSignals,
    target: &Target,
    conn: PgConnection,
    lock_cfg: &LockConfig,
) -> Result<Lock> {
    interruptible(
        sigs,
        lock::acquire(target, conn, &lock_cfg.key, lock_cfg.timeout),
    )
    .await
}

/// The built-in runner: fast path, or lock → apply → release.
async fn builtin(
    sigs: &AsyncSignals,
    target: &Target,
    mut conn: PgConnection,
    dir: &std::path::Path,
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<Report> {
    let Some(files) =
        interruptible(sigs, migrate::builtin_check(&mut conn, dir, m.db_ahead)).await?
    else {
        migrate::close(conn).await;
        return Ok(Report::default());
    };
    phase::enter(Phase::Lock);
    let mut lock = take_lock(sigs, target, conn, lock_cfg).await?;
    let t = Instant::now();
    phase::enter(Phase::Migrate);
    // The migration runs on the lock session itself: a watch over fresh
    // connections ends it if that session goes silent (see `lock::Watch`).
    let watch = lock.watch();
    // Boxed: the migration's future is large, and the boot's holds it.
    let work = Box::pin(async {
        tokio::select! {
            r = migrate::builtin_apply(&mut lock, target, &files, m) => r,
            why = watch.lost(target) => Err(Error::Lock(format!(
                "{why}; another replica may take the lock, so the migration was abandoned \
                 (Postgres rolls back a transactional one) and the server is not started"
            ))),
        }
    });
    let applied = interruptible(
        sigs,
        progress::reporting(work, |elapsed| {
            let (_, current, for_how_long) = phase::current();
            tracing::info!(
                migration = current.as_deref().unwrap_or("(starting)"),
                migration_s = for_how_long.as_secs(),
                elapsed_s = elapsed.as_secs(),
                "still applying migrations"
            );
        }),
    )
    .await;
    let migrating = t.elapsed();
    let locked = settle(target, lock, applied.as_ref().err()).await;
    let applied = applied?;
    tracing::info!(
        applied,
        took_ms = crate::logging::ms(migrating),
        "migrations done; lock released"
    );
    Ok(Report {
        applied: Some(applied),
        migrating,
        locked: Some(locked),
        ..Report::default()
    })
}

/// The external command: Alembic's fast path, or lock → command → release.
async fn command(
    sigs: &AsyncSignals,
    target: &Target,
    db: &DbConfig,
    mut conn: PgConnection,
    argv: &[String],
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<Report> {
    if interruptible(
        sigs,
        migrate::alembic_at_head(&mut conn, argv, m.db_ahead, false),
    )
    .await?
    {
        migrate::close(conn).await;
        return Ok(Report::default());
    }
    phase::enter(Phase::Lock);
    let mut lock = take_lock(sigs, target, conn, lock_cfg).await?;
    phase::enter(Phase::Check);
    // Re-check under the lock: the replica that held it may have migrated
    // to head while this one waited. Without this, N replicas released
    // together on a database behind head run Alembic N times, one after the
    // other (~0.7 s of Python each), before the last one may serve.
    match interruptible(
        sigs,
        migrate::alembic_at_head(lock.conn(), argv, m.db_ahead, true),
    )
    .await
    {
        Ok(false) => {}
        Ok(true) => {
            let locked = settle(target, lock, None).await;
            return Ok(Report {
                locked: Some(locked),
                ..Report::default()
            });
        }
        Err(e) => {
            settle(target, lock, Some(&e)).await;
            return Err(e);
        }
    }
    let env = command_env(&lock, db, m.ddl.lock_timeout);
    // What Alembic would apply, to count what the command did; `Unknown`
    // for any other command.
    let before = migrate::alembic_state(lock.conn(), argv).await.ok();
    let t = Instant::now();
    phase::enter(Phase::Migrate);
    let shown = Redacted(argv.join(" ")).to_string();
    phase::detail(format!("the migration command `{shown}`"));
    let mut retrying = Retrying::new(m.ddl, m.timeout);
    let what = format!("the migration command `{shown}`");
    let outcome = loop {
        tracing::info!(command = %shown, attempt = retrying.attempts(), "running the migration command under the lock");
        let failure = match run_command(sigs, target, argv, &env, &mut lock, m, &retrying).await {
            Run::Ended(r) => break r,
            Run::LockFailure(failure, seen) => {
                retrying.after_failure(&what, failure, seen.as_ref())
            }
        };
        // The backoff, cut short by a terminating signal (128+N; `settle`
        // then ends the idle lock session at once).
        let slept = match failure {
            Ok(delay) => {
                interruptible(sigs, async {
                    tokio::time::sleep(delay).await;
                    Ok(())
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = slept {
            break Err(e);
        }
    };
    let migrating = t.elapsed();
    let after = match (&outcome, &before) {
        (Ok(()), Some(_)) => migrate::alembic_state(lock.conn(), argv).await.ok(),
        _ => None,
    };
    let locked = settle(target, lock, outcome.as_ref().err()).await;
    outcome?;
    let (applied, revisions) = alembic_counts(before.as_ref(), after.as_ref());
    tracing::info!(
        took_ms = crate::logging::ms(migrating),
        revisions_applied = applied.map(|n| n as u64),
        attempts = retrying.attempts(),
        "migration command succeeded; lock released"
    );
    Ok(Report {
        applied,
        revisions,
        migrating,
        locked: Some(locked),
        ..Report::default()
    })
}

/// How many Alembic revisions the command applied, and the database's
/// revisions before and after it; `None`s when that cannot be told (the
/// command is not Alembic, or pgboot could not read the files).
fn alembic_counts(
    before: Option<&AlembicState>,
    after: Option<&AlembicState>,
) -> (Option<usize>, Option<(String, String)>) {
    let (Some(before), Some(after)) = (before, after) else {
        return (None, None);
    };
    let revisions = before
        .database()
        .zip(after.database())
        .map(|(b, a)| (crate::logging::list(b), crate::logging::list(a)));
    (after.applied_since(before), revisions)
}

/// How one run of the migration command ended.
enum Run {
    /// Succeeded, or failed in a way that is not retried.
    Ended(Result<()>),
    /// It failed, and its output showed a lock timeout or a deadlock; the
    /// lock is still held. With who blocked it, if that was seen.
    LockFailure(LockFailure, Option<ddl_retry::Blocker>),
}

/// Runs the migration command once under the lock, its output watched.
async fn run_command(
    sigs: &AsyncSignals,
    target: &Target,
    argv: &[String],
    env: &[(String, String)],
    lock: &mut Lock,
    m: &MigrateConfig,
    retrying: &Retrying,
) -> Run {
    let (pid, output) = match supervise::spawn_watched(argv, env) {
        Ok(spawned) => spawned,
        Err(Error::Spawn { message, .. }) => {
            return Run::Ended(Err(Error::Migration(format!(
                "migration command: {message}"
            ))));
        }
        Err(e) => return Run::Ended(Err(e)),
    };
    let retries = m.ddl.lock_timeout.is_some();
    if retries && retrying.attempts() == 1 && !output.is_watching() {
        tracing::info!(
            "stdout and stderr are terminals: they stay the migration command's own and pgboot does \
             not read them, so a lock timeout fails the boot (65) instead of being retried"
        );
    }
    let mut watch = CommandWatch::new(lock, retries);
    let shown = Redacted(argv.join(" ")).to_string();
    let o = progress::reporting(
        supervise::supervise_async(
            sigs,
            pid,
            &std::collections::BTreeMap::new(),
            None,
            retrying.migrate_time_left(),
            &mut watch,
        ),
        |elapsed| {
            tracing::info!(
                command = %shown,
                pid = pid.as_raw(),
                elapsed_s = elapsed.as_secs(),
                "the migration command is still running"
            );
        },
    )
    .await;
    let seen = watch.seen.take();
    if o.stopped_by_pgboot() {
        lock.wait_sessions_gone(lock::SESSIONS_GONE_TIMEOUT).await;
    }
    let shown = output.finish(OUTPUT_DRAIN);
    let failed_alone = o.stopped.is_none() && o.signalled.is_none() && o.code != 0;
    if let (true, true, Some(failure)) = (retries, failed_alone, shown) {
        // Waiting for the very advisory lock pgboot holds (a nested lock in
        // env.py) times out again on every try: not retried.
        if seen.as_ref().is_some_and(|b| b.pid == lock.backend_pid) {
            return Run::Ended(Err(Error::Migration(format!(
                "the migration command failed on {failure} waiting for the advisory lock pgboot holds \
                 for it (backend {}): it takes the same lock itself (e.g. in env.py), which no retry \
                 can get; skip that lock when PGBOOT_LOCK_HELD=1, or give pgboot a different --lock-key",
                lock.backend_pid
            ))));
        }
        // Retried only while the lock is still this replica's; otherwise
        // `judge_command` says what the loss means.
        if lock.check().await.is_none() {
            return Run::LockFailure(failure, seen);
        }
    }
    Run::Ended(judge_command(o, lock, target, argv).await)
}

/// How long the output copies get, once the command has exited, to pass on
/// what is left in the pipes.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// The watchdog of the migration command: fencing every second (as for any
/// command under the lock) and, with `--ddl-lock-timeout`, a look every
/// [`ddl_retry::OBSERVE_EVERY`] at which of its sessions waits for a lock and
/// who blocks it, for the retry's WARN line.
struct CommandWatch<'a> {
    lock: &'a mut Lock,
    observe: bool,
    fenced_at: Instant,
    seen: Option<ddl_retry::Blocker>,
}

impl<'a> CommandWatch<'a> {
    fn new(lock: &'a mut Lock, observe: bool) -> Self {
        CommandWatch {
            lock,
            observe,
            fenced_at: Instant::now(),
            seen: None,
        }
    }
}

impl Watchdog for CommandWatch<'_> {
    async fn check(&mut self) -> Option<String> {
        if self.observe {
            // The command's sessions: its application_name, started since
            // the lock was taken (see `Lock::wait_sessions_gone`).
            let waiter = format!(
                "w.application_name = {} AND w.pid <> pg_backend_pid() \
                 AND w.backend_start >= now() - make_interval(secs => {})",
                crate::sql::lit(&lock::command_application_name()),
                self.lock.held().as_secs_f64() + 1.0
            );
            let look = ddl_retry::blocker(self.lock.conn(), &waiter);
            if let Ok(Ok(Some(b))) = tokio::time::timeout(Duration::from_secs(1), look).await {
                self.seen = Some(b);
            }
            if self.fenced_at.elapsed() < Duration::from_secs(1) {
                return None;
            }
        }
        self.fenced_at = Instant::now();
        self.lock.check().await
    }

    fn period(&self) -> Duration {
        if self.observe {
            ddl_retry::OBSERVE_EVERY
        } else {
            Duration::from_secs(1)
        }
    }
}

/// What the migration command's end means. A command that failed, or was
/// stopped because the lock session was lost, is asked about: if Postgres
/// itself went away (a restart, a crash), it ended the command's sessions
/// too and rolled their transactions back — a transient loss, and the
/// re-check after the ride-through tells what was applied. If the lock
/// session went silent (a partition) or was ended alone, the command's own
/// sessions may outlive it: fencing, 75.
async fn judge_command(
    o: supervise::Outcome,
    lock: &mut Lock,
    target: &Target,
    argv: &[String],
) -> Result<()> {
    let fenced = |why: &str| {
        Error::Lock(format!(
            "{why}; another replica may take the lock, so the migration command was stopped and the server is not started"
        ))
    };
    match (o.stopped, o.signalled, o.code) {
        (Some(Stopped::LockLost(why)), _, _) => {
            if lock.server_went_away(target).await {
                Err(Error::Lost(format!(
                    "running the migration command ({why})"
                )))
            } else {
                Err(fenced(&why))
            }
        }
        (Some(Stopped::TimedOut(d)), _, _) => Err(Error::Migration(format!(
            "the migration command ran longer than --migrate-timeout ({}) and was stopped",
            humantime::format_duration(d)
        ))),
        (None, Some(sig), _) => Err(Error::Signalled {
            signo: sig,
            name: signals::name(sig),
        }),
        (None, None, 0) => Ok(()),
        (None, None, code) => match lock.check().await {
            Some(why) if lock.server_went_away(target).await => Err(Error::Lost(format!(
                "running the migration command, which failed with status {code} as the server went away ({why})"
            ))),
            Some(why) => Err(fenced(&why)),
            None => Err(Error::Migration(format!(
                "the migration command `{}` failed with status {code}; the server is not started",
                Redacted(argv.join(" "))
            ))),
        },
    }
}

/// The environment of a command run under the lock: the lock's variables,
/// and as `DATABASE_URL` the URL the lock uses — `--migrate-database-url`
/// when set, so the command migrates over the same connection path as the
/// lock, else `--database-url` (which may have come as a flag, not from the
/// environment); `ddl_lock_timeout` for the migration command (`pgboot
/// run`'s COMMAND is not retried, so it gets none).
fn command_env(
    lock: &Lock,
    db: &DbConfig,
    ddl_lock_timeout: Option<Duration>,
) -> Vec<(String, String)> {
    let mut env = lock.child_env(ddl_lock_timeout);
    if let Some(url) = db.lock_url() {
        env.push(("DATABASE_URL".into(), url.to_owned()));
    }
    env
}

/// The server's environment: `DATABASE_URL` is the URL pgboot was given
/// (`--database-url` wins over the variable, as for pgboot itself), never
/// the direct `--migrate-database-url`, which is removed from every child
/// (`supervise::HIDDEN_FROM_CHILDREN`).
#[must_use]
pub fn server_env(db: &DbConfig) -> Vec<(String, String)> {
    db.url
        .iter()
        .map(|url| ("DATABASE_URL".to_owned(), url.clone()))
        .collect()
}

/// Gives the lock up: the one place every path that took it ends. Returns
/// how long it was held.
/// - Cut short by a signal: the lock session may be inside a statement, so
///   its backend is ended from a fresh connection (the transaction rolls
///   back and the lock is freed at once).
/// - The connection lost, or the lock session lost (fencing): the session is
///   gone, going, or silent; dropping it frees whatever is left without
///   waiting on a peer that may never answer.
/// - Otherwise: an explicit unlock, then the session is closed.
async fn settle(target: &Target, lock: Lock, error: Option<&Error>) -> Duration {
    let held = lock.held();
    match error {
        Some(Error::Signalled { .. }) => lock.abort(target).await,
        Some(Error::Lost(_) | Error::Lock(_)) => drop(lock),
        _ => {
            lock.release().await;
        }
    }
    held
}

/// `pgboot run`: wait → lock → COMMAND under the lock, fenced → release.
/// The connection lost before COMMAND starts rides through; once it has
/// started, COMMAND is not run twice: a lost lock session is fencing (75).
///
/// # Errors
/// As [`migrate()`]'s phases; 75 when the lock session is lost while COMMAND runs.
pub async fn run_locked(
    sigs: &AsyncSignals,
    db: &DbConfig,
    lock_cfg: &LockConfig,
    sup: &SuperviseConfig,
) -> Result<i32> {
    let target = lock_target(db)?;
    let (mut lock, _, _) = riding_through(sigs, &target, db, async |conn| {
        phase::enter(Phase::Lock);
        take_lock(sigs, &target, conn, lock_cfg).await
    })
    .await?;
    phase::enter(Phase::Run);
    let env = command_env(&lock, db, None);
    let pid = match supervise::spawn_under_lock(&sup.command, &env) {
        Ok(pid) => pid,
        Err(e) => {
            settle(&target, lock, Some(&e)).await;
            return Err(e);
        }
    };
    let o = supervise::supervise_async(
        sigs,
        pid,
        &sup.signal_map,
        sup.grace_period,
        None,
        &mut lock,
    )
    .await;
    if o.stopped_by_pgboot() {
        lock.wait_sessions_gone(lock::SESSIONS_GONE_TIMEOUT).await;
    }
    let result = match o.stopped {
        Some(Stopped::LockLost(why)) => Err(Error::Lock(format!("{why}; COMMAND was stopped"))),
        _ => Ok(o.code),
    };
    settle(&target, lock, result.as_ref().err()).await;
    result
}

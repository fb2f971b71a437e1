//! pgboot: the PID-1 entrypoint of a Postgres-backed container.
//!
//! One start does: block signals → parse config → wait for Postgres → take
//! the advisory lock → migrate → release → supervise the server. `main`
//! reads as that list; the work is in `run`, and an error is printed once,
//! here, and turned into its exit code (`exit.rs`).
//!
//! The database phases run on a current-thread tokio runtime that is
//! dropped before the server is spawned: no tokio thread, no connection of
//! pgboot's, stays while the server runs.

mod alembic;
mod config;
mod error;
mod exit;
mod lean;
mod lock;
mod logging;
mod migrate;
mod signals;
mod supervise;
mod wait;

use std::time::{Duration, Instant};

use config::{Config, DbConfig, LockConfig, MigrateConfig, Mode, SuperviseConfig};
use error::{Error, Result};
use exit::Exit;
use nix::sys::signalfd::SignalFd;
use signals::AsyncSignals;
use supervise::Stopped;
use wait::Target;

fn main() {
    // First, before any thread exists: every signal blocked and queued for
    // the signalfd, so none is lost or dropped by the PID-1 rules.
    let sfd = match signals::block_all() {
        Ok(sfd) => sfd,
        Err(e) => {
            eprintln!("pgboot: internal error: cannot block signals: {e}");
            std::process::exit(Exit::Internal.code());
        }
    };
    // The process that supervises the server for weeks stays small: the
    // lean supervisor (`lean/`), when this is one, never reaches clap below.
    if let Some(code) = lean::main(&sfd) {
        std::process::exit(code);
    }
    let cfg = match config::from_env() {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(help)) => {
            print!("{help}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("pgboot: error: {e}");
            std::process::exit(e.exit().code());
        }
    };
    logging::init(&cfg.log);
    let log = cfg.log.clone();
    let code = match run(cfg, sfd, &log) {
        Ok(exit) => exit.code(),
        Err(e) => {
            tracing::error!("{e}");
            e.exit().code()
        }
    };
    std::process::exit(code);
}

fn run(cfg: Config, sfd: SignalFd, log: &config::LogConfig) -> Result<Exit> {
    match cfg.mode {
        Mode::Supervise(sup) => {
            supervise::become_reaper();
            serve(&sfd, &sup, log, false)
        }
        Mode::Boot {
            db,
            lock,
            migrate,
            sup,
            exec,
        } => {
            supervise::become_reaper();
            let start = Instant::now();
            let (sfd, summary) =
                with_runtime(sfd, async |sigs| boot(sigs, &db, &lock, &migrate).await)?;
            let (waited, s) = summary;
            tracing::info!(
                waited_ms = waited.as_millis(),
                lock_held_ms = s.locked.map_or(0, |d| d.as_millis()),
                fast_path = s.locked.is_none(),
                migrating_ms = s.migrating.as_millis(),
                migrations = s.applied,
                total_ms = start.elapsed().as_millis(),
                command = %supervise::show(&sup.command),
                "ready; starting the server"
            );
            if exec {
                return Err(supervise::exec(&sup.command));
            }
            serve(&sfd, &sup, log, true)
        }
        Mode::Wait(db) => {
            with_runtime(sfd, async |sigs| {
                let target = Target::new(db.url.as_deref(), url_origin(&db, false))?;
                let start = Instant::now();
                let conn = interruptible(sigs, wait::ready(&target, db.wait_timeout)).await?;
                migrate::close(conn).await;
                tracing::info!(addr = %target.addr, waited_ms = start.elapsed().as_millis(), "Postgres is ready");
                Ok(())
            })?;
            Ok(Exit::Ok)
        }
        Mode::Migrate { db, lock, migrate } => {
            with_runtime(sfd, async |sigs| boot(sigs, &db, &lock, &migrate).await)?;
            Ok(Exit::Ok)
        }
        Mode::Status { db, lock, migrate } => {
            let (_, pending) = with_runtime(sfd, async |sigs| {
                let target = Target::new(db.lock_url(), url_origin(&db, true))?;
                let mut conn = interruptible(sigs, wait::ready(&target, db.wait_timeout)).await?;
                let key = lock::resolve_key(&mut conn, &lock.key).await?;
                let pending = migrate::status(&mut conn, &migrate, key).await;
                migrate::close(conn).await;
                pending
            })?;
            Ok(if pending { Exit::Pending } else { Exit::Ok })
        }
        Mode::Run { db, lock, sup } => {
            supervise::become_reaper();
            let (_, code) =
                with_runtime(sfd, async |sigs| run_locked(sigs, &db, &lock, &sup).await)?;
            Ok(Exit::Child(code))
        }
    }
}

/// Spawns COMMAND and supervises it until it exits: in a lean image of
/// pgboot (`lean::hand_over`), or here if that cannot start.
fn serve(
    sfd: &SignalFd,
    sup: &SuperviseConfig,
    log: &config::LogConfig,
    announce: bool,
) -> Result<Exit> {
    let pid = supervise::spawn(&sup.command, &[])?;
    tracing::debug!(pid = pid.as_raw(), command = ?sup.command, "started");
    lean::hand_over(pid, sup, log, announce);
    Ok(supervise::supervise(sfd, pid, sup, announce))
}

/// Runs the database phases on a current-thread runtime, then drops it and
/// gives the signalfd back for the poll loop.
fn with_runtime<T>(
    sfd: SignalFd,
    phase: impl AsyncFnOnce(&AsyncSignals) -> Result<T>,
) -> Result<(SignalFd, T)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::sys("starting the runtime", e))?;
    let (sigs, out) = rt.block_on(async {
        let sigs = AsyncSignals::new(sfd).map_err(|e| Error::sys("registering the signalfd", e))?;
        let out = phase(&sigs).await;
        Ok::<_, Error>((sigs, out))
    })?;
    let sfd = {
        let _guard = rt.enter();
        sigs.into_inner()
    };
    drop(rt);
    out.map(|t| (sfd, t))
}

/// Runs `fut` unless a terminating signal comes first: then it is dropped
/// (closing any connection it held) and pgboot ends with 128+N.
async fn interruptible<T>(sigs: &AsyncSignals, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            s = sigs.next() => {
                let s = s.map_err(|e| Error::sys("reading the signalfd", e))?;
                for sig in s {
                    if sig == libc::SIGCHLD {
                        signals::reap(|pid, _| tracing::debug!(pid = pid.as_raw(), "reaped an orphan"));
                    } else if signals::terminating(sig) {
                        return Err(Error::Signalled { signo: sig, name: signals::name(sig) });
                    } else {
                        tracing::debug!(signal = %signals::name(sig), "ignored before the server starts");
                    }
                }
            }
        }
    }
}

fn url_origin(db: &DbConfig, for_lock: bool) -> &'static str {
    if for_lock && db.migrate_url.is_some() {
        "--migrate-database-url (PGBOOT_MIGRATE_DATABASE_URL)"
    } else {
        "--database-url (DATABASE_URL)"
    }
}

/// wait → (fast path | lock → migrate → release). Returns how long it
/// waited and what the migration step did.
async fn boot(
    sigs: &AsyncSignals,
    db: &DbConfig,
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<(Duration, migrate::Summary)> {
    let target = Target::new(db.lock_url(), url_origin(db, true))?;
    let start = Instant::now();
    tracing::info!(addr = %target.display(), timeout = %humantime::format_duration(db.wait_timeout), "waiting for Postgres");
    let conn = interruptible(sigs, wait::ready(&target, db.wait_timeout)).await?;
    let waited = start.elapsed();
    tracing::info!(waited_ms = waited.as_millis(), "Postgres is ready");
    let summary = if let Some(dir) = &m.dir {
        migrate_builtin(sigs, &target, conn, dir, lock_cfg, m).await?
    } else if let Some(argv) = &m.command {
        migrate_command(sigs, db, conn, argv, lock_cfg, m).await?
    } else {
        tracing::warn!(
            "neither --migrations nor --migrate-cmd is set: pgboot migrates NOTHING; it only waited for Postgres"
        );
        migrate::close(conn).await;
        migrate::Summary::default()
    };
    Ok((waited, summary))
}

/// The built-in runner: fast path, or lock → apply → release.
async fn migrate_builtin(
    sigs: &AsyncSignals,
    target: &Target,
    mut conn: sqlx::PgConnection,
    dir: &std::path::Path,
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<migrate::Summary> {
    let Some(files) =
        interruptible(sigs, migrate::builtin_check(&mut conn, dir, m.db_ahead)).await?
    else {
        migrate::close(conn).await;
        return Ok(migrate::Summary::default());
    };
    let mut lock =
        interruptible(sigs, lock::acquire(conn, &lock_cfg.key, lock_cfg.timeout)).await?;
    let t = Instant::now();
    let applied = interruptible(sigs, migrate::builtin_apply(&mut lock, &files, m.db_ahead)).await;
    let migrating = t.elapsed();
    let locked = lock.held();
    if matches!(applied, Err(Error::Signalled { .. })) {
        abort_lock(target, lock).await;
    } else {
        lock.release().await;
    }
    let applied = applied?;
    tracing::info!(
        applied,
        took_ms = migrating.as_millis(),
        "migrations done; lock released"
    );
    Ok(migrate::Summary {
        applied,
        migrating,
        locked: Some(locked),
    })
}

/// The external command: Alembic's fast path, or lock → command → release.
async fn migrate_command(
    sigs: &AsyncSignals,
    db: &DbConfig,
    mut conn: sqlx::PgConnection,
    argv: &[String],
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<migrate::Summary> {
    if interruptible(
        sigs,
        migrate::alembic_at_head(&mut conn, argv, m.db_ahead, false),
    )
    .await?
    {
        migrate::close(conn).await;
        return Ok(migrate::Summary::default());
    }
    let mut lock =
        interruptible(sigs, lock::acquire(conn, &lock_cfg.key, lock_cfg.timeout)).await?;
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
            let locked = lock.held();
            lock.release().await;
            return Ok(migrate::Summary {
                applied: 0,
                migrating: Duration::ZERO,
                locked: Some(locked),
            });
        }
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    }
    let env = command_env(&lock, db);
    let t = Instant::now();
    tracing::info!(command = %argv.join(" "), "running the migration command under the lock");
    let outcome = match supervise::spawn_under_lock(argv, &env) {
        Ok(pid) => Ok(supervise::supervise_async(
            sigs,
            pid,
            &std::collections::BTreeMap::new(),
            None,
            m.timeout,
            &mut lock,
        )
        .await),
        Err(e) => Err(e),
    };
    let migrating = t.elapsed();
    if outcome
        .as_ref()
        .is_ok_and(supervise::Outcome::stopped_by_pgboot)
    {
        lock.wait_sessions_gone(lock::SESSIONS_GONE_TIMEOUT).await;
    }
    let locked = lock.held();
    lock.release().await;
    let o = outcome.map_err(|e| match e {
        Error::Spawn { message, .. } => Error::Migration(format!("migration command: {message}")),
        e => e,
    })?;
    match (o.stopped, o.signalled, o.code) {
        (Some(Stopped::LockLost(why)), _, _) => Err(Error::Lock(format!(
            "{why}; another replica may take the lock, so the migration command was stopped and the server is not started"
        ))),
        (Some(Stopped::TimedOut(d)), _, _) => Err(Error::Migration(format!(
            "the migration command ran longer than --migrate-timeout ({}) and was stopped",
            humantime::format_duration(d)
        ))),
        (None, Some(sig), _) => Err(Error::Signalled {
            signo: sig,
            name: signals::name(sig),
        }),
        (None, None, 0) => {
            tracing::info!(
                took_ms = migrating.as_millis(),
                "migration command succeeded; lock released"
            );
            Ok(migrate::Summary {
                applied: 1,
                migrating,
                locked: Some(locked),
            })
        }
        (None, None, code) => Err(Error::Migration(format!(
            "the migration command `{}` failed with status {code}; the server is not started",
            argv.join(" ")
        ))),
    }
}

/// The environment of a command run under the lock: the lock's variables,
/// and the direct URL as `DATABASE_URL` when `--migrate-database-url` is set,
/// so the command migrates over the same connection path as the lock.
fn command_env(lock: &lock::Lock, db: &DbConfig) -> Vec<(String, String)> {
    let mut env = lock.child_env();
    if let Some(url) = &db.migrate_url {
        env.push(("DATABASE_URL".into(), url.clone()));
    }
    env
}

/// After a signal cut a built-in migration short: the lock session may be
/// inside a statement, so end that backend from a fresh connection (its
/// transaction rolls back and the lock is freed at once), then drop it.
async fn abort_lock(target: &Target, lock: lock::Lock) {
    let pid = lock.backend_pid;
    if let Ok(mut c) = wait::try_connect(target, Duration::from_secs(3)).await {
        let r = sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut c)
            .await;
        tracing::debug!(backend_pid = pid, ok = r.is_ok(), "ended the lock session");
        migrate::close(c).await;
    }
    drop(lock);
}

/// `pgboot run`: wait → lock → COMMAND under the lock, fenced → release.
async fn run_locked(
    sigs: &AsyncSignals,
    db: &DbConfig,
    lock_cfg: &LockConfig,
    sup: &SuperviseConfig,
) -> Result<i32> {
    let target = Target::new(db.lock_url(), url_origin(db, true))?;
    let conn = interruptible(sigs, wait::ready(&target, db.wait_timeout)).await?;
    let mut lock =
        interruptible(sigs, lock::acquire(conn, &lock_cfg.key, lock_cfg.timeout)).await?;
    let env = command_env(&lock, db);
    let pid = match supervise::spawn_under_lock(&sup.command, &env) {
        Ok(pid) => pid,
        Err(e) => {
            lock.release().await;
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
    lock.release().await;
    match o.stopped {
        Some(Stopped::LockLost(why)) => Err(Error::Lock(format!("{why}; COMMAND was stopped"))),
        _ => Ok(o.code),
    }
}

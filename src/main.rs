//! pgboot: the PID-1 entrypoint of a Postgres-backed container.
//!
//! One start does: block signals → parse config → wait for Postgres → take
//! the advisory lock → migrate → release → supervise the server. `main`
//! reads as that list; an error is printed once, here, and turned into its
//! exit code (`exit.rs`).
//!
//! The map:
//! - `config.rs`: flags and environment → a validated `Config`.
//! - `signals.rs`: every signal blocked first, read from a signalfd.
//! - `runtime.rs`: the short-lived tokio runtime of the database phases.
//! - `boot.rs`: wait → fast path → lock → migrate → release, riding through
//!   a lost connection; `wait.rs`, `lock.rs`, `migrate.rs`, `alembic.rs` are
//!   its phases, `failure.rs` sorts their errors, `sql.rs` sends their queries.
//! - `preflight.rs`: what is local, checked before waiting.
//! - `supervise.rs`: spawn, forward, reap, exit status.
//! - `exit.rs`, `error.rs`: the exit codes and the one error type.
//! - `logging.rs`, `redact.rs`: every line to stderr, passwords masked.

mod alembic;
mod boot;
mod config;
mod ddl_retry;
mod error;
mod exit;
mod failure;
mod lean;
mod lock;
mod logging;
mod migrate;
mod output_watch;
mod preflight;
mod redact;
mod runtime;
mod signals;
mod sql;
mod statements;
mod supervise;
mod wait;

use std::time::Instant;

use config::{Config, Mode, SuperviseConfig};
use error::Result;
use exit::Exit;
use nix::sys::signalfd::SignalFd;
use runtime::{interruptible, with_runtime};

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
    redact::add_startup_secrets();
    let cfg = match config::from_env() {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(help)) => {
            print!("{help}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("pgboot: error: {}", redact::redact(&e.to_string()));
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

/// One arm per command; the work is in the modules.
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
            preflight::executable(&sup.command[0], "COMMAND")?;
            let start = Instant::now();
            let (sfd, report) = with_runtime(sfd, async |sigs| {
                boot::migrate(sigs, &db, &lock, &migrate).await
            })?;
            report.log_ready(start.elapsed(), &supervise::show(&sup.command));
            if exec {
                return Err(supervise::exec(&sup.command));
            }
            serve(&sfd, &sup, log, true)
        }
        Mode::Wait(db) => {
            with_runtime(sfd, async |sigs| boot::wait_only(sigs, &db).await)?;
            Ok(Exit::Ok)
        }
        Mode::Migrate { db, lock, migrate } => {
            with_runtime(sfd, async |sigs| {
                boot::migrate(sigs, &db, &lock, &migrate).await
            })?;
            Ok(Exit::Ok)
        }
        Mode::Status { db, lock, migrate } => {
            let (_, standing) = with_runtime(sfd, async |sigs| {
                let target = boot::lock_target(&db)?;
                let mut conn =
                    interruptible(sigs, wait::ready(&target, db.wait_timeout, None)).await?;
                let key = lock::resolve_key(&mut conn, &lock.key).await?;
                let standing = migrate::status(&mut conn, &migrate, key).await;
                migrate::close(conn).await;
                standing
            })?;
            Ok(standing.exit())
        }
        Mode::Run { db, lock, sup } => {
            supervise::become_reaper();
            preflight::executable(&sup.command[0], "COMMAND")?;
            let (_, code) = with_runtime(sfd, async |sigs| {
                boot::run_locked(sigs, &db, &lock, &sup).await
            })?;
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

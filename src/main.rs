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
//! - `supervise.rs`: spawn, forward, reap, exit status.
//! - `exit.rs`, `error.rs`: the exit codes and the one error type.

mod alembic;
mod boot;
mod config;
mod conninfo;
mod error;
mod exit;
mod failure;
mod lock;
mod logging;
mod migrate;
mod runtime;
mod signals;
mod sql;
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
    let code = match run(cfg, sfd) {
        Ok(exit) => exit.code(),
        Err(e) => {
            tracing::error!("{e}");
            e.exit().code()
        }
    };
    std::process::exit(code);
}

/// One arm per command; the work is in the modules.
fn run(cfg: Config, sfd: SignalFd) -> Result<Exit> {
    match cfg.mode {
        Mode::Supervise(sup) => {
            supervise::become_reaper();
            serve(&sfd, &sup, false)
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
            let (sfd, report) = with_runtime(sfd, async |sigs| {
                boot::migrate(sigs, &db, &lock, &migrate).await
            })?;
            report.log_ready(start.elapsed(), &supervise::show(&sup.command));
            if exec {
                return Err(supervise::exec(&sup.command));
            }
            serve(&sfd, &sup, true)
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
            let (_, pending) = with_runtime(sfd, async |sigs| {
                let target = boot::lock_target(&db)?;
                let mut conn =
                    interruptible(sigs, wait::ready(&target, db.wait_timeout, None)).await?;
                let key = lock::resolve_key(&mut conn, &lock.key).await?;
                let pending = migrate::status(&mut conn, &migrate, key).await;
                migrate::close(conn).await;
                pending
            })?;
            Ok(if pending { Exit::Pending } else { Exit::Ok })
        }
        Mode::Run { db, lock, sup } => {
            supervise::become_reaper();
            let (_, code) = with_runtime(sfd, async |sigs| {
                boot::run_locked(sigs, &db, &lock, &sup).await
            })?;
            Ok(Exit::Child(code))
        }
    }
}

/// Spawns COMMAND and supervises it until it exits.
fn serve(sfd: &SignalFd, sup: &SuperviseConfig, announce: bool) -> Result<Exit> {
    let pid = supervise::spawn(&sup.command, &[])?;
    tracing::debug!(pid = pid.as_raw(), command = ?sup.command, "started");
    Ok(supervise::supervise(sfd, pid, sup, announce))
}

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
//!   a lost connection; `wait.rs` (with `conninfo/`, libpq's conventions),
//!   `lock/` (with its pooling probe and partition watch), `migrate.rs`
//!   (with `ddl_retry.rs`, bounded DDL lock waits) and `alembic/` are its
//!   phases, `failure.rs` sorts their errors, `sql.rs` sends their queries.
//! - `preflight.rs`: what is local, checked before waiting.
//! - `supervise.rs`: spawn, forward, reap, exit status (`spawn.rs`: the
//!   server started without a fork; `syscall.rs`: the two system calls of
//!   its loop, inline); `output_watch.rs`
//!   reads the migration command's output for lock timeouts; `lean/` is the
//!   small supervisor that lives for weeks after a boot.
//! - `status.rs`, `dry_run.rs`: `status` and `migrate --dry-run`, which only read.
//! - `new.rs`, `manual.rs`: `new`, `completions` and `man`, which need no database.
//! - `exit.rs`, `error.rs`: the exit codes and the one error type.
//! - `logging.rs`, `redact.rs`: every line to stderr, passwords masked;
//!   `phase.rs`, `progress.rs`, `exit_line.rs`: what pgboot is doing, said
//!   at least every 10 s and once more as it exits.

mod alembic;
mod boot;
mod civil;
mod config;
mod conninfo;
mod ddl_retry;
mod dry_run;
mod error;
mod exit;
mod exit_line;
mod failure;
mod lean;
mod lock;
mod logging;
mod manual;
mod migrate;
mod new;
mod output_watch;
mod phase;
mod preflight;
mod progress;
#[cfg(test)]
mod properties;
mod redact;
mod runtime;
mod signals;
mod spawn;
mod sql;
mod statements;
mod status;
mod supervise;
mod syscall;
mod wait;

use std::time::Instant;

use config::{Config, LogConfig, Mode, SuperviseConfig};
use error::{Error, Result};
use exit::Exit;
use nix::sys::signalfd::SignalFd;
use phase::Phase;
use runtime::with_runtime;

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
        phase::enter(Phase::Supervise);
        exit_line::log(code, "the command exited", false);
        std::process::exit(code);
    }
    redact::add_startup_secrets();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match config::from_args(args.clone(), &env) {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(help)) => {
            print!("{help}");
            std::process::exit(0);
        }
        Err(e) => {
            // The format asked for is honoured even when the rest of the
            // command line is wrong: a log collector parses this line too.
            let json = config::wants_json(args.get(1..).unwrap_or_default(), &env);
            logging::init(&LogConfig {
                json,
                filter: "info".into(),
            });
            if json {
                tracing::error!("{e}");
            } else {
                eprintln!("pgboot: error: {}", redact::redact(&e.to_string()));
            }
            exit_line::log(e.exit().code(), exit_line::reason(Err(&e)), true);
            std::process::exit(e.exit().code());
        }
    };
    logging::init(&cfg.log);
    let log = cfg.log.clone();
    let boots_a_server = matches!(cfg.mode, Mode::Boot { .. });
    // Commands that only print, like `--help`, end without the exit line
    // when they succeed: their output is the answer.
    let prints_only = matches!(cfg.mode, Mode::New(_) | Mode::Completions(_) | Mode::Man);
    let code = match run(cfg, sfd, &log) {
        Ok(exit) => {
            if !prints_only {
                exit_line::log(exit.code(), exit_line::reason(Ok(exit)), false);
            }
            exit.code()
        }
        Err(e) => {
            tracing::error!("{}", message(&e, boots_a_server));
            exit_line::log(e.exit().code(), exit_line::reason(Err(&e)), true);
            e.exit().code()
        }
    };
    std::process::exit(code);
}

/// The error line. A signal is said with what it interrupted, and "before
/// the server started" only where a server was to start.
fn message(e: &Error, boots_a_server: bool) -> String {
    match e {
        Error::Signalled { name, .. } => {
            let (phase, _, _) = phase::current();
            format!(
                "got {name} while {}{}; exiting",
                phase.doing(),
                if boots_a_server {
                    ", before the server started"
                } else {
                    ""
                }
            )
        }
        e => e.to_string(),
    }
}

/// One arm per command; the work is in the modules.
fn run(cfg: Config, sfd: SignalFd, log: &config::LogConfig) -> Result<Exit> {
    match cfg.mode {
        Mode::Supervise(sup) => {
            supervise::become_reaper();
            serve(&sfd, &sup, &[], log, false)
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
            report.log_summary(start.elapsed(), Some(&supervise::show(&sup.command)));
            let env = boot::server_env(&db);
            if exec {
                return Err(supervise::exec(&sup.command, &env));
            }
            serve(&sfd, &sup, &env, log, true)
        }
        Mode::Wait(db) => {
            with_runtime(sfd, async |sigs| boot::wait_only(sigs, &db).await)?;
            Ok(Exit::Ok)
        }
        Mode::Migrate { db, lock, migrate } => {
            let start = Instant::now();
            let (_, report) = with_runtime(sfd, async |sigs| {
                boot::migrate(sigs, &db, &lock, &migrate).await
            })?;
            report.log_summary(start.elapsed(), None);
            Ok(Exit::Ok)
        }
        Mode::DryRun { db, migrate } => {
            let (_, exit) =
                with_runtime(sfd, async |sigs| dry_run::run(sigs, &db, &migrate).await)?;
            Ok(exit)
        }
        Mode::Status {
            db,
            lock,
            migrate,
            output,
        } => {
            let (_, standing) = with_runtime(sfd, async |sigs| {
                status::run(sigs, &db, &lock, &migrate, output).await
            })?;
            Ok(standing.exit())
        }
        Mode::New(cfg) => {
            phase::enter(Phase::New);
            for path in new::create(&cfg)? {
                println!("{}", path.display());
            }
            Ok(Exit::Ok)
        }
        Mode::Completions(shell) => {
            phase::enter(Phase::Print);
            manual::completions(shell)?;
            Ok(Exit::Ok)
        }
        Mode::Man => {
            phase::enter(Phase::Print);
            manual::man()?;
            Ok(Exit::Ok)
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
    env: &[(String, String)],
    log: &config::LogConfig,
    announce: bool,
) -> Result<Exit> {
    phase::enter(Phase::Supervise);
    let pid = supervise::spawn(&sup.command, env)?;
    tracing::debug!(pid = pid.as_raw(), command = ?sup.command, "started");
    lean::hand_over(pid, sup, log, announce);
    Ok(supervise::supervise(sfd, pid, sup, announce, None))
}

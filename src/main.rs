//! pgboot: the PID-1 entrypoint of a Postgres-backed container.
//!
//! One start does: block signals → parse config → wait for Postgres → take
//! the advisory lock → migrate → release → supervise the server. `main`
//! reads as that list; the work is in `run`, and an error is printed once,
//! here, and turned into its exit code (`exit.rs`).

mod config;
mod error;
mod exit;
mod logging;
mod signals;
mod supervise;

use config::{Config, Mode};
use error::{Error, Result};
use exit::Exit;
use nix::sys::signalfd::SignalFd;

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

fn run(cfg: Config, sfd: SignalFd) -> Result<Exit> {
    match cfg.mode {
        Mode::Supervise(sup) => {
            supervise::become_reaper();
            let pid = supervise::spawn(&sup.command, &[])?;
            tracing::debug!(pid = pid.as_raw(), command = ?sup.command, "started");
            Ok(supervise::supervise(&sfd, pid, &sup))
        }
        _ => Err(Error::Usage("not implemented yet".into())),
    }
}

//! The last line pgboot logs: how it ends (`exit_code`), in which phase
//! (`phase`), and why in a few words (`reason`), in the chosen log format.
//! The full error, if any, is the line before it.
//!
//! Needs the subscriber installed. Written by `main` for every exit of the
//! full binary and of the lean supervisor, except `--help`, `--version`, and
//! the commands that only print (`new`, `completions`, `man`) when they succeed.

use crate::error::Error;
use crate::exit::Exit;
use crate::phase;

/// Why pgboot ends, in a few words.
#[must_use]
pub fn reason(outcome: Result<Exit, &Error>) -> &'static str {
    match outcome {
        Ok(Exit::Ok) => "done",
        Ok(Exit::Pending) => "migrations pending",
        Ok(Exit::Ahead) => "the database is ahead of the migrations",
        Ok(Exit::CannotTell) => "cannot tell without running the migration command",
        Ok(Exit::Child(_)) => "the command exited",
        Ok(_) => "stopped",
        Err(Error::Usage(_)) => "usage error",
        Err(Error::Unavailable(_) | Error::Lost(_)) => "Postgres unavailable",
        Err(Error::Config(_)) => "configuration error",
        Err(Error::Lock(_)) => "lock not acquired or lost",
        Err(Error::Migration(_)) => "migration failed",
        Err(Error::Spawn { .. }) => "the command could not start",
        Err(Error::Signalled { .. }) => "signal",
        Err(Error::Internal(_)) => "internal error",
    }
}

/// Logs the exit line: at INFO when the exit is no failure of pgboot's own,
/// at ERROR otherwise.
pub fn log(code: i32, reason: &str, failed: bool) {
    let (phase, _, _) = phase::current();
    if failed {
        tracing::error!(
            exit_code = code,
            phase = phase.name(),
            reason,
            "pgboot exits"
        );
    } else {
        tracing::info!(
            exit_code = code,
            phase = phase.name(),
            reason,
            "pgboot exits"
        );
    }
}

//! The one error type: each variant says what pgboot was doing and maps to
//! its exit code (see `exit.rs`).
//!
//! Messages never contain a password nor a whole database URL: database
//! errors are rendered by `failure::classify`, which keeps only the server's
//! message and SQLSTATE, and the wait redacts what it shows.

use crate::exit::Exit;

/// Everything that can end pgboot before (or instead of) the child's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or environment values.
    #[error("{0}")]
    Usage(String),
    /// Postgres did not become ready in time, or did not come back in time
    /// after the connection was lost.
    #[error("{0}")]
    Unavailable(String),
    /// The connection was lost, or the server went away, after the first
    /// `SELECT 1`: boot goes back to waiting. Says what pgboot was doing.
    /// Where it is not retried (`status`), it ends pgboot as `Unavailable`.
    #[error("lost the connection to Postgres while {0}")]
    Lost(String),
    /// A database error no wait can fix.
    #[error("{0}")]
    Config(String),
    /// The lock was not acquired, or was lost.
    #[error("{0}")]
    Lock(String),
    /// A migration failed or the migration state forbids going on.
    #[error("{0}")]
    Migration(String),
    /// COMMAND could not be started.
    #[error("{message}")]
    Spawn {
        /// What to print.
        message: String,
        /// 126 or 127.
        exit: Exit,
    },
    /// pgboot got a terminating signal before the server started.
    #[error("got {name} before the server started; exiting")]
    Signalled {
        /// The signal number.
        signo: i32,
        /// Its name, for the message.
        name: String,
    },
    /// A bug, or the kernel refused something that cannot fail in practice.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The exit code this error ends pgboot with.
    #[must_use]
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Unavailable(_) | Error::Lost(_) => Exit::Unavailable,
            Error::Config(_) => Exit::Config,
            Error::Lock(_) => Exit::Lock,
            Error::Migration(_) => Exit::Migration,
            Error::Spawn { exit, .. } => *exit,
            Error::Signalled { signo, .. } => Exit::Signal(*signo),
            Error::Internal(_) => Exit::Internal,
        }
    }

    /// An internal error from a system call.
    pub fn sys(what: &str, err: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{what}: {err}"))
    }
}

/// pgboot's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

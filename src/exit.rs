//! Exit codes: every code pgboot itself can exit with, in one enum and one table.
//!
//! Needs nothing. Returns the numeric code for each outcome. The codes follow
//! sysexits(3) for pgboot's own failures and the shell for the child's status
//! (N passes through, 128+N for a signal, 126/127 for exec failures), so that
//! a supervisor above pgboot reads them the way it reads `sh -c`'s.

/// Why pgboot exits, when the exit is pgboot's own (not the child's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `wait`, `migrate` succeeded; `status` found nothing pending; `migrate --dry-run` knows its plan; `new` wrote its file.
    Ok,
    /// `status` found something pending.
    Pending,
    /// `status` found the database ahead of the files.
    Ahead,
    /// `status` cannot tell without running the migration command.
    CannotTell,
    /// Bad flags, bad environment values, missing COMMAND (`EX_USAGE`).
    Usage,
    /// A migration failed, a checksum mismatch, a failed earlier migration,
    /// or `--db-ahead fail` (`EX_DATAERR`).
    Migration,
    /// Postgres did not become ready within `--wait-timeout`, or did not come
    /// back within it after a connection loss (`EX_UNAVAILABLE`).
    Unavailable,
    /// An internal error: a bug (`EX_SOFTWARE`).
    Internal,
    /// Lock not acquired within `--lock-timeout`, the lock session was lost,
    /// or a migration's table lock not acquired within `--ddl-retry-for` (`EX_TEMPFAIL`).
    Lock,
    /// An error no wait can fix: authentication, no such database, no
    /// privilege, malformed URL, TLS misconfiguration (`EX_CONFIG`).
    Config,
    /// COMMAND exists but cannot be executed.
    NotExecutable,
    /// COMMAND was not found.
    NotFound,
    /// pgboot itself got this signal before the server started.
    Signal(i32),
    /// The supervised or `run` command's own exit code.
    Child(i32),
}

impl Exit {
    /// The process exit code.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Pending => 1,
            Exit::Ahead => 2,
            Exit::CannotTell => 3,
            Exit::Usage => 64,
            Exit::Migration => 65,
            Exit::Unavailable => 69,
            Exit::Internal => 70,
            Exit::Lock => 75,
            Exit::Config => 78,
            Exit::NotExecutable => 126,
            Exit::NotFound => 127,
            Exit::Signal(n) => 128 + n,
            Exit::Child(n) => n,
        }
    }

    /// The table printed in `--help` and the README: code and meaning.
    pub const TABLE: &'static [(&'static str, &'static str)] = &[
        (
            "the child's",
            "the supervised or `run` command exited; 128+N when signal N killed it",
        ),
        (
            "0",
            "`wait`, `migrate` succeeded; `status` found nothing pending; `migrate --dry-run` knows its plan; `new` wrote its file",
        ),
        ("1", "`status` found something pending"),
        (
            "2",
            "`status` found the database ahead of the files (a migration or revision no file has)",
        ),
        (
            "3",
            "`status` (or `migrate --dry-run`) cannot tell without running the migration command (it prints why)",
        ),
        (
            "64",
            "usage error: bad flags, bad environment values, missing COMMAND",
        ),
        (
            "65",
            "a migration's own error, checksum mismatch, a failed earlier migration, or `--db-ahead fail` (never a lost connection)",
        ),
        (
            "69",
            "Postgres did not become ready within `--wait-timeout`, or did not come back within it after a connection loss",
        ),
        ("70", "internal error (signalfd, waitpid…): a bug"),
        (
            "75",
            "lock not acquired within `--lock-timeout`, the lock session lost (fencing), or a migration's table lock not acquired within `--ddl-retry-for`",
        ),
        (
            "78",
            "an error no wait can fix: authentication (28P01, 28000), no such database (3D000), no privilege (42501), malformed URL, TLS misconfiguration, a pooler's protocol error (08P01) or transaction pooling in front of the lock",
        ),
        ("126", "COMMAND is not executable"),
        ("127", "COMMAND is not found"),
        (
            "128+N",
            "pgboot itself got signal N before the server started",
        ),
    ];
}

/// The shell's exit code for a child that ended: its code, or 128+N for signal N.
#[must_use]
pub fn from_wait_status(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn codes_match_the_contract_table() {
        let cases = [
            (Exit::Ok, 0),
            (Exit::Pending, 1),
            (Exit::Ahead, 2),
            (Exit::CannotTell, 3),
            (Exit::Usage, 64),
            (Exit::Migration, 65),
            (Exit::Unavailable, 69),
            (Exit::Internal, 70),
            (Exit::Lock, 75),
            (Exit::Config, 78),
            (Exit::NotExecutable, 126),
            (Exit::NotFound, 127),
            (Exit::Signal(15), 143),
            (Exit::Signal(2), 130),
            (Exit::Child(42), 42),
            (Exit::Child(255), 255),
        ];
        for (exit, code) in cases {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn every_numeric_code_is_in_the_table() {
        let in_table: Vec<&str> = Exit::TABLE.iter().map(|(c, _)| *c).collect();
        for exit in [
            Exit::Ok,
            Exit::Pending,
            Exit::Ahead,
            Exit::CannotTell,
            Exit::Usage,
            Exit::Migration,
            Exit::Unavailable,
            Exit::Internal,
            Exit::Lock,
            Exit::Config,
            Exit::NotExecutable,
            Exit::NotFound,
        ] {
            let code = exit.code().to_string();
            assert!(in_table.contains(&code.as_str()), "{code} missing");
        }
    }

    #[test]
    fn wait_status_maps_like_the_shell() {
        let pid = Pid::from_raw(10);
        assert_eq!(from_wait_status(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            from_wait_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            from_wait_status(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            Some(143)
        );
        assert_eq!(
            from_wait_status(WaitStatus::Stopped(pid, Signal::SIGSTOP)),
            None
        );
    }
}

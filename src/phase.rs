//! What pgboot is doing now, for the lines that say so: the progress line of
//! a long migration, a signal's message, and the exit line.
//!
//! Needs nothing. The phases set it as they start ([`enter`], [`detail`]);
//! [`current`] reads it. A process-wide value rather than a parameter: the
//! exit line is written in `main`, far from the phase that ended.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One step of a pgboot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading flags and environment.
    Config,
    /// Checking what is local (the migrations directory, executables).
    Preflight,
    /// Waiting for Postgres to answer.
    Wait,
    /// Reading what is applied, before or after the lock.
    Check,
    /// Waiting for (or holding) the advisory lock.
    Lock,
    /// Applying migrations, or running the migration command.
    Migrate,
    /// Running `pgboot run`'s COMMAND under the lock.
    Run,
    /// Supervising the server (or COMMAND).
    Supervise,
    /// Reading the database for `status` or `migrate --dry-run`.
    Inspect,
    /// Writing a new migration file.
    New,
    /// Printing completions or the man page.
    Print,
}

impl Phase {
    /// The name in the exit line (`phase=...`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Phase::Config => "config",
            Phase::Preflight => "preflight",
            Phase::Wait => "wait",
            Phase::Check => "check",
            Phase::Lock => "lock",
            Phase::Migrate => "migrate",
            Phase::Run => "run",
            Phase::Supervise => "supervise",
            Phase::Inspect => "inspect",
            Phase::New => "new",
            Phase::Print => "print",
        }
    }

    /// What pgboot was doing, for a sentence ("got SIGTERM while …").
    #[must_use]
    pub fn doing(self) -> &'static str {
        match self {
            Phase::Config => "reading the configuration",
            Phase::Preflight => "checking the migrations and executables",
            Phase::Wait => "waiting for Postgres",
            Phase::Check => "checking what is applied",
            Phase::Lock => "waiting for the migration lock",
            Phase::Migrate => "migrating",
            Phase::Run => "running COMMAND under the lock",
            Phase::Supervise => "supervising",
            Phase::Inspect => "reading the database",
            Phase::New => "creating a migration file",
            Phase::Print => "printing",
        }
    }
}

struct Now {
    phase: Phase,
    detail: Option<String>,
    since: Option<Instant>,
}

static NOW: Mutex<Now> = Mutex::new(Now {
    phase: Phase::Config,
    detail: None,
    since: None,
});

fn with<T>(f: impl FnOnce(&mut Now) -> T) -> T {
    // A poisoned lock only means a panic elsewhere; the value is still usable.
    let mut g = NOW
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut g)
}

/// Enters `phase`, forgetting the previous one's detail.
pub fn enter(phase: Phase) {
    with(|n| {
        n.phase = phase;
        n.detail = None;
        n.since = Some(Instant::now());
    });
}

/// Says which item of the phase is under way (`migration 20260101_x.sql`);
/// the progress line names it, with how long it has run.
pub fn detail(what: String) {
    with(|n| {
        n.detail = Some(what);
        n.since = Some(Instant::now());
    });
}

/// The phase, its detail, and how long the detail (or the phase) has run.
#[must_use]
pub fn current() -> (Phase, Option<String>, Duration) {
    with(|n| {
        (
            n.phase,
            n.detail.clone(),
            n.since.map_or(Duration::ZERO, |t| t.elapsed()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_is_forgotten_when_the_next_phase_starts() {
        enter(Phase::Migrate);
        detail("migration 1".into());
        assert_eq!(current().1.as_deref(), Some("migration 1"));
        enter(Phase::Supervise);
        let (phase, d, _) = current();
        assert_eq!((phase, d), (Phase::Supervise, None));
    }
}

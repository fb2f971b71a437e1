//! The migration command's output, passed through unchanged while pgboot
//! reads it for a lock timeout or a deadlock.
//!
//! Needs the read ends of the command's stdout and stderr pipes. Each is
//! copied by a thread of its own to pgboot's same stream as soon as bytes
//! arrive (no line buffering: a progress line without a newline shows at
//! once), byte for byte, and scanned as it goes. Returns, once the command
//! has exited, the first [`LockFailure`] its output showed.
//!
//! A stream that is a terminal is not piped at all (see `supervise.rs`):
//! the command keeps the terminal (colours, progress bars, its window
//! size), and pgboot does not read what it writes there.
//!
//! See: issue 9.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ddl_retry::LockFailure;

/// What the drivers and tools print for the two failures, lowercased.
/// SQLSTATEs (psql's `VERBOSE`, JDBC's `SQLState`), the server's English
/// messages (libpq,
/// psql, psycopg and JDBC print them as they are), and the exception class
/// names of psycopg and psycopg2 (`errors.LockNotAvailable`,
/// `errors.DeadlockDetected`) and asyncpg (`LockNotAvailableError`,
/// `DeadlockDetectedError`).
const MARKS: &[(&str, LockFailure)] = &[
    ("55p03", LockFailure::Timeout),
    (
        "canceling statement due to lock timeout",
        LockFailure::Timeout,
    ),
    ("could not obtain lock on", LockFailure::Timeout),
    ("locknotavailable", LockFailure::Timeout),
    ("40p01", LockFailure::Deadlock),
    ("deadlock detected", LockFailure::Deadlock),
    ("deadlockdetected", LockFailure::Deadlock),
];

/// The longest mark: how much of a chunk's end is kept to find a mark split
/// between two reads.
const KEEP: usize = 48;

/// Finds the marks in a stream read in chunks of any size.
#[derive(Debug, Default)]
pub struct Scanner {
    tail: Vec<u8>,
    found: Option<LockFailure>,
}

impl Scanner {
    /// Reads the next chunk; returns the first failure seen so far.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<LockFailure> {
        if self.found.is_none() {
            self.tail.extend(chunk.iter().map(u8::to_ascii_lowercase));
            self.found = MARKS
                .iter()
                .find(|(mark, _)| contains(&self.tail, mark.as_bytes()))
                .map(|(_, f)| *f);
            let cut = self.tail.len().saturating_sub(KEEP);
            self.tail.drain(..cut);
        }
        self.found
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Which of pgboot's streams a pipe is copied to.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// pgboot's stdout.
    Stdout,
    /// pgboot's stderr.
    Stderr,
}

/// The copying threads of one run of the command.
#[derive(Debug, Default)]
pub struct Watched {
    found: Arc<Mutex<Option<LockFailure>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Watched {
    /// Whether any stream is read (none when both are terminals).
    #[must_use]
    pub fn is_watching(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Copies `pipe` to `to` and scans it, on a thread of its own, until
    /// the pipe's end of file.
    pub fn add(&mut self, pipe: impl Read + Send + 'static, to: Stream) {
        let found = Arc::clone(&self.found);
        let spawned = std::thread::Builder::new()
            .name("pgboot-output".into())
            .spawn(move || copy(pipe, to, &found));
        match spawned {
            Ok(t) => self.threads.push(t),
            // The pipe's read end was moved into the closure and is dropped
            // with it: the command's writes then fail (EPIPE) rather than
            // block forever.
            Err(e) => {
                tracing::error!(error = %e, "cannot start the thread that passes the migration command's output on");
            }
        }
    }

    /// After the command exited: waits, at most `limit`, for the copies to
    /// reach the end of their pipes (a child of the command that kept one
    /// open must not hold pgboot up), and returns what the output showed.
    #[must_use]
    pub fn finish(self, limit: Duration) -> Option<LockFailure> {
        let deadline = Instant::now() + limit;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Finished threads are joined; one still copying for a lingering
        // grandchild is left to end with its pipe.
        for t in self.threads {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        *self.found.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The copy loop of one stream.
fn copy(mut pipe: impl Read, to: Stream, found: &Mutex<Option<LockFailure>>) {
    let mut scanner = Scanner::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let chunk = &buf[..n];
        // Passed on first, then read: a write that fails (pgboot's own
        // stream closed) must not stop the scan, nor the command.
        let _ = match to {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(chunk).and_then(|()| out.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(chunk),
        };
        if let Some(f) = scanner.feed(chunk) {
            found
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&str]) -> Option<LockFailure> {
        let mut s = Scanner::default();
        let mut last = None;
        for c in chunks {
            last = s.feed(c.as_bytes());
        }
        last
    }

    #[test]
    fn what_each_driver_prints_is_recognised() {
        let timeout = [
            // Alembic over SQLAlchemy and psycopg 3
            "sqlalchemy.exc.OperationalError: (psycopg.errors.LockNotAvailable) canceling statement due to lock timeout",
            // psycopg2
            "psycopg2.errors.LockNotAvailable: canceling statement due to lock timeout",
            // asyncpg
            "asyncpg.exceptions.LockNotAvailableError: canceling statement due to lock timeout",
            // JDBC (Flyway, Liquibase)
            "org.postgresql.util.PSQLException: ERROR: canceling statement due to lock timeout",
            // psql, libpq
            "psql:m.sql:1: ERROR:  canceling statement due to lock timeout",
            // a translated server message still carries its SQLSTATE with VERBOSITY verbose
            "FEHLER:  55P03: Anweisung wird abgebrochen wegen Zeitüberschreitung einer Sperre",
            "ERROR: could not obtain lock on relation \"jobs\"",
        ];
        for line in timeout {
            assert_eq!(scan(&[line]), Some(LockFailure::Timeout), "{line}");
        }
        let deadlock = [
            "psycopg.errors.DeadlockDetected: deadlock detected",
            "asyncpg.exceptions.DeadlockDetectedError: deadlock detected",
            "org.postgresql.util.PSQLException: ERROR: deadlock detected",
            "SQLSTATE[40P01]",
        ];
        for line in deadlock {
            assert_eq!(scan(&[line]), Some(LockFailure::Deadlock), "{line}");
        }
    }

    #[test]
    fn other_failures_are_not_lock_failures() {
        for line in [
            "psycopg.errors.DuplicateTable: relation \"jobs\" already exists",
            "psycopg.errors.UndefinedColumn: column \"priority\" does not exist",
            "INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, add priority to jobs",
            "SET lock_timeout = '2s'",
            "canceling statement due to statement timeout",
        ] {
            assert_eq!(scan(&[line]), None, "{line}");
        }
    }

    #[test]
    fn a_mark_split_between_reads_is_found() {
        let line = "psycopg.errors.LockNotAvailable: canceling statement due to lock timeout";
        for cut in 1..line.len() {
            let (a, b) = line.split_at(cut);
            assert_eq!(scan(&[a, b]), Some(LockFailure::Timeout), "cut at {cut}");
        }
        let mut s = Scanner::default();
        for b in "x deadlock detected".bytes() {
            s.feed(&[b]);
        }
        assert_eq!(s.feed(b""), Some(LockFailure::Deadlock));
    }

    #[test]
    fn the_first_failure_seen_stays() {
        assert_eq!(
            scan(&[
                "deadlock detected\n",
                "canceling statement due to lock timeout"
            ]),
            Some(LockFailure::Deadlock)
        );
    }
}

//! The watch over a lock session that is busy running a built-in migration:
//! it asks over fresh connections whether the session still holds the lock,
//! and gives the migration up when Postgres has gone silent (a partition).

use std::time::{Duration, Instant};

use super::lock_row;
use crate::failure;
use crate::sql;
use crate::wait::Target;

/// How long the lock session may go unheard while a built-in migration runs
/// on it before pgboot gives it up: the server-side keepalive window of
/// [`TCP_SETTINGS`](super::TCP_SETTINGS) (5 s idle + 3 probes 2 s apart = 11 s; 10 s of unacked
/// data) and a second of margin. By then the server has ended that session,
/// rolled back its transaction and freed the lock.
const SILENT_AFTER: Duration = Duration::from_secs(12);
/// How often the lock session is looked at from outside.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How many answers in a row saying the lock session's backend no longer
/// holds the lock end the wait: a lost connection reaches the migration
/// itself first (an error on its socket), unless the news was lost too.
const GONE_AFTER: u32 = 3;

/// Watches the lock session from outside while a statement runs on it.
///
/// Why: the built-in runner's migration runs on the lock session itself,
/// and sqlx sets no client-side timeout or keepalive, so a replica cut off
/// mid-migration (packets dropped, no RST) would wait for an answer forever,
/// long after the server, by its keepalives, has ended the session and
/// another replica has taken the lock. Fencing as the migration command has
/// it (a query on the lock session) is impossible while the session is busy,
/// so the watch asks over a fresh connection, every [`WATCH_EVERY`], whether
/// the lock session's backend still holds the lock.
pub struct Watch {
    key: i64,
    backend_pid: i32,
}

/// One look at the lock session from outside.
enum Seen {
    /// Postgres answered: the backend holds the lock.
    Holding,
    /// Postgres answered: the backend does not hold it (or is gone).
    Gone,
    /// Postgres answered with an error (too many connections, …): it is
    /// there, but says nothing about the lock session.
    Answered,
    /// No answer.
    Silent,
}

impl Watch {
    /// Returns, with the reason, only when the lock session is to be given
    /// up: Postgres unheard for [`SILENT_AFTER`], or saying [`GONE_AFTER`]
    /// times in a row that the session's backend no longer holds the lock.
    pub async fn lost(self, target: &Target) -> String {
        let mut heard = Instant::now();
        let mut gone = 0;
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            match self.look(target).await {
                Seen::Holding => {
                    heard = Instant::now();
                    gone = 0;
                }
                Seen::Answered => heard = Instant::now(),
                Seen::Gone => {
                    heard = Instant::now();
                    gone += 1;
                    if gone >= GONE_AFTER {
                        return format!(
                            "the lock session's backend {} no longer holds the lock, and the migration running on it got no word of it",
                            self.backend_pid
                        );
                    }
                }
                Seen::Silent if heard.elapsed() >= SILENT_AFTER => {
                    return format!(
                        "the lock session is silent: Postgres has not answered for {}s, longer than its keepalives keep a silent session (a network partition?)",
                        heard.elapsed().as_secs()
                    );
                }
                Seen::Silent => {}
            }
        }
    }

    async fn look(&self, target: &Target) -> Seen {
        let q = format!(
            "SELECT count(*) FROM pg_locks l WHERE l.granted AND l.pid = {} AND {}",
            self.backend_pid,
            lock_row(self.key)
        );
        let attempt = async {
            let mut c = crate::wait::try_connect(target, WATCH_EVERY * 2).await?;
            let n = sql::scalar::<i64>(&mut c, &q).await;
            crate::migrate::close(c).await;
            n.map_err(|e| failure::classify(&e))
        };
        match tokio::time::timeout(WATCH_EVERY * 2, attempt).await {
            Ok(Ok(n)) if n > 0 => Seen::Holding,
            Ok(Ok(_)) => Seen::Gone,
            Ok(Err(f)) if f.answered_by_server() => Seen::Answered,
            Ok(Err(_)) | Err(_) => Seen::Silent,
        }
    }
}

impl super::Lock {
    /// A [`Watch`] on this lock's session.
    #[must_use]
    pub fn watch(&self) -> Watch {
        Watch {
            key: self.key,
            backend_pid: self.backend_pid,
        }
    }
}

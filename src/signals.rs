//! Signals: block them all first, read them from a signalfd, forward them.
//!
//! Needs to run before any thread exists (`block_all` is the first line of
//! `main`). Returns the signalfd that every later phase reads, and the
//! helpers to name, map, forward and reap. Failures here are internal
//! errors (exit 70).
//!
//! Why block rather than install handlers: the kernel drops a signal with
//! the default disposition that is sent to a namespace's PID 1 (see
//! kernel/signal.c, `sig_task_ignored`), but a blocked signal is queued. A
//! signal that arrives before the child exists therefore waits in the queue
//! and is acted on, never lost.

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The synchronous signals: raised by a faulting thread itself, never queued
/// for forwarding, and left unblocked so a crash still crashes.
pub const SYNCHRONOUS: [Signal; 7] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// Blocks every signal but the synchronous ones, and returns a signalfd for them.
///
/// # Errors
/// The kernel refused `sigprocmask` or `signalfd`.
pub fn block_all() -> nix::Result<SignalFd> {
    let mut set = SigSet::all();
    for s in SYNCHRONOUS {
        set.remove(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

/// The signal's number, unless it is a SIGPIPE pgboot caused itself.
///
/// A write to a pipe nobody reads (stderr piped into a `head` that exited, a
/// log collector gone) raises SIGPIPE in the writer. Blocked, it is queued
/// here instead of discarded, and it is not a signal anyone sent: forwarded,
/// it would kill the server; logged, the log line's own write raises the next
/// one, a loop that kept a core busy and starved the wait's timeout. The
/// kernel names the writer as its sender.
fn from_outside(info: &libc::signalfd_siginfo) -> Option<i32> {
    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
    let own = signo == libc::SIGPIPE && info.ssi_pid == std::process::id();
    (!own).then_some(signo)
}

/// Reads every queued signal without blocking.
///
/// # Errors
/// A read error other than "nothing queued".
pub fn drain(sfd: &SignalFd) -> nix::Result<Vec<i32>> {
    let mut out = Vec::new();
    loop {
        match sfd.read_signal() {
            Ok(Some(info)) => out.extend(from_outside(&info)),
            Ok(None) | Err(Errno::EAGAIN) => return Ok(out),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Makes the signalfd blocking, for the server's loop: one `read` per
/// signal, with no `poll` in front of it (the shortest forwarding path).
///
/// # Errors
/// `fcntl` failed.
#[allow(unsafe_code)]
pub fn set_blocking(sfd: &SignalFd) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // libc's fcntl, not nix's: nix picks the command out of a table in
    // read-only data, a page the lean supervisor would fault back in just
    // after giving it back (`lean/shed.rs`).
    let fd = sfd.as_fd().as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL take and return integers; `fd` is open.
    let flags = Errno::result(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) }).map(|_| ())
}

/// The next signal from a blocking signalfd: waits forever when `timeout`
/// is `None`, else at most `timeout` (then `Ok(None)`).
///
/// # Errors
/// `poll` or `read` failed for a reason other than an interruption.
#[inline]
pub fn next(sfd: &SignalFd, timeout: Option<std::time::Duration>) -> nix::Result<Option<i32>> {
    if let Some(d) = timeout {
        match poll_readable(sfd, d) {
            Ok(true) => {}
            Ok(false) | Err(Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    // One `read(2)` of one record, on the stack: nix's `read_signal` would
    // copy it once more and cost the loop pages of its own (`syscall.rs`).
    let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    match crate::syscall::read(sfd.as_fd(), &mut buf) {
        Ok(n) if n == buf.len() => Ok(from_outside(&siginfo(&buf))),
        Ok(_) | Err(Errno::EINTR | Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the signalfd became readable within `d`.
#[cold]
fn poll_readable(sfd: &SignalFd, d: std::time::Duration) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
    poll(
        &mut fds,
        PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
    )
    .map(|n| n > 0)
}

/// The record the kernel wrote, as its struct.
#[inline]
#[allow(unsafe_code)]
fn siginfo(buf: &[u8; std::mem::size_of::<libc::signalfd_siginfo>()]) -> libc::signalfd_siginfo {
    // SAFETY: `signalfd_siginfo` is plain integers (any bit pattern is a
    // value), exactly as large as `buf`; the read is unaligned-safe.
    unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) }
}

/// Whether a signal read from the signalfd is forwarded to the child.
#[must_use]
#[inline]
pub fn forwardable(signo: i32) -> bool {
    // A bit set, not a search of `SYNCHRONOUS`: the supervise loop asks for
    // every signal, and a constant costs it no page of data.
    const KEPT: u64 = {
        let mut set = bit(libc::SIGCHLD) | bit(libc::SIGKILL) | bit(libc::SIGSTOP);
        let mut i = 0;
        while i < SYNCHRONOUS.len() {
            set |= bit(SYNCHRONOUS[i] as i32);
            i += 1;
        }
        set
    };
    (1..=64).contains(&signo) && KEPT & bit(signo) == 0
}

/// `signo`'s bit in a set of signals 1 to 64 (0 outside that range).
#[must_use]
pub const fn bit(signo: i32) -> u64 {
    if signo >= 1 && signo <= 64 {
        1 << (signo - 1)
    } else {
        0
    }
}

/// Whether a signal asks the process to stop (for `--grace-period` and for
/// ending pgboot before the server starts).
#[must_use]
pub fn terminating(signo: i32) -> bool {
    matches!(
        signo,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP
    )
}

/// A signal's name (`SIGTERM`, `SIGRTMIN+3`), for logs.
#[must_use]
pub fn name(signo: i32) -> String {
    if let Ok(s) = Signal::try_from(signo) {
        return s.as_str().to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&signo) {
        return format!("SIGRTMIN+{}", signo - min);
    }
    format!("signal {signo}")
}

/// Parses a signal: `TERM`, `SIGTERM`, `term`, `15`, `RTMIN+2`, `SIGRTMAX-1`.
///
/// # Errors
/// A description naming the unknown signal.
pub fn parse(s: &str) -> Result<i32, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let signo = if let Ok(n) = bare.parse::<i32>() {
        Some(n).filter(|n| Signal::try_from(*n).is_ok() || (min..=max).contains(n))
    } else if let Some(rest) = bare.strip_prefix("RTMIN") {
        rt_offset(rest).map(|o| min + o)
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        rt_offset(rest).map(|o| max + o)
    } else {
        format!("SIG{bare}")
            .parse::<Signal>()
            .ok()
            .map(|s| s as i32)
    };
    match signo {
        Some(n) if (1..=max).contains(&n) && n != libc::SIGKILL && n != libc::SIGSTOP => Ok(n),
        Some(_) if matches!(bare, "KILL" | "STOP" | "9" | "19") => Err(format!(
            "{t}: SIGKILL and SIGSTOP cannot be caught, so cannot be mapped"
        )),
        _ => Err(format!(
            "unknown signal {t:?}; use names like TERM, QUIT, INT, HUP, USR1, RTMIN+2, or numbers"
        )),
    }
}

fn rt_offset(rest: &str) -> Option<i32> {
    if rest.is_empty() {
        return Some(0);
    }
    let n: i32 = rest.get(1..)?.parse().ok()?;
    match rest.as_bytes()[0] {
        b'+' => Some(n),
        b'-' => Some(-n),
        _ => None,
    }
}

/// Parses `--signal-map`: `FROM:TO` pairs separated by commas.
///
/// # Errors
/// A description of the bad pair.
pub fn parse_map(s: &str) -> Result<BTreeMap<i32, i32>, String> {
    let mut map = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once(':')
            .ok_or_else(|| format!("{pair:?} is not FROM:TO (e.g. TERM:QUIT)"))?;
        let (from, to) = (parse(from)?, parse(to)?);
        if from == libc::SIGCHLD {
            return Err("SIGCHLD is pgboot's own and cannot be mapped".into());
        }
        if map.insert(from, to).is_some() {
            return Err(format!("{} is mapped twice", name(from)));
        }
    }
    Ok(map)
}

/// Sends `signo` (any signal, real-time ones included) to `pid`; a negative
/// pid means a process group. ESRCH (already gone) is not an error.
///
/// # Errors
/// `kill(2)` failed for another reason.
#[inline]
pub fn send(pid: i32, signo: i32) -> nix::Result<()> {
    // nix's `kill` takes only the classic signals; the real-time ones that
    // pgboot forwards too need the raw call, here the supervise loop's own.
    match crate::syscall::kill(pid, signo) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reaps every child that has exited (`waitpid(-1, WNOHANG)` until none is
/// left), calling `on_exit` for each. Signals coalesce, so one SIGCHLD may
/// stand for many exits: this is called after each one and drains them all.
pub fn reap(mut on_exit: impl FnMut(Pid, WaitStatus)) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    on_exit(pid, status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                return;
            }
        }
    }
}

/// The signalfd made readable to tokio, for the database phases.
pub struct AsyncSignals(tokio::io::unix::AsyncFd<SignalFd>);

impl AsyncSignals {
    /// Registers the signalfd with the current tokio runtime.
    ///
    /// # Errors
    /// The runtime refused the descriptor.
    #[allow(unsafe_code)]
    pub fn new(sfd: SignalFd) -> std::io::Result<Self> {
        use tokio::io::{Interest, unix::AsyncFd};
        // SAFETY: `SignalFd` owns its descriptor (an `OwnedFd`): it stays open
        // and is the same descriptor until the `AsyncFd` is dropped or
        // `into_inner` gives the `SignalFd` back.
        unsafe { AsyncFd::register_with_interest(sfd, Interest::READABLE) }
            .map(AsyncSignals)
            .map_err(std::io::Error::from)
    }

    /// Waits for and returns the next batch of signals.
    ///
    /// # Errors
    /// Reading the signalfd failed.
    pub async fn next(&self) -> std::io::Result<Vec<i32>> {
        loop {
            let mut guard = self.0.readable().await?;
            let sigs = drain(self.0.get_ref()).map_err(std::io::Error::from)?;
            if sigs.is_empty() {
                guard.clear_ready();
            } else {
                return Ok(sigs);
            }
        }
    }

    /// Gives the signalfd back, for the poll loop that runs without tokio.
    #[must_use]
    pub fn into_inner(self) -> SignalFd {
        self.0.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_numbers_and_realtime() {
        assert_eq!(parse("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse("sigquit"), Ok(libc::SIGQUIT));
        assert_eq!(parse("10"), Ok(libc::SIGUSR1));
        assert_eq!(parse("RTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert_eq!(parse("SIGRTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        assert!(parse("BOGUS").unwrap_err().contains("BOGUS"));
        assert!(parse("KILL").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99").is_err());
    }

    #[test]
    fn map_pairs() {
        let m = parse_map("TERM:QUIT, INT:TERM").unwrap();
        assert_eq!(m[&libc::SIGTERM], libc::SIGQUIT);
        assert_eq!(m[&libc::SIGINT], libc::SIGTERM);
        assert!(parse_map("TERM").is_err());
        assert!(parse_map("TERM:QUIT,TERM:INT").is_err());
        assert!(parse_map("CHLD:TERM").is_err());
    }

    #[test]
    fn forwardable_excludes_chld_and_synchronous() {
        assert!(forwardable(libc::SIGTERM));
        assert!(forwardable(libc::SIGWINCH));
        assert!(forwardable(libc::SIGRTMIN() + 1));
        assert!(!forwardable(libc::SIGCHLD));
        assert!(!forwardable(libc::SIGSEGV));
        assert!(!forwardable(libc::SIGKILL));
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
    }
}

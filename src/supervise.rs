//! Supervising: spawn COMMAND, forward signals to it, reap every zombie, and
//! turn its end into pgboot's exit status.
//!
//! Needs the signalfd from `signals::block_all` and a validated
//! `SuperviseConfig`. Returns the child's status as an [`Exit`] (its code,
//! or 128+N for signal N). Spawn failures map to 127 (not found) and 126
//! (not executable); after the server is spawned nothing here fails: errors
//! are logged and the loop goes on, because a dying PID 1 kills the
//! container.
//!
//! Children that run under the lock (the migration command, `pgboot run`'s
//! COMMAND) die with pgboot (`PR_SET_PDEATHSIG`); the server does not (see
//! [`WhenPgbootDies`]).
//!
//! There is exactly one reaper, `signals::reap` (`waitpid(-1)`), run after
//! each SIGCHLD; children are spawned with `spawn.rs` (the server, unless it
//! takes the terminal) or `std::process::Command`, and only their pid is
//! kept, so no other code waits on them and steals a status.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::config::SuperviseConfig;
use crate::error::{Error, Result};
use crate::exit::{self, Exit};
use crate::output_watch::{Stream, Watched};
use crate::signals::{self, AsyncSignals, bit};
use crate::spawn;

/// COMMAND as one line, for logs.
#[must_use]
pub fn show(argv: &[OsString]) -> String {
    argv.join(OsStr::new(" ")).to_string_lossy().into_owned()
}

/// Makes pgboot the reaper of orphaned descendants when it is not PID 1
/// (`PR_SET_CHILD_SUBREAPER`); as PID 1 it already is.
pub fn become_reaper() {
    if std::process::id() != 1
        && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
    {
        tracing::warn!(error = %e, "could not become a subreaper; orphans of the child will be reaped by init");
    }
}

/// pgboot's variables that carry a URL, removed from every child's
/// environment.
pub const HIDDEN_FROM_CHILDREN: &[&str] = &["PGBOOT_MIGRATE_DATABASE_URL"];

/// What becomes of a child when pgboot dies without stopping it (`kill -9`,
/// a crash, the OOM killer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenPgbootDies {
    /// SIGKILL it (`PR_SET_PDEATHSIG`): a command run under the lock must not
    /// outlive the lock session, or another replica takes the lock and
    /// migrates at the same time (issue 7).
    KillChild,
    /// Leave it be, like tini and dumb-init do with theirs. The server: as
    /// PID 1, pgboot's death ends the namespace and the server with it; when
    /// pgboot is not PID 1, the server holds no lock, and its fate belongs to
    /// whatever started pgboot (`tini -p` gives *tini* a death signal, not
    /// its child). With `--exec` there is no parent left to die at all.
    LeaveChild,
}

/// Builds the `Command` for `argv` with pgboot's spawn rules: its own
/// process group, the terminal's foreground when stdin is a terminal, an
/// empty signal mask, `env` added to pgboot's environment, and the death
/// signal `tie` asks for.
fn command<S: AsRef<OsStr>>(
    argv: &[S],
    env: &[(String, String)],
    own_group: bool,
    tie: WhenPgbootDies,
) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // The direct, often privileged, URL is pgboot's alone: a command that
    // needs it gets it as DATABASE_URL (`boot::command_env`).
    for var in HIDDEN_FROM_CHILDREN {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let foreground = own_group && std::io::stdin().is_terminal();
    if own_group {
        cmd.process_group(0);
    }
    // Taken before the fork: the child compares its parent with it to tell
    // whether pgboot died before the death signal was armed.
    let parent = nix::unistd::getpid();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (tcsetpgrp, getpid, getppid, prctl, kill,
    // sigprocmask); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if tie == WhenPgbootDies::KillChild {
                // The death signal fires when the *thread* that forked exits;
                // pgboot spawns from its main thread (the database phases run
                // on a current-thread runtime), which lives as long as pgboot.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // pgboot may have died between fork and prctl: then the child
                // is already someone else's and no signal will come.
                if nix::unistd::getppid() != parent {
                    nix::sys::signal::kill(
                        nix::unistd::getpid(),
                        nix::sys::signal::Signal::SIGKILL,
                    )?;
                }
            }
            if foreground {
                // SIGTTOU is still blocked here, so a background group may
                // take the terminal. ENOTTY and friends are not fatal.
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
    cmd
}

fn spawn_error(argv0: &OsStr, e: &std::io::Error) -> Error {
    let argv0 = argv0.to_string_lossy();
    let (exit, what) = match e.kind() {
        std::io::ErrorKind::NotFound => (
            Exit::NotFound,
            if argv0.contains('/') {
                "no such file".to_string()
            } else {
                "not found in PATH".to_string()
            },
        ),
        std::io::ErrorKind::PermissionDenied => (
            Exit::NotExecutable,
            "permission denied (is it executable? chmod +x)".to_string(),
        ),
        _ => (Exit::NotExecutable, e.to_string()),
    };
    Error::Spawn {
        message: format!("cannot run {argv0:?}: {what}"),
        exit,
    }
}

/// Spawns the server: `argv` as a child in its own process group.
///
/// # Errors
/// 127 when the command is not found, 126 when it cannot be executed.
pub fn spawn<S: AsRef<OsStr>>(argv: &[S], env: &[(String, String)]) -> Result<Pid> {
    spawn_with(argv, env, WhenPgbootDies::LeaveChild)
}

/// Spawns a command that runs under the lock (the migration command, `pgboot
/// run`'s COMMAND): like [`fn@spawn`], and killed (SIGKILL) by the kernel if pgboot
/// dies first, so that it cannot outlive the lock session.
///
/// # Errors
/// 127 when the command is not found, 126 when it cannot be executed.
pub fn spawn_under_lock<S: AsRef<OsStr>>(argv: &[S], env: &[(String, String)]) -> Result<Pid> {
    spawn_with(argv, env, WhenPgbootDies::KillChild)
}

/// Spawns the migration command: like [`spawn_under_lock`], with its stdout
/// and stderr passed through pgboot (see `output_watch.rs`) so that a lock
/// timeout or a deadlock in them can be retried. A stream that is a
/// terminal stays the command's own and is not watched.
///
/// # Errors
/// 127 when the command is not found, 126 when it cannot be executed.
pub fn spawn_watched<S: AsRef<OsStr>>(
    argv: &[S],
    env: &[(String, String)],
) -> Result<(Pid, Watched)> {
    let mut cmd = command(argv, env, true, WhenPgbootDies::KillChild);
    let watch_out = !std::io::stdout().is_terminal();
    let watch_err = !std::io::stderr().is_terminal();
    if watch_out {
        cmd.stdout(Stdio::piped());
    }
    if watch_err {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(argv[0].as_ref(), &e))?;
    let mut watched = Watched::default();
    // The read ends are close-on-exec (std makes every pipe so): the server
    // started later never inherits them.
    if let Some(out) = child.stdout.take() {
        watched.add(out, Stream::Stdout);
    }
    if let Some(err) = child.stderr.take() {
        watched.add(err, Stream::Stderr);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|e| Error::sys("child pid", e))?);
    drop(child);
    Ok((pid, watched))
}

fn spawn_with<S: AsRef<OsStr>>(
    argv: &[S],
    env: &[(String, String)],
    tie: WhenPgbootDies,
) -> Result<Pid> {
    if tie == WhenPgbootDies::LeaveChild && !std::io::stdin().is_terminal() {
        // The server's usual path: nothing to run between fork and exec.
        let pid = spawn::in_own_group(argv, env, HIDDEN_FROM_CHILDREN)
            .map_err(|e| spawn_error(argv[0].as_ref(), &e))?;
        return Ok(Pid::from_raw(pid));
    }
    let child = command(argv, env, true, tie)
        .spawn()
        .map_err(|e| spawn_error(argv[0].as_ref(), &e))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|e| Error::sys("child pid", e))?);
    // The `Child` handle is dropped without waiting: the one reaper owns the status.
    drop(child);
    Ok(pid)
}

/// Replaces pgboot with `argv` (`--exec`).
///
/// # Errors
/// 127 or 126 when exec fails; on success it does not return.
pub fn exec(argv: &[OsString], env: &[(String, String)]) -> Error {
    let e = command(argv, env, false, WhenPgbootDies::LeaveChild).exec();
    spawn_error(argv[0].as_ref(), &e)
}

/// The state of one supervised child, shared by the blocking loop (server)
/// and the async loop (commands run under the lock).
struct Tracker<'a> {
    pid: Pid,
    map: &'a BTreeMap<i32, i32>,
    grace: Option<Duration>,
    kill_at: Option<Instant>,
    status: Option<WaitStatus>,
    /// The first terminating signal pgboot itself received.
    signalled: Option<i32>,
    /// The stop requests (SIGTERM, SIGINT, SIGQUIT) the child already got,
    /// as a bit set by signal number: the same one again kills its group.
    asked_to_stop: u64,
    /// Whether debug lines are logged, asked once: the level does not change.
    debug: bool,
}

impl<'a> Tracker<'a> {
    fn new(pid: Pid, map: &'a BTreeMap<i32, i32>, grace: Option<Duration>) -> Self {
        Tracker {
            pid,
            map,
            grace,
            kill_at: None,
            status: None,
            signalled: None,
            asked_to_stop: 0,
            debug: tracing::enabled!(tracing::Level::DEBUG),
        }
    }

    fn on_signals(&mut self, sigs: &[i32]) {
        for &sig in sigs {
            self.on_signal(sig);
        }
    }

    /// The supervise loop's work for one signal. The common case, a signal
    /// forwarded as it is, stays in this function's few instructions; the
    /// rest (reaping, stop requests, logging) is out of line, so that the
    /// pages the loop touches per signal stay few (`syscall.rs`).
    #[inline]
    fn on_signal(&mut self, sig: i32) {
        if sig == libc::SIGCHLD {
            self.reap();
        } else if signals::forwardable(sig) {
            self.forward(sig);
        }
    }

    #[inline]
    fn forward(&mut self, sig: i32) {
        if self.status.is_some() {
            return;
        }
        if signals::terminating(sig) || !self.map.is_empty() || self.debug {
            return self.forward_with_care(sig);
        }
        if let Err(e) = signals::send(self.pid.as_raw(), sig) {
            forward_failed(sig, e);
        }
    }

    /// Forwarding with everything but the common case: the signal map, the
    /// stop requests and their grace period, debug lines.
    #[cold]
    #[inline(never)]
    fn forward_with_care(&mut self, sig: i32) {
        let to = self.map.get(&sig).copied().unwrap_or(sig);
        let stop_request = matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT);
        if stop_request && self.asked_to_stop & bit(sig) != 0 {
            // What a user means by pressing Ctrl-C twice, or an orchestrator
            // by a second `stop`: do not wait out a grace period (or forever,
            // when none is set) for a child that ignores the first request.
            // A *different* stop signal is forwarded: servers give them
            // meanings of their own (nginx: QUIT graceful, then TERM fast).
            tracing::warn!(signal = %signals::name(sig), pid = self.pid.as_raw(), "the same stop signal again while the child is stopping; sending SIGKILL to its process group");
            self.kill_now();
            return;
        }
        if to == sig {
            tracing::debug!(signal = %signals::name(sig), pid = self.pid.as_raw(), "forwarding");
        } else {
            tracing::debug!(signal = %signals::name(sig), to = %signals::name(to), pid = self.pid.as_raw(), "forwarding (mapped)");
        }
        if let Err(e) = signals::send(self.pid.as_raw(), to) {
            forward_failed(to, e);
        }
        if stop_request {
            self.signalled.get_or_insert(sig);
            self.asked_to_stop |= bit(sig);
            if let (Some(grace), None) = (self.grace, self.kill_at) {
                self.kill_at = Some(Instant::now() + grace);
            }
        } else if signals::terminating(sig) {
            self.signalled.get_or_insert(sig);
        }
    }

    #[cold]
    #[inline(never)]
    fn reap(&mut self) {
        let pid = self.pid;
        let mut mine = None;
        signals::reap(|p, st| {
            if p == pid {
                mine = Some(st);
            } else {
                tracing::debug!(pid = p.as_raw(), "reaped an orphan");
            }
        });
        if mine.is_some() {
            self.status = mine;
        }
    }

    /// Ask the child's group to stop now, and kill it after `grace`.
    fn stop(&mut self, grace: Duration) {
        if let Err(e) = signals::send(-self.pid.as_raw(), libc::SIGTERM) {
            tracing::warn!(error = %e, "could not send SIGTERM to the child's group");
        }
        self.asked_to_stop |= bit(libc::SIGTERM);
        let at = Instant::now() + grace;
        self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
    }

    fn until_kill(&self) -> Option<Duration> {
        self.kill_at.map(until)
    }

    #[inline]
    fn kill_if_due(&mut self) {
        if self.kill_at.is_some() {
            self.kill_if_past_grace();
        }
    }

    #[cold]
    #[inline(never)]
    fn kill_if_past_grace(&mut self) {
        if self.status.is_none() && self.kill_at.is_some_and(|k| Instant::now() >= k) {
            tracing::warn!(
                pid = self.pid.as_raw(),
                "still running after the grace period; sending SIGKILL to its process group"
            );
            self.kill_now();
        }
    }

    fn kill_now(&mut self) {
        if let Err(e) = signals::send(-self.pid.as_raw(), libc::SIGKILL) {
            tracing::warn!(error = %e, "could not SIGKILL the child's group");
        }
        self.kill_at = None;
    }

    /// The child ended: SIGTERM to what is left of its group, and its status.
    fn finish(&self) -> i32 {
        let status = self.status.unwrap_or(WaitStatus::StillAlive);
        if let Err(e) = signals::send(-self.pid.as_raw(), libc::SIGTERM) {
            tracing::debug!(error = %e, "could not signal the child's group");
        }
        exit::from_wait_status(status).unwrap_or(0)
    }
}

#[cold]
#[inline(never)]
fn forward_failed(sig: i32, e: nix::Error) {
    tracing::warn!(signal = %signals::name(sig), error = %e, "could not forward signal");
}

/// Work the supervise loop does once, `after` it started, between two
/// signals. The lean supervisor gives back its startup pages this way: a
/// command that is over by then (`pgboot supervise -- true`, a server that
/// fails at once) never pays for it, nor for faulting back in the code its
/// exit runs.
#[derive(Debug, Clone, Copy)]
pub struct Deferred {
    pub after: Duration,
    pub run: fn(),
}

/// Supervises the server until it exits; returns its status. Never fails.
/// `announce` logs the exit at info (boot); `pgboot supervise`, a drop-in
/// for tini, stays quiet unless asked (debug).
pub fn supervise(
    sfd: &SignalFd,
    pid: Pid,
    cfg: &SuperviseConfig,
    announce: bool,
    deferred: Option<Deferred>,
) -> Exit {
    let mut t = Tracker::new(pid, &cfg.signal_map, cfg.grace_period);
    if let Err(e) = signals::set_blocking(sfd) {
        tracing::warn!(error = %e, "could not make the signalfd blocking");
    }
    let mut deferred = deferred.map(|d| (Instant::now() + d.after, d.run));
    // The child may have ended before the first read; its SIGCHLD is queued
    // and read below, so nothing is missed.
    loop {
        let wait = match deferred {
            None => t.until_kill(),
            Some((at, _)) => Some(until(at).min(t.until_kill().unwrap_or(Duration::MAX))),
        };
        match signals::next(sfd, wait) {
            Ok(Some(sig)) => t.on_signal(sig),
            Ok(None) => {}
            Err(e) => t.read_failed(e),
        }
        t.kill_if_due();
        if t.status.is_some() {
            return t.exited(announce);
        }
        if let Some((at, run)) = deferred
            && until(at).is_zero()
        {
            run();
            deferred = None;
        }
    }
}

fn until(at: Instant) -> Duration {
    at.saturating_duration_since(Instant::now())
}

impl Tracker<'_> {
    #[cold]
    #[inline(never)]
    fn read_failed(&mut self, e: nix::Error) {
        tracing::error!(error = %e, "reading the signalfd failed; reaping anyway");
        self.reap();
        std::thread::sleep(Duration::from_millis(100));
    }

    /// The server is gone: its status, logged.
    #[cold]
    #[inline(never)]
    fn exited(&self, announce: bool) -> Exit {
        let code = self.finish();
        let pid = self.pid.as_raw();
        if announce {
            tracing::info!(pid, status = code, "server exited");
        } else {
            tracing::debug!(pid, status = code, "command exited");
        }
        Exit::Child(code)
    }
}

/// Why a command run under the lock was stopped by pgboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The lock session was lost (fencing).
    LockLost(String),
    /// `--migrate-timeout` passed.
    TimedOut(Duration),
}

/// How a command run under the lock ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its status: exit code, or 128+N.
    pub code: i32,
    /// The first terminating signal pgboot received while it ran.
    pub signalled: Option<i32>,
    /// Why pgboot stopped it, if it did.
    pub stopped: Option<Stopped>,
}

impl Outcome {
    /// Whether pgboot ended the command (fencing, `--migrate-timeout`, or a
    /// signal it forwarded): then the command's database sessions may
    /// outlive it by up to `client_connection_check_interval`, and the lock
    /// must wait for them (`Lock::wait_sessions_gone`) before it is released.
    #[must_use]
    pub fn stopped_by_pgboot(&self) -> bool {
        self.stopped.is_some() || self.signalled.is_some()
    }
}

/// A check made every [`Watchdog::period`] while a command runs under the lock.
pub trait Watchdog {
    /// `Some(reason)` when the command must be stopped (the lock is lost).
    fn check(&mut self) -> impl Future<Output = Option<String>>;

    /// How often [`Watchdog::check`] is called.
    fn period(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// How long a child stopped by pgboot (fencing, timeout) gets before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Supervises a command that runs under the lock (the migration command,
/// or `pgboot run`'s), inside the database phases' tokio runtime: forwards
/// signals, reaps, calls `watchdog` every period, enforces `timeout`.
pub async fn supervise_async(
    sigs: &AsyncSignals,
    pid: Pid,
    map: &BTreeMap<i32, i32>,
    grace: Option<Duration>,
    timeout: Option<Duration>,
    watchdog: &mut impl Watchdog,
) -> Outcome {
    let mut t = Tracker::new(pid, map, grace);
    let mut stopped = None;
    let deadline = timeout.map(|d| (tokio::time::Instant::now() + d, d));
    let mut tick = tokio::time::interval(watchdog.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The child may have ended before this loop first reads the signalfd.
    t.reap();
    while t.status.is_none() {
        let kill_in = t.until_kill();
        tokio::select! {
            r = sigs.next() => match r {
                Ok(s) => t.on_signals(&s),
                Err(e) => {
                    tracing::error!(error = %e, "reading the signalfd failed; reaping anyway");
                    t.reap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tick.tick(), if stopped.is_none() => {
                if let Some(reason) = watchdog.check().await {
                    tracing::error!(pid = pid.as_raw(), reason = %reason, "stopping the command: SIGTERM now, SIGKILL in {}s", STOP_GRACE.as_secs());
                    stopped = Some(Stopped::LockLost(reason));
                    t.stop(STOP_GRACE);
                }
            }
            () = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if stopped.is_none() && deadline.is_some() => {
                let d = deadline.map(|(_, d)| d).unwrap_or_default();
                tracing::error!(pid = pid.as_raw(), "the command ran longer than --migrate-timeout ({}); stopping it", humantime::format_duration(d));
                stopped = Some(Stopped::TimedOut(d));
                t.stop(STOP_GRACE);
            }
            () = async {
                match kill_in {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            }, if kill_in.is_some() => t.kill_if_due(),
        }
    }
    Outcome {
        code: t.finish(),
        signalled: t.signalled,
        stopped,
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::bit;

    #[test]
    fn signal_bits_cover_1_to_64_and_nothing_else() {
        assert_eq!(bit(1), 1);
        assert_eq!(bit(libc::SIGTERM), 1 << 14);
        assert_eq!(bit(64), 1 << 63);
        assert_eq!(bit(0), 0);
        assert_eq!(bit(65), 0);
    }
}

//! The lean supervisor: the process that lives as long as the server does
//! is a small one (issue 12).
//!
//! Two ways in, both checked at the top of `main`, right after the signals
//! are blocked and before clap, tokio, sqlx or `tracing-subscriber` run:
//!
//! - `pgboot supervise …` in the common case ([`args`]): read by hand, then
//!   spawn and supervise, with no other step.
//! - The handover ([`handover`]): after a boot (or a `supervise` the full
//!   parser had to read), the process that spawned the server re-executes
//!   pgboot's binary with `PGBOOT_SUPERVISE_HANDOVER` set, and the new image
//!   supervises the inherited child. The database code, the runtime and the
//!   parser were never touched in that image, so none of their pages are.
//!
//! Both run the same supervise loop as the full binary (`supervise.rs`);
//! logs go through a few-dozen-line subscriber ([`log`]) in the chosen format.
//! 10 ms into the loop, the pages of the binary that starting up touched are
//! given back ([`shed`]).

mod args;
mod handover;
mod log;
mod shed;

use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use crate::config::{LogConfig, SuperviseConfig};
use crate::exit::Exit;
use crate::supervise;

/// When the startup pages are given back ([`shed`]): 10 ms into
/// supervising, long enough that a command which ends at once (`true`, a
/// server that fails on start) ends first, and short enough that a server is
/// supervised by the small process long before anyone looks at it.
const SHED: supervise::Deferred = supervise::Deferred {
    after: std::time::Duration::from_millis(10),
    run: shed::drop_startup_pages,
};

/// Runs the lean supervisor when this process is one; `None` when the full
/// pgboot must run.
pub fn main(sfd: &SignalFd) -> Option<i32> {
    if let Some(value) = std::env::var_os(handover::VAR) {
        return Some(take_over(sfd, &value.to_string_lossy()));
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let s = args::parse(&args, &|k| std::env::var(k).ok())?;
    log::install(s.json, s.level);
    supervise::become_reaper();
    Some(match supervise::spawn(&s.sup.command, &[]) {
        Ok(pid) => {
            tracing::debug!(pid = pid.as_raw(), command = ?s.sup.command, "started");
            supervise::supervise(sfd, pid, &s.sup, false, Some(SHED)).code()
        }
        Err(e) => {
            tracing::error!("{e}");
            e.exit().code()
        }
    })
}

/// The new image's side of the handover.
fn take_over(sfd: &SignalFd, value: &str) -> i32 {
    let Some(h) = handover::Handover::decode(value).filter(|h| is_our_child(h.pid)) else {
        eprintln!(
            "pgboot: error: {}={value:?} is not a handover from this pgboot: the variable is \
             pgboot's own (it hands the server over to its lean supervisor); unset it",
            handover::VAR
        );
        return Exit::Usage.code();
    };
    log::install(h.json, h.level);
    keep_the_name();
    supervise::become_reaper();
    supervise::supervise(sfd, h.pid, &h.config(), h.announce, Some(SHED)).code()
}

/// Names this process as it was named before the handover. The kernel names
/// a process after the file it executes, and the handover executes
/// `/proc/self/exe`: `ps`, `top` and `/proc/1/comm` would say `exe`. The name
/// is argv\[0\]'s last component, cut to the kernel's 15 bytes, as an
/// ordinary exec of pgboot gives.
fn keep_the_name() {
    let Some(argv0) = std::env::args_os().next() else {
        return;
    };
    let path = std::path::Path::new(&argv0);
    let base = path
        .file_name()
        .unwrap_or(argv0.as_os_str())
        .as_encoded_bytes();
    let cut = &base[..base.len().min(15)];
    if let Ok(name) = std::ffi::CString::new(cut) {
        // Cosmetic: a failure changes nothing else.
        let _ = nix::sys::prctl::set_name(&name);
    }
}

/// Whether `pid` is a child of this process (alive or a zombie not reaped).
fn is_our_child(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The parent's pid is the second field after the parenthesised name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<i32>().ok())
        == Some(nix::unistd::getpid().as_raw())
}

/// The most verbose level at which pgboot's supervising lines (`supervise`,
/// `lean`) are on. The lean image's subscriber knows levels, not targets;
/// the most verbose level of the whole filter (`LevelFilter::current`) would
/// hand it the debug lines that `sqlx=debug`, say, asked of another target.
fn own_level() -> tracing::level_filters::LevelFilter {
    use tracing::Level;
    use tracing::level_filters::LevelFilter;
    macro_rules! on {
        ($level:expr) => {
            tracing::enabled!(target: "pgboot::supervise", $level)
                || tracing::enabled!(target: "pgboot::lean", $level)
        };
    }
    if on!(Level::TRACE) {
        LevelFilter::TRACE
    } else if on!(Level::DEBUG) {
        LevelFilter::DEBUG
    } else if on!(Level::INFO) {
        LevelFilter::INFO
    } else if on!(Level::WARN) {
        LevelFilter::WARN
    } else if on!(Level::ERROR) {
        LevelFilter::ERROR
    } else {
        LevelFilter::OFF
    }
}

/// Hands the supervision of the server `pid` over to a lean image of
/// pgboot. Returns only if that was not possible; the caller then
/// supervises in this process.
pub fn hand_over(pid: Pid, sup: &SuperviseConfig, log: &LogConfig, announce: bool) {
    let h = handover::Handover {
        pid,
        grace_period: sup.grace_period,
        signal_map: sup.signal_map.iter().map(|(a, b)| (*a, *b)).collect(),
        json: log.json,
        level: own_level(),
        announce,
    };
    let e = handover::exec(&h);
    tracing::debug!(error = %e, "could not re-execute as the lean supervisor; supervising here");
}

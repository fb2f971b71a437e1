//! The handover from the booting process to the lean supervisor: once the
//! server is spawned, pgboot re-executes its own binary (`/proc/self/exe`)
//! with `PGBOOT_SUPERVISE_HANDOVER` set, and the new image supervises the
//! child it inherited.
//!
//! What crosses `execve(2)` on its own: the child (still ours to reap), the
//! blocked signal mask, and every pending signal (signal(7), "Signal mask and
//! pending signals"; a SIGCHLD or SIGTERM that arrives during the exec waits
//! in the queue). The signalfd is not carried over: it is only a window on
//! the process's pending signals, and the new image opens another on the
//! same mask. `PR_SET_CHILD_SUBREAPER` is kept too (the new image sets it
//! again anyway). What the variable carries: the child's pid, the grace
//! period, the signal map, the log format and level, and whether to log the
//! server's exit at info — as a few integers and words, read without a parser
//! crate.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::unistd::Pid;
use tracing::level_filters::LevelFilter;

use crate::config::SuperviseConfig;

/// The variable that carries the handover; pgboot's own, never the user's.
pub const VAR: &str = "PGBOOT_SUPERVISE_HANDOVER";
/// The format's version, first in the value.
const VERSION: &str = "v1";

/// What the lean supervisor needs to take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub pid: Pid,
    pub grace_period: Option<Duration>,
    pub signal_map: Vec<(i32, i32)>,
    pub json: bool,
    pub level: LevelFilter,
    /// Log the server's exit at info (after a boot), not debug.
    pub announce: bool,
}

impl Handover {
    /// `v1 PID GRACE_MS|- FROM:TO,…|- text|json LEVEL 0|1`.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = format!("{VERSION} {} ", self.pid.as_raw());
        match self.grace_period {
            Some(d) => {
                let _ = write!(s, "{}", d.as_millis());
            }
            None => s.push('-'),
        }
        s.push(' ');
        if self.signal_map.is_empty() {
            s.push('-');
        }
        for (i, (from, to)) in self.signal_map.iter().enumerate() {
            let _ = write!(s, "{}{from}:{to}", if i > 0 { "," } else { "" });
        }
        let _ = write!(
            s,
            " {} {} {}",
            if self.json { "json" } else { "text" },
            super::log::level_name(self.level),
            u8::from(self.announce)
        );
        s
    }

    /// The inverse of [`Handover::encode`]; `None` for anything else.
    #[must_use]
    pub fn decode(value: &str) -> Option<Handover> {
        let mut w = value.split(' ');
        if w.next()? != VERSION {
            return None;
        }
        let pid = Pid::from_raw(w.next()?.parse().ok().filter(|p| *p > 0)?);
        let grace_period = match w.next()? {
            "-" => None,
            ms => Some(Duration::from_millis(ms.parse().ok()?)),
        };
        let signal_map = match w.next()? {
            "-" => Vec::new(),
            pairs => pairs
                .split(',')
                .map(|pair| {
                    let (a, b) = pair.split_once(':')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect::<Option<Vec<_>>>()?,
        };
        let json = match w.next()? {
            "json" => true,
            "text" => false,
            _ => return None,
        };
        let level = super::log::parse_level(w.next()?)?;
        let announce = match w.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        w.next().is_none().then_some(Handover {
            pid,
            grace_period,
            signal_map,
            json,
            level,
            announce,
        })
    }

    /// The `SuperviseConfig` the supervise loop takes (COMMAND is not needed
    /// any more: it runs already).
    #[must_use]
    pub fn config(&self) -> SuperviseConfig {
        SuperviseConfig {
            command: Vec::new(),
            grace_period: self.grace_period,
            signal_map: self.signal_map.iter().copied().collect(),
        }
    }
}

/// Re-executes pgboot's binary as the lean supervisor of `h.pid`, with the
/// same argv (so `ps` shows what was started) and environment. Returns only
/// if the exec failed (no `/proc`, say): then the caller supervises itself.
pub fn exec(h: &Handover) -> nix::Error {
    let Ok(value) = CString::new(format!("{VAR}={}", h.encode())) else {
        return nix::Error::EINVAL;
    };
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != VAR)
        .filter_map(|(mut kv, v)| {
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).ok()
        })
        .collect();
    envp.push(value);
    // execve, not `Command::exec`: the standard library unblocks every
    // signal before its exec, and a pending SIGTERM would then be acted on
    // (or, for PID 1, dropped) instead of reaching the new image.
    match nix::unistd::execve(c"/proc/self/exe", &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        for h in [
            Handover {
                pid: Pid::from_raw(42),
                grace_period: Some(Duration::from_millis(1500)),
                signal_map: vec![(15, 3), (2, 15)],
                json: true,
                level: LevelFilter::DEBUG,
                announce: true,
            },
            Handover {
                pid: Pid::from_raw(7),
                grace_period: None,
                signal_map: vec![],
                json: false,
                level: LevelFilter::OFF,
                announce: false,
            },
        ] {
            assert_eq!(
                Handover::decode(&h.encode()),
                Some(h.clone()),
                "{}",
                h.encode()
            );
        }
        assert_eq!(
            Handover {
                pid: Pid::from_raw(42),
                grace_period: Some(Duration::from_millis(1500)),
                signal_map: vec![(15, 3)],
                json: true,
                level: LevelFilter::INFO,
                announce: true,
            }
            .encode(),
            "v1 42 1500 15:3 json info 1"
        );
    }

    #[test]
    fn refuses_anything_else() {
        for s in [
            "",
            "1",
            "v2 42 - - text info 1",
            "v1 0 - - text info 1",
            "v1 -3 - - text info 1",
            "v1 42 soon - text info 1",
            "v1 42 - 15 text info 1",
            "v1 42 - - xml info 1",
            "v1 42 - - text loud 1",
            "v1 42 - - text info 2",
            "v1 42 - - text info 1 extra",
        ] {
            assert_eq!(Handover::decode(s), None, "{s:?}");
        }
    }
}

//! The runtime of the database phases: a current-thread tokio runtime that
//! lives only while they run, and a way to stop any of them on a signal.
//!
//! Needs the signalfd from `signals::block_all`. Returns it back when the
//! phases end, for the blocking loop that supervises the server without
//! tokio: no tokio thread, no connection of pgboot's, stays while the
//! server runs. A terminating signal during a phase ends pgboot with
//! 128+N (`Error::Signalled`).

use nix::sys::signalfd::SignalFd;

use crate::error::{Error, Result};
use crate::signals::{self, AsyncSignals};

/// Runs the database phases on a current-thread runtime, then drops it and
/// gives the signalfd back for the poll loop.
///
/// # Errors
/// The phases' error, or an internal one if the runtime cannot start.
pub fn with_runtime<T>(
    sfd: SignalFd,
    phase: impl AsyncFnOnce(&AsyncSignals) -> Result<T>,
) -> Result<(SignalFd, T)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::sys("starting the runtime", e))?;
    let (sigs, out) = rt.block_on(async {
        let sigs = AsyncSignals::new(sfd).map_err(|e| Error::sys("registering the signalfd", e))?;
        let out = phase(&sigs).await;
        Ok::<_, Error>((sigs, out))
    })?;
    let sfd = {
        let _guard = rt.enter();
        sigs.into_inner()
    };
    drop(rt);
    out.map(|t| (sfd, t))
}

/// Runs `fut` unless a terminating signal comes first: then it is dropped
/// (closing any connection it held) and pgboot ends with 128+N.
///
/// # Errors
/// `fut`'s error, or `Error::Signalled`.
pub async fn interruptible<T>(
    sigs: &AsyncSignals,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            s = sigs.next() => {
                let s = s.map_err(|e| Error::sys("reading the signalfd", e))?;
                for sig in s {
                    if sig == libc::SIGCHLD {
                        signals::reap(|pid, _| tracing::debug!(pid = pid.as_raw(), "reaped an orphan"));
                    } else if signals::terminating(sig) {
                        return Err(Error::Signalled { signo: sig, name: signals::name(sig) });
                    } else {
                        tracing::debug!(signal = %signals::name(sig), "ignored before the server starts");
                    }
                }
            }
        }
    }
}

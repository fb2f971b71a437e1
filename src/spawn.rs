//! Starting the server with `posix_spawnp(3)`: its own process group, an
//! empty signal mask, `SIGPIPE` at its default, in one call that does not
//! copy pgboot's memory.
//!
//! Why not `std::process::Command`: a fork copies pgboot's page tables, marks
//! every page copy-on-write, and tears the copy down again at the child's
//! `exec`; `posix_spawn` (a vfork-style clone in musl and glibc) does none of
//! it (issue 12: with the environment passed as it is, 0.1-0.2 ms less for
//! `pgboot supervise -- true`). std takes the same shortcut only when it can, and says
//! nothing of the signal mask when it cannot (a `PATH` in the child's
//! environment, a `pre_exec`): the mask pgboot starts every child with, all
//! signals blocked, would then reach the server, which could not be stopped.
//! Here the mask is set by the attribute, always.
//!
//! Commands that must die with pgboot (`PR_SET_PDEATHSIG`) or take the
//! terminal (`tcsetpgrp`) need code between fork and exec, which
//! `posix_spawn` cannot run: they go through `supervise::command`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Spawns `argv` (searched in `PATH` when `argv[0]` has no slash) with
/// pgboot's environment, less the variables named in `hidden`, plus `env`;
/// in a process group of its own, with an empty signal mask and `SIGPIPE`
/// and libc's own signals at `SIG_DFL` (see [`at_default`]). Returns the
/// child's pid.
///
/// # Errors
/// What `posix_spawnp` reports (`NotFound`, `PermissionDenied`…), or
/// `InvalidInput` for an argument or variable with a NUL byte.
pub fn in_own_group<S: AsRef<OsStr>>(
    argv: &[S],
    env: &[(String, String)],
    hidden: &[&str],
) -> io::Result<libc::pid_t> {
    let arguments = argv
        .iter()
        .map(|a| c_string(a.as_ref().as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    let Some(program) = arguments.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    };
    let argv_ptrs = null_terminated(&arguments);
    // pgboot's own environment, when the child's is the same: nothing to
    // copy (`pgboot supervise`'s usual case).
    let unchanged = env.is_empty() && hidden.iter().all(|h| std::env::var_os(h).is_none());
    let vars = if unchanged {
        Vec::new()
    } else {
        environment(std::env::vars_os(), env, hidden)
            .into_iter()
            .map(c_string)
            .collect::<io::Result<Vec<_>>>()?
    };
    let env_ptrs = null_terminated(&vars);
    let envp = if unchanged {
        #[allow(unsafe_code)]
        // SAFETY: reading the pointer; pgboot never changes its environment
        // (std's `set_var` is not called), so the array it points to is whole.
        let own = unsafe { environ };
        own.cast_const()
    } else {
        env_ptrs.as_ptr()
    };
    let attr = Attributes::new()?;
    let mut pid: libc::pid_t = 0;
    #[allow(unsafe_code)]
    // SAFETY: `program` and both arrays are NUL-terminated and outlive the
    // call; `attr` is initialised; a null file-actions pointer means none.
    let rc = unsafe {
        libc::posix_spawnp(
            &raw mut pid,
            program.as_ptr(),
            std::ptr::null(),
            attr.as_ptr(),
            argv_ptrs.as_ptr(),
            envp,
        )
    };
    check(rc)?;
    Ok(pid)
}

#[allow(unsafe_code)]
unsafe extern "C" {
    /// The process's environment, environ(7).
    static environ: *mut *mut libc::c_char;
}

/// The child's environment, as `KEY=VALUE` entries: `inherited` in its
/// order, less `hidden` and the keys `env` sets, then `env`.
fn environment(
    inherited: impl Iterator<Item = (OsString, OsString)>,
    env: &[(String, String)],
    hidden: &[&str],
) -> Vec<Vec<u8>> {
    let dropped = |key: &OsStr| {
        hidden.iter().any(|h| key == OsStr::new(h)) || env.iter().any(|(k, _)| key == OsStr::new(k))
    };
    let entry = |key: OsString, value: OsString| {
        let mut e = key.into_vec();
        e.push(b'=');
        e.extend(value.into_vec());
        e
    };
    inherited
        .filter(|(k, _)| !dropped(k))
        .map(|(k, v)| entry(k, v))
        .chain(env.iter().map(|(k, v)| entry(k.into(), v.into())))
        .collect()
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or variable",
        )
    })
}

/// The `char *const[]` that exec takes: `strings`' pointers, then null.
fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// The signals the child starts at `SIG_DFL`: `SIGPIPE`, which std ignores
/// in pgboot, and those libc keeps for itself (32 up to `SIGRTMIN`). glibc's
/// and musl's `posix_spawn` hand the latter over *ignored* when pgboot's
/// libc has a handler there (glibc always does), and an ignored signal
/// outlives exec; a fork and exec would leave them at their default.
///
/// The set is written bit by bit: `sigaddset` refuses libc's own signals.
fn at_default() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: an all-zero sigset_t is the empty set; on Linux it is an array
    // of unsigned longs, bit (N-1) standing for signal N, and 32..SIGRTMIN
    // lie within its first 64 bits. The set is not read before it is whole.
    unsafe {
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        let words = set.as_mut_ptr().cast::<libc::c_ulong>();
        let word_bits = libc::c_ulong::BITS as usize;
        for sig in 32..libc::SIGRTMIN() {
            let bit = usize::try_from(sig - 1).unwrap_or(0);
            *words.add(bit / word_bits) |= 1 << (bit % word_bits);
        }
        set.assume_init()
    }
}

/// A `posix_spawnattr_t` set for the server, destroyed when dropped.
struct Attributes(MaybeUninit<libc::posix_spawnattr_t>);

impl Attributes {
    fn new() -> io::Result<Self> {
        let mut raw = MaybeUninit::uninit();
        #[allow(unsafe_code)]
        // SAFETY: init on storage of the right type, once.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // Initialised from here on: dropping it destroys it.
        let mut attr = Self(raw);
        let a = attr.0.as_mut_ptr();
        #[allow(unsafe_code)]
        // SAFETY: `a` is the initialised attribute; the setters copy the
        // sets they are given.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            check(libc::posix_spawnattr_setsigmask(a, set.as_ptr()))?;
            let defaults = at_default();
            check(libc::posix_spawnattr_setsigdefault(a, &raw const defaults))?;
            check(libc::posix_spawnattr_setpgroup(a, 0))?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETPGROUP;
            #[allow(clippy::cast_possible_truncation)] // the flags fit a short
            check(libc::posix_spawnattr_setflags(a, flags as libc::c_short))?;
        }
        Ok(attr)
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        self.0.as_ptr()
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: a value of this type exists only once init succeeded.
        unsafe {
            libc::posix_spawnattr_destroy(self.0.as_mut_ptr());
        }
    }
}

/// The `posix_spawn` family returns an error number instead of setting errno.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn text(entries: Vec<Vec<u8>>) -> Vec<String> {
        entries
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn the_environment_drops_hidden_keys_and_lets_given_ones_win() {
        let inherited = os(&[
            ("PATH", "/bin"),
            ("PGBOOT_MIGRATE_DATABASE_URL", "postgres://secret"),
            ("DATABASE_URL", "postgres://old"),
            ("EMPTY", ""),
        ]);
        let env = [("DATABASE_URL".to_owned(), "postgres://new".to_owned())];
        let got = text(environment(
            inherited.into_iter(),
            &env,
            &["PGBOOT_MIGRATE_DATABASE_URL"],
        ));
        assert_eq!(got, ["PATH=/bin", "EMPTY=", "DATABASE_URL=postgres://new"]);
    }

    /// Waits for `pid` and returns its exit code.
    fn exit_code(pid: libc::pid_t) -> i32 {
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        match status {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_child_leads_its_group_with_an_empty_mask_even_from_a_blocked_thread() {
        use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
        // This test's thread blocks every signal, as pgboot does; the
        // child's mask must not show it.
        let mut old = SigSet::empty();
        pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut old),
        )
        .unwrap();
        // grep itself, not a shell (a shell may clear its own mask).
        let mask = in_own_group(
            &["grep", "-q", "^SigBlk:[[:space:]]*0*$", "/proc/self/status"],
            &[],
            &[],
        );
        let group = in_own_group(
            &[
                "sh",
                "-c",
                "[ \"$(ps -o pgid= -p $$ | tr -d ' ')\" = \"$$\" ]",
            ],
            &[],
            &[],
        );
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
        assert_eq!(exit_code(mask.unwrap()), 0, "the child's mask is not empty");
        assert_eq!(
            exit_code(group.unwrap()),
            0,
            "the child does not lead its group"
        );
    }

    #[test]
    fn a_missing_program_is_not_found_and_a_nul_byte_is_invalid_input() {
        let missing = in_own_group(&["pgboot-no-such-program"], &[], &[]);
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        let nul = in_own_group(&["true"], &[("A".to_owned(), "b\0c".to_owned())], &[]);
        assert_eq!(nul.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let none: [&str; 0] = [];
        assert_eq!(
            in_own_group(&none, &[], &[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_child_gets_the_given_variables_and_not_the_hidden_ones() {
        // cargo sets both variables for the tests it runs.
        assert!(
            std::env::var_os("CARGO_PKG_NAME").is_some()
                && std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "run under cargo test"
        );
        let script = "[ \"$PGBOOT_SPAWN_TEST\" = given ] && [ -z \"${CARGO_PKG_NAME+set}\" ] \
                      && [ -n \"$CARGO_MANIFEST_DIR\" ]";
        let pid = in_own_group(
            &["sh", "-c", script],
            &[("PGBOOT_SPAWN_TEST".to_owned(), "given".to_owned())],
            &["CARGO_PKG_NAME"],
        )
        .unwrap();
        assert_eq!(exit_code(pid), 0);
        // Nothing to add or hide: pgboot's own environment is passed as is.
        let script = "[ -n \"$CARGO_PKG_NAME\" ] && [ -n \"$CARGO_MANIFEST_DIR\" ]";
        let pid = in_own_group(&["sh", "-c", script], &[], &["PGBOOT_SPAWN_NOT_SET"]).unwrap();
        assert_eq!(exit_code(pid), 0, "the inherited environment is missing");
    }
}

//! The two system calls the supervise loop makes for each signal, `read(2)`
//! of the signalfd and `kill(2)`, issued inline.
//!
//! Why not libc's wrappers: the loop runs for weeks, and what it costs per
//! signal is mostly which pages it touches after the kernel has run someone
//! else (TLB and cache misses), not how many instructions it runs. Through
//! musl, a `read` and a `kill` touch four pages of libc's code (the
//! wrapper, the cancellation-point shim, the error conversion, the other
//! wrapper), more than the whole loop of a C supervisor such as catatonit.
//! Inline, they cost no page beyond the loop's own (issue 12; pages
//! touched per signal are measured by `scripts/bench-supervise`).
//!
//! On `x86_64` and `aarch64` (the targets pgboot ships for) the instruction
//! is issued here; elsewhere, libc's `syscall(2)` does it.
//!
//! Arguments and results are machine words: the casts between integer
//! types below are the registers' reinterpretation, as the kernel reads
//! them (an `int` argument is the low 32 bits of its register).

#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)]

use nix::errno::Errno;

/// `syscall(nr, a, b, c)`, returning the kernel's raw result: a value, or
/// `-errno`.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline]
#[allow(unsafe_code)]
unsafe fn syscall3(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments that are valid for `nr`. The
    // x86_64 Linux convention: number in rax, arguments in rdi, rsi, rdx,
    // the result in rax; the instruction clobbers rcx and r11. The kernel
    // does not touch the user stack.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// `syscall(nr, a, b, c)`, returning the kernel's raw result: a value, or
/// `-errno`.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
#[inline]
#[allow(unsafe_code)]
unsafe fn syscall3(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments that are valid for `nr`. The
    // aarch64 Linux convention: number in x8, arguments in x0-x2, the
    // result in x0; nothing else is clobbered. The kernel does not touch the
    // user stack.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a as isize => ret,
            in("x1") b,
            in("x2") c,
            options(nostack),
        );
    }
    ret
}

/// `syscall(nr, a, b, c)`, returning the kernel's raw result: a value, or
/// `-errno`.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
#[inline]
#[allow(unsafe_code)]
unsafe fn syscall3(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
    // SAFETY: the caller passes arguments that are valid for `nr`.
    let rc = unsafe { libc::syscall(nr, a, b, c) };
    if rc == -1 {
        -(Errno::last_raw() as isize)
    } else {
        rc as isize
    }
}

/// The raw result as a `Result`.
#[inline]
fn result(ret: isize) -> Result<usize, Errno> {
    usize::try_from(ret).map_err(|_| Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL)))
}

/// `read(2)`: fills the start of `buf`, returns how many bytes.
///
/// # Errors
/// The kernel's errno.
#[inline]
#[allow(unsafe_code)]
pub fn read(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is open for as long as it is borrowed, and the kernel
    // writes at most `buf.len()` bytes into `buf`, which we hold mutably.
    result(unsafe {
        syscall3(
            libc::SYS_read,
            fd.as_raw_fd() as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
        )
    })
}

/// `kill(2)`: `pid` a process, or with a minus sign a process group.
///
/// # Errors
/// The kernel's errno.
#[inline]
#[allow(unsafe_code)]
pub fn kill(pid: i32, signo: i32) -> Result<(), Errno> {
    // SAFETY: kill takes two integers and touches no memory of ours. They
    // are passed sign-extended, as the kernel reads them (as `int`).
    result(unsafe {
        syscall3(
            libc::SYS_kill,
            pid as isize as usize,
            signo as isize as usize,
            0,
        )
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn read_fills_the_buffer_and_reports_errors() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        nix::unistd::write(&w, b"hello").expect("write");
        let mut buf = [0u8; 16];
        assert_eq!(read(r.as_fd(), &mut buf), Ok(5));
        assert_eq!(&buf[..5], b"hello");
        drop(w);
        assert_eq!(read(r.as_fd(), &mut buf), Ok(0), "end of file");
        let path = std::env::temp_dir().join(format!("pgboot-syscall-{}", std::process::id()));
        let f = std::fs::File::create(&path).expect("temp file");
        std::fs::remove_file(&path).expect("remove the temp file");
        // A file opened only for writing cannot be read: EBADF.
        assert_eq!(read(f.as_fd(), &mut buf), Err(Errno::EBADF));
    }

    #[test]
    fn kill_signals_processes_and_groups_and_reports_errors() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert_eq!(kill(me, 0), Ok(()));
        assert_eq!(kill(-nix::unistd::getpgrp().as_raw(), 0), Ok(()));
        // pid_max is at most 2^22: this pid is never in use.
        assert_eq!(kill(i32::MAX, 0), Err(Errno::ESRCH));
        assert_eq!(kill(me, 4096), Err(Errno::EINVAL));
    }
}

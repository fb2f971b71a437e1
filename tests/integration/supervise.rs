//! Supervising (`pgboot supervise`): as a real PID 1 of a new PID namespace
//! (`unshare --pid --fork --mount-proc`) and as a plain child (the subreaper
//! path), pgboot passes the child's status, stdio, argv, env and cwd through,
//! forwards signals (mapped by `--signal-map`), reaps every orphan, enforces
//! `--grace-period`, and refuses bad input with exit 64.
//!
//! Children are real programs (`sh -c` scripts, coreutils, `/usr/bin/python3`)
//! that record what they saw in files of a temp dir; the tests signal the pid
//! of pgboot itself (`Running::ns_pid1`), never unshare's. Every wait is
//! bounded; every process is stopped by pid or process group.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::pgboot::{
    Running, TempDir, clean_read_only_kib, pgboot, pgboot_pid1, run, send,
};

/// The bound for a run that should take well under a second.
const QUICK: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

/// `pgboot supervise FLAGS... -- sh -c SCRIPT sh DIR`, as PID 1 or as a
/// plain child. The script gets the temp dir as `$1`.
fn sh_cmd(pid1: bool, flags: &[&str], script: &str, dir: &Path) -> Command {
    let dir = dir.to_str().expect("utf-8 temp dir");
    let mut args = vec!["supervise"];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", script, "sh", dir]);
    if pid1 {
        pgboot_pid1(&args)
    } else {
        pgboot(&args)
    }
}

fn start_sh(pid1: bool, flags: &[&str], script: &str, dir: &Path) -> Running {
    Running::start(sh_cmd(pid1, flags, script, dir))
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Polls `pred` every 5 ms until it holds; panics with pgboot's output after `timeout`.
pub(crate) fn wait_until(
    r: &Running,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            r.output()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn wait_file(r: &Running, path: &Path) {
    wait_until(r, QUICK, &format!("{} to appear", path.display()), || {
        path.exists()
    });
}

/// A field of `/proc/PID/status` (`State`, `PPid`, `SigBlk`…), trimmed.
fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Whether `sig` is in the hex signal set `mask` (`SigBlk`, `SigIgn`…).
fn mask_has(mask: &str, sig: i32) -> bool {
    u64::from_str_radix(mask, 16).is_ok_and(|m| m & (1 << (sig - 1)) != 0)
}

/// PID 1 of the namespace, once it is pgboot with its signals blocked: a
/// signal sent earlier would hit unshare's forked copy, whose default
/// dispositions make the kernel drop it (a namespace's init ignores
/// `SIG_DFL` signals), which no program started later can help. unshare's
/// copy may itself have SIGINT and SIGTERM blocked for an instant (it
/// restores its mask right after the fork), so look for signals only
/// pgboot's "block everything" blocks.
fn pid1_ready_for_signals(r: &Running) -> i32 {
    let pid = r.ns_pid1();
    let deadline = Instant::now() + Duration::from_secs(5);
    let blocked = |m: &str| {
        [libc::SIGTERM, libc::SIGUSR2, libc::SIGWINCH]
            .iter()
            .all(|s| mask_has(m, *s))
    };
    loop {
        if status_field(pid, "SigBlk").is_some_and(|m| blocked(&m)) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "pgboot (pid {pid}) never blocked SIGTERM\n{}",
            r.output()
        );
        thread::yield_now();
    }
}

fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// One process as /proc shows it.
struct Proc {
    pid: i32,
    name: String,
    state: char,
    ppid: i32,
}

/// Every process in the test's own PID namespace.
fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |f: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(f)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push(Proc {
            pid,
            name: field("Name"),
            state: field("State").chars().next().unwrap_or('?'),
            ppid: field("PPid").parse().unwrap_or(0),
        });
    }
    out
}

/// Kills the process group whose id the file at this path holds, by SIGKILL,
/// when dropped: pgboot puts its child in a group of its own, which
/// `Running` (it kills pgboot's group) does not reach when a test fails.
pub(crate) struct KillGroup(pub(crate) PathBuf);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Ok(pgid) = read(&self.0).trim().parse::<i32>()
            && pgid > 1
        {
            send(-pgid, libc::SIGKILL);
        }
    }
}

// ---------------------------------------------------------- exit status

#[test]
fn exit_codes_and_killing_signals_pass_through_as_pid1_and_as_a_child() {
    let dir = TempDir::new("sup-exit");
    let cases = [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("exit 255", 255),
        ("kill -KILL $$", 137),
        ("kill -TERM $$", 143),
    ];
    for pid1 in [true, false] {
        for (script, want) in cases {
            let (code, out, err) = run(sh_cmd(pid1, &[], script, dir.path()), QUICK);
            assert_eq!(code, want, "pid1={pid1} `{script}`\n{out}\n{err}");
        }
    }
}

// -------------------------------------------------------------- signals

#[test]
fn every_forwardable_signal_reaches_a_trapping_child_of_pid1() {
    let dir = TempDir::new("sup-sigs");
    let script = r#"cd "$1"
for s in TERM INT HUP QUIT USR1 USR2 WINCH; do trap "echo $s >> got" $s; done
touch ready
while [ ! -e stop ]; do sleep 0.02; done
exit 0"#;
    let mut r = start_sh(true, &[], script, dir.path());
    let pid = pid1_ready_for_signals(&r);
    let (ready, got) = (dir.path().join("ready"), dir.path().join("got"));
    wait_file(&r, &ready);
    let sigs = [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
    ];
    let mut want = String::new();
    for (sig, name) in sigs {
        send(pid, sig);
        want.push_str(name);
        want.push('\n');
        wait_until(&r, QUICK, &format!("the child to record {name}"), || {
            read(&got) == want
        });
    }
    fs::write(dir.path().join("stop"), "").unwrap();
    assert_eq!(r.exit_code(QUICK), 0, "{}", r.output());
    assert_eq!(read(&got), want);
}

#[test]
fn signal_map_term_to_quit_delivers_quit_not_term() {
    let dir = TempDir::new("sup-map");
    let script = r#"cd "$1"
trap 'echo TERM >> got; exit 10' TERM
trap 'echo QUIT >> got; exit 11' QUIT
touch ready
while :; do sleep 0.02; done"#;
    let mut r = start_sh(true, &["--signal-map", "TERM:QUIT"], script, dir.path());
    let pid = pid1_ready_for_signals(&r);
    wait_file(&r, &dir.path().join("ready"));
    send(pid, libc::SIGTERM);
    assert_eq!(r.exit_code(QUICK), 11, "{}", r.output());
    assert_eq!(read(&dir.path().join("got")), "QUIT\n");
}

#[test]
fn a_burst_of_100_sigusr1_leaves_pid1_and_its_child_running() {
    let dir = TempDir::new("sup-burst");
    let script = r#"cd "$1"
trap 'echo u >> usr1' USR1
touch ready
while [ ! -e stop ]; do sleep 0.02; done
exit 7"#;
    let mut r = start_sh(true, &[], script, dir.path());
    let pid = pid1_ready_for_signals(&r);
    wait_file(&r, &dir.path().join("ready"));
    for _ in 0..100 {
        send(pid, libc::SIGUSR1);
    }
    let usr1 = dir.path().join("usr1");
    wait_until(&r, QUICK, "the child to record SIGUSR1", || {
        !read(&usr1).is_empty()
    });
    // Give any late forward time to land, then check both are still there.
    thread::sleep(Duration::from_millis(200));
    assert!(
        r.wait_timeout(Duration::ZERO).is_none(),
        "pgboot exited after the burst\n{}",
        r.output()
    );
    assert!(
        status_field(pid, "State").is_some_and(|s| !s.starts_with('Z')),
        "pgboot (pid {pid}) is gone after the burst\n{}",
        r.output()
    );
    fs::write(dir.path().join("stop"), "").unwrap();
    assert_eq!(r.exit_code(QUICK), 7, "{}", r.output());
    let n = read(&usr1).lines().count();
    assert!((1..=100).contains(&n), "the child recorded {n} SIGUSR1");
}

#[test]
fn the_supervisor_gives_back_its_startup_pages_once_it_supervises() {
    // Starting up (relocating, reading the arguments, spawning) leaves
    // megabytes of this debug binary resident (4.9 MiB measured); 10 ms into
    // supervising they are given back, and what the loop touches again is
    // well under 2 MiB (0.9 MiB measured).
    let mut r = Running::start(pgboot(&["supervise", "--", "sleep", "30"]));
    let pid = r.pid();
    wait_until(&r, QUICK, "the child to be spawned", || {
        !children(pid).is_empty()
    });
    wait_until(&r, QUICK, "pgboot to give back its startup pages", || {
        clean_read_only_kib(pid).is_some_and(|kib| kib < 2048)
    });
    r.signal(libc::SIGTERM);
    assert_eq!(r.exit_code(QUICK), 143, "{}", r.output());
}

/// A child that ends on SIGTERM by trap (exit 9) or by default (143); a lost
/// signal shows as exit 0 after 5 s.
const TERM_OR_5S: &str = r"trap 'exit 9' TERM; sleep 5 & wait $!; exit 0";

#[test]
fn sigterm_sent_right_after_start_is_not_lost() {
    let dir = TempDir::new("sup-early");
    let start = Instant::now();
    let mut r = start_sh(true, &[], TERM_OR_5S, dir.path());
    let pid = pid1_ready_for_signals(&r);
    send(pid, libc::SIGTERM);
    let code = r.exit_code(QUICK);
    assert!(
        matches!(code, 9 | 143),
        "SIGTERM was lost: exit {code}\n{}",
        r.output()
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn sigterm_queued_before_the_child_exists_is_delivered_to_it() {
    // Stop pgboot (SIGSTOP cannot be blocked) between blocking its signals
    // and spawning the child, queue SIGTERM while it has no child, resume it.
    // Many (unused) arguments widen that window: clap parses them all first.
    let mut args = vec!["supervise", "--", "sh", "-c", TERM_OR_5S];
    args.extend(std::iter::repeat_n("x", 20_000));
    for attempt in 0..100 {
        let mut r = Running::start(pgboot_pid1(&args));
        let pid = pid1_ready_for_signals(&r);
        send(pid, libc::SIGSTOP);
        wait_until(&r, QUICK, "pgboot to stop", || {
            status_field(pid, "State").is_some_and(|s| s.starts_with('T'))
        });
        if !children(pid).is_empty() {
            continue; // stopped too late: the child exists already; try again
        }
        send(pid, libc::SIGTERM);
        assert!(children(pid).is_empty());
        send(pid, libc::SIGCONT);
        let code = r.exit_code(QUICK);
        assert!(
            matches!(code, 9 | 143),
            "the early SIGTERM was lost: exit {code}\n{}",
            r.output()
        );
        eprintln!("pgboot stopped before its spawn on attempt {attempt}");
        return;
    }
    panic!("could not stop pgboot before it spawned its child in 100 attempts");
}

#[test]
fn the_child_gets_an_empty_signal_mask_and_no_ignored_signals() {
    // The test starts pgboot with an empty mask and default dispositions,
    // so anything the child shows was added by pgboot (or by unshare).
    let want = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n";
    let grep = ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"];
    let mut direct = Command::new(grep[0]);
    direct.args(&grep[1..]);
    clean_signals(&mut direct);
    let (code, out, err) = run(direct, QUICK);
    assert_eq!(
        (code, out.as_str()),
        (0, want),
        "the test's own clean start is not clean\n{err}"
    );
    for pid1 in [false, true] {
        let mut args = vec!["supervise", "--"];
        args.extend(grep);
        let mut cmd = if pid1 {
            pgboot_pid1(&args)
        } else {
            pgboot(&args)
        };
        clean_signals(&mut cmd);
        let (code, out, err) = run(cmd, QUICK);
        assert_eq!((code, out.as_str()), (0, want), "pid1={pid1}\n{err}");
    }
}

/// Starts `cmd` with an empty signal mask and every signal at `SIG_DFL`.
///
/// Through the raw system calls: glibc refuses to touch its internal
/// signals 32 and 33, and its `posix_spawn` (what cargo starts the test
/// binary with) leaves them `SIG_IGN` in the child, which every descendant
/// then inherits.
#[allow(unsafe_code)]
fn clean_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    /// The kernel's `struct sigaction` on x86-64 (not glibc's).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    // SAFETY: runs in the forked child before exec and makes only raw
    // system calls (rt_sigprocmask, rt_sigaction) on values on its stack;
    // it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            let empty: u64 = 0;
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const empty,
                0usize,
                8usize,
            );
            let dfl = KernelSigaction {
                handler: libc::SIG_DFL,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            for sig in 1..=64 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, sig, &raw const dfl, 0usize, 8usize);
                }
            }
            Ok(())
        });
    }
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = TempDir::new("sup-grace");
    let script = r#"cd "$1"
trap '' TERM
touch ready
while :; do sleep 0.05; done"#;
    let mut r = start_sh(true, &["--grace-period", "1s"], script, dir.path());
    let pid = pid1_ready_for_signals(&r);
    wait_file(&r, &dir.path().join("ready"));
    let sent = Instant::now();
    send(pid, libc::SIGTERM);
    let code = r.exit_code(Duration::from_secs(8));
    let took = sent.elapsed();
    assert_eq!(code, 137, "{}", r.output());
    assert!(
        took >= Duration::from_millis(900),
        "killed before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// A child that records and ignores a stop signal (SIGTERM, SIGINT) gets
/// SIGKILL (137) at once when the same signal comes a second time, with no
/// grace period set and with a long one alike.
fn a_second_stop_request_kills_a_child_that_ignores_the_first(pid1: bool) {
    for (flags, sig, name) in [
        (&[][..], libc::SIGTERM, "TERM"),
        (&["--grace-period", "60s"][..], libc::SIGINT, "INT"),
    ] {
        let dir = TempDir::new("sup-second");
        let script = r#"cd "$1"
echo $$ > pgid
trap 'echo TERM >> got' TERM
trap 'echo INT >> got' INT
touch ready
while :; do sleep 0.05; done"#;
        let _cleanup = KillGroup(dir.path().join("pgid"));
        let mut r = start_sh(pid1, flags, script, dir.path());
        let pid = if pid1 {
            pid1_ready_for_signals(&r)
        } else {
            r.pid()
        };
        wait_file(&r, &dir.path().join("ready"));
        send(pid, sig);
        let got = dir.path().join("got");
        let want = format!("{name}\n");
        wait_until(&r, QUICK, "the child to record the first signal", || {
            read(&got) == want
        });
        assert!(
            r.wait_timeout(Duration::from_millis(300)).is_none(),
            "pid1={pid1} {flags:?}: pgboot ended after the first SIG{name}\n{}",
            r.output()
        );
        let sent = Instant::now();
        send(pid, sig);
        let code = r.exit_code(Duration::from_secs(10));
        let took = sent.elapsed();
        assert_eq!(code, 137, "pid1={pid1} {flags:?}\n{}", r.output());
        assert!(
            took < Duration::from_secs(2),
            "pid1={pid1} {flags:?}: the second SIG{name} took {took:?} to kill the child\n{}",
            r.output()
        );
        assert_eq!(
            read(&got),
            want,
            "the second one was forwarded, not escalated"
        );
    }
}

#[test]
fn a_second_stop_request_kills_a_child_that_ignores_the_first_as_pid1() {
    a_second_stop_request_kills_a_child_that_ignores_the_first(true);
}

#[test]
fn a_second_stop_request_kills_a_child_that_ignores_the_first_as_a_child() {
    a_second_stop_request_kills_a_child_that_ignores_the_first(false);
}

#[test]
fn leftover_group_members_get_sigterm_when_the_child_exits() {
    // As a plain child: as PID 1, pgboot's exit tears the namespace down
    // (SIGKILL) right after the SIGTERM, so the member could not react.
    let dir = TempDir::new("sup-leftover");
    let script = r#"cd "$1"
echo $$ > pgid
sh -c 'trap "echo gotterm > F; exit 0" TERM; touch bg-ready; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done' </dev/null >/dev/null 2>&1 &
while [ ! -e bg-ready ]; do sleep 0.01; done
exit 0"#;
    let _cleanup = KillGroup(dir.path().join("pgid"));
    let mut r = start_sh(false, &[], script, dir.path());
    assert_eq!(r.exit_code(QUICK), 0, "{}", r.output());
    let f = dir.path().join("F");
    wait_until(
        &r,
        Duration::from_secs(5),
        "the leftover member to get SIGTERM",
        || read(&f) == "gotterm\n",
    );
}

// ------------------------------------------------------------- reaping

#[test]
fn orphaned_grandchildren_are_reaped_as_pid1() {
    // The child counts, inside the namespace, zombies and live orphans
    // (processes whose parent is PID 1, pgboot, other than itself).
    let script = r#"
scan() {
  grep -s -H -E '^(State|PPid):' /proc/[0-9]*/status | awk -F: -v me=$$ '
    { v = $3; gsub(/[ \t]/, "", v); split($1, a, "/"); p = a[3] }
    $2 == "State" { st[p] = substr(v, 1, 1) }
    $2 == "PPid" { pp[p] = v }
    END { z = 0; o = 0
          for (p in st) { if (st[p] == "Z") z++; else if (pp[p] == "1" && p != me) o++ }
          print z, o }'
}
for i in $(seq 200); do (sleep 0.5 &); done
echo "spawned $(scan)"
i=0
while [ $i -lt 200 ]; do
  set -- $(scan)
  if [ "$1" = 0 ] && [ "$2" = 0 ]; then break; fi
  sleep 0.05; i=$((i + 1))
done
sleep 0.1
echo "final $(scan)"
exit 0"#;
    let mut r = Running::start(pgboot_pid1(&["supervise", "--", "sh", "-c", script]));
    assert_eq!(r.exit_code(Duration::from_secs(20)), 0, "{}", r.output());
    let out = r.stdout();
    let field = |tag: &str| -> Vec<u32> {
        let line = out.lines().find_map(|l| l.strip_prefix(tag));
        let line = line.unwrap_or_else(|| panic!("no `{tag}` line\n{}", r.output()));
        line.split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let spawned = field("spawned ");
    assert!(
        spawned[1] > 0,
        "no orphan was reparented to pgboot: {spawned:?}\n{}",
        r.output()
    );
    assert_eq!(
        field("final "),
        [0, 0],
        "zombies, live orphans left\n{}",
        r.output()
    );
}

#[test]
fn orphaned_grandchildren_are_reaped_as_a_subreaper_when_not_pid1() {
    let dir = TempDir::new("sup-subreaper");
    let script = r#"cd "$1"
echo $$ > child
for i in $(seq 200); do (sleep 0.5 &); done
touch spawned
i=0; while [ ! -e stop ] && [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done
exit 0"#;
    let _cleanup = KillGroup(dir.path().join("child"));
    let mut r = start_sh(false, &[], script, dir.path());
    let me = r.pid();
    wait_file(&r, &dir.path().join("spawned"));
    let child: i32 = read(&dir.path().join("child")).trim().parse().unwrap();
    let mut max_alive = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans: Vec<Proc> = processes()
            .into_iter()
            .filter(|p| p.ppid == me && p.pid != child)
            .collect();
        let zombies = orphans.iter().filter(|p| p.state == 'Z').count();
        let alive = orphans
            .iter()
            .filter(|p| p.state != 'Z' && p.name == "sleep")
            .count();
        max_alive = max_alive.max(alive);
        if zombies == 0 && alive == 0 && max_alive > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 10 s: {zombies} zombies and {alive} live orphans under pgboot (max alive {max_alive})\n{}",
            r.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        r.wait_timeout(Duration::ZERO).is_none(),
        "pgboot ended early\n{}",
        r.output()
    );
    fs::write(dir.path().join("stop"), "").unwrap();
    assert_eq!(r.exit_code(QUICK), 0, "{}", r.output());
}

// -------------------------------------------------------- pass-through

const ECHO_ALL: &str = r#"
import os, sys
out = sys.stdout.buffer
for a in sys.argv[1:]:
    out.write(b"arg:" + os.fsencode(a).hex().encode() + b"\n")
for k, v in sorted(os.environb.items()):
    out.write(b"env:" + (k + b"=" + v).hex().encode() + b"\n")
out.write(b"cwd:" + os.fsencode(os.getcwd()).hex().encode() + b"\n")
out.write(b"stdin:" + sys.stdin.buffer.read().hex().encode() + b"\n")
out.write("raw:h\u00e9llo \u2603\t\u00fc\x1b[0m end\n".encode())
out.flush()
sys.stderr.buffer.write("err:caf\u00e9 \u2603\n".encode())
sys.stderr.flush()
sys.exit(3)
"#;

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn stdio_argv_env_and_cwd_pass_through(pid1: bool) {
    let dir = TempDir::new("sup-passthru");
    let cwd = fs::canonicalize(dir.path()).unwrap();
    let args = [
        "plain",
        "with space",
        "",
        "  lead and trail  ",
        "ünïcödé ☃ 😀 中文",
        "--flag=1",
        "-c",
        "'single' \"double\" $HOME * \\ `x`",
        "",
    ];
    let env = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("PGB_WEIRD", "a b=c\nline2 ü \t$HOME"),
        ("PGB_EMPTY", ""),
    ];
    let stdin: &[u8] = b"line one\n\x00\x01\xff\xfe binary\r\nlast line, no newline";

    let mut pgboot_args = vec!["supervise", "--", "/usr/bin/python3", "-c", ECHO_ALL];
    pgboot_args.extend(args);
    let mut cmd = if pid1 {
        pgboot_pid1(&pgboot_args)
    } else {
        pgboot(&pgboot_args)
    };
    cmd.env_clear()
        .envs(env)
        .current_dir(&cwd)
        .stdin(Stdio::piped());
    let mut r = Running::start(cmd);
    {
        let mut pipe = r.child.stdin.take().unwrap();
        pipe.write_all(stdin).unwrap();
    }
    assert_eq!(r.exit_code(QUICK), 3, "{}", r.output());

    let mut want = String::new();
    for a in args {
        want += &format!("arg:{}\n", hex(a.as_bytes()));
    }
    let mut env_sorted: Vec<_> = env
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    env_sorted.sort_unstable();
    for (k, v) in env_sorted {
        want += &format!("env:{}\n", hex(&[k, b"=", v].concat()));
    }
    want += &format!("cwd:{}\n", hex(cwd.to_str().unwrap().as_bytes()));
    want += &format!("stdin:{}\n", hex(stdin));
    want += "raw:héllo ☃\tü\x1b[0m end\n";
    assert_eq!(
        r.stdout(),
        want,
        "pid1={pid1}: stdout differs\n{}",
        r.output()
    );
    assert!(
        r.stderr().starts_with("err:café ☃\n"),
        "pid1={pid1}: the child's stderr is not first and whole\n{}",
        r.output()
    );
}

#[test]
fn stdio_argv_env_and_cwd_pass_through_untouched_as_pid1() {
    stdio_argv_env_and_cwd_pass_through(true);
}

#[test]
fn stdio_argv_env_and_cwd_pass_through_untouched_as_a_child() {
    stdio_argv_env_and_cwd_pass_through(false);
}

#[test]
fn non_utf8_arguments_pass_through_untouched() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = pgboot(&["supervise", "--", "printf", "[%s]"]);
    cmd.arg(OsStr::from_bytes(b"caf\xe9 \xff"));
    let mut r = Running::start(cmd);
    assert_eq!(r.exit_code(QUICK), 0, "{}", r.output());
    // Running's capture is lossy: the two invalid bytes read back as U+FFFD.
    assert_eq!(r.stdout(), "[caf\u{fffd} \u{fffd}]", "{}", r.output());
}

// ------------------------------------------------------ spawn failures

#[test]
fn a_missing_command_exits_127_naming_it() {
    for (pid1, name) in [
        (false, "/nonexistent/pgboot-no-such-cmd"),
        (false, "pgboot-no-such-cmd-in-path"),
        (true, "pgboot-no-such-cmd-in-path"),
    ] {
        let args = ["supervise", "--", name, "arg"];
        let cmd = if pid1 {
            pgboot_pid1(&args)
        } else {
            pgboot(&args)
        };
        let (code, out, err) = run(cmd, QUICK);
        assert_eq!(code, 127, "{name}\n{out}\n{err}");
        assert!(
            err.contains(name),
            "the message does not name {name}:\n{err}"
        );
    }
}

#[test]
fn a_non_executable_command_exits_126_naming_it() {
    let dir = TempDir::new("sup-noexec");
    let script = dir.write("not-executable.sh", "#!/bin/sh\necho should not run\n");
    for path in [script, dir.path().to_path_buf()] {
        let name = path.to_str().unwrap();
        let (code, out, err) = run(pgboot(&["supervise", "--", name]), QUICK);
        assert_eq!(code, 126, "{name}\n{out}\n{err}");
        assert!(
            err.contains(name),
            "the message does not name {name}:\n{err}"
        );
        assert!(!out.contains("should not run"), "{out}");
    }
}

// ---------------------------------------------------------- --expand-env

#[test]
fn expand_env_expands_variables_defaults_and_double_dollar() {
    let mut cmd = pgboot(&[
        "supervise",
        "--expand-env",
        "--",
        "printf",
        "[%s]\\n",
        "$PGB_A",
        "${PGB_A}",
        "${PGB_UNSET_Q:-dflt}",
        "${PGB_EMPTY:-was empty}",
        "$$PGB_A",
        "pre${PGB_A}post",
        "no dollar",
    ]);
    cmd.env("PGB_A", "va l")
        .env("PGB_EMPTY", "")
        .env_remove("PGB_UNSET_Q");
    let (code, out, err) = run(cmd, QUICK);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out,
        "[va l]\n[va l]\n[dflt]\n[was empty]\n[$PGB_A]\n[preva lpost]\n[no dollar]\n"
    );
}

#[test]
fn expand_env_with_an_unset_variable_is_a_usage_error_naming_it() {
    for arg in ["$PGB_UNSET_Q", "x${PGB_UNSET_Q}y"] {
        let mut cmd = pgboot(&["supervise", "--expand-env", "--", "echo", arg]);
        cmd.env_remove("PGB_UNSET_Q");
        let (code, out, err) = run(cmd, QUICK);
        assert_eq!(code, 64, "{arg}\n{out}\n{err}");
        assert!(err.contains("PGB_UNSET_Q"), "{err}");
        assert!(out.is_empty(), "echo ran: {out}");
    }
}

#[test]
fn without_expand_env_dollar_arguments_pass_literally() {
    let mut cmd = pgboot(&[
        "supervise",
        "--",
        "printf",
        "[%s]\\n",
        "$PGB_A",
        "${PGB_A}",
        "$$",
    ]);
    cmd.env("PGB_A", "expanded");
    let (code, out, err) = run(cmd, QUICK);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out, "[$PGB_A]\n[${PGB_A}]\n[$$]\n");
}

// ------------------------------------------------------------ bad input

fn usage_error(mut cmd: Command, must_contain: &[&str]) {
    cmd.env_remove("PGB_SHOULD_NOT_RUN");
    let (code, out, err) = run(cmd, QUICK);
    assert_eq!(code, 64, "{out}\n{err}");
    for s in must_contain {
        assert!(err.contains(s), "the message lacks {s:?}:\n{err}");
    }
    assert!(!out.contains("ran"), "COMMAND ran: {out}");
}

#[test]
fn a_bad_grace_period_flag_is_a_usage_error_naming_the_flag() {
    usage_error(
        pgboot(&["supervise", "--grace-period", "soon", "--", "echo", "ran"]),
        &["--grace-period", "soon"],
    );
}

#[test]
fn a_bad_grace_period_environment_value_names_the_variable() {
    let mut cmd = pgboot(&["supervise", "--", "echo", "ran"]);
    cmd.env("PGBOOT_GRACE_PERIOD", "10 parsecs");
    usage_error(cmd, &["PGBOOT_GRACE_PERIOD", "10 parsecs"]);
}

#[test]
fn an_unknown_signal_in_signal_map_is_a_usage_error() {
    usage_error(
        pgboot(&[
            "supervise",
            "--signal-map",
            "TERM:BOGUS",
            "--",
            "echo",
            "ran",
        ]),
        &["--signal-map", "BOGUS"],
    );
}

#[test]
fn an_empty_command_is_a_usage_error() {
    usage_error(pgboot(&["supervise"]), &["COMMAND"]);
    usage_error(pgboot(&["supervise", "--"]), &["COMMAND"]);
}

#[test]
fn boot_without_a_database_is_a_usage_error_pointing_to_supervise() {
    usage_error(pgboot(&["--", "echo", "ran"]), &["pgboot supervise"]);
}

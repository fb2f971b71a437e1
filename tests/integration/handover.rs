//! The handover to the lean supervisor (issue 12): after a boot, pgboot
//! re-executes itself as a supervise-only image while the server already
//! runs. No signal sent throughout that handover is lost, no orphan is left
//! a zombie, the server's status passes through, and the log lines after the
//! handover keep the chosen format.
//!
//! The server is a `sh` script that counts the SIGUSR1s it gets and makes
//! orphans (double forks) in a loop from its first line; the test signals it
//! from the moment it exists, through the handover, one signal at a time
//! (each waits for the count to move, so none coalesces with the next).
//! Postgres 17, a database of its own; pgboot as PID 1 and as a plain child.
//! Every wait is bounded; every process is stopped by pid or process group.

use std::fs;
use std::time::Duration;

use crate::supervise::{KillGroup, read, wait_until};
use crate::support::pg::{PgVersion, shared};
use crate::support::pgboot::{Running, TempDir, pgboot, pgboot_pid1, send};

/// SIGUSR1s sent, one after another, from the server's first line on.
const SIGNALS: u32 = 40;

/// The server: writes its pid, counts SIGUSR1 in `usr1`, exits 7 on
/// SIGTERM, and makes an orphan every ~10 ms until `calm` exists.
const SERVER: &str = r#"cd "$1"
n=0
trap 'n=$((n+1)); echo $n > usr1' USR1
trap 'exit 7' TERM
echo $$ > server-pid
while :; do
  if [ ! -e calm ]; then ( sh -c 'exit 0' & ); fi
  sleep 0.01
done"#;

/// Zombies whose parent is `parent`.
fn zombies_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace())
            .into_iter()
            .flatten();
        if rest.next() == Some("Z") && rest.next().and_then(|p| p.parse().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn signals_and_orphans_survive_the_handover(pid1: bool) {
    let db = shared(PgVersion::V17).create_db();
    let dir = TempDir::new("handover");
    let d = dir.path().to_str().unwrap();
    let args = [
        "--database-url",
        &db.url,
        "--log-format",
        "json",
        // The lean image's debug lines, to see it give back its startup pages.
        "--log-level",
        "info,pgboot::lean=debug",
        "--",
        "sh",
        "-c",
        SERVER,
        "sh",
        d,
    ];
    let mut r = Running::start(if pid1 {
        pgboot_pid1(&args)
    } else {
        pgboot(&args)
    });
    let pgboot_pid = if pid1 { r.ns_pid1() } else { r.pid() };
    let (server_pid, usr1) = (dir.path().join("server-pid"), dir.path().join("usr1"));
    // As PID 1, the namespace's end takes the server with it.
    let _cleanup = (!pid1).then(|| KillGroup(server_pid.clone()));
    wait_until(&r, Duration::from_secs(30), "the server to start", || {
        read(&server_pid).ends_with('\n')
    });
    for k in 1..=SIGNALS {
        send(pgboot_pid, libc::SIGUSR1);
        let want = format!("{k}\n");
        wait_until(
            &r,
            Duration::from_secs(5),
            &format!("the server to count SIGUSR1 number {k}"),
            || read(&usr1) == want,
        );
    }
    let environ = fs::read(format!("/proc/{pgboot_pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(b"PGBOOT_SUPERVISE_HANDOVER=")),
        "pgboot did not hand the server over to the lean supervisor\n{}",
        r.output()
    );
    r.wait_for_output(
        Duration::from_secs(5),
        "the lean supervisor to give back its startup pages",
        |out| out.contains("gave back the startup pages"),
    );
    fs::write(dir.path().join("calm"), "").unwrap();
    wait_until(
        &r,
        Duration::from_secs(5),
        "every orphan to be reaped",
        || zombies_of(pgboot_pid).is_empty(),
    );
    send(pgboot_pid, libc::SIGTERM);
    assert_eq!(r.exit_code(Duration::from_secs(10)), 7, "{}", r.output());
    // The lean supervisor's lines are pgboot's JSON: the server's exit,
    // then the exit line.
    let err = r.stderr();
    let tail: Vec<&str> = err.lines().rev().take(2).collect();
    let (exited, last) = (tail[1], tail[0]);
    for line in [exited, last] {
        assert!(
            line.starts_with("{\"timestamp\":\"") && line.contains("\"level\":\"INFO\""),
            "not pgboot's JSON: {line}\n{}",
            r.output()
        );
    }
    assert!(
        exited.contains("\"message\":\"server exited\"") && exited.contains("\"status\":7"),
        "{exited}\n{}",
        r.output()
    );
    assert!(
        last.contains("\"message\":\"pgboot exits\"") && last.contains("\"exit_code\":7"),
        "{last}\n{}",
        r.output()
    );
}

#[test]
fn signals_and_orphans_survive_the_handover_as_pid1() {
    signals_and_orphans_survive_the_handover(true);
}

#[test]
fn signals_and_orphans_survive_the_handover_as_a_child() {
    signals_and_orphans_survive_the_handover(false);
}

#[test]
fn at_the_default_level_the_lean_supervisor_logs_no_debug_line() {
    // The full filter is wide open (its fmt layer passes everything to the
    // target filter): the lean image must get the level of pgboot's own
    // lines, info, not the most verbose level anything could log at.
    let db = shared(PgVersion::V17).create_db();
    let mut r = Running::start(pgboot(&[
        "--database-url",
        &db.url,
        "--",
        "sh",
        "-c",
        "sleep 0.3",
    ]));
    assert_eq!(r.exit_code(Duration::from_secs(30)), 0, "{}", r.output());
    let err = r.stderr();
    assert!(err.contains("pgboot exits"), "{err}");
    assert!(
        !err.contains("DEBUG"),
        "a debug line at the default level:\n{err}"
    );
}

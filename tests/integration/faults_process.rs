//! Faults on pgboot's side of the lock (issue 7): a command run under the
//! lock dies with pgboot (`kill -9` of pgboot, not PID 1), so a second
//! replica that takes the lock migrates alone and the migration lands
//! exactly once; when pgboot stops a migration command itself (SIGTERM,
//! `--migrate-timeout`), the next holder of the lock never sees the stopped
//! command's backend; a second SIGTERM ends `pgboot run`'s command at once.
//!
//! The migration command is psql itself (the direct child, as Alembic's
//! Python is), running a script that takes the slow path only when the
//! migration is not applied yet, like Alembic does. psql and pgboot reach
//! the test database through libpq's variables. Postgres 17; every wait is
//! bounded; every process is stopped by pid or process group.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::boot::eventually;
use crate::support::pg::{PgVersion, TestDb, pid_alive, psql_path, shared};
use crate::support::pgboot::{Running, TempDir, pgboot, send};

/// The bound for a pgboot run that should finish on its own.
const BOUND: Duration = Duration::from_mins(1);
/// What the server prints; its absence means pgboot never started it.
const STARTED: &str = "SERVER-STARTED";

/// The migration: skipped when `widgets` exists (already at head); else it
/// records its start and its backend, works for `:sleep` seconds outside any
/// transaction (as a non-transactional migration does), then applies.
const MIGRATION: &str = r"
SELECT to_regclass('public.widgets') IS NOT NULL AS done \gset
\if :done
\echo MIGRATION-ALREADY-AT-HEAD
\quit
\endif
INSERT INTO migration_starts (backend) VALUES (pg_backend_pid());
SELECT pg_sleep(:sleep);
CREATE TABLE widgets (id int);
INSERT INTO migration_applied DEFAULT VALUES;
";

/// A fresh database with the migration's bookkeeping tables, and the
/// migration script in a temp dir.
fn setup() -> (TestDb, TempDir) {
    let db = shared(PgVersion::V17).create_db();
    db.psql(
        "CREATE TABLE migration_starts (backend int); \
         CREATE TABLE migration_applied (at timestamptz DEFAULT clock_timestamp());",
    );
    let dir = TempDir::new("faults-process");
    dir.write("migrate.sql", MIGRATION);
    (db, dir)
}

/// libpq's variables for `db`: pgboot and psql both connect with them.
fn with_libpq_env(cmd: &mut Command, db: &TestDb) {
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", db.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", db.password())
        .env("PGDATABASE", &db.name)
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null());
}

/// `pgboot --migrate-cmd "psql … -f migrate.sql" EXTRA… -- sh -c 'echo SERVER-STARTED'`.
fn replica(db: &TestDb, dir: &Path, sleep_s: u32, extra: &[&str]) -> Command {
    let migrate_cmd = format!(
        "{} -X -q -o /dev/null -v ON_ERROR_STOP=1 -v sleep={sleep_s} -f {}",
        psql_path(PgVersion::V17).display(),
        dir.join("migrate.sql").display()
    );
    let mut args = vec!["--migrate-cmd", &migrate_cmd];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", "echo SERVER-STARTED"]);
    let mut cmd = pgboot(&args);
    with_libpq_env(&mut cmd, db);
    cmd
}

/// The backend pid of the running migration, once it has started.
fn migration_backend(db: &TestDb, r: &Running) -> i32 {
    eventually(Duration::from_secs(20), "the migration to start", || {
        assert!(
            pid_alive(r.child.id()),
            "pgboot ended before the migration started\n{}",
            r.output()
        );
        db.psql("SELECT backend FROM migration_starts ORDER BY 1 LIMIT 1")
            .parse()
            .ok()
    })
}

/// pgboot's children (pgboot not PID 1: the test's own namespace).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILLs a process group when dropped: pgboot puts its command in a
/// group of its own, which `Running` (it kills pgboot's group) does not
/// reach when a test fails.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if self.0 > 1 {
            send(-self.0, libc::SIGKILL);
        }
    }
}

fn backend_alive(db: &TestDb, backend: i32) -> bool {
    db.psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"
    )) != "0"
}

#[test]
fn kill_9_of_pgboot_kills_its_migration_command_and_the_waiting_replica_migrates_alone() {
    let (db, dir) = setup();
    // The second replica's migration is as slow as the first's: were the first
    // command to live on, it would apply first and the second would fail.
    let mut first = Running::start(replica(&db, dir.path(), 3, &[]));
    let first_backend = migration_backend(&db, &first);
    let command: Vec<i32> = children(first.pid());
    assert_eq!(command.len(), 1, "pgboot's children: {command:?}");
    let _cleanup = KillGroup(command[0]);
    let command = u32::try_from(command[0]).unwrap();
    let mut second = Running::start(replica(&db, dir.path(), 3, &[]));
    second.wait_for_output(
        Duration::from_secs(20),
        "the second replica to wait for the lock",
        |o| o.contains("waiting for the migration lock"),
    );

    send(first.pid(), libc::SIGKILL);
    let killed = Instant::now();
    eventually(
        Duration::from_secs(1),
        "the killed pgboot's migration command to die with it",
        || (!pid_alive(command)).then_some(()),
    );
    let command_gone = killed.elapsed();
    // Only now: `exit_code` waits for the output pipes, which a surviving
    // command would hold open.
    assert_eq!(first.exit_code(Duration::from_secs(5)), 137);
    eventually(
        Duration::from_secs(3),
        "the killed command's backend to end",
        || (!backend_alive(&db, first_backend)).then_some(()),
    );

    assert_eq!(second.exit_code(BOUND), 0, "{}", second.output());
    eprintln!(
        "kill -9: the migration command was gone {} ms after the kill; the waiting replica had migrated and served {} ms after it",
        command_gone.as_millis(),
        killed.elapsed().as_millis()
    );
    let out = second.output();
    assert!(out.contains(STARTED), "{out}");
    assert!(
        !out.contains("ERROR:") && !out.contains(" ERROR ") && !out.contains("already exists"),
        "{out}"
    );
    assert!(!out.contains("MIGRATION-ALREADY-AT-HEAD"), "{out}");
    assert_eq!(
        db.psql("SELECT to_regclass('public.widgets') IS NOT NULL"),
        "t"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM migration_applied"),
        "1",
        "the migration's effect must land exactly once"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM migration_starts"),
        "2",
        "the killed replica's start and the second replica's"
    );
    // Long after the killed command would have finished its work, still once.
    thread::sleep(Duration::from_secs(3).saturating_sub(command_gone));
    assert_eq!(db.psql("SELECT count(*) FROM migration_applied"), "1");
}

/// A session polling `pg_try_advisory_lock` on pgboot's key, as the next
/// replica does (every 10 ms); once it holds the lock it prints whether the
/// migration command's backend is still there.
fn next_holder(db: &TestDb) -> Running {
    let sql = "\
DO $$ BEGIN
  WHILE NOT pg_try_advisory_lock(hashtextextended('pgboot', 0)) LOOP
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT 'OLD-BACKENDS=' || count(*) FROM pg_stat_activity a JOIN migration_starts m ON a.pid = m.backend;
";
    let mut cmd = Command::new(psql_path(PgVersion::V17));
    cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    with_libpq_env(&mut cmd, db);
    cmd.env("PGAPPNAME", "next-holder");
    Running::start(cmd)
}

/// pgboot stops its migration command (`stop`: a signal to pgboot, or the
/// timeout), and the next holder of the lock must find the command's backend
/// gone. Returns pgboot's exit code and output.
fn stopped_command_releases_the_lock_after_its_backend(
    extra: &[&str],
    stop: impl FnOnce(&Running),
) -> (i32, String) {
    let (db, dir) = setup();
    let mut r = Running::start(replica(&db, dir.path(), 60, extra));
    let backend = migration_backend(&db, &r);
    let mut next = next_holder(&db);
    // The next holder polls; it must not get the lock while pgboot holds it.
    assert!(
        next.wait_timeout(Duration::from_millis(300)).is_none(),
        "{}",
        next.output()
    );
    stop(&r);
    let code = r.exit_code(Duration::from_secs(20));
    assert_eq!(
        next.exit_code(Duration::from_secs(20)),
        0,
        "{}",
        next.output()
    );
    assert_eq!(
        next.stdout().trim(),
        "OLD-BACKENDS=0",
        "the lock was released while the stopped command's backend {backend} was still there\n{}",
        r.output()
    );
    assert!(!r.stdout().contains(STARTED), "{}", r.output());
    assert_eq!(db.psql("SELECT count(*) FROM migration_applied"), "0");
    (code, r.output())
}

#[test]
fn sigterm_to_pgboot_releases_the_lock_only_after_the_migration_command_session_is_gone() {
    let (code, out) =
        stopped_command_releases_the_lock_after_its_backend(&[], |r| r.signal(libc::SIGTERM));
    assert_eq!(code, 143, "{out}");
}

#[test]
fn migrate_timeout_releases_the_lock_only_after_the_migration_command_session_is_gone() {
    let (code, out) =
        stopped_command_releases_the_lock_after_its_backend(&["--migrate-timeout", "1s"], |_| {});
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("--migrate-timeout"), "{out}");
}

#[test]
fn a_second_sigterm_kills_run_command_that_ignores_the_first() {
    let db = shared(PgVersion::V17).create_db();
    let dir = TempDir::new("faults-run-second");
    let got = dir.path().join("got");
    let script = format!(
        "trap 'echo TERM >> {got}' TERM; echo RUNNING; while :; do sleep 0.05; done",
        got = got.display()
    );
    let mut cmd = pgboot(&["run", "--", "sh", "-c", &script]);
    with_libpq_env(&mut cmd, &db);
    let mut r = Running::start(cmd);
    r.wait_for_output(Duration::from_secs(20), "the command to run", |o| {
        o.contains("RUNNING")
    });
    let command = children(r.pid());
    assert_eq!(command.len(), 1, "pgboot's children: {command:?}");
    let _cleanup = KillGroup(command[0]);
    r.signal(libc::SIGTERM);
    eventually(
        Duration::from_secs(10),
        "the command to record SIGTERM",
        || (std::fs::read_to_string(&got).unwrap_or_default() == "TERM\n").then_some(()),
    );
    assert!(
        r.wait_timeout(Duration::from_millis(300)).is_none(),
        "{}",
        r.output()
    );
    let sent = Instant::now();
    r.signal(libc::SIGTERM);
    let code = r.exit_code(Duration::from_secs(10));
    let took = sent.elapsed();
    assert_eq!(code, 137, "{}", r.output());
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}\n{}",
        r.output()
    );
    assert!(!pid_alive(u32::try_from(command[0]).unwrap()));
}

/// Starts `pgboot ARGS` in its own process group with stderr a pipe whose
/// reader is already gone (a log collector that died, `pgboot … 2>&1 | head`).
fn start_with_stderr_unread(args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    pgboot(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .expect("spawning pgboot")
}

/// The exit code of `child` within `bound`; its group is killed if not.
fn code_within(child: &mut std::process::Child, bound: Duration) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let until = Instant::now() + bound;
    while Instant::now() < until {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let pid = i32::try_from(child.id()).expect("pid");
    send(-pid, libc::SIGKILL);
    let _ = child.wait();
    None
}

#[test]
fn a_stderr_nobody_reads_neither_spins_pgboot_nor_reaches_the_server() {
    // Every log line's write fails with EPIPE and raises SIGPIPE in pgboot.
    // Waiting: the wait still ends at its timeout (it used to log each
    // SIGPIPE, whose write raised the next, at 100% CPU, forever).
    let mut wait = start_with_stderr_unread(&[
        "wait",
        "--database-url",
        "postgres://pgboot@127.0.0.1:1/postgres",
        "--wait-timeout",
        "2s",
        "--log-level",
        "debug",
    ]);
    assert_eq!(
        code_within(&mut wait, Duration::from_secs(30)),
        Some(69),
        "pgboot wait did not end at its timeout with stderr unread"
    );

    // Supervising: pgboot's own SIGPIPE is not forwarded to the server; a
    // signal sent from outside still is.
    let dir = TempDir::new("epipe");
    let seen = dir.path().join("seen");
    let seen_s = seen.to_str().expect("utf-8 path");
    let mut sup = start_with_stderr_unread(&[
        "supervise",
        "--log-level",
        "debug",
        "--",
        "sh",
        "-c",
        "trap 'echo PIPE >> \"$0\"' PIPE; trap 'echo USR1 >> \"$0\"' USR1; echo ready >> \"$0\"; \
         i=0; while [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done",
        seen_s,
    ]);
    let read = || std::fs::read_to_string(&seen).unwrap_or_default();
    eventually(Duration::from_secs(10), "the server to start", || {
        read().contains("ready").then_some(())
    });
    let pid = i32::try_from(sup.id()).expect("pid");
    for _ in 0..3 {
        send(pid, libc::SIGUSR1);
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        code_within(&mut sup, Duration::from_secs(30)),
        Some(0),
        "{}",
        read()
    );
    let lines = read();
    assert!(lines.contains("USR1"), "SIGUSR1 was not forwarded: {lines}");
    assert!(
        !lines.contains("PIPE"),
        "pgboot's own SIGPIPE reached the server: {lines}"
    );
}

//! Booting against a real Postgres (`pgboot -- COMMAND`, `migrate`, `status`,
//! `run`): pgboot waits for a late Postgres and gives up with 69, refuses what
//! no wait can fix with 78 and never prints a password, lets exactly one of
//! many replicas migrate under the advisory lock while the others wait, skips
//! the lock when nothing is pending, times out with 75, fails bad migrations
//! with 65 leaving nothing applied and the lock free, ends at once with 128+N
//! on a signal before the server starts, fences `run` when its lock session
//! dies, and never takes the same key in another database for its own lock.
//!
//! Every test gets a database of its own (`create_db`) in the shared cluster
//! of its version, or a cluster of its own when Postgres must be down or
//! late. The lock and migration tests run on 17 and 15. Advisory locks are
//! scoped per database (checked by `advisory_locks_are_scoped_per_database`),
//! so the default `--lock-key` is safe across parallel tests, and every
//! `pg_locks` query here filters on this test's database. Migrations are
//! sqlx-format files in a temp dir; the "server" is a small `sh -c` script.
//! Every wait is bounded; every process is stopped by pid.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::on_17_and_15;
use crate::support::pg::{Cluster, PgVersion, TestDb, pid_alive, psql_path, shared};
use crate::support::pgboot::{Running, TempDir, pgboot, pgboot_pid1};

/// A server that says it started and exits 0.
pub(crate) const SERVER: &[&str] = &["sh", "-c", "echo SERVER-STARTED; exit 0"];
/// What the server prints; its absence means pgboot never started it.
pub(crate) const STARTED: &str = "SERVER-STARTED";
/// The bound for a pgboot run that should finish on its own.
pub(crate) const BOUND: Duration = Duration::from_mins(1);
/// `pg_locks` rows of this test's database only (`pg_locks` is cluster-wide).
const THIS_DB: &str =
    "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";

// ------------------------------------------------------------------ helpers

/// A migrations directory holding `files` (name, SQL).
pub(crate) fn migrations(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new("boot-migrations");
    for (name, sql) in files {
        dir.write(name, sql);
    }
    dir
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp dir")
}

/// `pgboot ARGS...` with stdin from /dev/null.
pub(crate) fn pgb(args: &[&str]) -> Command {
    let mut c = pgboot(args);
    c.stdin(Stdio::null());
    c
}

/// `pgboot --database-url URL --migrations DIR EXTRA... -- SERVER...`.
pub(crate) fn boot(url: &str, dir: &Path, extra: &[&str], server: &[&str]) -> Command {
    let mut args = vec!["--database-url", url, "--migrations", path_str(dir)];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(server);
    pgb(&args)
}

/// `pgboot SUB --database-url URL --migrations DIR EXTRA...`.
fn sub(name: &str, url: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut args = vec![name, "--database-url", url, "--migrations", path_str(dir)];
    args.extend_from_slice(extra);
    pgb(&args)
}

/// The rows of `status`'s table whose STATE is `pending`.
fn pending_rows(out: &str) -> usize {
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("pending"))
        .count()
}

/// Runs `cmd` to its end (bounded): exit code, elapsed time, and the run.
fn finish(cmd: Command, timeout: Duration) -> (i32, Duration, Running) {
    let t = Instant::now();
    let mut r = Running::start(cmd);
    let code = r.exit_code(timeout);
    (code, t.elapsed(), r)
}

/// Polls `f` every 20 ms until it returns `Some`; panics after `timeout`.
pub(crate) fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The server's `hashtextextended(name, 0)`: the key a named `--lock-key` means.
pub(crate) fn key_of(db: &TestDb, name: &str) -> i64 {
    db.psql(&format!("SELECT hashtextextended('{name}', 0)"))
        .parse()
        .unwrap()
}

/// How `pg_locks` shows a 64-bit advisory key: (classid, objid) = (high, low) 32 bits.
fn split_key(key: i64) -> (u32, u32) {
    let k = u64::from_ne_bytes(key.to_ne_bytes());
    (
        u32::try_from(k >> 32).unwrap(),
        u32::try_from(k & 0xffff_ffff).unwrap(),
    )
}

/// Advisory locks in this database: `pid|classid|objid|granted|application_name`.
pub(crate) fn advisory_locks(db: &TestDb) -> Vec<String> {
    db.psql(&format!(
        "SELECT l.pid || '|' || l.classid || '|' || l.objid || '|' || l.granted || '|' \
                || coalesce(a.application_name, '') \
         FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND {THIS_DB} ORDER BY 1"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Backend pids holding (granted) the advisory lock on `key` in this database.
pub(crate) fn holders_of(db: &TestDb, key: i64) -> Vec<i32> {
    let (classid, objid) = split_key(key);
    db.psql(&format!(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
           AND l.objsubid = 1 AND l.classid = {classid}::oid AND l.objid = {objid}::oid AND {THIS_DB}"
    ))
    .lines()
    .map(|l| l.parse().unwrap())
    .collect()
}

/// Client sessions in this database other than the querying one and `except`.
fn other_sessions(db: &TestDb, except: &[i32]) -> Vec<String> {
    let except = if except.is_empty() {
        "0".to_string()
    } else {
        except
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    db.psql(&format!(
        "SELECT pid || ' ' || coalesce(application_name, '') FROM pg_stat_activity \
         WHERE datname = current_database() AND backend_type = 'client backend' \
           AND pid <> pg_backend_pid() AND pid NOT IN ({except})"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Waits (bounded) until no advisory lock and no other session is left in `db`.
pub(crate) fn assert_nothing_left(db: &TestDb, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let locks = advisory_locks(db);
        let sessions = other_sessions(db, &[]);
        if locks.is_empty() && sessions.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: after 5 s, advisory locks {locks:?} and sessions {sessions:?} are still there"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The backend pid of pgboot's lock session (`application_name` `pgboot@HOST`) in `db`.
pub(crate) fn pgboot_backend(db: &TestDb, r: &Running) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = db.psql(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name LIKE 'pgboot@%' AND datname = current_database()",
        );
        if let Some(pid) = out.lines().next() {
            return pid.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no pgboot@ session in {} after 20 s\n{}",
            db.name,
            r.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a statement containing `needle` is active in `db` (not this query).
pub(crate) fn wait_active_query(db: &TestDb, r: &Running, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = db.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%{needle}%'"
        ));
        if n != "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no active `{needle}` in {} after 20 s\n{}",
            db.name,
            r.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn exists(db: &TestDb, table: &str) -> bool {
    db.psql(&format!("SELECT to_regclass('{table}') IS NOT NULL")) == "t"
}

/// `version:success` of every row of `_sqlx_migrations`, or "" without the table.
pub(crate) fn recorded(db: &TestDb) -> String {
    if !exists(db, "_sqlx_migrations") {
        return String::new();
    }
    db.psql(
        "SELECT coalesce(string_agg(version || ':' || success, ',' ORDER BY version), '') \
         FROM _sqlx_migrations",
    )
}

/// The integer value of `key=` on the first log line containing `message`.
fn log_field(log: &str, message: &str, key: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(message))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A psql session the test keeps open (stdin piped), e.g. to hold the lock
/// as another client would. Its `application_name` is psql's default, `psql`.
/// Killed by pid on drop.
pub(crate) struct Psql {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Psql {
    fn open(v: PgVersion, db: &TestDb) -> Psql {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(psql_path(v));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                c.env_remove(k);
            }
        }
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(db.port().to_string())
            .args(["-U", "postgres", "-d", &db.name])
            .env("PGPASSWORD", db.password())
            .env("PGPASSFILE", "/dev/null")
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = c.spawn().expect("spawn psql");
        let stdin = child.stdin.take();
        Psql { child, stdin }
    }

    fn send(&mut self, sql: &str) {
        let w = self.stdin.as_mut().expect("psql's stdin is open");
        w.write_all(sql.as_bytes()).expect("write to psql");
        w.flush().expect("flush psql's stdin");
    }

    /// Opens a session holding `pg_advisory_lock(key)`; returns once
    /// `pg_locks` shows it granted, with the holder's backend pid.
    pub(crate) fn hold_lock(v: PgVersion, db: &TestDb, key: i64) -> (Psql, i32) {
        let mut p = Psql::open(v, db);
        p.send(&format!("SELECT pg_advisory_lock({key});\n"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(&pid) = holders_of(db, key).first() {
                return (p, pid);
            }
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "psql holding the lock exited early"
            );
            assert!(
                Instant::now() < deadline,
                "psql did not take the lock within 30 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Releases every advisory lock of the session (the session stays open).
    pub(crate) fn unlock_all(&mut self) {
        self.send("SELECT pg_advisory_unlock_all();\n");
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A URL whose Postgres is not running (a cluster of its own, never started).
fn down_cluster() -> (Cluster, String) {
    let cluster = Cluster::new(PgVersion::V17);
    let url = cluster.url("postgres");
    (cluster, url)
}

// ------------------------------------------------------- waiting (17 only)

#[test]
fn boot_waits_for_a_postgres_started_late_then_serves() {
    let cluster = Cluster::new(PgVersion::V17);
    let url = cluster.url("postgres");
    let dir = migrations(&[("1_create.sql", "CREATE TABLE late (id int);")]);
    let mut r = Running::start(boot(&url, dir.path(), &["--wait-timeout", "60s"], SERVER));
    thread::sleep(Duration::from_secs(3));
    assert!(
        r.wait_timeout(Duration::ZERO).is_none(),
        "pgboot did not keep waiting for Postgres\n{}",
        r.output()
    );
    assert!(
        r.stderr().contains("waiting for Postgres"),
        "{}",
        r.output()
    );
    cluster.start();
    assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
    assert!(r.stdout().contains(STARTED), "{}", r.output());
    let waited = log_field(&r.stderr(), "starting the server", "waited_ms")
        .unwrap_or_else(|| panic!("no summary line\n{}", r.output()));
    assert!(
        waited >= 2500,
        "the summary says it waited {waited} ms\n{}",
        r.output()
    );
    assert_eq!(
        log_field(&r.stderr(), "starting the server", "migrations"),
        Some(1),
        "{}",
        r.output()
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT to_regclass('late') IS NOT NULL"),
        "t"
    );
}

#[test]
fn boot_gives_up_after_wait_timeout_with_69_naming_host_port_and_last_error() {
    let (cluster, url) = down_cluster();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (code, took, r) = finish(
        boot(&url, dir.path(), &["--wait-timeout", "3s"], SERVER),
        BOUND,
    );
    assert_eq!(code, 69, "{}", r.output());
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_millis(4500),
        "gave up after {took:?}, not ~3 s\n{}",
        r.output()
    );
    let err = r.stderr();
    let addr = format!("127.0.0.1:{}", cluster.port());
    assert!(err.contains(&addr), "no {addr} in the message\n{err}");
    assert!(err.contains("last error"), "no last error\n{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(!r.output().contains(cluster.password()), "{}", r.output());
    assert!(!r.stdout().contains(STARTED));
}

// ------------------------------------------ errors no wait can fix (17 only)

#[test]
fn wrong_password_exits_78_at_once_and_no_password_is_printed() {
    let db = shared(PgVersion::V17).create_db();
    let wrong = "Wr0ng-Pa55word-zq7x";
    let url = db.url_with_password(wrong);
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (code, took, r) = finish(
        boot(&url, dir.path(), &["--wait-timeout", "30s"], SERVER),
        BOUND,
    );
    assert_eq!(code, 78, "{}", r.output());
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}\n{}",
        r.output()
    );
    let out = r.output();
    assert!(out.contains("authentication"), "{out}");
    assert!(!out.contains(wrong), "the wrong password leaked\n{out}");
    assert!(
        !out.contains(db.password()),
        "the right password leaked\n{out}"
    );
    assert!(!out.contains(STARTED));
}

#[test]
fn missing_database_exits_78() {
    let cluster = shared(PgVersion::V17);
    let url = cluster.url("no_such_database_here");
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (code, took, r) = finish(
        boot(&url, dir.path(), &["--wait-timeout", "30s"], SERVER),
        BOUND,
    );
    assert_eq!(code, 78, "{}", r.output());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        r.stderr().contains("no_such_database_here"),
        "{}",
        r.output()
    );
    assert!(!r.output().contains(cluster.password()), "{}", r.output());
    assert!(!r.stdout().contains(STARTED));
}

#[test]
fn malformed_url_exits_78_or_64_with_a_clear_message_and_no_password() {
    let pw = "Malf0rmed-Secret-k2p9";
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    for url in [
        format!("postgres://u:{pw}@127.0.0.1:notaport/db"),
        format!("mysql://u:{pw}@127.0.0.1:3306/db"),
        format!("postgres://u:{pw}@127.0.0.1:99999/db"),
    ] {
        let (code, took, r) = finish(
            boot(&url, dir.path(), &["--wait-timeout", "30s"], SERVER),
            BOUND,
        );
        assert!(
            code == 78 || code == 64,
            "{url}: exit {code}\n{}",
            r.output()
        );
        assert!(took < Duration::from_secs(5), "{url}: took {took:?}");
        let out = r.output();
        assert!(out.contains("URL"), "{url}: unclear message\n{out}");
        assert!(!out.contains(pw), "{url}: the password leaked\n{out}");
        assert!(!out.contains(STARTED));
    }
}

// ------------------------------------- signals before the server (17 only)

#[test]
fn terminating_signal_while_waiting_for_postgres_ends_pgboot_at_once_with_128_plus_n() {
    let (_cluster, url) = down_cluster();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    for (sig, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
        (libc::SIGQUIT, 131),
    ] {
        let mut r = Running::start(boot(&url, dir.path(), &["--wait-timeout", "60s"], SERVER));
        r.wait_for_output(Duration::from_secs(20), "waiting for Postgres", |o| {
            o.contains("waiting for Postgres")
        });
        let t = Instant::now();
        r.signal(sig);
        assert_eq!(r.exit_code(Duration::from_secs(10)), code, "{}", r.output());
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "signal {sig}: took {took:?}");
        assert!(!r.stdout().contains(STARTED));
    }
}

#[test]
fn sigterm_while_waiting_for_postgres_as_pid1_exits_143_at_once() {
    let (_cluster, url) = down_cluster();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let d = path_str(dir.path());
    let mut cmd = pgboot_pid1(&[
        "--database-url",
        &url,
        "--migrations",
        d,
        "--wait-timeout",
        "60s",
        "--",
        "sh",
        "-c",
        "echo SERVER-STARTED",
    ]);
    cmd.stdin(Stdio::null());
    let mut r = Running::start(cmd);
    let pid1 = r.ns_pid1();
    r.wait_for_output(Duration::from_secs(20), "waiting for Postgres", |o| {
        o.contains("waiting for Postgres")
    });
    let t = Instant::now();
    crate::support::pgboot::send(pid1, libc::SIGTERM);
    assert_eq!(r.exit_code(Duration::from_secs(10)), 143, "{}", r.output());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(!r.stdout().contains(STARTED));
}

#[test]
fn non_terminating_signal_while_waiting_does_not_end_pgboot() {
    let (_cluster, url) = down_cluster();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let mut r = Running::start(boot(&url, dir.path(), &["--wait-timeout", "60s"], SERVER));
    r.wait_for_output(Duration::from_secs(20), "waiting for Postgres", |o| {
        o.contains("waiting for Postgres")
    });
    // SIGUSR1's default action would kill a process that does not handle it.
    r.signal(libc::SIGUSR1);
    thread::sleep(Duration::from_millis(500));
    assert!(
        r.wait_timeout(Duration::ZERO).is_none(),
        "SIGUSR1 ended pgboot\n{}",
        r.output()
    );
    r.signal(libc::SIGTERM);
    assert_eq!(r.exit_code(Duration::from_secs(10)), 143, "{}", r.output());
}

// ------------------------------------------------ the lock (17 and 15)

fn advisory_locks_are_scoped_per_database(v: PgVersion) {
    let a = shared(v).create_db();
    let b = shared(v).create_db();
    let key = key_of(&a, "pgboot");
    let (_holder, _) = Psql::hold_lock(v, &a, key);
    assert_eq!(
        b.psql(&format!("SELECT pg_try_advisory_lock({key})")),
        "t",
        "the same key in another database is a different lock"
    );
    assert_eq!(
        a.psql(&format!("SELECT pg_try_advisory_lock({key})")),
        "f",
        "the key is held in this database"
    );
}

on_17_and_15!(advisory_locks_are_scoped_per_database);

fn the_same_key_held_in_another_database_is_not_reported_as_ours(v: PgVersion) {
    let other = shared(v).create_db();
    let db = shared(v).create_db();
    let key = key_of(&db, "pgboot");
    // In the other database: one session holds the key, another waits on it.
    let (_holder, _) = Psql::hold_lock(v, &other, key);
    let mut waiter = Psql::open(v, &other);
    waiter.send(&format!("SELECT pg_advisory_lock({key});\n"));
    eventually(
        Duration::from_secs(20),
        "the other database's waiter",
        || {
            other
            .psql(&format!(
                "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory' AND NOT l.granted AND {THIS_DB}"
            ))
            .eq("1")
            .then_some(())
        },
    );

    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (code, _, r) = finish(sub("status", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 1, "{}", r.output());
    assert!(
        r.stdout().contains(&format!("lock pgboot ({key}): free")),
        "status reports another database's holder as this one's\n{}",
        r.output()
    );

    // `run` holds the key in this database while the other database has a
    // waiter on the same number: that is no nested lock of the command's.
    let (code, _, r) = finish(
        pgb(&["run", "--database-url", &db.url, "--", "sleep", "2.5"]),
        BOUND,
    );
    assert_eq!(code, 0, "{}", r.output());
    assert!(
        !r.stderr()
            .contains("blocked waiting for the very advisory lock"),
        "a waiter in another database was taken for a nested lock\n{}",
        r.output()
    );
}

on_17_and_15!(the_same_key_held_in_another_database_is_not_reported_as_ours);

fn eight_concurrent_boots_migrate_once_and_all_serve(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        (
            "1_create.sql",
            "CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE NOT NULL);",
        ),
        // Applied twice, this fails: the key is unique.
        ("2_seed.sql", "INSERT INTO items VALUES (1, 'seed');"),
    ]);
    let mut runs: Vec<Running> = (0..8)
        .map(|_| Running::start(boot(&db.url, dir.path(), &[], SERVER)))
        .collect();
    let mut applied = 0;
    for r in &mut runs {
        assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
        assert!(r.stdout().contains(STARTED), "{}", r.output());
        applied += r.stderr().matches("applied migration").count();
    }
    assert_eq!(
        applied, 2,
        "each migration is applied by exactly one replica"
    );
    assert_eq!(db.psql("SELECT count(*) FROM items"), "1");
    assert_eq!(recorded(&db), "1:true,2:true");
    assert_eq!(advisory_locks(&db), Vec::<String>::new());
    assert_nothing_left(&db, "after eight boots");
}

on_17_and_15!(eight_concurrent_boots_migrate_once_and_all_serve);

fn no_connection_or_lock_of_pgboot_remains_while_the_server_runs(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let mut r = Running::start(boot(
        &db.url,
        dir.path(),
        &[],
        &["sh", "-c", "echo SERVER-STARTED; exec sleep 30"],
    ));
    r.wait_for_output(BOUND, "the server", |o| o.contains(STARTED));
    assert_nothing_left(&db, "while the server runs");
    assert!(exists(&db, "t"));
    // The lean supervisor that took over is still called pgboot (`ps`,
    // `/proc/PID/comm`), not `exe` after the file it re-executed.
    eventually(
        Duration::from_secs(5),
        "the handover to the lean supervisor",
        || {
            std::fs::read(format!("/proc/{}/environ", r.pid()))
                .ok()
                .filter(|env| {
                    env.split(|&b| b == 0)
                        .any(|kv| kv.starts_with(b"PGBOOT_SUPERVISE_HANDOVER="))
                })
        },
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", r.pid())).unwrap();
    assert_eq!(comm.trim(), "pgboot", "{}", r.output());
    r.signal(libc::SIGTERM);
    assert_eq!(r.exit_code(Duration::from_secs(10)), 143, "{}", r.output());
}

on_17_and_15!(no_connection_or_lock_of_pgboot_remains_while_the_server_runs);

fn boot_at_head_starts_at_once_without_the_lock_while_it_is_held(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (code, _, r) = finish(sub("migrate", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    let (_holder, _) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let (code, took, r) = finish(boot(&db.url, dir.path(), &[], SERVER), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}\n{}",
        r.output()
    );
    assert!(r.stdout().contains(STARTED), "{}", r.output());
    assert!(r.stderr().contains("no lock taken"), "{}", r.output());
    assert!(
        !r.stderr().contains("migration lock acquired"),
        "{}",
        r.output()
    );
}

on_17_and_15!(boot_at_head_starts_at_once_without_the_lock_while_it_is_held);

fn pending_boot_waits_naming_the_holder_and_proceeds_promptly_after_release(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (mut holder, holder_pid) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let mut r = Running::start(boot(&db.url, dir.path(), &[], SERVER));
    let pid_field = format!("holder_pid={holder_pid}");
    r.wait_for_output(Duration::from_secs(20), "the holder in the log", |o| {
        o.contains("waiting for the migration lock") && o.contains(&pid_field) && o.contains("psql")
    });
    thread::sleep(Duration::from_millis(300));
    assert!(
        r.wait_timeout(Duration::ZERO).is_none(),
        "pgboot did not wait for the lock\n{}",
        r.output()
    );
    assert!(!exists(&db, "t"), "migrated without the lock");
    let t = Instant::now();
    holder.unlock_all();
    assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "proceeded {took:?} after release\n{}",
        r.output()
    );
    assert!(r.stdout().contains(STARTED), "{}", r.output());
    assert!(exists(&db, "t"));
}

on_17_and_15!(pending_boot_waits_naming_the_holder_and_proceeds_promptly_after_release);

fn lock_timeout_while_held_exits_75(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (_holder, holder_pid) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let (code, took, r) = finish(
        boot(&db.url, dir.path(), &["--lock-timeout", "2s"], SERVER),
        BOUND,
    );
    assert_eq!(code, 75, "{}", r.output());
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "gave up after {took:?}\n{}",
        r.output()
    );
    let err = r.stderr();
    assert!(err.contains("--lock-timeout"), "{err}");
    assert!(
        err.contains(&format!("pid {holder_pid}")),
        "holder not named\n{err}"
    );
    assert!(!r.stdout().contains(STARTED));
    assert!(!exists(&db, "t"));
    assert_eq!(other_sessions(&db, &[holder_pid]), Vec::<String>::new());
}

on_17_and_15!(lock_timeout_while_held_exits_75);

fn lock_key_integer_and_name_lock_the_right_key(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[(
        "1_slow.sql",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);\n",
    )]);
    let name = "my-app.migrations";
    for (arg, key) in [("12345", 12345), ("-7", -7), (name, key_of(&db, name))] {
        let mut r = Running::start(boot(&db.url, dir.path(), &["--lock-key", arg], SERVER));
        let backend = pgboot_backend(&db, &r);
        wait_active_query(&db, &r, "pg_sleep(30)");
        assert!(
            holders_of(&db, key).contains(&backend),
            "--lock-key {arg}: pgboot's backend {backend} does not hold key {key} {:?}; locks: {:?}\n{}",
            split_key(key),
            advisory_locks(&db),
            r.output()
        );
        // A name is shown with its 64-bit value.
        let shown = if arg == name {
            format!("key={name} ({key})")
        } else {
            format!("key={key}")
        };
        assert!(
            r.stderr().contains(&shown),
            "--lock-key {arg}\n{}",
            r.output()
        );
        r.signal(libc::SIGTERM);
        assert_eq!(r.exit_code(Duration::from_secs(10)), 143, "{}", r.output());
        assert_nothing_left(&db, &format!("--lock-key {arg}"));
    }
}

on_17_and_15!(lock_key_integer_and_name_lock_the_right_key);

// -------------------------------------------------- migrations (17 and 15)

fn failing_migration_exits_65_applies_nothing_of_it_and_frees_the_lock(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE base (id int);"),
        (
            "2_broken.sql",
            "CREATE TABLE half (id int PRIMARY KEY);\n\
             INSERT INTO half VALUES (1);\n\
             INSERT INTO half VALUES (1);\n",
        ),
    ]);
    let (code, _, r) = finish(boot(&db.url, dir.path(), &[], SERVER), BOUND);
    assert_eq!(code, 65, "{}", r.output());
    assert!(!r.stdout().contains(STARTED), "{}", r.output());
    let err = r.stderr();
    assert!(err.contains("2_broken.sql"), "{err}");
    assert!(err.contains("SQLSTATE 23505"), "{err}");
    assert!(
        !err.contains(" at line "),
        "a line of Postgres' source, not of the file\n{err}"
    );
    assert!(exists(&db, "base"));
    assert!(
        !exists(&db, "half"),
        "the failed migration's table is there"
    );
    assert_eq!(recorded(&db), "1:true");
    assert_nothing_left(&db, "after the failed migration");

    dir.write(
        "2_broken.sql",
        "CREATE TABLE half (id int PRIMARY KEY);\nINSERT INTO half VALUES (1);\n",
    );
    let (code, _, r) = finish(
        boot(&db.url, dir.path(), &["--lock-timeout", "3s"], SERVER),
        BOUND,
    );
    assert_eq!(code, 0, "{}", r.output());
    assert!(r.stdout().contains(STARTED), "{}", r.output());
    let waited = log_field(&r.stderr(), "migration lock acquired", "waited_ms")
        .unwrap_or_else(|| panic!("no lock line\n{}", r.output()));
    assert!(
        waited < 1000,
        "waited {waited} ms for a free lock\n{}",
        r.output()
    );
    assert_eq!(recorded(&db), "1:true,2:true");
    assert_eq!(db.psql("SELECT count(*) FROM half"), "1");
}

on_17_and_15!(failing_migration_exits_65_applies_nothing_of_it_and_frees_the_lock);

fn migration_left_failed_by_an_earlier_run_is_refused_with_65(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE t (id int);"),
        ("2_seed.sql", "INSERT INTO t VALUES (2);"),
    ]);
    let (code, _, r) = finish(sub("migrate", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    // What an older sqlx leaves after a no-transaction migration failed midway.
    db.psql("UPDATE _sqlx_migrations SET success = false WHERE version = 2");
    dir.write("3_more.sql", "INSERT INTO t VALUES (3);");
    let (code, _, r) = finish(boot(&db.url, dir.path(), &[], SERVER), BOUND);
    assert_eq!(code, 65, "{}", r.output());
    assert!(!r.stdout().contains(STARTED), "{}", r.output());
    assert!(r.stderr().contains("2_seed.sql"), "{}", r.output());
    assert_eq!(
        db.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "2"
    );
    let (code, _, r) = finish(sub("status", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 1, "{}", r.output());
    assert!(r.stdout().contains("FAILED"), "{}", r.output());
    assert_nothing_left(&db, "after refusing");
}

on_17_and_15!(migration_left_failed_by_an_earlier_run_is_refused_with_65);

/// A `-- no-transaction` migration (`CREATE INDEX CONCURRENTLY` cannot run in
/// a transaction) is applied while other replicas wait for the lock. A waiter
/// blocked in `pg_advisory_lock` would hold a snapshot the index build waits
/// for (measured on 17: the deadlock detector then fails one side after 1 s);
/// waiters that poll `pg_try_advisory_lock` hold none between polls.
fn create_index_concurrently_completes_while_replicas_wait(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        (
            "1_create.sql",
            "CREATE TABLE items (id int PRIMARY KEY, name text);\n\
             INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 1000) g;\n",
        ),
        (
            "2_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY items_name ON items (name);\n",
        ),
    ]);
    let (mut holder, _) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let mut runs: Vec<Running> = (0..4)
        .map(|_| Running::start(boot(&db.url, dir.path(), &[], SERVER)))
        .collect();
    for r in &runs {
        r.wait_for_output(Duration::from_secs(20), "the lock wait", |o| {
            o.contains("waiting for the migration lock")
        });
    }
    holder.unlock_all();
    for r in &mut runs {
        assert_eq!(r.exit_code(Duration::from_secs(30)), 0, "{}", r.output());
        assert!(r.stdout().contains(STARTED), "{}", r.output());
    }
    assert_eq!(
        db.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name'::regclass"),
        "t"
    );
    assert_eq!(recorded(&db), "1:true,2:true");
}

on_17_and_15!(create_index_concurrently_completes_while_replicas_wait);

fn migration_changed_after_apply_exits_65_naming_the_file(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE items (id int PRIMARY KEY);"),
        ("2_seed.sql", "INSERT INTO items VALUES (1);"),
    ]);
    let (code, _, r) = finish(sub("migrate", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    dir.write("2_seed.sql", "INSERT INTO items VALUES (2);");
    dir.write("3_more.sql", "INSERT INTO items VALUES (3);");
    let (code, _, r) = finish(boot(&db.url, dir.path(), &[], SERVER), BOUND);
    assert_eq!(code, 65, "{}", r.output());
    assert!(r.stderr().contains("2_seed.sql"), "{}", r.output());
    assert!(!r.stdout().contains(STARTED), "{}", r.output());
    assert_eq!(db.psql("SELECT string_agg(id::text, ',') FROM items"), "1");
    assert_eq!(recorded(&db), "1:true,2:true");
    assert_nothing_left(&db, "after the checksum refusal");
}

on_17_and_15!(migration_changed_after_apply_exits_65_naming_the_file);

fn duplicate_versions_exit_65_before_touching_anything(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_a.sql", "CREATE TABLE a (id int);"),
        ("1_b.sql", "CREATE TABLE b (id int);"),
    ]);
    let (code, _, r) = finish(boot(&db.url, dir.path(), &[], SERVER), BOUND);
    assert_eq!(code, 65, "{}", r.output());
    let err = r.stderr();
    assert!(err.contains("duplicate"), "{err}");
    assert!(err.contains("1_a.sql") && err.contains("1_b.sql"), "{err}");
    assert!(!r.stdout().contains(STARTED));
    assert!(!exists(&db, "a") && !exists(&db, "b"));
    assert_eq!(recorded(&db), "");
}

on_17_and_15!(duplicate_versions_exit_65_before_touching_anything);

fn database_ahead_warns_and_serves_or_fails_with_65(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE t (id int);"),
        ("2_seed.sql", "INSERT INTO t VALUES (2);"),
        ("3_newer.sql", "INSERT INTO t VALUES (3);"),
    ]);
    let (code, _, r) = finish(sub("migrate", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    std::fs::remove_file(dir.path().join("3_newer.sql")).unwrap();

    let (code, _, r) = finish(boot(&db.url, dir.path(), &[], SERVER), BOUND);
    assert_eq!(code, 0, "default --db-ahead warn\n{}", r.output());
    assert!(r.stdout().contains(STARTED));
    let warn = r
        .stderr()
        .lines()
        .find(|l| l.contains("WARN") && l.contains("does not know"))
        .map_or_else(|| panic!("no warning\n{}", r.output()), str::to_owned);
    assert!(warn.contains("unknown=3"), "{warn}");

    let (code, _, r) = finish(
        boot(&db.url, dir.path(), &["--db-ahead", "warn"], SERVER),
        BOUND,
    );
    assert_eq!(code, 0, "{}", r.output());
    assert!(r.stdout().contains(STARTED));

    let (code, _, r) = finish(
        boot(&db.url, dir.path(), &["--db-ahead", "fail"], SERVER),
        BOUND,
    );
    assert_eq!(code, 65, "{}", r.output());
    assert!(!r.stdout().contains(STARTED), "{}", r.output());
    assert!(r.stderr().contains("does not know: 3"), "{}", r.output());
}

on_17_and_15!(database_ahead_warns_and_serves_or_fails_with_65);

fn status_reports_and_migrate_applies_without_starting_anything(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE t (id int);"),
        ("2_seed.sql", "INSERT INTO t VALUES (1);"),
    ]);
    let (code, _, r) = finish(sub("status", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 1, "{}", r.output());
    assert_eq!(pending_rows(&r.stdout()), 2, "{}", r.output());
    assert!(r.stdout().contains(": free"), "{}", r.output());
    assert!(!exists(&db, "_sqlx_migrations"), "status changed something");

    let (code, _, r) = finish(sub("migrate", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    assert!(
        !r.stderr().contains("starting the server"),
        "{}",
        r.output()
    );
    assert_eq!(db.psql("SELECT count(*) FROM t"), "1");
    assert_eq!(recorded(&db), "1:true,2:true");
    assert_nothing_left(&db, "after migrate");

    let (code, _, r) = finish(sub("status", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 0, "{}", r.output());
    let out = r.stdout();
    assert_eq!(out.matches("applied").count(), 2, "{out}");
    assert!(!out.contains("pending"), "{out}");
    assert!(
        out.contains("1_create.sql") && out.contains("2_seed.sql"),
        "{out}"
    );

    dir.write("3_more.sql", "INSERT INTO t VALUES (3);");
    let (_holder, holder_pid) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let (code, took, r) = finish(sub("status", &db.url, dir.path(), &[]), BOUND);
    assert_eq!(code, 1, "{}", r.output());
    assert!(
        took < Duration::from_secs(5),
        "status waited for the lock: {took:?}"
    );
    let out = r.stdout();
    assert_eq!(pending_rows(&out), 1, "{out}");
    assert!(
        out.contains(&format!("held by pid {holder_pid} (psql")),
        "{out}"
    );
}

on_17_and_15!(status_reports_and_migrate_applies_without_starting_anything);

// ------------------------------------------- signals under the lock (17, 15)

fn sigterm_while_waiting_for_the_lock_exits_143_and_leaves_no_lock(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let key = key_of(&db, "pgboot");
    let (_holder, holder_pid) = Psql::hold_lock(v, &db, key);
    let mut r = Running::start(boot(&db.url, dir.path(), &[], SERVER));
    r.wait_for_output(Duration::from_secs(20), "the lock wait", |o| {
        o.contains("waiting for the migration lock")
    });
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.exit_code(Duration::from_secs(10)), 143, "{}", r.output());
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}\n{}",
        r.output()
    );
    assert!(!r.stdout().contains(STARTED));
    eventually(Duration::from_secs(5), "pgboot's session to end", || {
        other_sessions(&db, &[holder_pid]).is_empty().then_some(())
    });
    let locks = advisory_locks(&db);
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert!(locks[0].starts_with(&format!("{holder_pid}|")), "{locks:?}");
    assert!(!exists(&db, "t"));
}

on_17_and_15!(sigterm_while_waiting_for_the_lock_exits_143_and_leaves_no_lock);

fn sigterm_during_a_slow_migration_exits_143_rolls_back_and_frees_the_lock(v: PgVersion) {
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE base (id int);"),
        (
            "2_slow.sql",
            "CREATE TABLE slow (id int);\nINSERT INTO slow VALUES (1);\nSELECT pg_sleep(30);\n",
        ),
    ]);
    let mut r = Running::start(boot(&db.url, dir.path(), &[], SERVER));
    wait_active_query(&db, &r, "pg_sleep(30)");
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    assert_eq!(r.exit_code(Duration::from_secs(15)), 143, "{}", r.output());
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}\n{}",
        r.output()
    );
    assert!(!r.stdout().contains(STARTED));
    assert_nothing_left(&db, "after SIGTERM mid-migration");
    assert!(
        !exists(&db, "slow"),
        "the interrupted migration was not rolled back"
    );
    assert_eq!(recorded(&db), "1:true");
}

on_17_and_15!(sigterm_during_a_slow_migration_exits_143_rolls_back_and_frees_the_lock);

// ------------------------------------------------------ `run` (17 and 15)

fn run_is_fenced_when_its_lock_session_is_terminated(v: PgVersion) {
    let db = shared(v).create_db();
    let mut r = Running::start(pgb(&[
        "run",
        "--database-url",
        &db.url,
        "--",
        "sh",
        "-c",
        "echo CHILD-PID=$$; exec sleep 30",
    ]));
    r.wait_for_output(Duration::from_secs(20), "the command", |o| {
        // The child's own line (a digit follows), not pgboot's log of the
        // command, which holds `CHILD-PID=$$`.
        o.split("CHILD-PID=")
            .skip(1)
            .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    let child: u32 = r
        .stdout()
        .split("CHILD-PID=")
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no child pid\n{}", r.output()));
    let backend = pgboot_backend(&db, &r);
    assert_eq!(
        holders_of(&db, key_of(&db, "pgboot")),
        vec![backend],
        "{}",
        r.output()
    );
    assert_eq!(
        db.psql(&format!("SELECT pg_terminate_backend({backend})")),
        "t"
    );
    let t = Instant::now();
    assert_eq!(r.exit_code(Duration::from_secs(20)), 75, "{}", r.output());
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}\n{}",
        r.output()
    );
    eventually(Duration::from_secs(2), "the command to be gone", || {
        (!pid_alive(child)).then_some(())
    });
    assert!(r.stderr().contains("COMMAND was stopped"), "{}", r.output());
    assert_nothing_left(&db, "after fencing");
}

on_17_and_15!(run_is_fenced_when_its_lock_session_is_terminated);

/// The same fencing guards an external migration command at boot: the lock
/// session lost mid-migration stops the command and the server never starts.
#[test]
fn migrate_cmd_is_fenced_when_its_lock_session_is_terminated_17() {
    let db = shared(PgVersion::V17).create_db();
    let mut r = Running::start(pgb(&[
        "--database-url",
        &db.url,
        "--migrate-cmd",
        "sh -c 'echo CHILD-PID=$$; exec sleep 30'",
        "--",
        "sh",
        "-c",
        "echo SERVER-STARTED",
    ]));
    r.wait_for_output(Duration::from_secs(20), "the migration command", |o| {
        // The child's own line (a digit follows), not pgboot's log of the
        // command, which holds `CHILD-PID=$$`.
        o.split("CHILD-PID=")
            .skip(1)
            .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    let child: u32 = r
        .stdout()
        .split("CHILD-PID=")
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no child pid\n{}", r.output()));
    let backend = pgboot_backend(&db, &r);
    assert_eq!(
        db.psql(&format!("SELECT pg_terminate_backend({backend})")),
        "t"
    );
    assert_eq!(r.exit_code(Duration::from_secs(20)), 75, "{}", r.output());
    eventually(
        Duration::from_secs(2),
        "the migration command to be gone",
        || (!pid_alive(child)).then_some(()),
    );
    assert!(!r.stdout().contains("SERVER-STARTED"), "{}", r.output());
    assert!(
        r.stderr().contains("server is not started"),
        "{}",
        r.output()
    );
    assert_nothing_left(&db, "after fencing the migration command");
}

fn run_holds_the_lock_passes_the_status_and_the_lock_env(v: PgVersion) {
    let db = shared(v).create_db();
    let tmp = TempDir::new("boot-run");
    let go = tmp.path().join("go");
    let script = format!(
        "echo \"HELD=$PGBOOT_LOCK_HELD KEY=$PGBOOT_LOCK_KEY\"; \
         while [ ! -e '{}' ]; do sleep 0.05; done; exit 7",
        go.display()
    );
    for (extra, key) in [
        (&[][..], key_of(&db, "pgboot")),
        (&["--lock-key", "4242"][..], 4242),
    ] {
        let _ = std::fs::remove_file(&go);
        let mut args = vec!["run", "--database-url", &db.url];
        args.extend_from_slice(extra);
        args.extend(["--", "sh", "-c", &script]);
        let mut r = Running::start(pgb(&args));
        r.wait_for_output(Duration::from_secs(20), "the command", |o| {
            o.contains("HELD=")
        });
        assert!(
            r.stdout().contains(&format!("HELD=1 KEY={key}")),
            "{}",
            r.output()
        );
        let backend = pgboot_backend(&db, &r);
        assert_eq!(holders_of(&db, key), vec![backend], "{}", r.output());
        std::fs::write(&go, "").unwrap();
        assert_eq!(r.exit_code(Duration::from_secs(20)), 7, "{}", r.output());
        assert_nothing_left(&db, "after run");
    }
}

on_17_and_15!(run_holds_the_lock_passes_the_status_and_the_lock_env);

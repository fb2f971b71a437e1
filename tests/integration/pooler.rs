//! pgboot behind a real `PgBouncer` (Debian's, started by the test on
//! loopback): transaction pooling is refused before the lock is taken (78,
//! naming `--migrate-database-url`), idle or under load, with nothing
//! migrated and no advisory lock left in the pool; a stock `PgBouncer` (no
//! `ignore_startup_parameters`) accepts pgboot's startup packet; an 08P01
//! from the pooler is fatal at once with the fix; session pooling works with
//! one migrator; and `--migrate-database-url` direct boots while the server
//! keeps the pooled `DATABASE_URL`.
//!
//! Every test has a database of its own in the shared Postgres 17 cluster and
//! a `PgBouncer` of its own; every process is stopped by pid.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::pg::{PgVersion, TestDb, psql_path, shared};
use crate::support::pgboot::{Running, TempDir, pgboot};
use crate::support::pgbouncer::{PgBouncer, PoolMode, Startup};

/// How many replicas boot at once.
const REPLICAS: usize = 8;
/// How many times the transaction-pooling refusal is repeated.
const ROUNDS: usize = 5;
/// The bound for a pgboot run that should finish on its own.
const BOUND: Duration = Duration::from_mins(1);
/// What the server prints; its absence means pgboot never started it.
const STARTED: &str = "SERVER-STARTED";
/// What the documented refusal says.
const REFUSAL: &str = "transaction- or statement-pooling pooler";

/// Two migrations: a table, and a row in it.
fn migrations() -> TempDir {
    let dir = TempDir::new("pooler-migrations");
    dir.write(
        "1_widgets.sql",
        "CREATE TABLE widgets (id int PRIMARY KEY, name text NOT NULL);",
    );
    dir.write(
        "2_first_widget.sql",
        "INSERT INTO widgets VALUES (1, 'first');",
    );
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp dir")
}

/// `pgboot --database-url URL EXTRA... -- sh -c 'echo SERVER-STARTED'`.
fn boot(url: &str, extra: &[&str]) -> Command {
    let mut args = vec!["--database-url", url];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", "echo SERVER-STARTED"]);
    let mut c = pgboot(&args);
    c.stdin(Stdio::null());
    c
}

/// Starts `n` copies of `cmd()` at once and waits (bounded) for each exit.
fn replicas(n: usize, cmd: impl Fn() -> Command) -> Vec<(i32, Running)> {
    let running: Vec<Running> = (0..n).map(|_| Running::start(cmd())).collect();
    running
        .into_iter()
        .map(|mut r| (r.exit_code(BOUND), r))
        .collect()
}

fn outputs(runs: &[(i32, Running)]) -> String {
    runs.iter()
        .enumerate()
        .map(|(i, (code, r))| format!("=== replica {i}: exit {code}\n{}", r.output()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn exists(db: &TestDb, table: &str) -> bool {
    db.psql(&format!("SELECT to_regclass('{table}') IS NOT NULL")) == "t"
}

/// Advisory locks in `db`, as seen on the real server (not through the pool).
fn advisory_locks(db: &TestDb) -> String {
    db.psql(
        "SELECT coalesce(string_agg(l.pid || ' ' || l.granted, ', '), '') FROM pg_locks l \
         WHERE l.locktype = 'advisory' \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
}

/// Every replica exited 78 with the refusal naming `--migrate-database-url`,
/// never claimed the lock, never started the server; nothing was migrated
/// and no advisory lock is left in the pool's server connections.
fn assert_refused(db: &TestDb, runs: &[(i32, Running)], round: &str) {
    for (i, (code, r)) in runs.iter().enumerate() {
        let err = r.stderr();
        assert_eq!(*code, 78, "{round}: replica {i}\n{}", outputs(runs));
        assert!(
            err.contains(REFUSAL) && err.contains("--migrate-database-url"),
            "{round}: replica {i} exited 78 without the documented message\n{}",
            outputs(runs)
        );
        assert!(
            !err.contains("migration lock acquired"),
            "{round}: replica {i} claimed a lock through a transaction pool\n{}",
            outputs(runs)
        );
        assert!(!r.stdout().contains(STARTED), "{round}: replica {i} served");
    }
    assert!(
        !exists(db, "_sqlx_migrations") && !exists(db, "widgets"),
        "{round}: something was migrated through the pool\n{}",
        outputs(runs)
    );
    assert_eq!(advisory_locks(db), "", "{round}: a lock was left behind");
}

/// A client looping short transactions through the pool until dropped
/// (or until its 20 000 transactions are done).
fn load_client(url: &str, tag: usize) -> Running {
    let script = TempDir::new("pooler-load");
    let mut sql = String::from("\\echo LOAD-STARTED\n");
    for i in 0..20_000 {
        sql.push_str(&format!(
            "BEGIN; SELECT pg_backend_pid(), {tag}, {i}; SELECT pg_sleep(0.002); COMMIT;\n"
        ));
    }
    let file = script.write("load.sql", &sql);
    let mut c = Command::new(psql_path(PgVersion::V17));
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
        .arg(&file)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGOPTIONS")
        .stdin(Stdio::null());
    let r = Running::start(c);
    r.wait_for_output(Duration::from_secs(20), "the load client", |o| {
        o.contains("LOAD-STARTED")
    });
    // psql read the file at start; the temp dir may go.
    thread::sleep(Duration::from_millis(200));
    drop(script);
    r
}

#[test]
fn transaction_pooling_is_refused_before_the_lock_idle_and_under_load_with_nothing_left() {
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let bouncer = PgBouncer::start(cluster, PoolMode::Transaction, Startup::Ignore);
    let url = bouncer.url(&db.name);
    let dir = migrations();
    let args = [
        "--migrations",
        path_str(dir.path()),
        "--lock-timeout",
        "20s",
    ];
    let t = Instant::now();
    for round in 0..ROUNDS {
        let runs = replicas(REPLICAS, || boot(&url, &args));
        assert_refused(&db, &runs, &format!("idle, round {round}"));
    }
    let load: Vec<Running> = (0..3).map(|i| load_client(&url, i)).collect();
    for round in 0..ROUNDS {
        let runs = replicas(REPLICAS, || boot(&url, &args));
        assert_refused(&db, &runs, &format!("under load, round {round}"));
    }
    for l in &load {
        assert!(
            l.stderr().trim().is_empty(),
            "the load client failed: {}",
            l.output()
        );
    }
    drop(load);
    eprintln!(
        "{} replicas refused in {:?}",
        2 * ROUNDS * REPLICAS,
        t.elapsed()
    );
}

#[test]
fn a_stock_pgbouncer_without_ignore_startup_parameters_accepts_pgboot() {
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let bouncer = PgBouncer::start(cluster, PoolMode::Session, Startup::Stock);
    let dir = migrations();
    let mut r = Running::start(boot(
        &bouncer.url(&db.name),
        &["--migrations", path_str(dir.path())],
    ));
    let code = r.exit_code(BOUND);
    assert_eq!(
        code,
        0,
        "{}\n--- pgbouncer ---\n{}",
        r.output(),
        bouncer.log()
    );
    assert!(r.stdout().contains(STARTED));
    assert!(!r.stderr().contains("08P01"), "{}", r.output());
    assert!(
        !bouncer.log().contains("unsupported startup parameter"),
        "{}",
        bouncer.log()
    );
    assert_eq!(db.psql("SELECT name FROM widgets"), "first");
}

#[test]
fn a_protocol_error_from_the_pooler_is_fatal_at_once_with_the_fix() {
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    // A stock PgBouncer refuses a startup parameter it does not track with
    // 08P01: here `options`, which the URL asks sqlx to send.
    let bouncer = PgBouncer::start(cluster, PoolMode::Session, Startup::Stock);
    let url = format!(
        "{}?options=-c%20statement_timeout%3D600000",
        bouncer.url(&db.name)
    );
    let t = Instant::now();
    let mut r = Running::start(boot(&url, &["--wait-timeout", "60s"]));
    let code = r.exit_code(BOUND);
    let took = t.elapsed();
    let err = r.stderr();
    assert_eq!(code, 78, "{}", r.output());
    assert!(
        err.contains("08P01") && err.contains("--migrate-database-url"),
        "the message names neither the protocol error nor the fix\n{}",
        r.output()
    );
    assert!(
        bouncer.log().contains("unsupported startup parameter"),
        "{}",
        bouncer.log()
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: 08P01 was retried instead of failing at once"
    );
    assert!(!r.stdout().contains(STARTED));
}

#[test]
fn session_pooling_lets_exactly_one_of_eight_replicas_migrate_and_all_serve() {
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let bouncer = PgBouncer::start(cluster, PoolMode::Session, Startup::Ignore);
    let url = bouncer.url(&db.name);
    let dir = migrations();
    let runs = replicas(REPLICAS, || {
        boot(&url, &["--migrations", path_str(dir.path())])
    });
    let mut migrators = 0;
    for (i, (code, r)) in runs.iter().enumerate() {
        assert_eq!(*code, 0, "replica {i}\n{}", outputs(&runs));
        assert!(r.stdout().contains(STARTED), "replica {i} did not serve");
        if r.stderr().contains("applied migration") {
            migrators += 1;
        }
    }
    assert_eq!(migrators, 1, "{}", outputs(&runs));
    assert_eq!(db.psql("SELECT count(*) FROM widgets"), "1");
    assert_eq!(
        db.psql("SELECT count(*) FROM _sqlx_migrations WHERE success"),
        "2"
    );
    assert_eq!(advisory_locks(&db), "");
}

#[test]
fn migrate_database_url_direct_boots_and_the_server_keeps_the_pooled_url() {
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let bouncer = PgBouncer::start(cluster, PoolMode::Transaction, Startup::Ignore);
    let pooled = bouncer.url(&db.name);
    let dir = migrations();
    let mut c = pgboot(&[
        "--migrations",
        path_str(dir.path()),
        "--migrate-database-url",
        &db.url,
        "--",
        "sh",
        "-c",
        "echo SERVER-STARTED; echo \"SERVER-URL=$DATABASE_URL\"",
    ]);
    c.env("DATABASE_URL", &pooled).stdin(Stdio::null());
    let mut r = Running::start(c);
    assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
    assert!(
        r.stdout()
            .lines()
            .any(|l| l == format!("SERVER-URL={pooled}")),
        "the server did not get the pooled DATABASE_URL\n{}",
        r.output()
    );
    assert!(r.stderr().contains("migration lock acquired"));
    assert_eq!(db.psql("SELECT name FROM widgets"), "first");
    assert_eq!(advisory_locks(&db), "");
}

/// A minimal Alembic project: `alembic.ini` and one revision, enough for
/// pgboot to recognise `python -m alembic upgrade head` and read its head.
fn alembic_project() -> TempDir {
    let dir = TempDir::new("pooler-alembic");
    dir.write("alembic.ini", "[alembic]\nscript_location = migrations\n");
    dir.write("migrations/env.py", "raise SystemExit('never run')\n");
    dir.write(
        "migrations/versions/0001_first.py",
        "revision = \"0001\"\ndown_revision = None\n\ndef upgrade():\n    pass\n",
    );
    dir.write(
        "migrations/versions/0002_second.py",
        "revision = \"0002\"\ndown_revision = \"0001\"\n\ndef upgrade():\n    pass\n",
    );
    dir
}

#[test]
fn a_migration_command_through_a_transaction_pool_is_refused_before_it_runs() {
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    // Behind head: Alembic's fast path reads alembic_version through the pool
    // and must take the slow path, which is refused.
    db.psql(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);\
         INSERT INTO alembic_version VALUES ('0001');",
    );
    let bouncer = PgBouncer::start(cluster, PoolMode::Transaction, Startup::Ignore);
    let url = bouncer.url(&db.name);
    let project = alembic_project();
    // A stand-in `python` that only leaves a mark: pgboot recognises
    // `python -m alembic` by the program's name, and must never start it.
    let marker = project.path().join("COMMAND-RAN");
    let python = project.write(
        "bin/python",
        &format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    );
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cmd = format!("{} -m alembic upgrade head", python.display());
    let runs = replicas(REPLICAS, || {
        let mut c = boot(&url, &["--migrate-cmd", &cmd]);
        c.current_dir(project.path());
        c
    });
    for (i, (code, r)) in runs.iter().enumerate() {
        let err = r.stderr();
        assert_eq!(*code, 78, "replica {i}\n{}", outputs(&runs));
        assert!(
            err.contains(REFUSAL) && err.contains("--migrate-database-url"),
            "replica {i}\n{}",
            outputs(&runs)
        );
        assert!(!err.contains("migration lock acquired"), "replica {i}");
    }
    assert!(
        !marker.exists(),
        "the migration command ran through the pool"
    );
    assert_eq!(db.psql("SELECT version_num FROM alembic_version"), "0001");
    assert_eq!(advisory_locks(&db), "");
}

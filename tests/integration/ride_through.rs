//! Riding through: Postgres restarted (fast or immediate shutdown), or a
//! backend crash forcing crash recovery, after the replicas passed their
//! first `SELECT 1` — while they wait for the lock, while one applies a
//! built-in migration, while an external migration command runs. Every
//! replica waits for Postgres again, takes the lock again, re-checks what is
//! applied and serves; each migration's effect is there exactly once (a
//! second apply would fail on a primary key); no lock is left.
//!
//! Each test has a cluster of its own, since it stops and starts it. Every
//! wait is bounded; every process is stopped by pid.

use std::process::Command;
use std::time::Duration;

use crate::boot::{
    BOUND, Psql, STARTED, advisory_locks, assert_nothing_left, boot, eventually, key_of,
    migrations, path_str, pgb, recorded, wait_active_query,
};
use crate::support::on_17_and_15;
use crate::support::pg::{Cluster, PgVersion, TestDb, psql_path};
use crate::support::pgboot::Running;

/// Migrations whose second apply fails: the seed row has a primary key.
const CREATE_AND_SEED: &[(&str, &str)] = &[
    (
        "1_create.sql",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);",
    ),
    ("2_seed.sql", "INSERT INTO items VALUES (1, 'seed');"),
];

/// How a test takes Postgres down and up again.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `pg_ctl stop -m fast` then start: backends get 57P01.
    Fast,
    /// SIGQUIT to the postmaster then start: crash recovery at start-up.
    Immediate,
}

fn outage(cluster: &Cluster, how: Outage) {
    match how {
        Outage::Fast => cluster.restart(),
        Outage::Immediate => cluster.restart_immediate(),
    }
}

/// A started cluster of its own, with a fresh database.
fn own_cluster(v: PgVersion) -> (Cluster, TestDb) {
    let cluster = Cluster::new(v);
    cluster.start();
    let db = cluster.create_db();
    (cluster, db)
}

/// Waits until `n` pgboot lock sessions (`pgboot@HOST`) are open in `db`.
fn wait_lock_sessions(db: &TestDb, n: usize, runs: &[Running]) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} pgboot lock sessions"),
        || {
            let count: usize = db
                .psql(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name LIKE 'pgboot@%' AND datname = current_database()",
                )
                .parse()
                .unwrap();
            if count < n {
                for r in runs {
                    assert!(
                        !r.stderr().contains("ERROR"),
                        "a replica failed early:\n{}",
                        r.output()
                    );
                }
            }
            (count >= n).then_some(())
        },
    );
}

/// Every replica exits 0 having started its server; returns how many
/// migrations they applied between them, and how many rode through a loss.
/// Prints how long after Postgres was back the last one served (run with
/// `--nocapture` to read the figure docs/reliability.md quotes).
fn all_serve(runs: &mut [Running]) -> (usize, usize) {
    let back = std::time::Instant::now();
    let (mut applied, mut rode) = (0, 0);
    for r in runs.iter_mut() {
        assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
        assert!(r.stdout().contains(STARTED), "{}", r.output());
        applied += r.stderr().matches("applied migration").count();
        rode += usize::from(r.stderr().contains("lost the connection to Postgres"));
    }
    eprintln!(
        "ride-through: {} replicas served within {} ms of the outage's end",
        runs.len(),
        back.elapsed().as_millis()
    );
    (applied, rode)
}

fn replicas_waiting_for_the_lock_ride_through(v: PgVersion, how: Outage) {
    let (cluster, db) = own_cluster(v);
    let dir = migrations(CREATE_AND_SEED);
    let (holder, _) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let mut runs: Vec<Running> = (0..4)
        .map(|_| Running::start(boot(&db.url, dir.path(), &[], crate::boot::SERVER)))
        .collect();
    wait_lock_sessions(&db, 4, &runs);
    outage(&cluster, how);
    drop(holder);
    let (applied, rode) = all_serve(&mut runs);
    assert_eq!(applied, 2, "each migration applied by exactly one replica");
    assert_eq!(
        rode, 4,
        "every replica lost its connection and rode through"
    );
    assert_eq!(db.psql("SELECT count(*) FROM items"), "1");
    assert_eq!(recorded(&db), "1:true,2:true");
    assert_eq!(advisory_locks(&db), Vec::<String>::new());
    assert_nothing_left(&db, "after the ride-through");
}

fn replicas_waiting_for_the_lock_ride_through_a_fast_restart(v: PgVersion) {
    replicas_waiting_for_the_lock_ride_through(v, Outage::Fast);
}
on_17_and_15!(replicas_waiting_for_the_lock_ride_through_a_fast_restart);

#[test]
fn replicas_waiting_for_the_lock_ride_through_an_immediate_restart_17() {
    replicas_waiting_for_the_lock_ride_through(PgVersion::V17, Outage::Immediate);
}

fn a_slow_builtin_migration_is_rolled_back_and_applied_again_once(v: PgVersion, how: Outage) {
    let (cluster, db) = own_cluster(v);
    let dir = migrations(&[(
        "1_slow.sql",
        "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1); \
         SELECT pg_sleep(2);",
    )]);
    let mut runs = vec![
        Running::start(boot(&db.url, dir.path(), &[], crate::boot::SERVER)),
        Running::start(boot(&db.url, dir.path(), &[], crate::boot::SERVER)),
    ];
    wait_active_query(&db, &runs[0], "pg_sleep");
    outage(&cluster, how);
    let (applied, rode) = all_serve(&mut runs);
    assert_eq!(applied, 1, "applied once, after the restart");
    assert!(rode >= 1, "the migrating replica rode through");
    assert_eq!(db.psql("SELECT count(*) FROM items"), "1");
    assert_eq!(recorded(&db), "1:true");
    assert_nothing_left(&db, "after the ride-through");
}

#[test]
fn a_slow_builtin_migration_rides_through_a_fast_restart_17() {
    a_slow_builtin_migration_is_rolled_back_and_applied_again_once(PgVersion::V17, Outage::Fast);
}

#[test]
fn a_slow_builtin_migration_rides_through_an_immediate_restart_15() {
    a_slow_builtin_migration_is_rolled_back_and_applied_again_once(
        PgVersion::V15,
        Outage::Immediate,
    );
}

/// An external migration command (psql running one transaction that would
/// fail if applied twice) cut short by a restart: pgboot sees that Postgres
/// went away (not only its lock session), waits, takes the lock again and
/// runs the command again; the first run was rolled back, so the second
/// applies it, once. (A command pgboot cannot read, unlike Alembic's, is run
/// by every replica that takes the lock: one replica here.)
fn an_external_migration_rides_through(v: PgVersion, how: Outage) {
    let (cluster, db) = own_cluster(v);
    let psql = psql_path(v);
    let cmd = format!(
        "{} -X -q -v ON_ERROR_STOP=1 {} -c 'BEGIN' -c 'CREATE TABLE items (id int PRIMARY KEY)' \
         -c 'INSERT INTO items VALUES (1)' -c 'SELECT pg_sleep(2)' -c 'COMMIT'",
        path_str(&psql),
        db.url
    );
    let mut r = Running::start(pgb(&[
        "--database-url",
        &db.url,
        "--migrate-cmd",
        &cmd,
        "--",
        "sh",
        "-c",
        "echo SERVER-STARTED",
    ]));
    wait_active_query(&db, &r, "pg_sleep");
    outage(&cluster, how);
    assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
    assert!(r.stdout().contains(STARTED), "{}", r.output());
    let err = r.stderr();
    assert_eq!(
        err.matches("running the migration command under the lock")
            .count(),
        2,
        "run, cut short, run again:\n{err}"
    );
    assert!(
        err.contains("lost the connection to Postgres")
            && err.contains("during=running the migration command"),
        "{err}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM items"), "1");
    assert_nothing_left(&db, "after the ride-through");
}

#[test]
fn an_external_migration_rides_through_a_fast_restart_17() {
    an_external_migration_rides_through(PgVersion::V17, Outage::Fast);
}

#[test]
fn an_external_migration_rides_through_an_immediate_restart_17() {
    an_external_migration_rides_through(PgVersion::V17, Outage::Immediate);
}

/// A backend killed with SIGKILL makes the postmaster end every session and
/// run crash recovery, without restarting itself.
fn eight_replicas_ride_through_crash_recovery(v: PgVersion) {
    let (cluster, db) = own_cluster(v);
    let dir = migrations(CREATE_AND_SEED);
    let holder = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let mut runs: Vec<Running> = (0..8)
        .map(|_| Running::start(boot(&db.url, dir.path(), &[], crate::boot::SERVER)))
        .collect();
    wait_lock_sessions(&db, 8, &runs);
    let victim = holder.1;
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {victim}");
    drop(holder);
    let (applied, rode) = all_serve(&mut runs);
    assert_eq!(applied, 2, "each migration applied by exactly one replica");
    assert_eq!(rode, 8, "all 8 replicas rode through the crash recovery");
    assert!(cluster.is_running());
    assert_eq!(db.psql("SELECT count(*) FROM items"), "1");
    assert_nothing_left(&db, "after crash recovery");
}
on_17_and_15!(eight_replicas_ride_through_crash_recovery);

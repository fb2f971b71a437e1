//! Checks of the Postgres test harness itself (`support::pg`).

use std::thread;

use crate::support::pg::{Cluster, PgVersion, pid_alive, shared};

fn expect_version(v: PgVersion, version: &str) {
    assert!(
        version.starts_with(&format!("PostgreSQL {}.", v.major())),
        "expected PostgreSQL {}, got {version}",
        v.major()
    );
}

fn round_trip(v: PgVersion) {
    let db = shared(v).create_db();
    expect_version(v, &db.psql("select version()"));
    db.psql("create table t (x int); insert into t values (1), (2), (3);");
    assert_eq!(db.psql("select sum(x) from t"), "6");
    assert_eq!(db.psql("select current_database()"), db.name);
    assert!(db.url.ends_with(&format!("/{}", db.name)), "{}", db.url);
    // Errors come back as Err, with the server's message.
    let err = db
        .try_psql("select * from no_such_table")
        .expect_err("a missing table is an error");
    assert!(err.contains("no_such_table"), "{err}");
    // Dropping the TestDb drops the database.
    let name = db.name.clone();
    drop(db);
    let left = shared(v).psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{name}'"),
    );
    assert_eq!(left, "0");
}

#[test]
fn round_trip_17() {
    round_trip(PgVersion::V17);
}

#[test]
fn round_trip_15() {
    round_trip(PgVersion::V15);
}

#[test]
fn wrong_password_is_rejected() {
    for v in PgVersion::ALL {
        let cluster = shared(v);
        let err = cluster
            .try_psql_as("postgres", "not-the-password", "postgres", "select 1")
            .expect_err("a wrong password is refused");
        assert!(err.contains("password authentication failed"), "{err}");
        assert_eq!(
            cluster
                .try_psql_as("postgres", cluster.password(), "postgres", "select 1")
                .as_deref(),
            Ok("1")
        );
        let url = cluster.url_with_password("postgres", "a b/c");
        assert!(
            url.starts_with("postgres://postgres:a%20b%2Fc@127.0.0.1:"),
            "{url}"
        );
    }
}

#[test]
fn parallel_databases() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let v = if i % 2 == 0 {
                    PgVersion::V17
                } else {
                    PgVersion::V15
                };
                let db = shared(v).create_db();
                db.psql(&format!(
                    "create table t (i int); insert into t values ({i})"
                ));
                assert_eq!(db.psql("select i from t"), i.to_string());
                db.name.clone()
            })
        })
        .collect();
    let mut names: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
}

fn lifecycle(v: PgVersion) {
    let cluster = Cluster::new(v);
    assert!(!cluster.is_running());
    // The URL is known before the server starts, and stays valid.
    let url = cluster.url("postgres");
    assert!(
        url.contains(&format!("@127.0.0.1:{}/postgres", cluster.port())),
        "{url}"
    );
    assert!(cluster.try_psql("postgres", "select 1").is_err());

    cluster.start();
    let pid = cluster.pid().expect("running after start");
    expect_version(v, &cluster.psql("postgres", "select version()"));
    assert_eq!(cluster.psql("postgres", "show fsync"), "off");
    assert_eq!(cluster.psql("postgres", "show max_connections"), "200");
    assert_eq!(
        cluster.psql("postgres", "show listen_addresses"),
        "127.0.0.1"
    );
    // Each cluster has its own password.
    assert_ne!(cluster.password(), shared(v).password());
    let db = cluster.create_db();
    db.psql("create table kept (x text); insert into kept values ('survives restarts')");

    cluster.stop();
    assert!(!cluster.is_running());
    assert!(!pid_alive(pid), "postmaster {pid} still there");
    assert!(db.try_psql("select 1").is_err());
    cluster.stop(); // no-op

    cluster.start();
    assert_eq!(db.psql("select x from kept"), "survives restarts");
    let pid = cluster.pid().expect("running");
    cluster.restart();
    let new_pid = cluster.pid().expect("running after restart");
    assert_ne!(pid, new_pid);
    assert_eq!(cluster.url("postgres"), url);
    assert_eq!(db.psql("select count(*) from kept"), "1");
    drop(db);

    let root = cluster.root_dir().to_path_buf();
    drop(cluster);
    assert!(!pid_alive(new_pid), "postmaster {new_pid} outlived Drop");
    assert!(!root.exists(), "{} outlived Drop", root.display());
}

#[test]
fn lifecycle_17() {
    lifecycle(PgVersion::V17);
}

#[test]
fn lifecycle_15() {
    lifecycle(PgVersion::V15);
}

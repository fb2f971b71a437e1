//! A network partition mid-migration, with several hosts on one machine:
//! Postgres 17 in a hub network namespace, three pgboot replicas each in a
//! namespace of its own (support/netns.rs). The replica that migrates is cut
//! off (iptables DROP both ways: no RST, the packets just vanish); the
//! server-side keepalives of its sessions end them, another replica holds the
//! lock within 20 s and migrates; the cut-off one exits 75 and never starts
//! its server; after healing, the migration's effect is there exactly once.
//! Both for an external migration command (psql, fenced by the lock session)
//! and for the built-in runner (its migration runs on the lock session
//! itself, guarded by probes over fresh connections).
//!
//! The migration sleeps 60 s on the first host only (chosen by
//! `inet_client_addr()`, so the files are the same for every replica) and
//! records each run in `migration_runs`: two rows would mean it ran twice.
//! Needs root (network namespaces); every process is stopped by pid.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::netns::{Host, Net};
use crate::support::pg::{Cluster, PgVersion, TestDb, psql_path};
use crate::support::pgboot::{self, Running, SCRUB, TempDir};

/// The bound for a replica that should finish on its own.
const BOUND: Duration = Duration::from_secs(90);
/// The promise: another replica holds the lock within this long of the cut.
const TAKEOVER: Duration = Duration::from_secs(20);
/// What the server prints; its absence means pgboot never started it.
const STARTED: &str = "SERVER-STARTED";

/// The database in the hub, the replicas' hosts around it. Fields drop in
/// order: the database, the cluster, then the namespaces.
struct Scene {
    db: TestDb,
    cluster: Cluster,
    net: Net,
}

impl Scene {
    fn new() -> Scene {
        let net = Net::new(3);
        let cluster = Cluster::new(PgVersion::V17).in_netns(net.hub().ns(), net.hub().addr());
        cluster.start();
        let db = cluster.create_db();
        db.psql(
            "CREATE TABLE migration_runs (host inet NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        );
        Scene { db, cluster, net }
    }

    /// The database's URL as the hosts reach it.
    fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@{}:{}/{}",
            self.cluster.password(),
            self.net.hub().addr(),
            self.cluster.port(),
            self.db.name
        )
    }

    /// Starts pgboot on host `i` with `args`, then `-- sh -c 'echo SERVER-STARTED'`.
    fn replica(&self, i: usize, args: &[&str]) -> Running {
        let mut c = self.net.host(i).command(pgboot::bin());
        for k in SCRUB {
            c.env_remove(k);
        }
        c.args(["--database-url", &self.url(), "--lock-timeout", "120s"])
            .args(args)
            .args(["--", "sh", "-c", "echo SERVER-STARTED"])
            .env("DATABASE_URL", self.url())
            .stdin(Stdio::null());
        Running::start(c)
    }

    /// `CASE` for the migration's sleep: long on host 1, short elsewhere.
    fn sleep_sql(&self) -> String {
        format!(
            "pg_sleep(CASE WHEN inet_client_addr() = '{}' THEN 60 ELSE 1 END)",
            self.net.host(1).addr()
        )
    }

    /// Waits (bounded) until a statement from `host` matching `needle` is active.
    fn wait_active(&self, host: &Host, needle: &str, r: &Running) {
        let q = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
               AND client_addr = '{}' AND query LIKE '%{needle}%'",
            host.addr()
        );
        eventually(Duration::from_secs(30), || self.db.psql(&q) != "0")
            .unwrap_or_else(|| panic!("no active `{needle}` from {}\n{}", host.addr(), r.output()));
    }

    /// Advisory locks and sessions from `host` still in the database.
    fn leftovers(&self, host: &Host) -> String {
        self.db.psql(&format!(
            "SELECT (SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                       AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE client_addr = '{a}')) \
                    || ' ' || (SELECT count(*) FROM pg_stat_activity WHERE client_addr = '{a}')",
            a = host.addr()
        ))
    }
}

/// Polls `f` every 20 ms until it holds; `None` after `timeout`.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return Some(t.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The partition itself, for any kind of migration: host 1 migrates slowly,
/// hosts 2 and 3 wait for the lock, host 1 is cut off. Returns the time from
/// the cut to another replica holding the lock, and the cut-off replica's
/// output.
fn cut_mid_migration(scene: &Scene, args: &[&str], migrating: &str) -> (Duration, String) {
    let mut first = scene.replica(1, args);
    scene.wait_active(scene.net.host(1), migrating, &first);
    let mut others = [scene.replica(2, args), scene.replica(3, args)];
    for r in &others {
        r.wait_for_output(Duration::from_secs(30), "a waiting replica", |o| {
            o.contains("waiting for the migration lock")
        });
    }
    let cut = Instant::now();
    scene.net.host(1).cut();
    let takeover = eventually(TAKEOVER + Duration::from_secs(20), || {
        others
            .iter()
            .any(|r| r.stderr().contains("migration lock acquired"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no replica took the lock within 40 s of the cut\n{}\n{}\n{}",
            first.output(),
            others[0].output(),
            others[1].output()
        )
    });
    let code = first.exit_code(BOUND);
    let fenced_after = cut.elapsed();
    assert_eq!(code, 75, "the cut-off replica\n{}", first.output());
    assert!(
        !first.stdout().contains(STARTED),
        "the cut-off replica started its server\n{}",
        first.output()
    );
    for (i, r) in others.iter_mut().enumerate() {
        assert_eq!(r.exit_code(BOUND), 0, "replica {}\n{}", i + 2, r.output());
        assert!(r.stdout().contains(STARTED));
    }
    scene.net.host(1).heal();
    assert!(
        eventually(Duration::from_secs(30), || scene
            .leftovers(scene.net.host(1))
            == "0 0")
        .is_some(),
        "the cut-off replica still has sessions or locks after healing: {}",
        scene.leftovers(scene.net.host(1))
    );
    eprintln!(
        "partition ({migrating}): lock held by another replica {} ms after the cut; \
         the cut-off replica exited 75 after {} ms",
        takeover.as_millis(),
        fenced_after.as_millis()
    );
    assert!(
        takeover <= TAKEOVER,
        "another replica held the lock only {takeover:?} after the cut (promise: {TAKEOVER:?})"
    );
    (takeover, first.output())
}

/// Exactly one run recorded, by a host other than the cut-off one.
fn assert_applied_once(scene: &Scene) {
    let runs = scene.db.psql(&format!(
        "SELECT count(*) || ' ' || coalesce(bool_and(host <> '{}'), false) FROM migration_runs",
        scene.net.host(1).addr()
    ));
    assert_eq!(
        runs, "1 true",
        "the migration's effect is not there exactly once (runs, none by the cut-off host)"
    );
}

#[test]
fn a_migration_command_cut_off_by_a_partition_is_fenced_and_another_replica_migrates_once() {
    let scene = Scene::new();
    scene
        .db
        .psql("CREATE TABLE schema_version (v int PRIMARY KEY)");
    let dir = TempDir::new("partition-cmd");
    // A migration tool's shape: check the version, apply, record, in one
    // transaction, over the PGOPTIONS pgboot hands the command.
    let script = dir.write(
        "migrate.sh",
        &format!(
            "exec {psql} -X -q -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\" <<'SQL'\n\
             BEGIN;\n\
             DO $$ BEGIN\n\
               IF NOT EXISTS (SELECT 1 FROM schema_version WHERE v = 1) THEN\n\
                 CREATE TABLE widgets (id int PRIMARY KEY);\n\
                 INSERT INTO schema_version VALUES (1);\n\
                 INSERT INTO migration_runs (host) VALUES (inet_client_addr());\n\
                 PERFORM {sleep};\n\
               END IF;\n\
             END $$;\n\
             COMMIT;\n\
             SQL\n",
            psql = psql_path(PgVersion::V17).display(),
            sleep = scene.sleep_sql(),
        ),
    );
    let cmd = format!("sh {}", script.display());
    let (_, out) = cut_mid_migration(&scene, &["--migrate-cmd", &cmd], "schema_version");
    assert!(out.contains("another replica may take the lock"), "{out}");
    assert_applied_once(&scene);
    assert_eq!(scene.db.psql("SELECT v FROM schema_version"), "1");
    assert_eq!(
        scene.db.psql("SELECT to_regclass('widgets') IS NOT NULL"),
        "t"
    );
}

#[test]
fn a_builtin_migration_cut_off_by_a_partition_is_abandoned_and_another_replica_migrates_once() {
    let scene = Scene::new();
    let dir = TempDir::new("partition-builtin");
    dir.write(
        "1_widgets.sql",
        &format!(
            "CREATE TABLE widgets (id int PRIMARY KEY);\n\
             INSERT INTO migration_runs (host) VALUES (inet_client_addr());\n\
             SELECT {};\n",
            scene.sleep_sql()
        ),
    );
    let migrations = dir.path().to_str().expect("utf-8 temp dir").to_owned();
    let (_, out) = cut_mid_migration(&scene, &["--migrations", &migrations], "widgets");
    assert!(out.contains("lock session"), "{out}");
    assert_applied_once(&scene);
    assert_eq!(
        scene
            .db
            .psql("SELECT string_agg(version || ':' || success, ',') FROM _sqlx_migrations"),
        "1:true"
    );
}

/// The namespaces are islands: the test's own namespace has no address on
/// their /24 (so nothing is routed there from outside), and a cut host
/// reaches nothing until healed.
#[test]
fn the_test_network_is_reachable_only_inside_its_namespaces() {
    let net = Net::new(1);
    // A TCP connect to a closed port of the hub: "Connection refused" means
    // the hub's kernel answered (reachable); a cut host gets no answer.
    let reaches_hub = || {
        let mut c = net.host(1).command("timeout");
        c.args(["3", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{}/9", net.hub().addr()))
            .stdin(Stdio::null());
        let out = crate::support::process::run(&mut c, None, Duration::from_secs(10)).unwrap();
        out.stderr.contains("Connection refused")
    };
    assert!(reaches_hub(), "host 1 cannot reach the hub");
    net.host(1).cut();
    assert!(!reaches_hub(), "the cut let a packet through");
    net.host(1).heal();
    assert!(reaches_hub(), "healing did not restore the link");
    let own = Command::new("ip").args(["-o", "addr"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&own.stdout).contains("10.231."),
        "the test's own namespace has an address on the namespaces' network"
    );
}

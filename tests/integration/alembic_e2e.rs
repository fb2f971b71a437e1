//! End to end with the real service pgboot exists for: the FastAPI +
//! SQLAlchemy + Alembic example in `examples/pipeline`, real Alembic,
//! psycopg, FastAPI and uvicorn from the venv `scripts/ensure-venv` makes,
//! against PostgreSQL 17.
//!
//! Every test works in a copy of the example (a `TempDir`), so Python's
//! caches, generated revisions and the test-only revisions of
//! `tests/fixtures/alembic/` never touch the example itself. Replicas run as
//! PID 1 of their own PID namespace (`pgboot_pid1`), the way a container
//! runs them, and are stopped by pid. The tests that start eight uvicorns
//! take [`heavy`] so that only one of them runs at a time on a small machine.
//!
//! Facts these tests rely on (measured, not assumed):
//! - uvicorn 0.54 exits with status 143 after a SIGTERM, having shut down
//!   cleanly ("Shutting down" … "Finished server process"): it re-raises the
//!   signal. [`sigterm_to_each_pid1_shuts_uvicorn_down_gracefully_and_pgboot_exits_with_uvicorns_status`]
//!   measures uvicorn's own status and asserts pgboot passes it through.
//! - Alembic logs "Context impl PostgresqlImpl." as soon as it has connected
//!   and "Running upgrade A -> B" per revision applied, to stderr.
// Product names (FastAPI, SQLAlchemy, PostgreSQL) are prose here, not code.
#![allow(clippy::doc_markdown)]

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::pg::{Cluster, PgVersion, TestDb, psql_path, shared};
use crate::support::pgboot::{Running, TempDir, pgboot, pgboot_pid1};
use crate::support::process;

/// How many replicas the rollout tests start.
const REPLICAS: usize = 8;
/// Upper bound for all replicas of one test to answer `/health` 200.
const SERVE_TIMEOUT: Duration = Duration::from_mins(2);
/// Upper bound for one replica to exit after a SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for a Python setup step (`alembic upgrade …`).
pub(crate) const PYTHON_TIMEOUT: Duration = Duration::from_mins(2);
/// What uvicorn 0.54 itself exits with after a SIGTERM (128 + 15): it shuts
/// down cleanly, then re-raises the signal. Measured by the SIGTERM test.
const UVICORN_SIGTERM_STATUS: i32 = 143;

/// Held by the tests that start uvicorns: one at a time, so eight Pythons
/// importing FastAPI do not compete with another test's eight on 2 cores.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The venv and the service

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's `bin` dir, from `scripts/ensure-venv` (run once per process).
fn venv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = repo().join("scripts/ensure-venv");
        let out = process::run(&mut Command::new(&script), None, Duration::from_mins(15))
            .unwrap_or_else(|e| panic!("scripts/ensure-venv: {e}"));
        assert!(
            out.status.success(),
            "scripts/ensure-venv failed: {}",
            out.describe()
        );
        let venv = out
            .stdout
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_else(|| panic!("scripts/ensure-venv printed nothing: {}", out.describe()));
        let bin = PathBuf::from(venv).join("bin");
        assert!(
            bin.join("python").is_file(),
            "{} has no python",
            bin.display()
        );
        bin
    })
}

/// PATH with the venv first, so `python` and `uvicorn` are the venv's.
pub(crate) fn path_env() -> String {
    format!(
        "{}:{}",
        venv_bin().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    )
}

/// A copy of `examples/pipeline` in a fresh temp dir.
pub(crate) fn service(tag: &str) -> TempDir {
    let dir = TempDir::new(&format!("alembic-{tag}"));
    let src = repo().join("examples/pipeline");
    let out = process::run(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dir.path()),
        None,
        Duration::from_mins(1),
    )
    .unwrap_or_else(|e| panic!("copy the example: {e}"));
    assert!(out.status.success(), "cp -a: {}", out.describe());
    // A stale bytecode cache from a developer's run must not stand in for a file.
    let _ = process::run(
        Command::new("find").arg(dir.path()).args([
            "-name",
            "__pycache__",
            "-prune",
            "-exec",
            "rm",
            "-rf",
            "{}",
            "+",
        ]),
        None,
        Duration::from_secs(30),
    );
    dir
}

pub(crate) fn versions(svc: &TempDir) -> PathBuf {
    svc.path().join("migrations/versions")
}

/// Adds a test-only revision from `tests/fixtures/alembic/` to the copy.
fn add_revision(svc: &TempDir, fixture: &str) {
    let from = repo().join("tests/fixtures/alembic").join(fixture);
    std::fs::copy(&from, versions(svc).join(fixture))
        .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// Runs `python -m alembic ARGS` in the copy against `url`, directly (no
/// pgboot): for putting a database at a revision before a test.
pub(crate) fn alembic(svc: &TempDir, url: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(venv_bin().join("python"));
    cmd.args(["-m", "alembic"])
        .args(args)
        .current_dir(svc.path())
        .env("PATH", path_env())
        .env("DATABASE_URL", url)
        .env_remove("PGOPTIONS");
    let out = process::run(&mut cmd, None, PYTHON_TIMEOUT)
        .unwrap_or_else(|e| panic!("alembic {args:?}: {e}"));
    assert!(
        out.status.success(),
        "alembic {args:?} failed: {}",
        out.describe()
    );
    format!("{}{}", out.stdout, out.stderr)
}

/// The uvicorn command line of the example, serving on `port`.
fn uvicorn_args(port: u16) -> Vec<String> {
    [
        "uvicorn",
        "app.main:app",
        "--app-dir",
        "src",
        "--host",
        "127.0.0.1",
        "--port",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([port.to_string()])
    .collect()
}

// ---------------------------------------------------------------------------
// Ports and HTTP

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// A free port on 127.0.0.1 for a uvicorn: below the kernel's ephemeral range
/// and below the range the Postgres harness picks from (15000 and up), never
/// handed out twice by this process.
fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if lo > 15000 {
        (10000u16, 14999u16)
    } else {
        (1025, lo - 1)
    };
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..500 {
        let port = from + u16::try_from(random_u64() % u64::from(to - from + 1)).unwrap();
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {from}..={to}");
}

/// A tiny HTTP/1.1 GET to 127.0.0.1: `(status, body)`, or `None` when
/// nothing answers (yet).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

// ---------------------------------------------------------------------------
// Replicas

/// One container: pgboot as PID 1 of its own namespace, uvicorn on `port`.
struct Replica {
    run: Running,
    port: u16,
}

impl Replica {
    fn output(&self) -> String {
        format!("{}{}", self.run.stdout(), self.run.stderr())
    }
}

/// The command of one replica: `pgboot ARGS -- uvicorn …` as PID 1, in the
/// copy, with the venv on PATH and `DATABASE_URL` set.
fn replica_command(dir: &Path, url: &str, port: u16, args: &[&str]) -> Command {
    let mut all: Vec<String> = vec![
        "--migrate-cmd".into(),
        "python -m alembic upgrade head".into(),
    ];
    all.extend(args.iter().map(ToString::to_string));
    all.push("--".into());
    all.extend(uvicorn_args(port));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut cmd = pgboot_pid1(&all);
    cmd.current_dir(dir)
        .env("PATH", path_env())
        .env("DATABASE_URL", url);
    cmd
}

/// Starts `n` replicas released together: each thread spawns its replica
/// the moment all threads have reached the barrier.
fn start_replicas(n: usize, dir: &Path, url: &str, args: &[&str]) -> Vec<Replica> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let port = free_port();
            let cmd = replica_command(dir, url, port, args);
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                Replica {
                    run: Running::start(cmd),
                    port,
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn all_outputs(reps: &[Replica]) -> String {
    reps.iter()
        .enumerate()
        .map(|(i, r)| format!("===== replica {i} (port {}) =====\n{}", r.port, r.output()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every replica answers `/health` 200; panics (with every
/// replica's output) when one exits first or the timeout passes.
fn wait_all_serving(reps: &mut [Replica], timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut serving = vec![false; reps.len()];
    while serving.iter().any(|s| !s) {
        for i in 0..reps.len() {
            if serving[i] {
                continue;
            }
            if let Some(st) = reps[i].run.wait_timeout(Duration::ZERO) {
                panic!(
                    "replica {i} exited ({st}) before serving\n{}",
                    all_outputs(reps)
                );
            }
            if matches!(http_get(reps[i].port, "/health"), Some((200, _))) {
                serving[i] = true;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "only {}/{} replicas answer /health 200 after {timeout:?}\n{}",
            serving.iter().filter(|s| **s).count(),
            reps.len(),
            all_outputs(reps)
        );
        thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// SIGTERM to each replica's PID 1 (pgboot): uvicorn shuts down gracefully
/// and pgboot exits with uvicorn's status.
fn stop_gracefully(reps: Vec<Replica>) {
    for r in &reps {
        let pid1 = r.run.ns_pid1();
        crate::support::pgboot::send(pid1, libc::SIGTERM);
    }
    for (i, mut r) in reps.into_iter().enumerate() {
        let code = r.run.exit_code(STOP_TIMEOUT);
        let out = r.output();
        assert_eq!(
            code, UVICORN_SIGTERM_STATUS,
            "replica {i}: pgboot's status after SIGTERM\n{out}"
        );
        assert!(
            out.contains("Shutting down") && out.contains("Finished server process"),
            "replica {i}: uvicorn did not shut down gracefully\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Database checks

pub(crate) fn alembic_version(db: &TestDb) -> String {
    db.psql("SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version")
}

/// Advisory locks (granted or waited for) in this database.
pub(crate) fn advisory_locks(db: &TestDb) -> i64 {
    db.psql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .parse()
    .unwrap()
}

/// Polls `f` until it holds or `timeout` passes; returns whether it held.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The server log's ERROR lines for database `name` (log_line_prefix
/// `%m [%p] %q%u@%d `).
fn server_errors(log: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let tag = format!("@{name} ");
    text.lines()
        .filter(|l| l.contains(&tag) && l.contains("ERROR:"))
        .map(ToString::to_string)
        .collect()
}

/// No replica saw the errors a migration race produces, and the server
/// logged no error for this database.
fn assert_no_race(reps: &[Replica], db: &TestDb, log: &Path) {
    let all = all_outputs(reps);
    for bad in [
        "UniqueViolation",
        "DuplicateTable",
        "DeadlockDetected",
        "duplicate key value",
        "already exists",
        "deadlock detected",
        "Traceback",
    ] {
        assert!(!all.contains(bad), "{bad:?} in the replicas' output\n{all}");
    }
    let errors = server_errors(log, &db.name);
    assert!(
        errors.is_empty(),
        "the server logged errors for {}:\n{}\n{all}",
        db.name,
        errors.join("\n")
    );
}

/// Only the replica that migrated ran Python before its server: the others
/// found the database behind head, waited for the lock, and re-checked
/// under it instead of running Alembic again.
fn assert_only_the_migrator_ran_alembic(reps: &[Replica], migrator: usize) {
    let ran = replicas_saying(reps, "Context impl PostgresqlImpl");
    assert_eq!(
        ran,
        vec![migrator],
        "replicas that ran Alembic\n{}",
        all_outputs(reps)
    );
    for (i, r) in reps.iter().enumerate().filter(|(i, _)| *i != migrator) {
        let out = r.output();
        assert!(
            out.contains("fast_path=true")
                || out.contains("another replica migrated while this one waited"),
            "replica {i} neither took the fast path nor re-checked under the lock\n{out}"
        );
    }
}

/// Which replicas' output contains `needle`.
fn replicas_saying(reps: &[Replica], needle: &str) -> Vec<usize> {
    reps.iter()
        .enumerate()
        .filter(|(_, r)| r.output().contains(needle))
        .map(|(i, _)| i)
        .collect()
}

// ---------------------------------------------------------------------------
// Rollouts: eight replicas at once

#[test]
fn eight_replicas_on_an_empty_database_migrate_exactly_once_and_all_serve() {
    let _heavy = heavy();
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let svc = service("empty");

    let mut reps = start_replicas(REPLICAS, svc.path(), &db.url, &[]);
    let took = wait_all_serving(&mut reps, SERVE_TIMEOUT);
    eprintln!("{REPLICAS} replicas serving {took:?} after the release (empty database)");

    let ran = replicas_saying(&reps, "Running upgrade");
    assert_eq!(
        ran.len(),
        1,
        "exactly one replica runs the revisions; these did: {ran:?}\n{}",
        all_outputs(&reps)
    );
    let runner = reps[ran[0]].output();
    for step in [
        "Running upgrade  -> 0001",
        "Running upgrade 0001 -> 0002",
        "Running upgrade 0002 -> 0003",
    ] {
        assert_eq!(runner.matches(step).count(), 1, "{step:?} once\n{runner}");
    }
    assert_only_the_migrator_ran_alembic(&reps, ran[0]);
    assert_no_race(&reps, &db, cluster.log_path());
    assert_eq!(alembic_version(&db), "0003");
    assert_eq!(db.psql("SELECT count(*) FROM job_kinds"), "3");
    // pgboot released the lock (and closed its session) before serving.
    assert_eq!(advisory_locks(&db), 0, "{}", all_outputs(&reps));
    let (status, body) = http_get(reps[0].port, "/job-kinds").expect("GET /job-kinds");
    assert_eq!(status, 200, "{body}");
    for code in ["build", "test", "deploy"] {
        assert!(body.contains(&format!("\"code\":\"{code}\"")), "{body}");
    }
    stop_gracefully(reps);
}

#[test]
fn eight_replicas_on_a_database_at_head_take_no_lock_run_no_python_and_all_serve() {
    let _heavy = heavy();
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let svc = service("at-head");
    alembic(&svc, &db.url, &["upgrade", "head"]);
    assert_eq!(alembic_version(&db), "0003");

    let mut reps = start_replicas(REPLICAS, svc.path(), &db.url, &[]);
    let took = wait_all_serving(&mut reps, SERVE_TIMEOUT);
    eprintln!("{REPLICAS} replicas serving {took:?} after the release (database at head)");

    for (i, r) in reps.iter().enumerate() {
        let out = r.output();
        // Alembic logs this as soon as it has connected: no Python ran
        // before uvicorn (uvicorn itself logs nothing like it).
        assert!(
            !out.contains("Context impl PostgresqlImpl"),
            "replica {i} ran Alembic\n{out}"
        );
        assert!(
            !out.contains("migration lock acquired"),
            "replica {i} took the lock\n{out}"
        );
        assert!(
            out.contains("no lock taken"),
            "replica {i} does not say it is at head\n{out}"
        );
        assert!(
            out.contains("fast_path=true"),
            "replica {i}'s summary line\n{out}"
        );
    }
    assert_no_race(&reps, &db, cluster.log_path());
    assert_eq!(alembic_version(&db), "0003");
    assert_eq!(advisory_locks(&db), 0);
    stop_gracefully(reps);
}

#[test]
fn eight_replicas_on_a_database_at_an_intermediate_revision_apply_the_rest_exactly_once() {
    let _heavy = heavy();
    let cluster = shared(PgVersion::V17);
    let db = cluster.create_db();
    let svc = service("intermediate");
    alembic(&svc, &db.url, &["upgrade", "0002"]);
    assert_eq!(alembic_version(&db), "0002");
    assert_eq!(db.psql("SELECT count(*) FROM job_kinds"), "0");

    let mut reps = start_replicas(REPLICAS, svc.path(), &db.url, &[]);
    wait_all_serving(&mut reps, SERVE_TIMEOUT);

    let ran = replicas_saying(&reps, "Running upgrade 0002 -> 0003");
    assert_eq!(
        ran.len(),
        1,
        "exactly one replica applies 0003; these did: {ran:?}\n{}",
        all_outputs(&reps)
    );
    assert!(
        replicas_saying(&reps, "Running upgrade  -> 0001").is_empty()
            && replicas_saying(&reps, "Running upgrade 0001 -> 0002").is_empty(),
        "applied revisions ran again\n{}",
        all_outputs(&reps)
    );
    assert_eq!(reps[ran[0]].output().matches("Running upgrade").count(), 1);
    assert_only_the_migrator_ran_alembic(&reps, ran[0]);
    assert_no_race(&reps, &db, cluster.log_path());
    assert_eq!(alembic_version(&db), "0003");
    // The data migration's rows exist once.
    assert_eq!(db.psql("SELECT count(*) FROM job_kinds"), "3");
    assert_eq!(db.psql("SELECT count(DISTINCT code) FROM job_kinds"), "3");
    assert_eq!(advisory_locks(&db), 0);
    stop_gracefully(reps);
}

#[test]
fn eight_replicas_started_five_seconds_before_postgres_all_serve() {
    let _heavy = heavy();
    let cluster = Cluster::new(PgVersion::V17); // not started
    let url = cluster.url("postgres");
    let svc = service("pg-late");

    let mut reps = start_replicas(REPLICAS, svc.path(), &url, &["--wait-timeout", "90s"]);
    thread::sleep(Duration::from_secs(5));
    for (i, r) in reps.iter_mut().enumerate() {
        assert!(
            r.run.wait_timeout(Duration::ZERO).is_none(),
            "replica {i} gave up before Postgres came\n{}",
            r.output()
        );
        assert!(
            !r.output().contains("Started server process"),
            "replica {i} served without Postgres\n{}",
            r.output()
        );
    }
    let t = Instant::now();
    cluster.start();
    let took = wait_all_serving(&mut reps, SERVE_TIMEOUT);
    eprintln!(
        "{REPLICAS} replicas serving {:?} after Postgres started",
        t.elapsed().max(took)
    );

    for (i, r) in reps.iter().enumerate() {
        let out = r.output();
        let waited: u64 = out
            .lines()
            .find(|l| l.contains("Postgres is ready"))
            .and_then(|l| l.split("waited_ms=").nth(1))
            .and_then(|w| w.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("replica {i}: no 'Postgres is ready' line\n{out}"));
        assert!(waited >= 4000, "replica {i} waited only {waited} ms\n{out}");
    }
    let ran = replicas_saying(&reps, "Running upgrade 0002 -> 0003");
    assert_eq!(ran.len(), 1, "{}", all_outputs(&reps));
    assert_only_the_migrator_ran_alembic(&reps, ran[0]);
    assert_eq!(
        cluster.psql("postgres", "SELECT version_num FROM alembic_version"),
        "0003"
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM job_kinds"),
        "3"
    );
    stop_gracefully(reps);
    drop(cluster);
}

// ---------------------------------------------------------------------------
// An older image during a rollout

/// A database at 0003 and a copy of the example without 0003 (the image
/// before the newest revision).
fn older_image_against_newer_database(tag: &str) -> (TestDb, TempDir) {
    let db = shared(PgVersion::V17).create_db();
    let current = service(&format!("{tag}-new"));
    alembic(&current, &db.url, &["upgrade", "head"]);
    assert_eq!(alembic_version(&db), "0003");
    let old = service(&format!("{tag}-old"));
    std::fs::remove_file(versions(&old).join("0003_seed_job_kinds.py")).unwrap();
    (db, old)
}

#[test]
fn an_older_image_against_a_newer_database_serves_with_db_ahead_warn() {
    let _heavy = heavy();
    let (db, old) = older_image_against_newer_database("ahead-warn");
    let mut reps = vec![{
        let port = free_port();
        Replica {
            run: Running::start(replica_command(
                old.path(),
                &db.url,
                port,
                &["--db-ahead", "warn"],
            )),
            port,
        }
    }];
    wait_all_serving(&mut reps, SERVE_TIMEOUT);
    let out = reps[0].output();
    assert!(out.contains("WARN"), "--db-ahead warn warns\n{out}");
    assert!(
        out.contains("0003"),
        "the warning names the unknown revision\n{out}"
    );
    // Running the old image's Alembic would fail on the unknown revision.
    assert!(
        !out.contains("Context impl PostgresqlImpl"),
        "the old image's Alembic ran\n{out}"
    );
    assert_eq!(alembic_version(&db), "0003", "the database was not touched");
    stop_gracefully(reps);
}

#[test]
fn an_older_image_against_a_newer_database_exits_65_with_db_ahead_fail() {
    let (db, old) = older_image_against_newer_database("ahead-fail");
    let port = free_port();
    let mut r = Running::start(replica_command(
        old.path(),
        &db.url,
        port,
        &["--db-ahead", "fail"],
    ));
    let code = r.exit_code(Duration::from_mins(1));
    let out = format!("{}{}", r.stdout(), r.stderr());
    assert_eq!(code, 65, "{out}");
    assert!(
        !out.contains("Started server process"),
        "the server started\n{out}"
    );
    assert!(
        !out.contains("Context impl PostgresqlImpl"),
        "the old image's Alembic ran\n{out}"
    );
    assert_eq!(alembic_version(&db), "0003");
    assert_eq!(advisory_locks(&db), 0);
}

// ---------------------------------------------------------------------------
// Signals

#[test]
fn sigterm_to_each_pid1_shuts_uvicorn_down_gracefully_and_pgboot_exits_with_uvicorns_status() {
    let _heavy = heavy();
    let db = shared(PgVersion::V17).create_db();
    let svc = service("sigterm-serving");

    // What uvicorn itself returns after a SIGTERM, without pgboot.
    let port = free_port();
    let mut cmd = Command::new(venv_bin().join("uvicorn"));
    cmd.args(&uvicorn_args(port)[1..])
        .current_dir(svc.path())
        .env("PATH", path_env())
        .env("DATABASE_URL", &db.url);
    let mut alone = vec![Replica {
        run: Running::start(cmd),
        port,
    }];
    wait_all_serving(&mut alone, SERVE_TIMEOUT);
    alone[0].run.signal(libc::SIGTERM);
    let uvicorn_status = alone[0].run.exit_code(STOP_TIMEOUT);
    let out = alone[0].output();
    assert!(out.contains("Finished server process"), "{out}");
    assert_eq!(
        uvicorn_status, UVICORN_SIGTERM_STATUS,
        "uvicorn's own status after SIGTERM changed (update UVICORN_SIGTERM_STATUS)\n{out}"
    );

    // Under pgboot, as PID 1: the same status, after the same clean shutdown.
    let mut reps = start_replicas(2, svc.path(), &db.url, &[]);
    wait_all_serving(&mut reps, SERVE_TIMEOUT);
    let t = Instant::now();
    stop_gracefully(reps);
    eprintln!(
        "2 replicas stopped {:?} after SIGTERM (uvicorn alone: {uvicorn_status})",
        t.elapsed()
    );
}

#[test]
fn sigterm_during_the_migration_signals_alembic_exits_143_serves_nothing_and_frees_the_lock() {
    let _heavy = heavy();
    let db = shared(PgVersion::V17).create_db();
    let svc = service("sigterm-migrating");
    alembic(&svc, &db.url, &["upgrade", "head"]);
    add_revision(&svc, "0004_sleep_in_migration.py");

    let port = free_port();
    let mut r = Running::start(replica_command(
        svc.path(),
        &db.url,
        port,
        &["--log-level", "info,pgboot=debug"],
    ));
    r.wait_for_output(Duration::from_mins(1), "Alembic running 0004", |o| {
        o.contains("Running upgrade 0003 -> 0004")
    });
    // Alembic's backend is inside pg_sleep(30), holding the lock-protected transaction.
    assert!(
        eventually(Duration::from_secs(10), || {
            db.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()"
        ) == "1"
        }),
        "Alembic's pg_sleep is not running\n{}",
        r.output()
    );
    assert_eq!(
        advisory_locks(&db),
        1,
        "pgboot holds the lock while Alembic runs"
    );

    let t = Instant::now();
    crate::support::pgboot::send(r.ns_pid1(), libc::SIGTERM);
    let code = r.exit_code(Duration::from_secs(20));
    let stopped_in = t.elapsed();
    let out = format!("{}{}", r.stdout(), r.stderr());
    assert_eq!(code, 143, "{out}");
    assert!(
        stopped_in < Duration::from_secs(10),
        "took {stopped_in:?} (the revision sleeps 30 s)\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("forwarding") && l.contains("SIGTERM")),
        "pgboot did not forward SIGTERM to Alembic\n{out}"
    );
    assert!(
        !out.contains("Started server process") && !out.contains("ready; starting the server"),
        "the server started\n{out}"
    );
    // The lock is free, and Alembic's backend did not sleep on for 30 s:
    // PGOPTIONS' client_connection_check_interval ends it once its client is gone.
    assert!(
        eventually(Duration::from_secs(5), || advisory_locks(&db) == 0),
        "the lock is still held\n{out}"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            db.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()"
        ) == "0"
        }),
        "Alembic's backend is still sleeping after its client died\n{out}"
    );
    assert_eq!(
        alembic_version(&db),
        "0003",
        "the interrupted revision rolled back"
    );
    assert_eq!(
        db.psql("SELECT to_regclass('pgboot_sleep_marker') IS NULL"),
        "t"
    );
}

// ---------------------------------------------------------------------------
// Failures under the lock

#[test]
fn a_failing_revision_exits_65_leaves_the_schema_unchanged_and_never_serves() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("failing");
    alembic(&svc, &db.url, &["upgrade", "head"]);
    add_revision(&svc, "0004_broken.py");

    let port = free_port();
    let mut r = Running::start(replica_command(svc.path(), &db.url, port, &[]));
    let code = r.exit_code(Duration::from_mins(1));
    let out = format!("{}{}", r.stdout(), r.stderr());
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("Running upgrade 0003 -> 0004"), "{out}");
    assert!(
        out.contains("pgboot_no_such_table_0004"),
        "Alembic's error is passed through\n{out}"
    );
    assert!(
        !out.contains("Started server process") && !out.contains("ready; starting the server"),
        "the server started\n{out}"
    );
    assert_eq!(alembic_version(&db), "0003");
    assert_eq!(
        db.psql("SELECT to_regclass('pgboot_broken_half') IS NULL"),
        "t",
        "the failed revision's table exists"
    );
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn the_migration_command_gets_the_lock_flag_the_key_and_pgoptions() {
    let db = shared(PgVersion::V17).create_db();
    let dir = TempDir::new("alembic-env");
    let file = dir.path().join("env.txt");
    let cmd = format!("sh -c 'env > {}'", file.display());
    let mut c = pgboot(&["--migrate-cmd", &cmd, "--", "true"]);
    c.env("DATABASE_URL", &db.url)
        .env("PGOPTIONS", "-c work_mem=8MB");
    let (code, out, err) = crate::support::pgboot::run(c, Duration::from_mins(1));
    assert_eq!(code, 0, "{out}{err}");

    let env = std::fs::read_to_string(&file).unwrap();
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing from the command's environment:\n{env}"))
            .to_string()
    };
    assert_eq!(var("PGBOOT_LOCK_HELD"), "1");
    // The default key is the name "pgboot": hashtextextended('pgboot', 0).
    assert_eq!(
        var("PGBOOT_LOCK_KEY"),
        db.psql("SELECT hashtextextended('pgboot', 0)")
    );
    let opts = var("PGOPTIONS");
    assert!(opts.contains("client_connection_check_interval="), "{opts}");
    assert!(
        opts.contains("-c work_mem=8MB"),
        "the caller's PGOPTIONS are kept: {opts}"
    );
    assert_eq!(var("DATABASE_URL"), db.url);
}

#[test]
fn a_migration_command_that_takes_the_same_lock_itself_is_reported_as_nested_and_stopped() {
    let db = shared(PgVersion::V17).create_db();
    let cmd =
        r#"sh -c 'exec "$PSQL" -X "$DATABASE_URL" -c "SELECT pg_advisory_lock($PGBOOT_LOCK_KEY)"'"#;
    // Without a lock timeout the nested wait lasts until --migrate-timeout;
    // with one, see `rolling::a_nested_advisory_lock_that_times_out_is_not_retried`.
    let mut c = pgboot(&[
        "--migrate-cmd",
        cmd,
        "--migrate-timeout",
        "5s",
        "--ddl-lock-timeout",
        "0",
        "--",
        "true",
    ]);
    c.env("DATABASE_URL", &db.url)
        .env("PSQL", psql_path(PgVersion::V17));
    let t = Instant::now();
    let (code, out, err) = crate::support::pgboot::run(c, Duration::from_mins(1));
    let took = t.elapsed();
    let all = format!("{out}{err}");
    assert_eq!(code, 65, "{all}");
    assert!(
        all.contains("another session is blocked waiting for the very advisory lock pgboot holds"),
        "no nested-lock message\n{all}"
    );
    assert!(all.contains("--migrate-timeout"), "{all}");
    let nested_at = all.find("another session is blocked").unwrap();
    let timeout_at = all.find("ran longer than --migrate-timeout").unwrap();
    assert!(
        nested_at < timeout_at,
        "the nested lock is reported before the timeout stops it\n{all}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}\n{all}");
    // psql was stopped, and its waiting backend went with it.
    assert!(
        eventually(Duration::from_secs(10), || advisory_locks(&db) == 0),
        "advisory locks left\n{all}"
    );
}

#[test]
fn migrate_timeout_stops_a_command_that_runs_too_long_and_exits_65() {
    let db = shared(PgVersion::V17).create_db();
    let dir = TempDir::new("alembic-timeout");
    let pidfile = dir.path().join("pid");
    let cmd = format!("sh -c 'echo $$ > {}; exec sleep 30'", pidfile.display());
    let mut c = pgboot(&[
        "--migrate-cmd",
        &cmd,
        "--migrate-timeout",
        "2s",
        "--",
        "true",
    ]);
    c.env("DATABASE_URL", &db.url);
    let t = Instant::now();
    let (code, out, err) = crate::support::pgboot::run(c, Duration::from_mins(1));
    let took = t.elapsed();
    let all = format!("{out}{err}");
    assert_eq!(code, 65, "{all}");
    assert!(all.contains("ran longer than --migrate-timeout"), "{all}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "took {took:?}\n{all}"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !crate::support::pg::pid_alive(pid),
        "the command (pid {pid}) is still running\n{all}"
    );
    assert_eq!(advisory_locks(&db), 0);
}

// ---------------------------------------------------------------------------
// The manual workflows

#[test]
fn pgboot_migrate_with_alembic_brings_the_database_to_head_and_exits_0() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("db-migrate");
    let mut c = pgboot(&["migrate", "--migrate-cmd", "python -m alembic upgrade head"]);
    c.current_dir(svc.path())
        .env("PATH", path_env())
        .env("DATABASE_URL", &db.url);
    let (code, out, err) = crate::support::pgboot::run(c, PYTHON_TIMEOUT);
    let all = format!("{out}{err}");
    assert_eq!(code, 0, "{all}");
    assert!(all.contains("Running upgrade 0002 -> 0003"), "{all}");
    assert_eq!(alembic_version(&db), "0003");
    assert_eq!(db.psql("SELECT count(*) FROM job_kinds"), "3");
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn pgboot_run_alembic_autogenerate_creates_a_new_revision_and_exits_0() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("db-generate");
    alembic(&svc, &db.url, &["upgrade", "head"]);
    let before: HashSet<_> = std::fs::read_dir(versions(&svc))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let mut c = pgboot(&[
        "run",
        "--",
        "python",
        "-m",
        "alembic",
        "revision",
        "--autogenerate",
        "-m",
        "test",
    ]);
    c.current_dir(svc.path())
        .env("PATH", path_env())
        .env("DATABASE_URL", &db.url);
    let (code, out, err) = crate::support::pgboot::run(c, PYTHON_TIMEOUT);
    let all = format!("{out}{err}");
    assert_eq!(code, 0, "{all}");

    let new: Vec<PathBuf> = std::fs::read_dir(versions(&svc))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            !before.contains(&e.file_name()) && e.path().extension().is_some_and(|x| x == "py")
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(new.len(), 1, "one new revision file: {new:?}\n{all}");
    assert!(
        new[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("_test.py"),
        "{new:?}"
    );
    let text = std::fs::read_to_string(&new[0]).unwrap();
    assert!(
        text.contains("down_revision") && text.contains("'0003'"),
        "the new revision follows 0003:\n{text}"
    );
    assert!(
        all.contains("migration lock acquired"),
        "it ran under the lock\n{all}"
    );
    assert_eq!(advisory_locks(&db), 0);
}

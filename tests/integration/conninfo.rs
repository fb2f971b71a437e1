//! Where Postgres is, as libpq users write it: TLS that verifies or stops
//! pgboot at once (78, naming the option and the file), libpq's variables
//! honoured or refused (64, naming the variable), Unix-socket URLs,
//! several hosts tried in order with `connect_timeout`, and
//! `target_session_attrs`, with the lock and migrations always on a
//! writable primary. Each case asserts the exit code, a time bound, a
//! message fragment, and that the password appears nowhere.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::pg::{self, Cluster, PgVersion, TestDb};
use crate::support::pgboot::{TempDir, pgboot, run};

/// The bound for a run that should end on its own.
const BOUND: Duration = Duration::from_mins(1);
/// What the contract promises for an error no wait can fix.
const FAST: Duration = Duration::from_secs(2);

/// Runs `cmd`; returns (exit code, stdout + stderr, how long it took).
fn timed(mut cmd: Command) -> (i32, String, Duration) {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let (code, out, err) = run(cmd, BOUND);
    (code, format!("{out}{err}"), start.elapsed())
}

/// Asserts the outcome of a run: its code, a bound, a fragment of its
/// output, and that `password` is nowhere in it.
fn check(
    what: &str,
    (code, out, took): &(i32, String, Duration),
    want: i32,
    within: Duration,
    fragment: &str,
    password: &str,
) {
    assert_eq!(*code, want, "{what}: exit code\n{out}");
    assert!(
        took < &within,
        "{what}: took {took:?} (bound {within:?})\n{out}"
    );
    assert!(out.contains(fragment), "{what}: no {fragment:?} in\n{out}");
    assert!(
        !out.contains(password),
        "{what}: the password leaked\n{out}"
    );
}

/// `pgboot wait --database-url URL` with a short wait and trace logs (so
/// that the password check covers every line pgboot can write).
fn wait(url: &str, timeout: &str) -> Command {
    let mut c = pgboot(&["wait", "--database-url", url, "--wait-timeout", timeout]);
    c.env("PGBOOT_LOG", "trace").env("HOME", "/nonexistent");
    c
}

/// `pgboot migrate --database-url URL --migrations DIR --wait-timeout T`,
/// logging at trace level.
fn migrate(url: &str, dir: &str, timeout: &str) -> Command {
    let mut c = pgboot(&[
        "migrate",
        "--database-url",
        url,
        "--migrations",
        dir,
        "--wait-timeout",
        timeout,
    ]);
    c.env("PGBOOT_LOG", "trace").env("HOME", "/nonexistent");
    c
}

/// `pgboot wait` with no URL: libpq's variables name `db`.
fn wait_by_variables(db: &TestDb) -> Command {
    let mut c = pgboot(&["wait", "--wait-timeout", "20s"]);
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", db.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name)
        .env("PGPASSWORD", db.password())
        .env("PGBOOT_LOG", "trace")
        .env("HOME", "/nonexistent");
    c
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a second CA nobody signed with, and a server certificate for
/// `localhost` (and nothing else) signed by the first.
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = TempDir::new("tls");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
            let subj = format!("/CN=pgboot test {ca}");
            args.push(&subj);
            args.extend(ec);
            let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
            args.extend(["-keyout", &key, "-out", &crt]);
            openssl(d, &args);
        }
        let mut args = vec!["req", "-subj", "/CN=localhost"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(d, &args);
        dir.write(
            "server.ext",
            "subjectAltName = DNS:localhost\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n",
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A Postgres 17 cluster serving TLS with the certificate of [`Certs`].
fn tls_cluster() -> &'static (Cluster, Certs) {
    static TLS: OnceLock<(Cluster, Certs)> = OnceLock::new();
    TLS.get_or_init(|| {
        let certs = Certs::make();
        let cluster = Cluster::new(PgVersion::V17);
        cluster.enable_ssl(&certs.path("server.crt"), &certs.path("server.key"));
        cluster.start();
        (cluster, certs)
    })
}

fn tls_url(host: &str, query: &str) -> String {
    let (cluster, _) = tls_cluster();
    format!(
        "postgres://postgres:{}@{host}:{}/postgres?{query}",
        cluster.password(),
        cluster.port()
    )
}

#[test]
fn verify_full_with_the_signing_ca_connects_over_tls() {
    let (cluster, certs) = tls_cluster();
    let ca = certs.path("ca.crt");
    let url = tls_url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let r = timed(wait(&url, "20s"));
    check(
        "verify-full",
        &r,
        0,
        Duration::from_secs(20),
        "ready",
        cluster.password(),
    );
    // The same CA from the environment, and require + a root file, which
    // libpq verifies as verify-ca.
    let mut c = wait(&tls_url("127.0.0.1", "sslmode=require"), "20s");
    c.env("PGSSLROOTCERT", &ca);
    let r = timed(c);
    check(
        "require + PGSSLROOTCERT",
        &r,
        0,
        Duration::from_secs(20),
        "ready",
        cluster.password(),
    );
}

#[test]
fn tls_that_cannot_verify_stops_at_once_naming_the_option() {
    let (cluster, certs) = tls_cluster();
    let pw = cluster.password();
    let other = certs.path("other-ca.crt");
    let ca = certs.path("ca.crt");
    let missing = certs.path("no-such-ca.crt");
    let cases = [
        (
            "a CA that did not sign the certificate",
            tls_url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", other.display()),
            ),
            "not signed by a CA",
        ),
        (
            "a host name the certificate does not hold",
            tls_url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
            "does not name the host",
        ),
        (
            "a missing root certificate file",
            tls_url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            ),
            "parameter sslrootcert of --database-url",
        ),
        (
            "a missing client certificate",
            tls_url(
                "localhost",
                &format!(
                    "sslmode=verify-full&sslrootcert={}&sslcert=/nonexistent/c.crt&sslkey=/nonexistent/c.key",
                    ca.display()
                ),
            ),
            "sslcert of --database-url (DATABASE_URL) names /nonexistent/c.crt",
        ),
        (
            "an unknown sslmode",
            tls_url("localhost", "sslmode=verify_full"),
            "parameter sslmode of --database-url",
        ),
    ];
    for (what, url, fragment) in cases {
        let r = timed(wait(&url, "30s"));
        check(what, &r, 78, FAST, fragment, pw);
    }
    let r = timed(wait(
        &tls_url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
        ),
        "30s",
    ));
    assert!(
        r.1.contains(&missing.display().to_string()),
        "the file is named\n{}",
        r.1
    );
}

#[test]
fn required_tls_never_falls_back_to_plaintext() {
    // The shared cluster has no TLS at all.
    let db = pg::shared(PgVersion::V17).create_db();
    let url = format!("{}?sslmode=require", db.url);
    let r = timed(wait(&url, "30s"));
    check(
        "require against a plaintext server",
        &r,
        78,
        FAST,
        "TLS",
        db.password(),
    );
}

#[test]
fn bad_libpq_variables_are_usage_errors_naming_them() {
    let db = pg::shared(PgVersion::V17).create_db();
    for (var, value) in [
        ("PGSSLMODE", "verify_full"),
        ("PGPORT", "54x32"),
        ("PGTARGETSESSIONATTRS", "writable"),
        ("PGCONNECT_TIMEOUT", "soon"),
        ("PGSSLCRL", "/etc/crl.pem"),
    ] {
        // No URL: a URL's own port (or sslmode…) would win over the
        // variable, and libpq does not read a variable it does not use.
        let mut c = wait_by_variables(&db);
        c.env(var, value);
        let r = timed(c);
        check(var, &r, 64, FAST, var, db.password());
        assert!(!r.1.contains(value), "{var}: the value is echoed\n{}", r.1);
    }
}

#[test]
fn libpq_variables_alone_reach_the_server() {
    let db = pg::shared(PgVersion::V17).create_db();
    let mut c = wait_by_variables(&db);
    c.env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "5")
        .env("PGAPPNAME", "pgboot-conninfo-test");
    let r = timed(c);
    check(
        "PG* variables",
        &r,
        0,
        Duration::from_secs(20),
        "ready",
        db.password(),
    );
}

#[test]
fn a_service_file_names_the_server() {
    let db = pg::shared(PgVersion::V17).create_db();
    let dir = TempDir::new("service");
    let file = dir.write(
        "pg_service.conf",
        &format!(
            "# test services\n[elsewhere]\nhost=192.0.2.1\n\n[app]\nhost=127.0.0.1\nport={}\ndbname={}\nuser=postgres\nsslmode=disable\n",
            db.port(),
            db.name
        ),
    );
    let service = |name: &str| {
        let mut c = pgboot(&["wait", "--wait-timeout", "20s"]);
        c.env("PGSERVICE", name)
            .env("PGSERVICEFILE", &file)
            .env("PGPASSWORD", db.password())
            .env("PGBOOT_LOG", "trace")
            .env("HOME", "/nonexistent");
        c
    };
    let r = timed(service("app"));
    check(
        "PGSERVICE",
        &r,
        0,
        Duration::from_secs(20),
        "ready",
        db.password(),
    );
    // A service defined nowhere is named, not ignored.
    let r = timed(service("nope"));
    check(
        "unknown PGSERVICE",
        &r,
        64,
        FAST,
        "PGSERVICE",
        db.password(),
    );
}

#[test]
fn a_unix_socket_url_connects() {
    let cluster = pg::shared(PgVersion::V17);
    let db = cluster.create_db();
    let dir = cluster.root_dir().display().to_string();
    let encoded = dir.replace('/', "%2F");
    for url in [
        format!(
            "postgresql://postgres@/{}?host={dir}&port={}",
            db.name,
            cluster.port()
        ),
        format!(
            "postgresql://postgres@{encoded}:{}/{}",
            cluster.port(),
            db.name
        ),
    ] {
        let r = timed(wait(&url, "20s"));
        check(
            &url,
            &r,
            0,
            Duration::from_secs(20),
            ".s.PGSQL.",
            db.password(),
        );
    }
}

/// A port on loopback where nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn several_hosts_are_tried_in_order() {
    let db = pg::shared(PgVersion::V17).create_db();
    let pw = db.password();
    // First host refuses: the second one answers at once.
    let url = format!(
        "postgres://postgres:{pw}@127.0.0.1:{},127.0.0.1:{}/{}",
        closed_port(),
        db.port(),
        db.name
    );
    let r = timed(wait(&url, "20s"));
    check(
        "first host down",
        &r,
        0,
        Duration::from_secs(10),
        "ready",
        pw,
    );

    // First host accepts TCP and never answers: connect_timeout (2 s, the
    // least libpq allows) moves on to the second.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgres:{pw}@127.0.0.1:{},127.0.0.1:{}/{}?connect_timeout=2",
        silent.local_addr().unwrap().port(),
        db.port(),
        db.name
    );
    let r = timed(wait(&url, "30s"));
    check(
        "first host silent",
        &r,
        0,
        Duration::from_secs(10),
        "ready",
        pw,
    );
    assert!(
        r.2 >= Duration::from_secs(2),
        "connect_timeout was waited out: {:?}",
        r.2
    );
    drop(silent);

    // No host answers: 69, naming each host:port tried.
    let (a, b) = (closed_port(), closed_port());
    let url = format!("postgres://postgres:{pw}@127.0.0.1:{a},127.0.0.1:{b}/x");
    let r = timed(wait(&url, "1s"));
    check(
        "no host",
        &r,
        69,
        Duration::from_secs(10),
        &format!("127.0.0.1:{a}"),
        pw,
    );
    assert!(r.1.contains(&format!("127.0.0.1:{b}")), "{}", r.1);
}

/// A Postgres 15 primary and a hot standby of it (Debian's 15 ships
/// `pg_basebackup`; the npm 17 does not).
fn primary_and_standby() -> (Cluster, Cluster) {
    let primary = Cluster::new(PgVersion::V15);
    primary.start();
    let standby = Cluster::standby_of(&primary);
    standby.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while standby
        .try_psql("postgres", "SELECT pg_is_in_recovery()")
        .as_deref()
        != Ok("t")
    {
        assert!(
            Instant::now() < deadline,
            "the standby never came up in recovery\n{}",
            standby.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (primary, standby)
}

#[test]
fn the_lock_and_migrations_go_to_the_writable_primary() {
    let (primary, standby) = primary_and_standby();
    let pw = primary.password();
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", standby.port(), primary.port());
    let migrations = TempDir::new("conninfo-migrations");
    migrations.write("1_create.sql", "CREATE TABLE conninfo_t (x int);");
    let dir = migrations.path().to_str().unwrap();

    // The standby first, no target_session_attrs: the lock target asks for
    // read-write all the same, so the migration runs on the primary.
    let url = format!("postgres://postgres:{pw}@{hosts}/postgres");
    let r = timed(migrate(&url, dir, "20s"));
    check(
        "migrate past a standby",
        &r,
        0,
        Duration::from_secs(30),
        "is a standby",
        pw,
    );
    assert_eq!(
        primary.psql("postgres", "SELECT count(*) FROM conninfo_t"),
        "0"
    );

    // Only the standby: transient (a failover may come), so 69 at the
    // deadline, saying what it found; nothing is migrated there.
    let url = format!(
        "postgres://postgres:{pw}@127.0.0.1:{}/postgres",
        standby.port()
    );
    let r = timed(migrate(&url, dir, "2s"));
    check(
        "only a standby",
        &r,
        69,
        Duration::from_secs(10),
        "is a standby",
        pw,
    );

    // Asking the lock target for a standby is a usage error.
    let url = format!("postgres://postgres:{pw}@{hosts}/postgres?target_session_attrs=standby");
    let mut c = pgboot(&["migrate", "--database-url", &url, "--migrations", dir]);
    c.env("HOME", "/nonexistent");
    let r = timed(c);
    check(
        "lock target asks for a standby",
        &r,
        64,
        FAST,
        "writable primary",
        pw,
    );

    // `wait` honours target_session_attrs as given: the primary is listed
    // first, and standby skips it.
    let url = format!(
        "postgres://postgres:{pw}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=standby",
        primary.port(),
        standby.port()
    );
    let r = timed(wait(&url, "20s"));
    check(
        "wait for a standby",
        &r,
        0,
        Duration::from_secs(20),
        "ready",
        pw,
    );
}

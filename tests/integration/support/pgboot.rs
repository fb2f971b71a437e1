//! Running pgboot itself in tests: as a plain child (subreaper path) or as a
//! real PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`),
//! with its output captured and every process stopped by pid.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The pgboot binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgboot")
}

/// Environment variables that would leak the developer's database into a test.
pub const SCRUB: &[&str] = &[
    "DATABASE_URL",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSERVICE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGPASSFILE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "RUST_LOG",
    "PGBOOT_LOG",
    "PGBOOT_LOG_FORMAT",
    "PGBOOT_MIGRATIONS",
    "PGBOOT_MIGRATE_CMD",
    "PGBOOT_MIGRATE_DATABASE_URL",
    "PGBOOT_LOCK_KEY",
    "PGBOOT_WAIT_TIMEOUT",
    "PGBOOT_LOCK_TIMEOUT",
    "PGBOOT_MIGRATE_TIMEOUT",
    "PGBOOT_DB_AHEAD",
    "PGBOOT_DDL_LOCK_TIMEOUT",
    "PGBOOT_DDL_RETRY_FOR",
    "PGBOOT_GRACE_PERIOD",
    "PGBOOT_SIGNAL_MAP",
    "PGBOOT_EXPAND_ENV",
    "PGBOOT_EXEC",
    "ALEMBIC_CONFIG",
];

/// `pgboot ARGS...` with a clean environment for pgboot's variables.
pub fn pgboot(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    for k in SCRUB {
        c.env_remove(k);
    }
    c
}

/// `unshare --pid --fork --mount-proc --kill-child -- pgboot ARGS...`: pgboot
/// is PID 1 of a new namespace. `unshare` does not forward signals: use
/// [`Running::ns_pid1`] to find pgboot's pid and signal it.
pub fn pgboot_pid1(args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        bin(),
    ]);
    c.args(args);
    for k in SCRUB {
        c.env_remove(k);
    }
    c
}

/// A running process with captured stdout and stderr. Dropping it kills its
/// process group (it is started in a group of its own) by pid.
pub struct Running {
    pub child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

impl Running {
    /// Starts `cmd` in its own process group with piped stdout/stderr
    /// (stdin from /dev/null unless the caller set it).
    pub fn start(mut cmd: Command) -> Running {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), stdout.clone()),
            pump(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Both streams, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Sends `sig` to the process itself.
    pub fn signal(&self, sig: i32) {
        send(self.pid(), sig);
    }

    /// The pid (in this namespace) of PID 1 of the namespace that `unshare`
    /// made: unshare's only child. Waits up to 5 s for it to appear.
    pub fn ns_pid1(&self) -> i32 {
        let pid = self.pid();
        let path = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = std::fs::read_to_string(&path)
                && let Some(p) = s.split_whitespace().next()
            {
                return p.parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "unshare {pid} has no child after 5 s\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `pred(stdout + stderr)` holds, or panics after `timeout`.
    pub fn wait_for_output(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let all = format!("{}{}", self.stdout(), self.stderr());
            if pred(&all) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit (bounded); `None` if still running at `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.status = Some(st);
                for r in self.readers.drain(..) {
                    // A grandchild holding the pipe must not hang the test.
                    let t0 = Instant::now();
                    while !r.is_finished() && t0.elapsed() < Duration::from_secs(2) {
                        thread::sleep(Duration::from_millis(5));
                    }
                    if r.is_finished() {
                        let _ = r.join();
                    }
                }
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the exit and returns the shell-style code (128+N for a signal).
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let st = self
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("still running after {timeout:?}\n{}", self.output()));
        st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            send(-self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// kill(2) on a pid or (negative) process group; ESRCH ignored.
#[allow(unsafe_code)]
pub fn send(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Runs `cmd` to completion (bounded), returning (code, stdout, stderr).
pub fn run(cmd: Command, timeout: Duration) -> (i32, String, String) {
    let mut r = Running::start(cmd);
    let code = r.exit_code(timeout);
    (code, r.stdout(), r.stderr())
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pgboot-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` (creating parent dirs) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The resident KiB of `pid`'s clean read-only mappings of its own
/// executable: not writable, no page of their own (`Anonymous: 0`). What the
/// lean supervisor gives back 10 ms into supervising; `None` when `pid`'s
/// smaps cannot be read.
pub fn clean_read_only_kib(pid: i32) -> Option<u64> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut ours, mut rss) = (0, false, 0);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            ours = !perms.contains('w') && std::path::Path::new(path) == exe;
        } else if ours && first == "Rss:" {
            rss = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        } else if ours && first == "Anonymous:" && f.next() == Some("0") {
            total += rss;
        }
    }
    Some(total)
}

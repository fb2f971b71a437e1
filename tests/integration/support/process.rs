//! Running a child process with a time limit, std only.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit status, stdout and stderr, for panic messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` to completion with piped stdout/stderr, feeding it `stdin` (or
/// /dev/null), and kills it if it is still running after `timeout`.
///
/// `Err` only when the command could not be spawned or timed out; a non-zero
/// exit is an `Ok` whose `status` says so. The output readers are waited for
/// with a bound too, so a grandchild that keeps the pipes open cannot hang
/// the caller.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Finished, String> {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let deadline = Instant::now() + timeout;

    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A child that exits without reading everything gives EPIPE: ignore.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = reader(child.stdout.take().expect("stdout is piped"));
    let stderr = reader(child.stderr.take().expect("stderr is piped"));

    let status = wait_until(&mut child, deadline);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let out = stdout
            .recv_timeout(Duration::from_millis(200))
            .unwrap_or_default();
        let err = stderr
            .recv_timeout(Duration::from_millis(200))
            .unwrap_or_default();
        return Err(format!(
            "{what} timed out after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.trim_end(),
            err.trim_end()
        ));
    };
    let grace = Duration::from_secs(5);
    let stdout = stdout.recv_timeout(grace).unwrap_or_default();
    let stderr = stderr.recv_timeout(grace).unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Polls `child` until it exits or `deadline` passes (then `None`).
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

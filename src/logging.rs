//! Logging: to stderr, text or one JSON object per line, every line
//! redacted.
//!
//! Needs a validated `LogConfig`. Each formatted event is buffered and
//! passed through `redact::redact_line` before it reaches stderr, so no
//! field, message or error can carry a password or forge a line, whatever
//! code logged it. COMMAND's own output never passes through here: the
//! child inherits pgboot's stdout and stderr untouched.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogConfig;
use crate::redact;

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::builder()
        .parse(&cfg.filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = !cfg.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr { ansi })
        .with_target(false);
    if cfg.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(ansi).init();
    }
}

/// Makes one [`RedactedLine`] per event.
struct RedactingStderr {
    ansi: bool,
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactedLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine {
            buf: Vec::with_capacity(256),
            ansi: self.ansi,
        }
    }
}

/// One event's bytes, redacted and written to stderr at once when dropped.
struct RedactedLine {
    buf: Vec<u8>,
    ansi: bool,
}

impl Write for RedactedLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = redact::redact_line(&String::from_utf8_lossy(&self.buf), self.ansi);
        // Nowhere to report a failed write to stderr.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

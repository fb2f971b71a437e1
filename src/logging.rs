//! Logging: to stderr, text or one JSON object per line, every line
//! redacted. Colour only in text, only on a terminal, and never with
//! `NO_COLOR` set; `CLICOLOR_FORCE` forces it (<https://no-color.org>,
//! <https://bixense.com/clicolors/>).
//!
//! Needs a validated `LogConfig`. Each formatted event is buffered and
//! passed through `redact::redact_line` before it reaches stderr, so no
//! field, message or error can carry a password or forge a line, whatever
//! code logged it. COMMAND's own output never passes through here: the
//! child inherits pgboot's stdout and stderr untouched.

use std::io::{self, Write};
use std::time::Duration;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogConfig;
use crate::redact;

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig) {
    let filter = parse_filter(&cfg.filter)
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let ansi = !cfg.json
        && colour(
            &|k| std::env::var(k).ok(),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        );
    // The level is the filter's to decide: the builder's own is opened wide.
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(RedactingStderr { ansi })
        .with_target(false);
    if cfg.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(filter)
            .init();
    } else {
        builder.with_ansi(ansi).finish().with(filter).init();
    }
}

/// Parses a log filter: a level (`debug`), and `target=level` directives
/// (`info,sqlx=warn,pgboot::lock=trace`), comma-separated: the part of
/// tracing's env-filter syntax that pgboot's logs can use. Its span and
/// field filters (`[span{field=value}]`) are not taken: pgboot opens no
/// span, and their matcher is a regular-expression engine, a tenth of the
/// binary (issue 12).
///
/// # Errors
/// The filter is malformed; the text says where.
pub fn parse_filter(filter: &str) -> Result<Targets, String> {
    if filter.contains(['[', ']', '{', '}']) {
        return Err(
            "span and field filters ([...] and {...}) are not supported, only a level and \
             target=level"
                .to_string(),
        );
    }
    filter.parse::<Targets>().map_err(|e| e.to_string())
}

/// Whether text lines are coloured: `NO_COLOR` (any non-empty value) wins,
/// then `CLICOLOR_FORCE` (any value but `0`), then whether stderr is a terminal.
fn colour(env: &dyn Fn(&str) -> Option<String>, terminal: bool) -> bool {
    if env("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if env("CLICOLOR_FORCE").is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    terminal
}

/// A duration as whole milliseconds for a log field: a `u64`, which the
/// JSON format writes as a number (a `u128` would become a string).
#[must_use]
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A set of names (Alembic revisions) as one field value: `a, b`, or `none`.
#[must_use]
pub fn list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_beats_a_terminal_and_clicolor_force_beats_a_pipe() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(colour(&env(&[]), true));
        assert!(!colour(&env(&[]), false));
        assert!(!colour(&env(&[("NO_COLOR", "1")]), true));
        assert!(colour(&env(&[("NO_COLOR", "")]), true));
        assert!(colour(&env(&[("CLICOLOR_FORCE", "1")]), false));
        assert!(!colour(&env(&[("CLICOLOR_FORCE", "0")]), false));
        assert!(!colour(
            &env(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]),
            true
        ));
    }

    #[test]
    fn filters_are_levels_and_target_directives() {
        use tracing::Level;
        let enabled = |filter: &str, target: &str, level: Level| {
            parse_filter(filter)
                .unwrap_or_else(|e| panic!("{filter}: {e}"))
                .would_enable(target, &level)
        };
        assert!(enabled("debug", "pgboot::wait", Level::DEBUG));
        assert!(!enabled("info", "pgboot::wait", Level::DEBUG));
        assert!(enabled("INFO", "pgboot::wait", Level::INFO));
        // A target is a prefix, on module boundaries as env-filter has it.
        assert!(enabled(
            "info,pgboot=debug",
            "pgboot::lock::watch",
            Level::DEBUG
        ));
        assert!(!enabled("info,pgboot=debug", "sqlx::query", Level::DEBUG));
        assert!(!enabled("debug,sqlx=warn", "sqlx::query", Level::INFO));
        assert!(enabled("debug,sqlx=warn", "pgboot", Level::DEBUG));
        assert!(!enabled("off", "pgboot", Level::ERROR));
        // The most specific directive wins, in any order.
        assert!(!enabled(
            "pgboot::lock=warn,pgboot=trace",
            "pgboot::lock",
            Level::INFO
        ));
        assert!(enabled(
            "pgboot::lock=warn,pgboot=trace",
            "pgboot::wait",
            Level::TRACE
        ));
        for bad in ["pgboot=loud", "pgboot[lock]=debug", "[{pid=1}]", "a=b=c"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_whole_milliseconds() {
        assert_eq!(ms(Duration::from_micros(22_900)), 22);
        assert_eq!(ms(Duration::MAX), u64::MAX);
        assert_eq!(list(["a", "b"]), "a, b");
        assert_eq!(list(Vec::<String>::new()), "none");
    }
}

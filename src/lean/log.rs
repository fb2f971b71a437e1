//! The lean supervisor's log lines: a `tracing` subscriber of a few dozen
//! lines that writes what `tracing-subscriber`'s fmt layer writes for
//! pgboot's configuration (`logging.rs`): text
//! (`2026-12-02T06:12:23.557025Z  INFO message key=value`) or one JSON object
//! per line (`{"timestamp":…,"level":…,"message":…,fields}`), to stderr.
//!
//! Why not `tracing-subscriber` itself: its formatting, filtering and
//! registry code would be paged in for the weeks the supervisor lives
//! (issue 12). The supervise loop logs through the `tracing` macros as it
//! does in the full binary, so its lines are the same; spans are not used
//! there, so none are recorded.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One line per event, text or JSON, for events at `max` or more severe.
pub struct Lines {
    json: bool,
    max: LevelFilter,
}

/// Installs [`Lines`] as the global subscriber.
pub fn install(json: bool, max: LevelFilter) {
    // Fails only if a subscriber is set already: then that one logs.
    let _ = tracing::subscriber::set_global_default(Lines { json, max });
}

impl Subscriber for Lines {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.max >= *meta.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = if self.json {
            json_line(event)
        } else {
            text_line(event)
        };
        // One write per line: lines of concurrent writers do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn text_line(event: &Event<'_>) -> String {
    let mut v = Text {
        message: String::new(),
        fields: String::new(),
    };
    event.record(&mut v);
    format!(
        "{} {:>5} {}{}\n",
        timestamp(SystemTime::now()),
        event.metadata().level(),
        v.message,
        v.fields
    )
}

/// `message` first, then ` key=value` for each field; strings quoted,
/// `%display` and numbers bare, as `tracing-subscriber` prints them.
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

fn json_line(event: &Event<'_>) -> String {
    let mut v = Json { out: String::new() };
    let _ = write!(
        v.out,
        "{{\"timestamp\":\"{}\",\"level\":\"{}\"",
        timestamp(SystemTime::now()),
        event.metadata().level()
    );
    event.record(&mut v);
    v.out.push_str("}\n");
    v.out
}

/// `,"key":value` for each field: numbers and booleans as JSON numbers and
/// booleans, everything else as a JSON string.
struct Json {
    out: String,
}

impl Json {
    fn key(&mut self, field: &Field) {
        self.out.push(',');
        push_json_string(&mut self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for Json {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_string(&mut self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        push_json_string(&mut self.out, &format!("{value:?}"));
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 in UTC with microseconds, `tracing-subscriber`'s default:
/// `2026-12-02T06:12:23.557025Z`.
fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = crate::civil::from_days(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// The level name the handover carries (`LevelFilter`'s own `Display`).
#[must_use]
pub fn level_name(l: LevelFilter) -> &'static str {
    match l.into_level() {
        None => "off",
        Some(Level::ERROR) => "error",
        Some(Level::WARN) => "warn",
        Some(Level::INFO) => "info",
        Some(Level::DEBUG) => "debug",
        Some(Level::TRACE) => "trace",
    }
}

/// A bare level name (`info`, `DEBUG`, `off`…), as `--log-level` takes it.
#[must_use]
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::OFF),
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_796_192_743, 557_025_123);
        assert_eq!(timestamp(t), "2026-12-02T06:25:43.557025Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_hours(264_384);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn levels_round_trip() {
        for l in [
            LevelFilter::OFF,
            LevelFilter::ERROR,
            LevelFilter::WARN,
            LevelFilter::INFO,
            LevelFilter::DEBUG,
            LevelFilter::TRACE,
        ] {
            assert_eq!(parse_level(level_name(l)), Some(l));
        }
        assert_eq!(parse_level(" DEBUG "), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("pgboot=debug"), None);
    }
}

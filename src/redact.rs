//! Redaction: the one routine every log line and error message passes
//! through before it is written (`logging.rs` applies it to each formatted
//! line, `main` to errors printed before logging exists).
//!
//! Needs the secrets pgboot was configured with ([`add_secret`]: the
//! passwords of the database URLs and `PGPASSWORD`). Returns the text with
//! - the password of every URL in it masked (`scheme://user:***@host`),
//! - password-like URL or connection-string parameters masked
//!   (`password=***`, `sslpassword=***`, …),
//! - every configured secret masked wherever it appears,
//! - control characters escaped, so that a newline in a database name, a
//!   file name or an argument cannot forge a log line.
//!
//! [`Redacted`] wraps a value (a URL, COMMAND) whose `Display` is redacted,
//! for the places that format one into a message.

use std::fmt;
use std::sync::{Mutex, OnceLock};

/// What replaces a secret.
pub const MASK: &str = "***";

/// Parameter names whose values are secrets: libpq's `password` and
/// `sslpassword`, and the spellings people use for them by mistake.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "apikey",
    "api_key",
    "access_key",
];

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers a secret to mask wherever it appears. Secrets shorter than 3
/// characters would mask ordinary text, so they are only masked where they
/// appear as a URL's password or a parameter's value.
pub fn add_secret(secret: &str) {
    if secret.chars().count() < 3 {
        return;
    }
    let mut s = secrets()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !s.iter().any(|k| k == secret) {
        s.push(secret.to_owned());
        // Longer first: a secret that contains another is masked whole.
        s.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Remembers the password of `url` (raw and percent-decoded) as a secret.
pub fn add_url_secrets(url: &str) {
    for pw in url_passwords(url) {
        add_secret(&pw);
    }
}

/// Remembers the secrets pgboot is started with, before anything is parsed
/// or logged: `PGPASSWORD`, the passwords of the URLs in `DATABASE_URL` and
/// `PGBOOT_MIGRATE_DATABASE_URL`, and those of any URL in the arguments.
pub fn add_startup_secrets() {
    if let Some(pw) = std::env::var_os("PGPASSWORD") {
        add_secret(&pw.to_string_lossy());
    }
    for var in [
        "DATABASE_URL",
        "PGBOOT_MIGRATE_DATABASE_URL",
        "PGBOOT_MIGRATE_CMD",
    ] {
        if let Some(v) = std::env::var_os(var) {
            add_url_secrets(&v.to_string_lossy());
        }
    }
    for arg in std::env::args_os().skip(1) {
        add_url_secrets(&arg.to_string_lossy());
    }
}

/// The passwords of the URLs in `text`, raw and percent-decoded.
#[must_use]
pub fn url_passwords(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (start, end) in userinfo_passwords(text) {
        let raw = &text[start..end];
        out.push(raw.to_owned());
        let decoded = percent_decode(raw);
        if decoded != raw {
            out.push(decoded);
        }
    }
    for (start, end) in secret_params(text) {
        out.push(text[start..end].to_owned());
    }
    out
}

/// Masks every secret in `text` and escapes its control characters.
#[must_use]
pub fn redact(text: &str) -> String {
    escape_controls(&mask(text), false)
}

/// Like [`redact`], for a whole formatted log line: its final newline stays,
/// and the escape character stays when `keep_escape` (the terminal's colours).
#[must_use]
pub fn redact_line(line: &str, keep_escape: bool) -> String {
    let (body, newline) = match line.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (line, ""),
    };
    let mut out = escape_controls(&mask(body), keep_escape);
    out.push_str(newline);
    out
}

/// Masks URL passwords, secret parameters and configured secrets.
fn mask(text: &str) -> String {
    let mut spans: Vec<(usize, usize)> = userinfo_passwords(text);
    spans.extend(secret_params(text));
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(MASK);
        at = end;
    }
    out.push_str(&text[at..]);
    let known = secrets()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for s in known.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Byte ranges of the passwords in `scheme://user:password@host` forms.
fn userinfo_passwords(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let auth_start = from + i + 3;
        // The authority ends at the first '/', '?', '#' or a character that
        // cannot be in a URL; the userinfo ends at its last '@'.
        let auth_len = text[auth_start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#')
                    || c.is_whitespace()
                    || c == '"'
                    || c == '\''
                    || c == '`'
            })
            .unwrap_or(text.len() - auth_start);
        let authority = &text[auth_start..auth_start + auth_len];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                let start = auth_start + colon + 1;
                let end = auth_start + at;
                if end > start {
                    spans.push((start, end));
                }
            }
        }
        from = auth_start;
    }
    spans
}

/// Byte ranges of the values of secret parameters: `password=…` in a URL's
/// query (up to `&`, `#`, white space or a quote) or in a libpq
/// `key=value` connection string (up to white space, or a quoted value).
fn secret_params(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut spans = Vec::new();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(i) = lower[from..].find(key) {
            let k = from + i;
            from = k + key.len();
            let before_ok = k == 0 || !is_key_char(bytes[k - 1]);
            let mut v = k + key.len();
            while v < bytes.len() && bytes[v] == b' ' {
                v += 1;
            }
            if !before_ok || v >= bytes.len() || bytes[v] != b'=' {
                continue;
            }
            v += 1;
            while v < bytes.len() && bytes[v] == b' ' {
                v += 1;
            }
            let (start, end) = if v < bytes.len() && (bytes[v] == b'\'' || bytes[v] == b'"') {
                let q = bytes[v];
                let end = lower[v + 1..]
                    .find(char::from(q))
                    .map_or(bytes.len(), |e| v + 1 + e);
                (v + 1, end)
            } else {
                let end = lower[v..]
                    .find(|c: char| {
                        matches!(c, '&' | '#' | '"' | '\'' | '`' | ',' | ';') || c.is_whitespace()
                    })
                    .map_or(bytes.len(), |e| v + e);
                (v, end)
            };
            if end > start {
                spans.push((start, end));
            }
        }
    }
    spans
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Escapes control characters as `\n`, `\r`, `\t` or `\u{XX}`.
fn escape_controls(text: &str, keep_escape: bool) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' if keep_escape => out.push(c),
            c if c.is_control() => {
                use fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Decodes `%XX` escapes; anything else stays as it is.
#[must_use]
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A value whose `Display` is redacted: a URL, an argv, anything that may
/// hold a secret. Nothing formats the raw value into a message.
pub struct Redacted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_in_any_scheme_and_position() {
        assert_eq!(
            redact("connect postgres://app:s3cr%40t@db:5432/app now"),
            "connect postgres://app:***@db:5432/app now"
        );
        assert_eq!(
            redact("a postgresql://u:p@h/d and redis://:tok@cache:6379/0"),
            "a postgresql://u:***@h/d and redis://:***@cache:6379/0"
        );
        assert_eq!(redact("postgres://user@db/app"), "postgres://user@db/app");
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
        // An '@' in the password, unencoded: the userinfo ends at the last '@'.
        assert_eq!(redact("postgres://u:p@ss@db/x"), "postgres://u:***@db/x");
    }

    #[test]
    fn secret_parameters_are_masked() {
        assert_eq!(
            redact("postgres://db/app?sslmode=require&password=hunter2&x=1"),
            "postgres://db/app?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact("unknown parameter sslpassword=abc; paswd=x"),
            "unknown parameter sslpassword=***; paswd=x"
        );
        assert_eq!(
            redact("host=db password='a b c' user=app"),
            "host=db password='***' user=app"
        );
        assert_eq!(redact("PGPASSWORD = top"), "PGPASSWORD = top");
        assert_eq!(redact("pgpassword=top"), "pgpassword=top");
    }

    #[test]
    fn configured_secrets_are_masked_anywhere() {
        add_secret("correct-horse-battery");
        add_secret("xy");
        assert_eq!(
            redact("argv: --token correct-horse-battery; xy stays"),
            "argv: --token ***; xy stays"
        );
        add_url_secrets("postgres://app:p%2Fw0rd!@db/app");
        assert_eq!(redact("p/w0rd! and p%2Fw0rd!"), "*** and ***");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(
            redact("db \"x\n2026-01-01 INFO forged\""),
            "db \"x\\n2026-01-01 INFO forged\""
        );
        assert_eq!(redact("a\u{7}b\tc\r"), "a\\u{7}b\\tc\\r");
        assert_eq!(redact_line("one\ntwo\n", false), "one\\ntwo\n");
        assert_eq!(redact_line("\u{1b}[1mbold\n", true), "\u{1b}[1mbold\n");
        assert_eq!(redact_line("\u{1b}[1mbold\n", false), "\\u{1b}[1mbold\n");
    }

    #[test]
    fn redacted_displays_masked() {
        let shown = format!("{}", Redacted("postgres://a:b1c2@h/d"));
        assert_eq!(shown, "postgres://a:***@h/d");
    }
}

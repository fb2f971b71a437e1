//! `pgboot supervise`'s arguments read without clap, for the common case.
//!
//! Accepts only what it reads exactly as `config.rs` does: `supervise`, then
//! `--grace-period`, `--signal-map`, `--expand-env`, `--log-format` and a
//! bare-level `--log-level` (each at most once, as `--flag VALUE` or
//! `--flag=VALUE`), the same variables (`PGBOOT_GRACE_PERIOD`,
//! `PGBOOT_SIGNAL_MAP`, `PGBOOT_LOG_FORMAT`, `PGBOOT_LOG`, `RUST_LOG`), then
//! `--` and COMMAND. It parses values with `config.rs`'s own functions.
//! Anything else — `--help`, an unknown or repeated flag, a value that does
//! not parse, `PGBOOT_EXPAND_ENV`, a filter with targets — returns `None`,
//! and the full parser takes over: it alone words the usage errors.

use std::collections::BTreeMap;
use std::ffi::OsString;

use tracing::level_filters::LevelFilter;

use crate::config::{self, SuperviseConfig};
use crate::signals;

/// What `pgboot supervise` was asked to do.
pub struct Supervise {
    pub sup: SuperviseConfig,
    pub json: bool,
    pub level: LevelFilter,
}

#[derive(Default)]
struct Flags {
    grace_period: Option<String>,
    signal_map: Option<String>,
    expand_env: bool,
    log_format: Option<String>,
    log_level: Option<String>,
}

/// Reads `args` (without argv\[0\]) and `env`; `None` when the full parser
/// must decide.
pub fn parse(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<Supervise> {
    let (first, rest) = args.split_first()?;
    if first != "supervise" {
        return None;
    }
    let dash = rest.iter().position(|a| a == "--")?;
    let (flags, command) = (&rest[..dash], &rest[dash + 1..]);
    let f = read_flags(flags)?;
    if command.first().is_none_or(|c| c.is_empty()) || env("PGBOOT_EXPAND_ENV").is_some() {
        return None;
    }
    let value = |flag: Option<String>, var: &str| -> Option<Option<String>> {
        match flag {
            Some(v) => Some(Some(v)),
            // An empty variable: clap's reading of it is the reference.
            None => match env(var) {
                Some(v) if v.is_empty() => None,
                v => Some(v),
            },
        }
    };
    let grace_period = match value(f.grace_period, "PGBOOT_GRACE_PERIOD")?.as_deref() {
        None | Some("") => None,
        Some(v) => Some(config::parse_duration(v).ok()?),
    };
    let signal_map = match value(f.signal_map, "PGBOOT_SIGNAL_MAP")?.as_deref() {
        None | Some("") => BTreeMap::new(),
        Some(v) => signals::parse_map(v).ok()?,
    };
    let json = match value(f.log_format, "PGBOOT_LOG_FORMAT")?
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("text") => false,
        Some("json") => true,
        Some(_) => return None,
    };
    let level = match f.log_level {
        Some(v) => super::log::parse_level(&v)?,
        None => match ["PGBOOT_LOG", "RUST_LOG"]
            .into_iter()
            .find_map(|k| env(k).filter(|v| !v.is_empty()))
        {
            Some(v) => super::log::parse_level(&v)?,
            None => LevelFilter::INFO,
        },
    };
    let command = if f.expand_env {
        command
            .iter()
            .map(|raw| match raw.to_str() {
                Some(arg) => config::expand(arg, env).ok().map(OsString::from),
                None => Some(raw.clone()),
            })
            .collect::<Option<Vec<_>>>()?
    } else {
        command.to_vec()
    };
    Some(Supervise {
        sup: SuperviseConfig {
            command,
            grace_period,
            signal_map,
        },
        json,
        level,
    })
}

fn read_flags(flags: &[OsString]) -> Option<Flags> {
    let mut f = Flags::default();
    let mut it = flags.iter();
    while let Some(arg) = it.next() {
        let arg = arg.to_str()?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg, None),
        };
        if name == "--expand-env" {
            if inline.is_some() || f.expand_env {
                return None;
            }
            f.expand_env = true;
            continue;
        }
        let slot = match name {
            "--grace-period" => &mut f.grace_period,
            "--signal-map" => &mut f.signal_map,
            "--log-format" => &mut f.log_format,
            "--log-level" => &mut f.log_level,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        let v = match inline {
            Some(v) => v,
            // A value that looks like a flag is clap's call to make.
            None => it
                .next()?
                .to_str()
                .filter(|v| !v.starts_with('-'))?
                .to_string(),
        };
        *slot = Some(v);
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn reads_flags_variables_and_the_command() {
        let s = parse(
            &os(&[
                "supervise",
                "--grace-period=5s",
                "--signal-map",
                "TERM:QUIT",
                "--",
                "sleep",
                "1",
            ]),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.sup.grace_period, Some(Duration::from_secs(5)));
        assert_eq!(s.sup.signal_map[&libc::SIGTERM], libc::SIGQUIT);
        assert_eq!(s.sup.command, os(&["sleep", "1"]));
        assert!(!s.json);
        assert_eq!(s.level, LevelFilter::INFO);

        let env = |k: &str| match k {
            "PGBOOT_GRACE_PERIOD" => Some("90".to_string()),
            "PGBOOT_LOG_FORMAT" => Some("JSON".to_string()),
            "RUST_LOG" => Some("debug".to_string()),
            _ => None,
        };
        let s = parse(&os(&["supervise", "--", "true"]), &env).unwrap();
        assert_eq!(s.sup.grace_period, Some(Duration::from_secs(90)));
        assert!(s.json);
        assert_eq!(s.level, LevelFilter::DEBUG);
    }

    #[test]
    fn leaves_to_the_full_parser_what_it_does_not_read_exactly() {
        for args in [
            &["supervise", "--help"][..],
            &["supervise", "true"],
            &["supervise", "--"],
            &["supervise", "--bogus", "--", "true"],
            &["supervise", "--grace-period", "soon", "--", "true"],
            &[
                "supervise",
                "--grace-period",
                "1",
                "--grace-period",
                "2",
                "--",
                "true",
            ],
            &["supervise", "--signal-map", "BOGUS:TERM", "--", "true"],
            &["supervise", "--log-level", "pgboot=debug", "--", "true"],
            &["supervise", "--log-format", "xml", "--", "true"],
            &["supervise", "--expand-env", "--", "echo", "$NOPE_UNSET"],
            &["--", "true"],
            &["wait"],
        ] {
            assert!(parse(&os(args), &no_env).is_none(), "{args:?}");
        }
        let env = |k: &str| (k == "PGBOOT_EXPAND_ENV").then(|| "1".to_string());
        assert!(parse(&os(&["supervise", "--", "true"]), &env).is_none());
    }

    #[test]
    fn expands_the_command_like_the_full_parser() {
        let env = |k: &str| (k == "PORT").then(|| "8000".to_string());
        let s = parse(
            &os(&[
                "supervise",
                "--expand-env",
                "--",
                "serve",
                "--port=$PORT",
                "${HOST:-0.0.0.0}",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(s.sup.command, os(&["serve", "--port=8000", "0.0.0.0"]));
    }
}

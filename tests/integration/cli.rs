//! The command line as users meet it: `--help` and the README say the same
//! thing, usage errors exit 64 naming the flag or variable, `--version`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::pgboot::{pgboot, run};

const T: Duration = Duration::from_secs(10);

fn help(args: &[&str]) -> String {
    let (code, out, err) = run(pgboot(args), T);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// One option as `--help` shows it: its environment variable and default.
#[derive(Debug, PartialEq)]
struct Opt {
    env: Option<String>,
    default: Option<String>,
}

fn help_options(text: &str) -> BTreeMap<String, Opt> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with("      --") || line.starts_with("  -") {
            let flag = t
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap()
                .trim_end_matches(',')
                .to_string();
            if flag == "--help" || flag == "--version" {
                current = None;
                continue;
            }
            let inline_env = t
                .split_once("[env: ")
                .map(|(_, r)| r.split(']').next().unwrap().to_string());
            out.insert(
                flag.clone(),
                Opt {
                    env: inline_env,
                    default: None,
                },
            );
            current = Some(flag);
        } else if let Some(flag) = &current {
            let o = out.get_mut(flag).unwrap();
            if let Some(r) = t.strip_prefix("[env: ") {
                o.env = Some(r.trim_end_matches(']').to_string());
            } else if let Some(r) = t.strip_prefix("[default: ") {
                o.default = Some(r.trim_end_matches(']').to_string());
            }
            if let Some((_, r)) = t.split_once("[env: ")
                && o.env.is_none()
            {
                o.env = Some(r.split(']').next().unwrap().to_string());
            }
            if let Some((_, r)) = t.split_once("[default: ")
                && o.default.is_none()
            {
                o.default = Some(r.split(']').next().unwrap().to_string());
            }
        }
    }
    out
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The rows of the README table whose header starts with `header`.
fn readme_table(header: &str) -> Vec<Vec<String>> {
    let text = readme();
    let mut rows = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with(header) {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with('|') {
                break;
            }
            if line.starts_with("|---") {
                continue;
            }
            rows.push(
                line.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_string())
                    .collect(),
            );
        }
    }
    assert!(!rows.is_empty(), "no README table with header {header:?}");
    rows
}

fn unquote(s: &str) -> String {
    s.replace('`', "")
}

#[test]
fn readme_configuration_table_matches_help() {
    let mut from_help = help_options(&help(&["--help"]));
    // Flags of one command (no environment variable), and defaults one
    // command sets apart, are in a table of their own.
    let per_command = readme_table("| command | flag | meaning |");
    for row in &per_command {
        let (sub, flag) = (unquote(&row[0]), unquote(&row[1]));
        let opts = help_options(&help(&[&sub, "--help"]));
        let opt = opts
            .get(&flag)
            .unwrap_or_else(|| panic!("README: `{sub} {flag}` is not in `{sub} --help`"));
        if let Some(d) = &opt.default {
            assert!(
                row[2].contains(d.as_str()),
                "README: `{sub} {flag}` default {d} unsaid"
            );
        }
    }
    for sub in ["supervise", "wait", "migrate", "status", "run", "new"] {
        for (flag, opt) in help_options(&help(&[sub, "--help"])) {
            if per_command
                .iter()
                .any(|r| unquote(&r[0]) == sub && unquote(&r[1]) == flag)
            {
                continue;
            }
            let prev = from_help.get(&flag);
            assert!(
                prev.is_none_or(|p| *p == opt),
                "{sub} --help disagrees with pgboot --help on {flag}: {opt:?} vs {prev:?}"
            );
            from_help.entry(flag).or_insert(opt);
        }
    }
    let rows = readme_table("| flag | environment | default | meaning |");
    let mut in_readme = BTreeMap::new();
    for row in &rows {
        in_readme.insert(unquote(&row[0]), (unquote(&row[1]), unquote(&row[2])));
    }
    let help_flags: Vec<&String> = from_help.keys().collect();
    let readme_flags: Vec<&String> = in_readme.keys().collect();
    assert_eq!(
        help_flags, readme_flags,
        "the README's flags differ from --help's"
    );
    for (flag, opt) in &from_help {
        let (env, default) = &in_readme[flag];
        match &opt.env {
            Some(e) => assert_eq!(env, e, "{flag}: README says env {env}, --help says {e}"),
            None => panic!("{flag} has no environment variable in --help"),
        }
        if let Some(d) = &opt.default {
            assert_eq!(
                default, d,
                "{flag}: README default {default:?}, --help {d:?}"
            );
        }
    }
}

#[test]
fn readme_exit_codes_match_help() {
    let text = help(&["--help"]);
    let codes_section = text
        .split("Exit codes:")
        .nth(1)
        .expect("--help lists exit codes");
    let mut from_help: Vec<(String, String)> = Vec::new();
    for line in codes_section.lines().filter(|l| l.starts_with("  ")) {
        let t = line.trim();
        let first = t.split_whitespace().next().unwrap_or("");
        let is_code =
            first.starts_with("the") || first.chars().next().is_some_and(|c| c.is_ascii_digit());
        if !is_code {
            // clap wraps long lines: this continues the previous entry.
            from_help
                .last_mut()
                .expect("a code first")
                .1
                .push_str(&format!(" {t}"));
        } else if let Some(rest) = t.strip_prefix("the child's") {
            from_help.push(("the child's".to_string(), rest.trim().to_string()));
        } else {
            let (c, m) = t.split_once(' ').unwrap();
            from_help.push((c.to_string(), m.trim().to_string()));
        }
    }
    let from_readme: Vec<(String, String)> = readme_table("| code | meaning |")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(from_help, from_readme);
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = run(pgboot(&["--version"]), T);
    assert_eq!(code, 0);
    // The build details that follow are checked in packaging.rs.
    assert!(
        out.trim()
            .starts_with(&format!("pgboot {} (", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

fn usage(cmd: std::process::Command) -> String {
    let (code, out, err) = run(cmd, T);
    assert_eq!(code, 64, "expected a usage error\n{out}\n{err}");
    err
}

#[test]
fn bad_environment_values_are_named_by_their_variable() {
    for (var, value) in [
        ("PGBOOT_WAIT_TIMEOUT", "forever"),
        ("PGBOOT_LOCK_TIMEOUT", "10 parsecs"),
        ("PGBOOT_DB_AHEAD", "sometimes"),
        ("PGBOOT_LOG_FORMAT", "xml"),
        ("PGBOOT_MIGRATE_TIMEOUT", "-1"),
    ] {
        let mut c = pgboot(&["migrate"]);
        c.env(var, value);
        let err = usage(c);
        assert!(err.contains(var) && err.contains(value), "{var}: {err}");
    }
    let mut c = pgboot(&["supervise", "--", "true"]);
    c.env("PGBOOT_SIGNAL_MAP", "TERM:NOPE");
    let err = usage(c);
    assert!(
        err.contains("PGBOOT_SIGNAL_MAP") && err.contains("NOPE"),
        "{err}"
    );
}

#[test]
fn bad_flag_values_are_named_by_their_flag() {
    let err = usage(pgboot(&["wait", "--wait-timeout", "soon"]));
    assert!(
        err.contains("--wait-timeout") && err.contains("soon"),
        "{err}"
    );
    let err = usage(pgboot(&["migrate", "--migrate-cmd", "alembic 'upgrade"]));
    assert!(err.contains("--migrate-cmd"), "{err}");
    let err = usage(pgboot(&[
        "migrate",
        "--migrations",
        "m",
        "--migrate-cmd",
        "x",
    ]));
    assert!(err.contains("both"), "{err}");
    let err = usage(pgboot(&["--bogus-flag"]));
    assert!(err.contains("--bogus-flag"), "{err}");
}

#[test]
fn log_filters_take_levels_and_targets_and_refuse_the_rest_by_name() {
    // Accepted: the run goes on past the configuration (a clean exit here).
    for filter in ["debug", "info,sqlx=warn", "pgboot::lock=trace,warn"] {
        let mut c = pgboot(&["supervise", "--", "true"]);
        c.env("PGBOOT_LOG", filter);
        let (code, _, err) = run(c, T);
        assert_eq!(code, 0, "{filter}: {err}");
    }
    for (filter, says) in [
        ("pgboot=loud", "expected one of"),
        ("pgboot[migrate]=debug", "span and field filters"),
        ("[{pid=1}]=trace", "span and field filters"),
    ] {
        let mut c = pgboot(&["supervise", "--", "true"]);
        c.env("RUST_LOG", filter);
        let err = usage(c);
        assert!(
            err.contains("RUST_LOG") && err.contains(says),
            "{filter}: {err}"
        );
        let err = usage(pgboot(&["wait", "--log-level", filter]));
        assert!(
            err.contains("--log-level") && err.contains(says),
            "{filter}: {err}"
        );
    }
}

#[test]
fn boot_without_a_database_points_to_supervise() {
    let err = usage(pgboot(&["--", "true"]));
    assert!(err.contains("pgboot supervise"), "{err}");
}

#[test]
fn a_flag_wins_over_its_environment_variable() {
    // The variable is bad, the flag good: the flag is used, so no usage error.
    let mut c = pgboot(&["supervise", "--grace-period", "1s", "--", "true"]);
    c.env("PGBOOT_GRACE_PERIOD", "bad");
    let (code, _, err) = run(c, T);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut c = pgboot(&["wait", "--wait-timeout", "1s", "--log-format", "json"]);
    c.env("DATABASE_URL", "postgres://u:pw@127.0.0.1:1/db");
    let (code, _, err) = run(c, T);
    assert_eq!(code, 69, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON object: {l}"
        );
        for key in ["\"timestamp\"", "\"level\"", "\"message\""] {
            assert!(l.contains(key), "{key} missing: {l}");
        }
    }
}

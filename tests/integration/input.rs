//! Bad and hostile input: every case gets its documented exit code fast,
//! a message that says what is wrong, no change to the database, and no
//! password in any line pgboot prints — checked at trace level, in text and
//! in JSON. Also what children see of pgboot's configuration: the URL pgboot
//! used as `DATABASE_URL`, and never the direct `--migrate-database-url`.
//!
//! Postgres is either the shared 17 cluster (cases that must not touch it
//! check it afterwards) or a port where nothing listens (cases that must
//! fail before waiting: they would otherwise take the whole `--wait-timeout`).

use std::time::{Duration, Instant};

use crate::boot::{exists, migrations, path_str, recorded};
use crate::support::pg::{PgVersion, TestDb, shared};
use crate::support::pgboot::{TempDir, pgboot, run};

/// A password that must never be printed.
const SECRET: &str = "Sup3r-s3cret-pw";
/// A URL whose Postgres is not there (port 1 refuses at once).
const DOWN_URL: &str = "postgres://app:Sup3r-s3cret-pw@127.0.0.1:1/app";

/// One input case: pgboot's arguments, what it must answer, how fast.
struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    within: Duration,
    says: &'static str,
}

fn case(name: &'static str, args: &[&str], code: i32, within_s: u64, says: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(ToString::to_string).collect(),
        code,
        within: Duration::from_secs(within_s),
        says,
    }
}

/// Runs `c` in text and in JSON at trace level; checks code, time, message
/// and that the secret appears nowhere.
fn check(c: &Case) {
    for format in ["text", "json"] {
        let mut args: Vec<&str> = vec!["--log-level", "trace", "--log-format", format];
        // Subcommands take their flags after the subcommand's name.
        let at = usize::from(matches!(
            c.args.first().map(String::as_str),
            Some("wait" | "migrate" | "status" | "run" | "supervise")
        ));
        let mut all: Vec<&str> = c.args[..at].iter().map(String::as_str).collect();
        all.append(&mut args);
        all.extend(c.args[at..].iter().map(String::as_str));
        let t = Instant::now();
        let (code, out, err) = run(pgboot(&all), c.within + Duration::from_secs(30));
        let took = t.elapsed();
        let shown = format!(
            "[{} / {format}] exit {code} in {took:?}\n{out}\n{err}",
            c.name
        );
        assert_eq!(code, c.code, "{shown}");
        assert!(took <= c.within, "too slow: {shown}");
        assert!(err.contains(c.says), "missing {:?}: {shown}", c.says);
        assert!(
            !out.contains(SECRET) && !err.contains(SECRET),
            "the password was printed: {shown}"
        );
    }
}

#[test]
#[allow(clippy::too_many_lines, reason = "one table of cases")]
fn bad_local_input_is_refused_before_waiting_with_the_documented_code_and_no_secret() {
    let dir = TempDir::new("input");
    let empty_file = migrations(&[("1_empty.sql", "-- nothing here yet\n")]);
    let two_in_one = migrations(&[(
        "1_cic.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\nCREATE INDEX CONCURRENTLY b ON t (y);\n",
    )]);
    let not_exec = dir.write("server.sh", "#!/bin/sh\necho hi\n");
    let cases = [
        case(
            "a duration past the maximum",
            &[
                "--database-url",
                DOWN_URL,
                "--wait-timeout",
                "18446744073709551615",
                "--",
                "true",
            ],
            64,
            5,
            "longer than the maximum",
        ),
        case(
            "a huge --migrate-timeout",
            &[
                "--database-url",
                DOWN_URL,
                "--migrate-timeout",
                "400d",
                "--migrate-cmd",
                "true",
                "--",
                "true",
            ],
            64,
            5,
            "--migrate-timeout",
        ),
        case(
            "a missing migrations directory",
            &[
                "--database-url",
                DOWN_URL,
                "--migrations",
                "/nonexistent/pgboot",
                "--",
                "true",
            ],
            64,
            5,
            "no such directory",
        ),
        case(
            "an empty migration file",
            &[
                "--database-url",
                DOWN_URL,
                "--migrations",
                path_str(empty_file.path()),
                "--",
                "true",
            ],
            65,
            5,
            "holds no SQL statement",
        ),
        case(
            "two statements in a no-transaction file",
            &[
                "--database-url",
                DOWN_URL,
                "--migrations",
                path_str(two_in_one.path()),
                "--",
                "true",
            ],
            65,
            5,
            "holds 2 statements",
        ),
        case(
            "COMMAND not found",
            &[
                "--database-url",
                DOWN_URL,
                "--migrate-cmd",
                "true",
                "--",
                "no-such-server-pgboot",
            ],
            127,
            5,
            "not found in PATH",
        ),
        case(
            "COMMAND not executable",
            &[
                "--database-url",
                DOWN_URL,
                "--migrate-cmd",
                "true",
                "--",
                path_str(&not_exec),
            ],
            126,
            5,
            "cannot be executed",
        ),
        case(
            "the migration command not found",
            &[
                "--database-url",
                DOWN_URL,
                "--migrate-cmd",
                "no-such-migrator-pgboot up",
                "--",
                "true",
            ],
            127,
            5,
            "--migrate-cmd",
        ),
        case(
            "unbalanced quotes around a URL in --migrate-cmd",
            &[
                "--database-url",
                DOWN_URL,
                "--migrate-cmd",
                &format!("psql '{DOWN_URL}"),
                "--",
                "true",
            ],
            64,
            5,
            "unbalanced quotes",
        ),
        case(
            "a URL given where COMMAND goes, without --",
            &[DOWN_URL],
            64,
            5,
            "",
        ),
        case(
            "a password-like URL parameter in a URL that cannot connect",
            &[
                "wait",
                "--database-url",
                "postgres://app@127.0.0.1:1/app?sslpassword=Sup3r-s3cret-pw",
                "--wait-timeout",
                "1s",
            ],
            // A parameter pgboot does not take: refused (78) at once,
            // named but never printed with its value.
            78,
            5,
            "parameter sslpassword",
        ),
    ];
    for c in &cases {
        check(c);
    }
}

#[test]
fn invalid_input_against_a_live_database_changes_nothing() {
    let db = shared(PgVersion::V17).create_db();
    let empty_file = migrations(&[
        ("1_create.sql", "CREATE TABLE items (id int);"),
        ("2_empty.sql", ""),
    ]);
    let url = db.url.clone();
    let cases = [
        case(
            "an empty migration file next to a good one",
            &[
                "--database-url",
                &url,
                "--migrations",
                path_str(empty_file.path()),
                "--",
                "true",
            ],
            65,
            5,
            "holds no SQL statement",
        ),
        case(
            "COMMAND not found after a pending migration",
            &[
                "--database-url",
                &url,
                "--migrations",
                path_str(empty_file.path()),
                "--",
                "no-such-server-pgboot",
            ],
            127,
            5,
            "not found",
        ),
    ];
    for c in &cases {
        check(c);
    }
    assert!(!exists(&db, "items"), "nothing may be applied");
    assert_eq!(recorded(&db), "");
}

/// `--expand-env` puts `$DATABASE_URL` into COMMAND: the "ready" line shows
/// COMMAND with the password masked; the server itself gets it whole.
#[test]
fn expanded_command_is_logged_masked_and_passed_whole() {
    let db = shared(PgVersion::V17).create_db();
    let mut cmd = pgboot(&[
        "--log-level",
        "trace",
        "--expand-env",
        "--",
        "sh",
        "-c",
        "echo \"GOT=$1\"",
        "sh",
        "$DATABASE_URL",
    ]);
    cmd.env("DATABASE_URL", &db.url);
    let (code, out, err) = run(cmd, Duration::from_secs(30));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("GOT={}", db.url)), "{out}");
    assert!(err.contains("ready; starting the server"), "{err}");
    assert!(!err.contains(db.password()), "{err}");
    assert!(err.contains(":***@"), "{err}");
}

/// A newline in a database name cannot forge a log line: it is escaped.
#[test]
fn a_newline_in_a_database_name_is_escaped_in_the_logs() {
    let db = shared(PgVersion::V17).create_db();
    let forged = db
        .url
        .replace(&db.name, &format!("{}%0AFORGED INFO owned", db.name));
    let (code, out, err) = run(
        pgboot(&["wait", "--database-url", &forged, "--wait-timeout", "5s"]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 78, "{out}\n{err}");
    assert!(
        !err.lines().any(|l| l.starts_with("FORGED")),
        "a line was forged:\n{err}"
    );
    assert!(!err.contains(db.password()), "{err}");
}

fn children_env(db: &TestDb, flag_url: bool) -> (String, String) {
    let tmp = TempDir::new("input-env");
    let report = tmp.path().join("migrator-env");
    let migrator = format!(
        "sh -c 'echo \"DATABASE_URL=$DATABASE_URL\" > {}; echo \"MIGRATE=${{PGBOOT_MIGRATE_DATABASE_URL:-unset}}\" >> {}'",
        path_str(&report),
        path_str(&report)
    );
    // Two spellings of one server: the direct URL for the lock and the
    // migration command, the app's URL for the server.
    let direct = db.url.clone();
    let app = db.url.replace("@127.0.0.1:", "@localhost:");
    assert_ne!(direct, app);
    let mut args: Vec<&str> = vec![
        "--migrate-cmd",
        &migrator,
        "--migrate-database-url",
        &direct,
    ];
    if flag_url {
        args.extend(["--database-url", &app]);
    }
    args.extend([
        "--",
        "sh",
        "-c",
        "echo \"SERVER DATABASE_URL=${DATABASE_URL:-unset} MIGRATE=${PGBOOT_MIGRATE_DATABASE_URL:-unset}\"",
    ]);
    let mut cmd = pgboot(&args);
    cmd.env("PGBOOT_MIGRATE_DATABASE_URL", &direct);
    if !flag_url {
        cmd.env("DATABASE_URL", &app);
    }
    let (code, out, err) = run(cmd, Duration::from_secs(30));
    assert_eq!(code, 0, "{out}\n{err}");
    (std::fs::read_to_string(&report).unwrap(), out)
}

/// The migration command gets the lock's URL as `DATABASE_URL`; the server
/// gets the URL pgboot was given (flag or variable), and neither sees
/// `PGBOOT_MIGRATE_DATABASE_URL`.
#[test]
fn children_get_the_url_pgboot_used_and_never_the_direct_variable() {
    let db = shared(PgVersion::V17).create_db();
    for flag in [true, false] {
        let (migrator, server) = children_env(&db, flag);
        assert!(
            migrator.contains(&format!("DATABASE_URL={}", db.url)),
            "{migrator}"
        );
        assert!(migrator.contains("MIGRATE=unset"), "{migrator}");
        let app = db.url.replace("@127.0.0.1:", "@localhost:");
        assert!(
            server.contains(&format!("SERVER DATABASE_URL={app}")),
            "{server}"
        );
        assert!(server.contains("MIGRATE=unset"), "{server}");
    }
}

//! The operator's view (issue 10): `status` and `status --json` (checked
//! against `docs/status-schema.json`), `migrate --dry-run` leaving the
//! database and the lock untouched, `new`, completions and the man page,
//! progress lines during a 12 s outage and a 12 s migration, the exit line,
//! JSON logs whose numbers are numbers (usage errors included), colour only
//! where it belongs, and a signal's message naming what it interrupted.
//!
//! Every test has a database of its own (or none); every wait is bounded;
//! every process is stopped by pid.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alembic_e2e::{PYTHON_TIMEOUT, alembic, alembic_version, path_env, service};
use crate::boot::{BOUND, Psql, key_of, migrations, path_str, pgb};
use crate::support::pg::{Cluster, PgVersion, TestDb, shared};
use crate::support::pgboot::{Running, TempDir, bin, pgboot, run};

const T: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ helpers

/// Every stderr line as JSON; panics on a line that is not an object.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

/// pgboot's own JSON lines among a migration command's output.
fn own_json_lines(stderr: &str) -> Vec<Value> {
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("{\"timestamp\""))
        .collect();
    json_lines(&own.join("\n"))
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(message)))
        .collect()
}

/// Seconds since midnight of a line's `timestamp` (`…THH:MM:SS.ffffffZ`).
fn seconds_of_day(line: &Value) -> f64 {
    let ts = line["timestamp"].as_str().unwrap();
    let time = ts.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// The longest silence between consecutive lines, seconds (a run across
/// midnight counts the day it crossed).
fn longest_gap(lines: &[&Value]) -> f64 {
    lines
        .windows(2)
        .map(|w| {
            let d = seconds_of_day(w[1]) - seconds_of_day(w[0]);
            if d < 0.0 { d + 86_400.0 } else { d }
        })
        .fold(0.0, f64::max)
}

/// The exit line: its code, phase and reason.
fn exit_line(lines: &[Value]) -> (i64, String, String) {
    let last = lines.last().expect("some log line");
    assert_eq!(last["message"], "pgboot exits", "not the last line: {last}");
    (
        last["exit_code"].as_i64().expect("exit_code is a number"),
        last["phase"].as_str().unwrap().to_owned(),
        last["reason"].as_str().unwrap().to_owned(),
    )
}

/// A login role of this test's own, without `pg_read_all_stats`; dropped
/// (with its grants in the database) before the database is.
struct Role<'a> {
    db: &'a TestDb,
    name: String,
}

impl<'a> Role<'a> {
    fn new(db: &'a TestDb) -> Role<'a> {
        let name = format!("{}_op", db.name);
        db.psql(&format!("CREATE ROLE {name} LOGIN PASSWORD 'operator-pw'"));
        Role { db, name }
    }

    fn url(&self) -> String {
        format!(
            "postgres://{}:operator-pw@127.0.0.1:{}/{}",
            self.name,
            self.db.port(),
            self.db.name
        )
    }
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        let _ = self
            .db
            .try_psql(&format!("DROP OWNED BY {0}; DROP ROLE {0}", self.name));
    }
}

// ------------------------------------------------------- the status schema

/// Checks `v` against the subset of JSON Schema `docs/status-schema.json`
/// uses: type, const, enum, required, properties, items, oneOf. Returns
/// what does not match.
fn schema_errors(schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(c) = schema.get("const")
        && c != v
    {
        errs.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errs.push(format!("{at}: {v} is not one of {options:?}"));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            other => panic!("schema type {other} not handled"),
        });
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| schema_errors(o, v, at).is_empty())
            .count();
        if matching != 1 {
            errs.push(format!("{at}: {v} matches {matching} of oneOf, not 1"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errs.push(format!("{at}: missing {r}"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                if let Some(x) = obj.get(k) {
                    errs.extend(schema_errors(sub, x, &format!("{at}.{k}")));
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            errs.extend(schema_errors(items, x, &format!("{at}[{i}]")));
        }
    }
    errs
}

fn status_schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/status-schema.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assert_follows_schema(doc: &Value) {
    let errs = schema_errors(&status_schema(), doc, "$");
    assert!(errs.is_empty(), "{errs:#?}\n{doc:#}");
}

/// `pgboot migrate` with the built-in runner; it must succeed.
fn migrate_to_head(url: &str, dir: &std::path::Path) {
    let (code, _, err) = run(
        pgb(&[
            "migrate",
            "--database-url",
            url,
            "--migrations",
            path_str(dir),
        ]),
        BOUND,
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_schema_check_rejects_what_the_schema_forbids() {
    // The hand-written checker must be able to fail, or the tests below prove nothing.
    let bad = serde_json::json!({
        "schema": 2, "state": "maybe", "exit_code": "1", "reason": 3,
        "builtin": null, "command": null,
        "lock": {"key": 1, "name": null, "held": false, "holder": {"pid": 1}}
    });
    let errs = schema_errors(&status_schema(), &bad, "$");
    for needle in [
        "$.schema",
        "$.state",
        "$.exit_code",
        "$.reason",
        "$.lock.holder",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(needle)),
            "{needle} not caught: {errs:#?}"
        );
    }
}

// ------------------------------------------------------------------ status

fn status_json(url: &str, dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "status",
        "--json",
        "--database-url",
        url,
        "--migrations",
        path_str(dir),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(pgb(&args), T);
    let doc: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{out}\n{err}"));
    (code, doc, err)
}

#[test]
fn status_json_follows_the_schema_at_head_pending_and_ahead_with_the_holder() {
    let v = PgVersion::V17;
    let db = shared(v).create_db();
    let dir = migrations(&[
        ("1_create.sql", "CREATE TABLE t (id int);"),
        ("2_seed.sql", "INSERT INTO t VALUES (1);"),
    ]);
    migrate_to_head(&db.url, dir.path());

    let (code, doc, err) = status_json(&db.url, dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_follows_schema(&doc);
    assert_eq!(doc["state"], "at_head");
    assert_eq!(doc["lock"]["held"], false);
    assert_eq!(doc["lock"]["name"], "pgboot");
    assert_eq!(doc["lock"]["key"], key_of(&db, "pgboot"));

    dir.write("3_more.sql", "INSERT INTO t VALUES (3);");
    let (_holder, holder_pid) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let (code, doc, err) = status_json(&db.url, dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert_follows_schema(&doc);
    assert_eq!(doc["state"], "pending");
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["builtin"]["pending"], serde_json::json!([3]));
    let holder = &doc["lock"]["holder"];
    assert_eq!(holder["pid"], holder_pid, "{doc:#}");
    assert_eq!(holder["application_name"], "psql");
    assert_eq!(holder["details_visible"], true);
    assert!(holder["session_age_s"].is_i64(), "{doc:#}");

    db.psql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from a newer image', true, '\\x00', 1)",
    );
    let (code, doc, err) = status_json(&db.url, dir.path(), &[]);
    assert_eq!(code, 2, "{err}");
    assert_follows_schema(&doc);
    assert_eq!(doc["state"], "ahead");
    assert_eq!(doc["builtin"]["unknown"][0]["version"], 99);
}

#[test]
fn status_says_when_postgres_hides_the_holders_details_from_its_role() {
    let v = PgVersion::V17;
    let db = shared(v).create_db();
    let role = Role::new(&db);
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let (_holder, holder_pid) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));

    let (code, doc, err) = status_json(&role.url(), dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert_follows_schema(&doc);
    let holder = &doc["lock"]["holder"];
    assert_eq!(holder["pid"], holder_pid, "{doc:#}");
    assert_eq!(holder["details_visible"], false, "{doc:#}");
    assert!(
        holder["client"].is_null() && holder["since"].is_null(),
        "{doc:#}"
    );

    let (code, out, err) = run(
        pgb(&[
            "status",
            "--database-url",
            &role.url(),
            "--migrations",
            path_str(dir.path()),
        ]),
        T,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains(&format!(
            "held by pid {holder_pid} (psql; its client and age are hidden"
        )),
        "{out}"
    );
    assert!(!out.contains("0s old"), "{out}");
}

#[test]
fn status_against_a_database_that_is_down_gives_up_after_its_short_default() {
    let cluster = Cluster::new(PgVersion::V17);
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let t = Instant::now();
    let (code, out, err) = run(
        pgb(&[
            "status",
            "--json",
            "--database-url",
            &cluster.url("postgres"),
            "--migrations",
            path_str(dir.path()),
            "--log-format",
            "json",
        ]),
        T,
    );
    let took = t.elapsed();
    assert_eq!(code, 69, "{err}");
    assert!(out.is_empty(), "an error prints no document: {out}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(12),
        "status waited {took:?}, not ~5 s"
    );
    let lines = json_lines(&err);
    assert_eq!(exit_line(&lines).0, 69);
}

// ----------------------------------------------------------------- dry run

/// What a dry run must leave as it was: the relations of the public schema,
/// and `_sqlx_migrations` row by row with each row's `xmin` (a rewrite of a
/// row changes it).
fn fingerprint(db: &TestDb) -> String {
    db.psql(
        "SELECT (SELECT string_agg(c.relname::text || ':' || c.relkind::text, ',' ORDER BY c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public') \
             || '|' || (SELECT string_agg(version || ':' || success || ':' || xmin::text, ',' \
                 ORDER BY version) FROM _sqlx_migrations) \
             || '|' || (SELECT count(*) FROM t)",
    )
}

#[test]
fn dry_run_lists_the_pending_files_and_changes_nothing_not_even_the_lock() {
    let db = shared(PgVersion::V17).create_db();
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    migrate_to_head(&db.url, dir.path());
    dir.write("2_seed.sql", "INSERT INTO t VALUES (1);");
    dir.write("3_more.sql", "CREATE TABLE more (id int);");

    // A role that may read the bookkeeping but in this database may not
    // call any advisory-lock function: a dry run that tried the lock fails.
    let role = Role::new(&db);
    db.psql(&format!(
        "GRANT SELECT ON _sqlx_migrations, t TO {0}; \
         REVOKE EXECUTE ON FUNCTION pg_try_advisory_lock(bigint), pg_advisory_lock(bigint), \
           pg_try_advisory_lock_shared(bigint), pg_advisory_lock_shared(bigint) FROM PUBLIC",
        role.name
    ));
    let before = fingerprint(&db);
    let (code, out, err) = run(
        pgb(&[
            "migrate",
            "--dry-run",
            "--database-url",
            &role.url(),
            "--migrations",
            path_str(dir.path()),
        ]),
        BOUND,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("would apply 2 migration(s)")
            && out.contains("2_seed.sql")
            && out.contains("3_more.sql")
            && !out.contains("1_create.sql"),
        "{out}"
    );
    assert_eq!(fingerprint(&db), before, "the dry run changed the database");

    // The same role migrating for real is stopped at the lock: the
    // revocation bites, so the dry run above never asked for the lock.
    let (code, _, err) = run(
        pgb(&[
            "migrate",
            "--database-url",
            &role.url(),
            "--migrations",
            path_str(dir.path()),
        ]),
        BOUND,
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("advisory lock"), "{err}");
    assert_eq!(fingerprint(&db), before);
}

#[test]
fn alembic_status_dry_run_and_summary_read_the_revisions_natively() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("operator");
    alembic(&svc, &db.url, &["upgrade", "0001"]);
    let in_svc = |args: &[&str]| {
        let mut c = pgboot(args);
        c.current_dir(svc.path())
            .env("PATH", path_env())
            .env("DATABASE_URL", &db.url);
        run(c, PYTHON_TIMEOUT)
    };
    let cmd = "python -m alembic upgrade head";

    let (code, out, err) = in_svc(&["status", "--json", "--migrate-cmd", cmd]);
    assert_eq!(code, 1, "{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_follows_schema(&doc);
    let alembic_doc = &doc["command"]["alembic"];
    assert_eq!(alembic_doc["database"], serde_json::json!(["0001"]));
    assert_eq!(alembic_doc["heads"], serde_json::json!(["0003"]));
    assert_eq!(alembic_doc["pending"], serde_json::json!(["0002", "0003"]));

    let (code, out, err) = in_svc(&["migrate", "--dry-run", "--migrate-cmd", cmd]);
    assert_eq!(code, 0, "{out}\n{err}");
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(listed, ["0002", "0003"], "{out}");
    assert_eq!(alembic_version(&db), "0001", "the dry run migrated");

    let (code, out, err) = in_svc(&["migrate", "--migrate-cmd", cmd, "--log-format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines = own_json_lines(&err);
    let summary = with_message(&lines, "migrate done");
    assert_eq!(summary.len(), 1, "{err}");
    assert_eq!(summary[0]["migrations"], 2, "{err}");
    assert_eq!(summary[0]["revision_before"], "0001");
    assert_eq!(summary[0]["revision_after"], "0003");
    assert_eq!(exit_line(&lines), (0, "migrate".into(), "done".into()));

    let (code, out, _) = in_svc(&["migrate", "--dry-run", "--migrate-cmd", cmd]);
    assert_eq!(code, 0);
    assert!(out.starts_with("nothing to apply"), "{out}");
}

// --------------------------------------------------------------------- new

#[test]
fn new_creates_sqlx_named_files_and_refuses_collisions_and_bad_names() {
    let root = TempDir::new("operator-new");
    let dir = root.path().join("migrations");
    let new = |args: &[&str]| {
        let mut c = pgboot(&[&["new"], args].concat());
        c.current_dir(root.path());
        run(c, T)
    };
    // A file dated in the future: the new one must still sort after it.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("29991231235959_later.sql"), "SELECT 1;").unwrap();

    let (code, out, err) = new(&["add_users"]);
    assert_eq!(code, 0, "{err}");
    let created = Path::new(out.trim());
    let file = created.file_name().unwrap().to_str().unwrap();
    assert_eq!(file, "29991231235960_add_users.sql", "{out}");
    assert!(err.is_empty(), "new printed to stderr: {err}");

    let (code, _, err) = new(&["add_users"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("exists already") && err.contains(file),
        "{err}"
    );
    let (code, _, err) = new(&["--reversible", "ADD_USERS"]);
    assert_eq!(code, 64, "a name differing only in case collides: {err}");
    let (code, _, err) = new(&["add users"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("add_users"), "no suggestion: {err}");
    let (code, _, err) = new(&["../escape"]);
    assert_eq!(code, 64, "{err}");
    assert!(!root.path().join("escape.sql").exists());

    let (code, out, err) = new(&["--reversible", "--migrations", "other", "pair"]);
    assert_eq!(code, 0, "{err}");
    let files: Vec<&str> = out.lines().collect();
    assert_eq!(files.len(), 2, "{out}");
    assert!(files[0].ends_with("_pair.up.sql") && files[1].ends_with("_pair.down.sql"));
    let stamp = Path::new(files[0]).file_name().unwrap().to_str().unwrap();
    assert!(
        stamp.len() == "YYYYMMDDHHMMSS_pair.up.sql".len()
            && stamp[..14].bytes().all(|b| b.is_ascii_digit()),
        "{stamp}"
    );
    assert!(root.path().join(files[1]).is_file() || Path::new(files[1]).is_file());

    // The new file holds no statement: a boot refuses it until it is written.
    let (code, _, err) = run(
        pgb(&[
            "migrate",
            "--dry-run",
            "--database-url",
            "postgres://u:p@127.0.0.1:1/db",
            "--migrations",
            path_str(&dir),
        ]),
        T,
    );
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("holds no SQL statement"), "{err}");
}

// ---------------------------------------------- completions, man, the hint

#[test]
fn completions_and_the_man_page_describe_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(pgboot(&["completions", shell]), T);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["status", "migrate", "dry-run", "json", "new", "reversible"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
        assert!(err.is_empty(), "{shell}: {err}");
    }
    let script = TempDir::new("operator-completion");
    let (_, bash, _) = run(pgboot(&["completions", "bash"]), T);
    let path = script.write("pgboot.bash", &bash);
    let (code, _, err) = run(
        {
            let mut c = Command::new("bash");
            c.arg("-n").arg(&path);
            c
        },
        T,
    );
    assert_eq!(code, 0, "bash cannot parse the completion: {err}");
    let (code, man, _) = run(pgboot(&["man"]), T);
    assert_eq!(code, 0);
    assert!(
        man.contains(".TH pgboot 1") && man.contains("status"),
        "{man}"
    );
    let (code, _, err) = run(pgboot(&["completions", "tcsh"]), T);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn a_command_without_double_dash_gets_a_hint_and_usage_errors_are_json_when_asked() {
    let (code, _, err) = run(pgboot(&["uvicorn", "app:app"]), T);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("put it after `--`") && err.contains("-- uvicorn"),
        "{err}"
    );

    for (args, env) in [
        (&["--log-format", "json", "uvicorn"][..], None),
        (&["--log-format=json", "--bogus"][..], None),
        (&["migrate", "--wait-timeout", "soon"][..], Some("json")),
    ] {
        let mut c = pgboot(args);
        if let Some(f) = env {
            c.env("PGBOOT_LOG_FORMAT", f);
        }
        let (code, _, err) = run(c, T);
        assert_eq!(code, 64, "{args:?}: {err}");
        let lines = json_lines(&err);
        assert_eq!(lines.len(), 2, "{err}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(
            exit_line(&lines),
            (64, "config".into(), "usage error".into())
        );
    }
}

// ---------------------------------------------------------------- colour

/// `pgboot wait` against a closed port, under `script` (a pty) or a pipe:
/// whether its stderr carries ANSI colour.
fn coloured(pty: bool, env: &[(&str, &str)]) -> bool {
    let argv = format!("{} wait --wait-timeout 1s", bin());
    let mut c = if pty {
        let mut c = Command::new("script");
        c.args(["-qec", &argv, "/dev/null"]);
        c
    } else {
        let mut c = Command::new(bin());
        c.args(["wait", "--wait-timeout", "1s"]);
        c
    };
    for k in crate::support::pgboot::SCRUB {
        c.env_remove(k);
    }
    c.env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("DATABASE_URL", "postgres://u:p@127.0.0.1:1/db");
    for (k, v) in env {
        c.env(k, v);
    }
    let (code, out, err) = run(c, T);
    assert_eq!(code, 69, "{out}\n{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("did not become ready"), "{all}");
    all.contains("\x1b[")
}

#[test]
fn colour_only_on_a_terminal_never_with_no_color_always_with_clicolor_force() {
    assert!(coloured(true, &[]), "no colour on a terminal");
    assert!(!coloured(true, &[("NO_COLOR", "1")]), "NO_COLOR ignored");
    assert!(!coloured(false, &[]), "colour into a pipe");
    assert!(
        coloured(false, &[("CLICOLOR_FORCE", "1")]),
        "CLICOLOR_FORCE ignored"
    );
}

// -------------------------------------------------------------- progress

#[test]
fn a_12_s_outage_logs_progress_at_least_every_10_s() {
    let cluster = Cluster::new(PgVersion::V17);
    let mut r = Running::start(pgb(&[
        "wait",
        "--wait-timeout",
        "90s",
        "--log-format",
        "json",
        "--database-url",
        &cluster.url("postgres"),
    ]));
    thread::sleep(Duration::from_secs(12));
    cluster.start();
    assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
    let lines = json_lines(&r.stderr());
    let until_ready: Vec<&Value> = lines
        .iter()
        .take_while(|l| l["message"] != "Postgres is ready")
        .collect();
    let progress = with_message(&lines, "still waiting for Postgres");
    assert!(!progress.is_empty(), "{}", r.stderr());
    for p in &progress {
        for field in ["attempts", "waited_s", "gives_up_in_s"] {
            assert!(p[field].is_u64(), "{field} is not a number: {p}");
        }
        assert!(p["error"].is_string(), "{p}");
    }
    let gap = longest_gap(&until_ready);
    assert!(gap <= 11.0, "{gap:.1} s without a line\n{}", r.stderr());
    assert_eq!(exit_line(&lines).0, 0);
}

#[test]
fn a_12_s_migration_command_logs_progress_at_least_every_10_s() {
    let db = shared(PgVersion::V17).create_db();
    let (code, _, err) = run(
        pgb(&[
            "migrate",
            "--database-url",
            &db.url,
            "--migrate-cmd",
            "sleep 12",
            "--log-format",
            "json",
        ]),
        BOUND,
    );
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&err);
    let progress = with_message(&lines, "the migration command is still running");
    assert!(!progress.is_empty(), "{err}");
    assert_eq!(progress[0]["command"], "sleep 12");
    assert!(
        progress[0]["elapsed_s"].as_u64().is_some_and(|s| s >= 10),
        "{err}"
    );
    let all: Vec<&Value> = lines.iter().collect();
    assert!(longest_gap(&all) <= 11.0, "{err}");
    let summary = with_message(&lines, "migrate done");
    assert!(
        summary[0].get("migrations").is_none(),
        "a command that is not Alembic has no count: {err}"
    );
    assert!(
        summary[0]["migrating_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 12_000)
    );
    assert_eq!(exit_line(&lines), (0, "migrate".into(), "done".into()));
}

#[test]
fn a_12_s_builtin_migration_logs_progress_naming_it() {
    let db = shared(PgVersion::V17).create_db();
    let dir = migrations(&[("1_slow.sql", "SELECT pg_sleep(12);")]);
    let mut r = Running::start(pgb(&[
        "--database-url",
        &db.url,
        "--migrations",
        path_str(dir.path()),
        "--log-format",
        "json",
        "--",
        "true",
    ]));
    assert_eq!(r.exit_code(BOUND), 0, "{}", r.output());
    let lines = json_lines(&r.stderr());
    let progress = with_message(&lines, "still applying migrations");
    assert!(!progress.is_empty(), "{}", r.stderr());
    assert!(
        progress[0]["migration"]
            .as_str()
            .is_some_and(|m| m.contains("1_slow.sql")),
        "{}",
        r.stderr()
    );
    let summary = with_message(&lines, "ready; starting the server");
    assert_eq!(summary[0]["migrations"], 1);
    for field in ["waited_ms", "lock_held_ms", "migrating_ms", "total_ms"] {
        assert!(
            summary[0][field].is_u64(),
            "{field} is not a number: {}",
            summary[0]
        );
    }
    let all: Vec<&Value> = lines.iter().collect();
    assert!(longest_gap(&all) <= 11.0, "{}", r.stderr());
    assert_eq!(
        exit_line(&lines),
        (0, "supervise".into(), "the command exited".into())
    );
}

// ----------------------------------------------------------------- wording

#[test]
fn sigterm_during_migrate_names_the_lock_wait_not_a_server() {
    let v = PgVersion::V17;
    let db = shared(v).create_db();
    let (_holder, _) = Psql::hold_lock(v, &db, key_of(&db, "pgboot"));
    let dir = migrations(&[("1_create.sql", "CREATE TABLE t (id int);")]);
    let mut r = Running::start(pgb(&[
        "migrate",
        "--database-url",
        &db.url,
        "--migrations",
        path_str(dir.path()),
    ]));
    r.wait_for_output(T, "the lock wait", |o| {
        o.contains("waiting for the migration lock")
    });
    assert!(
        r.stderr()
            .contains(&format!("key=pgboot ({})", key_of(&db, "pgboot"))),
        "{}",
        r.output()
    );
    r.signal(libc::SIGTERM);
    assert_eq!(r.exit_code(T), 143, "{}", r.output());
    let err = r.stderr();
    assert!(
        err.contains("got SIGTERM while waiting for the migration lock; exiting"),
        "{err}"
    );
    assert!(!err.contains("before the server started"), "{err}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains("exit_code=143") && l.contains("phase=\"lock\"")),
        "{err}"
    );
}

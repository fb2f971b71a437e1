//! The Alembic fast path is exact: it is taken only when it is provably what Alembic itself
//! would conclude, and `status` tells at head, pending, ahead and unknown apart by exit code.
//! Real Alembic from the venv, on copies of `examples/pipeline`, against PostgreSQL 17.
// Product names (PostgreSQL) are prose here, not code.
#![allow(clippy::doc_markdown)]

use std::path::Path;

use crate::alembic_e2e::{
    PYTHON_TIMEOUT, advisory_locks, alembic, alembic_version, path_env, service, versions,
};
use crate::support::pg::{PgVersion, TestDb, shared};
use crate::support::pgboot::{TempDir, pgboot, run};

const MIGRATE_CMD: &str = "python -m alembic upgrade head";

/// `pgboot ARGS` in the service copy against `db`: (exit code, stdout + stderr).
fn pgboot_in(svc: &TempDir, db: &TestDb, args: &[&str]) -> (i32, String) {
    let mut c = pgboot(args);
    c.current_dir(svc.path())
        .env("PATH", path_env())
        .env("DATABASE_URL", &db.url);
    let (code, out, err) = run(c, PYTHON_TIMEOUT);
    (code, format!("{out}{err}"))
}

fn status(svc: &TempDir, db: &TestDb) -> (i32, String) {
    pgboot_in(svc, db, &["status", "--migrate-cmd", MIGRATE_CMD])
}

fn migrate(svc: &TempDir, db: &TestDb) -> (i32, String) {
    pgboot_in(svc, db, &["migrate", "--migrate-cmd", MIGRATE_CMD])
}

fn env_py(svc: &TempDir) -> std::path::PathBuf {
    svc.path().join("migrations/env.py")
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The example's online `context.configure` call, as env.py has it.
const ONLINE_CONFIGURE: &str =
    "context.configure(connection=connection, target_metadata=target_metadata)";

#[test]
fn status_exits_0_at_head_1_pending_2_ahead_and_3_when_it_cannot_tell() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("exact-status");

    let (code, out) = status(&svc, &db);
    assert_eq!(code, 1, "fresh database: pending\n{out}");
    assert!(out.contains("state: pending"), "{out}");

    alembic(&svc, &db.url, &["upgrade", "head"]);
    let (code, out) = status(&svc, &db);
    assert_eq!(code, 0, "at head\n{out}");
    assert!(
        out.contains("database: 0003") && out.contains("files' heads: 0003"),
        "{out}"
    );

    db.psql("UPDATE alembic_version SET version_num = 'f00d0004'");
    let (code, out) = status(&svc, &db);
    assert_eq!(code, 2, "ahead\n{out}");
    assert!(
        out.contains("ahead") && out.contains("f00d0004") && !out.contains("at head"),
        "{out}"
    );

    db.psql("UPDATE alembic_version SET version_num = '0003'");
    edit(
        &env_py(&svc),
        ONLINE_CONFIGURE,
        "context.configure(connection=connection, **{\"target_metadata\": target_metadata})",
    );
    let (code, out) = status(&svc, &db);
    assert_eq!(code, 3, "cannot tell\n{out}");
    assert!(
        out.contains("cannot tell") && out.contains("**kwargs"),
        "{out}"
    );

    let (code, out) = pgboot_in(&svc, &db, &["status", "--migrate-cmd", "./migrate.sh"]);
    assert_eq!(code, 3, "not Alembic\n{out}");
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn version_table_from_another_module_takes_the_slow_path_and_alembic_brings_the_real_table_to_head()
{
    let db = shared(PgVersion::V17).create_db();
    let svc = service("exact-kwargs");
    // The settings live in another module, reached through **kwargs.
    std::fs::write(
        svc.path().join("src/migration_settings.py"),
        "SETTINGS = {\"version_table\": \"pipeline_versions\"}\n",
    )
    .unwrap();
    edit(
        &env_py(&svc),
        "from domain import metadata, sqlalchemy_url  # noqa: E402\n",
        "from domain import metadata, sqlalchemy_url  # noqa: E402\nfrom migration_settings import SETTINGS  # noqa: E402\n",
    );
    edit(
        &env_py(&svc),
        ONLINE_CONFIGURE,
        "context.configure(connection=connection, target_metadata=target_metadata, **SETTINGS)",
    );
    alembic(&svc, &db.url, &["upgrade", "0002"]);
    assert_eq!(db.psql("SELECT version_num FROM pipeline_versions"), "0002");
    // A stale default table that says "head": the old fast path believed it.
    db.psql(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); \
         INSERT INTO alembic_version VALUES ('0003')",
    );

    let (code, out) = migrate(&svc, &db);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("fast path off") && out.contains("**kwargs"),
        "the reason, at INFO\n{out}"
    );
    assert_eq!(out.matches("fast path off").count(), 1, "said once\n{out}");
    assert!(out.contains("Running upgrade 0002 -> 0003"), "{out}");
    assert_eq!(db.psql("SELECT version_num FROM pipeline_versions"), "0003");
    assert_eq!(db.psql("SELECT count(*) FROM job_kinds"), "3");
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn a_comment_or_string_naming_version_table_keeps_the_fast_path() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("exact-comment");
    edit(
        &env_py(&svc),
        "config = context.config\n",
        "config = context.config\n# version_table: we keep Alembic's default.\nNOTE = \"version_table_schema stays unset\"\n",
    );
    alembic(&svc, &db.url, &["upgrade", "head"]);
    let (code, out) = migrate(&svc, &db);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no lock taken, no Python run"), "{out}");
    assert!(!out.contains("Context impl"), "Alembic did not run\n{out}");
    assert_eq!(alembic_version(&db), "0003");
}

#[test]
fn a_revision_file_python_would_not_compile_is_not_at_head_and_alembic_reports_it() {
    let db = shared(PgVersion::V17).create_db();
    let svc = service("exact-syntax");
    alembic(&svc, &db.url, &["upgrade", "head"]);
    // Its revision literals stay readable; the body is broken.
    edit(
        &versions(&svc).join("0003_seed_job_kinds.py"),
        "JOB_KINDS = sa.table(",
        "JOB_KINDS = = sa.table(",
    );
    let (code, out) = status(&svc, &db);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("would not compile"), "{out}");

    let (code, out) = migrate(&svc, &db);
    assert_eq!(code, 65, "Alembic itself fails on the file\n{out}");
    assert!(out.contains("fast path off"), "{out}");
    assert!(out.contains("SyntaxError"), "Alembic ran and failed\n{out}");
    assert_eq!(alembic_version(&db), "0003");
    assert_eq!(advisory_locks(&db), 0);
}

//! `pgboot status`: where the database stands against the migrations, and
//! who holds the lock — a probe, not a boot.
//!
//! Needs the database, lock and migration settings. Waits for Postgres only
//! `--wait-timeout` (5 s by default for `status`), takes no lock, writes
//! nothing. Prints a table (text) or one JSON document (`--json`, schema in
//! `docs/status-schema.json`) to stdout and returns the [`Standing`], whose
//! exit code is 0 at head, 1 pending, 2 ahead, 3 cannot tell. Errors (no
//! database in time, a missing directory) go to stderr with their own codes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::alembic::AlembicState;
use crate::config::{DbConfig, LockConfig, MigrateConfig};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::lock::{self, Holder};
use crate::migrate::{self, Applied};
use crate::phase::{self, Phase};
use crate::redact::Redacted;
use crate::runtime::interruptible;
use crate::signals::AsyncSignals;
use crate::wait;

/// The version of the `--json` document; raised on any change that is not
/// a new optional field.
pub const SCHEMA: u64 = 1;

/// What `status` found, and so its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Nothing pending.
    AtHead,
    /// Something pending (or a problem to fix by hand before migrating).
    Pending,
    /// The database holds migrations or revisions no file has.
    Ahead,
    /// Only running the migration command would tell.
    Unknown,
}

impl Standing {
    /// `status`'s exit code.
    #[must_use]
    pub fn exit(self) -> Exit {
        match self {
            Standing::AtHead => Exit::Ok,
            Standing::Pending => Exit::Pending,
            Standing::Ahead => Exit::Ahead,
            Standing::Unknown => Exit::CannotTell,
        }
    }

    /// The `state` of the JSON document.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Standing::AtHead => "at_head",
            Standing::Pending => "pending",
            Standing::Ahead => "ahead",
            Standing::Unknown => "unknown",
        }
    }
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    Text,
    /// One JSON document for scripts.
    Json,
}

/// One migration file against `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its version.
    pub version: i64,
    /// Its description.
    pub description: String,
    /// Its file.
    pub file: PathBuf,
    /// `applied`, `pending`, `failed` or `changed`.
    pub state: &'static str,
}

/// What the migrations are compared with.
#[derive(Debug, Clone)]
pub enum Source {
    /// The built-in runner's directory.
    Builtin {
        /// The directory.
        dir: PathBuf,
        /// Each file, in version order.
        migrations: Vec<Row>,
        /// Rows of `_sqlx_migrations` no file has: (version, description).
        unknown: Vec<(i64, String)>,
    },
    /// The migration command, read natively when it is Alembic.
    Command {
        /// The command, passwords masked.
        command: String,
        /// Alembic's state.
        alembic: AlembicState,
    },
}

/// Everything `status` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The verdict.
    pub standing: Standing,
    /// Why it cannot be told (`unknown`), or what `migrate` would refuse
    /// (a failed earlier migration, a changed file).
    pub reason: Option<String>,
    /// The migrations.
    pub source: Source,
    /// The lock's key as given (`pgboot`), and its 64-bit value.
    pub lock_name: Option<String>,
    /// The 64-bit key.
    pub lock_key: i64,
    /// Who holds the lock.
    pub holder: Option<Holder>,
}

/// `pgboot status`: wait briefly, read, print, return the verdict.
///
/// # Errors
/// Postgres not there within `--wait-timeout` (69), an error no wait can
/// fix (78), neither `--migrations` nor `--migrate-cmd` (64), the
/// directory unreadable (64/65).
pub async fn run(
    sigs: &AsyncSignals,
    db: &DbConfig,
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
    output: Output,
) -> Result<Standing> {
    if m.dir.is_none() && m.command.is_none() {
        return Err(Error::Usage(
            "status needs --migrations DIR or --migrate-cmd COMMAND to compare against".into(),
        ));
    }
    let target = crate::boot::lock_target(db)?;
    phase::enter(Phase::Wait);
    let mut conn = interruptible(sigs, wait::ready(&target, db.wait_timeout, None)).await?;
    phase::enter(Phase::Inspect);
    let report = interruptible(sigs, gather(&mut conn, lock_cfg, m)).await;
    migrate::close(conn).await;
    let report = report?;
    match output {
        Output::Text => print!("{}", text(&report)),
        Output::Json => println!("{}", to_json(&report)),
    }
    Ok(report.standing)
}

/// Reads the database and the files.
async fn gather(
    conn: &mut PgConnection,
    lock_cfg: &LockConfig,
    m: &MigrateConfig,
) -> Result<Report> {
    let (standing, reason, source) = if let Some(dir) = &m.dir {
        let files = migrate::load_dir(dir)?;
        let rows = migrate::applied(conn).await?.unwrap_or_default();
        builtin(dir.clone(), &files, &rows)
    } else if let Some(argv) = &m.command {
        let state = migrate::alembic_state(conn, argv).await?;
        let (standing, reason) = match &state {
            AlembicState::AtHead { .. } => (Standing::AtHead, None),
            AlembicState::Behind { .. } => (Standing::Pending, None),
            AlembicState::Ahead { .. } => (Standing::Ahead, None),
            AlembicState::Unknown(why) => (Standing::Unknown, Some(why.to_string())),
        };
        let source = Source::Command {
            command: Redacted(argv.join(" ")).to_string(),
            alembic: state,
        };
        (standing, reason, source)
    } else {
        return Err(Error::Internal("status without migrations".into()));
    };
    let lock_key = lock::resolve_key(conn, &lock_cfg.key).await?;
    let holder = lock::holder(conn, lock_key)
        .await
        .map_err(|e| crate::failure::db_error("reading pg_locks", &e))?;
    Ok(Report {
        standing,
        reason,
        source,
        lock_name: match &lock_cfg.key {
            crate::config::LockKey::Name(n) => Some(n.clone()),
            crate::config::LockKey::Int(_) => None,
        },
        lock_key,
        holder,
    })
}

/// The built-in runner's files against `_sqlx_migrations`. Pure.
fn builtin(
    dir: PathBuf,
    files: &[migrate::File],
    rows: &[Applied],
) -> (Standing, Option<String>, Source) {
    let by_version: BTreeMap<i64, &Applied> = rows.iter().map(|a| (a.version, a)).collect();
    let migrations: Vec<Row> = files
        .iter()
        .map(|f| {
            let m = &f.migration;
            Row {
                version: m.version,
                description: m.description.to_string(),
                file: f.path.clone(),
                state: match by_version.get(&m.version) {
                    Some(a) if !a.success => "failed",
                    Some(a) if *a.checksum != *m.checksum => "changed",
                    Some(_) => "applied",
                    None => "pending",
                },
            }
        })
        .collect();
    let known: BTreeSet<i64> = files.iter().map(|f| f.migration.version).collect();
    let unknown: Vec<(i64, String)> = rows
        .iter()
        .filter(|a| !known.contains(&a.version))
        .map(|a| (a.version, a.description.clone()))
        .collect();
    let problem = migrate::assess(files, rows).err().map(|e| e.to_string());
    let standing = if !unknown.is_empty() {
        Standing::Ahead
    } else if problem.is_some() || migrations.iter().any(|r| r.state == "pending") {
        Standing::Pending
    } else {
        Standing::AtHead
    };
    let source = Source::Builtin {
        dir,
        migrations,
        unknown,
    };
    (standing, problem, source)
}

fn lock_label(r: &Report) -> String {
    r.lock_name.as_ref().map_or_else(
        || r.lock_key.to_string(),
        |n| format!("{n} ({})", r.lock_key),
    )
}

/// The table for people.
#[must_use]
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    match &r.source {
        Source::Builtin {
            migrations,
            unknown,
            ..
        } => {
            let _ = writeln!(
                out,
                "{:<16} {:<10} {:<40} FILE",
                "VERSION", "STATE", "DESCRIPTION"
            );
            for m in migrations {
                // What needs a hand stands out in the table: FAILED, CHANGED.
                let state = match m.state {
                    "failed" | "changed" => m.state.to_uppercase(),
                    s => s.to_owned(),
                };
                let _ = writeln!(
                    out,
                    "{:<16} {:<10} {:<40} {}",
                    m.version,
                    state,
                    m.description,
                    m.file.display()
                );
            }
            for (version, description) in unknown {
                let _ = writeln!(
                    out,
                    "{version:<16} {:<10} {description:<40} (no file: the database is ahead of this directory)",
                    "unknown"
                );
            }
            if let Some(p) = &r.reason {
                let _ = writeln!(out, "problem: {p}");
            }
            let waiting = migrations.iter().filter(|m| m.state == "pending").count();
            let _ = writeln!(
                out,
                "state: {}",
                match r.standing {
                    Standing::AtHead => "at head".to_owned(),
                    Standing::Pending => format!("{waiting} to apply"),
                    Standing::Ahead => "the database is ahead of this directory".to_owned(),
                    Standing::Unknown => "cannot tell".to_owned(),
                }
            );
        }
        Source::Command { command, alembic } => {
            let _ = writeln!(out, "migration command: {command}");
            out.push_str(&alembic_text(alembic));
        }
    }
    let _ = writeln!(
        out,
        "lock {}: {}",
        lock_label(r),
        r.holder
            .as_ref()
            .map_or_else(|| "free".to_string(), |h| format!("held by {h}"))
    );
    out
}

fn alembic_text(state: &AlembicState) -> String {
    let list = |s: &BTreeSet<String>| crate::logging::list(s);
    match state {
        AlembicState::AtHead { heads } => format!(
            "database: {}\nfiles' heads: {}\nstate: at head\n",
            list(heads),
            list(heads)
        ),
        AlembicState::Behind { db, heads, pending } => format!(
            "database: {}\nfiles' heads: {}\nstate: pending (Alembic would apply {}: {})\n",
            list(db),
            list(heads),
            pending.len(),
            crate::logging::list(pending)
        ),
        AlembicState::Ahead { db, unknown, heads } => format!(
            "database: {}\nfiles' heads: {}\nstate: the database is ahead of these files (no file defines {})\n",
            list(db),
            list(heads),
            list(unknown)
        ),
        AlembicState::Unknown(reason) => {
            format!("state: cannot tell without running the command: {reason}\n")
        }
    }
}

/// The `--json` document (schema [`SCHEMA`], `docs/status-schema.json`).
#[must_use]
pub fn to_json(r: &Report) -> Value {
    let set = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
    let (builtin, command) = match &r.source {
        Source::Builtin {
            dir,
            migrations,
            unknown,
        } => (
            json!({
                "directory": dir.display().to_string(),
                "migrations": migrations.iter().map(|m| json!({
                    "version": m.version,
                    "description": m.description,
                    "file": m.file.display().to_string(),
                    "state": m.state,
                })).collect::<Vec<_>>(),
                "pending": migrations.iter().filter(|m| m.state == "pending").map(|m| m.version).collect::<Vec<_>>(),
                "unknown": unknown.iter().map(|(v, d)| json!({"version": v, "description": d})).collect::<Vec<_>>(),
            }),
            Value::Null,
        ),
        Source::Command { command, alembic } => {
            let alembic = match alembic {
                AlembicState::AtHead { heads } => json!({
                    "database": set(heads), "heads": set(heads), "pending": [], "unknown": [],
                }),
                AlembicState::Behind { db, heads, pending } => json!({
                    "database": set(db), "heads": set(heads), "pending": pending, "unknown": [],
                }),
                AlembicState::Ahead { db, unknown, heads } => json!({
                    "database": set(db), "heads": set(heads), "pending": [], "unknown": set(unknown),
                }),
                AlembicState::Unknown(_) => Value::Null,
            };
            (
                Value::Null,
                json!({ "command": command, "alembic": alembic }),
            )
        }
    };
    let holder = r.holder.as_ref().map_or(Value::Null, |h| {
        json!({
            "pid": h.pid,
            "application_name": h.application_name,
            "details_visible": h.session.is_some(),
            "client": h.session.as_ref().map(|s| s.client.clone()),
            "since": h.session.as_ref().map(|s| s.since.clone()),
            "session_age_s": h.session.as_ref().map(|s| s.age_s),
        })
    });
    json!({
        "schema": SCHEMA,
        "state": r.standing.name(),
        "exit_code": r.standing.exit().code(),
        "reason": r.reason,
        "builtin": builtin,
        "command": command,
        "lock": {
            "key": r.lock_key,
            "name": r.lock_name,
            "held": r.holder.is_some(),
            "holder": holder,
        },
    })
}

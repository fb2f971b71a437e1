//! `pgboot migrate --dry-run`: what `migrate` would apply, and nothing else.
//!
//! Needs the database and migration settings. Waits for Postgres as
//! `migrate` does, then only reads: `_sqlx_migrations` and the directory
//! (built-in), or `alembic_version` and the revision files walked natively
//! (Alembic). Never takes, tries or asks for the advisory lock, never runs
//! the migration command, writes nothing. Prints the plan to stdout; exits 0
//! when the plan is known (even empty), 3 when only running the command
//! would tell, 65 when `migrate` would refuse (a changed file, a failed
//! earlier migration, `--db-ahead fail`).

use std::fmt::Write as _;

use sqlx::PgConnection;

use crate::alembic::AlembicState;
use crate::config::{DbConfig, MigrateConfig};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::migrate;
use crate::phase::{self, Phase};
use crate::redact::Redacted;
use crate::runtime::interruptible;
use crate::signals::AsyncSignals;
use crate::wait;

/// Waits for Postgres, reads, prints the plan.
///
/// # Errors
/// As the wait; 65 when `migrate` would refuse; 64 without migrations.
pub async fn run(sigs: &AsyncSignals, db: &DbConfig, m: &MigrateConfig) -> Result<Exit> {
    if m.dir.is_none() && m.command.is_none() {
        return Err(Error::Usage(
            "migrate --dry-run needs --migrations DIR or --migrate-cmd COMMAND".into(),
        ));
    }
    phase::enter(Phase::Preflight);
    crate::preflight::migrations(m)?;
    let target = crate::boot::lock_target(db)?;
    phase::enter(Phase::Wait);
    let mut conn = interruptible(sigs, wait::ready(&target, db.wait_timeout, None)).await?;
    phase::enter(Phase::Inspect);
    let plan = interruptible(sigs, plan(&mut conn, m)).await;
    migrate::close(conn).await;
    let (exit, text) = plan?;
    print!("{text}");
    Ok(exit)
}

async fn plan(conn: &mut PgConnection, m: &MigrateConfig) -> Result<(Exit, String)> {
    let mut out = String::new();
    if let Some(dir) = &m.dir {
        let files = migrate::load_dir(dir)?;
        let rows = migrate::applied(conn).await?.unwrap_or_default();
        let a = migrate::assess(&files, &rows)?;
        migrate::db_ahead(
            &a.ahead.iter().map(ToString::to_string).collect::<Vec<_>>(),
            m.db_ahead,
        )?;
        if a.pending.is_empty() {
            out.push_str("nothing to apply: the database is at head\n");
        } else {
            let _ = writeln!(
                out,
                "would apply {} migration(s), in this order:",
                a.pending.len()
            );
            for &i in &a.pending {
                let f = &files[i];
                let _ = writeln!(out, "  {:<16} {}", f.migration.version, f.path.display());
            }
        }
        return Ok((Exit::Ok, out));
    }
    let Some(argv) = &m.command else {
        return Err(Error::Internal("dry run without migrations".into()));
    };
    let command = Redacted(argv.join(" "));
    Ok(match migrate::alembic_state(conn, argv).await? {
        AlembicState::AtHead { heads } => {
            let _ = writeln!(
                out,
                "nothing to apply: the database is at head ({}); `{command}` would not run",
                crate::logging::list(&heads)
            );
            (Exit::Ok, out)
        }
        AlembicState::Behind { db, pending, .. } => {
            let _ = writeln!(
                out,
                "would run `{command}` under the lock; from {} it applies {} revision(s), in this order:",
                crate::logging::list(&db),
                pending.len()
            );
            for rev in &pending {
                let _ = writeln!(out, "  {rev}");
            }
            (Exit::Ok, out)
        }
        AlembicState::Ahead { unknown, .. } => {
            migrate::db_ahead(&unknown.into_iter().collect::<Vec<_>>(), m.db_ahead)?;
            out.push_str(
                "nothing to apply: the database is ahead of these files; `migrate` would not run the command (--db-ahead=warn)\n",
            );
            (Exit::Ok, out)
        }
        AlembicState::Unknown(reason) => {
            let _ = writeln!(
                out,
                "would take the lock and run `{command}`; what it applies cannot be told without running it: {reason}"
            );
            (Exit::CannotTell, out)
        }
    })
}

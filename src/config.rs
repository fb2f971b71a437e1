//! Configuration: clap (derive + env) turned into a validated [`Config`].
//!
//! Needs the command line and the environment; returns a `Config` or a usage
//! error (exit 64) whose message names the flag or environment variable and
//! the bad value. Pure: no I/O beyond reading the environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::signals;

const AFTER_HELP: &str = "\
Every option is also an environment variable (shown in brackets); the flag wins.
Durations take humantime form (90s, 5m, 1h30m) or plain seconds, at most 366 days.
Exit codes: 0 ok; 1/2/3 `status` found pending migrations / the database ahead / cannot tell;
64 usage; 65 migration failed;
69 Postgres not ready in time; 70 internal error; 75 lock not acquired or lost;
78 an error no wait can fix (auth, no database, privilege, URL, TLS);
126/127 COMMAND not executable/not found; 128+N signal N; otherwise COMMAND's status.";

/// pgboot: wait for Postgres, migrate under an advisory lock, then supervise your server as PID 1.
#[derive(Debug, Parser)]
#[command(
    name = "pgboot",
    // e.g. "0.1.0 (3f2a9c1d0b7e x86_64-unknown-linux-musl release)"; see build.rs.
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("PGBOOT_GIT_REVISION"),
        " ",
        env!("PGBOOT_TARGET"),
        " ",
        env!("PGBOOT_PROFILE"),
        ")"
    ),
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    override_usage = "pgboot [OPTIONS] -- COMMAND [ARG]...\n       pgboot <SUBCOMMAND> [OPTIONS]"
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    lock: LockArgs,
    #[command(flatten)]
    migrate: MigrateArgs,
    #[command(flatten)]
    sup: SuperviseArgs,
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    log: LogArgs,
    /// The server to run once the database is migrated.
    #[arg(last = true, value_name = "COMMAND", value_parser = clap::value_parser!(OsString))]
    command: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// PID-1 duties only (forward signals, reap zombies, exit with the child's status); no database at all.
    #[command(after_help = AFTER_HELP)]
    Supervise {
        #[command(flatten)]
        sup: SuperviseArgs,
        #[command(flatten)]
        log: LogArgs,
        #[arg(last = true, value_name = "COMMAND", value_parser = clap::value_parser!(OsString))]
        command: Vec<OsString>,
    },
    /// Wait until Postgres accepts queries, then exit 0.
    #[command(after_help = AFTER_HELP)]
    Wait {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Wait, take the lock, migrate to head, exit (db:migrate, a Kubernetes Job or initContainer).
    #[command(after_help = AFTER_HELP)]
    Migrate {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        migrate: MigrateArgs,
        #[command(flatten)]
        log: LogArgs,
        /// List what would be applied and change nothing: no lock, no migration command, no write; exit 0 (3 when only running the command would tell).
        #[arg(long)]
        dry_run: bool,
    },
    /// Print applied and pending migrations and who holds the lock; exit 0 at head, 1 pending, 2 the database ahead, 3 cannot tell.
    #[command(after_help = AFTER_HELP)]
    Status {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        migrate: MigrateArgs,
        #[command(flatten)]
        log: LogArgs,
        /// Print one JSON document (schema 1: docs/status-schema.json) instead of a table.
        #[arg(long)]
        json: bool,
    },
    #[command(
        after_help = AFTER_HELP,
        about = "Create a migration file <YYYYMMDDHHMMSS>_<NAME>.sql for the built-in runner."
    )]
    New {
        /// The migration's name: ASCII letters, digits, `_` and `-`.
        #[arg(value_name = "NAME")]
        name: String,
        /// The migrations directory, created if missing. Default: migrations
        #[arg(long, env = "PGBOOT_MIGRATIONS", value_name = "DIR")]
        migrations: Option<String>,
        #[arg(
            long,
            help = "Create a pair, <NAME>.up.sql and <NAME>.down.sql, as `sqlx migrate add -r` does."
        )]
        reversible: bool,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Print a completion script for SHELL to stdout.
    Completions {
        /// bash, zsh or fish.
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
    /// Print pgboot's man page (roff) to stdout.
    Man,
    /// Wait, take the lock, run COMMAND while holding it, exit with its status.
    #[command(after_help = AFTER_HELP)]
    Run {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        sup: SuperviseArgs,
        #[command(flatten)]
        log: LogArgs,
        #[arg(last = true, value_name = "COMMAND", value_parser = clap::value_parser!(OsString))]
        command: Vec<OsString>,
    },
}

/// The shells `pgboot completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

#[derive(Debug, Args)]
struct DbArgs {
    /// Where Postgres is (postgres:// or postgresql:// URL; sslmode honoured). Default: libpq's PG* variables.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    #[arg(
        long,
        help = "A direct (non-pooled) URL for the lock and migrations, when the app's URL goes through PgBouncer. Default: the database URL",
        env = "PGBOOT_MIGRATE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    migrate_database_url: Option<String>,
    /// Give up waiting for Postgres after this long.
    #[arg(
        long,
        env = "PGBOOT_WAIT_TIMEOUT",
        value_name = "DURATION",
        default_value = "60s"
    )]
    wait_timeout: String,
}

#[derive(Debug, Args)]
struct LockArgs {
    /// The advisory lock key: a 64-bit integer, or a name K meaning hashtextextended('K', 0).
    #[arg(
        long,
        env = "PGBOOT_LOCK_KEY",
        value_name = "KEY",
        allow_negative_numbers = true,
        default_value = "pgboot"
    )]
    lock_key: String,
    /// Give up waiting for the lock after this long.
    #[arg(
        long,
        env = "PGBOOT_LOCK_TIMEOUT",
        value_name = "DURATION",
        default_value = "10m"
    )]
    lock_timeout: String,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// A directory of SQL migrations in sqlx's format, applied by the built-in runner.
    #[arg(long, env = "PGBOOT_MIGRATIONS", value_name = "DIR")]
    migrations: Option<String>,
    /// An external migration command, split like a shell splits words (no shell runs), e.g. "python -m alembic upgrade head".
    #[arg(long, env = "PGBOOT_MIGRATE_CMD", value_name = "COMMAND")]
    migrate_cmd: Option<String>,
    /// Stop a migration that runs longer than this. Default: none.
    #[arg(long, env = "PGBOOT_MIGRATE_TIMEOUT", value_name = "DURATION")]
    migrate_timeout: Option<String>,
    /// What to do when the database holds migrations this image does not know.
    #[arg(
        long,
        env = "PGBOOT_DB_AHEAD",
        value_name = "WHAT",
        default_value = "warn"
    )]
    db_ahead: String,
    #[arg(
        long,
        help = "The longest a migration statement may wait for a table lock (lock_timeout); a migration that hits it, or a deadlock, is rolled back and retried with backoff. 0 turns it off",
        env = "PGBOOT_DDL_LOCK_TIMEOUT",
        value_name = "DURATION",
        default_value = "2s"
    )]
    ddl_lock_timeout: String,
    /// How long migrations that failed on a lock timeout or a deadlock are retried, counted from the first attempt.
    #[arg(
        long,
        env = "PGBOOT_DDL_RETRY_FOR",
        value_name = "DURATION",
        default_value = "5m"
    )]
    ddl_retry_for: String,
}

#[derive(Debug, Args)]
struct SuperviseArgs {
    /// After forwarding a terminating signal, SIGKILL the child's process group if it has not exited after this long. Default: none.
    #[arg(long, env = "PGBOOT_GRACE_PERIOD", value_name = "DURATION")]
    grace_period: Option<String>,
    /// Rewrite signals before forwarding, e.g. TERM:QUIT,INT:TERM.
    #[arg(long, env = "PGBOOT_SIGNAL_MAP", value_name = "MAP")]
    signal_map: Option<String>,
    /// Expand $VAR, ${VAR} and ${VAR:-default} in COMMAND's arguments, with no shell ($$ is a literal $).
    #[arg(long, env = "PGBOOT_EXPAND_ENV")]
    expand_env: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// After migrating, replace pgboot with COMMAND (execve) instead of supervising it.
    #[arg(long, env = "PGBOOT_EXEC")]
    exec: bool,
}

#[derive(Debug, Args)]
struct LogArgs {
    /// Log format: text or json (one JSON object per line).
    #[arg(
        long,
        env = "PGBOOT_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[arg(
        long,
        value_name = "FILTER",
        help = "Log filter: a level, and target=level directives (info,sqlx=warn) as in tracing's env-filter [env: PGBOOT_LOG / RUST_LOG] [default: info]"
    )]
    log_level: Option<String>,
}

impl Default for LogArgs {
    fn default() -> Self {
        LogArgs {
            log_format: "text".into(),
            log_level: None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub mode: Mode,
    /// How to log.
    pub log: LogConfig,
}

/// One command of the contract.
#[derive(Debug, Clone)]
pub enum Mode {
    /// wait → lock → migrate → unlock → supervise COMMAND.
    Boot {
        /// The database.
        db: DbConfig,
        /// The lock.
        lock: LockConfig,
        /// The migrations.
        migrate: MigrateConfig,
        /// Supervision of COMMAND.
        sup: SuperviseConfig,
        /// Replace pgboot with COMMAND instead of supervising it.
        exec: bool,
    },
    /// PID-1 duties only.
    Supervise(SuperviseConfig),
    /// Wait for Postgres.
    Wait(DbConfig),
    /// wait → lock → migrate → exit.
    Migrate {
        /// The database.
        db: DbConfig,
        /// The lock.
        lock: LockConfig,
        /// The migrations.
        migrate: MigrateConfig,
    },
    /// List what `migrate` would apply; change nothing.
    DryRun {
        /// The database.
        db: DbConfig,
        /// The migrations.
        migrate: MigrateConfig,
    },
    /// Report applied/pending migrations and the lock holder.
    Status {
        /// The database.
        db: DbConfig,
        /// The lock.
        lock: LockConfig,
        /// The migrations.
        migrate: MigrateConfig,
        /// A table or JSON.
        output: crate::status::Output,
    },
    /// Create a migration file.
    New(crate::new::NewConfig),
    /// Print a completion script.
    Completions(Shell),
    /// Print the man page.
    Man,
    /// wait → lock → run COMMAND under the lock → exit with its status.
    Run {
        /// The database.
        db: DbConfig,
        /// The lock.
        lock: LockConfig,
        /// Supervision of COMMAND.
        sup: SuperviseConfig,
    },
}

/// Where Postgres is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `--database-url`; `None` means libpq's `PG*` variables.
    pub url: Option<String>,
    /// `--migrate-database-url`, for the lock and migrations.
    pub migrate_url: Option<String>,
    /// `--wait-timeout`.
    pub wait_timeout: Duration,
}

impl DbConfig {
    /// The URL the lock and migrations use.
    #[must_use]
    pub fn lock_url(&self) -> Option<&str> {
        self.migrate_url.as_deref().or(self.url.as_deref())
    }
}

/// The advisory lock key as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockKey {
    /// A literal 64-bit key.
    Int(i64),
    /// A name, hashed by the server with `hashtextextended(name, 0)`.
    Name(String),
}

/// The lock's key and how long to wait for it.
#[derive(Debug, Clone)]
pub struct LockConfig {
    /// `--lock-key`.
    pub key: LockKey,
    /// `--lock-timeout`.
    pub timeout: Duration,
}

/// What `--db-ahead` says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbAhead {
    /// Log it and go on.
    Warn,
    /// Exit 65.
    Fail,
}

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    /// `--migrations`.
    pub dir: Option<std::path::PathBuf>,
    /// `--migrate-cmd`, split into words.
    pub command: Option<Vec<String>>,
    /// `--migrate-timeout`.
    pub timeout: Option<Duration>,
    /// `--db-ahead`.
    pub db_ahead: DbAhead,
    /// `--ddl-lock-timeout` and `--ddl-retry-for`.
    pub ddl: DdlRetry,
}

/// Bounded waits for table locks, and retries of migrations that hit them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdlRetry {
    /// `--ddl-lock-timeout`: the `lock_timeout` of migration statements;
    /// `None` when `0` turned it off (then nothing is retried).
    pub lock_timeout: Option<Duration>,
    /// `--ddl-retry-for`: the retry budget, from the first attempt.
    pub retry_for: Duration,
}

/// The largest `lock_timeout` Postgres takes: an `int` of milliseconds.
const MAX_LOCK_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How to supervise COMMAND.
#[derive(Debug, Clone)]
pub struct SuperviseConfig {
    /// The command and its arguments (already expanded when `--expand-env`);
    /// any bytes, as the kernel allows.
    pub command: Vec<OsString>,
    /// `--grace-period`.
    pub grace_period: Option<Duration>,
    /// `--signal-map`: signal number → signal number.
    pub signal_map: BTreeMap<i32, i32>,
}

/// How to log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `--log-format json`.
    pub json: bool,
    /// The log filter: a level and `target=level` directives.
    pub filter: String,
}

/// Parses the given arguments with the given environment lookup for the
/// variables clap does not read itself (`PGBOOT_LOG`, `RUST_LOG`, and the
/// ones `--expand-env` expands).
///
/// # Errors
/// A usage error (exit 64) naming the flag or variable and the bad value;
/// `--help` and `--version` come back as `Ok(Err(text))` to print and exit 0.
pub fn from_args<I, T>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<std::result::Result<Config, String>>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    Ok(Err(e.render().to_string()))
                }
                _ => Err(Error::Usage(format!(
                    "{}{}",
                    e.render()
                        .to_string()
                        .trim_start_matches("error: ")
                        .trim_end(),
                    command_hint(&e)
                ))),
            };
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Error::Usage(e.to_string()))?;
    let (sub_matches, mode) = match cli.sub {
        None => {
            let m = &matches;
            let sup = supervise_config(m, &cli.sup, cli.command, env)?;
            let db = db_config(m, cli.db)?;
            if db.url.is_none() && db.migrate_url.is_none() && !libpq_configured(env) {
                return Err(Error::Usage(
                    "no database configured: set DATABASE_URL (or --database-url, or libpq's \
                     PGHOST/PGDATABASE/... variables); to supervise without a database use \
                     `pgboot supervise -- COMMAND`"
                        .into(),
                ));
            }
            let mode = Mode::Boot {
                db,
                lock: lock_config(m, &cli.lock)?,
                migrate: migrate_config(m, cli.migrate)?,
                sup,
                exec: cli.exec.exec,
            };
            (m, (mode, cli.log))
        }
        Some(sub) => {
            let (_, m) = matches
                .subcommand()
                .ok_or_else(|| Error::Internal("subcommand without matches".into()))?;
            let pair = sub_mode(sub, m, env)?;
            (m, pair)
        }
    };
    let (mode, log) = mode;
    let log = log_config(sub_matches, log, env)?;
    Ok(Ok(Config { mode, log }))
}

/// pgboot's command line as clap sees it: what is parsed, and what
/// `completions` and `man` describe.
#[must_use]
pub fn command() -> clap::Command {
    let codes = exit_codes_help();
    Cli::command()
        .after_long_help(codes.clone())
        .mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(|s| {
            s.after_long_help(codes.clone())
                .mut_args(|a| a.hide_env_values(true))
        })
        // A probe answers quickly: `status` against a database that is not
        // there says so in seconds, not after a boot's minute.
        .mut_subcommand("status", |s| {
            s.mut_arg("wait_timeout", |a| a.default_value(STATUS_WAIT_TIMEOUT))
        })
}

/// `status`'s default `--wait-timeout`.
pub const STATUS_WAIT_TIMEOUT: &str = "5s";

/// A hint for the commonest slip: the server's command given without `--`
/// (`pgboot uvicorn app`), which clap reads as an unknown subcommand or a
/// stray argument.
fn command_hint(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidSubcommand | ErrorKind::UnknownArgument
    ) {
        return String::new();
    }
    let word = [ContextKind::InvalidSubcommand, ContextKind::InvalidArg]
        .into_iter()
        .find_map(|k| match e.get(k) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            _ => None,
        });
    match word {
        Some(w) if !w.starts_with('-') => format!(
            "\nhint: if `{w}` is the command to run, put it after `--`: \
             `pgboot [OPTIONS] -- {w} ...` (or `pgboot run [OPTIONS] -- {w} ...`, \
             `pgboot supervise -- {w} ...`)"
        ),
        _ => String::new(),
    }
}

/// Whether the command line or the environment asks for JSON logs, read
/// before clap, so that even a usage error is logged as JSON.
#[must_use]
pub fn wants_json(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> bool {
    let is_json = |v: &str| v.trim().eq_ignore_ascii_case("json");
    let mut words = args.iter().map(|a| a.to_string_lossy());
    let mut from_flag = None;
    while let Some(w) = words.next() {
        if w == "--" {
            break;
        }
        if let Some(v) = w.strip_prefix("--log-format=") {
            from_flag = Some(is_json(v));
        } else if w == "--log-format" {
            from_flag = words.next().map(|v| is_json(&v));
        }
    }
    from_flag.unwrap_or_else(|| env("PGBOOT_LOG_FORMAT").is_some_and(|v| is_json(&v)))
}

fn sub_mode(
    sub: Sub,
    m: &ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Mode, LogArgs)> {
    Ok(match sub {
        Sub::Supervise { sup, log, command } => (
            Mode::Supervise(supervise_config(m, &sup, command, env)?),
            log,
        ),
        Sub::Wait { db, log } => (Mode::Wait(db_config(m, db)?), log),
        Sub::Migrate {
            db,
            lock,
            migrate,
            log,
            dry_run,
        } => (
            if dry_run {
                Mode::DryRun {
                    db: db_config(m, db)?,
                    migrate: migrate_config(m, migrate)?,
                }
            } else {
                Mode::Migrate {
                    db: db_config(m, db)?,
                    lock: lock_config(m, &lock)?,
                    migrate: migrate_config(m, migrate)?,
                }
            },
            log,
        ),
        Sub::Status {
            db,
            lock,
            migrate,
            log,
            json,
        } => (
            Mode::Status {
                db: db_config(m, db)?,
                lock: lock_config(m, &lock)?,
                migrate: migrate_config(m, migrate)?,
                output: if json {
                    crate::status::Output::Json
                } else {
                    crate::status::Output::Text
                },
            },
            log,
        ),
        Sub::New {
            name,
            migrations,
            reversible,
            log,
        } => {
            crate::new::check_name(&name)
                .map_err(|why| Error::Usage(format!("NAME {name:?}: {why}")))?;
            let dir = migrations
                .filter(|d| !d.trim().is_empty())
                .unwrap_or_else(|| "migrations".into());
            let layout = if reversible {
                crate::new::Layout::Reversible
            } else {
                crate::new::Layout::Simple
            };
            (
                Mode::New(crate::new::NewConfig {
                    name,
                    dir: dir.into(),
                    layout,
                }),
                log,
            )
        }
        Sub::Completions { shell } => (Mode::Completions(shell), LogArgs::default()),
        Sub::Man => (Mode::Man, LogArgs::default()),
        Sub::Run {
            db,
            lock,
            sup,
            log,
            command,
        } => (
            Mode::Run {
                db: db_config(m, db)?,
                lock: lock_config(m, &lock)?,
                sup: supervise_config(m, &sup, command, env)?,
            },
            log,
        ),
    })
}

/// Whether any libpq variable names a server, so that boot has a database.
fn libpq_configured(env: &dyn Fn(&str) -> Option<String>) -> bool {
    [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSERVICE",
    ]
    .iter()
    .any(|k| env(k).is_some_and(|v| !v.is_empty()))
}

/// How the user spelled option `id`: `--flag`, or `VAR` when it came from the environment.
fn origin(m: &ArgMatches, id: &str) -> String {
    let arg = Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == id)
        .map(|a| {
            (
                a.get_long().unwrap_or(id).to_string(),
                a.get_env().map(|e| e.to_string_lossy().into_owned()),
            )
        });
    let (long, env) = arg.unwrap_or_else(|| (id.replace('_', "-"), None));
    match (m.value_source(id), env) {
        (Some(ValueSource::EnvVariable), Some(env)) => env,
        _ => format!("--{long}"),
    }
}

fn bad(m: &ArgMatches, id: &str, value: &str, why: &str) -> Error {
    Error::Usage(format!("{}={value:?}: {why}", origin(m, id)))
}

/// A usage error about a value that may hold a secret (a command line with
/// a URL in it): names the option and what is wrong, never the value.
fn bad_hidden(m: &ArgMatches, id: &str, why: &str) -> Error {
    Error::Usage(format!("{}: {why}", origin(m, id)))
}

/// The longest duration any option takes. Timers and deadlines are computed
/// from it without overflow; anything longer is a usage error.
pub const MAX_DURATION: Duration = Duration::from_hours(8784);

/// Parses a duration: plain seconds, or humantime (`90s`, `5m`, `1h30m`).
///
/// # Errors
/// A description of what is wrong.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let d = match t.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(t).map_err(|e| e.to_string())?,
    };
    if d > MAX_DURATION {
        return Err(format!(
            "longer than the maximum, {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

fn duration(m: &ArgMatches, id: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|e| {
        bad(
            m,
            id,
            value,
            &format!("not a duration ({e}); use e.g. 90s, 5m, 1h30m, or plain seconds"),
        )
    })
}

fn db_config(m: &ArgMatches, a: DbArgs) -> Result<DbConfig> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    Ok(DbConfig {
        url: nonempty(a.database_url),
        migrate_url: nonempty(a.migrate_database_url),
        wait_timeout: duration(m, "wait_timeout", &a.wait_timeout)?,
    })
}

fn lock_config(m: &ArgMatches, a: &LockArgs) -> Result<LockConfig> {
    let raw = a.lock_key.trim();
    let key = if raw.is_empty() {
        return Err(bad(
            m,
            "lock_key",
            &a.lock_key,
            "empty lock key; use a 64-bit integer or a name",
        ));
    } else if let Ok(n) = raw.parse::<i64>() {
        LockKey::Int(n)
    } else if raw.starts_with(['-', '+']) || raw.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad(
            m,
            "lock_key",
            &a.lock_key,
            "a number outside the 64-bit signed range; use a smaller integer or a name",
        ));
    } else {
        LockKey::Name(raw.to_string())
    };
    Ok(LockConfig {
        key,
        timeout: duration(m, "lock_timeout", &a.lock_timeout)?,
    })
}

fn migrate_config(m: &ArgMatches, a: MigrateArgs) -> Result<MigrateConfig> {
    let dir = a
        .migrations
        .filter(|s| !s.trim().is_empty())
        .map(std::path::PathBuf::from);
    let command = match a.migrate_cmd.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(cmd) => {
            let words = shlex::split(cmd).ok_or_else(|| {
                bad_hidden(
                    m,
                    "migrate_cmd",
                    "unbalanced quotes or a trailing backslash; quote it as a shell would",
                )
            })?;
            if words.is_empty() {
                return Err(bad_hidden(m, "migrate_cmd", "no command in it"));
            }
            Some(words)
        }
    };
    if dir.is_some() && command.is_some() {
        return Err(Error::Usage(format!(
            "{} and {} both set: choose the built-in runner or an external command, not both",
            origin(m, "migrations"),
            origin(m, "migrate_cmd")
        )));
    }
    let timeout = match a.migrate_timeout.as_deref() {
        None | Some("") => None,
        Some(v) => Some(duration(m, "migrate_timeout", v)?),
    };
    let db_ahead = match a.db_ahead.trim().to_ascii_lowercase().as_str() {
        "warn" => DbAhead::Warn,
        "fail" => DbAhead::Fail,
        _ => {
            return Err(bad(m, "db_ahead", &a.db_ahead, "must be `warn` or `fail`"));
        }
    };
    let lock_timeout = duration(m, "ddl_lock_timeout", &a.ddl_lock_timeout)?;
    if lock_timeout > MAX_LOCK_TIMEOUT {
        return Err(bad(
            m,
            "ddl_lock_timeout",
            &a.ddl_lock_timeout,
            "longer than Postgres' lock_timeout takes (about 24 days); use a shorter duration, or 0 to turn it off",
        ));
    }
    let ddl = DdlRetry {
        lock_timeout: (!lock_timeout.is_zero()).then_some(lock_timeout),
        retry_for: duration(m, "ddl_retry_for", &a.ddl_retry_for)?,
    };
    Ok(MigrateConfig {
        dir,
        command,
        timeout,
        db_ahead,
        ddl,
    })
}

fn supervise_config(
    m: &ArgMatches,
    a: &SuperviseArgs,
    command: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SuperviseConfig> {
    if command.is_empty() || command[0].is_empty() {
        return Err(Error::Usage(
            "missing COMMAND: put the server's command after `--`, e.g. `pgboot -- uvicorn app.main:app`"
                .into(),
        ));
    }
    let command = if a.expand_env {
        command
            .iter()
            .map(|raw| {
                // An argument that is not UTF-8 holds no variable reference
                // pgboot could name; it passes through as it is.
                let Some(arg) = raw.to_str() else {
                    return Ok(raw.clone());
                };
                expand(arg, env).map(OsString::from).map_err(|e| {
                    Error::Usage(format!(
                        "{}: in argument {arg:?}: {e}",
                        origin(m, "expand_env")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        command
    };
    let grace_period = match a.grace_period.as_deref() {
        None | Some("") => None,
        Some(v) => Some(duration(m, "grace_period", v)?),
    };
    let signal_map = match a.signal_map.as_deref() {
        None | Some("") => BTreeMap::new(),
        Some(v) => signals::parse_map(v).map_err(|e| bad(m, "signal_map", v, &e))?,
    };
    Ok(SuperviseConfig {
        command,
        grace_period,
        signal_map,
    })
}

fn log_config(
    m: &ArgMatches,
    a: LogArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LogConfig> {
    let json = match a.log_format.trim().to_ascii_lowercase().as_str() {
        "text" => false,
        "json" => true,
        _ => {
            return Err(bad(
                m,
                "log_format",
                &a.log_format,
                "must be `text` or `json`",
            ));
        }
    };
    let (filter, origin) = match a.log_level {
        Some(f) => (f, "--log-level".to_string()),
        None => match (env("PGBOOT_LOG"), env("RUST_LOG")) {
            (Some(f), _) if !f.is_empty() => (f, "PGBOOT_LOG".to_string()),
            (_, Some(f)) if !f.is_empty() => (f, "RUST_LOG".to_string()),
            _ => ("info".to_string(), String::new()),
        },
    };
    if let Err(e) = crate::logging::parse_filter(&filter) {
        return Err(Error::Usage(format!(
            "{origin}={filter:?}: not a log filter ({e}); use e.g. info, debug, or pgboot=debug"
        )));
    }
    Ok(LogConfig { json, filter })
}

/// Expands `$VAR`, `${VAR}` and `${VAR:-default}` in one argument; `$$` is a literal `$`.
///
/// # Errors
/// An unset variable without a default, or a malformed reference.
pub fn expand(
    arg: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| "`${` without a closing `}`".to_string())?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(format!("`${{{inner}}}` is not a variable reference"));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "${{{name}}} is not set; set it, or give a default as ${{{name}:-value}}"
                    ));
                }
            }
        } else {
            let len = rest
                .char_indices()
                .find(|&(i, c)| {
                    !(c == '_' || c.is_ascii_alphanumeric()) || (i == 0 && c.is_ascii_digit())
                })
                .map_or(rest.len(), |(i, _)| i);
            if len == 0 {
                // A lone `$` (e.g. at the end, or before a space) stays literal.
                out.push('$');
                continue;
            }
            let name = &rest[..len];
            rest = &rest[len..];
            match env(name) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "${name} is not set; set it, or give a default as ${{{name}:-value}}"
                    ));
                }
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The exit-code table shown by `--help` (long form), from `exit.rs`.
fn exit_codes_help() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "Every option is also an environment variable (shown in brackets); the flag wins.\n\
         Durations take humantime form (90s, 5m, 1h30m) or plain seconds, at most 366 days.\n\nExit codes:\n",
    );
    for (code, meaning) in crate::exit::Exit::TABLE {
        let _ = writeln!(out, "  {code:<12} {meaning}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut words = vec!["pgboot"];
        words.extend_from_slice(args);
        from_args(words, &lookup).map(|r| r.expect("not help"))
    }

    fn usage_message(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse(args, env) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn boot_with_url_and_command() {
        let c = parse(
            &["--database-url", "postgres://u@h/d", "--", "uvicorn", "app"],
            &[],
        )
        .unwrap();
        let Mode::Boot { db, lock, sup, .. } = c.mode else {
            panic!("not boot")
        };
        assert_eq!(db.url.as_deref(), Some("postgres://u@h/d"));
        assert_eq!(db.wait_timeout, Duration::from_mins(1));
        assert_eq!(lock.key, LockKey::Name("pgboot".into()));
        assert_eq!(lock.timeout, Duration::from_mins(10));
        assert_eq!(sup.command, ["uvicorn", "app"]);
    }

    #[test]
    fn boot_without_database_points_to_supervise() {
        let m = usage_message(&["--", "true"], &[]);
        assert!(m.contains("pgboot supervise"), "{m}");
    }

    #[test]
    fn boot_accepts_libpq_variables() {
        assert!(parse(&["--", "true"], &[("PGHOST", "db")]).is_ok());
    }

    #[test]
    fn missing_command_is_usage() {
        let m = usage_message(&["supervise"], &[]);
        assert!(m.contains("missing COMMAND"), "{m}");
    }

    #[test]
    fn bad_duration_names_the_flag_and_value() {
        let m = usage_message(&["wait", "--wait-timeout", "soon"], &[]);
        assert!(m.contains("--wait-timeout") && m.contains("soon"), "{m}");
    }

    #[test]
    fn durations_take_seconds_and_humantime() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_mins(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("366d").unwrap(), MAX_DURATION);
        for huge in [
            "367d",
            "18446744073709551615",
            "18446744073709551615s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn lock_key_integer_or_name() {
        let key = |k: &str| {
            let c = parse(&["status", "--lock-key", k], &[]).unwrap();
            let Mode::Status { lock, .. } = c.mode else {
                panic!()
            };
            lock.key
        };
        assert_eq!(key("42"), LockKey::Int(42));
        assert_eq!(key("-7"), LockKey::Int(-7));
        assert_eq!(key("my-app"), LockKey::Name("my-app".into()));
        let m = usage_message(&["status", "--lock-key", "99999999999999999999"], &[]);
        assert!(m.contains("64-bit"), "{m}");
    }

    #[test]
    fn signal_map_parses_and_rejects_unknown_names() {
        let c = parse(
            &[
                "supervise",
                "--signal-map",
                "TERM:QUIT,SIGINT:TERM",
                "--",
                "x",
            ],
            &[],
        )
        .unwrap();
        let Mode::Supervise(sup) = c.mode else {
            panic!()
        };
        assert_eq!(sup.signal_map.get(&15), Some(&3));
        assert_eq!(sup.signal_map.get(&2), Some(&15));
        let m = usage_message(&["supervise", "--signal-map", "TERM:BOGUS", "--", "x"], &[]);
        assert!(m.contains("--signal-map") && m.contains("BOGUS"), "{m}");
    }

    #[test]
    fn migrations_and_migrate_cmd_conflict() {
        let m = usage_message(
            &[
                "migrate",
                "--migrations",
                "m",
                "--migrate-cmd",
                "alembic upgrade head",
            ],
            &[],
        );
        assert!(m.contains("both"), "{m}");
    }

    #[test]
    fn migrate_cmd_is_split_like_a_shell() {
        let c = parse(
            &[
                "migrate",
                "--migrate-cmd",
                "python -m 'alembic' upgrade \"head\"",
            ],
            &[],
        )
        .unwrap();
        let Mode::Migrate { migrate, .. } = c.mode else {
            panic!()
        };
        assert_eq!(
            migrate.command.unwrap(),
            ["python", "-m", "alembic", "upgrade", "head"]
        );
        let m = usage_message(&["migrate", "--migrate-cmd", "alembic 'upgrade"], &[]);
        assert!(m.contains("quotes"), "{m}");
    }

    #[test]
    fn db_ahead_and_log_format_are_checked() {
        let m = usage_message(&["migrate", "--db-ahead", "maybe"], &[]);
        assert!(m.contains("--db-ahead") && m.contains("maybe"), "{m}");
        let m = usage_message(&["wait", "--log-format", "xml"], &[]);
        assert!(m.contains("--log-format") && m.contains("xml"), "{m}");
    }

    #[test]
    fn ddl_lock_timeout_defaults_on_and_zero_turns_it_off() {
        let ddl = |args: &[&str]| {
            let mut words = vec!["migrate"];
            words.extend_from_slice(args);
            let Mode::Migrate { migrate, .. } = parse(&words, &[]).unwrap().mode else {
                panic!("not migrate")
            };
            migrate.ddl
        };
        assert_eq!(
            ddl(&[]),
            DdlRetry {
                lock_timeout: Some(Duration::from_secs(2)),
                retry_for: Duration::from_mins(5)
            }
        );
        assert_eq!(ddl(&["--ddl-lock-timeout", "0"]).lock_timeout, None);
        assert_eq!(
            ddl(&["--ddl-lock-timeout", "750ms", "--ddl-retry-for", "90"]),
            DdlRetry {
                lock_timeout: Some(Duration::from_millis(750)),
                retry_for: Duration::from_secs(90)
            }
        );
        let m = usage_message(&["migrate", "--ddl-lock-timeout", "30d"], &[]);
        assert!(
            m.contains("--ddl-lock-timeout") && m.contains("24 days"),
            "{m}"
        );
        let m = usage_message(&["migrate", "--ddl-retry-for", "often"], &[]);
        assert!(m.contains("--ddl-retry-for") && m.contains("often"), "{m}");
    }

    #[test]
    fn expand_env_cases() {
        let env = |k: &str| match k {
            "HOST" => Some("0.0.0.0".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("--host=$HOST", &env).unwrap(), "--host=0.0.0.0");
        assert_eq!(expand("${HOST}:80", &env).unwrap(), "0.0.0.0:80");
        assert_eq!(expand("${PORT:-8000}", &env).unwrap(), "8000");
        assert_eq!(expand("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(expand("$$HOST", &env).unwrap(), "$HOST");
        assert_eq!(expand("cost $ 5", &env).unwrap(), "cost $ 5");
        assert!(expand("$PORT", &env).unwrap_err().contains("PORT"));
        assert!(expand("${HOST", &env).is_err());
    }

    #[test]
    fn expand_env_unset_is_usage_error() {
        let m = usage_message(&["supervise", "--expand-env", "--", "echo", "$NOPE_X"], &[]);
        assert!(m.contains("NOPE_X"), "{m}");
    }

    #[test]
    fn bad_log_filter_is_usage() {
        let m = usage_message(&["wait", "--log-level", "pgboot=loud"], &[]);
        assert!(m.contains("--log-level"), "{m}");
    }
}

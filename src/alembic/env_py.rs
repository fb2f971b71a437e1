//! `env.py`: whether the version table is where pgboot reads it (`alembic_version`, found
//! through the connection's `search_path`), judged on env.py's code only.
//!
//! env.py is tokenized (`lexer.rs`), so a comment or a string that mentions `version_table`
//! changes nothing; it must compile (`syntax.rs`). Then, as code:
//! - no name that moves the table or the schema it is found in: `version_table`,
//!   `version_table_schema`, `upgrade_token` (the multi-database template),
//!   `schema_translate_map`, `search_path`; nor SQL or connection settings of env.py's own
//!   (`execute`, `exec_driver_sql`, `connect_args`, event listeners), which could set a
//!   `search_path` inside a string;
//! - every `configure(...)` call (Alembic's `context.configure`) passes only keywords known not
//!   to touch the version table, and no `*args`/`**kwargs` — options built elsewhere (another
//!   module's settings, a dict) arrive that way;
//! - env.py calls `configure` itself, calls it (never hands it or `context` to other code), and
//!   runs no code it cannot see (`exec`, `eval`, `importlib`, `__import__`).
//!
//! The modules env.py imports are not read: a module that configures Alembic would have to be
//! handed `context` or `configure`, which is doubt, or import Alembic's `context` itself and be
//! called from env.py, which this check does not see.

use std::fs;
use std::path::Path;

use super::lexer::{LogicalLine, Tok, tokenize};
use super::syntax;

/// Names that, used as code anywhere in env.py, make the version table's place uncertain.
const MOVES_THE_TABLE: [(&str, &str); 10] = [
    ("version_table", "env.py configures its own version table"),
    (
        "version_table_schema",
        "env.py puts the version table in a schema of its own",
    ),
    (
        "upgrade_token",
        "env.py looks like the multi-database template (one version table per database)",
    ),
    (
        "schema_translate_map",
        "env.py uses schema_translate_map, which can move the version table",
    ),
    (
        "search_path",
        "env.py changes search_path, so the version table may live elsewhere",
    ),
    (
        "execute",
        "env.py runs SQL of its own (execute), which may change search_path",
    ),
    (
        "exec_driver_sql",
        "env.py runs SQL of its own (exec_driver_sql), which may change search_path",
    ),
    (
        "connect_args",
        "env.py passes connect_args, which may set search_path",
    ),
    (
        "listens_for",
        "env.py installs event listeners, which may change search_path",
    ),
    ("MigrationContext", "env.py builds its own MigrationContext"),
];

/// Names of code env.py would run without pgboot seeing it.
const HIDDEN_CODE: [&str; 5] = ["exec", "eval", "importlib", "__import__", "runpy"];

/// `context.configure` keywords that do not change which table holds the revisions, where it
/// is, or whether the upgrade runs online.
const HARMLESS_KEYWORDS: [&str; 26] = [
    "connection",
    "url",
    "dialect_name",
    "dialect_opts",
    "transactional_ddl",
    "transaction_per_migration",
    "output_buffer",
    "output_encoding",
    "target_metadata",
    "include_name",
    "include_object",
    "include_schemas",
    "process_revision_directives",
    "compare_type",
    "compare_server_default",
    "render_item",
    "literal_binds",
    "alembic_module_prefix",
    "sqlalchemy_module_prefix",
    "user_module_prefix",
    "on_version_apply",
    "render_as_batch",
    "template_args",
    "version_table_pk",
    "include_symbol",
    "compare_server_default_fn",
];

/// Whether the version table is where pgboot reads it.
///
/// # Errors
/// Why it may not be, in words a user can act on.
pub(super) fn check_env_py(script_dir: &Path) -> Result<(), String> {
    let path = script_dir.join("env.py");
    let text =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_env_text(&text)
}

/// [`check_env_py`] on env.py's text.
pub(super) fn check_env_text(text: &str) -> Result<(), String> {
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n");
    let lines = tokenize(&text).map_err(|e| format!("env.py would not compile: {e}"))?;
    syntax::check(&lines).map_err(|e| format!("env.py would not compile: {e}"))?;
    // Names first, so that the reason is the most specific one.
    for line in &lines {
        for t in &line.toks {
            let Tok::Name(name) = t else { continue };
            let name = name.as_str();
            if let Some((_, why)) = MOVES_THE_TABLE.iter().find(|(n, _)| *n == name) {
                return Err(format!("{why} (env.py line {})", line.lineno));
            }
            if HIDDEN_CODE.contains(&name) {
                return Err(format!(
                    "env.py runs code pgboot cannot read (`{name}`, line {})",
                    line.lineno
                ));
            }
        }
    }
    let mut configured = false;
    for line in &lines {
        let at = |why: &str| format!("{why} (env.py line {})", line.lineno);
        let toks = &line.toks;
        let import_line =
            matches!(toks.first(), Some(Tok::Name(n)) if n == "import" || n == "from");
        for (k, t) in toks.iter().enumerate() {
            let Tok::Name(name) = t else { continue };
            let next = toks.get(k + 1);
            if name == "context" && !import_line && next != Some(&Tok::Op(".")) {
                return Err(at(
                    "env.py hands Alembic's `context` to other code, which may configure the version table",
                ));
            }
            if name == "configure" && !import_line {
                if next != Some(&Tok::Op("(")) {
                    return Err(at(
                        "env.py passes `configure` around instead of calling it, so its options cannot be read",
                    ));
                }
                configure_call(line, k + 1).map_err(|why| at(&why))?;
                configured = true;
            }
        }
    }
    if configured {
        Ok(())
    } else {
        Err("env.py never calls context.configure itself, so Alembic may be configured by code pgboot does not read".to_owned())
    }
}

/// The arguments of the `configure(` call whose `(` is at `open`.
fn configure_call(line: &LogicalLine, open: usize) -> Result<(), String> {
    let toks = &line.toks;
    let mut depth = 0usize;
    let mut arg_start = open + 1;
    for k in open..toks.len() {
        match &toks[k] {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(o @ (")" | "]" | "}")) => {
                depth -= 1;
                if depth == 0 && *o == ")" {
                    return configure_argument(&toks[arg_start..k]);
                }
            }
            Tok::Op(",") if depth == 1 => {
                configure_argument(&toks[arg_start..k])?;
                arg_start = k + 1;
            }
            _ => {}
        }
    }
    Ok(())
}

fn configure_argument(arg: &[Tok]) -> Result<(), String> {
    match arg {
        [Tok::Op("**"), ..] => Err(
            "context.configure gets **kwargs, whose options (perhaps a version table) pgboot cannot read; pass them as keywords in env.py".to_owned(),
        ),
        [Tok::Op("*"), ..] => Err(
            "context.configure gets *args, whose options pgboot cannot read; pass them as keywords in env.py".to_owned(),
        ),
        [Tok::Name(key), Tok::Op("="), ..] if !HARMLESS_KEYWORDS.contains(&key.as_str()) => {
            Err(format!(
                "context.configure gets `{key}=`, an option that may change the version table or the upgrade"
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_env_text;

    const TEMPLATE: &str = "from alembic import context\nfrom sqlalchemy import engine_from_config, pool\n\nconfig = context.config\n\n\ndef run_migrations_online() -> None:\n    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix=\"sqlalchemy.\", poolclass=pool.NullPool)\n    with connectable.connect() as connection:\n        context.configure(connection=connection, target_metadata=None)\n        with context.begin_transaction():\n            context.run_migrations()\n\n\nrun_migrations_online()\n";

    fn with(extra: &str) -> String {
        format!("{TEMPLATE}{extra}")
    }

    #[test]
    fn the_generic_template_is_read() {
        assert_eq!(check_env_text(TEMPLATE), Ok(()));
    }

    #[test]
    fn the_example_services_env_py_is_read() {
        let text = include_str!("../../examples/pipeline/migrations/env.py");
        assert_eq!(check_env_text(text), Ok(()));
    }

    #[test]
    fn comments_and_strings_never_change_the_decision() {
        for text in [
            with("# version_table = 'other' was tried once\n"),
            with("NOTE = \"version_table and search_path\"\n"),
            with("DOC = '''\ncontext.configure(version_table='x', **settings)\n'''\n"),
            with("F = f\"{'version_table'}\"\nB = b'search_path'\n"),
            format!("\"\"\"env.py: keeps version_table_schema as is.\"\"\"\n{TEMPLATE}"),
            with("X = 'a' \\\n    'version_table'\n"),
        ] {
            assert_eq!(check_env_text(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn version_table_as_code_is_doubt() {
        for (text, why) in [
            (
                TEMPLATE.replace(
                    "target_metadata=None",
                    "target_metadata=None, version_table='v'",
                ),
                "version table",
            ),
            (
                TEMPLATE.replace(
                    "target_metadata=None",
                    "target_metadata=None, version_table=VT",
                ),
                "version table",
            ),
            (
                TEMPLATE.replace("target_metadata=None", "version_table_schema='s'"),
                "schema",
            ),
            (with("opts = dict(version_table='mine')\n"), "version table"),
            (
                with("context.configure(upgrade_token='%s_upgrades')\n"),
                "multi-database",
            ),
        ] {
            let err = check_env_text(&text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn kwargs_and_imported_settings_are_doubt() {
        let imported = TEMPLATE.replace(
            "from alembic import context\n",
            "from alembic import context\nfrom myapp.settings import ALEMBIC_OPTIONS\n",
        );
        for text in [
            imported.replace("target_metadata=None)", "**ALEMBIC_OPTIONS)"),
            TEMPLATE.replace("target_metadata=None)", "**{\"version_table\": \"v\"})"),
            TEMPLATE.replace(
                "context.configure(connection=connection, target_metadata=None)",
                "context.configure(*args)",
            ),
        ] {
            let err = check_env_text(&text).unwrap_err();
            assert!(err.contains("args"), "{text}: {err}");
        }
        let err =
            check_env_text(&TEMPLATE.replace("target_metadata=None", "as_sql=True")).unwrap_err();
        assert!(err.contains("as_sql"), "{err}");
    }

    #[test]
    fn configuration_by_other_code_is_doubt() {
        let delegated =
            "from alembic import context\nfrom myapp.migrations import run\n\nrun(context)\n";
        assert!(check_env_text(delegated).unwrap_err().contains("hands"));
        let nothing =
            "from alembic import context\nimport myapp.migrations\n\nmyapp.migrations.run()\n";
        assert!(check_env_text(nothing).unwrap_err().contains("never calls"));
        let rebound = with("cfg = context.configure\ncfg(version=1)\n");
        assert!(
            check_env_text(&rebound)
                .unwrap_err()
                .contains("passes `configure` around")
        );
        let hidden = with("exec(open('more.py').read())\n");
        assert!(check_env_text(&hidden).unwrap_err().contains("cannot read"));
        let sql = TEMPLATE.replace(
            "    with connectable.connect() as connection:\n",
            "    with connectable.connect() as connection:\n        connection.execute(text('SET search_path TO tenant'))\n",
        );
        assert!(check_env_text(&sql).unwrap_err().contains("SQL of its own"));
    }

    #[test]
    fn an_env_py_python_would_not_compile_is_doubt() {
        let err = check_env_text(&TEMPLATE.replace(
            "def run_migrations_online() -> None:",
            "def run_migrations_online() -> None",
        ))
        .unwrap_err();
        assert!(err.contains("would not compile"), "{err}");
    }
}

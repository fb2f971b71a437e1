//! The Alembic fast path: decide, without starting Python, whether the migration command is a
//! plain `alembic upgrade head` and which revisions are the heads of its revision files.
//!
//! **Needs:** the migration command's argv, the absolute working directory it runs in, and the
//! value of `ALEMBIC_CONFIG` if set; read access to the ini file, `env.py`, `pyproject.toml`
//! (if any) and the version directories; then the rows of `alembic_version`, which the caller
//! reads. Std only; Python is never run.
//!
//! **Returns:** [`expect`] reads the command and the files; `Expected::compare` gives an
//! [`AlembicState`]: behind, at head, ahead, or unknown with the reason, shared by boot (the
//! fast path is taken only at head) and `status`.
//!
//! **Any doubt means unknown:** the fast path is taken only when it is provably what Alembic
//! itself would conclude; every reader answers with a reason rather than guess.
//!
//! The files, in the order a check goes through them:
//! - `command.rs`: recognising argv (`alembic …`, `python -m alembic …`).
//! - `ini.rs`: the ini file, read as `configparser` reads it.
//! - `script.rs`: the script directory: options, `pyproject.toml`, the version directories.
//! - `env_py.rs`: whether `env.py` keeps the version table where pgboot reads it.
//! - `lexer.rs`: a small Python tokenizer (comments and strings are never code).
//! - `syntax.rs`: whether Python would compile a file, decided conservatively.
//! - `revision.rs`: one revision file's `revision` / `down_revision`.
//! - `literal.rs`: the Python literals accepted as their values.
//! - `heads.rs`: the revision graph and its heads.
//! - `grammar.rs`: the token-level rules of `syntax.rs`.
//! - `state.rs`: the answer, [`AlembicState`], from the files and the database's rows.

mod command;
mod env_py;
mod grammar;
mod heads;
mod ini;
mod lexer;
mod literal;
#[cfg(test)]
mod properties;
mod revision;
mod script;
mod state;
mod syntax;
#[cfg(test)]
mod test_support;

pub use state::{AlembicState, expect};

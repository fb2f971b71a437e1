//! The Alembic fast path: decide, without starting Python, whether the migration command is a
//! plain `alembic upgrade head` and which revisions are the heads of its revision files.
//!
//! **Needs:** the migration command's argv, the absolute working directory it runs in, and the
//! value of `ALEMBIC_CONFIG` if set ([`recognise`]); read access to the ini file, `env.py`,
//! `pyproject.toml` (if any) and the version directories ([`load`]). Std only; Python is never run.
//!
//! **Returns:** [`recognise`] gives `Ok(None)` when the command is not Alembic at all and
//! `Ok(Some(Invocation))` for a plain `upgrade head` / `upgrade heads`. [`load`] gives a
//! [`Script`]: the heads of the revision graph and every revision id found.
//!
//! **Any doubt means the slow path:** every function answers `Err(reason)` rather than guess.
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

mod command;
mod env_py;
mod grammar;
mod heads;
mod ini;
mod lexer;
mod literal;
mod revision;
mod script;
mod syntax;
#[cfg(test)]
mod test_support;

pub use command::recognise;
pub use script::load;

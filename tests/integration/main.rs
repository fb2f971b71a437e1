//! pgboot's integration tests: one binary, real processes, real Postgres.
//! Each module is named for the capability it proves.

mod support;

mod alembic_e2e;
mod boot;
mod cli;
mod harness_selftest;
mod supervise;

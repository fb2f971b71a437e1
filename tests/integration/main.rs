//! pgboot's integration tests: one binary, real processes, real Postgres.
//! Each module is named for the capability it proves.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::format_push_string)]

mod support;

mod alembic_e2e;
mod boot;
mod cli;
mod faults_process;
mod handover;
mod harness_selftest;
mod supervise;

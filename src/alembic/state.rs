//! Where the database stands against the revision files: the one answer boot and `status`
//! share. Reading the files ([`expect`]) needs no database; [`Expected::compare`] takes the
//! rows of `alembic_version` (read by the caller) and says behind, at head, ahead, or why it
//! cannot tell.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use super::command::{Target, recognise};
use super::heads::Script;
use super::script::load;

/// The answer of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlembicState {
    /// Alembic would apply something: the database's revisions are not the heads.
    Behind {
        /// The rows of `alembic_version` (empty: no table, or no rows).
        db: BTreeSet<String>,
        /// The heads of the files.
        heads: BTreeSet<String>,
        /// The revisions `upgrade` would apply, oldest first.
        pending: Vec<String>,
    },
    /// The rows of `alembic_version` are exactly the heads: Alembic would do nothing.
    AtHead {
        /// The heads of the files.
        heads: BTreeSet<String>,
    },
    /// The database holds revisions no file defines (a newer image migrated it).
    Ahead {
        /// The rows of `alembic_version`.
        db: BTreeSet<String>,
        /// Those of them no file defines.
        unknown: BTreeSet<String>,
        /// The heads of the files.
        heads: BTreeSet<String>,
    },
    /// pgboot cannot prove what Alembic would conclude; only running it tells.
    Unknown(Reason),
}

impl AlembicState {
    /// The database's revisions, when the state was told.
    #[must_use]
    pub fn database(&self) -> Option<&BTreeSet<String>> {
        match self {
            AlembicState::Behind { db, .. } | AlembicState::Ahead { db, .. } => Some(db),
            AlembicState::AtHead { heads } => Some(heads),
            AlembicState::Unknown(_) => None,
        }
    }

    /// How many revisions `upgrade` would apply, when that can be told.
    #[must_use]
    pub fn pending_count(&self) -> Option<usize> {
        match self {
            AlembicState::Behind { pending, .. } => Some(pending.len()),
            AlembicState::AtHead { .. } => Some(0),
            AlembicState::Ahead { .. } | AlembicState::Unknown(_) => None,
        }
    }

    /// How many revisions were applied between `before` and `self` (read after a run of the
    /// command): what was pending then less what is pending now, when both can be told.
    #[must_use]
    pub fn applied_since(&self, before: &AlembicState) -> Option<usize> {
        before.pending_count()?.checked_sub(self.pending_count()?)
    }
}

/// Why the state cannot be told without running the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The migration command is not Alembic.
    NotAlembic,
    /// It is Alembic, but something could make Alembic conclude otherwise than pgboot.
    Doubt(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotAlembic => f.write_str(
                "the migration command is not `alembic upgrade head`, so only running it tells",
            ),
            Reason::Doubt(why) => f.write_str(why),
        }
    }
}

/// What the files say Alembic would upgrade to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    script: Script,
    target: Target,
}

/// Reads the command and the files: what `alembic upgrade head(s)` would upgrade to.
/// `cwd` is the directory the command runs in; `alembic_config_env` the value of
/// `ALEMBIC_CONFIG`, if set.
///
/// # Errors
/// Why pgboot cannot tell.
pub fn expect(
    argv: &[String],
    cwd: &Path,
    alembic_config_env: Option<&str>,
) -> Result<Expected, Reason> {
    let inv = recognise(argv, cwd, alembic_config_env)
        .map_err(Reason::Doubt)?
        .ok_or(Reason::NotAlembic)?;
    let script = load(&inv).map_err(Reason::Doubt)?;
    Ok(Expected {
        script,
        target: inv.target,
    })
}

impl Expected {
    /// The state against the rows of `alembic_version` (`None`: the table does not exist).
    #[must_use]
    pub fn compare(&self, rows: Option<BTreeSet<String>>) -> AlembicState {
        let heads = self.script.heads.clone();
        let db = rows.unwrap_or_default();
        let unknown: BTreeSet<String> = db
            .iter()
            .filter(|r| !self.script.revisions.contains(*r))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return AlembicState::Ahead { db, unknown, heads };
        }
        if heads.len() > 1 && self.target == Target::Head {
            return AlembicState::Unknown(Reason::Doubt(format!(
                "the revision files have {} heads ({}), so `upgrade head` would fail: merge them \
                 (`alembic merge heads`) or run `upgrade heads`",
                heads.len(),
                heads.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if db == heads {
            AlembicState::AtHead { heads }
        } else {
            let pending = self.script.between(&db);
            AlembicState::Behind { db, heads, pending }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alembic::test_support::{info, set};

    fn expected(revs: &[crate::alembic::revision::RevisionInfo], target: Target) -> Expected {
        Expected {
            script: crate::alembic::heads::heads(revs).unwrap_or_else(|e| panic!("{e}")),
            target,
        }
    }

    fn linear() -> Expected {
        expected(&[info("a", &[]), info("b", &["a"])], Target::Head)
    }

    #[test]
    fn rows_equal_to_the_heads_are_at_head() {
        assert_eq!(
            linear().compare(Some(set(&["b"]))),
            AlembicState::AtHead { heads: set(&["b"]) }
        );
    }

    #[test]
    fn no_table_no_rows_or_an_older_row_are_behind() {
        for rows in [None, Some(set(&[])), Some(set(&["a"]))] {
            assert!(
                matches!(linear().compare(rows.clone()), AlembicState::Behind { .. }),
                "{rows:?}"
            );
        }
    }

    #[test]
    fn a_row_no_file_defines_is_ahead_never_at_head() {
        assert_eq!(
            linear().compare(Some(set(&["c"]))),
            AlembicState::Ahead {
                db: set(&["c"]),
                unknown: set(&["c"]),
                heads: set(&["b"])
            }
        );
        assert!(matches!(
            linear().compare(Some(set(&["b", "z9"]))),
            AlembicState::Ahead { .. }
        ));
    }

    #[test]
    fn two_heads_are_unknown_for_head_and_exact_for_heads() {
        let revs = [info("a", &[]), info("b", &["a"]), info("c", &["a"])];
        let head = expected(&revs, Target::Head).compare(Some(set(&["b", "c"])));
        assert!(
            matches!(&head, AlembicState::Unknown(Reason::Doubt(why)) if why.contains("merge")),
            "{head:?}"
        );
        assert!(matches!(
            expected(&revs, Target::Heads).compare(Some(set(&["b", "c"]))),
            AlembicState::AtHead { .. }
        ));
        assert!(matches!(
            expected(&revs, Target::Heads).compare(Some(set(&["b"]))),
            AlembicState::Behind { .. }
        ));
    }

    #[test]
    fn behind_lists_the_pending_revisions_and_counts_what_a_run_applied() {
        let before = linear().compare(None);
        assert!(
            matches!(&before, AlembicState::Behind { pending, .. } if *pending == ["a", "b"]),
            "{before:?}"
        );
        let after = linear().compare(Some(set(&["b"])));
        assert_eq!(after.applied_since(&before), Some(2));
        let halfway = linear().compare(Some(set(&["a"])));
        assert_eq!(halfway.applied_since(&before), Some(1));
        assert_eq!(halfway.database(), Some(&set(&["a"])));
        let unknown = AlembicState::Unknown(Reason::NotAlembic);
        assert_eq!(unknown.applied_since(&before), None);
    }

    #[test]
    fn a_command_that_is_not_alembic_is_unknown_with_that_reason() {
        let argv = vec!["./migrate.sh".to_owned()];
        assert_eq!(
            expect(&argv, Path::new("/app"), None),
            Err(Reason::NotAlembic)
        );
    }
}

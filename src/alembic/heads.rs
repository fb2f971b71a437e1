//! The revision graph: the heads of a set of revisions, and the graph errors Alembic would
//! reject (a missing `down_revision`, a duplicate id, a cycle).

use std::collections::{BTreeMap, BTreeSet};

use super::literal::check_rev_id;
use super::revision::RevisionInfo;

/// The revision graph read from the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Revisions that are no other revision's `down_revision`.
    pub heads: BTreeSet<String>,
    /// Every revision id found.
    pub revisions: BTreeSet<String>,
}

/// Compute the heads of a set of revisions.
///
/// # Errors
/// No revisions, a duplicate or unusable revision id, a `down_revision` that no revision
/// defines, or a cycle. (More than one head is not an error here; the caller decides.)
pub fn heads(revs: &[RevisionInfo]) -> Result<Script, String> {
    if revs.is_empty() {
        return Err("no revision files found".to_owned());
    }
    let mut downs: BTreeMap<&str, &[String]> = BTreeMap::new();
    for r in revs {
        check_rev_id(&r.revision)?;
        if downs.insert(&r.revision, &r.down_revisions).is_some() {
            return Err(format!(
                "revision {} is defined by more than one file",
                r.revision
            ));
        }
    }
    // Number of revisions naming each revision as a down_revision.
    let mut children: BTreeMap<&str, usize> = downs.keys().map(|k| (*k, 0)).collect();
    for r in revs {
        for d in &r.down_revisions {
            check_rev_id(d)?;
            let Some(count) = children.get_mut(d.as_str()) else {
                return Err(format!(
                    "revision {} revises {d}, which no revision file defines",
                    r.revision
                ));
            };
            *count += 1;
        }
    }
    let heads: BTreeSet<String> = children
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| (*k).to_owned())
        .collect();
    // Kahn's algorithm from the heads down: every revision must be reached, else there is a cycle.
    let mut pending = children.clone();
    let mut ready: Vec<&str> = heads.iter().map(String::as_str).collect();
    let mut reached = 0;
    while let Some(rev) = ready.pop() {
        reached += 1;
        for d in downs.get(rev).copied().unwrap_or_default() {
            if let Some(n) = pending.get_mut(d.as_str()) {
                *n -= 1;
                if *n == 0 {
                    ready.push(d.as_str());
                }
            }
        }
    }
    if reached != downs.len() {
        return Err("the revisions' down_revisions form a cycle".to_owned());
    }
    Ok(Script {
        heads,
        revisions: downs.keys().map(|k| (*k).to_owned()).collect(),
    })
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alembic::test_support::*;

    // ── heads ──

    #[test]
    fn heads_of_linear_history() {
        let script = heads(&[info("c", &["b"]), info("a", &[]), info("b", &["a"])]).unwrap();
        assert_eq!(script.heads, set(&["c"]));
        assert_eq!(script.revisions, set(&["a", "b", "c"]));
    }

    #[test]
    fn heads_of_diamond_and_merge() {
        let revs = [
            info("a", &[]),
            info("b", &["a"]),
            info("c", &["a"]),
            info("d", &["b", "c"]),
        ];
        assert_eq!(heads(&revs).unwrap().heads, set(&["d"]));
        let merged = crate::alembic::revision::parse_revision_file(
            "revision = 'd'\ndown_revision = ('b', 'c')\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            heads(&[revs[0].clone(), revs[1].clone(), revs[2].clone(), merged])
                .unwrap()
                .heads,
            set(&["d"])
        );
    }

    #[test]
    fn heads_reports_two_heads() {
        let script = heads(&[info("a", &[]), info("b", &["a"]), info("c", &["a"])]).unwrap();
        assert_eq!(script.heads, set(&["b", "c"]));
        let script = heads(&[info("a", &[]), info("x", &[])]).unwrap();
        assert_eq!(script.heads, set(&["a", "x"]));
    }

    #[test]
    fn heads_rejects_missing_target_duplicates_cycles_and_nothing() {
        assert!(
            heads(&[info("b", &["a"])])
                .unwrap_err()
                .contains("no revision file defines")
        );
        assert!(
            heads(&[info("a", &[]), info("a", &[])])
                .unwrap_err()
                .contains("more than one file")
        );
        assert!(
            heads(&[info("a", &["b"]), info("b", &["a"]), info("c", &["a"])])
                .unwrap_err()
                .contains("cycle")
        );
        assert!(heads(&[info("a", &["a"])]).unwrap_err().contains("cycle"));
        assert!(heads(&[]).unwrap_err().contains("no revision"));
    }
}

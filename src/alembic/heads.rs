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
    /// Each revision's `down_revision`s: the graph, walked by [`Script::between`].
    pub downs: BTreeMap<String, Vec<String>>,
}

impl Script {
    /// The revisions `upgrade` applies to go from the database's revisions `db` to the heads:
    /// every ancestor of a head (itself included) that is not an ancestor of a revision in
    /// `db` (itself included), oldest first, as Alembic walks them. Revisions of `db` that no
    /// file defines are left out (the caller reports them as ahead).
    #[must_use]
    pub fn between(&self, db: &BTreeSet<String>) -> Vec<String> {
        let applied = self.ancestors(db.iter());
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for head in &self.heads {
            self.post_order(head, &applied, &mut seen, &mut order);
        }
        order
    }

    /// `from` and everything they revise, transitively.
    fn ancestors<'a>(&'a self, from: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&str> = from
            .filter(|r| self.downs.contains_key(*r))
            .map(String::as_str)
            .collect();
        while let Some(rev) = todo.pop() {
            if out.insert(rev) {
                todo.extend(
                    self.downs
                        .get(rev)
                        .into_iter()
                        .flatten()
                        .map(String::as_str),
                );
            }
        }
        out
    }

    /// Appends `rev`'s unapplied ancestors, then `rev`, each once. Iterative, so a long
    /// history cannot exhaust the stack.
    fn post_order(
        &self,
        rev: &str,
        applied: &BTreeSet<&str>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        let mut stack: Vec<(&str, bool)> = vec![(rev, false)];
        while let Some((r, expanded)) = stack.pop() {
            if applied.contains(r) {
                continue;
            }
            if expanded {
                order.push(r.to_owned());
                continue;
            }
            if !seen.insert(r.to_owned()) {
                continue;
            }
            stack.push((r, true));
            for d in self.downs.get(r).into_iter().flatten().rev() {
                if !seen.contains(d.as_str()) {
                    stack.push((d.as_str(), false));
                }
            }
        }
    }
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
        downs: downs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
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
    fn between_lists_what_upgrade_applies_oldest_first() {
        let script = heads(&[info("c", &["b"]), info("a", &[]), info("b", &["a"])]).unwrap();
        assert_eq!(script.between(&set(&[])), ["a", "b", "c"]);
        assert_eq!(script.between(&set(&["a"])), ["b", "c"]);
        assert!(script.between(&set(&["c"])).is_empty());
        // A diamond: both branches, each parent before the merge.
        let revs = [
            info("a", &[]),
            info("b", &["a"]),
            info("c", &["a"]),
            info("d", &["b", "c"]),
        ];
        let script = heads(&revs).unwrap();
        assert_eq!(script.between(&set(&["b"])), ["c", "d"]);
        let all = script.between(&set(&[]));
        assert_eq!(all.first().map(String::as_str), Some("a"));
        assert_eq!(all.last().map(String::as_str), Some("d"));
        assert_eq!(all.len(), 4);
        // A revision no file defines is not walked.
        assert_eq!(script.between(&set(&["zz"])).len(), 4);
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

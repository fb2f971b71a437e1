//! Revision files: the module-level `revision`, `down_revision` and `depends_on` of one file,
//! read without running it, and the checks that nothing else in the file can change them.

use std::collections::{HashMap, HashSet};

use super::lexer::{LogicalLine, Tok, tokenize};
use super::literal::{Value, check_rev_id, literal_value};
use super::syntax::check;

/// What one revision file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The module-level `revision`.
    pub revision: String,
    /// The module-level `down_revision`, as a list (empty for `None`), duplicates removed.
    pub down_revisions: Vec<String>,
}

/// The module-level names we read; any other use of them at module level is doubt.
const TARGETS: [&str; 3] = ["revision", "down_revision", "depends_on"];

/// Names that can change module attributes behind our back when used at module level.
const DYNAMIC_NAMES: [&str; 8] = [
    "globals",
    "locals",
    "vars",
    "exec",
    "eval",
    "setattr",
    "delattr",
    "__getattr__",
];

/// Parse a revision file conservatively, without running it.
///
/// Reads the module-level (column 0) assignments to `revision`, `down_revision` and
/// `depends_on`; values must be plain string literals, `None`, or tuples/lists of strings.
/// Returns `Ok(None)` when there is no `revision` assignment at all.
///
/// # Errors
/// The file content problem: a value that is not a plain literal, a name assigned twice or used
/// in other module-level code, `depends_on` set, a missing `down_revision`, or text the tokenizer
/// cannot follow.
pub fn parse_revision_file(text: &str) -> Result<Option<RevisionInfo>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\0') {
        return Err("file contains a NUL character".to_owned());
    }
    let text = text.replace("\r\n", "\n");
    if text.contains('\r') {
        return Err("file contains a bare carriage return".to_owned());
    }
    let mut values: HashMap<&'static str, Value> = HashMap::new();
    let mut def_indent: Option<usize> = None;
    // Alembic imports every revision file: one Python rejects fails the whole upgrade.
    let lines = tokenize(&text)
        .and_then(|lines| check(&lines).map(|()| lines))
        .map_err(|e| format!("Python would not compile it: {e}"))?;
    for line in &lines {
        if let Some(outer) = def_indent {
            if line.indent > outer {
                check_global(line)?;
                continue;
            }
            def_indent = None;
        }
        if let Some(function) = def_name(&line.toks) {
            if line.indent == 0 && function == "__getattr__" {
                return Err(format!(
                    "line {}: module-level __getattr__ can invent attributes",
                    line.lineno
                ));
            }
            check_global(line)?;
            def_indent = Some(line.indent);
            continue;
        }
        if line.indent == 0
            && let Some((name, value)) = assignment(line)?
        {
            if values.insert(name, value).is_some() {
                return Err(format!(
                    "line {}: `{name}` is assigned more than once",
                    line.lineno
                ));
            }
            continue;
        }
        check_module_level(line)?;
    }

    let Some(revision) = values.remove("revision") else {
        return Ok(None);
    };
    let Value::Str(revision) = revision else {
        return Err("`revision` is not a string".to_owned());
    };
    let mut down_revisions = match values.remove("down_revision") {
        None => {
            return Err(
                "no module-level `down_revision` assignment (Alembic requires one)".to_owned(),
            );
        }
        Some(Value::None) => Vec::new(),
        Some(Value::Str(s)) => vec![s],
        Some(Value::Seq(items)) => items,
    };
    let mut unique = HashSet::new();
    down_revisions.retain(|d| unique.insert(d.clone()));
    if !matches!(values.remove("depends_on"), None | Some(Value::None)) {
        return Err("`depends_on` is set; dependencies change how heads are computed".to_owned());
    }
    check_rev_id(&revision)?;
    for d in &down_revisions {
        check_rev_id(d)?;
    }
    Ok(Some(RevisionInfo {
        revision,
        down_revisions,
    }))
}

/// `NAME = value` or `NAME: annotation = value` at column 0 for one of [`TARGETS`].
/// `Ok(None)` when the line is not of that shape (the caller then scans it as other code).
fn assignment(line: &LogicalLine) -> Result<Option<(&'static str, Value)>, String> {
    let toks = &line.toks;
    let Some(Tok::Name(first)) = toks.first() else {
        return Ok(None);
    };
    let Some(&name) = TARGETS.iter().find(|t| **t == first.as_str()) else {
        return Ok(None);
    };
    let at = |msg: String| format!("line {}: `{name}` {msg}", line.lineno);
    let eq = match toks.get(1) {
        Some(Tok::Op("=")) => 1,
        Some(Tok::Op(":")) => depth0_position(toks, 2, "=")
            .ok_or_else(|| at("is annotated but not assigned".to_owned()))?,
        _ => return Ok(None),
    };
    if toks.contains(&Tok::Op(";")) {
        return Err(at("shares its line with other statements".to_owned()));
    }
    if bare_names(&toks[1..]).any(|n| TARGETS.contains(&n)) {
        return Err(at("refers to another revision variable".to_owned()));
    }
    let value = literal_value(&toks[eq + 1..]).map_err(at)?;
    Ok(Some((name, value)))
}

/// The index of the first `op` at bracket depth 0, searching from `from`.
fn depth0_position(toks: &[Tok], from: usize, op: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate() {
        match t {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op(o) if depth == 0 && k >= from && *o == op => return Some(k),
            _ => {}
        }
    }
    None
}
/// The function name of a `def NAME` / `async def NAME` line.
fn def_name(toks: &[Tok]) -> Option<&str> {
    match toks {
        [Tok::Name(d), Tok::Name(f), ..] if d == "def" => Some(f.as_str()),
        [Tok::Name(a), Tok::Name(d), Tok::Name(f), ..] if a == "async" && d == "def" => {
            Some(f.as_str())
        }
        _ => None,
    }
}

/// Names used as names (not as attributes after `.`).
fn bare_names(toks: &[Tok]) -> impl Iterator<Item = &str> {
    toks.iter().enumerate().filter_map(move |(k, t)| match t {
        Tok::Name(n) if k == 0 || toks[k - 1] != Tok::Op(".") => Some(n.as_str()),
        _ => None,
    })
}

/// Inside functions only `global`/`nonlocal` can touch the module's revision variables.
fn check_global(line: &LogicalLine) -> Result<(), String> {
    let mut names = bare_names(&line.toks);
    let declares = bare_names(&line.toks).any(|n| n == "global" || n == "nonlocal");
    if declares && names.any(|n| TARGETS.contains(&n)) {
        return Err(format!(
            "line {}: a function declares a revision variable global",
            line.lineno
        ));
    }
    Ok(())
}

/// Code that runs at import: it must not mention the revision variables or rewrite the module.
fn check_module_level(line: &LogicalLine) -> Result<(), String> {
    let lineno = line.lineno;
    for n in bare_names(&line.toks) {
        if TARGETS.contains(&n) {
            return Err(format!(
                "line {lineno}: `{n}` is used in module-level code other than a plain assignment"
            ));
        }
        if DYNAMIC_NAMES.contains(&n) {
            return Err(format!(
                "line {lineno}: module-level `{n}` could change the module's variables"
            ));
        }
    }
    for w in line.toks.windows(3) {
        let star_import = matches!(&w[..2], [Tok::Name(i), Tok::Op("*")] if i == "import");
        let sys_modules =
            matches!(w, [Tok::Name(s), Tok::Op("."), Tok::Name(m)] if s == "sys" && m == "modules");
        if star_import || sys_modules {
            return Err(format!(
                "line {lineno}: module-level code could change the module's variables"
            ));
        }
    }
    if matches!(line.toks.as_slice(), [.., Tok::Name(i), Tok::Op("*")] if i == "import") {
        return Err(format!(
            "line {lineno}: `import *` could define revision variables"
        ));
    }
    Ok(())
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alembic::test_support::*;

    fn parsed(text: &str) -> RevisionInfo {
        parse_revision_file(text).unwrap().unwrap()
    }

    fn rejected(text: &str) -> String {
        parse_revision_file(text).unwrap_err()
    }

    // ── revision files ──

    #[test]
    fn parse_modern_generated_file() {
        assert_eq!(parsed(MODERN), info("1975ea83b712", &["3f2a9c0d1b4e"]));
    }

    #[test]
    fn parse_modern_first_revision_with_sequence_union() {
        let text = MODERN
            .replace(
                "Union[str, None] = '3f2a9c0d1b4e'",
                "Union[str, Sequence[str], None] = None",
            )
            .replace("Revises: 3f2a9c0d1b4e", "Revises: ");
        assert_eq!(parsed(&text), info("1975ea83b712", &[]));
    }

    #[test]
    fn parse_legacy_untyped_template() {
        let text = "\"\"\"create account table\n\nRevision ID: ae1027a6acf\nRevises:\nCreate Date: 2011-11-08 11:40:27.089406\n\n\"\"\"\n\n# revision identifiers, used by Alembic.\nrevision = 'ae1027a6acf'\ndown_revision = None\nbranch_labels = None\n\nfrom alembic import op\nimport sqlalchemy as sa\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n";
        assert_eq!(parsed(text), info("ae1027a6acf", &[]));
    }

    #[test]
    fn parse_merge_revision() {
        let text = "\"\"\"merge\n\nRevision ID: m3\nRevises: a1, b2\n\"\"\"\nrevision = 'm3'\ndown_revision = ('a1', 'b2')\nbranch_labels = None\ndepends_on = None\n";
        assert_eq!(parsed(text), info("m3", &["a1", "b2"]));
    }

    #[test]
    fn parse_branch_labels_are_ignored() {
        let text = "revision = 'b1'\ndown_revision = None\nbranch_labels = ('shiny',)\ndepends_on = None\n";
        assert_eq!(parsed(text), info("b1", &[]));
        let text = "revision = 'b2'\ndown_revision = 'b1'\nbranch_labels = make_labels(f'x{1}')\n";
        assert_eq!(parsed(text), info("b2", &["b1"]));
    }

    #[test]
    fn parse_odd_formatting() {
        let text = "revision='abc'  # the id\ndown_revision=(  # merge\n    'x1',\n    \"y2\",   # second parent\n)\ndepends_on=None\n";
        assert_eq!(parsed(text), info("abc", &["x1", "y2"]));
        let text =
            "revision : str='abc'\ndown_revision: str | Sequence[str] | None = [\"a\",\"b\"]\n";
        assert_eq!(parsed(text), info("abc", &["a", "b"]));
        let text = "revision = u\"abc\"\ndown_revision = ('p',)\n";
        assert_eq!(parsed(text), info("abc", &["p"]));
        let text = "revision = ('abc')\ndown_revision = ()\n";
        assert_eq!(parsed(text), info("abc", &[]));
        let text = "revision = \\\n    'abc'\r\ndown_revision = ['p', 'p']\r\n";
        assert_eq!(parsed(text), info("abc", &["p"]));
    }

    #[test]
    fn parse_is_not_fooled_by_docstrings_strings_or_functions() {
        let text = r#""""
Revision ID: fake1
Revises: fake0
revision = 'fake2'
"""
revision = "real"
down_revision = 'base0'
NOTE = '''revision = "fake3" ''' + "down_revision = 'x'"
PAT = r'revision = \'fake4\''

def upgrade():
    revision = "local"
    down_revision = compute()
    op.execute(f"UPDATE t SET x = '{revision}' WHERE y = {d["k"]!r:>10}")

class Helper:
    def method(self):
        depends_on = ["x"]
        return depends_on
"#;
        assert_eq!(parsed(text), info("real", &["base0"]));
    }

    #[test]
    fn parse_without_revision_is_none() {
        assert_eq!(
            parse_revision_file("import os\n\ndef helper():\n    return 1\n").unwrap(),
            None
        );
        assert_eq!(parse_revision_file("").unwrap(), None);
    }

    #[test]
    fn parse_rejects_non_literal_values() {
        assert!(
            rejected("REV = 'a'\nrevision = REV\ndown_revision = None\n")
                .contains("not a plain string")
        );
        assert!(rejected("revision = f'a{1}'\ndown_revision = None\n").contains("f-string"));
        assert!(
            rejected("revision = 'a' + 'b'\ndown_revision = None\n").contains("not a plain string")
        );
        assert!(
            rejected("revision = 'a' 'b'\ndown_revision = None\n").contains("not a plain string")
        );
        assert!(rejected("revision = '''a'''\ndown_revision = None\n").contains("triple-quoted"));
        assert!(rejected("revision = b'a'\ndown_revision = None\n").contains("byte string"));
        assert!(
            rejected("revision = str('a')\ndown_revision = None\n").contains("not a plain string")
        );
        assert!(rejected("revision = 'a\\x41'\ndown_revision = None\n").contains("escapes"));
        assert!(
            rejected("revision = 'a'\ndown_revision = ('a', None)\n")
                .contains("not a plain string")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = revision\n")
                .contains("another revision variable")
        );
        assert!(rejected("revision = None\ndown_revision = None\n").contains("not a string"));
        assert!(
            rejected("revision: str\ndown_revision = None\n")
                .contains("annotated but not assigned")
        );
        assert!(rejected("revision = down_revision = 'a'\n").contains("revision"));
    }

    #[test]
    fn parse_rejects_duplicate_assignment() {
        assert!(
            rejected("revision = 'a'\ndown_revision = None\nrevision = 'b'\n")
                .contains("more than once")
        );
    }

    #[test]
    fn parse_rejects_depends_on() {
        let text = MODERN.replace(
            "depends_on: Union[str, Sequence[str], None] = None",
            "depends_on: Union[str, Sequence[str], None] = 'other'",
        );
        assert!(rejected(&text).contains("depends_on"));
        assert!(
            rejected("revision = 'a'\ndown_revision = None\ndepends_on = ('x',)\n")
                .contains("depends_on")
        );
    }

    #[test]
    fn parse_rejects_missing_down_revision() {
        assert!(rejected("revision = 'a'\n").contains("down_revision"));
    }

    #[test]
    fn parse_rejects_other_module_level_uses() {
        for text in [
            "revision = 'a'\ndown_revision = None\nif DEBUG:\n    revision = 'b'\n",
            "revision = 'a'\ndown_revision = None\nrevision += 'x'\n",
            "revision = 'a'\ndown_revision = None\nfor depends_on in []: pass\n",
            "revision = 'a'\ndown_revision = None\nfrom other import down_revision\n",
            "revision = 'a'\ndown_revision = None\ndef f():\n    global down_revision\n    down_revision = 'z'\n",
            "revision = 'a'\ndown_revision = None\nglobals()['revision'] = 'b'\n",
            "revision = 'a'\ndown_revision = None\nfrom helpers import *\n",
            "revision = 'a'\ndown_revision = None\ndef __getattr__(name):\n    return 'x'\n",
            "revision = 'a'; down_revision = None\n",
        ] {
            assert!(parse_revision_file(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn parse_rejects_unreadable_python() {
        assert!(rejected("revision = 'a\ndown_revision = None\n").contains("string"));
        assert!(rejected("revision = ('a'\n").contains("bracket"));
        assert!(rejected("x = \"\"\"never closed\nrevision = 'a'\n").contains("unterminated"));
    }

    #[test]
    fn parse_rejects_files_python_could_not_import() {
        assert!(
            rejected("revision = 'a'\n    down_revision = None\n").contains("unexpected indent")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = None\ndef f():\nx = 1\n")
                .contains("indented block")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = None\nif x:\n        a = 1\n    b = 2\n")
                .contains("unindent")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = None\nclass C:\n").contains("indented block")
        );
        let ok = "revision = 'a'\ndown_revision = None\nclass C:\n    def m(self):\n\n        # c\n        return 1\n\n    x = 2\ny = 3\n";
        assert_eq!(parsed(ok), info("a", &[]));
    }

    #[test]
    fn parse_rejects_unusual_revision_ids() {
        assert!(rejected("revision = 'a-b'\ndown_revision = None\n").contains("revision id"));
        assert!(rejected("revision = 'heads'\ndown_revision = None\n").contains("revision id"));
        assert!(rejected("revision = 'a b'\ndown_revision = None\n").contains("revision id"));
    }
}

//! No file makes the Alembic readers panic: property tests over the ini
//! reader, the Python tokenizer and compile check, the env.py reader and the
//! revision-file reader, on arbitrary text and on mutated real files.

use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~\\n\\t\\r\\u{0}é€]{0,200}").expect("regex")
}

/// A real revision file with a random edit: a slice replaced by random text.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (0..=base.len(), 0..=base.len(), text()).prop_map(move |(a, b, t)| {
        let (a, b) = (a.min(b), a.max(b));
        if base.is_char_boundary(a) && base.is_char_boundary(b) {
            format!("{}{t}{}", &base[..a], &base[b..])
        } else {
            base.to_string()
        }
    })
}

const REVISION: &str = "\"\"\"add a column\n\nRevision ID: 0002\nRevises: 0001\n\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision: str = \"0002\"\ndown_revision: str | None = \"0001\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n    op.add_column(\"t\", sa.Column(\"x\", sa.Integer()))\n\n\ndef downgrade() -> None:\n    op.drop_column(\"t\", \"x\")\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn ini_reader_never_panics(s in text()) {
        let _ = super::ini::Ini::parse(&s, "/here");
    }

    #[test]
    fn revision_reader_never_panics_on_text(s in text()) {
        let _ = super::revision::parse_revision_file(&s);
    }

    #[test]
    fn revision_reader_never_panics_on_edited_files(s in mutated(REVISION)) {
        let _ = super::revision::parse_revision_file(&s);
    }

    #[test]
    fn env_py_reader_never_panics(s in text()) {
        let _ = super::env_py::check_env_text(&s);
    }

    #[test]
    fn tokenizer_and_compile_check_never_panic(s in text()) {
        if let Ok(lines) = super::lexer::tokenize(&s) {
            let _ = super::syntax::check(&lines);
        }
    }
}

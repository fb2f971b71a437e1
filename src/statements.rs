//! Counting the SQL statements of a migration file, as Postgres would split
//! them: on `;` outside string literals, quoted identifiers, comments and
//! dollar-quoted bodies.
//!
//! Needs the file's text. Returns how many statements hold more than white
//! space and comments. Used to refuse, before anything runs, a file that
//! would fail or lie: an empty migration (recorded as applied, doing
//! nothing), and a `-- no-transaction` file with several statements
//! (Postgres runs a multi-statement query in one implicit transaction, so
//! `CREATE INDEX CONCURRENTLY` in it fails with 25001).

/// How many non-empty statements `sql` holds.
#[must_use]
pub fn count(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut n = 0;
    let mut has_code = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                has_code = true;
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && !ident_char_before(b, i - 1);
                i = skip_quoted(b, i, b'\'', escapes);
            }
            b'"' => {
                has_code = true;
                i = skip_quoted(b, i, b'"', false);
            }
            b'$' if !ident_char_before(b, i) => {
                has_code = true;
                i = match dollar_tag(b, i) {
                    Some(tag) => skip_dollar_body(b, i, tag),
                    None => i + 1,
                };
            }
            b';' => {
                if has_code {
                    n += 1;
                }
                has_code = false;
                i += 1;
            }
            c => {
                if !c.is_ascii_whitespace() {
                    has_code = true;
                }
                i += 1;
            }
        }
    }
    n + usize::from(has_code)
}

/// Whether the byte before `i` continues an identifier (so `$` or `E` there
/// is part of a name, not the start of a quote).
fn ident_char_before(b: &[u8], i: usize) -> bool {
    i > 0
        && (b[i - 1].is_ascii_alphanumeric()
            || b[i - 1] == b'_'
            || b[i - 1] == b'$'
            || b[i - 1] >= 0x80)
}

/// Past a `/* … */` comment starting at `i`; they nest in Postgres.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Past a quoted literal or identifier starting at `i`: a doubled quote is
/// an escaped one; in an `E'…'` string a backslash escapes the next byte.
fn skip_quoted(b: &[u8], start: usize, q: u8, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The `$tag$` opening at `i`, if it is one (a tag is an identifier, or empty).
fn dollar_tag(b: &[u8], i: usize) -> Option<&[u8]> {
    let rest = &b[i + 1..];
    let end = rest.iter().position(|&c| c == b'$')?;
    let tag = &rest[..end];
    let valid = tag.iter().enumerate().all(|(k, &c)| {
        c == b'_' || c >= 0x80 || c.is_ascii_alphabetic() || (k > 0 && c.is_ascii_digit())
    });
    valid.then_some(&b[i..=i + 1 + end])
}

/// Past the dollar-quoted body that `tag` (with its `$`s) opens at `i`.
fn skip_dollar_body(b: &[u8], i: usize, tag: &[u8]) -> usize {
    let from = i + tag.len();
    b[from..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| from + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_statements_not_semicolons_in_literals_or_comments() {
        assert_eq!(count(""), 0);
        assert_eq!(count("  -- only a comment\n/* and another */ ;;\n"), 0);
        assert_eq!(count("CREATE INDEX CONCURRENTLY i ON t (x)"), 1);
        assert_eq!(count("CREATE INDEX CONCURRENTLY i ON t (x);\n-- done\n"), 1);
        assert_eq!(count("SELECT 1; SELECT 2;"), 2);
        assert_eq!(count("INSERT INTO t VALUES ('a;b'), ('it''s; fine');"), 1);
        assert_eq!(count(r"SELECT E'a\';b';"), 1);
        assert_eq!(count("SELECT \"we;ird\" FROM t;"), 1);
        assert_eq!(count("/* a /* nested; */ comment; */ SELECT 1;"), 1);
        assert_eq!(
            count(
                "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2; $$ LANGUAGE sql; SELECT 3;"
            ),
            2
        );
        assert_eq!(
            count("DO $body$ BEGIN PERFORM 1; END $body$; SELECT $1;"),
            2
        );
        assert_eq!(count("SELECT a$b FROM t; SELECT 1"), 2);
    }

    #[test]
    fn unterminated_constructs_do_not_panic() {
        for s in ["'abc", "\"x", "$$ a", "/* x", "E'\\", "$tag", "-- x"] {
            let _ = count(s);
        }
    }
}

//! Python literals we accept as a revision file's values: `None`, a plain string, or a
//! tuple/list of plain strings; and the revision ids we are willing to compare with rows.

use super::lexer::{PyStr, Tok};

/// A literal value we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    None,
    Str(String),
    Seq(Vec<String>),
}

/// `None`, a plain string, or a tuple/list of plain strings (trailing comma allowed);
/// a parenthesised single string without a comma is that string.
pub(super) fn literal_value(toks: &[Tok]) -> Result<Value, String> {
    const NOT_LITERAL: &str = "is not a plain string, None, or a tuple/list of strings";
    match toks {
        [Tok::Name(n)] if n == "None" => Ok(Value::None),
        [Tok::Str(s)] => plain_string(s).map(Value::Str),
        [Tok::Op(open @ ("(" | "[")), inner @ .., Tok::Op(close)]
            if (*open == "(" && *close == ")") || (*open == "[" && *close == "]") =>
        {
            let mut items = Vec::new();
            let mut trailing_comma = false;
            let mut rest = inner;
            while let Some((first, tail)) = rest.split_first() {
                let Tok::Str(s) = first else {
                    return Err(NOT_LITERAL.to_owned());
                };
                items.push(plain_string(s)?);
                match tail.split_first() {
                    None => {
                        trailing_comma = false;
                        rest = tail;
                    }
                    Some((Tok::Op(","), after)) => {
                        trailing_comma = true;
                        rest = after;
                    }
                    Some(_) => return Err(NOT_LITERAL.to_owned()),
                }
            }
            if *open == "(" && items.len() == 1 && !trailing_comma {
                Ok(Value::Str(items.remove(0)))
            } else {
                Ok(Value::Seq(items))
            }
        }
        [] => Err("has no value".to_owned()),
        _ => Err(NOT_LITERAL.to_owned()),
    }
}

/// A single- or double-quoted string without prefix (or `u`) and without escapes.
fn plain_string(s: &PyStr) -> Result<String, String> {
    let prefix = s.prefix.to_ascii_lowercase();
    if s.triple {
        return Err("is a triple-quoted string".to_owned());
    }
    if prefix.contains('f') || prefix.contains('t') {
        return Err("is an f-string".to_owned());
    }
    if prefix.contains('b') {
        return Err("is a byte string".to_owned());
    }
    if !(prefix.is_empty() || prefix == "u") {
        return Err(format!("is a `{}`-prefixed string", s.prefix));
    }
    if s.body.contains('\\') {
        return Err("is a string with escapes".to_owned());
    }
    Ok(s.body.clone())
}

/// Revision ids we are willing to compare with database rows: printable ASCII without spaces,
/// not containing what Alembic forbids (`@`, `-`, `+`), and not a symbolic name.
pub(super) fn check_rev_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '@' | '-' | '+'))
        && !matches!(id, "head" | "heads" | "base");
    if ok {
        Ok(())
    } else {
        Err(format!("revision id {id:?} is not a plain identifier"))
    }
}

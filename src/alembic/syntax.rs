//! Whether Python would compile a file, decided without Python, conservatively.

use super::lexer::{LogicalLine, Tok};

/// Python's INDENT/DEDENT rules: a deeper line must follow a line ending in `:`, such a line
/// must be followed by a deeper one, and a dedent must return to an enclosing level. A file
/// Python cannot import is doubt (Alembic would fail on it), not something to read past.
pub(super) fn check_indentation(lines: &[LogicalLine]) -> Result<(), String> {
    let mut levels = vec![0];
    let mut opens_block = false;
    for line in lines {
        let top = levels.last().copied().unwrap_or(0);
        if line.indent > top {
            if !opens_block {
                return Err(format!("line {}: unexpected indent", line.lineno));
            }
            levels.push(line.indent);
        } else {
            if opens_block {
                return Err(format!("line {}: expected an indented block", line.lineno));
            }
            while levels.last().is_some_and(|&l| l > line.indent) {
                levels.pop();
            }
            if levels.last() != Some(&line.indent) {
                return Err(format!(
                    "line {}: unindent does not match any outer level",
                    line.lineno
                ));
            }
        }
        opens_block = line.toks.last() == Some(&Tok::Op(":"));
    }
    if opens_block {
        return Err("expected an indented block at end of file".to_owned());
    }
    Ok(())
}

//! Whether Python would compile a file, decided without Python, conservatively.
//!
//! Alembic imports every revision file (and `env.py`) to read it; a file Python rejects makes
//! `alembic upgrade` fail, so pgboot must not conclude "at head" past one. A full parser is not
//! needed to catch what edits and merges usually break. Together with the tokenizer
//! (`lexer.rs`: unterminated strings, mismatched or unclosed brackets, characters that are no
//! token, malformed numbers and escapes, bytes with non-ASCII), this checks:
//! - indentation: an indent where no block opens, a block that is not indented, a dedent to no
//!   enclosing level, and tabs and spaces mixed so that the order depends on the tab size
//!   (`TabError`);
//! - two operands in a row (`x y`, `'a' b`, `1 2`), except adjacent strings and the soft
//!   keywords `match`/`case`/`type` starting a statement; bytes next to text strings;
//! - an operator where an operand must be (`x = = 1`, `f(, a)`, `a.(b)`), a line that starts or
//!   ends with an operator or keyword that needs something after it (`x =`, `a +`, `import`);
//! - a compound statement header without its `:` (`def f()`, `if x`, `else`);
//! - an assignment to a literal (`'a' = 1`, `None = x`);
//! - `return`/`yield`/`await` outside a function, `break`/`continue` outside a loop (as the
//!   first word of a line).
//!
//! What it does not catch (Python's parser and compiler would): most errors of nesting inside
//! brackets (`f(a=1, b)`, `f(**a, *b)`), duplicate argument names, misplaced `else`/`except`,
//! `nonlocal` at module level, errors after an inline `if x: …` body, f-string rules that
//! differ between Python versions. And a file that compiles can still fail when it runs (an
//! import that fails); nothing short of running it tells that.

use super::grammar;
use super::lexer::{LogicalLine, Tok};

/// What kind of block a header line opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Function,
    Class,
    Loop,
    Other,
}

/// One level of the indentation stack.
struct Level {
    indent: usize,
    alt_indent: usize,
    block: Block,
}

/// Checks logical lines as Python's parser would, as far as this module's header says.
///
/// # Errors
/// The first problem found, with its line.
pub(super) fn check(lines: &[LogicalLine]) -> Result<(), String> {
    let mut levels = vec![Level {
        indent: 0,
        alt_indent: 0,
        block: Block::Other,
    }];
    let mut opens: Option<Block> = None;
    for line in lines {
        let at = |msg: &str| format!("line {}: {msg}", line.lineno);
        indentation(&mut levels, opens, line).map_err(|m| at(&m))?;
        grammar::check_line(&line.toks).map_err(|m| at(&m))?;
        outside(&levels, line).map_err(|m| at(&m))?;
        opens = (line.toks.last() == Some(&Tok::Op(":"))).then(|| block_of(&line.toks));
    }
    if opens.is_some() {
        return Err("expected an indented block at end of file".to_owned());
    }
    Ok(())
}

/// Python's INDENT/DEDENT rules, with `TabError` where the two measures disagree.
fn indentation(
    levels: &mut Vec<Level>,
    opens: Option<Block>,
    line: &LogicalLine,
) -> Result<(), String> {
    let tab_error = || "inconsistent use of tabs and spaces in indentation".to_owned();
    let top = levels.last().map_or((0, 0), |l| (l.indent, l.alt_indent));
    if line.indent > top.0 {
        let Some(block) = opens else {
            return Err("unexpected indent".to_owned());
        };
        if line.alt_indent <= top.1 {
            return Err(tab_error());
        }
        levels.push(Level {
            indent: line.indent,
            alt_indent: line.alt_indent,
            block,
        });
        return Ok(());
    }
    if opens.is_some() {
        return Err("expected an indented block".to_owned());
    }
    while levels.len() > 1 && levels.last().is_some_and(|l| l.indent > line.indent) {
        levels.pop();
    }
    match levels.last() {
        Some(l) if l.indent != line.indent => {
            Err("unindent does not match any outer indentation level".to_owned())
        }
        Some(l) if l.alt_indent != line.alt_indent => Err(tab_error()),
        _ => Ok(()),
    }
}

/// The block a header line (ending in `:`) opens.
fn block_of(toks: &[Tok]) -> Block {
    let first = toks
        .iter()
        .find(|t| !matches!(t, Tok::Name(n) if n == "async"));
    match first {
        Some(Tok::Name(n)) if n == "def" => Block::Function,
        Some(Tok::Name(n)) if n == "class" => Block::Class,
        Some(Tok::Name(n)) if n == "for" || n == "while" => Block::Loop,
        _ => Block::Other,
    }
}

/// `return`/`yield`/`await` need an enclosing function, `break`/`continue` a loop inside it.
fn outside(levels: &[Level], line: &LogicalLine) -> Result<(), String> {
    let Some(Tok::Name(word)) = line.toks.first() else {
        return Ok(());
    };
    let (wanted, what) = match word.as_str() {
        "return" | "yield" | "await" => (Block::Function, "a function"),
        "break" | "continue" => (Block::Loop, "a loop"),
        _ => return Ok(()),
    };
    // The innermost block that decides: a loop or function for `break`, a function or class
    // (a class body is not a function) for `return`.
    let decides = levels.iter().rev().map(|l| l.block).find(|b| match wanted {
        Block::Loop => *b != Block::Other,
        _ => matches!(b, Block::Function | Block::Class),
    });
    if decides == Some(wanted) {
        Ok(())
    } else {
        Err(format!("`{word}` outside {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::alembic::lexer::tokenize;

    fn verdict(src: &str) -> Result<(), String> {
        tokenize(src).and_then(|lines| check(&lines))
    }

    #[test]
    fn valid_python_passes() {
        for src in [
            "from . import x\nfrom ..pkg import (a, b as c)\nfrom m import *\n",
            "@decorator\nasync def f(a, /, b: int = 1, *args, c=None, **kw) -> None:\n    await g()\n    return [x for x in y if x]\n",
            "x: str | None = None\ny = lambda a=1, *b: a\nz = d[1:2, ::3]\nw = {'k': v for k, v in p}\n",
            "for name, in pairs:\n    if not name in s and name is not None:\n        continue\n    break\nelse:\n    pass\n",
            "match cmd:\n    case [a, b] if a:\n        pass\n    case _:\n        pass\n",
            "n = 0x_ff + 0o7 + 0b1 + 1_000.5e-3j + 00 + .5\ns = b'a' b'b' + 'x' f'{y!r:>{w}}'\n",
            "class C(Base, metaclass=M):\n    def m(self):\n        yield from g()\n\n    x = 1\n",
            "if a: b = 1\nwhile x: x -= 1\nprint(*a, sep='', **k)\n",
        ] {
            assert_eq!(verdict(src), Ok(()), "{src}");
        }
    }

    #[test]
    fn what_python_rejects_is_caught() {
        for (src, why) in [
            ("x = = 1\n", "`=` directly after `=`"),
            ("x = (1]\n", "closes"),
            ("x = 'a\n", "string"),
            ("x = 01\n", "leading zeros"),
            ("x = b'é'\n", "non-ASCII"),
            ("x = '\\x4'\n", "truncated"),
            ("print 'a'\n", "directly after"),
            ("def f()\n    pass\n", "without `:`"),
            ("if x:\n        a = 1\n    b = 2\n", "unindent"),
            ("if x:\n        a = 1\n\tb = 2\n", "tabs and spaces"),
            ("return 1\n", "outside a function"),
            ("def f():\n    pass\nbreak\n", "outside a loop"),
            ("'a' = 1\n", "cannot assign"),
            ("f(a=1, a=2)\n", "repeated"),
            ("f(a=1, b)\n", "positional argument after"),
            ("x = [a, , b]\n", "nothing before"),
            ("from sqlal-chemy import x\n", "in an import"),
            ("x = y if z:\n", "`:`"),
            ("x = 1 +\n", "cannot end"),
            ("defupgrade() -> None:\n", "`->`"),
        ] {
            let err = verdict(src).expect_err(src);
            assert!(err.contains(why), "{src:?}: {err}");
        }
    }
}

//! Token-level grammar: the shapes of one logical line Python's parser would reject, found
//! without building a syntax tree (the list is in `syntax.rs`'s header).

use super::lexer::Tok;

/// Python's hard keywords.
const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Keywords that are values.
const CONSTANTS: [&str; 3] = ["False", "None", "True"];

/// Keywords that may end a line.
const LINE_END_KEYWORDS: [&str; 8] = [
    "return", "pass", "break", "continue", "yield", "raise", "False", "True",
];

/// Operators that need an operand on their left: never first, never after another operator.
const BINARY_ONLY: [&str; 27] = [
    "=", "==", "!=", "<=", ">=", "<", ">", "/", "//", "%", "&", "|", "^", "<<", ">>", ".", "@",
    "+=", "-=", "*=", "/=", "//=", "%=", "**=", "->", ":=", "@=",
];

/// Soft keywords that may start a statement followed by an operand.
const SOFT_KEYWORDS: [&str; 3] = ["match", "case", "type"];

fn is_keyword(t: &Tok) -> bool {
    matches!(t, Tok::Name(n) if KEYWORDS.contains(&n.as_str()))
}

fn is_name(t: &Tok, name: &str) -> bool {
    matches!(t, Tok::Name(n) if n == name)
}

/// A token that can end an operand: a name, a constant, a number, a string, a closing bracket.
fn ends_operand(t: &Tok) -> bool {
    match t {
        Tok::Name(n) => !KEYWORDS.contains(&n.as_str()) || CONSTANTS.contains(&n.as_str()),
        Tok::Str(_) | Tok::Num => true,
        Tok::Op(o) => matches!(*o, ")" | "]" | "}" | "..."),
    }
}

/// A token that starts an operand and cannot follow one directly.
fn starts_operand(t: &Tok) -> bool {
    match t {
        Tok::Name(n) => !KEYWORDS.contains(&n.as_str()) || CONSTANTS.contains(&n.as_str()),
        Tok::Str(_) | Tok::Num => true,
        Tok::Op(o) => *o == "{",
    }
}

fn is_bytes(t: &Tok) -> Option<bool> {
    match t {
        Tok::Str(s) => Some(s.prefix.to_ascii_lowercase().contains('b')),
        _ => None,
    }
}

/// The token-level rules, within one logical line.
///
/// # Errors
/// The first rule broken.
pub(super) fn check_line(toks: &[Tok]) -> Result<(), String> {
    let (Some(first), Some(last)) = (toks.first(), toks.last()) else {
        return Ok(());
    };
    // `@` starts a decorator.
    if matches!(first, Tok::Op(o) if (BINARY_ONLY.contains(o) && *o != "@") || matches!(*o, "," | ":" | ";"))
        || matches!(first, Tok::Name(n) if matches!(n.as_str(), "in" | "is" | "and" | "or" | "as"))
    {
        return Err(format!("a statement cannot start with {}", shown(first)));
    }
    let import_star =
        toks.len() >= 2 && is_name(&toks[toks.len() - 2], "import") && *last == Tok::Op("*");
    let ends_badly = match last {
        Tok::Op(o) => !matches!(*o, ")" | "]" | "}" | "..." | "," | ":" | ";") && !import_star,
        Tok::Name(n) => {
            KEYWORDS.contains(&n.as_str())
                && !LINE_END_KEYWORDS.contains(&n.as_str())
                && n != "None"
        }
        _ => false,
    };
    if ends_badly {
        return Err(format!("a statement cannot end with {}", shown(last)));
    }
    for (k, pair) in toks.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        let soft_start = k == 0 && matches!(a, Tok::Name(n) if SOFT_KEYWORDS.contains(&n.as_str()));
        if let (Some(x), Some(y)) = (is_bytes(a), is_bytes(b)) {
            if x != y {
                return Err("cannot mix bytes and text string literals".to_owned());
            }
            continue;
        }
        if ends_operand(a) && starts_operand(b) && !soft_start {
            return Err(format!("{} directly after {}", shown(b), shown(a)));
        }
        if let Tok::Op(o) = a {
            let relative_import = matches!(*o, "." | "...") && *b == Tok::Op(".");
            // `def f(a, /, b)`: the positional-only marker.
            let positional_only =
                *b == Tok::Op("/") && toks.iter().take(2).any(|t| is_name(t, "def"));
            if !matches!(*o, ")" | "]" | "}" | "...")
                && !relative_import
                && !positional_only
                && matches!(b, Tok::Op(p) if BINARY_ONLY.contains(p))
            {
                return Err(format!("{} directly after {}", shown(b), shown(a)));
            }
            if *o == "->" && !toks.iter().take(2).any(|t| is_name(t, "def")) {
                return Err("`->` outside a function definition".to_owned());
            }
            // `from . import x`, `from .. import x`: dots before `import` or more dots.
            let after_dot_ok = matches!(b, Tok::Name(n) if !is_keyword(b) || n == "import")
                || matches!(b, Tok::Op("." | "..."));
            if *o == "." && !after_dot_ok {
                return Err(format!("{} after `.`", shown(b)));
            }
        }
    }
    header_colon(toks)?;
    literal_target(toks)?;
    import_line(toks)?;
    nesting(toks)?;
    colons(toks)
}

/// Keywords that only start a statement (or follow `async`, an inline body's `:`, or `;`).
const STATEMENT_ONLY: [&str; 18] = [
    "def", "class", "return", "pass", "break", "continue", "global", "nonlocal", "del", "assert",
    "raise", "try", "while", "with", "elif", "except", "finally", "import",
];

/// Keywords that need an operand on their left.
const INFIX_KEYWORDS: [&str; 8] = ["if", "else", "for", "in", "is", "and", "or", "as"];

/// `import`/`from … import` lines hold only names, dots, commas, `as`, parentheses and `*`.
fn import_line(toks: &[Tok]) -> Result<(), String> {
    if !(is_name(&toks[0], "import") || is_name(&toks[0], "from")) {
        return Ok(());
    }
    for t in toks {
        let fits = match t {
            Tok::Name(n) => !is_keyword(t) || matches!(n.as_str(), "import" | "from" | "as"),
            Tok::Op(o) => matches!(*o, "." | "..." | "," | "(" | ")" | "*"),
            _ => false,
        };
        if !fits {
            return Err(format!("{} in an import", shown(t)));
        }
    }
    Ok(())
}

/// Rules that depend on the innermost bracket: keywords in the middle of a line, `,` and `:`
/// where they cannot be, `=` inside `[]`/`{}`, an operator before a closing bracket, and the
/// arguments of a call (a keyword given twice, a positional argument after a keyword one).
fn nesting(toks: &[Tok]) -> Result<(), String> {
    let def_line = toks.iter().take(2).any(|t| is_name(t, "def"));
    let from_line = is_name(&toks[0], "from");
    let has_lambda = toks.iter().any(|t| is_name(t, "lambda"));
    // Per open bracket: its kind, whether it is a call's, the keywords seen, whether a keyword
    // (or `**`) argument was seen, and the index where the current argument starts.
    let mut stack: Vec<(&str, bool, Vec<String>, bool, usize)> = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        let prev = k.checked_sub(1).map(|p| &toks[p]);
        let inner = stack.last().map(|s| s.0);
        if let Tok::Name(n) = t {
            let n = n.as_str();
            let after_ok = prev.is_none()
                || matches!(prev, Some(Tok::Op(":" | ";")))
                || matches!(prev, Some(p) if is_name(p, "async"))
                || (n == "import" && from_line);
            if STATEMENT_ONLY.contains(&n) && !after_ok {
                return Err(format!("`{n}` in the middle of a statement"));
            }
            let operand_before = prev.is_some_and(|p| {
                ends_operand(p)
                    || is_name(p, "async")
                    || is_name(p, "not") && n == "in"
                    || is_name(p, "is") && n == "not"
            }) || (n == "in" && matches!(prev, Some(Tok::Op(","))));
            if INFIX_KEYWORDS.contains(&n)
                && prev.is_some()
                && !operand_before
                && !(n == "else" && matches!(prev, Some(Tok::Op(":"))))
            {
                return Err(format!("`{n}` without an operand before it"));
            }
        }
        match t {
            Tok::Op(o @ ("(" | "[" | "{")) => {
                let call = *o == "(" && prev.is_some_and(ends_operand) && !def_line;
                stack.push((o, call, Vec::new(), false, k + 1));
            }
            Tok::Op(o @ (")" | "]" | "}")) => {
                // `(a, /)` in a def: the positional-only marker may close a parameter list.
                let may_close = |p: &str| {
                    matches!(
                        p,
                        "(" | "[" | "{" | ")" | "]" | "}" | "..." | "," | ":" | "*"
                    ) || (def_line && p == "/")
                };
                if matches!(prev, Some(Tok::Op(p)) if !may_close(p)) {
                    return Err(format!("`{o}` after an operator"));
                }
                if let Some(frame) = stack.pop()
                    && frame.1
                {
                    argument(&toks[frame.4..k], &mut (frame.2, frame.3))?;
                }
            }
            Tok::Op(",") => {
                if matches!(prev, Some(Tok::Op("(" | "[" | "{" | ","))) {
                    return Err("`,` with nothing before it".to_owned());
                }
                if let Some(frame) = stack.last_mut()
                    && frame.1
                {
                    let mut seen = (std::mem::take(&mut frame.2), frame.3);
                    argument(&toks[frame.4..k], &mut seen)?;
                    (frame.2, frame.3, frame.4) = (seen.0, seen.1, k + 1);
                }
            }
            Tok::Op("=") if matches!(inner, Some("[" | "{")) => {
                return Err("`=` inside brackets (did you mean `==`?)".to_owned());
            }
            Tok::Op(":")
                if !def_line
                    && ((inner == Some("(") && !has_lambda)
                        || matches!(prev, Some(Tok::Op(p)) if matches!(*p, "(" | "{" | "=" | ",") && inner != Some("["))) =>
            {
                return Err("`:` where an expression must be".to_owned());
            }
            _ => {}
        }
    }
    Ok(())
}

/// One argument of a call: `NAME=value`, `**x`, `*x` or a positional one.
fn argument(arg: &[Tok], seen: &mut (Vec<String>, bool)) -> Result<(), String> {
    match arg {
        [] | [Tok::Op("*"), ..] => Ok(()),
        [Tok::Name(n), Tok::Op("="), ..] => {
            if seen.0.contains(n) {
                return Err(format!("keyword argument `{n}` repeated"));
            }
            seen.0.push(n.clone());
            seen.1 = true;
            Ok(())
        }
        [Tok::Op("**"), ..] => {
            seen.1 = true;
            Ok(())
        }
        _ if first_assignment(arg).is_some() => {
            Err("an argument assigns to something that is not a name".to_owned())
        }
        _ if seen.1 && !arg.iter().any(|t| is_name(t, "for")) => {
            Err("positional argument after a keyword argument".to_owned())
        }
        _ => Ok(()),
    }
}

/// The index of the first `=` at bracket depth 0.
fn first_assignment(toks: &[Tok]) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate() {
        match t {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op("=") if depth == 0 => return Some(k),
            _ => {}
        }
    }
    None
}

/// Where a `:` may be at bracket depth 0: the header's colon, lambdas' colons, one
/// annotation's; a line ends with `:` only when it is a header (or `match`/`case`).
fn colons(toks: &[Tok]) -> Result<(), String> {
    let start = usize::from(is_name(&toks[0], "async"));
    let header = matches!(&toks[start], Tok::Name(n) if matches!(n.as_str(), "def" | "class" | "if" | "elif" | "while" | "for" | "with" | "try" | "except" | "finally" | "else"))
        || (matches!(&toks[0], Tok::Name(n) if n == "match" || n == "case")
            && toks.last() == Some(&Tok::Op(":")));
    let mut depth = 0usize;
    let mut lambdas = 0usize;
    let mut header_colon_seen = !header;
    let mut assigned = false;
    let condition =
        matches!(&toks[start], Tok::Name(n) if matches!(n.as_str(), "if" | "elif" | "while"));
    for (k, t) in toks.iter().enumerate() {
        if condition && !header_colon_seen && depth == 0 && *t == Tok::Op(",") {
            return Err("`,` in a condition".to_owned());
        }
        match t {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Name(n) if depth == 0 && n == "lambda" => lambdas += 1,
            Tok::Op("=") if depth == 0 => assigned = true,
            Tok::Op(";") if depth == 0 => (assigned, lambdas) = (false, 0),
            Tok::Op(":") if depth == 0 => {
                if lambdas > 0 {
                    lambdas -= 1;
                } else if !header_colon_seen {
                    header_colon_seen = true;
                    assigned = false;
                } else if assigned || k + 1 == toks.len() {
                    return Err("`:` where it cannot be".to_owned());
                } else {
                    assigned = true;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A compound statement's header needs its `:` (at bracket depth 0).
fn header_colon(toks: &[Tok]) -> Result<(), String> {
    let start = usize::from(is_name(&toks[0], "async"));
    let Some(Tok::Name(word)) = toks.get(start) else {
        return Ok(());
    };
    let word = word.as_str();
    if !matches!(
        word,
        "def"
            | "class"
            | "if"
            | "elif"
            | "while"
            | "for"
            | "with"
            | "try"
            | "except"
            | "finally"
            | "else"
    ) {
        return Ok(());
    }
    if matches!(word, "try" | "finally" | "else") && toks.get(start + 1) != Some(&Tok::Op(":")) {
        return Err(format!("`{word}` must be followed by `:`"));
    }
    if matches!(word, "def" | "class")
        && !matches!(toks.get(start + 1), Some(t @ Tok::Name(_)) if !is_keyword(t))
    {
        return Err(format!("`{word}` must be followed by a name"));
    }
    if word == "def" && !matches!(toks.get(start + 2), Some(Tok::Op("(" | "["))) {
        return Err("`def NAME` must be followed by its parameters".to_owned());
    }
    let mut depth = 0usize;
    for t in &toks[start..] {
        match t {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op(":") if depth == 0 => return Ok(()),
            _ => {}
        }
    }
    Err(format!("`{word}` statement without `:`"))
}

/// `'a' = 1`, `None = x`: assignment (at depth 0) to something that is not a target. After an
/// annotation's `:` (`x: str | None = …`) the `=` ends a type, not a target.
fn literal_target(toks: &[Tok]) -> Result<(), String> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate() {
        match t {
            Tok::Op(":") if depth == 0 => return Ok(()),
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op("=") if depth == 0 && k > 0 => {
                let before = &toks[k - 1];
                let literal = matches!(before, Tok::Str(_) | Tok::Num)
                    || matches!(before, Tok::Name(n) if CONSTANTS.contains(&n.as_str()));
                if literal {
                    return Err(format!("cannot assign to {}", shown(before)));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn shown(t: &Tok) -> String {
    match t {
        Tok::Name(n) => format!("`{n}`"),
        Tok::Str(_) => "a string".to_owned(),
        Tok::Num => "a number".to_owned(),
        Tok::Op(o) => format!("`{o}`"),
    }
}

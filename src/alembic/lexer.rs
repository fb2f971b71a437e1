//! A small Python tokenizer: logical lines of names, strings, numbers and operators, with
//! comments dropped and string literals (triple-quoted, prefixed, nested f-strings) read whole,
//! so that neither a comment nor a string's contents can look like code.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Name(String),
    Str(PyStr),
    Op(&'static str),
    Num,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PyStr {
    pub(super) prefix: String,
    pub(super) triple: bool,
    /// The source text between the quotes (escapes not decoded; f-string fields elided).
    pub(super) body: String,
}

/// One logical line: tokens up to a NEWLINE outside brackets.
#[derive(Debug)]
pub(super) struct LogicalLine {
    /// Indentation in columns, tabs to the next multiple of 8 (Python's measure).
    pub(super) indent: usize,
    /// Indentation with tabs counted as one column: where the two measures order lines
    /// differently, Python raises `TabError`.
    pub(super) alt_indent: usize,
    pub(super) lineno: usize,
    pub(super) toks: Vec<Tok>,
}

const OPS: [&str; 47] = [
    "**=", "//=", ">>=", "<<=", "...", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "%=", "&=",
    "|=", "^=", "@=", "->", ":=", "**", "//", "<<", ">>", "(", ")", "[", "]", "{", "}", "+", "-",
    "*", "/", "%", "&", "|", "^", "~", "<", ">", "=", ".", ",", ":", ";", "@",
];

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn is_string_prefix(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "r" | "u" | "b" | "br" | "rb" | "f" | "fr" | "rf" | "t" | "tr" | "rt"
    )
}

struct Lexer {
    s: Vec<char>,
    i: usize,
    line: usize,
}

/// Split Python source into logical lines of tokens, skipping comments and whole string
/// literals (including triple-quoted and nested f-strings).
///
/// # Errors
/// Text Python's tokenizer would reject: an unterminated string, a bracket closed by the wrong
/// kind or never closed, a character that is no token, a malformed number or escape.
pub(super) fn tokenize(src: &str) -> Result<Vec<LogicalLine>, String> {
    let mut lx = Lexer {
        s: src.chars().collect(),
        i: 0,
        line: 1,
    };
    let mut lines = Vec::new();
    let mut toks = Vec::new();
    let mut open: Vec<&'static str> = Vec::new();
    let (mut indent, mut alt_indent, mut lineno) = (0, 0, 1);
    let mut line_start = true;
    while let Some(c) = lx.peek() {
        if line_start {
            line_start = false;
            if toks.is_empty() && open.is_empty() {
                (indent, alt_indent) = lx.indentation();
                lineno = lx.line;
                continue;
            }
        }
        match c {
            ' ' | '\t' | '\x0c' => {
                lx.bump();
            }
            '\n' => {
                lx.bump();
                line_start = true;
                if open.is_empty() && !toks.is_empty() {
                    lines.push(LogicalLine {
                        indent,
                        alt_indent,
                        lineno,
                        toks: std::mem::take(&mut toks),
                    });
                }
            }
            '#' => {
                while lx.peek().is_some_and(|c| c != '\n') {
                    lx.bump();
                }
            }
            '\\' => {
                lx.bump();
                if lx.bump() != Some('\n') {
                    return lx.err("a backslash outside a string must end the line");
                }
                if lx.peek().is_none() {
                    return lx.err("a backslash continues the last line of the file");
                }
            }
            '"' | '\'' => toks.push(Tok::Str(lx.string(String::new())?)),
            c if is_ident_start(c) => {
                let name = lx.ident();
                if matches!(lx.peek(), Some('"' | '\'')) && is_string_prefix(&name) {
                    toks.push(Tok::Str(lx.string(name)?));
                } else {
                    toks.push(Tok::Name(name));
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && lx.peek_at(1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                lx.number()?;
                toks.push(Tok::Num);
            }
            _ => {
                let op = lx.operator()?;
                match op {
                    "(" | "[" | "{" => open.push(op),
                    ")" | "]" | "}" => {
                        let opener = open
                            .pop()
                            .ok_or_else(|| format!("line {}: unbalanced `{op}`", lx.line))?;
                        if !matches!((opener, op), ("(", ")") | ("[", "]") | ("{", "}")) {
                            return lx.err(&format!("`{op}` closes `{opener}`"));
                        }
                    }
                    _ => {}
                }
                toks.push(Tok::Op(op));
            }
        }
    }
    if !open.is_empty() {
        return Err("unclosed bracket at end of file".to_owned());
    }
    if !toks.is_empty() {
        lines.push(LogicalLine {
            indent,
            alt_indent,
            lineno,
            toks,
        });
    }
    Ok(lines)
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn err<T>(&self, msg: &str) -> Result<T, String> {
        Err(format!("line {}: {msg}", self.line))
    }

    /// Leading whitespace in columns, as Python measures it twice: tabs to the next multiple of
    /// 8, and tabs as one column; a form feed resets both.
    fn indentation(&mut self) -> (usize, usize) {
        let (mut col, mut alt) = (0, 0);
        while let Some(c) = self.peek() {
            match c {
                ' ' => (col, alt) = (col + 1, alt + 1),
                '\t' => (col, alt) = ((col / 8 + 1) * 8, alt + 1),
                '\x0c' => (col, alt) = (0, 0),
                _ => break,
            }
            self.i += 1;
        }
        (col, alt)
    }

    /// A number literal as Python's tokenizer reads it: `0x`/`0o`/`0b` integers, decimals
    /// (no leading zeros unless all zeros), fractions, exponents, a `j` suffix, single `_`
    /// between digits; a letter or digit straight after it is an error.
    fn number(&mut self) -> Result<(), String> {
        let radix = match (self.peek(), self.peek_at(1)) {
            (Some('0'), Some('x' | 'X')) => 16,
            (Some('0'), Some('o' | 'O')) => 8,
            (Some('0'), Some('b' | 'B')) => 2,
            _ => 10,
        };
        if radix == 10 {
            let leading_zero = self.peek() == Some('0');
            let int = self.digits(10)?;
            let mut float = false;
            if self.peek() == Some('.') {
                self.i += 1;
                float = true;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.digits(10)?;
                }
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                self.i += 1;
                float = true;
                if matches!(self.peek(), Some('+' | '-')) {
                    self.i += 1;
                }
                if self.digits(10)?.is_empty() {
                    return self.err("invalid exponent in a number");
                }
            }
            let imaginary = matches!(self.peek(), Some('j' | 'J'));
            if imaginary {
                self.i += 1;
            }
            if leading_zero && !float && !imaginary && int.chars().any(|c| c != '0' && c != '_') {
                return self.err("leading zeros in a decimal number");
            }
        } else {
            self.i += 2;
            if self.peek() == Some('_') {
                self.i += 1;
            }
            if self.digits(radix)?.is_empty() {
                return self.err("a number prefix without digits");
            }
        }
        if self.peek().is_some_and(is_ident_continue) {
            return self.err("invalid number literal");
        }
        Ok(())
    }

    /// Digits of `radix` with single `_` between them; returns them (empty when none).
    fn digits(&mut self, radix: u32) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            let next_is_digit = self.peek_at(1).is_some_and(|d| d.is_digit(radix));
            if c.is_digit(radix) || (c == '_' && next_is_digit && !out.is_empty()) {
                out.push(c);
            } else if c == '_' || (radix < 10 && c.is_ascii_digit()) {
                return self.err("invalid digit or `_` in a number");
            } else {
                break;
            }
            self.i += 1;
        }
        Ok(out)
    }

    fn ident(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| is_ident_continue(*c)) {
            name.push(c);
            self.i += 1;
        }
        name
    }

    fn operator(&mut self) -> Result<&'static str, String> {
        for op in OPS {
            if op
                .chars()
                .enumerate()
                .all(|(k, oc)| self.peek_at(k) == Some(oc))
            {
                self.i += op.len();
                return Ok(op);
            }
        }
        self.err(&format!(
            "unexpected character {:?}",
            self.peek().unwrap_or(' ')
        ))
    }

    /// A string literal starting at the opening quote; `prefix` already consumed.
    fn string(&mut self, prefix: String) -> Result<PyStr, String> {
        let start = self.line;
        let unterminated = || format!("line {start}: unterminated string");
        let q = self.bump().ok_or_else(unterminated)?;
        let triple = self.peek() == Some(q) && self.peek_at(1) == Some(q);
        if triple {
            self.i += 2;
        }
        let lower = prefix.to_ascii_lowercase();
        let formatted = lower.contains('f') || lower.contains('t');
        let raw = lower.contains('r');
        let mut body = String::new();
        loop {
            let c = self.bump().ok_or_else(unterminated)?;
            match c {
                '\\' => {
                    let d = self.bump().ok_or_else(unterminated)?;
                    body.push(c);
                    body.push(d);
                    if formatted && !raw && d == 'N' && self.peek() == Some('{') {
                        while let Some(e) = self.bump() {
                            body.push(e);
                            if e == '}' {
                                break;
                            }
                        }
                    }
                }
                '\n' if !triple => {
                    return Err(format!("line {start}: newline inside a one-line string"));
                }
                c if c == q => {
                    if !triple {
                        break;
                    }
                    if self.peek() == Some(q) && self.peek_at(1) == Some(q) {
                        self.i += 2;
                        break;
                    }
                    body.push(c);
                }
                '{' if formatted => {
                    if self.peek() == Some('{') {
                        self.i += 1;
                        body.push_str("{{");
                    } else {
                        self.replacement_field(q, triple)?;
                        body.push_str("{}");
                    }
                }
                '}' if formatted => {
                    if self.peek() != Some('}') {
                        return self.err("single `}` in an f-string");
                    }
                    self.i += 1;
                    body.push_str("}}");
                }
                _ => body.push(c),
            }
        }
        check_literal_text(&lower, &body).map_err(|e| format!("line {start}: {e}"))?;
        Ok(PyStr {
            prefix,
            triple,
            body,
        })
    }

    /// An f-string replacement field after its `{`, up to and including the matching `}`
    /// (Python 3.12 rules: nested strings may reuse the outer quote).
    fn replacement_field(&mut self, q: char, triple: bool) -> Result<(), String> {
        let mut depth = 0usize;
        loop {
            let Some(c) = self.peek() else {
                return self.err("unterminated f-string");
            };
            match c {
                '"' | '\'' => {
                    self.string(String::new())?;
                }
                c if is_ident_start(c) => {
                    let name = self.ident();
                    if matches!(self.peek(), Some('"' | '\'')) && is_string_prefix(&name) {
                        self.string(name)?;
                    }
                }
                '(' | '[' | '{' => {
                    self.bump();
                    depth += 1;
                }
                ')' | ']' => {
                    self.bump();
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| format!("line {}: unbalanced f-string", self.line))?;
                }
                '}' => {
                    self.bump();
                    if depth == 0 {
                        return Ok(());
                    }
                    depth -= 1;
                }
                ':' if depth == 0 => {
                    self.bump();
                    return self.format_spec(q, triple);
                }
                '#' => return self.err("comment inside an f-string"),
                '\\' => {
                    self.bump();
                    self.bump();
                }
                _ => {
                    self.bump();
                }
            }
        }
    }

    /// An f-string format spec after its `:`, up to and including the field's closing `}`.
    fn format_spec(&mut self, q: char, triple: bool) -> Result<(), String> {
        loop {
            let Some(c) = self.bump() else {
                return self.err("unterminated f-string");
            };
            match c {
                '{' => self.replacement_field(q, triple)?,
                '}' => return Ok(()),
                '\\' => {
                    self.bump();
                }
                '\n' if !triple => return self.err("newline inside a one-line f-string"),
                c if c == q => return self.err("quote inside an f-string format spec"),
                _ => {}
            }
        }
    }
}

/// What Python rejects inside a string literal's text: non-ASCII characters in a byte string,
/// and (unless raw) a truncated `\x`, `\u`, `\U` escape, an out-of-range `\U`, or an unclosed
/// `\N{…}`.
fn check_literal_text(prefix: &str, body: &str) -> Result<(), String> {
    let bytes = prefix.contains('b');
    if bytes && !body.is_ascii() {
        return Err("a byte string holds a non-ASCII character".to_owned());
    }
    if prefix.contains('r') {
        return Ok(());
    }
    let chars: Vec<char> = body.chars().collect();
    let mut k = 0;
    while k < chars.len() {
        if chars[k] != '\\' {
            k += 1;
            continue;
        }
        let hex = |n: usize| {
            chars
                .get(k + 2..k + 2 + n)
                .filter(|h| h.iter().all(char::is_ascii_hexdigit))
        };
        match chars.get(k + 1) {
            Some('x') if hex(2).is_none() => return Err("truncated \\x escape".to_owned()),
            Some('u') if !bytes && hex(4).is_none() => {
                return Err("truncated \\u escape".to_owned());
            }
            Some('U') if !bytes => {
                let digits: String = hex(8)
                    .ok_or_else(|| "truncated \\U escape".to_owned())?
                    .iter()
                    .collect();
                if u32::from_str_radix(&digits, 16).map_or(true, |v| v > 0x0010_FFFF) {
                    return Err("\\U escape out of range".to_owned());
                }
            }
            Some('N') if !bytes => {
                let closed = chars.get(k + 2) == Some(&'{')
                    && chars[k + 2..]
                        .iter()
                        .position(|c| *c == '}')
                        .is_some_and(|p| p > 1);
                if !closed {
                    return Err("malformed \\N{...} escape".to_owned());
                }
            }
            _ => {}
        }
        k += 2;
    }
    Ok(())
}

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

/// One logical line: tokens up to a NEWLINE outside brackets; `indent` in columns (tabs to 8).
#[derive(Debug)]
pub(super) struct LogicalLine {
    pub(super) indent: usize,
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
pub(super) fn tokenize(src: &str) -> Result<Vec<LogicalLine>, String> {
    let mut lx = Lexer {
        s: src.chars().collect(),
        i: 0,
        line: 1,
    };
    let mut lines = Vec::new();
    let mut toks = Vec::new();
    let mut depth = 0usize;
    let (mut indent, mut lineno) = (0, 1);
    let mut line_start = true;
    while let Some(c) = lx.peek() {
        if line_start {
            line_start = false;
            if toks.is_empty() && depth == 0 {
                indent = lx.indentation();
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
                if depth == 0 && !toks.is_empty() {
                    lines.push(LogicalLine {
                        indent,
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
                while lx.peek().is_some_and(|c| is_ident_continue(c) || c == '.') {
                    lx.bump();
                }
                toks.push(Tok::Num);
            }
            _ => {
                let op = lx.operator()?;
                match op {
                    "(" | "[" | "{" => depth += 1,
                    ")" | "]" | "}" => {
                        depth = depth
                            .checked_sub(1)
                            .ok_or_else(|| format!("line {}: unbalanced `{op}`", lx.line))?;
                    }
                    _ => {}
                }
                toks.push(Tok::Op(op));
            }
        }
    }
    if depth != 0 {
        return Err("unclosed bracket at end of file".to_owned());
    }
    if !toks.is_empty() {
        lines.push(LogicalLine {
            indent,
            lineno,
            toks,
        });
    }
    super::syntax::check_indentation(&lines)?;
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

    /// Leading whitespace in columns: tabs to the next multiple of 8, form feed resets.
    fn indentation(&mut self) -> usize {
        let mut col = 0;
        while let Some(c) = self.peek() {
            match c {
                ' ' => col += 1,
                '\t' => col = (col / 8 + 1) * 8,
                '\x0c' => col = 0,
                _ => break,
            }
            self.i += 1;
        }
        col
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

//! The ini file, read as Python's `configparser.ConfigParser` reads it (strict, `%(name)s`
//! interpolation, the `here` default Alembic adds), so that every option has the value Alembic
//! sees.

use std::collections::{HashMap, HashSet};

/// Python's whitespace (`str.isspace`): Unicode `White_Space` plus the separators U+001C–U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The default section, whose options every section sees.
const DEFAULT_SECTION: &str = "DEFAULT";

/// Maximum nesting of `%(name)s` references, as `configparser.MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// A parsed ini file: `sections[DEFAULT_SECTION]` holds the defaults (including `here`).
#[derive(Debug)]
pub(super) struct Ini {
    sections: HashMap<String, HashMap<String, String>>,
}

impl Ini {
    /// Parse like `ConfigParser({"here": here}).read(file)`: strict (duplicate sections or
    /// options are errors), `=`/`:` delimiters, `#`/`;` full-line comments only, indented
    /// continuation lines, lower-cased option names.
    pub(super) fn parse(text: &str, here: &str) -> Result<Self, String> {
        if text.starts_with('\u{feff}') {
            return Err(
                "starts with a byte-order mark (ConfigParser would not find the first section)"
                    .to_owned(),
            );
        }
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let mut raw: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
        raw.entry(DEFAULT_SECTION.to_owned())
            .or_default()
            .insert("here".to_owned(), vec![here.to_owned()]);
        let mut seen_sections = HashSet::new();
        let mut seen_options = HashSet::new();
        let mut section: Option<String> = None;
        let mut option: Option<String> = None;
        let mut indent_level = 0;
        for (index, line) in text.split('\n').enumerate() {
            let lineno = index + 1;
            let stripped = line.trim_matches(py_space);
            let comment = stripped.starts_with('#') || stripped.starts_with(';');
            if stripped.is_empty() || comment {
                // An empty line inside a value is kept (and trimmed at the end); comments are not.
                if let (false, Some(s), Some(o)) = (comment, &section, &option)
                    && let Some(lines) = raw.get_mut(s).and_then(|m| m.get_mut(o))
                {
                    lines.push(String::new());
                }
                continue;
            }
            let indent = line.chars().take_while(|c| py_space(*c)).count();
            if let (Some(s), Some(o)) = (&section, &option)
                && indent > indent_level
            {
                if let Some(lines) = raw.get_mut(s).and_then(|m| m.get_mut(o)) {
                    lines.push(stripped.to_owned());
                }
                continue;
            }
            indent_level = indent;
            if let Some(header) = section_header(stripped) {
                if header != DEFAULT_SECTION && !seen_sections.insert(header.to_owned()) {
                    return Err(format!("line {lineno}: section [{header}] appears twice"));
                }
                raw.entry(header.to_owned()).or_default();
                section = Some(header.to_owned());
                option = None;
                continue;
            }
            let Some(current) = &section else {
                return Err(format!("line {lineno}: option before any [section]"));
            };
            let Some(at) = stripped.find(['=', ':']) else {
                return Err(format!(
                    "line {lineno}: neither a section, an option nor a comment"
                ));
            };
            let name = stripped[..at].trim_end_matches(py_space).to_lowercase();
            if name.is_empty() {
                return Err(format!("line {lineno}: option with an empty name"));
            }
            if !seen_options.insert((current.clone(), name.clone())) {
                return Err(format!(
                    "line {lineno}: option `{name}` appears twice in [{current}]"
                ));
            }
            let value = stripped[at + 1..].trim_matches(py_space).to_owned();
            raw.entry(current.clone())
                .or_default()
                .insert(name.clone(), vec![value]);
            option = Some(name);
        }
        let sections = raw
            .into_iter()
            .map(|(s, options)| {
                let joined = options
                    .into_iter()
                    .map(|(k, lines)| (k, lines.join("\n").trim_end_matches(py_space).to_owned()))
                    .collect();
                (s, joined)
            })
            .collect();
        Ok(Ini { sections })
    }

    pub(super) fn has_section(&self, name: &str) -> bool {
        name != DEFAULT_SECTION && self.sections.contains_key(name)
    }

    /// The raw value of `key` in `section`, falling back to the defaults.
    fn raw(&self, section: &str, key: &str) -> Option<&str> {
        [section, DEFAULT_SECTION]
            .iter()
            .find_map(|s| self.sections.get(*s).and_then(|m| m.get(key)))
            .map(String::as_str)
    }

    /// `ConfigParser.get(section, key)` with `BasicInterpolation`.
    pub(super) fn get(&self, section: &str, key: &str) -> Result<Option<String>, String> {
        let Some(raw) = self.raw(section, key) else {
            return Ok(None);
        };
        let mut out = String::new();
        self.interpolate(section, raw, &mut out, 1)?;
        Ok(Some(out))
    }

    fn interpolate(
        &self,
        section: &str,
        value: &str,
        out: &mut String,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err("interpolation nests too deeply".to_owned());
        }
        let mut rest = value;
        while let Some(p) = rest.find('%') {
            out.push_str(&rest[..p]);
            let after = &rest[p + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                let reference = tail
                    .find(')')
                    .filter(|&close| close > 0 && tail[close + 1..].starts_with('s'))
                    .ok_or_else(|| format!("bad interpolation reference in {value:?}"))?;
                let name = tail[..reference].to_lowercase();
                let replacement = self
                    .raw(section, &name)
                    .ok_or_else(|| format!("interpolation refers to missing option `{name}`"))?;
                if replacement.contains('%') {
                    self.interpolate(section, replacement, out, depth + 1)?;
                } else {
                    out.push_str(replacement);
                }
                rest = &tail[reference + 2..];
            } else {
                return Err(format!("`%` must be followed by `%` or `(` in {value:?}"));
            }
        }
        out.push_str(rest);
        Ok(())
    }
}

/// `re.match(r"\[(?P<header>.+)\]", line)`: the text up to the last `]`.
fn section_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    (close > 0).then(|| &inner[..close])
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // ── ini ──

    #[test]
    fn ini_follows_configparser() {
        let text = "# comment\n[DEFAULT]\nbase = /srv\n\n[alembic]\nScript_Location: %(base)s/m\nversion_locations =\n    %(here)s/a\n\n    # a comment inside\n    %(here)s/b\npct = 100%%\ninline = x # not a comment\n; another comment\n[other]\nk = v\n";
        let ini = Ini::parse(text, "/cfg").unwrap();
        assert!(
            ini.has_section("alembic") && ini.has_section("other") && !ini.has_section("DEFAULT")
        );
        assert_eq!(
            ini.get("alembic", "script_location").unwrap().as_deref(),
            Some("/srv/m")
        );
        assert_eq!(
            ini.get("alembic", "version_locations").unwrap().as_deref(),
            Some("\n/cfg/a\n\n/cfg/b")
        );
        assert_eq!(ini.get("alembic", "pct").unwrap().as_deref(), Some("100%"));
        assert_eq!(
            ini.get("alembic", "inline").unwrap().as_deref(),
            Some("x # not a comment")
        );
        assert_eq!(ini.get("other", "base").unwrap().as_deref(), Some("/srv"));
        assert_eq!(ini.get("other", "missing").unwrap(), None);
        assert!(
            Ini::parse("[a]\nk = %(nope)s\n", "/")
                .unwrap()
                .get("a", "k")
                .is_err()
        );
        assert!(
            Ini::parse("[a]\nk = 5%\n", "/")
                .unwrap()
                .get("a", "k")
                .is_err()
        );
        assert!(
            Ini::parse("[a]\nk = %(k)s\n", "/")
                .unwrap()
                .get("a", "k")
                .is_err()
        );
        assert!(Ini::parse("[a]\nk = 1\nK = 2\n", "/").is_err());
        assert!(Ini::parse("[a]\n[a]\n", "/").is_err());
        assert!(Ini::parse("k = 1\n[a]\n", "/").is_err());
        assert!(Ini::parse("[a]\njunk\n", "/").is_err());
    }
}

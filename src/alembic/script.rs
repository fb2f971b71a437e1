//! Loading the script directory: the ini options that say where the revision files are
//! (`script_location`, `version_locations` and their separators, `recursive_version_locations`,
//! `sourceless`), `pyproject.toml`, `env.py`, and the walk over the version directories that
//! finds the files Alembic would load.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::command::Invocation;
use super::env_py::check_env_py;
use super::heads::{Script, heads};
use super::ini::Ini;
use super::revision::{RevisionInfo, parse_revision_file};

/// Read the config, find the version directories, parse every revision file, compute heads.
///
/// # Errors
/// The reason for doubt: unreadable or unusual config (no `script_location`, a package resource,
/// `sourceless`, `[tool.alembic]` in `pyproject.toml`, …), an `env.py` that configures its own
/// version table, an unreadable or non-literal revision file, or a graph Alembic would reject.
pub fn load(inv: &Invocation) -> Result<Script, String> {
    let cfg_path = &inv.config;
    let shown = cfg_path.display();
    let text = fs::read_to_string(cfg_path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let here = here_of(cfg_path)?;
    let ini = Ini::parse(&text, &here).map_err(|e| format!("{shown}: {e}"))?;
    let section = inv.section.as_str();
    if !ini.has_section(section) {
        return Err(format!("{shown} has no [{section}] section"));
    }
    check_pyproject(&inv.cwd)?;
    let opt = |key: &str| {
        ini.get(section, key)
            .map_err(|e| format!("{shown}: [{section}] {key}: {e}"))
    };

    let location = opt("script_location")?.ok_or_else(|| {
        format!(
            "{shown} has no script_location in [{section}] (the config may live in pyproject.toml)"
        )
    })?;
    if location.is_empty() {
        return Err(format!("{shown}: script_location is empty"));
    }
    let script_dir = resolve_path(&inv.cwd, &location, "script_location")?;
    if !script_dir.is_dir() {
        return Err(format!(
            "script_location {} is not a directory",
            script_dir.display()
        ));
    }
    if flag(opt("sourceless")?.as_deref(), "sourceless")? {
        return Err("sourceless = true: revisions may exist only as .pyc files".to_owned());
    }
    let recursive = flag(
        opt("recursive_version_locations")?.as_deref(),
        "recursive_version_locations",
    )?;
    if let Some(t) = opt("truncate_slug_length")?
        && t.trim().parse::<i64>().is_err()
    {
        return Err(format!(
            "truncate_slug_length {t:?} is not an integer (Alembic would fail)"
        ));
    }
    check_env_py(&script_dir)?;

    let dirs = match opt("version_locations")?.filter(|v| !v.is_empty()) {
        Some(raw) => {
            let path_sep = opt("path_separator")?;
            let legacy_sep = opt("version_path_separator")?;
            split_version_locations(&raw, path_sep.as_deref(), legacy_sep.as_deref())?
                .iter()
                .map(|l| resolve_path(&inv.cwd, l, "version_locations"))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => vec![script_dir.join("versions")],
    };
    let mut files = Vec::new();
    for dir in &dirs {
        if !dir.is_dir() {
            return Err(format!(
                "version directory {} does not exist",
                dir.display()
            ));
        }
        walk(dir, recursive, &mut files)?;
    }
    heads(&read_revisions(&files)?)
}

/// `%(here)s`: the config file's directory, absolute.
fn here_of(config: &Path) -> Result<String, String> {
    let parent = config
        .parent()
        .ok_or_else(|| format!("config path {} has no directory", config.display()))?;
    let dir = consistent_path(parent, "the config file's directory")?;
    let here = dir
        .to_str()
        .ok_or_else(|| format!("config directory {} is not UTF-8", dir.display()))?;
    if here.contains('%') {
        return Err(
            "the config file's directory contains `%`, which interpolation would misread"
                .to_owned(),
        );
    }
    Ok(here.to_owned())
}

/// A boolean option: Alembic tests `value == "true"` (older versions: case-insensitively).
fn flag(value: Option<&str>, key: &str) -> Result<bool, String> {
    match value {
        Some("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("true") => Err(format!(
            "{key} = {v}: Alembic versions disagree on whether this is true"
        )),
        _ => Ok(false),
    }
}

/// Resolve a configured path the way Alembic does (relative to the working directory; a relative
/// path containing `:` is a `package:path` resource, which we do not resolve).
fn resolve_path(cwd: &Path, s: &str, what: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if !p.is_absolute() && s.contains(':') {
        return Err(format!(
            "{what} {s:?} is a package resource (`package:path`)"
        ));
    }
    consistent_path(&cwd.join(p), what)
}

/// The lexically normalised absolute path (`os.path.abspath`). Newer Alembic keeps `..` and lets
/// the kernel resolve it (`Path.absolute()`); when the two could name different directories
/// (a `..` after a symlink) that is doubt.
fn consistent_path(path: &Path, what: &str) -> Result<PathBuf, String> {
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    if path.components().any(|c| c == Component::ParentDir)
        && fs::canonicalize(path).ok() != fs::canonicalize(&lexical).ok()
    {
        return Err(format!(
            "{what} {} contains `..` that resolves differently through a symlink",
            path.display()
        ));
    }
    Ok(lexical)
}

/// Newer Alembic (1.16+) falls back to `[tool.alembic]` in `<cwd>/pyproject.toml` for every
/// option the ini lacks; we do not read TOML, so its presence is doubt.
fn check_pyproject(cwd: &Path) -> Result<(), String> {
    let path = cwd.join("pyproject.toml");
    match fs::read_to_string(&path) {
        Ok(text) if toml_configures_alembic(&text) => Err(format!(
            "{} has a [tool.alembic] table, which newer Alembic reads options from",
            path.display()
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Whether TOML text defines anything under `tool.alembic` (table headers, dotted keys, an
/// `alembic` key under `[tool]`, or an inline `tool = {…alembic…}`). Errs towards `true`.
fn toml_configures_alembic(text: &str) -> bool {
    fn squash(s: &str) -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
            .collect()
    }
    fn is_tool_alembic(key: &str) -> bool {
        key == "tool.alembic" || key.starts_with("tool.alembic.")
    }
    let mut table = String::new();
    let mut multiline: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(delim) = multiline {
            if line.matches(delim).count() % 2 == 1 {
                multiline = None;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let inner = line.trim_start_matches('[');
            table = squash(inner.split(']').next().unwrap_or(inner));
            if is_tool_alembic(&table) {
                return true;
            }
            continue;
        }
        let key = squash(line.split('=').next().unwrap_or(line));
        let full = if table.is_empty() {
            key
        } else {
            format!("{table}.{key}")
        };
        if is_tool_alembic(&full) || (full == "tool" && line.contains("alembic")) {
            return true;
        }
        multiline = ["\"\"\"", "'''"]
            .into_iter()
            .find(|d| line.matches(d).count() % 2 == 1);
    }
    false
}

/// Split `version_locations` as both older (`version_path_separator` only) and newer
/// (`path_separator`, then `version_path_separator`) Alembic would; disagreement is doubt.
fn split_version_locations(
    raw: &str,
    path_separator: Option<&str>,
    version_path_separator: Option<&str>,
) -> Result<Vec<String>, String> {
    let newer = split_locations(raw, path_separator.or(version_path_separator))?;
    let older = split_locations(raw, version_path_separator)?;
    if newer != older {
        return Err(
            "version_locations splits differently under path_separator and version_path_separator"
                .to_owned(),
        );
    }
    Ok(newer)
}

fn split_locations(raw: &str, separator: Option<&str>) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = match separator {
        None => legacy_split(raw),
        Some(name) => {
            let ch = match name {
                "space" => ' ',
                "newline" => '\n',
                "os" | ":" => ':',
                ";" => ';',
                other => {
                    return Err(format!(
                        "path separator {other:?} is not one Alembic accepts"
                    ));
                }
            };
            raw.split(ch).filter(|p| !p.is_empty()).collect()
        }
    };
    parts
        .into_iter()
        .map(|p| {
            // Older Alembic does not strip entries, newer does; an empty entry means the cwd.
            if p.is_empty() || p.trim() != p || p.contains(['\n', '\t']) {
                Err(format!("version_locations entry {p:?} is ambiguous"))
            } else {
                Ok(p.to_owned())
            }
        })
        .collect()
}

/// Python's `re.split(r", *|(?: +)", raw)`.
fn legacy_split(raw: &str) -> Vec<&str> {
    let bytes = raw.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut k) = (0, 0);
    while k < bytes.len() {
        if bytes[k] == b',' || bytes[k] == b' ' {
            parts.push(&raw[start..k]);
            k += 1;
            while bytes.get(k) == Some(&b' ') {
                k += 1;
            }
            start = k;
        } else {
            k += 1;
        }
    }
    parts.push(&raw[start..]);
    parts
}

/// Like Alembic's `os.walk` over a version directory: files of `dir` (none when its name ends in
/// `__pycache__`), and with `recursive` the same for every real (non-symlink) subdirectory.
fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let shown = dir.display();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {shown}: {e}"))?;
    let pycache = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("__pycache__"));
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {shown}: {e}"))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if kind.is_dir() {
            if recursive {
                subdirs.push(path);
            }
        } else if !pycache {
            out.push(path);
        }
    }
    subdirs.sort();
    for sub in &subdirs {
        walk(sub, recursive, out)?;
    }
    Ok(())
}

/// Parse every revision file among `files`, the way Alembic filters them: by the name of the
/// resolved path, skipping `.#*` and `__init__*`, loading `*.py`, each real file once.
fn read_revisions(files: &[PathBuf]) -> Result<Vec<RevisionInfo>, String> {
    let mut seen = HashSet::new();
    let mut revs = Vec::new();
    for path in files {
        let link_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let real = match fs::canonicalize(path) {
            Ok(real) => real,
            // Emacs lock files are dangling symlinks named `.#…`; Alembic skips them.
            Err(_) if link_name.starts_with(".#") => continue,
            Err(e) => return Err(format!("cannot resolve {}: {e}", path.display())),
        };
        if !seen.insert(real.clone()) {
            continue;
        }
        let shown = real.display();
        let name = real
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("file name {shown} is not UTF-8"))?;
        if name.contains('\n') {
            return Err(format!("file name {shown:?} contains a newline"));
        }
        if name.starts_with(".#") || name.starts_with("__init__") {
            continue;
        }
        if let Some(stem) = name
            .strip_suffix(".pyc")
            .or_else(|| name.strip_suffix(".pyo"))
        {
            if !real.with_file_name(format!("{stem}.py")).exists() {
                return Err(format!("{shown} is compiled Python without its .py source"));
            }
            continue;
        }
        // Alembic's filter is the case-sensitive regex `(.*\.py)$`: `X.PY` is not a revision.
        #[allow(clippy::case_sensitive_file_extension_comparisons)]
        if !name.ends_with(".py") {
            continue;
        }
        let meta = fs::metadata(&real).map_err(|e| format!("cannot stat {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{shown} is not a regular file"));
        }
        let text = fs::read_to_string(&real).map_err(|e| format!("cannot read {shown}: {e}"))?;
        match parse_revision_file(&text) {
            Ok(Some(info)) => revs.push(info),
            Ok(None) => return Err(format!("{shown} has no module-level `revision` assignment")),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    }
    Ok(revs)
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alembic::test_support::*;

    #[test]
    fn version_location_splitting() {
        let split = |raw, p, v| split_version_locations(raw, p, v);
        assert_eq!(split("a b,c, d", None, None).unwrap(), ["a", "b", "c", "d"]);
        assert_eq!(split("a:b", None, Some("os")).unwrap(), ["a", "b"]);
        assert_eq!(split("a:b", Some(":"), Some("os")).unwrap(), ["a", "b"]);
        assert_eq!(split("a;b", Some(";"), Some(";")).unwrap(), ["a", "b"]);
        assert_eq!(
            split("\na\nb", Some("newline"), Some("newline")).unwrap(),
            ["a", "b"]
        );
        // Older Alembic ignores path_separator and would split on spaces/commas instead.
        assert!(split("a:b", Some("os"), None).is_err());
        assert!(split("a b", Some("space"), None).is_ok());
        assert!(split("a; b", Some(";"), Some(";")).is_err());
        assert!(split("a:b", Some("comma"), Some("comma")).is_err());
        assert!(split("a\nb", None, None).is_err());
    }

    #[test]
    fn toml_detection() {
        assert!(!toml_configures_alembic(
            "[project]\nname = \"x\"\ndependencies = [\"alembic>=1.13\"]\n# [tool.alembic]\n"
        ));
        assert!(!toml_configures_alembic(
            "[tool.poetry.dependencies]\nalembic = \"^1.13\"\n"
        ));
        assert!(toml_configures_alembic(
            "[tool.alembic]\nscript_location = \"m\"\n"
        ));
        assert!(toml_configures_alembic("[ tool . \"alembic\" ]\n"));
        assert!(toml_configures_alembic(
            "[[tool.alembic.post_write_hooks]]\nname = \"x\"\n"
        ));
        assert!(toml_configures_alembic(
            "[tool]\nalembic = { script_location = \"m\" }\n"
        ));
        assert!(toml_configures_alembic(
            "tool.alembic.script_location = \"m\"\n"
        ));
    }

    // ── load ──

    #[test]
    fn load_simple_project() {
        let t = project(
            "simple",
            "",
            &[
                ("001_init.py", rev_file("aaa111", "None")),
                ("002_users.py", rev_file("bbb222", "'aaa111'")),
                (
                    "003_modern.py",
                    MODERN.replace("'3f2a9c0d1b4e'", "'bbb222'"),
                ),
                ("__init__.py", String::new()),
                ("notes.txt", "revision = 'nope'".to_owned()),
                ("__pycache__/001_init.cpython-312.pyc", "junk".to_owned()),
                ("__pycache__/stray.py", "not python at all (".to_owned()),
            ],
        );
        let script = load(&t.invocation()).unwrap();
        assert_eq!(script.heads, set(&["1975ea83b712"]));
        assert_eq!(script.revisions, set(&["1975ea83b712", "aaa111", "bbb222"]));
    }

    #[test]
    fn load_relative_script_location_and_named_section() {
        let t = TempDir::new("relative");
        t.write("conf/alembic.ini", "[tenant]\nscript_location = db\n");
        t.write("db/env.py", GENERIC_ENV_PY);
        t.write("db/versions/a.py", &rev_file("aaa111", "None"));
        let inv = Invocation {
            config: t.0.join("conf/alembic.ini"),
            section: "tenant".to_owned(),
            cwd: t.0.clone(),
            target: crate::alembic::command::Target::Head,
        };
        assert_eq!(load(&inv).unwrap().heads, set(&["aaa111"]));
        let inv = Invocation {
            section: "alembic".to_owned(),
            ..inv
        };
        assert!(load(&inv).unwrap_err().contains("no [alembic] section"));
    }

    #[test]
    fn load_two_version_locations() {
        let t = project(
            "locations",
            "path_separator = os\nversion_path_separator = os\nversion_locations = %(here)s/migrations/versions:%(here)s/more",
            &[("a.py", rev_file("aaa111", "None"))],
        );
        t.write("more/b.py", &rev_file("bbb222", "'aaa111'"));
        t.write("more/c.py", &rev_file("ccc333", "'aaa111'"));
        let script = load(&t.invocation()).unwrap();
        assert_eq!(script.heads, set(&["bbb222", "ccc333"]));
        assert_eq!(script.revisions.len(), 3);
    }

    #[test]
    fn load_recursive_version_locations() {
        let versions = [("a.py", rev_file("aaa111", "None"))];
        let t = project("recursive", "recursive_version_locations = true", &versions);
        t.write(
            "migrations/versions/2024/b.py",
            &rev_file("bbb222", "'aaa111'"),
        );
        assert_eq!(load(&t.invocation()).unwrap().heads, set(&["bbb222"]));

        let t = project("flat", "recursive_version_locations = false", &versions);
        t.write(
            "migrations/versions/2024/b.py",
            &rev_file("bbb222", "'aaa111'"),
        );
        assert_eq!(load(&t.invocation()).unwrap().heads, set(&["aaa111"]));

        let t = project(
            "ambiguous-bool",
            "recursive_version_locations = True",
            &versions,
        );
        assert!(load(&t.invocation()).unwrap_err().contains("disagree"));
    }

    #[test]
    fn load_env_py_with_version_table_is_doubt() {
        let t = project("envpy", "", &[("a.py", rev_file("aaa111", "None"))]);
        t.write(
            "migrations/env.py",
            "from alembic import context\ncontext.configure(connection=c, version_table='my_versions')\n",
        );
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .starts_with("env.py configures its own version table")
        );
    }

    #[test]
    fn load_pyproject_only_is_doubt() {
        let t = TempDir::new("pyproject");
        t.write("alembic.ini", "[alembic]\n\n[loggers]\nkeys = root\n");
        t.write(
            "pyproject.toml",
            "[tool.alembic]\nscript_location = \"%(here)s/migrations\"\n",
        );
        t.write("migrations/env.py", GENERIC_ENV_PY);
        t.write("migrations/versions/a.py", &rev_file("aaa111", "None"));
        assert!(load(&t.invocation()).unwrap_err().contains("tool.alembic"));
        t.write("pyproject.toml", "[project]\nname = \"x\"\n");
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("no script_location")
        );
        fs::remove_file(t.0.join("alembic.ini")).unwrap();
        assert!(load(&t.invocation()).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn load_doubtful_projects() {
        let ok = || vec![("a.py", rev_file("aaa111", "None"))];

        let t = project("sourceless", "sourceless = true", &ok());
        assert!(load(&t.invocation()).unwrap_err().contains("sourceless"));

        let t = project("pyc", "", &ok());
        t.write("migrations/versions/b.pyc", "compiled");
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("without its .py source")
        );

        let mut versions = ok();
        versions.push(("b.py", rev_file("bbb222", "'missing0'")));
        let t = project("dangling", "", &versions);
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("no revision file defines")
        );

        let mut versions = ok();
        versions.push(("b.py", rev_file("aaa111", "None")));
        let t = project("dupe", "", &versions);
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("more than one file")
        );

        let mut versions = ok();
        versions.push(("helpers.py", "def helper():\n    pass\n".to_owned()));
        let t = project("norev", "", &versions);
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("no module-level `revision`")
        );

        let t = project("empty", "", &[]);
        fs::create_dir_all(t.0.join("migrations/versions")).unwrap();
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("no revision files")
        );

        let t = project("resource", "", &ok());
        t.write(
            "alembic.ini",
            "[alembic]\nscript_location = myapp:migrations\n",
        );
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("package resource")
        );

        let t = project("multidb", "", &ok());
        t.write(
            "migrations/env.py",
            "context.configure(upgrade_token='%s_upgrades' % name)\n",
        );
        assert!(
            load(&t.invocation())
                .unwrap_err()
                .contains("multi-database")
        );

        let t = project("noenv", "", &ok());
        fs::remove_file(t.0.join("migrations/env.py")).unwrap();
        assert!(load(&t.invocation()).unwrap_err().contains("env.py"));
    }
}

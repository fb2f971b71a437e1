//! The Alembic fast path: decide, without starting Python, whether the migration command is a
//! plain `alembic upgrade head` and which revisions are the heads of its revision files.
//!
//! **Needs:** the migration command's argv, the absolute working directory it runs in, and the
//! value of `ALEMBIC_CONFIG` if set ([`recognise`]); read access to the ini file, `env.py`,
//! `pyproject.toml` (if any) and the version directories ([`load`]). Std only; Python is never run.
//!
//! **Returns:** [`recognise`] gives `Ok(None)` when the command is not Alembic at all and
//! `Ok(Some(Invocation))` for a plain `upgrade head` / `upgrade heads`. [`load`] gives a
//! [`Script`]: the heads of the revision graph and every revision id found. The caller skips the
//! advisory lock and the command only when the database's `alembic_version` rows equal
//! `Script::heads` exactly (and should treat more than one head as the slow path for `head`).
//!
//! **Any doubt means the slow path:** every function answers `Err(reason)` rather than guess — an
//! option we do not model, an ini or `pyproject.toml` feature that could change the answer, a
//! revision file whose `revision`/`down_revision`/`depends_on` are not plain literals, a graph
//! Alembic would reject. The caller logs the reason at debug level, takes the lock and runs the
//! command, which is always correct.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

// ───────────────────────────── recognising argv ─────────────────────────────

/// An Alembic `upgrade head` invocation recognised in a migration command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The ini file, resolved against `cwd` when relative.
    pub config: PathBuf,
    /// The ini section, `alembic` unless `-n`/`--name`.
    pub section: String,
    /// The (absolute) directory the command runs in. Alembic resolves a relative
    /// `script_location`, relative `version_locations` and `pyproject.toml` against it.
    pub cwd: PathBuf,
}

/// Recognise argv. `alembic_config_env` is the value of env `ALEMBIC_CONFIG` if set.
///
/// Returns `Ok(None)` when argv is not Alembic at all; `Ok(Some(inv))` for a plain
/// `upgrade head` / `upgrade heads`.
///
/// # Errors
/// The reason, when argv is Alembic (or a Python invocation that may be Alembic) but not a plain
/// `upgrade head`/`upgrade heads` we can reason about, or when `cwd` is not absolute.
pub fn recognise(
    argv: &[String],
    cwd: &Path,
    alembic_config_env: Option<&str>,
) -> Result<Option<Invocation>, String> {
    let Some(alembic_part) = alembic_args(argv)? else {
        return Ok(None);
    };
    if !cwd.is_absolute() {
        return Err(format!(
            "working directory {} is not absolute",
            cwd.display()
        ));
    }
    parse_alembic_args(alembic_part, cwd, alembic_config_env).map(Some)
}

/// Alembic's own arguments (after `alembic` or `python -m alembic`), or `None` when argv does
/// not run Alembic.
fn alembic_args(argv: &[String]) -> Result<Option<&[String]>, String> {
    let Some((program, rest)) = argv.split_first() else {
        return Ok(None);
    };
    let name = base_name(program);
    if name == "alembic" {
        return Ok(Some(rest));
    }
    if !is_python_name(name) {
        return Ok(None);
    }
    let mut i = 0;
    while let Some(arg) = rest.get(i) {
        i += 1;
        if arg == "-" || !arg.starts_with('-') {
            // `python SCRIPT ...`
            if base_name(arg) == "alembic" {
                return Err("python runs the alembic console script as a file".to_owned());
            }
            return Ok(None);
        }
        if arg.starts_with("--") {
            return unknown_python_option(arg, &rest[i..]);
        }
        // A cluster of short options, as CPython's getopt reads them.
        let flags = &arg[1..];
        for (at, flag) in flags.char_indices() {
            let attached = &flags[at + flag.len_utf8()..];
            match flag {
                'b' | 'B' | 'd' | 'E' | 'I' | 'O' | 'P' | 'q' | 'R' | 's' | 'u' | 'v' => {}
                'X' => {
                    if attached.is_empty() {
                        if rest.get(i).is_none() {
                            return Ok(None);
                        }
                        i += 1;
                    }
                    break;
                }
                'm' => {
                    let module = if attached.is_empty() {
                        let Some(module) = rest.get(i) else {
                            return Ok(None);
                        };
                        i += 1;
                        module.as_str()
                    } else {
                        attached
                    };
                    return if module == "alembic" {
                        Ok(Some(&rest[i..]))
                    } else if module.starts_with("alembic.") {
                        Err(format!(
                            "`python -m {module}` is not the usual alembic entry point"
                        ))
                    } else {
                        Ok(None)
                    };
                }
                'c' => return Ok(None),
                _ => return unknown_python_option(arg, &rest[i..]),
            }
        }
    }
    Ok(None)
}

/// An interpreter option we do not model: doubt if the rest mentions alembic, else not Alembic.
fn unknown_python_option(
    option: &str,
    rest: &[String],
) -> Result<Option<&'static [String]>, String> {
    if rest.iter().any(|a| a.contains("alembic")) {
        Err(format!(
            "python option `{option}` is not one we reason about"
        ))
    } else {
        Ok(None)
    }
}

/// `python`, `python3`, `python3.12`, `python3.13t`.
fn is_python_name(name: &str) -> bool {
    let Some(version) = name.strip_prefix("python") else {
        return false;
    };
    if version.is_empty() || version == "3" {
        return true;
    }
    let Some(minor) = version.strip_prefix("3.") else {
        return false;
    };
    let minor = minor.strip_suffix('t').unwrap_or(minor);
    !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit())
}

/// The last `/`-separated component, like Python's `os.path.basename`.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parse_alembic_args(
    args: &[String],
    cwd: &Path,
    env: Option<&str>,
) -> Result<Invocation, String> {
    let mut config: Option<String> = None;
    let mut section: Option<String> = None;
    let mut i = 0;
    loop {
        let Some(arg) = args.get(i) else {
            return Err("alembic is given no subcommand".to_owned());
        };
        i += 1;
        let a = arg.as_str();
        if a == "upgrade" {
            break;
        }
        if !a.starts_with('-') {
            return Err(format!("alembic subcommand `{a}` is not `upgrade`"));
        }
        match a {
            "-q" | "--quiet" | "--raiseerr" => {}
            "-c" | "--config" => set_once(&mut config, option_value(args, &mut i, a)?, a)?,
            "-n" | "--name" => set_once(&mut section, option_value(args, &mut i, a)?, a)?,
            _ if a.starts_with("-x") => {
                return Err(
                    "alembic -x passes arguments to env.py, which may pick another database"
                        .to_owned(),
                );
            }
            _ => {
                if let Some(v) = a.strip_prefix("--config=") {
                    set_once(&mut config, v, "--config")?;
                } else if let Some(v) = a.strip_prefix("--name=") {
                    set_once(&mut section, v, "--name")?;
                } else if let Some(v) = a.strip_prefix("-c").filter(|v| !v.starts_with('=')) {
                    set_once(&mut config, v, "-c")?;
                } else if let Some(v) = a.strip_prefix("-n").filter(|v| !v.starts_with('=')) {
                    set_once(&mut section, v, "-n")?;
                } else {
                    return Err(format!("alembic option `{a}` is not one we reason about"));
                }
            }
        }
    }
    check_upgrade_args(&args[i..])?;

    if let Some(env) = env {
        if base_name(env) == "pyproject.toml" {
            return Err("ALEMBIC_CONFIG names a pyproject.toml".to_owned());
        }
    }
    let config = match (config, env) {
        (Some(config), _) => config,
        (None, Some("")) => {
            return Err(
                "ALEMBIC_CONFIG is empty (Alembic versions disagree on its meaning)".to_owned(),
            );
        }
        (None, Some(env)) => env.to_owned(),
        (None, None) => "alembic.ini".to_owned(),
    };
    if base_name(&config) == "pyproject.toml" {
        return Err("the alembic config is a pyproject.toml".to_owned());
    }
    Ok(Invocation {
        config: cwd.join(config),
        section: section.unwrap_or_else(|| "alembic".to_owned()),
        cwd: cwd.to_path_buf(),
    })
}

/// The arguments after `upgrade`: exactly one target, `head` or `heads`, and no options.
fn check_upgrade_args(args: &[String]) -> Result<(), String> {
    let mut target: Option<&str> = None;
    for a in args {
        let a = a.as_str();
        if a == "--sql" {
            return Err(
                "`upgrade --sql` is offline mode (prints SQL, does not migrate)".to_owned(),
            );
        }
        if a == "--tag" || a.starts_with("--tag=") {
            return Err("`upgrade --tag` passes a tag to env.py".to_owned());
        }
        if a.starts_with('-') {
            return Err(format!("upgrade option `{a}` is not one we reason about"));
        }
        if target.replace(a).is_some() {
            return Err("upgrade is given more than one target".to_owned());
        }
    }
    match target {
        Some("head" | "heads") => Ok(()),
        Some(t) => Err(format!("upgrade target `{t}` is not `head` or `heads`")),
        None => Err("upgrade is given no target".to_owned()),
    }
}

fn option_value<'a>(args: &'a [String], i: &mut usize, option: &str) -> Result<&'a str, String> {
    match args.get(*i) {
        Some(v) if !v.starts_with('-') => {
            *i += 1;
            Ok(v)
        }
        _ => Err(format!("alembic option `{option}` has no value")),
    }
}

fn set_once(slot: &mut Option<String>, value: &str, option: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("alembic option `{option}` has an empty value"));
    }
    if slot.replace(value.to_owned()).is_some() {
        return Err(format!("alembic option `{option}` is given more than once"));
    }
    Ok(())
}

// ───────────────────────────── loading the script directory ─────────────────────────────

/// The revision graph read from the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Revisions that are no other revision's `down_revision`.
    pub heads: BTreeSet<String>,
    /// Every revision id found.
    pub revisions: BTreeSet<String>,
}

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
    if let Some(t) = opt("truncate_slug_length")? {
        if t.trim().parse::<i64>().is_err() {
            return Err(format!(
                "truncate_slug_length {t:?} is not an integer (Alembic would fail)"
            ));
        }
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

/// `env.py` decides where the version table lives; if it mentions anything that moves it, the
/// database check cannot be trusted.
fn check_env_py(script_dir: &Path) -> Result<(), String> {
    let path = script_dir.join("env.py");
    let text =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doubts = [
        ("version_table", "env.py configures its own version table"),
        (
            "upgrade_token",
            "env.py looks like the multi-database template (one version table per database)",
        ),
        (
            "search_path",
            "env.py changes search_path, so the version table may live elsewhere",
        ),
        (
            "schema_translate_map",
            "env.py uses schema_translate_map, which can move the version table",
        ),
    ];
    match doubts.iter().find(|(needle, _)| text.contains(needle)) {
        Some((_, why)) => Err((*why).to_owned()),
        None => Ok(()),
    }
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

// ───────────────────────────── the ini file (ConfigParser semantics) ─────────────────────────────

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
struct Ini {
    sections: HashMap<String, HashMap<String, String>>,
}

impl Ini {
    /// Parse like `ConfigParser({"here": here}).read(file)`: strict (duplicate sections or
    /// options are errors), `=`/`:` delimiters, `#`/`;` full-line comments only, indented
    /// continuation lines, lower-cased option names.
    fn parse(text: &str, here: &str) -> Result<Self, String> {
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
                if let (false, Some(s), Some(o)) = (comment, &section, &option) {
                    if let Some(lines) = raw.get_mut(s).and_then(|m| m.get_mut(o)) {
                        lines.push(String::new());
                    }
                }
                continue;
            }
            let indent = line.chars().take_while(|c| py_space(*c)).count();
            if let (Some(s), Some(o)) = (&section, &option) {
                if indent > indent_level {
                    if let Some(lines) = raw.get_mut(s).and_then(|m| m.get_mut(o)) {
                        lines.push(stripped.to_owned());
                    }
                    continue;
                }
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

    fn has_section(&self, name: &str) -> bool {
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
    fn get(&self, section: &str, key: &str) -> Result<Option<String>, String> {
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

// ───────────────────────────── revision files ─────────────────────────────

/// What one revision file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The module-level `revision`.
    pub revision: String,
    /// The module-level `down_revision`, as a list (empty for `None`), duplicates removed.
    pub down_revisions: Vec<String>,
}

/// The module-level names we read; any other use of them at module level is doubt.
const TARGETS: [&str; 3] = ["revision", "down_revision", "depends_on"];

/// Names that can change module attributes behind our back when used at module level.
const DYNAMIC_NAMES: [&str; 8] = [
    "globals",
    "locals",
    "vars",
    "exec",
    "eval",
    "setattr",
    "delattr",
    "__getattr__",
];

/// Parse a revision file conservatively, without running it.
///
/// Reads the module-level (column 0) assignments to `revision`, `down_revision` and
/// `depends_on`; values must be plain string literals, `None`, or tuples/lists of strings.
/// Returns `Ok(None)` when there is no `revision` assignment at all.
///
/// # Errors
/// The file content problem: a value that is not a plain literal, a name assigned twice or used
/// in other module-level code, `depends_on` set, a missing `down_revision`, or text the tokenizer
/// cannot follow.
pub fn parse_revision_file(text: &str) -> Result<Option<RevisionInfo>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\0') {
        return Err("file contains a NUL character".to_owned());
    }
    let text = text.replace("\r\n", "\n");
    if text.contains('\r') {
        return Err("file contains a bare carriage return".to_owned());
    }
    let mut values: HashMap<&'static str, Value> = HashMap::new();
    let mut def_indent: Option<usize> = None;
    for line in &tokenize(&text)? {
        if let Some(outer) = def_indent {
            if line.indent > outer {
                check_global(line)?;
                continue;
            }
            def_indent = None;
        }
        if let Some(function) = def_name(&line.toks) {
            if line.indent == 0 && function == "__getattr__" {
                return Err(format!(
                    "line {}: module-level __getattr__ can invent attributes",
                    line.lineno
                ));
            }
            check_global(line)?;
            def_indent = Some(line.indent);
            continue;
        }
        if line.indent == 0 {
            if let Some((name, value)) = assignment(line)? {
                if values.insert(name, value).is_some() {
                    return Err(format!(
                        "line {}: `{name}` is assigned more than once",
                        line.lineno
                    ));
                }
                continue;
            }
        }
        check_module_level(line)?;
    }

    let Some(revision) = values.remove("revision") else {
        return Ok(None);
    };
    let Value::Str(revision) = revision else {
        return Err("`revision` is not a string".to_owned());
    };
    let mut down_revisions = match values.remove("down_revision") {
        None => {
            return Err(
                "no module-level `down_revision` assignment (Alembic requires one)".to_owned(),
            );
        }
        Some(Value::None) => Vec::new(),
        Some(Value::Str(s)) => vec![s],
        Some(Value::Seq(items)) => items,
    };
    let mut unique = HashSet::new();
    down_revisions.retain(|d| unique.insert(d.clone()));
    if !matches!(values.remove("depends_on"), None | Some(Value::None)) {
        return Err("`depends_on` is set; dependencies change how heads are computed".to_owned());
    }
    check_rev_id(&revision)?;
    for d in &down_revisions {
        check_rev_id(d)?;
    }
    Ok(Some(RevisionInfo {
        revision,
        down_revisions,
    }))
}

/// A literal value we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    None,
    Str(String),
    Seq(Vec<String>),
}

/// `NAME = value` or `NAME: annotation = value` at column 0 for one of [`TARGETS`].
/// `Ok(None)` when the line is not of that shape (the caller then scans it as other code).
fn assignment(line: &LogicalLine) -> Result<Option<(&'static str, Value)>, String> {
    let toks = &line.toks;
    let Some(Tok::Name(first)) = toks.first() else {
        return Ok(None);
    };
    let Some(&name) = TARGETS.iter().find(|t| **t == first.as_str()) else {
        return Ok(None);
    };
    let at = |msg: String| format!("line {}: `{name}` {msg}", line.lineno);
    let eq = match toks.get(1) {
        Some(Tok::Op("=")) => 1,
        Some(Tok::Op(":")) => depth0_position(toks, 2, "=")
            .ok_or_else(|| at("is annotated but not assigned".to_owned()))?,
        _ => return Ok(None),
    };
    if toks.contains(&Tok::Op(";")) {
        return Err(at("shares its line with other statements".to_owned()));
    }
    if bare_names(&toks[1..]).any(|n| TARGETS.contains(&n)) {
        return Err(at("refers to another revision variable".to_owned()));
    }
    let value = literal_value(&toks[eq + 1..]).map_err(at)?;
    Ok(Some((name, value)))
}

/// The index of the first `op` at bracket depth 0, searching from `from`.
fn depth0_position(toks: &[Tok], from: usize, op: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate() {
        match t {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op(o) if depth == 0 && k >= from && *o == op => return Some(k),
            _ => {}
        }
    }
    None
}

/// `None`, a plain string, or a tuple/list of plain strings (trailing comma allowed);
/// a parenthesised single string without a comma is that string.
fn literal_value(toks: &[Tok]) -> Result<Value, String> {
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
fn check_rev_id(id: &str) -> Result<(), String> {
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

/// The function name of a `def NAME` / `async def NAME` line.
fn def_name(toks: &[Tok]) -> Option<&str> {
    match toks {
        [Tok::Name(d), Tok::Name(f), ..] if d == "def" => Some(f.as_str()),
        [Tok::Name(a), Tok::Name(d), Tok::Name(f), ..] if a == "async" && d == "def" => {
            Some(f.as_str())
        }
        _ => None,
    }
}

/// Names used as names (not as attributes after `.`).
fn bare_names(toks: &[Tok]) -> impl Iterator<Item = &str> {
    toks.iter().enumerate().filter_map(move |(k, t)| match t {
        Tok::Name(n) if k == 0 || toks[k - 1] != Tok::Op(".") => Some(n.as_str()),
        _ => None,
    })
}

/// Inside functions only `global`/`nonlocal` can touch the module's revision variables.
fn check_global(line: &LogicalLine) -> Result<(), String> {
    let mut names = bare_names(&line.toks);
    let declares = bare_names(&line.toks).any(|n| n == "global" || n == "nonlocal");
    if declares && names.any(|n| TARGETS.contains(&n)) {
        return Err(format!(
            "line {}: a function declares a revision variable global",
            line.lineno
        ));
    }
    Ok(())
}

/// Code that runs at import: it must not mention the revision variables or rewrite the module.
fn check_module_level(line: &LogicalLine) -> Result<(), String> {
    let lineno = line.lineno;
    for n in bare_names(&line.toks) {
        if TARGETS.contains(&n) {
            return Err(format!(
                "line {lineno}: `{n}` is used in module-level code other than a plain assignment"
            ));
        }
        if DYNAMIC_NAMES.contains(&n) {
            return Err(format!(
                "line {lineno}: module-level `{n}` could change the module's variables"
            ));
        }
    }
    for w in line.toks.windows(3) {
        let star_import = matches!(&w[..2], [Tok::Name(i), Tok::Op("*")] if i == "import");
        let sys_modules =
            matches!(w, [Tok::Name(s), Tok::Op("."), Tok::Name(m)] if s == "sys" && m == "modules");
        if star_import || sys_modules {
            return Err(format!(
                "line {lineno}: module-level code could change the module's variables"
            ));
        }
    }
    if matches!(line.toks.as_slice(), [.., Tok::Name(i), Tok::Op("*")] if i == "import") {
        return Err(format!(
            "line {lineno}: `import *` could define revision variables"
        ));
    }
    Ok(())
}

// ───────────────────────────── a small Python tokenizer ─────────────────────────────

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Name(String),
    Str(PyStr),
    Op(&'static str),
    Num,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PyStr {
    prefix: String,
    triple: bool,
    /// The source text between the quotes (escapes not decoded; f-string fields elided).
    body: String,
}

/// One logical line: tokens up to a NEWLINE outside brackets; `indent` in columns (tabs to 8).
#[derive(Debug)]
struct LogicalLine {
    indent: usize,
    lineno: usize,
    toks: Vec<Tok>,
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
fn tokenize(src: &str) -> Result<Vec<LogicalLine>, String> {
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
    check_indentation(&lines)?;
    Ok(lines)
}

/// Python's INDENT/DEDENT rules: a deeper line must follow a line ending in `:`, such a line
/// must be followed by a deeper one, and a dedent must return to an enclosing level. A file
/// Python cannot import is doubt (Alembic would fail on it), not something to read past.
fn check_indentation(lines: &[LogicalLine]) -> Result<(), String> {
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

// ───────────────────────────── the graph ─────────────────────────────

/// Compute the heads of a set of revisions.
///
/// # Errors
/// No revisions, a duplicate or unusable revision id, a `down_revision` that no revision
/// defines, or a cycle. (More than one head is not an error here; the caller decides.)
pub fn heads(revs: &[RevisionInfo]) -> Result<Script, String> {
    if revs.is_empty() {
        return Err("no revision files found".to_owned());
    }
    let mut downs: BTreeMap<&str, &[String]> = BTreeMap::new();
    for r in revs {
        check_rev_id(&r.revision)?;
        if downs.insert(&r.revision, &r.down_revisions).is_some() {
            return Err(format!(
                "revision {} is defined by more than one file",
                r.revision
            ));
        }
    }
    // Number of revisions naming each revision as a down_revision.
    let mut children: BTreeMap<&str, usize> = downs.keys().map(|k| (*k, 0)).collect();
    for r in revs {
        for d in &r.down_revisions {
            check_rev_id(d)?;
            let Some(count) = children.get_mut(d.as_str()) else {
                return Err(format!(
                    "revision {} revises {d}, which no revision file defines",
                    r.revision
                ));
            };
            *count += 1;
        }
    }
    let heads: BTreeSet<String> = children
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| (*k).to_owned())
        .collect();
    // Kahn's algorithm from the heads down: every revision must be reached, else there is a cycle.
    let mut pending = children.clone();
    let mut ready: Vec<&str> = heads.iter().map(String::as_str).collect();
    let mut reached = 0;
    while let Some(rev) = ready.pop() {
        reached += 1;
        for d in downs.get(rev).copied().unwrap_or_default() {
            if let Some(n) = pending.get_mut(d.as_str()) {
                *n -= 1;
                if *n == 0 {
                    ready.push(d.as_str());
                }
            }
        }
    }
    if reached != downs.len() {
        return Err("the revisions' down_revisions form a cycle".to_owned());
    }
    Ok(Script {
        heads,
        revisions: downs.keys().map(|k| (*k).to_owned()).collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn rec(s: &str) -> Result<Option<Invocation>, String> {
        recognise(&argv(s), Path::new("/app"), None)
    }

    fn info(revision: &str, downs: &[&str]) -> RevisionInfo {
        RevisionInfo {
            revision: revision.to_owned(),
            down_revisions: downs.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parsed(text: &str) -> RevisionInfo {
        parse_revision_file(text).unwrap().unwrap()
    }

    fn rejected(text: &str) -> String {
        parse_revision_file(text).unwrap_err()
    }

    /// A scratch directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("pgboot-alembic-{}-{tag}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn invocation(&self) -> Invocation {
            Invocation {
                config: self.0.join("alembic.ini"),
                section: "alembic".to_owned(),
                cwd: self.0.clone(),
            }
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const GENERIC_ENV_PY: &str = "from alembic import context\nconfig = context.config\n\ndef run_migrations_online():\n    context.configure(connection=None, target_metadata=None)\n";

    fn rev_file(revision: &str, down: &str) -> String {
        format!(
            "\"\"\"msg\n\nRevision ID: {revision}\nRevises: zzz\n\"\"\"\nrevision = '{revision}'\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\ndef upgrade():\n    pass\n"
        )
    }

    /// alembic.ini + env.py + the given version files under `migrations/`.
    fn project(tag: &str, ini_extra: &str, versions: &[(&str, String)]) -> TempDir {
        let t = TempDir::new(tag);
        t.write(
            "alembic.ini",
            &format!("[alembic]\nscript_location = %(here)s/migrations\n{ini_extra}\nsqlalchemy.url = driver://u:p@h/db\n\n[loggers]\nkeys = root\n"),
        );
        t.write("migrations/env.py", GENERIC_ENV_PY);
        for (name, text) in versions {
            t.write(&format!("migrations/versions/{name}"), text);
        }
        t
    }

    // ── revision files ──

    const MODERN: &str = r#""""add users table

Revision ID: 1975ea83b712
Revises: 3f2a9c0d1b4e
Create Date: 2024-05-01 12:34:56.789012

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '1975ea83b712'
down_revision: Union[str, None] = '3f2a9c0d1b4e'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
    )
    # ### end Alembic commands ###


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("users")
"#;

    #[test]
    fn parse_modern_generated_file() {
        assert_eq!(parsed(MODERN), info("1975ea83b712", &["3f2a9c0d1b4e"]));
    }

    #[test]
    fn parse_modern_first_revision_with_sequence_union() {
        let text = MODERN
            .replace(
                "Union[str, None] = '3f2a9c0d1b4e'",
                "Union[str, Sequence[str], None] = None",
            )
            .replace("Revises: 3f2a9c0d1b4e", "Revises: ");
        assert_eq!(parsed(&text), info("1975ea83b712", &[]));
    }

    #[test]
    fn parse_legacy_untyped_template() {
        let text = "\"\"\"create account table\n\nRevision ID: ae1027a6acf\nRevises:\nCreate Date: 2011-11-08 11:40:27.089406\n\n\"\"\"\n\n# revision identifiers, used by Alembic.\nrevision = 'ae1027a6acf'\ndown_revision = None\nbranch_labels = None\n\nfrom alembic import op\nimport sqlalchemy as sa\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n";
        assert_eq!(parsed(text), info("ae1027a6acf", &[]));
    }

    #[test]
    fn parse_merge_revision() {
        let text = "\"\"\"merge\n\nRevision ID: m3\nRevises: a1, b2\n\"\"\"\nrevision = 'm3'\ndown_revision = ('a1', 'b2')\nbranch_labels = None\ndepends_on = None\n";
        assert_eq!(parsed(text), info("m3", &["a1", "b2"]));
    }

    #[test]
    fn parse_branch_labels_are_ignored() {
        let text = "revision = 'b1'\ndown_revision = None\nbranch_labels = ('shiny',)\ndepends_on = None\n";
        assert_eq!(parsed(text), info("b1", &[]));
        let text = "revision = 'b2'\ndown_revision = 'b1'\nbranch_labels = make_labels(f'x{1}')\n";
        assert_eq!(parsed(text), info("b2", &["b1"]));
    }

    #[test]
    fn parse_odd_formatting() {
        let text = "revision='abc'  # the id\ndown_revision=(  # merge\n    'x1',\n    \"y2\",   # second parent\n)\ndepends_on=None\n";
        assert_eq!(parsed(text), info("abc", &["x1", "y2"]));
        let text =
            "revision : str='abc'\ndown_revision: str | Sequence[str] | None = [\"a\",\"b\"]\n";
        assert_eq!(parsed(text), info("abc", &["a", "b"]));
        let text = "revision = u\"abc\"\ndown_revision = ('p',)\n";
        assert_eq!(parsed(text), info("abc", &["p"]));
        let text = "revision = ('abc')\ndown_revision = ()\n";
        assert_eq!(parsed(text), info("abc", &[]));
        let text = "revision = \\\n    'abc'\r\ndown_revision = ['p', 'p']\r\n";
        assert_eq!(parsed(text), info("abc", &["p"]));
    }

    #[test]
    fn parse_is_not_fooled_by_docstrings_strings_or_functions() {
        let text = r#""""
Revision ID: fake1
Revises: fake0
revision = 'fake2'
"""
revision = "real"
down_revision = 'base0'
NOTE = '''revision = "fake3" ''' + "down_revision = 'x'"
PAT = r'revision = \'fake4\''

def upgrade():
    revision = "local"
    down_revision = compute()
    op.execute(f"UPDATE t SET x = '{revision}' WHERE y = {d["k"]!r:>10}")

class Helper:
    def method(self):
        depends_on = ["x"]
        return depends_on
"#;
        assert_eq!(parsed(text), info("real", &["base0"]));
    }

    #[test]
    fn parse_without_revision_is_none() {
        assert_eq!(
            parse_revision_file("import os\n\ndef helper():\n    return 1\n").unwrap(),
            None
        );
        assert_eq!(parse_revision_file("").unwrap(), None);
    }

    #[test]
    fn parse_rejects_non_literal_values() {
        assert!(
            rejected("REV = 'a'\nrevision = REV\ndown_revision = None\n")
                .contains("not a plain string")
        );
        assert!(rejected("revision = f'a{1}'\ndown_revision = None\n").contains("f-string"));
        assert!(
            rejected("revision = 'a' + 'b'\ndown_revision = None\n").contains("not a plain string")
        );
        assert!(
            rejected("revision = 'a' 'b'\ndown_revision = None\n").contains("not a plain string")
        );
        assert!(rejected("revision = '''a'''\ndown_revision = None\n").contains("triple-quoted"));
        assert!(rejected("revision = b'a'\ndown_revision = None\n").contains("byte string"));
        assert!(
            rejected("revision = str('a')\ndown_revision = None\n").contains("not a plain string")
        );
        assert!(rejected("revision = 'a\\x41'\ndown_revision = None\n").contains("escapes"));
        assert!(
            rejected("revision = 'a'\ndown_revision = ('a', None)\n")
                .contains("not a plain string")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = revision\n")
                .contains("another revision variable")
        );
        assert!(rejected("revision = None\ndown_revision = None\n").contains("not a string"));
        assert!(
            rejected("revision: str\ndown_revision = None\n")
                .contains("annotated but not assigned")
        );
        assert!(rejected("revision = down_revision = 'a'\n").contains("revision"));
    }

    #[test]
    fn parse_rejects_duplicate_assignment() {
        assert!(
            rejected("revision = 'a'\ndown_revision = None\nrevision = 'b'\n")
                .contains("more than once")
        );
    }

    #[test]
    fn parse_rejects_depends_on() {
        let text = MODERN.replace(
            "depends_on: Union[str, Sequence[str], None] = None",
            "depends_on: Union[str, Sequence[str], None] = 'other'",
        );
        assert!(rejected(&text).contains("depends_on"));
        assert!(
            rejected("revision = 'a'\ndown_revision = None\ndepends_on = ('x',)\n")
                .contains("depends_on")
        );
    }

    #[test]
    fn parse_rejects_missing_down_revision() {
        assert!(rejected("revision = 'a'\n").contains("down_revision"));
    }

    #[test]
    fn parse_rejects_other_module_level_uses() {
        for text in [
            "revision = 'a'\ndown_revision = None\nif DEBUG:\n    revision = 'b'\n",
            "revision = 'a'\ndown_revision = None\nrevision += 'x'\n",
            "revision = 'a'\ndown_revision = None\nfor depends_on in []: pass\n",
            "revision = 'a'\ndown_revision = None\nfrom other import down_revision\n",
            "revision = 'a'\ndown_revision = None\ndef f():\n    global down_revision\n    down_revision = 'z'\n",
            "revision = 'a'\ndown_revision = None\nglobals()['revision'] = 'b'\n",
            "revision = 'a'\ndown_revision = None\nfrom helpers import *\n",
            "revision = 'a'\ndown_revision = None\ndef __getattr__(name):\n    return 'x'\n",
            "revision = 'a'; down_revision = None\n",
        ] {
            assert!(parse_revision_file(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn parse_rejects_unreadable_python() {
        assert!(rejected("revision = 'a\ndown_revision = None\n").contains("string"));
        assert!(rejected("revision = ('a'\n").contains("bracket"));
        assert!(rejected("x = \"\"\"never closed\nrevision = 'a'\n").contains("unterminated"));
    }

    #[test]
    fn parse_rejects_files_python_could_not_import() {
        assert!(
            rejected("revision = 'a'\n    down_revision = None\n").contains("unexpected indent")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = None\ndef f():\nx = 1\n")
                .contains("indented block")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = None\nif x:\n        a = 1\n    b = 2\n")
                .contains("unindent")
        );
        assert!(
            rejected("revision = 'a'\ndown_revision = None\nclass C:\n").contains("indented block")
        );
        let ok = "revision = 'a'\ndown_revision = None\nclass C:\n    def m(self):\n\n        # c\n        return 1\n\n    x = 2\ny = 3\n";
        assert_eq!(parsed(ok), info("a", &[]));
    }

    #[test]
    fn parse_rejects_unusual_revision_ids() {
        assert!(rejected("revision = 'a-b'\ndown_revision = None\n").contains("revision id"));
        assert!(rejected("revision = 'heads'\ndown_revision = None\n").contains("revision id"));
        assert!(rejected("revision = 'a b'\ndown_revision = None\n").contains("revision id"));
    }

    // ── heads ──

    #[test]
    fn heads_of_linear_history() {
        let script = heads(&[info("c", &["b"]), info("a", &[]), info("b", &["a"])]).unwrap();
        assert_eq!(script.heads, set(&["c"]));
        assert_eq!(script.revisions, set(&["a", "b", "c"]));
    }

    #[test]
    fn heads_of_diamond_and_merge() {
        let revs = [
            info("a", &[]),
            info("b", &["a"]),
            info("c", &["a"]),
            info("d", &["b", "c"]),
        ];
        assert_eq!(heads(&revs).unwrap().heads, set(&["d"]));
        let merged = parse_revision_file("revision = 'd'\ndown_revision = ('b', 'c')\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            heads(&[revs[0].clone(), revs[1].clone(), revs[2].clone(), merged])
                .unwrap()
                .heads,
            set(&["d"])
        );
    }

    #[test]
    fn heads_reports_two_heads() {
        let script = heads(&[info("a", &[]), info("b", &["a"]), info("c", &["a"])]).unwrap();
        assert_eq!(script.heads, set(&["b", "c"]));
        let script = heads(&[info("a", &[]), info("x", &[])]).unwrap();
        assert_eq!(script.heads, set(&["a", "x"]));
    }

    #[test]
    fn heads_rejects_missing_target_duplicates_cycles_and_nothing() {
        assert!(
            heads(&[info("b", &["a"])])
                .unwrap_err()
                .contains("no revision file defines")
        );
        assert!(
            heads(&[info("a", &[]), info("a", &[])])
                .unwrap_err()
                .contains("more than one file")
        );
        assert!(
            heads(&[info("a", &["b"]), info("b", &["a"]), info("c", &["a"])])
                .unwrap_err()
                .contains("cycle")
        );
        assert!(heads(&[info("a", &["a"])]).unwrap_err().contains("cycle"));
        assert!(heads(&[]).unwrap_err().contains("no revision"));
    }

    // ── recognise ──

    #[test]
    fn recognise_plain_alembic() {
        let inv = rec("alembic upgrade head").unwrap().unwrap();
        assert_eq!(
            inv,
            Invocation {
                config: PathBuf::from("/app/alembic.ini"),
                section: "alembic".to_owned(),
                cwd: PathBuf::from("/app"),
            }
        );
        assert!(
            rec("/opt/venv/bin/alembic -q --raiseerr upgrade heads")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn recognise_python_module() {
        assert_eq!(
            rec("python -m alembic upgrade head")
                .unwrap()
                .unwrap()
                .config,
            PathBuf::from("/app/alembic.ini")
        );
        assert!(rec("python3 -malembic upgrade head").unwrap().is_some());
        assert!(
            rec("python3 -u -B -O -E -s -I -X utf8 -m alembic upgrade head")
                .unwrap()
                .is_some()
        );
        assert!(rec("python3 -uBm alembic upgrade head").unwrap().is_some());
        let inv = rec("/opt/venv/bin/python3 -m alembic -c conf/alembic.ini upgrade heads")
            .unwrap()
            .unwrap();
        assert_eq!(inv.config, PathBuf::from("/app/conf/alembic.ini"));
        let inv = rec("python3.12 -u -m alembic --config=x.ini upgrade head")
            .unwrap()
            .unwrap();
        assert_eq!(inv.config, PathBuf::from("/app/x.ini"));
        let inv = rec("python3.13t -m alembic -c/etc/a.ini -n tenant upgrade head")
            .unwrap()
            .unwrap();
        assert_eq!(
            (inv.config, inv.section.as_str()),
            (PathBuf::from("/etc/a.ini"), "tenant")
        );
        assert_eq!(
            rec("alembic --name=other upgrade head")
                .unwrap()
                .unwrap()
                .section,
            "other"
        );
    }

    #[test]
    fn recognise_alembic_config_env() {
        let args = argv("alembic upgrade head");
        let inv = recognise(&args, Path::new("/app"), Some("deploy/alembic.ini"))
            .unwrap()
            .unwrap();
        assert_eq!(inv.config, PathBuf::from("/app/deploy/alembic.ini"));
        let inv = recognise(&args, Path::new("/app"), Some("/etc/alembic.ini"))
            .unwrap()
            .unwrap();
        assert_eq!(inv.config, PathBuf::from("/etc/alembic.ini"));
        let args = argv("alembic -c mine.ini upgrade head");
        let inv = recognise(&args, Path::new("/app"), Some("/etc/alembic.ini"))
            .unwrap()
            .unwrap();
        assert_eq!(inv.config, PathBuf::from("/app/mine.ini"));
        assert!(recognise(&argv("alembic upgrade head"), Path::new("/app"), Some("")).is_err());
        assert!(
            recognise(
                &argv("alembic upgrade head"),
                Path::new("/app"),
                Some("/app/pyproject.toml")
            )
            .is_err()
        );
    }

    #[test]
    fn recognise_not_alembic() {
        for cmd in [
            "uvicorn app:app --host 0.0.0.0",
            "python app.py",
            "python -m flask db upgrade",
            "python -c print(1)",
            "python",
            "sh -c alembic",
            "pypy3 -m alembic upgrade head",
        ] {
            assert_eq!(rec(cmd).unwrap(), None, "{cmd}");
        }
        assert_eq!(recognise(&[], Path::new("/app"), None).unwrap(), None);
    }

    #[test]
    fn recognise_doubt() {
        for (cmd, why) in [
            ("alembic upgrade +1", "`+1`"),
            ("alembic upgrade abc", "`abc`"),
            ("alembic upgrade head:xyz", "`head:xyz`"),
            ("alembic -x tenant=a upgrade head", "-x"),
            ("alembic -xtenant=a upgrade head", "-x"),
            ("alembic upgrade head --sql", "offline"),
            ("alembic upgrade --tag v1 head", "--tag"),
            ("alembic upgrade", "no target"),
            ("alembic upgrade head heads", "more than one"),
            ("alembic stamp head", "`stamp`"),
            ("alembic revision --autogenerate", "`revision`"),
            ("alembic", "no subcommand"),
            ("alembic --verbose upgrade head", "--verbose"),
            ("alembic --conf x.ini upgrade head", "--conf"),
            ("alembic -c a.ini -c b.ini upgrade head", "more than once"),
            ("alembic -c pyproject.toml upgrade head", "pyproject"),
            ("alembic -c upgrade head", "`head` is not `upgrade`"),
            ("alembic -c", "no value"),
            ("python -m alembic.config upgrade head", "entry point"),
            ("python -W error -m alembic upgrade head", "-W"),
            (
                "python /opt/venv/bin/alembic upgrade head",
                "console script",
            ),
        ] {
            let err = rec(cmd).unwrap_err();
            assert!(err.contains(why), "{cmd}: {err}");
        }
        assert!(recognise(&argv("alembic upgrade head"), Path::new("app"), None).is_err());
    }

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
        assert_eq!(
            load(&t.invocation()).unwrap_err(),
            "env.py configures its own version table"
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

//! Recognising the migration command: is argv a plain `alembic upgrade head` (or `heads`), run
//! by the `alembic` console script or `python -m alembic`, and which ini file and section does
//! it read? Anything else that is Alembic — another subcommand, a target other than the heads,
//! `-x` arguments for env.py, an option not modelled here — is doubt.

use std::path::{Path, PathBuf};

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
    /// `upgrade head` or `upgrade heads`.
    pub target: Target,
}

/// The upgrade's target: they differ when the revision files have more than one head
/// (`head` then fails, `heads` upgrades them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `upgrade head`.
    Head,
    /// `upgrade heads`.
    Heads,
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
    let target = check_upgrade_args(&args[i..])?;

    if let Some(env) = env
        && base_name(env) == "pyproject.toml"
    {
        return Err("ALEMBIC_CONFIG names a pyproject.toml".to_owned());
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
        target,
    })
}

/// The arguments after `upgrade`: exactly one target, `head` or `heads`, and no options.
fn check_upgrade_args(args: &[String]) -> Result<Target, String> {
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
        Some("head") => Ok(Target::Head),
        Some("heads") => Ok(Target::Heads),
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
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn rec(s: &str) -> Result<Option<Invocation>, String> {
        recognise(&argv(s), Path::new("/app"), None)
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
                target: Target::Head,
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
}

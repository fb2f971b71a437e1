//! `env.py`: whether the version table is where pgboot looks for it.

use std::fs;
use std::path::Path;

/// `env.py` decides where the version table lives; if it mentions anything that moves it, the
/// database check cannot be trusted.
pub(super) fn check_env_py(script_dir: &Path) -> Result<(), String> {
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

//! `pgboot completions SHELL` and `pgboot man`: generated from the same clap
//! definition that parses the command line (`config::command`), so they
//! cannot drift from it.
//!
//! Needs nothing but stdout. Fails only when stdout cannot be written (70).

use std::io::Write as _;

use crate::config::{self, Shell};
use crate::error::{Error, Result};

/// Writes the completion script for `shell` to stdout.
///
/// # Errors
/// stdout cannot be written.
pub fn completions(shell: Shell) -> Result<()> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut config::command(), "pgboot", &mut out);
    write_stdout(&out)
}

/// Writes the man page (roff) to stdout.
///
/// # Errors
/// stdout cannot be written, or the page cannot be rendered.
pub fn man() -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(config::command())
        .render(&mut out)
        .map_err(|e| Error::sys("rendering the man page", e))?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::sys("writing to stdout", e))
}

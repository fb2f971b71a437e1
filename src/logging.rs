//! Logging: to stderr, text or one JSON object per line.
//!
//! Needs a validated `LogConfig`. COMMAND's own output never passes through
//! here: the child inherits pgboot's stdout and stderr untouched.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::builder()
        .parse(&cfg.filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if cfg.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

//! Logging set-up and nsqd's log levels, with a handle to change the level
//! at run time (`PUT /config/log_level`).

use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

/// nsqd's levels, as `GET /config/log_level` numbers them.
pub const LEVELS: [&str; 5] = ["debug", "info", "warn", "error", "fatal"];

/// nsqd's number of a level name (1 = debug .. 5 = fatal).
pub fn level_number(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    LEVELS
        .iter()
        .position(|&level| level == name)
        .map(|index| index as u8 + 1)
}

fn filter_of(level: &str) -> EnvFilter {
    EnvFilter::new(match level {
        "fatal" => "error",
        other => other,
    })
}

/// Sets the log filter from a level name, or says why it cannot.
type SetLevel = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Changes the log level of the running process.
#[derive(Clone)]
pub struct LogControl {
    set: Arc<SetLevel>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

impl LogControl {
    /// Applies `level` (one of [`LEVELS`]).
    pub fn set(&self, level: &str) -> Result<(), String> {
        (self.set)(level)
    }
}

/// Logs to stderr at `level` (or `RUST_LOG`), and returns the handle that
/// changes the level later.
pub fn init(level: &str) -> LogControl {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| filter_of(level));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        .init();
    LogControl {
        set: Arc::new(move |level| {
            handle
                .reload(filter_of(level))
                .map_err(|error| error.to_string())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_numbered_as_nsqd_does() {
        assert_eq!(level_number("debug"), Some(1));
        assert_eq!(level_number("INFO"), Some(2));
        assert_eq!(level_number("fatal"), Some(5));
        assert_eq!(level_number("verbose"), None);
    }
}

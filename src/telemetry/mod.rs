//! Logging: JSON lines (default) or text on stdout, filtered by `RUST_LOG` or the config's level.
//! The access log has its own target, `zerodown::access`, so it can be filtered or routed apart.
//! In JSON every field is a value of its own type ([`json`]).

pub mod histogram;
pub mod json;
pub mod metrics;
pub mod writer;

pub use self::json::json;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), which
/// tests rely on.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer::Batched);
    let installed = match log.format {
        LogFormat::Json => builder
            .fmt_fields(json::JsonSpanFields)
            .event_format(json::JsonLines)
            .try_init()
            .map(|()| json::mark_json_values()),
        LogFormat::Text => builder
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
    if installed.is_ok() {
        // A panic's message must not overtake the access lines before it, nor strand them.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            writer::flush();
            report(info);
        }));
    }
}

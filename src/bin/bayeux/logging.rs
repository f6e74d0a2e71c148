//! The binary's logs: the library's events and the commands' own, through
//! tracing-subscriber, on stderr, as text or as JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level, with its spans
    /// (a session's `client_id`, `user` and `transport`; a connection's `peer`).
    Json,
}

/// The logging options, global to every command.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// What to log: a level (error, warn, info, debug, trace) or tracing-subscriber
    /// directives such as `bayeux=debug,hyper=warn`. Overrides RUST_LOG; without
    /// either, `info` for `serve` and `warn` for the other commands.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Write log lines as text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the process's subscriber: `--log-level`, else `RUST_LOG` (ignored when it
/// does not parse, as before), else `default_level`. Fails on a `--log-level` that is
/// not a valid filter.
pub fn init(args: &LogArgs, default_level: &str) -> Result<(), String> {
    let filter = match &args.log_level {
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|e| format!("--log-level {directives:?}: {e}"))?,
        // async-nats reports its connection events at info; the broker says them in
        // its own words (joined, lost, back, with the node's name), so by default the
        // client's own lines are kept to warnings.
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},async_nats=warn"))),
    };
    // A log line that cannot be written (stderr closed: the reader of a pipe went away)
    // is lost, quietly: by default tracing-subscriber would report it with `eprintln!`,
    // which panics on that same closed stderr and would take the server down.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .log_internal_errors(false);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    Ok(())
}

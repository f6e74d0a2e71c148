//! The signals that stop a command: Ctrl-C (SIGINT) and, on Unix, SIGTERM (what
//! `kill`, systemd and container runtimes send). Once listened to, neither kills the
//! process by itself any more: each command decides what to do, and when.

/// A stream of stop signals. Create it early: a signal that arrives before is not
/// seen by it (it ends the process, as by default).
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening for SIGINT and SIGTERM.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next stop signal's name: `SIGINT` (Ctrl-C) or `SIGTERM`. Several signals
    /// that arrive before this is called count as one.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

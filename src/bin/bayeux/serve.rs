//! `bayeux serve`: the server, configured with CometD's option names.

use std::net::SocketAddr;
use std::time::Duration;

use bayeux::server::{OverflowPolicy, Server, ServerConfig};

/// Options of `bayeux serve`; durations in milliseconds, as CometD configures them.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Path of the Bayeux endpoint.
    #[arg(long, default_value = "/cometd")]
    path: String,
    /// `timeout`: ms a /meta/connect is held with nothing to send.
    #[arg(long, default_value_t = 30_000)]
    timeout: u64,
    /// `interval`: ms the client waits between connects.
    #[arg(long, default_value_t = 0)]
    interval: u64,
    /// `maxInterval`: ms without a connect before a session expires.
    #[arg(long, default_value_t = 10_000)]
    max_interval: u64,
    /// `maxQueue`: messages queued per session at most.
    #[arg(long, default_value_t = 1_000)]
    max_queue: usize,
    /// What a full queue does: `drop-newest` or `close-session`.
    #[arg(long, default_value = "drop-newest", value_parser = ["drop-newest", "close-session"])]
    overflow: String,
    /// `maxMessageSize`: largest request body in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_message_size: usize,
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            timeout: Duration::from_millis(self.timeout),
            interval: Duration::from_millis(self.interval),
            max_interval: Duration::from_millis(self.max_interval),
            max_queue: self.max_queue,
            overflow: if self.overflow == "close-session" {
                OverflowPolicy::CloseSession
            } else {
                OverflowPolicy::DropNewest
            },
            max_message_size: self.max_message_size,
        }
    }
}

/// Runs until Ctrl-C (or SIGTERM), then answers pending connects and exits.
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(args.config());
    let listening = server.listen(args.listen, &args.path).await?;
    let url = listening.url(&args.path);
    println!("bayeux: serving Bayeux long-polling at {url}");
    println!(
        "try: curl -s -X POST {url} -H 'Content-Type: application/json' \
         -d '{{\"channel\":\"/meta/handshake\",\"version\":\"1.0\",\"supportedConnectionTypes\":[\"long-polling\"]}}'"
    );
    shutdown_signal().await;
    println!("bayeux: shutting down");
    listening.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

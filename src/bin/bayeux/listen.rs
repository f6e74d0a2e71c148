//! `bayeux listen`: watch channels from the terminal, one JSON line per message.

use std::io::Write;
use std::time::Duration;

use bayeux::client::{Client, ConnectionState};
use futures::StreamExt;
use futures::stream::SelectAll;

/// Options of `bayeux listen`.
#[derive(clap::Args)]
pub struct ListenArgs {
    /// The Bayeux endpoint, e.g. http://127.0.0.1:8080/cometd
    url: String,
    /// Channels to subscribe to (wildcards allowed).
    #[arg(default_values_t = ["/v2/me/*".to_string()])]
    channels: Vec<String>,
    /// User name sent as HTTP Basic credentials (the agent this desktop belongs to).
    #[arg(long)]
    user: Option<String>,
    /// Password for --user.
    #[arg(long, default_value = "")]
    password: String,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<usize>,
}

/// Prints messages to stdout as JSON lines; connection changes go to stderr.
pub async fn run(args: ListenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder =
        Client::builder(&args.url).backoff(Duration::from_millis(500), Duration::from_secs(10));
    if let Some(user) = &args.user {
        builder = builder.basic_auth(user, &args.password);
    }
    let client = builder.build()?;
    client.handshake().await?;
    let mut streams = SelectAll::new();
    for channel in &args.channels {
        streams.push(client.subscribe(channel).await?);
    }
    eprintln!(
        "bayeux: listening on {} at {}",
        args.channels.join(" "),
        args.url
    );

    let mut states = client.state();
    tokio::spawn(async move {
        let mut lost = false;
        while states.changed().await.is_ok() {
            let now = states.borrow().clone();
            match now {
                ConnectionState::Reconnecting if !lost => {
                    lost = true;
                    eprintln!("bayeux: connection lost, reconnecting");
                }
                ConnectionState::Connected if lost => {
                    lost = false;
                    eprintln!("bayeux: reconnected");
                }
                ConnectionState::SessionLost(why) => {
                    lost = true;
                    eprintln!(
                        "bayeux: the server ended the session ({why}): messages may be missing; handshaking again"
                    );
                }
                ConnectionState::Failed(why) => eprintln!("bayeux: stopped: {why}"),
                _ => {}
            }
        }
    });

    let mut seen = 0usize;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            message = streams.next() => {
                let Some(message) = message else {
                    return Err("the client stopped".into());
                };
                let mut out = stdout.lock();
                serde_json::to_writer(&mut out, &message)?;
                writeln!(out)?;
                out.flush()?;
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(streams);
    let _ = client.disconnect().await;
    let dropped = client.dropped_messages();
    if dropped > 0 {
        eprintln!("bayeux: {dropped} messages dropped: the output did not keep up");
    }
    Ok(())
}

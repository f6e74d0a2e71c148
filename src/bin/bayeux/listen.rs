//! `bayeux listen`: watch channels from the terminal, one JSON line per message.

use std::io::Write;
use std::time::Duration;

use bayeux::client::{Client, ConnectionState, TransportChoice};
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
    /// The transport: WebSocket falling back to long-polling (auto), or only one.
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    transport: Transport,
}

/// The values of `--transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// WebSocket, falling back to long-polling when the server does not take it.
    Auto,
    /// WebSocket only.
    Websocket,
    /// Long-polling only.
    LongPolling,
}

impl From<Transport> for TransportChoice {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Auto => TransportChoice::Auto,
            Transport::Websocket => TransportChoice::WebSocket,
            Transport::LongPolling => TransportChoice::LongPolling,
        }
    }
}

/// Prints messages to stdout as JSON lines; connection changes go to stderr.
pub async fn run(args: ListenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = Client::builder(&args.url)
        .backoff(Duration::from_millis(500), Duration::from_secs(10))
        .transport(args.transport.into());
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
        "bayeux: listening on {} at {} over {}",
        args.channels.join(" "),
        args.url,
        client.transport_name()
    );

    tokio::spawn(async move {
        while transports.changed().await.is_ok() {
            let now = *transports.borrow();
            eprintln!("bayeux: the server does not take WebSocket any more; now over {now}");
        }
    });

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
    // Watched from before the line below, and from the current state on: a connection
    // lost right after it must still be told (a test waiting for the notice saw it lost).
    let mut transports = client.transport_changes();
    let mut states = client.state();
    states.mark_changed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Listen {
        #[command(flatten)]
        args: ListenArgs,
    }

    fn transport(extra: &[&str]) -> Result<Transport, clap::Error> {
        let argv = ["listen", "http://h/cometd", "/a"].iter().chain(extra);
        Listen::try_parse_from(argv).map(|l| l.args.transport)
    }

    #[test]
    fn transport_defaults_to_auto_and_takes_each_name() {
        assert_eq!(transport(&[]).unwrap(), Transport::Auto);
        for (name, t) in [
            ("auto", Transport::Auto),
            ("websocket", Transport::Websocket),
            ("long-polling", Transport::LongPolling),
        ] {
            assert_eq!(transport(&["--transport", name]).unwrap(), t);
        }
        assert!(transport(&["--transport", "carrier-pigeon"]).is_err());
        assert_eq!(
            TransportChoice::from(Transport::LongPolling),
            TransportChoice::LongPolling
        );
    }
}

//! `bayeux listen`: watch channels from the terminal, one JSON line per message.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bayeux::client::tls::TlsOptions;
use bayeux::client::{Client, ConnectionState, TransportChoice};
use futures::StreamExt;
use futures::stream::SelectAll;

/// TLS options of `bayeux listen` and `bayeux bench`, for `https://` and `wss://` URLs.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// A PEM file of certificate authorities to trust for https:// and wss://, in
    /// addition to the platform's roots (a private or corporate CA).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A PEM client certificate (chain) for mutual TLS; needs --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS options these flags describe (the files are read here).
    pub fn options(&self) -> Result<TlsOptions, Box<dyn std::error::Error>> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let mut options = TlsOptions::new();
        if let Some(path) = &self.ca_cert {
            options = options.ca_certificate_pem(read(path, "--ca-cert")?);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            options = options
                .client_certificate_pem(read(cert, "--client-cert")?, read(key, "--client-key")?);
        }
        Ok(options)
    }
}

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
    /// An HTTP header for every request and the WebSocket upgrade, `NAME: VALUE`
    /// (repeatable), e.g. 'Authorization: Bearer TOKEN'.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    #[command(flatten)]
    tls: TlsArgs,
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
        .transport(args.transport.into())
        .tls(args.tls.options()?);
    if let Some(user) = &args.user {
        builder = builder.basic_auth(user, &args.password);
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header {header:?}: NAME: VALUE expected"))?;
        builder = builder.header(name.trim(), value.trim());
    }
    let client = builder.build()?;
    // A TLS failure (a certificate this client cannot trust) ends the client here, once:
    // it is not retried.
    client.handshake().await?;
    let mut streams = SelectAll::new();
    for channel in &args.channels {
        streams.push(client.subscribe(channel).await?);
    }
    // Watched from before the line below, and from the current state on: a connection
    // lost right after it must still be told (a test waiting for the notice saw it lost).
    let mut transports = client.transport_changes();
    let mut states = client.state();
    states.mark_changed();
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
                // `Failed` is told once, by the main loop, as the reason it exits.
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
                    // The streams end when the client stops: say why.
                    let state = client
                        .wait_for_state(|s| {
                            matches!(s, ConnectionState::Failed(_) | ConnectionState::Disconnected)
                        })
                        .await;
                    return Err(match state {
                        ConnectionState::Failed(why) => format!("stopped: {why}"),
                        _ => "the client stopped".to_string(),
                    }
                    .into());
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

    fn parse(extra: &[&str]) -> Result<ListenArgs, clap::Error> {
        let argv = ["listen", "https://h/cometd"].iter().chain(extra);
        Listen::try_parse_from(argv).map(|l| l.args)
    }

    #[test]
    fn tls_flags_and_headers() {
        let args = parse(&["--ca-cert", "ca.pem", "--header", "Authorization: Bearer t"]).unwrap();
        assert_eq!(
            args.tls.ca_cert.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(args.headers, vec!["Authorization: Bearer t".to_string()]);
        // A client certificate and its key go together.
        assert!(parse(&["--client-cert", "c.pem"]).is_err());
        assert!(parse(&["--client-key", "c.key"]).is_err());
        let both = parse(&["--client-cert", "c.pem", "--client-key", "c.key"]).unwrap();
        assert!(both.tls.client_cert.is_some() && both.tls.client_key.is_some());
        // A missing file is named.
        let e = both.tls.options().unwrap_err().to_string();
        assert!(e.contains("--client-cert c.pem"), "{e}");
    }
}

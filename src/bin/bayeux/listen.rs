//! `bayeux listen`: watch channels from the terminal, one JSON line per message.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bayeux::client::tls::TlsOptions;
use bayeux::client::{Client, ConnectionState, ErrorKind, ReplayFrom, TransportChoice};
use futures::StreamExt;
use futures::stream::SelectAll;

use crate::errors;
use crate::settings::{Millis, UsageError};
use crate::signals::Signals;

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

/// How `listen` and `publish` reach the server: credentials, headers, transport, TLS
/// and the requests' timeout.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// User name sent as HTTP Basic credentials (the agent this desktop belongs to).
    #[arg(long)]
    user: Option<String>,
    /// Password for --user.
    #[arg(long, default_value = "")]
    password: String,
    /// The transport: WebSocket falling back to long-polling (auto), or only one.
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    transport: Transport,
    /// An HTTP header for every request and the WebSocket upgrade, `NAME: VALUE`
    /// (repeatable), e.g. 'Authorization: Bearer TOKEN'.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// How long the server may take to answer a request (handshake, subscribe,
    /// publish): `10s`, `500ms`, or milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: Millis,
    #[command(flatten)]
    tls: TlsArgs,
}

impl ClientArgs {
    /// A client for `url` with these settings; fails on a bad URL, header or TLS file.
    pub fn client(
        &self,
        url: &str,
        backoff: Option<(Duration, Duration)>,
    ) -> Result<Client, Box<dyn std::error::Error>> {
        self.client_with_replay(url, backoff, false)
    }

    /// [`ClientArgs::client`], asking for the replay extension at handshake when
    /// `replay` is true.
    pub fn client_with_replay(
        &self,
        url: &str,
        backoff: Option<(Duration, Duration)>,
        replay: bool,
    ) -> Result<Client, Box<dyn std::error::Error>> {
        let mut builder = Client::builder(url)
            .replay(replay)
            .transport(self.transport.into())
            .request_timeout(self.timeout.0)
            .tls(self.tls.options()?);
        if let Some((initial, max)) = backoff {
            builder = builder.backoff(initial, max);
        }
        if let Some(user) = &self.user {
            builder = builder.basic_auth(user, &self.password);
        }
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| UsageError(format!("--header {header:?}: NAME: VALUE expected")))?;
            builder = builder.header(name.trim(), value.trim());
        }
        builder.build().map_err(|e| errors::client(url, &e).into())
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
    /// Stop after this many messages (default: run until Ctrl-C or SIGTERM; 0: stop
    /// once subscribed, to check that the server takes the subscriptions).
    #[arg(long)]
    count: Option<usize>,
    /// Subscribe with Salesforce's replay extension: `new` (new messages only), `all`
    /// (everything the server retained, then new ones) or a replay id (what came after
    /// it). The client then resumes after the last replay id it printed whenever its
    /// session is lost.
    #[arg(long, value_name = "new|all|ID", allow_hyphen_values = true)]
    replay_from: Option<ReplayFrom>,
    #[command(flatten)]
    client: ClientArgs,
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

/// Whether `error`, from a first handshake, may go away by itself: the server is not up
/// yet (refused, reset, no answer in time, a proxy's 502, 503 or 504). A bad URL, an
/// unknown host, a TLS failure, a 4xx, a reply that is not Bayeux or a refused handshake
/// will not, so they are reported at once.
pub fn worth_retrying(error: &bayeux::client::Error) -> bool {
    match error.kind() {
        ErrorKind::Timeout => true,
        ErrorKind::Connection => {
            // A refused WebSocket upgrade carries its status; a DNS failure is a typo
            // more often than a server starting, and TLS met by plain HTTP a wrong URL.
            error.status_code().is_none()
                && !errors::chain(error).contains("dns error")
                && !errors::is_tls_mismatch(error)
        }
        ErrorKind::Status => error.status_code().is_some_and(|code| code >= 500),
        _ => false,
    }
}

/// Prints messages to stdout as JSON lines; connection changes go to stderr.
///
/// When the server cannot be reached at start (refused, no answer), `listen` keeps
/// trying with a backoff, as it does when the connection is lost later, and says why
/// once; when trying again cannot help (a bad URL, an unknown host, TLS, a 4xx, a
/// refused handshake), it fails at once with the cause.
pub async fn run(args: ListenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut signals = Signals::new()?;
    let (first_delay, max_delay) = (Duration::from_millis(500), Duration::from_secs(10));
    let client = args.client.client_with_replay(
        &args.url,
        Some((first_delay, max_delay)),
        args.replay_from.is_some(),
    )?;
    let mut told: Option<String> = None;
    let mut delay = first_delay;
    loop {
        match client.handshake().await {
            Ok(()) => break,
            Err(e) if worth_retrying(&e) => {
                let why = errors::client(&args.url, &e);
                if told.as_deref() != Some(why.as_str()) {
                    eprintln!("bayeux: {why}; trying again until it answers (Ctrl-C to stop)");
                    told = Some(why);
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = signals.recv() => return Err("stopped before the server answered".into()),
                }
                delay = (delay * 2).min(max_delay);
            }
            // A TLS failure (a certificate this client cannot trust) ends the client
            // here, once: it is not retried.
            Err(e) => return Err(errors::client(&args.url, &e).into()),
        }
    }
    let mut streams = SelectAll::new();
    for channel in &args.channels {
        let subscribed = match args.replay_from {
            Some(from) => client.subscribe_from(channel, from).await,
            None => client.subscribe(channel).await,
        };
        let subscription = subscribed.map_err(|e| {
            format!(
                "subscribing to {channel}: {}",
                errors::client(&args.url, &e)
            )
        })?;
        streams.push(subscription);
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
    while args.count.is_none_or(|n| seen < n) {
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
            }
            // Ctrl-C or SIGTERM: leave as a client should, with /meta/disconnect.
            _ = signals.recv() => break,
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
        Listen::try_parse_from(argv).map(|l| l.args.client.transport)
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
            args.client.tls.ca_cert.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(
            args.client.headers,
            vec!["Authorization: Bearer t".to_string()]
        );
        // A client certificate and its key go together.
        assert!(parse(&["--client-cert", "c.pem"]).is_err());
        assert!(parse(&["--client-key", "c.key"]).is_err());
        let both = parse(&["--client-cert", "c.pem", "--client-key", "c.key"]).unwrap();
        assert!(both.client.tls.client_cert.is_some() && both.client.tls.client_key.is_some());
        // A missing file is named.
        let e = both.client.tls.options().unwrap_err().to_string();
        assert!(e.contains("--client-cert c.pem"), "{e}");
    }
}

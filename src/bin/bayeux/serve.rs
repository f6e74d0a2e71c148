//! `bayeux serve`: the server, configured with CometD's option names.

use std::net::SocketAddr;
use std::time::Duration;

use bayeux::server::{ClientAuth, OverflowPolicy, ServerConfig, TlsConfig, TlsError};
use bayeux::workbin::{Access, DemoApp, UserDirectory, WorkbinConfig};

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
    /// `maxQueue`: messages held per session at most (queued or unacknowledged).
    #[arg(long, default_value_t = ServerConfig::default().max_queue)]
    max_queue: usize,
    /// `maxQueueBytes`: bytes held per session at most (queued or unacknowledged).
    #[arg(long, default_value_t = ServerConfig::default().max_queue_bytes)]
    max_queue_bytes: usize,
    /// What a full queue does to a session without acknowledged delivery (one with it is
    /// always closed and told): `drop-newest`, `drop-oldest` or `close-session`.
    #[arg(long, default_value = "drop-newest", value_parser = ["drop-newest", "drop-oldest", "close-session"])]
    overflow: String,
    /// Under load, ms a transport waits before a session's next batch so each response or
    /// frame carries more (only after a batch of `--busy-threshold` messages; 0: off).
    #[arg(long, default_value_t = ServerConfig::default().busy_flush_window.as_millis() as u64)]
    busy_flush_window: u64,
    /// Messages in one batch that make a session busy (see `--busy-flush-window`).
    #[arg(long, default_value_t = ServerConfig::default().busy_threshold)]
    busy_threshold: usize,
    /// `maxMessageSize`: largest request body in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_message_size: usize,
    /// Messages per request at most.
    #[arg(long, default_value_t = 1_000)]
    max_batch: usize,
    /// Subscriptions per session at most.
    #[arg(long, default_value_t = 1_000)]
    max_subscriptions: usize,
    /// Sessions at most; further handshakes are refused with advice to retry.
    #[arg(long, default_value_t = 100_000)]
    max_sessions: usize,
    /// Longest channel name in bytes.
    #[arg(long, default_value_t = 512)]
    max_channel_length: usize,
    /// ms a client may take to send request headers.
    #[arg(long, default_value_t = 30_000)]
    header_timeout: u64,
    /// ms a client may take to send a request body.
    #[arg(long, default_value_t = 30_000)]
    body_timeout: u64,
    /// Bind sessions to the BAYEUX_BROWSER cookie of their handshake.
    #[arg(long)]
    bind_browser_cookie: bool,
    /// Allow this browser origin (CORS); repeat for several, `*` for any.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Do not offer CometD's acknowledged-messages extension.
    #[arg(long)]
    no_ack: bool,
    /// Serve the callback-polling (JSONP) transport too. Off by default: any web page can
    /// make JSONP requests with the user's cookies and read the answers.
    #[arg(long)]
    callback_polling: bool,
    /// Print the session count and memory to stderr every this many seconds.
    #[arg(long)]
    stats_every: Option<u64>,
    /// Users file (`name:password-or-SHA256:hex:role` lines) that turns credential
    /// checking on; without it the server runs in demo mode.
    #[arg(long)]
    users: Option<std::path::PathBuf>,
    /// Accept `ext.userId` in handshakes as the session's user without a password.
    #[arg(long)]
    trust_ext_user_id: bool,
    /// Public base URL for the interactions' URIs (default: http://LISTEN, or
    /// https://LISTEN with TLS).
    #[arg(long)]
    public_url: Option<String>,
    /// Serve HTTPS and WSS with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key. HTTP/2 and HTTP/1.1 are offered through ALPN.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Mutual TLS: require a client certificate issued by a CA in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// ms a client may take to complete the TLS handshake (then it is dropped).
    #[arg(long, default_value_t = 10_000)]
    tls_handshake_timeout: u64,
    /// Also accept cleartext HTTP/2 from clients that open with its preface (prior
    /// knowledge); HTTP/1.1 clients are served as before.
    #[arg(long)]
    http2_prior_knowledge: bool,
}

impl ServeArgs {
    /// The server's configuration; fails on an unusable certificate, key or CA file.
    fn config(&self) -> Result<ServerConfig, TlsError> {
        Ok(ServerConfig {
            timeout: Duration::from_millis(self.timeout),
            interval: Duration::from_millis(self.interval),
            max_interval: Duration::from_millis(self.max_interval),
            max_queue: self.max_queue,
            max_queue_bytes: self.max_queue_bytes,
            busy_flush_window: Duration::from_millis(self.busy_flush_window),
            busy_threshold: self.busy_threshold,
            overflow: OverflowPolicy::from_name(&self.overflow)
                .unwrap_or(OverflowPolicy::DropNewest),
            max_message_size: self.max_message_size,
            ack_extension: !self.no_ack,
            max_batch: self.max_batch,
            max_subscriptions: self.max_subscriptions,
            max_sessions: self.max_sessions,
            max_channel_length: self.max_channel_length,
            header_timeout: Duration::from_millis(self.header_timeout),
            body_timeout: Duration::from_millis(self.body_timeout),
            bind_browser_cookie: self.bind_browser_cookie,
            cors_origins: self.cors_origins.clone(),
            callback_polling: self.callback_polling,
            tls: self.tls()?,
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout),
            http2_prior_knowledge: self.http2_prior_knowledge,
        })
    }

    /// The TLS settings of `--tls-cert`, `--tls-key` and `--tls-client-ca`, if given.
    fn tls(&self) -> Result<Option<TlsConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = TlsConfig::from_pem_files(cert, key)?;
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.with_client_ca_file(ca, ClientAuth::Required)?;
        }
        Ok(Some(tls))
    }
}

/// Runs until Ctrl-C (or SIGTERM), then answers pending connects and exits.
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Certificates first: a bad file is reported before anything else happens.
    let config = args.config()?;
    let mut access = match &args.users {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Access::checked(UserDirectory::parse(&text)?)
        }
        None => Access::demo(),
    };
    if args.trust_ext_user_id {
        access = access.trusting_ext_user_id();
    }
    let demo = access.is_demo();
    let workbin = WorkbinConfig {
        public_url: args.public_url.clone(),
        ..WorkbinConfig::default()
    };
    let mutual = config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth().is_some());
    let prior_knowledge = config.http2_prior_knowledge;
    let app = DemoApp::new(config, access, workbin, &args.path);
    let listening = app
        .listen(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let url = listening.url(&args.path);
    let base = listening.url("");
    if listening.is_tls() {
        let ws = listening.ws_url(&args.path);
        println!(
            "bayeux: serving Bayeux over TLS (HTTP/2 and HTTP/1.1) at {url} (WebSocket at {ws}, and long-polling) and the workbin API at {base}/api/v2/users/{{userId}}/workbins/{{id}}"
        );
        if mutual {
            println!("bayeux: mutual TLS: clients must present a certificate from --tls-client-ca");
        }
    } else {
        println!(
            "bayeux: serving Bayeux (WebSocket and long-polling) at {url} and the workbin API at {base}/api/v2/users/{{userId}}/workbins/{{id}}"
        );
        if prior_knowledge {
            println!("bayeux: cleartext HTTP/2 accepted from clients with prior knowledge");
        }
    }
    if demo {
        println!(
            "bayeux: demo mode: any user name is accepted with any password (use --users FILE to check credentials)"
        );
    }
    println!("watch an agent: bayeux listen {url} --user agent1");
    println!(
        "try: curl -s -X POST {base}/api/v2/users/agent1/workbins/wb1 -H 'Content-Type: application/json' \
         -d '{{\"operationName\":\"AddEmail\",\"uri\":\".../FE7978FEWFE\"}}'"
    );
    if let Some(every) = args.stats_every {
        let server = app.server().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
            loop {
                tick.tick().await;
                let stats = server.stats();
                eprintln!(
                    "bayeux: stats sessions={} rss_kib={} dropped={} overflow_closes={}",
                    stats.sessions,
                    rss_kib(),
                    stats.dropped_messages,
                    stats.overflow_closes
                );
            }
        });
    }
    tokio::spawn(trim_when_idle(app.server().clone()));
    shutdown_signal().await;
    println!("bayeux: shutting down");
    listening.shutdown().await?;
    Ok(())
}

/// Hands memory freed by ended sessions back to the operating system once the server
/// has no session left, so a burst of sessions does not leave the process at its peak
/// size (glibc keeps freed memory otherwise). The binary's choice, not the library's: an
/// embedding application owns its allocator.
async fn trim_when_idle(server: bayeux::Server) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut had_sessions = false;
    loop {
        tick.tick().await;
        let now = server.session_count() > 0;
        if had_sessions && !now {
            release_freed_memory();
        }
        had_sessions = now;
    }
}

fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it has no other effect.
    unsafe {
        libc::malloc_trim(0);
    }
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

/// This process's resident memory in KiB (Linux), for `--stats-every`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

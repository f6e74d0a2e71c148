//! `bayeux serve`: the server, configured with CometD's option names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bayeux::protocol::{ChannelGrammar, ChannelName};
use bayeux::server::{
    ClientAuth, NatsConfig, OpsService, ReplayConfig, ServerConfig, TlsConfig, TlsError,
};
use bayeux::workbin::{Access, CheckLimits, DemoApp, UserDirectory, WorkbinConfig};

use crate::settings::{FileSettings, Millis, Overflow, Picker, Secs, UsageError, show_duration};
use crate::signals::Signals;

/// Where `serve` listens when neither a flag nor the config file says.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The Bayeux endpoint's path when neither a flag nor the config file says.
const DEFAULT_PATH: &str = "/cometd";
/// How long a shutdown waits for requests in progress, by default.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Options of `bayeux serve`, with CometD's names where it has them. Each can also be
/// set in the `--config` file under the same name (or CometD's); a flag overrides the
/// file. The defaults are [`ServerConfig::default`]'s, shown by `--help`. Durations take
/// units (`30s`, `500ms`, `2m`) or a plain number of milliseconds.
#[derive(clap::Args)]
#[command(mut_args(show_default))]
pub struct ServeArgs {
    /// A TOML file of settings: each key is a flag's name (`max-interval = "10s"`) or
    /// CometD's (`maxInterval = 10000`); the flags given override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Path of the Bayeux endpoint (the workbin API is served beside it, at /api/v2/...).
    #[arg(long)]
    path: Option<String>,
    /// `timeout`: how long a /meta/connect is held with nothing to send.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<Millis>,
    /// `interval`: how long the client waits between connects.
    #[arg(long, value_name = "DURATION")]
    interval: Option<Millis>,
    /// `maxInterval`: how long without a connect before a session expires.
    #[arg(long, value_name = "DURATION")]
    max_interval: Option<Millis>,
    /// `maxQueue`: messages held per session at most (queued or unacknowledged).
    #[arg(long, value_name = "N")]
    max_queue: Option<usize>,
    /// `maxQueueBytes`: bytes held per session at most (queued or unacknowledged).
    #[arg(long, value_name = "BYTES")]
    max_queue_bytes: Option<usize>,
    /// What a full queue does to a session without acknowledged delivery (one with it is
    /// always closed and told).
    #[arg(long, value_enum)]
    overflow: Option<Overflow>,
    /// Under load, how long a transport waits before a session's next batch so each
    /// response or frame carries more (only after a batch of `--busy-threshold`
    /// messages; 0: off).
    #[arg(long, value_name = "DURATION")]
    busy_flush_window: Option<Millis>,
    /// Messages in one batch that make a session busy (see `--busy-flush-window`).
    #[arg(long, value_name = "N")]
    busy_threshold: Option<usize>,
    /// `maxMessageSize`: largest request body in bytes.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Messages per request at most.
    #[arg(long, value_name = "N")]
    max_batch: Option<usize>,
    /// Subscriptions per session at most.
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Sessions at most; further handshakes are refused with advice to retry.
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Longest channel name in bytes.
    #[arg(long, value_name = "BYTES")]
    max_channel_length: Option<usize>,
    /// Bytes held by all session queues together at most; past it, the session a
    /// message is queued for overflows (its --overflow applies).
    #[arg(long, value_name = "BYTES")]
    max_queued_bytes: Option<usize>,
    /// Bytes of HTTP request bodies read and handled at once at most (503 past it).
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// The same per client address.
    #[arg(long, value_name = "BYTES")]
    max_body_bytes_per_address: Option<usize>,
    /// Sessions opened from one client address (IPv4, or IPv6 /64) at most.
    #[arg(long, value_name = "N")]
    max_sessions_per_address: Option<usize>,
    /// TCP connections held at once at most; more are answered 503 and closed.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// TCP connections from one client address at once at most (trusted proxies are
    /// exempt).
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<usize>,
    /// WebSockets from one client address that have not handshaken yet, at most.
    #[arg(long, value_name = "N")]
    max_pending_websockets_per_address: Option<usize>,
    /// How long a WebSocket may stay open without a handshake (then closed, 1008).
    #[arg(long, value_name = "DURATION")]
    websocket_handshake_timeout: Option<Millis>,
    /// Failed handshakes of one client address within --auth-failure-window after
    /// which its handshakes are refused before any password is checked.
    #[arg(long, value_name = "N")]
    max_auth_failures_per_address: Option<u32>,
    /// The window of --max-auth-failures-per-address (and of
    /// --max-auth-failures-per-user).
    #[arg(long, value_name = "DURATION")]
    auth_failure_window: Option<Millis>,
    /// Each kind of refusal is logged at most once per client address in this interval.
    #[arg(long, value_name = "DURATION")]
    refusal_log_interval: Option<Millis>,
    /// A reverse proxy in front of the server (repeat for several): its requests count
    /// against the client in X-Forwarded-For, and its connections are not limited per
    /// address.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// With --users: password checks (Argon2) running at once, off the I/O threads
    /// (at least 2; the default is this machine's CPUs).
    #[arg(long, value_name = "N")]
    auth_workers: Option<usize>,
    /// With --users: password checks waiting at most; past it a handshake is told to
    /// retry later (503).
    #[arg(long, value_name = "N")]
    max_auth_waiting: Option<usize>,
    /// With --users: failed checks of one user name within --auth-failure-window after
    /// which only addresses that signed in as that user recently are checked.
    #[arg(long, value_name = "N")]
    max_auth_failures_per_user: Option<u32>,
    /// Characters allowed in channel names: `strict` (the Bayeux grammar) or `cometd`
    /// (also `.`, `+`, `#`, space, `{}`, as CometD's servers accept: `/stock/AAPL.O`).
    #[arg(long, value_name = "GRAMMAR", value_parser = parse_channel_grammar)]
    channel_grammar: Option<ChannelGrammar>,
    /// How long a client may take to send request headers.
    #[arg(long, value_name = "DURATION")]
    header_timeout: Option<Millis>,
    /// How long a client may take to send a request body (then 408).
    #[arg(long, value_name = "DURATION")]
    body_timeout: Option<Millis>,
    /// Bind sessions to the BAYEUX_BROWSER cookie of their handshake.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    bind_browser_cookie: Option<bool>,
    /// `maxSessionsPerBrowser`: long polls the sessions of one browser (one
    /// BAYEUX_BROWSER cookie) hold at once over HTTP/1.x; another session's connect is
    /// answered at once with the `multiple-clients` advice. -1: no limit.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_sessions_per_browser: Option<i64>,
    /// `http2MaxSessionsPerBrowser`: the same over HTTP/2. -1: no limit.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    http2_max_sessions_per_browser: Option<i64>,
    /// `multiSessionInterval`: the `interval` advised with `multiple-clients` (0: such a
    /// connect fails with reconnect none).
    #[arg(long, value_name = "DURATION")]
    multi_session_interval: Option<Millis>,
    /// Allow this browser origin (CORS); repeat for several, `*` for any.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// A request header that CORS preflights allow besides the standard ones (a custom
    /// header the application's clients send); repeat for several.
    #[arg(long = "cors-header", value_name = "NAME")]
    cors_allowed_headers: Vec<String>,
    /// Do not offer CometD's acknowledged-messages extension.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    no_ack: Option<bool>,
    /// Serve the callback-polling (JSONP) transport too. Off by default: any web page can
    /// make JSONP requests with the user's cookies and read the answers.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    callback_polling: Option<bool>,
    /// Print the session count and memory to stderr this often (plain numbers are
    /// seconds).
    #[arg(long, value_name = "DURATION")]
    stats_every: Option<Secs>,
    /// Users file (`name:secret:role` lines, the secret an Argon2 hash from `bayeux
    /// hash-password`) that turns credential checking on; without it the server runs in
    /// demo mode.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Accept `ext.userId` in handshakes as the session's user without a password.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    trust_ext_user_id: Option<bool>,
    /// Public base URL for the interactions' URIs (default: http://LISTEN, or
    /// https://LISTEN with TLS).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Serve HTTPS and WSS with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key. HTTP/2 and HTTP/1.1 are offered through ALPN.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate issued by a CA in this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// How long a client may take to complete the TLS handshake (then it is dropped).
    #[arg(long, value_name = "DURATION")]
    tls_handshake_timeout: Option<Millis>,
    /// Also accept cleartext HTTP/2 from clients that open with its preface (prior
    /// knowledge); HTTP/1.1 clients are served as before.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    http2_prior_knowledge: Option<bool>,
    /// On Ctrl-C or SIGTERM, how long to wait for requests in progress (and WebSocket
    /// sessions) to finish before closing them; a second signal stops at once.
    #[arg(long, value_name = "DURATION")]
    shutdown_grace: Option<Millis>,
    /// Serve the operator's endpoints (GET /metrics, /health and /ready) on this address
    /// instead of the main listener (plain HTTP, for an internal network).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Do not serve GET /metrics (/health and /ready stay).
    #[arg(long)]
    no_metrics: bool,
    /// Share channels with other `bayeux serve` processes through the NATS at this URL
    /// (nats://host:4222; several, comma-separated, for a cluster). Without it the
    /// server is alone, in memory.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// A NATS credentials file (user JWT and NKey seed), for a NATS that asks for one.
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// A PEM file of CAs to trust for the NATS server's TLS certificate.
    #[arg(long, value_name = "FILE")]
    nats_ca_cert: Option<PathBuf>,
    /// A PEM client certificate for a NATS that verifies clients; needs --nats-client-key.
    #[arg(long, value_name = "FILE")]
    nats_client_cert: Option<PathBuf>,
    /// The PEM private key of --nats-client-cert.
    #[arg(long, value_name = "FILE")]
    nats_client_key: Option<PathBuf>,
    /// The first token of every NATS subject this server uses, so that several
    /// applications can share one NATS.
    #[arg(long, value_name = "PREFIX")]
    nats_prefix: Option<String>,
    /// Make the channels matching this pattern durable (`/v2/**`; repeat for several):
    /// their messages are kept and replayed to clients that ask with Salesforce's replay
    /// extension (`ext.replay`), each with its id in `data.event.replayId`.
    #[arg(long = "replay", value_name = "PATTERN")]
    replay: Vec<String>,
    /// How long a durable channel keeps its messages.
    #[arg(long, value_name = "DURATION")]
    replay_retention: Option<Millis>,
    /// Messages kept per durable channel (and per user, for per-user messages) at most.
    #[arg(long, value_name = "N")]
    replay_max: Option<usize>,
    /// Bytes of all durable messages kept at most (the oldest go first; with NATS, the
    /// JetStream stream's max_bytes).
    #[arg(long, value_name = "BYTES")]
    replay_max_bytes: Option<usize>,
    /// Durable channels (and channel and user pairs) kept at most, in memory (the oldest
    /// messages go first).
    #[arg(long, value_name = "N")]
    replay_max_channels: Option<usize>,
    /// Distinct channels one replaying subscribe may name (409 above).
    #[arg(long, value_name = "N")]
    replay_max_patterns: Option<usize>,
}

/// The value of `--channel-grammar`.
fn parse_channel_grammar(name: &str) -> Result<ChannelGrammar, String> {
    ChannelGrammar::from_name(name).ok_or_else(|| format!("{name:?}: expected strict or cometd"))
}

/// A per-browser limit as the flags write it: -1 for none.
fn per_browser(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// A per-browser limit from the flags: a negative number is none.
fn per_browser_limit(n: i64) -> Option<usize> {
    usize::try_from(n).ok()
}

/// Appends its default to the help of each option that has one, from
/// [`ServerConfig::default`] and the constants above: the numbers live there only.
fn show_default(arg: clap::Arg) -> clap::Arg {
    let d = ServerConfig::default();
    let value = match arg.get_id().as_str() {
        "listen" => DEFAULT_LISTEN.to_string(),
        "path" => DEFAULT_PATH.to_string(),
        "timeout" => show_duration(d.timeout),
        "interval" => show_duration(d.interval),
        "max_interval" => show_duration(d.max_interval),
        "max_queue" => d.max_queue.to_string(),
        "max_queue_bytes" => d.max_queue_bytes.to_string(),
        "overflow" => Overflow::of(d.overflow).to_string(),
        "busy_flush_window" => show_duration(d.busy_flush_window),
        "busy_threshold" => d.busy_threshold.to_string(),
        "max_message_size" => d.max_message_size.to_string(),
        "max_batch" => d.max_batch.to_string(),
        "max_subscriptions" => d.max_subscriptions.to_string(),
        "max_sessions" => d.max_sessions.to_string(),
        "max_channel_length" => d.max_channel_length.to_string(),
        "max_queued_bytes" => d.max_queued_bytes.to_string(),
        "max_body_bytes" => d.max_body_bytes.to_string(),
        "max_body_bytes_per_address" => d.max_body_bytes_per_address.to_string(),
        "max_sessions_per_address" => d.max_sessions_per_address.to_string(),
        "max_connections" => d.max_connections.to_string(),
        "max_connections_per_address" => d.max_connections_per_address.to_string(),
        "max_pending_websockets_per_address" => d.max_pending_websockets_per_address.to_string(),
        "websocket_handshake_timeout" => show_duration(d.websocket_handshake_timeout),
        "max_auth_failures_per_address" => d.max_auth_failures_per_address.to_string(),
        "auth_failure_window" => show_duration(d.auth_failure_window),
        "refusal_log_interval" => show_duration(d.refusal_log_interval),
        "auth_workers" => CheckLimits::default().concurrency.to_string(),
        "max_auth_waiting" => CheckLimits::default().max_waiting.to_string(),
        "max_auth_failures_per_user" => CheckLimits::default().max_failures_per_user.to_string(),
        "channel_grammar" => d.channel_grammar.as_str().to_string(),
        "header_timeout" => show_duration(d.header_timeout),
        "body_timeout" => show_duration(d.body_timeout),
        "bind_browser_cookie" => d.bind_browser_cookie.to_string(),
        "max_sessions_per_browser" => per_browser(d.max_sessions_per_browser).to_string(),
        "http2_max_sessions_per_browser" => {
            per_browser(d.http2_max_sessions_per_browser).to_string()
        }
        "multi_session_interval" => show_duration(d.multi_session_interval),
        "no_ack" => (!d.ack_extension).to_string(),
        "callback_polling" => d.callback_polling.to_string(),
        "tls_handshake_timeout" => show_duration(d.tls_handshake_timeout),
        "http2_prior_knowledge" => d.http2_prior_knowledge.to_string(),
        "shutdown_grace" => show_duration(DEFAULT_SHUTDOWN_GRACE),
        "nats_prefix" => NatsConfig::new("").subject_prefix,
        "replay_retention" => show_duration(ReplayConfig::DEFAULT_RETENTION),
        "replay_max" => ReplayConfig::DEFAULT_MAX_PER_CHANNEL.to_string(),
        "replay_max_bytes" => ReplayConfig::DEFAULT_MAX_BYTES.to_string(),
        "replay_max_channels" => ReplayConfig::DEFAULT_MAX_CHANNELS.to_string(),
        "replay_max_patterns" => ReplayConfig::DEFAULT_MAX_PATTERNS_PER_SUBSCRIBE.to_string(),
        _ => return arg,
    };
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let long = arg.get_long_help().map(ToString::to_string);
    let arg = arg.help(format!("{help} [default: {value}]"));
    match long {
        Some(long) => arg.long_help(format!("{long}\n\n[default: {value}]")),
        None => arg,
    }
}

/// `bayeux serve`'s settings: the flags over the config file over the defaults.
struct Settings {
    /// The server's configuration, without TLS (read from its files later).
    config: ServerConfig,
    listen: SocketAddr,
    path: String,
    stats_every: Option<Duration>,
    users: Option<PathBuf>,
    trust_ext_user_id: bool,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    shutdown_grace: Duration,
    metrics_listen: Option<SocketAddr>,
    no_metrics: bool,
    /// How to reach NATS (`--nats` and the options that go with it), if at all.
    nats: Option<NatsConfig>,
    /// Where each setting came from, to name it in messages.
    picker: Picker,
    /// How the users file's password checks are bounded.
    checks: CheckLimits,
}

impl ServeArgs {
    /// Merges the flags, the `--config` file and the defaults, and refuses settings
    /// that cannot work ([`UsageError`]); returns the settings and the warnings to print.
    fn settings(&self) -> Result<(Settings, Vec<String>), Box<dyn std::error::Error>> {
        let file = match &self.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        let mut p = Picker::new(self.config.as_deref());
        let d = ServerConfig::default();
        let ms = |v: Option<Millis>| v.map(|m| m.0);
        let cors_flags = (!self.cors_origins.is_empty()).then(|| self.cors_origins.clone());
        let mut config = ServerConfig::default()
            .with_timeout(p.pick("timeout", ms(self.timeout), ms(file.timeout), d.timeout))
            .with_interval(p.pick("interval", ms(self.interval), ms(file.interval), d.interval))
            .with_max_interval(p.pick(
                "max-interval",
                ms(self.max_interval),
                ms(file.max_interval),
                d.max_interval,
            ))
            .with_max_queue(p.pick("max-queue", self.max_queue, file.max_queue, d.max_queue))
            .with_max_queue_bytes(p.pick(
                "max-queue-bytes",
                self.max_queue_bytes,
                file.max_queue_bytes,
                d.max_queue_bytes,
            ))
            .with_overflow(
                p.maybe("overflow", self.overflow, file.overflow)
                    .map_or(d.overflow, Overflow::policy),
            )
            .with_busy_flush_window(p.pick(
                "busy-flush-window",
                ms(self.busy_flush_window),
                ms(file.busy_flush_window),
                d.busy_flush_window,
            ))
            .with_busy_threshold(p.pick(
                "busy-threshold",
                self.busy_threshold,
                file.busy_threshold,
                d.busy_threshold,
            ))
            .with_max_message_size(p.pick(
                "max-message-size",
                self.max_message_size,
                file.max_message_size,
                d.max_message_size,
            ))
            .with_ack_extension(!p.pick("no-ack", self.no_ack, file.no_ack, !d.ack_extension))
            .with_max_batch(p.pick("max-batch", self.max_batch, file.max_batch, d.max_batch))
            .with_max_subscriptions(p.pick(
                "max-subscriptions",
                self.max_subscriptions,
                file.max_subscriptions,
                d.max_subscriptions,
            ))
            .with_max_sessions(p.pick(
                "max-sessions",
                self.max_sessions,
                file.max_sessions,
                d.max_sessions,
            ))
            .with_max_channel_length(p.pick(
                "max-channel-length",
                self.max_channel_length,
                file.max_channel_length,
                d.max_channel_length,
            ))
            .with_channel_grammar(p.pick(
                "channel-grammar",
                self.channel_grammar,
                file.channel_grammar,
                d.channel_grammar,
            ))
            .with_header_timeout(p.pick(
                "header-timeout",
                ms(self.header_timeout),
                ms(file.header_timeout),
                d.header_timeout,
            ))
            .with_body_timeout(p.pick(
                "body-timeout",
                ms(self.body_timeout),
                ms(file.body_timeout),
                d.body_timeout,
            ))
            .with_bind_browser_cookie(p.pick(
                "bind-browser-cookie",
                self.bind_browser_cookie,
                file.bind_browser_cookie,
                d.bind_browser_cookie,
            ))
            .with_max_sessions_per_browser(per_browser_limit(p.pick(
                "max-sessions-per-browser",
                self.max_sessions_per_browser,
                file.max_sessions_per_browser,
                per_browser(d.max_sessions_per_browser),
            )))
            .with_http2_max_sessions_per_browser(per_browser_limit(p.pick(
                "http2-max-sessions-per-browser",
                self.http2_max_sessions_per_browser,
                file.http2_max_sessions_per_browser,
                per_browser(d.http2_max_sessions_per_browser),
            )))
            .with_multi_session_interval(p.pick(
                "multi-session-interval",
                ms(self.multi_session_interval),
                ms(file.multi_session_interval),
                d.multi_session_interval,
            ))
            .with_cors_origins(p.pick("cors-origin", cors_flags, file.cors_origins, d.cors_origins))
            .with_cors_allowed_headers(p.pick(
                "cors-header",
                (!self.cors_allowed_headers.is_empty()).then(|| self.cors_allowed_headers.clone()),
                file.cors_allowed_headers,
                d.cors_allowed_headers,
            ))
            .with_callback_polling(p.pick(
                "callback-polling",
                self.callback_polling,
                file.callback_polling,
                d.callback_polling,
            ))
            .with_tls_handshake_timeout(p.pick(
                "tls-handshake-timeout",
                ms(self.tls_handshake_timeout),
                ms(file.tls_handshake_timeout),
                d.tls_handshake_timeout,
            ))
            .with_http2_prior_knowledge(p.pick(
                "http2-prior-knowledge",
                self.http2_prior_knowledge,
                file.http2_prior_knowledge,
                d.http2_prior_knowledge,
            ))
            .with_max_queued_bytes(p.pick(
                "max-queued-bytes",
                self.max_queued_bytes,
                file.max_queued_bytes,
                d.max_queued_bytes,
            ))
            .with_max_body_bytes(p.pick(
                "max-body-bytes",
                self.max_body_bytes,
                file.max_body_bytes,
                d.max_body_bytes,
            ))
            .with_max_body_bytes_per_address(p.pick(
                "max-body-bytes-per-address",
                self.max_body_bytes_per_address,
                file.max_body_bytes_per_address,
                d.max_body_bytes_per_address,
            ))
            .with_max_sessions_per_address(p.pick(
                "max-sessions-per-address",
                self.max_sessions_per_address,
                file.max_sessions_per_address,
                d.max_sessions_per_address,
            ))
            .with_max_connections(p.pick(
                "max-connections",
                self.max_connections,
                file.max_connections,
                d.max_connections,
            ))
            .with_max_connections_per_address(p.pick(
                "max-connections-per-address",
                self.max_connections_per_address,
                file.max_connections_per_address,
                d.max_connections_per_address,
            ))
            .with_max_pending_websockets_per_address(p.pick(
                "max-pending-websockets-per-address",
                self.max_pending_websockets_per_address,
                file.max_pending_websockets_per_address,
                d.max_pending_websockets_per_address,
            ))
            .with_websocket_handshake_timeout(p.pick(
                "websocket-handshake-timeout",
                ms(self.websocket_handshake_timeout),
                ms(file.websocket_handshake_timeout),
                d.websocket_handshake_timeout,
            ))
            .with_max_auth_failures_per_address(p.pick(
                "max-auth-failures-per-address",
                self.max_auth_failures_per_address,
                file.max_auth_failures_per_address,
                d.max_auth_failures_per_address,
            ))
            .with_auth_failure_window(p.pick(
                "auth-failure-window",
                ms(self.auth_failure_window),
                ms(file.auth_failure_window),
                d.auth_failure_window,
            ))
            .with_refusal_log_interval(p.pick(
                "refusal-log-interval",
                ms(self.refusal_log_interval),
                ms(file.refusal_log_interval),
                d.refusal_log_interval,
            ))
            .with_trusted_proxies(p.pick(
                "trusted-proxy",
                (!self.trusted_proxies.is_empty()).then(|| self.trusted_proxies.clone()),
                file.trusted_proxies,
                d.trusted_proxies,
            ));
        let dc = CheckLimits::default();
        let checks = CheckLimits::default()
            .with_window(config.auth_failure_window)
            .with_concurrency(p.pick(
                "auth-workers",
                self.auth_workers,
                file.auth_workers,
                dc.concurrency,
            ))
            .with_max_waiting(p.pick(
                "max-auth-waiting",
                self.max_auth_waiting,
                file.max_auth_waiting,
                dc.max_waiting,
            ))
            .with_max_failures_per_user(p.pick(
                "max-auth-failures-per-user",
                self.max_auth_failures_per_user,
                file.max_auth_failures_per_user,
                dc.max_failures_per_user,
            ));
        let replay_file = (
            file.replay,
            file.replay_retention.map(|m| m.0),
            file.replay_max,
        );
        config.replay = self.replay_config(&mut p, replay_file, config.channel_grammar)?;
        for (key, flag, file_value) in [
            (
                "replay-max-bytes",
                self.replay_max_bytes,
                file.replay_max_bytes,
            ),
            (
                "replay-max-channels",
                self.replay_max_channels,
                file.replay_max_channels,
            ),
            (
                "replay-max-patterns",
                self.replay_max_patterns,
                file.replay_max_patterns,
            ),
        ] {
            let Some(n) = p.maybe(key, flag, file_value) else {
                continue;
            };
            let Some(replay) = config.replay.as_mut() else {
                return Err(p
                    .refuse(key, n, "applies to durable channels: add --replay PATTERN")
                    .into());
            };
            if n == 0 {
                return Err(p.refuse(key, 0, "must be at least 1").into());
            }
            match key {
                "replay-max-bytes" => replay.max_bytes = n,
                "replay-max-channels" => replay.max_channels = n,
                _ => replay.max_patterns_per_subscribe = n,
            }
        }
        let settings = Settings {
            checks,
            listen: p.pick("listen", self.listen, file.listen, DEFAULT_LISTEN.parse()?),
            path: p.pick(
                "path",
                self.path.clone(),
                file.path,
                DEFAULT_PATH.to_string(),
            ),
            stats_every: p
                .maybe("stats-every", self.stats_every, file.stats_every)
                .map(|s| s.0),
            users: p.maybe("users", self.users.clone(), file.users),
            trust_ext_user_id: p.pick(
                "trust-ext-user-id",
                self.trust_ext_user_id,
                file.trust_ext_user_id,
                false,
            ),
            public_url: p.maybe("public-url", self.public_url.clone(), file.public_url),
            tls_cert: p.maybe("tls-cert", self.tls_cert.clone(), file.tls_cert),
            tls_key: p.maybe("tls-key", self.tls_key.clone(), file.tls_key),
            tls_client_ca: p.maybe(
                "tls-client-ca",
                self.tls_client_ca.clone(),
                file.tls_client_ca,
            ),
            shutdown_grace: p.pick(
                "shutdown-grace",
                ms(self.shutdown_grace),
                ms(file.shutdown_grace),
                DEFAULT_SHUTDOWN_GRACE,
            ),
            metrics_listen: p.maybe("metrics-listen", self.metrics_listen, file.metrics_listen),
            no_metrics: p.pick(
                "no-metrics",
                self.no_metrics.then_some(true),
                file.no_metrics,
                false,
            ),
            nats: match p.maybe("nats", self.nats.clone(), file.nats) {
                None => None,
                Some(url) => {
                    let mut nats = NatsConfig::new(&url);
                    if let Some(prefix) =
                        p.maybe("nats-prefix", self.nats_prefix.clone(), file.nats_prefix)
                    {
                        nats.subject_prefix = prefix;
                    }
                    nats.credentials_file =
                        p.maybe("nats-creds", self.nats_creds.clone(), file.nats_creds);
                    nats.ca_certificate =
                        p.maybe("nats-ca-cert", self.nats_ca_cert.clone(), file.nats_ca_cert);
                    let cert = p.maybe(
                        "nats-client-cert",
                        self.nats_client_cert.clone(),
                        file.nats_client_cert,
                    );
                    let key = p.maybe(
                        "nats-client-key",
                        self.nats_client_key.clone(),
                        file.nats_client_key,
                    );
                    match (cert, key) {
                        (Some(cert), Some(key)) => nats.client_certificate = Some((cert, key)),
                        (None, None) => {}
                        _ => {
                            return Err(UsageError(
                                "--nats-client-cert and --nats-client-key go together".into(),
                            )
                            .into());
                        }
                    }
                    Some(nats)
                }
            },
            config,
            picker: p,
        };
        let warnings = settings.check()?;
        Ok((settings, warnings))
    }
}

impl ServeArgs {
    /// The durable channels of `replay`, `replay-retention` and `replay-max`; `None`
    /// without a pattern.
    fn replay_config(
        &self,
        p: &mut Picker,
        (file_patterns, file_retention, file_max): (
            Option<Vec<String>>,
            Option<Duration>,
            Option<usize>,
        ),
        grammar: ChannelGrammar,
    ) -> Result<Option<ReplayConfig>, UsageError> {
        let flags = (!self.replay.is_empty()).then(|| self.replay.clone());
        let texts = p.pick("replay", flags, file_patterns, Vec::new());
        let retention = p.maybe(
            "replay-retention",
            self.replay_retention.map(|m| m.0),
            file_retention,
        );
        let max = p.maybe("replay-max", self.replay_max, file_max);
        if texts.is_empty() {
            if let Some(r) = retention {
                return Err(p.refuse(
                    "replay-retention",
                    show_duration(r),
                    "applies to durable channels: add --replay PATTERN",
                ));
            }
            if let Some(m) = max {
                return Err(p.refuse(
                    "replay-max",
                    m,
                    "applies to durable channels: add --replay PATTERN",
                ));
            }
            return Ok(None);
        }
        let mut patterns = Vec::with_capacity(texts.len());
        for text in &texts {
            let pattern = ChannelName::parse_with(text, grammar)
                .map_err(|e| p.refuse("replay", text, &format!("not a channel pattern: {e}")))?;
            if pattern.is_meta() || pattern.is_service() {
                return Err(p.refuse(
                    "replay",
                    text,
                    "/meta and /service channels are never durable",
                ));
            }
            patterns.push(pattern);
        }
        let mut config = ReplayConfig::new(patterns);
        if let Some(r) = retention {
            if r.is_zero() {
                return Err(p.refuse("replay-retention", "0", "must be more than 0"));
            }
            config.retention = r;
        }
        if let Some(m) = max {
            if m == 0 {
                return Err(p.refuse("replay-max", 0, "must be at least 1"));
            }
            config.max_per_channel = m;
        }
        Ok(Some(config))
    }
}

impl Settings {
    /// Refuses the settings that cannot work, in one line each; returns warnings for
    /// those that work but probably not as meant.
    fn check(&self) -> Result<Vec<String>, UsageError> {
        let p = &self.picker;
        let c = &self.config;
        let mut warnings = Vec::new();
        let path = &self.path;
        if !path.starts_with('/') {
            return Err(p.refuse(
                "path",
                path,
                &format!(
                    "the path must start with / (e.g. /{})",
                    path.trim_start_matches('/')
                ),
            ));
        }
        if path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
            return Err(p.refuse("path", path, "a path has no spaces, ? or #"));
        }
        // The endpoint answers its path and everything below it (as BayeuxService does).
        if "/api/v2/users/".starts_with(&format!("{}/", path.trim_end_matches('/'))) {
            warnings.push(format!(
                "{}: the Bayeux endpoint takes every path under {path}, so the workbin API (/api/v2/...) is not served",
                p.show("path", path)
            ));
        }
        if self.stats_every.is_some_and(|d| d.is_zero()) {
            return Err(p.refuse("stats-every", "0", "must be more than 0"));
        }
        if c.max_message_size < 1024 {
            warnings.push(format!(
                "{}: a request larger than this is refused, and a handshake alone takes about 200 bytes",
                p.show("max-message-size", c.max_message_size)
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(p.refuse("public-url", url, "an http:// or https:// URL is required"));
        }
        if c.bind_browser_cookie && !c.cors_origins.is_empty() && self.tls_cert.is_none() {
            warnings.push(format!(
                "{} with {}: over plain HTTP, browsers block the BAYEUX_BROWSER cookie of a page of another site, so its sessions would be refused (402) on every request; serve TLS (--tls-cert) for cross-site pages",
                p.show("bind-browser-cookie", true),
                p.show("cors-origin", c.cors_origins.join(","))
            ));
        }
        // The library checks the server's settings (the one place they are validated);
        // its refusal names the flag as the user wrote it.
        if let Err(e) = c.validate() {
            let key = match e.field() {
                "cors_origins" => "cors-origin".to_string(),
                "cors_allowed_headers" => "cors-header".to_string(),
                "trusted_proxies" => "trusted-proxy".to_string(),
                field => field.replace('_', "-"),
            };
            return Err(p.refuse(&key, e.value(), e.reason()));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(UsageError(format!(
                    "{} needs --tls-key (its private key)",
                    p.show(
                        "tls-cert",
                        self.tls_cert
                            .as_deref()
                            .map_or("".into(), |f| f.display().to_string())
                    )
                )));
            }
            (None, Some(key)) => {
                return Err(UsageError(format!(
                    "{} needs --tls-cert (the certificate it is the key of)",
                    p.show("tls-key", key.display())
                )));
            }
            _ => {}
        }
        if let (Some(ca), None) = (&self.tls_client_ca, &self.tls_cert) {
            return Err(UsageError(format!(
                "{} needs --tls-cert and --tls-key (mutual TLS is TLS)",
                p.show("tls-client-ca", ca.display())
            )));
        }
        Ok(warnings)
    }

    /// The TLS settings of `tls-cert`, `tls-key` and `tls-client-ca`, if given.
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

/// Runs until Ctrl-C (or SIGTERM), then answers pending connects and exits within the
/// shutdown grace period; a second signal exits at once.
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Signals are ours from the start: a Ctrl-C during start-up is seen too.
    let mut signals = Signals::new()?;
    let (settings, warnings) = args.settings()?;
    // Certificates and the users file first: a bad file is reported before anything
    // else happens.
    let mut config = settings.config.clone();
    config.set_tls(settings.tls()?);
    if let Some(nats) = &settings.nats {
        nats.check()?;
    }
    config.set_nats(settings.nats.clone());
    let users = settings
        .users
        .as_deref()
        .map(|path| Users::read(path, settings.checks.clone()))
        .transpose()?;
    for warning in warnings
        .iter()
        .chain(users.iter().flat_map(|u| &u.warnings))
    {
        eprintln!("bayeux: warning: {warning}");
    }
    let (mut access, hint_users) = match users {
        Some(users) => {
            let names = (users.agent, users.supervisor);
            (Access::checked(users.directory), Some(names))
        }
        None => (Access::demo(), None),
    };
    if settings.trust_ext_user_id {
        access = access.trusting_ext_user_id();
    }
    let demo = access.is_demo();
    let workbin = WorkbinConfig {
        public_url: settings.public_url.clone(),
        ..WorkbinConfig::default()
    };
    let mutual = config.tls().is_some_and(|t| t.client_auth().is_some());
    let prior_knowledge = config.http2_prior_knowledge;
    // The operator's endpoints: on the main listener, or on their own (--metrics-listen).
    let app = DemoApp::new(config, access, workbin, &settings.path);
    let ops = OpsService::new(app.server().clone()).with_metrics(!settings.no_metrics);
    let (app, ops_listener) = match settings.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--metrics-listen): {e}"))?;
            (app.with_ops(None), Some((listener, ops)))
        }
        None => (app.with_ops(Some(ops)), None),
    };
    let listening = app
        .listen(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let url = listening.url(&settings.path);
    let base = listening.url("");
    // The start-up lines are log events; the first one names the URL.
    if listening.is_tls() {
        let ws = listening.ws_url(&settings.path);
        tracing::info!(
            "serving Bayeux over TLS (HTTP/2 and HTTP/1.1) at {url} (WebSocket at {ws}, and long-polling) and the workbin API at {base}/api/v2/users/{{userId}}/workbins/{{id}}"
        );
        if mutual {
            tracing::info!("mutual TLS: clients must present a certificate from --tls-client-ca");
        }
    } else {
        tracing::info!(
            "serving Bayeux (WebSocket and long-polling) at {url} and the workbin API at {base}/api/v2/users/{{userId}}/workbins/{{id}}"
        );
        if prior_knowledge {
            tracing::info!("cleartext HTTP/2 accepted from clients with prior knowledge");
        }
    }
    if let Some(nats) = &settings.nats {
        tracing::info!(
            "sharing channels with the other nodes through NATS at {} (subjects under {}.*); this node's sessions stay here",
            nats.servers.join(","),
            nats.subject_prefix
        );
    }
    if let Some(replay) = &settings.config.replay {
        let patterns: Vec<&str> = replay.patterns.iter().map(|p| p.as_str()).collect();
        let store = if settings.nats.is_some() {
            "in a JetStream stream on NATS, shared by the nodes"
        } else {
            "in memory on this node"
        };
        tracing::info!(
            "replay: {} durable, {store}, each channel keeping {} messages for {}",
            patterns.join(", "),
            replay.max_per_channel,
            show_duration(replay.retention)
        );
    }
    let metrics = if settings.no_metrics {
        ""
    } else {
        ", /metrics"
    };
    let ops_stop = match ops_listener {
        Some((listener, ops)) => {
            let addr = listener.local_addr()?;
            tracing::info!("operator endpoints: /health, /ready{metrics} at http://{addr}");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(bayeux::server::serve(listener, ops, async {
                let _ = stopped.await;
            }));
            Some(stop)
        }
        None => {
            tracing::info!("operator endpoints: /health, /ready{metrics} at {base}");
            None
        }
    };
    if settings.path.trim_end_matches('/').is_empty() {
        tracing::info!("no web demo: the Bayeux endpoint takes every path (--path /)");
    } else {
        tracing::info!("the web demo (supervisor console, agent desktops, live stats) at {base}/");
    }
    if demo {
        tracing::warn!(
            "DEMO MODE: any user name is accepted with any password (use --users FILE to check credentials)"
        );
    }
    match hint_users {
        None => {
            tracing::info!("watch an agent: bayeux listen {url} --user agent1");
            tracing::info!(
                "try: curl -s -X POST {base}/api/v2/users/agent1/workbins/wb1 -H 'Content-Type: application/json' \
                 -d '{{\"operationName\":\"AddEmail\",\"uri\":\".../FE7978FEWFE\"}}'"
            );
        }
        // Credentials are checked: the hints name users of the file, and the password
        // is theirs to fill in.
        Some((agent, supervisor)) => {
            let agent = agent.as_deref().unwrap_or("AGENT");
            tracing::info!(
                "watch an agent: bayeux listen {url} --user {agent} --password PASSWORD"
            );
            if let Some(supervisor) = supervisor {
                tracing::info!(
                    "try: bayeux assign {base} {agent} wb1 --op AddEmail --uri .../FE7978FEWFE --auth {supervisor}:PASSWORD"
                );
            }
        }
    }
    if let Some(every) = settings.stats_every {
        let server = app.server().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let stats = server.stats();
                tracing::info!(
                    sessions = stats.sessions,
                    rss_kib = rss_kib(),
                    dropped = stats.dropped_messages,
                    overflow_closes = stats.overflow_closes,
                    "stats"
                );
            }
        });
    }
    tokio::spawn(trim_when_idle(app.server().clone()));
    let signal = signals.recv().await;
    let grace = settings.shutdown_grace;
    tracing::info!(
        "{signal}: shutting down: held connects answered, waiting up to {} for requests in progress and WebSocket sessions to end (send it again to stop at once)",
        show_duration(grace)
    );
    tokio::select! {
        done = tokio::time::timeout(grace, listening.shutdown()) => match done {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                "the shutdown grace period ({}) is over: closing the connections still open",
                show_duration(grace)
            ),
        },
        signal = signals.recv() => {
            return Err(format!(
                "{signal} during the shutdown: stopped at once, closing the requests still in progress"
            )
            .into());
        }
    }
    // The operator's endpoints last: `/ready` said false while the rest shut down.
    if let Some(stop) = ops_stop {
        let _ = stop.send(());
    }
    Ok(())
}

/// A users file, read and checked for `serve --users`.
struct Users {
    directory: UserDirectory,
    /// The first agent and supervisor of the file, for the start-up hints.
    agent: Option<String>,
    supervisor: Option<String>,
    /// What may not be what was meant.
    warnings: Vec<String>,
}

impl Users {
    /// Reads the users file at `path`. A file with nobody in it, or a user named twice,
    /// is refused: one line that names the file (and the lines).
    fn read(
        path: &std::path::Path,
        checks: CheckLimits,
    ) -> Result<Users, Box<dyn std::error::Error>> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read users file {shown}: {e}"))?;
        let directory = UserDirectory::parse(&text)
            .map_err(|e| UsageError(format!("{shown}: {e}")))?
            .with_checks(checks);
        let mut first_line: std::collections::HashMap<&str, usize> = Default::default();
        let (mut agent, mut supervisor) = (None, None);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The same reading as UserDirectory::parse: name first, role last.
            let name = line.split(':').next().unwrap_or(line);
            if let Some(first) = first_line.insert(name, i + 1) {
                return Err(UsageError(format!(
                    "{shown} line {}: user {name:?} is already on line {first}",
                    i + 1
                ))
                .into());
            }
            match line.rsplit(':').next() {
                Some("agent") if agent.is_none() => agent = Some(name.to_string()),
                Some("supervisor") if supervisor.is_none() => supervisor = Some(name.to_string()),
                _ => {}
            }
        }
        if first_line.is_empty() {
            return Err(UsageError(format!(
                "{shown}: no users in it (each line is `name:secret:role`): nobody could log in"
            ))
            .into());
        }
        let mut warnings = Vec::new();
        // Secrets that are not Argon2 hashes: accepted, with the command that re-hashes.
        warnings.extend(directory.warnings().iter().map(|w| format!("{shown}: {w}")));
        if supervisor.is_none() {
            warnings.push(format!(
                "{shown}: no supervisor in it: nobody may call the workbin API"
            ));
        }
        Ok(Users {
            directory,
            agent,
            supervisor,
            warnings,
        })
    }
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

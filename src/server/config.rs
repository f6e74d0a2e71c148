//! Server configuration, named after CometD's options where the concept is the same.

use std::net::IpAddr;
use std::time::Duration;

use crate::protocol::ChannelGrammar;

/// What a session's queue does when a message does not fit (over `max_queue` messages
/// or `max_queue_bytes` bytes), for sessions that did not ask for acknowledged delivery.
///
/// A session that negotiated the ack extension was promised every message, so it is
/// never dropped from quietly: whatever the policy, an overflow ends it as
/// [`OverflowPolicy::CloseSession`] does, and the client hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The new message is not queued for this session (others still get it), and the
    /// drop counters grow. The session stays alive. This is the default: one slow
    /// client never costs the others anything, and it keeps its session.
    DropNewest,
    /// The oldest queued messages make room for the new one (CometD users know this as
    /// dropping the head of the queue); counted like drop-newest.
    DropOldest,
    /// The session is ended: its pending `/meta/connect` (or its next one) is answered
    /// with `409` and `reconnect: handshake`, so the client learns it missed messages and
    /// can re-synchronise after its new handshake.
    CloseSession,
}

impl OverflowPolicy {
    /// The name used by `bayeux serve --overflow`.
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::DropNewest => "drop-newest",
            OverflowPolicy::DropOldest => "drop-oldest",
            OverflowPolicy::CloseSession => "close-session",
        }
    }

    /// The policy named `name` (`drop-newest`, `drop-oldest`, `close-session`).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            OverflowPolicy::DropNewest,
            OverflowPolicy::DropOldest,
            OverflowPolicy::CloseSession,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

/// Tunables of a [`Server`](super::Server). All durations are milliseconds on the wire.
///
/// Marked `#[non_exhaustive]` so that settings can be added without breaking anyone:
/// start from [`ServerConfig::default`] and change what you need, through the fields or
/// the chainable `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use bayeux::server::ServerConfig;
///
/// let config = ServerConfig::default()
///     .with_timeout(Duration::from_secs(20))
///     .with_max_sessions_per_address(50);
/// assert!(config.validate().is_ok());
/// ```
///
/// Every field exists whatever the crate's features; the settings whose types come
/// with a feature (TLS, NATS) are reached through methods that come with it
/// ([`ServerConfig::with_tls`], [`ServerConfig::with_nats`]). [`ServerConfig::validate`]
/// is the one place that checks a configuration; [`ServerBuilder::try_build`](super::ServerBuilder::try_build)
/// calls it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `timeout`: how long a `/meta/connect` is held when there is nothing to send.
    /// CometD's default: 30 000 ms.
    pub timeout: Duration,
    /// `interval`: how long the client should wait between connects. CometD's default: 0.
    pub interval: Duration,
    /// `maxInterval`: how long after its last connect ended a session may stay without
    /// a new one before it expires. CometD's default: 10 000 ms.
    pub max_interval: Duration,
    /// `maxQueue`: the most messages held for one session, queued or sent but not yet
    /// acknowledged. CometD's default is unbounded; ours is bounded so that one stalled
    /// client cannot exhaust memory.
    pub max_queue: usize,
    /// `maxQueueBytes`: the most bytes of messages held for one session, counted as
    /// `max_queue` is. A message that arrives when nothing is held is always accepted,
    /// whatever its size (within `max_queued_bytes`).
    pub max_queue_bytes: usize,
    /// The budget of all session queues together, in bytes (each message charged as for
    /// `max_queue_bytes`, once per session that holds it). Below it, only the
    /// per-session bounds apply. Past it, a session may queue more only while it holds
    /// less than its share (this budget divided by the live sessions); a message for a
    /// session over its share is an overflow of that session, and its
    /// [`OverflowPolicy`] applies. So the sessions whose queues grow (stalled or slow
    /// clients, the largest queues) pay, not those that keep up, and all queues
    /// together never hold more than twice this budget. Never less than
    /// `max_queue_bytes`. Default: 512 MiB (so at most 1 GiB).
    pub max_queued_bytes: usize,
    /// The bytes of HTTP request bodies the server reads and handles at once, over
    /// all clients (each request reserves its `Content-Length`, or `max_message_size`
    /// when it has none, until it is handled); a request over it is answered `503` with
    /// `Retry-After`. Never less than `max_message_size`. Default: 256 MiB.
    pub max_body_bytes: usize,
    /// The same for one client address. Never less than `max_message_size`. Default:
    /// 16 MiB.
    pub max_body_bytes_per_address: usize,
    /// What happens when a queue is full.
    pub overflow: OverflowPolicy,
    /// Under load, how long a transport waits before sending a session's next batch, so
    /// that each long-poll response or WebSocket frame carries more messages (fewer
    /// round trips and writes per delivery). It opens only after a busy batch (at
    /// least `busy_threshold` messages), so light traffic is never delayed; zero turns
    /// it off. CometD's `maxLazyTimeout` is the same trade for lazy channels.
    pub busy_flush_window: Duration,
    /// How many messages in one batch make a session busy (see `busy_flush_window`).
    pub busy_threshold: usize,
    /// `maxMessageSize`: the largest request body, in bytes (413 above it).
    pub max_message_size: usize,
    /// Offer CometD's acknowledged-messages extension to clients that ask for it with
    /// `ext: {ack: true}` at handshake (on by default; clients opt in).
    pub ack_extension: bool,
    /// The most messages in one request (HTTP 400 above it). Whatever it says, one
    /// request opens at most one session: the second and later `/meta/handshake`
    /// messages of a batch are refused (CometD's and Faye's clients never batch
    /// handshakes).
    pub max_batch: usize,
    /// The most subscriptions one session may hold (`409` above it).
    pub max_subscriptions: usize,
    /// The most sessions the server holds; further handshakes are refused with `409`
    /// and advice to try again after `interval` + 1 s.
    pub max_sessions: usize,
    /// The most sessions opened from one client address (see `trusted_proxies`) that
    /// live at once; further handshakes from it are refused as for `max_sessions`.
    /// Default: 1 000 (a contact center behind one NAT address: raise it to its agents).
    pub max_sessions_per_address: usize,
    /// The most TCP connections the server's own listener ([`Server::listen`](super::Server::listen),
    /// [`serve_with_config`](super::serve_with_config)) holds at once; a connection over
    /// it is answered `503` (plain HTTP) or closed (TLS) at once. Default: 10 000.
    pub max_connections: usize,
    /// The most TCP connections from one client address at once (trusted proxies are
    /// exempt); a connection over it is refused as for `max_connections`. Default: 1 000.
    pub max_connections_per_address: usize,
    /// The most WebSockets from one client address that are open and have not yet
    /// carried a successful handshake (or a message of an existing session); an upgrade
    /// over it is answered `503`. Default: 32.
    pub max_pending_websockets_per_address: usize,
    /// How long a WebSocket may stay open before it carries a successful handshake (or
    /// a message of an existing session); it is closed with 1008 after it. Default: 10 s.
    pub websocket_handshake_timeout: Duration,
    /// How many failed handshakes (refused by the security policy) one client address
    /// may have within `auth_failure_window`; past it, its handshakes are refused with
    /// `403` before the policy runs (no password hash is computed for it) until the
    /// window slides past its failures. Default: 20 per minute.
    pub max_auth_failures_per_address: u32,
    /// The window over which `max_auth_failures_per_address` counts. Default: 60 s.
    pub auth_failure_window: Duration,
    /// Each kind of refusal (connection limits, sessions per address, failed
    /// handshakes...) is logged at most once per client address in this interval, with
    /// the number refused since; the metrics count every one. Default: 60 s.
    pub refusal_log_interval: Duration,
    /// Addresses of reverse proxies in front of the server: a request from one of them
    /// is counted against the client address in its `X-Forwarded-For` (the rightmost
    /// address that is not itself a trusted proxy), and their connections are exempt
    /// from `max_connections_per_address`. Empty (the default): every request is the
    /// TCP peer's.
    pub trusted_proxies: Vec<IpAddr>,
    /// The longest channel name, in bytes (`400` above it).
    pub max_channel_length: usize,
    /// Which characters channel names may hold: the Bayeux grammar
    /// ([`ChannelGrammar::Strict`], the default) or what CometD's servers accept
    /// ([`ChannelGrammar::Cometd`]: also `.`, `+`, `#`, space, `{`, `}`), for applications
    /// that move from a CometD server with names such as `/stock/AAPL.O`. Applies to
    /// what clients send and to the in-process API.
    pub channel_grammar: ChannelGrammar,
    /// How long a client may take to send a request's headers once it started
    /// (slowloris guard): the connection is closed after it.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body: HTTP 408 after it.
    pub body_timeout: Duration,
    /// Bind each session to the `BAYEUX_BROWSER` cookie set at its handshake: a request
    /// that names the session from another (or no) cookie is answered `402`, as if the
    /// session did not exist. Off by default, as in CometD.
    pub bind_browser_cookie: bool,
    /// `maxSessionsPerBrowser`: how many long polls (`long-polling`, `callback-polling`
    /// over HTTP/1.x) the sessions of one browser (one `BAYEUX_BROWSER` cookie) may hold
    /// at once. A connect of another session of that browser is then answered at once
    /// with `advice: {"multiple-clients": true, "reconnect": "retry", "interval":
    /// multi_session_interval}`, so that tabs of one page do not use up the browser's
    /// connections per host. `None`: no limit. CometD's default: 1. WebSocket sessions
    /// are not counted.
    pub max_sessions_per_browser: Option<usize>,
    /// `http2MaxSessionsPerBrowser`: the same over HTTP/2, where the long polls of a
    /// browser share one connection. CometD's default: no limit (`None`).
    pub http2_max_sessions_per_browser: Option<usize>,
    /// `multiSessionInterval`: the `interval` advised to a session whose connect was
    /// not held because its browser holds `max_sessions_per_browser` long polls already
    /// (it polls instead). Zero: such a connect fails with `reconnect: none`, as in
    /// CometD. CometD's default: 2 000 ms.
    pub multi_session_interval: Duration,
    /// Origins allowed to call the endpoint from a browser (CORS); empty: CORS off.
    ///
    /// A listed origin (`https://desk.example.com`) gets credentialed access: its
    /// requests carry cookies and `Authorization`, the responses say
    /// `Access-Control-Allow-Credentials: true`. `*` allows any other origin without
    /// credentials, as the CORS standard means it: `Access-Control-Allow-Origin: *`, the
    /// request handled as if it carried no cookie and no `Authorization`, no
    /// `BAYEUX_BROWSER` cookie set, and a WebSocket upgrade from such an origin that
    /// carries cookies or credentials refused (`403`). Where CORS allows an origin, the
    /// handshake also offers `cross-origin-long-polling` (Faye's name for long-polling
    /// under CORS).
    pub cors_origins: Vec<String>,
    /// Request headers a preflight allows besides the ones the CometD, Faye and this
    /// crate's clients send (`Accept, Authorization, Content-Type, Pragma,
    /// X-Requested-With`): the custom headers an application's client adds (CometD's
    /// `requestHeaders`). Empty by default.
    pub cors_allowed_headers: Vec<String>,
    /// Serve the `callback-polling` (JSONP) transport: Bayeux over `GET` requests
    /// answered as a script, for browsers that can use neither CORS nor WebSocket. Off by
    /// default: any page can make such requests with the user's cookies and read the
    /// answer, so turn it on only where sessions are not bound to cookies alone
    /// (feature `callback-polling`).
    pub callback_polling: bool,
    /// How long a client may take to complete the TLS handshake once connected; a
    /// client that stalls is dropped after it, costing no one else (a TLS slowloris).
    /// Default: 10 s. Used with TLS only ([`ServerConfig::with_tls`]).
    pub tls_handshake_timeout: Duration,
    /// Also accept cleartext HTTP/2 from clients that open with its connection preface
    /// ("prior knowledge", as `curl --http2-prior-knowledge` does); other clients keep
    /// HTTP/1.1 on the same port. Off by default. Over TLS, HTTP/2 is negotiated by
    /// ALPN whatever this says. Used with the `http2` feature only.
    pub http2_prior_knowledge: bool,
    /// Durable channels, replayed to clients that ask with Salesforce's replay
    /// extension (see [`ReplayConfig`](super::ReplayConfig)); `None` (the default): off,
    /// and `ext.replay` is ignored.
    pub replay: Option<super::ReplayConfig>,
    /// See [`ServerConfig::with_tls`].
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::TlsConfig>,
    /// See [`ServerConfig::with_nats`].
    #[cfg(feature = "nats")]
    pub(crate) nats: Option<super::NatsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            timeout: Duration::from_millis(30_000),
            interval: Duration::ZERO,
            max_interval: Duration::from_millis(10_000),
            // A burst of a few thousand small messages during a network hiccup fits;
            // all queues together stay within `max_queued_bytes` (see the README).
            max_queue: 10_000,
            max_queue_bytes: 512 * 1024,
            max_queued_bytes: 512 << 20,
            max_body_bytes: 256 << 20,
            max_body_bytes_per_address: 16 << 20,
            overflow: OverflowPolicy::DropNewest,
            busy_flush_window: Duration::from_millis(5),
            busy_threshold: 8,
            max_message_size: 1024 * 1024,
            ack_extension: true,
            max_batch: 1_000,
            max_subscriptions: 1_000,
            max_sessions: 100_000,
            max_sessions_per_address: 1_000,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_pending_websockets_per_address: 32,
            websocket_handshake_timeout: Duration::from_secs(10),
            max_auth_failures_per_address: 20,
            auth_failure_window: Duration::from_secs(60),
            refusal_log_interval: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            max_channel_length: 512,
            channel_grammar: ChannelGrammar::Strict,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            bind_browser_cookie: false,
            max_sessions_per_browser: Some(1),
            http2_max_sessions_per_browser: None,
            multi_session_interval: Duration::from_millis(2_000),
            cors_origins: Vec::new(),
            cors_allowed_headers: Vec::new(),
            callback_polling: false,
            tls_handshake_timeout: Duration::from_secs(10),
            http2_prior_knowledge: false,
            replay: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "nats")]
            nats: None,
        }
    }
}

/// Chainable setters, one per public field: `with_x(v)` sets `x` and returns the
/// configuration.
macro_rules! setters {
    ($($setter:ident => $field:ident: $ty:ty),* $(,)?) => {
        impl ServerConfig {
            $(
                #[doc = concat!("Sets [`ServerConfig::", stringify!($field), "`] and returns the configuration.")]
                #[must_use]
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    with_timeout => timeout: Duration,
    with_interval => interval: Duration,
    with_max_interval => max_interval: Duration,
    with_max_queue => max_queue: usize,
    with_max_queue_bytes => max_queue_bytes: usize,
    with_max_queued_bytes => max_queued_bytes: usize,
    with_max_body_bytes => max_body_bytes: usize,
    with_max_body_bytes_per_address => max_body_bytes_per_address: usize,
    with_overflow => overflow: OverflowPolicy,
    with_busy_flush_window => busy_flush_window: Duration,
    with_busy_threshold => busy_threshold: usize,
    with_max_message_size => max_message_size: usize,
    with_ack_extension => ack_extension: bool,
    with_max_batch => max_batch: usize,
    with_max_subscriptions => max_subscriptions: usize,
    with_max_sessions => max_sessions: usize,
    with_max_sessions_per_address => max_sessions_per_address: usize,
    with_max_connections => max_connections: usize,
    with_max_connections_per_address => max_connections_per_address: usize,
    with_max_pending_websockets_per_address => max_pending_websockets_per_address: usize,
    with_websocket_handshake_timeout => websocket_handshake_timeout: Duration,
    with_max_auth_failures_per_address => max_auth_failures_per_address: u32,
    with_auth_failure_window => auth_failure_window: Duration,
    with_refusal_log_interval => refusal_log_interval: Duration,
    with_trusted_proxies => trusted_proxies: Vec<IpAddr>,
    with_max_channel_length => max_channel_length: usize,
    with_channel_grammar => channel_grammar: ChannelGrammar,
    with_header_timeout => header_timeout: Duration,
    with_body_timeout => body_timeout: Duration,
    with_bind_browser_cookie => bind_browser_cookie: bool,
    with_max_sessions_per_browser => max_sessions_per_browser: Option<usize>,
    with_http2_max_sessions_per_browser => http2_max_sessions_per_browser: Option<usize>,
    with_multi_session_interval => multi_session_interval: Duration,
    with_cors_origins => cors_origins: Vec<String>,
    with_cors_allowed_headers => cors_allowed_headers: Vec<String>,
    with_callback_polling => callback_polling: bool,
    with_tls_handshake_timeout => tls_handshake_timeout: Duration,
    with_http2_prior_knowledge => http2_prior_knowledge: bool,
    with_replay => replay: Option<super::ReplayConfig>,
}

/// A setting that cannot work, named by its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    reason: String,
}

impl ConfigError {
    fn new(field: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The [`ServerConfig`] field at fault.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Its value, as written in the message (durations in milliseconds).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why it cannot work.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Checks that the settings can work together: the one place a configuration is
    /// validated ([`ServerBuilder::try_build`](super::ServerBuilder::try_build) calls
    /// it, and `bayeux serve` before it starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("max_queue", self.max_queue),
            ("max_queue_bytes", self.max_queue_bytes),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_body_bytes", self.max_body_bytes),
            (
                "max_body_bytes_per_address",
                self.max_body_bytes_per_address,
            ),
            ("max_message_size", self.max_message_size),
            ("max_batch", self.max_batch),
            ("max_subscriptions", self.max_subscriptions),
            ("max_sessions", self.max_sessions),
            ("max_sessions_per_address", self.max_sessions_per_address),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("max_channel_length", self.max_channel_length),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::new(
                field,
                0,
                "must be at least 1 (0 would refuse everything)",
            ));
        }
        // `timeout` may be 0: connects are then answered at once (polling).
        let durations = [
            ("max_interval", self.max_interval),
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            (
                "websocket_handshake_timeout",
                self.websocket_handshake_timeout,
            ),
            ("auth_failure_window", self.auth_failure_window),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::new(
                field,
                0,
                "must be more than 0 (with 0 no client could keep up)",
            ));
        }
        for origin in &self.cors_origins {
            if origin != "*" && !is_origin(origin) {
                return Err(ConfigError::new(
                    "cors_origins",
                    origin,
                    "an origin is scheme://host[:port], without a path or a final / (no browser sends this one), or * for any origin without credentials",
                ));
            }
        }
        for name in &self.cors_allowed_headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    "cors_allowed_headers",
                    name,
                    "is not an HTTP header name",
                ));
            }
        }
        Ok(())
    }

    /// Serve TLS (`https://`, `wss://`) with this certificate and key, through
    /// [`Server::listen`](super::Server::listen) and
    /// [`serve_with_config`](super::serve_with_config) (feature `tls`). Without it (the
    /// default): plain HTTP. With the `http2` feature, ALPN offers `h2` and `http/1.1`.
    /// Ignored by [`Server::handle`](super::Server::handle) and
    /// [`Server::service`](super::Server::service), which run inside the caller's stack.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn with_tls(mut self, tls: impl Into<Option<super::TlsConfig>>) -> Self {
        self.tls = tls.into();
        self
    }

    /// Sets or clears the TLS settings (see [`ServerConfig::with_tls`]).
    #[cfg(feature = "tls")]
    pub fn set_tls(&mut self, tls: Option<super::TlsConfig>) {
        self.tls = tls;
    }

    /// The TLS settings, if the server serves TLS (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&super::TlsConfig> {
        self.tls.as_ref()
    }

    /// Share channels, users and sessions with other server processes through NATS
    /// (feature `nats`): [`ServerBuilder::build`](super::ServerBuilder::build) makes a
    /// [`NatsBroker`](super::NatsBroker) from it unless a broker was given. Without it
    /// (the default) this process is alone, in memory.
    #[cfg(feature = "nats")]
    #[must_use]
    pub fn with_nats(mut self, nats: impl Into<Option<super::NatsConfig>>) -> Self {
        self.nats = nats.into();
        self
    }

    /// Sets or clears the NATS settings (see [`ServerConfig::with_nats`]).
    #[cfg(feature = "nats")]
    pub fn set_nats(&mut self, nats: Option<super::NatsConfig>) {
        self.nats = nats;
    }

    /// The NATS settings, if the server shares its channels through NATS (feature
    /// `nats`).
    #[cfg(feature = "nats")]
    pub fn nats(&self) -> Option<&super::NatsConfig> {
        self.nats.as_ref()
    }

    /// Whether the server serves TLS itself.
    pub(crate) fn serves_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// Whether `text` is a serialised origin: `scheme://host[:port]`, no path.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_rule_names_its_field() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
        let e = ServerConfig::default()
            .with_max_queue(0)
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "max_queue");
        let e = ServerConfig::default()
            .with_websocket_handshake_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "websocket_handshake_timeout");
        for bad in ["desk.example.com", "https://desk.example.com/", "https://"] {
            let e = ServerConfig::default()
                .with_cors_origins(vec![bad.into()])
                .validate()
                .unwrap_err();
            assert_eq!(e.field(), "cors_origins", "{bad}");
        }
        let ok = ServerConfig::default()
            .with_cors_origins(vec!["*".into(), "http://127.0.0.1:8080".into()]);
        assert_eq!(ok.validate(), Ok(()));
    }
}

//! Server configuration, named after CometD's options where the concept is the same.

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
#[derive(Clone, Debug)]
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
    /// whatever its size.
    pub max_queue_bytes: usize,
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
    /// The most messages in one request (HTTP 400 above it).
    pub max_batch: usize,
    /// The most subscriptions one session may hold (`409` above it).
    pub max_subscriptions: usize,
    /// The most sessions the server holds; further handshakes are refused with `409`
    /// and advice to try again after `interval` + 1 s.
    pub max_sessions: usize,
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
    /// Origins allowed to call the endpoint from a browser (CORS); empty: CORS off,
    /// `*`: any origin.
    pub cors_origins: Vec<String>,
    /// Serve the `callback-polling` (JSONP) transport: Bayeux over `GET` requests
    /// answered as a script, for browsers that can use neither CORS nor WebSocket. Off by
    /// default: any page can make such requests with the user's cookies and read the
    /// answer, so turn it on only where sessions are not bound to cookies alone
    /// (feature `callback-polling`).
    pub callback_polling: bool,
    /// Serve TLS (`https://`, `wss://`) with this certificate and key, through
    /// [`Server::listen`](super::Server::listen) and
    /// [`serve_with_config`](super::serve_with_config) (feature `tls`). `None` (the
    /// default): plain HTTP. With the `http2` feature, ALPN offers `h2` and `http/1.1`.
    /// Ignored by [`Server::handle`](super::Server::handle) and
    /// [`Server::service`](super::Server::service), which run inside the caller's stack.
    #[cfg(feature = "tls")]
    pub tls: Option<super::TlsConfig>,
    /// How long a client may take to complete the TLS handshake once connected; a
    /// client that stalls is dropped after it, costing no one else (a TLS slowloris).
    /// Default: 10 s (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls_handshake_timeout: Duration,
    /// Also accept cleartext HTTP/2 from clients that open with its connection preface
    /// ("prior knowledge", as `curl --http2-prior-knowledge` does); other clients keep
    /// HTTP/1.1 on the same port. Off by default. Over TLS, HTTP/2 is negotiated by
    /// ALPN whatever this says (feature `http2`).
    #[cfg(feature = "http2")]
    pub http2_prior_knowledge: bool,
    /// Share channels, users and sessions with other server processes through NATS
    /// (feature `nats`): [`ServerBuilder::build`](super::ServerBuilder::build) makes a
    /// [`NatsBroker`](super::NatsBroker) from it unless a broker was given. `None` (the
    /// default): this process is alone, in memory.
    #[cfg(feature = "nats")]
    pub nats: Option<super::NatsConfig>,
    /// Durable channels, replayed to clients that ask with Salesforce's replay
    /// extension (see [`ReplayConfig`](super::ReplayConfig)); `None` (the default): off,
    /// and `ext.replay` is ignored.
    pub replay: Option<super::ReplayConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            timeout: Duration::from_millis(30_000),
            interval: Duration::ZERO,
            max_interval: Duration::from_millis(10_000),
            // A burst of a few thousand small messages during a network hiccup fits;
            // 10 000 stalled sessions hold at most 10 000 x 512 KiB (see the README).
            max_queue: 10_000,
            max_queue_bytes: 512 * 1024,
            overflow: OverflowPolicy::DropNewest,
            busy_flush_window: Duration::from_millis(5),
            busy_threshold: 8,
            max_message_size: 1024 * 1024,
            ack_extension: true,
            max_batch: 1_000,
            max_subscriptions: 1_000,
            max_sessions: 100_000,
            max_channel_length: 512,
            channel_grammar: ChannelGrammar::Strict,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            bind_browser_cookie: false,
            cors_origins: Vec::new(),
            callback_polling: false,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: Duration::from_secs(10),
            #[cfg(feature = "http2")]
            http2_prior_knowledge: false,
            #[cfg(feature = "nats")]
            nats: None,
            replay: None,
        }
    }
}

//! Server configuration, named after CometD's options where the concept is the same.

use std::time::Duration;

/// What a session's queue does when it already holds `max_queue` messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// The new message is not queued for this session (others still get it), and the
    /// session's drop counter grows. The session stays alive. This is the default: one
    /// slow client never costs the others anything, and it keeps its session.
    DropNewest,
    /// The session is ended: its pending `/meta/connect` (or its next one) is answered
    /// with `409` and `reconnect: handshake`, so the client learns it missed messages and
    /// can re-synchronise after its new handshake.
    CloseSession,
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
    /// `maxQueue`: the most messages waiting for one session. CometD's default is
    /// unbounded; ours is bounded so that one stalled client cannot exhaust memory.
    pub max_queue: usize,
    /// What happens when a queue is full.
    pub overflow: OverflowPolicy,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            timeout: Duration::from_millis(30_000),
            interval: Duration::ZERO,
            max_interval: Duration::from_millis(10_000),
            max_queue: 1_000,
            overflow: OverflowPolicy::DropNewest,
            max_message_size: 1024 * 1024,
            ack_extension: true,
            max_batch: 1_000,
            max_subscriptions: 1_000,
            max_sessions: 100_000,
            max_channel_length: 512,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            bind_browser_cookie: false,
            cors_origins: Vec::new(),
        }
    }
}

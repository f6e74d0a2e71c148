//! Server-wide counters, read with [`Server::stats`](super::Server::stats) and, with the
//! `metrics` feature, rendered by [`Server::metrics`](super::Server::metrics).
//!
//! Every counter is a relaxed atomic: the fan-out adds nothing per delivery (messages
//! are counted when they are published and when a transport takes a session's batch),
//! and no counter takes a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use super::transport::ConnectionType;

/// How a handshake ended, as `bayeux_handshakes_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeOutcome {
    /// A session was opened.
    Accepted,
    /// The security policy refused it.
    Denied,
    /// Refused: `maxSessions` sessions are open.
    MaxSessions,
    /// Refused: an unsupported version or no common connection type.
    Unsupported,
    /// Refused: the server is shutting down.
    ShuttingDown,
    /// Refused: the client's address holds `max_sessions_per_address` sessions.
    AddressLimit,
    /// Refused for now: the policy's checks are overloaded.
    Busy,
}

// Read by the metrics collector and the log events.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl HandshakeOutcome {
    pub const ALL: [HandshakeOutcome; 7] = [
        HandshakeOutcome::Accepted,
        HandshakeOutcome::Denied,
        HandshakeOutcome::MaxSessions,
        HandshakeOutcome::Unsupported,
        HandshakeOutcome::ShuttingDown,
        HandshakeOutcome::AddressLimit,
        HandshakeOutcome::Busy,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeOutcome::Accepted => "accepted",
            HandshakeOutcome::Denied => "denied",
            HandshakeOutcome::MaxSessions => "max-sessions",
            HandshakeOutcome::Unsupported => "unsupported",
            HandshakeOutcome::ShuttingDown => "shutting-down",
            HandshakeOutcome::AddressLimit => "address-limit",
            HandshakeOutcome::Busy => "busy",
        }
    }
}

/// Why messages did not reach a session, as `bayeux_messages_dropped_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A full queue refused the newest message (`--overflow drop-newest`).
    DropNewest,
    /// A full queue let go of its oldest message (`--overflow drop-oldest`).
    DropOldest,
    /// A full queue ended the session (`close-session`, or acknowledged delivery).
    CloseSession,
    /// The session ended (disconnect, expiry, shutdown) with messages still queued or
    /// unacknowledged.
    SessionEnded,
}

// Read by the metrics collector and the log events.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::DropNewest,
        DropReason::DropOldest,
        DropReason::CloseSession,
        DropReason::SessionEnded,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::DropNewest => "drop-newest",
            DropReason::DropOldest => "drop-oldest",
            DropReason::CloseSession => "close-session",
            DropReason::SessionEnded => "session-ended",
        }
    }
}

/// The transports a session can be counted under, in `bayeux_sessions` order.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const TRANSPORTS: [ConnectionType; 3] = [
    ConnectionType::WebSocket,
    ConnectionType::LongPolling,
    ConnectionType::CallbackPolling,
];

/// A transport's slot in [`Stats::sessions`].
pub(crate) fn transport_index(t: ConnectionType) -> usize {
    match t {
        ConnectionType::WebSocket => 0,
        ConnectionType::LongPolling => 1,
        ConnectionType::CallbackPolling => 2,
    }
}

/// The HTTP status codes counted one by one (100 to 599).
const STATUSES: usize = 500;

/// The live counters, shared by the server and its sessions.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Messages not delivered to a session because its queue was full.
    pub dropped: AtomicU64,
    /// Sessions ended because their queue overflowed.
    pub overflow_closes: AtomicU64,
    /// Messages dropped, by [`DropReason`].
    pub dropped_by: [AtomicU64; 4],
    /// Handshakes, by [`HandshakeOutcome`].
    pub handshakes: [AtomicU64; 7],
    /// Sessions ended, by close reason (disconnected, expired, overflow, shutdown).
    pub closed: [AtomicU64; 4],
    /// Live sessions, by the transport that last carried them ([`TRANSPORTS`]).
    pub sessions: [AtomicI64; 3],
    /// Messages accepted for delivery: routed through the broker, or handed to
    /// `/service` listeners.
    pub published: AtomicU64,
    /// Messages taken from session queues by a transport, to be written to a client
    /// (counted once per batch; a message sent again under acknowledged delivery is
    /// not counted again).
    pub delivered: AtomicU64,
    /// `/meta/connect` requests held right now (long polls, WebSocket heartbeats).
    pub connects_pending: AtomicI64,
    /// Bytes held by all session queues (queued or unacknowledged), as each session
    /// charges them against `max_queue_bytes`.
    pub queued_bytes: AtomicUsize,
    /// Messages not queued because all queues held `max_queued_bytes`.
    pub queued_bytes_refusals: AtomicU64,
    /// Responses of the Bayeux endpoint, by HTTP status (index: status - 100).
    http: Box<[AtomicU64]>,
    /// Publish-to-flush latency (see [`super::metrics`]).
    #[cfg(feature = "metrics")]
    pub flush_latency: super::metrics::LatencyHistogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            dropped: AtomicU64::new(0),
            overflow_closes: AtomicU64::new(0),
            dropped_by: Default::default(),
            handshakes: Default::default(),
            closed: Default::default(),
            sessions: Default::default(),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            connects_pending: AtomicI64::new(0),
            queued_bytes: AtomicUsize::new(0),
            queued_bytes_refusals: AtomicU64::new(0),
            http: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            #[cfg(feature = "metrics")]
            flush_latency: Default::default(),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    pub fn snapshot(&self, sessions: usize) -> ServerStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            sessions,
            dropped_messages: load(&self.dropped),
            overflow_closes: load(&self.overflow_closes),
            handshakes_accepted: load(&self.handshakes[0]),
            handshakes_refused: self.handshakes[1..].iter().map(load).sum(),
            messages_published: load(&self.published),
            messages_delivered: load(&self.delivered),
            sessions_expired: load(&self.closed[1]),
            connects_pending: self.connects_pending.load(Ordering::Relaxed).max(0) as u64,
            broker: None,
            limits: LimitStats {
                queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
                refusals: load(&self.queued_bytes_refusals),
                ..LimitStats::default()
            },
        }
    }

    /// Live sessions, all transports together.
    pub fn live_sessions(&self) -> usize {
        let n: i64 = self
            .sessions
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        usize::try_from(n).unwrap_or(0)
    }

    /// Counts a handshake.
    pub fn handshake(&self, outcome: HandshakeOutcome) {
        let i = HandshakeOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        add(&self.handshakes[i], 1);
    }

    /// Counts `n` messages dropped for `reason` (overflow drops also in `dropped`).
    pub fn drop_messages(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        add(&self.dropped_by[i], n);
        if reason != DropReason::SessionEnded {
            add(&self.dropped, n);
        }
    }

    /// Moves a live session from one transport's count to another's (`None`: not
    /// counted before, or not any more).
    pub fn move_session(&self, from: Option<ConnectionType>, to: Option<ConnectionType>) {
        if let Some(t) = from {
            self.sessions[transport_index(t)].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(t) = to {
            self.sessions[transport_index(t)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one response of the Bayeux endpoint.
    pub fn http_response(&self, status: http::StatusCode) {
        let i = usize::from(status.as_u16()).saturating_sub(100);
        if let Some(c) = self.http.get(i) {
            add(c, 1);
        }
    }

    /// The statuses answered so far and their counts.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub fn http_responses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.http.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            (n > 0).then_some((i as u16 + 100, n))
        })
    }

    /// Counts a held `/meta/connect` until the guard is dropped.
    pub fn connect_pending(self: &Arc<Self>) -> PendingConnect {
        self.connects_pending.fetch_add(1, Ordering::Relaxed);
        PendingConnect(self.clone())
    }
}

/// Keeps a held `/meta/connect` counted in `bayeux_connects_pending`.
pub(crate) struct PendingConnect(Arc<Stats>);

impl Drop for PendingConnect {
    fn drop(&mut self) {
        self.0.connects_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of what the server has done, for monitoring: a drop is never silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Live sessions on this node.
    pub sessions: usize,
    /// Messages that a session did not receive because its queue was full (dropped by
    /// `drop-newest` or `drop-oldest`, or refused by the overflow that ended a session),
    /// since the server started.
    pub dropped_messages: u64,
    /// Sessions ended because their queue overflowed (`close-session`, or any session
    /// with acknowledged delivery), since the server started.
    pub overflow_closes: u64,
    /// Handshakes that opened a session, since the server started.
    pub handshakes_accepted: u64,
    /// Handshakes refused (by the security policy, `maxSessions`, an unsupported
    /// version or transport, or shutdown), since the server started.
    pub handshakes_refused: u64,
    /// Messages accepted for delivery (client publishes and the server's own publish,
    /// deliver and deliver_to_user), since the server started.
    pub messages_published: u64,
    /// Messages taken from session queues by a transport to be written to a client,
    /// since the server started.
    pub messages_delivered: u64,
    /// Sessions removed because no transport was attached for `interval +
    /// maxInterval`, since the server started.
    pub sessions_expired: u64,
    /// `/meta/connect` requests held right now.
    pub connects_pending: u64,
    /// The counters of the broker's link to the other nodes (a NATS broker), or `None`
    /// for a broker with no link.
    pub broker: Option<super::LinkStats>,
    /// The budgets: what they hold now and what they refused (see [`LimitStats`]).
    pub limits: LimitStats,
}

/// What the budgets of [`ServerConfig`](super::ServerConfig) hold and have refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// TCP connections open on the server's own listener.
    pub connections_open: usize,
    /// WebSockets open that have not handshaken yet.
    pub pending_websockets: usize,
    /// Bytes held by all session queues together (`max_queued_bytes` counts them).
    pub queued_bytes: usize,
    /// Bytes of request bodies being read and handled (`max_body_bytes` counts them).
    pub body_bytes: usize,
    /// Client addresses the per-address budgets track.
    pub tracked_clients: usize,
    /// Everything any budget refused (connections, upgrades, handshakes, messages,
    /// requests), since the server started; `/metrics` has them by budget.
    pub refusals: u64,
}

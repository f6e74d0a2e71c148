//! Server-wide counters, read with [`Server::stats`](super::Server::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters, shared by the server and its sessions.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Messages not delivered to a session because its queue was full.
    pub dropped: AtomicU64,
    /// Sessions ended because their queue overflowed.
    pub overflow_closes: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self, sessions: usize) -> ServerStats {
        ServerStats {
            sessions,
            dropped_messages: self.dropped.load(Ordering::Relaxed),
            overflow_closes: self.overflow_closes.load(Ordering::Relaxed),
        }
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
}

//! The routing boundary: every message the server sends to clients goes through a
//! [`Broker`], whether it is for a channel's subscribers, for one user's sessions, or for
//! one session.
//!
//! A broker decides which nodes see a message; each node then delivers it to its own
//! recipients through its [`LocalDelivery`]. [`InMemoryBroker`] is the single-process
//! broker (it hands the message straight to the local delivery); a multi-node broker
//! (NATS, for example) sends it to the other nodes as well, and hands what it receives
//! from them to the same local delivery. Sessions, transports and handlers do not know
//! which broker runs.

mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
pub(crate) mod subject;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::protocol::ChannelName;

pub use memory::InMemoryBroker;
#[cfg(feature = "nats")]
pub(crate) use nats::NatsLink;
#[cfg(feature = "nats")]
pub use nats::{NatsBroker, NatsConfig, NatsError};

pub(crate) use super::local_delivery::LocalDelivery;

/// Who a message is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Destination {
    /// Every subscriber whose pattern matches the channel (a broadcast).
    Subscribers,
    /// The sessions of this user that subscribed to a pattern matching the channel:
    /// channels such as `/v2/me/emails` mean "the user of this session".
    User(String),
    /// One session, by `clientId`, whatever it subscribed to (CometD's
    /// `ServerSession.deliver`).
    Session(String),
}

/// One message on its way to clients: encoded once, shared by every recipient.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The plain (non-wildcard) channel the message is on.
    pub channel: ChannelName,
    /// Who it is for.
    pub destination: Destination,
    /// The message as JSON, exactly as each recipient will receive it.
    pub message: Bytes,
}

/// What a broker reports about a routed message. Counts are of this node's recipients
/// only: with several nodes, a broker cannot know at publish time how many recipients
/// the other nodes have (their metrics say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// Recipients on this node that queued the message when it was routed.
    pub local_recipients: usize,
}

impl Receipt {
    /// A receipt for `local_recipients` recipients on this node.
    pub fn local(local_recipients: usize) -> Self {
        Receipt { local_recipients }
    }
}

/// Why a broker could not route a message (for example, the link to the other nodes is
/// down). The message may still have reached this node's recipients.
#[derive(Debug)]
pub struct BrokerError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BrokerError {
    /// An error with a one-line description.
    pub fn new(message: impl Into<String>) -> Self {
        BrokerError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a description and the underlying cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BrokerError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The outcome of [`Broker::route`]: already known (a local broker, no allocation) or a
/// future (a broker that waits for a network write).
#[must_use = "a route may not complete until awaited"]
pub enum Routing {
    /// The broker finished routing at once.
    Done(Option<Result<Receipt, BrokerError>>),
    /// The broker finishes routing asynchronously.
    Pending(Pin<Box<dyn Future<Output = Result<Receipt, BrokerError>> + Send>>),
}

impl Routing {
    /// A routing that is already complete.
    pub fn ready(result: Result<Receipt, BrokerError>) -> Self {
        Routing::Done(Some(result))
    }

    /// A routing that completes when `future` does.
    pub fn pending(
        future: impl Future<Output = Result<Receipt, BrokerError>> + Send + 'static,
    ) -> Self {
        Routing::Pending(Box::pin(future))
    }
}

impl fmt::Debug for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Routing::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Routing::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl Future for Routing {
    type Output = Result<Receipt, BrokerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Routing::Done(r) => Poll::Ready(
                r.take()
                    .unwrap_or_else(|| Err(BrokerError::new("routing polled after completion"))),
            ),
            Routing::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// The one routing boundary of the server: every delivery to clients (broadcasts,
/// per-user and per-session messages, from clients, from the in-process API or from the
/// demo's REST endpoint) goes through [`Broker::route`].
///
/// `/service/**` messages are not routed: they stay on the node that received them, for
/// its server-side listeners, as in CometD's Oort.
pub trait Broker: Send + Sync + 'static {
    /// Called once by each server that uses this broker, when it is built: `node` is
    /// where messages for that server's recipients must be handed.
    fn attach(&self, node: LocalDelivery);

    /// This node's interest in `pattern` changed: `interested` is true when the first
    /// local recipient subscribed to it, false when the last one left. A multi-node
    /// broker subscribes to the other nodes' traffic on that pattern only while someone
    /// here wants it. The default ignores it.
    ///
    /// Called with the node's channel index locked, so that the calls come in the
    /// order the changes happened: it must not block or call back into the server
    /// (hand the change to a task instead).
    fn interest(&self, pattern: &ChannelName, interested: bool) {
        let _ = (pattern, interested);
    }

    /// This node gained its first session bound to `user` (`interested`), or lost its
    /// last: a multi-node broker receives that user's per-user messages only while the
    /// user has a session here. Called under the session registry's lock, so the calls
    /// come in order: it must not block or call back into the server. The default
    /// ignores it.
    fn user_interest(&self, user: &str, interested: bool) {
        let _ = (user, interested);
    }

    /// Completes once the interest changes reported so far are in force across the
    /// nodes, so that a message published elsewhere after a subscribe reply reaches the
    /// subscriber. A server awaits it before answering a successful `/meta/subscribe`.
    /// A broker that cannot know (its link is down) completes at once. The default
    /// completes at once.
    fn interest_settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(std::future::ready(()))
    }

    /// A multi-node broker's name for this node, `NODE_ID_LEN` (8) characters that the
    /// server starts its `clientId`s with, so that a per-session message published on
    /// any node reaches the node that holds the session. `None` (the default): the
    /// `clientId`s carry no node.
    fn node_id(&self) -> Option<&str> {
        None
    }

    /// The counters of a multi-node broker's link (messages sent and received, drops,
    /// reconnects), for the server's metrics and stats. `None` (the default) for a
    /// broker with no link.
    fn link_stats(&self) -> Option<LinkStats> {
        None
    }

    /// Routes `envelope` to its recipients on every node. The future completes when the
    /// message has been handed to this node's recipients and sent towards the others;
    /// an error says it may not have reached every node.
    fn route(&self, envelope: Envelope) -> Routing;
}

/// A snapshot of the counters of a broker's link to the other nodes (see
/// [`Broker::link_stats`]). Counts are since the broker was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Whether the link is up now.
    pub connected: bool,
    /// Messages handed to the link for the other nodes.
    pub sent: u64,
    /// Messages received from the other nodes and handed to this node's delivery.
    pub received: u64,
    /// Messages received more than once (overlapping subscriptions) and delivered once.
    pub duplicates: u64,
    /// Messages for the other nodes that the link could not carry (it was down, or its
    /// queue was full): they reached this node's recipients only.
    pub dropped: u64,
    /// Messages received that named no valid destination (a foreign publisher's).
    pub rejected: u64,
    /// Times the link came back after being lost.
    pub reconnects: u64,
    /// Times the NATS client dropped messages for this node because a subscription's
    /// buffer was full (a slow consumer): messages from other nodes that never arrived.
    pub slow_consumer: u64,
}

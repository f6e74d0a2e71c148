//! How the client moves Bayeux messages: the boundary between the client core and a
//! transport, the long-polling transport, and the HTTP pieces shared with the load tool.
//!
//! The boundary is message-oriented, not request/response: a transport is told to
//! *send these messages*, and hands *everything it receives* (replies and deliveries,
//! whenever they come) to the client's inbound path. The client core correlates
//! replies with requests by message `id`. Long-polling fits by feeding each HTTP
//! response into that path before its send completes; a WebSocket transport would write
//! frames on send and feed frames from a reader task, deliveries arriving at any time.
//!
//! Public here: [`HttpPool`] and [`CookieJar`], the one implementation of POSTing a
//! Bayeux batch and keeping the session's cookies, also used by `bayeux bench`.

mod http_pool;
pub(crate) mod long_polling;

use std::sync::Weak;

use ::http::{HeaderMap, Uri};
use futures::future::BoxFuture;

use super::{Error, Shared};
use crate::protocol::Message;
pub use http_pool::{CookieJar, HttpPool, MAX_RESPONSE};

/// What a batch is for. Long-polling keeps long polls on a connection pool of their
/// own, so that they never queue behind, or in front of, publishes and subscribes; a
/// transport with a single connection ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// `/meta/connect`: may be held open by the server for its `timeout`.
    LongPoll,
    /// Everything else: handshakes, subscribes, publishes, disconnects.
    Requests,
}

/// What a completed send tells the core about the replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Every reply to the sent messages that will ever come was already handed to the
    /// [`Inbound`] path (long-polling: the HTTP response is the answer). A missing reply
    /// is a protocol error.
    Answered,
    /// The messages are on their way; replies will come through [`Inbound`] later
    /// (a WebSocket).
    #[cfg_attr(not(test), allow(dead_code))]
    Later,
}

/// A way of carrying Bayeux messages to the server and back.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The Bayeux connection type, sent in handshakes and connects (`long-polling`).
    fn name(&self) -> &'static str;

    /// Sends `messages` as one batch. Everything received because of it goes to the
    /// [`Inbound`] the transport was made with. Dropping the future abandons the send
    /// (long-polling: the HTTP request is dropped, so the server sees the poll go away).
    fn send(&self, lane: Lane, messages: Vec<Message>) -> BoxFuture<'_, Result<Sent, Error>>;
}

/// Where a transport hands every message it receives, in the order received. Replies are
/// matched with pending requests by `id`; the rest is delivered to subscriptions.
#[derive(Clone)]
pub(crate) struct Inbound(pub(crate) Weak<Shared>);

impl Inbound {
    /// Takes one received batch: runs the incoming extensions, delivers the messages to
    /// the subscriptions, then completes the pending requests its replies answer (so a
    /// reply is seen only after the whole batch was dispatched).
    pub fn receive(&self, messages: Vec<Message>) {
        if let Some(shared) = self.0.upgrade() {
            shared.receive(messages);
        }
    }
}

/// What every transport is made from.
#[derive(Clone, Debug)]
pub(crate) struct TransportConfig {
    /// The Bayeux endpoint.
    pub url: Uri,
    /// Headers added to every request (or to the WebSocket upgrade).
    pub headers: HeaderMap,
}

/// Makes the client's transport once the client's shared state exists.
pub(crate) type MakeTransport =
    Box<dyn FnOnce(TransportConfig, Inbound) -> Box<dyn Transport> + Send + Sync>;

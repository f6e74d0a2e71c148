//! How the client moves Bayeux messages: the boundary between the client core and a
//! transport, the long-polling and WebSocket transports, the choice between them, and the
//! HTTP pieces shared with the load tool.
//!
//! The boundary is message-oriented, not request/response: a transport is told to
//! *send these messages*, and hands *everything it receives* (replies and deliveries,
//! whenever they come) to the client's inbound path. The client core correlates
//! replies with requests by message `id`. Long-polling fits by feeding each HTTP
//! response into that path before its send completes (`Sent::Answered`); the
//! WebSocket transport writes a frame on send and feeds frames from a reader task,
//! deliveries arriving at any time, and says which socket carries the replies
//! (`Sent::Later`) so that its requests fail as soon as that socket closes.
//!
//! `Transports` holds the transport in use and the one to fall back to (long-polling
//! after WebSocket, as CometD's JavaScript client does).
//!
//! Public here: [`HttpPool`] and [`CookieJar`], the one implementation of POSTing a
//! Bayeux batch and keeping the session's cookies, also used by `bayeux bench` (over
//! plain TCP, or rustls with `TlsHttpConnector`, feature `tls`).

mod http_pool;
pub(crate) mod long_polling;
#[cfg(feature = "websocket")]
pub(crate) mod websocket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use ::http::{HeaderMap, Uri};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Error, Shared};
use crate::protocol::Message;
use crate::protocol::message::encode_array;
#[cfg(feature = "tls")]
pub use http_pool::TlsHttpConnector;
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
#[derive(Clone, Debug)]
pub(crate) enum Sent {
    /// Every reply to the sent messages that will ever come was already handed to the
    /// [`Inbound`] path (long-polling: the HTTP response is the answer). A missing reply
    /// is a protocol error.
    Answered,
    /// The messages are on their way over `Link`; replies will come through [`Inbound`]
    /// later (a WebSocket). When the link closes first, they never will.
    #[cfg_attr(not(any(test, feature = "websocket")), allow(dead_code))]
    Later(Arc<Link>),
}

/// One connection that carries replies after the send completed (a socket). Whoever
/// sees it end closes it, with the reason: the requests still waiting on it then fail at
/// once, and the transport opens a new connection for the next send. The core also
/// closes it when a reply does not come in time, as CometD does: a socket that lost a
/// reply is not trusted with the next ones.
#[derive(Debug)]
pub(crate) struct Link {
    /// Why the link closed, once it did.
    closed: watch::Sender<Option<Arc<str>>>,
}

#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
impl Link {
    pub fn new() -> Arc<Link> {
        Arc::new(Link {
            closed: watch::Sender::new(None),
        })
    }

    /// Closes the link; the first reason given is kept.
    pub fn close(&self, why: impl Into<Arc<str>>) {
        let why = why.into();
        self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(why);
            true
        });
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Waits until the link closes; returns why.
    pub async fn closed(&self) -> Arc<str> {
        let mut rx = self.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_else(|| "closed".into()),
            // The sender is `self`: it cannot be gone while borrowed.
            Err(_) => "closed".into(),
        }
    }
}

/// A way of carrying Bayeux messages to the server and back.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The Bayeux connection type, sent in handshakes and connects (`long-polling`).
    fn name(&self) -> &'static str;

    /// Sends `messages` as one batch. Everything received because of it goes to the
    /// [`Inbound`] the transport was made with. Dropping the future abandons the send
    /// (long-polling: the HTTP request is dropped, so the server sees the poll go away).
    fn send(&self, lane: Lane, messages: Vec<Message>) -> BoxFuture<'_, Result<Sent, Error>>;

    /// Lets go of the transport's connections for good (the client stopped, or fell back
    /// to another transport). Must not wait: it is called from `Drop`.
    fn close(&self) {}
}

/// One batch as a JSON array.
pub(crate) fn encode(messages: &[Message]) -> Bytes {
    let encoded: Vec<Bytes> = messages.iter().map(Message::to_bytes).collect();
    let size = encoded.iter().map(|b| b.len() + 1).sum();
    encode_array(encoded.iter().map(|b| &b[..]), size)
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
    /// The session's cookies, shared by the client's transports: a client that falls
    /// back to long-polling keeps the `BAYEUX_BROWSER` cookie its socket was given.
    pub cookies: Arc<CookieJar>,
}

/// Makes the client's transport once the client's shared state exists.
pub(crate) type MakeTransport =
    Box<dyn FnOnce(TransportConfig, Inbound) -> Box<dyn Transport> + Send + Sync>;

/// The transport in use and, until it is used, the one to fall back to.
pub(crate) struct Transports {
    primary: Box<dyn Transport>,
    /// Long-polling behind WebSocket, with [`TransportChoice::Auto`](super::TransportChoice).
    fallback: Option<Box<dyn Transport>>,
    /// Set for good once the fallback is in use.
    fell_back: AtomicBool,
    /// The name of the transport in use, for [`Client::transport_changes`](super::Client::transport_changes).
    name: watch::Sender<&'static str>,
}

impl Transports {
    pub fn new(primary: Box<dyn Transport>, fallback: Option<Box<dyn Transport>>) -> Self {
        let name = watch::Sender::new(primary.name());
        Transports {
            primary,
            fallback,
            fell_back: AtomicBool::new(false),
            name,
        }
    }

    /// The transport in use.
    pub fn current(&self) -> &dyn Transport {
        match &self.fallback {
            Some(f) if self.fell_back.load(Ordering::Acquire) => &**f,
            _ => &*self.primary,
        }
    }

    /// The name of the transport in use (the Bayeux connection type).
    pub fn name(&self) -> &'static str {
        self.current().name()
    }

    /// The transport to fall back to, while the primary one is in use.
    pub fn fallback(&self) -> Option<&dyn Transport> {
        match &self.fallback {
            Some(f) if !self.fell_back.load(Ordering::Acquire) => Some(&**f),
            _ => None,
        }
    }

    /// Switches to the fallback for good and closes the primary transport. Returns
    /// whether it switched now.
    pub fn fall_back(&self) -> bool {
        if self.fallback.is_none() || self.fell_back.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.primary.close();
        self.name.send_replace(self.name());
        true
    }

    /// The connection types a handshake offers: the one in use, then the fallback.
    pub fn offered(&self) -> Vec<String> {
        let mut types = vec![self.name().to_string()];
        if let Some(f) = self.fallback() {
            types.push(f.name().to_string());
        }
        types
    }

    /// A watch of the name of the transport in use.
    pub fn watch(&self) -> watch::Receiver<&'static str> {
        self.name.subscribe()
    }

    /// Closes every transport (the client stopped).
    pub fn close(&self) {
        self.primary.close();
        if let Some(f) = &self.fallback {
            f.close();
        }
    }
}

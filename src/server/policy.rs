//! Hooks an embedding service plugs in: who may do what ([`SecurityPolicy`]) and how
//! messages are rewritten on the way in and out ([`Extension`]).

use std::future::Future;
use std::pin::Pin;

use http::HeaderMap;

use super::limits::ClientKey;
use crate::protocol::{ChannelName, Message};

/// The future a policy's handshake check returns: boxed, so that a policy can be a
/// trait object, and `Send`, since it runs on the server's tasks.
pub type PolicyFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server knows about a session when it asks a policy or an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's `clientId`.
    pub client_id: String,
    /// The user the policy established at handshake, if any.
    pub user: Option<String>,
}

/// The context of a handshake, for a policy deciding whether to accept it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct HandshakeRequest<'a> {
    /// The `/meta/handshake` message (its `ext` often carries credentials).
    pub message: &'a Message,
    /// The HTTP request headers (for `Authorization` or cookies); empty in-process.
    pub headers: &'a HeaderMap,
    /// The client the request came from (its address, or its IPv6 /64), when the
    /// server knows it (see [`ClientAddr`](super::ClientAddr)): for a policy that
    /// throttles guesses per client as well as per user.
    pub client: Option<ClientKey>,
}

impl<'a> HandshakeRequest<'a> {
    /// A handshake request, for calling a policy directly (in a test, or from a
    /// policy that wraps another).
    pub fn new(message: &'a Message, headers: &'a HeaderMap, client: Option<ClientKey>) -> Self {
        HandshakeRequest {
            message,
            headers,
            client,
        }
    }
}

/// A policy's answer to a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeDecision {
    /// Open the session, bound to this user (or anonymous).
    Accept {
        /// The authenticated user, if any; later decisions see it in [`SessionInfo`].
        user: Option<String>,
    },
    /// Refuse with `403` and this reason; the client is told not to retry. Counted
    /// as a failed attempt of the client's address (see
    /// [`ServerConfig::max_auth_failures_per_address`](super::ServerConfig::max_auth_failures_per_address)).
    Deny(String),
    /// Refuse for now with `503` and this reason (the checks are overloaded): the
    /// client is advised to handshake again after `interval` + 1 s. Not counted as a
    /// failed attempt.
    Busy(String),
}

/// A policy's answer to a subscribe or publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse with `403` (the reason is logged by the caller, not sent).
    Deny,
}

/// Decides handshakes, subscriptions and publishes. Applied on every path: remote
/// clients over HTTP and the in-process API (where `session` is `None`).
///
/// The handshake check is asynchronous: it is where credentials are checked, which may
/// mean a database, an identity provider or a slow password hash. Await such work
/// (or run CPU-heavy work with `tokio::task::spawn_blocking`, bounded): the server's
/// I/O threads keep serving every other session meanwhile. Subscribe and publish
/// decisions are synchronous, since they run on every message: decide them from what
/// the handshake established ([`SessionInfo::user`]).
///
/// The default methods allow everything, as CometD does without a policy.
pub trait SecurityPolicy: Send + Sync + 'static {
    /// Whether to open a session, and for which user.
    ///
    /// ```
    /// use bayeux::server::{HandshakeDecision, HandshakeRequest, PolicyFuture, SecurityPolicy};
    ///
    /// /// Accepts a handshake whose `ext.token` is known to a (slow) token service.
    /// struct Tokens;
    ///
    /// impl SecurityPolicy for Tokens {
    ///     fn handshake<'a>(&'a self, request: HandshakeRequest<'a>) -> PolicyFuture<'a, HandshakeDecision> {
    ///         Box::pin(async move {
    ///             let token = request.message.ext.as_ref().and_then(|e| e.get("token"));
    ///             match token.and_then(|t| t.as_str()) {
    ///                 Some("s3cret") => HandshakeDecision::Accept { user: Some("agent1".into()) },
    ///                 _ => HandshakeDecision::Deny("invalid token".into()),
    ///             }
    ///         })
    ///     }
    /// }
    /// ```
    fn handshake<'a>(
        &'a self,
        request: HandshakeRequest<'a>,
    ) -> PolicyFuture<'a, HandshakeDecision> {
        let _ = request;
        Box::pin(std::future::ready(HandshakeDecision::Accept { user: None }))
    }

    /// Whether `session` (or the server itself, when `None`) may subscribe to `channel`.
    fn subscribe(&self, session: Option<&SessionInfo>, channel: &ChannelName) -> Decision {
        let _ = (session, channel);
        Decision::Allow
    }

    /// Whether `session` (or the server itself, when `None`) may publish `message`.
    fn publish(
        &self,
        session: Option<&SessionInfo>,
        channel: &ChannelName,
        message: &Message,
    ) -> Decision {
        let _ = (session, channel, message);
        Decision::Allow
    }
}

/// The policy that allows everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl SecurityPolicy for AllowAll {}

/// Sees messages as they enter and leave the server, CometD-style, mainly to read or
/// write their `ext` field.
///
/// Broadcast messages are encoded once for all their recipients, so `outgoing` sees a
/// broadcast once per publish (with `session` = `None`), not once per recipient; replies
/// to a session's own requests are seen once each, with that session.
pub trait Extension: Send + Sync + 'static {
    /// Called on every incoming message before it is handled. Return `false` to drop it:
    /// it is answered with `404::Message deleted`.
    fn incoming(&self, session: Option<&SessionInfo>, message: &mut Message) -> bool {
        let _ = (session, message);
        true
    }

    /// Called on every reply and broadcast before it is encoded.
    fn outgoing(&self, session: Option<&SessionInfo>, message: &mut Message) {
        let _ = (session, message);
    }
}

/// A shared policy is a policy, so one value can serve the Bayeux server and other
/// endpoints of the same application.
impl<P: SecurityPolicy> SecurityPolicy for std::sync::Arc<P> {
    fn handshake<'a>(
        &'a self,
        request: HandshakeRequest<'a>,
    ) -> PolicyFuture<'a, HandshakeDecision> {
        (**self).handshake(request)
    }

    fn subscribe(&self, session: Option<&SessionInfo>, channel: &ChannelName) -> Decision {
        (**self).subscribe(session, channel)
    }

    fn publish(
        &self,
        session: Option<&SessionInfo>,
        channel: &ChannelName,
        message: &Message,
    ) -> Decision {
        (**self).publish(session, channel, message)
    }
}

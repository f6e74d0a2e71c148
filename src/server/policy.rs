//! Hooks an embedding service plugs in: who may do what ([`SecurityPolicy`]) and how
//! messages are rewritten on the way in and out ([`Extension`]).

use http::HeaderMap;

use crate::protocol::{ChannelName, Message};

/// What the server knows about a session when it asks a policy or an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's `clientId`.
    pub client_id: String,
    /// The user the policy established at handshake, if any.
    pub user: Option<String>,
}

/// The context of a handshake, for a policy deciding whether to accept it.
#[derive(Debug)]
pub struct HandshakeRequest<'a> {
    /// The `/meta/handshake` message (its `ext` often carries credentials).
    pub message: &'a Message,
    /// The HTTP request headers (for `Authorization` or cookies); empty in-process.
    pub headers: &'a HeaderMap,
}

/// A policy's answer to a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeDecision {
    /// Open the session, bound to this user (or anonymous).
    Accept {
        /// The authenticated user, if any; later decisions see it in [`SessionInfo`].
        user: Option<String>,
    },
    /// Refuse with `403` and this reason; the client is told not to retry.
    Deny(String),
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
/// The default methods allow everything, as CometD does without a policy.
pub trait SecurityPolicy: Send + Sync + 'static {
    /// Whether to open a session, and for which user.
    fn handshake(&self, request: &HandshakeRequest<'_>) -> HandshakeDecision {
        let _ = request;
        HandshakeDecision::Accept { user: None }
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
    fn handshake(&self, request: &HandshakeRequest<'_>) -> HandshakeDecision {
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

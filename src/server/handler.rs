//! Handlers for each incoming message: the meta channels and publishes. Transport-free:
//! the HTTP layer hands a parsed [`Batch`] in and gets the response body out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::Inner;
use super::broker::Recipient;
use super::policy::{Decision, HandshakeDecision, HandshakeRequest, SessionInfo};
use super::session::{CloseReason, Session, SessionRef, new_client_id};
use crate::protocol::message::{InvalidMessage, encode_array};
use crate::protocol::{
    Advice, BAYEUX_VERSION, Batch, BayeuxError, ChannelName, ErrorCode, LONG_POLLING, META_CONNECT,
    META_DISCONNECT, META_HANDSHAKE, META_SUBSCRIBE, META_UNSUBSCRIBE, Message, Reconnect,
};

/// What the transport knows about the request, for the policy.
pub(crate) struct RequestContext<'a> {
    pub headers: &'a HeaderMap,
    /// The request's `BAYEUX_BROWSER` cookie, if it has one.
    pub browser: Option<&'a str>,
}

/// The response body, and a `BAYEUX_BROWSER` cookie to set when a handshake made one.
pub(crate) struct Processed {
    pub body: Bytes,
    pub set_browser: Option<String>,
}

/// A `/meta/connect` whose wait is deferred until the rest of its batch is handled, so
/// that a batch like `[subscribe, connect]` or `[connect, publish]` is not held up.
struct PendingConnect {
    slot: usize,
    request: Message,
    session: SessionRef,
}

/// Handles every message of a batch in order and returns the response body: the
/// messages delivered by a `/meta/connect` first (as CometD does), then the replies in
/// request order.
pub(crate) async fn process(
    inner: &Arc<Inner>,
    ctx: &RequestContext<'_>,
    batch: Batch,
) -> Processed {
    let mut replies: Vec<(Option<SessionInfo>, Message)> = Vec::with_capacity(batch.messages.len());
    let mut pending: Option<PendingConnect> = None;
    // A handshake without a browser cookie makes one; later messages of the same batch
    // belong to that browser.
    let mut set_browser: Option<String> = None;

    for item in batch.messages {
        let mut message = match item {
            Ok(m) => m,
            Err(invalid) => {
                replies.push((None, invalid_reply(invalid)));
                continue;
            }
        };
        let browser = set_browser.as_deref().or(ctx.browser);
        let session = message
            .client_id
            .as_deref()
            .and_then(|id| inner.session(id))
            // Bound to another browser: answered as if it did not exist.
            .filter(|s| !inner.config.bind_browser_cookie || s.browser() == browser);
        let info = session.as_ref().map(|s| s.info.clone());
        if !inner
            .extensions
            .iter()
            .all(|e| e.incoming(info.as_ref(), &mut message))
        {
            let err = BayeuxError::new(ErrorCode(404), &[], "Message deleted");
            replies.push((info, message.reply().fail(&err)));
            continue;
        }
        let Some(name) = message.channel.clone() else {
            replies.push((
                info,
                message
                    .reply()
                    .fail(&BayeuxError::bad_request("Channel missing")),
            ));
            continue;
        };
        let channel = match ChannelName::parse_bounded(&name, inner.config.max_channel_length) {
            Ok(c) if c.wildcard().is_none() => c,
            Ok(_) => {
                let err = BayeuxError::new(
                    ErrorCode::DENIED,
                    &[&name],
                    "Cannot publish to a wildcard channel",
                );
                replies.push((info, message.reply().fail(&err)));
                continue;
            }
            Err(e) => {
                replies.push((
                    info,
                    message
                        .reply()
                        .fail(&BayeuxError::invalid_channel(&name, e)),
                ));
                continue;
            }
        };

        if channel.as_str() == META_HANDSHAKE {
            if browser.is_none() {
                set_browser = Some(new_client_id());
            }
            let browser = set_browser.as_deref().or(ctx.browser);
            let (info, reply) = handshake(inner, ctx, browser, &message);
            replies.push((info, reply));
            continue;
        }
        let Some(session) = session else {
            replies.push((None, unknown_client(&message)));
            continue;
        };
        let reply = match channel.as_str() {
            META_CONNECT => {
                if let Some(earlier) = pending.take() {
                    // Two connects in one batch: the earlier one is answered at once.
                    replies[earlier.slot].1 = connect_reply(inner, &earlier.request, None);
                }
                pending = Some(PendingConnect {
                    slot: replies.len(),
                    request: message.clone(),
                    session: session.clone(),
                });
                message.reply()
            }
            META_SUBSCRIBE => subscribe(inner, &session, &message),
            META_UNSUBSCRIBE => unsubscribe(inner, &session, &message),
            META_DISCONNECT => {
                inner.remove_session(&session, CloseReason::Disconnected);
                message.reply().succeed()
            }
            _ if channel.is_meta() => {
                let err =
                    BayeuxError::new(ErrorCode::BAD_REQUEST, &[&name], "Unknown meta channel");
                message.reply().fail(&err)
            }
            _ => publish(inner, &session, &channel, message),
        };
        replies.push((Some(session.info.clone()), reply));
    }

    let mut delivered = Vec::new();
    if let Some(p) = pending {
        let (reply, messages) = connect(inner, &p.session, &p.request).await;
        replies[p.slot].1 = reply;
        delivered = messages;
    }

    let encoded: Vec<Bytes> = replies
        .into_iter()
        .map(|(info, mut reply)| {
            inner.outgoing(info.as_ref(), &mut reply);
            reply.to_bytes()
        })
        .collect();
    let size: usize = delivered.iter().chain(&encoded).map(|b| b.len() + 1).sum();
    Processed {
        body: encode_array(delivered.iter().chain(&encoded).map(|b| &b[..]), size),
        set_browser,
    }
}

fn invalid_reply(invalid: InvalidMessage) -> Message {
    Message {
        channel: invalid.channel,
        id: invalid.id,
        ..Message::default()
    }
    .fail(&invalid.error)
}

/// `402::Unknown client`, with advice to handshake again (as CometD answers).
fn unknown_client(request: &Message) -> Message {
    request
        .reply()
        .fail(&BayeuxError::unknown_client())
        .with_advice(Advice::handshake())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn retry_advice(inner: &Inner) -> Advice {
    Advice::retry(millis(inner.config.interval), millis(inner.config.timeout))
}

/// The major number of a version string such as `1.0` or `1.0beta`.
fn major(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

fn handshake(
    inner: &Arc<Inner>,
    ctx: &RequestContext<'_>,
    browser: Option<&str>,
    request: &Message,
) -> (Option<SessionInfo>, Message) {
    let mut reply = request.reply();
    reply.client_id = None;
    reply.version = Some(BAYEUX_VERSION.to_string());
    reply.supported_connection_types = Some(vec![LONG_POLLING.to_string()]);

    if inner.is_shutting_down() {
        let err = BayeuxError::new(ErrorCode(503), &[], "Server shutting down");
        return (None, reply.fail(&err).with_advice(Advice::none()));
    }
    if inner.session_count() >= inner.config.max_sessions {
        // Refused, with advice to try again later rather than to give up.
        let err = BayeuxError::limit("maxSessions", "Too many sessions");
        let advice = Advice {
            reconnect: Some(Reconnect::Handshake),
            interval: Some(millis(inner.config.interval) + 1_000),
            ..Advice::default()
        };
        return (None, reply.fail(&err).with_advice(advice));
    }
    // Version negotiation: the client's version, or failing that its minimum, must be 1.x.
    let version_ok = request.version.as_deref().and_then(major) == Some(1)
        || request
            .minimum_version
            .as_deref()
            .and_then(major)
            .is_some_and(|m| m <= 1)
        || (request.version.is_none() && request.minimum_version.is_none());
    if !version_ok {
        let err = BayeuxError::new(ErrorCode::UNSUPPORTED, &[], "Unsupported protocol version");
        return (None, reply.fail(&err).with_advice(Advice::none()));
    }
    // CometD accepts a handshake without supportedConnectionTypes; so do we. One that
    // lists types must include long-polling.
    if let Some(types) = &request.supported_connection_types
        && !types.iter().any(|t| t == LONG_POLLING)
    {
        let err = BayeuxError::new(ErrorCode::UNSUPPORTED, &[], "Unsupported connection types");
        return (None, reply.fail(&err).with_advice(Advice::none()));
    }
    let user = match inner.policy.handshake(&HandshakeRequest {
        message: request,
        headers: ctx.headers,
    }) {
        HandshakeDecision::Accept { user } => user,
        HandshakeDecision::Deny(reason) => {
            return (
                None,
                reply
                    .fail(&BayeuxError::handshake_denied(&reason))
                    .with_advice(Advice::none()),
            );
        }
    };
    let info = SessionInfo {
        client_id: new_client_id(),
        user,
    };
    let session = Arc::new(Session::new(
        info.clone(),
        inner.next_recipient_id(),
        inner.config.max_queue,
        inner.config.overflow,
        browser.map(str::to_string),
    ));
    // CometD's acknowledged-messages extension, when the client asks for it.
    let wants_ack =
        request.ext.as_ref().and_then(|e| e.get("ack")) == Some(&serde_json::Value::Bool(true));
    if wants_ack && inner.config.ack_extension {
        session.enable_ack();
        reply
            .ext
            .get_or_insert_with(Default::default)
            .insert("ack".into(), true.into());
    }
    inner.insert_session(session);
    reply.client_id = Some(info.client_id.clone());
    (Some(info), reply.succeed().with_advice(retry_advice(inner)))
}

/// The reply to a connect; `closed` says whether the session ended meanwhile.
fn connect_reply(inner: &Inner, request: &Message, closed: Option<CloseReason>) -> Message {
    let reply = request.reply();
    match closed {
        None => reply.succeed().with_advice(retry_advice(inner)),
        Some(CloseReason::Disconnected) => reply.succeed().with_advice(Advice::none()),
        // The server is going away; a restarted one will answer 402 and the client
        // will handshake again.
        Some(CloseReason::Shutdown) => reply.succeed().with_advice(Advice::retry(
            millis(inner.config.interval),
            millis(inner.config.timeout),
        )),
        Some(CloseReason::Overflow) => reply
            .fail(&BayeuxError::limit(
                "maxQueue",
                "Queue overflow: session closed",
            ))
            .with_advice(Advice::handshake()),
        Some(CloseReason::Expired) => reply
            .fail(&BayeuxError::unknown_client())
            .with_advice(Advice::handshake()),
    }
}

async fn connect(
    inner: &Arc<Inner>,
    session: &SessionRef,
    request: &Message,
) -> (Message, Vec<Bytes>) {
    if let Some(reason) = session.closed() {
        inner.remove_session(session, reason);
        return (connect_reply(inner, request, Some(reason)), Vec::new());
    }
    // As CometD does, a session's first connect is answered at once, to hand the client
    // its advice: clients such as aiocometd wait for that reply before going on. Later
    // connects wait up to `timeout`, or less if the client asks (CometD's JavaScript
    // client sends `timeout: 0` on its first connect).
    let mut timeout = if session.never_connected() {
        Duration::ZERO
    } else {
        inner.config.timeout
    };
    if let Some(t) = request.advice.as_ref().and_then(|a| a.timeout) {
        timeout = timeout.min(Duration::from_millis(u64::try_from(t).unwrap_or(0)));
    }
    let client_ack = request
        .ext
        .as_ref()
        .and_then(|e| e.get("ack"))
        .and_then(|a| a.as_u64());
    let drained = session.connect(timeout, client_ack).await;
    if let Some(reason) = drained.closed {
        inner.remove_session(session, reason);
    }
    let mut reply = connect_reply(inner, request, drained.closed);
    if let Some(batch) = drained.ack_batch {
        reply
            .ext
            .get_or_insert_with(Default::default)
            .insert("ack".into(), batch.into());
    }
    (reply, drained.messages)
}

/// Parses the `subscription` field into validated patterns, or the error reply's error.
fn subscription_channels(
    inner: &Inner,
    message: &Message,
) -> Result<Vec<ChannelName>, BayeuxError> {
    let Some(sub) = &message.subscription else {
        return Err(BayeuxError::bad_request("Subscription missing"));
    };
    let names = sub.channels();
    if names.is_empty() {
        return Err(BayeuxError::bad_request("Subscription missing"));
    }
    // Refuse an oversized list before looking at its entries.
    if names.len() > inner.config.max_subscriptions {
        return Err(BayeuxError::limit(
            "maxSubscriptions",
            format!("More than {} channels", inner.config.max_subscriptions),
        ));
    }
    names
        .iter()
        .map(|name| {
            let c = ChannelName::parse_bounded(name, inner.config.max_channel_length)
                .map_err(|e| BayeuxError::invalid_channel(name, e))?;
            if c.is_meta() {
                return Err(BayeuxError::subscribe_denied(name));
            }
            Ok(c)
        })
        .collect()
}

/// Echoes the request's `subscription` in the reply, as CometD does, unless the list is
/// over the limit (an oversized request is not copied back).
fn with_subscription(inner: &Inner, reply: Message, request: &Message) -> Message {
    let small = request
        .subscription
        .as_ref()
        .is_some_and(|s| s.channels().len() <= inner.config.max_subscriptions);
    Message {
        subscription: if small {
            request.subscription.clone()
        } else {
            None
        },
        ..reply
    }
}

fn subscribe(inner: &Arc<Inner>, session: &SessionRef, message: &Message) -> Message {
    let reply = with_subscription(inner, message.reply(), message);
    let channels = match subscription_channels(inner, message) {
        Ok(c) => c,
        Err(e) => return reply.fail(&e),
    };
    // All or nothing: check every channel before subscribing to any.
    for c in &channels {
        if inner.policy.subscribe(Some(&session.info), c) == Decision::Deny {
            return reply.fail(&BayeuxError::subscribe_denied(c.as_str()));
        }
    }
    let Some(added) = session.add_subscriptions(&channels, inner.config.max_subscriptions) else {
        return reply.fail(&BayeuxError::limit(
            "maxSubscriptions",
            format!("More than {} subscriptions", inner.config.max_subscriptions),
        ));
    };
    for c in added {
        // A session may subscribe to a service channel (CometD allows it), but service
        // messages are never broadcast, so only broadcast patterns enter the broker.
        if !c.is_service() {
            inner.broker.subscribe(&c, session.clone());
        }
    }
    reply.succeed()
}

fn unsubscribe(inner: &Arc<Inner>, session: &SessionRef, message: &Message) -> Message {
    let reply = with_subscription(inner, message.reply(), message);
    let channels = match subscription_channels(inner, message) {
        Ok(c) => c,
        Err(e) => return reply.fail(&e),
    };
    for c in channels {
        if session.remove_subscription(&c) && !c.is_service() {
            inner.broker.unsubscribe(&c, session.recipient_id());
        }
    }
    reply.succeed()
}

fn publish(
    inner: &Arc<Inner>,
    session: &SessionRef,
    channel: &ChannelName,
    message: Message,
) -> Message {
    let reply = message.reply();
    if message.data.is_none() {
        return reply.fail(&BayeuxError::bad_request("Data missing"));
    }
    if inner.policy.publish(Some(&session.info), channel, &message) == Decision::Deny {
        return reply.fail(&BayeuxError::publish_denied(channel.as_str()));
    }
    if channel.is_service() {
        // Only server-side listeners see service messages, with the sender's clientId
        // so that they can answer it.
        inner.services.publish(channel, &message.to_bytes());
    } else {
        // The clientId is the sender's session credential: never broadcast it.
        let mut outgoing = Message {
            client_id: None,
            ..message
        };
        inner.outgoing(None, &mut outgoing);
        inner.broker.publish(channel, &outgoing.to_bytes());
    }
    reply.succeed()
}

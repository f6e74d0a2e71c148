//! Handlers for each incoming message: the meta channels and publishes. Transport-free:
//! a transport hands a parsed [`Batch`] in and gets the replies out, with the batch's
//! `/meta/connect` left for the transport to complete in its own way (long-polling holds
//! it; a socket answers it as a heartbeat).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::Inner;
use super::broker::Destination;
use super::index::Recipient;
use super::limits::{ClientKey, Refusal};
use super::policy::{Decision, HandshakeDecision, HandshakeRequest, SessionInfo};
use super::registry::Insert;
use super::replay::JoinError;
use super::session::{CloseReason, Outbound, Session, SessionRef, SubscribeError, new_client_id};
use super::stats::HandshakeOutcome;
use super::transport::ConnectionType;
use crate::protocol::message::{InvalidMessage, encode_array};
use crate::protocol::{
    Advice, BAYEUX_VERSION, Batch, BayeuxError, ChannelName, ErrorCode, META_CONNECT,
    META_DISCONNECT, META_HANDSHAKE, META_SUBSCRIBE, META_UNSUBSCRIBE, Message, Reconnect,
    ReplayFrom,
};

/// What the transport knows about the request, for the policy.
pub(crate) struct RequestContext<'a> {
    pub headers: &'a HeaderMap,
    /// The request's `BAYEUX_BROWSER` cookie, if it has one.
    pub browser: Option<&'a str>,
    /// The transport the request came over (a handshake's session is counted under it
    /// until a connect attaches another).
    pub transport: ConnectionType,
    /// The client the request came from, when the server knows it: what the
    /// per-address budgets count.
    pub client: Option<ClientKey>,
}

/// A handled batch: its replies in request order, the `/meta/connect` the transport
/// must complete, and a `BAYEUX_BROWSER` cookie to set when a handshake made one.
pub(crate) struct Processed {
    replies: Vec<(Option<SessionInfo>, Message)>,
    pub connect: Option<HeldConnect>,
    pub set_browser: Option<String>,
    /// The transport the batch came over.
    pub transport: ConnectionType,
}

// Some of these serve the WebSocket transport only.
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
impl Processed {
    /// Removes the placeholder reply at `slot` (the held connect's), for a transport
    /// that answers the connect in a frame of its own.
    pub fn remove_reply(&mut self, slot: usize) {
        self.replies.remove(slot);
    }

    /// True when there is no reply to send.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Whether the batch had a successful message on `channel` (a disconnect, say).
    pub fn succeeded(&self, channel: &str) -> bool {
        self.replies
            .iter()
            .any(|(_, r)| r.channel_str() == channel && r.is_successful())
    }

    /// Replaces the placeholder reply at `slot` (the held connect's).
    pub fn set_reply(&mut self, slot: usize, reply: Message) {
        self.replies[slot].1 = reply;
    }

    /// Encodes the response: `delivered` first (as CometD does), then the replies in
    /// request order, each seen by the outgoing extensions.
    pub fn encode(self, inner: &Inner, delivered: Vec<Bytes>) -> Bytes {
        let encoded: Vec<Bytes> = self
            .replies
            .into_iter()
            .map(|(info, mut reply)| {
                inner.outgoing(info.as_ref(), &mut reply);
                reply.to_bytes()
            })
            .collect();
        let size: usize = delivered.iter().chain(&encoded).map(|b| b.len() + 1).sum();
        encode_array(delivered.iter().chain(&encoded).map(|b| &b[..]), size)
    }
}

/// A `/meta/connect` left for the transport, handled after the rest of its batch so
/// that a batch like `[subscribe, connect]` or `[connect, publish]` is not held up.
pub(crate) struct HeldConnect {
    /// Where its reply goes among the batch's replies.
    pub slot: usize,
    pub request: Message,
    pub session: SessionRef,
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
    let mut pending: Option<HeldConnect> = None;
    // A handshake without a browser cookie makes one; later messages of the same batch
    // belong to that browser.
    let mut set_browser: Option<String> = None;
    // One session per request at most: a batch of handshakes would multiply what one
    // request costs (sessions, password checks).
    let mut handshaken = false;

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
        let channel = match ChannelName::parse_bounded_with(
            &name,
            inner.config.max_channel_length,
            inner.config.channel_grammar,
        ) {
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
            if std::mem::replace(&mut handshaken, true) {
                inner.limits.refuse(
                    Refusal::HandshakesPerRequest,
                    ctx.client,
                    "a second /meta/handshake in one request",
                );
                let err = BayeuxError::limit("handshakesPerRequest", "One handshake per request");
                replies.push((None, handshake_reply(inner, &message).fail(&err)));
                continue;
            }
            if browser.is_none() {
                set_browser = Some(new_client_id());
            }
            let browser = set_browser.as_deref().or(ctx.browser);
            let (info, reply) = Box::pin(handshake(inner, ctx, browser, &message)).await;
            replies.push((info, reply));
            continue;
        }
        let Some(session) = session else {
            #[cfg(feature = "tracing")]
            tracing::debug!(
                client_id = message.client_id.as_deref().unwrap_or(""),
                channel = channel.as_str(),
                transport = %ctx.transport,
                "unknown client"
            );
            replies.push((None, unknown_client(&message)));
            continue;
        };
        let reply = match channel.as_str() {
            META_CONNECT => {
                if let Some(earlier) = pending.take() {
                    // Two connects in one batch: the earlier one is answered at once.
                    replies[earlier.slot].1 =
                        connect_reply(inner, &earlier.request, &Outbound::closed_or_empty(None));
                }
                pending = Some(HeldConnect {
                    slot: replies.len(),
                    request: message.clone(),
                    session: session.clone(),
                });
                message.reply()
            }
            META_SUBSCRIBE => {
                let reply = instrument(&session, subscribe(inner, &session, &message)).await;
                // A message published on another node after this reply must reach the
                // session: the broker's new interest is in force first.
                if reply.successful == Some(true) {
                    inner.broker.interest_settled().await;
                }
                reply
            }
            META_UNSUBSCRIBE => in_span(&session, || unsubscribe(inner, &session, &message)),
            META_DISCONNECT => in_span(&session, || {
                inner.remove_session(&session, CloseReason::Disconnected);
                message.reply().succeed()
            }),
            _ if channel.is_meta() => {
                let err =
                    BayeuxError::new(ErrorCode::BAD_REQUEST, &[&name], "Unknown meta channel");
                message.reply().fail(&err)
            }
            _ => instrument(&session, publish(inner, &session, &channel, message)).await,
        };
        replies.push((Some(session.info.clone()), reply));
    }

    Processed {
        replies,
        connect: pending,
        set_browser,
        transport: ctx.transport,
    }
}

/// A handshake refused for `maxSessions`, with advice to try again later rather than
/// to give up.
fn max_sessions_reached(inner: &Inner, ctx: &RequestContext<'_>, reply: Message) -> Message {
    refused(
        inner,
        ctx,
        HandshakeOutcome::MaxSessions,
        "maxSessions reached",
    );
    let err = BayeuxError::limit("maxSessions", "Too many sessions");
    reply.fail(&err).with_advice(handshake_later(inner))
}

/// Runs `f` in the session's span (feature `tracing`).
fn in_span<T>(session: &Session, f: impl FnOnce() -> T) -> T {
    #[cfg(feature = "tracing")]
    return session.span().in_scope(f);
    #[cfg(not(feature = "tracing"))]
    {
        let _ = session;
        f()
    }
}

/// `future`, run in the session's span (feature `tracing`).
#[cfg(feature = "tracing")]
fn instrument<F: std::future::Future>(
    session: &Session,
    future: F,
) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(future, session.span())
}

/// `future` itself (without the `tracing` feature).
#[cfg(not(feature = "tracing"))]
fn instrument<F: std::future::Future>(_session: &Session, future: F) -> F {
    future
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

/// The skeleton of every handshake reply: no `clientId` yet, the version and the
/// connection types this server offers (Faye's `cross-origin-long-polling` too where
/// CORS is on).
fn handshake_reply(inner: &Inner, request: &Message) -> Message {
    let mut reply = request.reply();
    reply.client_id = None;
    reply.version = Some(BAYEUX_VERSION.to_string());
    let mut types: Vec<String> = inner
        .connection_types
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    if !inner.config.cors_origins.is_empty() {
        let at = types
            .iter()
            .position(|t| t == crate::protocol::LONG_POLLING)
            .map_or(types.len(), |i| i + 1);
        types.insert(at, super::transport::CROSS_ORIGIN_LONG_POLLING.to_string());
    }
    reply.supported_connection_types = Some(types);
    reply
}

async fn handshake(
    inner: &Arc<Inner>,
    ctx: &RequestContext<'_>,
    browser: Option<&str>,
    request: &Message,
) -> (Option<SessionInfo>, Message) {
    let mut reply = handshake_reply(inner, request);

    if inner.is_shutting_down() {
        refused(
            inner,
            ctx,
            HandshakeOutcome::ShuttingDown,
            "server shutting down",
        );
        return (None, shutting_down(inner, reply));
    }
    if inner.session_count() >= inner.config.max_sessions {
        return (None, max_sessions_reached(inner, ctx, reply));
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
        refused(
            inner,
            ctx,
            HandshakeOutcome::Unsupported,
            "unsupported version",
        );
        let err = BayeuxError::new(ErrorCode::UNSUPPORTED, &[], "Unsupported protocol version");
        return (None, reply.fail(&err).with_advice(Advice::none()));
    }
    // CometD accepts a handshake without supportedConnectionTypes; so do we. One that
    // lists types must share one with this server's transports.
    if let Some(types) = &request.supported_connection_types
        && !types
            .iter()
            .filter_map(|t| ConnectionType::from_name(t))
            .any(|t| inner.connection_types.contains(&t))
    {
        refused(
            inner,
            ctx,
            HandshakeOutcome::Unsupported,
            "no supported connection type in common",
        );
        let err = BayeuxError::new(ErrorCode::UNSUPPORTED, &[], "Unsupported connection types");
        return (None, reply.fail(&err).with_advice(Advice::none()));
    }
    // The client's share of the sessions (a flood of handshakes that never connect
    // stops here, and each of those sessions expires after maxInterval), taken before
    // the policy runs: an address that may not open a session costs no credential check.
    let Some(slot) = inner.limits.open_session(ctx.client) else {
        refused(
            inner,
            ctx,
            HandshakeOutcome::AddressLimit,
            "maxSessionsPerAddress reached",
        );
        let err = BayeuxError::limit(
            "maxSessionsPerAddress",
            "Too many sessions from this address",
        );
        return (None, reply.fail(&err).with_advice(handshake_later(inner)));
    };
    // An address that keeps failing is refused before the policy runs: its guesses
    // cost it a round trip, not the server a password hash. Its checks under way count
    // as failures until they end, so a burst of guesses cannot all pass.
    let Some(attempt) = inner.limits.begin_auth(ctx.client) else {
        refused(
            inner,
            ctx,
            HandshakeOutcome::Denied,
            "too many failed handshakes",
        );
        return (
            None,
            reply
                .fail(&BayeuxError::handshake_denied("invalid credentials"))
                .with_advice(Advice::none()),
        );
    };
    let decision = inner
        .policy
        .handshake(HandshakeRequest::new(request, ctx.headers, ctx.client))
        .await;
    let user = match decision {
        HandshakeDecision::Accept { user } => {
            drop(attempt);
            user
        }
        HandshakeDecision::Deny(reason) => {
            attempt.failed();
            refused(inner, ctx, HandshakeOutcome::Denied, &reason);
            return (
                None,
                reply
                    .fail(&BayeuxError::handshake_denied(&reason))
                    .with_advice(Advice::none()),
            );
        }
        HandshakeDecision::Busy(reason) => {
            drop(attempt);
            refused(inner, ctx, HandshakeOutcome::Busy, &reason);
            let err = BayeuxError::new(ErrorCode(503), &[], &reason);
            return (None, reply.fail(&err).with_advice(handshake_later(inner)));
        }
    };

    let info = SessionInfo {
        client_id: inner.new_client_id(),
        user,
    };
    let session = Arc::new(Session::new(
        info.clone(),
        inner.next_recipient_id(),
        inner.queue_limits(),
        inner.stats.clone(),
        browser.map(str::to_string),
        ctx.transport,
    ));
    session.hold_address(slot);
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
    // Salesforce's replay extension, when the client asks and durable channels exist.
    if inner.replay.is_some() && crate::protocol::replay::handshake_asks(request.ext.as_ref()) {
        reply
            .ext
            .get_or_insert_with(Default::default)
            .insert(crate::protocol::replay::REPLAY_EXT.into(), true.into());
    }
    let ack = session.has_ack();
    match inner.insert_session(session) {
        Insert::Added => {}
        // Shut down between the check above and now.
        Insert::Closed => {
            refused(
                inner,
                ctx,
                HandshakeOutcome::ShuttingDown,
                "server shutting down",
            );
            return (None, shutting_down(inner, reply));
        }
        // Other handshakes took the last places since the check above.
        Insert::Full => return (None, max_sessions_reached(inner, ctx, reply)),
    }
    inner.stats.handshake(HandshakeOutcome::Accepted);
    inner
        .at_session_limit
        .store(false, std::sync::atomic::Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    tracing::debug!(
        client_id = %info.client_id,
        user = info.user.as_deref().unwrap_or(""),
        transport = %ctx.transport,
        ack,
        "session opened"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = ack;
    reply.client_id = Some(info.client_id.clone());
    (Some(info), reply.succeed().with_advice(retry_advice(inner)))
}

/// Counts a refused handshake and says why: the security policy's refusals (bad
/// credentials) and unsupported clients at `info`; the first refusal for `maxSessions`
/// at `warn` (then `debug` until a handshake succeeds again, so a flood of them is one
/// line); refusals during shutdown at `debug`.
fn refused(inner: &Inner, ctx: &RequestContext<'_>, outcome: HandshakeOutcome, reason: &str) {
    inner.stats.handshake(outcome);
    let first_at_limit = outcome == HandshakeOutcome::MaxSessions
        && !inner
            .at_session_limit
            .swap(true, std::sync::atomic::Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    {
        let transport = ctx.transport.as_str();
        let label = outcome.label();
        match outcome {
            HandshakeOutcome::MaxSessions if first_at_limit => tracing::warn!(
                outcome = label,
                reason,
                transport,
                max_sessions = inner.config.max_sessions,
                "handshake refused: the server holds maxSessions sessions (further refusals are logged at debug until one succeeds)"
            ),
            HandshakeOutcome::Denied | HandshakeOutcome::Unsupported => {
                tracing::info!(outcome = label, reason, transport, "handshake refused")
            }
            _ => tracing::debug!(outcome = label, reason, transport, "handshake refused"),
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (ctx, reason, first_at_limit);
}

/// The handshake refusal of a server that is shutting down: try again a little later,
/// since a restarted server (or another node) will take the session. Not
/// `reconnect: none`, which would stop a client for good.
fn shutting_down(inner: &Inner, reply: Message) -> Message {
    let err = BayeuxError::new(ErrorCode(503), &[], "Server shutting down");
    reply.fail(&err).with_advice(handshake_later(inner))
}

/// Advice to handshake again after `interval` + 1 s: for a refused handshake that may
/// succeed later (too many sessions, a server going away).
fn handshake_later(inner: &Inner) -> Advice {
    Advice {
        reconnect: Some(Reconnect::Handshake),
        interval: Some(millis(inner.config.interval) + 1_000),
        ..Advice::default()
    }
}

/// The reply to a connect that a transport completed with `outbound`: advice as the
/// session's state asks, and the ack batch number when acknowledgements are on.
pub(crate) fn connect_reply(inner: &Inner, request: &Message, outbound: &Outbound) -> Message {
    let reply = request.reply();
    let mut reply = match outbound.closed {
        None => reply.succeed().with_advice(retry_advice(inner)),
        Some(CloseReason::Disconnected) => reply.succeed().with_advice(Advice::none()),
        // The server is going away; a restarted one will answer 402 and the client
        // will handshake again.
        Some(CloseReason::Shutdown) => reply.succeed().with_advice(retry_advice(inner)),
        Some(CloseReason::Overflow) => reply
            .fail(&BayeuxError::limit(
                "maxQueue",
                "Queue overflow: session closed",
            ))
            .with_advice(Advice::handshake()),
        Some(CloseReason::Expired) => reply
            .fail(&BayeuxError::unknown_client())
            .with_advice(Advice::handshake()),
    };
    if let Some(batch) = outbound.ack_batch {
        reply
            .ext
            .get_or_insert_with(Default::default)
            .insert("ack".into(), batch.into());
    }
    reply
}

/// A connect reply turned into CometD's answer to a browser whose other session holds
/// its long poll already: `advice: {"multiple-clients": true, "reconnect": "retry",
/// "interval": multiSessionInterval}`, so the client polls at that pace instead of
/// holding a connection; with a zero `multiSessionInterval`, a failure with
/// `reconnect: none`, as CometD answers then.
pub(crate) fn multiple_clients(inner: &Inner, reply: Message) -> Message {
    let interval = inner.config.multi_session_interval;
    let (reply, mut advice) = if interval.is_zero() {
        let err = BayeuxError::new(
            ErrorCode(409),
            &["maxSessionsPerBrowser"],
            "Too many sessions in this browser",
        );
        (reply.fail(&err), Advice::none())
    } else {
        let advice = Advice {
            reconnect: Some(Reconnect::Retry),
            interval: Some(millis(interval)),
            ..Advice::default()
        };
        (reply, advice)
    };
    advice
        .other
        .insert("multiple-clients".into(), serde_json::Value::Bool(true));
    reply.with_advice(advice)
}

/// How long a connect may wait for messages. As CometD does, a session's first connect
/// is answered at once, to hand the client its advice: clients such as aiocometd wait
/// for that reply before going on. Later connects wait up to `timeout`, or less if the
/// client asks (CometD's JavaScript client sends `timeout: 0` on its first connect).
pub(crate) fn connect_timeout(inner: &Inner, session: &Session, request: &Message) -> Duration {
    let mut timeout = if session.never_attached() {
        Duration::ZERO
    } else {
        inner.config.timeout
    };
    if let Some(t) = request.advice.as_ref().and_then(|a| a.timeout) {
        timeout = timeout.min(Duration::from_millis(u64::try_from(t).unwrap_or(0)));
    }
    timeout
}

/// The batch number the client acknowledges in a connect's `ext.ack`.
pub(crate) fn client_ack(request: &Message) -> Option<u64> {
    request
        .ext
        .as_ref()
        .and_then(|e| e.get("ack"))
        .and_then(|a| a.as_u64())
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
            let c = ChannelName::parse_bounded_with(
                name,
                inner.config.max_channel_length,
                inner.config.channel_grammar,
            )
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

async fn subscribe(inner: &Arc<Inner>, session: &SessionRef, message: &Message) -> Message {
    let reply = with_subscription(inner, message.reply(), message);
    let channels = match subscription_channels(inner, message) {
        Ok(c) => c,
        Err(e) => {
            denied(session, "subscribe", "", &e.to_string());
            return reply.fail(&e);
        }
    };
    // All or nothing: check every channel before subscribing to any.
    for c in &channels {
        if inner.policy.subscribe(Some(&session.info), c) == Decision::Deny {
            denied(session, "subscribe", c.as_str(), "security policy");
            return reply.fail(&BayeuxError::subscribe_denied(c.as_str()));
        }
    }
    // A session may subscribe to a service channel (CometD allows it), but service
    // messages are never broadcast, so only broadcast patterns enter the index.
    let recipient: Arc<dyn Recipient> = session.clone();
    let add = || {
        session.subscribe(&channels, inner.config.max_subscriptions, |c| {
            if !c.is_service() {
                inner.subscribe_recipient(c, recipient.clone());
            }
        })
    };
    // Salesforce's replay extension: history first, then live, in one step.
    if let Some(replay) = &inner.replay {
        let names: Vec<&str> = channels.iter().map(ChannelName::as_str).collect();
        let froms = match crate::protocol::replay::subscribe_request(message.ext.as_ref(), &names) {
            Ok(froms) => froms,
            Err(e) => {
                denied(session, "subscribe", "", "malformed ext.replay");
                return reply.fail(&e.to_bayeux());
            }
        };
        // Without the extension, new messages only; but through the log all the
        // same, so that the session knows where each pattern joined it.
        let asked = froms.is_some();
        let froms = froms.unwrap_or_else(|| vec![ReplayFrom::New; channels.len()]);
        // A join's cost is bounded before the log is touched: a pattern named twice is
        // joined once, and the distinct patterns of one subscribe are capped.
        let mut seen = std::collections::HashSet::new();
        let requests: Vec<(ChannelName, ReplayFrom)> = channels
            .iter()
            .cloned()
            .zip(froms)
            .filter(|(c, _)| seen.insert(c.clone()))
            .collect();
        let cap = replay.max_patterns_per_subscribe();
        if requests.len() > cap {
            denied(session, "subscribe", "", "too many durable patterns");
            return reply.fail(&BayeuxError::limit(
                "maxReplayPatterns",
                format!("More than {cap} distinct channels in one replaying subscribe"),
            ));
        }
        return match replay.join(session, &requests, add).await {
            Ok(_) if !asked => reply.succeed(),
            Ok(joined) => {
                // Where the subscription joined the log, per channel: an addition to
                // Salesforce's format that lets a client resume exactly even when
                // it received nothing before losing its session.
                let positions: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .map(|n| (n.to_string(), joined.position.into()))
                    .collect();
                let mut reply = reply.succeed();
                reply
                    .ext
                    .get_or_insert_with(Default::default)
                    .insert(crate::protocol::replay::REPLAY_EXT.into(), positions.into());
                reply
            }
            Err(JoinError::Refused(e)) => {
                denied(session, "subscribe", "", "replayId not replayable");
                reply.fail(&e)
            }
            Err(JoinError::Subscribe(e)) => subscribe_failed(inner, session, reply, e),
        };
    }
    match add() {
        Ok(_) => reply.succeed(),
        Err(e) => subscribe_failed(inner, session, reply, e),
    }
}

/// The reply to a subscribe the session refused.
fn subscribe_failed(
    inner: &Inner,
    session: &Session,
    reply: Message,
    error: SubscribeError,
) -> Message {
    match error {
        // Ended while this request was on its way (disconnect, expiry, shutdown).
        SubscribeError::Closed => reply
            .fail(&BayeuxError::unknown_client())
            .with_advice(Advice::handshake()),
        SubscribeError::TooMany => {
            denied(session, "subscribe", "", "over maxSubscriptions");
            reply.fail(&BayeuxError::limit(
                "maxSubscriptions",
                format!("More than {} subscriptions", inner.config.max_subscriptions),
            ))
        }
    }
}

/// Says (at `info`) that a session's subscribe or publish was refused, and why: the
/// security policy, or a rule of the server (a `/meta` channel, `maxSubscriptions`...).
fn denied(session: &Session, action: &str, channel: &str, reason: &str) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        client_id = %session.info.client_id,
        user = session.info.user.as_deref().unwrap_or(""),
        transport = %session.transport(),
        action,
        channel,
        reason,
        "{action} denied"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (session, action, channel, reason);
}

fn unsubscribe(inner: &Arc<Inner>, session: &SessionRef, message: &Message) -> Message {
    let reply = with_subscription(inner, message.reply(), message);
    let channels = match subscription_channels(inner, message) {
        Ok(c) => c,
        Err(e) => return reply.fail(&e),
    };
    let id = session.recipient_id();
    for c in channels {
        session.unsubscribe(&c, |c| {
            if !c.is_service() {
                inner.unsubscribe_recipient(c, id);
            }
        });
    }
    reply.succeed()
}

async fn publish(
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
        denied(session, "publish", channel.as_str(), "security policy");
        return reply.fail(&BayeuxError::publish_denied(channel.as_str()));
    }
    // Ended while this request was on its way: its messages are not the client's any
    // more to send.
    if session.closed().is_some() {
        return reply
            .fail(&BayeuxError::unknown_client())
            .with_advice(Advice::handshake());
    }
    if channel.is_service() {
        // Only this node's server-side listeners see service messages, with the
        // sender's clientId so that they can answer it.
        inner.deliver_to_services(channel, &message.to_bytes());
        return reply.succeed();
    }
    // What subscribers receive: the message as published, less the fields that only
    // mean something between a client and the server. The clientId is the sender's
    // session credential; advice, successful or error in a broadcast could make other
    // clients reconnect, stop or believe a request failed.
    // The publisher's `id` goes too, as cometd-nodejs-server does: clients that match
    // replies by id alone (aiocometd over WebSocket) would take a broadcast for the
    // answer to a request of theirs with the same id.
    let outgoing = Message {
        client_id: None,
        id: None,
        advice: None,
        successful: None,
        error: None,
        subscription: None,
        version: None,
        minimum_version: None,
        supported_connection_types: None,
        connection_type: None,
        ..message
    };
    match inner
        .route(Destination::Subscribers, channel.clone(), outgoing)
        .await
    {
        Ok(_) => reply.succeed(),
        Err(e) => {
            // The cause is for the operator; the client hears that it failed.
            #[cfg(feature = "tracing")]
            tracing::warn!(channel = channel.as_str(), error = %e, "publish not routed");
            #[cfg(not(feature = "tracing"))]
            let _ = e;
            reply.fail(&BayeuxError::new(
                ErrorCode(500),
                &[channel.as_str()],
                "Publish failed",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The races between a request that looked its session up and a concurrent end of
    //! that session (disconnect, expiry, shutdown), played deterministically: the
    //! session is closed between the lookup and the handling.

    use serde_json::json;

    use super::*;
    use crate::server::{Server, ServerConfig};

    fn message(value: serde_json::Value) -> Message {
        Message::from_value(value).unwrap()
    }

    fn no_headers() -> HeaderMap {
        HeaderMap::new()
    }

    /// Opens a session through the handshake handler; returns it.
    fn open(inner: &Arc<Inner>, user: Option<&str>) -> SessionRef {
        let headers = no_headers();
        let ctx = RequestContext {
            headers: &headers,
            browser: None,
            transport: ConnectionType::LongPolling,
            client: None,
        };
        // The default policy answers at once: the handshake completes when polled.
        let (info, reply) = futures::executor::block_on(handshake(
            inner,
            &ctx,
            None,
            &message(json!({"channel": "/meta/handshake", "version": "1.0"})),
        ));
        assert!(reply.is_successful(), "{reply:?}");
        let session = inner.session(&info.unwrap().client_id).unwrap();
        if let Some(user) = user {
            // The policy would bind the user; this test binds it by hand.
            let bound = Arc::new(Session::new(
                SessionInfo {
                    client_id: new_client_id(),
                    user: Some(user.to_string()),
                },
                inner.next_recipient_id(),
                inner.queue_limits(),
                inner.stats.clone(),
                None,
                ConnectionType::LongPolling,
            ));
            inner.remove_session(&session, CloseReason::Disconnected);
            assert_eq!(inner.insert_session(bound.clone()), Insert::Added);
            return bound;
        }
        session
    }

    fn subscribe_message(session: &Session, channel: &str) -> Message {
        message(
            json!({"channel": "/meta/subscribe", "clientId": session.id(),
                       "subscription": channel}),
        )
    }

    fn is_unknown_client(reply: &Message) -> bool {
        !reply.is_successful()
            && reply.bayeux_error().is_some_and(|e| e.code == 402)
            && reply.advice.as_ref().and_then(|a| a.reconnect)
                == Some(crate::protocol::Reconnect::Handshake)
    }

    #[tokio::test]
    async fn a_subscribe_after_the_session_ended_is_refused_and_indexes_nothing() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        for reason in [
            CloseReason::Disconnected,
            CloseReason::Expired,
            CloseReason::Shutdown,
        ] {
            let session = open(&inner, None);
            inner.remove_session(&session, reason);
            let reply = subscribe(&inner, &session, &subscribe_message(&session, "/race")).await;
            assert!(is_unknown_client(&reply), "{reason:?}: {reply:?}");
            let receipt = server.publish("/race", json!(1)).await.unwrap();
            assert_eq!(receipt.local_recipients, 0, "{reason:?}");
            assert!(session.take().messages.is_empty());
        }
    }

    #[tokio::test]
    async fn a_subscribe_before_the_end_is_undone_by_it() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        let session = open(&inner, None);
        let reply = subscribe(&inner, &session, &subscribe_message(&session, "/a/**")).await;
        assert!(reply.is_successful());
        assert_eq!(
            server
                .publish("/a/b", json!(1))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        inner.remove_session(&session, CloseReason::Disconnected);
        assert_eq!(
            server
                .publish("/a/b", json!(2))
                .await
                .unwrap()
                .local_recipients,
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribes_racing_with_disconnects_never_leave_a_dead_session_indexed() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        for _ in 0..200 {
            let session = open(&inner, None);
            let (i, s) = (inner.clone(), session.clone());
            let subscriber = tokio::spawn(async move {
                for n in 0..5 {
                    subscribe(&i, &s, &subscribe_message(&s, &format!("/r/{n}"))).await;
                }
            });
            let (i, s) = (inner.clone(), session.clone());
            let closer = tokio::task::spawn_blocking(move || {
                i.remove_session(&s, CloseReason::Disconnected)
            });
            subscriber.await.unwrap();
            closer.await.unwrap();
        }
        for n in 0..5 {
            let receipt = server.publish(&format!("/r/{n}"), json!(n)).await.unwrap();
            assert_eq!(receipt.local_recipients, 0);
        }
    }

    #[tokio::test]
    async fn a_publish_after_the_session_ended_is_refused_and_sends_nothing() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        let mut watcher = server.subscribe("/news").unwrap();
        let session = open(&inner, None);
        inner.remove_session(&session, CloseReason::Disconnected);
        let channel = ChannelName::parse("/news").unwrap();
        let request = message(json!({"channel": "/news", "clientId": session.id(), "data": 1}));
        let reply = publish(&inner, &session, &channel, request).await;
        assert!(is_unknown_client(&reply), "{reply:?}");
        // The in-process listener got nothing: the next thing it sees is this marker.
        server.publish("/news", json!("marker")).await.unwrap();
        use futures::StreamExt;
        assert_eq!(watcher.next().await.unwrap().data, Some(json!("marker")));
    }

    #[tokio::test]
    async fn per_user_and_per_session_delivery_skip_an_ended_session() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        let session = open(&inner, Some("agent"));
        assert!(
            subscribe(&inner, &session, &subscribe_message(&session, "/v2/me/*"))
                .await
                .is_successful()
        );
        let to_user = server
            .deliver_to_user("agent", "/v2/me/emails", json!(1))
            .await;
        assert_eq!(to_user.unwrap().local_recipients, 1);
        inner.remove_session(&session, CloseReason::Expired);
        let to_user = server
            .deliver_to_user("agent", "/v2/me/emails", json!(2))
            .await;
        assert_eq!(to_user.unwrap().local_recipients, 0);
        let to_session = server.deliver(session.id(), "/direct", json!(3)).await;
        assert_eq!(to_session.unwrap().local_recipients, 0);
        // A delivery that looked the session up just before the end finds it closed.
        assert!(!session.deliver(&Bytes::from_static(b"{}")));
        assert!(session.take().messages.is_empty());
    }

    #[tokio::test]
    async fn the_ack_store_of_an_ended_session_is_freed() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        let session = open(&inner, None);
        session.enable_ack();
        assert!(
            subscribe(&inner, &session, &subscribe_message(&session, "/acked"))
                .await
                .is_successful()
        );
        server.publish("/acked", json!(1)).await.unwrap();
        assert_eq!(session.take().messages.len(), 1);
        // Unacknowledged now; the session ends before the client acknowledges.
        inner.remove_session(&session, CloseReason::Expired);
        assert!(
            !session.acknowledge(None),
            "nothing is kept for a dead session"
        );
        let out = session.take();
        assert!(out.messages.is_empty());
        assert_eq!(out.closed, Some(CloseReason::Expired));
    }

    #[tokio::test]
    async fn a_handshake_racing_with_shutdown_leaves_no_session() {
        let server = Server::new(ServerConfig::default());
        let inner = server.inner().clone();
        let late = Arc::new(Session::new(
            SessionInfo {
                client_id: new_client_id(),
                user: None,
            },
            inner.next_recipient_id(),
            inner.queue_limits(),
            inner.stats.clone(),
            None,
            ConnectionType::LongPolling,
        ));
        server.shutdown();
        // The handshake checked the flag before shutdown and inserts after it.
        assert_eq!(inner.insert_session(late), Insert::Closed);
        assert_eq!(server.session_count(), 0);
        // A handshake after shutdown is told to try again later, not to give up: a
        // restarted server will take it.
        let headers = no_headers();
        let ctx = RequestContext {
            headers: &headers,
            browser: None,
            transport: ConnectionType::LongPolling,
            client: None,
        };
        let (info, reply) = futures::executor::block_on(handshake(
            &inner,
            &ctx,
            None,
            &message(json!({"channel": "/meta/handshake", "version": "1.0"})),
        ));
        assert!(info.is_none() && !reply.is_successful());
        let advice = reply.advice.unwrap();
        assert_eq!(
            advice.reconnect,
            Some(crate::protocol::Reconnect::Handshake)
        );
        assert!(advice.interval.unwrap() >= 1_000);
    }

    fn replay_subscribe(session: &Session, channel: &str, from: i64) -> Message {
        message(
            json!({"channel": "/meta/subscribe", "clientId": session.id(),
                       "subscription": channel, "ext": {"replay": {channel: from}}}),
        )
    }

    /// The `n` of each message taken from the session, with its replay id.
    fn taken(session: &Session) -> Vec<(i64, i64)> {
        session
            .take()
            .messages
            .iter()
            .map(|b| {
                let m: serde_json::Value = serde_json::from_slice(b).unwrap();
                let id = crate::protocol::replay::replay_id_of(m.get("data")).unwrap();
                (m["data"]["n"].as_i64().unwrap(), id)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retention_is_measured_on_the_clock_and_refuses_what_it_dropped() {
        let replay = crate::server::ReplayConfig {
            retention: Duration::from_secs(10),
            ..crate::server::ReplayConfig::new(vec![ChannelName::parse("/r").unwrap()])
        };
        let server = Server::new(ServerConfig::default().with_replay(Some(replay)));
        let inner = server.inner().clone();
        let watcher = open(&inner, None);
        assert!(
            subscribe(&inner, &watcher, &subscribe_message(&watcher, "/r"))
                .await
                .is_successful()
        );
        server.publish("/r", json!({"n": 1})).await.unwrap();
        server.publish("/r", json!({"n": 2})).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        server.publish("/r", json!({"n": 3})).await.unwrap();
        let ids = taken(&watcher);
        assert_eq!(
            ids.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Ten seconds: all three are kept.
        tokio::time::advance(Duration::from_secs(4)).await;
        let s = open(&inner, None);
        let reply = subscribe(&inner, &s, &replay_subscribe(&s, "/r", -2)).await;
        assert!(reply.is_successful(), "{reply:?}");
        assert_eq!(taken(&s).len(), 3);
        // A second more: the first two are past the retention.
        tokio::time::advance(Duration::from_secs(1)).await;
        let s = open(&inner, None);
        let reply = subscribe(&inner, &s, &replay_subscribe(&s, "/r", ids[0].1)).await;
        let error = reply.bayeux_error().unwrap();
        assert!(
            crate::protocol::replay::is_invalid_replay_id(&error),
            "{error}"
        );
        assert!(error.message.contains("no longer retained"), "{error}");
        // After the last one dropped: nothing missed.
        let reply = subscribe(&inner, &s, &replay_subscribe(&s, "/r", ids[1].1)).await;
        assert!(reply.is_successful(), "{reply:?}");
        assert_eq!(taken(&s), vec![ids[2]]);
        // Everything retained is the third only.
        let s = open(&inner, None);
        assert!(
            subscribe(&inner, &s, &replay_subscribe(&s, "/r", -2))
                .await
                .is_successful()
        );
        assert_eq!(taken(&s), vec![ids[2]]);
    }

    #[tokio::test]
    async fn per_session_deliveries_are_never_durable_and_per_user_ones_are_per_user() {
        let all = vec![ChannelName::parse("/**").unwrap()];
        let server = Server::new(
            ServerConfig::default().with_replay(Some(crate::server::ReplayConfig::new(all))),
        );
        let inner = server.inner().clone();
        let agent = open(&inner, Some("agent1"));
        assert!(
            subscribe(&inner, &agent, &subscribe_message(&agent, "/v2/me/*"))
                .await
                .is_successful()
        );
        server
            .deliver(agent.id(), "/direct", json!({"n": 0}))
            .await
            .unwrap();
        let direct: serde_json::Value = serde_json::from_slice(&agent.take().messages[0]).unwrap();
        assert_eq!(direct["data"], json!({"n": 0}), "no replay id");
        server
            .deliver_to_user("agent1", "/v2/me/emails", json!({"n": 1}))
            .await
            .unwrap();
        server
            .deliver_to_user("agent2", "/v2/me/emails", json!({"n": 2}))
            .await
            .unwrap();
        server
            .publish("/v2/me/emails", json!({"n": 3}))
            .await
            .unwrap();
        assert_eq!(
            taken(&agent).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 3]
        );
        // Replaying everything: its own user's, the broadcast, never agent2's, nor the
        // per-session one.
        let again = open(&inner, Some("agent1"));
        assert!(
            subscribe(&inner, &again, &replay_subscribe(&again, "/**", -2))
                .await
                .is_successful()
        );
        assert_eq!(
            taken(&again).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let anonymous = open(&inner, None);
        assert!(
            subscribe(&inner, &anonymous, &replay_subscribe(&anonymous, "/**", -2))
                .await
                .is_successful()
        );
        assert_eq!(
            taken(&anonymous)
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[tokio::test]
    async fn a_history_the_queue_cannot_hold_is_refused_not_cut() {
        let server = Server::new(ServerConfig::default().with_max_queue(3).with_replay(Some(
            crate::server::ReplayConfig::new(vec![ChannelName::parse("/r").unwrap()]),
        )));
        let inner = server.inner().clone();
        let watcher = open(&inner, None);
        assert!(
            subscribe(&inner, &watcher, &subscribe_message(&watcher, "/r"))
                .await
                .is_successful()
        );
        for n in 0..5 {
            server.publish("/r", json!({"n": n})).await.unwrap();
            if n == 2 {
                // Keep the watcher's queue under its bound.
                let _ = watcher.take();
            }
        }
        let ids = taken(&watcher);
        let s = open(&inner, None);
        let reply = subscribe(&inner, &s, &replay_subscribe(&s, "/r", -2)).await;
        let error = reply.bayeux_error().unwrap();
        assert_eq!(error.code, 409, "{error}");
        assert!(
            error
                .message
                .starts_with("Replay of 5 messages does not fit"),
            "{error}"
        );
        // Nothing was subscribed.
        assert_eq!(
            server
                .publish("/r", json!({"n": 5}))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        let _ = watcher.take();
        // From a later id, it fits.
        let reply = subscribe(&inner, &s, &replay_subscribe(&s, "/r", ids[0].1)).await;
        assert!(reply.is_successful(), "{reply:?}");
        assert_eq!(
            taken(&s).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    /// Found by the fuzzer: a message that reached the session through one pattern
    /// (live or replayed) is not replayed again through another that matches it.
    #[tokio::test]
    async fn overlapping_patterns_replay_each_message_once() {
        let server = Server::new(ServerConfig::default().with_replay(Some(
            crate::server::ReplayConfig::new(vec![ChannelName::parse("/a/**").unwrap()]),
        )));
        let inner = server.inner().clone();
        server.publish("/a/b", json!({"n": 0})).await.unwrap();
        // Replayed through `/a/*`, then asked again through `/a/b`.
        let s = open(&inner, None);
        assert!(
            subscribe(&inner, &s, &replay_subscribe(&s, "/a/*", -2))
                .await
                .is_successful()
        );
        assert!(
            subscribe(&inner, &s, &replay_subscribe(&s, "/a/b", -2))
                .await
                .is_successful()
        );
        assert_eq!(
            taken(&s).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![0]
        );
        // Live through `/a/b` (plain), then `/a/**` from everything: only what `/a/b`
        // could not have delivered (the older message, and `/a/c`).
        let t = open(&inner, None);
        assert!(
            subscribe(&inner, &t, &subscribe_message(&t, "/a/b"))
                .await
                .is_successful()
        );
        server.publish("/a/b", json!({"n": 1})).await.unwrap();
        server.publish("/a/c", json!({"n": 2})).await.unwrap();
        assert_eq!(
            taken(&t).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(
            subscribe(&inner, &t, &replay_subscribe(&t, "/a/**", -2))
                .await
                .is_successful()
        );
        assert_eq!(
            taken(&t).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![0, 2]
        );
        // Both patterns deliver live from now on, once.
        server.publish("/a/b", json!({"n": 3})).await.unwrap();
        assert_eq!(
            taken(&t).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![3]
        );
    }
}

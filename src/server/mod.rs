//! The Bayeux server: sessions, subscriptions, delivery, and the HTTP transport.
//!
//! A [`Server`] holds the protocol state. It does not own a socket: mount
//! [`Server::service`] in your own hyper stack at any path, or call [`Server::listen`]
//! for a ready HTTP server. From Rust, [`Server::publish`], [`Server::subscribe`] and
//! [`Server::deliver`] work without HTTP.

mod broker;
mod config;
mod handler;
pub(crate) mod http;
mod local;
mod policy;
mod registry;
mod session;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use broker::{Broker, InMemoryBroker, Recipient, RecipientId};
pub use config::{OverflowPolicy, ServerConfig};
pub use http::{BayeuxService, HttpService, Listening, ResponseBody, serve};
pub use local::LocalSubscription;
pub use policy::{
    AllowAll, Decision, Extension, HandshakeDecision, HandshakeRequest, SecurityPolicy, SessionInfo,
};

use crate::protocol::{BayeuxError, ChannelName, Message};
use registry::Registry;
use session::{CloseReason, SessionRef};

/// State shared by every handle of one server.
pub(crate) struct Inner {
    pub config: ServerConfig,
    pub broker: Arc<dyn Broker>,
    /// Server-side listeners of `/service/**` channels; never reached by broadcasts.
    pub services: Arc<dyn Broker>,
    pub policy: Arc<dyn SecurityPolicy>,
    pub extensions: Vec<Arc<dyn Extension>>,
    sessions: Registry,
    next_recipient: AtomicU64,
    shutting_down: AtomicBool,
}

impl Inner {
    pub fn next_recipient_id(&self) -> RecipientId {
        self.next_recipient.fetch_add(1, Ordering::Relaxed)
    }

    pub fn session(&self, client_id: &str) -> Option<SessionRef> {
        self.sessions.get(client_id)
    }

    pub fn insert_session(&self, session: SessionRef) {
        self.sessions.insert(session);
    }

    /// Ends a session: out of the registry, out of the broker, pending connect woken.
    pub fn remove_session(&self, session: &SessionRef, reason: CloseReason) {
        self.sessions.remove(session);
        for pattern in session.close(reason) {
            if !pattern.is_service() {
                self.broker.unsubscribe(&pattern, session.recipient_id());
            }
        }
    }

    pub fn broker_for(&self, pattern: &ChannelName) -> &Arc<dyn Broker> {
        if pattern.is_service() {
            &self.services
        } else {
            &self.broker
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Runs every extension's `outgoing` hook on `message`.
    pub fn outgoing(&self, session: Option<&SessionInfo>, message: &mut Message) {
        for ext in &self.extensions {
            ext.outgoing(session, message);
        }
    }

    /// Removes sessions that have been idle for longer than `interval + maxInterval`
    /// (CometD's rule), and sessions closed by a queue overflow with no connect to see it.
    fn sweep(&self, now: Instant) -> usize {
        let limit = self.config.interval + self.config.max_interval;
        let stale = self.sessions.filter(|s| s.is_idle_longer_than(limit, now));
        for s in &stale {
            self.remove_session(s, CloseReason::Expired);
        }
        stale.len()
    }
}

/// A Bayeux server. Cheap to clone: clones share the same sessions and channels.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// Builds a [`Server`] with a configuration, a policy, extensions and a broker.
pub struct ServerBuilder {
    config: ServerConfig,
    broker: Option<Arc<dyn Broker>>,
    policy: Arc<dyn SecurityPolicy>,
    extensions: Vec<Arc<dyn Extension>>,
}

impl ServerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the security policy (default: [`AllowAll`]).
    pub fn policy(mut self, policy: impl SecurityPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Adds an extension; extensions run in the order they were added.
    pub fn extension(mut self, extension: impl Extension) -> Self {
        self.extensions.push(Arc::new(extension));
        self
    }

    /// Sets the broker that indexes subscriptions (default: [`InMemoryBroker`]).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Builds the server and starts its session-expiry task. Must be called inside a
    /// tokio runtime. The task stops when the last handle is dropped or on
    /// [`Server::shutdown`].
    pub fn build(self) -> Server {
        let inner = Arc::new(Inner {
            config: self.config,
            broker: self
                .broker
                .unwrap_or_else(|| Arc::new(InMemoryBroker::new())),
            services: Arc::new(InMemoryBroker::new()),
            policy: self.policy,
            extensions: self.extensions,
            sessions: Registry::default(),
            next_recipient: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        });
        tokio::spawn(expire_sessions(Arc::downgrade(&inner)));
        Server { inner }
    }
}

/// Periodically removes expired sessions; ends with the server.
async fn expire_sessions(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => {
            (i.config.max_interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
        }
        None => return,
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.is_shutting_down() {
            return;
        }
        let removed = inner.sweep(Instant::now());
        if removed > 0 && inner.session_count() == 0 {
            release_freed_memory();
        }
    }
}

/// Hands memory freed by expired sessions back to the operating system once the server
/// is idle, so a burst of sessions does not leave the process at its peak size (glibc
/// keeps freed memory otherwise).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it has no other effect.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Server {
    /// A builder with CometD's defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            broker: None,
            policy: Arc::new(AllowAll),
            extensions: Vec::new(),
        }
    }

    /// A server with this configuration and no policy or extensions.
    pub fn new(config: ServerConfig) -> Server {
        Server::builder().config(config).build()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The number of live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// The user bound to a session at handshake, if the session exists.
    pub fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        self.inner.session(client_id).map(|s| s.info.clone())
    }

    /// Whether the session has a `/meta/connect` waiting right now (CometD's
    /// `isConnected`), for monitoring; false when the session does not exist.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.inner
            .session(client_id)
            .is_some_and(|s| s.has_pending_connect())
    }

    /// Messages a session lost because its queue was full (see [`OverflowPolicy`]), or
    /// `None` when the session does not exist.
    pub fn dropped_messages(&self, client_id: &str) -> Option<u64> {
        self.inner.session(client_id).map(|s| s.dropped())
    }

    /// Publishes `data` on the broadcast channel `channel` from the server itself:
    /// encoded once, delivered to every matching subscriber. Returns how many recipients
    /// it reached. The security policy sees it with no session.
    pub fn publish(&self, channel: &str, data: Value) -> Result<usize, BayeuxError> {
        self.publish_message(Message::publish(channel, data))
    }

    /// Like [`Server::publish`] with a whole message (to set `id` or `ext`).
    pub fn publish_message(&self, mut message: Message) -> Result<usize, BayeuxError> {
        let name = message.channel_str().to_string();
        let channel =
            ChannelName::parse(&name).map_err(|e| BayeuxError::invalid_channel(&name, e))?;
        if channel.wildcard().is_some() || channel.is_meta() {
            return Err(BayeuxError::publish_denied(&name));
        }
        if self.inner.policy.publish(None, &channel, &message) == Decision::Deny {
            return Err(BayeuxError::publish_denied(&name));
        }
        message.client_id = None;
        self.inner.outgoing(None, &mut message);
        Ok(self
            .inner
            .broker_for(&channel)
            .publish(&channel, &message.to_bytes()))
    }

    /// Subscribes an in-process listener to `pattern` (wildcards allowed; `/service/**`
    /// patterns receive what clients send to those service channels).
    pub fn subscribe(&self, pattern: &str) -> Result<LocalSubscription, BayeuxError> {
        let channel =
            ChannelName::parse(pattern).map_err(|e| BayeuxError::invalid_channel(pattern, e))?;
        if channel.is_meta() {
            return Err(BayeuxError::subscribe_denied(pattern));
        }
        if self.inner.policy.subscribe(None, &channel) == Decision::Deny {
            return Err(BayeuxError::subscribe_denied(pattern));
        }
        Ok(LocalSubscription::register(
            self.inner.broker_for(&channel),
            channel,
            self.inner.next_recipient_id(),
            self.inner.config.max_queue,
        ))
    }

    /// Sends `data` on `channel` to one session only (CometD's `ServerSession.deliver`),
    /// whatever it subscribed to: the way to answer a service request. Returns
    /// `Ok(false)` when the session does not exist; the channel must be a plain,
    /// non-meta name, and the security policy sees it as a server publish.
    pub fn deliver(
        &self,
        client_id: &str,
        channel: &str,
        data: Value,
    ) -> Result<bool, BayeuxError> {
        let name = self.outbound_channel(channel)?;
        let mut message = Message::publish(channel, data);
        if self.inner.policy.publish(None, &name, &message) == Decision::Deny {
            return Err(BayeuxError::publish_denied(channel));
        }
        let Some(session) = self.inner.session(client_id) else {
            return Ok(false);
        };
        self.inner.outgoing(Some(&session.info), &mut message);
        session.deliver(&message.to_bytes());
        Ok(true)
    }

    /// Validates a channel the server sends on: plain and not `/meta/**`.
    fn outbound_channel(&self, channel: &str) -> Result<ChannelName, BayeuxError> {
        let name = ChannelName::parse_bounded(channel, self.inner.config.max_channel_length)
            .map_err(|e| BayeuxError::invalid_channel(channel, e))?;
        if name.wildcard().is_some() || name.is_meta() {
            return Err(BayeuxError::publish_denied(channel));
        }
        Ok(name)
    }

    /// Sends `data` on `channel` to every session of `user` that is subscribed to a
    /// pattern matching `channel`, encoded once; returns how many sessions got it.
    ///
    /// This is per-user delivery: channels such as `/v2/me/emails` mean "the user of
    /// this session", so a message for one user must never go through the broadcast
    /// broker, where any subscriber of the channel would see it.
    pub fn deliver_to_user(
        &self,
        user: &str,
        channel: &str,
        data: Value,
    ) -> Result<usize, BayeuxError> {
        let name = self.outbound_channel(channel)?;
        let mut message = Message::publish(channel, data);
        if self.inner.policy.publish(None, &name, &message) == Decision::Deny {
            return Err(BayeuxError::publish_denied(channel));
        }
        let recipients: Vec<SessionRef> = self
            .inner
            .sessions
            .of_user(user)
            .into_iter()
            .filter(|s| s.is_subscribed_to(&name))
            .collect();
        if recipients.is_empty() {
            return Ok(0);
        }
        self.inner.outgoing(None, &mut message);
        let bytes = message.to_bytes();
        for s in &recipients {
            s.deliver(&bytes);
        }
        Ok(recipients.len())
    }

    /// Ends every session and answers every pending `/meta/connect` at once, so HTTP
    /// connections can close promptly. New handshakes are refused afterwards.
    pub fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        for s in &self.inner.sessions.all() {
            self.inner.remove_session(s, CloseReason::Shutdown);
        }
    }

    /// A hyper `Service` that answers Bayeux requests; mount it at any path.
    pub fn service(&self) -> BayeuxService {
        BayeuxService::new(self.clone())
    }
}

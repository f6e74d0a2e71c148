//! The Bayeux server: sessions, subscriptions, delivery, and the HTTP transport.
//!
//! A [`Server`] holds the protocol state. It does not own a socket: mount
//! [`Server::service`] in your own hyper stack at any path, or call [`Server::listen`]
//! for a ready HTTP server. From Rust, [`Server::publish`], [`Server::subscribe`] and
//! [`Server::deliver`] work without HTTP.

mod broker;
mod browsers;
mod config;
mod error;
mod handler;
pub(crate) mod http;
mod index;
pub(crate) mod limits;
pub(crate) mod linger;
mod local;
mod local_delivery;
#[cfg(feature = "metrics")]
pub mod metrics;
mod ops;
mod policy;
mod registry;
mod replay;
mod session;
mod stats;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tower")]
mod tower;
pub mod transport;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

pub use broker::{
    Broker, BrokerError, Destination, Envelope, InMemoryBroker, LinkStats, Receipt, Routing,
};
#[cfg(feature = "nats")]
pub use broker::{NatsBroker, NatsConfig, NatsError};
pub use config::{ConfigError, OverflowPolicy, ServerConfig};
pub use error::PublishError;
pub use http::{BayeuxService, HttpService, Listening, ResponseBody, serve, serve_with_config};
pub use index::{ChannelIndex, Recipient, RecipientId};
pub use limits::{ClientAddr, ClientKey};
pub use local::LocalSubscription;
pub use local_delivery::LocalDelivery;
#[cfg(feature = "metrics")]
pub use metrics::METRICS_CONTENT_TYPE;
pub use ops::{HEALTH_PATH, METRICS_PATH, OpsService, READY_PATH};
pub use policy::{
    AllowAll, Decision, Extension, HandshakeDecision, HandshakeRequest, PolicyFuture,
    SecurityPolicy, SessionInfo,
};
pub use replay::ReplayConfig;
pub use stats::{LimitStats, ServerStats};
#[cfg(feature = "tls")]
pub use tls::{ClientAuth, TlsConfig, TlsError};
pub use transport::ConnectionType;

use crate::protocol::{BayeuxError, ChannelName, Message};
use registry::Registry;
use session::{CloseReason, SessionRef};

/// State shared by every handle of one server.
pub(crate) struct Inner {
    pub config: ServerConfig,
    /// The routing boundary: every delivery to clients goes through it.
    pub broker: Arc<dyn Broker>,
    /// This node's broadcast subscriptions (sessions and in-process listeners).
    index: Arc<ChannelIndex>,
    /// Server-side listeners of `/service/**` channels: local to this node, never routed.
    services: ChannelIndex,
    /// The durable channels' log, when `ServerConfig::replay` is set.
    pub(crate) replay: Option<replay::Replay>,
    pub policy: Arc<dyn SecurityPolicy>,
    pub extensions: Vec<Arc<dyn Extension>>,
    /// The connection types offered at handshake: those of the transports this server runs.
    pub connection_types: Vec<ConnectionType>,
    sessions: Arc<Registry>,
    pub stats: Arc<stats::Stats>,
    /// The budgets per client address and in total.
    pub limits: Arc<limits::Limits>,
    /// The long polls held per browser (CometD's multiple-clients detection).
    pub browsers: Arc<browsers::Browsers>,
    next_recipient: AtomicU64,
    shutting_down: AtomicBool,
    /// Set by a handshake refused for `maxSessions`, cleared by one accepted: the
    /// warning is logged once per episode.
    pub at_session_limit: AtomicBool,
    /// Wakes the transports (open sockets) when the server shuts down.
    shutdown_signal: tokio::sync::Notify,
    /// Open sockets, so that shutdown can wait for them to say goodbye.
    sockets: std::sync::atomic::AtomicUsize,
    sockets_closed: tokio::sync::Notify,
    /// The server's Prometheus registry.
    #[cfg(feature = "metrics")]
    metrics: metrics::Metrics,
}

impl Inner {
    pub fn next_recipient_id(&self) -> RecipientId {
        self.next_recipient.fetch_add(1, Ordering::Relaxed)
    }

    /// A new `clientId`, starting with the broker's name for this node if it has one.
    pub fn new_client_id(&self) -> String {
        let id = session::new_client_id();
        match self.broker.node_id() {
            Some(node) => {
                let mut tagged = String::with_capacity(node.len() + id.len());
                tagged.push_str(node);
                tagged.push_str(&id);
                tagged
            }
            None => id,
        }
    }

    pub fn session(&self, client_id: &str) -> Option<SessionRef> {
        self.sessions.get(client_id)
    }

    /// Adds a session, unless the server is shutting down or holds `maxSessions`
    /// sessions already (nothing added then).
    pub fn insert_session(&self, session: SessionRef) -> registry::Insert {
        let counted = session.clone();
        let inserted = self.sessions.insert(session, self.config.max_sessions);
        if inserted == registry::Insert::Added {
            counted.count();
        }
        inserted
    }

    /// Ends a session: out of the registry, out of the index, its transport woken.
    /// The subscriptions are removed under the session's own lock, so a subscribe that
    /// raced with this cannot add one back.
    pub fn remove_session(&self, session: &SessionRef, reason: CloseReason) {
        if self.sessions.remove(session) {
            session.uncount();
            session.release_address();
            #[cfg(feature = "tracing")]
            if reason != CloseReason::Expired {
                tracing::debug!(
                    client_id = %session.info.client_id,
                    user = session.info.user.as_deref().unwrap_or(""),
                    transport = %session.transport(),
                    reason = reason.label(),
                    "session closed"
                );
            }
        }
        let id = session.recipient_id();
        session.close(reason, |pattern| self.unsubscribe_recipient(pattern, id));
    }

    /// Subscribes a recipient in the right index, telling the broker when this node
    /// gains interest in the pattern.
    pub fn subscribe_recipient(&self, pattern: &ChannelName, recipient: Arc<dyn Recipient>) {
        if pattern.is_service() {
            self.services.subscribe(pattern, recipient);
        } else {
            // Told under the index's lock, so the broker hears a pattern's first and last
            // recipient in the order they came and went.
            self.index.add_then(pattern, recipient, |change| {
                if change.boundary {
                    self.broker.interest(pattern, true);
                }
            });
        }
    }

    /// The reverse of [`Inner::subscribe_recipient`].
    pub fn unsubscribe_recipient(&self, pattern: &ChannelName, id: RecipientId) {
        if pattern.is_service() {
            self.services.unsubscribe(pattern, id);
        } else {
            self.index.remove_then(pattern, id, |change| {
                if change.boundary {
                    self.broker.interest(pattern, false);
                }
            });
        }
    }

    /// Hands a client's `/service/**` message to this node's server-side listeners.
    pub fn deliver_to_services(&self, channel: &ChannelName, message: &bytes::Bytes) -> usize {
        stats::add(&self.stats.published, 1);
        self.services.deliver(channel, message)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Counts an open socket until the guard is dropped.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub fn socket_opened(self: &Arc<Self>) -> SocketGuard {
        self.sockets.fetch_add(1, Ordering::AcqRel);
        SocketGuard(self.clone())
    }

    /// Waits until every socket has closed.
    pub async fn sockets_closed(&self) {
        notified_until(&self.sockets_closed, || {
            self.sockets.load(Ordering::Acquire) == 0
        })
        .await
    }

    /// Completes once the server is shutting down.
    pub async fn shut_down(&self) {
        notified_until(&self.shutdown_signal, || self.is_shutting_down()).await
    }

    /// The queue bounds of a new session.
    pub fn queue_limits(&self) -> session::QueueLimits {
        session::QueueLimits {
            max_messages: self.config.max_queue.max(1),
            max_bytes: self.config.max_queue_bytes,
            max_total_bytes: self.config.max_queued_bytes,
            overflow: self.config.overflow,
            busy_threshold: self.config.busy_threshold,
        }
    }

    /// Runs every extension's `outgoing` hook on `message`.
    pub fn outgoing(&self, session: Option<&SessionInfo>, message: &mut Message) {
        for ext in &self.extensions {
            ext.outgoing(session, message);
        }
    }

    /// Encodes `message` (outgoing extensions first) and routes it through the broker.
    pub async fn route(
        &self,
        destination: Destination,
        channel: ChannelName,
        mut message: Message,
    ) -> Result<Receipt, BrokerError> {
        self.outgoing(None, &mut message);
        stats::add(&self.stats.published, 1);
        if let Some(replay) = &self.replay
            && replay.is_durable(&channel, &destination)
        {
            // Durable: the replay log assigns the id, retains and routes.
            return replay
                .route(&*self.broker, destination, channel, message)
                .await;
        }
        let envelope = Envelope {
            channel,
            destination,
            message: message.to_bytes(),
        };
        self.broker.route(envelope).await
    }

    /// Removes sessions that have had no transport attached for longer than
    /// `interval + maxInterval` (CometD's rule).
    fn sweep(&self, now: tokio::time::Instant) -> usize {
        if let Some(replay) = &self.replay {
            replay.prune(now);
        }
        self.limits.prune(now);
        let limit = self.config.interval + self.config.max_interval;
        let stale = self.sessions.filter(|s| s.is_idle_longer_than(limit, now));
        for s in &stale {
            #[cfg(feature = "tracing")]
            tracing::info!(
                client_id = %s.info.client_id,
                user = s.info.user.as_deref().unwrap_or(""),
                transport = %s.transport(),
                max_interval_ms = self.config.max_interval.as_millis() as u64,
                "session expired: no connect within interval + maxInterval"
            );
            self.remove_session(s, CloseReason::Expired);
        }
        stale.len()
    }
}

/// Waits until `done` holds, re-checking it each time `notify` wakes its waiters
/// (`notify_waiters`). The waiter is registered before each check, so a wake-up between
/// the check and the wait is not lost.
pub(crate) async fn notified_until(notify: &tokio::sync::Notify, mut done: impl FnMut() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

/// Keeps an open socket counted (see [`Inner::socket_opened`]).
pub(crate) struct SocketGuard(Arc<Inner>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.0.sockets.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.sockets_closed.notify_waiters();
        }
    }
}

/// A Bayeux server. Cheap to clone: clones share the same sessions and channels.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("sessions", &self.session_count())
            .field("connection_types", &self.inner.connection_types)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`] with a configuration, a policy, extensions and a broker.
pub struct ServerBuilder {
    config: ServerConfig,
    broker: Option<Arc<dyn Broker>>,
    policy: Arc<dyn SecurityPolicy>,
    extensions: Vec<Arc<dyn Extension>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("extensions", &self.extensions.len())
            .finish_non_exhaustive()
    }
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

    /// Sets the broker that routes every delivery (default: a new [`InMemoryBroker`]).
    /// Servers that share a broker share their channels.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Builds the server, attaches it to its broker and starts its session-expiry task.
    /// Must be called inside a tokio runtime. The task stops when the last handle is
    /// dropped or on [`Server::shutdown`].
    ///
    /// Panics if [`ServerConfig::nats`] holds a setting that cannot work (see
    /// [`ServerBuilder::try_build`], which returns it as an error instead).
    pub fn build(self) -> Server {
        match self.try_build() {
            Ok(server) => server,
            Err(e) => panic!("cannot build the server: {e}"),
        }
    }

    /// Builds the server as [`ServerBuilder::build`] does, but returns a setting that
    /// cannot work ([`ServerConfig::validate`], a bad NATS URL, an unreadable
    /// credentials file) as an error.
    pub fn try_build(self) -> Result<Server, BrokerError> {
        self.config.validate().map_err(|e| {
            BrokerError::with_source(format!("invalid server configuration: {e}"), e)
        })?;
        #[cfg(feature = "nats")]
        let mut nats_link = None;
        #[cfg(feature = "nats")]
        let broker: Arc<dyn Broker> = match (self.broker, self.config.nats()) {
            (Some(broker), _) => broker,
            (None, Some(nats)) => {
                let broker = NatsBroker::connect(nats.clone())
                    .map_err(|e| BrokerError::with_source("cannot use NATS", e))?;
                // Durable channels then live in a JetStream stream on the same NATS.
                nats_link = Some(broker.link());
                Arc::new(broker)
            }
            (None, None) => Arc::new(InMemoryBroker::new()),
        };
        #[cfg(not(feature = "nats"))]
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(InMemoryBroker::new()));
        let index = Arc::new(ChannelIndex::new());
        let sessions = Arc::new(Registry::with_user_interest({
            let broker = broker.clone();
            Box::new(move |user: &str, interested: bool| broker.user_interest(user, interested))
        }));
        broker.attach(LocalDelivery::new(index.clone(), sessions.clone()));
        let replay = self.config.replay.clone().map(|config| {
            #[cfg(feature = "nats")]
            if let Some(link) = nats_link.take() {
                return replay::Replay::jetstream(config, link);
            }
            replay::Replay::in_memory(config)
        });
        let inner = Arc::new(Inner {
            connection_types: transport::offered(&self.config),
            limits: Arc::new(limits::Limits::new(&self.config)),
            config: self.config,
            broker,
            index,
            services: ChannelIndex::new(),
            replay,
            policy: self.policy,
            extensions: self.extensions,
            sessions,
            stats: Arc::default(),
            browsers: Arc::default(),
            next_recipient: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            at_session_limit: AtomicBool::new(false),
            shutdown_signal: tokio::sync::Notify::new(),
            sockets: std::sync::atomic::AtomicUsize::new(0),
            sockets_closed: tokio::sync::Notify::new(),
            #[cfg(feature = "metrics")]
            metrics: metrics::Metrics::new(),
        });
        #[cfg(feature = "metrics")]
        inner.metrics.attach(&inner);
        tokio::spawn(expire_sessions(Arc::downgrade(&inner)));
        Ok(Server { inner })
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
        inner.sweep(tokio::time::Instant::now());
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

    /// The connection types this server offers at handshake, in order of preference:
    /// those of the transports it runs.
    pub fn connection_types(&self) -> &[ConnectionType] {
        &self.inner.connection_types
    }

    /// The number of live sessions on this node.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// The user bound to a session at handshake, if the session exists on this node.
    pub fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        self.inner.session(client_id).map(|s| s.info.clone())
    }

    /// Whether a transport is attached to the session right now (a `/meta/connect`
    /// waiting: CometD's `isConnected`), for monitoring; false when the session does not
    /// exist on this node.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.inner
            .session(client_id)
            .is_some_and(|s| s.is_attached())
    }

    /// Whether the server takes new sessions: true until [`Server::shutdown`] (what
    /// `GET /ready` reports).
    pub fn is_ready(&self) -> bool {
        !self.inner.is_shutting_down()
    }

    /// Counters of what this node has done (sessions, handshakes, messages published,
    /// delivered and dropped, sessions ended by an overflow or expired), for monitoring;
    /// [`Server::metrics`] (feature `metrics`) has them all, in the Prometheus format.
    pub fn stats(&self) -> ServerStats {
        let mut stats = self.inner.stats.snapshot(self.session_count());
        stats.broker = self.inner.broker.link_stats();
        let limits = &self.inner.limits;
        stats.limits.connections_open = limits.open_connections();
        stats.limits.pending_websockets = limits.pending_websockets();
        stats.limits.body_bytes = limits.body_bytes();
        stats.limits.tracked_clients = limits.tracked_clients();
        stats.limits.refusals += limits.refusals().iter().sum::<u64>();
        stats
    }

    /// Messages a session lost because its queue was full (see [`OverflowPolicy`]), or
    /// `None` when the session does not exist on this node.
    pub fn dropped_messages(&self, client_id: &str) -> Option<u64> {
        self.inner.session(client_id).map(|s| s.dropped())
    }

    /// Publishes `data` on the broadcast channel `channel` from the server itself:
    /// encoded once and routed through the broker to every matching subscriber. The
    /// security policy sees it with no session. The receipt counts this node's
    /// recipients.
    pub async fn publish(&self, channel: &str, data: Value) -> Result<Receipt, PublishError> {
        self.publish_message(Message::publish(channel, data)).await
    }

    /// Like [`Server::publish`] with a whole message (to set `id` or `ext`).
    pub async fn publish_message(&self, mut message: Message) -> Result<Receipt, PublishError> {
        let name = message.channel_str().to_string();
        let channel = ChannelName::parse_with(&name, self.inner.config.channel_grammar)
            .map_err(|e| BayeuxError::invalid_channel(&name, e))?;
        if channel.wildcard().is_some() || channel.is_meta() {
            return Err(BayeuxError::publish_denied(&name).into());
        }
        if self.inner.policy.publish(None, &channel, &message) == Decision::Deny {
            return Err(BayeuxError::publish_denied(&name).into());
        }
        message.client_id = None;
        if channel.is_service() {
            // Service channels stay on this node, for its server-side listeners.
            self.inner.outgoing(None, &mut message);
            let bytes = message.to_bytes();
            return Ok(Receipt::local(
                self.inner.deliver_to_services(&channel, &bytes),
            ));
        }
        Ok(self
            .inner
            .route(Destination::Subscribers, channel, message)
            .await?)
    }

    /// Subscribes an in-process listener to `pattern` (wildcards allowed; `/service/**`
    /// patterns receive what clients send to those service channels on this node).
    pub fn subscribe(&self, pattern: &str) -> Result<LocalSubscription, BayeuxError> {
        let channel = ChannelName::parse_with(pattern, self.inner.config.channel_grammar)
            .map_err(|e| BayeuxError::invalid_channel(pattern, e))?;
        if channel.is_meta() {
            return Err(BayeuxError::subscribe_denied(pattern));
        }
        if self.inner.policy.subscribe(None, &channel) == Decision::Deny {
            return Err(BayeuxError::subscribe_denied(pattern));
        }
        Ok(LocalSubscription::register(
            &self.inner,
            channel,
            self.inner.next_recipient_id(),
            self.inner.config.max_queue,
        ))
    }

    /// Sends `data` on `channel` to one session only (CometD's `ServerSession.deliver`),
    /// whatever it subscribed to: the way to answer a service request. Routed through the
    /// broker, so it reaches the session on whichever node holds it; the receipt counts
    /// 1 when the session is on this node and queued it. The channel must be a plain,
    /// non-meta name, and the security policy sees it as a server publish.
    pub async fn deliver(
        &self,
        client_id: &str,
        channel: &str,
        data: Value,
    ) -> Result<Receipt, PublishError> {
        let (name, message) = self.outbound(channel, data)?;
        Ok(self
            .inner
            .route(Destination::Session(client_id.to_string()), name, message)
            .await?)
    }

    /// Sends `data` on `channel` to every session of `user` that is subscribed to a
    /// pattern matching `channel`, encoded once; the receipt counts this node's sessions
    /// that queued it.
    ///
    /// This is per-user delivery: channels such as `/v2/me/emails` mean "the user of
    /// this session", so a message for one user never goes to the channel's other
    /// subscribers.
    pub async fn deliver_to_user(
        &self,
        user: &str,
        channel: &str,
        data: Value,
    ) -> Result<Receipt, PublishError> {
        let (name, message) = self.outbound(channel, data)?;
        Ok(self
            .inner
            .route(Destination::User(user.to_string()), name, message)
            .await?)
    }

    /// Validates a channel the server sends on (plain, not `/meta/**`) and asks the
    /// policy, as for a server publish.
    fn outbound(&self, channel: &str, data: Value) -> Result<(ChannelName, Message), PublishError> {
        let name = ChannelName::parse_bounded_with(
            channel,
            self.inner.config.max_channel_length,
            self.inner.config.channel_grammar,
        )
        .map_err(|e| BayeuxError::invalid_channel(channel, e))?;
        if name.wildcard().is_some() || name.is_meta() {
            return Err(BayeuxError::publish_denied(channel).into());
        }
        let message = Message::publish(channel, data);
        if self.inner.policy.publish(None, &name, &message) == Decision::Deny {
            return Err(BayeuxError::publish_denied(channel).into());
        }
        Ok((name, message))
    }

    /// Ends every session and wakes every attached transport at once, so connections
    /// can close promptly. New handshakes are refused afterwards.
    pub fn shutdown(&self) {
        let first = !self.inner.shutting_down.swap(true, Ordering::AcqRel);
        self.inner.shutdown_signal.notify_waiters();
        let sessions = self.inner.sessions.close();
        #[cfg(feature = "tracing")]
        if first {
            tracing::info!(
                sessions = sessions.len(),
                "server shutting down: ending every session"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = first;
        for s in &sessions {
            self.inner.remove_session(s, CloseReason::Shutdown);
        }
    }

    /// A hyper `Service` that answers Bayeux requests; mount it at any path.
    pub fn service(&self) -> BayeuxService {
        BayeuxService::new(self.clone())
    }
}

//! The multi-node broker: server processes share their channels through NATS.
//!
//! Each node delivers what is published on it to its own recipients at once, and
//! publishes it once to NATS on the subject of its destination (see [`super::subject`]).
//! A node subscribes to NATS only for what its recipients want: one subscription per
//! broadcast pattern some local session or listener holds, one per user with a session
//! here, and one for the sessions it made. It hands what it receives to its local
//! delivery, which does not know NATS exists.
//!
//! The link never holds local traffic back: publishing to NATS goes through a queue and
//! a task of its own, and while NATS is down the messages for the other nodes are
//! dropped and counted (they reached this node's recipients). `async-nats` reconnects by
//! itself and re-subscribes every subscription when it does.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::connection::State;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::subject::{self, NODE_ID_LEN};
use super::{Broker, Destination, Envelope, LinkStats, LocalDelivery, Receipt, Routing};

/// The NATS header that names a message's origin node and its sequence number there,
/// `<node>:<seq>`: a node that receives one message through two overlapping
/// subscriptions delivers it once.
const ORIGIN_HEADER: &str = "Bayeux-Origin";

/// How a server reaches NATS. Build one with [`NatsConfig::new`] and adjust the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The NATS servers to connect to (`nats://host:4222`, `tls://host:4222`); the
    /// client fails over between them and learns the rest of a cluster from them.
    pub servers: Vec<String>,
    /// The first token of every subject this server uses, so that applications can
    /// share one NATS (default `bayeux`).
    pub subject_prefix: String,
    /// A NATS credentials file (a user JWT and its NKey seed), as `nsc` writes it.
    pub credentials_file: Option<PathBuf>,
    /// A PEM file of CAs to trust for a NATS server's TLS certificate (besides the
    /// platform's roots).
    pub ca_certificate: Option<PathBuf>,
    /// A client certificate and its key (PEM files), for a NATS that verifies clients.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Insists on TLS even if the server does not ask for it.
    pub require_tls: bool,
    /// The connection's name as NATS monitoring shows it.
    pub connection_name: Option<String>,
    /// Messages for the other nodes that may wait for the link; beyond, new ones are
    /// dropped (and counted) rather than let memory grow.
    pub max_pending: usize,
    /// The longest pause between two reconnection attempts.
    pub max_reconnect_delay: Duration,
}

impl NatsConfig {
    /// A configuration for the NATS at `server` (a URL such as `nats://127.0.0.1:4222`;
    /// several, separated by commas, for a cluster), with the defaults.
    pub fn new(server: impl AsRef<str>) -> Self {
        NatsConfig {
            servers: server
                .as_ref()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            subject_prefix: "bayeux".into(),
            credentials_file: None,
            ca_certificate: None,
            client_certificate: None,
            require_tls: false,
            connection_name: None,
            max_pending: 65_536,
            max_reconnect_delay: Duration::from_secs(2),
        }
    }
}

impl NatsConfig {
    /// Refuses a setting that cannot work (no or a bad URL, a bad subject prefix, a
    /// credentials or certificate file that cannot be read or parsed) without
    /// connecting: what [`NatsBroker::connect`] would refuse.
    pub fn check(&self) -> Result<(), NatsError> {
        self.options().map(|_| ())
    }

    /// The server addresses and the async-nats options this configuration means.
    fn options(
        &self,
    ) -> Result<(Vec<async_nats::ServerAddr>, async_nats::ConnectOptions), NatsError> {
        if self.servers.is_empty() {
            return Err(NatsError::new("no NATS server URL given"));
        }
        let mut addresses = Vec::with_capacity(self.servers.len());
        for url in &self.servers {
            let address: async_nats::ServerAddr = url
                .parse()
                .map_err(|e| NatsError::with_source(format!("bad NATS URL {url:?}"), e))?;
            addresses.push(address);
        }
        let prefix = self.subject_prefix.as_str();
        if prefix.is_empty()
            || prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace))
        {
            return Err(NatsError::new(format!(
                "bad NATS subject prefix {prefix:?}: dot-separated tokens without '*', '>' or whitespace"
            )));
        }
        let max_delay = self.max_reconnect_delay;
        let mut options = async_nats::ConnectOptions::new()
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .require_tls(self.require_tls)
            .reconnect_delay_callback(move |attempts| {
                let step = Duration::from_millis(50) * 2u32.saturating_pow(attempts.min(10) as u32);
                step.min(max_delay)
            });
        if let Some(path) = &self.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                NatsError::with_source(
                    format!("cannot read the NATS credentials file {}", path.display()),
                    e,
                )
            })?;
            options = options.credentials(&text).map_err(|e| {
                NatsError::with_source(format!("bad NATS credentials file {}", path.display()), e)
            })?;
        }
        if let Some(ca) = &self.ca_certificate {
            readable(ca, "NATS CA certificate")?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            readable(cert, "NATS client certificate")?;
            readable(key, "NATS client key")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok((addresses, options))
    }
}

/// Why a [`NatsBroker`] could not be made: a setting that cannot work (a bad URL or
/// subject prefix, an unreadable credentials file). An unreachable NATS is not an
/// error: the node serves local traffic and joins when NATS comes up.
#[derive(Debug)]
pub struct NatsError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl NatsError {
    fn new(message: impl Into<String>) -> Self {
        NatsError {
            message: message.into(),
            source: None,
        }
    }

    fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        NatsError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NatsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A [`Broker`] that shares channels, users and sessions between server processes
/// through NATS. Give the same `NatsConfig` (the same NATS and subject prefix) to every
/// node; each makes its own broker:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use bayeux::server::{NatsBroker, NatsConfig, Server};
/// let broker = NatsBroker::connect(NatsConfig::new("nats://127.0.0.1:4222"))?;
/// let server = Server::builder().broker(Arc::new(broker)).build();
/// # Ok(()) }
/// ```
pub struct NatsBroker {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    control: mpsc::UnboundedSender<Control>,
}

/// A NATS broker's link, for the JetStream replay log that shares it.
pub(crate) struct NatsLink {
    /// The client, `None` until the broker's connecting task made it.
    pub client: watch::Receiver<Option<async_nats::Client>>,
    /// Where messages for this node's recipients are handed.
    pub nodes: Arc<RwLock<Vec<LocalDelivery>>>,
    /// The subject prefix.
    pub prefix: String,
}

/// What the broker's tasks share with it.
struct Shared {
    prefix: String,
    node_id: String,
    servers: String,
    nodes: Arc<RwLock<Vec<LocalDelivery>>>,
    /// The client, once the connecting task made it (at once: it connects in the
    /// background).
    client: watch::Sender<Option<async_nats::Client>>,
    next_seq: AtomicU64,
    pending: AtomicUsize,
    max_pending: usize,
    dedupe: Mutex<Dedupe>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    ever_connected: AtomicBool,
    connected: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    dropped: AtomicU64,
    /// Dropped since the link went down: reported when it comes back.
    dropped_in_outage: AtomicU64,
    rejected: AtomicU64,
    reconnects: AtomicU64,
    slow_consumer: AtomicU64,
}

/// A message on its way to NATS. Its sequence number (the `Bayeux-Origin` header) is
/// given by the publishing task, in the order messages leave for NATS: given in
/// `route`, two threads routing at once could enqueue them in the other order, and the
/// receiving nodes' [`Dedupe`] would then drop the later-numbered one that arrived
/// second as a duplicate.
struct Outgoing {
    subject: String,
    payload: Bytes,
}

/// A change for the task that owns the NATS subscriptions.
enum Control {
    /// One more (or one less) local reason to receive `subject`.
    Interest(String, bool),
    /// Answer once every earlier change is in force at the NATS server.
    Settle(oneshot::Sender<()>),
}

impl NatsBroker {
    /// Makes the broker and starts connecting to NATS in the background; must be called
    /// inside a tokio runtime. Fails only on settings that cannot work; an unreachable
    /// NATS is retried (and said once in the log) while the node serves its own
    /// clients.
    pub fn connect(config: NatsConfig) -> Result<NatsBroker, NatsError> {
        let (addresses, mut options) = config.options()?;
        let shared = Arc::new(Shared {
            prefix: config.subject_prefix.clone(),
            node_id: new_node_id(),
            servers: config.servers.join(","),
            nodes: Arc::default(),
            client: watch::Sender::new(None),
            next_seq: AtomicU64::new(1),
            pending: AtomicUsize::new(0),
            max_pending: config.max_pending.max(1),
            dedupe: Mutex::new(Dedupe::default()),
            counters: Counters::default(),
        });
        options = options.name(
            config
                .connection_name
                .clone()
                .unwrap_or_else(|| format!("bayeux node {}", shared.node_id)),
        );
        let events = shared.clone();
        options = options.event_callback(move |event| {
            let shared = events.clone();
            async move { shared.on_event(event) }
        });

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        // The sessions this node makes: always wanted.
        let _ = control.send(Control::Interest(
            subject::node_subject(&shared.prefix, &shared.node_id),
            true,
        ));
        let task = shared.clone();
        tokio::spawn(async move {
            let client = match async_nats::connect_with_options(addresses, options).await {
                Ok(client) => client,
                Err(e) => {
                    #[cfg(feature = "tracing")]
                    tracing::error!(servers = %task.servers, error = %e, "cannot start the NATS client; this node stays alone");
                    let _ = e;
                    return;
                }
            };
            task.client.send_replace(Some(client.clone()));
            task.warn_if_unreachable();
            tokio::spawn(publish_loop(task.clone(), client.clone(), outgoing_rx));
            control_loop(task, client, control_rx).await;
        });

        Ok(NatsBroker {
            shared,
            outgoing,
            control,
        })
    }

    /// This node's name in NATS subjects and at the start of its `clientId`s.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// What a durable log on the same NATS needs: the client (once made), this node's
    /// deliveries, the subject prefix.
    pub(crate) fn link(&self) -> NatsLink {
        NatsLink {
            client: self.shared.client.subscribe(),
            nodes: self.shared.nodes.clone(),
            prefix: self.shared.prefix.clone(),
        }
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("node_id", &self.shared.node_id)
            .field("servers", &self.shared.servers)
            .field("prefix", &self.shared.prefix)
            .field("stats", &self.shared.stats())
            .finish()
    }
}

fn readable(path: &std::path::Path, what: &str) -> Result<(), NatsError> {
    std::fs::metadata(path).map(|_| ()).map_err(|e| {
        NatsError::with_source(format!("cannot read the {what} {}", path.display()), e)
    })
}

/// A node's name: `NODE_ID_LEN` letters and digits from the OS's random source.
fn new_node_id() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; NODE_ID_LEN];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

impl Shared {
    fn is_connected(&self) -> bool {
        self.client
            .borrow()
            .as_ref()
            .is_some_and(|c| c.connection_state() == State::Connected)
    }

    fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            connected: c.connected.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            slow_consumer: c.slow_consumer.load(Ordering::Relaxed),
        }
    }

    fn drop_outgoing(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        self.counters
            .dropped_in_outage
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The client's connection events: the log lines an operator needs, the counters.
    fn on_event(&self, event: async_nats::Event) {
        let c = &self.counters;
        match event {
            async_nats::Event::Connected => {
                c.connected.store(true, Ordering::Relaxed);
                let missed = c.dropped_in_outage.swap(0, Ordering::Relaxed);
                if c.ever_connected.swap(true, Ordering::Relaxed) {
                    c.reconnects.fetch_add(1, Ordering::Relaxed);
                    #[cfg(feature = "tracing")]
                    tracing::warn!(
                        servers = %self.servers,
                        node = %self.node_id,
                        dropped = missed,
                        "NATS link is back; messages published here during the outage reached this node's clients only"
                    );
                } else {
                    #[cfg(feature = "tracing")]
                    tracing::info!(servers = %self.servers, node = %self.node_id, dropped = missed, "joined NATS");
                }
                let _ = missed;
            }
            async_nats::Event::Disconnected => {
                c.connected.store(false, Ordering::Relaxed);
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    servers = %self.servers,
                    node = %self.node_id,
                    "NATS link lost; serving this node's clients, messages for other nodes are dropped until it is back"
                );
            }
            async_nats::Event::SlowConsumer(_sid) => {
                // async-nats dropped messages of a subscription whose buffer was full:
                // they came from other nodes and never reach this node's sessions.
                c.slow_consumer.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    node = %self.node_id,
                    subscription = _sid,
                    "NATS slow consumer: messages from other nodes were dropped before this node could deliver them"
                );
            }
            _other => {
                #[cfg(feature = "tracing")]
                tracing::debug!(node = %self.node_id, event = %_other, "NATS client event");
            }
        }
    }

    /// Says once, after the client's connection timeout, that NATS was not reachable
    /// at start.
    fn warn_if_unreachable(self: &Arc<Self>) {
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if !shared.counters.ever_connected.load(Ordering::Relaxed) {
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    servers = %shared.servers,
                    node = %shared.node_id,
                    "NATS is not reachable; serving this node's clients alone, joining when it comes up"
                );
            }
        });
    }

    /// Hands a message received from NATS to this node's delivery.
    fn on_message(&self, message: async_nats::Message) {
        let Some((destination, channel)) =
            subject::parse_subject(&self.prefix, message.subject.as_str())
        else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if destination == Destination::Subscribers
            && let Some((origin, seq)) = message
                .headers
                .as_ref()
                .and_then(|h| h.get(ORIGIN_HEADER))
                .and_then(|v| parse_origin(v.as_str()))
        {
            let fresh = self.dedupe.lock().unwrap_or_else(|e| e.into_inner()).fresh(
                origin,
                message.subject.as_str(),
                seq,
            );
            if !fresh {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope {
            channel,
            destination,
            message: message.payload,
        };
        for node in self.nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            node.deliver(&envelope);
        }
    }
}

fn parse_origin(value: &str) -> Option<(&str, u64)> {
    let (origin, seq) = value.rsplit_once(':')?;
    Some((origin, seq.parse().ok()?))
}

/// Delivers a broadcast once when overlapping subscriptions (`/a/*` and `/a/b` on one
/// node) bring it twice. Every subscription that matches a channel receives that
/// channel's messages from one origin in the order they were sent, so the first copy
/// of each is the one whose sequence number is above the last delivered for its
/// origin and subject.
#[derive(Default)]
struct Dedupe {
    last: HashMap<String, u64>,
    key: String,
}

impl Dedupe {
    /// Entries kept before the table starts over (one per origin and channel).
    const MAX_ENTRIES: usize = 100_000;

    fn fresh(&mut self, origin: &str, subject: &str, seq: u64) -> bool {
        self.key.clear();
        self.key.push_str(origin);
        self.key.push(' ');
        self.key.push_str(subject);
        if let Some(last) = self.last.get_mut(self.key.as_str()) {
            if seq <= *last {
                return false;
            }
            *last = seq;
            return true;
        }
        if self.last.len() >= Self::MAX_ENTRIES {
            self.last.clear();
        }
        self.last.insert(self.key.clone(), seq);
        true
    }
}

/// Publishes what the node routes, in order, while the link is up; drops (and
/// counts) it while the link is down, so that a NATS outage never holds up the node.
async fn publish_loop(
    shared: Arc<Shared>,
    client: async_nats::Client,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(message) = outgoing.recv().await {
        shared.pending.fetch_sub(1, Ordering::Relaxed);
        if client.connection_state() != State::Connected {
            shared.drop_outgoing();
            continue;
        }
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut headers = async_nats::HeaderMap::new();
        let mut origin = String::with_capacity(NODE_ID_LEN + 21);
        origin.push_str(&shared.node_id);
        origin.push(':');
        origin.push_str(&seq.to_string());
        headers.insert(ORIGIN_HEADER, origin.as_str());
        match client
            .publish_with_headers(message.subject, headers, message.payload)
            .await
        {
            Ok(()) => {
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_e) => {
                shared.drop_outgoing();
                #[cfg(feature = "tracing")]
                tracing::debug!(node = %shared.node_id, error = %_e, "NATS publish failed");
            }
        }
    }
}

/// Owns the node's NATS subscriptions: subscribes to a subject when it gains its first
/// local reason, unsubscribes when it loses its last, and answers settle requests once
/// the NATS server has seen every earlier change.
async fn control_loop(
    shared: Arc<Shared>,
    client: async_nats::Client,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    // Subject -> (local reasons, the reader task's stop signal).
    let mut subscriptions: HashMap<String, (usize, Option<oneshot::Sender<()>>)> = HashMap::new();
    let mut unsynced = false;
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = control.recv().await {
        let mut next = Some(first);
        while let Some(change) = next.take() {
            match change {
                Control::Interest(subject, true) => {
                    let entry = subscriptions.entry(subject.clone()).or_insert((0, None));
                    entry.0 += 1;
                    if entry.0 == 1 {
                        entry.1 = subscribe(&shared, &client, subject).await;
                        unsynced = true;
                    }
                }
                Control::Interest(subject, false) => {
                    if let Some(entry) = subscriptions.get_mut(&subject) {
                        entry.0 = entry.0.saturating_sub(1);
                        if entry.0 == 0 {
                            // Dropping the stop signal ends the reader, which unsubscribes.
                            subscriptions.remove(&subject);
                            unsynced = true;
                        }
                    }
                }
                Control::Settle(waiter) => waiters.push(waiter),
            }
            next = control.try_recv().ok();
        }
        if !waiters.is_empty() {
            if unsynced && client.connection_state() == State::Connected {
                round_trip(&shared, &client).await;
                unsynced = false;
            }
            for waiter in waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Subscribes to `subject` and starts the task that hands its messages to the node.
async fn subscribe(
    shared: &Arc<Shared>,
    client: &async_nats::Client,
    subject: String,
) -> Option<oneshot::Sender<()>> {
    let mut subscriber = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(_e) => {
            #[cfg(feature = "tracing")]
            tracing::warn!(node = %shared.node_id, subject = %subject, error = %_e, "cannot subscribe in NATS");
            return None;
        }
    };
    let (stop, mut stopped) = oneshot::channel::<()>();
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    let _ = subscriber.unsubscribe().await;
                    break;
                }
                message = subscriber.next() => match message {
                    Some(message) => shared.on_message(message),
                    None => break,
                },
            }
        }
    });
    Some(stop)
}

/// Waits until the NATS server has processed everything this client sent before: a
/// request to a subject nobody serves comes back as "no responders" after the server
/// has read the earlier subscriptions from the same connection.
async fn round_trip(shared: &Shared, client: &async_nats::Client) {
    let subject = format!("{}._sync.{}", shared.prefix, shared.node_id);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(subject, Bytes::new()),
    )
    .await;
}

impl Broker for NatsBroker {
    fn attach(&self, node: LocalDelivery) {
        self.shared
            .nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
    }

    fn interest(&self, pattern: &crate::protocol::ChannelName, interested: bool) {
        let subject = subject::pattern_subject(&self.shared.prefix, pattern);
        let _ = self.control.send(Control::Interest(subject, interested));
    }

    fn user_interest(&self, user: &str, interested: bool) {
        let subject = subject::user_subject(&self.shared.prefix, user);
        let _ = self.control.send(Control::Interest(subject, interested));
    }

    fn interest_settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        // While the link is down there is nothing to wait for: async-nats subscribes
        // again when it reconnects.
        if !self.shared.is_connected() {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Settle(tx)).is_err() {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        })
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.shared.node_id)
    }

    fn link_stats(&self) -> Option<LinkStats> {
        Some(self.shared.stats())
    }

    fn route(&self, envelope: Envelope) -> Routing {
        let local: usize = self
            .shared
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|n| n.deliver(&envelope))
            .sum();
        // A session of this node was reached, or is this node's: no other node has it.
        if let Destination::Session(client_id) = &envelope.destination
            && (local > 0 || client_id.starts_with(self.shared.node_id.as_str()))
        {
            return Routing::ready(Ok(Receipt::local(local)));
        }
        let shared = &self.shared;
        if shared.pending.fetch_add(1, Ordering::Relaxed) >= shared.max_pending {
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            shared.drop_outgoing();
            return Routing::ready(Ok(Receipt::local(local)));
        }
        let message = Outgoing {
            subject: subject::publish_subject(
                &shared.prefix,
                &envelope.destination,
                &envelope.channel,
            ),
            payload: envelope.message,
        };
        if self.outgoing.send(message).is_err() {
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            shared.drop_outgoing();
        }
        Routing::ready(Ok(Receipt::local(local)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_subscriptions_deliver_each_message_once() {
        let mut d = Dedupe::default();
        // Two subscriptions bring seq 1 and 2 of one channel; any interleaving in which
        // each keeps its own order delivers each once.
        assert!(d.fresh("A", "p.c.a.b", 1));
        assert!(!d.fresh("A", "p.c.a.b", 1));
        assert!(d.fresh("A", "p.c.a.b", 2));
        assert!(!d.fresh("A", "p.c.a.b", 2));
        // Another channel or origin has its own sequence.
        assert!(d.fresh("A", "p.c.a.c", 1));
        assert!(d.fresh("B", "p.c.a.b", 1));
    }

    #[test]
    fn origin_headers_parse() {
        assert_eq!(parse_origin("K7abcdef:42"), Some(("K7abcdef", 42)));
        assert_eq!(parse_origin("K7abcdef:x"), None);
        assert_eq!(parse_origin("nothing"), None);
    }

    #[test]
    fn node_ids_are_short_and_plain() {
        let id = new_node_id();
        assert_eq!(id.len(), NODE_ID_LEN);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, new_node_id());
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(NatsBroker::connect(NatsConfig::new("")).is_err());
            let mut bad_prefix = NatsConfig::new("nats://127.0.0.1:1");
            bad_prefix.subject_prefix = "a.*".into();
            assert!(NatsBroker::connect(bad_prefix).is_err());
            let mut no_creds = NatsConfig::new("nats://127.0.0.1:1");
            no_creds.credentials_file = Some("/nonexistent/creds".into());
            let err = NatsBroker::connect(no_creds).unwrap_err().to_string();
            assert!(err.contains("/nonexistent/creds"), "{err}");
        });
    }
}

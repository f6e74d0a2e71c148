//! Replay: durable channels whose messages a client that was away can ask for again,
//! in Salesforce's wire format (see [`crate::protocol::replay`]).
//!
//! The server keeps the messages of channels that match a [`ReplayConfig`] pattern,
//! broadcast or per-user, for a while and up to a count. Each gets a replay id, carried
//! in `data.event.replayId`. A subscribe with `ext.replay` first receives what was
//! retained after the id it names (or everything, with `-2`), then the live messages,
//! without a gap or a duplicate.
//!
//! The hooks: [`Inner::route`](super::Inner::route) hands durable messages to
//! [`Replay::route`], which assigns the id, retains the message and routes it; the
//! `/meta/subscribe` handler hands a subscribe with `ext.replay` to [`Replay::join`],
//! which subscribes the session and queues its history in one step. The storage is a
//! [`Store`]: today the single-node [`memory`] log, whose ids are assigned when the
//! message is routed; a cluster-wide store is another variant behind the same two calls.
//! Nothing outside this module assumes that ids are known before a message is encoded:
//! a store whose log assigns the id when it acknowledges the message (a JetStream
//! stream's sequence) keeps the message without it and puts it in
//! ([`inject_replay_id`](crate::protocol::replay::inject_replay_id)) when its consumer
//! hands the message to this node's sessions, in sequence order; its `join` reads the
//! history from the log and joins the consumer's position. What a store must answer:
//! the latest id, the retained messages after an id for a pattern and a user (broadcasts
//! and that user's own), and whether everything after an id is still retained.

#[cfg(feature = "nats")]
mod jetstream;
mod memory;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::broker::{Broker, BrokerError, Destination, Envelope, Receipt, Routing};
use super::index::Recipient;
use super::session::{SessionRef, SubscribeError};
use crate::protocol::replay::{inject_replay_id, invalid_replay_id};
use crate::protocol::{BayeuxError, ChannelName, Message, ReplayFrom};
use memory::MemoryLog;

/// Which channels are durable, and how long and how much of them is kept
/// ([`ServerConfig::replay`](super::ServerConfig::replay); `bayeux serve --replay`).
///
/// A message is retained, with a replay id, when it is published on a plain channel
/// that one of `patterns` matches (by a client, [`Server::publish`](super::Server::publish)
/// or [`Server::deliver_to_user`](super::Server::deliver_to_user), never
/// [`Server::deliver`](super::Server::deliver) to one session, nor `/service/**` or
/// `/meta/**`), and its `data` is a JSON object whose `event`, if any, is an object too:
/// the id goes into `data.event.replayId`, as Salesforce's events carry it. Other
/// messages on those channels are delivered live, as before, with no id, and are not
/// retained (a replaying client could not tell where it stands with them).
///
/// Per-user messages are retained per user: a session replays its own user's messages
/// and the channel's broadcasts, never another user's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// The durable channels, as patterns (`/v2/**`, `/event/*`, `/orders`).
    pub patterns: Vec<ChannelName>,
    /// How long a message is kept (default: 24 hours, as Salesforce keeps its standard
    /// events).
    pub retention: Duration,
    /// The most messages kept per channel (and, for per-user messages, per channel and
    /// user); the oldest go first (default 1 000). A replay queues what it finds at once
    /// into the session's queue, and a history that does not fit there is refused
    /// (`409`), so keep this below `max_queue`.
    pub max_per_channel: usize,
    /// The bytes of all retained messages at most, in the in-memory log; past it the
    /// oldest messages of the whole log go first (and a replay from before them is
    /// refused, as after the retention). With NATS, the JetStream stream's `max_bytes`.
    /// Default: 256 MiB.
    pub max_bytes: usize,
    /// The most channels (and, for per-user messages, channel and user pairs) the
    /// in-memory log keeps: a durable pattern such as `/event/*` grows one per channel
    /// published on. Past it the oldest messages go first. Default: 100 000.
    pub max_channels: usize,
    /// The most distinct channels one subscribe may name while replay is on (each is
    /// looked up in the log); more are refused with `409::maxReplayPatterns`, and a
    /// channel named twice counts once. Default: 100.
    pub max_patterns_per_subscribe: usize,
}

impl ReplayConfig {
    /// The default retention (24 hours).
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
    /// The default bound per channel (1 000 messages).
    pub const DEFAULT_MAX_PER_CHANNEL: usize = 1_000;
    /// The default bound on the bytes retained (256 MiB).
    pub const DEFAULT_MAX_BYTES: usize = 256 << 20;
    /// The default bound on the channels retained (100 000).
    pub const DEFAULT_MAX_CHANNELS: usize = 100_000;
    /// The default bound on the distinct channels of one replaying subscribe (100).
    pub const DEFAULT_MAX_PATTERNS_PER_SUBSCRIBE: usize = 100;

    /// Durable `patterns`, with the default retention and bound.
    pub fn new(patterns: Vec<ChannelName>) -> Self {
        ReplayConfig {
            patterns,
            retention: Self::DEFAULT_RETENTION,
            max_per_channel: Self::DEFAULT_MAX_PER_CHANNEL,
            max_patterns_per_subscribe: Self::DEFAULT_MAX_PATTERNS_PER_SUBSCRIBE,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_channels: Self::DEFAULT_MAX_CHANNELS,
        }
    }

    /// Whether messages on the plain channel `channel` are durable.
    pub fn is_durable(&self, channel: &ChannelName) -> bool {
        !channel.is_meta()
            && !channel.is_service()
            && self.patterns.iter().any(|p| p.matches(channel))
    }
}

/// Where the messages are kept.
enum Store {
    /// This node's memory: lost with the process, not shared with other nodes.
    Memory(Mutex<MemoryLog>),
    /// A JetStream stream on the NATS the nodes share: ids are its sequence numbers,
    /// cluster-wide, and the log survives a node's restart.
    #[cfg(feature = "nats")]
    JetStream(jetstream::JetStreamLog),
}

/// What the in-memory log holds, for the metrics.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct MemoryStats {
    pub messages: usize,
    pub bytes: usize,
    pub channels: usize,
    /// Messages dropped to keep within `max_bytes` and `max_channels`.
    pub evicted: u64,
}

/// A replaying subscribe that went through.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The latest replay id when the subscription joined: every later message reaches
    /// it live, every earlier one it asked for was queued.
    pub position: i64,
}

/// Why a replaying subscribe added nothing.
#[derive(Debug)]
pub(crate) enum JoinError {
    /// A replay id that cannot be replayed after (the error to answer).
    Refused(BayeuxError),
    /// The session refused the subscription.
    Subscribe(SubscribeError),
}

/// A server's replay: its configuration and its store.
pub(crate) struct Replay {
    config: ReplayConfig,
    store: Store,
}

impl Replay {
    /// A single-node replay, kept in memory.
    pub fn in_memory(config: ReplayConfig) -> Self {
        let log = MemoryLog::new(
            config.retention,
            memory::Bounds {
                per_stream: config.max_per_channel,
                bytes: config.max_bytes,
                streams: config.max_channels,
            },
        );
        Replay {
            config,
            store: Store::Memory(Mutex::new(log)),
        }
    }

    /// A cluster-wide replay, in a JetStream stream on the NATS of `link` (the
    /// server's [`NatsBroker`](super::NatsBroker)).
    #[cfg(feature = "nats")]
    pub fn jetstream(config: ReplayConfig, link: super::broker::NatsLink) -> Self {
        let log = jetstream::JetStreamLog::start(link, &config);
        Replay {
            config,
            store: Store::JetStream(log),
        }
    }

    /// The most distinct channels one subscribe may name (at least 1).
    pub fn max_patterns_per_subscribe(&self) -> usize {
        self.config.max_patterns_per_subscribe.max(1)
    }

    fn memory(log: &Mutex<MemoryLog>) -> MutexGuard<'_, MemoryLog> {
        log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a message for `destination` on `channel` goes through [`Replay::route`].
    pub fn is_durable(&self, channel: &ChannelName, destination: &Destination) -> bool {
        !matches!(destination, Destination::Session(_)) && self.config.is_durable(channel)
    }

    /// Routes a durable message: gives it the next replay id, retains it (for its user
    /// only, when it is a per-user delivery) and routes it through `broker`. The three
    /// happen under the log's lock, so that a replaying subscribe ([`Replay::join`])
    /// sees each message either in the history it queues or live after it, never both
    /// and never neither: the local delivery of [`InMemoryBroker`](super::InMemoryBroker)
    /// (and of any broker that delivers locally within `route`) happens in that step.
    /// A message that cannot carry an id (see [`ReplayConfig`]) is routed as is.
    pub async fn route(
        &self,
        broker: &dyn Broker,
        destination: Destination,
        channel: ChannelName,
        mut message: Message,
    ) -> Result<Receipt, BrokerError> {
        // Its creation time, where Salesforce's clients read it (the id is added below).
        if let Some(data) = message
            .data
            .as_mut()
            .filter(|d| crate::protocol::replay::can_carry_replay_id(d))
        {
            crate::protocol::replay::stamp_created(
                crate::protocol::replay::EventShape::of(channel.as_str()),
                data,
                std::time::SystemTime::now(),
            );
        }
        let routing: Routing = match &self.store {
            Store::Memory(log) => {
                let mut log = Self::memory(log);
                let id = log.next_id();
                let carries = message
                    .data
                    .as_mut()
                    .is_some_and(|d| inject_replay_id(d, wire_id(id)));
                let bytes = message.to_bytes();
                if carries {
                    let user = match &destination {
                        Destination::User(user) => Some(user.as_str()),
                        _ => None,
                    };
                    log.append(&channel, user, id, bytes.clone(), Instant::now());
                }
                broker.route(Envelope {
                    channel,
                    destination,
                    message: bytes,
                })
            }
            #[cfg(feature = "nats")]
            Store::JetStream(log) => {
                let carries = message
                    .data
                    .as_ref()
                    .is_some_and(crate::protocol::replay::can_carry_replay_id);
                if carries {
                    match log.append(&destination, &channel, &message).await {
                        Ok(receipt) => return Ok(receipt),
                        Err(_e) => {
                            // Delivered live, without an id, rather than lost.
                            #[cfg(feature = "tracing")]
                            tracing::warn!(channel = channel.as_str(), error = %_e, "durable message not kept: the replay log is unavailable");
                        }
                    }
                }
                broker.route(Envelope {
                    channel,
                    destination,
                    message: message.to_bytes(),
                })
            }
        };
        routing.await
    }

    /// Subscribes a session, with replay: checks every `After` id, runs `subscribe`
    /// (which adds the session's new patterns to the index), and queues into the session
    /// the retained messages after each requested point for the patterns it added, in id
    /// order and each once: all under the log's lock, so that no message published
    /// meanwhile is missed or sent twice. Every subscribe of a server with replay comes
    /// here (a plain one asks [`ReplayFrom::New`] for each pattern), so that the session
    /// knows where each of its patterns joined the log: a message that already reached
    /// it live through another pattern is not replayed.
    pub async fn join(
        &self,
        session: &SessionRef,
        requests: &[(ChannelName, ReplayFrom)],
        subscribe: impl FnOnce() -> Result<Vec<ChannelName>, SubscribeError>,
    ) -> Result<Joined, JoinError> {
        let user = session.info.user.as_deref();
        match &self.store {
            #[cfg(feature = "nats")]
            Store::JetStream(log) => log.join(session, requests, subscribe).await,
            Store::Memory(log) => {
                let mut log = Self::memory(log);
                log.prune(Instant::now());
                for (pattern, from) in requests {
                    if let ReplayFrom::After(after) = *from
                        && let Err(refusal) = log.check(pattern, user, after.max(0) as u64)
                    {
                        return Err(JoinError::Refused(invalid_replay_id(
                            pattern.as_str(),
                            after,
                            refusal.reason(),
                        )));
                    }
                }
                // The history of every pattern asked, less what the session's current
                // patterns already delivered (replayed or live, after their start).
                let before = session.replay_positions();
                let mut history = Vec::new();
                let mut found = Vec::new();
                for (i, (pattern, from)) in requests.iter().enumerate() {
                    let after = match *from {
                        ReplayFrom::New => continue,
                        ReplayFrom::All => None,
                        ReplayFrom::After(id) => Some(id.max(0) as u64),
                    };
                    found.clear();
                    log.history(pattern, user, after, &mut found);
                    gather(&before, i, found.drain(..), &mut history);
                }
                let latest = log.latest();
                complete_join(session, requests, history, latest, subscribe)
            }
        }
    }

    /// What the in-memory log holds and has dropped for its total bounds (`None` on
    /// JetStream, whose stream the NATS server accounts for).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub fn memory_stats(&self) -> Option<MemoryStats> {
        match &self.store {
            Store::Memory(log) => {
                let log = Self::memory(log);
                Some(MemoryStats {
                    messages: log.len(),
                    bytes: log.bytes(),
                    channels: log.stream_count(),
                    evicted: log.evicted(),
                })
            }
            #[cfg(feature = "nats")]
            Store::JetStream(_) => None,
        }
    }

    /// Drops what is past the retention (called by the session sweep).
    pub fn prune(&self, now: Instant) {
        match &self.store {
            Store::Memory(log) => Self::memory(log).prune(now),
            // JetStream drops what is past the stream's max age itself.
            #[cfg(feature = "nats")]
            Store::JetStream(_) => {}
        }
    }
}

/// Adds to `history` the messages `found` for request `i` (id, channel, message), less
/// those that one of the session's current patterns (`before`: each with the id it
/// delivers after) already delivered.
fn gather(
    before: &[(ChannelName, u64)],
    i: usize,
    found: impl Iterator<Item = (u64, ChannelName, Bytes)>,
    history: &mut Vec<(u64, Bytes, usize)>,
) {
    history.extend(found.filter_map(|(id, channel, m)| {
        let delivered = before
            .iter()
            .any(|(p, joined)| *joined < id && p.matches(&channel));
        (!delivered).then_some((id, m, i))
    }));
}

/// The end of a replaying subscribe, whatever the store, once it gathered the history
/// up to `latest` (the last id delivered live), with live delivery held: refuses a
/// history the session's queue cannot hold (rather than cut it), subscribes, records
/// where each new pattern delivers from, and queues the history, each message once, in
/// id order.
fn complete_join(
    session: &SessionRef,
    requests: &[(ChannelName, ReplayFrom)],
    mut history: Vec<(u64, Bytes, usize)>,
    latest: u64,
    subscribe: impl FnOnce() -> Result<Vec<ChannelName>, SubscribeError>,
) -> Result<Joined, JoinError> {
    history.sort_by_key(|(id, _, _)| *id);
    let mut distinct: Vec<Bytes> = Vec::with_capacity(history.len());
    let mut previous = None;
    for (id, m, _) in &history {
        if previous != Some(*id) {
            distinct.push(m.clone());
            previous = Some(*id);
        }
    }
    if !session.fits(&distinct) {
        let channel = requests.first().map_or("", |(p, _)| p.as_str());
        return Err(JoinError::Refused(BayeuxError::limit(
            channel,
            format!(
                "Replay of {} messages does not fit this session's queue (maxQueue, maxQueueBytes): replay from a later replayId",
                distinct.len()
            ),
        )));
    }
    let added = subscribe().map_err(JoinError::Subscribe)?;
    // Where each new pattern delivers from: what it replays, then live.
    session.replay_joined(
        requests
            .iter()
            .filter(|(p, _)| added.contains(p))
            .map(|(p, from)| {
                let start = match *from {
                    ReplayFrom::New => latest,
                    ReplayFrom::All => 0,
                    ReplayFrom::After(id) => id.max(0) as u64,
                };
                (p.clone(), start)
            }),
    );
    // A pattern the session already had replays nothing: its messages reached the
    // session live. Each message once, in id order.
    history.retain(|(_, _, i)| added.contains(&requests[*i].0));
    history.dedup_by_key(|(id, _, _)| *id);
    for (_, message, _) in &history {
        session.deliver(message);
    }
    Ok(Joined {
        position: wire_id(latest),
    })
}

/// An id as the wire carries it (a signed 64-bit integer).
fn wire_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

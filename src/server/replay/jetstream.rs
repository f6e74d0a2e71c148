//! The cluster-wide replay log: a JetStream stream on the NATS the nodes share.
//!
//! Every durable message goes into one stream (subjects `<prefix>.r.c.<channel>` for
//! broadcasts and `<prefix>.r.u.<user>.<channel>` for per-user deliveries), and its
//! replay id is its stream sequence: cluster-wide, increasing, never reused, and
//! surviving a node's restart. The publishing node does not deliver a durable message
//! itself: every node, the publisher included, reads the stream in sequence order (an
//! ordered consumer from where the stream stood when the node started), puts the id
//! into `data.event.replayId` and hands the message to its own recipients. So every node
//! delivers durable messages in replay-id order, and a replaying subscribe joins that
//! order exactly: under the gate that live delivery takes for each message, it
//! subscribes the session and queues the history up to the last id delivered live.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::{JoinError, Joined, ReplayConfig, complete_join, gather};
use crate::protocol::replay::{inject_replay_id, invalid_replay_id};
use crate::protocol::{BayeuxError, ChannelName, ErrorCode, Message, ReplayFrom};
use crate::server::broker::subject::{self, parse_subject};
use crate::server::broker::{Destination, Envelope, LocalDelivery, NatsLink, Receipt};
use crate::server::session::{SessionRef, SubscribeError};

/// How long a durable publish may wait for the stream's acknowledgement, and for this
/// node's own delivery of it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a durable publish or a replaying subscribe waits for the stream to be
/// ready before it is refused.
const READY_WAIT: Duration = Duration::from_secs(10);

/// The stream, once the log's task has made (or found) it.
#[derive(Clone)]
struct Ready {
    context: jetstream::Context,
    stream: stream::Stream,
}

/// A node's handle on the cluster-wide log.
pub(crate) struct JetStreamLog {
    /// `<prefix>.r`: the stream's subjects are the broker's subjects under it.
    prefix: String,
    ready: watch::Receiver<Option<Ready>>,
    /// The last stream sequence this node delivered live. Live delivery holds it for
    /// each message; a replaying subscribe holds it while it joins.
    gate: Arc<tokio::sync::Mutex<u64>>,
    /// The same number, to wait on (a publisher waits for its own message to be
    /// delivered here).
    delivered: watch::Receiver<u64>,
}

impl JetStreamLog {
    /// Starts the log on the broker's NATS: makes (or updates) the stream with the
    /// retention and bound of `config`, then follows it for this node. Returns at once;
    /// until the stream is ready, durable publishes and replaying subscribes fail.
    pub fn start(link: NatsLink, config: &ReplayConfig) -> JetStreamLog {
        let (ready_tx, ready) = watch::channel(None);
        let (delivered_tx, delivered) = watch::channel(0u64);
        let gate = Arc::new(tokio::sync::Mutex::new(0u64));
        let stream_config = stream::Config {
            name: format!("{}_replay", link.prefix.replace('.', "_")),
            subjects: vec![format!("{}.>", durable_prefix(&link.prefix))],
            max_age: config.retention,
            max_messages_per_subject: i64::try_from(config.max_per_channel).unwrap_or(i64::MAX),
            // The stream's bytes, bounded as the in-memory log's: the oldest go first.
            max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let log = JetStreamLog {
            prefix: durable_prefix(&link.prefix),
            ready,
            gate: gate.clone(),
            delivered,
        };
        tokio::spawn(follow(link, stream_config, ready_tx, gate, delivered_tx));
        log
    }

    /// The stream, waiting a while for it when the node has just started (or NATS
    /// was away at start): a client that reconnects to a restarted node is served
    /// rather than refused.
    async fn wait_ready(&self) -> Option<Ready> {
        let mut ready = self.ready.clone();
        tokio::time::timeout(READY_WAIT, ready.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?
            .clone()
    }

    /// The stream's subject for a durable message to `destination` on `channel`: the
    /// broker's subject under `<prefix>.r`.
    fn subject(&self, destination: &Destination, channel: &ChannelName) -> String {
        subject::publish_subject(&self.prefix, destination, channel)
    }

    /// The stream's subject filters for what a session of `user` subscribed to
    /// `pattern` replays: the broadcasts, and its user's own messages.
    fn filters(&self, pattern: &ChannelName, user: Option<&str>) -> Vec<String> {
        let mut filters = vec![subject::pattern_subject(&self.prefix, pattern)];
        if let Some(user) = user {
            filters.push(subject::user_pattern_subject(&self.prefix, user, pattern));
        }
        filters
    }

    /// Appends a durable message (without its id: the stream gives it) and waits until
    /// this node delivered it, so that the caller's publish is done here when it
    /// returns. The receipt counts no recipients: each node delivers from the stream.
    pub async fn append(
        &self,
        destination: &Destination,
        channel: &ChannelName,
        message: &Message,
    ) -> Result<Receipt, String> {
        let Some(ready) = self.wait_ready().await else {
            return Err("the replay stream is not ready (NATS unreachable?)".into());
        };
        let subject = self.subject(destination, channel);
        let ack = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            ready
                .context
                .publish(subject, message.to_bytes())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "the replay stream did not acknowledge in time".to_string())??;
        let mut delivered = self.delivered.clone();
        let _ = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            delivered.wait_for(|last| *last >= ack.sequence),
        )
        .await;
        Ok(Receipt::default())
    }

    /// A replaying subscribe: checks the ids, subscribes, and queues the history up to
    /// the last id delivered live here, with live delivery held meanwhile.
    pub async fn join(
        &self,
        session: &SessionRef,
        requests: &[(ChannelName, ReplayFrom)],
        subscribe: impl FnOnce() -> Result<Vec<ChannelName>, SubscribeError>,
    ) -> Result<Joined, JoinError> {
        let Some(ready) = self.wait_ready().await else {
            return Err(JoinError::Refused(unavailable("NATS is not reachable")));
        };
        let user = session.info.user.as_deref();
        // An id this node has not delivered yet (its consumer is behind the publisher's)
        // is waited for, so that the history and live delivery meet exactly after it.
        let furthest = requests
            .iter()
            .filter_map(|(_, f)| match f {
                ReplayFrom::After(id) => u64::try_from(*id).ok(),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let mut delivered = self.delivered.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            delivered.wait_for(|last| *last >= furthest),
        )
        .await;

        let position = self.gate.lock().await;
        let latest = *position;
        for (pattern, from) in requests {
            if let ReplayFrom::After(after) = *from
                && let Some(why) = self.check(&ready, pattern, user, after, latest).await
            {
                return Err(JoinError::Refused(invalid_replay_id(
                    pattern.as_str(),
                    after,
                    why,
                )));
            }
        }
        // The history of every pattern asked, less what the session's current patterns
        // already delivered (replayed or live, after their start).
        let before = session.replay_positions();
        let mut history = Vec::new();
        let mut found = Vec::new();
        for (i, (pattern, from)) in requests.iter().enumerate() {
            let start = match *from {
                ReplayFrom::New => continue,
                ReplayFrom::All => 1,
                ReplayFrom::After(id) => u64::try_from(id).unwrap_or(0) + 1,
            };
            if start > latest {
                continue;
            }
            for filter in self.filters(pattern, user) {
                found.clear();
                fetch(&self.prefix, &ready, filter, start, latest, &mut found)
                    .await
                    .map_err(|e| JoinError::Refused(unavailable(&e)))?;
                gather(&before, i, found.drain(..), &mut history);
            }
        }
        let joined = complete_join(session, requests, history, latest, subscribe);
        drop(position);
        joined
    }

    /// Why a replay after `after` cannot be served, if it cannot: the message must be
    /// in the stream, on a subject the session replays.
    async fn check(
        &self,
        ready: &Ready,
        pattern: &ChannelName,
        user: Option<&str>,
        after: i64,
        latest: u64,
    ) -> Option<&'static str> {
        let Ok(after) = u64::try_from(after) else {
            return Some("no message has this replayId");
        };
        if after == 0 || after > latest {
            return Some("no message has this replayId");
        }
        match ready.stream.get_raw_message(after).await {
            Ok(found) => {
                let visible = self
                    .filters(pattern, user)
                    .iter()
                    .any(|f| subject_matches(f, found.subject.as_str()));
                (!visible).then_some("no message on this channel has this replayId")
            }
            Err(_) => Some("the messages after it are no longer retained"),
        }
    }
}

/// Whether the NATS subject `subject` matches the filter `filter` (`*` one token, `>`
/// the rest).
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Reads the messages matching `filter` from `start` to `end` (sequences) into `out`,
/// with their ids put in.
async fn fetch(
    durable: &str,
    ready: &Ready,
    filter: String,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, ChannelName, Bytes)>,
) -> Result<(), String> {
    let consumer = ready
        .stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    'batches: loop {
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| e.to_string())?;
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            if seq > end {
                break 'batches;
            }
            got += 1;
            if let Some((_, channel)) = parse_subject(durable, &message.subject) {
                out.push((seq, channel, with_id(&message.payload, seq)));
            }
            if seq == end {
                break 'batches;
            }
        }
        if got == 0 {
            break;
        }
    }
    let name = consumer.cached_info().name.clone();
    let _ = ready.stream.delete_consumer(&name).await;
    Ok(())
}

/// The message with `seq` as its `data.event.replayId` (as it was, if it cannot carry
/// one).
fn with_id(payload: &Bytes, seq: u64) -> Bytes {
    match serde_json::from_slice::<Message>(payload) {
        Ok(mut message) => {
            let id = i64::try_from(seq).unwrap_or(i64::MAX);
            if message
                .data
                .as_mut()
                .is_some_and(|d| inject_replay_id(d, id))
            {
                message.to_bytes()
            } else {
                payload.clone()
            }
        }
        Err(_) => payload.clone(),
    }
}

/// The log's task: makes the stream, then delivers what it receives to this node's
/// recipients, in sequence order, forever (starting again from the last sequence
/// delivered when the consumer fails).
async fn follow(
    link: NatsLink,
    config: stream::Config,
    ready: watch::Sender<Option<Ready>>,
    gate: Arc<tokio::sync::Mutex<u64>>,
    delivered: watch::Sender<u64>,
) {
    let mut client_rx = link.client.clone();
    let Ok(client) = client_rx.wait_for(|c| c.is_some()).await.map(|c| c.clone()) else {
        return;
    };
    let Some(client) = client else { return };
    let context = jetstream::new(client.clone());
    let mut pause = Duration::from_millis(100);
    let (stream, last) = loop {
        match context.create_or_update_stream(config.clone()).await {
            Ok(info) => match context.get_stream(&config.name).await {
                Ok(stream) => break (stream, info.state.last_sequence),
                Err(_e) => {}
            },
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(error = %_e, "cannot make the replay stream yet");
            }
        }
        if ready.is_closed() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    };
    *gate.lock().await = last;
    delivered.send_replace(last);
    ready.send_replace(Some(Ready {
        context,
        stream: stream.clone(),
    }));
    #[cfg(feature = "tracing")]
    tracing::info!(stream = %config.name, last_replay_id = last, "replay log on JetStream ready");

    let nodes = link.nodes.clone();
    let durable = durable_prefix(&link.prefix);
    let mut from = last + 1;
    while !ready.is_closed() {
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: config.subjects[0].clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { break };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            let mut position = gate.lock().await;
            if seq <= *position {
                continue;
            }
            deliver(&durable, &nodes, &message.subject, &message.payload, seq);
            *position = seq;
            delivered.send_replace(seq);
            from = seq + 1;
        }
    }
}

/// The prefix of the stream's subjects: the broker's `prefix`, then `r`.
fn durable_prefix(prefix: &str) -> String {
    format!("{prefix}.r")
}

/// The error of a replaying subscribe when the log cannot be read.
fn unavailable(why: &str) -> BayeuxError {
    BayeuxError::new(
        ErrorCode(503),
        &[],
        format!("The replay log is unavailable: {why}"),
    )
}

/// Hands a durable message from the stream to this node's recipients, its id put in.
fn deliver(
    durable: &str,
    nodes: &RwLock<Vec<LocalDelivery>>,
    subject: &str,
    payload: &Bytes,
    seq: u64,
) {
    let Some((destination, channel)) = parse_subject(durable, subject) else {
        return;
    };
    let envelope = Envelope {
        channel,
        destination,
        message: with_id(payload, seq),
    };
    for node in nodes.read().unwrap_or_else(|e| e.into_inner()).iter() {
        node.deliver(&envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_filters_as_nats_does() {
        assert!(subject_matches("p.r.c.a.*", "p.r.c.a.b"));
        assert!(!subject_matches("p.r.c.a.*", "p.r.c.a.b.c"));
        assert!(subject_matches("p.r.c.a.>", "p.r.c.a.b.c"));
        assert!(!subject_matches("p.r.c.a.>", "p.r.c.a"));
        assert!(subject_matches("p.r.c.a", "p.r.c.a"));
        assert!(!subject_matches("p.r.c.a", "p.r.c.ab"));
        assert!(!subject_matches("p.r.c.a", "p.r.c.a.b"));
    }
}

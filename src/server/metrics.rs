//! Prometheus metrics of one server (feature `metrics`), through the Prometheus
//! project's own client, [`prometheus_client`].
//!
//! Each [`Server`] owns its registry: there is no global one, so several servers in a
//! process (or in a test) keep their numbers apart. [`Server::metrics`] renders it in the
//! Prometheus text format (version 0.0.4); [`Server::register_metric`] adds an
//! application's own metrics to the same page; [`OpsService`](super::OpsService) serves
//! it at `GET /metrics`.
//!
//! The server's own metrics are read from its counters at scrape time (a
//! [`Collector`]), so the hot paths only add to relaxed atomics:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `bayeux_sessions` | gauge | `transport` | live sessions, by the transport that last carried them |
//! | `bayeux_handshakes_total` | counter | `outcome` | handshakes: `accepted`, `denied`, `max-sessions`, `unsupported`, `shutting-down`, `address-limit`, `busy` |
//! | `bayeux_sessions_closed_total` | counter | `reason` | sessions ended: `disconnected`, `expired`, `overflow`, `shutdown` |
//! | `bayeux_messages_published_total` | counter | | messages accepted for delivery |
//! | `bayeux_messages_delivered_total` | counter | | messages taken by a transport to be written to a client |
//! | `bayeux_messages_dropped_total` | counter | `reason` | messages a session did not get: `drop-newest`, `drop-oldest`, `close-session`, `session-ended` |
//! | `bayeux_connects_pending` | gauge | | `/meta/connect` requests held right now |
//! | `bayeux_websockets_open` | gauge | | open WebSocket connections |
//! | `bayeux_http_requests_total` | counter | `status` | responses of the Bayeux endpoint |
//! | `bayeux_publish_to_flush_seconds` | histogram | | per batch, the age of its oldest message when a transport took it |
//! | `bayeux_replay_retained_messages` | gauge | | messages the in-memory replay log holds (with replay on, without JetStream) |
//! | `bayeux_replay_retained_bytes`, `bayeux_replay_channels` | gauge | | its bytes and channels (bounded by `max_bytes`, `max_channels`) |
//! | `bayeux_replay_evicted_total` | counter | | messages it dropped, oldest first, to stay within those bounds |
//! | `bayeux_limit_refusals_total` | counter | `limit` | refusals by each budget: `max-connections`, `max-connections-per-address`, `max-pending-websockets-per-address`, `websocket-handshake-timeout`, `max-sessions-per-address`, `max-auth-failures-per-address`, `handshakes-per-request`, `max-queued-bytes`, `max-body-bytes`, `max-body-bytes-per-address` |
//! | `bayeux_limit` | gauge | `limit` | the budgets in force |
//! | `bayeux_connections_open` | gauge | | TCP connections open on the server's own listener |
//! | `bayeux_websockets_pending` | gauge | | open WebSockets that have not handshaken yet |
//! | `bayeux_queued_bytes` | gauge | | bytes held by all session queues together |
//! | `bayeux_body_bytes` | gauge | | bytes of request bodies being read and handled |
//! | `bayeux_limit_tracked_clients` | gauge | | client addresses the per-address budgets track |
//!
//! With a multi-node broker (NATS), its link too:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `bayeux_broker_connected` | gauge | 1 while the link to the other nodes is up |
//! | `bayeux_broker_messages_sent_total` | counter | messages handed to the link for the other nodes |
//! | `bayeux_broker_messages_received_total` | counter | messages from the other nodes handed to this node's delivery |
//! | `bayeux_broker_messages_dropped_total` | counter | messages for the other nodes the link could not carry (down, or queue full) |
//! | `bayeux_broker_duplicates_total` | counter | copies brought by overlapping subscriptions, delivered once |
//! | `bayeux_broker_rejected_total` | counter | messages received that named no valid destination |
//! | `bayeux_broker_reconnects_total` | counter | times the link came back |
//! | `bayeux_broker_slow_consumer_total` | counter | times the NATS client dropped messages from other nodes (a subscription's buffer was full) |

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry, Unit};

/// The Prometheus client this module uses, for [`Server::register_metric`]'s metrics (the
/// same version as the server's, whatever the application's own dependencies say).
pub use prometheus_client;

use super::stats::{DropReason, HandshakeOutcome, Stats, TRANSPORTS};
use super::{Inner, Server};

/// The `Content-Type` of [`Server::metrics`]: the Prometheus text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The upper bounds of the publish-to-flush histogram's buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A fixed-bucket latency histogram of relaxed atomics: recording is one bucket search
/// and two atomic adds, with no lock (prometheus-client's own histogram takes one).
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    /// One counter per bucket of [`BUCKETS`], then the `+Inf` one; not cumulative.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
    /// The origin of [`LatencyHistogram::stamp`]s.
    epoch: Instant,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let i = BUCKETS.partition_point(|le| *le < seconds);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `at` as a stamp: nanoseconds since the histogram was made, never 0 (which
    /// callers keep for "no stamp"). Half the size of an `Instant`, for the one a session
    /// keeps.
    pub fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    /// Records the time since the instant `stamp` stands for.
    pub fn observe_since_stamp(&self, stamp: u64) {
        let now = self.stamp(Instant::now());
        self.observe(Duration::from_nanos(now.saturating_sub(stamp)));
    }

    /// The sum in seconds, the count, and the buckets (upper bound, non-cumulative
    /// count), as prometheus-client encodes them.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(le, c)| (le, c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// A server's registry: its own collector, and whatever the application registers.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry; [`Metrics::attach`] adds the server's collector once the
    /// server exists.
    pub fn new() -> Self {
        Metrics {
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Registers the collector that reads `inner`'s counters at each scrape. It holds
    /// the server weakly, so the registry does not keep it alive.
    pub fn attach(&self, inner: &Arc<Inner>) {
        self.lock().register_collector(Box::new(ServerCollector {
            inner: Arc::downgrade(inner),
            stats: inner.stats.clone(),
        }));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Server {
    /// This server's metrics in the Prometheus text format (version 0.0.4; serve it with
    /// [`METRICS_CONTENT_TYPE`]): the `bayeux_*` metrics of the [module](self) and
    /// those registered with [`Server::register_metric`]. Reads counters only: cheap
    /// enough for any scrape interval.
    pub fn metrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        let registry = self.inner().metrics.lock();
        // Writing to a String cannot fail, and the server's collector does not either.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    /// Adds an application metric (any [`prometheus_client`] metric: a counter, a
    /// gauge, a `Family` of them...) to [`Server::metrics`], so that one scrape gets the
    /// server's metrics and the application's. Counters get the `_total` suffix, as
    /// prometheus-client names them.
    pub fn register_metric(&self, name: &str, help: &str, metric: impl Metric) {
        self.inner().metrics.lock().register(name, help, metric);
    }
}

/// Reads a server's counters at scrape time.
#[derive(Debug)]
struct ServerCollector {
    inner: Weak<Inner>,
    stats: Arc<Stats>,
}

/// Encodes one unlabelled counter or gauge.
fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let descriptor = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(descriptor)
}

/// Encodes a metric with one label, one sample per value.
fn labelled<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    label: &str,
    samples: impl IntoIterator<Item = (String, M)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in samples {
        let labels = [(label, value.as_str())];
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The budgets: what each refused, how much of each is in use, and the settings.
fn encode_limits(encoder: &mut DescriptorEncoder<'_>, inner: &Inner, s: &Stats) -> fmt::Result {
    use super::limits::Refusal;
    let mut refusals = inner.limits.refusals();
    refusals[Refusal::ALL
        .iter()
        .position(|r| *r == Refusal::QueuedBytes)
        .unwrap_or(0)] += s.queued_bytes_refusals.load(Ordering::Relaxed);
    labelled(
        encoder,
        "bayeux_limit_refusals",
        "Requests, connections and messages refused by a budget, by the budget's setting (each refusal counted; the log says it once per client and interval).",
        MetricType::Counter,
        "limit",
        Refusal::ALL
            .iter()
            .zip(refusals)
            .map(|(r, n)| (r.label().to_string(), ConstCounter::new(n))),
    )?;
    let c = &inner.config;
    let gauge = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
    labelled(
        encoder,
        "bayeux_limit",
        "The budgets in force, by setting.",
        MetricType::Gauge,
        "limit",
        [
            ("max-connections", c.max_connections),
            ("max-connections-per-address", c.max_connections_per_address),
            (
                "max-pending-websockets-per-address",
                c.max_pending_websockets_per_address,
            ),
            ("max-sessions", c.max_sessions),
            ("max-sessions-per-address", c.max_sessions_per_address),
            (
                "max-auth-failures-per-address",
                c.max_auth_failures_per_address as usize,
            ),
            ("max-queued-bytes", c.max_queued_bytes),
            ("max-queue-bytes", c.max_queue_bytes),
            ("max-body-bytes", c.max_body_bytes),
            ("max-body-bytes-per-address", c.max_body_bytes_per_address),
        ]
        .into_iter()
        .map(|(name, n)| (name.to_string(), gauge(n))),
    )?;
    single(
        encoder,
        "bayeux_connections_open",
        "TCP connections open on the server's own listener.",
        &gauge(inner.limits.open_connections()),
    )?;
    single(
        encoder,
        "bayeux_websockets_pending",
        "Open WebSockets that have not handshaken yet.",
        &gauge(inner.limits.pending_websockets()),
    )?;
    single(
        encoder,
        "bayeux_queued_bytes",
        "Bytes held by all session queues together (queued or unacknowledged), as max-queued-bytes counts them.",
        &gauge(s.queued_bytes.load(Ordering::Relaxed)),
    )?;
    single(
        encoder,
        "bayeux_body_bytes",
        "Bytes of request bodies being read and handled right now, as max-body-bytes counts them.",
        &gauge(inner.limits.body_bytes()),
    )?;
    single(
        encoder,
        "bayeux_limit_tracked_clients",
        "Client addresses the per-address budgets track right now.",
        &gauge(inner.limits.tracked_clients()),
    )
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &*self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        labelled(
            &mut encoder,
            "bayeux_sessions",
            "Live sessions, by the transport that last carried them.",
            MetricType::Gauge,
            "transport",
            TRANSPORTS.iter().zip(&s.sessions).map(|(t, n)| {
                (
                    t.as_str().to_string(),
                    ConstGauge::new(n.load(Ordering::Relaxed).max(0)),
                )
            }),
        )?;
        labelled(
            &mut encoder,
            "bayeux_handshakes",
            "Handshakes, by outcome.",
            MetricType::Counter,
            "outcome",
            HandshakeOutcome::ALL
                .iter()
                .zip(&s.handshakes)
                .map(|(o, n)| (o.label().to_string(), ConstCounter::new(load(n)))),
        )?;
        labelled(
            &mut encoder,
            "bayeux_sessions_closed",
            "Sessions ended, by reason.",
            MetricType::Counter,
            "reason",
            super::session::CloseReason::ALL
                .iter()
                .zip(&s.closed)
                .map(|(r, n)| (r.label().to_string(), ConstCounter::new(load(n)))),
        )?;
        single(
            &mut encoder,
            "bayeux_messages_published",
            "Messages accepted for delivery: client publishes and the server's own publish, deliver and deliver_to_user.",
            &ConstCounter::new(load(&s.published)),
        )?;
        single(
            &mut encoder,
            "bayeux_messages_delivered",
            "Messages taken from session queues by a transport to be written to a client.",
            &ConstCounter::new(load(&s.delivered)),
        )?;
        labelled(
            &mut encoder,
            "bayeux_messages_dropped",
            "Messages a session did not receive, by reason.",
            MetricType::Counter,
            "reason",
            DropReason::ALL
                .iter()
                .zip(&s.dropped_by)
                .map(|(r, n)| (r.label().to_string(), ConstCounter::new(load(n)))),
        )?;
        single(
            &mut encoder,
            "bayeux_connects_pending",
            "/meta/connect requests held right now (long polls and WebSocket heartbeats).",
            &ConstGauge::new(s.connects_pending.load(Ordering::Relaxed).max(0)),
        )?;
        if let Some(link) = self.inner.upgrade().and_then(|i| i.broker.link_stats()) {
            single(
                &mut encoder,
                "bayeux_broker_connected",
                "1 while the broker's link to the other nodes is up.",
                &ConstGauge::new(i64::from(link.connected)),
            )?;
            for (name, help, value) in [
                (
                    "bayeux_broker_messages_sent",
                    "Messages handed to the broker's link for the other nodes.",
                    link.sent,
                ),
                (
                    "bayeux_broker_messages_received",
                    "Messages from the other nodes handed to this node's delivery.",
                    link.received,
                ),
                (
                    "bayeux_broker_messages_dropped",
                    "Messages for the other nodes that the link could not carry (it was down, or its queue was full); they reached this node's recipients only.",
                    link.dropped,
                ),
                (
                    "bayeux_broker_duplicates",
                    "Copies of a message brought by overlapping subscriptions, delivered once.",
                    link.duplicates,
                ),
                (
                    "bayeux_broker_rejected",
                    "Messages received from the link that named no valid destination.",
                    link.rejected,
                ),
                (
                    "bayeux_broker_reconnects",
                    "Times the broker's link came back after being lost.",
                    link.reconnects,
                ),
                (
                    "bayeux_broker_slow_consumer",
                    "Times the NATS client dropped messages from other nodes because a subscription's buffer was full.",
                    link.slow_consumer,
                ),
            ] {
                single(&mut encoder, name, help, &ConstCounter::new(value))?;
            }
        }
        if let Some(inner) = self.inner.upgrade() {
            encode_limits(&mut encoder, &inner, s)?;
            single(
                &mut encoder,
                "bayeux_websockets_open",
                "Open WebSocket connections.",
                &ConstGauge::new(inner.sockets.load(Ordering::Relaxed) as i64),
            )?;
            if let Some(log) = inner.replay.as_ref().and_then(|r| r.memory_stats()) {
                let gauge = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
                single(
                    &mut encoder,
                    "bayeux_replay_retained_messages",
                    "Messages the in-memory replay log of the durable channels holds.",
                    &gauge(log.messages),
                )?;
                single(
                    &mut encoder,
                    "bayeux_replay_retained_bytes",
                    "Bytes of the messages the in-memory replay log holds (bounded by max_bytes).",
                    &gauge(log.bytes),
                )?;
                single(
                    &mut encoder,
                    "bayeux_replay_channels",
                    "Channels (and channel and user pairs) the in-memory replay log holds (bounded by max_channels).",
                    &gauge(log.channels),
                )?;
                single(
                    &mut encoder,
                    "bayeux_replay_evicted",
                    "Messages the in-memory replay log dropped, oldest first, to stay within max_bytes and max_channels.",
                    &ConstCounter::new(log.evicted),
                )?;
            }
        }
        labelled(
            &mut encoder,
            "bayeux_http_requests",
            "Responses of the Bayeux endpoint, by HTTP status.",
            MetricType::Counter,
            "status",
            s.http_responses()
                .map(|(status, n)| (status.to_string(), ConstCounter::new(n))),
        )?;
        let (sum, count, buckets) = s.flush_latency.read();
        let mut histogram = encoder.encode_descriptor(
            "bayeux_publish_to_flush",
            "Per batch a transport takes from a session queue: the time since the fan-out of its first message began.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        histogram
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_puts_each_observation_in_its_bucket() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.read();
        assert_eq!(count, 4);
        assert!((sum - 60.00315).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0001, 2));
        assert_eq!(buckets[5], (0.005, 1));
        assert_eq!(buckets[16], (f64::INFINITY, 1));
    }

    #[test]
    fn stamps_measure_from_the_instant_they_stand_for() {
        let h = LatencyHistogram::default();
        // An instant before the histogram was made is its origin, still a stamp (not 0).
        assert_eq!(h.stamp(h.epoch - Duration::from_secs(1)), 1);
        let before = Instant::now();
        let stamp = h.stamp(before);
        h.observe_since_stamp(stamp);
        let (sum, count, _) = h.read();
        assert_eq!(count, 1);
        assert!(sum <= before.elapsed().as_secs_f64(), "{sum}");
    }
}

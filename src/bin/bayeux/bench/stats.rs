//! What the load tool counts: counters, sharded latency histograms, and the report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

const SHARDS: usize = 16;

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Latency histograms in shards, so that thousands of subscribers rarely contend.
pub struct Latencies {
    shards: Vec<Mutex<(Histogram<u64>, Histogram<u64>)>>,
}

impl Latencies {
    pub fn new() -> Self {
        Latencies {
            shards: (0..SHARDS)
                .map(|_| Mutex::new((histogram(), histogram())))
                .collect(),
        }
    }

    /// Records one publish-to-deliver latency in microseconds (into the total and the
    /// current progress window).
    pub fn record(&self, shard: usize, micros: u64) {
        let mut s = self.shards[shard % SHARDS].lock().unwrap();
        let v = micros.max(1);
        let _ = s.0.record(v);
        let _ = s.1.record(v);
    }

    /// Takes the window histogram (for the progress line) and resets it.
    pub fn take_window(&self) -> Histogram<u64> {
        let mut out = histogram();
        for s in &self.shards {
            let mut s = s.lock().unwrap();
            let _ = out.add(&s.1);
            s.1.reset();
        }
        out
    }

    pub fn total(&self) -> Histogram<u64> {
        let mut out = histogram();
        for s in &self.shards {
            let _ = out.add(&s.lock().unwrap().0);
        }
        out
    }
}

/// How many delivered messages each long-poll response or WebSocket frame carried (those
/// that carried any), in shards as the latencies.
pub struct PerResponse {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl PerResponse {
    pub fn new() -> Self {
        PerResponse {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, 10_000_000, 3)
                            .expect("valid histogram bounds"),
                    )
                })
                .collect(),
        }
    }

    /// Records a response or frame that carried `messages` deliveries (none: nothing).
    pub fn record(&self, shard: usize, messages: u64) {
        if messages > 0 {
            let _ = self.shards[shard % SHARDS].lock().unwrap().record(messages);
        }
    }

    pub fn summary(&self) -> MessagesPer {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("valid bounds");
        for s in &self.shards {
            let _ = h.add(&*s.lock().unwrap());
        }
        if h.is_empty() {
            return MessagesPer::default();
        }
        MessagesPer {
            mean: h.mean(),
            p99: h.value_at_quantile(0.99),
            count: h.len(),
        }
    }
}

/// Messages per long-poll response or WebSocket frame received by the subscribers,
/// counting those that carried at least one delivery.
#[derive(Serialize, Default)]
pub struct MessagesPer {
    pub mean: f64,
    pub p99: u64,
    /// Responses or frames that carried deliveries.
    pub count: u64,
}

/// Counters shared by every task of a run.
#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub handshakes: AtomicU64,
    pub http_errors: AtomicU64,
    pub bayeux_errors: AtomicU64,
    pub rehandshakes: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The result of a run, printed for people or as JSON for scripts.
#[derive(Serialize, Default)]
pub struct Report {
    pub url: String,
    pub mode: String,
    /// How the subscribers receive: `long-polling` or `websocket`.
    pub transport: String,
    pub subscribers: usize,
    /// Sessions that subscribed, connected once and never read again.
    pub stalled: usize,
    pub channels: usize,
    pub publishers: usize,
    pub publish_seconds: f64,
    pub published: u64,
    pub published_per_sec: f64,
    pub delivered: u64,
    /// Delivered per second of publishing (as always: deliveries that arrive during
    /// the drain count too).
    pub delivered_per_sec: f64,
    /// Seconds from the start of publishing to the last delivery: above
    /// `publish_seconds` when a backlog was still being delivered after the publishers
    /// stopped (`delivered / last_delivery_seconds` is then the sustained rate).
    pub last_delivery_seconds: f64,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub latency_ms: Percentiles,
    pub messages_per_response: MessagesPer,
    pub handshakes: u64,
    pub handshakes_per_sec: f64,
    /// Seconds from the first subscriber's start to the last one's subscription.
    pub setup_seconds: f64,
    pub rehandshakes: u64,
    pub http_errors: u64,
    pub bayeux_errors: u64,
    /// CPU seconds (user + system) the load tool itself used.
    pub tool_cpu_seconds: f64,
    /// Broadcast mode: each broadcast's arrivals at this process's subscribers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub broadcasts: Vec<BroadcastReport>,
    /// Broadcast mode: the median time from publish to the last subscriber, over the
    /// broadcasts that reached every subscriber of this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast_reach_ms: Option<f64>,
}

/// One broadcast's arrivals at the subscribers of this process (broadcast mode). The
/// times are wall-clock microseconds, comparable between processes of one machine.
#[derive(Serialize, Default, Clone)]
pub struct BroadcastReport {
    /// The broadcast's sequence number.
    pub seq: u64,
    /// When it was published (its stamp).
    pub sent_us: u64,
    /// Subscribers of this process that received it.
    pub received: u64,
    /// The first and the last arrival here.
    pub first_us: Option<u64>,
    pub last_us: Option<u64>,
    /// From publish to the last arrival here, when every subscriber here received it.
    pub reach_ms: Option<f64>,
}

/// Broadcast mode: per broadcast (sequence number), its stamp, how many subscribers
/// received it and the first and last arrival.
#[derive(Default)]
pub struct Broadcasts {
    seen: Mutex<std::collections::BTreeMap<u64, (u64, u64, u64, u64)>>,
}

impl Broadcasts {
    /// A subscriber received broadcast `seq`, stamped `sent`, at `now` (µs).
    pub fn record(&self, seq: u64, sent: u64, now: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let e = seen.entry(seq).or_insert((sent, 0, now, now));
        e.1 += 1;
        e.2 = e.2.min(now);
        e.3 = e.3.max(now);
    }

    /// Every broadcast sent here (`sent`: sequence and stamp) or seen here.
    pub fn report(&self, sent: &[(u64, u64)], subscribers: usize) -> Vec<BroadcastReport> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut seqs: Vec<u64> = sent
            .iter()
            .map(|s| s.0)
            .chain(seen.keys().copied())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.into_iter()
            .map(|seq| {
                let stamp = sent.iter().find(|s| s.0 == seq).map(|s| s.1);
                match seen.get(&seq) {
                    Some(&(t, n, first, last)) => BroadcastReport {
                        seq,
                        sent_us: stamp.unwrap_or(t),
                        received: n,
                        first_us: Some(first),
                        last_us: Some(last),
                        reach_ms: (n == subscribers as u64)
                            .then(|| last.saturating_sub(stamp.unwrap_or(t)) as f64 / 1000.0),
                    },
                    None => BroadcastReport {
                        seq,
                        sent_us: stamp.unwrap_or(0),
                        ..BroadcastReport::default()
                    },
                }
            })
            .collect()
    }
}

/// The median of `values` (none: `None`).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// `1 channel`, `4 channels`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

impl Report {
    /// Prints the report on stdout: one JSON line with `json`, else for a person.
    pub fn print(&self, json: bool) -> Result<(), Box<dyn std::error::Error>> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            self.print_human();
        }
        Ok(())
    }

    fn print_human(&self) {
        println!("bayeux bench: {} ({})", self.url, self.mode);
        println!(
            "  sessions: {} ({}) over {}, {}{}",
            plural(self.subscribers, "subscriber"),
            self.transport,
            plural(self.channels, "channel"),
            plural(self.publishers, "publisher"),
            if self.stalled > 0 {
                format!(", {} stalled", self.stalled)
            } else {
                String::new()
            }
        );
        println!(
            "  handshakes: {} ({:.0}/s), re-handshakes: {}",
            self.handshakes, self.handshakes_per_sec, self.rehandshakes
        );
        println!(
            "  published: {} in {:.1} s ({:.0}/s)",
            self.published, self.publish_seconds, self.published_per_sec
        );
        println!(
            "  delivered: {} ({:.0}/s), expected {}, lost {}, duplicated {}",
            self.delivered,
            self.delivered_per_sec,
            self.expected_deliveries,
            self.lost,
            self.duplicates
        );
        let l = &self.latency_ms;
        println!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if self.mode.starts_with("pubsub") {
            let m = &self.messages_per_response;
            let unit = if self.transport == "websocket" {
                "frame"
            } else {
                "response"
            };
            println!(
                "  messages per {unit}: mean {:.2}  p99 {}  (over {} {unit}s that carried any)",
                m.mean, m.p99, m.count
            );
        }
        for b in &self.broadcasts {
            println!(
                "  broadcast {}: received by {} of {} subscribers here; last after {}",
                b.seq,
                b.received,
                self.subscribers,
                b.reach_ms
                    .map_or("-".to_string(), |ms| format!("{ms:.1} ms"))
            );
        }
        if let Some(ms) = self.broadcast_reach_ms {
            println!("  broadcast to every subscriber here: median {ms:.1} ms");
        }
        println!(
            "  errors: http {}, bayeux {}; load tool CPU {:.2} s",
            self.http_errors, self.bayeux_errors, self.tool_cpu_seconds
        );
    }
}

/// CPU time (user + system) of this process so far.
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Raises this process's open-file limit to its hard limit (thousands of sessions each
/// hold a connection).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

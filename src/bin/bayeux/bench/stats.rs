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
    pub delivered_per_sec: f64,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub latency_ms: Percentiles,
    pub messages_per_response: MessagesPer,
    pub handshakes: u64,
    pub handshakes_per_sec: f64,
    pub rehandshakes: u64,
    pub http_errors: u64,
    pub bayeux_errors: u64,
    /// CPU seconds (user + system) the load tool itself used.
    pub tool_cpu_seconds: f64,
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
    pub fn print_human(&self) {
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

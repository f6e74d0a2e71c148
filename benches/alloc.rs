//! Heap allocations on the fan-out path and the memory of an idle session, counted by a
//! global allocator that wraps the system's (no criterion: exact counts, not timings).
//!
//! - `fan-out`: N in-process sessions subscribed to `/chat`; after a warm-up (so every
//!   session's queue has capacity), the allocations of one `Server::publish`, and the
//!   same for a publish that reaches nobody. Their difference divided by N is what each
//!   delivery costs besides the encoding, which happens once per publish.
//! - `index`: `ChannelIndex::deliver` alone, to N no-op recipients; also with the
//!   channel matching two patterns (N on `/chat`, one on `/**`), where the recipients
//!   are de-duplicated.
//! - `idle session`: live heap (allocated minus freed) per session after handshaking,
//!   then subscribing, N sessions through `Server::handle` (no sockets, so no transport
//!   buffers), the server's maps included.
//!
//! Run with `cargo bench --bench alloc`; it takes a few seconds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bayeux::protocol::ChannelName;
use bayeux::server::{ChannelIndex, Recipient, RecipientId, Server, ServerConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// The system allocator, counting what goes through it.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count_alloc(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    ALLOC_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

fn count_free(size: usize) {
    FREES.fetch_add(1, Ordering::Relaxed);
    FREED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which `System` shares.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        count_free(layout.size());
    }

    /// A reallocation counts as one allocation of the new size and one free of the old.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_alloc(new_size);
            count_free(layout.size());
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    allocs: u64,
    alloc_bytes: u64,
    frees: u64,
    freed_bytes: u64,
}

impl Snapshot {
    fn now() -> Self {
        Snapshot {
            allocs: ALLOCS.load(Ordering::SeqCst),
            alloc_bytes: ALLOC_BYTES.load(Ordering::SeqCst),
            frees: FREES.load(Ordering::SeqCst),
            freed_bytes: FREED_BYTES.load(Ordering::SeqCst),
        }
    }

    /// Allocations (reallocations included) since `earlier`.
    fn allocs_since(&self, earlier: &Snapshot) -> u64 {
        self.allocs - earlier.allocs
    }

    /// Bytes allocated since `earlier`.
    fn bytes_since(&self, earlier: &Snapshot) -> u64 {
        self.alloc_bytes - earlier.alloc_bytes
    }

    /// Growth of the live heap since `earlier` (allocated minus freed), in bytes.
    fn live_bytes_since(&self, earlier: &Snapshot) -> i64 {
        (self.alloc_bytes - earlier.alloc_bytes) as i64
            - (self.freed_bytes - earlier.freed_bytes) as i64
    }

    /// Growth of the number of live blocks since `earlier`.
    fn live_blocks_since(&self, earlier: &Snapshot) -> i64 {
        (self.allocs - earlier.allocs) as i64 - (self.frees - earlier.frees) as i64
    }
}

/// What one measured operation allocated.
#[derive(Clone, Copy)]
struct Cost {
    allocs: u64,
    bytes: u64,
}

/// The cheapest of `costs` (by allocations): an occasional growth of a shared structure
/// shows in the median and the maximum, not in the steady state.
fn summary(mut costs: Vec<Cost>) -> (Cost, Cost, Cost) {
    costs.sort_by_key(|c| (c.allocs, c.bytes));
    (costs[0], costs[costs.len() / 2], costs[costs.len() - 1])
}

struct Null(RecipientId);

impl Recipient for Null {
    fn recipient_id(&self) -> RecipientId {
        self.0
    }
    fn deliver(&self, message: &Bytes) -> bool {
        black_box(message);
        true
    }
}

async fn call(server: &Server, body: Value) -> Bytes {
    let req = http::Request::post("/cometd")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let res = server.handle(req).await;
    res.into_body().collect().await.unwrap().to_bytes()
}

fn config() -> ServerConfig {
    ServerConfig::default()
        .with_max_queue(10_000)
        .with_max_interval(Duration::from_secs(3600))
}

async fn handshake(server: &Server) -> String {
    let reply: Value = serde_json::from_slice(
        &call(
            server,
            json!({"channel": "/meta/handshake", "version": "1.0",
                   "supportedConnectionTypes": ["long-polling"]}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(reply[0]["successful"], true, "handshake: {reply}");
    reply[0]["clientId"].as_str().unwrap().to_string()
}

async fn subscribe(server: &Server, id: &str, pattern: &str) {
    let reply: Value = serde_json::from_slice(
        &call(
            server,
            json!({"channel": "/meta/subscribe", "clientId": id, "subscription": pattern}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(reply[0]["successful"], true, "subscribe: {reply}");
}

/// Answers every session's `/meta/connect` at once; returns how many messages came back.
async fn drain(server: &Server, ids: &[String]) -> usize {
    let mut messages = 0;
    for id in ids {
        let reply: Value = serde_json::from_slice(
            &call(
                server,
                json!({"channel": "/meta/connect", "clientId": id,
                       "connectionType": "long-polling", "advice": {"timeout": 0}}),
            )
            .await,
        )
        .unwrap();
        messages += reply.as_array().unwrap().len() - 1;
    }
    messages
}

struct FanOut {
    n: usize,
    overlap: bool,
    /// One publish to the N subscribers of `/chat`.
    to_all: (Cost, Cost, Cost),
    /// One publish to a channel nobody subscribed to (a name as long; but the `/**`
    /// subscriber, if any): the per-publish part.
    to_none: (Cost, Cost, Cost),
}

const PUBLISHES: usize = 20;

/// N sessions subscribed to `/chat`, plus one to `/**` when `overlap` (so that `/chat`
/// matches two patterns and the index de-duplicates its recipients).
async fn fan_out(n: usize, overlap: bool) -> FanOut {
    let server = Server::new(config());
    let mut ids = Vec::with_capacity(n + 1);
    for _ in 0..n {
        let id = handshake(&server).await;
        subscribe(&server, &id, "/chat").await;
        ids.push(id);
    }
    if overlap {
        let id = handshake(&server).await;
        subscribe(&server, &id, "/**").await;
        ids.push(id);
    }
    let n = ids.len();
    let data = json!({"user": "alice", "text": "hello there"});
    // Warm-up: every queue grows to its first capacity, the connects' paths run once.
    for _ in 0..3 {
        for _ in 0..3 {
            server.publish("/chat", data.clone()).await.unwrap();
        }
        assert_eq!(drain(&server, &ids).await, 3 * n);
    }
    let mut to_all = Vec::with_capacity(PUBLISHES);
    let mut to_none = Vec::with_capacity(PUBLISHES);
    for _ in 0..PUBLISHES {
        let (a, b) = (data.clone(), data.clone());
        let before = Snapshot::now();
        let receipt = server.publish("/chat", a).await.unwrap();
        let after = Snapshot::now();
        assert_eq!(receipt.local_recipients, n);
        to_all.push(Cost {
            allocs: after.allocs_since(&before),
            bytes: after.bytes_since(&before),
        });

        let before = Snapshot::now();
        let receipt = server.publish("/none", b).await.unwrap();
        let after = Snapshot::now();
        // The `/**` subscriber, when there is one, gets this one too.
        assert_eq!(receipt.local_recipients, usize::from(overlap));
        to_none.push(Cost {
            allocs: after.allocs_since(&before),
            bytes: after.bytes_since(&before),
        });

        assert_eq!(drain(&server, &ids).await, n + usize::from(overlap));
    }
    FanOut {
        n,
        overlap,
        to_all: summary(to_all),
        to_none: summary(to_none),
    }
}

/// `ChannelIndex::deliver` to `n` no-op recipients of `/chat`, plus one of `/**` when
/// `overlap`: the cheapest, median and largest of a run of delivers.
fn index_deliver(n: usize, overlap: bool) -> (Cost, Cost, Cost) {
    let index = ChannelIndex::new();
    let chat = ChannelName::parse("/chat").unwrap();
    for i in 0..n as u64 {
        index.subscribe(&chat, Arc::new(Null(i)));
    }
    if overlap {
        index.subscribe(
            &ChannelName::parse("/**").unwrap(),
            Arc::new(Null(u64::MAX)),
        );
    }
    let expected = n + usize::from(overlap);
    let message = Bytes::from_static(br#"[{"channel":"/chat","data":{"text":"hello"}}]"#);
    for _ in 0..3 {
        assert_eq!(index.deliver(&chat, &message), expected);
    }
    let costs = (0..PUBLISHES)
        .map(|_| {
            let before = Snapshot::now();
            let queued = index.deliver(&chat, &message);
            let after = Snapshot::now();
            assert_eq!(queued, expected);
            Cost {
                allocs: after.allocs_since(&before),
                bytes: after.bytes_since(&before),
            }
        })
        .collect();
    summary(costs)
}

struct Idle {
    n: usize,
    /// Live bytes and blocks per session after handshaking.
    handshaken: (f64, f64),
    /// ... and after subscribing to one channel too.
    subscribed: (f64, f64),
}

async fn idle_sessions(n: usize) -> Idle {
    let server = Server::new(config());
    // One session first, so that one-time costs (lazy statics, the runtime's first
    // timer, ...) are not charged to the N measured.
    let first = handshake(&server).await;
    subscribe(&server, &first, "/chat").await;
    let mut ids = Vec::with_capacity(n);
    let start = Snapshot::now();
    for _ in 0..n {
        ids.push(handshake(&server).await);
    }
    let handshaken = Snapshot::now();
    for id in &ids {
        subscribe(&server, id, "/chat").await;
    }
    let subscribed = Snapshot::now();
    assert_eq!(server.session_count(), n + 1);
    // `ids` itself was allocated before `start`, with its final capacity.
    let per = |live: i64| live as f64 / n as f64;
    Idle {
        n,
        handshaken: (
            per(handshaken.live_bytes_since(&start)),
            per(handshaken.live_blocks_since(&start)),
        ),
        subscribed: (
            per(subscribed.live_bytes_since(&start)),
            per(subscribed.live_blocks_since(&start)),
        ),
    }
}

fn main() {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sizes = [1_000usize, 10_000];

    println!("fan-out: one Server::publish to N long-polling sessions (in-process)");
    println!(
        "{:>7} | {:>10} | {:>20} | {:>14} | {:>20} | {:>12} | {:>11}",
        "N",
        "patterns",
        "allocs min/med/max",
        "bytes (median)",
        "to nobody allocs",
        "allocs/deliv",
        "bytes/deliv"
    );
    for &n in &sizes {
        for overlap in [false, true] {
            let f = rt.block_on(fan_out(n, overlap));
            let (min, med, max) = f.to_all;
            let (nmin, nmed, nmax) = f.to_none;
            println!(
                "{:>7} | {:>10} | {:>20} | {:>14} | {:>20} | {:>12.4} | {:>11.4}",
                f.n,
                if f.overlap { "/chat, /**" } else { "/chat" },
                format!("{} / {} / {}", min.allocs, med.allocs, max.allocs),
                med.bytes,
                format!("{} / {} / {}", nmin.allocs, nmed.allocs, nmax.allocs),
                (med.allocs as f64 - nmed.allocs as f64) / f.n as f64,
                (med.bytes as f64 - nmed.bytes as f64) / f.n as f64,
            );
        }
    }

    println!();
    println!("ChannelIndex::deliver to N no-op recipients");
    println!(
        "{:>7} | {:>10} | {:>20} | {:>14} | {:>12} | {:>11}",
        "N", "patterns", "allocs min/med/max", "bytes (median)", "allocs/deliv", "bytes/deliv"
    );
    for &n in &sizes {
        for overlap in [false, true] {
            let (min, med, max) = index_deliver(n, overlap);
            let recipients = n + usize::from(overlap);
            println!(
                "{:>7} | {:>10} | {:>20} | {:>14} | {:>12.4} | {:>11.4}",
                recipients,
                if overlap { "/chat, /**" } else { "/chat" },
                format!("{} / {} / {}", min.allocs, med.allocs, max.allocs),
                med.bytes,
                med.allocs as f64 / recipients as f64,
                med.bytes as f64 / recipients as f64,
            );
        }
    }

    println!();
    println!("idle session: live heap per session (Server::handle, no sockets)");
    println!(
        "{:>7} | {:>24} | {:>24}",
        "N", "handshaken bytes/blocks", "+ subscribed bytes/blocks"
    );
    for &n in &sizes {
        let idle = rt.block_on(idle_sessions(n));
        println!(
            "{:>7} | {:>24} | {:>24}",
            idle.n,
            format!("{:.0} / {:.1}", idle.handshaken.0, idle.handshaken.1),
            format!("{:.0} / {:.1}", idle.subscribed.0, idle.subscribed.1),
        );
    }
    println!();
    println!("({:.1} s)", started.elapsed().as_secs_f64());
}

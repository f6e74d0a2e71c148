//! Subscription lookup and fan-out: the costs that grow with the number of subscribers.
//!
//! - `match/10k_subscriptions`: one publish against an index of 10 000 subscriptions
//!   (exact, `*` and `**` patterns over 3 000 channels) that matches only a handful.
//! - `fanout/publish_to_N_sessions`: one in-process publish queued on N real sessions.
//! - `e2e/N_subscribers`: publish, then every subscriber's `/meta/connect` answered and
//!   encoded (publish → broker → session queues → connect responses).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bayeux::protocol::ChannelName;
use bayeux::server::{ChannelIndex, Recipient, RecipientId, Server, ServerConfig};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

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

fn matching(c: &mut Criterion) {
    let index = ChannelIndex::new();
    for i in 0..10_000u64 {
        let pattern = match i % 3 {
            0 => format!("/app/{}/events", i % 3_000),
            1 => format!("/app/{}/*", i % 3_000),
            _ => format!("/app/{}/**", i % 3_000),
        };
        index.subscribe(&ChannelName::parse(&pattern).unwrap(), Arc::new(Null(i)));
    }
    let channel = ChannelName::parse("/app/42/events").unwrap();
    let message = Bytes::from_static(b"{}");
    c.bench_function("match/10k_subscriptions", |b| {
        b.iter(|| index.deliver(black_box(&channel), &message))
    });
}

async fn call(server: &Server, body: Value) -> Vec<u8> {
    let req = http::Request::post("/cometd")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let res = server.handle(req).await;
    res.into_body().collect().await.unwrap().to_bytes().to_vec()
}

/// A server with `n` sessions subscribed to `/chat`; returns their clientIds.
async fn sessions(n: usize) -> (Server, Vec<String>) {
    let server = Server::new(
        ServerConfig::default()
            .with_max_queue(10_000)
            .with_max_interval(Duration::from_secs(3600)),
    );
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let reply: Value = serde_json::from_slice(
            &call(
                &server,
                json!({"channel": "/meta/handshake", "version": "1.0"}),
            )
            .await,
        )
        .unwrap();
        let id = reply[0]["clientId"].as_str().unwrap().to_string();
        call(
            &server,
            json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/chat"}),
        )
        .await;
        ids.push(id);
    }
    (server, ids)
}

async fn drain(server: &Server, ids: &[String]) -> usize {
    let mut bytes = 0;
    for id in ids {
        bytes += call(
            server,
            json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
                   "advice": {"timeout": 0}}),
        )
        .await
        .len();
    }
    bytes
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = json!({"user": "alice", "text": "hello there"});
    let mut group = c.benchmark_group("fanout");
    group.sample_size(20);
    for n in [100usize, 1_000, 10_000] {
        let (server, ids) = rt.block_on(sessions(n));
        group.bench_with_input(BenchmarkId::new("publish_to_sessions", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Publish in chunks that fit in the queues, then drain them untimed.
                    let k = left.min(1_000);
                    let start = Instant::now();
                    rt.block_on(async {
                        for _ in 0..k {
                            server.publish("/chat", data.clone()).await.unwrap();
                        }
                    });
                    total += start.elapsed();
                    rt.block_on(drain(&server, &ids));
                    left -= k;
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("e2e");
    group.sample_size(10);
    for n in [1usize, 100, 10_000] {
        let (server, ids) = rt.block_on(sessions(n));
        group.bench_with_input(BenchmarkId::new("publish_and_connects", n), &n, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    server.publish("/chat", data.clone()).await.unwrap();
                    drain(&server, &ids).await
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching, fanout);
criterion_main!(benches);

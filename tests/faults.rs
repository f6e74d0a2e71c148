//! Fault injection: a loopback proxy that cuts long-poll responses in the middle, while a
//! burst of small messages is published, with the server's default queue bounds. With
//! CometD's ack extension every message arrives exactly once and in order; without it,
//! the loss is measured and reported.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bayeux::client::{Client, Subscription, TransportChoice};
use bayeux::server::{Server, ServerConfig};
use futures::{FutureExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// A burst like the one a user reported: a few thousand messages of about 60 bytes of
/// data each, published as fast as the server takes them.
const MESSAGES: u64 = 3_000;

/// About 60 bytes of data for message `i`.
fn data(i: u64) -> serde_json::Value {
    json!({"seq": i, "text": "an interaction changed state; agent desktop, please update"})
}

/// Forwards loopback TCP to `upstream`, and cuts every `every`-th response on
/// connections that carry `/meta/connect` requests: half of its first chunk is
/// forwarded, then both sides are closed.
async fn cutting_proxy(upstream: SocketAddr, every: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let responses = Arc::new(AtomicUsize::new(0));
    let cuts = Arc::new(AtomicUsize::new(0));
    let cuts_out = cuts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (responses, cuts) = (responses.clone(), cuts.clone());
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let is_poll = Arc::new(AtomicBool::new(false));
                let new_response = Arc::new(AtomicBool::new(false));
                let (poll_up, new_up) = (is_poll.clone(), new_response.clone());
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if buf[..n].windows(13).any(|w| w == b"/meta/connect") {
                            poll_up.store(true, Ordering::SeqCst);
                        }
                        new_up.store(true, Ordering::SeqCst);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut cutting = false;
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if new_response.swap(false, Ordering::SeqCst) && is_poll.load(Ordering::SeqCst)
                    {
                        cutting = responses.fetch_add(1, Ordering::SeqCst) % every == every - 1;
                    }
                    if cutting {
                        let _ = cw.write_all(&buf[..n / 2]).await;
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    (addr, cuts_out)
}

async fn subscriber(url: &str, ack: bool) -> (Client, Subscription, Subscription) {
    // The proxy reads requests to find the long polls: long-polling it is (WebSocket
    // frames from a client are masked; tests/client_websocket.rs cuts sockets).
    let client = Client::builder(url)
        .transport(TransportChoice::LongPolling)
        .ack(ack)
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap();
    client.handshake().await.unwrap();
    let data = client.subscribe("/faults/data").await.unwrap();
    let end = client.subscribe("/faults/end").await.unwrap();
    (client, data, end)
}

/// Publishes MESSAGES numbered messages through a cutting proxy to three subscribers;
/// returns what each received (in arrival order) and how many responses were cut.
async fn run(ack: bool) -> (Vec<Vec<u64>>, usize) {
    // The default queue bounds: the burst must fit in them.
    let server = Server::new(ServerConfig::default().with_timeout(Duration::from_millis(500)));
    let listening = server
        .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
        .await
        .unwrap();
    let (proxy, cuts) = cutting_proxy(listening.local_addr(), 3).await;
    let url = format!("http://{proxy}/cometd");
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(subscriber(&url, ack).await);
    }
    for i in 0..MESSAGES {
        let receipt = server.publish("/faults/data", data(i)).await.unwrap();
        assert_eq!(
            receipt.local_recipients, 3,
            "message {i} was not queued for all"
        );
    }
    let mut received = Vec::new();
    for (_client, data, end) in &mut subs {
        // The end marker comes after every data message that was not lost (each
        // session's messages keep their order); publish it until this subscriber sees one.
        loop {
            server.publish("/faults/end", json!("end")).await.unwrap();
            if timeout(Duration::from_millis(500), end.next())
                .await
                .is_ok()
            {
                break;
            }
        }
        let mut got = Vec::new();
        // Everything before the end marker is already queued; take it without waiting
        // (unconstrained: tokio's cooperative budget would stop a long loop early).
        while let Some(Some(m)) = tokio::task::unconstrained(data.next()).now_or_never() {
            got.push(m.data.unwrap()["seq"].as_u64().unwrap());
        }
        received.push(got);
    }
    (received, cuts.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acks_every_message_arrives_exactly_once_in_order_despite_cut_responses() {
    let (received, cuts) = timeout(Duration::from_secs(120), run(true))
        .await
        .expect("bounded");
    assert!(cuts > 0, "the proxy cut no response");
    let expected: Vec<u64> = (0..MESSAGES).collect();
    for (i, got) in received.iter().enumerate() {
        assert_eq!(
            got.len(),
            expected.len(),
            "subscriber {i}: {} of {MESSAGES} ({cuts} responses cut)",
            got.len()
        );
        assert!(
            got == &expected,
            "subscriber {i}: duplicated or out of order"
        );
    }
    println!(
        "with acks: {cuts} responses cut, 3 x {MESSAGES} messages delivered exactly once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_acks_cut_responses_lose_messages_and_the_loss_is_reported() {
    let (received, cuts) = timeout(Duration::from_secs(120), run(false))
        .await
        .expect("bounded");
    let lost: usize = received.iter().map(|g| MESSAGES as usize - g.len()).sum();
    println!(
        "without acks: {cuts} responses cut, {lost} of {} deliveries lost",
        3 * MESSAGES
    );
    assert!(cuts > 0, "the proxy cut no response");
    // How much is lost depends on where the cuts fall; only what arrives is checked.
    for got in &received {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "what arrives still arrives once and in order"
        );
    }
}

//! Thousands of idle TCP connections from one address: the per-address and total
//! connection budgets hold, each refused connection reads a `503`, and a client from
//! another address is served meanwhile. A binary of its own, its tests run one after
//! the other: each opens a few thousand sockets (the process may have 20 000 files).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bayeux::client::Client;
use bayeux::server::Server;
use common::*;
use futures::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(90);

/// One test at a time: they share the process's file descriptors.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect_from(from: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    socket.connect(server).await
}

fn metric(server: &Server, name: &str) -> f64 {
    server
        .metrics()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A long-polling client from `from` that handshakes and receives a message.
async fn served(from: &str, t: &TestServer, n: u64) {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from.parse().unwrap()));
    let client = Client::builder(&t.url())
        .connector(connector)
        .build()
        .unwrap();
    client.handshake().await.unwrap();
    let mut sub = client.subscribe("/still/here").await.unwrap();
    t.server.publish("/still/here", json!(n)).await.unwrap();
    let m = timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("the message arrives")
        .unwrap();
    assert_eq!(m.data, Some(json!(n)));
    client.disconnect().await.unwrap();
}

/// Opens `n` connections from `from` and keeps them; returns those the server holds
/// and the number it refused (each of those read a 503, then the end).
async fn flood(t: &TestServer, from: &str, n: usize) -> (Vec<TcpStream>, usize) {
    let addr = t.listening.local_addr();
    let open_before = metric(&t.server, "bayeux_connections_open ");
    let refused_before = all_refusals(&t.server);
    let mut kept = Vec::with_capacity(n);
    for _ in 0..n {
        kept.push(connect_from(from, addr).await.unwrap());
    }
    // Once the server has taken each one (held or refused)...
    eventually("the server to take every connection", || {
        let held = metric(&t.server, "bayeux_connections_open ") - open_before;
        let refused = all_refusals(&t.server) - refused_before;
        held + refused >= n as f64
    })
    .await;
    let refused = (all_refusals(&t.server) - refused_before) as usize;
    // ...the refused ones become readable (the answer, then the end); the others stay
    // silent.
    let mut readable: futures::stream::FuturesUnordered<_> = kept
        .iter()
        .enumerate()
        .map(|(i, tcp)| async move {
            let _ = tcp.readable().await;
            i
        })
        .collect();
    let mut closed = std::collections::HashSet::new();
    while closed.len() < refused {
        closed.insert(readable.next().await.expect("a refused connection"));
    }
    drop(readable);
    let mut open = Vec::new();
    let mut answered = 0;
    for (i, mut tcp) in kept.into_iter().enumerate() {
        if closed.contains(&i) {
            // A 503 for as many as the listener answers at once; past that, a close.
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            assert!(
                answer.is_empty() || answer.starts_with(b"HTTP/1.1 503"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
            answered += usize::from(!answer.is_empty());
        } else {
            let mut buf = [0u8; 1];
            assert!(
                matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "a held connection is idle"
            );
            open.push(tcp);
        }
    }
    assert!(
        refused == 0 || answered > 0,
        "none of the {refused} refused connections read the 503"
    );
    (open, refused)
}

/// Connections refused by either connection budget so far.
fn all_refusals(server: &Server) -> f64 {
    metric(
        server,
        "bayeux_limit_refusals_total{limit=\"max-connections-per-address\"}",
    ) + metric(
        server,
        "bayeux_limit_refusals_total{limit=\"max-connections\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_are_bounded_and_others_served() {
    let _one = ONE_AT_A_TIME.lock().await;
    timeout(BOUND, async {
        let config = fast_config()
            .with_max_connections_per_address(1_000)
            .with_header_timeout(Duration::from_secs(60));
        let t = TestServer::with_config(config).await;
        let (open, refused) = flood(&t, "127.0.0.1", 3_000).await;
        assert_eq!(open.len(), 1_000, "the per-address budget holds");
        assert_eq!(refused, 2_000);
        eventually("the refusals to be counted", || {
            metric(
                &t.server,
                "bayeux_limit_refusals_total{limit=\"max-connections-per-address\"}",
            ) >= 2_000.0
        })
        .await;
        assert_eq!(metric(&t.server, "bayeux_connections_open "), 1_000.0);
        // Another address is served while the thousand idle connections stay.
        served("127.0.0.2", &t, 1).await;
        drop(open);
        eventually("the connections to close", || {
            metric(&t.server, "bayeux_connections_open ") == 0.0
        })
        .await;
        served("127.0.0.1", &t, 2).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_connection_budget_holds_across_addresses() {
    let _one = ONE_AT_A_TIME.lock().await;
    timeout(BOUND, async {
        let config = fast_config()
            .with_max_connections(1_500)
            .with_max_connections_per_address(1_000)
            .with_header_timeout(Duration::from_secs(60));
        let t = TestServer::with_config(config).await;
        let (a, refused_a) = flood(&t, "127.0.0.1", 1_000).await;
        let (b, refused_b) = flood(&t, "127.0.0.3", 1_000).await;
        assert_eq!((a.len(), refused_a), (1_000, 0));
        assert_eq!((b.len(), refused_b), (500, 500));
        assert_eq!(metric(&t.server, "bayeux_connections_open "), 1_500.0);
        drop(b);
        eventually("places to free up", || {
            metric(&t.server, "bayeux_connections_open ") <= 1_000.0
        })
        .await;
        served("127.0.0.2", &t, 1).await;
        drop(a);
    })
    .await
    .unwrap();
}

//! The promises that are numbers: how long a connect is held, when a session expires.
//! Driven on tokio's paused clock through `Server::handle` (no sockets), so each bound
//! is checked from both sides, exactly, whatever the machine's load.

use std::time::Duration;

use bayeux::server::{Server, ServerConfig};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

async fn call(server: &Server, body: Value) -> Vec<Value> {
    let request = http::Request::post("/cometd")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = server.handle(request).await;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

async fn handshake(server: &Server) -> String {
    let replies = call(
        server,
        json!({"channel": "/meta/handshake", "version": "1.0"}),
    )
    .await;
    replies[0]["clientId"].as_str().unwrap().to_string()
}

fn connect(id: &str) -> Value {
    json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"})
}

/// Sends a connect in a task of its own, to watch how long it is held.
fn spawn_connect(server: &Server, id: &str) -> tokio::task::JoinHandle<Vec<Value>> {
    let (server, id) = (server.clone(), id.to_string());
    tokio::spawn(async move { call(&server, connect(&id)).await })
}

/// Lets every task that can run, run (the clock does not move).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_connect_is_held_exactly_timeout() {
    let timeout = Duration::from_millis(30_000);
    let server = Server::new(ServerConfig::default().with_timeout(timeout));
    let id = handshake(&server).await;
    // The first connect is answered at once.
    call(&server, connect(&id)).await;
    let held = spawn_connect(&server, &id);
    settle().await;
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    settle().await;
    assert!(!held.is_finished(), "answered before timeout");
    tokio::time::advance(Duration::from_millis(2)).await;
    let replies = tokio::time::timeout(Duration::from_millis(1), held)
        .await
        .expect("answered just after timeout")
        .unwrap();
    assert_eq!(replies.last().unwrap()["successful"], true);
}

#[tokio::test(start_paused = true)]
async fn a_client_may_ask_for_a_shorter_hold() {
    let server = Server::new(ServerConfig::default());
    let id = handshake(&server).await;
    call(&server, connect(&id)).await;
    let mut short = connect(&id);
    short["advice"] = json!({"timeout": 500});
    let held = tokio::spawn({
        let server = server.clone();
        async move { call(&server, short).await }
    });
    settle().await;
    tokio::time::advance(Duration::from_millis(499)).await;
    settle().await;
    assert!(!held.is_finished());
    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    assert!(held.now_or_never().is_some(), "held past the asked timeout");
}

#[tokio::test(start_paused = true)]
async fn a_session_expires_after_interval_plus_max_interval_and_not_before() {
    let interval = Duration::from_millis(1_000);
    let max_interval = Duration::from_millis(10_000);
    let server = Server::new(
        ServerConfig::default()
            .with_interval(interval)
            .with_max_interval(max_interval),
    );
    let id = handshake(&server).await;
    call(&server, connect(&id)).await; // answered at once; the clock starts now
    let limit = interval + max_interval;
    // The sweep runs every maxInterval / 4 (at most 1 s): expiry happens between the
    // limit and one sweep period after it.
    let period = Duration::from_secs(1);
    tokio::time::advance(limit - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(server.session_count(), 1, "expired before the limit");
    assert!(server.session_info(&id).is_some());
    tokio::time::advance(period + Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(server.session_count(), 0, "alive after the limit");
    let replies = call(&server, connect(&id)).await;
    assert_eq!(replies[0]["error"], "402::Unknown client");
}

#[tokio::test(start_paused = true)]
async fn a_held_connect_keeps_its_session_alive() {
    let max_interval = Duration::from_millis(1_000);
    let server = Server::new(
        ServerConfig::default()
            .with_timeout(Duration::from_secs(60))
            .with_max_interval(max_interval),
    );
    let id = handshake(&server).await;
    call(&server, connect(&id)).await;
    let held = spawn_connect(&server, &id);
    settle().await;
    // Ten times maxInterval with the connect held: still alive.
    for _ in 0..10 {
        tokio::time::advance(max_interval).await;
        settle().await;
    }
    assert_eq!(server.session_count(), 1);
    assert!(server.is_connected(&id));
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn the_busy_flush_window_opens_after_a_busy_response_only() {
    let window = Duration::from_millis(50);
    let server = Server::new(
        ServerConfig::default()
            .with_busy_flush_window(window)
            .with_busy_threshold(2),
    );
    let id = handshake(&server).await;
    call(
        &server,
        json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/w"}),
    )
    .await;
    call(&server, connect(&id)).await; // the first connect, at once
    let publish = |n: u32| {
        let server = server.clone();
        async move {
            for i in 0..n {
                server.publish("/w", json!(i)).await.unwrap();
            }
        }
    };
    let answered_at_once = |server: Server, id: String| async move {
        let held = spawn_connect(&server, &id);
        settle().await;
        held.is_finished()
    };
    // Not busy yet: three messages go out at once, and that response was busy.
    publish(3).await;
    assert!(answered_at_once(server.clone(), id.clone()).await);
    // Busy: the next response waits the window, gathering what comes meanwhile.
    publish(1).await;
    let held = spawn_connect(&server, &id);
    settle().await;
    publish(1).await;
    tokio::time::advance(window - Duration::from_millis(1)).await;
    settle().await;
    assert!(!held.is_finished(), "answered inside the window");
    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    let replies = held.await.unwrap();
    assert_eq!(replies.len(), 3, "both messages and the reply: {replies:?}");
    // That response carried 2 (still busy): the next one, of 1 message, waits the
    // window once more and clears it; light traffic then goes out at once.
    publish(1).await;
    let held = spawn_connect(&server, &id);
    settle().await;
    tokio::time::advance(window + Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(held.await.unwrap().len(), 2);
    publish(1).await;
    assert!(
        answered_at_once(server.clone(), id.clone()).await,
        "light traffic is not delayed"
    );
}

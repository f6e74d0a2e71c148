//! Shared helpers for the integration tests: a server on a free loopback port and a raw
//! HTTP client that speaks Bayeux by hand, so the tests see exactly what is on the wire.
#![allow(dead_code)]

pub mod certs;
pub mod ws;

use std::time::Duration;

use bayeux::server::{Listening, Server, ServerConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Every test's upper bound, so that a bug shows as a failure, not a hang.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Short timings so the suite stays fast.
pub fn fast_config() -> ServerConfig {
    ServerConfig::default()
        .with_timeout(Duration::from_millis(200))
        .with_max_interval(Duration::from_millis(200))
}

/// A server listening on 127.0.0.1 at a free port, Bayeux at `/cometd`.
pub struct TestServer {
    pub server: Server,
    pub listening: Listening,
    pub http: Client<HttpConnector, Full<Bytes>>,
}

impl TestServer {
    pub async fn start(server: Server) -> TestServer {
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        TestServer {
            server,
            listening,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn with_config(config: ServerConfig) -> TestServer {
        Self::start(Server::new(config)).await
    }

    pub fn url(&self) -> String {
        self.listening.url("/cometd")
    }

    /// Sends `body` with `method` and returns the status and the body text.
    pub async fn raw(&self, method: &str, body: impl Into<Bytes>) -> (u16, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(self.url())
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        let res = self.http.request(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// POSTs a JSON value and returns the reply array (asserting 200).
    pub async fn post(&self, body: Value) -> Vec<Value> {
        let (status, text) = self.raw("POST", serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status, 200, "body: {text}");
        match serde_json::from_str(&text).unwrap() {
            Value::Array(v) => v,
            other => panic!("expected an array, got {other}"),
        }
    }

    /// Handshakes and returns the clientId.
    pub async fn handshake(&self) -> String {
        let replies = self
            .post(json!({"channel": "/meta/handshake", "version": "1.0",
                         "supportedConnectionTypes": ["long-polling"], "id": "h"}))
            .await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
        replies[0]["clientId"].as_str().unwrap().to_string()
    }

    pub async fn subscribe(&self, client_id: &str, subscription: Value) -> Value {
        let replies = self
            .post(json!({"channel": "/meta/subscribe", "clientId": client_id,
                         "subscription": subscription, "id": "s"}))
            .await;
        replies[0].clone()
    }

    pub async fn publish(&self, client_id: &str, channel: &str, data: Value) -> Value {
        let replies = self
            .post(json!({"channel": channel, "clientId": client_id, "data": data, "id": "p"}))
            .await;
        replies[0].clone()
    }

    /// One `/meta/connect`; returns (delivered messages, the connect reply).
    pub async fn connect(&self, client_id: &str) -> (Vec<Value>, Value) {
        let replies = self
            .post(json!({"channel": "/meta/connect", "clientId": client_id,
                         "connectionType": "long-polling", "id": "c"}))
            .await;
        split_connect(replies)
    }

    /// A connect that asks the server not to wait (as CometD's first connect does).
    pub async fn connect_now(&self, client_id: &str) -> (Vec<Value>, Value) {
        let replies = self
            .post(json!({"channel": "/meta/connect", "clientId": client_id,
                         "connectionType": "long-polling", "advice": {"timeout": 0}}))
            .await;
        split_connect(replies)
    }
}

/// Starts a `/meta/connect` in the background and returns once the server holds it, so
/// a test can act on a pending long poll; the handle yields the connect's result.
pub async fn pending_connect(
    t: &std::sync::Arc<TestServer>,
    client_id: &str,
) -> tokio::task::JoinHandle<(Vec<Value>, Value)> {
    let handle = tokio::spawn({
        let (t, id) = (t.clone(), client_id.to_string());
        async move { t.connect(&id).await }
    });
    eventually("the connect to be pending", || {
        t.server.is_connected(client_id)
    })
    .await;
    handle
}

/// Splits a connect response into the delivered messages and the connect reply.
pub fn split_connect(mut replies: Vec<Value>) -> (Vec<Value>, Value) {
    let pos = replies
        .iter()
        .position(|m| m["channel"] == "/meta/connect")
        .expect("a connect reply");
    let reply = replies.remove(pos);
    (replies, reply)
}

/// Waits, bounded, until `check` holds (for effects that only time produces, such as
/// session expiry); polls every 10 ms.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for a check that has to await (a publish, for example).
#[allow(dead_code)]
pub async fn eventually_async(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

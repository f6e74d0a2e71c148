//! Logs, metrics and health, observed from outside: the library's log events through a
//! capturing `tracing` layer, `/metrics` parsed as Prometheus text while the tests drive
//! traffic, `/health` and `/ready`, and the `bayeux serve` flags for them.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux::client::{Client, ConnectionState, TransportChoice};
use bayeux::protocol::ChannelName;
use bayeux::server::{
    Decision, HandshakeDecision, HandshakeRequest, OpsService, SecurityPolicy, Server,
    ServerConfig, SessionInfo,
};
use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

// ---------------------------------------------------------------------------------------
// A capturing subscriber.

/// One captured event: its level, message, fields, and the fields of the spans it was in
/// (innermost first), by span name.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    message: String,
    fields: HashMap<String, String>,
    spans: Vec<(String, HashMap<String, String>)>,
}

impl Captured {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// The field `name` of the span called `span` the event was in.
    fn span_field(&self, span: &str, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|(n, _)| n == span)
            .and_then(|(_, f)| f.get(name))
            .map(String::as_str)
    }
}

/// Collects field values as strings.
#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

/// The events seen so far; wakes waiters on each one.
#[derive(Clone, Default)]
struct Events {
    seen: Arc<Mutex<Vec<Captured>>>,
    added: Arc<tokio::sync::Notify>,
}

impl Events {
    fn all(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn matching(&self, pred: impl Fn(&Captured) -> bool) -> Vec<Captured> {
        self.all().into_iter().filter(|e| pred(e)).collect()
    }

    /// Waits (bounded) for an event that `pred` accepts, woken by each new event.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Captured) -> bool) -> Captured {
        let found = timeout(Duration::from_secs(10), async {
            loop {
                let added = self.added.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                if let Some(e) = self.all().into_iter().find(|e| pred(e)) {
                    return e;
                }
                added.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what} event within 10 s: {:#?}", self.all()))
    }
}

thread_local! {
    /// Where this thread's events go: the capture of the test running on it, if any.
    static SINK: std::cell::RefCell<Option<Events>> = const { std::cell::RefCell::new(None) };
}

/// The layer that records every event, with its spans' fields, in the capture of the
/// thread it happens on. One global subscriber for the whole test binary: scoped
/// subscribers in parallel tests race on tracing's per-callsite interest cache (a
/// callsite first seen while no scoped subscriber exists stays disabled for all).
struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if SINK.with(|sink| sink.borrow().is_none()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = fields.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let f = span
                            .extensions()
                            .get::<Fields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        (span.name().to_string(), f)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let captured = Captured {
            level: *event.metadata().level(),
            message,
            fields,
            spans,
        };
        SINK.with(|sink| {
            if let Some(events) = &*sink.borrow() {
                events.seen.lock().unwrap().push(captured);
                events.added.notify_waiters();
            }
        });
    }
}

/// Stops capturing this thread's events when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        SINK.with(|sink| sink.borrow_mut().take());
    }
}

/// Captures the events of this thread (every test runs on a current-thread runtime, so
/// the server's and the client's tasks run here) until the guard is dropped.
fn capture() -> (Events, CaptureGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Registry::default().with(Capture))
            .expect("no other global subscriber in this test binary");
    });
    let events = Events::default();
    SINK.with(|sink| *sink.borrow_mut() = Some(events.clone()));
    (events, CaptureGuard)
}

// ---------------------------------------------------------------------------------------
// Prometheus text.

/// Parses the Prometheus text format: `name{labels}` (as written) to value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("bad value in {l}: {e}"));
            (key.to_string(), value)
        })
        .collect()
}

/// A sample's value; 0 when absent.
fn sample(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// A policy that refuses some things, to see the refusals logged.

struct Picky;

impl SecurityPolicy for Picky {
    fn handshake<'a>(
        &'a self,
        request: HandshakeRequest<'a>,
    ) -> bayeux::server::PolicyFuture<'a, HandshakeDecision> {
        let user = request
            .message
            .ext
            .as_ref()
            .and_then(|e| e.get("user"))
            .and_then(Value::as_str);
        let decision = match user {
            Some("mallory") => HandshakeDecision::Deny("wrong password".into()),
            other => HandshakeDecision::Accept {
                user: other.map(str::to_string),
            },
        };
        Box::pin(std::future::ready(decision))
    }

    fn subscribe(&self, _: Option<&SessionInfo>, channel: &ChannelName) -> Decision {
        if channel.as_str().starts_with("/secret") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

async fn handshake_as(t: &TestServer, user: &str) -> Value {
    let replies = t
        .post(json!({"channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["long-polling"], "ext": {"user": user}}))
        .await;
    replies[0].clone()
}

#[tokio::test]
async fn refusals_overflows_and_expiry_are_logged_with_the_session() {
    let (events, _guard) = capture();
    timeout(LIMIT, async {
        let config = fast_config().with_max_queue(2).with_max_sessions(2);
        let t = TestServer::start(Server::builder().config(config).policy(Picky).build()).await;

        // A refused handshake: info, with the policy's reason.
        let reply = handshake_as(&t, "mallory").await;
        assert_eq!(reply["successful"], false);
        let e = events
            .wait_for("handshake refused", |e| e.message == "handshake refused")
            .await;
        assert_eq!(e.level, Level::INFO);
        assert_eq!(e.field("outcome"), "denied");
        assert_eq!(e.field("reason"), "wrong password");
        assert_eq!(e.field("transport"), "long-polling");

        // A refused subscribe: info, naming the session, its user and the reason; it
        // happened in the session's span.
        let reply = handshake_as(&t, "alice").await;
        let id = reply["clientId"].as_str().unwrap().to_string();
        let reply = t.subscribe(&id, json!("/secret/plans")).await;
        assert_eq!(reply["successful"], false);
        let e = events
            .wait_for("subscribe denied", |e| e.message == "subscribe denied")
            .await;
        assert_eq!(e.level, Level::INFO);
        assert_eq!(e.field("client_id"), id);
        assert_eq!(e.field("user"), "alice");
        assert_eq!(e.field("channel"), "/secret/plans");
        assert_eq!(e.field("reason"), "security policy");
        assert_eq!(e.span_field("session", "client_id"), Some(id.as_str()));
        assert_eq!(e.span_field("session", "transport"), Some("long-polling"));

        // A queue overflow: warn, once for the session.
        assert_eq!(t.subscribe(&id, json!("/news")).await["successful"], true);
        for n in 0..5 {
            t.server.publish("/news", json!(n)).await.unwrap();
        }
        let overflows = events.matching(|e| e.message == "session queue overflow");
        assert_eq!(overflows.len(), 1, "{overflows:#?}");
        assert_eq!(overflows[0].level, Level::WARN);
        assert_eq!(overflows[0].field("client_id"), id);
        assert_eq!(overflows[0].field("action"), "drop-newest");

        // maxSessions: the first refusal is a warning, the next ones are not.
        assert_eq!(handshake_as(&t, "bob").await["successful"], true);
        for _ in 0..3 {
            assert_eq!(handshake_as(&t, "carol").await["successful"], false);
        }
        let limits = events.matching(|e| e.field("outcome") == "max-sessions");
        assert_eq!(limits.len(), 3, "{limits:#?}");
        assert_eq!(limits[0].level, Level::WARN);
        assert!(limits[1..].iter().all(|e| e.level == Level::DEBUG));

        // Expiry: nobody connects, so both sessions expire; info, naming them.
        let e = events
            .wait_for("session expired", |e| {
                e.message.starts_with("session expired") && e.field("client_id") == id
            })
            .await;
        assert_eq!(e.level, Level::INFO);
        assert_eq!(e.field("user"), "alice");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn nothing_is_logged_per_message_at_info() {
    let (events, _guard) = capture();
    timeout(LIMIT, async {
        // Sessions that do not expire between two connects, however slow the machine.
        let t =
            TestServer::with_config(fast_config().with_max_interval(Duration::from_secs(10))).await;
        let id = t.handshake().await;
        assert_eq!(t.subscribe(&id, json!("/chat")).await["successful"], true);
        t.connect_now(&id).await;
        let before = events.count();
        for round in 0..10 {
            for n in 0..10 {
                t.publish(&id, "/chat", json!({"round": round, "n": n}))
                    .await;
            }
            let (delivered, reply) = t.connect_now(&id).await;
            assert_eq!(reply["successful"], true);
            assert_eq!(delivered.len(), 10);
        }
        let loud: Vec<Captured> = events.all()[before..]
            .iter()
            .filter(|e| e.level <= Level::INFO)
            .cloned()
            .collect();
        assert!(loud.is_empty(), "{loud:#?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connection_errors_name_the_peer() {
    let (events, _guard) = capture();
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut stream = tokio::net::TcpStream::connect(t.listening.local_addr())
            .await
            .unwrap();
        let local = stream.local_addr().unwrap().to_string();
        stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let e = events
            .wait_for("connection error", |e| e.message == "connection error")
            .await;
        assert_eq!(e.level, Level::DEBUG, "{e:#?}");
        assert_eq!(
            e.span_field("connection", "peer"),
            Some(local.as_str()),
            "{e:#?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_client_logs_its_reconnections_and_their_causes() {
    let (events, _guard) = capture();
    timeout(LIMIT, async {
        let first = Server::new(fast_config());
        let listening = first
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let addr = listening.local_addr();
        let client = Client::builder(&listening.url("/cometd"))
            .transport(TransportChoice::LongPolling)
            .backoff(Duration::from_millis(50), Duration::from_millis(200))
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let _sub = client.subscribe("/x").await.unwrap();
        listening.shutdown().await.unwrap();
        client
            .wait_for_state(|s| *s == ConnectionState::Reconnecting)
            .await;
        let lost = events
            .wait_for("the client's reconnection", |e| {
                e.message.contains("reconnecting") || e.message.contains("ended the session")
            })
            .await;
        assert_eq!(lost.level, Level::INFO);
        assert_eq!(lost.field("transport"), "long-polling");
        assert!(
            !lost.field("cause").is_empty() || !lost.field("reason").is_empty(),
            "{lost:#?}"
        );

        let second = Server::new(fast_config());
        let _l = second.listen(addr, "/cometd").await.unwrap();
        // The new server does not know the session: 402, then a new handshake.
        events
            .wait_for("the session lost", |e| {
                e.message.contains("ended the session") && e.field("reason").contains("402")
            })
            .await;
        let back = events
            .wait_for("reconnected", |e| e.message == "bayeux client: reconnected")
            .await;
        assert_eq!(back.level, Level::INFO);
        client.disconnect().await.unwrap();
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Metrics and health through the demo application.

/// The demo application on a free port, and an HTTP client.
struct App {
    app: DemoApp,
    listening: bayeux::server::Listening,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl App {
    async fn start(config: ServerConfig, ops: Option<fn(OpsService) -> OpsService>) -> App {
        let mut app = DemoApp::new(config, Access::demo(), WorkbinConfig::default(), "/cometd");
        if let Some(configure) = ops {
            let ops = configure(OpsService::new(app.server().clone()));
            app = app.with_ops(Some(ops));
        }
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        App {
            app,
            listening,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        }
    }

    async fn request(&self, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(self.listening.url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let res = self.http.request(req).await.unwrap();
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        self.request("GET", path, "").await
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let (status, content_type, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        parse_metrics(&text)
    }

    async fn bayeux(&self, body: Value) -> Vec<Value> {
        let (status, _, text) = self.request("POST", "/cometd", &body.to_string()).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn handshake(&self) -> String {
        let replies = self
            .bayeux(json!({"channel": "/meta/handshake", "version": "1.0",
                           "supportedConnectionTypes": ["long-polling"]}))
            .await;
        replies[0]["clientId"].as_str().unwrap().to_string()
    }

    async fn connect(&self, id: &str) -> Vec<Value> {
        self.bayeux(json!({"channel": "/meta/connect", "clientId": id,
                           "connectionType": "long-polling", "advice": {"timeout": 0}}))
            .await
    }
}

#[tokio::test]
async fn metrics_move_as_traffic_goes_through() {
    timeout(LIMIT, async {
        // Connects held (and sessions kept) long enough for a slow machine to look.
        let config = fast_config()
            .with_max_queue(3)
            .with_timeout(Duration::from_secs(10))
            .with_max_interval(Duration::from_secs(10));
        let a = App::start(config, None).await;
        let m0 = a.metrics().await;
        for name in [
            "bayeux_sessions{transport=\"long-polling\"}",
            "bayeux_handshakes_total{outcome=\"accepted\"}",
            "bayeux_messages_published_total",
            "bayeux_messages_delivered_total",
            "bayeux_messages_dropped_total{reason=\"drop-newest\"}",
            "bayeux_connects_pending",
            "bayeux_publish_to_flush_seconds_count",
            "bayeux_workbin_requests_total{status_code=\"0\"}",
        ] {
            assert_eq!(m0.get(name), Some(&0.0), "{name} in {m0:?}");
        }

        // Two sessions over long-polling, one of them subscribed.
        let (id, other) = (a.handshake().await, a.handshake().await);
        let reply = a
            .bayeux(json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/m"}))
            .await;
        assert_eq!(reply[0]["successful"], true);
        a.connect(&id).await;
        a.connect(&other).await;
        // Five publishes: three fit in the queue, two are dropped (drop-newest).
        for n in 0..5 {
            a.bayeux(json!({"channel": "/m", "clientId": other, "data": n}))
                .await;
        }
        let delivered = a.connect(&id).await;
        assert_eq!(delivered.len(), 4, "three messages and the connect reply");
        // A request that is not Bayeux: 400.
        let (status, _, _) = a.request("POST", "/cometd", "{not json").await;
        assert_eq!(status, 400);

        let m = a.metrics().await;
        assert_eq!(
            sample(&m, "bayeux_sessions{transport=\"long-polling\"}"),
            2.0
        );
        assert_eq!(sample(&m, "bayeux_sessions{transport=\"websocket\"}"), 0.0);
        assert_eq!(
            sample(&m, "bayeux_handshakes_total{outcome=\"accepted\"}"),
            2.0
        );
        assert_eq!(sample(&m, "bayeux_messages_published_total"), 5.0);
        assert_eq!(sample(&m, "bayeux_messages_delivered_total"), 3.0);
        assert_eq!(
            sample(&m, "bayeux_messages_dropped_total{reason=\"drop-newest\"}"),
            2.0
        );
        // handshake ×2, subscribe, connect ×3, publish ×5: 11 answered 200; one 400.
        assert_eq!(
            sample(&m, "bayeux_http_requests_total{status=\"200\"}"),
            11.0
        );
        assert_eq!(
            sample(&m, "bayeux_http_requests_total{status=\"400\"}"),
            1.0
        );
        // One batch flushed: one observation of its age.
        assert_eq!(sample(&m, "bayeux_publish_to_flush_seconds_count"), 1.0);
        assert_eq!(
            sample(&m, "bayeux_publish_to_flush_seconds_bucket{le=\"+Inf\"}"),
            1.0
        );
        assert!(sample(&m, "bayeux_publish_to_flush_seconds_sum") > 0.0);

        // A held connect is pending until it is answered.
        let held = tokio::spawn({
            let (url, id) = (a.listening.url("/cometd"), id.clone());
            async move {
                let http = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Full<Bytes>>();
                let body = json!({"channel": "/meta/connect", "clientId": id,
                                  "connectionType": "long-polling"});
                let req = http::Request::post(url)
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap();
                http.request(req).await.unwrap().status()
            }
        });
        eventually("the connect to be held", || {
            a.app.server().is_connected(&id)
        })
        .await;
        let m = a.metrics().await;
        assert_eq!(sample(&m, "bayeux_connects_pending"), 1.0);
        a.app.server().publish("/m", json!("wake")).await.unwrap();
        assert_eq!(held.await.unwrap(), 200);
        let m = a.metrics().await;
        assert_eq!(sample(&m, "bayeux_connects_pending"), 0.0);
        assert_eq!(sample(&m, "bayeux_messages_delivered_total"), 4.0);
        assert_eq!(sample(&m, "bayeux_publish_to_flush_seconds_count"), 2.0);

        // The workbin API, by statusCode.
        let (status, _, _) = a
            .request(
                "POST",
                "/api/v2/users/agent1/workbins/wb1",
                r#"{"operationName":"AddEmail","uri":".../FE7978FEWFE"}"#,
            )
            .await;
        assert_eq!(status, 200);
        let (status, _, _) = a
            .request("POST", "/api/v2/users/agent1/workbins/wb1", "{oops")
            .await;
        assert_eq!(status, 400);
        let m = a.metrics().await;
        assert_eq!(
            sample(&m, "bayeux_workbin_requests_total{status_code=\"0\"}"),
            1.0
        );
        assert_eq!(
            sample(&m, "bayeux_workbin_requests_total{status_code=\"3\"}"),
            1.0
        );
        // The workbin's notifications went through the server too.
        assert_eq!(sample(&m, "bayeux_messages_published_total"), 8.0);

        // A disconnect ends a session.
        a.bayeux(json!({"channel": "/meta/disconnect", "clientId": other}))
            .await;
        let m = a.metrics().await;
        assert_eq!(
            sample(&m, "bayeux_sessions{transport=\"long-polling\"}"),
            1.0
        );
        assert_eq!(
            sample(&m, "bayeux_sessions_closed_total{reason=\"disconnected\"}"),
            1.0
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sessions_are_counted_under_the_transport_that_carries_them() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    timeout(LIMIT, async {
        let a = App::start(fast_config(), None).await;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let request = a.listening.ws_url("/cometd").into_client_request().unwrap();
        let tcp = tokio::net::TcpStream::connect(a.listening.local_addr())
            .await
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
        let mut send = async |value: Value| -> Vec<Value> {
            ws.send(Frame::text(value.to_string())).await.unwrap();
            loop {
                if let Some(Ok(Frame::Text(text))) = ws.next().await {
                    return serde_json::from_str(&text).unwrap();
                }
            }
        };
        let replies = send(json!([{"channel": "/meta/handshake", "version": "1.0",
                                    "supportedConnectionTypes": ["websocket"]}]))
        .await;
        let id = replies[0]["clientId"].as_str().unwrap().to_string();
        let m = a.metrics().await;
        assert_eq!(sample(&m, "bayeux_sessions{transport=\"websocket\"}"), 1.0);
        // A session that handshook over HTTP moves to WebSocket with its first connect.
        let moved = a.handshake().await;
        assert_eq!(
            sample(
                &a.metrics().await,
                "bayeux_sessions{transport=\"long-polling\"}"
            ),
            1.0
        );
        let replies = send(json!([{"channel": "/meta/connect", "clientId": moved,
                                   "connectionType": "websocket", "advice": {"timeout": 0}}]))
        .await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
        let m = a.metrics().await;
        assert_eq!(sample(&m, "bayeux_sessions{transport=\"websocket\"}"), 2.0);
        assert_eq!(
            sample(&m, "bayeux_sessions{transport=\"long-polling\"}"),
            0.0
        );
        assert_eq!(sample(&m, "bayeux_websockets_open"), 1.0);
        assert_eq!(
            sample(&m, "bayeux_http_requests_total{status=\"101\"}"),
            1.0
        );
        drop(id);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn health_and_readiness_answer_json() {
    timeout(LIMIT, async {
        let a = App::start(fast_config(), None).await;
        let (status, content_type, body) = a.get("/health").await;
        assert_eq!((status, content_type.as_str()), (200, "application/json"));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"status": "ok"})
        );
        a.handshake().await;
        let (status, _, body) = a.get("/ready").await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"ready": true, "sessions": 1})
        );
        let (status, _, _) = a.request("POST", "/ready", "").await;
        assert_eq!(status, 405);
        let (status, _, body) = a.request("HEAD", "/health", "").await;
        assert_eq!((status, body.as_str()), (200, ""));

        // Shutting down: not ready any more, still alive.
        a.app.server().shutdown();
        let (status, _, body) = a.get("/ready").await;
        assert_eq!(status, 503);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"ready": false, "reason": "shutting down", "sessions": 0})
        );
        assert_eq!(a.get("/health").await.0, 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn metrics_can_be_turned_off_or_moved_to_another_listener() {
    timeout(LIMIT, async {
        let a = App::start(fast_config(), Some(|ops| ops.with_metrics(false))).await;
        assert_eq!(a.get("/metrics").await.0, 404);
        assert_eq!(a.get("/health").await.0, 200);

        // Alone on a listener of its own: the endpoints, 404 elsewhere.
        let server = Server::new(fast_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(bayeux::server::serve(
            listener,
            OpsService::new(server.clone()),
            async {
                let _ = stopped.await;
            },
        ));
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let get = async |path: &str| {
            let res = http
                .get(format!("http://{addr}{path}").parse().unwrap())
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let (status, text) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(parse_metrics(&text).contains_key("bayeux_handshakes_total{outcome=\"accepted\"}"));
        assert_eq!(get("/ready").await.0, 200);
        assert_eq!(get("/cometd").await.0, 404);
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn applications_add_their_own_metrics_to_the_page() {
    let server = Server::new(fast_config());
    let counter: prometheus_client::metrics::counter::Counter =
        prometheus_client::metrics::counter::Counter::default();
    server.register_metric("app_orders", "Orders taken.", counter.clone());
    counter.inc_by(3);
    let m = parse_metrics(&server.metrics());
    assert_eq!(sample(&m, "app_orders_total"), 3.0);
    assert!(m.contains_key("bayeux_connects_pending"));
    // Two servers keep their numbers apart: no global registry.
    let other = Server::new(fast_config());
    assert!(!parse_metrics(&other.metrics()).contains_key("app_orders_total"));
}

// ---------------------------------------------------------------------------------------
// The binary.

/// Starts `bayeux serve` on a free port with `args`; returns the child and its stderr.
fn serve(
    args: &[&str],
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bayeux"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// Reads lines until one contains `text`; returns it and the lines before it.
async fn until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    text: &str,
) -> (String, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let line = timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {text:?} within 10 s after {before:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the output ended before {text:?}: {before:#?}"));
        if line.contains(text) {
            return (line, before);
        }
        before.push(line);
    }
}

async fn http_get(url: &str) -> (u16, String) {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let res = http.get(url.parse().unwrap()).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn serve_logs_json_lines_with_the_demo_mode_warning() {
    timeout(LIMIT, async {
        let (_child, mut lines) = serve(&["--log-format", "json"]);
        let (first, before) = until(&mut lines, "serving Bayeux").await;
        assert!(before.is_empty(), "{before:#?}");
        let first: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(first["level"], "INFO", "{first}");
        let message = first["message"].as_str().unwrap();
        let url = message
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap();
        let (warning, _) = until(&mut lines, "DEMO MODE").await;
        let warning: Value = serde_json::from_str(&warning).unwrap();
        assert_eq!(warning["level"], "WARN", "{warning}");
        // The operator's endpoints are on the main listener by default.
        let base = url.trim_end_matches("/cometd");
        let (status, text) = http_get(&format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        assert!(parse_metrics(&text).contains_key("bayeux_connects_pending"));
        assert_eq!(http_get(&format!("{base}/ready")).await.0, 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn serve_moves_the_operator_endpoints_or_drops_metrics() {
    timeout(LIMIT, async {
        let (_child, mut lines) = serve(&["--metrics-listen", "127.0.0.1:0"]);
        let (first, _) = until(&mut lines, "serving Bayeux").await;
        assert!(first.contains(" INFO "), "{first}");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        let (ops, _) = until(&mut lines, "operator endpoints").await;
        let ops_base = ops
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        let base = url.trim_end_matches("/cometd");
        assert_eq!(http_get(&format!("{base}/metrics")).await.0, 404);
        assert_eq!(http_get(&format!("{ops_base}/metrics")).await.0, 200);
        assert_eq!(http_get(&format!("{ops_base}/health")).await.0, 200);

        let (_child, mut lines) = serve(&["--no-metrics", "--log-level", "warn,bayeux=info"]);
        let (first, _) = until(&mut lines, "serving Bayeux").await;
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        let base = url.trim_end_matches("/cometd");
        assert_eq!(http_get(&format!("{base}/metrics")).await.0, 404);
        assert_eq!(http_get(&format!("{base}/ready")).await.0, 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_bad_log_level_is_a_usage_error() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bayeux"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "bayeux=loud",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("bayeux: --log-level"), "{stderr}");
}

#[tokio::test]
async fn serve_carries_on_when_nobody_reads_its_log() {
    timeout(LIMIT, async {
        let (_child, mut lines) = serve(&["--max-interval", "100"]);
        let (first, _) = until(&mut lines, "serving Bayeux").await;
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        // The reader of the log goes away: later lines go to a closed pipe.
        drop(lines);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let handshake = json!({"channel": "/meta/handshake", "version": "1.0"});
        let req = http::Request::post(&url)
            .body(Full::new(Bytes::from(handshake.to_string())))
            .unwrap();
        assert_eq!(http.request(req).await.unwrap().status(), 200);
        // The session expires, which is logged (to nobody), and is removed all the same.
        let base = url.trim_end_matches("/cometd").to_string();
        eventually_async("the session to expire", async || {
            let (_, text) = http_get(&format!("{base}/metrics")).await;
            sample(
                &parse_metrics(&text),
                "bayeux_sessions_closed_total{reason=\"expired\"}",
            ) == 1.0
        })
        .await;
        assert_eq!(http_get(&format!("{base}/health")).await.0, 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_budget_refusal_is_logged_once_per_client_and_interval_and_counted_each_time() {
    let (events, _guard) = capture();
    timeout(LIMIT, async {
        let config = fast_config()
            .with_max_interval(Duration::from_secs(5))
            .with_max_sessions_per_address(1)
            .with_refusal_log_interval(Duration::from_secs(3600));
        let t = TestServer::with_config(config).await;
        t.handshake().await;
        for _ in 0..4 {
            let reply = handshake_as(&t, "flood").await;
            assert_eq!(reply["successful"], false, "{reply}");
        }
        let lines = events.matching(|e| {
            e.message.starts_with("refused") && e.field("limit") == "max-sessions-per-address"
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0].level, Level::WARN);
        assert_eq!(lines[0].field("client"), "127.0.0.1");
        let metrics = parse_metrics(&t.server.metrics());
        assert_eq!(
            sample(
                &metrics,
                "bayeux_limit_refusals_total{limit=\"max-sessions-per-address\"}"
            ),
            4.0
        );
        assert_eq!(
            sample(
                &metrics,
                "bayeux_handshakes_total{outcome=\"address-limit\"}"
            ),
            4.0
        );
        assert_eq!(
            sample(&metrics, "bayeux_limit{limit=\"max-sessions-per-address\"}"),
            1.0
        );
    })
    .await
    .unwrap();
}

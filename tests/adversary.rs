//! Attacks, tried as an attacker would, each with a legitimate client beside it that
//! must keep working while the attack is still in progress. Every test fails by
//! behaviour (a handshake refused, a message missing, a bound passed), never by a
//! timing; the attacker talks from 127.0.0.1, the legitimate clients from other
//! loopback addresses (127.0.0.2, 127.0.0.3), as two clients on the internet would.
//!
//! - a wrong-password flood (batches of hundreds of handshakes, then one guess per
//!   request as fast as answered, on the victim's own user name and another);
//! - a flood of handshakes that never connect;
//! - WebSockets that upgrade and never handshake;
//! - a slow reader on every transport;
//! - CORS with a foreign origin;
//! - oversized and deeply nested JSON;
//! - stalled sessions against the budget of all queues.
//!
//! Thousands of idle TCP connections are in `tests/connections.rs` (a binary of its
//! own, run alone: it uses thousands of file descriptors).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bayeux::client::{Client, basic_authorization};
use bayeux::server::{Server, ServerConfig};
use bayeux::workbin::{Access, CheckLimits, DemoApp, UserDirectory, WorkbinConfig, hash_password};
use bytes::Bytes;
use common::ws::{close_code, frame};
use common::*;
use futures::{SinkExt, StreamExt};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Each test's bound: the attacks are heavier than the other suites' steps.
const BOUND: Duration = Duration::from_secs(60);

const ATTACKER: &str = "127.0.0.1";
const VICTIM: &str = "127.0.0.2";
const BYSTANDER: &str = "127.0.0.3";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// One HTTP/1.1 request on a fresh connection from `from`: the status, the headers
/// and the body text.
async fn request_from(
    from: &str,
    server: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (u16, HeaderMap, String) {
    let tcp = connect_from(from, server).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender
        .send_request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// POSTs Bayeux messages from `from`; returns the status and the replies (empty when
/// the body is not a JSON array).
async fn bayeux_from(
    from: &str,
    server: SocketAddr,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Vec<Value>) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let (status, _, text) =
        request_from(from, server, "POST", "/cometd", &all, body.to_string()).await;
    (status, serde_json::from_str(&text).unwrap_or_default())
}

fn handshake_message() -> Value {
    json!({"channel": "/meta/handshake", "version": "1.0",
           "supportedConnectionTypes": ["long-polling"]})
}

/// Our client, long-polling from the loopback address `from`.
fn client_from(from: &str, url: &str, credentials: Option<(&str, &str)>) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip(from)));
    connector.set_nodelay(true);
    let mut builder = Client::builder(url)
        .connector(connector)
        .backoff(Duration::from_millis(10), Duration::from_millis(200));
    if let Some((user, password)) = credentials {
        builder = builder.basic_auth(user, password);
    }
    builder.build().unwrap()
}

/// Subscribes `client` to `channel`, has `server` publish one message there, and checks
/// it arrives: the proof that the client is served.
async fn receives(client: &Client, server: &Server, channel: &str, n: u64) {
    let mut sub = client.subscribe(channel).await.unwrap();
    let receipt = server.publish(channel, json!({"n": n})).await.unwrap();
    assert!(
        receipt.local_recipients >= 1,
        "nobody subscribed to {channel}"
    );
    let m = timeout(Duration::from_secs(15), sub.next())
        .await
        .unwrap_or_else(|_| panic!("message {n} on {channel} did not arrive"))
        .expect("the subscription ended");
    assert_eq!(m.data, Some(json!({"n": n})));
}

/// A metric's value in the server's exposition (0 when absent).
fn metric(server: &Server, line_start: &str) -> f64 {
    server
        .metrics()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn refusals(server: &Server, limit: &str) -> f64 {
    metric(
        server,
        &format!("bayeux_limit_refusals_total{{limit=\"{limit}\"}}"),
    )
}

/// A running attack: loops until stopped, counting its requests.
struct Attack {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attack {
    fn start<F, Fut>(workers: usize, step: F) -> Attack
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|w| {
                let (stop, requests, step) = (stop.clone(), requests.clone(), step.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = requests.fetch_add(1, Ordering::Relaxed);
                        step(w, n).await;
                    }
                })
            })
            .collect();
        Attack {
            stop,
            requests,
            tasks,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Waits until the attack has made `n` more requests (it is in full swing).
    async fn until_more(&self, n: u64) {
        let target = self.requests() + n;
        eventually_async("the attack to go on", async || {
            tokio::task::yield_now().await;
            self.requests() >= target
        })
        .await;
    }

    /// Checks the attack is still running, then stops it.
    async fn stop(self) {
        assert!(
            self.tasks.iter().all(|t| !t.is_finished()),
            "an attacker task ended early (it panicked?)"
        );
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------

/// The users of the credential tests, with Argon2 secrets (slow by design).
fn users() -> UserDirectory {
    let line = |user: &str, role: &str| {
        format!(
            "{user}:{}:{role}\n",
            hash_password(&format!("{user}-pw")).unwrap()
        )
    };
    let text = line("agent1", "agent") + &line("agent2", "agent") + &line("boss", "supervisor");
    UserDirectory::parse(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_never_stalls_a_legitimate_agent() {
    timeout(BOUND, async {
        let directory = users().with_checks(
            CheckLimits::default()
                .with_concurrency(2)
                .with_throttle_delay(Duration::from_millis(100)),
        );
        let access = Access::checked(directory);
        let directory = access.directory().unwrap().clone();
        let config = ServerConfig::default()
            .with_timeout(Duration::from_secs(2))
            .with_max_interval(Duration::from_secs(5));
        let failures_per_address = config.max_auth_failures_per_address;
        let app = DemoApp::new(config, access, WorkbinConfig::default(), "/cometd");
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let server = app.server().clone();
        let addr = listening.local_addr();
        let url = listening.url("/cometd");

        // Unknown and known users take the same path (one slow check each) and get the
        // same answer.
        let before = directory.check_stats().slow_checks;
        let (_, unknown) = bayeux_from(
            BYSTANDER,
            addr,
            &[("authorization", &basic_authorization("nobody", "x"))],
            handshake_message(),
        )
        .await;
        let (_, known) = bayeux_from(
            BYSTANDER,
            addr,
            &[("authorization", &basic_authorization("agent2", "x"))],
            handshake_message(),
        )
        .await;
        assert_eq!(directory.check_stats().slow_checks, before + 2);
        assert_eq!(unknown[0]["error"], known[0]["error"]);
        assert_eq!(
            known[0]["error"],
            "403::Handshake denied: invalid credentials"
        );

        // The agent signs in before the attack, as at the start of a shift.
        let agent = client_from(VICTIM, &url, Some(("agent1", "agent1-pw")));
        agent.handshake().await.unwrap();
        agent.disconnect().await.unwrap();

        // The attack: batches of 200 handshakes, then one guess per request, on the
        // agent's own name and another, from four connections at once.
        let wrong1 = basic_authorization("agent1", "guess");
        let wrong2 = basic_authorization("agent2", "guess");
        let attack = Attack::start(4, move |worker, n| {
            let (wrong1, wrong2) = (wrong1.clone(), wrong2.clone());
            async move {
                let auth = if (worker + n as usize).is_multiple_of(2) {
                    wrong1
                } else {
                    wrong2
                };
                let body = if n < 8 {
                    Value::Array(vec![handshake_message(); 200])
                } else {
                    handshake_message()
                };
                let (status, replies) =
                    bayeux_from(ATTACKER, addr, &[("authorization", &auth)], body).await;
                assert_eq!(status, 200);
                assert!(
                    replies.iter().all(|r| r["successful"] == false),
                    "{replies:?}"
                );
                if replies.len() == 200 {
                    // One handshake per request: the others are refused unchecked.
                    let refused = replies
                        .iter()
                        .filter(|r| {
                            r["error"]
                                .as_str()
                                .is_some_and(|e| e.contains("handshakesPerRequest"))
                        })
                        .count();
                    assert_eq!(refused, 199, "{:?}", replies[0]);
                }
            }
        });
        attack.until_more(100).await;

        // While it goes on: the agent (signed in before) and the supervisor (never seen
        // before, a slow check) sign in and receive.
        let waits_before = directory.check_stats().clean_waits;
        let agent = client_from(VICTIM, &url, Some(("agent1", "agent1-pw")));
        agent.handshake().await.unwrap();
        receives(&agent, &server, "/chat/desk", 1).await;
        let boss = client_from(BYSTANDER, &url, Some(("boss", "boss-pw")));
        boss.handshake().await.unwrap();
        receives(&boss, &server, "/chat/floor", 2).await;
        attack.until_more(20).await;
        // The clean clients' checks never waited behind the attacker's (the test hook
        // and the metric agree).
        assert_eq!(directory.check_stats().clean_waits, waits_before);
        assert_eq!(
            metric(&server, "bayeux_auth_clean_waits_total "),
            waits_before as f64
        );
        assert!(metric(&server, "bayeux_auth_slow_checks_total ") >= 3.0);
        attack.stop().await;

        // The attacker paid for its guesses, the server did not: past the per-address
        // bound its handshakes were refused before any hash ran.
        let stats = directory.check_stats();
        assert!(
            stats.failures <= u64::from(failures_per_address) + 2 + 4,
            "{stats:?}"
        );
        assert!(refusals(&server, "max-auth-failures-per-address") > 0.0);
        assert!(refusals(&server, "handshakes-per-request") >= 199.0 * 8.0);
        // Nothing was lost: both are still connected and still receive.
        receives(&agent, &server, "/chat/desk2", 3).await;
        receives(&boss, &server, "/chat/floor2", 4).await;
        listening.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_agent_is_slowed_for_strangers_and_never_locked_out() {
    timeout(BOUND, async {
        let directory = users().with_checks(
            CheckLimits::default()
                .with_max_failures_per_user(3)
                .with_throttle_delay(Duration::from_millis(50)),
        );
        let access = Access::checked(directory);
        let directory = access.directory().unwrap().clone();
        let app = DemoApp::new(fast_config(), access, WorkbinConfig::default(), "/cometd");
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listening.local_addr();
        // Guesses on agent1 from several addresses (a distributed attack).
        for from in ["127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"] {
            let (_, r) = bayeux_from(
                from,
                addr,
                &[("authorization", &basic_authorization("agent1", "guess"))],
                handshake_message(),
            )
            .await;
            assert_eq!(r[0]["successful"], false);
        }
        assert!(directory.check_stats().user_throttled >= 1);
        // The agent, from an address of its own, is slowed but let in.
        let agent = client_from(
            VICTIM,
            &listening.url("/cometd"),
            Some(("agent1", "agent1-pw")),
        );
        agent.handshake().await.unwrap();
        // Once it signed in, its address is not slowed any more.
        let throttled = directory.check_stats().user_throttled;
        let (_, r) = bayeux_from(
            VICTIM,
            addr,
            &[("authorization", &basic_authorization("agent1", "agent1-pw"))],
            handshake_message(),
        )
        .await;
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert_eq!(directory.check_stats().user_throttled, throttled);
        listening.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_handshakes_that_never_connect_is_bounded_per_address() {
    timeout(BOUND, async {
        let config = fast_config()
            .with_max_sessions_per_address(20)
            .with_max_interval(Duration::from_millis(500));
        let t = TestServer::with_config(config).await;
        let addr = t.listening.local_addr();
        // A batch of 1 000 handshakes opens one session.
        let (status, replies) = bayeux_from(
            ATTACKER,
            addr,
            &[],
            Value::Array(vec![handshake_message(); 1000]),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            replies.iter().filter(|r| r["successful"] == true).count(),
            1
        );
        assert_eq!(t.server.session_count(), 1);
        // Then one per request, as fast as answered: 20 at most live at once.
        let mut refused = None;
        for _ in 0..40 {
            let (_, r) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
            if r[0]["successful"] == false {
                refused = Some(r[0].clone());
            }
        }
        let refused = refused.expect("the address's sessions are bounded");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("maxSessionsPerAddress"),
            "{refused}"
        );
        assert_eq!(refused["advice"]["reconnect"], "handshake");
        assert!(t.server.session_count() <= 20);
        assert!(refusals(&t.server, "max-sessions-per-address") >= 20.0);
        // Another client is not affected.
        let victim = client_from(VICTIM, &t.url(), None);
        victim.handshake().await.unwrap();
        receives(&victim, &t.server, "/news", 1).await;
        // The flood's sessions expire (maxInterval), and the address may come back.
        eventually("the flood's sessions to expire", || {
            t.server.session_count() <= 1
        })
        .await;
        let (_, r) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
        assert_eq!(r[0]["successful"], true);
        receives(&victim, &t.server, "/news", 2).await;
    })
    .await
    .unwrap();
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket to `t` from `from`, or the status that refused it.
async fn ws_from(from: &str, t: &TestServer, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let addr = t.listening.local_addr();
    let mut request = format!("ws://{addr}/cometd").into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = connect_from(from, addr).await;
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_that_never_handshake_are_bounded_and_closed() {
    timeout(BOUND, async {
        // The handshake deadline comes well before the idle one (timeout +
        // maxInterval), which would close the sockets otherwise.
        let config = fast_config()
            .with_timeout(Duration::from_secs(2))
            .with_max_interval(Duration::from_secs(5))
            .with_max_pending_websockets_per_address(4)
            .with_websocket_handshake_timeout(Duration::from_millis(500));
        let t = TestServer::with_config(config).await;
        let mut idle = Vec::new();
        let mut refused = 0;
        for _ in 0..10 {
            match ws_from(ATTACKER, &t, &[]).await {
                Ok(ws) => idle.push(ws),
                Err(status) => {
                    assert_eq!(status, 503);
                    refused += 1;
                }
            }
        }
        assert_eq!((idle.len(), refused), (4, 6));
        assert_eq!(metric(&t.server, "bayeux_websockets_pending "), 4.0);
        // Meanwhile a client from elsewhere handshakes over its socket and receives.
        let mut ws = ws_from(VICTIM, &t, &[]).await.unwrap();
        ws.send(Frame::text(
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["websocket"]}])
            .to_string(),
        ))
        .await
        .unwrap();
        let reply = frame(&mut ws).await;
        let id = reply[0]["clientId"].as_str().unwrap().to_string();
        ws.send(Frame::text(
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/ws"},
                   {"channel": "/meta/connect", "clientId": id, "connectionType": "websocket",
                    "advice": {"timeout": 0}}])
            .to_string(),
        ))
        .await
        .unwrap();
        let mut subscribed = false;
        while !subscribed {
            subscribed = frame(&mut ws)
                .await
                .iter()
                .any(|m| m["channel"] == "/meta/subscribe" && m["successful"] == true);
        }
        t.server.publish("/ws", json!("hello")).await.unwrap();
        let mut got = false;
        while !got {
            got = frame(&mut ws).await.iter().any(|m| m["data"] == "hello");
        }
        // The sockets that never handshook are closed (1008) after their deadline...
        for ws in &mut idle {
            assert_eq!(close_code(ws).await, Some(CloseCode::Policy));
        }
        assert!(refusals(&t.server, "websocket-handshake-timeout") >= 4.0);
        assert!(refusals(&t.server, "max-pending-websockets-per-address") >= 6.0);
        // ...which frees their places.
        eventually("the pending sockets to be released", || {
            metric(&t.server, "bayeux_websockets_pending ") == 0.0
        })
        .await;
        assert!(ws_from(ATTACKER, &t, &[]).await.is_ok());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_on_every_transport_costs_no_one_else_a_message() {
    use tokio::io::AsyncWriteExt;
    timeout(BOUND, async {
        let config = fast_config()
            .with_callback_polling(true)
            .with_max_interval(Duration::from_secs(20))
            .with_max_queue_bytes(256 * 1024);
        let t = TestServer::with_config(config).await;
        let addr = t.listening.local_addr();
        let raw = |body: Value| async move {
            let (_, r) = bayeux_from(ATTACKER, addr, &[], body).await;
            r
        };
        let session = async || {
            let r = raw(handshake_message()).await;
            let id = r[0]["clientId"].as_str().unwrap().to_string();
            let r = raw(json!({"channel": "/meta/subscribe", "clientId": id,
                               "subscription": "/firehose"}))
            .await;
            assert_eq!(r[0]["successful"], true);
            id
        };
        // Long-polling and callback-polling readers that send a connect and never read
        // its answer; a WebSocket that stops reading.
        let lp = session().await;
        let mut lp_tcp = connect_from(ATTACKER, addr).await;
        let connect = json!([{"channel": "/meta/connect", "clientId": lp,
                              "connectionType": "long-polling"}])
        .to_string();
        lp_tcp
            .write_all(
                format!(
                    "POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{connect}",
                    connect.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let cp = session().await;
        let mut cp_tcp = connect_from(ATTACKER, addr).await;
        let query = format!(
            "jsonp=cb&message={}",
            json!([{"channel": "/meta/connect", "clientId": cp,
                    "connectionType": "callback-polling"}])
            .to_string()
            .replace('"', "%22")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('[', "%5B")
            .replace(']', "%5D")
            .replace(',', "%2C")
            .replace(':', "%3A")
            .replace('/', "%2F")
        );
        cp_tcp
            .write_all(format!("GET /cometd?{query} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut ws = ws_from(ATTACKER, &t, &[]).await.unwrap();
        ws.send(Frame::text(handshake_message().to_string()))
            .await
            .unwrap();
        let ws_id = frame(&mut ws).await[0]["clientId"]
            .as_str()
            .unwrap()
            .to_string();
        ws.send(Frame::text(
            json!([{"channel": "/meta/subscribe", "clientId": ws_id, "subscription": "/firehose"},
                   {"channel": "/meta/connect", "clientId": ws_id, "connectionType": "websocket"}])
            .to_string(),
        ))
        .await
        .unwrap();
        frame(&mut ws).await;
        // (from here on, nobody reads `ws`, `lp_tcp` or `cp_tcp`)

        // The victim drains as it goes: each round is published once it has the last.
        let victim = client_from(VICTIM, &t.url(), None);
        victim.handshake().await.unwrap();
        let mut sub = victim.subscribe("/firehose").await.unwrap();
        let payload = "x".repeat(1024);
        let mut next = 0u64;
        for _round in 0..60 {
            for _ in 0..100 {
                t.server
                    .publish("/firehose", json!({"n": next, "pad": payload}))
                    .await
                    .unwrap();
                next += 1;
            }
            for expected in next - 100..next {
                let m = timeout(Duration::from_secs(15), sub.next())
                    .await
                    .expect("the victim's message arrives")
                    .unwrap();
                assert_eq!(m.data.unwrap()["n"], expected, "lost or reordered");
            }
        }
        // 6 MB went by: the slow readers' queues overflowed; the victim lost nothing.
        for id in [&lp, &cp, &ws_id] {
            assert!(
                t.server.dropped_messages(id).is_none_or(|d| d > 0),
                "the slow reader {id} kept everything?"
            );
        }
        assert_eq!(victim.dropped_messages(), 0);
        assert_eq!(sub.dropped(), 0);
        drop((lp_tcp, cp_tcp, ws));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_grants_credentials_to_listed_origins_only() {
    timeout(BOUND, async {
        let directory = UserDirectory::parse("agent1:agent1-pw:agent\n").unwrap();
        let config =
            fast_config().with_cors_origins(vec!["*".into(), "http://desk.example".into()]);
        let app = DemoApp::new(
            config,
            Access::checked(directory),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listening.local_addr();
        let auth = basic_authorization("agent1", "agent1-pw");
        let post = |origin: &'static str, auth: String| async move {
            request_from(
                ATTACKER,
                addr,
                "POST",
                "/cometd",
                &[
                    ("origin", origin),
                    ("content-type", "application/json"),
                    ("cookie", "BAYEUX_BROWSER=abc; session=secret"),
                    ("authorization", &auth),
                ],
                handshake_message().to_string(),
            )
            .await
        };
        // A foreign origin allowed by `*` only: no credentials granted, none used.
        let (status, headers, body) = post("https://evil.example", auth.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert!(headers.get("access-control-allow-credentials").is_none());
        assert!(headers.get("set-cookie").is_none());
        let replies: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(
            replies[0]["successful"], false,
            "handled as anonymous: {body}"
        );
        assert_eq!(
            replies[0]["error"],
            "403::Handshake denied: credentials required"
        );
        // A listed origin: credentialed.
        let (status, headers, body) = post("http://desk.example", auth.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers["access-control-allow-origin"],
            "http://desk.example"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        let replies: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(replies[0]["successful"], true, "{body}");
        // Where CORS allows, Faye's cross-origin-long-polling is offered.
        assert!(
            replies[0]["supportedConnectionTypes"]
                .as_array()
                .unwrap()
                .contains(&json!("cross-origin-long-polling"))
        );
        // Preflights list what the endpoint accepts, not what was asked.
        for (origin, credentials) in [
            ("https://evil.example", false),
            ("http://desk.example", true),
        ] {
            let (status, headers, _) = request_from(
                ATTACKER,
                addr,
                "OPTIONS",
                "/cometd",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "x-evil, content-type"),
                ],
                Bytes::new(),
            )
            .await;
            assert_eq!(status, 204);
            let allowed = headers["access-control-allow-headers"].to_str().unwrap();
            assert!(!allowed.to_lowercase().contains("x-evil"), "{allowed}");
            assert!(allowed.contains("Content-Type"));
            assert_eq!(allowed.contains("Authorization"), credentials, "{allowed}");
        }
        // A foreign origin's WebSocket with the user's cookie is refused; without
        // credentials it is served; a listed origin's is served with them.
        let t = TestServer {
            server: app.server().clone(),
            listening,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        };
        assert_eq!(
            ws_from(
                ATTACKER,
                &t,
                &[
                    ("origin", "https://evil.example"),
                    ("cookie", "BAYEUX_BROWSER=abc")
                ]
            )
            .await
            .err(),
            Some(403)
        );
        assert_eq!(
            ws_from(
                ATTACKER,
                &t,
                &[("origin", "https://evil.example"), ("authorization", &auth)]
            )
            .await
            .err(),
            Some(403)
        );
        assert!(
            ws_from(ATTACKER, &t, &[("origin", "https://evil.example")])
                .await
                .is_ok()
        );
        assert!(
            ws_from(
                ATTACKER,
                &t,
                &[
                    ("origin", "http://desk.example"),
                    ("cookie", "BAYEUX_BROWSER=abc")
                ]
            )
            .await
            .is_ok()
        );
        // Without `*`, another origin is refused outright; an application's own request
        // headers are allowed when configured.
        let strict = TestServer::with_config(
            fast_config()
                .with_cors_origins(vec!["http://desk.example".into()])
                .with_cors_allowed_headers(vec!["X-App-Token".into()]),
        )
        .await;
        let (status, headers, _) = request_from(
            ATTACKER,
            strict.listening.local_addr(),
            "OPTIONS",
            "/cometd",
            &[
                ("origin", "http://desk.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-app-token"),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 204);
        assert!(
            headers["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .ends_with(", X-App-Token")
        );
        let (status, headers, _) = request_from(
            ATTACKER,
            strict.listening.local_addr(),
            "POST",
            "/cometd",
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            handshake_message().to_string(),
        )
        .await;
        assert_eq!(status, 403);
        assert!(headers.get("access-control-allow-origin").is_none());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faye_cross_origin_long_polling_is_served_as_long_polling() {
    timeout(BOUND, async {
        let t = TestServer::with_config(
            fast_config().with_cors_origins(vec!["http://page.example".into()]),
        )
        .await;
        let addr = t.listening.local_addr();
        // Faye's CORS transport: a form in a text/plain body.
        let form = |messages: Value| {
            let json = messages.to_string();
            let encoded: String = form_urlencoded::byte_serialize(json.as_bytes()).collect();
            format!("message={encoded}")
        };
        let post = |body: String| async move {
            let (status, headers, text) = request_from(
                ATTACKER,
                addr,
                "POST",
                "/cometd",
                &[
                    ("origin", "http://page.example"),
                    ("content-type", "text/plain;charset=UTF-8"),
                    ("pragma", "no-cache"),
                ],
                body,
            )
            .await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(
                headers["access-control-allow-origin"],
                "http://page.example"
            );
            serde_json::from_str::<Vec<Value>>(&text).unwrap()
        };
        let r = post(form(
            json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["cross-origin-long-polling", "callback-polling"]}]),
        ))
        .await;
        let id = r[0]["clientId"].as_str().unwrap().to_string();
        let r = post(form(json!([{"channel": "/meta/subscribe", "clientId": id,
                                  "subscription": "/faye"}])))
        .await;
        assert_eq!(r[0]["successful"], true);
        t.server.publish("/faye", json!("hi")).await.unwrap();
        let r = post(form(json!([{"channel": "/meta/connect", "clientId": id,
                                  "connectionType": "cross-origin-long-polling"}])))
        .await;
        assert!(r.iter().any(|m| m["data"] == "hi"), "{r:?}");
        assert!(
            r.iter()
                .any(|m| m["channel"] == "/meta/connect" && m["successful"] == true)
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_deeply_nested_json_get_clear_errors() {
    timeout(BOUND, async {
        let t = TestServer::with_config(fast_config()).await;
        let addr = t.listening.local_addr();
        let victim = client_from(VICTIM, &t.url(), None);
        victim.handshake().await.unwrap();
        receives(&victim, &t.server, "/calm", 0).await;
        // Over maxMessageSize: 413.
        let big = vec![b' '; 2 * 1024 * 1024];
        let (status, _, _) = request_from(
            ATTACKER,
            addr,
            "POST",
            "/cometd",
            &[("content-type", "application/json")],
            big,
        )
        .await;
        assert_eq!(status, 413);
        // Nested 100 000 deep, as the whole body and inside a message's data: 400, and
        // no stack overflow.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let (status, _, _) = request_from(
            ATTACKER,
            addr,
            "POST",
            "/cometd",
            &[("content-type", "application/json")],
            deep.clone(),
        )
        .await;
        assert_eq!(status, 400);
        let id = {
            let (_, r) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
            r[0]["clientId"].as_str().unwrap().to_string()
        };
        let nested = format!(r#"[{{"channel":"/calm","clientId":"{id}","data":{deep}}}]"#);
        let (status, _, body) = request_from(
            ATTACKER,
            addr,
            "POST",
            "/cometd",
            &[("content-type", "application/json")],
            nested.clone(),
        )
        .await;
        assert!(
            status == 400 || (status == 200 && body.contains("false")),
            "{status} {body}"
        );
        // Over a WebSocket: closed with 1007.
        let t2 = &t;
        let mut ws = ws_from(ATTACKER, t2, &[]).await.unwrap();
        ws.send(Frame::text(deep)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
        // The server is fine, the victim lost nothing.
        receives(&victim, &t.server, "/calm", 1).await;
        assert_eq!(victim.sessions_lost(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sessions_overflow_against_the_budget_of_all_queues_not_the_active_ones() {
    timeout(BOUND, async {
        let budget = 1024 * 1024;
        let config = fast_config()
            .with_max_interval(Duration::from_secs(30))
            .with_max_queue_bytes(256 * 1024)
            .with_max_queued_bytes(budget);
        let t = TestServer::with_config(config).await;
        let addr = t.listening.local_addr();
        // 20 sessions subscribe and never connect again.
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let (_, r) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
            let id = r[0]["clientId"].as_str().unwrap().to_string();
            let (_, r) = bayeux_from(
                ATTACKER,
                addr,
                &[],
                json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/ticker"}),
            )
            .await;
            assert_eq!(r[0]["successful"], true);
            stalled.push(id);
        }
        let victim = client_from(VICTIM, &t.url(), None);
        victim.handshake().await.unwrap();
        let mut sub = victim.subscribe("/ticker").await.unwrap();
        let payload = "y".repeat(1024);
        let mut most = 0.0f64;
        for round in 0..100u64 {
            for i in 0..20 {
                t.server
                    .publish("/ticker", json!({"n": round * 20 + i, "pad": payload}))
                    .await
                    .unwrap();
            }
            for i in 0..20 {
                let m = timeout(Duration::from_secs(15), sub.next())
                    .await
                    .expect("the active session's message arrives")
                    .unwrap();
                assert_eq!(m.data.unwrap()["n"], round * 20 + i);
            }
            most = most.max(metric(&t.server, "bayeux_queued_bytes "));
        }
        // The queues never held more than twice the budget; the stalled sessions paid.
        assert!(most <= 2.0 * budget as f64, "{most}");
        assert!(
            most >= budget as f64 * 0.9,
            "the budget was reached: {most}"
        );
        assert!(refusals(&t.server, "max-queued-bytes") > 0.0);
        assert!(
            stalled
                .iter()
                .all(|id| t.server.dropped_messages(id).unwrap() > 0)
        );
        assert_eq!(sub.dropped(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_in_progress_count_against_the_body_budget() {
    use tokio::io::AsyncWriteExt;
    timeout(BOUND, async {
        let config = fast_config()
            .with_timeout(Duration::from_secs(2))
            .with_max_interval(Duration::from_secs(5))
            .with_max_message_size(48 * 1024)
            .with_max_body_bytes_per_address(64 * 1024);
        let t = TestServer::with_config(config).await;
        // Two sockets each start a 48 KiB message and send 40 KiB of it: the second
        // goes past the address's 64 KiB and is closed (1008).
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let mut ws = ws_from(ATTACKER, &t, &[]).await.unwrap();
            let len: u64 = 48 * 1024;
            let mut head = vec![0x81u8, 0x80 | 127];
            head.extend_from_slice(&len.to_be_bytes());
            head.extend_from_slice(&[1, 2, 3, 4]);
            let tcp = ws.get_mut();
            tcp.write_all(&head).await.unwrap();
            tcp.write_all(&vec![b'a'; 40 * 1024]).await.unwrap();
            tcp.flush().await.unwrap();
            sockets.push(ws);
        }
        let second = sockets.pop().unwrap();
        let mut second = second;
        assert_eq!(close_code(&mut second).await, Some(CloseCode::Policy));
        assert!(refusals(&t.server, "max-body-bytes-per-address") >= 1.0);
        assert!(metric(&t.server, "bayeux_body_bytes ") <= 64.0 * 1024.0);
        // Another address is served meanwhile.
        let victim = client_from(VICTIM, &t.url(), None);
        victim.handshake().await.unwrap();
        receives(&victim, &t.server, "/budget", 1).await;
        drop(sockets);
        eventually("the first socket's bytes to be given back", || {
            metric(&t.server, "bayeux_body_bytes ") == 0.0
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_websockets_keep_counting_as_connections() {
    timeout(BOUND, async {
        let config = fast_config()
            .with_timeout(Duration::from_secs(2))
            .with_max_interval(Duration::from_secs(5))
            .with_max_connections_per_address(5);
        let t = TestServer::with_config(config).await;
        // Five sockets that handshook (so none is pending) use up the address's places.
        let mut open = Vec::new();
        for _ in 0..5 {
            let mut ws = ws_from(ATTACKER, &t, &[]).await.unwrap();
            ws.send(Frame::text(handshake_message().to_string()))
                .await
                .unwrap();
            assert_eq!(frame(&mut ws).await[0]["successful"], true);
            open.push(ws);
        }
        assert_eq!(metric(&t.server, "bayeux_connections_open "), 5.0);
        assert_eq!(ws_from(ATTACKER, &t, &[]).await.err(), Some(503));
        // Another address is not affected; a closed socket gives its place back.
        assert!(ws_from(VICTIM, &t, &[]).await.is_ok());
        drop(open.pop());
        eventually("the closed socket's place to come back", || {
            metric(&t.server, "bayeux_connections_open ") <= 5.0
                && metric(&t.server, "bayeux_websockets_open ") <= 5.0
        })
        .await;
        eventually("a place for the address", || {
            metric(&t.server, "bayeux_connections_open ") < 5.0
        })
        .await;
        assert!(ws_from(ATTACKER, &t, &[]).await.is_ok());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_count_against_the_budget_as_their_bytes_arrive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    timeout(BOUND, async {
        let config = fast_config()
            .with_max_message_size(48 * 1024)
            .with_max_body_bytes_per_address(64 * 1024);
        let t = TestServer::with_config(config).await;
        let addr = t.listening.local_addr();
        // Two bodies declared at 48 KiB each: declaring costs nothing, bytes do.
        let head = format!(
            "POST /cometd HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            48 * 1024
        );
        let mut first = connect_from(ATTACKER, addr).await;
        first.write_all(head.as_bytes()).await.unwrap();
        let mut second = connect_from(ATTACKER, addr).await;
        second.write_all(head.as_bytes()).await.unwrap();
        // A small request from the same address still fits beside them.
        let (status, _) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
        assert_eq!(status, 200);
        // 40 KiB of each: the second goes past the address's 64 KiB and is answered
        // 503 with Retry-After.
        first.write_all(&vec![b' '; 40 * 1024]).await.unwrap();
        eventually("the first body's bytes to be counted", || {
            metric(&t.server, "bayeux_body_bytes ") >= 40.0 * 1024.0
        })
        .await;
        second.write_all(&vec![b' '; 40 * 1024]).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = second.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(refusals(&t.server, "max-body-bytes-per-address") >= 1.0);
        // Another address is served meanwhile; the first body's bytes come back when
        // its connection goes.
        let victim = client_from(VICTIM, &t.url(), None);
        victim.handshake().await.unwrap();
        receives(&victim, &t.server, "/bodies", 1).await;
        drop((first, second));
        eventually("the bytes to be given back", || {
            metric(&t.server, "bayeux_body_bytes ") == 0.0
        })
        .await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_at_its_session_bound_costs_no_credential_check() {
    use bayeux::server::{HandshakeDecision, HandshakeRequest, PolicyFuture, SecurityPolicy};
    /// Counts the credential checks it is asked for.
    struct Counting(Arc<AtomicU64>);
    impl SecurityPolicy for Counting {
        fn handshake<'a>(&'a self, _: HandshakeRequest<'a>) -> PolicyFuture<'a, HandshakeDecision> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(std::future::ready(HandshakeDecision::Accept { user: None }))
        }
    }
    timeout(BOUND, async {
        let checks = Arc::new(AtomicU64::new(0));
        let server = Server::builder()
            .config(fast_config().with_max_sessions_per_address(1))
            .policy(Counting(checks.clone()))
            .build();
        let t = TestServer::start(server).await;
        let addr = t.listening.local_addr();
        let (_, r) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
        assert_eq!(r[0]["successful"], true);
        for _ in 0..5 {
            let (_, r) = bayeux_from(ATTACKER, addr, &[], handshake_message()).await;
            assert!(
                r[0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("maxSessionsPerAddress")
            );
        }
        assert_eq!(
            checks.load(Ordering::Relaxed),
            1,
            "refused before the policy"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_policy_that_is_busy_asks_the_client_to_handshake_again_later() {
    use bayeux::server::{HandshakeDecision, HandshakeRequest, PolicyFuture, SecurityPolicy};
    struct Busy;
    impl SecurityPolicy for Busy {
        fn handshake<'a>(&'a self, _: HandshakeRequest<'a>) -> PolicyFuture<'a, HandshakeDecision> {
            Box::pin(std::future::ready(HandshakeDecision::Busy(
                "credential checks are busy".into(),
            )))
        }
    }
    timeout(BOUND, async {
        let t =
            TestServer::start(Server::builder().config(fast_config()).policy(Busy).build()).await;
        let (status, r) =
            bayeux_from(ATTACKER, t.listening.local_addr(), &[], handshake_message()).await;
        assert_eq!(status, 200);
        assert_eq!(r[0]["successful"], false);
        assert_eq!(r[0]["error"], "503::credential checks are busy");
        // Not a refusal for good: handshake again after interval + 1 s.
        assert_eq!(r[0]["advice"]["reconnect"], "handshake");
        assert_eq!(r[0]["advice"]["interval"], 1_000);
        // And not counted as a failed attempt of the address.
        let (_, r) =
            bayeux_from(ATTACKER, t.listening.local_addr(), &[], handshake_message()).await;
        assert_eq!(r[0]["error"], "503::credential checks are busy");
        assert_eq!(refusals(&t.server, "max-auth-failures-per-address"), 0.0);
    })
    .await
    .unwrap();
}

//! Limits, security settings and hostile input: each gets a clear error, the server
//! never panics or hangs, and a well-behaved client on the same server keeps receiving
//! every message meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bayeux::client::{Client, Subscription};
use bayeux::server::{Server, ServerConfig};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A well-behaved subscriber plus a publisher that keeps publishing numbered messages
/// while the hostile input runs; `finish` checks that every one of them arrived, in order.
struct Watchdog {
    _client: Client,
    sub: Subscription,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    async fn start(t: &TestServer) -> Watchdog {
        let client = Client::builder(&t.url())
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let sub = client.subscribe("/watch").await.unwrap();
        let (stop, published) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let server = t.server.clone();
        let (s, p) = (stop.clone(), published.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let n = p.load(Ordering::SeqCst);
                assert_eq!(
                    server
                        .publish("/watch", json!(n))
                        .await
                        .unwrap()
                        .local_recipients,
                    1,
                    "the watchdog lost its session"
                );
                p.store(n + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Watchdog {
            _client: client,
            sub,
            stop,
            published,
            task,
        }
    }

    async fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let n = self.published.load(Ordering::SeqCst);
        for i in 0..n {
            let m = self.sub.next().await.expect("watchdog stream ended");
            assert_eq!(
                m.data,
                Some(json!(i)),
                "the well-behaved client missed or reordered a message"
            );
        }
        assert!(n > 0);
    }
}

/// Writes `bytes` on a fresh connection and returns what the server answers.
async fn raw_tcp(t: &TestServer, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(t.listening.local_addr()).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn config() -> ServerConfig {
    ServerConfig {
        timeout: Duration::from_millis(500),
        max_interval: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_clear_errors() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ServerConfig {
            max_message_size: 4 * 1024 * 1024,
            ..config()
        })
        .await;
        let dog = Watchdog::start(&t).await;
        let deep = "[".repeat(100_000);
        assert_eq!(t.raw("POST", deep).await.0, 400, "deep nesting");
        let deep_objects = "{\"a\":".repeat(50_000);
        assert_eq!(t.raw("POST", deep_objects).await.0, 400, "deep objects");
        // A huge declared body is refused before it is read. (Sent over raw TCP: a client
        // still writing 5 MiB when the server answers and closes may see a reset instead
        // of the 413.)
        let head = "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: 5242880\r\n\r\n[\"";
        assert!(
            raw_tcp(&t, head.as_bytes())
                .await
                .starts_with("HTTP/1.1 413"),
            "huge declared body"
        );
        assert_eq!(
            t.raw("POST", &b"[{\"channel\":\"/a\xff\xfe\"}]"[..])
                .await
                .0,
            400,
            "non-UTF-8"
        );
        let (status, body) = t
            .raw(
                "POST",
                serde_json::to_vec(&vec![json!({"channel": "/x"}); 100_000]).unwrap(),
            )
            .await;
        assert_eq!(status, 400, "a batch of 100 000 messages");
        assert!(body.contains("maxBatch"), "{body}");

        // A large string that fits is a normal publish: delivered intact.
        let id = t.handshake().await;
        t.subscribe(&id, json!("/big")).await;
        let big = "x".repeat(900_000);
        assert_eq!(t.publish(&id, "/big", json!(big)).await["successful"], true);
        let (msgs, _) = t.connect_now(&id).await;
        assert_eq!(msgs[0]["data"].as_str().map(str::len), Some(900_000));
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_undeclared_body_over_the_limit_is_refused_with_413() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ServerConfig {
            max_message_size: 4096,
            ..config()
        })
        .await;
        let mut req =
            b"POST /cometd HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            req.extend_from_slice(b"1000\r\n");
            req.extend_from_slice(&[b' '; 4096]);
            req.extend_from_slice(b"\r\n");
        }
        assert!(raw_tcp(&t, &req).await.starts_with("HTTP/1.1 413"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_json_types_for_every_field_get_bayeux_errors() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(config()).await;
        let dog = Watchdog::start(&t).await;
        let wrong: Vec<(&str, Vec<Value>)> = vec![
            ("channel", vec![json!(5), json!(true), json!([]), json!({})]),
            ("id", vec![json!(true), json!([1]), json!({})]),
            ("clientId", vec![json!(5), json!([]), json!({})]),
            ("ext", vec![json!("x"), json!(5), json!([])]),
            (
                "advice",
                vec![
                    json!("x"),
                    json!(5),
                    json!([]),
                    json!({"timeout": "x"}),
                    json!({"reconnect": 5}),
                ],
            ),
            ("successful", vec![json!("yes"), json!(1)]),
            ("error", vec![json!(5), json!({})]),
            ("subscription", vec![json!(5), json!({}), json!([1, 2])]),
            ("version", vec![json!(1.0), json!([])]),
            ("minimumVersion", vec![json!(1), json!({})]),
            (
                "supportedConnectionTypes",
                vec![json!("long-polling"), json!([1])],
            ),
            ("connectionType", vec![json!(5)]),
            ("timestamp", vec![json!(5)]),
        ];
        for (field, values) in wrong {
            for value in values {
                let mut m = json!({"channel": "/meta/handshake", "version": "1.0", "id": "w"});
                m[field] = value.clone();
                let replies = t
                    .post(json!([m, {"channel": "/meta/handshake", "version": "1.0", "id": "ok"}]))
                    .await;
                assert_eq!(replies[0]["successful"], false, "{field}={value}");
                assert!(
                    replies[0]["error"].as_str().unwrap().starts_with("400:"),
                    "{field}={value}: {}",
                    replies[0]
                );
                // The next message of the same batch is still served.
                assert_eq!(replies[1]["successful"], true, "{field}={value}");
            }
        }
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn subscription_limits() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ServerConfig {
            max_subscriptions: 10,
            max_message_size: 4 << 20,
            ..config()
        })
        .await;
        let dog = Watchdog::start(&t).await;
        let id = t.handshake().await;
        let ten: Vec<String> = (0..10).map(|i| format!("/s/{i}")).collect();
        assert_eq!(t.subscribe(&id, json!(ten)).await["successful"], true);
        // Subscribing again to one already held is no new subscription.
        assert_eq!(t.subscribe(&id, json!("/s/3")).await["successful"], true);
        let r = t.subscribe(&id, json!("/s/10")).await;
        assert_eq!(
            r["error"],
            "409:maxSubscriptions:More than 10 subscriptions"
        );
        let huge: Vec<String> = (0..100_000).map(|i| format!("/h/{i}")).collect();
        let r = t.subscribe(&id, json!(huge)).await;
        assert_eq!(r["error"], "409:maxSubscriptions:More than 10 channels");
        assert!(
            r.get("subscription").is_none(),
            "an oversized list is not echoed back"
        );
        let long = format!("/{}", "a".repeat(600));
        let r = t.subscribe(&id, json!(long)).await;
        assert!(r["error"].as_str().unwrap().starts_with("400:/aaaa"), "{r}");
        assert!(
            r["error"].as_str().unwrap().len() < 200,
            "the long name is not echoed whole: {r}"
        );
        let r = t.publish(&id, &long, json!(1)).await;
        assert!(
            r["error"].as_str().unwrap().contains("longer than 512"),
            "{r}"
        );
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_is_refused_past_max_sessions_with_advice() {
    timeout(LIMIT, async {
        let t = Arc::new(
            TestServer::with_config(ServerConfig {
                max_sessions: 200,
                ..config()
            })
            .await,
        );
        let dog = Watchdog::start(&t).await;
        let mut tasks = Vec::new();
        for _ in 0..1_000 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.post(json!({"channel": "/meta/handshake", "version": "1.0"}))
                    .await
                    .remove(0)
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for task in tasks {
            let r = task.await.unwrap();
            if r["successful"] == true {
                ok += 1;
            } else {
                assert_eq!(r["error"], "409:maxSessions:Too many sessions");
                assert_eq!(r["advice"]["reconnect"], "handshake");
                assert!(r["advice"]["interval"].as_i64().unwrap() >= 1_000);
                refused += 1;
            }
        }
        // The watchdog holds one session; the flood gets the other 199.
        assert_eq!((ok, refused), (199, 801));
        assert_eq!(t.server.session_count(), 200);
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slow_clients_cannot_hold_the_server() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ServerConfig {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..config()
        })
        .await;
        let dog = Watchdog::start(&t).await;
        let addr = t.listening.local_addr();
        // Headers that never end: the connection is closed after header_timeout (300 ms),
        // not much later (a generous bound: a loaded machine is slow, but not 6x slow).
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        slow.write_all(b"POST /cometd HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = slow.read_to_end(&mut buf).await;
        let closed_after = started.elapsed();
        assert!(
            closed_after >= Duration::from_millis(250)
                && closed_after < Duration::from_millis(2_000),
            "closed after {closed_after:?}, header_timeout is 300 ms"
        );
        // A body that never completes: 408.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[{\"chan")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = slow.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sessions_can_be_bound_to_the_browser_cookie() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ServerConfig {
            bind_browser_cookie: true,
            ..config()
        })
        .await;
        let send = |body: Value, cookie: Option<String>| {
            let mut req = http::Request::post(t.url()).header("content-type", "application/json");
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            t.http.request(
                req.body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )))
                .unwrap(),
            )
        };
        let res = send(
            json!({"channel": "/meta/handshake", "version": "1.0"}),
            None,
        )
        .await
        .unwrap();
        let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(set.starts_with("BAYEUX_BROWSER="), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let id = serde_json::from_slice::<Value>(&body).unwrap()[0]["clientId"]
            .as_str()
            .unwrap()
            .to_string();
        let subscribe = json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/a"});
        for other in [None, Some("BAYEUX_BROWSER=someone-else".to_string())] {
            let res = send(subscribe.clone(), other.clone()).await.unwrap();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            let r = &serde_json::from_slice::<Value>(&body).unwrap()[0];
            assert_eq!(r["error"], "402::Unknown client", "{other:?}");
        }
        let res = send(subscribe, Some(cookie)).await.unwrap();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()[0]["successful"],
            true
        );
        // A handshake that brings its cookie keeps it: no new one is set.
        let res = send(
            json!({"channel": "/meta/handshake", "version": "1.0"}),
            Some("BAYEUX_BROWSER=mine".into()),
        )
        .await
        .unwrap();
        assert!(res.headers().get("set-cookie").is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cors_is_off_by_default_and_allowed_per_origin() {
    timeout(LIMIT, async {
        let request = |t: &TestServer, method: &str, origin: &str| {
            let req = http::Request::builder()
                .method(method)
                .uri(t.url())
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    br#"{"channel":"/meta/handshake","version":"1.0"}"#,
                )))
                .unwrap();
            t.http.request(req)
        };
        let off = TestServer::with_config(config()).await;
        assert_eq!(
            request(&off, "OPTIONS", "https://app.example")
                .await
                .unwrap()
                .status(),
            405
        );
        let res = request(&off, "POST", "https://app.example").await.unwrap();
        assert!(res.headers().get("access-control-allow-origin").is_none());

        let on = TestServer::with_config(ServerConfig {
            cors_origins: vec!["https://app.example".into()],
            ..config()
        })
        .await;
        let res = request(&on, "OPTIONS", "https://app.example")
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert!(
            res.headers()["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        let res = request(&on, "POST", "https://app.example").await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(
            request(&on, "OPTIONS", "https://evil.example")
                .await
                .unwrap()
                .status(),
            403
        );
        let res = request(&on, "POST", "https://evil.example").await.unwrap();
        assert!(res.headers().get("access-control-allow-origin").is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unknown_session_flood_does_not_disturb_others() {
    timeout(LIMIT, async {
        let t = TestServer::start(Server::new(config())).await;
        let dog = Watchdog::start(&t).await;
        for i in 0..500 {
            let r = &t.post(json!({"channel": "/meta/connect", "clientId": format!("guess{i}"), "connectionType": "long-polling"})).await[0];
            assert_eq!(r["error"], "402::Unknown client");
        }
        dog.finish().await;
    })
    .await
    .unwrap();
}

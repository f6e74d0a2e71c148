//! Limits, security settings and hostile input: each gets a clear error, the server
//! never panics or hangs, and a well-behaved client on the same server keeps receiving
//! every message meanwhile.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bayeux::client::{Client, ConnectionState, Subscription};
use bayeux::server::{Server, ServerConfig};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Round trips the watchdog makes alongside each hostile step.
const ROUNDS: u64 = 3;

/// How long one watchdog message may take to arrive: far more than it needs on a
/// loaded machine, far less than [`LIMIT`], so a stall fails with a clear message.
const ARRIVAL: Duration = Duration::from_secs(8);

/// A well-behaved client on the same server as the hostile input, subscribed to
/// `/watch`. It is paced by count, not by time: message n is published only once
/// message n-1 has arrived, and [`Watchdog::during`] makes a fixed number of such round
/// trips while a hostile step runs. However the two interleave, every message must
/// arrive, in order, with nothing missed, repeated or dropped, and the session kept.
struct Watchdog {
    client: Client,
    sub: Subscription,
    server: Server,
    next: u64,
}

impl Watchdog {
    async fn start(t: &TestServer) -> Watchdog {
        let client = Client::builder(&t.url())
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let sub = client.subscribe("/watch").await.unwrap();
        let mut dog = Watchdog {
            client,
            sub,
            server: t.server.clone(),
            next: 0,
        };
        dog.exchange(ROUNDS).await;
        dog
    }

    /// Publishes the next `rounds` numbered messages, each only after the previous one
    /// arrived, and checks each arrives next on the stream.
    async fn exchange(&mut self, rounds: u64) {
        for _ in 0..rounds {
            let n = self.next;
            let receipt = self.server.publish("/watch", json!(n)).await.unwrap();
            assert_eq!(
                receipt.local_recipients, 1,
                "the watchdog lost its session before message {n}"
            );
            let m = timeout(ARRIVAL, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("watchdog message {n} did not arrive"))
                .expect("the watchdog's stream ended");
            assert_eq!(
                m.data,
                Some(json!(n)),
                "the well-behaved client missed or reordered a message"
            );
            self.next += 1;
        }
    }

    /// Runs one hostile step while making [`ROUNDS`] round trips alongside it.
    async fn during<F: Future>(&mut self, hostile: F) -> F::Output {
        let (out, ()) = tokio::join!(hostile, self.exchange(ROUNDS));
        out
    }

    /// A last few round trips (so nothing stray or repeated is pending before them),
    /// then checks the client never lost its session or a message.
    async fn finish(mut self) {
        self.exchange(ROUNDS).await;
        assert_eq!(
            self.sub.dropped(),
            0,
            "the watchdog's stream dropped messages"
        );
        assert_eq!(self.sub.gaps(), 0, "the watchdog's session was lost");
        assert_eq!(self.client.sessions_lost(), 0);
        assert_eq!(*self.client.state().borrow(), ConnectionState::Connected);
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
    ServerConfig::default()
        .with_timeout(Duration::from_millis(500))
        .with_max_interval(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_clear_errors() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(config().with_max_message_size(4 * 1024 * 1024)).await;
        let mut dog = Watchdog::start(&t).await;
        let deep = "[".repeat(100_000);
        let (status, body) = dog.during(t.raw("POST", deep)).await;
        assert_eq!(status, 400, "deep nesting");
        assert!(body.starts_with("malformed JSON"), "{body}");
        let deep_objects = "{\"a\":".repeat(50_000);
        let (status, body) = dog.during(t.raw("POST", deep_objects)).await;
        assert_eq!(status, 400, "deep objects");
        assert!(body.starts_with("malformed JSON"), "{body}");
        // A huge declared body is refused before it is read. (Sent over raw TCP: a client
        // still writing 5 MiB when the server answers and closes may see a reset instead
        // of the 413.)
        let head = "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: 5242880\r\n\r\n[\"";
        let answer = dog.during(raw_tcp(&t, head.as_bytes())).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "huge declared body: {answer}"
        );
        let (status, body) = dog
            .during(t.raw("POST", &b"[{\"channel\":\"/a\xff\xfe\"}]"[..]))
            .await;
        assert_eq!(status, 400, "non-UTF-8");
        assert!(body.starts_with("malformed JSON"), "{body}");
        let (status, body) = dog
            .during(t.raw(
                "POST",
                serde_json::to_vec(&vec![json!({"channel": "/x"}); 100_000]).unwrap(),
            ))
            .await;
        assert_eq!(status, 400, "a batch of 100 000 messages");
        assert!(body.contains("maxBatch"), "{body}");
        dog.finish().await;
    })
    .await
    .unwrap();
}

/// A string of `len` bytes that JSON has to escape in places, with multi-byte
/// characters and a running count, so that any cut, shift or mangling shows.
fn big_string(len: usize) -> String {
    let mut s = String::with_capacity(len + 64);
    let mut i = 0u64;
    while s.len() < len {
        s.push_str(&format!("{i:08}\"\\é☃\n😀\t"));
        i += 1;
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Sends `head` then `body` on a fresh connection, writing and reading at once (the
/// server may answer before it has read the body, and close), and returns the answer
/// up to the end of its headers.
async fn raw_tcp_body(t: &TestServer, head: String, body: Vec<u8>) -> String {
    let tcp = TcpStream::connect(t.listening.local_addr()).await.unwrap();
    let (mut rx, mut tx) = tcp.into_split();
    let writer = tokio::spawn(async move {
        // The server may close once it has answered: the rest of the body is refused.
        if tx.write_all(head.as_bytes()).await.is_ok() {
            let _ = tx.write_all(&body).await;
        }
        tx
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading the answer failed after {:?}: {e}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    drop(writer.await.unwrap());
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_megabyte_strings_are_refused_over_the_limit_and_delivered_intact_under_it() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(
            config()
                .with_max_message_size(4 << 20)
                .with_max_queue_bytes(16 << 20),
        )
        .await;
        let mut dog = Watchdog::start(&t).await;
        let mut dog_big = dog.client.subscribe("/big").await.unwrap();
        let id = t.handshake().await;
        assert_eq!(t.subscribe(&id, json!("/big")).await["successful"], true);

        // Under the limit (3 MiB of text, about 3.4 MiB as JSON): a normal publish.
        let big = big_string(3 << 20);
        let publish = |data: &str| {
            serde_json::to_vec(&json!([{"channel": "/big", "clientId": id, "id": "big",
                                         "data": {"text": data}}]))
            .unwrap()
        };
        let body = publish(&big);
        assert!((3 << 20..4 << 20).contains(&body.len()), "{}", body.len());
        let (status, text) = dog.during(t.raw("POST", body)).await;
        assert_eq!(status, 200, "{text}");
        let replies: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(replies.len(), 1, "{text}");
        assert_eq!(replies[0]["channel"], "/big");
        assert_eq!(replies[0]["id"], "big");
        assert_eq!(replies[0]["successful"], true, "{text}");
        assert!(replies[0].get("error").is_none(), "{text}");
        // Delivered intact, to a raw long-polling session and to the watchdog's client.
        let (msgs, reply) = t.connect_now(&id).await;
        assert_eq!(reply["successful"], true);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["channel"], "/big");
        assert!(
            msgs[0]["data"]["text"].as_str() == Some(big.as_str()),
            "the 3 MiB string was not delivered intact"
        );
        let m = dog
            .during(timeout(ARRIVAL, dog_big.next()))
            .await
            .expect("the watchdog's client did not get the 3 MiB message")
            .unwrap();
        assert!(
            m.data.as_ref().and_then(|d| d["text"].as_str()) == Some(big.as_str()),
            "the 3 MiB string reached the client mangled"
        );

        // Over the limit (5 MiB of text): 413, whether the length is declared (refused
        // before the body is read) or not (refused once 4 MiB have arrived).
        let body = publish(&big_string(5 << 20));
        let head = format!(
            "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let answer = dog.during(raw_tcp_body(&t, head, body.clone())).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "declared: {answer}");
        let mut chunked = Vec::new();
        for chunk in body.chunks(64 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
            .to_string();
        let answer = dog.during(raw_tcp_body(&t, head, chunked)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "chunked: {answer}");
        // Nothing of the refused publishes was delivered; the session still works.
        assert_eq!(
            t.publish(&id, "/big", json!("small")).await["successful"],
            true
        );
        let (msgs, _) = t.connect_now(&id).await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["data"], "small");
        let m = dog
            .during(timeout(ARRIVAL, dog_big.next()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.data, Some(json!("small")));
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_undeclared_body_over_the_limit_is_refused_with_413() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(config().with_max_message_size(4096)).await;
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
        let mut dog = Watchdog::start(&t).await;
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
                let replies = dog
                    .during(t.post(
                        json!([m, {"channel": "/meta/handshake", "version": "1.0", "id": "ok"}]),
                    ))
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
        let t = TestServer::with_config(
            config()
                .with_max_subscriptions(10)
                .with_max_message_size(4 << 20),
        )
        .await;
        let mut dog = Watchdog::start(&t).await;
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
        let r = dog.during(t.subscribe(&id, json!(huge))).await;
        assert_eq!(r["error"], "409:maxSubscriptions:More than 10 channels");
        assert!(
            r.get("subscription").is_none(),
            "an oversized list is not echoed back"
        );
        let long = format!("/{}", "a".repeat(600));
        let r = dog.during(t.subscribe(&id, json!(long))).await;
        assert!(r["error"].as_str().unwrap().starts_with("400:/aaaa"), "{r}");
        assert!(
            r["error"].as_str().unwrap().len() < 200,
            "the long name is not echoed whole: {r}"
        );
        let r = dog.during(t.publish(&id, &long, json!(1))).await;
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
        let t = Arc::new(TestServer::with_config(config().with_max_sessions(200)).await);
        let mut dog = Watchdog::start(&t).await;
        let mut tasks = Vec::new();
        for _ in 0..1_000 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.post(json!({"channel": "/meta/handshake", "version": "1.0"}))
                    .await
                    .remove(0)
            }));
        }
        // The watchdog's round trips run while the flood is being answered.
        let (ok, refused) = dog
            .during(async {
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
                (ok, refused)
            })
            .await;
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
        let t = TestServer::with_config(
            config()
                .with_header_timeout(Duration::from_millis(300))
                .with_body_timeout(Duration::from_millis(300)),
        )
        .await;
        let mut dog = Watchdog::start(&t).await;
        let addr = t.listening.local_addr();
        // Headers that never end: the connection is closed after header_timeout (300 ms),
        // not much later (a generous bound: a loaded machine is slow, but not 6x slow).
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        slow.write_all(b"POST /cometd HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // The watchdog's round trips run while the connection is held open.
        let closed_after = dog
            .during(async {
                let mut buf = Vec::new();
                let _ = slow.read_to_end(&mut buf).await;
                started.elapsed()
            })
            .await;
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
        let head = dog
            .during(async {
                let mut buf = vec![0u8; 1024];
                let n = slow.read(&mut buf).await.unwrap();
                String::from_utf8_lossy(&buf[..n]).to_string()
            })
            .await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        dog.finish().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sessions_can_be_bound_to_the_browser_cookie() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(config().with_bind_browser_cookie(true)).await;
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

        let on =
            TestServer::with_config(config().with_cors_origins(vec!["https://app.example".into()]))
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
        let mut dog = Watchdog::start(&t).await;
        dog.during(async {
            for i in 0..500 {
                let r = &t.post(json!({"channel": "/meta/connect", "clientId": format!("guess{i}"), "connectionType": "long-polling"})).await[0];
                assert_eq!(r["error"], "402::Unknown client");
            }
        })
        .await;
        dog.finish().await;
    })
    .await
    .unwrap();
}

//! Several server nodes sharing their channels through a real NATS: every node is a
//! `bayeux serve --nats` process (or, for the in-process API, a `Server` with a
//! `NatsBroker`), NATS is Debian's `nats-server` on a free loopback port, and the
//! subscribers are our client and the official CometD JavaScript client. Needs
//! `nats-server` on the PATH and `npm ci` in tests/interop; run with
//! `cargo test --features nats-tests --test nats` (`.ci/run` sets it all up).
#![cfg(feature = "nats-tests")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux::client::{Client, ConnectionState, ReplayFrom, Subscription};
use bayeux::server::{NatsBroker, NatsConfig, Server, ServerConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::timeout;

/// The bound of every test.
const LIMIT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The lines a child process wrote, kept so that tests can wait for one.
#[derive(Clone, Default)]
struct Output {
    lines: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Output {
    fn follow(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let out = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                out.lines.lock().unwrap().push(line);
                out.changed.notify_waiters();
            }
        });
    }

    /// Waits for a line containing `needle` (one not already taken by an earlier wait
    /// when `from` says where to start) and returns it with its index.
    async fn wait_for(&self, needle: &str, from: usize, within: Duration) -> (usize, String) {
        let found = timeout(within, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(hit) = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, l)| l.contains(needle))
                {
                    return (hit.0, hit.1.clone());
                }
                changed.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no line with {needle:?} within {within:?}; got:\n{}",
                self.lines.lock().unwrap().join("\n")
            )
        })
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A `nats-server` on a loopback port.
struct Nats {
    port: u16,
    child: Child,
}

impl Nats {
    async fn start() -> Nats {
        Nats::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> Nats {
        Nats::launch(port, None).await
    }

    /// With JetStream, its files in `store` (kept across a restart on the same store).
    async fn start_with_jetstream(port: u16, store: &std::path::Path) -> Nats {
        Nats::launch(port, Some(store)).await
    }

    async fn launch(port: u16, store: Option<&std::path::Path>) -> Nats {
        let mut args = vec![
            "-a".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if let Some(store) = store {
            args.extend(["-js".into(), "-sd".into(), store.display().to_string()]);
        }
        let mut child = Command::new("nats-server")
            .args(&args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server (apt-get install nats-server): {e}")
            });
        let output = Output::default();
        output.follow(child.stderr.take().unwrap());
        output
            .wait_for("Server is ready", 0, Duration::from_secs(10))
            .await;
        Nats { port, child }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) -> u16 {
        self.child.kill().await.unwrap();
        self.port
    }
}

/// A `bayeux serve --nats` process.
struct Node {
    child: Child,
    url: String,
    base: String,
    log: Output,
}

impl Node {
    async fn start(nats_url: &str) -> Node {
        Node::start_with(nats_url, &[]).await
    }

    async fn start_with(nats_url: &str, extra: &[&str]) -> Node {
        Node::start_at(nats_url, 0, extra).await
    }

    /// On a given port (0: any), so that a restarted node is found where it was.
    async fn start_at(nats_url: &str, port: u16, extra: &[&str]) -> Node {
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args(["serve", "--listen", &listen, "--timeout", "5s"])
            .args(["--nats", nats_url])
            .args(extra)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Output::default();
        log.follow(child.stderr.take().unwrap());
        let (_, line) = log
            .wait_for("serving Bayeux", 0, Duration::from_secs(20))
            .await;
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:") && w.ends_with("/cometd"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        let base = url.trim_end_matches("/cometd").to_string();
        Node {
            child,
            url,
            base,
            log,
        }
    }

    /// Waits until the node is in NATS (it says so once).
    async fn joined(self) -> Node {
        self.log
            .wait_for("joined NATS", 0, Duration::from_secs(20))
            .await;
        self
    }

    /// A counter or gauge of the node's `/metrics` page.
    async fn metric(&self, name: &str) -> u64 {
        let page = http_get(&format!("{}/metrics", self.base)).await;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} on /metrics:\n{page}")) as u64
    }

    async fn client(&self) -> Client {
        client(&self.url, None).await
    }
}

async fn client(url: &str, user: Option<&str>) -> Client {
    let mut builder = Client::builder(url)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .max_network_delay(Duration::from_secs(10));
    if let Some(user) = user {
        builder = builder.basic_auth(user, "demo");
    }
    let client = builder.build().unwrap();
    client.handshake().await.unwrap();
    client
}

/// A plain HTTP/1.1 GET (the nodes' `/metrics`), read to the end.
async fn http_get(url: &str) -> String {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = http.get(url.parse().unwrap()).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A workbin assignment through a node's REST API; returns the reply.
async fn assign(node: &Node, user: &str, workbin: &str, uri: &str) -> Value {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let body = json!({"operationName": "AddEmail", "uri": uri}).to_string();
    let request = http::Request::post(format!(
        "{}/api/v2/users/{user}/workbins/{workbin}",
        node.base
    ))
    .header("content-type", "application/json")
    .header(
        "authorization",
        format!("Basic {}", base64_encode(&format!("{user}:demo"))),
    )
    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
    .unwrap();
    let response = http.request(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn base64_encode(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn next_data(sub: &mut Subscription, within: Duration) -> Option<Value> {
    timeout(within, sub.next())
        .await
        .ok()
        .flatten()
        .and_then(|m| m.data)
}

/// Publishes probes on `channel` through `publisher` until one reaches `sub` (a link
/// that is coming up has no event a test can await from outside); returns the probes'
/// count. Everything else `sub` receives meanwhile is a probe.
async fn until_crossing(publisher: &Client, channel: &str, sub: &mut Subscription) -> u64 {
    for probe in 0u64.. {
        assert!(
            probe < 200,
            "no probe on {channel} crossed within 200 tries"
        );
        publisher
            .publish(channel, json!({"probe": probe}))
            .await
            .unwrap();
        if next_data(sub, Duration::from_millis(100)).await.is_some() {
            return probe + 1;
        }
    }
    unreachable!()
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Checks a stream of `{"p": publisher, "n": seq}` data: each publisher's messages
/// once each, in order, `per_publisher` of them.
fn assert_each_once_in_order(what: &str, got: &[Value], publishers: &[&str], per_publisher: u64) {
    let mut next: HashMap<String, u64> = HashMap::new();
    for data in got {
        let p = data["p"].as_str().unwrap().to_string();
        let n = data["n"].as_u64().unwrap();
        let expected = next.entry(p.clone()).or_insert(0);
        assert_eq!(
            n, *expected,
            "{what}: publisher {p} out of order or repeated"
        );
        *expected += 1;
    }
    for p in publishers {
        assert_eq!(
            next.get(*p).copied().unwrap_or(0),
            per_publisher,
            "{what}: from {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_node_once_and_in_order() {
    timeout(LIMIT, async {
        const PER_PUBLISHER: u64 = 5_000;
        let nats = Nats::start().await;
        let a = Node::start(&nats.url()).await.joined().await;
        let b = Node::start(&nats.url()).await.joined().await;
        let c = Node::start(&nats.url()).await.joined().await;

        // Subscribers on A: ours, and the CometD JavaScript client.
        let ours = a.client().await;
        let mut sub = ours.subscribe("/load").await.unwrap();
        let mut js = Command::new("node")
            .args([
                "nats_subscriber.mjs",
                &a.url,
                "/load",
                &(2 * PER_PUBLISHER).to_string(),
                "45000",
            ])
            .current_dir(interop_dir())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let js_out = Output::default();
        js_out.follow(js.stdout.take().unwrap());
        js_out.wait_for("ready", 0, Duration::from_secs(20)).await;

        // Publishers on B and C, in batches of 100, at once.
        let publish = |node: &Node, name: &'static str| {
            let url = node.url.clone();
            tokio::spawn(async move {
                let publisher = client(&url, None).await;
                for batch in 0..PER_PUBLISHER / 100 {
                    let messages = (0..100)
                        .map(|i| {
                            (
                                "/load".to_string(),
                                json!({"p": name, "n": batch * 100 + i}),
                            )
                        })
                        .collect();
                    for reply in publisher.publish_batch(messages).await.unwrap() {
                        assert_eq!(reply.unwrap().successful, Some(true));
                    }
                }
            })
        };
        let from_b = publish(&b, "B");
        let from_c = publish(&c, "C");
        from_b.await.unwrap();
        from_c.await.unwrap();

        let mut got = Vec::new();
        while (got.len() as u64) < 2 * PER_PUBLISHER {
            let data = next_data(&mut sub, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| {
                    panic!("our client: {} of {} arrived", got.len(), 2 * PER_PUBLISHER)
                });
            got.push(data);
        }
        assert_each_once_in_order("our client", &got, &["B", "C"], PER_PUBLISHER);
        // Nothing more: a duplicate would come after the last message.
        ours.publish("/load", json!({"p": "A", "n": 0}))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut sub, Duration::from_secs(5)).await,
            Some(json!({"p": "A", "n": 0}))
        );

        let (_, summary) = js_out
            .wait_for("received", 0, Duration::from_secs(60))
            .await;
        let summary: Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(
            summary["received"],
            2 * PER_PUBLISHER,
            "cometd-js: {summary}"
        );
        assert_eq!(summary["duplicates"], 0, "cometd-js: {summary}");
        assert_eq!(summary["disorder"], 0, "cometd-js: {summary}");
        let _ = js.wait().await;

        // Each message crossed once per publisher node, and A received each once.
        assert_eq!(
            b.metric("bayeux_broker_messages_sent_total").await,
            PER_PUBLISHER
        );
        assert_eq!(
            c.metric("bayeux_broker_messages_sent_total").await,
            PER_PUBLISHER
        );
        assert_eq!(
            a.metric("bayeux_broker_messages_received_total").await,
            2 * PER_PUBLISHER
        );
        assert_eq!(a.metric("bayeux_broker_messages_dropped_total").await, 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_across_nodes_and_overlaps_deliver_once() {
    timeout(LIMIT, async {
        let nats = Nats::start().await;
        let a = Node::start(&nats.url()).await.joined().await;
        let b = Node::start(&nats.url()).await.joined().await;

        let one = a.client().await;
        let mut star = one.subscribe("/w/*").await.unwrap();
        let deep = a.client().await;
        let mut star_star = deep.subscribe("/w/**").await.unwrap();
        // One session with two overlapping subscriptions; the node then holds three
        // NATS subscriptions that all match /w/x.
        let both = a.client().await;
        let mut exact = both.subscribe("/w/x").await.unwrap();
        let mut overlap = both.subscribe("/w/*").await.unwrap();

        let publisher = b.client().await;
        for (channel, n) in [("/w/x", 1), ("/w/x/y", 2), ("/v", 3), ("/w/end", 4)] {
            publisher.publish(channel, json!({"n": n})).await.unwrap();
        }
        let take = async |sub: &mut Subscription, what: &str, count: usize| {
            let mut got = Vec::new();
            for _ in 0..count {
                got.push(
                    next_data(sub, Duration::from_secs(10))
                        .await
                        .unwrap_or_else(|| panic!("{what}: only {got:?}"))["n"]
                        .as_u64()
                        .unwrap(),
                );
            }
            got
        };
        assert_eq!(take(&mut star, "/w/*", 2).await, [1, 4]);
        assert_eq!(take(&mut star_star, "/w/**", 3).await, [1, 2, 4]);
        // The session's two subscriptions each see what they match (the client hands a
        // message to every matching listener), but the session received it once.
        assert_eq!(take(&mut exact, "/w/x", 1).await, [1]);
        assert_eq!(
            take(&mut overlap, "/w/* of the overlapping session", 2).await,
            [1, 4]
        );

        // Six copies reached A (/w/x three times, /w/x/y once, /w/end twice): three
        // messages delivered, three duplicates dropped, /v never sent to A.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while a.metric("bayeux_broker_duplicates_total").await < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "duplicates not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(a.metric("bayeux_broker_messages_received_total").await, 3);
        assert_eq!(a.metric("bayeux_broker_duplicates_total").await, 3);
        for sub in [&mut star, &mut star_star, &mut exact, &mut overlap] {
            assert_eq!(next_data(sub, Duration::from_millis(200)).await, None);
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbin_post_on_one_node_reaches_the_agent_on_another_only() {
    timeout(LIMIT, async {
        let nats = Nats::start().await;
        let a = Node::start(&nats.url()).await.joined().await;
        let b = Node::start(&nats.url()).await.joined().await;
        let c = Node::start(&nats.url()).await.joined().await;

        let agent1 = client(&c.url, Some("agent1")).await;
        let mut agent1_feed = agent1.subscribe("/v2/me/**").await.unwrap();
        let agent2 = client(&a.url, Some("agent2")).await;
        let mut agent2_feed = agent2.subscribe("/v2/me/**").await.unwrap();

        let reply = assign(&b, "agent1", "wb1", ".../FE7978FEWFE").await;
        assert_eq!(reply["statusCode"], 0, "{reply}");
        let first = timeout(Duration::from_secs(10), agent1_feed.next())
            .await
            .unwrap()
            .unwrap();
        let second = timeout(Duration::from_secs(10), agent1_feed.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.channel.as_deref(), Some("/v2/me/workbins"));
        assert_eq!(second.channel.as_deref(), Some("/v2/me/emails"));
        assert_eq!(
            second.data.as_ref().unwrap()["referenceId"],
            reply["referenceId"]
        );

        // agent2's own assignment comes next on A; agent1's never went there.
        let reply2 = assign(&b, "agent2", "wb1", ".../AAAA").await;
        let mine = timeout(Duration::from_secs(10), agent2_feed.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mine.channel.as_deref(), Some("/v2/me/workbins"));
        let mine = timeout(Duration::from_secs(10), agent2_feed.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            mine.data.as_ref().unwrap()["referenceId"],
            reply2["referenceId"]
        );
        assert_eq!(a.metric("bayeux_broker_messages_received_total").await, 2);
        assert_eq!(c.metric("bayeux_broker_messages_received_total").await, 2);
        assert_eq!(b.metric("bayeux_broker_messages_sent_total").await, 4);
        assert!(
            timeout(Duration::from_millis(300), agent1_feed.next())
                .await
                .is_err()
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_to_a_session_reaches_the_node_that_holds_it() {
    timeout(LIMIT, async {
        let nats = Nats::start().await;
        let node = |_: u8| async {
            let broker = NatsBroker::connect(NatsConfig::new(nats.url())).unwrap();
            let server = Server::builder()
                .config(ServerConfig::default().with_timeout(Duration::from_secs(5)))
                .broker(Arc::new(broker))
                .build();
            let listening = server
                .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
                .await
                .unwrap();
            (server, listening)
        };
        let (first, first_listening) = node(1).await;
        let (second, _second_listening) = node(2).await;
        // Both in NATS before the test goes on.
        for server in [&first, &second] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !server.stats().broker.unwrap().connected {
                assert!(tokio::time::Instant::now() < deadline, "not in NATS");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        let client = client(&first_listening.url("/cometd"), None).await;
        let mut private = client.subscribe("/private").await.unwrap();
        let id = client.client_id().unwrap();
        let receipt = second
            .deliver(&id, "/private", json!({"to": "you"}))
            .await
            .unwrap();
        assert_eq!(receipt.local_recipients, 0, "not on the second node");
        assert_eq!(
            next_data(&mut private, Duration::from_secs(10)).await,
            Some(json!({"to": "you"}))
        );
        // An id that no node made reaches nobody, and fails nothing.
        second
            .deliver("nobody-at-all", "/private", json!(1))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut private, Duration::from_millis(300)).await,
            None
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_nats_serves_alone_then_joins() {
    timeout(LIMIT, async {
        let port = free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let a = Node::start(&url).await;
        // Local traffic works while NATS is away.
        let local = a.client().await;
        let mut sub = local.subscribe("/early").await.unwrap();
        local.publish("/early", json!("local")).await.unwrap();
        assert_eq!(
            next_data(&mut sub, Duration::from_secs(5)).await,
            Some(json!("local"))
        );
        a.log
            .wait_for("NATS is not reachable", 0, Duration::from_secs(10))
            .await;

        let _nats = Nats::start_on(port).await;
        a.log
            .wait_for("joined NATS", 0, Duration::from_secs(20))
            .await;
        assert_eq!(a.log.count("NATS is not reachable"), 1, "said once");
        let b = Node::start(&url).await.joined().await;
        let remote = b.client().await;
        until_crossing(&remote, "/early", &mut sub).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_keeps_local_delivery_and_the_link_comes_back() {
    timeout(LIMIT, async {
        let nats = Nats::start().await;
        let url = nats.url();
        let a = Node::start(&url).await.joined().await;
        let b = Node::start(&url).await.joined().await;
        let subscriber = a.client().await;
        let mut sub = subscriber.subscribe("/r").await.unwrap();
        let local = a.client().await;
        let remote = b.client().await;
        remote.publish("/r", json!("before")).await.unwrap();
        assert_eq!(
            next_data(&mut sub, Duration::from_secs(10)).await,
            Some(json!("before"))
        );

        let port = nats.stop().await;
        a.log
            .wait_for("NATS link lost", 0, Duration::from_secs(10))
            .await;
        b.log
            .wait_for("NATS link lost", 0, Duration::from_secs(10))
            .await;
        // Local delivery never stops.
        local.publish("/r", json!("local")).await.unwrap();
        assert_eq!(
            next_data(&mut sub, Duration::from_secs(5)).await,
            Some(json!("local"))
        );
        // What B publishes now cannot cross: counted, and said when the link is back.
        for n in 0..5 {
            remote.publish("/r", json!({"lost": n})).await.unwrap();
        }
        assert_eq!(b.metric("bayeux_broker_messages_dropped_total").await, 5);

        let _nats = Nats::start_on(port).await;
        let (_, back) = b
            .log
            .wait_for("NATS link is back", 0, Duration::from_secs(20))
            .await;
        assert!(back.contains("dropped=5"), "{back}");
        a.log
            .wait_for("NATS link is back", 0, Duration::from_secs(20))
            .await;
        // Interest is re-established: B's messages reach A's subscriber again.
        until_crossing(&remote, "/r", &mut sub).await;
        assert_eq!(b.metric("bayeux_broker_reconnects_total").await, 1);
        assert_eq!(a.metric("bayeux_broker_reconnects_total").await, 1);
    })
    .await
    .unwrap();
}

/// A TCP balancer in front of several nodes: each connection goes to the first node
/// that accepts it (a node that is down is skipped), as a load balancer's health check
/// would do.
async fn balancer(backends: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backends = backends.clone();
            tokio::spawn(async move {
                for backend in &backends {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/cometd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_recover_on_another_node() {
    timeout(LIMIT, async {
        let nats = Nats::start().await;
        let mut a = Node::start(&nats.url()).await.joined().await;
        let b = Node::start(&nats.url()).await.joined().await;
        let c = Node::start(&nats.url()).await.joined().await;
        let host = |n: &Node| n.base.trim_start_matches("http://").to_string();
        let front = balancer(vec![host(&a), host(&b)]).await;

        // A client through the balancer lands on A; another sits on B.
        let moving = client(&front, None).await;
        let mut moving_sub = moving.subscribe("/k").await.unwrap();
        let staying = b.client().await;
        let mut staying_sub = staying.subscribe("/k").await.unwrap();
        let publisher = c.client().await;
        publisher.publish("/k", json!("first")).await.unwrap();
        for sub in [&mut moving_sub, &mut staying_sub] {
            assert_eq!(
                next_data(sub, Duration::from_secs(10)).await,
                Some(json!("first"))
            );
        }
        let lost_before = moving.sessions_lost();

        a.child.kill().await.unwrap();
        // The others carry on.
        publisher
            .publish("/k", json!("while A is down"))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut staying_sub, Duration::from_secs(10)).await,
            Some(json!("while A is down"))
        );
        // The moving client finds B through the balancer, handshakes there and
        // subscribes again by itself.
        let mut state = moving.state();
        while moving.sessions_lost() == lost_before
            || *state.borrow_and_update() != ConnectionState::Connected
        {
            timeout(Duration::from_secs(30), state.changed())
                .await
                .expect("the client never came back")
                .unwrap();
        }
        let probes = until_crossing(&publisher, "/k", &mut moving_sub).await;
        assert!(probes >= 1);
        assert_eq!(
            next_data(&mut staying_sub, Duration::from_secs(10))
                .await
                .map(|d| d.get("probe").is_some()),
            Some(true)
        );
    })
    .await
    .unwrap();
}

/// A temporary directory for nats-server's JetStream files, removed at the end.
struct StoreDir(PathBuf);

impl StoreDir {
    fn new(tag: &str) -> StoreDir {
        let dir = std::env::temp_dir().join(format!(
            "bayeux-nats-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        StoreDir(dir)
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const REPLAY: &[&str] = &["--replay", "/v2/**"];

/// The email ids of the next `count` messages of an agent's `/v2/me/emails` stream,
/// with their replay ids.
async fn emails(feed: &mut Subscription, count: usize, what: &str) -> Vec<(String, i64)> {
    let mut got = Vec::new();
    while got.len() < count {
        let data = next_data(feed, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{what}: {} of {count} arrived: {got:?}", got.len()));
        got.push((
            data["email"]["id"].as_str().unwrap().to_string(),
            data["event"]["replayId"].as_i64().unwrap(),
        ));
    }
    got
}

/// Checks that `got` is exactly `N0..N{count}` (each once, in order) with increasing
/// replay ids.
fn assert_assignments(got: &[(String, i64)], count: usize) {
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    let expected: Vec<String> = (0..count).map(|i| format!("N{i}")).collect();
    assert_eq!(ids, expected, "each assignment once, in order");
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "replay ids increase"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_across_a_restart_of_the_node() {
    timeout(LIMIT, async {
        let store = StoreDir::new("restart");
        let nats = Nats::start_with_jetstream(free_port(), &store.0).await;
        let port = free_port();
        let a = Node::start_at(&nats.url(), port, REPLAY)
            .await
            .joined()
            .await;
        let b = Node::start_with(&nats.url(), REPLAY).await.joined().await;

        let agent1 = client(&a.url, Some("agent1")).await;
        let mut feed = agent1
            .subscribe_from("/v2/me/emails", ReplayFrom::New)
            .await
            .unwrap();
        let agent2 = client(&b.url, Some("agent2")).await;
        let mut other = agent2
            .subscribe_from("/v2/me/emails", ReplayFrom::New)
            .await
            .unwrap();
        assign(&b, "agent1", "wb1", ".../FIRST").await;
        assert_eq!(emails(&mut feed, 1, "before").await[0].0, "FIRST");

        let mut a = a;
        a.child.kill().await.unwrap();
        for i in 0..100 {
            assert_eq!(
                assign(&b, "agent1", "wb1", &format!(".../N{i}")).await["statusCode"],
                0
            );
            if i % 25 == 0 {
                assign(&b, "agent2", "wb1", &format!(".../OTHER{i}")).await;
            }
        }
        // The node comes back on its port, with nothing in memory: the log is in NATS.
        let _a = Node::start_at(&nats.url(), port, REPLAY)
            .await
            .joined()
            .await;
        let got = emails(&mut feed, 100, "after the restart").await;
        assert_assignments(&got, 100);
        assign(&b, "agent1", "wb1", ".../LAST").await;
        assert_eq!(emails(&mut feed, 1, "live again").await[0].0, "LAST");
        // agent2 got its own four, live, and never agent1's.
        let theirs = emails(&mut other, 4, "agent2").await;
        assert!(
            theirs.iter().all(|(id, _)| id.starts_with("OTHER")),
            "{theirs:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_follows_a_client_that_moves_to_another_node() {
    timeout(LIMIT, async {
        let store = StoreDir::new("move");
        let nats = Nats::start_with_jetstream(free_port(), &store.0).await;
        let mut a = Node::start_with(&nats.url(), REPLAY).await.joined().await;
        let b = Node::start_with(&nats.url(), REPLAY).await.joined().await;
        let c = Node::start_with(&nats.url(), REPLAY).await.joined().await;
        let host = |n: &Node| n.base.trim_start_matches("http://").to_string();
        let front = balancer(vec![host(&a), host(&b)]).await;

        let agent1 = client(&front, Some("agent1")).await;
        let mut feed = agent1
            .subscribe_from("/v2/me/emails", ReplayFrom::New)
            .await
            .unwrap();
        assign(&c, "agent1", "wb1", ".../FIRST").await;
        assert_eq!(emails(&mut feed, 1, "on A").await[0].0, "FIRST");

        a.child.kill().await.unwrap();
        for i in 0..100 {
            assign(&c, "agent1", "wb1", &format!(".../N{i}")).await;
            if i % 25 == 0 {
                assign(&c, "agent2", "wb1", &format!(".../OTHER{i}")).await;
            }
        }
        // The client reconnects through the balancer, lands on B, handshakes and
        // replays after the last id it saw: everything it missed, once, in order.
        let got = emails(&mut feed, 100, "after the move").await;
        assert_assignments(&got, 100);
        assign(&c, "agent1", "wb1", ".../LAST").await;
        assert_eq!(emails(&mut feed, 1, "live on B").await[0].0, "LAST");
        assert!(agent1.sessions_lost() >= 1);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_origin_numbers_follow_the_order_nats_carries() {
    // Publishes routed by several threads at once leave in one order; the
    // `Bayeux-Origin` numbers must follow it, or the receivers' duplicate filter drops
    // the one numbered lower that arrives later (a message lost as a "duplicate").
    timeout(LIMIT, async {
        const PUBLISHERS: u64 = 8;
        const PER_PUBLISHER: u64 = 500;
        let nats = Nats::start().await;
        let a = Node::start(&nats.url()).await.joined().await;
        let raw = async_nats::connect(nats.url()).await.unwrap();
        let mut seen = raw.subscribe("bayeux.c.load").await.unwrap();
        raw.flush().await.unwrap();
        let mut publishers = Vec::new();
        for p in 0..PUBLISHERS {
            let url = a.url.clone();
            publishers.push(tokio::spawn(async move {
                let publisher = client(&url, None).await;
                for batch in 0..PER_PUBLISHER / 50 {
                    let messages = (0..50)
                        .map(|i| ("/load".to_string(), json!({"p": p, "n": batch * 50 + i})))
                        .collect();
                    for reply in publisher.publish_batch(messages).await.unwrap() {
                        assert_eq!(reply.unwrap().successful, Some(true));
                    }
                }
            }));
        }
        for p in publishers {
            p.await.unwrap();
        }
        let mut last = 0u64;
        for n in 0..PUBLISHERS * PER_PUBLISHER {
            let message = timeout(Duration::from_secs(10), seen.next())
                .await
                .unwrap_or_else(|_| panic!("{n} messages reached NATS"))
                .unwrap();
            let origin = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Bayeux-Origin"))
                .expect("a Bayeux-Origin header")
                .as_str()
                .to_string();
            let seq: u64 = origin.rsplit_once(':').unwrap().1.parse().unwrap();
            assert!(seq > last, "message {n}: origin {origin} after {last}");
            last = seq;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_log_refuses_ids_it_cannot_replay_after_as_the_memory_log_does() {
    timeout(LIMIT, async {
        let store = StoreDir::new("refusals");
        let nats = Nats::start_with_jetstream(free_port(), &store.0).await;
        let a = Node::start_with(&nats.url(), &["--replay", "/v2/**", "--replay-max", "2"])
            .await
            .joined()
            .await;
        let agent1 = client(&a.url, Some("agent1")).await;
        let mut feed = agent1
            .subscribe_from("/v2/me/emails", ReplayFrom::New)
            .await
            .unwrap();
        for i in 0..5 {
            assign(&a, "agent1", "wb1", &format!(".../N{i}")).await;
        }
        let got = emails(&mut feed, 5, "live").await;
        assert_assignments(&got, 5);
        let (first, last) = (got[0].1, got[4].1);
        let refused = async |from: i64| {
            let late = client(&a.url, Some("agent1")).await;
            let e = late
                .subscribe_from("/v2/me/emails", ReplayFrom::After(from))
                .await
                .expect_err("refused");
            e.bayeux_error()
                .map(|b| b.to_string())
                .unwrap_or_else(|| panic!("not a Bayeux refusal: {e}"))
        };
        // An id never assigned (after the latest): 400, as the memory log answers.
        let error = refused(last + 1_000).await;
        assert!(
            error.starts_with("400:/v2/me/emails:The replayId {")
                && error.contains("no message has this replayId"),
            "{error}"
        );
        // An id whose followers were dropped (two kept per channel): 400 too.
        let error = refused(first).await;
        assert!(
            error.starts_with("400:/v2/me/emails:The replayId {")
                && error.contains("no longer retained"),
            "{error}"
        );
        // After the second-to-last: what is retained after it, exactly.
        let late = client(&a.url, Some("agent1")).await;
        let mut resumed = late
            .subscribe_from("/v2/me/emails", ReplayFrom::After(got[3].1))
            .await
            .unwrap();
        assert_eq!(emails(&mut resumed, 1, "after N3").await[0].0, "N4");
    })
    .await
    .unwrap();
}

//! The client over WebSocket against this crate's server: negotiation and fallback,
//! sockets that die while the session lives, acknowledged delivery on a socket. The
//! server is reached through a front service that counts upgrades and POSTs (and can
//! refuse upgrades, as a server without WebSocket does), sometimes behind a TCP proxy
//! that can cut every connection. The transport-neutral tests run on both transports in
//! `client.rs`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bayeux::client::{Client, ConnectionState, ErrorKind, Subscription, TransportChoice};
use bayeux::protocol::{ChannelName, Message};
use bayeux::server::{
    Decision, Extension, Listening, ResponseBody, SecurityPolicy, Server, ServerConfig, SessionInfo,
};
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The server behind a service that counts what reaches it and can refuse upgrades.
#[derive(Clone)]
struct Front {
    server: Server,
    refuse_upgrades: Arc<AtomicBool>,
    upgrades: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
}

impl Front {
    async fn start(server: Server) -> (Front, Listening) {
        let front = Front {
            server: server.clone(),
            refuse_upgrades: Arc::default(),
            upgrades: Arc::default(),
            posts: Arc::default(),
        };
        let service = service_fn({
            let front = front.clone();
            move |request: Request<Incoming>| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(front.respond(request).await) }
            }
        });
        let listening = Server::listen_with(server, "127.0.0.1:0".parse().unwrap(), service)
            .await
            .unwrap();
        (front, listening)
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        if request.headers().contains_key(http::header::UPGRADE) {
            self.upgrades.fetch_add(1, Ordering::SeqCst);
            if self.refuse_upgrades.load(Ordering::SeqCst) {
                // What a server without WebSocket answers to the GET of an upgrade.
                let mut res = Response::new(Full::new(Bytes::from_static(b"use POST\n")));
                *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                return res;
            }
        } else if request.method() == http::Method::POST {
            self.posts.fetch_add(1, Ordering::SeqCst);
        }
        self.server.handle(request).await
    }

    fn upgrades(&self) -> usize {
        self.upgrades.load(Ordering::SeqCst)
    }

    fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
}

/// A TCP proxy whose connections can all be cut at once (both sides closed abruptly,
/// as a network failure or a load balancer would).
struct Proxy {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            }
        });
        Proxy {
            addr,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/cometd", self.addr)
    }

    /// Cuts every connection open now.
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn builder(url: &str) -> bayeux::client::ClientBuilder {
    Client::builder(url)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(5))
        .max_network_delay(Duration::from_secs(2))
}

async fn next_data(sub: &mut Subscription) -> Value {
    timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("stream ended")
        .data
        .unwrap()
}

/// Publishes until the message reaches a subscriber (a renewed subscription may not
/// be in place yet).
async fn publish_until_delivered(server: &Server, channel: &str, data: Value) {
    eventually_async("a subscriber", async || {
        server
            .publish(channel, data.clone())
            .await
            .unwrap()
            .local_recipients
            > 0
    })
    .await;
}

/// Sessions outlive a dead socket long enough to come back; connects are heartbeats
/// held for 30 s, longer than any test runs.
fn resumable_config() -> ServerConfig {
    fast_config()
        .with_timeout(Duration::from_secs(30))
        .with_max_interval(Duration::from_secs(10))
}

struct NoSecrets;

impl SecurityPolicy for NoSecrets {
    fn publish(&self, _: Option<&SessionInfo>, channel: &ChannelName, _: &Message) -> Decision {
        if channel.as_str().starts_with("/secret") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test]
async fn the_default_client_runs_everything_over_one_socket() {
    timeout(LIMIT, async {
        let server = Server::builder()
            .config(fast_config())
            .policy(NoSecrets)
            .build();
        let (front, listening) = Front::start(server.clone()).await;
        let url = listening.url("/cometd");
        let (alice, bob) = (
            builder(&url).build().unwrap(),
            builder(&url).build().unwrap(),
        );
        assert_eq!(alice.transport_name(), "websocket");
        alice.handshake().await.unwrap();
        bob.handshake().await.unwrap();
        assert_eq!(
            (alice.transport_name(), bob.transport_name()),
            ("websocket", "websocket")
        );
        let mut exact = alice.subscribe("/chat/room").await.unwrap();
        let mut one = alice.subscribe("/chat/*").await.unwrap();
        let mut deep = alice.subscribe("/chat/**").await.unwrap();

        // Publish replies come back over the socket, matched by id.
        let reply = bob.publish("/chat/room", json!("hi")).await.unwrap();
        assert!(reply.is_successful(), "{reply:?}");
        assert_eq!(reply.channel_str(), "/chat/room");
        assert!(reply.id.is_some());
        bob.publish("/chat/room/deep", json!("deeper"))
            .await
            .unwrap();
        assert_eq!(next_data(&mut exact).await, json!("hi"));
        assert_eq!(next_data(&mut one).await, json!("hi"));
        assert_eq!(next_data(&mut deep).await, json!("hi"));
        assert_eq!(next_data(&mut deep).await, json!("deeper"));

        // A batch: one result per message, a refusal among them, order kept.
        let mut seq = alice.subscribe("/seq").await.unwrap();
        let results = bob
            .publish_batch(vec![
                ("/seq".into(), json!(1)),
                ("/secret".into(), json!(2)),
                ("/seq".into(), json!(3)),
            ])
            .await
            .unwrap();
        assert!(results[0].is_ok() && results[2].is_ok());
        let e = results[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert_eq!(e.bayeux_error().unwrap().code, 403);
        assert_eq!(next_data(&mut seq).await, json!(1));
        assert_eq!(next_data(&mut seq).await, json!(3));
        // Many, in publish order.
        for i in 0..200 {
            bob.publish("/seq", json!(i)).await.unwrap();
        }
        for i in 0..200 {
            assert_eq!(next_data(&mut seq).await, json!(i));
        }
        assert_eq!(*alice.state().borrow(), ConnectionState::Connected);

        // One socket each, and not a single POST.
        assert_eq!((front.upgrades(), front.posts()), (2, 0));

        alice.disconnect().await.unwrap();
        assert!(exact.next().await.is_none(), "stream ends after disconnect");
        assert_eq!(*alice.state().borrow(), ConnectionState::Disconnected);
        eventually("alice's session to end", || server.session_count() == 1).await;
        assert_eq!(front.posts(), 0);
    })
    .await
    .unwrap();
}

/// Counts the connects that acknowledge a batch (`ext.ack` a number).
struct SeesAcks(Arc<AtomicUsize>);

impl Extension for SeesAcks {
    fn incoming(&self, _: Option<&SessionInfo>, message: &mut Message) -> bool {
        if message.channel_str() == "/meta/connect"
            && message
                .ext
                .as_ref()
                .and_then(|e| e.get("ack"))
                .is_some_and(Value::is_u64)
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        true
    }
}

#[tokio::test]
async fn with_acks_a_socket_cut_again_and_again_loses_and_repeats_nothing() {
    timeout(LIMIT, async {
        let acks = Arc::new(AtomicUsize::new(0));
        let server = Server::builder()
            .config(resumable_config())
            .extension(SeesAcks(acks.clone()))
            .build();
        let (front, listening) = Front::start(server.clone()).await;
        let proxy = Proxy::start(listening.local_addr()).await;
        let client = builder(&proxy.url()).build().unwrap();
        client.handshake().await.unwrap();
        let id = client.client_id().unwrap();
        let mut sub = client.subscribe("/acked").await.unwrap();
        const ROUNDS: u64 = 5;
        const PER_ROUND: u64 = 40;
        let mut n = 0;
        for round in 0..ROUNDS {
            for _ in 0..PER_ROUND {
                server.publish("/acked", json!(n)).await.unwrap();
                n += 1;
            }
            // Some of these are on the wire, or delivered and not yet acknowledged.
            proxy.cut();
            let sockets = round as usize + 2;
            eventually("a new socket", || front.upgrades() == sockets).await;
        }
        for i in 0..n {
            assert_eq!(next_data(&mut sub).await, json!(i));
        }
        assert!(
            timeout(Duration::from_millis(300), sub.next())
                .await
                .is_err(),
            "a message came twice"
        );
        assert_eq!(client.client_id().unwrap(), id, "the session was kept");
        assert_eq!(client.sessions_lost(), 0);
        assert_eq!(client.transport_name(), "websocket");
        assert_eq!(front.posts(), 0);
        assert!(acks.load(Ordering::SeqCst) > 0, "the client acknowledged");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_socket_cut_while_the_session_lives_fails_the_connect_at_once_and_resumes() {
    timeout(LIMIT, async {
        // The session is bound to the BAYEUX_BROWSER cookie the 101 set: the next socket
        // must send it back, or the server answers 402.
        let server = Server::new(resumable_config().with_bind_browser_cookie(true));
        let (front, listening) = Front::start(server.clone()).await;
        let proxy = Proxy::start(listening.local_addr()).await;
        let client = builder(&proxy.url())
            // A window wide enough to see the Reconnecting state between two sockets.
            .backoff(Duration::from_millis(400), Duration::from_secs(1))
            .ack(false)
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let id = client.client_id().unwrap();
        let mut sub = client.subscribe("/kept").await.unwrap();
        server.publish("/kept", json!("before")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("before"));
        client
            .wait_for_state(|s| *s == ConnectionState::Connected)
            .await;
        // The heartbeat is held (for 30 s) when the socket dies.
        eventually("the held connect", || server.is_connected(&id)).await;

        let cut = Instant::now();
        proxy.cut();
        client
            .wait_for_state(|s| *s == ConnectionState::Reconnecting)
            .await;
        let noticed = cut.elapsed();
        assert!(
            noticed < Duration::from_secs(2),
            "the connect failed after {noticed:?}, not at once"
        );
        server.publish("/kept", json!("while away")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("while away"));
        client
            .wait_for_state(|s| *s == ConnectionState::Connected)
            .await;
        assert_eq!(client.client_id().unwrap(), id, "the same session");
        assert_eq!(client.sessions_lost(), 0);
        assert_eq!(server.session_count(), 1);
        assert_eq!((front.upgrades(), front.posts()), (2, 0));
        client.publish("/kept", json!("after")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("after"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_client_comes_back_over_websocket_when_the_server_restarts() {
    timeout(LIMIT, async {
        let first = Server::new(fast_config());
        let listening = first
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let addr = listening.local_addr();
        let client = builder(&listening.url("/cometd")).build().unwrap();
        client.handshake().await.unwrap();
        let old_id = client.client_id().unwrap();
        let mut sub = client.subscribe("/live/**").await.unwrap();
        first.publish("/live/a", json!("before")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("before"));

        listening.shutdown().await.unwrap();
        client
            .wait_for_state(|s| *s == ConnectionState::Reconnecting)
            .await;
        // Refused connections while the server is away are no reason to give up on
        // WebSocket.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = Server::new(fast_config());
        let _listening = second.listen(addr, "/cometd").await.unwrap();
        // 402 from the new server: a new handshake, the subscription renewed.
        publish_until_delivered(&second, "/live/b", json!("after")).await;
        assert_eq!(next_data(&mut sub).await, json!("after"));
        assert_ne!(client.client_id().unwrap(), old_id);
        assert!(client.sessions_lost() >= 1);
        assert_eq!(client.transport_name(), "websocket");
        client
            .wait_for_state(|s| *s == ConnectionState::Connected)
            .await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn forced_long_polling_never_opens_a_socket() {
    timeout(LIMIT, async {
        let server = Server::new(fast_config());
        let (front, listening) = Front::start(server.clone()).await;
        let client = builder(&listening.url("/cometd"))
            .transport(TransportChoice::LongPolling)
            .build()
            .unwrap();
        assert_eq!(client.transport_name(), "long-polling");
        client.handshake().await.unwrap();
        let mut sub = client.subscribe("/lp").await.unwrap();
        client.publish("/lp", json!(1)).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!(1));
        // A few connect cycles (the server holds them 200 ms).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(client.transport_name(), "long-polling");
        assert_eq!(front.upgrades(), 0);
        assert!(front.posts() >= 4, "{} POSTs", front.posts());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_websocket_on_the_server_the_client_falls_back_to_long_polling() {
    timeout(LIMIT, async {
        let server = Server::new(fast_config());
        let (front, listening) = Front::start(server.clone()).await;
        front.refuse_upgrades.store(true, Ordering::SeqCst);
        let url = listening.url("/cometd");

        let client = builder(&url).build().unwrap();
        let mut changes = client.transport_changes();
        assert_eq!(*changes.borrow_and_update(), "websocket");
        client.handshake().await.unwrap();
        assert_eq!(client.transport_name(), "long-polling");
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), "long-polling");
        let mut sub = client.subscribe("/fallback").await.unwrap();
        client
            .publish("/fallback", json!("over POSTs"))
            .await
            .unwrap();
        assert_eq!(next_data(&mut sub).await, json!("over POSTs"));
        // It stays there: one upgrade tried, ever.
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.publish("/fallback", json!("later")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("later"));
        assert_eq!(front.upgrades(), 1);
        assert_eq!(client.transport_name(), "long-polling");
        assert!(!changes.has_changed().unwrap());

        // Forced WebSocket: a clear connection error, with the status the server gave.
        let forced = builder(&url)
            .transport(TransportChoice::WebSocket)
            .build()
            .unwrap();
        let e = forced.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert_eq!(e.status_code(), Some(405));
        assert_eq!(e.body_excerpt(), Some("use POST"));
        let text = e.to_string();
        assert!(
            text.contains("WebSocket upgrade at ws://") && text.contains("405"),
            "{text}"
        );
        assert_eq!(forced.transport_name(), "websocket");
        assert_eq!(*forced.state().borrow(), ConnectionState::Idle);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn nobody_listening_fails_the_forced_websocket_handshake_as_a_connection_error() {
    timeout(LIMIT, async {
        let client = builder("http://127.0.0.1:9/cometd")
            .transport(TransportChoice::WebSocket)
            .build()
            .unwrap();
        let e = client.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(e.to_string().contains("ws://127.0.0.1:9/cometd"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        // Settings the WebSocket transport cannot honour are refused at build: wss://
        // without the `tls` feature (with it, see client_tls.rs), a connector.
        #[cfg(not(feature = "tls"))]
        {
            let e = Client::builder("https://example.com/cometd")
                .transport(TransportChoice::WebSocket)
                .build()
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        }
        let e = Client::builder("http://example.com/cometd")
            .connector(hyper_util::client::legacy::connect::HttpConnector::new())
            .transport(TransportChoice::WebSocket)
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    })
    .await
    .unwrap();
}

/// A server whose handshake replies do not list `websocket`.
struct LongPollingOnly;

impl Extension for LongPollingOnly {
    fn outgoing(&self, _: Option<&SessionInfo>, message: &mut Message) {
        if message.channel_str() == "/meta/handshake" {
            message.supported_connection_types = Some(vec!["long-polling".into()]);
        }
    }
}

#[tokio::test]
async fn a_handshake_reply_without_websocket_moves_the_session_to_long_polling() {
    timeout(LIMIT, async {
        let server = Server::builder()
            .config(fast_config())
            .extension(LongPollingOnly)
            .build();
        let (front, listening) = Front::start(server.clone()).await;
        let url = listening.url("/cometd");
        let client = builder(&url).build().unwrap();
        client.handshake().await.unwrap();
        assert_eq!(client.transport_name(), "long-polling");
        // The session made over the socket goes on over POSTs: no second handshake.
        let id = client.client_id().unwrap();
        let mut sub = client.subscribe("/moved").await.unwrap();
        client.publish("/moved", json!(1)).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!(1));
        assert_eq!(client.client_id().unwrap(), id);
        assert_eq!(server.session_count(), 1);
        assert_eq!(front.upgrades(), 1);
        assert!(front.posts() >= 2);

        let forced = builder(&url)
            .transport(TransportChoice::WebSocket)
            .build()
            .unwrap();
        let e = forced.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.to_string().contains("websocket"), "{e}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn when_upgrades_start_being_refused_the_session_resumes_over_long_polling() {
    timeout(LIMIT, async {
        let server = Server::new(resumable_config().with_bind_browser_cookie(true));
        let (front, listening) = Front::start(server.clone()).await;
        let proxy = Proxy::start(listening.local_addr()).await;
        let client = builder(&proxy.url()).build().unwrap();
        let mut changes = client.transport_changes();
        client.handshake().await.unwrap();
        assert_eq!(client.transport_name(), "websocket");
        let id = client.client_id().unwrap();
        let mut sub = client.subscribe("/resumed").await.unwrap();
        assert!(!changes.has_changed().unwrap());

        // A proxy in front of the server stops taking WebSocket, and the socket dies.
        front.refuse_upgrades.store(true, Ordering::SeqCst);
        proxy.cut();
        changes.changed().await.unwrap();
        assert_eq!(*changes.borrow(), "long-polling");
        server.publish("/resumed", json!("on POSTs")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("on POSTs"));
        assert_eq!(client.client_id().unwrap(), id, "the same session");
        assert_eq!(client.sessions_lost(), 0);
        assert_eq!(front.upgrades(), 2);
        assert!(front.posts() > 0);
    })
    .await
    .unwrap();
}

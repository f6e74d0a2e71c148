//! The client against this crate's server over loopback HTTP: the transport-neutral
//! tests run on each transport (`name::websocket`, `name::long_polling`); the failure
//! tests on the default (WebSocket, falling back to long-polling). WebSocket-specific
//! behaviour (negotiation, fallback, sockets that die) is in `client_websocket.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bayeux::client::{Client, ConnectionState, ErrorKind, TransportChoice};
use bayeux::protocol::{Advice, ChannelName, Message, Reconnect};
use bayeux::server::{Decision, Extension, SecurityPolicy, Server, SessionInfo};
use common::*;
use futures::StreamExt;
use serde_json::json;
use tokio::time::timeout;

/// Runs each test on each transport, forced: `name::websocket` and `name::long_polling`.
macro_rules! on_each_transport {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn websocket() {
                super::$name(TransportChoice::WebSocket).await;
            }

            #[tokio::test]
            async fn long_polling() {
                super::$name(TransportChoice::LongPolling).await;
            }
        }
    )*};
}

on_each_transport!(
    subscribe_publish_receive_between_two_clients,
    wildcard_subscriptions_and_several_subscriptions_to_one_channel,
    refusals_are_errors_not_silent_streams,
    batch_publish_in_one_request_arrives_in_order,
    messages_arrive_in_publish_order,
    dropping_a_subscription_unsubscribes,
    the_client_recovers_when_the_server_restarts_on_the_same_port,
    an_expired_session_is_re_established_with_its_subscriptions,
    an_overflow_of_an_acknowledged_session_is_heard_not_hidden,
    reconnect_none_ends_the_client_with_a_clear_error,
    dropping_the_client_stops_its_long_poll,
    a_publish_is_not_stuck_behind_a_pending_long_poll,
    a_slow_subscription_drops_its_newest_messages_and_holds_up_nothing,
);

fn client(url: &str, transport: TransportChoice) -> Client {
    Client::builder(url)
        .transport(transport)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(5))
        .max_network_delay(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn next_data(sub: &mut bayeux::client::Subscription) -> serde_json::Value {
    sub.next().await.expect("stream ended").data.unwrap()
}

async fn subscribe_publish_receive_between_two_clients(transport: TransportChoice) {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let (alice, bob) = (client(&t.url(), transport), client(&t.url(), transport));
        alice.handshake().await.unwrap();
        bob.handshake().await.unwrap();
        let mut inbox = alice.subscribe("/chat/room").await.unwrap();
        let reply = bob
            .publish("/chat/room", json!({"text": "hi alice"}))
            .await
            .unwrap();
        assert!(reply.is_successful());
        assert_eq!(next_data(&mut inbox).await, json!({"text": "hi alice"}));
        let mut bob_inbox = bob.subscribe("/chat/room").await.unwrap();
        alice.publish("/chat/room", json!("hi bob")).await.unwrap();
        assert_eq!(next_data(&mut bob_inbox).await, json!("hi bob"));
        assert_eq!(next_data(&mut inbox).await, json!("hi bob"));
        assert_eq!(*alice.state().borrow(), ConnectionState::Connected);
        alice.disconnect().await.unwrap();
        assert!(inbox.next().await.is_none(), "stream ends after disconnect");
        eventually("alice's session to end", || t.server.session_count() == 1).await;
    })
    .await
    .unwrap();
}

async fn wildcard_subscriptions_and_several_subscriptions_to_one_channel(
    transport: TransportChoice,
) {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let mut one = c.subscribe("/news/*").await.unwrap();
        let mut deep = c.subscribe("/news/**").await.unwrap();
        let mut exact_a = c.subscribe("/news/sport").await.unwrap();
        let mut exact_b = c.subscribe("/news/sport").await.unwrap();
        c.publish("/news/sport/football", json!(1)).await.unwrap();
        c.publish("/news/sport", json!(2)).await.unwrap();
        assert_eq!(next_data(&mut deep).await, json!(1));
        assert_eq!(next_data(&mut deep).await, json!(2));
        assert_eq!(next_data(&mut one).await, json!(2));
        assert_eq!(next_data(&mut exact_a).await, json!(2));
        assert_eq!(next_data(&mut exact_b).await, json!(2));
    })
    .await
    .unwrap();
}

struct NoSecrets;

impl SecurityPolicy for NoSecrets {
    fn subscribe(&self, _: Option<&SessionInfo>, channel: &ChannelName) -> Decision {
        if channel.as_str().starts_with("/secret") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
    fn publish(&self, _: Option<&SessionInfo>, channel: &ChannelName, _: &Message) -> Decision {
        if channel.as_str().starts_with("/secret") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

async fn refusals_are_errors_not_silent_streams(transport: TransportChoice) {
    timeout(LIMIT, async {
        let t = TestServer::start(
            Server::builder()
                .config(fast_config())
                .policy(NoSecrets)
                .build(),
        )
        .await;
        let c = client(&t.url(), transport);
        let e = c.subscribe("/a").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
        let e = c.publish("/a", json!(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
        c.handshake().await.unwrap();
        let e = c.subscribe("/secret/plans").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert_eq!(e.bayeux_error().unwrap().code, 403);
        let e = c.publish("/secret/plans", json!(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert_eq!(
            e.bayeux_error().unwrap().to_string(),
            "403:/secret/plans:Publish denied"
        );
        // The Bayeux error is also the standard source of the error.
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "403:/secret/plans:Publish denied"
        );
        let e = c.subscribe("/bad channel").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidChannel, "{e}");
        assert!(e.to_string().contains("/bad channel"), "{e}");
        let e = c.publish("/meta/x", json!(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    })
    .await
    .unwrap();
}

async fn batch_publish_in_one_request_arrives_in_order(transport: TransportChoice) {
    timeout(LIMIT, async {
        let t = TestServer::start(
            Server::builder()
                .config(fast_config())
                .policy(NoSecrets)
                .build(),
        )
        .await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let mut sub = c.subscribe("/seq").await.unwrap();
        let results = c
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
        assert_eq!(next_data(&mut sub).await, json!(1));
        assert_eq!(next_data(&mut sub).await, json!(3));
    })
    .await
    .unwrap();
}

async fn messages_arrive_in_publish_order(transport: TransportChoice) {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_max_queue(10_000)).await;
        let (sub_client, pub_client) = (client(&t.url(), transport), client(&t.url(), transport));
        sub_client.handshake().await.unwrap();
        pub_client.handshake().await.unwrap();
        let mut sub = sub_client.subscribe("/ordered").await.unwrap();
        for i in 0..500 {
            pub_client.publish("/ordered", json!(i)).await.unwrap();
        }
        for i in 0..500 {
            assert_eq!(next_data(&mut sub).await, json!(i));
        }
    })
    .await
    .unwrap();
}

async fn dropping_a_subscription_unsubscribes(transport: TransportChoice) {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let a = c.subscribe("/drop").await.unwrap();
        let mut b = c.subscribe("/drop").await.unwrap();
        assert_eq!(
            t.server
                .publish("/drop", json!(0))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        drop(a);
        // Another local subscription still uses the channel: the server keeps it.
        assert_eq!(next_data(&mut b).await, json!(0));
        t.server.publish("/drop", json!(1)).await.unwrap();
        assert_eq!(next_data(&mut b).await, json!(1));
        b.unsubscribe().await.unwrap();
        assert_eq!(
            t.server
                .publish("/drop", json!(2))
                .await
                .unwrap()
                .local_recipients,
            0
        );
        let c2 = c.subscribe("/drop2").await.unwrap();
        drop(c2);
        eventually_async("the drop-time unsubscribe", async || {
            t.server
                .publish("/drop2", json!(0))
                .await
                .unwrap()
                .local_recipients
                == 0
        })
        .await;
    })
    .await
    .unwrap();
}

async fn the_client_recovers_when_the_server_restarts_on_the_same_port(transport: TransportChoice) {
    timeout(LIMIT, async {
        let first = Server::new(fast_config());
        let listening = first
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let addr: SocketAddr = listening.local_addr();
        let url = listening.url("/cometd");
        let c = client(&url, transport);
        c.handshake().await.unwrap();
        let old_id = c.client_id().unwrap();
        let mut sub = c.subscribe("/live/**").await.unwrap();
        first.publish("/live/a", json!("before")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("before"));

        listening.shutdown().await.unwrap();
        c.wait_for_state(|s| *s == ConnectionState::Reconnecting)
            .await;

        let second = Server::new(fast_config());
        let _listening = second.listen(addr, "/cometd").await.unwrap();
        // The client re-handshakes (402 from the new server) and re-subscribes by itself.
        eventually("the re-subscription", || second.session_count() == 1).await;
        let mut delivered = 0;
        while delivered == 0 {
            delivered = second
                .publish("/live/b", json!("after"))
                .await
                .unwrap()
                .local_recipients;
            if delivered == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(next_data(&mut sub).await, json!("after"));
        assert_ne!(c.client_id().unwrap(), old_id);
        assert_eq!(
            c.wait_for_state(|s| *s == ConnectionState::Connected).await,
            ConnectionState::Connected
        );
    })
    .await
    .unwrap();
}

/// Tells the client, once, to wait 600 ms before its next connect while the server
/// expires sessions after 100 ms: the session expires meanwhile, and the client must
/// notice (402) and establish a new session with its subscriptions.
struct SlowPollOnce(AtomicBool);

impl Extension for SlowPollOnce {
    fn outgoing(&self, _: Option<&SessionInfo>, message: &mut Message) {
        if message.channel_str() == "/meta/connect"
            && message.is_successful()
            && !self.0.swap(true, Ordering::SeqCst)
        {
            message.advice = Some(Advice::retry(600, 200));
        }
    }
}

async fn an_expired_session_is_re_established_with_its_subscriptions(transport: TransportChoice) {
    timeout(LIMIT, async {
        let config = fast_config().with_max_interval(Duration::from_millis(100));
        let t = TestServer::start(
            Server::builder()
                .config(config)
                .extension(SlowPollOnce(AtomicBool::new(false)))
                .build(),
        )
        .await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let first_id = c.client_id().unwrap();
        let mut sub = c.subscribe("/keep").await.unwrap();
        eventually("the first session to expire", || {
            t.server.session_info(&first_id).is_none()
        })
        .await;
        eventually("a new session", || {
            c.client_id().is_some_and(|id| id != first_id) && t.server.session_count() == 1
        })
        .await;
        // Publish until the renewed subscription is in place, then receive through the
        // same stream.
        while t
            .server
            .publish("/keep", json!("still here"))
            .await
            .unwrap()
            .local_recipients
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(next_data(&mut sub).await, json!("still here"));
        // The client said the session was lost, and the stream counts the gap.
        assert!(c.sessions_lost() >= 1);
        assert!(sub.gaps() >= 1);
    })
    .await
    .unwrap();
}

async fn an_overflow_of_an_acknowledged_session_is_heard_not_hidden(transport: TransportChoice) {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_max_queue(5)).await;
        let c = client(&t.url(), transport);
        let mut state = c.state();
        c.handshake().await.unwrap();
        let first_id = c.client_id().unwrap();
        let mut sub = c.subscribe("/burst").await.unwrap();
        // Ten messages at once, with no chance for the client to read in between (this
        // runtime has one thread): the session's queue of five overflows.
        for i in 0..10 {
            t.server.publish("/burst", json!(i)).await.unwrap();
        }
        assert_eq!(t.server.stats().overflow_closes, 1);
        let lost = state
            .wait_for(|s| matches!(s, ConnectionState::SessionLost(_)))
            .await
            .unwrap()
            .clone();
        let ConnectionState::SessionLost(why) = lost else {
            unreachable!()
        };
        assert!(why.starts_with("409:"), "{why}");
        // What the server held (the first five) arrived, then the gap is counted.
        for i in 0..5 {
            assert_eq!(next_data(&mut sub).await, json!(i));
        }
        assert_eq!(sub.gaps(), 1);
        assert_eq!(c.sessions_lost(), 1);
        // A new session with the subscription renewed: the stream carries on.
        c.wait_for_state(|s| *s == ConnectionState::Connected).await;
        assert_ne!(c.client_id().unwrap(), first_id);
        while t
            .server
            .publish("/burst", json!("after"))
            .await
            .unwrap()
            .local_recipients
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(next_data(&mut sub).await, json!("after"));
    })
    .await
    .unwrap();
}

/// Answers every connect with `reconnect: none` once switched on.
struct GoAway(Arc<AtomicBool>);

impl Extension for GoAway {
    fn outgoing(&self, _: Option<&SessionInfo>, message: &mut Message) {
        if message.channel_str() == "/meta/connect" && self.0.load(Ordering::SeqCst) {
            message.advice = Some(Advice {
                reconnect: Some(Reconnect::None),
                ..Advice::default()
            });
        }
    }
}

async fn reconnect_none_ends_the_client_with_a_clear_error(transport: TransportChoice) {
    timeout(LIMIT, async {
        let flag = Arc::new(AtomicBool::new(false));
        let t = TestServer::start(
            Server::builder()
                .config(fast_config())
                .extension(GoAway(flag.clone()))
                .build(),
        )
        .await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let mut sub = c.subscribe("/x").await.unwrap();
        flag.store(true, Ordering::SeqCst);
        let state = c
            .wait_for_state(|s| matches!(s, ConnectionState::Failed(_)))
            .await;
        assert_eq!(
            state,
            ConnectionState::Failed("the server advised reconnect: none".into())
        );
        assert!(sub.next().await.is_none());
        let e = c.publish("/x", json!(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
        let e = c.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
        let e = c.subscribe("/y").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refused_handshake_is_an_error() {
    struct Deny;
    impl SecurityPolicy for Deny {
        fn handshake<'a>(
            &'a self,
            _: bayeux::server::HandshakeRequest<'a>,
        ) -> bayeux::server::PolicyFuture<'a, bayeux::server::HandshakeDecision> {
            Box::pin(async { bayeux::server::HandshakeDecision::Deny("no entry".into()) })
        }
    }
    timeout(LIMIT, async {
        let t =
            TestServer::start(Server::builder().config(fast_config()).policy(Deny).build()).await;
        let c = client(&t.url(), TransportChoice::Auto);
        let e = c.handshake().await.unwrap_err();
        // Refused with `reconnect: none`: the client is closed, the refusal kept.
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
        assert_eq!(
            e.bayeux_error().unwrap().to_string(),
            "403::Handshake denied: no entry"
        );
        assert!(
            e.to_string().contains("403::Handshake denied: no entry"),
            "{e}"
        );
        let nobody = client("http://127.0.0.1:9/cometd", TransportChoice::Auto);
        let e = nobody.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
        assert_eq!(*nobody.state().borrow(), ConnectionState::Idle);
    })
    .await
    .unwrap();
}

async fn dropping_the_client_stops_its_long_poll(transport: TransportChoice) {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(30);
        let t = TestServer::with_config(config).await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let id = c.client_id().unwrap();
        eventually("the long poll", || t.server.is_connected(&id)).await;
        drop(c);
        // The aborted loop drops its HTTP request; the server sees the poll go away.
        eventually("the long poll to stop", || !t.server.is_connected(&id)).await;
    })
    .await
    .unwrap();
}

async fn a_publish_is_not_stuck_behind_a_pending_long_poll(transport: TransportChoice) {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(30);
        let t = TestServer::with_config(config).await;
        let c = client(&t.url(), transport);
        c.handshake().await.unwrap();
        let id = c.client_id().unwrap();
        eventually("the long poll", || t.server.is_connected(&id)).await;
        let mut sub = c.subscribe("/fast").await.unwrap();
        // With one shared connection this would wait for the 30 s poll (the bound is 20 s).
        c.publish("/fast", json!("now")).await.unwrap();
        assert_eq!(next_data(&mut sub).await, json!("now"));
    })
    .await
    .unwrap();
}

/// A TCP server that answers every request with `response` (raw HTTP), or never answers
/// when it is `None`.
async fn canned_server(response: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // Read the request head and body (the client's batches are small).
                let _ = socket.read(&mut buf).await;
                match response {
                    Some(r) => {
                        let _ = socket.write_all(r.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    format!("http://{addr}/cometd")
}

#[tokio::test]
async fn http_failures_are_told_apart() {
    timeout(LIMIT, async {
        // Without the `tls` feature, https:// is a configuration error (with it, see
        // client_tls.rs).
        #[cfg(not(feature = "tls"))]
        {
            let e = Client::builder("https://example.com/cometd")
                .build()
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            assert!(e.to_string().contains("https://"), "{e}");
        }

        let url = canned_server(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\nconnection: close\r\n\r\noverload\n",
        ))
        .await;
        let e = client(&url, TransportChoice::Auto).handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Status, "{e}");
        assert_eq!((e.status_code(), e.body_excerpt()), (Some(503), Some("overload")));

        let url = canned_server(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nnot json",
        ))
        .await;
        let e = client(&url, TransportChoice::Auto).handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");

        let url = canned_server(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]",
        ))
        .await;
        let e = client(&url, TransportChoice::Auto).handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");

        // Accepted, then closed without a response.
        let url = canned_server(Some("")).await;
        let e = client(&url, TransportChoice::Auto).handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");

        let url = canned_server(None).await;
        let slow = Client::builder(&url)
            .request_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let e = slow.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_plugged_in_connector_carries_the_session() {
    use hyper_util::client::legacy::connect::HttpConnector;
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let c = Client::builder(&t.url())
            .connector(connector.clone())
            .build()
            .unwrap();
        assert_eq!(c.transport_name(), "long-polling");
        c.handshake().await.unwrap();
        let mut sub = c.subscribe("/plugged").await.unwrap();
        c.publish("/plugged", json!("via the connector"))
            .await
            .unwrap();
        assert_eq!(next_data(&mut sub).await, json!("via the connector"));
        // With a connector, https:// is accepted (it is the connector's job to speak TLS).
        assert!(
            Client::builder("https://example.com/cometd")
                .connector(connector)
                .build()
                .is_ok()
        );
    })
    .await
    .unwrap();
}

async fn a_slow_subscription_drops_its_newest_messages_and_holds_up_nothing(
    transport: TransportChoice,
) {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let c = Client::builder(&t.url())
            .transport(transport)
            .subscription_capacity(3)
            .build()
            .unwrap();
        c.handshake().await.unwrap();
        let mut slow = c.subscribe("/flood").await.unwrap();
        let mut fast = c.subscribe("/flood").await.unwrap();
        let mut other = c.subscribe("/other").await.unwrap();
        // One at a time, so that only the unread stream overflows.
        for i in 0..10 {
            t.server.publish("/flood", json!(i)).await.unwrap();
            assert_eq!(next_data(&mut fast).await, json!(i));
        }
        t.server
            .publish("/other", json!("unaffected"))
            .await
            .unwrap();
        assert_eq!(next_data(&mut other).await, json!("unaffected"));
        assert_eq!((slow.dropped(), fast.dropped()), (7, 0));
        assert_eq!(c.dropped_messages(), 7);
        // The first three were kept, in order; the newer ones were dropped.
        for i in 0..3 {
            assert_eq!(next_data(&mut slow).await, json!(i));
        }
        assert!(
            timeout(Duration::from_millis(100), slow.next())
                .await
                .is_err()
        );
        // Once read, the stream has room again.
        t.server.publish("/flood", json!(10)).await.unwrap();
        assert_eq!(next_data(&mut slow).await, json!(10));
        assert_eq!(*c.state().borrow(), ConnectionState::Connected);
    })
    .await
    .unwrap();
}

//! The server over real loopback HTTP, one behaviour per test, with short timeouts.

mod common;

use std::time::Duration;

use bayeux::protocol::{ChannelName, Message};
use bayeux::server::{Decision, Extension, OverflowPolicy, SecurityPolicy, Server, SessionInfo};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

#[tokio::test]
async fn handshake_reply_has_the_negotiated_fields() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let r = &t
            .post(json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
                          "supportedConnectionTypes": ["long-polling", "callback-polling"], "id": "1"}]))
            .await[0];
        assert_eq!(r["channel"], "/meta/handshake");
        assert_eq!(r["successful"], true);
        assert_eq!(r["id"], "1");
        assert_eq!(r["version"], "1.0");
        // The transports this server runs, WebSocket first as CometD offers them.
        assert_eq!(
            r["supportedConnectionTypes"],
            json!(["websocket", "long-polling"])
        );
        assert_eq!(r["advice"], json!({"reconnect": "retry", "interval": 0, "timeout": 200}));
        let id = r["clientId"].as_str().unwrap();
        assert!(id.len() >= 32, "clientId too short to be unguessable: {id}");
        assert_ne!(t.handshake().await, id);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn handshake_refuses_unsupported_connection_types_and_versions() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let r = &t
            .post(json!({"channel": "/meta/handshake", "version": "1.0",
                         "supportedConnectionTypes": ["callback-polling", "eventsource"]}))
            .await[0];
        assert_eq!(r["successful"], false);
        assert!(r["error"].as_str().unwrap().starts_with("301:"), "{r}");
        assert_eq!(
            r["supportedConnectionTypes"],
            json!(["websocket", "long-polling"])
        );
        let r = &t
            .post(json!({"channel": "/meta/handshake", "version": "2.0", "minimumVersion": "2.0"}))
            .await[0];
        assert_eq!(r["successful"], false);
        assert_eq!(t.server.session_count(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connect_is_held_until_a_publish_arrives() {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(10);
        let t = std::sync::Arc::new(TestServer::with_config(config).await);
        let sub = t.handshake().await;
        let publisher = t.handshake().await;
        assert_eq!(
            t.subscribe(&sub, json!("/chat/room")).await["successful"],
            true
        );
        t.connect_now(&sub).await;
        let pending = pending_connect(&t, &sub).await;
        // The publish reply comes back while the connect is still held.
        let reply = t
            .publish(&publisher, "/chat/room", json!({"text": "hi"}))
            .await;
        assert_eq!(reply["successful"], true);
        assert_eq!(reply["id"], "p");
        let (messages, connect) = pending.await.unwrap();
        assert_eq!(connect["successful"], true);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["channel"], "/chat/room");
        assert_eq!(messages[0]["data"], json!({"text": "hi"}));
        // The publisher's clientId (its session credential) is never broadcast.
        assert!(messages[0].get("clientId").is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_first_connect_is_answered_at_once_as_cometd_does() {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(60);
        let t = TestServer::with_config(config).await;
        let id = t.handshake().await;
        // Without advice: held for 60 s if this were not the first (the bound is 20 s).
        let (messages, reply) = t.connect(&id).await;
        assert!(messages.is_empty());
        assert_eq!(reply["successful"], true);
        assert_eq!(reply["advice"]["timeout"], 60_000);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connect_times_out_empty() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        t.connect(&id).await; // the first connect is answered at once
        let started = std::time::Instant::now();
        let (messages, reply) = t.connect(&id).await;
        assert!(messages.is_empty());
        assert_eq!(reply["successful"], true);
        assert_eq!(reply["advice"]["reconnect"], "retry");
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "returned before the timeout"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_second_connect_releases_the_first() {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(30);
        let t = std::sync::Arc::new(TestServer::with_config(config).await);
        let id = t.handshake().await;
        t.connect_now(&id).await;
        let first = pending_connect(&t, &id).await;
        // The first is answered long before its 30 s timeout (the test's bound is 20 s).
        let second = tokio::spawn({
            let (t, id) = (t.clone(), id.clone());
            async move { t.connect(&id).await }
        });
        let (messages, reply) = first.await.unwrap();
        assert!(messages.is_empty());
        assert_eq!(reply["successful"], true);
        t.server.publish("/x", json!(1)).await.unwrap();
        assert_eq!(
            t.server
                .deliver(&id, "/direct", json!("to-you"))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        let (messages, _) = second.await.unwrap();
        assert_eq!(messages[0]["data"], "to-you");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_client_gets_402_and_handshake_advice() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        for channel in [
            "/meta/connect",
            "/meta/subscribe",
            "/meta/unsubscribe",
            "/meta/disconnect",
            "/a/b",
        ] {
            let r = &t
                .post(
                    json!({"channel": channel, "clientId": "nope", "subscription": "/a",
                             "data": 1, "id": "7"}),
                )
                .await[0];
            assert_eq!(r["successful"], false, "{channel}");
            assert_eq!(r["error"], "402::Unknown client", "{channel}");
            assert_eq!(r["advice"]["reconnect"], "handshake", "{channel}");
            assert_eq!(r["id"], "7");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_session_without_connects_expires() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        t.subscribe(&id, json!("/a")).await;
        t.connect_now(&id).await;
        assert_eq!(t.server.session_count(), 1);
        eventually("expiry", || t.server.session_count() == 0).await;
        let (_, reply) = t.connect(&id).await;
        assert_eq!(reply["error"], "402::Unknown client");
        // Its subscription went with it.
        assert_eq!(
            t.server
                .publish("/a", json!(1))
                .await
                .unwrap()
                .local_recipients,
            0
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_session_that_keeps_connecting_does_not_expire() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        // Five connects of 200 ms each: a whole second, five times maxInterval.
        for _ in 0..5 {
            let (_, reply) = t.connect(&id).await;
            assert_eq!(reply["successful"], true);
        }
        assert_eq!(t.server.session_count(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wildcard_subscriptions_match_one_or_any_segments() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let (one, deep, publisher) = (
            t.handshake().await,
            t.handshake().await,
            t.handshake().await,
        );
        assert_eq!(
            t.subscribe(&one, json!("/news/*")).await["successful"],
            true
        );
        let r = t.subscribe(&deep, json!(["/news/**", "/other"])).await;
        assert_eq!(r["successful"], true);
        assert_eq!(r["subscription"], json!(["/news/**", "/other"]));
        for ch in ["/news/sport", "/news/sport/football", "/news", "/other"] {
            assert_eq!(
                t.publish(&publisher, ch, json!(ch)).await["successful"],
                true
            );
        }
        let data = |msgs: Vec<Value>| {
            msgs.into_iter()
                .map(|m| m["data"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            data(t.connect_now(&one).await.0),
            vec![json!("/news/sport")]
        );
        assert_eq!(
            data(t.connect_now(&deep).await.0),
            vec![
                json!("/news/sport"),
                json!("/news/sport/football"),
                json!("/other")
            ]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_and_the_publisher_gets_its_own() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        t.subscribe(&id, json!(["/a/b", "/a/*", "/**"])).await;
        t.publish(&id, "/a/b", json!("once")).await;
        let (msgs, _) = t.connect_now(&id).await;
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["data"], "once");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn service_channels_reach_server_listeners_only() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut listener = t.server.subscribe("/service/echo").unwrap();
        let (sender, watcher) = (t.handshake().await, t.handshake().await);
        t.subscribe(&watcher, json!(["/**", "/service/echo", "/service/*"]))
            .await;
        let r = t.publish(&sender, "/service/echo", json!({"q": 1})).await;
        assert_eq!(r["successful"], true);
        let got: Message = listener.next().await.unwrap();
        assert_eq!(got.data, Some(json!({"q": 1})));
        // A service listener learns who asked, so it can answer that session alone.
        assert_eq!(got.client_id.as_deref(), Some(sender.as_str()));
        assert_eq!(
            t.server
                .deliver(&sender, "/service/echo", json!({"a": 1}))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        assert_eq!(
            t.server
                .deliver("nobody", "/service/echo", json!(1))
                .await
                .unwrap()
                .local_recipients,
            0
        );
        let e = t
            .server
            .deliver(&sender, "/meta/connect", json!(1))
            .await
            .unwrap_err();
        assert_eq!(
            e.bayeux_error().map(ToString::to_string).as_deref(),
            Some("403:/meta/connect:Publish denied"),
            "{e}"
        );
        let (msgs, _) = t.connect_now(&sender).await;
        assert_eq!(msgs[0]["data"], json!({"a": 1}));
        let (msgs, _) = t.connect_now(&watcher).await;
        assert!(msgs.is_empty(), "a service message was broadcast: {msgs:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn meta_and_wildcard_channels_are_protected() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        for sub in [
            json!("/meta/**"),
            json!("/meta/connect"),
            json!(["/ok", "/meta/*"]),
        ] {
            let r = t.subscribe(&id, sub.clone()).await;
            assert_eq!(r["successful"], false, "{sub}");
            assert!(r["error"].as_str().unwrap().starts_with("403:"), "{r}");
        }
        // All or nothing: "/ok" was not subscribed by the refused array.
        assert_eq!(
            t.server
                .publish("/ok", json!(1))
                .await
                .unwrap()
                .local_recipients,
            0
        );
        for bad in [
            json!("no-slash"),
            json!("/a//b"),
            json!("/a/*/b"),
            json!([]),
            json!(5),
        ] {
            let r = t.subscribe(&id, bad.clone()).await;
            assert_eq!(r["successful"], false, "{bad}");
            assert!(
                r["error"].as_str().unwrap().starts_with("400:"),
                "{bad}: {r}"
            );
        }
        for ch in ["/meta/foo", "/meta/handshake/x"] {
            let r = t.publish(&id, ch, json!(1)).await;
            assert_eq!(r["successful"], false);
            assert!(r["error"].as_str().unwrap().starts_with("400:/meta"), "{r}");
        }
        for ch in ["/a/*", "/a/**"] {
            let r = t.publish(&id, ch, json!(1)).await;
            assert_eq!(r["successful"], false);
            assert!(r["error"].as_str().unwrap().starts_with("403:"), "{r}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_batch_is_processed_in_order_with_each_id() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        let replies = t
            .post(json!([
                {"channel": "/meta/subscribe", "clientId": id, "subscription": "/b", "id": "1"},
                {"channel": "/b", "clientId": id, "data": "first", "id": "2"},
                {"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "id": "3"},
                {"channel": "/b", "clientId": id, "data": "second", "id": "4"},
                {"channel": "/meta/unsubscribe", "clientId": id, "subscription": "/b", "id": "5"}
            ]))
            .await;
        // Delivered messages come first, then the replies in request order.
        let (delivered, replies) = replies.split_at(2);
        assert_eq!(delivered[0]["data"], "first");
        assert_eq!(delivered[1]["data"], "second");
        let ids: Vec<&str> = replies.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5"]);
        assert!(replies.iter().all(|r| r["successful"] == true), "{replies:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn queue_overflow_drops_the_newest_by_default() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_max_queue(3)).await;
        let (slow, fine) = (t.handshake().await, t.handshake().await);
        t.subscribe(&slow, json!("/q")).await;
        t.subscribe(&fine, json!("/q")).await;
        for i in 0..5 {
            t.server.publish("/q", json!(i)).await.unwrap();
            // `fine` keeps up, `slow` never connects.
            let (msgs, _) = t.connect_now(&fine).await;
            assert_eq!(msgs[0]["data"], i);
        }
        assert_eq!(t.server.dropped_messages(&slow), Some(2));
        assert_eq!(t.server.dropped_messages(&fine), Some(0));
        let stats = t.server.stats();
        assert_eq!((stats.dropped_messages, stats.overflow_closes), (2, 0));
        let (msgs, reply) = t.connect_now(&slow).await;
        let data: Vec<Value> = msgs.iter().map(|m| m["data"].clone()).collect();
        assert_eq!(data, vec![json!(0), json!(1), json!(2)]);
        assert_eq!(reply["successful"], true);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn queue_overflow_can_drop_the_oldest() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(
            fast_config()
                .with_max_queue(3)
                .with_overflow(OverflowPolicy::DropOldest),
        )
        .await;
        let slow = t.handshake().await;
        t.subscribe(&slow, json!("/q")).await;
        for i in 0..5 {
            t.server.publish("/q", json!(i)).await.unwrap();
        }
        assert_eq!(t.server.dropped_messages(&slow), Some(2));
        assert_eq!(t.server.stats().dropped_messages, 2);
        let (msgs, reply) = t.connect_now(&slow).await;
        let data: Vec<Value> = msgs.iter().map(|m| m["data"].clone()).collect();
        assert_eq!(data, vec![json!(2), json!(3), json!(4)]);
        assert_eq!(reply["successful"], true);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_queue_is_bounded_by_bytes_too() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_max_queue_bytes(4 * 1024)).await;
        let slow = t.handshake().await;
        t.subscribe(&slow, json!("/q")).await;
        let kib = "x".repeat(1024);
        for i in 0..10 {
            t.server
                .publish("/q", json!({"n": i, "pad": kib}))
                .await
                .unwrap();
        }
        // About 1 KiB each: three fit in 4 KiB, the rest were dropped.
        assert_eq!(t.server.dropped_messages(&slow), Some(7));
        let (msgs, _) = t.connect_now(&slow).await;
        assert_eq!(msgs.len(), 3);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_overflow_with_acknowledged_delivery_ends_the_session_and_says_so() {
    timeout(LIMIT, async {
        // drop-newest is the policy, but a session promised every message is never
        // dropped from quietly.
        let t = TestServer::with_config(fast_config().with_max_queue(3)).await;
        let replies = t
            .post(json!({"channel": "/meta/handshake", "version": "1.0",
                         "supportedConnectionTypes": ["long-polling"], "ext": {"ack": true}}))
            .await;
        assert_eq!(replies[0]["ext"]["ack"], true);
        let id = replies[0]["clientId"].as_str().unwrap().to_string();
        t.subscribe(&id, json!("/q")).await;
        let (_, first) = t.connect_now(&id).await;
        assert_eq!(first["ext"]["ack"], 1);
        for i in 0..4 {
            t.server.publish("/q", json!(i)).await.unwrap();
        }
        let replies = t
            .post(json!({"channel": "/meta/connect", "clientId": id,
                         "connectionType": "long-polling", "ext": {"ack": 1}}))
            .await;
        let (msgs, reply) = split_connect(replies);
        // What was held still arrives, with the news that the rest did not.
        let data: Vec<Value> = msgs.iter().map(|m| m["data"].clone()).collect();
        assert_eq!(data, vec![json!(0), json!(1), json!(2)]);
        assert_eq!(reply["successful"], false);
        assert!(
            reply["error"].as_str().unwrap().starts_with("409:"),
            "{reply}"
        );
        assert_eq!(reply["advice"]["reconnect"], "handshake");
        assert_eq!(t.server.session_count(), 0);
        let stats = t.server.stats();
        assert_eq!((stats.dropped_messages, stats.overflow_closes), (1, 1));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn queue_overflow_can_close_the_session() {
    timeout(LIMIT, async {
        let config = fast_config()
            .with_max_queue(2)
            .with_overflow(OverflowPolicy::CloseSession);
        let t = TestServer::with_config(config).await;
        let slow = t.handshake().await;
        t.subscribe(&slow, json!("/q")).await;
        for i in 0..3 {
            t.server.publish("/q", json!(i)).await.unwrap();
        }
        let (_, reply) = t.connect_now(&slow).await;
        assert_eq!(reply["successful"], false);
        assert!(
            reply["error"].as_str().unwrap().starts_with("409:"),
            "{reply}"
        );
        assert_eq!(reply["advice"]["reconnect"], "handshake");
        assert_eq!(t.server.session_count(), 0);
        let stats = t.server.stats();
        assert_eq!((stats.dropped_messages, stats.overflow_closes), (1, 1));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn disconnect_ends_the_session_and_releases_its_connect() {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(30);
        let t = std::sync::Arc::new(TestServer::with_config(config).await);
        let id = t.handshake().await;
        t.connect_now(&id).await;
        let pending = pending_connect(&t, &id).await;
        let r = &t
            .post(json!({"channel": "/meta/disconnect", "clientId": id, "id": "d"}))
            .await[0];
        assert_eq!(r["successful"], true);
        let (_, reply) = pending.await.unwrap();
        assert_eq!(reply["advice"]["reconnect"], "none");
        assert_eq!(t.server.session_count(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn malformed_requests_get_clear_errors_and_the_server_carries_on() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_max_message_size(4096)).await;
        let (status, body) = t.raw("POST", "{not json").await;
        assert_eq!(status, 400);
        assert!(body.contains("malformed JSON"), "{body}");
        assert_eq!(t.raw("POST", "[]").await.0, 400);
        assert_eq!(t.raw("POST", "42").await.0, 400);
        assert_eq!(t.raw("POST", &b"\xff\xfe\xfd"[..]).await.0, 400);
        assert_eq!(t.raw("POST", "[".repeat(5000)).await.0, 413);
        assert_eq!(
            t.raw("POST", "[".repeat(3000) + &"]".repeat(1000)).await.0,
            400
        );
        assert_eq!(t.raw("POST", vec![b' '; 10_000]).await.0, 413);
        assert_eq!(t.raw("GET", "").await.0, 405);
        assert_eq!(t.raw("PUT", "{}").await.0, 405);

        // Well-formed JSON, invalid messages: a Bayeux error each, the rest still served.
        let id = t.handshake().await;
        let replies = t
            .post(json!([
                {"channel": 5, "id": "a"},
                {"id": "b", "clientId": id},
                {"channel": "/x", "clientId": id, "id": "c"},
                "just a string",
                {"channel": "/x", "clientId": id, "data": 1, "id": "d", "ext": 3},
                {"channel": "/x", "clientId": id, "data": 1, "id": "e"}
            ]))
            .await;
        assert_eq!(replies.len(), 6);
        for r in &replies[..5] {
            assert_eq!(r["successful"], false, "{r}");
            assert!(r["error"].as_str().unwrap().starts_with("400:"), "{r}");
        }
        assert_eq!(replies[0]["id"], "a");
        assert_eq!(replies[1]["id"], "b");
        assert_eq!(replies[4]["id"], "d");
        assert_eq!(replies[5]["successful"], true);

        // After all of it, a fresh handshake still works.
        let again = t.handshake().await;
        assert_eq!(t.connect_now(&again).await.1["successful"], true);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_mount_path_and_paths_below_it_are_served_others_are_404() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let post = |path: &str| {
            let req = http::Request::builder()
                .method("POST")
                .uri(t.listening.url(path))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    br#"{"channel":"/meta/handshake","version":"1.0"}"#,
                )))
                .unwrap();
            t.http.request(req)
        };
        assert_eq!(post("/cometd/handshake").await.unwrap().status(), 200);
        assert_eq!(post("/cometd").await.unwrap().status(), 200);
        assert_eq!(post("/cometdx").await.unwrap().status(), 404);
        assert_eq!(post("/").await.unwrap().status(), 404);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_answers_pending_connects_at_once() {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(60);
        let server = Server::new(config);
        let t = std::sync::Arc::new(TestServer::start(server.clone()).await);
        let id = t.handshake().await;
        t.connect_now(&id).await;
        let pending = pending_connect(&t, &id).await;
        server.shutdown();
        let (_, reply) = pending.await.unwrap();
        assert_eq!(reply["successful"], true);
        let r = &t
            .post(json!({"channel": "/meta/handshake", "version": "1.0"}))
            .await[0];
        assert_eq!(r["successful"], false);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn in_process_publish_and_subscribe() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut local = t.server.subscribe("/feed/**").unwrap();
        let client = t.handshake().await;
        t.subscribe(&client, json!("/feed/a")).await;
        assert_eq!(
            t.server
                .publish("/feed/a", json!({"n": 1}))
                .await
                .unwrap()
                .local_recipients,
            2
        );
        assert_eq!(local.next().await.unwrap().data, Some(json!({"n": 1})));
        t.publish(&client, "/feed/b/c", json!("from http")).await;
        let m = local.next().await.unwrap();
        assert_eq!(m.channel.as_deref(), Some("/feed/b/c"));
        assert_eq!(m.client_id, None);
        drop(local);
        assert_eq!(
            t.server
                .publish("/feed/a", json!(2))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        let e = t.server.publish("/feed/*", json!(1)).await.unwrap_err();
        let refusal = e.bayeux_error().expect("a refusal, not a broker failure");
        assert_eq!(refusal.code, 403, "{e}");
        assert_eq!(refusal.to_string(), "403:/feed/*:Publish denied");
        let e = t.server.publish("/meta/x", json!(1)).await.unwrap_err();
        let refusal = e.bayeux_error().expect("a refusal, not a broker failure");
        assert_eq!(refusal.code, 403, "{e}");
        assert_eq!(refusal.to_string(), "403:/meta/x:Publish denied");
        let e = t.server.subscribe("/meta/**").unwrap_err();
        assert_eq!(e.code, 403, "{e}");
        assert_eq!(e.to_string(), "403:/meta/**:Subscribe denied");
    })
    .await
    .unwrap();
}

struct Refuse;

impl SecurityPolicy for Refuse {
    fn subscribe(&self, _: Option<&SessionInfo>, channel: &ChannelName) -> Decision {
        if channel.as_str().starts_with("/secret") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
    fn publish(
        &self,
        session: Option<&SessionInfo>,
        channel: &ChannelName,
        _: &Message,
    ) -> Decision {
        if session.is_some() && channel.as_str() == "/readonly" {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

struct Stamp;

impl Extension for Stamp {
    fn incoming(&self, _: Option<&SessionInfo>, message: &mut Message) -> bool {
        message.ext.as_ref().is_none_or(|e| e.get("drop").is_none())
    }
    fn outgoing(&self, _: Option<&SessionInfo>, message: &mut Message) {
        message
            .ext
            .get_or_insert_with(Default::default)
            .insert("stamp".into(), json!(true));
    }
}

#[tokio::test]
async fn policy_and_extensions_apply_to_http_and_in_process_paths() {
    timeout(LIMIT, async {
        let server = Server::builder()
            .config(fast_config())
            .policy(Refuse)
            .extension(Stamp)
            .build();
        let t = TestServer::start(server).await;
        let id = t.handshake().await;
        let r = t.subscribe(&id, json!("/secret/x")).await;
        assert_eq!(r["error"], "403:/secret/x:Subscribe denied");
        assert_eq!(r["ext"]["stamp"], true);
        let e = t.server.subscribe("/secret/**").unwrap_err();
        assert_eq!(e.code, 403, "{e}");
        assert_eq!(e.to_string(), "403:/secret/**:Subscribe denied");
        let r = t.publish(&id, "/readonly", json!(1)).await;
        assert_eq!(r["error"], "403:/readonly:Publish denied");
        t.subscribe(&id, json!("/readonly")).await;
        assert_eq!(
            t.server
                .publish("/readonly", json!("ok"))
                .await
                .unwrap()
                .local_recipients,
            1
        );
        let (msgs, _) = t.connect_now(&id).await;
        assert_eq!(msgs[0]["ext"]["stamp"], true);
        let r = &t
            .post(json!({"channel": "/readonly", "clientId": id, "data": 1, "ext": {"drop": 1}}))
            .await[0];
        assert_eq!(r["error"], "404::Message deleted");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_broadcast_carries_no_reply_fields_of_its_publisher() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let (publisher, subscriber) = (t.handshake().await, t.handshake().await);
        t.subscribe(&subscriber, json!("/clean")).await;
        let reply = t
            .post(
                json!({"channel": "/clean", "clientId": publisher, "id": "42", "data": 1,
                         "advice": {"reconnect": "none"}, "successful": false,
                         "error": "500::forged", "subscription": "/x", "custom": "kept",
                         "ext": {"app": true}}),
            )
            .await;
        assert_eq!(reply[0]["successful"], true);
        let (msgs, _) = t.connect_now(&subscriber).await;
        let m = msgs[0].as_object().unwrap();
        // A publisher cannot make other clients stop, reconnect or see a failure, nor
        // answer another client's request (the id).
        for forged in [
            "advice",
            "successful",
            "error",
            "subscription",
            "clientId",
            "id",
        ] {
            assert!(!m.contains_key(forged), "{forged} was broadcast: {m:?}");
        }
        assert_eq!(
            (m["data"].clone(), m["custom"].clone(), m["ext"].clone()),
            (json!(1), json!("kept"), json!({"app": true}))
        );
    })
    .await
    .unwrap();
}

/// POSTs `body` with the `BAYEUX_BROWSER` cookie `browser` (as a browser's tabs do)
/// over HTTP/1.1; returns the reply array and the `Set-Cookie` header, if any.
async fn post_from_browser(
    t: &TestServer,
    browser: Option<&str>,
    body: Value,
) -> (Vec<Value>, Option<String>) {
    use http_body_util::BodyExt;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(t.url())
        .header("content-type", "application/json");
    if let Some(b) = browser {
        req = req.header("cookie", format!("BAYEUX_BROWSER={b}"));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(&body).unwrap(),
        )))
        .unwrap();
    let res = t.http.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (serde_json::from_slice(&bytes).unwrap(), cookie)
}

/// Two tabs of one browser (one `BAYEUX_BROWSER` cookie), each with its own session:
/// only one may hold a long poll (`maxSessionsPerBrowser` 1, CometD's default); the
/// other's connect is answered at once with CometD's `multiple-clients` advice, and
/// still carries what was queued for it. Once the first lets go, the second is held.
#[tokio::test]
async fn a_second_session_of_one_browser_is_told_to_poll() {
    timeout(LIMIT, async {
        let mut config = fast_config();
        config.timeout = Duration::from_secs(30);
        config.multi_session_interval = Duration::from_millis(1_500);
        let t = std::sync::Arc::new(TestServer::with_config(config).await);
        let handshake = json!({"channel": "/meta/handshake", "version": "1.0",
                               "supportedConnectionTypes": ["long-polling"]});
        let (replies, cookie) = post_from_browser(&t, None, handshake.clone()).await;
        let cookie = cookie.expect("a handshake without the cookie sets it");
        assert!(
            cookie.contains("; Path=/; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        let browser = cookie
            .strip_prefix("BAYEUX_BROWSER=")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        let tab1 = replies[0]["clientId"].as_str().unwrap().to_string();
        let (replies, cookie) = post_from_browser(&t, Some(&browser), handshake).await;
        assert_eq!(cookie, None, "the browser has its cookie already");
        let tab2 = replies[0]["clientId"].as_str().unwrap().to_string();
        for id in [&tab1, &tab2] {
            t.subscribe(id, json!("/news")).await;
        }
        let connect = |id: &str| {
            json!({"channel": "/meta/connect", "clientId": id,
                   "connectionType": "long-polling"})
        };
        // First connects are answered at once (no advice check then).
        for id in [&tab1, &tab2] {
            post_from_browser(&t, Some(&browser), connect(id)).await;
        }
        // Tab 1 holds its long poll.
        let held = tokio::spawn({
            let (t, b, body) = (t.clone(), browser.clone(), connect(&tab1));
            async move { post_from_browser(&t, Some(&b), body).await.0 }
        });
        eventually("tab 1's connect to be held", || {
            t.server.is_connected(&tab1)
        })
        .await;
        // Tab 2's connect is not held: answered at once, with the advice and with the
        // message queued for it.
        t.server
            .deliver(&tab2, "/direct", json!("first"))
            .await
            .unwrap();
        let (replies, _) = post_from_browser(&t, Some(&browser), connect(&tab2)).await;
        let (messages, reply) = split_connect(replies);
        assert_eq!(reply["successful"], true, "{reply}");
        assert_eq!(
            reply["advice"],
            json!({"reconnect": "retry", "interval": 1500, "multiple-clients": true})
        );
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0]["data"], "first");
        // Tab 1 still holds its long poll, and receives through it.
        assert!(t.server.is_connected(&tab1));
        t.server.publish("/news", json!("news")).await.unwrap();
        let (messages, reply) = split_connect(held.await.unwrap());
        assert_eq!(messages[0]["data"], "news");
        assert!(reply["advice"].get("multiple-clients").is_none(), "{reply}");
        // Another browser is not limited by this one.
        let other = t.handshake().await;
        t.connect(&other).await;
        // Tab 1 holds no long poll now: tab 2's connects are answered as usual, with no
        // multiple-clients advice, and held when there is nothing to send.
        let (replies, _) = post_from_browser(&t, Some(&browser), connect(&tab2)).await;
        let (messages, reply) = split_connect(replies);
        assert_eq!(messages[0]["data"], "news");
        assert!(reply["advice"].get("multiple-clients").is_none(), "{reply}");
        let pending = tokio::spawn({
            let (t, b, body) = (t.clone(), browser.clone(), connect(&tab2));
            async move { post_from_browser(&t, Some(&b), body).await.0 }
        });
        eventually("tab 2's connect to be held", || {
            t.server.is_connected(&tab2)
        })
        .await;
        t.server.publish("/news", json!("second")).await.unwrap();
        let (messages, reply) = split_connect(pending.await.unwrap());
        assert_eq!(messages[0]["data"], "second");
        assert!(reply["advice"].get("multiple-clients").is_none(), "{reply}");
    })
    .await
    .unwrap();
}

/// `maxSessionsPerBrowser` without a limit holds every session's long poll, and a
/// zero `multiSessionInterval` makes the refused connect fail with `reconnect: none`,
/// as CometD does.
#[tokio::test]
async fn the_per_browser_limit_is_configurable() {
    timeout(LIMIT, async {
        for (limit, interval) in [(None, 2_000), (Some(1), 0)] {
            let mut config = fast_config();
            config.timeout = Duration::from_secs(30);
            config.max_sessions_per_browser = limit;
            config.multi_session_interval = Duration::from_millis(interval);
            let t = std::sync::Arc::new(TestServer::with_config(config).await);
            let handshake = json!({"channel": "/meta/handshake", "version": "1.0",
                                   "supportedConnectionTypes": ["long-polling"]});
            let mut ids = Vec::new();
            for _ in 0..2 {
                let (replies, _) = post_from_browser(&t, Some("tabs"), handshake.clone()).await;
                ids.push(replies[0]["clientId"].as_str().unwrap().to_string());
            }
            let connect = |id: &str| {
                json!({"channel": "/meta/connect", "clientId": id,
                       "connectionType": "long-polling"})
            };
            for id in &ids {
                post_from_browser(&t, Some("tabs"), connect(id)).await;
            }
            let _held = tokio::spawn({
                let (t, body) = (t.clone(), connect(&ids[0]));
                async move { post_from_browser(&t, Some("tabs"), body).await }
            });
            eventually("the first connect to be held", || {
                t.server.is_connected(&ids[0])
            })
            .await;
            if limit.is_none() {
                let _second = tokio::spawn({
                    let (t, body) = (t.clone(), connect(&ids[1]));
                    async move { post_from_browser(&t, Some("tabs"), body).await }
                });
                eventually("the second connect to be held too", || {
                    t.server.is_connected(&ids[1])
                })
                .await;
            } else {
                let (replies, _) = post_from_browser(&t, Some("tabs"), connect(&ids[1])).await;
                let (_, reply) = split_connect(replies);
                assert_eq!(reply["successful"], false, "{reply}");
                assert_eq!(
                    reply["advice"],
                    json!({"reconnect": "none", "multiple-clients": true})
                );
            }
            t.server.shutdown();
        }
    })
    .await
    .unwrap();
}

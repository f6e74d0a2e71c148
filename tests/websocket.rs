//! The WebSocket transport over real loopback sockets, driven by a raw WebSocket client
//! (tokio-tungstenite) so that every frame the server sends is seen.

mod common;

use std::time::Duration;

use bayeux::server::{OverflowPolicy, ServerConfig};
use common::ws::{close_code, frame};
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message as Frame};

type Ws = WebSocketStream<TcpStream>;

/// Opens a socket to the test server's Bayeux endpoint, with extra request headers.
async fn open_with(t: &TestServer, headers: &[(&str, &str)]) -> Result<Ws, String> {
    let addr = t.listening.local_addr();
    let mut request = format!("ws://{addr}/cometd").into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

async fn open(t: &TestServer) -> Ws {
    open_with(t, &[]).await.unwrap()
}

async fn send(ws: &mut Ws, body: Value) {
    ws.send(Frame::text(body.to_string())).await.unwrap();
}

async fn handshake(ws: &mut Ws, ext: Option<Value>) -> String {
    let mut m = json!({"channel": "/meta/handshake", "version": "1.0",
                       "supportedConnectionTypes": ["websocket"], "id": "h"});
    if let Some(ext) = ext {
        m["ext"] = ext;
    }
    send(ws, json!([m])).await;
    let reply = frame(ws).await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    reply[0]["clientId"].as_str().unwrap().to_string()
}

async fn subscribe(ws: &mut Ws, id: &str, channel: &str) {
    send(
        ws,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": channel, "id": "s"}]),
    )
    .await;
    let reply = frame(ws).await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
}

fn connect(id: &str, n: u32) -> Value {
    json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket",
            "id": format!("c{n}")}])
}

fn ws_config() -> ServerConfig {
    fast_config().with_timeout(Duration::from_millis(500))
}

#[tokio::test]
async fn the_handshake_offers_websocket_first() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ws_config()).await;
        let replies = t
            .post(json!({"channel": "/meta/handshake", "version": "1.0",
                         "supportedConnectionTypes": ["long-polling", "websocket"]}))
            .await;
        assert_eq!(
            replies[0]["supportedConnectionTypes"],
            json!(["websocket", "long-polling"])
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_are_pushed_at_once_and_the_connect_is_a_heartbeat() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_timeout(Duration::from_secs(30))).await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, None).await;
        subscribe(&mut ws, &id, "/push").await;
        // The first connect is answered at once, with the advice.
        send(&mut ws, connect(&id, 1)).await;
        let first = frame(&mut ws).await;
        assert_eq!(first[0]["channel"], "/meta/connect");
        assert_eq!(first[0]["successful"], true);
        assert_eq!(first[0]["advice"]["timeout"], 30_000);
        // The second is held; a message published meanwhile is pushed without waiting
        // for it (the connect's timeout is 30 s, the test's limit 20 s). The publish in
        // the same frame is answered at once, which shows the connect is held by then.
        let mut batch = connect(&id, 2);
        batch
            .as_array_mut()
            .unwrap()
            .push(json!({"channel": "/elsewhere", "clientId": id, "data": 0, "id": "p"}));
        send(&mut ws, batch).await;
        let published = frame(&mut ws).await;
        assert_eq!(published.len(), 1, "{published:?}");
        assert_eq!(published[0]["id"], "p");
        for i in 0..3 {
            t.server.publish("/push", json!(i)).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            for m in frame(&mut ws).await {
                assert_eq!(m["channel"], "/push", "{m}");
                got.push(m["data"].clone());
            }
        }
        assert_eq!(got, vec![json!(0), json!(1), json!(2)]);
        assert!(t.server.is_connected(&id), "the connect is still held");
    })
    .await
    .unwrap();
}

/// Waits until the server holds a connect for `id`.
async fn pending_until(t: &TestServer, id: &str) {
    eventually("the held connect", || t.server.is_connected(id)).await;
}

#[tokio::test]
async fn a_held_connect_is_answered_after_timeout() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ws_config()).await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, None).await;
        send(&mut ws, connect(&id, 1)).await;
        frame(&mut ws).await;
        let started = std::time::Instant::now();
        send(&mut ws, connect(&id, 2)).await;
        let reply = frame(&mut ws).await;
        assert_eq!(
            (reply[0]["id"].clone(), reply[0]["successful"].clone()),
            (json!("c2"), json!(true))
        );
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(450),
            "answered after {held:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn with_acknowledgements_messages_come_with_the_connect_replies() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_timeout(Duration::from_secs(30))).await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, Some(json!({"ack": true}))).await;
        subscribe(&mut ws, &id, "/acked").await;
        send(
            &mut ws,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket",
                              "ext": {"ack": 0}}]),
        )
        .await;
        let first = frame(&mut ws).await;
        let batch = first[0]["ext"]["ack"].as_u64().unwrap();
        send(
            &mut ws,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket",
                              "ext": {"ack": batch}}]),
        )
        .await;
        pending_until(&t, &id).await;
        t.server.publish("/acked", json!("one")).await.unwrap();
        // One frame: the message, then the connect reply with the next batch number.
        let reply = frame(&mut ws).await;
        assert_eq!(reply.len(), 2, "{reply:?}");
        assert_eq!(reply[0]["data"], "one");
        assert_eq!(reply[1]["channel"], "/meta/connect");
        assert_eq!(reply[1]["ext"]["ack"], batch + 1);
        // Not acknowledged (the client says it only has `batch`): sent again at once.
        send(
            &mut ws,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket",
                              "ext": {"ack": batch}}]),
        )
        .await;
        let again = frame(&mut ws).await;
        assert_eq!(again[0]["data"], "one");
        assert_eq!(again[1]["ext"]["ack"], batch + 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_clients_get_402_with_handshake_advice() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ws_config()).await;
        let mut ws = open(&t).await;
        send(&mut ws, connect("nobody", 1)).await;
        let reply = frame(&mut ws).await;
        assert_eq!(reply[0]["error"], "402::Unknown client");
        assert_eq!(reply[0]["advice"]["reconnect"], "handshake");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn disconnect_ends_the_session_and_closes_the_socket() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ws_config()).await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, None).await;
        send(&mut ws, connect(&id, 1)).await;
        frame(&mut ws).await;
        send(&mut ws, connect(&id, 2)).await; // held
        send(
            &mut ws,
            json!([{"channel": "/meta/disconnect", "clientId": id, "id": "d"}]),
        )
        .await;
        let reply = frame(&mut ws).await;
        assert_eq!(
            (reply[0]["channel"].clone(), reply[0]["successful"].clone()),
            (json!("/meta/disconnect"), json!(true))
        );
        // The held connect is answered as well, telling the client not to come back.
        let held = frame(&mut ws).await;
        assert_eq!(held[0]["id"], "c2", "{held:?}");
        assert_eq!(held[0]["advice"]["reconnect"], "none");
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Normal));
        assert_eq!(t.server.session_count(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_dropped_socket_leaves_the_session_to_come_back_within_max_interval() {
    timeout(LIMIT, async {
        let t =
            TestServer::with_config(ws_config().with_max_interval(Duration::from_secs(5))).await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, None).await;
        subscribe(&mut ws, &id, "/kept").await;
        send(&mut ws, connect(&id, 1)).await;
        frame(&mut ws).await;
        drop(ws);
        eventually("the socket to let go", || !t.server.is_connected(&id)).await;
        // Published while the client is away: queued for it.
        t.server
            .publish("/kept", json!("while away"))
            .await
            .unwrap();
        assert_eq!(t.server.session_count(), 1);
        let mut ws = open(&t).await;
        send(&mut ws, connect(&id, 2)).await;
        let mut got = frame(&mut ws).await;
        if got[0]["channel"] == "/meta/connect" {
            got = frame(&mut ws).await;
        }
        assert_eq!(got[0]["data"], "while away", "{got:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_frames_get_close_codes_and_cost_nobody_a_message() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ws_config().with_max_message_size(64 * 1024)).await;
        // A well-behaved socket receives every message throughout.
        let mut good = open(&t).await;
        let id = handshake(&mut good, None).await;
        subscribe(&mut good, &id, "/watch").await;
        send(&mut good, connect(&id, 0)).await;
        frame(&mut good).await;
        send(&mut good, connect(&id, 1)).await;
        let mut n = 0;
        // Publishes one message and reads until it arrives, answering the heartbeat
        // connect replies as a real client does.
        let mut check = async |good: &mut Ws| {
            t.server.publish("/watch", json!(n)).await.unwrap();
            loop {
                let got = frame(good).await;
                if let Some(m) = got.iter().find(|m| m["channel"] == "/watch") {
                    assert_eq!(m["data"], n);
                    break;
                }
                assert_eq!(got[0]["channel"], "/meta/connect");
                send(good, connect(&id, 2)).await;
            }
            n += 1;
        };

        let mut ws = open(&t).await;
        ws.send(Frame::Binary(Bytes::from_static(b"[1]")))
            .await
            .unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
        check(&mut good).await;

        let mut ws = open(&t).await;
        ws.send(Frame::text("{not json")).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
        check(&mut good).await;

        let mut ws = open(&t).await;
        let big = format!(
            "[{{\"channel\":\"/x\",\"data\":\"{}\"}}]",
            "a".repeat(100 * 1024)
        );
        ws.send(Frame::text(big)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
        check(&mut good).await;

        let mut ws = open(&t).await;
        let batch: Vec<Value> = (0..1_001)
            .map(|_| json!({"channel": "/meta/connect"}))
            .collect();
        ws.send(Frame::text(Value::Array(batch).to_string()))
            .await
            .unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Policy));
        check(&mut good).await;

        let mut ws = open(&t).await;
        for _ in 0..200 {
            if ws
                .send(Frame::Ping(Bytes::from_static(b"p")))
                .await
                .is_err()
            {
                break;
            }
        }
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Policy));
        check(&mut good).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_idle_socket_is_closed() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(
            fast_config()
                .with_timeout(Duration::from_millis(200))
                .with_max_interval(Duration::from_millis(200)),
        )
        .await;
        let mut ws = open(&t).await;
        let started = std::time::Instant::now();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Away));
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_origin_rules_apply_to_the_upgrade() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(ws_config()).await;
        let host = t.listening.local_addr().to_string();
        let own = format!("http://{host}");
        assert!(
            open_with(&t, &[("origin", "https://evil.example")])
                .await
                .is_err()
        );
        assert!(open_with(&t, &[("origin", &own)]).await.is_ok());
        let t = TestServer::with_config(
            ws_config().with_cors_origins(vec!["https://app.example".into()]),
        )
        .await;
        assert!(
            open_with(&t, &[("origin", "https://app.example")])
                .await
                .is_ok()
        );
        let refused = open_with(&t, &[("origin", "https://evil.example")])
            .await
            .unwrap_err();
        assert!(refused.contains("403"), "{refused}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_overflow_on_a_socket_follows_the_policy() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(
            fast_config()
                .with_max_queue(2)
                .with_overflow(OverflowPolicy::CloseSession)
                .with_timeout(Duration::from_secs(30)),
        )
        .await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, None).await;
        subscribe(&mut ws, &id, "/q").await;
        // No connect yet, so nothing is pushed: the queue fills and overflows.
        for i in 0..3 {
            t.server.publish("/q", json!(i)).await.unwrap();
        }
        send(&mut ws, connect(&id, 1)).await;
        let reply = frame(&mut ws).await;
        let connect_reply = reply
            .iter()
            .find(|m| m["channel"] == "/meta/connect")
            .unwrap();
        assert!(
            connect_reply["error"].as_str().unwrap().starts_with("409:"),
            "{reply:?}"
        );
        assert_eq!(connect_reply["advice"]["reconnect"], "handshake");
        assert_eq!(t.server.stats().overflow_closes, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn per_user_delivery_and_the_policy_work_on_a_socket() {
    use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
    timeout(LIMIT, async {
        let app = DemoApp::new(
            ws_config(),
            Access::demo().trusting_ext_user_id(),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listening.local_addr();
        let open_as = async |user: &str| {
            let request = format!("ws://{addr}/cometd").into_client_request().unwrap();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
            let id = handshake(&mut ws, Some(json!({"userId": user}))).await;
            subscribe(&mut ws, &id, "/v2/me/*").await;
            send(&mut ws, connect(&id, 1)).await;
            frame(&mut ws).await;
            send(&mut ws, connect(&id, 2)).await;
            (ws, id)
        };
        let (mut alice, alice_id) = open_as("alice").await;
        let (mut bob, bob_id) = open_as("bob").await;
        eventually("held connects", || {
            app.server().is_connected(&alice_id) && app.server().is_connected(&bob_id)
        })
        .await;
        // Clients may not publish on /v2/**: the policy applies on the socket too.
        send(
            &mut bob,
            json!([{"channel": "/v2/me/emails", "clientId": bob_id, "data": {}, "id": "p"}]),
        )
        .await;
        let refused = frame(&mut bob).await;
        assert_eq!(refused[0]["successful"], false, "{refused:?}");
        let reference = app
            .workbin()
            .assign(
                &bayeux::workbin::parse_body(
                    "alice",
                    "wb1",
                    br#"{"operationName":"AddEmail","uri":"x/E1"}"#,
                )
                .unwrap(),
            )
            .await
            .unwrap();
        let mut channels = Vec::new();
        while channels.len() < 2 {
            for m in frame(&mut alice).await {
                if m["channel"] == "/meta/connect" {
                    // The heartbeat: connect again, as a client does.
                    send(&mut alice, connect(&alice_id, 3)).await;
                    continue;
                }
                assert_eq!(m["data"]["referenceId"], reference, "{m}");
                channels.push(m["channel"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(channels, vec!["/v2/me/workbins", "/v2/me/emails"]);
        // Bob got nothing: his next frame is his heartbeat connect reply.
        let next = frame(&mut bob).await;
        assert_eq!(next[0]["channel"], "/meta/connect", "{next:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_large_burst_is_split_into_bounded_frames_in_order() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config().with_timeout(Duration::from_secs(30))).await;
        let mut ws = open(&t).await;
        let id = handshake(&mut ws, None).await;
        subscribe(&mut ws, &id, "/burst").await;
        // Queued before the first connect, so they go out together as one burst.
        let kib = "x".repeat(1024);
        for i in 0..100 {
            t.server
                .publish("/burst", json!({"n": i, "pad": kib}))
                .await
                .unwrap();
        }
        send(&mut ws, connect(&id, 1)).await;
        let mut got = Vec::new();
        let mut frames = 0;
        while got.len() < 100 {
            let Frame::Text(text) = ws.next().await.unwrap().unwrap() else {
                continue;
            };
            frames += 1;
            assert!(text.len() <= 33 * 1024, "a frame of {} bytes", text.len());
            let batch: Vec<Value> = serde_json::from_str(&text).unwrap();
            got.extend(
                batch
                    .iter()
                    .filter(|m| m["channel"] == "/burst")
                    .map(|m| m["data"]["n"].as_u64().unwrap()),
            );
        }
        assert_eq!(got, (0..100).collect::<Vec<u64>>());
        assert!(frames >= 4, "100 KiB in {frames} frames");
    })
    .await
    .unwrap();
}

//! The workbin demo end to end: the REST endpoint, per-agent notifications over Bayeux,
//! credentials, and every failure case.

mod common;

use std::time::Duration;

use bayeux::client::{Client, Subscription, basic_authorization};
use bayeux::server::Listening;
use bayeux::workbin::{Access, DemoApp, UserDirectory, WorkbinConfig};
use bytes::Bytes;
use common::{LIMIT, fast_config};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::time::timeout;

struct Demo {
    app: DemoApp,
    listening: Listening,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

impl Demo {
    async fn start(access: Access) -> Demo {
        let config = WorkbinConfig {
            max_body: 1024,
            ..WorkbinConfig::default()
        };
        let app = DemoApp::new(fast_config(), access, config, "/cometd");
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Demo {
            app,
            listening,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn base(&self) -> String {
        self.listening.url("")
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
        auth: Option<(&str, &str)>,
    ) -> (u16, Value, http::HeaderMap) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base()));
        if let Some((u, p)) = auth {
            req = req.header("authorization", basic_authorization(u, p));
        }
        let res = self
            .http
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn assign(&self, user: &str, op: &str, uri: &str) -> u64 {
        self.assign_as(user, op, uri, None).await
    }

    async fn assign_as(&self, user: &str, op: &str, uri: &str, auth: Option<(&str, &str)>) -> u64 {
        let body = json!({"operationName": op, "uri": uri}).to_string();
        let (status, reply, _) = self
            .request(
                "POST",
                &format!("/api/v2/users/{user}/workbins/wb1"),
                body,
                auth,
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["statusCode"], 0);
        reply["referenceId"].as_u64().unwrap()
    }

    /// An agent desktop: a client with Basic credentials subscribed to `pattern`.
    async fn agent(&self, user: &str, pattern: &str) -> (Client, Subscription) {
        let client = Client::builder(&self.listening.url("/cometd"))
            .basic_auth(user, "pw")
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let sub = client.subscribe(pattern).await.unwrap();
        (client, sub)
    }
}

async fn next(sub: &mut Subscription) -> (String, Value) {
    let m = sub.next().await.expect("stream ended");
    (m.channel_str().to_string(), m.data.unwrap())
}

#[tokio::test]
async fn each_operation_publishes_exactly_the_documented_messages() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::demo()).await;
        let (_c, mut inbox) = demo.agent("agent1", "/v2/me/*").await;
        let mut last = 0;
        for (op, channel, message_type, key, collection) in [
            (
                "AddEmail",
                "/v2/me/emails",
                "EmailStateChangeMessage",
                "email",
                "emails",
            ),
            (
                "AddChat",
                "/v2/me/chats",
                "ChatStateChangeMessage",
                "chat",
                "chats",
            ),
            (
                "AddWorkitem",
                "/v2/me/workitems",
                "WorkitemStateChangeMessage",
                "workitem",
                "workitems",
            ),
            (
                "AddInteraction",
                "/v2/me/workitems",
                "WorkitemStateChangeMessage",
                "workitem",
                "workitems",
            ),
        ] {
            let reference = demo.assign("agent1", op, ".../FE7978FEWFE").await;
            assert!(reference > last, "referenceId must increase");
            last = reference;

            let (ch, workbin) = next(&mut inbox).await;
            assert_eq!(ch, "/v2/me/workbins");
            assert_eq!(workbin["messageType"], "WorkbinStateChangeMessage");
            assert_eq!(workbin["notificationType"], "StatusChange");
            assert_eq!(workbin["referenceId"], reference);
            assert_eq!(workbin["id"], "wb1");
            assert_eq!(workbin["workbinUserId"], "agent1");
            assert_eq!(workbin["interactionId"], "FE7978FEWFE");

            let (ch, item) = next(&mut inbox).await;
            assert_eq!(ch, channel);
            assert_eq!(item["messageType"], message_type);
            assert_eq!(item["notificationType"], "StatusChange");
            assert_eq!(item["referenceId"], reference);
            let object = &item[key];
            assert_eq!(object["id"], "FE7978FEWFE");
            assert_eq!(
                object["uri"],
                format!("{}/api/v2/{collection}/FE7978FEWFE", demo.base())
            );
            assert_eq!(object["state"], "InWorkbin");
            assert!(object["receivedDate"].as_str().unwrap().len() >= 24);
            assert!(object["capabilities"].is_array());
            assert!(object["userData"].is_object());
            assert_eq!(object["workbinId"], "wb1");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn failures_return_errors_and_publish_nothing() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::demo()).await;
        let (_c, mut inbox) = demo.agent("agent1", "/v2/me/*").await;
        let path = "/api/v2/users/agent1/workbins/wb1";
        // (method, path, body, HTTP status, statusCode): the README's table.
        let cases: Vec<(&str, &str, Bytes, u16, u64)> = vec![
            ("POST", path, Bytes::from_static(b"{not json"), 400, 3),
            ("POST", path, Bytes::from_static(b"[]"), 400, 3),
            (
                "POST",
                path,
                Bytes::from_static(br#"{"operationName":"AddFax","uri":"a/b"}"#),
                400,
                2,
            ),
            (
                "POST",
                path,
                Bytes::from_static(br#"{"operationName":"AddEmail"}"#),
                400,
                1,
            ),
            (
                "POST",
                path,
                Bytes::from_static(br#"{"operationName":"AddEmail","uri":""}"#),
                400,
                1,
            ),
            (
                "POST",
                path,
                Bytes::from_static(br#"{"operationName":"AddEmail","uri":42}"#),
                400,
                2,
            ),
            (
                "POST",
                path,
                Bytes::from_static(br#"{"operationName":true,"uri":"a/b"}"#),
                400,
                2,
            ),
            (
                "POST",
                path,
                Bytes::from_static(br#"{"uri":"a/b"}"#),
                400,
                1,
            ),
            ("POST", path, Bytes::from(vec![b' '; 4096]), 413, 6),
            ("GET", path, Bytes::new(), 405, 5),
            ("DELETE", path, Bytes::new(), 405, 5),
            (
                "POST",
                "/api/v2/users/agent1/workbins",
                Bytes::from_static(b"{}"),
                404,
                4,
            ),
            ("POST", "/api/v2/nothing", Bytes::from_static(b"{}"), 404, 4),
        ];
        for (method, p, body, expected, expected_code) in cases {
            let (status, reply, headers) = demo.request(method, p, body.clone(), None).await;
            assert_eq!(status, expected, "{method} {p} {body:?}: {reply}");
            assert_eq!(
                reply["statusCode"].as_u64(),
                Some(expected_code),
                "{method} {p} {body:?}: {reply}"
            );
            assert!(reply.get("referenceId").is_none(), "{reply}");
            assert!(!reply["statusMessage"].as_str().unwrap().is_empty());
            if expected == 405 {
                assert_eq!(headers["allow"], "POST");
            }
        }
        // Nothing was published and no referenceId was used: the next success is the
        // first thing the agent sees.
        let reference = demo.assign("agent1", "AddChat", "x/ok").await;
        assert_eq!(reference, 1);
        assert_eq!(next(&mut inbox).await.1["referenceId"], 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn agents_are_isolated_whatever_they_subscribe_to() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::demo()).await;
        let (_a, mut alice) = demo.agent("alice", "/v2/me/*").await;
        let (bob, mut bob_me) = demo.agent("bob", "/v2/me/*").await;
        let mut bob_v2 = bob.subscribe("/v2/**").await.unwrap();
        let mut bob_all = bob.subscribe("/**").await.unwrap();
        let mut bob_exact = bob.subscribe("/v2/me/emails").await.unwrap();

        let for_alice = demo.assign("alice", "AddEmail", "x/A1").await;
        assert_eq!(next(&mut alice).await.1["referenceId"], for_alice);
        assert_eq!(next(&mut alice).await.1["referenceId"], for_alice);
        let for_bob = demo.assign("bob", "AddEmail", "x/B1").await;
        // Bob's first message on every subscription is his own: he never saw Alice's.
        for sub in [&mut bob_me, &mut bob_v2, &mut bob_all] {
            assert_eq!(next(sub).await.1["referenceId"], for_bob);
            assert_eq!(next(sub).await.1["referenceId"], for_bob);
        }
        let (ch, data) = next(&mut bob_exact).await;
        assert_eq!(
            (ch.as_str(), &data["referenceId"]),
            ("/v2/me/emails", &json!(for_bob))
        );
        // And no client can forge notifications on /v2/**.
        let e = bob
            .publish("/v2/me/emails", json!({"referenceId": 999}))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), bayeux::client::ErrorKind::Refused, "{e}");
        assert_eq!(
            e.bayeux_error().map(ToString::to_string).as_deref(),
            Some("403:/v2/me/emails:Publish denied")
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn several_sessions_of_one_agent_each_receive() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::demo()).await;
        let (_d1, mut desk) = demo.agent("agent7", "/v2/me/workitems").await;
        let (_d2, mut phone) = demo.agent("agent7", "/v2/me/*").await;
        let reference = demo.assign("agent7", "AddWorkitem", "x/W1").await;
        let (ch, data) = next(&mut desk).await;
        assert_eq!(
            (ch.as_str(), &data["referenceId"]),
            ("/v2/me/workitems", &json!(reference))
        );
        let (ch, _) = next(&mut phone).await;
        assert_eq!(ch, "/v2/me/workbins");
        let (ch, data) = next(&mut phone).await;
        assert_eq!(
            (ch.as_str(), &data["referenceId"]),
            ("/v2/me/workitems", &json!(reference))
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_assignments_reach_the_right_agent_once_in_order() {
    timeout(LIMIT, async {
        let demo = std::sync::Arc::new(Demo::start(Access::demo()).await);
        let (_a, mut a) = demo.agent("agentA", "/v2/me/*").await;
        let (_b, mut b) = demo.agent("agentB", "/v2/me/*").await;
        // Two supervisors assign concurrently, 40 interactions each, alternating agents.
        let mut tasks = Vec::new();
        for s in 0..2 {
            let demo = demo.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..40 {
                    let agent = if (i + s) % 2 == 0 { "agentA" } else { "agentB" };
                    let r = demo.assign(agent, "AddEmail", &format!("x/S{s}N{i}")).await;
                    mine.push((agent, r));
                }
                mine
            }));
        }
        let mut expected_a = Vec::new();
        let mut expected_b = Vec::new();
        for t in tasks {
            for (agent, r) in t.await.unwrap() {
                if agent == "agentA" {
                    expected_a.push(r)
                } else {
                    expected_b.push(r)
                }
            }
        }
        expected_a.sort();
        expected_b.sort();
        // A sentinel per agent marks the end: anything extra would arrive before it.
        let end_a = demo.assign("agentA", "AddChat", "x/ENDA").await;
        let end_b = demo.assign("agentB", "AddChat", "x/ENDB").await;
        expected_a.push(end_a);
        expected_b.push(end_b);
        for (sub, expected) in [(&mut a, expected_a), (&mut b, expected_b)] {
            let mut got = Vec::new();
            loop {
                let (ch1, d1) = next(sub).await;
                let (ch2, d2) = next(sub).await;
                assert_eq!(ch1, "/v2/me/workbins");
                assert_ne!(ch2, "/v2/me/workbins");
                assert_eq!(d1["referenceId"], d2["referenceId"]);
                let r = d1["referenceId"].as_u64().unwrap();
                got.push(r);
                if r == *expected.last().unwrap() {
                    break;
                }
            }
            // In order of referenceId (each supervisor's own assignments are sequential,
            // and the server delivers each agent's messages in the order it made them).
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(got, sorted, "out of order");
            assert_eq!(
                got, expected,
                "missing, duplicated or misdelivered notifications"
            );
        }
    })
    .await
    .unwrap();
}

const USERS: &str = "boss:bosspw:supervisor\nagent1:pw:agent\n";

#[tokio::test]
async fn checked_mode_lets_only_supervisors_assign() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::checked(UserDirectory::parse(USERS).unwrap())).await;
        let path = "/api/v2/users/agent1/workbins/wb1";
        let body = r#"{"operationName":"AddEmail","uri":"x/E1"}"#;
        let (status, reply, headers) = demo.request("POST", path, body, None).await;
        assert_eq!((status, &reply["statusCode"]), (401, &json!(7)));
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        assert_eq!(
            demo.request("POST", path, body, Some(("boss", "wrong")))
                .await
                .0,
            401
        );
        let (status, reply, _) = demo
            .request("POST", path, body, Some(("agent1", "pw")))
            .await;
        assert_eq!((status, &reply["statusCode"]), (403, &json!(8)));

        // Agents need their real password to open a session.
        let wrong = Client::builder(&demo.listening.url("/cometd"))
            .basic_auth("agent1", "nope")
            .build()
            .unwrap();
        // Refused with `reconnect: none`: the client is closed, the refusal kept.
        let e = wrong.handshake().await.unwrap_err();
        assert_eq!(e.kind(), bayeux::client::ErrorKind::Closed, "{e}");
        assert_eq!(
            e.bayeux_error().map(ToString::to_string).as_deref(),
            Some("403::Handshake denied: invalid credentials")
        );
        let anonymous = Client::builder(&demo.listening.url("/cometd"))
            .build()
            .unwrap();
        let e = anonymous.handshake().await.unwrap_err();
        assert_eq!(e.kind(), bayeux::client::ErrorKind::Closed, "{e}");
        assert_eq!(
            e.bayeux_error().map(ToString::to_string).as_deref(),
            Some("403::Handshake denied: credentials required")
        );
        let (_c, mut inbox) = demo.agent("agent1", "/v2/me/emails").await;
        let reference = demo
            .assign_as("agent1", "AddEmail", "x/E2", Some(("boss", "bosspw")))
            .await;
        assert_eq!(next(&mut inbox).await.1["referenceId"], reference);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_trusted_ext_user_id_names_the_session_user() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::demo().trusting_ext_user_id()).await;
        let mut ext = serde_json::Map::new();
        ext.insert("userId".into(), json!("agent9"));
        let client = Client::builder(&demo.listening.url("/cometd"))
            .handshake_ext(ext)
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let mut inbox = client.subscribe("/v2/me/chats").await.unwrap();
        let id = client.client_id().unwrap();
        assert_eq!(
            demo.app.server().session_info(&id).unwrap().user.as_deref(),
            Some("agent9")
        );
        let reference = demo.assign("agent9", "AddChat", "x/C1").await;
        assert_eq!(next(&mut inbox).await.1["referenceId"], reference);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_slow_body_gets_408_and_publishes_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    timeout(LIMIT, async {
        let config = fast_config()
            .with_body_timeout(Duration::from_millis(200));
        let app = DemoApp::new(config, Access::demo(), WorkbinConfig::default(), "/cometd");
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut tcp = tokio::net::TcpStream::connect(listening.local_addr()).await.unwrap();
        tcp.write_all(b"POST /api/v2/users/a/workbins/w HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n{\"operationName\":").await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tcp.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains(r#""statusCode":9"#), "{text}");
    })
    .await
    .unwrap();
}

/// The web demo's files and stats beside the API: `/` is the page (with its policy),
/// `/stats` JSON counters that follow the server, and an unknown path is still 404.
#[tokio::test]
async fn the_web_demo_is_served_beside_the_api() {
    timeout(LIMIT, async {
        let demo = Demo::start(Access::demo()).await;
        let get = |path: &'static str| {
            let req = http::Request::builder()
                .uri(format!("{}{path}", demo.base()))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let http = demo.http.clone();
            async move {
                let res = http.request(req).await.unwrap();
                let (parts, body) = res.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                (parts.status.as_u16(), parts.headers, bytes)
            }
        };
        let (status, headers, page) = get("/").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/html;charset=UTF-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(page.contains(r#"<meta name="bayeux-path" content="/cometd">"#));
        let (status, headers, _) = get("/bayeux.js").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/javascript;charset=UTF-8");
        let (_, _, stats) = get("/stats").await;
        let before: Value = serde_json::from_slice(&stats).unwrap();
        let (_agent, mut sub) = demo.agent("agent1", "/v2/me/*").await;
        demo.assign("agent1", "AddEmail", ".../E1").await;
        next(&mut sub).await;
        next(&mut sub).await;
        let (_, _, stats) = get("/stats").await;
        let after: Value = serde_json::from_slice(&stats).unwrap();
        assert_eq!(after["sessions"], 1);
        assert!(
            after["messagesDelivered"].as_u64() > before["messagesDelivered"].as_u64(),
            "{before} then {after}"
        );
        for path in ["/index.htm", "/app.jsx", "/web/app.js"] {
            let (status, _, _) = get(path).await;
            assert_eq!(status, 404, "{path}");
        }
    })
    .await
    .unwrap();
}

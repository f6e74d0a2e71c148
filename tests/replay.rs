//! Replay (Salesforce's wire format) on a single node: history then live without a gap
//! or a duplicate, per-user history, the errors, the client's automatic resume after an
//! expired session or a restarted server, and the workbin scenario of issue 17.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux::client::{Client, ReplayFrom, Subscription, TransportChoice};
use bayeux::protocol::ChannelName;
use bayeux::server::{ReplayConfig, Server, ServerConfig};
use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
use common::{LIMIT, TestServer, eventually, fast_config};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

fn replay_config(patterns: &[&str], max: usize) -> ServerConfig {
    let patterns = patterns
        .iter()
        .map(|p| ChannelName::parse(p).unwrap())
        .collect();
    fast_config().with_replay(Some(ReplayConfig {
        max_per_channel: max,
        ..ReplayConfig::new(patterns)
    }))
}

fn replay_id(m: &Value) -> i64 {
    m["data"]["event"]["replayId"]
        .as_i64()
        .unwrap_or_else(|| panic!("no replayId in {m}"))
}

async fn next(sub: &mut Subscription) -> Value {
    let m = timeout(LIMIT, sub.next())
        .await
        .expect("a message in time")
        .expect("stream open");
    serde_json::to_value(&m).unwrap()
}

/// Handshakes over raw HTTP with `ext`; returns the clientId and the reply.
async fn handshake(t: &TestServer, ext: Value) -> (String, Value) {
    let replies = t
        .post(json!({"channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["long-polling"], "ext": ext}))
        .await;
    assert_eq!(replies[0]["successful"], true, "{replies:?}");
    (
        replies[0]["clientId"].as_str().unwrap().to_string(),
        replies[0].clone(),
    )
}

async fn subscribe_ext(t: &TestServer, client_id: &str, channel: &str, ext: Value) -> Value {
    t.post(json!({"channel": "/meta/subscribe", "clientId": client_id,
                  "subscription": channel, "ext": ext}))
        .await[0]
        .clone()
}

#[tokio::test]
async fn the_handshake_says_replay_only_when_asked_and_configured() {
    timeout(LIMIT, async {
        let on = TestServer::with_config(replay_config(&["/orders/**"], 10)).await;
        let (_, reply) = handshake(&on, json!({"replay": true})).await;
        assert_eq!(reply["ext"]["replay"], true, "{reply}");
        let (_, reply) = handshake(&on, json!({})).await;
        assert!(reply["ext"].get("replay").is_none(), "{reply}");
        let off = TestServer::with_config(fast_config()).await;
        let (_, reply) = handshake(&off, json!({"replay": true})).await;
        assert!(reply["ext"].get("replay").is_none(), "{reply}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn history_then_live_with_ids_and_plain_subscribers_get_live_only() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(replay_config(&["/orders/**"], 100)).await;
        for n in 0..5 {
            t.server
                .publish("/orders/new", json!({"n": n}))
                .await
                .unwrap();
        }
        // A replaying client: everything retained, then live.
        let client = Client::builder(&t.url()).build().unwrap();
        client.handshake().await.unwrap();
        let mut all = client
            .subscribe_from("/orders/*", ReplayFrom::All)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for n in 0..5 {
            let m = next(&mut all).await;
            assert_eq!(m["data"]["n"], n);
            ids.push(replay_id(&m));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        // From an id: what came after it.
        let after = Client::builder(&t.url()).build().unwrap();
        after.handshake().await.unwrap();
        let mut from_two = after
            .subscribe_from("/orders/new", ReplayFrom::After(ids[2]))
            .await
            .unwrap();
        assert_eq!(next(&mut from_two).await["data"]["n"], 3);
        assert_eq!(next(&mut from_two).await["data"]["n"], 4);
        // A plain subscriber (no ext.replay) and a `New` one: live only.
        let plain = Client::builder(&t.url()).build().unwrap();
        plain.handshake().await.unwrap();
        let mut live = plain.subscribe("/orders/new").await.unwrap();
        let mut new = plain
            .subscribe_from("/orders/*", ReplayFrom::New)
            .await
            .unwrap();
        t.server
            .publish("/orders/new", json!({"n": 5}))
            .await
            .unwrap();
        for sub in [&mut all, &mut from_two, &mut live, &mut new] {
            let m = next(sub).await;
            assert_eq!(m["data"]["n"], 5, "{m}");
            assert!(replay_id(&m) > ids[4]);
        }
        // Data that is not an object: delivered live, with no id, and not retained.
        t.server
            .publish("/orders/new", json!("text"))
            .await
            .unwrap();
        let m = next(&mut live).await;
        assert_eq!(m["data"], "text");
        let late = Client::builder(&t.url()).build().unwrap();
        late.handshake().await.unwrap();
        let mut everything = late
            .subscribe_from("/orders/**", ReplayFrom::All)
            .await
            .unwrap();
        for n in 0..6 {
            assert_eq!(next(&mut everything).await["data"]["n"], n);
        }
        t.server
            .publish("/orders/new", json!({"n": "marker"}))
            .await
            .unwrap();
        assert_eq!(next(&mut everything).await["data"]["n"], "marker");
        // The client tracked the last id it was handed on each replaying pattern.
        assert_eq!(next(&mut all).await["data"], "text");
        let marker = next(&mut all).await;
        assert_eq!(client.replay_ids()["/orders/*"], replay_id(&marker));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ids_that_cannot_be_replayed_and_malformed_requests_get_a_clear_400() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(replay_config(&["/orders/**"], 3)).await;
        let (cid, _) = handshake(&t, json!({"replay": true})).await;
        // Six messages; the channel keeps the last three.
        let mut ids = Vec::new();
        let watcher = t.handshake().await;
        t.subscribe(&watcher, json!("/orders/a")).await;
        for n in 0..6 {
            t.server.publish("/orders/a", json!({"n": n})).await.unwrap();
        }
        let (delivered, _) = t.connect_now(&watcher).await;
        ids.extend(delivered.iter().map(replay_id));
        assert_eq!(ids.len(), 6);

        let refused = |reply: &Value, id: i64, why: &str| {
            assert_eq!(reply["successful"], false, "{reply}");
            let error = reply["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!("400:/orders/a:The replayId {{{id}}} you provided was invalid ({why})")),
                "{error}"
            );
            assert!(
                error.ends_with("Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."),
                "{error}"
            );
        };
        // Retention exceeded: the messages after ids[1] are gone.
        let reply = subscribe_ext(&t, &cid, "/orders/a", json!({"replay": {"/orders/a": ids[1]}})).await;
        refused(&reply, ids[1], "the messages after it are no longer retained");
        // Unknown: never assigned.
        let unknown = ids[5] + 1000;
        let reply = subscribe_ext(&t, &cid, "/orders/a", json!({"replay": {"/orders/a": unknown}})).await;
        refused(&reply, unknown, "no message has this replayId");
        // Below -2: not a replay id.
        let reply = subscribe_ext(&t, &cid, "/orders/a", json!({"replay": {"/orders/a": -3}})).await;
        refused(&reply, -3, "it is not a replay id");
        // Malformed.
        for (ext, needle) in [
            (json!({"replay": "all"}), "Malformed ext.replay: a string instead of an object"),
            (json!({"replay": {"/orders/a": "12"}}), "Malformed ext.replay: the entry for /orders/a is a string"),
            (json!({"replay": {"/orders/a": 1.5}}), "not a 64-bit integer"),
        ] {
            let reply = subscribe_ext(&t, &cid, "/orders/a", ext.clone()).await;
            assert_eq!(reply["successful"], false, "{reply}");
            let error = reply["error"].as_str().unwrap();
            assert!(error.starts_with("400:") && error.contains(needle), "{ext}: {error}");
        }
        // None of the refused subscribes subscribed: a publish reaches nobody there.
        let receipt = t.server.publish("/orders/a", json!({"n": 6})).await.unwrap();
        assert_eq!(receipt.local_recipients, 1, "the watcher only");
        // After the last id dropped (the channel now holds n = 4, 5, 6): fine; the
        // reply says where the subscription joined the log.
        let reply = subscribe_ext(&t, &cid, "/orders/a", json!({"replay": {"/orders/a": ids[3], "/other": 1}})).await;
        assert_eq!(reply["successful"], true, "{reply}");
        let position = reply["ext"]["replay"]["/orders/a"].as_i64().unwrap();
        assert_eq!(position, ids[5] + 1);
        let (delivered, _) = t.connect_now(&cid).await;
        let got: Vec<i64> = delivered.iter().map(|m| m["data"]["n"].as_i64().unwrap()).collect();
        assert_eq!(got, vec![4, 5, 6]);
        // The latest id: nothing missed, nothing sent.
        let (other, _) = handshake(&t, json!({"replay": true})).await;
        let reply = subscribe_ext(&t, &other, "/orders/a", json!({"replay": {"/orders/a": position}})).await;
        assert_eq!(reply["successful"], true, "{reply}");
        t.server.publish("/orders/a", json!({"n": 7})).await.unwrap();
        let (delivered, _) = t.connect_now(&other).await;
        assert_eq!(delivered.len(), 1, "{delivered:?}");
        assert_eq!(delivered[0]["data"]["n"], 7);
    })
    .await
    .unwrap();
}

/// Replaying subscribes while a publisher runs flat out: each subscriber gets every
/// message from the start, once, in replay-id order (history and live joined under the
/// log's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_joins_live_publishing_without_a_gap_or_a_duplicate() {
    const N: i64 = 1_500;
    timeout(LIMIT, async {
        let server = Server::new(replay_config(&["/feed"], N as usize));
        let publisher = tokio::spawn({
            let server = server.clone();
            async move {
                for n in 0..N {
                    server.publish("/feed", json!({"n": n})).await.unwrap();
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let t = TestServer::start(server.clone()).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            let client = Client::builder(&t.url()).build().unwrap();
            client.handshake().await.unwrap();
            let sub = client
                .subscribe_from("/feed", ReplayFrom::All)
                .await
                .unwrap();
            clients.push((client, sub));
        }
        publisher.await.unwrap();
        for (_client, mut sub) in clients {
            let mut last_id = i64::MIN;
            for n in 0..N {
                let m = next(&mut sub).await;
                assert_eq!(m["data"]["n"], n, "message {n}");
                let id = replay_id(&m);
                assert!(id > last_id);
                last_id = id;
            }
            assert_eq!(sub.dropped(), 0);
        }
    })
    .await
    .unwrap();
}

/// A loopback TCP proxy that can be closed (every connection cut, new ones refused),
/// reopened, and pointed at another upstream.
struct Gate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    upstream: Arc<Mutex<SocketAddr>>,
}

impl Gate {
    async fn start(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(true);
        let upstream = Arc::new(Mutex::new(upstream));
        let (gate, target) = (open.clone(), upstream.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut is_open = gate.subscribe();
                if !*is_open.borrow() {
                    continue;
                }
                let to = *target.lock().unwrap();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = is_open.wait_for(|o| !*o) => {}
                    }
                });
            }
        });
        Gate {
            addr,
            open,
            upstream,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/cometd", self.addr)
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

async fn assign(http_base: &str, user: &str, uri: &str) -> u64 {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = json!({"operationName": "AddEmail", "uri": uri}).to_string();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{http_base}/api/v2/users/{user}/workbins/wb1"))
        .body(Full::new(body.into()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    reply["referenceId"].as_u64().unwrap()
}

/// The agent a workbin notification is for.
fn owner(m: &Value) -> &str {
    let data = &m["data"];
    data["workbinUserId"]
        .as_str()
        .or_else(|| data["email"]["userData"]["RTargetAgentSelected"].as_str())
        .unwrap_or_else(|| panic!("no agent in {m}"))
}

/// Issue 17's scenario: an agent's session expires while 100 workbin notifications are
/// assigned to it; its desktop handshakes again and receives all 100, exactly once, in
/// order, and none of another agent's.
#[tokio::test]
async fn an_agent_whose_session_expired_gets_its_missed_notifications_exactly_once() {
    timeout(LIMIT * 2, async {
        let app = DemoApp::new(
            replay_config(&["/v2/**"], 1_000),
            Access::demo(),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = listening.url("");
        let gate = Gate::start(listening.local_addr()).await;
        let agent = |url: String, user: &'static str| async move {
            let client = Client::builder(&url)
                .basic_auth(user, "pw")
                .transport(TransportChoice::LongPolling)
                .backoff(Duration::from_millis(20), Duration::from_millis(100))
                .build()
                .unwrap();
            client.handshake().await.unwrap();
            let sub = client
                .subscribe_from("/v2/me/*", ReplayFrom::New)
                .await
                .unwrap();
            (client, sub)
        };
        let (agent1, mut inbox1) = agent(gate.url(), "agent1").await;
        let (_agent2, mut inbox2) = agent(listening.url("/cometd"), "agent2").await;

        // Live first: two notifications per assignment (workbin, then email).
        let first = assign(&base, "agent1", ".../live").await;
        for _ in 0..2 {
            assert_eq!(next(&mut inbox1).await["data"]["referenceId"], first);
        }

        // The laptop sleeps past maxInterval: its session expires on the server.
        let old_session = agent1.client_id().unwrap();
        gate.set_open(false);
        eventually("agent1's session to expire", || {
            app.server().session_info(&old_session).is_none()
        })
        .await;
        let mut missed = Vec::new();
        let mut others = Vec::new();
        for i in 0..100 {
            missed.push(assign(&base, "agent1", &format!(".../m{i}")).await);
            if i % 10 == 0 {
                others.push(assign(&base, "agent2", &format!(".../o{i}")).await);
            }
        }
        gate.set_open(true);

        // Every missed one, both notifications each, in order, exactly once.
        let mut last_id = 0;
        for reference in &missed {
            for channel in ["/v2/me/workbins", "/v2/me/emails"] {
                let m = next(&mut inbox1).await;
                assert_eq!(m["channel"], channel, "{m}");
                assert_eq!(m["data"]["referenceId"], *reference, "{m}");
                assert_eq!(owner(&m), "agent1", "{m}");
                let id = replay_id(&m);
                assert!(id > last_id);
                last_id = id;
            }
        }
        assert_ne!(agent1.client_id().unwrap(), old_session, "a new session");
        assert!(agent1.sessions_lost() >= 1);
        assert_eq!(inbox1.gaps(), 0, "nothing was lost");
        // Nothing more: the next message is the next assignment's.
        let after = assign(&base, "agent1", ".../after").await;
        assert_eq!(next(&mut inbox1).await["data"]["referenceId"], after);
        let last = next(&mut inbox1).await;
        assert_eq!(last["data"]["referenceId"], after);
        // The other agent got its own, live, and only those.
        for reference in &others {
            for _ in 0..2 {
                let m = next(&mut inbox2).await;
                assert_eq!(m["data"]["referenceId"], *reference);
                assert_eq!(owner(&m), "agent2", "{m}");
            }
        }
        assert_eq!(agent1.replay_ids()["/v2/me/*"], replay_id(&last));
    })
    .await
    .unwrap();
}

/// A restarted single-node server has lost its log: the client's resume point is
/// refused as not retained, the stream counts a gap, and it replays what the new server
/// has. Also: ids saved with `replay_ids` resume a new client exactly.
#[tokio::test]
async fn after_a_restart_the_client_counts_a_gap_and_replays_what_is_there() {
    timeout(LIMIT, async {
        let first = TestServer::with_config(replay_config(&["/news"], 100)).await;
        let gate = Gate::start(first.listening.local_addr()).await;
        let client = Client::builder(&gate.url())
            .backoff(Duration::from_millis(20), Duration::from_millis(100))
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let mut news = client
            .subscribe_from("/news", ReplayFrom::All)
            .await
            .unwrap();
        first
            .server
            .publish("/news", json!({"n": 1}))
            .await
            .unwrap();
        first
            .server
            .publish("/news", json!({"n": 2}))
            .await
            .unwrap();
        assert_eq!(next(&mut news).await["data"]["n"], 1);
        let second_id = replay_id(&next(&mut news).await);

        // A new client restored from the saved ids gets what came after them only.
        let saved = client.replay_ids();
        assert_eq!(saved["/news"], second_id);
        first
            .server
            .publish("/news", json!({"n": 3}))
            .await
            .unwrap();
        assert_eq!(next(&mut news).await["data"]["n"], 3);
        let restored = Client::builder(&first.url()).build().unwrap();
        restored.restore_replay_ids(saved);
        restored.handshake().await.unwrap();
        let mut resumed = restored
            .subscribe_from("/news", ReplayFrom::All)
            .await
            .unwrap();
        assert_eq!(next(&mut resumed).await["data"]["n"], 3);

        // The "restart": another server (an empty log) behind the same address.
        let second = TestServer::with_config(replay_config(&["/news"], 100)).await;
        second
            .server
            .publish("/news", json!({"n": "after restart"}))
            .await
            .unwrap();
        gate.set_open(false);
        *gate.upstream.lock().unwrap() = second.listening.local_addr();
        first.server.shutdown();
        gate.set_open(true);
        let m = next(&mut news).await;
        assert_eq!(m["data"]["n"], "after restart");
        assert_eq!(
            news.gaps(),
            1,
            "the old server's messages after n=3 may be lost"
        );
        second
            .server
            .publish("/news", json!({"n": "live"}))
            .await
            .unwrap();
        assert_eq!(next(&mut news).await["data"]["n"], "live");
    })
    .await
    .unwrap();
}

/// `bayeux listen --replay-from` prints the history, then live messages; `serve` refuses
/// replay settings that cannot work.
#[cfg(feature = "cli")]
#[tokio::test]
async fn the_command_line_replays_and_refuses_bad_replay_settings() {
    use std::process::Stdio;
    use tokio::process::Command;
    timeout(LIMIT, async {
        let t = TestServer::with_config(replay_config(&["/news"], 100)).await;
        for n in 0..3 {
            t.server.publish("/news", json!({"n": n})).await.unwrap();
        }
        let listen = |from: String, count: &'static str| {
            Command::new(env!("CARGO_BIN_EXE_bayeux"))
                .args(["listen", &t.url(), "/news", "--count", count])
                .args(["--replay-from", &from])
                .stdin(Stdio::null())
                .output()
        };
        let out = listen("all".into(), "3").await.unwrap();
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ns: Vec<i64> = lines
            .iter()
            .map(|m| m["data"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, vec![0, 1, 2]);
        let out = listen(replay_id(&lines[0]).to_string(), "2").await.unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains(r#""n":1"#) && text.contains(r#""n":2"#),
            "{text}"
        );

        // Refused: an id the server never assigned, a value that is no replay id.
        let out = listen("12".into(), "1").await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("The replayId {12} you provided was invalid"),
            "{err}"
        );
        let out = listen("soon".into(), "1").await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");

        for (args, needle) in [
            (
                &["--replay-max", "5"][..],
                "--replay-max 5: applies to durable channels: add --replay PATTERN",
            ),
            (
                &["--replay", "/meta/**"][..],
                "--replay /meta/**: /meta and /service channels are never durable",
            ),
            (
                &["--replay", "/a", "--replay-max", "0"][..],
                "--replay-max 0: must be at least 1",
            ),
            (
                &["--replay", "no-slash"][..],
                "--replay no-slash: not a channel pattern",
            ),
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    })
    .await
    .unwrap();
}

/// The metrics say how much the log holds, with replay on only.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn the_metrics_count_the_retained_messages() {
    let server = Server::new(replay_config(&["/r/*"], 3));
    for n in 0..5 {
        server.publish("/r/a", json!({"n": n})).await.unwrap();
    }
    server.publish("/r/b", json!({"n": 5})).await.unwrap();
    server.publish("/other", json!({"n": 6})).await.unwrap();
    let text = server.metrics();
    assert!(
        text.lines()
            .any(|l| l == "bayeux_replay_retained_messages 4"),
        "{text}"
    );
    let plain = Server::new(fast_config());
    assert!(!plain.metrics().contains("bayeux_replay"));
}

#[tokio::test]
async fn durable_messages_carry_their_creation_time_in_salesforces_shapes() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(replay_config(&["/topic/**", "/event/**", "/data/**"], 10))
            .await;
        let (id, _) = handshake(&t, json!({"replay": true})).await;
        for channel in [
            "/topic/orders",
            "/event/Order__e",
            "/data/AccountChangeEvent",
        ] {
            let reply = subscribe_ext(&t, &id, channel, json!({"replay": {channel: -1}})).await;
            assert_eq!(reply["successful"], true, "{reply}");
        }
        t.connect_now(&id).await;
        t.server
            .publish("/topic/orders", json!({"order": 1}))
            .await
            .unwrap();
        t.server
            .publish("/event/Order__e", json!({"Amount__c": 5}))
            .await
            .unwrap();
        t.server
            .publish(
                "/data/AccountChangeEvent",
                json!({"payload": {"Name": "Acme", "ChangeEventHeader": {"changeType": "CREATE"}}}),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            let (messages, _) = t.connect(&id).await;
            got.extend(messages);
        }
        let date = |v: &Value| {
            let s = v.as_str().unwrap_or_else(|| panic!("no date: {v}"));
            // 2016-03-29T16:40:08.208Z
            assert_eq!(s.len(), 24, "{s}");
            assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
        };
        let on = |channel: &str| {
            got.iter()
                .find(|m| m["channel"] == channel)
                .unwrap()
                .clone()
        };
        let topic = on("/topic/orders");
        assert_eq!(topic["data"]["order"], 1);
        date(&topic["data"]["event"]["createdDate"]);
        replay_id(&topic);
        let platform = on("/event/Order__e");
        assert_eq!(platform["data"]["payload"]["Amount__c"], 5);
        date(&platform["data"]["payload"]["CreatedDate"]);
        replay_id(&platform);
        let change = on("/data/AccountChangeEvent");
        let header = &change["data"]["payload"]["ChangeEventHeader"];
        assert_eq!(header["changeType"], "CREATE");
        assert!(header["commitTimestamp"].as_u64().unwrap() > 1_600_000_000_000);
        replay_id(&change);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_replaying_subscribe_joins_each_pattern_once_and_is_capped() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(replay_config(&["/topic/**"], 10)).await;
        for n in 0..3 {
            t.server.publish("/topic/a", json!({"n": n})).await.unwrap();
        }
        let (id, _) = handshake(&t, json!({"replay": true})).await;
        // The same pattern a thousand times: joined once, its history queued once.
        let same: Vec<&str> = vec!["/topic/a"; 1_000];
        let reply = subscribe_ext(&t, &id, "", json!({"replay": {"/topic/a": -2}})).await;
        assert_eq!(
            reply["successful"], false,
            "an empty subscription is refused"
        );
        let reply = t
            .post(
                json!({"channel": "/meta/subscribe", "clientId": id, "subscription": same,
                         "ext": {"replay": {"/topic/a": -2}}}),
            )
            .await[0]
            .clone();
        assert_eq!(reply["successful"], true, "{reply}");
        let (messages, _) = t.connect_now(&id).await;
        let ns: Vec<i64> = messages
            .iter()
            .map(|m| m["data"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [0, 1, 2]);
        // More distinct channels than the cap: refused before the log is read.
        let many: Vec<String> = (0..=ReplayConfig::DEFAULT_MAX_PATTERNS_PER_SUBSCRIBE)
            .map(|i| format!("/topic/c{i}"))
            .collect();
        let reply = t
            .post(
                json!({"channel": "/meta/subscribe", "clientId": id, "subscription": many,
                         "ext": {"replay": {}}}),
            )
            .await[0]
            .clone();
        assert_eq!(reply["successful"], false, "{reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .starts_with("409:maxReplayPatterns:"),
            "{reply}"
        );
    })
    .await
    .unwrap();
}

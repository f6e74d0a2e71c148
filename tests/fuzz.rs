//! Property-based fuzzing of the request parser and the message handler (cargo-fuzz
//! needs a nightly toolchain; proptest runs on stable). Whatever the body, the server
//! never panics and never hangs, and its answer is what the request calls for: a 4xx
//! with a text reason for a body that is not a batch, otherwise 200 with one
//! well-formed reply per request message, in order (after the messages a connect
//! delivers). More cases: `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use std::time::Duration;

use bayeux::protocol::{Batch, BayeuxError};
use bayeux::server::{Server, ServerConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const MAX_MESSAGE_SIZE: usize = 64 * 1024;

fn server() -> Server {
    Server::new(
        ServerConfig::default()
            .with_timeout(Duration::ZERO)
            .with_max_message_size(MAX_MESSAGE_SIZE),
    )
}

/// [`server`] with every channel durable (replay on), so that publishes go through the
/// replay log and subscribes read `ext.replay`.
fn replaying_server() -> Server {
    let all = vec![bayeux::protocol::ChannelName::parse("/**").unwrap()];
    Server::new(
        server()
            .config()
            .clone()
            .with_replay(Some(bayeux::server::ReplayConfig::new(all))),
    )
}

/// An `ext.replay` of a subscribe: channels to ids (or to anything).
fn replay_map() -> BoxedStrategy<Value> {
    prop::collection::btree_map(
        channel(),
        prop_oneof![
            (-3i64..3).prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            json_value(),
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
    .boxed()
}

/// The messages of `body` if it is a batch (one message object or a non-empty array),
/// else `None`: the rules of `Batch::parse`, written out independently.
fn batch_of(body: &[u8]) -> Option<Vec<Value>> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(items),
        obj @ Value::Object(_) => Some(vec![obj]),
        _ => None,
    }
}

/// The Bayeux error codes this server can give for these requests: 301 (unsupported
/// version or connection types), 400 (malformed), 402 (unknown client), 403 (denied).
/// The only limit (409) reached here is one handshake per request; a local publish
/// never fails (500).
const EXPECTED_CODES: [u16; 4] = [301, 400, 402, 403];

/// Checks `error` is a Bayeux error string, `code:args:message` with a three-digit code.
fn check_error(error: &str, reply: &Value) -> Result<u16, TestCaseError> {
    let b = error.as_bytes();
    prop_assert!(
        b.len() >= 5 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b':',
        "not a three-digit code then ':': {reply}"
    );
    prop_assert!(
        error[4..].contains(':'),
        "no ':' between args and message: {reply}"
    );
    let parsed = BayeuxError::parse(error);
    prop_assert!(parsed.is_some(), "BayeuxError::parse refused it: {reply}");
    let parsed = parsed.unwrap();
    let code = parsed.code;
    let second_handshake = code == 409
        && parsed.args == ["handshakesPerRequest"]
        && reply["channel"] == "/meta/handshake";
    prop_assert!(
        EXPECTED_CODES.contains(&code) || second_handshake,
        "unexpected code: {reply}"
    );
    Ok(code)
}

/// Checks the reply to one request message.
fn check_reply(
    request: &Value,
    reply: &Map<String, Value>,
    live: bool,
) -> Result<(), TestCaseError> {
    let shown = Value::Object(reply.clone());
    let successful = reply.get("successful").and_then(Value::as_bool);
    prop_assert!(
        successful.is_some(),
        "no boolean `successful`: {shown} for {request}"
    );
    let successful = successful.unwrap();
    // The reply is correlated with its request by channel and id, echoed as sent
    // (a string or numeric id; an id of another type makes the message invalid).
    let channel = request.get("channel").and_then(Value::as_str);
    match channel {
        Some(c) => prop_assert_eq!(
            reply.get("channel"),
            Some(&json!(c)),
            "{} for {}",
            shown,
            request
        ),
        None => prop_assert!(reply.get("channel").is_none(), "{shown} for {request}"),
    }
    match request.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => {
            prop_assert_eq!(
                reply.get("id"),
                Some(id),
                "the id is not echoed: {} for {}",
                shown,
                request
            )
        }
        _ => prop_assert!(
            reply.get("id").is_none(),
            "an id from nowhere: {shown} for {request}"
        ),
    }
    if successful {
        prop_assert!(reply.get("error").is_none(), "{shown}");
        prop_assert!(
            channel.is_some(),
            "a message without a channel succeeded: {shown}"
        );
        if channel == Some("/meta/handshake") {
            prop_assert!(
                reply
                    .get("clientId")
                    .and_then(Value::as_str)
                    .is_some_and(|id| !id.is_empty()),
                "{shown}"
            );
            prop_assert_eq!(reply.get("version"), Some(&json!("1.0")), "{}", shown);
        } else {
            // Without a live session only a handshake can succeed.
            prop_assert!(live, "succeeded without a session: {shown} for {request}");
        }
    } else {
        let error = reply.get("error").and_then(Value::as_str);
        prop_assert!(
            error.is_some(),
            "a failed reply without an `error` string: {shown}"
        );
        let code = check_error(error.unwrap(), &shown)?;
        if !request.is_object() || channel.is_none() {
            prop_assert_eq!(code, 400, "{}", shown);
        }
        if code == 402 {
            prop_assert_eq!(
                &reply["advice"]["reconnect"],
                &json!("handshake"),
                "{}",
                shown
            );
        }
    }
    Ok(())
}

/// Sends one body through the whole HTTP handler and checks the answer against what
/// the request calls for. `live`: the batch names a live session (so publishes,
/// subscribes and connects may succeed and a connect may deliver messages).
fn check(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    body: Vec<u8>,
    live: bool,
) -> Result<(), TestCaseError> {
    let batch = batch_of(&body);
    // The parser agrees with the oracle on what is a batch (and does not panic).
    prop_assert_eq!(
        Batch::parse(&body).ok().map(|b| b.messages.len()),
        batch.as_ref().map(Vec::len)
    );
    // Not a batch, or over maxBatch: 400.
    let expected = batch.filter(|m| m.len() <= ServerConfig::default().max_batch);
    let too_large = body.len() > MAX_MESSAGE_SIZE;
    let (status, content_type, bytes) = rt.block_on(async {
        let req = http::Request::post("/cometd")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), server.handle(req))
            .await
            .expect("the handler hung");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            status,
            content_type,
            res.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    let text = String::from_utf8_lossy(&bytes);
    let messages = match expected {
        // An in-memory body is never slow (no 408) and is a POST (no 405).
        _ if too_large => {
            prop_assert_eq!(status, 413, "{}", text);
            None
        }
        None => {
            prop_assert_eq!(status, 400, "{}", text);
            None
        }
        Some(m) => {
            prop_assert_eq!(status, 200, "{}", text);
            Some(m)
        }
    };
    let Some(requests) = messages else {
        prop_assert!(content_type.starts_with("text/plain"), "{content_type}");
        prop_assert!(
            std::str::from_utf8(&bytes).is_ok_and(|t| !t.trim().is_empty()),
            "an error says why"
        );
        return Ok(());
    };
    prop_assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let replies: Value = serde_json::from_slice(&bytes).expect("a 200 body is JSON");
    let replies = replies.as_array();
    prop_assert!(replies.is_some(), "a 200 body is an array: {text}");
    let replies: Vec<&Map<String, Value>> = replies
        .unwrap()
        .iter()
        .map(|r| {
            r.as_object()
                .ok_or_else(|| TestCaseError::fail(format!("a reply is not an object: {r}")))
        })
        .collect::<Result<_, _>>()?;
    prop_assert!(
        replies.len() >= requests.len(),
        "fewer replies than messages: {text}"
    );
    // The messages a connect delivers come first, then one reply per request message.
    let delivered = replies.len() - requests.len();
    let channel_of = |m: &Value| m.get("channel").and_then(Value::as_str).map(str::to_string);
    if delivered > 0 {
        prop_assert!(live, "messages delivered without a session: {text}");
        prop_assert!(
            requests
                .iter()
                .any(|m| channel_of(m).as_deref() == Some("/meta/connect")),
            "delivered without a connect: {text}"
        );
    }
    // What a fresh session can receive is what this batch published.
    let published: Vec<String> = requests
        .iter()
        .filter(|m| m.get("data").is_some())
        .filter_map(channel_of)
        .collect();
    prop_assert!(
        delivered <= published.len(),
        "more deliveries than publishes: {text}"
    );
    for m in &replies[..delivered] {
        let channel = m.get("channel").and_then(Value::as_str).unwrap_or("");
        prop_assert!(
            published.iter().any(|p| p == channel),
            "delivered on a channel nobody published to: {text}"
        );
        prop_assert!(
            !channel.starts_with("/meta/") && !channel.starts_with("/service/"),
            "{text}"
        );
        prop_assert!(m.get("data").is_some(), "{text}");
        prop_assert!(
            m.get("clientId").is_none(),
            "a delivery leaks the sender's clientId: {text}"
        );
    }
    for (request, reply) in requests.iter().zip(&replies[delivered..]) {
        check_reply(request, reply, live)?;
    }
    Ok(())
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "/meta/handshake",
            "/meta/connect",
            "/meta/subscribe",
            "/meta/unsubscribe",
            "/meta/disconnect",
            "/a/b",
            "/a/*",
            "/**",
            "/service/x",
            "/meta/x",
            "bad",
            ""
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Channel names the handler treats differently: each meta channel, plain, wildcard,
/// service, unknown meta, invalid.
fn channel() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "/meta/handshake",
            "/meta/connect",
            "/meta/subscribe",
            "/meta/unsubscribe",
            "/meta/disconnect",
            "/a/b",
            "/a/b",
            "/a/c",
            "/a/*",
            "/**",
            "/service/x",
            "/meta/x",
            "bad",
            "",
        ])
        .prop_map(str::to_string),
        1 => "[ -~]{0,12}",
    ]
}

/// A value for `field`: mostly of the type Bayeux gives it (so that messages get past
/// parsing and reach the handlers), sometimes of any type.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let well_typed: BoxedStrategy<Value> = match field {
        "channel" => channel().prop_map(Value::String).boxed(),
        "id" => prop_oneof![
            "[0-9a-z]{0,4}".prop_map(Value::String),
            any::<i32>().prop_map(|n| json!(n))
        ]
        .boxed(),
        "clientId" | "error" | "timestamp" => "[ -~]{0,12}".prop_map(Value::String).boxed(),
        "data" => json_value(),
        "ext" => prop::collection::btree_map(
            prop::sample::select(vec!["ack", "userId", "x", "replay"]).prop_map(str::to_string),
            prop_oneof![3 => json_value(), 1 => Just(json!(true)), 1 => replay_map()],
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed(),
        "advice" => (
            prop::option::of(0i64..100),
            prop::option::of(0i64..100),
            prop::option::of(prop::sample::select(vec!["retry", "handshake", "none"])),
        )
            .prop_map(|(timeout, interval, reconnect)| {
                let mut m = Map::new();
                if let Some(t) = timeout {
                    m.insert("timeout".into(), json!(t));
                }
                if let Some(i) = interval {
                    m.insert("interval".into(), json!(i));
                }
                if let Some(r) = reconnect {
                    m.insert("reconnect".into(), json!(r));
                }
                Value::Object(m)
            })
            .boxed(),
        "successful" => any::<bool>().prop_map(Value::Bool).boxed(),
        "subscription" => prop_oneof![
            channel().prop_map(Value::String),
            prop::collection::vec(channel().prop_map(Value::String), 0..4).prop_map(Value::Array),
        ]
        .boxed(),
        "version" | "minimumVersion" => {
            prop::sample::select(vec!["1.0", "1.0", "0.9", "2.0", "1.0beta", "x", ""])
                .prop_map(|v| json!(v))
                .boxed()
        }
        "supportedConnectionTypes" => prop::collection::vec(
            prop::sample::select(vec!["long-polling", "websocket", "callback-polling", "x"])
                .prop_map(|t| json!(t)),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        "connectionType" => prop::sample::select(vec!["long-polling", "websocket", "x"])
            .prop_map(|t| json!(t))
            .boxed(),
        _ => unreachable!("{field}"),
    };
    prop_oneof![9 => well_typed, 1 => json_value()].boxed()
}

/// Messages built from the Bayeux field names, usually with a channel, with values of
/// the right type or of any type.
fn message() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "id",
        "clientId",
        "data",
        "data",
        "ext",
        "advice",
        "successful",
        "error",
        "subscription",
        "subscription",
        "version",
        "minimumVersion",
        "supportedConnectionTypes",
        "connectionType",
        "timestamp",
    ]);
    (
        prop::option::weighted(0.9, field_value("channel")),
        prop::collection::vec(field.prop_flat_map(|f| (Just(f), field_value(f))), 0..5),
    )
        .prop_map(|(channel, fields)| {
            let mut m = Map::new();
            if let Some(c) = channel {
                m.insert("channel".into(), c);
            }
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        })
}

/// Well-formed requests of each kind, so that a batch often subscribes, publishes to
/// what it subscribed to and connects (which then delivers).
fn request() -> impl Strategy<Value = Value> {
    let id = prop::option::of("[0-9]{1,3}");
    // Mostly channels and patterns that match one another.
    let pattern = || {
        prop_oneof![
            3 => prop::sample::select(vec!["/a/b", "/a/*", "/**"]).prop_map(str::to_string),
            1 => channel(),
        ]
    };
    let target = prop_oneof![
        3 => prop::sample::select(vec!["/a/b", "/a/c"]).prop_map(str::to_string),
        1 => channel(),
    ];
    prop_oneof![
        3 => (pattern(), id.clone()).prop_map(|(c, id)| {
            json!({"channel": "/meta/subscribe", "subscription": c, "id": id})
        }),
        1 => (pattern(), id.clone()).prop_map(|(c, id)| {
            json!({"channel": "/meta/unsubscribe", "subscription": c, "id": id})
        }),
        // Replaying subscribes (ignored by a server without replay).
        2 => (pattern(), id.clone(), prop_oneof![Just(-2i64), Just(-1), -3i64..3, any::<i64>()])
            .prop_map(|(c, id, from)| {
                let mut entries = Map::new();
                entries.insert(c.clone(), json!(from));
                json!({"channel": "/meta/subscribe", "subscription": c, "id": id,
                       "ext": {"replay": entries}})
            }),
        4 => (target, json_value(), id.clone())
            .prop_map(|(c, data, id)| json!({"channel": c, "data": data, "id": id})),
        2 => id.clone().prop_map(|id| {
            json!({"channel": "/meta/connect", "connectionType": "long-polling", "id": id})
        }),
        1 => id.prop_map(|id| json!({"channel": "/meta/handshake", "version": "1.0", "id": id})),
        3 => message(),
    ]
    .prop_map(|mut m| {
        // A null id stands for no id.
        if m.get("id") == Some(&Value::Null) {
            m.as_object_mut().unwrap().remove("id");
        }
        m
    })
}

/// Mostly-valid batches, cut short or with a byte changed, to get close to the parser's
/// edges.
fn mangled_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(message(), 1..4),
        any::<prop::sample::Index>(),
        prop::option::of(any::<u8>()),
    )
        .prop_map(|(batch, at, byte)| {
            let mut body = serde_json::to_vec(&batch).unwrap();
            let i = at.index(body.len());
            match byte {
                Some(b) => body[i] = b,
                None => body.truncate(i),
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), mangled_batch()]) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { server() });
        check(&rt, &s, body, false)?;
    }

    #[test]
    fn arbitrary_batches_of_bayeux_shaped_messages_never_panic(batch in prop::collection::vec(request(), 0..6), single in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { server() });
        let body = if single && !batch.is_empty() { serde_json::to_vec(&batch[0]).unwrap() } else { serde_json::to_vec(&batch).unwrap() };
        check(&rt, &s, body, false)?;
    }

    #[test]
    fn other_methods_get_405(
        method in prop::sample::select(vec!["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]),
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..64), request().prop_map(|m| serde_json::to_vec(&m).unwrap())],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { server() });
        let (status, allow, bytes) = rt.block_on(async {
            let req = http::Request::builder().method(method).uri("/cometd").body(Full::new(Bytes::from(body))).unwrap();
            let res = s.handle(req).await;
            let allow = res.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_string);
            (res.status().as_u16(), allow, res.into_body().collect().await.unwrap().to_bytes())
        });
        prop_assert_eq!(status, 405);
        prop_assert_eq!(allow.as_deref(), Some("POST"));
        prop_assert!(std::str::from_utf8(&bytes).is_ok_and(|t| !t.trim().is_empty()), "an error says why");
    }

    #[test]
    fn messages_with_a_live_client_id_never_panic(batch in prop::collection::vec(request(), 1..8), replay in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { if replay { replaying_server() } else { server() } });
        let client_id = rt.block_on(async {
            let req = http::Request::post("/cometd").body(Full::new(Bytes::from_static(br#"{"channel":"/meta/handshake","version":"1.0"}"#))).unwrap();
            let body = s.handle(req).await.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap()[0]["clientId"].as_str().unwrap().to_string()
        });
        let batch: Vec<Value> = batch.into_iter().map(|mut m| { m["clientId"] = json!(client_id); m }).collect();
        check(&rt, &s, serde_json::to_vec(&batch).unwrap(), true)?;
    }
}

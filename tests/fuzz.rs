//! Property-based fuzzing of the request parser and the message handler (cargo-fuzz
//! needs a nightly toolchain; proptest runs on stable). Whatever the body, the server
//! answers with 200 and a JSON array, or with a 4xx and a reason: it never panics and
//! never hangs. More cases: `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use std::time::Duration;

use bayeux::protocol::Batch;
use bayeux::server::{Server, ServerConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::{Value, json};

fn server() -> Server {
    Server::new(ServerConfig {
        // Connects return at once, so a generated connect cannot block the case.
        timeout: Duration::ZERO,
        max_message_size: 64 * 1024,
        ..ServerConfig::default()
    })
}

/// Sends one body through the whole HTTP handler and checks the answer's shape.
fn check(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    body: Vec<u8>,
) -> Result<(), TestCaseError> {
    let (status, bytes) = rt.block_on(async {
        let req = http::Request::post("/cometd")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), server.handle(req))
            .await
            .expect("the handler hung");
        let status = res.status().as_u16();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    });
    prop_assert!(matches!(status, 200 | 400 | 408 | 413), "status {status}");
    if status == 200 {
        let v: Value = serde_json::from_slice(&bytes).expect("a 200 body is JSON");
        prop_assert!(v.is_array(), "a 200 body is an array");
    } else {
        prop_assert!(!bytes.is_empty(), "an error says why");
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
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
}

/// Messages built from the Bayeux field names with values of any type.
fn message() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "channel",
        "id",
        "clientId",
        "data",
        "ext",
        "advice",
        "successful",
        "error",
        "subscription",
        "version",
        "minimumVersion",
        "supportedConnectionTypes",
        "connectionType",
        "timestamp",
    ]);
    prop::collection::vec((field, json_value()), 0..8).prop_map(|fields| {
        let mut m = serde_json::Map::new();
        for (k, v) in fields {
            m.insert(k.to_string(), v);
        }
        Value::Object(m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { server() });
        // The parser alone returns (no panic), then the whole handler answers.
        let _ = Batch::parse(&body);
        check(&rt, &s, body)?;
    }

    #[test]
    fn arbitrary_batches_of_bayeux_shaped_messages_never_panic(batch in prop::collection::vec(message(), 0..6), single in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { server() });
        let body = if single && !batch.is_empty() { serde_json::to_vec(&batch[0]).unwrap() } else { serde_json::to_vec(&batch).unwrap() };
        check(&rt, &s, body)?;
    }

    #[test]
    fn messages_with_a_live_client_id_never_panic(batch in prop::collection::vec(message(), 1..6)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async { server() });
        let client_id = rt.block_on(async {
            let req = http::Request::post("/cometd").body(Full::new(Bytes::from_static(br#"{"channel":"/meta/handshake","version":"1.0"}"#))).unwrap();
            let body = s.handle(req).await.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap()[0]["clientId"].as_str().unwrap().to_string()
        });
        let batch: Vec<Value> = batch.into_iter().map(|mut m| { m["clientId"] = json!(client_id); m }).collect();
        check(&rt, &s, serde_json::to_vec(&batch).unwrap())?;
    }
}

//! The callback-polling (JSONP) transport over raw GET requests.

mod common;

use std::time::Duration;

use bayeux::server::ServerConfig;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::time::timeout;

fn jsonp_config() -> ServerConfig {
    fast_config().with_callback_polling(true)
}

/// GETs `message` (JSON) with the callback `cb`; returns the status, the content type
/// and the body.
async fn get(t: &TestServer, callback: &str, message: &Value) -> (u16, String, String) {
    let query: String = url_encode(&message.to_string());
    let uri = format!("{}?jsonp={callback}&message={query}", t.url());
    let res = t
        .http
        .request(http::Request::get(uri).body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON array inside `cb(...);`.
fn unwrap_script(callback: &str, body: &str) -> Vec<Value> {
    let inner = body
        .strip_prefix(&format!("{callback}("))
        .and_then(|b| b.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a call to {callback}: {body}"));
    serde_json::from_str(inner).unwrap()
}

#[tokio::test]
async fn a_whole_session_over_jsonp() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(jsonp_config()).await;
        let (status, content_type, body) = get(
            &t,
            "cb",
            &json!([{"channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["callback-polling"]}]),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/javascript;charset=UTF-8");
        let reply = unwrap_script("cb", &body);
        assert_eq!(reply[0]["successful"], true);
        assert_eq!(
            reply[0]["supportedConnectionTypes"],
            json!(["websocket", "long-polling", "callback-polling"])
        );
        let id = reply[0]["clientId"].as_str().unwrap().to_string();
        let (_, _, body) = get(
            &t,
            "cb",
            &json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/jsonp"}]),
        )
        .await;
        assert_eq!(unwrap_script("cb", &body)[0]["successful"], true);
        let connect = json!([{"channel": "/meta/connect", "clientId": id,
                              "connectionType": "callback-polling"}]);
        get(&t, "cb", &connect).await; // the first connect returns at once
        let held = {
            let t = &t;
            let connect = connect.clone();
            async move { get(t, "cometd._jsonp1", &connect).await }
        };
        let publish = async {
            eventually("the held connect", || t.server.is_connected(&id)).await;
            t.server.publish("/jsonp", json!("hi")).await.unwrap();
        };
        let ((_, _, body), ()) = tokio::join!(held, publish);
        let replies = unwrap_script("cometd._jsonp1", &body);
        assert_eq!(replies[0]["data"], "hi");
        assert_eq!(replies[1]["channel"], "/meta/connect");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_requests_get_http_errors() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(jsonp_config()).await;
        let handshake = json!({"channel": "/meta/handshake", "version": "1.0"});
        assert_eq!(get(&t, "alert%281%29", &handshake).await.0, 400);
        let uri = format!("{}?jsonp=cb&message=%7Bnot", t.url());
        let res = t
            .http
            .request(http::Request::get(uri).body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let uri = format!("{}?jsonp=cb", t.url());
        let res = t
            .http
            .request(http::Request::get(uri).body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn jsonp_is_off_by_default() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let (status, _, _) = get(
            &t,
            "cb",
            &json!({"channel": "/meta/handshake", "version": "1.0"}),
        )
        .await;
        assert_eq!(status, 405);
        let replies = t
            .post(json!({"channel": "/meta/handshake", "version": "1.0"}))
            .await;
        let types = replies[0]["supportedConnectionTypes"]
            .as_array()
            .unwrap()
            .clone();
        assert!(!types.contains(&json!("callback-polling")));
        let _ = Duration::ZERO;
    })
    .await
    .unwrap();
}

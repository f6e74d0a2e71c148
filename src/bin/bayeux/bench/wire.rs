//! Raw Bayeux over HTTP for the load tool: pre-formatted request bodies and borrowed
//! parsing of responses, so that one process can drive thousands of sessions.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// A shared HTTP/1.1 connection pool.
pub type Pool = Client<HttpConnector, Full<Bytes>>;

/// A pool that keeps as many idle connections as it is given sessions.
pub fn pool() -> Pool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Why an exchange failed.
pub enum WireError {
    /// Connection or HTTP-level failure (counted as an HTTP error).
    Http,
    /// A 200 with a body that is not a Bayeux batch.
    Body,
}

/// POSTs `body` to `url` with optional extra headers; returns the response body.
pub async fn post(
    pool: &Pool,
    url: &str,
    body: String,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Bytes, WireError> {
    post_keeping_cookies(pool, url, body, headers, timeout)
        .await
        .map(|(b, _)| b)
}

/// Like [`post`], and also returns the `name=value` pairs of any `Set-Cookie` headers
/// (CometD's servers bind sessions to their `BAYEUX_BROWSER` cookie).
pub async fn post_keeping_cookies(
    pool: &Pool,
    url: &str,
    body: String,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(Bytes, Option<String>), WireError> {
    let mut req = http::Request::post(url).header("content-type", "application/json;charset=UTF-8");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| WireError::Http)?;
    let exchange = async {
        let res = pool.request(req).await.map_err(|_| WireError::Http)?;
        if !res.status().is_success() {
            return Err(WireError::Http);
        }
        let cookies: Vec<&str> = res
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next())
            .collect();
        let cookie = (!cookies.is_empty()).then(|| cookies.join("; "));
        Ok((
            res.into_body()
                .collect()
                .await
                .map_err(|_| WireError::Http)?
                .to_bytes(),
            cookie,
        ))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| WireError::Http)?
}

/// The fields the tool reads from any message.
#[derive(Deserialize)]
pub struct Msg<'a> {
    #[serde(borrow, default)]
    pub channel: Option<&'a str>,
    #[serde(default)]
    pub successful: Option<bool>,
    #[serde(borrow, default, rename = "clientId")]
    pub client_id: Option<&'a str>,
    #[serde(default)]
    pub advice: Option<AdviceIn<'a>>,
    #[serde(default)]
    pub data: Option<DataIn<'a>>,
}

#[derive(Deserialize)]
pub struct AdviceIn<'a> {
    #[serde(borrow, default)]
    pub reconnect: Option<&'a str>,
    #[serde(default)]
    pub interval: Option<f64>,
}

/// A delivered message's data: the load tool's own fields (`p`ublisher, `s`equence,
/// send `t`ime in µs), or a workbin notification that carries them in the interaction id.
#[derive(Deserialize)]
pub struct DataIn<'a> {
    #[serde(default)]
    pub p: Option<u32>,
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(default)]
    pub t: Option<u64>,
    #[serde(borrow, default)]
    pub email: Option<Interaction<'a>>,
}

#[derive(Deserialize)]
pub struct Interaction<'a> {
    #[serde(borrow)]
    pub id: &'a str,
}

/// `(publisher, sequence, send time µs)` of a delivered message, if it is one of ours.
pub fn stamp(data: &DataIn<'_>) -> Option<(u32, u64, u64)> {
    if let (Some(p), Some(s), Some(t)) = (data.p, data.s, data.t) {
        return Some((p, s, t));
    }
    // Workbin mode: the interaction id is `b{p}-{s}-{t}`.
    let id = data.email.as_ref()?.id.strip_prefix('b')?;
    let mut parts = id.split('-');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// Parses a response body into its messages.
pub fn parse(body: &[u8]) -> Result<Vec<Msg<'_>>, WireError> {
    serde_json::from_slice(body).map_err(|_| WireError::Body)
}

pub fn handshake_body() -> String {
    r#"[{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}]"#.to_string()
}

pub fn subscribe_body(client_id: &str, channel: &str) -> String {
    format!(
        r#"[{{"channel":"/meta/subscribe","clientId":"{client_id}","subscription":"{channel}","id":"2"}}]"#
    )
}

pub fn connect_body(client_id: &str, first: bool) -> String {
    if first {
        format!(
            r#"[{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"long-polling","advice":{{"timeout":0}},"id":"3"}}]"#
        )
    } else {
        format!(
            r#"[{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"long-polling","id":"3"}}]"#
        )
    }
}

pub fn disconnect_body(client_id: &str) -> String {
    format!(r#"[{{"channel":"/meta/disconnect","clientId":"{client_id}","id":"4"}}]"#)
}

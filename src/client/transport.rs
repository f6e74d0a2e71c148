//! The client's HTTP side: POSTs batches over hyper, keeps cookies, adds headers, and
//! keeps long polls on a connection pool of their own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Error;
use crate::protocol::message::encode_array;
use crate::protocol::{Batch, Message};

/// Which connection pool a request uses: long polls never queue behind, or in front of,
/// publishes and subscribes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    LongPoll,
    Requests,
}

/// Responses larger than this are refused (a misbehaving server cannot exhaust memory).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

pub(crate) struct Transport {
    url: Uri,
    headers: HeaderMap,
    cookies: Mutex<BTreeMap<String, String>>,
    polls: HyperClient<HttpConnector, Full<Bytes>>,
    requests: HyperClient<HttpConnector, Full<Bytes>>,
}

fn pool() -> HyperClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

impl Transport {
    pub fn new(url: Uri, headers: HeaderMap) -> Self {
        Transport {
            url,
            headers,
            cookies: Mutex::new(BTreeMap::new()),
            polls: pool(),
            requests: pool(),
        }
    }

    pub fn url(&self) -> &Uri {
        &self.url
    }

    fn cookie_header(&self) -> Option<String> {
        let jar = self.cookies.lock().unwrap_or_else(|e| e.into_inner());
        if jar.is_empty() {
            return None;
        }
        Some(
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// Keeps `NAME=VALUE` of each `Set-Cookie` (CometD binds sessions to its
    /// `BAYEUX_BROWSER` cookie); `Max-Age=0` deletes. One server, so domain and path
    /// attributes are not needed.
    fn store_cookies(&self, headers: &HeaderMap) {
        let mut jar = self.cookies.lock().unwrap_or_else(|e| e.into_inner());
        for value in headers.get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, val)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if expired {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), val.trim().to_string());
            }
        }
    }

    /// POSTs `messages` as one batch and returns every message of the response.
    pub async fn send(
        &self,
        lane: Lane,
        messages: &[Message],
        timeout: Duration,
    ) -> Result<Vec<Message>, Error> {
        let encoded: Vec<Bytes> = messages.iter().map(Message::to_bytes).collect();
        let size = encoded.iter().map(|b| b.len() + 1).sum();
        let body = encode_array(encoded.iter().map(|b| &b[..]), size);
        let mut request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/json;charset=UTF-8")
            .body(Full::new(body))
            .map_err(|e| Error::config(format!("request to {}: {e}", self.url)))?;
        request.headers_mut().extend(self.headers.clone());
        if let Some(cookie) = self.cookie_header() {
            request.headers_mut().insert(
                COOKIE,
                cookie
                    .parse()
                    .map_err(|_| Error::protocol("a Set-Cookie value that cannot be sent back"))?,
            );
        }
        let client = match lane {
            Lane::LongPoll => &self.polls,
            Lane::Requests => &self.requests,
        };
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| Error::connection(format!("POST {}", self.url), e))?;
            self.store_cookies(response.headers());
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| Error::connection(format!("reading the response of {}", self.url), e))?
                .to_bytes();
            if !status.is_success() {
                return Err(Error::status(
                    format!("POST {}", self.url),
                    status.as_u16(),
                    &body,
                ));
            }
            Batch::parse_strict(&body)
                .map_err(|e| Error::protocol_with(format!("the response of {}", self.url), e))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::timeout(&format!("POST {}", self.url), timeout))?
    }
}

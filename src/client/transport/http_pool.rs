//! POSTing a Bayeux batch over hyper and keeping the cookies the server sets: the one
//! implementation shared by the client's long-polling transport and the `bayeux bench`
//! load tool.
//!
//! Over TLS (feature `tls`), `HttpPool::with_tls` opens `https://` connections with
//! rustls; when the server picks HTTP/2 through ALPN (feature `http2`), hyper-util's pool
//! keeps one connection per host and multiplexes every request on it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use crate::client::Error;

/// Responses larger than this are refused (a misbehaving server cannot exhaust memory).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// The `Content-Type` of every POST: Bayeux batches are JSON arrays.
const JSON: &str = "application/json;charset=UTF-8";

/// A pool of HTTP connections that POSTs JSON bodies (Bayeux batches) and returns the
/// response body.
///
/// Generic over hyper-util's [`Connect`], so that a TLS connector can be plugged in;
/// the default is plain TCP (HTTP/1.1), and `HttpPool::with_tls` (feature `tls`) speaks
/// `https://` too (HTTP/2 when the server offers it, HTTP/1.1 otherwise). Cheap to
/// clone (clones share the pool). Several sessions can share one pool, each with its
/// own [`CookieJar`].
#[derive(Clone)]
pub struct HttpPool<C = HttpConnector> {
    client: HyperClient<C, Full<Bytes>>,
}

impl HttpPool<HttpConnector> {
    /// A pool over plain TCP with `TCP_NODELAY` and a 10 s connect timeout.
    pub fn new() -> Self {
        Self::with_connector(tcp_connector())
    }
}

/// The plain TCP connector of [`HttpPool::new`]: `TCP_NODELAY`, a 10 s connect timeout.
fn tcp_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    connector
}

/// The connector of [`HttpPool::with_tls`]: rustls over [`HttpConnector`], for
/// `https://` URLs and plain `http://` ones.
#[cfg(feature = "tls")]
pub type TlsHttpConnector = hyper_rustls::HttpsConnector<HttpConnector>;

#[cfg(feature = "tls")]
impl HttpPool<TlsHttpConnector> {
    /// A pool that speaks `https://` with `config` (and plain `http://` without TLS),
    /// over TCP with `TCP_NODELAY` and a 10 s connect timeout (the TLS handshake is
    /// bounded by the caller's timeout).
    ///
    /// `config`'s ALPN protocols decide the HTTP version:
    /// [`TlsOptions::http_config`](crate::client::tls::TlsOptions::http_config) offers
    /// `h2` and `http/1.1`, and with the `http2` feature a server that picks `h2` gets
    /// every request of the pool multiplexed on one connection per host. Without ALPN,
    /// HTTP/1.1.
    pub fn with_tls(config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        let mut tcp = tcp_connector();
        // hyper-rustls hands it https:// URIs once TLS is set up around it.
        tcp.enforce_http(false);
        Self::with_connector(hyper_rustls::HttpsConnector::from((tcp, config)))
    }
}

impl Default for HttpPool<HttpConnector> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> HttpPool<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A pool whose connections `connector` opens (a TLS connector for `https://`, for
    /// example). Idle connections are kept 90 s, as many as there were in use.
    pub fn with_connector(connector: C) -> Self {
        HttpPool {
            client: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector),
        }
    }

    /// POSTs `body` (JSON) to `url` with `headers`, sending the cookies of `jar` and
    /// keeping those the response sets. Returns the body of a 2xx response.
    ///
    /// Errors: [`Connection`](crate::client::ErrorKind::Connection) when the exchange
    /// fails, [`Status`](crate::client::ErrorKind::Status) for a non-2xx answer,
    /// [`Protocol`](crate::client::ErrorKind::Protocol) for a body over
    /// [`MAX_RESPONSE`]. There is no timeout here: wrap the call in one.
    pub async fn post(
        &self,
        url: &Uri,
        headers: &HeaderMap,
        jar: Option<&CookieJar>,
        body: Bytes,
    ) -> Result<Bytes, Error> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = url.clone();
        let h = request.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        // The caller's headers replace ours of the same name (a custom Content-Type).
        h.extend(headers.clone());
        if let Some(cookie) = jar.and_then(CookieJar::header) {
            h.insert(COOKIE, cookie);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Error::connection(format!("POST {url}"), e))?;
        if let Some(jar) = jar {
            jar.store(response.headers());
        }
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::protocol(format!(
                        "the response of {url} is larger than {MAX_RESPONSE} bytes"
                    ))
                } else {
                    Error::connection(format!("reading the response of {url}"), e)
                }
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::status(format!("POST {url}"), status.as_u16(), &body));
        }
        Ok(body)
    }
}

impl<C> fmt::Debug for HttpPool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPool").finish_non_exhaustive()
    }
}

/// The cookies of one session: `NAME=VALUE` of each `Set-Cookie`, sent back on every
/// request (CometD binds sessions to its `BAYEUX_BROWSER` cookie).
///
/// One server, so domain, path and expiry attributes are ignored, except `Max-Age=0`,
/// which deletes the cookie.
#[derive(Default)]
pub struct CookieJar {
    jar: Mutex<Jar>,
}

#[derive(Default)]
struct Jar {
    cookies: BTreeMap<String, String>,
    /// The `Cookie` header for the current cookies, built once per change.
    header: Option<HeaderValue>,
}

impl CookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the cookies set by a response's `Set-Cookie` headers.
    pub fn store(&self, headers: &HeaderMap) {
        let mut set = headers.get_all(SET_COOKIE).iter().peekable();
        if set.peek().is_none() {
            return;
        }
        let mut guard = self.jar.lock().unwrap_or_else(|e| e.into_inner());
        let jar = &mut guard.cookies;
        for value in set {
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
        let text: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Values that cannot be sent back (not visible ASCII) are not sent at all.
        guard.header = (!text.is_empty())
            .then(|| HeaderValue::from_str(&text.join("; ")).ok())
            .flatten();
    }

    /// The `Cookie` header to send, if there are cookies.
    pub fn header(&self) -> Option<HeaderValue> {
        self.jar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .header
            .clone()
    }

    /// Whether no cookie is kept.
    pub fn is_empty(&self) -> bool {
        self.jar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cookies
            .is_empty()
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cookie values are session credentials: only the names are shown.
        let jar = self.jar.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("CookieJar")
            .field("names", &jar.cookies.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SET_COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_jar_keeps_replaces_and_deletes_cookies() {
        let jar = CookieJar::new();
        assert!(jar.header().is_none() && jar.is_empty());
        jar.store(&set_cookies(&[
            "BAYEUX_BROWSER=abc; Path=/; HttpOnly",
            "other=1",
        ]));
        assert_eq!(jar.header().unwrap(), "BAYEUX_BROWSER=abc; other=1");
        jar.store(&set_cookies(&["other=2", "BAYEUX_BROWSER=x; Max-Age=0"]));
        assert_eq!(jar.header().unwrap(), "other=2");
        jar.store(&HeaderMap::new());
        assert_eq!(jar.header().unwrap(), "other=2");
        assert!(!format!("{jar:?}").contains('2'));
    }
}

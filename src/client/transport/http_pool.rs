//! POSTing a Bayeux batch over hyper and keeping the cookies the server sets: the one
//! implementation shared by the client's long-polling transport and the `bayeux bench`
//! load tool.
//!
//! Over TLS (feature `tls`), `HttpPool::with_tls` opens `https://` connections with
//! rustls; when the server picks HTTP/2 through ALPN (feature `http2`), hyper-util's pool
//! keeps one connection per host and multiplexes every request on it.

#[cfg(not(feature = "cookies"))]
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
        if let Some(cookie) = jar.and_then(|jar| jar.header(url)) {
            h.insert(COOKIE, cookie);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Error::connection(format!("POST {url}"), e))?;
        if let Some(jar) = jar {
            jar.store(url, response.headers());
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

/// The cookies of one session, kept as a browser keeps them (RFC 6265, through the
/// `cookie_store` crate): each `Set-Cookie` is stored with its `Domain`, `Path`,
/// `Expires` / `Max-Age` and `Secure` attributes, and a request carries only the
/// unexpired cookies whose domain and path match its URL, the `Secure` ones only over
/// `https://` and `wss://` (or to a loopback host, as browsers allow). CometD binds
/// sessions to its `BAYEUX_BROWSER` cookie; load balancers in front of it set cookies
/// of their own (stickiness, per path or per domain), and the jar sends each where it
/// belongs.
///
/// WebSocket URLs count as their HTTP twins (`ws://` as `http://`, `wss://` as
/// `https://`), so the cookies of a long-polling request and of an upgrade are the same.
///
/// Without the `cookies` feature (a lean client that does not pull `cookie_store` and
/// `url`), the jar keeps each cookie's name and value only and sends them all back:
/// enough for one CometD server's `BAYEUX_BROWSER` cookie, not for load balancers that
/// scope their cookies by path or domain.
#[derive(Default)]
pub struct CookieJar {
    #[cfg(feature = "cookies")]
    store: Mutex<cookie_store::CookieStore>,
    #[cfg(not(feature = "cookies"))]
    store: Mutex<BTreeMap<String, String>>,
}

/// The URL that cookies are matched against: `ws://` and `wss://` as `http://` and
/// `https://` (an upgrade is an HTTP request). `None` for a URL without a host.
#[cfg(feature = "cookies")]
fn cookie_url(uri: &Uri) -> Option<url::Url> {
    let mut url = url::Url::parse(&uri.to_string()).ok()?;
    let scheme = match url.scheme() {
        "ws" => "http",
        "wss" => "https",
        _ => return Some(url),
    };
    url.set_scheme(scheme).ok()?;
    Some(url)
}

/// Whether `name=value` can be sent back in a `Cookie` header (visible ASCII, no `;`).
fn sendable(name: &str, value: &str) -> bool {
    name.bytes()
        .chain(value.bytes())
        .all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

impl CookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(not(feature = "cookies"))]
impl CookieJar {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the `name=value` of each `Set-Cookie` header (attributes ignored); an
    /// empty value or `Max-Age=0` removes the cookie.
    pub fn store(&self, _url: &Uri, headers: &HeaderMap) {
        for text in headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let expired = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if name.is_empty() {
                continue;
            }
            if expired || value.is_empty() {
                self.lock().remove(name);
            } else if sendable(name, value) {
                self.lock().insert(name.to_string(), value.to_string());
            }
        }
    }

    /// The `Cookie` header with every kept cookie, if any.
    pub fn header(&self, _url: &Uri) -> Option<HeaderValue> {
        let store = self.lock();
        if store.is_empty() {
            return None;
        }
        let text: Vec<String> = store.iter().map(|(n, v)| format!("{n}={v}")).collect();
        HeaderValue::from_str(&text.join("; ")).ok()
    }

    /// Whether no cookie is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(not(feature = "cookies"))]
impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cookie values are session credentials: only the names are shown.
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("CookieJar").field("names", &names).finish()
    }
}

#[cfg(feature = "cookies")]
impl CookieJar {
    fn lock(&self) -> std::sync::MutexGuard<'_, cookie_store::CookieStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the cookies set by the `Set-Cookie` headers of a response to `url`, with
    /// their attributes: a cookie whose `Domain` the URL's host does not match is
    /// refused, and one that is already expired (`Max-Age=0`, an `Expires` in the past)
    /// deletes the cookie of the same name, domain and path.
    pub fn store(&self, url: &Uri, headers: &HeaderMap) {
        let mut set = headers.get_all(SET_COOKIE).iter().peekable();
        if set.peek().is_none() {
            return;
        }
        let Some(url) = cookie_url(url) else { return };
        let cookies = set
            .filter_map(|v| v.to_str().ok())
            .filter_map(|text| cookie_store::RawCookie::parse(text.to_owned()).ok());
        self.lock().store_response_cookies(cookies, &url);
    }

    /// The `Cookie` header for a request to `url`, if any kept cookie matches it
    /// (domain, path, `Secure`, not expired).
    pub fn header(&self, url: &Uri) -> Option<HeaderValue> {
        let url = cookie_url(url)?;
        let store = self.lock();
        let mut text = String::new();
        for (name, value) in store.get_request_values(&url) {
            // Values that cannot be sent back (not visible ASCII) are not sent at all.
            if !sendable(name, value) {
                continue;
            }
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(name);
            text.push('=');
            text.push_str(value);
        }
        if text.is_empty() {
            return None;
        }
        HeaderValue::from_str(&text).ok()
    }

    /// Whether no unexpired cookie is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().iter_unexpired().next().is_none()
    }
}

#[cfg(feature = "cookies")]
impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cookie values are session credentials: only the names are shown.
        let store = self.lock();
        let mut names: Vec<&str> = store.iter_unexpired().map(|c| c.name()).collect();
        names.sort_unstable();
        f.debug_struct("CookieJar").field("names", &names).finish()
    }
}

#[cfg(all(test, feature = "cookies"))]
mod tests {
    use super::*;

    fn set_cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SET_COOKIE, v.parse().unwrap());
        }
        h
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    /// The cookie names of the jar's header for `url`, sorted.
    fn sent(jar: &CookieJar, url: &str) -> Vec<String> {
        let Some(header) = jar.header(&uri(url)) else {
            return Vec::new();
        };
        let mut pairs: Vec<String> = header
            .to_str()
            .unwrap()
            .split("; ")
            .map(str::to_string)
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn the_jar_keeps_replaces_and_deletes_cookies() {
        let jar = CookieJar::new();
        let url = "http://bayeux.example/cometd";
        assert!(jar.header(&uri(url)).is_none() && jar.is_empty());
        jar.store(
            &uri(url),
            &set_cookies(&["BAYEUX_BROWSER=abc; Path=/; HttpOnly", "other=1; Path=/"]),
        );
        assert_eq!(sent(&jar, url), ["BAYEUX_BROWSER=abc", "other=1"]);
        jar.store(
            &uri(url),
            &set_cookies(&["other=2; Path=/", "BAYEUX_BROWSER=x; Path=/; Max-Age=0"]),
        );
        assert_eq!(sent(&jar, url), ["other=2"]);
        jar.store(&uri(url), &HeaderMap::new());
        assert_eq!(sent(&jar, url), ["other=2"]);
        assert!(!format!("{jar:?}").contains('2'));
    }

    #[test]
    fn cookies_go_only_where_their_path_says() {
        let jar = CookieJar::new();
        let base = "http://lb.example";
        jar.store(
            &uri(&format!("{base}/cometd/handshake")),
            &set_cookies(&[
                "everywhere=1; Path=/",
                "cometd=2; Path=/cometd",
                "api=3; Path=/api",
                // No Path: the default path is the request's directory, /cometd.
                "default=4",
            ]),
        );
        assert_eq!(
            sent(&jar, &format!("{base}/cometd/connect")),
            ["cometd=2", "default=4", "everywhere=1"]
        );
        assert_eq!(
            sent(&jar, &format!("{base}/cometd")),
            ["cometd=2", "default=4", "everywhere=1"]
        );
        assert_eq!(
            sent(&jar, &format!("{base}/api/v2")),
            ["api=3", "everywhere=1"]
        );
        // /cometdx is not below /cometd.
        assert_eq!(sent(&jar, &format!("{base}/cometdx")), ["everywhere=1"]);
    }

    #[test]
    fn cookies_expire_and_respect_domain_and_secure() {
        let jar = CookieJar::new();
        let url = "http://node1.lb.example/cometd";
        jar.store(
            &uri(url),
            &set_cookies(&[
                "session=1; Path=/",
                "sticky=n1; Domain=lb.example; Path=/",
                "foreign=x; Domain=other.example; Path=/",
                "gone=1; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                "later=1; Path=/; Expires=Fri, 01 Jan 2100 00:00:00 GMT",
                "secret=s; Path=/; Secure",
            ]),
        );
        // A cookie for another domain is refused; one already expired is not kept.
        assert_eq!(sent(&jar, url), ["later=1", "session=1", "sticky=n1"]);
        // Secure cookies go over https (and wss) only.
        assert_eq!(
            sent(&jar, "https://node1.lb.example/cometd"),
            ["later=1", "secret=s", "session=1", "sticky=n1"]
        );
        assert_eq!(
            sent(&jar, "wss://node1.lb.example/cometd"),
            ["later=1", "secret=s", "session=1", "sticky=n1"]
        );
        // Host-only cookies stay with their host; domain cookies go to its subdomains.
        assert_eq!(sent(&jar, "http://node2.lb.example/cometd"), ["sticky=n1"]);
        // An Expires in the past deletes a kept cookie.
        jar.store(
            &uri(url),
            &set_cookies(&["later=0; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]),
        );
        assert_eq!(sent(&jar, url), ["session=1", "sticky=n1"]);
        assert!(!jar.is_empty());
    }

    #[test]
    fn upgrades_share_the_cookies_of_http_requests() {
        let jar = CookieJar::new();
        jar.store(
            &uri("ws://127.0.0.1:8080/cometd"),
            &set_cookies(&["BAYEUX_BROWSER=b1; Path=/; HttpOnly"]),
        );
        assert_eq!(
            sent(&jar, "http://127.0.0.1:8080/cometd"),
            ["BAYEUX_BROWSER=b1"]
        );
        assert_eq!(
            sent(&jar, "ws://127.0.0.1:8080/cometd"),
            ["BAYEUX_BROWSER=b1"]
        );
    }
}

#[cfg(all(test, not(feature = "cookies")))]
mod lean_jar_tests {
    use super::*;

    fn set(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SET_COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keeps_names_and_values_and_forgets_expired_ones() {
        let url: Uri = "http://127.0.0.1/cometd".parse().unwrap();
        let jar = CookieJar::new();
        assert!(jar.header(&url).is_none());
        jar.store(
            &url,
            &set(&["BAYEUX_BROWSER=abc; Path=/; HttpOnly", "lb=node1"]),
        );
        assert_eq!(jar.header(&url).unwrap(), "BAYEUX_BROWSER=abc; lb=node1");
        jar.store(&url, &set(&["lb=gone; Max-Age=0"]));
        assert_eq!(jar.header(&url).unwrap(), "BAYEUX_BROWSER=abc");
        assert_eq!(
            format!("{jar:?}"),
            r#"CookieJar { names: ["BAYEUX_BROWSER"] }"#
        );
    }
}

//! The HTTP long-polling transport over hyper: a `Service` that turns POSTed batches
//! into Bayeux replies, with body limits and proper status codes, and a ready-made
//! accept loop with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::handler::{RequestContext, process};
use super::limits::{BodyReservation, ClientAddr, ClientKey, Limits};
use super::transport::long_polling;
use super::{Server, ServerConfig};
use crate::protocol::Batch;

/// The body type of every response this crate produces.
pub type ResponseBody = Full<Bytes>;

const JSON: &str = "application/json;charset=UTF-8";

/// A plain-text response with `status`: the clear error for a request that is not a
/// Bayeux batch at all.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<ResponseBody> {
    let mut res = Response::new(Full::new(Bytes::from(message.into() + "\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain;charset=UTF-8".parse().expect("static header"),
    );
    res
}

/// A JSON response with status 200.
pub(crate) fn json(body: Bytes) -> Response<ResponseBody> {
    let mut res = Response::new(Full::new(body));
    res.headers_mut()
        .insert(CONTENT_TYPE, JSON.parse().expect("static header"));
    res
}

impl Server {
    /// Answers one HTTP request carrying a Bayeux batch, whatever its path (routing is
    /// the caller's). Works with any request body type, so it can be called from an
    /// existing hyper, axum or tower stack.
    ///
    /// - `POST` with a JSON body (one message or an array): 200 with the replies. A form
    ///   body (`application/x-www-form-urlencoded`, `message=<JSON>`) is served too.
    /// - Malformed JSON, a body that is not messages, an empty array, more than
    ///   `max_batch` messages: 400. A body over `max_message_size`: 413. A body slower
    ///   than `body_timeout`: 408. Another method: 405.
    /// - With `cors_origins`, CORS headers for allowed origins and `OPTIONS` preflights;
    ///   `403` for an origin that is not allowed; under `*`, other origins are served
    ///   without credentials (see [`ServerConfig::cors_origins`]).
    /// - Per-address budgets need the client's address: requests served by
    ///   [`Server::listen`] carry it; from another stack, insert a [`ClientAddr`] in the
    ///   request's extensions.
    pub async fn handle<B>(&self, mut request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let access = self.cors_access(request.headers(), request.uri().authority());
        // `*` grants no credentials: a request is handled as if it carried none; a
        // WebSocket, which CORS does not protect, is refused if it carries some.
        let mut refuse = access == cors::Access::Denied;
        if access == cors::Access::Anonymous {
            let headers = request.headers();
            let credentials = headers.contains_key(COOKIE) || headers.contains_key(AUTHORIZATION);
            refuse = credentials && wants_websocket(&request);
            let headers = request.headers_mut();
            headers.remove(COOKIE);
            headers.remove(AUTHORIZATION);
        }
        let mut response = if refuse {
            text(StatusCode::FORBIDDEN, "origin not allowed")
        } else {
            self.handle_inner(request, &access).await
        };
        cors::apply(&mut response, &access);
        // `bayeux_http_requests_total`, by status (a long poll counts when answered).
        self.inner().stats.http_response(response.status());
        response
    }

    /// The client a request came from: the [`ClientAddr`] its listener recorded (or, from
    /// a trusted proxy, its `X-Forwarded-For`), if any.
    pub(crate) fn client_of(&self, request: &Request<impl Sized>) -> Option<ClientKey> {
        let peer = request.extensions().get::<ClientAddr>().map(|a| a.0.ip());
        self.inner().limits.client_of(peer, request.headers())
    }

    async fn handle_inner<B>(
        &self,
        request: Request<B>,
        access: &cors::Access,
    ) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let config = self.config();
        #[cfg(feature = "websocket")]
        if super::transport::websocket::is_upgrade(&request) {
            return super::transport::websocket::upgrade(self, request, access);
        }
        #[cfg(feature = "callback-polling")]
        if request.method() == Method::GET && config.callback_polling {
            // Boxed: it is the largest state of this future, which a held long poll keeps.
            return Box::pin(super::transport::callback_polling::respond(self, request)).await;
        }
        if request.method() == Method::OPTIONS && !config.cors_origins.is_empty() {
            return cors::preflight(access, &config.cors_allowed_headers);
        }
        if request.method() != Method::POST {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "Bayeux requests use POST");
            res.headers_mut()
                .insert(ALLOW, "POST".parse().expect("static header"));
            return res;
        }
        let client = self.client_of(&request);
        let (parts, body) = request.into_parts();
        let limit = config.max_message_size;
        // Its bytes count against the body budgets (per client and in total) as they
        // arrive, until it is handled.
        let mut reservation = BodyReservation::empty(&self.inner().limits, client);
        // Boxed, as is `process` below: the request's future is as large as its largest
        // state, and a held long poll should not carry these (BENCHMARKS.md).
        let read = read_body(
            &parts.headers,
            body,
            limit,
            config.body_timeout,
            &mut reservation,
        );
        let bytes = match Box::pin(read).await {
            Ok(bytes) => bytes,
            Err(BodyError::OverBudget) => return over_budget(),
            Err(BodyError::TooLarge) => return too_large(limit),
            Err(BodyError::TimedOut) => {
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} ms",
                        config.body_timeout.as_millis()
                    ),
                );
            }
            Err(BodyError::Read(e)) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                );
            }
        };
        // Faye and old CometD clients may POST a form, `message=<JSON>`: served as Faye
        // serves it (its cross-origin transport sends one as text/plain).
        let parsed = if is_form(&parts.headers, &bytes) {
            form_batch(&bytes)
        } else {
            Batch::parse(&bytes).map_err(|e| e.to_string())
        };
        let batch = match parsed {
            Ok(b) => b,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        if batch.messages.len() > config.max_batch {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "a batch of {} messages is over maxBatch ({})",
                    batch.messages.len(),
                    config.max_batch
                ),
            );
        }
        let http2 = parts.version == http::Version::HTTP_2;
        let ctx = RequestContext {
            headers: &parts.headers,
            browser: browser_cookie(&parts.headers),
            transport: super::ConnectionType::LongPolling,
            client,
        };
        let mut processed = Box::pin(process(self.inner(), &ctx, batch)).await;
        let set_browser = processed
            .set_browser
            .take()
            .and_then(|b| browser_cookie_header(config, &parts.headers, &b));
        // The request's headers and body are slices of hyper's read buffer: let go of
        // them before the long poll, or the connection needs a second buffer meanwhile.
        drop(parts);
        drop(bytes);
        drop(reservation);
        let body = long_polling::respond(self.inner(), processed, http2).await;
        let mut res = json(body);
        if let Some(cookie) = set_browser {
            res.headers_mut().insert(SET_COOKIE, cookie);
        }
        res
    }

    /// How CORS treats a request with these headers (see [`cors::Access`]).
    pub(crate) fn cors_access(
        &self,
        headers: &http::HeaderMap,
        authority: Option<&http::uri::Authority>,
    ) -> cors::Access {
        cors::access(&self.config().cors_origins, headers, authority)
    }
}

/// Why a request body could not be read.
pub(crate) enum BodyError {
    /// Over the limit (declared or actual): 413.
    TooLarge,
    /// Not complete within the body timeout: 408.
    TimedOut,
    /// The connection failed while reading.
    Read(String),
    /// The request body budgets are spent: 503, retry shortly.
    OverBudget,
}

/// Reads a whole request body of at most `limit` bytes within `timeout`, refusing at once
/// a body whose declared `Content-Length` is over the limit. Shared by every endpoint so
/// that none can be held by a slow or oversized body. Each chunk is counted in
/// `reserved` as it arrives (the body budgets, per client and in total: what the body
/// really holds, so a client that declares a large body and sends it slowly holds only
/// what it sent); the caller keeps the reservation until the body is handled.
pub(crate) async fn read_body<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
    timeout: Duration,
    reserved: &mut BodyReservation,
) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let n = bytes::Buf::remaining(&data);
            len += n;
            if len > limit {
                return Err(BodyError::TooLarge);
            }
            reserved.grow(n).map_err(|_| BodyError::OverBudget)?;
            parts.push(bytes::Buf::copy_to_bytes(&mut data, n));
        }
        Ok(match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(len);
                for part in parts {
                    all.extend_from_slice(&part);
                }
                all.freeze()
            }
        })
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(result) => result,
    }
}

/// Whether the request asks for a WebSocket this server can serve.
fn wants_websocket<B>(request: &Request<B>) -> bool {
    #[cfg(feature = "websocket")]
    return super::transport::websocket::is_upgrade(request);
    #[cfg(not(feature = "websocket"))]
    {
        let _ = request;
        false
    }
}

/// The request's `Content-Length`, if it declares one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Whether the request body is a form: `application/x-www-form-urlencoded`, or, under
/// another type than JSON's, a body that starts with `message=` (Faye's
/// `cross-origin-long-polling` sends its form as `text/plain`, the type a browser
/// sends without a preflight).
fn is_form(headers: &http::HeaderMap, body: &[u8]) -> bool {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => true,
        Some("application/json") => false,
        _ => body.starts_with(b"message="),
    }
}

/// The messages of a form body: the JSON (one message or an array) of each `message`
/// field, in order, as Faye's and old CometD clients send them.
fn form_batch(body: &[u8]) -> Result<Batch, String> {
    let mut messages = Vec::new();
    for (key, value) in form_urlencoded::parse(body) {
        if key == "message" {
            let batch = Batch::parse(value.as_bytes())
                .map_err(|e| format!("the form's message field: {e}"))?;
            messages.extend(batch.messages);
        }
    }
    if messages.is_empty() {
        return Err(
            "a form body needs a message field holding the JSON messages (message=[...])".into(),
        );
    }
    Ok(Batch { messages })
}

/// CometD's browser cookie name.
pub const BROWSER_COOKIE: &str = "BAYEUX_BROWSER";

/// The `Set-Cookie` value that gives a browser its `BAYEUX_BROWSER` id: `Path=/` and
/// `HttpOnly`, as CometD sets it, and the attributes a browser needs to send it back:
///
/// - over TLS (the server's own, or a proxy's that says `X-Forwarded-Proto: https`),
///   `Secure`; and with CORS origins configured, `SameSite=None; Partitioned`, so that
///   a page of another site (which `--cors-origin` allows) has it sent with its
///   credentialed requests: browsers accept `SameSite=None` only with `Secure`, and
///   those that block third-party cookies (Chromium does) still keep a `Partitioned`
///   one, for that top-level site (CometD's `browserCookiePartitioned`);
/// - otherwise `SameSite=Lax`, what browsers assume anyway: sent by pages of the same
///   site, which includes every port of the same host (`http://127.0.0.1:8000` and
///   `http://127.0.0.1:8080` are two origins but one site).
pub(crate) fn browser_cookie_header(
    config: &ServerConfig,
    headers: &http::HeaderMap,
    browser: &str,
) -> Option<http::HeaderValue> {
    let same_site = if !is_secure(config, headers) {
        "SameSite=Lax"
    } else if config.cors_origins.is_empty() {
        "Secure; SameSite=Lax"
    } else {
        "Secure; SameSite=None; Partitioned"
    };
    format!("{BROWSER_COOKIE}={browser}; Path=/; HttpOnly; {same_site}")
        .parse()
        .ok()
}

/// Whether the browser reached the server over TLS: the server's own, or a proxy's
/// (`X-Forwarded-Proto: https`).
fn is_secure(config: &ServerConfig, headers: &http::HeaderMap) -> bool {
    if config.serves_tls() {
        return true;
    }
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The value of the `BAYEUX_BROWSER` cookie, if the request has one.
pub(crate) fn browser_cookie(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// Cross-origin resource sharing, off unless origins are configured.
pub(crate) mod cors {
    use http::header::{
        ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, HOST,
        ORIGIN, SET_COOKIE, VARY,
    };
    use http::{HeaderMap, HeaderValue, Response, StatusCode};

    use super::{ResponseBody, text};

    /// The request headers a preflight allows: what the CometD, Faye and our own
    /// clients send (`Pragma` is Faye's), and nothing else whatever was asked.
    pub const ALLOWED_HEADERS: &str =
        "Accept, Authorization, Content-Type, Pragma, X-Requested-With";

    /// The same without `Authorization`, for origins allowed without credentials.
    const ANONYMOUS_HEADERS: &str = "Accept, Content-Type, Pragma, X-Requested-With";

    /// How a request's `Origin` is treated.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Access {
        /// No `Origin`, the endpoint's own origin, or CORS off: no CORS headers (a
        /// browser keeps a foreign page from reading the answer).
        SameOrigin,
        /// An origin listed in `cors_origins`: credentialed access.
        Credentialed(String),
        /// Another origin, allowed by `*`: no credentials are granted or used.
        Anonymous,
        /// CORS is on and the origin is not allowed: `403`.
        Denied,
    }

    /// Whether `origin` names the host the request was sent to (its `Host`, the
    /// authority of an absolute request URI, or the `X-Forwarded-Host` a reverse proxy
    /// sets).
    pub fn same_origin(
        origin: &str,
        headers: &HeaderMap,
        authority: Option<&http::uri::Authority>,
    ) -> bool {
        let Some((_, origin_host)) = origin.split_once("://") else {
            return false;
        };
        [headers.get("x-forwarded-host"), headers.get(HOST)]
            .into_iter()
            .flatten()
            .filter_map(|v| v.to_str().ok())
            .chain(authority.map(|a| a.as_str()))
            .flat_map(|v| v.split(','))
            .any(|h| origin_host.eq_ignore_ascii_case(h.trim()))
    }

    /// How `allowed` (the configured origins) treats a request with `headers`.
    pub fn access(
        allowed: &[String],
        headers: &HeaderMap,
        authority: Option<&http::uri::Authority>,
    ) -> Access {
        let Some(origin) = headers.get(ORIGIN) else {
            return Access::SameOrigin;
        };
        let Ok(origin) = origin.to_str() else {
            return if allowed.is_empty() {
                Access::SameOrigin
            } else {
                Access::Denied
            };
        };
        if allowed.is_empty() || same_origin(origin, headers, authority) {
            return Access::SameOrigin;
        }
        if allowed.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            Access::Credentialed(origin.to_string())
        } else if allowed.iter().any(|o| o == "*") {
            Access::Anonymous
        } else {
            Access::Denied
        }
    }

    /// Adds the headers that let the browser read the response, and takes out a cookie
    /// that an anonymous origin must not be given.
    pub fn apply(res: &mut Response<ResponseBody>, access: &Access) {
        let h = res.headers_mut();
        match access {
            Access::Credentialed(origin) => {
                if let Ok(v) = HeaderValue::from_str(origin) {
                    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
                    h.insert(
                        ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
                h.append(VARY, HeaderValue::from_static("Origin"));
            }
            Access::Anonymous => {
                h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                h.remove(SET_COOKIE);
                h.append(VARY, HeaderValue::from_static("Origin"));
            }
            Access::SameOrigin | Access::Denied => {}
        }
    }

    /// Answers an `OPTIONS` preflight: 204 with the methods and headers the endpoint
    /// accepts for an allowed origin, 403 otherwise.
    pub fn preflight(access: &Access, extra: &[String]) -> Response<ResponseBody> {
        let headers = match access {
            Access::Credentialed(_) | Access::SameOrigin => ALLOWED_HEADERS,
            Access::Anonymous => ANONYMOUS_HEADERS,
            Access::Denied => return text(StatusCode::FORBIDDEN, "origin not allowed"),
        };
        let mut res = text(StatusCode::NO_CONTENT, "");
        *res.body_mut() = ResponseBody::default();
        let h = res.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        let allowed = if extra.is_empty() {
            HeaderValue::from_static(headers)
        } else {
            let list = std::iter::once(headers)
                .chain(extra.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(", ");
            HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static(headers))
        };
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
        res
    }
}

/// The answer to a request whose body the budgets cannot take now: 503, retry shortly.
pub(crate) fn over_budget() -> Response<ResponseBody> {
    let mut res = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many request bodies in flight; retry shortly",
    );
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    res
}

fn too_large(limit: usize) -> Response<ResponseBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than maxMessageSize ({limit} bytes)"),
    )
}

/// The hyper [`Service`] for a [`Server`], optionally mounted at a path.
///
/// With a mount path such as `/cometd`, it answers that path and everything below it
/// (the CometD JavaScript client appends `/handshake`, `/connect`... to the URL) and
/// answers 404 elsewhere.
///
/// An answer given before the request body was read (413, 405, 404) closes the
/// connection as RFC 9112 §9.6 asks: the body is read and discarded (5 s of silence or
/// 30 s in all at most) before the close, so that a client still writing it reads the
/// answer rather than a reset.
#[derive(Clone, Debug)]
pub struct BayeuxService {
    server: Server,
    path: Option<String>,
}

impl BayeuxService {
    /// A service that answers Bayeux on every path.
    pub fn new(server: Server) -> Self {
        BayeuxService { server, path: None }
    }

    /// Restricts the service to `path` and the paths below it.
    pub fn mounted_at(mut self, path: &str) -> Self {
        self.path = Some(path.trim_end_matches('/').to_string());
        self
    }

    /// Whether a request path belongs to this service.
    pub fn matches(&self, path: &str) -> bool {
        match &self.path {
            None => true,
            Some(p) => {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    /// The server this service answers for.
    pub fn server(&self) -> &Server {
        &self.server
    }
}

impl BayeuxService {
    /// Answers one request: Bayeux at the mount path and below, 404 elsewhere.
    pub(crate) async fn respond<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !self.matches(request.uri().path()) {
            self.server
                .inner()
                .stats
                .http_response(StatusCode::NOT_FOUND);
            return text(StatusCode::NOT_FOUND, "not found");
        }
        self.server.handle(request).await
    }
}

impl Service<Request<Incoming>> for BayeuxService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // An early answer (413, 405, 404) still reaches a client that is writing.
            let server = this.server.clone();
            Ok(super::linger::answer(&server, request, |r| this.respond(r)).await)
        })
    }
}

/// A hyper service that [`serve`] and [`Server::listen_with`] can run: it answers every
/// request (no error type) with this crate's response body, and can be cloned per
/// connection and moved across threads. [`BayeuxService`] and the workbin `DemoApp` are
/// such services; any other with these bounds is too.
pub trait HttpService:
    Service<
        Request<Incoming>,
        Response = Response<ResponseBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: Service<
            Request<Incoming>,
            Response = Response<ResponseBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `service` on `listener` over HTTP/1.1 until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish, and returns.
///
/// Headers must arrive within 30 s of a connection's first byte (a slowloris guard).
/// [`serve_with_config`] takes the connection settings of a [`ServerConfig`] instead
/// (header timeout, TLS, HTTP/2), as [`Server::listen`] does.
/// Call [`Server::shutdown`] before (or as part of) `shutdown`, so that pending long
/// polls are answered at once rather than at their timeout.
pub async fn serve<S: HttpService>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with_config(listener, service, shutdown, &ServerConfig::default()).await
}

/// [`serve`] with the connection settings of `config`:
///
/// - `header_timeout`: HTTP/1.1 request headers must arrive within it, and a connection
///   with no request in progress for that long is closed (HTTP/2 included);
/// - `tls` (feature `tls`): every connection is TLS, its handshake bounded by
///   `tls_handshake_timeout`; with the `http2` feature, ALPN `h2` gets HTTP/2 and
///   anything else HTTP/1.1 (with WebSocket upgrades: `wss://`);
/// - `http2_prior_knowledge` (feature `http2`): cleartext connections that open with
///   the HTTP/2 preface get HTTP/2, others HTTP/1.1.
///
/// Every connection is handled in its own task, TLS handshake included, so a client
/// that stalls costs only its own task and socket until its timeout.
pub async fn serve_with_config<S: HttpService>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    config: &ServerConfig,
) -> io::Result<()> {
    // Without a server at hand, the connection budgets are this loop's own.
    let limits = Arc::new(Limits::new(config));
    accept_loop(
        listener,
        service,
        shutdown,
        Arc::new(Connections::new(config, limits)),
    )
    .await
}

/// How each accepted connection is served, from a [`ServerConfig`].
struct Connections {
    /// The connection budgets (total and per client address).
    limits: Arc<Limits>,
    /// Refused connections being answered right now (see [`refuse_connection`]).
    refusing: std::sync::atomic::AtomicUsize,
    http1: http1::Builder,
    #[cfg(feature = "http2")]
    http2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
    /// How long a connection may have no request in progress: hyper's header read
    /// timeout for HTTP/1.1, [`h2::Activity`] for HTTP/2; it also bounds the wait for
    /// the HTTP/2 preface.
    #[cfg(feature = "http2")]
    idle_timeout: Duration,
    /// The acceptor and the handshake's timeout.
    #[cfg(feature = "tls")]
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    #[cfg(feature = "http2")]
    prior_knowledge: bool,
}

/// The HTTP version of a TLS connection.
#[cfg(feature = "tls")]
#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    /// Negotiated through ALPN.
    #[cfg(feature = "http2")]
    Http2,
    /// No ALPN, and prior knowledge on: HTTP/2 if the client opens with its preface.
    #[cfg(feature = "http2")]
    Detect,
}

impl Connections {
    fn new(config: &ServerConfig, limits: Arc<Limits>) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout);
        Connections {
            limits,
            refusing: std::sync::atomic::AtomicUsize::new(0),
            http1,
            #[cfg(feature = "http2")]
            http2: {
                let mut http2 =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                http2.timer(TokioTimer::new());
                http2
            },
            #[cfg(feature = "http2")]
            idle_timeout: config.header_timeout,
            #[cfg(feature = "tls")]
            tls: config.tls().map(|tls| {
                (
                    tokio_rustls::TlsAcceptor::from(tls.rustls_config()),
                    config.tls_handshake_timeout,
                )
            }),
            #[cfg(feature = "http2")]
            prior_knowledge: config.http2_prior_knowledge,
        }
    }
}

/// Logs accept errors (out of file descriptors, mostly) at `warn`, at most one line a
/// second, with the number of errors since the last line: the accept loop retries every
/// 10 ms, and one line per retry would flood the log.
#[cfg(feature = "tracing")]
#[derive(Default)]
struct AcceptErrors {
    last: Option<tokio::time::Instant>,
    since: u64,
}

#[cfg(feature = "tracing")]
impl AcceptErrors {
    fn report(&mut self, error: &io::Error) {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            error = %error,
            errors = self.since,
            "cannot accept connections; retrying"
        );
        self.last = Some(now);
        self.since = 0;
    }
}

/// Logs a connection that ended with an error (at `debug`: clients that go away, reset,
/// or send no headers within `header_timeout` are routine).
fn connection_error(result: Result<(), hyper::Error>) {
    #[cfg(feature = "tracing")]
    if let Err(e) = result {
        tracing::debug!(error = %e, timeout = e.is_timeout(), "connection error");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = result;
}

/// Completes once the accept loop says the server is stopping.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

async fn accept_loop<S: HttpService>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    connections: Arc<Connections>,
) -> io::Result<()> {
    // Graceful shutdown by hand: hyper-util's GracefulShutdown does not take
    // connections that can be upgraded (WebSocket). Each connection task watches
    // `stopping`, and holds a clone of `alive`, so that waiting for `alive` to close waits
    // for every connection to finish.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    #[cfg(feature = "tracing")]
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors or a connection reset before accept: back off
                    // briefly instead of spinning, and keep serving.
                    Err(e) => {
                        #[cfg(feature = "tracing")]
                        accept_errors.report(&e);
                        #[cfg(not(feature = "tracing"))]
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Over a budget: refused at once, before any task or buffer is spent on it.
                let slot = match connections.limits.open_connection(peer.ip()) {
                    Ok(slot) => slot,
                    Err(_) => {
                        refuse_connection(stream, &connections);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Shared with an upgraded socket, which outlives the HTTP connection and
                // keeps counting as a connection until it closes.
                let slot = Arc::new(slot);
                let service = WithClientAddr {
                    inner: service.clone(),
                    addr: ClientAddr(peer),
                    slot: ConnectionHold(slot.clone()),
                };
                let connections = connections.clone();
                let (stopping, alive) = (stopping.clone(), alive.clone());
                let task = async move {
                    connection(stream, peer, service, &connections, stopping).await;
                    drop(slot);
                    drop(alive);
                };
                // The connection's events (its errors, its TLS handshake) name the peer.
                #[cfg(feature = "tracing")]
                let task = tracing::Instrument::instrument(
                    task,
                    tracing::debug_span!("connection", %peer),
                );
                tokio::spawn(task);
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(alive);
    let _ = all_done.recv().await;
    Ok(())
}

/// The answer to a connection over a budget, written if the socket takes it at once
/// (it is fresh, so it does): a plain `503` that closes, so a client sees why. A TLS
/// connection is closed without a word (it has not handshaken).
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 35\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections; retry later\r\n";

/// How many refused connections one listener answers at once: past it, a refused
/// connection is closed without an answer.
const MAX_REFUSING: usize = 256;

/// Answers a connection over a budget with [`REFUSED`] and closes it. The request the
/// client already sent is read and discarded (1 s, 64 KiB at most) before the close, so
/// that the kernel does not reset the connection over unread bytes and the client
/// reads the 503; that costs a small task, so only [`MAX_REFUSING`] at once per
/// listener (counted in [`Connections::refusing`]).
fn refuse_connection(stream: TcpStream, connections: &Arc<Connections>) {
    use std::sync::atomic::Ordering;
    if connections.is_tls() {
        return;
    }
    if connections.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        connections.refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let connections = connections.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(REFUSED).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut read = 0;
            while read < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => read += n,
                }
            }
            io::Result::Ok(())
        })
        .await;
        connections.refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

impl Connections {
    /// Whether connections are TLS.
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// A connection's place in the connection budgets, in each request's extensions: a
/// WebSocket upgrade takes a clone, so that the socket counts as a connection for as
/// long as it lives.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionHold(#[allow(dead_code)] pub Arc<super::limits::ConnectionSlot>);

/// A connection's service: each request carries the connection's [`ClientAddr`] and
/// its [`ConnectionHold`] in its extensions, for the budgets.
#[derive(Clone)]
struct WithClientAddr<S> {
    inner: S,
    addr: ClientAddr,
    slot: ConnectionHold,
}

impl<S: HttpService> Service<Request<Incoming>> for WithClientAddr<S> {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = S::Future;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.addr);
        request.extensions_mut().insert(self.slot.clone());
        self.inner.call(request)
    }
}

/// Serves one accepted connection: the TLS handshake (bounded by its timeout) if TLS is
/// on, then HTTP/1.1 or HTTP/2. Runs in the connection's own task.
///
/// Plain HTTP/1.1 is served inline; the other kinds are boxed, so that the task of a
/// plain connection (most of them, and each idle long poll holds one) is not as large
/// as the TLS and HTTP/2 states it does not use.
async fn connection<S: HttpService>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    connections: &Connections,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    #[cfg(feature = "tls")]
    if let Some((acceptor, limit)) = &connections.tls {
        let tls = tls_connection(
            stream,
            peer,
            acceptor,
            *limit,
            service,
            connections,
            stopping,
        );
        return Box::pin(tls).await;
    }
    let _ = peer;
    #[cfg(feature = "http2")]
    if connections.prior_knowledge {
        return Box::pin(detect_and_serve(stream, service, connections, stopping)).await;
    }
    serve_http1(stream, service, connections, stopping).await
}

/// A TLS connection: the handshake within its timeout (a client that stalls or fails it
/// is dropped, and only it), then HTTP as ALPN says: `h2` is HTTP/2, `http/1.1` HTTP/1.1
/// with upgrades (`wss://`), none HTTP/1.1 (or the preface decides, with prior
/// knowledge).
#[cfg(feature = "tls")]
async fn tls_connection<S: HttpService>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    limit: Duration,
    service: S,
    connections: &Connections,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(limit, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                #[cfg(not(feature = "tracing"))]
                let _ = (e, peer);
                return;
            }
            Err(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(%peer, timeout = ?limit, "TLS handshake timed out");
                return;
            }
        },
        _ = stopped(&mut stopping) => return,
    };
    let protocol = match tls.get_ref().1.alpn_protocol() {
        #[cfg(feature = "http2")]
        Some(b"h2") => Protocol::Http2,
        #[cfg(feature = "http2")]
        None if connections.prior_knowledge => Protocol::Detect,
        _ => Protocol::Http1,
    };
    match protocol {
        Protocol::Http1 => serve_http1(tls, service, connections, stopping).await,
        #[cfg(feature = "http2")]
        Protocol::Http2 => Box::pin(h2::serve(tls, service, connections, stopping)).await,
        #[cfg(feature = "http2")]
        Protocol::Detect => Box::pin(detect_and_serve(tls, service, connections, stopping)).await,
    }
}

/// Serves HTTP/2 if the connection opens with its preface (prior knowledge), HTTP/1.1
/// otherwise; the preface must come within the idle timeout.
#[cfg(feature = "http2")]
async fn detect_and_serve<I, S>(
    io: I,
    service: S,
    connections: &Connections,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let detect = tokio::time::timeout(connections.idle_timeout, h2::detect(io));
    let (is_http2, io) = tokio::select! {
        done = detect => match done {
            Ok(Ok(detected)) => detected,
            Ok(Err(_)) | Err(_) => return,
        },
        _ = stopped(&mut stopping) => return,
    };
    if is_http2 {
        h2::serve(io, service, connections, stopping).await
    } else {
        serve_http1(io, service, connections, stopping).await
    }
}

/// HTTP/1.1 with upgrades (WebSocket), hyper's header read timeout as the slowloris
/// guard, and a graceful shutdown when the server stops.
async fn serve_http1<I, S>(
    io: I,
    service: S,
    connections: &Connections,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let conn = connections
        .http1
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => connection_error(result),
        _ = stopped(&mut stopping) => {
            conn.as_mut().graceful_shutdown();
            connection_error(conn.await);
        }
    }
}

/// HTTP/2 connections: served by hyper's HTTP/2 server, closed when idle, and the
/// cleartext preface detection for prior knowledge.
#[cfg(feature = "http2")]
mod h2 {
    use std::convert::Infallible;
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::{Buf, Bytes};
    use http::{Request, Response};
    use hyper::body::Incoming;
    use hyper::service::Service;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
    use tokio::sync::Notify;

    use super::{Connections, HttpService, ResponseBody, stopped};
    use crate::server::notified_until;

    /// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Serves HTTP/2 on `io` until the client closes, the server stops, or no request
    /// has been in progress for the idle timeout (then GOAWAY, as HTTP/1.1's header
    /// timeout closes an idle connection). Every stream is a request of its own, so
    /// the long polls and publishes of one session may share the connection.
    pub(super) async fn serve<I, S>(
        io: I,
        service: S,
        connections: &Connections,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService,
    {
        let activity = Arc::new(Activity::default());
        let service = Tracked {
            inner: service,
            activity: activity.clone(),
        };
        let conn = connections
            .http2
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => return super::connection_error(result),
            _ = stopped(&mut stopping) => {}
            _ = activity.idle_for(connections.idle_timeout) => {}
        }
        conn.as_mut().graceful_shutdown();
        super::connection_error(conn.await);
    }

    /// Reads the first bytes of a cleartext connection: whether they are the HTTP/2
    /// preface, and the connection with those bytes put back.
    pub(super) async fn detect<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(bool, Prefixed<I>)> {
        let mut buf = [0u8; PREFACE.len()];
        let mut len = 0;
        while len < buf.len() {
            let n = io.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len] != PREFACE[..len] {
                break;
            }
        }
        let is_http2 = buf[..len] == PREFACE[..];
        Ok((
            is_http2,
            Prefixed {
                prefix: Bytes::copy_from_slice(&buf[..len]),
                io,
            },
        ))
    }

    /// A connection whose first bytes were already read: they are read again first.
    pub(super) struct Prefixed<I> {
        prefix: Bytes,
        io: I,
    }

    impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.prefix.has_remaining() {
                let n = self.prefix.len().min(buf.remaining());
                buf.put_slice(&self.prefix[..n]);
                self.prefix.advance(n);
                return Poll::Ready(Ok(()));
            }
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The requests in progress on one HTTP/2 connection.
    #[derive(Default)]
    struct Activity {
        requests: AtomicUsize,
        /// Woken when the count leaves or reaches zero.
        changed: Notify,
    }

    impl Activity {
        fn start(self: &Arc<Self>) -> InFlight {
            if self.requests.fetch_add(1, Ordering::AcqRel) == 0 {
                self.changed.notify_waiters();
            }
            InFlight(self.clone())
        }

        /// Completes once no request has been in progress for `limit`.
        async fn idle_for(&self, limit: Duration) {
            loop {
                notified_until(&self.changed, || self.requests.load(Ordering::Acquire) == 0).await;
                let busy =
                    notified_until(&self.changed, || self.requests.load(Ordering::Acquire) > 0);
                if tokio::time::timeout(limit, busy).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Counts one request in progress until dropped (answered, or its stream reset).
    struct InFlight(Arc<Activity>);

    impl Drop for InFlight {
        fn drop(&mut self) {
            if self.0.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.0.changed.notify_waiters();
            }
        }
    }

    /// The connection's service, counting its requests in progress.
    #[derive(Clone)]
    struct Tracked<S> {
        inner: S,
        activity: Arc<Activity>,
    }

    impl<S: HttpService> Service<Request<Incoming>> for Tracked<S> {
        type Response = Response<ResponseBody>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn call(&self, request: Request<Incoming>) -> Self::Future {
            let in_flight = self.activity.start();
            let response = self.inner.call(request);
            Box::pin(async move {
                let response = response.await;
                drop(in_flight);
                response
            })
        }
    }
}

/// A running HTTP server started by [`Server::listen`].
#[derive(Debug)]
pub struct Listening {
    addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    server: Server,
}

impl Listening {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Bayeux endpoint's URL, e.g. `http://127.0.0.1:8080/cometd`, or
    /// `https://...` when the server serves TLS.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// The WebSocket URL of the endpoint at `path`: `ws://...`, or `wss://...` with TLS.
    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// Whether connections are TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Stops the HTTP server gracefully and waits for it.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        // Upgraded connections are not the accept loop's any more: wait (a bounded
        // time) for the sockets to answer their held connects and close (1001).
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.server.inner().sockets_closed(),
        )
        .await;
        result
    }
}

impl Server {
    /// Binds `addr` and serves this server's Bayeux endpoint at `path` (404 elsewhere)
    /// in a background task, over TLS when the config has `tls`, and HTTP/2 as the
    /// config says (see [`serve_with_config`]). [`Listening::shutdown`] ends every session, answers pending
    /// connects, and waits for the connections to close.
    pub async fn listen(&self, addr: SocketAddr, path: &str) -> io::Result<Listening> {
        let service = self.service().mounted_at(path);
        Self::listen_with(self.clone(), addr, service).await
    }

    /// Like [`Server::listen`] with any service (e.g. one that routes other paths too).
    pub async fn listen_with<S: HttpService>(
        server: Server,
        addr: SocketAddr,
        service: S,
    ) -> io::Result<Listening> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let connections = Arc::new(Connections::new(
            server.config(),
            server.inner().limits.clone(),
        ));
        let tls = server.config().serves_tls();
        let server_handle = server.clone();
        let task = tokio::spawn(accept_loop(
            listener,
            service,
            async move {
                let _ = stopped.await;
                server.shutdown();
            },
            connections,
        ));
        Ok(Listening {
            addr,
            tls,
            stop: Some(stop),
            task,
            server: server_handle,
        })
    }
}

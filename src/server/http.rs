//! The HTTP long-polling transport over hyper: a `Service` that turns POSTed batches
//! into Bayeux replies, with body limits and proper status codes, and a ready-made
//! accept loop with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Server;
use super::handler::{RequestContext, process};
use super::transport::long_polling;
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
    /// - `POST` with a JSON body (one message or an array): 200 with the replies.
    /// - Malformed JSON, a body that is not messages, an empty array, more than
    ///   `max_batch` messages: 400. A body over `max_message_size`: 413. A body slower
    ///   than `body_timeout`: 408. Another method: 405.
    /// - With `cors_origins`, CORS headers for allowed origins and `OPTIONS` preflights.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let origin = self.allowed_origin(request.headers());
        let mut response = self.handle_inner(request).await;
        if let Some(origin) = origin {
            cors::allow(&mut response, &origin);
        }
        response
    }

    async fn handle_inner<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let config = self.config();
        #[cfg(feature = "websocket")]
        if super::transport::websocket::is_upgrade(&request) {
            return super::transport::websocket::upgrade(self, request);
        }
        #[cfg(feature = "callback-polling")]
        if request.method() == Method::GET && config.callback_polling {
            // Boxed: it is the largest state of this future, which a held long poll keeps.
            return Box::pin(super::transport::callback_polling::respond(self, request)).await;
        }
        if request.method() == Method::OPTIONS && !config.cors_origins.is_empty() {
            return cors::preflight(
                request.headers(),
                self.allowed_origin(request.headers()).is_some(),
            );
        }
        if request.method() != Method::POST {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "Bayeux requests use POST");
            res.headers_mut()
                .insert(ALLOW, "POST".parse().expect("static header"));
            return res;
        }
        let (parts, body) = request.into_parts();
        let limit = config.max_message_size;
        // Boxed, as is `process` below: the request's future is as large as its largest
        // state, and a held long poll should not carry these (BENCHMARKS.md).
        let bytes =
            match Box::pin(read_body(&parts.headers, body, limit, config.body_timeout)).await {
                Ok(bytes) => bytes,
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
        let batch = match Batch::parse(&bytes) {
            Ok(b) => b,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
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
        let ctx = RequestContext {
            headers: &parts.headers,
            browser: browser_cookie(&parts.headers),
        };
        let mut processed = Box::pin(process(self.inner(), &ctx, batch)).await;
        let set_browser = processed.set_browser.take();
        let body = long_polling::respond(self.inner(), processed).await;
        let mut res = json(body);
        // The request's headers and body are slices of hyper's read buffer: let go of
        // them before the long poll, or the connection needs a second buffer meanwhile.
        drop(parts);
        drop(bytes);
        if let Some(cookie) = set_browser.as_deref().and_then(browser_cookie_header) {
            res.headers_mut().insert(SET_COOKIE, cookie);
        }
        res
    }

    /// The request's `Origin` when CORS allows it.
    pub(crate) fn allowed_origin(&self, headers: &http::HeaderMap) -> Option<String> {
        let origin = headers.get(ORIGIN)?.to_str().ok()?;
        let allowed = &self.config().cors_origins;
        allowed
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
            .then(|| origin.to_string())
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
}

/// Reads a whole request body of at most `limit` bytes within `timeout`, refusing at once
/// a body whose declared `Content-Length` is over the limit. Shared by every endpoint so
/// that none can be held by a slow or oversized body.
pub(crate) async fn read_body<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}

/// CometD's browser cookie name.
pub const BROWSER_COOKIE: &str = "BAYEUX_BROWSER";

/// The `Set-Cookie` value that gives a browser its `BAYEUX_BROWSER` id.
pub(crate) fn browser_cookie_header(browser: &str) -> Option<http::HeaderValue> {
    format!("{BROWSER_COOKIE}={browser}; Path=/; HttpOnly; SameSite=Lax")
        .parse()
        .ok()
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
mod cors {
    use http::header::{
        ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
        ACCESS_CONTROL_REQUEST_HEADERS, VARY,
    };
    use http::{HeaderMap, HeaderValue, Response, StatusCode};

    use super::{ResponseBody, text};

    /// Adds the headers that let the browser at `origin` read the response.
    pub fn allow(res: &mut Response<ResponseBody>, origin: &str) {
        if let Ok(v) = HeaderValue::from_str(origin) {
            let h = res.headers_mut();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.append(VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// Answers an `OPTIONS` preflight: 204 for an allowed origin, 403 otherwise.
    pub fn preflight(headers: &HeaderMap, allowed: bool) -> Response<ResponseBody> {
        if !allowed {
            return text(StatusCode::FORBIDDEN, "origin not allowed");
        }
        let mut res = text(StatusCode::NO_CONTENT, "");
        *res.body_mut() = ResponseBody::default();
        let h = res.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        let requested = headers
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("Content-Type, Authorization"));
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
        res
    }
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
        Box::pin(async move { Ok(this.respond(request).await) })
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
/// Headers must arrive within 30 s of a connection's first byte (a slowloris guard;
/// [`Server::listen`] uses the server's `header_timeout`).
/// Call [`Server::shutdown`] before (or as part of) `shutdown`, so that pending long
/// polls are answered at once rather than at their timeout.
pub async fn serve<S: HttpService>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with_header_timeout(listener, service, shutdown, Duration::from_secs(30)).await
}

/// [`serve`] with a chosen header read timeout.
pub(crate) async fn serve_with_header_timeout<S: HttpService>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
) -> io::Result<()> {
    // Graceful shutdown by hand: hyper-util's GracefulShutdown does not take
    // connections that can be upgraded (WebSocket). Each connection task watches
    // `stopping`, and holds a clone of `alive`, so that waiting for `alive` to close waits
    // for every connection to finish.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of descriptors or a connection reset before accept: back off
                    // briefly instead of spinning, and keep serving.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service.clone())
                    .with_upgrades();
                let (mut stopping, alive) = (stopping.clone(), alive.clone());
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    drop(alive);
                });
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

/// A running HTTP server started by [`Server::listen`].
#[derive(Debug)]
pub struct Listening {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    server: Server,
}

impl Listening {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Bayeux endpoint's URL, e.g. `http://127.0.0.1:8080/cometd`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
    /// in a background task. [`Listening::shutdown`] ends every session, answers pending
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
        let header_timeout = server.config().header_timeout;
        let server_handle = server.clone();
        let task = tokio::spawn(serve_with_header_timeout(
            listener,
            service,
            async move {
                let _ = stopped.await;
                server.shutdown();
            },
            header_timeout,
        ));
        Ok(Listening {
            addr,
            stop: Some(stop),
            task,
            server: server_handle,
        })
    }
}

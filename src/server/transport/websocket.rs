//! The WebSocket transport over the transport-neutral session, as CometD's WebSocket
//! transport behaves on the wire.
//!
//! - The upgrade is accepted on the Bayeux endpoint (hyper's upgrade mechanism; framing
//!   by tokio-tungstenite). The `Origin` and CORS rules apply to the upgrade request, and
//!   the `BAYEUX_BROWSER` cookie is read from it (or set on the `101` response).
//! - Each text frame carries one JSON array of messages (a single object is accepted);
//!   replies keep request order and go out as one frame.
//! - Messages for the session are pushed as soon as they are queued, everything queued
//!   together in one frame; a `/meta/connect` is held as a heartbeat and answered after
//!   `timeout`. A session with acknowledged delivery gets its messages with the connect
//!   replies only, as CometD does (total order, batch numbers), so the connect returns as
//!   soon as there is something to send.
//! - A socket that closes without `/meta/disconnect` leaves the session to expire after
//!   `maxInterval`; `/meta/disconnect` ends the session and closes the socket (1000).
//! - Bad input gets a close code: a message over `maxMessageSize` 1009, a binary frame
//!   1003, invalid UTF-8 or a body that is not JSON messages 1007, a batch over
//!   `maxBatch` or a ping flood 1008; a socket that sends no Bayeux message for longer
//!   than `timeout + maxInterval` (pings do not count), or that does not take a frame
//!   within that time, is closed (1001, or 1008 for the reader that does not read).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, SET_COOKIE, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame, Utf8Bytes};

use crate::protocol::message::encode_array;
use crate::protocol::{Batch, META_DISCONNECT, META_HANDSHAKE, Message};
use crate::server::handler::{self, RequestContext, process};
use crate::server::http::{ResponseBody, browser_cookie, browser_cookie_header, cors, text};
use crate::server::limits::{BodyReservation, ClientKey, PendingWebSocket, Refusal};
use crate::server::session::{Attachment, CloseReason, Outbound, new_client_id};
use crate::server::stats::PendingConnect;
use crate::server::{ConnectionType, Inner, Server};

/// The most bytes of messages put into one frame (a single larger message goes alone).
const FRAME_CAP: usize = 32 * 1024;

/// Pings accepted per second before the socket is closed (1008): answering pings costs
/// the server, and a client needs a handful at most.
const MAX_PINGS_PER_SECOND: u32 = 50;

/// Whether the request asks to upgrade to WebSocket. Only HTTP/1.x has this upgrade:
/// HTTP/2 forbids the `Connection` header (a client over HTTP/2 uses long-polling, or
/// opens its socket over HTTP/1.1).
pub(crate) fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    request.method() == http::Method::GET
        && request.version() <= http::Version::HTTP_11
        && has_token(UPGRADE, "websocket")
        && has_token(CONNECTION, "upgrade")
}

/// Whether a browser at `Origin` may open a socket, as CORS decided (`access`): with
/// CORS origins configured, a listed origin, or any origin under `*` provided the
/// upgrade carries no cookie and no `Authorization` (a socket is not protected by CORS,
/// and `*` grants no credentials); without, the endpoint's own origin only, since
/// another site's page must not open a socket with the user's cookies. Clients that
/// send no `Origin` (not browsers) are accepted.
fn origin_allowed(
    server: &Server,
    headers: &HeaderMap,
    authority: Option<&http::uri::Authority>,
    access: &cors::Access,
) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    if !server.config().cors_origins.is_empty() {
        return match access {
            cors::Access::SameOrigin | cors::Access::Credentialed(_) => true,
            cors::Access::Anonymous => {
                !headers.contains_key(COOKIE) && !headers.contains_key(AUTHORIZATION)
            }
            cors::Access::Denied => false,
        };
    }
    origin
        .to_str()
        .is_ok_and(|o| cors::same_origin(o, headers, authority))
}

/// Answers an upgrade request: `101` and a task that serves the socket, or the HTTP
/// error that says why not.
pub(crate) fn upgrade<B>(
    server: &Server,
    mut request: Request<B>,
    access: &cors::Access,
) -> Response<ResponseBody> {
    let inner = server.inner().clone();
    let headers = request.headers();
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut res = text(StatusCode::BAD_REQUEST, "WebSocket version 13 is required");
        res.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return res;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let authority = request.uri().authority();
    if !origin_allowed(server, headers, authority, access) {
        return text(StatusCode::FORBIDDEN, "origin not allowed");
    }
    if inner.is_shutting_down() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "server shutting down");
    }
    // Sockets that have not handshaken yet are few per client, and short-lived.
    let client = server.client_of(&request);
    let Ok(pending) = inner.limits.open_pending_websocket(client) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSockets from this address are waiting for their handshake",
        );
    };
    let headers = request.headers();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let (browser, new_browser) = match browser_cookie(headers) {
        Some(b) => (b.to_string(), false),
        None => (new_client_id(), true),
    };
    let set_browser = new_browser
        .then(|| browser_cookie_header(&inner.config, headers, &browser))
        .flatten();
    // Copied, not cloned: a cloned value shares hyper's 8 KiB read buffer, which it
    // would then keep for as long as the socket lives.
    let upgrade_headers = owned_headers(headers);
    // The socket keeps its connection's place in the connection budgets.
    let connection = request
        .extensions()
        .get::<crate::server::http::ConnectionHold>()
        .cloned();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let mut res = Response::new(ResponseBody::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(cookie) = set_browser {
        h.insert(SET_COOKIE, cookie);
    }
    let config = socket_config(&inner);
    // Counted from now, so a shutdown that starts while the upgrade completes waits too.
    let guard = inner.socket_opened();
    let task = async move {
        let _guard = guard;
        let _connection = connection;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let input = Metered {
            io: TokioIo::new(upgraded),
            reserved: BodyReservation::empty(&inner.limits, client),
        };
        let ws = WebSocketStream::from_raw_socket(input, Role::Server, Some(config)).await;
        Socket::new(inner, ws, upgrade_headers, browser, client, pending)
            .run()
            .await;
    };
    tokio::spawn(task);
    res
}

/// A copy of `headers` that owns its bytes (for the security policy of every batch),
/// without the handshake's key (of no use once the socket is open).
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if name == SEC_WEBSOCKET_KEY {
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            owned.append(name.clone(), value);
        }
    }
    owned
}

/// Frame limits and small buffers: an idle socket should cost little. The read buffer
/// grows for a large frame; 1 KiB holds the connects a subscriber sends (4 KiB cost
/// 4 KiB more per idle session, measured in BENCHMARKS.md).
fn socket_config(inner: &Inner) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 1024;
    config.write_buffer_size = 0;
    config.max_message_size = Some(inner.config.max_message_size);
    config.max_frame_size = Some(inner.config.max_message_size);
    config
}

/// A `/meta/connect` held as a heartbeat.
struct Held {
    request: Message,
    deadline: Instant,
    /// Counts it in `bayeux_connects_pending` while it is held.
    _pending: PendingConnect,
}

/// What woke the socket's loop.
enum Event {
    Frame(Option<Result<Frame, tungstenite::Error>>),
    Ready,
    ConnectDue,
    Idle,
    /// No handshake within `websocket_handshake_timeout`.
    HandshakeDue,
    Shutdown,
}

/// Why the socket ends.
struct Close(CloseCode, &'static str);

type Io = Metered<TokioIo<hyper::upgrade::Upgraded>>;

/// A socket's input, counted against the request body budgets (`max_body_bytes`, per
/// client and in total) from the first byte of a message until the message is handled,
/// as an HTTP body is: thousands of sockets each part-way through a large message cannot
/// hold more than the budget. Bytes the budget refuses end the socket (1008).
struct Metered<I> {
    io: I,
    reserved: BodyReservation,
}

impl<I> Metered<I> {
    /// The message read so far is handled: its bytes are given back.
    fn settle(&mut self) {
        self.reserved.clear();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                match this.reserved.grow(n) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(_) => Poll::Ready(Err(std::io::Error::other(BUDGET_REFUSED))),
                }
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The error a socket's input ends with when the body budget refuses its bytes.
const BUDGET_REFUSED: &str = "request body budget exhausted";

/// One open socket.
struct Socket {
    inner: Arc<Inner>,
    ws: WebSocketStream<Io>,
    headers: HeaderMap,
    browser: String,
    /// The session this socket carries, once a connect named it.
    attached: Option<Attachment>,
    /// Boxed: a `Message` is large, and most sockets spend their life waiting.
    held: Option<Box<Held>>,
    last_frame: Instant,
    pings: (Instant, u32),
    /// The client the socket came from.
    client: Option<ClientKey>,
    /// Counted among its client's sockets that have not handshaken, until one does.
    pending: PendingWebSocket,
    /// When the socket is closed if it has not handshaken by then.
    handshake_due: Instant,
}

impl Socket {
    fn new(
        inner: Arc<Inner>,
        ws: WebSocketStream<Io>,
        headers: HeaderMap,
        browser: String,
        client: Option<ClientKey>,
        pending: PendingWebSocket,
    ) -> Self {
        let now = Instant::now();
        // A deadline past what the clock can hold is no deadline (a year on).
        let handshake_due = now
            .checked_add(inner.config.websocket_handshake_timeout)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        Socket {
            inner,
            ws,
            headers,
            browser,
            attached: None,
            held: None,
            last_frame: now,
            pings: (now, 0),
            client,
            pending,
            handshake_due,
        }
    }

    /// Says why the server closes the socket: at `info` for what an operator may act on
    /// (a client that does not read, floods pings, or sends too much), at `debug`
    /// otherwise (disconnects, idle sockets, shutdown, read errors).
    #[cfg(feature = "tracing")]
    fn log_close(&self, close: &Close) {
        let session = self.attached.as_ref().map(|a| a.session());
        let client_id = session.map_or("", |s| s.id());
        let user = session.and_then(|s| s.info.user.as_deref()).unwrap_or("");
        let code = u16::from(close.0);
        if matches!(close.0, CloseCode::Policy | CloseCode::Size) {
            tracing::info!(client_id, user, code, reason = close.1, "closing WebSocket");
        } else {
            tracing::debug!(client_id, user, code, reason = close.1, "closing WebSocket");
        }
    }

    /// How long the socket may be silent, and how long a frame may take to go out.
    fn patience(&self) -> Duration {
        self.inner.config.timeout + self.inner.config.max_interval
    }

    async fn run(mut self) {
        let close = loop {
            match self.next_event().await {
                Event::Shutdown => {
                    if self.held.is_some() {
                        let _ = self.answer_connect().await;
                    }
                    break Close(CloseCode::Away, "server shutting down");
                }
                Event::Idle => break Close(CloseCode::Away, "idle"),
                Event::HandshakeDue => {
                    self.inner.limits.refuse(
                        Refusal::WebSocketHandshakeTimeout,
                        self.client,
                        "WebSocket closed (1008)",
                    );
                    break Close(CloseCode::Policy, "no handshake in time");
                }
                Event::Frame(None) => return,
                Event::Frame(Some(Err(e))) => break close_for(&e),
                Event::Frame(Some(Ok(frame))) => {
                    // Held as its Bayeux messages from here on, not as input.
                    self.ws.get_mut().settle();
                    // Only Bayeux messages keep a socket alive: a client that only pings
                    // is closed as idle, so its session can expire.
                    if matches!(frame, Frame::Text(_)) {
                        self.last_frame = Instant::now();
                    }
                    match self.on_frame(frame).await {
                        Ok(()) => {}
                        Err(close) => break close,
                    }
                }
                Event::Ready => {
                    if let Err(close) = self.on_ready().await {
                        break close;
                    }
                }
                Event::ConnectDue => {
                    if let Err(close) = self.answer_connect().await {
                        break close;
                    }
                }
            }
        };
        #[cfg(feature = "tracing")]
        self.log_close(&close);
        // Closing: no longer a socket waiting for its handshake, whatever the client
        // does with the closing handshake (bounded below).
        self.pending.release();
        let frame = CloseFrame {
            code: close.0,
            reason: close.1.into(),
        };
        // The closing handshake: send our Close, then wait (briefly) for the client's
        // before the TCP connection goes, so the client sees a clean close, not 1006.
        let patience = self.patience().min(Duration::from_secs(5));
        let _ = tokio::time::timeout(patience, async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }

    async fn next_event(&mut self) -> Event {
        let idle_at = self.last_frame + self.patience();
        let due = self.held.as_ref().map(|h| h.deadline);
        // With acknowledged delivery, messages go out with connect replies only.
        let push = self
            .attached
            .as_ref()
            .filter(|a| self.held.is_some() || !a.session().has_ack());
        let inner = self.inner.clone();
        let handshake_due = self.pending.is_pending().then_some(self.handshake_due);
        // Timers and pushes before reading, so a client that sends without pause still
        // gets its messages and its heartbeat.
        tokio::select! {
            biased;
            _ = inner.shut_down() => Event::Shutdown,
            _ = async { match handshake_due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => Event::HandshakeDue,
            _ = async { match due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => Event::ConnectDue,
            _ = async { match push { Some(a) => a.ready().await, None => std::future::pending().await } } => Event::Ready,
            frame = self.ws.next() => Event::Frame(frame),
            _ = tokio::time::sleep_until(idle_at) => Event::Idle,
        }
    }

    /// Sends one text frame, within the socket's patience.
    async fn send(&mut self, body: Bytes) -> Result<(), Close> {
        let Ok(text) = Utf8Bytes::try_from(body) else {
            // Only this crate's encoder fills the queue; a broker that hands over bytes
            // that are not UTF-8 loses that frame rather than the socket.
            return Ok(());
        };
        match tokio::time::timeout(self.patience(), self.ws.send(Frame::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close(CloseCode::Away, "write failed")),
            Err(_) => Err(Close(CloseCode::Policy, "the client does not read")),
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Close> {
        match frame {
            // Boxed: handling a batch is the largest state of the socket's task, and an
            // idle socket should not carry it (measured in BENCHMARKS.md).
            Frame::Text(text) => Box::pin(self.on_batch(Bytes::from(text))).await,
            Frame::Binary(_) => Err(Close(
                CloseCode::Unsupported,
                "Bayeux messages are text frames",
            )),
            Frame::Ping(_) => {
                let now = Instant::now();
                if now.duration_since(self.pings.0) >= Duration::from_secs(1) {
                    self.pings = (now, 0);
                }
                self.pings.1 += 1;
                if self.pings.1 > MAX_PINGS_PER_SECOND {
                    return Err(Close(CloseCode::Policy, "too many pings"));
                }
                // tungstenite queued the pong; write it out now, within the socket's
                // patience (a client that does not read must not hold this loop).
                match tokio::time::timeout(self.patience(), self.ws.flush()).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(Close(CloseCode::Policy, "the client does not read")),
                }
            }
            Frame::Close(_) => Err(Close(CloseCode::Normal, "")),
            Frame::Pong(_) | Frame::Frame(_) => Ok(()),
        }
    }

    async fn on_batch(&mut self, body: Bytes) -> Result<(), Close> {
        let batch = Batch::parse(&body)
            .map_err(|_| Close(CloseCode::Invalid, "not Bayeux JSON messages"))?;
        if batch.messages.len() > self.inner.config.max_batch {
            return Err(Close(CloseCode::Policy, "batch over maxBatch"));
        }
        let ctx = RequestContext {
            headers: &self.headers,
            browser: Some(&self.browser),
            transport: ConnectionType::WebSocket,
            client: self.client,
        };
        let mut processed = process(&self.inner, &ctx, batch).await;
        // A session of its own now (or an existing one's connect): no longer pending.
        if processed.succeeded(META_HANDSHAKE) || processed.connect.is_some() {
            self.pending.release();
        }
        // This socket's own session disconnected (not another session named in the batch).
        let disconnected = processed.succeeded(META_DISCONNECT)
            && self
                .attached
                .as_ref()
                .is_none_or(|a| a.session().closed() == Some(CloseReason::Disconnected));
        let connect = processed.connect.take();
        let mut previous = None;
        if let Some(connect) = &connect {
            processed.remove_reply(connect.slot);
            // A newer connect releases the one held before, as on long-polling.
            previous = self.held.take();
        }
        if let Some(previous) = previous {
            self.answer(previous, Outbound::closed_or_empty(None))
                .await?;
        }
        if !processed.is_empty() {
            let body = processed.encode(&self.inner, Vec::new());
            self.send(body).await?;
        }
        if let Some(connect) = connect {
            self.hold(connect.session, connect.request).await?;
        }
        if disconnected {
            // The held connect is answered too (reconnect: none), as on long-polling,
            // so the client does not count it as a failure.
            if self.held.is_some() {
                self.answer_connect().await?;
            }
            return Err(Close(CloseCode::Normal, "disconnected"));
        }
        Ok(())
    }

    /// Holds a connect for `session`, attaching the socket to it.
    async fn hold(
        &mut self,
        session: crate::server::session::SessionRef,
        request: Message,
    ) -> Result<(), Close> {
        let mut timeout = handler::connect_timeout(&self.inner, &session, &request);
        let same = self
            .attached
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a.session(), &session) && a.is_current());
        if !same {
            self.attached = Some(session.attach(ConnectionType::WebSocket));
        }
        if session.acknowledge(handler::client_ack(&request)) || session.closed().is_some() {
            timeout = Duration::ZERO;
        }
        self.held = Some(Box::new(Held {
            request,
            deadline: Instant::now() + timeout,
            _pending: self.inner.stats.connect_pending(),
        }));
        Ok(())
    }

    /// The attached session has something: push it (or, with acknowledged delivery,
    /// answer the held connect with it).
    async fn on_ready(&mut self) -> Result<(), Close> {
        let Some(attachment) = &self.attached else {
            return Ok(());
        };
        let session = attachment.session().clone();
        let ended = !attachment.is_current() || session.closed().is_some();
        // The connect stays held as a heartbeat while messages are pushed, but with
        // acknowledged delivery, where the messages are its answer.
        if ended || (self.held.is_some() && session.has_ack()) {
            return self.answer_connect().await;
        }
        // Under load, wait a little so the frame carries more (only after a busy frame:
        // light traffic goes out at once).
        let window = self.inner.config.busy_flush_window;
        if !window.is_zero() && session.is_busy() {
            tokio::time::sleep(window).await;
        }
        let outbound = session.take();
        self.send_messages(&outbound.messages).await
    }

    /// Sends messages as JSON arrays, as few frames as the frame cap allows (one for a
    /// burst up to [`FRAME_CAP`] bytes). The cap bounds what the socket's write buffer
    /// keeps: it never gives back the capacity of the largest frame it wrote.
    async fn send_messages(&mut self, messages: &[Bytes]) -> Result<(), Close> {
        let mut rest = messages;
        while !rest.is_empty() {
            let mut size = rest[0].len() + 2;
            let mut n = 1;
            while n < rest.len() && size + rest[n].len() < FRAME_CAP {
                size += rest[n].len() + 1;
                n += 1;
            }
            let (frame, after) = rest.split_at(n);
            let body = encode_array(frame.iter().map(|m| &m[..]), size);
            self.send(body).await?;
            rest = after;
        }
        Ok(())
    }

    /// Answers the held connect (if any) with what the session has.
    async fn answer_connect(&mut self) -> Result<(), Close> {
        let current = self.attached.as_ref().is_some_and(Attachment::is_current);
        let outbound = match &self.attached {
            Some(a) if current => a.session().take(),
            Some(a) => Outbound::closed_or_empty(a.session().closed()),
            None => Outbound::closed_or_empty(None),
        };
        if !current || outbound.closed.is_some() {
            // Replaced by another transport, or ended: this socket lets go of it. An
            // ended session is removed once a connect reply tells the client why; with
            // no connect held (an overflow between two connects), it stays, closed, so
            // that the client's next connect hears the reason (409) rather than 402.
            if let Some(a) = self.attached.take()
                && let Some(reason) = outbound.closed
                && self.held.is_some()
            {
                self.inner.remove_session(a.session(), reason);
            }
        }
        match self.held.take() {
            Some(held) => self.answer(held, outbound).await,
            None => self.send_messages(&outbound.messages).await,
        }
    }

    /// Sends a held connect's reply, after the messages that go with it.
    async fn answer(&mut self, held: Box<Held>, outbound: Outbound) -> Result<(), Close> {
        let closed = outbound.closed;
        let parts = self.connect_frame(held, outbound);
        self.send_messages(&parts).await?;
        if closed == Some(CloseReason::Disconnected) {
            return Err(Close(CloseCode::Normal, "disconnected"));
        }
        Ok(())
    }

    /// The messages, then the connect's reply (in the last frame, with the messages that
    /// fit beside it). Not async, so that the reply's parts are not part of the socket
    /// task's state (an idle socket's task is as large as its largest state).
    fn connect_frame(&self, held: Box<Held>, outbound: Outbound) -> Vec<Bytes> {
        let mut reply = handler::connect_reply(&self.inner, &held.request, &outbound);
        let info = self.attached.as_ref().map(|a| &a.session().info);
        self.inner.outgoing(info, &mut reply);
        let mut parts = outbound.messages;
        parts.push(reply.to_bytes());
        parts
    }
}

/// The close code for a read error.
fn close_for(error: &tungstenite::Error) -> Close {
    match error {
        tungstenite::Error::Io(e) if e.to_string() == BUDGET_REFUSED => {
            Close(CloseCode::Policy, "request body budget exhausted")
        }
        tungstenite::Error::Capacity(_) => Close(CloseCode::Size, "message over maxMessageSize"),
        tungstenite::Error::Utf8(_) => Close(CloseCode::Invalid, "invalid UTF-8"),
        tungstenite::Error::Protocol(_) => Close(CloseCode::Protocol, "protocol error"),
        _ => Close(CloseCode::Away, ""),
    }
}

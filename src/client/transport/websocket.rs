//! WebSocket: one socket per client, as CometD's clients use it.
//!
//! - The socket's URL is the endpoint's with `ws` for `http` (`wss` for `https`): same
//!   host, port, path and query. The upgrade request carries the builder's headers and
//!   the cookie jar's cookies; cookies the `101` response sets (`BAYEUX_BROWSER`) are
//!   kept, for the next socket and for long-polling.
//! - Each batch is one text frame (a JSON array); every frame received is handed to the
//!   client's inbound path, replies and deliveries alike, whenever it comes.
//! - The socket is opened by the first send and replaced by the send after it closed.
//!   When it closes or fails, the requests sent on it fail at once ([`Link`]), and the
//!   connect loop reconnects with its backoff on a new socket.
//! - The byte stream under the socket comes from a [`Dial`]: plain TCP for `ws://`, and
//!   for `wss://` (feature `tls`) the TCP stream wrapped in rustls, verified against the
//!   URL's host name, ALPN `http/1.1` (the upgrade is an HTTP/1.1 request).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use http::header::COOKIE;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as Frame, Utf8Bytes};

use super::{CookieJar, Inbound, Lane, Link, MAX_RESPONSE, MakeTransport, Sent, Transport, encode};
use crate::client::Error;
use crate::protocol::{Batch, Message};

/// The WebSocket connection type's wire name.
pub(crate) const WEBSOCKET: &str = "websocket";

/// How long opening the TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing socket may take to send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Frames waiting for the writer: a server that does not read makes senders wait.
const WRITE_QUEUE: usize = 16;

/// Opens the byte stream a socket runs over.
pub(crate) trait Dial: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to the host and port of `url` (a `ws://` or `wss://` URL).
    fn dial<'a>(&'a self, url: &'a Uri) -> BoxFuture<'a, io::Result<Self::Stream>>;
}

/// Plain TCP with `TCP_NODELAY`, for `ws://`.
pub(crate) struct Tcp;

impl Dial for Tcp {
    type Stream = TcpStream;

    fn dial<'a>(&'a self, url: &'a Uri) -> BoxFuture<'a, io::Result<TcpStream>> {
        async move {
            let host = url
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            // An IPv6 literal comes bracketed.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let default_port = if url.scheme_str() == Some("wss") {
                443
            } else {
                80
            };
            let port = url.port_u16().unwrap_or(default_port);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TCP connection within {CONNECT_TIMEOUT:?}"),
                    )
                })??;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
        .boxed()
    }
}

/// TLS over [`Tcp`], for `wss://`: the server's certificate is verified against the
/// URL's host (a name or an IP address).
#[cfg(feature = "tls")]
pub(crate) struct TlsDial {
    /// The rustls configuration, ALPN `http/1.1`.
    pub config: Arc<rustls::ClientConfig>,
}

#[cfg(feature = "tls")]
impl Dial for TlsDial {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;

    fn dial<'a>(&'a self, url: &'a Uri) -> BoxFuture<'a, io::Result<Self::Stream>> {
        async move {
            let host = url
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tcp = Tcp.dial(url).await?;
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TLS handshake within {CONNECT_TIMEOUT:?}"),
                    )
                })?
        }
        .boxed()
    }
}

/// The socket URL for a Bayeux endpoint, as CometD derives it: `http` becomes `ws` and
/// `https` becomes `wss`; host, port, path and query stay.
pub(crate) fn socket_url(endpoint: &Uri) -> Uri {
    let mut parts = endpoint.clone().into_parts();
    let scheme = match endpoint.scheme_str() {
        Some("https") => "wss",
        _ => "ws",
    };
    parts.scheme = Some(scheme.parse::<Scheme>().expect("a valid scheme"));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| endpoint.clone())
}

/// Makes WebSocket transports over plain TCP (`ws://`).
pub(crate) fn plain() -> MakeTransport {
    with_dial(Tcp)
}

/// Makes WebSocket transports over TLS (`wss://`) with `config` (ALPN `http/1.1`).
#[cfg(feature = "tls")]
pub(crate) fn tls(config: Arc<rustls::ClientConfig>) -> MakeTransport {
    with_dial(TlsDial { config })
}

/// Makes WebSocket transports whose streams `dial` opens.
fn with_dial<D: Dial>(dial: D) -> MakeTransport {
    Box::new(move |config, inbound| {
        Box::new(WebSocket {
            url: socket_url(&config.url),
            headers: config.headers,
            cookies: config.cookies,
            dial,
            inbound,
            socket: tokio::sync::Mutex::new(None),
            current: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    })
}

/// The WebSocket transport over streams that `D` opens.
pub(crate) struct WebSocket<D> {
    /// The socket URL (`ws://...`).
    url: Uri,
    headers: HeaderMap,
    cookies: Arc<CookieJar>,
    dial: D,
    inbound: Inbound,
    /// The open socket; locked while one is opened, so that there is only one.
    socket: tokio::sync::Mutex<Option<Socket>>,
    /// The open socket's link, to close it without waiting for the lock.
    current: Mutex<Option<Arc<Link>>>,
    /// Set by [`Transport::close`]: no socket is opened afterwards.
    closed: AtomicBool,
}

/// An open socket: where its frames go, and its life.
#[derive(Clone)]
struct Socket {
    frames: mpsc::Sender<Utf8Bytes>,
    link: Arc<Link>,
}

impl<D: Dial> WebSocket<D> {
    /// The open socket, or a new one.
    async fn socket(&self) -> Result<Socket, Error> {
        let mut slot = self.socket.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        if let Some(socket) = &*slot
            && !socket.link.is_closed()
        {
            return Ok(socket.clone());
        }
        *slot = None;
        let socket = self.open().await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket.link.clone());
        if self.closed.load(Ordering::Acquire) {
            socket.link.close("the client closed the WebSocket");
            return Err(self.closed_error());
        }
        *slot = Some(socket.clone());
        Ok(socket)
    }

    fn closed_error(&self) -> Error {
        Error::connection(
            format!("sending to {}", self.url),
            "the client closed its WebSocket transport",
        )
    }

    /// Opens a socket: the stream, the upgrade, then a reader and a writer task.
    async fn open(&self) -> Result<Socket, Error> {
        let url = &self.url;
        let stream = self
            .dial
            .dial(url)
            .await
            .map_err(|e| Error::connection(format!("connecting to {url}"), e))?;
        let mut request = url
            .clone()
            .into_client_request()
            .map_err(|e| Error::config(format!("{url}: {e}")))?;
        let h = request.headers_mut();
        // The caller's headers replace ours of the same name.
        h.extend(self.headers.clone());
        if let Some(cookie) = self.cookies.header(url) {
            h.insert(COOKIE, cookie);
        }
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config()))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => {
                        self.cookies.store(url, response.headers());
                        let body = response.body().as_deref().unwrap_or_default();
                        Error::upgrade_refused(
                            format!("WebSocket upgrade at {url}"),
                            response.status().as_u16(),
                            body,
                        )
                    }
                    e => Error::connection(format!("WebSocket handshake with {url}"), e),
                })?;
        self.cookies.store(url, response.headers());
        let (sink, stream) = ws.split();
        let link = Link::new();
        let (frames, queued) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write(sink, queued, link.clone()));
        tokio::spawn(read(
            stream,
            self.inbound.clone(),
            link.clone(),
            url.to_string(),
        ));
        Ok(Socket { frames, link })
    }
}

/// Messages up to the size long-polling accepts; small buffers otherwise.
fn socket_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 8 * 1024;
    config.write_buffer_size = 0;
    config.max_message_size = Some(MAX_RESPONSE);
    config.max_frame_size = Some(MAX_RESPONSE);
    config
}

/// Writes queued frames until the link closes, then closes the socket.
async fn write<S>(
    mut sink: SplitSink<WebSocketStream<S>, Frame>,
    mut queued: mpsc::Receiver<Utf8Bytes>,
    link: Arc<Link>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let text = tokio::select! {
            biased;
            _ = link.closed() => break,
            text = queued.recv() => match text {
                Some(text) => text,
                // The transport let go of the socket.
                None => {
                    link.close("the client let go of the WebSocket");
                    break;
                }
            },
        };
        let written = tokio::select! {
            biased;
            _ = link.closed() => break,
            written = sink.send(Frame::Text(text)) => written,
        };
        if let Err(e) = written {
            link.close(format!("writing to the WebSocket failed: {e}"));
            break;
        }
    }
    // A close frame (or the reply to the server's) if it goes out promptly; the TCP
    // connection closes with the last half of the socket.
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

/// Hands every frame received to the client until the socket or its link closes.
async fn read<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    inbound: Inbound,
    link: Arc<Link>,
    url: String,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let why = loop {
        let frame = tokio::select! {
            biased;
            _ = link.closed() => return,
            frame = stream.next() => frame,
        };
        match frame {
            Some(Ok(Frame::Text(text))) => match Batch::parse_strict(text.as_bytes()) {
                Ok(messages) => inbound.receive(messages),
                Err(e) => break format!("{url} sent a frame that is not Bayeux messages: {e}"),
            },
            Some(Ok(Frame::Close(Some(close)))) => {
                let code = u16::from(close.code);
                break match close.reason.as_str() {
                    "" => format!("{url} closed the WebSocket ({code})"),
                    reason => format!("{url} closed the WebSocket ({code}: {reason})"),
                };
            }
            Some(Ok(Frame::Close(None))) | None => {
                break format!("{url} closed the WebSocket");
            }
            // Pings are answered by tungstenite; the server sends no binary frames.
            Some(Ok(_)) => {}
            Some(Err(e)) => break format!("the WebSocket to {url} failed: {e}"),
        }
    };
    link.close(why);
}

impl<D: Dial> Transport for WebSocket<D> {
    fn name(&self) -> &'static str {
        WEBSOCKET
    }

    /// Writes the batch as one frame on the open socket (opening one if needed); the
    /// replies come through the inbound path.
    fn send(&self, _lane: Lane, messages: Vec<Message>) -> BoxFuture<'_, Result<Sent, Error>> {
        async move {
            let text = Utf8Bytes::try_from(encode(&messages))
                .map_err(|e| Error::protocol_with("a batch that is not UTF-8", e))?;
            let socket = self.socket().await?;
            if socket.frames.send(text).await.is_err() {
                let why = socket.link.closed().await;
                return Err(Error::connection(
                    format!("sending to {}", self.url),
                    why.to_string(),
                ));
            }
            Ok(Sent::Later(socket.link))
        }
        .boxed()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(link) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            link.close("the client closed the WebSocket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_url_keeps_host_port_path_and_query() {
        let ws = |u: &str| socket_url(&u.parse().unwrap()).to_string();
        assert_eq!(
            ws("http://127.0.0.1:8080/cometd"),
            "ws://127.0.0.1:8080/cometd"
        );
        assert_eq!(
            ws("https://example.com/a/cometd?x=1"),
            "wss://example.com/a/cometd?x=1"
        );
        assert_eq!(ws("http://[::1]:9/c"), "ws://[::1]:9/c");
        assert_eq!(ws("http://h"), "ws://h/");
    }
}

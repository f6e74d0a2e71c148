//! Raw Bayeux over HTTP for the load tool: pre-formatted request bodies and borrowed
//! parsing of responses, so that one process can drive thousands of sessions.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bayeux::client::tls::TlsOptions;
use bayeux::client::tls::rustls::ClientConfig;
use bayeux::client::transport::{CookieJar, HttpPool, TlsHttpConnector};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

/// A shared connection pool: the client's own, which keeps as many idle connections as
/// it is given sessions. Plain TCP for `http://`, rustls for `https://`; HTTP/1.1 either
/// way, so that each session's request in flight has a connection of its own, as
/// separate clients would (over HTTP/2 the pool would multiplex every session's long
/// poll on one connection, and servers cap the streams of a connection: hyper at 200).
/// With `--http2`, each session gets a pool of its own instead ([`Tls::http2`]).
#[derive(Clone)]
pub enum Pool {
    /// `http://`: as the tool always ran.
    Plain(HttpPool),
    /// `https://`.
    Tls(HttpPool<TlsHttpConnector>),
}

impl Pool {
    async fn post(
        &self,
        url: &Uri,
        headers: &HeaderMap,
        cookies: Option<&CookieJar>,
        body: Bytes,
    ) -> Result<Bytes, bayeux::client::Error> {
        match self {
            Pool::Plain(pool) => pool.post(url, headers, cookies, body).await,
            Pool::Tls(pool) => pool.post(url, headers, cookies, body).await,
        }
    }
}

/// A new connection pool: over TLS when the run has TLS settings (an `https://`
/// endpoint); its connections come from `source` when one is given (`--source-ip`).
pub fn pool(tls: Option<&Tls>, source: Option<IpAddr>) -> Pool {
    match (tls, source) {
        (None, None) => Pool::Plain(HttpPool::new()),
        (Some(tls), None) => Pool::Tls(HttpPool::with_tls(tls.config.clone())),
        (None, Some(_)) => Pool::Plain(HttpPool::with_connector(tcp_from(source))),
        (Some(tls), Some(_)) => Pool::Tls(tls_pool_from(tls.config.clone(), source)),
    }
}

/// The client's plain TCP connector (`TCP_NODELAY`, a 10 s connect timeout), its
/// sockets bound to `source` before they connect.
fn tcp_from(source: Option<IpAddr>) -> HttpConnector {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    tcp.set_local_address(source);
    tcp
}

/// `HttpPool::with_tls(config)` with its sockets bound to `source`.
pub fn tls_pool_from(
    config: Arc<ClientConfig>,
    source: Option<IpAddr>,
) -> HttpPool<TlsHttpConnector> {
    if source.is_none() {
        return HttpPool::with_tls(config);
    }
    let mut tcp = tcp_from(source);
    tcp.enforce_http(false);
    HttpPool::with_connector(hyper_rustls::HttpsConnector::from((tcp, config)))
}

/// The rustls configuration of a run against an `https://` endpoint, for the pools and
/// the raw connections (WebSocket sockets, a stalled session's POST) alike: ALPN
/// `http/1.1` (see [`Pool`]).
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// ALPN `h2` then `http/1.1`: for `--http2`, a connection per session that carries
    /// all of its requests.
    pub http2: Arc<ClientConfig>,
}

impl Tls {
    /// The configuration `options` describe.
    pub fn new(options: &TlsOptions) -> Result<Tls, bayeux::client::Error> {
        Ok(Tls {
            config: options.websocket_config()?,
            http2: options.http_config()?,
        })
    }
}

/// The Bayeux endpoint: an `http://` or `https://` URL (`ws://` and `wss://` are taken
/// as those).
pub fn endpoint(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let http = match uri.scheme_str() {
        Some("http" | "https") => return Ok(uri),
        Some("ws") => "http",
        Some("wss") => "https",
        _ => return Err(format!("{url}: an http:// or https:// URL is required")),
    };
    let mut parts = uri.into_parts();
    parts.scheme = Some(http.parse().expect("a valid scheme"));
    Uri::from_parts(parts).map_err(|e| format!("{url}: {e}"))
}

/// A byte stream to the server: plain TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens a raw connection to `url`'s host and port (`TCP_NODELAY`), from `source` when
/// given, wrapped in TLS (ALPN `http/1.1`, the host's name verified) when `tls` is
/// given.
pub async fn dial(url: &Uri, tls: Option<&Tls>, source: Option<IpAddr>) -> io::Result<Box<dyn Io>> {
    let host = url.host().unwrap_or("127.0.0.1");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let default_port = if tls.is_some() { 443 } else { 80 };
    let port = url.port_u16().unwrap_or(default_port);
    let tcp = match source {
        None => TcpStream::connect((host, port)).await?,
        Some(source) => connect_from(source, host, port).await?,
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = bayeux::client::tls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
}

/// Connects to `host:port` from the address `source` (the first of the host's
/// addresses of the same family). The port is chosen at connect time
/// (`IP_BIND_ADDRESS_NO_PORT` on Linux), so a source address is not limited to one
/// socket per ephemeral port but to one per port and destination.
async fn connect_from(source: IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let target = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address of the family of {source}"),
            )
        })?;
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads the int we pass, on a socket we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Why an exchange failed.
pub enum WireError {
    /// Connection or HTTP-level failure, or a timeout (counted as an HTTP error).
    Http,
    /// A 200 with a body that is not a Bayeux batch.
    Body,
}

/// The headers of a session's requests: `Authorization` when given.
pub fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(value) = authorization.and_then(|a| HeaderValue::from_str(a).ok()) {
        h.insert(http::header::AUTHORIZATION, value);
    }
    h
}

/// POSTs `body` to `url` with `headers`, sending and keeping the session's cookies when
/// a jar is given (CometD's servers bind sessions to their `BAYEUX_BROWSER` cookie);
/// returns the body of a 2xx response.
pub async fn post(
    pool: &Pool,
    url: &Uri,
    body: String,
    headers: &HeaderMap,
    cookies: Option<&CookieJar>,
    timeout: Duration,
) -> Result<Bytes, WireError> {
    match tokio::time::timeout(timeout, pool.post(url, headers, cookies, Bytes::from(body))).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) | Err(_) => Err(WireError::Http),
    }
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

/// The advice fields the tool follows.
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

/// A workbin notification's interaction.
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

/// A handshake asking for long-polling.
pub fn handshake_body() -> String {
    r#"[{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}]"#.to_string()
}

/// A handshake asking for WebSocket (sent over the socket).
pub fn ws_handshake_body() -> String {
    r#"[{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["websocket"],"id":"1"}]"#.to_string()
}

/// A WebSocket connect; the `first` one asks the server to answer at once.
pub fn ws_connect_body(client_id: &str, first: bool) -> String {
    let advice = if first {
        r#""advice":{"timeout":0},"#
    } else {
        ""
    };
    format!(
        r#"[{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"websocket",{advice}"id":"3"}}]"#
    )
}

/// The bytes of an HTTP/1.1 POST of `body` to `url`, with the session's cookies and
/// `headers`: written on a raw connection by a stalled session, which never reads the
/// response.
pub fn raw_post(url: &Uri, body: &str, headers: &HeaderMap, cookies: &CookieJar) -> Vec<u8> {
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let host = url.authority().map_or("localhost", |a| a.as_str());
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    let cookie = cookies.header(url);
    let extra = headers
        .iter()
        .chain(cookie.iter().map(|c| (&http::header::COOKIE, c)));
    for (name, value) in extra {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// A subscribe of `client_id` to `channel`.
pub fn subscribe_body(client_id: &str, channel: &str) -> String {
    format!(
        r#"[{{"channel":"/meta/subscribe","clientId":"{client_id}","subscription":"{channel}","id":"2"}}]"#
    )
}

/// A long-polling connect; the `first` one asks the server to answer at once.
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

/// A disconnect of `client_id`.
pub fn disconnect_body(client_id: &str) -> String {
    format!(r#"[{{"channel":"/meta/disconnect","clientId":"{client_id}","id":"4"}}]"#)
}

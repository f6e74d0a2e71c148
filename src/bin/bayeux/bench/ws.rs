//! Subscribers over WebSocket: one raw socket and one task per session, pre-formatted
//! request frames and borrowed parsing of the frames received, as on long-polling.
//!
//! The session is opened over the socket (handshake, subscribe), then the first connect
//! asks for an answer at once; each connect reply (the heartbeat, answered after the
//! server's `timeout`) is answered with the next connect. Messages arrive in frames of
//! their own, pushed as soon as they are queued. The `BAYEUX_BROWSER` cookie (or any
//! other) set on the `101` is sent again when the socket is reopened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bayeux::client::transport::CookieJar;
use futures::{SinkExt, StreamExt};
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderValue, Uri};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};

use super::Run;
use super::session::{self, After};
use super::stats::Counters;
use super::wire;

type Ws = WebSocketStream<Box<dyn wire::Io>>;

/// The socket's URL for an `http://` or `https://` Bayeux endpoint: `ws://` or `wss://`.
pub fn socket_url(endpoint: &Uri) -> Result<String, String> {
    let scheme = match endpoint.scheme_str() {
        Some("http") => "ws",
        Some("https") => "wss",
        _ => {
            return Err(format!(
                "{endpoint}: an http:// or https:// URL is required"
            ));
        }
    };
    let authority = endpoint
        .authority()
        .ok_or_else(|| format!("{endpoint}: no host"))?;
    let path = endpoint.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("{scheme}://{authority}{path}"))
}

/// Small buffers: thousands of sockets should cost the tool little, as they should the
/// server.
fn config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4 * 1024;
    config.write_buffer_size = 0;
    config
}

/// Opens session `index`'s socket (at its target, from its source address), sending the
/// jar's cookies and keeping those the `101` sets.
async fn open(run: &Run, index: usize, auth: Option<&str>, jar: &CookieJar) -> Option<Ws> {
    let target = run.target(index);
    let attempt = async {
        let mut request = target.socket_url.as_str().into_client_request().ok()?;
        let socket_uri = request.uri().clone();
        let h = request.headers_mut();
        if let Some(value) = auth.and_then(|a| HeaderValue::from_str(a).ok()) {
            h.insert(AUTHORIZATION, value);
        }
        if let Some(cookie) = jar.header(&socket_uri) {
            h.insert(COOKIE, cookie);
        }
        let stream = wire::dial(&target.endpoint, run.tls.as_ref(), run.source(index))
            .await
            .ok()?;
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
                .await
                .ok()?;
        jar.store(&socket_uri, response.headers());
        Some(ws)
    };
    let ws = tokio::time::timeout(run.http_timeout, attempt)
        .await
        .ok()
        .flatten();
    if ws.is_none() {
        Counters::add(&run.counters.http_errors, 1);
        run.note_error(format!("cannot open a WebSocket to {}", target.socket_url));
    }
    ws
}

/// Sends one text frame.
async fn send(ws: &mut Ws, text: Utf8Bytes) -> bool {
    ws.send(Frame::Text(text)).await.is_ok()
}

/// Sends `body` and waits (within the tool's HTTP timeout) for the frame that holds the
/// reply on `channel`; returns whether it was successful, and the clientId it names.
async fn request(
    run: &Run,
    ws: &mut Ws,
    body: String,
    channel: &str,
) -> Result<(bool, Option<String>), ()> {
    if !send(ws, body.into()).await {
        return Err(());
    }
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Frame::Text(text))) => {
                    let Ok(msgs) = wire::parse(text.as_bytes()) else {
                        return Err(());
                    };
                    if let Some(m) = msgs.iter().find(|m| m.channel == Some(channel)) {
                        return Ok((m.successful == Some(true), m.client_id.map(str::to_string)));
                    }
                }
                Some(Ok(Frame::Close(_))) | Some(Err(_)) | None => return Err(()),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(run.http_timeout, wait)
        .await
        .unwrap_or(Err(()))
}

/// Handshakes and subscribes over the socket; the clientId, or `None` after counting
/// the failure (`Err` when the socket itself failed).
async fn open_session(run: &Run, ws: &mut Ws, channel: &str) -> Result<Option<String>, ()> {
    let id = match request(run, ws, wire::ws_handshake_body(), "/meta/handshake").await? {
        (true, Some(id)) => id,
        _ => {
            Counters::add(&run.counters.bayeux_errors, 1);
            return Ok(None);
        }
    };
    Counters::add(&run.counters.handshakes, 1);
    match request(
        run,
        ws,
        wire::subscribe_body(&id, channel),
        "/meta/subscribe",
    )
    .await?
    {
        (true, _) => Ok(Some(id)),
        _ => {
            Counters::add(&run.counters.bayeux_errors, 1);
            Ok(None)
        }
    }
}

/// A subscriber over WebSocket: keeps a session subscribed to `channel` and reads its
/// socket until aborted. A socket that fails is reopened and the session resumed with a
/// connect (the server keeps it for `maxInterval`); a session the server no longer knows
/// is opened again.
pub async fn subscriber(run: Arc<Run>, index: usize, channel: String, auth: Option<String>) {
    let jar = CookieJar::new();
    let mut next = HashMap::new();
    let mut signalled = false;
    let mut client_id: Option<String> = None;
    let mut socket: Option<Ws> = None;
    loop {
        let mut ws = match socket.take() {
            Some(ws) => ws,
            None => match open(&run, index, auth.as_deref(), &jar).await {
                Some(ws) => ws,
                None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let id = match &client_id {
            Some(id) => id.clone(),
            None => match open_session(&run, &mut ws, &channel).await {
                Ok(Some(id)) => {
                    client_id = Some(id.clone());
                    id
                }
                Ok(None) => {
                    socket = Some(ws);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(()) => {
                    Counters::add(&run.counters.http_errors, 1);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        if !signalled {
            signalled = true;
            session::signal_ready(&run);
        }
        // Pre-formatted: each connect is a clone of the same bytes.
        let connect = Utf8Bytes::from(wire::ws_connect_body(&id, false));
        if !send(&mut ws, wire::ws_connect_body(&id, true).into()).await {
            Counters::add(&run.counters.http_errors, 1);
            continue;
        }
        // Reads until the socket fails (reopened, session kept) or the server asks for
        // a handshake (same socket, new session).
        loop {
            let frame = match tokio::time::timeout(run.poll_timeout, ws.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    Counters::add(&run.counters.http_errors, 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            };
            let text = match frame {
                Frame::Text(text) => text,
                Frame::Close(_) => {
                    Counters::add(&run.counters.http_errors, 1);
                    break;
                }
                _ => continue,
            };
            match session::on_messages(&run, index, &mut next, text.as_bytes()) {
                Ok(None) => {}
                Ok(Some(After::Connect(interval))) => {
                    if !interval.is_zero() {
                        tokio::time::sleep(interval).await;
                    }
                    if !send(&mut ws, connect.clone()).await {
                        Counters::add(&run.counters.http_errors, 1);
                        break;
                    }
                }
                Ok(Some(After::Handshake)) => {
                    Counters::add(&run.counters.rehandshakes, 1);
                    client_id = None;
                    socket = Some(ws);
                    break;
                }
                Err(_) => Counters::add(&run.counters.bayeux_errors, 1),
            }
        }
    }
}

/// A stalled session over WebSocket: opens a socket, handshakes, subscribes to
/// `channel`, sends one connect, and never reads the socket again (until the run ends
/// and the task is aborted).
pub async fn stalled(run: Arc<Run>, index: usize, channel: String, auth: Option<String>) {
    let jar = CookieJar::new();
    let _socket = loop {
        if let Some(mut ws) = open(&run, index, auth.as_deref(), &jar).await {
            match open_session(&run, &mut ws, &channel).await {
                Ok(Some(id)) if send(&mut ws, wire::ws_connect_body(&id, true).into()).await => {
                    break ws;
                }
                Ok(_) => {}
                Err(()) => Counters::add(&run.counters.http_errors, 1),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    session::signal_ready(&run);
    std::future::pending::<()>().await;
}

//! The long-polling transport over the transport-neutral session: a `/meta/connect` is
//! held until the session has something to send, `timeout` passes, a newer connect
//! replaces it, or the session ends; its response carries the messages, then the
//! replies of its batch.
//!
//! The sessions of one browser (one `BAYEUX_BROWSER` cookie) hold at most
//! `max_sessions_per_browser` long polls at once (see the server's `browsers` module):
//! a connect over the limit is answered at once with CometD's `multiple-clients`
//! advice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::server::Inner;
use crate::server::handler::{self, HeldConnect, Processed};
use crate::server::index::Recipient;
use crate::server::session::Outbound;
use crate::server::transport::ConnectionType;

/// Completes a processed batch as one long-polling response body: waits for its held
/// connect, if it has one. `http2`: the request came over HTTP/2 (its long polls are
/// limited per browser by `http2_max_sessions_per_browser`). Cancel-safe: if the HTTP
/// request goes away, nothing was taken from the session.
pub(crate) async fn respond(inner: &Arc<Inner>, mut processed: Processed, http2: bool) -> Bytes {
    let delivered = match processed.connect.take() {
        Some(connect) => {
            let (reply, messages) = hold(inner, &connect, processed.transport, http2).await;
            processed.set_reply(connect.slot, reply);
            messages
        }
        None => Vec::new(),
    };
    processed.encode(inner, delivered)
}

/// Holds one connect; returns its reply and the messages to deliver with it.
async fn hold(
    inner: &Arc<Inner>,
    connect: &HeldConnect,
    transport: ConnectionType,
    http2: bool,
) -> (crate::protocol::Message, Vec<Bytes>) {
    let session = &connect.session;
    if let Some(reason) = session.closed() {
        // Ended before this connect: say so, with what an overflow left queued.
        let outbound = session.take();
        inner.remove_session(session, reason);
        let reply = handler::connect_reply(inner, &connect.request, &outbound);
        return (reply, outbound.messages);
    }
    let mut timeout = handler::connect_timeout(inner, session, &connect.request);
    // Another session of this browser holds its long poll already: answer at once.
    let mut multiple_clients = false;
    let mut _browser_poll = None;
    if !timeout.is_zero()
        && let Some(browser) = session.browser()
    {
        let limit = if http2 {
            inner.config.http2_max_sessions_per_browser
        } else {
            inner.config.max_sessions_per_browser
        };
        _browser_poll = inner.browsers.hold(browser, session.recipient_id(), limit);
        if _browser_poll.is_none() {
            multiple_clients = true;
            timeout = Duration::ZERO;
        }
    }
    let attachment = session.attach(transport);
    let pending = inner.stats.connect_pending();
    if session.acknowledge(handler::client_ack(&connect.request)) {
        // What the client has not acknowledged goes out again at once.
        timeout = Duration::ZERO;
    }
    // Polls `ready` before the deadline, so a zero timeout still takes what is queued.
    let ready = tokio::time::timeout(timeout, session.ready(&attachment)).await;
    // Under load, wait a little so the response carries more (the window opens only
    // after a busy response). Cancel-safe: nothing was taken yet.
    let window = inner.config.busy_flush_window;
    if ready.is_ok() && !window.is_zero() && session.is_busy() && attachment.is_current() {
        tokio::time::sleep(window).await;
    }
    let outbound = if attachment.is_current() {
        session.take()
    } else {
        // Replaced by a newer connect, which takes the queue: answer this one empty.
        Outbound::closed_or_empty(session.closed())
    };
    drop(attachment);
    drop(pending);
    if let Some(reason) = outbound.closed {
        inner.remove_session(session, reason);
    }
    let mut reply = handler::connect_reply(inner, &connect.request, &outbound);
    if multiple_clients && outbound.closed.is_none() {
        reply = handler::multiple_clients(inner, reply);
    }
    (reply, outbound.messages)
}

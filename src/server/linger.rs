//! Lingering close (RFC 9112 §9.6, nginx's `lingering_close`): a request answered before
//! its body was read (413 over `maxMessageSize`, 405, 404...) still reaches a client
//! that writes its whole body before reading.
//!
//! Closing the connection at once would make the kernel reset it while the client is
//! still writing, and a client such as Python's `http.client` would then see a broken
//! pipe instead of the answer. So when a request body is dropped unread, it keeps being
//! read, and discarded chunk by chunk (nothing is buffered), in a task of its own while
//! hyper writes the answer, which says `Connection: close`. The connection closes once
//! the body ended, or after [`LINGER_SILENCE`] without data, or [`LINGER_TOTAL`] in
//! all, or when the server shuts down, whichever comes first: a client cannot hold a
//! connection or memory longer than that. HTTP/2 needs none of this (an unread stream
//! is reset on its own, the connection carries on), nor does a request that expects
//! `100 Continue` (the client sends no body after a final answer).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, EXPECT};
use http::{HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::Server;
use super::http::ResponseBody;

/// The longest time a connection lingers after its answer, reading what the client
/// still sends (nginx's `lingering_time`).
pub(crate) const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// The longest silence while lingering: a client that sends nothing for this long is
/// done (nginx's `lingering_timeout`).
pub(crate) const LINGER_SILENCE: Duration = Duration::from_secs(5);

/// A request body that, when dropped before its end, is drained in the background
/// (see the module's documentation).
pub(crate) struct Lingering {
    inner: Option<Incoming>,
    /// The end of the body was read (or lingering does not apply).
    done: bool,
    /// The server whose shutdown ends the lingering.
    server: Server,
    /// Set when the body was dropped unread and lingering began.
    started: Arc<AtomicBool>,
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            self.done = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.done || body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.store(true, Ordering::Release);
        runtime.spawn(drain(body, self.server.clone()));
    }
}

/// Reads and discards `body` until it ends, goes silent for [`LINGER_SILENCE`],
/// [`LINGER_TOTAL`] passes, or the server shuts down. Dropping it then lets hyper close
/// the connection.
async fn drain(mut body: Incoming, server: Server) {
    let deadline = Instant::now() + LINGER_TOTAL;
    let reading = async {
        loop {
            let silence = (Instant::now() + LINGER_SILENCE).min(deadline);
            match tokio::time::timeout_at(silence, body.frame()).await {
                Ok(Some(Ok(_discarded))) => {}
                // The end, a failed connection, silence, or time is up.
                _ => return,
            }
        }
    };
    tokio::select! {
        _ = reading => {}
        _ = server.inner().shut_down() => {}
    }
}

/// Answers `request` with `respond`, draining its body in the background if `respond`
/// drops it unread (an early answer), and then closing the connection (the answer says
/// `Connection: close`).
pub(crate) async fn answer<F, Fut>(
    server: &Server,
    request: Request<Incoming>,
    respond: F,
) -> Response<ResponseBody>
where
    F: FnOnce(Request<Lingering>) -> Fut,
    Fut: Future<Output = Response<ResponseBody>>,
{
    let applies = request.version() <= Version::HTTP_11 && !request.headers().contains_key(EXPECT);
    let started = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| Lingering {
        inner: Some(body),
        done: !applies,
        server: server.clone(),
        started: started.clone(),
    });
    let mut response = respond(request).await;
    if started.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

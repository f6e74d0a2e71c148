//! A client subscription: a stream of messages that unsubscribes when dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use super::{Error, Shared};
use crate::protocol::{ChannelName, Message};

/// Messages published on the channels matching one pattern, as a [`Stream`].
///
/// The stream survives re-handshakes (the client subscribes again by itself) and ends
/// when the client stops. Dropping it unsubscribes in the background; call
/// [`Subscription::unsubscribe`] to wait for the server's reply.
///
/// Each subscription has a bounded queue
/// ([`ClientBuilder::subscription_capacity`](super::ClientBuilder::subscription_capacity)).
/// When the stream is not read fast enough and the queue is full, newly arriving
/// messages are dropped for this subscription only (drop-newest) and counted in
/// [`Subscription::dropped`]; the queued ones stay, in order. The client's long poll and
/// the other subscriptions never wait for a slow consumer. With acknowledgements on, a
/// dropped message still counts as received: the server does not send it again.
pub struct Subscription {
    pattern: ChannelName,
    id: u64,
    rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    gaps: Arc<AtomicU64>,
    client: Weak<Shared>,
    /// Cleared when the listener was already removed, so `Drop` does nothing.
    armed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("id", &self.id)
            .field("queued", &self.rx.len())
            .field("dropped", &self.dropped())
            .field("gaps", &self.gaps())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        pattern: ChannelName,
        id: u64,
        rx: mpsc::Receiver<Message>,
        dropped: Arc<AtomicU64>,
        gaps: Arc<AtomicU64>,
        client: Weak<Shared>,
    ) -> Self {
        Subscription {
            pattern,
            id,
            rx,
            dropped,
            gaps,
            client,
            armed: true,
        }
    }

    /// Disarms the drop-time unsubscribe (the listener is already gone).
    pub(crate) fn forget(mut self) {
        self.armed = false;
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &ChannelName {
        &self.pattern
    }

    /// Messages this stream missed because its queue was full when they arrived.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many times the server ended the session while this subscription was live,
    /// in a way that may have lost messages for it (its queue for this client
    /// overflowed, or the session expired). The stream carries on after the client's
    /// new handshake, but what was published in between may be missing: an application
    /// that must not miss anything re-synchronises when this grows.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    /// Unsubscribes and waits for the server's reply (when this was the last local
    /// subscription on the pattern; otherwise only this stream ends).
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.armed = false;
        match self.client.upgrade() {
            Some(shared) => shared.remove_listener(self.id).await,
            None => Ok(()),
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(shared) = self.client.upgrade() else {
            return;
        };
        let id = self.id;
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _ = shared.remove_listener(id).await;
                });
            }
            // Outside a runtime: at least stop local delivery.
            Err(_) => shared.state().listeners.retain(|l| l.id != id),
        }
    }
}

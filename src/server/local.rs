//! In-process listeners: an embedding service subscribes to channels without HTTP.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use super::Inner;
use super::index::{Recipient, RecipientId};
use crate::protocol::{ChannelName, Message};

/// The broker side of a [`LocalSubscription`]: a bounded queue (drop-newest when full).
pub(crate) struct LocalListener {
    id: RecipientId,
    tx: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl Recipient for LocalListener {
    fn recipient_id(&self) -> RecipientId {
        self.id
    }

    fn deliver(&self, message: &Bytes) -> bool {
        let queued = self.tx.try_send(message.clone()).is_ok();
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }
}

/// A subscription made from Rust with [`Server::subscribe`](super::Server::subscribe):
/// a [`Stream`] of the messages published on matching channels.
///
/// For `/service/**` patterns the messages are the ones clients sent, `clientId`
/// included, so the listener can answer with
/// [`Server::deliver`](super::Server::deliver). Dropping the value unsubscribes.
pub struct LocalSubscription {
    pattern: ChannelName,
    id: RecipientId,
    rx: mpsc::Receiver<Bytes>,
    server: Weak<Inner>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for LocalSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSubscription")
            .field("pattern", &self.pattern)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl LocalSubscription {
    pub(crate) fn register(
        server: &Arc<Inner>,
        pattern: ChannelName,
        id: RecipientId,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        server.subscribe_recipient(
            &pattern,
            Arc::new(LocalListener {
                id,
                tx,
                dropped: dropped.clone(),
            }),
        );
        LocalSubscription {
            pattern,
            id,
            rx,
            server: Arc::downgrade(server),
            dropped,
        }
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &ChannelName {
        &self.pattern
    }

    /// Messages not queued because this listener fell `max_queue` behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Stream for LocalSubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(bytes)) => {
                    // Encoded by this server from a valid Message: decoding cannot fail,
                    // but a bad frame is skipped rather than ending the stream.
                    if let Ok(m) = serde_json::from_slice(&bytes) {
                        return Poll::Ready(Some(m));
                    }
                }
                other => return other.map(|_| None),
            }
        }
    }
}

impl Drop for LocalSubscription {
    fn drop(&mut self) {
        if let Some(server) = self.server.upgrade() {
            server.unsubscribe_recipient(&self.pattern, self.id);
        }
    }
}

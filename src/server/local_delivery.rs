//! A node's own delivery: what a [`Broker`](super::Broker) hands messages to.

use std::sync::Arc;

use super::broker::{Destination, Envelope};
use super::index::{ChannelIndex, Recipient};
use super::registry::Registry;
#[cfg(feature = "metrics")]
use std::time::Instant;

/// Delivers routed messages to this node's recipients: broadcasts through the channel
/// index, per-user messages to the user's subscribed sessions, per-session messages to
/// that session. Cheap to clone. A broker receives one from each server that attaches
/// to it ([`Broker::attach`](super::Broker::attach)).
#[derive(Clone)]
pub struct LocalDelivery {
    index: Arc<ChannelIndex>,
    sessions: Arc<Registry>,
}

impl std::fmt::Debug for LocalDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDelivery")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl LocalDelivery {
    pub(crate) fn new(index: Arc<ChannelIndex>, sessions: Arc<Registry>) -> Self {
        LocalDelivery { index, sessions }
    }

    /// Hands the envelope to every matching recipient of this node; returns how many
    /// queued it. Never blocks. A message that is not UTF-8 text (a broker's bytes
    /// from elsewhere gone wrong) reaches nobody: clients read frames and bodies as
    /// text.
    pub fn deliver(&self, envelope: &Envelope) -> usize {
        if std::str::from_utf8(&envelope.message).is_err() {
            return 0;
        }
        // With metrics, the clock is read once per message, for the publish-to-flush
        // histogram of every session that queues it.
        #[cfg(feature = "metrics")]
        let now = Instant::now();
        let deliver = |r: &dyn Recipient| {
            #[cfg(feature = "metrics")]
            return r.deliver_at(&envelope.message, now);
            #[cfg(not(feature = "metrics"))]
            r.deliver(&envelope.message)
        };
        match &envelope.destination {
            #[cfg(feature = "metrics")]
            Destination::Subscribers => {
                self.index
                    .deliver_at(&envelope.channel, &envelope.message, now)
            }
            #[cfg(not(feature = "metrics"))]
            Destination::Subscribers => self.index.deliver(&envelope.channel, &envelope.message),
            Destination::User(user) => self
                .sessions
                .of_user(user)
                .iter()
                .filter(|s| s.is_subscribed_to(&envelope.channel))
                .filter(|s| deliver(&***s))
                .count(),
            Destination::Session(client_id) => self
                .sessions
                .get(client_id)
                .is_some_and(|s| deliver(&*s))
                .into(),
        }
    }
}

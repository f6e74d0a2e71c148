//! Subscription index and fan-out.
//!
//! The [`Broker`] trait is the boundary between the sessions and the way published
//! messages find them. [`InMemoryBroker`] is the single-process implementation: a trie of
//! channel segments, so finding the subscribers of `/a/b/c` visits at most one node per
//! segment, whatever the number of subscribers. A multi-node backend (Redis, NATS)
//! implements the same trait: it forwards `publish` to the other nodes and fans out what
//! it receives through an `InMemoryBroker` of its own, with no change to sessions or HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::protocol::{ChannelName, Wildcard};

/// Identifies one recipient (a session or a local listener) inside a broker.
pub type RecipientId = u64;

/// Something a broker can hand a message to: a remote session's queue or an in-process
/// listener.
pub trait Recipient: Send + Sync {
    /// A stable id, unique within the server.
    fn recipient_id(&self) -> RecipientId;
    /// Queues the already-encoded message. Must not block: it runs inside the fan-out.
    fn deliver(&self, message: &Bytes);
}

/// The subscription index and the fan-out of published messages.
pub trait Broker: Send + Sync + 'static {
    /// Adds `recipient` under `pattern`; false when it was already there.
    fn subscribe(&self, pattern: &ChannelName, recipient: Arc<dyn Recipient>) -> bool;
    /// Removes the recipient from `pattern`; false when it was not there.
    fn unsubscribe(&self, pattern: &ChannelName, recipient: RecipientId) -> bool;
    /// Hands `message` (encoded once) to every recipient whose pattern matches the plain
    /// channel `channel`, each recipient once; returns how many recipients got it.
    fn publish(&self, channel: &ChannelName, message: &Bytes) -> usize;
}

type Recipients = HashMap<RecipientId, Arc<dyn Recipient>>;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Subscribed to this node's channel exactly.
    exact: Recipients,
    /// Subscribed to `<this node>/*`.
    one: Recipients,
    /// Subscribed to `<this node>/**`.
    deep: Recipients,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.exact.is_empty()
            && self.one.is_empty()
            && self.deep.is_empty()
    }

    fn set_mut(&mut self, wildcard: Option<Wildcard>) -> &mut Recipients {
        match wildcard {
            None => &mut self.exact,
            Some(Wildcard::One) => &mut self.one,
            Some(Wildcard::Deep) => &mut self.deep,
        }
    }

    /// Removes `id` from the set at `path`, pruning nodes left empty.
    fn remove(&mut self, path: &[&str], wildcard: Option<Wildcard>, id: RecipientId) -> bool {
        match path.split_first() {
            None => self.set_mut(wildcard).remove(&id).is_some(),
            Some((head, rest)) => {
                let Some(child) = self.children.get_mut(*head) else {
                    return false;
                };
                let removed = child.remove(rest, wildcard, id);
                if child.is_empty() {
                    self.children.remove(*head);
                }
                removed
            }
        }
    }
}

/// The in-process [`Broker`]: a channel trie behind one read-write lock. Publishing takes
/// the read lock only, so publishes run in parallel; subscribe and unsubscribe are short
/// writes.
#[derive(Default)]
pub struct InMemoryBroker {
    root: RwLock<Node>,
}

impl InMemoryBroker {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The recipient sets that match `channel`: one visit per segment.
    fn matching<'a>(root: &'a Node, channel: &ChannelName, out: &mut Vec<&'a Recipients>) {
        let segments: Vec<&str> = channel.segments().collect();
        let mut node = root;
        for (i, segment) in segments.iter().enumerate() {
            if !node.deep.is_empty() {
                out.push(&node.deep);
            }
            if i + 1 == segments.len() && !node.one.is_empty() {
                out.push(&node.one);
            }
            match node.children.get(*segment) {
                Some(child) => node = child,
                None => return,
            }
        }
        if !node.exact.is_empty() {
            out.push(&node.exact);
        }
    }
}

impl Broker for InMemoryBroker {
    fn subscribe(&self, pattern: &ChannelName, recipient: Arc<dyn Recipient>) -> bool {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let mut node = &mut *root;
        for segment in pattern.prefix_segments() {
            node = node.children.entry(segment.into()).or_default();
        }
        node.set_mut(pattern.wildcard())
            .insert(recipient.recipient_id(), recipient)
            .is_none()
    }

    fn unsubscribe(&self, pattern: &ChannelName, recipient: RecipientId) -> bool {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let path: Vec<&str> = pattern.prefix_segments().collect();
        root.remove(&path, pattern.wildcard(), recipient)
    }

    fn publish(&self, channel: &ChannelName, message: &Bytes) -> usize {
        debug_assert!(channel.wildcard().is_none(), "publish to a pattern");
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        let mut sets = Vec::with_capacity(4);
        Self::matching(&root, channel, &mut sets);
        match sets.len() {
            0 => 0,
            // The common case: no overlap is possible, so no de-duplication is needed.
            1 => {
                for r in sets[0].values() {
                    r.deliver(message);
                }
                sets[0].len()
            }
            _ => {
                let mut seen = HashSet::new();
                for set in sets {
                    for (id, r) in set {
                        if seen.insert(*id) {
                            r.deliver(message);
                        }
                    }
                }
                seen.len()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Probe {
        id: RecipientId,
        got: Mutex<Vec<Bytes>>,
    }

    impl Recipient for Probe {
        fn recipient_id(&self) -> RecipientId {
            self.id
        }
        fn deliver(&self, message: &Bytes) {
            self.got.lock().unwrap().push(message.clone());
        }
    }

    fn probe(id: RecipientId) -> Arc<Probe> {
        Arc::new(Probe {
            id,
            got: Mutex::new(Vec::new()),
        })
    }

    fn c(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[test]
    fn exact_one_and_deep_patterns() {
        let broker = InMemoryBroker::new();
        let (exact, one, deep, root_deep, other) =
            (probe(1), probe(2), probe(3), probe(4), probe(5));
        broker.subscribe(&c("/a/b"), exact.clone());
        broker.subscribe(&c("/a/*"), one.clone());
        broker.subscribe(&c("/a/**"), deep.clone());
        broker.subscribe(&c("/**"), root_deep.clone());
        broker.subscribe(&c("/x/y"), other.clone());
        let msg = Bytes::from_static(b"{}");
        assert_eq!(broker.publish(&c("/a/b"), &msg), 4);
        assert_eq!(broker.publish(&c("/a/b/c"), &msg), 2);
        assert_eq!(broker.publish(&c("/a"), &msg), 1);
        let counts: Vec<usize> = [&exact, &one, &deep, &root_deep, &other]
            .iter()
            .map(|p| p.got.lock().unwrap().len())
            .collect();
        assert_eq!(counts, vec![1, 1, 2, 3, 0]);
    }

    #[test]
    fn one_recipient_under_overlapping_patterns_gets_one_copy() {
        let broker = InMemoryBroker::new();
        let p = probe(1);
        broker.subscribe(&c("/a/b"), p.clone());
        broker.subscribe(&c("/a/*"), p.clone());
        broker.subscribe(&c("/**"), p.clone());
        assert_eq!(broker.publish(&c("/a/b"), &Bytes::from_static(b"1")), 1);
        assert_eq!(p.got.lock().unwrap().len(), 1);
    }

    #[test]
    fn shared_buffer_is_not_copied() {
        let broker = InMemoryBroker::new();
        let (a, b) = (probe(1), probe(2));
        broker.subscribe(&c("/a"), a.clone());
        broker.subscribe(&c("/a"), b.clone());
        let msg = Bytes::from(vec![7u8; 64]);
        broker.publish(&c("/a"), &msg);
        assert_eq!(a.got.lock().unwrap()[0].as_ptr(), msg.as_ptr());
        assert_eq!(b.got.lock().unwrap()[0].as_ptr(), msg.as_ptr());
    }

    #[test]
    fn unsubscribe_removes_and_prunes() {
        let broker = InMemoryBroker::new();
        let p = probe(1);
        assert!(broker.subscribe(&c("/a/b/c"), p.clone()));
        assert!(!broker.subscribe(&c("/a/b/c"), p.clone()));
        assert!(broker.unsubscribe(&c("/a/b/c"), 1));
        assert!(!broker.unsubscribe(&c("/a/b/c"), 1));
        assert!(!broker.unsubscribe(&c("/q/*"), 1));
        assert!(broker.root.read().unwrap().is_empty());
        assert_eq!(broker.publish(&c("/a/b/c"), &Bytes::new()), 0);
    }
}

//! The node's subscription index: which local recipients (sessions, in-process
//! listeners) subscribed to which channel patterns, and the fan-out of one encoded
//! message to them.
//!
//! A trie of channel segments, so finding the subscribers of `/a/b/c` visits at most one
//! node per segment, whatever the number of subscribers. It is local to one process:
//! messages reach it through the [`Broker`](super::Broker), which decides which nodes
//! see them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::protocol::{ChannelName, Wildcard};

/// Identifies one recipient (a session or a local listener) inside a index.
pub type RecipientId = u64;

/// Something the index can hand a message to: a session's queue or an in-process
/// listener.
pub trait Recipient: Send + Sync {
    /// A stable id, unique within the server.
    fn recipient_id(&self) -> RecipientId;
    /// Queues the already-encoded message; false when it was not queued (the
    /// recipient's queue is full or it has ended). Must not block: it runs inside the
    /// fan-out.
    fn deliver(&self, message: &Bytes) -> bool;

    /// [`Recipient::deliver`], with the instant the fan-out of `message` began (the same
    /// for all its recipients), for a recipient that measures how long messages wait
    /// (sessions do, for the publish-to-flush histogram). The default ignores it.
    fn deliver_at(&self, message: &Bytes, published: std::time::Instant) -> bool {
        let _ = published;
        self.deliver(message)
    }
}

type Recipients = HashMap<RecipientId, Arc<dyn Recipient>>;

/// What a subscribe or unsubscribe changed in the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// The recipient was added (or removed); false when that was already so.
    pub changed: bool,
    /// The pattern gained its first recipient (or lost its last): the node's interest in
    /// it changed.
    pub boundary: bool,
}

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
    fn remove(&mut self, path: &[&str], wildcard: Option<Wildcard>, id: RecipientId) -> Change {
        match path.split_first() {
            None => {
                let set = self.set_mut(wildcard);
                let changed = set.remove(&id).is_some();
                Change {
                    changed,
                    boundary: changed && set.is_empty(),
                }
            }
            Some((head, rest)) => {
                let Some(child) = self.children.get_mut(*head) else {
                    return Change::default();
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

/// A channel trie behind one read-write lock. Delivering takes the read lock only, so
/// publishes run in parallel; subscribe and unsubscribe are short writes.
#[derive(Default)]
pub struct ChannelIndex {
    root: RwLock<Node>,
}

impl std::fmt::Debug for ChannelIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelIndex").finish_non_exhaustive()
    }
}

impl ChannelIndex {
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

    /// Adds `recipient` under `pattern`; false when it was already there.
    pub fn subscribe(&self, pattern: &ChannelName, recipient: Arc<dyn Recipient>) -> bool {
        self.add(pattern, recipient).changed
    }

    /// Removes the recipient from `pattern`; false when it was not there.
    pub fn unsubscribe(&self, pattern: &ChannelName, recipient: RecipientId) -> bool {
        self.remove(pattern, recipient).changed
    }

    /// Adds `recipient` under `pattern`, saying whether it is the pattern's first.
    pub(crate) fn add(&self, pattern: &ChannelName, recipient: Arc<dyn Recipient>) -> Change {
        self.add_then(pattern, recipient, |_| {})
    }

    /// [`ChannelIndex::add`], calling `then` with the change before the index is
    /// unlocked, so that changes of interest are reported in the order they happened.
    pub(crate) fn add_then(
        &self,
        pattern: &ChannelName,
        recipient: Arc<dyn Recipient>,
        then: impl FnOnce(Change),
    ) -> Change {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let mut node = &mut *root;
        for segment in pattern.prefix_segments() {
            node = node.children.entry(segment.into()).or_default();
        }
        let set = node.set_mut(pattern.wildcard());
        let added = set.insert(recipient.recipient_id(), recipient).is_none();
        let change = Change {
            changed: added,
            boundary: added && set.len() == 1,
        };
        then(change);
        change
    }

    /// Removes the recipient from `pattern`, saying whether it was the pattern's last.
    pub(crate) fn remove(&self, pattern: &ChannelName, recipient: RecipientId) -> Change {
        self.remove_then(pattern, recipient, |_| {})
    }

    /// [`ChannelIndex::remove`], calling `then` with the change before the index is
    /// unlocked.
    pub(crate) fn remove_then(
        &self,
        pattern: &ChannelName,
        recipient: RecipientId,
        then: impl FnOnce(Change),
    ) -> Change {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let path: Vec<&str> = pattern.prefix_segments().collect();
        let change = root.remove(&path, pattern.wildcard(), recipient);
        then(change);
        change
    }

    /// Hands `message` (encoded once) to every recipient whose pattern matches the plain
    /// channel `channel`, each recipient once; returns how many queued it.
    pub fn deliver(&self, channel: &ChannelName, message: &Bytes) -> usize {
        self.fan_out(channel, |r| r.deliver(message))
    }

    /// [`ChannelIndex::deliver`], telling each recipient when the fan-out began
    /// ([`Recipient::deliver_at`]); the clock is read once per call, not per recipient.
    pub fn deliver_at(
        &self,
        channel: &ChannelName,
        message: &Bytes,
        published: std::time::Instant,
    ) -> usize {
        self.fan_out(channel, |r| r.deliver_at(message, published))
    }

    /// Calls `deliver` for every recipient whose pattern matches `channel`, each once;
    /// returns how many it returned true for.
    fn fan_out(&self, channel: &ChannelName, deliver: impl Fn(&dyn Recipient) -> bool) -> usize {
        debug_assert!(channel.wildcard().is_none(), "publish to a pattern");
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        let mut sets = Vec::with_capacity(4);
        Self::matching(&root, channel, &mut sets);
        match sets.len() {
            0 => 0,
            // The common case: no overlap is possible, so no de-duplication is needed.
            1 => sets[0].values().filter(|r| deliver(&***r)).count(),
            // Overlapping patterns (say `/chat` and `/**`): a recipient in several sets
            // gets the message from the first set that has it. The sets are few (at
            // most two per segment and one exact), so looking the earlier ones up costs
            // less than building a set of everyone, and allocates nothing per delivery.
            _ => {
                let mut queued = 0;
                for (i, set) in sets.iter().enumerate() {
                    for (id, r) in set.iter() {
                        let earlier = sets[..i].iter().any(|s| s.contains_key(id));
                        if !earlier && deliver(&**r) {
                            queued += 1;
                        }
                    }
                }
                queued
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
        fn deliver(&self, message: &Bytes) -> bool {
            self.got.lock().unwrap().push(message.clone());
            true
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
        let index = ChannelIndex::new();
        let (exact, one, deep, root_deep, other) =
            (probe(1), probe(2), probe(3), probe(4), probe(5));
        index.subscribe(&c("/a/b"), exact.clone());
        index.subscribe(&c("/a/*"), one.clone());
        index.subscribe(&c("/a/**"), deep.clone());
        index.subscribe(&c("/**"), root_deep.clone());
        index.subscribe(&c("/x/y"), other.clone());
        let msg = Bytes::from_static(b"{}");
        assert_eq!(index.deliver(&c("/a/b"), &msg), 4);
        assert_eq!(index.deliver(&c("/a/b/c"), &msg), 2);
        assert_eq!(index.deliver(&c("/a"), &msg), 1);
        let counts: Vec<usize> = [&exact, &one, &deep, &root_deep, &other]
            .iter()
            .map(|p| p.got.lock().unwrap().len())
            .collect();
        assert_eq!(counts, vec![1, 1, 2, 3, 0]);
    }

    #[test]
    fn one_recipient_under_overlapping_patterns_gets_one_copy() {
        let index = ChannelIndex::new();
        let p = probe(1);
        index.subscribe(&c("/a/b"), p.clone());
        index.subscribe(&c("/a/*"), p.clone());
        index.subscribe(&c("/**"), p.clone());
        assert_eq!(index.deliver(&c("/a/b"), &Bytes::from_static(b"1")), 1);
        assert_eq!(p.got.lock().unwrap().len(), 1);
    }

    #[test]
    fn shared_buffer_is_not_copied() {
        let index = ChannelIndex::new();
        let (a, b) = (probe(1), probe(2));
        index.subscribe(&c("/a"), a.clone());
        index.subscribe(&c("/a"), b.clone());
        let msg = Bytes::from(vec![7u8; 64]);
        index.deliver(&c("/a"), &msg);
        assert_eq!(a.got.lock().unwrap()[0].as_ptr(), msg.as_ptr());
        assert_eq!(b.got.lock().unwrap()[0].as_ptr(), msg.as_ptr());
    }

    #[test]
    fn unsubscribe_removes_and_prunes() {
        let index = ChannelIndex::new();
        let p = probe(1);
        assert!(index.subscribe(&c("/a/b/c"), p.clone()));
        assert!(!index.subscribe(&c("/a/b/c"), p.clone()));
        assert!(index.unsubscribe(&c("/a/b/c"), 1));
        assert!(!index.unsubscribe(&c("/a/b/c"), 1));
        assert!(!index.unsubscribe(&c("/q/*"), 1));
        assert!(index.root.read().unwrap().is_empty());
        assert_eq!(index.deliver(&c("/a/b/c"), &Bytes::new()), 0);
    }

    #[test]
    fn first_and_last_recipients_of_a_pattern_are_reported() {
        let index = ChannelIndex::new();
        let first = index.add(&c("/a/*"), probe(1));
        let second = index.add(&c("/a/*"), probe(2));
        assert_eq!((first.changed, first.boundary), (true, true));
        assert_eq!((second.changed, second.boundary), (true, false));
        assert!(!index.remove(&c("/a/*"), 1).boundary);
        let last = index.remove(&c("/a/*"), 2);
        assert_eq!((last.changed, last.boundary), (true, true));
    }
}

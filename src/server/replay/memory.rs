//! The in-memory replay log of a single node: one id sequence for the server, and a
//! bounded queue of entries per (channel, user). Synchronous and free of I/O; the caller
//! holds it under a lock and supplies the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::Instant;

use crate::protocol::ChannelName;

/// The streams of one audience, by channel.
type Streams = HashMap<ChannelName, Stream>;

/// One retained message.
struct Entry {
    id: u64,
    at: Instant,
    message: Bytes,
}

/// The entries of one (channel, user).
#[derive(Default)]
struct Stream {
    entries: VecDeque<Entry>,
    /// The highest id dropped from this stream (0: none): a replay after an id below
    /// it would miss messages.
    floor: u64,
}

/// Why a replay after an id cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Messages after the id were dropped (retention or the per-channel bound), or the
    /// id is from before this log began (another run of the server).
    NotRetained,
    /// The id was never assigned: it is after the latest.
    Unknown,
}

impl Refusal {
    /// The reason in the error message.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotRetained => "the messages after it are no longer retained",
            Refusal::Unknown => "no message has this replayId",
        }
    }
}

/// The log. Ids are unique across the server and increase with each message, so they
/// also increase per channel (with gaps, as Salesforce's do); a replay over a wildcard
/// sorts by them.
///
/// Bounded three ways: per stream (`max_per_stream`), and over all streams by bytes and
/// by the number of streams (a durable pattern such as `/event/*` grows a stream per
/// channel). Past a total bound the oldest entries of the whole log go first: the heads
/// of the streams are indexed by id, so finding the oldest is a lookup, not a scan.
pub(crate) struct MemoryLog {
    latest: u64,
    /// Ids at or below it are not replayable: the ids before this log began, and the
    /// floors of streams removed once empty.
    floor: u64,
    /// By audience: `None` for broadcasts (everyone may replay them), a user's name for
    /// per-user deliveries (that user's sessions only). A replay looks at two audiences,
    /// however many users there are.
    streams: HashMap<Option<String>, Streams>,
    /// The id of each stream's oldest entry, to its stream: the first is the log's
    /// oldest entry.
    heads: BTreeMap<u64, (Option<String>, ChannelName)>,
    retention: Duration,
    max_per_stream: usize,
    /// The bytes of all retained messages, and the bound on them.
    bytes: usize,
    max_bytes: usize,
    max_streams: usize,
    /// Entries retained, and entries dropped to keep within the total bounds.
    entries: usize,
    evicted: u64,
}

/// The first id of a log made now, less one: the microseconds since 1970, so that a
/// restarted server's ids are above every id of its previous run (while it published
/// fewer than a million messages a second on average), and a client's id from before
/// the restart is answered "not retained" rather than taken for another message. Below
/// 2^53 until the year 2255, so JavaScript clients read the ids exactly.
fn initial_floor() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The total bounds of a [`MemoryLog`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Each stream's messages at most.
    pub per_stream: usize,
    /// The bytes of all messages at most.
    pub bytes: usize,
    /// Streams (channel and audience) at most.
    pub streams: usize,
}

impl MemoryLog {
    /// An empty log keeping each stream's messages for `retention`, within `bounds`.
    pub fn new(retention: Duration, bounds: Bounds) -> Self {
        Self::starting_after(initial_floor(), retention, bounds)
    }

    /// An empty log whose first id is `floor + 1`.
    pub fn starting_after(floor: u64, retention: Duration, bounds: Bounds) -> Self {
        MemoryLog {
            latest: floor,
            floor,
            streams: HashMap::new(),
            heads: BTreeMap::new(),
            retention,
            max_per_stream: bounds.per_stream.max(1),
            bytes: 0,
            max_bytes: bounds.bytes,
            max_streams: bounds.streams.max(1),
            entries: 0,
            evicted: 0,
        }
    }

    /// The id of the latest message (the floor when there is none yet).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// The id the next message will have.
    pub fn next_id(&self) -> u64 {
        self.latest + 1
    }

    /// Retains `message` (already carrying `id`, which must be [`MemoryLog::next_id`]),
    /// for `user` only or for everyone; the stream's oldest entry goes when it is full,
    /// and the log's oldest entries when a total bound is passed (never the new one).
    pub fn append(
        &mut self,
        channel: &ChannelName,
        user: Option<&str>,
        id: u64,
        message: Bytes,
        now: Instant,
    ) {
        debug_assert_eq!(id, self.next_id());
        self.latest = id;
        let audience = user.map(str::to_string);
        let stream = self
            .streams
            .entry(audience.clone())
            .or_default()
            .entry(channel.clone())
            .or_default();
        if stream.entries.is_empty() {
            self.heads.insert(id, (audience.clone(), channel.clone()));
        }
        self.bytes += message.len();
        self.entries += 1;
        stream.entries.push_back(Entry {
            id,
            at: now,
            message,
        });
        if stream.entries.len() > self.max_per_stream {
            self.pop_oldest(&audience, channel);
        }
        while (self.bytes > self.max_bytes || self.stream_count() > self.max_streams)
            && self
                .heads
                .first_key_value()
                .is_some_and(|(first, _)| *first != id)
        {
            if let Some((_, (audience, channel))) = self.heads.pop_first() {
                self.pop_oldest_at(&audience, &channel);
                self.evicted += 1;
            }
        }
    }

    /// The streams retained.
    pub fn stream_count(&self) -> usize {
        self.heads.len()
    }

    /// Drops the oldest entry of a stream whose head is still indexed.
    fn pop_oldest(&mut self, audience: &Option<String>, channel: &ChannelName) {
        let head = self
            .streams
            .get(audience)
            .and_then(|s| s.get(channel))
            .and_then(|s| s.entries.front())
            .map(|e| e.id);
        if let Some(head) = head {
            self.heads.remove(&head);
            self.pop_oldest_at(audience, channel);
        }
    }

    /// Drops the oldest entry of a stream whose head was already taken out of the index:
    /// its floor rises, the next entry becomes its head, and an empty stream goes.
    fn pop_oldest_at(&mut self, audience: &Option<String>, channel: &ChannelName) {
        let Some(streams) = self.streams.get_mut(audience) else {
            return;
        };
        let Some(stream) = streams.get_mut(channel) else {
            return;
        };
        if let Some(old) = stream.entries.pop_front() {
            stream.floor = old.id;
            self.bytes -= old.message.len();
            self.entries -= 1;
        }
        match stream.entries.front() {
            Some(next) => {
                self.heads
                    .insert(next.id, (audience.clone(), channel.clone()));
            }
            None => {
                self.floor = self.floor.max(stream.floor);
                streams.remove(channel);
                if streams.is_empty() {
                    self.streams.remove(audience);
                }
            }
        }
    }

    /// Drops the entries older than the retention; a stream left empty is forgotten
    /// (its floor moves to the log's). Ids grow with time, so the expired entries are
    /// the log's oldest: found through the heads' index.
    pub fn prune(&mut self, now: Instant) {
        loop {
            let Some((&first, (audience, channel))) = self.heads.first_key_value() else {
                return;
            };
            let expired = self
                .streams
                .get(audience)
                .and_then(|s| s.get(channel))
                .and_then(|s| s.entries.front())
                .is_some_and(|e| now.saturating_duration_since(e.at) > self.retention);
            if !expired {
                return;
            }
            let (audience, channel) = (audience.clone(), channel.clone());
            self.heads.remove(&first);
            self.pop_oldest_at(&audience, &channel);
        }
    }

    /// The bytes of the retained messages.
    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries dropped to keep within the total bounds (bytes, streams).
    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The streams a session of `user` subscribed to `pattern` replays: the broadcast
    /// ones and its user's own.
    fn visible<'a>(
        &'a self,
        pattern: &'a ChannelName,
        user: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ChannelName, &'a Stream)> + 'a {
        let broadcasts = self.streams.get(&None);
        let own = user.and_then(|u| self.streams.get(&Some(u.to_string())));
        broadcasts
            .into_iter()
            .chain(own)
            .flat_map(|streams| streams.iter())
            .filter(move |(channel, _)| pattern.matches(channel))
    }

    /// Whether everything after `after` that a session of `user` subscribed to
    /// `pattern` would have received is still here.
    pub fn check(
        &self,
        pattern: &ChannelName,
        user: Option<&str>,
        after: u64,
    ) -> Result<(), Refusal> {
        if after > self.latest {
            return Err(Refusal::Unknown);
        }
        if after < self.floor || self.visible(pattern, user).any(|(_, s)| s.floor > after) {
            return Err(Refusal::NotRetained);
        }
        Ok(())
    }

    /// The retained messages after `after` (all of them for `None`) that a session of
    /// `user` subscribed to `pattern` receives, as (id, channel, message), unsorted.
    pub fn history(
        &self,
        pattern: &ChannelName,
        user: Option<&str>,
        after: Option<u64>,
        out: &mut Vec<(u64, ChannelName, Bytes)>,
    ) {
        let after = after.unwrap_or(0);
        for (channel, stream) in self.visible(pattern, user) {
            // Entries are in id order: skip the old ones from the front.
            let start = stream.entries.partition_point(|e| e.id <= after);
            out.extend(
                stream
                    .entries
                    .range(start..)
                    .map(|e| (e.id, channel.clone(), e.message.clone())),
            );
        }
    }

    /// How many messages are retained, for monitoring.
    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    /// `per_stream` per stream, no total bound.
    fn bounds(per_stream: usize) -> Bounds {
        Bounds {
            per_stream,
            bytes: usize::MAX,
            streams: usize::MAX,
        }
    }

    fn ids(log: &MemoryLog, pattern: &str, user: Option<&str>, after: Option<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        log.history(&ch(pattern), user, after, &mut out);
        let mut ids: Vec<u64> = out.into_iter().map(|(id, _, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    fn add(log: &mut MemoryLog, channel: &str, user: Option<&str>, now: Instant) -> u64 {
        let id = log.next_id();
        log.append(&ch(channel), user, id, Bytes::from(id.to_string()), now);
        id
    }

    #[test]
    fn ids_are_unique_and_increasing_across_channels() {
        let mut log = MemoryLog::starting_after(100, Duration::from_secs(60), bounds(10));
        let now = Instant::now();
        assert_eq!(add(&mut log, "/a", None, now), 101);
        assert_eq!(add(&mut log, "/b", None, now), 102);
        assert_eq!(add(&mut log, "/a", None, now), 103);
        assert_eq!(log.latest(), 103);
        assert_eq!(ids(&log, "/a", None, None), vec![101, 103]);
        assert_eq!(ids(&log, "/*", None, None), vec![101, 102, 103]);
        assert_eq!(ids(&log, "/*", None, Some(101)), vec![102, 103]);
        assert_eq!(ids(&log, "/c", None, None), Vec::<u64>::new());
    }

    #[test]
    fn a_user_replays_its_own_entries_and_broadcasts_only() {
        let mut log = MemoryLog::starting_after(0, Duration::from_secs(60), bounds(10));
        let now = Instant::now();
        let a = add(&mut log, "/v2/me/emails", Some("agent1"), now);
        let b = add(&mut log, "/v2/me/emails", Some("agent2"), now);
        let all = add(&mut log, "/v2/me/emails", None, now);
        assert_eq!(ids(&log, "/v2/me/*", Some("agent1"), None), vec![a, all]);
        assert_eq!(ids(&log, "/v2/**", Some("agent2"), None), vec![b, all]);
        assert_eq!(ids(&log, "/**", None, None), vec![all]);
    }

    #[test]
    fn the_bound_per_stream_drops_the_oldest_and_raises_the_floor() {
        let mut log = MemoryLog::starting_after(0, Duration::from_secs(60), bounds(3));
        let now = Instant::now();
        let first: Vec<u64> = (0..5).map(|_| add(&mut log, "/a", None, now)).collect();
        let other = add(&mut log, "/b", None, now);
        assert_eq!(ids(&log, "/a", None, None), first[2..].to_vec());
        // After the last id dropped: nothing missed.
        assert_eq!(log.check(&ch("/a"), None, first[1]), Ok(()));
        assert_eq!(
            log.check(&ch("/a"), None, first[0]),
            Err(Refusal::NotRetained)
        );
        // Another channel's bound does not concern `/b`...
        assert_eq!(log.check(&ch("/b"), None, 0), Ok(()));
        // ...but a wildcard over both does.
        assert_eq!(log.check(&ch("/*"), None, 0), Err(Refusal::NotRetained));
        // The latest id: nothing missed. After it: never assigned.
        assert_eq!(log.check(&ch("/a"), None, other), Ok(()));
        assert_eq!(log.check(&ch("/a"), None, other + 1), Err(Refusal::Unknown));
        assert_eq!(log.len(), 4);
    }

    #[test]
    fn the_total_bounds_drop_the_oldest_entries_of_the_whole_log() {
        // Messages of 3 bytes ("101"...); 4 entries' worth of bytes, 2 streams.
        let mut log = MemoryLog::starting_after(
            100,
            Duration::from_secs(60),
            Bounds {
                per_stream: 10,
                bytes: 12,
                streams: 2,
            },
        );
        let now = Instant::now();
        let a1 = add(&mut log, "/a", None, now);
        let b1 = add(&mut log, "/b", None, now);
        let a2 = add(&mut log, "/a", None, now);
        let b2 = add(&mut log, "/b", None, now);
        assert_eq!((log.len(), log.bytes()), (4, 12));
        // Over the bytes: the oldest (a1) goes, and `/a` can no longer replay from 0.
        let a3 = add(&mut log, "/a", None, now);
        assert_eq!(ids(&log, "/**", None, None), vec![b1, a2, b2, a3]);
        assert_eq!(log.check(&ch("/a"), None, 0), Err(Refusal::NotRetained));
        assert_eq!(log.check(&ch("/a"), None, a1), Ok(()));
        // A third stream is over the stream bound: the oldest entries go until a
        // whole stream has (here `/b`, whose last entry was older than `/a`'s).
        let c1 = add(&mut log, "/c", None, now);
        assert_eq!(log.stream_count(), 2);
        assert_eq!(ids(&log, "/**", None, None), vec![a3, c1]);
        assert_eq!(log.evicted(), 4);
        assert_eq!(log.bytes(), 6);
        // The floor of a stream dropped whole is the log's: older ids are refused.
        assert_eq!(log.check(&ch("/b"), None, b1), Err(Refusal::NotRetained));
        // One message larger than the whole budget is still kept (alone).
        let mut tiny = MemoryLog::starting_after(
            0,
            Duration::from_secs(60),
            Bounds {
                per_stream: 10,
                bytes: 1,
                streams: 10,
            },
        );
        add(&mut tiny, "/a", None, now);
        let big = add(&mut tiny, "/a", None, now);
        assert_eq!(ids(&tiny, "/a", None, None), vec![big]);
    }

    #[test]
    fn ids_from_before_the_log_began_are_not_retained() {
        let log = MemoryLog::starting_after(1_000, Duration::from_secs(60), bounds(3));
        assert_eq!(log.check(&ch("/a"), None, 1_000), Ok(()));
        assert_eq!(log.check(&ch("/a"), None, 999), Err(Refusal::NotRetained));
        assert_eq!(log.check(&ch("/a"), None, 1_001), Err(Refusal::Unknown));
        assert!(MemoryLog::new(Duration::from_secs(1), bounds(1)).latest() > 1_700_000_000_000_000);
    }

    #[test]
    fn retention_drops_old_entries_and_forgets_empty_streams() {
        let mut log = MemoryLog::starting_after(0, Duration::from_secs(10), bounds(100));
        let t0 = Instant::now();
        let old = add(&mut log, "/a", None, t0);
        let gone = add(&mut log, "/b", None, t0);
        let young = add(&mut log, "/a", None, t0 + Duration::from_secs(8));
        log.prune(t0 + Duration::from_secs(10));
        assert_eq!(log.len(), 3, "exactly the retention: still kept");
        log.prune(t0 + Duration::from_secs(11));
        assert_eq!(ids(&log, "/**", None, None), vec![young]);
        assert_eq!(
            log.check(&ch("/a"), None, old - 1),
            Err(Refusal::NotRetained)
        );
        // `/b` was forgotten; its floor became the log's, which also refuses the ids
        // before it on `/a` (they are no longer retained either, as Salesforce says).
        assert_eq!(log.check(&ch("/a"), None, old), Err(Refusal::NotRetained));
        assert_eq!(
            log.check(&ch("/b"), None, gone - 1),
            Err(Refusal::NotRetained)
        );
        assert_eq!(log.check(&ch("/b"), None, gone), Ok(()));
        assert_eq!(log.check(&ch("/a"), None, gone), Ok(()));
    }
}

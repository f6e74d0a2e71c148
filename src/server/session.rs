//! One client session, whatever transport carries it: its id, subscriptions, bounded
//! outbound queue, acknowledged batches and expiry bookkeeping.
//!
//! A transport never reaches into the queue. It [`attach`](Session::attach)es to the
//! session, awaits [`ready`](Session::ready) (something to send, a newer attachment that
//! replaces it, or the end of the session) and [`take`](Session::take)s the next batch.
//! Long-polling does that once per `/meta/connect`; a socket does it in a loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::OverflowPolicy;
use super::index::{Recipient, RecipientId};
use super::policy::SessionInfo;
use super::stats::{DropReason, Stats};
use super::transport::ConnectionType;
use crate::protocol::ChannelName;

/// Makes a `clientId`: 160 bits from the operating system's CSPRNG, as hex.
pub(crate) fn new_client_id() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    let mut id = String::with_capacity(40);
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// Why a session ended; decides what its transport tells the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent `/meta/disconnect`.
    Disconnected,
    /// No transport attached for longer than `interval + maxInterval`.
    Expired,
    /// Its queue overflowed under [`OverflowPolicy::CloseSession`].
    Overflow,
    /// The server is shutting down.
    Shutdown,
}

// Read by the metrics collector and the log events.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl CloseReason {
    /// Every reason, in `Stats::closed` order.
    pub const ALL: [CloseReason; 4] = [
        CloseReason::Disconnected,
        CloseReason::Expired,
        CloseReason::Overflow,
        CloseReason::Shutdown,
    ];

    /// The reason's slot in `Stats::closed`.
    fn index(self) -> usize {
        match self {
            CloseReason::Disconnected => 0,
            CloseReason::Expired => 1,
            CloseReason::Overflow => 2,
            CloseReason::Shutdown => 3,
        }
    }

    /// The name in metrics and log events.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Disconnected => "disconnected",
            CloseReason::Expired => "expired",
            CloseReason::Overflow => "overflow",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// CometD's acknowledged-messages extension, per session: what a batch sent stays here,
/// tagged with the batch number, until the client acknowledges that batch; a batch that
/// never arrived is sent again.
struct AckState {
    next_batch: u64,
    unacked: VecDeque<(u64, Bytes)>,
}

/// What one held message costs against `maxQueueBytes`: its bytes and its queue slot
/// (the `Bytes` handle and the slot it sits in), so that the bound holds for many tiny
/// messages too.
fn charge(message: &Bytes) -> usize {
    message.len() + SLOT_COST
}

/// The memory a queued message costs besides its bytes.
const SLOT_COST: usize = 48;

/// The bounds of one session's queue, and what happens past them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// `maxQueue`: messages held (queued, or sent and not yet acknowledged).
    pub max_messages: usize,
    /// `maxQueueBytes`: their bytes, each message charged its size and its slot.
    pub max_bytes: usize,
    /// `max_queued_bytes`: what all sessions together may hold, counted as `max_bytes`
    /// is, in [`Stats::queued_bytes`].
    pub max_total_bytes: usize,
    /// What a session without acknowledgements does on overflow.
    pub overflow: OverflowPolicy,
    /// A batch of at least this many messages marks the session busy (see
    /// [`Session::is_busy`]).
    pub busy_threshold: usize,
}

struct State {
    queue: VecDeque<Bytes>,
    /// What the queue and the unacknowledged messages are charged, in bytes.
    held_bytes: usize,
    /// Set at the first overflow, so it is reported once per session.
    overflowed: bool,
    /// The last batch taken had `busy_threshold` messages or more: messages arrive
    /// faster than the client takes them.
    busy: bool,
    ack: Option<AckState>,
    closed: Option<CloseReason>,
    /// Transports attached right now (a pending long poll; briefly two while a newer
    /// one replaces an older one).
    attached: u32,
    /// Incremented by each attachment: an attachment whose number is no longer the
    /// latest has been replaced. Zero until the first one.
    generation: u64,
    /// When the last attachment ended, or the handshake if none has.
    last_active: Instant,
    /// The transport that last carried the session (the handshake's, then each
    /// attachment's).
    transport: ConnectionType,
    /// Counted in the server's live sessions by transport: from its registration to
    /// its removal.
    counted: bool,
    /// When the fan-out of the first message queued since the last take began, as a
    /// stamp of the publish-to-flush histogram (8 bytes; 0: none): its one timestamp per
    /// batch.
    #[cfg(feature = "metrics")]
    first_queued: u64,
}

/// What a transport takes from the session to send.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The messages to send, in order: with acknowledgements on, the unacknowledged ones
    /// first.
    pub messages: Vec<Bytes>,
    /// Set when the session has ended.
    pub closed: Option<CloseReason>,
    /// With acknowledgements on: the batch number of these messages (`ext.ack`).
    pub ack_batch: Option<u64>,
}

impl Outbound {
    /// Nothing to send; `closed` says whether the session ended.
    pub fn closed_or_empty(closed: Option<CloseReason>) -> Self {
        Outbound {
            messages: Vec::new(),
            closed,
            ack_batch: None,
        }
    }
}

/// What [`Session::enqueue`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    /// Not queued: the queue was full (counted in `dropped`).
    Dropped,
    /// Not queued: the session has ended.
    Closed,
}

/// A client session. Shared between the registry, the channel index (as a
/// [`Recipient`]), the handlers and the transports.
pub(crate) struct Session {
    pub info: SessionInfo,
    recipient_id: RecipientId,
    limits: QueueLimits,
    /// The server-wide counters this session adds to.
    stats: Arc<Stats>,
    /// The `BAYEUX_BROWSER` cookie of the handshake, if any.
    browser: Option<String>,
    /// The session's patterns. Held while the channel index is updated, so that
    /// "subscribed in the index" and "session alive" always agree: [`Session::close`]
    /// takes it too. Lock order: `subscriptions`, then the index, then `state`.
    subscriptions: Mutex<HashSet<ChannelName>>,
    /// With replay on: for each pattern subscribed, the replay id after which it has
    /// delivered every message (replayed, then live), so that a later replaying subscribe
    /// does not send them again.
    replay_joined: Mutex<HashMap<ChannelName, u64>>,
    state: Mutex<State>,
    /// Counts the session against its client's `max_sessions_per_address` until it is
    /// removed from the registry.
    address_slot: Mutex<Option<super::limits::SessionSlot>>,
    /// Wakes the attached transport: a message queued into an empty queue, a newer
    /// attachment, or the session ending.
    wake: Notify,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    pub fn new(
        info: SessionInfo,
        recipient_id: RecipientId,
        limits: QueueLimits,
        stats: Arc<Stats>,
        browser: Option<String>,
        transport: ConnectionType,
    ) -> Self {
        Session {
            info,
            recipient_id,
            limits,
            stats,
            browser,
            subscriptions: Mutex::new(HashSet::new()),
            replay_joined: Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                held_bytes: 0,
                overflowed: false,
                busy: false,
                ack: None,
                closed: None,
                attached: 0,
                generation: 0,
                last_active: Instant::now(),
                transport,
                counted: false,
                #[cfg(feature = "metrics")]
                first_queued: 0,
            }),
            address_slot: Mutex::new(None),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Counts the session against its client's budget until [`Session::release_address`].
    pub fn hold_address(&self, slot: super::limits::SessionSlot) {
        *lock(&self.address_slot) = Some(slot);
    }

    /// Gives back the session's place in its client's budget (it left the registry).
    pub fn release_address(&self) {
        lock(&self.address_slot).take();
    }

    /// Whether `cost` more bytes, for a session that holds `held`, fit the budget of
    /// all queues (`max_queued_bytes`, B): always below B; past it, only while the
    /// session holds less than its share (B divided by the live sessions), so that the
    /// sessions that let their queues grow (stalled clients) overflow, not the ones that
    /// keep up. Each session can grow to its share at most, so all queues together stay
    /// below 2 B (a hard stop).
    fn in_budget(&self, held: usize, cost: usize) -> bool {
        // One session's own bound always fits.
        let budget = self.limits.max_total_bytes.max(self.limits.max_bytes);
        let total = self.stats.queued_bytes.load(Ordering::Relaxed);
        if total.saturating_add(cost) <= budget {
            return true;
        }
        let sessions = self.stats.live_sessions().max(1);
        total.saturating_add(cost) <= budget.saturating_mul(2)
            && held.saturating_add(cost) <= budget / sessions
    }

    /// Adds `n` to what the session holds, and to the server's total.
    fn hold_bytes(&self, st: &mut State, n: usize) {
        st.held_bytes += n;
        self.stats.queued_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` from what the session holds, and from the server's total.
    fn release_bytes(&self, st: &mut State, n: usize) {
        let n = n.min(st.held_bytes);
        st.held_bytes -= n;
        self.stats.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The session's `clientId`.
    pub fn id(&self) -> &str {
        &self.info.client_id
    }

    /// Messages not queued because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The `BAYEUX_BROWSER` cookie the session was opened with.
    pub fn browser(&self) -> Option<&str> {
        self.browser.as_deref()
    }

    /// The transport that last carried the session.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub fn transport(&self) -> ConnectionType {
        self.state().transport
    }

    /// Starts counting the session in the server's live sessions (it was registered).
    pub fn count(&self) {
        let mut st = self.state();
        if !st.counted {
            st.counted = true;
            self.stats.move_session(None, Some(st.transport));
        }
    }

    /// Stops counting the session (it left the registry).
    pub fn uncount(&self) {
        let mut st = self.state();
        if st.counted {
            st.counted = false;
            self.stats.move_session(Some(st.transport), None);
        }
    }

    /// The session's span, for what is done on its behalf: `clientId`, user and
    /// transport. At `debug` level, made when needed (a session does not keep one), so
    /// that it costs nothing unless debug logging is on; events an operator needs at
    /// `info` and above carry the same fields themselves.
    #[cfg(feature = "tracing")]
    pub fn span(&self) -> tracing::Span {
        tracing::debug_span!(
            "session",
            client_id = %self.info.client_id,
            user = self.info.user.as_deref().unwrap_or(""),
            transport = %self.transport(),
        )
    }

    /// Records the patterns not yet subscribed and hands each new one to `index` while
    /// the subscription set is locked, so that a concurrent [`Session::close`] either
    /// sees them (and removes them from the index) or happens first (and nothing is
    /// added). Fails, adding nothing, when the session has ended or when the total would
    /// be over `max`.
    pub fn subscribe(
        &self,
        patterns: &[ChannelName],
        max: usize,
        mut index: impl FnMut(&ChannelName),
    ) -> Result<Vec<ChannelName>, SubscribeError> {
        let mut subs = lock(&self.subscriptions);
        if self.closed().is_some() {
            return Err(SubscribeError::Closed);
        }
        let mut new: Vec<ChannelName> = patterns
            .iter()
            .filter(|p| !subs.contains(*p))
            .cloned()
            .collect();
        new.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        new.dedup();
        if subs.len() + new.len() > max {
            return Err(SubscribeError::TooMany);
        }
        for p in &new {
            index(p);
            subs.insert(p.clone());
        }
        Ok(new)
    }

    /// Forgets a subscription, calling `index` while the set is locked; false if there
    /// was none.
    pub fn unsubscribe(&self, pattern: &ChannelName, index: impl FnOnce(&ChannelName)) -> bool {
        let mut subs = lock(&self.subscriptions);
        let removed = subs.remove(pattern);
        if removed {
            index(pattern);
        }
        removed
    }

    /// The session's patterns, each with the replay id after which it delivered every
    /// message (0 when not recorded).
    pub fn replay_positions(&self) -> Vec<(ChannelName, u64)> {
        let subs = lock(&self.subscriptions);
        let joined = lock(&self.replay_joined);
        subs.iter()
            .map(|p| (p.clone(), joined.get(p).copied().unwrap_or(0)))
            .collect()
    }

    /// Records, for each pattern, the replay id after which it delivers every message.
    pub fn replay_joined(&self, starts: impl IntoIterator<Item = (ChannelName, u64)>) {
        lock(&self.replay_joined).extend(starts);
    }

    /// Whether one of the session's patterns matches the plain channel `channel`.
    pub fn is_subscribed_to(&self, channel: &ChannelName) -> bool {
        lock(&self.subscriptions).iter().any(|p| p.matches(channel))
    }

    /// Ends the session (the first reason wins): its queue and unacknowledged messages
    /// are freed (but after an overflow, which the transport reports with what was
    /// queued), later messages are refused, the attached transport is woken, and
    /// `index` is called for every subscription while the set is locked, so that none
    /// can be added back. Returns false when the session had already ended.
    pub fn close(&self, reason: CloseReason, mut index: impl FnMut(&ChannelName)) -> bool {
        let mut subs = lock(&self.subscriptions);
        let first = self.mark_closed(reason);
        for p in subs.drain() {
            index(&p);
        }
        drop(subs);
        // Removed for good: whatever an overflow left for its transport to report, or
        // sent and never acknowledged, is freed now (nobody will take it any more).
        self.free_all();
        first
    }

    /// Frees the queue and the unacknowledged messages, counting them as lost with the
    /// session, and gives their bytes back to the server's total.
    fn free_all(&self) {
        let mut st = self.state();
        let lost = st.queue.len() + st.ack.as_ref().map_or(0, |a| a.unacked.len());
        self.stats
            .drop_messages(DropReason::SessionEnded, lost as u64);
        st.queue = VecDeque::new();
        if let Some(ack) = st.ack.as_mut() {
            ack.unacked = VecDeque::new();
        }
        let held = st.held_bytes;
        self.release_bytes(&mut st, held);
    }

    /// Marks the session ended without touching the subscriptions (which needs their
    /// lock): the overflow path runs inside the channel index's fan-out. The transport,
    /// or the expiry sweep, completes the close.
    fn mark_closed(&self, reason: CloseReason) -> bool {
        let first = {
            let mut st = self.state();
            let first = st.closed.is_none();
            if first {
                st.closed = Some(reason);
                super::stats::add(&self.stats.closed[reason.index()], 1);
            }
            // What an overflow left queued still goes out with the news that the
            // session ended; otherwise nobody will read it, so it is freed now.
            if reason != CloseReason::Overflow {
                let lost = st.queue.len() + st.ack.as_ref().map_or(0, |a| a.unacked.len());
                self.stats
                    .drop_messages(DropReason::SessionEnded, lost as u64);
                st.queue = VecDeque::new();
                st.ack = None;
                let held = st.held_bytes;
                self.release_bytes(&mut st, held);
                #[cfg(feature = "metrics")]
                {
                    st.first_queued = 0;
                }
            }
            first
        };
        self.wake.notify_waiters();
        first
    }

    /// Why the session ended, if it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.state().closed
    }

    /// Turns acknowledged delivery on (the client asked at handshake with `ext.ack`).
    pub fn enable_ack(&self) {
        self.state().ack = Some(AckState {
            next_batch: 1,
            unacked: VecDeque::new(),
        });
    }

    /// True when the last batch taken was large (`busy_threshold` messages or more):
    /// messages arrive faster than the client takes them, so a transport may wait a
    /// little before the next batch to send more per response or frame. A small batch
    /// clears it, so light traffic is never delayed.
    pub fn is_busy(&self) -> bool {
        let st = self.state();
        st.busy && st.closed.is_none()
    }

    /// Whether the client asked for acknowledged delivery.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub fn has_ack(&self) -> bool {
        self.state().ack.is_some()
    }

    /// True until a transport has attached for the first time.
    pub fn never_attached(&self) -> bool {
        self.state().generation == 0
    }

    /// True while a transport is attached (CometD's `isConnected`).
    pub fn is_attached(&self) -> bool {
        self.state().attached > 0
    }

    /// True when no transport is attached and the last one left more than `limit` ago.
    pub fn is_idle_longer_than(&self, limit: Duration, now: Instant) -> bool {
        let st = self.state();
        st.attached == 0 && now.saturating_duration_since(st.last_active) > limit
    }

    /// Attaches a transport, replacing (and waking) the one attached before, if any.
    /// The session does not expire while an attachment lives.
    pub fn attach(self: &Arc<Self>, transport: ConnectionType) -> Attachment {
        let generation = {
            let mut st = self.state();
            st.generation += 1;
            st.attached += 1;
            if st.transport != transport {
                if st.counted {
                    self.stats.move_session(Some(st.transport), Some(transport));
                }
                st.transport = transport;
            }
            st.generation
        };
        self.wake.notify_waiters();
        Attachment {
            session: self.clone(),
            generation,
        }
    }

    /// Releases the batches up to `acked` (the last batch the client received), with
    /// acknowledgements on; returns true when unacknowledged messages remain, which the
    /// next batch sends again.
    pub fn acknowledge(&self, acked: Option<u64>) -> bool {
        let mut st = self.state();
        let Some(ack) = st.ack.as_mut() else {
            return false;
        };
        let mut released = 0;
        if let Some(acked) = acked {
            while ack.unacked.front().is_some_and(|(b, _)| *b <= acked) {
                if let Some((_, m)) = ack.unacked.pop_front() {
                    released += charge(&m);
                }
            }
        }
        let remaining = !ack.unacked.is_empty();
        self.release_bytes(&mut st, released);
        remaining
    }

    /// Waits until there is something for `attachment` to do: a message queued, the
    /// attachment replaced by a newer one, or the session ended. Cancel-safe: it takes
    /// nothing from the queue.
    pub async fn ready(&self, attachment: &Attachment) {
        super::notified_until(&self.wake, || {
            let st = self.state();
            st.closed.is_some() || st.generation != attachment.generation || !st.queue.is_empty()
        })
        .await
    }

    /// Takes everything queued. With acknowledgements on, the messages become the next
    /// batch and are kept until acknowledged; the unacknowledged ones are sent first.
    pub fn take(&self) -> Outbound {
        let mut st = self.state();
        let st = &mut *st;
        let mut messages: Vec<Bytes> = st.queue.drain(..).collect();
        // Counted once per batch, not per message.
        super::stats::add(&self.stats.delivered, messages.len() as u64);
        #[cfg(feature = "metrics")]
        {
            let first = std::mem::take(&mut st.first_queued);
            if first != 0 && !messages.is_empty() {
                self.stats.flush_latency.observe_since_stamp(first);
            }
        }
        st.busy = messages.len() >= self.limits.busy_threshold.max(1);
        if st.ack.is_none() {
            // Sent and forgotten: no longer held.
            self.release_bytes(st, messages.iter().map(charge).sum::<usize>());
        }
        let ack_batch = st.ack.as_mut().map(|ack| {
            let batch = ack.next_batch;
            ack.next_batch += 1;
            ack.unacked.extend(messages.drain(..).map(|m| (batch, m)));
            messages.extend(ack.unacked.iter().map(|(_, m)| m.clone()));
            batch
        });
        Outbound {
            messages,
            closed: st.closed,
            ack_batch,
        }
    }

    /// Whether `messages`, queued now, would all fit within the queue's bounds (a replay
    /// checks its history before queueing it, so that none of it is dropped).
    pub fn fits(&self, messages: &[Bytes]) -> bool {
        let st = self.state();
        let held = st.queue.len() + st.ack.as_ref().map_or(0, |a| a.unacked.len());
        let bytes: usize = messages.iter().map(charge).sum();
        self.in_budget(st.held_bytes, bytes)
            && ((held == 0 && messages.len() <= 1)
                || (held + messages.len() <= self.limits.max_messages
                    && st.held_bytes + bytes <= self.limits.max_bytes))
    }

    /// Queues an already-encoded message for the client. Never blocks: it runs inside
    /// the fan-out. Unacknowledged messages count against the bounds like queued ones.
    ///
    /// A message that does not fit is handled by the overflow policy; a session with
    /// acknowledgements on is closed instead, whatever the policy, since it was promised
    /// every message.
    pub fn enqueue(&self, message: &Bytes) -> Enqueued {
        self.enqueue_at(message, None)
    }

    /// [`Session::enqueue`], with when the fan-out of `message` began (one instant for
    /// all its recipients), which starts the publish-to-flush clock of a batch; without
    /// it, a message queued into an empty queue reads the clock itself.
    pub fn enqueue_at(&self, message: &Bytes, published: Option<std::time::Instant>) -> Enqueued {
        #[cfg(not(feature = "metrics"))]
        let _ = published;
        let cost = charge(message);
        let mut st = self.state();
        if st.closed.is_some() {
            return Enqueued::Closed;
        }
        let mut dropped_oldest = 0u64;
        loop {
            let held = st.queue.len() + st.ack.as_ref().map_or(0, |a| a.unacked.len());
            let fits = held == 0
                || (held < self.limits.max_messages
                    && st.held_bytes + cost <= self.limits.max_bytes);
            // The budget of all queues together: past it, only a session that holds
            // less than its share may queue more; one over its share overflows.
            let in_budget = self.in_budget(st.held_bytes, cost);
            if fits && in_budget {
                break;
            }
            if !in_budget {
                self.stats
                    .queued_bytes_refusals
                    .fetch_add(1, Ordering::Relaxed);
            }
            let first_overflow = !std::mem::replace(&mut st.overflowed, true);
            let close = st.ack.is_some() || self.limits.overflow == OverflowPolicy::CloseSession;
            if !close
                && self.limits.overflow == OverflowPolicy::DropOldest
                && let Some(old) = st.queue.pop_front()
            {
                self.release_bytes(&mut st, charge(&old));
                dropped_oldest += 1;
                if first_overflow {
                    self.report_overflow("drop-oldest", st.transport);
                }
                continue;
            }
            let transport = st.transport;
            drop(st);
            self.count_dropped(DropReason::DropOldest, dropped_oldest);
            let reason = if close {
                DropReason::CloseSession
            } else if self.limits.overflow == OverflowPolicy::DropOldest {
                DropReason::DropOldest
            } else {
                DropReason::DropNewest
            };
            self.count_dropped(reason, 1);
            if close {
                if self.mark_closed(CloseReason::Overflow) {
                    self.stats.overflow_closes.fetch_add(1, Ordering::Relaxed);
                }
                if first_overflow {
                    let action = if self.limits.overflow == OverflowPolicy::CloseSession {
                        "close-session"
                    } else {
                        "close-session (acknowledged delivery)"
                    };
                    self.report_overflow(action, transport);
                }
            } else if first_overflow {
                self.report_overflow("drop-newest", transport);
            }
            return Enqueued::Dropped;
        }
        let was_empty = st.queue.is_empty();
        #[cfg(feature = "metrics")]
        if was_empty {
            let at = published.unwrap_or_else(std::time::Instant::now);
            st.first_queued = self.stats.flush_latency.stamp(at);
        }
        st.queue.push_back(message.clone());
        self.hold_bytes(&mut st, cost);
        drop(st);
        if dropped_oldest > 0 {
            self.count_dropped(DropReason::DropOldest, dropped_oldest);
        }
        if was_empty {
            self.wake.notify_waiters();
        }
        Enqueued::Queued
    }

    fn count_dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            self.stats.drop_messages(reason, n);
        }
    }

    /// Says once per session that its queue overflowed, and what was done.
    fn report_overflow(&self, action: &str, transport: ConnectionType) {
        #[cfg(feature = "tracing")]
        tracing::warn!(
            client_id = %self.info.client_id,
            user = self.info.user.as_deref().unwrap_or(""),
            transport = %transport,
            max_queue = self.limits.max_messages,
            max_queue_bytes = self.limits.max_bytes,
            action,
            "session queue overflow"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = (action, transport);
    }
}

/// A session dropped while it still holds bytes (never removed through
/// [`Session::close`]) gives them back to the server's total.
impl Drop for Session {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let held = std::mem::take(&mut st.held_bytes);
        self.stats.queued_bytes.fetch_sub(held, Ordering::Relaxed);
    }
}

/// Why [`Session::subscribe`] added nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// The session has ended.
    Closed,
    /// Over `maxSubscriptions`.
    TooMany,
}

/// A transport's hold on a session; dropping it detaches (and starts the expiry clock
/// when it was the last one).
pub(crate) struct Attachment {
    session: SessionRef,
    generation: u64,
}

#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
impl Attachment {
    /// False once a newer attachment replaced this one.
    pub fn is_current(&self) -> bool {
        self.session.state().generation == self.generation
    }

    /// The session attached to.
    pub fn session(&self) -> &SessionRef {
        &self.session
    }

    /// Waits until the session has something for this attachment (see
    /// [`Session::ready`]).
    pub async fn ready(&self) {
        self.session.ready(self).await
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut st = self.session.state();
        st.attached -= 1;
        st.last_active = Instant::now();
    }
}

impl Recipient for Session {
    fn recipient_id(&self) -> RecipientId {
        self.recipient_id
    }

    fn deliver(&self, message: &Bytes) -> bool {
        self.enqueue(message) == Enqueued::Queued
    }

    fn deliver_at(&self, message: &Bytes, published: std::time::Instant) -> bool {
        self.enqueue_at(message, Some(published)) == Enqueued::Queued
    }
}

/// The registry's handle type.
pub(crate) type SessionRef = Arc<Session>;

#[cfg(test)]
mod tests {
    use super::*;

    fn session(max_queue: usize, overflow: OverflowPolicy) -> Arc<Session> {
        with_limits(QueueLimits {
            max_messages: max_queue,
            max_bytes: usize::MAX,
            max_total_bytes: usize::MAX,
            overflow,
            busy_threshold: 4,
        })
    }

    fn with_limits(limits: QueueLimits) -> Arc<Session> {
        let info = SessionInfo {
            client_id: new_client_id(),
            user: None,
        };
        Arc::new(Session::new(
            info,
            1,
            limits,
            Arc::default(),
            None,
            ConnectionType::LongPolling,
        ))
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn c(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[test]
    fn client_ids_are_long_and_distinct() {
        let a = new_client_id();
        let b = new_client_id();
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn take_returns_what_was_queued_in_order() {
        let s = session(8, OverflowPolicy::DropNewest);
        s.enqueue(&b("1"));
        s.enqueue(&b("2"));
        assert_eq!(s.take().messages, vec![b("1"), b("2")]);
        assert!(s.take().messages.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ready_wakes_on_a_message_a_newer_attachment_or_the_end() {
        let s = session(8, OverflowPolicy::DropNewest);
        let first = s.attach(ConnectionType::LongPolling);
        // Nothing yet: not ready.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), s.ready(&first))
                .await
                .is_err()
        );
        s.enqueue(&b("x"));
        s.ready(&first).await;
        s.take();
        let second = s.attach(ConnectionType::LongPolling);
        s.ready(&first).await;
        assert!(!first.is_current() && second.is_current());
        drop(first);
        s.close(CloseReason::Disconnected, |_| {});
        s.ready(&second).await;
        assert_eq!(s.take().closed, Some(CloseReason::Disconnected));
    }

    #[test]
    fn overflow_drop_newest_keeps_the_oldest() {
        let s = session(2, OverflowPolicy::DropNewest);
        let results: Vec<Enqueued> = ["1", "2", "3"].iter().map(|m| s.enqueue(&b(m))).collect();
        assert_eq!(
            results,
            vec![Enqueued::Queued, Enqueued::Queued, Enqueued::Dropped]
        );
        assert_eq!(s.dropped(), 1);
        let out = s.take();
        assert_eq!(out.messages, vec![b("1"), b("2")]);
        assert!(out.closed.is_none());
    }

    #[test]
    fn overflow_close_session_ends_it_and_hands_over_what_was_queued() {
        let s = session(1, OverflowPolicy::CloseSession);
        s.enqueue(&b("1"));
        assert_eq!(s.enqueue(&b("2")), Enqueued::Dropped);
        assert_eq!(s.closed(), Some(CloseReason::Overflow));
        assert_eq!(s.enqueue(&b("3")), Enqueued::Closed);
        let out = s.take();
        assert_eq!(out.messages, vec![b("1")]);
        assert_eq!(out.closed, Some(CloseReason::Overflow));
    }

    #[test]
    fn overflow_drop_oldest_keeps_the_newest() {
        let s = session(2, OverflowPolicy::DropOldest);
        for m in ["1", "2", "3", "4"] {
            assert_eq!(s.enqueue(&b(m)), Enqueued::Queued);
        }
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.stats.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(s.take().messages, vec![b("3"), b("4")]);
        assert!(s.closed().is_none());
    }

    #[test]
    fn the_byte_bound_counts_each_message_and_its_slot() {
        let s = with_limits(QueueLimits {
            max_messages: 1_000,
            max_bytes: 2 * (10 + SLOT_COST),
            max_total_bytes: usize::MAX,
            overflow: OverflowPolicy::DropNewest,
            busy_threshold: 4,
        });
        let ten = Bytes::from(vec![b'x'; 10]);
        assert_eq!(s.enqueue(&ten), Enqueued::Queued);
        assert_eq!(s.enqueue(&ten), Enqueued::Queued);
        assert_eq!(s.enqueue(&Bytes::from_static(b"1")), Enqueued::Dropped);
        s.take();
        // Sent without acknowledgements: no longer held.
        assert_eq!(s.enqueue(&ten), Enqueued::Queued);
        // A message larger than the bound still goes into an empty queue.
        s.take();
        assert_eq!(s.enqueue(&Bytes::from(vec![b'y'; 4096])), Enqueued::Queued);
    }

    #[test]
    fn with_acknowledgements_an_overflow_closes_the_session_whatever_the_policy() {
        for policy in [
            OverflowPolicy::DropNewest,
            OverflowPolicy::DropOldest,
            OverflowPolicy::CloseSession,
        ] {
            let s = session(2, policy);
            s.enable_ack();
            s.enqueue(&b("1"));
            s.take(); // batch 1, unacknowledged: still held
            s.enqueue(&b("2"));
            assert_eq!(s.enqueue(&b("3")), Enqueued::Dropped, "{policy:?}");
            assert_eq!(s.closed(), Some(CloseReason::Overflow), "{policy:?}");
            assert_eq!(s.stats.overflow_closes.load(Ordering::Relaxed), 1);
            assert_eq!(s.dropped(), 1);
            // What was held goes out with the news: nothing is lost silently.
            let out = s.take();
            assert_eq!(out.messages, vec![b("1"), b("2")]);
            assert_eq!(out.closed, Some(CloseReason::Overflow));
            // Still held (unacknowledged) until the session is removed; then every
            // byte goes back to the server's total.
            assert!(s.stats.queued_bytes.load(Ordering::Relaxed) > 0);
            s.close(CloseReason::Overflow, |_| {});
            assert_eq!(
                s.stats.queued_bytes.load(Ordering::Relaxed),
                0,
                "{policy:?}"
            );
        }
    }

    #[test]
    fn the_servers_total_follows_every_session_and_returns_to_zero() {
        let stats = Arc::new(Stats::default());
        let limits = QueueLimits {
            max_messages: 3,
            max_bytes: usize::MAX,
            max_total_bytes: usize::MAX,
            overflow: OverflowPolicy::DropOldest,
            busy_threshold: 4,
        };
        let make = || {
            let info = SessionInfo {
                client_id: new_client_id(),
                user: None,
            };
            Arc::new(Session::new(
                info,
                1,
                limits,
                stats.clone(),
                None,
                ConnectionType::LongPolling,
            ))
        };
        let (a, b_) = (make(), make());
        for i in 0..5 {
            a.enqueue(&b(if i % 2 == 0 { "even" } else { "odd" }));
            b_.enqueue(&b("x"));
        }
        let total = stats.queued_bytes.load(Ordering::Relaxed);
        // a keeps its newest three (even, odd, even), b its first three.
        assert_eq!(
            total,
            2 * charge(&b("even")) + charge(&b("odd")) + 3 * charge(&b("x"))
        );
        a.take();
        b_.close(CloseReason::Expired, |_| {});
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
        // A session dropped while holding bytes gives them back too.
        let c = make();
        c.enqueue(&b("left behind"));
        drop(c);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn acknowledged_batches_release_their_bytes() {
        let s = with_limits(QueueLimits {
            max_messages: 1_000,
            max_bytes: 2 * (1 + SLOT_COST),
            max_total_bytes: usize::MAX,
            overflow: OverflowPolicy::DropNewest,
            busy_threshold: 4,
        });
        s.enable_ack();
        s.enqueue(&b("1"));
        s.enqueue(&b("2"));
        assert_eq!(s.take().ack_batch, Some(1));
        s.acknowledge(Some(1));
        assert_eq!(s.enqueue(&b("3")), Enqueued::Queued);
        assert_eq!(s.enqueue(&b("4")), Enqueued::Queued);
        assert!(s.closed().is_none());
    }

    #[test]
    fn unacknowledged_messages_are_sent_again_until_acknowledged() {
        let s = session(8, OverflowPolicy::DropNewest);
        s.enable_ack();
        s.enqueue(&b("1"));
        let first = s.take();
        assert_eq!((first.messages.len(), first.ack_batch), (1, Some(1)));
        // The batch was lost: the client still acknowledges batch 0.
        s.enqueue(&b("2"));
        assert!(s.acknowledge(Some(0)));
        let again = s.take();
        assert_eq!(again.messages, vec![b("1"), b("2")]);
        assert_eq!(again.ack_batch, Some(2));
        // Acknowledging batch 2 releases both; nothing is sent twice after that.
        s.enqueue(&b("3"));
        assert!(!s.acknowledge(Some(2)));
        assert_eq!(s.take().messages, vec![b("3")]);
    }

    #[test]
    fn a_closed_session_refuses_messages_and_subscriptions() {
        let s = session(8, OverflowPolicy::DropNewest);
        s.enable_ack();
        s.enqueue(&b("1"));
        s.take();
        s.enqueue(&b("2"));
        let mut removed = Vec::new();
        s.subscribe(&[c("/a")], 10, |_| {}).unwrap();
        assert!(s.close(CloseReason::Disconnected, |p| removed.push(p.clone())));
        assert_eq!(removed, vec![c("/a")]);
        // Queue and ack store are freed; nothing new is accepted.
        assert!(!s.acknowledge(None));
        assert_eq!(s.enqueue(&b("3")), Enqueued::Closed);
        assert!(s.take().messages.is_empty());
        let mut indexed = false;
        assert_eq!(
            s.subscribe(&[c("/b")], 10, |_| indexed = true),
            Err(SubscribeError::Closed)
        );
        assert!(!indexed);
        assert!(!s.close(CloseReason::Expired, |_| {}));
        assert_eq!(s.closed(), Some(CloseReason::Disconnected));
    }

    #[test]
    fn a_large_batch_marks_the_session_busy_and_a_small_one_clears_it() {
        let s = session(100, OverflowPolicy::DropNewest);
        assert!(!s.is_busy());
        for _ in 0..4 {
            s.enqueue(&b("m"));
        }
        s.take();
        assert!(s.is_busy());
        s.enqueue(&b("m"));
        s.take();
        assert!(!s.is_busy());
    }

    #[test]
    fn attachments_hold_off_expiry() {
        let s = session(8, OverflowPolicy::DropNewest);
        let limit = Duration::from_millis(10);
        let later = Instant::now() + Duration::from_secs(1);
        assert!(s.never_attached());
        let a = s.attach(ConnectionType::LongPolling);
        assert!(s.is_attached() && !s.is_idle_longer_than(limit, later));
        drop(a);
        assert!(!s.is_attached() && !s.never_attached());
        assert!(s.is_idle_longer_than(limit, Instant::now() + Duration::from_secs(1)));
    }
}

//! One client session: its id, subscriptions, bounded outbound queue, pending
//! `/meta/connect`, and expiry bookkeeping.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::broker::{Recipient, RecipientId};
use super::config::OverflowPolicy;
use super::policy::SessionInfo;
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

/// Why a session ended; decides what its pending connect is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent `/meta/disconnect`.
    Disconnected,
    /// No connect for longer than `maxInterval`.
    Expired,
    /// Its queue overflowed under [`OverflowPolicy::CloseSession`].
    Overflow,
    /// The server is shutting down.
    Shutdown,
}

/// CometD's acknowledged-messages extension, per session: what a connect response sent
/// stays here, tagged with the response's batch number, until the client's next connect
/// acknowledges that batch; a response that never arrived is sent again.
struct AckState {
    next_batch: u64,
    unacked: VecDeque<(u64, Bytes)>,
}

struct State {
    subscriptions: HashSet<ChannelName>,
    ack: Option<AckState>,
    closed: Option<CloseReason>,
    /// Connects in progress (normally 0 or 1; briefly 2 while one replaces another).
    connects: u32,
    /// Incremented by each connect; a pending connect whose number is no longer the
    /// latest returns at once (a newer connect replaced it). Zero until the first one.
    connect_generation: u64,
    /// When the last connect ended, or the handshake if none has.
    last_active: Instant,
}

/// What a `/meta/connect` took from the queue.
pub(crate) struct Drained {
    pub messages: Vec<Bytes>,
    /// Set when the session ended while (or before) the connect waited.
    pub closed: Option<CloseReason>,
    /// With acknowledgements on: the batch number of this response (`ext.ack`).
    pub ack_batch: Option<u64>,
}

/// A client session. Shared between the session registry, the broker (as a
/// [`Recipient`]) and the request handlers.
pub(crate) struct Session {
    pub info: SessionInfo,
    recipient_id: RecipientId,
    overflow: OverflowPolicy,
    max_queue: usize,
    /// The `BAYEUX_BROWSER` cookie of the handshake, if any.
    browser: Option<String>,
    tx: mpsc::Sender<Bytes>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    state: Mutex<State>,
    /// Wakes the pending connect: a newer connect, or the session ending.
    wake: Notify,
    dropped: AtomicU64,
}

impl Session {
    pub fn new(
        info: SessionInfo,
        recipient_id: RecipientId,
        max_queue: usize,
        overflow: OverflowPolicy,
        browser: Option<String>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(max_queue.max(1));
        Session {
            info,
            recipient_id,
            overflow,
            max_queue: max_queue.max(1),
            browser,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            state: Mutex::new(State {
                subscriptions: HashSet::new(),
                ack: None,
                closed: None,
                connects: 0,
                connect_generation: 0,
                last_active: Instant::now(),
            }),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Records the patterns not yet subscribed, unless that would make more than `max`;
    /// returns the ones added, or `None` (and adds nothing) over the limit.
    pub fn add_subscriptions(
        &self,
        patterns: &[ChannelName],
        max: usize,
    ) -> Option<Vec<ChannelName>> {
        let mut st = self.state();
        let mut new: Vec<ChannelName> = patterns
            .iter()
            .filter(|p| !st.subscriptions.contains(*p))
            .cloned()
            .collect();
        new.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        new.dedup();
        if st.subscriptions.len() + new.len() > max {
            return None;
        }
        st.subscriptions.extend(new.iter().cloned());
        Some(new)
    }

    /// Forgets a subscription; false if there was none.
    pub fn remove_subscription(&self, pattern: &ChannelName) -> bool {
        self.state().subscriptions.remove(pattern)
    }

    /// Whether one of the session's patterns matches the plain channel `channel`.
    pub fn is_subscribed_to(&self, channel: &ChannelName) -> bool {
        self.state()
            .subscriptions
            .iter()
            .any(|p| p.matches(channel))
    }

    /// Ends the session (first reason wins), wakes its pending connect, and hands back
    /// its subscriptions so the caller can remove them from the broker.
    pub fn close(&self, reason: CloseReason) -> Vec<ChannelName> {
        let subs = {
            let mut st = self.state();
            if st.closed.is_none() {
                st.closed = Some(reason);
            }
            st.subscriptions.drain().collect()
        };
        self.wake.notify_waiters();
        subs
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

    /// True until the session's first `/meta/connect` has started.
    pub fn never_connected(&self) -> bool {
        self.state().connect_generation == 0
    }

    /// True while a `/meta/connect` is in progress.
    pub fn has_pending_connect(&self) -> bool {
        self.state().connects > 0
    }

    /// True when no connect is in progress and the last one ended more than `limit` ago.
    pub fn is_idle_longer_than(&self, limit: Duration, now: Instant) -> bool {
        let st = self.state();
        st.connects == 0 && now.saturating_duration_since(st.last_active) > limit
    }

    /// The long poll: waits until a message is queued, `timeout` passes, a newer connect
    /// replaces this one, or the session ends; then takes everything queued.
    ///
    /// Cancel-safe: if the HTTP request goes away, the future is dropped and the
    /// bookkeeping is restored by a guard. Messages are only taken from the queue at the
    /// moment the future completes.
    ///
    /// With acknowledgements on, `client_ack` (the batch the client last received)
    /// releases the messages of that batch and the ones before; anything still
    /// unacknowledged is sent again at once, followed by whatever is new.
    pub async fn connect(&self, mut timeout: Duration, client_ack: Option<u64>) -> Drained {
        let generation = {
            let mut st = self.state();
            st.connect_generation += 1;
            st.connects += 1;
            if let (Some(ack), Some(acked)) = (st.ack.as_mut(), client_ack) {
                while ack.unacked.front().is_some_and(|(b, _)| *b <= acked) {
                    ack.unacked.pop_front();
                }
            }
            if st.ack.as_ref().is_some_and(|a| !a.unacked.is_empty()) {
                timeout = Duration::ZERO;
            }
            st.connect_generation
        };
        let _guard = ConnectGuard(self);
        // Release an older pending connect, which holds the queue's receiver.
        self.wake.notify_waiters();
        let mut rx = self.rx.lock().await;
        let mut messages = Vec::new();
        drain_into(&mut rx, &mut messages);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while messages.is_empty() {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state();
                if st.closed.is_some() || st.connect_generation != generation {
                    break;
                }
            }
            tokio::select! {
                biased;
                m = rx.recv() => {
                    if let Some(m) = m {
                        messages.push(m);
                        drain_into(&mut rx, &mut messages);
                    }
                    break;
                }
                _ = &mut notified => {}
                _ = &mut deadline => break,
            }
        }
        let mut st = self.state();
        let ack_batch = st.ack.as_mut().map(|ack| {
            let batch = ack.next_batch;
            ack.next_batch += 1;
            for m in messages.drain(..) {
                if ack.unacked.len() >= self.max_queue {
                    // Unacknowledged messages count against maxQueue like queued ones.
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                ack.unacked.push_back((batch, m));
            }
            messages.extend(ack.unacked.iter().map(|(_, m)| m.clone()));
            batch
        });
        Drained {
            messages,
            closed: st.closed,
            ack_batch,
        }
    }
}

fn drain_into(rx: &mut mpsc::Receiver<Bytes>, out: &mut Vec<Bytes>) {
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
}

/// Restores the connect bookkeeping however the connect ends (including cancellation).
struct ConnectGuard<'a>(&'a Session);

impl Drop for ConnectGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.connects -= 1;
        st.last_active = Instant::now();
    }
}

impl Recipient for Session {
    fn recipient_id(&self) -> RecipientId {
        self.recipient_id
    }

    fn deliver(&self, message: &Bytes) {
        match self.tx.try_send(message.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if self.overflow == OverflowPolicy::CloseSession {
                    // Mark only: the broker's lock is held here. The pending connect, or
                    // the expiry sweep, removes the session from the broker.
                    let mut st = self.state();
                    if st.closed.is_none() {
                        st.closed = Some(CloseReason::Overflow);
                    }
                    drop(st);
                    self.wake.notify_waiters();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The registry's handle type.
pub(crate) type SessionRef = Arc<Session>;

#[cfg(test)]
mod tests {
    use super::*;

    fn session(max_queue: usize, overflow: OverflowPolicy) -> Arc<Session> {
        let info = SessionInfo {
            client_id: new_client_id(),
            user: None,
        };
        Arc::new(Session::new(info, 1, max_queue, overflow, None))
    }

    #[test]
    fn client_ids_are_long_and_distinct() {
        let a = new_client_id();
        let b = new_client_id();
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test(start_paused = true)]
    async fn connect_returns_queued_messages_at_once() {
        let s = session(8, OverflowPolicy::DropNewest);
        s.deliver(&Bytes::from_static(b"1"));
        s.deliver(&Bytes::from_static(b"2"));
        let d = s.connect(Duration::from_secs(30), None).await;
        assert_eq!(
            d.messages,
            vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connect_times_out_empty() {
        let s = session(8, OverflowPolicy::DropNewest);
        let d = s.connect(Duration::from_millis(200), None).await;
        assert!(d.messages.is_empty());
        assert!(d.closed.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_connect_releases_the_first() {
        let s = session(8, OverflowPolicy::DropNewest);
        let start = tokio::time::Instant::now();
        let first = tokio::spawn({
            let s = s.clone();
            async move { s.connect(Duration::from_secs(30), None).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let s = s.clone();
            async move { s.connect(Duration::from_secs(30), None).await }
        });
        let d = first.await.unwrap();
        assert!(d.messages.is_empty());
        // Released by the second connect, not by its own 30 s timeout (virtual time).
        assert!(start.elapsed() < Duration::from_secs(1));
        s.deliver(&Bytes::from_static(b"x"));
        assert_eq!(second.await.unwrap().messages.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_drop_newest_keeps_the_oldest() {
        let s = session(2, OverflowPolicy::DropNewest);
        for m in [&b"1"[..], b"2", b"3"] {
            s.deliver(&Bytes::copy_from_slice(m));
        }
        assert_eq!(s.dropped(), 1);
        let d = s.connect(Duration::ZERO, None).await;
        assert_eq!(
            d.messages,
            vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
        assert!(d.closed.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_messages_are_sent_again_until_acknowledged() {
        let s = session(8, OverflowPolicy::DropNewest);
        s.enable_ack();
        s.deliver(&Bytes::from_static(b"1"));
        let first = s.connect(Duration::ZERO, None).await;
        assert_eq!((first.messages.len(), first.ack_batch), (1, Some(1)));
        // The response was lost: the client still acknowledges batch 0.
        s.deliver(&Bytes::from_static(b"2"));
        let again = s.connect(Duration::from_secs(30), Some(0)).await;
        assert_eq!(
            again.messages,
            vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
        assert_eq!(again.ack_batch, Some(2));
        // Acknowledging batch 2 releases both; nothing is sent twice after that.
        s.deliver(&Bytes::from_static(b"3"));
        let next = s.connect(Duration::ZERO, Some(2)).await;
        assert_eq!(next.messages, vec![Bytes::from_static(b"3")]);
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_messages_are_answered_without_waiting() {
        let s = session(8, OverflowPolicy::DropNewest);
        s.enable_ack();
        s.deliver(&Bytes::from_static(b"1"));
        s.connect(Duration::ZERO, None).await;
        let start = tokio::time::Instant::now();
        let again = s.connect(Duration::from_secs(30), Some(0)).await;
        assert_eq!(again.messages.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_close_session_ends_it() {
        let s = session(1, OverflowPolicy::CloseSession);
        s.deliver(&Bytes::from_static(b"1"));
        s.deliver(&Bytes::from_static(b"2"));
        assert_eq!(s.closed(), Some(CloseReason::Overflow));
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_the_pending_connect() {
        let s = session(8, OverflowPolicy::DropNewest);
        let pending = tokio::spawn({
            let s = s.clone();
            async move { s.connect(Duration::from_secs(30), None).await }
        });
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        s.close(CloseReason::Disconnected);
        assert_eq!(
            pending.await.unwrap().closed,
            Some(CloseReason::Disconnected)
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}

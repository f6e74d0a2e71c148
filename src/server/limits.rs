//! Budgets that keep one client from hurting the others: connections in total and per
//! client address, WebSockets that have not handshaken, sessions per address, failed
//! handshakes per address, and the bytes of all session queues together.
//!
//! Everything here is bookkeeping under short locks (no I/O, no await while held). A
//! client is known by its [`ClientKey`]: its IPv4 address, or the /64 network of its
//! IPv6 address (one host is given a whole /64, so counting single IPv6 addresses would
//! let it take as many as it likes). Each refusal is counted for the metrics and logged
//! at most once per client and kind in `refusal_log_interval`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::ServerConfig;

/// The address of the client a request came from, as the server's own listener saw it
/// (the TCP peer). [`Server::listen`](super::Server::listen) and
/// [`serve_with_config`](super::serve_with_config) put it in each request's extensions;
/// an application that serves [`Server::handle`](super::Server::handle) from its own
/// stack inserts it itself (axum's `ConnectInfo` has it), or the per-address limits of
/// those requests do not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// What the per-address budgets count a client by: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of `ip`: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => ClientKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    ClientKey(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The address of an `X-Forwarded-For` entry: `192.0.2.7`, `2001:db8::1`, or with a
/// port as some proxies write it (`192.0.2.7:4711`, `[2001:db8::1]:4711`).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The budgets that refuse, as `bayeux_limit_refusals_total` labels them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections`: the listener holds as many connections as it may.
    Connections,
    /// `max_connections_per_address`.
    ConnectionsPerAddress,
    /// `max_pending_websockets_per_address`.
    PendingWebSockets,
    /// `websocket_handshake_timeout`: a socket closed for not handshaking in time.
    WebSocketHandshakeTimeout,
    /// `max_sessions_per_address`.
    SessionsPerAddress,
    /// `max_auth_failures_per_address`: refused before the policy ran.
    AuthFailures,
    /// A second `/meta/handshake` in one request.
    HandshakesPerRequest,
    /// `max_queued_bytes`: a message not queued because all queues hold the budget.
    QueuedBytes,
    /// `max_body_bytes`: request bodies being read hold the budget.
    BodyBytes,
    /// `max_body_bytes_per_address`.
    BodyBytesPerAddress,
}

impl Refusal {
    /// Every kind, in the order of [`Limits::refused`].
    pub const ALL: [Refusal; 10] = [
        Refusal::Connections,
        Refusal::ConnectionsPerAddress,
        Refusal::PendingWebSockets,
        Refusal::WebSocketHandshakeTimeout,
        Refusal::SessionsPerAddress,
        Refusal::AuthFailures,
        Refusal::HandshakesPerRequest,
        Refusal::QueuedBytes,
        Refusal::BodyBytes,
        Refusal::BodyBytesPerAddress,
    ];

    /// The metric label, which is also the setting's name in `bayeux serve`.
    #[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "max-connections",
            Refusal::ConnectionsPerAddress => "max-connections-per-address",
            Refusal::PendingWebSockets => "max-pending-websockets-per-address",
            Refusal::WebSocketHandshakeTimeout => "websocket-handshake-timeout",
            Refusal::SessionsPerAddress => "max-sessions-per-address",
            Refusal::AuthFailures => "max-auth-failures-per-address",
            Refusal::HandshakesPerRequest => "handshakes-per-request",
            Refusal::QueuedBytes => "max-queued-bytes",
            Refusal::BodyBytes => "max-body-bytes",
            Refusal::BodyBytesPerAddress => "max-body-bytes-per-address",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What one client holds right now.
#[derive(Default, Debug)]
struct Usage {
    connections: usize,
    pending_websockets: usize,
    sessions: usize,
    /// Bytes of request bodies being read.
    body_bytes: usize,
}

impl Usage {
    fn is_empty(&self) -> bool {
        self.connections == 0
            && self.pending_websockets == 0
            && self.sessions == 0
            && self.body_bytes == 0
    }
}

/// The times of the last failures of one key, the newest last, at most `max` of them.
#[derive(Debug, Default)]
pub(crate) struct FailureWindow {
    times: VecDeque<Instant>,
}

impl FailureWindow {
    /// Records a failure at `now`, keeping the newest `max`.
    pub fn record(&mut self, max: u32, now: Instant) {
        self.times.push_back(now);
        while self.times.len() > (max as usize).max(1) {
            self.times.pop_front();
        }
    }

    /// How many of the recorded failures fall within `window` before `now`.
    pub fn recent(&self, window: Duration, now: Instant) -> usize {
        self.times
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) < window)
            .count()
    }

    /// The newest failure, if any.
    pub fn newest(&self) -> Option<Instant> {
        self.times.back().copied()
    }

    /// Whether the newest failure is older than `window`: the entry can go.
    pub fn is_stale(&self, window: Duration, now: Instant) -> bool {
        self.times
            .back()
            .is_none_or(|t| now.saturating_duration_since(*t) >= window)
    }
}

/// Keeps the `keep` entries of `map` whose `time` is the latest, dropping the others:
/// when a table is full of fresh entries, the oldest go first (an attacker with many
/// addresses cannot flush its own recent failures out), in linear time.
pub(crate) fn keep_newest<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    keep: usize,
    time: impl Fn(&V) -> Option<Instant>,
) {
    if map.len() <= keep || keep == 0 {
        if keep == 0 {
            map.clear();
        }
        return;
    }
    let mut times: Vec<Option<Instant>> = map.values().map(&time).collect();
    let cut = times.len() - keep;
    let (_, threshold, _) = times.select_nth_unstable(cut);
    let threshold = *threshold;
    map.retain(|_, v| time(v) >= threshold);
}

/// The most clients the failure and refusal tables track; past it, the oldest entries
/// are dropped first (an attacker with many addresses cannot grow them without bound).
const MAX_TRACKED: usize = 65_536;

/// The server's budgets and their counters.
pub(crate) struct Limits {
    max_connections: usize,
    max_connections_per_address: usize,
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    max_pending_websockets: usize,
    max_sessions_per_address: usize,
    max_auth_failures: u32,
    auth_window: Duration,
    log_interval: Duration,
    trusted_proxies: Vec<IpAddr>,
    max_body_bytes: usize,
    max_body_bytes_per_address: usize,
    /// Open connections on the server's own listener.
    connections: AtomicUsize,
    /// Bytes of request bodies being read, over all clients.
    body_bytes: AtomicUsize,
    usage: Mutex<HashMap<ClientKey, Usage>>,
    failures: Mutex<HashMap<ClientKey, AuthRecord>>,
    /// When each (kind, client) refusal was last logged, and how many since.
    logged: Mutex<HashMap<(usize, ClientKey), (Instant, u64)>>,
    refused: [AtomicU64; 10],
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Limits {
    /// The budgets of `config`.
    pub fn new(config: &ServerConfig) -> Self {
        Limits {
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
            max_pending_websockets: config.max_pending_websockets_per_address,
            max_sessions_per_address: config.max_sessions_per_address,
            max_auth_failures: config.max_auth_failures_per_address,
            auth_window: config.auth_failure_window,
            log_interval: config.refusal_log_interval,
            trusted_proxies: config.trusted_proxies.clone(),
            // A single request of `max_message_size` always fits the budgets.
            max_body_bytes: config.max_body_bytes.max(config.max_message_size),
            max_body_bytes_per_address: config
                .max_body_bytes_per_address
                .max(config.max_message_size),
            connections: AtomicUsize::new(0),
            body_bytes: AtomicUsize::new(0),
            usage: Mutex::default(),
            failures: Mutex::default(),
            logged: Mutex::default(),
            refused: Default::default(),
        }
    }

    /// Whether `ip` is a trusted reverse proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.contains(&ip)
    }

    /// The client a request is from: the TCP peer, or, when the peer is a trusted
    /// proxy, the rightmost `X-Forwarded-For` address that is not one.
    pub fn client_of(&self, peer: Option<IpAddr>, headers: &http::HeaderMap) -> Option<ClientKey> {
        let peer = peer?;
        if !self.is_trusted_proxy(peer) {
            return Some(ClientKey::of(peer));
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // From the right: skip the trusted proxies; the first other entry is the client.
        // One that cannot be read (a proxy that wrote something odd) ends the walk at
        // the last trusted hop, which cannot be spoofed.
        let mut client = peer;
        for entry in forwarded.into_iter().rev() {
            match forwarded_ip(entry) {
                Some(ip) if self.is_trusted_proxy(ip) => client = ip,
                Some(ip) => return Some(ClientKey::of(ip)),
                None => break,
            }
        }
        Some(ClientKey::of(client))
    }

    /// Counts a refusal, and logs it unless one of its kind for this client was logged
    /// within `refusal_log_interval` (the line then says how many were refused since).
    pub fn refuse(&self, kind: Refusal, client: Option<ClientKey>, detail: &str) {
        self.refused[kind.index()].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        {
            // A request whose client is not known (an embedder's own stack) is
            // logged under 0.0.0.0, rate-limited like the others.
            let client =
                client.unwrap_or(ClientKey::of(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)));
            let now = Instant::now();
            let mut logged = lock(&self.logged);
            let entry = logged.entry((kind.index(), client)).or_insert((now, 0));
            let due = entry.1 == 0 || now.saturating_duration_since(entry.0) >= self.log_interval;
            if !due {
                entry.1 += 1;
                return;
            }
            let since = std::mem::replace(entry, (now, 1)).1;
            let full = logged.len() > MAX_TRACKED;
            drop(logged);
            if full {
                self.prune_logged(now, true);
            }
            tracing::warn!(
                limit = kind.label(),
                client = %client,
                detail,
                refused_since_last_line = since.saturating_sub(1),
                interval_s = self.log_interval.as_secs(),
                "refused (logged once per client and limit per interval)"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (client, detail);
    }

    /// Refusals so far, by kind ([`Refusal::ALL`] order).
    pub fn refusals(&self) -> [u64; 10] {
        std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Connections open on the server's own listener.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// WebSockets open that have not handshaken, over all clients.
    pub fn pending_websockets(&self) -> usize {
        lock(&self.usage)
            .values()
            .map(|u| u.pending_websockets)
            .sum()
    }

    /// Clients the per-address tables hold right now (in use, or with recent failures).
    pub fn tracked_clients(&self) -> usize {
        lock(&self.usage).len() + lock(&self.failures).len()
    }

    /// Takes a connection slot for `peer`, or says which budget refuses it.
    pub fn open_connection(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let client = ClientKey::of(peer);
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            self.refuse(Refusal::Connections, Some(client), "connection closed");
            return Err(Refusal::Connections);
        }
        if !self.is_trusted_proxy(peer) {
            let mut usage = lock(&self.usage);
            let u = usage.entry(client).or_default();
            if u.connections >= self.max_connections_per_address {
                if u.is_empty() {
                    usage.remove(&client);
                }
                drop(usage);
                self.connections.fetch_sub(1, Ordering::AcqRel);
                self.refuse(
                    Refusal::ConnectionsPerAddress,
                    Some(client),
                    "connection closed",
                );
                return Err(Refusal::ConnectionsPerAddress);
            }
            u.connections += 1;
        }
        Ok(ConnectionSlot {
            limits: self.clone(),
            client: (!self.is_trusted_proxy(peer)).then_some(client),
        })
    }

    /// Takes a slot for a WebSocket of `client` that has not handshaken yet.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub fn open_pending_websocket(
        self: &Arc<Self>,
        client: Option<ClientKey>,
    ) -> Result<PendingWebSocket, Refusal> {
        let Some(client) = client else {
            return Ok(PendingWebSocket(None));
        };
        if !self.adjust(client, |u| {
            (u.pending_websockets < self.max_pending_websockets)
                .then(|| u.pending_websockets += 1)
                .is_some()
        }) {
            self.refuse(
                Refusal::PendingWebSockets,
                Some(client),
                "upgrade answered 503",
            );
            return Err(Refusal::PendingWebSockets);
        }
        Ok(PendingWebSocket(Some((self.clone(), client))))
    }

    /// Reserves `n` bytes for a request body of `client` while it is read and handled,
    /// or says which budget refuses it.
    pub fn reserve_body(
        self: &Arc<Self>,
        client: Option<ClientKey>,
        n: usize,
    ) -> Result<BodyReservation, Refusal> {
        if self.body_bytes.fetch_add(n, Ordering::AcqRel) + n > self.max_body_bytes && n > 0 {
            self.body_bytes.fetch_sub(n, Ordering::AcqRel);
            self.refuse(Refusal::BodyBytes, client, "request answered 503");
            return Err(Refusal::BodyBytes);
        }
        if let Some(client) = client
            && !self.adjust(client, |u| {
                (u.body_bytes + n <= self.max_body_bytes_per_address)
                    .then(|| u.body_bytes += n)
                    .is_some()
            })
        {
            self.body_bytes.fetch_sub(n, Ordering::AcqRel);
            self.refuse(
                Refusal::BodyBytesPerAddress,
                Some(client),
                "request answered 503",
            );
            return Err(Refusal::BodyBytesPerAddress);
        }
        Ok(BodyReservation {
            limits: self.clone(),
            client,
            bytes: n,
        })
    }

    /// Bytes of request bodies being read and handled right now.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes.load(Ordering::Relaxed)
    }

    /// Takes a session slot for `client`, or `None` when it holds its budget.
    pub fn open_session(self: &Arc<Self>, client: Option<ClientKey>) -> Option<SessionSlot> {
        let Some(client) = client else {
            return Some(SessionSlot(None));
        };
        if !self.adjust(client, |u| {
            (u.sessions < self.max_sessions_per_address)
                .then(|| u.sessions += 1)
                .is_some()
        }) {
            self.refuse(
                Refusal::SessionsPerAddress,
                Some(client),
                "handshake refused",
            );
            return None;
        }
        Some(SessionSlot(Some((self.clone(), client))))
    }

    /// Starts a credential check for `client`, or refuses it (counted, logged) when its
    /// recent failures and the checks it has under way reach
    /// `max_auth_failures_per_address`: the checks under way count as failures until
    /// they end, so a burst of concurrent guesses cannot all pass the bound.
    pub fn begin_auth(self: &Arc<Self>, client: Option<ClientKey>) -> Option<AuthAttempt> {
        let Some(key) = client else {
            return Some(AuthAttempt {
                limits: self.clone(),
                client: None,
            });
        };
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        let record = failures.entry(key).or_default();
        // Checks under way count only for an address that has failed recently: a busy
        // client behind one address (a NAT, a load tool) that never fails is not held
        // back, and a first burst of guesses is bounded by the check pool's queue.
        let recent = record.failures.recent(self.auth_window, now);
        let used = if recent > 0 {
            recent + record.in_flight as usize
        } else {
            0
        };
        if used >= self.max_auth_failures.max(1) as usize {
            if record.is_idle(self.auth_window, now) {
                failures.remove(&key);
            }
            drop(failures);
            self.refuse(Refusal::AuthFailures, client, "handshake refused");
            return None;
        }
        record.in_flight += 1;
        if failures.len() > MAX_TRACKED {
            let window = self.auth_window;
            failures.retain(|k, r| *k == key || !r.is_idle(window, now));
            keep_newest(&mut failures, MAX_TRACKED / 2, |r| {
                r.failures.newest().or(Some(now))
            });
        }
        Some(AuthAttempt {
            limits: self.clone(),
            client,
        })
    }

    /// Ends a check that `begin_auth` started: `failed` records a failure.
    fn end_auth(&self, client: ClientKey, failed: bool) {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        let Some(record) = failures.get_mut(&client) else {
            return;
        };
        record.in_flight = record.in_flight.saturating_sub(1);
        if failed {
            record.failures.record(self.max_auth_failures, now);
        }
        if record.is_idle(self.auth_window, now) {
            failures.remove(&client);
        }
    }

    /// Drops what is no longer needed: failure windows and log entries older than
    /// their intervals. Run by the server's periodic sweep.
    pub fn prune(&self, now: Instant) {
        let window = self.auth_window;
        lock(&self.failures).retain(|_, r| !r.is_idle(window, now));
        self.prune_logged(now, false);
    }

    fn prune_logged(&self, now: Instant, hard: bool) {
        let interval = self.log_interval;
        let mut logged = lock(&self.logged);
        logged.retain(|_, (at, _)| now.saturating_duration_since(*at) < interval);
        if hard && logged.len() > MAX_TRACKED {
            logged.clear();
        }
    }

    /// Applies `change` to `client`'s usage; returns what it returned, dropping the
    /// entry when it is left empty.
    fn adjust(&self, client: ClientKey, change: impl FnOnce(&mut Usage) -> bool) -> bool {
        let mut usage = lock(&self.usage);
        let u = usage.entry(client).or_default();
        let done = change(u);
        if u.is_empty() {
            usage.remove(&client);
        }
        done
    }
}

/// A connection counted against the budgets until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limits: Arc<Limits>,
    client: Option<ClientKey>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.connections.fetch_sub(1, Ordering::AcqRel);
        if let Some(client) = self.client {
            self.limits.adjust(client, |u| {
                u.connections = u.connections.saturating_sub(1);
                true
            });
        }
    }
}

/// A WebSocket counted as not handshaken until [`PendingWebSocket::release`] or drop.
#[derive(Debug)]
pub(crate) struct PendingWebSocket(Option<(Arc<Limits>, ClientKey)>);

impl PendingWebSocket {
    /// The socket has handshaken (or carries an existing session): no longer pending.
    pub fn release(&mut self) {
        if let Some((limits, client)) = self.0.take() {
            limits.adjust(client, |u| {
                u.pending_websockets = u.pending_websockets.saturating_sub(1);
                true
            });
        }
    }

    /// Whether the socket still waits for its first handshake.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for PendingWebSocket {
    fn drop(&mut self) {
        self.release();
    }
}

/// One client's failed handshakes, and its checks under way.
#[derive(Debug, Default)]
struct AuthRecord {
    failures: FailureWindow,
    in_flight: u32,
}

impl AuthRecord {
    /// Nothing under way and no failure within `window`: the entry can go.
    fn is_idle(&self, window: Duration, now: Instant) -> bool {
        self.in_flight == 0 && self.failures.is_stale(window, now)
    }
}

/// A credential check under way for a client (see [`Limits::begin_auth`]): dropped, it
/// ends as not failed (accepted, or cancelled with its request).
#[derive(Debug)]
pub(crate) struct AuthAttempt {
    limits: Arc<Limits>,
    client: Option<ClientKey>,
}

impl AuthAttempt {
    /// The check failed: one more failure for the client's address.
    pub fn failed(mut self) {
        if let Some(client) = self.client.take() {
            self.limits.end_auth(client, true);
        }
    }
}

impl Drop for AuthAttempt {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.limits.end_auth(client, false);
        }
    }
}

/// Request body bytes counted against the budgets until dropped.
#[derive(Debug)]
pub(crate) struct BodyReservation {
    limits: Arc<Limits>,
    client: Option<ClientKey>,
    bytes: usize,
}

impl BodyReservation {
    /// An empty reservation, grown as bytes arrive ([`BodyReservation::grow`]).
    pub fn empty(limits: &Arc<Limits>, client: Option<ClientKey>) -> Self {
        BodyReservation {
            limits: limits.clone(),
            client,
            bytes: 0,
        }
    }

    /// Reserves `n` more bytes, or says which budget refuses them.
    pub fn grow(&mut self, n: usize) -> Result<(), Refusal> {
        if n == 0 {
            return Ok(());
        }
        let mut more = self.limits.reserve_body(self.client, n)?;
        // The bytes now belong to this reservation.
        more.bytes = 0;
        self.bytes += n;
        Ok(())
    }

    /// Gives back everything reserved so far (the message it was for is handled).
    pub fn clear(&mut self) {
        let n = std::mem::take(&mut self.bytes);
        if n == 0 {
            return;
        }
        self.limits.body_bytes.fetch_sub(n, Ordering::AcqRel);
        if let Some(client) = self.client {
            self.limits.adjust(client, |u| {
                u.body_bytes = u.body_bytes.saturating_sub(n);
                true
            });
        }
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A session counted against its client's budget until dropped.
#[derive(Debug)]
pub(crate) struct SessionSlot(Option<(Arc<Limits>, ClientKey)>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some((limits, client)) = self.0.take() {
            limits.adjust(client, |u| {
                u.sessions = u.sessions.saturating_sub(1);
                true
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(config: ServerConfig) -> Arc<Limits> {
        Arc::new(Limits::new(&config))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:127.0.0.2")),
            ClientKey::of(ip("127.0.0.2"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8::5")).to_string(),
            "2001:db8::/64"
        );
    }

    #[test]
    fn connections_are_bounded_in_total_and_per_address() {
        let l = limits(
            ServerConfig::default()
                .with_max_connections(3)
                .with_max_connections_per_address(2),
        );
        let a1 = l.open_connection(ip("127.0.0.1")).unwrap();
        let _a2 = l.open_connection(ip("127.0.0.1")).unwrap();
        assert_eq!(
            l.open_connection(ip("127.0.0.1")).unwrap_err(),
            Refusal::ConnectionsPerAddress
        );
        let _b = l.open_connection(ip("127.0.0.2")).unwrap();
        assert_eq!(
            l.open_connection(ip("127.0.0.3")).unwrap_err(),
            Refusal::Connections
        );
        drop(a1);
        assert_eq!(l.open_connections(), 2);
        let _a3 = l.open_connection(ip("127.0.0.1")).unwrap();
        assert_eq!(l.refusals()[0], 1);
        assert_eq!(l.refusals()[1], 1);
    }

    #[test]
    fn trusted_proxies_are_exempt_and_name_the_client() {
        let l = limits(
            ServerConfig::default()
                .with_max_connections_per_address(1)
                .with_trusted_proxies(vec![ip("10.0.0.1")]),
        );
        let _p1 = l.open_connection(ip("10.0.0.1")).unwrap();
        let _p2 = l.open_connection(ip("10.0.0.1")).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 192.0.2.7, 10.0.0.1".parse().unwrap(),
        );
        assert_eq!(
            l.client_of(Some(ip("10.0.0.1")), &headers),
            Some(ClientKey::of(ip("192.0.2.7")))
        );
        let mut ported = http::HeaderMap::new();
        ported.insert(
            "x-forwarded-for",
            "6.6.6.6, 192.0.2.8:4711".parse().unwrap(),
        );
        assert_eq!(
            l.client_of(Some(ip("10.0.0.1")), &ported),
            Some(ClientKey::of(ip("192.0.2.8")))
        );
        let mut odd = http::HeaderMap::new();
        odd.insert("x-forwarded-for", "6.6.6.6, unknown".parse().unwrap());
        assert_eq!(
            l.client_of(Some(ip("10.0.0.1")), &odd),
            Some(ClientKey::of(ip("10.0.0.1"))),
            "an entry that cannot be read is not skipped over"
        );
        // From anyone else, the header is the client's word and is ignored.
        assert_eq!(
            l.client_of(Some(ip("192.0.2.9")), &headers),
            Some(ClientKey::of(ip("192.0.2.9")))
        );
    }

    #[test]
    fn request_bodies_are_bounded_in_total_and_per_address() {
        let l = limits(
            ServerConfig::default()
                .with_max_message_size(100)
                .with_max_body_bytes(300)
                .with_max_body_bytes_per_address(200),
        );
        let (a, b) = (
            Some(ClientKey::of(ip("127.0.0.1"))),
            Some(ClientKey::of(ip("127.0.0.2"))),
        );
        let a1 = l.reserve_body(a, 150).unwrap();
        assert_eq!(
            l.reserve_body(a, 100).unwrap_err(),
            Refusal::BodyBytesPerAddress
        );
        let _b1 = l.reserve_body(b, 150).unwrap();
        assert_eq!(l.reserve_body(b, 10).unwrap_err(), Refusal::BodyBytes);
        drop(a1);
        assert_eq!(l.body_bytes(), 150);
        assert!(l.reserve_body(a, 100).is_ok());
    }

    #[test]
    fn sessions_and_pending_sockets_are_bounded_per_address() {
        let l = limits(
            ServerConfig::default()
                .with_max_sessions_per_address(1)
                .with_max_pending_websockets_per_address(1),
        );
        let a = Some(ClientKey::of(ip("127.0.0.1")));
        let s = l.open_session(a).unwrap();
        assert!(l.open_session(a).is_none());
        drop(s);
        assert!(l.open_session(a).is_some());
        let mut w = l.open_pending_websocket(a).unwrap();
        assert!(l.open_pending_websocket(a).is_err());
        w.release();
        assert!(!w.is_pending());
        assert!(l.open_pending_websocket(a).is_ok());
        // No address known (an embedder's own stack): nothing to count against.
        assert!(l.open_session(None).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_handshakes_block_an_address_for_the_window_only() {
        let l = limits(
            ServerConfig::default()
                .with_max_auth_failures_per_address(3)
                .with_auth_failure_window(Duration::from_secs(60)),
        );
        let a = Some(ClientKey::of(ip("127.0.0.1")));
        let b = Some(ClientKey::of(ip("127.0.0.2")));
        for _ in 0..3 {
            l.begin_auth(a).expect("under the bound").failed();
        }
        assert!(l.begin_auth(a).is_none());
        assert!(l.begin_auth(b).is_some(), "another address is not affected");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(l.begin_auth(a).is_some());
        l.prune(Instant::now());
        assert_eq!(l.tracked_clients(), 0);
        assert_eq!(l.refusals()[Refusal::AuthFailures.index()], 1);
    }

    #[test]
    fn checks_under_way_count_against_the_failure_bound() {
        let l = limits(ServerConfig::default().with_max_auth_failures_per_address(3));
        let a = Some(ClientKey::of(ip("127.0.0.1")));
        // An address that never failed is not held back, however many at once.
        let many: Vec<AuthAttempt> = (0..10).map(|_| l.begin_auth(a).unwrap()).collect();
        drop(many);
        // Once it failed, its checks under way count: one failure and two under way
        // reach the bound of three.
        l.begin_auth(a).unwrap().failed();
        let burst: Vec<AuthAttempt> = (0..2).map(|_| l.begin_auth(a).unwrap()).collect();
        assert!(l.begin_auth(a).is_none());
        // One ends well (or is cancelled): its place comes back; failures stay.
        let mut burst = burst.into_iter();
        drop(burst.next());
        let again = l.begin_auth(a).unwrap();
        for attempt in burst.chain([again]) {
            attempt.failed();
        }
        assert!(l.begin_auth(a).is_none());
    }
}

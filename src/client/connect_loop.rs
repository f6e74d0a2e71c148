//! The background connect loop: connects, follows advice, backs off on failures,
//! re-handshakes and re-subscribes when the session is lost.
//!
//! The same loop runs on both transports. On long-polling the connect is the long poll;
//! on WebSocket it is a heartbeat the server answers after its `timeout` while
//! deliveries arrive on the socket at any time. Either way the connect may take
//! `timeout + max_network_delay`; a socket that closes fails it at once, and the next
//! connect (after the backoff) opens a new socket and resumes the session if the server
//! still has it (else `402`, and a new handshake).
//!
//! Network errors are retried with the backoff, for ever. A TLS failure
//! ([`ErrorKind::Tls`]: a server certificate the client cannot trust, a client
//! certificate the server refused) is not: retrying would only fail the same way, so
//! the loop stops with [`ConnectionState::Failed`] and the error's message.
//!
//! With the `tracing` feature, each reconnection is an `info` event with its cause (the
//! error, or the server's reply) and the delay before the next attempt; so are a session
//! the server ended, the recovery and the loop's end. Nothing is logged per message.

use std::sync::Arc;
use std::time::Duration;

use super::transport::Lane;
use super::{ConnectionState, Error, ErrorKind, ReplayTrack, Shared, merge_advice};
use crate::protocol::{Advice, ChannelName, META_CONNECT, Message, Reconnect, ReplayFrom};

/// Capped exponential backoff with "equal jitter": the n-th delay is drawn uniformly
/// from `[c/2, c]`, where the ceiling `c` starts at `initial` and doubles up to `max`.
/// Clients that lost the same server therefore come back spread over time, not in
/// lockstep, and none retries sooner than half its ceiling.
struct Backoff {
    initial: Duration,
    max: Duration,
    /// The ceiling of the next delay.
    next: Duration,
}

/// A random `u64` from the OS (through `getrandom`, which the `server` feature links),
/// or from std's randomly keyed hasher (a client-only build, or if the OS fails).
fn random_u64() -> u64 {
    #[cfg(feature = "server")]
    if let Ok(r) = getrandom::u64() {
        return r;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    fn next_delay(&mut self) -> Duration {
        self.next_delay_with(random_u64())
    }

    /// The next delay, with `random` choosing where in `[c/2, c]` it falls.
    fn next_delay_with(&mut self, random: u64) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let floor = ceiling / 2;
        let span = (ceiling - floor).as_nanos() as u64;
        // Scales `random` to 0..=span without modulo bias worth speaking of.
        let extra = ((random as u128 * (span as u128 + 1)) >> 64) as u64;
        floor + Duration::from_nanos(extra)
    }
}

fn millis(v: Option<i64>) -> Duration {
    Duration::from_millis(v.unwrap_or(0).max(0) as u64)
}

/// What the loop does after one connect exchange.
enum Next {
    /// Connect again after `interval`.
    Poll(Duration),
    /// The session is gone: handshake again (why).
    Handshake(String),
    /// A failure (its cause): retry the connect after a backoff delay.
    Backoff(String),
    /// The server said `reconnect: none`.
    Stop(String),
}

/// Says what the loop does and why, at `info` (feature `tracing`).
macro_rules! event {
    ($shared:expr, $($rest:tt)+) => {
        #[cfg(feature = "tracing")]
        tracing::info!(transport = $shared.transport.name(), $($rest)+);
    };
}

/// Milliseconds, for the events.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs until aborted (client stopped) or told `reconnect: none`.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(shared.config.backoff, shared.config.max_backoff);
    // CometD's first connect asks the server to answer at once, to learn the advice;
    // so does the first one after a failure, so that getting back is seen at once
    // rather than after the server's `timeout`.
    let mut first = true;
    loop {
        if shared.client_id().is_none() {
            // `SessionLost` stays visible until the new session is connected, so a
            // watcher cannot miss it.
            if !matches!(*shared.status.borrow(), ConnectionState::SessionLost(_)) {
                shared.set_status(ConnectionState::Handshaking);
            }
            match shared.handshake_once().await {
                Ok(()) => match resubscribe(&shared).await {
                    Ok(()) => {
                        backoff.reset();
                        first = true;
                    }
                    Err(e) if e.kind() == ErrorKind::Tls => {
                        event!(shared, error = %e, "bayeux client: stopped: TLS failure");
                        shared.stop(ConnectionState::Failed(e.to_string()));
                        return;
                    }
                    Err(e) => {
                        shared.state().client_id = None;
                        let delay = backoff.next_delay();
                        event!(
                            shared,
                            error = %e,
                            retry_in_ms = ms(delay),
                            "bayeux client: re-subscribing failed; handshaking again"
                        );
                        #[cfg(not(feature = "tracing"))]
                        let _ = e;
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                },
                Err(e) if e.kind() == ErrorKind::Closed => {
                    event!(shared, error = %e, "bayeux client: stopped: the server refused the handshake");
                    shared.stop(ConnectionState::Failed(e.closed_reason().to_string()));
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Tls => {
                    event!(shared, error = %e, "bayeux client: stopped: TLS failure");
                    shared.stop(ConnectionState::Failed(e.to_string()));
                    return;
                }
                Err(e) => {
                    shared.set_status(ConnectionState::Reconnecting);
                    let delay = backoff.next_delay();
                    event!(
                        shared,
                        error = %e,
                        retry_in_ms = ms(delay),
                        "bayeux client: handshake failed; retrying"
                    );
                    #[cfg(not(feature = "tracing"))]
                    let _ = e;
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        match connect_once(&shared, first).await {
            Next::Poll(interval) => {
                first = false;
                backoff.reset();
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            Next::Handshake(why) => {
                event!(shared, reason = %why, "bayeux client: the server ended the session; handshaking again");
                #[cfg(not(feature = "tracing"))]
                let _ = why;
                if !matches!(*shared.status.borrow(), ConnectionState::SessionLost(_)) {
                    shared.set_status(ConnectionState::Reconnecting);
                }
                shared.state().client_id = None;
            }
            Next::Backoff(cause) => {
                first = true;
                shared.set_status(ConnectionState::Reconnecting);
                let delay = backoff.next_delay();
                event!(
                    shared,
                    cause = %cause,
                    retry_in_ms = ms(delay),
                    "bayeux client: connection lost; reconnecting"
                );
                #[cfg(not(feature = "tracing"))]
                let _ = cause;
                tokio::time::sleep(delay).await;
            }
            Next::Stop(why) => {
                event!(shared, reason = %why, "bayeux client: stopped: the server advised reconnect: none");
                shared.stop(ConnectionState::Failed(why));
                return;
            }
        }
    }
}

async fn connect_once(shared: &Shared, first: bool) -> Next {
    let mut m = shared.message(META_CONNECT);
    m.connection_type = Some(shared.transport.name().into());
    if first {
        m.advice = Some(Advice {
            timeout: Some(0),
            ..Advice::default()
        });
    }
    if let Some(batch) = shared.state().ack_batch {
        m.ext
            .get_or_insert_with(Default::default)
            .insert("ack".into(), batch.into());
    }
    let server_timeout = millis(shared.state().advice.timeout.or(Some(30_000)));
    let http_timeout = server_timeout + shared.config.max_network_delay;
    let reply = match shared.exchange(Lane::LongPoll, vec![m], http_timeout).await {
        Ok(mut replies) => replies
            .pop()
            .flatten()
            .ok_or_else(|| "no reply to /meta/connect".to_string()),
        Err(e) if e.kind() == ErrorKind::Tls => return Next::Stop(e.to_string()),
        Err(e) => {
            // A new socket's upgrade refused with a 4xx: the server (or a proxy) no longer
            // takes WebSocket. Go on over long-polling, where the session may still be.
            if e.kind() == ErrorKind::Connection
                && e.status_code().is_some_and(|c| (400..500).contains(&c))
            {
                event!(shared, error = %e, "bayeux client: the WebSocket upgrade was refused; falling back to long-polling");
                shared.transport.fall_back();
            }
            Err(e.to_string())
        }
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(cause) => return Next::Backoff(cause),
    };
    let advice = {
        let mut st = shared.state();
        if let Some(a) = reply.advice.clone() {
            merge_advice(&mut st.advice, a);
        }
        // The whole response was received and dispatched: acknowledge its batch next.
        let batch = reply
            .ext
            .as_ref()
            .and_then(|e| e.get("ack"))
            .and_then(|a| a.as_u64());
        if let (Some(current), Some(batch)) = (st.ack_batch.as_mut(), batch) {
            *current = batch;
        }
        st.advice.clone()
    };
    // Advice in this reply wins; without any, CometD's rule: a failed connect retries.
    let reconnect = reply.advice.as_ref().and_then(|a| a.reconnect);
    match reconnect {
        Some(Reconnect::None) => {
            let why = reply
                .error
                .clone()
                .unwrap_or_else(|| "the server advised reconnect: none".into());
            return Next::Stop(why);
        }
        Some(Reconnect::Handshake) => {
            let reason = lost_reason(&reply);
            if !reply.is_successful() {
                shared.session_lost(reason.clone());
            }
            return Next::Handshake(reason);
        }
        _ => {}
    }
    if reply.is_successful() {
        let recovering = matches!(
            *shared.status.borrow(),
            ConnectionState::Reconnecting | ConnectionState::SessionLost(_)
        );
        shared.set_status(ConnectionState::Connected);
        if recovering {
            event!(shared, "bayeux client: reconnected");
        }
        Next::Poll(millis(advice.interval))
    } else if reply.bayeux_error().is_some_and(|e| e.code == 402) {
        let reason = lost_reason(&reply);
        shared.session_lost(reason.clone());
        Next::Handshake(reason)
    } else {
        Next::Backoff(lost_reason(&reply))
    }
}

/// The Bayeux error of a connect reply that ended the session (or failed).
fn lost_reason(reply: &Message) -> String {
    reply.error.clone().unwrap_or_else(|| {
        if reply.is_successful() {
            "the server advised to handshake again".into()
        } else {
            "the server ended the session".into()
        }
    })
}

/// Subscribes the new session to every pattern that still has a local listener, in one
/// batch, each replaying pattern after the last replay id it saw. A pattern the server
/// now refuses ends its streams, except a replaying one whose id the server cannot
/// replay after any more (retention exceeded, a server that lost its log): its streams
/// count a gap, and it subscribes again with everything the server still has.
async fn resubscribe(shared: &Shared) -> Result<(), Error> {
    let patterns: Vec<ChannelName> = {
        let st = shared.state();
        let mut p: Vec<ChannelName> = st.listeners.iter().map(|l| l.pattern.clone()).collect();
        p.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        p.dedup();
        p
    };
    if patterns.is_empty() {
        return Ok(());
    }
    let mut retry = Vec::new();
    subscribe_all(shared, patterns, &mut retry).await?;
    if retry.is_empty() {
        return Ok(());
    }
    {
        let mut st = shared.state();
        for pattern in &retry {
            event!(
                shared,
                pattern = pattern.as_str(),
                "bayeux client: the server cannot replay after the last replayId seen; messages may be missing; replaying everything it retains"
            );
            for l in st.listeners.iter().filter(|l| &l.pattern == pattern) {
                l.gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(track) = st.replay.get_mut(pattern) {
                *track = ReplayTrack {
                    from: ReplayFrom::All,
                    last: None,
                };
            }
        }
    }
    subscribe_all(shared, retry, &mut Vec::new()).await
}

/// Subscribes `patterns` in one batch; the replaying ones whose replay id was refused go
/// to `refused_replay` (their listeners stay), the other refused ones lose their
/// listeners.
async fn subscribe_all(
    shared: &Shared,
    patterns: Vec<ChannelName>,
    refused_replay: &mut Vec<ChannelName>,
) -> Result<(), Error> {
    let requests: Vec<Message> = patterns
        .iter()
        .map(|p| shared.subscribe_message(p))
        .collect();
    let replies = shared
        .exchange(Lane::Requests, requests, shared.config.request_timeout)
        .await?;
    for (pattern, reply) in patterns.into_iter().zip(replies) {
        match reply {
            Some(r) if r.is_successful() => shared.confirmed(&pattern, &r),
            Some(r) => {
                let mut st = shared.state();
                let replay_refused = st.replay.contains_key(&pattern)
                    && r.bayeux_error()
                        .is_some_and(|e| crate::protocol::replay::is_invalid_replay_id(&e));
                if replay_refused {
                    refused_replay.push(pattern);
                } else {
                    st.listeners.retain(|l| l.pattern != pattern);
                    st.replay.remove(&pattern);
                }
            }
            None => return Err(Error::protocol("no reply to a re-subscribe")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceilings_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let top: Vec<u128> = (0..5)
            .map(|_| b.next_delay_with(u64::MAX).as_millis())
            .collect();
        assert_eq!(top, vec![100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay_with(0), Duration::from_millis(50));
        assert_eq!(b.next_delay_with(0), Duration::from_millis(100));
    }

    #[test]
    fn backoff_delays_are_jittered_within_bounds() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(3));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(initial, max);
            let mut ceiling = initial;
            for _ in 0..8 {
                let d = b.next_delay();
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d:?} outside [{ceiling:?}/2, {ceiling:?}]"
                );
                seen.insert(d);
                ceiling = (ceiling * 2).min(max);
            }
        }
        // A thousand clients would not retry in lockstep.
        assert!(seen.len() > 1000, "only {} distinct delays", seen.len());
    }
}

//! One raw Bayeux session of the load tool: handshake, subscribe, and the long-poll loop
//! that records each delivered message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bayeux::client::transport::CookieJar;
use http::{HeaderMap, Uri};
use tokio::io::AsyncWriteExt;

use super::Run;
use super::stats::Counters;
use super::wire::{self, WireError};

/// A session: its clientId and the cookies the server bound it to.
pub struct Opened {
    pub client_id: String,
    /// The endpoint it was opened at, where all its requests go.
    pub endpoint: Uri,
    pub cookies: CookieJar,
    /// The connections it uses: the run's shared pool, or with `--http2` one HTTP/2
    /// connection of its own (as a browser tab has).
    pub pool: wire::Pool,
}

/// Opens session `index` at `endpoint`; `None` after counting the failure.
pub async fn handshake(
    run: &Run,
    endpoint: &Uri,
    index: usize,
    headers: &HeaderMap,
) -> Option<Opened> {
    let cookies = CookieJar::new();
    let pool = run.session_pool(index);
    match wire::post(
        &pool,
        endpoint,
        wire::handshake_body(),
        headers,
        Some(&cookies),
        run.http_timeout,
    )
    .await
    {
        Ok(body) => {
            let msgs = match wire::parse(&body) {
                Ok(m) => m,
                Err(_) => {
                    Counters::add(&run.counters.bayeux_errors, 1);
                    run.note_error("a handshake reply that is not Bayeux".to_string());
                    return None;
                }
            };
            match msgs.first() {
                Some(m) if m.successful == Some(true) && m.client_id.is_some() => {
                    Counters::add(&run.counters.handshakes, 1);
                    m.client_id.map(|id| Opened {
                        client_id: id.to_string(),
                        endpoint: endpoint.clone(),
                        cookies,
                        pool,
                    })
                }
                _ => {
                    Counters::add(&run.counters.bayeux_errors, 1);
                    run.note_error("a handshake refused".to_string());
                    None
                }
            }
        }
        Err(_) => {
            Counters::add(&run.counters.http_errors, 1);
            run.note_error("a handshake failed (HTTP error or timeout)".to_string());
            None
        }
    }
}

async fn subscribe(run: &Run, session: &Opened, channel: &str, headers: &HeaderMap) -> bool {
    match wire::post(
        &session.pool,
        &session.endpoint,
        wire::subscribe_body(&session.client_id, channel),
        headers,
        Some(&session.cookies),
        run.http_timeout,
    )
    .await
    {
        Ok(body) => {
            let ok = wire::parse(&body).is_ok_and(|m| {
                m.iter()
                    .any(|m| m.channel == Some("/meta/subscribe") && m.successful == Some(true))
            });
            if !ok {
                Counters::add(&run.counters.bayeux_errors, 1);
                run.note_error(format!("the subscribe to {channel} was refused"));
            }
            ok
        }
        Err(_) => {
            Counters::add(&run.counters.http_errors, 1);
            run.note_error(format!(
                "the subscribe to {channel} failed (HTTP error or timeout)"
            ));
            false
        }
    }
}

/// What a connect reply told the session to do next.
pub enum After {
    Connect(Duration),
    Handshake,
}

/// Handles a batch of received messages (a long-poll response, a WebSocket frame):
/// records each delivery's latency, duplicates and the batch's size; returns the advice
/// of the `/meta/connect` reply in it, if there is one.
pub fn on_messages(
    run: &Run,
    shard: usize,
    next: &mut HashMap<u32, u64>,
    body: &[u8],
) -> Result<Option<After>, WireError> {
    let msgs = wire::parse(body)?;
    let now = run.micros();
    let mut after = None;
    let mut delivered = 0;
    for m in &msgs {
        if m.channel == Some("/meta/connect") {
            let advice = m.advice.as_ref();
            let interval = advice.and_then(|a| a.interval).unwrap_or(0.0);
            after = Some(After::Connect(Duration::from_millis(
                interval.max(0.0) as u64
            )));
            let reconnect = advice.and_then(|a| a.reconnect);
            if m.successful == Some(false) || reconnect == Some("handshake") {
                if reconnect == Some("handshake") || reconnect.is_none() {
                    after = Some(After::Handshake);
                }
                Counters::add(&run.counters.bayeux_errors, 1);
            }
            continue;
        }
        let Some(data) = &m.data else { continue };
        let Some((p, s, t)) = wire::stamp(data) else {
            continue;
        };
        delivered += 1;
        run.latencies.record(shard, now.saturating_sub(t));
        if let Some(broadcasts) = &run.broadcasts {
            broadcasts.record(s, t, now);
        }
        let expected = next.entry(p).or_insert(0);
        if s < *expected {
            Counters::add(&run.counters.duplicates, 1);
        } else {
            *expected = s + 1;
        }
    }
    Counters::add(&run.counters.delivered, delivered);
    if delivered > 0 {
        run.last_delivery.fetch_max(now, Ordering::Relaxed);
    }
    run.per_response.record(shard, delivered);
    Ok(after)
}

/// Signals once that a subscriber (or a stalled session) is in place.
pub fn signal_ready(run: &Run) {
    run.ready.fetch_add(1, Ordering::Relaxed);
    run.ready_notify.notify_one();
}

/// A subscriber: keeps a session subscribed to `channel` and long-polls until aborted.
/// `ready` is signalled once, when the first subscription is confirmed.
pub async fn subscriber(run: Arc<Run>, index: usize, channel: String, auth: Option<String>) {
    let headers = wire::headers(auth.as_deref());
    let mut next = HashMap::new();
    let mut signalled = false;
    let endpoint = &run.target(index).endpoint;
    loop {
        let Some(opened) = handshake(&run, endpoint, index, &headers).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !subscribe(&run, &opened, &channel, &headers).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if !signalled {
            signalled = true;
            signal_ready(&run);
        }
        let mut first = true;
        loop {
            let body = wire::connect_body(&opened.client_id, first);
            first = false;
            let cookies = Some(&opened.cookies);
            match wire::post(
                &opened.pool,
                &opened.endpoint,
                body,
                &headers,
                cookies,
                run.poll_timeout,
            )
            .await
            {
                Ok(bytes) => match on_messages(&run, index, &mut next, &bytes) {
                    Ok(None) => {}
                    Ok(Some(After::Connect(interval))) => {
                        if !interval.is_zero() {
                            tokio::time::sleep(interval).await;
                        }
                    }
                    Ok(Some(After::Handshake)) => {
                        Counters::add(&run.counters.rehandshakes, 1);
                        break;
                    }
                    Err(_) => Counters::add(&run.counters.bayeux_errors, 1),
                },
                Err(_) => {
                    Counters::add(&run.counters.http_errors, 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A stalled long-polling session: handshakes, subscribes to `channel`, polls once (the
/// first connect, answered at once), then sends a second connect on a connection of its
/// own (over TLS for `https://`) and never reads its response, nor connects again.
/// Holds that connection until the run ends (the task is aborted).
pub async fn stalled(run: Arc<Run>, index: usize, channel: String, auth: Option<String>) {
    let headers = wire::headers(auth.as_deref());
    let endpoint = &run.target(index).endpoint;
    let opened = loop {
        if let Some(opened) = handshake(&run, endpoint, index, &headers).await
            && subscribe(&run, &opened, &channel, &headers).await
        {
            break opened;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = wire::connect_body(&opened.client_id, true);
    let (url, jar) = (&opened.endpoint, Some(&opened.cookies));
    if wire::post(&opened.pool, url, first, &headers, jar, run.http_timeout)
        .await
        .is_err()
    {
        Counters::add(&run.counters.http_errors, 1);
    }
    let body = wire::connect_body(&opened.client_id, false);
    let request = wire::raw_post(url, &body, &headers, &opened.cookies);
    let _connection = loop {
        if let Ok(mut stream) = wire::dial(url, run.tls.as_ref(), run.source(index)).await
            && stream.write_all(&request).await.is_ok()
            && stream.flush().await.is_ok()
        {
            break stream;
        }
        Counters::add(&run.counters.http_errors, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    signal_ready(&run);
    std::future::pending::<()>().await;
}

/// Keeps a publisher's session alive (servers expire sessions that never connect).
pub async fn keep_alive(run: Arc<Run>, session: Arc<Opened>) {
    let headers = HeaderMap::new();
    let mut first = true;
    loop {
        let body = wire::connect_body(&session.client_id, first);
        first = false;
        let cookies = Some(&session.cookies);
        if wire::post(
            &session.pool,
            &session.endpoint,
            body,
            &headers,
            cookies,
            run.poll_timeout,
        )
        .await
        .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

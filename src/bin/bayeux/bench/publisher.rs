//! Publishers of the load tool: Bayeux publishes, or workbin POSTs (the demo publisher,
//! benchmarked end to end). Every message carries its publisher, sequence and send time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::{Instant, MissedTickBehavior};

use super::stats::Counters;
use super::{Run, session, wire};

/// How publishers reach the server.
#[derive(Clone)]
pub enum Via {
    /// Bayeux publish to `/bench/{c}`.
    Bayeux,
    /// `POST {base}/api/v2/users/bench-agent-{c}/workbins/wb` (AddEmail).
    Workbin { base: String, auth: Option<String> },
}

/// One publisher: sends until `until`, at `interval` per request (zero: back to back).
pub async fn publisher(
    run: Arc<Run>,
    index: u32,
    via: Via,
    interval: Duration,
    until: Instant,
    batch: usize,
    payload: String,
) {
    let channels = run.channel_count;
    let mut seq = vec![0u64; channels];
    let mut next_channel = index as usize % channels;
    let mut ticker = (!interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        t
    });
    let session = match via {
        Via::Bayeux => loop {
            if let Some(opened) = session::handshake(
                &run,
                run.publish_endpoint(index as usize),
                0,
                &HeaderMap::new(),
            )
            .await
            {
                let opened = Arc::new(opened);
                tokio::spawn(session::keep_alive(run.clone(), opened.clone()));
                break Some(opened);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        },
        Via::Workbin { .. } => None,
    };
    let headers = match &via {
        Via::Bayeux => HeaderMap::new(),
        Via::Workbin { auth, .. } => wire::headers(auth.as_deref()),
    };
    let cookies = session.as_ref().map(|s| &s.cookies);
    // A pool of its own: publishes never queue behind the subscribers' long polls. With
    // `--http2`, the session's own connection, which its long poll shares, as a browser
    // tab's publishes would.
    let pool = match &session {
        Some(session) if run.http2 => session.pool.clone(),
        _ if run.http2 => run.session_pool(0),
        _ => wire::pool(run.tls.as_ref(), run.source(0)),
    };
    while Instant::now() < until {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        match &via {
            Via::Bayeux => {
                let id = session
                    .as_ref()
                    .map(|s| s.client_id.as_str())
                    .unwrap_or_default();
                let mut body = String::from("[");
                let mut sent = Vec::with_capacity(batch);
                for k in 0..batch {
                    let c = next_channel;
                    next_channel = (next_channel + 1) % channels;
                    if k > 0 {
                        body.push(',');
                    }
                    let _ = write!(
                        body,
                        r#"{{"channel":"/bench/{c}","clientId":"{id}","id":"{k}","data":{{"p":{index},"s":{},"t":{},"x":"{payload}"}}}}"#,
                        seq[c],
                        run.micros()
                    );
                    seq[c] += 1;
                    sent.push(c);
                }
                body.push(']');
                match wire::post(
                    &pool,
                    run.publish_endpoint(index as usize),
                    body,
                    &headers,
                    cookies,
                    run.http_timeout,
                )
                .await
                {
                    Ok(bytes) => match wire::parse(&bytes) {
                        Ok(replies) => {
                            for r in replies
                                .iter()
                                .filter(|r| r.channel.is_some_and(|c| c.starts_with("/bench/")))
                            {
                                if r.successful == Some(true) {
                                    let c: usize = r.channel.unwrap()[7..].parse().unwrap_or(0);
                                    run.published_per_channel[c].fetch_add(1, Ordering::Relaxed);
                                    Counters::add(&run.counters.published, 1);
                                } else {
                                    Counters::add(&run.counters.bayeux_errors, 1);
                                }
                            }
                        }
                        Err(_) => Counters::add(&run.counters.bayeux_errors, 1),
                    },
                    Err(_) => Counters::add(&run.counters.http_errors, 1),
                }
            }
            Via::Workbin { base, .. } => {
                let c = next_channel;
                next_channel = (next_channel + 1) % channels;
                let Ok(url) = format!("{base}/api/v2/users/bench-agent-{c}/workbins/wb").parse()
                else {
                    Counters::add(&run.counters.http_errors, 1);
                    continue;
                };
                let body = format!(
                    r#"{{"operationName":"AddEmail","uri":"bench/b{index}-{}-{}"}}"#,
                    seq[c],
                    run.micros()
                );
                seq[c] += 1;
                match wire::post(&pool, &url, body, &headers, None, run.http_timeout).await {
                    Ok(bytes) if bytes.starts_with(br#"{"statusCode":0,"#) => {
                        run.published_per_channel[c].fetch_add(1, Ordering::Relaxed);
                        Counters::add(&run.counters.published, 1);
                    }
                    Ok(_) => Counters::add(&run.counters.bayeux_errors, 1),
                    Err(_) => Counters::add(&run.counters.http_errors, 1),
                }
            }
        }
    }
}

/// Broadcast mode's publisher: one session at the publish endpoint sends `count`
/// messages to `/bench/0`, one per publish request, `interval` apart (from the start of
/// each publish). Returns each one's sequence number and stamp (wall-clock µs).
pub async fn broadcasts(
    run: Arc<Run>,
    count: u64,
    interval: Duration,
    payload: String,
) -> Vec<(u64, u64)> {
    let opened = loop {
        if let Some(opened) =
            session::handshake(&run, run.publish_endpoint(0), 0, &HeaderMap::new()).await
        {
            break Arc::new(opened);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let keep_alive = tokio::spawn(session::keep_alive(run.clone(), opened.clone()));
    let pool = if run.http2 {
        opened.pool.clone()
    } else {
        wire::pool(run.tls.as_ref(), run.source(0))
    };
    let mut sent = Vec::new();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for seq in 0..count {
        ticker.tick().await;
        let t = run.micros();
        let body = format!(
            r#"[{{"channel":"/bench/0","clientId":"{}","id":"{seq}","data":{{"p":0,"s":{seq},"t":{t},"x":"{payload}"}}}}]"#,
            opened.client_id
        );
        let reply = wire::post(
            &pool,
            run.publish_endpoint(0),
            body,
            &HeaderMap::new(),
            Some(&opened.cookies),
            run.http_timeout,
        )
        .await;
        match reply.as_deref().map(wire::parse) {
            Ok(Ok(replies))
                if replies
                    .iter()
                    .any(|r| r.channel == Some("/bench/0") && r.successful == Some(true)) =>
            {
                run.published_per_channel[0].fetch_add(1, Ordering::Relaxed);
                Counters::add(&run.counters.published, 1);
                sent.push((seq, t));
            }
            Ok(_) => Counters::add(&run.counters.bayeux_errors, 1),
            Err(_) => Counters::add(&run.counters.http_errors, 1),
        }
    }
    keep_alive.abort();
    sent
}

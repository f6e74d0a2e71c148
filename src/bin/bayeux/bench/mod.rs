//! `bayeux bench`: a load generator for any Bayeux server (ours, Faye, CometD).
//! Subscribers are raw sessions, not full clients, so the tool stays cheap: long-polling
//! ones on one shared connection pool, or WebSocket ones with a socket and a task each.
//! Publishers POST over HTTP. The tool's own CPU time is reported.
//!
//! `https://` endpoints (and `wss://` sockets) go through rustls with the client's TLS
//! options (`--ca-cert`, `--client-cert`, `--client-key`), over HTTP/1.1 as on plain
//! TCP (see `wire::Pool`). `http://` runs exactly as before.

mod publisher;
mod session;
mod stats;
mod wire;
mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::settings::{Millis, Secs, show_duration};
use publisher::Via;
use stats::{Counters, Latencies, PerResponse, Percentiles, Report};

/// Options of `bayeux bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The Bayeux endpoint, e.g. http://127.0.0.1:8080/cometd
    url: String,
    /// An endpoint for the subscribers (repeatable): they are spread round-robin over
    /// the endpoints given, e.g. the nodes of a NATS cluster (default: URL).
    #[arg(long = "subscribe-url", value_name = "URL")]
    subscribe_urls: Vec<String>,
    /// An endpoint for the publishers (repeatable: publishers round-robin over them;
    /// default: URL); latencies stay end to end, from publish on one endpoint to receipt
    /// on any other.
    #[arg(long = "publish-url", value_name = "URL")]
    publish_urls: Vec<String>,
    /// A local address the connections come from (repeatable, or a range such as
    /// `127.0.0.2-127.0.0.9`): sessions are spread round-robin over them, publishers use
    /// the first. One address has one ephemeral port range per destination; more
    /// addresses let one box open more connections to one server.
    #[arg(long = "source-ip", value_name = "IP[-IP]", value_parser = parse_sources)]
    source_ips: Vec<Vec<std::net::IpAddr>>,
    /// Subscriber sessions, spread round-robin over the channels.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Channels (`/bench/0` ... or, with --publish-via workbin, agents).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publishers (each one request in flight at a time).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Target messages per second over all publishers; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Messages per publish request (Bayeux batching).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// How long to publish (with `--publishers 0`, the subscribers are held idle that
    /// long): `10s`, `2m`, or seconds.
    #[arg(long, value_name = "DURATION", default_value = "10")]
    duration: Secs,
    /// How long the subscribers take to join (0: all at once); `30s` or seconds.
    #[arg(long, value_name = "DURATION", default_value = "0")]
    ramp_up: Secs,
    /// How long to wait after publishing for in-flight deliveries; `3s` or seconds.
    #[arg(long, value_name = "DURATION", default_value = "3")]
    drain: Secs,
    /// `bayeux` (publish to /bench/N) or `workbin` (POST the demo's workbin endpoint).
    #[arg(long, default_value = "bayeux", value_parser = ["bayeux", "workbin"])]
    publish_via: String,
    /// Base URL of the workbin API (default: the Bayeux URL without its path).
    #[arg(long)]
    workbin_base: Option<String>,
    /// Supervisor credentials user:password for the workbin API.
    #[arg(long)]
    auth: Option<String>,
    /// Padding bytes added to each message's data.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// `pubsub` (the default); `handshake` (sessions opened and closed as fast as
    /// `--concurrency` workers can, for --duration seconds); `churn` (a soak: workers
    /// handshake, subscribe, connect once, then either disconnect or vanish).
    /// `broadcast`: the subscribers, all on `/bench/0`, are established, then (with
    /// `--publishers` above 0) one publisher sends `--broadcasts` messages,
    /// `--broadcast-interval` apart, and the report gives how long each took to reach
    /// every subscriber; with `--publishers 0` the tool only holds its subscribers until
    /// they received `--broadcasts` messages each (or `--duration` passed), for a
    /// broadcast sent by another process (the stamps are wall-clock times).
    #[arg(long, default_value = "pubsub", value_parser = ["pubsub", "handshake", "churn", "broadcast"])]
    mode: String,
    /// Broadcast mode: how many messages are broadcast (one at a time).
    #[arg(long, default_value_t = 5)]
    broadcasts: u64,
    /// Broadcast mode: the time between two broadcasts; `2s`, `500ms`, or milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    broadcast_interval: Millis,
    /// A file created once every subscriber is established (for scripts that start
    /// the publishing elsewhere).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<std::path::PathBuf>,
    /// Workers in handshake mode.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How the subscribers receive (pubsub mode): `long-polling` (POSTs on a shared pool)
    /// or `websocket` (a socket each at the Bayeux URL, ws://host:port/path: messages
    /// pushed as they are queued, each heartbeat connect reply answered with the next
    /// connect). Publishers POST over HTTP with either, so both see the same publishing.
    #[arg(long, default_value = "long-polling", value_parser = ["long-polling", "websocket"])]
    transport: String,
    /// Extra subscriber sessions, on the same channels, that handshake, subscribe, send
    /// one connect and then never read again: on WebSocket a socket never read; on
    /// long-polling a held connect whose response is never read (after the first connect,
    /// which the server answers at once), and no connect after it. To check that a client
    /// that does not read slows nobody else (the report covers the others only) and that
    /// the server's memory stays bounded.
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// Long-poll HTTP timeout (above the server's connect timeout); on WebSocket, the
    /// longest a subscriber's socket may be silent; `45s` or seconds.
    #[arg(long, value_name = "DURATION", default_value = "45")]
    poll_timeout: Secs,
    /// How long the server may take to answer any other request (handshake, subscribe,
    /// publish), and the longest the setup may go without a new subscriber before the
    /// run gives up: `10s`, `500ms`, or milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: Millis,
    /// Print the report as JSON (for scripts).
    #[arg(long)]
    json: bool,
    /// With an `https://` endpoint, long-polling: each session (subscriber or publisher)
    /// opens one connection of its own and offers HTTP/2 (ALPN `h2`), so its long poll
    /// and other requests share it, as in a browser tab; without, HTTP/1.1 on a shared
    /// pool.
    #[arg(long)]
    http2: bool,
    #[command(flatten)]
    tls: crate::listen::TlsArgs,
}

/// Parses `--source-ip`: one address, or a range `first-last` of one family.
fn parse_sources(text: &str) -> Result<Vec<std::net::IpAddr>, String> {
    use std::net::IpAddr;
    let bad = |e: std::net::AddrParseError| format!("{text}: {e}");
    let Some((first, last)) = text.split_once('-') else {
        return Ok(vec![text.trim().parse().map_err(bad)?]);
    };
    match (
        first.trim().parse().map_err(bad)?,
        last.trim().parse().map_err(bad)?,
    ) {
        (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => Ok((u32::from(a)
            ..=u32::from(b))
            .map(|n| IpAddr::V4(n.into()))
            .collect()),
        _ => Err(format!(
            "{text}: a range is two IPv4 addresses, the first not above the last"
        )),
    }
}

/// Where subscribers connect: an endpoint and its WebSocket URL.
pub struct Target {
    pub endpoint: http::Uri,
    /// The endpoint's WebSocket URL (ws://host:port/path, or wss:// for https://).
    pub socket_url: String,
}

/// State shared by every task of a run.
pub struct Run {
    /// The Bayeux endpoint.
    pub endpoint: http::Uri,
    /// The subscribers' endpoints (`--subscribe-url`, or the endpoint alone): subscriber
    /// `i` uses the `i % len`-th.
    pub targets: Vec<Target>,
    /// The publishers' endpoints (`--publish-url`, or the endpoint alone): publisher
    /// `p` uses the `p % len`-th.
    pub publish_endpoints: Vec<http::Uri>,
    /// With an `https://` endpoint: the rustls configurations.
    pub tls: Option<wire::Tls>,
    /// `--source-ip`: the local addresses, round-robin (empty: the system's choice).
    pub sources: Vec<std::net::IpAddr>,
    /// The shared pools, one per source address (one when there is none).
    pub pools: Vec<wire::Pool>,
    /// `--http2`: a pool per session, offering HTTP/2.
    pub http2: bool,
    pub http_timeout: Duration,
    pub poll_timeout: Duration,
    pub counters: Counters,
    pub latencies: Latencies,
    pub per_response: PerResponse,
    /// When the last delivery arrived (wall-clock µs, as [`Run::micros`]).
    pub last_delivery: AtomicU64,
    pub channel_count: usize,
    pub published_per_channel: Vec<AtomicU64>,
    pub ready: AtomicUsize,
    pub ready_notify: Notify,
    /// The last failure of a session's setup, to say why the setup gives up.
    pub last_error: std::sync::Mutex<Option<String>>,
    /// Broadcast mode: when each broadcast reached this process's subscribers.
    pub broadcasts: Option<stats::Broadcasts>,
}

impl Run {
    /// The connections session `i` uses: with `--http2` (over TLS), a pool of its own
    /// that offers HTTP/2; otherwise the shared pool of its source address.
    pub fn session_pool(&self, i: usize) -> wire::Pool {
        match &self.tls {
            Some(tls) if self.http2 => {
                wire::Pool::Tls(wire::tls_pool_from(tls.http2.clone(), self.source(i)))
            }
            _ => self.pools[i % self.pools.len()].clone(),
        }
    }

    /// The local address of session `i`'s connections (`--source-ip`), if any.
    pub fn source(&self, i: usize) -> Option<std::net::IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }

    /// Where publisher `p` publishes.
    pub fn publish_endpoint(&self, p: usize) -> &http::Uri {
        &self.publish_endpoints[p % self.publish_endpoints.len()]
    }

    /// Where subscriber `i` connects.
    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }

    /// Records why a session could not be set up (the last one is reported).
    pub fn note_error(&self, why: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Wall-clock microseconds (since the Unix epoch): the send-time stamp and the
    /// receive clock, the same in every process of the machine, so that a message
    /// published by one load-tool process can be timed by another.
    pub fn micros(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    stats::raise_fd_limit();
    let broadcast = args.mode == "broadcast";
    // Broadcast mode: every subscriber on /bench/0.
    let channels = if broadcast { 1 } else { args.channels.max(1) };
    let endpoint = wire::endpoint(&args.url)?;
    let tls = match endpoint.scheme_str() {
        Some("https") => Some(wire::Tls::new(&args.tls.options()?)?),
        _ => None,
    };
    let websocket = args.transport == "websocket";
    let mut targets = Vec::new();
    let subscribe_urls = if args.subscribe_urls.is_empty() {
        std::slice::from_ref(&args.url)
    } else {
        &args.subscribe_urls[..]
    };
    for url in subscribe_urls {
        let endpoint = wire::endpoint(url)?;
        if endpoint.scheme_str() != run_scheme(&args.url) {
            return Err(format!("{url}: the same scheme as {} is required", args.url).into());
        }
        let socket_url = if websocket {
            ws::socket_url(&endpoint)?
        } else {
            String::new()
        };
        targets.push(Target {
            endpoint,
            socket_url,
        });
    }
    let mut publish_endpoints = Vec::new();
    for url in &args.publish_urls {
        publish_endpoints.push(wire::endpoint(url)?);
    }
    if publish_endpoints.is_empty() {
        publish_endpoints.push(endpoint.clone());
    }
    let sources: Vec<std::net::IpAddr> = args.source_ips.iter().flatten().copied().collect();
    let pools = if sources.is_empty() {
        vec![wire::pool(tls.as_ref(), None)]
    } else {
        sources
            .iter()
            .map(|s| wire::pool(tls.as_ref(), Some(*s)))
            .collect()
    };
    let run = Arc::new(Run {
        endpoint,
        targets,
        publish_endpoints,
        sources,
        pools,
        http2: args.http2,
        tls,
        http_timeout: args.timeout.0,
        poll_timeout: args.poll_timeout.0,
        counters: Counters::default(),
        latencies: Latencies::new(),
        per_response: PerResponse::new(),
        last_delivery: AtomicU64::new(0),
        channel_count: channels,
        published_per_channel: (0..channels).map(|_| AtomicU64::new(0)).collect(),
        ready: AtomicUsize::new(0),
        ready_notify: Notify::new(),
        last_error: std::sync::Mutex::new(None),
        broadcasts: broadcast.then(stats::Broadcasts::default),
    });
    // One handshake first on every endpoint: a server that cannot be reached, or is not
    // a Bayeux server, is reported at once with the cause, not after the setup time.
    let probe_auth = (args.publish_via == "workbin")
        .then(|| bayeux::client::basic_authorization("bench-agent-0", "bench"));
    let probe_headers = wire::headers(probe_auth.as_deref());
    let mut probed = vec![&run.endpoint];
    if args.subscribers > 0 || args.stalled > 0 {
        probed.extend(run.targets.iter().map(|t| &t.endpoint));
    }
    if args.publishers > 0 && args.publish_via == "bayeux" {
        probed.extend(run.publish_endpoints.iter());
    }
    for (i, endpoint) in probed.iter().enumerate() {
        if i == 0 || !probed[..i].contains(endpoint) {
            probe(&run, endpoint, &probe_headers).await?;
        }
    }
    let cpu_before = stats::own_cpu();
    if args.mode != "pubsub" && !broadcast {
        return handshake_mode(&args, run, cpu_before).await;
    }
    let workbin = args.publish_via == "workbin";
    let base = args
        .workbin_base
        .clone()
        .unwrap_or_else(|| base_of(&run.publish_endpoints[0].to_string()));

    // Subscribers, optionally ramped up.
    let mut subscribers = JoinSet::new();
    let started = Instant::now();
    let step = if args.subscribers > 0 {
        args.ramp_up.0 / args.subscribers as u32
    } else {
        Duration::ZERO
    };
    let sessions = args.subscribers + args.stalled;
    for i in 0..sessions {
        let c = i % channels;
        let (channel, auth) = if workbin {
            (
                "/v2/me/emails".to_string(),
                Some(bayeux::client::basic_authorization(
                    &format!("bench-agent-{c}"),
                    "bench",
                )),
            )
        } else {
            (format!("/bench/{c}"), None)
        };
        let run = run.clone();
        match (i < args.subscribers, websocket) {
            (true, false) => subscribers.spawn(session::subscriber(run, i, channel, auth)),
            (true, true) => subscribers.spawn(ws::subscriber(run, i, channel, auth)),
            (false, false) => subscribers.spawn(session::stalled(run, i, channel, auth)),
            (false, true) => subscribers.spawn(ws::stalled(run, i, channel, auth)),
        };
        if !step.is_zero() {
            tokio::time::sleep(step).await;
        }
    }
    // The setup gives up when no subscriber was established for the request timeout
    // (and a margin for the WebSocket upgrade), and says why.
    let stall = run.http_timeout * 2 + Duration::from_secs(1);
    let (mut progressed, mut last) = (Instant::now(), 0);
    loop {
        let ready = run.ready.load(Ordering::Relaxed);
        if ready >= sessions {
            break;
        }
        if ready > last {
            (progressed, last) = (Instant::now(), ready);
        } else if progressed.elapsed() > stall {
            let why = run
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "no error recorded".to_string());
            return Err(format!(
                "only {ready} of {sessions} subscribers were established, none in the last {}; last error: {why}",
                show_duration(stall)
            )
            .into());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), run.ready_notify.notified()).await;
    }
    let setup = started.elapsed();
    let handshakes_per_sec = sessions as f64 / setup.as_secs_f64().max(1e-9);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{sessions}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if broadcast {
        return broadcast_mode(&args, run, setup, cpu_before, subscribers).await;
    }
    if !args.json {
        eprintln!(
            "bench: {} subscribers ({}) established in {:.2} s ({:.0} handshakes/s)",
            sessions,
            args.transport,
            setup.as_secs_f64(),
            handshakes_per_sec
        );
    }

    // Publishers.
    let publish_for = args.duration.0;
    let until = tokio::time::Instant::now() + publish_for;
    let via = if workbin {
        let auth = args.auth.as_deref().map(|a| {
            let (u, p) = a.split_once(':').unwrap_or((a, ""));
            bayeux::client::basic_authorization(u, p)
        });
        Via::Workbin { base, auth }
    } else {
        Via::Bayeux
    };
    let batch = if workbin { 1 } else { args.batch.max(1) };
    let interval = if args.rate > 0.0 && args.publishers > 0 {
        Duration::from_secs_f64(args.publishers as f64 * batch as f64 / args.rate)
    } else {
        Duration::ZERO
    };
    let payload = "x".repeat(args.payload);
    let mut publishers = JoinSet::new();
    let publish_start = Instant::now();
    for p in 0..args.publishers {
        publishers.spawn(publisher::publisher(
            run.clone(),
            p as u32,
            via.clone(),
            interval,
            until,
            batch,
            payload.clone(),
        ));
    }
    let progress = (!args.json).then(|| tokio::spawn(progress(run.clone())));
    while publishers.join_next().await.is_some() {}
    if args.publishers == 0 {
        // Idle sessions, held for the run's duration (to measure what they cost).
        tokio::time::sleep_until(until).await;
    }
    let publish_seconds = publish_start.elapsed().as_secs_f64();
    let publish_start_us = run
        .micros()
        .saturating_sub(publish_start.elapsed().as_micros() as u64);

    // Drain: wait until every expected delivery arrived, or the drain time passed.
    let expected = expected_deliveries(&run, args.subscribers, channels);
    let drain_until = Instant::now() + args.drain.0;
    while Instant::now() < drain_until {
        let unique =
            Counters::get(&run.counters.delivered) - Counters::get(&run.counters.duplicates);
        if unique >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(p) = progress {
        p.abort();
    }
    subscribers.abort_all();

    let c = &run.counters;
    let delivered = Counters::get(&c.delivered);
    let duplicates = Counters::get(&c.duplicates);
    let published = Counters::get(&c.published);
    let report = Report {
        url: args.url.clone(),
        mode: format!("pubsub via {}", args.publish_via),
        transport: args.transport.clone(),
        subscribers: args.subscribers,
        stalled: args.stalled,
        channels,
        publishers: args.publishers,
        publish_seconds,
        published,
        published_per_sec: published as f64 / publish_seconds.max(1e-9),
        delivered,
        delivered_per_sec: delivered as f64 / publish_seconds.max(1e-9),
        last_delivery_seconds: (run.last_delivery.load(Ordering::Relaxed) as f64
            - publish_start_us as f64)
            .max(0.0)
            / 1e6,
        expected_deliveries: expected,
        lost: expected.saturating_sub(delivered - duplicates),
        duplicates,
        latency_ms: Percentiles::of(&run.latencies.total()),
        messages_per_response: run.per_response.summary(),
        handshakes: Counters::get(&c.handshakes),
        handshakes_per_sec,
        setup_seconds: setup.as_secs_f64(),
        rehandshakes: Counters::get(&c.rehandshakes),
        http_errors: Counters::get(&c.http_errors),
        bayeux_errors: Counters::get(&c.bayeux_errors),
        tool_cpu_seconds: (stats::own_cpu() - cpu_before).as_secs_f64(),
        ..Report::default()
    };
    report.print(args.json)
}

/// The scheme of `url` as the endpoint will have it (`ws` taken as `http`).
fn run_scheme(url: &str) -> Option<&'static str> {
    match wire::endpoint(url).ok()?.scheme_str()? {
        "https" => Some("https"),
        _ => Some("http"),
    }
}

/// Opens one session at `endpoint` and closes it, within the request timeout; fails with
/// one line that names the URL and the cause when that cannot be done.
async fn probe(run: &Run, endpoint: &http::Uri, headers: &http::HeaderMap) -> Result<(), String> {
    async fn post(
        run: &Run,
        endpoint: &http::Uri,
        pool: &wire::Pool,
        headers: &http::HeaderMap,
        body: String,
    ) -> Result<bytes::Bytes, String> {
        let url = endpoint.to_string();
        let body = bytes::Bytes::from(body);
        let exchange = async {
            match pool {
                wire::Pool::Plain(pool) => pool.post(endpoint, headers, None, body).await,
                wire::Pool::Tls(pool) => pool.post(endpoint, headers, None, body).await,
            }
        };
        tokio::time::timeout(run.http_timeout, exchange)
            .await
            .map_err(|_| {
                format!(
                    "{url}: no answer within {}",
                    show_duration(run.http_timeout)
                )
            })?
            .map_err(|e| crate::errors::client(&url, &e))
    }
    let url = endpoint.to_string();
    // The connections a session would use (with --http2, one of its own).
    let pool = run.session_pool(0);
    let reply = post(run, endpoint, &pool, headers, wire::handshake_body()).await?;
    let not_bayeux = || {
        format!(
            "{url} did not answer the handshake with Bayeux messages but {}",
            crate::errors::excerpt(&reply)
        )
    };
    let replies: Vec<serde_json::Value> =
        serde_json::from_slice(&reply).map_err(|_| not_bayeux())?;
    let first = replies.first().ok_or_else(not_bayeux)?;
    let Some(client_id) = first["clientId"]
        .as_str()
        .filter(|_| first["successful"] == true)
    else {
        return Err(format!(
            "{url} refused the handshake: {}",
            first["error"].as_str().unwrap_or("no reason given")
        ));
    };
    let _ = post(
        run,
        endpoint,
        &pool,
        headers,
        wire::disconnect_body(client_id),
    )
    .await;
    Ok(())
}

/// Deliveries expected: each successful publish on channel `c` reaches every subscriber
/// of `c` (subscribers are spread round-robin).
fn expected_deliveries(run: &Run, subscribers: usize, channels: usize) -> u64 {
    (0..channels)
        .map(|c| {
            let subs = (subscribers / channels + usize::from(c < subscribers % channels)) as u64;
            run.published_per_channel[c].load(Ordering::Relaxed) * subs
        })
        .sum()
}

/// `http://host:port` from `http://host:port/path`.
fn base_of(url: &str) -> String {
    match url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
    {
        Some(end) => url[..end].to_string(),
        None => url.to_string(),
    }
}

/// A progress line on stderr every second.
async fn progress(run: Arc<Run>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_pub, mut last_del) = (0, 0);
    let mut seconds = 0;
    loop {
        tick.tick().await;
        seconds += 1;
        let c = &run.counters;
        let (p, d) = (Counters::get(&c.published), Counters::get(&c.delivered));
        let window = Percentiles::of(&run.latencies.take_window());
        eprintln!(
            "[{seconds:>3}s] published {:>8}/s  delivered {:>9}/s  p99 {:>8.2} ms  errors http {} bayeux {}",
            p - last_pub,
            d - last_del,
            window.p99,
            Counters::get(&c.http_errors),
            Counters::get(&c.bayeux_errors)
        );
        (last_pub, last_del) = (p, d);
    }
}

/// Opens and closes sessions as fast as `concurrency` workers can for `duration`. In
/// churn mode each session also subscribes and connects once, and every other one
/// vanishes without a disconnect, to be expired by the server.
async fn handshake_mode(
    args: &BenchArgs,
    run: Arc<Run>,
    cpu_before: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let until = Instant::now() + args.duration.0;
    let start = Instant::now();
    let churn = args.mode == "churn";
    let mut workers = JoinSet::new();
    for w in 0..args.concurrency.max(1) {
        let run = run.clone();
        workers.spawn(async move {
            let headers = http::HeaderMap::new();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let Some(s) = session::handshake(&run, &run.endpoint, w, &headers).await else {
                    continue;
                };
                let (url, jar, timeout) = (&run.endpoint, Some(&s.cookies), run.http_timeout);
                let pool = &run.pools[w % run.pools.len()];
                if churn {
                    let sub = wire::subscribe_body(&s.client_id, &format!("/churn/{}", w % 10));
                    let _ = wire::post(pool, url, sub, &headers, jar, timeout).await;
                    let connect = wire::connect_body(&s.client_id, true);
                    let _ = wire::post(pool, url, connect, &headers, jar, timeout).await;
                    if n.is_multiple_of(2) {
                        continue; // vanish: the server expires it
                    }
                }
                let bye = wire::disconnect_body(&s.client_id);
                let _ = wire::post(pool, url, bye, &headers, jar, timeout).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let c = &run.counters;
    let handshakes = Counters::get(&c.handshakes);
    let report = Report {
        url: args.url.clone(),
        mode: args.mode.clone(),
        transport: "long-polling".to_string(),
        publish_seconds: secs,
        handshakes,
        handshakes_per_sec: handshakes as f64 / secs.max(1e-9),
        http_errors: Counters::get(&c.http_errors),
        bayeux_errors: Counters::get(&c.bayeux_errors),
        tool_cpu_seconds: (stats::own_cpu() - cpu_before).as_secs_f64(),
        ..Report::default()
    };
    report.print(args.json)
}

/// Broadcast mode, once the subscribers are established: with a publisher, sends
/// `--broadcasts` messages to `/bench/0`, `--broadcast-interval` apart, each stamped
/// with the wall-clock time; waits for every local subscriber to receive each (or for
/// `--duration` to pass), then reports when each broadcast reached them.
async fn broadcast_mode(
    args: &BenchArgs,
    run: Arc<Run>,
    setup: Duration,
    cpu_before: Duration,
    mut subscribers: JoinSet<()>,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let count = args.broadcasts.max(1);
    let expected = count * args.subscribers as u64;
    let deadline = started
        + args
            .duration
            .0
            .max(args.broadcast_interval.0 * count as u32);
    let mut sent = Vec::new();
    if args.publishers > 0 {
        sent = publisher::broadcasts(
            run.clone(),
            count,
            args.broadcast_interval.0,
            "x".repeat(args.payload),
        )
        .await;
    }
    // Every broadcast at every subscriber, or the deadline (and at least the drain
    // after the last broadcast).
    let drain_until = Instant::now() + args.drain.0;
    loop {
        let delivered = Counters::get(&run.counters.delivered);
        let now = Instant::now();
        if delivered >= expected || (now >= deadline && now >= drain_until) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    subscribers.abort_all();
    let c = &run.counters;
    let delivered = Counters::get(&c.delivered);
    let duplicates = Counters::get(&c.duplicates);
    let broadcasts = run
        .broadcasts
        .as_ref()
        .map(|b| b.report(&sent, args.subscribers))
        .unwrap_or_default();
    let reach: Vec<f64> = broadcasts
        .iter()
        .filter(|b| b.received == args.subscribers as u64 && args.subscribers > 0)
        .filter_map(|b| b.reach_ms)
        .collect();
    let publish_seconds = started.elapsed().as_secs_f64();
    let report = Report {
        url: args.url.clone(),
        mode: "broadcast".to_string(),
        transport: args.transport.clone(),
        subscribers: args.subscribers,
        stalled: args.stalled,
        channels: 1,
        publishers: args.publishers.min(1),
        publish_seconds,
        published: sent.len() as u64,
        published_per_sec: sent.len() as f64 / publish_seconds.max(1e-9),
        delivered,
        delivered_per_sec: delivered as f64 / publish_seconds.max(1e-9),
        expected_deliveries: expected,
        lost: expected.saturating_sub(delivered - duplicates),
        duplicates,
        latency_ms: Percentiles::of(&run.latencies.total()),
        messages_per_response: run.per_response.summary(),
        handshakes: Counters::get(&c.handshakes),
        handshakes_per_sec: (args.subscribers + args.stalled) as f64
            / setup.as_secs_f64().max(1e-9),
        setup_seconds: setup.as_secs_f64(),
        rehandshakes: Counters::get(&c.rehandshakes),
        http_errors: Counters::get(&c.http_errors),
        bayeux_errors: Counters::get(&c.bayeux_errors),
        tool_cpu_seconds: (stats::own_cpu() - cpu_before).as_secs_f64(),
        broadcast_reach_ms: stats::median(reach),
        broadcasts,
        ..Report::default()
    };
    report.print(args.json)
}

//! A wrong-password flood against a server with a users file of Argon2 secrets, and
//! what a legitimate agent's handshake costs meanwhile.
//!
//! Three phases, side by side in one run: no attack; four connections from one address
//! guessing as fast as answered (batches of 200 handshakes, then one per request); and
//! the same spread over 200 loopback addresses (127.0.1.x), which the per-address bound
//! cannot stop. For each: the attacker's answers per second, the slow checks the server
//! ran for it, and the latency of fresh sign-ins (a slow Argon2 check each) from
//! 127.0.0.2: median and p90 of the samples.
//!
//! `cargo bench --bench auth_flood` (optimised; about a minute). Set `AUTH_FLOOD_SECS`
//! for longer phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bayeux::client::basic_authorization;
use bayeux::server::ServerConfig;
use bayeux::workbin::{Access, DemoApp, UserDirectory, WorkbinConfig, hash_password};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::TcpSocket;

const AGENTS: usize = 2 + 3 * SIGN_INS;
const SIGN_INS: usize = 15;

/// One request of `batch` handshakes from `from`; the first reply's `successful`, and
/// its error.
async fn handshake(
    from: &str,
    addr: SocketAddr,
    auth: &str,
    batch: usize,
) -> Option<(bool, String)> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from.parse().ok()?, 0)).ok()?;
    let tcp = socket.connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let one = json!({"channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["long-polling"]});
    let body = Value::Array(vec![one; batch]).to_string();
    let request = http::Request::post("/cometd")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let response = send.send_request(request).await.ok()?;
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    let replies: Vec<Value> = serde_json::from_slice(&bytes).ok()?;
    let first = replies.first()?;
    Some((
        first["successful"] == true,
        first["error"].as_str().unwrap_or("").to_string(),
    ))
}

/// A sign-in as a real client does it: a refusal for now (`503`: the checks are busy)
/// is tried again after the advised interval (1 s); returns the time to success and
/// how many tries it took.
async fn sign_in(addr: SocketAddr, auth: &str) -> (f64, u32) {
    let t = Instant::now();
    for tries in 1..=20 {
        match handshake("127.0.0.2", addr, auth, 1).await {
            Some((true, _)) => return (t.elapsed().as_secs_f64() * 1000.0, tries),
            Some((false, error)) if error.starts_with("503") => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => panic!("the agent's sign-in failed: {other:?}"),
        }
    }
    panic!("the agent could not sign in in 20 tries");
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Runs one phase: the attack (if any) for `secs`, fresh sign-ins meanwhile.
async fn phase(
    name: &str,
    addr: SocketAddr,
    directory: &UserDirectory,
    agents: &mut std::ops::Range<usize>,
    attackers: Option<Vec<String>>,
    secs: u64,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let checks_before = directory.check_stats().slow_checks;
    let mut tasks = Vec::new();
    for (w, from) in attackers.iter().flatten().enumerate() {
        let (stop, answers, from) = (stop.clone(), answers.clone(), from.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let user = if (w + n).is_multiple_of(2) {
                    "agent0"
                } else {
                    "agent1"
                };
                let batch = if n < 2 { 200 } else { 1 };
                let auth = basic_authorization(user, "guess");
                if handshake(&from, addr, &auth, batch).await.is_some() {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut retries = 0;
    // A few fresh sign-ins, spread over the phase.
    for _ in 0..SIGN_INS {
        let Some(i) = agents.next() else { break };
        let auth = basic_authorization(&format!("agent{i}"), &format!("pw{i}"));
        let (ms, tries) = sign_in(addr, &auth).await;
        latencies.push(ms);
        retries += tries - 1;
        tokio::time::sleep(Duration::from_millis(secs * 1000 / SIGN_INS as u64 / 2)).await;
    }
    let rest = Duration::from_secs(secs).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = latencies.len();
    println!(
        "{name:<34} attacker answers/s {:>8.0}   slow checks for it {:>5}   sign-ins {n:>2}: median {:>6.1} ms, p90 {:>6.1} ms, retries {retries}",
        answers.load(Ordering::Relaxed) as f64 / elapsed,
        directory.check_stats().slow_checks - checks_before - n as u64,
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.9),
    );
}

fn main() {
    let secs: u64 = std::env::var("AUTH_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut text = String::new();
        for i in 0..AGENTS {
            text.push_str(&format!(
                "agent{i}:{}:agent\n",
                hash_password(&format!("pw{i}")).unwrap()
            ));
        }
        let access = Access::checked(UserDirectory::parse(&text).unwrap());
        let directory = access.directory().unwrap().clone();
        let app = DemoApp::new(
            ServerConfig::default(),
            access,
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listening.local_addr();
        // agent0 and agent1 are the attacked names; fresh sign-ins use the others.
        let mut agents = 2..AGENTS;
        println!("auth_flood: {secs} s per phase, Argon2 users, default limits");
        phase("no attack", addr, &directory, &mut agents, None, secs).await;
        let one = vec!["127.0.0.1".to_string(); 4];
        phase(
            "4 connections, one address",
            addr,
            &directory,
            &mut agents,
            Some(one),
            secs,
        )
        .await;
        let many: Vec<String> = (1..=200).map(|i| format!("127.0.1.{i}")).collect();
        phase(
            "200 addresses, one at a time each",
            addr,
            &directory,
            &mut agents,
            Some(many),
            secs,
        )
        .await;
        listening.shutdown().await.unwrap();
    });
}

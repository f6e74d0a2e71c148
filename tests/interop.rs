//! Interoperability with real peers: the official CometD JavaScript client, Faye's Node
//! client and aiocometd against our server, each over WebSocket and over long-polling,
//! and the two Node clients again over TLS (https, wss); our client against Faye's and
//! CometD's Node servers; Salesforce's streaming clients (aiosfstream-ng for Python,
//! jsforce for Node) against durable channels. Needs Node (and `npm ci` in
//! tests/interop) and a Python with aiocometd-ng and aiosfstream-ng; run with `cargo test --features interop --test interop` (`.ci/run` sets
//! it all up).
#![cfg(feature = "interop")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bayeux::server::{Listening, ServerConfig, TlsConfig};
use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::time::timeout;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Our server (the demo app, so the workbin steps work too) with a `/service/echo`
/// listener that answers each sender alone.
async fn our_server() -> (DemoApp, Listening) {
    our_server_with(None).await
}

/// A test's certificate directory, removed when the test ends.
struct CertDir(PathBuf);

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// [`our_server`] over TLS (https, wss, and h2 through ALPN) with a certificate for
/// 127.0.0.1 issued by a test CA generated for this run, and the directory of that CA's
/// `ca.pem`: what a peer is told to trust (see [`run_steps_trusting`]).
async fn our_tls_server(tag: &str) -> (DemoApp, Listening, CertDir) {
    let pki = common::certs::TestPki::new();
    let dir = CertDir(pki.write_to(&common::certs::temp_dir(tag)));
    let tls = TlsConfig::from_pem(pki.server.cert.as_bytes(), pki.server.key.as_bytes()).unwrap();
    let (app, listening) = our_server_with(Some(tls)).await;
    assert!(listening.url("/cometd").starts_with("https://127.0.0.1:"));
    (app, listening, dir)
}

async fn our_server_with(tls: Option<TlsConfig>) -> (DemoApp, Listening) {
    let config = ServerConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_tls(tls);
    let app = DemoApp::new(config, Access::demo(), WorkbinConfig::default(), "/cometd");
    let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let server = app.server().clone();
    let mut echo = server.subscribe("/service/echo").unwrap();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(sender) = m.client_id.as_deref() {
                let _ = server
                    .deliver(sender, "/service/echo", json!({"echo": m.data}))
                    .await;
            }
        }
    });
    (app, listening)
}

/// The steps the CometD JavaScript client script reports, in order (both transport modes).
const COMETD_STEPS: &[&str] = &[
    "handshake",
    "transport",
    "subscribe",
    "publish reply",
    "receive",
    "wildcard *",
    "wildcard **",
    "batch in order",
    "batch replies",
    "receive before unsubscribe",
    "unsubscribe reply",
    "unsubscribe stops delivery",
    "service publish reply",
    "service answer to sender",
    "service message not broadcast",
    "workbin POST",
    "workbin notifications",
    "ack extension handshake",
    "ack extension delivery",
    "ack extension batches",
    "ack re-send: handshake through the proxy",
    "ack re-send: every message once, in order",
    "ack re-send: publish replies",
    "ack re-send: the proxy cut a connect response",
    "ack re-send: the cut batch is sent again",
    "ack re-send: batches",
    "publish replies",
    "disconnect",
];

/// The steps of the CometD JavaScript client with a replay extension written from
/// Salesforce's wire format (`cometd_replay_client.mjs`), in order.
const COMETD_REPLAY_STEPS: &[&str] = &[
    "replay handshake",
    "replay -2: history in order with replay ids",
    "replay -2: then live",
    "extension tracked the last replay id",
    "replay after an id",
    "no replay extension: live only",
    "unknown replay id refused",
    "disconnect",
];

/// The demo app with its `/v2/**` channels durable (replay on), trusting `ext.userId`
/// (the CometD client's WebSocket transport cannot send an `Authorization` header).
async fn our_replaying_server() -> (DemoApp, Listening) {
    let config = ServerConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_replay(Some(bayeux::server::ReplayConfig::new(vec![
            bayeux::protocol::ChannelName::parse("/v2/**").unwrap(),
        ])));
    let access = Access::demo().trusting_ext_user_id();
    let app = DemoApp::new(config, access, WorkbinConfig::default(), "/cometd");
    let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (app, listening)
}

/// The steps Faye's Node client script reports over WebSocket, in order: the socket,
/// then the transport in use after the handshake and at the end, and what went over the
/// wire (handshake over long-polling, everything after it over the socket).
const FAYE_WEBSOCKET_STEPS: &[&str] = &[
    "socket opened",
    "handshake and subscribe",
    "transport after the handshake",
    "publish reply",
    "receive",
    "wildcard *",
    "wildcard **",
    "batch replies",
    "batch in order",
    "receive before unsubscribe",
    "unsubscribe stops delivery",
    "workbin POST",
    "workbin notifications",
    "transport at the end",
    "transport on the wire",
    "disconnect",
    "socket closed after disconnect",
];

/// The steps Faye's Node client script reports with WebSocket disabled, in order.
const FAYE_LONG_POLLING_STEPS: &[&str] = &[
    "handshake and subscribe",
    "transport after the handshake",
    "publish reply",
    "receive",
    "wildcard *",
    "wildcard **",
    "batch replies",
    "batch in order",
    "receive before unsubscribe",
    "unsubscribe stops delivery",
    "workbin POST",
    "workbin notifications",
    "transport at the end",
    "transport on the wire",
    "disconnect",
];

/// The steps the aiocometd script reports over WebSocket, in order.
const AIOCOMETD_WEBSOCKET_STEPS: &[&str] = &[
    "handshake",
    "transport",
    "subscribe",
    "publish reply",
    "receive",
    "wildcard *",
    "wildcard **",
    "messages in order",
    "unsubscribe stops delivery",
    "workbin POST",
    "workbin notifications",
    "transport at the end",
    "disconnect",
];

/// The steps the aiocometd script reports over long-polling, in order.
const AIOCOMETD_LONG_POLLING_STEPS: &[&str] = &[
    "handshake",
    "transport",
    "subscribe",
    "publish reply",
    "receive",
    "wildcard *",
    "wildcard **",
    "messages in order",
    "unsubscribe stops delivery",
    "workbin POST",
    "workbin notifications",
    "transport at the end",
    "disconnect",
];

/// What is wrong with the step names `got` that `peer` reported, against `expected`
/// (exact, in order): each missing, unexpected or repeated step, or else the order.
fn step_list_problems(peer: &str, expected: &[&str], got: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for name in expected {
        match got.iter().filter(|g| g == name).count() {
            0 => problems.push(format!("{peer} / {name}: step missing")),
            1 => {}
            n => problems.push(format!("{peer} / {name}: step reported {n} times")),
        }
    }
    for name in got {
        if !expected.contains(&name.as_str()) {
            problems.push(format!("{peer} / {name}: unexpected step"));
        }
    }
    if problems.is_empty() && got.iter().map(String::as_str).ne(expected.iter().copied()) {
        problems.push(format!(
            "{peer}: steps out of order: expected {expected:?}, got {got:?}"
        ));
    }
    problems
}

/// Runs a peer script and checks what it reports: exactly the steps `expected`, in that
/// order, all from `peer` and all passed, then `done`. A failure names the peer and the
/// step, with what was expected against what came back.
async fn run_steps(program: &str, args: &[&str], peer: &str, expected: &[&str], app: &DemoApp) {
    run_steps_trusting(None, program, args, peer, expected, app).await;
}

/// [`run_steps`] with a Node peer that trusts `ca_dir`'s `ca.pem` besides its own roots,
/// through `NODE_EXTRA_CA_CERTS`: Node adds it to the default store that `https`, `tls`
/// and `fetch` verify with, so the peers' libraries need no option of their own.
/// Certificate checking stays on (`NODE_TLS_REJECT_UNAUTHORIZED` is removed).
async fn run_steps_trusting(
    ca_dir: Option<&Path>,
    program: &str,
    args: &[&str],
    peer: &str,
    expected: &[&str],
    app: &DemoApp,
) {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = ca_dir {
        command
            .env("NODE_EXTRA_CA_CERTS", dir.join("ca.pem"))
            .env_remove("NODE_TLS_REJECT_UNAUTHORIZED");
    }
    let output = timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{peer}: {program} {args:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (see the README's interop section)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let mut done = false;
    let mut client_ids = Vec::new();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v.get("done").is_some() {
            done = true;
        } else if let Some(ids) = v.get("clientIds").and_then(Value::as_array) {
            client_ids.extend(ids.iter().filter_map(Value::as_str).map(str::to_string));
        } else if let Some(step) = v.get("step") {
            let step = step
                .as_str()
                .map_or_else(|| step.to_string(), str::to_string);
            if v["peer"] != peer {
                problems.push(format!("{peer} / {step}: reported by peer {}", v["peer"]));
            }
            if v["ok"] != true {
                problems.push(format!(
                    "{peer} / {step}: expected {}, got {}",
                    v["expected"], v["got"]
                ));
            }
            steps.push(step);
        }
    }
    problems.extend(step_list_problems(peer, expected, &steps));
    if !done || !output.status.success() {
        problems.push(format!(
            "{peer}: {program} {args:?} did not complete (done: {done}, exit {:?})",
            output.status
        ));
    }
    assert!(
        problems.is_empty(),
        "interop failures:\n{}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        problems.join("\n")
    );
    // Disconnect ended the peer's sessions on our side.
    for id in client_ids {
        common::eventually("the peer's sessions to end", || {
            app.server().session_info(&id).is_none()
        })
        .await;
    }
}

#[test]
fn step_lists_are_checked_exactly() {
    let expected = ["a", "b", "c"];
    let got = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert!(step_list_problems("p", &expected, &got(&["a", "b", "c"])).is_empty());
    assert_eq!(
        step_list_problems("p", &expected, &got(&["a", "c"])),
        ["p / b: step missing"]
    );
    assert_eq!(
        step_list_problems("p", &expected, &got(&["a", "b", "c", "deadline"])),
        ["p / deadline: unexpected step"]
    );
    assert_eq!(
        step_list_problems("p", &expected, &got(&["a", "B", "c"])),
        ["p / b: step missing", "p / B: unexpected step"]
    );
    assert_eq!(
        step_list_problems("p", &expected, &got(&["a", "b", "b", "c"])),
        ["p / b: step reported 2 times"]
    );
    assert_eq!(
        step_list_problems("p", &expected, &got(&["b", "a", "c"])),
        [r#"p: steps out of order: expected ["a", "b", "c"], got ["b", "a", "c"]"#]
    );
}

/// Long-polling only; both CometD runs also take the ack extension through a proxy that
/// cuts one connect response (see `cut_proxy.mjs`).
#[tokio::test]
async fn cometd_javascript_client_long_polling() {
    let (app, l) = our_server().await;
    run_steps(
        "node",
        &[
            "cometd_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "long-polling",
        ],
        "cometd-js (long-polling)",
        COMETD_STEPS,
        &app,
    )
    .await;
}

/// Salesforce's replay extension, as a client other than ours speaks it: the CometD
/// JavaScript client with a replay extension written in the test from the wire format,
/// over long-polling and over its default transports (WebSocket).
#[tokio::test]
async fn cometd_javascript_client_with_a_replay_extension() {
    for (mode, peer) in [
        ("long-polling", "cometd-js replay (long-polling)"),
        ("default", "cometd-js replay (default transports)"),
    ] {
        let (app, l) = our_replaying_server().await;
        run_steps(
            "node",
            &[
                "cometd_replay_client.mjs",
                &l.url("/cometd"),
                &l.url(""),
                mode,
            ],
            peer,
            COMETD_REPLAY_STEPS,
            &app,
        )
        .await;
    }
}

/// The client's default transports: WebSocket first, which our server offers.
#[tokio::test]
async fn cometd_javascript_client_default_transports_use_websocket() {
    let (app, l) = our_server().await;
    run_steps(
        "node",
        &[
            "cometd_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "default",
        ],
        "cometd-js (default transports)",
        COMETD_STEPS,
        &app,
    )
    .await;
}

/// Faye's default: handshake over long-polling, then WebSocket, which our server offers.
#[tokio::test]
async fn faye_node_client_websocket() {
    let (app, l) = our_server().await;
    run_steps(
        "node",
        &[
            "faye_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "websocket",
        ],
        "faye (node client, websocket)",
        FAYE_WEBSOCKET_STEPS,
        &app,
    )
    .await;
}

/// Faye with WebSocket disabled (`client.disable('websocket')`).
#[tokio::test]
async fn faye_node_client_long_polling() {
    let (app, l) = our_server().await;
    run_steps(
        "node",
        &[
            "faye_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "long-polling",
        ],
        "faye (node client, long-polling)",
        FAYE_LONG_POLLING_STEPS,
        &app,
    )
    .await;
}

/// The premise of the TLS runs below: Node verifies our certificate, and accepts it only
/// because `NODE_EXTRA_CA_CERTS` names the test CA. Without it, an https request to our
/// server fails on the certificate; with it, the same request gets an HTTP answer.
#[tokio::test]
async fn node_trusts_our_tls_server_through_the_test_ca_only() {
    let (_app, l, ca_dir) = our_tls_server("interop-node-ca").await;
    // One https request, as cometd-nodejs-client and Faye make theirs (node:https); prints
    // the status, or the error code.
    let probe = "require('node:https').get(process.argv[1], (res) => { \
                 console.log('status ' + res.statusCode); res.resume(); }) \
                 .on('error', (e) => console.log('error ' + e.code));";
    let run = async |trust: bool| {
        let mut command = Command::new("node");
        command
            .args(["-e", probe, &l.url("/cometd")])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .env_remove("NODE_TLS_REJECT_UNAUTHORIZED")
            .env_remove("NODE_EXTRA_CA_CERTS");
        if trust {
            command.env("NODE_EXTRA_CA_CERTS", ca_dir.0.join("ca.pem"));
        }
        let out = timeout(Duration::from_secs(20), command.output())
            .await
            .expect("node's https request did not finish within 20 s")
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "node -e: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    assert_eq!(
        run(false).await,
        "error UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        "without the test CA"
    );
    let trusted = run(true).await;
    assert!(
        trusted.starts_with("status "),
        "with NODE_EXTRA_CA_CERTS: {trusted}"
    );
}

/// The CometD JavaScript client over https, long-polling only: the whole flow of
/// [`cometd_javascript_client_long_polling`], workbin POST (Node's `fetch`) over https
/// too. The cut proxy of the ack re-send step takes plain HTTP from the client and
/// connects to our server with TLS.
#[tokio::test]
async fn cometd_javascript_client_https_long_polling() {
    let (app, l, ca_dir) = our_tls_server("interop-cometd-https").await;
    run_steps_trusting(
        Some(&ca_dir.0),
        "node",
        &[
            "cometd_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "long-polling",
        ],
        "cometd-js (long-polling, TLS)",
        COMETD_STEPS,
        &app,
    )
    .await;
}

/// The CometD JavaScript client's default transports with an https URL: its WebSocket
/// transport (the `ws` package) opens wss://, asserted in the `transport` step.
#[tokio::test]
async fn cometd_javascript_client_wss() {
    let (app, l, ca_dir) = our_tls_server("interop-cometd-wss").await;
    run_steps_trusting(
        Some(&ca_dir.0),
        "node",
        &[
            "cometd_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "default",
        ],
        "cometd-js (default transports, TLS)",
        COMETD_STEPS,
        &app,
    )
    .await;
}

/// Faye's Node client over https with WebSocket disabled.
#[tokio::test]
async fn faye_node_client_https_long_polling() {
    let (app, l, ca_dir) = our_tls_server("interop-faye-https").await;
    run_steps_trusting(
        Some(&ca_dir.0),
        "node",
        &[
            "faye_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "long-polling",
        ],
        "faye (node client, long-polling, TLS)",
        FAYE_LONG_POLLING_STEPS,
        &app,
    )
    .await;
}

/// Faye's default over TLS: the handshake over https, then one wss:// socket
/// (faye-websocket).
#[tokio::test]
async fn faye_node_client_https_then_wss() {
    let (app, l, ca_dir) = our_tls_server("interop-faye-wss").await;
    run_steps_trusting(
        Some(&ca_dir.0),
        "node",
        &[
            "faye_client.mjs",
            &l.url("/cometd"),
            &l.url(""),
            "websocket",
        ],
        "faye (node client, websocket, TLS)",
        FAYE_WEBSOCKET_STEPS,
        &app,
    )
    .await;
}

/// The steps of aiosfstream-ng, a Salesforce streaming client (`aiosfstream_client.py`).
const AIOSFSTREAM_STEPS: &[&str] = &[
    "live events in order",
    "each carries data.event.replayId and createdDate",
    "the stored marker is the last event's",
    "replays what it missed after its marker",
    "then live",
    "replays all retained events (-2)",
    "an id it cannot replay after falls back to all events",
];

/// aiosfstream-ng, run unchanged but for its authenticator (which returns this server's
/// URL and a token), against a server with `/topic/**` durable at Salesforce's path
/// (`/cometd/45.0`): live events with their replay ids and creation dates, its own
/// replay-marker storage resuming after what it received, `-2`, and its fallback when
/// the server cannot replay after its marker. Before durable messages carried their
/// creation time, it failed on the first event.
#[tokio::test]
async fn aiosfstream_salesforce_client_replays_from_its_own_markers() {
    let (app, l) = salesforce_like_server().await;
    run_steps(
        &python(),
        &["aiosfstream_client.py", &l.url("")],
        "aiosfstream-ng",
        AIOSFSTREAM_STEPS,
        &app,
    )
    .await;
}

/// The steps of jsforce's streaming client (`jsforce_client.mjs`).
const JSFORCE_STEPS: &[&str] = &[
    "live events in order",
    "each carries event.replayId and event.createdDate",
    "the extension tracked the last replay id",
    "replays what it missed after its last id",
    "then live",
    "replays all retained events (-2)",
];

/// A server with `/topic/**` durable at Salesforce's path, `INSTANCE/cometd/45.0`.
async fn salesforce_like_server() -> (DemoApp, Listening) {
    let config = ServerConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_replay(Some(bayeux::server::ReplayConfig::new(vec![
            bayeux::protocol::ChannelName::parse("/topic/**").unwrap(),
        ])));
    let app = DemoApp::new(
        config,
        Access::demo(),
        WorkbinConfig::default(),
        "/cometd/45.0",
    );
    let l = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (app, l)
}

/// jsforce (Salesforce's Node library) with its Replay extension, run unchanged against
/// a local instance URL and token: live events with ids and dates, resuming after the
/// last id it saw, and `-2`.
#[tokio::test]
async fn jsforce_streaming_client_with_its_replay_extension() {
    let (app, l) = salesforce_like_server().await;
    run_steps(
        "node",
        &["jsforce_client.mjs", &l.url("")],
        "jsforce",
        JSFORCE_STEPS,
        &app,
    )
    .await;
}

/// The Python interpreter with aiocometd-ng: `BAYEUX_INTEROP_PYTHON`, or `python3`.
fn python() -> String {
    std::env::var("BAYEUX_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// aiocometd handshakes over long-polling, then opens its WebSocket transport.
#[tokio::test]
async fn aiocometd_python_client_websocket() {
    let (app, l) = our_server().await;
    run_steps(
        &python(),
        &[
            "aiocometd_client.py",
            &l.url("/cometd"),
            &l.url(""),
            "websocket",
        ],
        "aiocometd-ng (websocket)",
        AIOCOMETD_WEBSOCKET_STEPS,
        &app,
    )
    .await;
}

#[tokio::test]
async fn aiocometd_python_client_long_polling() {
    let (app, l) = our_server().await;
    run_steps(
        &python(),
        &[
            "aiocometd_client.py",
            &l.url("/cometd"),
            &l.url(""),
            "long-polling",
        ],
        "aiocometd-ng (long-polling)",
        AIOCOMETD_LONG_POLLING_STEPS,
        &app,
    )
    .await;
}

mod our_client_against_peer_servers {
    use super::*;
    use bayeux::client::{Client, ConnectionState, Subscription};
    use tokio::io::{AsyncBufReadExt, BufReader, Lines};
    use tokio::process::{Child, ChildStdout};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Starts a node script and waits for its first stdout line to be `expect`.
    async fn spawn_until(
        args: &[&str],
        expect: &str,
        what: &str,
    ) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut child = Command::new("node")
            .args(args)
            .current_dir(interop_dir())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = timeout(Duration::from_secs(15), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{what}: no {expect:?} within 15 s"))
            .unwrap();
        assert_eq!(first.as_deref(), Some(expect), "{what}");
        (child, lines)
    }

    async fn peer_publish(kind: &str, url: &str, channel: &str, data: &Value) {
        let out = timeout(
            Duration::from_secs(20),
            Command::new("node")
                .args([
                    "peer_client.mjs",
                    kind,
                    url,
                    "publish",
                    channel,
                    &data.to_string(),
                ])
                .current_dir(interop_dir())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind} client: publish did not finish"))
        .unwrap();
        assert!(
            out.status.success(),
            "{kind} client: publish failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn next_data(sub: &mut Subscription, within: Duration) -> Option<Value> {
        timeout(within, sub.next())
            .await
            .ok()
            .flatten()
            .and_then(|m| m.data)
    }

    async fn against(kind: &str) {
        let port = free_port();
        let port_s = port.to_string();
        let url = format!("http://127.0.0.1:{port}/cometd");
        let (mut server, _) = spawn_until(
            &["peer_server.mjs", kind, &port_s],
            "ready",
            &format!("{kind} server"),
        )
        .await;

        let client = Client::builder(&url)
            .backoff(Duration::from_millis(50), Duration::from_millis(500))
            .max_network_delay(Duration::from_secs(5))
            .build()
            .unwrap();
        client
            .handshake()
            .await
            .unwrap_or_else(|e| panic!("{kind} server / handshake: {e}"));
        // Faye's server speaks WebSocket; cometd-nodejs-server does not, so our client
        // falls back to long-polling there, as CometD's JavaScript client does.
        let transport = if kind == "faye" {
            "websocket"
        } else {
            "long-polling"
        };
        assert_eq!(
            client.transport_name(),
            transport,
            "{kind} server / transport after the handshake"
        );
        let mut exact = client
            .subscribe("/interop/exact")
            .await
            .unwrap_or_else(|e| panic!("{kind} server / subscribe: {e}"));
        let mut wild = client
            .subscribe("/interop/*")
            .await
            .unwrap_or_else(|e| panic!("{kind} server / wildcard subscribe: {e}"));

        // Receive what the peer's own client publishes.
        peer_publish(kind, &url, "/interop/exact", &json!({"n": 1})).await;
        assert_eq!(
            next_data(&mut exact, Duration::from_secs(10)).await,
            Some(json!({"n": 1})),
            "{kind} server / receive from the peer's client"
        );
        assert_eq!(
            next_data(&mut wild, Duration::from_secs(10)).await,
            Some(json!({"n": 1})),
            "{kind} server / wildcard receive"
        );

        // Publish what the peer's own client receives.
        let (mut receiver, mut lines) = spawn_until(
            &[
                "peer_client.mjs",
                kind,
                &url,
                "receive",
                "/interop/to-peer",
                "1",
            ],
            "subscribed",
            &format!("{kind} client"),
        )
        .await;
        client
            .publish("/interop/to-peer", json!({"from": "rust"}))
            .await
            .unwrap_or_else(|e| panic!("{kind} server / publish reply: {e}"));
        let line = timeout(Duration::from_secs(10), lines.next_line())
            .await
            .ok()
            .and_then(|l| l.ok())
            .flatten();
        assert_eq!(
            line.as_deref(),
            Some(r#"{"from":"rust"}"#),
            "{kind} server / the peer's client receives our publish"
        );
        let _ = receiver.wait().await;

        // Recovery: the peer server restarts on the same port; our subscriptions carry on.
        server.kill().await.unwrap();
        client
            .wait_for_state(|s| *s == ConnectionState::Reconnecting)
            .await;
        let (_server2, _) = spawn_until(
            &["peer_server.mjs", kind, &port_s],
            "ready",
            &format!("{kind} server (restarted)"),
        )
        .await;
        let mut received = None;
        for attempt in 0..10 {
            peer_publish(kind, &url, "/interop/exact", &json!({"after": attempt})).await;
            if let Some(v) = next_data(&mut exact, Duration::from_secs(2)).await {
                received = Some(v);
                break;
            }
        }
        assert!(
            received.is_some(),
            "{kind} server / recovery: nothing received on the old subscription after the restart"
        );
        assert_eq!(
            *client.state().borrow(),
            ConnectionState::Connected,
            "{kind} server / state after recovery"
        );
        assert_eq!(
            client.transport_name(),
            transport,
            "{kind} server / transport after recovery"
        );
        client.disconnect().await.unwrap();
    }

    #[tokio::test]
    async fn faye_node_server() {
        against("faye").await;
    }

    #[tokio::test]
    async fn cometd_nodejs_server() {
        against("cometd").await;
    }
}

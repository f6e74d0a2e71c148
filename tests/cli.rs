//! The `bayeux` binary, run as a user would.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

#[tokio::test]
async fn listen_prints_one_json_line_per_message() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args(["listen", &t.url(), "/chat/**", "/alerts", "--count", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Each subscription is in place once a publish on it reaches a recipient (the
        // listener subscribes to its channels in no set order).
        for channel in ["/alerts", "/chat/probe"] {
            eventually_async("the listener's subscriptions", async || {
                t.server
                    .publish(channel, json!("probe"))
                    .await
                    .unwrap()
                    .local_recipients
                    > 0
            })
            .await;
        }
        t.server
            .publish("/chat/a/b", json!({"text": "deep"}))
            .await
            .unwrap();
        t.server.publish("/ignored", json!(0)).await.unwrap();
        t.server.publish("/alerts", json!("last")).await.unwrap();
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            got.push(serde_json::from_str::<Value>(&line).unwrap());
        }
        assert_eq!(got.len(), 4, "{got:?}");
        // Each subscription's messages keep their order; the two subscriptions'
        // streams interleave as they are read.
        let on = |prefix: &str| -> Vec<Value> {
            got.iter()
                .filter(|m| m["channel"].as_str().unwrap().starts_with(prefix))
                .map(|m| m["data"].clone())
                .collect()
        };
        assert_eq!(on("/alerts"), vec![json!("probe"), json!("last")]);
        assert_eq!(on("/chat/"), vec![json!("probe"), json!({"text": "deep"})]);
        assert!(child.wait().await.unwrap().success());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn listen_reports_reconnections_on_stderr() {
    timeout(LIMIT, async {
        let first = bayeux::Server::new(fast_config());
        let listening = first
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let (addr, url) = (listening.local_addr(), listening.url("/cometd"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args(["listen", &url, "/x", "--count", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        assert!(
            err.next_line()
                .await
                .unwrap()
                .unwrap()
                .contains("listening on /x")
        );
        listening.shutdown().await.unwrap();
        // The listener notices: the connection is lost, or (when its next connect still
        // reached the old server as it closed) the session is gone.
        let lost = line_within(&mut err, "the listener to notice the shutdown").await;
        assert!(
            lost == "bayeux: connection lost, reconnecting"
                || lost.starts_with("bayeux: the server ended the session"),
            "{lost}"
        );
        let second = bayeux::Server::new(fast_config());
        let _l = second.listen(addr, "/cometd").await.unwrap();
        // The new server does not know the session: the listener says that messages
        // may be missing (unless it already did), then that it is back.
        let mut next = line_within(&mut err, "the listener to reconnect").await;
        if lost == "bayeux: connection lost, reconnecting" {
            assert_eq!(
                next,
                "bayeux: the server ended the session (402::Unknown client): messages may be missing; handshaking again"
            );
            next = line_within(&mut err, "the listener to reconnect").await;
        }
        assert_eq!(next, "bayeux: reconnected");
        eventually_async("the re-subscription", async || {
            second
                .publish("/x", json!(1))
                .await
                .unwrap()
                .local_recipients
                > 0
        })
        .await;
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = out.next_line().await.unwrap().unwrap();
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["data"], 1);
        assert!(child.wait().await.unwrap().success());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn demo_runs_end_to_end_and_exits() {
    timeout(LIMIT, async {
        let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args(["demo", "--agents", "2", "--assignments", "4"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("8 notifications delivered to the right agents"),
            "{stdout}"
        );
        assert!(stdout.contains("agent2   <- /v2/me/chats"), "{stdout}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn assign_posts_and_prints_the_reply() {
    use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
    use futures::StreamExt;
    timeout(LIMIT, async {
        let app = DemoApp::new(
            fast_config(),
            Access::demo(),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let agent = bayeux::client::Client::builder(&listening.url("/cometd"))
            .basic_auth("agent1", "x")
            .build()
            .unwrap();
        agent.handshake().await.unwrap();
        let mut inbox = agent.subscribe("/v2/me/chats").await.unwrap();
        let base = listening.url("");
        let run = |op: &'static str| {
            Command::new(env!("CARGO_BIN_EXE_bayeux"))
                .args([
                    "assign",
                    &base,
                    "agent1",
                    "wb1",
                    "--op",
                    op,
                    "--uri",
                    ".../FE7978FEWFE",
                ])
                .output()
        };
        let out = run("AddChat").await.unwrap();
        assert!(out.status.success());
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply, json!({"statusCode": 0, "referenceId": 1}));
        let m = inbox.next().await.unwrap();
        assert_eq!(m.data.unwrap()["chat"]["id"], "FE7978FEWFE");
        let out = run("AddFax").await.unwrap();
        assert!(!out.status.success());
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["statusCode"], 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bench_reports_deliveries_loss_and_latency_as_json() {
    use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
    timeout(LIMIT, async {
        let app = DemoApp::new(
            fast_config(),
            Access::demo(),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        for via in ["bayeux", "workbin"] {
            let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
                .args([
                    "bench",
                    &listening.url("/cometd"),
                    "--subscribers",
                    "20",
                    "--channels",
                    "4",
                ])
                .args([
                    "--publishers",
                    "2",
                    "--rate",
                    "200",
                    "--duration",
                    "1",
                    "--publish-via",
                    via,
                    "--json",
                ])
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            let published = r["published"].as_u64().unwrap();
            assert!(published > 0, "{r}");
            // Each message reaches the 5 subscribers of its channel, none lost or doubled.
            assert_eq!(r["expected_deliveries"], published * 5, "{r}");
            assert_eq!(r["delivered"], r["expected_deliveries"], "{r}");
            assert_eq!(
                (r["lost"].as_u64(), r["duplicates"].as_u64()),
                (Some(0), Some(0)),
                "{r}"
            );
            assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{r}");
            assert_eq!(
                r["handshakes"].as_u64().unwrap(),
                20 + if via == "bayeux" { 2 } else { 0 },
                "{r}"
            );
        }
    })
    .await
    .unwrap();
}

/// Runs `bayeux bench` against `url` for a second of publishing with `extra` options and
/// returns its JSON report.
async fn bench_json(url: &str, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
        .args(["bench", url, "--subscribers", "20", "--channels", "4"])
        .args(["--publishers", "2", "--rate", "400", "--duration", "1"])
        .args(["--json"])
        .args(extra)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each message reached the 5 subscribers of its channel, none lost or doubled.
fn assert_all_delivered(r: &Value) {
    let published = r["published"].as_u64().unwrap();
    assert!(published > 0, "{r}");
    assert_eq!(r["expected_deliveries"], published * 5, "{r}");
    assert_eq!(r["delivered"], r["expected_deliveries"], "{r}");
    assert_eq!(
        (r["lost"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
}

#[tokio::test]
async fn bench_over_websocket_reports_deliveries_and_messages_per_frame() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let r = bench_json(&t.url(), &["--transport", "websocket"]).await;
        assert_eq!(r["transport"], "websocket", "{r}");
        assert_all_delivered(&r);
        assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{r}");
        let per_frame = &r["messages_per_response"];
        assert!(per_frame["mean"].as_f64().unwrap() >= 1.0, "{r}");
        assert!(per_frame["p99"].as_u64().unwrap() >= 1, "{r}");
        assert!(per_frame["count"].as_u64().unwrap() > 0, "{r}");
        // 20 subscribers over their sockets, 2 publishers over HTTP.
        assert_eq!(r["handshakes"], 22, "{r}");
        assert_eq!(
            (r["http_errors"].as_u64(), r["bayeux_errors"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bench_subscribes_and_publishes_where_told_from_the_source_addresses_given() {
    timeout(LIMIT, async {
        // URL is one server; every subscriber and publisher is on the other: the report
        // counts what that one delivered, end to end.
        let (main, other) = (
            TestServer::with_config(fast_config()).await,
            TestServer::with_config(fast_config()).await,
        );
        for transport in ["long-polling", "websocket"] {
            let r = bench_json(
                &main.url(),
                &[
                    "--subscribe-url",
                    &other.url(),
                    "--publish-url",
                    &other.url(),
                    "--source-ip",
                    "127.0.0.2-127.0.0.3",
                    "--transport",
                    transport,
                ],
            )
            .await;
            assert_all_delivered(&r);
            assert_eq!(r["http_errors"], 0, "{r}");
            // Deliveries ran to about the end of the second of publishing.
            let last = r["last_delivery_seconds"].as_f64().unwrap();
            assert!(last > 0.5 && last < 5.0, "{r}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bench_times_broadcasts_to_every_subscriber() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args([
                "bench",
                &t.url(),
                "--mode",
                "broadcast",
                "--subscribers",
                "10",
            ])
            .args([
                "--broadcasts",
                "3",
                "--broadcast-interval",
                "100ms",
                "--json",
            ])
            .args(["--transport", "websocket", "--source-ip", "127.0.0.2"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (r["published"].as_u64(), r["delivered"].as_u64()),
            (Some(3), Some(30)),
            "{r}"
        );
        let broadcasts = r["broadcasts"].as_array().unwrap();
        assert_eq!(broadcasts.len(), 3, "{r}");
        for b in broadcasts {
            assert_eq!(b["received"], 10, "{r}");
            assert!(b["reach_ms"].as_f64().unwrap() > 0.0, "{r}");
        }
        assert!(r["broadcast_reach_ms"].as_f64().unwrap() > 0.0, "{r}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bench_with_a_stalled_session_loses_nothing_for_the_others() {
    timeout(LIMIT, async {
        for transport in ["long-polling", "websocket"] {
            // The stalled session lives through the run (maxInterval 2 s) and its queue
            // overflows (20 messages) on long-polling, where it never polls again.
            let t = TestServer::with_config(
                fast_config()
                    .with_timeout(std::time::Duration::from_secs(1))
                    .with_max_interval(std::time::Duration::from_secs(2))
                    .with_max_queue(20),
            )
            .await;
            let r = bench_json(&t.url(), &["--transport", transport, "--stalled", "1"]).await;
            assert_eq!(
                (r["transport"].as_str(), r["stalled"].as_u64()),
                (Some(transport), Some(1)),
                "{r}"
            );
            assert_all_delivered(&r);
            assert_eq!(r["handshakes"], 23, "{r}");
            if transport == "long-polling" {
                assert!(t.server.stats().dropped_messages > 0, "{r}");
            }
        }
    })
    .await
    .unwrap();
}

/// The start-up log line of a `bayeux serve` child that says where it serves Bayeux (the
/// first line at the default log level; any debug lines before it are skipped). The rest
/// of its log is read and dropped in the background, so the child never writes to a
/// closed pipe.
async fn serving_line(child: &mut tokio::process::Child) -> String {
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = line_within(&mut err, "the serving Bayeux log line").await;
        if line.contains("serving Bayeux") {
            tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
            return line;
        }
    }
}

/// The next line of a child's output, within 10 s, or a failure that says what was
/// awaited.
async fn line_within(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    what: &str,
) -> String {
    match timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(other) => panic!("waiting for {what}: the output ended ({other:?})"),
        Err(_) => panic!("waiting for {what}: no line within 10 s"),
    }
}

/// Starts `bayeux serve` with `args` on a free port and returns the child and the
/// Bayeux URL from its "serving Bayeux" start-up log line (on stderr).
async fn serve_with(args: &[&str]) -> (tokio::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bayeux"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let line = serving_line(&mut child).await;
    assert!(line.contains("wss://127.0.0.1:"), "{line}");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no https URL in {line}"))
        .to_string();
    (child, url)
}

#[tokio::test]
async fn serve_over_tls_serves_bayeux_and_the_workbin_api_with_http2() {
    use http_body_util::{BodyExt, Full};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    timeout(LIMIT, async {
        let pki = common::certs::TestPki::new();
        let dir = pki.write_to(&common::certs::temp_dir("cli-tls"));
        let file = |name: &str| dir.join(name).display().to_string();
        let (_child, url) = serve_with(&[
            "--tls-cert",
            &file("server.pem"),
            "--tls-key",
            &file("server.key"),
        ])
        .await;
        assert!(url.ends_with("/cometd"), "{url}");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<bytes::Bytes>>(connector);
        let post = async |url: &str, body: Value| {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap();
            let res = http.request(req).await.unwrap();
            let version = res.version();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (version, serde_json::from_slice::<Value>(&body).unwrap())
        };
        let (version, replies) = post(
            &url,
            json!({"channel": "/meta/handshake", "version": "1.0"}),
        )
        .await;
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(replies[0]["successful"], true, "{replies}");
        let base = url.trim_end_matches("/cometd");
        let (version, reply) = post(
            &format!("{base}/api/v2/users/agent1/workbins/wb1"),
            json!({"operationName": "AddEmail", "uri": ".../FE7978FEWFE"}),
        )
        .await;
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(reply, json!({"statusCode": 0, "referenceId": 1}));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn serve_reports_a_certificate_or_key_error_in_one_line_and_fails() {
    timeout(LIMIT, async {
        let pki = common::certs::TestPki::new();
        let dir = pki.write_to(&common::certs::temp_dir("cli-tls-errors"));
        let file = |name: &str| dir.join(name).display().to_string();
        let cases = [
            (
                file("missing.pem"),
                file("server.key"),
                format!(
                    "bayeux: tls: cannot read certificate file {}: No such file or directory",
                    file("missing.pem")
                ),
            ),
            (
                file("server.pem"),
                file("client.key"),
                format!(
                    "bayeux: tls: the private key in {} does not match the certificate in {}",
                    file("client.key"),
                    file("server.pem")
                ),
            ),
            (
                file("server.pem"),
                file("server.pem"),
                format!("bayeux: tls: no private key in {}", file("server.pem")),
            ),
        ];
        for (cert, key, expected) in cases {
            let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(["--tls-cert", &cert, "--tls-key", &key])
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with(&expected), "{stderr}");
            assert!(out.stdout.is_empty(), "nothing is served");
        }
        // A certificate without its key is a usage error.
        let out = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args(["serve", "--tls-cert", &file("server.pem")])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

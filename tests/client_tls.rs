//! The client over TLS: `https://` long-polling on HTTP/1.1 and HTTP/2, `wss://`,
//! certificates it must refuse (unknown issuer, wrong host name, expired) as a clear and
//! final error, and mutual TLS. Certificates come from a private CA generated per test
//! (`common::certs`).
//!
//! The server is this crate's `Server` behind a small TLS front written here (rustls
//! acceptor, hyper-util's HTTP/1.1 + HTTP/2 server), so that these tests depend on
//! nothing but the client's TLS: it counts the TCP connections it accepts and records
//! the HTTP version of every request, and its certificate can be swapped while it runs.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux::client::tls::rustls;
use bayeux::client::{
    Client, ClientBuilder, ConnectionState, ErrorKind, Subscription, TlsFailure, TransportChoice,
};
use bayeux::server::Server;
use common::certs::{Pem, TestPki};
use common::{LIMIT, eventually, fast_config};
use futures::StreamExt;
use http::Version;
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::timeout;

/// ALPN of a server that speaks HTTP/2 and HTTP/1.1.
const H2_AND_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of a server that speaks HTTP/1.1 only.
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// A rustls server configuration with `cert`, these ALPN protocols and, with
/// `client_ca`, client certificates required and verified against that CA.
fn server_config(cert: &Pem, alpn: &[&[u8]], client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = vec![CertificateDer::from_pem_slice(cert.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The crate's server behind a TLS front on 127.0.0.1.
struct TlsFront {
    server: Server,
    addr: SocketAddr,
    /// TCP connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// The HTTP version of every request served, in order.
    versions: Arc<Mutex<Vec<Version>>>,
    /// The configuration new connections get.
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    /// The tasks serving the connections, to cut them.
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl TlsFront {
    async fn start(config: Arc<rustls::ServerConfig>) -> TlsFront {
        let server = Server::new(fast_config());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(Mutex::new(config));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (accepted, versions) = (accepted.clone(), versions.clone());
            let (config, connections) = (config.clone(), connections.clone());
            let bayeux = server.service().mounted_at("/cometd");
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.set_nodelay(true);
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.lock().unwrap().clone());
                    let (versions, bayeux) = (versions.clone(), bayeux.clone());
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        versions.lock().unwrap().push(request.version());
                        bayeux.call(request)
                    });
                    let task = tokio::spawn(async move {
                        // A refused handshake ends here; the client sees why.
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let http =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = http
                            .serve_connection_with_upgrades(TokioIo::new(tls), service)
                            .await;
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        TlsFront {
            server,
            addr,
            accepted,
            versions,
            config,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/cometd", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }

    /// Gives new connections `config` and cuts the open ones.
    fn swap_and_cut(&self, config: Arc<rustls::ServerConfig>) {
        *self.config.lock().unwrap() = config;
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A client of `url` that trusts the test CA, with short timings.
fn builder(url: &str, pki: &TestPki, transport: TransportChoice) -> ClientBuilder {
    Client::builder(url)
        .ca_certificate_pem(&pki.ca)
        .transport(transport)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(5))
        .max_network_delay(Duration::from_secs(2))
}

async fn next_data(sub: &mut Subscription) -> serde_json::Value {
    timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("the stream ended")
        .data
        .unwrap()
}

/// Handshake, subscribe, publish and receive through `client`.
async fn round_trip(client: &Client, channel: &str) {
    client.handshake().await.unwrap();
    let mut sub = client.subscribe(channel).await.unwrap();
    client
        .publish(channel, json!({"over": "tls"}))
        .await
        .unwrap();
    assert_eq!(next_data(&mut sub).await, json!({"over": "tls"}));
}

#[tokio::test]
async fn https_long_polling_over_http_1_1_when_the_server_offers_no_h2() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let front = TlsFront::start(server_config(&pki.server, H1_ONLY, None)).await;
        let client = builder(&front.url(), &pki, TransportChoice::LongPolling)
            .build()
            .unwrap();
        round_trip(&client, "/tls/h1").await;
        assert_eq!(client.transport_name(), "long-polling");
        let versions = front.versions();
        assert!(!versions.is_empty());
        assert!(
            versions.iter().all(|v| *v == Version::HTTP_11),
            "{versions:?}"
        );
        client.disconnect().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn http2_carries_every_long_poll_and_publish_of_a_client_on_one_connection() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, None)).await;
        let client = builder(&front.url(), &pki, TransportChoice::LongPolling)
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let id = client.client_id().unwrap();
        let mut subs = Vec::new();
        for n in 0..5 {
            subs.push(client.subscribe(&format!("/room/{n}")).await.unwrap());
        }
        for round in 0..3 {
            // Published while the long poll is held: on HTTP/1.1 that would take a
            // second connection.
            eventually("the long poll to be held", || {
                front.server.is_connected(&id)
            })
            .await;
            for (n, sub) in subs.iter_mut().enumerate() {
                client
                    .publish(&format!("/room/{n}"), json!([round, n]))
                    .await
                    .unwrap();
                assert_eq!(next_data(sub).await, json!([round, n]));
            }
        }
        let versions = front.versions();
        assert!(versions.len() > 20, "{versions:?}");
        assert!(
            versions.iter().all(|v| *v == Version::HTTP_2),
            "{versions:?}"
        );
        assert_eq!(front.accepted(), 1, "one TCP connection for everything");
        client.disconnect().await.unwrap();
        assert_eq!(front.accepted(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wss_carries_the_session_from_an_https_or_a_wss_url() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        // The server offers h2 too: the socket's connection still asks for HTTP/1.1.
        let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, None)).await;
        let client = builder(&front.url(), &pki, TransportChoice::Auto)
            .build()
            .unwrap();
        round_trip(&client, "/tls/ws").await;
        assert_eq!(client.transport_name(), "websocket");
        // One upgrade, everything else over the socket.
        assert_eq!(front.versions(), vec![Version::HTTP_11]);
        assert_eq!(front.accepted(), 1);
        client.disconnect().await.unwrap();

        let wss = format!("wss://{}/cometd", front.addr);
        let client = builder(&wss, &pki, TransportChoice::WebSocket)
            .build()
            .unwrap();
        round_trip(&client, "/tls/wss").await;
        assert_eq!(client.transport_name(), "websocket");
        client.disconnect().await.unwrap();
    })
    .await
    .unwrap();
}

/// The handshake fails at once with `failure`, the client is stopped with the same
/// message, and nothing was retried (one TCP connection).
async fn assert_final_tls_failure(
    front: &TlsFront,
    client: &Client,
    failure: TlsFailure,
    phrase: &str,
) {
    let before = front.accepted();
    let e = timeout(Duration::from_secs(5), client.handshake())
        .await
        .expect("a TLS failure is not retried")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert_eq!(e.tls_failure(), Some(failure), "{e}");
    assert!(e.to_string().contains(phrase), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    match &*client.state().borrow() {
        ConnectionState::Failed(why) => assert_eq!(*why, e.to_string()),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(
        front.accepted(),
        before + 1,
        "one attempt, no fallback: {e}"
    );
    // Final: the client stays stopped.
    let again = client.handshake().await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Closed, "{again}");
    assert_eq!(front.accepted(), before + 1);
}

#[tokio::test]
async fn untrusted_server_certificates_are_a_clear_final_error() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let cases = [
            (
                &pki.unknown_issuer,
                TlsFailure::UnknownIssuer,
                "unknown issuer",
            ),
            (
                &pki.wrong_host,
                TlsFailure::WrongHostName,
                "wrong host name",
            ),
            (&pki.expired, TlsFailure::Expired, "certificate expired"),
        ];
        for (cert, failure, phrase) in cases {
            let front = TlsFront::start(server_config(cert, H2_AND_H1, None)).await;
            for transport in [
                TransportChoice::Auto,
                TransportChoice::LongPolling,
                TransportChoice::WebSocket,
            ] {
                let client = builder(&front.url(), &pki, transport).build().unwrap();
                assert_final_tls_failure(&front, &client, failure, phrase).await;
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_certificate_that_goes_bad_mid_session_stops_the_loop_with_its_cause() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, None)).await;
        let client = builder(&front.url(), &pki, TransportChoice::LongPolling)
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let mut sub = client.subscribe("/doomed").await.unwrap();
        client
            .wait_for_state(|s| *s == ConnectionState::Connected)
            .await;
        // The server comes back with a certificate from a CA the client does not trust.
        front.swap_and_cut(server_config(&pki.unknown_issuer, H2_AND_H1, None));
        let state = timeout(
            Duration::from_secs(5),
            client.wait_for_state(|s| matches!(s, ConnectionState::Failed(_))),
        )
        .await
        .expect("the loop stops rather than retrying");
        match state {
            ConnectionState::Failed(why) => assert!(why.contains("unknown issuer"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(sub.next().await.is_none(), "the subscription ends");
        assert_eq!(front.accepted(), 2, "one connection, then one refused");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn mutual_tls_accepts_the_client_certificate_and_refuses_its_absence() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, Some(&pki.ca))).await;
        for transport in [TransportChoice::LongPolling, TransportChoice::WebSocket] {
            let client = builder(&front.url(), &pki, transport)
                .client_certificate_pem(&pki.client.cert, &pki.client.key)
                .build()
                .unwrap();
            round_trip(&client, "/mtls").await;
            client.disconnect().await.unwrap();

            let client = builder(&front.url(), &pki, transport).build().unwrap();
            assert_final_tls_failure(
                &front,
                &client,
                TlsFailure::ClientCertificateRequired,
                "client certificate required",
            )
            .await;

            let client = builder(&front.url(), &pki, transport)
                .client_certificate_pem(&pki.untrusted_client.cert, &pki.untrusted_client.key)
                .build()
                .unwrap();
            assert_final_tls_failure(
                &front,
                &client,
                TlsFailure::ClientCertificateRefused,
                "client certificate refused",
            )
            .await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_tls_settings_are_refused_at_build() {
    let pki = TestPki::new();
    let url = "https://127.0.0.1:9/cometd";
    let e = Client::builder(url)
        .ca_certificate_pem("not a certificate")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    // A key that is not the certificate's.
    let e = Client::builder(url)
        .ca_certificate_pem(&pki.ca)
        .client_certificate_pem(&pki.client.cert, &pki.server.key)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let e = Client::builder(url)
        .platform_roots(false)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(
        e.to_string().contains("no trusted certificate authority"),
        "{e}"
    );
    // TLS settings do not matter to a plain http:// endpoint.
    assert!(
        Client::builder("http://127.0.0.1:9/cometd")
            .platform_roots(false)
            .build()
            .is_ok()
    );
}

/// The `bayeux` binary over TLS: `listen` and `bench` with `--ca-cert` and a client
/// certificate.
#[cfg(feature = "cli")]
mod cli {
    use std::process::Stdio;

    use common::certs::temp_dir;
    use common::eventually_async;
    use serde_json::Value;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::Command;

    use super::*;

    fn bayeux() -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bayeux"));
        c.kill_on_drop(true);
        c
    }

    #[tokio::test]
    async fn listen_over_https_with_a_private_ca_and_a_client_certificate() {
        timeout(LIMIT, async {
            let pki = TestPki::new();
            let dir = pki.write_to(&temp_dir("listen-tls"));
            let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, Some(&pki.ca))).await;
            for transport in ["long-polling", "websocket"] {
                let mut child = bayeux()
                    .args(["listen", &front.url(), "/tls", "--count", "1"])
                    .args(["--transport", transport])
                    .arg("--ca-cert")
                    .arg(dir.join("ca.pem"))
                    .arg("--client-cert")
                    .arg(dir.join("client.pem"))
                    .arg("--client-key")
                    .arg(dir.join("client.key"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                eventually_async("the listener's subscription", async || {
                    front
                        .server
                        .publish("/tls", json!(transport))
                        .await
                        .unwrap()
                        .local_recipients
                        > 0
                })
                .await;
                let line = lines.next_line().await.unwrap().unwrap();
                let message: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(message["data"], json!(transport));
                assert!(child.wait().await.unwrap().success());
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn listen_prints_a_certificate_error_once_and_exits_non_zero() {
        timeout(LIMIT, async {
            let pki = TestPki::new();
            let dir = pki.write_to(&temp_dir("listen-bad-cert"));
            for (cert, phrase) in [
                (&pki.wrong_host, "wrong host name"),
                (&pki.unknown_issuer, "unknown issuer"),
            ] {
                let front = TlsFront::start(server_config(cert, H2_AND_H1, None)).await;
                for transport in ["auto", "long-polling"] {
                    let out = bayeux()
                        .args(["listen", &front.url(), "/x", "--transport", transport])
                        .arg("--ca-cert")
                        .arg(dir.join("ca.pem"))
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .output()
                        .await
                        .unwrap();
                    assert!(!out.status.success());
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let lines: Vec<&str> = stderr.lines().collect();
                    assert_eq!(lines.len(), 1, "{stderr}");
                    assert!(lines[0].starts_with("bayeux: "), "{stderr}");
                    assert!(lines[0].contains("TLS failure"), "{stderr}");
                    assert!(lines[0].contains(phrase), "{stderr}");
                }
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_client_certificate_needs_its_key() {
        let out = bayeux()
            .args([
                "listen",
                "https://127.0.0.1:9/cometd",
                "--client-cert",
                "c.pem",
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "a usage error");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--client-key"));
    }

    /// Runs `bayeux bench` against `front` trusting the CA in `dir`, with `args` after
    /// the URL; returns its JSON report after checking that it succeeded, published,
    /// delivered each message to `per_message` subscribers, and lost none.
    async fn bench_report(
        front: &TlsFront,
        dir: &std::path::Path,
        args: &[&str],
        per_message: u64,
    ) -> Value {
        let out = bayeux()
            .args(["bench", &front.url()])
            .args(args)
            .args(["--publishers", "1", "--duration", "1", "--json"])
            .arg("--ca-cert")
            .arg(dir.join("ca.pem"))
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
        assert_eq!(r["delivered"], published * per_message, "{r}");
        assert_eq!(
            (r["lost"].as_u64(), r["duplicates"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
        r
    }

    #[tokio::test]
    async fn bench_http2_gives_each_session_one_connection() {
        timeout(LIMIT, async {
            let pki = TestPki::new();
            let dir = pki.write_to(&temp_dir("bench-h2"));
            let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, None)).await;
            let args = ["--subscribers", "3", "--http2", "--rate", "50"];
            bench_report(&front, &dir, &args, 3).await;
            // Every request over HTTP/2, on one connection per session: the start-up
            // probe's, 3 subscribers' and the publisher's.
            let versions = front.versions();
            assert!(
                versions.iter().all(|v| *v == Version::HTTP_2),
                "{versions:?}"
            );
            assert_eq!(front.accepted(), 5);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn bench_over_https_and_wss() {
        timeout(LIMIT, async {
            let pki = TestPki::new();
            let dir = pki.write_to(&temp_dir("bench-tls"));
            let front = TlsFront::start(server_config(&pki.server, H2_AND_H1, None)).await;
            for transport in ["long-polling", "websocket"] {
                let args = [
                    "--subscribers",
                    "4",
                    "--channels",
                    "2",
                    "--rate",
                    "100",
                    "--transport",
                    transport,
                    "--stalled",
                    "1",
                ];
                let r = bench_report(&front, &dir, &args, 2).await;
                assert_eq!(r["http_errors"], 0, "{r}");
            }
        })
        .await
        .unwrap();
    }
}

/// Our client against our own TLS listener (`ServerConfig::tls`, `Server::listen`), not
/// the test front: long-polling over https, WebSocket over wss, and a client that does
/// not trust the listener's CA. (That both sides then use HTTP/2 is not observed here;
/// the front above counts versions, and tests/tls.rs checks the listener's ALPN.)
#[tokio::test]
async fn our_client_against_our_tls_listener_over_https_and_wss() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let mut config = fast_config();
        config.set_tls(Some(
            bayeux::server::TlsConfig::from_pem(
                pki.server.cert.as_bytes(),
                pki.server.key.as_bytes(),
            )
            .unwrap(),
        ));
        let server = Server::new(config);
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let url = listening.url("/cometd");
        assert!(url.starts_with("https://"), "{url}");
        for (transport, name) in [
            (TransportChoice::LongPolling, "long-polling"),
            (TransportChoice::WebSocket, "websocket"),
        ] {
            let client = builder(&url, &pki, transport).build().unwrap();
            round_trip(&client, &format!("/own/{name}")).await;
            assert_eq!(client.transport_name(), name);
            client.disconnect().await.unwrap();
        }
        // Without the CA: the clear, final error, not a retry loop.
        let stranger = Client::builder(&url)
            .platform_roots(true)
            .transport(TransportChoice::LongPolling)
            .build()
            .unwrap();
        let e = stranger.handshake().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert_eq!(e.tls_failure(), Some(TlsFailure::UnknownIssuer), "{e}");
        listening.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

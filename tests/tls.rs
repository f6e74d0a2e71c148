//! HTTPS, WSS and HTTP/2 on the server's own listener, driven by raw clients built here
//! (hyper's client connections over tokio-rustls, hyper-rustls, tokio-tungstenite) so
//! that the protocol version and the connection used are known exactly. Certificates
//! are generated at run time (`common::certs`); everything runs on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bayeux::server::{ClientAuth, Listening, Server, ServerConfig, TlsConfig};
use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
use bytes::Bytes;
use common::certs::{Pem, TestPki, temp_dir};
use common::ws::frame;
use common::{LIMIT, eventually, fast_config, split_connect};
use futures::SinkExt;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as PoolClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as Frame;

/// The server's TLS settings from the test PKI.
fn server_tls(pki: &TestPki) -> TlsConfig {
    TlsConfig::from_pem(pki.server.cert.as_bytes(), pki.server.key.as_bytes()).unwrap()
}

/// Long polls held long enough to act on them (the test's limit is 20 s).
fn held_config() -> ServerConfig {
    fast_config().with_timeout(Duration::from_secs(10))
}

/// A Bayeux server with TLS from `pki` and the rest of `config`, listening on a free
/// loopback port.
async fn tls_server(pki: &TestPki, config: ServerConfig) -> (Server, Listening) {
    let server = Server::new(config.with_tls(server_tls(pki)));
    let listening = server
        .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
        .await
        .unwrap();
    (server, listening)
}

/// A rustls client config that trusts the test CA only, offers `alpn`, and presents
/// `identity` when given (mutual TLS).
fn client_config(pki: &TestPki, alpn: &[&str], identity: Option<&Pem>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(pem) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(pem.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// Opens one TCP connection to `addr` and a TLS session over it (server name
/// 127.0.0.1).
async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// The ClientHello a rustls client sends first, to send part of it.
fn client_hello(pki: &TestPki) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        Arc::new(client_config(pki, &["h2", "http/1.1"], None)),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line = format!("{line}: {cause}");
        source = cause.source();
    }
    line
}

/// How a test client sends its requests.
#[derive(Clone)]
enum Sender {
    /// hyper-util's pooled client (HTTPS through hyper-rustls, or cleartext): HTTP/1.1,
    /// a connection per request in flight.
    Https(PoolClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
    Http(PoolClient<HttpConnector, Full<Bytes>>),
    /// One HTTP/2 connection: every request is a stream of it.
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A raw Bayeux client over one of the senders above.
#[derive(Clone)]
struct Http {
    sender: Sender,
    /// `https://127.0.0.1:PORT` or `http://...`.
    base: String,
    headers: Vec<(&'static str, &'static str)>,
}

/// The reply of one request: protocol version, status, and the JSON body (`null` when
/// it is not JSON).
type Reply = (Version, StatusCode, Value);

impl Http {
    /// Every request over one HTTP/2 connection on `io` (TLS with ALPN h2, or cleartext
    /// with prior knowledge); the handle ends when the connection closes.
    async fn h2_over<I>(io: I, base: String) -> Result<(Http, JoinHandle<()>), String>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let http = Http {
            sender: Sender::H2(send),
            base,
            headers: Vec::new(),
        };
        Ok((http, driver))
    }

    /// HTTPS over HTTP/1.1, trusting the test CA.
    fn https1(pki: &TestPki, listening: &Listening) -> Http {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(pki, &[], None))
            .https_only()
            .enable_http1()
            .build();
        Http {
            sender: Sender::Https(PoolClient::builder(TokioExecutor::new()).build(connector)),
            base: listening.url(""),
            headers: Vec::new(),
        }
    }

    /// Cleartext HTTP/1.1.
    fn http1(listening: &Listening) -> Http {
        Http {
            sender: Sender::Http(PoolClient::builder(TokioExecutor::new()).build_http()),
            base: listening.url(""),
            headers: Vec::new(),
        }
    }

    async fn post_to(&self, path: &str, body: Value) -> Result<Reply, String> {
        let mut request = Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in &self.headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = match &self.sender {
            Sender::Https(c) => c.request(request).await.map_err(|e| format!("{e:?}"))?,
            Sender::Http(c) => c.request(request).await.map_err(|e| format!("{e:?}"))?,
            Sender::H2(s) => s
                .clone()
                .send_request(request)
                .await
                .map_err(|e| chain(&e))?,
        };
        let (version, status) = (response.version(), response.status());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            version,
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// POSTs to the Bayeux endpoint and returns the replies (asserting 200).
    async fn post(&self, body: Value) -> Vec<Value> {
        let (_, status, replies) = self.post_to("/cometd", body).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{replies}");
        replies.as_array().unwrap().clone()
    }

    async fn handshake(&self) -> String {
        let replies = self
            .post(json!({"channel": "/meta/handshake", "version": "1.0",
                         "supportedConnectionTypes": ["long-polling"]}))
            .await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
        replies[0]["clientId"].as_str().unwrap().to_string()
    }

    async fn subscribe(&self, id: &str, channel: &str) {
        let replies = self
            .post(json!({"channel": "/meta/subscribe", "clientId": id, "subscription": channel}))
            .await;
        assert_eq!(replies[0]["successful"], true, "{replies:?}");
    }

    async fn publish(&self, id: &str, channel: &str, data: Value) -> Value {
        let replies = self
            .post(json!({"channel": channel, "clientId": id, "data": data, "id": "p"}))
            .await;
        replies[0].clone()
    }

    /// One `/meta/connect`: (delivered messages, the connect reply).
    async fn connect(&self, id: &str) -> (Vec<Value>, Value) {
        split_connect(
            self.post(json!({"channel": "/meta/connect", "clientId": id,
                             "connectionType": "long-polling"}))
                .await,
        )
    }

    /// A connect held by the server in the background; returns once it is held.
    async fn held_connect(&self, server: &Server, id: &str) -> JoinHandle<(Vec<Value>, Value)> {
        let handle = tokio::spawn({
            let (http, id) = (self.clone(), id.to_string());
            async move { http.connect(&id).await }
        });
        eventually("the held connect", || server.is_connected(id)).await;
        handle
    }
}

#[tokio::test]
async fn https_over_http1_handshakes_subscribes_publishes_and_long_polls() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let (server, listening) = tls_server(&pki, held_config()).await;
        assert!(listening.is_tls());
        let url = listening.url("/cometd");
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        assert!(listening.ws_url("/cometd").starts_with("wss://127.0.0.1:"));
        let http = Http::https1(&pki, &listening);
        let (version, status, replies) = http
            .post_to(
                "/cometd",
                json!({"channel": "/meta/handshake", "version": "1.0"}),
            )
            .await
            .unwrap();
        assert_eq!((version, status), (Version::HTTP_11, StatusCode::OK));
        assert_eq!(replies[0]["successful"], true, "{replies}");
        let id = http.handshake().await;
        http.subscribe(&id, "/chat").await;
        http.connect(&id).await; // the first is answered at once
        let held = http.held_connect(&server, &id).await;
        let reply = http.publish(&id, "/chat", json!("over TLS")).await;
        assert_eq!(reply["successful"], true, "{reply}");
        let (messages, reply) = held.await.unwrap();
        assert_eq!(reply["successful"], true, "{reply}");
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0]["data"], "over TLS");
        listening.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn http2_through_alpn_carries_a_held_long_poll_and_publishes_on_one_connection() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let (server, listening) = tls_server(&pki, held_config()).await;
        // One TCP connection, opened here: every request below is a stream of it.
        let tls = tls_connect(
            listening.local_addr(),
            client_config(&pki, &["h2", "http/1.1"], None),
        )
        .await
        .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (http, _driver) = Http::h2_over(tls, listening.url("")).await.unwrap();
        let (version, _, _) = http
            .post_to(
                "/cometd",
                json!({"channel": "/meta/handshake", "version": "1.0"}),
            )
            .await
            .unwrap();
        assert_eq!(version, Version::HTTP_2);
        let id = http.handshake().await;
        http.subscribe(&id, "/chat").await;
        http.connect(&id).await;

        // A publish on one stream while the session's connect is held on another.
        let held = http.held_connect(&server, &id).await;
        let reply = http.publish(&id, "/chat", json!(1)).await;
        assert_eq!(reply["successful"], true, "{reply}");
        let (messages, reply) = held.await.unwrap();
        assert_eq!(reply["successful"], true, "{reply}");
        assert_eq!(
            messages
                .iter()
                .map(|m| m["data"].clone())
                .collect::<Vec<_>>(),
            vec![json!(1)]
        );

        // A second connect of the session on another stream releases the first at once
        // (answered empty) and is the one that gets the next message.
        let first = http.held_connect(&server, &id).await;
        let second = tokio::spawn({
            let (http, id) = (http.clone(), id.clone());
            async move { http.connect(&id).await }
        });
        let (messages, reply) = first.await.unwrap();
        assert_eq!(reply["successful"], true, "{reply}");
        assert!(messages.is_empty(), "{messages:?}");
        assert!(server.is_connected(&id), "the second connect is held");
        server.publish("/chat", json!(2)).await.unwrap();
        let (messages, reply) = second.await.unwrap();
        assert_eq!(reply["successful"], true, "{reply}");
        assert_eq!(
            messages
                .iter()
                .map(|m| m["data"].clone())
                .collect::<Vec<_>>(),
            vec![json!(2)]
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_workbin_api_and_bayeux_are_served_over_http2_and_tls() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let config = held_config().with_tls(server_tls(&pki));
        let app = DemoApp::new(config, Access::demo(), WorkbinConfig::default(), "/cometd");
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let tls = tls_connect(listening.local_addr(), client_config(&pki, &["h2"], None))
            .await
            .unwrap();
        let (mut http, _driver) = Http::h2_over(tls, listening.url("")).await.unwrap();
        http.headers = vec![("authorization", "Basic YWdlbnQxOng=")]; // agent1:x
        let id = http.handshake().await;
        http.subscribe(&id, "/v2/me/emails").await;
        http.connect(&id).await;
        let held = http.held_connect(app.server(), &id).await;
        let (version, status, body) = http
            .post_to(
                "/api/v2/users/agent1/workbins/wb1",
                json!({"operationName": "AddEmail", "uri": ".../FE7978FEWFE"}),
            )
            .await
            .unwrap();
        assert_eq!(
            (version, status),
            (Version::HTTP_2, StatusCode::OK),
            "{body}"
        );
        assert_eq!(body, json!({"statusCode": 0, "referenceId": 1}));
        let (messages, _) = held.await.unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        let email = &messages[0]["data"]["email"];
        assert_eq!(email["id"], "FE7978FEWFE", "{email}");
        // The interactions' URIs name the server as clients reach it: https.
        let uri = email["uri"].as_str().unwrap();
        assert!(
            uri.starts_with(&format!("https://{}/", listening.local_addr())),
            "{uri}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn websocket_upgrades_over_tls() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let (server, listening) = tls_server(&pki, held_config()).await;
        // WebSocket is an HTTP/1.1 upgrade: the client offers http/1.1 only, as browsers
        // do for their sockets.
        let tls = tls_connect(
            listening.local_addr(),
            client_config(&pki, &["http/1.1"], None),
        )
        .await
        .unwrap();
        let (mut ws, response) = tokio_tungstenite::client_async(listening.ws_url("/cometd"), tls)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Frame::text(
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["websocket"]}])
            .to_string(),
        ))
        .await
        .unwrap();
        let reply = frame(&mut ws).await;
        assert_eq!(reply[0]["successful"], true, "{reply:?}");
        let id = reply[0]["clientId"].as_str().unwrap().to_string();
        for request in [
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/push"}]),
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}]),
        ] {
            ws.send(Frame::text(request.to_string())).await.unwrap();
            let reply = frame(&mut ws).await;
            assert_eq!(reply[0]["successful"], true, "{reply:?}");
        }
        server
            .publish("/push", json!("pushed over wss"))
            .await
            .unwrap();
        let pushed = frame(&mut ws).await;
        assert_eq!(pushed[0]["data"], "pushed over wss", "{pushed:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cleartext_http2_with_prior_knowledge_shares_the_port_with_http1() {
    timeout(LIMIT, async {
        let server = Server::new(held_config().with_http2_prior_knowledge(true));
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        assert!(listening.url("").starts_with("http://"));
        let tcp = TcpStream::connect(listening.local_addr()).await.unwrap();
        let (h2, _driver) = Http::h2_over(tcp, listening.url("")).await.unwrap();
        let (version, _, _) = h2
            .post_to(
                "/cometd",
                json!({"channel": "/meta/handshake", "version": "1.0"}),
            )
            .await
            .unwrap();
        assert_eq!(version, Version::HTTP_2);
        let id = h2.handshake().await;
        h2.subscribe(&id, "/chat").await;
        h2.connect(&id).await;
        let held = h2.held_connect(&server, &id).await;
        // An HTTP/1.1 client on the same port publishes.
        let h1 = Http::http1(&listening);
        let (version, _, _) = h1
            .post_to(
                "/cometd",
                json!({"channel": "/meta/handshake", "version": "1.0"}),
            )
            .await
            .unwrap();
        assert_eq!(version, Version::HTTP_11);
        let reply = h1.publish(&id, "/chat", json!("cleartext")).await;
        assert_eq!(reply["successful"], true, "{reply}");
        let (messages, _) = held.await.unwrap();
        assert_eq!(messages[0]["data"], "cleartext", "{messages:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_prior_knowledge_cleartext_http2_is_not_spoken() {
    timeout(LIMIT, async {
        let server = Server::new(fast_config());
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let tcp = TcpStream::connect(listening.local_addr()).await.unwrap();
        let (h2, _driver) = Http::h2_over(tcp, listening.url("")).await.unwrap();
        let result = h2
            .post_to(
                "/cometd",
                json!({"channel": "/meta/handshake", "version": "1.0"}),
            )
            .await;
        assert!(result.is_err(), "{result:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn idle_http2_connections_and_silent_prefaces_are_closed_after_the_header_timeout() {
    timeout(LIMIT, async {
        const IDLE: Duration = Duration::from_millis(300);
        let pki = TestPki::new();
        let (_server, listening) = tls_server(&pki, fast_config().with_header_timeout(IDLE)).await;
        let tls = tls_connect(listening.local_addr(), client_config(&pki, &["h2"], None))
            .await
            .unwrap();
        let (http, driver) = Http::h2_over(tls, listening.url("")).await.unwrap();
        // The server's idle time starts once it has answered, after this instant.
        let asked = Instant::now();
        http.handshake().await;
        driver.await.unwrap();
        assert!(
            asked.elapsed() >= IDLE,
            "closed after {:?}",
            asked.elapsed()
        );

        // Cleartext with prior knowledge: a client that sends nothing is not kept
        // waiting for its preface forever.
        let server = Server::new(
            fast_config()
                .with_header_timeout(IDLE)
                .with_http2_prior_knowledge(true),
        );
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let started = Instant::now();
        let mut silent = TcpStream::connect(listening.local_addr()).await.unwrap();
        let n = silent.read(&mut [0u8; 16]).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(
            started.elapsed() >= IDLE,
            "closed after {:?}",
            started.elapsed()
        );
    })
    .await
    .unwrap();
}

/// A handshake over a fresh TLS connection with `config`: the status, or why it failed.
async fn handshake_with(
    listening: &Listening,
    config: rustls::ClientConfig,
) -> Result<StatusCode, String> {
    let tls = tls_connect(listening.local_addr(), config)
        .await
        .map_err(|e| e.to_string())?;
    let (http, _driver) = Http::h2_over(tls, listening.url("")).await?;
    let (_, status, _) = http
        .post_to(
            "/cometd",
            json!({"channel": "/meta/handshake", "version": "1.0"}),
        )
        .await?;
    Ok(status)
}

#[tokio::test]
async fn mutual_tls_serves_trusted_client_certificates_only() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let tls = server_tls(&pki)
            .with_client_ca_pem(pki.ca.as_bytes(), ClientAuth::Required)
            .unwrap();
        assert_eq!(tls.client_auth(), Some(ClientAuth::Required));
        let server = Server::new(fast_config().with_tls(tls));
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        let with = |identity: Option<&Pem>| client_config(&pki, &["h2"], identity);
        assert_eq!(
            handshake_with(&listening, with(Some(&pki.client))).await,
            Ok(StatusCode::OK)
        );
        // The server's TLS alerts say why.
        let refused = handshake_with(&listening, with(None)).await.unwrap_err();
        assert!(refused.contains("CertificateRequired"), "{refused}");
        let refused = handshake_with(&listening, with(Some(&pki.untrusted_client)))
            .await
            .unwrap_err();
        assert!(refused.contains("UnknownCA"), "{refused}");
        // The refusals cost nothing: a trusted client is still served.
        assert_eq!(
            handshake_with(&listening, with(Some(&pki.client))).await,
            Ok(StatusCode::OK)
        );

        // Optional client authentication: no certificate is fine, an untrusted one is not.
        let tls = server_tls(&pki)
            .with_client_ca_pem(pki.ca.as_bytes(), ClientAuth::Optional)
            .unwrap();
        let server = Server::new(fast_config().with_tls(tls));
        let listening = server
            .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
            .await
            .unwrap();
        assert_eq!(
            handshake_with(&listening, with(None)).await,
            Ok(StatusCode::OK)
        );
        assert_eq!(
            handshake_with(&listening, with(Some(&pki.client))).await,
            Ok(StatusCode::OK)
        );
        let refused = handshake_with(&listening, with(Some(&pki.untrusted_client)))
            .await
            .unwrap_err();
        assert!(refused.contains("UnknownCA"), "{refused}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_after_its_timeout_and_costs_no_one_else() {
    timeout(LIMIT, async {
        const HANDSHAKE: Duration = Duration::from_secs(2);
        let pki = TestPki::new();
        let (_server, listening) =
            tls_server(&pki, fast_config().with_tls_handshake_timeout(HANDSHAKE)).await;
        let addr = listening.local_addr();
        let started = Instant::now();
        // Clients that open TCP and send nothing, and one that sends half a ClientHello.
        let mut stalled = Vec::new();
        for _ in 0..20 {
            stalled.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut half = TcpStream::connect(addr).await.unwrap();
        let hello = client_hello(&pki);
        half.write_all(&hello[..hello.len() / 2]).await.unwrap();
        stalled.push(half);
        // When the server drops each of them (end of stream, or a reset).
        let dropped: Vec<JoinHandle<Instant>> = stalled
            .into_iter()
            .map(|mut stream| {
                tokio::spawn(async move {
                    let _ = stream.read(&mut [0u8; 64]).await;
                    Instant::now()
                })
            })
            .collect();
        // Meanwhile another client is served: TLS handshake, HTTP/2, Bayeux handshake.
        assert_eq!(
            handshake_with(&listening, client_config(&pki, &["h2"], None)).await,
            Ok(StatusCode::OK)
        );
        let served = Instant::now();
        for handle in dropped {
            let at = handle.await.unwrap();
            assert!(
                at > served,
                "a stalled client was dropped before another was served"
            );
            assert!(
                at - started >= HANDSHAKE,
                "dropped after {:?}, before the TLS timeout",
                at - started
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_answers_a_long_poll_held_on_http2_and_closes_the_connection() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let (server, listening) = tls_server(&pki, held_config()).await;
        let tls = tls_connect(listening.local_addr(), client_config(&pki, &["h2"], None))
            .await
            .unwrap();
        let (http, driver) = Http::h2_over(tls, listening.url("")).await.unwrap();
        let id = http.handshake().await;
        http.connect(&id).await;
        let held = http.held_connect(&server, &id).await;
        listening.shutdown().await.unwrap();
        let (_, reply) = held.await.unwrap();
        assert_eq!(reply["successful"], true, "{reply}");
        driver.await.unwrap();
    })
    .await
    .unwrap();
}

#[test]
fn certificate_and_key_errors_are_one_line_naming_the_file() {
    let pki = TestPki::new();
    let dir = pki.write_to(&temp_dir("tls-errors"));
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        dir.join("garbled.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases = [
        (
            "missing.pem",
            "server.key",
            format!(
                "tls: cannot read certificate file {}: No such file",
                path("missing.pem")
            ),
        ),
        (
            "server.pem",
            "missing.key",
            format!(
                "tls: cannot read private key file {}: No such file",
                path("missing.key")
            ),
        ),
        (
            "server.key",
            "server.key",
            format!("tls: no certificate in {}", path("server.key")),
        ),
        (
            "server.pem",
            "server.pem",
            format!("tls: no private key in {}", path("server.pem")),
        ),
        (
            "garbled.pem",
            "server.key",
            format!("tls: malformed PEM in {}: bad base64", path("garbled.pem")),
        ),
        (
            "server.pem",
            "client.key",
            format!(
                "tls: the private key in {} does not match the certificate in {}",
                path("client.key"),
                path("server.pem")
            ),
        ),
    ];
    for (cert, key, expected) in cases {
        let e = TlsConfig::from_pem_files(dir.join(cert), dir.join(key))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&expected), "{cert} + {key}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let tls = TlsConfig::from_pem_files(dir.join("server.pem"), dir.join("server.key")).unwrap();
    let e = tls
        .clone()
        .with_client_ca_file(dir.join("missing-ca.pem"), ClientAuth::Required)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "tls: cannot read client CA file {}",
            path("missing-ca.pem")
        )),
        "{e}"
    );
    let e = tls
        .with_client_ca_file(dir.join("server.key"), ClientAuth::Required)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("tls: no certificate in {}", path("server.key"))),
        "{e}"
    );
    // The Debug output names the files, never the key.
    let tls = TlsConfig::from_pem_files(dir.join("server.pem"), dir.join("server.key")).unwrap();
    let debug = format!("{tls:?}");
    assert!(
        debug.contains("server.pem") && debug.contains("\"h2\""),
        "{debug}"
    );
    assert!(!debug.contains("PRIVATE"), "{debug}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `Set-Cookie` of a handshake POSTed over the server's own TLS (HTTP/1.1), from
/// `origin` if given.
async fn handshake_cookie(pki: &TestPki, listening: &Listening, origin: Option<&str>) -> String {
    let tls = tls_connect(
        listening.local_addr(),
        client_config(pki, &["http/1.1"], None),
    )
    .await
    .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::post("/cometd")
        .header("host", listening.local_addr().to_string())
        .header("content-type", "application/json");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = send
        .send_request(
            request
                .body(Full::new(Bytes::from(
                    json!({"channel": "/meta/handshake", "version": "1.0"}).to_string(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_browser_cookie_is_secure_under_the_servers_own_tls() {
    timeout(LIMIT, async {
        let pki = TestPki::new();
        let (_, listening) = tls_server(&pki, fast_config()).await;
        let cookie = handshake_cookie(&pki, &listening, None).await;
        let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
        assert!(attributes[0].starts_with("BAYEUX_BROWSER="), "{cookie}");
        for wanted in ["Path=/", "HttpOnly", "Secure", "SameSite=Lax"] {
            assert!(attributes.contains(&wanted), "{wanted} missing: {cookie}");
        }
        listening.shutdown().await.unwrap();
        // With CORS origins, cross-site pages need it sent back: `SameSite=None`, which
        // browsers take only with `Secure`, and `Partitioned`.
        let origin = "https://desk.example";
        let (_, listening) =
            tls_server(&pki, fast_config().with_cors_origins(vec![origin.into()])).await;
        let cookie = handshake_cookie(&pki, &listening, Some(origin)).await;
        let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
        for wanted in ["Secure", "SameSite=None", "Partitioned", "HttpOnly"] {
            assert!(attributes.contains(&wanted), "{wanted} missing: {cookie}");
        }
        listening.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

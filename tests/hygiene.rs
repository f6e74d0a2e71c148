//! What maintained crates now do and how HTTP behaves under bad input: the client's
//! cookie jar (path, domain, expiry), Argon2 users and `bayeux hash-password`, lingering
//! close (a client that writes its whole oversized body still reads its 413), form
//! bodies, the two channel grammars, and plain 404s outside the workbin API.

mod common;

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux::client::transport::{CookieJar, HttpPool};
use bayeux::client::{Client, ErrorKind, basic_authorization};
use bayeux::protocol::ChannelGrammar;
use bayeux::workbin::{Access, DemoApp, UserDirectory, WorkbinConfig};
use bytes::Bytes;
use common::{LIMIT, TestServer, fast_config};
use futures::StreamExt;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::timeout;

/// The lingering tests write tens of MiB through an unoptimised server: more room.
const SLOW_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------
// The cookie jar over HTTP.

/// A stub origin that records each request's path and `Cookie` header and answers
/// with the `Set-Cookie` headers `answer` gives for the path.
async fn cookie_origin(
    answer: fn(&str) -> Vec<&'static str>,
) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let path = req.uri().path().to_string();
                    let cookie = req
                        .headers()
                        .get(http::header::COOKIE)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    log.lock().unwrap().push((path.clone(), cookie));
                    let mut res = Response::new(Full::new(Bytes::from_static(b"[]")));
                    for set in answer(&path) {
                        res.headers_mut()
                            .append(http::header::SET_COOKIE, set.parse().unwrap());
                    }
                    async move { Ok::<_, Infallible>(res) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, seen)
}

/// The cookie names and values of a header, sorted.
fn pairs(header: &str) -> Vec<&str> {
    let mut v: Vec<&str> = header.split("; ").filter(|s| !s.is_empty()).collect();
    v.sort_unstable();
    v
}

#[tokio::test]
async fn the_cookie_jar_sends_each_cookie_where_its_path_and_expiry_allow() {
    timeout(LIMIT, async {
        // A load balancer in front of a CometD server: its stickiness cookie for the
        // whole site, the server's cookie for its path, one for another application,
        // and cookies already expired.
        let (base, seen) = cookie_origin(|path| match path {
            "/cometd/handshake" => vec![
                "lb=node1; Path=/",
                "BAYEUX_BROWSER=b1; Path=/cometd; HttpOnly",
                "app=2; Path=/app",
                "gone=3; Path=/; Max-Age=0",
                "old=4; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                "elsewhere=5; Domain=other.example; Path=/",
            ],
            "/cometd/disconnect" => vec!["lb=; Path=/; Max-Age=0"],
            _ => vec![],
        })
        .await;
        let pool = HttpPool::new();
        let jar = CookieJar::new();
        let post = async |path: &str| {
            let url = format!("{base}{path}").parse().unwrap();
            pool.post(
                &url,
                &HeaderMap::new(),
                Some(&jar),
                Bytes::from_static(b"[]"),
            )
            .await
            .unwrap();
        };
        post("/cometd/handshake").await;
        post("/cometd/connect").await;
        post("/app/x").await;
        post("/other").await;
        post("/cometd/disconnect").await;
        post("/cometd/connect").await;
        let seen = seen.lock().unwrap().clone();
        let cookies: Vec<(&str, Vec<&str>)> = seen
            .iter()
            .map(|(path, cookie)| (path.as_str(), pairs(cookie)))
            .collect();
        assert_eq!(
            cookies,
            [
                ("/cometd/handshake", vec![]),
                ("/cometd/connect", vec!["BAYEUX_BROWSER=b1", "lb=node1"]),
                ("/app/x", vec!["app=2", "lb=node1"]),
                ("/other", vec!["lb=node1"]),
                ("/cometd/disconnect", vec!["BAYEUX_BROWSER=b1", "lb=node1"]),
                // Max-Age=0 deleted the stickiness cookie.
                ("/cometd/connect", vec!["BAYEUX_BROWSER=b1"]),
            ]
        );
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Lingering close: an early answer reaches a client that writes its whole body first.

/// What a naive client does: writes the request head and `body_len` bytes of body (in
/// chunked encoding when `chunked`), ignoring write errors until done or the server
/// closes, and only then reads. Returns whether the whole body was written, and what
/// was read (until the server closed).
async fn write_everything_then_read(
    addr: std::net::SocketAddr,
    head: &str,
    body_len: usize,
    chunked: bool,
) -> (bool, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut wrote_all = stream.write_all(head.as_bytes()).await.is_ok();
    let mut left = body_len;
    while wrote_all && left > 0 {
        let n = left.min(chunk.len());
        let result = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&chunk[..n]);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed).await
        } else {
            stream.write_all(&chunk[..n]).await
        };
        // EPIPE or a reset: the server closed; stop writing and read what came.
        wrote_all = result.is_ok();
        left -= n;
    }
    if wrote_all && chunked {
        wrote_all = stream.write_all(b"0\r\n\r\n").await.is_ok();
    }
    let mut read = Vec::new();
    let _ = stream.read_to_end(&mut read).await;
    (wrote_all, String::from_utf8_lossy(&read).into_owned())
}

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_client_that_writes_a_64_mib_body_before_reading_gets_its_413() {
    timeout(SLOW_LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let addr = t.listening.local_addr();
        // Declared too large: answered at once, then the body is read and discarded.
        let head = format!(
            "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            64 * MIB
        );
        let (wrote_all, reply) = write_everything_then_read(addr, &head, 64 * MIB, false).await;
        assert!(wrote_all, "the server closed while the client was writing");
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply:?}");
        assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
        assert!(reply.contains("maxMessageSize"), "{reply}");
        // Over the limit only once read (chunked, no length): the same.
        let head = "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (wrote_all, reply) = write_everything_then_read(addr, head, 8 * MIB, true).await;
        assert!(wrote_all && reply.starts_with("HTTP/1.1 413"), "{reply:?}");
        // A 405 and a 404 answered before their bodies were read.
        let head = format!("PUT /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 4 * MIB);
        let (wrote_all, reply) = write_everything_then_read(addr, &head, 4 * MIB, false).await;
        assert!(wrote_all && reply.starts_with("HTTP/1.1 405"), "{reply:?}");
        let head = format!("POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 4 * MIB);
        let (wrote_all, reply) = write_everything_then_read(addr, &head, 4 * MIB, false).await;
        assert!(wrote_all && reply.starts_with("HTTP/1.1 404"), "{reply:?}");
        // The server is as it was.
        let id = t.handshake().await;
        assert!(!id.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_workbin_api_lingers_too() {
    timeout(SLOW_LIMIT, async {
        let app = DemoApp::new(
            fast_config(),
            Access::demo(),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let head = format!(
            "POST /api/v2/users/agent1/workbins/wb1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            64 * MIB
        );
        let (wrote_all, reply) =
            write_everything_then_read(listening.local_addr(), &head, 64 * MIB, false).await;
        assert!(wrote_all, "the server closed while the client was writing");
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply:?}");
        assert!(reply.contains(r#""statusCode":6"#), "{reply}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn lingering_ends_after_a_silence() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut stream = TcpStream::connect(t.listening.local_addr()).await.unwrap();
        let head = format!(
            "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            64 * MIB
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b'x'; MIB]).await.unwrap();
        // Then nothing: the server answers, waits a bounded time (5 s of silence), and
        // closes; the client reads the answer and the end of the connection.
        let started = tokio::time::Instant::now();
        let mut read = Vec::new();
        let _ = stream.read_to_end(&mut read).await;
        let reply = String::from_utf8_lossy(&read);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Form bodies, as Faye and old CometD clients send them.

async fn post_form(t: &TestServer, body: String) -> (u16, String) {
    let req = Request::builder()
        .method("POST")
        .uri(t.url())
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = t.http.request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn form(message: &Value) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("message", &message.to_string())
        .finish()
}

#[tokio::test]
async fn form_bodies_are_served_as_faye_serves_them() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let handshake = json!([{"channel": "/meta/handshake", "version": "1.0",
                                "supportedConnectionTypes": ["long-polling"], "id": "1"}]);
        let (status, text) = post_form(&t, form(&handshake)).await;
        assert_eq!(status, 200, "{text}");
        let replies: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(replies[0]["successful"], true, "{replies}");
        let client_id = replies[0]["clientId"].as_str().unwrap();
        // One message object, and other fields beside it, are fine too.
        let subscribe = json!({"channel": "/meta/subscribe", "clientId": client_id,
                               "subscription": "/chat", "id": "2"});
        let (status, text) = post_form(&t, format!("{}&jsonp=ignored", form(&subscribe))).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()[0]["successful"],
            true
        );
        // A form without messages says what is missing, not "malformed JSON".
        let (status, text) = post_form(&t, "data=1".into()).await;
        assert_eq!(status, 400);
        assert!(text.contains("form") && text.contains("message"), "{text}");
        let (status, text) = post_form(&t, "message=%7Bnot-json".into()).await;
        assert_eq!(status, 400);
        assert!(text.contains("message field"), "{text}");
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Channel grammars.

#[tokio::test]
async fn the_strict_grammar_refuses_dots_and_the_cometd_one_serves_them() {
    timeout(LIMIT, async {
        // Strict (the default): a 400 for the subscribe and the publish.
        let t = TestServer::with_config(fast_config()).await;
        let id = t.handshake().await;
        let reply = t.subscribe(&id, json!("/stock/AAPL.O")).await;
        assert_eq!(reply["successful"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().starts_with("400:"),
            "{reply}"
        );
        let reply = t.publish(&id, "/stock/AAPL.O", json!(1)).await;
        assert!(
            reply["error"].as_str().unwrap().starts_with("400:"),
            "{reply}"
        );
        assert!(t.server.publish("/stock/AAPL.O", json!(1)).await.is_err());
        // The client checks the Bayeux grammar by default, and the server has the last
        // word.
        let client = Client::builder(&t.url()).build().unwrap();
        client.handshake().await.unwrap();
        let invalid = client.subscribe("/stock/AAPL.O").await.err().unwrap();
        assert_eq!(invalid.kind(), ErrorKind::InvalidChannel, "{invalid}");
        client.disconnect().await.unwrap();
        let client = Client::builder(&t.url())
            .channel_grammar(ChannelGrammar::Cometd)
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let refused = client.subscribe("/stock/AAPL.O").await.err().unwrap();
        assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
        client.disconnect().await.unwrap();

        // CometD's grammar: served, over the wire and in process.
        let t = TestServer::with_config(fast_config().with_channel_grammar(ChannelGrammar::Cometd))
            .await;
        let client = Client::builder(&t.url())
            .channel_grammar(ChannelGrammar::Cometd)
            .build()
            .unwrap();
        client.handshake().await.unwrap();
        let mut quotes = client.subscribe("/stock/*").await.unwrap();
        let mut exact = client.subscribe("/stock/AAPL.O").await.unwrap();
        client
            .publish("/stock/AAPL.O", json!({"bid": 1}))
            .await
            .unwrap();
        t.server
            .publish("/stock/MSFT.OQ", json!({"bid": 2}))
            .await
            .unwrap();
        let first = quotes.next().await.unwrap();
        assert_eq!(first.channel_str(), "/stock/AAPL.O");
        assert_eq!(quotes.next().await.unwrap().channel_str(), "/stock/MSFT.OQ");
        assert_eq!(exact.next().await.unwrap().data, Some(json!({"bid": 1})));
        // The structure rules still hold.
        let id = t.handshake().await;
        let reply = t.subscribe(&id, json!("/stock//AAPL.O")).await;
        assert_eq!(reply["successful"], false, "{reply}");
        client.disconnect().await.unwrap();
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------
// 404s: the workbin API's envelope under /api/ only.

#[tokio::test]
async fn a_404_outside_the_workbin_api_is_plain() {
    timeout(LIMIT, async {
        let app = DemoApp::new(
            fast_config(),
            Access::demo(),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let get = async |path: &str| {
            let res = http
                .get(listening.url(path).parse().unwrap())
                .await
                .unwrap();
            let status = res.status().as_u16();
            let kind = res.headers()[http::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_string();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, kind, String::from_utf8_lossy(&body).into_owned())
        };
        // "/" and "/favicon.ico" are the web demo's (tests/workbin.rs).
        for path in ["/index.htm", "/favicon.png", "/cometdx", "/apix"] {
            let (status, kind, body) = get(path).await;
            assert_eq!(status, 404, "{path}");
            assert!(kind.starts_with("text/plain"), "{path}: {kind}");
            assert!(!body.contains("statusCode"), "{path}: {body}");
        }
        for path in ["/api", "/api/v2/nothing"] {
            let (status, kind, body) = get(path).await;
            assert_eq!(status, 404, "{path}");
            assert!(kind.starts_with("application/json"), "{path}: {kind}");
            let envelope: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(envelope["statusCode"], 4, "{path}: {body}");
        }
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Users: Argon2 lines, `bayeux hash-password`, and warnings for older secrets.

/// Runs `bayeux hash-password` with `password` on its standard input.
async fn hash_password_line(args: &[&str], password: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bayeux"))
        .arg("hash-password")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A child that refuses its arguments exits without reading: a broken pipe here is
    // part of that outcome, which the caller checks.
    if let Err(e) = stdin.write_all(password.as_bytes()).await {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

#[tokio::test]
async fn hash_password_prints_a_line_the_server_accepts() {
    timeout(LIMIT, async {
        let out = hash_password_line(&["boss", "--role", "supervisor"], "s3cret: yes\n").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.starts_with("boss:$argon2id$v=19$"), "{line}");
        assert!(line.trim_end().ends_with(":supervisor"), "{line}");
        let out = hash_password_line(&["agent1"], "agent-pw").await;
        assert!(out.status.success());
        let agent = String::from_utf8(out.stdout).unwrap();
        assert!(agent.trim_end().ends_with(":agent"), "{agent}");
        // Bad input is refused with a message.
        let out = hash_password_line(&["a:b"], "pw\n").await;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("':'"));
        let out = hash_password_line(&["x", "--role", "admin"], "pw\n").await;
        assert!(!out.status.success());
        let out = hash_password_line(&["x"], "\n").await;
        assert!(!out.status.success());

        // The file of those lines checks credentials.
        let users = UserDirectory::parse(&format!("{line}{agent}")).unwrap();
        assert!(users.warnings().is_empty(), "{:?}", users.warnings());
        let app = DemoApp::new(
            fast_config(),
            Access::checked(users),
            WorkbinConfig::default(),
            "/cometd",
        );
        let listening = app.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let assign = async |user: &str, password: &str| {
            let req = Request::builder()
                .method("POST")
                .uri(listening.url("/api/v2/users/agent1/workbins/wb1"))
                .header("authorization", basic_authorization(user, password))
                .body(Full::new(Bytes::from(
                    json!({"operationName": "AddEmail", "uri": "x/E1"}).to_string(),
                )))
                .unwrap();
            http.request(req).await.unwrap().status().as_u16()
        };
        assert_eq!(assign("boss", "s3cret: yes").await, 200);
        assert_eq!(assign("boss", "s3cret").await, 401);
        assert_eq!(assign("agent1", "agent-pw").await, 403);
        let agent = Client::builder(&listening.url("/cometd"))
            .basic_auth("agent1", "agent-pw")
            .build()
            .unwrap();
        agent.handshake().await.unwrap();
        agent.disconnect().await.unwrap();
        let intruder = Client::builder(&listening.url("/cometd"))
            .basic_auth("agent1", "wrong")
            .build()
            .unwrap();
        // Refused by the server for the password, not failed on the way: a Bayeux
        // refusal with its reason, and the client stops (reconnect: none).
        let e = intruder.handshake().await.unwrap_err();
        assert_eq!(e.kind(), bayeux::client::ErrorKind::Closed, "{e}");
        assert_eq!(
            e.bayeux_error().map(|b| b.to_string()).as_deref(),
            Some("403::Handshake denied: invalid credentials"),
            "{e}"
        );
        // An unknown user gets the very same answer.
        let stranger = Client::builder(&listening.url("/cometd"))
            .basic_auth("nobody", "agent-pw")
            .build()
            .unwrap();
        let e = stranger.handshake().await.unwrap_err();
        assert_eq!(
            e.bayeux_error().map(|b| b.to_string()).as_deref(),
            Some("403::Handshake denied: invalid credentials"),
            "{e}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn serve_warns_about_secrets_that_are_not_argon2() {
    timeout(LIMIT, async {
        let dir = common::certs::temp_dir("users");
        let file = dir.join("users");
        std::fs::write(
            &file,
            "boss:SHA256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8:supervisor\n",
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bayeux"))
            .args(["serve", "--listen", "127.0.0.1:0", "--users"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut warning = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("SHA-256") {
                warning = Some(line);
                break;
            }
        }
        let warning = warning.expect("a warning about the SHA-256 line");
        assert!(
            warning.contains("bayeux hash-password boss --role supervisor"),
            "{warning}"
        );
        child.kill().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

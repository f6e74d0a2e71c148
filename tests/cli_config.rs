//! The `bayeux` binary as an operator meets it: `serve --config` and its precedence,
//! settings refused in one line, network commands that fail fast with the cause,
//! shutdown on signals, and `publish`.

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::timeout;

fn bayeux() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bayeux"));
    command.kill_on_drop(true).stdin(Stdio::null());
    command
}

/// Runs `bayeux args` to its end (bounded by the test's limit).
async fn run(args: &[&str]) -> Output {
    bayeux().args(args).output().await.unwrap()
}

/// Its standard error, which must be one line.
fn one_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    stderr.trim_end().to_string()
}

/// A fresh folder for a test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bayeux-cli-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port with nobody listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A server that accepts connections and never answers; they are held until the
/// returned task is dropped with the runtime.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// A server that answers every request with an HTML 404 page, as a web server that is
/// not a Bayeux server would.
async fn html_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let page = "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n\
                            <body>\n<h1>Not Found</h1>\n<p>The requested URL was not found.</p>\n</body>\n</html>\n";
                let response = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

/// `bayeux serve` started with `args` (on a free port unless they say otherwise), its
/// Bayeux URL from the start-up line, and its stderr lines.
struct Served {
    child: Child,
    url: String,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    /// The lines printed before the start-up line.
    early: Vec<String>,
}

impl Served {
    async fn start(args: &[&str]) -> Served {
        let mut child = bayeux()
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        // The start-up line names the URL; it may be printed or logged.
        let mut early = Vec::new();
        let line = timeout(Duration::from_secs(10), async {
            loop {
                let line = tokio::select! {
                    line = stdout.next_line() => line,
                    line = stderr.next_line() => line,
                };
                match line.unwrap() {
                    Some(line) if line.contains("serving Bayeux") => return line,
                    Some(line) => early.push(line),
                    None => panic!("serve ended before it said where it serves"),
                }
            }
        })
        .await
        .expect("a start-up line within 10 s");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line}"))
            .to_string();
        Served {
            child,
            url,
            stdout,
            stderr,
            early,
        }
    }

    /// The next line on stdout or stderr that contains `text`, within 10 s.
    async fn line_with(&mut self, text: &str) -> String {
        if let Some(i) = self.early.iter().position(|l| l.contains(text)) {
            return self.early.remove(i);
        }
        timeout(Duration::from_secs(10), async {
            loop {
                let line = tokio::select! {
                    line = self.stdout.next_line() => line,
                    line = self.stderr.next_line() => line,
                };
                match line.unwrap() {
                    Some(line) if line.contains(text) => return line,
                    Some(_) => {}
                    None => panic!("the output ended before a line with {text:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {text:?} within 10 s"))
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The rest of the output and the exit status.
    async fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let mut rest = String::new();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        while let Ok(Some(line)) = self.stdout.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        (self.child.wait().await.unwrap(), rest)
    }
}

/// POSTs a handshake to `url` and returns the advice of the reply.
async fn handshake_advice(url: &str) -> Value {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let body = json!([{"channel": "/meta/handshake", "version": "1.0",
        "supportedConnectionTypes": ["long-polling"]}]);
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let response = http.request(request).await.unwrap();
    use http_body_util::BodyExt;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let replies: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(replies[0]["successful"], true, "{replies}");
    replies[0]["advice"].clone()
}

#[tokio::test]
async fn the_config_file_sets_what_flags_do_not_and_flags_override_it() {
    timeout(LIMIT, async {
        let dir = temp_dir("precedence");
        let file = dir.join("bayeux.toml");
        std::fs::write(
            &file,
            "# flag names and CometD's\nlisten = \"127.0.0.1:0\"\npath = \"/bayeux\"\n\
             timeout = \"1s\"\nmaxInterval = 3000\ninterval = 0\noverflow = \"drop-oldest\"\n",
        )
        .unwrap();
        let config = file.display().to_string();
        let mut served = Served::start(&["--config", &config]).await;
        assert!(served.url.ends_with("/bayeux"), "{}", served.url);
        assert_eq!(handshake_advice(&served.url).await["timeout"], 1000);
        served.signal(libc::SIGINT);
        assert!(served.wait().await.0.success());

        let mut served =
            Served::start(&["--config", &config, "--path", "/cometd", "--timeout", "2s"]).await;
        assert!(served.url.ends_with("/cometd"), "{}", served.url);
        assert_eq!(handshake_advice(&served.url).await["timeout"], 2000);
        served.signal(libc::SIGINT);
        assert!(served.wait().await.0.success());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn config_file_errors_name_the_file_the_line_and_the_key() {
    timeout(LIMIT, async {
        let dir = temp_dir("errors");
        let cases = [
            (
                "path = \"/c\"\nmax_queue = 3\n",
                "line 2: unknown key `max_queue` (did you mean `max-queue`?)",
            ),
            (
                "maxLazyTimeout = 3\n",
                "line 1: unknown key `maxLazyTimeout`",
            ),
            (
                "\nmaxQueue = \"ten\"\n",
                "line 2: maxQueue: invalid type: string \"ten\"",
            ),
            (
                "timeout = \"3 fortnights\"\n",
                "line 1: timeout: invalid duration \"3 fortnights\"",
            ),
            (
                "overflow = \"drop-all\"\n",
                "line 1: overflow: unknown variant `drop-all`",
            ),
            (
                "listen = \"localhost\"\n",
                "line 1: listen: invalid socket address",
            ),
            ("max-batch = 0\n", "max-batch = 0 in "),
            ("timeout = [\n", "line "),
        ];
        for (i, (text, expected)) in cases.into_iter().enumerate() {
            let file = dir.join(format!("case{i}.toml"));
            std::fs::write(&file, text).unwrap();
            let out = run(&["serve", "--config", &file.display().to_string()]).await;
            let line = one_line(&out);
            assert_eq!(out.status.code(), Some(2), "{line}");
            assert!(line.starts_with("bayeux: "), "{line}");
            assert!(line.contains(&file.display().to_string()), "{line}");
            assert!(line.contains(expected), "{expected:?} in {line}");
            assert!(out.stdout.is_empty(), "nothing is served");
        }
        let out = run(&[
            "serve",
            "--config",
            &dir.join("missing.toml").display().to_string(),
        ])
        .await;
        let line = one_line(&out);
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert!(
            line.starts_with("bayeux: cannot read config file "),
            "{line}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn serve_refuses_settings_that_cannot_work_in_one_line() {
    timeout(LIMIT, async {
        let dir = temp_dir("refusals");
        let empty = dir.join("empty-users");
        std::fs::write(&empty, "# nobody yet\n\n").unwrap();
        let twice = dir.join("twice-users");
        std::fs::write(&twice, "a:x:agent\nb:y:supervisor\na:z:agent\n").unwrap();
        let (empty, twice) = (empty.display().to_string(), twice.display().to_string());
        let cases: Vec<(Vec<&str>, String)> = vec![
            (
                vec!["--path", "cometd"],
                "bayeux: --path cometd: the path must start with / (e.g. /cometd)".into(),
            ),
            (
                vec!["--max-batch", "0"],
                "bayeux: --max-batch 0: must be at least 1".into(),
            ),
            (
                vec!["--max-message-size", "0"],
                "bayeux: --max-message-size 0: must be at least 1".into(),
            ),
            (
                vec!["--max-interval", "0"],
                "bayeux: --max-interval 0: must be more than 0".into(),
            ),
            (
                vec!["--body-timeout", "0s"],
                "bayeux: --body-timeout 0: must be more than 0".into(),
            ),
            (
                vec!["--users", &empty],
                format!("bayeux: {empty}: no users in it"),
            ),
            (
                vec!["--users", &twice],
                format!("bayeux: {twice} line 3: user \"a\" is already on line 1"),
            ),
            (
                vec!["--tls-key", "k.pem"],
                "bayeux: --tls-key k.pem needs --tls-cert".into(),
            ),
            (
                vec!["--public-url", "example.com"],
                "bayeux: --public-url example.com: an http:// or https:// URL is required".into(),
            ),
            (
                vec!["--overflow", "drop-all"],
                "error: invalid value 'drop-all' for '--overflow <OVERFLOW>'".into(),
            ),
            (
                vec!["--timeout", "soon"],
                "error: invalid value 'soon' for '--timeout <DURATION>'".into(),
            ),
        ];
        for (args, expected) in cases {
            let out = bayeux()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(&args)
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.starts_with(&expected), "{args:?}: {stderr}");
            if expected.starts_with("bayeux:") {
                assert_eq!(stderr.lines().count(), 1, "{stderr}");
            }
            assert!(out.stdout.is_empty(), "nothing is served");
        }
        // `--path /` works, but hides the workbin API: a warning says so.
        let mut served = Served::start(&["--listen", "127.0.0.1:0", "--path", "/"]).await;
        let warning = served.line_with("warning").await;
        assert!(
            warning.contains("--path /") && warning.contains("/api/v2"),
            "{warning}"
        );
        served.signal(libc::SIGTERM);
        assert!(served.wait().await.0.success());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn help_shows_the_defaults_and_the_modes() {
    let out = run(&["serve", "--help"]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for expected in [
        "[default: 30s]",
        "[default: 127.0.0.1:8080]",
        "[default: /cometd]",
        "[default: 10000]",
        "drop-oldest",
        "close-session",
        "--config <FILE>",
        "--shutdown-grace <DURATION>",
    ] {
        assert!(help.contains(expected), "{expected:?} in {help}");
    }
}

/// Opens a connection to `url`'s server, has one request answered on it (so it is
/// accepted and served), then starts a second whose body never completes.
async fn request_in_progress(url: &str) -> tokio::net::TcpStream {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut socket = tokio::net::TcpStream::connect(authority).await.unwrap();
    let body = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    let request = format!(
        "POST /cometd HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answered = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answered).contains("clientId") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed");
        answered.extend_from_slice(&buf[..n]);
    }
    // `Expect: 100-continue`: the server says `100 Continue` once it reads the body, so
    // the request is known to be in progress before the test goes on.
    let partial = format!(
        "POST /cometd HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    );
    socket.write_all(partial.as_bytes()).await.unwrap();
    let mut continued = Vec::new();
    while !String::from_utf8_lossy(&continued).contains("100 Continue") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed");
        continued.extend_from_slice(&buf[..n]);
    }
    socket.write_all(b"[{").await.unwrap();
    socket
}

#[tokio::test]
async fn a_second_signal_stops_serve_at_once() {
    timeout(LIMIT, async {
        // A grace period far longer than the test: only the second signal can end it.
        let mut served =
            Served::start(&["--listen", "127.0.0.1:0", "--shutdown-grace", "1h"]).await;
        let _socket = request_in_progress(&served.url).await;
        served.signal(libc::SIGINT);
        let line = served.line_with("shutting down").await;
        assert!(
            line.contains("waiting up to 1h") && line.contains("requests in progress"),
            "{line}"
        );
        let second = Instant::now();
        served.signal(libc::SIGINT);
        let (status, rest) = served.wait().await;
        assert!(
            second.elapsed() < Duration::from_secs(5),
            "{:?}",
            second.elapsed()
        );
        assert_eq!(status.code(), Some(1), "{rest}");
        assert!(
            rest.contains("SIGINT during the shutdown: stopped at once"),
            "{rest}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn serve_stops_within_its_grace_period() {
    timeout(LIMIT, async {
        let mut served =
            Served::start(&["--listen", "127.0.0.1:0", "--shutdown-grace", "300ms"]).await;
        let _socket = request_in_progress(&served.url).await;
        let start = Instant::now();
        served.signal(libc::SIGTERM);
        let (status, rest) = served.wait().await;
        // Not the 30 s of the body timeout.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(status.success(), "{rest}");
        assert!(rest.contains("grace period (300ms) is over"), "{rest}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn assign_fails_fast_and_says_why() {
    timeout(LIMIT, async {
        let (silent, _held) = silent_server().await;
        let base = format!("http://127.0.0.1:{silent}");
        let start = Instant::now();
        let out = run(&["assign", &base, "agent1", "wb1", "--uri", ".../X", "--timeout", "300ms"]).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        let line = one_line(&out);
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert_eq!(
            line,
            format!("bayeux: POST {base}/api/v2/users/agent1/workbins/wb1: no answer within 300ms")
        );

        let closed = format!("http://127.0.0.1:{}", closed_port().await);
        let out = run(&["assign", &closed, "agent1", "wb1", "--uri", ".../X"]).await;
        let line = one_line(&out);
        assert!(
            line.starts_with(&format!("bayeux: POST {closed}/api/v2/users/agent1/workbins/wb1: cannot connect: ")),
            "{line}"
        );
        assert!(line.contains("refused"), "{line}");

        let html = format!("http://127.0.0.1:{}", html_server().await);
        let out = run(&["assign", &html, "agent1", "wb1", "--uri", ".../X"]).await;
        let line = one_line(&out);
        assert!(line.contains(&format!("POST {html}/api/v2/")), "{line}");
        assert!(
            line.contains("HTTP 404 Not Found, and the reply is not JSON but an HTML page titled \"404 Not Found\""),
            "{line}"
        );

        // The Bayeux URL where the base URL belongs.
        let t = TestServer::with_config(fast_config()).await;
        let out = run(&["assign", &t.url(), "agent1", "wb1", "--uri", ".../X"]).await;
        let line = one_line(&out);
        assert!(line.ends_with(&format!("is {} the server's base URL (without the Bayeux path)?", t.url())), "{line}");

        let out = run(&["assign", "not a url", "agent1", "wb1", "--uri", ".../X"]).await;
        let line = one_line(&out);
        assert_eq!(out.status.code(), Some(2), "{line}");
        assert!(line.starts_with("bayeux: invalid URL \"not a url/api/v2/"), "{line}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn publish_and_bench_fail_fast_and_say_why() {
    timeout(LIMIT, async {
        let closed = format!("http://127.0.0.1:{}/cometd", closed_port().await);
        let (silent, _held) = silent_server().await;
        let silent = format!("http://127.0.0.1:{silent}/cometd");
        let html = format!("http://127.0.0.1:{}/cometd", html_server().await);

        let out = run(&["publish", &closed, "/chat/room", "1"]).await;
        let line = one_line(&out);
        assert!(line.contains(&closed) && line.contains("refused"), "{line}");
        let start = Instant::now();
        let out = run(&[
            "publish",
            &silent,
            "/chat/room",
            "1",
            "--timeout",
            "300ms",
            "--transport",
            "long-polling",
        ])
        .await;
        assert!(start.elapsed() < Duration::from_secs(5));
        let line = one_line(&out);
        assert!(
            line.contains(&silent) && line.contains("timed out"),
            "{line}"
        );
        let out = run(&["publish", &html, "/chat/room", "1"]).await;
        let line = one_line(&out);
        assert!(
            line.contains("HTTP status 404")
                && line.contains("an HTML page titled \"404 Not Found\""),
            "{line}"
        );

        let bench = |url: String| async move {
            let start = Instant::now();
            let out = run(&[
                "bench",
                &url,
                "--subscribers",
                "2",
                "--duration",
                "1",
                "--timeout",
                "300ms",
            ])
            .await;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{:?}",
                start.elapsed()
            );
            assert_eq!(out.status.code(), Some(1));
            one_line(&out)
        };
        let line = bench(closed.clone()).await;
        assert!(
            line.starts_with(&format!("bayeux: connection failed: POST {closed}")),
            "{line}"
        );
        assert!(line.contains("refused"), "{line}");
        let line = bench(silent.clone()).await;
        assert_eq!(line, format!("bayeux: {silent}: no answer within 300ms"));
        let line = bench(html.clone()).await;
        assert!(
            line.contains("HTTP status 404") && line.contains("\"404 Not Found\""),
            "{line}"
        );
        let line = bench("http://[::1".to_string()).await;
        assert!(line.starts_with("bayeux: http://[::1: "), "{line}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn listen_waits_for_a_server_that_is_not_up_yet() {
    timeout(LIMIT, async {
        let port = closed_port().await;
        let url = format!("http://127.0.0.1:{port}/cometd");
        let mut child = bayeux()
            .args([
                "listen",
                &url,
                "/x",
                "--count",
                "1",
                "--transport",
                "long-polling",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = err.next_line().await.unwrap().unwrap();
        assert!(
            line.starts_with(&format!("bayeux: connection failed: POST {url}")),
            "{line}"
        );
        assert!(
            line.ends_with("; trying again until it answers (Ctrl-C to stop)"),
            "{line}"
        );
        let server = bayeux::Server::new(fast_config());
        let _listening = server
            .listen(format!("127.0.0.1:{port}").parse().unwrap(), "/cometd")
            .await
            .unwrap();
        eventually_async("the listener's subscription", async || {
            server
                .publish("/x", json!("hello"))
                .await
                .unwrap()
                .local_recipients
                > 0
        })
        .await;
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = out.next_line().await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap()["data"],
            "hello"
        );
        assert!(child.wait().await.unwrap().success());

        // What waiting cannot mend is reported at once.
        let out = run(&["listen", "ftp://127.0.0.1/cometd"]).await;
        let line = one_line(&out);
        assert!(line.contains("ftp://127.0.0.1/cometd"), "{line}");
        let https = format!("https://127.0.0.1:{port}/cometd");
        let out = run(&["listen", &https, "--transport", "long-polling"]).await;
        let line = one_line(&out);
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert!(
            line.contains(&https)
                && line.ends_with("(the server does not speak TLS there: try http://)"),
            "{line}"
        );
        let out = run(&["listen", &format!("http://127.0.0.1:{port}/elsewhere")]).await;
        let line = one_line(&out);
        assert!(line.contains("HTTP status 404"), "{line}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn listen_count_zero_checks_the_subscription_and_sigterm_disconnects() {
    timeout(LIMIT, async {
        let t =
            TestServer::with_config(fast_config().with_max_interval(Duration::from_secs(60))).await;
        let out = run(&["listen", &t.url(), "/x", "--count", "0"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
        eventually("the --count 0 session to end", || {
            t.server.session_count() == 0
        })
        .await;

        let mut child = bayeux()
            .args(["listen", &t.url(), "/x"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = err.next_line().await.unwrap().unwrap();
        assert!(line.contains("listening on /x"), "{line}");
        assert_eq!(t.server.session_count(), 1);
        let pid = child.id().unwrap() as libc::pid_t;
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(child.wait().await.unwrap().success());
        // Gone at once through /meta/disconnect, not after maxInterval (60 s).
        eventually("the session to end", || t.server.session_count() == 0).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn publish_sends_one_message() {
    timeout(LIMIT, async {
        let t = TestServer::with_config(fast_config()).await;
        let mut chat = t.server.subscribe("/chat/**").unwrap();
        let out = run(&["publish", &t.url(), "/chat/room", r#"{"text":"hi"}"#]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(one_line(&out), "bayeux: published on /chat/room");
        let m = chat.next().await.unwrap();
        assert_eq!(m.channel_str(), "/chat/room");
        assert_eq!(m.data, Some(json!({"text": "hi"})));

        // From standard input.
        let mut child = bayeux()
            .args(["publish", &t.url(), "/chat/room", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"[1, 2]\n").await.unwrap();
        drop(stdin);
        assert!(child.wait().await.unwrap().success());
        assert_eq!(chat.next().await.unwrap().data, Some(json!([1, 2])));

        let out = run(&["publish", &t.url(), "/chat/room", "hello"]).await;
        let line = one_line(&out);
        assert_eq!(out.status.code(), Some(2), "{line}");
        assert!(
            line.starts_with("bayeux: the data \"hello\" is not JSON: "),
            "{line}"
        );
        let out = run(&["publish", &t.url(), "/chat/*", "1"]).await;
        let line = one_line(&out);
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert!(
            line.starts_with("bayeux: publishing on /chat/*: "),
            "{line}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn demo_refuses_zero_agents() {
    let out = run(&["demo", "--agents", "0"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agents"));
}

#[tokio::test]
async fn every_serve_flag_is_a_config_file_key() {
    timeout(LIMIT, async {
        let help = run(&["serve", "--help"]).await;
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        let flags: Vec<&str> = help
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .filter_map(|l| l.split([' ', '[', '=']).next())
            // Not settings of the server: the file itself, and the global logging flags
            // (read before any command runs).
            .filter(|f| !["config", "help", "log-level", "log-format"].contains(f))
            .collect();
        assert!(flags.len() > 30, "{flags:?}");
        let dir = temp_dir("keys");
        for flag in flags {
            // A table is the wrong type for every key: a known key is refused for its
            // value, an unknown one as unknown.
            let file = dir.join(format!("{flag}.toml"));
            std::fs::write(&file, format!("{flag} = {{}}\n")).unwrap();
            let out = run(&["serve", "--config", &file.display().to_string()]).await;
            let line = one_line(&out);
            assert_eq!(out.status.code(), Some(2), "{line}");
            assert!(
                line.contains(&format!("line 1: {flag}: ")),
                "{flag}: {line}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

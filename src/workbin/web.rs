//! The demo's web app: a supervisor console, agent desktops and a live view of the
//! server, as plain HTML, CSS and ES modules embedded in the binary (no build step,
//! nothing loaded from elsewhere), and the JSON stats the live view draws.
//!
//! The files are under `src/workbin/web/`; `bayeux.js` is the page's Bayeux client
//! (WebSocket with a long-polling fallback, the ack extension, re-handshake and
//! re-subscribe), written to be read as much as run.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::Full;

use crate::server::{ResponseBody, Server};

/// The path of the JSON stats the live view reads (a snapshot of
/// [`Server::stats`], with the time it was taken).
pub const STATS_PATH: &str = "/stats";

/// The page's policy: its own scripts, styles, images and connections only (the
/// WebSocket to this host included); no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("web/index.html");
const APP_CSS: &str = include_str!("web/app.css");
const APP_JS: &str = include_str!("web/app.js");
const BAYEUX_JS: &str = include_str!("web/bayeux.js");
const FAVICON: &str = include_str!("web/favicon.svg");

/// The embedded files and the page's settings. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct WebApp {
    /// `index.html` with the server's settings filled in; `None` when the Bayeux
    /// endpoint is mounted at `/` and so takes every path.
    index: Option<Bytes>,
}

impl WebApp {
    /// The app for a server whose Bayeux endpoint is at `bayeux_path`; `demo`: any
    /// name may sign in (no users file). With the endpoint at `/`, which takes every
    /// path, the app serves nothing.
    pub fn new(bayeux_path: &str, demo: bool) -> Self {
        let path = bayeux_path.trim_end_matches('/');
        let index = (!path.is_empty()).then(|| {
            Bytes::from(
                INDEX
                    .replace("{{BAYEUX_PATH}}", &escape_attribute(path))
                    .replace("{{MODE}}", if demo { "demo" } else { "users" }),
            )
        });
        WebApp { index }
    }

    /// Answers a `GET` or `HEAD` request if its path is one of the app's (`/`, its
    /// files, `/stats`), `None` otherwise (other methods and paths are the Bayeux
    /// endpoint's or the workbin API's). The body is not read.
    pub fn respond<B>(
        &self,
        server: &Server,
        request: &Request<B>,
    ) -> Option<Response<ResponseBody>> {
        let index = self.index.as_ref()?;
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let path = request.uri().path();
        let (body, content_type): (Bytes, &'static str) = match path {
            "/" | "/index.html" => (index.clone(), "text/html;charset=UTF-8"),
            "/app.css" => (
                Bytes::from_static(APP_CSS.as_bytes()),
                "text/css;charset=UTF-8",
            ),
            "/app.js" => (
                Bytes::from_static(APP_JS.as_bytes()),
                "text/javascript;charset=UTF-8",
            ),
            "/bayeux.js" => (
                Bytes::from_static(BAYEUX_JS.as_bytes()),
                "text/javascript;charset=UTF-8",
            ),
            "/favicon.svg" | "/favicon.ico" => {
                (Bytes::from_static(FAVICON.as_bytes()), "image/svg+xml")
            }
            STATS_PATH => (stats(server), "application/json"),
            _ => return None,
        };
        let mut res = Response::new(if method == Method::HEAD {
            ResponseBody::default()
        } else {
            Full::new(body)
        });
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        // The files change with the binary only, but a demo is restarted with a new
        // one often: revalidate each time (they are small), never store the stats.
        let cache = if path == STATS_PATH {
            "no-store"
        } else {
            "no-cache"
        };
        h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        if content_type.starts_with("text/html") {
            h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        Some(res)
    }
}

/// The stats as JSON: counters since start (the page derives rates from two of them)
/// and the time of the snapshot in milliseconds since the Unix epoch.
fn stats(server: &Server) -> Bytes {
    let s = server.stats();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let value = serde_json::json!({
        "time": u64::try_from(now).unwrap_or(u64::MAX),
        "sessions": s.sessions,
        "connectsPending": s.connects_pending,
        "messagesPublished": s.messages_published,
        "messagesDelivered": s.messages_delivered,
        "handshakesAccepted": s.handshakes_accepted,
        "handshakesRefused": s.handshakes_refused,
        "sessionsExpired": s.sessions_expired,
        "droppedMessages": s.dropped_messages,
    });
    Bytes::from(value.to_string())
}

/// `text` made safe inside a double-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn get(
        app: &WebApp,
        server: &Server,
        method: Method,
        path: &str,
    ) -> Option<Response<ResponseBody>> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        app.respond(server, &request)
    }

    async fn body(res: Response<ResponseBody>) -> Bytes {
        use http_body_util::BodyExt;
        let Ok(collected) = res.into_body().collect().await;
        collected.to_bytes()
    }

    #[tokio::test]
    async fn files_are_served_with_their_types_and_the_page_with_its_policy() {
        let server = Server::new(Default::default());
        let app = WebApp::new("/cometd\"x", true);
        let page = get(&app, &server, Method::GET, "/").unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html;charset=UTF-8");
        assert_eq!(page.headers()[CONTENT_SECURITY_POLICY], CSP);
        let html = String::from_utf8(body(page).await.to_vec()).unwrap();
        assert!(
            html.contains("content=\"/cometd&quot;x\""),
            "the path is escaped"
        );
        assert!(html.contains("content=\"demo\""));
        for (path, ty) in [
            ("/app.js", "text/javascript;charset=UTF-8"),
            ("/bayeux.js", "text/javascript;charset=UTF-8"),
            ("/app.css", "text/css;charset=UTF-8"),
            ("/stats", "application/json"),
        ] {
            let res = get(&app, &server, Method::GET, path).unwrap();
            assert_eq!(res.headers()[CONTENT_TYPE], ty, "{path}");
            assert_eq!(res.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        let head = get(&app, &server, Method::HEAD, "/app.js").unwrap();
        assert!(body(head).await.is_empty());
        // Other methods are not the app's (a POST / may be Bayeux's, say).
        assert!(get(&app, &server, Method::POST, "/").is_none());
        assert!(get(&app, &server, Method::GET, "/nothing.js").is_none());
        assert!(get(&app, &server, Method::GET, "/api/v2").is_none());
    }

    #[tokio::test]
    async fn nothing_is_served_when_bayeux_takes_every_path() {
        let server = Server::new(Default::default());
        let app = WebApp::new("/", true);
        assert!(get(&app, &server, Method::GET, "/").is_none());
        assert!(get(&app, &server, Method::GET, "/stats").is_none());
    }

    #[tokio::test]
    async fn stats_are_json_counters() {
        let server = Server::new(Default::default());
        let app = WebApp::new("/cometd", false);
        let res = get(&app, &server, Method::GET, "/stats").unwrap();
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
        let value: serde_json::Value = serde_json::from_slice(&body(res).await).unwrap();
        assert_eq!(value["sessions"], 0);
        assert_eq!(value["messagesDelivered"], 0);
        assert!(value["time"].as_u64().unwrap() > 1_600_000_000_000);
    }
}

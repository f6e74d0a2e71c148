//! The operator's endpoints: `GET /health`, `GET /ready` and (feature `metrics`)
//! `GET /metrics`, for load balancers, orchestrators and Prometheus.
//!
//! They are not part of the Bayeux endpoint: an application routes them where it likes
//! ([`OpsService::respond`] answers one request, or `None` for a path that is not one of
//! them), or serves them alone on an address of their own (the [`OpsService`] is a
//! hyper service that answers 404 elsewhere).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;

use super::Server;
use super::http::{ResponseBody, text};

/// The path of the liveness check.
pub const HEALTH_PATH: &str = "/health";
/// The path of the readiness check.
pub const READY_PATH: &str = "/ready";
/// The path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// Answers `/health`, `/ready` and `/metrics` for a [`Server`]. Cheap to clone.
///
/// - `GET /health`: `200 {"status":"ok"}` while the process serves requests (liveness).
/// - `GET /ready`: `200 {"ready":true,"sessions":N}` while the server takes new sessions,
///   `503 {"ready":false,"reason":"shutting down","sessions":N}` once it is shutting
///   down (readiness: a load balancer stops sending new clients).
/// - `GET /metrics` (feature `metrics`, unless turned off with
///   [`OpsService::with_metrics`]): [`Server::metrics`].
///
/// `HEAD` is answered as `GET` without a body; other methods get 405.
#[derive(Clone, Debug)]
pub struct OpsService {
    server: Server,
    metrics: bool,
}

impl OpsService {
    /// The endpoints of `server`, `/metrics` included when the `metrics` feature is on.
    pub fn new(server: Server) -> Self {
        OpsService {
            server,
            metrics: cfg!(feature = "metrics"),
        }
    }

    /// Serves `/metrics` or not (`/health` and `/ready` stay); without the `metrics`
    /// feature there is nothing to serve, whatever `on` says.
    pub fn with_metrics(mut self, on: bool) -> Self {
        self.metrics = on && cfg!(feature = "metrics");
        self
    }

    /// Whether `path` is one of the endpoints this service answers.
    pub fn matches(&self, path: &str) -> bool {
        path == HEALTH_PATH || path == READY_PATH || (self.metrics && path == METRICS_PATH)
    }

    /// Answers `request` if its path is one of the endpoints, `None` otherwise (the
    /// request is for the application). The body is not read.
    pub fn respond<B>(&self, request: &Request<B>) -> Option<Response<ResponseBody>> {
        let path = request.uri().path();
        if !self.matches(path) {
            return None;
        }
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(res);
        }
        let mut res = match path {
            HEALTH_PATH => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            READY_PATH => self.ready(),
            _ => self.metrics_response(),
        };
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if method == Method::HEAD {
            *res.body_mut() = ResponseBody::default();
        }
        Some(res)
    }

    fn ready(&self) -> Response<ResponseBody> {
        let sessions = self.server.session_count();
        if self.server.is_ready() {
            json(
                StatusCode::OK,
                serde_json::json!({"ready": true, "sessions": sessions}),
            )
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"ready": false, "reason": "shutting down", "sessions": sessions}),
            )
        }
    }

    #[cfg(feature = "metrics")]
    fn metrics_response(&self) -> Response<ResponseBody> {
        let mut res = Response::new(Full::new(Bytes::from(self.server.metrics())));
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(super::metrics::METRICS_CONTENT_TYPE),
        );
        res
    }

    #[cfg(not(feature = "metrics"))]
    fn metrics_response(&self) -> Response<ResponseBody> {
        text(StatusCode::NOT_FOUND, "not found")
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Alone on a listener of its own: the endpoints, and 404 for any other path.
impl Service<Request<Incoming>> for OpsService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let response = self
            .respond(&request)
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found"));
        Box::pin(async move { Ok(response) })
    }
}

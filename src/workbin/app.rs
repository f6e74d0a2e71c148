//! The demo application: the Bayeux endpoint and the workbin API on one hyper server.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;

use super::web::WebApp;
use super::{Access, Workbin, WorkbinConfig};
use crate::server::{BayeuxService, Listening, OpsService, ResponseBody, Server, ServerConfig};

/// `bayeux_workbin_requests_total`: the workbin API's answers by their `statusCode`.
#[cfg(feature = "metrics")]
type WorkbinRequests = prometheus_client::metrics::family::Family<
    [(&'static str, u32); 1],
    prometheus_client::metrics::counter::Counter,
>;

/// Reads one figure of the users file's [`CheckStats`](super::CheckStats).
#[cfg(feature = "metrics")]
type ReadCheck = fn(&super::CheckStats) -> u64;

/// A counter read from the users file's [`CheckStats`](super::CheckStats) at scrape time.
#[cfg(feature = "metrics")]
struct CheckCounter {
    directory: Arc<super::UserDirectory>,
    read: ReadCheck,
}

#[cfg(feature = "metrics")]
impl std::fmt::Debug for CheckCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckCounter")
    }
}

#[cfg(feature = "metrics")]
impl prometheus_client::encoding::EncodeMetric for CheckCounter {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let value = (self.read)(&self.directory.check_stats());
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&value, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

/// The users file's password checks in `/metrics`: `bayeux_auth_*_total`.
#[cfg(feature = "metrics")]
fn register_check_metrics(server: &Server, directory: &Arc<super::UserDirectory>) {
    let counters: [(&str, &str, ReadCheck); 5] = [
        (
            "bayeux_auth_slow_checks",
            "Password checks (Argon2) run on the blocking pool.",
            |s| s.slow_checks,
        ),
        (
            "bayeux_auth_clean_waits",
            "Checks of clients without recent failures that waited for a place in the pool (only other clean clients can make them wait).",
            |s| s.clean_waits,
        ),
        (
            "bayeux_auth_busy",
            "Checks refused because too many were waiting (--max-auth-waiting).",
            |s| s.busy,
        ),
        (
            "bayeux_auth_user_throttled",
            "Checks slowed because their user name had too many recent failures (--max-auth-failures-per-user).",
            |s| s.user_throttled,
        ),
        (
            "bayeux_auth_failures",
            "Checks that failed: a wrong password or an unknown user.",
            |s| s.failures,
        ),
    ];
    for (name, help, read) in counters {
        server.register_metric(
            name,
            help,
            CheckCounter {
                directory: directory.clone(),
                read,
            },
        );
    }
}

/// Routes the operator's endpoints (`/health`, `/ready`, `/metrics`: see
/// [`OpsService`]) to them, the web app (`/`, its files and `/stats`) to it, the Bayeux
/// mount path to the Bayeux server, and everything else to the workbin API (which
/// answers 404 for unknown paths). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DemoApp {
    bayeux: BayeuxService,
    workbin: Arc<Workbin>,
    ops: Option<OpsService>,
    web: WebApp,
    #[cfg(feature = "metrics")]
    workbin_requests: WorkbinRequests,
}

impl DemoApp {
    /// Builds the Bayeux server (with `access` as its security policy) and the workbin
    /// endpoint publishing through it. Must be called inside a tokio runtime.
    pub fn new(
        config: ServerConfig,
        access: Access,
        workbin: WorkbinConfig,
        bayeux_path: &str,
    ) -> Self {
        let web = WebApp::new(bayeux_path, access.is_demo());
        let access = Arc::new(access);
        let server = Server::builder()
            .config(config)
            .policy(access.clone())
            .build();
        #[cfg(feature = "metrics")]
        let workbin_requests = {
            let family = WorkbinRequests::default();
            // Every documented statusCode is on the page from the start, at 0.
            for code in 0..=9 {
                let _ = family.get_or_create(&[("status_code", code)]);
            }
            server.register_metric(
                "bayeux_workbin_requests",
                "Requests to the workbin API, by the statusCode of their answer",
                family.clone(),
            );
            family
        };
        #[cfg(feature = "metrics")]
        if let Some(directory) = access.directory() {
            register_check_metrics(&server, directory);
        }
        DemoApp {
            ops: Some(OpsService::new(server.clone())),
            web,
            bayeux: server.service().mounted_at(bayeux_path),
            workbin: Arc::new(Workbin::new(server, access, workbin)),
            #[cfg(feature = "metrics")]
            workbin_requests,
        }
    }

    /// Which operator endpoints the application answers on its own listener: by
    /// default all of them ([`OpsService::new`]); `Some(ops.with_metrics(false))`
    /// leaves `/metrics` out, and `None` leaves them all to another listener (serve
    /// [`OpsService`] there) or to nobody.
    pub fn with_ops(mut self, ops: Option<OpsService>) -> Self {
        self.ops = ops;
        self
    }

    /// The Bayeux server (to publish, subscribe or inspect sessions from Rust).
    pub fn server(&self) -> &Server {
        self.bayeux.server()
    }

    /// The workbin endpoint (to assign from Rust).
    pub fn workbin(&self) -> &Workbin {
        &self.workbin
    }

    /// Serves the application on `addr` in the background. Without a configured public
    /// URL, the interactions' URIs use the bound address.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<Listening> {
        let listening = Server::listen_with(self.server().clone(), addr, self.clone()).await?;
        self.workbin.default_public_url(listening.url(""));
        Ok(listening)
    }
}

/// Whether `path` belongs to the workbin API (`/api` and below).
fn is_api_path(path: &str) -> bool {
    path.strip_prefix("/api")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Service<Request<Incoming>> for DemoApp {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if let Some(response) = self.ops.as_ref().and_then(|ops| ops.respond(&request)) {
            return Box::pin(std::future::ready(Ok(response)));
        }
        if let Some(response) = self.web.respond(self.server(), &request) {
            return Box::pin(std::future::ready(Ok(response)));
        }
        if self.bayeux.matches(request.uri().path()) {
            return self.bayeux.call(request);
        }
        let (workbin, server) = (self.workbin.clone(), self.server().clone());
        #[cfg(feature = "metrics")]
        let counter = self.workbin_requests.clone();
        Box::pin(async move {
            // An early answer (413, 405, 404) still reaches a client that is writing.
            let response = crate::server::linger::answer(&server, request, |request| async {
                // The workbin API answers in its envelope under /api/; elsewhere a 404
                // is plain, as on the Bayeux side.
                if is_api_path(request.uri().path()) {
                    let response = workbin.handle(request).await;
                    #[cfg(feature = "metrics")]
                    let response = counted(&counter, response).await;
                    response
                } else {
                    crate::server::http::text(http::StatusCode::NOT_FOUND, "not found")
                }
            });
            Ok(response.await)
        })
    }
}

/// Counts a workbin answer in `bayeux_workbin_requests_total` under the `statusCode` of
/// its envelope (every answer of [`Workbin::handle`] is one; the body is a few bytes,
/// already in memory).
#[cfg(feature = "metrics")]
async fn counted(
    counter: &WorkbinRequests,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    use http_body_util::BodyExt;

    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "statusCode")]
        status_code: u32,
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let bytes = collected.to_bytes();
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(&bytes) {
        counter
            .get_or_create(&[("status_code", envelope.status_code)])
            .inc();
    }
    Response::from_parts(parts, http_body_util::Full::new(bytes))
}

//! The demo publisher: a contact center's workbin API.
//!
//! A supervisor assigns an interaction to an agent's workbin with
//! `POST /api/v2/users/{userId}/workbins/{id}` and a body such as
//! `{"operationName":"AddEmail","uri":".../FE7978FEWFE"}`. The reply is
//! `{"statusCode":0,"referenceId":14}`, and the agent's Bayeux sessions receive a
//! workbin state change on `/v2/me/workbins` and the interaction's state change on
//! `/v2/me/emails`, `/v2/me/chats` or `/v2/me/workitems`, each carrying the same
//! `referenceId`. `/v2/me` means the user of the session: notifications are delivered
//! per user ([`Server::deliver_to_user`]), never broadcast.

mod app;
mod checks;
mod notification;
mod request;
mod users;
mod web;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;

pub use app::DemoApp;
pub use checks::{CheckLimits, CheckStats};
pub use notification::{Notification, WORKBINS_CHANNEL, notifications, timestamp};
pub use request::{Assignment, Media, Operation, WorkbinError, parse_body, parse_path};
pub use users::{
    Access, Caller, Check, Role, UserDirectory, UsersFileError, UsersFileWarning,
    basic_credentials, hash_password,
};
pub use web::STATS_PATH;

use crate::server::http::{BodyError, read_body};
use crate::server::limits::BodyReservation;
use crate::server::{ResponseBody, Server};

/// Settings of the workbin endpoint.
#[derive(Clone, Debug)]
pub struct WorkbinConfig {
    /// The server's public base URL, used in the interactions' own `uri`s. `None`:
    /// `http://` and the address [`DemoApp::listen`] bound.
    pub public_url: Option<String>,
    /// The largest request body, in bytes (413 above it).
    pub max_body: usize,
}

impl Default for WorkbinConfig {
    fn default() -> Self {
        WorkbinConfig {
            public_url: None,
            max_body: 64 * 1024,
        }
    }
}

/// The workbin endpoint: validates assignments and publishes their notifications
/// through a Bayeux [`Server`].
#[derive(Debug)]
pub struct Workbin {
    server: Server,
    access: Arc<Access>,
    max_body: usize,
    public_url: OnceLock<String>,
    /// The last `referenceId` handed out. Held while an assignment's notifications are
    /// routed (an asynchronous lock, as a broker may wait on the network), so each agent
    /// receives them in `referenceId` order.
    last_reference: tokio::sync::Mutex<u64>,
}

impl Workbin {
    /// An endpoint that publishes through `server` and checks callers with `access`.
    pub fn new(server: Server, access: Arc<Access>, config: WorkbinConfig) -> Self {
        let public_url = OnceLock::new();
        if let Some(url) = config.public_url {
            let _ = public_url.set(url);
        }
        Workbin {
            server,
            access,
            max_body: config.max_body,
            public_url,
            last_reference: tokio::sync::Mutex::new(0),
        }
    }

    /// Sets the public base URL if none was configured (first call wins).
    pub(crate) fn default_public_url(&self, url: String) {
        let _ = self.public_url.set(url);
    }

    /// Publishes the notifications of `assignment` to its agent's sessions (through the
    /// server's broker, so on whichever node they are) and returns the new
    /// `referenceId` (increasing, never reused within the process). Fails when the
    /// broker could not route them.
    pub async fn assign(&self, assignment: &Assignment) -> Result<u64, WorkbinError> {
        let base = self
            .public_url
            .get()
            .map_or("http://localhost", String::as_str);
        let mut last = self.last_reference.lock().await;
        *last += 1;
        let reference = *last;
        for n in notifications(assignment, reference, base, SystemTime::now()) {
            self.server
                .deliver_to_user(&assignment.user_id, n.channel, n.data)
                .await
                .map_err(WorkbinError::not_delivered)?;
        }
        Ok(reference)
    }

    /// Answers one HTTP request to the workbin API (any path: unknown ones get 404).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.try_handle(request).await {
            Ok(reference) => envelope(
                StatusCode::OK,
                &Envelope {
                    status_code: 0,
                    reference_id: Some(reference),
                    status_message: None,
                },
            ),
            Err(e) => {
                let mut res = envelope(
                    e.http,
                    &Envelope {
                        status_code: e.status_code,
                        reference_id: None,
                        status_message: Some(&e.message),
                    },
                );
                if e.http == StatusCode::METHOD_NOT_ALLOWED {
                    res.headers_mut()
                        .insert(ALLOW, "POST".parse().expect("static header"));
                }
                if e.http == StatusCode::UNAUTHORIZED {
                    res.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        "Basic realm=\"bayeux\"".parse().expect("static header"),
                    );
                }
                res
            }
        }
    }

    async fn try_handle<B>(&self, request: Request<B>) -> Result<u64, WorkbinError>
    where
        B: Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = request.uri().path().to_string();
        let (user_id, workbin_id) =
            parse_path(&path).ok_or_else(|| WorkbinError::not_found(&path))?;
        let (user_id, workbin_id) = (user_id.to_string(), workbin_id.to_string());
        if request.method() != Method::POST {
            return Err(WorkbinError::method_not_allowed(request.method().as_str()));
        }
        let client = self.server.client_of(&request);
        // The same bound on failed attempts per address as for handshakes.
        let Some(attempt) = self.server.inner().limits.begin_auth(client) else {
            return Err(WorkbinError::unauthorized());
        };
        match self.access.workbin_caller(request.headers(), client).await {
            Caller::Allowed => drop(attempt),
            Caller::Unauthenticated => {
                attempt.failed();
                return Err(WorkbinError::unauthorized());
            }
            Caller::NotSupervisor(user) => return Err(WorkbinError::forbidden(&user)),
            Caller::Busy => return Err(WorkbinError::busy()),
        }
        let limit = self.max_body;
        let timeout = self.server.config().body_timeout;
        // Counted with the Bayeux endpoint's bodies, per client and in total.
        let mut reservation = BodyReservation::empty(&self.server.inner().limits, client);
        let (parts, body) = request.into_parts();
        let body = match read_body(&parts.headers, body, limit, timeout, &mut reservation).await {
            Ok(bytes) => bytes,
            Err(BodyError::OverBudget) => return Err(WorkbinError::busy()),
            Err(BodyError::TooLarge) => return Err(WorkbinError::too_large(limit)),
            Err(BodyError::TimedOut) => return Err(WorkbinError::timed_out(timeout)),
            Err(BodyError::Read(e)) => {
                return Err(WorkbinError::malformed(format!(
                    "could not read the body: {e}"
                )));
            }
        };
        let assignment = parse_body(&user_id, &workbin_id, &body)?;
        self.assign(&assignment).await
    }
}

/// The reply body, fields in the documented order: `{"statusCode":0,"referenceId":14}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    status_code: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<&'a str>,
}

fn envelope(status: StatusCode, body: &Envelope<'_>) -> Response<ResponseBody> {
    let json = serde_json::to_vec(body).expect("the envelope serialises");
    let mut res = Response::new(Full::new(Bytes::from(json)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        "application/json;charset=UTF-8"
            .parse()
            .expect("static header"),
    );
    res
}

//! Reading a workbin assignment: the path, the JSON body, and the errors they can have.
//! Pure: no I/O, so every failure case is unit-tested here.

use std::fmt;

use http::StatusCode;
use serde_json::{Map, Value};

/// The four operations the endpoint accepts, and the media each one produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A generic interaction (the Genesys docs reserve it for Facebook and Twitter, V1).
    AddInteraction,
    /// An email.
    AddEmail,
    /// A chat.
    AddChat,
    /// A workitem.
    AddWorkitem,
}

/// The media type of an assigned interaction: names its channel, message type and URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Media {
    /// `/v2/me/emails`, `EmailStateChangeMessage`, an `email` object.
    Email,
    /// `/v2/me/chats`, `ChatStateChangeMessage`, a `chat` object.
    Chat,
    /// `/v2/me/workitems`, `WorkitemStateChangeMessage`, a `workitem` object.
    Workitem,
}

impl Operation {
    /// Every operation, in the order the documentation lists them.
    pub const ALL: [Operation; 4] = [
        Operation::AddInteraction,
        Operation::AddEmail,
        Operation::AddChat,
        Operation::AddWorkitem,
    ];

    /// The `operationName` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Operation::AddInteraction => "AddInteraction",
            Operation::AddEmail => "AddEmail",
            Operation::AddChat => "AddChat",
            Operation::AddWorkitem => "AddWorkitem",
        }
    }

    /// Reads an `operationName`.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The media of the interaction this operation adds.
    pub fn media(self) -> Media {
        match self {
            Operation::AddEmail => Media::Email,
            Operation::AddChat => Media::Chat,
            Operation::AddWorkitem | Operation::AddInteraction => Media::Workitem,
        }
    }
}

impl Media {
    /// The agent's channel for this media.
    pub fn channel(self) -> &'static str {
        match self {
            Media::Email => "/v2/me/emails",
            Media::Chat => "/v2/me/chats",
            Media::Workitem => "/v2/me/workitems",
        }
    }

    /// The notification's `messageType`.
    pub fn message_type(self) -> &'static str {
        match self {
            Media::Email => "EmailStateChangeMessage",
            Media::Chat => "ChatStateChangeMessage",
            Media::Workitem => "WorkitemStateChangeMessage",
        }
    }

    /// The key of the interaction object in the notification (`email`, `chat`, `workitem`).
    pub fn object_key(self) -> &'static str {
        match self {
            Media::Email => "email",
            Media::Chat => "chat",
            Media::Workitem => "workitem",
        }
    }

    /// The resource collection in this server's URIs (`/api/v2/emails/{id}`...).
    pub fn collection(self) -> &'static str {
        match self {
            Media::Email => "emails",
            Media::Chat => "chats",
            Media::Workitem => "workitems",
        }
    }
}

/// A validated assignment: put interaction `interaction_id` into `user_id`'s workbin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The agent who owns the workbin.
    pub user_id: String,
    /// The workbin.
    pub workbin_id: String,
    /// What is added.
    pub operation: Operation,
    /// The interaction's URI as the caller gave it.
    pub uri: String,
    /// The last path segment of `uri`.
    pub interaction_id: String,
}

/// Why a request failed: the envelope's `statusCode` and `statusMessage`, and the HTTP
/// status. The codes are documented in the README.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkbinError {
    /// The HTTP status.
    pub http: StatusCode,
    /// The envelope's non-zero `statusCode`.
    pub status_code: u32,
    /// What is wrong, for a person.
    pub message: String,
}

impl WorkbinError {
    fn new(http: StatusCode, status_code: u32, message: impl Into<String>) -> Self {
        WorkbinError {
            http,
            status_code,
            message: message.into(),
        }
    }

    /// 1: a required parameter is missing or empty (HTTP 400).
    pub fn missing(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            1,
            format!("missing parameter: {what}"),
        )
    }

    /// 2: a parameter has the wrong type or value (HTTP 400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 2, message)
    }

    /// 3: the body is not a JSON object (HTTP 400).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 3, message)
    }

    /// 4: no such resource (HTTP 404).
    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 4, format!("no resource at {path}"))
    }

    /// 5: the method is not allowed on the resource (HTTP 405).
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            5,
            format!("method {method} not allowed: use POST"),
        )
    }

    /// 6: the body is over the size limit (HTTP 413).
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            6,
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 9: the body did not arrive within the body timeout (HTTP 408).
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            9,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )
    }

    /// 10: the notifications could not be routed to every node (HTTP 503); the
    /// `referenceId` was used, and the agent's sessions on this node may have them.
    pub fn not_delivered(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            10,
            format!("the notifications could not be delivered: {cause}"),
        )
    }

    /// 7: no valid credentials (HTTP 401).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            7,
            "valid credentials are required",
        )
    }

    /// 8: the user may not assign interactions (HTTP 403).
    pub fn forbidden(user: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            8,
            format!("user {user} is not a supervisor"),
        )
    }

    /// 11: the credential checks are busy; try again shortly (HTTP 503).
    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            11,
            "the credential checks are busy; try again shortly",
        )
    }
}

impl fmt::Display for WorkbinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (statusCode {})", self.message, self.status_code)
    }
}

impl std::error::Error for WorkbinError {}

/// Ids in paths and URIs: non-empty, URL-safe characters only, so they can be echoed
/// into this server's own URIs unescaped.
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@'))
}

/// Matches `/api/v2/users/{userId}/workbins/{id}`; returns `(userId, workbinId)`.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v2/users/")?;
    let (user, rest) = rest.split_once('/')?;
    let workbin = rest.strip_prefix("workbins/")?;
    (valid_id(user) && valid_id(workbin)).then_some((user, workbin))
}

/// Reads the JSON body of an assignment for `user_id`'s workbin `workbin_id`.
pub fn parse_body(
    user_id: &str,
    workbin_id: &str,
    body: &[u8],
) -> Result<Assignment, WorkbinError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WorkbinError::malformed(format!("malformed JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(WorkbinError::malformed("the body must be a JSON object"));
    };
    let operation = match field(&map, "operationName")? {
        None => return Err(WorkbinError::missing("operationName")),
        Some(name) => Operation::parse(name).ok_or_else(|| {
            WorkbinError::invalid(format!(
                "unknown operationName {name:?}: expected AddInteraction, AddEmail, AddChat or AddWorkitem"
            ))
        })?,
    };
    let uri = match field(&map, "uri")? {
        None | Some("") => return Err(WorkbinError::missing("uri")),
        Some(uri) => uri,
    };
    let interaction_id = uri.rsplit('/').next().unwrap_or_default();
    if !valid_id(interaction_id) {
        return Err(WorkbinError::invalid(
            "uri must end with the interaction's id (letters, digits, - _ . ~ @)",
        ));
    }
    Ok(Assignment {
        user_id: user_id.to_string(),
        workbin_id: workbin_id.to_string(),
        operation,
        uri: uri.to_string(),
        interaction_id: interaction_id.to_string(),
    })
}

/// A string field: absent or null is `None`; another type is an error.
fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, WorkbinError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(WorkbinError::invalid(format!(
            "{name} must be a string, not {}",
            match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                _ => "an object",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/api/v2/users/00025aA4V4DR00P5/workbins/3434543fafwe987"),
            Some(("00025aA4V4DR00P5", "3434543fafwe987"))
        );
        for bad in [
            "/api/v2/users//workbins/x",
            "/api/v2/users/u/workbins/",
            "/api/v2/users/u/workbins/a/b",
            "/api/v2/users/u/bins/x",
            "/api/v2/users/u%20/workbins/x",
            "/api/v1/users/u/workbins/x",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_operation_parses_with_its_media() {
        for (op, media) in [
            ("AddEmail", Media::Email),
            ("AddChat", Media::Chat),
            ("AddWorkitem", Media::Workitem),
            ("AddInteraction", Media::Workitem),
        ] {
            let body = format!(r#"{{"operationName":"{op}","uri":".../FE7978FEWFE"}}"#);
            let a = parse_body("agent1", "wb1", body.as_bytes()).unwrap();
            assert_eq!(a.operation.name(), op);
            assert_eq!(a.operation.media(), media);
            assert_eq!(a.interaction_id, "FE7978FEWFE");
            assert_eq!(
                (a.user_id.as_str(), a.workbin_id.as_str()),
                ("agent1", "wb1")
            );
        }
    }

    #[test]
    fn failures_have_their_codes() {
        let code = |body: &str| {
            parse_body("u", "w", body.as_bytes())
                .unwrap_err()
                .status_code
        };
        assert_eq!(code("{"), 3);
        assert_eq!(code("[1]"), 3);
        assert_eq!(code(r#"{"uri":"a/b"}"#), 1);
        assert_eq!(code(r#"{"operationName":"AddEmail"}"#), 1);
        assert_eq!(code(r#"{"operationName":"AddEmail","uri":""}"#), 1);
        assert_eq!(code(r#"{"operationName":"AddEmail","uri":null}"#), 1);
        assert_eq!(code(r#"{"operationName":"Remove","uri":"a/b"}"#), 2);
        assert_eq!(code(r#"{"operationName":5,"uri":"a/b"}"#), 2);
        assert_eq!(code(r#"{"operationName":"AddEmail","uri":["a"]}"#), 2);
        assert_eq!(code(r#"{"operationName":"AddEmail","uri":"a/"}"#), 2);
        assert_eq!(code(r#"{"operationName":"AddEmail","uri":"a/b c"}"#), 2);
        let e = parse_body("u", "w", br#"{"operationName":"AddFax","uri":"x"}"#).unwrap_err();
        assert!(e.message.contains("AddFax"), "{e}");
        assert_eq!(e.http, StatusCode::BAD_REQUEST);
    }
}

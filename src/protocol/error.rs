//! Bayeux error strings (`code:args:message`) and the crate's own error type.

use std::fmt;

/// The numeric codes this crate puts in Bayeux error strings.
///
/// Bayeux 1.0 §5.10 only fixes the `code:args:message` shape; the codes follow the
/// spec's examples and CometD's use of them (4xx for the client's fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The request is malformed (missing or ill-typed field, invalid channel name).
    pub const BAD_REQUEST: ErrorCode = ErrorCode(400);
    /// The `clientId` names no live session (spec: "Unknown client").
    pub const UNKNOWN_CLIENT: ErrorCode = ErrorCode(402);
    /// The security policy, or a protocol rule, forbids the operation.
    pub const DENIED: ErrorCode = ErrorCode(403);
    /// A limit was reached (sessions, subscriptions, batch size).
    pub const LIMIT: ErrorCode = ErrorCode(409);
    /// The handshake asked for a version or connection type the server does not speak.
    pub const UNSUPPORTED: ErrorCode = ErrorCode(301);
}

/// A Bayeux error as carried in a reply's `error` field, e.g. `402::Unknown client` or
/// `403:/secret:Subscribe denied`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BayeuxError {
    /// The numeric code.
    pub code: u16,
    /// Arguments naming what the error is about (a channel, a clientId); often empty.
    pub args: Vec<String>,
    /// A short human-readable description.
    pub message: String,
}

impl BayeuxError {
    /// Builds an error from its parts. The `:` and `,` that separate the parts of the
    /// error string are percent-encoded inside an argument (`%3A`, `%2C`, and `%` as
    /// `%25`), so that an argument taken from a request (a malformed channel name) cannot
    /// make the string ambiguous.
    pub fn new(code: ErrorCode, args: &[&str], message: impl Into<String>) -> Self {
        BayeuxError {
            code: code.0,
            args: args
                .iter()
                .map(|s| {
                    s.replace('%', "%25")
                        .replace(':', "%3A")
                        .replace(',', "%2C")
                })
                .collect(),
            message: message.into(),
        }
    }

    /// `402::Unknown client`: the session does not exist (never did, expired, or ended).
    pub fn unknown_client() -> Self {
        Self::new(ErrorCode::UNKNOWN_CLIENT, &[], "Unknown client")
    }

    /// `400::<what>`: a malformed message.
    pub fn bad_request(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::BAD_REQUEST, &[], what)
    }

    /// `400:<channel>:<why>`: a channel name that breaks the grammar. A long name is
    /// cut to its first 64 characters in the error, so a hostile one is not echoed whole.
    pub fn invalid_channel(channel: &str, why: impl fmt::Display) -> Self {
        let shown: String = if channel.chars().count() > 64 {
            channel.chars().take(64).chain("...".chars()).collect()
        } else {
            channel.to_string()
        };
        Self::new(
            ErrorCode::BAD_REQUEST,
            &[&shown],
            format!("Invalid channel: {why}"),
        )
    }

    /// `403::Handshake denied` (with the policy's reason when it gave one).
    pub fn handshake_denied(reason: &str) -> Self {
        let message = if reason.is_empty() {
            "Handshake denied".to_string()
        } else {
            format!("Handshake denied: {reason}")
        };
        Self::new(ErrorCode::DENIED, &[], message)
    }

    /// `403:<channel>:Subscribe denied`.
    pub fn subscribe_denied(channel: &str) -> Self {
        Self::new(ErrorCode::DENIED, &[channel], "Subscribe denied")
    }

    /// `403:<channel>:Publish denied`.
    pub fn publish_denied(channel: &str) -> Self {
        Self::new(ErrorCode::DENIED, &[channel], "Publish denied")
    }

    /// `409:<what>:Limit exceeded`.
    pub fn limit(what: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LIMIT, &[what], message)
    }

    /// Parses a `code:args:message` string; `None` when it is not in that form.
    pub fn parse(s: &str) -> Option<Self> {
        let (code, rest) = s.split_once(':')?;
        let (args, message) = rest.split_once(':')?;
        Some(BayeuxError {
            code: code.trim().parse().ok()?,
            args: if args.is_empty() {
                Vec::new()
            } else {
                args.split(',').map(str::to_string).collect()
            },
            message: message.to_string(),
        })
    }
}

impl fmt::Display for BayeuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.code, self.args.join(","), self.message)
    }
}

impl std::error::Error for BayeuxError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_spec_form() {
        assert_eq!(
            BayeuxError::unknown_client().to_string(),
            "402::Unknown client"
        );
        assert_eq!(
            BayeuxError::subscribe_denied("/secret").to_string(),
            "403:/secret:Subscribe denied"
        );
    }

    #[test]
    fn parses_spec_examples() {
        let e = BayeuxError::parse("403:xj3sjdsjdsjad,/foo/bar:Subscription denied").unwrap();
        assert_eq!(e.code, 403);
        assert_eq!(e.args, vec!["xj3sjdsjdsjad", "/foo/bar"]);
        assert_eq!(e.message, "Subscription denied");
        let e = BayeuxError::parse("402::session_unknown").unwrap();
        assert_eq!((e.code, e.args.len()), (402, 0));
        assert!(BayeuxError::parse("nonsense").is_none());
        assert!(BayeuxError::parse("abc::x").is_none());
    }

    #[test]
    fn arguments_cannot_break_the_error_string() {
        let e = BayeuxError::invalid_channel("/a:b,c%", "bad");
        let text = e.to_string();
        let parsed = BayeuxError::parse(&text).unwrap();
        assert_eq!(parsed.code, 400);
        assert_eq!(parsed.args, vec!["/a%3Ab%2Cc%25".to_string()]);
        assert_eq!(parsed.message, "Invalid channel: bad");
    }
}

//! The client's error type: opaque, with a kind to match on and the cause kept as its
//! `source()`.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::protocol::{BayeuxError, ChannelError};

type Cause = Box<dyn StdError + Send + Sync>;

/// What can go wrong for a client call.
///
/// Match on [`Error::kind`]; the underlying cause (an I/O or hyper error, the server's
/// [`BayeuxError`], a channel-name error) is the [`source`](StdError::source). `Display`
/// is one line naming what failed, followed by the chain of causes.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    /// What failed, e.g. `POST http://host/cometd` or `/meta/subscribe`.
    what: String,
    /// With [`ErrorKind::Status`]: the status code and the start of the body.
    status: Option<(u16, String)>,
    /// With [`ErrorKind::Refused`] (and [`ErrorKind::Closed`] after a refusal).
    refusal: Option<BayeuxError>,
    /// With [`ErrorKind::Tls`]: which TLS failure.
    tls: Option<TlsFailure>,
    source: Option<Cause>,
}

/// The kinds of [`Error`]. More may be added: match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL, a header or another builder setting is invalid.
    Config,
    /// The connection failed: refused, DNS, reset, closed before the response was
    /// complete, a WebSocket upgrade refused (its HTTP status is in
    /// [`Error::status_code`]), a socket closed before the reply came. The hyper, I/O or
    /// WebSocket error is the source.
    Connection,
    /// No response within the request timeout.
    Timeout,
    /// The server answered with a non-2xx HTTP status ([`Error::status_code`]).
    Status,
    /// The response was not a Bayeux batch, or lacked the expected reply.
    Protocol,
    /// The server refused the request with `successful: false`
    /// ([`Error::bayeux_error`]).
    Refused,
    /// A channel name outside the Bayeux grammar.
    InvalidChannel,
    /// No session right now: not yet handshaken, or re-handshaking after a failure.
    NotConnected,
    /// The client was stopped: [`Client::disconnect`](super::Client::disconnect),
    /// dropped, or the server advised `reconnect: none`.
    Closed,
    /// TLS failed in a way that retrying does not mend ([`Error::tls_failure`] says
    /// which): the server's certificate has an unknown issuer, is for another host name,
    /// has expired or is otherwise invalid; the server requires or refused our client
    /// certificate; or no TLS version or cipher suite is shared. Final: the client does
    /// not retry it, [`Client::handshake`](super::Client::handshake) returns it and the
    /// state becomes [`ConnectionState::Failed`](super::ConnectionState::Failed) with
    /// its message. Feature `tls`.
    Tls,
}

/// Which TLS failure an [`ErrorKind::Tls`] error is ([`Error::tls_failure`]), so that
/// an application can tell its user what to fix. More may be added: match with a
/// wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate is not signed by a certificate authority the client
    /// trusts (a private CA: add it with `ClientBuilder::ca_certificate_pem`).
    UnknownIssuer,
    /// The server's certificate is for other host names than the URL's.
    WrongHostName,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is otherwise invalid: not valid yet, revoked, not for
    /// server authentication, a bad signature, or none at all.
    InvalidCertificate,
    /// The server requires a client certificate and none was given.
    ClientCertificateRequired,
    /// The server refused the client certificate (an unknown issuer on its side, expired,
    /// revoked, access denied).
    ClientCertificateRefused,
    /// The server and the client share no TLS version, cipher suite or application
    /// protocol, or the server ended the handshake without saying why.
    Handshake,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::UnknownIssuer => {
                "unknown issuer: the server's certificate is not signed by a certificate \
                 authority this client trusts"
            }
            TlsFailure::WrongHostName => {
                "wrong host name: the server's certificate is for another host"
            }
            TlsFailure::Expired => "certificate expired",
            TlsFailure::InvalidCertificate => "invalid server certificate",
            TlsFailure::ClientCertificateRequired => {
                "client certificate required: the server asks for one and none was given"
            }
            TlsFailure::ClientCertificateRefused => "client certificate refused by the server",
            TlsFailure::Handshake => "TLS handshake refused by the server",
        })
    }
}

impl Error {
    fn new(kind: ErrorKind, what: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                what: what.into(),
                status: None,
                refusal: None,
                tls: None,
                source: None,
            }),
        }
    }

    fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn config(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, what)
    }

    /// A failed connection, or, when its cause is a TLS failure that retrying does not
    /// mend (see `tls::classify`), an [`ErrorKind::Tls`] error.
    pub(crate) fn connection(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        let source: Cause = source.into();
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut e = Self::new(ErrorKind::Connection, what);
        #[cfg(feature = "tls")]
        if let Some(failure) = super::tls::classify(&*source as &(dyn StdError + 'static)) {
            e.inner.kind = ErrorKind::Tls;
            e.inner.tls = Some(failure);
        }
        e.with_source(source)
    }

    pub(crate) fn timeout(what: &str, after: Duration) -> Self {
        Self::new(ErrorKind::Timeout, format!("{what} after {after:?}"))
    }

    pub(crate) fn status(what: impl Into<String>, code: u16, body: &[u8]) -> Self {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string();
        let mut e = Self::new(ErrorKind::Status, what);
        e.inner.status = Some((code, excerpt));
        e
    }

    /// A WebSocket upgrade answered with `code` instead of `101`: a connection failure
    /// that keeps the status and the start of the body.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub(crate) fn upgrade_refused(what: impl Into<String>, code: u16, body: &[u8]) -> Self {
        let mut e = Self::status(what, code, body);
        e.inner.kind = ErrorKind::Connection;
        e
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, what)
    }

    pub(crate) fn protocol_with(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::protocol(what).with_source(source)
    }

    pub(crate) fn refused(what: impl Into<String>, error: BayeuxError) -> Self {
        let mut e = Self::new(ErrorKind::Refused, what);
        e.inner.refusal = Some(error);
        e
    }

    pub(crate) fn invalid_channel(channel: &str, error: ChannelError) -> Self {
        Self::new(ErrorKind::InvalidChannel, channel).with_source(error)
    }

    pub(crate) fn not_connected() -> Self {
        Self::new(ErrorKind::NotConnected, "not handshaken, or reconnecting")
    }

    pub(crate) fn closed(why: impl Into<String>) -> Self {
        Self::new(ErrorKind::Closed, why)
    }

    /// Turns a refusal into the end of the client (the server also advised
    /// `reconnect: none`); the Bayeux error stays available.
    pub(crate) fn into_closed(mut self) -> Self {
        self.inner.what = self.to_string();
        self.inner.kind = ErrorKind::Closed;
        self
    }

    /// With [`ErrorKind::Closed`]: why, without the "client closed" prefix.
    pub(crate) fn closed_reason(&self) -> &str {
        &self.inner.what
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// With [`ErrorKind::Tls`]: which TLS failure (unknown issuer, wrong host name,
    /// expired certificate, ...).
    pub fn tls_failure(&self) -> Option<TlsFailure> {
        self.inner.tls
    }

    /// With [`ErrorKind::Status`]: the HTTP status code. With
    /// [`ErrorKind::Connection`] when a WebSocket upgrade was refused: the status the
    /// server answered instead of `101`.
    pub fn status_code(&self) -> Option<u16> {
        self.inner.status.as_ref().map(|(code, _)| *code)
    }

    /// With [`ErrorKind::Status`] (or a refused WebSocket upgrade): the start of the
    /// response body (at most 200 bytes, trimmed), often the server's explanation.
    pub fn body_excerpt(&self) -> Option<&str> {
        self.inner.status.as_ref().map(|(_, body)| body.as_str())
    }

    /// With [`ErrorKind::Refused`], or [`ErrorKind::Closed`] after a refused handshake:
    /// the server's Bayeux error (`403::Handshake denied`, ...).
    pub fn bayeux_error(&self) -> Option<&BayeuxError> {
        self.inner.refusal.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = &self.inner.what;
        match self.inner.kind {
            ErrorKind::Config => write!(f, "invalid client configuration: {what}")?,
            ErrorKind::Connection => {
                write!(f, "connection failed: {what}")?;
                if let Some((code, body)) = &self.inner.status {
                    write!(f, ": HTTP status {code} instead of 101 Switching Protocols")?;
                    if !body.is_empty() {
                        write!(f, ": {}", one_line_body(body))?;
                    }
                }
            }
            ErrorKind::Timeout => write!(f, "timed out: {what}")?,
            ErrorKind::Status => {
                let (code, body) = self.inner.status.as_ref().expect("a status error");
                write!(f, "HTTP status {code} from {what}")?;
                if !body.is_empty() {
                    write!(f, ": {}", one_line_body(body))?;
                }
            }
            ErrorKind::Protocol => write!(f, "protocol error: {what}")?,
            ErrorKind::Refused => write!(f, "refused by the server: {what}")?,
            ErrorKind::InvalidChannel => write!(f, "invalid channel: {what}")?,
            ErrorKind::NotConnected => write!(f, "no Bayeux session: {what}")?,
            ErrorKind::Closed => write!(f, "client closed: {what}")?,
            ErrorKind::Tls => match self.inner.tls {
                Some(failure) => write!(f, "TLS failure, {failure}: {what}")?,
                None => write!(f, "TLS failure: {what}")?,
            },
        }
        if self.inner.kind == ErrorKind::Refused
            && let Some(e) = &self.inner.refusal
        {
            write!(f, ": {e}")?;
        }
        // The causes, on the same line: a terminal user sees why, not just what. A cause
        // that its wrapper's message already ends with is not repeated, nor hyper's
        // `client error (Connect)`, which says nothing its own cause does not.
        let mut cause = self.inner.source.as_deref().map(|e| e as &dyn StdError);
        let mut previous = String::new();
        while let Some(e) = cause {
            let text = e.to_string();
            cause = e.source();
            let wrapper = text.starts_with("client error (") && cause.is_some();
            if !wrapper && (previous.is_empty() || !previous.ends_with(&text)) {
                write!(
                    f,
                    ": {}",
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                )?;
            }
            previous = text;
        }
        Ok(())
    }
}

/// A response body's start as an error message shows it: on one line, and an HTML page
/// (a proxy's or another server's error page) by its title rather than its markup.
fn one_line_body(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        let title = lower.find("<title>").and_then(|start| {
            let start = start + "<title>".len();
            let end = start + lower[start..].find("</title>")?;
            Some(
                body[start..end]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        });
        return match title.filter(|t| !t.is_empty()) {
            Some(title) => format!("an HTML page titled {title:?}"),
            None => "an HTML page".to_string(),
        };
    }
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("what", &self.inner.what);
        if let Some((code, body)) = &self.inner.status {
            d.field("status", code).field("body", body);
        }
        if let Some(e) = &self.inner.refusal {
            d.field("bayeux_error", e);
        }
        if let Some(t) = &self.inner.tls {
            d.field("tls_failure", t);
        }
        if let Some(e) = &self.inner.source {
            d.field("source", e);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match (&self.inner.source, &self.inner.refusal) {
            (Some(e), _) => Some(&**e),
            (None, Some(e)) => Some(e),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::connection("POST http://h/cometd", io);
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert_eq!(
            e.to_string(),
            "connection failed: POST http://h/cometd: refused"
        );
        assert!(e.source().is_some());

        let e = Error::upgrade_refused("WebSocket upgrade at ws://h/c", 405, b"use POST\n");
        assert_eq!(
            (e.kind(), e.status_code()),
            (ErrorKind::Connection, Some(405))
        );
        assert_eq!(
            e.to_string(),
            "connection failed: WebSocket upgrade at ws://h/c: \
             HTTP status 405 instead of 101 Switching Protocols: use POST"
        );

        let e = Error::status("POST http://h/cometd", 503, b"  busy, try later\n");
        assert_eq!(
            (e.status_code(), e.body_excerpt()),
            (Some(503), Some("busy, try later"))
        );
        assert_eq!(
            e.to_string(),
            "HTTP status 503 from POST http://h/cometd: busy, try later"
        );
    }

    #[test]
    fn a_body_is_shown_on_one_line_and_a_page_by_its_title() {
        let page =
            b"<!DOCTYPE HTML>\n<html lang=\"en\">\n  <head>\n    <title>Error\n response</title>";
        let e = Error::status("POST http://h/cometd", 501, page);
        assert_eq!(
            e.to_string(),
            "HTTP status 501 from POST http://h/cometd: an HTML page titled \"Error response\""
        );
        assert_eq!(
            e.body_excerpt(),
            Some(String::from_utf8_lossy(page).as_ref())
        );
        let e = Error::status("POST http://h/cometd", 400, b"bad\n  request\n");
        assert_eq!(
            e.to_string(),
            "HTTP status 400 from POST http://h/cometd: bad request"
        );
    }

    #[test]
    fn a_cause_its_wrapper_already_tells_is_not_repeated() {
        // As tungstenite's `IO error: {0}` over the io::Error it wraps.
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "IO error: {}", self.0)
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::connection("WebSocket handshake with ws://h/c", Wrapper(io));
        assert_eq!(
            e.to_string(),
            "connection failed: WebSocket handshake with ws://h/c: IO error: reset"
        );
    }

    #[test]
    fn a_refusal_keeps_the_bayeux_error_as_source() {
        let e = Error::refused("/meta/subscribe", BayeuxError::subscribe_denied("/s"));
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert_eq!(e.bayeux_error().unwrap().code, 403);
        assert_eq!(
            e.source().unwrap().to_string(),
            e.bayeux_error().unwrap().to_string()
        );
        let closed = e.into_closed();
        assert_eq!(closed.kind(), ErrorKind::Closed);
        assert_eq!(closed.bayeux_error().unwrap().code, 403);
        assert!(!closed.to_string().contains('\n'));
    }

    #[test]
    fn errors_are_send_sync_and_small() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}

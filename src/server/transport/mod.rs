//! Transports: how a session's messages reach its client.
//!
//! Every transport drives the same transport-neutral session (see the crate's
//! `server::session` module): it hands incoming batches to the request handler, attaches
//! to the session, awaits its next batch and writes it out. Long-polling answers one
//! held `/meta/connect` per batch; a WebSocket transport writes a frame per batch.

#[cfg(feature = "callback-polling")]
pub(crate) mod callback_polling;
pub(crate) mod long_polling;
#[cfg(feature = "websocket")]
pub(crate) mod websocket;

use std::fmt;

use crate::protocol::LONG_POLLING;

/// The WebSocket connection type's wire name.
pub const WEBSOCKET: &str = "websocket";
/// Faye's name for long-polling under CORS, from a page of another origin: offered at
/// handshake where CORS is on, and served as `long-polling` is.
pub const CROSS_ORIGIN_LONG_POLLING: &str = "cross-origin-long-polling";
/// The JSONP connection type's wire name.
pub const CALLBACK_POLLING: &str = "callback-polling";

/// A Bayeux connection type, as named in `supportedConnectionTypes` and
/// `connectionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionType {
    /// `long-polling`: HTTP POSTs, with `/meta/connect` held until there is something
    /// to send or `timeout` passes.
    LongPolling,
    /// `websocket`: one socket per client; messages pushed as they are queued, and
    /// `/meta/connect` held as a heartbeat (feature `websocket`).
    WebSocket,
    /// `callback-polling`: JSONP, long-polling over `GET` requests answered as scripts
    /// (feature `callback-polling`, and `ServerConfig::callback_polling`).
    CallbackPolling,
}

impl ConnectionType {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::LongPolling => LONG_POLLING,
            ConnectionType::WebSocket => WEBSOCKET,
            ConnectionType::CallbackPolling => CALLBACK_POLLING,
        }
    }

    /// The connection type with this wire name, if this crate knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            LONG_POLLING | CROSS_ORIGIN_LONG_POLLING => Some(ConnectionType::LongPolling),
            WEBSOCKET => Some(ConnectionType::WebSocket),
            CALLBACK_POLLING => Some(ConnectionType::CallbackPolling),
            _ => None,
        }
    }
}

/// The connection types a server with `config` runs, in CometD's order of preference:
/// `websocket`, `long-polling`, `callback-polling`.
pub(crate) fn offered(config: &crate::server::ServerConfig) -> Vec<ConnectionType> {
    let mut types = Vec::new();
    if cfg!(feature = "websocket") {
        types.push(ConnectionType::WebSocket);
    }
    types.push(ConnectionType::LongPolling);
    if cfg!(feature = "callback-polling") && config.callback_polling {
        types.push(ConnectionType::CallbackPolling);
    }
    types
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [
            ConnectionType::LongPolling,
            ConnectionType::WebSocket,
            ConnectionType::CallbackPolling,
        ] {
            assert_eq!(ConnectionType::from_name(t.as_str()), Some(t));
        }
        assert_eq!(ConnectionType::from_name("carrier-pigeon"), None);
    }
}

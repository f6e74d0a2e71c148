//! The Bayeux protocol model: messages, channel names, advice and error strings.
//!
//! Everything here is pure data and logic with no I/O, so that the server, the client
//! and the benchmarks share one definition of the wire format and can each be tested on
//! their own. Nothing in this module knows about HTTP, sessions or tokio.

pub mod advice;
pub mod channel;
pub mod error;
pub mod message;
pub mod replay;

pub use advice::{Advice, Reconnect};
pub use channel::{ChannelError, ChannelGrammar, ChannelKind, ChannelName, Wildcard};
pub use error::{BayeuxError, ErrorCode};
pub use message::{BAYEUX_VERSION, Batch, Message, MessageId, ParseError, Subscription};
pub use replay::ReplayFrom;

/// The channel on which a client opens a session.
pub const META_HANDSHAKE: &str = "/meta/handshake";
/// The channel of the long poll that carries messages to the client.
pub const META_CONNECT: &str = "/meta/connect";
/// The channel on which a client subscribes to channels.
pub const META_SUBSCRIBE: &str = "/meta/subscribe";
/// The channel on which a client cancels subscriptions.
pub const META_UNSUBSCRIBE: &str = "/meta/unsubscribe";
/// The channel on which a client ends its session.
pub const META_DISCONNECT: &str = "/meta/disconnect";
/// The only connection type this crate speaks over HTTP.
pub const LONG_POLLING: &str = "long-polling";

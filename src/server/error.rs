//! The error of the server's in-process sending API.

use std::fmt;

use super::broker::BrokerError;
use crate::protocol::BayeuxError;

/// Why [`Server::publish`](super::Server::publish), [`Server::deliver`](super::Server::deliver)
/// or [`Server::deliver_to_user`](super::Server::deliver_to_user) did not send a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// Refused before routing: an invalid or wildcard channel, a `/meta` channel, or the
    /// security policy said no. The Bayeux error is what a client would be told.
    Refused(BayeuxError),
    /// The broker could not route it to every node (this node's recipients may still
    /// have received it).
    Broker(BrokerError),
}

impl PublishError {
    /// The Bayeux error, when the message was refused.
    pub fn bayeux_error(&self) -> Option<&BayeuxError> {
        match self {
            PublishError::Refused(e) => Some(e),
            PublishError::Broker(_) => None,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Refused(e) => write!(f, "refused: {e}"),
            PublishError::Broker(e) => write!(f, "the broker failed: {e}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Refused(e) => Some(e),
            PublishError::Broker(e) => Some(e),
        }
    }
}

impl From<BayeuxError> for PublishError {
    fn from(e: BayeuxError) -> Self {
        PublishError::Refused(e)
    }
}

impl From<BrokerError> for PublishError {
    fn from(e: BrokerError) -> Self {
        PublishError::Broker(e)
    }
}

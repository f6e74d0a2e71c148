//! Long-polling: each batch is an HTTP POST of a JSON array whose response carries the
//! replies (and any deliveries). Long polls use a connection pool of their own.

use futures::FutureExt;
use futures::future::BoxFuture;
use hyper_util::client::legacy::connect::Connect;

use super::{HttpPool, Inbound, Lane, MakeTransport, Sent, Transport, TransportConfig, encode};
use crate::client::Error;
use crate::protocol::{Batch, LONG_POLLING, Message};

/// The long-polling transport over connections that `C` opens.
pub(crate) struct LongPolling<C> {
    config: TransportConfig,
    /// Only `/meta/connect`: a long poll never waits for a free connection.
    polls: HttpPool<C>,
    /// Everything else.
    requests: HttpPool<C>,
    inbound: Inbound,
}

/// Makes long-polling transports whose connections `connector` opens.
pub(crate) fn with_connector<C>(connector: C) -> MakeTransport
where
    C: Connect + Clone + Send + Sync + 'static,
{
    Box::new(move |config, inbound| {
        Box::new(LongPolling {
            config,
            polls: HttpPool::with_connector(connector.clone()),
            requests: HttpPool::with_connector(connector),
            inbound,
        })
    })
}

/// Makes long-polling transports over plain TCP.
pub(crate) fn plain() -> MakeTransport {
    Box::new(|config, inbound| {
        Box::new(LongPolling {
            config,
            polls: HttpPool::new(),
            requests: HttpPool::new(),
            inbound,
        })
    })
}

impl<C> Transport for LongPolling<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        LONG_POLLING
    }

    fn send(&self, lane: Lane, messages: Vec<Message>) -> BoxFuture<'_, Result<Sent, Error>> {
        async move {
            let pool = match lane {
                Lane::LongPoll => &self.polls,
                Lane::Requests => &self.requests,
            };
            let body = pool
                .post(
                    &self.config.url,
                    &self.config.headers,
                    Some(&self.config.cookies),
                    encode(&messages),
                )
                .await?;
            let received = Batch::parse_strict(&body).map_err(|e| {
                Error::protocol_with(format!("the response of {}", self.config.url), e)
            })?;
            self.inbound.receive(received);
            Ok(Sent::Answered)
        }
        .boxed()
    }
}

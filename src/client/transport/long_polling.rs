//! Long-polling: each batch is an HTTP POST of a JSON array whose response carries the
//! replies (and any deliveries). Over plain HTTP, long polls use a connection pool of
//! their own; over TLS one pool carries both, so that with HTTP/2 the long poll and the
//! publishes share one connection (with HTTP/1.1 the pool opens another connection for
//! a request while the long poll holds one, so a publish still never waits behind it).

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

/// Makes long-polling transports over TLS (`https://`) with `config`: one pool for
/// long polls and requests, HTTP/2 when the server picks it through ALPN.
#[cfg(feature = "tls")]
pub(crate) fn tls(tls: std::sync::Arc<rustls::ClientConfig>) -> MakeTransport {
    Box::new(move |config, inbound| {
        let pool = HttpPool::with_tls(tls);
        Box::new(LongPolling {
            config,
            polls: pool.clone(),
            requests: pool,
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

//! Long-polling: each batch is an HTTP POST of a JSON array whose response carries the
//! replies (and any deliveries). Long polls use a connection pool of their own.

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use hyper_util::client::legacy::connect::Connect;

use super::{CookieJar, HttpPool, Inbound, Lane, MakeTransport, Sent, Transport, TransportConfig};
use crate::client::Error;
use crate::protocol::message::encode_array;
use crate::protocol::{Batch, LONG_POLLING, Message};

/// The long-polling transport over connections that `C` opens.
pub(crate) struct LongPolling<C> {
    config: TransportConfig,
    cookies: CookieJar,
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
            cookies: CookieJar::new(),
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
            cookies: CookieJar::new(),
            polls: HttpPool::new(),
            requests: HttpPool::new(),
            inbound,
        })
    })
}

/// One batch as the body of a POST.
fn encode(messages: &[Message]) -> Bytes {
    let encoded: Vec<Bytes> = messages.iter().map(Message::to_bytes).collect();
    let size = encoded.iter().map(|b| b.len() + 1).sum();
    encode_array(encoded.iter().map(|b| &b[..]), size)
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
                    Some(&self.cookies),
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

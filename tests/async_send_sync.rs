//! The Send/Sync promises of the public API, checked at compile time (tokio's
//! `async_send_sync` pattern): a server, a client and every future they hand out can be
//! moved to, and shared between, the tasks of a multi-threaded runtime.

#![allow(dead_code, clippy::let_underscore_future)]

use bayeux::server::{
    BayeuxService, BrokerError, ChannelIndex, InMemoryBroker, Listening, LocalDelivery,
    LocalSubscription, PublishError, Receipt, Routing, Server,
};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

fn send<T: Send>(_: &T) {}
fn sync<T: Sync>(_: &T) {}
fn send_sync<T: Send + Sync>(_: &T) {}
fn is_send_sync<T: Send + Sync>() {}
fn is_send<T: Send>() {}
fn is_error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn server_types_are_send_and_sync() {
    is_send_sync::<Server>();
    is_send_sync::<BayeuxService>();
    is_send_sync::<InMemoryBroker>();
    is_send_sync::<ChannelIndex>();
    is_send_sync::<LocalDelivery>();
    is_send_sync::<Listening>();
    is_send_sync::<Receipt>();
    is_send::<LocalSubscription>();
    is_send::<Routing>();
    is_error::<PublishError>();
    is_error::<BrokerError>();
    is_error::<bayeux::protocol::BayeuxError>();
}

#[cfg(feature = "nats")]
#[test]
fn the_nats_broker_is_send_and_sync() {
    is_send_sync::<bayeux::server::NatsBroker>();
    is_send_sync::<bayeux::server::NatsConfig>();
    is_send_sync::<bayeux::server::LinkStats>();
    is_error::<bayeux::server::NatsError>();
}

/// Never called: it only has to compile.
async fn server_futures_are_send(server: Server, data: Value) {
    send(&server.publish("/a", data.clone()));
    send(&server.deliver("id", "/a", data.clone()));
    send(&server.deliver_to_user("user", "/a", data));
    send(&server.handle(http::Request::new(Full::new(Bytes::new()))));
    send(&server.listen("127.0.0.1:0".parse().unwrap(), "/cometd"));
    let listening = server
        .listen("127.0.0.1:0".parse().unwrap(), "/cometd")
        .await
        .unwrap();
    send(&listening.shutdown());
}

#[cfg(feature = "tower")]
#[test]
fn the_tower_service_future_is_send() {
    use tower_service::Service;
    fn check(mut service: BayeuxService) {
        let f = service.call(http::Request::new(Full::new(Bytes::new())));
        send_sync(&service);
        send(&f);
    }
    let _ = check;
}

#[test]
fn client_types_are_send_and_sync() {
    use bayeux::client::{Client, ClientBuilder, ConnectionState, Error, Subscription};
    is_send_sync::<Client>();
    is_send_sync::<ClientBuilder>();
    is_send_sync::<ConnectionState>();
    is_send::<Subscription>();
    is_error::<Error>();
    is_send_sync::<bayeux::client::transport::HttpPool>();
    is_send_sync::<bayeux::client::transport::CookieJar>();
}

/// Never called: it only has to compile.
async fn client_futures_are_send(client: bayeux::client::Client, data: Value) {
    send(&client.handshake());
    send(&client.subscribe("/a"));
    send(&client.publish("/a", data.clone()));
    send(&client.publish_batch(vec![("/a".into(), data)]));
    send(&client.disconnect());
    let subscription = client.subscribe("/a").await.unwrap();
    send(&subscription.unsubscribe());
}

//! # bayeux
//!
//! A CometD/Bayeux 1.0 implementation over HTTP long-polling, server and client, built
//! on hyper 1.x and tokio.
//!
//! Bayeux is a publish/subscribe protocol for pushing messages from a server to web and
//! native clients: a client opens a session (`/meta/handshake`), keeps one long poll open
//! (`/meta/connect`) that the server answers as soon as there is something to deliver,
//! subscribes to channels (`/chat/room`, wildcards `/chat/*` and `/chat/**`) and publishes
//! to them. CometD, Faye and Salesforce's streaming API speak it.
//!
//! The crate is layered like the protocol:
//! - [`protocol`]: messages, channel names, advice and error strings. Pure, no I/O.
//! - [`server`]: sessions, subscriptions, fan-out through a [`server::Broker`], and the
//!   HTTP transport as a hyper `Service` you can mount anywhere.
//! - [`client`]: a client over hyper's HTTP client whose subscriptions are `Stream`s and
//!   which re-handshakes and re-subscribes by itself.
//! - [`workbin`]: the demo publisher, a contact center's workbin REST API whose
//!   notifications reach each agent's sessions over Bayeux.
//!
//! ## Serving
//!
//! ```no_run
//! use bayeux::server::{Server, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(ServerConfig::default());
//! let listening = server.listen("127.0.0.1:8080".parse().unwrap(), "/cometd").await?;
//!
//! // Publish from Rust: encoded once, routed by the broker to every subscriber of /news.
//! server.publish("/news", serde_json::json!({"headline": "hello"})).await?;
//!
//! listening.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Subscribing
//!
//! ```no_run
//! use bayeux::client::Client;
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), bayeux::client::Error> {
//! let client = Client::builder("http://127.0.0.1:8080/cometd").build()?;
//! client.handshake().await?;
//! let mut news = client.subscribe("/news").await?;
//! while let Some(message) = news.next().await {
//!     println!("{:?}", message.data);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! To mount the endpoint inside your own hyper server, call [`Server::handle`] from your
//! service (it takes any request body type) or use [`Server::service`].

//! ## Features
//!
//! - `server`: [`server`], the Bayeux server and its long-polling transport.
//! - `client`: [`client`], the Bayeux client.
//! - `tower`: the endpoint as a tower `Service`, for axum and other tower stacks.
//! - `tracing`: log events an operator needs (refused handshakes, expired sessions,
//!   queue overflows, policy denials, accept errors, the client's reconnections).
//! - `metrics`: the server's Prometheus metrics (`Server::metrics`, `GET /metrics`
//!   through `server::OpsService`), through `prometheus-client`.
//! - `workbin`: [`workbin`], the demo publisher.
//! - `cli`: the `bayeux` binary (serve, listen, assign, demo, bench).
//!
//! All are on by default, for the binary. A library that embeds only the server builds
//! with `default-features = false, features = ["server"]`: hyper (with `http`,
//! `http-body-util`, `hyper-util`), tokio, serde, serde_json, futures, bytes, and
//! `getrandom` for session ids.

#![warn(missing_docs)]
#![warn(missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "client")]
pub mod client;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "workbin")]
pub mod workbin;

#[cfg(feature = "server")]
pub use server::{Server, ServerConfig};

/// The README's Rust examples, compiled as doc tests so that they stay true.
#[cfg(all(doctest, feature = "server", feature = "client"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

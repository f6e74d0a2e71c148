//! The Bayeux client: handshake, a background connect loop that follows the server's
//! advice and recovers by itself, subscriptions as `Stream`s, and acknowledged publishes,
//! over WebSocket or long-polling.
//!
//! ```no_run
//! use bayeux::client::Client;
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), bayeux::client::Error> {
//! let client = Client::builder("http://127.0.0.1:8080/cometd").build()?;
//! client.handshake().await?;
//! let mut news = client.subscribe("/news/**").await?;
//! client.publish("/news/today", serde_json::json!({"headline": "hi"})).await?;
//! if let Some(message) = news.next().await {
//!     println!("{}: {:?}", message.channel_str(), message.data);
//! }
//! client.disconnect().await
//! # }
//! ```
//!
//! The client core (sessions, reply correlation by message `id`, subscriptions) sits
//! on a [`transport`]: WebSocket (feature `websocket`, on by default) or long-polling
//! over hyper, with the HTTP connector pluggable ([`ClientBuilder::connector`]). By
//! default the client tries WebSocket first and falls back to long-polling when the
//! server does not take it, as CometD's JavaScript client does; see [`TransportChoice`].
//!
//! `https://` and `wss://` endpoints (feature `tls`, on by default) go through rustls,
//! trusting the platform's roots plus any CA given to the builder, with an optional
//! client certificate (the `tls` module); long-polling uses HTTP/2 when the server
//! offers it through ALPN (feature `http2`). A certificate the client cannot trust
//! (unknown issuer, wrong host name, expired) is a final [`ErrorKind::Tls`] error, not
//! a reason to retry.
//!
//! Failures are [`Error`]s; match on [`Error::kind`].
//! Each [`Subscription`] has a bounded queue: a consumer that falls behind loses the
//! newest messages of its own stream (counted), and holds up nothing else.

mod connect_loop;
mod error;
mod subscription;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use hyper_util::client::legacy::connect::Connect;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use crate::protocol::ReplayFrom;
pub use error::{Error, ErrorKind, TlsFailure};
pub use subscription::Subscription;

use crate::protocol::{
    Advice, BAYEUX_VERSION, BayeuxError, ChannelGrammar, ChannelName, META_DISCONNECT,
    META_HANDSHAKE, META_SUBSCRIBE, META_UNSUBSCRIBE, Message, MessageId, Reconnect,
};
use transport::{
    CookieJar, Inbound, Lane, MakeTransport, Sent, Transport, TransportConfig, Transports,
};

/// The client's connection state, observable with [`Client::state`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Built, not yet handshaken.
    Idle,
    /// Handshaking (the first time, or again after the session was lost).
    Handshaking,
    /// The last `/meta/connect` succeeded.
    Connected,
    /// The last exchange failed; retrying with backoff.
    Reconnecting,
    /// Stopped by [`Client::disconnect`] or by dropping the client.
    Disconnected,
    /// Stopped for good, with the reason: the server said `reconnect: none`, or a
    /// final error happened, such as a TLS certificate the client cannot trust
    /// ([`ErrorKind::Tls`]; the reason is that error's message).
    Failed(String),
    /// The server ended the session, so messages may have been lost: its queue for us
    /// overflowed (`409`), or it expired or was forgotten (`402`). The Bayeux error is
    /// given. The client handshakes again and re-subscribes by itself, staying in this
    /// state until the new session is `Connected`, and every live [`Subscription`]
    /// counts a [gap](Subscription::gaps).
    SessionLost(String),
}

/// Which transport a [`Client`] uses ([`ClientBuilder::transport`]).
///
/// [`Client::transport_name`] tells which one is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportChoice {
    /// WebSocket first, long-polling if the server does not take it (the default), as
    /// CometD's JavaScript client negotiates:
    ///
    /// - The handshake goes over a socket. When the socket cannot be opened (the upgrade
    ///   is answered with an HTTP error, as by servers without WebSocket; the connection
    ///   fails) or the handshake over it fails for a reason other than the server's
    ///   refusal, the handshake is tried again over long-polling at once; if that one
    ///   succeeds, the client stays on long-polling for good.
    /// - When the server's handshake reply does not list `websocket`, the session goes
    ///   on over long-polling.
    /// - Once on WebSocket, a socket that closes is replaced with a new one by the
    ///   reconnect backoff, except when an upgrade is then refused with a `4xx` status:
    ///   the client falls back to long-polling and resumes the session there.
    ///
    /// With a [`ClientBuilder::connector`], or without the `websocket` feature, this is
    /// long-polling: the WebSocket transport does not use the HTTP connector. A TLS
    /// failure ([`ErrorKind::Tls`]) is not a reason to fall back: it is returned.
    #[default]
    Auto,
    /// WebSocket only: when the server does not take it, the handshake fails with a
    /// [`Connection`](ErrorKind::Connection) error. `ws://` for an `http://` endpoint,
    /// `wss://` for an `https://` one (feature `tls`). Needs the `websocket` feature.
    WebSocket,
    /// Long-polling only: HTTP POSTs, the connect held by the server.
    LongPolling,
}

/// Reads or writes messages as they leave and enter the client, typically their `ext`
/// (authentication tokens, acknowledgements).
pub trait Extension: Send + Sync + 'static {
    /// Called on every message before it is sent.
    fn outgoing(&self, message: &mut Message) {
        let _ = message;
    }
    /// Called on every message received (replies and deliveries) before it is used.
    fn incoming(&self, message: &mut Message) {
        let _ = message;
    }
}

/// Tunables of a [`Client`].
#[derive(Clone)]
pub(crate) struct ClientConfig {
    /// Timeout of a request that is not a long poll.
    pub request_timeout: Duration,
    /// Added to the server's `timeout` advice for a long poll's HTTP timeout
    /// (CometD's `maxNetworkDelay`).
    pub max_network_delay: Duration,
    /// Ceiling of the first retry delay after a failure; doubled each time up to
    /// `max_backoff`. Each delay is jittered (see `connect_loop::Backoff`).
    pub backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
    /// `ext` sent with each handshake (credentials, for example).
    pub handshake_ext: Option<Map<String, Value>>,
    /// Ask for CometD's acknowledged-messages extension at handshake.
    pub ack: bool,
    /// Messages each subscription's stream holds before it drops new ones.
    pub subscription_capacity: usize,
    /// The grammar `subscribe` checks channel names with before asking the server.
    pub channel_grammar: ChannelGrammar,
    /// Ask for Salesforce's replay extension at every handshake, even before any
    /// [`Client::subscribe_from`].
    pub replay: bool,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The handshake `ext` often carries credentials: only its keys are shown.
        let ext_keys: Option<Vec<&String>> =
            self.handshake_ext.as_ref().map(|e| e.keys().collect());
        f.debug_struct("ClientConfig")
            .field("request_timeout", &self.request_timeout)
            .field("max_network_delay", &self.max_network_delay)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("handshake_ext_keys", &ext_keys)
            .field("ack", &self.ack)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("channel_grammar", &self.channel_grammar)
            .field("replay", &self.replay)
            .finish()
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    url: String,
    headers: Vec<(String, String)>,
    config: ClientConfig,
    extensions: Vec<Arc<dyn Extension>>,
    /// Long-polling over the connector set by [`ClientBuilder::connector`]; plain TCP
    /// (or rustls for `https://`) otherwise.
    long_polling: Option<MakeTransport>,
    choice: TransportChoice,
    /// Whom to trust and who we are over TLS, for `https://` and `wss://`.
    #[cfg(feature = "tls")]
    tls: tls::TlsOptions,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: only their names are shown.
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        let mut d = f.debug_struct("ClientBuilder");
        d.field("url", &self.url)
            .field("headers", &header_names)
            .field("config", &self.config)
            .field("extensions", &self.extensions.len())
            .field("transport", &self.choice);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.field(
            "connector",
            &if self.long_polling.is_some() {
                "custom"
            } else {
                "built in"
            },
        )
        .finish()
    }
}

impl ClientBuilder {
    /// Adds an HTTP header to every request (for example `Authorization`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds `Authorization: Basic ...` for `user` and `password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        self.header("authorization", &basic_authorization(user, password))
    }

    /// Timeout of publishes, subscribes and handshakes (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Margin added to the server's connect `timeout` for a long poll (default 10 s).
    pub fn max_network_delay(mut self, delay: Duration) -> Self {
        self.config.max_network_delay = delay;
        self
    }

    /// The characters `subscribe` accepts in channel names before asking the server
    /// (default [`ChannelGrammar::Strict`], the Bayeux grammar, as the server's default):
    /// [`ChannelGrammar::Cometd`] for a server that takes CometD's names, such as
    /// `/stock/AAPL.O`. A name outside it is an
    /// [`InvalidChannel`](ErrorKind::InvalidChannel) error without a round trip. Messages
    /// the server delivers are accepted whatever their channel's characters.
    pub fn channel_grammar(mut self, grammar: ChannelGrammar) -> Self {
        self.config.channel_grammar = grammar;
        self
    }

    /// Retry delays after failures: the ceiling starts at `initial` and doubles up to
    /// `max` (defaults 1 s and 30 s); each delay is drawn at random between half the
    /// ceiling and the ceiling, so that many clients do not retry in lockstep.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff = initial;
        self.config.max_backoff = max.max(initial);
        self
    }

    /// Asks the server for acknowledged delivery (CometD's `ack` extension, on by
    /// default): messages of a connect response that never arrived are sent again, and
    /// none is delivered twice. Servers without the extension simply ignore the request.
    pub fn ack(mut self, enabled: bool) -> Self {
        self.config.ack = enabled;
        self
    }

    /// How many messages each [`Subscription`] holds for its consumer (default
    /// [`DEFAULT_SUBSCRIPTION_CAPACITY`]; at least 1). When a stream is not read fast
    /// enough and its queue is full, new messages for that stream are dropped and
    /// counted ([`Subscription::dropped`], [`Client::dropped_messages`]); the long poll
    /// and the other subscriptions are never held up.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.config.subscription_capacity = capacity.max(1);
        self
    }

    /// Asks for Salesforce's replay extension (`ext: {"replay": true}`) at every
    /// handshake, from the first one on (default: off; the client asks anyway once a
    /// [`Client::subscribe_from`] or [`Client::restore_replay_ids`] was made). Servers
    /// without the extension ignore the request.
    pub fn replay(mut self, enabled: bool) -> Self {
        self.config.replay = enabled;
        self
    }

    /// Sets the `ext` object sent with every handshake.
    pub fn handshake_ext(mut self, ext: Map<String, Value>) -> Self {
        self.config.handshake_ext = Some(ext);
        self
    }

    /// Adds an extension; extensions run in the order they were added.
    pub fn extension(mut self, extension: impl Extension) -> Self {
        self.extensions.push(Arc::new(extension));
        self
    }

    /// Opens the HTTP connections with `connector` instead of the built-in ones (plain
    /// TCP, and rustls for `https://`): hyper-util's [`Connect`], for example a TLS
    /// connector of your own, which then handles `https://` URLs (the TLS settings of
    /// this builder are not used).
    ///
    /// The connector carries long-polling only, so with one the client uses
    /// long-polling ([`TransportChoice::Auto`] does not try WebSocket, and
    /// [`TransportChoice::WebSocket`] is refused at build).
    pub fn connector<C>(mut self, connector: C) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        self.long_polling = Some(transport::long_polling::with_connector(connector));
        self
    }

    /// Chooses the transport (default [`TransportChoice::Auto`]: WebSocket, falling back
    /// to long-polling).
    pub fn transport(mut self, choice: TransportChoice) -> Self {
        self.choice = choice;
        self
    }

    /// Also trusts the certificate authorities in `pem` (one or more PEM `CERTIFICATE`
    /// blocks) for `https://` and `wss://`: a private or corporate CA. Adds to the
    /// platform's roots unless [`platform_roots(false)`](Self::platform_roots). A PEM
    /// without a certificate is refused at build. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn ca_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls = self.tls.ca_certificate_pem(pem);
        self
    }

    /// Whether the platform's trusted roots (read with `rustls-native-certs`) are
    /// trusted; default `true`. With `false`, only the CAs given with
    /// [`ca_certificate_pem`](Self::ca_certificate_pem) are. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn platform_roots(mut self, enabled: bool) -> Self {
        self.tls = self.tls.platform_roots(enabled);
        self
    }

    /// Presents this client certificate (PEM, leaf first, then intermediates) with its
    /// private key (PEM) to a server that asks for one: mutual TLS. Checked at build
    /// (a key that does not match is refused). Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn client_certificate_pem(
        mut self,
        certificate: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Self {
        self.tls = self.tls.client_certificate_pem(certificate, key);
        self
    }

    /// Uses this rustls configuration for `https://` and `wss://` instead of the TLS
    /// settings above, for full control (another verifier, key logging...). It must be
    /// built with the [`tls::rustls`] this crate re-exports. Its ALPN protocols are
    /// replaced: `h2` and `http/1.1` for long-polling, `http/1.1` for WebSocket.
    /// Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = self.tls.rustls_config(config);
        self
    }

    /// Replaces every TLS setting with `options`. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, options: tls::TlsOptions) -> Self {
        self.tls = options;
        self
    }

    /// Builds the client (no I/O yet; call [`Client::handshake`]).
    ///
    /// The URL is the Bayeux endpoint: `http://`, or `https://` with the `tls` feature
    /// (or a TLS [`connector`](Self::connector)). `ws://` and `wss://` are taken as
    /// `http://` and `https://`: the WebSocket URL is derived from the endpoint's, and
    /// long-polling needs the HTTP one. For `https://`, the TLS settings are checked here
    /// (PEMs, a trusted root at least): a [`Config`](ErrorKind::Config) error otherwise.
    pub fn build(mut self) -> Result<Client, Error> {
        let url: Uri = self
            .url
            .parse()
            .map_err(|e| Error::config(format!("{}: {e}", self.url)))?;
        if url.host().is_none() {
            return Err(Error::config(format!("{}: the URL has no host", self.url)));
        }
        let http_scheme = match url.scheme_str() {
            Some("http" | "https") => None,
            Some("ws") => Some("http"),
            Some("wss") => Some("https"),
            _ => {
                return Err(Error::config(format!(
                    "{}: an http://, https://, ws:// or wss:// URL is required",
                    self.url
                )));
            }
        };
        let url = match http_scheme {
            None => url,
            Some(http) => {
                let mut parts = url.into_parts();
                parts.scheme = Some(http.parse().expect("a valid scheme"));
                Uri::from_parts(parts).map_err(|e| Error::config(format!("{}: {e}", self.url)))?
            }
        };
        let https = url.scheme_str() == Some("https");
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name: HeaderName = name
                .parse()
                .map_err(|_| Error::config(format!("header name {name:?}")))?;
            let value: HeaderValue = value
                .parse()
                .map_err(|_| Error::config(format!("header value for {name}")))?;
            headers.append(name, value);
        }
        let (status, _) = watch::channel(ConnectionState::Idle);
        let (websocket, long_polling) = self.choose_transports(https)?;
        let config = TransportConfig {
            url: url.clone(),
            headers,
            cookies: Arc::new(CookieJar::new()),
        };
        let shared = Arc::new_cyclic(|weak| Shared {
            transport: {
                let make = |m: MakeTransport| m(config.clone(), Inbound(weak.clone()));
                match (websocket, long_polling) {
                    (Some(ws), lp) => Transports::new(make(ws), lp.map(make)),
                    (None, Some(lp)) => Transports::new(make(lp), None),
                    (None, None) => unreachable!("one transport at least"),
                }
            },
            url,
            config: self.config,
            extensions: self.extensions,
            state: Mutex::new(State::default()),
            pending: Mutex::new(HashMap::new()),
            status,
            next_message_id: AtomicU64::new(1),
            next_listener_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            sessions_lost: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        Ok(Client {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        })
    }
}

impl ClientBuilder {
    /// The WebSocket and long-polling transports to make, per the choice: one at least.
    /// `https`: the endpoint is `https://`, so the built-in transports speak TLS.
    #[allow(clippy::type_complexity)]
    fn choose_transports(
        &mut self,
        https: bool,
    ) -> Result<(Option<MakeTransport>, Option<MakeTransport>), Error> {
        let custom = self.long_polling.take();
        let is_custom = custom.is_some();
        let websocket = match self.choice {
            TransportChoice::WebSocket if is_custom => {
                return Err(Error::config(
                    "the WebSocket transport does not use the HTTP connector: \
                     with ClientBuilder::connector, choose TransportChoice::Auto or LongPolling",
                ));
            }
            #[cfg(not(feature = "websocket"))]
            TransportChoice::WebSocket => {
                return Err(Error::config(
                    "the WebSocket transport needs the `websocket` feature",
                ));
            }
            #[cfg(feature = "websocket")]
            TransportChoice::WebSocket => true,
            TransportChoice::Auto => cfg!(feature = "websocket") && !is_custom,
            TransportChoice::LongPolling => false,
        };
        let long_polling = self.choice != TransportChoice::WebSocket;
        // The built-in transports that will speak TLS.
        let tls_websocket = https && websocket;
        let tls_long_polling = https && long_polling && !is_custom;
        #[cfg(not(feature = "tls"))]
        if tls_websocket || tls_long_polling {
            return Err(Error::config(format!(
                "{}: https:// needs the `tls` feature (or, for long-polling, a TLS \
                 connector: ClientBuilder::connector)",
                self.url
            )));
        }
        #[cfg(feature = "tls")]
        let http_tls = tls_long_polling
            .then(|| self.tls.http_config())
            .transpose()?;
        #[cfg(all(feature = "tls", feature = "websocket"))]
        let websocket_tls = tls_websocket
            .then(|| self.tls.websocket_config())
            .transpose()?;
        let long_polling = long_polling.then(|| {
            custom.unwrap_or_else(|| {
                #[cfg(feature = "tls")]
                if let Some(config) = http_tls {
                    return transport::long_polling::tls(config);
                }
                transport::long_polling::plain()
            })
        });
        #[cfg(feature = "websocket")]
        let websocket = websocket.then(|| {
            #[cfg(feature = "tls")]
            if let Some(config) = websocket_tls {
                return transport::websocket::tls(config);
            }
            transport::websocket::plain()
        });
        #[cfg(not(feature = "websocket"))]
        let websocket: Option<MakeTransport> = {
            debug_assert!(
                !websocket && !tls_websocket,
                "no WebSocket transport to make"
            );
            None
        };
        Ok((websocket, long_polling))
    }
}

/// The default of [`ClientBuilder::subscription_capacity`]: messages a subscription's
/// stream holds before new ones are dropped. Memory is only taken as the queue fills.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 16_384;

/// A local subscriber: where messages on matching channels go.
pub(crate) struct Listener {
    pub id: u64,
    pub pattern: ChannelName,
    pub tx: mpsc::Sender<Message>,
    /// Messages dropped because the queue was full; shared with the [`Subscription`].
    pub dropped: Arc<AtomicU64>,
    /// Sessions lost while this listener was live; shared with the [`Subscription`].
    pub gaps: Arc<AtomicU64>,
}

/// A pattern subscribed with replay: where it started, and the last replay id seen on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplayTrack {
    /// What was asked first.
    pub from: ReplayFrom,
    /// The highest replay id delivered on the pattern (or where the server said a
    /// `New` subscription joined): the next subscribe resumes after it.
    pub last: Option<i64>,
}

impl ReplayTrack {
    /// What a (re-)subscribe asks for: after the last id seen, else what was asked.
    pub fn resume(&self) -> ReplayFrom {
        match self.last {
            Some(id) => ReplayFrom::After(id),
            None => self.from,
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub client_id: Option<String>,
    pub advice: Advice,
    pub listeners: Vec<Listener>,
    /// Patterns the server confirmed for the current session.
    pub confirmed: HashSet<ChannelName>,
    /// With acknowledgements on: the last connect batch received; `None` when the
    /// server does not acknowledge.
    pub ack_batch: Option<u64>,
    pub stopped: bool,
    /// The patterns subscribed with replay ([`Client::subscribe_from`]).
    pub replay: HashMap<ChannelName, ReplayTrack>,
    /// Replay ids the application restored, by pattern, not yet subscribed.
    pub restored: HashMap<String, i64>,
    /// The current session's server answered `ext.replay: true` at handshake.
    pub server_replays: bool,
}

/// A request waiting for its reply.
struct Pending {
    /// The request's channel: a reply without an `id` is matched by channel.
    channel: String,
    reply: oneshot::Sender<Message>,
}

/// State shared by the client handles, the connect loop and the subscriptions.
pub(crate) struct Shared {
    pub transport: Transports,
    url: Uri,
    pub config: ClientConfig,
    extensions: Vec<Arc<dyn Extension>>,
    state: Mutex<State>,
    /// Requests sent and not yet answered, by message id.
    pending: Mutex<HashMap<MessageId, Pending>>,
    pub status: watch::Sender<ConnectionState>,
    next_message_id: AtomicU64,
    next_listener_id: AtomicU64,
    /// Messages dropped over every subscription (full queues).
    dropped: AtomicU64,
    sessions_lost: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_status(&self, status: ConnectionState) {
        self.status.send_if_modified(|s| {
            // A final state is never left.
            let final_state = matches!(
                s,
                ConnectionState::Disconnected | ConnectionState::Failed(_)
            );
            if final_state || *s == status {
                return false;
            }
            *s = status;
            true
        });
    }

    pub fn client_id(&self) -> Option<String> {
        self.state().client_id.clone()
    }

    /// A message on `channel` with a fresh id and the current clientId.
    pub fn message(&self, channel: &str) -> Message {
        let mut m = Message::new(channel);
        m.id = Some(MessageId::Text(
            self.next_message_id
                .fetch_add(1, Ordering::Relaxed)
                .to_string(),
        ));
        m.client_id = self.client_id();
        m
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<MessageId, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a batch on the transport in use and waits, at most `timeout`, for the reply
    /// to each message (in order; `None` when the transport answered without one).
    pub async fn exchange(
        &self,
        lane: Lane,
        messages: Vec<Message>,
        timeout: Duration,
    ) -> Result<Vec<Option<Message>>, Error> {
        self.exchange_on(self.transport.current(), lane, messages, timeout)
            .await
    }

    /// [`Shared::exchange`] on a given transport.
    async fn exchange_on(
        &self,
        transport: &dyn Transport,
        lane: Lane,
        mut messages: Vec<Message>,
        timeout: Duration,
    ) -> Result<Vec<Option<Message>>, Error> {
        for m in &mut messages {
            for ext in &self.extensions {
                ext.outgoing(m);
            }
        }
        let what = match messages.as_slice() {
            [one] => one.channel_str().to_string(),
            many => format!("a batch of {} messages", many.len()),
        };
        // Waiting for the replies before sending: a fast reply cannot be missed.
        let mut waiting = Vec::with_capacity(messages.len());
        let mut forget = ForgetPending {
            shared: self,
            ids: Vec::with_capacity(messages.len()),
        };
        {
            let mut pending = self.pending();
            for m in &messages {
                let Some(id) = m.id.clone() else {
                    waiting.push(None);
                    continue;
                };
                let (reply, rx) = oneshot::channel();
                let channel = m.channel_str().to_string();
                pending.insert(id.clone(), Pending { channel, reply });
                forget.ids.push(id);
                waiting.push(Some(rx));
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = tokio::time::timeout_at(deadline, transport.send(lane, messages))
            .await
            .map_err(|_| Error::timeout(&what, timeout))??;
        let collect = async {
            let mut replies = Vec::with_capacity(waiting.len());
            for rx in waiting {
                replies.push(match (rx, &sent) {
                    (None, _) => None,
                    (Some(mut rx), Sent::Answered) => rx.try_recv().ok(),
                    // A reply already received wins over the link's end.
                    (Some(rx), Sent::Later(link)) => tokio::select! {
                        biased;
                        reply = rx => reply.ok(),
                        why = link.closed() => {
                            return Err(Error::connection(what.clone(), why.to_string()));
                        }
                    },
                });
            }
            Ok(replies)
        };
        let replies = match tokio::time::timeout_at(deadline, collect).await {
            Ok(replies) => replies,
            Err(_) => {
                // As CometD does: a socket that lost a reply is not trusted any more.
                if let Sent::Later(link) = &sent {
                    link.close(format!("no reply to {what} within {timeout:?}"));
                }
                Err(Error::timeout(&what, timeout))
            }
        };
        drop(forget);
        replies
    }

    /// Takes a batch from the transport: deliveries go to the listeners first, then the
    /// replies complete their pending requests.
    pub(crate) fn receive(&self, messages: Vec<Message>) {
        let mut replies = Vec::new();
        for mut m in messages {
            for ext in &self.extensions {
                ext.incoming(&mut m);
            }
            // Replies are on /meta channels or carry `successful`; the rest is delivered.
            if m.channel_str().starts_with("/meta/") || m.successful.is_some() {
                replies.push(m);
            } else {
                self.dispatch(m);
            }
        }
        if replies.is_empty() {
            return;
        }
        let mut pending = self.pending();
        for reply in replies {
            let waiter = match &reply.id {
                // Our ids are strings; a server may echo "7" as 7.
                Some(id) => pending
                    .remove(id)
                    .or_else(|| pending.remove(&MessageId::Text(id.to_string()))),
                // A server that does not echo ids: the request on the same channel.
                None => pending
                    .iter()
                    .find(|(_, p)| p.channel == reply.channel_str())
                    .map(|(id, _)| id.clone())
                    .and_then(|id| pending.remove(&id)),
            };
            // A reply nobody waits for (its request timed out) is dropped.
            if let Some(waiter) = waiter {
                let _ = waiter.reply.send(reply);
            }
        }
    }

    /// Hands a delivered message to every local subscription whose pattern matches.
    /// Never waits: a full subscription queue drops the message for that subscription.
    fn dispatch(&self, message: Message) {
        // The lenient grammar: what the server sends is the server's to decide.
        let Ok(channel) = ChannelName::parse_with(message.channel_str(), ChannelGrammar::Cometd)
        else {
            return;
        };
        let mut st = self.state();
        if let Some(id) = crate::protocol::replay::replay_id_of(message.data.as_ref()) {
            for (pattern, track) in st.replay.iter_mut() {
                if pattern.matches(&channel) {
                    track.last = Some(track.last.map_or(id, |last| last.max(id)));
                }
            }
        }
        st.listeners.retain(|l| !l.tx.is_closed());
        for l in st.listeners.iter().filter(|l| l.pattern.matches(&channel)) {
            if let Err(mpsc::error::TrySendError::Full(_)) = l.tx.try_send(message.clone()) {
                l.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records that the server ended the session (`reason`, its Bayeux error): says so
    /// through the state watch and counts a gap on every live subscription.
    /// A subscription that replays on a server that replays resumes where it was: no
    /// gap (unless the server refuses its replay id then, see `connect_loop`).
    pub fn session_lost(&self, reason: String) {
        self.sessions_lost.fetch_add(1, Ordering::Relaxed);
        let st = self.state();
        for l in &st.listeners {
            if !(st.server_replays && st.replay.contains_key(&l.pattern)) {
                l.gaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(st);
        self.set_status(ConnectionState::SessionLost(reason));
    }

    /// One request/reply exchange on the request lane; returns the reply to `request`.
    pub async fn request(&self, request: Message) -> Result<Message, Error> {
        self.request_on(self.transport.current(), request).await
    }

    /// [`Shared::request`] on a given transport.
    async fn request_on(
        &self,
        transport: &dyn Transport,
        request: Message,
    ) -> Result<Message, Error> {
        let channel = request.channel_str().to_string();
        self.exchange_on(
            transport,
            Lane::Requests,
            vec![request],
            self.config.request_timeout,
        )
        .await?
        .pop()
        .flatten()
        .ok_or_else(|| Error::protocol(format!("no reply to {channel}")))
    }

    /// Sends a handshake and, when accepted, records the new session.
    ///
    /// Negotiation ([`TransportChoice::Auto`]): when the handshake fails on the transport
    /// in use for a reason of the transport's (the socket could not be opened, closed,
    /// no reply...) rather than the server's refusal, it is tried on the fallback; if
    /// that succeeds, the client stays on the fallback. When both fail, the fallback's
    /// error is returned and the next handshake tries the first transport again.
    pub async fn handshake_once(&self) -> Result<(), Error> {
        let offered = self.transport.offered();
        let first = self.handshake_on(self.transport.current(), offered).await;
        match (first, self.transport.fallback()) {
            (Err(e), Some(fallback)) if is_transport_failure(&e) => {
                let offered = vec![fallback.name().to_string()];
                self.handshake_on(fallback, offered).await?;
                self.transport.fall_back();
                Ok(())
            }
            (result, _) => result,
        }
    }

    /// One handshake on `transport`, offering the connection types `offered`.
    async fn handshake_on(
        &self,
        transport: &dyn Transport,
        offered: Vec<String>,
    ) -> Result<(), Error> {
        let mut m = self.message(META_HANDSHAKE);
        m.client_id = None;
        m.version = Some(BAYEUX_VERSION.into());
        m.minimum_version = Some(BAYEUX_VERSION.into());
        m.supported_connection_types = Some(offered);
        m.ext = self.config.handshake_ext.clone();
        if self.config.ack {
            m.ext
                .get_or_insert_with(Map::new)
                .insert("ack".into(), Value::Bool(true));
        }
        let wants_replay = self.config.replay || {
            let st = self.state();
            !st.replay.is_empty() || !st.restored.is_empty()
        };
        if wants_replay {
            m.ext.get_or_insert_with(Map::new).insert(
                crate::protocol::replay::REPLAY_EXT.into(),
                Value::Bool(true),
            );
        }
        let reply = self.request_on(transport, m).await?;
        if !reply.is_successful() {
            let err = Error::refused(
                META_HANDSHAKE,
                reply
                    .bayeux_error()
                    .unwrap_or_else(|| BayeuxError::bad_request("handshake failed")),
            );
            if reply.advice.as_ref().and_then(|a| a.reconnect) == Some(Reconnect::None) {
                return Err(err.into_closed());
            }
            return Err(err);
        }
        let Some(client_id) = reply.client_id.clone() else {
            return Err(Error::protocol("handshake reply without clientId"));
        };
        // A server that answered over a socket but does not list `websocket`: the
        // session goes on over long-polling, or, without it, cannot go on.
        #[cfg(feature = "websocket")]
        if transport.name() == transport::websocket::WEBSOCKET
            && let Some(types) = &reply.supported_connection_types
            && !types.iter().any(|t| t == transport::websocket::WEBSOCKET)
            && !self.transport.fall_back()
        {
            return Err(Error::protocol(format!(
                "the server does not offer the websocket transport (it offers {})",
                types.join(", ")
            )));
        }
        // CometD servers answer `ack: true`, or `ack: {enabled: true, batch: N}`.
        let ack = reply.ext.as_ref().and_then(|e| e.get("ack"));
        let server_acks = self.config.ack
            && match ack {
                Some(Value::Bool(b)) => *b,
                Some(Value::Object(o)) => o.get("enabled") == Some(&Value::Bool(true)),
                _ => false,
            };
        let start_batch = ack
            .and_then(|a| a.get("batch"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let server_replays = crate::protocol::replay::handshake_asks(reply.ext.as_ref());
        let mut st = self.state();
        st.client_id = Some(client_id);
        st.server_replays = server_replays;
        st.confirmed.clear();
        st.ack_batch = server_acks.then_some(start_batch);
        if let Some(advice) = reply.advice {
            merge_advice(&mut st.advice, advice);
        }
        Ok(())
    }

    /// Subscribes the server to `pattern` for the current session.
    pub async fn subscribe_remote(&self, pattern: &ChannelName) -> Result<(), Error> {
        if self.client_id().is_none() {
            return Err(Error::not_connected());
        }
        let m = self.subscribe_message(pattern);
        let reply = self.request(m).await?;
        if reply.is_successful() {
            self.confirmed(pattern, &reply);
            Ok(())
        } else {
            Err(Error::refused(
                format!("{META_SUBSCRIBE} {pattern}"),
                reply
                    .bayeux_error()
                    .unwrap_or_else(|| BayeuxError::subscribe_denied(pattern.as_str())),
            ))
        }
    }

    /// A `/meta/subscribe` for `pattern`, with `ext.replay` when it replays.
    pub fn subscribe_message(&self, pattern: &ChannelName) -> Message {
        let resume = self.state().replay.get(pattern).map(ReplayTrack::resume);
        let mut m = self.message(META_SUBSCRIBE);
        m.subscription = Some(crate::protocol::Subscription::One(pattern.to_string()));
        if let Some(from) = resume {
            let mut entries = Map::new();
            entries.insert(pattern.to_string(), from.to_wire().into());
            m.ext.get_or_insert_with(Map::new).insert(
                crate::protocol::replay::REPLAY_EXT.into(),
                Value::Object(entries),
            );
        }
        m
    }

    /// Records the server's confirmation of a subscribe to `pattern`. A replaying
    /// subscription that asked for new messages only learns where it joined the log
    /// (`ext.replay` of this crate's server), so that it resumes from there even if it
    /// receives nothing before losing its session.
    pub fn confirmed(&self, pattern: &ChannelName, reply: &Message) {
        let position = reply
            .ext
            .as_ref()
            .and_then(|e| e.get(crate::protocol::replay::REPLAY_EXT))
            .and_then(|r| r.get(pattern.as_str()))
            .and_then(Value::as_i64);
        let mut st = self.state();
        st.confirmed.insert(pattern.clone());
        if position.is_some() && st.replay.contains_key(pattern) {
            // The server replays, even if the handshake did not ask.
            st.server_replays = true;
        }
        if let (Some(track), Some(position)) = (st.replay.get_mut(pattern), position)
            && track.resume() == ReplayFrom::New
        {
            track.last = Some(position);
        }
    }

    /// Removes a local listener; when it was the last one on its pattern, tells the server.
    pub async fn remove_listener(&self, id: u64) -> Result<(), Error> {
        let pattern = {
            let mut st = self.state();
            let Some(pos) = st.listeners.iter().position(|l| l.id == id) else {
                return Ok(());
            };
            let pattern = st.listeners.remove(pos).pattern;
            if st.listeners.iter().any(|l| l.pattern == pattern) {
                return Ok(());
            }
            st.replay.remove(&pattern);
            if !st.confirmed.remove(&pattern) {
                return Ok(());
            }
            pattern
        };
        let mut m = self.message(META_UNSUBSCRIBE);
        m.subscription = Some(crate::protocol::Subscription::One(pattern.to_string()));
        let reply = self.request(m).await?;
        if reply.is_successful() {
            Ok(())
        } else {
            Err(Error::refused(
                format!("{META_UNSUBSCRIBE} {pattern}"),
                reply
                    .bayeux_error()
                    .unwrap_or_else(|| BayeuxError::bad_request("unsubscribe failed")),
            ))
        }
    }

    pub fn next_listener_id(&self) -> u64 {
        self.next_listener_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops the loop, closes the transports and ends every subscription stream.
    pub fn stop(&self, final_state: ConnectionState) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        self.transport.close();
        {
            let mut st = self.state();
            st.stopped = true;
            st.client_id = None;
            st.listeners.clear();
            st.confirmed.clear();
        }
        self.set_status(final_state);
    }
}

/// Whether a failed handshake failed because of its transport (worth trying another),
/// not because the server refused it.
fn is_transport_failure(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Status | ErrorKind::Protocol
    )
}

/// Forgets the pending requests of an exchange that ended, answered or not.
struct ForgetPending<'a> {
    shared: &'a Shared,
    ids: Vec<MessageId>,
}

impl Drop for ForgetPending<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut pending = self.shared.pending();
        for id in &self.ids {
            pending.remove(id);
        }
    }
}

/// The value of an `Authorization` header with HTTP Basic credentials.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// Keeps the server's advice, field by field (a reply may carry only some fields).
pub(crate) fn merge_advice(into: &mut Advice, from: Advice) {
    if from.reconnect.is_some() {
        into.reconnect = from.reconnect;
    }
    if from.interval.is_some() {
        into.interval = from.interval;
    }
    if from.timeout.is_some() {
        into.timeout = from.timeout;
    }
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop(ConnectionState::Disconnected);
    }
}

/// A Bayeux client. Cheap to clone; the background loop stops when the last clone is
/// dropped or on [`Client::disconnect`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared.url)
            .field("transport", &self.shared.transport.name())
            .field("state", &*self.shared.status.borrow())
            .field("client_id", &self.shared.client_id())
            .field("dropped_messages", &self.dropped_messages())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts building a client for the Bayeux endpoint at `url`
    /// (e.g. `http://127.0.0.1:8080/cometd`).
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_string(),
            headers: Vec::new(),
            config: ClientConfig {
                request_timeout: Duration::from_secs(10),
                max_network_delay: Duration::from_secs(10),
                backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
                handshake_ext: None,
                ack: true,
                subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
                channel_grammar: ChannelGrammar::Strict,
                replay: false,
            },
            extensions: Vec::new(),
            long_polling: None,
            choice: TransportChoice::Auto,
            #[cfg(feature = "tls")]
            tls: tls::TlsOptions::default(),
        }
    }

    /// Opens the session and starts the background connect loop. Fails when the server
    /// refuses (with its Bayeux error) or cannot be reached; it is not retried here.
    /// With [`TransportChoice::Auto`] this is where the transport is negotiated.
    ///
    /// A TLS failure ([`ErrorKind::Tls`]: the server's certificate cannot be trusted, or
    /// ours was refused) is final: the client stops, its state becomes
    /// [`ConnectionState::Failed`] with the error's message, and the error is returned.
    pub async fn handshake(&self) -> Result<(), Error> {
        if self.shared.state().stopped {
            return Err(Error::closed("the client was stopped"));
        }
        self.shared.set_status(ConnectionState::Handshaking);
        if let Err(e) = self.shared.handshake_once().await {
            if e.kind() == ErrorKind::Tls {
                self.shared.stop(ConnectionState::Failed(e.to_string()));
            } else {
                self.shared.set_status(ConnectionState::Idle);
            }
            return Err(e);
        }
        let mut task = self.shared.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() {
            *task = Some(tokio::spawn(connect_loop::run(self.shared.clone())));
        }
        Ok(())
    }

    /// The Bayeux connection type in use: `"websocket"` or `"long-polling"`. Before the
    /// handshake, the one that will be tried first; it changes once, when the client
    /// falls back from WebSocket to long-polling (see [`TransportChoice::Auto`]).
    pub fn transport_name(&self) -> &'static str {
        self.shared.transport.name()
    }

    /// A watch of [`Client::transport_name`], to show or await the transport in use
    /// alongside the connection [`state`](Client::state).
    pub fn transport_changes(&self) -> watch::Receiver<&'static str> {
        self.shared.transport.watch()
    }

    /// Messages dropped so far over all subscriptions because a stream's queue was
    /// full (see [`ClientBuilder::subscription_capacity`]).
    pub fn dropped_messages(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// How many times the server ended this client's session in a way that may have
    /// lost messages (a queue overflow, an expired session); see
    /// [`ConnectionState::SessionLost`].
    pub fn sessions_lost(&self) -> u64 {
        self.shared.sessions_lost.load(Ordering::Relaxed)
    }

    /// The current session's clientId, if there is one.
    pub fn client_id(&self) -> Option<String> {
        self.shared.client_id()
    }

    /// A watch of the connection state, for an application to show or await.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.status.subscribe()
    }

    /// Waits until the state satisfies `pred` (or the client is dropped).
    pub async fn wait_for_state(&self, pred: impl Fn(&ConnectionState) -> bool) -> ConnectionState {
        let mut rx = self.state();
        match rx.wait_for(|s| pred(s)).await {
            Ok(s) => s.clone(),
            Err(_) => ConnectionState::Disconnected,
        }
    }

    /// Subscribes to `channel` (wildcards allowed). Resolves once the server confirmed
    /// the subscription; a refusal is an error. The returned [`Subscription`] is a
    /// stream of the messages; dropping it unsubscribes. Several subscriptions to the
    /// same channel each receive every message. Subscriptions are renewed by themselves
    /// after a re-handshake.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, Error> {
        self.subscribe_with(channel, None).await
    }

    /// Subscribes to `channel` with Salesforce's replay extension: the server first
    /// sends what its durable channel retained after `from`
    /// ([`ReplayFrom::All`]: everything; [`ReplayFrom::New`]: nothing), then the new
    /// messages. A replay id the server cannot replay after is refused with its `400`
    /// ([`ErrorKind::Refused`]).
    ///
    /// The client then tracks the last replay id delivered on the pattern
    /// (`data.event.replayId`) and, after a re-handshake (an expired session, a
    /// restarted server, another node), re-subscribes after it by itself, so the stream
    /// receives every message once, in order, with no [gap](Subscription::gaps). When
    /// the server no longer has that point (retention exceeded, a server that lost its
    /// log), the stream counts a gap and re-subscribes with [`ReplayFrom::All`].
    ///
    /// When [`Client::restore_replay_ids`] gave an id for `channel`, it wins over `from`
    /// (resume where the previous process stopped). The replay applies when the
    /// pattern is first subscribed by this client: a second subscription to a pattern
    /// already subscribed shares the first's stream position and receives new messages.
    pub async fn subscribe_from(
        &self,
        channel: &str,
        from: ReplayFrom,
    ) -> Result<Subscription, Error> {
        self.subscribe_with(channel, Some(from)).await
    }

    /// The last replay id seen per replaying pattern (the pattern as given to
    /// [`Client::subscribe_from`]), with the restored ones not yet subscribed: what to
    /// save to resume after a restart of the application.
    pub fn replay_ids(&self) -> HashMap<String, i64> {
        let st = self.shared.state();
        let mut ids = st.restored.clone();
        for (pattern, track) in &st.replay {
            if let Some(last) = track.last {
                ids.insert(pattern.to_string(), last);
            }
        }
        ids
    }

    /// Gives back ids saved from [`Client::replay_ids`]: the next
    /// [`Client::subscribe_from`] of each pattern resumes after its id.
    pub fn restore_replay_ids(&self, ids: impl IntoIterator<Item = (String, i64)>) {
        self.shared.state().restored.extend(ids);
    }

    async fn subscribe_with(
        &self,
        channel: &str,
        from: Option<ReplayFrom>,
    ) -> Result<Subscription, Error> {
        let pattern = ChannelName::parse_with(channel, self.shared.config.channel_grammar)
            .map_err(|e| Error::invalid_channel(channel, e))?;
        let (tx, rx) = mpsc::channel(self.shared.config.subscription_capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let gaps = Arc::new(AtomicU64::new(0));
        let id = self.shared.next_listener_id();
        // Listen before asking, so nothing delivered right after the server's reply is
        // missed.
        let already = {
            let mut st = self.shared.state();
            if st.stopped {
                return Err(Error::closed("the client was stopped"));
            }
            if let Some(from) = from
                && !st.replay.contains_key(&pattern)
            {
                let last = st.restored.remove(pattern.as_str());
                st.replay
                    .insert(pattern.clone(), ReplayTrack { from, last });
            }
            st.listeners.push(Listener {
                id,
                pattern: pattern.clone(),
                tx,
                dropped: dropped.clone(),
                gaps: gaps.clone(),
            });
            st.confirmed.contains(&pattern)
        };
        let subscription = Subscription::new(
            pattern.clone(),
            id,
            rx,
            dropped,
            gaps,
            Arc::downgrade(&self.shared),
        );
        if !already && let Err(e) = self.shared.subscribe_remote(&pattern).await {
            // Forget the listener without telling the server (it refused).
            let mut st = self.shared.state();
            st.listeners.retain(|l| l.id != id);
            if !st.listeners.iter().any(|l| l.pattern == pattern) {
                st.replay.remove(&pattern);
            }
            drop(st);
            subscription.forget();
            return Err(e);
        }
        Ok(subscription)
    }

    /// Publishes `data` on `channel`; resolves with the server's successful reply, or the
    /// Bayeux error when it refused.
    pub async fn publish(&self, channel: &str, data: Value) -> Result<Message, Error> {
        let mut results = self
            .publish_batch(vec![(channel.to_string(), data)])
            .await?;
        results.pop().unwrap_or_else(|| {
            Err(Error::protocol(format!(
                "no reply to a publish on {channel}"
            )))
        })
    }

    /// Publishes several messages in one HTTP request (one WebSocket frame), in order;
    /// one result per message.
    pub async fn publish_batch(
        &self,
        messages: Vec<(String, Value)>,
    ) -> Result<Vec<Result<Message, Error>>, Error> {
        if self.client_id().is_none() {
            return Err(Error::not_connected());
        }
        let requests: Vec<Message> = messages
            .into_iter()
            .map(|(channel, data)| {
                let mut m = self.shared.message(&channel);
                m.data = Some(data);
                m
            })
            .collect();
        let replies = self
            .shared
            .exchange(Lane::Requests, requests, self.shared.config.request_timeout)
            .await?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Some(r) if r.is_successful() => Ok(r),
                Some(r) => Err(Error::refused(
                    format!("publish on {}", r.channel_str()),
                    r.bayeux_error()
                        .unwrap_or_else(|| BayeuxError::bad_request("publish failed")),
                )),
                None => Err(Error::protocol("no reply to a publish")),
            })
            .collect())
    }

    /// Sends `/meta/disconnect`, stops the loop, closes the socket (on WebSocket) and
    /// ends every subscription stream. The client cannot be used afterwards.
    pub async fn disconnect(&self) -> Result<(), Error> {
        let had_session = self.client_id().is_some();
        // Stop the loop first so that it does not re-handshake behind our back.
        if let Some(task) = self
            .shared
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        let result = if had_session {
            let m = self.shared.message(META_DISCONNECT);
            self.shared.request(m).await.map(|_| ())
        } else {
            Ok(())
        };
        self.shared.stop(ConnectionState::Disconnected);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_refuses_bad_urls_and_headers() {
        assert!(matches!(
            Client::builder("ftp://x/").build(),
            Err(e) if e.kind() == ErrorKind::Config
        ));
        assert!(matches!(
            Client::builder("not a url").build(),
            Err(e) if e.kind() == ErrorKind::Config
        ));
        assert!(matches!(
            Client::builder("http://h/c")
                .header("bad header", "v")
                .build(),
            Err(e) if e.kind() == ErrorKind::Config
        ));
    }

    /// A transport in the manner of a WebSocket: a send completes at once, and replies
    /// and deliveries arrive later, from another task, through the inbound path.
    struct Pushed {
        inbound: Inbound,
        connection_types: Arc<Mutex<Vec<String>>>,
    }

    impl Transport for Pushed {
        fn name(&self) -> &'static str {
            "test-push"
        }

        fn send(
            &self,
            _lane: Lane,
            messages: Vec<Message>,
        ) -> futures::future::BoxFuture<'_, Result<Sent, Error>> {
            let inbound = self.inbound.clone();
            for m in &messages {
                if let Some(t) = &m.connection_type {
                    self.connection_types.lock().unwrap().push(t.clone());
                }
            }
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                for m in messages {
                    let reply = m.reply().succeed();
                    match m.channel_str() {
                        META_HANDSHAKE => inbound.receive(vec![Message {
                            client_id: Some("c1".into()),
                            ..reply
                        }]),
                        "/meta/connect" => {
                            // Held like a long poll, then answered.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            inbound.receive(vec![reply]);
                        }
                        META_SUBSCRIBE => {
                            // Without an id: matched by channel.
                            inbound.receive(vec![Message { id: None, ..reply }]);
                            // A delivery that no request asked for.
                            let channel = m.subscription.unwrap().channels()[0].clone();
                            inbound.receive(vec![Message::publish(channel, "pushed".into())]);
                        }
                        "/silent" => {}
                        _ if !m.channel_str().starts_with("/meta/") => {
                            let delivery =
                                Message::publish(m.channel_str(), m.data.clone().unwrap());
                            // The string id echoed as a number.
                            let id = m.id.as_ref().unwrap().to_string().parse().unwrap();
                            let id = Some(MessageId::Number(id));
                            inbound.receive(vec![delivery, Message { id, ..reply }]);
                        }
                        _ => inbound.receive(vec![reply]),
                    }
                }
            });
            Box::pin(async { Ok(Sent::Later(transport::Link::new())) })
        }
    }

    #[tokio::test]
    async fn a_transport_with_pushed_replies_needs_no_change_in_the_client() {
        use futures::StreamExt;
        let connection_types = Arc::new(Mutex::new(Vec::new()));
        let types = connection_types.clone();
        let mut builder =
            Client::builder("http://test/cometd").request_timeout(Duration::from_millis(300));
        builder.long_polling = Some(Box::new(move |_, inbound| {
            Box::new(Pushed {
                inbound,
                connection_types: types,
            })
        }));
        let client = builder.build().unwrap();
        assert_eq!(client.transport_name(), "test-push");
        client.handshake().await.unwrap();
        assert_eq!(client.client_id().as_deref(), Some("c1"));
        let mut sub = client.subscribe("/pushed").await.unwrap();
        assert_eq!(sub.next().await.unwrap().data, Some("pushed".into()));
        let reply = client.publish("/pushed", 7.into()).await.unwrap();
        assert!(reply.is_successful());
        assert_eq!(sub.next().await.unwrap().data, Some(7.into()));
        client
            .wait_for_state(|s| *s == ConnectionState::Connected)
            .await;
        assert_eq!(connection_types.lock().unwrap()[0], "test-push");
        // No reply ever: the request times out, and is forgotten.
        let e = client.publish("/silent", 1.into()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(
            client.shared.pending().len() <= 1,
            "only the long poll waits"
        );
    }

    #[test]
    fn advice_merges_field_by_field() {
        let mut a = Advice::retry(0, 30_000);
        merge_advice(
            &mut a,
            Advice {
                interval: Some(500),
                ..Advice::default()
            },
        );
        assert_eq!(
            (a.reconnect, a.interval, a.timeout),
            (Some(Reconnect::Retry), Some(500), Some(30_000))
        );
    }
}

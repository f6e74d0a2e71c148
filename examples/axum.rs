//! The Bayeux endpoint inside an axum application.
//!
//! - `/cometd` (and the paths below it, which the CometD JavaScript client uses) is the
//!   Bayeux endpoint, mounted as a tower `Service` next to the application's own routes.
//! - `POST /api/announcements` is an application route that publishes to `/announcements`
//!   from its handler.
//! - One authentication for both: a bearer token names the user. The Bayeux server's
//!   `SecurityPolicy` checks it at handshake (so only known users open sessions), and the
//!   application's route checks it with the same `Tokens` value.
//!
//! ```sh
//! cargo run --example axum
//! cargo run -- listen http://127.0.0.1:8082/cometd /announcements -H 'Authorization: Bearer alice-token'
//! curl -s -X POST http://127.0.0.1:8082/api/announcements \
//!   -H 'Authorization: Bearer alice-token' -d 'lunch is served'
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bayeux::server::{
    HandshakeDecision, HandshakeRequest, PolicyFuture, SecurityPolicy, Server, ServerConfig,
};
use serde_json::json;

/// The application's users, by bearer token.
#[derive(Debug)]
struct Tokens(HashMap<String, String>);

impl Tokens {
    /// The user named by an `Authorization: Bearer` header, if the token is known.
    fn user(&self, headers: &HeaderMap) -> Option<&str> {
        let value = headers.get("authorization")?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?;
        self.0.get(token).map(String::as_str)
    }
}

/// The same check guards the Bayeux handshake.
impl SecurityPolicy for Tokens {
    fn handshake<'a>(
        &'a self,
        request: HandshakeRequest<'a>,
    ) -> PolicyFuture<'a, HandshakeDecision> {
        Box::pin(async move {
            match self.user(request.headers) {
                Some(user) => HandshakeDecision::Accept {
                    user: Some(user.to_string()),
                },
                None => HandshakeDecision::Deny("a valid bearer token is required".into()),
            }
        })
    }
}

#[derive(Clone)]
struct App {
    bayeux: Server,
    tokens: Arc<Tokens>,
}

/// An application route that publishes to Bayeux subscribers.
async fn announce(
    State(app): State<App>,
    headers: HeaderMap,
    text: String,
) -> (StatusCode, String) {
    let Some(user) = app.tokens.user(&headers) else {
        return (StatusCode::UNAUTHORIZED, "unknown token\n".into());
    };
    let data = json!({"from": user, "text": text});
    match app.bayeux.publish("/announcements", data).await {
        Ok(receipt) => (
            StatusCode::OK,
            format!("sent to {} subscribers\n", receipt.local_recipients),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// The whole application: the Bayeux endpoint beside the application's routes.
fn router(app: App) -> Router {
    let endpoint = app.bayeux.service().mounted_at("/cometd");
    Router::new()
        .route("/api/announcements", post(announce))
        .route_service("/cometd", endpoint.clone())
        .route_service("/cometd/{*transport}", endpoint)
        .with_state(app)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let tokens = Arc::new(Tokens(HashMap::from([
        ("alice-token".to_string(), "alice".to_string()),
        ("bob-token".to_string(), "bob".to_string()),
    ])));
    let bayeux = Server::builder()
        .config(ServerConfig::default())
        .policy(tokens.clone())
        .build();
    let app = App {
        bayeux: bayeux.clone(),
        tokens,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8082").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Answer pending long polls at once, so connections close promptly.
            bayeux.shutdown();
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bayeux::client::Client;
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn subscribers_receive_what_the_application_route_publishes() {
        let tokens = Arc::new(Tokens(HashMap::from([(
            "t1".to_string(),
            "alice".to_string(),
        )])));
        let bayeux = Server::builder().policy(tokens.clone()).build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = App {
            bayeux: bayeux.clone(),
            tokens,
        };
        tokio::spawn(async move { axum::serve(listener, router(app)).await });
        tokio::time::timeout(Duration::from_secs(20), async {
            // No token: the shared policy refuses the handshake.
            let stranger = Client::builder(&format!("{base}/cometd")).build().unwrap();
            assert!(stranger.handshake().await.is_err());

            let alice = Client::builder(&format!("{base}/cometd"))
                .header("authorization", "Bearer t1")
                .build()
                .unwrap();
            alice.handshake().await.unwrap();
            let mut news = alice.subscribe("/announcements").await.unwrap();

            let http =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<String>();
            let post = |token: &'static str| {
                http.request(
                    axum::http::Request::post(format!("{base}/api/announcements"))
                        .header("authorization", token)
                        .body("hello".to_string())
                        .unwrap(),
                )
            };
            assert_eq!(post("Bearer nope").await.unwrap().status(), 401);
            assert_eq!(post("Bearer t1").await.unwrap().status(), 200);
            let message = news.next().await.unwrap();
            assert_eq!(
                message.data,
                Some(json!({"from": "alice", "text": "hello"}))
            );
        })
        .await
        .unwrap();
    }
}

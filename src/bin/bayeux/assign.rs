//! `bayeux assign`: the supervisor's POST to an agent's workbin.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Options of `bayeux assign`.
#[derive(clap::Args)]
pub struct AssignArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080
    base_url: String,
    /// The agent whose workbin receives the interaction.
    user: String,
    /// The workbin id.
    workbin: String,
    /// AddInteraction, AddEmail, AddChat or AddWorkitem.
    #[arg(long, default_value = "AddEmail")]
    op: String,
    /// The interaction's URI; its last path segment is the interaction id.
    #[arg(long)]
    uri: String,
    /// Supervisor credentials as user:password (HTTP Basic).
    #[arg(long)]
    auth: Option<String>,
}

/// An HTTP client for the workbin API.
pub type Http = HttpClient<HttpConnector, Full<Bytes>>;

/// A fresh HTTP client.
pub fn http() -> Http {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

/// POSTs one assignment; returns the HTTP status and the JSON reply.
pub async fn post(
    http: &Http,
    base_url: &str,
    user: &str,
    workbin: &str,
    op: &str,
    uri: &str,
    auth: Option<&str>,
) -> Result<(u16, Value), Box<dyn std::error::Error>> {
    let url = format!(
        "{}/api/v2/users/{user}/workbins/{workbin}",
        base_url.trim_end_matches('/')
    );
    let body = json!({"operationName": op, "uri": uri}).to_string();
    let mut request = http::Request::post(url).header("content-type", "application/json");
    if let Some(auth) = auth {
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        request = request.header(
            "authorization",
            bayeux::client::basic_authorization(user, password),
        );
    }
    let response = http
        .request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes)?))
}

/// Prints the reply; fails when the server reported an error.
pub async fn run(args: AssignArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (status, reply) = post(
        &http(),
        &args.base_url,
        &args.user,
        &args.workbin,
        &args.op,
        &args.uri,
        args.auth.as_deref(),
    )
    .await?;
    println!("{reply}");
    if status == 200 && reply["statusCode"] == 0 {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            reply["statusMessage"].as_str().unwrap_or("error")
        )
        .into())
    }
}

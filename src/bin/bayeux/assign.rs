//! `bayeux assign`: the supervisor's POST to an agent's workbin.

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::errors;
use crate::listen::TlsArgs;
use crate::settings::{Millis, UsageError, show_duration};

/// Options of `bayeux assign`.
#[derive(clap::Args)]
pub struct AssignArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (without /cometd)
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
    /// How long the server may take to answer: `10s`, `500ms`, or milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: Millis,
    #[command(flatten)]
    tls: TlsArgs,
}

/// An HTTP client for the workbin API: plain TCP, or rustls for `https://`.
pub enum Http {
    /// `http://` only.
    Plain(HttpClient<HttpConnector, Full<Bytes>>),
    /// `https://` (and `http://`).
    Tls(HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Http {
    async fn request(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Http::Plain(client) => client.request(request).await,
            Http::Tls(client) => client.request(request).await,
        }
    }
}

/// A fresh HTTP client for `http://` URLs.
pub fn http() -> Http {
    Http::Plain(HttpClient::builder(TokioExecutor::new()).build_http())
}

/// A fresh HTTP client for `base_url`: with TLS (the options of `tls`) for an
/// `https://` one.
pub fn http_for(base_url: &str, tls: &TlsArgs) -> Result<Http, Box<dyn std::error::Error>> {
    if !base_url.starts_with("https://") {
        return Ok(http());
    }
    let config = tls
        .options()?
        .websocket_config()
        .map_err(|e| errors::client(base_url, &e))?;
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    let connector = hyper_rustls::HttpsConnector::from((tcp, config));
    Ok(Http::Tls(
        HttpClient::builder(TokioExecutor::new()).build(connector),
    ))
}

/// The workbin endpoint of `user`'s `workbin` on the server at `base_url`; a
/// [`UsageError`] naming the URL when it is not an `http://` or `https://` one.
fn workbin_url(base_url: &str, user: &str, workbin: &str) -> Result<Uri, UsageError> {
    let url = format!(
        "{}/api/v2/users/{user}/workbins/{workbin}",
        base_url.trim_end_matches('/')
    );
    let uri: Uri = url.parse().map_err(|e| {
        UsageError(format!(
            "invalid URL {url:?}: {e} (the base URL is e.g. http://127.0.0.1:8080)"
        ))
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(UsageError(format!(
            "invalid base URL {base_url:?}: an http:// or https:// URL is required (e.g. http://127.0.0.1:8080)"
        ))),
    }
}

/// POSTs one assignment within `timeout`; returns the HTTP status and the JSON reply.
/// Each error is one line that names the URL and the cause.
#[allow(clippy::too_many_arguments)]
pub async fn post(
    http: &Http,
    base_url: &str,
    user: &str,
    workbin: &str,
    op: &str,
    uri: &str,
    auth: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Value), Box<dyn std::error::Error>> {
    let url = workbin_url(base_url, user, workbin)?;
    let body = json!({"operationName": op, "uri": uri}).to_string();
    let mut request = http::Request::post(url.clone()).header("content-type", "application/json");
    if let Some(auth) = auth {
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        request = request.header(
            "authorization",
            bayeux::client::basic_authorization(user, password),
        );
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let exchange = async {
        let response = http.request(request).await.map_err(|e| {
            let hint = if errors::is_tls_mismatch(&e) {
                " (the server does not speak TLS there: try http://)"
            } else {
                ""
            };
            if e.is_connect() {
                format!("POST {url}: cannot connect: {}{hint}", errors::chain(&e))
            } else {
                format!("POST {url}: {}{hint}", errors::chain(&e))
            }
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("POST {url}: reading the reply: {}", errors::chain(&e)))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("POST {url}: no answer within {}", show_duration(timeout)))??;
    let reply: Value = serde_json::from_slice(&bytes).map_err(|_| {
        format!(
            "POST {url}: HTTP {status}, and the reply is not JSON but {}: is this a bayeux server?",
            errors::excerpt(&bytes)
        )
    })?;
    if reply.get("statusCode").is_none() {
        return Err(format!(
            "POST {url}: HTTP {status}, and the reply is not the workbin API's but {}: is {base_url} the server's base URL (without the Bayeux path)?",
            errors::excerpt(&bytes)
        )
        .into());
    }
    Ok((status.as_u16(), reply))
}

/// Prints the reply; fails when the server reported an error.
pub async fn run(args: AssignArgs) -> Result<(), Box<dyn std::error::Error>> {
    let http = http_for(&args.base_url, &args.tls)?;
    let (status, reply) = post(
        &http,
        &args.base_url,
        &args.user,
        &args.workbin,
        &args.op,
        &args.uri,
        args.auth.as_deref(),
        args.timeout.0,
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

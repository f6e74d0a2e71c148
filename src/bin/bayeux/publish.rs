//! `bayeux publish`: one message on a channel, then exit (to go with `listen`).

use std::io::Read;

use serde_json::Value;

use crate::errors;
use crate::listen::ClientArgs;
use crate::settings::UsageError;

/// Options of `bayeux publish`.
#[derive(clap::Args)]
pub struct PublishArgs {
    /// The Bayeux endpoint, e.g. http://127.0.0.1:8080/cometd
    url: String,
    /// The channel to publish on, e.g. /chat/room (no wildcards).
    channel: String,
    /// The message's data as JSON: '{"text":"hi"}', '"a string"', 42; or - to read it
    /// from standard input.
    data: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Handshakes, publishes, disconnects; fails with the cause when the server cannot be
/// reached, does not answer within `--timeout`, or refuses the message.
pub async fn run(args: PublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = if args.data == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the data from standard input: {e}"))?;
        text
    } else {
        args.data.clone()
    };
    let data: Value = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "the data {} is not JSON: {e} (a string needs its quotes: '\"hello\"')",
            errors::excerpt(text.as_bytes())
        ))
    })?;
    let client = args.client.client(&args.url, None)?;
    client
        .handshake()
        .await
        .map_err(|e| errors::client(&args.url, &e))?;
    let published = client.publish(&args.channel, data).await;
    let _ = client.disconnect().await;
    published.map_err(|e| {
        format!(
            "publishing on {}: {}",
            args.channel,
            errors::client(&args.url, &e)
        )
    })?;
    eprintln!("bayeux: published on {}", args.channel);
    Ok(())
}

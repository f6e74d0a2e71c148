//! The floor for `benches/`: a bare hyper HTTP/1.1 server that reads each POST's body and
//! answers a fixed Bayeux reply, with no protocol work at all. `bayeux bench --mode
//! handshake` against it measures what one HTTP exchange costs this machine with the
//! same client, to compare with what a real exchange with the Bayeux server costs.
//!
//! ```sh
//! cargo run --release --example floor -- 127.0.0.1:8090
//! cargo run --release -- bench http://127.0.0.1:8090/cometd --mode handshake --duration 5
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const HANDSHAKE: &[u8] = br#"[{"channel":"/meta/handshake","successful":true,"version":"1.0","clientId":"floor0000000000000000000000000000000000","supportedConnectionTypes":["long-polling"],"advice":{"reconnect":"retry","interval":0,"timeout":30000}}]"#;
const OTHER: &[u8] = br#"[{"channel":"/meta/disconnect","successful":true}]"#;

/// Reads the body, then answers the fixed reply that fits it.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let handshake = body.windows(15).any(|w| w == b"/meta/handshake");
    let reply = if handshake { HANDSHAKE } else { OTHER };
    let mut response = Response::new(Full::new(Bytes::from_static(reply)));
    response.headers_mut().insert(
        "content-type",
        "application/json;charset=UTF-8".parse().unwrap(),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let listener = TcpListener::bind(&addr).await?;
    println!("floor listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

//! Embedding the Bayeux endpoint in your own hyper server, next to your own routes.
//!
//! Run with `cargo run --example embed`, then POST Bayeux messages to
//! `http://127.0.0.1:8081/cometd`; `GET /health` is the application's own route.

use std::convert::Infallible;

use bayeux::server::{ResponseBody, Server, ServerConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn route(
    bayeux: Server,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let path = req.uri().path();
    if path == "/cometd" || path.starts_with("/cometd/") {
        return Ok(bayeux.handle(req).await);
    }
    if path == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
    *res.status_mut() = hyper::StatusCode::NOT_FOUND;
    Ok(res)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bayeux = Server::new(ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:8081").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let bayeux = bayeux.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(bayeux.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

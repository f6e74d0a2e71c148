//! The endpoint as a tower `Service`, for axum and other tower stacks.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Body;

use super::http::{BayeuxService, ResponseBody};

/// Any request body works (axum's `Body`, hyper's `Incoming`, `Full<Bytes>`...); the
/// service never fails (errors are HTTP statuses), so it mounts with axum's
/// `Router::route_service` as is.
impl<B> tower_service::Service<Request<B>> for BayeuxService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.respond(request).await) })
    }
}

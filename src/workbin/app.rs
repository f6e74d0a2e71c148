//! The demo application: the Bayeux endpoint and the workbin API on one hyper server.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;

use super::{Access, Workbin, WorkbinConfig};
use crate::server::{BayeuxService, Listening, ResponseBody, Server, ServerConfig};

/// Routes the Bayeux mount path to the Bayeux server and everything else to the
/// workbin API (which answers 404 for unknown paths). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DemoApp {
    bayeux: BayeuxService,
    workbin: Arc<Workbin>,
}

impl DemoApp {
    /// Builds the Bayeux server (with `access` as its security policy) and the workbin
    /// endpoint publishing through it. Must be called inside a tokio runtime.
    pub fn new(
        config: ServerConfig,
        access: Access,
        workbin: WorkbinConfig,
        bayeux_path: &str,
    ) -> Self {
        let access = Arc::new(access);
        let server = Server::builder()
            .config(config)
            .policy(access.clone())
            .build();
        DemoApp {
            bayeux: server.service().mounted_at(bayeux_path),
            workbin: Arc::new(Workbin::new(server, access, workbin)),
        }
    }

    /// The Bayeux server (to publish, subscribe or inspect sessions from Rust).
    pub fn server(&self) -> &Server {
        self.bayeux.server()
    }

    /// The workbin endpoint (to assign from Rust).
    pub fn workbin(&self) -> &Workbin {
        &self.workbin
    }

    /// Serves the application on `addr` in the background. Without a configured public
    /// URL, the interactions' URIs use the bound address.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<Listening> {
        let listening = Server::listen_with(self.server().clone(), addr, self.clone()).await?;
        self.workbin.default_public_url(listening.url(""));
        Ok(listening)
    }
}

impl Service<Request<Incoming>> for DemoApp {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if self.bayeux.matches(request.uri().path()) {
            return self.bayeux.call(request);
        }
        let workbin = self.workbin.clone();
        Box::pin(async move { Ok(workbin.handle(request).await) })
    }
}

//! The single-process broker.

use std::sync::RwLock;

use super::{Broker, BrokerError, Envelope, LocalDelivery, Receipt, Routing};

/// The broker of a server that runs alone: a message is handed straight to the local
/// delivery, synchronously, with no allocation.
///
/// Several servers in one process can share one `InMemoryBroker` (each attaches to it):
/// a message routed through any of them then reaches the recipients of all of them,
/// which is how several nodes behave behind a distributed broker.
#[derive(Default)]
pub struct InMemoryBroker {
    nodes: RwLock<Vec<LocalDelivery>>,
}

impl InMemoryBroker {
    /// A broker with no node attached yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for InMemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = self.nodes.read().map(|n| n.len()).unwrap_or(0);
        f.debug_struct("InMemoryBroker")
            .field("nodes", &nodes)
            .finish()
    }
}

impl Broker for InMemoryBroker {
    fn attach(&self, node: LocalDelivery) {
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
    }

    fn route(&self, envelope: Envelope) -> Routing {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        match nodes.as_slice() {
            [] => Routing::ready(Err(BrokerError::new("no server is attached to the broker"))),
            // The common case: this process is the only node.
            [node] => Routing::ready(Ok(Receipt::local(node.deliver(&envelope)))),
            all => {
                let reached = all.iter().map(|n| n.deliver(&envelope)).sum();
                Routing::ready(Ok(Receipt::local(reached)))
            }
        }
    }
}

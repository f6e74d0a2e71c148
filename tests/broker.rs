//! The routing boundary seen from a broker: what a multi-node broker is told.

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use bayeux::protocol::ChannelName;
use bayeux::server::{Broker, Envelope, InMemoryBroker, LocalDelivery, Routing, Server};

/// Routes like the in-memory broker and records the node's interest, slowly, as a
/// broker that talks to a network would.
#[derive(Default)]
struct Recording {
    inner: InMemoryBroker,
    interested: Mutex<HashMap<String, bool>>,
}

impl Broker for Recording {
    fn attach(&self, node: LocalDelivery) {
        self.inner.attach(node);
    }

    fn interest(&self, pattern: &ChannelName, interested: bool) {
        std::thread::sleep(Duration::from_micros(200));
        self.interested
            .lock()
            .unwrap()
            .insert(pattern.as_str().to_string(), interested);
    }

    fn route(&self, envelope: Envelope) -> Routing {
        self.inner.route(envelope)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_changes_reach_the_broker_in_the_order_they_happened() {
    let broker = Arc::new(Recording::default());
    let server = Server::builder().broker(broker.clone()).build();
    for _ in 0..100 {
        let first = server.subscribe("/p").unwrap();
        let barrier = Arc::new(Barrier::new(2));
        // One thread drops the last subscription while another makes a new first one.
        let leaving = {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                drop(first);
            })
        };
        let joining = {
            let (barrier, server) = (barrier.clone(), server.clone());
            std::thread::spawn(move || {
                barrier.wait();
                server.subscribe("/p").unwrap()
            })
        };
        leaving.join().unwrap();
        let second = joining.join().unwrap();
        assert_eq!(
            broker.interested.lock().unwrap().get("/p"),
            Some(&true),
            "a subscriber exists, but the broker was told nobody here wants /p"
        );
        drop(second);
        assert_eq!(broker.interested.lock().unwrap().get("/p"), Some(&false));
    }
}

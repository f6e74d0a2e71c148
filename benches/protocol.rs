//! Message parse and encode: the per-request and per-publish costs of the wire format.

use bayeux::protocol::{Batch, ChannelName, Message};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use serde_json::json;

fn workitem_notification() -> Message {
    Message::publish(
        "/v2/me/workitems",
        json!({
            "messageType": "WorkitemStateChangeMessage",
            "notificationType": "StatusChange",
            "referenceId": 14,
            "workitem": {
                "id": "02F0ASAK8EAFA00W", "uri": "http://localhost:8080/api/v2/workitems/02F0ASAK8EAFA00W",
                "state": "InWorkbin", "receivedDate": "2014-04-16T21:03:21.000-0700",
                "capabilities": [], "userData": {"RStrategyName": "RouteWorkitemToAgent", "RTenant": "Environment"}
            }
        }),
    )
}

fn bench(c: &mut Criterion) {
    let batch = serde_json::to_vec(&json!([
        {"channel": "/meta/connect", "clientId": "0123456789abcdef0123456789abcdef01234567",
         "connectionType": "long-polling", "id": "41"},
        {"channel": "/chat/room", "clientId": "0123456789abcdef0123456789abcdef01234567",
         "data": {"user": "alice", "text": "hello there"}, "id": "42"}
    ]))
    .unwrap();
    c.bench_function("parse/batch_connect_and_publish", |b| {
        b.iter(|| Batch::parse(black_box(&batch)).unwrap())
    });
    let message = workitem_notification();
    c.bench_function("encode/workitem_notification", |b| {
        b.iter(|| black_box(&message).to_bytes())
    });
    let encoded = message.to_bytes();
    c.bench_function("parse/workitem_notification", |b| {
        b.iter(|| serde_json::from_slice::<Message>(black_box(&encoded)).unwrap())
    });
    c.bench_function("channel/parse", |b| {
        b.iter(|| ChannelName::parse(black_box("/v2/me/workitems/**")).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

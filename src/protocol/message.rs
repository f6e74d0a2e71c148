//! Bayeux messages, and batches of them as they travel in one HTTP body.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::advice::Advice;
use super::error::BayeuxError;

/// The protocol version this crate speaks and announces at handshake.
pub const BAYEUX_VERSION: &str = "1.0";

/// A message `id`. Bayeux says it is a string; some clients send numbers, and a reply
/// must echo exactly what was sent, so both are kept as they came.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageId {
    /// The usual form: `"id":"17"`.
    Text(String),
    /// A numeric id, echoed back as a number.
    Number(serde_json::Number),
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageId::Text(s) => f.write_str(s),
            MessageId::Number(n) => write!(f, "{n}"),
        }
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        MessageId::Text(s.to_string())
    }
}

/// The `subscription` field: one channel or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subscription {
    /// `"subscription":"/a"`.
    One(String),
    /// `"subscription":["/a","/b/*"]`.
    Many(Vec<String>),
}

impl Subscription {
    /// The channels named, in order.
    pub fn channels(&self) -> &[String] {
        match self {
            Subscription::One(s) => std::slice::from_ref(s),
            Subscription::Many(v) => v,
        }
    }
}

/// One Bayeux message: a request, a reply, or a published message.
///
/// Every standard field is optional because which ones are required depends on the
/// channel; the server checks that per channel. Fields this crate does not know are kept
/// in `other` and written back out, so extensions and newer peers lose nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The channel the message is sent on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Correlates a reply with its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// The session the message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The application payload of a published message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Extension fields (`ext`), for authentication tokens, acks and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Map<String, Value>>,
    /// Reconnection advice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
    /// On replies: whether the request succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful: Option<bool>,
    /// On failed replies: a Bayeux error string (`402::Unknown client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On subscribe and unsubscribe: the channel or channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// On handshake: the protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// On handshake: the oldest version the client accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<String>,
    /// On handshake: the connection types the sender speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_connection_types: Option<Vec<String>>,
    /// On connect: the connection type used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<String>,
    /// An ISO 8601 timestamp, when the sender adds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Fields this crate does not interpret, kept for the round trip.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Why a message could not be read, with what could be salvaged for the error reply.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidMessage {
    /// The channel, if the message had a string `channel`.
    pub channel: Option<String>,
    /// The id, if the message had a string or numeric `id`.
    pub id: Option<MessageId>,
    /// The error to send back.
    pub error: BayeuxError,
}

impl Message {
    /// A message on `channel` with nothing else set.
    pub fn new(channel: impl Into<String>) -> Self {
        Message {
            channel: Some(channel.into()),
            ..Message::default()
        }
    }

    /// A publish of `data` on `channel`.
    pub fn publish(channel: impl Into<String>, data: Value) -> Self {
        Message {
            data: Some(data),
            ..Message::new(channel)
        }
    }

    /// The reply skeleton for this request: the same channel and id, plus `clientId`.
    pub fn reply(&self) -> Message {
        Message {
            channel: self.channel.clone(),
            id: self.id.clone(),
            client_id: self.client_id.clone(),
            ..Message::default()
        }
    }

    /// Marks this reply successful.
    pub fn succeed(mut self) -> Self {
        self.successful = Some(true);
        self
    }

    /// Marks this reply failed with `error`.
    pub fn fail(mut self, error: &BayeuxError) -> Self {
        self.successful = Some(false);
        self.error = Some(error.to_string());
        self
    }

    /// Builder-style setter for `advice`.
    pub fn with_advice(mut self, advice: Advice) -> Self {
        self.advice = Some(advice);
        self
    }

    /// True when this is a reply whose `successful` is `true`.
    pub fn is_successful(&self) -> bool {
        self.successful == Some(true)
    }

    /// The channel as text, or `""` when absent.
    pub fn channel_str(&self) -> &str {
        self.channel.as_deref().unwrap_or("")
    }

    /// The Bayeux error of a failed reply, parsed when it is in `code:args:message` form.
    pub fn bayeux_error(&self) -> Option<BayeuxError> {
        self.error.as_deref().map(|e| {
            BayeuxError::parse(e).unwrap_or_else(|| BayeuxError {
                code: 0,
                args: Vec::new(),
                message: e.to_string(),
            })
        })
    }

    /// Reads one message from a JSON value, keeping the channel and id of an ill-typed
    /// message so that its error reply can still be correlated.
    pub fn from_value(value: Value) -> Result<Message, InvalidMessage> {
        let (channel, id) = match &value {
            Value::Object(map) => (
                map.get("channel")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                map.get("id").and_then(|v| match v {
                    Value::String(s) => Some(MessageId::Text(s.clone())),
                    Value::Number(n) => Some(MessageId::Number(n.clone())),
                    _ => None,
                }),
            ),
            _ => {
                return Err(InvalidMessage {
                    channel: None,
                    id: None,
                    error: BayeuxError::bad_request("Message must be a JSON object"),
                });
            }
        };
        serde_json::from_value(value).map_err(|e| InvalidMessage {
            channel,
            id,
            error: BayeuxError::bad_request(format!("Invalid message: {e}")),
        })
    }

    /// Serialises to JSON bytes. Infallible for messages built from JSON values.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a Message always serialises"))
    }
}

/// Why a request body is not a batch of messages (answered with HTTP 400).
#[derive(Debug)]
pub enum ParseError {
    /// Not JSON at all (or nested deeper than the parser allows).
    Json(serde_json::Error),
    /// JSON, but neither an object nor an array.
    NotMessages,
    /// An empty array.
    Empty,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Json(e) => write!(f, "malformed JSON: {e}"),
            ParseError::NotMessages => {
                f.write_str("body must be a message object or an array of messages")
            }
            ParseError::Empty => f.write_str("empty batch: no messages"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The messages of one request body, each either read or refused on its own, so that
/// one bad message does not stop the others in the batch.
#[derive(Debug)]
pub struct Batch {
    /// The messages in the order they were sent.
    pub messages: Vec<Result<Message, InvalidMessage>>,
}

impl Batch {
    /// Parses a body that holds one message object or an array of them.
    pub fn parse(body: &[u8]) -> Result<Batch, ParseError> {
        let value: Value = serde_json::from_slice(body).map_err(ParseError::Json)?;
        let values = match value {
            Value::Array(items) if items.is_empty() => return Err(ParseError::Empty),
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            _ => return Err(ParseError::NotMessages),
        };
        Ok(Batch {
            messages: values.into_iter().map(Message::from_value).collect(),
        })
    }

    /// Parses a body that must hold only valid messages (used by the client for replies).
    pub fn parse_strict(body: &[u8]) -> Result<Vec<Message>, ParseError> {
        let value: Value = serde_json::from_slice(body).map_err(ParseError::Json)?;
        match value {
            Value::Array(items) => items
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(ParseError::Json))
                .collect(),
            obj @ Value::Object(_) => {
                Ok(vec![serde_json::from_value(obj).map_err(ParseError::Json)?])
            }
            _ => Err(ParseError::NotMessages),
        }
    }
}

/// Writes already-encoded messages as one JSON array: `[m1,m2,...]`.
pub fn encode_array<'a>(parts: impl IntoIterator<Item = &'a [u8]>, size_hint: usize) -> Bytes {
    let mut out = Vec::with_capacity(size_hint + 2);
    out.push(b'[');
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part);
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_standard_field_and_keeps_unknown_ones() {
        let v = json!({
            "channel": "/meta/handshake", "id": "1", "clientId": "abc", "data": {"x": 1},
            "ext": {"ack": true}, "advice": {"timeout": 0}, "successful": true,
            "error": "402::Unknown client", "subscription": ["/a", "/b/*"],
            "version": "1.0", "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"], "connectionType": "long-polling",
            "timestamp": "2024-02-15T19:11:00Z", "custom": [1, 2]
        });
        let m = Message::from_value(v.clone()).unwrap();
        assert_eq!(m.channel.as_deref(), Some("/meta/handshake"));
        assert_eq!(m.id, Some(MessageId::from("1")));
        assert_eq!(m.client_id.as_deref(), Some("abc"));
        assert_eq!(m.ext.as_ref().unwrap()["ack"], true);
        assert_eq!(m.advice.as_ref().unwrap().timeout, Some(0));
        assert_eq!(m.subscription.as_ref().unwrap().channels(), ["/a", "/b/*"]);
        assert_eq!(m.other["custom"], json!([1, 2]));
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
    }

    #[test]
    fn numeric_ids_are_echoed_as_numbers() {
        let m = Message::from_value(json!({"channel": "/a", "id": 7})).unwrap();
        assert_eq!(
            serde_json::to_value(m.reply()).unwrap(),
            json!({"channel": "/a", "id": 7})
        );
    }

    #[test]
    fn ill_typed_message_keeps_id_for_the_reply() {
        let err = Message::from_value(json!({"channel": 5, "id": "9"})).unwrap_err();
        assert_eq!(err.id, Some(MessageId::from("9")));
        assert_eq!(err.channel, None);
        assert_eq!(err.error.code, 400);
        let err = Message::from_value(json!({"channel": "/a", "id": "3", "ext": "x"})).unwrap_err();
        assert_eq!(err.channel.as_deref(), Some("/a"));
        assert!(Message::from_value(json!("text")).is_err());
    }

    #[test]
    fn batches() {
        assert_eq!(
            Batch::parse(br#"{"channel":"/a"}"#).unwrap().messages.len(),
            1
        );
        let b = Batch::parse(br#"[{"channel":"/a"},3,{"channel":"/b"}]"#).unwrap();
        assert!(b.messages[0].is_ok() && b.messages[1].is_err() && b.messages[2].is_ok());
        assert!(matches!(Batch::parse(b"[]"), Err(ParseError::Empty)));
        assert!(matches!(Batch::parse(b"42"), Err(ParseError::NotMessages)));
        assert!(matches!(Batch::parse(b"{"), Err(ParseError::Json(_))));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(
            Batch::parse(deep.as_bytes()),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            Batch::parse(b"\xff\xfe"),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn encodes_arrays_from_parts() {
        let a = br#"{"a":1}"#;
        let b = br#"{"b":2}"#;
        assert_eq!(
            &encode_array([&a[..], &b[..]], 16)[..],
            br#"[{"a":1},{"b":2}]"#
        );
        assert_eq!(&encode_array(std::iter::empty(), 0)[..], b"[]");
    }
}

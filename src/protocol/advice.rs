//! Advice: how the server tells a client when and how to reconnect.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// What a client should do after the message carrying this advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reconnect {
    /// Send the next `/meta/connect` after `interval` milliseconds.
    Retry,
    /// The session is gone: handshake again before anything else.
    Handshake,
    /// Give up: the server will not accept this client again.
    None,
    /// A value this crate does not know; clients should treat it like `retry`.
    #[serde(other)]
    Unknown,
}

/// The `advice` field of a message (Bayeux 1.0 §5.7), in milliseconds.
///
/// Fields other than the three standard ones (for example CometD's `maxInterval` or
/// `multiple-clients`) are kept in `other` so that they survive a round trip.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// What to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// Milliseconds to wait between the end of one `/meta/connect` and the next.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_millis"
    )]
    pub interval: Option<i64>,
    /// Milliseconds the server holds a `/meta/connect` open when it has nothing to send.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_millis"
    )]
    pub timeout: Option<i64>,
    /// Advice fields this crate does not interpret.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Advice {
    /// Advice that tells the client to carry on polling with these timings.
    pub fn retry(interval: i64, timeout: i64) -> Self {
        Advice {
            reconnect: Some(Reconnect::Retry),
            interval: Some(interval),
            timeout: Some(timeout),
            other: Map::new(),
        }
    }

    /// Advice that tells the client its session is gone and it must handshake again.
    pub fn handshake() -> Self {
        Advice {
            reconnect: Some(Reconnect::Handshake),
            interval: Some(0),
            ..Advice::default()
        }
    }

    /// Advice that tells the client to stop.
    pub fn none() -> Self {
        Advice {
            reconnect: Some(Reconnect::None),
            ..Advice::default()
        }
    }
}

/// Accepts any JSON number (JavaScript clients may send `30000.0`) and truncates it to
/// whole milliseconds; `null` counts as absent. Strings and other types are an error.
fn lenient_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(v.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let json = r#"{"reconnect":"retry","interval":0,"timeout":30000,"maxInterval":10000}"#;
        let advice: Advice = serde_json::from_str(json).unwrap();
        assert_eq!(advice.reconnect, Some(Reconnect::Retry));
        assert_eq!(advice.timeout, Some(30000));
        assert_eq!(advice.other["maxInterval"], 10000);
        let back: Value = serde_json::to_value(&advice).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(json).unwrap());
    }

    #[test]
    fn accepts_float_timeouts_and_unknown_reconnect() {
        let advice: Advice =
            serde_json::from_str(r#"{"timeout":1500.7,"reconnect":"later"}"#).unwrap();
        assert_eq!(advice.timeout, Some(1500));
        assert_eq!(advice.reconnect, Some(Reconnect::Unknown));
    }

    #[test]
    fn rejects_string_timeouts() {
        assert!(serde_json::from_str::<Advice>(r#"{"timeout":"soon"}"#).is_err());
    }
}

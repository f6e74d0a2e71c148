//! Salesforce's replay extension, as a wire format: what a client asks for at handshake
//! and subscribe, where a durable message carries its replay id, and the errors a server
//! answers. Pure: no I/O, shared by the server and the client.
//!
//! - Handshake: `ext: {"replay": true}` asks; a server that replays answers with the
//!   same on its reply.
//! - Subscribe: `ext: {"replay": {"<channel>": <replayId>, ...}}`. The map may name more
//!   channels than the one subscribed; each subscribed channel uses its own entry, and a
//!   channel without one is subscribed as before (new messages only). `-1`: new messages
//!   only; `-2`: everything retained, then new ones; any other id: everything after that
//!   message, then new ones.
//! - Delivery: a durable message carries its id as `data.event.replayId`, a 64-bit
//!   integer, when its `data` is a JSON object (see [`inject_replay_id`]).

use serde_json::{Map, Value};

use super::error::{BayeuxError, ErrorCode};

/// The `ext` key of the extension.
pub const REPLAY_EXT: &str = "replay";

/// The wire value of [`ReplayFrom::New`].
pub const REPLAY_NEW: i64 = -1;

/// The wire value of [`ReplayFrom::All`].
pub const REPLAY_ALL: i64 = -2;

/// Where a subscription starts in a durable channel's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplayFrom {
    /// Only messages published from now on (`-1` on the wire): a plain subscribe.
    New,
    /// Every message still retained, then new ones (`-2`).
    All,
    /// Every message after the one with this replay id, then new ones. The id must be one
    /// the server still retains history after, else the subscribe is refused with `400`.
    After(i64),
}

impl ReplayFrom {
    /// The value sent in `ext.replay`.
    pub fn to_wire(self) -> i64 {
        match self {
            ReplayFrom::New => REPLAY_NEW,
            ReplayFrom::All => REPLAY_ALL,
            ReplayFrom::After(id) => id,
        }
    }

    /// Reads a wire value: `-1`, `-2`, or a replay id (zero or more). Other negative
    /// numbers are not replay ids: `None`.
    pub fn from_wire(value: i64) -> Option<Self> {
        match value {
            REPLAY_NEW => Some(ReplayFrom::New),
            REPLAY_ALL => Some(ReplayFrom::All),
            id if id >= 0 => Some(ReplayFrom::After(id)),
            _ => None,
        }
    }
}

impl std::fmt::Display for ReplayFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayFrom::New => f.write_str("new"),
            ReplayFrom::All => f.write_str("all"),
            ReplayFrom::After(id) => write!(f, "{id}"),
        }
    }
}

impl std::str::FromStr for ReplayFrom {
    type Err = String;

    /// `new`, `all`, `-1`, `-2`, or a replay id.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "new" => Ok(ReplayFrom::New),
            "all" => Ok(ReplayFrom::All),
            other => other
                .parse::<i64>()
                .ok()
                .and_then(ReplayFrom::from_wire)
                .ok_or_else(|| {
                    format!("{other:?}: expected new, all, -1, -2 or a replay id (0 or more)")
                }),
        }
    }
}

/// Whether a handshake's `ext` asks for replay (`"replay": true`).
pub fn handshake_asks(ext: Option<&Map<String, Value>>) -> bool {
    ext.and_then(|e| e.get(REPLAY_EXT)) == Some(&Value::Bool(true))
}

/// Why a subscribe's `ext.replay` cannot be used.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplayRequestError {
    /// `ext.replay` is not an object of channel to integer.
    Malformed {
        /// The channel whose entry is wrong, or empty when the whole value is.
        channel: String,
        /// What was wrong, for the error message.
        why: String,
    },
    /// The entry is an integer but not a replay id (below `-2`).
    InvalidId {
        /// The subscribed channel.
        channel: String,
        /// The value given.
        id: i64,
    },
}

impl ReplayRequestError {
    /// The Bayeux error a server answers with (`400`).
    pub fn to_bayeux(&self) -> BayeuxError {
        match self {
            ReplayRequestError::Malformed { channel, why } => BayeuxError::new(
                ErrorCode::BAD_REQUEST,
                &[channel],
                format!(
                    "Malformed ext.replay: {why}; expected an object mapping each channel to a replayId (an integer: -1 for new events only, -2 for all retained events, or the replayId of the last event received)"
                ),
            ),
            ReplayRequestError::InvalidId { channel, id } => {
                invalid_replay_id(channel, *id, "it is not a replay id")
            }
        }
    }
}

/// Reads a subscribe's `ext.replay` for the subscribed `channels`: `Ok(None)` when the
/// message does not carry the extension, else one [`ReplayFrom`] per channel, in order
/// ([`ReplayFrom::New`] for a channel the map does not name).
pub fn subscribe_request(
    ext: Option<&Map<String, Value>>,
    channels: &[&str],
) -> Result<Option<Vec<ReplayFrom>>, ReplayRequestError> {
    let Some(value) = ext.and_then(|e| e.get(REPLAY_EXT)) else {
        return Ok(None);
    };
    let Value::Object(map) = value else {
        return Err(ReplayRequestError::Malformed {
            channel: String::new(),
            why: format!("{} instead of an object", kind(value)),
        });
    };
    channels
        .iter()
        .map(|&channel| match map.get(channel) {
            None => Ok(ReplayFrom::New),
            Some(Value::Number(n)) => {
                let id = n.as_i64().ok_or_else(|| ReplayRequestError::Malformed {
                    channel: channel.to_string(),
                    why: format!("the entry for {channel} is {n}, not a 64-bit integer"),
                })?;
                ReplayFrom::from_wire(id).ok_or(ReplayRequestError::InvalidId {
                    channel: channel.to_string(),
                    id,
                })
            }
            Some(other) => Err(ReplayRequestError::Malformed {
                channel: channel.to_string(),
                why: format!("the entry for {channel} is {}", kind(other)),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `a string`, `an array`...: what a JSON value is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `400` a server answers to a replay id it cannot replay after (never assigned, or
/// no longer retained), in Salesforce's words with `why` added:
/// `400:<channel>:The replayId {<id>} you provided was invalid (<why>). Please provide a
/// valid ID, -2 to replay all events, or -1 to replay only new events.`
pub fn invalid_replay_id(channel: &str, id: i64, why: &str) -> BayeuxError {
    BayeuxError::new(
        ErrorCode::BAD_REQUEST,
        &[channel],
        format!(
            "The replayId {{{id}}} you provided was invalid ({why}). Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
        ),
    )
}

/// Whether a Bayeux error is a refused replay id ([`invalid_replay_id`], or
/// Salesforce's own).
pub fn is_invalid_replay_id(error: &BayeuxError) -> bool {
    error.code == 400 && error.message.starts_with("The replayId ")
}

/// Puts `id` into `data.event.replayId`, as Salesforce's events carry it; returns false,
/// changing nothing, when `data` is not an object or its `event` is there but not an
/// object: such a message cannot carry an id (a server delivers it live only).
pub fn inject_replay_id(data: &mut Value, id: i64) -> bool {
    let Value::Object(data) = data else {
        return false;
    };
    let event = data
        .entry("event")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(event) = event else {
        return false;
    };
    event.insert("replayId".into(), Value::from(id));
    true
}

/// The shape of Salesforce's events a durable channel's messages take, chosen from
/// the channel's name as Salesforce names its channels: where the creation time goes
/// (clients such as aiosfstream order their stored replay markers by it and refuse an
/// event without one). The replay id is in `data.event.replayId` in every shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventShape {
    /// PushTopic and generic streaming events (every channel but the two below):
    /// `data.event.createdDate`, ISO 8601 in UTC with milliseconds
    /// (`2016-03-29T16:40:08.208Z`), beside the publisher's fields.
    Generic,
    /// Platform events (`/event/...`, as `/event/Order_Placed__e`):
    /// `data.payload.CreatedDate`, ISO 8601; a publisher's data without a `payload`
    /// object becomes the payload (its `event` and `schema` fields stay beside it).
    PlatformEvent,
    /// Change Data Capture (`/data/...`, as `/data/AccountChangeEvent`):
    /// `data.payload.ChangeEventHeader.commitTimestamp`, milliseconds since the Unix
    /// epoch; the payload as for platform events.
    ChangeEvent,
}

impl EventShape {
    /// The shape of the messages of `channel`.
    pub fn of(channel: &str) -> Self {
        if channel.starts_with("/event/") {
            EventShape::PlatformEvent
        } else if channel.starts_with("/data/") {
            EventShape::ChangeEvent
        } else {
            EventShape::Generic
        }
    }
}

/// Puts the creation time `at` where `shape` says, unless the publisher put one there
/// already: the publisher's own fields are never overwritten. Changes nothing when
/// `data` is not an object (such a message carries no id either).
pub fn stamp_created(shape: EventShape, data: &mut Value, at: std::time::SystemTime) {
    let Value::Object(fields) = data else {
        return;
    };
    match shape {
        EventShape::Generic => {
            if let Value::Object(event) = fields
                .entry("event")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                event
                    .entry("createdDate")
                    .or_insert_with(|| Value::from(rfc3339_millis(at)));
            }
        }
        EventShape::PlatformEvent | EventShape::ChangeEvent => {
            if !fields.contains_key("payload") {
                // The publisher's data becomes the payload.
                let mut payload = std::mem::take(fields);
                for beside in ["event", "schema"] {
                    if let Some(v) = payload.remove(beside) {
                        fields.insert(beside.into(), v);
                    }
                }
                fields.insert("payload".into(), Value::Object(payload));
            }
            let Some(Value::Object(payload)) = fields.get_mut("payload") else {
                return;
            };
            if shape == EventShape::PlatformEvent {
                payload
                    .entry("CreatedDate")
                    .or_insert_with(|| Value::from(rfc3339_millis(at)));
            } else if let Value::Object(header) = payload
                .entry("ChangeEventHeader")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                let millis = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                header
                    .entry("commitTimestamp")
                    .or_insert_with(|| Value::from(millis));
            }
        }
    }
}

/// `at` as ISO 8601 in UTC with milliseconds: `2016-03-29T16:40:08.208Z`.
pub fn rfc3339_millis(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Whether [`inject_replay_id`] would succeed on `data`.
pub fn can_carry_replay_id(data: &Value) -> bool {
    match data {
        Value::Object(o) => matches!(o.get("event"), None | Some(Value::Object(_))),
        _ => false,
    }
}

/// The replay id a delivered message carries in `data.event.replayId`, if any.
pub fn replay_id_of(data: Option<&Value>) -> Option<i64> {
    data?.get("event")?.get("replayId")?.as_i64()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ext(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn wire_values_round_trip() {
        for (wire, from) in [
            (-1, ReplayFrom::New),
            (-2, ReplayFrom::All),
            (0, ReplayFrom::After(0)),
            (i64::MAX, ReplayFrom::After(i64::MAX)),
        ] {
            assert_eq!(ReplayFrom::from_wire(wire), Some(from));
            assert_eq!(from.to_wire(), wire);
        }
        assert_eq!(ReplayFrom::from_wire(-3), None);
        assert_eq!("all".parse(), Ok(ReplayFrom::All));
        assert_eq!("new".parse(), Ok(ReplayFrom::New));
        assert_eq!("-2".parse(), Ok(ReplayFrom::All));
        assert_eq!("42".parse(), Ok(ReplayFrom::After(42)));
        assert!("-7".parse::<ReplayFrom>().is_err());
        assert!("soon".parse::<ReplayFrom>().is_err());
    }

    #[test]
    fn the_handshake_asks_with_true_only() {
        assert!(handshake_asks(Some(&ext(json!({"replay": true})))));
        assert!(!handshake_asks(Some(&ext(json!({"replay": "true"})))));
        assert!(!handshake_asks(Some(&ext(json!({"ack": true})))));
        assert!(!handshake_asks(None));
    }

    #[test]
    fn subscribe_entries_are_read_per_channel() {
        let e = ext(json!({"replay": {"/a": 12, "/b": -2, "/other": 5}}));
        assert_eq!(
            subscribe_request(Some(&e), &["/a", "/b", "/c"]),
            Ok(Some(vec![
                ReplayFrom::After(12),
                ReplayFrom::All,
                ReplayFrom::New
            ]))
        );
        assert_eq!(subscribe_request(None, &["/a"]), Ok(None));
        assert_eq!(
            subscribe_request(Some(&ext(json!({"ack": 1}))), &["/a"]),
            Ok(None)
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_a_clear_400() {
        for (value, needle) in [
            (json!({"replay": true}), "a boolean instead of an object"),
            (json!({"replay": [1]}), "an array instead of an object"),
            (
                json!({"replay": {"/a": "12"}}),
                "the entry for /a is a string",
            ),
            (json!({"replay": {"/a": 1.5}}), "not a 64-bit integer"),
            (
                json!({"replay": {"/a": 18446744073709551615u64}}),
                "not a 64-bit integer",
            ),
        ] {
            let e = subscribe_request(Some(&ext(value.clone())), &["/a"]).unwrap_err();
            let b = e.to_bayeux();
            assert_eq!(b.code, 400, "{value}");
            assert!(b.message.contains(needle), "{value}: {}", b.message);
            assert!(b.message.contains("-2 for all retained events"));
        }
        let e = subscribe_request(Some(&ext(json!({"replay": {"/a": -5}}))), &["/a"]);
        let b = e.unwrap_err().to_bayeux();
        assert!(is_invalid_replay_id(&b), "{b:?}");
        assert!(b.message.contains("{-5}"));
    }

    #[test]
    fn the_invalid_id_error_is_salesforces_with_the_reason() {
        let e = invalid_replay_id("/v2/me/emails", 77, "no longer retained");
        assert_eq!(
            e.to_string(),
            "400:/v2/me/emails:The replayId {77} you provided was invalid (no longer retained). Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
        );
        assert!(is_invalid_replay_id(&e));
    }

    #[test]
    fn creation_times_are_written_as_salesforce_writes_them() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = UNIX_EPOCH + Duration::from_millis(1_459_269_608_208);
        assert_eq!(rfc3339_millis(at), "2016-03-29T16:40:08.208Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(EventShape::of("/topic/orders"), EventShape::Generic);
        assert_eq!(EventShape::of("/v2/me/emails"), EventShape::Generic);
        assert_eq!(EventShape::of("/event/Order__e"), EventShape::PlatformEvent);
        assert_eq!(
            EventShape::of("/data/AccountChangeEvent"),
            EventShape::ChangeEvent
        );

        let mut d = json!({"text": "hi", "event": {"type": "created"}});
        stamp_created(EventShape::Generic, &mut d, at);
        assert_eq!(
            d,
            json!({"text": "hi", "event": {"type": "created", "createdDate": "2016-03-29T16:40:08.208Z"}})
        );
        // The publisher's own date is kept.
        let mut d = json!({"event": {"createdDate": "2001-01-01T00:00:00.000Z"}});
        stamp_created(EventShape::Generic, &mut d, at);
        assert_eq!(d["event"]["createdDate"], "2001-01-01T00:00:00.000Z");
        // A platform event: the publisher's data becomes the payload.
        let mut d = json!({"Amount__c": 3, "schema": "s1"});
        stamp_created(EventShape::PlatformEvent, &mut d, at);
        assert_eq!(
            d,
            json!({"schema": "s1", "payload": {"Amount__c": 3, "CreatedDate": "2016-03-29T16:40:08.208Z"}})
        );
        let mut d = json!({"payload": {"CreatedDate": "mine"}});
        stamp_created(EventShape::PlatformEvent, &mut d, at);
        assert_eq!(d["payload"]["CreatedDate"], "mine");
        // A change event: the header's commit timestamp, in milliseconds.
        let mut d =
            json!({"payload": {"Name": "Acme", "ChangeEventHeader": {"entityName": "Account"}}});
        stamp_created(EventShape::ChangeEvent, &mut d, at);
        assert_eq!(
            d["payload"]["ChangeEventHeader"],
            json!({"entityName": "Account", "commitTimestamp": 1_459_269_608_208u64})
        );
        // Not an object: nothing to stamp.
        let mut d = json!("text");
        stamp_created(EventShape::Generic, &mut d, at);
        assert_eq!(d, json!("text"));
    }

    #[test]
    fn ids_go_into_data_event_of_objects_only() {
        let mut d = json!({"payload": 1});
        assert!(inject_replay_id(&mut d, 7));
        assert_eq!(d, json!({"payload": 1, "event": {"replayId": 7}}));
        assert_eq!(replay_id_of(Some(&d)), Some(7));
        let mut d = json!({"event": {"createdDate": "x", "replayId": 1}});
        assert!(inject_replay_id(&mut d, 9));
        assert_eq!(d, json!({"event": {"createdDate": "x", "replayId": 9}}));
        for mut d in [json!("text"), json!([1]), json!(3), json!({"event": 5})] {
            let before = d.clone();
            assert!(!can_carry_replay_id(&d));
            assert!(!inject_replay_id(&mut d, 1));
            assert_eq!(d, before);
        }
        assert_eq!(replay_id_of(None), None);
        assert_eq!(replay_id_of(Some(&json!({"event": {}}))), None);
    }
}

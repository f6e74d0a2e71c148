//! The CometD notifications an assignment produces, in the shapes Genesys Web Services
//! sends. Pure: built from the assignment, its `referenceId`, the server's public URL and
//! the time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::request::Assignment;

/// The channel of workbin state changes.
pub const WORKBINS_CHANNEL: &str = "/v2/me/workbins";

/// One notification: the channel and the message's `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The `/v2/me/...` channel (meaning: the agent who owns the workbin).
    pub channel: &'static str,
    /// The message's `data`.
    pub data: Value,
}

/// The notifications for `assignment`, in delivery order: the workbin state change on
/// `/v2/me/workbins`, then the interaction's state change on its media channel. Both
/// carry `messageType`, `notificationType: "StatusChange"` and `referenceId`.
pub fn notifications(
    assignment: &Assignment,
    reference_id: u64,
    public_url: &str,
    now: SystemTime,
) -> [Notification; 2] {
    let media = assignment.operation.media();
    let base = public_url.trim_end_matches('/');
    let interaction = json!({
        "id": assignment.interaction_id,
        "uri": format!("{base}/api/v2/{}/{}", media.collection(), assignment.interaction_id),
        "state": "InWorkbin",
        "receivedDate": timestamp(now),
        "capabilities": [],
        "userData": {
            "RTargetAgentSelected": assignment.user_id,
            "OriginalUri": assignment.uri,
        },
        "workbinId": assignment.workbin_id,
    });
    let workbin = json!({
        "messageType": "WorkbinStateChangeMessage",
        "notificationType": "StatusChange",
        "referenceId": reference_id,
        "action": "ItemAdded",
        "id": assignment.workbin_id,
        "uri": format!("{base}/api/v2/users/{}/workbins/{}", assignment.user_id, assignment.workbin_id),
        "workbinUserId": assignment.user_id,
        "operationName": assignment.operation.name(),
        "interactionId": assignment.interaction_id,
        format!("{}StateResourceV2", media.object_key()): interaction,
    });
    let item = json!({
        "messageType": media.message_type(),
        "notificationType": "StatusChange",
        "referenceId": reference_id,
        media.object_key(): interaction,
    });
    [
        Notification {
            channel: WORKBINS_CHANNEL,
            data: workbin,
        },
        Notification {
            channel: media.channel(),
            data: item,
        },
    ]
}

/// `2024-02-15T19:11:00.000+0000`: UTC with milliseconds, the form GWS dates take
/// (RFC 3339 through `humantime`, with GWS's `+0000` for its `Z`). Times outside
/// 1970 to 9999 are clamped to those years.
pub fn timestamp(t: SystemTime) -> String {
    // The last millisecond of 9999: humantime formats up to there.
    let last = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    let rfc3339 = humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, last)).to_string();
    format!("{}+0000", rfc3339.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workbin::request::parse_body;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000+0000");
        let t = UNIX_EPOCH + Duration::from_millis(1_708_024_260_123);
        assert_eq!(timestamp(t), "2024-02-15T19:11:00.123+0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(timestamp(before), "1970-01-01T00:00:00.000+0000");
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(timestamp(far), "9999-12-31T23:59:59.999+0000");
    }

    #[test]
    fn workitem_notification_has_the_documented_shape() {
        let a = parse_body(
            "agent1",
            "wb9",
            br#"{"operationName":"AddWorkitem","uri":".../02F0ASAK8EAFA00W"}"#,
        )
        .unwrap();
        let [workbin, item] = notifications(&a, 14, "http://localhost:8080/", UNIX_EPOCH);
        assert_eq!(item.channel, "/v2/me/workitems");
        assert_eq!(item.data["messageType"], "WorkitemStateChangeMessage");
        assert_eq!(item.data["notificationType"], "StatusChange");
        assert_eq!(item.data["referenceId"], 14);
        let w = &item.data["workitem"];
        assert_eq!(w["id"], "02F0ASAK8EAFA00W");
        assert_eq!(
            w["uri"],
            "http://localhost:8080/api/v2/workitems/02F0ASAK8EAFA00W"
        );
        assert_eq!(w["state"], "InWorkbin");
        assert_eq!(w["receivedDate"], "1970-01-01T00:00:00.000+0000");
        assert_eq!(w["capabilities"], json!([]));
        assert!(w["userData"].is_object());
        assert_eq!(w["workbinId"], "wb9");
        assert_eq!(workbin.channel, "/v2/me/workbins");
        assert_eq!(workbin.data["messageType"], "WorkbinStateChangeMessage");
        assert_eq!(workbin.data["referenceId"], 14);
        assert_eq!(workbin.data["id"], "wb9");
        assert_eq!(workbin.data["workbinUserId"], "agent1");
        assert_eq!(workbin.data["interactionId"], "02F0ASAK8EAFA00W");
        assert_eq!(workbin.data["workitemStateResourceV2"], *w);
    }

    #[test]
    fn email_and_chat_use_their_own_channels_and_objects() {
        for (op, channel, message_type, key, collection) in [
            (
                "AddEmail",
                "/v2/me/emails",
                "EmailStateChangeMessage",
                "email",
                "emails",
            ),
            (
                "AddChat",
                "/v2/me/chats",
                "ChatStateChangeMessage",
                "chat",
                "chats",
            ),
            (
                "AddInteraction",
                "/v2/me/workitems",
                "WorkitemStateChangeMessage",
                "workitem",
                "workitems",
            ),
        ] {
            let body = format!(r#"{{"operationName":"{op}","uri":"x/ID1"}}"#);
            let a = parse_body("u", "w", body.as_bytes()).unwrap();
            let [_, item] = notifications(&a, 1, "http://h", UNIX_EPOCH);
            assert_eq!(item.channel, channel);
            assert_eq!(item.data["messageType"], message_type);
            assert_eq!(
                item.data[key]["uri"],
                format!("http://h/api/v2/{collection}/ID1")
            );
        }
    }
}

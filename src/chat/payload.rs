//! The chat payloads as the chat front end reads them (camelCase JSON; `docs/chat.md`): the
//! message object of `ReceiveMessage` / `MessageSent`, the conversation events, and the REST
//! shapes, and the argument list each event has for SignalR clients (the seed hub's `SendAsync`
//! signatures). Content is carried as stored, never escaped or interpreted.

use serde_json::{json, Value};
use switchyard_actors::chat_events::{
    USER_JOINED_CONVERSATION, USER_LEFT_CONVERSATION, USER_OFFLINE, USER_ONLINE,
    USER_STARTED_TYPING, USER_STOPPED_TYPING,
};
use switchyard_actors::codec::rfc3339_millis;
use switchyard_actors::hub_arguments::HubArguments;

use crate::store::{Conversation, StoredMessage};

/// RFC 3339 UTC with milliseconds, from stored milliseconds.
pub fn time(ms: i64) -> String {
    rfc3339_millis(u64::try_from(ms).unwrap_or(0))
}

/// The message as events carry it: `id`, `conversationId`, `senderId`, `recipientId`, `content`,
/// `messageType`, `timestamp`, and `tempId` when the sender gave one.
pub fn message(m: &StoredMessage) -> Value {
    let mut v = json!({
        "id": m.id,
        "conversationId": m.conversation_id,
        "senderId": m.sender_id,
        "recipientId": m.recipient_id,
        "content": m.content,
        "messageType": m.message_type,
        "timestamp": time(m.created_at_ms),
    });
    if let Some(t) = &m.temp_id {
        v["tempId"] = Value::from(t.as_str());
    }
    v
}

/// The message as history pages carry it: the event fields plus `deliveredAt` and `readAt`
/// (`null` until then).
pub fn message_with_state(m: &StoredMessage) -> Value {
    let mut v = message(m);
    v["deliveredAt"] = m.delivered_at_ms.map(time).into();
    v["readAt"] = m.read_at_ms.map(time).into();
    v
}

/// A conversation for the REST API; `unreadCount` only in the caller's list.
pub fn conversation(c: &Conversation, with_unread: bool) -> Value {
    let mut v = json!({
        "id": c.id,
        "tenantKey": c.tenant_key,
        "kind": c.kind.as_str(),
        "participants": c.participants,
        "createdBy": c.created_by,
        "createdAt": time(c.created_at_ms),
        "lastMessageAt": c.last_message_at_ms.map(time),
    });
    if with_unread {
        v["unreadCount"] = Value::from(c.unread);
    }
    v
}

/// `UserJoinedConversation`, `UserLeftConversation`, `UserStartedTyping`, `UserStoppedTyping`.
pub fn member_event(conversation_id: &str, user_id: &str) -> Value {
    json!({"conversationId": conversation_id, "userId": user_id})
}

/// What a SignalR client's handler receives for chat event `event` with `data`, as the seed hub
/// sends it: `(conversationId, userId)` for membership and typing, `(userId)` for presence, the
/// data itself for the rest (the message, an error string, `MessagesRead`). Native clients get
/// `data` as it is.
pub fn arguments(event: &str, data: &Value) -> HubArguments {
    match event {
        USER_JOINED_CONVERSATION
        | USER_LEFT_CONVERSATION
        | USER_STARTED_TYPING
        | USER_STOPPED_TYPING => HubArguments::built(&(&data["conversationId"], &data["userId"])),
        USER_ONLINE | USER_OFFLINE => HubArguments::built(&[&data["userId"]]),
        _ => HubArguments::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_fields_and_temp_id() {
        let mut m = StoredMessage {
            id: "m1".into(),
            conversation_id: "c1".into(),
            tenant_key: "t".into(),
            sender_id: "alice".into(),
            recipient_id: Some("bob".into()),
            message_type: "Text".into(),
            content: "<script>x</script>".into(),
            temp_id: None,
            created_at_ms: 1_700_000_000_123,
            delivered_at_ms: None,
            read_at_ms: None,
        };
        let v = message(&m);
        assert_eq!(v["content"], "<script>x</script>");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
        assert!(v.get("tempId").is_none());
        m.temp_id = Some("tmp-1".into());
        assert_eq!(message(&m)["tempId"], "tmp-1");
        assert_eq!(message_with_state(&m)["readAt"], Value::Null);
    }

    #[test]
    fn the_seed_hub_signatures() {
        let list = |a: HubArguments| a.list().map(|l| l.get().to_owned());
        let member = member_event("c1", "bob");
        for event in [
            USER_JOINED_CONVERSATION,
            USER_LEFT_CONVERSATION,
            USER_STARTED_TYPING,
            USER_STOPPED_TYPING,
        ] {
            assert_eq!(
                list(arguments(event, &member)).as_deref(),
                Some(r#"["c1","bob"]"#)
            );
        }
        let presence = json!({"userId": "bob", "tenantKey": "pets", "role": null});
        assert_eq!(
            list(arguments(USER_OFFLINE, &presence)).as_deref(),
            Some(r#"["bob"]"#)
        );
        assert_eq!(
            arguments("MessageError", &"Access denied".into()),
            HubArguments::Data
        );
    }
}

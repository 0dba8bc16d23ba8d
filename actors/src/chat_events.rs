//! The chat vocabulary on the wire: the events the chat hub sends, and the rule deciding which
//! SignalR events carry their data bare when their publisher did not choose
//! ([`crate::hub_arguments`]; the chat hub itself always chooses).
//!
//! The restaurant front ends read every event as the notification message
//! `{id, type, tenantKey, channel, data, timestamp, offset}`; the chat front end reads its events
//! as the payload itself (`connection.on("ReceiveMessage", m => m.content)`). The rule: **an event
//! whose name is in [`CHAT_EVENTS`], on a personal channel (`tenant:{t}:user:{userId}`, where the
//! chat service delivers, or the global `user:{userId}`) or a `conversation:{id}` channel, is sent
//! to SignalR clients with its `data` as the single argument**; every other event keeps the
//! notification message. So `UserOnline` on `tenant:{t}:admins` (the admin consoles') stays wrapped,
//! while the `UserOnline` relayed to a chat partner's personal channel is bare. The native protocol
//! is not affected: its `notification` frame always carries `data` as it is.

use crate::channel::{Channel, ChannelName};
use crate::envelope::EventName;
/// Presence events are defined with presence; the chat hub sends them too.
pub use crate::presence::{USER_OFFLINE, USER_ONLINE};

pub const RECEIVE_MESSAGE: &str = "ReceiveMessage";
pub const MESSAGE_SENT: &str = "MessageSent";
pub const MESSAGE_ERROR: &str = "MessageError";
pub const CONVERSATION_ERROR: &str = "ConversationError";
pub const USER_JOINED_CONVERSATION: &str = "UserJoinedConversation";
pub const USER_LEFT_CONVERSATION: &str = "UserLeftConversation";
pub const USER_STARTED_TYPING: &str = "UserStartedTyping";
pub const USER_STOPPED_TYPING: &str = "UserStoppedTyping";
pub const MESSAGES_READ: &str = "MessagesRead";

/// Every event the chat hub sends.
pub const CHAT_EVENTS: [&str; 11] = [
    RECEIVE_MESSAGE,
    MESSAGE_SENT,
    MESSAGE_ERROR,
    CONVERSATION_ERROR,
    USER_JOINED_CONVERSATION,
    USER_LEFT_CONVERSATION,
    USER_STARTED_TYPING,
    USER_STOPPED_TYPING,
    USER_ONLINE,
    USER_OFFLINE,
    MESSAGES_READ,
];

/// Whether SignalR clients get this event's `data` as the argument itself (see the module docs).
pub fn sent_bare(channel: &ChannelName, event: &EventName) -> bool {
    matches!(
        channel.kind(),
        Channel::TenantUser { .. } | Channel::User { .. } | Channel::Conversation { .. }
    ) && CHAT_EVENTS.contains(&event.as_str())
}

/// A chat event name as an [`EventName`].
pub fn event(name: &'static str) -> EventName {
    EventName::parse(name).expect("chat event names are valid event names")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_events_on_chat_channels_only() {
        let ch = |n: &str| ChannelName::parse(n).unwrap();
        for name in CHAT_EVENTS {
            assert!(sent_bare(&ch("tenant:a:user:u1"), &event(name)), "{name}");
            assert!(sent_bare(&ch("user:u1"), &event(name)), "{name}");
            assert!(sent_bare(&ch("conversation:c1"), &event(name)), "{name}");
            assert!(!sent_bare(&ch("tenant:a:admins"), &event(name)), "{name}");
            assert!(
                !sent_bare(&ch("tenant:a:customer:u1"), &event(name)),
                "{name}"
            );
        }
        assert!(!sent_bare(
            &ch("tenant:a:user:u1"),
            &event("ReceiveNotification")
        ));
        assert!(!sent_bare(&ch("user:u1"), &event("ReceiveNotification")));
        assert!(!sent_bare(&ch("user:u1"), &event("NewOrder")));
    }
}

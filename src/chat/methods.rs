//! The chat hub's methods. Names match case-insensitively, as SignalR's do.
//!
//! | method | arguments | completion | events |
//! | --- | --- | --- | --- |
//! | `SendMessage` | `recipientId`, `content`, `messageType` = `"Text"`, `tempId`? | the message | `ReceiveMessage` → recipient, `MessageSent` → caller; `MessageError` → caller on refusal |
//! | `JoinConversation` | `conversationId` | none | `UserJoinedConversation` → conversation; `ConversationError` → caller on refusal |
//! | `LeaveConversation` | `conversationId` | none | `UserLeftConversation` → conversation |
//! | `StartTyping` | `conversationId` | none | `UserStartedTyping` → conversation (on every call, as seed 003's hub); `ConversationError` on refusal |
//! | `StopTyping` | `conversationId` | none | `UserStoppedTyping` → conversation |
//! | `MarkRead` | `conversationId` | `{conversationId, marked}` | `MessagesRead` → conversation; `ConversationError` on refusal |
//!
//! As in the seed hub, a refusal the front end expects as an event (`MessageError`,
//! `ConversationError`) is that event plus a completion with no result; only malformed calls
//! (wrong arguments) and callers who cannot chat at all complete with an error.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use switchyard_actors::chat_events::{
    CONVERSATION_ERROR, MESSAGES_READ, MESSAGE_ERROR, MESSAGE_SENT, RECEIVE_MESSAGE,
    USER_JOINED_CONVERSATION, USER_LEFT_CONVERSATION, USER_STARTED_TYPING, USER_STOPPED_TYPING,
};
use switchyard_actors::codes::ErrorCode;
use switchyard_actors::hub_methods::{ConnectionAction, HubCall, HubMethodError, HubReply};
use switchyard_actors::ids::{validate_segment, UserId};
use switchyard_actors::policy::access::{self, Action};
use switchyard_actors::policy::Refusal;

use super::{
    conversation_channel, now, payload, publish_after, push, user_channel, ChatService, Chatter,
};
use crate::store::NewMessage;

/// The message type when the client gives none.
pub const DEFAULT_MESSAGE_TYPE: &str = "Text";
/// Longest message type (`Text`, `Image`, `File`, …).
const MAX_MESSAGE_TYPE_CHARS: usize = 32;
/// Longest client temporary id.
const MAX_TEMP_ID_CHARS: usize = 128;
/// `ConversationError` for a conversation the caller is not in (or that does not exist).
pub const ACCESS_DENIED: &str = "Access denied";

/// The chat hub's methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    SendMessage,
    JoinConversation,
    LeaveConversation,
    StartTyping,
    StopTyping,
    MarkRead,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::SendMessage,
        Method::JoinConversation,
        Method::LeaveConversation,
        Method::StartTyping,
        Method::StopTyping,
        Method::MarkRead,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::SendMessage => "SendMessage",
            Method::JoinConversation => "JoinConversation",
            Method::LeaveConversation => "LeaveConversation",
            Method::StartTyping => "StartTyping",
            Method::StopTyping => "StopTyping",
            Method::MarkRead => "MarkRead",
        }
    }

    fn lookup(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    fn bad_arguments(self) -> HubReply {
        let expects = match self {
            Method::SendMessage => {
                "2 to 4 arguments (recipientId: string, content: string, messageType?: string, \
                 tempId?: string)"
            }
            _ => "1 argument (conversationId: string)",
        };
        HubReply::error(HubMethodError::new(
            ErrorCode::BadRequest,
            format!("{} expects {expects}", self.name()),
        ))
    }
}

/// `SendMessage`'s arguments.
struct Send {
    recipient: String,
    content: String,
    message_type: String,
    temp_id: Option<String>,
}

/// A string, or a number taken as its decimal text (ids from JavaScript may be either).
fn text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn send_args(args: Vec<Value>) -> Option<Send> {
    let mut args = args.into_iter();
    let (recipient, content, kind, temp, extra) = (
        args.next()?,
        args.next()?,
        args.next(),
        args.next(),
        args.next(),
    );
    if extra.is_some() {
        return None;
    }
    let Value::String(content) = content else {
        return None;
    };
    let message_type = match kind {
        None | Some(Value::Null) => DEFAULT_MESSAGE_TYPE.to_owned(),
        Some(Value::String(s)) => s,
        Some(_) => return None,
    };
    let temp_id = match temp {
        None | Some(Value::Null) => None,
        Some(v) => Some(text(v)?),
    };
    Some(Send {
        recipient: text(recipient)?,
        content,
        message_type,
        temp_id,
    })
}

fn one_id(args: Vec<Value>) -> Option<String> {
    let mut args = args.into_iter();
    match (args.next(), args.next()) {
        (Some(v), None) => text(v),
        _ => None,
    }
}

/// Dispatches `call`; `None` for methods that are not the chat hub's.
pub(super) fn invoke(chat: &ChatService, call: HubCall) -> Option<BoxFuture<'static, HubReply>> {
    let method = Method::lookup(&call.method)?;
    let Some(who) = Chatter::of(&call.identity) else {
        let refused = HubReply::error(HubMethodError::new(
            ErrorCode::Forbidden,
            format!(
                "{}: chat is for members of a tenant (Admin, Staff or Customer with a tenantKey)",
                method.name()
            ),
        ));
        return Some(Box::pin(async move { refused }));
    };
    let chat = chat.clone();
    let reply: BoxFuture<'static, HubReply> = match method {
        Method::SendMessage => match send_args(call.args) {
            Some(args) => Box::pin(chat.send_message(who, args)),
            None => return Some(Box::pin(async move { method.bad_arguments() })),
        },
        _ => match one_id(call.args) {
            Some(id) => Box::pin(chat.conversation_method(method, who, id)),
            None => return Some(Box::pin(async move { method.bad_arguments() })),
        },
    };
    Some(reply)
}

/// Why a message was refused before it was stored (the `MessageError` text).
fn check_message(chat: &ChatService, who: &Chatter, m: &Send) -> Result<UserId, String> {
    let recipient = UserId::parse(&m.recipient).map_err(|e| format!("recipientId {e}"))?;
    if recipient == who.user {
        return Err("Cannot send a message to yourself".into());
    }
    let max = chat.0.config.max_content_chars;
    if m.content.trim().is_empty() || m.content.chars().count() > max {
        return Err(format!(
            "Invalid message content: it must be 1-{max} characters and not only whitespace"
        ));
    }
    let type_ok = (1..=MAX_MESSAGE_TYPE_CHARS).contains(&m.message_type.len())
        && m.message_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !type_ok {
        return Err(format!(
            "Invalid messageType: 1-{MAX_MESSAGE_TYPE_CHARS} letters, digits, '_' or '-'"
        ));
    }
    if let Some(t) = &m.temp_id {
        if t.is_empty() || t.chars().count() > MAX_TEMP_ID_CHARS {
            return Err(format!("Invalid tempId: 1-{MAX_TEMP_ID_CHARS} characters"));
        }
    }
    if !chat.may_send(who) {
        return Err(format!(
            "Rate limit exceeded: at most {} messages per minute; wait before sending again",
            chat.0.config.send_rate_per_minute
        ));
    }
    Ok(recipient)
}

impl ChatService {
    async fn send_message(self, who: Chatter, m: Send) -> HubReply {
        let refuse = |text: String| {
            log::debug!(
                "chat: tenant={} user={}: message refused: {text}",
                who.tenant,
                who.user
            );
            HubReply::done().with(push(&who, MESSAGE_ERROR, &Value::from(text)))
        };
        let recipient = match check_message(&self, &who, &m) {
            Ok(r) => r,
            Err(text) => return refuse(text),
        };
        let store = &self.0.store;
        let now = now();
        let stored = async {
            let conversation = store
                .direct_conversation(&who.tenant, &who.user, &recipient, now)
                .await?;
            let id = uuid::Uuid::now_v7().to_string();
            store
                .insert_message(&NewMessage {
                    id: &id,
                    conversation_id: &conversation,
                    tenant: &who.tenant,
                    sender: &who.user,
                    recipient: &recipient,
                    message_type: &m.message_type,
                    content: &m.content,
                    temp_id: m.temp_id.as_deref(),
                    now_ms: now,
                })
                .await
        };
        let stored = match stored.await {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "chat: tenant={} user={}: message to {recipient} not stored: {e}",
                    who.tenant,
                    who.user
                );
                return refuse("Failed to send message; retry later".into());
            }
        };
        let ctx = format!(
            "tenant={} conversation={} message={}",
            who.tenant, stored.conversation_id, stored.id
        );
        log::debug!("chat: {ctx}: {} → {recipient}", who.user);
        let message = payload::message(&stored);
        let published = match self
            .publish(
                user_channel(&who.tenant, recipient.as_str()),
                RECEIVE_MESSAGE,
                &message,
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                // Stored and undelivered: the recipient's next connection gets it.
                log::warn!("chat: {ctx}: ReceiveMessage not published: {e}");
                false
            }
        };
        // Delivery is recorded when a connection of the recipient wrote the message
        // (`ChatService::written`), never from presence. Presence only decides the webhook: it
        // is for recipients with no connection at all.
        if let Some(hook) = &self.0.config.webhook {
            let online = match self.0.node.upgrade() {
                Some(node) if published => node
                    .tenants
                    .is_online(&who.tenant, &recipient)
                    .await
                    .unwrap_or_else(|e| {
                        log::warn!(
                            "chat: {ctx}: recipient presence unknown ({e}); treated as offline"
                        );
                        false
                    }),
                _ => false,
            };
            if !online {
                hook.notify_offline(who.tenant.as_str(), recipient.as_str(), message.clone());
            }
        }
        HubReply::value(message.clone()).with(push(&who, MESSAGE_SENT, &message))
    }

    async fn conversation_method(self, method: Method, who: Chatter, id: String) -> HubReply {
        let denied =
            || HubReply::done().with(push(&who, CONVERSATION_ERROR, &ACCESS_DENIED.into()));
        if validate_segment(&id).is_err() {
            return denied();
        }
        let ctx = format!("tenant={} conversation={id} user={}", who.tenant, who.user);
        let member = payload::member_event(&id, who.user.as_str());
        if method == Method::StopTyping {
            if self.0.typing.stop(&who.tenant, &id, &who.user) {
                self.announce(
                    conversation_channel(&id),
                    USER_STOPPED_TYPING,
                    &member,
                    &ctx,
                )
                .await;
            }
            return HubReply::done();
        }
        // A participant is whoever may subscribe to the conversation's channel: the policy's
        // conversation rule (checked against the store), the same as for the join below.
        let channel = conversation_channel(&id);
        let Some(node) = self.0.node.upgrade() else {
            let text = format!("{} failed; retry later", method.name());
            return HubReply::done().with(push(&who, CONVERSATION_ERROR, &text.into()));
        };
        let access = access::check(
            &node.authorizer,
            who.identity.clone(),
            channel.clone(),
            Action::Subscribe,
        );
        drop(node);
        let participant = match access.await {
            Ok(()) => true,
            Err(Refusal::Unchecked(e)) => {
                log::warn!("chat: {ctx}: {} failed: {e}", method.name());
                let text = format!("{} failed; retry later", method.name());
                return HubReply::done().with(push(&who, CONVERSATION_ERROR, &text.into()));
            }
            Err(_) => false,
        };
        match method {
            Method::LeaveConversation => {
                if participant {
                    if self.0.typing.stop(&who.tenant, &id, &who.user) {
                        self.announce(channel.clone(), USER_STOPPED_TYPING, &member, &ctx)
                            .await;
                    }
                    self.announce(channel.clone(), USER_LEFT_CONVERSATION, &member, &ctx)
                        .await;
                }
                HubReply::done().with(ConnectionAction::Leave(channel))
            }
            _ if !participant => {
                log::debug!("chat: {ctx}: {} refused: not a participant", method.name());
                denied()
            }
            Method::JoinConversation => {
                // Joined first, then announced: the caller receives its own join too, as from
                // the seed hub's AddToGroupAsync then Clients.Group(…).SendAsync(…).
                HubReply::done()
                    .with(ConnectionAction::Join(channel.clone()))
                    .with(publish_after(channel, USER_JOINED_CONVERSATION, &member))
            }
            Method::StartTyping => {
                let generation = self.0.typing.start(&who.tenant, &id, &who.user);
                self.announce(channel.clone(), USER_STARTED_TYPING, &member, &ctx)
                    .await;
                let (chat, timeout) = (self.clone(), self.0.config.typing_timeout);
                actix::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    if chat
                        .0
                        .typing
                        .expire(&who.tenant, &id, &who.user, generation)
                    {
                        chat.announce(channel, USER_STOPPED_TYPING, &member, &ctx)
                            .await;
                    }
                });
                HubReply::done()
            }
            Method::MarkRead => {
                match self
                    .0
                    .store
                    .mark_read(&who.tenant, &id, &who.user, now())
                    .await
                {
                    Ok(marked) => {
                        if marked > 0 {
                            let read = json!({
                                "conversationId": id,
                                "userId": who.user,
                                "count": marked,
                                "readAt": payload::time(now()),
                            });
                            self.announce(channel, MESSAGES_READ, &read, &ctx).await;
                        }
                        HubReply::value(json!({"conversationId": id, "marked": marked}))
                    }
                    Err(e) => {
                        log::warn!("chat: {ctx}: MarkRead failed: {e}");
                        let text = "MarkRead failed; retry later";
                        HubReply::done().with(push(&who, CONVERSATION_ERROR, &text.into()))
                    }
                }
            }
            Method::SendMessage | Method::StopTyping => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_arguments() {
        let a = send_args(vec!["bob".into(), "hi".into()]).unwrap();
        assert_eq!((a.message_type.as_str(), a.temp_id), ("Text", None));
        let a = send_args(vec!["bob".into(), "hi".into(), Value::Null, 7.into()]).unwrap();
        assert_eq!(
            (a.message_type.as_str(), a.temp_id.as_deref()),
            ("Text", Some("7"))
        );
        let a = send_args(vec![42.into(), "hi".into(), "Image".into(), "t1".into()]).unwrap();
        assert_eq!(
            (a.recipient.as_str(), a.message_type.as_str()),
            ("42", "Image")
        );
        assert!(send_args(vec!["bob".into()]).is_none());
        assert!(send_args(vec!["bob".into(), 5.into()]).is_none());
        assert!(send_args(vec![
            "b".into(),
            "c".into(),
            "T".into(),
            "t".into(),
            "x".into()
        ])
        .is_none());
        assert!(one_id(vec![]).is_none());
        assert_eq!(one_id(vec![12.into()]).as_deref(), Some("12"));
    }

    #[test]
    fn methods_match_case_insensitively() {
        assert_eq!(Method::lookup("sendmessage"), Some(Method::SendMessage));
        assert_eq!(Method::lookup("MARKREAD"), Some(Method::MarkRead));
        assert_eq!(Method::lookup("JoinOrderChannel"), None);
    }
}

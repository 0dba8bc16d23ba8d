//! The chat service: the chat hub's methods (`SendMessage`, `JoinConversation`,
//! `LeaveConversation`, `StartTyping`, `StopTyping`, `MarkRead`) over the store, implementing the
//! actors' [`HubMethods`] seam, and the relay of presence to conversation partners
//! ([`PresenceObserver`]). The contract is `docs/chat.md`.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the service, its configuration, the seams it implements, publishing |
//! | `methods.rs` | each hub method: arguments, rules, storage, events |
//! | `payload.rs` | the JSON shapes the chat front end reads |
//! | `typing.rs` | typing indicators and their expiry |
//! | `webhook.rs` | the signed, retried webhook for offline recipients |
//!
//! Events for other connections are published on channels through `Node::publish` (so they
//! reach every node): `ReceiveMessage` on the recipient's personal channel
//! `tenant:{t}:user:{id}` (which every hub connection of a member joins on connect), the
//! conversation events on `conversation:{id}` (joined by `JoinConversation`), presence on each
//! partner's `tenant:{t}:user:{id}`. Events for the caller only (`MessageSent`, `MessageError`,
//! `ConversationError`, stored messages on connect) are [`ConnectionAction::Push`]es on the caller's
//! own personal channel; `UserJoinedConversation` is a [`ConnectionAction::Publish`] after the
//! caller's join, so the caller receives it too. Every event carries the seed hub's SignalR
//! argument list (`payload::arguments`). Nothing is sent on the global `user:{id}`: a user id is
//! only unique within its tenant.

mod methods;
pub mod payload;
pub mod typing;
pub mod webhook;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{json, Value};
use switchyard_actors::broker::{BrokerError, PublishAck};
use switchyard_actors::channel::{Channel, ChannelName};
use switchyard_actors::chat_events;
use switchyard_actors::envelope::{now_millis, Draft, Envelope};
use switchyard_actors::hub_methods::{ConnectionAction, EventKey, HubCall, HubMethods, HubReply};
use switchyard_actors::identity::Identity;
use switchyard_actors::ids::{ConnId, TenantKey, UserId};
use switchyard_actors::node::{Node, PublishError};
use switchyard_actors::payload::Payload;
use switchyard_actors::presence::{PresenceChange, PresenceObserver};

use self::typing::Typing;
use self::webhook::{Webhook, WebhookConfigError};
use crate::settings::ChatSettings;
use crate::store::Store;

/// The `source` label of `switchyard_published_total` for chat events.
const PUBLISH_SOURCE: &str = "chat";
/// Sends between two sweeps of the rate limiter's idle per-user entries.
const LIMITER_SWEEP_EVERY: u64 = 1024;

/// Why the chat settings were refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ChatConfigError {
    #[error("[chat] {0} must be greater than 0")]
    Zero(&'static str),
    #[error("[chat] history_page_size must not exceed history_max_page_size")]
    PageSize,
    #[error(transparent)]
    Webhook(#[from] WebhookConfigError),
}

/// The chat service's settings, checked.
#[derive(Clone)]
pub struct ChatConfig {
    pub max_content_chars: usize,
    pub send_rate: Quota,
    pub send_rate_per_minute: u32,
    pub typing_timeout: Duration,
    pub max_pending_on_connect: u32,
    pub webhook: Option<Webhook>,
}

fn non_zero(name: &'static str, v: u32) -> Result<NonZeroU32, ChatConfigError> {
    NonZeroU32::new(v).ok_or(ChatConfigError::Zero(name))
}

impl ChatConfig {
    /// Checks `[chat]` (also the REST API's part of it) and builds the service's configuration.
    pub fn from_settings(s: &ChatSettings) -> Result<Self, ChatConfigError> {
        let rate = non_zero("send_rate_per_minute", s.send_rate_per_minute)?;
        let burst = non_zero("send_burst", s.send_burst)?;
        if s.max_content_chars == 0 {
            return Err(ChatConfigError::Zero("max_content_chars"));
        }
        if s.typing_timeout_ms == 0 {
            return Err(ChatConfigError::Zero("typing_timeout_ms"));
        }
        if s.max_participants == 0 {
            return Err(ChatConfigError::Zero("max_participants"));
        }
        non_zero("history_page_size", s.history_page_size)?;
        non_zero("max_pending_on_connect", s.max_pending_on_connect)?;
        if s.history_page_size > s.history_max_page_size {
            return Err(ChatConfigError::PageSize);
        }
        Ok(Self {
            max_content_chars: s.max_content_chars,
            send_rate: Quota::per_minute(rate).allow_burst(burst),
            send_rate_per_minute: s.send_rate_per_minute,
            typing_timeout: Duration::from_millis(s.typing_timeout_ms),
            max_pending_on_connect: s.max_pending_on_connect,
            webhook: Webhook::from_settings(&s.webhook)?,
        })
    }
}

/// The chat service (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct ChatService(Arc<Inner>);

struct Inner {
    store: Store,
    /// The node this service belongs to (weak: the node holds the service).
    node: Weak<Node>,
    config: ChatConfig,
    limiter: DefaultKeyedRateLimiter<(TenantKey, UserId)>,
    typing: Typing,
    sends: AtomicU64,
}

/// A caller who may chat: a member of a tenant.
#[derive(Clone, Debug)]
struct Chatter {
    tenant: TenantKey,
    user: UserId,
    /// The verified identity, for the channel policy.
    identity: Arc<Identity>,
}

impl Chatter {
    fn of(identity: &Arc<Identity>) -> Option<Self> {
        let tenant = identity
            .tenant
            .clone()
            .filter(|_| identity.role.is_tenant_bound())?;
        Some(Self {
            tenant,
            user: identity.user_id.clone(),
            identity: identity.clone(),
        })
    }
}

/// `tenant:{t}:user:{id}`: one member of one tenant (never the global `user:{id}`, which every
/// tenant's user with that id may hold).
fn user_channel(tenant: &TenantKey, user: &str) -> ChannelName {
    ChannelName::from_channel(Channel::TenantUser {
        tenant: tenant.clone(),
        user: user.to_owned(),
    })
}

/// `conversation:{id}`.
fn conversation_channel(id: &str) -> ChannelName {
    ChannelName::from_channel(Channel::Conversation { id: id.to_owned() })
}

/// An event for the calling connection only (labelled with the caller's personal channel).
fn push(me: &Chatter, event: &'static str, data: &Value) -> ConnectionAction {
    ConnectionAction::Push {
        channel: user_channel(&me.tenant, me.user.as_str()),
        event: chat_events::event(event),
        data: Payload::built(data),
        arguments: Some(payload::arguments(event, data)),
    }
}

/// A chat event to publish on `channel`, with the seed hub's argument list for SignalR clients.
fn draft(channel: ChannelName, event: &'static str, data: &Value) -> Draft {
    // The chat hub's events have the shape this service gives them; user text is a string.
    Draft::new(channel, chat_events::event(event), Payload::built(data))
        .with_arguments(Some(payload::arguments(event, data)))
}

/// Publishes a chat event once the calling connection's actions before it are applied (after its
/// `Join`, so it receives the event too).
fn publish_after(channel: ChannelName, event: &'static str, data: &Value) -> ConnectionAction {
    ConnectionAction::Publish {
        draft: draft(channel, event, data),
        source: PUBLISH_SOURCE,
    }
}

fn now() -> i64 {
    i64::try_from(now_millis()).unwrap_or(i64::MAX)
}

impl ChatService {
    pub fn new(store: Store, node: Weak<Node>, config: ChatConfig) -> Self {
        Self(Arc::new(Inner {
            limiter: RateLimiter::keyed(config.send_rate),
            store,
            node,
            config,
            typing: Typing::default(),
            sends: AtomicU64::new(0),
        }))
    }

    /// Publishes one chat event on `channel` through the node's one publish path.
    async fn publish(
        &self,
        channel: ChannelName,
        event: &'static str,
        data: &Value,
    ) -> Result<PublishAck, PublishError> {
        let node = self
            .0
            .node
            .upgrade()
            .ok_or(PublishError::Broker(BrokerError::Stopped))?;
        node.publish(draft(channel, event, data), PUBLISH_SOURCE)
            .await
    }

    /// Publishes, logging (not returning) a failure: for events that are best effort.
    async fn announce(&self, channel: ChannelName, event: &'static str, data: &Value, ctx: &str) {
        if let Err(e) = self.publish(channel, event, data).await {
            log::warn!("chat: {event} not published ({ctx}): {e}");
        }
    }

    /// Whether `user` may send now (the per-user rate limit on this node).
    fn may_send(&self, who: &Chatter) -> bool {
        if self.0.sends.fetch_add(1, Ordering::Relaxed) % LIMITER_SWEEP_EVERY == 0 {
            self.0.limiter.retain_recent();
        }
        self.0
            .limiter
            .check_key(&(who.tenant.clone(), who.user.clone()))
            .is_ok()
    }

    /// Stored messages for a connection that just opened: the user's undelivered ones, as
    /// pushes (oldest first). Each counts as delivered once a connection took it (`written`), so
    /// a connection that closes before writing them leaves them for the next one.
    async fn pending(self, who: Chatter) -> Vec<ConnectionAction> {
        let limit = self.0.config.max_pending_on_connect;
        match self
            .0
            .store
            .undelivered(&who.tenant, &who.user, limit)
            .await
        {
            Ok(messages) => {
                if !messages.is_empty() {
                    log::debug!(
                        "chat: tenant={} user={}: delivering {} stored messages",
                        who.tenant,
                        who.user,
                        messages.len()
                    );
                }
                messages
                    .iter()
                    .map(|m| push(&who, chat_events::RECEIVE_MESSAGE, &payload::message(m)))
                    .collect()
            }
            Err(e) => {
                log::warn!(
                    "chat: tenant={} user={}: stored messages not delivered: {e}",
                    who.tenant,
                    who.user
                );
                Vec::new()
            }
        }
    }

    /// Tells the user's conversation partners that the user came online or went offline.
    async fn relay_presence(self, change: PresenceChange) {
        let contacts = match self.0.store.contacts(&change.tenant, &change.user).await {
            Ok(c) => c,
            Err(e) => {
                log::warn!(
                    "chat: tenant={} user={}: {} not relayed to partners: {e}",
                    change.tenant,
                    change.user,
                    change.event()
                );
                return;
            }
        };
        let data = json!({
            "userId": change.user,
            "tenantKey": change.tenant,
            "role": change.role.map(|r| r.as_str()),
        });
        let event = change.event();
        let ctx = format!("tenant={} user={}", change.tenant, change.user);
        for contact in contacts {
            self.announce(user_channel(&change.tenant, &contact), event, &data, &ctx)
                .await;
        }
    }
}

/// The part of a `ReceiveMessage`'s data ([`payload::message`]) that names the message.
#[derive(serde::Deserialize)]
struct MessageId<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

impl ChatService {
    /// Records that a connection of `who` took the messages `ids` (see `HubMethods::written`).
    async fn delivered(self, who: Chatter, ids: Vec<EventKey>) {
        let ids: Vec<&str> = ids.iter().map(|k| &*k.0).collect();
        if let Err(e) = self
            .0
            .store
            .mark_delivered(&who.tenant, &who.user, &ids, now())
            .await
        {
            // Left undelivered: the user's next connection gets them again.
            log::warn!(
                "chat: tenant={} user={}: delivery of {} messages not recorded: {e}",
                who.tenant,
                who.user,
                ids.len()
            );
        }
    }
}

impl HubMethods for ChatService {
    fn invoke(&self, call: HubCall) -> Option<BoxFuture<'static, HubReply>> {
        methods::invoke(self, call)
    }

    /// A `ReceiveMessage` on a member's personal channel, keyed by its message id: written live
    /// or pushed on connect, it counts as delivered once a connection wrote it.
    fn event_key(&self, event: &Envelope) -> Option<EventKey> {
        if event.event.as_str() != chat_events::RECEIVE_MESSAGE
            || !matches!(event.channel.kind(), Channel::TenantUser { .. })
        {
            return None;
        }
        let m: MessageId = serde_json::from_str(event.data.get()).ok()?;
        Some(EventKey(Arc::from(m.id.as_ref())))
    }

    fn written(&self, identity: &Arc<Identity>, _conn: ConnId, keys: Vec<EventKey>) {
        if let Some(who) = Chatter::of(identity) {
            actix::spawn(self.clone().delivered(who, keys));
        }
    }

    fn connected(
        &self,
        identity: Arc<Identity>,
        _conn: ConnId,
    ) -> BoxFuture<'static, Vec<ConnectionAction>> {
        match Chatter::of(&identity) {
            Some(who) => Box::pin(self.clone().pending(who)),
            None => Box::pin(async { Vec::new() }),
        }
    }
}

impl PresenceObserver for ChatService {
    fn announced(&self, change: PresenceChange) {
        actix::spawn(self.clone().relay_presence(change));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ChatSettings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        crate::settings::Settings::load_from(&dir, Default::default())
            .unwrap()
            .chat
    }

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_named() {
        assert!(ChatConfig::from_settings(&settings()).is_ok());
        let mut s = settings();
        s.send_rate_per_minute = 0;
        let e = ChatConfig::from_settings(&s).err().unwrap();
        assert!(e.to_string().contains("send_rate_per_minute"), "{e}");
        let mut s = settings();
        s.history_page_size = s.history_max_page_size + 1;
        assert!(matches!(
            ChatConfig::from_settings(&s),
            Err(ChatConfigError::PageSize)
        ));
        let mut s = settings();
        s.webhook.url = "not a url".into();
        assert!(matches!(
            ChatConfig::from_settings(&s),
            Err(ChatConfigError::Webhook(_))
        ));
    }
}

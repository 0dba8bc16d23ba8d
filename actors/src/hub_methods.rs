//! The seam for hub methods the connection does not know itself (chat, and whatever comes next).
//!
//! A connection maps the protocol's own operations (subscribe, publish, …) by itself; any other
//! method a client invokes (a SignalR `Invocation`, or a native `invoke` frame) becomes
//! [`crate::codec::Request::Invoke`], which the connection hands to the node's [`HubMethods`], if it
//! has one. The server implements the trait in `src/` (the chat service over its store); this
//! crate never sees SQL or method semantics.
//!
//! The handler answers with a [`HubReply`]: the completion (a result, nothing, or an error) and
//! [`ConnectionAction`]s for the calling connection only — join or leave a channel, push an event
//! to it, or publish an event once it has joined. The connection applies the actions in order (joins are registered with the broker before
//! anything after them), then writes the completion, so a client whose `invoke` resolved is
//! already in the channels the method joined. Events meant for other connections are published on
//! channels by the handler itself (`Node::publish`), which reaches them on every node.
//!
//! A handler is also told when a connection is ready for events ([`HubMethods::connected`]: after
//! the SignalR handshake and its default channels, or when a native connection starts), so it can
//! push what the user missed while offline.
//!
//! **Tracked events.** A handler may give events it cares about a key
//! ([`HubMethods::event_key`]: e.g. the id of a chat message in its `ReceiveMessage`). For these,
//! the connection
//! - reports every one it wrote to its socket ([`HubMethods::written`], batched per turn), so the
//!   handler learns what a connection actually took rather than guessing from presence; an event
//!   that was queued for a connection which closed first is never reported;
//! - never writes one twice when the handler's connect-time pushes ([`HubMethods::connected`])
//!   and the channels' live events carry the same key: the push of something stored and its live
//!   delivery race while a connection opens, and the connection drops whichever comes second
//!   (`connection/tracked.rs`).
//!
//! The connection never looks inside the event: the key is the handler's.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::channel::ChannelName;
use crate::codes::ErrorCode;
use crate::envelope::{Envelope, EventName};
use crate::identity::Identity;
use crate::ids::ConnId;

/// One invocation of a method the connection does not map itself.
#[derive(Clone, Debug)]
pub struct HubCall {
    /// The caller's verified identity.
    pub identity: Arc<Identity>,
    /// The calling connection (for logs and per-connection state).
    pub conn: ConnId,
    /// The method name as the client sent it (handlers match it case-insensitively, as SignalR
    /// does).
    pub method: String,
    /// The arguments, as JSON.
    pub args: Vec<serde_json::Value>,
}

/// Something the connection does for the calling connection only.
#[derive(Clone, Debug)]
pub enum ConnectionAction {
    /// Subscribe this connection to a channel. The handler has checked the right to; the connection
    /// still applies everything a `subscribe` gets: the tenant's subscription quota, the
    /// connection's limit, the channel rules (and the authorizer for stored-data channels), and the
    /// activity observation. Joining a channel the connection already has is not an error.
    Join(ChannelName),
    /// Unsubscribe this connection from a channel (nothing if it is not subscribed).
    Leave(ChannelName),
    /// Write one event to this connection only, as a notification on `channel` with offset 0:
    /// it is not part of the channel's stream (no history, no recovery).
    Push {
        channel: ChannelName,
        event: EventName,
        data: crate::payload::Payload,
        /// The SignalR argument list ([`crate::hub_arguments`]); `None`: as for a published
        /// event on `channel`.
        arguments: Option<crate::hub_arguments::HubArguments>,
    },
    /// Publish `draft` through the node's one publish path once the actions before it are
    /// applied: after a `Join`, this connection receives the event like every other member, as a
    /// hub's `Groups.AddToGroupAsync` then `Clients.Group(…).SendAsync(…)` delivers it to the
    /// caller too. Best effort: a failed publish is logged and the method still completes.
    Publish {
        draft: crate::envelope::Draft,
        /// `switchyard_published_total{source}`.
        source: &'static str,
    },
}

/// What identifies a tracked event for its handler (see the module docs); opaque to connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey(pub Arc<str>);

/// Why a method failed; becomes a completion error (SignalR) or an `error` frame (native).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HubMethodError {
    pub code: ErrorCode,
    pub message: String,
}

impl HubMethodError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a method answers: its completion, and what the connection does first.
#[derive(Clone, Debug)]
pub struct HubReply {
    /// `Ok(Some(v))`: a result; `Ok(None)`: completed with no result; `Err`: an error.
    pub result: Result<Option<serde_json::Value>, HubMethodError>,
    /// Applied in order before the completion is written.
    pub actions: Vec<ConnectionAction>,
}

impl HubReply {
    /// Completed with no result and nothing to do.
    pub fn done() -> Self {
        Self {
            result: Ok(None),
            actions: Vec::new(),
        }
    }

    /// Completed with `value`.
    pub fn value(value: serde_json::Value) -> Self {
        Self {
            result: Ok(Some(value)),
            actions: Vec::new(),
        }
    }

    /// Failed with `error`.
    pub fn error(error: HubMethodError) -> Self {
        Self {
            result: Err(error),
            actions: Vec::new(),
        }
    }

    /// Adds an action.
    pub fn with(mut self, action: ConnectionAction) -> Self {
        self.actions.push(action);
        self
    }
}

/// Hub methods implemented outside the actors crate (the server's chat service).
pub trait HubMethods: Send + Sync + 'static {
    /// Handles `call`, or `None` when the method is not one of this handler's (the connection then
    /// answers "unknown method").
    fn invoke(&self, call: HubCall) -> Option<BoxFuture<'static, HubReply>>;

    /// A connection is open and ready for events; what to do for it (e.g. push the messages
    /// stored while the user was offline).
    fn connected(
        &self,
        identity: Arc<Identity>,
        conn: ConnId,
    ) -> BoxFuture<'static, Vec<ConnectionAction>>;

    /// The key of `event` if it is one this handler tracks (see the module docs), else `None`.
    /// Asked for every event a connection writes (live, replayed or pushed), so it must be cheap
    /// for the events it does not track.
    fn event_key(&self, event: &Envelope) -> Option<EventKey> {
        let _ = event;
        None
    }

    /// A connection of `identity` wrote the tracked events with `keys` to its socket (in the
    /// order written; never empty). Must not block: the connection calls it on its own thread.
    fn written(&self, identity: &Arc<Identity>, conn: ConnId, keys: Vec<EventKey>) {
        let _ = (identity, conn, keys);
    }
}

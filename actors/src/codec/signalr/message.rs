//! Hub messages independent of their encoding: what a client record says ([`HubMessage`]), what
//! a completion carries back ([`Completion`]), and why a record could not be read
//! ([`RecordError`]). `json.rs` and `msgpack.rs` translate between these and bytes.

use serde_json::Value;

use crate::codec::{JsonArg, ReplyTo, RequestId};
use crate::codes::ErrorCode;

/// The hub protocol's message type numbers.
pub mod kind {
    pub const INVOCATION: i64 = 1;
    pub const STREAM_ITEM: i64 = 2;
    pub const COMPLETION: i64 = 3;
    pub const STREAM_INVOCATION: i64 = 4;
    pub const CANCEL_INVOCATION: i64 = 5;
    pub const PING: i64 = 6;
    pub const CLOSE: i64 = 7;
    pub const ACK: i64 = 8;
    pub const SEQUENCE: i64 = 9;
}

/// One record received from a client, decoded but not yet interpreted.
#[derive(Clone, Debug, PartialEq)]
pub enum HubMessage {
    /// Type 1. `id: None` is a fire-and-forget call that must never be answered.
    Invocation {
        id: Option<RequestId>,
        target: String,
        /// As JSON text: an argument may carry event data of any depth (see [`JsonArg`]).
        args: Vec<JsonArg>,
        /// The call also uploads streams (non-empty `streamIds`).
        streams: bool,
    },
    /// Type 4: a call expecting a stream of results.
    StreamInvocation {
        id: Option<RequestId>,
        target: String,
    },
    /// Type 2: an item of a client-to-server stream.
    StreamItem,
    /// Type 3: the client completing a server-to-client invocation or an upload stream.
    Completion,
    /// Type 5.
    CancelInvocation,
    /// Type 6.
    Ping,
    /// Type 7: the client is closing (its error, if any, is only logged by the server).
    Close { error: Option<String> },
    /// Type 8 (stateful reconnect): the peer has every sequenced message up to `sequence_id`.
    Ack { sequence_id: u64 },
    /// Type 9 (stateful reconnect): the peer resends from `sequence_id` after a reconnect.
    Sequence { sequence_id: u64 },
    /// A type this server does not know (a later protocol revision).
    Unknown(i64),
}

/// How an invocation ended, as sent in a Completion (type 3) record. Never both result and error.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// A method with no result (`ResultKind` 2 in MessagePack; no `result` in JSON).
    Void,
    /// A result value (`ResultKind` 3; `"result"`).
    Result(Value),
    /// An error message (`ResultKind` 1; `"error"`).
    Error(String),
}

/// Why one record could not be read. The connection carries on.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// Not a JSON object / MessagePack array at all.
    #[error("hub message is not valid {format}: {detail}")]
    Malformed {
        format: &'static str,
        detail: String,
    },
    /// Readable, but a field is missing or has the wrong type. `reply_to` is the invocation id
    /// when one could be read, so the caller gets a completion error instead of waiting forever.
    #[error("{message}")]
    Invalid { reply_to: ReplyTo, message: String },
    /// An argument nested deeper than the reader can hold (MessagePack records are read whole);
    /// answered like data refused by the payload limits.
    #[error("{message}")]
    TooDeep { reply_to: ReplyTo, message: String },
}

impl RecordError {
    pub fn invalid(reply_to: ReplyTo, message: impl Into<String>) -> Self {
        RecordError::Invalid {
            reply_to,
            message: message.into(),
        }
    }

    /// The error code a connection reports for this record.
    pub fn code(&self) -> ErrorCode {
        match self {
            RecordError::Malformed { .. } => ErrorCode::BadJson,
            RecordError::Invalid { .. } => ErrorCode::BadRequest,
            RecordError::TooDeep { .. } => ErrorCode::BadPayload,
        }
    }

    /// Where the error goes, if anywhere.
    pub fn reply_to(&self) -> ReplyTo {
        match self {
            RecordError::Malformed { .. } => None,
            RecordError::Invalid { reply_to, .. } | RecordError::TooDeep { reply_to, .. } => {
                reply_to.clone()
            }
        }
    }
}

impl HubMessage {
    /// Whether this message counts in stateful reconnect's sequence (types 1-5).
    pub fn is_sequenced(&self) -> bool {
        matches!(
            self,
            HubMessage::Invocation { .. }
                | HubMessage::StreamInvocation { .. }
                | HubMessage::StreamItem
                | HubMessage::Completion
                | HubMessage::CancelInvocation
        )
    }
}

//! Wire codecs: how one WebSocket protocol turns frames into protocol-neutral requests and
//! outcomes into frames.
//!
//! A [`crate::connection::Connection`] owns the socket, subscriptions, heartbeat and limits; it holds one
//! `Box<dyn WireCodec>` and never looks inside a frame itself. A SignalR connection is just another
//! connection with another codec. Notification frames are the exception: they are encoded once per
//! node per [`WireFormat`] by [`encode_notification`], framed as a WebSocket frame once
//! ([`notification_ws_frame`]) and shared by every connection of that format.

pub mod native;
pub mod signalr;
pub mod ws_frame;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::codes::{CloseCode, ErrorCode};
use crate::envelope::{Envelope, StreamPosition};
use crate::hub_arguments::{ArgumentsDefault, ArgumentsShape};

/// The distinct encodings of a notification. Each envelope caches one frame per format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// The native JSON protocol at `/ws` (text frames).
    Native = 0,
    /// SignalR's JSON hub protocol (text frames, records end with 0x1E).
    SignalRJson = 1,
    /// SignalR's MessagePack hub protocol (binary frames, varint length prefixes).
    SignalRMsgPack = 2,
}

impl WireFormat {
    pub const COUNT: usize = 3;

    /// Whether frames of this format go in binary WebSocket frames.
    pub fn is_binary(self) -> bool {
        matches!(self, WireFormat::SignalRMsgPack)
    }
}

/// A frame the connection writes to the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutFrame {
    /// UTF-8 text (the codec guarantees it).
    Text(Bytes),
    Binary(Bytes),
}

/// A data frame (or reassembled message) read from the socket.
#[derive(Clone, Copy, Debug)]
pub enum InFrame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// The client's correlation id for a request, echoed in the reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    Text(String),
}

/// Where a reply goes: `None` means the client asked for no reply (SignalR fire-and-forget, or a
/// native frame without `id`; native replies are still sent, without `id`).
pub type ReplyTo = Option<RequestId>;

/// One argument of a method call as the client sent it: JSON text, not parsed. An argument may
/// carry event data (`Publish`), whose depth and size only the payload check
/// ([`crate::payload`]) may judge: a parser's own nesting limit would refuse it with a different
/// error, before the call could be answered.
#[derive(Clone, Debug)]
pub struct JsonArg(pub Box<RawValue>);

impl JsonArg {
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }
}

impl PartialEq for JsonArg {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// What a client asked for, whatever protocol it spoke.
#[derive(Clone, Debug)]
pub enum Request {
    Subscribe {
        channel: String,
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: String,
    },
    /// Unsubscribe by a subscription id (seed 004's protocol): the id a `subscribed` reply gave,
    /// or `{EntityType}:{EntityId}` for an entity's change-feed channel.
    UnsubscribeById {
        subscription_id: String,
    },
    Publish {
        channel: String,
        event: String,
        /// Not checked yet: the connection checks it against the payload limits.
        data: Arc<RawValue>,
    },
    Ping,
    /// A hub method the codec does not map onto channel operations (chat, …).
    Invoke {
        method: String,
        /// Not checked yet: the connection checks each against the payload limits.
        args: Vec<JsonArg>,
    },
    /// The protocol handshake was accepted (SignalR). The connection joins its default channels and
    /// only then writes `reply` (the handshake response), so that when the client's `start()`
    /// resolves those channels receive every event published on any node from then on.
    HandshakeComplete {
        reply: OutFrame,
    },
    /// The client announced it is closing (SignalR `Close` record).
    Close,
    /// Stateful reconnect: the client has every sequenced message up to `sequence_id`.
    Ack {
        sequence_id: u64,
    },
}

/// One request with its reply address.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub reply_to: ReplyTo,
    pub request: Request,
}

/// What a codec made of one record.
#[derive(Clone, Debug)]
pub enum Decoded {
    Request(Inbound),
    /// The record was understood well enough to answer, but not to act on.
    Reject {
        reply_to: ReplyTo,
        code: ErrorCode,
        message: String,
    },
    /// Nothing to do (a client keep-alive, an ack).
    Ignore,
    /// Write this frame to the socket now, before acting on the records decoded after it.
    /// It answers the protocol itself, not a request (the SignalR handshake reply), so it is
    /// never rate limited, counted as an error or held back until the codec is [`ready`].
    ///
    /// [`ready`]: WireCodec::ready
    Send(OutFrame),
    /// The connection cannot go on: write `farewell` (if any), then close with `close`.
    Fatal {
        close: CloseCode,
        message: String,
        farewell: Option<OutFrame>,
    },
}

impl Decoded {
    pub fn request(reply_to: ReplyTo, request: Request) -> Self {
        Decoded::Request(Inbound { reply_to, request })
    }

    pub fn reject(reply_to: ReplyTo, code: ErrorCode, message: impl Into<String>) -> Self {
        Decoded::Reject {
            reply_to,
            code,
            message: message.into(),
        }
    }
}

/// The result of a request, for the codec to put on the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Subscribed {
        channel: String,
        subscription_id: u64,
        offset: u64,
        epoch: Arc<str>,
        /// `Some` when the client asked to recover from a position.
        recovered: Option<bool>,
    },
    SubscriptionError {
        channel: String,
        code: ErrorCode,
        reason: String,
    },
    Unsubscribed {
        channel: String,
    },
    Published {
        id: Arc<str>,
        offset: u64,
        epoch: Arc<str>,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A method's result value.
    Value(serde_json::Value),
    /// A method finished with no result.
    Done,
}

/// One WebSocket protocol.
pub trait WireCodec: Send + 'static {
    /// The format this connection's notifications use (may change at the handshake).
    fn format(&self) -> WireFormat;

    /// The argument list of events whose publisher chose none (SignalR: the hub path's
    /// `signalr.default_arguments`). Only SignalR frames depend on it.
    fn arguments_default(&self) -> ArgumentsDefault {
        ArgumentsDefault::Message
    }

    /// A short protocol name for logs and metric labels (`native`, `signalr`).
    fn label(&self) -> &'static str;

    /// Whether the protocol handshake is done, so notifications may flow.
    fn ready(&self) -> bool {
        true
    }

    /// Decodes one data frame into zero or more records, appended to `out`.
    fn decode(&mut self, frame: InFrame<'_>, out: &mut Vec<Decoded>);

    /// Encodes the reply to a request; `None` when the protocol sends nothing for it.
    fn encode(&self, reply_to: &ReplyTo, outcome: Outcome) -> Option<OutFrame>;

    /// An application-level keep-alive, if the protocol has one (SignalR Ping).
    fn keepalive(&self) -> Option<OutFrame> {
        None
    }

    /// A last frame before the WebSocket close (SignalR `Close`), if the protocol has one.
    fn goodbye(&self, _close: CloseCode) -> Option<OutFrame> {
        None
    }

    /// Whether the client asked for a resumable connection (SignalR stateful reconnect:
    /// handshake version 2). The server must also have agreed at negotiate.
    fn resumable(&self) -> bool {
        false
    }

    /// The highest sequenced message received from the client (to acknowledge).
    fn received_sequence(&self) -> u64 {
        0
    }

    /// Acknowledges the client's messages up to `sequence_id`.
    fn ack_frame(&self, _sequence_id: u64) -> Option<OutFrame> {
        None
    }

    /// Tells the client the server resends from `sequence_id` (first frame after a resume).
    fn sequence_frame(&self, _sequence_id: u64) -> Option<OutFrame> {
        None
    }

    /// A new socket continues this connection: partial data from the old one is dropped and the
    /// client's messages are ignored until it says where it resends from.
    fn begin_resume(&mut self) {}
}

/// The frame-cache slot of each encoding: the native frame, then per SignalR format the
/// notification message and the event's own arguments. One envelope needs at most one of the two
/// SignalR shapes per hub default, and both only when hubs with different defaults receive it.
fn frame_slot(format: WireFormat, shape: ArgumentsShape) -> usize {
    match (format, shape) {
        (WireFormat::Native, _) => 0,
        (WireFormat::SignalRJson, ArgumentsShape::Message) => 1,
        (WireFormat::SignalRJson, ArgumentsShape::Own) => 2,
        (WireFormat::SignalRMsgPack, ArgumentsShape::Message) => 3,
        (WireFormat::SignalRMsgPack, ArgumentsShape::Own) => 4,
    }
}

// Every encoding has its slot in an envelope's frame cache.
const _: () = assert!(2 * WireFormat::COUNT - 1 <= crate::envelope::FRAME_SLOTS);

/// This event's notification in `format` for a connection whose hub defaults to `default`, as a
/// complete WebSocket frame (header and payload): encoded once per node per encoding and shared by
/// every recipient, which copies it into its write buffer as it is
/// ([`crate::connection::socket_context::SocketContext::write_frame`]).
pub fn notification_ws_frame(
    env: &Envelope,
    format: WireFormat,
    default: ArgumentsDefault,
) -> &Bytes {
    let shape = signalr::arguments_shape(env, default);
    env.cached_frame(frame_slot(format, shape), |env| {
        let payload = encode_notification(format, shape, env);
        ws_frame::data_frame(&payload, format.is_binary())
    })
}

/// The payload of [`notification_ws_frame`] (the protocol's message without the WebSocket
/// header; shared, not copied): what stateful reconnect keeps for a resend.
pub fn notification_frame(env: &Envelope, format: WireFormat, default: ArgumentsDefault) -> Bytes {
    ws_frame::frame_payload(notification_ws_frame(env, format, default))
}

/// Encodes an envelope as a notification frame in `format` (`shape` matters to SignalR only).
/// Called once per envelope per encoding per node through [`notification_ws_frame`].
pub fn encode_notification(format: WireFormat, shape: ArgumentsShape, env: &Envelope) -> Bytes {
    match format {
        WireFormat::Native => native::encode_notification(env),
        WireFormat::SignalRJson => signalr::encode_notification_json(env, shape),
        WireFormat::SignalRMsgPack => signalr::encode_notification_msgpack(env, shape),
    }
}

/// RFC 3339 UTC time with milliseconds, from milliseconds since the Unix epoch.
pub fn rfc3339_millis(ts: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts);
    humantime::format_rfc3339_millis(t).to_string()
}

//! The SignalR hub protocol over WebSockets, so unmodified `@microsoft/signalr` (and other)
//! clients can connect: the handshake, the JSON and MessagePack hub protocols, the hub's methods
//! and the notification frames. Negotiate, tokens and the HTTP routes live in the server.
//!
//! | file | owns |
//! | --- | --- |
//! | `codec.rs` | [`SignalRCodec`]: one connection's protocol state and its [`WireCodec`] impl |
//! | `handshake.rs` | the handshake request and its replies |
//! | `framing.rs` | splitting frames into records (0x1E / varint length) across frames |
//! | `message.rs` | hub messages independent of encoding |
//! | `json.rs`, `msgpack.rs` | the two encodings of those messages |
//! | `hub.rs` | hub methods → requests, outcomes → completion results |
//! | `notification.rs` | server → client event invocations, shared by every connection |
//!
//! [`WireCodec`]: crate::codec::WireCodec

mod codec;
mod framing;
mod handshake;
mod hub;
mod json;
mod message;
mod msgpack;
mod notification;

#[cfg(test)]
mod tests;

pub use codec::SignalRCodec;
pub use framing::{write_varint, RECORD_SEPARATOR};
pub use handshake::HubProtocol;
pub use notification::{arguments_shape, encode_notification_json, encode_notification_msgpack};

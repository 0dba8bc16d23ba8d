//! The SignalR hub protocol (JSON and MessagePack) over WebSockets.

mod framing;
mod notification;

pub use framing::{write_varint, RECORD_SEPARATOR};
pub use notification::{encode_notification_json, encode_notification_msgpack};

//! A server's WebSocket data frame (unmasked, final), the one encoding of it: the connection's
//! writer ([`crate::connection::socket_context`]) encodes its own replies with it, and a
//! notification's frame is encoded with it once per event and shared by every connection
//! ([`super::notification_ws_frame`]). Kept in the codecs, below the connection, so the codecs
//! need nothing of the connection.

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};

/// Appends a server frame (unmasked, final) carrying `payload` to `dst`: a text frame, or a
/// binary one if `binary`. The one place the writer's data frames are encoded, per connection
/// ([`crate::connection::socket_context::SocketContext::text`]) or once per event ([`data_frame`]).
pub(crate) fn put_data_frame(dst: &mut BytesMut, payload: &[u8], binary: bool) {
    let op = if binary { OpCode::Binary } else { OpCode::Text };
    Parser::write_message(dst, payload, op, true, false);
}

/// A complete server frame carrying `payload` (text, or binary if `binary`), for
/// [`crate::connection::socket_context::SocketContext::write_frame`]: what the node encodes once
/// per event and shares.
pub fn data_frame(payload: &[u8], binary: bool) -> Bytes {
    // Header: 2 bytes, plus 2 or 8 for the extended length.
    const MAX_HEADER: usize = 10;
    let mut dst = BytesMut::with_capacity(payload.len() + MAX_HEADER);
    put_data_frame(&mut dst, payload, binary);
    dst.freeze()
}

/// The payload of a frame made by [`data_frame`] (shared, not copied).
pub fn frame_payload(frame: &Bytes) -> Bytes {
    // The 7-bit length, or 126 / 127 for a 16-bit / 64-bit length after it (RFC 6455 §5.2).
    let header = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.slice(header..)
}

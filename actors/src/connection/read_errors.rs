//! What a failed WebSocket read means: a peer that is gone, or a client that broke the protocol.
//!
//! The WebSocket reader reports several protocol violations as `ProtocolError::Io`, the same
//! variant as a lost connection: the connection's reader (`socket_context.rs`, worded as
//! actix-web-actors' was) turns a text frame with invalid UTF-8 into
//! `Io(ErrorKind::Other, <Utf8Error>)` and `actix-http`'s frame parser turns a reserved bit into
//! `Io(ErrorKind::InvalidData, ..)`. Treated as a lost peer, such a frame got a bare TCP close
//! with no close code, no count and no log line. This is the one place that tells them apart;
//! its tests drive that reader and actix-http themselves, so a change to the errors fails here.

use std::io;

use super::socket_context::ProtocolError;

use crate::codes::CloseCode;

/// What to do after a failed read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadFailure {
    /// The peer is gone (EOF, reset, a broken payload stream): nothing can be written to it, and
    /// the drop is unclean (a resumable connection parks on it).
    PeerLost,
    /// The client broke the protocol: close with `close`, counted in
    /// `switchyard_bad_frames_total{code=label}`.
    Bad {
        close: CloseCode,
        label: &'static str,
    },
}

/// A text message that is not valid UTF-8, whether in one frame or reassembled from fragments.
pub(super) const INVALID_UTF8: ReadFailure = ReadFailure::Bad {
    close: CloseCode::InvalidPayload,
    label: "invalid_utf8",
};

/// A frame with RSV1, RSV2 or RSV3 set (no extension is ever negotiated).
const RESERVED_BITS: ReadFailure = ReadFailure::Bad {
    close: CloseCode::ProtocolError,
    label: "reserved_bits",
};

/// Classifies a read error.
pub(super) fn classify(e: &ProtocolError) -> ReadFailure {
    match e {
        ProtocolError::Overflow => ReadFailure::Bad {
            close: CloseCode::MessageTooBig,
            label: "frame_too_big",
        },
        ProtocolError::Io(io) => classify_io(io),
        _ => ReadFailure::Bad {
            close: CloseCode::ProtocolError,
            label: "ws_protocol",
        },
    }
}

fn classify_io(e: &io::Error) -> ReadFailure {
    match e.kind() {
        // Only the frame parser says InvalidData (a reserved bit); a lost peer never does.
        io::ErrorKind::InvalidData => RESERVED_BITS,
        // The reader formats the `Utf8Error` into the message: its two shapes are
        // "invalid utf-8 sequence of N bytes from index I" and
        // "incomplete utf-8 byte sequence from index I".
        io::ErrorKind::Other if is_utf8_error(&e.to_string()) => INVALID_UTF8,
        _ => ReadFailure::PeerLost,
    }
}

fn is_utf8_error(message: &str) -> bool {
    message.starts_with("invalid utf-8 sequence")
        || message.starts_with("incomplete utf-8 byte sequence")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use actix::prelude::*;
    use actix_http::error::PayloadError;
    use bytes::{Bytes, BytesMut};
    use futures_util::StreamExt;

    use super::*;
    use crate::connection::socket_context::{Message, SocketContext};

    /// Records how every read error it gets is classified.
    struct Probe(Arc<Mutex<Vec<ReadFailure>>>);

    impl Actor for Probe {
        type Context = SocketContext<Self>;
    }

    impl StreamHandler<Result<Message, ProtocolError>> for Probe {
        fn handle(&mut self, msg: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
            if let Err(e) = msg {
                self.0.lock().unwrap().push(classify(&e));
                ctx.stop();
            }
        }
    }

    /// The classification of the error the connection's reader (`socket_context.rs`, over
    /// actix-http's frame codec) makes of `input`.
    fn read(input: Vec<Result<Bytes, PayloadError>>) -> Vec<ReadFailure> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe(seen.clone());
        actix::System::new().block_on(async move {
            let input = futures_util::stream::iter(input);
            let output = SocketContext::start(probe, input, actix_http::ws::Codec::new());
            output.for_each(|_| async {}).await;
        });
        let seen = seen.lock().unwrap().clone();
        seen
    }

    /// A masked client frame (short payloads only).
    fn frame(first: u8, payload: &[u8]) -> Bytes {
        let key = [1u8, 2, 3, 4];
        let mut f = vec![first, 0x80 | payload.len() as u8];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        Bytes::from(f)
    }

    #[test]
    fn invalid_utf8_in_a_text_frame_is_a_bad_payload() {
        assert_eq!(read(vec![Ok(frame(0x81, b"ok \xff"))]), [INVALID_UTF8]);
        // Cut off in the middle of a character.
        assert_eq!(read(vec![Ok(frame(0x81, b"\xe2\x82"))]), [INVALID_UTF8]);
    }

    #[test]
    fn a_reserved_bit_is_a_protocol_error() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(
                read(vec![Ok(frame(0x80 | rsv | 0x1, b"{}"))]),
                [RESERVED_BITS]
            );
        }
        // The parser itself, as the reader calls it.
        let mut buf = BytesMut::from(&frame(0xc1, b"{}")[..]);
        let e = actix_http::ws::Parser::parse(&mut buf, true, 1024).unwrap_err();
        assert_eq!(classify(&e), RESERVED_BITS);
    }

    #[test]
    fn a_broken_payload_stream_is_a_lost_peer() {
        for e in [
            PayloadError::Incomplete(None),
            PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
            PayloadError::Io(std::io::Error::other("peer vanished")),
        ] {
            assert_eq!(read(vec![Err(e)]), [ReadFailure::PeerLost]);
        }
    }

    #[test]
    fn other_protocol_errors_keep_their_codes() {
        let unmasked = Bytes::from_static(b"\x81\x02{}");
        assert_eq!(
            read(vec![Ok(unmasked)]),
            [ReadFailure::Bad {
                close: CloseCode::ProtocolError,
                label: "ws_protocol"
            }]
        );
        assert_eq!(
            classify(&ProtocolError::Overflow),
            ReadFailure::Bad {
                close: CloseCode::MessageTooBig,
                label: "frame_too_big"
            }
        );
    }
}

//! Reassembling a message the client sent in continuation frames, within the frame-size limit.
//! Plain state, no actor: the connection feeds it each fragment and reads the message it returns.

use actix_http::ws::Item;
use bytes::BytesMut;

use crate::codes::CloseCode;

/// What one fragment completed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reassembled {
    /// The message goes on in later fragments.
    More,
    /// The last fragment: the whole message.
    Message { binary: bool, buf: BytesMut },
    /// The fragments broke the protocol or the size limit: close with this code.
    Close(CloseCode),
}

/// The message being reassembled, if any.
#[derive(Default)]
pub(super) struct Fragments {
    partial: Option<(bool, BytesMut)>,
}

impl Fragments {
    /// Adds one fragment; `max` is the largest message accepted.
    pub(super) fn push(&mut self, item: Item, max: usize) -> Reassembled {
        let (first, last, chunk) = match item {
            Item::FirstText(b) => (Some(false), false, b),
            Item::FirstBinary(b) => (Some(true), false, b),
            Item::Continue(b) => (None, false, b),
            Item::Last(b) => (None, true, b),
        };
        if let Some(binary) = first {
            self.partial = Some((binary, BytesMut::new()));
        }
        let Some((_, buf)) = self.partial.as_mut() else {
            return Reassembled::Close(CloseCode::ProtocolError);
        };
        if buf.len() + chunk.len() > max {
            return Reassembled::Close(CloseCode::MessageTooBig);
        }
        buf.extend_from_slice(&chunk);
        match self.partial.take() {
            Some((binary, buf)) if last => Reassembled::Message { binary, buf },
            partial => {
                self.partial = partial;
                Reassembled::More
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn fragments_make_one_message() {
        let mut f = Fragments::default();
        assert_eq!(f.push(Item::FirstText(b("ab")), 8), Reassembled::More);
        assert_eq!(f.push(Item::Continue(b("cd")), 8), Reassembled::More);
        assert_eq!(
            f.push(Item::Last(b("ef")), 8),
            Reassembled::Message {
                binary: false,
                buf: BytesMut::from("abcdef")
            }
        );
    }

    #[test]
    fn a_continuation_without_a_start_or_over_the_limit_closes() {
        let mut f = Fragments::default();
        assert_eq!(
            f.push(Item::Continue(b("x")), 8),
            Reassembled::Close(CloseCode::ProtocolError)
        );
        assert_eq!(f.push(Item::FirstBinary(b("1234")), 8), Reassembled::More);
        assert_eq!(
            f.push(Item::Last(b("56789")), 8),
            Reassembled::Close(CloseCode::MessageTooBig)
        );
    }
}

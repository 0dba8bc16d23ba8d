//! Record framing of the hub protocol: JSON records end with 0x1E, MessagePack records start
//! with their length as a varint. A WebSocket frame may carry several records and a record may
//! span frames, so [`Reassembler`] keeps the incomplete tail between frames, bounded by the
//! largest record the server accepts.

use std::ops::ControlFlow;

/// Record separator ending every JSON hub protocol record (and the handshake, in both protocols).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The longest varint length prefix: a 32-bit length in 7-bit groups.
pub const MAX_VARINT_LEN: usize = 5;

/// The largest length a prefix may declare (the spec caps payloads at 2 GB).
const MAX_DECLARED_LEN: u64 = 0x7fff_ffff;

/// SignalR's length prefix: 7 bits per byte, least significant first, high bit = more.
pub fn write_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Why the byte stream cannot be split into records any more; the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A record (complete, declared or still arriving) is longer than the limit.
    #[error("a hub message exceeds the {max}-byte limit")]
    TooBig { max: usize },
    /// A MessagePack length prefix is longer than 5 bytes or declares more than 2 GB.
    #[error("malformed MessagePack length prefix")]
    BadLengthPrefix,
}

/// Reads a varint length prefix at the start of `data`: `Ok(None)` when more bytes are needed,
/// otherwise the declared length and the prefix's own size.
pub fn read_varint(data: &[u8]) -> Result<Option<(usize, usize)>, FramingError> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > MAX_DECLARED_LEN {
                return Err(FramingError::BadLengthPrefix);
            }
            let len = usize::try_from(value).map_err(|_| FramingError::BadLengthPrefix)?;
            return Ok(Some((len, i + 1)));
        }
    }
    if data.len() >= MAX_VARINT_LEN {
        Err(FramingError::BadLengthPrefix)
    } else {
        Ok(None)
    }
}

/// How records are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// JSON: every record ends with [`RECORD_SEPARATOR`].
    Separated,
    /// MessagePack: every record starts with its varint length.
    LengthPrefixed,
}

/// Splits a stream of frames into records, keeping an incomplete tail between frames.
#[derive(Debug)]
pub struct Reassembler {
    framing: Framing,
    /// Bytes of the record still arriving (including its length prefix, if any).
    pending: Vec<u8>,
    max_record: usize,
}

impl Reassembler {
    /// A reassembler refusing records longer than `max_record` bytes.
    pub fn new(framing: Framing, max_record: usize) -> Self {
        Self {
            framing,
            pending: Vec::new(),
            max_record,
        }
    }

    /// Bytes of an incomplete record held for the next frame.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one frame's bytes and calls `on_record` with each complete record, in order (without
    /// separator or prefix). `on_record` may break to stop early; the rest of the frame is then
    /// dropped. An error means the stream is broken and the connection must close.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        on_record: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), FramingError> {
        if self.pending.is_empty() {
            // The common case: whole records in one frame, nothing copied.
            let consumed = self.split(chunk, on_record)?;
            if let Some(tail) = chunk.get(consumed..) {
                self.keep(tail)?;
            }
        } else {
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(chunk);
            let consumed = self.split(&data, on_record)?;
            data.drain(..consumed.min(data.len()));
            self.keep(&data)?;
        }
        Ok(())
    }

    /// Keeps an incomplete record, refusing it once it cannot fit the limit.
    fn keep(&mut self, tail: &[u8]) -> Result<(), FramingError> {
        let limit = match self.framing {
            Framing::Separated => self.max_record,
            // A prefix declaring an acceptable length is checked in `split`; here only the
            // prefix and the partial body sit in the buffer.
            Framing::LengthPrefixed => self.max_record.saturating_add(MAX_VARINT_LEN),
        };
        if tail.len() > limit {
            self.pending.clear();
            return Err(FramingError::TooBig {
                max: self.max_record,
            });
        }
        self.pending.clear();
        self.pending.extend_from_slice(tail);
        Ok(())
    }

    /// Calls `on_record` for each complete record in `data`; returns how many bytes were used
    /// (everything when `on_record` breaks).
    fn split(
        &self,
        data: &[u8],
        on_record: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<usize, FramingError> {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let (record, used) = match self.framing {
                Framing::Separated => match rest.iter().position(|&b| b == RECORD_SEPARATOR) {
                    Some(end) => (&rest[..end], end + 1),
                    None => break,
                },
                Framing::LengthPrefixed => match read_varint(rest)? {
                    None => break,
                    Some((len, prefix)) => {
                        if len > self.max_record {
                            return Err(FramingError::TooBig {
                                max: self.max_record,
                            });
                        }
                        let end = prefix
                            .checked_add(len)
                            .ok_or(FramingError::BadLengthPrefix)?;
                        match rest.get(prefix..end) {
                            Some(body) => (body, end),
                            None => break,
                        }
                    }
                },
            };
            if record.len() > self.max_record {
                return Err(FramingError::TooBig {
                    max: self.max_record,
                });
            }
            pos += used;
            if on_record(record).is_break() {
                return Ok(data.len());
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(r: &mut Reassembler, chunk: &[u8]) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut records = Vec::new();
        r.feed(chunk, &mut |rec| {
            records.push(rec.to_vec());
            ControlFlow::Continue(())
        })?;
        Ok(records)
    }

    fn prefixed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            write_varint(&mut out, body.len());
            out.extend_from_slice(body);
        }
        out
    }

    #[test]
    fn varints_round_trip_and_match_the_spec_examples() {
        for n in [0usize, 1, 127, 128, 5248, 16_383, 16_384, 0x7fff_ffff] {
            let mut buf = Vec::new();
            write_varint(&mut buf, n);
            assert_eq!(read_varint(&buf), Ok(Some((n, buf.len()))), "{n}");
            assert_eq!(
                read_varint(&buf[..buf.len() - 1]),
                Ok(None),
                "{n} truncated"
            );
        }
        // From HubProtocol.md: 0x35 = 53, 0x80 0x29 = 5248, 0x7fffffff = FF FF FF FF 07.
        assert_eq!(read_varint(&[0x35]), Ok(Some((53, 1))));
        assert_eq!(read_varint(&[0x80, 0x29]), Ok(Some((5248, 2))));
        let mut max = Vec::new();
        write_varint(&mut max, 0x7fff_ffff);
        assert_eq!(max, [0xff, 0xff, 0xff, 0xff, 0x07]);
    }

    #[test]
    fn varints_past_five_bytes_or_two_gigabytes_are_refused() {
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x08]),
            Err(FramingError::BadLengthPrefix)
        );
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80]),
            Err(FramingError::BadLengthPrefix)
        );
        assert_eq!(read_varint(&[]), Ok(None));
    }

    #[test]
    fn separated_records_split_and_tail_is_kept() {
        let mut r = Reassembler::new(Framing::Separated, 100);
        let recs = collect(&mut r, b"{\"a\":1}\x1e{\"b\":2}\x1e{\"c\"").unwrap();
        assert_eq!(recs, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(r.pending_len(), 4);
        assert!(collect(&mut r, b":").unwrap().is_empty());
        let recs = collect(&mut r, b"3}\x1e").unwrap();
        assert_eq!(recs, vec![b"{\"c\":3}".to_vec()]);
        assert_eq!(r.pending_len(), 0);
    }

    #[test]
    fn separated_tail_over_the_limit_is_too_big() {
        let mut r = Reassembler::new(Framing::Separated, 8);
        assert!(collect(&mut r, b"12345678").unwrap().is_empty());
        assert_eq!(collect(&mut r, b"9"), Err(FramingError::TooBig { max: 8 }));
        // A complete record over the limit is refused too.
        let mut r = Reassembler::new(Framing::Separated, 8);
        assert_eq!(
            collect(&mut r, b"123456789\x1e"),
            Err(FramingError::TooBig { max: 8 })
        );
        // Exactly at the limit is fine.
        let mut r = Reassembler::new(Framing::Separated, 8);
        assert_eq!(collect(&mut r, b"12345678\x1e").unwrap().len(), 1);
    }

    #[test]
    fn length_prefixed_records_split_across_frames() {
        let big = vec![7u8; 300];
        let stream = prefixed(&[b"\x91\x06", &big, b"\x92\x07\xc0"]);
        // Feed one byte at a time: every record comes out whole, once.
        let mut r = Reassembler::new(Framing::LengthPrefixed, 1000);
        let mut recs = Vec::new();
        for b in &stream {
            recs.extend(collect(&mut r, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(
            recs,
            vec![b"\x91\x06".to_vec(), big.clone(), b"\x92\x07\xc0".to_vec()]
        );
        assert_eq!(r.pending_len(), 0);
        // And all at once.
        let mut r = Reassembler::new(Framing::LengthPrefixed, 1000);
        assert_eq!(collect(&mut r, &stream).unwrap().len(), 3);
    }

    #[test]
    fn length_prefix_over_the_limit_fails_before_the_body_arrives() {
        let mut r = Reassembler::new(Framing::LengthPrefixed, 100);
        let mut prefix = Vec::new();
        write_varint(&mut prefix, 101);
        assert_eq!(
            collect(&mut r, &prefix),
            Err(FramingError::TooBig { max: 100 })
        );
        let mut r = Reassembler::new(Framing::LengthPrefixed, 100);
        assert_eq!(
            collect(&mut r, &[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(FramingError::BadLengthPrefix)
        );
    }

    #[test]
    fn breaking_stops_and_drops_the_rest() {
        let mut r = Reassembler::new(Framing::Separated, 100);
        let mut seen = 0;
        r.feed(b"a\x1eb\x1ec", &mut |_| {
            seen += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(seen, 1);
        assert_eq!(r.pending_len(), 0);
    }
}

//! The benchmark payload: building `{"seq":N,"sentAtMicros":T,"pad":"xxx…"}` padded to a requested
//! size, and scanning a received frame for its `seq` and `sentAtMicros` without parsing the JSON.
//!
//! The scan looks for the two keys independently, so it works whatever key order the server
//! re-serializes the data in, and whatever envelope (native, SignalR, Socket.IO) surrounds it.
//! MessagePack records (the SignalR MessagePack hub protocol, where the server re-encodes the
//! payload as a map) have their own scan, [`scan_msgpack`], over the encoded key strings.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

const SEQ_KEY: &str = "\"seq\":";
const SENT_AT_KEY: &str = "\"sentAtMicros\":";
/// The padding character; it never appears in the keys the scanner looks for.
const PAD_CHAR: char = 'x';
/// What closes the payload after the padding: the pad string's quote and the object's brace.
const PAYLOAD_CLOSING: &str = "\"}";

/// Microseconds since the Unix epoch on the wall clock (shared by publisher and subscribers, also
/// across processes on the same machine).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Appends the payload JSON for `seq` to `out`, padded so that the payload is `payload_bytes` long
/// (or as short as possible when the stamp alone is longer).
pub fn write_payload(out: &mut String, seq: u64, sent_at_micros: u64, payload_bytes: usize) {
    let start = out.len();
    let _ = write!(
        out,
        "{{{SEQ_KEY}{seq},{SENT_AT_KEY}{sent_at_micros},\"pad\":\""
    );
    let used = out.len() - start + PAYLOAD_CLOSING.len();
    out.extend(std::iter::repeat_n(
        PAD_CHAR,
        payload_bytes.saturating_sub(used),
    ));
    out.push_str(PAYLOAD_CLOSING);
}

/// What the scanner extracts from one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub sent_at_micros: u64,
}

/// Finds `seq` and `sentAtMicros` in a delivery frame (or one SignalR record). `None` when the
/// text is not a benchmark delivery (a pong, a confirmation, an error).
pub fn scan(text: &str) -> Option<Stamp> {
    Some(Stamp {
        seq: number_after(text, SEQ_KEY)?,
        sent_at_micros: number_after(text, SENT_AT_KEY)?,
    })
}

/// The MessagePack encodings of the keys: fixstr markers (0xa0 | length) and the UTF-8 bytes.
const SEQ_KEY_MSGPACK: &[u8] = b"\xa3seq";
const SENT_AT_KEY_MSGPACK: &[u8] = b"\xacsentAtMicros";

/// Finds `seq` and `sentAtMicros` in one MessagePack record: each key's fixstr, then its value as
/// a non-negative MessagePack integer. `None` when the record is not a benchmark delivery.
pub fn scan_msgpack(record: &[u8]) -> Option<Stamp> {
    Some(Stamp {
        seq: msgpack_uint_after(record, SEQ_KEY_MSGPACK)?,
        sent_at_micros: msgpack_uint_after(record, SENT_AT_KEY_MSGPACK)?,
    })
}

fn msgpack_uint_after(record: &[u8], key: &[u8]) -> Option<u64> {
    let start = find_bytes(record, key)? + key.len();
    let rest = &record[start..];
    let (&marker, bytes) = rest.split_first()?;
    let be = |n: usize| -> Option<u64> {
        let raw = bytes.get(..n)?;
        Some(raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let signed = |n: usize| -> Option<u64> {
        let value = be(n)?;
        // A signed encoding of a non-negative number: its sign bit is clear.
        (value >> (8 * n - 1) == 0).then_some(value)
    };
    match marker {
        0x00..=0x7f => Some(u64::from(marker)),
        0xcc => be(1),
        0xcd => be(2),
        0xce => be(4),
        0xcf => be(8),
        0xd0 => signed(1),
        0xd1 => signed(2),
        0xd2 => signed(4),
        0xd3 => signed(8),
        _ => None,
    }
}

/// Where `needle` first occurs in `haystack`: a scan for its first byte (rare in a payload padded
/// with `x`), then a comparison, much cheaper per delivery than comparing every window.
fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(offset) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The unsigned integer that follows the first occurrence of `key`, allowing whitespace between.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].trim_start_matches([' ', '\t', '\n', '\r']);
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_requested_size_and_is_valid_json() {
        let mut out = String::new();
        write_payload(&mut out, 42, 1_700_000_000_123_456, 200);
        assert_eq!(out.len(), 200);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["seq"], 42);
        assert_eq!(parsed["sentAtMicros"], 1_700_000_000_123_456u64);
    }

    #[test]
    fn payload_smaller_than_stamp_is_not_truncated() {
        let mut out = String::new();
        write_payload(&mut out, 1, 2, 5);
        assert_eq!(out, r#"{"seq":1,"sentAtMicros":2,"pad":""}"#);
    }

    #[test]
    fn scan_finds_stamp_in_native_frame() {
        let mut payload = String::new();
        write_payload(&mut payload, 9, 1234, 64);
        let frame = format!(
            r#"{{"type":"notification","data":{{"id":"a","channel":"tenant:bench:broadcast","event":"BenchEvent","data":{payload},"offset":10,"epoch":"e","timestamp":"t"}}}}"#
        );
        assert_eq!(
            scan(&frame),
            Some(Stamp {
                seq: 9,
                sent_at_micros: 1234
            })
        );
    }

    #[test]
    fn scan_handles_reordered_keys_and_whitespace() {
        let record = r#"{"type":1,"target":"BenchEvent","arguments":[{"data":{"pad":"xx","sentAtMicros": 77,"seq": 3},"offset":4}]}"#;
        assert_eq!(
            scan(record),
            Some(Stamp {
                seq: 3,
                sent_at_micros: 77
            })
        );
    }

    #[test]
    fn scan_msgpack_finds_the_stamp_however_the_numbers_are_encoded() {
        use rmpv::Value as M;
        for (seq, sent_at) in [(3u64, 1_700_000_000_123_456u64), (200, 70_000), (0, 5)] {
            let record = M::Array(vec![
                M::from(1),
                M::Map(vec![]),
                M::Nil,
                M::from("BenchEvent"),
                M::Array(vec![M::Map(vec![(
                    M::from("data"),
                    M::Map(vec![
                        (M::from("pad"), M::from("xxxx")),
                        (M::from("sentAtMicros"), M::from(sent_at)),
                        (M::from("seq"), M::from(seq)),
                    ]),
                )])]),
            ]);
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &record).unwrap();
            assert_eq!(
                scan_msgpack(&bytes),
                Some(Stamp {
                    seq,
                    sent_at_micros: sent_at
                })
            );
        }
        // Signed encodings of non-negative numbers count; negative ones do not.
        assert_eq!(
            scan_msgpack(b"\xa3seq\xd1\x01\x00\xacsentAtMicros\x07"),
            Some(Stamp {
                seq: 256,
                sent_at_micros: 7
            })
        );
        assert_eq!(scan_msgpack(b"\xa3seq\xd0\xff\xacsentAtMicros\x07"), None);
        assert_eq!(scan_msgpack(b"\x93\x03\x80\xa11"), None);
    }

    #[test]
    fn scan_rejects_frames_without_stamp() {
        assert_eq!(scan(r#"{"type":"pong"}"#), None);
        assert_eq!(
            scan(r#"{"type":"subscribed","id":1,"data":{"offset":3}}"#),
            None
        );
        assert_eq!(scan(r#"{"seq":-1,"sentAtMicros":5}"#), None);
    }
}

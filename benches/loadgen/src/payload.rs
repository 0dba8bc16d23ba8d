//! The benchmark payload: building `{"seq":N,"sentAtMicros":T,"pad":"xxx…"}` padded to a requested
//! size, and scanning a received frame for its `seq` and `sentAtMicros` without parsing the JSON.
//!
//! The scan looks for the two keys independently, so it works whatever key order the server
//! re-serializes the data in, and whatever envelope (native or SignalR) surrounds it.

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
    fn scan_rejects_frames_without_stamp() {
        assert_eq!(scan(r#"{"type":"pong"}"#), None);
        assert_eq!(
            scan(r#"{"type":"subscribed","id":1,"data":{"offset":3}}"#),
            None
        );
        assert_eq!(scan(r#"{"seq":-1,"sentAtMicros":5}"#), None);
    }
}

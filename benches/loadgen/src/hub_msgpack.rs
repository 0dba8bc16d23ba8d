//! The SignalR MessagePack hub protocol, as much as a subscriber needs: the handshake request,
//! varint-length-prefixed records in binary frames (several per frame), the `Subscribe`
//! invocation, the keep-alive ping record, and reading what a record is (a completion, a close).

use rmpv::Value as Mp;

/// Handshake request for the MessagePack hub protocol (JSON text, like every handshake).
pub const HANDSHAKE: &str = "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}";
/// `[6]` with its length prefix: the keep-alive ping record.
pub const PING_RECORD: &[u8] = &[0x02, 0x91, 0x06];

/// Hub message types read here.
const COMPLETION: i64 = 3;
const CLOSE: i64 = 7;
/// Completion result kinds.
const ERROR_RESULT: u64 = 1;
/// The longest varint length prefix.
const MAX_VARINT_LEN: usize = 5;

/// Prepends SignalR's varint length prefix to `body`.
fn framed(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + MAX_VARINT_LEN);
    let mut n = body.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

/// `[1, {}, invocationId, target, [arguments…], []]`, length-prefixed.
pub fn invocation(invocation_id: &str, target: &str, arguments: &[&str]) -> Vec<u8> {
    let record = Mp::Array(vec![
        Mp::from(1),
        Mp::Map(Vec::new()),
        Mp::from(invocation_id),
        Mp::from(target),
        Mp::Array(arguments.iter().map(|a| Mp::from(*a)).collect()),
        Mp::Array(Vec::new()),
    ]);
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &record).expect("writing to a Vec cannot fail");
    framed(body)
}

/// The records of one binary frame; a malformed or truncated prefix ends the list.
pub fn records(mut frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let mut len: usize = 0;
        let mut prefix = 0;
        loop {
            let &byte = frame.get(prefix)?;
            len |= usize::from(byte & 0x7f) << (7 * prefix);
            prefix += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if prefix >= MAX_VARINT_LEN {
                return None;
            }
        }
        let record = frame.get(prefix..prefix + len)?;
        frame = &frame[prefix + len..];
        Some(record)
    })
}

/// What a non-delivery record says.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// A completion for `invocation_id`: `Ok` or its error message.
    Completion {
        invocation_id: String,
        result: Result<(), String>,
    },
    /// The server closes the connection, with its error if any.
    Close(String),
    Other,
}

/// Reads a record that is not a delivery.
pub fn read(record: &[u8]) -> Record {
    let mut reader = record;
    let Ok(Mp::Array(items)) = rmpv::decode::read_value(&mut reader) else {
        return Record::Other;
    };
    match items.first().and_then(Mp::as_i64) {
        Some(COMPLETION) => {
            // [3, headers, invocationId, resultKind, result?]
            let invocation_id = items
                .get(2)
                .and_then(Mp::as_str)
                .unwrap_or_default()
                .to_owned();
            let result = match items.get(3).and_then(Mp::as_u64) {
                Some(ERROR_RESULT) => Err(items
                    .get(4)
                    .and_then(Mp::as_str)
                    .unwrap_or("error")
                    .to_owned()),
                _ => Ok(()),
            };
            Record::Completion {
                invocation_id,
                result,
            }
        }
        Some(CLOSE) => Record::Close(items.get(1).map(|e| e.to_string()).unwrap_or_default()),
        _ => Record::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_records_and_reads_completions() {
        let completion = |kind: u64, result: Mp| {
            let mut body = Vec::new();
            let record = Mp::Array(vec![
                Mp::from(3),
                Mp::Map(vec![]),
                Mp::from("1"),
                Mp::from(kind),
                result,
            ]);
            rmpv::encode::write_value(&mut body, &record).unwrap();
            framed(body)
        };
        let mut frame = completion(3, Mp::from("ok"));
        frame.extend(completion(1, Mp::from("already subscribed")));
        frame.extend_from_slice(PING_RECORD);
        let read: Vec<Record> = records(&frame).map(read).collect();
        assert_eq!(
            read,
            vec![
                Record::Completion {
                    invocation_id: "1".to_owned(),
                    result: Ok(())
                },
                Record::Completion {
                    invocation_id: "1".to_owned(),
                    result: Err("already subscribed".to_owned())
                },
                Record::Other,
            ]
        );
        // A truncated record ends the list instead of reading past the frame.
        assert_eq!(records(&frame[..frame.len() - 1]).count(), 2);
    }

    #[test]
    fn long_records_get_a_multi_byte_prefix() {
        let channel = "c".repeat(300);
        let record = invocation("1", "Subscribe", &[&channel]);
        assert!(
            record[0] & 0x80 != 0,
            "a 300-byte body needs two prefix bytes"
        );
        let body = records(&record).next().unwrap();
        assert_eq!(body.len(), record.len() - 2);
    }
}

//! The one payload validation: an event's `data` may be nested at most `payload.max_depth`
//! levels deep and be at most `payload.max_bytes` bytes of JSON text, whichever way it came in
//! (REST, domain endpoints, `/ws`, hub methods, the Redis ingest stream, the change feed).
//!
//! A [`Payload`] can only be made by [`PayloadLimits::check`] (or, for data whose shape the server
//! builds itself, by [`Payload::built`]), and a [`crate::envelope::Draft`] only carries a
//! `Payload`, so no way in can publish data that skipped the check. The check reads the JSON text
//! once, without building a value tree: depth is counted with a flat scan, so data nested far
//! deeper than any parser allows is refused with [`PayloadError`] rather than failing inside a
//! parser with an error that says nothing about the payload.
//!
//! Why a depth limit at all: `data` stays raw JSON text on the fan-out path, but some readers
//! parse it (the MessagePack encoding, entity fields, history pages, clients), and serde_json
//! refuses anything deeper than 128 levels. Data accepted deeper than that would be stored and
//! then fail every later reader of the channel.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::metrics::Metrics;

/// The deepest `payload.max_depth` a configuration may set. serde_json parses at most 128 levels;
/// an accepted payload is nested inside frames and envelopes (a SignalR record adds two levels,
/// an entity notification one, a domain event up to two), and must stay parseable inside every
/// one of them.
pub const MAX_CONFIGURABLE_DEPTH: usize = 100;

/// `[payload]`: the bounds every event's data must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Most levels of arrays and objects inside one another (a scalar is 0, `[1]` is 1).
    pub max_depth: usize,
    /// Most bytes of JSON text.
    pub max_bytes: usize,
}

/// Why data was refused: the one error every way in reports (`bad_payload`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("bad_payload: data is nested more than {max} levels deep (payload.max_depth)")]
    TooDeep { max: usize },
    #[error("bad_payload: data is {size} bytes, more than {max} bytes (payload.max_bytes)")]
    TooLarge { size: usize, max: usize },
}

impl PayloadError {
    /// The metric label of the limit that refused it.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::TooDeep { .. } => "depth",
            PayloadError::TooLarge { .. } => "size",
        }
    }
}

/// Event data that passed [`PayloadLimits::check`]: JSON text, never parsed again on the fan-out
/// path.
#[derive(Clone, Debug)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// Data the server builds itself from a fixed shape (presence, activity summaries, scheduler
    /// and chat events): its depth is the server's own, not a client's choice. Anything that
    /// carries JSON structure chosen outside the server goes through [`PayloadLimits::check`].
    pub fn built(value: &impl serde::Serialize) -> Self {
        Self(Arc::from(
            serde_json::value::to_raw_value(value).expect("server-built data serializes"),
        ))
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn into_raw(self) -> Arc<RawValue> {
        self.0
    }
}

#[cfg(test)]
impl Payload {
    /// A test's data, as given.
    pub(crate) fn test(text: &str) -> Self {
        Self(Arc::from(RawValue::from_string(text.to_owned()).unwrap()))
    }
}

impl PayloadLimits {
    /// The one check: `raw` within both limits, as a [`Payload`].
    pub fn check(&self, raw: impl Into<Arc<RawValue>>) -> Result<Payload, PayloadError> {
        let raw = raw.into();
        let size = raw.get().len();
        if size > self.max_bytes {
            return Err(PayloadError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        if exceeds_depth(raw.get(), self.max_depth) {
            return Err(PayloadError::TooDeep {
                max: self.max_depth,
            });
        }
        Ok(Payload(raw))
    }

    /// [`check`](Self::check), counting a refusal in `switchyard_bad_payloads_total{source,reason}`.
    pub fn check_counted(
        &self,
        raw: impl Into<Arc<RawValue>>,
        source: &'static str,
        metrics: &Metrics,
    ) -> Result<Payload, PayloadError> {
        self.check(raw).inspect_err(|e| {
            metrics
                .bad_payloads
                .with_label_values(&[source, e.reason()])
                .inc();
        })
    }

    /// Checks JSON text that has not been validated as JSON yet (a request body, a stream entry).
    pub fn check_text(
        &self,
        text: &str,
    ) -> Result<Result<Payload, PayloadError>, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Ok(self.check(raw))
    }
}

/// Whether valid JSON `text` nests arrays and objects more than `max` levels deep. A flat scan
/// (no recursion, no allocation), stopping at the first level too many; brackets inside strings
/// do not count. A string is skipped with `memchr` to its next quote or backslash rather than byte
/// by byte: event data is mostly string text, and this scan runs once per published event.
fn exceeds_depth(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = string_end(bytes, i + 1),
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The index of the quote that closes the string whose text starts at `from` (past the end if
/// it is not closed).
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[from.min(bytes.len())..]) {
        let at = from + at;
        if bytes[at] == b'"' {
            return at;
        }
        // A backslash: the byte after it is escaped, whatever it is.
        from = at + 2;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PayloadLimits = PayloadLimits {
        max_depth: 3,
        max_bytes: 64,
    };

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn depth_counts_arrays_and_objects_not_brackets_in_strings() {
        for ok in [
            "1",
            "\"[[[[[[\"",
            "[[[1]]]",
            r#"{"a":{"b":[1]}}"#,
            r#"[[["\"[[[[["]]]"#,
            "[[[]],[[]],[[]]]",
        ] {
            assert!(LIMITS.check(raw(ok)).is_ok(), "{ok}");
        }
        for deep in ["[[[[1]]]]", r#"{"a":{"b":{"c":{}}}}"#, r#"[{"a":[{}]}]"#] {
            assert_eq!(
                LIMITS.check(raw(deep)).unwrap_err(),
                PayloadError::TooDeep { max: 3 },
                "{deep}"
            );
        }
    }

    /// The string skip: escaped quotes and backslashes, brackets in long strings, a string
    /// at the very end.
    #[test]
    fn brackets_in_strings_with_escapes_do_not_count() {
        let long = format!(r#"["{}[[[[\\\"[[[[", "\\", "\"]]"]"#, "x".repeat(300));
        let limits = PayloadLimits {
            max_depth: 1,
            max_bytes: usize::MAX,
        };
        assert!(limits.check(raw(&long)).is_ok(), "{long}");
        assert!(limits.check(raw(r#""\\""#)).is_ok());
        assert!(limits.check(raw(r#"["\\", [1]]"#)).is_err());
        assert!(limits.check(raw(r#"["\"", [1]]"#)).is_err());
    }

    #[test]
    fn far_deeper_than_any_parser_allows_is_still_just_too_deep() {
        let n = 100_000;
        let text = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let limits = PayloadLimits {
            max_depth: 64,
            max_bytes: usize::MAX,
        };
        let e = limits.check_text(&text).unwrap().unwrap_err();
        assert_eq!(e.reason(), "depth");
        assert!(e.to_string().starts_with("bad_payload: "), "{e}");
    }

    #[test]
    fn size_is_the_json_text() {
        let fits = format!("\"{}\"", "x".repeat(62));
        assert!(LIMITS.check(raw(&fits)).is_ok());
        let big = format!("\"{}\"", "x".repeat(63));
        assert_eq!(
            LIMITS.check(raw(&big)).unwrap_err(),
            PayloadError::TooLarge { size: 65, max: 64 }
        );
    }

    #[test]
    fn text_that_is_not_json_is_a_parse_error_not_a_payload_error() {
        assert!(LIMITS.check_text("{nope").is_err());
        assert!(LIMITS.check_text("[1]").unwrap().is_ok());
    }
}

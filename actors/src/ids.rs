//! Identifier newtypes, validated once at the edge so the rest of the code never re-checks them.
//!
//! Every identifier that appears inside a channel name (tenant keys, user ids, order ids, …) is a
//! [`Segment`]: it may not contain `:` (the channel separator), whitespace or control characters,
//! so `tenant:{t}:customer:{u}` always parses back into the same parts.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted inside a channel name.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_SEGMENT_LEN} characters")]
    TooLong,
    #[error("must not contain ':', whitespace or control characters")]
    BadCharacter,
}

/// Checks one identifier against the segment grammar.
pub fn validate_segment(s: &str) -> Result<(), SegmentError> {
    if s.is_empty() {
        return Err(SegmentError::Empty);
    }
    if s.len() > MAX_SEGMENT_LEN {
        return Err(SegmentError::TooLong);
    }
    if s.chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(SegmentError::BadCharacter);
    }
    Ok(())
}

macro_rules! segment_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn parse(s: &str) -> Result<Self, SegmentError> {
                validate_segment(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

segment_newtype!(
    /// A tenant's key (`tenantKey` claim, `{t}` in channel names).
    TenantKey
);
segment_newtype!(
    /// A user's id (`sub` / `userId` claim).
    UserId
);
segment_newtype!(
    /// A dining session's id (`sessionId` claim, `session:{sessionId}` channel).
    SessionKey
);

/// A connection's id, unique within one node for the node's lifetime.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// This node's name in envelopes (`origin`), presence and logs.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub Arc<str>);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_reject_separator_whitespace_and_empty() {
        assert_eq!(validate_segment(""), Err(SegmentError::Empty));
        assert_eq!(validate_segment("a:b"), Err(SegmentError::BadCharacter));
        assert_eq!(validate_segment("a b"), Err(SegmentError::BadCharacter));
        assert_eq!(validate_segment("a\u{7}"), Err(SegmentError::BadCharacter));
        assert_eq!(
            validate_segment(&"x".repeat(MAX_SEGMENT_LEN + 1)),
            Err(SegmentError::TooLong)
        );
        assert!(validate_segment("user-42@example.com").is_ok());
        assert!(validate_segment("3f2b9c1e-0c4d-4b8e-9a57-1f1f2d3c4b5a").is_ok());
    }

    #[test]
    fn newtypes_deserialize_through_validation() {
        let ok: TenantKey = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok.as_str(), "acme");
        assert!(serde_json::from_str::<TenantKey>("\"ac:me\"").is_err());
    }
}

//! What the connection tolerates from its client per heartbeat interval: the inbound rate limit
//! (with a resumed connection's replay credit) and the count of bad frames. Plain state, no actor:
//! the [`ConnectionCore`](super::core::ConnectionCore) asks it and turns the answers into effects.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::codes::CloseCode;

/// What to do with one inbound data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Within the rate: its requests run.
    Within,
    /// Over the rate (counted): it is still decoded, but its requests are refused with a
    /// rate-limit error in their turn (the protocol's own records still run).
    Over,
    /// Over the rate once too often this interval (counted): close with this code, unread.
    Close(CloseCode),
}

/// The inbound rate limit of one connection.
pub(super) struct InboundLimit {
    /// `None` for a role the limit does not apply to.
    limiter: Option<DefaultDirectRateLimiter>,
    /// Frames a resumed connection may send over the rate: the rate times the time it was
    /// parked (what a compliant client can have buffered meanwhile), used up once.
    replay_credit: u64,
    violations: u32,
    max_violations: u32,
}

impl InboundLimit {
    /// `per_second` sustained and `burst` at once (each at least 1); `exempt` turns it off.
    pub(super) fn new(per_second: u32, burst: u32, max_violations: u32, exempt: bool) -> Self {
        let per_second = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
        let burst = NonZeroU32::new(burst.max(1)).expect("max(1) is non-zero");
        Self {
            limiter: (!exempt)
                .then(|| RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))),
            replay_credit: 0,
            violations: 0,
            max_violations,
        }
    }

    /// Lets the next `credit` frames over the rate through (a resumed client's flush).
    pub(super) fn grant_replay_credit(&mut self, credit: u64) {
        self.replay_credit = credit;
    }

    /// Judges one inbound data frame.
    pub(super) fn admit(&mut self) -> Admission {
        let mut limited = self.limiter.as_ref().is_some_and(|l| l.check().is_err());
        if limited && self.replay_credit > 0 {
            // What a resumed client buffered while its socket was down, at most at the allowed
            // rate: its flush is not a violation.
            self.replay_credit -= 1;
            limited = false;
        }
        if !limited {
            return Admission::Within;
        }
        self.violations += 1;
        if self.violations > self.max_violations {
            Admission::Close(CloseCode::RateLimited)
        } else {
            Admission::Over
        }
    }

    /// A new heartbeat interval: the violations so far are forgiven.
    pub(super) fn new_interval(&mut self) {
        self.violations = 0;
    }
}

/// Frames the codec could not act on, counted per heartbeat interval.
pub(super) struct BadFrames {
    count: u32,
    max: u32,
}

impl BadFrames {
    pub(super) fn new(max: u32) -> Self {
        Self { count: 0, max }
    }

    /// Counts one; true when that is one too many for this interval (close with 4400).
    pub(super) fn record(&mut self) -> bool {
        self.count += 1;
        self.count > self.max
    }

    /// A new heartbeat interval: the count starts again.
    pub(super) fn new_interval(&mut self) {
        self.count = 0;
    }
}

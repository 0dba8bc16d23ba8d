//! Resumable connections (SignalR stateful reconnect): what a connection keeps so that a client whose
//! socket dropped can continue the same connection on a new socket within the grace period, with
//! nothing lost and nothing repeated.
//!
//! While connected, every sequenced frame sent (invocations, completions) is kept in
//! [`SendBuffer`] until the client acknowledges it. When the socket drops without a close, the
//! connection parks its state ([`Parked`]) in the node's [`ParkedConnections`] under the connection
//! token. A new socket on the same token takes it back: the connection announces where it resends
//! from, resends what was not acknowledged, then resubscribes every channel from the last offset it
//! delivered, so what was published meanwhile comes from history.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::channel::ChannelName;
use crate::codec::{OutFrame, WireCodec};
use crate::envelope::StreamPosition;
use crate::identity::Identity;
use crate::ids::{ConnId, TenantKey, UserId};
use crate::tenant_group::TenantRegistry;

/// Sequenced frames sent and not yet acknowledged.
pub struct SendBuffer {
    /// The number the next sequenced frame gets (the first is 1).
    next: u64,
    frames: VecDeque<(u64, OutFrame)>,
    bytes: usize,
    limit: usize,
    /// Frames were dropped past `limit`: a resume cannot be complete any more.
    overflowed: bool,
}

fn frame_len(f: &OutFrame) -> usize {
    match f {
        OutFrame::Text(b) | OutFrame::Binary(b) => b.len(),
    }
}

impl SendBuffer {
    pub fn new(limit: usize) -> Self {
        Self {
            next: 1,
            frames: VecDeque::new(),
            bytes: 0,
            limit,
            overflowed: false,
        }
    }

    /// Keeps a sequenced frame that was just written.
    pub fn record(&mut self, frame: OutFrame) {
        self.bytes += frame_len(&frame);
        self.frames.push_back((self.next, frame));
        self.next += 1;
        while self.bytes > self.limit {
            match self.frames.pop_front() {
                Some((_, f)) => {
                    self.bytes -= frame_len(&f);
                    self.overflowed = true;
                }
                None => break,
            }
        }
    }

    /// The client has everything up to `sequence_id`.
    pub fn ack(&mut self, sequence_id: u64) {
        while let Some((id, _)) = self.frames.front() {
            if *id > sequence_id {
                break;
            }
            if let Some((_, f)) = self.frames.pop_front() {
                self.bytes -= frame_len(&f);
            }
        }
        if self.frames.is_empty() {
            // Everything dropped earlier has been acknowledged since.
            self.overflowed = false;
        }
    }

    /// Where a resend starts: the oldest unacknowledged frame, or the next one.
    pub fn resend_from(&self) -> u64 {
        self.frames.front().map_or(self.next, |(id, _)| *id)
    }

    /// The unacknowledged frames, oldest first; `None` if some were dropped past the limit.
    pub fn unacked(&self) -> Option<impl Iterator<Item = &OutFrame>> {
        (!self.overflowed).then(|| self.frames.iter().map(|(_, f)| f))
    }
}

/// A dropped connection waiting for its client.
pub struct Parked {
    pub identity: Arc<Identity>,
    pub codec: Box<dyn WireCodec>,
    pub sent: SendBuffer,
    /// Every channel with the position delivered so far (`None` if it never went live).
    pub channels: Vec<(ChannelName, Option<StreamPosition>)>,
    pub acked_in: u64,
    /// The tenant group membership the connection keeps while parked: to everyone else the user
    /// is still connected, so a resume within the grace period changes nothing in presence.
    pub membership: Option<TenantMembership>,
    /// When the socket dropped: a resume's inbound rate allowance grows with the gap.
    pub parked_at: Instant,
    /// A hub connection's own channel (`connection:{connectionId}`), kept across the resume.
    pub own_channel: Option<ChannelName>,
}

/// A parked connection's place in its tenant group (see [`Parked::membership`]).
pub struct TenantMembership {
    pub tenant: TenantKey,
    pub conn: ConnId,
}

impl TenantMembership {
    /// Gives the membership up (the parked connection expired, or a new socket took it over and
    /// joined in its own name).
    pub fn leave(self, tenants: &TenantRegistry, user: &UserId) {
        tenants.leave(&self.tenant, self.conn, user);
    }
}

/// Why a parked connection could not be taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TakeError {
    #[error("no connection is parked under this token (or its grace period ended)")]
    Missing,
    #[error("the connection parked under this token belongs to another identity")]
    NotTheirs,
}

/// The node's parked connections, by connection token.
pub struct ParkedConnections {
    parked: Mutex<HashMap<Arc<str>, (Instant, Parked)>>,
    grace: Duration,
}

impl ParkedConnections {
    pub fn new(grace: Duration) -> Self {
        Self {
            parked: Mutex::default(),
            grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, (Instant, Parked)>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `parked` for the grace period; whoever parks it calls [`ParkedConnections::expire`]
    /// once the grace period has passed.
    pub fn park(&self, token: Arc<str>, parked: Parked) {
        self.lock().insert(token, (Instant::now(), parked));
    }

    /// How long a parked connection waits for its client.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Removes the connection parked under `token` if its grace period has passed (a connection
    /// parked again under the same token since is left alone), for the caller to release.
    pub fn expire(&self, token: &str) -> Option<Parked> {
        let mut map = self.lock();
        match map.get(token) {
            Some((at, _)) if at.elapsed() >= self.grace => map.remove(token).map(|(_, p)| p),
            _ => None,
        }
    }

    /// Takes a parked connection back if it is still within the grace period and `may_take`
    /// allows it; otherwise it stays parked, untouched, for its owner.
    pub fn take_for(
        &self,
        token: &str,
        may_take: impl FnOnce(&Parked) -> bool,
    ) -> Result<Parked, TakeError> {
        let mut map = self.lock();
        match map.get(token) {
            // Expired: left for `expire`, which releases what it holds.
            Some((at, _)) if at.elapsed() >= self.grace => Err(TakeError::Missing),
            None => Err(TakeError::Missing),
            Some((_, parked)) if !may_take(parked) => Err(TakeError::NotTheirs),
            Some(_) => map
                .remove(token)
                .map(|(_, parked)| parked)
                .ok_or(TakeError::Missing),
        }
    }

    /// Whether a connection is parked under `token`.
    pub fn contains(&self, token: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|(at, _)| at.elapsed() < self.grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn f(s: &'static str) -> OutFrame {
        OutFrame::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn acks_free_the_buffer_and_resend_starts_at_the_oldest_unacked() {
        let mut b = SendBuffer::new(1000);
        assert_eq!(b.resend_from(), 1);
        for s in ["a", "b", "c"] {
            b.record(f(s));
        }
        b.ack(1);
        assert_eq!(b.resend_from(), 2);
        assert_eq!(b.unacked().unwrap().count(), 2);
        b.ack(3);
        assert_eq!(b.resend_from(), 4);
    }

    #[test]
    fn overflow_makes_a_resume_incomplete_until_caught_up() {
        let mut b = SendBuffer::new(2);
        for s in ["a", "b", "c"] {
            b.record(f(s));
        }
        assert!(b.unacked().is_none());
        b.ack(3);
        assert!(b.unacked().is_some());
    }
}

//! The connection's side of tracked events ([`crate::hub_methods`]): which keyed events it wrote
//! and has not reported yet, and the one de-duplication the seam promises — a keyed event pushed by
//! the hub methods' connect-time actions and the live event with the same key (a stored message
//! and its live delivery, racing while the connection opens) are written once, whichever comes
//! first.
//!
//! A tracked event counts as taken once it was written to the socket. (On a resumable connection
//! the client's acknowledgements would say more, but the official JavaScript client does not
//! count frames that arrive with its handshake reply, so its acknowledgements cannot name them.)
//!
//! While the connect-time actions are pending, every key written is remembered; once they are
//! applied, only the keys they pushed are kept, each until its live twin arrives (a live event
//! comes once) or the connection ends. So memory is bounded by what the handler pushed at connect,
//! plus what arrives in the short connect window (capped by [`MAX_WINDOW_KEYS`]).

use std::collections::HashSet;

use crate::hub_methods::EventKey;

/// Live keys remembered while the connect-time actions are pending, at most. Beyond it (a flood
/// during the window, or a connection whose hub methods never answer) keys are no longer
/// remembered, and a push may repeat a live event.
pub(super) const MAX_WINDOW_KEYS: usize = 4096;

/// Where the event to write comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A channel's event (live or replayed).
    Channel,
    /// A push of the hub methods' connect-time actions.
    ConnectPush,
    /// Any other push (a method's reply).
    Push,
}

/// Tracked events of one connection.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// The connect-time actions were applied (the window is over).
    connected: bool,
    /// Keys of channel events written during the window.
    live: HashSet<EventKey>,
    /// Keys the connect-time actions pushed whose live twin has not arrived.
    pushed: HashSet<EventKey>,
    /// Written, not reported yet.
    unreported: Vec<EventKey>,
}

impl Tracked {
    /// Whether to write an event with `key` from `origin` (false: its twin was written).
    pub(super) fn admit(&mut self, key: &EventKey, origin: Origin) -> bool {
        match origin {
            Origin::Channel if self.pushed.remove(key) => false,
            Origin::Channel => {
                if !self.connected && self.live.len() < MAX_WINDOW_KEYS {
                    self.live.insert(key.clone());
                }
                true
            }
            Origin::ConnectPush if self.live.contains(key) => false,
            Origin::ConnectPush => self.pushed.insert(key.clone()),
            Origin::Push => true,
        }
    }

    /// The events with `keys` were written: to report.
    pub(super) fn taken(&mut self, keys: impl IntoIterator<Item = EventKey>) {
        self.unreported.extend(keys);
    }

    /// The connect-time actions are applied: live keys need not be remembered any more.
    pub(super) fn connected(&mut self) {
        self.connected = true;
        self.live = HashSet::new();
    }

    /// The keys written since the last call, if any.
    pub(super) fn take_unreported(&mut self) -> Option<Vec<EventKey>> {
        (!self.unreported.is_empty()).then(|| std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> EventKey {
        EventKey(s.into())
    }

    #[test]
    fn a_push_and_its_live_twin_are_written_once_in_either_order() {
        let mut t = Tracked::default();
        // Live first (during the window), then the push of the same key.
        assert!(t.admit(&k("a"), Origin::Channel));
        assert!(!t.admit(&k("a"), Origin::ConnectPush));
        // Pushed first, then live (even after the window).
        assert!(t.admit(&k("b"), Origin::ConnectPush));
        t.connected();
        assert!(!t.admit(&k("b"), Origin::Channel));
        t.taken([k("a"), k("b")]);
        assert_eq!(t.take_unreported(), Some(vec![k("a"), k("b")]));
        assert_eq!(t.take_unreported(), None);
    }

    #[test]
    fn after_the_window_only_pushed_keys_are_kept_each_until_its_twin() {
        let mut t = Tracked::default();
        assert!(t.admit(&k("p"), Origin::ConnectPush));
        assert!(t.admit(&k("x"), Origin::Channel));
        t.connected();
        assert!(t.live.is_empty());
        assert!(!t.admit(&k("p"), Origin::Channel));
        assert!(t.pushed.is_empty(), "the twin arrived: forgotten");
        // Live events after the window are not remembered; other pushes are not de-duplicated.
        assert!(t.admit(&k("y"), Origin::Channel));
        assert!(t.admit(&k("y"), Origin::Push));
        assert!(t.live.is_empty());
    }

    #[test]
    fn the_window_remembers_a_bounded_number_of_live_keys() {
        let mut t = Tracked::default();
        for i in 0..MAX_WINDOW_KEYS + 10 {
            assert!(t.admit(&k(&i.to_string()), Origin::Channel));
        }
        assert_eq!(t.live.len(), MAX_WINDOW_KEYS);
    }
}

//! A connection's outbox: the bounded queue broker shards deliver events into.
//!
//! Delivering each event as its own actix message costs, per subscriber and per event, a boxed
//! envelope, a wake-up of the connection's task and a proxy call; at a 10,000-subscriber fan-out that
//! was most of the engine's time. Instead every shard appends the shared envelope to the
//! subscriber's outbox and wakes the connection's task only when no wake is outstanding, so a
//! connection that is behind takes a whole burst of events in one turn.
//!
//! The wake is not an actix message either: the connection polls its outbox as a stream
//! ([`Outbox::ready`], one [`Wake`] item per outstanding wake) and a shard wakes the task through
//! an [`AtomicWaker`]. That is one atomic handshake per wake, with no allocation and no mailbox
//! (an actix `try_send` boxes an envelope per message and can find the mailbox full).
//!
//! The outbox is what `[actors.connection] mailbox` and `max_queued_bytes` bound: a push that would
//! pass either is refused and the slow-consumer policy applies, exactly as a full mailbox did.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;

use crate::envelope::Envelope;

/// Yielded by [`Outbox::ready`] when the connection's outbox went from idle to holding events.
#[derive(Clone, Copy, Debug)]
pub struct Wake;

/// What happened to one event offered to an outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued; `wake` says whether the caller must wake the connection (none was outstanding);
    /// `queued` and `queued_bytes` are the outbox's length and bytes with this event.
    Queued {
        wake: bool,
        queued: usize,
        queued_bytes: usize,
    },
    /// The event would pass the length or byte bound; nothing was queued.
    Full,
    /// The connection has stopped.
    Closed,
}

#[derive(Debug, Default)]
struct Queue {
    /// Each event with the bytes it was counted as.
    events: VecDeque<(Arc<Envelope>, usize)>,
    bytes: usize,
    /// Under the lock with the events, so no push can land after `close` cleared them.
    closed: bool,
}

/// Shared between a connection and every broker shard that delivers to it.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// A [`Wake`] is on its way to (or being handled by) the connection.
    wake_pending: AtomicBool,
    /// Set with `wake_pending` when a push wakes the connection; taken by [`Ready`].
    signalled: AtomicBool,
    /// The connection's task, registered each time [`Ready`] is polled.
    waker: AtomicWaker,
    /// [`Outbox::close`] ran (the lock-free twin of `Queue::closed`, for [`Ready`]).
    stopped: AtomicBool,
    evicted: AtomicBool,
    /// Turns in which the connection took its events: the connection watchdog's evidence that a wake
    /// outstanding for long is stuck rather than taken again and again.
    drains: AtomicU64,
}

impl Outbox {
    /// Appends `env` (counted as `size` bytes) if the queue stays within `max_len` events and
    /// `max_bytes`. An empty queue takes any one event, otherwise one big event could never be
    /// delivered.
    pub fn push(&self, env: &Arc<Envelope>, size: usize, max_len: usize, max_bytes: usize) -> Push {
        let (queued, queued_bytes) = {
            let mut q = self.lock();
            if q.closed {
                return Push::Closed;
            }
            if !q.events.is_empty() && (q.events.len() >= max_len || q.bytes + size > max_bytes) {
                return Push::Full;
            }
            q.events.push_back((env.clone(), size));
            q.bytes += size;
            (q.events.len(), q.bytes)
        };
        let wake = !self.wake_pending.swap(true, Ordering::AcqRel);
        Push::Queued {
            wake,
            queued,
            queued_bytes,
        }
    }

    /// Wakes the connection's task: called by whoever pushed when [`Push::Queued`] said `wake`.
    pub fn wake(&self) {
        self.signalled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// A waker that does [`Outbox::wake`]. The connection hands it to its context to be woken once
    /// a turn's writes have been handed out, when it left events queued to keep one turn's writes
    /// within bounds (`connection/effects.rs`, `drain_outbox`).
    pub fn waker(self: &Arc<Self>) -> std::task::Waker {
        std::task::Waker::from(Arc::new(OutboxWaker(self.clone())))
    }

    /// The stream the connection polls for its wakes; it ends once the outbox is closed.
    pub fn ready(self: &Arc<Self>) -> Ready {
        Ready(self.clone())
    }

    /// The connection saw its wake but leaves the events queued for now (it drains them itself
    /// later): the next push wakes it again, and no wake stays outstanding meanwhile, which the
    /// connection watchdog would take for a connection that cannot run.
    pub fn rearm_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Moves every queued event into `into`, oldest first, and frees their bytes. Re-arms the wake
    /// first, so an event pushed while the connection is busy with this batch wakes it again.
    pub fn take_all(&self, into: &mut Vec<Arc<Envelope>>) {
        self.take_up_to(into, usize::MAX);
    }

    /// Moves queued events into `into`, oldest first, as long as their bytes stay within
    /// `max_bytes` (at least one event when any is queued), and frees their bytes; true if events
    /// are left. Re-arms the wake first, as [`take_all`](Self::take_all) does.
    pub fn take_up_to(&self, into: &mut Vec<Arc<Envelope>>, max_bytes: usize) -> bool {
        self.wake_pending.store(false, Ordering::Release);
        self.drains.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        if q.bytes <= max_bytes {
            into.extend(q.events.drain(..).map(|(env, _)| env));
            q.bytes = 0;
            return false;
        }
        let mut taken = 0;
        while let Some((_, size)) = q.events.front() {
            if taken > 0 && taken + size > max_bytes {
                break;
            }
            taken += size;
            let (env, _) = q.events.pop_front().expect("checked");
            into.push(env);
        }
        q.bytes -= taken;
        !q.events.is_empty()
    }

    /// Whether a wake is on its way to the connection (or the connection is handling it).
    pub fn wake_outstanding(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire)
    }

    /// How many times the connection has taken its events.
    pub fn drains(&self) -> u64 {
        self.drains.load(Ordering::Relaxed)
    }

    /// Events waiting for the connection.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Marks the connection for disconnection; true the first time only.
    pub fn evict(&self) -> bool {
        !self.evicted.swap(true, Ordering::AcqRel)
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// The connection stopped: later pushes answer [`Push::Closed`] and what was queued is freed.
    pub fn close(&self) {
        {
            let mut q = self.lock();
            q.closed = true;
            q.events.clear();
            q.bytes = 0;
        }
        self.stopped.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue inconsistent (push and drain are
        // single operations), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`Outbox::waker`]'s waker.
struct OutboxWaker(Arc<Outbox>);

impl std::task::Wake for OutboxWaker {
    fn wake(self: Arc<Self>) {
        self.0.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake();
    }
}

/// The connection's side of the wake: yields one [`Wake`] per [`Outbox::wake`] since the last
/// poll (several wakes before the connection runs are one), and ends when the outbox is closed.
#[derive(Debug)]
pub struct Ready(Arc<Outbox>);

impl Stream for Ready {
    type Item = Wake;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Wake>> {
        let outbox = &self.0;
        // Register before checking, so a wake between the check and the return is not lost.
        outbox.waker.register(cx.waker());
        if outbox.signalled.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(Wake));
        }
        if outbox.stopped.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;
    use crate::envelope::{Draft, EventName};
    use crate::ids::NodeId;

    fn event() -> Arc<Envelope> {
        let draft = Draft::new(
            ChannelName::parse("user:u").unwrap(),
            EventName::parse("E").unwrap(),
            crate::payload::Payload::test("1"),
        );
        Arc::new(Envelope::new(
            draft,
            1,
            Arc::from("e"),
            NodeId(Arc::from("n")),
        ))
    }

    fn queued(wake: bool, queued: usize, queued_bytes: usize) -> Push {
        Push::Queued {
            wake,
            queued,
            queued_bytes,
        }
    }

    #[test]
    fn wakes_once_per_burst_and_rearms_after_take() {
        let o = Outbox::default();
        let e = event();
        assert_eq!(o.push(&e, 10, 8, 1000), queued(true, 1, 10));
        assert_eq!(o.push(&e, 10, 8, 1000), queued(false, 2, 20));
        let mut batch = Vec::new();
        o.take_all(&mut batch);
        assert_eq!((batch.len(), o.queued_bytes(), o.len()), (2, 0, 0));
        assert_eq!(o.push(&e, 10, 8, 1000), queued(true, 1, 10));
    }

    #[test]
    fn a_wake_left_for_later_is_not_outstanding_and_the_next_push_wakes_again() {
        let o = Outbox::default();
        let e = event();
        assert_eq!(o.push(&e, 10, 8, 1000), queued(true, 1, 10));
        assert!(o.wake_outstanding());
        o.rearm_wake();
        assert!(
            !o.wake_outstanding(),
            "nothing for the watchdog to take for a stall"
        );
        assert_eq!(o.len(), 1, "the event stays queued");
        assert_eq!(o.push(&e, 10, 8, 1000), queued(true, 2, 20));
    }

    #[test]
    fn bounds_length_and_bytes_but_admits_one_big_event() {
        let o = Outbox::default();
        let e = event();
        assert!(matches!(o.push(&e, 600, 2, 1000), Push::Queued { .. }));
        assert_eq!(o.push(&e, 600, 2, 1000), Push::Full, "bytes");
        assert!(matches!(o.push(&e, 400, 2, 1000), Push::Queued { .. }));
        assert_eq!(o.push(&e, 1, 2, 1000), Push::Full, "length");
        let mut batch = Vec::new();
        o.take_all(&mut batch);
        assert!(
            matches!(o.push(&e, 5000, 2, 1000), Push::Queued { .. }),
            "an empty queue takes any one event"
        );
    }

    #[test]
    fn closed_outbox_refuses_and_frees() {
        let o = Outbox::default();
        let e = event();
        o.push(&e, 10, 8, 1000);
        o.close();
        assert_eq!((o.len(), o.queued_bytes()), (0, 0));
        assert_eq!(o.push(&e, 10, 8, 1000), Push::Closed);
    }

    #[test]
    fn ready_yields_once_per_outstanding_wake_and_ends_when_closed() {
        use futures_util::{FutureExt, StreamExt};
        let o = Arc::new(Outbox::default());
        let mut ready = o.ready();
        assert!(ready.next().now_or_never().is_none(), "no wake yet");
        let e = event();
        for _ in 0..3 {
            o.push(&e, 10, 8, 1000);
            // Woken each time, as if three shards had each found the outbox idle.
            o.wake();
        }
        assert!(matches!(ready.next().now_or_never(), Some(Some(Wake))));
        assert!(
            ready.next().now_or_never().is_none(),
            "three pushes before the connection ran are one wake"
        );
        let mut batch = Vec::new();
        o.take_all(&mut batch);
        if let Push::Queued { wake: true, .. } = o.push(&e, 10, 8, 1000) {
            o.wake();
        }
        assert!(matches!(ready.next().now_or_never(), Some(Some(Wake))));
        o.close();
        assert!(matches!(ready.next().now_or_never(), Some(None)));
    }

    #[test]
    fn a_bounded_take_leaves_what_does_not_fit_and_frees_what_it_took() {
        let outbox = Outbox::default();
        for _ in 0..5 {
            outbox.push(&event(), 10, 100, 1_000);
        }
        let mut taken = Vec::new();
        assert!(outbox.take_up_to(&mut taken, 25), "three left");
        assert_eq!(taken.len(), 2);
        assert_eq!((outbox.len(), outbox.queued_bytes()), (3, 30));
        assert!(!outbox.wake_outstanding(), "the next push wakes again");
        taken.clear();
        assert!(
            outbox.take_up_to(&mut taken, 5),
            "one event even over the bound"
        );
        assert_eq!(taken.len(), 1);
        taken.clear();
        assert!(!outbox.take_up_to(&mut taken, 20), "the rest fits");
        assert_eq!(
            (taken.len(), outbox.len(), outbox.queued_bytes()),
            (2, 0, 0)
        );
    }

    #[test]
    fn eviction_is_reported_once() {
        let o = Outbox::default();
        assert!(o.evict());
        assert!(!o.evict());
        assert!(o.is_evicted());
    }
}

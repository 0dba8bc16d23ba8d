//! The node's shutdown, in one place: the signal every long-lived task listens to, the roll of
//! tasks the node must see finish before it has stopped, and the threads the node started.
//!
//! The shape is mini-redis's (a signal to every handler, then wait until every handler is gone),
//! in three phases the starter (`AppHandle::shutdown` in `src/startup.rs`) runs in order:
//!
//! 1. [`ShutdownController::begin`]: every [`Shutdown`] sees the signal. Connections close with 1012;
//!    the tasks that hold work (the connection scheduler, the change-feed relay, the admin reload)
//!    finish it and end.
//! 2. [`ShutdownController::wait_for_holders`]: returns once every handle taken with
//!    [`ShutdownController::hold`] has been dropped. A holder keeps its handle until it has
//!    stopped — the change-feed listener until its lease is released — so "no holder left" means
//!    "nothing of the node still runs on the start-up thread".
//! 3. [`ShutdownController::stop_threads`]: stops the threads the node started for itself
//!    ([`ShutdownController::spawn_thread`]: the activity recorder, the Redis bridge, the broker
//!    shards, the connection watchdog) and joins each. They go last because phases 1 and 2 still
//!    publish through them.
//!
//! The signal is a `watch` channel, not mini-redis's broadcast: a handle taken after the signal
//! (a connection upgraded in that very instant) sees it at once instead of waiting for a message it
//! missed. Holders are named so that a shutdown that waits too long can say for whom.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle};
use tokio::sync::watch;

/// Who still holds a handle: names by ticket (a name may hold several).
type Roll = BTreeMap<u64, String>;

/// The starter's side: sends the signal, hands out [`Shutdown`] handles, owns the node's threads.
pub struct ShutdownController {
    /// Turns `true` once, in [`ShutdownController::begin`].
    signal: watch::Sender<bool>,
    /// Every handle taken with [`ShutdownController::hold`] and not dropped yet.
    holders: Arc<watch::Sender<Roll>>,
    next_ticket: AtomicU64,
    /// The node's own threads, in start order; emptied by [`ShutdownController::stop_threads`].
    threads: Mutex<Vec<NodeThread>>,
    /// Threads whose event loop has not ended yet (counted down on the thread itself).
    running_threads: Arc<AtomicUsize>,
}

/// One thread the node started.
struct NodeThread {
    name: String,
    arbiter: Arbiter,
}

/// A task's side: tells it that the node is shutting down. Taken with
/// [`ShutdownController::hold`], it also keeps the node's shutdown waiting until it is dropped.
pub struct Shutdown {
    signal: watch::Receiver<bool>,
    /// Removes its name from the roll when dropped; `None` for listeners nobody waits for.
    _held: Option<Held>,
}

/// A name on the roll, struck off when dropped.
struct Held {
    ticket: u64,
    holders: Arc<watch::Sender<Roll>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holders.send_modify(|roll| {
            roll.remove(&self.ticket);
        });
    }
}

/// Counts a node thread down when its event loop has ended and dropped what it ran.
struct ThreadAlive(Arc<AtomicUsize>);

impl Drop for ThreadAlive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for ShutdownController {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownController {
    pub fn new() -> Self {
        Self {
            signal: watch::channel(false).0,
            holders: Arc::new(watch::channel(Roll::new()).0),
            next_ticket: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            running_threads: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A handle for a task the shutdown does not wait for (a session: the HTTP server drains
    /// those).
    pub fn listen(&self) -> Shutdown {
        Shutdown {
            signal: self.signal.subscribe(),
            _held: None,
        }
    }

    /// A handle for a task the shutdown waits for: the task keeps it until it has stopped.
    pub fn hold(&self, name: impl Into<String>) -> Shutdown {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let name = name.into();
        self.holders.send_modify(|roll| {
            roll.insert(ticket, name);
        });
        Shutdown {
            signal: self.signal.subscribe(),
            _held: Some(Held {
                ticket,
                holders: self.holders.clone(),
            }),
        }
    }

    /// Phase 1: tells every handle that the node is shutting down.
    pub fn begin(&self) {
        self.signal.send_replace(true);
    }

    /// Whether [`ShutdownController::begin`] was called.
    pub fn has_begun(&self) -> bool {
        *self.signal.borrow()
    }

    /// The names of the holders still running.
    pub fn holders(&self) -> Vec<String> {
        self.holders.borrow().values().cloned().collect()
    }

    /// Phase 2: waits until every holder has dropped its handle, for at most `at_most`. Returns
    /// the names of those still running when it gave up (empty: all stopped).
    pub async fn wait_for_holders(&self, at_most: Duration) -> Vec<String> {
        let mut roll = self.holders.subscribe();
        // The sender lives in `self`, so `wait_for` can only end by its condition or the timeout.
        let all_gone = roll.wait_for(|roll| roll.is_empty());
        let in_time = tokio::time::timeout(at_most, all_gone).await.is_ok();
        if in_time {
            Vec::new()
        } else {
            self.holders()
        }
    }

    /// Starts a thread the node owns (an actix arbiter), stopped and joined by
    /// [`ShutdownController::stop_threads`].
    pub fn spawn_thread(&self, name: impl Into<String>) -> ArbiterHandle {
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        self.running_threads.fetch_add(1, Ordering::AcqRel);
        let alive = ThreadAlive(self.running_threads.clone());
        // Never resolves: dropped with the thread's event loop, which is what it counts.
        handle.spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        });
        self.lock_threads().push(NodeThread {
            name: name.into(),
            arbiter,
        });
        handle
    }

    /// Threads started with [`ShutdownController::spawn_thread`] whose event loop still runs.
    pub fn threads_running(&self) -> usize {
        self.running_threads.load(Ordering::Acquire)
    }

    /// Phase 3: stops every thread the node started, then joins each (off the async thread: a
    /// join blocks). Actors on them are dropped with their thread, without further messages.
    pub async fn stop_threads(&self) {
        let threads = std::mem::take(&mut *self.lock_threads());
        for t in &threads {
            t.arbiter.stop();
        }
        for NodeThread { name, arbiter } in threads {
            match tokio::task::spawn_blocking(move || arbiter.join()).await {
                Ok(Ok(())) => log::debug!("thread {name} stopped"),
                Ok(Err(_)) => log::warn!("thread {name} panicked before it stopped"),
                Err(e) => log::warn!("thread {name} could not be joined: {e}"),
            }
        }
    }

    fn lock_threads(&self) -> MutexGuard<'_, Vec<NodeThread>> {
        // A panic while holding the list cannot leave it half-written: a push or a take.
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ShutdownController {
    /// A node dropped without its shutdown sequence still stops its threads (without joining:
    /// a drop must not block).
    fn drop(&mut self) {
        for t in self.lock_threads().iter() {
            t.arbiter.stop();
        }
    }
}

impl Shutdown {
    /// Whether the node is shutting down.
    pub fn is_shutdown(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves once the node is shutting down (at once if it already is, or if the node is
    /// gone). Cancel-safe.
    pub async fn recv(&mut self) {
        let _ = self.signal.wait_for(|down| *down).await;
    }

    /// A future that resolves like [`Shutdown::recv`] but borrows nothing, for an actor that keeps
    /// this handle in its own state and waits in a spawned future.
    pub fn signalled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut signal = self.signal.clone();
        async move {
            let _ = signal.wait_for(|down| *down).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn waits_for_every_holder_and_names_the_late_ones() {
        let controller = ShutdownController::new();
        let mut relay = controller.hold("relay");
        let scheduler = controller.hold("scheduler");
        let listener = controller.listen();
        assert!(!listener.is_shutdown());
        controller.begin();
        relay.recv().await;
        assert!(listener.is_shutdown() && scheduler.is_shutdown());
        drop(relay);
        let late = controller.wait_for_holders(Duration::from_millis(20)).await;
        assert_eq!(late, ["scheduler"]);
        drop(scheduler);
        assert!(controller
            .wait_for_holders(Duration::from_millis(20))
            .await
            .is_empty());
    }

    #[actix::test]
    async fn a_handle_taken_after_the_signal_sees_it() {
        let controller = ShutdownController::new();
        controller.begin();
        let mut late = controller.listen();
        assert!(late.is_shutdown());
        late.recv().await;
        controller.hold("late task").signalled().await;
    }

    #[actix::test]
    async fn threads_are_stopped_and_joined() {
        let controller = ShutdownController::new();
        let a = controller.spawn_thread("a");
        controller.spawn_thread("b");
        assert_eq!(controller.threads_running(), 2);
        controller.stop_threads().await;
        assert_eq!(controller.threads_running(), 0);
        assert!(!a.spawn(async {}), "the thread no longer takes work");
    }
}

//! The connection watchdog: one actor per node, on its own thread, that shuts the connections of
//! connection actors that cannot write.
//!
//! A connection actor ([`super::socket_context`]) runs only when the HTTP layer polls its response body, and the h1
//! dispatcher stops polling it while its write buffer is full and the socket takes nothing: when
//! a client stops reading, its connection actor is frozen. Its heartbeat, its [`Wake`](crate::outbox::Wake)
//! and any close it would send wait for the client to read again, while the broker keeps filling
//! (and, under policy `disconnect`, evicting) its outbox. So the slow-consumer policy and the
//! heartbeat timeout are enforced from here, outside the connection actor.
//!
//! Each connection actor shares a [`Pulse`] with the watchdog ([`Watch`], sent from `started()`). Nothing
//! on the fan-out path reads a clock: the connection actor bumps counters (its heartbeat turns, its inbound
//! frames; its outbox counts its drains) and the watchdog, ticking [`TICKS_PER_WRITE_TIMEOUT`]
//! times per `session.write_timeout_ms`, notes when it last saw each change. A session is
//! **stalled** when a wake has been outstanding (no drain) for `write_timeout`, or when it has not
//! run its heartbeat for `heartbeat_interval + write_timeout`. The watchdog then decides the
//! reason (`slow_consumer` if its outbox was evicted, `heartbeat_timeout` if the client was also
//! silent past `client_timeout`, otherwise `write_timeout`), counts it in
//! `switchyard_disconnects_total{reason}` (and `switchyard_slow_consumer_disconnects_total`), logs
//! it, and resets the TCP connection ([`ConnSocket::abort`]): a close frame cannot get out of a
//! socket that takes nothing.
//!
//! A connection actor that closed itself (or stopped) but whose connection is still open after
//! `write_timeout`, its close frame stuck behind unsent data, is reset too, without counting the
//! close again. Exactly one side counts a close: the connection actor's `close_with` and the watchdog both
//! go through [`Pulse`]'s state (open → closing, or open → reset), and only the one that moves it
//! counts. The watchdog forgets a pulse once its connection actor stopped and its connection is gone.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::conn_socket::{AbortError, Aborted, ConnSocket};
use crate::codes::StallReason;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Watchdog ticks per write timeout: a stall is acted on between 1 and 1.25 times the timeout
/// after it began, and a tick costs a few atomic loads per connection actor.
pub const TICKS_PER_WRITE_TIMEOUT: u32 = 4;

/// The shortest tick: a tiny configured write timeout must not spin the watchdog's thread.
const MIN_TICK: Duration = Duration::from_millis(1);

const OPEN: u8 = 0;
/// The connection actor closed itself and counted the close.
const CLOSING: u8 = 1;
/// The watchdog reset the connection and counted the close.
const RESET: u8 = 2;

/// What a connection actor and the watchdog share: evidence that the connection actor runs.
#[derive(Debug)]
pub struct Pulse {
    outbox: Arc<Outbox>,
    /// Heartbeat turns the connection actor ran.
    turns: AtomicU64,
    /// Frames heard from the client.
    heard: AtomicU64,
    state: AtomicU8,
    stopped: AtomicBool,
}

impl Pulse {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self {
            outbox,
            turns: AtomicU64::new(0),
            heard: AtomicU64::new(0),
            state: AtomicU8::new(OPEN),
            stopped: AtomicBool::new(false),
        }
    }

    /// The connection actor ran its heartbeat.
    pub fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection actor heard a frame from the client.
    pub fn heard(&self) {
        self.heard.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection actor is closing itself; true if it is the one to count the close (false when the
    /// watchdog already reset the connection and counted it).
    pub fn begin_close(&self) -> bool {
        self.state
            .compare_exchange(OPEN, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The connection actor stopped (its connection may still be flushing).
    pub fn stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Whether the watchdog reset this connection actor's connection.
    pub fn was_reset(&self) -> bool {
        self.state.load(Ordering::Acquire) == RESET
    }

    fn begin_reset(&self) -> bool {
        self.state
            .compare_exchange(OPEN, RESET, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn is_winding_down(&self) -> bool {
        self.state.load(Ordering::Acquire) != OPEN || self.stopped.load(Ordering::Acquire)
    }
}

/// Sent by a connection actor from `started()`: watch it until it stopped and its connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub pulse: Arc<Pulse>,
    pub socket: ConnSocket,
    /// The connection actor's log context (connection, tenant, user, protocol).
    pub who: String,
}

/// The timers the watchdog judges by (configuration `[session]`).
#[derive(Clone, Copy, Debug)]
pub struct WatchdogSettings {
    pub write_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
}

/// What the watchdog has seen of one connection actor, as ages at this tick.
#[derive(Clone, Copy, Debug, Default)]
struct Ages {
    /// How long a wake has been outstanding with no drain, if one is.
    wake: Option<Duration>,
    /// Since the connection actor last ran (a heartbeat turn or a drain).
    turn: Duration,
    /// Since the client was last heard.
    silent: Duration,
    /// Since the connection actor was first seen closing or stopped, if it is.
    winding_down: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    /// The connection actor cannot run: reset the connection and count the close.
    Stalled(StallReason),
    /// The connection actor closed or stopped, but its connection is still open: reset it.
    Lingering,
}

fn judge(a: &Ages, evicted: bool, s: &WatchdogSettings) -> Verdict {
    if let Some(age) = a.winding_down {
        return if age >= s.write_timeout {
            Verdict::Lingering
        } else {
            Verdict::Fine
        };
    }
    let wake_stuck = a.wake.is_some_and(|age| age >= s.write_timeout);
    let frozen = a.turn >= s.heartbeat_interval + s.write_timeout;
    if !(wake_stuck || frozen) {
        Verdict::Fine
    } else if evicted {
        Verdict::Stalled(StallReason::SlowConsumer)
    } else if a.silent >= s.client_timeout {
        Verdict::Stalled(StallReason::HeartbeatTimeout)
    } else {
        Verdict::Stalled(StallReason::WriteTimeout)
    }
}

/// One watched connection actor and what the watchdog last saw of it.
struct Watched {
    watch: Watch,
    turns: u64,
    drains: u64,
    heard: u64,
    turn_at: Instant,
    heard_at: Instant,
    wake_since: Option<Instant>,
    winding_down_since: Option<Instant>,
    /// The connection was reset (or could not be); nothing more to do but wait for the stop.
    done: bool,
}

impl Watched {
    fn new(watch: Watch, now: Instant) -> Self {
        let p = &watch.pulse;
        Self {
            turns: p.turns.load(Ordering::Relaxed),
            drains: p.outbox.drains(),
            heard: p.heard.load(Ordering::Relaxed),
            turn_at: now,
            heard_at: now,
            wake_since: None,
            winding_down_since: None,
            done: false,
            watch,
        }
    }

    /// Takes this tick's observations and returns the ages they give.
    fn observe(&mut self, now: Instant) -> Ages {
        let p = &self.watch.pulse;
        let (turns, drains, heard) = (
            p.turns.load(Ordering::Relaxed),
            p.outbox.drains(),
            p.heard.load(Ordering::Relaxed),
        );
        if (turns, drains) != (self.turns, self.drains) {
            (self.turns, self.drains, self.turn_at) = (turns, drains, now);
            self.wake_since = None;
        }
        if heard != self.heard {
            (self.heard, self.heard_at) = (heard, now);
        }
        if p.outbox.wake_outstanding() {
            self.wake_since.get_or_insert(now);
        } else {
            self.wake_since = None;
        }
        if p.is_winding_down() {
            self.winding_down_since.get_or_insert(now);
        }
        Ages {
            wake: self.wake_since.map(|t| now - t),
            turn: now - self.turn_at,
            silent: now - self.heard_at,
            winding_down: self.winding_down_since.map(|t| now - t),
        }
    }
}

/// The node's connection actor watchdog (see the module docs).
pub struct ConnectionWatchdog {
    settings: WatchdogSettings,
    metrics: Arc<Metrics>,
    watched: Vec<Watched>,
}

impl ConnectionWatchdog {
    pub fn new(settings: WatchdogSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            metrics,
            watched: Vec::new(),
        }
    }

    /// Starts the watchdog on `thread`, which must be a thread of its own, so nothing a connection actor
    /// waits for can hold it.
    pub fn start_on(
        thread: &ArbiterHandle,
        settings: WatchdogSettings,
        metrics: Arc<Metrics>,
    ) -> Addr<Self> {
        Self::start_in_arbiter(thread, move |_| Self::new(settings, metrics))
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let (settings, metrics) = (self.settings, &self.metrics);
        self.watched.retain_mut(|w| {
            let p = w.watch.pulse.clone();
            if p.stopped.load(Ordering::Acquire) && !w.watch.socket.is_open() {
                return false;
            }
            let ages = w.observe(now);
            if w.done {
                return true;
            }
            match judge(&ages, p.outbox.is_evicted(), &settings) {
                Verdict::Fine => {}
                Verdict::Stalled(reason) => {
                    // The connection actor may have closed itself this very moment; then it counted.
                    if p.begin_reset() {
                        w.done = true;
                        reset_stalled(w, reason, &ages, metrics);
                    }
                }
                Verdict::Lingering => {
                    w.done = true;
                    reset_lingering(w, metrics);
                }
            }
            true
        });
    }
}

fn reset_stalled(w: &Watched, reason: StallReason, ages: &Ages, metrics: &Metrics) {
    metrics
        .disconnects
        .with_label_values(&[reason.label()])
        .inc();
    if reason == StallReason::SlowConsumer {
        metrics.slow_consumer_disconnects.inc();
    }
    metrics
        .connection_resets
        .with_label_values(&["stalled"])
        .inc();
    let outbox = &w.watch.pulse.outbox;
    let outcome = match w.watch.socket.abort() {
        Ok(_) => "connection reset".to_owned(),
        Err(e) => format!("could not reset the connection: {e}"),
    };
    log::info!(
        "{} peer={} stalled ({}): wake outstanding {:?}, last turn {:?} ago, client silent {:?}, \
         {} events ({} bytes) queued; {outcome}",
        w.watch.who,
        peer(&w.watch.socket),
        reason.label(),
        ages.wake,
        ages.turn,
        ages.silent,
        outbox.len(),
        outbox.queued_bytes(),
    );
}

fn reset_lingering(w: &Watched, metrics: &Metrics) {
    let peer = peer(&w.watch.socket);
    match w.watch.socket.abort() {
        Ok(Aborted::Reset) => {
            metrics
                .connection_resets
                .with_label_values(&["closing"])
                .inc();
            log::info!(
                "{} peer={peer} still held data the client had not taken after the session ended \
                 (its close could not be written); connection reset",
                w.watch.who
            );
        }
        Ok(Aborted::Closed) => log::debug!(
            "{} peer={peer} took everything after the session ended; closed",
            w.watch.who
        ),
        // Closed meanwhile, as it should have been.
        Err(AbortError::Closed) => {}
        Err(e) => log::warn!(
            "{} peer={peer} still open after the session ended; {e}",
            w.watch.who
        ),
    }
}

fn peer(socket: &ConnSocket) -> String {
    socket
        .peer()
        .map_or_else(|| "-".to_owned(), |p| p.to_string())
}

impl Actor for ConnectionWatchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick = (self.settings.write_timeout / TICKS_PER_WRITE_TIMEOUT).max(MIN_TICK);
        ctx.run_interval(tick, |act, ctx| {
            act.tick();
            // The node is gone (and with it every connection actor): so is the watchdog and its thread.
            if !ctx.connected() && act.watched.is_empty() {
                ctx.stop();
                Arbiter::current().stop();
            }
        });
    }
}

impl Handler<Watch> for ConnectionWatchdog {
    type Result = ();

    fn handle(&mut self, watch: Watch, _: &mut Self::Context) {
        self.watched.push(Watched::new(watch, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: WatchdogSettings = WatchdogSettings {
        write_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(15),
        client_timeout: Duration::from_secs(30),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn running() -> Ages {
        Ages {
            wake: None,
            turn: secs(1),
            silent: secs(1),
            winding_down: None,
        }
    }

    #[test]
    fn a_session_that_takes_its_wakes_is_fine() {
        let a = Ages {
            wake: Some(secs(4)),
            ..running()
        };
        assert_eq!(judge(&a, false, &S), Verdict::Fine);
        // Evicted but still running: it closes itself with 4000 on its outstanding wake.
        assert_eq!(judge(&a, true, &S), Verdict::Fine);
    }

    #[test]
    fn a_wake_outstanding_past_the_write_timeout_is_a_stall_with_the_right_reason() {
        let stuck = Ages {
            wake: Some(secs(5)),
            ..running()
        };
        let r = |a: &Ages, evicted| judge(a, evicted, &S);
        assert_eq!(r(&stuck, true), Verdict::Stalled(StallReason::SlowConsumer));
        assert_eq!(
            r(&stuck, false),
            Verdict::Stalled(StallReason::WriteTimeout)
        );
        let silent = Ages {
            silent: secs(30),
            ..stuck
        };
        assert_eq!(
            r(&silent, true),
            Verdict::Stalled(StallReason::SlowConsumer),
            "eviction decides first"
        );
        assert_eq!(
            r(&silent, false),
            Verdict::Stalled(StallReason::HeartbeatTimeout)
        );
    }

    #[test]
    fn a_session_without_events_stalls_when_its_heartbeat_stops() {
        let idle = Ages {
            turn: secs(19),
            silent: secs(40),
            ..running()
        };
        assert_eq!(judge(&idle, false, &S), Verdict::Fine);
        let frozen = Ages {
            turn: secs(20),
            ..idle
        };
        assert_eq!(
            judge(&frozen, false, &S),
            Verdict::Stalled(StallReason::HeartbeatTimeout)
        );
    }

    #[test]
    fn a_close_gets_the_write_timeout_to_leave_and_is_never_counted_here() {
        let closing = Ages {
            wake: Some(secs(60)),
            turn: secs(60),
            winding_down: Some(secs(4)),
            ..running()
        };
        assert_eq!(judge(&closing, true, &S), Verdict::Fine);
        let stuck = Ages {
            winding_down: Some(secs(5)),
            ..closing
        };
        assert_eq!(judge(&stuck, true, &S), Verdict::Lingering);
    }

    #[test]
    fn only_one_side_counts_a_close() {
        let p = Pulse::new(Arc::default());
        assert!(p.begin_reset());
        assert!(!p.begin_close(), "the watchdog counted it");
        assert!(p.was_reset());
        let p = Pulse::new(Arc::default());
        assert!(p.begin_close());
        assert!(!p.begin_reset(), "the session counted it");
    }
}

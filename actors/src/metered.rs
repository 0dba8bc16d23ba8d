//! Measured mailboxes: how full each actor kind's mailbox is, how often it was full, how many
//! messages it handled and how long each took.
//!
//! actix does not expose a mailbox's length, so every sender of a measured kind goes through
//! [`Metered`] (an address) or [`MeteredRecipient`] (a recipient): the message travels wrapped in
//! [`Counted`], whose ticket adds one to its [`Meter`]'s depth when sent and takes it off when the
//! message is dropped — after its handler ran, or unhandled when the actor is gone or a `send`
//! timed out. So depth = messages waiting plus the one being handled. Each actor declares
//! [`metered_actor!`] once, which handles `Counted<M>` with its own `Handler<M>`, timing the
//! handler (the synchronous part: a handler returning a future is timed until it returns it).
//!
//! A message is counted as meeting a full mailbox when actix refused its `try_send` (it is then
//! dropped or retried by its sender), or, sent to wait for room (`send`, `do_send`), when its
//! actor already had `mailbox` (the kind's live capacity) messages waiting or in hand.
//!
//! Cost: one relaxed `fetch_add` and one load (plus a `fetch_max` on a new peak) per send, an
//! `Arc` clone, and two clock reads per handled message. Only kinds whose messages are per publish
//! or rarer are measured this way (broker shards see one `Publish`/`Relay` per event, not per
//! delivery); sessions are measured from their outboxes, which already know their lengths, summed
//! when a sample or an admin request reads them — nothing is added per delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender, ToEnvelope};
use actix::prelude::*;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use prometheus::{Opts, Registry};

use crate::mailbox::{ActorKind, ActorLimits};

/// Buckets for the time one message takes its handler, in seconds: microseconds to a second.
const HANDLE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// The instance label of kinds that run one actor per node (or whose actors share one meter).
pub const SINGLE_INSTANCE: &str = "0";

/// The instance label of the sessions' meter: one for all connections (connections would make
/// an unbounded label).
pub const SESSIONS_INSTANCE: &str = "all";

/// One actor's (or one group of actors') mailbox figures. Lock-free.
pub struct Meter {
    kind: ActorKind,
    instance: String,
    depth: AtomicI64,
    peak: AtomicI64,
    handled: IntCounter,
    full_instance: IntCounter,
    /// `switchyard_mailbox_full_total{actor}`: the kind's count, shared with sessions' outboxes.
    full_kind: IntCounter,
    seconds: Histogram,
    limits: Option<Arc<ActorLimits>>,
}

/// One meter's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterReading {
    pub instance: String,
    pub queue_depth: i64,
    pub peak_queue_depth: i64,
    pub handled: u64,
    pub mailbox_full: u64,
    /// Mean time in the handler, in milliseconds (`None` before the first message).
    pub mean_handle_millis: Option<f64>,
}

impl Meter {
    pub fn kind(&self) -> ActorKind {
        self.kind
    }

    /// A message is on its way: one more waiting. A message that will wait for room (`send`,
    /// `do_send`) counts a full mailbox when `mailbox` messages are already there; a `try_send`
    /// counts one only if actix refuses it.
    fn enqueued(&self, waits: bool) {
        let before = self.depth.fetch_add(1, Ordering::Relaxed);
        let now = before + 1;
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        if let (true, Some(limits)) = (waits, &self.limits) {
            if before >= limits.get(self.kind).mailbox() as i64 {
                self.full();
            }
        }
    }

    fn full(&self) {
        self.full_instance.inc();
        self.full_kind.inc();
    }

    /// Sets the depth (sessions: their outboxes, summed when read; their peak is the deepest
    /// single outbox, given by [`Meter::observe_peak`]).
    pub fn set_depth(&self, depth: i64) {
        self.depth.store(depth, Ordering::Relaxed);
    }

    /// Raises the peak to `depth` if higher (sessions: the deepest single outbox).
    pub fn observe_peak(&self, depth: i64) {
        if depth > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(depth, Ordering::Relaxed);
        }
    }

    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed).max(0)
    }

    pub fn reading(&self) -> MeterReading {
        let count = self.seconds.get_sample_count();
        MeterReading {
            instance: self.instance.clone(),
            queue_depth: self.depth(),
            peak_queue_depth: self.peak.load(Ordering::Relaxed).max(0),
            handled: self.handled.get(),
            mailbox_full: self.full_instance.get(),
            mean_handle_millis: (count > 0)
                .then(|| self.seconds.get_sample_sum() * 1000.0 / count as f64),
        }
    }
}

/// Adds one to a meter's depth while alive; dropping it (handled or not) takes it off.
pub struct Ticket(Arc<Meter>);

impl Ticket {
    /// A message that waits for room if the mailbox is full.
    fn new(meter: &Arc<Meter>) -> Self {
        meter.enqueued(true);
        Ticket(meter.clone())
    }

    /// A message offered with `try_send` (refused, not waiting, when the mailbox is full).
    fn offered(meter: &Arc<Meter>) -> Self {
        meter.enqueued(false);
        Ticket(meter.clone())
    }

    fn handled(self, took: Duration) {
        self.0.handled.inc();
        self.0.seconds.observe(took.as_secs_f64());
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.depth.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A message on its way to a measured actor (see the module docs).
pub struct Counted<M> {
    msg: M,
    ticket: Ticket,
}

impl<M: Message> Message for Counted<M> {
    type Result = M::Result;
}

impl<M> Counted<M> {
    /// `msg` counted on `meter` (for messages that reach an actor other than by a send, such as
    /// the items of a stream it reads).
    pub fn new(msg: M, meter: &Arc<Meter>) -> Self {
        Counted {
            msg,
            ticket: Ticket::new(meter),
        }
    }

    /// Runs `handle` on the message, counting and timing it. Used by [`metered_actor!`].
    pub fn handle_with<R>(self, handle: impl FnOnce(M) -> R) -> CountedResponse<R> {
        let Counted { msg, ticket } = self;
        let started = Instant::now();
        let r = handle(msg);
        ticket.handled(started.elapsed());
        CountedResponse(r)
    }
}

/// The inner handler's response, answering a [`Counted`] message (same result type).
pub struct CountedResponse<R>(R);

impl<A, M, R> MessageResponse<A, Counted<M>> for CountedResponse<R>
where
    A: Actor,
    M: Message,
    R: MessageResponse<A, M>,
{
    fn handle(self, ctx: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        self.0.handle(ctx, tx)
    }
}

/// Declares that `$actor` is measured: it handles `Counted<M>` for every `M` it handles.
#[macro_export]
macro_rules! metered_actor {
    ($actor:ty) => {
        impl<M> ::actix::Handler<$crate::metered::Counted<M>> for $actor
        where
            M: ::actix::Message + 'static,
            $actor: ::actix::Handler<M>,
        {
            type Result = $crate::metered::CountedResponse<<$actor as ::actix::Handler<M>>::Result>;

            fn handle(
                &mut self,
                msg: $crate::metered::Counted<M>,
                ctx: &mut <$actor as ::actix::Actor>::Context,
            ) -> Self::Result {
                msg.handle_with(|m| <$actor as ::actix::Handler<M>>::handle(self, m, ctx))
            }
        }
    };
}

/// An actor's address whose sends are measured. Cheap to clone.
pub struct Metered<A: Actor> {
    addr: Addr<A>,
    meter: Arc<Meter>,
}

impl<A: Actor> Clone for Metered<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            meter: self.meter.clone(),
        }
    }
}

impl<A: Actor> Metered<A> {
    pub fn new(addr: Addr<A>, meter: Arc<Meter>) -> Self {
        Self { addr, meter }
    }

    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Whether the actor still runs (`Addr::connected`).
    pub fn connected(&self) -> bool {
        self.addr.connected()
    }

    /// `Addr::send`: waits for room, then for the reply.
    pub fn send<M>(&self, msg: M) -> Request<A, Counted<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        self.addr.send(Counted::new(msg, &self.meter))
    }

    /// `Addr::try_send`: refused when the mailbox is full (counted); gives the message back.
    pub fn try_send<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        let msg = Counted {
            msg,
            ticket: Ticket::offered(&self.meter),
        };
        self.addr
            .try_send(msg)
            .map_err(|e| unwrap_refused(e, &self.meter))
    }

    /// `Addr::do_send`: never refused (bookkeeping that must not be lost).
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        self.addr.do_send(Counted::new(msg, &self.meter))
    }

    /// A measured recipient of `M` (for senders that only know the message type).
    pub fn recipient<M>(&self) -> MeteredRecipient<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        MeteredRecipient {
            to: self.addr.clone().recipient(),
            meter: self.meter.clone(),
        }
    }
}

/// A refused `try_send`: counts the full mailbox and returns the message without its ticket
/// (dropping the ticket takes it off the depth).
fn unwrap_refused<M>(e: SendError<Counted<M>>, meter: &Meter) -> SendError<M> {
    match e {
        SendError::Full(c) => {
            meter.full();
            SendError::Full(c.msg)
        }
        SendError::Closed(c) => SendError::Closed(c.msg),
    }
}

/// A recipient whose sends are measured. Cheap to clone.
pub struct MeteredRecipient<M: Message + Send>
where
    M::Result: Send,
{
    to: Recipient<Counted<M>>,
    meter: Arc<Meter>,
}

impl<M: Message + Send> Clone for MeteredRecipient<M>
where
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            to: self.to.clone(),
            meter: self.meter.clone(),
        }
    }
}

impl<M> MeteredRecipient<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    pub fn do_send(&self, msg: M) {
        self.to.do_send(Counted::new(msg, &self.meter))
    }

    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        self.to
            .try_send(Counted {
                msg,
                ticket: Ticket::offered(&self.meter),
            })
            .map_err(|e| unwrap_refused(e, &self.meter))
    }

    pub fn send(&self, msg: M) -> actix::dev::RecipientRequest<Counted<M>> {
        self.to.send(Counted::new(msg, &self.meter))
    }
}

/// Every meter of the node, by kind and instance, and their Prometheus series.
pub struct MailboxMeters {
    meters: Mutex<HashMap<(ActorKind, String), Arc<Meter>>>,
    depth: IntGaugeVec,
    peak: IntGaugeVec,
    handled: IntCounterVec,
    full: IntCounterVec,
    seconds: HistogramVec,
}

impl MailboxMeters {
    /// Registers the series in `registry`. `full_kind` is `switchyard_mailbox_full_total`.
    pub(crate) fn new(registry: &Registry) -> Self {
        // `shard`, not `instance`: Prometheus gives every scraped series an `instance` label of its own.
        let labels = &["actor", "shard"];
        let depth = IntGaugeVec::new(
            Opts::new(
                "switchyard_mailbox_depth",
                "Messages waiting in (or being handled from) a mailbox now, by actor kind and shard",
            ),
            labels,
        )
        .expect("valid metric");
        let peak = IntGaugeVec::new(
            Opts::new(
                "switchyard_mailbox_depth_peak",
                "Most messages a mailbox has held since start, by actor kind and shard",
            ),
            labels,
        )
        .expect("valid metric");
        let handled = IntCounterVec::new(
            Opts::new(
                "switchyard_mailbox_handled_total",
                "Messages handled, by actor kind and shard",
            ),
            labels,
        )
        .expect("valid metric");
        let full = IntCounterVec::new(
            Opts::new(
                "switchyard_mailbox_instance_full_total",
                "Messages that met a full mailbox, by actor kind and shard",
            ),
            labels,
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_mailbox_handle_seconds",
                "Time one message spent in its handler, by actor kind and shard",
            )
            .buckets(HANDLE_BUCKETS.to_vec()),
            labels,
        )
        .expect("valid metric");
        for c in [
            Box::new(depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(peak.clone()),
            Box::new(handled.clone()),
            Box::new(full.clone()),
            Box::new(seconds.clone()),
        ] {
            registry
                .register(c)
                .expect("metric names are unique by construction");
        }
        Self {
            meters: Mutex::default(),
            depth,
            peak,
            handled,
            full,
            seconds,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ActorKind, String), Arc<Meter>>> {
        self.meters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The meter of `kind`'s `instance` (created on first use, kept for the node's life so a
    /// restarted actor continues its figures). `limits` gives the capacity that counts as full;
    /// `None` for kinds that count full mailboxes themselves (sessions).
    pub fn meter(
        &self,
        kind: ActorKind,
        instance: &str,
        limits: Option<Arc<ActorLimits>>,
        full_kind: IntCounter,
    ) -> Arc<Meter> {
        let key = (kind, instance.to_owned());
        self.lock()
            .entry(key)
            .or_insert_with(|| {
                let labels = [kind.as_str(), instance];
                Arc::new(Meter {
                    kind,
                    instance: instance.to_owned(),
                    depth: AtomicI64::new(0),
                    peak: AtomicI64::new(0),
                    handled: self.handled.with_label_values(&labels),
                    full_instance: self.full.with_label_values(&labels),
                    full_kind,
                    seconds: self.seconds.with_label_values(&labels),
                    limits,
                })
            })
            .clone()
    }

    /// Every reading of `kind`, by instance (sorted numerically where instances are numbers).
    pub fn readings(&self, kind: ActorKind) -> Vec<MeterReading> {
        let mut out: Vec<MeterReading> = self
            .lock()
            .values()
            .filter(|m| m.kind == kind)
            .map(|m| m.reading())
            .collect();
        out.sort_by_key(|r| {
            (
                r.instance.parse::<u64>().unwrap_or(u64::MAX),
                r.instance.clone(),
            )
        });
        out
    }

    /// Copies depths and peaks into their gauges (before a scrape).
    pub(crate) fn export(&self) {
        for m in self.lock().values() {
            let labels = [m.kind.as_str(), m.instance.as_str()];
            self.depth.with_label_values(&labels).set(m.depth());
            self.peak
                .with_label_values(&labels)
                .set(m.peak.load(Ordering::Relaxed).max(0));
        }
    }
}

/// One kind's figures summed over its instances.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindReading {
    pub queue_depth: i64,
    /// The most any one instance has held.
    pub peak_queue_depth: i64,
    pub handled: u64,
    pub mean_handle_millis: Option<f64>,
}

impl KindReading {
    pub fn of(readings: &[MeterReading]) -> Self {
        let handled: u64 = readings.iter().map(|r| r.handled).sum();
        let timed: Vec<_> = readings
            .iter()
            .filter_map(|r| r.mean_handle_millis.map(|m| (m, r.handled)))
            .collect();
        let weight: u64 = timed.iter().map(|(_, n)| n).sum();
        Self {
            queue_depth: readings.iter().map(|r| r.queue_depth).sum(),
            peak_queue_depth: readings
                .iter()
                .map(|r| r.peak_queue_depth)
                .max()
                .unwrap_or(0),
            handled,
            mean_handle_millis: (weight > 0)
                .then(|| timed.iter().map(|(m, n)| m * *n as f64).sum::<f64>() / weight as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{MailboxSettings, SlowConsumerPolicy};
    use std::sync::mpsc;

    /// An actor that blocks its thread until told to go on: its mailbox fills on purpose.
    struct Blocker {
        gate: Arc<Mutex<mpsc::Receiver<()>>>,
    }
    impl Actor for Blocker {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Self::Context) {
            ctx.set_mailbox_capacity(4);
        }
    }
    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Work(u32);
    impl Handler<Work> for Blocker {
        type Result = MessageResult<Work>;
        fn handle(&mut self, w: Work, _: &mut Self::Context) -> MessageResult<Work> {
            let _ = self.gate.lock().unwrap().recv();
            MessageResult(w.0 * 2)
        }
    }
    metered_actor!(Blocker);

    #[actix::test]
    async fn a_blocked_mailbox_shows_its_depth_and_full_count_then_drains() {
        let registry = Registry::new();
        let meters = MailboxMeters::new(&registry);
        let limits = Arc::new(ActorLimits::new(|_| MailboxSettings {
            mailbox: 4,
            policy: SlowConsumerPolicy::Drop,
            max_queued_bytes: 4096,
        }));
        let full_kind = IntCounter::new("full", "full").unwrap();
        let meter = meters.meter(ActorKind::Broker, "3", Some(limits), full_kind.clone());
        let (go, gate) = mpsc::channel();
        let arbiter = Arbiter::new();
        let gate = Arc::new(Mutex::new(gate));
        let addr = Blocker::start_in_arbiter(&arbiter.handle(), move |_| Blocker { gate });
        let to = Metered::new(addr, meter.clone());
        // One message through, so the actor has started (and set its capacity of 4).
        go.send(()).unwrap();
        assert_eq!(to.send(Work(0)).await.unwrap(), 0);
        // The next message blocks the actor; the rest wait, until actix refuses them.
        let first = to.send(Work(1));
        let mut refused = 0;
        for i in 0..10 {
            if let Err(SendError::Full(Work(n))) = to.try_send(Work(i)) {
                assert_eq!(n, i, "a refused message comes back");
                refused += 1;
            }
        }
        let r = meter.reading();
        assert!(refused > 0, "actix refused some: {r:?}");
        assert_eq!(r.mailbox_full, refused, "each refusal counted once");
        assert_eq!(r.queue_depth, 1 + (10 - refused as i64), "{r:?}");
        // A message that waits for room (do_send) past the capacity counts as full too.
        to.do_send(Work(99));
        let r = meter.reading();
        assert_eq!(r.mailbox_full, refused + 1, "{r:?}");
        assert!(r.peak_queue_depth >= r.queue_depth);
        assert_eq!(full_kind.get(), r.mailbox_full);
        for _ in 0..20 {
            let _ = go.send(());
        }
        assert_eq!(first.await.unwrap(), 2);
        // A reply after everything sent earlier was handled (one actor, one mailbox, in order).
        let _ = go.send(());
        assert_eq!(to.send(Work(5)).await.unwrap(), 10);
        let r = meter.reading();
        assert_eq!(r.queue_depth, 0, "{r:?}");
        assert_eq!(r.handled, 4 + (10 - refused), "{r:?}");
        assert!(r.mean_handle_millis.is_some());
        meters.export();
        let names: Vec<_> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"switchyard_mailbox_depth_peak".to_owned()));
        arbiter.stop();
    }

    #[test]
    fn kind_reading_sums_depths_and_keeps_the_deepest_peak() {
        let r = |i: &str, d, p, h, m| MeterReading {
            instance: i.into(),
            queue_depth: d,
            peak_queue_depth: p,
            handled: h,
            mailbox_full: 0,
            mean_handle_millis: m,
        };
        let k = KindReading::of(&[r("0", 2, 5, 10, Some(1.0)), r("1", 3, 9, 30, Some(3.0))]);
        assert_eq!(k.queue_depth, 5);
        assert_eq!(k.peak_queue_depth, 9);
        assert_eq!(k.handled, 40);
        assert_eq!(k.mean_handle_millis, Some(2.5));
    }
}

//! The WebSocket writer: [`SocketContext`], the connection actor's actix context. It reads the
//! client's frames from the request payload and writes the actor's frames into the response body.
//!
//! Its structure is copied from actix-web-actors' `WebsocketContext` (actix-web-actors 4.3,
//! `src/ws.rs`, MIT/Apache-2.0, by the actix team), built the same way on actix's public context
//! parts (`actix::dev`: [`ContextParts`], [`ContextFut`], [`AsyncContextParts`], [`Mailbox`]).
//! actix-web-actors is deprecated, and neither it nor actix-ws accepts a frame that is already
//! encoded; the fan-out profile (docs/benchmarks.md "Profiles") showed about half of a connection's
//! turn in re-encoding every frame per connection into a buffer that started empty each turn.
//! What differs from `WebsocketContext`, and why:
//!
//! - **Writing.** Frames are encoded into the context's write buffer when the actor writes them,
//!   not queued as `ws::Message`s and encoded when the body is polled. [`SocketContext::write_frame`]
//!   appends a complete frame (header and payload) encoded once per event for the whole node
//!   ([`crate::codec::notification_ws_frame`]): a fan-out to N connections encodes the frame once;
//!   each connection copies it into this buffer (and actix-http's dispatcher copies the chunk once
//!   more into its own write buffer, as before: only the encoding is shared). [`SocketContext::text`],
//!   [`SocketContext::binary`], [`SocketContext::ping`], [`SocketContext::pong`] and
//!   [`SocketContext::close`] encode the rare per-connection frames with actix-http's own frame
//!   writer, byte for byte as before.
//! - **One buffer, kept.** Each poll of the response body hands out everything written since the
//!   last poll as one chunk ([`BytesMut::split`]), so many frames go out in one write. The HTTP
//!   dispatcher copies the chunk into its own write buffer and drops it; the next write then
//!   reuses the same allocation instead of growing a new buffer from empty every turn. The actor
//!   gives the allocation back on each heartbeat ([`SocketContext::release_write_buffer`]), so a
//!   burst does not leave an idle connection holding its high-water mark.
//! - **No empty turns.** The dispatcher polls the body again straight after each chunk. The
//!   actor's futures and streams are polled with a waker of the context's own (`TurnWaker`), so
//!   that poll runs the actor only if something woke it since the chunk; `WebsocketContext` ran
//!   a whole turn that found nothing to do.
//! - **Bounded chunks.** An actor that has more to write than one chunk should hold (a connection
//!   far behind a fast publisher) writes part of it and asks to be woken once the chunk is handed
//!   out ([`SocketContext::wake_after_handout`]), so the buffer keeps one size instead of growing
//!   to the whole backlog; the poll straight after such a chunk answers "not yet" (and wakes the
//!   task again), so the HTTP dispatcher writes what it holds before it takes the next, and its
//!   own buffer stays small too (unless the socket is full: then it holds up to its 32 KiB).
//!
//! Reading and the end of the body are `WebsocketContext`'s, unchanged, and the handshake is
//! actix-web-actors' own ([`handshake`]):
//! actix-http's `ws::Codec` decodes the payload (with the configured largest frame), a text frame
//! that is not UTF-8 is a `ProtocolError::Io` worded as before (`read_errors.rs` tells it apart),
//! and the body ends once the actor has stopped and everything written has been handed out.
//!
//! Like `WebsocketContext`, the actor runs only while the response body is polled (see
//! `conn_socket.rs` for what that means for a client that stops reading).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use actix::dev::{
    AsyncContextParts, ContextFut, ContextParts, Envelope, Mailbox, StreamHandler, ToEnvelope,
};
use actix::fut::ActorFuture;
use actix::{
    Actor, ActorContext, ActorState, Addr, AsyncContext, Handler, Message as ActixMessage,
    SpawnHandle,
};
use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, OpCode, Parser};

use crate::codec::ws_frame::put_data_frame;
#[cfg(test)]
use crate::codec::ws_frame::{data_frame, frame_payload};
pub use actix_http::ws::{CloseReason, HandshakeError, Message, ProtocolError};
use actix_web::error::{Error, PayloadError};
use actix_web::HttpRequest;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use tokio::sync::oneshot;

/// The connection actor's context: actix's context parts plus the write buffer (see the module
/// docs).
pub struct SocketContext<A>
where
    A: Actor<Context = SocketContext<A>>,
{
    inner: ContextParts<A>,
    /// Encoded frames written since the response body was last polled.
    out: BytesMut,
    /// Woken once what was written has been handed out ([`SocketContext::wake_after_handout`]).
    after_handout: Option<Waker>,
}

impl<A> SocketContext<A>
where
    A: Actor<Context = Self> + StreamHandler<Result<Message, ProtocolError>>,
{
    /// Starts `actor` reading client frames from `payload` (decoded by `codec`); the returned
    /// stream is the response body, and the actor runs while it is polled.
    pub fn start<S>(actor: A, payload: S, codec: Codec) -> impl Stream<Item = Result<Bytes, Error>>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + 'static,
    {
        let mailbox = Mailbox::default();
        let mut ctx = SocketContext {
            inner: ContextParts::new(mailbox.sender_producer()),
            out: BytesMut::new(),
            after_handout: None,
        };
        ctx.add_stream(FrameReader::new(payload, codec));
        let turn = Arc::<TurnWaker>::default();
        SocketContextFut {
            fut: ContextFut::new(ctx, actor, mailbox),
            waker: Waker::from(turn.clone()),
            turn,
            handed_out: false,
            resume: None,
        }
    }
}

impl<A> SocketContext<A>
where
    A: Actor<Context = Self>,
{
    /// Writes a complete server frame made by [`data_frame`] (copied once, into the write buffer).
    #[inline]
    pub fn write_frame(&mut self, frame: &[u8]) {
        self.out.extend_from_slice(frame);
    }

    /// Writes a text frame (`text` is UTF-8: the caller's encoder guarantees it).
    #[inline]
    pub fn text(&mut self, text: &[u8]) {
        put_data_frame(&mut self.out, text, false);
    }

    #[inline]
    pub fn binary(&mut self, data: &[u8]) {
        put_data_frame(&mut self.out, data, true);
    }

    pub fn ping(&mut self, message: &[u8]) {
        Parser::write_message(&mut self.out, message, OpCode::Ping, true, false);
    }

    pub fn pong(&mut self, message: &[u8]) {
        Parser::write_message(&mut self.out, message, OpCode::Pong, true, false);
    }

    /// Writes a close frame; the actor stops itself (the body ends once it has).
    pub fn close(&mut self, reason: Option<CloseReason>) {
        Parser::write_close(&mut self.out, reason, false);
    }

    /// Bounds the actor's actix mailbox.
    pub fn set_mailbox_capacity(&mut self, cap: usize) {
        self.inner.set_mailbox_capacity(cap)
    }

    /// Bytes written since the response body was last polled (this turn's writes so far).
    #[inline]
    pub fn written_len(&self) -> usize {
        self.out.len()
    }

    /// Wakes `waker` once this turn's writes have been handed out to the HTTP layer (at once if
    /// there are none): an actor that stopped writing to keep one chunk within bounds continues in
    /// its next turn, after the chunk, instead of growing this one.
    pub fn wake_after_handout(&mut self, waker: Waker) {
        self.after_handout = Some(waker);
    }

    /// Everything written since the last call, as one chunk (see the module docs).
    fn take_written(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        Some(self.out.split().freeze())
    }

    /// Gives back the write buffer's allocation unless it holds frames not handed out yet (the
    /// next write starts a new one). The actor calls it on its heartbeat: a busy connection keeps
    /// one buffer across its turns, an idle one does not keep its largest turn's worth.
    pub fn release_write_buffer(&mut self) {
        if self.out.is_empty() {
            self.out = BytesMut::new();
        }
    }
}

impl<A> ActorContext for SocketContext<A>
where
    A: Actor<Context = Self>,
{
    fn stop(&mut self) {
        self.inner.stop();
    }

    fn terminate(&mut self) {
        self.inner.terminate()
    }

    fn state(&self) -> ActorState {
        self.inner.state()
    }
}

impl<A> AsyncContext<A> for SocketContext<A>
where
    A: Actor<Context = Self>,
{
    fn spawn<F>(&mut self, fut: F) -> SpawnHandle
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        self.inner.spawn(fut)
    }

    fn wait<F>(&mut self, fut: F)
    where
        F: ActorFuture<A, Output = ()> + 'static,
    {
        self.inner.wait(fut)
    }

    #[doc(hidden)]
    #[inline]
    fn waiting(&self) -> bool {
        // As `WebsocketContext`: a stopping actor handles no more messages.
        self.inner.waiting()
            || self.inner.state() == ActorState::Stopping
            || self.inner.state() == ActorState::Stopped
    }

    fn cancel_future(&mut self, handle: SpawnHandle) -> bool {
        self.inner.cancel_future(handle)
    }

    #[inline]
    fn address(&self) -> Addr<A> {
        self.inner.address()
    }
}

impl<A> AsyncContextParts<A> for SocketContext<A>
where
    A: Actor<Context = Self>,
{
    fn parts(&mut self) -> &mut ContextParts<A> {
        &mut self.inner
    }
}

impl<A, M> ToEnvelope<A, M> for SocketContext<A>
where
    A: Actor<Context = SocketContext<A>> + Handler<M>,
    M: ActixMessage + Send + 'static,
    M::Result: Send,
{
    fn pack(msg: M, tx: Option<oneshot::Sender<M::Result>>) -> Envelope<A> {
        Envelope::new(msg, tx)
    }
}

/// The response body: runs the actor, then hands out what it wrote.
struct SocketContextFut<A>
where
    A: Actor<Context = SocketContext<A>>,
{
    fut: ContextFut<A, SocketContext<A>>,
    /// The waker the actor's futures and streams are polled with (see [`TurnWaker`]).
    turn: Arc<TurnWaker>,
    waker: Waker,
    /// The last poll handed out a chunk: the HTTP dispatcher polls again at once, and unless
    /// something woke the actor since, that poll need not run it.
    handed_out: bool,
    /// The actor's wake for when the chunk handed out last has gone to the socket (it has more
    /// to write: [`SocketContext::wake_after_handout`]).
    resume: Option<Waker>,
}

/// Records that something the actor waits on (its outbox, the socket, a timer, its mailbox) woke
/// it, and passes the wake on to the HTTP connection's task. Without it every chunk handed out
/// cost a second, empty turn of the actor (polling each of its streams and timers), because the
/// dispatcher polls the body again straight after each chunk: about half of all turns in a
/// fan-out.
#[derive(Default)]
struct TurnWaker {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for TurnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<A> Stream for SocketContextFut<A>
where
    A: Actor<Context = SocketContext<A>>,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Registered before the flag is read, so a wake in between is not lost.
        this.turn.task.register(cx.waker());
        if let Some(resume) = this.resume.take() {
            // The dispatcher polls again straight after a chunk, to gather more before it writes.
            // Answering "not yet" makes it write what it holds first: its buffer then holds a
            // chunk or two, not a connection's whole backlog (first-touched memory on each of
            // thousands of connections cost more than the writes). The next poll runs the actor,
            // whose outbox stream now yields (`resume` is the outbox's wake). The task is woken
            // here, not through the outbox: a push since the chunk may have used up the outbox's
            // registered waker (the actor registers it again only when it runs), and this poll
            // returns before reading the wake that push left.
            resume.wake();
            this.turn.woken.store(true, Ordering::Release);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let woken = this.turn.woken.swap(false, Ordering::AcqRel);
        // The actor's last turn ended with everything it waits on registered with `turn`: with
        // no wake since, a turn now would find nothing to do.
        if this.fut.alive() && (woken || !this.handed_out) {
            let _ = Pin::new(&mut this.fut).poll(&mut Context::from_waker(&this.waker));
        }
        this.handed_out = false;
        let chunk = this.fut.ctx().take_written();
        if let Some(waker) = this.fut.ctx().after_handout.take() {
            // Wakes `turn` once the chunk is on its way (at once if there is none): a later poll
            // runs the actor again.
            if chunk.is_some() {
                this.resume = Some(waker);
            } else {
                waker.wake();
            }
        }
        if let Some(chunk) = chunk {
            this.handed_out = true;
            Poll::Ready(Some(Ok(chunk)))
        } else if this.fut.alive() {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

/// The client's frames, decoded from the request payload (`WebsocketContext`'s `WsStream`).
struct FrameReader<S> {
    payload: Pin<Box<S>>,
    decoder: Codec,
    buf: BytesMut,
    closed: bool,
}

impl<S> FrameReader<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>>,
{
    fn new(payload: S, decoder: Codec) -> Self {
        Self {
            payload: Box::pin(payload),
            decoder,
            buf: BytesMut::new(),
            closed: false,
        }
    }
}

impl<S> Stream for FrameReader<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>>,
{
    type Item = Result<Message, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.closed {
            loop {
                match this.payload.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk[..]),
                    Poll::Ready(None) => {
                        this.closed = true;
                        break;
                    }
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(err))) => {
                        return Poll::Ready(Some(Err(ProtocolError::Io(io::Error::other(
                            format!("{err}"),
                        )))));
                    }
                }
            }
        }
        match this.decoder.decode(&mut this.buf)? {
            None if this.closed => Poll::Ready(None),
            None => Poll::Pending,
            Some(frame) => Poll::Ready(Some(Ok(match frame {
                // The wording of this error is what `read_errors.rs` recognises.
                Frame::Text(data) => Message::Text(
                    ByteString::try_from(data)
                        .map_err(|e| ProtocolError::Io(io::Error::other(format!("{e}"))))?,
                ),
                Frame::Binary(data) => Message::Binary(data),
                Frame::Ping(s) => Message::Ping(s),
                Frame::Pong(s) => Message::Pong(s),
                Frame::Close(reason) => Message::Close(reason),
                Frame::Continuation(item) => Message::Continuation(item),
            }))),
        }
    }
}

/// Checks that `req` is a WebSocket upgrade and answers it (status 101 and the accept key):
/// actix-web-actors' handshake, which stays the one place these rules live (the context that
/// crate runs actors in is what this file replaces, not its handshake).
pub fn handshake(req: &HttpRequest) -> Result<actix_web::HttpResponseBuilder, HandshakeError> {
    actix_web_actors::ws::handshake(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client reads: the frames in `bytes`, decoded as a client does.
    fn client_reads(bytes: &[u8]) -> Vec<Frame> {
        let mut codec = Codec::new().client_mode().max_size(usize::MAX);
        let mut buf = BytesMut::from(bytes);
        std::iter::from_fn(|| codec.decode(&mut buf).unwrap()).collect()
    }

    struct Idle;

    impl Actor for Idle {
        type Context = SocketContext<Self>;
    }

    /// A context with nothing running in it, to write into.
    fn context() -> SocketContext<Idle> {
        SocketContext {
            inner: ContextParts::new(Mailbox::default().sender_producer()),
            out: BytesMut::new(),
            after_handout: None,
        }
    }

    #[test]
    fn a_turn_hands_out_every_frame_written_as_one_chunk() {
        let mut ctx = context();
        ctx.text(b"reply");
        ctx.write_frame(&data_frame(b"shared", false));
        ctx.binary(b"\x93\x01");
        ctx.ping(b"");
        ctx.close(Some(CloseReason {
            code: actix_http::ws::CloseCode::Normal,
            description: Some("bye".into()),
        }));
        let chunk = ctx.take_written().expect("written");
        assert_eq!(
            client_reads(&chunk),
            [
                Frame::Text(Bytes::from_static(b"reply")),
                Frame::Text(Bytes::from_static(b"shared")),
                Frame::Binary(Bytes::from_static(b"\x93\x01")),
                Frame::Ping(Bytes::new()),
                Frame::Close(Some(CloseReason {
                    code: actix_http::ws::CloseCode::Normal,
                    description: Some("bye".into()),
                })),
            ]
        );
        assert!(ctx.take_written().is_none(), "handed out once");
    }

    #[test]
    fn the_write_buffer_is_reused_between_turns_until_released() {
        let frame = data_frame(&[b'x'; 500], false);
        let mut ctx = context();
        ctx.write_frame(&frame);
        let first = ctx.take_written().unwrap();
        let at = first.as_ptr();
        // The dispatcher copies a chunk and drops it. Were the buffer freed with it, this
        // allocation of the same size would most likely take its place.
        drop(first);
        let elsewhere = std::hint::black_box(Vec::<u8>::with_capacity(frame.len()));
        ctx.write_frame(&frame);
        let second = ctx.take_written().unwrap();
        assert_eq!(
            second.as_ptr(),
            at,
            "the next turn writes into the same allocation"
        );
        drop((second, elsewhere));

        ctx.write_frame(&frame);
        ctx.release_write_buffer();
        assert_eq!(
            ctx.take_written().unwrap(),
            frame,
            "frames not handed out are kept"
        );
        ctx.release_write_buffer();
        assert_eq!(ctx.out.capacity(), 0, "an idle connection keeps no buffer");
    }

    /// Writes `hello` when it starts and `again` for each client frame; counts how often its
    /// actor's items are polled, i.e. its turns.
    struct Chatty(Arc<std::sync::atomic::AtomicUsize>);

    /// A stream that is never ready and counts its polls.
    struct Turns(Arc<std::sync::atomic::AtomicUsize>);

    impl Stream for Turns {
        type Item = ();
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<()>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    impl Actor for Chatty {
        type Context = SocketContext<Self>;
        fn started(&mut self, ctx: &mut Self::Context) {
            ctx.add_stream(Turns(self.0.clone()));
            ctx.text(b"hello");
        }
    }

    impl StreamHandler<()> for Chatty {
        fn handle(&mut self, _: (), _: &mut Self::Context) {}
    }

    impl StreamHandler<Result<Message, ProtocolError>> for Chatty {
        fn handle(&mut self, _: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
            ctx.text(b"again");
        }
    }

    #[test]
    fn no_turn_after_a_chunk_unless_something_woke_the_actor() {
        use futures_util::{FutureExt, StreamExt};
        let turns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, PayloadError>>();
        let payload = tokio_stream_of(rx);
        let counted = turns.clone();
        actix::System::new().block_on(async move {
            let mut body = Box::pin(SocketContext::start(Chatty(counted), payload, Codec::new()));
            let mut read = move || match body.next().now_or_never() {
                Some(Some(Ok(chunk))) => Some(client_reads(&chunk)),
                None => None,
                other => panic!("the body ended or failed: {other:?}"),
            };
            assert_eq!(
                read(),
                Some(vec![Frame::Text(Bytes::from_static(b"hello"))])
            );
            let after_hello = turns.load(Ordering::Relaxed);
            assert_eq!(read(), None, "nothing more to hand out");
            assert_eq!(
                turns.load(Ordering::Relaxed),
                after_hello,
                "no wake, no turn"
            );
            // A masked client frame wakes the actor: the next poll runs it.
            tx.send(Ok(Bytes::from_static(b"\x81\x80\x01\x02\x03\x04")))
                .unwrap();
            assert_eq!(
                read(),
                Some(vec![Frame::Text(Bytes::from_static(b"again"))])
            );
            assert!(turns.load(Ordering::Relaxed) > after_hello);
        });
    }

    /// Writes its outbox's events as `drain_outbox` does: at most `CHUNK` bytes a turn, and when
    /// events are left, asks to be woken once the turn's chunk has been handed out.
    struct Backlogged(Arc<crate::outbox::Outbox>);

    const CHUNK: usize = 3;

    impl Actor for Backlogged {
        type Context = SocketContext<Self>;
        fn started(&mut self, ctx: &mut Self::Context) {
            ctx.add_stream(self.0.ready());
        }
    }

    impl StreamHandler<crate::outbox::Wake> for Backlogged {
        fn handle(&mut self, _: crate::outbox::Wake, ctx: &mut Self::Context) {
            let mut batch = Vec::new();
            let room = CHUNK.saturating_sub(ctx.written_len());
            if self.0.take_up_to(&mut batch, room) {
                ctx.wake_after_handout(self.0.waker());
            }
            for env in batch {
                ctx.text(env.event.as_str().as_bytes());
            }
        }
    }

    impl StreamHandler<Result<Message, ProtocolError>> for Backlogged {
        fn handle(&mut self, _: Result<Message, ProtocolError>, _: &mut Self::Context) {}
    }

    #[test]
    fn a_backlog_goes_out_in_bounded_chunks_each_after_the_one_before_was_handed_out() {
        use crate::channel::ChannelName;
        use crate::envelope::{Draft, Envelope, EventName};
        use futures_util::{FutureExt, StreamExt};
        let outbox = Arc::<crate::outbox::Outbox>::default();
        for n in 0..8 {
            let draft = Draft::new(
                ChannelName::parse("user:u").unwrap(),
                EventName::parse(&format!("E{n}")).unwrap(),
                crate::payload::Payload::test("1"),
            );
            let env = Arc::new(Envelope::new(
                draft,
                n,
                Arc::from("e"),
                crate::ids::NodeId(Arc::from("n")),
            ));
            // Each event counts as one byte: a chunk holds up to three.
            if let crate::outbox::Push::Queued { wake: true, .. } = outbox.push(&env, 1, 100, 100) {
                outbox.wake();
            }
        }
        let (_tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, PayloadError>>();
        let payload = tokio_stream_of(rx);
        let actor = Backlogged(outbox.clone());
        actix::System::new().block_on(async move {
            let mut body = Box::pin(SocketContext::start(actor, payload, Codec::new()));
            // What each poll gives: a chunk, or nothing yet (the HTTP layer writes meanwhile).
            let polls: Vec<Option<Vec<Frame>>> = (0..8)
                .map(|_| match body.next().now_or_never() {
                    Some(Some(Ok(chunk))) => Some(client_reads(&chunk)),
                    None => None,
                    other => panic!("the body ended or failed: {other:?}"),
                })
                .collect();
            let text = |s: &'static str| Frame::Text(Bytes::from_static(s.as_bytes()));
            assert_eq!(
                polls,
                [
                    Some(vec![text("E0"), text("E1"), text("E2")]),
                    None,
                    Some(vec![text("E3"), text("E4"), text("E5")]),
                    None,
                    Some(vec![text("E6"), text("E7")]),
                    None,
                    None,
                    None,
                ],
                "one bounded chunk a turn, in order, each written out before the next is made"
            );
            assert!(outbox.is_empty());
        });
    }

    /// Counts the wakes of the task polling the body.
    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_push_between_a_bounded_chunk_and_the_next_poll_leaves_the_task_to_be_polled_again() {
        use crate::envelope::{Draft, Envelope, EventName};
        let outbox = Arc::<crate::outbox::Outbox>::default();
        let event = |n: u64| {
            let draft = Draft::new(
                crate::channel::ChannelName::parse("user:u").unwrap(),
                EventName::parse(&format!("E{n}")).unwrap(),
                crate::payload::Payload::test("1"),
            );
            Arc::new(Envelope::new(
                draft,
                n,
                Arc::from("e"),
                crate::ids::NodeId(Arc::from("n")),
            ))
        };
        let push = |n: u64| {
            if let crate::outbox::Push::Queued { wake: true, .. } =
                outbox.push(&event(n), 1, 100, 100)
            {
                outbox.wake();
            }
        };
        for n in 0..5 {
            push(n);
        }
        let (_tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, PayloadError>>();
        let actor = Backlogged(outbox.clone());
        let task = Arc::<CountingWaker>::default();
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        actix::System::new().block_on(async move {
            let mut body = Box::pin(SocketContext::start(
                actor,
                tokio_stream_of(rx),
                Codec::new(),
            ));
            assert!(matches!(
                body.as_mut().poll_next(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
            // A broker push now uses up the outbox's registered waker (one wake of the task).
            push(5);
            let before = task.0.load(Ordering::Relaxed);
            assert!(body.as_mut().poll_next(&mut cx).is_pending());
            assert!(
                task.0.load(Ordering::Relaxed) > before,
                "the task is woken to run the actor again, not left asleep with events queued"
            );
            assert!(matches!(
                body.as_mut().poll_next(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
        });
    }

    /// The receiving end of a channel as a payload stream.
    fn tokio_stream_of(
        rx: tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, PayloadError>>,
    ) -> impl Stream<Item = Result<Bytes, PayloadError>> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
    }

    #[test]
    fn a_shared_frame_is_what_the_per_connection_encoder_writes() {
        // Payload lengths at each header size: 7-bit, 16-bit and 64-bit lengths.
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![b'x'; len];
            for binary in [false, true] {
                let mut per_connection = BytesMut::new();
                put_data_frame(&mut per_connection, &payload, binary);
                let shared = data_frame(&payload, binary);
                assert_eq!(shared, per_connection.freeze(), "len {len}");
                assert_eq!(frame_payload(&shared), payload, "len {len}");
                let read = client_reads(&shared);
                let expected = if binary {
                    Frame::Binary(Bytes::from(payload.clone()))
                } else {
                    Frame::Text(Bytes::from(payload.clone()))
                };
                assert_eq!(read, [expected]);
            }
        }
    }
}

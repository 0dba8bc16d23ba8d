//! The connection actor without a WebSocket: SignalR's Server-Sent Events and Long Polling
//! transports run the very same [`Connection`] actor, so authentication, groups, limits, rules,
//! metrics, the heartbeat and the watchdog are the WebSocket connection's, unchanged.
//!
//! The actor is started in its usual [`SocketContext`] over an input stream this module feeds
//! instead of a socket: what the client POSTs becomes the masked frames a WebSocket client
//! would have sent ([`Inbound`]), a text frame for a UTF-8 body (JSON hub protocol, and every
//! handshake) and a binary frame otherwise (MessagePack: its records start with a varint length
//! followed by a fixarray byte 0x9N, which can never be valid UTF-8). The actor's output, the
//! byte stream of unmasked WebSocket frames it would have written, is parsed back into messages
//! ([`Outbound`]); the HTTP transport turns them into SSE events or Long Polling responses.
//! WebSocket pings and pongs stay inside: the transport answers nothing to them, and a WebSocket
//! Ping sent *into* the actor ([`Inbound::heard`]) is how a Long Polling poll counts as hearing
//! from the client.
//!
//! Like a WebSocket connection, the actor runs only while its output stream is polled: the SSE
//! response body (whose HTTP connection the watchdog resets if its client stops reading), or the
//! Long Polling pump, which stops polling while its queue is full (the watchdog then aborts the
//! detached [`ConnSocket`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Message};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::conn_socket::ConnSocket;
use super::socket_context::SocketContext;
use super::Connection;

/// The connection ended: nothing more can be sent to it.
#[derive(Debug, thiserror::Error)]
#[error("the connection has ended")]
pub struct Gone;

/// What the client sends, into the connection actor.
#[derive(Clone, Debug)]
pub struct Inbound {
    tx: mpsc::Sender<Bytes>,
}

impl Inbound {
    /// One request body, as one frame (see the module docs for text or binary). Waits while the
    /// actor has not taken the frames before it (the queue is `signalr.send_queue_frames` long).
    pub async fn send(&self, body: Bytes) -> Result<(), Gone> {
        let message = match ByteString::try_from(body.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(body),
        };
        self.tx.send(client_frame(message)?).await.map_err(|_| Gone)
    }

    /// The client was heard from (a poll): a WebSocket ping, which the actor counts and answers
    /// with a pong nobody reads. Skipped if the queue is full: the actor has not even read what
    /// is queued, which is evidence enough.
    pub fn heard(&self) {
        if let Ok(frame) = client_frame(Message::Ping(Bytes::new())) {
            let _ = self.tx.try_send(frame);
        }
    }

    /// The client closes the connection (Long Polling's DELETE), as a WebSocket client would.
    pub async fn close(&self) -> Result<(), Gone> {
        let frame = client_frame(Message::Close(Some(CloseCode::Normal.into())))?;
        self.tx.send(frame).await.map_err(|_| Gone)
    }

    /// Whether the actor's input is gone (the actor stopped).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A frame as a client writes it (masked).
fn client_frame(message: Message) -> Result<Bytes, Gone> {
    let mut out = BytesMut::new();
    Codec::new()
        .client_mode()
        .encode(message, &mut out)
        .map_err(|e| {
            log::warn!("encoding a frame for a streamed connection failed: {e}");
            Gone
        })?;
    Ok(out.freeze())
}

/// One message the actor wrote.
#[derive(Debug)]
pub enum OutMessage {
    Text(Bytes),
    Binary(Bytes),
    /// The actor closed the connection (it stops after this).
    Close(Option<CloseReason>),
}

/// The actor's output, as messages. Ends when the actor stops.
pub struct Outbound {
    frames: Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>,
    buf: BytesMut,
    codec: Codec,
}

impl Stream for Outbound {
    type Item = OutMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<OutMessage>> {
        let this = self.get_mut();
        loop {
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => match frame {
                    Frame::Text(b) => return Poll::Ready(Some(OutMessage::Text(b))),
                    Frame::Binary(b) => return Poll::Ready(Some(OutMessage::Binary(b))),
                    Frame::Close(reason) => return Poll::Ready(Some(OutMessage::Close(reason))),
                    // The actor never fragments; pings and pongs are the WebSocket's own.
                    Frame::Ping(_) | Frame::Pong(_) | Frame::Continuation(_) => continue,
                },
                Ok(None) => {}
                Err(e) => {
                    // The actor's own output: cannot happen short of a bug in actix.
                    log::error!("a streamed connection's output could not be parsed: {e}");
                    return Poll::Ready(None);
                }
            }
            match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.buf.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(e))) => {
                    log::debug!("a streamed connection's output ended: {e}");
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Connection {
    /// Starts the connection actor over a plain HTTP transport instead of a WebSocket: `socket`
    /// is the handle the watchdog shuts it with; frames sent through the returned [`Inbound`]
    /// wait in a queue of `queue` frames. The actor runs while the [`Outbound`] is polled, and is
    /// dropped (running `stopped()`) with it.
    pub fn serve_streamed(mut self, socket: ConnSocket, queue: usize) -> (Inbound, Outbound) {
        self.socket = socket;
        let max = self.shared.settings.max_frame_bytes;
        let (tx, rx) = mpsc::channel::<Bytes>(queue.max(1));
        let input = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|frame| (Ok::<_, PayloadError>(frame), rx))
        });
        let frames = SocketContext::start(self, input, Codec::new().max_size(max));
        let outbound = Outbound {
            frames: Box::pin(frames),
            buf: BytesMut::new(),
            // The actor's frames may be as large as any event it delivers.
            codec: Codec::new().client_mode().max_size(usize::MAX),
        };
        (Inbound { tx }, outbound)
    }
}

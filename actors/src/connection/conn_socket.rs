//! The TCP connection under a WebSocket connection actor, as something outside the connection actor can shut it.
//!
//! The connection actor's context ([`super::socket_context`]) runs it only when the HTTP layer polls its response body, and the h1
//! dispatcher stops polling while its write buffer is full and the socket takes nothing. So a
//! connection actor whose client stopped reading cannot close its own connection: its close frame, if it
//! could even queue one, waits behind the unsent data. The connection actor watchdog
//! ([`super::watchdog`]) shuts such a connection from outside with [`ConnSocket::abort`]: a reset
//! that discards the unsent data. The failed write then makes the dispatcher drop the connection,
//! and with it the connection actor (actix runs `stopped()` on drop).
//!
//! [`on_connect`] (installed by the server's listener, `src/http_server.rs`) records each accepted connection's
//! descriptor and peer in the connection's extensions, in a [`SocketOwner`]; the upgrade routes
//! hand a clone ([`ConnSocket::of`]) to the connection actor. The dispatcher drops its connection data
//! before it closes the socket (`conn_data` is declared before `io` in actix-http's h1
//! `Dispatcher`), and the owner releases the descriptor then, under the same lock `abort` holds,
//! so `abort` never touches a descriptor that was closed and reused; it also checks the peer
//! address, in case a later actix-http drops them in another order.
//!
//! After a connection actor ends, actix-http flushes what it can into the kernel, waits
//! `client_disconnect_timeout` (1 s) for the client and drops the connection. If the kernel still
//! holds data it could not even send then (the client takes nothing), a plain close would leave
//! the kernel trying to deliver it, close frame last, for as long as the client reads nothing.
//! So for a connection whose session ended ([`ConnSocket::session_ended`]) the owner keeps a
//! duplicate of the descriptor instead (an *orphan*), and the watchdog closes it once the
//! connection actor has been gone for the write timeout: plainly if everything was taken by then (a slow
//! but live client still gets its close frame), with a reset if not. Other HTTP connections are
//! never kept: a response the kernel is still sending is delivered as before.
//!
//! Only plain TCP is recorded: the server has no TLS listener (TLS ends at the load balancer).
//! A connection of another stream type has an empty handle, which `abort` reports as
//! [`AbortError::Untracked`].
//!
//! A connection actor served over SignalR's Long Polling transport ([`super::streamed`]) has no
//! socket of its own: each poll is a separate request. Its handle is *detached*
//! ([`ConnSocket::detached`]): `abort` wakes the transport's pump, which drops the actor's stream
//! (and with it the actor) and then [`ConnSocket::release`]s the handle. One served over a single
//! streaming response (Server-Sent Events) gets a *view* of its connection ([`ConnSocket::view`]),
//! released when the response ends: the watchdog may reset a stalled stream, but leaves alone a
//! keep-alive connection whose stream ended cleanly.

use std::any::Any;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;
use tokio::sync::Notify;

/// Why a connection could not be shut.
#[derive(Debug, thiserror::Error)]
pub enum AbortError {
    #[error("the connection has no recorded socket (not plain TCP)")]
    Untracked,
    #[error("the connection is already closed")]
    Closed,
    #[error("the descriptor now belongs to another connection")]
    Reused,
    #[error("resetting the connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`ConnSocket::abort`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aborted {
    /// Reset: what the client had not taken was discarded.
    Reset,
    /// An orphan whose data the client had all taken by now: closed plainly.
    Closed,
}

/// The socket of one connection the dispatcher still serves.
#[derive(Clone, Copy, Debug)]
struct Open {
    fd: RawFd,
    peer: SocketAddr,
    /// Its session ended (see [`ConnSocket::session_ended`]).
    ended: bool,
    /// Already reset by [`ConnSocket::abort`].
    reset: bool,
}

#[derive(Debug, Default)]
enum Slot {
    /// Never recorded, or closed.
    #[default]
    Closed,
    Open(Open),
    /// Dropped by the dispatcher with data still unsent; kept for the watchdog to close.
    Orphan {
        fd: OwnedFd,
        peer: SocketAddr,
    },
    /// A connection actor without a socket (Long Polling): `abort` notifies its transport.
    Detached(Arc<Notify>),
    /// A connection actor using one response of a connection (Server-Sent Events): acts on that
    /// connection until released, when the response ended; the connection itself may serve
    /// further requests then, and is no longer the actor's to shut.
    Via(ConnSocket),
}

impl Open {
    /// The socket, if `fd` is still this connection's.
    ///
    /// # Safety
    /// The caller holds the slot's lock, so the owner has not released the descriptor and the
    /// dispatcher has not closed it (see the module docs).
    unsafe fn socket(&self) -> Result<BorrowedFd<'_>, AbortError> {
        let fd = BorrowedFd::borrow_raw(self.fd);
        if socket2::SockRef::from(&fd).peer_addr()?.as_socket() != Some(self.peer) {
            return Err(AbortError::Reused);
        }
        Ok(fd)
    }
}

/// A shared handle on one connection's socket.
#[derive(Clone, Debug, Default)]
pub struct ConnSocket {
    slot: Arc<Mutex<Slot>>,
    /// False for the empty handle of a connection that was never recorded.
    tracked: bool,
}

/// Lives in the connection's extensions; releases the handle when the dispatcher drops the
/// connection, keeping an orphan if its connection actor ended with data unsent (see the module docs).
#[derive(Debug)]
pub struct SocketOwner(ConnSocket);

impl Drop for SocketOwner {
    fn drop(&mut self) {
        let mut slot = self.0.lock();
        let Slot::Open(open) = std::mem::take(&mut *slot) else {
            // Nothing else is recorded in a connection's extensions.
            return;
        };
        if !open.ended || open.reset {
            return;
        }
        // SAFETY: the slot is locked and the dispatcher closes the descriptor only after this.
        let orphan = unsafe { open.socket() }.and_then(|fd| {
            Ok(match unsent_bytes(&fd)? {
                0 => None,
                _ => Some(fd.try_clone_to_owned()?),
            })
        });
        match orphan {
            Ok(Some(fd)) => {
                *slot = Slot::Orphan {
                    fd,
                    peer: open.peer,
                }
            }
            Ok(None) | Err(AbortError::Reused) => {}
            Err(e) => log::debug!("peer={} closing: {e}", open.peer),
        }
    }
}

/// Bytes queued in the kernel for this socket and not yet sent (the peer's window is closed).
fn unsent_bytes(fd: &impl AsFd) -> std::io::Result<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::SIOCOUTQNSD as _, &mut unsent) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(unsent).unwrap_or(0))
}

/// The listener's on-connect callback (`src/http_server.rs`): records each plain TCP connection's socket.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tcp) = conn.downcast_ref::<TcpStream>() else {
        return;
    };
    match tcp.peer_addr() {
        Ok(peer) => {
            ext.insert(SocketOwner(ConnSocket {
                slot: Arc::new(Mutex::new(Slot::Open(Open {
                    fd: tcp.as_raw_fd(),
                    peer,
                    ended: false,
                    reset: false,
                }))),
                tracked: true,
            }));
        }
        // The peer is already gone; nothing will be served on this connection.
        Err(e) => log::debug!("accepted connection without a peer address: {e}"),
    }
}

impl ConnSocket {
    /// The socket of the connection `req` came on (an empty handle if it was not recorded).
    pub fn of(req: &HttpRequest) -> Self {
        req.conn_data::<SocketOwner>()
            .map(|owner| owner.0.clone())
            .unwrap_or_default()
    }

    /// A handle for a connection actor without a socket of its own: [`abort`](Self::abort) notifies
    /// the returned `Notify` (one permit, kept if nobody waits yet); the transport calls
    /// [`release`](Self::release) once the actor is gone.
    pub fn detached() -> (Self, Arc<Notify>) {
        let stop = Arc::new(Notify::new());
        let socket = ConnSocket {
            slot: Arc::new(Mutex::new(Slot::Detached(stop.clone()))),
            tracked: true,
        };
        (socket, stop)
    }

    /// A handle on this connection for one response ([`release`](Self::release) it when the
    /// response ends).
    pub fn view(&self) -> Self {
        ConnSocket {
            slot: Arc::new(Mutex::new(Slot::Via(self.clone()))),
            tracked: true,
        }
    }

    /// A detached handle's transport, or a view's response, ended: nothing is left to shut.
    pub fn release(&self) {
        let mut slot = self.lock();
        if matches!(*slot, Slot::Detached(_) | Slot::Via(_)) {
            *slot = Slot::Closed;
        }
    }

    /// The connection a view acts on (cloned out, so its lock is taken after the view's is
    /// released: never both at once).
    fn via(&self) -> Option<ConnSocket> {
        match &*self.lock() {
            Slot::Via(inner) => Some(inner.clone()),
            _ => None,
        }
    }

    /// The connection actor on this connection ended: if the dispatcher drops the connection with data
    /// the client has not taken, keep it for the watchdog (see the module docs).
    pub fn session_ended(&self) {
        if let Slot::Open(open) = &mut *self.lock() {
            open.ended = true;
        }
    }

    /// Whether the connection is still open (false for an empty handle).
    pub fn is_open(&self) -> bool {
        if let Some(inner) = self.via() {
            return inner.is_open();
        }
        !matches!(*self.lock(), Slot::Closed)
    }

    /// Whether the client closed its side of the connection (an end of stream is waiting to be
    /// read). The HTTP layer does not tell a streaming response (SignalR's Server-Sent Events) that
    /// its client left until a write fails; this lets that transport notice at once. False when
    /// unknown (an untracked or detached handle) or while the client still sends.
    pub fn peer_closed(&self) -> bool {
        if let Some(inner) = self.via() {
            return inner.peer_closed();
        }
        let slot = self.lock();
        match &*slot {
            Slot::Open(open) => {
                // SAFETY: `slot` is held (see `Open::socket`).
                let Ok(fd) = (unsafe { open.socket() }) else {
                    return true;
                };
                let mut byte = [0u8; 1];
                // SAFETY: recv writes at most one byte into `byte`; MSG_PEEK leaves it queued.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        byte.as_mut_ptr().cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                n == 0
            }
            Slot::Closed => self.tracked,
            Slot::Orphan { .. } | Slot::Detached(_) | Slot::Via(_) => false,
        }
    }

    /// The client's address, while the connection is open.
    pub fn peer(&self) -> Option<SocketAddr> {
        if let Some(inner) = self.via() {
            return inner.peer();
        }
        match &*self.lock() {
            Slot::Closed => None,
            Slot::Open(open) => Some(open.peer),
            Slot::Orphan { peer, .. } => Some(*peer),
            Slot::Detached(_) | Slot::Via(_) => None,
        }
    }

    /// Shuts the connection. One the dispatcher still serves is reset: SO_LINGER 0 (so the
    /// close is a reset and unsent data is discarded, not delivered first) and a shutdown of both
    /// directions, which wakes the dispatcher; its next write fails and it drops the connection.
    /// An orphan is closed, with a reset if the client has still not taken everything. A detached
    /// handle notifies its transport, which drops what it had not delivered.
    pub fn abort(&self) -> Result<Aborted, AbortError> {
        if let Some(inner) = self.via() {
            return inner.abort();
        }
        let mut slot = self.lock();
        match &mut *slot {
            Slot::Detached(stop) => {
                stop.notify_one();
                *slot = Slot::Closed;
                Ok(Aborted::Reset)
            }
            // Released between `via()` and here: the response ended.
            Slot::Via(_) => Err(AbortError::Closed),
            Slot::Closed if self.tracked => Err(AbortError::Closed),
            Slot::Closed => Err(AbortError::Untracked),
            Slot::Open(open) => {
                // SAFETY: `slot` is held (see `Open::socket`).
                let fd = unsafe { open.socket() }?;
                let socket = socket2::SockRef::from(&fd);
                socket.set_linger(Some(Duration::ZERO))?;
                socket.shutdown(Shutdown::Both)?;
                open.reset = true;
                Ok(Aborted::Reset)
            }
            Slot::Orphan { fd, .. } => {
                let reset = unsent_bytes(fd).and_then(|unsent| {
                    if unsent > 0 {
                        socket2::SockRef::from(&*fd).set_linger(Some(Duration::ZERO))?;
                    }
                    Ok(unsent > 0)
                });
                // Dropping the duplicate is the last close (a reset if lingering is off), and
                // happens whatever the checks said: the watchdog asks once.
                *slot = Slot::Closed;
                Ok(if reset? {
                    Aborted::Reset
                } else {
                    Aborted::Closed
                })
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // The slot is a plain value; a panic elsewhere cannot leave it half-written.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! The TCP connection under a WebSocket session, as something outside the session can shut it.
//!
//! actix-web-actors runs a session only when the HTTP layer polls its response body, and the h1
//! dispatcher stops polling while its write buffer is full and the socket takes nothing. So a
//! session whose client stopped reading cannot close its own connection: its close frame, if it
//! could even queue one, waits behind the unsent data. The session watchdog
//! ([`super::watchdog`]) shuts such a connection from outside with [`ConnSocket::abort`]: a reset
//! that discards the unsent data. The failed write then makes the dispatcher drop the connection,
//! and with it the session (actix runs `stopped()` on drop).
//!
//! [`recorder`] (installed with `HttpServer::on_connect`) records each accepted connection's
//! descriptor and peer in the connection's extensions, in a [`SocketOwner`]; the upgrade routes
//! hand a clone ([`ConnSocket::of`]) to the session. The dispatcher drops its connection data
//! before it closes the socket (`conn_data` is declared before `io` in actix-http's h1
//! `Dispatcher`), and the owner releases the descriptor then, under the same lock `abort` holds,
//! so `abort` never touches a descriptor that was closed and reused; it also checks the peer
//! address, in case a later actix-http drops them in another order.
//!
//! The owner also resets a connection that the HTTP layer lets go of while the kernel still holds
//! data it could not even send (the client takes nothing): after a session ends, actix-http
//! flushes what it can, waits `client_disconnect_timeout` for the client and drops the
//! connection, discarding what it still buffered. A plain close would leave the kernel trying to
//! deliver that cut-short stream, close frame missing, for as long as the client reads nothing;
//! the reset tells the client at once.
//!
//! Only plain TCP is recorded: the server has no TLS listener (TLS ends at the load balancer).
//! A connection of another stream type has an empty handle, which `abort` reports as
//! [`AbortError::Untracked`].

use std::any::Any;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;

use crate::metrics::Metrics;

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

/// One open connection's socket.
#[derive(Clone, Copy, Debug)]
struct Open {
    fd: RawFd,
    peer: SocketAddr,
    /// Already reset by [`ConnSocket::abort`].
    reset: bool,
}

/// The recorded socket of one connection, or nothing once it closed.
type Slot = Option<Open>;

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

/// Lives in the connection's extensions; releases the handle when the connection is dropped,
/// resetting it if the client left data untaken (see the module docs).
pub struct SocketOwner {
    socket: ConnSocket,
    metrics: Arc<Metrics>,
}

impl Drop for SocketOwner {
    fn drop(&mut self) {
        let Some(open) = self.socket.lock().take() else {
            return;
        };
        if open.reset {
            return;
        }
        // SAFETY: the slot was taken under its lock just now, before the dispatcher closes the
        // descriptor.
        let untaken = unsafe { open.socket() }.and_then(|fd| {
            let unsent = unsent_bytes(&fd)?;
            if unsent > 0 {
                socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO))?;
            }
            Ok(unsent)
        });
        match untaken {
            Ok(0) | Err(AbortError::Reused) => {}
            Ok(unsent) => {
                self.metrics
                    .connection_resets
                    .with_label_values(&["released"])
                    .inc();
                log::info!(
                    "peer={} dropped with {unsent} bytes the client never took; connection reset",
                    open.peer
                );
            }
            Err(e) => log::debug!("peer={} closing: {e}", open.peer),
        }
    }
}

/// Bytes queued in the kernel for this socket and not yet sent (the peer's window is closed).
fn unsent_bytes(fd: &BorrowedFd<'_>) -> std::io::Result<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCOUTQNSD as _, &mut unsent) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(unsent).unwrap_or(0))
}

/// The `HttpServer::on_connect` callback: records each plain TCP connection's socket.
pub fn recorder(metrics: Arc<Metrics>) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync {
    move |conn, ext| {
        let Some(tcp) = conn.downcast_ref::<TcpStream>() else {
            return;
        };
        match tcp.peer_addr() {
            Ok(peer) => {
                let open = Open {
                    fd: tcp.as_raw_fd(),
                    peer,
                    reset: false,
                };
                ext.insert(SocketOwner {
                    socket: ConnSocket {
                        slot: Arc::new(Mutex::new(Some(open))),
                        tracked: true,
                    },
                    metrics: metrics.clone(),
                });
            }
            // The peer is already gone; nothing will be served on this connection.
            Err(e) => log::debug!("accepted connection without a peer address: {e}"),
        }
    }
}

impl ConnSocket {
    /// The socket of the connection `req` came on (an empty handle if it was not recorded).
    pub fn of(req: &HttpRequest) -> Self {
        req.conn_data::<SocketOwner>()
            .map(|owner| owner.socket.clone())
            .unwrap_or_default()
    }

    /// Whether the connection is still open (false for an empty handle).
    pub fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// The client's address, while the connection is open.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.lock().map(|open| open.peer)
    }

    /// Resets the connection: SO_LINGER 0 (so the close is a reset and unsent data is discarded,
    /// not delivered first) and a shutdown of both directions, which wakes the dispatcher; its
    /// next write fails and it drops the connection.
    pub fn abort(&self) -> Result<(), AbortError> {
        let mut slot = self.lock();
        let Some(open) = slot.as_mut() else {
            return Err(if self.tracked {
                AbortError::Closed
            } else {
                AbortError::Untracked
            });
        };
        // SAFETY: `slot` is held (see `Open::socket`).
        let fd = unsafe { open.socket() }?;
        let socket = socket2::SockRef::from(&fd);
        socket.set_linger(Some(Duration::ZERO))?;
        socket.shutdown(Shutdown::Both)?;
        open.reset = true;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // The slot is a plain value; a panic elsewhere cannot leave it half-written.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! `baseline`: the smallest sensible Rust WebSocket broadcast server speaking Switchyard's native
//! wire contract (and the SignalR hub subset the load generator uses, in JSON and MessagePack),
//! publishing over a WebSocket (`publish` frames, pipelined, acknowledged with `published`) or over
//! HTTP (pipelined keep-alive `POST /api/v1/publish` and `POST /api/v1/publish/batch`). It is the
//! near-limit reference the benchmarks compare Switchyard against, not a product: tokens are
//! accepted without verification and every channel is open.
//!
//! This file owns the command line, the file-descriptor limit, the runtime and the accept loop.

mod frames;
mod http;
mod rooms;
mod session;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

use frames::ServerIdentity;
use rooms::Rooms;

/// Pause after a failed `accept` (usually EMFILE) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How often a change in the slow-consumer drop count is reported on stderr.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Backlog of the listening socket.
const LISTEN_BACKLOG: u32 = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "baseline",
    about = "Minimal tokio-tungstenite broadcast server (benchmark reference)"
)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one. The first line on stdout is `listening on PORT`.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Capacity of each connection's outbound queue, in frames. A subscriber whose queue is full
    /// when an event is offered is dropped (closed with 4000, counted): publishes never wait.
    #[arg(long, default_value_t = 4096)]
    queue_capacity: usize,
    /// Initial read buffer of each WebSocket (tungstenite's default of 128 KiB costs that much
    /// memory per idle connection).
    #[arg(long, default_value_t = 8 * 1024)]
    ws_read_buffer_bytes: usize,
    /// Bytes a connection's writer buffers before writing to the socket while batching frames.
    #[arg(long, default_value_t = 16 * 1024)]
    ws_write_buffer_bytes: usize,
    /// Seconds between server heartbeats (WebSocket ping / SignalR type-6 ping).
    #[arg(long, default_value_t = 15)]
    heartbeat_secs: u64,
}

/// Everything the connections share.
pub struct AppState {
    pub rooms: Rooms,
    pub identity: ServerIdentity,
    pub queue_capacity: usize,
    pub heartbeat_interval: Duration,
    pub ws_read_buffer_bytes: usize,
    pub ws_write_buffer_bytes: usize,
    pub(crate) next_connection: AtomicU64,
}

impl AppState {
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit, and the hard limit to the kernel's
/// `nr_open` where the process is allowed to. Returns the soft limit in force afterwards.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(limit.rlim_max);
        let wanted = libc::rlimit {
            rlim_cur: nr_open.max(limit.rlim_max),
            rlim_max: nr_open.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return wanted.rlim_cur;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

async fn serve(args: Args) -> std::io::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener: TcpListener = socket.listen(LISTEN_BACKLOG)?;
    let port = listener.local_addr()?.port();
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {port}")?;
        stdout.flush()?;
    }
    let state = Arc::new(AppState {
        rooms: Rooms::new(),
        identity: ServerIdentity::new(),
        queue_capacity: args.queue_capacity,
        heartbeat_interval: Duration::from_secs(args.heartbeat_secs),
        ws_read_buffer_bytes: args.ws_read_buffer_bytes,
        ws_write_buffer_bytes: args.ws_write_buffer_bytes,
        next_connection: AtomicU64::new(1),
    });
    tokio::spawn(report_slow_consumer_drops(Arc::clone(&state)));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(http::serve_connection(stream, Arc::clone(&state)));
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Logs the slow-consumer drop count whenever it changes, so a benchmark run that lost
/// subscribers is visible in the server log.
async fn report_slow_consumer_drops(state: Arc<AppState>) {
    let mut reported = 0;
    let mut ticker = tokio::time::interval(DROP_REPORT_INTERVAL);
    loop {
        ticker.tick().await;
        let dropped = state.rooms.slow_consumers_dropped();
        if dropped != reported {
            eprintln!("baseline: {dropped} slow consumers dropped so far");
            reported = dropped;
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let fd_limit = raise_fd_limit();
    eprintln!("baseline: file-descriptor limit {fd_limit}");
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers);
    }
    runtime.build()?.block_on(serve(args))
}

//! Client-side networking at scale: the file-descriptor limit, parsing the target base URL, and a
//! dialer that spreads client sockets over several loopback source addresses (127.0.0.1 …
//! 127.0.0.N) so that more connections fit than one address's ephemeral port range allows.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::{TcpSocket, TcpStream};

/// Connections planned per loopback source address when `--source-addrs` is not given (the
/// default ephemeral range holds about 28,000 ports per address).
pub const CONNECTIONS_PER_SOURCE_ADDR: usize = 20_000;
/// File descriptors kept free beyond the client sockets (runtime, stdio, publisher pool).
pub const FD_RESERVE: u64 = 32;

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (and the hard limit too when permitted).
/// Returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
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
            .unwrap_or(limit.rlim_max)
            .max(limit.rlim_max);
        let wanted = libc::rlimit {
            rlim_cur: nr_open,
            rlim_max: nr_open,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// A target parsed from a base URL such as `http://127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, for `Host` headers and WebSocket URLs.
    pub authority: String,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// Parses `http://host:port` (also `ws://`, or no scheme) and resolves the host once.
    pub async fn resolve(base_url: &str) -> io::Result<Self> {
        let rest = base_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(base_url);
        let authority = rest.split('/').next().unwrap_or(rest).to_owned();
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve {base_url}"),
                )
            })?;
        Ok(Self {
            authority: with_port,
            addr,
        })
    }
}

/// How many source addresses to use for `connections`, when the flag does not say.
pub fn default_source_addrs(connections: usize) -> usize {
    connections.div_ceil(CONNECTIONS_PER_SOURCE_ADDR).max(1)
}

/// Opens TCP connections to one endpoint, round-robin over loopback source addresses.
pub struct Dialer {
    pub endpoint: Endpoint,
    sources: Vec<Ipv4Addr>,
}

impl Dialer {
    /// With `source_addrs` > 1 and a loopback IPv4 target, sockets are bound to 127.0.0.1 … 127.0.0.N
    /// before connecting; otherwise the kernel picks the source.
    pub fn new(endpoint: Endpoint, source_addrs: usize) -> Self {
        let loopback_v4 = matches!(endpoint.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let sources = if source_addrs > 1 && loopback_v4 {
            (1..=source_addrs.min(u8::MAX as usize))
                .map(|n| Ipv4Addr::new(127, 0, 0, n as u8))
                .collect()
        } else {
            Vec::new()
        };
        Self { endpoint, sources }
    }

    pub fn source_count(&self) -> usize {
        self.sources.len().max(1)
    }

    /// Connects the `index`-th client socket (the index picks the source address).
    pub async fn connect(&self, index: usize) -> io::Result<TcpStream> {
        let socket = match self.endpoint.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            set_bind_address_no_port(&socket);
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        }
        let stream = socket.connect(self.endpoint.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Lets the kernel choose the source port at connect time (per destination) rather than at bind
/// time, so bound sockets do not exhaust the port range early. Best effort.
fn set_bind_address_no_port(socket: &TcpSocket) {
    let enable: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&enable as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

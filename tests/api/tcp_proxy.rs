//! A TCP proxy a test can sever, to drop a client's socket without any close frame (what a
//! Wi-Fi drop looks like to both ends), hold new connections for a while, and mute: the server
//! still gets every request but its replies are thrown away (a reply lost on the way back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<actix_web::rt::task::JoinHandle<()>>>>,
    hold: Arc<AtomicBool>,
    mute: Arc<AtomicBool>,
    /// Mute as soon as a request containing these bytes passes (its reply is the first lost).
    mute_after: Arc<Mutex<Option<Vec<u8>>>>,
    /// The first line of each connection's first bytes (an HTTP request line), in order.
    request_lines: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Forwards 127.0.0.1:<port> to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<_>>> = Arc::default();
        let hold = Arc::new(AtomicBool::new(false));
        let mute = Arc::new(AtomicBool::new(false));
        let mute_after: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let request_lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (c, h, m, ma, r) = (
            conns.clone(),
            hold.clone(),
            mute.clone(),
            mute_after.clone(),
            request_lines.clone(),
        );
        actix_web::rt::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (h, m, ma, r) = (h.clone(), m.clone(), ma.clone(), r.clone());
                let task = actix_web::rt::spawn(async move {
                    // Looked at without consuming: the bytes still go to the server.
                    let mut first = [0u8; 512];
                    if let Ok(n) = inbound.peek(&mut first).await {
                        let text = String::from_utf8_lossy(&first[..n]).into_owned();
                        if let Some(line) = text.lines().next() {
                            r.lock().unwrap().push(line.to_owned());
                        }
                    }
                    while h.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let (mut from_client, mut to_client) = inbound.into_split();
                        let (mut from_server, mut to_server) = outbound.into_split();
                        let up = async {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = from_client.read(&mut buf).await?;
                                if n == 0 {
                                    return Ok::<_, std::io::Error>(());
                                }
                                {
                                    // The guard's scope ends before the write's await.
                                    let mut armed = ma.lock().unwrap();
                                    if let Some(pattern) = armed.as_deref() {
                                        if buf[..n].windows(pattern.len()).any(|w| w == pattern) {
                                            m.store(true, Ordering::SeqCst);
                                            *armed = None;
                                        }
                                    }
                                }
                                to_server.write_all(&buf[..n]).await?;
                            }
                        };
                        let down = async {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = from_server.read(&mut buf).await?;
                                if n == 0 {
                                    return Ok::<_, std::io::Error>(());
                                }
                                if !m.load(Ordering::SeqCst) {
                                    to_client.write_all(&buf[..n]).await?;
                                }
                            }
                        };
                        tokio::select! {
                            _ = up => {}
                            _ = down => {}
                        }
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            conns,
            hold,
            mute,
            mute_after,
            request_lines,
        }
    }

    /// The request lines seen so far (e.g. `GET /hubs/notifications?id=… HTTP/1.1`).
    pub fn request_lines(&self) -> Vec<String> {
        self.request_lines.lock().unwrap().clone()
    }

    /// Drops every proxied connection at once (both sockets close, no WebSocket close frame).
    pub fn sever(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// While muted, what the server sends is read and thrown away; requests still reach it.
    pub fn mute(&self, on: bool) {
        self.mute.store(on, Ordering::SeqCst);
    }

    /// Mutes (as [`Proxy::mute`]) once a request containing `pattern` passes: that request
    /// reaches the server, its reply and everything after it are lost.
    pub fn mute_after(&self, pattern: &[u8]) {
        *self.mute_after.lock().unwrap() = Some(pattern.to_vec());
    }

    /// Whether the proxy is muted now (by [`Proxy::mute`], or once [`Proxy::mute_after`]'s
    /// request passed).
    pub fn is_muted(&self) -> bool {
        self.mute.load(Ordering::SeqCst)
    }

    /// While held, new connections wait before reaching the server.
    pub fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }
}

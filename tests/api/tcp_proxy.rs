//! A TCP proxy a test can sever, to drop a client's socket without any close frame (what a
//! Wi-Fi drop looks like to both ends), and hold new connections for a while.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<actix_web::rt::task::JoinHandle<()>>>>,
    hold: Arc<AtomicBool>,
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
        let request_lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (c, h, r) = (conns.clone(), hold.clone(), request_lines.clone());
        actix_web::rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (h, r) = (h.clone(), r.clone());
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
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            conns,
            hold,
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

    /// While held, new connections wait before reaching the server.
    pub fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }
}

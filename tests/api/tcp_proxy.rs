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
}

impl Proxy {
    /// Forwards 127.0.0.1:<port> to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<_>>> = Arc::default();
        let hold = Arc::new(AtomicBool::new(false));
        let (c, h) = (conns.clone(), hold.clone());
        actix_web::rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let h = h.clone();
                let task = actix_web::rt::spawn(async move {
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
        Self { port, conns, hold }
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

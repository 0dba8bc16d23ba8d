//! The HTTP listener: the socket bound with the configured accept backlog, and actix-web's
//! server assembled from its parts (actix-server, actix-http, the app) the way `HttpServer`
//! assembles it, with two differences: every accepted connection is wrapped in
//! [`ParserRefusals`], so the refusals the HTTP/1 parser writes itself are problem JSON too, and
//! every accepted socket has `TCP_NODELAY` set (see [`serve`]).

use std::any::Any;
use std::net::{TcpListener, ToSocketAddrs};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_server::Server;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions};
use actix_web::rt::net::TcpStream;
use anyhow::Context;
use prometheus::IntCounterVec;

use crate::parser_refusals::ParserRefusals;
use crate::settings::ServerSettings;

/// `HttpServer`'s defaults, kept: a request head must arrive within this time...
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and a closing connection gets this long to go away.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the HTTP listener with the configured accept backlog: `TcpListener::bind` uses 128,
/// which drops connection attempts (retried by clients only after 1 s) when a thousand displays
/// reconnect at once.
pub fn bind_listener(server: &ServerSettings) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = (server.host.as_str(), server.port)
        .to_socket_addrs()?
        .next()
        .context("the host resolves to no address")?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std's bind does on Unix: a restarted node can take its port back at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(server.backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Called with each accepted TCP connection and its extensions (`HttpServer::on_connect`'s
/// callback); what it inserts, `HttpRequest::conn_data` finds.
pub type OnConnect = fn(&dyn Any, &mut Extensions);

/// How the server runs: worker threads, the drain time at shutdown, where parser refusals are
/// counted, what each accepted connection records.
pub struct ServeOptions {
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    pub http_errors: IntCounterVec,
    pub on_connect: OnConnect,
}

/// Serves the app `factory` builds (once per worker) on `listener`, HTTP/1.1 only.
///
/// Every accepted socket gets `TCP_NODELAY` (`HttpServer` sets it only when asked, and this
/// assembly bypasses even that): the node writes small frames as events come (a notification, a
/// `published` reply), and with Nagle's algorithm on, a frame written while the previous one is
/// unacknowledged waits in the kernel for the client's acknowledgement, which a client may delay
/// by up to 40 ms. Events would then reach a busy subscriber late by that much, however fast the
/// node handled them.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    options: ServeOptions,
    factory: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let ServeOptions {
        workers,
        shutdown_timeout_secs,
        http_errors,
        on_connect,
    } = options;
    Ok(builder
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(shutdown_timeout_secs)
        .listen("switchyard-http", listener, move || {
            let shutdown = shutdown.clone();
            let http_errors = http_errors.clone();
            let app = factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            let http = HttpService::build()
                // Idle keep-alive connections close as soon as the node starts shutting down.
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .h1_allow_half_closed(true)
                .local_addr(addr)
                // The callback sees the TCP stream itself, as under `HttpServer`.
                .on_connect_ext(
                    move |io: &ParserRefusals<TcpStream>, ext: &mut Extensions| {
                        on_connect(io.get_ref() as &dyn Any, ext)
                    },
                )
                // AppConfig's constructor is private to actix-web; its host and address serve URL
                // generation only, which Switchyard does not use (it reads the Host header).
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                if let Err(e) = io.set_nodelay(true) {
                    log::debug!("TCP_NODELAY not set on an accepted connection: {e}");
                }
                let peer = io.peer_addr().ok();
                let io = ParserRefusals::new(io, http_errors.clone());
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((io, peer)))
            })
            .and_then(http)
        })?
        .run())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, Ordering};

    use actix_web::App;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// What the last accepted socket said about `TCP_NODELAY`: 0 not seen yet, 1 off, 2 on.
    static NODELAY: AtomicU8 = AtomicU8::new(0);

    fn record_nodelay(conn: &dyn Any, _: &mut Extensions) {
        if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
            let on = tcp.nodelay().expect("TCP_NODELAY readable");
            NODELAY.store(if on { 2 } else { 1 }, Ordering::SeqCst);
        }
    }

    /// Accepted sockets send small frames at once (see [`serve`]); before, Nagle's algorithm
    /// was on for every connection.
    #[actix_web::test]
    async fn accepted_connections_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ServeOptions {
            workers: 1,
            shutdown_timeout_secs: 0,
            http_errors: IntCounterVec::new(prometheus::Opts::new("t", "t"), &["status"]).unwrap(),
            on_connect: record_nodelay,
        };
        let server = serve(listener, options, App::new).unwrap();
        let handle = server.handle();
        actix_web::rt::spawn(server);

        let mut client = actix_web::rt::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
        assert_eq!(NODELAY.load(Ordering::SeqCst), 2, "TCP_NODELAY is off");
        handle.stop(false).await;
    }
}

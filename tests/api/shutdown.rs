//! Graceful shutdown: stop accepting, close every session with 1012, finish within the timeout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

#[actix_web::test]
async fn shutdown_closes_every_session_with_1012_and_stops() {
    let app = spawn_app().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut ws = app.connect(&customer("acme", &format!("c{i}"), None)).await;
        ws.subscribed("tenant:acme:broadcast").await;
        clients.push(ws);
    }
    let started = Instant::now();
    let handle = app.handle.clone();
    actix_web::rt::spawn(async move { handle.shutdown().await });
    for ws in &mut clients {
        assert_eq!(ws.closed().await, 1012);
    }
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.server).await;
    assert!(stopped.is_ok(), "the server stopped");
    let limit =
        Duration::from_millis(app.settings.server.shutdown_timeout_ms) + Duration::from_secs(2);
    assert!(
        started.elapsed() < limit,
        "stopped within the configured timeout"
    );
    // No new connections are accepted.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await;
    assert!(refused.is_err(), "the listener is closed");
}

/// The real binary, sent a real SIGTERM.
#[actix_web::test]
async fn sigterm_stops_the_binary_gracefully() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("SWITCHYARD__ENVIRONMENT", "test")
        .env(
            "SWITCHYARD_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("start-up log")
            .unwrap()
            .expect("the binary logs its port");
        if let Some(rest) = line.split("listening on port ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let url = format!(
        "ws://127.0.0.1:{port}/ws?access_token={}",
        token(&admin("acme"))
    );
    let mut ws = WsClient::open(url).await.expect("connect");
    ws.subscribed("tenant:acme:admins").await;

    let pid = child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    assert_eq!(ws.closed().await, 1012);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the binary exits within its shutdown timeout")
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    // Drain the log so nothing blocks.
    while let Ok(Some(_)) = lines.next_line().await {}
}

#[actix_web::test]
async fn production_refuses_to_start_without_a_key() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("SWITCHYARD__ENVIRONMENT", "production")
        .env(
            "SWITCHYARD_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("SWITCHYARD__SERVER__PORT", "0")
        .env_remove("SWITCHYARD__AUTH__JWT_SECRET")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SWITCHYARD__AUTH__JWT_SECRET"), "{stderr}");
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

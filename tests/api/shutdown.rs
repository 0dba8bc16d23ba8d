//! Graceful shutdown: stop accepting, close every session with 1012, finish within the timeout,
//! and return only once everything the node started has stopped (tasks, threads, the change-feed
//! lease, the cluster heartbeat).

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_actors::change_feed::ListenerStatus;
use switchyard_actors::channel::ChannelName;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;
use crate::redis_server::RedisServer;

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
    // Nothing of the node runs after its last word.
    let mut last = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        last = line;
    }
    assert!(last.contains("stopped in"), "logged after stopping: {last}");
}

#[actix_web::test]
async fn shutdown_returns_once_every_task_and_thread_of_the_node_has_stopped() {
    let app = spawn_app().await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    ws.subscribed("tenant:acme:broadcast").await;
    let node = app.handle.node.clone();
    let recorder = node
        .activity_recorder
        .clone()
        .expect("an activity recorder");
    let watchdog = app
        .handle
        .connections
        .watchdog
        .clone()
        .expect("a connection watchdog");
    let shard = node
        .broker
        .shard_for(&ChannelName::parse("tenant:acme:broadcast").unwrap());
    let scheduler = app.handle.background.scheduler.clone();
    for (what, running) in [
        ("activity recorder", recorder.connected()),
        ("connection watchdog", watchdog.connected()),
        ("broker shard", shard.connected()),
        ("session scheduler", scheduler.connected()),
    ] {
        assert!(running, "the {what} runs before the shutdown");
    }

    app.handle.shutdown().await;
    // Already stopped when `shutdown` returns: nothing here waits.
    for (what, running) in [
        ("activity recorder", recorder.connected()),
        ("connection watchdog", watchdog.connected()),
        ("broker shard", shard.connected()),
        ("session scheduler", scheduler.connected()),
    ] {
        assert!(!running, "the {what} still runs after the shutdown");
    }
    assert_eq!(node.shutdown.threads_running(), 0, "a node thread runs");
    assert_eq!(node.shutdown.holders(), Vec::<String>::new());
    assert_eq!(ws.closed().await, 1012);
    let stopped = tokio::time::timeout(WAIT, app.server).await;
    assert!(stopped.is_ok(), "the server stopped");
}

#[actix_web::test]
async fn shutdown_returns_after_the_change_feed_lease_is_released() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, |s| s.change_feed.retry_interval_ms = 100).await;
    let listener = app
        .handle
        .background
        .change_listener
        .clone()
        .expect("a change-feed listener on Postgres");
    eventually("the lease", || {
        let listener = listener.clone();
        async move {
            let state = listener.send(ListenerStatus).await.ok()?;
            state.leading.then_some(())
        }
    })
    .await;

    app.handle.shutdown().await;
    assert!(!listener.connected(), "the listener still runs");
    let pool = db.pg().await;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, 0, "an advisory lock is still held");
    // Another node could lead at once.
    let took: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(app.settings.change_feed.lock_key)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(took, "the lease is free");
}

#[actix_web::test]
async fn a_cluster_node_stays_out_of_the_node_list_after_shutdown() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let app = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let conn = redis.conn().await;
    let (nodes, id) = (format!("{prefix}:nodes"), app.settings.node.id.clone());
    let score = || {
        let (mut conn, nodes, id) = (conn.clone(), nodes.clone(), id.clone());
        async move {
            redis::cmd("ZSCORE")
                .arg(nodes)
                .arg(id)
                .query_async::<Option<f64>>(&mut conn)
                .await
                .unwrap()
        }
    };
    eventually("the node's first heartbeat", score).await;
    let node = app.handle.node.clone();
    assert!(
        node.shutdown.threads_running() > 0,
        "the Redis bridge's thread runs"
    );
    assert!(
        node.shutdown
            .holders()
            .contains(&"presence janitor".to_owned()),
        "the presence janitor holds the shutdown"
    );

    app.handle.shutdown().await;
    // The bridge runs on a node thread, the heartbeat on the presence janitor: both are gone.
    assert_eq!(node.shutdown.threads_running(), 0, "a node thread runs");
    assert_eq!(node.shutdown.holders(), Vec::<String>::new());
    assert_eq!(score().await, None, "the shutdown took the node out");
    // Several heartbeats later, nothing has put it back.
    let beat = Duration::from_millis(app.settings.presence.heartbeat_interval_ms);
    tokio::time::sleep(beat * 3).await;
    assert_eq!(score().await, None, "a heartbeat after the shutdown");
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

//! Test harness: `spawn_app()` starts a real node on a free port in this process; `TestApp` has one
//! helper per API call; `WsClient` is a real WebSocket client (tokio-tungstenite).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchyard::auth::MintClaims;
use switchyard::settings::Settings;
use switchyard::startup::{AppHandle, Application};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SECRET: &str = "test-secret-not-for-production";

/// The test configuration (`config/test.toml`), independent of the process environment.
pub fn test_settings() -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let env: HashMap<String, String> =
        [("SWITCHYARD__ENVIRONMENT".to_owned(), "test".to_owned())].into();
    Settings::load_from(&dir, env).expect("test settings load")
}

pub struct TestApp {
    pub port: u16,
    pub handle: AppHandle,
    pub settings: Settings,
    pub http: awc::Client,
    pub server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    /// The node's own fresh database, when the test did not bring one (dropped with the app).
    pub own_db: Option<TestDb>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a node with the test settings adjusted by `tweak`, on a fresh SQLite file of its own.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::sqlite();
    let mut app = spawn_app_with_db(&db, tweak).await;
    app.own_db = Some(db);
    app
}

/// Starts a node on `db` (several nodes may share one) with the test settings adjusted by `tweak`.
pub async fn spawn_app_with_db(db: &TestDb, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut settings = test_settings();
    settings.database.url = db.url().to_owned();
    tweak(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let port = app.port();
    let handle = app.handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        port,
        handle,
        settings,
        http: awc::Client::builder().timeout(WAIT).finish(),
        server,
        own_db: None,
    }
}

/// The maintenance database tests create their Postgres databases from
/// (`SWITCHYARD_TEST_POSTGRES_URL` overrides it).
pub fn postgres_admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database for one test: a SQLite file in a temporary directory, or a Postgres database
/// `sy_test_<uuid>` created through the maintenance connection and dropped when this is dropped.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("switchyard.db").display());
        TestDb::Sqlite { _dir: dir, url }
    }

    pub async fn postgres() -> Self {
        let name = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("the test Postgres is reachable (SWITCHYARD_TEST_POSTGRES_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = sqlx::Connection::close(conn).await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestDb::Postgres {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// A connection to the test's Postgres database, to change rows behind the nodes' backs.
    pub async fn pg(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.url()).await.expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres { name, .. } = self else {
            return;
        };
        let (name, admin) = (name.clone(), postgres_admin_url());
        // Drop is synchronous and may run inside the test's runtime: use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a test database (it is left behind)");
        }
    }
}

/// Cluster-mode settings for a node on `redis_url`, sharing `prefix` with its peers; timers
/// are short so tests see heartbeats, grace periods and retries quickly.
pub fn cluster_settings(s: &mut Settings, redis_url: &str, prefix: &str) {
    // Nodes in one test process share a pid, so the default "<host>-<pid>" id would collide.
    s.node.id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    s.redis.url = secrecy::SecretString::from(redis_url.to_owned());
    s.redis.prefix = prefix.to_owned();
    s.redis.publish_retry_attempts = 3;
    s.redis.publish_retry_delay_ms = 50;
    s.redis.command_timeout_ms = 500;
    s.redis.reconnect_min_ms = 50;
    s.redis.reconnect_max_ms = 300;
    s.presence.node_ttl_secs = 2;
    s.presence.heartbeat_interval_ms = 200;
    s.presence.offline_grace_ms = 400;
}

/// A node as a real process of the `switchyard` binary (so a test can SIGKILL it), in the test
/// environment with `env` on top; returns the process and the port it listens on. Its log is
/// read (and dropped) so it never blocks on a full pipe.
pub async fn spawn_node_process(env: &[(&str, &str)]) -> (tokio::process::Child, u16) {
    let (node, port, _) = spawn_node_process_logged(env).await;
    (node, port)
}

/// A node process's log (its stderr) so far, one line per entry.
pub type NodeLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`spawn_node_process`], keeping the node's log lines after the start-up for the test to read
/// (e.g. to insist that nothing panicked).
pub async fn spawn_node_process_logged(
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16, NodeLog) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut node = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    node.env("SWITCHYARD__ENVIRONMENT", "test")
        .env(
            "SWITCHYARD_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut node = node.spawn().unwrap();
    let mut lines = BufReader::new(node.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the node logs its port");
        if let Some(rest) = line.split("listening on port ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let log = NodeLog::default();
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    (node, port, log)
}

/// A node in cluster mode.
pub async fn spawn_cluster_node(
    redis_url: &str,
    prefix: &str,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let (url, prefix) = (redis_url.to_owned(), prefix.to_owned());
    spawn_app_with(move |s| {
        cluster_settings(s, &url, &prefix);
        tweak(s);
    })
    .await
}

/// A key prefix no other test shares.
pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// Polls `check` until it returns `Some`, for at most `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Who a token is for.
#[derive(Clone, Debug)]
pub struct As {
    pub role: &'static str,
    pub tenant: Option<&'static str>,
    pub sub: String,
    pub session: Option<&'static str>,
}

pub fn admin(tenant: &'static str) -> As {
    As {
        role: "Admin",
        tenant: Some(tenant),
        sub: format!("admin-{tenant}"),
        session: None,
    }
}
pub fn staff(tenant: &'static str) -> As {
    As {
        role: "Staff",
        tenant: Some(tenant),
        sub: format!("staff-{tenant}"),
        session: None,
    }
}
pub fn customer(tenant: &'static str, sub: &str, session: Option<&'static str>) -> As {
    As {
        role: "Customer",
        tenant: Some(tenant),
        sub: sub.to_owned(),
        session,
    }
}
pub fn service() -> As {
    As {
        role: "Service",
        tenant: None,
        sub: "backend".into(),
        session: None,
    }
}
pub fn operator() -> As {
    As {
        role: "Operator",
        tenant: None,
        sub: "ops".into(),
        session: None,
    }
}

/// A token signed with the test secret, valid for `ttl` seconds from now (negative = expired).
pub fn token_with_ttl(who: &As, ttl: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = MintClaims {
        sub: who.sub.clone(),
        tenant_key: who.tenant.map(str::to_owned),
        role: who.role.to_owned(),
        session_id: who.session.map(str::to_owned),
        exp: (now + ttl) as u64,
        iat: now as u64,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn token(who: &As) -> String {
    token_with_ttl(who, 3600)
}

impl TestApp {
    /// Shuts the node down (the designed sequence) and waits until its server stopped.
    pub async fn stop(self) {
        self.handle.shutdown().await;
        let _ = self.server.await;
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.http.put(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send_json(body).await.expect("http request");
        let status = res.status().as_u16();
        let bytes = res.body().await.expect("http body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send().await.expect("http request");
        let status = res.status().as_u16();
        let bytes = res.body().await.expect("http body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Opens a dining session as `Service`; returns the created session.
    pub async fn open_session(&self, tenant: &str, session_id: &str, table: Value) -> Value {
        let (status, body) = self
            .post_json(
                &format!("/api/v1/tenants/{tenant}/sessions"),
                Some(&token(&service())),
                &json!({"tableNumber": table, "sessionId": session_id}),
            )
            .await;
        assert_eq!(status, 201, "open session {session_id}: {body}");
        body
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Opens the native protocol as `who`.
    pub async fn connect(&self, who: &As) -> WsClient {
        self.connect_token(&token(who))
            .await
            .expect("websocket upgrade")
    }

    /// Opens `/ws?access_token=…`; the error carries the HTTP status and body on refusal.
    pub async fn connect_token(&self, token: &str) -> Result<WsClient, (u16, String)> {
        let url = self.ws_url(&format!("/ws?access_token={token}"));
        WsClient::open(url).await
    }

    pub async fn publish(&self, who: &As, channel: &str, event: &str, data: Value) -> (u16, Value) {
        let body = json!({"channel": channel, "event": event, "data": data});
        self.post_json("/api/v1/publish", Some(&token(who)), &body)
            .await
    }

    /// One `Service` connection per channel of `channels`, each subscribed to its channel.
    pub async fn subscriber_per_channel(&self, channels: &[&str]) -> Vec<WsClient> {
        let mut subs = Vec::with_capacity(channels.len());
        for channel in channels {
            let mut ws = self.connect(&service()).await;
            ws.subscribed(channel).await;
            subs.push(ws);
        }
        subs
    }

    /// `POST /api/v1/publish/batch` of `events` as a back end (`Service`).
    pub async fn publish_batch(&self, events: &[Value]) -> (u16, Value) {
        let body = json!({ "events": events });
        self.post_json("/api/v1/publish/batch", Some(&token(&service())), &body)
            .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send_json(body).await.expect("http request");
        let status = res.status().as_u16();
        let bytes = res.body().await.expect("http body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> (u16, String, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .insert_header(("content-type", content_type));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send_body(body.to_owned()).await.expect("http request");
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = res.body().await.expect("http body");
        (
            status,
            ct,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send().await.expect("http request");
        let status = res.status().as_u16();
        let bytes = res.body().limit(8 << 20).await.expect("http body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn metrics(&self) -> String {
        let mut res = self.http.get(self.url("/metrics")).send().await.unwrap();
        String::from_utf8(res.body().limit(8 << 20).await.unwrap().to_vec()).unwrap()
    }

    /// The value of one sample line of `/metrics` (0 when absent), e.g.
    /// `metric(&m, "switchyard_mailbox_full_total{actor=\"session\"}")`.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }
}

impl TestApp {
    /// Polls one sample of `/metrics` (a gauge) until it is at most `at_most`.
    pub async fn wait_metric_drops_to(&self, sample: &str, at_most: f64) {
        eventually(&format!("{sample} to drop to {at_most}"), || async {
            (self.metric(sample).await <= at_most).then_some(())
        })
        .await;
    }

    /// Polls one sample of `/metrics` until it reaches `at_least` (counters are bumped just after
    /// the event they count was handed on, so a receiver can be a moment ahead of them).
    pub async fn wait_metric(&self, sample: &str, at_least: f64) {
        wait_metric_sum(&[self], sample, at_least).await
    }
}

/// Polls the sum of one sample over several nodes until it reaches `at_least`.
pub async fn wait_metric_sum(nodes: &[&TestApp], sample: &str, at_least: f64) {
    let started = std::time::Instant::now();
    loop {
        let mut total = 0.0;
        for n in nodes {
            total += n.metric(sample).await;
        }
        if total >= at_least {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{sample} stayed at {total} < {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A client of `who` whose socket receive buffer is tiny, so the server feels it stall at once
/// (it never reads unless the test makes it).
pub async fn stalled_client(app: &TestApp, who: &As) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .unwrap();
    let url = app.ws_url(&format!("/ws?access_token={}", token(who)));
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    WsClient { ws }
}

/// A real WebSocket client.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn open(url: String) -> Result<WsClient, (u16, String)> {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => Ok(WsClient { ws }),
            Err(tungstenite::Error::Http(res)) => {
                let status = res.status().as_u16();
                let body = res
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.expect("send");
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.ws.send(Message::binary(b)).await.expect("send");
    }

    /// The next text frame as JSON, skipping pings; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("stream ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(&t).expect("server frames are JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame that is not a presence notification (UserOnline/UserOffline), for tests
    /// that watch admin channels for other events.
    pub async fn recv_event(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            let presence = v["type"] == "notification"
                && matches!(
                    v["data"]["event"].as_str(),
                    Some("UserOnline" | "UserOffline")
                );
            if !presence {
                return v;
            }
        }
    }

    /// The next frame of `type`, skipping others (use only where others may legitimately arrive).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Subscribes and returns the reply (`subscribed` or `subscription_error`).
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send_json(json!({"type":"subscribe","data":{"channel":channel}}))
            .await;
        self.recv().await
    }

    /// Reads frames until `n` notifications other than presence (UserOnline/UserOffline)
    /// arrived; returns their `data` objects.
    pub async fn notifications(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.recv_event().await;
            if v["type"] == "notification" {
                out.push(v["data"].clone());
            }
        }
        out
    }

    /// Subscribes and insists it worked.
    pub async fn subscribed(&mut self, channel: &str) -> Value {
        let reply = self.subscribe(channel).await;
        assert_eq!(reply["type"], "subscribed", "subscribe {channel}: {reply}");
        reply
    }

    /// Reads until the server closes; returns the close code (and skips anything before it).
    pub async fn closed(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket error before close: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    /// Round trip: proves every frame sent before was processed and the connection lives.
    pub async fn ping(&mut self) {
        self.send_json(json!({"type":"ping","id":"sync"})).await;
        let pong = self.recv_type("pong").await;
        assert_eq!(pong["id"], "sync");
    }
}

/// Publishes `n` `Tick` events (`{"i", "pad"}` with `pad` bytes of padding) to `channel` as the
/// service, 16 in flight, and checks every one was accepted.
pub async fn publish_many(app: &TestApp, channel: &str, n: u64, pad: usize) {
    let pad = "x".repeat(pad);
    let results: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|i| {
            let pad = pad.clone();
            async move {
                app.publish(&service(), channel, "Tick", json!({"i": i, "pad": pad}))
                    .await
                    .0
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(|s| *s == 202), "every publish accepted");
}

/// The code and reason of the first close frame among the raw server frames in `buf` (unmasked,
/// as a server sends them).
pub fn close_frame_in(buf: &[u8]) -> Option<(u16, String)> {
    let mut i = 0;
    while i + 2 <= buf.len() {
        let opcode = buf[i] & 0x0f;
        let (len, header) = match buf[i + 1] & 0x7f {
            126 => (u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(buf[i + 2..i + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = buf.get(i + header..i + header + len)?;
        if opcode == 8 {
            let code = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
        i += header + len;
    }
    None
}

/// Two cluster nodes sharing one Redis and one Postgres database (bind the first two to named
/// `_` variables: they must outlive the nodes).
pub async fn two_chat_nodes() -> (crate::redis_server::RedisServer, TestDb, TestApp, TestApp) {
    two_chat_nodes_with(|_| {}).await
}

/// [`two_chat_nodes`], with `tweak` applied to both nodes' settings after the cluster's.
pub async fn two_chat_nodes_with(
    tweak: impl Fn(&mut Settings),
) -> (crate::redis_server::RedisServer, TestDb, TestApp, TestApp) {
    let redis = crate::redis_server::RedisServer::start().await;
    let prefix = unique_prefix();
    let db = TestDb::postgres().await;
    let cluster = |s: &mut switchyard::settings::Settings| {
        cluster_settings(s, &redis.url(), &prefix);
        tweak(s);
    };
    let a = spawn_app_with_db(&db, cluster).await;
    let b = spawn_app_with_db(&db, cluster).await;
    (redis, db, a, b)
}

/// A WebSocket upgrade of `/ws` done by hand over raw TCP (for tests that write or read frames
/// byte by byte); returns the stream right after the 101 response head.
pub async fn raw_ws_upgrade(app: &TestApp, token: &str) -> TcpStream {
    raw_ws_upgrade_at(app.port, token).await
}

/// [`raw_ws_upgrade`] of the node listening on `port` (a node process has no [`TestApp`]).
pub async fn raw_ws_upgrade_at(port: u16, token: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "GET /ws?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

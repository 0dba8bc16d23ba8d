//! Real `redis-server` processes on free ports, which tests kill and restart. Nothing persists
//! (`--save "" --appendonly no`), so a restart loses every key, as a Redis without persistence
//! does.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::helpers::WAIT;

pub struct RedisServer {
    pub port: u16,
    tls: bool,
    /// `requirepass`, when the server was started with one.
    password: Option<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            tls: false,
            password: None,
            child: None,
        };
        s.spawn().await;
        s
    }

    /// A Redis that refuses clients without `password` (`requirepass`).
    pub async fn start_with_password(password: &str) -> Self {
        let mut s = Self {
            port: free_port(),
            tls: false,
            password: Some(password.to_owned()),
            child: None,
        };
        s.spawn().await;
        s
    }

    /// A Redis that only speaks TLS, with the test CA's server certificate.
    pub async fn start_tls() -> Self {
        let mut s = Self {
            port: free_port(),
            tls: true,
            password: None,
            child: None,
        };
        s.spawn().await;
        s
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        format!("{scheme}://{auth}127.0.0.1:{}/0", self.port)
    }

    pub fn ca_file() -> std::path::PathBuf {
        fixtures().join("ca.pem")
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ]);
        if self.tls {
            let f = fixtures();
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(f.join("server.pem"))
            .arg("--tls-key-file")
            .arg(f.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(f.join("ca.pem"));
        } else {
            cmd.args(["--port", &port]);
        }
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                if self.tls {
                    return; // the TLS port accepts connections once ready
                }
                let (probe, answer): (Vec<u8>, &[u8]) = match &self.password {
                    Some(p) => (
                        format!("AUTH {p}\r\nPING\r\n").into_bytes(),
                        b"+OK\r\n+PONG\r\n",
                    ),
                    None => (b"PING\r\n".to_vec(), b"+PONG\r\n"),
                };
                let mut buf = vec![0u8; answer.len()];
                if s.write_all(&probe).await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && buf == answer
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: Redis vanishes mid-traffic.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Starts again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// A command connection for test set-up and checks.
    /// Waits until the nodes sharing `prefix` created their ingest consumer group.
    pub async fn ingest_group_exists(&self, prefix: &str) {
        crate::helpers::eventually("the ingest group to exist", || async {
            let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(format!("{prefix}:ingest"))
                .query_async(&mut self.conn().await)
                .await;
            groups.ok()
        })
        .await;
    }

    /// Appends `entry` (a draft's JSON text, or anything a test wants a node to read) to the
    /// ingest stream of the nodes using `prefix`, as another process would.
    pub async fn ingest(&self, prefix: &str, entry: &str) {
        let _: String = redis::cmd("XADD")
            .arg(format!("{prefix}:ingest"))
            .arg("*")
            .arg("event")
            .arg(entry)
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

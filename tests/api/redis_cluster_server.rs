//! A real Redis Cluster on free ports: six `redis-server --cluster-enabled yes` processes, three
//! masters with one replica each, created with `redis-cli --cluster create … --cluster-replicas 1
//! --cluster-yes`. Tests SIGKILL nodes (a replica is promoted), move slots between masters
//! (`CLUSTER SETSLOT` + `MIGRATE`, what `redis-cli --cluster reshard` does per slot), and stop and
//! restart the whole cluster. Nothing persists but each node's `nodes.conf` (in a temporary
//! directory removed on drop), so a restarted cluster keeps its shape and loses every key.
//!
//! Commands go through `redis-cli` (one process per command), so the harness shares no client
//! code with the engine under test.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::helpers::WAIT;

/// Nodes: 3 masters + 1 replica each.
const NODES: usize = 6;
/// How long a silent master stays a master: short, so a failover takes a few seconds.
const NODE_TIMEOUT_MS: &str = "1000";
/// Forming a cluster, or a failover, takes longer than one `WAIT`.
const FORM_WAIT: Duration = Duration::from_secs(40);

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

/// A cluster node also listens on its port + this (the cluster bus), so its port must be at most
/// 65535 - this: redis-server refuses a higher one ("Redis port number too high").
const BUS_PORT_OFFSET: u16 = 10_000;

/// A free port for a cluster node: at most 55535, with its bus port free too (an ephemeral port
/// above 55535 made redis-server exit at start).
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port <= u16::MAX - BUS_PORT_OFFSET
            && std::net::TcpListener::bind(("127.0.0.1", port + BUS_PORT_OFFSET)).is_ok()
        {
            return port;
        }
    }
}

/// Runs `redis-cli -p port args…` and returns its output (stdout), or `None` if it failed.
pub async fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.starts_with("ERR") && !text.is_empty()).then_some(text)
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges served (masters), e.g. (0, 5460).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until every slot is served.
    pub async fn start() -> Self {
        let version = Command::new("redis-server")
            .arg("--version")
            .output()
            .await
            .expect("redis-server is installed (scripts/test installs it)");
        let version = String::from_utf8_lossy(&version.stdout).to_string();
        let major: u32 = version
            .split("v=")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        assert!(
            major >= 7,
            "Redis Cluster tests need redis-server 7+ (SSUBSCRIBE/SPUBLISH): {version}"
        );
        let mut c = Self {
            ports: (0..NODES).map(|_| free_port()).collect(),
            children: (0..NODES).map(|_| None).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        for i in 0..NODES {
            c.spawn(i).await;
        }
        let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok().await;
        c
    }

    /// `SWITCHYARD__REDIS__CLUSTER_NODES`: every node as a seed.
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn spawn(&mut self, i: usize) {
        let port = self.ports[i];
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                NODE_TIMEOUT_MS,
                // A replica may always take over, however long it was cut off.
                "--cluster-replica-validity-factor",
                "0",
                // Replicas sync at once (the default waits 5 s for more replicas to join).
                "--repl-diskless-sync-delay",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.children[i] = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while cli(port, &["PING"]).await.as_deref() != Some("PONG") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
    }

    /// Waits until every live node reports `cluster_state:ok` with all 16384 slots served by
    /// masters that are up, and agrees on who serves them.
    pub async fn wait_ok(&self) {
        let deadline = tokio::time::Instant::now() + FORM_WAIT;
        loop {
            if self.is_ok().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Redis Cluster did not become ok: {:?}",
                self.nodes().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn is_ok(&self) -> bool {
        let mut views = Vec::new();
        for port in self.alive() {
            let Some(info) = cli(port, &["CLUSTER", "INFO"]).await else {
                return false;
            };
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                return false;
            }
            // A replica counts once it has synced: before, `WAIT` cannot count it.
            let Some(replication) = cli(port, &["INFO", "replication"]).await else {
                return false;
            };
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return false;
            }
            let Some(nodes) = self.nodes_from(port).await else {
                return false;
            };
            let mut masters: Vec<(u16, Vec<(u16, u16)>)> = nodes
                .into_iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .map(|n| (n.port, n.slots))
                .collect();
            masters.sort();
            if masters.iter().any(|(p, _)| !self.alive().any(|a| a == *p)) {
                return false;
            }
            views.push(masters);
        }
        views.windows(2).all(|w| w[0] == w[1])
    }

    async fn nodes_from(&self, port: u16) -> Option<Vec<NodeLine>> {
        let text = cli(port, &["CLUSTER", "NODES"]).await?;
        Some(
            text.lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                    let flags = f.get(2)?;
                    let slots = f
                        .iter()
                        .skip(8)
                        .filter(|s| !s.starts_with('['))
                        .filter_map(|s| {
                            let (a, b) = s.split_once('-').unwrap_or((s, s));
                            Some((a.parse().ok()?, b.parse().ok()?))
                        })
                        .collect();
                    Some(NodeLine {
                        id: f[0].to_owned(),
                        port,
                        master: flags.contains("master"),
                        failed: flags.contains("fail"),
                        slots,
                    })
                })
                .collect(),
        )
    }

    /// `CLUSTER NODES` as a live node sees it.
    pub async fn nodes(&self) -> Vec<NodeLine> {
        for port in self.alive() {
            if let Some(n) = self.nodes_from(port).await {
                return n;
            }
        }
        Vec::new()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn keyslot(&self, key: &str) -> u16 {
        let port = self.alive().next().unwrap();
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .await
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The master serving `slot`.
    pub async fn master_of(&self, slot: u16) -> NodeLine {
        self.nodes()
            .await
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .expect("every slot has a master")
    }

    /// SIGKILL one node: it vanishes mid-traffic; its replica (if it was a master) takes over
    /// after the node timeout.
    pub async fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// SIGKILL every node: Redis is gone.
    pub async fn kill_all(&mut self) {
        for port in self.ports.clone() {
            self.kill(port).await;
        }
    }

    /// Starts every stopped node again (same ports, same `nodes.conf`, no data) and waits for
    /// the cluster to be ok.
    pub async fn restart_stopped(&mut self) {
        for i in 0..NODES {
            if self.children[i].is_none() {
                self.spawn(i).await;
            }
        }
        self.wait_ok().await;
    }

    /// Moves `slot` with its keys to the master on `to`, as `redis-cli --cluster reshard` does
    /// for each slot: IMPORTING/MIGRATING, `MIGRATE` the keys, then `SETSLOT … NODE` everywhere.
    pub async fn move_slot(&self, slot: u16, to: u16) {
        let from = self.master_of(slot).await;
        let nodes = self.nodes().await;
        let target = nodes.iter().find(|n| n.port == to).unwrap().clone();
        assert!(target.master, "slots move to masters");
        if from.port == to {
            return;
        }
        let s = slot.to_string();
        cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from.id])
            .await
            .expect("SETSLOT IMPORTING");
        cli(
            from.port,
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id],
        )
        .await
        .expect("SETSLOT MIGRATING");
        loop {
            let keys = cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &s, "100"])
                .await
                .unwrap_or_default();
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            cli(from.port, &args).await.expect("MIGRATE");
        }
        for n in nodes.iter().filter(|n| n.master && !n.failed) {
            cli(n.port, &["CLUSTER", "SETSLOT", &s, "NODE", &target.id]).await;
        }
        self.wait_ok().await;
    }
}

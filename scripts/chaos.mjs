//! scripts/chaos.mjs — Switchyard's chaos run (issue 14): "nothing lost in cluster mode", measured.
//!
//! Owns, on one machine and loopback only, for a bounded time: a private redis-server (with AOF, or
//! without persistence) or a private Redis Cluster (six redis-servers: 3 masters + 3 replicas,
//! driven by redis-cli: create, SIGKILL a master, move slots), three Switchyard nodes sharing it, one TCP proxy in front of each node (the
//! clients' way in, so their sockets can be cut), subscribers of both protocols (native /ws clients
//! that resubscribe with `since`; @microsoft/signalr clients with automatic reconnect, and a second
//! set with stateful reconnect), two publishers at a fixed rate (REST on a random node, and drafts
//! on the Redis ingest stream), the fault schedule, and the verdict: per subscriber, expected,
//! received, lost (told or not), duplicated, out of order, and the outages it was told were
//! unrecoverable. One JSON line on stdout, a readable summary on stderr. scripts/chaos is the entry
//! point (it finds the binary and the JS dependencies); docs/cluster.md, "Chaos run", is the manual.
import { createRequire } from "node:module";
import { execFile, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

// The SignalR client and `ws` live in tests/js/node_modules (npm ci --prefix tests/js).
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const signalR = require("@microsoft/signalr");
const WebSocket = require("ws");

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

const HELP = `Usage: scripts/chaos [options]
  --duration SECS        length of the whole run, split between the Redis modes (default 600)
  --redis MODES          aof, none, both or cluster (default both: first AOF, then no persistence;
                         cluster: a Redis Cluster of 3 masters + 3 replicas, publishes acknowledged
                         by a replica, a master SIGKILLed and slots moved as its Redis faults)
  --switchyard PATH      the binary (default: target/debug/switchyard; see scripts/chaos)
  --rest-rate N          REST publishes per second (default 20; one in flight at a time)
  --ingest-rate N        ingest-stream drafts per second (default 10)
  --native N             native subscribers (default 4; each reconnect picks a random node)
  --signalr N            SignalR subscribers with automatic reconnect (default 3, one per node)
  --stateful N           SignalR subscribers with stateful + automatic reconnect (default 3)
  --redis-down-secs N    how long Redis stays down after its SIGKILL (default 5: longer than the
                         nodes' publish retries, so some publishes are refused with 503)
  --cycle-secs N         a mode longer than this repeats the fault schedule once per N seconds
                         (default 60)
  --cut-fraction F       share of client sockets each cut severs (default 0.5)
  --drain-secs N         longest wait for subscribers to catch up after publishing stops (default 30)
  --seed N               random seed (default: random; printed in the JSON)
  --out FILE             also append the JSON line to FILE
  --no-control           leave out the control subscriber (a native client reconnecting without
                         \`since\`, cut at every socket cut: it must lose events, or the run fails)
  --keep                 keep the work directory (logs, AOF) even when the run passes
  -h, --help`;

function parseArgs(argv) {
  const o = {
    duration: 600, redis: "both", switchyard: "", restRate: 20, ingestRate: 10, native: 4,
    signalr: 3, stateful: 3, cutFraction: 0.5, drainSecs: 30, seed: null, out: "", keep: false,
    control: true, redisDownSecs: 5, cycleSecs: 60,
  };
  const num = (v, name) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${name} needs a number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--duration": o.duration = num(next(), a); break;
      case "--redis": o.redis = next(); break;
      case "--switchyard": o.switchyard = next(); break;
      case "--rest-rate": o.restRate = num(next(), a); break;
      case "--ingest-rate": o.ingestRate = num(next(), a); break;
      case "--native": o.native = num(next(), a); break;
      case "--signalr": o.signalr = num(next(), a); break;
      case "--stateful": o.stateful = num(next(), a); break;
      case "--cut-fraction": o.cutFraction = num(next(), a); break;
      case "--drain-secs": o.drainSecs = num(next(), a); break;
      case "--seed": o.seed = num(next(), a); break;
      case "--out": o.out = next(); break;
      case "--keep": o.keep = true; break;
      case "--no-control": o.control = false; break;
      case "--redis-down-secs": o.redisDownSecs = num(next(), a); break;
      case "--cycle-secs": o.cycleSecs = Math.max(1, num(next(), a)); break;
      case "-h": case "--help": console.log(HELP); process.exit(0); break;
      default: throw new Error(`unknown argument ${a}\n${HELP}`);
    }
  }
  if (!["aof", "none", "both", "cluster"].includes(o.redis)) throw new Error(`--redis is aof, none, both or cluster`);
  if (!o.switchyard) throw new Error("--switchyard PATH is required (scripts/chaos passes it)");
  return o;
}

/** The channels published on: one per publishing path, so each has a single ordered publisher. */
const REST_CHANNEL = "tenant:chaos:order:rest";
const INGEST_CHANNEL = "tenant:chaos:order:ingest";
const CHANNELS = [REST_CHANNEL, INGEST_CHANNEL];
const EVENT = "ChaosEvent";
const HUB_PATH = "/hubs/notifications";
const REDIS_PREFIX = "switchyard";
const NODE_NAMES = ["a", "b", "c"];
/** Pause before a client reconnects (native) or retries (SignalR's retry policy). */
const RECONNECT_DELAY_MS = 300;
/** How long a node, Redis, or the first subscriptions may take to come up. */
const START_TIMEOUT_MS = 60_000;
/** A REST publish or an XADD with no answer within this is counted as not accepted. */
const REST_TIMEOUT_MS = 20_000;
const XADD_TIMEOUT_MS = 3_000;
/** A killed process is restarted after this (long enough for clients to notice it is gone). */
const RESTART_PAUSE_MS = 1_000;
/** Untold losses and duplicates kept per subscriber in the JSON as examples. */
const MAX_EXAMPLES = 5;
/** Lost-seq runs kept per subscriber in the JSON. */
const MAX_LOST_RANGES = 50;
/** Drain: stop early once nothing has arrived for this long. */
const DRAIN_QUIET_MS = 6_000;
/** A told-marker this long before an event was accepted still covers its loss (clock steps). */
const TOLD_SLACK_MS = 1_000;
/** Publishing stops this share of a cycle after the last fault is done, at the earliest. */
const SETTLE_SHARE = 0.08;

// ---------------------------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------------------------

let rand = Math.random;
function seeded(seed) {
  // mulberry32: a reproducible fault and routing choice for a given --seed.
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pick = (list) => list[Math.floor(rand() * list.length)];
const now = () => Date.now();
let T0 = now();
const rel = (t) => Math.round((t - T0) / 100) / 10;
const say = (msg) => process.stderr.write(`[chaos ${rel(now()).toFixed(1).padStart(6)}s] ${msg}\n`);

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Whether `port` on loopback can be listened on now. */
async function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");
/** An HS256 JWT with the claims Switchyard reads (docs/protocol.md, Authentication). */
function signToken(secret, claims) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}

async function waitFor(what, check, timeoutMs = START_TIMEOUT_MS, everyMs = 100) {
  const deadline = now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Processes: redis-server and Switchyard nodes
// ---------------------------------------------------------------------------------------------

/** Every child process started, so an interrupted run leaves none behind. */
const children = new Set();
function startChild(cmd, args, env, logFile) {
  const log = fs.openSync(logFile, "a");
  const child = spawn(cmd, args, { env, stdio: ["ignore", log, log] });
  fs.closeSync(log);
  children.add(child);
  child.exited = new Promise((resolve) => child.once("exit", (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  return child;
}
function killAll() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** A minimal RESP client: enough for PING and XADD (single replies, no arrays). */
class Resp {
  constructor(port) {
    this.port = port;
    this.sock = null;
    this.buf = "";
    this.waiting = [];
  }
  connect() {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.port, "127.0.0.1");
      sock.setNoDelay(true);
      sock.once("connect", () => {
        this.sock = sock;
        resolve();
      });
      sock.once("error", reject);
      sock.on("data", (d) => this.onData(d.toString("utf8")));
      sock.on("close", () => {
        if (this.sock === sock) this.sock = null;
        this.buf = "";
        for (const w of this.waiting.splice(0)) w.reject(new Error("redis connection closed"));
      });
      sock.on("error", () => {});
    });
  }
  onData(s) {
    this.buf += s;
    for (;;) {
      const eol = this.buf.indexOf("\r\n");
      if (eol < 0) return;
      const kind = this.buf[0];
      const line = this.buf.slice(1, eol);
      let value;
      let used = eol + 2;
      if (kind === "$") {
        const len = Number(line);
        if (len < 0) value = null;
        else {
          if (Buffer.byteLength(this.buf.slice(used)) < len + 2) return;
          value = this.buf.slice(used, used + len);
          used += len + 2;
        }
      } else if (kind === "-") {
        value = new Error(line);
      } else {
        value = line;
      }
      this.buf = this.buf.slice(used);
      const w = this.waiting.shift();
      if (!w) continue;
      if (value instanceof Error) w.reject(value);
      else w.resolve(value);
    }
  }
  async command(args, timeoutMs = XADD_TIMEOUT_MS) {
    if (!this.sock) await this.connect();
    const wire = `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // The reply may still come, out of step with the queue: start over on a new connection.
        this.close();
        reject(new Error("redis command timed out"));
      }, timeoutMs);
      this.waiting.push({
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.sock.write(wire);
    });
  }
  close() {
    if (this.sock) this.sock.destroy();
    this.sock = null;
  }
}

class Redis {
  constructor(dir, port, persistence) {
    this.dir = dir;
    this.port = port;
    this.persistence = persistence; // "aof" | "none"
    this.proc = null;
  }
  args() {
    const common = ["--bind", "127.0.0.1", "--port", String(this.port), "--dir", this.dir, "--save", ""];
    return this.persistence === "aof"
      // appendfsync always: every acknowledged write is on disk before the reply, so a SIGKILL
      // loses nothing Redis acknowledged (with everysec it may lose the last second, offsets too).
      ? [...common, "--appendonly", "yes", "--appendfsync", "always"]
      : [...common, "--appendonly", "no"];
  }
  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    this.proc = startChild(process.env.REDIS_SERVER || "redis-server", this.args(), process.env,
      path.join(this.dir, "..", "redis.log"));
    const probe = new Resp(this.port);
    try {
      await waitFor("redis-server answering PING", async () => (await probe.command(["PING"], 500)) === "PONG");
    } finally {
      probe.close();
    }
  }
  async kill() {
    if (!this.proc) return;
    this.proc.kill("SIGKILL");
    await this.proc.exited;
    this.proc = null;
  }
  wipe() {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster mode: six redis-server processes (3 masters + 3 replicas), driven by redis-cli
// ---------------------------------------------------------------------------------------------

/** Nodes of the chaos Redis Cluster: three masters with one replica each. */
const CLUSTER_NODES = 6;
/** How long a silent master stays a master: short, so a failover takes a few seconds. */
const CLUSTER_NODE_TIMEOUT_MS = 1000;
/** Forming the cluster, a failover or a rejoin may take this long on a busy machine. */
const CLUSTER_FORM_TIMEOUT_MS = 90_000;
/** A Redis Cluster node's bus listens on its port + this; so its port is at most 65535 - this. */
const CLUSTER_BUS_OFFSET = 10_000;
const MAX_CLUSTER_PORT = 65_535 - CLUSTER_BUS_OFFSET;
/** `redis.cluster_partitions` (config/default.toml); the run hashes its channels the same way. */
const CLUSTER_PARTITIONS = 64;
/** `redis.cluster_ingest_streams` (config/default.toml); the run picks its ingest stream the same way. */
const CLUSTER_INGEST_STREAMS = 4;

/** Runs `redis-cli -h 127.0.0.1 -p port args…`; resolves to its trimmed stdout or throws. */
function redisCli(port, args, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const cli = process.env.REDIS_CLI || "redis-cli";
    const target = port === null ? [] : ["-h", "127.0.0.1", "-p", String(port)];
    execFile(cli, [...target, ...args], { timeout: timeoutMs }, (err, stdout) => {
      const out = String(stdout).trim();
      if (err) reject(new Error(`redis-cli ${args.join(" ")}: ${err.message.split("\n")[0]}`));
      else if (/^(ERR|CLUSTERDOWN|MOVED|ASK|TRYAGAIN|Could not connect)/.test(out)) reject(new Error(`redis-cli ${args.join(" ")}: ${out}`));
      else resolve(out);
    });
  });
}

/** The partition of a channel: 32-bit FNV-1a of its UTF-8 bytes mod the partition count (docs/cluster.md). */
function partitionOf(channel, partitions = CLUSTER_PARTITIONS) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(channel, "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % partitions;
}

/** The ingest stream a channel's drafts go to on a Redis Cluster: the same hash mod the stream count (docs/cluster.md). */
function clusterIngestStream(channel) {
  return `${REDIS_PREFIX}:{i${partitionOf(channel, CLUSTER_INGEST_STREAMS)}}:ingest`;
}

class RedisCluster {
  constructor(dir, ports) {
    this.dir = dir;
    this.ports = ports;
    this.procs = new Map(); // port -> child
  }
  seeds() {
    return this.ports.map((p) => `127.0.0.1:${p}`).join(",");
  }
  alive() {
    return this.ports.filter((p) => this.procs.has(p));
  }
  async spawn(port) {
    const dir = path.join(this.dir, String(port));
    fs.mkdirSync(dir, { recursive: true });
    const args = [
      "--bind", "127.0.0.1", "--port", String(port), "--dir", dir,
      "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
      "--cluster-node-timeout", String(CLUSTER_NODE_TIMEOUT_MS),
      // A replica may always take over, however long it was cut off.
      "--cluster-replica-validity-factor", "0",
      // Replicas sync at once (the default waits 5 s for more replicas to join).
      "--repl-diskless-sync-delay", "0",
      "--save", "", "--appendonly", "yes",
    ];
    const proc = startChild(process.env.REDIS_SERVER || "redis-server", args, process.env,
      path.join(this.dir, `redis-${port}.log`));
    this.procs.set(port, proc);
    await waitFor(`redis-server ${port} answering PING`, async () => (await redisCli(port, ["PING"], 1000)) === "PONG");
  }
  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    for (const p of this.ports) await this.spawn(p);
    await redisCli(null, ["--cluster", "create", ...this.ports.map((p) => `127.0.0.1:${p}`),
      "--cluster-replicas", "1", "--cluster-yes"], 60_000);
    await this.waitOk("the Redis Cluster formed");
  }
  /** `CLUSTER NODES` as `port` sees it: [{id, port, master, failed, slots: [[a, b]]}]. */
  async nodesFrom(port) {
    const text = await redisCli(port, ["CLUSTER", "NODES"], 2000);
    return text.split("\n").filter(Boolean).map((line) => {
      const f = line.trim().split(/\s+/);
      return {
        id: f[0], port: Number(f[1].split(/[:@]/)[1]), master: f[2].includes("master"), masterId: f[3],
        failed: f[2].includes("fail"),
        slots: f.slice(8).filter((s) => !s.startsWith("[")).map((s) => {
          const [a, b] = s.split("-");
          return [Number(a), Number(b ?? a)];
        }),
      };
    });
  }
  async nodes() {
    for (const p of this.alive()) {
      try {
        return await this.nodesFrom(p);
      } catch {
        // ask the next one
      }
    }
    throw new Error("no Redis Cluster node answers CLUSTER NODES");
  }
  /** Every live node: cluster_state ok, all slots served by live masters, replicas synced, one view. */
  async isOk() {
    const views = [];
    for (const p of this.alive()) {
      const info = await redisCli(p, ["CLUSTER", "INFO"], 2000);
      if (!info.includes("cluster_state:ok") || !info.includes("cluster_slots_ok:16384")) return false;
      const repl = await redisCli(p, ["INFO", "replication"], 2000);
      if (repl.includes("role:slave") && !repl.includes("master_link_status:up")) return false;
      const masters = (await this.nodesFrom(p)).filter((n) => n.master && n.slots.length)
        .map((n) => `${n.port}=${JSON.stringify(n.slots)}`).sort();
      if (masters.some((m) => !this.procs.has(Number(m.split("=")[0])))) return false;
      views.push(masters.join(" "));
    }
    return views.every((v) => v === views[0]);
  }
  async waitOk(what) {
    await waitFor(what, () => this.isOk(), CLUSTER_FORM_TIMEOUT_MS, 200);
  }
  async masters() {
    return (await this.nodes()).filter((n) => n.master && !n.failed && n.slots.length && this.procs.has(n.port));
  }
  async masterOf(slot) {
    const m = (await this.masters()).find((n) => n.slots.some(([a, b]) => slot >= a && slot <= b));
    if (!m) throw new Error(`no master serves slot ${slot}`);
    return m;
  }
  async kill(port) {
    const proc = this.procs.get(port);
    if (!proc) return;
    proc.kill("SIGKILL");
    await proc.exited;
    this.procs.delete(port);
  }
  async killAll() {
    for (const p of [...this.procs.keys()]) await this.kill(p);
  }
  /** SIGKILL a master; wait for its replica's promotion; restart it so it rejoins as a replica. */
  async failover(victimPort) {
    const before = await this.nodes();
    const victim = before.find((n) => n.port === victimPort);
    const replica = before.find((n) => !n.master && n.id !== victim.id && n.masterId === victim.id);
    await this.kill(victimPort);
    const t = now();
    await this.waitOk(`a replica of ${victimPort} promoted`);
    const promotedAfter = now() - t;
    const promoted = (await this.masters()).filter((m) => !before.some((b) => b.port === m.port && b.master));
    await sleep(RESTART_PAUSE_MS);
    await this.spawn(victimPort);
    // It comes back a master of no slots and is turned into a replica of the new owner once the
    // cluster tells it (an UPDATE): wait for that and its sync, not only for the cluster to be ok.
    await waitFor(`${victimPort} rejoined as a synced replica`, async () => {
      const repl = await redisCli(victimPort, ["INFO", "replication"], 2000);
      return repl.includes("role:slave") && repl.includes("master_link_status:up");
    }, CLUSTER_FORM_TIMEOUT_MS, 200);
    await this.waitOk(`${victimPort} rejoined`);
    return `master ${victimPort} SIGKILLed, replica ${promoted.map((m) => m.port).join(",") || replica?.port || "?"} ` +
      `promoted (cluster ok again after ${(promotedAfter / 1000).toFixed(1)} s), ${victimPort} restarted from its AOF and rejoined as a replica`;
  }
  /** Moves `slot` with its keys to the master on `to`, as `redis-cli --cluster reshard` does per slot. */
  async moveSlot(slot, to) {
    const from = await this.masterOf(slot);
    const nodes = await this.nodes();
    const target = nodes.find((n) => n.port === to);
    if (from.port === to) return 0;
    const s = String(slot);
    await redisCli(to, ["CLUSTER", "SETSLOT", s, "IMPORTING", from.id]);
    await redisCli(from.port, ["CLUSTER", "SETSLOT", s, "MIGRATING", target.id]);
    let moved = 0;
    for (;;) {
      const keys = (await redisCli(from.port, ["CLUSTER", "GETKEYSINSLOT", s, "100"])).split("\n").filter(Boolean);
      if (!keys.length) break;
      await redisCli(from.port, ["MIGRATE", "127.0.0.1", String(to), "", "0", "5000", "KEYS", ...keys]);
      moved += keys.length;
    }
    for (const n of nodes.filter((x) => x.master && !x.failed && this.procs.has(x.port))) {
      await redisCli(n.port, ["CLUSTER", "SETSLOT", s, "NODE", target.id]).catch(() => {});
    }
    await this.waitOk(`slot ${slot} moved`);
    return moved;
  }
}

/**
 * XADD on a Redis Cluster: sent to the node that served the stream's slot last; a `MOVED` (or
 * `ASK`) redirect is followed, and a node that refuses the connection is skipped for the next
 * one (nothing was sent). Anything else — `CLUSTERDOWN` during a failover, a lost reply — is the
 * publisher's failure, counted as refused, as on one Redis.
 */
class ClusterResp {
  constructor(ports) {
    this.ports = ports;
    this.port = ports[0];
    this.conns = new Map();
  }
  conn(port) {
    if (!this.conns.has(port)) this.conns.set(port, new Resp(port));
    return this.conns.get(port);
  }
  async command(args, timeoutMs = XADD_TIMEOUT_MS) {
    for (let attempt = 0; attempt < this.ports.length + 2; attempt++) {
      const c = this.conn(this.port);
      if (!c.sock) {
        try {
          await c.connect();
        } catch {
          this.port = this.ports[(this.ports.indexOf(this.port) + 1) % this.ports.length];
          continue;
        }
      }
      try {
        return await c.command(args, timeoutMs);
      } catch (e) {
        const m = /^(MOVED|ASK) \d+ [^:]+:(\d+)/.exec(e.message);
        if (!m) throw e;
        if (m[1] === "ASK") {
          const target = this.conn(Number(m[2]));
          if (!target.sock) await target.connect();
          await target.command(["ASKING"], timeoutMs);
          return await target.command(args, timeoutMs);
        }
        this.port = Number(m[2]);
      }
    }
    throw new Error("redis_error: no Redis Cluster node took the command");
  }
  close() {
    for (const c of this.conns.values()) c.close();
  }
}

class Node {
  constructor(name, binary, dir, port, env) {
    this.name = name;
    this.binary = binary;
    this.dir = dir;
    this.port = port;
    this.env = env;
    this.proc = null;
  }
  get url() {
    return `http://127.0.0.1:${this.port}`;
  }
  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    const env = {
      ...process.env,
      ...this.env,
      SWITCHYARD__SERVER__HOST: "127.0.0.1",
      SWITCHYARD__SERVER__PORT: String(this.port),
      SWITCHYARD__NODE__ID: `chaos-${this.name}`,
      SWITCHYARD__DATABASE__URL: `sqlite://${this.dir}/switchyard.db`,
    };
    this.proc = startChild(this.binary, [], env, path.join(this.dir, "node.log"));
    const proc = this.proc;
    await waitFor(`node ${this.name} live`, async () => {
      if (proc.exitCode !== null) throw new Error(`node ${this.name} exited (${proc.exitCode}); see ${this.dir}/node.log`);
      const r = await fetch(`${this.url}/health/live`, { signal: AbortSignal.timeout(1000) });
      return r.ok;
    }).catch((e) => {
      if (proc.exitCode !== null) throw new Error(`node ${this.name} exited (${proc.exitCode}); see ${this.dir}/node.log`);
      throw e;
    });
  }
  async kill(signal) {
    if (!this.proc) return;
    this.proc.kill(signal);
    await this.proc.exited;
    this.proc = null;
  }
  async ready() {
    const r = await fetch(`${this.url}/health/ready`, { signal: AbortSignal.timeout(1000) });
    return r.status === 200;
  }
}

// ---------------------------------------------------------------------------------------------
// The TCP proxy in front of each node: clients connect here, and a cut severs their sockets
// ---------------------------------------------------------------------------------------------

class Proxy {
  constructor(listenPort, upstreamPort) {
    this.listenPort = listenPort;
    this.upstreamPort = upstreamPort;
    this.pairs = new Set();
    this.server = net.createServer((client) => this.accept(client));
  }
  listen() {
    return new Promise((resolve) => this.server.listen(this.listenPort, "127.0.0.1", resolve));
  }
  accept(client) {
    const upstream = net.connect(this.upstreamPort, "127.0.0.1");
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  }
  /** Severs about `fraction` of the open connections with a reset on both sides; returns how many. */
  cut(fraction) {
    let n = 0;
    for (const pair of [...this.pairs]) {
      if (rand() >= fraction) continue;
      n++;
      this.pairs.delete(pair);
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    }
    return n;
  }
  close() {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    return new Promise((resolve) => this.server.close(resolve));
  }
}

// ---------------------------------------------------------------------------------------------
// What a subscriber saw
// ---------------------------------------------------------------------------------------------

/**
 * One subscriber's record: every arrival of a chaos event (seq, offset, epoch, time) per channel,
 * and every "told" marker — the server saying history could not be recovered (recovered: false,
 * an epoch change, or over SignalR an offset that starts again).
 */
class Record {
  constructor(name, protocol, reconnect) {
    this.name = name;
    this.protocol = protocol;
    this.reconnect = reconnect;
    this.arrivals = Object.fromEntries(CHANNELS.map((c) => [c, []]));
    this.seqs = Object.fromEntries(CHANNELS.map((c) => [c, new Set()]));
    this.told = [];
    this.reconnects = 0;
    this.subscribeErrors = 0;
    this.lastArrival = 0;
    this.subscribed = new Set();
  }
  arrive(channel, data, offset, epoch) {
    if (!this.arrivals[channel] || !data || typeof data.seq !== "number") return;
    this.lastArrival = now();
    this.arrivals[channel].push({ seq: data.seq, offset, epoch, t: this.lastArrival });
    this.seqs[channel].add(data.seq);
  }
  tell(channel, kind, detail) {
    this.told.push({ channel, kind, detail, t: now() });
  }
}

const tokens = {};

class NativeSubscriber {
  /** `useSince` false: the control, which resubscribes from "now" and so must lose events. */
  constructor(record, proxies, useSince = true) {
    this.r = record;
    this.proxies = proxies;
    this.useSince = useSince;
    this.pos = {}; // channel -> {offset, epoch}
    this.ws = null;
    this.running = true;
    this.nextId = 1;
    this.pending = new Map(); // request id -> channel
  }
  start() {
    this.connect();
  }
  connect() {
    if (!this.running) return;
    const proxy = pick(this.proxies);
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.listenPort}/ws?access_token=${tokens.subscriber}`);
    this.ws = ws;
    ws.on("open", () => {
      for (const ch of CHANNELS) this.subscribe(ch);
    });
    ws.on("message", (raw) => this.onFrame(JSON.parse(raw.toString())));
    ws.on("error", () => {});
    ws.on("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.r.subscribed.clear();
      if (!this.running) return;
      this.r.reconnects++;
      setTimeout(() => this.connect(), RECONNECT_DELAY_MS);
    });
  }
  subscribe(channel) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const id = this.nextId++;
    this.pending.set(id, channel);
    const data = { channel };
    if (this.useSince && this.pos[channel]) data.since = this.pos[channel];
    ws.send(JSON.stringify({ type: "subscribe", id, data }));
  }
  onFrame(f) {
    const d = f.data ?? {};
    switch (f.type) {
      case "subscribed": {
        this.pending.delete(f.id);
        const ch = d.channel;
        const had = this.useSince ? this.pos[ch] : undefined;
        if (had && d.recovered === false) this.r.tell(ch, "recovered_false", { since: had, now: { offset: d.offset, epoch: d.epoch } });
        else if (had && d.epoch !== had.epoch) this.r.tell(ch, "epoch_changed", { from: had.epoch, to: d.epoch });
        // Recovered: the replay follows and moves the position; otherwise start from here.
        if (!had || d.recovered !== true) this.pos[ch] = { offset: d.offset, epoch: d.epoch };
        this.r.subscribed.add(ch);
        return;
      }
      case "subscription_error": {
        const ch = d.channel ?? this.pending.get(f.id);
        this.pending.delete(f.id);
        this.r.subscribeErrors++;
        // Redis down: `unavailable`; try again, still with `since`.
        setTimeout(() => this.subscribe(ch), RECONNECT_DELAY_MS * 3);
        return;
      }
      case "notification": {
        if (d.event !== EVENT) return;
        const ch = d.channel;
        const had = this.pos[ch];
        if (had && had.epoch !== d.epoch) this.r.tell(ch, "epoch_changed", { from: had.epoch, to: d.epoch });
        this.r.arrive(ch, d.data, d.offset, d.epoch);
        this.pos[ch] = { offset: d.offset, epoch: d.epoch };
        return;
      }
      default:
        return;
    }
  }
  /** Drops the socket from the client side (the control is cut at every socket cut). */
  cut() {
    if (this.ws) this.ws.terminate();
  }
  stop() {
    this.running = false;
    if (this.ws) this.ws.terminate();
  }
}

class SignalRSubscriber {
  constructor(record, proxy, stateful) {
    this.r = record;
    this.proxy = proxy;
    this.stateful = stateful;
    this.pos = {}; // channel -> {offset, epoch}
    this.running = true;
    const logger = { log: () => {} };
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(`http://127.0.0.1:${proxy.listenPort}${HUB_PATH}`, {
        accessTokenFactory: () => tokens.subscriber,
        transport: signalR.HttpTransportType.WebSockets,
      })
      .withAutomaticReconnect({ nextRetryDelayInMilliseconds: () => (this.running ? RECONNECT_DELAY_MS : null) })
      .configureLogging(logger);
    if (stateful) builder = builder.withStatefulReconnect();
    this.conn = builder.build();
    this.conn.on(EVENT, (m) => this.onEvent(m));
    this.conn.onreconnecting(() => {
      this.r.subscribed.clear();
      this.r.reconnects++;
    });
    this.conn.onreconnected(() => this.subscribeAll());
    this.conn.onclose(() => {
      this.r.subscribed.clear();
      if (this.running) {
        this.r.reconnects++;
        setTimeout(() => this.start(), RECONNECT_DELAY_MS);
      }
    });
  }
  async start() {
    while (this.running) {
      try {
        await this.conn.start();
        break;
      } catch {
        await sleep(RECONNECT_DELAY_MS);
      }
    }
    await this.subscribeAll();
  }
  onEvent(m) {
    const ch = m.channel;
    const had = this.pos[ch];
    // The wrapped message carries the epoch (docs/signalr.md, recovery); an older server's does
    // not, and then a new epoch shows only as offsets starting again.
    const epoch = m.epoch ?? had?.epoch ?? null;
    if (had && m.epoch && m.epoch !== had.epoch) {
      this.r.tell(ch, "epoch_changed", { from: had.epoch, to: m.epoch });
    } else if (had && typeof m.offset === "number" && m.offset <= had.offset && !this.seen(ch, m.data?.seq)) {
      this.r.tell(ch, "offset_restarted", { from: had.offset, to: m.offset });
    }
    this.r.arrive(ch, m.data, m.offset, epoch);
    if (had) {
      had.offset = m.offset;
      had.epoch = epoch;
    }
  }
  seen(ch, seq) {
    return this.r.seqs[ch]?.has(seq) ?? false;
  }
  async subscribeAll() {
    for (const ch of CHANNELS) {
      while (this.running && this.conn.state === signalR.HubConnectionState.Connected) {
        const had = this.pos[ch];
        try {
          const res = await this.conn.invoke("Subscribe", ch, had ? { offset: had.offset, epoch: had.epoch } : null);
          if (had && res.recovered === false) this.r.tell(ch, "recovered_false", { since: had, now: { offset: res.offset, epoch: res.epoch } });
          else if (had && res.epoch !== had.epoch) this.r.tell(ch, "epoch_changed", { from: had.epoch, to: res.epoch });
          if (!had || res.recovered !== true) this.pos[ch] = { offset: res.offset, epoch: res.epoch };
          this.r.subscribed.add(ch);
          break;
        } catch (e) {
          if (/already subscribed/i.test(String(e.message))) {
            this.r.subscribed.add(ch);
            break;
          }
          this.r.subscribeErrors++;
          await sleep(RECONNECT_DELAY_MS * 3);
        }
      }
    }
  }
  async stop() {
    this.running = false;
    try {
      await this.conn.stop();
    } catch {
      // closing anyway
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------------------------

/** The publishes a channel's subscribers must get: those answered as accepted. */
class Ledger {
  constructor(via) {
    this.via = via;
    this.next = 1;
    this.accepted = new Map(); // seq -> accepted at (ms)
    this.attempted = 0;
    this.refused = {}; // status or error -> count
  }
  refuse(why) {
    this.refused[why] = (this.refused[why] ?? 0) + 1;
  }
}

async function runAtRate(rate, running, once) {
  if (rate <= 0) return;
  const every = 1000 / rate;
  let due = now();
  while (running()) {
    await once();
    due += every;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    else due = now(); // behind (a publish waited on retries): keep the rate from here, no burst
  }
}

function restPublisher(rate, nodes, ledger, running) {
  return runAtRate(rate, running, async () => {
    const seq = ledger.next++;
    ledger.attempted++;
    const node = pick(nodes);
    try {
      const res = await fetch(`${node.url}/api/v1/publish`, {
        method: "POST",
        headers: { authorization: `Bearer ${tokens.publisher}`, "content-type": "application/json" },
        body: JSON.stringify({ channel: REST_CHANNEL, event: EVENT, data: { seq, via: "rest", node: node.name } }),
        signal: AbortSignal.timeout(REST_TIMEOUT_MS),
      });
      await res.arrayBuffer();
      if (res.status === 202) ledger.accepted.set(seq, now());
      else ledger.refuse(String(res.status));
    } catch (e) {
      ledger.refuse(e.name === "TimeoutError" ? "timeout" : "connection");
    }
  });
}

function ingestPublisher(rate, redis, ledger, running, mode, stream) {
  return runAtRate(rate, running, async () => {
    const seq = ledger.next++;
    ledger.attempted++;
    const draft = JSON.stringify({ channel: INGEST_CHANNEL, event: EVENT, data: { seq, via: "ingest" }, id: `chaos-${mode}-${seq}` });
    try {
      await redis.command(["XADD", stream, "*", "event", draft]);
      ledger.accepted.set(seq, now());
    } catch (e) {
      ledger.refuse(/timed out/.test(e.message) ? "timeout" : "redis_error");
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The verdict
// ---------------------------------------------------------------------------------------------

/**
 * Per subscriber: expected = every accepted publish of both channels; received = distinct expected
 * seqs that arrived; lost = expected - received, split into told (a told-marker on that channel
 * between the event's acceptance and the subscriber's next arrival of a later event) and untold;
 * duplicated = arrivals beyond the first of any seq, accepted or refused (a refused publish may
 * still arrive — Redis ran it and only its reply was lost — but never twice); out of order = an
 * expected event arriving after
 * one published after it (REST: by seq, the single publisher's order; ingest: by offset within an
 * epoch, the order the cluster gave it, since the nodes consume the stream concurrently).
 */
function judge(record, ledgers) {
  const out = {
    name: record.name, protocol: record.protocol, reconnect: record.reconnect,
    expected: 0, received: 0, lost: 0, lost_told: 0, lost_untold: 0, duplicated: 0,
    out_of_order: 0, unexpected: 0, reconnects: record.reconnects, subscribe_errors: record.subscribeErrors,
    told: record.told.map((m) => ({ at_s: rel(m.t), channel: m.channel, kind: m.kind })),
    untold_examples: [],
    lost_ranges: [],
    duplicate_examples: [],
    out_of_order_examples: [],
  };
  for (const ch of CHANNELS) {
    const ledger = ledgers[ch];
    const arrivals = record.arrivals[ch];
    const told = record.told.filter((m) => m.channel === ch).map((m) => m.t);
    const count = new Map();
    for (const a of arrivals) count.set(a.seq, (count.get(a.seq) ?? 0) + 1);
    for (const [seq, n] of count) {
      out.duplicated += n - 1;
      if (!ledger.accepted.has(seq)) out.unexpected++;
      if (n > 1 && out.duplicate_examples.length < MAX_EXAMPLES) {
        out.duplicate_examples.push({
          channel: ch, seq, expected: ledger.accepted.has(seq),
          arrivals: arrivals.filter((a) => a.seq === seq).map((a) => ({ at_s: rel(a.t), offset: a.offset, epoch: a.epoch })),
        });
      }
    }
    // Order, over first arrivals of expected events.
    const firsts = [];
    const seen = new Set();
    for (const a of arrivals) {
      if (seen.has(a.seq) || !ledger.accepted.has(a.seq)) continue;
      seen.add(a.seq);
      firsts.push(a);
    }
    const disorder = (a) => {
      out.out_of_order++;
      if (out.out_of_order_examples.length < MAX_EXAMPLES) {
        out.out_of_order_examples.push({ channel: ch, seq: a.seq, at_s: rel(a.t), offset: a.offset, epoch: a.epoch });
      }
    };
    if (ch === REST_CHANNEL) {
      let max = 0;
      for (const a of firsts) {
        if (a.seq < max) disorder(a);
        max = Math.max(max, a.seq);
      }
    } else {
      // By offset within an epoch: every event (native notification, SignalR message) names its
      // epoch.
      const maxByEpoch = new Map();
      for (const a of firsts) {
        const m = maxByEpoch.get(a.epoch) ?? 0;
        if (a.offset < m) disorder(a);
        maxByEpoch.set(a.epoch, Math.max(m, a.offset));
      }
    }
    // Loss, and whether the subscriber was told.
    const arrivalOf = new Map(firsts.map((a) => [a.seq, a.t]));
    const receivedSorted = [...arrivalOf.keys()].sort((x, y) => x - y);
    // firstLater[i]: the earliest arrival among receivedSorted[i..].
    const firstLater = new Array(receivedSorted.length);
    for (let i = receivedSorted.length - 1, m = Infinity; i >= 0; i--) {
      m = Math.min(m, arrivalOf.get(receivedSorted[i]));
      firstLater[i] = m;
    }
    for (const [seq, acceptedAt] of ledger.accepted) {
      out.expected++;
      if (arrivalOf.has(seq)) {
        out.received++;
        continue;
      }
      out.lost++;
      // The first arrival of a later event bounds when the subscriber should have been told.
      const i = lowerBound(receivedSorted, seq + 1);
      const until = i < receivedSorted.length ? firstLater[i] : Infinity;
      const wasTold = told.some((t) => t >= acceptedAt - TOLD_SLACK_MS && t <= until);
      if (wasTold) out.lost_told++;
      else {
        out.lost_untold++;
        if (out.untold_examples.length < MAX_EXAMPLES) out.untold_examples.push({ channel: ch, seq, accepted_at_s: rel(acceptedAt) });
      }
      // Runs of consecutive lost seqs with the same verdict, for finding the fault behind them.
      const last = out.lost_ranges[out.lost_ranges.length - 1];
      if (last && last.channel === ch && last.told === wasTold && last.to === seq - 1) last.to = seq;
      else if (out.lost_ranges.length < MAX_LOST_RANGES) {
        out.lost_ranges.push({ channel: ch, from: seq, to: seq, accepted_at_s: rel(acceptedAt), told: wasTold });
      }
    }
  }
  out.pass = out.lost_untold === 0 && out.duplicated === 0 && out.out_of_order === 0;
  return out;
}
function lowerBound(sorted, x) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------------------------------------
// One mode: a cluster on one Redis, subscribers, publishers, the fault schedule
// ---------------------------------------------------------------------------------------------

async function runMode(o, mode, secs, workdir, secret) {
  const dir = path.join(workdir, mode);
  fs.mkdirSync(dir, { recursive: true });
  const persistence = mode;
  const clustered = mode === "cluster";
  const faults = [];
  const result = { redis: mode, duration_s: secs, faults, published: {}, subscribers: [] };
  let redis;
  let redisPort;
  let cluster;
  const env = { SWITCHYARD__REDIS__PREFIX: REDIS_PREFIX, SWITCHYARD__AUTH__JWT_SECRET: secret };
  if (clustered) {
    const ports = [];
    while (ports.length < CLUSTER_NODES) {
      // A cluster node also listens on port + 10000 (its cluster bus), so the port must be at
      // most 55535 and the bus port free too.
      const p = await freePort();
      if (p <= MAX_CLUSTER_PORT && !ports.includes(p) && await portFree(p + CLUSTER_BUS_OFFSET)) ports.push(p);
    }
    cluster = new RedisCluster(path.join(dir, "redis-cluster"), ports);
    say(`mode ${mode}: Redis Cluster on ${ports.join(" ")} (3 masters + 3 replicas, AOF)`);
    await cluster.start();
    result.cluster = { ports, partitions: CLUSTER_PARTITIONS, replica_acks: 1 };
    // Every node a seed; publishes acknowledged once a replica has them (docs/cluster.md).
    env.SWITCHYARD__REDIS__CLUSTER_NODES = cluster.seeds();
    env.SWITCHYARD__REDIS__REPLICA_ACKS = "1";
  } else {
    redisPort = await freePort();
    redis = new Redis(path.join(dir, "redis-data"), redisPort, persistence);
    say(`mode ${mode}: redis-server on ${redisPort} (${persistence === "aof" ? "AOF, appendfsync always" : "no persistence"})`);
    await redis.start();
    env.SWITCHYARD__REDIS__URL = `redis://127.0.0.1:${redisPort}`;
  }
  const nodes = [];
  for (const name of NODE_NAMES) nodes.push(new Node(name, o.switchyard, path.join(dir, `node-${name}`), await freePort(), env));
  await Promise.all(nodes.map((n) => n.start()));
  await waitFor("every node ready (Redis connected)", async () => (await Promise.all(nodes.map((n) => n.ready()))).every(Boolean));
  const proxies = [];
  for (const n of nodes) {
    const p = new Proxy(await freePort(), n.port);
    await p.listen();
    proxies.push(p);
  }
  say(`mode ${mode}: nodes ${nodes.map((n) => `${n.name}:${n.port}`).join(" ")}, proxies ${proxies.map((p) => p.listenPort).join(" ")}`);

  // Subscribers, all subscribed before anything is published.
  const records = [];
  const subs = [];
  for (let i = 0; i < o.native; i++) {
    const r = new Record(`native-${i + 1}`, "native", "since");
    records.push(r);
    subs.push(new NativeSubscriber(r, proxies));
  }
  for (let i = 0; i < o.signalr; i++) {
    const r = new Record(`signalr-auto-${i + 1}@${NODE_NAMES[i % 3]}`, "signalr", "automatic");
    records.push(r);
    subs.push(new SignalRSubscriber(r, proxies[i % 3], false));
  }
  for (let i = 0; i < o.stateful; i++) {
    const r = new Record(`signalr-stateful-${i + 1}@${NODE_NAMES[i % 3]}`, "signalr", "stateful");
    records.push(r);
    subs.push(new SignalRSubscriber(r, proxies[i % 3], true));
  }
  let control = null;
  if (o.control) {
    control = { record: new Record("control-native-no-since", "native", "none") };
    control.sub = new NativeSubscriber(control.record, proxies, false);
    records.push(control.record);
    subs.push(control.sub);
  }
  for (const s of subs) s.start();
  await waitFor("every subscriber subscribed", () => records.every((r) => r.subscribed.size === CHANNELS.length));
  say(`mode ${mode}: ${records.length} subscribers subscribed`);

  // Publishers.
  const ledgers = { [REST_CHANNEL]: new Ledger("rest"), [INGEST_CHANNEL]: new Ledger("ingest") };
  let publishing = true;
  const xadd = clustered ? new ClusterResp(cluster.ports) : new Resp(redisPort);
  const start = now();
  const pubs = [
    restPublisher(o.restRate, nodes, ledgers[REST_CHANNEL], () => publishing),
    ingestPublisher(o.ingestRate, xadd, ledgers[INGEST_CHANNEL], () => publishing, mode,
      clustered ? clusterIngestStream(INGEST_CHANNEL) : `${REDIS_PREFIX}:ingest`),
  ];

  // The faults, at fixed shares of the mode's time; each finishes before the next starts.
  const cut = async () => {
    const n = proxies.reduce((sum, p) => sum + p.cut(o.cutFraction), 0);
    control?.sub.cut();
    return `${n} client sockets reset`;
  };
  const victim = () => pick(nodes);
  const schedule = [
    [0.1, "socket_cut", cut],
    [0.2, "node_sigkill_restart", async () => {
      const n = victim();
      await n.kill("SIGKILL");
      await sleep(RESTART_PAUSE_MS);
      await n.start();
      return `node ${n.name}`;
    }],
    [0.32, "socket_cut", cut],
    [0.4, "node_graceful_restart", async () => {
      const n = victim();
      await n.kill("SIGTERM");
      await n.start();
      return `node ${n.name}`;
    }],
    [0.52, "redis_sigkill_restart", async () => {
      await redis.kill();
      await sleep(o.redisDownSecs * 1000);
      await redis.start();
      const how = persistence === "aof" ? "restarted from its AOF" : "restarted empty (no persistence)";
      return `down ${o.redisDownSecs} s, ${how}`;
    }],
    [0.64, "socket_cut", cut],
    [0.72, "redis_restart_empty", async () => {
      await redis.kill();
      redis.wipe();
      await sleep(RESTART_PAUSE_MS);
      await redis.start();
      return "data directory wiped";
    }],
    [0.8, "socket_cut", cut],
  ];
  // On a Redis Cluster the Redis faults are the cluster's own: a master SIGKILLed (its replica is
  // promoted; the killed one restarts from its AOF and rejoins as a replica) and the slots of both
  // channels' partitions moved to another master while publishing.
  const clusterSchedule = [
    ...schedule.slice(0, 4),
    [0.52, "redis_master_sigkill_failover", async () => {
      // The victim serves what the run exercises: a chaos channel's partition or the ingest stream.
      const key = pick([...CHANNELS.map((ch) => `${REDIS_PREFIX}:{p${partitionOf(ch)}}:ch`), clusterIngestStream(INGEST_CHANNEL)]);
      const slot = Number(await redisCli(cluster.alive()[0], ["CLUSTER", "KEYSLOT", key]));
      return `${key}: ` + await cluster.failover((await cluster.masterOf(slot)).port);
    }],
    [0.64, "socket_cut", cut],
    [0.72, "redis_slot_move", async () => {
      const moves = [];
      for (const ch of CHANNELS) {
        const p = partitionOf(ch);
        // Proof the run hashes as the nodes do: the channel's offset key is in that partition.
        const key = `${REDIS_PREFIX}:{p${p}}:${ch}:offset`;
        if ((await redisCli(null, ["-c", "-h", "127.0.0.1", "-p", String(cluster.alive()[0]), "EXISTS", key])) !== "1") {
          throw new Error(`${key} does not exist: the run's partition hash differs from the nodes'`);
        }
        const slot = Number(await redisCli(cluster.alive()[0], ["CLUSTER", "KEYSLOT", key]));
        const from = await cluster.masterOf(slot);
        const to = pick((await cluster.masters()).filter((m) => m.port !== from.port));
        const keys = await cluster.moveSlot(slot, to.port);
        moves.push(`slot ${slot} (partition ${p}, ${ch.split(":").pop()}, ${keys} keys) ${from.port} -> ${to.port}`);
      }
      return moves.join("; ");
    }],
    schedule[7],
  ];
  const faultsOfMode = clustered ? clusterSchedule : schedule;
  const budget = secs * 1000;
  // A long mode repeats the schedule, one cycle per --cycle-secs, so a run for the record sees
  // every fault several times (with other victims) rather than the same eight spread thin.
  const cycles = Math.max(1, Math.floor(secs / o.cycleSecs));
  const cycleMs = budget / cycles;
  for (let cycle = 0; cycle < cycles; cycle++) for (const [share, kind, act] of faultsOfMode) {
    const wait = start + cycle * cycleMs + share * cycleMs - now();
    if (wait > 0) await sleep(wait);
    const t = now();
    say(`mode ${mode}: cycle ${cycle + 1}/${cycles}: fault ${kind}`);
    let detail;
    let ok = true;
    try {
      detail = await act();
    } catch (e) {
      ok = false;
      detail = String(e.message ?? e);
      say(`mode ${mode}: fault ${kind} failed: ${detail}`);
    }
    faults.push({ at_s: rel(t), cycle: cycle + 1, kind, detail, took_ms: now() - t, ok });
  }
  const stopAt = Math.max(start + budget, now() + SETTLE_SHARE * cycleMs);
  await sleep(Math.max(0, stopAt - now()));
  publishing = false;
  await Promise.all(pubs);
  xadd.close();
  say(`mode ${mode}: publishing stopped; draining`);

  // Drain: until every subscriber has everything, or nothing arrives for a while, or time is up.
  const drainStart = now();
  const complete = () => records.every((r) => CHANNELS.every((ch) => {
    for (const seq of ledgers[ch].accepted.keys()) if (!r.seqs[ch].has(seq)) return false;
    return true;
  }));
  for (;;) {
    if (complete()) break;
    const last = Math.max(drainStart, ...records.map((r) => r.lastArrival));
    if (now() - last > DRAIN_QUIET_MS || now() - drainStart > o.drainSecs * 1000) break;
    await sleep(250);
  }
  result.drain_ms = now() - drainStart;

  for (const [ch, l] of Object.entries(ledgers)) {
    result.published[l.via] = { channel: ch, attempted: l.attempted, accepted: l.accepted.size, refused: l.refused };
  }
  result.subscribers = records.filter((r) => r !== control?.record).map((r) => judge(r, ledgers));
  // The control proves the run can see a loss: reconnecting without `since`, it must lose events
  // at the socket cuts and never be told (a run where it loses nothing measured nothing).
  if (control) {
    result.control = judge(control.record, ledgers);
    result.control.pass = result.control.lost_untold > 0;
  }
  result.pass = faults.every((f) => f.ok) && result.subscribers.every((s) => s.pass) && (result.control?.pass ?? true);

  await Promise.all(subs.map((s) => s.stop()));
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(nodes.map((n) => n.kill("SIGKILL")));
  if (clustered) await cluster.killAll();
  else await redis.kill();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

function summary(run) {
  const lines = [];
  lines.push(`Chaos run: ${run.duration_s} s, Redis modes ${run.modes.map((m) => m.redis).join(", ")}, seed ${run.seed}` +
    ` — ${run.pass ? "PASS" : "FAIL"}`);
  for (const m of run.modes) {
    lines.push("");
    lines.push(`== Redis ${m.redis} (${m.duration_s} s) — ${m.pass ? "PASS" : "FAIL"}`);
    for (const [via, p] of Object.entries(m.published)) {
      const refused = Object.entries(p.refused).map(([k, v]) => `${k}: ${v}`).join(", ") || "none";
      lines.push(`published via ${via}: ${p.accepted}/${p.attempted} accepted (refused ${refused})`);
    }
    lines.push("faults: " + m.faults.map((f) => `${f.at_s}s ${f.kind} (${f.detail}${f.ok ? "" : ", FAILED"})`).join("; "));
    const head = ["subscriber", "expected", "received", "lost", "told", "untold", "dup", "ooo", "unexp", "reconn", "told-markers", "ok"];
    const rows = [...m.subscribers, ...(m.control ? [m.control] : [])].map((s) => [
      s.name, s.expected, s.received, s.lost, s.lost_told, s.lost_untold,
      s.duplicated, s.out_of_order,
      s.unexpected, s.reconnects, s.told.length ? [...new Set(s.told.map((t) => t.kind))].join("+") + ` x${s.told.length}` : "-",
      s === m.control ? (s.pass ? "ok (control: must lose)" : "FAIL (control lost nothing: the run measured nothing)") : s.pass ? "ok" : "FAIL",
    ].map(String));
    const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const fmt = (r) => r.map((c, i) => (i === 0 || i >= 10 ? c.padEnd(width[i]) : c.padStart(width[i]))).join("  ");
    lines.push(fmt(head));
    for (const r of rows) lines.push(fmt(r));
    for (const s of m.subscribers.filter((x) => x.untold_examples.length)) {
      lines.push(`  ${s.name}: untold losses, e.g. ` + s.untold_examples.map((e) => `${e.channel}#${e.seq} (accepted ${e.accepted_at_s}s)`).join(", "));
    }
  }
  return lines.join("\n");
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`scripts/chaos: ${e.message}\n`);
    process.exit(2);
  }
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
  rand = seeded(seed);
  const secret = process.env.SWITCHYARD__AUTH__JWT_SECRET || `chaos-${crypto.randomBytes(16).toString("hex")}`;
  const exp = Math.floor(now() / 1000) + o.duration * 2 + 3600;
  tokens.subscriber = signToken(secret, { sub: "chaos-subscriber", role: "Service", exp });
  tokens.publisher = signToken(secret, { sub: "chaos-publisher", role: "Service", exp });
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-chaos-"));
  const modes = o.redis === "both" ? ["aof", "none"] : [o.redis];
  const per = o.duration / modes.length;
  const run = {
    kind: "chaos", started: new Date().toISOString(), duration_s: o.duration, seed,
    binary: o.switchyard, host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100) },
    settings: {
      rest_rate: o.restRate, ingest_rate: o.ingestRate, native: o.native, signalr: o.signalr, stateful: o.stateful,
      cut_fraction: o.cutFraction, redis_down_secs: o.redisDownSecs, cycle_secs: o.cycleSecs, control: o.control,
    },
    modes: [], workdir,
  };
  const onSignal = () => {
    killAll();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  T0 = now();
  say(`work directory ${workdir}, seed ${seed}`);
  try {
    for (const mode of modes) run.modes.push(await runMode(o, mode, per, workdir, secret));
  } catch (e) {
    killAll();
    process.stderr.write(`scripts/chaos: the run could not be carried out: ${e.stack ?? e}\nlogs: ${workdir}\n`);
    process.exit(2);
  }
  killAll();
  run.pass = run.modes.every((m) => m.pass);
  const line = JSON.stringify(run);
  process.stdout.write(line + "\n");
  if (o.out) fs.appendFileSync(o.out, line + "\n");
  process.stderr.write("\n" + summary(run) + "\n");
  if (run.pass && !o.keep) fs.rmSync(workdir, { recursive: true, force: true });
  else process.stderr.write(`logs: ${workdir}\n`);
  process.exit(run.pass ? 0 : 1);
}

main();

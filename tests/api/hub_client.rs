//! `HubClient`: one real `@microsoft/signalr` client (Node, `tests/js/signalr-driver.mjs`)
//! scripted from a test. Needs `npm ci --prefix tests/js` (the test command does it).

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::helpers::{TestApp, WAIT};

/// How a hub client starts.
#[derive(Clone, Debug, Default)]
pub struct HubOptions {
    pub messagepack: bool,
    pub skip_negotiation: bool,
    pub reconnect: bool,
    pub stateful_reconnect: bool,
    /// The transport the client is forced to use ("WebSockets", "ServerSentEvents",
    /// "LongPolling"); `None` = WebSockets, as before.
    pub transport: Option<&'static str>,
    pub events: Vec<&'static str>,
}

pub struct HubClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Reports read while waiting for something else, in arrival order.
    backlog: VecDeque<Value>,
    next_id: u64,
    /// The client's `connection.connectionId` once started (negotiate's `connectionId`).
    pub connection_id: Option<String>,
}

impl HubClient {
    /// Starts a client against the app's `/hubs/notifications`; `Err` carries the
    /// `start()` failure message.
    pub async fn start(app: &TestApp, token: &str, opts: HubOptions) -> Result<Self, String> {
        Self::start_url(&app.url("/hubs/notifications"), token, opts).await
    }

    pub async fn start_url(url: &str, token: &str, opts: HubOptions) -> Result<Self, String> {
        Self::driver("signalr-driver.mjs")
            .begin(url, token, opts)
            .await
    }

    /// Starts the Python `signalrcore` client (`tests/py/signalrcore-driver.py`, same commands)
    /// against the app's `/hubs/notifications`, from the virtual environment `scripts/test`
    /// makes in `target/pyenv`.
    pub async fn start_python(
        app: &TestApp,
        token: &str,
        opts: HubOptions,
    ) -> Result<Self, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("target/pyenv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test, which makes that virtual environment with the \
             signalrcore client pinned in tests/py/requirements.txt (python3 -m venv \
             target/pyenv && target/pyenv/bin/pip install -r tests/py/requirements.txt)",
            python.display()
        );
        Self::spawn(
            tokio::process::Command::new(python).arg(root.join("tests/py/signalrcore-driver.py")),
        )
        .begin(&app.url("/hubs/notifications"), token, opts)
        .await
    }

    /// Sends the start command and waits for the client to report the outcome.
    async fn begin(mut self, url: &str, token: &str, opts: HubOptions) -> Result<Self, String> {
        let client = &mut self;
        client
            .command(json!({
                "cmd": "start",
                "url": url,
                "token": token,
                "protocol": if opts.messagepack { "messagepack" } else { "json" },
                "skipNegotiation": opts.skip_negotiation,
                "reconnect": opts.reconnect,
                "statefulReconnect": opts.stateful_reconnect,
                "transport": opts.transport.unwrap_or("WebSockets"),
                "events": opts.events,
            }))
            .await;
        let r = client
            .wait_for(|v| v["type"] == "started" || v["type"] == "start_failed")
            .await;
        if r["type"] == "started" {
            client.connection_id = r["connectionId"].as_str().map(str::to_owned);
            Ok(self)
        } else {
            Err(r["error"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// Runs `script` (in `tests/js`), a driver speaking the same JSON lines, with no command yet.
    pub fn driver(script: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            dir.join("node_modules/@microsoft/signalr").exists(),
            "run `npm ci --prefix tests/js` first (scripts/test does)"
        );
        Self::spawn(
            tokio::process::Command::new("node")
                .arg(dir.join(script))
                .current_dir(&dir),
        )
    }

    /// Runs a driver process speaking the JSON lines.
    pub fn spawn(command: &mut tokio::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdin,
            lines,
            backlog: VecDeque::new(),
            next_id: 0,
            connection_id: None,
        }
    }

    pub async fn command(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("driver alive");
        self.stdin.flush().await.unwrap();
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("timed out waiting for the SignalR client")
            .expect("driver output")
            .expect("driver exited");
        let v: Value = serde_json::from_str(&line).expect("driver reports JSON");
        // HUB_TRACE=1 (with --no-capture) prints every report, to see where a client got stuck.
        if std::env::var_os("HUB_TRACE").is_some() {
            eprintln!("hub report: {v}");
        }
        if v["type"] == "log" {
            eprintln!("signalr client log: {v}");
        }
        v
    }

    /// The first report matching `pred` (from the backlog first); others are kept.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).unwrap();
        }
        loop {
            let v = self.read().await;
            if pred(&v) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Invokes a hub method; `Ok(value)` or `Err(error message)`.
    pub async fn invoke(&mut self, method: &str, args: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("i{}", self.next_id);
        self.command(json!({"cmd":"invoke","id":id,"method":method,"args":args}))
            .await;
        let r = self
            .wait_for(|v| v["type"] == "result" && v["id"] == id)
            .await;
        if r["ok"] == true {
            Ok(r["value"].clone())
        } else {
            Err(r["error"].as_str().unwrap_or_default().to_owned())
        }
    }

    /// Invokes `calls` (method, arguments) without awaiting in between, as `invoke()` calls made
    /// in one go (the client sends them in one frame). Returns every result in the order the
    /// completions arrived, each with the index of its call: `Ok(value)` or `Err(error message)`;
    /// a completion that never arrives times out.
    pub async fn invoke_together(
        &mut self,
        calls: &[(&str, Value)],
    ) -> Vec<(usize, Result<Value, String>)> {
        let first = self.next_id + 1;
        self.next_id += calls.len() as u64;
        let id_of = |i: usize| format!("i{}", first + i as u64);
        let commands: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (method, args))| json!({"id": id_of(i), "method": method, "args": args}))
            .collect();
        self.command(json!({"cmd":"invokeAll","calls":commands}))
            .await;
        let index_of = |v: &Value| (0..calls.len()).find(|&i| v["id"] == id_of(i).as_str());
        let mut results = Vec::with_capacity(calls.len());
        while results.len() < calls.len() {
            let r = self
                .wait_for(|v| v["type"] == "result" && index_of(v).is_some())
                .await;
            let i = index_of(&r).expect("matched above");
            results.push((
                i,
                if r["ok"] == true {
                    Ok(r["value"].clone())
                } else {
                    Err(r["error"].as_str().unwrap_or_default().to_owned())
                },
            ));
        }
        results
    }

    /// The next `event` report for the event `name`; returns its first argument.
    pub async fn event(&mut self, name: &str) -> Value {
        let v = self
            .wait_for(|v| v["type"] == "event" && v["name"] == name)
            .await;
        v["args"][0].clone()
    }

    /// The next `event` report for the event `name`; returns all its arguments.
    pub async fn event_args(&mut self, name: &str) -> Value {
        self.wait_for(|v| v["type"] == "event" && v["name"] == name)
            .await["args"]
            .clone()
    }

    /// Whether a report already read but not yet consumed matches `pred`.
    pub fn backlog_contains(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.backlog.iter().any(pred)
    }

    /// Takes every report already read but not yet consumed, in arrival order.
    pub fn take_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// Adds a handler for `name`; returns once the driver has it (commands run in order, so a
    /// round trip after it proves it is registered).
    pub async fn listen(&mut self, name: &str) {
        self.command(json!({"cmd":"on","event":name})).await;
        self.command(json!({"cmd":"noop","id":name})).await;
        self.wait_for(|v| v["type"] == "noop" && v["id"] == name)
            .await;
    }

    pub async fn stop(mut self) {
        self.command(json!({"cmd":"stop"})).await;
        self.wait_for(|v| v["type"] == "stopped").await;
    }
}

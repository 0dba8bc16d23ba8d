//! The command line: one subcommand per scenario, with the common connection flags and the
//! publishing flags shared where they apply.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default base URL of the server under test.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Default HS256 secret; the server must be started with the same one.
pub const DEFAULT_JWT_SECRET: &str = "bench-secret-please-change";

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Switchyard load generator: prints one JSON line of results on stdout and a summary on stderr"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// S subscribers on one channel; M messages published to it.
    Fanout(FanoutArgs),
    /// Each subscriber on its own channel; messages to random subscribers' channels.
    Targeted(TargetedArgs),
    /// S connections held subscribed and idle; measures the server's memory per connection.
    Idle(IdleArgs),
    /// Fan-out with subscribers on one node (--sub-url) and the publisher on another (--pub-url).
    CrossNode(CrossNodeArgs),
    /// Draws deliveries/s and p99 latency against subscriber count from stored results (SVG).
    Plot(PlotArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Switchyard's native JSON protocol at /ws.
    Native,
    /// SignalR JSON hub protocol at --hub-path.
    Signalr,
    /// SignalR MessagePack hub protocol at --hub-path (binary frames, varint-prefixed records).
    SignalrMsgpack,
    /// Socket.IO 5 over Engine.IO 4 at `/socket.io/?EIO=4&transport=websocket` (the Socket.IO
    /// target: `subscribe` and `publish` events with acks, deliveries as emitted events).
    Socketio,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Signalr => "signalr",
            Protocol::SignalrMsgpack => "signalr-msgpack",
            Protocol::Socketio => "socketio",
        }
    }

    /// Whether the subscribers negotiate and speak a SignalR hub protocol.
    pub fn is_hub(self) -> bool {
        matches!(self, Protocol::Signalr | Protocol::SignalrMsgpack)
    }
}

/// How the publisher reaches the server.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOver {
    /// `POST /api/v1/publish` on keep-alive connections, one publish in flight per connection.
    Http,
    /// `publish` frames on `Service` WebSocket connections at `/ws`, pipelined, each acknowledged
    /// with `published` (with `--protocol socketio`: `publish` events on Socket.IO connections,
    /// each acknowledged by the server's ack).
    Ws,
    /// `POST /api/v1/publish/batch` on `--publishers` keep-alive connections, one batch of up to
    /// `--batch-size` events in flight per connection, a result per event.
    Batch,
}

impl PublishOver {
    pub fn name(self) -> &'static str {
        match self {
            PublishOver::Http => "http",
            PublishOver::Ws => "ws",
            PublishOver::Batch => "batch",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetedChannel {
    /// `tenant:{t}:customer:u{i}`
    Customer,
    /// `user:u{i}`
    User,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Base URL of the server (subscribers and publisher), e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Tenant key put in every token and channel name.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// HS256 secret the tokens are signed with.
    #[arg(long, default_value = DEFAULT_JWT_SECRET)]
    pub jwt_secret: String,
    /// Wire protocol of the subscribers.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Role claimed by subscriber tokens (Customer or Admin).
    #[arg(long, default_value = "Customer")]
    pub subscriber_role: String,
    /// Path of the SignalR hub.
    #[arg(long, default_value = "/hubs/notifications")]
    pub hub_path: String,
    /// Hub method invoked to subscribe to a channel.
    #[arg(long, default_value = "Subscribe")]
    pub hub_method: String,
    /// Connections being set up (connect + subscribe) at the same time.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds to wait for stragglers after publishing ends (also the connect/subscribe timeout).
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Loopback source addresses to spread client sockets over (default: one per 20,000 connections).
    #[arg(long)]
    pub source_addrs: Option<usize>,
    /// Initial read buffer of each client WebSocket (tungstenite's default is 128 KiB, which
    /// costs that much memory per connection).
    #[arg(long, default_value_t = 8 * 1024)]
    pub ws_read_buffer_bytes: usize,
    /// Server process(es) whose CPU time (/proc/PID/stat utime + stime) over the measured window
    /// and resident memory (VmRSS) before and after the subscribers connect are reported; repeat
    /// the flag (or separate with commas) to sum several processes (the nodes of a cluster).
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print only the JSON line (no summary or progress on stderr).
    #[arg(long)]
    pub json_only: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Messages to publish (window mode; with --rate, --duration decides instead when given).
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Most publishes in flight at once. Over HTTP: one keep-alive connection per slot. Over a
    /// WebSocket: shared out among the --publishers connections (pipelined on each).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// How the publisher reaches the server: REST (`http`) or `publish` frames on `/ws` (`ws`).
    #[arg(long, value_enum, default_value_t = PublishOver::Http)]
    pub publish_over: PublishOver,
    /// With --publish-over ws: WebSocket connections of the publisher, all as one `Service` user
    /// (Switchyard's `connection_limits.max_per_user`, 100 by default, caps them per node). With
    /// --publish-over batch: keep-alive HTTP connections, one batch in flight on each.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// With --publish-over batch: the most events in one `POST /api/v1/publish/batch` (Switchyard
    /// takes up to `publish.max_batch_events`, 1,000 by default).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Publish at this fixed rate (messages per second) instead of as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: publish for this many seconds (messages = rate × duration).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Size of each published `data` JSON in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Event name of the published messages.
    #[arg(long, default_value = "BenchEvent")]
    pub event: String,
    /// Retries of one publish answered 503 (over a WebSocket: `busy`, `unavailable` or
    /// `rate_limited`) before it counts as an error.
    #[arg(long, default_value_t = 50)]
    pub max_retries: u32,
    /// Seed of the random target choice (targeted scenario).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl PublishArgs {
    /// Connections the publisher opens at most.
    pub fn connections(&self) -> usize {
        match self.publish_over {
            PublishOver::Http => self.window.max(1),
            PublishOver::Ws => self.ws_connections(),
            PublishOver::Batch => self.publishers.max(1),
        }
    }

    /// WebSocket publisher connections: --publishers, but never more than the window.
    pub fn ws_connections(&self) -> usize {
        self.publishers.clamp(1, self.window.max(1))
    }
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Number of subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channel (default `tenant:{tenant}:broadcast`).
    #[arg(long)]
    pub channel: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TargetedArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Number of subscribers, each on its own channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channel family of each subscriber.
    #[arg(long, value_enum, default_value_t = TargetedChannel::Customer)]
    pub channel_kind: TargetedChannel,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold the connections after they are all subscribed.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Seconds to let the server settle after the last subscribe before reading its memory.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Channel (default `tenant:{tenant}:broadcast`).
    #[arg(long)]
    pub channel: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CrossNodeArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Base URL of the node the subscribers connect to.
    #[arg(long)]
    pub sub_url: String,
    /// Base URL of the node the publisher posts to.
    #[arg(long)]
    pub pub_url: String,
    /// Each subscriber on its own channel of this family (as `targeted`), instead of one shared
    /// channel: many channels, so on a Redis Cluster many partitions on every shard.
    #[arg(long, value_enum)]
    pub per_subscriber: Option<TargetedChannel>,
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Results files (JSON lines as `scripts/bench` writes them).
    #[arg(required = true)]
    pub results: Vec<String>,
    /// The SVG file to write.
    #[arg(long, default_value = "fanout.svg")]
    pub out: String,
    /// Protocol of the runs to draw.
    #[arg(long, default_value = "native")]
    pub protocol: String,
    /// Publish path of the runs to draw (`ws` or `http`; results without the field are `http`).
    #[arg(long, default_value = "ws")]
    pub publish_over: String,
}

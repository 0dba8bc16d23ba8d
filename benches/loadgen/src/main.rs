//! `loadgen`: Switchyard's load generator. Parses the command line, prepares the process for many
//! sockets, runs one scenario on a multi-threaded runtime, and prints the result as ONE JSON line
//! on stdout plus a readable summary on stderr.

#![recursion_limit = "256"]

mod auth;
mod cli;
mod http_client;
mod hub_msgpack;
mod net;
mod payload;
mod plot;
mod publisher;
mod scenarios;
mod server_process;
mod socketio;
mod stats;
mod subscriber;
mod ws_publisher;

use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

use cli::{Cli, CommonArgs, Scenario};
use scenarios::{ChannelLayout, DeliveryRun};

/// Connections a scenario will open, to check against the file-descriptor limit.
fn planned_connections(scenario: &Scenario) -> usize {
    match scenario {
        Scenario::Fanout(a) => a.subscribers + a.publish.connections(),
        Scenario::Targeted(a) => a.subscribers + a.publish.connections(),
        Scenario::Idle(a) => a.connections,
        Scenario::CrossNode(a) => a.fanout.subscribers + a.fanout.publish.connections(),
        Scenario::Plot(_) => 0,
    }
}

/// The connection flags of a load scenario (`None` for `plot`, which connects nowhere).
fn common(scenario: &Scenario) -> Option<&CommonArgs> {
    match scenario {
        Scenario::Fanout(a) => Some(&a.common),
        Scenario::Targeted(a) => Some(&a.common),
        Scenario::Idle(a) => Some(&a.common),
        Scenario::CrossNode(a) => Some(&a.fanout.common),
        Scenario::Plot(_) => None,
    }
}

async fn run(scenario: Scenario, worker_threads: usize) -> Result<Value, String> {
    match scenario {
        Scenario::Fanout(a) => {
            let layout = scenarios::shared_layout(&a.common.tenant, &a.channel);
            scenarios::run_delivery(DeliveryRun {
                scenario: "fanout",
                sub_url: a.common.url.clone(),
                pub_url: a.common.url.clone(),
                common: a.common,
                publish: a.publish,
                subscribers: a.subscribers,
                layout,
                worker_threads,
            })
            .await
        }
        Scenario::Targeted(a) => {
            scenarios::run_delivery(DeliveryRun {
                scenario: "targeted",
                sub_url: a.common.url.clone(),
                pub_url: a.common.url.clone(),
                common: a.common,
                publish: a.publish,
                subscribers: a.subscribers,
                layout: ChannelLayout::PerSubscriber(a.channel_kind),
                worker_threads,
            })
            .await
        }
        Scenario::CrossNode(a) => {
            let f = a.fanout;
            let layout = match a.per_subscriber {
                Some(kind) => ChannelLayout::PerSubscriber(kind),
                None => scenarios::shared_layout(&f.common.tenant, &f.channel),
            };
            scenarios::run_delivery(DeliveryRun {
                scenario: "cross-node",
                sub_url: a.sub_url,
                pub_url: a.pub_url,
                common: f.common,
                publish: f.publish,
                subscribers: f.subscribers,
                layout,
                worker_threads,
            })
            .await
        }
        Scenario::Idle(a) => {
            scenarios::run_idle(
                &a.common,
                a.connections,
                a.hold_secs,
                a.settle_secs,
                a.channel.clone(),
                worker_threads,
            )
            .await
        }
        Scenario::Plot(_) => Err("plot is not a load scenario".to_owned()),
    }
}

fn number(report: &Value, key: &str) -> String {
    match &report[key] {
        Value::Null => "-".to_owned(),
        v => v.to_string(),
    }
}

/// The human-readable summary of a report, for stderr.
fn summary(report: &Value) -> String {
    let n = |key: &str| number(report, key);
    let mut out = format!(
        "== {} ({}) — {}/{} subscribed, {} connect errors, {} refused, {} dropped early, setup {} s\n",
        report["scenario"].as_str().unwrap_or("?"),
        report["protocol"].as_str().unwrap_or("?"),
        n("subscribed"),
        n("subscribers"),
        n("connect_errors"),
        n("subscribe_errors"),
        n("disconnected_early"),
        n("connect_secs"),
    );
    if report["scenario"] == "idle" {
        out += &format!(
            "   server RSS {} → {} → {} KiB (before / after connect / after hold): {} bytes per connection; loadgen {} bytes per connection\n",
            n("server_rss_before_kb"),
            n("server_rss_after_kb"),
            n("server_rss_end_kb"),
            n("server_bytes_per_connection"),
            n("loadgen_bytes_per_connection"),
        );
    } else {
        let latency = &report["latency_ms"];
        let l = |key: &str| number(latency, key);
        out += &format!(
            "   published {} of {} over {} ({} errors, {} × 503/busy, {} × rate-limited, {} unmatched replies) at {} msg/s\n   delivered {} of {} at {} deliveries/s over {} s — lost {}, duplicated {}{}\n   latency ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)\n",
            n("published"),
            n("messages"),
            report["publish_over"].as_str().unwrap_or("?"),
            n("publish_errors"),
            n("publish_busy_503"),
            n("publish_rate_limited"),
            n("publish_unmatched_replies"),
            n("publish_rate"),
            n("deliveries"),
            n("expected_deliveries"),
            n("deliveries_per_sec"),
            n("delivery_secs"),
            n("lost"),
            n("duplicated"),
            if report["timed_out"] == true { " (TIMED OUT waiting for stragglers)" } else { "" },
            l("p50"),
            l("p90"),
            l("p99"),
            l("p999"),
            l("max"),
            l("samples"),
        );
        if !report["server_pids"]
            .as_array()
            .is_some_and(|p| p.is_empty())
        {
            out += &format!(
                "   server CPU {} s over the window: {} µs per delivery; server RSS {} → {} KiB while subscribing: {} bytes per connection\n",
                n("server_cpu_secs"),
                n("server_cpu_us_per_delivery"),
                n("server_rss_before_kb"),
                n("server_rss_after_kb"),
                n("server_bytes_per_connection"),
            );
        }
    }
    if let Some(errors) = report["errors"].as_array().filter(|e| !e.is_empty()) {
        for error in errors {
            out += &format!("   error sample: {}\n", error.as_str().unwrap_or_default());
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::Plot(args) = &cli.scenario {
        return match plot::run(args) {
            Ok(summary) => {
                print!("{summary}");
                eprintln!("loadgen: wrote {}", args.out);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen plot: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(common_args) = common(&cli.scenario) else {
        return ExitCode::FAILURE;
    };
    let json_only = common_args.json_only;
    let fd_limit = net::raise_fd_limit();
    let negotiate = if common_args.protocol.is_hub() {
        subscriber::NEGOTIATE_CONNECTIONS
    } else {
        0
    };
    let needed = (planned_connections(&cli.scenario) + negotiate) as u64 + net::FD_RESERVE;
    if needed > fd_limit {
        eprintln!(
            "loadgen: warning: about {needed} file descriptors needed but the limit is {fd_limit}; expect connect errors"
        );
    }
    let worker_threads = common_args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.scenario, worker_threads)) {
        Ok(report) => {
            println!("{report}");
            if !json_only {
                eprint!("{}", summary(&report));
            }
            // Dropping thousands of sockets is the kernel's job; do not wait for tasks.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `qmp-bench`: the Rust side of `bench/run`. Each subcommand connects to one QMP socket
//! (a QEMU or `mock-qmp`), measures one client, and prints one JSON line on stdout.
//!
//! * `roundtrip`: `query-status` one at a time (`--client async|blocking|raw|raw-oob`).
//! * `pipelined`: `query-status` with `--in-flight` commands outstanding
//!   (`--client async|raw-oob`; the async client negotiates `oob` when offered).
//! * `events`: `x-bench-events` (mock only) and consume every event
//!   (`--client async|async-cap256|raw`); `async` subscribes with room for all of them,
//!   `async-cap256` with the default capacity and reports the events it lost.
//! * `idle`: hold `--connections` idle async clients; RSS and threads at `--report-at`.
//!
//! The async client runs on a current-thread runtime (the `idle` measurement can also use
//! a multi-thread one): on a 2-core machine the server needs the other core.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use qmp_bench::ProcStatus;
use qmp_bench::raw::RawQmp;
use qmp_client::{Client, ClientBuilder, DEFAULT_SUBSCRIPTION_CAPACITY, EventFilter, EventItem};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Rust side of bench/run: one measurement, one JSON line")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// `query-status` one at a time.
    Roundtrip {
        /// The QMP socket.
        #[arg(long)]
        socket: PathBuf,
        /// Which client.
        #[arg(long, value_enum)]
        client: RoundtripClient,
        /// Round trips timed.
        #[arg(long, default_value_t = 2000)]
        count: u64,
        /// Round trips before the timing starts.
        #[arg(long, default_value_t = 200)]
        warmup: u64,
    },
    /// `query-status` with several in flight.
    Pipelined {
        /// The QMP socket.
        #[arg(long)]
        socket: PathBuf,
        /// Which client.
        #[arg(long, value_enum)]
        client: PipelinedClient,
        /// Commands timed.
        #[arg(long, default_value_t = 4096)]
        count: u64,
        /// Commands in flight.
        #[arg(long, default_value_t = 64)]
        in_flight: u64,
        /// Commands before the timing starts.
        #[arg(long, default_value_t = 512)]
        warmup: u64,
    },
    /// Events emitted by `x-bench-events` (mock server only).
    Events {
        /// The QMP socket.
        #[arg(long)]
        socket: PathBuf,
        /// Which client.
        #[arg(long, value_enum)]
        client: EventsClient,
        /// Events timed.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Events before the timing starts.
        #[arg(long, default_value_t = 2000)]
        warmup: u64,
    },
    /// Many idle async clients in one process.
    Idle {
        /// QMP sockets, used in turn (repeat the option for several servers).
        #[arg(long, required = true)]
        socket: Vec<PathBuf>,
        /// Connections to hold.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connection counts at which memory and threads are reported.
        #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
        report_at: Vec<usize>,
        /// The tokio runtime the clients live on.
        #[arg(long, value_enum, default_value_t = Flavor::CurrentThread)]
        runtime: Flavor,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoundtripClient {
    Async,
    Blocking,
    Raw,
    RawOob,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PipelinedClient {
    Async,
    RawOob,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EventsClient {
    Async,
    AsyncCap256,
    Raw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qmp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Operations per second; the counts here are far below 2^52, so `as f64` is exact.
#[allow(clippy::cast_precision_loss)]
fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn timing(bench: &str, client: &str, count: u64, elapsed: Duration) -> Value {
    json!({
        "bench": bench,
        "client": client,
        "impl": "rust",
        "count": count,
        "seconds": elapsed.as_secs_f64(),
        "us_per_op": 1e6 / rate(count, elapsed),
        "ops_per_s": rate(count, elapsed),
    })
}

fn run(bench: Bench) -> Result<Value> {
    match bench {
        Bench::Roundtrip { socket, client, count, warmup } => {
            let name = client.to_possible_value().map(|v| v.get_name().to_owned());
            let elapsed = roundtrip(&socket, client, count, warmup)?;
            Ok(timing("roundtrip", &name.unwrap_or_default(), count, elapsed))
        }
        Bench::Pipelined { socket, client, count, in_flight, warmup } => {
            let name = client.to_possible_value().map(|v| v.get_name().to_owned());
            let (elapsed, oob) = pipelined(&socket, client, count, in_flight, warmup)?;
            let mut line = timing("pipelined", &name.unwrap_or_default(), count, elapsed);
            line["in_flight"] = json!(in_flight);
            line["oob"] = json!(oob);
            Ok(line)
        }
        Bench::Events { socket, client, count, warmup } => {
            let name = client.to_possible_value().map(|v| v.get_name().to_owned());
            let (elapsed, received, lost) = events(&socket, client, count, warmup)?;
            let mut line = timing("events", &name.unwrap_or_default(), count, elapsed);
            line["received"] = json!(received);
            line["lost"] = json!(lost);
            Ok(line)
        }
        Bench::Idle { socket, connections, report_at, runtime } => {
            idle(&socket, connections, &report_at, runtime)
        }
    }
}

fn roundtrip(socket: &Path, client: RoundtripClient, count: u64, warmup: u64) -> Result<Duration> {
    match client {
        RoundtripClient::Raw | RoundtripClient::RawOob => {
            let mut raw = RawQmp::connect(socket, matches!(client, RoundtripClient::RawOob))?;
            for _ in 0..warmup {
                raw.round_trip()?;
            }
            let start = Instant::now();
            for _ in 0..count {
                raw.round_trip()?;
            }
            Ok(start.elapsed())
        }
        RoundtripClient::Blocking => {
            let mut qmp = ClientBuilder::new().connect_blocking(socket)?;
            for _ in 0..warmup {
                qmp.execute("query-status", ())?;
            }
            let start = Instant::now();
            for _ in 0..count {
                qmp.execute("query-status", ())?;
            }
            let elapsed = start.elapsed();
            qmp.close();
            Ok(elapsed)
        }
        RoundtripClient::Async => current_thread()?.block_on(async {
            let qmp = Client::connect(socket).await?;
            for _ in 0..warmup {
                qmp.execute("query-status", ()).await?;
            }
            let start = Instant::now();
            for _ in 0..count {
                qmp.execute("query-status", ()).await?;
            }
            let elapsed = start.elapsed();
            qmp.close().await;
            Ok(elapsed)
        }),
    }
}

/// Runs `n` commands on `qmp`, `k` at a time.
async fn client_pipelined(qmp: &Client, n: u64, k: u64) -> Result<()> {
    let k = usize::try_from(k)?;
    let mut replies =
        futures::stream::iter(0..n).map(|_| qmp.execute("query-status", ())).buffer_unordered(k);
    while let Some(reply) = replies.next().await {
        reply?;
    }
    Ok(())
}

fn pipelined(
    socket: &Path,
    client: PipelinedClient,
    count: u64,
    in_flight: u64,
    warmup: u64,
) -> Result<(Duration, bool)> {
    match client {
        PipelinedClient::RawOob => {
            let mut raw = RawQmp::connect(socket, true)?;
            raw.pipelined(warmup, in_flight)?;
            let start = Instant::now();
            raw.pipelined(count, in_flight)?;
            Ok((start.elapsed(), true))
        }
        PipelinedClient::Async => current_thread()?.block_on(async {
            let qmp = Client::connect(socket).await?;
            client_pipelined(&qmp, warmup, in_flight).await?;
            let start = Instant::now();
            client_pipelined(&qmp, count, in_flight).await?;
            let elapsed = start.elapsed();
            let oob = qmp.oob_enabled();
            qmp.close().await;
            Ok((elapsed, oob))
        }),
    }
}

/// Asks for `count` events and consumes them through a subscription of `capacity`;
/// returns the events received and lost (`Lagged`).
async fn client_events(qmp: &Client, count: u64, capacity: usize) -> Result<(u64, u64)> {
    let mut subscription = qmp.subscribe_with_capacity(EventFilter::names(["BENCH"]), capacity);
    let consume = async {
        let (mut received, mut lost) = (0, 0);
        while received + lost < count {
            match subscription.recv().await {
                Some(EventItem::Event(_)) => received += 1,
                Some(EventItem::Lagged(n)) => lost += n,
                Some(_) => {}
                None => break,
            }
        }
        (received, lost)
    };
    let (reply, counts) =
        tokio::join!(qmp.execute("x-bench-events", json!({ "count": count })), consume);
    reply?;
    Ok(counts)
}

fn events(
    socket: &Path,
    client: EventsClient,
    count: u64,
    warmup: u64,
) -> Result<(Duration, u64, u64)> {
    match client {
        EventsClient::Raw => {
            let mut raw = RawQmp::connect(socket, true)?;
            raw.events(warmup)?;
            let start = Instant::now();
            let received = raw.events(count)?;
            Ok((start.elapsed(), received, count.saturating_sub(received)))
        }
        EventsClient::Async | EventsClient::AsyncCap256 => current_thread()?.block_on(async {
            let capacity = match client {
                EventsClient::AsyncCap256 => DEFAULT_SUBSCRIPTION_CAPACITY,
                _ => usize::try_from(count.max(warmup))?,
            };
            let qmp = Client::connect(socket).await?;
            client_events(&qmp, warmup, capacity).await?;
            let start = Instant::now();
            let (received, lost) = client_events(&qmp, count, capacity).await?;
            let elapsed = start.elapsed();
            qmp.close().await;
            Ok((elapsed, received, lost))
        }),
    }
}

fn idle(
    sockets: &[PathBuf],
    connections: usize,
    report_at: &[usize],
    flavor: Flavor,
) -> Result<Value> {
    let nofile = qmp_bench::raise_nofile_limit()?;
    let runtime = match flavor {
        Flavor::CurrentThread => current_thread()?,
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    let workers = runtime.metrics().num_workers();
    runtime.block_on(async {
        let mut clients: Vec<Client> = Vec::with_capacity(connections);
        let mut reports = Vec::new();
        let mut report = |n: usize| -> Result<ProcStatus> {
            let status = ProcStatus::read()?;
            reports.push(
                json!({"connections": n, "rss_kib": status.rss_kib, "threads": status.threads}),
            );
            Ok(status)
        };
        let mut base = None;
        let mut last = None;
        for n in 0..=connections {
            if report_at.contains(&n) {
                // Let every connection's tasks finish their handshake work and park.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let status = report(n)?;
                base.get_or_insert((n, status));
                last = Some((n, status));
            }
            if n == connections {
                break;
            }
            let socket = &sockets[n % sockets.len()];
            clients.push(Client::connect(socket).await?);
        }
        // Every connection is still alive and usable.
        for client in &clients {
            if client.is_closed() {
                return Err("an idle connection was closed".into());
            }
        }
        for client in clients.iter().step_by(97) {
            client.execute("query-status", ()).await?;
        }
        let per_connection_kib = match (base, last) {
            (Some((n0, s0)), Some((n1, s1))) if n1 > n0 => {
                let delta = s1.rss_kib.saturating_sub(s0.rss_kib);
                #[allow(clippy::cast_precision_loss)]
                let per = delta as f64 / (n1 - n0) as f64;
                json!(per)
            }
            _ => Value::Null,
        };
        let flavor_name = flavor.to_possible_value().map(|v| v.get_name().to_owned());
        let line = json!({
            "bench": "idle",
            "client": "async",
            "impl": "rust",
            "runtime": flavor_name,
            "workers": workers,
            "connections": connections,
            "servers": sockets.len(),
            "nofile_limit": nofile,
            "reports": reports,
            "rss_kib_per_connection": per_connection_kib,
        });
        for client in &clients {
            client.close().await;
        }
        Ok(line)
    })
}

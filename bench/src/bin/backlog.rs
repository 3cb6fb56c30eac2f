//! The backlog benchmark: publish N messages into one topic with one
//! channel and no consumer, watch the server's memory, restart it on the
//! same data directory, time how soon it accepts connections, then drain
//! the backlog and check that every message came back.
//!
//! Prints progress every second and a summary at the end, and writes the
//! figures to `bench/results/backlog-<date>-<host>.{json,md}`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use tokio::sync::watch;

use ledgerq_bench::nsq::{self, Connection, Disposition, Identify, Publisher};
use ledgerq_bench::server::{self, Accepting, ServerCommand, ServerProcess, Stop};
use ledgerq_bench::util::{self, mib, thousands, UtcTime};

#[path = "backlog/monitor.rs"]
mod monitor;
#[path = "backlog/payload.rs"]
mod payload;
#[path = "backlog/report.rs"]
mod report;
use monitor::{Monitor, PhaseMemory};
use payload::{check_body, fill_body, Seen};
use report::{
    render_markdown, DrainFigures, Environment, PublishFigures, Report, RestartFigures, Settings,
    StopFigures, Verdict,
};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "backlog",
    about = "Backlog benchmark: server RSS with N messages queued, restart time, drain rate",
    args_override_self = true
)]
struct Args {
    /// The ledgerq binary [default: $CARGO_TARGET_DIR/release/ledgerq].
    #[arg(long)]
    ledgerq: Option<PathBuf>,

    /// Messages to publish.
    #[arg(long, default_value_t = 5_000_000)]
    messages: u64,

    /// Size of each message body in bytes (at least 8: the first 8 bytes
    /// carry the message's sequence number).
    #[arg(long, default_value_t = 200)]
    size: usize,

    /// Messages per MPUB.
    #[arg(long, default_value_t = 100)]
    batch: usize,

    /// Publishing connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,

    /// MPUBs each publishing connection keeps awaiting their OK.
    #[arg(long, default_value_t = 4)]
    window: u32,

    /// Consuming connections for the drain.
    #[arg(long, default_value_t = 4)]
    consumers: usize,

    /// RDY count of each consuming connection.
    #[arg(long, default_value_t = 200)]
    rdy: u64,

    /// How to stop the server before the restart.
    #[arg(long, value_enum, default_value_t = Stop::Term)]
    stop: Stop,

    #[arg(long, default_value = "backlog")]
    topic: String,

    #[arg(long, default_value = "backlog-drain")]
    channel: String,

    /// Seconds to watch memory with the backlog at rest before stopping.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,

    /// Give up the drain after this many seconds without a new message.
    #[arg(long, default_value_t = 30)]
    drain_idle_timeout_secs: u64,

    /// Work directory (data dir and server log); must not exist yet
    /// [default: a new directory under $TMPDIR].
    #[arg(long)]
    work_dir: Option<PathBuf>,

    /// Keep the work directory afterwards (it is kept anyway on failure).
    #[arg(long)]
    keep_data: bool,

    /// Where to write the JSON and markdown reports [default: bench/results].
    #[arg(long)]
    results_dir: Option<PathBuf>,

    /// Do not write the reports.
    #[arg(long)]
    no_report: bool,

    /// Before the restart, sync and drop the kernel's page cache (needs
    /// root; affects the whole machine), so that the restart reads the data
    /// dir from disk as after a reboot.
    #[arg(long)]
    drop_caches: bool,

    /// Heartbeat interval asked for in IDENTIFY, in ms [default: the
    /// server's, 30 s]. Every connection answers heartbeats with NOP.
    #[arg(long)]
    heartbeat_interval_ms: Option<i64>,

    /// Extra flag for `ledgerq serve`, repeatable
    /// (e.g. `--server-arg=--unsafe-no-fsync`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,

    /// RSS target in MB of 10^6 bytes (reported as pass/fail against the
    /// server's VmHWM).
    #[arg(long, default_value_t = 300)]
    rss_target_mb: u64,

    /// Restart target in seconds: spawn until accepting connections.
    #[arg(long, default_value_t = 2.0)]
    restart_target_secs: f64,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------- phases

fn identify(name: &str, args: &Args) -> Identify {
    Identify {
        client_id: name.to_string(),
        heartbeat_interval: args.heartbeat_interval_ms,
        ..Identify::default()
    }
}

/// SUB then CLS, so that the channel exists before the first publish.
async fn create_channel(address: std::net::SocketAddr, args: &Args) -> Result<()> {
    let mut connection = Connection::connect_identified(address, &identify("create-channel", args))
        .await
        .context("connecting to create the channel")?;
    connection.sub(&args.topic, &args.channel).await?;
    nsq::command::cls(connection.writer.buf());
    let reply = connection.request().await.context("CLS")?;
    ensure!(
        reply.as_ref() == nsq::CLOSE_WAIT,
        "CLS answered {:?}",
        String::from_utf8_lossy(&reply)
    );
    connection.writer.shutdown().await?;
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

struct Published {
    secs: f64,
    commands: u64,
    latencies_us: Vec<u32>,
}

async fn publish(
    address: std::net::SocketAddr,
    args: &Args,
    monitor: &Monitor,
) -> Result<Published> {
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.publishers {
        let connection =
            Connection::connect_identified(address, &identify(&format!("publisher-{i}"), args))
                .await?;
        let ack_count = acked.clone();
        let ack_latencies = latencies.clone();
        let mut publisher = Publisher::start(connection, args.window, move |ack| {
            ack_count.fetch_add(u64::from(ack.messages), Ordering::Relaxed);
            let us = ack.latency.as_micros().min(u128::from(u32::MAX)) as u32;
            ack_latencies.lock().unwrap().push(us);
        });
        let next = next.clone();
        let (n, size, batch, topic) = (
            args.messages,
            args.size,
            args.batch as u64,
            args.topic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut scratch = vec![0u8; size * batch as usize];
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= n {
                    break;
                }
                let end = (start + batch).min(n);
                let used = &mut scratch[..(end - start) as usize * size];
                for (seq, body) in (start..end).zip(used.chunks_mut(size)) {
                    fill_body(seq, body);
                }
                publisher.mpub(&topic, used.chunks(size)).await?;
            }
            publisher.finish().await
        }));
    }

    let mut all = futures_join(tasks);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    let totals = loop {
        tokio::select! {
            result = &mut all => break result?,
            _ = tick.tick() => {
                let now = Instant::now();
                let done = acked.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, done);
                let memory = monitor.last();
                println!(
                    "publish  {:>6.1}s  {:>11} / {} acked ({:>5.1}%)  {:>8.0} msg/s  server RSS {:>6.1} MiB (peak {:.1})",
                    started.elapsed().as_secs_f64(),
                    thousands(done),
                    thousands(args.messages),
                    100.0 * done as f64 / args.messages as f64,
                    rate,
                    memory.rss_mib(),
                    memory.hwm_mib(),
                );
            }
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let messages: u64 = totals.iter().map(|t| t.messages).sum();
    ensure!(
        messages == args.messages,
        "published {messages} messages, expected {}",
        args.messages
    );
    let mut latencies_us = std::mem::take(&mut *latencies.lock().unwrap());
    latencies_us.sort_unstable();
    Ok(Published {
        secs,
        commands: totals.iter().map(|t| t.commands).sum(),
        latencies_us,
    })
}

/// Awaits every task; the first error wins.
fn futures_join<T: Send + 'static>(
    tasks: Vec<tokio::task::JoinHandle<Result<T>>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<T>>> + Send>> {
    Box::pin(async move {
        let mut set = tokio::task::JoinSet::new();
        let count = tasks.len();
        for (i, task) in tasks.into_iter().enumerate() {
            set.spawn(async move { (i, task.await) });
        }
        let mut out: Vec<Option<T>> = (0..count).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined?;
            out[i] = Some(result??);
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every task joined"))
            .collect())
    })
}

async fn restart(
    command: &ServerCommand,
    monitor: &Monitor,
    phase: &'static str,
) -> Result<(ServerProcess, std::net::SocketAddr, RestartFigures)> {
    monitor.phase(phase);
    let mut server = command.spawn().await?;
    monitor.watch(Some(server.pid));
    monitor.sample();
    let since = server.spawned_at;
    let timeout = Duration::from_secs(300);
    let (accepting, (address, listening)): (Accepting, _) = if command.tcp_address.port() == 0 {
        // The port is only known from the log line.
        let found = server.wait_listening(timeout).await?;
        (
            server::wait_accepting(found.0, since, timeout).await?,
            found,
        )
    } else {
        let address = command.tcp_address;
        let (listening, accepting) = tokio::join!(
            server.wait_listening(timeout),
            server::wait_accepting(address, since, timeout)
        );
        (accepting?, listening?)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    monitor.sample();
    let rss_idle_mib = round1(monitor.last().rss_mib());
    Ok((
        server,
        address,
        RestartFigures {
            connect_secs: round3(accepting.connect.as_secs_f64()),
            accepting_secs: round3(accepting.round_trip.as_secs_f64()),
            listening_log_secs: round3(listening.as_secs_f64()),
            rss_idle_mib,
        },
    ))
}

async fn drain(
    address: std::net::SocketAddr,
    args: &Args,
    monitor: &Monitor,
) -> Result<DrainFigures> {
    let seen = Arc::new(Seen::new(args.messages));
    let received = Arc::new(AtomicU64::new(0));
    let distinct = Arc::new(AtomicU64::new(0));
    let redelivered = Arc::new(AtomicU64::new(0));
    let corrupt = Arc::new(AtomicU64::new(0));
    let completed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let first_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let started = Instant::now();

    let mut tasks = Vec::new();
    for i in 0..args.consumers {
        let connection =
            Connection::connect_identified(address, &identify(&format!("consumer-{i}"), args))
                .await?;
        let (seen, received, distinct, redelivered, corrupt) = (
            seen.clone(),
            received.clone(),
            distinct.clone(),
            redelivered.clone(),
            corrupt.clone(),
        );
        let (completed_at, first_at, stop_tx, stop_rx) = (
            completed_at.clone(),
            first_at.clone(),
            stop_tx.clone(),
            stop_rx.clone(),
        );
        let (n, size, rdy) = (args.messages, args.size, args.rdy);
        let (topic, channel) = (args.topic.clone(), args.channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut scratch = vec![0u8; size];
            nsq::consume(connection, &topic, &channel, rdy, stop_rx, |message| {
                if received.fetch_add(1, Ordering::Relaxed) == 0 {
                    first_at.lock().unwrap().get_or_insert_with(Instant::now);
                }
                if message.attempts > 1 {
                    redelivered.fetch_add(1, Ordering::Relaxed);
                }
                match check_body(&message.body, size, &mut scratch) {
                    Some(seq) if seq < n => {
                        if seen.mark(seq) && distinct.fetch_add(1, Ordering::Relaxed) + 1 == n {
                            *completed_at.lock().unwrap() = Some(Instant::now());
                            let _ = stop_tx.send(true);
                        }
                    }
                    _ => {
                        corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Disposition::Finish
            })
            .await
        }));
    }

    let mut all = futures_join(tasks);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    let mut last_progress = Instant::now();
    let idle_timeout = Duration::from_secs(args.drain_idle_timeout_secs);
    loop {
        tokio::select! {
            result = &mut all => {
                result?;
                break;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let done = distinct.load(Ordering::Relaxed);
                let got = received.load(Ordering::Relaxed);
                if got != last.1 {
                    last_progress = now;
                }
                let rate = (got - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, got);
                let memory = monitor.last();
                println!(
                    "drain    {:>6.1}s  {:>11} / {} distinct ({:>5.1}%)  {:>8.0} msg/s  server RSS {:>6.1} MiB (peak {:.1})",
                    started.elapsed().as_secs_f64(),
                    thousands(done),
                    thousands(args.messages),
                    100.0 * done as f64 / args.messages as f64,
                    rate,
                    memory.rss_mib(),
                    memory.hwm_mib(),
                );
                if now.duration_since(last_progress) > idle_timeout && !*stop_tx.borrow() {
                    println!(
                        "drain    no message for {}s: giving up",
                        args.drain_idle_timeout_secs
                    );
                    let _ = stop_tx.send(true);
                }
            }
        }
    }
    let end = completed_at.lock().unwrap().unwrap_or_else(Instant::now);
    let secs = end.duration_since(started).as_secs_f64();
    let received = received.load(Ordering::Relaxed);
    let distinct = distinct.load(Ordering::Relaxed);
    let first = *first_at.lock().unwrap();
    Ok(DrainFigures {
        secs: round3(secs),
        msgs_per_sec: (distinct as f64 / secs).round(),
        first_message_secs: first.map(|at| round3(at.duration_since(started).as_secs_f64())),
        received,
        distinct,
        duplicates: received - distinct - corrupt.load(Ordering::Relaxed),
        redelivered: redelivered.load(Ordering::Relaxed),
        missing: args.messages - distinct,
        corrupt: corrupt.load(Ordering::Relaxed),
        complete: distinct == args.messages,
    })
}

async fn stop_server(
    server: ServerProcess,
    how: Stop,
    monitor: &Monitor,
    data_path: &Path,
) -> Result<StopFigures> {
    monitor.sample();
    let (status, took) = server.stop(how, Duration::from_secs(120)).await?;
    monitor.watch(None);
    Ok(StopFigures {
        how,
        exit: status.to_string(),
        secs: round3(took.as_secs_f64()),
        data_dir_mib: round1(mib(util::dir_size(data_path))),
    })
}

/// The command line of this run; `backlog.sh` names itself through
/// `LEDGERQ_BENCH_SCRIPT` so that the report shows the command to rerun.
fn invocation() -> String {
    let mut argv: Vec<String> = std::env::args().collect();
    if let Ok(script) = std::env::var("LEDGERQ_BENCH_SCRIPT") {
        argv[0] = script;
    }
    argv.join(" ")
}

/// Writes dirty pages out, then drops the page cache, dentries and inodes.
fn drop_caches() -> Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("writing /proc/sys/vm/drop_caches (--drop-caches needs root)")
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.size >= 8, "--size must be at least 8");
    ensure!(args.messages > 0, "--messages must be positive");
    ensure!(args.batch > 0 && args.publishers > 0 && args.consumers > 0 && args.rdy > 0);

    let started = UtcTime::now();
    let host = util::hostname();
    let binary = args.ledgerq.clone().unwrap_or_else(server::default_binary);
    ensure!(
        binary.exists(),
        "{} does not exist (build it with `cargo build --release -p ledgerq`, or pass --ledgerq)",
        binary.display()
    );
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "ledgerq-backlog-{}-{}",
            started.compact(),
            std::process::id()
        ))
    });
    if work_dir.exists() {
        bail!(
            "{} already exists; the benchmark needs a fresh directory",
            work_dir.display()
        );
    }
    std::fs::create_dir_all(&work_dir)?;
    let data_path = work_dir.join("data");
    let mut command = ServerCommand {
        binary: binary.clone(),
        data_path: data_path.clone(),
        tcp_address: "127.0.0.1:0".parse()?,
        http_address: None,
        extra_args: args.server_args.clone(),
        log_path: work_dir.join("server.log"),
    };

    let result = run(&args, &mut command, &started, &host).await;
    match &result {
        Ok(()) if !args.keep_data => {
            let _ = std::fs::remove_dir_all(&work_dir);
        }
        _ => println!(
            "work directory kept: {} (server log: {})",
            work_dir.display(),
            command.log_path.display()
        ),
    }
    result
}

async fn run(
    args: &Args,
    command: &mut ServerCommand,
    started: &UtcTime,
    host: &str,
) -> Result<()> {
    let (cpu_model, cpus) = util::cpu_info();
    let monitor = Monitor::start();
    let payload_mib = mib(args.messages * args.size as u64);
    println!(
        "backlog: {} messages x {} B = {:.0} MiB into topic {:?} channel {:?}",
        thousands(args.messages),
        args.size,
        payload_mib,
        args.topic,
        args.channel
    );
    println!("server:  {}", command.display());

    // 1. Fresh server on a free port.
    let (server, address, cold_start) = restart(command, &monitor, "start").await?;
    // The restart reuses the port the server picked.
    command.tcp_address = address;
    println!(
        "started: pid {} listening on {address}, accepting after {:.3}s",
        server.pid, cold_start.accepting_secs
    );

    // 2. The channel exists before the first message.
    create_channel(address, args).await?;

    // 3-4. Publish while sampling memory.
    monitor.phase("publish");
    let published = publish(address, args, &monitor).await?;
    let publish_phase = monitor.current("publish").expect("publish phase");
    println!(
        "publish  done: {} messages in {:.1}s = {:.0} msg/s; server RSS max {:.1} MiB, peak (VmHWM) {:.1} MiB",
        thousands(args.messages),
        published.secs,
        args.messages as f64 / published.secs,
        publish_phase.max_rss_mib,
        publish_phase.hwm_mib
    );

    monitor.phase("backlog at rest");
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    monitor.sample();
    let rest = monitor.current("backlog at rest").expect("rest phase");
    let data_dir_mib = round1(mib(util::dir_size(&command.data_path)));
    println!(
        "at rest  after {}s: server RSS {:.1} MiB (peak {:.1}); data dir {:.1} MiB",
        args.settle_secs, rest.last_rss_mib, rest.hwm_mib, data_dir_mib
    );
    let publish_figures = PublishFigures {
        secs: round3(published.secs),
        msgs_per_sec: (args.messages as f64 / published.secs).round(),
        payload_mib: round1(payload_mib),
        mpub_commands: published.commands,
        mpub_ack_ms_p50: percentile(&published.latencies_us, 50.0),
        mpub_ack_ms_p99: percentile(&published.latencies_us, 99.0),
        mpub_ack_ms_max: percentile(&published.latencies_us, 100.0),
        rss_at_rest_mib: round1(rest.last_rss_mib),
        data_dir_mib,
    };

    // 5. Stop, restart on the same data dir, time until accepting.
    let stop = stop_server(server, args.stop, &monitor, &command.data_path).await?;
    println!(
        "stop     {:?}: exited ({}) after {:.3}s",
        stop.how, stop.exit, stop.secs
    );
    if args.drop_caches {
        drop_caches()?;
        println!("caches   page cache dropped");
    }
    let (server, _, restart_figures) = restart(command, &monitor, "restart").await?;
    println!(
        "restart  connect after {:.3}s, accepting (IDENTIFY answered) after {:.3}s, \
         `TCP: listening` logged after {:.3}s; idle RSS {:.1} MiB",
        restart_figures.connect_secs,
        restart_figures.accepting_secs,
        restart_figures.listening_log_secs,
        restart_figures.rss_idle_mib
    );

    // 6. Drain.
    monitor.phase("drain");
    let drain_figures = drain(address, args, &monitor).await?;
    let drain_phase = monitor.current("drain").expect("drain phase");
    println!(
        "drain    done: {} distinct of {} in {:.1}s = {:.0} msg/s ({} duplicates, {} redelivered, {} missing, {} corrupt); \
         server RSS max {:.1} MiB, peak {:.1} MiB",
        thousands(drain_figures.distinct),
        thousands(args.messages),
        drain_figures.secs,
        drain_figures.msgs_per_sec,
        drain_figures.duplicates,
        drain_figures.redelivered,
        drain_figures.missing,
        drain_figures.corrupt,
        drain_phase.max_rss_mib,
        drain_phase.hwm_mib
    );
    monitor.phase("drained");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let final_stop = stop_server(server, Stop::Term, &monitor, &command.data_path).await?;

    // 7. Summary and reports.
    let phases = monitor.phases();
    let max_rss_mib = phases.iter().map(|p| p.max_rss_mib).fold(0.0, f64::max);
    let max_hwm_mib = phases.iter().map(|p| p.hwm_mib).fold(0.0, f64::max);
    let rss_target_mib = args.rss_target_mb as f64 * 1e6 / (1024.0 * 1024.0);
    let verdict = Verdict {
        rss_target_mb: args.rss_target_mb,
        rss_target_mib: round1(rss_target_mib),
        max_rss_mib: round1(max_rss_mib),
        max_hwm_mib: round1(max_hwm_mib),
        // VmRSS and VmHWM come from per-CPU counters and can disagree by a
        // little; the larger one counts.
        rss_ok: max_hwm_mib.max(max_rss_mib) < rss_target_mib,
        restart_target_secs: args.restart_target_secs,
        restart_ok: restart_figures.accepting_secs < args.restart_target_secs,
        drain_ok: drain_figures.complete,
    };
    let report = Report {
        benchmark: "backlog",
        started: started.rfc3339(),
        command: invocation(),
        environment: Environment {
            host: host.to_string(),
            cpu_model,
            cpus,
            memory_total_mib: util::memory_total_mib(),
            kernel: util::kernel_release(),
            work_dir: command
                .data_path
                .parent()
                .unwrap_or(&command.data_path)
                .display()
                .to_string(),
        },
        settings: Settings {
            messages: args.messages,
            size: args.size,
            batch: args.batch,
            publishers: args.publishers,
            window: args.window,
            consumers: args.consumers,
            rdy: args.rdy,
            stop: args.stop,
            topic: args.topic.clone(),
            channel: args.channel.clone(),
            heartbeat_interval_ms: args.heartbeat_interval_ms,
            drop_caches: args.drop_caches,
            server_command: command.display(),
        },
        cold_start,
        publish: publish_figures,
        stop,
        restart: restart_figures,
        drain: drain_figures,
        final_stop,
        memory: phases
            .into_iter()
            .map(|p| PhaseMemory {
                max_rss_mib: round1(p.max_rss_mib),
                last_rss_mib: round1(p.last_rss_mib),
                hwm_mib: round1(p.hwm_mib),
                ..p
            })
            .collect(),
        verdict,
        rss_timeline: monitor.timeline(),
    };
    let markdown = render_markdown(&report);
    println!();
    println!("{markdown}");
    if !args.no_report {
        let dir = args
            .results_dir
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
        std::fs::create_dir_all(&dir)?;
        let stem = format!("backlog-{}-{}", started.compact(), host);
        let json_path = dir.join(format!("{stem}.json"));
        let md_path = dir.join(format!("{stem}.md"));
        std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
        std::fs::write(&md_path, markdown)?;
        println!("wrote {} and {}", json_path.display(), md_path.display());
    }
    if !(report.verdict.rss_ok && report.verdict.restart_ok && report.verdict.drain_ok) {
        println!("RESULT: target missed (see the table above)");
    } else {
        println!("RESULT: all targets met");
    }
    ensure!(
        report.drain.complete,
        "{} messages were not delivered back",
        report.drain.missing
    );
    Ok(())
}

//! A load generator for any server that speaks the NSQ TCP protocol:
//! `publish`, `consume`, or `pubsub` (both at once, with end-to-end
//! latency carried in each body).
//!
//! Prints progress to stderr once per second, a short summary at the end,
//! and with `--json` one JSON object on stdout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;

use ledgerq_bench::nsq::{self, Connection, Disposition, Identify, Publisher};
use ledgerq_bench::util::thousands;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Publish only.
    Publish,
    /// Consume only (FIN every message).
    Consume,
    /// Publish and consume at once; measures end-to-end latency.
    Pubsub,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    about = "NSQ-protocol load generator: publish, consume or both, with latency percentiles",
    args_override_self = true
)]
struct Args {
    /// What to do.
    #[arg(value_enum)]
    mode: Mode,

    /// host:port of the NSQ TCP listener (ledgerq serve, nsqd, ...).
    #[arg(long, default_value = "127.0.0.1:4150")]
    address: String,

    /// Topic [default: `loadgen`; in pubsub mode `loadgen-pubsub-<unix time>`,
    /// so that an old backlog does not pollute the latencies].
    #[arg(long)]
    topic: Option<String>,

    /// Channel to consume from.
    #[arg(long, default_value = "loadgen")]
    channel: String,

    /// Publishing connections (in consume mode: consuming connections).
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,

    /// Consuming connections in pubsub mode [default: --connections].
    #[arg(long)]
    consumers: Option<usize>,

    /// Messages per publish command: 1 sends PUB, more send MPUB.
    #[arg(short = 'b', long, default_value_t = 1)]
    batch: usize,

    /// Publish commands each connection keeps awaiting their OK.
    #[arg(short = 'd', long, default_value_t = 1)]
    depth: u32,

    /// Message body size in bytes (pubsub: at least 16, the timestamp header).
    #[arg(short = 's', long, default_value_t = 200)]
    size: usize,

    /// Stop publishing (consume mode: consuming) after this many seconds.
    /// Without --count or --duration, 10 seconds.
    #[arg(long)]
    duration: Option<f64>,

    /// Stop after this many messages, in total over all connections.
    #[arg(long)]
    count: Option<u64>,

    /// Target publish rate in messages/s, over all connections, on a fixed
    /// schedule; latencies then count from each command's scheduled time
    /// (or the generator's timer wake-up, if later)
    /// [default: as fast as acknowledgements allow].
    #[arg(long)]
    rate: Option<f64>,

    /// RDY count of each consuming connection.
    #[arg(long, default_value_t = 200)]
    rdy: u64,

    /// Consumers stop after this many seconds without a message.
    #[arg(long, default_value_t = 5.0)]
    idle_timeout: f64,

    /// Compression every connection asks for in IDENTIFY.
    #[arg(long, value_enum, default_value = "none")]
    compression: nsq::Compression,

    /// Print one JSON object with every figure on stdout.
    #[arg(long)]
    json: bool,

    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// nsqd's and ledgerq's default --max-body-size.
const MAX_BODY: usize = 5 << 20;

impl Args {
    fn validate(&self) -> Result<()> {
        if self.connections == 0 || self.consumers == Some(0) {
            bail!("--connections and --consumers must be at least 1");
        }
        if self.batch == 0 || self.depth == 0 {
            bail!("--batch and --depth must be at least 1");
        }
        if self.size == 0 {
            bail!("--size must be at least 1 (NSQ refuses empty bodies)");
        }
        if self.mode == Mode::Pubsub && self.size < BODY_HEADER {
            bail!("pubsub needs --size of at least {BODY_HEADER} for the timestamp header");
        }
        // MPUB body: count, then a length and the bytes of each message.
        if self.batch > 1 && 4 + self.batch * (4 + self.size) > MAX_BODY {
            bail!(
                "an MPUB of {} x {} B exceeds the 5 MiB default max-body-size",
                self.batch,
                self.size
            );
        }
        if let Some(duration) = self.duration {
            if !(duration > 0.0 && duration.is_finite()) {
                bail!("--duration must be a positive number of seconds");
            }
        }
        if self.count == Some(0) {
            bail!("--count must be at least 1");
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("--rate must be a positive number of messages/s");
            }
            if self.mode == Mode::Consume {
                bail!("--rate applies to publishing only");
            }
        }
        if self.rdy == 0 {
            bail!("--rdy must be at least 1");
        }
        if !(self.idle_timeout > 0.0 && self.idle_timeout.is_finite()) {
            bail!("--idle-timeout must be a positive number of seconds");
        }
        Ok(())
    }

    /// The publishing time limit: --duration, or 10 s if neither it nor
    /// --count is given.
    fn publish_duration(&self) -> Option<Duration> {
        match (self.duration, self.count) {
            (Some(secs), _) => Some(Duration::from_secs_f64(secs)),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    fn topic(&self) -> String {
        match (&self.topic, self.mode) {
            (Some(topic), _) => topic.clone(),
            (None, Mode::Pubsub) => format!("loadgen-pubsub-{}", unix_nanos() / 1_000_000_000),
            (None, _) => "loadgen".to_string(),
        }
    }
}

// ------------------------------------------------------------------ bodies

/// Marks a body that carries a send timestamp.
const BODY_MAGIC: &[u8; 8] = b"lqldgen1";
/// Magic plus the send time in nanoseconds since the Unix epoch.
const BODY_HEADER: usize = 16;

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes the timestamp header into the first 16 bytes of `body` (nothing
/// if it is shorter).
fn stamp_body(body: &mut [u8], sent_ns: u64) {
    if body.len() >= BODY_HEADER {
        body[..8].copy_from_slice(BODY_MAGIC);
        body[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// The send time in a body written by [`stamp_body`].
fn body_sent_ns(body: &[u8]) -> Option<u64> {
    if body.len() < BODY_HEADER || &body[..8] != BODY_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(body[8..16].try_into().ok()?))
}

/// Pseudo-random filler (xorshift), so bodies do not compress.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

// -------------------------------------------------------------- histograms

/// Latencies in microseconds, 1 µs to 1 hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct LatencySummary {
    count: u64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        })
    }

    fn line(summary: &Option<Self>) -> String {
        match summary {
            None => "-".to_string(),
            Some(s) => format!(
                "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
                s.p50_ms,
                s.p99_ms,
                s.p999_ms,
                s.max_ms,
                thousands(s.count)
            ),
        }
    }
}

// ------------------------------------------------------------------- state

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_commands: AtomicU64,
    consumed: AtomicU64,
    redelivered: AtomicU64,
    /// Nanoseconds after the start when the last message arrived.
    last_message_ns: AtomicU64,
    /// Messages left to claim when --count is given.
    to_claim: AtomicU64,
    publishing_done: AtomicBool,
}

impl Counters {
    /// Counts a received message unless `limit` messages were counted
    /// already; returns whether it was counted.
    fn take_message(&self, limit: Option<u64>) -> bool {
        let limit = limit.unwrap_or(u64::MAX);
        self.consumed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Claims up to `want` messages of the --count budget.
    fn claim(&self, want: u64) -> u64 {
        self.to_claim
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left - left.min(want))
            })
            .map(|left| left.min(want))
            .unwrap_or(0)
    }
}

// --------------------------------------------------------------- publish

struct PublishResult {
    messages: u64,
    commands: u64,
}

async fn publish_connection(
    index: usize,
    address: SocketAddr,
    args: Arc<Args>,
    topic: Arc<String>,
    counters: Arc<Counters>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    (start, start_unix_ns): (Instant, u64),
) -> Result<PublishResult> {
    let identify = Identify {
        client_id: format!("loadgen-pub-{index}"),
        ..Identify::default()
    }
    .with_compression(args.compression);
    let connection = Connection::connect_identified(address, &identify).await?;
    let ack_counters = counters.clone();
    let mut publisher = Publisher::start(connection, args.depth, move |ack| {
        record(&mut latencies.lock().unwrap(), ack.latency);
        ack_counters
            .published
            .fetch_add(u64::from(ack.messages), Ordering::Relaxed);
        ack_counters
            .publish_commands
            .fetch_add(1, Ordering::Relaxed);
    });
    let deadline = args.publish_duration().map(|d| start + d);
    let batch = args.batch as u64;
    // With --rate, each connection sends one command per `interval`.
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(batch as f64 * args.connections as f64 / rate));
    let mut bodies = filler(args.size * args.batch, index as u64 + 1);
    let mut sent_commands: u32 = 0;
    let mut last_wake = start;
    loop {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let messages = if args.count.is_some() {
            counters.claim(batch)
        } else {
            batch
        };
        if messages == 0 {
            break;
        }
        // With --rate, latencies count from when the command was due, or
        // from when our own timer woke if that was later: falling behind
        // because the server is slow counts, timer granularity (1 ms in
        // tokio) does not.
        let mut sent_ns = unix_nanos();
        if let Some(interval) = interval {
            let due = start + interval * sent_commands;
            if deadline.is_some_and(|deadline| due >= deadline) {
                break;
            }
            if Instant::now() < due {
                tokio::time::sleep_until(due.into()).await;
                last_wake = Instant::now();
            }
            let origin = due.max(last_wake);
            publisher.measure_next_from(origin);
            sent_ns = start_unix_ns + (origin - start).as_nanos() as u64;
        }
        let bodies = &mut bodies[..args.size * messages as usize];
        for body in bodies.chunks_mut(args.size) {
            stamp_body(body, sent_ns);
        }
        if args.batch == 1 {
            publisher.publish(&topic, bodies).await?;
        } else {
            publisher.mpub(&topic, bodies.chunks(args.size)).await?;
        }
        sent_commands = sent_commands.wrapping_add(1);
    }
    let totals = publisher.finish().await?;
    Ok(PublishResult {
        messages: totals.messages,
        commands: totals.commands,
    })
}

// --------------------------------------------------------------- consume

async fn consume_connection(
    index: usize,
    address: SocketAddr,
    args: Arc<Args>,
    topic: Arc<String>,
    counters: Arc<Counters>,
    stop: (watch::Receiver<bool>, Arc<watch::Sender<bool>>),
    start: Instant,
) -> Result<Histogram<u64>> {
    let (stop, stop_tx) = stop;
    // In consume mode, --count is exact: later messages are requeued.
    let limit = args.count.filter(|_| args.mode == Mode::Consume);
    let identify = Identify {
        client_id: format!("loadgen-sub-{index}"),
        ..Identify::default()
    }
    .with_compression(args.compression);
    let connection = Connection::connect_identified(address, &identify).await?;
    let mut end_to_end = new_histogram();
    nsq::consume(
        connection,
        &topic,
        &args.channel,
        args.rdy,
        stop,
        |message| {
            let now = unix_nanos();
            if !counters.take_message(limit) {
                // Past --count: give it back and stop.
                stop_tx.send_replace(true);
                return Disposition::Requeue(Duration::ZERO);
            }
            if limit.is_some_and(|limit| counters.consumed.load(Ordering::Relaxed) >= limit) {
                stop_tx.send_replace(true);
            }
            if let Some(sent) = body_sent_ns(&message.body) {
                record(
                    &mut end_to_end,
                    Duration::from_nanos(now.saturating_sub(sent)),
                );
            }
            if message.attempts > 1 {
                counters.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            counters
                .last_message_ns
                .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            Disposition::Finish
        },
    )
    .await?;
    Ok(end_to_end)
}

/// Creates the channel (SUB, then CLS) so that it keeps every message
/// published from now on, even before the consumers subscribe.
async fn create_channel(address: SocketAddr, topic: &str, channel: &str) -> Result<()> {
    let mut connection = Connection::connect_identified(address, &Identify::default()).await?;
    connection.sub(topic, channel).await?;
    nsq::command::cls(connection.writer.buf());
    let reply = connection.request().await.context("CLS")?;
    if reply.as_ref() != nsq::CLOSE_WAIT {
        bail!("expected CLOSE_WAIT after CLS");
    }
    Ok(())
}

// ---------------------------------------------------------------- report

#[derive(Debug, Serialize)]
struct PublishReport {
    messages: u64,
    commands: u64,
    seconds: f64,
    msgs_per_sec: f64,
    /// Body bytes (10^6) per second.
    mb_per_sec: f64,
    /// From writing a PUB/MPUB to its OK.
    ack_latency: Option<LatencySummary>,
}

#[derive(Debug, Serialize)]
struct ConsumeReport {
    messages: u64,
    redelivered: u64,
    /// Start until the last message arrived.
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    /// From the publisher stamping the body to the consumer receiving it
    /// (only bodies with the loadgen timestamp header).
    end_to_end_latency: Option<LatencySummary>,
    /// Published but not received before the consumers stopped (pubsub).
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    address: String,
    topic: String,
    channel: String,
    connections: usize,
    consumers: usize,
    batch: usize,
    depth: u32,
    size: usize,
    rate: Option<f64>,
    publish: Option<PublishReport>,
    consume: Option<ConsumeReport>,
}

fn per_sec(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn print_summary(report: &Report) {
    eprintln!(
        "loadgen {} {} topic={} connections={} batch={} depth={} size={} B{}",
        report
            .mode
            .to_possible_value()
            .expect("no skipped modes")
            .get_name(),
        report.address,
        report.topic,
        report.connections,
        report.batch,
        report.depth,
        report.size,
        report
            .rate
            .map(|r| format!(" rate={r} msg/s"))
            .unwrap_or_default()
    );
    if let Some(p) = &report.publish {
        eprintln!(
            "  published {} msgs in {} commands, {:.2} s: {} msg/s, {:.1} MB/s",
            thousands(p.messages),
            thousands(p.commands),
            p.seconds,
            thousands(p.msgs_per_sec as u64),
            p.mb_per_sec
        );
        eprintln!("  ack latency: {}", LatencySummary::line(&p.ack_latency));
    }
    if let Some(c) = &report.consume {
        eprintln!(
            "  consumed {} msgs ({} redelivered) in {:.2} s: {} msg/s, {:.1} MB/s{}",
            thousands(c.messages),
            thousands(c.redelivered),
            c.seconds,
            thousands(c.msgs_per_sec as u64),
            c.mb_per_sec,
            c.missing
                .map(|m| format!(", {} missing", thousands(m)))
                .unwrap_or_default()
        );
        eprintln!(
            "  end-to-end latency: {}",
            LatencySummary::line(&c.end_to_end_latency)
        );
    }
}

// ------------------------------------------------------------------ main

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.validate()?;
    let address = tokio::net::lookup_host(&args.address)
        .await
        .with_context(|| format!("resolving {}", args.address))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.address))?;
    let topic = Arc::new(args.topic());
    let args = Arc::new(args);
    let publishing = args.mode != Mode::Consume;
    let consuming = args.mode != Mode::Publish;
    let consumers = match args.mode {
        Mode::Pubsub => args.consumers.unwrap_or(args.connections),
        Mode::Consume => args.connections,
        Mode::Publish => 0,
    };

    if args.mode == Mode::Pubsub {
        create_channel(address, &topic, &args.channel).await?;
    }

    let counters = Arc::new(Counters::default());
    counters
        .to_claim
        .store(args.count.unwrap_or(u64::MAX), Ordering::Relaxed);
    let ack_latencies = Arc::new(Mutex::new(new_histogram()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let start = Instant::now();
    let start_unix_ns = unix_nanos();

    let mut consumer_tasks = Vec::new();
    for index in 0..consumers {
        consumer_tasks.push(tokio::spawn(consume_connection(
            index,
            address,
            args.clone(),
            topic.clone(),
            counters.clone(),
            (stop_rx.clone(), stop_tx.clone()),
            start,
        )));
    }
    let mut publisher_tasks = Vec::new();
    if publishing {
        for index in 0..args.connections {
            publisher_tasks.push(tokio::spawn(publish_connection(
                index,
                address,
                args.clone(),
                topic.clone(),
                counters.clone(),
                ack_latencies.clone(),
                (start, start_unix_ns),
            )));
        }
    }

    // Progress once per second; decides when the consumers stop.
    let monitor = {
        let counters = counters.clone();
        let args = args.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            let mut last_print = Instant::now();
            let (mut last_pub, mut last_sub) = (0, 0);
            let mut last_seen = (0u64, Instant::now());
            let idle = Duration::from_secs_f64(args.idle_timeout);
            let consume_deadline = args.duration.map(Duration::from_secs_f64);
            loop {
                ticker.tick().await;
                let published = counters.published.load(Ordering::Relaxed);
                let consumed = counters.consumed.load(Ordering::Relaxed);
                if consumed != last_seen.0 {
                    last_seen = (consumed, Instant::now());
                }
                if !args.quiet && last_print.elapsed() >= Duration::from_secs(1) {
                    let secs = last_print.elapsed().as_secs_f64();
                    let mut line = format!("[{:>4.0}s]", start.elapsed().as_secs_f64());
                    if publishing {
                        let rate = per_sec(published - last_pub, secs);
                        line += &format!(
                            " pub {:>9} msg/s {:>7.1} MB/s total {:>11}",
                            thousands(rate as u64),
                            rate * args.size as f64 / 1e6,
                            thousands(published)
                        );
                    }
                    if consuming {
                        let rate = per_sec(consumed - last_sub, secs);
                        if publishing {
                            line += " |";
                        }
                        line += &format!(
                            " sub {:>9} msg/s total {:>11}",
                            thousands(rate as u64),
                            thousands(consumed)
                        );
                    }
                    eprintln!("{line}");
                    last_print = Instant::now();
                    (last_pub, last_sub) = (published, consumed);
                }
                if !consuming {
                    if counters.publishing_done.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                let stop = match args.mode {
                    Mode::Consume => {
                        args.count.is_some_and(|count| consumed >= count)
                            || consume_deadline.is_some_and(|d| start.elapsed() >= d)
                            || last_seen.1.elapsed() >= idle
                    }
                    _ => {
                        counters.publishing_done.load(Ordering::Relaxed)
                            && (consumed >= published || last_seen.1.elapsed() >= idle)
                    }
                };
                if stop {
                    let _ = stop_tx.send(true);
                    return;
                }
            }
        })
    };

    let mut publish_result = PublishResult {
        messages: 0,
        commands: 0,
    };
    let mut first_error = None;
    for task in publisher_tasks {
        match task.await.context("publisher task")? {
            Ok(result) => {
                publish_result.messages += result.messages;
                publish_result.commands += result.commands;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    counters.publishing_done.store(true, Ordering::Relaxed);
    if let Some(error) = first_error {
        return Err(error.context("publishing"));
    }

    let mut end_to_end = new_histogram();
    for task in consumer_tasks {
        let histogram = task.await.context("consumer task")??;
        end_to_end.add(&histogram).context("merging histograms")?;
    }
    monitor.abort();

    let acked = counters.published.load(Ordering::Relaxed);
    let publish = publishing.then(|| PublishReport {
        messages: acked,
        commands: publish_result.commands,
        seconds: publish_seconds,
        msgs_per_sec: per_sec(acked, publish_seconds),
        mb_per_sec: per_sec(acked, publish_seconds) * args.size as f64 / 1e6,
        ack_latency: LatencySummary::of(&ack_latencies.lock().unwrap()),
    });
    let consume = consuming.then(|| {
        let messages = counters.consumed.load(Ordering::Relaxed);
        let seconds = counters.last_message_ns.load(Ordering::Relaxed) as f64 / 1e9;
        ConsumeReport {
            messages,
            redelivered: counters.redelivered.load(Ordering::Relaxed),
            seconds,
            msgs_per_sec: per_sec(messages, seconds),
            mb_per_sec: per_sec(messages, seconds) * args.size as f64 / 1e6,
            end_to_end_latency: LatencySummary::of(&end_to_end),
            missing: publishing.then(|| acked.saturating_sub(messages)),
        }
    });
    let report = Report {
        mode: args.mode,
        address: args.address.clone(),
        topic: topic.to_string(),
        channel: args.channel.clone(),
        connections: args.connections,
        consumers,
        batch: args.batch,
        depth: args.depth,
        size: args.size,
        rate: args.rate,
        publish,
        consume,
    };
    print_summary(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::try_parse_from(std::iter::once("loadgen").chain(line.split_whitespace())).unwrap()
    }

    #[test]
    fn body_timestamps_round_trip() {
        let mut body = filler(200, 7);
        assert_eq!(body_sent_ns(&body), None);
        stamp_body(&mut body, 1_764_084_612_123_456_789);
        assert_eq!(body_sent_ns(&body), Some(1_764_084_612_123_456_789));
        assert_eq!(&body[..8], BODY_MAGIC);
        assert_eq!(body.len(), 200);

        let mut short = vec![0u8; BODY_HEADER - 1];
        stamp_body(&mut short, 5);
        assert_eq!(short, vec![0u8; BODY_HEADER - 1]);
        assert_eq!(body_sent_ns(&short), None);

        let mut exact = vec![0u8; BODY_HEADER];
        stamp_body(&mut exact, 0);
        assert_eq!(body_sent_ns(&exact), Some(0));
    }

    #[test]
    fn filler_differs_per_seed() {
        assert_ne!(filler(64, 1), filler(64, 2));
        assert_eq!(filler(64, 1), filler(64, 1));
        assert_eq!(filler(0, 1).len(), 0);
    }

    #[test]
    fn summarises_histograms() {
        assert_eq!(LatencySummary::of(&new_histogram()), None);
        let mut histogram = new_histogram();
        for us in 1..=1000u64 {
            record(&mut histogram, Duration::from_micros(us));
        }
        record(&mut histogram, Duration::from_secs(2));
        record(&mut histogram, Duration::from_nanos(10)); // rounds up to 1 µs
        let summary = LatencySummary::of(&histogram).unwrap();
        assert_eq!(summary.count, 1002);
        assert!((summary.p50_ms - 0.500).abs() < 0.002, "{summary:?}");
        assert!((summary.p99_ms - 0.990).abs() < 0.002, "{summary:?}");
        assert!((summary.p999_ms - 1.000).abs() < 0.002, "{summary:?}");
        assert!((summary.max_ms - 2000.0).abs() < 2.0, "{summary:?}");
        // Beyond the highest trackable value: clamped, not lost.
        record(&mut histogram, Duration::from_secs(100_000));
        assert_eq!(histogram.len(), 1003);
    }

    #[test]
    fn claims_the_count_budget() {
        let counters = Counters::default();
        counters.to_claim.store(450, Ordering::Relaxed);
        assert_eq!(counters.claim(200), 200);
        assert_eq!(counters.claim(200), 200);
        assert_eq!(counters.claim(200), 50);
        assert_eq!(counters.claim(200), 0);

        assert!(counters.take_message(Some(2)));
        assert!(counters.take_message(Some(2)));
        assert!(!counters.take_message(Some(2)));
        assert!(counters.take_message(None));
        assert_eq!(counters.consumed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn validates_arguments() {
        args("publish").validate().unwrap();
        args("pubsub -c 4 -b 200 -d 4 --rate 5000")
            .validate()
            .unwrap();
        args("consume --count 10").validate().unwrap();
        for bad in [
            "publish -c 0",
            "pubsub --consumers 0",
            "publish -b 0",
            "publish -d 0",
            "publish -s 0",
            "pubsub -s 15",
            "publish -b 30000 -s 200",
            "publish --duration 0",
            "publish --duration=-1",
            "publish --count 0",
            "publish --rate 0",
            "consume --rate 10",
            "consume --rdy 0",
            "consume --idle-timeout 0",
        ] {
            assert!(args(bad).validate().is_err(), "{bad} should be refused");
        }
        assert!(Args::try_parse_from(["loadgen", "fly"]).is_err());
    }

    #[test]
    fn defaults_to_ten_seconds() {
        assert_eq!(
            args("publish").publish_duration(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(args("publish --count 5").publish_duration(), None);
        assert_eq!(
            args("publish --count 5 --duration 2.5").publish_duration(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(args("publish").topic(), "loadgen");
        assert!(args("pubsub").topic().starts_with("loadgen-pubsub-"));
        assert_eq!(args("pubsub --topic t").topic(), "t");
    }
}

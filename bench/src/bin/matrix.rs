//! The benchmark matrix behind `bench/run`: for each server (ledgerq with
//! fsync before OK, ledgerq with `--unsafe-no-fsync`, or any NSQ server given
//! by address) runs `loadgen` cells and samples the server from /proc
//! around each one, then writes `<results>/<UTC time>-<host>.md`, `.json` and
//! SVG charts of throughput against connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ledgerq_bench::group::Group;
use ledgerq_bench::server::{self, ServerCommand, Stop};
use ledgerq_bench::util::{self, thousands, UtcTime};
use serde::Serialize;
use serde_json::Value;

#[path = "matrix/report.rs"]
mod report;
#[path = "matrix/targets.rs"]
mod targets;
use report::{draw_chart, markdown, opt};
use targets::REPLICATED;

#[derive(Debug, Parser)]
#[command(
    name = "matrix",
    about = "Throughput, drain and latency matrix against ledgerq (fsync, no fsync) or any NSQ server"
)]
struct Args {
    /// ledgerq modes to run: fsync (the default server), nofsync
    /// (`--unsafe-no-fsync`), replicated (a three-member replica group on
    /// this machine, cells against its leader); none with `--modes ''`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fsync,nofsync,replicated"
    )]
    modes: Vec<String>,

    /// Also run the matrix against this NSQ TCP address (nsqd, another broker).
    #[arg(long)]
    target: Option<String>,

    /// Name of the --target server in the report.
    #[arg(long, default_value = "target")]
    target_name: String,

    /// Pid of the --target server, for CPU, RSS and disk figures from /proc.
    #[arg(long)]
    target_pid: Option<u32>,

    /// The ledgerq binary [default: $CARGO_TARGET_DIR/release/ledgerq].
    #[arg(long)]
    ledgerq: Option<PathBuf>,

    /// The loadgen binary [default: next to this one].
    #[arg(long)]
    loadgen: Option<PathBuf>,

    /// Seconds per throughput and latency cell.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,

    /// Connection counts of the throughput cells.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,16,64")]
    connections: Vec<usize>,

    /// Messages per MPUB in the MPUB cells.
    #[arg(long, default_value_t = 200)]
    mpub: usize,

    /// Body size of the main throughput cells.
    #[arg(long, default_value_t = 200)]
    size: usize,

    /// Body size of the large-message cells.
    #[arg(long, default_value_t = 4096)]
    large_size: usize,

    /// Connection counts of the large-message cells, comma-separated ('' for none).
    #[arg(long, default_value = "4,16", value_parser = parse_list)]
    large_connections: List,

    /// Publish commands in flight per connection in the throughput cells.
    #[arg(long, default_value_t = 1)]
    depth: u32,

    /// Compressions of the compression cells (publishing at 4 connections
    /// with PUB and MPUB, as the plain cells), '' for none.
    #[arg(long, value_delimiter = ',', default_value = "snappy,deflate")]
    compression: Vec<String>,

    /// Backlog published with MPUB, then drained (0 skips the drain).
    #[arg(long, default_value_t = 1_000_000)]
    drain_messages: u64,

    /// Consuming connections of the drain.
    #[arg(long, default_value_t = 4)]
    drain_consumers: usize,

    /// Fixed publish rate (msg/s) of the end-to-end latency cell (0 skips it).
    #[arg(long, default_value_t = 10000.0)]
    rate: f64,

    /// Replica group: how many times to SIGKILL the leader (restarting it
    /// after each) and time how long publishing stops.
    #[arg(long, default_value_t = 5)]
    failovers: usize,

    /// Where the .md, .json and .svg files go.
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,

    /// Where the temporary data dirs go [default: $TMPDIR or /tmp].
    #[arg(long)]
    work_dir: Option<PathBuf>,

    /// The command line shown in the report.
    #[arg(long, default_value = "bench/run")]
    command: String,
}

/// Publishing (and consuming) connections of the latency cell.
const LATENCY_CONNECTIONS: u32 = 4;
/// PUBs in flight per connection in the latency cell: enough that the
/// client never caps the rate (4 x 64 in flight at 10,000 msg/s binds only
/// past 25 ms of latency), so the cell measures the server, open-loop.
const LATENCY_DEPTH: u32 = 64;

/// A comma-separated list of numbers, possibly empty.
#[derive(Debug, Clone)]
struct List(Vec<usize>);

fn parse_list(text: &str) -> Result<List, std::num::ParseIntError> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| item.trim().parse())
        .collect::<Result<_, _>>()
        .map(List)
}

/// CPU time and disk writes of a process, from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
struct ProcSample {
    /// utime + stime, seconds.
    cpu_seconds: f64,
    /// `write_bytes` of /proc/<pid>/io: bytes the process caused to be sent
    /// to the storage layer.
    write_bytes: u64,
}

impl ProcSample {
    fn of(pid: u32) -> Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .with_context(|| format!("reading /proc/{pid}/io"))?;
        Ok(ProcSample {
            cpu_seconds: cpu_seconds(&stat)?,
            write_bytes: io_field(&io, "write_bytes:")?,
        })
    }
}

/// utime + stime of a /proc/<pid>/stat line, in seconds.
fn cpu_seconds(stat: &str) -> Result<f64> {
    // The command name (field 2) may hold spaces; count from the last ')'.
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("stat field {i}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(14)? + ticks(15)?) as f64 / hz)
}

fn io_field(io: &str, name: &str) -> Result<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{name} missing from /proc/<pid>/io"))
}

/// What the server did during one cell.
#[derive(Debug, Clone, Copy, Serialize)]
struct ServerFigures {
    cpu_seconds: f64,
    write_bytes: u64,
    /// Largest VmRSS sampled every 100 ms during the cell.
    peak_rss_mib: f64,
    /// VmHWM at the end of the cell (peak since the server started).
    hwm_mib: f64,
}

#[derive(Debug, Serialize)]
struct Cell {
    /// publish, latency, drain-publish, drain.
    kind: String,
    connections: usize,
    batch: usize,
    size: usize,
    /// Messages published (or consumed, for drain) per second.
    msgs_per_sec: f64,
    /// Body bytes published in the cell.
    payload_bytes: u64,
    server: Option<ServerFigures>,
    /// Disk bytes written per payload byte (publish cells).
    write_per_payload_byte: Option<f64>,
    loadgen: Value,
}

#[derive(Debug, Serialize)]
struct ModeReport {
    name: String,
    server: String,
    cells: Vec<Cell>,
    /// VmHWM at the end of the mode's run.
    peak_hwm_mib: Option<f64>,
    /// Server CPU seconds over the whole mode.
    total_cpu_seconds: Option<f64>,
    /// Replica group only: from the leader's SIGKILL to the first publish
    /// a surviving member acknowledged, each round.
    failovers_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    host: String,
    cpu: String,
    cpus: usize,
    kernel: String,
    command: String,
    duration_secs: f64,
    depth: u32,
    rate: f64,
    modes: Vec<ModeReport>,
}

struct Runner<'a> {
    args: &'a Args,
    loadgen: PathBuf,
    address: String,
    pid: Option<u32>,
}

impl Runner<'_> {
    /// Runs loadgen with `loadgen_args` and measures the server around it.
    async fn cell(
        &self,
        kind: &str,
        (connections, batch, size): (usize, usize, usize),
        loadgen_args: &[String],
    ) -> Result<Cell> {
        eprintln!("-- {kind}: loadgen {}", loadgen_args.join(" "));
        let before = self.pid.and_then(|pid| ProcSample::of(pid).ok());
        let peak_rss = Arc::new(AtomicU64::new(0));
        let sampler = self.pid.map(|pid| {
            let peak_rss = peak_rss.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    if let Ok(memory) = server::Memory::of(pid) {
                        peak_rss.fetch_max(memory.rss_kib, Ordering::Relaxed);
                    }
                }
            })
        });
        let output = tokio::process::Command::new(&self.loadgen)
            .args(loadgen_args)
            .args(["--address", &self.address, "--json", "--quiet"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("running {}", self.loadgen.display()))?;
        if let Some(sampler) = sampler {
            sampler.abort();
        }
        if !output.status.success() {
            bail!("loadgen failed ({})", output.status);
        }
        let loadgen: Value =
            serde_json::from_slice(&output.stdout).context("parsing loadgen's JSON")?;
        let server = match (self.pid, before) {
            (Some(pid), Some(before)) => {
                let after = ProcSample::of(pid)?;
                let memory = server::Memory::of(pid)?;
                let sampled = peak_rss.load(Ordering::Relaxed).max(memory.rss_kib);
                Some(ServerFigures {
                    cpu_seconds: after.cpu_seconds - before.cpu_seconds,
                    write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
                    peak_rss_mib: sampled as f64 / 1024.0,
                    hwm_mib: memory.hwm_mib(),
                })
            }
            _ => None,
        };
        let published = loadgen["publish"]["messages"].as_u64().unwrap_or(0);
        let payload_bytes = published * size as u64;
        let section = if kind == "drain" {
            "consume"
        } else {
            "publish"
        };
        let msgs_per_sec = loadgen[section]["msgs_per_sec"].as_f64().unwrap_or(0.0);
        let write_per_payload_byte = server
            .filter(|_| payload_bytes > 0)
            .map(|s| s.write_bytes as f64 / payload_bytes as f64);
        eprintln!(
            "   {} msg/s{}",
            thousands(msgs_per_sec as u64),
            server
                .map(|s| format!(
                    ", server {:.2} CPU s, {:.1} MiB written, peak RSS {:.1} MiB",
                    s.cpu_seconds,
                    util::mib(s.write_bytes),
                    s.peak_rss_mib
                ))
                .unwrap_or_default()
        );
        Ok(Cell {
            kind: kind.to_string(),
            connections,
            batch,
            size,
            msgs_per_sec,
            payload_bytes,
            server,
            write_per_payload_byte,
            loadgen,
        })
    }

    /// Publishing with `compression` at 4 connections, PUB and MPUB, as the
    /// plain publish cells: throughput and server CPU against plain.
    async fn compression_cells(&self, compression: &str) -> Result<Vec<Cell>> {
        let a = self.args;
        let mut cells = Vec::new();
        for batch in [1, a.mpub] {
            let args: Vec<String> = [
                "publish",
                "--topic",
                &format!("mx-{compression}-b{batch}"),
                "-c",
                "4",
                "-b",
                &batch.to_string(),
                "-d",
                &a.depth.to_string(),
                "-s",
                &a.size.to_string(),
                "--duration",
                &a.duration.to_string(),
                "--compression",
                compression,
            ]
            .map(String::from)
            .to_vec();
            let kind = format!("publish-{compression}");
            cells.push(self.cell(&kind, (4, batch, a.size), &args).await?);
        }
        Ok(cells)
    }

    async fn run_all(&self) -> Result<Vec<Cell>> {
        let a = self.args;
        let s = |v: &dyn ToString| v.to_string();
        let mut cells = Vec::new();
        // Latency first, while the server has no flushes or compactions to do.
        if a.rate > 0.0 {
            let args: Vec<String> = vec![
                s(&"pubsub"),
                s(&"--topic"),
                s(&"mx-latency"),
                s(&"-c"),
                s(&LATENCY_CONNECTIONS),
                s(&"-d"),
                s(&LATENCY_DEPTH),
                s(&"-s"),
                s(&a.size),
                s(&"--rate"),
                s(&a.rate),
                s(&"--duration"),
                s(&a.duration),
                s(&"--idle-timeout"),
                s(&2),
            ];
            cells.push(
                self.cell("latency", (LATENCY_CONNECTIONS as usize, 1, a.size), &args)
                    .await?,
            );
        }
        let mut grid: Vec<(usize, usize)> = Vec::new();
        for &c in &a.connections {
            grid.push((c, a.size));
        }
        for &c in &a.large_connections.0 {
            grid.push((c, a.large_size));
        }
        for (c, size) in grid {
            for batch in [1, a.mpub] {
                let args: Vec<String> = vec![
                    s(&"publish"),
                    s(&"--topic"),
                    format!("mx-c{c}-b{batch}-s{size}"),
                    s(&"-c"),
                    s(&c),
                    s(&"-b"),
                    s(&batch),
                    s(&"-d"),
                    s(&a.depth),
                    s(&"-s"),
                    s(&size),
                    s(&"--duration"),
                    s(&a.duration),
                ];
                cells.push(self.cell("publish", (c, batch, size), &args).await?);
            }
        }
        for compression in a.compression.iter().filter(|c| !c.is_empty()) {
            cells.extend(self.compression_cells(compression).await?);
        }
        if a.drain_messages > 0 {
            // Create the channel first (a short consume on an empty topic), so
            // that it keeps the whole backlog on any NSQ server.
            let topic = format!("mx-drain-{}", std::process::id());
            let status = tokio::process::Command::new(&self.loadgen)
                .args(["consume", "--topic", &topic, "--channel", "drain"])
                .args(["--address", &self.address, "--idle-timeout", "0.5"])
                .args(["--quiet"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await?;
            if !status.success() {
                bail!("creating the drain channel failed ({status})");
            }
            let n = a.drain_messages.to_string();
            let publish: Vec<String> = vec![
                s(&"publish"),
                s(&"--topic"),
                topic.clone(),
                s(&"-c"),
                s(&4),
                s(&"-b"),
                s(&a.mpub),
                s(&"-d"),
                s(&4),
                s(&"-s"),
                s(&a.size),
                s(&"--count"),
                n.clone(),
            ];
            cells.push(
                self.cell("drain-publish", (4, a.mpub, a.size), &publish)
                    .await?,
            );
            let consume: Vec<String> = vec![
                s(&"consume"),
                s(&"--topic"),
                topic,
                s(&"--channel"),
                s(&"drain"),
                s(&"-c"),
                s(&a.drain_consumers),
                s(&"--rdy"),
                s(&200),
                s(&"--count"),
                n,
                s(&"--idle-timeout"),
                s(&10),
            ];
            cells.push(
                self.cell("drain", (a.drain_consumers, 1, a.size), &consume)
                    .await?,
            );
        }
        Ok(cells)
    }
}

async fn start_ledgerq(
    binary: &Path,
    work: &Path,
    name: &str,
    extra: &[&str],
) -> Result<(server::ServerProcess, SocketAddr, String)> {
    let command = ServerCommand {
        binary: binary.to_path_buf(),
        data_path: work.join(format!("{name}-data")),
        tcp_address: "127.0.0.1:0".parse()?,
        http_address: None,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        log_path: work.join(format!("{name}.log")),
    };
    let mut process = command.spawn().await?;
    let (address, _) = process.wait_listening(Duration::from_secs(30)).await?;
    server::wait_accepting(address, Instant::now(), Duration::from_secs(30)).await?;
    Ok((process, address, command.display()))
}

/// The `replicated` mode: the cells against the leader of a three-member
/// group (fsync on every member), all on this machine.
async fn run_group(args: &Args, ledgerq: &Path, loadgen: &Path, work: &Path) -> Result<ModeReport> {
    let mut group = Group::start(ledgerq, work, &[]).await?;
    eprintln!("== replicated: leader {}", group.display);
    let leader = &group.members[group.leader];
    let runner = Runner {
        args,
        loadgen: loadgen.to_path_buf(),
        address: group.tcp[group.leader].to_string(),
        pid: Some(leader.pid),
    };
    let pids: Vec<u32> = group.members.iter().map(|m| m.pid).collect();
    let cpu = |pids: &[u32]| -> Result<f64> {
        pids.iter()
            .map(|pid| ProcSample::of(*pid).map(|s| s.cpu_seconds))
            .sum()
    };
    let start = cpu(&pids)?;
    let cells = runner.run_all().await?;
    let total_cpu_seconds = cpu(&pids)? - start;
    let hwm: f64 = group
        .members
        .iter()
        .map(|m| m.memory().map(|m| m.hwm_mib()))
        .sum::<Result<f64>>()?;
    let server = format!("3 members on this machine; leader: {}", group.display);
    let mut failovers_ms = Vec::new();
    for round in 1..=args.failovers {
        let failover = group.time_failover("failover").await?;
        eprintln!(
            "== replicated: failover {round}: publishing resumed {failover:?} after the \
             leader's SIGKILL"
        );
        failovers_ms.push(failover.as_secs_f64() * 1000.0);
    }
    group.stop().await?;
    Ok(ModeReport {
        name: REPLICATED.to_string(),
        server,
        cells,
        peak_hwm_mib: Some(hwm),
        total_cpu_seconds: Some(total_cpu_seconds),
        failovers_ms,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let ledgerq = args.ledgerq.clone().unwrap_or_else(server::default_binary);
    let loadgen = match &args.loadgen {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no executable dir")?
            .join("loadgen"),
    };
    let stamp = UtcTime::now().compact();
    let host = util::hostname();
    let work_root = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = work_root.join(format!("ledgerq-matrix-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    let mut modes = Vec::new();
    for mode in args.modes.iter().filter(|m| !m.is_empty()) {
        if mode == "replicated" {
            modes.push(run_group(&args, &ledgerq, &loadgen, &work).await?);
            continue;
        }
        let extra: &[&str] = match mode.as_str() {
            "fsync" => &[],
            "nofsync" => &["--unsafe-no-fsync"],
            other => bail!("unknown mode {other:?} (fsync, nofsync, replicated)"),
        };
        let (process, address, display) = start_ledgerq(&ledgerq, &work, mode, extra).await?;
        eprintln!("== {mode}: {display}");
        let runner = Runner {
            args: &args,
            loadgen: loadgen.clone(),
            address: address.to_string(),
            pid: Some(process.pid),
        };
        let start = ProcSample::of(process.pid)?;
        let cells = runner.run_all().await?;
        let end = ProcSample::of(process.pid)?;
        let hwm = process.memory()?.hwm_mib();
        process.stop(Stop::Term, Duration::from_secs(60)).await?;
        modes.push(ModeReport {
            name: format!("ledgerq {mode}"),
            server: display,
            cells,
            peak_hwm_mib: Some(hwm),
            total_cpu_seconds: Some(end.cpu_seconds - start.cpu_seconds),
            failovers_ms: Vec::new(),
        });
    }
    if let Some(target) = &args.target {
        eprintln!("== {}: {target}", args.target_name);
        let runner = Runner {
            args: &args,
            loadgen: loadgen.clone(),
            address: target.clone(),
            pid: args.target_pid,
        };
        let start = args.target_pid.and_then(|pid| ProcSample::of(pid).ok());
        let cells = runner.run_all().await?;
        let end = args.target_pid.and_then(|pid| ProcSample::of(pid).ok());
        modes.push(ModeReport {
            name: args.target_name.clone(),
            server: format!(
                "{target}{}",
                opt(args.target_pid, |p| format!(" (pid {p})"))
            ),
            cells,
            peak_hwm_mib: args
                .target_pid
                .and_then(|pid| server::Memory::of(pid).ok())
                .map(|m| m.hwm_mib()),
            total_cpu_seconds: start.zip(end).map(|(s, e)| e.cpu_seconds - s.cpu_seconds),
            failovers_ms: Vec::new(),
        });
    }
    let _ = std::fs::remove_dir_all(&work);

    let (cpu, cpus) = util::cpu_info();
    let report = Report {
        date: stamp.clone(),
        host: host.clone(),
        cpu,
        cpus,
        kernel: util::kernel_release(),
        command: args.command.clone(),
        duration_secs: args.duration,
        depth: args.depth,
        rate: args.rate,
        modes,
    };
    std::fs::create_dir_all(&args.results_dir)?;
    let base = format!("{stamp}-{host}");
    let mut sizes = vec![args.size];
    if !args.large_connections.0.is_empty() && args.large_size != args.size {
        sizes.push(args.large_size);
    }
    let mut charts = Vec::new();
    for size in sizes {
        let file = format!("{base}-throughput-{size}B.svg");
        if draw_chart(&report, size, &args.results_dir.join(&file))? {
            charts.push((size, file));
        }
    }
    let md = markdown(&report, &charts);
    std::fs::write(args.results_dir.join(format!("{base}.md")), &md)?;
    std::fs::write(
        args.results_dir.join(format!("{base}.json")),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    print!("{md}");
    eprintln!(
        "wrote {}/{base}.md, .json and {} chart(s)",
        args.results_dir.display(),
        charts.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_seconds_from_stat() {
        let stat = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    8 0 100 1000000 500 18446744073709551615";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((cpu_seconds(stat).unwrap() - 300.0 / hz).abs() < 1e-9);
    }

    #[test]
    fn reads_own_proc_sample() {
        let sample = ProcSample::of(std::process::id()).unwrap();
        assert!(sample.cpu_seconds >= 0.0);
        assert_eq!(
            io_field("rchar: 5\nwrite_bytes: 42\n", "write_bytes:").unwrap(),
            42
        );
    }
}

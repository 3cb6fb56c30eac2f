//! The backlog benchmark's report: every figure (serialized to JSON) and
//! its markdown page.

use ledgerq_bench::server::Stop;
use ledgerq_bench::util::thousands;
use serde::Serialize;

use super::monitor::{PhaseMemory, TimelinePoint};

#[derive(Debug, Serialize)]
pub(super) struct Environment {
    pub(super) host: String,
    pub(super) cpu_model: String,
    pub(super) cpus: usize,
    pub(super) memory_total_mib: Option<u64>,
    pub(super) kernel: String,
    pub(super) work_dir: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Settings {
    pub(super) messages: u64,
    pub(super) size: usize,
    pub(super) batch: usize,
    pub(super) publishers: usize,
    pub(super) window: u32,
    pub(super) consumers: usize,
    pub(super) rdy: u64,
    pub(super) stop: Stop,
    pub(super) topic: String,
    pub(super) channel: String,
    pub(super) heartbeat_interval_ms: Option<i64>,
    pub(super) drop_caches: bool,
    pub(super) server_command: String,
}

#[derive(Debug, Serialize)]
pub(super) struct PublishFigures {
    pub(super) secs: f64,
    pub(super) msgs_per_sec: f64,
    pub(super) payload_mib: f64,
    pub(super) mpub_commands: u64,
    pub(super) mpub_ack_ms_p50: f64,
    pub(super) mpub_ack_ms_p99: f64,
    pub(super) mpub_ack_ms_max: f64,
    /// VmRSS with the whole backlog queued, after `settle_secs`.
    pub(super) rss_at_rest_mib: f64,
    pub(super) data_dir_mib: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct StopFigures {
    pub(super) how: Stop,
    pub(super) exit: String,
    pub(super) secs: f64,
    pub(super) data_dir_mib: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct RestartFigures {
    /// Spawn until a TCP connect succeeded.
    pub(super) connect_secs: f64,
    /// Spawn until magic + NOP + IDENTIFY got its reply: accepting connections.
    pub(super) accepting_secs: f64,
    /// Spawn until the `TCP: listening` log line was read.
    pub(super) listening_log_secs: f64,
    pub(super) rss_idle_mib: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct DrainFigures {
    pub(super) secs: f64,
    pub(super) msgs_per_sec: f64,
    pub(super) first_message_secs: Option<f64>,
    pub(super) received: u64,
    pub(super) distinct: u64,
    pub(super) duplicates: u64,
    pub(super) redelivered: u64,
    pub(super) missing: u64,
    pub(super) corrupt: u64,
    pub(super) complete: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Verdict {
    pub(super) rss_target_mb: u64,
    pub(super) rss_target_mib: f64,
    pub(super) max_rss_mib: f64,
    pub(super) max_hwm_mib: f64,
    pub(super) rss_ok: bool,
    pub(super) restart_target_secs: f64,
    pub(super) restart_ok: bool,
    pub(super) drain_ok: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) benchmark: &'static str,
    pub(super) started: String,
    pub(super) command: String,
    pub(super) environment: Environment,
    pub(super) settings: Settings,
    pub(super) cold_start: RestartFigures,
    pub(super) publish: PublishFigures,
    pub(super) stop: StopFigures,
    pub(super) restart: RestartFigures,
    pub(super) drain: DrainFigures,
    pub(super) final_stop: StopFigures,
    pub(super) memory: Vec<PhaseMemory>,
    pub(super) verdict: Verdict,
    pub(super) rss_timeline: Vec<TimelinePoint>,
}

pub(super) fn pass(ok: bool) -> &'static str {
    if ok {
        "**pass**"
    } else {
        "**FAIL**"
    }
}

pub(super) fn render_markdown(r: &Report) -> String {
    let s = &r.settings;
    let e = &r.environment;
    let v = &r.verdict;
    let mut md = String::new();
    let mut line = |text: String| {
        md.push_str(&text);
        md.push('\n');
    };
    line(format!("# Backlog benchmark, {} on {}", r.started, e.host));
    line(String::new());
    line(format!(
        "{} messages of {} B ({:.0} MiB of payload) published into one topic with one channel \
         and no consumer connected, then the server is stopped ({}), restarted on the same \
         data directory{} and the backlog drained.",
        thousands(s.messages),
        s.size,
        r.publish.payload_mib,
        match s.stop {
            Stop::Term => "SIGTERM",
            Stop::Kill => "SIGKILL",
        },
        if s.drop_caches {
            " with the page cache dropped first"
        } else {
            " (its files still in the page cache)"
        }
    ));
    line(String::new());
    line(format!("- command: `{}`", r.command));
    line(format!("- server: `{}`", s.server_command));
    line(format!(
        "- machine: {} CPUs ({}), {} MiB RAM, Linux {}",
        e.cpus,
        e.cpu_model,
        e.memory_total_mib
            .map_or("?".to_string(), |m| m.to_string()),
        e.kernel
    ));
    line(format!(
        "- load: {} publishing connections x {} MPUBs of {} in flight; {} consumers with RDY {}, FIN each",
        s.publishers, s.window, s.batch, s.consumers, s.rdy
    ));
    line(String::new());
    line("| Figure | Value | Target |".to_string());
    line("|---|---|---|".to_string());
    line(format!(
        "| Server RSS, whole run (max sampled VmRSS / VmHWM) | {:.1} / {:.1} MiB | < {} MB = {:.1} MiB {} |",
        v.max_rss_mib,
        v.max_hwm_mib,
        v.rss_target_mb,
        v.rss_target_mib,
        pass(v.rss_ok)
    ));
    line(format!(
        "| Restart: spawn until accepting (connect + magic + NOP + IDENTIFY answered) | {:.3} s | < {} s {} |",
        r.restart.accepting_secs,
        v.restart_target_secs,
        pass(v.restart_ok)
    ));
    line(format!(
        "| Drain: distinct messages back / published | {} / {} | all {} |",
        thousands(r.drain.distinct),
        thousands(s.messages),
        pass(v.drain_ok)
    ));
    line(format!(
        "| Publish | {:.1} s, {} msg/s | |",
        r.publish.secs,
        thousands(r.publish.msgs_per_sec as u64)
    ));
    line(format!(
        "| MPUB ack latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms | |",
        r.publish.mpub_ack_ms_p50, r.publish.mpub_ack_ms_p99, r.publish.mpub_ack_ms_max
    ));
    line(format!(
        "| Server RSS with the backlog at rest | {:.1} MiB | |",
        r.publish.rss_at_rest_mib
    ));
    line(format!(
        "| Data directory after publish / after stop | {:.1} / {:.1} MiB | |",
        r.publish.data_dir_mib, r.stop.data_dir_mib
    ));
    line(format!(
        "| Stop ({:?}) until exit | {:.3} s ({}) | |",
        r.stop.how, r.stop.secs, r.stop.exit
    ));
    line(format!(
        "| Restart: first TCP connect / `TCP: listening` logged | {:.3} / {:.3} s | |",
        r.restart.connect_secs, r.restart.listening_log_secs
    ));
    line(format!(
        "| Cold start on an empty data dir: accepting | {:.3} s | |",
        r.cold_start.accepting_secs
    ));
    line(format!(
        "| Server RSS after restart, idle | {:.1} MiB | |",
        r.restart.rss_idle_mib
    ));
    line(format!(
        "| Drain | {:.1} s, {} msg/s (first message after {}) | |",
        r.drain.secs,
        thousands(r.drain.msgs_per_sec as u64),
        r.drain
            .first_message_secs
            .map_or("-".to_string(), |s| format!("{s:.3} s"))
    ));
    line(format!(
        "| Drain: received / duplicates / redelivered / corrupt | {} / {} / {} / {} | |",
        thousands(r.drain.received),
        r.drain.duplicates,
        r.drain.redelivered,
        r.drain.corrupt
    ));
    line(format!(
        "| Final SIGTERM until exit | {:.3} s ({}) | |",
        r.final_stop.secs, r.final_stop.exit
    ));
    line(String::new());
    line(
        "Server memory per phase (VmRSS sampled every 100 ms; VmHWM is the process's peak so far):"
            .to_string(),
    );
    line(String::new());
    line("| Phase | Samples | Max VmRSS | Last VmRSS | VmHWM |".to_string());
    line("|---|---|---|---|---|".to_string());
    for p in &r.memory {
        line(format!(
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            p.phase, p.samples, p.max_rss_mib, p.last_rss_mib, p.hwm_mib
        ));
    }
    md
}

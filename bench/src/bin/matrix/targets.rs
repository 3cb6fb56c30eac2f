//! The goals of the benchmark issues, read off a report: the single-node
//! goals for 2-core machines, and the replica group's against single node
//! in the same run. Each shows what was measured and whether it met its goal.

use super::report::opt;
use super::{thousands, ModeReport, Report};

/// A goal of the benchmark issue: what is measured, the goal, and whether
/// more (or less) is better.
struct Target {
    what: &'static str,
    goal: f64,
    unit: &'static str,
    higher_is_better: bool,
    measured: Option<f64>,
}

impl Target {
    fn verdict(&self) -> String {
        let Some(measured) = self.measured else {
            return "not measured".to_string();
        };
        let met = if self.higher_is_better {
            measured >= self.goal
        } else {
            measured <= self.goal
        };
        let off = (measured - self.goal) / self.goal * 100.0;
        if met {
            format!("met ({off:+.0}%)")
        } else {
            format!("**missed by {:.0}%**", off.abs())
        }
    }
}

/// The name of the replica-group mode in reports.
pub(super) const REPLICATED: &str = "ledgerq replicated (3 members)";

/// A publish cell's msg/s (200-byte bodies).
fn publish_rate(mode: &ModeReport, connections: usize, batch: usize) -> Option<f64> {
    mode.cells
        .iter()
        .find(|c| {
            c.kind == "publish" && c.connections == connections && c.batch == batch && c.size == 200
        })
        .map(|c| c.msgs_per_sec)
}

/// The redundancy-mode goals: the group against single node (fsync) of
/// the same run, on the same machine.
fn replicated_targets(report: &Report, mode: &ModeReport) -> Vec<Target> {
    let single = report.modes.iter().find(|m| m.name == "ledgerq fsync");
    let single_mpub = single.and_then(|m| publish_rate(m, 2, 200));
    let group_mpub = publish_rate(mode, 2, 200);
    let latency = mode
        .cells
        .iter()
        .find(|c| c.kind == "latency")
        .filter(|_| report.rate == 10_000.0);
    vec![
        Target {
            what: "MPUB-200 x 200 B, 2 connections: group / single node",
            goal: 0.5,
            unit: "x",
            higher_is_better: true,
            measured: group_mpub.zip(single_mpub).map(|(g, s)| g / s),
        },
        Target {
            what: "publishing resumes after the leader's SIGKILL (slowest round)",
            goal: 3000.0,
            unit: "ms",
            higher_is_better: false,
            measured: mode.failovers_ms.iter().copied().reduce(f64::max),
        },
        Target {
            what: "publish ack p99 at 10,000 msg/s",
            goal: 10.0,
            unit: "ms",
            higher_is_better: false,
            measured: latency.and_then(|c| c.loadgen["publish"]["ack_latency"]["p99_ms"].as_f64()),
        },
    ]
}

/// The goals for 2-core machines, read off one mode's cells.
fn targets(report: &Report, mode: &ModeReport) -> Vec<Target> {
    if mode.name == REPLICATED {
        return replicated_targets(report, mode);
    }
    let publish = |connections: usize, batch: usize| publish_rate(mode, connections, batch);
    let cell = |kind: &str| mode.cells.iter().find(|c| c.kind == kind);
    let latency = cell("latency").filter(|_| report.rate == 10_000.0);
    vec![
        Target {
            what: "MPUB-200 x 200 B, 2 connections",
            goal: 400_000.0,
            unit: "msg/s",
            higher_is_better: true,
            measured: publish(2, 200),
        },
        Target {
            what: "PUB x 200 B, 64 connections",
            goal: 60_000.0,
            unit: "msg/s",
            higher_is_better: true,
            measured: publish(64, 1),
        },
        Target {
            what: "publish ack p99 at 10,000 msg/s",
            goal: 5.0,
            unit: "ms",
            higher_is_better: false,
            measured: latency.and_then(|c| c.loadgen["publish"]["ack_latency"]["p99_ms"].as_f64()),
        },
        Target {
            what: "consume (drain of the backlog)",
            goal: 420_000.0,
            unit: "msg/s",
            higher_is_better: true,
            measured: cell("drain").map(|c| c.msgs_per_sec),
        },
        Target {
            what: "disk bytes per payload byte, consumers keeping up (latency cell)",
            goal: 1.5,
            unit: "B/B",
            higher_is_better: false,
            measured: latency.and_then(|c| c.write_per_payload_byte),
        },
    ]
}

pub(super) fn push_targets(md: &mut String, report: &Report, mode: &ModeReport) {
    md.push_str("\n| Goal (2 cores) | Target | Measured | |\n|---|---|---|---|\n");
    for t in targets(report, mode) {
        let shown = |v: f64| {
            if t.unit == "msg/s" {
                thousands(v as u64)
            } else {
                format!("{v:.2}")
            }
        };
        let bound = if t.higher_is_better { ">=" } else { "<=" };
        md.push_str(&format!(
            "| {} | {bound} {} {} | {} | {} |\n",
            t.what,
            shown(t.goal),
            t.unit,
            opt(t.measured, |v| format!("{} {}", shown(v), t.unit)),
            t.verdict()
        ));
    }
}

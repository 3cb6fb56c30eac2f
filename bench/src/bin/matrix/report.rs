//! The matrix's report: the markdown page (goals, then one table per mode)
//! and the SVG charts of throughput against connections.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::targets::push_targets;
use super::{thousands, Report, LATENCY_CONNECTIONS, LATENCY_DEPTH};

fn batch_name(batch: usize) -> String {
    if batch == 1 {
        "PUB".to_string()
    } else {
        format!("MPUB-{batch}")
    }
}

pub(super) fn opt<T>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map(f).unwrap_or_else(|| "-".to_string())
}

fn latency(v: &Value, section: &str, name: &str) -> String {
    let l = &v[section][name];
    match (l["p50_ms"].as_f64(), l["p99_ms"].as_f64()) {
        (Some(p50), Some(p99)) => format!("{p50:.2} / {p99:.2}"),
        _ => "-".to_string(),
    }
}

pub(super) fn markdown(report: &Report, charts: &[(usize, String)]) -> String {
    let mut md = String::new();
    let push = |md: &mut String, line: String| {
        md.push_str(&line);
        md.push('\n');
    };
    push(
        &mut md,
        format!("# Benchmark matrix, {} on {}\n", report.date, report.host),
    );
    push(&mut md, format!("- command: `{}`", report.command));
    push(
        &mut md,
        format!(
            "- machine: {} CPUs ({}), Linux {}; loadgen on the same machine",
            report.cpus, report.cpu, report.kernel
        ),
    );
    push(
        &mut md,
        format!(
            "- throughput cells: {} s each, {} command(s) in flight per connection; ack latency per command, \
             end-to-end per message; latency cell: {} msg/s, {LATENCY_CONNECTIONS} + \
             {LATENCY_CONNECTIONS} connections, PUB, up to {LATENCY_DEPTH} in flight per connection",
            report.duration_secs, report.depth, report.rate
        ),
    );
    push(
        &mut md,
        "- server figures from /proc/<pid>: CPU = utime + stime during the cell, peak RSS = largest VmRSS \
         sampled every 100 ms, disk/payload = `write_bytes` of /proc/<pid>/io during the cell per body byte published"
            .to_string(),
    );
    for mode in &report.modes {
        push(&mut md, format!("\n- **{}**: `{}`", mode.name, mode.server));
    }
    for (size, file) in charts {
        push(
            &mut md,
            format!("\n![throughput against connections, {size} B bodies]({file})"),
        );
    }
    for mode in &report.modes {
        push(&mut md, format!("\n## {}\n", mode.name));
        push(
            &mut md,
            format!(
                "Peak RSS (VmHWM) {}, server CPU {} over the whole run.",
                opt(mode.peak_hwm_mib, |v| format!("{v:.1} MiB")),
                opt(mode.total_cpu_seconds, |v| format!("{v:.1} s"))
            ),
        );
        if !mode.failovers_ms.is_empty() {
            let rounds: Vec<String> = mode
                .failovers_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect();
            push(
                &mut md,
                format!(
                    "\nFailovers (leader SIGKILLed, then restarted; kill to the first `OK` \
                     through a survivor), ms: {}.",
                    rounds.join(", ")
                ),
            );
        }
        push_targets(&mut md, report, mode);
        md.push('\n');
        push(
            &mut md,
            "| Cell | Conns | Command | Size | msg/s | MB/s | ack p50 / p99 ms | e2e p50 / p99 ms | CPU s | peak RSS MiB | disk / payload |"
                .to_string(),
        );
        push(
            &mut md,
            "|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
        );
        for c in &mode.cells {
            let section = if c.kind == "drain" {
                "consume"
            } else {
                "publish"
            };
            let mb = c.loadgen[section]["mb_per_sec"].as_f64().unwrap_or(0.0);
            let command = if c.kind == "drain" {
                "FIN, RDY 200".to_string()
            } else {
                batch_name(c.batch)
            };
            push(
                &mut md,
                format!(
                    "| {} | {} | {} | {} B | {} | {:.1} | {} | {} | {} | {} | {} |",
                    c.kind,
                    c.connections,
                    command,
                    c.size,
                    thousands(c.msgs_per_sec as u64),
                    mb,
                    latency(&c.loadgen, "publish", "ack_latency"),
                    latency(&c.loadgen, "consume", "end_to_end_latency"),
                    opt(c.server, |s| format!("{:.2}", s.cpu_seconds)),
                    opt(c.server, |s| format!("{:.1}", s.peak_rss_mib)),
                    opt(c.write_per_payload_byte, |v| format!("{v:.2}")),
                ),
            );
        }
    }
    md
}

/// One line per mode x command: msg/s against connections, log-log.
pub(super) fn draw_chart(report: &Report, size: usize, path: &Path) -> Result<bool> {
    use plotters::prelude::*;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for mode in &report.modes {
        let mut batches: Vec<usize> = mode
            .cells
            .iter()
            .filter(|c| c.kind == "publish" && c.size == size)
            .map(|c| c.batch)
            .collect();
        batches.sort_unstable();
        batches.dedup();
        for batch in batches {
            let mut points: Vec<(f64, f64)> = mode
                .cells
                .iter()
                .filter(|c| c.kind == "publish" && c.size == size && c.batch == batch)
                .map(|c| (c.connections as f64, c.msgs_per_sec.max(1.0)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push((format!("{} {}", mode.name, batch_name(batch)), points));
        }
    }
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if all.is_empty() {
        return Ok(false);
    }
    let mut xs: Vec<f64> = all.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let max_x = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.3;
    let max_y = all.iter().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let min_y = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) / 2.0;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Publish throughput, {size} B bodies"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.8..max_x).log_scale().with_key_points(xs),
            (min_y..max_y).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("messages/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| thousands(*y as u64))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

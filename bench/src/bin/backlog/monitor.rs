//! The server's memory during the run: VmRSS and VmHWM sampled every
//! 100 ms, per phase, and a once-a-second timeline for the report.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgerq_bench::server::Memory;
use serde::Serialize;

use super::round1;

/// Memory of the server during one phase of the run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct PhaseMemory {
    pub(super) phase: &'static str,
    pub(super) samples: u64,
    /// Largest VmRSS sampled during the phase (every 100 ms).
    pub(super) max_rss_mib: f64,
    /// VmRSS at the phase's last sample.
    pub(super) last_rss_mib: f64,
    /// VmHWM at the phase's last sample: the peak since the process started,
    /// so it also covers spikes between samples.
    pub(super) hwm_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct TimelinePoint {
    pub(super) secs: f64,
    pub(super) phase: &'static str,
    pub(super) rss_mib: f64,
}

pub(super) struct MonitorState {
    pub(super) pid: Option<u32>,
    pub(super) started: Instant,
    pub(super) phases: Vec<PhaseMemory>,
    pub(super) timeline: Vec<TimelinePoint>,
    pub(super) last: Memory,
    pub(super) last_timeline: Option<Instant>,
}

/// Samples the server's VmRSS/VmHWM every 100 ms, per phase.
#[derive(Clone)]
pub(super) struct Monitor {
    pub(super) state: Arc<Mutex<MonitorState>>,
}

impl Monitor {
    pub(super) fn start() -> Monitor {
        let monitor = Monitor {
            state: Arc::new(Mutex::new(MonitorState {
                pid: None,
                started: Instant::now(),
                phases: Vec::new(),
                timeline: Vec::new(),
                last: Memory::default(),
                last_timeline: None,
            })),
        };
        let sampler = monitor.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                sampler.sample();
            }
        });
        monitor
    }

    /// Follows `pid` (a new server process) from now on.
    pub(super) fn watch(&self, pid: Option<u32>) {
        self.state.lock().unwrap().pid = pid;
    }

    /// Starts a new phase (and takes a first sample of it).
    pub(super) fn phase(&self, phase: &'static str) {
        self.state.lock().unwrap().phases.push(PhaseMemory {
            phase,
            samples: 0,
            max_rss_mib: 0.0,
            last_rss_mib: 0.0,
            hwm_mib: 0.0,
        });
        self.sample();
    }

    pub(super) fn sample(&self) {
        let mut state = self.state.lock().unwrap();
        let Some(pid) = state.pid else { return };
        let Ok(memory) = Memory::of(pid) else { return };
        state.last = memory;
        let now = Instant::now();
        let secs = now.duration_since(state.started).as_secs_f64();
        let Some(phase) = state.phases.last_mut() else {
            return;
        };
        phase.samples += 1;
        phase.max_rss_mib = phase.max_rss_mib.max(memory.rss_mib());
        phase.last_rss_mib = memory.rss_mib();
        phase.hwm_mib = memory.hwm_mib();
        let name = phase.phase;
        let due = state
            .last_timeline
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            state.last_timeline = Some(now);
            state.timeline.push(TimelinePoint {
                secs: (secs * 10.0).round() / 10.0,
                phase: name,
                rss_mib: round1(memory.rss_mib()),
            });
        }
    }

    pub(super) fn last(&self) -> Memory {
        self.state.lock().unwrap().last
    }

    pub(super) fn current(&self, phase: &'static str) -> Option<PhaseMemory> {
        self.state
            .lock()
            .unwrap()
            .phases
            .iter()
            .rev()
            .find(|p| p.phase == phase)
            .cloned()
    }

    pub(super) fn phases(&self) -> Vec<PhaseMemory> {
        self.state.lock().unwrap().phases.clone()
    }

    pub(super) fn timeline(&self) -> Vec<TimelinePoint> {
        self.state.lock().unwrap().timeline.clone()
    }
}

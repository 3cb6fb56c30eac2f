//! Prometheus metrics (`GET /metrics`): what nsqd's `/stats` shows, per topic
//! and channel, and what nsqd cannot show — how durability is being paid
//! for: the WAL fsync latency, group-commit batch sizes, bytes written,
//! storage size on disk and the index of the last applied command.
//!
//! Two sources feed one [`Registry`] (prefix `ledgerq_`):
//! - [`CommitMetrics`] is the storage crate's [`CommitObserver`]: the
//!   committer thread records every durable batch into histograms;
//! - [`BrokerCollector`] reads a [`Broker::stats`] snapshot and the
//!   committer's counters at scrape time, so topics and channels that come
//!   and go need no bookkeeping.
//!
//! Rendered in the Prometheus text format 0.0.4, or OpenMetrics when the
//! scraper asks for it (`Accept: application/openmetrics-text`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ledgerq_storage::{BatchReport, CommitObserver};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::broker::stats::{StatsFilter, TopicSnapshot};
use crate::broker::Broker;
use crate::replication::view::replicated_view;
use crate::replication::Replication;

/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histograms of the group committer's durable batches.
#[derive(Debug)]
pub struct CommitMetrics {
    fsync_seconds: Histogram,
    write_seconds: Histogram,
    batch_commands: Histogram,
    batch_bytes: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics {
            // 25 µs .. ~0.8 s
            fsync_seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 16)),
            write_seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 16)),
            // 1 .. 8192 (the committer's batch cap)
            batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            // 256 B .. 64 MiB
            batch_bytes: Histogram::new(exponential_buckets(256.0, 4.0, 10)),
        }
    }
}

impl CommitObserver for CommitMetrics {
    fn batch_committed(&self, report: &BatchReport) {
        self.write_seconds
            .observe(report.timings.write.as_secs_f64());
        self.batch_commands.observe(report.commands as f64);
        self.batch_bytes.observe(report.size_bytes as f64);
    }

    fn log_synced(&self, duration: std::time::Duration) {
        self.fsync_seconds.observe(duration.as_secs_f64());
    }
}

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(
        broker: Arc<Broker>,
        commit: &CommitMetrics,
        replication: Option<Arc<Replication>>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("ledgerq");
        // Histogram names carry their unit without a `# UNIT` line, which
        // some OpenMetrics parsers refuse on histograms.
        registry.register(
            "wal_fsync_duration_seconds",
            "Time of each group-commit WAL fsync (0 with --unsafe-no-fsync)",
            commit.fsync_seconds.clone(),
        );
        registry.register(
            "wal_write_duration_seconds",
            "Time of each group-commit WAL write, before its fsync",
            commit.write_seconds.clone(),
        );
        registry.register(
            "commit_batch_commands",
            "Commands per durable group-commit batch",
            commit.batch_commands.clone(),
        );
        registry.register(
            "commit_batch_size_bytes",
            "Size of each durable group-commit write batch",
            commit.batch_bytes.clone(),
        );
        registry.register_collector(Box::new(BrokerCollector { broker }));
        if let Some(replication) = replication {
            registry.register_collector(Box::new(RaftCollector { replication }));
        }
        Metrics { registry }
    }

    /// The text exposition: OpenMetrics if `openmetrics`, else Prometheus 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        encoded.expect("writing to a String cannot fail");
        out
    }
}

/// Reads the broker's state at scrape time.
struct BrokerCollector {
    broker: Arc<Broker>,
}

impl std::fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCollector").finish_non_exhaustive()
    }
}

/// One metric family, each sample with its own labels.
struct Family<'a, V> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    samples: Vec<(Vec<(&'static str, &'a str)>, V)>,
}

impl<'a, V> Family<'a, V> {
    fn new(name: &'a str, help: &'a str) -> Self {
        Family {
            name,
            help,
            unit: None,
            samples: Vec::new(),
        }
    }

    fn with_unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    fn push(&mut self, labels: Vec<(&'static str, &'a str)>, value: V) {
        self.samples.push((labels, value));
    }
}

/// Writes `family` as `metric_type`, each value made a metric by `metric`.
fn encode_family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    family: Family<'_, u64>,
    metric_type: MetricType,
    metric: impl Fn(u64) -> M,
) -> std::fmt::Result {
    let mut descriptor =
        encoder.encode_descriptor(family.name, family.help, family.unit.as_ref(), metric_type)?;
    for (labels, value) in &family.samples {
        metric(*value).encode(descriptor.encode_family(labels)?)?;
    }
    Ok(())
}

fn encode_gauges(encoder: &mut DescriptorEncoder, family: Family<'_, u64>) -> std::fmt::Result {
    encode_family(encoder, family, MetricType::Gauge, ConstGauge::new)
}

fn encode_counters(encoder: &mut DescriptorEncoder, family: Family<'_, u64>) -> std::fmt::Result {
    encode_family(encoder, family, MetricType::Counter, ConstCounter::new)
}

fn topic_families<'a>(topics: &'a [TopicSnapshot]) -> (Vec<Family<'a, u64>>, Vec<Family<'a, u64>>) {
    let mut depth = Family::new(
        "topic_depth",
        "Messages waiting in the topic, not yet handed to a channel",
    );
    let mut paused = Family::new("topic_paused", "1 while the topic is paused");
    let mut messages = Family::new(
        "topic_messages",
        "Messages published to the topic since start",
    );
    let mut bytes = Family::new(
        "topic_message",
        "Body bytes published to the topic since start",
    )
    .with_unit(Unit::Bytes);
    let mut channel_depth = Family::new(
        "channel_depth",
        "Messages ready for delivery (not in flight, not deferred)",
    );
    let mut in_flight = Family::new(
        "channel_in_flight",
        "Messages delivered and awaiting FIN, REQ or timeout",
    );
    let mut deferred = Family::new(
        "channel_deferred",
        "Messages waiting for a REQ or DPUB delay",
    );
    let mut clients = Family::new("channel_clients", "Connections subscribed to the channel");
    let mut channel_paused = Family::new("channel_paused", "1 while the channel is paused");
    let mut received = Family::new(
        "channel_messages",
        "Messages the channel received from its topic since start",
    );
    let mut requeues = Family::new("channel_requeues", "Explicit REQs since start");
    let mut timeouts = Family::new("channel_timeouts", "In-flight timeouts since start");
    for topic in topics {
        let t = topic.name.as_str();
        depth.push(vec![("topic", t)], topic.depth);
        paused.push(vec![("topic", t)], u64::from(topic.paused));
        messages.push(vec![("topic", t)], topic.message_count);
        bytes.push(vec![("topic", t)], topic.message_bytes);
        for channel in &topic.channels {
            let labels = vec![("topic", t), ("channel", channel.name.as_str())];
            channel_depth.push(labels.clone(), channel.depth);
            in_flight.push(labels.clone(), channel.in_flight_count);
            deferred.push(labels.clone(), channel.deferred_count);
            clients.push(labels.clone(), channel.client_count);
            channel_paused.push(labels.clone(), u64::from(channel.paused));
            received.push(labels.clone(), channel.message_count);
            requeues.push(labels.clone(), channel.requeue_count);
            timeouts.push(labels, channel.timeout_count);
        }
    }
    let gauges = vec![
        depth,
        paused,
        channel_depth,
        in_flight,
        deferred,
        clients,
        channel_paused,
    ];
    let counters = vec![messages, bytes, received, requeues, timeouts];
    (gauges, counters)
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = self.broker.stats(&StatsFilter::default());
        let topics = snapshot.topics.unwrap_or_default();
        let (gauges, counters) = topic_families(&topics);
        for family in gauges {
            encode_gauges(&mut encoder, family)?;
        }
        for family in counters {
            encode_counters(&mut encoder, family)?;
        }

        let stats = self.broker.log().stats();
        let healthy = u64::from(self.broker.log().failure().is_none());
        let node_gauges = [
            (
                "clients",
                "Connected TCP clients",
                None,
                self.broker.client_count() as u64,
            ),
            (
                "storage_size",
                "Bytes the data directory holds (SST files and WAL)",
                Some(Unit::Bytes),
                self.broker.store().disk_size_bytes(),
            ),
            (
                "last_applied_index",
                "Index of the last command applied to the state machine",
                None,
                stats.applied_index.load(Ordering::Relaxed),
            ),
            (
                "dedup_keys",
                "Idempotency keys in the publish de-duplication window (all topics)",
                None,
                stats.dedup_keys.load(Ordering::Relaxed),
            ),
            (
                "storage_healthy",
                "1 while writes succeed; 0 after a failed write or fsync (writes are refused)",
                None,
                healthy,
            ),
        ];
        for (name, help, unit, value) in node_gauges {
            let mut family = Family::new(name, help);
            family.unit = unit;
            family.push(Vec::new(), value);
            encode_gauges(&mut encoder, family)?;
        }
        let node_counters = [
            (
                "commit_batches",
                "Durable group-commit batches",
                None,
                &stats.batches_total,
            ),
            (
                "commit_commands",
                "Commands made durable",
                None,
                &stats.commands_total,
            ),
            (
                "wal_written",
                "Bytes written to the WAL by group commit",
                Some(Unit::Bytes),
                &stats.bytes_total,
            ),
        ];
        for (name, help, unit, value) in node_counters {
            let mut family = Family::new(name, help);
            family.unit = unit;
            family.push(Vec::new(), value.load(Ordering::Relaxed));
            encode_counters(&mut encoder, family)?;
        }
        let mut evictions = Family::new(
            "dedup_evictions",
            "Idempotency keys evicted from the de-duplication window, by reason",
        );
        let expired = stats.dedup_evicted_expired.load(Ordering::Relaxed);
        let over_limit = stats.dedup_evicted_over_limit.load(Ordering::Relaxed);
        evictions.push(vec![("reason", "expired")], expired);
        evictions.push(vec![("reason", "over_limit")], over_limit);
        encode_counters(&mut encoder, evictions)?;
        Ok(())
    }
}

/// Redundancy mode: the raft group as this node sees it, at scrape time.
struct RaftCollector {
    replication: Arc<Replication>,
}

impl std::fmt::Debug for RaftCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCollector").finish_non_exhaustive()
    }
}

impl Collector for RaftCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let view = replicated_view(&self.replication);
        let gauges = [
            ("raft_term", "The current raft term", view.term),
            (
                "raft_committed_index",
                "Highest raft index known committed (leader: held by a majority)",
                view.committed_index,
            ),
            (
                "raft_applied_index",
                "Highest raft index applied here",
                view.applied_index,
            ),
            (
                "raft_leader_id",
                "The node id of the leader this node knows (0 when none)",
                view.leader_id.unwrap_or(0),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = Family::new(name, help);
            family.push(Vec::new(), value);
            encode_gauges(&mut encoder, family)?;
        }
        let mut role = Family::new("raft_role", "1 for this node's current raft role");
        for name in ["leader", "follower", "candidate", "learner", "shutdown"] {
            role.push(vec![("role", name)], u64::from(view.role == name));
        }
        encode_gauges(&mut encoder, role)?;
        let ids: Vec<String> = view.members.iter().map(|m| m.node_id.to_string()).collect();
        let mut lag = Family::new(
            "raft_replication_lag",
            "Leader only: raft entries each member is behind the leader's log",
        );
        for (member, id) in view.members.iter().zip(&ids) {
            if let Some(behind) = member.lag {
                lag.push(vec![("node_id", id.as_str())], behind);
            }
        }
        encode_gauges(&mut encoder, lag)?;
        let counters = &self.replication.counters;
        let totals = [
            (
                "raft_elections",
                "Raft terms this node has seen begin",
                &counters.elections,
            ),
            (
                "forwarded_proposals",
                "Batches of writes this node forwarded to the leader and saw committed",
                &counters.forwarded_proposals,
            ),
        ];
        for (name, help, value) in totals {
            let mut family = Family::new(name, help);
            family.push(Vec::new(), value.load(Ordering::Relaxed));
            encode_counters(&mut encoder, family)?;
        }
        Ok(())
    }
}

//! `ledgerq stat`: nsq_stat's equivalent. Every `--status-every` it reads
//! `GET /stats?format=json` of each node that has the topic
//! (`--nsqd-http-address`, or the producers' HTTP ports from
//! `--lookupd-http-address`), sums one channel's counters over the nodes
//! and prints a row in nsq_stat's layout: rates (messages per second into
//! the channel and out of it since the previous row), depth (total, in
//! memory, on disk, in flight, deferred) and counters (requeued, timed out,
//! messages, clients). The first row comes at once, without rates. A node
//! that cannot be read ends the command with an error, as in nsq_stat.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use serde::Deserialize;

use super::discovery::{self, Port};

fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be above zero".into()),
        Err(error) => Err(format!("invalid duration {text:?}: {error}")),
    }
}

/// Flags of `ledgerq stat` (nsq_stat's).
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// NSQ topic.
    #[arg(long)]
    pub topic: String,

    /// NSQ channel.
    #[arg(long)]
    pub channel: String,

    /// nsqd HTTP address, HOST:PORT (repeatable).
    #[arg(long = "nsqd-http-address", value_name = "HOST:PORT")]
    pub nsqd_http_addresses: Vec<String>,

    /// lookupd HTTP address, HOST:PORT (repeatable).
    #[arg(long = "lookupd-http-address", value_name = "HOST:PORT")]
    pub lookupd_http_addresses: Vec<String>,

    /// Time between rows.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub status_every: Duration,

    /// Rows to print, then exit (0: forever).
    #[arg(long, default_value_t = 0)]
    pub count_of: u64,
}

/// One channel's counters, summed over the nodes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ChannelStats {
    #[serde(default)]
    pub depth: u64,
    #[serde(default)]
    pub backend_depth: u64,
    #[serde(default)]
    pub in_flight_count: u64,
    #[serde(default)]
    pub deferred_count: u64,
    #[serde(default)]
    pub message_count: u64,
    #[serde(default)]
    pub requeue_count: u64,
    #[serde(default)]
    pub timeout_count: u64,
    #[serde(default)]
    pub client_count: u64,
}

impl ChannelStats {
    fn add(&mut self, other: &ChannelStats) {
        self.depth += other.depth;
        self.backend_depth += other.backend_depth;
        self.in_flight_count += other.in_flight_count;
        self.deferred_count += other.deferred_count;
        self.message_count += other.message_count;
        self.requeue_count += other.requeue_count;
        self.timeout_count += other.timeout_count;
        self.client_count += other.client_count;
    }
}

#[derive(Deserialize)]
struct ChannelDoc {
    channel_name: String,
    #[serde(flatten)]
    stats: ChannelStats,
}

#[derive(Deserialize)]
struct TopicDoc {
    topic_name: String,
    #[serde(default)]
    channels: Vec<ChannelDoc>,
}

#[derive(Deserialize)]
struct StatsDoc {
    topics: Option<Vec<TopicDoc>>,
}

/// The channel's counters in one node's `/stats?format=json` (nsqd's V1
/// shape or the legacy `{"data":{...}}` one); `None` if it lacks them.
pub fn parse_channel_stats(
    body: &[u8],
    topic: &str,
    channel: &str,
) -> anyhow::Result<Option<ChannelStats>> {
    let mut json: serde_json::Value = serde_json::from_slice(body)?;
    if let Some(data) = json.get_mut("data") {
        json = data.take();
    }
    let doc: StatsDoc = serde_json::from_value(json)?;
    Ok(doc
        .topics
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.topic_name == topic)
        .flat_map(|t| t.channels)
        .find(|c| c.channel_name == channel)
        .map(|c| c.stats))
}

/// nsq_stat's two header lines.
pub fn header() -> String {
    format!(
        "{}+{}+{}\n{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}\n",
        "------rate------",
        "----------------depth----------------",
        "--------------metadata---------------",
        "ingress",
        "egress",
        "total",
        "mem",
        "disk",
        "inflt",
        "def",
        "req",
        "t-o",
        "msgs",
        "clients"
    )
}

/// One row; rates are per second since `previous`, `-` on the first row.
pub fn row(now: &ChannelStats, previous: Option<(&ChannelStats, Duration)>) -> String {
    let (ingress, egress) = match previous {
        Some((before, elapsed)) => {
            let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
            let per_second = |delta: u64| ((delta as f64) / seconds).round() as u64;
            let left = |s: &ChannelStats| s.message_count.saturating_sub(s.depth);
            (
                per_second(now.message_count.saturating_sub(before.message_count)).to_string(),
                per_second(left(now).saturating_sub(left(before))).to_string(),
            )
        }
        None => ("-".to_owned(), "-".to_owned()),
    };
    format!(
        "{ingress:>7} {egress:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}\n",
        now.depth,
        now.depth.saturating_sub(now.backend_depth),
        now.backend_depth,
        now.in_flight_count,
        now.deferred_count,
        now.requeue_count,
        now.timeout_count,
        now.message_count,
        now.client_count
    )
}

/// The channel's counters summed over its nodes now.
async fn sample(
    args: &StatArgs,
    nsqd: &[String],
    lookupd: &[String],
) -> anyhow::Result<ChannelStats> {
    let nodes = discovery::nodes(&args.topic, nsqd, lookupd, Port::Http).await?;
    let path = format!(
        "/stats?format=json&topic={}&channel={}&include_clients=false&include_mem=false",
        discovery::query_escape(&args.topic),
        discovery::query_escape(&args.channel)
    );
    let replies =
        futures::future::join_all(nodes.iter().map(|node| discovery::get(node, &path))).await;
    let mut total = ChannelStats::default();
    let mut found = false;
    for (node, reply) in nodes.iter().zip(replies) {
        let (status, body) =
            reply.with_context(|| format!("failed to get nsqd stats from {node}"))?;
        if status != 200 {
            bail!("failed to get nsqd stats from {node}: status {status}");
        }
        let stats = parse_channel_stats(&body, &args.topic, &args.channel)
            .with_context(|| format!("{node}: malformed /stats reply"))?;
        if let Some(stats) = stats {
            total.add(&stats);
            found = true;
        }
    }
    if !found {
        return Err(anyhow!(
            "failed to find channel({}) in stats metadata for topic({})",
            args.channel,
            args.topic
        ));
    }
    Ok(total)
}

/// Runs `ledgerq stat`.
pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    let nsqd = discovery::check_addresses("nsqd-http-address", &args.nsqd_http_addresses)?;
    let lookupd = discovery::check_addresses("lookupd-http-address", &args.lookupd_http_addresses)?;
    discovery::check_sources(&nsqd, "nsqd-http-address", &lookupd)?;
    let mut ticks = tokio::time::interval(args.status_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<(ChannelStats, tokio::time::Instant)> = None;
    let mut rows = 0u64;
    while args.count_of == 0 || rows < args.count_of {
        ticks.tick().await;
        let now = sample(&args, &nsqd, &lookupd).await?;
        let taken = tokio::time::Instant::now();
        let mut text = if rows.is_multiple_of(25) {
            header()
        } else {
            String::new()
        };
        let before = previous.as_ref().map(|(stats, at)| (stats, taken - *at));
        text.push_str(&row(&now, before));
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        previous = Some((now, taken));
        rows += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &[u8] = br#"{"version":"1.3.0","health":"OK","start_time":1,"topics":[
        {"topic_name":"other","channels":[{"channel_name":"c","depth":99}]},
        {"topic_name":"orders","depth":0,"channels":[
            {"channel_name":"c","depth":7,"backend_depth":5,"in_flight_count":2,
             "deferred_count":1,"message_count":20,"requeue_count":3,"timeout_count":4,
             "client_count":1,"clients":null,"paused":false}]}]}"#;

    #[test]
    fn finds_the_channel() {
        let stats = parse_channel_stats(STATS, "orders", "c").unwrap().unwrap();
        assert_eq!(stats.depth, 7);
        assert_eq!(stats.client_count, 1);
        assert_eq!(parse_channel_stats(STATS, "orders", "d").unwrap(), None);
        let unknown = br#"{"version":"1.3.0","topics":null}"#;
        assert_eq!(parse_channel_stats(unknown, "orders", "c").unwrap(), None);
        let legacy = br#"{"status_code":200,"data":{"topics":[{"topic_name":"t",
            "channels":[{"channel_name":"c","depth":1}]}]}}"#;
        assert_eq!(
            parse_channel_stats(legacy, "t", "c")
                .unwrap()
                .unwrap()
                .depth,
            1
        );
        assert!(parse_channel_stats(b"<html>", "t", "c").is_err());
    }

    #[test]
    fn rows_in_nsq_stats_layout() {
        let lines: Vec<String> = header().lines().map(str::to_owned).collect();
        assert_eq!(lines[0].len(), 16 + 1 + 37 + 1 + 37);
        assert!(lines[1].starts_with("ingress  egress |   total     mem    disk inflt   def |"));
        let now = parse_channel_stats(STATS, "orders", "c").unwrap().unwrap();
        assert_eq!(
            row(&now, None),
            "      -       - |       7       2       5     2     1 |       3       4           20       1\n"
        );
        let before = ChannelStats {
            message_count: 10,
            depth: 7,
            ..now
        };
        let text = row(&now, Some((&before, Duration::from_secs(2))));
        assert!(text.starts_with("      5       5 |"), "{text}");
    }
}

//! `ledgerq admin`: the admin API from the command line (a tonic client).
//!
//! Exit codes, for scripts: 0 done; 1 the server refused (its gRPC code and
//! message on stderr, e.g. `NOT_FOUND: TOPIC_NOT_FOUND`); 2 bad usage
//! (clap's); 3 the server could not be reached.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::pb;
use super::pb::admin_client::AdminClient;

/// Exit code: the server answered with an error.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: the server could not be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 done, 1 refused by the server, 2 bad usage, 3 unreachable.")]
pub struct AdminArgs {
    /// HOST:PORT of the node to ask: its `--grpc-address` (any member of a
    /// replica group).
    #[arg(long, global = true, default_value = "127.0.0.1:4153")]
    pub server: String,

    /// A file holding the admin token (`--grpc-admin-token-file` of the
    /// server); the LEDGERQ_ADMIN_TOKEN environment variable also works.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,

    /// TLS: the PEM CA the server's certificate must chain to (the
    /// server's `--grpc-tls-root-ca-file`); connects over TLS when set.
    #[arg(long, global = true)]
    pub tls_ca_file: Option<PathBuf>,

    /// TLS: the PEM client certificate to present (a server with
    /// `--grpc-tls-*` requires one signed by its CA).
    #[arg(long, global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS: the PEM private key of `--tls-cert`.
    #[arg(long, global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How answers are printed.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// How long to wait for an answer.
    #[arg(long, global = true, default_value = "30s", value_parser = crate::config::duration)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Topics: list, get, create, delete, pause, unpause, empty.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Channels: create, delete, pause, unpause, empty.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Depths and counters of every topic and channel.
    Stats {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// List each channel's clients (JSON output).
        #[arg(long)]
        clients: bool,
    },
    /// The replica group: status, add a member, remove one.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Whether the node's storage is healthy (exit 1 if not).
    Health,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Every topic's name.
    List,
    /// One topic and its channels.
    Get { topic: String },
    /// Create a topic (succeeds if it exists).
    Create { topic: String },
    /// Delete a topic with its channels and messages.
    Delete { topic: String },
    /// Stop handing messages to the channels.
    Pause { topic: String },
    /// Resume handing messages to the channels.
    Unpause { topic: String },
    /// Drop the messages not yet handed to the channels.
    Empty { topic: String },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel of an existing topic.
    Create { topic: String, channel: String },
    /// Delete a channel and its messages.
    Delete { topic: String, channel: String },
    /// Stop deliveries from the channel.
    Pause { topic: String, channel: String },
    /// Resume deliveries.
    Unpause { topic: String, channel: String },
    /// Drop every message of the channel.
    Empty { topic: String, channel: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Role, term, indexes and members, as this node sees them.
    Status,
    /// Add a node (started with `--node-id N` and an empty data dir).
    Add {
        #[arg(long)]
        node_id: u64,
        /// HOST:PORT of the new node's `--grpc-address`.
        #[arg(long)]
        grpc_address: String,
    },
    /// Remove a member.
    Remove {
        #[arg(long)]
        node_id: u64,
    },
}

/// Why the command failed, and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        let code = match status.code() {
            tonic::Code::Unavailable if status.message().contains("transport") => EXIT_UNREACHABLE,
            _ => EXIT_REFUSED,
        };
        Failure {
            code,
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

fn usage_failure(error: anyhow::Error) -> Failure {
    Failure {
        code: 2,
        message: format!("{error:#}"),
    }
}

type Client = AdminClient<
    tonic::service::interceptor::InterceptedService<Channel, Box<dyn TokenInterceptor>>,
>;

trait TokenInterceptor: tonic::service::Interceptor + Send + Sync {}
impl<T: tonic::service::Interceptor + Send + Sync> TokenInterceptor for T {}

impl tonic::service::Interceptor for Box<dyn TokenInterceptor> {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        (**self).call(request)
    }
}

/// The token from `--token-file` or `LEDGERQ_ADMIN_TOKEN`, if any.
fn token(args: &AdminArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.token_file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        return Ok(Some(raw.trim().to_owned()));
    }
    Ok(std::env::var("LEDGERQ_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned()))
}

async fn connect(args: &AdminArgs) -> Result<Client, Failure> {
    let token = token(args).map_err(usage_failure)?;
    let bearer = match token {
        Some(token) => Some(
            MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| usage_failure(anyhow::anyhow!("the token is not valid metadata")))?,
        ),
        None => None,
    };
    let endpoint = endpoint(args)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(args.timeout);
    let channel = endpoint.connect().await.map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("cannot reach {}: {e}", args.server),
    })?;
    let interceptor: Box<dyn TokenInterceptor> = Box::new(move |mut request: tonic::Request<()>| {
        if let Some(bearer) = &bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    });
    Ok(AdminClient::with_interceptor(channel, interceptor))
}

/// `--server` over TLS with `--tls-ca-file` (presenting `--tls-cert`),
/// in plain text otherwise.
fn endpoint(args: &AdminArgs) -> Result<Endpoint, Failure> {
    let tls = match (&args.tls_ca_file, &args.tls_cert, &args.tls_key) {
        (None, None, _) => None,
        (None, Some(_), _) => {
            let error = anyhow::anyhow!("--tls-cert needs --tls-ca-file");
            return Err(usage_failure(error));
        }
        (Some(ca), cert, key) => {
            let identity = cert.as_deref().zip(key.as_deref());
            Some(crate::grpc_tls::client_config(ca, identity).map_err(usage_failure)?)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bad_server = |e: &dyn std::fmt::Display| {
        usage_failure(anyhow::anyhow!("--server {:?}: {e}", args.server))
    };
    let endpoint =
        Endpoint::from_shared(format!("{scheme}://{}", args.server)).map_err(|e| bad_server(&e))?;
    match tls {
        Some(tls) => endpoint.tls_config(tls).map_err(|e| bad_server(&e)),
        None => Ok(endpoint),
    }
}

/// Runs the command; on failure returns the exit code and one line.
pub async fn run(args: AdminArgs) -> Result<(), Failure> {
    let mut client = connect(&args).await?;
    let output = args.output;
    match args.command {
        AdminCommand::Topic(command) => topic(&mut client, command, output).await,
        AdminCommand::Channel(command) => channel(&mut client, command).await,
        AdminCommand::Stats {
            topic,
            channel,
            clients,
        } => {
            let request = pb::GetStatsRequest {
                topic: topic.unwrap_or_default(),
                channel: channel.unwrap_or_default(),
                include_clients: clients,
            };
            let stats = client.get_stats(request).await?.into_inner();
            print(output, &stats, || stats_table(&stats.topics));
            Ok(())
        }
        AdminCommand::Cluster(command) => cluster(&mut client, command, output).await,
        AdminCommand::Health => {
            let health = client.health(pb::HealthRequest {}).await?.into_inner();
            print(output, &health, || health.status.clone());
            match health.healthy {
                true => Ok(()),
                false => Err(Failure {
                    code: EXIT_REFUSED,
                    message: health.status,
                }),
            }
        }
    }
}

async fn topic(client: &mut Client, command: TopicCommand, output: Output) -> Result<(), Failure> {
    let named = |topic: String| pb::TopicRef { topic };
    match command {
        TopicCommand::List => {
            let list = client
                .list_topics(pb::ListTopicsRequest {})
                .await?
                .into_inner();
            print(output, &list, || list.topics.join("\n"));
        }
        TopicCommand::Get { topic } => {
            let stats = client.get_topic(named(topic)).await?.into_inner();
            print(output, &stats, || stats_table(std::slice::from_ref(&stats)));
        }
        TopicCommand::Create { topic } => done(client.create_topic(named(topic)).await?),
        TopicCommand::Delete { topic } => done(client.delete_topic(named(topic)).await?),
        TopicCommand::Pause { topic } => done(client.pause_topic(named(topic)).await?),
        TopicCommand::Unpause { topic } => done(client.unpause_topic(named(topic)).await?),
        TopicCommand::Empty { topic } => done(client.empty_topic(named(topic)).await?),
    }
    Ok(())
}

async fn channel(client: &mut Client, command: ChannelCommand) -> Result<(), Failure> {
    let named = |topic: String, channel: String| pb::ChannelRef { topic, channel };
    let answer = match command {
        ChannelCommand::Create { topic, channel } => {
            client.create_channel(named(topic, channel)).await?
        }
        ChannelCommand::Delete { topic, channel } => {
            client.delete_channel(named(topic, channel)).await?
        }
        ChannelCommand::Pause { topic, channel } => {
            client.pause_channel(named(topic, channel)).await?
        }
        ChannelCommand::Unpause { topic, channel } => {
            client.unpause_channel(named(topic, channel)).await?
        }
        ChannelCommand::Empty { topic, channel } => {
            client.empty_channel(named(topic, channel)).await?
        }
    };
    done(answer);
    Ok(())
}

async fn cluster(
    client: &mut Client,
    command: ClusterCommand,
    output: Output,
) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status => {
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await?
                .into_inner();
            print(output, &status, || cluster_table(&status));
        }
        ClusterCommand::Add {
            node_id,
            grpc_address,
        } => done(
            client
                .add_member(pb::AddMemberRequest {
                    node_id,
                    grpc_address,
                })
                .await?,
        ),
        ClusterCommand::Remove { node_id } => done(
            client
                .remove_member(pb::RemoveMemberRequest { node_id })
                .await?,
        ),
    }
    Ok(())
}

/// A write's answer: nothing to print (the exit code says it).
fn done(_: tonic::Response<pb::Done>) {}

fn print<T: Serialize>(output: Output, value: &T, table: impl FnOnce() -> String) {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value).expect("answers serialize"),
        Output::Table => table(),
    };
    if !text.is_empty() {
        println!("{text}");
    }
}

/// Rows of cells as left-aligned columns, two spaces apart.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

fn stats_table(topics: &[pb::TopicStats]) -> String {
    let mut rows = vec![[
        "TOPIC",
        "CHANNEL",
        "PAUSED",
        "DEPTH",
        "IN_FLIGHT",
        "DEFERRED",
        "REQUEUED",
        "TIMED_OUT",
        "MESSAGES",
        "CLIENTS",
    ]
    .map(String::from)
    .to_vec()];
    for topic in topics {
        rows.push(vec![
            topic.name.clone(),
            "-".into(),
            topic.paused.to_string(),
            topic.depth.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            topic.message_count.to_string(),
            "-".into(),
        ]);
        for channel in &topic.channels {
            rows.push(vec![
                topic.name.clone(),
                channel.name.clone(),
                channel.paused.to_string(),
                channel.depth.to_string(),
                channel.in_flight_count.to_string(),
                channel.deferred_count.to_string(),
                channel.requeue_count.to_string(),
                channel.timeout_count.to_string(),
                channel.message_count.to_string(),
                channel.client_count.to_string(),
            ]);
        }
    }
    columns(&rows)
}

fn cluster_table(status: &pb::ClusterStatusResponse) -> String {
    let or_dash = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut text = format!(
        "mode {}  node {}  role {}  leader {}  term {}  committed {}  applied {}\ncluster {}",
        status.mode,
        status.node_id,
        status.role,
        or_dash(status.leader_id),
        status.term,
        status.committed_index,
        status.applied_index,
        if status.cluster_id.is_empty() {
            "-"
        } else {
            &status.cluster_id
        },
    );
    if !status.members.is_empty() {
        let mut rows = vec![["NODE", "VOTER", "GRPC", "TCP", "HTTP", "MATCHED", "LAG"]
            .map(String::from)
            .to_vec()];
        for m in &status.members {
            rows.push(vec![
                m.node_id.to_string(),
                m.voter.to_string(),
                m.grpc_address.clone(),
                m.tcp_address.clone(),
                m.http_address.clone(),
                or_dash(m.matched_index),
                or_dash(m.lag),
            ]);
        }
        text.push('\n');
        text.push_str(&columns(&rows));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_trimmed() {
        let rows = vec![
            vec!["A".to_string(), "LONGER".into(), "x".into()],
            vec!["abc".to_string(), "b".into(), "".into()],
        ];
        assert_eq!(columns(&rows), "A    LONGER  x\nabc  b");
    }

    #[test]
    fn transport_failures_are_unreachable_and_refusals_are_not() {
        let refused = Failure::from(Status::not_found("TOPIC_NOT_FOUND"));
        assert_eq!(refused.code, EXIT_REFUSED);
        assert_eq!(refused.message, "NotFound: TOPIC_NOT_FOUND");
        let cut = Failure::from(Status::unavailable(
            "error trying to connect: transport error",
        ));
        assert_eq!(cut.code, EXIT_UNREACHABLE);
    }
}

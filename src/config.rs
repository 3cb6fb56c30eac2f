//! Command-line flags. Where nsqd has the same setting, the flag keeps
//! nsqd's name and default, so an nsqd command line mostly works unchanged.
//! Durations take Go-style values: `250ms`, `60s`, `15m`, `1h`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ledgerq",
    version,
    about = "An NSQ-compatible message broker whose OK means fsynced"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the broker (the nsqd equivalent).
    Serve(Box<ServeArgs>),
    /// Run the discovery service (the nsqlookupd equivalent).
    Lookupd(LookupdArgs),
    /// Administer a running node over its gRPC admin API.
    Admin(crate::admin::cli::AdminArgs),
    /// NSQ's command-line tools (`src/tools/`).
    #[command(flatten)]
    Tools(crate::tools::ToolCommand),
    /// Print the shell completion script for ledgerq to stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Prints `shell`'s completion script for every subcommand and flag of
/// `ledgerq`. A reader that stops early (`| head`) is not an error.
pub fn print_completions(shell: clap_complete::Shell) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ledgerq", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

fn quantile(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(q) if q > 0.0 && q <= 1.0 => Ok(q),
        _ => Err(format!("invalid percentile {text:?}: a number in (0, 1]")),
    }
}

fn log_level(text: &str) -> Result<String, String> {
    match crate::logging::level_number(text) {
        Some(_) => Ok(text.trim().to_ascii_lowercase()),
        None => Err(format!(
            "invalid log level {text:?}: debug, info, warn, error or fatal"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// <addr>:<port> to listen on for TCP clients (NSQ protocol V2).
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: SocketAddr,

    /// <addr>:<port> to listen on for HTTP clients (nsqd's HTTP API).
    #[arg(long, default_value = DEFAULT_HTTP_ADDRESS)]
    pub http_address: SocketAddr,

    /// How long an HTTP client may take to send a request's headers, or stay
    /// silent while sending its body, before it is cut off.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub http_read_timeout: Duration,

    /// Address this node registers with lookupd (default: the host name).
    #[arg(long)]
    pub broadcast_address: Option<String>,

    /// TCP port this node registers with lookupd (0: the listening port).
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,

    /// HTTP port this node registers with lookupd (0: the listening port).
    #[arg(long, default_value_t = 0)]
    pub broadcast_http_port: u16,

    /// lookupd TCP address to register with (repeatable).
    #[arg(long = "lookupd-tcp-address")]
    pub lookupd_tcp_addresses: Vec<String>,

    /// Directory of the RocksDB database holding every topic's log.
    #[arg(long, default_value = "ledgerq-data")]
    pub data_path: PathBuf,

    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_parser = log_level)]
    pub log_level: String,

    /// Changes the log level at run time (set by `main`; tests leave it out).
    #[arg(skip)]
    pub log_control: Option<crate::logging::LogControl>,

    /// Messages of each topic kept in memory to serve consumers without
    /// reading the disk (every message is on disk regardless).
    #[arg(long, default_value_t = 10_000)]
    pub mem_queue_size: usize,

    /// Default time a message may be in flight before it is redelivered.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub msg_timeout: Duration,

    /// Maximum msg_timeout a client may ask for in IDENTIFY (also caps TOUCH).
    #[arg(long, default_value = "15m", value_parser = duration)]
    pub max_msg_timeout: Duration,

    /// Maximum size of one message body, in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_msg_size: u64,

    /// Maximum size of one command body (IDENTIFY, MPUB), in bytes.
    #[arg(long, default_value_t = 5_242_880)]
    pub max_body_size: u64,

    /// Maximum REQ delay (larger ones are clamped) and DPUB delay (larger
    /// ones are refused).
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub max_req_timeout: Duration,

    /// Maximum RDY count a client may send.
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: u64,

    /// Maximum heartbeat interval a client may ask for.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub max_heartbeat_interval: Duration,

    /// Maximum output buffer size a client may ask for, in bytes.
    #[arg(long, default_value_t = 65_536)]
    pub max_output_buffer_size: u64,

    /// Maximum output buffer timeout a client may ask for.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub max_output_buffer_timeout: Duration,

    /// Minimum output buffer timeout a client may ask for.
    #[arg(long, default_value = "25ms", value_parser = duration)]
    pub min_output_buffer_timeout: Duration,

    /// Default output buffer timeout of a client.
    #[arg(long, default_value = "250ms", value_parser = duration)]
    pub output_buffer_timeout: Duration,

    /// Maximum consumers per channel on this node (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: usize,

    /// How long a FIN or REQ may wait to share an fsync with other writes.
    /// A crash inside this window can cause a redelivery, never a loss.
    #[arg(long, default_value = "100ms", value_parser = duration)]
    pub finish_sync_interval: Duration,

    /// How long an HTTP publish's `Idempotency-Key` is remembered for its
    /// topic: a repeat within it stores nothing and answers as the first
    /// did. 0 turns de-duplication off (keys are then ignored).
    #[arg(long, default_value = "2m", value_parser = duration)]
    pub dedup_window: Duration,

    /// At most this many idempotency keys are remembered, all topics
    /// together; beyond it the oldest go (counted in /metrics). Each takes
    /// about 270 bytes of memory and 50 on disk, plus its length in both.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_max_keys: u64,

    /// Quantiles of the end-to-end processing latency (publish to FIN) to
    /// report in `/stats`, each in (0, 1] (repeatable, or comma-separated).
    #[arg(long = "e2e-processing-latency-percentile", value_delimiter = ',', value_parser = quantile)]
    pub e2e_processing_latency_percentiles: Vec<f64>,

    /// The window those quantiles cover.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub e2e_processing_latency_window_time: Duration,

    /// Redundancy mode: this node's id in its replica group (1, 2, ...).
    #[arg(long)]
    pub node_id: Option<u64>,

    /// Redundancy mode: the initial members' gRPC addresses, the same list
    /// on every member, this node included: `1=HOST:PORT,2=HOST:PORT,...`.
    /// Without it the node runs alone (single-node mode).
    #[arg(long)]
    pub replicas: Option<String>,

    /// Where this node serves gRPC: the admin API (`ledgerq.admin.v1.Admin`,
    /// health, reflection) and, in redundancy mode, the replica group's raft.
    #[arg(long, default_value = "0.0.0.0:4153")]
    pub grpc_address: SocketAddr,

    /// A file holding the admin API's token: every admin RPC must then carry
    /// `authorization: Bearer <token>` metadata (UNAUTHENTICATED otherwise).
    #[arg(long)]
    pub grpc_admin_token_file: Option<PathBuf>,

    /// A file holding a token that the HTTP API's admin writes then require
    /// as `Authorization: Bearer <token>` (401 otherwise): topic and channel
    /// create, delete, pause, unpause and empty, `PUT /config`, `/cluster/*`.
    #[arg(long)]
    pub http_admin_token_file: Option<PathBuf>,

    /// Mutual TLS on `--grpc-address` (`src/grpc_tls.rs`).
    #[command(flatten)]
    pub grpc_tls: crate::grpc_tls::GrpcTlsArgs,

    /// With `--grpc-admin-token-file`: let the admin API's reads (list, get,
    /// stats, cluster status, health) through without the token.
    #[arg(long, default_value_t = false)]
    pub grpc_admin_open_reads: bool,

    /// Redundancy mode: how long a write may wait for a leader to commit
    /// it before the client gets an error (never an OK).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub forward_timeout: Duration,

    /// Redundancy mode: the leader's heartbeat period. openraft also gives
    /// each append-entries RPC this long to be answered (the follower's
    /// fsync included), so it must cover a follower's worst fsync.
    #[arg(long, default_value = "200ms", value_parser = duration)]
    pub raft_heartbeat_interval: Duration,

    /// Redundancy mode: the election timeout. A follower that hears no
    /// leader for 4/3 of this (openraft's leader lease) plus a random time
    /// between this and 4/3 of this starts an election.
    #[arg(long, default_value = "300ms", value_parser = duration)]
    pub raft_election_timeout: Duration,

    /// Redundancy mode: build a snapshot, and purge the raft log behind
    /// it, every this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub raft_snapshot_entries: u64,

    /// TLS: certificates, client certificates, requirement, versions.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// AUTH: the auth servers and how to ask them (`src/auth/`).
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,

    /// <addr>:<port> to listen on for HTTPS clients (the HTTP API over TLS;
    /// only with `--tls-cert` and `--tls-key`).
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: SocketAddr,

    /// Let clients negotiate deflate compression (IDENTIFY `deflate`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub deflate: bool,

    /// The highest deflate level a client may negotiate (1-9).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i64).range(1..=9))]
    pub max_deflate_level: i64,

    /// Let clients negotiate snappy compression (IDENTIFY `snappy`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub snappy: bool,

    /// Tests only: accept `PUT /cluster/faults` (cut or delay raft links).
    #[arg(long, default_value_t = false, hide = true)]
    pub enable_fault_injection: bool,

    /// UNSAFE: do not fsync before answering OK. Acknowledged messages can
    /// be lost in an OS crash or power loss. For measuring the price of
    /// durability only.
    #[arg(long, default_value_t = false)]
    pub unsafe_no_fsync: bool,
}

/// Flags of `ledgerq lookupd` (nsqlookupd's names and defaults).
#[derive(Debug, Clone, Args)]
pub struct LookupdArgs {
    /// <addr>:<port> to listen on for TCP clients (nodes registering).
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: SocketAddr,

    /// <addr>:<port> to listen on for HTTP clients (consumers, nsqadmin).
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: SocketAddr,

    /// Address of this lookupd node (default: the host name).
    #[arg(long)]
    pub broadcast_address: Option<String>,

    /// A producer that has not pinged for this long is left out of answers.
    #[arg(long, default_value = "300s", value_parser = duration)]
    pub inactive_producer_timeout: Duration,

    /// How long a tombstoned producer is left out of `/lookup`.
    #[arg(long, default_value = "45s", value_parser = duration)]
    pub tombstone_lifetime: Duration,

    /// How long an HTTP client may take to send a request's headers.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub http_read_timeout: Duration,

    /// <addr>:<port> to serve the HTTP API over TLS as well (nsqlookupd has
    /// no TLS: off unless set). Needs `--tls-cert` and `--tls-key`.
    #[arg(long)]
    pub https_address: Option<SocketAddr>,

    /// PEM certificate (chain) of the HTTPS listener.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,

    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_parser = log_level)]
    pub log_level: String,
}

impl LookupdArgs {
    /// The settings with every default, as if parsed from no flags.
    pub fn defaults() -> Self {
        match Cli::parse_from(["ledgerq", "lookupd"]).command {
            CliCommand::Lookupd(args) => args,
            _ => unreachable!("parsed the lookupd subcommand"),
        }
    }
}

impl ServeArgs {
    /// The settings with every default, as if parsed from no flags.
    pub fn defaults() -> Self {
        match Cli::parse_from(["ledgerq", "serve"]).command {
            CliCommand::Serve(args) => *args,
            _ => unreachable!("parsed the serve subcommand"),
        }
    }
}

/// nsqd's default HTTP address, used when `--http-address` is not given.
pub const DEFAULT_HTTP_ADDRESS: &str = "0.0.0.0:4151";

/// A duration in whole milliseconds.
pub fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

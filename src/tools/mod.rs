//! NSQ's command-line tools in the `ledgerq` binary, speaking the NSQ TCP
//! protocol like any client and finding nodes through lookupd as NSQ's Go
//! tools do (README "Command-line tools"):
//!
//! - [`publish`]: `ledgerq pub` (to_nsq);
//! - [`tail`]: `ledgerq tail` (nsq_tail);
//! - [`to_file`]: `ledgerq to-file` (nsq_to_file, lossless and exactly once);
//! - [`stat`]: `ledgerq stat` (nsq_stat);
//! - [`frame_codec`], [`nsq_client`] and [`consumer`]: the protocol client
//!   they share;
//! - [`discovery`]: addresses, lookupd queries and the HTTP client.
//!
//! Every tool exits 0 on success; on failure it prints one line
//! (`ledgerq <tool>: <error>`) on stderr and exits 1.

pub mod consumer;
pub mod discovery;
pub mod frame_codec;
pub mod nsq_client;
pub mod publish;
pub mod stat;
pub mod tail;
pub mod to_file;

use clap::Subcommand;

/// The tools' subcommands, flattened into `ledgerq`'s.
#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Publish lines of stdin or a file (the to_nsq equivalent).
    Pub(publish::PubArgs),
    /// Print a topic's messages (the nsq_tail equivalent).
    Tail(tail::TailArgs),
    /// Write a topic's messages to files, exactly once (the nsq_to_file equivalent).
    ToFile(to_file::ToFileArgs),
    /// Print a channel's counters periodically (the nsq_stat equivalent).
    Stat(stat::StatArgs),
}

impl ToolCommand {
    fn name(&self) -> &'static str {
        match self {
            ToolCommand::Pub(_) => "pub",
            ToolCommand::Tail(_) => "tail",
            ToolCommand::ToFile(_) => "to-file",
            ToolCommand::Stat(_) => "stat",
        }
    }
}

/// Runs a tool; the process's exit code (its error is printed as one line).
pub async fn run(command: ToolCommand) -> i32 {
    crate::logging::init("warn");
    let name = command.name();
    let result = match command {
        ToolCommand::Pub(args) => publish::run(args).await,
        ToolCommand::Tail(args) => tail::run(args).await,
        ToolCommand::ToFile(args) => to_file::run(args).await,
        ToolCommand::Stat(args) => stat::run(args).await,
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            let text = format!("{error:#}").replace('\n', " ");
            eprintln!("ledgerq {name}: {text}");
            1
        }
    }
}

//! `ledgerq to-file`: nsq_to_file's equivalent, with two promises nsq_to_file
//! does not make: **nothing consumed is lost** (a message is FINed only once
//! it is in an fsynced file) and **each message is in the output exactly
//! once**, even across SIGKILL, power loss and redeliveries.
//!
//! Messages are taken in batches (whatever has arrived, up to
//! `--max-in-flight`). A batch is committed by [`output::Writer::commit`]:
//! 1. messages whose key (ID and timestamp, see [`journal`]) the journal
//!    already holds are dropped: they are redeliveries of written ones;
//! 2. the others are appended to the current file (one gzip member per
//!    batch with `--gzip`) and the file is fsynced;
//! 3. a commit record (the file's new committed length and the keys) is
//!    appended to the journal `<output-dir>/.<TOPIC>.<CHANNEL>.to-file-journal`
//!    and fsynced;
//! 4. only then is every message of the batch FINed.
//!
//! A new file is created (and the directory fsynced) and an open record
//! naming it is fsynced in the journal before any data goes into it.
//!
//! Why every crash point is safe (on start, the journal is replayed: its
//! last open record names the current file, its last commit the committed
//! length, which the file is cut back to):
//! - before 2 completes: the batch's bytes (whole or torn) lie past the
//!   committed length and are cut off; no key was journaled and nothing was
//!   FINed, so the server delivers the messages again and they are written
//!   once.
//! - after 2, before 3 completes: the same — data without a commit record
//!   is cut off (a torn journal record fails its CRC and is cut off too).
//! - after 3, before 4: file and journal hold the messages; the server
//!   delivers them again (no FIN arrived), their keys are known, they are
//!   FINed without being written.
//! - after 4: a FIN the server had not made durable yet leads to the same
//!   redelivery, handled the same way.
//! - while opening a file: a file created but not journaled is never
//!   written to (the next start picks the next free `<REV>`); one journaled
//!   but not written is cut back to its start length.
//!
//! Data is fsynced before the record that commits it, so a journal never
//! claims bytes the file lacks (a file shorter than its committed length
//! was changed by someone else, and `to-file` refuses to go on); keys are
//! journaled before the FIN, so a message can be FINed only once it is on
//! disk. The journal holds 24 bytes per message written and is read into
//! memory at start. A `<TOPIC>.<CHANNEL>` journal is locked (`flock`):
//! one `to-file` at a time per output dir, topic and channel.

#[cfg(test)]
mod crash_tests;
pub mod journal;
pub mod output;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

use super::consumer::{Consumer, Delivery};
use super::discovery::{self, Port, TcpSources};
use output::{FilenameFormat, OutputOptions, Writer};

fn duration_or_zero(text: &str) -> Result<Duration, String> {
    match text {
        "0" => Ok(Duration::ZERO),
        _ => humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}")),
    }
}

/// Flags of `ledgerq to-file` (nsq_to_file's).
#[derive(Debug, Clone, Args)]
pub struct ToFileArgs {
    /// NSQ topic.
    #[arg(long)]
    pub topic: String,

    /// NSQ channel.
    #[arg(long, default_value = "nsq_to_file")]
    pub channel: String,

    #[command(flatten)]
    pub sources: TcpSources,

    /// Directory of the output files (created if missing).
    #[arg(long, default_value = "/tmp")]
    pub output_dir: PathBuf,

    /// Output file name: <TOPIC>, <HOST>, <PID>, <DATETIME> and <REV> (`-`
    /// and a six-digit revision) are replaced; `.gz` is added with --gzip.
    #[arg(long, default_value = "<TOPIC>.<HOST><REV>.<DATETIME>.log")]
    pub filename_format: String,

    /// strftime format of <DATETIME> (UTC).
    #[arg(long, default_value = "%Y-%m-%d_%H")]
    pub datetime_format: String,

    /// Value of <HOST> (default: the short host name).
    #[arg(long)]
    pub host_identifier: Option<String>,

    /// Start a new file once the current one has this many bytes (0: never).
    #[arg(long, default_value_t = 0)]
    pub rotate_size: u64,

    /// Start a new file once the current one is this old (0: never).
    #[arg(long, default_value = "0", value_parser = duration_or_zero)]
    pub rotate_interval: Duration,

    /// gzip the output (one gzip member per fsynced batch).
    #[arg(long)]
    pub gzip: bool,

    /// gzip compression level (1 fastest .. 9 smallest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,

    /// Most messages in flight, and so in one fsynced batch.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
}

/// The output settings the flags describe.
pub fn output_options(args: &ToFileArgs) -> anyhow::Result<OutputOptions> {
    let mut template = args.filename_format.clone();
    if args.gzip && !template.ends_with(".gz") {
        template.push_str(".gz");
    }
    let rotating = args.rotate_size > 0 || !args.rotate_interval.is_zero();
    if rotating && !template.contains("<REV>") {
        bail!("--filename-format must contain <REV> to rotate (--rotate-size, --rotate-interval)");
    }
    let host = args.host_identifier.clone().unwrap_or_else(|| {
        let hostname = crate::http::info::hostname();
        hostname.split('.').next().unwrap_or_default().to_owned()
    });
    let format = FilenameFormat {
        template,
        topic: args.topic.clone(),
        host,
        pid: std::process::id(),
    };
    format.check()?;
    output::check_datetime_format(&args.datetime_format)?;
    Ok(OutputOptions {
        dir: args.output_dir.clone(),
        format,
        datetime_format: args.datetime_format.clone(),
        rotate_size_bytes: args.rotate_size,
        rotate_interval: args.rotate_interval,
        gzip_level: args.gzip.then_some(args.gzip_level),
    })
}

/// The journal of a topic and channel in `dir`.
pub fn journal_path(dir: &std::path::Path, topic: &str, channel: &str) -> PathBuf {
    dir.join(format!(".{topic}.{channel}.to-file-journal"))
}

/// Runs `ledgerq to-file` until SIGTERM or SIGINT (then exits 0 after the
/// batch in hand) or an error.
pub async fn run(args: ToFileArgs) -> anyhow::Result<()> {
    let nsqd = discovery::check_addresses("nsqd-tcp-address", &args.sources.nsqd_tcp_addresses)?;
    let lookupd =
        discovery::check_addresses("lookupd-http-address", &args.sources.lookupd_http_addresses)?;
    discovery::check_sources(&nsqd, "nsqd-tcp-address", &lookupd)?;
    let options = output_options(&args)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating --output-dir {}", args.output_dir.display()))?;
    let journal = journal_path(&args.output_dir, &args.topic, &args.channel);
    // Recovery comes first: the output is consistent before anything is read.
    let mut writer = Writer::open(options, &journal)?;
    tracing::info!(written = writer.written_count(), journal = %journal.display(), "journal loaded");

    let nodes = discovery::nodes(&args.topic, &nsqd, &lookupd, Port::Tcp).await?;
    let user_agent = format!("ledgerq-to-file/{}", env!("CARGO_PKG_VERSION"));
    let client_options = args.sources.security.options(user_agent)?;
    let mut consumer = Consumer::subscribe(
        &nodes,
        &args.topic,
        &args.channel,
        args.max_in_flight,
        &client_options,
    )
    .await?;
    let stop = stop_signal()?;
    tokio::pin!(stop);
    let max_batch = usize::try_from(args.max_in_flight).unwrap_or(usize::MAX);
    loop {
        let first = tokio::select! {
            delivery = consumer.next() => delivery?,
            () = &mut stop => break,
        };
        let mut batch: Vec<Delivery> = vec![first];
        while batch.len() < max_batch {
            match consumer.try_next() {
                Some(delivery) => batch.push(delivery?),
                None => break,
            }
        }
        let messages: Vec<_> = batch.iter().map(|d| d.message.clone()).collect();
        // Blocking file I/O on purpose: the connections' tasks keep
        // receiving on the runtime's workers meanwhile, which is what fills
        // the next batch.
        let written = writer.commit(&messages)?;
        if written < messages.len() {
            let skipped = messages.len() - written;
            tracing::info!(
                skipped,
                "redelivered messages already written: FINed, not written again"
            );
        }
        for delivery in &batch {
            consumer.finish(delivery);
        }
    }
    consumer.close().await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(extra: &[&str]) -> ToFileArgs {
        let mut argv = vec!["ledgerq", "to-file", "--topic=orders"];
        argv.extend_from_slice(extra);
        match crate::config::Cli::parse_from(argv).command {
            crate::config::CliCommand::Tools(crate::tools::ToolCommand::ToFile(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_nsq_to_files() {
        let args = parse(&[]);
        assert_eq!(args.channel, "nsq_to_file");
        assert_eq!(args.output_dir, PathBuf::from("/tmp"));
        assert_eq!(args.max_in_flight, 200);
        let options = output_options(&args).unwrap();
        assert_eq!(
            options.format.template,
            "<TOPIC>.<HOST><REV>.<DATETIME>.log"
        );
        assert_eq!(options.gzip_level, None);
        assert!(options.rotate_interval.is_zero());
    }

    #[test]
    fn gzip_adds_gz_and_rotation_needs_rev() {
        let options = output_options(&parse(&["--gzip", "--gzip-level=9"])).unwrap();
        assert!(options.format.template.ends_with(".log.gz"));
        assert_eq!(options.gzip_level, Some(9));
        let args = parse(&["--filename-format=<TOPIC>.log", "--rotate-size=100"]);
        assert!(output_options(&args).is_err());
        let args = parse(&["--filename-format=<TOPIC>.log", "--rotate-interval=1h"]);
        assert!(output_options(&args).is_err());
        let args = parse(&["--rotate-interval=90s", "--host-identifier=h"]);
        let options = output_options(&args).unwrap();
        assert_eq!(options.rotate_interval, Duration::from_secs(90));
        assert_eq!(options.format.host, "h");
    }

    #[test]
    fn journal_is_per_topic_and_channel() {
        let path = journal_path(std::path::Path::new("/out"), "orders", "c#ephemeral");
        assert_eq!(
            path,
            PathBuf::from("/out/.orders.c#ephemeral.to-file-journal")
        );
    }
}

//! `ledgerq pub`: to_nsq's equivalent. Reads stdin (or `--file`), one message
//! per `--delimiter`-separated record (empty records are skipped, as to_nsq
//! does), and publishes each to every node (as to_nsq does with several
//! `--nsqd-tcp-address`; `--lookupd-http-address` finds the topic's nodes).
//!
//! Records are grouped into MPUBs (up to `--batch-size` messages and
//! [`BATCH_BYTES`]); a batch is sent as soon as the input has no more data
//! buffered, so interactive input is published at once. Up to
//! [`WINDOW_BATCHES`] MPUBs are in flight per node. The command exits 0 only
//! once every batch got its `OK` from every node (each `OK` means fsynced);
//! the first `E_*` error ends it with that error.

use std::io::{BufRead as _, BufReader, IsTerminal as _, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use super::discovery::{self, Port, TcpSources};
use super::nsq_client::{encode_mpub, encode_pub, Connection, Frame};

/// Most body bytes in one MPUB (nsqd's `--max-body-size` default is 5 MiB).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// MPUBs sent to a node before its first `OK` must arrive.
pub const WINDOW_BATCHES: usize = 8;
const READ_BUFFER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal.
    Auto,
    /// Always draw it on stderr.
    Always,
    /// Never.
    Never,
}

/// Flags of `ledgerq pub` (to_nsq's, plus `--file`, `--batch-size`, `--progress`).
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// NSQ topic to publish to.
    #[arg(long)]
    pub topic: String,

    #[command(flatten)]
    pub sources: TcpSources,

    /// Read messages from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Character separating messages: one byte, or \n, \r, \t, \0, \\.
    #[arg(long, default_value = "\\n")]
    pub delimiter: String,

    /// Most messages per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Most messages in one MPUB.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,

    /// Progress bar on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// The delimiter byte of `--delimiter`.
pub fn parse_delimiter(text: &str) -> anyhow::Result<u8> {
    match text {
        "\\n" => Ok(b'\n'),
        "\\r" => Ok(b'\r'),
        "\\t" => Ok(b'\t'),
        "\\0" => Ok(0),
        "\\\\" => Ok(b'\\'),
        _ if text.len() == 1 => Ok(text.as_bytes()[0]),
        _ => bail!("invalid --delimiter {text:?}: one byte, or \\n, \\r, \\t, \\0, \\\\"),
    }
}

/// Messages to publish together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bodies: Vec<Bytes>,
    /// Input bytes the batch covers (delimiters and skipped records included).
    pub input_bytes: u64,
}

/// Splits `reader` into batches of at most `max_messages` messages and
/// about `max_bytes`, handing each to `send` (which returns false to stop).
/// A batch also ends whenever `reader` has nothing more buffered.
pub fn read_batches<R: Read>(
    reader: &mut BufReader<R>,
    delimiter: u8,
    max_messages: usize,
    max_bytes: usize,
    mut send: impl FnMut(Batch) -> bool,
) -> std::io::Result<()> {
    let mut batch = Batch::default();
    let mut batch_bytes = 0usize;
    let mut record = Vec::new();
    loop {
        record.clear();
        let read = reader.read_until(delimiter, &mut record)?;
        batch.input_bytes += read as u64;
        if record.last() == Some(&delimiter) {
            record.pop();
        }
        if !record.is_empty() {
            batch_bytes += record.len();
            batch.bodies.push(Bytes::copy_from_slice(&record));
        }
        let full = batch.bodies.len() >= max_messages || batch_bytes >= max_bytes;
        if (full || reader.buffer().is_empty() || read == 0) && batch.input_bytes > 0 {
            if !send(std::mem::take(&mut batch)) {
                return Ok(());
            }
            batch_bytes = 0;
        }
        if read == 0 {
            return Ok(());
        }
    }
}

/// What has been acknowledged, per node, and the bar that shows it.
struct Progress {
    bar: ProgressBar,
    acked_bytes: Vec<AtomicU64>,
    acked_messages: Vec<AtomicU64>,
}

impl Progress {
    fn new(mode: ProgressMode, total_bytes: Option<u64>, nodes: usize) -> Progress {
        let target = match mode {
            ProgressMode::Never => ProgressDrawTarget::hidden(),
            ProgressMode::Auto if !std::io::stderr().is_terminal() => ProgressDrawTarget::hidden(),
            ProgressMode::Auto => ProgressDrawTarget::stderr_with_hz(4),
            ProgressMode::Always => {
                ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 4)
            }
        };
        let template = match total_bytes {
            Some(_) => "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
            None => "{spinner} {bytes} {msg}",
        };
        let style = ProgressStyle::with_template(template).expect("valid template");
        let bar = ProgressBar::with_draw_target(total_bytes, target).with_style(style);
        let zeros = || (0..nodes).map(|_| AtomicU64::new(0)).collect();
        Progress {
            bar,
            acked_bytes: zeros(),
            acked_messages: zeros(),
        }
    }

    fn acked(&self, node: usize, batch: &Batch) {
        self.acked_bytes[node].fetch_add(batch.input_bytes, Ordering::Relaxed);
        let messages = batch.bodies.len() as u64;
        self.acked_messages[node].fetch_add(messages, Ordering::Relaxed);
        let min = |counts: &[AtomicU64]| {
            counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        };
        self.bar.set_position(min(&self.acked_bytes));
        let acked = min(&self.acked_messages);
        self.bar
            .set_message(format!("{acked} messages acknowledged"));
    }
}

/// Runs `ledgerq pub`.
pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    let delimiter = parse_delimiter(&args.delimiter)?;
    let nsqd = discovery::check_addresses("nsqd-tcp-address", &args.sources.nsqd_tcp_addresses)?;
    let lookupd =
        discovery::check_addresses("lookupd-http-address", &args.sources.lookupd_http_addresses)?;
    discovery::check_sources(&nsqd, "nsqd-tcp-address", &lookupd)?;
    let (input, total_bytes) = open_input(args.file.as_ref())?;
    let nodes = discovery::nodes(&args.topic, &nsqd, &lookupd, Port::Tcp).await?;
    let user_agent = format!("ledgerq-pub/{}", env!("CARGO_PKG_VERSION"));
    let options = args.sources.security.options(user_agent)?;
    let connections = futures::future::try_join_all(
        nodes
            .iter()
            .map(|address| Connection::connect(address, &options)),
    )
    .await?;

    let progress = Arc::new(Progress::new(args.progress, total_bytes, nodes.len()));
    let max_messages = match args.rate {
        0 => args.batch_size,
        rate => args.batch_size.min((rate / 10).max(1)),
    };
    let (batches, mut read) = mpsc::channel::<anyhow::Result<Batch>>(4);
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, input);
        let sent = read_batches(
            &mut reader,
            delimiter,
            usize::try_from(max_messages).unwrap_or(usize::MAX),
            BATCH_BYTES,
            |batch| batches.blocking_send(Ok(batch)).is_ok(),
        );
        if let Err(error) = sent {
            let _ = batches.blocking_send(Err(anyhow!("reading the input: {error}")));
        }
    });

    let mut senders = Vec::new();
    let mut producers = Vec::new();
    for (node, connection) in connections.into_iter().enumerate() {
        let (sender, receiver) = mpsc::channel(WINDOW_BATCHES);
        senders.push(sender);
        let topic = args.topic.clone();
        producers.push(produce(
            connection,
            topic,
            receiver,
            node,
            Arc::clone(&progress),
        ));
    }
    let dispatch = async move {
        let start = tokio::time::Instant::now();
        let mut read_messages = 0u64;
        while let Some(batch) = read.recv().await {
            let batch = Arc::new(batch?);
            if args.rate > 0 {
                let due = Duration::from_secs_f64(read_messages as f64 / args.rate as f64);
                tokio::time::sleep_until(start + due).await;
            }
            read_messages += batch.bodies.len() as u64;
            for sender in &senders {
                // A closed channel means its producer failed; try_join reports it.
                let _ = sender.send(Arc::clone(&batch)).await;
            }
        }
        anyhow::Ok(())
    };
    tokio::try_join!(dispatch, futures::future::try_join_all(producers))?;
    progress.bar.finish_and_clear();
    Ok(())
}

/// The input and its size when known (a file, or stdin redirected from one).
fn open_input(file: Option<&PathBuf>) -> anyhow::Result<(Box<dyn Read + Send>, Option<u64>)> {
    use std::os::fd::AsFd as _;
    let file = match file {
        Some(path) => std::fs::File::open(path)
            .with_context(|| format!("opening --file {}", path.display()))?,
        None => {
            let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
            std::fs::File::from(stdin)
        }
    };
    let size = file
        .metadata()
        .ok()
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len());
    Ok((Box::new(file), size))
}

/// One node's publisher: MPUBs out (at most [`WINDOW_BATCHES`] unanswered),
/// `OK`s in, until the input ends and every batch is acknowledged.
async fn produce(
    mut connection: Connection,
    topic: String,
    mut batches: mpsc::Receiver<Arc<Batch>>,
    node: usize,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let mut pending = std::collections::VecDeque::new();
    let mut input_done = false;
    let mut command = BytesMut::new();
    while !(input_done && pending.is_empty()) {
        tokio::select! {
            batch = batches.recv(), if !input_done && pending.len() < WINDOW_BATCHES => {
                let Some(batch) = batch else {
                    input_done = true;
                    continue;
                };
                if batch.bodies.is_empty() {
                    progress.acked(node, &batch);
                    continue;
                }
                command.clear();
                match &batch.bodies[..] {
                    [one] => encode_pub(&mut command, &topic, one),
                    bodies => encode_mpub(&mut command, &topic, bodies),
                }
                connection.send(&command).await?;
                pending.push_back(batch);
            }
            // Always read, so heartbeats are answered while the input is idle.
            frame = connection.recv() => match frame? {
                frame if frame.is_heartbeat() => connection.answer_heartbeat().await?,
                Frame::Response(text) if &text[..] == b"OK" && !pending.is_empty() => {
                    let batch = pending.pop_front().expect("a pending batch");
                    progress.acked(node, &batch);
                }
                Frame::Error(text) => {
                    bail!("{}: {}", connection.address, String::from_utf8_lossy(&text))
                }
                other => bail!("{}: unexpected reply {other:?}", connection.address),
            },
        }
    }
    connection.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(input: &[u8], capacity: usize, max_messages: usize) -> Vec<Batch> {
        let mut reader = BufReader::with_capacity(capacity, input);
        let mut out = Vec::new();
        read_batches(&mut reader, b'\n', max_messages, 1000, |batch| {
            out.push(batch);
            true
        })
        .unwrap();
        out
    }

    fn bodies(batches: &[Batch]) -> Vec<Vec<&[u8]>> {
        batches
            .iter()
            .map(|batch| batch.bodies.iter().map(|body| &body[..]).collect())
            .collect()
    }

    #[test]
    fn splits_records_and_skips_empty_ones() {
        let out = batches(b"a\n\nbc\nd", 64, 100);
        assert_eq!(bodies(&out), [vec![&b"a"[..], b"bc", b"d"]]);
        assert_eq!(out[0].input_bytes, 7);
    }

    #[test]
    fn batches_end_when_full_or_when_nothing_is_buffered() {
        let out = batches(b"a\nb\nc\nd\ne\n", 64, 2);
        assert_eq!(
            bodies(&out),
            [vec![&b"a"[..], b"b"], vec![b"c", b"d"], vec![b"e"]]
        );
        // A 4-byte buffer holds two records: the batch ends when it is drained.
        let out = batches(b"a\nb\nc\n", 4, 100);
        assert_eq!(bodies(&out), [vec![&b"a"[..], b"b"], vec![b"c"]]);
        let total: u64 = out.iter().map(|batch| batch.input_bytes).sum();
        assert_eq!(total, 6);
    }

    #[test]
    fn empty_input_sends_nothing() {
        assert!(batches(b"", 64, 10).is_empty());
        let out = batches(b"\n\n", 64, 10);
        assert_eq!(bodies(&out), [Vec::<&[u8]>::new()]);
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("\\n").unwrap(), b'\n');
        assert_eq!(parse_delimiter("\\0").unwrap(), 0);
        assert_eq!(parse_delimiter(",").unwrap(), b',');
        assert_eq!(parse_delimiter("\n").unwrap(), b'\n');
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("").is_err());
    }
}

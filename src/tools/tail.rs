//! `ledgerq tail`: nsq_tail's equivalent. Subscribes to a topic (channel
//! `tail<random>#ephemeral` unless `--channel` says otherwise), prints each
//! body and a newline on stdout, and FINs the message once it is written.
//! `-n N` stops after N messages (0: forever); at most N are in flight.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

use super::consumer::Consumer;
use super::discovery::{self, Port, TcpSources};

/// Flags of `ledgerq tail` (nsq_tail's).
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// NSQ topic.
    #[arg(long)]
    pub topic: String,

    /// NSQ channel (default: tail<random>#ephemeral).
    #[arg(long)]
    pub channel: Option<String>,

    #[command(flatten)]
    pub sources: TcpSources,

    /// Total messages to show, then exit (0: forever).
    #[arg(short = 'n', long = "n", default_value_t = 0)]
    pub total_messages: u64,

    /// Most messages in flight at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,

    /// Print "<topic> | " before each body.
    #[arg(long)]
    pub print_topic: bool,
}

/// nsq_tail's default channel: `tail` + a number below 999999 + `#ephemeral`.
pub fn default_channel() -> String {
    format!("tail{:06}#ephemeral", rand::random_range(0..999_999u32))
}

/// The in-flight limit: never more than the messages still to show.
pub fn max_in_flight(max_in_flight: u64, total_messages: u64) -> u64 {
    match total_messages {
        0 => max_in_flight,
        total => max_in_flight.min(total),
    }
}

/// Runs `ledgerq tail`.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let nsqd = discovery::check_addresses("nsqd-tcp-address", &args.sources.nsqd_tcp_addresses)?;
    let lookupd =
        discovery::check_addresses("lookupd-http-address", &args.sources.lookupd_http_addresses)?;
    discovery::check_sources(&nsqd, "nsqd-tcp-address", &lookupd)?;
    let channel = args.channel.clone().unwrap_or_else(default_channel);
    let nodes = discovery::nodes(&args.topic, &nsqd, &lookupd, Port::Tcp).await?;
    let user_agent = format!("ledgerq-tail/{}", env!("CARGO_PKG_VERSION"));
    let options = args.sources.security.options(user_agent)?;
    let in_flight = max_in_flight(args.max_in_flight, args.total_messages);
    let mut consumer =
        Consumer::subscribe(&nodes, &args.topic, &channel, in_flight, &options).await?;
    let stdout = std::io::stdout();
    let mut shown = 0u64;
    while args.total_messages == 0 || shown < args.total_messages {
        let delivery = consumer.next().await?;
        let written = (|| {
            let mut stdout = stdout.lock();
            if args.print_topic {
                write!(stdout, "{} | ", args.topic)?;
            }
            stdout.write_all(&delivery.message.body)?;
            stdout.write_all(b"\n")?;
            stdout.flush()
        })();
        match written {
            Ok(()) => consumer.finish(&delivery),
            // The reader went away (`ledgerq tail | head`): stop quietly.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(error) => return Err(error).context("writing to stdout"),
        }
        shown += 1;
    }
    consumer.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_channel_is_ephemeral_and_valid() {
        let channel = default_channel();
        assert!(channel.starts_with("tail"), "{channel}");
        assert!(channel.ends_with("#ephemeral"), "{channel}");
        assert_eq!(channel.len(), "tail".len() + 6 + "#ephemeral".len());
        assert!(crate::protocol::is_valid_channel_name(&channel));
    }

    #[test]
    fn in_flight_never_exceeds_what_is_left_to_show() {
        assert_eq!(max_in_flight(200, 0), 200);
        assert_eq!(max_in_flight(200, 3), 3);
        assert_eq!(max_in_flight(2, 3), 2);
    }
}

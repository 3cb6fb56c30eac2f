//! The `ledgerq` command: parses flags, sets up logging, runs the server
//! until SIGTERM or SIGINT, then shuts down cleanly and exits 0.

use clap::Parser;
use ledgerq::config::{Cli, CliCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Serve(mut args) => {
            args.log_control = Some(ledgerq::logging::init(&args.log_level));
            let running = ledgerq::server::start(args, None).await?;
            let token = running.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received: shutting down");
                token.cancel();
            });
            running.wait().await;
        }
        CliCommand::Lookupd(args) => {
            ledgerq::logging::init(&args.log_level);
            let running = ledgerq::lookupd::start(args).await?;
            let token = running.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received: shutting down");
                token.cancel();
            });
            running.wait().await;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

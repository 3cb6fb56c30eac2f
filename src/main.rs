//! The `ledgerq` command: parses flags, sets up logging, runs the broker
//! (`serve`) or the discovery service (`lookupd`) until SIGTERM or SIGINT,
//! then shuts down cleanly and exits 0; or runs one of the tools (`admin`:
//! `src/admin/cli.rs`; NSQ's `pub`, `tail`, `to-file`, `stat`:
//! `src/tools/`) and exits with its code; `completions` prints a shell
//! completion script.

use clap::Parser;
use ledgerq::config::{Cli, CliCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Serve(mut args) => {
            args.log_control = Some(ledgerq::logging::init(&args.log_level));
            let running = ledgerq::server::start(*args, None).await?;
            stop_on_signal(running.shutdown_token());
            running.wait().await;
        }
        CliCommand::Lookupd(args) => {
            ledgerq::logging::init(&args.log_level);
            let running = ledgerq::lookupd::start(args).await?;
            stop_on_signal(running.shutdown_token());
            running.wait().await;
        }
        CliCommand::Admin(args) => {
            if let Err(failure) = ledgerq::admin::cli::run(args).await {
                eprintln!("ledgerq admin: {}", failure.message);
                std::process::exit(failure.code);
            }
        }
        CliCommand::Tools(command) => std::process::exit(ledgerq::tools::run(command).await),
        CliCommand::Completions { shell } => ledgerq::config::print_completions(shell)?,
    }
    Ok(())
}

/// Cancels `token` on the first SIGTERM or SIGINT.
fn stop_on_signal(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        token.cancel();
    });
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

//! `zpanel-bridge`: parses flags, builds the runtime, runs `join` or `run`.

use std::process::ExitCode;

use clap::Parser;
use zpanel_bridge::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZPANEL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("zpanel-bridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Join(args) => zpanel_bridge::join::join(args).await,
            Command::Run(args) => {
                zpanel_bridge::session::check_enrolled(&args.config_dir)?;
                zpanel_bridge::session::run(args).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zpanel-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

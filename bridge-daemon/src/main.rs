//! `zpanel-bridge`: parses flags, builds the runtime, runs `join` or `run`.

use std::process::ExitCode;

use zpanel_bridge::config::{Cli, Command};

fn main() -> ExitCode {
    let cli: Cli = zpanel_shared::process::parse_args("zpanel-bridge", 64);
    zpanel_shared::process::init_logging();
    // One worker: the daemon's share of a VPS should stay small. Measured (BENCHMARKS.md):
    // the same throughput as two workers, and less memory kept after large streams.
    let runtime = zpanel_shared::process::runtime("zpanel-bridge", Some(1));
    let result = runtime.block_on(async {
        match cli.command {
            Command::Join(args) => zpanel_bridge::join::join(args).await,
            Command::Run(args) => {
                zpanel_bridge::certificate::check_enrolled(&args.config_dir)?;
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

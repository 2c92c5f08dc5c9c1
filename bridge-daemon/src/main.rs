//! `zpanel-bridge`: parses flags, builds the runtime, runs `join`, `run`, (in a terminal
//! session's pseudo-terminal) `container-shell` or (in an upgrade's transient unit)
//! `upgrade-guard`.

use std::process::ExitCode;

use zpanel_bridge::config::{Cli, Command};

fn main() -> ExitCode {
    let cli: Cli = zpanel_shared::process::parse_args("zpanel-bridge", 64);
    // One worker: the daemon's share of a VPS should stay small. Measured (BENCHMARKS.md):
    // the same throughput as two workers, and less memory kept after large streams.
    let runtime = zpanel_shared::process::runtime("zpanel-bridge", Some(1));
    let result = match cli.command {
        Command::ContainerShell(args) => {
            // No logging: its standard error is the terminal the user types in. Exit at once:
            // the thread still reading the terminal's input must not hold the process.
            let code = runtime.block_on(zpanel_bridge::docker::container_shell(args));
            std::process::exit(code)
        }
        Command::UpgradeGuard(args) => {
            zpanel_shared::process::init_logging();
            zpanel_bridge::upgrade::guard(&args.config_dir)
        }
        Command::Join(args) => {
            zpanel_shared::process::init_logging();
            runtime.block_on(zpanel_bridge::join::join(args))
        }
        Command::Run(args) => {
            zpanel_shared::process::init_logging();
            runtime.block_on(async {
                zpanel_bridge::certificate::check_enrolled(&args.config_dir)?;
                zpanel_bridge::session::run(args).await
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zpanel-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

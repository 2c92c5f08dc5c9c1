//! `zpanel-cp`: parses flags, builds the runtime and runs the control plane.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use zpanel_cp::config::{CaCommand, Cli, Command};

fn main() -> ExitCode {
    let cli: Cli = zpanel_shared::process::parse_args("zpanel-cp", 64);
    zpanel_shared::process::init_logging();
    match cli.command {
        Command::Serve(args) => {
            if let Err(e) = args.validate() {
                eprintln!("zpanel-cp: {e}");
                return ExitCode::from(64);
            }
            raise_open_files_limit();
            let runtime = zpanel_shared::process::runtime("zpanel-cp", None);
            let result = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                zpanel_cp::run(args, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zpanel-cp: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Passwd(args) => {
            let runtime = zpanel_shared::process::runtime("zpanel-cp", Some(1));
            match runtime.block_on(zpanel_cp::passwd(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zpanel-cp: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ca { command } => {
            let runtime = zpanel_shared::process::runtime("zpanel-cp", Some(1));
            let result = runtime.block_on(async {
                match command {
                    CaCommand::Rotate(args) => {
                        zpanel_cp::service::lifecycle::ca_rotate(
                            zpanel_cp::service::lifecycle::RotateOptions {
                                data_dir: args.data_dir,
                                timeout: args.timeout,
                                force: args.force,
                            },
                        )
                        .await
                    }
                    CaCommand::Status { data_dir } => {
                        zpanel_cp::service::lifecycle::ca_status(&data_dir).await
                    }
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zpanel-cp: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CaPin { data_dir } => {
            let path = zpanel_cp::ca_dir(&data_dir).join("ca.pem");
            let pem = match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(e) => {
                    eprintln!(
                        "zpanel-cp: cannot read {}: {e} (start `zpanel-cp serve --data-dir {}` once to create the CA)",
                        path.display(),
                        data_dir.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            match zpanel_shared::tls::certs_from_pem(&pem) {
                Ok(certs) => {
                    println!("{}", zpanel_shared::tls::ca_pin(&certs[0]));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("zpanel-cp: {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Each host holds a socket: lift the soft open-files limit to the hard one.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    shutdown.cancel();
}

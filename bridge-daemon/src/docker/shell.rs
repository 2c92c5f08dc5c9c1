//! `zpanel-bridge container-shell`: what a terminal session in a container runs in its
//! pseudo-terminal. It makes an exec with a TTY in the container, relays the terminal's input
//! and output to it, follows the window's size, and exits with the command's exit code.

use std::time::Duration;

use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::InspectContainerOptions;
use futures_util::StreamExt;
use rustix::termios::{OptionalActions, tcgetattr, tcgetwinsize, tcsetattr};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

use super::{Docker, object_name};
use crate::config::ContainerShellArgs;

/// How long the engine may take to say the command's exit code once its output ended.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Runs the shell; its exit code, or 1 with one line on the terminal when it could not run.
pub async fn container_shell(args: ContainerShellArgs) -> i32 {
    match relay(args).await {
        Ok(code) => code,
        Err(line) => {
            // The terminal may be in raw mode by now: return the carriage too.
            eprint!("zpanel-bridge: {line}\r\n");
            1
        }
    }
}

async fn relay(args: ContainerShellArgs) -> Result<i32, String> {
    object_name("container", &args.container).map_err(|f| f.message)?;
    let docker = Docker::new(args.endpoint);
    let client = docker.client().await.map_err(|f| f.message)?;
    let failed = |e: bollard::errors::Error| docker.failure(&e).message;
    client
        .inspect_container(&args.container, None::<InspectContainerOptions>)
        .await
        .map_err(failed)?;
    let command = match args.command.is_empty() {
        true => vec!["sh".to_string()],
        false => args.command,
    };
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let config = ExecConfig {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(true),
        cmd: Some(command),
        env: Some(vec![format!("TERM={term}")]),
        user: args.user,
        ..ExecConfig::default()
    };
    let exec = client
        .create_exec(&args.container, config)
        .await
        .map_err(failed)?
        .id;
    raw_mode().map_err(|e| format!("cannot put the terminal in raw mode: {e}"))?;
    let start = StartExecOptions {
        detach: false,
        tty: true,
        output_capacity: None,
    };
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = client
        .start_exec(&exec, Some(start))
        .await
        .map_err(failed)?
    else {
        return Err("the engine started the command detached".into());
    };
    let resize = || async {
        if let Ok(size) = tcgetwinsize(std::io::stdin()) {
            let size = ResizeExecOptions {
                height: size.ws_row,
                width: size.ws_col,
            };
            // A command that already ended cannot be resized: nothing to do.
            let _ = client.resize_exec(&exec, size).await;
        }
    };
    resize().await;
    let mut window_changes =
        signal(SignalKind::window_change()).map_err(|e| format!("cannot follow resizes: {e}"))?;
    let keys = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut input).await;
    });
    let mut screen = tokio::io::stdout();
    loop {
        tokio::select! {
            next = output.next() => match next {
                Some(Ok(out)) => {
                    let shown = screen.write_all(&out.into_bytes()).await;
                    if shown.and(screen.flush().await).is_err() {
                        break;
                    }
                }
                Some(Err(e)) => return Err(failed(e)),
                None => break,
            },
            _ = window_changes.recv() => resize().await,
        }
    }
    keys.abort();
    exit_code(&client, &exec).await.map_err(failed)
}

/// The terminal passes every key through and echoes nothing: the container's own terminal
/// does both. Not restored: the pseudo-terminal is this process's alone and ends with it.
fn raw_mode() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut termios = tcgetattr(&stdin)?;
    termios.make_raw();
    tcsetattr(&stdin, OptionalActions::Now, &termios)?;
    Ok(())
}

/// The command's exit code, once the engine knows it.
async fn exit_code(client: &bollard::Docker, exec: &str) -> Result<i32, bollard::errors::Error> {
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    loop {
        let inspected = client.inspect_exec(exec).await?;
        let running = inspected.running.unwrap_or(false);
        if !running || tokio::time::Instant::now() >= deadline {
            let code = inspected.exit_code.unwrap_or(if running { 255 } else { 0 });
            return Ok(i32::try_from(code).unwrap_or(255));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! `zpanel exec`: runs a command on a host and streams its stdin, stdout and stderr. If the
//! connection to the control plane drops after the command started (a control-plane
//! restart, a network cut), it re-attaches from the offsets it has and carries on, so the
//! output arrives whole, in order and once.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tonic::Code;
use zpanel_proto::{
    ExecCancel, ExecClientMessage, ExecOpen, ExecResume, ProcessExit, StreamAck, StreamChunk,
    StreamKind, exec_client_message, exec_server_message,
};
use zpanel_shared::replay::{DEFAULT_WINDOW_BYTES, SharedReplay};

use crate::client::{self, status_message};
use crate::config::Settings;
use crate::streaming::{
    ACK_DELAY, Output, Reconnect, WriteError, drain, exit_code, first_reply, is_transient,
    read_stdin, request_stream, send_stream,
};

pub struct ExecOptions {
    pub host: String,
    pub argv: Vec<String>,
    pub timeout: Option<Duration>,
    pub forward_stdin: bool,
    /// How long to keep trying to re-attach after the connection drops.
    pub resume_for: Duration,
}

/// How an exec ended, as the process exit code of `zpanel`.
pub async fn exec(settings: &Settings, options: ExecOptions) -> anyhow::Result<i32> {
    // Catch Ctrl-C from the start, so one that comes while the command starts cancels it.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let stdin = Arc::new(SharedReplay::new(DEFAULT_WINDOW_BYTES));
    if options.forward_stdin {
        let buffer = stdin.clone();
        tokio::spawn(async move {
            read_stdin(&buffer, |bytes| {
                buffer.with(|b| b.push(Bytes::copy_from_slice(bytes)));
                ControlFlow::Continue(())
            })
            .await;
            buffer.with(|b| b.finish());
        });
    } else {
        stdin.with(|buffer| buffer.finish());
    }
    let mut state = State {
        exec_id: None,
        host_id: String::new(),
        stdout: Output::at(0),
        stderr: Output::at(0),
        exit: None,
        cancelled: false,
    };
    let mut reconnect = Reconnect::new(options.resume_for);
    loop {
        let attempt = attempt(
            settings,
            &options,
            &mut state,
            &stdin,
            &mut interrupts,
            &mut reconnect,
        );
        match attempt.await {
            Ok(exit) => return Ok(exec_exit_code(&options, &state, &exit)),
            Err(Attempt::Fatal(message)) => anyhow::bail!(message),
            Err(Attempt::NotStarted(message)) => {
                eprintln!("zpanel: {message}");
                return Ok(127);
            }
            Err(Attempt::OutputClosed) => return Ok(128 + 13),
            Err(Attempt::Lost(reason)) => {
                if state.exec_id.is_none() {
                    anyhow::bail!("{reason}");
                }
                let Some(delay) = reconnect.lost() else {
                    anyhow::bail!(
                        "lost the connection to the command on {} and could not resume: {reason}",
                        options.host
                    );
                };
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn exec_exit_code(options: &ExecOptions, state: &State, exit: &ProcessExit) -> i32 {
    if state.cancelled {
        return 130;
    }
    if exit.timed_out {
        let after = options
            .timeout
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_default();
        eprintln!(
            "zpanel: command timed out after {after} on {}",
            options.host
        );
        return 124;
    }
    exit_code(exit)
}

struct State {
    exec_id: Option<String>,
    host_id: String,
    stdout: Output,
    stderr: Output,
    exit: Option<ProcessExit>,
    cancelled: bool,
}

enum Attempt {
    /// The connection dropped; resume if the command had started.
    Lost(String),
    /// Nothing to retry.
    Fatal(String),
    /// The host could not start the command (exit 127, as a shell does).
    NotStarted(String),
    /// Our own stdout or stderr was closed (`| head`): the command was cancelled; exit
    /// quietly as a process killed by SIGPIPE would.
    OutputClosed,
}

fn client_message(body: exec_client_message::Body) -> ExecClientMessage {
    ExecClientMessage { body: Some(body) }
}

/// Asks for the remote command to be cancelled (SIGTERM, then SIGKILL).
async fn cancel(tx: &mpsc::Sender<ExecClientMessage>) {
    let _ = tx
        .send(client_message(exec_client_message::Body::Cancel(
            ExecCancel {},
        )))
        .await;
}

/// One connection's worth of the exec.
async fn attempt(
    settings: &Settings,
    options: &ExecOptions,
    state: &mut State,
    stdin: &Arc<SharedReplay>,
    interrupts: &mut tokio::signal::unix::Signal,
    reconnect: &mut Reconnect,
) -> Result<ProcessExit, Attempt> {
    let mut client = client::connect(settings)
        .await
        .map_err(|e| Attempt::Lost(format!("{e:#}")))?;
    let (tx, requests) = request_stream(64);
    let first = match &state.exec_id {
        None => exec_client_message::Body::Open(ExecOpen {
            host: options.host.clone(),
            argv: options.argv.clone(),
            timeout_ms: options.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        }),
        Some(exec_id) => exec_client_message::Body::Resume(ExecResume {
            host: state.host_id.clone(),
            exec_id: exec_id.clone(),
            stdout_offset: state.stdout.next(),
            stderr_offset: state.stderr.next(),
        }),
    };
    let _ = tx.send(client_message(first)).await;
    let failed = |status: tonic::Status| match status.code() {
        code if is_transient(code) => Attempt::Lost(status_message(&status)),
        Code::FailedPrecondition => Attempt::NotStarted(status_message(&status)),
        _ => Attempt::Fatal(status_message(&status)),
    };
    let mut responses = client.exec(requests).await.map_err(failed)?.into_inner();
    let first = first_reply(&mut responses).await.map_err(failed)?;
    let Some(exec_server_message::Body::Started(started)) = first.body else {
        return Err(Attempt::Fatal(
            "the control plane did not start the command".into(),
        ));
    };
    reconnect.connected();
    state.exec_id = Some(started.exec_id);
    state.host_id = started.host_id;
    if state.cancelled {
        cancel(&tx).await;
    }
    let stdin_pump = tokio::spawn(send_stream(
        stdin.clone(),
        StreamKind::Stdin,
        started.stdin_offset,
        tx.clone(),
        |chunk| client_message(exec_client_message::Body::Stdin(chunk)),
    ));
    let result = receive(&mut responses, &tx, state, stdin, interrupts).await;
    stdin_pump.abort();
    if result.is_ok() {
        // Half-close so the control plane releases the job, then wait for it to finish.
        drop(tx);
        drain(&mut responses).await;
    }
    result
}

async fn receive(
    responses: &mut tonic::Streaming<zpanel_proto::ExecServerMessage>,
    tx: &mpsc::Sender<ExecClientMessage>,
    state: &mut State,
    stdin: &SharedReplay,
    interrupts: &mut tokio::signal::unix::Signal,
) -> Result<ProcessExit, Attempt> {
    use exec_server_message::Body;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut ack_due = false;
    loop {
        if let Some(exit) = state
            .exit
            .filter(|_| state.stdout.is_finished() && state.stderr.is_finished())
        {
            send_acks(tx, state, true).await;
            return Ok(exit);
        }
        let message = tokio::select! {
            message = responses.message() => message,
            _ = tokio::time::sleep(ACK_DELAY), if ack_due => {
                send_acks(tx, state, true).await;
                ack_due = false;
                continue;
            }
            _ = interrupts.recv() => {
                if state.cancelled {
                    // a second Ctrl-C: stop waiting for the remote side
                    return Err(Attempt::Fatal("interrupted".into()));
                }
                state.cancelled = true;
                cancel(tx).await;
                continue;
            }
        };
        match message {
            Ok(Some(message)) => match message.body {
                Some(Body::Output(chunk)) => {
                    let written = match chunk.stream() {
                        StreamKind::Stdout => {
                            write_chunk(&mut stdout, &mut state.stdout, chunk).await
                        }
                        StreamKind::Stderr => {
                            write_chunk(&mut stderr, &mut state.stderr, chunk).await
                        }
                        StreamKind::Stdin => Ok(()),
                    };
                    if let Err(e) = written {
                        cancel(tx).await;
                        return Err(e);
                    }
                    send_acks(tx, state, false).await;
                    ack_due = true;
                }
                Some(Body::StdinAck(ack)) => {
                    let _ = stdin.with(|buffer| buffer.ack(ack.offset));
                }
                Some(Body::Exit(exit)) => state.exit = Some(exit),
                Some(Body::Started(_)) | None => {}
            },
            Ok(None) => return Err(Attempt::Lost("the control plane ended the stream".into())),
            Err(status) if is_transient(status.code()) => {
                return Err(Attempt::Lost(status_message(&status)));
            }
            Err(status) => return Err(Attempt::Fatal(status_message(&status))),
        }
    }
}

async fn write_chunk(
    out: &mut (impl AsyncWrite + Unpin),
    output: &mut Output,
    chunk: StreamChunk,
) -> Result<(), Attempt> {
    match output.write(out, chunk).await {
        Ok(_) => Ok(()),
        Err(WriteError::Broken(e)) => Err(Attempt::Fatal(format!("output stream broken: {e}"))),
        Err(WriteError::Closed(_)) => Err(Attempt::OutputClosed),
    }
}

/// Acknowledges written output: always when `all`, else once enough has accumulated.
async fn send_acks(tx: &mpsc::Sender<ExecClientMessage>, state: &mut State, all: bool) {
    for (kind, output) in [
        (StreamKind::Stdout, &mut state.stdout),
        (StreamKind::Stderr, &mut state.stderr),
    ] {
        if let Some(offset) = output.ack_due(all) {
            let ack = StreamAck {
                stream: kind as i32,
                offset,
            };
            let _ = tx
                .send(client_message(exec_client_message::Body::Ack(ack)))
                .await;
        }
    }
}

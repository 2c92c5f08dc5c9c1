//! `zpanel exec`: runs a command on a host and streams its stdin, stdout and stderr. If the
//! connection to the control plane drops after the command started (a control-plane
//! restart, a network cut), it re-attaches from the offsets it has and carries on, so the
//! output arrives whole, in order and once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Code;
use zpanel_proto::{
    ExecCancel, ExecClientMessage, ExecOpen, ExecResume, ProcessExit, StreamAck, StreamChunk,
    StreamKind, exec_client_message, exec_server_message,
};
use zpanel_shared::backoff::Backoff;
use zpanel_shared::frame::MAX_CHUNK_BYTES;
use zpanel_shared::replay::{DEFAULT_WINDOW_BYTES, InboundCursor, SharedReplay, StreamSender};

use crate::client::{self, status_message};
use crate::config::Settings;

/// Acknowledge output at least this often (bytes), and whenever the stream goes quiet.
const ACK_EVERY: u64 = 256 * 1024;
const ACK_DELAY: Duration = Duration::from_millis(2);

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
        tokio::spawn(read_stdin(stdin.clone()));
    } else {
        stdin.with(|buffer| buffer.finish());
    }
    let mut state = State {
        exec_id: None,
        host_id: String::new(),
        stdout: Output::new(),
        stderr: Output::new(),
        exit: None,
        cancelled: false,
    };
    let mut lost_since: Option<Instant> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match attempt(settings, &options, &mut state, &stdin, &mut interrupts).await {
            Ok(exit) => return Ok(exit_code(&options, &state, &exit)),
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
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > options.resume_for {
                    anyhow::bail!(
                        "lost the connection to the command on {} and could not resume: {reason}",
                        options.host
                    );
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

fn exit_code(options: &ExecOptions, state: &State, exit: &ProcessExit) -> i32 {
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
    if exit.signal != 0 {
        128 + exit.signal
    } else {
        exit.code
    }
}

struct Output {
    cursor: InboundCursor,
    acked: u64,
    eof: bool,
}

impl Output {
    fn new() -> Self {
        Output {
            cursor: InboundCursor::default(),
            acked: 0,
            eof: false,
        }
    }
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

fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal | Code::Aborted
    )
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
) -> Result<ProcessExit, Attempt> {
    let mut client = client::connect(settings)
        .await
        .map_err(|e| Attempt::Lost(format!("{e:#}")))?;
    let (tx, rx) = mpsc::channel(64);
    let first = match &state.exec_id {
        None => exec_client_message::Body::Open(ExecOpen {
            host: options.host.clone(),
            argv: options.argv.clone(),
            timeout_ms: options.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        }),
        Some(exec_id) => exec_client_message::Body::Resume(ExecResume {
            host: state.host_id.clone(),
            exec_id: exec_id.clone(),
            stdout_offset: state.stdout.cursor.next(),
            stderr_offset: state.stderr.cursor.next(),
        }),
    };
    let _ = tx.send(client_message(first)).await;
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let failed = |status: tonic::Status| match status.code() {
        code if is_transient(code) => Attempt::Lost(status_message(&status)),
        Code::FailedPrecondition => Attempt::NotStarted(status_message(&status)),
        _ => Attempt::Fatal(status_message(&status)),
    };
    let mut responses = client.exec(requests).await.map_err(failed)?.into_inner();
    let started = match responses.message().await {
        Ok(Some(message)) => match message.body {
            Some(exec_server_message::Body::Started(started)) => started,
            _ => {
                return Err(Attempt::Fatal(
                    "the control plane did not start the command".into(),
                ));
            }
        },
        Ok(None) => return Err(Attempt::Lost("the control plane closed the stream".into())),
        Err(status) => return Err(failed(status)),
    };
    state.exec_id = Some(started.exec_id);
    state.host_id = started.host_id;
    if state.cancelled {
        cancel(&tx).await;
    }
    let stdin_pump = tokio::spawn(send_stdin(stdin.clone(), started.stdin_offset, tx.clone()));
    let result = receive(&mut responses, &tx, state, stdin, interrupts).await;
    stdin_pump.abort();
    if result.is_ok() {
        // Half-close so the control plane releases the job, then wait for it to finish.
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = responses.message().await {}
        })
        .await;
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
        if let Some(exit) = state.exit.filter(|_| state.stdout.eof && state.stderr.eof) {
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
    let end = chunk.offset.saturating_add(chunk.payload.len() as u64);
    let fresh = output
        .cursor
        .accept(chunk.offset, chunk.payload)
        .map_err(|e| Attempt::Fatal(format!("output stream broken: {e}")))?;
    if !fresh.is_empty() && (out.write_all(&fresh).await.is_err() || out.flush().await.is_err()) {
        return Err(Attempt::OutputClosed);
    }
    if chunk.eof && end == output.cursor.next() {
        output.eof = true;
    }
    Ok(())
}

/// Acknowledges written output: always when `all`, else once enough has accumulated.
async fn send_acks(tx: &mpsc::Sender<ExecClientMessage>, state: &mut State, all: bool) {
    for (kind, output) in [
        (StreamKind::Stdout, &mut state.stdout),
        (StreamKind::Stderr, &mut state.stderr),
    ] {
        let next = output.cursor.next();
        if next > output.acked && (all || next - output.acked >= ACK_EVERY) {
            output.acked = next;
            let ack = StreamAck {
                stream: kind as i32,
                offset: next,
            };
            let _ = tx
                .send(client_message(exec_client_message::Body::Ack(ack)))
                .await;
        }
    }
}

/// Local stdin into the replay buffer (kept until the host acknowledges it).
async fn read_stdin(buffer: Arc<SharedReplay>) {
    let mut stdin = tokio::io::stdin();
    loop {
        let space = buffer.wait_space().await;
        let mut chunk = vec![0u8; space.min(MAX_CHUNK_BYTES)];
        match stdin.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                chunk.truncate(n);
                buffer.with(|b| b.push(Bytes::from(chunk)));
            }
        }
    }
    buffer.with(|b| b.finish());
}

/// Sends stdin from `offset` on this connection, within the window and frame limits.
async fn send_stdin(buffer: Arc<SharedReplay>, offset: u64, tx: mpsc::Sender<ExecClientMessage>) {
    // The host holds everything below `offset`: it never needs to be sent again.
    let _ = buffer.with(|b| b.ack(offset));
    let mut sender = StreamSender::new(StreamKind::Stdin, offset);
    while let Ok(Some(chunk)) = sender.next(&buffer).await {
        let message = client_message(exec_client_message::Body::Stdin(chunk));
        if tx.send(message).await.is_err() {
            return;
        }
    }
}

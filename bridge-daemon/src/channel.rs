//! A channel's attachment to what outlives it (an exec job or a terminal session), to a
//! file transfer or to a Docker stream, and the task that serves it: the open result, output
//! streams from their offsets, input acknowledgements and the end (an exit, a write's
//! verdict, a watch's changes, a pull's outcome, an upgrade's). Exec, terminal, file, Docker
//! and upgrade channels share all of it.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use zpanel_proto::frame::Body;
use zpanel_proto::{
    ChannelAck, ChannelData, ExecExited, OpenError, OpenResult, ProcessExit, StreamAck,
    StreamChunk, StreamKind, TerminalSize, open, open_result,
};
use zpanel_shared::replay::{SharedReplay, StreamSender};

use crate::config::{Capability, Policy};
use crate::docker::DockerChannel;
use crate::exec::{ExecError, ExecJob};
use crate::files::FileChannel;
use crate::terminal::{TerminalError, Viewer};
use crate::upgrade::UpgradeChannel;

/// What a channel is attached to. Jobs and terminal sessions outlive the channel; the
/// attachment is what ends with it. A file or Docker channel's work ends with it.
pub(crate) enum Target {
    Exec {
        job: Arc<ExecJob>,
        number: u64,
    },
    Terminal(Viewer),
    File(Arc<FileChannel>),
    Docker(Arc<DockerChannel>),
    /// A new daemon binary coming in.
    Upgrade(Arc<UpgradeChannel>),
}

impl Target {
    pub fn output(&self, kind: StreamKind) -> Option<&SharedReplay> {
        match self {
            Target::Exec { job, .. } => job.stream(kind),
            Target::Terminal(viewer) => {
                (kind == StreamKind::Stdout).then(|| viewer.session().output())
            }
            Target::File(file) => file.output(kind),
            Target::Docker(docker) => docker.output(kind),
            Target::Upgrade(_) => None,
        }
    }

    /// Offset of an output stream's first byte on the wire (a file read's offset in the
    /// file); the stream's buffer counts from 0.
    fn origin(&self) -> u64 {
        match self {
            Target::File(file) => file.origin(),
            Target::Exec { .. } | Target::Terminal(_) | Target::Docker(_) | Target::Upgrade(_) => 0,
        }
    }

    /// Prepares a channel whose work starts with it (a file transfer, a Docker stream): the
    /// answer and the output streams to send, or the refusal.
    pub async fn prepare(
        &self,
        channel_id: u64,
    ) -> Result<(OpenResult, Vec<StreamSender>), OpenResult> {
        match self {
            Target::File(file) => file.prepare().await.map_err(|f| f.refusal(channel_id)),
            Target::Docker(docker) => docker.prepare().await.map_err(|f| f.refusal(channel_id)),
            Target::Upgrade(upgrade) => {
                upgrade
                    .prepare()
                    .await
                    .map_err(|(error, message)| OpenResult {
                        channel_id,
                        error: error as i32,
                        message,
                        ..OpenResult::default()
                    })
            }
            Target::Exec { .. } | Target::Terminal(_) => Ok((OpenResult::default(), Vec::new())),
        }
    }

    /// Resolves with the reason when the channel's work failed midway (a read that could
    /// not go on, an engine that went away); the channel is then closed with it.
    pub async fn failed(&self) -> String {
        match self {
            Target::File(file) => file.failed().await,
            Target::Docker(docker) => docker.failed().await,
            Target::Exec { .. } | Target::Terminal(_) | Target::Upgrade(_) => {
                std::future::pending().await
            }
        }
    }

    /// What the channel sends once its output is complete: the exit of a process, the
    /// verdict of a file write, the changes of a watch, Docker updates and outcomes.
    async fn finish(&self, channel_id: u64, outbound: &mpsc::Sender<Body>) -> Option<()> {
        let mut exit: watch::Receiver<Option<ProcessExit>> = match self {
            Target::Exec { job, .. } => job.exit(),
            Target::Terminal(viewer) => viewer.session().exit(),
            Target::File(file) => return file.finish(channel_id, outbound).await,
            Target::Docker(docker) => return docker.finish(channel_id, outbound).await,
            Target::Upgrade(upgrade) => return upgrade.finish(channel_id, outbound).await,
        };
        let exit = *exit.wait_for(Option::is_some).await.ok()?;
        outbound
            .send(Body::ExecExited(ExecExited { channel_id, exit }))
            .await
            .ok()
    }

    /// Input bytes written, for the attachments that send input.
    pub fn input_written(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Target::Exec { job, .. } => Some(job.stdin_written()),
            Target::Terminal(viewer) if viewer.is_controller() => {
                Some(viewer.session().input_written())
            }
            Target::Terminal(_) => None,
            Target::File(file) => file.input_written(),
            Target::Docker(docker) => docker.input_written(),
            Target::Upgrade(upgrade) => upgrade.input_written(),
        }
    }

    /// Input from the client; an error closes the channel with its message.
    pub fn input(&self, chunk: StreamChunk) -> Result<(), String> {
        match self {
            Target::File(file) => file.input(chunk),
            Target::Docker(docker) => docker.input(chunk),
            Target::Upgrade(upgrade) => upgrade.input(chunk),
            _ if chunk.stream() != StreamKind::Stdin => {
                Err("only stdin may be sent to a command or a terminal".into())
            }
            Target::Exec { job, .. } => job
                .stdin(chunk.offset, chunk.payload, chunk.eof)
                .map_err(|e| e.to_string()),
            Target::Terminal(viewer) => viewer
                .input(chunk.offset, chunk.payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// An acknowledgement of output; an error closes the channel with its message.
    pub fn ack(&self, ack: StreamAck) -> Result<(), String> {
        match self {
            Target::Exec { .. } | Target::Docker(_) | Target::Upgrade(_) => {
                match self.output(ack.stream()) {
                    Some(stream) => stream.with(|buffer| buffer.ack(ack.offset)),
                    None => Ok(()),
                }
                .map_err(|e| e.to_string())
            }
            Target::Terminal(viewer) if ack.stream() == StreamKind::Stdout => {
                viewer.ack(ack.offset).map_err(|e| e.to_string())
            }
            Target::Terminal(_) => Ok(()),
            Target::File(file) => file.ack(ack),
        }
    }

    pub fn signal(&self, signal: i32) {
        match self {
            Target::Exec { job, .. } => job.signal(signal),
            Target::Terminal(_) | Target::File(_) | Target::Docker(_) | Target::Upgrade(_) => {
                tracing::debug!("signal for a terminal, file, docker or upgrade channel ignored")
            }
        }
    }

    pub fn resize(&self, size: &TerminalSize) {
        match self {
            Target::Terminal(viewer) => {
                if let Err(e) = viewer.resize(size) {
                    tracing::debug!("resize ignored: {e}");
                }
            }
            Target::Exec { .. } | Target::File(_) | Target::Docker(_) | Target::Upgrade(_) => {
                tracing::debug!("resize for an exec, file, docker or upgrade channel ignored")
            }
        }
    }

    pub fn detach(&self, release: bool) {
        match self {
            Target::Exec { job, number } => job.detach(*number, release),
            Target::Terminal(viewer) => viewer.detach(release),
            Target::File(file) => file.detach(),
            Target::Docker(docker) => docker.detach(),
            // an upgrade goes on: once the binary is in, it is swapped in whoever listens
            Target::Upgrade(_) => {}
        }
    }

    /// Why attaching `self` closes `other`'s channel, if it does: one attachment per exec
    /// job, one controller per terminal session.
    pub fn replaces(&self, other: &Target) -> Option<String> {
        match (self, other) {
            (Target::Exec { job, .. }, Target::Exec { job: old, .. }) if job.id == old.id => {
                Some("superseded by a newer attachment".into())
            }
            (Target::Terminal(viewer), Target::Terminal(old)) if viewer.replaces(old) => {
                Some(TerminalError::Replaced.to_string())
            }
            (Target::File(file), Target::File(old)) => file.replaces(old),
            _ => None,
        }
    }
}

/// Resolves with the reason once a channel's work records why it stopped midway (a read
/// that could not go on, an engine gone); never otherwise.
pub(crate) async fn failure(failed: &watch::Sender<Option<String>>) -> String {
    let mut failed = failed.subscribe();
    let reason = failed
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|reason| reason.clone());
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// A channel's attachment, the first answer and where its output streams start.
pub(crate) struct Attached {
    pub target: Target,
    pub opened: OpenResult,
    pub senders: Vec<StreamSender>,
}

impl Attached {
    pub fn exec(job: Arc<ExecJob>, stdout_from: u64, stderr_from: u64) -> Attached {
        let opened = OpenResult {
            stdin_offset: job.stdin_offset(),
            ..OpenResult::default()
        };
        Attached {
            target: Target::Exec {
                number: job.attach(),
                job,
            },
            opened,
            senders: vec![
                StreamSender::new(StreamKind::Stdout, stdout_from),
                StreamSender::new(StreamKind::Stderr, stderr_from),
            ],
        }
    }

    pub fn terminal(viewer: Viewer) -> Attached {
        let session = viewer.session();
        let opened = OpenResult {
            stdin_offset: session.input_offset(),
            output_offset: viewer.output_from(),
            reply: Some(open_result::Reply::Terminal(session.info())),
            ..OpenResult::default()
        };
        Attached {
            senders: vec![viewer.output_sender()],
            target: Target::Terminal(viewer),
            opened,
        }
    }
}

/// A refused open: the error and its one-line message.
pub(crate) type Refusal = (OpenError, String);

/// Whether the host's policy lets a channel open, with `open_now` channels already open on
/// the session: the one check of `[policy]` in `bridge.toml`, made before anything starts.
pub(crate) fn admit(
    policy: &Policy,
    request: &open::Request,
    open_now: usize,
) -> Result<(), Refusal> {
    let capability = capability_of(request);
    if !policy.offers(capability) {
        let message = format!(
            "this host's policy does not offer {} ({:?} is not in bridge.toml [policy] capabilities)",
            capability.offers(),
            capability.name()
        );
        return Err((OpenError::Forbidden, message));
    }
    if open_now >= policy.max_channels {
        let max = policy.max_channels;
        let channels = if max == 1 { "channel" } else { "channels" };
        let message = format!(
            "this host already has {max} {channels} open, the most its policy allows \
             (bridge.toml [policy] max_channels)"
        );
        return Err((OpenError::Refused, message));
    }
    Ok(())
}

/// What an open request uses of what the host offers.
fn capability_of(request: &open::Request) -> Capability {
    match request {
        open::Request::ExecStart(_) | open::Request::ExecAttach(_) => Capability::Exec,
        open::Request::TerminalOpen(_)
        | open::Request::TerminalAttach(_)
        | open::Request::TerminalList(_)
        | open::Request::TerminalKill(_) => Capability::Terminal,
        open::Request::File(_)
        | open::Request::FileRead(_)
        | open::Request::FileWrite(_)
        | open::Request::FileWatch(_) => Capability::Files,
        open::Request::Docker(_)
        | open::Request::DockerLogs(_)
        | open::Request::DockerStats(_)
        | open::Request::DockerEvents(_)
        | open::Request::DockerPull(_)
        | open::Request::DockerImport(_) => Capability::Docker,
        open::Request::Processes(_) => Capability::Metrics,
        open::Request::Upgrade(_) => Capability::Upgrade,
    }
}

pub(crate) fn exec_refusal(e: ExecError) -> Refusal {
    let error = match e {
        ExecError::NotFound(_) => OpenError::NotFound,
        ExecError::Spawn(_) => OpenError::SpawnFailed,
        ExecError::Stream(_) => OpenError::ReplayLost,
        _ => OpenError::BadRequest,
    };
    (error, e.to_string())
}

pub(crate) fn terminal_refusal(e: TerminalError) -> Refusal {
    let error = match e {
        TerminalError::NotFound(_) => OpenError::NotFound,
        TerminalError::Spawn { .. } | TerminalError::Account(_) => OpenError::SpawnFailed,
        TerminalError::NotOwner(_)
        | TerminalError::TooManySessions(_)
        | TerminalError::TooManyWatchers(_) => OpenError::Refused,
        _ => OpenError::BadRequest,
    };
    (error, e.to_string())
}

/// Serves one channel: the open result, every output stream from its offset, input
/// acknowledgements, and what follows the output (see [`Target::finish`]).
pub(crate) async fn serve_channel(
    target: &Target,
    channel_id: u64,
    opened: OpenResult,
    senders: Vec<StreamSender>,
    outbound: &mpsc::Sender<Body>,
) -> Option<()> {
    outbound.send(Body::OpenResult(opened)).await.ok()?;
    let output = async {
        let pumps = senders
            .into_iter()
            .map(|sender| pump(target, sender, channel_id, outbound));
        for pumped in futures_util::future::join_all(pumps).await {
            pumped?;
        }
        target.finish(channel_id, outbound).await
    };
    let input_acks = async {
        let Some(mut written) = target.input_written() else {
            return std::future::pending().await;
        };
        loop {
            let offset = *written.borrow_and_update();
            let ack = StreamAck {
                stream: StreamKind::Stdin as i32,
                offset,
            };
            if offset > 0 {
                outbound
                    .send(Body::Ack(ChannelAck {
                        channel_id,
                        ack: Some(ack),
                    }))
                    .await
                    .ok()?;
            }
            written.changed().await.ok()?;
        }
    };
    tokio::select! {
        done = output => done,
        none = input_acks => none,
    }
}

/// Sends one output stream; ends after the end-of-stream chunk.
async fn pump(
    target: &Target,
    mut sender: StreamSender,
    channel_id: u64,
    outbound: &mpsc::Sender<Body>,
) -> Option<()> {
    let stream = target.output(sender.kind())?;
    let origin = target.origin();
    loop {
        match sender.next(stream).await {
            Ok(Some(mut chunk)) => {
                chunk.offset += origin;
                let data = ChannelData {
                    channel_id,
                    chunk: Some(chunk),
                };
                outbound.send(Body::Data(data)).await.ok()?;
            }
            Ok(None) => return Some(()),
            Err(e) => {
                tracing::warn!(channel_id, "output stream: {e}");
                return None;
            }
        }
    }
}

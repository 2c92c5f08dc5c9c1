//! Docker channels that stream: a container's logs on STDOUT and STDERR (flow-controlled
//! and acknowledged like exec output), stats samples and engine events as `DockerUpdated`
//! frames while the channel is open, a pull's progress then `DockerDone`, and an import that
//! takes a tarball on STDIN then says `DockerDone`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, EventsOptions, InspectContainerOptions, LogsOptionsBuilder,
    StatsOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zpanel_proto::docker_reply::Result as Reply;
use zpanel_proto::docker_update::Update;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    DockerDone, DockerError, DockerEventsWatch, DockerImport, DockerLogs, DockerOutcome,
    DockerPull, DockerReply, DockerStatsWatch, DockerUpdate, DockerUpdated, OpenResult,
    PullProgress, StreamChunk, StreamKind,
};
use zpanel_shared::replay::{DEFAULT_WINDOW_BYTES, SharedReplay, StreamSender};

use super::{Docker, DockerFailure, convert, image_name, object_name};
use crate::input::{Input, InputCommand, InputWriter};

/// Log bytes taken together from what the engine already sent, per stream.
const LOG_BATCH_BYTES: usize = zpanel_shared::frame::MAX_CHUNK_BYTES;

/// Progress of one layer is sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How long an import may take to be answered: the engine may answer only once it has the
/// whole tarball, however long sending it takes.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// What a Docker channel streams.
enum Stream {
    Logs(Box<Logs>),
    Stats {
        container: String,
    },
    Events,
    Pull {
        image: String,
    },
    Import {
        image: String,
        input: OnceLock<Input>,
        done: watch::Sender<Option<DockerOutcome>>,
    },
}

/// A container's logs and the two streams they go to.
struct Logs {
    request: DockerLogs,
    stdout: SharedReplay,
    stderr: SharedReplay,
}

/// A channel that streams from the engine. It is attached when the open arrives and
/// prepared (the engine reached, the container found) before the answer.
pub struct DockerChannel {
    docker: Arc<Docker>,
    stream: Stream,
    /// The channel closed: stops the logs, abandons the import.
    cancel: CancellationToken,
    /// Why the stream stopped before its end (the engine went away, the container is gone).
    failed: watch::Sender<Option<String>>,
}

impl DockerChannel {
    fn new(docker: &Arc<Docker>, stream: Stream) -> Arc<DockerChannel> {
        Arc::new(DockerChannel {
            docker: docker.clone(),
            stream,
            cancel: CancellationToken::new(),
            failed: watch::Sender::new(None),
        })
    }

    pub fn logs(docker: &Arc<Docker>, request: DockerLogs) -> Arc<DockerChannel> {
        let stream = Stream::Logs(Box::new(Logs {
            request,
            stdout: SharedReplay::new(DEFAULT_WINDOW_BYTES),
            stderr: SharedReplay::new(DEFAULT_WINDOW_BYTES),
        }));
        DockerChannel::new(docker, stream)
    }

    pub fn stats(docker: &Arc<Docker>, request: DockerStatsWatch) -> Arc<DockerChannel> {
        let stream = Stream::Stats {
            container: request.container,
        };
        DockerChannel::new(docker, stream)
    }

    pub fn events(docker: &Arc<Docker>, _: DockerEventsWatch) -> Arc<DockerChannel> {
        DockerChannel::new(docker, Stream::Events)
    }

    pub fn pull(docker: &Arc<Docker>, request: DockerPull) -> Arc<DockerChannel> {
        let stream = Stream::Pull {
            image: request.image,
        };
        DockerChannel::new(docker, stream)
    }

    pub fn import(docker: &Arc<Docker>, request: DockerImport) -> Arc<DockerChannel> {
        let stream = Stream::Import {
            image: request.image,
            input: OnceLock::new(),
            done: watch::Sender::new(None),
        };
        DockerChannel::new(docker, stream)
    }

    /// Reaches the engine, checks what the channel names and starts the work behind it;
    /// the answer and the output streams to send, or the refusal.
    pub async fn prepare(
        self: &Arc<Self>,
    ) -> Result<(OpenResult, Vec<StreamSender>), DockerFailure> {
        let client = self.docker.client().await?;
        let mut senders = Vec::new();
        match &self.stream {
            Stream::Logs(logs) => {
                self.find_container(&client, &logs.request.container)
                    .await?;
                tokio::spawn(self.clone().produce_logs(client));
                senders = vec![
                    StreamSender::new(StreamKind::Stdout, 0),
                    StreamSender::new(StreamKind::Stderr, 0),
                ];
            }
            Stream::Stats { container } => self.find_container(&client, container).await?,
            Stream::Events => {}
            Stream::Pull { image } => {
                reference(image)?;
            }
            Stream::Import { image, input, .. } => {
                let (repo, tag) = reference(image)?;
                if tag.is_empty() {
                    return Err(DockerFailure::invalid(format!(
                        "an import is named repo[:tag], not by digest: {image}"
                    )));
                }
                let (receiving, writer) = Input::new();
                let _ = input.set(receiving);
                tokio::spawn(self.clone().run_import(client, repo, tag, writer));
            }
        }
        Ok((OpenResult::default(), senders))
    }

    /// A container the channel needs, or NOT_FOUND.
    async fn find_container(
        &self,
        client: &bollard::Docker,
        container: &str,
    ) -> Result<(), DockerFailure> {
        object_name("container", container)?;
        client
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.docker.failure(&e))?;
        Ok(())
    }

    pub fn output(&self, kind: StreamKind) -> Option<&SharedReplay> {
        match (&self.stream, kind) {
            (Stream::Logs(logs), StreamKind::Stdout) => Some(&logs.stdout),
            (Stream::Logs(logs), StreamKind::Stderr) => Some(&logs.stderr),
            _ => None,
        }
    }

    pub fn input(&self, chunk: StreamChunk) -> Result<(), String> {
        let Stream::Import { input, .. } = &self.stream else {
            return Err("only an image import takes input".into());
        };
        if chunk.stream() != StreamKind::Stdin {
            return Err("only stdin may be sent to an image import".into());
        }
        let input = input
            .get()
            .ok_or("input arrived before the import was answered; wait for its answer")?;
        input
            .accept(chunk.offset, chunk.payload, chunk.eof)
            .map_err(|e| e.to_string())
    }

    /// Input bytes handed to the engine, for an import.
    pub fn input_written(&self) -> Option<watch::Receiver<u64>> {
        match &self.stream {
            Stream::Import { input, .. } => input.get().map(Input::written),
            _ => None,
        }
    }

    /// What the channel sends after its output: stats or events while it is open, a pull's
    /// progress and end, an import's end.
    pub async fn finish(&self, channel_id: u64, outbound: &mpsc::Sender<Body>) -> Option<()> {
        let frames = Frames {
            channel_id,
            outbound,
        };
        let ended = match &self.stream {
            Stream::Logs(_) => return Some(()),
            Stream::Stats { container } => {
                let reason = self.watch_stats(container, &frames).await?;
                format!("no more stats for container {container}: {reason}")
            }
            Stream::Events => {
                let reason = self.watch_events(&frames).await?;
                format!("no more engine events: {reason}")
            }
            Stream::Pull { image } => {
                let outcome = self.run_pull(image, &frames).await?;
                return frames.done(outcome).await;
            }
            Stream::Import { done, .. } => {
                let mut done = done.subscribe();
                let outcome = done.wait_for(Option::is_some).await.ok()?.clone()?;
                return frames.done(outcome).await;
            }
        };
        self.fail(ended);
        std::future::pending().await
    }

    /// Resolves with the reason when the stream stopped before its end; the channel is then
    /// closed with it.
    pub async fn failed(&self) -> String {
        crate::channel::failure(&self.failed).await
    }

    fn fail(&self, reason: String) {
        if !self.cancel.is_cancelled() {
            self.failed.send_replace(Some(reason));
        }
    }

    /// The channel closed.
    pub fn detach(&self) {
        self.cancel.cancel();
    }

    // === the work behind each kind ===

    /// Moves the container's log lines into the streams as their windows allow, so a reader
    /// that stops reading stops the engine's stream too; both end when the logs do.
    async fn produce_logs(self: Arc<Self>, client: bollard::Docker) {
        let Stream::Logs(logs) = &self.stream else {
            return;
        };
        let Logs {
            request,
            stdout,
            stderr,
        } = logs.as_ref();
        let mut options = LogsOptionsBuilder::new()
            .follow(request.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(request.timestamps)
            .since(i32::try_from(request.since).unwrap_or(i32::MAX));
        if let Some(tail) = request.tail {
            options = options.tail(&tail.to_string());
        }
        let mut logs = client.logs(&request.container, Some(options.build()));
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return,
                next = logs.next() => next,
            };
            // The engine sends a frame per line: what it already sent is taken together (up
            // to a chunk's size per stream), so a fast container costs a frame per chunk, not
            // one per line, on the way to the reader.
            let mut batch = [BytesMut::new(), BytesMut::new()];
            let mut next = Some(next);
            let ended = loop {
                let Some(item) = next.take() else {
                    break false;
                };
                match item {
                    Some(Ok(LogOutput::StdErr { message })) => batch[1].extend_from_slice(&message),
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        batch[0].extend_from_slice(&message)
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => {
                        let failure = self.docker.failure(&e);
                        return self.fail(format!(
                            "the logs of container {} stopped: {failure}",
                            request.container
                        ));
                    }
                    None => break true,
                }
                if batch.iter().all(|b| b.len() < LOG_BATCH_BYTES) {
                    next = match logs.next().now_or_never() {
                        Some(item) => Some(item),
                        // Once more after the runtime had a turn to read what the engine sent
                        // meanwhile.
                        None => {
                            tokio::task::yield_now().await;
                            logs.next().now_or_never()
                        }
                    };
                }
            };
            for (stream, bytes) in [stdout, stderr].into_iter().zip(batch) {
                if !self.push(stream, bytes.freeze()).await {
                    return;
                }
            }
            if ended {
                break;
            }
        }
        for stream in [stdout, stderr] {
            stream.with(|buffer| buffer.finish());
        }
    }

    /// Pushes bytes as the window allows; false when the channel closed meanwhile.
    async fn push(&self, stream: &SharedReplay, mut bytes: Bytes) -> bool {
        while !bytes.is_empty() {
            let space = tokio::select! {
                _ = self.cancel.cancelled() => return false,
                space = stream.wait_space() => space,
            };
            let piece = bytes.split_to(space.min(bytes.len()));
            stream.with(|buffer| buffer.push(piece));
        }
        true
    }

    /// Sends a sample about every second until the container stops; why it ended, or
    /// `None` when the channel can no longer send.
    async fn watch_stats(&self, container: &str, frames: &Frames<'_>) -> Option<String> {
        let client = match self.docker.client().await {
            Ok(client) => client,
            Err(failure) => return Some(failure.message),
        };
        let options = StatsOptionsBuilder::new().stream(true).build();
        let updates = client
            .stats(container, Some(options))
            .map(|sample| match sample {
                // The engine goes on sending empty samples for a container that stopped.
                Ok(sample) if convert::is_empty(&sample) => Err("it is not running".to_string()),
                Ok(sample) => Ok(Update::Stats(convert::stats(container, sample))),
                Err(e) => Err(self.docker.failure(&e).message),
            });
        self.forward(updates, frames).await
    }

    /// Sends the engine's events as they come; why they ended, or `None` when the channel
    /// can no longer send.
    async fn watch_events(&self, frames: &Frames<'_>) -> Option<String> {
        let client = match self.docker.client().await {
            Ok(client) => client,
            Err(failure) => return Some(failure.message),
        };
        let updates = client
            .events(None::<EventsOptions>)
            .map(|event| match event {
                Ok(event) => Ok(Update::Event(convert::event(event))),
                Err(e) => Err(self.docker.failure(&e).message),
            });
        self.forward(updates, frames).await
    }

    /// Sends every update until the stream ends or fails; why, or `None` when the channel
    /// can no longer send.
    async fn forward(
        &self,
        updates: impl futures_util::Stream<Item = Result<Update, String>>,
        frames: &Frames<'_>,
    ) -> Option<String> {
        let mut updates = std::pin::pin!(updates);
        while let Some(update) = updates.next().await {
            match update {
                Ok(update) => frames.update(update).await?,
                Err(reason) => return Some(reason),
            }
        }
        Some("the engine ended the stream".into())
    }

    /// Pulls an image, sending its progress (each layer's at most every 100 ms); how it
    /// ended, or `None` when the channel can no longer send.
    async fn run_pull(&self, image: &str, frames: &Frames<'_>) -> Option<DockerOutcome> {
        let (repo, tag) = match reference(image) {
            Ok(reference) => reference,
            Err(failure) => return Some(failure.outcome()),
        };
        let client = match self.docker.client().await {
            Ok(client) => client,
            Err(failure) => return Some(failure.outcome()),
        };
        let mut options = CreateImageOptionsBuilder::new().from_image(&repo);
        if !tag.is_empty() {
            options = options.tag(&tag);
        }
        let mut progress = client.create_image(Some(options.build()), None, None);
        let mut pending = Coalesced::default();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let failed = loop {
            tokio::select! {
                next = progress.next() => match next {
                    Some(Ok(info)) => {
                        if let Some(due) = pending.offer(convert::progress(info), Instant::now()) {
                            frames.update(Update::Progress(due)).await?;
                        }
                    }
                    Some(Err(e)) => break Some(self.docker.failure(&e)),
                    None => break None,
                },
                _ = tick.tick() => {
                    for due in pending.due(Instant::now()) {
                        frames.update(Update::Progress(due)).await?;
                    }
                }
            }
        };
        for last in pending.rest() {
            frames.update(Update::Progress(last)).await?;
        }
        if let Some(failure) = failed {
            return Some(failure.naming("pull", &full_name(&repo, &tag)).outcome());
        }
        Some(image_id(&self.docker, &client, &repo, &tag).await)
    }

    /// Streams the channel's input into the engine as an image, then records how it ended.
    /// An input that stops before its end (the channel closed) fails the import, so no
    /// partial image is made.
    async fn run_import(
        self: Arc<Self>,
        client: bollard::Docker,
        repo: String,
        tag: String,
        writer: InputWriter,
    ) {
        let Stream::Import { done, .. } = &self.stream else {
            return;
        };
        let tarball =
            futures_util::stream::unfold(Some((writer, self.cancel.clone())), |state| async move {
                let (mut writer, cancel) = state?;
                let command = tokio::select! {
                    _ = cancel.cancelled() => None,
                    command = writer.recv() => command,
                };
                match command {
                    Some(InputCommand::Data(bytes)) => {
                        writer.wrote(bytes.len());
                        Some((Ok(bytes), Some((writer, cancel))))
                    }
                    Some(InputCommand::Eof) => None,
                    None => {
                        let cut = std::io::Error::other("the tarball was cut off");
                        Some((Err(cut), None))
                    }
                }
            });
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(&repo)
            .tag(&tag)
            .build();
        let client = client.with_timeout(IMPORT_TIMEOUT);
        let mut progress =
            client.create_image(Some(options), Some(bollard::body_try_stream(tarball)), None);
        let mut failed = None;
        while let Some(next) = progress.next().await {
            if let Err(e) = next {
                let failure = self.docker.failure(&e);
                failed = Some(failure.naming("import", &full_name(&repo, &tag)).outcome());
                break;
            }
        }
        let outcome = match failed {
            Some(outcome) => outcome,
            None => image_id(&self.docker, &client, &repo, &tag).await,
        };
        done.send_replace(Some(outcome));
    }
}

/// The id of an image just pulled or imported, as its outcome.
async fn image_id(
    docker: &Docker,
    client: &bollard::Docker,
    repo: &str,
    tag: &str,
) -> DockerOutcome {
    match client.inspect_image(&full_name(repo, tag)).await {
        Ok(image) => DockerOutcome {
            error: DockerError::None as i32,
            message: String::new(),
            reply: Some(DockerReply {
                result: Some(Reply::ImageId(image.id.unwrap_or_default())),
            }),
        },
        Err(e) => docker.failure(&e).outcome(),
    }
}

/// An image reference from its repository and tag.
fn full_name(repo: &str, tag: &str) -> String {
    match tag {
        "" => repo.to_string(),
        tag => format!("{repo}:{tag}"),
    }
}

/// The repository and tag of an image reference: "busybox" is ("busybox", "latest"),
/// "registry:5000/team/app:1.2" is ("registry:5000/team/app", "1.2"); a reference by digest
/// keeps it in the repository, with no tag.
fn reference(image: &str) -> Result<(String, String), DockerFailure> {
    image_name(image)?;
    let (repository, tag) = zpanel_shared::image::split_reference(image);
    let tag = match tag {
        Some(tag) => tag,
        None if image.contains('@') => "",
        None => "latest",
    };
    Ok((repository.to_string(), tag.to_string()))
}

/// Where a channel's frames go.
struct Frames<'a> {
    channel_id: u64,
    outbound: &'a mpsc::Sender<Body>,
}

impl Frames<'_> {
    async fn update(&self, update: Update) -> Option<()> {
        let frame = DockerUpdated {
            channel_id: self.channel_id,
            update: Some(DockerUpdate {
                update: Some(update),
            }),
        };
        self.outbound.send(Body::DockerUpdate(frame)).await.ok()
    }

    async fn done(&self, outcome: DockerOutcome) -> Option<()> {
        let frame = DockerDone {
            channel_id: self.channel_id,
            outcome: Some(outcome),
        };
        self.outbound.send(Body::DockerDone(frame)).await.ok()
    }
}

/// Pull progress held back so each layer's is sent at most every [`PROGRESS_EVERY`]: the
/// newest of a layer waits until its time comes, and none is lost at the end.
#[derive(Default)]
struct Coalesced {
    /// Per layer: when its progress was last sent, and the newest not sent yet.
    layers: HashMap<String, (Instant, Option<PullProgress>)>,
}

impl Coalesced {
    /// The progress to send now, if its layer's time has come (else it waits).
    fn offer(&mut self, progress: PullProgress, now: Instant) -> Option<PullProgress> {
        match self.layers.get_mut(&progress.id) {
            Some((sent, waiting)) if now < *sent + PROGRESS_EVERY => {
                *waiting = Some(progress);
                None
            }
            _ => {
                self.layers.insert(progress.id.clone(), (now, None));
                Some(progress)
            }
        }
    }

    /// Waiting progress whose time has come.
    fn due(&mut self, now: Instant) -> Vec<PullProgress> {
        let mut due = Vec::new();
        for (sent, waiting) in self.layers.values_mut() {
            if now >= *sent + PROGRESS_EVERY
                && let Some(progress) = waiting.take()
            {
                *sent = now;
                due.push(progress);
            }
        }
        due
    }

    /// Everything still waiting, at the end.
    fn rest(&mut self) -> Vec<PullProgress> {
        self.layers
            .values_mut()
            .filter_map(|(_, waiting)| waiting.take())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        let split = |image: &str| reference(image).map_err(|f| f.message);
        assert_eq!(split("busybox"), Ok(("busybox".into(), "latest".into())));
        assert_eq!(split("busybox:1.36"), Ok(("busybox".into(), "1.36".into())));
        assert_eq!(
            split("registry:5000/team/app"),
            Ok(("registry:5000/team/app".into(), "latest".into()))
        );
        assert_eq!(
            split("ghcr.io/owner/name:tag"),
            Ok(("ghcr.io/owner/name".into(), "tag".into()))
        );
        assert_eq!(
            split("app@sha256:abc"),
            Ok(("app@sha256:abc".into(), String::new()))
        );
        assert!(split("").is_err());
        assert!(split("two words").is_err());
        assert!(split("busybox/../../containers/prune?").is_err());
    }

    #[tokio::test]
    async fn log_lines_wait_for_window_space() {
        let channel = DockerChannel::events(&Docker::new(String::new()), DockerEventsWatch {});
        let stream = SharedReplay::new(4);
        let pushed = channel.push(&stream, Bytes::from_static(b"0123456789"));
        tokio::pin!(pushed);
        for held_back in [4, 8] {
            let stalled = tokio::time::timeout(Duration::from_millis(100), &mut pushed).await;
            assert!(stalled.is_err(), "the window held back the line");
            assert_eq!(stream.with(|buffer| buffer.end()), held_back);
            stream.with(|buffer| buffer.ack(held_back)).unwrap();
        }
        assert!(pushed.await);
        assert_eq!(stream.with(|buffer| buffer.end()), 10);

        // a channel that closes stops the wait
        channel.detach();
        assert!(!channel.push(&stream, Bytes::from_static(b"more")).await);
    }

    #[test]
    fn progress_is_sent_at_most_every_100ms_per_layer_and_the_last_is_kept() {
        let progress = |id: &str, current: u64| PullProgress {
            id: id.into(),
            status: "Downloading".into(),
            current,
            total: 100,
        };
        let start = Instant::now();
        let mut pending = Coalesced::default();
        assert!(pending.offer(progress("a", 1), start).is_some());
        assert!(pending.offer(progress("b", 1), start).is_some());
        assert!(pending.offer(progress("a", 2), start).is_none());
        assert!(pending.offer(progress("a", 3), start).is_none());
        assert!(pending.due(start + Duration::from_millis(50)).is_empty());
        let due = pending.due(start + PROGRESS_EVERY);
        assert_eq!(due, [progress("a", 3)]);
        assert!(
            pending
                .offer(progress("a", 4), start + PROGRESS_EVERY)
                .is_none()
        );
        assert_eq!(pending.rest(), [progress("a", 4)]);
        assert!(pending.rest().is_empty());
    }
}

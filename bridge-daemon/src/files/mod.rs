//! The file service: requests answered at once, reads, writes and watches of files under
//! the served roots of `bridge.toml`. Paths are confined by the kernel (`resolve`); all file
//! I/O runs on blocking threads, never in the session's frame handler.

mod info;
mod ops;
mod resolve;
mod transfer;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::unistd::{User, geteuid};
use rustix::io::Errno;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch as signal};
use tokio_util::sync::CancellationToken;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    FileDone, FileError, FileRead, FileReply, FileRequest, FileWatch, FileWrite, FileWritten,
    OpenError, OpenResult, StreamAck, StreamChunk, StreamKind, file_reply, open_result,
};
use zpanel_shared::replay::{DEFAULT_WINDOW_BYTES, SharedReplay, StreamSender};

use self::resolve::{Roots, errno_text, shown};
use self::transfer::{Uploads, WriteEnd};
use self::watch::{WatchSlot, Watching};
use crate::input::Input;

/// Why a file operation was refused: the kind the control plane maps to a status, and one
/// lower-case line naming the path and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FileFailure {
    pub kind: FileError,
    pub message: String,
}

impl FileFailure {
    pub fn new(kind: FileError, message: impl Into<String>) -> FileFailure {
        FileFailure {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> FileFailure {
        FileFailure::new(FileError::Invalid, message)
    }

    /// A failed system call on `path`.
    pub fn from_errno(path: &str, errno: Errno) -> FileFailure {
        let path = shown(path);
        let (kind, message) = match errno {
            Errno::NOENT => (
                FileError::NotFound,
                format!("{path} does not exist; check the path or refresh the listing"),
            ),
            Errno::XDEV => (
                FileError::OutsideRoots,
                format!(
                    "{path} leads outside the directories this host serves (through .. or a \
                     symbolic link); use a path inside them"
                ),
            ),
            Errno::LOOP => (
                FileError::OutsideRoots,
                format!(
                    "{path} goes through too many symbolic links, or through one the daemon does \
                     not follow here"
                ),
            ),
            Errno::ACCESS | Errno::PERM => (
                FileError::Permission,
                format!("{path}: permission denied to the daemon's account"),
            ),
            Errno::ROFS => (
                FileError::Permission,
                format!("{path} is on a read-only file system"),
            ),
            Errno::NOTDIR => (
                FileError::NotADirectory,
                format!("{path}: it, or a directory above it, is not a directory"),
            ),
            Errno::ISDIR => (
                FileError::IsADirectory,
                format!("{path} is a directory; name a file"),
            ),
            Errno::EXIST => (
                FileError::Exists,
                format!("{path} already exists; choose another name or allow overwriting"),
            ),
            Errno::NOTEMPTY => (
                FileError::NotEmpty,
                format!("{path} is a directory that is not empty; delete it recursively"),
            ),
            Errno::NOSPC | Errno::DQUOT => (
                FileError::NoSpace,
                format!("no space left for {path}; free some space on the host and retry"),
            ),
            Errno::NAMETOOLONG => (
                FileError::Invalid,
                format!("{path}: a name in it is too long (255 bytes at most)"),
            ),
            Errno::INVAL => (FileError::Invalid, format!("{path}: invalid argument")),
            Errno::NOSYS => (
                FileError::Io,
                "this host's kernel lacks a system call the file service needs (linux 5.6 or \
                 newer is needed)"
                    .to_string(),
            ),
            e => (FileError::Io, format!("{path}: {}", errno_text(e))),
        };
        FileFailure { kind, message }
    }

    /// The refusal of an open: NOT_FOUND or REFUSED, with the file error and message.
    pub fn refusal(self, channel_id: u64) -> OpenResult {
        let error = match self.kind {
            FileError::NotFound => OpenError::NotFound,
            _ => OpenError::Refused,
        };
        OpenResult {
            channel_id,
            error: error as i32,
            message: self.message,
            file_error: self.kind as i32,
            ..OpenResult::default()
        }
    }
}

/// A name for a temporary file beside its target: `.zpanel-PURPOSE-RANDOM`.
fn temp_name(purpose: &str) -> String {
    format!(".zpanel-{purpose}-{:016x}", rand::random::<u64>())
}

/// Runs blocking file work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileFailure> + Send + 'static,
) -> Result<T, FileFailure> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(FileFailure::new(
            FileError::Io,
            format!("file work failed: {e}"),
        ))
    })
}

// === impl Files ===

/// The file service of this daemon.
pub struct Files {
    roots: Roots,
    /// Why files are not served at all (no openat2, no roots).
    unavailable: Option<String>,
    uploads: Uploads,
    watches: Arc<AtomicUsize>,
}

impl Files {
    /// Serves `roots`. A kernel without openat2, or no roots, leaves the service refusing
    /// every request with the reason; bad roots are a configuration error.
    pub fn new(roots: &[PathBuf]) -> Result<Arc<Files>, String> {
        let roots = Roots::new(roots)?;
        let unavailable = if roots.is_empty() {
            Some("this host serves no files: [files] roots in its bridge.toml is empty".to_string())
        } else {
            resolve::probe().err()
        };
        match &unavailable {
            Some(reason) => tracing::warn!("file service off: {reason}"),
            None => tracing::info!(roots = %roots.describe(), "serving files"),
        }
        Ok(Arc::new(Files {
            roots,
            unavailable,
            uploads: Uploads::default(),
            watches: Arc::default(),
        }))
    }

    /// The roots served when `bridge.toml` does not say: `/` for root, else the account's
    /// home.
    pub fn default_roots() -> Vec<PathBuf> {
        if geteuid().is_root() {
            return vec![PathBuf::from("/")];
        }
        let home = User::from_uid(geteuid())
            .ok()
            .flatten()
            .map(|user| user.dir)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
        home.into_iter().collect()
    }

    fn check(&self) -> Result<(), FileFailure> {
        match &self.unavailable {
            Some(reason) => Err(FileFailure::new(FileError::Permission, reason.clone())),
            None => Ok(()),
        }
    }

    /// A request answered at once.
    pub async fn request(self: &Arc<Self>, request: FileRequest) -> Result<FileReply, FileFailure> {
        self.check()?;
        let op = request.op.ok_or_else(|| {
            FileFailure::invalid(
                "empty file request: this daemon may be older than the control plane",
            )
        })?;
        let files = self.clone();
        blocking(move || ops::run(&files.roots, op)).await
    }

    /// Removes the temporary files of interrupted uploads nobody resumed in time, every
    /// minute, for the daemon's life.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let expired = self.uploads.expired();
            if !expired.is_empty() {
                tracing::info!(
                    uploads = expired.len(),
                    "removing interrupted uploads nobody resumed"
                );
                let _ = blocking(move || {
                    expired.iter().for_each(transfer::discard);
                    Ok(())
                })
                .await;
            }
        }
    }
}

/// The answer to a request answered at once.
pub fn answer(channel_id: u64, result: Result<FileReply, FileFailure>) -> OpenResult {
    match result {
        Ok(reply) => OpenResult {
            channel_id,
            reply: Some(open_result::Reply::File(reply)),
            ..OpenResult::default()
        },
        Err(failure) => failure.refusal(channel_id),
    }
}

fn info_reply(info: zpanel_proto::FileInfo) -> Option<open_result::Reply> {
    Some(open_result::Reply::File(FileReply {
        result: Some(file_reply::Result::Info(info)),
    }))
}

// === impl FileChannel ===

/// What a file channel streams.
enum Stream {
    Read {
        request: FileRead,
        output: SharedReplay,
    },
    Write {
        request: FileWrite,
        input: OnceLock<Input>,
        done: signal::Sender<Option<FileWritten>>,
        /// The content's sha256 from a `FileCommit`, checked at the commit.
        committed: signal::Sender<Option<String>>,
    },
    Watch {
        request: FileWatch,
        watching: Mutex<Option<Watching>>,
    },
}

/// A channel that reads, writes or watches a file. It is attached when the open arrives
/// and prepared (the path opened and checked) on a blocking thread before the answer.
pub struct FileChannel {
    files: Arc<Files>,
    stream: Stream,
    /// The channel closed: stops the read, keeps or removes the upload, ends the watch.
    cancel: CancellationToken,
    /// Why a read stopped before its end.
    failed: signal::Sender<Option<String>>,
}

impl FileChannel {
    fn new(files: &Arc<Files>, stream: Stream) -> Arc<FileChannel> {
        Arc::new(FileChannel {
            files: files.clone(),
            stream,
            cancel: CancellationToken::new(),
            failed: signal::Sender::new(None),
        })
    }

    pub fn read(files: &Arc<Files>, request: FileRead) -> Arc<FileChannel> {
        let output = SharedReplay::new(DEFAULT_WINDOW_BYTES);
        FileChannel::new(files, Stream::Read { request, output })
    }

    pub fn write(files: &Arc<Files>, request: FileWrite) -> Arc<FileChannel> {
        let stream = Stream::Write {
            request,
            input: OnceLock::new(),
            done: signal::Sender::new(None),
            committed: signal::Sender::new(None),
        };
        FileChannel::new(files, stream)
    }

    pub fn watch(files: &Arc<Files>, request: FileWatch) -> Arc<FileChannel> {
        let stream = Stream::Watch {
            request,
            watching: Mutex::new(None),
        };
        FileChannel::new(files, stream)
    }

    /// Opens and checks the path and starts the work behind the channel; the answer and
    /// the output streams to send, or the refusal.
    pub async fn prepare(self: &Arc<Self>) -> Result<(OpenResult, Vec<StreamSender>), FileFailure> {
        self.files.check()?;
        let roots = self.files.roots.clone();
        match &self.stream {
            Stream::Read { request, .. } => {
                let request = request.clone();
                let (info, source) =
                    blocking(move || transfer::open_read(&roots, &request)).await?;
                let channel = self.clone();
                let handle = Handle::current();
                tokio::task::spawn_blocking(move || {
                    let Stream::Read { output, .. } = &channel.stream else {
                        return;
                    };
                    if let Err(reason) = transfer::produce(source, output, &channel.cancel, &handle)
                        && !channel.cancel.is_cancelled()
                    {
                        channel.failed.send_replace(Some(reason));
                    }
                });
                let opened = OpenResult {
                    reply: info_reply(info),
                    ..OpenResult::default()
                };
                Ok((opened, vec![StreamSender::new(StreamKind::Stdout, 0)]))
            }
            Stream::Write {
                request,
                input,
                done,
                committed,
            } => {
                let slot = match request.upload_id.as_str() {
                    "" => None,
                    _ if request.tar => {
                        return Err(FileFailure::invalid(
                            "a tar upload cannot be resumed; leave upload_id empty",
                        ));
                    }
                    id => Some(self.files.uploads.claim(id).await?),
                };
                let request = request.clone();
                let (plan, slot) = {
                    let request = request.clone();
                    blocking(move || {
                        let mut slot = slot;
                        let mut none = None;
                        let kept = slot.as_deref_mut().unwrap_or(&mut none);
                        let plan = transfer::prepare_write(&roots, &request, kept)?;
                        Ok((plan, slot))
                    })
                    .await?
                };
                let (held, info) = (plan.held(), plan.info());
                let (receiving, writer) = Input::starting_at(held);
                let _ = input.set(receiving);
                let end = WriteEnd {
                    done: done.clone(),
                    slot,
                    committed: committed.subscribe(),
                };
                let channel = self.clone();
                let handle = Handle::current();
                tokio::task::spawn_blocking(move || {
                    transfer::write(plan, &request, writer, &channel.cancel, &handle, end);
                });
                let opened = OpenResult {
                    stdin_offset: held,
                    reply: info_reply(info),
                    ..OpenResult::default()
                };
                Ok((opened, Vec::new()))
            }
            Stream::Watch { request, watching } => {
                let slot = WatchSlot::take(&self.files.watches)?;
                let path = request.path.clone();
                let (info, started) = blocking(move || watch::start(&roots, &path, slot)).await?;
                *watching.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
                let opened = OpenResult {
                    reply: info_reply(info),
                    ..OpenResult::default()
                };
                Ok((opened, Vec::new()))
            }
        }
    }

    pub fn output(&self, kind: StreamKind) -> Option<&SharedReplay> {
        match &self.stream {
            Stream::Read { output, .. } if kind == StreamKind::Stdout => Some(output),
            _ => None,
        }
    }

    /// Where output offsets start: a read's offset in the file.
    pub fn origin(&self) -> u64 {
        match &self.stream {
            Stream::Read { request, .. } => request.offset,
            _ => 0,
        }
    }

    pub fn ack(&self, ack: StreamAck) -> Result<(), String> {
        let Some(output) = self.output(ack.stream()) else {
            return Ok(());
        };
        let offset = ack.offset.saturating_sub(self.origin());
        output
            .with(|buffer| buffer.ack(offset))
            .map_err(|e| e.to_string())
    }

    pub fn input(&self, chunk: StreamChunk) -> Result<(), String> {
        let Stream::Write { input, .. } = &self.stream else {
            return Err("only a file write takes input".into());
        };
        if chunk.stream() != StreamKind::Stdin {
            return Err("only stdin may be sent to a file write".into());
        }
        let input = input
            .get()
            .ok_or("input arrived before the write was answered; wait for its answer")?;
        input
            .accept(chunk.offset, chunk.payload, chunk.eof)
            .map_err(|e| e.to_string())
    }

    /// The content's sha256 from a `FileCommit` (sent before the end of input), checked
    /// at the commit like `FileWrite.sha256`. Never waits; false when this is not a write.
    pub fn commit(&self, sha256: String) -> bool {
        let Stream::Write { committed, .. } = &self.stream else {
            return false;
        };
        committed.send_replace(Some(sha256));
        true
    }

    /// Input bytes written, for a write.
    pub fn input_written(&self) -> Option<signal::Receiver<u64>> {
        match &self.stream {
            Stream::Write { input, .. } => input.get().map(Input::written),
            _ => None,
        }
    }

    /// What the channel sends after its output: a write's `FileDone`, a watch's changes.
    pub async fn finish(&self, channel_id: u64, outbound: &mpsc::Sender<Body>) -> Option<()> {
        match &self.stream {
            Stream::Read { .. } => Some(()),
            Stream::Write { done, .. } => {
                let mut done = done.subscribe();
                let result = done.wait_for(Option::is_some).await.ok()?.clone();
                outbound
                    .send(Body::FileDone(FileDone { channel_id, result }))
                    .await
                    .ok()
            }
            Stream::Watch { watching, .. } => {
                let started = watching.lock().unwrap_or_else(|p| p.into_inner()).take()?;
                started.forward(channel_id, outbound, &self.cancel).await;
                None
            }
        }
    }

    /// Resolves with the reason when the channel's work failed midway (a read that could
    /// not go on); the channel is then closed with it.
    pub async fn failed(&self) -> String {
        crate::channel::failure(&self.failed).await
    }

    /// The channel closed.
    pub fn detach(&self) {
        self.cancel.cancel();
    }

    /// Why this channel closes `other`: a newer write of the same upload takes it over.
    pub fn replaces(&self, other: &FileChannel) -> Option<String> {
        match (&self.stream, &other.stream) {
            (Stream::Write { request, .. }, Stream::Write { request: old, .. })
                if !request.upload_id.is_empty() && request.upload_id == old.upload_id =>
            {
                Some("a newer channel took over this upload".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

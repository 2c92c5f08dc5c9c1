//! Writing to hosts: the upload half of `cp` and `edit`. The content is read as it is sent,
//! at most one flow-control window ahead of what the host acknowledged, so memory stays
//! bounded whatever the size. The host writes it into a temporary file and renames it over
//! the target only once all of it arrived and its sha256 matched, so a failed upload leaves
//! the target as it was. Unless the write names its sha256 at `start` (`edit` knows it), the
//! content is hashed as it is read, in the same pass, and the hash goes to the host right
//! before the end of input (`WriteFileRequest.sha256`); the host's own hash in its answer
//! must match it too. An upload of a local file names an `upload_id`: after a dropped
//! connection it continues from what the host already holds (`accepted.offset`), and the
//! hash still covers the whole file (the part the host holds is read again to hash it).
//! Other sources (a local directory's tar, another host's file) start over.

use std::io::SeekFrom;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Code, Status};
use zpanel_proto::{
    FileError, FileInfo, FileWrite, FileWritten, StreamKind, WriteFileRequest, WriteFileStart,
    write_file_request, write_file_response,
};
use zpanel_shared::replay::{DEFAULT_WINDOW_BYTES, SharedReplay, StreamSender};

use super::download::{Download, Lost, Sink, gave_up};
use super::location::Remote;
use super::progress::Progress;
use super::tar::{self, Pack};
use super::{
    Changed, Interrupted, connection_lost, io_reason, local_error, reason, refused, written_reason,
};
use crate::client;
use crate::config::Settings;
use crate::streaming::{Reconnect, drain, first_reply, read_into, request_stream};

/// Bytes of another host's content held between its download and the upload.
const RELAY_PIPE_BYTES: usize = 1024 * 1024;

/// Bytes read at a time when hashing a file without sending it.
const HASH_READ_BYTES: usize = 1024 * 1024;

/// One file (or a tar to unpack) to write on a host.
pub struct Upload<'a> {
    pub settings: &'a Settings,
    pub target: &'a Remote,
    /// The write as every connection starts it (with the same `upload_id` each time).
    pub write: FileWrite,
    /// How long to keep trying to resume after the connection drops.
    pub resume_for: Duration,
}

/// Where the content comes from.
pub enum Source {
    /// A local file, which can be read from any offset (so its upload resumes).
    File(PathBuf),
    /// A local directory, packed as a tar stream.
    Tar(PathBuf),
    /// A file on a host.
    Remote(Remote),
}

impl Source {
    /// The content from `offset` on.
    async fn open(&self, settings: &Settings, offset: u64) -> anyhow::Result<Reader> {
        match self {
            Source::File(path) => {
                let mut file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| local_error(path, &e))?;
                file.seek(SeekFrom::Start(offset))
                    .await
                    .map_err(|e| local_error(path, &e))?;
                Ok(Reader::File(file))
            }
            _ if offset > 0 => anyhow::bail!("this upload cannot continue from the middle"),
            Source::Tar(dir) => Ok(Reader::Tar(tar::pack(dir)?)),
            Source::Remote(remote) => {
                let (writer, pipe) = tokio::io::duplex(RELAY_PIPE_BYTES);
                let (settings, remote) = (settings.clone(), remote.clone());
                let download = tokio::spawn(async move {
                    let download = Download {
                        settings: &settings,
                        remote: &remote,
                        tar: false,
                        resume_for: None,
                    };
                    download
                        .run(&mut Sink::Pipe(writer), &mut Progress::hidden())
                        .await
                });
                Ok(Reader::Remote {
                    pipe,
                    download: AbortOnDrop(download),
                })
            }
        }
    }

    /// Hashes the content before `offset` (what the host already holds of a resumed upload)
    /// into `hasher`, so the hash of the rest continues it.
    async fn hash_prefix(&self, offset: u64, hasher: &mut Sha256) -> anyhow::Result<()> {
        if offset == 0 {
            return Ok(());
        }
        let Source::File(path) = self else {
            anyhow::bail!("this upload cannot continue from the middle");
        };
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| local_error(path, &e))?;
        let done = hash_read(file.take(offset), hasher, path).await?;
        if done < offset {
            anyhow::bail!(
                "{}: shorter than the {offset} bytes the host already holds (did the file change?)",
                path.display()
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self {
            Source::File(path) | Source::Tar(path) => path.display().to_string(),
            Source::Remote(remote) => remote.to_string(),
        }
    }
}

/// A source opened for one connection's worth of the upload.
enum Reader {
    File(tokio::fs::File),
    Tar(Pack),
    Remote {
        pipe: DuplexStream,
        download: AbortOnDrop<anyhow::Result<FileInfo>>,
    },
}

impl Reader {
    fn input(&mut self) -> &mut (dyn AsyncRead + Unpin + Send) {
        match self {
            Reader::File(file) => file,
            Reader::Tar(pack) => &mut pack.output,
            Reader::Remote { pipe, .. } => pipe,
        }
    }

    /// After the input ended: whether it ended because the content is whole.
    async fn finish(self) -> anyhow::Result<()> {
        match self {
            Reader::File(_) => Ok(()),
            Reader::Tar(pack) => pack.finish().await,
            Reader::Remote { mut download, .. } => match (&mut download.0).await {
                Ok(result) => result.map(|_| ()),
                Err(e) => anyhow::bail!("the download stopped: {e}"),
            },
        }
    }
}

/// A task that is stopped when its handle goes away.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads `reader` into `buffer` until it ends. With a `hasher` (which already holds what
/// comes before the reader's start), the sha256 of the whole content: it is set in `sha256`
/// before the buffer ends, so the sender finds it when it reaches the end.
async fn fill(
    mut reader: Reader,
    buffer: Arc<SharedReplay>,
    mut hasher: Option<Sha256>,
    sha256: Arc<OnceLock<String>>,
    describe: String,
) -> anyhow::Result<Option<String>> {
    let mut input = reader.input();
    read_into(&mut input, &buffer, |bytes| {
        if let Some(hasher) = &mut hasher {
            hasher.update(bytes);
        }
        buffer.with(|b| b.push(Bytes::copy_from_slice(bytes)));
        ControlFlow::Continue(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{describe}: {}", io_reason(&e)))?;
    reader.finish().await?;
    let read = hasher.map(|h| hex::encode(h.finalize()));
    if let Some(read) = &read {
        let _ = sha256.set(read.clone());
    }
    buffer.with(|b| b.finish());
    Ok(read)
}

/// Sends `buffer` as the content from `base` (the host holds everything below it) until
/// it ends or the call goes away; right before the end of input, the content's `sha256`
/// when one was computed on the way (and is to be sent).
async fn send_content(
    buffer: Arc<SharedReplay>,
    base: u64,
    tx: mpsc::Sender<WriteFileRequest>,
    sha256: Option<Arc<OnceLock<String>>>,
) {
    use write_file_request::Body;
    let mut sender = StreamSender::new(StreamKind::Stdin, 0);
    while let Ok(Some(mut chunk)) = sender.next(&buffer).await {
        if chunk.eof
            && let Some(sha256) = sha256.as_ref().and_then(|s| s.get())
        {
            let hash = WriteFileRequest {
                body: Some(Body::Sha256(sha256.clone())),
            };
            if tx.send(hash).await.is_err() {
                return;
            }
        }
        chunk.offset += base;
        let data = WriteFileRequest {
            body: Some(Body::Data(chunk)),
        };
        if tx.send(data).await.is_err() {
            return;
        }
    }
}

/// The sha256 of a local file.
pub async fn hash_file(path: &Path) -> anyhow::Result<String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| local_error(path, &e))?;
    let mut hasher = Sha256::new();
    hash_read(file, &mut hasher, path).await?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds everything `reader` (reading `path`) gives into `hasher`; the number of bytes read.
async fn hash_read(
    mut reader: impl AsyncRead + Unpin,
    hasher: &mut Sha256,
    path: &Path,
) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; HASH_READ_BYTES];
    let mut done = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| local_error(path, &e))?;
        if n == 0 {
            return Ok(done);
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
}

fn start(host: &str, write: FileWrite) -> WriteFileRequest {
    WriteFileRequest {
        body: Some(write_file_request::Body::Start(WriteFileStart {
            host: host.to_string(),
            write: Some(write),
        })),
    }
}

impl Upload<'_> {
    /// Sends the content from `source`; returns the file as the host committed it.
    pub async fn run(&self, source: &Source, progress: &mut Progress) -> anyhow::Result<FileInfo> {
        let mut reconnect = Reconnect::new(self.resume_for);
        let mut started = false;
        loop {
            let attempt = self.attempt(source, &mut started, progress, &mut reconnect);
            let reason = match attempt.await {
                Ok((written, sent)) => {
                    let info = self.verdict(written, sent);
                    if info.is_ok() {
                        progress.finish();
                    }
                    return info;
                }
                Err(Interrupted::Failed(e)) => return Err(e),
                Err(Interrupted::Lost(reason)) => reason,
            };
            let delay = if started { reconnect.lost() } else { None };
            let Some(delay) = delay else {
                progress.clear();
                return Err(gave_up(self.target, started, &reason));
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection's worth of the upload: the host's verdict, and the sha256 of what was
    /// read when it was computed on the way.
    async fn attempt(
        &self,
        source: &Source,
        started: &mut bool,
        progress: &mut Progress,
        reconnect: &mut Reconnect,
    ) -> Result<(FileWritten, Option<String>), Interrupted> {
        use write_file_response::Body;
        let mut client = client::connect(self.settings)
            .await
            .map_err(|e| Interrupted::Lost(format!("{e:#}")))?;
        let (tx, requests) = request_stream(64);
        let _ = tx.send(start(&self.target.host, self.write.clone())).await;
        let failed = |status: Status| self.failed(&status);
        let mut responses = client
            .write_file(requests)
            .await
            .map_err(failed)?
            .into_inner();
        let first = first_reply(&mut responses).await.map_err(failed)?;
        let Some(Body::Accepted(accepted)) = first.body else {
            return Err(Interrupted::Failed(anyhow::anyhow!(
                "{}: the control plane did not accept the upload",
                self.target
            )));
        };
        *started = true;
        reconnect.connected();
        let base = accepted.offset;
        let buffer = Arc::new(SharedReplay::new(DEFAULT_WINDOW_BYTES));
        let reader = source
            .open(self.settings, base)
            .await
            .map_err(Interrupted::Failed)?;
        // The tar of a directory is unpacked as it arrives: its sha256 is only compared
        // with the host's afterwards. A file's is checked by the host before the rename.
        let mut hasher = self.write.sha256.is_empty().then(Sha256::new);
        if let Some(hasher) = &mut hasher {
            source
                .hash_prefix(base, hasher)
                .await
                .map_err(Interrupted::Failed)?;
        }
        let sha256 = Arc::new(OnceLock::new());
        let mut pump = AbortOnDrop(tokio::spawn(fill(
            reader,
            buffer.clone(),
            hasher,
            sha256.clone(),
            source.describe(),
        )));
        let _sender = AbortOnDrop(tokio::spawn(send_content(
            buffer.clone(),
            base,
            tx.clone(),
            (!self.write.tar).then_some(sha256),
        )));
        progress.update(base);
        let mut read = None;
        let written = loop {
            tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(message)) => match message.body {
                        Some(Body::Ack(ack)) => {
                            let _ = buffer.with(|b| b.ack(ack.offset.saturating_sub(base)));
                            progress.update(ack.offset);
                        }
                        Some(Body::Done(written)) => break written,
                        Some(Body::Accepted(_)) | None => {}
                    },
                    Ok(None) => {
                        return Err(Interrupted::Lost(
                            "the control plane ended the upload before the host answered".into(),
                        ));
                    }
                    Err(status) => return Err(failed(status)),
                },
                result = &mut pump.0, if read.is_none() => {
                    read = Some(pumped(result, &self.target.to_string())?);
                }
            }
        };
        let read = match read {
            Some(read) => read,
            None => pumped((&mut pump.0).await, &self.target.to_string())?,
        };
        drop(tx);
        drain(&mut responses).await;
        Ok((written, read))
    }

    fn failed(&self, status: &Status) -> Interrupted {
        let reason = reason(self.target, status);
        match status.code() {
            Code::FailedPrecondition => {
                Interrupted::Failed(Changed(format!("{}: {reason}", self.target)).into())
            }
            Code::AlreadyExists if self.write.create_only => {
                Interrupted::Failed(Changed(format!("{}: created meanwhile", self.target)).into())
            }
            _ if connection_lost(status) => Interrupted::Lost(reason),
            _ => Interrupted::Failed(refused(self.target, status)),
        }
    }

    /// The host's verdict as the outcome of the upload.
    fn verdict(&self, written: FileWritten, read: Option<String>) -> anyhow::Result<FileInfo> {
        let target = self.target;
        let kind = written.error();
        let why = written_reason(target, kind, &written.message);
        match kind {
            FileError::None => {}
            FileError::Conflict => {
                return Err(Changed(format!("{target}: {why}")).into());
            }
            FileError::Exists if self.write.create_only => {
                return Err(Changed(format!("{target}: created meanwhile")).into());
            }
            FileError::Checksum => anyhow::bail!(
                "{target}: the host received other bytes than were sent (checksum mismatch; did the source change?); nothing was replaced"
            ),
            _ => anyhow::bail!("{target}: {why}"),
        }
        let expected = read.as_deref().unwrap_or(&self.write.sha256);
        if !written.sha256.is_empty() && !expected.is_empty() && written.sha256 != expected {
            anyhow::bail!(
                "{target}: checksum mismatch: sent sha256 {expected}, the host wrote {}",
                written.sha256
            );
        }
        Ok(written.info.unwrap_or_default())
    }
}

/// What reading the source came to, once it ended. A download for a copy from another host
/// that lost its connection is retried with the upload.
fn pumped(
    result: Result<anyhow::Result<Option<String>>, tokio::task::JoinError>,
    target: &str,
) -> Result<Option<String>, Interrupted> {
    match result {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(e)) if e.is::<Lost>() => Err(Interrupted::Lost(e.to_string())),
        Ok(Err(e)) => Err(Interrupted::Failed(e)),
        Err(e) => Err(Interrupted::Failed(anyhow::anyhow!(
            "{target}: reading the content stopped: {e}"
        ))),
    }
}

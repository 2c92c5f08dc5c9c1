//! Reading from hosts: `zpanel cat`, and the download half of `cp` and `edit`. The content
//! streams into a [`Sink`] chunk by chunk (memory stays bounded whatever the size). When the
//! connection drops, the download continues from the offset it reached and names the
//! version it read first, so the host refuses a file that changed meanwhile rather than
//! mixing two. The host sends no checksum for reads: a download is checked by its size and
//! by its version before and after. A file lands in a temporary file beside its destination
//! that is renamed over it at the end, so nothing half-written is ever seen there.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncWrite, AsyncWriteExt, DuplexStream};
use tonic::{Code, Status};
use zpanel_proto::{FileInfo, FileRead, FileType, ReadFileRequest, read_file_response};

use super::location::Remote;
use super::progress::Progress;
use super::tar::{self, Unpack};
use super::{Changed, Interrupted, connection_lost, io_reason, local_error, reason, refused, stat};
use crate::client;
use crate::config::Settings;
use crate::streaming::{Output, Reconnect, WriteError, first_reply};

/// The connection was lost and the transfer did not (or could not) resume.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Lost(pub String);

/// A transfer of `remote` that lost its connection and stops: before it began, or after
/// trying to resume for as long as allowed.
pub fn gave_up(remote: &Remote, began: bool, reason: &str) -> anyhow::Error {
    let how = if began {
        "lost the connection and could not resume: "
    } else {
        ""
    };
    Lost(format!("{remote}: {how}{reason}")).into()
}

/// Our standard output was closed (`| head`).
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct OutputClosed;

/// One file (or a directory's tar) to read from a host.
pub struct Download<'a> {
    pub settings: &'a Settings,
    pub remote: &'a Remote,
    /// The directory as a tar stream.
    pub tar: bool,
    /// How long to keep trying to resume after the connection drops; `None`: not at all.
    pub resume_for: Option<Duration>,
}

/// Where downloaded content goes.
pub enum Sink {
    /// A temporary file beside the destination, renamed over it at the end.
    File(PartFile),
    Stdout(tokio::io::Stdout),
    /// A directory's tar, unpacked into `dir` without the first `strip` components of its
    /// names.
    Unpack {
        dir: PathBuf,
        strip: u32,
        tar: Unpack,
    },
    /// Another host's upload (a copy from host to host).
    Pipe(DuplexStream),
}

impl Sink {
    fn writer(&mut self) -> &mut (dyn AsyncWrite + Unpin + Send) {
        match self {
            Sink::File(part) => &mut part.file,
            Sink::Stdout(stdout) => stdout,
            Sink::Unpack { tar, .. } => &mut tar.input,
            Sink::Pipe(pipe) => pipe,
        }
    }

    /// The content starts again from its first byte (a tar stream cannot resume).
    async fn start_over(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Unpack { dir, strip, tar } => {
                let old = std::mem::replace(tar, tar::unpack(dir, *strip)?);
                old.abort().await;
                Ok(())
            }
            Sink::Pipe(_) => Err(Lost("the copy was interrupted".into()).into()),
            Sink::File(_) | Sink::Stdout(_) => Ok(()),
        }
    }

    /// Why writing failed, in one line.
    fn write_failed(&self, e: std::io::Error) -> Interrupted {
        match self {
            Sink::Stdout(_) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Interrupted::Failed(OutputClosed.into())
            }
            Sink::Stdout(_) => Interrupted::Failed(anyhow::anyhow!("stdout: {}", io_reason(&e))),
            Sink::File(part) => Interrupted::Failed(local_error(&part.target, &e)),
            Sink::Unpack { dir, .. } => Interrupted::Failed(anyhow::anyhow!(
                "cannot unpack into {}: {}",
                dir.display(),
                io_reason(&e)
            )),
            Sink::Pipe(_) => Interrupted::Lost("the copy was interrupted".into()),
        }
    }
}

/// What survives from one connection to the next.
struct State {
    /// The file as the first connection described it.
    info: Option<FileInfo>,
    output: Output,
}

impl Download<'_> {
    /// Streams the content into `sink`; returns the file as it was when the download began.
    pub async fn run(&self, sink: &mut Sink, progress: &mut Progress) -> anyhow::Result<FileInfo> {
        let mut state = State {
            info: None,
            output: Output::at(0),
        };
        let mut reconnect = self.resume_for.map(Reconnect::new);
        loop {
            let reason = match self
                .attempt(&mut state, sink, progress, &mut reconnect)
                .await
            {
                Ok(info) => return Ok(info),
                Err(Interrupted::Failed(e)) => return Err(e),
                Err(Interrupted::Lost(reason)) => reason,
            };
            let delay = match (&state.info, &mut reconnect) {
                (Some(_), Some(reconnect)) => reconnect.lost(),
                _ => None,
            };
            let Some(delay) = delay else {
                progress.clear();
                return Err(gave_up(self.remote, state.info.is_some(), &reason));
            };
            tokio::time::sleep(delay).await;
            if self.tar && state.output.next() > 0 {
                sink.start_over().await?;
                state.output = Output::at(0);
            }
        }
    }

    /// One connection's worth of the download.
    async fn attempt(
        &self,
        state: &mut State,
        sink: &mut Sink,
        progress: &mut Progress,
        reconnect: &mut Option<Reconnect>,
    ) -> Result<FileInfo, Interrupted> {
        use read_file_response::Body;
        let mut client = client::connect(self.settings)
            .await
            .map_err(|e| Interrupted::Lost(format!("{e:#}")))?;
        let resuming = state.info.is_some();
        let read = FileRead {
            path: state
                .info
                .as_ref()
                .map_or_else(|| self.remote.wire_path(), |info| info.path.clone()),
            offset: state.output.next(),
            length: 0,
            tar: self.tar,
            version: match &state.info {
                Some(info) if !self.tar => info.version.clone(),
                _ => String::new(),
            },
        };
        let failed = |status: Status| self.failed(&status, resuming);
        let request = ReadFileRequest {
            host: self.remote.host.clone(),
            read: Some(read),
        };
        let mut responses = client
            .read_file(request)
            .await
            .map_err(failed)?
            .into_inner();
        let first = first_reply(&mut responses).await.map_err(failed)?;
        let Some(Body::Info(described)) = first.body else {
            return Err(Interrupted::Failed(anyhow::anyhow!(
                "{}: the control plane did not describe the file",
                self.remote
            )));
        };
        if let Some(reconnect) = reconnect {
            reconnect.connected();
        }
        let info = match &state.info {
            Some(info) => info.clone(),
            None => {
                if !self.tar && described.r#type() == FileType::Directory {
                    return Err(Interrupted::Failed(anyhow::anyhow!(
                        "{}: is a directory",
                        self.remote
                    )));
                }
                state.info = Some(described.clone());
                described
            }
        };
        loop {
            match responses.message().await {
                Ok(Some(message)) => {
                    let Some(Body::Data(chunk)) = message.body else {
                        continue;
                    };
                    let mut writer = sink.writer();
                    match state.output.write(&mut writer, chunk).await {
                        Ok(_) => {}
                        Err(WriteError::Closed(e)) => return Err(sink.write_failed(e)),
                        Err(WriteError::Broken(e)) => {
                            return Err(Interrupted::Lost(format!("content stream broken: {e}")));
                        }
                    }
                    progress.update(state.output.next());
                    if state.output.is_finished() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => return Err(failed(status)),
            }
        }
        if self.tar {
            return Ok(info);
        }
        let received = state.output.next();
        if received < info.size {
            return Err(Interrupted::Lost("the content ended early".into()));
        }
        if received > info.size {
            return Err(Interrupted::Failed(
                Changed(format!(
                    "{}: changed while it was read ({received} bytes instead of {}); try again",
                    self.remote, info.size
                ))
                .into(),
            ));
        }
        Ok(info)
    }

    fn failed(&self, status: &Status, resuming: bool) -> Interrupted {
        match status.code() {
            Code::FailedPrecondition if resuming => Interrupted::Failed(
                Changed(format!(
                    "{}: changed on disk during the download; run the command again",
                    self.remote
                ))
                .into(),
            ),
            _ if connection_lost(status) => Interrupted::Lost(reason(self.remote, status)),
            _ => Interrupted::Failed(refused(self.remote, status)),
        }
    }
}

/// `zpanel cat HOST:PATH`: the file on stdout. Returns the exit code of `zpanel`.
pub async fn cat(
    settings: &Settings,
    remote: &Remote,
    resume_for: Duration,
) -> anyhow::Result<i32> {
    let download = Download {
        settings,
        remote,
        tar: false,
        resume_for: Some(resume_for),
    };
    let mut sink = Sink::Stdout(tokio::io::stdout());
    match download.run(&mut sink, &mut Progress::hidden()).await {
        Ok(_) => Ok(0),
        // Our stdout is closed (`| head`): end as a process killed by SIGPIPE would.
        Err(e) if e.is::<OutputClosed>() => Ok(128 + 13),
        Err(e) => Err(e),
    }
}

/// How the temporary file or directory of a download ends: `.NAME.RANDOM.zpanel-part`.
const PART_SUFFIX: &str = ".zpanel-part";

/// Where a download's temporary copy of `target` goes (its directory) and how its name
/// starts (hidden, after the target's name).
fn beside(target: &Path) -> (&Path, String) {
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, format!(".{name}."))
}

/// A temporary file beside a download's destination; removed unless committed.
pub struct PartFile {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    target: PathBuf,
}

impl PartFile {
    /// A new temporary file for `target`, with permissions `mode` (less the umask) when the
    /// target does not exist yet.
    pub fn create(target: &Path, mode: u32) -> anyhow::Result<PartFile> {
        let (dir, prefix) = beside(target);
        let mode = if mode & 0o777 == 0 {
            0o644
        } else {
            mode & 0o777
        };
        let named = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(PART_SUFFIX)
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(|e| local_error(dir, &e))?;
        let (file, path) = named.into_parts();
        Ok(PartFile {
            file: tokio::fs::File::from_std(file),
            path,
            target: target.to_path_buf(),
        })
    }

    /// Flushes the content to disk and renames it over the target (which keeps its own
    /// permissions when it existed).
    pub async fn commit(mut self) -> anyhow::Result<()> {
        let target = self.target.clone();
        let fail = |e: std::io::Error| local_error(&target, &e);
        self.file.flush().await.map_err(fail)?;
        self.file.sync_all().await.map_err(fail)?;
        drop(self.file);
        if let Ok(existing) = std::fs::metadata(&self.target) {
            std::fs::set_permissions(&self.path, existing.permissions()).map_err(fail)?;
        }
        self.path
            .persist(&self.target)
            .map_err(|e| local_error(&self.target, &e.error))?;
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

/// Downloads the file `remote` to `target` (replaced atomically at the end) and checks that
/// the host's file did not change meanwhile. Returns the file as it was read.
pub async fn to_file(
    download: &Download<'_>,
    target: &Path,
    mode: u32,
    progress: &mut Progress,
) -> anyhow::Result<FileInfo> {
    let mut sink = Sink::File(PartFile::create(target, mode)?);
    let info = download.run(&mut sink, progress).await?;
    let Sink::File(part) = sink else {
        anyhow::bail!("{}: the download lost its file", download.remote);
    };
    let mut client = client::connect(download.settings).await?;
    let now = stat(&mut client, download.remote)
        .await
        .map_err(|status| refused(download.remote, &status))?;
    if now.version != info.version {
        return Err(Changed(format!(
            "{}: changed on disk while it was downloaded; run the command again",
            download.remote
        ))
        .into());
    }
    part.commit().await?;
    progress.finish();
    Ok(info)
}

/// Downloads the directory `remote` to `target`: unpacked beside it, given `mode` and
/// renamed into place when `target` does not exist, or into it (merging, like `cp -r`) when
/// it does. `strip` drops the directory's own name the host puts first in the tar.
pub async fn to_directory(
    download: &Download<'_>,
    target: &Path,
    strip: u32,
    mode: u32,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let staged = if target.is_dir() {
        None
    } else {
        let (parent, prefix) = beside(target);
        let staged = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(PART_SUFFIX)
            .tempdir_in(parent)
            .map_err(|e| local_error(parent, &e))?;
        Some(staged)
    };
    let dir = staged.as_ref().map_or(target, |s| s.path()).to_path_buf();
    let tar = tar::unpack(&dir, strip)?;
    let mut sink = Sink::Unpack { dir, strip, tar };
    let downloaded = download.run(&mut sink, progress).await;
    let Sink::Unpack { tar, .. } = sink else {
        anyhow::bail!("{}: the download lost its archive", download.remote);
    };
    if let Err(e) = downloaded {
        tar.abort().await;
        return Err(e);
    }
    tar.finish()
        .await
        .with_context(|| format!("cannot unpack into {}", target.display()))?;
    if let Some(staged) = staged {
        let mode = if mode & 0o777 == 0 {
            0o755
        } else {
            mode & 0o777
        };
        std::fs::set_permissions(staged.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| local_error(staged.path(), &e))?;
        let staged = staged.keep();
        std::fs::rename(&staged, target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staged);
            local_error(target, &e)
        })?;
    }
    progress.finish();
    Ok(())
}

//! Streams of content. A read puts a file (up to its size when opened) or a directory's tar
//! onto a replay buffer, waiting for window space. A write takes the channel's input into
//! a temporary file beside the target and commits it by rename at the end of input (or
//! unpacks a tar beneath a directory). Both run on blocking threads; resumable uploads wait
//! in [`Uploads`] between channels.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, RenameFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use zpanel_proto::{FileError, FileInfo, FileRead, FileWrite, FileWritten};
use zpanel_shared::frame::MAX_CHUNK_BYTES;
use zpanel_shared::replay::SharedReplay;

use super::info::{Meta, Names, link_target};
use super::ops::{MAX_DEPTH, is_pseudo_fs, make_dirs, names, stat_at};
use super::resolve::{Located, Roots, child, errno_text, shown};
use super::{FileFailure, temp_name};
use crate::input::{InputCommand, InputWriter};

/// Mode of a new file when the request does not say.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// How long an interrupted resumable upload waits for its client.
pub const KEEP_UPLOAD: Duration = Duration::from_secs(60 * 60);
/// Interrupted uploads kept at most.
const MAX_KEPT_UPLOADS: usize = 1024;
/// How long a resumed upload waits for the channel it replaces to let go of it.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks an upload's hashing thread may be behind its writing (a window of full chunks).
const HASH_QUEUE_CHUNKS: usize = 32;

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

// === read ===

/// What a read streams.
pub enum Source {
    /// A file from `offset` to `end` (its size when opened, or the length asked for).
    File { file: File, offset: u64, end: u64 },
    /// A directory as a tar; entries are named under `prefix` (the directory's name).
    Tar { dir: OwnedFd, prefix: PathBuf },
}

/// Opens what a read asks for and checks it against the request.
pub fn open_read(roots: &Roots, request: &FileRead) -> Result<(FileInfo, Source), FileFailure> {
    let at = roots.locate(&request.path)?;
    let (fd, meta) = at.open_readable()?;
    let path = shown(&at.display);
    if !request.version.is_empty() && request.version != meta.version() {
        return Err(FileFailure::new(
            FileError::Conflict,
            format!(
                "{path} changed since version {}: read it again from the start",
                shown(&request.version)
            ),
        ));
    }
    let info = Names::default().info(at.display.clone(), &meta, String::new());
    if request.tar {
        let Some(dir) = fd.filter(|_| meta.is_dir()) else {
            return Err(FileFailure::new(
                FileError::NotADirectory,
                format!("{path} is not a directory; read it without tar"),
            ));
        };
        if request.offset != 0 || request.length != 0 {
            return Err(FileFailure::invalid(format!(
                "offset and length apply to files, not to the tar of {path}"
            )));
        }
        let prefix = at.rel.file_name().map(PathBuf::from).unwrap_or_default();
        let prefix = match (prefix.as_os_str().is_empty(), at.root.file_name()) {
            (true, Some(root_name)) => PathBuf::from(root_name),
            _ => prefix,
        };
        return Ok((info, Source::Tar { dir, prefix }));
    }
    if meta.is_dir() {
        return Err(FileFailure::new(
            FileError::IsADirectory,
            format!("{path} is a directory; list it, or read it as a tar"),
        ));
    }
    let Some(file) = fd.filter(|_| meta.is_file()) else {
        return Err(FileFailure::invalid(format!(
            "{path} is not a regular file; only files are read"
        )));
    };
    if request.offset > meta.size {
        return Err(FileFailure::invalid(format!(
            "offset {} is beyond the end of {path} ({} bytes)",
            request.offset, meta.size
        )));
    }
    let end = match request.length {
        0 => meta.size,
        length => meta.size.min(request.offset.saturating_add(length)),
    };
    let source = Source::File {
        file: File::from(file),
        offset: request.offset,
        end,
    };
    Ok((info, source))
}

/// Pushes bytes onto a replay buffer, waiting (on this blocking thread) for window space.
/// Fails once the channel is gone.
struct ReplayWriter<'a> {
    output: &'a SharedReplay,
    cancel: &'a CancellationToken,
    handle: &'a Handle,
}

impl Write for ReplayWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let space = self.handle.block_on(async {
            tokio::select! {
                space = self.output.wait_space() => Some(space),
                _ = self.cancel.cancelled() => None,
            }
        });
        let space = space.ok_or_else(|| io::Error::other("the channel closed"))?;
        let take = space.min(bytes.len()).min(MAX_CHUNK_BYTES);
        let chunk = Bytes::copy_from_slice(&bytes[..take]);
        self.output.with(|buffer| buffer.push(chunk));
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a source onto `output` and ends it; an error says why the read stopped.
pub fn produce(
    source: Source,
    output: &SharedReplay,
    cancel: &CancellationToken,
    handle: &Handle,
) -> Result<(), String> {
    let mut writer = io::BufWriter::with_capacity(
        MAX_CHUNK_BYTES,
        ReplayWriter {
            output,
            cancel,
            handle,
        },
    );
    match source {
        Source::File { file, offset, end } => {
            let mut buffer = vec![0u8; MAX_CHUNK_BYTES];
            let mut at = offset;
            while at < end {
                let want = usize::try_from(end - at)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                let read = file.read_at(&mut buffer[..want], at).map_err(|e| {
                    format!(
                        "reading failed at offset {at}: {}",
                        errno_text(io_errno(&e))
                    )
                })?;
                if read == 0 {
                    // The file shrank while it was read: it ends here.
                    break;
                }
                writer
                    .write_all(&buffer[..read])
                    .map_err(|e| e.to_string())?;
                at += read as u64;
            }
        }
        Source::Tar { dir, prefix } => {
            let mut builder = tar::Builder::new(&mut writer);
            if !prefix.as_os_str().is_empty() {
                let meta = Meta::of(&dir).map_err(errno_text)?;
                append_dir(&mut builder, &prefix, &meta).map_err(|e| e.to_string())?;
            }
            tar_tree(&mut builder, &dir, &prefix, 0).map_err(|e| e.to_string())?;
            builder.into_inner().map_err(|e| e.to_string())?;
        }
    }
    writer.flush().map_err(|e| e.to_string())?;
    output.with(|buffer| buffer.finish());
    Ok(())
}

fn header(meta: &Meta, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.permissions());
    header.set_uid(u64::from(meta.uid));
    header.set_gid(u64::from(meta.gid));
    header.set_mtime(u64::try_from(meta.mtime_ns / 1_000_000_000).unwrap_or(0));
    header
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, path: &Path, meta: &Meta) -> io::Result<()> {
    let mut header = header(meta, tar::EntryType::Directory, 0);
    builder.append_data(&mut header, path, io::empty())
}

/// Appends a directory's entries in name order: directories (walked), files (as large as
/// they were when opened; unreadable ones are left out) and symlinks (never followed).
fn tar_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &OwnedFd,
    prefix: &Path,
    depth: usize,
) -> io::Result<()> {
    let mut entries = names(dir).map_err(io::Error::from)?;
    entries.sort();
    for name in entries {
        let Ok(meta) = Meta::at(dir, &name) else {
            continue;
        };
        let path = prefix.join(&name);
        if meta.is_dir() {
            append_dir(builder, &path, &meta)?;
            let Ok(sub) = child(dir, &name, OFlags::RDONLY | OFlags::DIRECTORY) else {
                continue;
            };
            if depth < MAX_DEPTH && !is_pseudo_fs(&sub) {
                tar_tree(builder, &sub, &path, depth + 1)?;
            }
        } else if meta.is_file() {
            let Ok(fd) = child(dir, &name, OFlags::RDONLY | OFlags::NONBLOCK) else {
                continue;
            };
            let Ok(opened) = Meta::of(&fd) else {
                continue;
            };
            let size = opened.size;
            let mut header = header(&opened, tar::EntryType::Regular, size);
            // Exactly `size` bytes, zeros if the file shrank meanwhile.
            let content = File::from(fd).take(size).chain(io::repeat(0)).take(size);
            builder.append_data(&mut header, &path, content)?;
        } else if meta.is_symlink() {
            let target = link_target(dir, &name);
            let mut header = header(&meta, tar::EntryType::Symlink, 0);
            builder.append_link(&mut header, &path, target)?;
        }
    }
    Ok(())
}

// === write ===

/// An upload in progress: the temporary file beside its target.
pub struct Upload {
    /// The target's directory (`O_PATH`).
    dir: OwnedFd,
    name: String,
    display: String,
    temp: String,
    file: File,
    /// Bytes in the temporary file, and their hash.
    held: u64,
    hash: Hasher,
}

/// The sha256 of an upload's content, computed on a thread of its own fed through a bounded
/// queue, so writing and acknowledging never wait for it (unless it falls a queue behind).
/// `settle` waits for it: before a commit, and before an upload is kept, so a kept upload's
/// state is the hash of exactly the bytes it holds and a resumed one continues it.
enum Hasher {
    /// Not running: the state of every byte handed over.
    Settled(Sha256),
    Running {
        chunks: SyncSender<Bytes>,
        thread: JoinHandle<Sha256>,
    },
}

impl Hasher {
    fn update(&mut self, bytes: Bytes) {
        if let Hasher::Settled(state) = self
            && let Some(running) = Hasher::start(state.clone())
        {
            *self = running;
        }
        match self {
            // A send fails only when the thread panicked; `settle` raises that panic.
            Hasher::Running { chunks, .. } => drop(chunks.send(bytes)),
            // No thread to spare: hashed here.
            Hasher::Settled(state) => state.update(&bytes),
        }
    }

    fn start(mut state: Sha256) -> Option<Hasher> {
        let (chunks, queue) = sync_channel::<Bytes>(HASH_QUEUE_CHUNKS);
        let thread = std::thread::Builder::new()
            .name("zpanel-hash".into())
            .spawn(move || {
                for chunk in queue {
                    state.update(&chunk);
                }
                state
            })
            .inspect_err(|e| tracing::warn!("hashing an upload on its writing thread: {e}"))
            .ok()?;
        Some(Hasher::Running { chunks, thread })
    }

    /// Waits for the hash of everything handed over; it stays settled (a refused commit of
    /// a kept upload may be tried again).
    fn settle(&mut self) -> Sha256 {
        let state = match std::mem::replace(self, Hasher::Settled(Sha256::new())) {
            Hasher::Settled(state) => state,
            Hasher::Running { chunks, thread } => {
                drop(chunks);
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
        };
        *self = Hasher::Settled(state.clone());
        state
    }
}

/// An upload whose channel dropped, waiting for a `FileWrite` with the same id.
pub struct Kept {
    upload: Upload,
    path: String,
    until: Instant,
}

/// What a write does with its input.
pub enum WritePlan {
    File(Upload),
    /// Unpack a tar beneath this directory (`O_PATH`).
    Tar {
        dir: OwnedFd,
        display: String,
    },
}

impl WritePlan {
    /// Input bytes already held (a resumed upload).
    pub fn held(&self) -> u64 {
        match self {
            WritePlan::File(upload) => upload.held,
            WritePlan::Tar { .. } => 0,
        }
    }

    /// The target as it is now (just its path when it does not exist yet).
    pub fn info(&self) -> FileInfo {
        let (dir, name, display) = match self {
            WritePlan::File(upload) => (&upload.dir, upload.name.as_str(), &upload.display),
            WritePlan::Tar { dir, display } => (dir, ".", display),
        };
        stat_at(dir, name, display).unwrap_or_else(|_| FileInfo {
            path: display.clone(),
            ..FileInfo::default()
        })
    }
}

/// Checks the target of a write against the request; returns what is there now.
fn check_target(
    dir: &OwnedFd,
    name: &str,
    display: &str,
    request: &FileWrite,
) -> Result<Option<Meta>, FileFailure> {
    let path = shown(display);
    let existing = match Meta::at(dir, Path::new(name)) {
        Ok(meta) => Some(meta),
        Err(Errno::NOENT) => None,
        Err(e) => return Err(FileFailure::from_errno(display, e)),
    };
    if let Some(meta) = &existing {
        if meta.is_dir() {
            return Err(FileFailure::new(
                FileError::IsADirectory,
                format!("{path} is a directory; write to a file path, or send a tar"),
            ));
        }
        if meta.is_symlink() {
            return Err(FileFailure::invalid(format!(
                "{path} is a symbolic link (to {}); write to its target instead",
                shown(&link_target(dir, Path::new(name)))
            )));
        }
        if !meta.is_file() {
            return Err(FileFailure::invalid(format!(
                "{path} is not a regular file; only files are written"
            )));
        }
        if request.create_only {
            return Err(FileFailure::new(
                FileError::Exists,
                format!("{path} already exists; it was left as it is"),
            ));
        }
    }
    if !request.expected_version.is_empty() {
        let now = existing.as_ref().map(Meta::version);
        if now.as_deref() != Some(request.expected_version.as_str()) {
            let what = if now.is_some() {
                "changed on disk"
            } else {
                "was deleted"
            };
            return Err(FileFailure::new(
                FileError::Conflict,
                format!(
                    "{path} {what} since version {}: reload, overwrite or compare",
                    shown(&request.expected_version)
                ),
            ));
        }
    }
    Ok(existing)
}

/// Prepares a write: the target checked, its directory made (`parents`), and a temporary
/// file created, or the kept one of a resumed upload (`kept`, taken when it continues; a
/// kept upload that cannot continue is removed).
pub fn prepare_write(
    roots: &Roots,
    request: &FileWrite,
    kept: &mut Option<Kept>,
) -> Result<WritePlan, FileFailure> {
    if let Some(other) = kept.as_ref().filter(|k| k.path != request.path) {
        return Err(FileFailure::invalid(format!(
            "upload {} belongs to {}, not {}; use a new upload id",
            shown(&request.upload_id),
            shown(&other.path),
            shown(&request.path)
        )));
    }
    let at = roots.locate(&request.path)?;
    if request.tar {
        let dir = if request.parents {
            make_dirs(&at)?
        } else {
            at.open(OFlags::PATH | OFlags::DIRECTORY)?
        };
        let display = at.display.clone();
        return Ok(WritePlan::Tar { dir, display });
    }
    let target = target_dir(&at, request).inspect_err(|_| {
        if let Some(old) = kept.take() {
            discard(&old.upload);
        }
    })?;
    let (dir, name) = target;
    if let Some(old) = kept.take() {
        let same_dir = match (Meta::of(&dir), Meta::of(&old.upload.dir)) {
            (Ok(now), Ok(then)) => now.same_file(&then),
            _ => false,
        };
        if same_dir {
            let upload = old.upload;
            upload
                .file
                .set_len(upload.held)
                .map_err(|e| FileFailure::from_errno(&upload.display, io_errno(&e)))?;
            return Ok(WritePlan::File(upload));
        }
        discard(&old.upload);
    }
    let temp = temp_name("upload");
    let fd = rustix::fs::openat(
        &dir,
        temp.as_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| at.failure(e))?;
    Ok(WritePlan::File(Upload {
        dir,
        name,
        display: at.display,
        temp,
        file: File::from(fd),
        held: 0,
        hash: Hasher::Settled(Sha256::new()),
    }))
}

/// The target's directory (made with `parents`) and name, the target checked.
fn target_dir(at: &Located, request: &FileWrite) -> Result<(OwnedFd, String), FileFailure> {
    let (parent, name) = at.split()?;
    let parent = at.with_rel(parent);
    let dir = if request.parents {
        make_dirs(&parent)?
    } else {
        parent.open(OFlags::PATH | OFlags::DIRECTORY)?
    };
    check_target(&dir, &name, &at.display, request)?;
    Ok((dir, name))
}

impl Upload {
    fn append(&mut self, bytes: Bytes) -> Result<(), FileFailure> {
        self.file
            .write_all_at(&bytes, self.held)
            .map_err(|e| FileFailure::from_errno(&self.display, io_errno(&e)))?;
        self.held += bytes.len() as u64;
        self.hash.update(bytes);
        Ok(())
    }

    /// True while the temporary name still holds this upload's file.
    fn temp_is_ours(&self) -> bool {
        match (
            Meta::of(&self.file),
            Meta::at(&self.dir, Path::new(&self.temp)),
        ) {
            (Ok(ours), Ok(named)) => ours.same_file(&named),
            _ => false,
        }
    }

    /// Makes the temporary file the target: fsync, the request's checks (and the sha256 of
    /// a `FileCommit`, `committed`), the replaced file's owner and mode (or the request's
    /// mode), rename, fsync of the directory.
    fn commit(
        &mut self,
        request: &FileWrite,
        committed: Option<&str>,
    ) -> Result<FileWritten, FileFailure> {
        if let Some(value) = committed.filter(|value| !is_sha256(value)) {
            return Err(FileFailure::invalid(format!(
                "the sha256 committed for {} is not 64 lower-case hex digits ({}); upload it \
                 again",
                shown(&self.display),
                shown(value)
            )));
        }
        let failure = |e: Errno| FileFailure::from_errno(&self.display, e);
        self.file.sync_all().map_err(|e| failure(io_errno(&e)))?;
        let existing = check_target(&self.dir, &self.name, &self.display, request)?;
        let sha256 = hex::encode(self.hash.settle().finalize());
        let mismatch =
            |expected: &str| !expected.is_empty() && !expected.eq_ignore_ascii_case(&sha256);
        if mismatch(&request.sha256) || committed.is_some_and(mismatch) {
            return Err(FileFailure::new(
                FileError::Checksum,
                format!(
                    "the content sent for {} does not match its sha256 (it hashes to {sha256}); \
                     upload it again",
                    shown(&self.display)
                ),
            ));
        }
        let mode = match &existing {
            Some(meta) => {
                let ours = Meta::of(&self.file).map_err(failure)?;
                if (ours.uid, ours.gid) != (meta.uid, meta.gid) {
                    rustix::fs::fchown(
                        &self.file,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                    )
                    .map_err(|e| {
                        FileFailure::new(
                            FileError::Permission,
                            format!(
                                "cannot keep the owner of {} ({}); it was left as it is",
                                shown(&self.display),
                                errno_text(e)
                            ),
                        )
                    })?;
                }
                meta.permissions()
            }
            None => match request.mode & 0o7777 {
                0 => DEFAULT_FILE_MODE,
                mode => mode,
            },
        };
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode)).map_err(failure)?;
        if !self.temp_is_ours() {
            return Err(FileFailure::new(
                FileError::Io,
                format!(
                    "the temporary file beside {} was replaced by someone else; upload again",
                    shown(&self.display)
                ),
            ));
        }
        let flags = if request.create_only {
            RenameFlags::NOREPLACE
        } else {
            RenameFlags::empty()
        };
        rustix::fs::renameat_with(
            &self.dir,
            self.temp.as_str(),
            &self.dir,
            self.name.as_str(),
            flags,
        )
        .map_err(failure)?;
        sync_dir(&self.dir).map_err(failure)?;
        Ok(FileWritten {
            info: Some(stat_at(&self.dir, &self.name, &self.display)?),
            sha256,
            ..FileWritten::default()
        })
    }
}

/// True for a sha256 as a `FileCommit` carries it: 64 lower-case hex digits.
fn is_sha256(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sync_dir(dir: &OwnedFd) -> Result<(), Errno> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fsync(&fd)
}

/// Removes an upload's temporary file (if its name still holds it).
pub fn discard(upload: &Upload) {
    if upload.temp_is_ours() {
        let _ = rustix::fs::unlinkat(&upload.dir, upload.temp.as_str(), AtFlags::empty());
    }
}

/// The verdict of a refused write.
pub fn refused(failure: FileFailure) -> FileWritten {
    FileWritten {
        error: failure.kind as i32,
        message: failure.message,
        ..FileWritten::default()
    }
}

/// What the next piece of input is.
enum Next {
    Data(Bytes),
    Eof,
    /// The channel is gone.
    Gone,
}

/// The channel's input, read on a blocking thread; counts what was handed over as written.
struct Incoming<'a> {
    input: InputWriter,
    cancel: &'a CancellationToken,
    handle: &'a Handle,
}

impl Incoming<'_> {
    fn next(&mut self) -> Next {
        let (input, cancel) = (&mut self.input, self.cancel);
        let command = self.handle.block_on(async {
            tokio::select! {
                command = input.recv() => command,
                _ = cancel.cancelled() => None,
            }
        });
        match command {
            Some(InputCommand::Data(bytes)) => Next::Data(bytes),
            Some(InputCommand::Eof) => Next::Eof,
            None => Next::Gone,
        }
    }
}

/// How a write's thread reports and keeps: its verdict, and the slot a resumable upload
/// waits in.
pub struct WriteEnd {
    pub done: tokio::sync::watch::Sender<Option<FileWritten>>,
    pub slot: Option<OwnedMutexGuard<Option<Kept>>>,
    /// The sha256 of the content from a `FileCommit`, which arrives before the end of input.
    pub committed: tokio::sync::watch::Receiver<Option<String>>,
}

/// Runs a write to its end: the content into the temporary file (or the tar unpacked),
/// then the commit at the end of input. A resumable upload whose channel drops (or whose
/// commit was refused for a reason other than its checksum) is kept for its client.
pub fn write(
    plan: WritePlan,
    request: &FileWrite,
    input: InputWriter,
    cancel: &CancellationToken,
    handle: &Handle,
    end: WriteEnd,
) {
    let mut incoming = Incoming {
        input,
        cancel,
        handle,
    };
    match plan {
        WritePlan::File(upload) => write_file(upload, request, &mut incoming, end),
        WritePlan::Tar { dir, display } => {
            let mut reader = TarInput {
                incoming: &mut incoming,
                pending: Bytes::new(),
                hash: Sha256::new(),
            };
            let unpacked = unpack(&mut reader, &dir, &display).and_then(|()| {
                io::copy(&mut reader, &mut io::sink())
                    .map(drop)
                    .map_err(|e| FileFailure::new(FileError::Io, e.to_string()))
            });
            let written = match unpacked {
                Ok(()) => FileWritten {
                    info: Some(stat_at(&dir, ".", &display).unwrap_or_default()),
                    sha256: hex::encode(reader.hash.finalize()),
                    ..FileWritten::default()
                },
                Err(failure) => refused(failure),
            };
            end.done.send_replace(Some(written));
            // What follows a refused tar is taken and dropped, so the client is not stalled.
            while let Next::Data(bytes) = incoming.next() {
                incoming.input.wrote(bytes.len());
            }
        }
    }
}

fn write_file(mut upload: Upload, request: &FileWrite, incoming: &mut Incoming, mut end: WriteEnd) {
    let resumable = end.slot.is_some();
    let mut failed = false;
    loop {
        match incoming.next() {
            Next::Data(bytes) => {
                let len = bytes.len();
                if !failed && let Err(failure) = upload.append(bytes) {
                    discard(&upload);
                    failed = true;
                    end.done.send_replace(Some(refused(failure)));
                }
                incoming.input.wrote(len);
            }
            Next::Eof if failed => return,
            Next::Eof => {
                let committed = end.committed.borrow().clone();
                let verdict = match upload.commit(request, committed.as_deref()) {
                    Ok(written) => written,
                    Err(failure) => {
                        if resumable && failure.kind != FileError::Checksum {
                            keep(upload, request, &mut end);
                        } else {
                            discard(&upload);
                        }
                        refused(failure)
                    }
                };
                end.done.send_replace(Some(verdict));
                return;
            }
            Next::Gone if failed => return,
            Next::Gone => {
                if resumable {
                    keep(upload, request, &mut end);
                } else {
                    discard(&upload);
                }
                return;
            }
        }
    }
}

fn keep(mut upload: Upload, request: &FileWrite, end: &mut WriteEnd) {
    // A kept upload holds the hash of exactly its bytes, for the channel that resumes it.
    upload.hash.settle();
    if let Some(slot) = end.slot.as_mut() {
        **slot = Some(Kept {
            upload,
            path: request.path.clone(),
            until: Instant::now() + KEEP_UPLOAD,
        });
    }
}

/// A tar arriving on the channel's input, hashed as it is read.
struct TarInput<'a, 'b> {
    incoming: &'a mut Incoming<'b>,
    pending: Bytes,
    hash: Sha256,
}

impl Read for TarInput<'_, '_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match self.incoming.next() {
                Next::Data(bytes) => {
                    self.incoming.input.wrote(bytes.len());
                    self.pending = bytes;
                }
                Next::Eof => return Ok(0),
                Next::Gone => return Err(io::Error::other("the channel closed")),
            }
        }
        let take = self.pending.len().min(buffer.len());
        let bytes = self.pending.split_to(take);
        buffer[..take].copy_from_slice(&bytes);
        self.hash.update(&bytes);
        Ok(take)
    }
}

// === unpack ===

/// Unpacks a tar beneath `dir`, entry by entry: directories, files, symlinks and hard
/// links that stay beneath it. An entry that would leave it (absolute, `..`, through a
/// symlink, a link pointing out) stops the unpacking with an error; what was unpacked before
/// stays. Devices and fifos are skipped; owners are not restored.
fn unpack(input: &mut impl Read, dir: &OwnedFd, display: &str) -> Result<(), FileFailure> {
    let mut archive = tar::Archive::new(input);
    let bad_tar = |e: io::Error| {
        FileFailure::invalid(format!("the tar for {} is not valid: {e}", shown(display)))
    };
    for entry in archive.entries().map_err(bad_tar)? {
        let mut entry = entry.map_err(bad_tar)?;
        let path = entry.path().map_err(bad_tar)?.into_owned();
        let shown_path = shown(&path.to_string_lossy());
        let display = super::ops::joined(display, &shown_path);
        let failure = |e: Errno| FileFailure::from_errno(&display, e);
        let link_outside = |kind: &str, target: &Path| {
            FileFailure::new(
                FileError::OutsideRoots,
                format!(
                    "tar entry {shown_path} is a {kind} link to {} outside the target directory; \
                     unpacking stopped there",
                    shown(&target.to_string_lossy())
                ),
            )
        };
        let Some(rel) = inside(&path) else {
            return Err(FileFailure::new(
                FileError::OutsideRoots,
                format!(
                    "tar entry {shown_path} would leave the target directory (absolute or ..); \
                     unpacking stopped there"
                ),
            ));
        };
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let parent = make_dirs_beneath(dir, parent).map_err(|e| match e {
            Errno::LOOP | Errno::XDEV => FileFailure::new(
                FileError::OutsideRoots,
                format!(
                    "tar entry {shown_path} goes through a symbolic link; unpacking stopped there"
                ),
            ),
            e => failure(e),
        })?;
        let name = Path::new(name);
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(failure(e)),
                }
                let made =
                    child(&parent, name, OFlags::RDONLY | OFlags::DIRECTORY).map_err(failure)?;
                rustix::fs::fchmod(&made, Mode::from_raw_mode(mode)).map_err(failure)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = replace(&parent, name, |dir, name| {
                    rustix::fs::openat(
                        dir,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                })
                .map_err(failure)?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| failure(io_errno(&e)))?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(failure)?;
                let time = Timespec {
                    tv_sec: i64::try_from(mtime).unwrap_or(0),
                    tv_nsec: 0,
                };
                let times = Timestamps {
                    last_access: time,
                    last_modification: time,
                };
                rustix::fs::futimens(&file, &times).map_err(failure)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(bad_tar)?.unwrap_or_default();
                if !link_stays_inside(&rel, &target) {
                    return Err(link_outside("symbolic", &target));
                }
                replace(&parent, name, |dir, name| {
                    rustix::fs::symlinkat(&*target, dir, name)
                })
                .map_err(failure)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name().map_err(bad_tar)?.unwrap_or_default();
                let source = inside(&target).filter(|t| t.file_name().is_some());
                let Some(source) = source else {
                    return Err(link_outside("hard", &target));
                };
                let source_dir = child(
                    dir,
                    source.parent().unwrap_or(Path::new("")),
                    OFlags::PATH | OFlags::DIRECTORY,
                )
                .map_err(failure)?;
                let source_name = source.file_name().unwrap_or_default();
                replace(&parent, name, |dir, name| {
                    rustix::fs::linkat(&source_dir, source_name, dir, name, AtFlags::empty())
                })
                .map_err(failure)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A tar entry's path as names beneath the target, or `None` when it is absolute or has
/// `..`.
fn inside(path: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(rel)
}

/// True when a symlink at `entry` pointing to `target` stays beneath the target directory:
/// a relative target whose leading `..` climb no higher than the entry's depth, and no `..`
/// after a name (a name could be a symlink itself).
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    let depth = entry.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut named = false;
    for component in target.components() {
        match component {
            Component::ParentDir if !named => ups += 1,
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !target.as_os_str().is_empty() && ups <= depth
}

/// Makes the directories of `rel` beneath `dir`, through no symlink.
fn make_dirs_beneath(dir: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let mut current = child(dir, Path::new(""), OFlags::PATH | OFlags::DIRECTORY)?;
    for name in rel.components() {
        let name = name.as_os_str();
        match rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        current = match child(&current, Path::new(name), OFlags::PATH | OFlags::DIRECTORY) {
            Err(Errno::NOTDIR) if Meta::at(&current, Path::new(name))?.is_symlink() => {
                return Err(Errno::LOOP);
            }
            opened => opened?,
        };
    }
    Ok(current)
}

/// Creates `name` in `dir` with `make`; if something other than a directory is in the way,
/// it is removed first (as tar does).
fn replace<T>(
    dir: &OwnedFd,
    name: &Path,
    make: impl Fn(&OwnedFd, &Path) -> Result<T, Errno>,
) -> Result<T, Errno> {
    match make(dir, name) {
        Err(Errno::EXIST) => {
            if Meta::at(dir, name)?.is_dir() {
                return Err(Errno::ISDIR);
            }
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            make(dir, name)
        }
        other => other,
    }
}

// === uploads ===

type Slot = Arc<tokio::sync::Mutex<Option<Kept>>>;

/// Resumable uploads by id: the one in progress holds its slot's lock; an interrupted one
/// waits in its slot until it expires.
#[derive(Default)]
pub struct Uploads {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Uploads {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the upload `id` for a new channel, waiting for a channel it replaces to let go.
    pub async fn claim(&self, id: &str) -> Result<OwnedMutexGuard<Option<Kept>>, FileFailure> {
        let slot = {
            let mut slots = self.slots();
            if !slots.contains_key(id) && slots.len() >= MAX_KEPT_UPLOADS {
                return Err(FileFailure::invalid(format!(
                    "this host already holds {MAX_KEPT_UPLOADS} unfinished uploads; finish them \
                     or wait an hour for them to expire"
                )));
            }
            slots.entry(id.to_string()).or_default().clone()
        };
        tokio::time::timeout(CLAIM_TIMEOUT, slot.lock_owned())
            .await
            .map_err(|_| {
                FileFailure::invalid(format!(
                    "upload {} is still in progress on another channel; try again in a moment",
                    shown(id)
                ))
            })
    }

    /// Forgets slots with nothing in them and takes the kept uploads that expired (for the
    /// caller to discard).
    pub fn expired(&self) -> Vec<Upload> {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.slots().retain(|_, slot| {
            let Ok(mut kept) = slot.clone().try_lock_owned() else {
                return true;
            };
            match kept.take() {
                Some(old) if old.until <= now => {
                    expired.push(old.upload);
                    false
                }
                Some(fresh) => {
                    *kept = Some(fresh);
                    true
                }
                None => false,
            }
        });
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_in_a_tar_stay_beneath_the_target() {
        let at = |entry: &str, target: &str| link_stays_inside(Path::new(entry), Path::new(target));
        assert!(at("a/b/link", "../c"));
        assert!(at("a/b/link", "../../c"));
        assert!(!at("a/b/link", "../../../c"));
        assert!(!at("link", "/etc/passwd"));
        assert!(!at("a/link", "x/../../.."));
        assert!(!at("a/link", "s/../c"));
        assert!(at("link", "./c"));
        assert!(!at("link", ""));
        assert_eq!(inside(Path::new("./a/./b")), Some(PathBuf::from("a/b")));
        assert_eq!(inside(Path::new("a/../b")), None);
        assert_eq!(inside(Path::new("/etc/passwd")), None);
    }
}

//! Files on hosts as every adapter sees them: requests answered at once (list, stat, find,
//! mkdir, rename, copy, delete, chmod, chown), streamed reads, streamed writes that commit
//! atomically on the host, and watches. The daemon resolves and confines every path; the
//! control plane authorises, audits what changes files, and relays.

use bytes::Bytes;
use zpanel_proto::{
    FileChange, FileError, FileInfo, FileRead, FileReply, FileRequest, FileWatch, FileWrite,
    FileWritten, StreamKind, file_reply, file_request, open, open_result,
};

use super::audit::outcome;
use super::relay::{OutputReader, Relay, RelayError, Upload, next_event};
use super::{Action, AppState, Principal, ServiceError};
use crate::router::Channel;
use crate::store::{AuditEntry, HostRecord};

/// The service error for a file refusal from a daemon.
pub fn file_error(kind: FileError, message: String) -> ServiceError {
    match kind {
        FileError::OutsideRoots | FileError::Permission => ServiceError::Forbidden(message),
        FileError::NotFound => ServiceError::NotFound(message),
        FileError::Exists => ServiceError::Conflict(message),
        FileError::Conflict => ServiceError::Changed(message),
        FileError::NoSpace => ServiceError::NoSpace(message),
        FileError::NotADirectory
        | FileError::IsADirectory
        | FileError::NotEmpty
        | FileError::Invalid
        | FileError::Checksum => ServiceError::InvalidArgument(message),
        FileError::Io | FileError::None => ServiceError::Internal(message),
    }
}

/// What a request needs and how it is audited: the action, and for changes the audit
/// action name and detail.
fn classify(op: &file_request::Op) -> (Action, Option<(&'static str, String)>) {
    use file_request::Op;
    match op {
        Op::List(_) | Op::Stat(_) | Op::Find(_) => (Action::ReadFiles, None),
        Op::Mkdir(m) => (Action::WriteFiles, Some(("file.mkdir", m.path.clone()))),
        Op::Rename(r) => (
            Action::WriteFiles,
            Some(("file.rename", format!("{} -> {}", r.from, r.to))),
        ),
        Op::Copy(c) => (
            Action::WriteFiles,
            Some(("file.copy", format!("{} -> {}", c.from, c.to))),
        ),
        Op::Delete(d) => {
            let how = if d.recursive { " (recursive)" } else { "" };
            (
                Action::WriteFiles,
                Some(("file.delete", format!("{}{how}", d.path))),
            )
        }
        Op::Chmod(c) => (
            Action::WriteFiles,
            Some(("file.chmod", format!("{} {:o}", c.path, c.mode))),
        ),
        Op::Chown(c) => (
            Action::WriteFiles,
            Some(("file.chown", format!("{} {}:{}", c.path, c.owner, c.group))),
        ),
    }
}

/// The `FileInfo` a daemon put in its answer to a read or write.
fn reply_info(channel: &Channel) -> FileInfo {
    match &channel.opened.reply {
        Some(open_result::Reply::File(FileReply {
            result: Some(file_reply::Result::Info(info)),
        })) => info.clone(),
        _ => FileInfo::default(),
    }
}

/// A file (or a directory's tar) streaming from a host.
pub struct FileReadChannel {
    channel: Channel,
    output: OutputReader,
    pub host: HostRecord,
    /// The file as it was when the read began.
    pub info: FileInfo,
}

impl Relay for FileReadChannel {
    type Item = Bytes;

    /// The next piece of content, `None` at the end. What is returned counts as consumed.
    async fn next(&mut self) -> Result<Option<Bytes>, ServiceError> {
        loop {
            let chunk = self
                .output
                .next(&mut self.channel)
                .await
                .map_err(|e| e.on(&self.host, "read"))?;
            match chunk {
                None => return Ok(None),
                Some(chunk) if chunk.payload.is_empty() => {}
                Some(chunk) => return Ok(Some(chunk.payload)),
            }
        }
    }
}

/// A file upload to a host: content in, then the host's verdict.
pub struct FileWriteChannel {
    upload: Upload<FileWritten>,
    pub host: HostRecord,
    /// Bytes of a resumed upload the host already holds.
    pub resume_offset: u64,
    /// The content's sha256 when the client learnt it while sending.
    sha256: Option<String>,
    /// The audit entry written when the write ends.
    audit: AuditEntry,
    path: String,
}

impl FileWriteChannel {
    /// The host holds every byte below this offset.
    pub fn acked(&self) -> u64 {
        self.upload.acked()
    }

    /// Content at `offset` (bytes the host already has are skipped). Waits while too much
    /// is unacknowledged.
    pub async fn write_at(&mut self, offset: u64, payload: Bytes) -> Result<(), ServiceError> {
        self.upload
            .write_at(offset, payload)
            .await
            .map_err(|e| e.on(&self.host, "upload"))?;
        match self.upload.verdict() {
            Some(done) => Err(written_error(&self.host, done)),
            None => Ok(()),
        }
    }

    /// Content following what was written so far.
    pub async fn write(&mut self, payload: Bytes) -> Result<(), ServiceError> {
        self.write_at(self.upload.sent(), payload).await
    }

    /// The whole content's sha256, for the host to check before it commits.
    pub fn expect_sha256(&mut self, sha256: String) {
        self.sha256 = Some(sha256);
    }

    /// Ends the content and waits for the host to commit it (or refuse). The outcome is
    /// audited.
    pub async fn finish(mut self, state: &AppState) -> Result<FileWritten, ServiceError> {
        if let Some(sha256) = self.sha256.take() {
            self.upload
                .channel()
                .send_file_commit(sha256)
                .await
                .map_err(|e| RelayError::from(e).on(&self.host, "upload"))?;
        }
        let outcome = self
            .upload
            .finish()
            .await
            .map_err(|e| e.on(&self.host, "upload"))?;
        let error = outcome.error();
        let detail = format!(
            "{} ({} bytes, sha256 {})",
            self.path,
            self.upload.sent(),
            outcome.sha256
        );
        let result = if error == FileError::None {
            "ok".to_string()
        } else {
            format!("failed: {}", outcome.message)
        };
        state
            .audit(self.audit.clone().detail(detail).outcome(result))
            .await;
        self.upload.release();
        if error == FileError::None {
            Ok(outcome)
        } else {
            Err(written_error(&self.host, &outcome))
        }
    }
}

fn written_error(host: &HostRecord, done: &FileWritten) -> ServiceError {
    file_error(
        done.error(),
        format!("host {}: {}", host.name, done.message),
    )
}

/// Changes under a watched path, as they happen.
pub struct FileWatchChannel {
    channel: Channel,
    host: HostRecord,
}

impl FileWatchChannel {
    /// The next change; an error when the watch ended.
    pub async fn next(&mut self) -> Result<FileChange, ServiceError> {
        next_event(&mut self.channel)
            .await
            .map_err(|e| e.on(&self.host, "watch"))
    }
}

impl AppState {
    /// A request answered at once. Changes are audited, failed ones too.
    pub async fn file_op(
        &self,
        principal: &Principal,
        host: &str,
        request: FileRequest,
    ) -> Result<FileReply, ServiceError> {
        let op = request.op.as_ref().ok_or_else(|| {
            ServiceError::InvalidArgument("empty file request: say what to do".into())
        })?;
        let (action, audit) = classify(op);
        let host = self.host_for(principal, action, host).await?;
        let opened = self.open_on(&host, open::Request::File(request)).await;
        if let Some((name, target)) = audit {
            self.audit(
                self.entry(principal, name)
                    .host(&host.id, &host.workspace_id)
                    .target(target)
                    .outcome(outcome(&opened)),
            )
            .await;
        }
        match opened?.opened.reply.clone() {
            Some(open_result::Reply::File(reply)) => Ok(reply),
            _ => Err(ServiceError::Internal(
                "the host answered a file request without a result".into(),
            )),
        }
    }

    /// Starts reading a file (or a directory's tar) from a host.
    pub async fn file_read(
        &self,
        principal: &Principal,
        host: &str,
        read: FileRead,
    ) -> Result<FileReadChannel, ServiceError> {
        let offset = read.offset;
        let host = self.host_for(principal, Action::ReadFiles, host).await?;
        let channel = self.open_on(&host, open::Request::FileRead(read)).await?;
        Ok(FileReadChannel {
            info: reply_info(&channel),
            output: OutputReader::new(&[(StreamKind::Stdout, offset)]),
            channel,
            host,
        })
    }

    /// Starts writing a file (or unpacking a tar) on a host.
    pub async fn file_write(
        &self,
        principal: &Principal,
        host: &str,
        write: FileWrite,
    ) -> Result<FileWriteChannel, ServiceError> {
        let path = write.path.clone();
        let host = self.host_for(principal, Action::WriteFiles, host).await?;
        let audit = self
            .entry(principal, "file.write")
            .host(&host.id, &host.workspace_id)
            .target(&path);
        let channel = match self.open_on(&host, open::Request::FileWrite(write)).await {
            Ok(channel) => channel,
            Err(e) => {
                self.audit(audit.outcome(format!("failed: {e}"))).await;
                return Err(e);
            }
        };
        let resume_offset = channel.opened.stdin_offset;
        Ok(FileWriteChannel {
            upload: Upload::new(channel, resume_offset),
            host,
            resume_offset,
            sha256: None,
            audit,
            path,
        })
    }

    /// Watches a file or directory on a host.
    pub async fn file_watch(
        &self,
        principal: &Principal,
        host: &str,
        path: String,
    ) -> Result<FileWatchChannel, ServiceError> {
        let host = self.host_for(principal, Action::ReadFiles, host).await?;
        let channel = self
            .open_on(&host, open::Request::FileWatch(FileWatch { path }))
            .await?;
        Ok(FileWatchChannel { channel, host })
    }
}

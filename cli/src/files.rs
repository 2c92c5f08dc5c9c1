//! Files on hosts: `ls`, `cat`, `cp`, `edit`, `rm`, `mv` and `mkdir`. The daemon resolves
//! every path beneath the roots it serves; the CLI names paths as `HOST:PATH`
//! ([`location`]), streams content with bounded memory and resumes after a dropped
//! connection ([`download`], [`upload`]), and says why in one line when a host refuses.

pub mod copy;
pub mod download;
pub mod edit;
pub mod location;
pub mod ls;
pub mod progress;
pub mod tar;
pub mod upload;

use std::io::ErrorKind;
use std::path::Path;

use tonic::{Code, Status};
use zpanel_proto::{
    FileDelete, FileError, FileInfo, FileList, FileMkdir, FileOpRequest, FileRename, FileReply,
    FileRequest, FileStat, FileType, file_reply, file_request,
};

use crate::client::{self, Client, status_message};
use crate::config::Settings;
use crate::streaming::is_transient;
use location::Remote;

/// Entries asked for per page of a directory listing: the most a host gives. The host reads
/// the directory again for each page, so a huge directory lists in as few pages as it can.
pub const LIST_PAGE: u32 = 10_000;
/// The first page is small, so the first lines show at once (and `| head` ends quickly).
pub const FIRST_LIST_PAGE: u32 = 1_000;

/// Why one connection's worth of a transfer ended early.
enum Interrupted {
    /// The connection dropped: continue from where the host is.
    Lost(String),
    /// Nothing to retry.
    Failed(anyhow::Error),
}

/// Whether a failed call lost its connection (worth resuming after) rather than being
/// refused. A host's own I/O error comes as INTERNAL, like some broken connections do, but
/// names the host.
fn connection_lost(status: &Status) -> bool {
    is_transient(status.code())
        && !(status.code() == Code::Internal && status.message().starts_with("host "))
}

/// A file that changed on the host since the version a transfer started from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Changed(pub String);

/// Why the host (or the control plane) refused a request on `remote`, in one line:
/// `web-1:/etc/shadow: permission denied`.
pub fn refused(remote: &Remote, status: &Status) -> anyhow::Error {
    anyhow::anyhow!("{remote}: {}", reason(remote, status))
}

/// A refusal's reason, short. Messages from a host come as `host NAME: …`; when the host
/// describes what is wrong with a path (its words start with the path), the line names the
/// path itself and a few words say what is wrong. Anything else (a tar entry that would
/// leave the directory, the control plane's own refusals) is kept in its own words.
fn reason(remote: &Remote, status: &Status) -> String {
    let message = status_message(status);
    let Some((_, said)) = message
        .strip_prefix("host ")
        .and_then(|r| r.split_once(": "))
    else {
        return message;
    };
    let names_a_path =
        said.starts_with('/') || (!remote.path.is_empty() && said.starts_with(&remote.path));
    if !names_a_path {
        return said.to_string();
    }
    if status.code() == Code::PermissionDenied && said.contains("read-only") {
        return "read-only file system".into();
    }
    phrase(kind_of(status.code(), said)).map_or_else(|| without_path(remote, said), str::to_string)
}

/// The file error behind a host's refusal: the status code says most of it, the words the
/// rest (several errors share a code).
fn kind_of(code: Code, said: &str) -> FileError {
    let said = said.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| said.contains(w));
    match code {
        Code::PermissionDenied if has(&["outside", "symbolic link", "leave"]) => {
            FileError::OutsideRoots
        }
        Code::PermissionDenied => FileError::Permission,
        Code::NotFound => FileError::NotFound,
        Code::AlreadyExists => FileError::Exists,
        Code::FailedPrecondition => FileError::Conflict,
        Code::ResourceExhausted => FileError::NoSpace,
        Code::InvalidArgument if has(&["not empty"]) => FileError::NotEmpty,
        Code::InvalidArgument if has(&["not a directory"]) => FileError::NotADirectory,
        Code::InvalidArgument if has(&["is a directory"]) => FileError::IsADirectory,
        Code::InvalidArgument if has(&["sha256", "checksum"]) => FileError::Checksum,
        _ => FileError::Io,
    }
}

/// A file error in a few words; `None` when the host's own words say more.
fn phrase(kind: FileError) -> Option<&'static str> {
    Some(match kind {
        FileError::OutsideRoots => "outside the roots this host serves",
        FileError::NotFound => "no such file or directory",
        FileError::Exists => "already exists",
        FileError::Permission => "permission denied",
        FileError::NotADirectory => "not a directory",
        FileError::IsADirectory => "is a directory",
        FileError::NotEmpty => "directory not empty",
        FileError::Conflict => "changed on disk",
        FileError::NoSpace => "no space left on the host",
        FileError::Checksum => "checksum mismatch",
        FileError::None | FileError::Invalid | FileError::Io => return None,
    })
}

/// `said` without the path of `remote` it may start with.
fn without_path(remote: &Remote, said: &str) -> String {
    if !remote.path.is_empty()
        && let Some(after) = said
            .strip_prefix(remote.path.as_str())
            .and_then(|r| r.strip_prefix(": "))
    {
        return after.to_string();
    }
    said.to_string()
}

/// Why a host refused to commit a write, in one line.
fn written_reason(remote: &Remote, kind: FileError, message: &str) -> String {
    match phrase(kind) {
        Some(phrase) => phrase.to_string(),
        None if message.is_empty() => "the host did not say why".into(),
        None => without_path(remote, message),
    }
}

/// A local file's error in one line: `./a.txt: no such file or directory`.
pub fn local_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", path.display(), io_reason(e))
}

/// An I/O error as a lower-case phrase, without the OS error number.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::AlreadyExists => "already exists".into(),
        ErrorKind::IsADirectory => "is a directory".into(),
        ErrorKind::NotADirectory => "not a directory".into(),
        ErrorKind::StorageFull => "no space left on device".into(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or_default();
            let mut chars = text.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_lowercase().chain(chars).collect::<String>()
            })
        }
    }
}

/// One request answered at once.
pub async fn file_op(
    client: &mut Client,
    host: &str,
    op: file_request::Op,
) -> Result<FileReply, Status> {
    let request = FileOpRequest {
        host: host.to_string(),
        request: Some(FileRequest { op: Some(op) }),
    };
    Ok(client.file_op(request).await?.into_inner())
}

/// The `FileInfo` a reply carries.
fn reply_info(reply: FileReply) -> Result<FileInfo, Status> {
    match reply.result {
        Some(file_reply::Result::Info(info)) => Ok(info),
        _ => Err(Status::internal(
            "the host answered without describing the file",
        )),
    }
}

/// The path as it is now (a symlink is described, not followed).
pub async fn stat(client: &mut Client, remote: &Remote) -> Result<FileInfo, Status> {
    let op = file_request::Op::Stat(FileStat {
        path: remote.wire_path(),
    });
    reply_info(file_op(client, &remote.host, op).await?)
}

/// A page of a directory, after the entry named `after`.
pub async fn list_page(
    client: &mut Client,
    remote: &Remote,
    after: String,
    limit: u32,
) -> Result<zpanel_proto::FileListing, Status> {
    let op = file_request::Op::List(FileList {
        path: remote.wire_path(),
        after,
        limit,
    });
    match file_op(client, &remote.host, op).await?.result {
        Some(file_reply::Result::Listing(listing)) => Ok(listing),
        _ => Err(Status::internal("the host answered without a listing")),
    }
}

/// Whether `info` (the stat of `remote`) is a directory, following a symlink by listing it.
pub async fn is_directory(client: &mut Client, remote: &Remote, info: &FileInfo) -> bool {
    match info.r#type() {
        FileType::Directory => true,
        FileType::Symlink => list_page(client, remote, String::new(), 1).await.is_ok(),
        _ => false,
    }
}

/// `zpanel mkdir [-p] HOST:PATH`.
pub async fn mkdir(settings: &Settings, remote: &Remote, parents: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let op = file_request::Op::Mkdir(FileMkdir {
        path: remote.wire_path(),
        parents,
        mode: 0,
    });
    file_op(&mut client, &remote.host, op)
        .await
        .map_err(|status| refused(remote, &status))?;
    Ok(())
}

/// `zpanel rm [-r] HOST:PATH`.
pub async fn rm(settings: &Settings, remote: &Remote, recursive: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let op = file_request::Op::Delete(FileDelete {
        path: remote.wire_path(),
        recursive,
    });
    file_op(&mut client, &remote.host, op)
        .await
        .map_err(|status| match kind_of(status.code(), status.message()) {
            FileError::IsADirectory if !recursive => {
                anyhow::anyhow!("{remote}: is a directory (use -r)")
            }
            _ => refused(remote, &status),
        })?;
    Ok(())
}

/// `zpanel mv HOST:SRC HOST:DST`: a rename on one host; into DST when it is a directory.
pub async fn mv(
    settings: &Settings,
    from: &Remote,
    to: &Remote,
    overwrite: bool,
) -> anyhow::Result<()> {
    if from.host != to.host {
        anyhow::bail!(
            "{from} and {to} are on different hosts; copy with `zpanel cp`, then `zpanel rm`"
        );
    }
    let mut client = client::connect(settings).await?;
    let target = into_directory(&mut client, to, from).await?;
    let op = file_request::Op::Rename(FileRename {
        from: from.wire_path(),
        to: target.wire_path(),
        overwrite,
    });
    file_op(&mut client, &from.host, op)
        .await
        .map_err(|status| refused(from, &status))?;
    Ok(())
}

/// Where `source` goes when it is copied or moved to `destination`: inside it when it is a
/// directory (or written as one, `host:/srv/`), else `destination` itself.
pub async fn into_directory(
    client: &mut Client,
    destination: &Remote,
    source: &Remote,
) -> anyhow::Result<Remote> {
    let name = || {
        source
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("{source}: name a file or directory to copy"))
    };
    match stat(client, destination).await {
        Ok(info) if is_directory(client, destination, &info).await => Ok(destination.join(name()?)),
        Ok(_) => Ok(destination.clone()),
        Err(status) if status.code() == Code::NotFound && !destination.names_directory() => {
            Ok(destination.clone())
        }
        Err(status) => Err(refused(destination, &status)),
    }
}

/// Runs a transfer until it ends or Ctrl-C stops it. Stopped, what it held is dropped
/// (temporary files are removed; a host keeps a resumable upload for a while) and `zpanel`
/// exits with 130.
pub async fn interruptible(work: impl Future<Output = anyhow::Result<i32>>) -> anyhow::Result<i32> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("zpanel: interrupted");
            Ok(130)
        }
    }
}

/// A fresh random id (128 bits, hex) for a resumable upload.
pub fn random_id() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {}", io_reason(&e)))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_a_few_words_after_the_path() {
        let remote = Remote {
            host: "web-1".into(),
            path: "/etc/shadow".into(),
        };
        let line = |status: Status| refused(&remote, &status).to_string();
        assert_eq!(
            line(Status::permission_denied(
                "host web-1: /etc/shadow: permission denied to the daemon's account"
            )),
            "web-1:/etc/shadow: permission denied"
        );
        assert_eq!(
            line(Status::permission_denied(
                "host web-1: /x leads outside the directories this host serves (through .. or a \
                 symbolic link); use a path inside them"
            )),
            "web-1:/etc/shadow: outside the roots this host serves"
        );
        assert_eq!(
            line(Status::invalid_argument(
                "host web-1: /etc/shadow is a directory that is not empty; delete it recursively"
            )),
            "web-1:/etc/shadow: directory not empty"
        );
        assert_eq!(
            line(Status::internal(
                "host web-1: /etc/shadow: input/output error"
            )),
            "web-1:/etc/shadow: input/output error"
        );
        assert_eq!(
            line(Status::unavailable("host web-1 is offline")),
            "web-1:/etc/shadow: host web-1 is offline"
        );
        assert_eq!(
            line(Status::permission_denied(
                "viewers may not read files on hosts"
            )),
            "web-1:/etc/shadow: viewers may not read files on hosts"
        );
        assert_eq!(line(Status::not_found("")), "web-1:/etc/shadow: NotFound");
        assert_eq!(
            line(Status::permission_denied(
                "host web-1: tar entry a/b is a symbolic link to /etc outside the target directory"
            )),
            "web-1:/etc/shadow: tar entry a/b is a symbolic link to /etc outside the target directory"
        );
        assert_eq!(
            written_reason(&remote, FileError::Io, "/etc/shadow: disk on fire"),
            "disk on fire"
        );
        assert_eq!(
            written_reason(&remote, FileError::NoSpace, "whatever"),
            "no space left on the host"
        );
    }

    #[test]
    fn a_hosts_io_error_is_not_a_lost_connection() {
        assert!(connection_lost(&Status::unavailable("connection refused")));
        assert!(connection_lost(&Status::internal("h2 protocol error")));
        assert!(!connection_lost(&Status::internal(
            "host web-1: /srv/x: input/output error"
        )));
        assert!(!connection_lost(&Status::permission_denied("no")));
    }

    #[test]
    fn io_errors_read_as_lower_case_phrases() {
        let e = std::io::Error::from(ErrorKind::NotFound);
        assert_eq!(
            local_error(Path::new("./a"), &e).to_string(),
            "./a: no such file or directory"
        );
        let e = std::io::Error::from_raw_os_error(nix::libc::EROFS);
        assert_eq!(io_reason(&e), "read-only file system");
    }

    #[test]
    fn upload_ids_are_fresh() {
        let (a, b) = (random_id().unwrap(), random_id().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}

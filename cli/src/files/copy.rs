//! `zpanel cp [-r] SRC DST` with `HOST:PATH` on either side: an upload, a download, a copy
//! on one host (done by the host itself), or from one host to another through this process
//! (a file streams straight through; a directory is staged in a local temporary directory).
//! Like `cp`, a destination that is a directory receives the source under its own name.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Code;
use zpanel_proto::{FileCopy, FileInfo, FileMkdir, FileWrite, file_request};

use super::download::{self, Download};
use super::location::{Location, Remote};
use super::progress::Progress;
use super::upload::{Source, Upload};
use super::{file_op, into_directory, is_directory, local_error, random_id, refused, stat};
use crate::client::{self, Client};
use crate::config::Settings;

pub struct CopyOptions {
    pub source: String,
    pub destination: String,
    pub recursive: bool,
    /// How long to keep trying to resume after the connection drops.
    pub resume_for: Duration,
}

pub async fn cp(settings: &Settings, options: &CopyOptions) -> anyhow::Result<()> {
    let source = Location::parse(&options.source);
    let destination = Location::parse(&options.destination);
    match (source, destination) {
        (Location::Local(_), Location::Local(_)) => anyhow::bail!(
            "{} and {} are both local; one of them must be HOST:PATH",
            options.source,
            options.destination
        ),
        (Location::Local(from), Location::Remote(to)) => {
            upload(settings, options, &from, &to).await
        }
        (Location::Remote(from), Location::Local(to)) => {
            download(settings, options, &from, &to).await
        }
        (Location::Remote(from), Location::Remote(to)) => {
            between_hosts(settings, options, &from, &to).await
        }
    }
}

/// Where a local source goes on the host.
async fn remote_target(
    client: &mut Client,
    destination: &Remote,
    source: &Path,
) -> anyhow::Result<Remote> {
    let name = source
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let named = Remote {
        host: destination.host.clone(),
        path: name,
    };
    into_directory(client, destination, &named).await
}

async fn upload(
    settings: &Settings,
    options: &CopyOptions,
    from: &Path,
    to: &Remote,
) -> anyhow::Result<()> {
    let metadata = tokio::fs::metadata(from)
        .await
        .map_err(|e| local_error(from, &e))?;
    if metadata.is_dir() && !options.recursive {
        anyhow::bail!("{}: is a directory (use -r)", from.display());
    }
    let mut client = client::connect(settings).await?;
    let target = remote_target(&mut client, to, from).await?;
    if metadata.is_dir() {
        return upload_tree(settings, &mut client, options, from, &target).await;
    }
    let mut progress = Progress::on_terminal(target.to_string(), Some(metadata.len()));
    // No sha256 at the start: the upload hashes the file as it sends it, and the host checks
    // that hash before it replaces anything.
    let write = FileWrite {
        path: target.wire_path(),
        mode: metadata.permissions().mode() & 0o777,
        upload_id: random_id()?,
        ..FileWrite::default()
    };
    let source = Source::File(from.to_path_buf());
    send(settings, options, &target, write, &source, &mut progress).await
}

/// Uploads the local directory `from` as a tar unpacked into `target` (made if missing).
async fn upload_tree(
    settings: &Settings,
    client: &mut Client,
    options: &CopyOptions,
    from: &Path,
    target: &Remote,
) -> anyhow::Result<()> {
    make_directory(client, target).await?;
    let write = FileWrite {
        path: target.wire_path(),
        tar: true,
        ..FileWrite::default()
    };
    let mut progress = Progress::on_terminal(target.to_string(), None);
    let source = Source::Tar(from.to_path_buf());
    send(settings, options, target, write, &source, &mut progress).await
}

/// Creates the directory a tree is unpacked into; one that exists already is fine.
async fn make_directory(client: &mut Client, target: &Remote) -> anyhow::Result<()> {
    let op = file_request::Op::Mkdir(FileMkdir {
        path: target.wire_path(),
        parents: false,
        mode: 0,
    });
    match file_op(client, &target.host, op).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::AlreadyExists => Ok(()),
        Err(status) => Err(refused(target, &status)),
    }
}

async fn download(
    settings: &Settings,
    options: &CopyOptions,
    from: &Remote,
    to: &Path,
) -> anyhow::Result<()> {
    let (_client, info, directory) = remote_source(settings, options, from).await?;
    let target = local_target(to, from, &info.path)?;
    let download = Download {
        settings,
        remote: from,
        tar: directory,
        resume_for: Some(options.resume_for),
    };
    if directory {
        let mut progress = Progress::on_terminal(from.to_string(), None);
        let strip = tar_prefix_components(&info.path);
        return download::to_directory(&download, &target, strip, info.mode, &mut progress).await;
    }
    let mut progress = Progress::on_terminal(from.to_string(), Some(info.size));
    download::to_file(&download, &target, info.mode, &mut progress).await?;
    Ok(())
}

/// How many leading components name the directory itself in a host's tar of `path`: its
/// own name, except for `/`, which has none.
fn tar_prefix_components(path: &str) -> u32 {
    u32::from(!path.trim_end_matches('/').is_empty())
}

/// Where a remote source goes on this machine: inside `to` when it is a directory.
fn local_target(to: &Path, from: &Remote, resolved: &str) -> anyhow::Result<PathBuf> {
    let written_as_directory = to.as_os_str().to_string_lossy().ends_with('/');
    if !to.is_dir() {
        if written_as_directory {
            anyhow::bail!("{}: no such directory", to.display());
        }
        return Ok(to.to_path_buf());
    }
    let name = from
        .file_name()
        .or_else(|| resolved.rsplit('/').next().filter(|n| !n.is_empty()))
        .ok_or_else(|| anyhow::anyhow!("{from}: name a file or directory to copy"))?;
    Ok(to.join(name))
}

/// Connects and looks the remote source `from` up: the client, what `from` is, and whether
/// it is a directory (copied only with `-r`).
async fn remote_source(
    settings: &Settings,
    options: &CopyOptions,
    from: &Remote,
) -> anyhow::Result<(Client, FileInfo, bool)> {
    let mut client = client::connect(settings).await?;
    let info = stat(&mut client, from)
        .await
        .map_err(|status| refused(from, &status))?;
    let directory = is_directory(&mut client, from, &info).await;
    if directory && !options.recursive {
        anyhow::bail!("{from}: is a directory (use -r)");
    }
    Ok((client, info, directory))
}

async fn between_hosts(
    settings: &Settings,
    options: &CopyOptions,
    from: &Remote,
    to: &Remote,
) -> anyhow::Result<()> {
    let (mut client, info, directory) = remote_source(settings, options, from).await?;
    let target = into_directory(&mut client, to, from).await?;
    if from.host == to.host {
        let op = file_request::Op::Copy(FileCopy {
            from: from.wire_path(),
            to: target.wire_path(),
            recursive: directory,
            overwrite: true,
        });
        file_op(&mut client, &from.host, op)
            .await
            .map_err(|status| refused(&target, &status))?;
        return Ok(());
    }
    if directory {
        let staging = tempfile::Builder::new()
            .prefix("zpanel-cp-")
            .tempdir()
            .map_err(|e| local_error(&std::env::temp_dir(), &e))?;
        let local = staging.path().join("tree");
        let download = Download {
            settings,
            remote: from,
            tar: true,
            resume_for: Some(options.resume_for),
        };
        let mut progress = Progress::on_terminal(from.to_string(), None);
        let strip = tar_prefix_components(&info.path);
        download::to_directory(&download, &local, strip, info.mode, &mut progress).await?;
        return upload_tree(settings, &mut client, options, &local, &target).await;
    }
    let mut progress = Progress::on_terminal(format!("{from} -> {target}"), Some(info.size));
    let write = FileWrite {
        path: target.wire_path(),
        mode: info.mode & 0o777,
        ..FileWrite::default()
    };
    let source = Source::Remote(from.clone());
    send(settings, options, &target, write, &source, &mut progress).await
}

/// Sends `source` to `target` as `write` describes, resuming for as long as `options` says.
async fn send(
    settings: &Settings,
    options: &CopyOptions,
    target: &Remote,
    write: FileWrite,
    source: &Source,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let upload = Upload {
        settings,
        target,
        write,
        resume_for: options.resume_for,
    };
    upload.run(source, progress).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_tar_names_entries_under_the_directory_except_for_the_root() {
        assert_eq!(tar_prefix_components("/srv/site"), 1);
        assert_eq!(tar_prefix_components("/"), 0);
    }

    #[test]
    fn a_local_directory_receives_the_source_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let from = Remote {
            host: "h".into(),
            path: "/etc/app.conf".into(),
        };
        assert_eq!(
            local_target(dir.path(), &from, "/etc/app.conf").unwrap(),
            dir.path().join("app.conf")
        );
        let file = dir.path().join("copy");
        assert_eq!(local_target(&file, &from, "/etc/app.conf").unwrap(), file);
        let missing = PathBuf::from(format!("{}/missing/", dir.path().display()));
        assert!(local_target(&missing, &from, "/etc/app.conf").is_err());
        let root = Remote {
            host: "h".into(),
            path: String::new(),
        };
        assert_eq!(
            local_target(dir.path(), &root, "/home/ops").unwrap(),
            dir.path().join("ops")
        );
    }
}

//! `zpanel edit HOST:PATH`: downloads the file into a private temporary directory, runs
//! `$VISUAL` or `$EDITOR` (default `vi`) on it, and when it changed writes it back naming the
//! version it read, so a file that changed on the host meanwhile is not overwritten. Then
//! nothing is asked: the edited copy is kept and the lines say how to retry or overwrite.
//! A path that does not exist yet is created (unless someone else creates it first); a
//! symbolic link is edited through, like editors do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tonic::Code;
use zpanel_proto::{FileInfo, FileType, FileWrite};

use super::download::{self, Download};
use super::location::Remote;
use super::progress::Progress;
use super::upload::{Source, Upload, hash_file};
use super::{Changed, local_error, random_id, refused, stat};
use crate::client;
use crate::config::Settings;

/// The prefix of the temporary directories edits happen in.
const WORKDIR_PREFIX: &str = "zpanel-edit-";

pub struct EditOptions {
    /// Start from this local copy (one kept after a conflict) instead of the host's file,
    /// and save it even if the editor leaves it as it is.
    pub from: Option<PathBuf>,
    /// Save without checking that the host's file is still the version read.
    pub force: bool,
    /// How long to keep trying to resume after the connection drops.
    pub resume_for: Duration,
}

/// Edits the file; returns the exit code of `zpanel` (1 when it changed on the host).
pub async fn edit(
    settings: &Settings,
    remote: &Remote,
    options: &EditOptions,
) -> anyhow::Result<i32> {
    // Ctrl-C stops the edit before the editor runs and after it; while it runs, it is the
    // editor's.
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut client = client::connect(settings).await?;
    let (remote, current) = tokio::select! {
        found = resolve(&mut client, remote) => found?,
        _ = interrupts.recv() => anyhow::bail!("interrupted"),
    };
    let remote = &remote;
    let (copy, workdir) = match &options.from {
        Some(from) => (from.clone(), None),
        None => {
            let workdir = tempfile::Builder::new()
                .prefix(WORKDIR_PREFIX)
                .tempdir()
                .context("cannot make a temporary directory")?;
            let name = remote.file_name().unwrap_or("file");
            (workdir.path().join(name), Some(workdir))
        }
    };
    // What the editor starts from, its sha256 and the version it is.
    let (original, expected_version) = match (&options.from, current) {
        (Some(_), current) => (None, current.map(|info| info.version)),
        (None, Some(_)) => {
            let download = Download {
                settings,
                remote,
                tar: false,
                resume_for: Some(options.resume_for),
            };
            let mut progress = Progress::hidden();
            let info = tokio::select! {
                info = download::to_file(&download, &copy, 0o600, &mut progress) => info?,
                _ = interrupts.recv() => anyhow::bail!("interrupted"),
            };
            let sha256 = hash_file(&copy).await?;
            (Some(sha256), Some(info.version))
        }
        (None, None) => {
            std::fs::write(&copy, b"").map_err(|e| local_error(&copy, &e))?;
            let sha256 = hash_file(&copy).await?;
            (Some(sha256), None)
        }
    };
    if let Err(e) = run_editor(&copy).await {
        let kept = keep(workdir, &copy);
        anyhow::bail!("{e}; {remote} is unchanged; your copy is in {kept}");
    }
    // A listener made now hears only the Ctrl-C pressed from now on, not the editor's.
    let mut interrupts = signal(SignalKind::interrupt())?;
    let edited = hash_file(&copy).await?;
    if original.as_deref() == Some(edited.as_str()) {
        eprintln!("{remote}: no changes");
        return Ok(0);
    }
    let write = FileWrite {
        path: remote.wire_path(),
        expected_version: if options.force {
            String::new()
        } else {
            expected_version.clone().unwrap_or_default()
        },
        create_only: !options.force && expected_version.is_none(),
        upload_id: random_id()?,
        sha256: edited,
        ..FileWrite::default()
    };
    let upload = Upload {
        settings,
        target: remote,
        write,
        resume_for: options.resume_for,
    };
    let source = Source::File(copy.clone());
    let mut progress = Progress::hidden();
    let saved = tokio::select! {
        saved = upload.run(&source, &mut progress) => saved,
        _ = interrupts.recv() => Err(anyhow::anyhow!("interrupted")),
    };
    match saved {
        Ok(_) => {
            if options.from.is_some() {
                forget_kept(&copy);
            }
            Ok(0)
        }
        Err(e) if e.is::<Changed>() => {
            let kept = keep(workdir, &copy);
            eprintln!(
                "zpanel: {remote}: changed on disk since it was read; your edit is kept in {kept}"
            );
            eprintln!("zpanel: retry:     zpanel edit {remote} --from {kept}");
            eprintln!("zpanel: overwrite: zpanel edit {remote} --from {kept} --force");
            Ok(1)
        }
        Err(e) => {
            let kept = keep(workdir, &copy);
            anyhow::bail!("{e:#}; your edit is kept in {kept}")
        }
    }
}

/// Symbolic links followed at most to find the file to edit.
const MAX_LINKS: usize = 8;

/// The file to edit: `remote`, or the file it links to (editors edit through a symlink),
/// and what it is now (`None`: it does not exist yet).
async fn resolve(
    client: &mut crate::client::Client,
    remote: &Remote,
) -> anyhow::Result<(Remote, Option<FileInfo>)> {
    let mut remote = remote.clone();
    for _ in 0..MAX_LINKS {
        match stat(client, &remote).await {
            Ok(info) if info.r#type() == FileType::Symlink => remote = link_target(&remote, &info),
            Ok(info) if info.r#type() == FileType::Directory => {
                anyhow::bail!("{remote}: is a directory")
            }
            Ok(info) => return Ok((remote, Some(info))),
            Err(status) if status.code() == Code::NotFound => return Ok((remote, None)),
            Err(status) => return Err(refused(&remote, &status)),
        }
    }
    anyhow::bail!("{remote}: too many levels of symbolic links")
}

/// Where the symlink `info` (at `remote`) points.
fn link_target(remote: &Remote, info: &FileInfo) -> Remote {
    let target = &info.symlink_target;
    let path = if target.starts_with('/') {
        target.clone()
    } else {
        let dir = info.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{target}")
    };
    Remote {
        host: remote.host.clone(),
        path,
    }
}

/// Keeps the temporary directory (it is removed otherwise); returns the copy's path.
fn keep(workdir: Option<tempfile::TempDir>, copy: &Path) -> String {
    if let Some(workdir) = workdir {
        let _ = workdir.keep();
    }
    copy.display().to_string()
}

/// A kept copy was saved: removes it, and the directory an earlier edit kept it in.
fn forget_kept(copy: &Path) {
    let _ = std::fs::remove_file(copy);
    if let Some(dir) = copy.parent()
        && dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(WORKDIR_PREFIX))
    {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The editor to run: `$VISUAL`, `$EDITOR`, or `vi`.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".into())
}

/// Runs the editor on `path` in this terminal. The editor's value may carry arguments
/// (`code --wait`), so a shell runs it, with the path as a separate argument.
async fn run_editor(path: &Path) -> anyhow::Result<()> {
    let editor = editor();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .await
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        anyhow::bail!("the editor {editor:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_point_relative_to_their_directory_or_absolutely() {
        let remote = Remote {
            host: "h".into(),
            path: "conf".into(),
        };
        let link = |path: &str, target: &str| FileInfo {
            path: path.into(),
            symlink_target: target.into(),
            ..FileInfo::default()
        };
        assert_eq!(
            link_target(&remote, &link("/srv/app/conf", "../shared/app.conf")).path,
            "/srv/app/../shared/app.conf"
        );
        assert_eq!(
            link_target(&remote, &link("/srv/app/conf", "/etc/app.conf")).to_string(),
            "h:/etc/app.conf"
        );
    }
}

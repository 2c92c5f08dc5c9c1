//! Directories travel as tar streams (`cp -r`). On this machine the system's `tar` packs and
//! unpacks them, streaming through a pipe so memory stays bounded whatever the size. GNU tar
//! refuses members with `..`, strips leading `/`, and creates symlinks that point outside
//! only after everything else, so an archive cannot write outside the directory it unpacks
//! into; files get this user's ownership.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Bytes of tar's error output kept for the message.
const STDERR_KEPT: usize = 4096;

/// `tar` packing a local directory: its archive comes out of `output`.
#[derive(Debug)]
pub struct Pack {
    child: Child,
    pub output: ChildStdout,
    stderr: JoinHandle<String>,
}

/// Packs the content of `dir` (its entries, not the directory itself).
pub fn pack(dir: &Path) -> anyhow::Result<Pack> {
    let mut child = tar_command()
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let output = child.stdout.take().context("tar has no stdout")?;
    let stderr = keep_stderr(&mut child);
    Ok(Pack {
        child,
        output,
        stderr,
    })
}

impl Pack {
    /// Waits for tar after its output ended: an error if it failed (an unreadable file).
    pub async fn finish(mut self) -> anyhow::Result<()> {
        finished(&mut self.child, self.stderr).await
    }
}

/// `tar` unpacking into a local directory what is written to `input`.
#[derive(Debug)]
pub struct Unpack {
    child: Child,
    pub input: ChildStdin,
    stderr: JoinHandle<String>,
}

/// Unpacks into `dir`, which must exist, without the first `strip` components of every
/// name (a host's tar names its entries under the directory's own name).
pub fn unpack(dir: &Path, strip: u32) -> anyhow::Result<Unpack> {
    let mut child = tar_command()
        .arg("-C")
        .arg(dir)
        .args(["-xf", "-", "--no-same-owner"])
        .arg(format!("--strip-components={strip}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let input = child.stdin.take().context("tar has no stdin")?;
    let stderr = keep_stderr(&mut child);
    Ok(Unpack {
        child,
        input,
        stderr,
    })
}

impl Unpack {
    /// Ends the archive and waits for tar to write the last files.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.input
            .shutdown()
            .await
            .context("cannot end the archive")?;
        drop(self.input);
        finished(&mut self.child, self.stderr).await
    }

    /// Stops tar where it is (the archive will not be completed).
    pub async fn abort(mut self) {
        let _ = self.child.kill().await;
    }
}

fn tar_command() -> Command {
    let mut command = Command::new("tar");
    command.kill_on_drop(true);
    command
}

/// Collects the start of tar's error output while it runs.
fn keep_stderr(child: &mut Child) -> JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let Some(mut stderr) = stderr else {
            return String::new();
        };
        let mut kept = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = STDERR_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

async fn finished(child: &mut Child, stderr: JoinHandle<String>) -> anyhow::Result<()> {
    let status = child.wait().await.context("cannot wait for tar")?;
    let stderr = stderr.await.unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let first = stderr
        .lines()
        .map(|l| l.trim_start_matches("tar: ").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("it failed");
    anyhow::bail!("tar: {first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_packed_directory_unpacks_the_same() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir(from.path().join("sub")).unwrap();
        std::fs::write(from.path().join("sub/a.txt"), b"hello").unwrap();
        let to = tempfile::tempdir().unwrap();
        let mut pack = pack(from.path()).unwrap();
        let mut unpack = unpack(to.path(), 0).unwrap();
        tokio::io::copy(&mut pack.output, &mut unpack.input)
            .await
            .unwrap();
        pack.finish().await.unwrap();
        unpack.finish().await.unwrap();
        assert_eq!(
            std::fs::read(to.path().join("sub/a.txt")).unwrap(),
            b"hello"
        );
    }

    #[tokio::test]
    async fn the_directory_name_a_host_puts_first_is_stripped() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir(from.path().join("site")).unwrap();
        std::fs::write(from.path().join("site/index.html"), b"hi").unwrap();
        let to = tempfile::tempdir().unwrap();
        let mut pack = pack(from.path()).unwrap();
        let mut unpack = unpack(to.path(), 2).unwrap();
        tokio::io::copy(&mut pack.output, &mut unpack.input)
            .await
            .unwrap();
        pack.finish().await.unwrap();
        unpack.finish().await.unwrap();
        assert_eq!(std::fs::read(to.path().join("index.html")).unwrap(), b"hi");
    }

    #[tokio::test]
    async fn a_broken_archive_fails_with_tars_reason() {
        let to = tempfile::tempdir().unwrap();
        let mut unpack = unpack(to.path(), 0).unwrap();
        unpack.input.write_all(&[7u8; 1000]).await.unwrap();
        let e = unpack.finish().await.unwrap_err().to_string();
        assert!(e.starts_with("tar: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

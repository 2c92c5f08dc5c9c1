//! Runs the browser scripts in `tests/browser/` (node and playwright-core driving Debian's
//! Chromium) and talks with them over their standard input and output: a line `@@ COMMAND`
//! asks the Rust test to do something (stop or start the control plane…), and the script
//! waits for one line back. Everything else the script prints is kept for the failure
//! message. Nothing here installs anything: `scripts/test` does.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::ControlPlane;

/// The folder holding the browser scripts and their `package.json`.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where a browser test leaves its screenshots: `target/<profile>/browser/`.
pub fn artifacts_dir() -> PathBuf {
    crate::bin_dir().join("browser")
}

/// The Chromium the scripts launch (`ZPANEL_CHROMIUM`, or Debian's).
pub fn chromium() -> PathBuf {
    std::env::var_os("ZPANEL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// A running browser script.
pub struct BrowserScript {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// What the script printed so far (stdout and stderr, as they came).
    transcript: Arc<Mutex<String>>,
    stderr: tokio::task::JoinHandle<()>,
}

impl BrowserScript {
    /// Starts `node tests/browser/SCRIPT` with `env` added to its environment. Fails with
    /// what to install when node, Chromium or the scripts' packages are missing.
    pub fn spawn(script: &str, env: &[(&str, &str)]) -> anyhow::Result<BrowserScript> {
        let dir = scripts_dir();
        let install = "run scripts/test once, or: apt-get install chromium nodejs npm \
                       && (cd tests/browser && npm ci)";
        if !chromium().exists() {
            bail!("{} is missing: {install}", chromium().display());
        }
        if !dir.join("node_modules/playwright-core").exists() {
            bail!(
                "{} has no node_modules/playwright-core: {install}",
                dir.display()
            );
        }
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .current_dir(&dir)
            .envs(env.iter().copied())
            .env("ZPANEL_CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run node ({install})"))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut stderr = child.stderr.take().context("stderr")?;
        let transcript = Arc::new(Mutex::new(String::new()));
        let stderr = tokio::spawn({
            let transcript = transcript.clone();
            async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut buffer).await {
                    let text = String::from_utf8_lossy(&buffer[..n]);
                    transcript.lock().expect("transcript").push_str(&text);
                }
            }
        });
        Ok(BrowserScript {
            child,
            stdin,
            stdout,
            transcript,
            stderr,
        })
    }

    /// The next `@@ COMMAND` the script sends, or `None` once it has closed its output
    /// (it is done). Fails when nothing comes within `timeout`.
    pub async fn next_command(&mut self, timeout: Duration) -> anyhow::Result<Option<String>> {
        let read = async {
            while let Some(line) = self.stdout.next_line().await? {
                self.note(&line);
                if let Some(command) = line.strip_prefix("@@ ") {
                    return Ok(Some(command.trim().to_string()));
                }
            }
            Ok(None)
        };
        tokio::time::timeout(timeout, read)
            .await
            .with_context(|| format!("the browser script was silent for {timeout:?}"))?
    }

    /// Answers each command the script sends with `answer` until the script is done; the
    /// first failure (the script silent for `silence`, an answer that failed, a reply that
    /// could not be sent), if any.
    pub async fn serve<F, Fut>(&mut self, silence: Duration, mut answer: F) -> Option<String>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<String>>,
    {
        loop {
            let reply = match self.next_command(silence).await {
                Ok(Some(command)) => answer(command).await,
                Ok(None) => return None,
                Err(e) => Err(e),
            };
            let sent = match reply {
                Ok(reply) => self.reply(&reply).await.context("cannot answer the script"),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                return Some(format!("{e:#}"));
            }
        }
    }

    /// Answers the last command, letting the script go on.
    pub async fn reply(&mut self, line: &str) -> anyhow::Result<()> {
        self.note(&format!("(test: {line})"));
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Waits for the script to exit; its status and everything it printed.
    pub async fn finish(mut self, timeout: Duration) -> (anyhow::Result<ExitStatus>, String) {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.context("waiting for node"),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(anyhow::anyhow!(
                    "the browser script did not end within {timeout:?}"
                ))
            }
        };
        // What it printed after its last command (its verdict, or why it failed).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                self.note(&line);
            }
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stderr).await;
        let transcript = self.transcript.lock().expect("transcript").clone();
        (status, transcript)
    }

    /// Waits for the script to end and fails the test unless it passed and this side saw no
    /// `failure`; the message holds everything the script printed and the end of `cp`'s log.
    /// `test` names the test in that message.
    pub async fn assert_passed(self, test: &str, failure: Option<String>, cp: &ControlPlane) {
        let (status, transcript) = self.finish(Duration::from_secs(30)).await;
        let passed = failure.is_none() && status.as_ref().is_ok_and(|s| s.success());
        assert!(
            passed,
            "{test} failed ({}):\n{transcript}\n--- control plane log (last 40 lines) ---\n{}",
            failure.unwrap_or_else(|| match &status {
                Ok(status) => format!("node: {status}"),
                Err(e) => format!("{e:#}"),
            }),
            last_lines(&cp.log(), 40),
        );
    }

    fn note(&self, line: &str) {
        let mut transcript = self.transcript.lock().expect("transcript");
        transcript.push_str(line);
        transcript.push('\n');
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

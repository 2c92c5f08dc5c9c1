//! The `zpanel` CLI in a real pseudo-terminal, as a person at a terminal runs it: type into
//! it, read what its terminal shows, resize the window, and see how it exits.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

use crate::{Cli, bin};

/// A `zpanel` process whose stdin, stdout and stderr are one pseudo-terminal.
pub struct PtyCli {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    /// Everything the terminal has shown, appended by a reader thread.
    shown: Arc<Mutex<Vec<u8>>>,
}

impl PtyCli {
    /// Starts `zpanel ARGS` as `cli` in a `cols`x`rows` terminal.
    pub fn spawn(cli: &Cli, args: &[&str], cols: u16, rows: u16) -> anyhow::Result<PtyCli> {
        let pair = native_pty_system().openpty(pty_size(cols, rows))?;
        let mut command = CommandBuilder::new(bin("zpanel"));
        command.args(args);
        command.env("ZPANEL_CONFIG_DIR", cli.config_dir.path());
        command.env_remove("ZPANEL_TOKEN");
        let child = pair.slave.spawn_command(command)?;
        // Only the child holds the terminal's other end: its exit ends our reads.
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader()?;
        let writer = pair.master.take_writer()?;
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(PtyCli {
            master: pair.master,
            writer,
            child,
            shown,
        })
    }

    /// Types `text` (Enter is `\r`, as a keyboard sends it).
    pub fn type_text(&mut self, text: &str) {
        self.writer
            .write_all(text.as_bytes())
            .and_then(|()| self.writer.flush())
            .expect("type into the terminal");
    }

    /// Resizes the window: the process gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) {
        self.master
            .resize(pty_size(cols, rows))
            .expect("resize the terminal");
    }

    /// Everything the terminal has shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap_or_else(|p| p.into_inner())).to_string()
    }

    /// Waits until the terminal has shown `needle`; false after `timeout`.
    pub async fn shows(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.text().contains(needle) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the terminal has shown `needle`, and panics with the screen if it does
    /// not within `timeout`.
    pub async fn expect(&self, needle: &str, timeout: Duration) {
        assert!(
            self.shows(needle, timeout).await,
            "{needle:?} never appeared on the terminal, which shows: {:?}",
            self.text()
        );
    }

    /// Waits for the process to exit and returns its exit code; an error when a signal
    /// killed it or it still runs after `timeout`.
    pub async fn exit_code(&mut self, timeout: Duration) -> anyhow::Result<u32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if let Some(signal) = status.signal() {
                    anyhow::bail!("zpanel was killed by {signal}");
                }
                return Ok(status.exit_code());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow::anyhow!(
                    "zpanel still runs after {timeout:?}; the terminal shows: {:?}",
                    self.text()
                ))
                .context("waiting for zpanel to exit");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PtyCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn pty_size(cols: u16, rows: u16) -> PtySize {
    PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

//! Commands run on the host. A job lives in [`Jobs`], not in a channel: its output waits in
//! replay buffers (bounded by the flow-control window, which back-pressures the process)
//! until the client acknowledges it, so a client can detach (connection lost, control plane
//! restarted) and re-attach from the offsets it has, losing and repeating nothing.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::watch;
use zpanel_proto::{ProcessExit, StreamKind};
use zpanel_shared::replay::{SharedReplay, StreamError};

use crate::input::{Input, InputCommand, InputError, InputWriter};

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;
/// After a cancel's SIGTERM, how long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "exec {0} not found on this host (finished and released, expired, or the daemon restarted)"
    )]
    NotFound(String),
    #[error("exec {0} already exists")]
    Duplicate(String),
    #[error("empty command")]
    EmptyCommand,
    #[error("{0}")]
    Spawn(String),
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("{0}")]
    Input(#[from] InputError),
}

pub struct ExecJob {
    pub id: String,
    pgid: Pid,
    pub stdout: SharedReplay,
    pub stderr: SharedReplay,
    stdin: Input,
    exit: watch::Sender<Option<ProcessExit>>,
    /// Increments per attachment; an attachment only detaches the job if still current.
    attachment: AtomicU64,
    detached_since: Mutex<Option<Instant>>,
    released: AtomicBool,
}

impl ExecJob {
    pub fn stream(&self, kind: StreamKind) -> Option<&SharedReplay> {
        match kind {
            StreamKind::Stdout => Some(&self.stdout),
            StreamKind::Stderr => Some(&self.stderr),
            StreamKind::Stdin => None,
        }
    }

    /// Accepts stdin from the client, dropping repeats. Never waits.
    pub fn stdin(&self, offset: u64, payload: Bytes, eof: bool) -> Result<(), ExecError> {
        Ok(self.stdin.accept(offset, payload, eof)?)
    }

    pub fn stdin_offset(&self) -> u64 {
        self.stdin.offset()
    }

    /// Stdin bytes written to the process (or discarded because it closed its stdin).
    pub fn stdin_written(&self) -> watch::Receiver<u64> {
        self.stdin.written()
    }

    pub fn exit(&self) -> watch::Receiver<Option<ProcessExit>> {
        self.exit.subscribe()
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Sends a signal to the job's process group. A SIGTERM is followed by SIGKILL if the
    /// job is still running after a grace period.
    pub fn signal(self: &Arc<Self>, signal: i32) {
        let Ok(signal) = Signal::try_from(signal) else {
            return;
        };
        if self.has_exited() {
            return;
        }
        let _ = killpg(self.pgid, signal);
        if signal == Signal::SIGTERM {
            let job = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(KILL_GRACE).await;
                if !job.has_exited() {
                    let _ = killpg(job.pgid, Signal::SIGKILL);
                }
            });
        }
    }

    /// Marks a new attachment and returns its number.
    pub fn attach(&self) -> u64 {
        *self
            .detached_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.attachment.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Detaches `attachment` if it is still the current one.
    pub fn detach(&self, attachment: u64, release: bool) {
        if self.attachment.load(Ordering::SeqCst) == attachment {
            *self
                .detached_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            if release {
                self.released.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Moves the acknowledged offset of both output streams to where a re-attaching client
    /// is, checking that everything from there on is still buffered.
    pub fn resume_from(&self, stdout_offset: u64, stderr_offset: u64) -> Result<(), StreamError> {
        for (stream, offset) in [(&self.stdout, stdout_offset), (&self.stderr, stderr_offset)] {
            stream.with(|buffer| {
                if offset < buffer.acked() {
                    return Err(StreamError::ReplayLost {
                        offset,
                        start: buffer.acked(),
                    });
                }
                buffer.ack(offset)
            })?;
        }
        Ok(())
    }
}

/// All jobs of this daemon.
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<ExecJob>>>,
    window: usize,
    detach_timeout: Duration,
}

impl Jobs {
    pub fn new(window: usize, detach_timeout: Duration) -> Arc<Jobs> {
        Arc::new(Jobs {
            jobs: Mutex::new(HashMap::new()),
            window,
            detach_timeout,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecJob>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, exec_id: &str) -> Result<Arc<ExecJob>, ExecError> {
        self.map()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ExecError::NotFound(exec_id.into()))
    }

    /// Starts a command in its own process group.
    pub fn start(
        &self,
        exec_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<Arc<ExecJob>, ExecError> {
        let (program, args) = argv.split_first().ok_or(ExecError::EmptyCommand)?;
        if program.is_empty() {
            return Err(ExecError::EmptyCommand);
        }
        if self.map().contains_key(exec_id) {
            return Err(ExecError::Duplicate(exec_id.into()));
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .current_dir(home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| ExecError::Spawn(spawn_error(program, &e)))?;
        let pgid = Pid::from_raw(child.id().map(|id| id as i32).unwrap_or(0));
        let (stdin, stdin_writer) = Input::new();
        let job = Arc::new(ExecJob {
            id: exec_id.into(),
            pgid,
            stdout: SharedReplay::new(self.window),
            stderr: SharedReplay::new(self.window),
            stdin,
            exit: watch::Sender::new(None),
            attachment: AtomicU64::new(0),
            detached_since: Mutex::new(None),
            released: AtomicBool::new(false),
        });
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        if let Some(stdout) = stdout {
            tokio::spawn(read_pipe(stdout, job.clone(), StreamKind::Stdout));
        }
        if let Some(stderr) = stderr {
            tokio::spawn(read_pipe(stderr, job.clone(), StreamKind::Stderr));
        }
        tokio::spawn(write_stdin(stdin, stdin_writer));
        tokio::spawn(wait_child(child, job.clone(), timeout));
        self.map().insert(exec_id.into(), job.clone());
        Ok(job)
    }

    /// Forgets released jobs and jobs detached for too long (killing those still running).
    pub fn reap(&self) {
        let now = Instant::now();
        self.map().retain(|_, job| {
            let detached_for = job
                .detached_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|since| now - since);
            let released = job.released.load(Ordering::SeqCst) && job.has_exited();
            let expired = detached_for.is_some_and(|d| d > self.detach_timeout);
            if expired && !job.has_exited() {
                tracing::info!(exec = %job.id, "killing command nobody re-attached to");
                let _ = killpg(job.pgid, Signal::SIGKILL);
            }
            !(released || expired)
        });
    }

    /// Runs [`Jobs::reap`] every second, for the daemon's life.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.reap();
        }
    }
}

fn spawn_error(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{program}: command not found"),
        std::io::ErrorKind::PermissionDenied => format!("{program}: permission denied"),
        _ => format!("{program}: {e}"),
    }
}

/// Moves a pipe's bytes into the job's replay buffer, waiting while the window is full.
async fn read_pipe(mut pipe: impl AsyncRead + Unpin, job: Arc<ExecJob>, kind: StreamKind) {
    let Some(stream) = job.stream(kind) else {
        return;
    };
    loop {
        let space = stream.wait_space().await;
        let mut buf = BytesMut::with_capacity(space.min(READ_CHUNK));
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => stream.with(|buffer| buffer.push(buf.freeze())),
        }
    }
    stream.with(|buffer| buffer.finish());
}

/// Writes client stdin to the process. Bytes the process no longer reads (it closed stdin
/// or exited) are discarded but still counted. Ends when the job is forgotten.
async fn write_stdin(mut pipe: Option<ChildStdin>, mut input: InputWriter) {
    while let Some(command) = input.recv().await {
        match command {
            InputCommand::Data(bytes) => {
                if let Some(writer) = pipe.as_mut()
                    && writer.write_all(&bytes).await.is_err()
                {
                    pipe = None;
                }
                input.wrote(bytes.len());
            }
            InputCommand::Eof => pipe = None,
        }
    }
}

async fn wait_child(mut child: Child, job: Arc<ExecJob>, timeout: Duration) {
    let mut timed_out = false;
    let status = if timeout.is_zero() {
        child.wait().await
    } else {
        tokio::select! {
            status = child.wait() => status,
            _ = tokio::time::sleep(timeout) => {
                timed_out = true;
                let _ = killpg(job.pgid, Signal::SIGKILL);
                child.wait().await
            }
        }
    };
    let exit = match status {
        Ok(status) => ProcessExit {
            code: status.code().unwrap_or(0),
            signal: status.signal().unwrap_or(0),
            timed_out,
        },
        Err(e) => {
            tracing::warn!(exec = %job.id, "cannot wait for the command: {e}");
            ProcessExit {
                code: 255,
                signal: 0,
                timed_out,
            }
        }
    };
    job.exit.send_replace(Some(exit));
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpanel_shared::replay::Read;

    async fn read_all(stream: &SharedReplay) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match stream.read_at(out.len() as u64, 1 << 20).await.unwrap() {
                Read::Data(bytes) => out.extend_from_slice(&bytes),
                Read::Eof => return out,
                Read::Pending => unreachable!(),
            }
        }
    }

    #[tokio::test]
    async fn runs_a_command_with_stdin_and_exit_code() {
        let jobs = Jobs::new(1 << 20, Duration::from_secs(60));
        let argv = ["sh", "-c", "cat; echo oops >&2; exit 3"].map(String::from);
        let job = jobs.start("a", &argv, Duration::ZERO).unwrap();
        job.stdin(0, Bytes::from_static(b"hello "), false).unwrap();
        job.stdin(0, Bytes::from_static(b"hello "), false).unwrap(); // a repeat is dropped
        job.stdin(6, Bytes::from_static(b"world"), true).unwrap();
        assert_eq!(read_all(&job.stdout).await, b"hello world");
        assert_eq!(read_all(&job.stderr).await, b"oops\n");
        let mut exit = job.exit();
        let exit = exit.wait_for(Option::is_some).await.unwrap().unwrap();
        assert_eq!((exit.code, exit.signal, exit.timed_out), (3, 0, false));
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let jobs = Jobs::new(1 << 20, Duration::from_secs(60));
        let argv = ["sh", "-c", "sleep 30 & sleep 30"].map(String::from);
        let job = jobs.start("t", &argv, Duration::from_millis(200)).unwrap();
        let mut exit = job.exit();
        let exit = exit.wait_for(Option::is_some).await.unwrap().unwrap();
        assert!(exit.timed_out);
        assert_eq!(exit.signal, 9);
        // the background sleep died with its group, so stdout reaches its end
        assert_eq!(read_all(&job.stdout).await, b"");
    }

    #[tokio::test]
    async fn unknown_commands_fail_to_spawn() {
        let jobs = Jobs::new(1 << 20, Duration::from_secs(60));
        let err = jobs
            .start("x", &["no-such-command-zp".to_string()], Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "no-such-command-zp: command not found");
    }
}

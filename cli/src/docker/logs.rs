//! `logs`: a container's stdout to our stdout and its stderr to our stderr, each written once
//! and in order, until the logs end (with `-f`: until the container stops or is removed).
//! `run` follows the logs of what it started with the same code.

use futures_util::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zpanel_proto::{DockerLogs, DockerLogsRequest, StreamKind};

use crate::client::{self, Client, call_failed};
use crate::config::Settings;
use crate::streaming::{Output, WriteError};

/// Bytes of logs held in memory before they are written out even while more are ready.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// The exit code when our stdout or stderr closed (`| head`), as SIGPIPE would end us.
pub const OUTPUT_CLOSED_EXIT: i32 = 128 + 13;

/// How printing the logs ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsEnd {
    /// The logs ended.
    Ended,
    /// Our stdout or stderr is closed.
    OutputClosed,
}

/// `logs [-f] [--tail N] [-t] [--since S] C`: the exit code of `zpanel`.
pub async fn logs(settings: &Settings, host: &str, logs: DockerLogs) -> anyhow::Result<i32> {
    let mut client = client::connect(settings).await?;
    Ok(match print(&mut client, host, logs).await? {
        LogsEnd::Ended => 0,
        LogsEnd::OutputClosed => OUTPUT_CLOSED_EXIT,
    })
}

/// Prints the logs `logs` asks for until they end.
pub async fn print(client: &mut Client, host: &str, logs: DockerLogs) -> anyhow::Result<LogsEnd> {
    let request = DockerLogsRequest {
        host: host.into(),
        logs: Some(logs),
    };
    let mut chunks = client
        .docker_logs(request)
        .await
        .map_err(call_failed)?
        .into_inner();
    // Chunks are gathered in memory and written out whenever no further chunk is ready
    // (or enough is held): a container printing fast costs a write per batch, not per line.
    let mut held = Streams::new(Vec::new(), Vec::new());
    let mut out = (tokio::io::stdout(), tokio::io::stderr());
    loop {
        let next = match chunks.message().now_or_never() {
            Some(next) => next,
            None => {
                if held.drain_into(&mut out).await.is_err() {
                    return Ok(LogsEnd::OutputClosed);
                }
                chunks.message().await
            }
        };
        let Some(chunk) = next.map_err(call_failed)? else {
            break;
        };
        if let Err(WriteError::Broken(e)) = held.write(chunk).await {
            anyhow::bail!("the logs arrived out of order: {e}");
        }
        if held.held() >= WRITE_BATCH_BYTES && held.drain_into(&mut out).await.is_err() {
            return Ok(LogsEnd::OutputClosed);
        }
    }
    if held.drain_into(&mut out).await.is_err() {
        return Ok(LogsEnd::OutputClosed);
    }
    Ok(LogsEnd::Ended)
}

/// The two streams of the logs on their way to two local writers.
struct Streams<O, E> {
    stdout: (O, Output),
    stderr: (E, Output),
}

impl<O: AsyncWrite + Unpin, E: AsyncWrite + Unpin> Streams<O, E> {
    fn new(stdout: O, stderr: E) -> Self {
        Streams {
            stdout: (stdout, Output::at(0)),
            stderr: (stderr, Output::at(0)),
        }
    }

    async fn write(&mut self, chunk: zpanel_proto::StreamChunk) -> Result<(), WriteError> {
        if chunk.stream() == StreamKind::Stderr {
            let (out, output) = &mut self.stderr;
            output.write(out, chunk).await?;
        } else {
            let (out, output) = &mut self.stdout;
            output.write(out, chunk).await?;
        }
        Ok(())
    }
}

impl Streams<Vec<u8>, Vec<u8>> {
    /// Bytes held, not yet written out.
    fn held(&self) -> usize {
        self.stdout.0.len() + self.stderr.0.len()
    }

    /// Writes what is held to the real stdout and stderr, and flushes them.
    async fn drain_into(
        &mut self,
        (stdout, stderr): &mut (impl AsyncWrite + Unpin, impl AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        for (held, out) in [
            (&mut self.stdout.0, stdout as &mut (dyn AsyncWrite + Unpin)),
            (&mut self.stderr.0, stderr as &mut (dyn AsyncWrite + Unpin)),
        ] {
            if !held.is_empty() {
                out.write_all(held).await?;
                out.flush().await?;
                held.clear();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use zpanel_proto::StreamChunk;

    fn chunk(stream: StreamKind, offset: u64, text: &'static str) -> StreamChunk {
        StreamChunk {
            stream: stream as i32,
            offset,
            payload: Bytes::from_static(text.as_bytes()),
            eof: false,
        }
    }

    #[tokio::test]
    async fn each_stream_goes_to_its_own_writer_once_and_in_order() {
        let mut streams = Streams::new(Vec::new(), Vec::new());
        for c in [
            chunk(StreamKind::Stdout, 0, "one\n"),
            chunk(StreamKind::Stderr, 0, "oops\n"),
            chunk(StreamKind::Stdout, 4, "two\n"),
            chunk(StreamKind::Stdout, 4, "two\n"),
        ] {
            streams.write(c).await.unwrap();
        }
        assert_eq!(streams.stdout.0, b"one\ntwo\n");
        assert_eq!(streams.stderr.0, b"oops\n");
        let gap = streams.write(chunk(StreamKind::Stderr, 9, "x")).await;
        assert!(matches!(gap, Err(WriteError::Broken(_))));
    }
}

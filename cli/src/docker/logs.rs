//! `logs`: a container's stdout to our stdout and its stderr to our stderr, each written once
//! and in order, until the logs end (with `-f`: until the container stops or is removed).
//! `run` follows the logs of what it started with the same code.

use tokio::io::AsyncWrite;
use zpanel_proto::{DockerLogs, DockerLogsRequest, StreamKind};

use crate::client::{self, Client, call_failed};
use crate::config::Settings;
use crate::streaming::{Output, WriteError};

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
    let mut out = Streams::new(tokio::io::stdout(), tokio::io::stderr());
    while let Some(chunk) = chunks.message().await.map_err(call_failed)? {
        match out.write(chunk).await {
            Ok(()) => {}
            Err(WriteError::Closed(_)) => return Ok(LogsEnd::OutputClosed),
            Err(WriteError::Broken(e)) => anyhow::bail!("the logs arrived out of order: {e}"),
        }
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

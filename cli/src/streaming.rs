//! What `exec` and `shell` share: output written once in order and acknowledged, local input
//! kept until the host holds it, the pacing of re-attaching after a dropped connection, and
//! how a remote process's end becomes `zpanel`'s exit code.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Code;
use zpanel_proto::{ProcessExit, StreamChunk, StreamKind};
use zpanel_shared::backoff::Backoff;
use zpanel_shared::frame::MAX_CHUNK_BYTES;
use zpanel_shared::replay::{InboundCursor, SharedReplay, StreamError, StreamSender};

/// Acknowledge output at least this often (bytes), and whenever the stream goes quiet for
/// [`ACK_DELAY`].
const ACK_EVERY: u64 = 256 * 1024;
pub const ACK_DELAY: Duration = Duration::from_millis(2);

/// Whether a failed call is worth re-attaching after (the connection, not the request, failed).
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal | Code::Aborted
    )
}

/// The exit code of `zpanel` for a remote process's end: its code, or `128+N` when signal N
/// killed it, as a shell reports it.
pub fn exit_code(exit: &ProcessExit) -> i32 {
    if exit.signal != 0 {
        128 + exit.signal
    } else {
        exit.code
    }
}

/// A streaming call's request stream, fed by the returned sender.
pub fn request_stream<T: Send + 'static>(
    capacity: usize,
) -> (mpsc::Sender<T>, impl Stream<Item = T> + Send + 'static) {
    let (tx, rx) = mpsc::channel(capacity);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, stream)
}

/// Waits (briefly) for the control plane to end a call we half-closed, so it sees a clean end
/// rather than a dropped connection.
pub async fn drain<T>(responses: &mut tonic::Streaming<T>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = responses.message().await {}
    })
    .await;
}

/// The first reply of a streaming call; a stream that ends before it counts as a dropped
/// connection.
pub async fn first_reply<T>(responses: &mut tonic::Streaming<T>) -> Result<T, tonic::Status> {
    responses
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("the control plane closed the stream"))
}

// === output ===

/// Why a chunk of output could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// The chunk does not continue the stream.
    Broken(StreamError),
    /// Our own stdout or stderr is closed (`| head`), or the local file could not be
    /// written.
    Closed(std::io::Error),
}

/// One output stream on its way to a local file descriptor: where it continues, what has
/// been acknowledged, and whether it ended.
#[derive(Debug)]
pub struct Output {
    cursor: InboundCursor,
    acked: u64,
    eof: bool,
}

impl Output {
    /// A stream whose next byte is at `offset`.
    pub fn at(offset: u64) -> Self {
        Output {
            cursor: InboundCursor::at(offset),
            acked: offset,
            eof: false,
        }
    }

    /// Offset of the next byte to write.
    pub fn next(&self) -> u64 {
        self.cursor.next()
    }

    pub fn is_finished(&self) -> bool {
        self.eof
    }

    /// Writes the part of `chunk` not written yet and returns it.
    pub async fn write(
        &mut self,
        out: &mut (impl AsyncWrite + Unpin),
        chunk: StreamChunk,
    ) -> Result<Bytes, WriteError> {
        let end = chunk.offset.saturating_add(chunk.payload.len() as u64);
        let fresh = self
            .cursor
            .accept(chunk.offset, chunk.payload)
            .map_err(WriteError::Broken)?;
        if !fresh.is_empty() {
            let written = match out.write_all(&fresh).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            };
            written.map_err(WriteError::Closed)?;
        }
        if chunk.eof && end == self.cursor.next() {
            self.eof = true;
        }
        Ok(fresh)
    }

    /// The offset to acknowledge now, if any: everything written when `all`, else only once
    /// enough has accumulated.
    pub fn ack_due(&mut self, all: bool) -> Option<u64> {
        let next = self.cursor.next();
        if next > self.acked && (all || next - self.acked >= ACK_EVERY) {
            self.acked = next;
            Some(next)
        } else {
            None
        }
    }
}

// === input ===

/// Reads local stdin in pieces that fit `buffer`'s window and hands each to `take`, until the
/// input ends (`true`, also when stdin fails) or `take` breaks (`false`).
pub async fn read_stdin(buffer: &SharedReplay, take: impl FnMut(&[u8]) -> ControlFlow<()>) -> bool {
    read_into(&mut tokio::io::stdin(), buffer, take)
        .await
        .unwrap_or(true)
}

/// Reads `input` in pieces that fit `buffer`'s window and hands each to `take`, until the
/// input ends (`Ok(true)`), `take` breaks (`Ok(false)`) or reading fails.
pub async fn read_into(
    input: &mut (impl AsyncRead + Unpin),
    buffer: &SharedReplay,
    mut take: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> std::io::Result<bool> {
    loop {
        let space = buffer.wait_space().await;
        let mut chunk = vec![0u8; space.min(MAX_CHUNK_BYTES)];
        match input.read(&mut chunk).await? {
            0 => return Ok(true),
            n => {
                if take(&chunk[..n]).is_break() {
                    return Ok(false);
                }
            }
        }
    }
}

/// Sends `buffer` from `offset` (the host holds everything below it) as chunks of `kind`,
/// each made into a request by `wrap`, until the stream ends or the call goes away.
pub async fn send_stream<M>(
    buffer: Arc<SharedReplay>,
    kind: StreamKind,
    offset: u64,
    tx: mpsc::Sender<M>,
    wrap: impl Fn(StreamChunk) -> M,
) {
    let _ = buffer.with(|b| b.ack(offset));
    let mut sender = StreamSender::new(kind, offset);
    while let Ok(Some(chunk)) = sender.next(&buffer).await {
        if tx.send(wrap(chunk)).await.is_err() {
            return;
        }
    }
}

// === reconnecting ===

/// Paces re-attaching after the connection dropped, and gives up once it has been down for
/// longer than allowed.
#[derive(Debug)]
pub struct Reconnect {
    give_up_after: Duration,
    backoff: Backoff,
    lost_since: Option<Instant>,
}

impl Reconnect {
    pub fn new(give_up_after: Duration) -> Self {
        Reconnect {
            give_up_after,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            lost_since: None,
        }
    }

    /// Whether the connection is down (lost and not re-attached yet).
    pub fn is_down(&self) -> bool {
        self.lost_since.is_some()
    }

    /// The connection dropped (again): how long to wait before the next try, or `None` once
    /// it has been down for longer than allowed.
    pub fn lost(&mut self) -> Option<Duration> {
        match self.lost_since {
            None => self.lost_since = Some(Instant::now()),
            Some(since) if since.elapsed() > self.give_up_after => return None,
            Some(_) => {}
        }
        Some(self.backoff.next_delay())
    }

    /// Attached again: the next loss gets the whole allowance.
    pub fn connected(&mut self) {
        self.lost_since = None;
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, payload: &'static str, eof: bool) -> StreamChunk {
        StreamChunk {
            stream: StreamKind::Stdout as i32,
            offset,
            payload: Bytes::from_static(payload.as_bytes()),
            eof,
        }
    }

    #[tokio::test]
    async fn output_is_written_once_and_acknowledged_in_batches_or_at_once() {
        let mut output = Output::at(10);
        let mut written = Vec::new();
        assert_eq!(
            output
                .write(&mut written, chunk(10, "hello", false))
                .await
                .unwrap(),
            "hello"
        );
        assert_eq!(
            output
                .write(&mut written, chunk(12, "llo world", true))
                .await
                .unwrap(),
            " world"
        );
        assert_eq!(written, b"hello world");
        assert!(output.is_finished());
        assert_eq!(output.ack_due(false), None, "too little to acknowledge yet");
        assert_eq!(output.ack_due(true), Some(21));
        assert_eq!(output.ack_due(true), None, "nothing new");
        assert!(matches!(
            output.write(&mut written, chunk(30, "x", false)).await,
            Err(WriteError::Broken(_))
        ));
    }

    #[test]
    fn signals_become_128_plus_their_number() {
        let exit = |code, signal| ProcessExit {
            code,
            signal,
            timed_out: false,
        };
        assert_eq!(exit_code(&exit(3, 0)), 3);
        assert_eq!(exit_code(&exit(0, 1)), 129);
    }

    #[test]
    fn reconnecting_gives_up_after_the_allowance_and_starts_over_once_connected() {
        let mut reconnect = Reconnect::new(Duration::ZERO);
        assert!(!reconnect.is_down());
        assert!(
            reconnect.lost().is_some(),
            "the first try is always allowed"
        );
        assert!(reconnect.is_down());
        std::thread::sleep(Duration::from_millis(5));
        assert!(reconnect.lost().is_none());
        reconnect.connected();
        assert!(!reconnect.is_down());
        assert!(reconnect.lost().is_some());
    }
}

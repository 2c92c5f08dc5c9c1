//! Input from a client to a process: an exec's stdin, a terminal's keystrokes. Chunks are
//! numbered and deduplicated by offset (a client that reconnects resends from where the
//! daemon is) and queued, bounded, to the task or thread that writes them; what was written
//! is reported back as the client's acknowledgement.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use zpanel_shared::replay::{
    DEFAULT_WINDOW_BYTES, InboundCursor, MAX_IN_FLIGHT_FRAMES, StreamError,
};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error(
        "input overrun: the client sent more than flow control allows; reconnect and resend from \
         the acknowledged offset"
    )]
    Overrun,
}

/// What the writer does next.
#[derive(Debug)]
pub enum InputCommand {
    Data(Bytes),
    /// The client has no more input: close the process's input.
    Eof,
}

struct InputState {
    cursor: InboundCursor,
    /// `None` once the end of the input was queued.
    queue: Option<mpsc::Sender<InputCommand>>,
}

/// The receiving side of one process's input.
pub struct Input {
    state: Mutex<InputState>,
    written: watch::Sender<u64>,
}

/// The writing side: what to write, and where to count what was written.
pub struct InputWriter {
    queue: mpsc::Receiver<InputCommand>,
    written: watch::Sender<u64>,
}

impl Input {
    pub fn new() -> (Input, InputWriter) {
        Input::starting_at(0)
    }

    /// Input that continues at `offset` (a resumed upload already holds the bytes below).
    pub fn starting_at(offset: u64) -> (Input, InputWriter) {
        // A client keeps at most this many frames unacknowledged, so a full queue means it
        // ignored flow control.
        let (queue, commands) = mpsc::channel(MAX_IN_FLIGHT_FRAMES + 1);
        let written = watch::Sender::new(offset);
        let input = Input {
            state: Mutex::new(InputState {
                cursor: InboundCursor::at(offset),
                queue: Some(queue),
            }),
            written: written.clone(),
        };
        let writer = InputWriter {
            queue: commands,
            written,
        };
        (input, writer)
    }

    /// Takes a chunk from the client, dropping what was already received. Never waits. A
    /// client that has more than a window of input, or more frames than flow control allows,
    /// waiting to be written overruns: nothing of the chunk is taken.
    pub fn accept(&self, offset: u64, payload: Bytes, eof: bool) -> Result<(), InputError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let end = offset.saturating_add(payload.len() as u64);
        let mut cursor = state.cursor.clone();
        let fresh = cursor.accept(offset, payload)?;
        if cursor.next().saturating_sub(*self.written.borrow()) > DEFAULT_WINDOW_BYTES as u64 {
            return Err(InputError::Overrun);
        }
        let Some(queue) = state.queue.clone() else {
            state.cursor = cursor;
            return Ok(());
        };
        let eof = eof && end == cursor.next();
        let commands = usize::from(!fresh.is_empty()) + usize::from(eof);
        if queue.capacity() < commands {
            return Err(InputError::Overrun);
        }
        state.cursor = cursor;
        if !fresh.is_empty() {
            let _ = queue.try_send(InputCommand::Data(fresh));
        }
        if eof {
            let _ = queue.try_send(InputCommand::Eof);
            state.queue = None;
        }
        Ok(())
    }

    /// Input bytes received so far: where the client resends from.
    pub fn offset(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cursor
            .next()
    }

    /// Bytes written to the process so far, as it changes.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }
}

impl InputWriter {
    /// The next command; `None` once the [`Input`] is gone.
    pub async fn recv(&mut self) -> Option<InputCommand> {
        self.queue.recv().await
    }

    /// [`InputWriter::recv`] for a writer on its own thread.
    pub fn blocking_recv(&mut self) -> Option<InputCommand> {
        self.queue.blocking_recv()
    }

    /// Counts bytes written, or discarded because the process no longer reads them, so the
    /// client never stalls on them.
    pub fn wrote(&self, bytes: usize) {
        self.written.send_modify(|written| *written += bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_is_deduplicated_and_bounded() {
        let (input, mut writer) = Input::new();
        input.accept(0, Bytes::from_static(b"abc"), false).unwrap();
        input.accept(1, Bytes::from_static(b"bcd"), false).unwrap();
        assert!(matches!(writer.recv().await, Some(InputCommand::Data(b)) if b == "abc"));
        assert!(matches!(writer.recv().await, Some(InputCommand::Data(b)) if b == "d"));
        writer.wrote(4);
        assert_eq!((input.offset(), *input.written().borrow()), (4, 4));

        // more than a window waiting to be written is refused, and nothing of it is taken
        let big = Bytes::from(vec![b'x'; DEFAULT_WINDOW_BYTES + 1]);
        assert!(matches!(
            input.accept(4, big, false),
            Err(InputError::Overrun)
        ));
        assert_eq!(input.offset(), 4);
        for n in 0..=MAX_IN_FLIGHT_FRAMES as u64 {
            input
                .accept(4 + n, Bytes::from_static(b"y"), false)
                .unwrap();
        }
        let one_more = input.accept(
            5 + MAX_IN_FLIGHT_FRAMES as u64,
            Bytes::from_static(b"z"),
            true,
        );
        assert!(matches!(one_more, Err(InputError::Overrun)));
    }
}

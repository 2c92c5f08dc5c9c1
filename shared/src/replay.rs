//! Numbered byte streams. Every byte of a stream has an offset from the stream's start. The
//! sender keeps what the final consumer has not acknowledged in a [`ReplayBuffer`] (bounded
//! by the flow-control window) and the receiver keeps an [`InboundCursor`]; after a
//! reconnect the receiver says where it is and the sender resumes from exactly there, so no
//! byte is lost or repeated.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;
use zpanel_proto::{StreamChunk, StreamKind};

use crate::frame::MAX_CHUNK_BYTES;

/// Default flow-control window of one stream: bytes a sender may have unacknowledged.
pub const DEFAULT_WINDOW_BYTES: usize = 4 * 1024 * 1024;
/// Data frames a sender may have unacknowledged on one stream, whatever their size, so a
/// relay can bound its queues by frame count as well as by bytes.
pub const MAX_IN_FLIGHT_FRAMES: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("acknowledged offset {offset} is beyond the stream's end {end}")]
    AckBeyondEnd { offset: u64, end: u64 },
    #[error("offset {offset} is no longer buffered (replay starts at {start})")]
    ReplayLost { offset: u64, start: u64 },
    #[error("offset {offset} is beyond the stream's end {end}")]
    BeyondEnd { offset: u64, end: u64 },
    #[error("chunk at offset {offset} leaves a gap after {expected}")]
    Gap { offset: u64, expected: u64 },
}

/// Sender side: the unacknowledged tail of a stream.
#[derive(Debug)]
pub struct ReplayBuffer {
    window: usize,
    /// Offset of the first buffered byte: everything below it is acknowledged.
    start: u64,
    chunks: VecDeque<Bytes>,
    buffered: usize,
    finished: bool,
}

/// What a sender reads at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Data(Bytes),
    /// The stream ended exactly here.
    Eof,
    /// Nothing at this offset yet.
    Pending,
}

impl ReplayBuffer {
    pub fn new(window: usize) -> Self {
        ReplayBuffer {
            window,
            start: 0,
            chunks: VecDeque::new(),
            buffered: 0,
            finished: false,
        }
    }

    /// Offset one past the last byte pushed.
    pub fn end(&self) -> u64 {
        self.start + self.buffered as u64
    }

    pub fn acked(&self) -> u64 {
        self.start
    }

    /// Bytes the producer may still push before the window is full.
    pub fn space(&self) -> usize {
        self.window.saturating_sub(self.buffered)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True once the stream ended and the consumer acknowledged all of it.
    pub fn is_drained(&self) -> bool {
        self.finished && self.buffered == 0
    }

    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.buffered += data.len();
            self.chunks.push_back(data);
        }
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Drops everything below `offset`. Old or repeated acknowledgements are harmless.
    pub fn ack(&mut self, offset: u64) -> Result<(), StreamError> {
        if offset > self.end() {
            return Err(StreamError::AckBeyondEnd {
                offset,
                end: self.end(),
            });
        }
        let mut drop = offset.saturating_sub(self.start) as usize;
        while drop > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= drop {
                drop -= front.len();
                self.buffered -= front.len();
                self.start += front.len() as u64;
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(drop);
                self.buffered -= drop;
                self.start += drop as u64;
                drop = 0;
            }
        }
        Ok(())
    }

    /// Up to `max` bytes starting at `offset`.
    pub fn read_at(&self, offset: u64, max: usize) -> Result<Read, StreamError> {
        if offset < self.start {
            return Err(StreamError::ReplayLost {
                offset,
                start: self.start,
            });
        }
        if offset > self.end() {
            return Err(StreamError::BeyondEnd {
                offset,
                end: self.end(),
            });
        }
        if offset == self.end() {
            return Ok(if self.finished {
                Read::Eof
            } else {
                Read::Pending
            });
        }
        let mut skip = (offset - self.start) as usize;
        for chunk in &self.chunks {
            if skip < chunk.len() {
                let take = (chunk.len() - skip).min(max);
                return Ok(Read::Data(chunk.slice(skip..skip + take)));
            }
            skip -= chunk.len();
        }
        Ok(Read::Pending)
    }
}

/// A [`ReplayBuffer`] shared between a producer task and the task sending it, with a
/// wake-up whenever either side makes progress.
#[derive(Debug)]
pub struct SharedReplay {
    buffer: Mutex<ReplayBuffer>,
    changed: Notify,
}

impl SharedReplay {
    pub fn new(window: usize) -> Self {
        SharedReplay {
            buffer: Mutex::new(ReplayBuffer::new(window)),
            changed: Notify::new(),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut ReplayBuffer) -> T) -> T {
        let mut buffer = self
            .buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = f(&mut buffer);
        drop(buffer);
        self.changed.notify_waiters();
        result
    }

    /// Waits until `check` returns `Some`, re-checking after every change.
    pub async fn wait_for<T>(&self, mut check: impl FnMut(&mut ReplayBuffer) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(value) = check(&mut buffer) {
                    return value;
                }
            }
            notified.await;
        }
    }

    /// Waits for window space, then returns how many bytes may be pushed.
    pub async fn wait_space(&self) -> usize {
        self.wait_for(|buffer| (buffer.space() > 0).then(|| buffer.space()))
            .await
    }

    /// Waits for what is at `offset`: data, the end of the stream, or an error.
    pub async fn read_at(&self, offset: u64, max: usize) -> Result<Read, StreamError> {
        self.wait_for(|buffer| match buffer.read_at(offset, max) {
            Ok(Read::Pending) => None,
            other => Some(other),
        })
        .await
    }

    /// Wakes every waiter without changing anything (used when a reader must re-check
    /// something outside the buffer, such as a cancelled attachment).
    pub fn poke(&self) {
        self.changed.notify_waiters();
    }
}

/// Sends a [`SharedReplay`] from an offset as chunks: waits for data, and keeps at most
/// [`MAX_IN_FLIGHT_FRAMES`] chunks unacknowledged.
#[derive(Debug)]
pub struct StreamSender {
    kind: StreamKind,
    offset: u64,
    /// End offsets of the chunks sent and not yet acknowledged.
    in_flight: VecDeque<u64>,
    finished: bool,
}

impl StreamSender {
    pub fn new(kind: StreamKind, offset: u64) -> Self {
        StreamSender {
            kind,
            offset,
            in_flight: VecDeque::new(),
            finished: false,
        }
    }

    /// The next chunk to send; after the end-of-stream chunk, `None`.
    pub async fn next(
        &mut self,
        stream: &SharedReplay,
    ) -> Result<Option<StreamChunk>, StreamError> {
        if self.finished {
            return Ok(None);
        }
        let (offset, in_flight) = (self.offset, &mut self.in_flight);
        let read = stream
            .wait_for(|buffer| {
                while in_flight.front().is_some_and(|end| *end <= buffer.acked()) {
                    in_flight.pop_front();
                }
                if in_flight.len() >= MAX_IN_FLIGHT_FRAMES {
                    return None;
                }
                match buffer.read_at(offset, MAX_CHUNK_BYTES) {
                    Ok(Read::Pending) => None,
                    Ok(Read::Data(payload)) => Some(Ok(Some(payload))),
                    Ok(Read::Eof) => Some(Ok(None)),
                    Err(e) => Some(Err(e)),
                }
            })
            .await?;
        let stream = self.kind as i32;
        Ok(Some(match read {
            Some(payload) => {
                self.offset += payload.len() as u64;
                self.in_flight.push_back(self.offset);
                StreamChunk {
                    stream,
                    offset,
                    payload,
                    eof: false,
                }
            }
            None => {
                self.finished = true;
                StreamChunk {
                    stream,
                    offset,
                    payload: Bytes::new(),
                    eof: true,
                }
            }
        }))
    }
}

/// Receiver side: where the stream continues.
#[derive(Debug, Default, Clone)]
pub struct InboundCursor {
    next: u64,
}

impl InboundCursor {
    pub fn at(next: u64) -> Self {
        InboundCursor { next }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// The new part of a chunk, if any; a repeated chunk yields an empty slice and a chunk
    /// beyond what was received is an error.
    pub fn accept(&mut self, offset: u64, payload: Bytes) -> Result<Bytes, StreamError> {
        if offset > self.next {
            return Err(StreamError::Gap {
                offset,
                expected: self.next,
            });
        }
        let already = (self.next - offset).min(payload.len() as u64) as usize;
        let fresh = payload.slice(already..);
        self.next += fresh.len() as u64;
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn replays_unacknowledged_bytes_from_any_offset() {
        let mut buffer = ReplayBuffer::new(16);
        buffer.push(b("hello "));
        buffer.push(b("world"));
        assert_eq!(buffer.space(), 5);
        assert_eq!(buffer.read_at(3, 100), Ok(Read::Data(b("lo "))));
        buffer.ack(8).unwrap();
        assert_eq!(buffer.read_at(8, 100), Ok(Read::Data(b("rld"))));
        assert_eq!(
            buffer.read_at(2, 100),
            Err(StreamError::ReplayLost {
                offset: 2,
                start: 8
            })
        );
        assert_eq!(buffer.read_at(11, 100), Ok(Read::Pending));
        buffer.finish();
        assert_eq!(buffer.read_at(11, 100), Ok(Read::Eof));
        assert!(!buffer.is_drained());
        buffer.ack(11).unwrap();
        assert!(buffer.is_drained());
        assert_eq!(
            buffer.ack(12),
            Err(StreamError::AckBeyondEnd {
                offset: 12,
                end: 11
            })
        );
        buffer.ack(4).unwrap();
        assert_eq!(buffer.acked(), 11);
    }

    #[test]
    fn cursor_drops_repeats_and_refuses_gaps() {
        let mut cursor = InboundCursor::default();
        assert_eq!(cursor.accept(0, b("abc")).unwrap(), b("abc"));
        assert_eq!(cursor.accept(0, b("abc")).unwrap(), b(""));
        assert_eq!(cursor.accept(1, b("bcde")).unwrap(), b("de"));
        assert_eq!(
            cursor.accept(9, b("x")),
            Err(StreamError::Gap {
                offset: 9,
                expected: 5
            })
        );
        assert_eq!(cursor.next(), 5);
    }

    #[tokio::test]
    async fn sender_sends_from_an_offset_and_ends_with_eof() {
        let shared = SharedReplay::new(64);
        shared.with(|buffer| {
            buffer.push(b("abcdef"));
            buffer.finish();
        });
        let mut sender = StreamSender::new(StreamKind::Stdout, 2);
        let chunk = sender.next(&shared).await.unwrap().unwrap();
        assert_eq!(
            (chunk.offset, chunk.payload, chunk.eof),
            (2, b("cdef"), false)
        );
        let end = sender.next(&shared).await.unwrap().unwrap();
        assert_eq!((end.offset, end.payload.len(), end.eof), (6, 0, true));
        assert_eq!(sender.next(&shared).await.unwrap(), None);
    }

    #[tokio::test]
    async fn producer_waits_for_window_space() {
        let shared = std::sync::Arc::new(SharedReplay::new(4));
        shared.with(|buffer| buffer.push(b("abcd")));
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move { shared.wait_space().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shared.with(|buffer| buffer.ack(3)).unwrap();
        assert_eq!(waiter.await.unwrap(), 3);
    }
}

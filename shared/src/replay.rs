//! Numbered byte streams. Every byte of a stream has an offset from the stream's start. The
//! sender keeps what the final consumer has not acknowledged in a [`ReplayBuffer`] (bounded
//! by the flow-control window) and the receiver keeps an [`InboundCursor`]; after a
//! reconnect the receiver says where it is and the sender resumes from exactly there, so no
//! byte is lost or repeated. A buffer may also keep some *history* below the acknowledged
//! offset, for consumers that arrive with no state (a terminal's new viewer sees the recent
//! screen).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
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

/// Sender side: the unacknowledged tail of a stream, and up to `history` bytes before it.
#[derive(Debug)]
pub struct ReplayBuffer {
    window: usize,
    /// Acknowledged bytes kept below `acked` for readers that start from the oldest byte.
    history: usize,
    /// Offset of the oldest byte held.
    start: u64,
    /// Everything below this offset is acknowledged.
    acked: u64,
    /// The bytes from `start` to the end.
    chunks: VecDeque<Bytes>,
    held: usize,
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
    /// A buffer that keeps only what is unacknowledged.
    pub fn new(window: usize) -> Self {
        ReplayBuffer::with_history(window, 0)
    }

    /// A buffer that also keeps the last `history` acknowledged bytes.
    pub fn with_history(window: usize, history: usize) -> Self {
        ReplayBuffer {
            window,
            history,
            start: 0,
            acked: 0,
            chunks: VecDeque::new(),
            held: 0,
            finished: false,
        }
    }

    /// Offset one past the last byte pushed.
    pub fn end(&self) -> u64 {
        self.start + self.held as u64
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes the producer may still push before the window is full.
    pub fn space(&self) -> usize {
        let unacked = usize::try_from(self.end() - self.acked).unwrap_or(usize::MAX);
        self.window.saturating_sub(unacked)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True once the stream ended and the consumer acknowledged all of it.
    pub fn is_drained(&self) -> bool {
        self.finished && self.acked == self.end()
    }

    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.held += data.len();
            self.chunks.push_back(data);
        }
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Acknowledges everything below `offset` and drops what falls out of the history. Old
    /// or repeated acknowledgements are harmless.
    pub fn ack(&mut self, offset: u64) -> Result<(), StreamError> {
        if offset > self.end() {
            return Err(StreamError::AckBeyondEnd {
                offset,
                end: self.end(),
            });
        }
        self.acked = self.acked.max(offset);
        let keep_from = self.acked.saturating_sub(self.history as u64);
        let mut drop = keep_from.saturating_sub(self.start) as usize;
        while drop > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let taken = front.len().min(drop);
            if taken == front.len() {
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(taken);
            }
            self.held -= taken;
            self.start += taken as u64;
            drop -= taken;
        }
        Ok(())
    }

    /// Up to `max` bytes starting at `offset`. Small chunks pushed one after the other come
    /// back together, so a reader's frames are as large as `max` allows.
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
        let mut chunks = self.chunks.iter();
        let first = loop {
            let Some(chunk) = chunks.next() else {
                return Ok(Read::Pending);
            };
            if skip < chunk.len() {
                break chunk.slice(skip..);
            }
            skip -= chunk.len();
        };
        let mut next = chunks.next();
        if first.len() >= max || next.is_none() {
            return Ok(Read::Data(first.slice(..first.len().min(max))));
        }
        let available = usize::try_from(self.end() - offset).unwrap_or(usize::MAX);
        let mut joined = BytesMut::with_capacity(max.min(available));
        joined.extend_from_slice(&first);
        while let Some(chunk) = next
            && joined.len() < max
        {
            let take = chunk.len().min(max - joined.len());
            joined.extend_from_slice(&chunk[..take]);
            next = chunks.next();
        }
        Ok(Read::Data(joined.freeze()))
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
        SharedReplay::with_history(window, 0)
    }

    /// See [`ReplayBuffer::with_history`].
    pub fn with_history(window: usize, history: usize) -> Self {
        SharedReplay {
            buffer: Mutex::new(ReplayBuffer::with_history(window, history)),
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

/// The acknowledged offset of one of several consumers of a [`SharedReplay`] (the viewers
/// of a terminal), shared between whoever receives its acknowledgements and its
/// [`StreamSender::for_viewer`].
#[derive(Debug, Clone, Default)]
pub struct ViewerAck(Arc<AtomicU64>);

impl ViewerAck {
    pub fn at(offset: u64) -> Self {
        ViewerAck(Arc::new(AtomicU64::new(offset)))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Records an acknowledgement; old or repeated ones are harmless. The sender notices at
    /// the buffer's next change (see [`SharedReplay::poke`]).
    pub fn advance(&self, offset: u64) {
        self.0.fetch_max(offset, Ordering::SeqCst);
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
    /// For one of several consumers: its own acknowledgements, instead of the buffer's.
    viewer: Option<ViewerAck>,
}

impl StreamSender {
    /// A sender for the consumer whose acknowledgements are the buffer's.
    pub fn new(kind: StreamKind, offset: u64) -> Self {
        StreamSender {
            kind,
            offset,
            in_flight: VecDeque::new(),
            finished: false,
            viewer: None,
        }
    }

    /// A sender for one of several consumers of a buffer with history: frames in flight
    /// count against this consumer's own acknowledgements, and a consumer that fell behind
    /// the oldest byte held skips ahead to it instead of failing.
    pub fn for_viewer(kind: StreamKind, offset: u64, acked: ViewerAck) -> Self {
        StreamSender {
            viewer: Some(acked),
            ..StreamSender::new(kind, offset)
        }
    }

    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// The next chunk to send; after the end-of-stream chunk, `None`.
    pub async fn next(
        &mut self,
        stream: &SharedReplay,
    ) -> Result<Option<StreamChunk>, StreamError> {
        if self.finished {
            return Ok(None);
        }
        let (offset, in_flight, viewer) = (self.offset, &mut self.in_flight, &self.viewer);
        let (offset, read) = stream
            .wait_for(|buffer| {
                let acked = viewer.as_ref().map_or(buffer.acked(), ViewerAck::get);
                while in_flight.front().is_some_and(|end| *end <= acked) {
                    in_flight.pop_front();
                }
                if in_flight.len() >= MAX_IN_FLIGHT_FRAMES {
                    return None;
                }
                let offset = match viewer {
                    Some(_) => offset.max(buffer.start()),
                    None => offset,
                };
                match buffer.read_at(offset, MAX_CHUNK_BYTES) {
                    Ok(Read::Pending) => None,
                    Ok(Read::Data(payload)) => Some(Ok((offset, Some(payload)))),
                    Ok(Read::Eof) => Some(Ok((offset, None))),
                    Err(e) => Some(Err(e)),
                }
            })
            .await?;
        let stream = self.kind as i32;
        Ok(Some(match read {
            Some(payload) => {
                self.offset = offset + payload.len() as u64;
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
    use std::time::Duration;

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
        assert_eq!(buffer.read_at(3, 100), Ok(Read::Data(b("lo world"))));
        assert_eq!(buffer.read_at(3, 3), Ok(Read::Data(b("lo "))));
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
    fn history_keeps_acknowledged_bytes_for_new_readers() {
        let mut buffer = ReplayBuffer::with_history(8, 4);
        buffer.push(b("abcdef"));
        assert_eq!((buffer.start(), buffer.acked(), buffer.space()), (0, 0, 2));
        buffer.ack(6).unwrap();
        // the window counts only what is unacknowledged; the history keeps "cdef"
        assert_eq!((buffer.start(), buffer.acked(), buffer.space()), (2, 6, 8));
        assert_eq!(buffer.read_at(2, 100), Ok(Read::Data(b("cdef"))));
        assert_eq!(
            buffer.read_at(1, 100),
            Err(StreamError::ReplayLost {
                offset: 1,
                start: 2
            })
        );
        buffer.push(b("ghij"));
        assert_eq!(buffer.space(), 4);
        buffer.ack(9).unwrap();
        assert_eq!((buffer.start(), buffer.acked(), buffer.end()), (5, 9, 10));
        assert_eq!(buffer.read_at(5, 100), Ok(Read::Data(b("fghij"))));
        // an older acknowledgement moves nothing back
        buffer.ack(3).unwrap();
        assert_eq!((buffer.start(), buffer.acked()), (5, 9));
        buffer.finish();
        assert!(!buffer.is_drained());
        buffer.ack(10).unwrap();
        assert!(buffer.is_drained());
        assert_eq!(buffer.read_at(6, 100), Ok(Read::Data(b("ghij"))));
    }

    #[test]
    fn reads_join_small_chunks_up_to_the_limit() {
        let mut buffer = ReplayBuffer::new(64);
        for piece in ["ab", "cd", "ef", "gh"] {
            buffer.push(b(piece));
        }
        assert_eq!(buffer.read_at(1, 5), Ok(Read::Data(b("bcdef"))));
        assert_eq!(buffer.read_at(1, 100), Ok(Read::Data(b("bcdefgh"))));
        assert_eq!(buffer.read_at(6, 100), Ok(Read::Data(b("gh"))));
        assert_eq!(buffer.read_at(0, 1), Ok(Read::Data(b("a"))));
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
    async fn a_viewer_skips_ahead_and_counts_its_own_acknowledgements() {
        let shared = SharedReplay::with_history(1 << 20, 4);
        shared
            .with(|buffer| {
                buffer.push(b("abcdefgh"));
                buffer.ack(8)
            })
            .unwrap();
        let acked = ViewerAck::at(0);
        let mut sender = StreamSender::for_viewer(StreamKind::Stdout, 0, acked.clone());
        // bytes 0..4 fell out of the history: the viewer continues at the oldest byte held
        let chunk = sender.next(&shared).await.unwrap().unwrap();
        assert_eq!((chunk.offset, chunk.payload), (4, b("efgh")));
        // the buffer's own acknowledgement (8) does not count for this viewer's frames
        for i in 0..MAX_IN_FLIGHT_FRAMES as u64 - 1 {
            shared.with(|buffer| buffer.push(b("x")));
            let chunk = sender.next(&shared).await.unwrap().unwrap();
            assert_eq!(chunk.offset, 8 + i);
        }
        shared.with(|buffer| buffer.push(b("y")));
        let blocked = tokio::time::timeout(Duration::from_millis(50), sender.next(&shared)).await;
        assert!(
            blocked.is_err(),
            "a viewer with {MAX_IN_FLIGHT_FRAMES} frames unacknowledged waits"
        );
        acked.advance(12);
        shared.poke();
        let chunk = sender.next(&shared).await.unwrap().unwrap();
        assert_eq!(
            (chunk.offset, chunk.payload),
            (8 + MAX_IN_FLIGHT_FRAMES as u64 - 1, b("y"))
        );
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

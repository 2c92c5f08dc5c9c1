//! Fuzzes the numbered streams of `zpanel_shared::replay` with arbitrary sequences of
//! operations, checked against a plain model: a `Vec<u8>` of every byte the stream carried.
//! A buffer with history keeps the last `history` acknowledged bytes readable.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use zpanel_shared::replay::{InboundCursor, Read, ReplayBuffer, StreamError};

#[derive(Debug, Arbitrary)]
struct Input {
    window: u16,
    /// 0: `ReplayBuffer::new`, the buffer without history.
    history: u16,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Producer pushes this many bytes of the model stream.
    Push(u8),
    Finish,
    /// Acknowledge up to `end() - back` (or a value beyond the end when `back` is negative).
    Ack {
        back: i16,
    },
    /// Read at `acked() + delta` (delta may point into the history, before the oldest byte
    /// held, or past the end).
    Read {
        delta: i16,
        max: u8,
    },
    /// The receiver gets the chunk `[offset, offset + len)` of the stream (offset relative
    /// to what it already has; it may overlap, repeat, or leave a gap).
    Receive {
        delta: i16,
        len: u8,
    },
}

/// Byte `i` of the model stream.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

fn model(from: u64, len: u64) -> Bytes {
    (from..from + len).map(byte_at).collect::<Vec<u8>>().into()
}

fn offset(base: u64, delta: i16) -> u64 {
    base.saturating_add_signed(i64::from(delta))
}

fuzz_target!(|input: Input| {
    let window = usize::from(input.window);
    let history = u64::from(input.history);
    let mut buffer = match input.history {
        0 => ReplayBuffer::new(window),
        history => ReplayBuffer::with_history(window, usize::from(history)),
    };
    let mut cursor = InboundCursor::default();
    let mut pushed: u64 = 0;
    let mut acked: u64 = 0;
    let mut finished = false;

    for op in input.ops {
        match op {
            Op::Push(len) => {
                buffer.push(model(pushed, u64::from(len)));
                pushed += u64::from(len);
            }
            Op::Finish => {
                buffer.finish();
                finished = true;
            }
            Op::Ack { back } => {
                let target = offset(pushed, back.saturating_neg());
                let result = buffer.ack(target);
                if target > pushed {
                    assert_eq!(
                        result,
                        Err(StreamError::AckBeyondEnd {
                            offset: target,
                            end: pushed
                        })
                    );
                } else {
                    assert_eq!(result, Ok(()));
                    acked = acked.max(target);
                }
            }
            Op::Read { delta, max } => {
                let at = offset(acked, delta);
                let max = usize::from(max);
                let result = buffer.read_at(at, max);
                let start = acked.saturating_sub(history);
                if at < start {
                    assert_eq!(result, Err(StreamError::ReplayLost { offset: at, start }));
                } else if at > pushed {
                    assert_eq!(
                        result,
                        Err(StreamError::BeyondEnd {
                            offset: at,
                            end: pushed
                        })
                    );
                } else if at == pushed {
                    assert_eq!(result, Ok(if finished { Read::Eof } else { Read::Pending }));
                } else {
                    let Ok(Read::Data(data)) = result else {
                        panic!("no data at {at}: {result:?}")
                    };
                    assert!(
                        data.len() <= max,
                        "read {} bytes, asked for at most {max}",
                        data.len()
                    );
                    assert!(
                        max == 0 || !data.is_empty(),
                        "empty read at {at} below the end {pushed}"
                    );
                    assert_eq!(data, model(at, data.len() as u64), "wrong bytes at {at}");
                }
            }
            Op::Receive { delta, len } => {
                let before = cursor.next();
                let at = offset(before, delta).min(pushed);
                let len = u64::from(len).min(pushed - at);
                let result = cursor.accept(at, model(at, len));
                if at > before {
                    assert_eq!(
                        result,
                        Err(StreamError::Gap {
                            offset: at,
                            expected: before
                        })
                    );
                    assert_eq!(cursor.next(), before);
                } else {
                    let fresh = result.expect("a chunk at or below the cursor is accepted");
                    let end = (at + len).max(before);
                    assert_eq!(cursor.next(), end);
                    assert_eq!(fresh, model(before, end - before), "fresh part of a chunk");
                }
            }
        }

        assert_eq!(buffer.end(), pushed);
        assert_eq!(buffer.acked(), acked);
        assert_eq!(buffer.start(), acked.saturating_sub(history));
        assert_eq!(buffer.is_finished(), finished);
        assert_eq!(buffer.is_drained(), finished && acked == pushed);
        let buffered = usize::try_from(pushed - acked).unwrap();
        assert_eq!(buffer.space(), window.saturating_sub(buffered));
    }
});

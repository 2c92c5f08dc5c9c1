//! The frame codec: one protobuf `Frame` per WebSocket binary message. Decoding is the
//! first thing untrusted bytes meet, so it checks size before parsing and never panics.

use bytes::Bytes;
use zpanel_proto::{Frame, Message, frame::Body};

/// Largest frame either side accepts unless the session negotiated less.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Largest payload a sender puts in one data frame; leaves room for the envelope.
pub const MAX_CHUNK_BYTES: usize = 128 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame has no body")]
    Empty,
}

pub fn encode(body: Body) -> Bytes {
    Frame { body: Some(body) }.encode_to_vec().into()
}

pub fn decode(bytes: Bytes, max_frame_bytes: usize) -> Result<Body, FrameError> {
    if bytes.len() > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max: max_frame_bytes,
        });
    }
    let frame = Frame::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
    frame.body.ok_or(FrameError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpanel_proto::{ChannelData, StreamChunk, StreamKind};

    #[test]
    fn round_trips_a_data_frame() {
        let body = Body::Data(ChannelData {
            channel_id: 7,
            chunk: Some(StreamChunk {
                stream: StreamKind::Stdout as i32,
                offset: 42,
                payload: Bytes::from_static(b"hello"),
                eof: false,
            }),
        });
        let bytes = encode(body.clone());
        assert_eq!(decode(bytes, DEFAULT_MAX_FRAME_BYTES), Ok(body));
    }

    #[test]
    fn refuses_oversized_garbage_and_empty_frames() {
        assert_eq!(
            decode(Bytes::from_static(&[0u8; 100]), 10),
            Err(FrameError::TooLarge { len: 100, max: 10 })
        );
        assert!(matches!(
            decode(Bytes::from_static(&[0xff, 0xff, 0xff]), 100),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(decode(Bytes::new(), 100), Err(FrameError::Empty));
    }
}

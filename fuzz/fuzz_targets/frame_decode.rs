//! Fuzzes the bridge session's frame decoder, the first code untrusted bytes meet: decoding
//! never panics, refuses frames over the limit, and whatever decodes survives a re-encode.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zpanel_shared::frame::{self, DEFAULT_MAX_FRAME_BYTES, FrameError};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);

    if !data.is_empty() {
        let limit = data.len() - 1;
        assert_eq!(
            frame::decode(bytes.clone(), limit),
            Err(FrameError::TooLarge {
                len: data.len(),
                max: limit
            }),
            "a frame one byte over the limit must be refused before parsing"
        );
    }

    let Ok(body) = frame::decode(bytes, DEFAULT_MAX_FRAME_BYTES) else {
        return;
    };
    let encoded = frame::encode(body.clone());
    // The canonical encoding may be longer than the input (a negative int32 sent as a
    // 5-byte varint re-encodes as 10 bytes), so the second decode takes no size limit.
    let again = frame::decode(encoded, usize::MAX).expect("a re-encoded frame decodes");
    assert_eq!(again, body, "decode(encode(body)) differs from body");
});

//! Code both ends of the bridge session use: the frame codec, the WebSocket transport,
//! numbered streams with replay buffers, TLS helpers (CA pins) and reconnect backoff.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod enroll;
pub mod frame;
pub mod fsutil;
pub mod process;
pub mod replay;
pub mod tls;
pub mod transport;

/// Version string of this build, reported by every binary and in the bridge `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

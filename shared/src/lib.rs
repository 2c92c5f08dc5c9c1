//! Code both ends of the bridge session use: the frame codec, the WebSocket transport,
//! numbered streams with replay buffers, TLS helpers (CA pins), reconnect backoff and Docker
//! image references; and the JSON of alerts that the HTTP API and the CLI both print.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod backoff;
pub mod enroll;
pub mod frame;
pub mod fsutil;
pub mod image;
pub mod process;
pub mod replay;
pub mod systemd;
pub mod tls;
pub mod transport;

/// Version string of this build, reported by every binary and in the bridge `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Seconds since the Unix epoch: the unit of every timestamp Zpanel stores and sends.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch: the finer clock of metric samples and their batches
/// (`MetricSample.at_ms`, `MetricBatch.sent_at_ms`).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

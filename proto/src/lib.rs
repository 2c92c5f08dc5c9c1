//! Wire types: the bridge session's frames and the operator gRPC API, generated from
//! `proto/zpanel/v1/*.proto`. Only this crate knows prost; the other crates convert these
//! types to their own at the boundary.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    tonic::include_proto!("zpanel.v1");
}

pub use generated::*;
pub use prost::Message;

/// Version of the bridge session protocol this build speaks (negotiated in `Hello`).
pub const BRIDGE_PROTOCOL_VERSION: u32 = 1;
/// Oldest bridge protocol version this build still accepts.
pub const BRIDGE_PROTOCOL_MIN_VERSION: u32 = 1;

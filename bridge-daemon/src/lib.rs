//! Zpanel bridge daemon: enrols the host, then keeps one mTLS WebSocket session to the
//! control plane and runs what arrives over it. It opens no listening socket.
#![forbid(unsafe_code)]

pub mod certificate;
mod channel;
pub mod config;
pub mod docker;
pub mod exec;
pub mod files;
pub mod hostinfo;
mod http;
pub mod input;
pub mod join;
pub mod session;
pub mod telemetry;
pub mod terminal;
pub mod upgrade;

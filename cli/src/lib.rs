//! The `zpanel` CLI's pieces: settings, the gRPC connection, and `exec` with resume.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod exec;
pub mod streaming;

//! The `zpanel` CLI's pieces: settings, the gRPC connection, `exec` and `shell` (streaming
//! with resume), `sessions`, files on hosts, and the local terminal.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod display;
pub mod escape;
pub mod exec;
pub mod files;
pub mod sessions;
pub mod shell;
pub mod streaming;
pub mod tty;

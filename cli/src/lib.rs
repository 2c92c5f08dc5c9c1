//! The `zpanel` CLI's pieces: settings, the gRPC connection, `hosts`, `exec` and `shell`
//! (streaming with resume), `sessions`, files on hosts, Docker on hosts, the local terminal,
//! the access commands: `users`, `api-tokens`, `workspaces` and `audit`, `metrics` and `top`,
//! `alerts`, and `hosts upgrade`.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api_tokens;
pub mod audit;
pub mod client;
pub mod config;
pub mod display;
pub mod docker;
pub mod escape;
pub mod exec;
pub mod files;
pub mod hosts;
pub mod metrics;
pub mod sessions;
pub mod shell;
pub mod streaming;
pub mod top;
pub mod tty;
pub mod upgrade;
pub mod users;
pub mod workspaces;

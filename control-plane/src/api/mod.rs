//! Adapters over the service core: REST/browser (axum) and the operator gRPC API (tonic).
//! They translate wire formats and errors; they hold no domain logic.

pub mod assets;
pub mod grpc;
pub mod http;

//! The metrics rpcs: queries of a host's history and its top processes now.

use tonic::Status;
use zpanel_proto::{
    ListProcessesRequest, ProcessListing, QueryMetricsRequest, QueryMetricsResponse,
};

use crate::service::{AppState, Principal};

pub async fn query(
    _state: &AppState,
    _principal: &Principal,
    _body: QueryMetricsRequest,
) -> Result<QueryMetricsResponse, Status> {
    Err(Status::unimplemented("metrics are being built"))
}

pub async fn processes(
    _state: &AppState,
    _principal: &Principal,
    _body: ListProcessesRequest,
) -> Result<ProcessListing, Status> {
    Err(Status::unimplemented("metrics are being built"))
}

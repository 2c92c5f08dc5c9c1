//! The web API (axum): health, Prometheus metrics, enrolment, the CA certificate, a JSON
//! host list and the landing page. Only this module knows JSON on the control plane.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use zpanel_shared::enroll::{CA_PATH, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody};

use crate::service::{AppState, ServiceError};
use crate::store::HostFacts;

/// Largest request body the web API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(CA_PATH, get(ca_pem))
        .route(ENROLL_PATH, post(enroll))
        .route("/api/v1/hosts", get(hosts))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = match self {
            ServiceError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ServiceError::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::SpawnFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let body = state
        .metrics
        .render(crate::router::HostRouter::online_hosts(&*state.router).len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn ca_pem(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca.cert_pem().to_string(),
    )
}

async fn enroll(
    State(state): State<Arc<AppState>>,
    request: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<EnrollResponse>, ServiceError> {
    let Json(request) = request.map_err(|e| {
        ServiceError::InvalidArgument(format!("bad enrolment request: {}", e.body_text()))
    })?;
    let enrolled = state
        .enroll(crate::service::EnrollRequest {
            token: request.token,
            csr_pem: request.csr_pem,
            name: request.name,
            labels: request.labels,
            facts: HostFacts {
                hostname: request.hostname,
                os: request.os,
                kernel: request.kernel,
                arch: request.arch,
                daemon_version: request.daemon_version,
            },
        })
        .await?;
    Ok(Json(EnrollResponse {
        host_id: enrolled.host_id,
        name: enrolled.name,
        cert_pem: enrolled.cert_pem,
        ca_pem: enrolled.ca_pem,
        bridge_url: enrolled.bridge_url,
        cert_expires_at: enrolled.cert_expires_at,
    }))
}

#[derive(Serialize)]
struct HostJson {
    id: String,
    name: String,
    status: &'static str,
    last_seen: Option<i64>,
    os: String,
    kernel: String,
    arch: String,
    daemon_version: String,
}

async fn hosts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<HostJson>>, ServiceError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let principal = state.authenticate(token).await?;
    let hosts = state.list_hosts(&principal).await?;
    Ok(Json(
        hosts
            .into_iter()
            .map(|view| HostJson {
                id: view.record.id,
                name: view.record.name,
                status: if view.online { "online" } else { "offline" },
                last_seen: view.record.last_seen,
                os: view.record.os,
                kernel: view.record.kernel,
                arch: view.record.arch,
                daemon_version: view.record.daemon_version,
            })
            .collect(),
    ))
}

//! The web API (axum): health, Prometheus metrics, enrolment, the CA certificate, the
//! browser's API (login, hosts and their live status, terminals, files, Docker, the
//! account, the audit log, users and workspaces) and the page itself. Only this module and its children
//! know JSON on the control plane.

mod access;
mod alerts;
mod auth;
mod docker;
mod files;
mod install;
mod metrics;
mod terminal;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zpanel_shared::enroll::{CA_PATH, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody};

use crate::service::{AppState, ServiceError};
use crate::store::HostFacts;

/// Largest request body the web API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(CA_PATH, get(ca_pem))
        .route(ENROLL_PATH, post(enroll))
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/session", get(auth::session))
        .route("/api/v1/account/sessions", get(access::sessions))
        .route(
            "/api/v1/account/sessions/{id}",
            delete(access::revoke_session),
        )
        .route("/api/v1/account/totp", post(access::totp_begin))
        .route("/api/v1/account/totp/confirm", post(access::totp_confirm))
        .route("/api/v1/account/totp/disable", post(access::totp_disable))
        .route(
            "/api/v1/account/api-tokens",
            get(access::api_tokens).post(access::create_api_token),
        )
        .route(
            "/api/v1/account/api-tokens/{id}",
            delete(access::revoke_api_token),
        )
        .route("/api/v1/audit", get(access::audit))
        .route("/api/v1/audit/export", get(access::audit_export))
        .route("/api/v1/audit/verify", get(access::audit_verify))
        .route("/api/v1/users", get(access::users).post(access::add_user))
        .route("/api/v1/users/{name}", delete(access::remove_user))
        .route("/api/v1/users/{name}/role", put(access::set_user_role))
        .route("/api/v1/users/{name}/totp", delete(access::reset_user_totp))
        .route(
            "/api/v1/workspaces",
            get(access::workspaces).post(access::create_workspace),
        )
        .route(
            "/api/v1/workspaces/{workspace}/quota",
            put(access::set_workspace_quota),
        )
        .route(
            "/api/v1/workspaces/{workspace}/hosts",
            post(access::add_workspace_host),
        )
        .route(
            "/api/v1/workspaces/{workspace}/members",
            post(access::add_workspace_member),
        )
        .route(
            "/api/v1/workspaces/{workspace}/members/{user}",
            delete(access::remove_workspace_member),
        )
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/hosts/events", get(host_events))
        .route("/api/v1/hosts/{host}/terminal", get(terminal::socket))
        .route("/api/v1/hosts/{host}/terminals", get(terminal::list))
        .route(
            "/api/v1/hosts/{host}/terminals/{session}",
            delete(terminal::kill),
        )
        .route("/api/v1/hosts/{host}/files", get(files::list))
        .route("/api/v1/hosts/{host}/files/stat", get(files::stat))
        .route("/api/v1/hosts/{host}/files/find", get(files::find))
        .route(
            "/api/v1/hosts/{host}/files/content",
            get(files::content).put(files::put),
        )
        .route("/api/v1/hosts/{host}/files/archive", get(files::archive))
        .route("/api/v1/hosts/{host}/files/op", post(files::change))
        .route("/api/v1/hosts/{host}/files/watch", get(files::watch))
        .merge(install::routes())
        .merge(docker::routes())
        .merge(metrics::routes())
        .merge(alerts::routes())
        .merge(super::assets::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The body of a request, or one line saying what is wrong with it (`what`: "user", …).
fn body<T>(body: Result<Json<T>, JsonRejection>, what: &str) -> Result<T, ServiceError> {
    body.map(|Json(body)| body)
        .map_err(|e| ServiceError::InvalidArgument(format!("bad {what}: {}", e.body_text())))
}

/// The query string, or one line saying what is wrong with it.
fn query<T: DeserializeOwned>(
    query: Result<Query<T>, QueryRejection>,
    what: &str,
) -> Result<T, ServiceError> {
    query
        .map(|Query(query)| query)
        .map_err(|e| ServiceError::InvalidArgument(format!("bad {what}: {}", e.body_text())))
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = match self {
            ServiceError::Unauthenticated
            | ServiceError::BadCredentials
            | ServiceError::TotpRequired => StatusCode::UNAUTHORIZED,
            ServiceError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::PermissionDenied(_)
            | ServiceError::Forbidden(_)
            | ServiceError::QuotaExceeded(_) => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ServiceError::Conflict(_) | ServiceError::Changed(_) => StatusCode::CONFLICT,
            ServiceError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::SpawnFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::Engine(_) => StatusCode::BAD_GATEWAY,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = match &self {
            ServiceError::RateLimited(wait) => {
                HeaderValue::from_str(&wait.as_secs().max(1).to_string()).ok()
            }
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
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
        state.ca.cert_pem(),
    )
}

async fn enroll(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<EnrollResponse>, ServiceError> {
    let Json(request) = request.map_err(|e| {
        ServiceError::InvalidArgument(format!("bad enrolment request: {}", e.body_text()))
    })?;
    let enrolled = state
        .enroll(
            crate::service::EnrollRequest {
                token: request.token,
                csr_pem: request.csr_pem,
                name: request.name,
                labels: request.labels,
                previous_cert_pem: request.previous_cert_pem,
                facts: HostFacts {
                    hostname: request.hostname,
                    os: request.os,
                    kernel: request.kernel,
                    arch: request.arch,
                    daemon_version: request.daemon_version,
                    ..Default::default()
                },
            },
            peer.ip(),
        )
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
    /// The name of the host's workspace.
    workspace: String,
}

async fn host_list(
    state: &AppState,
    principal: &crate::service::Principal,
) -> Result<Vec<HostJson>, ServiceError> {
    let hosts = state.list_hosts(principal).await?;
    Ok(hosts
        .into_iter()
        .map(|view| HostJson {
            id: view.record.id,
            name: view.record.name,
            status: if view.record.revoked_at.is_some() {
                "revoked"
            } else if view.online {
                "online"
            } else {
                "offline"
            },
            last_seen: view.record.last_seen,
            os: view.record.os,
            kernel: view.record.kernel,
            arch: view.record.arch,
            daemon_version: view.record.daemon_version,
            workspace: view.workspace,
        })
        .collect())
}

async fn hosts(
    State(state): State<Arc<AppState>>,
    caller: auth::Caller,
) -> Result<Json<Vec<HostJson>>, ServiceError> {
    Ok(Json(host_list(&state, &caller.principal).await?))
}

/// Changes that arrive this close together are sent as one update.
const HOST_EVENTS_COALESCE: Duration = Duration::from_millis(200);

/// The host list as Server-Sent Events: at once, then after every change.
async fn host_events(
    State(state): State<Arc<AppState>>,
    caller: auth::Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServiceError> {
    let first = host_list(&state, &caller.principal).await?;
    let changes = crate::router::HostRouter::changes(&*state.router);
    let start = (state, caller.principal, changes, Some(first));
    let events =
        futures_util::stream::unfold(start, |(state, principal, mut changes, ready)| async move {
            let hosts = match ready {
                Some(hosts) => hosts,
                None => {
                    changes.changed().await.ok()?;
                    tokio::time::sleep(HOST_EVENTS_COALESCE).await;
                    changes.borrow_and_update();
                    host_list(&state, &principal).await.ok()?
                }
            };
            let event = Event::default().event("hosts").json_data(&hosts).ok()?;
            Some((Ok(event), (state, principal, changes, None)))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

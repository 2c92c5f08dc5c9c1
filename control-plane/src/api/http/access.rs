//! Access control for the browser and scripts (see ARCHITECTURE.md "The browser"): the
//! caller's own account (browser sessions, the TOTP second factor, API tokens), the audit
//! log (entries, an export as JSON lines, the chain check) and, for admins, users and
//! workspaces. JSON in and out; every decision is the service's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{body, query};
use crate::service::access::ApiTokenRequest;
use crate::service::audit::MAX_AUDIT_PAGE;
use crate::service::{AppState, Role, ServiceError};
use crate::store::{
    ApiTokenRecord, AuditFilter, AuditRecord, Quotas, UserRecord, WebSessionRecord, WorkspaceRecord,
};

fn role(name: &str) -> Result<Role, ServiceError> {
    name.parse().map_err(ServiceError::InvalidArgument)
}

/// An optional text field: absent and "" are both "not given".
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// === the caller's browser sessions ===

#[derive(Serialize)]
pub struct WebSessionJson {
    id: String,
    address: String,
    created_at: i64,
    expires_at: i64,
    /// The session this request came with.
    current: bool,
}

pub async fn sessions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<WebSessionJson>>, ServiceError> {
    let current = match caller.session_cookie() {
        Some(cookie) => Some(state.authenticate_web(cookie).await?.2),
        None => None,
    };
    let sessions = state.sessions_list(&caller.principal).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(
                |WebSessionRecord {
                     id,
                     address,
                     created_at,
                     expires_at,
                 }| WebSessionJson {
                    current: current.as_deref() == Some(id.as_str()),
                    id,
                    address,
                    created_at,
                    expires_at,
                },
            )
            .collect(),
    ))
}

pub async fn revoke_session(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state.sessions_revoke(&caller.principal, &id).await?;
    Ok(no_content())
}

// === TOTP ===

#[derive(Serialize)]
pub struct TotpSetupJson {
    secret: String,
    /// The `otpauth://` URL an authenticator app reads (from a QR code).
    url: String,
}

#[derive(Deserialize)]
pub struct CodeBody {
    code: String,
}

pub async fn totp_begin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Json<TotpSetupJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let setup = state.totp_begin(&caller.principal).await?;
    Ok(Json(TotpSetupJson {
        secret: setup.secret,
        url: setup.url,
    }))
}

pub async fn totp_confirm(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<CodeBody>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "TOTP code")?;
    state
        .totp_confirm(&caller.principal, &request.code, caller.session_cookie())
        .await?;
    Ok(no_content())
}

pub async fn totp_disable(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<CodeBody>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "TOTP code")?;
    state.totp_disable(&caller.principal, &request.code).await?;
    Ok(no_content())
}

// === API tokens ===

#[derive(Serialize)]
pub struct ApiTokenJson {
    id: String,
    user: String,
    name: String,
    /// "" for an unscoped (global admin) token.
    workspace: String,
    role: &'static str,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl From<ApiTokenRecord> for ApiTokenJson {
    fn from(token: ApiTokenRecord) -> Self {
        ApiTokenJson {
            id: token.id,
            user: token.user_name,
            name: token.name,
            workspace: token.workspace,
            role: token.role.as_str(),
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
            last_used_at: token.last_used_at,
        }
    }
}

#[derive(Deserialize)]
pub struct TokensQuery {
    /// `1` or `true`: every user's tokens (admins).
    all: Option<String>,
}

pub async fn api_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    wanted: Result<Query<TokensQuery>, QueryRejection>,
) -> Result<Json<Vec<ApiTokenJson>>, ServiceError> {
    let wanted = query(wanted, "token query")?;
    let all = matches!(wanted.all.as_deref(), Some("1" | "true"));
    let tokens = state.api_tokens_list(&caller.principal, all).await?;
    Ok(Json(tokens.into_iter().map(ApiTokenJson::from).collect()))
}

#[derive(Deserialize)]
pub struct NewApiTokenBody {
    user: Option<String>,
    workspace: Option<String>,
    role: Option<String>,
    ttl_seconds: Option<u64>,
    name: Option<String>,
}

#[derive(Serialize)]
pub struct ApiTokenCreatedJson {
    /// The secret, shown this once.
    token: String,
    info: ApiTokenJson,
}

pub async fn create_api_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<NewApiTokenBody>, JsonRejection>,
) -> Result<Json<ApiTokenCreatedJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "API token request")?;
    let wanted = ApiTokenRequest {
        user: given(request.user),
        workspace: given(request.workspace),
        role: given(request.role).as_deref().map(role).transpose()?,
        ttl: request.ttl_seconds.map(Duration::from_secs),
        name: given(request.name),
    };
    let created = state.api_tokens_create(&caller.principal, wanted).await?;
    Ok(Json(ApiTokenCreatedJson {
        token: created.token,
        info: created.record.into(),
    }))
}

pub async fn revoke_api_token(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state.api_tokens_revoke(&caller.principal, &id).await?;
    Ok(no_content())
}

// === the audit log ===

#[derive(Serialize)]
pub struct AuditEntryJson {
    id: i64,
    at: i64,
    actor: String,
    credential: String,
    action: String,
    workspace_id: String,
    host_id: String,
    target: String,
    detail: String,
    outcome: String,
    hash: String,
}

impl From<AuditRecord> for AuditEntryJson {
    fn from(record: AuditRecord) -> Self {
        let entry = record.entry;
        AuditEntryJson {
            id: record.id,
            at: record.at,
            actor: entry.actor,
            credential: entry.credential,
            action: entry.action,
            workspace_id: entry.workspace_id,
            host_id: entry.host_id,
            target: entry.target,
            detail: entry.detail,
            outcome: entry.outcome,
            hash: record.hash,
        }
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    /// A host id or name.
    host: Option<String>,
    /// The actor's user name.
    user: Option<String>,
    /// An action and its sub-actions (`api_token` matches `api_token.create`).
    action: Option<String>,
    /// Unix seconds.
    since: Option<i64>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

impl From<AuditQuery> for AuditFilter {
    fn from(query: AuditQuery) -> Self {
        AuditFilter {
            workspaces: None,
            host_id: given(query.host),
            actor: given(query.user),
            action_prefix: given(query.action),
            since: query.since,
            before_id: query.before_id,
            limit: query.limit.unwrap_or(0),
        }
    }
}

/// Entries, newest first.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    wanted: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEntryJson>>, ServiceError> {
    let filter = query(wanted, "audit query")?.into();
    let entries = state.audit_query(&caller.principal, filter).await?;
    Ok(Json(
        entries.into_iter().map(AuditEntryJson::from).collect(),
    ))
}

/// Every matching entry (before `before_id`, if given) as JSON lines, oldest first, as a
/// download. The service answers newest first in pages, so the pages are read back to
/// front and sent in reverse.
pub async fn audit_export(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    wanted: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ServiceError> {
    let mut filter: AuditFilter = query(wanted, "audit query")?.into();
    filter.limit = MAX_AUDIT_PAGE;
    let mut pages = Vec::new();
    loop {
        let page = state.audit_query(&caller.principal, filter.clone()).await?;
        let full = page.len() >= MAX_AUDIT_PAGE as usize;
        filter.before_id = page.last().map(|oldest| oldest.id);
        pages.push(page);
        if !full || filter.before_id.is_none() {
            break;
        }
    }
    let lines = pages
        .into_iter()
        .rev()
        .flat_map(|page| page.into_iter().rev())
        .map(|record| {
            let mut line = serde_json::to_vec(&AuditEntryJson::from(record)).unwrap_or_default();
            line.push(b'\n');
            Ok::<_, Infallible>(line)
        });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"zpanel-audit.jsonl\"",
            ),
        ],
        Body::from_stream(futures_util::stream::iter(lines)),
    )
        .into_response())
}

#[derive(Serialize)]
pub struct AuditVerifyJson {
    ok: bool,
    /// How many entries were checked, when the chain holds.
    entries: Option<u64>,
    /// The first entry that does not verify, and why.
    broken_at: Option<i64>,
    reason: Option<String>,
}

pub async fn audit_verify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<AuditVerifyJson>, ServiceError> {
    let json = match state.audit_verify(&caller.principal).await? {
        Ok(entries) => AuditVerifyJson {
            ok: true,
            entries: Some(entries),
            broken_at: None,
            reason: None,
        },
        Err(broken) => AuditVerifyJson {
            ok: false,
            entries: None,
            broken_at: Some(broken.id),
            reason: Some(broken.reason),
        },
    };
    Ok(Json(json))
}

// === users (admins) ===

#[derive(Serialize)]
pub struct MembershipJson {
    /// The workspace's name.
    workspace: String,
    role: &'static str,
}

#[derive(Serialize)]
pub struct UserJson {
    id: String,
    name: String,
    admin: bool,
    has_password: bool,
    totp: bool,
    created_at: i64,
    memberships: Vec<MembershipJson>,
}

impl From<UserRecord> for UserJson {
    fn from(user: UserRecord) -> Self {
        UserJson {
            id: user.id,
            name: user.name,
            admin: user.admin,
            has_password: user.has_password,
            totp: user.totp,
            created_at: user.created_at,
            memberships: user
                .memberships
                .into_iter()
                .map(|(workspace, role)| MembershipJson {
                    workspace,
                    role: role.as_str(),
                })
                .collect(),
        }
    }
}

pub async fn users(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<UserJson>>, ServiceError> {
    let users = state.users_list(&caller.principal).await?;
    Ok(Json(users.into_iter().map(UserJson::from).collect()))
}

#[derive(Deserialize)]
pub struct NewUserBody {
    name: String,
    role: String,
    workspace: Option<String>,
    /// Without one the user cannot sign in to the page until an admin sets one.
    password: Option<String>,
}

pub async fn add_user(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<NewUserBody>, JsonRejection>,
) -> Result<Json<UserJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "user")?;
    let user = state
        .users_add(
            &caller.principal,
            &request.name,
            role(&request.role)?,
            given(request.workspace).as_deref(),
            given(request.password).as_deref(),
        )
        .await?;
    Ok(Json(user.into()))
}

pub async fn remove_user(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state.users_remove(&caller.principal, &name).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
    workspace: Option<String>,
}

pub async fn set_user_role(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<RoleBody>, JsonRejection>,
) -> Result<Json<UserJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "role change")?;
    let user = state
        .users_set_role(
            &caller.principal,
            &name,
            role(&request.role)?,
            given(request.workspace).as_deref(),
        )
        .await?;
    Ok(Json(user.into()))
}

pub async fn reset_user_totp(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state.users_reset_totp(&caller.principal, &name).await?;
    Ok(no_content())
}

// === workspaces ===

#[derive(Serialize)]
pub struct WorkspaceJson {
    id: String,
    name: String,
    /// Quotas; null is unlimited.
    max_hosts: Option<u64>,
    max_terminals: Option<u64>,
    max_api_tokens: Option<u64>,
    hosts: u64,
    members: u64,
    created_at: i64,
    /// The caller's role in it (null: none).
    role: Option<&'static str>,
}

impl WorkspaceJson {
    fn new(workspace: WorkspaceRecord, role: Option<Role>) -> WorkspaceJson {
        WorkspaceJson {
            id: workspace.id,
            name: workspace.name,
            max_hosts: workspace.quotas.max_hosts,
            max_terminals: workspace.quotas.max_terminals,
            max_api_tokens: workspace.quotas.max_api_tokens,
            hosts: workspace.hosts,
            members: workspace.members,
            created_at: workspace.created_at,
            role: role.map(Role::as_str),
        }
    }
}

/// The workspaces the caller has a role in (all of them for admins).
pub async fn workspaces(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<WorkspaceJson>>, ServiceError> {
    let workspaces = state.workspaces_list(&caller.principal).await?;
    Ok(Json(
        workspaces
            .into_iter()
            .map(|(workspace, role)| WorkspaceJson::new(workspace, role))
            .collect(),
    ))
}

/// A workspace's quotas; absent, null and 0 are all unlimited.
#[derive(Deserialize)]
pub struct QuotasBody {
    max_hosts: Option<u64>,
    max_terminals: Option<u64>,
    max_api_tokens: Option<u64>,
}

impl From<QuotasBody> for Quotas {
    fn from(body: QuotasBody) -> Self {
        let limit = |n: Option<u64>| n.filter(|&n| n > 0);
        Quotas {
            max_hosts: limit(body.max_hosts),
            max_terminals: limit(body.max_terminals),
            max_api_tokens: limit(body.max_api_tokens),
        }
    }
}

#[derive(Deserialize)]
pub struct NewWorkspaceBody {
    name: String,
    #[serde(flatten)]
    quotas: QuotasBody,
}

pub async fn create_workspace(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<NewWorkspaceBody>, JsonRejection>,
) -> Result<Json<WorkspaceJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "workspace")?;
    let workspace = state
        .workspaces_create(&caller.principal, &request.name, request.quotas.into())
        .await?;
    let role = caller.principal.role_in(&workspace.id);
    Ok(Json(WorkspaceJson::new(workspace, role)))
}

pub async fn set_workspace_quota(
    State(state): State<Arc<AppState>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<QuotasBody>, JsonRejection>,
) -> Result<Json<WorkspaceJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "quotas")?;
    let workspace = state
        .workspaces_set_quota(&caller.principal, &workspace, request.into())
        .await?;
    let role = caller.principal.role_in(&workspace.id);
    Ok(Json(WorkspaceJson::new(workspace, role)))
}

#[derive(Deserialize)]
pub struct HostBody {
    /// A host id or name.
    host: String,
}

pub async fn add_workspace_host(
    State(state): State<Arc<AppState>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<HostBody>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "host")?;
    state
        .workspaces_add_host(&caller.principal, &workspace, &request.host)
        .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
pub struct MemberBody {
    user: String,
    role: String,
}

pub async fn add_workspace_member(
    State(state): State<Arc<AppState>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<MemberBody>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let request = body(request, "member")?;
    state
        .workspaces_add_member(
            &caller.principal,
            &workspace,
            &request.user,
            role(&request.role)?,
        )
        .await?;
    Ok(no_content())
}

pub async fn remove_workspace_member(
    State(state): State<Arc<AppState>>,
    Path((workspace, user)): Path<(String, String)>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state
        .workspaces_remove_member(&caller.principal, &workspace, &user)
        .await?;
    Ok(no_content())
}

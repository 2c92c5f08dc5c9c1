//! Who is calling the web API: a browser session cookie or an API token. Cookie callers
//! must also pass the CSRF and Origin checks before changing anything. The login, logout
//! and session routes live here too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};

use crate::service::Principal;
use crate::service::{AppState, ServiceError};

/// The browser session cookie.
pub const SESSION_COOKIE: &str = "zpanel_session";
/// Header a cookie caller repeats its CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated caller of the web API.
pub struct Caller {
    pub principal: Principal,
    /// Set when the caller came with a session cookie: the cookie value and its CSRF token.
    browser: Option<(String, String)>,
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(&parts.headers) {
            let address = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |info| info.0.ip());
            let principal = state.authenticate(Some(token), address).await?;
            return Ok(Caller {
                principal,
                browser: None,
            });
        }
        let cookie = session_cookie(&parts.headers).ok_or(ServiceError::Unauthenticated)?;
        let (principal, csrf, _) = state.authenticate_web(&cookie).await?;
        Ok(Caller {
            principal,
            browser: Some((cookie, csrf)),
        })
    }
}

impl Caller {
    /// The session cookie's value, when the caller came with one.
    pub fn session_cookie(&self) -> Option<&str> {
        self.browser.as_ref().map(|(cookie, _)| cookie.as_str())
    }

    /// Refuses a state-changing request from a browser unless it carries the session's
    /// CSRF token and comes from our own origin. API-token callers pass.
    pub fn check_change(&self, headers: &HeaderMap, state: &AppState) -> Result<(), ServiceError> {
        let Some((_, csrf)) = &self.browser else {
            return Ok(());
        };
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if sent != Some(csrf.as_str()) {
            return Err(ServiceError::Forbidden(
                "missing or wrong CSRF token; reload the page".into(),
            ));
        }
        check_origin(headers, state)
    }
}

/// Refuses a request whose `Origin` is not this control plane (its public URL or the
/// host the request was sent to). Browsers always send `Origin` on WebSocket upgrades and
/// on cross-origin or state-changing requests.
pub fn check_origin(headers: &HeaderMap, state: &AppState) -> Result<(), ServiceError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scheme = state.public_url.split("://").next().unwrap_or("https");
    let same_host = !host.is_empty() && origin == format!("{scheme}://{host}");
    if same_host || origin == state.public_url {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "origin {origin:?} may not use this control plane; open the panel at {}",
            state.public_url
        )))
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    user: String,
    password: String,
    /// The TOTP code, for accounts with a second factor.
    #[serde(default)]
    code: Option<String>,
}

/// Who is signed in, as the page needs it.
#[derive(Serialize)]
pub struct SessionJson {
    user: String,
    /// The highest role anywhere ("" for none).
    role: String,
    csrf: String,
    /// A global admin (users, workspaces, the whole audit log).
    admin: bool,
    /// Whether the user signs in with a TOTP code.
    totp: bool,
    workspaces: Vec<WorkspaceRoleJson>,
}

#[derive(Serialize)]
pub struct WorkspaceRoleJson {
    id: String,
    name: String,
    /// The caller's role there ("" for none).
    role: String,
}

async fn session_json(
    state: &AppState,
    principal: Principal,
    csrf: String,
) -> Result<SessionJson, ServiceError> {
    let (_, totp) = state.store.totp_secrets(&principal.user_id).await?;
    let workspaces = state
        .workspaces_list(&principal)
        .await?
        .into_iter()
        .map(|(workspace, role)| WorkspaceRoleJson {
            id: workspace.id,
            name: workspace.name,
            role: role.map(|r| r.to_string()).unwrap_or_default(),
        })
        .collect();
    Ok(SessionJson {
        role: role_name(&principal),
        admin: principal.global_role().is_some(),
        totp: totp.is_some(),
        workspaces,
        user: principal.user_name,
        csrf,
    })
}

fn cookie_header(value: String, max_age: time::Duration) -> (header::HeaderName, String) {
    let cookie = Cookie::build((SESSION_COOKIE, value))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(max_age)
        .build();
    (header::SET_COOKIE, cookie.to_string())
}

pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ServiceError> {
    check_origin(&headers, &state)?;
    let Json(body) = body.map_err(|e| {
        ServiceError::InvalidArgument(format!("bad login request: {}", e.body_text()))
    })?;
    let session = match state
        .login(&body.user, &body.password, body.code.as_deref(), peer.ip())
        .await
    {
        Ok(session) => session,
        // The page asks for the code, then sends the login again with it.
        Err(e @ ServiceError::TotpRequired) => {
            let body = serde_json::json!({ "error": e.to_string(), "totp_required": true });
            return Ok((StatusCode::UNAUTHORIZED, Json(body)).into_response());
        }
        Err(e) => return Err(e),
    };
    let max_age = time::Duration::seconds(session.expires_at - crate::store::now());
    let json = session_json(&state, session.principal, session.csrf).await?;
    Ok(([cookie_header(session.token, max_age)], Json(json)).into_response())
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    if let Some((cookie, _)) = &caller.browser {
        state.logout(&caller.principal, cookie).await?;
    }
    let clear = cookie_header(String::new(), time::Duration::ZERO);
    Ok((StatusCode::NO_CONTENT, [clear]).into_response())
}

pub async fn session(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<SessionJson>, ServiceError> {
    let csrf = caller.browser.map(|(_, csrf)| csrf).unwrap_or_default();
    Ok(Json(session_json(&state, caller.principal, csrf).await?))
}

/// The caller's highest role, to show in the page ("" when they have none).
pub fn role_name(principal: &Principal) -> String {
    principal
        .top_role()
        .map(|role| role.to_string())
        .unwrap_or_default()
}

//! Alert routes (ARCHITECTURE.md "Metrics and alerts"): rules, notification channels (never
//! their secrets), test notifications and the alert history. JSON in and out (the answers are
//! `zpanel_shared::alerts`' types, which `zpanel alerts --json` prints too); every decision
//! is the service's.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use zpanel_shared::alerts::{ChannelJson, DeliveryJson, EventJson, RuleJson, RuleSpec, sent_at};

use super::auth::Caller;
use super::{body, query};
use crate::service::alerts::{ChannelRequest, ChannelView, EventQuery, RuleRequest, RuleView};
use crate::service::{AppState, ServiceError};
use crate::store::AlertEventRecord;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/alerts/rules", get(rules).post(create_rule))
        .route("/api/v1/alerts/rules/{rule}", delete(delete_rule))
        .route(
            "/api/v1/alerts/channels",
            get(channels).post(create_channel),
        )
        .route("/api/v1/alerts/channels/{channel}", delete(delete_channel))
        .route("/api/v1/alerts/channels/{channel}/test", post(test_channel))
        .route("/api/v1/alerts/events", get(events))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// === rules ===

impl From<RuleView> for RuleJson {
    fn from(RuleView { rule, workspace }: RuleView) -> Self {
        RuleJson {
            id: rule.id,
            name: rule.name,
            spec: rule.spec,
            workspace,
            created_at: rule.created_at,
            created_by: rule.created_by,
        }
    }
}

#[derive(Deserialize)]
pub struct RuleBody {
    name: String,
    workspace: Option<String>,
    #[serde(flatten)]
    spec: RuleSpec,
}

pub async fn rules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<RuleJson>>, ServiceError> {
    let rules = state.alert_rules(&caller.principal).await?;
    Ok(Json(rules.into_iter().map(RuleJson::from).collect()))
}

pub async fn create_rule(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<RuleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RuleJson>), ServiceError> {
    caller.check_change(&headers, &state)?;
    let body = body(request, "alert rule")?;
    let request = RuleRequest {
        name: body.name,
        workspace: body.workspace.filter(|w| !w.is_empty()),
        spec: body.spec,
    };
    let rule = state.alert_rule_create(&caller.principal, request).await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

pub async fn delete_rule(
    State(state): State<Arc<AppState>>,
    Path(rule): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state.alert_rule_delete(&caller.principal, &rule).await?;
    Ok(no_content())
}

// === channels ===

impl From<ChannelView> for ChannelJson {
    fn from(view: ChannelView) -> Self {
        ChannelJson {
            id: view.id,
            name: view.name,
            kind: view.kind,
            url: view.url,
            to: view.to,
            from: view.from,
            chat_id: view.chat_id,
            has_secret: view.has_secret,
            workspace: view.workspace,
            created_at: view.created_at,
        }
    }
}

#[derive(Deserialize)]
pub struct ChannelBody {
    name: String,
    workspace: Option<String>,
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    smtp_url: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    chat_id: String,
    #[serde(default)]
    secret: String,
}

#[derive(Serialize)]
pub struct TestJson {
    ok: bool,
    error: Option<String>,
}

pub async fn channels(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<ChannelJson>>, ServiceError> {
    let channels = state.alert_channels(&caller.principal).await?;
    Ok(Json(channels.into_iter().map(ChannelJson::from).collect()))
}

pub async fn create_channel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    request: Result<Json<ChannelBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ChannelJson>), ServiceError> {
    caller.check_change(&headers, &state)?;
    let body = body(request, "alert channel")?;
    let request = ChannelRequest {
        name: body.name,
        workspace: body.workspace.filter(|w| !w.is_empty()),
        kind: body.kind,
        url: body.url,
        to: body.to,
        smtp_url: body.smtp_url,
        from: body.from,
        chat_id: body.chat_id,
        secret: body.secret,
    };
    let channel = state
        .alert_channel_create(&caller.principal, request)
        .await?;
    Ok((StatusCode::CREATED, Json(channel.into())))
}

pub async fn delete_channel(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    state
        .alert_channel_delete(&caller.principal, &channel)
        .await?;
    Ok(no_content())
}

pub async fn test_channel(
    State(state): State<Arc<AppState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Json<TestJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let sent = state
        .alert_channel_test(&caller.principal, &channel)
        .await?;
    Ok(Json(TestJson {
        ok: sent.is_ok(),
        error: sent.err(),
    }))
}

// === history ===

impl From<AlertEventRecord> for EventJson {
    fn from(event: AlertEventRecord) -> Self {
        EventJson {
            id: event.id,
            rule: event.rule_name,
            host_id: event.host_id,
            host_name: event.host_name,
            state: event.state,
            severity: event.severity,
            value: event.value,
            at: event.at,
            summary: event.summary,
            notified: event.notified,
            deliveries: event
                .deliveries
                .into_iter()
                .map(|d| DeliveryJson {
                    channel: d.channel_name,
                    status: d.status,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    sent_at: sent_at(d.sent_at),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    host: Option<String>,
    rule: Option<String>,
    /// `1` (or `true`): only alerts firing now.
    active: Option<String>,
    limit: Option<u32>,
}

pub async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<EventJson>>, ServiceError> {
    let request = query(request, "alert history query")?;
    let filter = EventQuery {
        host: request.host,
        rule: request.rule,
        active: matches!(request.active.as_deref(), Some("1" | "true")),
        limit: request.limit.unwrap_or(0),
    };
    let events = state.alert_events(&caller.principal, filter).await?;
    Ok(Json(events.into_iter().map(EventJson::from).collect()))
}

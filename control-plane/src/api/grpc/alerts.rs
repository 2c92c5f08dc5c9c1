//! The alert rpcs: rules, notification channels and the alert history.

use tonic::Status;
use zpanel_proto::{
    AlertChannel, AlertDelivery, AlertEvent, AlertRule, CreateAlertChannelRequest,
    CreateAlertRuleRequest, DeleteAlertChannelRequest, DeleteAlertChannelResponse,
    DeleteAlertRuleRequest, DeleteAlertRuleResponse, ListAlertChannelsRequest,
    ListAlertChannelsResponse, ListAlertEventsRequest, ListAlertEventsResponse,
    ListAlertRulesRequest, ListAlertRulesResponse, TestAlertChannelRequest,
    TestAlertChannelResponse,
};
use zpanel_shared::alerts::RuleSpec;

use crate::service::alerts::{ChannelRequest, ChannelView, EventQuery, RuleRequest, RuleView};
use crate::service::{AppState, Principal, ServiceError};
use crate::store::AlertEventRecord;

fn missing(what: &str) -> ServiceError {
    ServiceError::InvalidArgument(format!("no {what} in the request"))
}

fn optional(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
}

fn rule(view: RuleView) -> AlertRule {
    let RuleView { rule, workspace } = view;
    let spec = rule.spec;
    AlertRule {
        id: rule.id,
        name: rule.name,
        kind: spec.kind,
        metric: spec.metric,
        instance: spec.instance,
        comparison: spec.comparison,
        threshold: spec.threshold,
        for_seconds: spec.for_seconds,
        severity: spec.severity,
        selector: spec.selector.into_iter().collect(),
        channels: spec.channels,
        cooldown_seconds: spec.cooldown_seconds,
        workspace,
        created_at: rule.created_at,
        created_by: rule.created_by,
    }
}

fn channel(view: ChannelView) -> AlertChannel {
    AlertChannel {
        id: view.id,
        name: view.name,
        kind: view.kind,
        url: view.url,
        to: view.to,
        smtp_url: String::new(),
        from: view.from,
        chat_id: view.chat_id,
        secret: String::new(),
        has_secret: view.has_secret,
        workspace: view.workspace,
        created_at: view.created_at,
    }
}

fn event(record: AlertEventRecord) -> AlertEvent {
    AlertEvent {
        id: record.id,
        rule: record.rule_name,
        host_id: record.host_id,
        host_name: record.host_name,
        state: record.state,
        severity: record.severity,
        value: record.value,
        at: record.at,
        summary: record.summary,
        notified: record.notified,
        deliveries: record
            .deliveries
            .into_iter()
            .map(|d| AlertDelivery {
                channel: d.channel_name,
                status: d.status,
                attempts: d.attempts,
                last_error: d.last_error,
                sent_at: d.sent_at,
            })
            .collect(),
    }
}

pub async fn list_rules(
    state: &AppState,
    principal: &Principal,
    _body: ListAlertRulesRequest,
) -> Result<ListAlertRulesResponse, Status> {
    let rules = state.alert_rules(principal).await?;
    Ok(ListAlertRulesResponse {
        rules: rules.into_iter().map(rule).collect(),
    })
}

pub async fn create_rule(
    state: &AppState,
    principal: &Principal,
    body: CreateAlertRuleRequest,
) -> Result<AlertRule, Status> {
    let given = body.rule.ok_or_else(|| missing("rule"))?;
    let request = RuleRequest {
        spec: RuleSpec::from(&given),
        name: given.name,
        workspace: optional(given.workspace),
    };
    Ok(rule(state.alert_rule_create(principal, request).await?))
}

pub async fn delete_rule(
    state: &AppState,
    principal: &Principal,
    body: DeleteAlertRuleRequest,
) -> Result<DeleteAlertRuleResponse, Status> {
    state.alert_rule_delete(principal, &body.rule).await?;
    Ok(DeleteAlertRuleResponse {})
}

pub async fn list_channels(
    state: &AppState,
    principal: &Principal,
    _body: ListAlertChannelsRequest,
) -> Result<ListAlertChannelsResponse, Status> {
    let channels = state.alert_channels(principal).await?;
    Ok(ListAlertChannelsResponse {
        channels: channels.into_iter().map(channel).collect(),
    })
}

pub async fn create_channel(
    state: &AppState,
    principal: &Principal,
    body: CreateAlertChannelRequest,
) -> Result<AlertChannel, Status> {
    let given = body.channel.ok_or_else(|| missing("channel"))?;
    let request = ChannelRequest {
        name: given.name,
        workspace: optional(given.workspace),
        kind: given.kind,
        url: given.url,
        to: given.to,
        smtp_url: given.smtp_url,
        from: given.from,
        chat_id: given.chat_id,
        secret: given.secret,
    };
    Ok(channel(
        state.alert_channel_create(principal, request).await?,
    ))
}

pub async fn delete_channel(
    state: &AppState,
    principal: &Principal,
    body: DeleteAlertChannelRequest,
) -> Result<DeleteAlertChannelResponse, Status> {
    state.alert_channel_delete(principal, &body.channel).await?;
    Ok(DeleteAlertChannelResponse {})
}

pub async fn test_channel(
    state: &AppState,
    principal: &Principal,
    body: TestAlertChannelRequest,
) -> Result<TestAlertChannelResponse, Status> {
    let sent = state.alert_channel_test(principal, &body.channel).await?;
    Ok(TestAlertChannelResponse {
        ok: sent.is_ok(),
        error: sent.err().unwrap_or_default(),
    })
}

pub async fn list_events(
    state: &AppState,
    principal: &Principal,
    body: ListAlertEventsRequest,
) -> Result<ListAlertEventsResponse, Status> {
    let query = EventQuery {
        host: optional(body.host),
        rule: optional(body.rule),
        active: body.active,
        limit: body.limit,
    };
    let events = state.alert_events(principal, query).await?;
    Ok(ListAlertEventsResponse {
        events: events.into_iter().map(event).collect(),
    })
}

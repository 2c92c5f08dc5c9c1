//! The alert rpcs: rules, notification channels and the alert history.

use tonic::Status;
use zpanel_proto::{
    AlertChannel, AlertRule, CreateAlertChannelRequest, CreateAlertRuleRequest,
    DeleteAlertChannelRequest, DeleteAlertChannelResponse, DeleteAlertRuleRequest,
    DeleteAlertRuleResponse, ListAlertChannelsRequest, ListAlertChannelsResponse,
    ListAlertEventsRequest, ListAlertEventsResponse, ListAlertRulesRequest, ListAlertRulesResponse,
    TestAlertChannelRequest, TestAlertChannelResponse,
};

use crate::service::{AppState, Principal};

fn building() -> Status {
    Status::unimplemented("alerts are being built")
}

pub async fn list_rules(
    _state: &AppState,
    _principal: &Principal,
    _body: ListAlertRulesRequest,
) -> Result<ListAlertRulesResponse, Status> {
    Err(building())
}

pub async fn create_rule(
    _state: &AppState,
    _principal: &Principal,
    _body: CreateAlertRuleRequest,
) -> Result<AlertRule, Status> {
    Err(building())
}

pub async fn delete_rule(
    _state: &AppState,
    _principal: &Principal,
    _body: DeleteAlertRuleRequest,
) -> Result<DeleteAlertRuleResponse, Status> {
    Err(building())
}

pub async fn list_channels(
    _state: &AppState,
    _principal: &Principal,
    _body: ListAlertChannelsRequest,
) -> Result<ListAlertChannelsResponse, Status> {
    Err(building())
}

pub async fn create_channel(
    _state: &AppState,
    _principal: &Principal,
    _body: CreateAlertChannelRequest,
) -> Result<AlertChannel, Status> {
    Err(building())
}

pub async fn delete_channel(
    _state: &AppState,
    _principal: &Principal,
    _body: DeleteAlertChannelRequest,
) -> Result<DeleteAlertChannelResponse, Status> {
    Err(building())
}

pub async fn test_channel(
    _state: &AppState,
    _principal: &Principal,
    _body: TestAlertChannelRequest,
) -> Result<TestAlertChannelResponse, Status> {
    Err(building())
}

pub async fn list_events(
    _state: &AppState,
    _principal: &Principal,
    _body: ListAlertEventsRequest,
) -> Result<ListAlertEventsResponse, Status> {
    Err(building())
}

//! Wire conversions for users, workspaces, API tokens and the audit log.

use std::time::Duration;

use tonic::Status;
use zpanel_proto as pb;

use crate::service::Role;
use crate::service::access::ApiTokenRequest;
use crate::store::{ApiTokenRecord, AuditFilter, AuditRecord, Quotas, UserRecord, WorkspaceRecord};

/// "" as `None`.
pub fn optional(value: &str) -> Option<&str> {
    Some(value).filter(|v| !v.is_empty())
}

pub fn role(value: &str) -> Result<Role, Status> {
    value.parse().map_err(Status::invalid_argument)
}

pub fn user(user: UserRecord) -> pb::User {
    pb::User {
        id: user.id,
        name: user.name,
        admin: user.admin,
        has_password: user.has_password,
        totp: user.totp,
        created_at: user.created_at,
        memberships: user
            .memberships
            .into_iter()
            .map(|(workspace, role)| pb::WorkspaceRole {
                workspace,
                role: role.to_string(),
            })
            .collect(),
    }
}

pub fn workspace(workspace: WorkspaceRecord, role: Option<Role>) -> pb::Workspace {
    pb::Workspace {
        id: workspace.id,
        name: workspace.name,
        max_hosts: workspace.quotas.max_hosts.unwrap_or(0),
        max_terminals: workspace.quotas.max_terminals.unwrap_or(0),
        max_api_tokens: workspace.quotas.max_api_tokens.unwrap_or(0),
        hosts: workspace.hosts,
        members: workspace.members,
        created_at: workspace.created_at,
        role: role.map(|r| r.to_string()).unwrap_or_default(),
    }
}

/// Quotas from the wire over `base`: unset keeps a quota, 0 makes it unlimited.
pub fn quotas(wire: Option<pb::Quotas>, base: Quotas) -> Quotas {
    let wire = wire.unwrap_or_default();
    let merge = |new: Option<u64>, old: Option<u64>| match new {
        Some(0) => None,
        Some(n) => Some(n),
        None => old,
    };
    Quotas {
        max_hosts: merge(wire.max_hosts, base.max_hosts),
        max_terminals: merge(wire.max_terminals, base.max_terminals),
        max_api_tokens: merge(wire.max_api_tokens, base.max_api_tokens),
    }
}

pub fn api_token(token: ApiTokenRecord) -> pb::ApiToken {
    pb::ApiToken {
        id: token.id,
        user: token.user_name,
        name: token.name,
        workspace: token.workspace,
        role: token.role.to_string(),
        created_at: token.created_at,
        expires_at: token.expires_at.unwrap_or(0),
        revoked_at: token.revoked_at.unwrap_or(0),
        last_used_at: token.last_used_at.unwrap_or(0),
    }
}

pub fn api_token_request(body: pb::CreateApiTokenRequest) -> Result<ApiTokenRequest, Status> {
    Ok(ApiTokenRequest {
        user: optional(&body.user).map(String::from),
        workspace: optional(&body.workspace).map(String::from),
        role: optional(&body.role).map(role).transpose()?,
        ttl: (body.ttl_seconds > 0).then(|| Duration::from_secs(body.ttl_seconds)),
        name: optional(&body.name).map(String::from),
    })
}

pub fn audit_filter(body: &pb::ListAuditRequest) -> AuditFilter {
    AuditFilter {
        workspaces: None,
        host_id: optional(&body.host).map(String::from),
        actor: optional(&body.user).map(String::from),
        action_prefix: optional(&body.action).map(String::from),
        since: (body.since > 0).then_some(body.since),
        before_id: (body.before_id > 0).then_some(body.before_id),
        limit: body.limit,
    }
}

pub fn audit_entry(record: AuditRecord) -> pb::AuditEntry {
    let e = record.entry;
    pb::AuditEntry {
        id: record.id,
        at: record.at,
        actor: e.actor,
        credential: e.credential,
        action: e.action,
        workspace_id: e.workspace_id,
        host_id: e.host_id,
        target: e.target,
        detail: e.detail,
        outcome: e.outcome,
        hash: record.hash,
    }
}

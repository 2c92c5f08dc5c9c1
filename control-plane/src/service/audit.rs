//! The one authorisation check every adapter goes through, and the audit log: writing
//! entries, reading them within the caller's workspaces, and verifying the chain.

use super::{AppState, ServiceError};
use crate::access::{Action, Principal, Role, allowed};
use crate::store::{AuditBreak, AuditEntry, AuditFilter, AuditRecord, HostRecord, Store};

/// Most entries one audit query returns.
pub const MAX_AUDIT_PAGE: u32 = 10_000;

/// Checks `action` for `principal`: in `workspace` for workspace actions, globally for the
/// others (and when `workspace` is `None`). Returns the role it was allowed with.
pub fn check(
    principal: &Principal,
    action: Action,
    workspace: Option<&str>,
) -> Result<Role, ServiceError> {
    let role = match workspace {
        Some(workspace) if !action.is_global() => principal.role_in(workspace),
        _ => principal.global_role(),
    };
    let verb = action.verb();
    match role {
        Some(role) if allowed(role, action) => Ok(role),
        Some(role) => Err(ServiceError::PermissionDenied(format!(
            "role {role} may not {verb}"
        ))),
        None if action.is_global() || workspace.is_none() => Err(ServiceError::PermissionDenied(
            format!("you may not {verb}: that takes an admin (with a token for every workspace)"),
        )),
        None => Err(ServiceError::PermissionDenied(format!(
            "you have no role in this workspace, so you may not {verb}"
        ))),
    }
}

/// The outcome an audit entry records for a result: `ok`, or `failed: ` and the error.
pub fn outcome<T>(result: &Result<T, ServiceError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    }
}

async fn write(store: &Store, entry: AuditEntry) {
    if let Err(e) = store.audit(&entry).await {
        tracing::error!(
            actor = %entry.actor,
            action = %entry.action,
            "cannot write audit entry: {e:#}"
        );
    }
}

/// The audit entry of an operation that streams (a pull, an import), written with the
/// outcome when it ends, or as failed when it is dropped before (the client went away).
pub struct PendingAudit {
    store: Store,
    entry: Option<AuditEntry>,
}

impl PendingAudit {
    /// Writes the entry with the operation's outcome (once; later calls do nothing).
    pub async fn finish(&mut self, outcome: String) {
        if let Some(entry) = self.entry.take() {
            write(&self.store, entry.outcome(outcome)).await;
        }
    }
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let entry = entry.outcome("failed: abandoned before its end (the client went away)");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = self.store.clone();
                runtime.spawn(async move { write(&store, entry).await });
            }
            Err(_) => tracing::error!(
                actor = %entry.actor,
                action = %entry.action,
                "cannot write audit entry: no runtime left to write it"
            ),
        }
    }
}

impl AppState {
    /// An audit entry for something `principal` did.
    pub fn entry(&self, principal: &Principal, action: &str) -> AuditEntry {
        AuditEntry::new(&principal.user_name, action).credential(principal.credential())
    }

    /// Writes an audit entry; a failure to audit is logged, never hidden.
    pub async fn audit(&self, entry: AuditEntry) {
        write(&self.store, entry).await;
    }

    /// An entry written when an operation ends (see [`PendingAudit`]).
    pub fn pending_audit(&self, entry: AuditEntry) -> PendingAudit {
        PendingAudit {
            store: self.store.clone(),
            entry: Some(entry),
        }
    }

    /// The authorisation check (see [`check`]); a refusal is written to the audit log.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        workspace: Option<&str>,
    ) -> Result<Role, ServiceError> {
        let checked = check(principal, action, workspace);
        if let Err(e) = &checked {
            self.audit(
                self.entry(principal, "access.denied")
                    .workspace(workspace.unwrap_or(""))
                    .detail(e.to_string())
                    .outcome("denied"),
            )
            .await;
        }
        checked
    }

    /// A host the caller may do `action` on. A host in a workspace the caller has no role
    /// in is answered exactly like one that does not exist.
    pub async fn host_for(
        &self,
        principal: &Principal,
        action: Action,
        id_or_name: &str,
    ) -> Result<HostRecord, ServiceError> {
        let unknown = || {
            ServiceError::NotFound(format!(
                "unknown host {id_or_name:?}; `zpanel hosts` lists them"
            ))
        };
        let host = self
            .store
            .find_host(id_or_name)
            .await?
            .ok_or_else(unknown)?;
        if principal.role_in(&host.workspace_id).is_none() {
            self.audit(
                self.entry(principal, "access.denied")
                    .host(&host.id, &host.workspace_id)
                    .detail(format!(
                        "host outside the caller's workspaces: {}",
                        action.verb()
                    ))
                    .outcome("denied"),
            )
            .await;
            return Err(unknown());
        }
        if let Err(e) = check(principal, action, Some(&host.workspace_id)) {
            self.audit(
                self.entry(principal, "access.denied")
                    .host(&host.id, &host.workspace_id)
                    .detail(e.to_string())
                    .outcome("denied"),
            )
            .await;
            return Err(e);
        }
        Ok(host)
    }

    /// Audit entries, newest first, limited to the workspaces the caller reads the audit
    /// log of (all entries for a global admin).
    pub async fn audit_query(
        &self,
        principal: &Principal,
        mut filter: AuditFilter,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        filter.workspaces = if check(principal, Action::VerifyAudit, None).is_ok() {
            None
        } else {
            let readable: Vec<String> = principal
                .visible_workspaces()
                .unwrap_or_default()
                .into_iter()
                .filter(|w| check(principal, Action::ReadAudit, Some(w)).is_ok())
                .collect();
            if readable.is_empty() {
                let visible = principal.visible_workspaces().unwrap_or_default();
                self.authorize(
                    principal,
                    Action::ReadAudit,
                    visible.first().map(String::as_str),
                )
                .await?;
            }
            Some(readable)
        };
        if filter.limit == 0 || filter.limit > MAX_AUDIT_PAGE {
            filter.limit = MAX_AUDIT_PAGE;
        }
        if let Some(host) = filter.host_id.take() {
            filter.host_id = Some(self.host_for(principal, Action::ListHosts, &host).await?.id);
        }
        Ok(self.store.query_audit(&filter).await?)
    }

    /// Walks the whole chain: the number of entries, or where it breaks.
    pub async fn audit_verify(
        &self,
        principal: &Principal,
    ) -> Result<Result<u64, AuditBreak>, ServiceError> {
        self.authorize(principal, Action::VerifyAudit, None).await?;
        let result = self.store.verify_audit().await?;
        let outcome = match &result {
            Ok(n) => format!("{n} entries verified"),
            Err(b) => format!("broken at entry {}: {}", b.id, b.reason),
        };
        self.audit(
            self.entry(principal, "audit.verify")
                .detail(outcome)
                .outcome(if result.is_ok() { "ok" } else { "failed" }),
        )
        .await;
        Ok(result)
    }
}

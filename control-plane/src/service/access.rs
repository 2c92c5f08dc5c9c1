//! Users, workspaces (with quotas), API tokens, the TOTP second factor and a user's own
//! browser sessions.

use std::time::Duration;

use totp_rs::{Algorithm, Secret, TOTP};

use super::{AppState, ServiceError};
use crate::access::{Action, Principal, Role};
use crate::router::HostRouter;
use crate::store::{
    ApiTokenRecord, DEFAULT_WORKSPACE, NewApiToken, Quotas, UserRecord, WebSessionRecord,
    WorkspaceRecord,
};

/// How long an API token lives unless asked otherwise, and at most.
pub const DEFAULT_API_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
pub const MAX_API_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// TOTP codes: six digits, a 30-second step, one step of clock skew either way.
const TOTP_DIGITS: usize = 6;
const TOTP_STEP: u64 = 30;
const TOTP_SKEW: u8 = 1;
const TOTP_ISSUER: &str = "Zpanel";

/// What `zpanel api-tokens create` asks for.
#[derive(Debug, Default)]
pub struct ApiTokenRequest {
    /// Whose token (default: the caller's own).
    pub user: Option<String>,
    pub workspace: Option<String>,
    /// The role it acts with (default: the user's role in the workspace).
    pub role: Option<Role>,
    pub ttl: Option<Duration>,
    pub name: Option<String>,
}

pub struct ApiTokenCreated {
    pub token: String,
    pub record: ApiTokenRecord,
}

/// A TOTP secret being set up: the base32 secret and the `otpauth://` URL for an app.
pub struct TotpSetup {
    pub secret: String,
    pub url: String,
}

/// Checks a user or workspace name: 1-64 letters, digits, '-', '_' or '.'.
pub fn check_name(kind: &str, name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "a {kind} name must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Refuses to go past a quota.
fn within_quota(
    workspace: &WorkspaceRecord,
    what: &str,
    used: u64,
    max: Option<u64>,
) -> Result<(), ServiceError> {
    match max {
        Some(max) if used >= max => Err(ServiceError::QuotaExceeded(format!(
            "workspace {} already has {used} {what}, its quota; an admin can raise it with `zpanel workspaces set-quota`",
            workspace.name
        ))),
        _ => Ok(()),
    }
}

fn totp(secret: &str, account: &str) -> Result<TOTP, ServiceError> {
    let bytes = Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|e| ServiceError::Internal(format!("stored TOTP secret: {e:?}")))?;
    TOTP::new(
        Algorithm::SHA1,
        TOTP_DIGITS,
        TOTP_SKEW,
        TOTP_STEP,
        bytes,
        Some(TOTP_ISSUER.into()),
        account.into(),
    )
    .map_err(|e| ServiceError::Internal(format!("TOTP: {e}")))
}

impl AppState {
    // === users ===

    pub async fn users_add(
        &self,
        principal: &Principal,
        name: &str,
        role: Role,
        workspace: Option<&str>,
        password: Option<&str>,
    ) -> Result<UserRecord, ServiceError> {
        self.authorize(principal, Action::ManageUsers, None).await?;
        check_name("user", name)?;
        let membership = if role == Role::Admin {
            None
        } else {
            let workspace = self
                .workspace(workspace.unwrap_or(DEFAULT_WORKSPACE))
                .await?;
            Some((workspace.id, role))
        };
        let hash = match password {
            Some(password) => Some(super::login::hash_checked(password).await?),
            None => None,
        };
        self.store
            .create_user(
                name,
                role == Role::Admin,
                hash.as_deref(),
                membership.as_ref().map(|(w, r)| (w.as_str(), *r)),
            )
            .await?;
        let detail = match &membership {
            Some(_) => format!("role {role} in {}", workspace.unwrap_or(DEFAULT_WORKSPACE)),
            None => "admin".into(),
        };
        self.audit(
            self.entry(principal, "user.add")
                .target(name)
                .detail(detail),
        )
        .await;
        self.user(name).await
    }

    pub async fn users_list(&self, principal: &Principal) -> Result<Vec<UserRecord>, ServiceError> {
        self.authorize(principal, Action::ManageUsers, None).await?;
        Ok(self.store.list_users().await?)
    }

    async fn user(&self, name: &str) -> Result<UserRecord, ServiceError> {
        self.store
            .list_users()
            .await?
            .into_iter()
            .find(|u| u.name == name)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no user named {name:?}; `zpanel users list`"))
            })
    }

    /// Refuses to leave the control plane without a global admin.
    async fn keep_an_admin(&self, user: &UserRecord) -> Result<(), ServiceError> {
        if user.admin && self.store.count_admins().await? <= 1 {
            return Err(ServiceError::Conflict(format!(
                "{} is the last admin; make another user admin first",
                user.name
            )));
        }
        Ok(())
    }

    pub async fn users_remove(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<(), ServiceError> {
        self.authorize(principal, Action::ManageUsers, None).await?;
        let user = self.user(name).await?;
        self.keep_an_admin(&user).await?;
        self.store.delete_user(&user.id).await?;
        self.audit(self.entry(principal, "user.remove").target(name))
            .await;
        Ok(())
    }

    /// `admin` makes a global admin; another role is set in a workspace (default: the
    /// default workspace) and takes the global admin role away.
    pub async fn users_set_role(
        &self,
        principal: &Principal,
        name: &str,
        role: Role,
        workspace: Option<&str>,
    ) -> Result<UserRecord, ServiceError> {
        self.authorize(principal, Action::ManageUsers, None).await?;
        let user = self.user(name).await?;
        let detail = if role == Role::Admin {
            self.store.set_admin(&user.id, true).await?;
            "admin".to_string()
        } else {
            self.keep_an_admin(&user).await?;
            let workspace = self
                .workspace(workspace.unwrap_or(DEFAULT_WORKSPACE))
                .await?;
            self.store.set_admin(&user.id, false).await?;
            self.store.set_member(&workspace.id, &user.id, role).await?;
            format!("role {role} in {}", workspace.name)
        };
        self.audit(
            self.entry(principal, "user.set_role")
                .target(name)
                .detail(detail),
        )
        .await;
        self.user(name).await
    }

    /// Turns off a user's second factor (a lost phone); they sign in with the password.
    pub async fn users_reset_totp(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<(), ServiceError> {
        self.authorize(principal, Action::ManageUsers, None).await?;
        let user = self.user(name).await?;
        self.store.set_totp(&user.id, None, None).await?;
        self.audit(self.entry(principal, "user.reset_totp").target(name))
            .await;
        Ok(())
    }

    // === workspaces ===

    /// A workspace by id or name.
    pub async fn workspace(&self, id_or_name: &str) -> Result<WorkspaceRecord, ServiceError> {
        self.store.find_workspace(id_or_name).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no workspace {id_or_name:?}; `zpanel workspaces list` shows them"
            ))
        })
    }

    pub async fn workspaces_create(
        &self,
        principal: &Principal,
        name: &str,
        quotas: Quotas,
    ) -> Result<WorkspaceRecord, ServiceError> {
        self.authorize(principal, Action::ManageWorkspaces, None)
            .await?;
        check_name("workspace", name)?;
        let id = self.store.create_workspace(name, quotas).await?;
        self.audit(
            self.entry(principal, "workspace.create")
                .workspace(&id)
                .target(name),
        )
        .await;
        self.workspace(&id).await
    }

    /// The workspaces the caller has a role in (all of them for admins).
    pub async fn workspaces_list(
        &self,
        principal: &Principal,
    ) -> Result<Vec<(WorkspaceRecord, Option<Role>)>, ServiceError> {
        let visible = principal.visible_workspaces();
        Ok(self
            .store
            .list_workspaces()
            .await?
            .into_iter()
            .filter(|w| visible.as_ref().is_none_or(|v| v.contains(&w.id)))
            .map(|w| {
                let role = principal.role_in(&w.id);
                (w, role)
            })
            .collect())
    }

    pub async fn workspaces_set_quota(
        &self,
        principal: &Principal,
        workspace: &str,
        quotas: Quotas,
    ) -> Result<WorkspaceRecord, ServiceError> {
        self.authorize(principal, Action::ManageWorkspaces, None)
            .await?;
        let workspace = self.workspace(workspace).await?;
        self.store.set_quotas(&workspace.id, quotas).await?;
        self.audit(
            self.entry(principal, "workspace.set_quota")
                .workspace(&workspace.id)
                .target(&workspace.name)
                .detail(format!("{quotas:?}")),
        )
        .await;
        self.workspace(&workspace.id).await
    }

    /// Moves a host into a workspace.
    pub async fn workspaces_add_host(
        &self,
        principal: &Principal,
        workspace: &str,
        host: &str,
    ) -> Result<(), ServiceError> {
        self.authorize(principal, Action::ManageWorkspaces, None)
            .await?;
        let workspace = self.workspace(workspace).await?;
        let host = self.host_for(principal, Action::ListHosts, host).await?;
        if host.workspace_id == workspace.id {
            return Ok(());
        }
        within_quota(
            &workspace,
            "hosts",
            workspace.hosts,
            workspace.quotas.max_hosts,
        )?;
        self.store.move_host(&host.id, &workspace.id).await?;
        self.audit(
            self.entry(principal, "workspace.add_host")
                .host(&host.id, &workspace.id)
                .target(&host.name)
                .detail(format!("from workspace {}", host.workspace_id)),
        )
        .await;
        Ok(())
    }

    pub async fn workspaces_add_member(
        &self,
        principal: &Principal,
        workspace: &str,
        user: &str,
        role: Role,
    ) -> Result<(), ServiceError> {
        self.authorize(principal, Action::ManageWorkspaces, None)
            .await?;
        if role == Role::Admin {
            return Err(ServiceError::InvalidArgument(
                "admin is a global role: `zpanel users set-role NAME admin`; members are viewer, developer or operator".into(),
            ));
        }
        let workspace = self.workspace(workspace).await?;
        let user = self.user(user).await?;
        self.store.set_member(&workspace.id, &user.id, role).await?;
        self.audit(
            self.entry(principal, "workspace.add_member")
                .workspace(&workspace.id)
                .target(&user.name)
                .detail(format!("role {role}")),
        )
        .await;
        Ok(())
    }

    pub async fn workspaces_remove_member(
        &self,
        principal: &Principal,
        workspace: &str,
        user: &str,
    ) -> Result<(), ServiceError> {
        self.authorize(principal, Action::ManageWorkspaces, None)
            .await?;
        let workspace = self.workspace(workspace).await?;
        let user = self.user(user).await?;
        if !self.store.remove_member(&workspace.id, &user.id).await? {
            return Err(ServiceError::NotFound(format!(
                "{} is not a member of workspace {}",
                user.name, workspace.name
            )));
        }
        self.audit(
            self.entry(principal, "workspace.remove_member")
                .workspace(&workspace.id)
                .target(&user.name),
        )
        .await;
        Ok(())
    }

    /// Refuses a new host in a workspace that is full.
    pub async fn check_host_quota(&self, workspace_id: &str) -> Result<(), ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        within_quota(
            &workspace,
            "hosts",
            workspace.hosts,
            workspace.quotas.max_hosts,
        )
    }

    /// Refuses a new terminal in a workspace whose concurrent terminals are used up. The
    /// daemons hold the sessions, so they are counted there.
    pub async fn check_terminal_quota(&self, workspace_id: &str) -> Result<(), ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let Some(max) = workspace.quotas.max_terminals else {
            return Ok(());
        };
        let hosts = self.store.list_hosts().await?;
        let counts = hosts
            .iter()
            .filter(|h| h.workspace_id == workspace.id && self.router.is_online(&h.id))
            .map(|h| self.terminal_count(h));
        let used: u64 = futures_util::future::join_all(counts).await.iter().sum();
        within_quota(&workspace, "terminals open", used, Some(max))
    }

    // === API tokens ===

    pub async fn api_tokens_create(
        &self,
        principal: &Principal,
        request: ApiTokenRequest,
    ) -> Result<ApiTokenCreated, ServiceError> {
        // Whose token, and what that user may do.
        let owner = match request.user.as_deref() {
            Some(name) if name != principal.user_name => {
                self.authorize(principal, Action::ManageUsers, None).await?;
                self.store
                    .credentials(name)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(format!("no user named {name:?}")))?
                    .principal
            }
            _ => principal.clone(),
        };
        let workspace = match &request.workspace {
            Some(w) => Some(self.workspace(w).await?),
            None => match owner.visible_workspaces() {
                None => None,
                Some(mine) if mine.len() == 1 => Some(self.workspace(&mine[0]).await?),
                Some(_) => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "{} works in several workspaces (or none); name one with --workspace",
                        owner.user_name
                    )));
                }
            },
        };
        let ceiling = match &workspace {
            Some(w) => owner.role_in(&w.id),
            None => owner.global_role(),
        };
        let Some(ceiling) = ceiling else {
            return Err(self
                .deny(
                    principal,
                    format!(
                        "{} has no role in workspace {}",
                        owner.user_name,
                        workspace.as_ref().map_or("-", |w| &w.name)
                    ),
                )
                .await);
        };
        let role = request.role.unwrap_or(ceiling);
        if role > ceiling {
            return Err(self
                .deny(
                    principal,
                    format!(
                        "a token's role cannot be above its user's: {} is {ceiling} there, not {role}",
                        owner.user_name
                    ),
                )
                .await);
        }
        if owner.user_id == principal.user_id {
            self.authorize(
                principal,
                Action::OwnApiTokens,
                workspace.as_ref().map(|w| w.id.as_str()),
            )
            .await?;
        }
        let ttl = request.ttl.unwrap_or(DEFAULT_API_TOKEN_TTL);
        if ttl.is_zero() || ttl > MAX_API_TOKEN_TTL {
            return Err(ServiceError::InvalidArgument(
                "an API token's ttl must be between 1s and 366d".into(),
            ));
        }
        if let Some(w) = &workspace {
            let live = self.store.count_api_tokens(&w.id).await?;
            within_quota(w, "API tokens", live, w.quotas.max_api_tokens)?;
        }
        let name = request.name.unwrap_or_else(|| "api-token".into());
        if name.is_empty() || name.len() > 64 {
            return Err(ServiceError::InvalidArgument(
                "a token name must be 1-64 characters".into(),
            ));
        }
        let (id, token) = self
            .store
            .create_api_token(NewApiToken {
                user_id: &owner.user_id,
                name: &name,
                workspace_id: workspace.as_ref().map(|w| w.id.as_str()),
                role,
                expires_at: Some(crate::store::now() + ttl.as_secs() as i64),
            })
            .await?;
        let workspace_name = workspace.as_ref().map_or("", |w| w.name.as_str());
        self.audit(
            self.entry(principal, "api_token.create")
                .workspace(workspace.as_ref().map_or("", |w| w.id.as_str()))
                .target(&id)
                .detail(format!(
                    "for {} as {role} in {}, ttl {}s",
                    owner.user_name,
                    if workspace_name.is_empty() {
                        "every workspace"
                    } else {
                        workspace_name
                    },
                    ttl.as_secs()
                )),
        )
        .await;
        let record = self
            .store
            .list_api_tokens(Some(&owner.user_id))
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ServiceError::Internal("the new token vanished".into()))?;
        Ok(ApiTokenCreated { token, record })
    }

    /// Records a refusal and returns it.
    async fn deny(&self, principal: &Principal, message: String) -> ServiceError {
        self.audit(
            self.entry(principal, "access.denied")
                .detail(&message)
                .outcome("denied"),
        )
        .await;
        ServiceError::PermissionDenied(message)
    }

    /// The caller's tokens, or everyone's (`all`, admins).
    pub async fn api_tokens_list(
        &self,
        principal: &Principal,
        all: bool,
    ) -> Result<Vec<ApiTokenRecord>, ServiceError> {
        if all {
            self.authorize(principal, Action::ManageUsers, None).await?;
            return Ok(self.store.list_api_tokens(None).await?);
        }
        Ok(self.store.list_api_tokens(Some(&principal.user_id)).await?)
    }

    /// Revokes a token: one's own, or anyone's for admins.
    pub async fn api_tokens_revoke(
        &self,
        principal: &Principal,
        token_id: &str,
    ) -> Result<(), ServiceError> {
        let not_found = || ServiceError::NotFound(format!("no API token {token_id:?}"));
        let (owner, workspace) = self
            .store
            .api_token_owner(token_id)
            .await?
            .ok_or_else(not_found)?;
        if owner != principal.user_id && check_admin(principal).is_err() {
            self.audit(
                self.entry(principal, "access.denied")
                    .target(token_id)
                    .detail("revoke another user's API token")
                    .outcome("denied"),
            )
            .await;
            return Err(not_found());
        }
        if !self.store.revoke_api_token(token_id).await? {
            return Err(ServiceError::Conflict(format!(
                "API token {token_id} is already revoked"
            )));
        }
        self.audit(
            self.entry(principal, "api_token.revoke")
                .workspace(workspace.as_deref().unwrap_or(""))
                .target(token_id),
        )
        .await;
        Ok(())
    }

    // === TOTP ===

    /// Starts setting up a second factor: a new secret to put into an authenticator app.
    pub async fn totp_begin(&self, principal: &Principal) -> Result<TotpSetup, ServiceError> {
        let secret = Secret::generate_secret().to_encoded().to_string();
        let url = totp(&secret, &principal.user_name)?.get_url();
        self.store
            .set_totp_pending(&principal.user_id, &secret)
            .await?;
        Ok(TotpSetup { secret, url })
    }

    /// Turns the second factor on with a code from the app; other browser sessions end.
    pub async fn totp_confirm(
        &self,
        principal: &Principal,
        code: &str,
        keep_session: Option<&str>,
    ) -> Result<(), ServiceError> {
        let (pending, _) = self.store.totp_secrets(&principal.user_id).await?;
        let pending = pending
            .ok_or_else(|| ServiceError::InvalidArgument("start setting up TOTP first".into()))?;
        if !self
            .take_totp_code(&principal.user_id, &pending, code)
            .await?
        {
            return Err(ServiceError::InvalidArgument(
                "wrong TOTP code; check the app's clock and try the next code".into(),
            ));
        }
        self.store
            .set_totp(&principal.user_id, Some(&pending), keep_session)
            .await?;
        self.audit(self.entry(principal, "account.totp.enable"))
            .await;
        Ok(())
    }

    /// Turns the second factor off, with a current code.
    pub async fn totp_disable(
        &self,
        principal: &Principal,
        code: &str,
    ) -> Result<(), ServiceError> {
        let (_, active) = self.store.totp_secrets(&principal.user_id).await?;
        let active =
            active.ok_or_else(|| ServiceError::InvalidArgument("TOTP is not turned on".into()))?;
        if !self
            .take_totp_code(&principal.user_id, &active, code)
            .await?
        {
            return Err(ServiceError::InvalidArgument("wrong TOTP code".into()));
        }
        self.store.set_totp(&principal.user_id, None, None).await?;
        self.audit(self.entry(principal, "account.totp.disable"))
            .await;
        Ok(())
    }

    /// Whether `code` is good for `secret` now, taking its time step so it works once.
    pub(super) async fn take_totp_code(
        &self,
        user_id: &str,
        secret: &str,
        code: &str,
    ) -> Result<bool, ServiceError> {
        let totp = totp(secret, "-")?;
        let now = crate::store::now().max(0) as u64;
        let skew = TOTP_SKEW as u64 * TOTP_STEP;
        for time in [now.saturating_sub(skew), now, now + skew] {
            if totp.generate(time) == code.trim() {
                return Ok(self.store.take_totp_step(user_id, time / TOTP_STEP).await?);
            }
        }
        Ok(false)
    }

    // === browser sessions ===

    pub async fn sessions_list(
        &self,
        principal: &Principal,
    ) -> Result<Vec<WebSessionRecord>, ServiceError> {
        Ok(self.store.list_web_sessions(&principal.user_id).await?)
    }

    pub async fn sessions_revoke(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), ServiceError> {
        if !self
            .store
            .revoke_web_session(&principal.user_id, id)
            .await?
        {
            return Err(ServiceError::NotFound(format!("no session {id:?}")));
        }
        self.audit(self.entry(principal, "account.session.revoke").target(id))
            .await;
        Ok(())
    }
}

/// Whether the caller is an unscoped global admin.
fn check_admin(principal: &Principal) -> Result<Role, ServiceError> {
    super::audit::check(principal, Action::ManageUsers, None)
}

//! Who may do what: roles, actions, the role x action table and the caller ([`Principal`])
//! with its workspace memberships and token scope. No I/O here; the service checks every
//! request against this module through `AppState::authorize` and nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A role, lowest first: each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Developer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}; roles are viewer, developer, operator and admin")
            })
    }
}

/// Something a caller may be allowed to do. Workspace actions are checked against the
/// caller's role in the workspace of the host (or token, or entry) concerned; global actions
/// need a global admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// See hosts and their status.
    ListHosts,
    /// See hosts' metrics, their history and their processes; read alert rules, channels
    /// and the alert history.
    ViewMetrics,
    /// Create and delete alert rules and notification channels, and send test
    /// notifications.
    ManageAlerts,
    /// Delete a host (it must enrol again).
    DeleteHost,
    /// Revoke a host: its session ends and its certificate is refused; it stays listed.
    RevokeHost,
    /// Replace a host's daemon with the control plane's binary (`zpanel hosts upgrade`).
    UpgradeHost,
    CreateJoinToken,
    Exec,
    /// Open, attach to, list and end one's own terminal sessions.
    Terminal,
    /// Watch, list and end other users' terminal sessions.
    WatchAnyTerminal,
    /// List, stat, find, read and watch files.
    ReadFiles,
    /// Create, write, rename, copy, delete, chmod and chown files.
    WriteFiles,
    /// See a host's Docker engine, containers (their stats and processes), events, images,
    /// volumes and networks.
    ViewDocker,
    /// Read containers' logs and inspect them (environment variables are secrets); start,
    /// stop, restart, kill, pause and unpause containers; open a shell in one.
    UseDocker,
    /// Create, rename and remove containers; pull, import and remove images; prune; create
    /// and remove volumes and networks.
    ManageDocker,
    /// Create, list and revoke one's own API tokens.
    OwnApiTokens,
    /// Read the audit log of the workspace.
    ReadAudit,
    /// Add, remove and change users, and their tokens (global).
    ManageUsers,
    /// Create workspaces, set quotas, move hosts, add members (global).
    ManageWorkspaces,
    /// Check the whole audit chain and read entries outside workspaces (global).
    VerifyAudit,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::ListHosts,
        Action::ViewMetrics,
        Action::ManageAlerts,
        Action::DeleteHost,
        Action::RevokeHost,
        Action::UpgradeHost,
        Action::CreateJoinToken,
        Action::Exec,
        Action::Terminal,
        Action::WatchAnyTerminal,
        Action::ReadFiles,
        Action::WriteFiles,
        Action::ViewDocker,
        Action::UseDocker,
        Action::ManageDocker,
        Action::OwnApiTokens,
        Action::ReadAudit,
        Action::ManageUsers,
        Action::ManageWorkspaces,
        Action::VerifyAudit,
    ];

    /// What the action is, for "role R may not …" errors.
    pub fn verb(self) -> &'static str {
        match self {
            Action::ListHosts => "list hosts",
            Action::ViewMetrics => "see metrics and alerts",
            Action::ManageAlerts => "manage alert rules and notification channels",
            Action::DeleteHost => "delete hosts",
            Action::RevokeHost => "revoke hosts",
            Action::UpgradeHost => "upgrade hosts' daemons",
            Action::CreateJoinToken => "create join tokens",
            Action::Exec => "run commands on hosts",
            Action::Terminal => "open terminals on hosts",
            Action::WatchAnyTerminal => "see other users' terminals",
            Action::ReadFiles => "read files on hosts",
            Action::WriteFiles => "change files on hosts",
            Action::ViewDocker => "see Docker on hosts",
            Action::UseDocker => "use containers (logs, inspect, start, stop, shells)",
            Action::ManageDocker => "create and remove containers, images, volumes and networks",
            Action::OwnApiTokens => "manage API tokens",
            Action::ReadAudit => "read the audit log",
            Action::ManageUsers => "manage users",
            Action::ManageWorkspaces => "manage workspaces",
            Action::VerifyAudit => "verify the whole audit log",
        }
    }

    /// The lowest role that may do this (the table in ARCHITECTURE.md "Access").
    pub fn min_role(self) -> Role {
        match self {
            Action::ListHosts | Action::ViewMetrics | Action::OwnApiTokens | Action::ViewDocker => {
                Role::Viewer
            }
            Action::Exec
            | Action::Terminal
            | Action::ReadFiles
            | Action::WriteFiles
            | Action::UseDocker => Role::Developer,
            Action::DeleteHost
            | Action::CreateJoinToken
            | Action::ReadAudit
            | Action::ManageDocker
            | Action::ManageAlerts => Role::Operator,
            Action::WatchAnyTerminal
            | Action::RevokeHost
            | Action::UpgradeHost
            | Action::ManageUsers
            | Action::ManageWorkspaces
            | Action::VerifyAudit => Role::Admin,
        }
    }

    /// Whether the action concerns the whole control plane rather than one workspace.
    pub fn is_global(self) -> bool {
        matches!(
            self,
            Action::ManageUsers | Action::ManageWorkspaces | Action::VerifyAudit
        )
    }
}

/// The limits an API token puts on its user.
#[derive(Debug, Clone)]
pub struct TokenScope {
    pub id: String,
    /// The one workspace the token works in; `None` for a global admin's unscoped token.
    pub workspace: Option<String>,
    /// The highest role the token acts with.
    pub role: Role,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    /// A global admin: the admin role in every workspace, and the global actions.
    pub admin: bool,
    /// The user's role in each workspace (by workspace id) they are a member of.
    pub memberships: BTreeMap<String, Role>,
    /// Set when the caller came with an API token rather than a browser session.
    pub token: Option<TokenScope>,
}

impl Principal {
    /// The caller's role in a workspace, if any: the user's role there, capped by the token.
    pub fn role_in(&self, workspace: &str) -> Option<Role> {
        let user_role = if self.admin {
            Some(Role::Admin)
        } else {
            self.memberships.get(workspace).copied()
        };
        match &self.token {
            None => user_role,
            Some(token) if token.workspace.as_deref().is_some_and(|w| w != workspace) => None,
            Some(token) => user_role.map(|role| role.min(token.role)),
        }
    }

    /// The caller's global role: admin for a global admin not narrowed by a token.
    pub fn global_role(&self) -> Option<Role> {
        let unscoped = self
            .token
            .as_ref()
            .is_none_or(|t| t.workspace.is_none() && t.role == Role::Admin);
        (self.admin && unscoped).then_some(Role::Admin)
    }

    /// The workspaces the caller can see anything in; `None` means all of them.
    pub fn visible_workspaces(&self) -> Option<Vec<String>> {
        if self.admin {
            return self
                .token
                .as_ref()
                .and_then(|t| t.workspace.clone())
                .map(|workspace| vec![workspace]);
        }
        Some(
            self.memberships
                .keys()
                .filter(|w| self.role_in(w).is_some())
                .cloned()
                .collect(),
        )
    }

    /// The highest role the caller has anywhere, to show who they are.
    pub fn top_role(&self) -> Option<Role> {
        if self.admin {
            return self
                .token
                .as_ref()
                .map_or(Some(Role::Admin), |t| Some(t.role));
        }
        self.memberships
            .keys()
            .filter_map(|w| self.role_in(w))
            .max()
    }

    /// How the caller authenticated, for the audit log: `session` or `token:<id>`.
    pub fn credential(&self) -> String {
        match &self.token {
            Some(token) => format!("token:{}", token.id),
            None => "session".into(),
        }
    }
}

/// Whether `role` may do `action` (the whole role x action table).
pub fn allowed(role: Role, action: Action) -> bool {
    role >= action.min_role()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(workspace: &str, role: Role) -> Principal {
        Principal {
            user_id: "u".into(),
            user_name: "u".into(),
            admin: false,
            memberships: BTreeMap::from([(workspace.to_string(), role)]),
            token: None,
        }
    }

    #[test]
    fn role_table() {
        assert!(allowed(Role::Admin, Action::DeleteHost));
        assert!(allowed(Role::Admin, Action::RevokeHost));
        assert!(!allowed(Role::Operator, Action::RevokeHost));
        assert!(allowed(Role::Admin, Action::UpgradeHost));
        assert!(!allowed(Role::Operator, Action::UpgradeHost));
        assert!(allowed(Role::Developer, Action::Exec));
        assert!(!allowed(Role::Developer, Action::CreateJoinToken));
        assert!(!allowed(Role::Viewer, Action::Exec));
        assert!(allowed(Role::Viewer, Action::ListHosts));
        assert!(!allowed(Role::Operator, Action::WatchAnyTerminal));
        assert!(allowed(Role::Operator, Action::ReadAudit));
        assert!(!allowed(Role::Developer, Action::ReadAudit));
        assert!(allowed(Role::Viewer, Action::ViewDocker));
        assert!(!allowed(Role::Viewer, Action::UseDocker));
        assert!(allowed(Role::Developer, Action::UseDocker));
        assert!(!allowed(Role::Developer, Action::ManageDocker));
        assert!(allowed(Role::Operator, Action::ManageDocker));
        assert!(allowed(Role::Admin, Action::ManageDocker));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_cap_the_role_and_the_workspace() {
        let mut p = member("a", Role::Operator);
        assert_eq!(p.role_in("a"), Some(Role::Operator));
        assert_eq!(p.role_in("b"), None);
        p.token = Some(TokenScope {
            id: "t".into(),
            workspace: Some("a".into()),
            role: Role::Viewer,
        });
        assert_eq!(p.role_in("a"), Some(Role::Viewer));
        assert_eq!(p.global_role(), None);
        // A token never lifts a role above the user's present one.
        p.token.as_mut().unwrap().role = Role::Admin;
        assert_eq!(p.role_in("a"), Some(Role::Operator));
    }

    #[test]
    fn admins_see_everything_unless_their_token_narrows_it() {
        let mut p = member("a", Role::Viewer);
        p.admin = true;
        assert_eq!(p.role_in("b"), Some(Role::Admin));
        assert_eq!(p.global_role(), Some(Role::Admin));
        assert_eq!(p.visible_workspaces(), None);
        p.token = Some(TokenScope {
            id: "t".into(),
            workspace: Some("b".into()),
            role: Role::Developer,
        });
        assert_eq!(p.role_in("a"), None);
        assert_eq!(p.role_in("b"), Some(Role::Developer));
        assert_eq!(p.global_role(), None);
        assert_eq!(p.visible_workspaces(), Some(vec!["b".to_string()]));
    }
}

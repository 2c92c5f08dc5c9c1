//! Users, workspaces and their members, API tokens, browser sessions and TOTP secrets.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, new_token, now, token_hash};
use crate::access::{Principal, Role, TokenScope};

/// The id of the workspace every control plane starts with.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Limits on a workspace; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub max_hosts: Option<u64>,
    pub max_terminals: Option<u64>,
    pub max_api_tokens: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct WorkspaceRecord {
    pub id: String,
    pub name: String,
    pub quotas: Quotas,
    pub hosts: u64,
    pub members: u64,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub admin: bool,
    pub has_password: bool,
    pub totp: bool,
    pub created_at: i64,
    /// Workspace name and role, for each membership.
    pub memberships: Vec<(String, Role)>,
}

#[derive(Debug, Clone)]
pub struct ApiTokenRecord {
    pub id: String,
    pub user_name: String,
    pub name: String,
    /// Workspace name; empty for an unscoped (global admin) token.
    pub workspace: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

pub struct NewApiToken<'a> {
    pub user_id: &'a str,
    pub name: &'a str,
    pub workspace_id: Option<&'a str>,
    pub role: Role,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct WebSessionRecord {
    pub id: String,
    pub address: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A user's password hash, TOTP secret and last accepted TOTP step, for a login.
pub struct Credentials {
    pub principal: Principal,
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
}

fn role_column(row: &SqliteRow, index: usize) -> Role {
    // Roles are only ever written from `Role::as_str`; anything else reads as the lowest.
    row.get::<&str, _>(index).parse().unwrap_or(Role::Viewer)
}

fn quotas_from(row: &SqliteRow, first: usize) -> Quotas {
    let column = |i: usize| row.get::<Option<i64>, _>(i).map(|n| n.max(0) as u64);
    Quotas {
        max_hosts: column(first),
        max_terminals: column(first + 1),
        max_api_tokens: column(first + 2),
    }
}

impl Store {
    // === principals ===

    /// The user's roles by workspace id.
    async fn memberships(&self, user_id: &str) -> Result<BTreeMap<String, Role>, StoreError> {
        let rows =
            sqlx::query("SELECT workspace_id, role FROM workspace_members WHERE user_id = ?")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| (r.get(0), role_column(r, 1))).collect())
    }

    /// A principal from a row whose first three columns are user id, name and users.role.
    async fn principal(
        &self,
        row: &SqliteRow,
        token: Option<TokenScope>,
    ) -> Result<Principal, StoreError> {
        let user_id: String = row.get(0);
        Ok(Principal {
            memberships: self.memberships(&user_id).await?,
            user_id,
            user_name: row.get(1),
            admin: row.get::<&str, _>(2) == "admin",
            token,
        })
    }

    /// The user behind a live API token, with the token's scope.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role, t.id, t.workspace_id, t.role FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?)",
        )
        .bind(token_hash(token))
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let scope = TokenScope {
            id: row.get(3),
            workspace: row.get(4),
            role: role_column(&row, 5),
        };
        // Last use is kept to the minute, so busy scripts do not write on every call.
        sqlx::query("UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1 - 60)")
            .bind(now())
            .bind(&scope.id)
            .execute(&self.pool)
            .await?;
        Ok(Some(self.principal(&row, Some(scope)).await?))
    }

    /// What a login checks: the user, the password hash and the TOTP secret.
    pub async fn credentials(&self, name: &str) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, password_hash, totp_secret FROM users WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            principal: self.principal(&row, None).await?,
            password_hash: row.get(3),
            totp_secret: row.get(4),
        }))
    }

    /// Sets a user's password hash and ends the user's browser sessions; false when there
    /// is no such user.
    pub async fn set_password(&self, name: &str, hash: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = ? WHERE name = ?")
            .bind(hash)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM web_sessions WHERE user_id = (SELECT id FROM users WHERE name = ?)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(updated.rows_affected() == 1)
    }

    // === users ===

    /// Creates the admin user and returns a fresh admin API token, if no user exists yet.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Ok(None);
        }
        let user_id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO users (id, name, role, created_at) VALUES (?, 'admin', 'admin', ?)",
        )
        .bind(&user_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let token = new_token("zpa");
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, token_hash, name, role, created_at) VALUES (?, ?, ?, 'admin-token', 'admin', ?)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&user_id)
        .bind(token_hash(&token))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// Adds a user: a global admin, or a member of one workspace with a role.
    pub async fn create_user(
        &self,
        name: &str,
        admin: bool,
        password_hash: Option<&str>,
        membership: Option<(&str, Role)>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, name, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(name)
        .bind(if admin { "admin" } else { "member" })
        .bind(password_hash)
        .bind(now())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Exists(format!(
                    "a user named {name:?} already exists"
                )));
            }
            other => other?,
        };
        if let Some((workspace_id, role)) = membership {
            set_member(&mut tx, workspace_id, &id, role).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, password_hash IS NOT NULL, totp_secret IS NOT NULL, created_at FROM users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        let members = sqlx::query(
            "SELECT m.user_id, w.name, m.role FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id ORDER BY w.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_user: BTreeMap<String, Vec<(String, Role)>> = BTreeMap::new();
        for m in &members {
            by_user
                .entry(m.get(0))
                .or_default()
                .push((m.get(1), role_column(m, 2)));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                UserRecord {
                    memberships: by_user.remove(&id).unwrap_or_default(),
                    id,
                    name: r.get(1),
                    admin: r.get::<&str, _>(2) == "admin",
                    has_password: r.get(3),
                    totp: r.get(4),
                    created_at: r.get(5),
                }
            })
            .collect())
    }

    /// A user's id and whether they are a global admin.
    pub async fn find_user(&self, name: &str) -> Result<Option<(String, bool)>, StoreError> {
        let row = sqlx::query("SELECT id, role FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get::<&str, _>(1) == "admin")))
    }

    /// Deletes a user with their sessions, tokens and memberships.
    pub async fn delete_user(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_admins(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Makes a user a global admin, or takes that away.
    pub async fn set_admin(&self, user_id: &str, admin: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET role = ? WHERE id = ?")
            .bind(if admin { "admin" } else { "member" })
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds a member to a workspace or changes their role there.
    pub async fn set_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        set_member(&mut tx, workspace_id, user_id, role).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a member from a workspace; false when they were not one.
    pub async fn remove_member(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM workspace_members WHERE workspace_id = ? AND user_id = ?")
                .bind(workspace_id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    // === TOTP ===

    /// Keeps a new TOTP secret until the user confirms it with a code.
    pub async fn set_totp_pending(&self, user_id: &str, secret: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET totp_pending = ? WHERE id = ?")
            .bind(secret)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user's pending and active TOTP secrets.
    pub async fn totp_secrets(
        &self,
        user_id: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let row = sqlx::query("SELECT totp_pending, totp_secret FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))).unwrap_or((None, None)))
    }

    /// Makes the pending secret the active one (or turns TOTP off with `None`) and ends the
    /// user's other browser sessions.
    pub async fn set_totp(
        &self,
        user_id: &str,
        secret: Option<&str>,
        keep_session: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET totp_secret = ?, totp_pending = NULL WHERE id = ?")
            .bind(secret)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = ? AND token_hash <> ?")
            .bind(user_id)
            .bind(keep_session.map(token_hash).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a TOTP time step for a user, once: false when it (or a later one) was used.
    pub async fn take_totp_step(&self, user_id: &str, step: u64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?")
                .bind(step as i64)
                .bind(user_id)
                .bind(step as i64)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    // === workspaces ===

    pub async fn create_workspace(&self, name: &str, quotas: Quotas) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = sqlx::query(
            "INSERT INTO workspaces (id, name, max_hosts, max_terminals, max_api_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(name)
        .bind(quotas.max_hosts.map(|n| n as i64))
        .bind(quotas.max_terminals.map(|n| n as i64))
        .bind(quotas.max_api_tokens.map(|n| n as i64))
        .bind(now())
        .execute(&self.pool)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Exists(
                format!("a workspace named {name:?} already exists"),
            )),
            other => other.map(|_| id).map_err(Into::into),
        }
    }

    pub async fn set_quotas(&self, workspace_id: &str, quotas: Quotas) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workspaces SET max_hosts = ?, max_terminals = ?, max_api_tokens = ? WHERE id = ?",
        )
        .bind(quotas.max_hosts.map(|n| n as i64))
        .bind(quotas.max_terminals.map(|n| n as i64))
        .bind(quotas.max_api_tokens.map(|n| n as i64))
        .bind(workspace_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    const WORKSPACE_COLUMNS: &str =
        "SELECT w.id, w.name, w.max_hosts, w.max_terminals, w.max_api_tokens, w.created_at,
            (SELECT COUNT(*) FROM hosts h WHERE h.workspace_id = w.id),
            (SELECT COUNT(*) FROM workspace_members m WHERE m.workspace_id = w.id)
         FROM workspaces w";

    pub async fn list_workspaces(&self) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let rows = sqlx::query(&format!("{} ORDER BY w.name", Self::WORKSPACE_COLUMNS))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(workspace_from_row).collect())
    }

    /// A workspace by id, or by name when no id matches.
    pub async fn find_workspace(
        &self,
        id_or_name: &str,
    ) -> Result<Option<WorkspaceRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "{} WHERE w.id = ?1 OR w.name = ?1 ORDER BY w.id = ?1 DESC LIMIT 1",
            Self::WORKSPACE_COLUMNS
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(workspace_from_row))
    }

    // === API tokens ===

    /// Stores a new API token and returns its id and the token (shown once).
    pub async fn create_api_token(
        &self,
        token: NewApiToken<'_>,
    ) -> Result<(String, String), StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let secret = new_token("zpa");
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, token_hash, name, role, created_at, expires_at, workspace_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(token.user_id)
        .bind(token_hash(&secret))
        .bind(token.name)
        .bind(token.role.as_str())
        .bind(now())
        .bind(token.expires_at)
        .bind(token.workspace_id)
        .execute(&self.pool)
        .await?;
        Ok((id, secret))
    }

    /// API tokens, newest first: one user's, or everyone's with `None`.
    pub async fn list_api_tokens(
        &self,
        user_id: Option<&str>,
    ) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, u.name, t.name, COALESCE(w.name, ''), t.role, t.created_at, t.expires_at, t.revoked_at, t.last_used_at
             FROM api_tokens t JOIN users u ON u.id = t.user_id LEFT JOIN workspaces w ON w.id = t.workspace_id
             WHERE ?1 IS NULL OR t.user_id = ?1 ORDER BY t.created_at DESC, t.rowid DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ApiTokenRecord {
                id: r.get(0),
                user_name: r.get(1),
                name: r.get(2),
                workspace: r.get(3),
                role: role_column(r, 4),
                created_at: r.get(5),
                expires_at: r.get(6),
                revoked_at: r.get(7),
                last_used_at: r.get(8),
            })
            .collect())
    }

    /// The owner and workspace of an API token.
    pub async fn api_token_owner(
        &self,
        token_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let row = sqlx::query("SELECT user_id, workspace_id FROM api_tokens WHERE id = ?")
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Revokes a token; false when it was already revoked.
    pub async fn revoke_api_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now())
                .bind(token_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Live (not revoked, not expired) tokens working in a workspace.
    pub async fn count_api_tokens(&self, workspace_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_tokens WHERE workspace_id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(workspace_id)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    // === browser sessions ===

    pub async fn create_web_session(
        &self,
        token: &str,
        user_id: &str,
        csrf: &str,
        expires_at: i64,
        address: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO web_sessions (id, token_hash, user_id, csrf, created_at, expires_at, address) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(token_hash(token))
        .bind(user_id)
        .bind(csrf)
        .bind(now())
        .bind(expires_at)
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user behind a live browser session, the session's CSRF token and its id.
    pub async fn web_session(
        &self,
        token: &str,
    ) -> Result<Option<(Principal, String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role, s.csrf, s.id FROM web_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token_hash(token))
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((
                self.principal(&row, None).await?,
                row.get(3),
                row.get(4),
            ))),
            None => Ok(None),
        }
    }

    pub async fn delete_web_session(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = ? OR expires_at <= ?")
            .bind(token_hash(token))
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A user's live browser sessions, newest first.
    pub async fn list_web_sessions(
        &self,
        user_id: &str,
    ) -> Result<Vec<WebSessionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, address, created_at, expires_at FROM web_sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at DESC",
        )
        .bind(user_id)
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| WebSessionRecord {
                id: r.get(0),
                address: r.get(1),
                created_at: r.get(2),
                expires_at: r.get(3),
            })
            .collect())
    }

    /// Ends one of a user's browser sessions by id; false when there was none.
    pub async fn revoke_web_session(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

async fn set_member(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    workspace_id: &str,
    user_id: &str,
    role: Role,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workspace_members (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(workspace_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn workspace_from_row(r: &SqliteRow) -> WorkspaceRecord {
    WorkspaceRecord {
        id: r.get(0),
        name: r.get(1),
        quotas: quotas_from(r, 2),
        created_at: r.get(5),
        hosts: r.get::<i64, _>(6) as u64,
        members: r.get::<i64, _>(7) as u64,
    }
}

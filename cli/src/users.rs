//! `zpanel users`: adding, listing and removing users, their roles, and turning off a lost
//! second factor (global admins only; the server checks).

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::Context;
use serde::Serialize;
use zpanel_proto::{
    AddUserRequest, ListUsersRequest, RemoveUserRequest, ResetUserTotpRequest, SetUserRoleRequest,
    User,
};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display::{self, ago};

/// A user as `--json` prints it (times in unix seconds).
#[derive(Debug, Serialize)]
struct UserJson {
    id: String,
    name: String,
    /// A global admin: every workspace, users, workspaces, the whole audit log.
    admin: bool,
    /// Workspace name to role, for each workspace the user is a member of.
    roles: BTreeMap<String, String>,
    has_password: bool,
    totp: bool,
    created_at: i64,
}

impl From<&User> for UserJson {
    fn from(user: &User) -> Self {
        UserJson {
            id: user.id.clone(),
            name: user.name.clone(),
            admin: user.admin,
            roles: user
                .memberships
                .iter()
                .map(|m| (m.workspace.clone(), m.role.clone()))
                .collect(),
            has_password: user.has_password,
            totp: user.totp,
            created_at: user.created_at,
        }
    }
}

/// "admin" for a global admin, else "default:developer, ops:viewer" ("-" for none).
fn roles(user: &User) -> String {
    if user.admin {
        return "admin".into();
    }
    let roles: Vec<String> = user
        .memberships
        .iter()
        .map(|m| format!("{}:{}", m.workspace, m.role))
        .collect();
    display::cell(&roles.join(", "))
}

/// What `zpanel users add` asks for.
pub struct NewUser {
    pub name: String,
    pub role: String,
    /// Workspace for a non-admin role; `None` for the default workspace.
    pub workspace: Option<String>,
    /// Read the password from the first line of stdin; otherwise the user has none.
    pub password_stdin: bool,
    pub json: bool,
}

/// The first line of stdin without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    Ok(password.to_string())
}

pub async fn add(settings: &Settings, new: NewUser) -> anyhow::Result<()> {
    let password = if new.password_stdin {
        password_from_stdin()?
    } else {
        String::new()
    };
    let mut client = client::connect(settings).await?;
    let user = client
        .add_user(AddUserRequest {
            name: new.name,
            role: new.role,
            workspace: new.workspace.unwrap_or_default(),
            password,
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    if new.json {
        return display::print_json(&UserJson::from(&user), "the user");
    }
    let sign_in = if user.has_password {
        "with a password or API tokens"
    } else {
        "with API tokens only (`zpanel api-tokens create --user`)"
    };
    println!(
        "added user {} ({}); they sign in {sign_in}",
        user.name,
        roles(&user)
    );
    Ok(())
}

/// Prints every user, by name: a table, or JSON.
pub async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let users = client
        .list_users(ListUsersRequest {})
        .await
        .map_err(call_failed)?
        .into_inner()
        .users;
    if json {
        let rows: Vec<UserJson> = users.iter().map(UserJson::from).collect();
        return display::print_json(&rows, "users");
    }
    print!("{}", table(&users, zpanel_shared::unix_now()));
    Ok(())
}

fn table(users: &[User], now: i64) -> String {
    let on_off = |on: bool| if on { "on" } else { "off" };
    display::table(
        ["NAME", "ADMIN/ROLES", "PASSWORD", "TOTP", "CREATED"],
        users.iter().map(|u| {
            [
                u.name.clone(),
                roles(u),
                if u.has_password { "yes" } else { "no" }.into(),
                on_off(u.totp).into(),
                ago(u.created_at, now),
            ]
        }),
    )
}

/// Deletes a user with their browser sessions, API tokens and memberships.
pub async fn remove(settings: &Settings, name: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .remove_user(RemoveUserRequest { name: name.clone() })
        .await
        .map_err(call_failed)?;
    println!("removed user {name}");
    Ok(())
}

/// `admin` makes a global admin; another role is set in `workspace` (default: the default
/// workspace).
pub async fn set_role(
    settings: &Settings,
    name: String,
    role: String,
    workspace: Option<String>,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let user = client
        .set_user_role(SetUserRoleRequest {
            name,
            role,
            workspace: workspace.unwrap_or_default(),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    println!("{} is now {}", user.name, roles(&user));
    Ok(())
}

/// Turns off a user's TOTP second factor (a lost phone).
pub async fn reset_totp(settings: &Settings, name: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .reset_user_totp(ResetUserTotpRequest { name: name.clone() })
        .await
        .map_err(call_failed)?;
    println!("turned off TOTP for {name}; they sign in with their password alone");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpanel_proto::WorkspaceRole;

    #[test]
    fn the_table_shows_admins_roles_and_credentials() {
        let now = 10_000;
        let member = |workspace: &str, role: &str| WorkspaceRole {
            workspace: workspace.into(),
            role: role.into(),
        };
        let users = [
            User {
                name: "admin".into(),
                admin: true,
                has_password: true,
                totp: true,
                created_at: now - 7200,
                memberships: vec![member("default", "viewer")],
                ..User::default()
            },
            User {
                name: "ci".into(),
                created_at: now - 60,
                memberships: vec![member("default", "developer"), member("ops", "viewer")],
                ..User::default()
            },
            User {
                name: "nobody".into(),
                created_at: now,
                ..User::default()
            },
        ];
        assert_eq!(
            table(&users, now),
            "NAME    ADMIN/ROLES                    PASSWORD  TOTP  CREATED\n\
             admin   admin                          yes       on    2h ago\n\
             ci      default:developer, ops:viewer  no        off   1m ago\n\
             nobody  -                              no        off   just now\n"
        );
    }
}

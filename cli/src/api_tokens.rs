//! `zpanel api-tokens`: creating API tokens (one's own, or another user's for admins),
//! scoped to a workspace and capped at a role, listing and revoking them.

use std::time::Duration;

use serde::Serialize;
use zpanel_proto::{ApiToken, CreateApiTokenRequest, ListApiTokensRequest, RevokeApiTokenRequest};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display::{self, ago, rfc3339, until};

/// What `zpanel api-tokens create` asks for; `None` leaves the choice to the server.
pub struct NewApiToken {
    /// Whose token (default: the caller's).
    pub user: Option<String>,
    pub workspace: Option<String>,
    /// The role it acts with (default: the user's role in the workspace).
    pub role: Option<String>,
    /// How long it lives (default: the server's, 90 days).
    pub ttl: Option<Duration>,
    pub name: Option<String>,
    pub json: bool,
}

/// `--ttl`: a duration of at least a second (0 would ask for the server's default).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(ttl) if ttl.as_secs() == 0 => Err("an API token lives at least 1s".into()),
        Ok(ttl) => Ok(ttl),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a token still works.
fn state(token: &ApiToken, now: i64) -> &'static str {
    if token.revoked_at > 0 {
        "revoked"
    } else if token.expires_at > 0 && token.expires_at <= now {
        "expired"
    } else {
        "live"
    }
}

/// A token as `api-tokens list --json` prints it: unix seconds, `null` for "none" (and for
/// the workspace of a token that works in every workspace).
#[derive(Debug, Serialize)]
struct ApiTokenJson {
    id: String,
    user: String,
    name: String,
    workspace: Option<String>,
    role: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    state: &'static str,
}

impl ApiTokenJson {
    fn new(token: &ApiToken, now: i64) -> Self {
        let set = |unix: i64| (unix > 0).then_some(unix);
        ApiTokenJson {
            id: token.id.clone(),
            user: token.user.clone(),
            name: token.name.clone(),
            workspace: Some(token.workspace.clone()).filter(|w| !w.is_empty()),
            role: token.role.clone(),
            created_at: token.created_at,
            expires_at: set(token.expires_at),
            revoked_at: set(token.revoked_at),
            last_used_at: set(token.last_used_at),
            state: state(token, now),
        }
    }
}

/// What `api-tokens create --json` prints: the secret and where it works.
#[derive(Debug, Serialize)]
struct CreatedJson<'a> {
    token: &'a str,
    id: &'a str,
    user: &'a str,
    workspace: Option<&'a str>,
    role: &'a str,
    expires_at: i64,
}

/// Creates a token: the secret alone on stdout (or JSON), what it is on stderr.
pub async fn create(settings: &Settings, new: NewApiToken) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let created = client
        .create_api_token(CreateApiTokenRequest {
            user: new.user.unwrap_or_default(),
            workspace: new.workspace.unwrap_or_default(),
            role: new.role.unwrap_or_default(),
            ttl_seconds: new.ttl.map_or(0, |ttl| ttl.as_secs()),
            name: new.name.unwrap_or_default(),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let info = created.info.unwrap_or_default();
    if new.json {
        let out = CreatedJson {
            token: &created.token,
            id: &info.id,
            user: &info.user,
            workspace: Some(info.workspace.as_str()).filter(|w| !w.is_empty()),
            role: &info.role,
            expires_at: info.expires_at,
        };
        return display::print_json(&out, "the token");
    }
    println!("{}", created.token);
    eprintln!(
        "API token {} for {} {} as {}, expires {}; it is shown only once",
        info.id,
        info.user,
        where_it_works(&info),
        info.role,
        rfc3339(info.expires_at)
    );
    Ok(())
}

/// "in workspace ops", or "in every workspace".
fn where_it_works(token: &ApiToken) -> String {
    if token.workspace.is_empty() {
        "in every workspace".into()
    } else {
        format!("in workspace {}", token.workspace)
    }
}

/// Prints the caller's tokens (everyone's with `all`), oldest first: a table, or JSON.
pub async fn list(settings: &Settings, all: bool, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let mut tokens = client
        .list_api_tokens(ListApiTokensRequest { all })
        .await
        .map_err(call_failed)?
        .into_inner()
        .tokens;
    // The server lists newest first (in creation order, even within a second).
    tokens.reverse();
    let now = zpanel_shared::unix_now();
    if json {
        let rows: Vec<ApiTokenJson> = tokens.iter().map(|t| ApiTokenJson::new(t, now)).collect();
        return display::print_json(&rows, "API tokens");
    }
    if tokens.is_empty() {
        println!("no API tokens");
        return Ok(());
    }
    print!("{}", table(&tokens, now));
    Ok(())
}

fn table(tokens: &[ApiToken], now: i64) -> String {
    let header = [
        "ID",
        "USER",
        "NAME",
        "WORKSPACE",
        "ROLE",
        "EXPIRES",
        "LAST USED",
        "STATE",
    ];
    display::table(
        header,
        tokens.iter().map(|t| {
            [
                t.id.clone(),
                t.user.clone(),
                display::cell(&t.name),
                if t.workspace.is_empty() {
                    "*".into()
                } else {
                    t.workspace.clone()
                },
                t.role.clone(),
                until(t.expires_at, now),
                ago(t.last_used_at, now),
                state(t, now).into(),
            ]
        }),
    )
}

/// Revokes a token (one's own, or anyone's for admins); it fails from now on.
pub async fn revoke(settings: &Settings, id: String) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    client
        .revoke_api_token(RevokeApiTokenRequest { id: id.clone() })
        .await
        .map_err(call_failed)?;
    println!("revoked API token {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_scope_expiry_use_and_state() {
        let now = 1_000_000;
        let token = |id: &str, workspace: &str, expires_at: i64, revoked_at: i64| ApiToken {
            id: id.into(),
            user: "ci".into(),
            name: "deploy".into(),
            workspace: workspace.into(),
            role: "viewer".into(),
            created_at: now - 86400,
            expires_at,
            revoked_at,
            last_used_at: if id == "t1" { now - 120 } else { 0 },
        };
        let tokens = [
            token("t1", "ops", now + 30 * 86400, 0),
            token("t2", "", now - 3600, 0),
            token("t3", "ops", now + 60, now - 10),
        ];
        assert_eq!(
            table(&tokens, now),
            "ID  USER  NAME    WORKSPACE  ROLE    EXPIRES  LAST USED  STATE\n\
             t1  ci    deploy  ops        viewer  in 30d   2m ago     live\n\
             t2  ci    deploy  *          viewer  1h ago   never      expired\n\
             t3  ci    deploy  ops        viewer  in 1m    never      revoked\n"
        );
        assert_eq!(ApiTokenJson::new(&tokens[1], now).workspace, None);
    }

    #[test]
    fn a_ttl_is_at_least_a_second() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("500ms").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}

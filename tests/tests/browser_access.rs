//! Access control through the web API. In a browser: Chromium (driven by
//! `tests/browser/access.mjs`) turns TOTP on from the account page, signs in again with a
//! code, reads, exports and verifies the audit log and makes an API token that this side
//! uses with `Authorization: Bearer` (screenshots land in `target/debug/browser/`). Without
//! one: the admin REST endpoints make a workspace, a developer and a token for them, and
//! the token sees only that workspace's hosts and may not read the audit log.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use zpanel_tests::browser::{BrowserScript, artifacts_dir};
use zpanel_tests::web::{HttpResponse, request, request_bytes};
use zpanel_tests::{ControlPlane, Daemon};

/// Longest silence from the script between two commands (a step waits up to 30 s).
const SCRIPT_SILENCE: Duration = Duration::from_secs(120);

/// A request with `Authorization: Bearer TOKEN` and nothing else a browser would send.
async fn bearer(
    cp: &ControlPlane,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<HttpResponse> {
    let authorization = format!("Bearer {token}");
    request(
        &cp.url,
        &cp.pin,
        method,
        path,
        &[("Authorization", &authorization)],
        body.as_ref(),
    )
    .await
}

/// [`bearer`], failing the test when the request cannot be made.
async fn call(
    cp: &ControlPlane,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> HttpResponse {
    bearer(cp, token, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// The names in a `GET /api/v1/hosts` answer, sorted.
fn host_names(hosts: &Value) -> Vec<String> {
    let mut names: Vec<String> = hosts
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(|host| host["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_browser_turns_on_totp_reads_the_audit_log_and_makes_a_token() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_online_host(&cli, "access-host").await;
    std::fs::create_dir_all(artifacts_dir()).expect("artifacts dir");
    let screenshot = artifacts_dir().join("access.png");

    let url = cp.url.clone();
    let password = cp.admin_password();
    let mut script = BrowserScript::spawn(
        "access.mjs",
        &[
            ("ZPANEL_URL", &url),
            ("ZPANEL_USER", "admin"),
            ("ZPANEL_PASSWORD", &password),
            ("ZPANEL_HOST", "access-host"),
            (
                "ZPANEL_SCREENSHOT",
                screenshot.to_str().expect("utf-8 path"),
            ),
        ],
    )
    .expect("the browser script starts");

    let cp_ref = &cp;
    let failure = script
        .serve(SCRIPT_SILENCE, |command| async move {
            answer(cp_ref, &command).await
        })
        .await;
    script
        .assert_passed("the browser access test", failure, &cp)
        .await;
}

/// The answer to one of the script's commands: `hosts TOKEN` → `{"status", "names"}` of
/// `GET /api/v1/hosts` with that API token.
async fn answer(cp: &ControlPlane, command: &str) -> anyhow::Result<String> {
    let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "hosts" => {
            let response = bearer(cp, rest.trim(), "GET", "/api/v1/hosts", None)
                .await
                .context("GET /api/v1/hosts with the token")?;
            let names = host_names(&response.json());
            Ok(json!({"status": response.status, "names": names}).to_string())
        }
        _ => anyhow::bail!("unknown command from the script: {command}"),
    }
}

#[tokio::test]
async fn a_developer_token_made_over_rest_sees_only_its_workspace() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    // Two enrolled hosts (they need not run): one moves into the new workspace.
    let mut daemons = Vec::new();
    for name in ["team-host", "other-host"] {
        let token = cli.join_token(1).await;
        daemons.push(Daemon::join(&cp, &token, name).await.expect("join"));
    }
    let admin = cp.admin_token.as_str();

    let created = call(
        &cp,
        admin,
        "POST",
        "/api/v1/workspaces",
        Some(json!({"name": "team-a", "max_hosts": 5, "max_api_tokens": 0})),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    assert_eq!(created.json()["name"], "team-a");
    assert_eq!(created.json()["max_hosts"], 5);
    assert_eq!(
        created.json()["max_api_tokens"],
        Value::Null,
        "0 is unlimited"
    );

    let user = call(
        &cp,
        admin,
        "POST",
        "/api/v1/users",
        Some(
            json!({"name": "dev", "role": "developer", "workspace": "team-a",
                    "password": "a long enough password"}),
        ),
    )
    .await;
    assert_eq!(user.status, 200, "{user:?}");
    assert_eq!(
        user.json()["memberships"],
        json!([{"workspace": "team-a", "role": "developer"}])
    );

    let moved = call(
        &cp,
        admin,
        "POST",
        "/api/v1/workspaces/team-a/hosts",
        Some(json!({"host": "team-host"})),
    )
    .await;
    assert_eq!(moved.status, 204, "{moved:?}");

    let made = call(
        &cp,
        admin,
        "POST",
        "/api/v1/account/api-tokens",
        Some(json!({"user": "dev", "workspace": "team-a", "role": "developer"})),
    )
    .await;
    assert_eq!(made.status, 200, "{made:?}");
    let info = &made.json()["info"];
    assert_eq!(info["user"], "dev");
    assert_eq!(info["workspace"], "team-a");
    assert_eq!(info["role"], "developer");
    let developer = made.json()["token"]
        .as_str()
        .expect("the token in the answer")
        .to_string();
    let developer = developer.as_str();

    // The developer's token sees the workspace's host only; the admin sees both.
    let theirs = call(&cp, developer, "GET", "/api/v1/hosts", None).await;
    assert_eq!(theirs.status, 200, "{theirs:?}");
    assert_eq!(host_names(&theirs.json()), ["team-host"]);
    assert_eq!(theirs.json()[0]["workspace"], "team-a");
    let all = call(&cp, admin, "GET", "/api/v1/hosts", None).await;
    assert_eq!(host_names(&all.json()), ["other-host", "team-host"]);

    // The audit log and the admin routes are not for a developer.
    let audit = call(&cp, developer, "GET", "/api/v1/audit", None).await;
    assert_eq!(audit.status, 403, "{audit:?}");
    assert!(
        audit.json()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let users = call(&cp, developer, "GET", "/api/v1/users", None).await;
    assert_eq!(users.status, 403, "{users:?}");

    // The admin reads what happened, newest first, and the chain holds.
    let entries = call(
        &cp,
        admin,
        "GET",
        "/api/v1/audit?action=api_token&limit=10",
        None,
    )
    .await;
    assert_eq!(entries.status, 200, "{entries:?}");
    let entries = entries.json();
    assert_eq!(entries[0]["action"], "api_token.create", "{entries}");
    assert!(entries[0]["detail"].as_str().unwrap_or("").contains("dev"));
    let verified = call(&cp, admin, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(verified.json()["ok"], true, "{verified:?}");

    // The export: JSON lines, oldest first, as a download.
    let export = call(&cp, admin, "GET", "/api/v1/audit/export", None).await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    assert!(
        export
            .header("content-disposition")
            .is_some_and(|d| d.contains("zpanel-audit.jsonl"))
    );
    let ids: Vec<i64> = export
        .body
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line")["id"].as_i64())
        .map(|id| id.expect("an id"))
        .collect();
    assert!(
        ids.len() >= 4 && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );

    // A body that is not JSON is refused with one line.
    let authorization = format!("Bearer {admin}");
    let bad = request_bytes(
        &cp.url,
        &cp.pin,
        "POST",
        "/api/v1/users",
        &[
            ("Authorization", &authorization),
            ("Content-Type", "application/json"),
        ],
        b"{\"name\": ",
    )
    .await
    .expect("POST /api/v1/users");
    assert_eq!(bad.status, 400, "{bad:?}");
    let message = bad.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        message.starts_with("bad user: ") && !message.contains('\n'),
        "{message}"
    );
}

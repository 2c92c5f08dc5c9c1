//! End to end: the access commands of the `zpanel` CLI (`users`, `workspaces`, `api-tokens`,
//! `audit`) against a real control plane, and what a workspace-scoped API token may then do.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use zpanel_tests::web::Browser;
use zpanel_tests::{ControlPlane, Daemon, assert_eventually, ok, stderr, stdout};

const WAIT: Duration = Duration::from_secs(30);

/// Stdout of a run that must succeed, as JSON.
fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out, "a run answering JSON")).expect("json on stdout")
}

/// Checks that a run failed with one line on stderr containing `needle`.
fn refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "should have failed: {}", stdout(out));
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// The element of a JSON array whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_added_listed_given_roles_and_removed() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin_cli().await;

    // with a password from stdin (its line ending is not part of it)
    let alice = json(
        &admin
            .run_with_stdin(
                &[
                    "users",
                    "add",
                    "alice",
                    "--role",
                    "developer",
                    "--password-stdin",
                    "--json",
                ],
                b"correct horse battery\n",
            )
            .await,
    );
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["admin"], false);
    assert_eq!(alice["has_password"], true);
    assert_eq!(alice["roles"], serde_json::json!({"default": "developer"}));
    Browser::login(&cp, "alice", "correct horse battery")
        .await
        .expect("alice signs in with the password read from stdin");

    // without: API tokens only
    let added = ok(
        &admin
            .run(&["users", "add", "bot", "--role", "viewer"])
            .await,
        "users add",
    );
    assert!(added.contains("API tokens only"), "{added}");
    refused(
        &admin
            .run_with_stdin(
                &[
                    "users",
                    "add",
                    "eve",
                    "--role",
                    "viewer",
                    "--password-stdin",
                ],
                b"",
            )
            .await,
        "no password on stdin",
    );
    refused(
        &admin
            .run(&["users", "add", "mallory", "--role", "root"])
            .await,
        "unknown role \"root\"",
    );
    refused(
        &admin
            .run(&["users", "add", "bot", "--role", "viewer"])
            .await,
        "a user named \"bot\" already exists",
    );

    let users = json(&admin.run(&["users", "list", "--json"]).await);
    assert_eq!(users.as_array().unwrap().len(), 3, "{users}");
    assert_eq!(named(&users, "admin")["admin"], true);
    let bot = named(&users, "bot");
    assert_eq!(bot["has_password"], false);
    assert_eq!(bot["totp"], false);
    assert_eq!(bot["roles"], serde_json::json!({"default": "viewer"}));
    assert!(bot["created_at"].as_i64().unwrap() > 0);
    let table = ok(&admin.run(&["users", "list"]).await, "users list");
    let header = table.lines().next().unwrap();
    for column in ["NAME", "ADMIN/ROLES", "PASSWORD", "TOTP", "CREATED"] {
        assert!(header.contains(column), "{table}");
    }
    let bot_line = table.lines().find(|l| l.starts_with("bot ")).unwrap();
    assert!(
        bot_line.contains("default:viewer") && bot_line.contains(" no "),
        "{table}"
    );

    // the last admin stays
    refused(
        &admin.run(&["users", "remove", "admin"]).await,
        "last admin",
    );
    refused(
        &admin.run(&["users", "set-role", "admin", "viewer"]).await,
        "last admin",
    );

    let set = ok(
        &admin.run(&["users", "set-role", "bot", "operator"]).await,
        "users set-role",
    );
    assert_eq!(set, "bot is now default:operator\n");
    let set = ok(
        &admin.run(&["users", "set-role", "alice", "admin"]).await,
        "users set-role",
    );
    assert_eq!(set, "alice is now admin\n");
    // with another admin, an admin can step down
    ok(
        &admin
            .run(&[
                "users",
                "set-role",
                "alice",
                "viewer",
                "--workspace",
                "default",
            ])
            .await,
        "users set-role",
    );
    let users = json(&admin.run(&["users", "list", "--json"]).await);
    assert_eq!(named(&users, "alice")["admin"], false);
    assert_eq!(
        named(&users, "alice")["roles"],
        serde_json::json!({"default": "viewer"})
    );
    assert_eq!(
        named(&users, "bot")["roles"],
        serde_json::json!({"default": "operator"})
    );

    ok(
        &admin.run(&["users", "reset-totp", "alice"]).await,
        "users reset-totp",
    );
    assert_eq!(
        ok(
            &admin.run(&["users", "remove", "bot"]).await,
            "users remove"
        ),
        "removed user bot\n"
    );
    let users = json(&admin.run(&["users", "list", "--json"]).await);
    assert!(
        users.as_array().unwrap().iter().all(|u| u["name"] != "bot"),
        "{users}"
    );
    refused(
        &admin.run(&["users", "remove", "bot"]).await,
        "no user named \"bot\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_token_sees_and_does_only_what_its_role_allows() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin_cli().await;

    let ops = json(
        &admin
            .run(&[
                "workspaces",
                "create",
                "ops",
                "--max-hosts",
                "2",
                "--max-api-tokens",
                "1",
                "--json",
            ])
            .await,
    );
    assert_eq!(ops["name"], "ops");
    assert_eq!(ops["role"], "admin");
    assert_eq!(ops["max_hosts"], 2);
    assert_eq!(ops["max_terminals"], Value::Null);
    assert_eq!(ops["max_api_tokens"], 1);
    refused(
        &admin.run(&["workspaces", "create", "ops"]).await,
        "a workspace named \"ops\" already exists",
    );

    // a host in the default workspace, one joining ops, one moved into ops
    let _default_host = cp.add_online_host(&admin, "web-default").await;
    let join = json(
        &admin
            .run(&["tokens", "create", "--workspace", "ops", "--json"])
            .await,
    );
    let _ops_host = Daemon::join(&cp, join["token"].as_str().unwrap(), "web-ops")
        .await
        .expect("join ops")
        .start()
        .await;
    let _moved = Daemon::join(&cp, &admin.join_token(1).await, "web-moved")
        .await
        .expect("join");
    assert_eq!(
        ok(
            &admin
                .run(&["workspaces", "add-host", "ops", "web-moved"])
                .await,
            "workspaces add-host"
        ),
        "host web-moved is in workspace ops\n"
    );
    assert_eventually!(
        admin.host_status("web-ops").await.as_deref() == Some("online"),
        WAIT,
        "web-ops never came online"
    );
    let hosts = Value::from(admin.hosts().await);
    assert_eq!(named(&hosts, "web-default")["workspace"], "default");
    assert_eq!(named(&hosts, "web-ops")["workspace"], "ops");
    assert_eq!(named(&hosts, "web-moved")["workspace"], "ops");
    let table = ok(&admin.run(&["hosts"]).await, "hosts");
    assert!(
        table.lines().next().unwrap().contains("WORKSPACE"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("web-ops") && l.contains(" ops ")),
        "{table}"
    );

    // members
    ok(
        &admin
            .run(&[
                "users",
                "add",
                "dev",
                "--role",
                "developer",
                "--workspace",
                "ops",
            ])
            .await,
        "users add",
    );
    ok(
        &admin
            .run(&["users", "add", "ann", "--role", "viewer"])
            .await,
        "users add",
    );
    assert_eq!(
        ok(
            &admin
                .run(&[
                    "workspaces",
                    "add-member",
                    "ops",
                    "ann",
                    "--role",
                    "operator"
                ])
                .await,
            "workspaces add-member"
        ),
        "ann is operator in workspace ops\n"
    );
    refused(
        &admin
            .run(&["workspaces", "add-member", "ops", "ann", "--role", "admin"])
            .await,
        "admin is a global role",
    );
    let users = json(&admin.run(&["users", "list", "--json"]).await);
    assert_eq!(
        named(&users, "ann")["roles"],
        serde_json::json!({"default": "viewer", "ops": "operator"})
    );
    ok(
        &admin
            .run(&["workspaces", "remove-member", "ops", "ann"])
            .await,
        "workspaces remove-member",
    );
    refused(
        &admin
            .run(&["workspaces", "remove-member", "ops", "ann"])
            .await,
        "not a member",
    );

    let workspaces = json(&admin.run(&["workspaces", "list", "--json"]).await);
    let listed = named(&workspaces, "ops");
    assert_eq!(
        (listed["hosts"].as_u64(), listed["members"].as_u64()),
        (Some(2), Some(1))
    );
    let table = ok(&admin.run(&["workspaces", "list"]).await, "workspaces list");
    let ops_line = table.lines().find(|l| l.starts_with("ops ")).unwrap();
    assert!(ops_line.ends_with("2/-/1"), "{table}");

    // a viewer token for dev, in ops
    let created = json(
        &admin
            .run(&[
                "api-tokens",
                "create",
                "--user",
                "dev",
                "--workspace",
                "ops",
                "--role",
                "viewer",
                "--name",
                "dashboard",
                "--ttl",
                "30d",
                "--json",
            ])
            .await,
    );
    assert_eq!(created["user"], "dev");
    assert_eq!(created["workspace"], "ops");
    assert_eq!(created["role"], "viewer");
    assert!(created["expires_at"].as_i64().unwrap() > 0);
    let token = created["token"].as_str().unwrap();
    let token_id = created["id"].as_str().unwrap();

    let viewer = zpanel_tests::Cli::new();
    let login = ok(
        &viewer
            .run(&[
                "login", "--server", &cp.url, "--token", token, "--ca-pin", &cp.pin,
            ])
            .await,
        "viewer login",
    );
    assert!(login.contains("as dev (viewer)"), "{login}");
    let visible = viewer.hosts().await;
    let mut seen: Vec<(&str, &str)> = visible
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap(),
                h["workspace"].as_str().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [("web-moved", "ops"), ("web-ops", "ops")]);
    refused(
        &viewer.run(&["exec", "web-ops", "--", "true"]).await,
        "role viewer may not run commands",
    );
    refused(
        &viewer.run(&["exec", "web-default", "--", "true"]).await,
        "unknown host",
    );
    refused(&viewer.run(&["users", "list"]).await, "manage users");
    let theirs = json(&viewer.run(&["workspaces", "list", "--json"]).await);
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs[0]["name"], "ops");
    assert_eq!(theirs[0]["role"], "viewer");
    // the host itself is fine: the admin runs commands there
    let out = admin
        .run(&["exec", "web-ops", "--", "echo", "from ops"])
        .await;
    assert_eq!(ok(&out, "exec"), "from ops\n");

    // no role above the user's
    refused(
        &admin
            .run(&[
                "api-tokens",
                "create",
                "--user",
                "dev",
                "--workspace",
                "ops",
                "--role",
                "operator",
            ])
            .await,
        "cannot be above",
    );

    // the quota of API tokens, then a raised one (the host quota is kept)
    let second = [
        "api-tokens",
        "create",
        "--user",
        "dev",
        "--workspace",
        "ops",
    ];
    refused(&admin.run(&second).await, "quota");
    ok(
        &admin
            .run(&["workspaces", "set-quota", "ops", "--max-api-tokens", "2"])
            .await,
        "workspaces set-quota",
    );
    let workspaces = json(&admin.run(&["workspaces", "list", "--json"]).await);
    let listed = named(&workspaces, "ops");
    assert_eq!(listed["max_hosts"], 2);
    assert_eq!(listed["max_api_tokens"], 2);
    let out = admin.run(&second).await;
    let plain_token = ok(&out, "api-tokens create");
    assert_eq!(plain_token.lines().count(), 1, "{plain_token}");
    let note = stderr(&out);
    assert!(
        note.contains("for dev in workspace ops as developer") && note.contains("shown only once"),
        "{note}"
    );
    ok(
        &admin
            .run(&["workspaces", "set-quota", "ops", "--max-hosts", "0"])
            .await,
        "workspaces set-quota",
    );
    let workspaces = json(&admin.run(&["workspaces", "list", "--json"]).await);
    assert_eq!(named(&workspaces, "ops")["max_hosts"], Value::Null);
    assert_eq!(named(&workspaces, "ops")["max_api_tokens"], 2);

    // revoked: the token no longer authenticates
    assert_eq!(
        ok(
            &admin.run(&["api-tokens", "revoke", token_id]).await,
            "api-tokens revoke"
        ),
        format!("revoked API token {token_id}\n")
    );
    refused(&viewer.run(&["hosts"]).await, "invalid API token");
    let tokens = json(&admin.run(&["api-tokens", "list", "--all", "--json"]).await);
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == token_id)
        .expect("the revoked token is listed");
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["name"], "dashboard");
    assert_eq!(revoked["workspace"], "ops");
    let table = ok(
        &admin.run(&["api-tokens", "list", "--all"]).await,
        "api-tokens list",
    );
    assert!(
        table.lines().next().unwrap().contains("LAST USED"),
        "{table}"
    );
    let line = table.lines().find(|l| l.starts_with(token_id)).unwrap();
    assert!(line.ends_with("revoked"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_listed_exported_and_verified() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin_cli().await;
    ok(
        &admin
            .run(&["users", "add", "carol", "--role", "viewer"])
            .await,
        "users add",
    );
    ok(
        &admin.run(&["workspaces", "create", "qa"]).await,
        "workspaces create",
    );
    let created = json(
        &admin
            .run(&[
                "api-tokens",
                "create",
                "--user",
                "carol",
                "--workspace",
                "default",
                "--json",
            ])
            .await,
    );
    let token_id = created["id"].as_str().unwrap();
    ok(
        &admin.run(&["api-tokens", "revoke", token_id]).await,
        "api-tokens revoke",
    );

    let entries = json(&admin.run(&["audit", "--json"]).await);
    let entries = entries.as_array().unwrap();
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let fields = [
        "id",
        "at",
        "actor",
        "credential",
        "action",
        "workspace_id",
        "host_id",
        "target",
        "detail",
        "outcome",
        "hash",
    ];
    for entry in entries {
        let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), fields.len(), "{entry}");
        assert!(fields.iter().all(|f| entry.get(f).is_some()), "{entry}");
    }
    let action = |name: &str| {
        entries
            .iter()
            .find(|e| e["action"] == name)
            .unwrap_or_else(|| panic!("no {name} entry in {entries:?}"))
            .clone()
    };
    let added = action("user.add");
    assert_eq!(added["actor"], "admin");
    assert_eq!(added["target"], "carol");
    assert_eq!(added["outcome"], "ok");
    assert!(added["credential"].as_str().unwrap().starts_with("token:"));
    assert_eq!(action("workspace.create")["target"], "qa");
    assert_eq!(action("api_token.create")["target"], token_id);
    assert_eq!(action("api_token.revoke")["target"], token_id);

    // filters
    let tokens = json(
        &admin
            .run(&["audit", "--action", "api_token", "--json"])
            .await,
    );
    let actions: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["api_token.create", "api_token.revoke"]);
    let newest = json(
        &admin
            .run(&["audit", "--user", "admin", "--limit", "2", "--json"])
            .await,
    );
    assert_eq!(newest.as_array().unwrap().len(), 2);
    assert_eq!(newest[1]["action"], "api_token.revoke");
    let recent = json(&admin.run(&["audit", "--since", "1h", "--json"]).await);
    assert_eq!(recent.as_array().unwrap().len(), entries.len());
    let none = json(
        &admin
            .run(&["audit", "--since", "2999-01-01T00:00:00Z", "--json"])
            .await,
    );
    assert_eq!(none, serde_json::json!([]));

    // the table: the newest at the bottom, host ids shortened
    let table = ok(&admin.run(&["audit"]).await, "audit");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].ends_with("DETAIL"),
        "{table}"
    );
    assert_eq!(lines.len(), entries.len() + 1, "{table}");
    assert!(
        lines.last().unwrap().contains("api_token.revoke"),
        "{table}"
    );

    // export: the same entries as JSON lines
    let export = ok(&admin.run(&["audit", "export"]).await, "audit export");
    let exported: Vec<Value> = export
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(&exported, entries);
    let exported = ok(
        &admin.run(&["audit", "export", "--action", "user"]).await,
        "audit export",
    );
    assert_eq!(exported.lines().count(), 1, "{exported}");

    // the chain holds, then an edited entry is found
    let verified = ok(&admin.run(&["audit", "verify"]).await, "audit verify");
    assert_eq!(
        verified,
        format!("audit log verified: {} entries\n", entries.len())
    );
    let edited = added["id"].as_i64().unwrap();
    let db = cp.data_dir().join("zpanel.db");
    let sql = format!("UPDATE audit_log SET target = 'someone else' WHERE id = {edited}");
    let out = std::process::Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(&db)
        .arg(&sql)
        .output()
        .expect("the sqlite3 command (scripts/test installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = admin.run(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!("audit log broken at entry {edited}: the entry was edited\n")
    );
}

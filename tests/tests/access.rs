//! Access control end to end: every role against every action through every adapter (REST,
//! the terminal WebSocket, gRPC through the CLI), exactly as the table in ARCHITECTURE.md
//! "Access" says; workspace isolation; token scope, expiry and revocation; quotas; the
//! audit trail of all of it; lockouts.

use std::path::Path;
use std::time::Duration;

use zpanel_tests::web::{Browser, Screen, read_until};
use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually, files::add_host_serving, ok};

const WAIT: Duration = Duration::from_secs(20);

/// The roles from lowest to highest, as `zpanel users add --role` names them.
const ROLES: [&str; 4] = ["viewer", "developer", "operator", "admin"];

/// A caller: a user with an API token, used through the CLI (gRPC) and the web API.
struct Who {
    name: String,
    role: &'static str,
    token: String,
    cli: Cli,
    web: Browser,
}

async fn logged_in(cp: &ControlPlane, token: &str) -> Cli {
    let cli = Cli::new();
    let out = cli
        .run(&[
            "login", "--server", &cp.url, "--token", token, "--ca-pin", &cp.pin,
        ])
        .await;
    ok(&out, "login");
    cli
}

/// Adds a user with `role` in `workspace` and an API token for them.
async fn user(
    cp: &ControlPlane,
    admin: &Cli,
    name: &str,
    role: &'static str,
    workspace: &str,
) -> Who {
    let added = admin
        .run(&[
            "users",
            "add",
            name,
            "--role",
            role,
            "--workspace",
            workspace,
        ])
        .await;
    ok(&added, "users add");
    let created = admin
        .run(&["api-tokens", "create", "--user", name, "--json"])
        .await;
    let json: serde_json::Value =
        serde_json::from_str(&ok(&created, "api-tokens create")).expect("token json");
    let token = json["token"].as_str().expect("token").to_string();
    Who {
        name: name.into(),
        role,
        cli: logged_in(cp, &token).await,
        web: Browser::with_token(cp, &token),
        token,
    }
}

/// How an action is reached.
enum Call {
    /// `zpanel ARGS` (gRPC).
    Cli(Vec<String>),
    /// A REST request with an optional JSON body.
    Rest(&'static str, String, Option<serde_json::Value>),
    /// A REST request with raw bytes.
    RestBytes(&'static str, String, Vec<u8>),
    /// Opens a terminal over the WebSocket.
    Socket(&'static str),
}

struct Case {
    action: &'static str,
    /// The lowest role allowed, as an index into [`ROLES`].
    min_role: usize,
    call: Call,
}

/// Makes the call as `who`: `Ok(())` when allowed, `Err(how it was refused)` otherwise.
/// Anything that is neither a success nor a refusal fails the test.
async fn attempt(who: &Who, call: &Call) -> Result<(), String> {
    match call {
        Call::Cli(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = who.cli.run(&args).await;
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if out.status.success() {
                return Ok(());
            }
            assert!(
                stderr.contains("may not") || stderr.contains("unknown host"),
                "zpanel {args:?} as {}: not a refusal: {stderr}",
                who.name
            );
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            Err(stderr)
        }
        Call::Rest(method, path, body) => {
            let response = who.web.call(method, path, body.as_ref()).await.unwrap();
            rest_outcome(who, path, response)
        }
        Call::RestBytes(method, path, body) => {
            let response = who
                .web
                .call_with_body(method, path, &[], body)
                .await
                .unwrap();
            rest_outcome(who, path, response)
        }
        Call::Socket(host) => {
            let mut socket = who.web.terminal(host, "").await.expect("upgrade");
            let mut screen = Screen::default();
            read_until(&mut socket, &mut screen, WAIT, |s| {
                s.attached.is_some() || s.closed.is_some()
            })
            .await;
            match screen.closed {
                None if screen.attached.is_some() => Ok(()),
                Some(code @ (4003 | 4004)) => Err(format!("closed {code}: {:?}", screen.messages)),
                _ => panic!("terminal as {}: {screen:?}", who.name),
            }
        }
    }
}

fn rest_outcome(
    who: &Who,
    path: &str,
    response: zpanel_tests::web::HttpResponse,
) -> Result<(), String> {
    match response.status {
        200..=299 => Ok(()),
        403 | 404 => {
            let error = response.json()["error"].as_str().unwrap_or("").to_string();
            assert!(!error.is_empty(), "{path}: a refusal says why");
            Err(format!("{}: {error}", response.status))
        }
        _ => panic!("{path} as {}: {response:?}", who.name),
    }
}

fn cli(args: &[&str]) -> Call {
    Call::Cli(args.iter().map(|a| a.to_string()).collect())
}

/// The documented table, through each adapter that offers the action.
fn cases(root: &Path, upload: &Path) -> Vec<Case> {
    let root = root.display().to_string();
    let upload = upload.display().to_string();
    let case = |action, min_role, call| Case {
        action,
        min_role,
        call,
    };
    vec![
        case("list hosts", 0, cli(&["hosts"])),
        case(
            "list hosts",
            0,
            Call::Rest("GET", "/api/v1/hosts".into(), None),
        ),
        case("exec", 1, cli(&["exec", "h1", "--", "true"])),
        case("terminal", 1, Call::Socket("h1")),
        case("terminal", 1, cli(&["sessions", "h1"])),
        case(
            "terminal",
            1,
            Call::Rest("GET", "/api/v1/hosts/h1/terminals".into(), None),
        ),
        case(
            "read files",
            1,
            Call::Rest("GET", format!("/api/v1/hosts/h1/files?path={root}"), None),
        ),
        case("read files", 1, cli(&["ls", &format!("h1:{root}")])),
        case(
            "write files",
            1,
            Call::RestBytes(
                "PUT",
                format!("/api/v1/hosts/h1/files/content?path={root}/rest.txt"),
                b"rest".to_vec(),
            ),
        ),
        case(
            "write files",
            1,
            cli(&["cp", &upload, &format!("h1:{root}/grpc.txt")]),
        ),
        case("create join tokens", 2, cli(&["tokens", "create"])),
        case("read the audit log", 2, cli(&["audit", "--limit", "5"])),
        case(
            "read the audit log",
            2,
            Call::Rest("GET", "/api/v1/audit?limit=5".into(), None),
        ),
        case(
            "watch other users' terminals",
            3,
            Call::Rest("GET", "/api/v1/hosts/h1/terminals?all=true".into(), None),
        ),
        case("manage users", 3, cli(&["users", "list"])),
        case(
            "manage users",
            3,
            Call::Rest("GET", "/api/v1/users".into(), None),
        ),
        case("verify the audit log", 3, cli(&["audit", "verify"])),
        case(
            "verify the audit log",
            3,
            Call::Rest("GET", "/api/v1/audit/verify".into(), None),
        ),
        case("own API tokens", 0, cli(&["api-tokens", "list"])),
        case(
            "own API tokens",
            0,
            Call::Rest("GET", "/api/v1/account/api-tokens".into(), None),
        ),
        case(
            "watch other users' terminals",
            3,
            cli(&["sessions", "h1", "--all"]),
        ),
        case(
            "manage workspaces",
            3,
            cli(&["workspaces", "create", "made-in-the-table"]),
        ),
    ]
}

struct Fleet {
    cp: ControlPlane,
    admin: Cli,
    root: tempfile::TempDir,
    _hosts: Vec<Daemon>,
}

/// A control plane with host h1 (serving a file root) in the default workspace and host h2
/// in workspace `other`.
async fn fleet() -> Fleet {
    let cp = ControlPlane::start().await;
    let admin = cp.admin_cli().await;
    let root = tempfile::tempdir().unwrap();
    let h1 = add_host_serving(&cp, &admin, "h1", &[root.path()]).await;
    let h2 = cp.add_online_host(&admin, "h2").await;
    ok(
        &admin.run(&["workspaces", "create", "other"]).await,
        "create",
    );
    ok(
        &admin.run(&["workspaces", "add-host", "other", "h2"]).await,
        "add-host",
    );
    Fleet {
        cp,
        admin,
        root,
        _hosts: vec![h1, h2],
    }
}

#[tokio::test]
async fn every_role_and_adapter_is_allowed_exactly_as_documented() {
    let f = fleet().await;
    let mut people = Vec::new();
    for role in &ROLES[..3] {
        people.push(user(&f.cp, &f.admin, &format!("{role}-user"), role, "default").await);
    }
    people.push(Who {
        name: "admin".into(),
        role: "admin",
        token: f.cp.admin_token.clone(),
        cli: logged_in(&f.cp, &f.cp.admin_token).await,
        web: Browser::with_token(&f.cp, &f.cp.admin_token),
    });
    // A developer of the other workspace sees nothing of h1, in any adapter.
    let outsider = user(&f.cp, &f.admin, "outsider", "developer", "other").await;
    let upload = f.root.path().join("upload-source.txt");
    std::fs::write(&upload, b"grpc").unwrap();

    let mut table = Vec::new();
    for case in cases(f.root.path(), &upload) {
        for who in &people {
            let rank = ROLES.iter().position(|r| *r == who.role).unwrap();
            let result = attempt(who, &case.call).await;
            let expected = rank >= case.min_role;
            table.push(format!(
                "{:<30} {:<10} {:<6} {}",
                case.action,
                who.role,
                adapter(&case.call),
                if result.is_ok() { "allowed" } else { "denied" }
            ));
            assert_eq!(
                result.is_ok(),
                expected,
                "{} as {} through {}: {result:?}",
                case.action,
                who.role,
                adapter(&case.call)
            );
        }
        let names_h1 = match &case.call {
            Call::Cli(args) => args.iter().any(|a| a.starts_with("h1")),
            Call::Rest(_, path, _) | Call::RestBytes(_, path, _) => path.contains("/hosts/h1/"),
            Call::Socket(_) => true,
        };
        if names_h1 {
            let refused = attempt(&outsider, &case.call).await.unwrap_err();
            assert!(
                refused.contains("unknown host")
                    || refused.starts_with("404")
                    || refused.contains("4004"),
                "{}: outsider told more than 'unknown': {refused}",
                case.action
            );
        }
    }
    println!("{}", table.join("\n"));

    // Listing shows each caller only their workspaces' hosts.
    let names = |hosts: serde_json::Value| -> Vec<String> {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_string())
            .collect()
    };
    let seen = outsider
        .web
        .call("GET", "/api/v1/hosts", None)
        .await
        .unwrap();
    assert_eq!(names(seen.json()), ["h2"]);
    let seen = people[0]
        .web
        .call("GET", "/api/v1/hosts", None)
        .await
        .unwrap();
    assert_eq!(names(seen.json()), ["h1"]);
    let seen = people[3]
        .web
        .call("GET", "/api/v1/hosts", None)
        .await
        .unwrap();
    assert_eq!(names(seen.json()), ["h1", "h2"]);

    // Destructive actions last: an operator may delete a host of their workspace, a
    // developer may not.
    let spare = f.cp.add_host(&f.admin, "spare").await;
    assert!(
        attempt(&people[1], &cli(&["hosts", "rm", "spare"]))
            .await
            .is_err()
    );
    assert!(
        attempt(&outsider, &cli(&["hosts", "rm", "spare"]))
            .await
            .is_err()
    );
    assert!(
        attempt(&people[2], &cli(&["hosts", "rm", "spare"]))
            .await
            .is_ok()
    );
    drop(spare);

    // Every action and every refusal is in the audit log, under the token's identity.
    let audit = f.admin.run(&["audit", "--json", "--limit", "10000"]).await;
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&audit, "audit")).expect("audit json");
    let has = |actor: &str, action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["outcome"] == outcome)
    };
    for (actor, action, outcome) in [
        ("developer-user", "exec", "ok"),
        ("developer-user", "terminal.open", "ok"),
        ("developer-user", "file.write", "ok"),
        ("operator-user", "join_token.create", "ok"),
        ("operator-user", "host.delete", "ok"),
        ("viewer-user", "access.denied", "denied"),
        ("outsider", "access.denied", "denied"),
        ("admin", "user.add", "ok"),
        ("admin", "api_token.create", "ok"),
        ("admin", "workspace.add_host", "ok"),
    ] {
        assert!(has(actor, action, outcome), "no {actor} {action} {outcome}");
    }
    let exec = entries
        .iter()
        .find(|e| e["actor"] == "developer-user" && e["action"] == "exec")
        .unwrap();
    assert_eq!(exec["detail"], "true", "the command line is recorded");
    assert!(exec["credential"].as_str().unwrap().starts_with("token:"));
    assert!(!exec["host_id"].as_str().unwrap().is_empty());
    drop(outsider.token);
}

fn adapter(call: &Call) -> &'static str {
    match call {
        Call::Cli(_) => "gRPC",
        Call::Rest(..) | Call::RestBytes(..) => "REST",
        Call::Socket(_) => "WS",
    }
}

#[tokio::test]
async fn tokens_are_scoped_expire_and_are_revoked() {
    let f = fleet().await;
    let dev = user(&f.cp, &f.admin, "dev", "developer", "default").await;
    ok(
        &f.admin
            .run(&[
                "workspaces",
                "add-member",
                "other",
                "dev",
                "--role",
                "viewer",
            ])
            .await,
        "add-member",
    );

    // A token cannot be above its user's role, nor in a workspace they are not in.
    for args in [
        vec![
            "api-tokens",
            "create",
            "--workspace",
            "default",
            "--role",
            "operator",
        ],
        vec![
            "api-tokens",
            "create",
            "--user",
            "admin",
            "--workspace",
            "default",
        ],
    ] {
        let out = dev.cli.run(&args).await;
        assert!(!out.status.success(), "{args:?} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("may not")
                || String::from_utf8_lossy(&out.stderr).contains("cannot be above")
        );
    }
    // A token works in its one workspace: dev's (for `default`) cannot make one for
    // `other`; the admin makes dev a viewer token there, which sees h2 only and runs
    // nothing.
    let out = dev
        .cli
        .run(&[
            "api-tokens",
            "create",
            "--workspace",
            "other",
            "--role",
            "viewer",
        ])
        .await;
    assert!(!out.status.success());
    let scoped = f
        .admin
        .run(&[
            "api-tokens",
            "create",
            "--user",
            "dev",
            "--workspace",
            "other",
            "--role",
            "viewer",
            "--json",
        ])
        .await;
    let scoped: serde_json::Value = serde_json::from_str(&ok(&scoped, "scoped")).unwrap();
    let scoped_cli = logged_in(&f.cp, scoped["token"].as_str().unwrap()).await;
    let hosts = scoped_cli.hosts().await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["name"], "h2");
    let out = scoped_cli.run(&["exec", "h1", "--", "true"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown host"));

    // Demoting the user caps the tokens they already have.
    ok(
        &f.admin
            .run(&[
                "users",
                "set-role",
                "dev",
                "viewer",
                "--workspace",
                "default",
            ])
            .await,
        "set-role",
    );
    let out = dev.cli.run(&["exec", "h1", "--", "true"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("role viewer may not"));

    // Expiry and revocation end a token, with an authentication error.
    let short = f
        .admin
        .run(&["api-tokens", "create", "--ttl", "1s", "--json"])
        .await;
    let short: serde_json::Value = serde_json::from_str(&ok(&short, "short")).unwrap();
    let short = Browser::with_token(&f.cp, short["token"].as_str().unwrap());
    assert_eventually!(
        short
            .call("GET", "/api/v1/hosts", None)
            .await
            .unwrap()
            .status
            == 401,
        WAIT,
        "an expired token still works"
    );
    let listed = dev.cli.run(&["api-tokens", "list", "--json"]).await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok(&listed, "list")).unwrap();
    assert_eq!(listed.len(), 2);
    // Oldest first: the token this CLI uses goes last.
    for token in listed.iter().rev() {
        let id = token["id"].as_str().unwrap();
        ok(&dev.cli.run(&["api-tokens", "revoke", id]).await, "revoke");
    }
    let refused = dev.web.call("GET", "/api/v1/hosts", None).await.unwrap();
    assert_eq!(refused.status, 401);
    let out = dev.cli.run(&["hosts"]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn workspace_quotas_are_enforced() {
    let f = fleet().await;
    ok(
        &f.admin
            .run(&[
                "workspaces",
                "set-quota",
                "other",
                "--max-hosts",
                "1",
                "--max-terminals",
                "1",
                "--max-api-tokens",
                "1",
            ])
            .await,
        "set-quota",
    );
    // Hosts: h2 fills `other`, so moving h1 there, or enrolling into it, is refused.
    let moved = f
        .admin
        .run(&["workspaces", "add-host", "other", "h1"])
        .await;
    assert!(!moved.status.success());
    assert!(String::from_utf8_lossy(&moved.stderr).contains("quota"));
    let token = f
        .admin
        .run(&["tokens", "create", "--workspace", "other", "--json"])
        .await;
    let token: serde_json::Value = serde_json::from_str(&ok(&token, "tokens")).unwrap();
    let joined = Daemon::join(&f.cp, token["token"].as_str().unwrap(), "h3").await;
    let error = joined.err().expect("enrolment past the quota").to_string();
    assert!(error.contains("quota"), "{error}");

    // Terminals: one at a time in `other`.
    let admin_web = Browser::with_token(&f.cp, &f.cp.admin_token);
    let mut first = admin_web.terminal("h2", "").await.unwrap();
    let mut screen = Screen::default();
    assert!(read_until(&mut first, &mut screen, WAIT, |s| s.attached.is_some()).await);
    let mut second = admin_web.terminal("h2", "").await.unwrap();
    let mut refused = Screen::default();
    read_until(&mut second, &mut refused, WAIT, |s| s.closed.is_some()).await;
    assert_eq!(refused.closed, Some(4003), "{refused:?}");
    assert!(
        refused.messages[0]["message"]
            .as_str()
            .unwrap()
            .contains("quota")
    );

    // API tokens: one live token in `other`.
    let make = || {
        f.admin.run(&[
            "api-tokens",
            "create",
            "--workspace",
            "other",
            "--role",
            "viewer",
        ])
    };
    ok(&make().await, "first token");
    let out = make().await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("quota"));
}

#[tokio::test]
async fn bad_tokens_and_bad_join_tokens_lock_the_address_out() {
    let cp = ControlPlane::start().await;
    let admin = Browser::with_token(&cp, &cp.admin_token);
    let forger = Browser::with_token(&cp, "zpa_0000");
    let mut statuses = Vec::new();
    for _ in 0..21 {
        statuses.push(
            forger
                .call("GET", "/api/v1/hosts", None)
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(statuses[..20], [401; 20], "{statuses:?}");
    assert_eq!(statuses[20], 429, "{statuses:?}");
    // The address is locked out: even a good token waits, and is told how long.
    let locked = admin.call("GET", "/api/v1/hosts", None).await.unwrap();
    assert_eq!(locked.status, 429);
    assert!(locked.header("retry-after").is_some());

    let cp = ControlPlane::start().await;
    let mut errors = Vec::new();
    for n in 0..11 {
        let joined = Daemon::join(&cp, "zpj_forged", &format!("x{n}")).await;
        errors.push(joined.err().expect("a forged join token").to_string());
    }
    assert!(errors[9].contains("not known"), "{errors:?}");
    assert!(errors[10].contains("try again"), "{errors:?}");
}

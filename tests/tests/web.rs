//! The browser's side of security end to end: logins, cookies, CSRF, Origin checks, rate
//! limits, password resets, live host status, and the audit entry and recording a terminal
//! leaves behind.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use zpanel_tests::web::{Browser, Screen, post_login, read_until, request, type_text};
use zpanel_tests::{ControlPlane, assert_eventually, bin};

const WAIT: Duration = Duration::from_secs(20);

async fn login_attempt(cp: &ControlPlane, user: &str, password: &str) -> (u16, serde_json::Value) {
    let response = post_login(cp, &cp.url, user, password).await.unwrap();
    (response.status, response.json())
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_logout_ends_it() {
    let cp = ControlPlane::start().await;
    assert!(cp.stdout.contains("admin-password"), "{}", cp.stdout);
    let (status, body) = login_attempt(&cp, "admin", "not the password").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "wrong user name or password");
    let (status, _) = login_attempt(&cp, "nobody", "whatever-password").await;
    assert_eq!(status, 401);

    let response = post_login(&cp, &cp.url, "admin", &cp.admin_password())
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let cookie = response.header("set-cookie").unwrap().to_string();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let session = browser.call("GET", "/api/v1/session", None).await.unwrap();
    assert_eq!(session.json()["user"], "admin");
    assert_eq!(session.json()["role"], "admin");

    // A login form posted from another site is refused.
    let response = post_login(&cp, "https://evil.example", "admin", &cp.admin_password())
        .await
        .unwrap();
    assert_eq!(response.status, 403);

    let out = browser.call("POST", "/api/v1/logout", None).await.unwrap();
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = browser.call("GET", "/api/v1/session", None).await.unwrap();
    assert_eq!(after.status, 401);
    // An unknown or expired cookie is refused the same way.
    let forged = request(
        &cp.url,
        &cp.pin,
        "GET",
        "/api/v1/hosts",
        &[("Cookie", "zpanel_session=zps_0000")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(forged.status, 401);
    assert!(forged.json()["error"].as_str().is_some());
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_our_origin() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_online_host(&cli, "web").await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let path = "/api/v1/hosts/web/terminals/some-session";
    let without_token = request(
        &cp.url,
        &cp.pin,
        "DELETE",
        path,
        &[("Cookie", &browser.cookie), ("Origin", &cp.url)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(without_token.status, 403, "{without_token:?}");
    assert!(without_token.body.contains("CSRF"));
    let foreign = request(
        &cp.url,
        &cp.pin,
        "DELETE",
        path,
        &[
            ("Cookie", &browser.cookie),
            ("Origin", "https://evil.example"),
            ("X-CSRF-Token", &browser.csrf),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(foreign.status, 403);

    // A page on another origin cannot open a terminal with the user's cookie.
    let Err(refused) = browser
        .terminal_from("web", "", "https://evil.example")
        .await
    else {
        panic!("a cross-origin websocket was accepted");
    };
    assert!(refused.to_string().contains("403"), "{refused}");
    let no_origin = browser.terminal_from("web", "", "null").await;
    assert!(no_origin.is_err());

    // API tokens (scripts) need neither.
    let hosts = request(
        &cp.url,
        &cp.pin,
        "GET",
        "/api/v1/hosts",
        &[("Authorization", &format!("Bearer {}", cp.admin_token))],
        None,
    )
    .await
    .unwrap();
    assert_eq!(hosts.json()[0]["name"], "web");
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account() {
    let cp = ControlPlane::start().await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(login_attempt(&cp, "admin", "wrong-password").await.0);
    }
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10], 429, "{statuses:?}");
    let response = post_login(&cp, &cp.url, "admin", &cp.admin_password())
        .await
        .unwrap();
    assert_eq!(response.status, 429, "even the right password waits");
    assert!(response.header("retry-after").is_some());
    assert!(
        response.json()["error"]
            .as_str()
            .unwrap()
            .contains("try again")
    );
}

#[tokio::test]
async fn passwd_resets_a_password_and_ends_sessions() {
    let cp = ControlPlane::start().await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let set = |password: &'static str| {
        let data_dir = cp.data_dir().to_path_buf();
        async move {
            let mut child = tokio::process::Command::new(bin("zpanel-cp"))
                .args(["passwd", "--password-file", "-", "--data-dir"])
                .arg(data_dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(password.as_bytes()).await.unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };
    let short = set("short\n").await;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("10 to"));
    let ok = set("a much better password\n").await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!cp.data_dir().join("admin-password").exists());
    let session = browser.call("GET", "/api/v1/session", None).await.unwrap();
    assert_eq!(session.status, 401, "old sessions end with a reset");
    assert!(
        Browser::login(&cp, "admin", "a much better password")
            .await
            .is_ok()
    );
    // The reset is in the audit log, and the chain still holds.
    let admin = cp.admin_cli().await;
    let audit = admin
        .run(&["audit", "--action", "user.password", "--json"])
        .await;
    let entries: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(entries[0]["target"], "admin", "{entries}");
    assert!(admin.run(&["audit", "verify"]).await.status.success());
}

#[tokio::test]
async fn host_status_is_pushed_live() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let mut daemon = cp.add_online_host(&cli, "live").await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let watcher = {
        let browser = browser.clone();
        tokio::spawn(async move {
            browser
                .events_until("/api/v1/hosts/events", |text| {
                    text.contains("event: hosts") && text.contains("\"status\":\"offline\"")
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.kill().await;
    assert!(watcher.await.unwrap(), "no offline event arrived");
}

#[tokio::test]
async fn terminals_are_audited_and_recorded() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, "rec").await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let mut socket = browser.terminal("rec", "cols=100&rows=30").await.unwrap();
    let mut screen = Screen::default();
    type_text(&mut socket, "echo rec-$((6*7))\r").await;
    assert!(
        read_until(&mut socket, &mut screen, WAIT, |s| s
            .text()
            .contains("rec-42"))
        .await
    );
    let id = screen.attached.as_ref().unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string();
    let path = cp
        .data_dir()
        .join(format!("recordings/{}/{id}.cast", daemon.host_id));
    assert_eventually!(
        std::fs::read_to_string(&path).is_ok_and(|text| text.contains("rec-42")),
        WAIT,
        "recording {} never had the output",
        path.display()
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 100);
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            event[0].as_f64().is_some() && event[1].is_string(),
            "{line}"
        );
    }
    let db = cp.data_dir().join("zpanel.db");
    let audit = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT actor, action, target, detail, outcome FROM audit_log WHERE action = 'terminal.open'")
        .output()
        .expect("the sqlite3 command (scripts/test installs it)");
    let rows = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(rows.contains("admin|terminal.open"), "{rows}");
    assert!(rows.contains(&daemon.host_id), "{rows}");
    assert!(
        rows.contains(&format!("recordings/{}/{id}.cast", daemon.host_id)),
        "{rows}"
    );
}

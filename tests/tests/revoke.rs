//! Revocation: `zpanel hosts revoke HOST` ends the host's session at once, its certificate is
//! refused in the TLS handshake from then on (also after a restart of the control plane), and
//! the host stays listed as revoked until it is deleted.

use std::time::Duration;

use zpanel_tests::{Cli, ControlPlane, assert_eventually, ok, stderr, stdout};

/// A CLI logged in as a new user with `role` in the default workspace.
async fn cli_as(cp: &ControlPlane, admin: &Cli, name: &str, role: &str) -> Cli {
    ok(
        &admin.run(&["users", "add", name, "--role", role]).await,
        "users add",
    );
    let created: serde_json::Value = serde_json::from_str(&ok(
        &admin
            .run(&["api-tokens", "create", "--user", name, "--json"])
            .await,
        "api-tokens create",
    ))
    .unwrap();
    let cli = Cli::new();
    let token = created["token"].as_str().unwrap();
    ok(
        &cli.run(&[
            "login", "--server", &cp.url, "--token", token, "--ca-pin", &cp.pin,
        ])
        .await,
        "login",
    );
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_host_is_cut_off_refused_and_listed_until_deleted() {
    let mut cp = ControlPlane::start().await;
    let admin = cp.admin_cli().await;
    let daemon = cp.add_online_host(&admin, "doomed").await;
    let _bystander = cp.add_online_host(&admin, "bystander").await;

    // only admins revoke
    for role in ["operator", "viewer"] {
        let cli = cli_as(&cp, &admin, &format!("an-{role}"), role).await;
        let out = cli.run(&["hosts", "revoke", "doomed"]).await;
        assert!(!out.status.success(), "a {role} revoked a host");
        assert!(
            stderr(&out).contains("revoke hosts"),
            "the refusal names the action: {}",
            stderr(&out)
        );
    }
    assert_eq!(admin.host_status("doomed").await.as_deref(), Some("online"));

    let refused_before = cp.metric("zpanel_handshakes_refused_total").await;
    let out = ok(
        &admin.run(&["hosts", "revoke", "doomed"]).await,
        "hosts revoke",
    );
    assert!(out.contains(&daemon.host_id), "{out}");
    // the session ends at once: no waiting for heartbeats to miss
    assert_eventually!(
        admin.host("doomed").await.expect("the host is listed")["status"] == "revoked",
        Duration::from_secs(3),
        "the host is not shown revoked"
    );
    let listed = admin.host("doomed").await.expect("the host is listed");
    assert!(listed["revoked_at"].is_string(), "{listed}");
    assert_eq!(
        admin.host_status("bystander").await.as_deref(),
        Some("online")
    );
    let table = ok(&admin.run(&["hosts"]).await, "hosts");
    let line = table.lines().find(|l| l.contains("doomed")).unwrap();
    assert!(line.contains("revoked"), "{table}");

    // the daemon keeps trying, and is refused during the TLS handshake
    assert_eventually!(
        cp.metric("zpanel_handshakes_refused_total").await > refused_before,
        Duration::from_secs(20),
        "the revoked host's reconnects were not refused:\n{}",
        cp.log()
    );
    assert_eventually!(
        cp.log().contains(&format!(
            "host {} is not enrolled here, or was revoked",
            daemon.host_id
        )),
        Duration::from_secs(10),
        "the control plane does not say why it refused the host:\n{}",
        cp.log()
    );
    assert_eventually!(
        daemon
            .log()
            .contains("the control plane refused this host's certificate"),
        Duration::from_secs(10),
        "the daemon does not say it was refused:\n{}",
        daemon.log()
    );

    // nothing reaches it
    let out = admin.run(&["exec", "doomed", "--", "true"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was revoked"),
        "exec to a revoked host: {}",
        stderr(&out)
    );

    // revoking again changes nothing and says so
    let again = admin.run(&["hosts", "revoke", "doomed"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("already revoked"),
        "{}",
        stdout(&again)
    );

    // audited: the revocation, and the refusals of the operator and the viewer
    let audit: Vec<serde_json::Value> = serde_json::from_str(&ok(
        &admin.run(&["audit", "--json", "--limit", "1000"]).await,
        "audit",
    ))
    .unwrap();
    let revocations: Vec<_> = audit
        .iter()
        .filter(|e| e["action"] == "host.revoke")
        .collect();
    assert_eq!(revocations.len(), 1, "{audit:?}");
    assert_eq!(revocations[0]["actor"], "admin");
    assert_eq!(revocations[0]["target"], "doomed");

    // a restart keeps it out: the allow list loaded at start leaves revoked hosts out
    cp.restart().await;
    let admin = cp.admin_cli().await;
    assert_eventually!(
        admin.host_status("bystander").await.as_deref() == Some("online"),
        Duration::from_secs(30),
        "the bystander did not come back"
    );
    let refused = cp.metric("zpanel_handshakes_refused_total").await;
    assert_eventually!(
        cp.metric("zpanel_handshakes_refused_total").await > refused,
        Duration::from_secs(20),
        "the revoked host is not refused after a restart"
    );
    assert_eq!(
        admin.host("doomed").await.expect("the host is listed")["status"],
        "revoked"
    );

    // deleting it removes it for good
    ok(&admin.run(&["hosts", "rm", "doomed"]).await, "hosts rm");
    assert!(admin.hosts().await.iter().all(|h| h["name"] != "doomed"));
}

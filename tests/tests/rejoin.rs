//! Enrolling a machine again (re-running the install with a new join token): a machine that
//! proves it holds the key of the certificate it was given enrols again as the same host;
//! a certificate without its key, or a revoked host, does not.

use std::time::Duration;

use zpanel_tests::{ControlPlane, assert_eventually, join_into, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_enrols_again_as_the_same_host_only_with_its_own_key() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let mut daemon = cp.add_online_host(&cli, "again").await;
    let cert = daemon.config_dir.path().join("cert.pem");
    let key = daemon.config_dir.path().join("key.pem");
    let (first_cert, first_key) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());

    // A new token, the same machine: the same host id, a new certificate for the same key.
    let token = cli.join_token(1).await;
    let host_id = daemon.join_again(&cp, &token).await.expect("join again");
    assert_eq!(host_id, daemon.host_id, "the machine got a new identity");
    assert_ne!(std::fs::read(&cert).unwrap(), first_cert);
    assert_eq!(std::fs::read(&key).unwrap(), first_key);
    let listed = cli.hosts().await;
    assert_eq!(
        listed.iter().filter(|h| h["name"] == "again").count(),
        1,
        "{listed:?}"
    );
    let audit = ok(
        &cli.run(&["audit", "--action", "host.enroll"]).await,
        "audit",
    );
    assert!(audit.contains("again, as the same machine"), "{audit}");

    // The daemon restarted on the new certificate comes back as the same host.
    daemon.kill().await;
    let mut daemon = daemon.start().await;
    assert_eventually!(
        cli.host_status("again").await.as_deref() == Some("online"),
        Duration::from_secs(30),
        "the host did not come back on its new certificate:\n{}",
        daemon.log()
    );

    // Another machine with a copy of the certificate but its own key is not that host:
    // the name stays taken.
    let other = cp.add_host(&cli, "other").await;
    std::fs::copy(&cert, other.config_dir.path().join("cert.pem")).unwrap();
    let token = cli.join_token(1).await;
    let refused = zpanel_tests::Daemon::join(&cp, &token, "again").await;
    assert!(refused.is_err(), "a second machine took the name");
    let refused = join_into(other.config_dir.path(), &cp, &token, "again", &cp.pin, &[]).await;
    let message = refused
        .expect_err("a stolen certificate enrolled")
        .to_string();
    assert!(message.contains("taken"), "{message}");

    // A revoked host must be deleted before the machine enrols again.
    ok(&cli.run(&["hosts", "revoke", "again"]).await, "revoke");
    let message = daemon
        .join_again(&cp, &token)
        .await
        .expect_err("a revoked host enrolled again")
        .to_string();
    assert!(
        message.contains("revoked") && message.contains("zpanel hosts rm again"),
        "{message}"
    );
    daemon.kill().await;
}

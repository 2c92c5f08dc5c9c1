//! Certificate renewal over the live session: a host keeps working past the lifetime of the
//! certificate it enrolled with, without re-enrolling.

use std::time::{Duration, Instant};

use zpanel_tests::{ControlPlane, assert_eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_renews_its_certificate_before_it_expires() {
    // 60 s certificates: renewed with a third of that left, 40 s after enrolment
    let cp = ControlPlane::start_with(&["--host-cert-ttl", "60s"]).await;
    let cli = cp.admin_cli().await;
    let enrolled_at = Instant::now();
    let mut daemon = cp.add_online_host(&cli, "renewing").await;
    let cert_path = daemon.config_dir.path().join("cert.pem");
    let key_path = daemon.config_dir.path().join("key.pem");
    let (first_cert, key) = (
        std::fs::read(&cert_path).unwrap(),
        std::fs::read(&key_path).unwrap(),
    );

    assert_eventually!(
        std::fs::read(&cert_path).unwrap() != first_cert,
        Duration::from_secs(90),
        "certificate never renewed:\n{}",
        daemon.log()
    );
    assert_eq!(
        std::fs::read(&key_path).unwrap(),
        key,
        "the key must not change"
    );
    // the file is replaced just before the line is logged
    assert_eventually!(
        daemon.log().contains("certificate renewed"),
        Duration::from_secs(10),
        "the daemon does not log the renewal"
    );
    assert!(cp.log().contains("host certificate renewed"));

    // once the first certificate has expired, a fresh start of the daemon gets in with the
    // renewed one
    let expired = Duration::from_secs(62).saturating_sub(enrolled_at.elapsed());
    tokio::time::sleep(expired).await;
    daemon.kill().await;
    // the certificate it enrolled with is refused by now
    let stale = daemon.with_same_identity();
    std::fs::write(stale.config_dir.path().join("cert.pem"), &first_cert).unwrap();
    let refused_before = cp.metric("zpanel_handshakes_refused_total").await;
    let mut stale = stale.start().await;
    assert_eventually!(
        cp.metric("zpanel_handshakes_refused_total").await > refused_before,
        Duration::from_secs(20),
        "the expired certificate was not refused"
    );
    stale.kill().await;
    assert_eventually!(
        cli.host_status("renewing").await.as_deref() == Some("offline"),
        Duration::from_secs(10),
        "still online"
    );
    let daemon = daemon.start().await;
    assert_eventually!(
        cli.host_status("renewing").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "the renewed certificate was refused:\n{}",
        daemon.log()
    );
    let out = cli
        .run(&["exec", "renewing", "--", "echo", "still here"])
        .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
}

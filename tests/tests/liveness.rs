//! Host status: a dead or silent daemon shows offline within three heartbeat intervals,
//! and one live session per host.

use std::time::Duration;

use nix::sys::signal::Signal;
use zpanel_tests::{ControlPlane, assert_eventually};

/// Three 1 s heartbeat intervals plus a margin for a loaded machine.
const DETECTION: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_goes_offline() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let mut daemon = cp.add_online_host(&cli, "victim").await;
    daemon.kill().await;
    assert_eventually!(
        cli.host_status("victim").await.as_deref() == Some("offline"),
        DETECTION,
        "still online after kill -9"
    );
    let hosts = cli.hosts().await;
    assert!(
        hosts[0]["last_seen"].is_string(),
        "last_seen kept: {hosts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_daemon_goes_offline_and_returns() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, "frozen").await;
    // SIGSTOP keeps the socket open but stops heartbeats: only dead-peer detection notices
    daemon.signal(Signal::SIGSTOP);
    assert_eventually!(
        cli.host_status("frozen").await.as_deref() == Some("offline"),
        DETECTION,
        "silent peer not detected"
    );
    daemon.signal(Signal::SIGCONT);
    assert_eventually!(
        cli.host_status("frozen").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "did not reconnect"
    );
    let out = cli.run(&["exec", "frozen", "--", "echo", "back"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_for_the_same_host_replaces_the_first() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let first = cp.add_online_host(&cli, "twin").await;
    let accepted = cp.metric("zpanel_sessions_accepted_total").await;
    // a second daemon with the same identity: the newest session wins, the host stays
    // online throughout, and exec keeps working
    let mut second = first
        .with_same_identity()
        .start_reconnecting("2s", "5s")
        .await;
    assert_eventually!(
        cp.metric("zpanel_sessions_accepted_total").await > accepted,
        Duration::from_secs(20),
        "second session never accepted"
    );
    assert_eq!(cp.metric("zpanel_hosts_online").await, 1);
    let out = cli.run(&["exec", "twin", "--", "echo", "one"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
    second.kill().await;
}

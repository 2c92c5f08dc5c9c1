//! Fifty enrolled daemons connected at once through real mTLS.

use std::time::Duration;

use zpanel_tests::{ControlPlane, Daemon, assert_eventually};

const HOSTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hosts_online_at_once() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(HOSTS as u32).await;
    let joins = (0..HOSTS).map(|i| {
        let (cp, token) = (&cp, token.clone());
        async move { Daemon::join(cp, &token, &format!("node-{i:02}")).await }
    });
    let enrolled = futures_util::future::join_all(joins).await;
    let mut daemons = Vec::new();
    for daemon in enrolled {
        daemons.push(daemon.expect("join").start().await);
    }
    // the token is used up now
    let extra = Daemon::join(&cp, &token, "one-too-many").await;
    assert!(extra.err().unwrap().to_string().contains("no uses left"));

    assert_eventually!(
        cp.metric("zpanel_hosts_online").await == HOSTS as u64,
        Duration::from_secs(60),
        "not all hosts online"
    );
    let hosts = cli.hosts().await;
    assert_eq!(hosts.len(), HOSTS);
    assert!(hosts.iter().all(|h| h["status"] == "online"));
    for i in [0, 17, 49] {
        let name = format!("node-{i:02}");
        let out = cli.run(&["exec", &name, "--", "echo", &name]).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{name}\n"));
    }
}

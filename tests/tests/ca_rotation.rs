//! CA rotation: `zpanel-cp ca rotate` against a running control plane re-issues every host's
//! certificate over its session under a new CA, then retires the old one; no host is
//! reinstalled or lost, and a host that is offline makes the rotation wait (and time out,
//! naming it) rather than lose it.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually, ok, stderr, stdout};

async fn online(cli: &Cli) -> usize {
    cli.hosts()
        .await
        .iter()
        .filter(|h| h["status"] == "online")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_hosts_move_to_a_new_ca_and_none_is_lost() {
    const HOSTS: usize = 20;
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let names: Vec<String> = (0..HOSTS).map(|n| format!("fleet-{n:02}")).collect();
    let daemons: Vec<Daemon> =
        join_all(names.iter().map(|name| cp.add_online_host(&cli, name))).await;
    let old_pin = cp.pin.clone();
    for daemon in &daemons {
        assert_eq!(daemon.trusted_ca_pins(), vec![old_pin.clone()]);
    }

    // a command that keeps running across the rotation, fed through its stdin
    let mut exec = cli
        .command(&["exec", "fleet-00", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut exec_in = exec.stdin.take().unwrap();
    exec_in.write_all(b"before\n").await.unwrap();

    let rotated = cp.run_admin(&["ca", "rotate", "--timeout", "3m"]).await;
    let printed = ok(&rotated, "ca rotate");
    assert!(
        printed.contains(&format!("{HOSTS} of {HOSTS} hosts re-issued")),
        "{printed}"
    );
    let new_pin = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("new CA pin:"))
        .expect("the new pin is printed")
        .trim()
        .to_string();
    assert_ne!(new_pin, old_pin);
    assert!(printed.contains("zpanel login"), "{printed}");

    // the CLI pinned the old CA: it has to log in again with the new pin
    let stale = cli.run(&["hosts"]).await;
    assert!(!stale.status.success(), "the old pin still works");
    cp.pin = new_pin.clone();
    let cli = cp.admin_cli().await;

    let hosts = cli.hosts().await;
    assert_eq!(hosts.len(), HOSTS);
    for host in &hosts {
        assert_eq!(host["status"], "online", "{host}");
        assert_eq!(host["cert_ca_pin"], new_pin.as_str(), "{host}");
    }
    // every host ends up trusting the new CA only (told to renew once more at retirement)
    for daemon in &daemons {
        assert_eventually!(
            daemon.trusted_ca_pins() == vec![new_pin.clone()],
            Duration::from_secs(60),
            "{} still trusts {:?}:\n{}",
            daemon.name,
            daemon.trusted_ca_pins(),
            daemon.log()
        );
    }

    // the command started before the rotation is still served
    exec_in.write_all(b"after\n").await.unwrap();
    drop(exec_in);
    let mut out = String::new();
    exec.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let status = exec.wait().await.unwrap();
    assert!(status.success(), "the exec across the rotation failed");
    assert_eq!(out, "before\nafter\n");

    let status = ok(&cp.run_admin(&["ca", "status"]).await, "ca status");
    assert!(status.contains("no CA rotation in progress"), "{status}");
    assert!(status.contains(&new_pin), "{status}");
    assert_eq!(
        ok(&cp.run_admin(&["ca-pin"]).await, "ca-pin").trim(),
        new_pin
    );
    let audit = ok(
        &cli.run(&["audit", "--json", "--limit", "1000"]).await,
        "audit",
    );
    assert!(audit.contains("ca.rotate") && audit.contains("ca.retire"));

    // join tokens carry the new pin, and a new host enrols with it
    let token: serde_json::Value = serde_json::from_str(&ok(
        &cli.run(&["tokens", "create", "--json"]).await,
        "tokens create",
    ))
    .unwrap();
    assert_eq!(token["ca_pin"], new_pin.as_str());
    let late = cp.add_online_host(&cli, "late").await;
    assert_eq!(late.trusted_ca_pins(), vec![new_pin.clone()]);

    // after a restart every host comes back under the new CA
    cp.restart().await;
    let cli = cp.admin_cli().await;
    assert_eventually!(
        online(&cli).await == HOSTS + 1,
        Duration::from_secs(60),
        "not every host came back after the restart: {} online",
        online(&cli).await
    );
    let out = cli.run(&["exec", "fleet-07", "--", "echo", "hi"]).await;
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_host_holds_the_rotation_until_it_returns() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _awake = cp.add_online_host(&cli, "awake").await;
    let mut sleeper = cp.add_online_host(&cli, "sleeper").await;
    sleeper.kill().await;
    assert_eventually!(
        cli.host_status("sleeper").await.as_deref() == Some("offline"),
        Duration::from_secs(10),
        "the killed host is still online"
    );

    let out = cp.run_admin(&["ca", "rotate", "--timeout", "5s"]).await;
    assert!(!out.status.success(), "the rotation went on without a host");
    let said = stderr(&out);
    assert!(
        said.contains("sleeper") && !said.contains("awake"),
        "{said}"
    );
    assert!(said.contains("--force"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(
        stdout(&out).contains("1 of 2 hosts re-issued"),
        "{}",
        stdout(&out)
    );

    let status = ok(&cp.run_admin(&["ca", "status"]).await, "ca status");
    assert!(status.contains("phase overlap"), "{status}");
    assert!(status.contains("still on the old CA: sleeper"), "{status}");
    // the old CA still serves: the CLI keeps working during the overlap
    assert_eq!(cli.host_status("awake").await.as_deref(), Some("online"));

    // back online during the overlap, the host renews at once; running the command again
    // finishes the rotation
    let sleeper = sleeper.start().await;
    let out = cp.run_admin(&["ca", "rotate", "--timeout", "1m"]).await;
    let printed = ok(&out, "ca rotate (resumed)");
    assert!(printed.contains("resuming"), "{printed}");
    assert!(printed.contains("2 of 2 hosts re-issued"), "{printed}");
    let new_pin = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("new CA pin:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eventually!(
        sleeper.trusted_ca_pins() == vec![new_pin.clone()],
        Duration::from_secs(60),
        "the returning host does not trust the new CA only:\n{}",
        sleeper.log()
    );
}

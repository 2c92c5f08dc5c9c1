//! `zpanel hosts upgrade`: the control plane's daemon binary sent over the session. On a real
//! systemd host (a Debian booted with systemd-nspawn, the daemon installed as the
//! `zpanel-bridge` service): a working binary is swapped in and runs, and one that never
//! connects is rolled back by the guard. A daemon started by hand (not under systemd) is not
//! upgraded, and one that runs the control plane's binary already is up to date.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use zpanel_tests::nspawn::Machine;
use zpanel_tests::{Cli, ControlPlane, assert_eventually, bin, ok, stderr, stdout};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `dir/zpanel-bridge-linux-ARCH`: what the control plane offers hosts of this architecture.
fn offer(dir: &Path, binary: &[u8]) {
    let path = dir.join(format!("zpanel-bridge-linux-{}", std::env::consts::ARCH));
    std::fs::write(&path, binary).expect("write the offered binary");
}

/// The daemon with bytes appended: it still runs, under another sha256.
fn another_working_daemon() -> Vec<u8> {
    let mut binary = std::fs::read(bin("zpanel-bridge")).expect("read zpanel-bridge");
    binary.extend_from_slice(b"\nzpanel upgrade test\n");
    binary
}

/// The progress lines of `zpanel hosts upgrade --json`, parsed.
fn progress(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The last state reported for `host`, and its detail.
fn last_state(lines: &[serde_json::Value], host: &str) -> (String, String) {
    let last = lines
        .iter()
        .rev()
        .find(|l| l["host"] == host)
        .unwrap_or_else(|| panic!("no progress for {host} in {lines:?}"));
    (
        last["state"].as_str().unwrap().to_string(),
        last["detail"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_not_under_systemd_are_not_upgraded_and_the_same_binary_is_up_to_date() {
    // the control plane offers the daemon it was built with (the one beside it)
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_online_host(&cli, "same").await;
    let listed = cli.host("same").await.expect("the host is listed");
    assert_eq!(listed["upgrade_available"], false);
    assert_eq!(
        listed["daemon_sha256"],
        sha256(&std::fs::read(bin("zpanel-bridge")).unwrap())
    );
    let out = cli.run(&["hosts", "upgrade", "--all", "--json"]).await;
    let lines = progress(&ok(&out, "hosts upgrade --all"));
    assert_eq!(last_state(&lines, "same").0, "up_to_date");

    // another binary on offer: a daemon started by hand cannot be restarted into it
    let downloads = tempfile::tempdir().unwrap();
    offer(downloads.path(), &another_working_daemon());
    let dir = downloads.path().to_str().unwrap();
    let cp = ControlPlane::start_with(&["--downloads-dir", dir]).await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, "by-hand").await;
    assert_eq!(
        cli.host("by-hand").await.expect("the host is listed")["upgrade_available"],
        false
    );
    let out = cli.run(&["hosts", "upgrade", "by-hand", "--json"]).await;
    assert!(!out.status.success(), "the upgrade succeeded");
    let (state, detail) = last_state(&progress(&stdout(&out)), "by-hand");
    assert_eq!(
        (state.as_str(), detail.as_str()),
        (
            "unsupported",
            "the daemon does not run under systemd; upgrade it with install.sh"
        )
    );
    assert_eq!(
        stderr(&out).trim(),
        "zpanel: 1 of 1 host not upgraded: by-hand (unsupported)"
    );
    // with --all such hosts are skipped, not failures
    let out = cli.run(&["hosts", "upgrade", "--all"]).await;
    assert!(
        ok(&out, "hosts upgrade --all").contains("by-hand: unsupported"),
        "{}",
        stdout(&out)
    );
    // the daemon refuses too, should a control plane ask anyway: it keeps running
    let out = cli
        .run(&["exec", "by-hand", "--", "echo", "still here"])
        .await;
    assert_eq!(ok(&out, "exec"), "still here\n");
    assert!(!daemon.log().contains("upgrade swapped in"));

    // an operator may not upgrade (admins only), and the refusal is audited
    ok(
        &cli.run(&["users", "add", "op", "--role", "operator"]).await,
        "users add",
    );
    let created = ok(
        &cli.run(&[
            "api-tokens",
            "create",
            "--user",
            "op",
            "--role",
            "operator",
            "--json",
        ])
        .await,
        "api-tokens create",
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let operator = Cli::new();
    let login = [
        "login",
        "--server",
        &cp.url,
        "--token",
        created["token"].as_str().unwrap(),
        "--ca-pin",
        &cp.pin,
    ];
    ok(&operator.run(&login).await, "operator login");
    let out = operator.run(&["hosts", "upgrade", "by-hand"]).await;
    assert_eq!(
        (out.status.success(), stderr(&out).trim()),
        (
            false,
            "zpanel: role operator may not upgrade hosts' daemons"
        )
    );
    let out = operator.run(&["hosts", "upgrade", "--all"]).await;
    assert!(!out.status.success(), "{}", stdout(&out));

    // the audit log has each host's outcome and the refusals
    let audit = ok(&cli.run(&["audit", "--json"]).await, "audit");
    assert!(audit.contains("host.upgrade"), "{audit}");
    assert!(audit.contains("may not upgrade hosts' daemons"), "{audit}");
}

/// Installs the daemon as the `zpanel-bridge` service (the unit in `systemd/`), enrolled as
/// `name`, the way install.sh lays it out.
async fn install(machine: &Machine, cp: &ControlPlane, cli: &Cli, name: &str) {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/zpanel-bridge.service");
    machine
        .copy_in(&bin("zpanel-bridge"), "/usr/local/bin/zpanel-bridge", 0o755)
        .unwrap();
    machine
        .copy_in(&unit, "/etc/systemd/system/zpanel-bridge.service", 0o644)
        .unwrap();
    let token = cli.join_token(1).await;
    machine
        .run(&format!(
            "zpanel-bridge join --server {} --ca-pin {} --name {name} --token {token} \
             --config-dir /etc/zpanel",
            cp.url, cp.pin
        ))
        .await;
    machine
        .run("systemctl daemon-reload && systemctl enable --now zpanel-bridge")
        .await;
    assert_eventually!(
        cli.host_status(name).await.as_deref() == Some("online"),
        Duration::from_secs(60),
        "{name} never came online:\n{}",
        machine
            .run("journalctl -u zpanel-bridge --no-pager | tail -30")
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_runs_the_new_binary_and_one_that_never_connects_is_rolled_back() {
    let machine = Machine::boot().await.expect("boot the test host");
    let downloads = tempfile::tempdir().unwrap();
    let newer = another_working_daemon();
    offer(downloads.path(), &newer);
    let dir = downloads.path().to_str().unwrap();
    let cp = ControlPlane::start_on(&machine.host_ip(), &["--downloads-dir", dir]).await;
    let cli = cp.admin_cli().await;
    install(&machine, &cp, &cli, "vps").await;
    let journal = || async {
        machine
            .run("journalctl -u zpanel-bridge -u 'zpanel-bridge-rollback-*' --no-pager | tail -40")
            .await
    };
    let original = sha256(&std::fs::read(bin("zpanel-bridge")).unwrap());
    let listed = cli.host("vps").await.expect("the host is listed");
    assert_eq!(listed["daemon_sha256"], original);
    assert_eq!(listed["upgrade_available"], true);
    let table = ok(&cli.run(&["hosts"]).await, "hosts");
    assert!(table.contains("online, update available"), "{table}");

    // (a) a working binary: swapped in, restarted, committed
    let out = cli.run(&["hosts", "upgrade", "vps", "--json"]).await;
    let lines = progress(&stdout(&out));
    assert!(
        out.status.success(),
        "upgrade failed: {}{lines:?}\n{}",
        stderr(&out),
        journal().await
    );
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["sending", "restarting", "upgraded"]);
    assert_eq!(lines[2]["from_sha256"], original);
    assert_eq!(lines[2]["to_sha256"], sha256(&newer));
    assert_eq!(
        machine.read_file("/usr/local/bin/zpanel-bridge").unwrap(),
        newer
    );
    let listed = cli.host("vps").await.expect("the host is listed");
    assert_eq!(listed["daemon_sha256"], sha256(&newer));
    assert_eq!(listed["upgrade_available"], false);
    // the commit removes the marker and the previous binary
    assert_eventually!(
        !machine.exists("/etc/zpanel/upgrade.json")
            && !machine.exists("/usr/local/bin/zpanel-bridge.previous"),
        Duration::from_secs(30),
        "the upgrade was not committed:\n{}",
        journal().await
    );
    assert_serving(&machine, &cli, "the upgrade").await;
    // nothing left of the transfer beside the binary
    let left = machine.run("ls -A /usr/local/bin").await;
    assert_eq!(left.trim(), "zpanel-bridge");

    // (b) a binary that passes the check but never opens a session: rolled back
    let broken = b"#!/bin/sh\n# answers the check, then never connects\n\
                   if [ \"$1\" = --version ]; then echo 'zpanel-bridge 0.0.0'; exit 0; fi\n\
                   exec sleep 100000\n";
    offer(downloads.path(), broken);
    let out = cli
        .run(&[
            "hosts",
            "upgrade",
            "vps",
            "--rollback-after",
            "20s",
            "--json",
        ])
        .await;
    let lines = progress(&stdout(&out));
    let (state, detail) = last_state(&lines, "vps");
    assert_eq!(state, "rolled_back", "{lines:?}\n{}", journal().await);
    assert!(detail.contains("no session within 20 s"), "{detail}");
    assert_eq!(
        stderr(&out).trim(),
        "zpanel: 1 of 1 host not upgraded: vps (rolled_back)"
    );
    assert_eq!(
        machine.read_file("/usr/local/bin/zpanel-bridge").unwrap(),
        newer,
        "the binary before the failed upgrade is not back"
    );
    assert_eq!(
        cli.host("vps").await.expect("the host is listed")["daemon_sha256"],
        sha256(&newer)
    );
    assert!(!machine.exists("/etc/zpanel/upgrade.json"));
    assert_serving(&machine, &cli, "the rollback").await;
    // the daemon logged the rollback the guard recorded, and forgot it
    assert_eventually!(
        journal().await.contains("an upgrade was rolled back")
            && !machine.exists("/etc/zpanel/upgrade-result.json"),
        Duration::from_secs(30),
        "the rollback was not logged:\n{}",
        journal().await
    );
}

/// The daemon's unit is active and the host runs commands, after `what`.
async fn assert_serving(machine: &Machine, cli: &Cli, what: &str) {
    assert_eq!(
        machine
            .run("systemctl is-active zpanel-bridge")
            .await
            .trim(),
        "active",
        "the unit is not active after {what}"
    );
    let out = cli.run(&["exec", "vps", "--", "echo", "serving"]).await;
    assert_eq!(ok(&out, &format!("exec after {what}")), "serving\n");
}

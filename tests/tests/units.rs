//! The systemd units in `systemd/`: `systemd-analyze verify` finds nothing wrong with them
//! (and does find a broken one), and on a booted Debian both run as written, hardening
//! included: the control plane under its dynamic user answers once systemd has its READY=1,
//! a bridge daemon enrolled with it comes online, and both keep pinging the watchdog.

use std::path::Path;
use std::time::Duration;

use zpanel_tests::assert_eventually;
use zpanel_tests::nspawn::Machine;

const UNITS: [(&str, &str); 2] = [
    ("zpanel-bridge.service", "zpanel-bridge"),
    ("zpanel-cp.service", "zpanel-cp"),
];

fn unit_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze verify` on a unit whose binary is the one the workspace built: what it
/// complains about (it exits 0 on unknown keys and bad values, printing a warning), empty
/// when the unit is right.
fn verify(name: &str, text: &str, binary: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let built = zpanel_tests::bin(binary);
    let text = text.replace(
        &format!("/usr/local/bin/{binary} "),
        &format!("{} ", built.display()),
    );
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let mut complaints = String::from_utf8_lossy(&out.stderr).to_string();
    complaints.push_str(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        complaints.push_str(&format!("\nexit status {}", out.status));
    }
    complaints.trim().to_string()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    for (name, binary) in UNITS {
        let complaints = verify(name, &unit_text(name), binary);
        assert_eq!(complaints, "", "{name}");
    }
}

#[test]
fn verify_finds_a_broken_unit() {
    let text = unit_text("zpanel-bridge.service");
    for (broken, what) in [
        (
            text.replace("Restart=always", "Restart=alwayz"),
            "a bad value",
        ),
        (
            text.replace("WatchdogSec=", "WatchdogSecs="),
            "an unknown key",
        ),
        (
            text.replace(
                "/usr/local/bin/zpanel-bridge ",
                "/usr/local/bin/zpanel-missing ",
            ),
            "a missing binary",
        ),
    ] {
        assert_ne!(
            verify("zpanel-bridge.service", &broken, "zpanel-bridge"),
            "",
            "{what} passed verification"
        );
    }
}

#[tokio::test]
async fn both_units_run_hardened_under_systemd() {
    let machine = Machine::boot().await.expect("machine boots");
    for binary in ["zpanel-cp", "zpanel-bridge", "zpanel"] {
        machine
            .copy_in(
                &zpanel_tests::bin(binary),
                &format!("/usr/local/bin/{binary}"),
                0o755,
            )
            .unwrap();
    }
    for (name, _) in UNITS {
        machine
            .write_file(
                &format!("/etc/systemd/system/{name}"),
                unit_text(name).as_bytes(),
                0o644,
            )
            .unwrap();
        // A short watchdog, so pings are seen soon.
        machine
            .write_file(
                &format!("/etc/systemd/system/{name}.d/watchdog.conf"),
                b"[Service]\nWatchdogSec=4s\n",
                0o644,
            )
            .unwrap();
    }
    machine
        .write_file(
            "/etc/default/zpanel-cp",
            b"ZPANEL_LISTEN=127.0.0.1:8443\nZPANEL_BRIDGE_LISTEN=127.0.0.1:8444\n",
            0o644,
        )
        .unwrap();

    // `systemctl start` of a Type=notify unit returns once the program said READY=1.
    machine
        .run("systemctl daemon-reload && systemctl start zpanel-cp")
        .await;
    let show = |unit: &str, property: &str| {
        let command = format!("systemctl show -p {property} --value {unit}");
        let machine = &machine;
        async move { machine.run(&command).await.trim().to_string() }
    };
    assert_eq!(show("zpanel-cp", "ActiveState").await, "active");
    assert!(
        show("zpanel-cp", "StatusText")
            .await
            .starts_with("serving https://127.0.0.1:8443"),
        "{}",
        show("zpanel-cp", "StatusText").await
    );
    assert_eq!(
        machine
            .run("curl -fsSk https://127.0.0.1:8443/healthz")
            .await,
        "ok\n"
    );
    // Its own unprivileged user, its data in the state directory, not root.
    let user = machine
        .run("stat -c %U /proc/$(systemctl show -p MainPID --value zpanel-cp)")
        .await;
    assert_ne!(user.trim(), "root");
    assert!(machine.exists("/var/lib/private/zpanel/zpanel.db"));

    // A bridge daemon enrolled with it, under its unit: online, its status line says so.
    let pin = machine
        .run("zpanel-cp ca-pin --data-dir /var/lib/private/zpanel")
        .await;
    let pin = pin.trim();
    machine
        .run(&format!(
            "zpanel login --server https://127.0.0.1:8443 --token-file /var/lib/private/zpanel/admin-token --ca-pin {pin} >/dev/null"
        ))
        .await;
    let created = machine.run("zpanel tokens create --json").await;
    let created: serde_json::Value = serde_json::from_str(&created).expect("json");
    let token = created["token"].as_str().expect("token");
    machine
        .run(&format!(
            "echo {token} | zpanel-bridge join --server https://127.0.0.1:8443 --token-file - --ca-pin {pin} --name unit-host --config-dir /etc/zpanel >/dev/null"
        ))
        .await;
    machine.run("systemctl start zpanel-bridge").await;
    assert_eventually!(
        show("zpanel-bridge", "StatusText")
            .await
            .starts_with("connected to wss://127.0.0.1:8444"),
        Duration::from_secs(60),
        "the daemon never said it was connected: {}",
        show("zpanel-bridge", "StatusText").await
    );
    assert_eventually!(
        machine.run("zpanel hosts").await.contains("online"),
        Duration::from_secs(60),
        "the host never came online"
    );

    // Both keep pinging the watchdog (its timestamp moves) and are never restarted for it.
    for unit in ["zpanel-cp", "zpanel-bridge"] {
        let first = show(unit, "WatchdogTimestampMonotonic").await;
        assert_eventually!(
            show(unit, "WatchdogTimestampMonotonic").await != first,
            Duration::from_secs(60),
            "{unit} does not ping the watchdog"
        );
        assert_eq!(show(unit, "NRestarts").await, "0", "{unit} was restarted");
        assert_eq!(show(unit, "ActiveState").await, "active", "{unit}");
    }
}

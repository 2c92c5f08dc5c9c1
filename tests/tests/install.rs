//! The one-line install on a real systemd host: a Debian booted with systemd-nspawn in its
//! own network namespace ([`Machine`]), a control plane listening on the veth address, and the
//! command `zpanel tokens create` prints, pasted into the host's shell. The host comes online,
//! survives `systemctl restart` and a reboot, enrols again with a new token, and
//! `--uninstall` leaves nothing behind. Bad input stops the script with one line and
//! nothing installed.

use std::time::Duration;

use sha2::{Digest, Sha256};
use zpanel_tests::nspawn::Machine;
use zpanel_tests::{Cli, ControlPlane, assert_eventually, web};

/// What the script installs (or must not leave behind).
const INSTALLED: [&str; 3] = [
    "/usr/local/bin/zpanel-bridge",
    "/etc/zpanel",
    "/etc/systemd/system/zpanel-bridge.service",
];

/// Pastes a command into the host's shell (bash, as a user's terminal would run it).
async fn paste(machine: &Machine, command: &str) -> (bool, String, String) {
    paste_into(machine, "bash", command).await
}

/// Pastes a command into `shell` (`bash`, `sh`) on the host.
async fn paste_into(machine: &Machine, shell: &str, command: &str) -> (bool, String, String) {
    let out = machine
        .exec_with_stdin(&format!("{shell} -s"), command.as_bytes())
        .await
        .expect("nsenter");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A listing of what the install may touch: paths with type, mode and size (not times), less
/// what systemd and the boot change by themselves.
async fn listing(machine: &Machine) -> String {
    machine
        .run(
            "find /etc /usr/local /var/lib /opt /root /tmp -xdev \
             \\( -path /var/lib/systemd -o -path /var/lib/dpkg -o -path /var/lib/apt \
             -o -path /var/log -o -path /etc/machine-id -o -path /etc/ld.so.cache \
             -o -path '/tmp/systemd-private-*' \\) -prune \
             -o -printf '%p %y %m %s\\n' | sort",
        )
        .await
}

async fn wait_online(cli: &Cli, name: &str, what: &str) {
    assert_eventually!(
        cli.host_status(name).await.as_deref() == Some("online"),
        Duration::from_secs(60),
        "{name} did not come online {what}"
    );
}

async fn daemon_pid(machine: &Machine) -> String {
    machine
        .run("systemctl show -p MainPID --value zpanel-bridge")
        .await
        .trim()
        .to_string()
}

async fn host_id(cli: &Cli, name: &str) -> String {
    cli.host(name)
        .await
        .and_then(|h| h["id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn printed_command_installs_a_host_that_survives_restarts_reboots_and_uninstalls_cleanly() {
    let mut machine = Machine::boot().await.expect("machine boots");
    let cp = ControlPlane::start_on(&machine.host_ip(), &[]).await;
    let cli = cp.admin_cli().await;
    let name = machine.name.clone();
    let before = listing(&machine).await;

    // The command as printed, pasted into the host's shell.
    let first = &cli.create_token(&[]).await;
    let (ok, stdout, stderr) = paste(&machine, &first.install_command).await;
    assert!(ok, "install failed:\n{stdout}\n{stderr}\n{}", cp.log());
    assert!(stdout.contains(&format!("enrolled as {name}")), "{stdout}");
    assert!(stdout.contains("zpanel-bridge is running"), "{stdout}");
    assert!(
        !stdout.contains(&first.token),
        "the token was printed:\n{stdout}"
    );
    for path in INSTALLED {
        assert!(machine.exists(path), "{path} was not installed");
    }
    assert_eq!(
        machine
            .run("systemctl is-enabled zpanel-bridge")
            .await
            .trim(),
        "enabled"
    );
    wait_online(&cli, &name, "after the install").await;
    // READY=1 reached systemd (Type=notify: otherwise the unit would still be activating),
    // and the daemon's status line says it is connected.
    assert_eventually!(
        machine
            .run("systemctl show -p StatusText --value zpanel-bridge")
            .await
            .starts_with("connected to wss://"),
        Duration::from_secs(30),
        "the daemon's status line never said it was connected"
    );
    let first_id = host_id(&cli, &name).await;

    // systemctl restart: a new process, online again.
    let pid = daemon_pid(&machine).await;
    machine.run("systemctl restart zpanel-bridge").await;
    assert_ne!(
        daemon_pid(&machine).await,
        pid,
        "the daemon was not restarted"
    );
    assert_eventually!(
        cli.host_status(&name).await.as_deref() == Some("online")
            && machine
                .run("systemctl is-active zpanel-bridge || true")
                .await
                .trim()
                == "active",
        Duration::from_secs(60),
        "{name} did not come back after systemctl restart"
    );

    // A reboot: the unit is enabled, so the host comes back by itself.
    machine.reboot().await.expect("reboot");
    assert_eq!(machine.boots(), 2);
    assert_eq!(
        machine
            .run("systemctl is-active zpanel-bridge || true")
            .await
            .trim(),
        "active",
        "zpanel-bridge did not start at boot"
    );
    wait_online(&cli, &name, "after a reboot").await;

    // A second token while the host is still in the panel: the machine proves it holds the
    // key of its certificate, so it enrols again as the same host, with a new certificate.
    let cert_before = machine.read_file("/etc/zpanel/cert.pem").unwrap();
    let second = &cli.create_token(&[]).await;
    let (ok, stdout, stderr) = paste(&machine, &second.install_command).await;
    assert!(
        ok,
        "re-run failed:
{stdout}
{stderr}
{}",
        cp.log()
    );
    wait_online(&cli, &name, "after a re-run with a new token").await;
    assert_eq!(
        host_id(&cli, &name).await,
        first_id,
        "the re-run did not keep the host's identity"
    );
    assert_ne!(
        machine.read_file("/etc/zpanel/cert.pem").unwrap(),
        cert_before,
        "the re-run did not issue a new certificate"
    );
    let listed = cli.hosts().await;
    assert_eq!(
        listed.iter().filter(|h| h["name"] == name.as_str()).count(),
        1,
        "the re-run listed the host twice: {listed:?}"
    );

    // Removed from the panel, a third token enrols the machine as a new host.
    let out = cli.run(&["hosts", "rm", &name]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = &cli.create_token(&[]).await;
    let (ok, stdout, stderr) = paste(&machine, &third.install_command).await;
    assert!(ok, "re-install failed:\n{stdout}\n{stderr}");
    wait_online(&cli, &name, "after enrolling again").await;
    let second_id = host_id(&cli, &name).await;
    assert_ne!(
        second_id, first_id,
        "a deleted host came back under its old id"
    );
    let settings =
        String::from_utf8(machine.read_file("/etc/zpanel/bridge.toml").unwrap()).unwrap();
    assert!(settings.contains(&second_id), "{settings}");

    // --uninstall: the service is gone and so is every file the install made.
    let script = format!(
        "f=$(mktemp) && curl -fsSLk -o \"$f\" {}/install.sh && sh \"$f\" --uninstall; s=$?; rm -f \"$f\"; exit $s",
        cp.url
    );
    let (ok, stdout, stderr) = paste(&machine, &script).await;
    assert!(ok, "uninstall failed:\n{stdout}\n{stderr}");
    assert_eventually!(
        cli.host_status(&name).await.as_deref() == Some("offline"),
        Duration::from_secs(60),
        "{name} is still online after --uninstall"
    );
    let unit = machine
        .exec("systemctl status zpanel-bridge")
        .await
        .expect("nsenter");
    assert_eq!(
        unit.status.code(),
        Some(4),
        "the unit is still known to systemd"
    );
    for path in INSTALLED {
        assert!(!machine.exists(path), "{path} is left after --uninstall");
    }
    let after = listing(&machine).await;
    assert_eq!(
        diff(&before, &after),
        "",
        "--uninstall left the host different from before the install"
    );
}

/// Lines only in `a` (-) or only in `b` (+).
fn diff(a: &str, b: &str) -> String {
    let a: std::collections::BTreeSet<&str> = a.lines().collect();
    let b: std::collections::BTreeSet<&str> = b.lines().collect();
    let mut out = String::new();
    for line in a.difference(&b) {
        out.push_str(&format!("- {line}\n"));
    }
    for line in b.difference(&a) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

/// The one line a failed run printed on standard error, checked to be one `zpanel install:`
/// line.
fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("zpanel install: "), "{stderr}");
    lines[0].to_string()
}

/// Runs the served install.sh (fetched to /root/install.sh) with `args`; expects a failure
/// with one line containing `expected`, and nothing installed.
async fn refused(machine: &Machine, args: &str, expected: &str) {
    let out = machine
        .exec(&format!("sh /root/install.sh {args}"))
        .await
        .expect("nsenter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args}: the script succeeded");
    let line = one_line(&stderr);
    assert!(line.contains(expected), "{args}: {line}");
    assert_nothing_installed(machine).await;
}

async fn assert_nothing_installed(machine: &Machine) {
    for path in INSTALLED {
        assert!(!machine.exists(path), "{path} was installed");
    }
    let left = machine.run("ls -A /tmp | grep '^tmp\\.' || true").await;
    assert_eq!(left.trim(), "", "temporary files were left behind");
}

#[tokio::test]
async fn bad_input_stops_with_one_line_and_installs_nothing() {
    let machine = Machine::boot().await.expect("machine boots");
    let cp = ControlPlane::start_on(&machine.host_ip(), &[]).await;
    let cli = cp.admin_cli().await;
    machine
        .run(&format!(
            "curl -fsSk -o /root/install.sh {}/install.sh",
            cp.url
        ))
        .await;
    let pin = &cp.pin;

    // The printed command with another control plane's pin: the CA does not match.
    let valid = &cli.create_token(&[]).await;
    let other_pin = format!("sha256:{}", "ab".repeat(32));
    let (_, _, stderr) = paste(
        &machine,
        &valid.install_command.replace(pin.as_str(), &other_pin),
    )
    .await;
    assert!(
        one_line(&stderr).contains("does not match --ca-pin"),
        "{stderr}"
    );
    assert_nothing_installed(&machine).await;

    // The printed command with a script that is not the one it names: nothing runs.
    let at = valid.install_command.find("echo \"").expect("checksum") + 6;
    let digit = if &valid.install_command[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let tampered = format!(
        "{}{digit}{}",
        &valid.install_command[..at],
        &valid.install_command[at + 1..]
    );
    let (_, _, stderr) = paste(&machine, &tampered).await;
    assert!(
        one_line(&stderr).contains("does not match the sha256 in this command"),
        "{stderr}"
    );
    assert_nothing_installed(&machine).await;

    // A token that expired, and one used up.
    let expired = &cli.create_token(&["--ttl", "1s"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    refused(
        &machine,
        &format!("--token {} --ca-pin {pin}", expired.token),
        "enrolment refused",
    )
    .await;
    let used = cli.join_token(1).await;
    let _spent = zpanel_tests::Daemon::join(&cp, &used, "spends-the-token")
        .await
        .expect("join");
    refused(
        &machine,
        &format!("--token {used} --ca-pin {pin}"),
        "enrolment refused",
    )
    .await;
    // Not a pin at all; no token.
    refused(
        &machine,
        "--token x --ca-pin sha256:12",
        "--ca-pin must look like",
    )
    .await;
    refused(&machine, &format!("--ca-pin {pin}"), "no join token").await;

    // An architecture the daemon is not built for (a uname that says so, first in PATH).
    machine
        .write_file(
            "/usr/local/sbin/uname",
            b"#!/bin/sh\n[ \"$1\" = -m ] && { echo riscv64; exit 0; }\nexec /usr/bin/uname \"$@\"\n",
            0o755,
        )
        .unwrap();
    refused(
        &machine,
        &format!("--token {} --ca-pin {pin}", valid.token),
        "this host is riscv64; zpanel-bridge runs on x86_64 and aarch64 only",
    )
    .await;
    std::fs::remove_file(machine.path("/usr/local/sbin/uname")).unwrap();

    // A download that does not match its checksum: a curl that corrupts the binary on the
    // way (the .sha256 beside it comes through intact).
    machine
        .write_file(
            "/usr/local/bin/curl",
            b"#!/bin/sh\n/usr/bin/curl \"$@\"; s=$?\nout=\"\"; url=\"\"\nwhile [ $# -gt 0 ]; do case $1 in -o) out=$2; shift;; */downloads/zpanel-bridge-linux-*) url=$1;; esac; shift; done\ncase $url in *.sha256) ;; ?*) printf x >>\"$out\";; esac\nexit $s\n",
            0o755,
        )
        .unwrap();
    refused(
        &machine,
        &format!("--token {} --ca-pin {pin}", valid.token),
        "does not match its sha256",
    )
    .await;
    std::fs::remove_file(machine.path("/usr/local/bin/curl")).unwrap();

    // No systemd as init: the same root, entered with chroot instead of booted.
    let chroot = tokio::process::Command::new("chroot")
        .arg(machine.root())
        .args([
            "sh",
            "/root/install.sh",
            "--token",
            &valid.token,
            "--ca-pin",
            pin,
        ])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .await
        .expect("chroot");
    assert!(!chroot.status.success());
    let line = one_line(&String::from_utf8_lossy(&chroot.stderr));
    assert!(line.contains("systemd is not running as init"), "{line}");
    assert_nothing_installed(&machine).await;

    // A control plane with no daemon binary for this architecture: the download fails.
    let empty = tempfile::tempdir().unwrap();
    let bare = ControlPlane::start_on(
        &machine.host_ip(),
        &["--downloads-dir", empty.path().to_str().unwrap()],
    )
    .await;
    let bare_cli = bare.admin_cli().await;
    let bare_token = &bare_cli.create_token(&[]).await;
    let (_, _, stderr) = paste(&machine, &bare_token.install_command).await;
    assert!(
        one_line(&stderr).contains("has no zpanel-bridge for x86_64"),
        "{stderr}"
    );
    assert_nothing_installed(&machine).await;

    // After all that, the valid token still installs the host (pasted into sh this time).
    let (ok, stdout, stderr) = paste_into(&machine, "sh", &valid.install_command).await;
    assert!(ok, "install failed:\n{stdout}\n{stderr}");
    wait_online(&cli, &machine.name, "after the refused attempts").await;
}

#[tokio::test]
async fn install_script_and_binaries_are_served_with_checksums() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let created = &cli.create_token(&[]).await;

    let script = web::request(&cp.url, &cp.pin, "GET", "/install.sh", &[], None)
        .await
        .expect("GET /install.sh");
    assert_eq!(script.status, 200);
    assert!(
        script
            .body
            .contains(&format!("\nZPANEL_URL='{}'\n", cp.url)),
        "the script does not carry the public URL"
    );
    assert!(
        script.body.contains("Type=notify"),
        "the unit is not in the script"
    );
    let sha = hex::encode(Sha256::digest(&script.bytes));
    assert!(
        created
            .install_command
            .contains(&format!("echo \"{sha}  $f\" | sha256sum -c")),
        "the command does not name the served script's sha256 {sha}: {}",
        created.install_command
    );
    assert!(
        created
            .install_command
            .contains(&format!("'{}/install.sh'", cp.url))
    );
    assert!(
        created
            .install_command
            .contains(&format!("--token '{}'", created.token))
    );

    // The daemon binary beside zpanel-cp, with its checksum in sha256sum's form.
    let arch = std::env::consts::ARCH;
    let file = format!("zpanel-bridge-linux-{arch}");
    let binary = web::request(
        &cp.url,
        &cp.pin,
        "GET",
        &format!("/downloads/{file}"),
        &[],
        None,
    )
    .await
    .expect("GET binary");
    assert_eq!(binary.status, 200);
    assert_eq!(
        binary.bytes,
        std::fs::read(zpanel_tests::bin("zpanel-bridge")).unwrap()
    );
    let checksum = web::request(
        &cp.url,
        &cp.pin,
        "GET",
        &format!("/downloads/{file}.sha256"),
        &[],
        None,
    )
    .await
    .expect("GET sha256");
    assert_eq!(
        checksum.body,
        format!("{}  {file}\n", hex::encode(Sha256::digest(&binary.bytes)))
    );
    // Nothing else: no listing, no other names, no way out of the directory.
    for path in [
        "/downloads",
        "/downloads/",
        "/downloads/zpanel-cp",
        "/downloads/zpanel-bridge-linux-riscv64",
        "/downloads/zpanel-bridge-linux-..%2Fzpanel-cp",
        "/downloads/zpanel-bridge-linux-x86_64/x",
    ] {
        let response = web::request(&cp.url, &cp.pin, "GET", path, &[], None)
            .await
            .expect("GET");
        // Paths outside the one route are the web UI's pages (it routes in the browser):
        // never a file, never a listing.
        assert_ne!(response.bytes, binary.bytes, "{path} served the binary");
        assert!(
            !response.body.contains("zpanel-bridge-linux-"),
            "{path} lists files"
        );
        if path.starts_with("/downloads/zpanel-") && !path.ends_with("/x") {
            assert_eq!(response.status, 404, "{path}");
        }
    }
}

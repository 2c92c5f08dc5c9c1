//! The lifecycle section: what installing, upgrading, re-keying and cutting off hosts take.
//!
//! - **install**: the command `zpanel tokens create` prints, pasted into the shell of a booted
//!   Debian (systemd-nspawn, [`nspawn::Machine`]) until the host is listed online; uninstalled
//!   and deleted from the panel between runs;
//! - **upgrade**: `zpanel hosts upgrade HOST` on that host until it reports `upgraded`, against
//!   the way it is done without Zpanel: `scp` the binary, then `ssh HOST 'install ... &&
//!   systemctl restart zpanel-bridge'` until the host is online on the new binary (an sshd
//!   copied from this machine into the container);
//! - **CA rotation**: `zpanel-cp ca rotate` with 20 loopback hosts online;
//! - **revocation**: `zpanel hosts revoke` until the host's session ended (its daemon's log).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use zpanel_tests::nspawn;
use zpanel_tests::{Cli, ControlPlane, Daemon, bin};

use super::{Report, SFTP_SERVER, SSHD, Stats, quiet, ratio, succeeded};

/// The lifecycle section's options (flattened into the bench's).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed installs on a booted Debian (systemd-nspawn); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub install_runs: usize,
    /// Timed upgrades per peer (`zpanel hosts upgrade`, scp + ssh), interleaved; the median
    /// is reported.
    #[arg(long, default_value_t = 3)]
    pub upgrade_runs: usize,
    /// Hosts online (loopback daemons) while the CA is rotated.
    #[arg(long, default_value_t = 20)]
    pub rotation_hosts: usize,
    /// Timed CA rotations (one after the other, on the same control plane and hosts).
    #[arg(long, default_value_t = 3)]
    pub rotation_runs: usize,
    /// Timed revocations (a new host each).
    #[arg(long, default_value_t = 5)]
    pub revoke_runs: usize,
    /// Leave out install and upgrade (they need root, debootstrap and systemd-container).
    #[arg(long)]
    pub skip_nspawn: bool,
    /// Leave out the lifecycle benchmark.
    #[arg(long)]
    pub skip_lifecycle: bool,
}

/// How long any one step may take before the bench gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// How often a condition is polled (each poll of a host's status runs the CLI once).
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Where the peer's sshd keeps its keys and configuration inside the container.
const SSH_DIR: &str = "/etc/zpanel-bench-ssh";

pub async fn run(args: &Args, skip_ssh: bool) -> anyhow::Result<Report> {
    ensure!(
        args.install_runs > 0
            && args.upgrade_runs > 0
            && args.rotation_runs > 0
            && args.revoke_runs > 0
            && args.rotation_hosts > 0,
        "--install-runs, --upgrade-runs, --rotation-runs, --revoke-runs and --rotation-hosts \
         must be at least 1 (or pass --skip-lifecycle)"
    );
    let mut report = Report::default();
    if args.skip_nspawn {
        report
            .notes
            .push("Install and upgrade left out (--skip-nspawn).".into());
    } else {
        install_and_upgrade(args, skip_ssh, &mut report)
            .await
            .context(
                "install and upgrade on a systemd-nspawn host (--skip-nspawn leaves them out)",
            )?;
    }
    rotation(args, &mut report).await.context("CA rotation")?;
    revocation(args, &mut report).await.context("revocation")?;
    Ok(report)
}

// === install and upgrade ===

async fn install_and_upgrade(
    args: &Args,
    skip_ssh: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    println!("lifecycle: booting a Debian host with systemd-nspawn");
    let machine = nspawn::Machine::boot().await?;
    // The control plane offers the daemon from a directory of its own, so the upgrade can
    // offer another binary later.
    let downloads = tempfile::Builder::new()
        .prefix("zpanel-bench-downloads-")
        .tempdir()?;
    let offered = downloads
        .path()
        .join(format!("zpanel-bridge-linux-{}", std::env::consts::ARCH));
    let original = std::fs::read(bin("zpanel-bridge")).context("read zpanel-bridge")?;
    std::fs::write(&offered, &original)?;
    let dir = downloads.path().to_str().context("utf-8 path")?;
    let cp = ControlPlane::start_on(&machine.host_ip(), &["--downloads-dir", dir]).await;
    let cli = cp.admin_cli().await;
    let name = machine.name.clone();

    // --- install ---
    let (mut online, mut scripts) = (Vec::new(), Vec::new());
    for run in 0..args.install_runs {
        if run > 0 {
            uninstall(&machine, &cp, &cli, &name).await?;
        }
        let command = cli.create_token(&[]).await.install_command;
        let started = Instant::now();
        let out = machine
            .exec_with_stdin("bash -s", command.as_bytes())
            .await?;
        let script = started.elapsed();
        succeeded("the install command", &out)?;
        poll(&format!("{name} online after the install"), || async {
            cli.host_status(&name).await.as_deref() == Some("online")
        })
        .await?;
        let took = started.elapsed();
        println!(
            "lifecycle: install {}: script {:.2} s, online after {:.2} s",
            run + 1,
            script.as_secs_f64(),
            took.as_secs_f64()
        );
        scripts.push(script);
        online.push(took);
    }
    let runs = args.install_runs;
    report.row(
        &format!("install: printed command pasted to host online, median of {runs}"),
        secs(Stats::of(&online).median),
        None,
        None,
        "(information)",
        None,
    );
    report.row(
        &format!("install: the script's own wall time, median of {runs}"),
        secs(Stats::of(&scripts).median),
        None,
        None,
        "(information)",
        None,
    );
    report.notes.push(format!(
        "Install runs (s, pasted to online; the script alone): {}; {}.",
        list_secs(&online),
        list_secs(&scripts)
    ));

    // --- upgrade, against scp + ssh ---
    let mut appended = original.clone();
    appended.extend_from_slice(b"\nzpanel-bench upgrade\n");
    let sshd = if skip_ssh {
        None
    } else {
        Some(ContainerSshd::start(&machine).await.context(
            "starting sshd in the container for the upgrade's peer (--skip-ssh leaves it out)",
        )?)
    };
    let peer_file = tempfile::Builder::new()
        .prefix("zpanel-bench-push-")
        .tempfile()?;
    let (mut zpanel, mut zpanel_sent, mut ssh, mut ssh_copied) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.upgrade_runs {
        // zpanel: to whichever binary the host does not run
        let binary = other_binary(&cli, &name, &original, &appended).await;
        std::fs::write(&offered, binary)?;
        committed(&machine).await?;
        let (lines, took) = timed_lines(
            "zpanel hosts upgrade",
            cli.command(&["hosts", "upgrade", &name, "--json"]),
        )
        .await?;
        ensure!(
            daemon_sha256(&cli, &name).await == sha256(binary),
            "the host does not run the new binary after `zpanel hosts upgrade`: {lines:?}"
        );
        // `restarting`: the host has the whole binary, checked and swapped in.
        let sent = lines
            .iter()
            .find(|(_, line)| {
                serde_json::from_str::<serde_json::Value>(line)
                    .is_ok_and(|progress| progress["state"] == "restarting")
            })
            .map(|(at, _)| *at)
            .with_context(|| format!("no `restarting` state reported: {lines:?}"))?;
        zpanel.push(took);
        zpanel_sent.push(sent);
        println!(
            "lifecycle: upgrade {} (zpanel): {:.2} s, restarting after {:.2} s",
            run + 1,
            took.as_secs_f64(),
            sent.as_secs_f64()
        );

        // ssh: the other binary pushed back over OpenSSH
        let Some(sshd) = &sshd else { continue };
        let binary = other_binary(&cli, &name, &original, &appended).await;
        std::fs::write(peer_file.path(), binary)?;
        committed(&machine).await?;
        let want = sha256(binary);
        let started = Instant::now();
        let copied = sshd.push(peer_file.path()).await?;
        poll(&format!("{name} online on the pushed binary"), || async {
            let host = cli.host(&name).await.unwrap_or_default();
            host["status"] == "online" && host["daemon_sha256"] == want.as_str()
        })
        .await?;
        let took = started.elapsed();
        ssh.push(took);
        ssh_copied.push(copied);
        println!(
            "lifecycle: upgrade {} (scp + ssh): {:.2} s, scp {:.2} s",
            run + 1,
            took.as_secs_f64(),
            copied.as_secs_f64()
        );
    }
    let zpanel_median = Stats::of(&zpanel).median.as_secs_f64();
    let peer = (!ssh.is_empty()).then(|| Stats::of(&ssh).median.as_secs_f64());
    report.row(
        &format!(
            "upgrade: `zpanel hosts upgrade HOST` to `upgraded` ({} MiB binary), median of {}",
            original.len() >> 20,
            args.upgrade_runs
        ),
        format!("{zpanel_median:.2} s"),
        peer.map(|p| {
            format!("{p:.2} s (scp, then ssh install && systemctl restart, until online)")
        }),
        peer.map(|p| ratio(zpanel_median, p)),
        "(information)",
        None,
    );
    report.row(
        "upgrade: of which the binary sent, checked and swapped in (`restarting` reported; scp alone for the peer)",
        secs(Stats::of(&zpanel_sent).median),
        (!ssh_copied.is_empty()).then(|| format!("{} (scp)", secs(Stats::of(&ssh_copied).median))),
        (!ssh_copied.is_empty()).then(|| {
            ratio(
                Stats::of(&zpanel_sent).median.as_secs_f64(),
                Stats::of(&ssh_copied).median.as_secs_f64(),
            )
        }),
        "(information)",
        None,
    );
    report.notes.push(format!(
        "Upgrade runs (s, interleaved): zpanel {} (restarting after {}){}.",
        list_secs(&zpanel),
        list_secs(&zpanel_sent),
        if ssh.is_empty() {
            String::new()
        } else {
            format!(
                "; scp + ssh {} (scp {})",
                list_secs(&ssh),
                list_secs(&ssh_copied)
            )
        }
    ));
    if let Some(sshd) = sshd {
        sshd.stop(&machine).await;
    }
    Ok(())
}

/// `install.sh --uninstall` (fetched from the control plane, as the docs say), then the host
/// deleted from the panel so the next install enrols it anew under the same name.
async fn uninstall(
    machine: &nspawn::Machine,
    cp: &ControlPlane,
    cli: &Cli,
    name: &str,
) -> anyhow::Result<()> {
    let script = format!(
        "f=$(mktemp) && curl -fsSLk -o \"$f\" {}/install.sh && sh \"$f\" --uninstall; s=$?; rm -f \"$f\"; exit $s",
        cp.url
    );
    let out = machine
        .exec_with_stdin("bash -s", script.as_bytes())
        .await?;
    succeeded("install.sh --uninstall", &out)?;
    poll(&format!("{name} deleted from the panel"), || async {
        let _ = cli.run(&["hosts", "rm", name]).await;
        cli.host_status(name).await.is_none()
    })
    .await
}

/// Waits until the last upgrade is committed (its marker gone): another upgrade is refused
/// while one is pending, and the peer should not race the commit either.
async fn committed(machine: &nspawn::Machine) -> anyhow::Result<()> {
    poll("the last upgrade committed", || async {
        !machine.exists("/etc/zpanel/upgrade.json")
    })
    .await
}

/// Of the two binaries, the one `name` does not run.
async fn other_binary<'a>(
    cli: &Cli,
    name: &str,
    original: &'a [u8],
    appended: &'a [u8],
) -> &'a [u8] {
    if daemon_sha256(cli, name).await == sha256(original) {
        appended
    } else {
        original
    }
}

async fn daemon_sha256(cli: &Cli, name: &str) -> String {
    cli.host(name).await.unwrap_or_default()["daemon_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// This machine's sshd and sftp-server run inside the container (the Debian root has no
/// OpenSSH; both are bookworm, so the binaries fit), as a transient unit on the container's
/// address, with root logging in by key.
struct ContainerSshd {
    keys: tempfile::TempDir,
    ip: String,
}

impl ContainerSshd {
    async fn start(machine: &nspawn::Machine) -> anyhow::Result<ContainerSshd> {
        ensure!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install -y openssh-server"
        );
        for program in [SSHD, SFTP_SERVER] {
            machine.copy_in(Path::new(program), program, 0o755)?;
            for library in missing_libraries(machine, program).await? {
                let inside = library.to_str().context("utf-8 path")?;
                machine.copy_in(&library, inside, 0o644)?;
            }
        }
        let keys = tempfile::Builder::new()
            .prefix("zpanel-bench-ssh-")
            .tempdir()?;
        super::ssh_keys(keys.path()).await?;
        let ip = machine.container_ip();
        machine.copy_in(
            &keys.path().join("host_key"),
            &format!("{SSH_DIR}/host_key"),
            0o600,
        )?;
        machine.copy_in(
            &keys.path().join("client_key.pub"),
            &format!("{SSH_DIR}/authorized_keys"),
            0o600,
        )?;
        let config = format!(
            "Port 22\nListenAddress {ip}\nHostKey {SSH_DIR}/host_key\n\
             AuthorizedKeysFile {SSH_DIR}/authorized_keys\nPidFile /run/zpanel-bench-sshd.pid\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\n\
             Subsystem sftp {SFTP_SERVER}\n"
        );
        machine.write_file(&format!("{SSH_DIR}/sshd_config"), config.as_bytes(), 0o644)?;
        let out = machine
            .exec(&format!(
                "(id sshd >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /run/sshd \
                 --shell /usr/sbin/nologin sshd) && mkdir -p -m 0755 /run/sshd && \
                 systemd-run --quiet --unit=zpanel-bench-sshd --collect {SSHD} -D -e -f {SSH_DIR}/sshd_config"
            ))
            .await?;
        succeeded("starting sshd in the container", &out)?;
        let sshd = ContainerSshd { keys, ip };
        if let Err(e) = super::ssh_ready(|| sshd.ssh(&["true"])).await {
            let log = machine
                .exec("journalctl -u zpanel-bench-sshd --no-pager | tail -5")
                .await
                .map(|out| String::from_utf8_lossy(&out.stdout).to_string())
                .unwrap_or_default();
            bail!(
                "ssh to the container's sshd fails: {e:#}; its log: {}",
                log.trim()
            );
        }
        Ok(sshd)
    }

    fn options(&self, port_flag: &str) -> Vec<String> {
        super::ssh_client_args(&self.keys.path().join("client_key"), port_flag, 22)
    }

    fn ssh(&self, remote: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(self.options("-p"))
            .arg(format!("root@{}", self.ip))
            .args(remote);
        command
    }

    /// The binary copied with scp, then installed over the daemon's and the service
    /// restarted over ssh: two connections, as done by hand or by a script.
    /// Answers how long scp took.
    async fn push(&self, binary: &Path) -> anyhow::Result<Duration> {
        let mut scp = Command::new("scp");
        scp.args(self.options("-P"))
            .arg(binary)
            .arg(format!("root@{}:/tmp/zpanel-bridge.new", self.ip));
        let copied = super::timed_within(scp, STEP_LIMIT).await.context("scp")?;
        super::timed_within(
            self.ssh(&[
                "install -m 0755 /tmp/zpanel-bridge.new /usr/local/bin/zpanel-bridge \
                 && rm -f /tmp/zpanel-bridge.new && systemctl restart zpanel-bridge",
            ]),
            STEP_LIMIT,
        )
        .await
        .context("ssh install && systemctl restart")?;
        Ok(copied)
    }

    async fn stop(self, machine: &nspawn::Machine) {
        let _ = machine.exec("systemctl stop zpanel-bench-sshd").await;
    }
}

/// The shared libraries `program` needs (as `ldd` finds them here) that the container lacks,
/// each as the real file's directory plus the name `ldd` printed (no symlink inside the
/// container's root is followed when it is written).
async fn missing_libraries(
    machine: &nspawn::Machine,
    program: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut ldd = Command::new("ldd");
    ldd.arg(program);
    quiet(&mut ldd);
    let out = ldd.output().await.context("run ldd")?;
    succeeded("ldd", &out)?;
    let mut missing = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(path) = line
            .split("=>")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'))
        else {
            continue;
        };
        let path = Path::new(path);
        let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
            continue;
        };
        let real = std::fs::canonicalize(dir)?.join(file);
        if !machine.exists(real.to_str().context("utf-8 path")?) {
            missing.push(real);
        }
    }
    Ok(missing)
}

// === CA rotation ===

async fn rotation(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let count = args.rotation_hosts;
    println!("lifecycle: {count} loopback hosts for the CA rotation");
    let mut cp = ControlPlane::start().await;
    let mut cli = cp.admin_cli().await;
    let names: Vec<String> = (0..count).map(|n| format!("rotate-{n:02}")).collect();
    let daemons: Vec<Daemon> =
        join_all(names.iter().map(|name| cp.add_online_host(&cli, name))).await;
    let (mut reissued, mut printed, mut bundles, mut exits) = (vec![], vec![], vec![], vec![]);
    for run in 0..args.rotation_runs {
        let old_pin = cp.pin.clone();
        let started = Instant::now();
        let (lines, exited) = timed_lines(
            "zpanel-cp ca rotate",
            cp.admin_command(&["ca", "rotate", "--timeout", "5m"]),
        )
        .await?;
        let all = format!("{count} of {count} hosts re-issued");
        let all_reissued = lines
            .iter()
            .find(|(_, line)| line.contains(&all))
            .map(|(at, _)| *at);
        let new_pin = lines.iter().find_map(|(at, line)| {
            let pin = line.trim().strip_prefix("new CA pin:")?;
            Some((pin.trim().to_string(), *at))
        });
        let said: String = lines.iter().map(|(_, line)| format!("{line}\n")).collect();
        let (pin, at) = new_pin.with_context(|| format!("no new CA pin printed:\n{said}"))?;
        ensure!(pin != old_pin, "the printed pin is the old one");
        let reissued_at =
            all_reissued.with_context(|| format!("never printed \"{all}\":\n{said}"))?;
        // Every host ends up trusting the new CA only (told to renew once more at retirement).
        poll("every host's bundle trusting the new CA only", || async {
            daemons
                .iter()
                .all(|daemon| daemon.trusted_ca_pins() == [pin.clone()])
        })
        .await?;
        let bundled = started.elapsed();
        cp.pin = pin.clone();
        cli = cp.admin_cli().await;
        let hosts = cli.hosts().await;
        ensure!(
            hosts.len() == count
                && hosts
                    .iter()
                    .all(|h| h["status"] == "online" && h["cert_ca_pin"] == pin.as_str()),
            "not every host is online under the new CA after the rotation: {hosts:?}"
        );
        println!(
            "lifecycle: rotation {}: all re-issued {:.2} s, pin printed {:.2} s, bundles {:.2} s",
            run + 1,
            reissued_at.as_secs_f64(),
            at.as_secs_f64(),
            bundled.as_secs_f64()
        );
        reissued.push(reissued_at);
        printed.push(at);
        bundles.push(bundled);
        exits.push(exited);
    }
    let runs = args.rotation_runs;
    let of = if runs == 1 {
        "one run".to_string()
    } else {
        format!("median of {runs}")
    };
    for (what, values) in [
        (
            format!(
                "CA rotation, {count} hosts online: every host re-issued by the new CA (\"{count} of {count}\" printed), {of}"
            ),
            &reissued,
        ),
        (
            format!(
                "CA rotation: `zpanel-cp ca rotate` start to the new pin printed (old CA retired), {of}"
            ),
            &printed,
        ),
        (
            format!(
                "CA rotation: until all {count} hosts trust the new CA only (online throughout), {of}"
            ),
            &bundles,
        ),
    ] {
        report.row(
            &what,
            secs(Stats::of(values).median),
            None,
            None,
            "(information)",
            None,
        );
    }
    report.notes.push(format!(
        "CA rotation runs (s; re-issued, pin printed, bundles, command exited): {}; {}; {}; {}. \
         No host went offline or was re-installed.",
        list_secs(&reissued),
        list_secs(&printed),
        list_secs(&bundles),
        list_secs(&exits)
    ));
    drop(daemons);
    cp.kill().await;
    Ok(())
}

// === revocation ===

async fn revocation(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    println!("lifecycle: revoking {} hosts", args.revoke_runs);
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let (mut command, mut after_start, mut after_return) = (vec![], vec![], vec![]);
    for run in 0..args.revoke_runs {
        let name = format!("revoke-{run}");
        let mut daemon = cp.add_online_host(&cli, &name).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logged = daemon.log().len();
        let started = SystemTime::now();
        let out = cli.run(&["hosts", "revoke", &name]).await;
        let returned = SystemTime::now();
        succeeded("zpanel hosts revoke", &out)?;
        // The daemon logs the end of its session with a timestamp (UTC, microseconds).
        let mut ended = None;
        poll(
            "the revoked host's daemon logging the end of its session",
            || {
                let log = daemon.log();
                ended = log
                    .get(logged..)
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.contains("session ended"))
                    .and_then(log_time);
                let found = ended.is_some();
                async move { found }
            },
        )
        .await?;
        let ended = ended.context("session end")?;
        daemon.kill().await;
        let wall = returned.duration_since(started)?;
        let since_start = ended.duration_since(started).unwrap_or_default();
        // Negative when the session was gone before the CLI had exited.
        let since_return = match ended.duration_since(returned) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -e.duration().as_secs_f64() * 1000.0,
        };
        println!(
            "lifecycle: revoke {}: command {:.1} ms, session ended {:.1} ms after its start ({since_return:+.1} ms after it returned)",
            run + 1,
            wall.as_secs_f64() * 1000.0,
            since_start.as_secs_f64() * 1000.0
        );
        command.push(wall);
        after_start.push(since_start);
        after_return.push(since_return);
    }
    let runs = args.revoke_runs;
    report.row(
        &format!("revocation: `zpanel hosts revoke HOST` wall time, median of {runs}"),
        format!(
            "{:.1} ms",
            Stats::of(&command).median.as_secs_f64() * 1000.0
        ),
        None,
        None,
        "(information)",
        None,
    );
    report.row(
        &format!(
            "revocation: the host's session ended (its daemon's log), after the command started, median of {runs}"
        ),
        format!(
            "{:.1} ms",
            Stats::of(&after_start).median.as_secs_f64() * 1000.0
        ),
        None,
        None,
        "(information)",
        None,
    );
    report.row(
        &format!("revocation: the same, after the command returned, median of {runs}"),
        format!("{:+.1} ms", super::median_f64(&after_return)),
        None,
        None,
        "(information)",
        None,
    );
    report.notes.push(format!(
        "Revocation runs (ms; command, session end after its start, after its return): {}; {}; {}.",
        list_ms(&command),
        list_ms(&after_start),
        after_return
            .iter()
            .map(|v| format!("{v:+.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// The time at the start of a daemon log line (`2026-12-06T07:30:00.123456Z  WARN ...`).
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    let nanos: u64 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    let days = days_from_civil(year, month, day);
    let seconds = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// === helpers ===

/// Runs `command` to its end: each line of its output with the time it arrived (from the
/// spawn), and the time it exited; fails unless it succeeded.
async fn timed_lines(
    what: &str,
    mut command: Command,
) -> anyhow::Result<(Vec<(Duration, String)>, Duration)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("spawn {what}"))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut lines = Vec::new();
    while let Some(line) = tokio::time::timeout(STEP_LIMIT * 3, stdout.next_line())
        .await
        .with_context(|| format!("{what} printed nothing for 6 minutes"))??
    {
        lines.push((started.elapsed(), line));
    }
    let out = child.wait_with_output().await?;
    let took = started.elapsed();
    succeeded(what, &out)?;
    Ok((lines, took))
}

/// Polls `check` every [`POLL_EVERY`] until it holds; fails after [`STEP_LIMIT`] naming `what`.
async fn poll<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s waiting for {what}",
                STEP_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn list_secs(runs: &[Duration]) -> String {
    runs.iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_ms(runs: &[Duration]) -> String {
    runs.iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

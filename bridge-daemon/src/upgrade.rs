//! Upgrading the daemon over its session (`zpanel hosts upgrade`). The control plane sends a
//! new executable on an upgrade channel's STDIN; the daemon writes it beside its own
//! executable (acknowledged as written), checks its size, its sha256 and that it runs
//! (`--version`), keeps the current executable as `<name>.previous`, writes the marker
//! `upgrade.json` in the config directory, starts the rollback guard as a transient systemd
//! unit (running the previous binary, so a broken new one cannot break the rollback), renames
//! the new file over its executable, answers `UpgradeDone` and has systemd restart the
//! service. The new daemon commits (removes the marker) when its first session is welcomed;
//! the guard rolls back when the marker is still there at the deadline. Only under systemd:
//! nothing else would start the new binary, or the old one again.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use zpanel_proto::frame::Body;
use zpanel_proto::{OpenError, OpenResult, StreamChunk, StreamKind, UpgradeDone, UpgradeStart};
use zpanel_shared::replay::StreamSender;
use zpanel_shared::unix_now;

use crate::channel::Refusal;
use crate::hostinfo;
use crate::input::{Input, InputCommand, InputWriter};

/// In the config directory while an upgrade is not yet committed.
pub const MARKER_FILE: &str = "upgrade.json";
/// In the config directory after a rollback, until the daemon has logged it.
pub const RESULT_FILE: &str = "upgrade-result.json";
pub const NOT_UNDER_SYSTEMD: &str =
    "this daemon does not run under systemd; upgrade it with install.sh";
/// The largest executable accepted.
const MAX_BINARY_BYTES: u64 = 512 * 1024 * 1024;
/// How long the new binary has to answer `--version`.
const VERSION_CHECK: Duration = Duration::from_secs(10);
/// Between queueing `UpgradeDone` and asking systemd for the restart: the frame's way out.
const FLUSH_DELAY: Duration = Duration::from_secs(1);
/// How often the guard looks at the marker.
const GUARD_POLL: Duration = Duration::from_secs(1);
/// The service restarted when the daemon's own unit cannot be told from its cgroup.
const DEFAULT_UNIT: &str = "zpanel-bridge.service";

/// Where this daemon runs from and how it is restarted: found once at start.
pub struct Installation {
    /// Under systemd (`INVOCATION_ID` set): the only way an upgrade can restart the daemon.
    pub systemd: bool,
    /// The running executable (the target of `/proc/self/exe`), or why it is unknown.
    pub executable: Result<PathBuf, String>,
    pub config_dir: PathBuf,
    /// The daemon's systemd service, restarted into the new binary.
    pub unit: String,
    /// Starts the rollback guard (`systemd-run`); a stand-in in unit tests.
    pub start_guard: fn(&Installation, &Marker) -> Result<(), String>,
    /// Has the service restarted into the new binary (`systemctl`); a stand-in in unit tests.
    pub restart: fn(&Installation),
    /// An upgrade is being received or swapped in: a second one is refused meanwhile.
    pub busy: AtomicBool,
}

impl Installation {
    /// This daemon's installation. Reads /proc and hashes the executable: call it off the
    /// async threads.
    pub fn detect(config_dir: &Path) -> Installation {
        let executable = match std::fs::read_link("/proc/self/exe") {
            Ok(path) if path.to_string_lossy().ends_with(" (deleted)") => Err(
                "this daemon's executable was replaced or removed since it started; restart \
                 the service and try again"
                    .to_string(),
            ),
            Ok(path) => Ok(path),
            Err(e) => Err(format!(
                "cannot tell where this daemon's executable is: {e}"
            )),
        };
        // hashed now, once, for the hello and the marker
        let _ = hostinfo::daemon_sha256();
        Installation {
            systemd: hostinfo::under_systemd(),
            executable,
            config_dir: config_dir.to_path_buf(),
            unit: own_unit().unwrap_or_else(|| DEFAULT_UNIT.to_string()),
            start_guard: start_guard_unit,
            restart: restart_service,
            busy: AtomicBool::new(false),
        }
    }

    fn marker_path(&self) -> PathBuf {
        self.config_dir.join(MARKER_FILE)
    }
}

/// The daemon's systemd service, from its cgroup (`0::/system.slice/NAME.service`).
fn own_unit() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .find(|name| name.ends_with(".service"))
        .map(str::to_string)
}

/// `upgrade.json`: an upgrade swapped in and not yet committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The daemon's executable, now the new binary.
    pub executable: PathBuf,
    /// The binary it replaced, put back by a rollback.
    pub previous: PathBuf,
    pub old_sha256: String,
    pub new_sha256: String,
    /// Unix seconds: roll back when the marker is still here then.
    pub deadline: i64,
    /// Seconds the new binary has from the swap (and from a guard started again later).
    pub rollback_after_secs: u64,
    /// The service restarted after a rollback.
    pub unit: String,
    /// The transient unit the guard runs in.
    pub guard_unit: String,
}

/// `upgrade-result.json`: how the last rollback went, logged at the next start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolledBack {
    pub from_sha256: String,
    pub to_sha256: String,
    pub at: i64,
    pub reason: String,
}

/// The marker in `config_dir`, if an upgrade is pending.
pub fn read_marker(config_dir: &Path) -> Result<Option<Marker>, String> {
    let path = config_dir.join(MARKER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not valid: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `<executable>.previous`, beside it.
fn previous_path(executable: &Path) -> PathBuf {
    let mut name = executable.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    executable.with_file_name(name)
}

// === start-up: commit, report, re-arm ===

/// What the new daemon does once a session is welcomed: an upgrade to this very binary is
/// committed (the marker removed, the previous binary dropped). Says whether it committed.
pub fn commit(installation: &Installation) -> bool {
    let own = hostinfo::daemon_sha256();
    let marker = match read_marker(&installation.config_dir) {
        Ok(Some(marker)) if marker.new_sha256 == own => marker,
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!("upgrade marker: {e}");
            return false;
        }
    };
    // Removing the marker is the commit; a guard that renamed it first is rolling back.
    match std::fs::remove_file(installation.marker_path()) {
        Ok(()) => {
            let _ = std::fs::remove_file(&marker.previous);
            tracing::info!(from = %marker.old_sha256, to = %marker.new_sha256, "upgrade committed");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("the upgrade guard is rolling this binary back; it restarts shortly");
            false
        }
        Err(e) => {
            tracing::warn!("cannot commit the upgrade (remove {MARKER_FILE}): {e}");
            false
        }
    }
}

/// At start: logs (and forgets) a rollback the guard recorded, and starts the guard again
/// when an upgrade to this binary is pending without one (after a reboot, say).
pub fn at_start(installation: &Installation) {
    let result = installation.config_dir.join(RESULT_FILE);
    if let Ok(bytes) = std::fs::read(&result) {
        match serde_json::from_slice::<RolledBack>(&bytes) {
            Ok(r) => tracing::warn!(
                from = %r.from_sha256,
                to = %r.to_sha256,
                at = r.at,
                "an upgrade was rolled back: {}",
                r.reason
            ),
            Err(e) => tracing::warn!("{} is not valid: {e}", result.display()),
        }
        let _ = std::fs::remove_file(&result);
    }
    match read_marker(&installation.config_dir) {
        Ok(Some(marker)) if marker.new_sha256 == hostinfo::daemon_sha256() => {
            if installation.systemd
                && let Err(e) = (installation.start_guard)(installation, &marker)
            {
                // most often: the guard is already running
                tracing::debug!("upgrade guard not started again: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("upgrade marker: {e}"),
    }
}

// === the channel ===

/// An upgrade channel: the new binary in, then `UpgradeDone`.
pub struct UpgradeChannel {
    installation: Arc<Installation>,
    request: UpgradeStart,
    input: OnceLock<Input>,
    /// How it ended: swapped in, or why not (one line).
    done: watch::Sender<Option<Result<(), String>>>,
}

impl UpgradeChannel {
    pub fn new(installation: &Arc<Installation>, request: UpgradeStart) -> Arc<UpgradeChannel> {
        Arc::new(UpgradeChannel {
            installation: installation.clone(),
            request,
            input: OnceLock::new(),
            done: watch::Sender::new(None),
        })
    }

    /// Refuses what cannot be done (no systemd, a bad request, an upgrade pending), else
    /// creates the temporary file and starts writing into it as input comes.
    pub async fn prepare(self: &Arc<Self>) -> Result<(OpenResult, Vec<StreamSender>), Refusal> {
        let installation = self.installation.clone();
        let request = self.request.clone();
        let temp = tokio::task::spawn_blocking(move || begin(&installation, &request))
            .await
            .map_err(|e| (OpenError::SpawnFailed, format!("upgrade: {e}")))??;
        let (receiving, writer) = Input::new();
        let _ = self.input.set(receiving);
        let (installation, request) = (self.installation.clone(), self.request.clone());
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = receive(&installation, &request, temp, writer);
            let swapped = outcome.is_ok();
            if let Err(e) = &outcome {
                tracing::warn!("upgrade to {} failed: {e}", request.sha256);
                // (once swapped in, the daemon restarts: it stays busy until then)
                installation.busy.store(false, Ordering::SeqCst);
            }
            done.send_replace(Some(outcome));
            if swapped {
                tracing::info!(to = %request.sha256, "upgrade swapped in; restarting");
                std::thread::sleep(FLUSH_DELAY);
                (installation.restart)(&installation);
            }
        });
        Ok((OpenResult::default(), Vec::new()))
    }

    pub fn input(&self, chunk: StreamChunk) -> Result<(), String> {
        if chunk.stream() != StreamKind::Stdin {
            return Err("only stdin may be sent to an upgrade".into());
        }
        let input = self
            .input
            .get()
            .ok_or("input arrived before the upgrade was answered; wait for its answer")?;
        input
            .accept(chunk.offset, chunk.payload, chunk.eof)
            .map_err(|e| e.to_string())
    }

    /// Bytes of the new binary written so far.
    pub fn input_written(&self) -> Option<watch::Receiver<u64>> {
        self.input.get().map(Input::written)
    }

    /// Sends `UpgradeDone` once the binary is swapped in or refused.
    pub async fn finish(&self, channel_id: u64, outbound: &mpsc::Sender<Body>) -> Option<()> {
        let mut done = self.done.subscribe();
        let outcome = done.wait_for(Option::is_some).await.ok()?.clone()?;
        let error = outcome.err().unwrap_or_default();
        outbound
            .send(Body::UpgradeDone(UpgradeDone { channel_id, error }))
            .await
            .ok()
    }
}

/// A temporary file beside the executable, removed unless it was renamed into place.
struct TempBinary {
    path: PathBuf,
    file: Option<std::fs::File>,
    kept: bool,
}

impl Drop for TempBinary {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The checks made before anything is received, and the temporary file.
fn begin(installation: &Installation, request: &UpgradeStart) -> Result<TempBinary, Refusal> {
    if !installation.systemd {
        return Err((OpenError::Refused, NOT_UNDER_SYSTEMD.into()));
    }
    if installation.busy.swap(true, Ordering::SeqCst) {
        let message = "another upgrade is being received; try again after it";
        return Err((OpenError::BadRequest, message.into()));
    }
    let temp = checked_temp(installation, request);
    if temp.is_err() {
        installation.busy.store(false, Ordering::SeqCst);
    }
    temp
}

/// The request's checks and the temporary file, for [`begin`].
fn checked_temp(
    installation: &Installation,
    request: &UpgradeStart,
) -> Result<TempBinary, Refusal> {
    let executable = installation
        .executable
        .as_ref()
        .map_err(|e| (OpenError::Refused, e.clone()))?;
    let bad = |message: String| (OpenError::BadRequest, message);
    if request.sha256.len() != 64 || !request.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("{:?} is not a sha256 in hex", request.sha256)));
    }
    if request.size == 0 || request.size > MAX_BINARY_BYTES {
        return Err(bad(format!(
            "a daemon binary of {} bytes is refused (1 byte to {MAX_BINARY_BYTES})",
            request.size
        )));
    }
    if request.rollback_after_secs == 0 {
        return Err(bad("the rollback time limit must be at least 1 s".into()));
    }
    match read_marker(&installation.config_dir) {
        Ok(None) => {}
        Ok(Some(marker)) => {
            return Err(bad(format!(
                "an upgrade to {} is still pending (its rollback guard decides by {}); try again \
                 after it",
                marker.new_sha256, marker.deadline
            )));
        }
        Err(e) => return Err(bad(e)),
    }
    let name = executable
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    // `<name>.*` like the previous binary: install.sh --uninstall removes what an
    // interrupted upgrade left
    let path = executable.with_file_name(format!("{name}.new.{:016x}", rand::random::<u64>()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .map_err(|e| {
            (
                OpenError::SpawnFailed,
                format!(
                    "cannot write the new binary beside {}: {e}",
                    executable.display()
                ),
            )
        })?;
    Ok(TempBinary {
        path,
        file: Some(file),
        kept: false,
    })
}

/// Writes the input into the temporary file, checks it and swaps it in (blocking).
fn receive(
    installation: &Installation,
    request: &UpgradeStart,
    mut temp: TempBinary,
    mut writer: InputWriter,
) -> Result<(), String> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut file = temp.file.take().ok_or("no temporary file")?;
    loop {
        match writer.blocking_recv() {
            Some(InputCommand::Data(bytes)) => {
                size += bytes.len() as u64;
                if size > request.size {
                    return Err(format!(
                        "received more than the {} bytes announced",
                        request.size
                    ));
                }
                file.write_all(&bytes)
                    .map_err(|e| format!("cannot write {}: {e}", temp.path.display()))?;
                hasher.update(&bytes);
                writer.wrote(bytes.len());
            }
            Some(InputCommand::Eof) => break,
            None => return Err("the binary was cut off before its end".into()),
        }
    }
    if size != request.size {
        return Err(format!(
            "received {size} bytes, not the {} announced",
            request.size
        ));
    }
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != request.sha256.to_ascii_lowercase() {
        return Err(format!(
            "checksum mismatch: received sha256 {sha256}, expected {}",
            request.sha256
        ));
    }
    file.sync_all()
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot finish {}: {e}", temp.path.display()))?;
    drop(file);
    check_runs(&temp.path)?;
    swap(installation, request, &mut temp)
}

/// The new binary must answer `--version` (exit 0) within [`VERSION_CHECK`].
fn check_runs(path: &Path) -> Result<(), String> {
    let mut attempts = 0;
    let mut child = loop {
        match Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => break child,
            // another thread's fork may still hold the file open for writing for a moment
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) && attempts < 20 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("the new binary does not start: {e}")),
        }
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!(
                    "the new binary failed its check (`--version` ended with {status})"
                ));
            }
            Ok(None) if started.elapsed() < VERSION_CHECK => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the new binary did not answer `--version` within {} s",
                    VERSION_CHECK.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot check the new binary: {e}")),
        }
    }
}

/// Keeps the current binary as `.previous`, writes the marker, starts the guard and renames
/// the new binary into place. Anything that fails undoes what came before it.
fn swap(
    installation: &Installation,
    request: &UpgradeStart,
    temp: &mut TempBinary,
) -> Result<(), String> {
    let executable = installation.executable.as_ref().map_err(Clone::clone)?;
    let previous = previous_path(executable);
    keep_previous(executable, &previous).map_err(|e| {
        format!(
            "cannot keep the current binary as {}: {e}",
            previous.display()
        )
    })?;
    let guard_unit = format!("zpanel-bridge-rollback-{:08x}", rand::random::<u32>());
    let marker = Marker {
        executable: executable.clone(),
        previous: previous.clone(),
        old_sha256: hostinfo::daemon_sha256().to_string(),
        new_sha256: request.sha256.to_ascii_lowercase(),
        deadline: unix_now() + i64::from(request.rollback_after_secs),
        rollback_after_secs: u64::from(request.rollback_after_secs),
        unit: installation.unit.clone(),
        guard_unit,
    };
    let marker_path = installation.marker_path();
    let undo = |message: String| {
        // without its marker the guard does nothing and ends
        let _ = std::fs::remove_file(&marker_path);
        let _ = std::fs::remove_file(&previous);
        message
    };
    let json = serde_json::to_vec_pretty(&marker).map_err(|e| undo(e.to_string()))?;
    zpanel_shared::fsutil::write_atomic(&marker_path, &json, 0o600)
        .map_err(|e| undo(format!("cannot write {}: {e}", marker_path.display())))?;
    (installation.start_guard)(installation, &marker)
        .map_err(|e| undo(format!("cannot start the rollback guard: {e}")))?;
    std::fs::rename(&temp.path, executable).map_err(|e| {
        undo(format!(
            "cannot put the new binary in place of {}: {e}",
            executable.display()
        ))
    })?;
    temp.kept = true;
    Ok(())
}

/// A hard link to (or else a copy of) the executable, renamed into place as `previous`.
fn keep_previous(executable: &Path, previous: &Path) -> std::io::Result<()> {
    let temp = previous.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
    if std::fs::hard_link(executable, &temp).is_err() {
        std::fs::copy(executable, &temp)?;
    }
    std::fs::rename(&temp, previous).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// `systemd-run` of `<previous> upgrade-guard` as a transient unit of its own, so the
/// service's restart does not end it.
fn start_guard_unit(installation: &Installation, marker: &Marker) -> Result<(), String> {
    let output = Command::new("systemd-run")
        .arg(format!("--unit={}", marker.guard_unit))
        .args([
            "--collect",
            "--quiet",
            "--description=zpanel-bridge upgrade rollback guard",
        ])
        .arg("--")
        .arg(&marker.previous)
        .arg("upgrade-guard")
        .arg("--config-dir")
        .arg(&installation.config_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemd-run: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(one_line(&output.stderr, "systemd-run failed"))
    }
}

/// `systemctl --no-block restart` of the service: systemd stops this process and starts the
/// new binary, whatever the unit's `Restart=`. Exits when systemctl cannot be asked.
fn restart_service(installation: &Installation) {
    let asked = Command::new("systemctl")
        .args(["--no-block", "restart", &installation.unit])
        .stdin(Stdio::null())
        .output();
    match asked {
        Ok(output) if output.status.success() => {}
        other => {
            let why = match other {
                Ok(output) => one_line(&output.stderr, "systemctl failed"),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                "cannot ask systemd to restart {}: {why}; exiting",
                installation.unit
            );
            std::process::exit(75);
        }
    }
}

fn one_line(stderr: &[u8], otherwise: &str) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(otherwise)
        .to_string()
}

// === the guard ===

/// `zpanel-bridge upgrade-guard`: waits for the commit or the deadline; at the deadline
/// puts the previous binary back, records why and restarts the service. Blocking.
pub fn guard(config_dir: &Path) -> anyhow::Result<()> {
    let started = unix_now();
    loop {
        let Some(marker) = read_marker(config_dir).map_err(anyhow::Error::msg)? else {
            tracing::info!("upgrade committed; nothing to roll back");
            return Ok(());
        };
        // started again after the deadline (a reboot): the new binary gets a whole window
        let deadline = if marker.deadline < started {
            started + marker.rollback_after_secs as i64
        } else {
            marker.deadline
        };
        let left = deadline - unix_now();
        if left <= 0 {
            return roll_back(config_dir, &marker, true);
        }
        std::thread::sleep(GUARD_POLL.min(Duration::from_secs(left as u64)));
    }
}

/// Puts the previous binary back unless the upgrade was committed meanwhile, records it in
/// `upgrade-result.json` and (with `restart`) restarts the service.
pub fn roll_back(config_dir: &Path, marker: &Marker, restart: bool) -> anyhow::Result<()> {
    // Claiming the marker decides between the guard and a late commit.
    let claimed = config_dir.join(format!("{MARKER_FILE}.rollback"));
    match std::fs::rename(config_dir.join(MARKER_FILE), &claimed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("upgrade committed; nothing to roll back");
            return Ok(());
        }
        Err(e) => anyhow::bail!("cannot claim {MARKER_FILE}: {e}"),
    }
    let put_back = std::fs::rename(&marker.previous, &marker.executable);
    let _ = std::fs::remove_file(&claimed);
    if let Err(e) = put_back {
        anyhow::bail!(
            "cannot put {} back in place of {}: {e}; reinstall with install.sh",
            marker.previous.display(),
            marker.executable.display()
        );
    }
    let result = RolledBack {
        from_sha256: marker.new_sha256.clone(),
        to_sha256: marker.old_sha256.clone(),
        at: unix_now(),
        reason: format!(
            "the new daemon had no session within {} s",
            marker.rollback_after_secs
        ),
    };
    let json = serde_json::to_vec_pretty(&result)?;
    zpanel_shared::fsutil::write_atomic(&config_dir.join(RESULT_FILE), &json, 0o600)?;
    tracing::warn!(from = %marker.new_sha256, to = %marker.old_sha256, "upgrade rolled back: {}", result.reason);
    if restart {
        // a unit that failed to start too often must be reset before it starts again
        let _ = Command::new("systemctl")
            .args(["reset-failed", &marker.unit])
            .status();
        let status = Command::new("systemctl")
            .args(["restart", &marker.unit])
            .status()?;
        anyhow::ensure!(status.success(), "systemctl restart {} failed", marker.unit);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::*;

    /// The installation of a daemon started by hand (what unit tests' sessions have).
    pub(crate) fn not_under_systemd() -> Installation {
        Installation {
            systemd: false,
            executable: Err("not known in tests".into()),
            config_dir: PathBuf::new(),
            unit: DEFAULT_UNIT.into(),
            start_guard: |_, _| Err("no systemd in tests".into()),
            restart: |_| {},
            busy: AtomicBool::new(false),
        }
    }

    static GUARDS_STARTED: AtomicUsize = AtomicUsize::new(0);

    /// A daemon "under systemd" whose executable is a script in a temporary directory;
    /// the guard and the restart are stand-ins.
    fn installed(dir: &Path) -> Arc<Installation> {
        let executable = dir.join("zpanel-bridge");
        std::fs::write(&executable, b"#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&executable, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config_dir = dir.join("etc");
        std::fs::create_dir_all(&config_dir).unwrap();
        Arc::new(Installation {
            systemd: true,
            executable: Ok(executable),
            config_dir,
            unit: DEFAULT_UNIT.into(),
            start_guard: |_, _| {
                GUARDS_STARTED.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            restart: |_| {},
            busy: AtomicBool::new(false),
        })
    }

    fn sha256(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Sends `binary` (announced as `size` bytes with `sha`) and returns `UpgradeDone`'s error.
    async fn upgrade(
        installation: &Arc<Installation>,
        binary: &[u8],
        size: u64,
        sha: String,
    ) -> Result<String, OpenResult> {
        let request = UpgradeStart {
            sha256: sha,
            size,
            rollback_after_secs: 60,
        };
        let channel = UpgradeChannel::new(installation, request);
        channel
            .prepare()
            .await
            .map_err(|(error, message)| OpenResult {
                error: error as i32,
                message,
                ..OpenResult::default()
            })?;
        for (n, piece) in binary.chunks(7).enumerate() {
            let chunk = StreamChunk {
                stream: StreamKind::Stdin as i32,
                offset: (n * 7) as u64,
                payload: Bytes::copy_from_slice(piece),
                eof: (n + 1) * 7 >= binary.len(),
            };
            channel.input(chunk).unwrap();
        }
        let (outbound, mut frames) = mpsc::channel(4);
        channel.finish(9, &outbound).await.unwrap();
        match frames.recv().await {
            Some(Body::UpgradeDone(done)) if done.channel_id == 9 => Ok(done.error),
            other => panic!("no UpgradeDone but {other:?}"),
        }
    }

    /// The files of the directory holding the executable, and the config directory's.
    fn files(installation: &Installation) -> (Vec<String>, Vec<String>) {
        let list = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "etc")
                .collect();
            names.sort();
            names
        };
        let executable = installation.executable.as_ref().unwrap();
        (
            list(executable.parent().unwrap()),
            list(&installation.config_dir),
        )
    }

    #[tokio::test]
    async fn a_daemon_not_under_systemd_refuses_at_once() {
        use crate::config::Policy;
        use crate::session::tests::{expect, open, opened, session_with};
        let (session, mut frames) = session_with(&[], Policy::default(), "");
        let request = UpgradeStart {
            sha256: "0".repeat(64),
            size: 1,
            rollback_after_secs: 60,
        };
        open(&session, 1, zpanel_proto::open::Request::Upgrade(request));
        let refused = expect(&mut frames, opened(1)).await;
        assert_eq!(
            (refused.error(), refused.message.as_str()),
            (OpenError::Refused, NOT_UNDER_SYSTEMD)
        );
    }

    #[tokio::test]
    async fn a_binary_that_is_cut_short_or_not_the_one_announced_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let installation = installed(dir.path());
        let new = b"#!/bin/sh\necho new\n".to_vec();
        let before = files(&installation);

        let error = upgrade(&installation, &new, new.len() as u64 + 1, sha256(&new))
            .await
            .unwrap();
        assert_eq!(
            error,
            format!(
                "received {} bytes, not the {} announced",
                new.len(),
                new.len() + 1
            )
        );
        assert_eq!(files(&installation), before, "a temporary file was left");

        let error = upgrade(&installation, &new, new.len() as u64, sha256(b"other"))
            .await
            .unwrap();
        assert_eq!(
            error,
            format!(
                "checksum mismatch: received sha256 {}, expected {}",
                sha256(&new),
                sha256(b"other")
            )
        );
        assert_eq!(files(&installation), before);

        let broken = b"#!/bin/sh\nexit 3\n".to_vec();
        let error = upgrade(&installation, &broken, broken.len() as u64, sha256(&broken))
            .await
            .unwrap();
        assert_eq!(
            error,
            "the new binary failed its check (`--version` ended with exit status: 3)"
        );
        assert_eq!(files(&installation), before);
        let executable = installation.executable.as_ref().unwrap();
        assert_eq!(std::fs::read(executable).unwrap(), b"#!/bin/sh\nexit 0\n");

        let refused = upgrade(&installation, &new, 0, sha256(&new))
            .await
            .unwrap_err();
        assert_eq!(refused.error(), OpenError::BadRequest);
    }

    #[tokio::test]
    async fn a_good_binary_is_swapped_in_with_the_previous_one_kept_and_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let installation = installed(dir.path());
        let executable = installation.executable.clone().unwrap();
        let new = b"#!/bin/sh\necho new\n".to_vec();
        let guards = GUARDS_STARTED.load(Ordering::SeqCst);
        let error = upgrade(&installation, &new, new.len() as u64, sha256(&new))
            .await
            .unwrap();
        assert_eq!(error, "");
        assert!(GUARDS_STARTED.load(Ordering::SeqCst) > guards);
        assert_eq!(std::fs::read(&executable).unwrap(), new);
        let mode = std::fs::metadata(&executable).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let marker = read_marker(&installation.config_dir).unwrap().unwrap();
        assert_eq!(marker.new_sha256, sha256(&new));
        assert_eq!(marker.old_sha256, hostinfo::daemon_sha256());
        assert_eq!(
            std::fs::read(&marker.previous).unwrap(),
            b"#!/bin/sh\nexit 0\n"
        );
        assert_eq!(
            files(&installation),
            (
                vec!["zpanel-bridge".into(), "zpanel-bridge.previous".into()],
                vec![MARKER_FILE.into()]
            )
        );

        // another upgrade waits: for the restart, then for this one's verdict
        let refused = upgrade(&installation, &new, new.len() as u64, sha256(&new))
            .await
            .unwrap_err();
        assert_eq!(
            refused.message,
            "another upgrade is being received; try again after it"
        );
        installation.busy.store(false, Ordering::SeqCst);
        let refused = upgrade(&installation, &new, new.len() as u64, sha256(&new))
            .await
            .unwrap_err();
        assert!(
            refused.message.starts_with("an upgrade to "),
            "{}",
            refused.message
        );

        // the guard at the deadline: the previous binary back, the result recorded
        roll_back(&installation.config_dir, &marker, false).unwrap();
        assert_eq!(std::fs::read(&executable).unwrap(), b"#!/bin/sh\nexit 0\n");
        assert_eq!(
            files(&installation),
            (vec!["zpanel-bridge".into()], vec![RESULT_FILE.into()])
        );
        // a second look finds nothing to do, and the result is logged once at start
        roll_back(&installation.config_dir, &marker, false).unwrap();
        at_start(&installation);
        assert_eq!(files(&installation).1, Vec::<String>::new());
    }

    #[test]
    fn only_the_binary_an_upgrade_names_commits_it() {
        let dir = tempfile::tempdir().unwrap();
        let installation = installed(dir.path());
        let executable = installation.executable.clone().unwrap();
        let previous = previous_path(&executable);
        std::fs::write(&previous, b"old").unwrap();
        let marker = |new_sha256: &str| Marker {
            executable: executable.clone(),
            previous: previous.clone(),
            old_sha256: "a".repeat(64),
            new_sha256: new_sha256.into(),
            deadline: unix_now() + 60,
            rollback_after_secs: 60,
            unit: DEFAULT_UNIT.into(),
            guard_unit: "zpanel-bridge-rollback-test".into(),
        };
        let path = installation.marker_path();
        let write = |marker: &Marker| {
            std::fs::write(&path, serde_json::to_vec(marker).unwrap()).unwrap();
        };

        // a marker for another binary (this one is the old one, still running)
        write(&marker(&"b".repeat(64)));
        assert!(!commit(&installation));
        assert!(path.exists() && previous.exists());

        // the binary the marker names commits: marker and previous binary gone
        let ours = marker(hostinfo::daemon_sha256());
        write(&ours);
        assert!(commit(&installation));
        assert!(!path.exists() && !previous.exists());
        assert!(!commit(&installation));
        // the guard then finds nothing to roll back
        roll_back(&installation.config_dir, &ours, false).unwrap();
        assert_eq!(std::fs::read(&executable).unwrap(), b"#!/bin/sh\nexit 0\n");
        assert!(!installation.config_dir.join(RESULT_FILE).exists());
    }

    #[test]
    fn the_previous_binary_sits_beside_the_executable() {
        assert_eq!(
            previous_path(Path::new("/usr/local/bin/zpanel-bridge")),
            Path::new("/usr/local/bin/zpanel-bridge.previous")
        );
    }
}

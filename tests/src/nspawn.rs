//! Real systemd hosts for the tests: a Debian root made with `debootstrap` (once, cached under
//! `target/nspawn/`), copied for each [`Machine`] and booted with `systemd-nspawn` (systemd as
//! PID 1) in a network namespace of its own, linked to this machine by a veth pair on a /24
//! no other test uses. The control plane listens on the host side address
//! ([`Machine::host_ip`], see [`crate::ControlPlane::start_on`]); commands run inside through
//! `nsenter` ([`Machine::exec`]).
//!
//! Needs root, `debootstrap`, `systemd-container` and `iproute2` (`scripts/test` installs
//! them). The machine running the tests does not need systemd itself: the containers are
//! started with `--register=no --keep-unit`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Names the cached root: change it (or [`PACKAGES`]) and every machine rebuilds it.
pub const ROOTFS_VERSION: &str = "bookworm-1";
/// What the root holds besides Debian's minimal base.
pub const PACKAGES: &str = "systemd,systemd-sysv,dbus,ca-certificates,curl,iproute2,sudo";
/// The Debian mirror when the machine's apt sources name none (overridden by
/// `ZPANEL_TEST_DEBIAN_MIRROR`).
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The first two octets of the test subnets: machine `N` gets `10.213.N.0/24`.
const SUBNET_PREFIX: &str = "10.213";
/// A PATH for commands inside the container (ours would name this machine's directories).
const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static MACHINES: AtomicU32 = AtomicU32::new(0);

/// Where the cached roots and the machines' copies live (`target/nspawn`): on the same file
/// system as the cache, so copies can share its blocks.
pub fn nspawn_dir() -> PathBuf {
    let mut dir = crate::bin_dir();
    dir.pop();
    dir.join("nspawn")
}

/// The cached Debian root, built on first use. Concurrent callers (test processes run in
/// parallel) wait on a lock file while one of them builds; the build goes to a temporary
/// directory renamed into place only when complete, so a half-built root is never used.
/// Blocking: call it off the async threads.
pub fn rootfs() -> anyhow::Result<PathBuf> {
    let dir = nspawn_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = format!("{ROOTFS_VERSION}-{}", short_hash(PACKAGES));
    let root = dir.join(format!("rootfs-{key}"));
    if root.join(".complete").exists() {
        return Ok(root);
    }
    let lock = File::create(dir.join("rootfs.lock")).context("rootfs lock file")?;
    lock.lock().context("lock the rootfs cache")?;
    if root.join(".complete").exists() {
        return Ok(root);
    }
    for tool in ["debootstrap", "systemd-nspawn", "nsenter", "ip"] {
        if !command_exists(tool) {
            bail!(
                "{tool} is missing: install debootstrap, systemd-container and iproute2 (scripts/test does)"
            );
        }
    }
    let building = dir.join(format!("building-{key}"));
    let _ = std::fs::remove_dir_all(&building);
    let mirror = mirror();
    eprintln!("nspawn: building the Debian root {key} from {mirror} (once; about a minute)");
    let log = dir.join("debootstrap.log");
    let status = std::process::Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "bookworm",
        ])
        .arg(&building)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(File::create(&log)?)
        .stderr(File::create(dir.join("debootstrap.err"))?)
        .status()
        .context("run debootstrap")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&building);
        bail!(
            "debootstrap failed ({status}); see {} and {}",
            log.display(),
            dir.join("debootstrap.err").display()
        );
    }
    prepare_root(&building)?;
    std::fs::write(building.join(".complete"), key.as_bytes())?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&building, &root).context("move the built root into place")?;
    // Older versions of the root are of no use any more.
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("rootfs-") && entry.path() != root {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(root)
}

/// What every machine needs that debootstrap leaves out.
fn prepare_root(root: &Path) -> anyhow::Result<()> {
    // No apt caches to carry into each copy.
    let _ = std::fs::remove_dir_all(root.join("var/cache/apt/archives"));
    std::fs::create_dir_all(root.join("var/cache/apt/archives/partial"))?;
    // An empty machine-id: systemd makes a new one at each boot of each copy.
    std::fs::write(root.join("etc/machine-id"), b"")?;
    // The network is set up from outside (the veth end inside is configured before boot);
    // nothing inside should touch it, and nothing should wait for it.
    for unit in [
        "systemd-networkd.service",
        "systemd-networkd-wait-online.service",
        "systemd-resolved.service",
        "console-getty.service",
    ] {
        let link = root.join("etc/systemd/system").join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)?;
    }
    Ok(())
}

fn mirror() -> String {
    if let Ok(mirror) = std::env::var("ZPANEL_TEST_DEBIAN_MIRROR")
        && !mirror.is_empty()
    {
        return mirror;
    }
    // The machine's own apt sources: the mirror it is allowed to reach.
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in entries.flatten() {
            texts.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    for text in texts {
        for line in text.lines().map(str::trim) {
            let uri = if let Some(uris) = line.strip_prefix("URIs:") {
                uris.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri
                && uri.contains("debian")
                && !uri.contains("security")
            {
                return uri.trim_end_matches('/').to_string();
            }
        }
    }
    DEFAULT_MIRROR.to_string()
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|dir| Path::new(dir).join(name).is_file())
    })
}

// === the network ===

/// A network namespace with a veth pair: `zpvN` here with `10.213.N.1/24`, `eth0` inside with
/// `10.213.N.2/24`. Deleted (with the pair) on drop.
struct Net {
    index: u32,
    owner_file: PathBuf,
}

impl Net {
    fn name(&self) -> String {
        format!("zpt{}", self.index)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.name())
    }

    fn host_ip(&self) -> String {
        format!("{SUBNET_PREFIX}.{}.1", self.index)
    }

    fn container_ip(&self) -> String {
        format!("{SUBNET_PREFIX}.{}.2", self.index)
    }

    /// Takes the first free subnet, under a lock shared by every test process. A subnet whose
    /// owner (a test process, by pid) is gone is taken back.
    fn create() -> anyhow::Result<Net> {
        let dir = nspawn_dir().join("nets");
        std::fs::create_dir_all(&dir)?;
        let lock = File::create(dir.join("lock"))?;
        lock.lock().context("lock the test subnets")?;
        for index in 1..255u32 {
            let owner_file = dir.join(index.to_string());
            let netns = PathBuf::from("/run/netns").join(format!("zpt{index}"));
            if owner_file.exists() {
                let owner: Option<i32> = std::fs::read_to_string(&owner_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                if owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                    continue;
                }
            }
            // Free, or left behind by a test that died: take it back.
            if netns.exists() {
                let _ = ip(&["netns", "del", &format!("zpt{index}")]);
            }
            let _ = ip(&["link", "del", &format!("zpv{index}")]);
            std::fs::write(&owner_file, std::process::id().to_string())?;
            let net = Net { index, owner_file };
            net.setup()?;
            return Ok(net);
        }
        bail!("no free test subnet in {SUBNET_PREFIX}.1-254.0/24")
    }

    fn setup(&self) -> anyhow::Result<()> {
        let (name, host_link) = (self.name(), format!("zpv{}", self.index));
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_ip()),
            "dev",
            &host_link,
        ])?;
        ip(&["link", "set", &host_link, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{}/24", self.container_ip()),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            &self.host_ip(),
        ])?;
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name()]);
        let _ = ip(&["link", "del", &format!("zpv{}", self.index)]);
        let _ = std::fs::remove_file(&self.owner_file);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

// === the machine ===

/// A booted Debian with systemd as PID 1, in its own root directory and network namespace.
/// Everything it started is killed, and its files and network removed, on drop.
pub struct Machine {
    pub name: String,
    /// Holds `root/` (the container's `/`) and `console.log`.
    dir: tempfile::TempDir,
    net: Net,
    nspawn: Option<Child>,
    /// The container's PID 1 as this machine sees it.
    init_pid: u32,
    boots: u32,
}

impl Machine {
    /// Copies the cached root (building it first if needed) and boots it; returns once
    /// `systemctl is-system-running` says `running` or `degraded`.
    pub async fn boot() -> anyhow::Result<Machine> {
        let base = tokio::task::spawn_blocking(rootfs).await??;
        let machines = nspawn_dir().join("machines");
        std::fs::create_dir_all(&machines)?;
        let dir = tempfile::Builder::new()
            .prefix("m-")
            .tempdir_in(&machines)?;
        let copy = tokio::process::Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&base)
            .arg(dir.path().join("root"))
            .status()
            .await
            .context("copy the root")?;
        if !copy.success() {
            bail!("cp -a of the cached root failed ({copy})");
        }
        let net = tokio::task::spawn_blocking(Net::create).await??;
        let name = format!(
            "zpt-{}-{}",
            std::process::id(),
            MACHINES.fetch_add(1, Ordering::Relaxed)
        );
        // Its own name, resolvable (sudo looks it up), instead of the one debootstrap copied.
        let root = dir.path().join("root");
        std::fs::write(root.join("etc/hostname"), format!("{name}\n"))?;
        std::fs::write(
            root.join("etc/hosts"),
            format!("127.0.0.1 localhost\n127.0.1.1 {name}\n::1 localhost\n"),
        )?;
        let mut machine = Machine {
            name,
            dir,
            net,
            nspawn: None,
            init_pid: 0,
            boots: 0,
        };
        machine.start().await?;
        Ok(machine)
    }

    /// The container's `/` as a directory on this machine.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the container (`/etc/zpanel`) as a path on this machine.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// This machine's end of the veth pair: where the container reaches the control plane.
    pub fn host_ip(&self) -> String {
        self.net.host_ip()
    }

    /// The container's address.
    pub fn container_ip(&self) -> String {
        self.net.container_ip()
    }

    /// What systemd-nspawn and the container's console printed, for failure messages.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Fails with `what`, nspawn's exit status and the console when systemd-nspawn has exited.
    fn still_running(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(child) = self.nspawn.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{what} ({status}):\n{}", self.console());
        }
        Ok(())
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        self.boots += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("console.log"))?;
        let child = Command::new("systemd-nspawn")
            .args(["-q", "-b", "--register=no", "--keep-unit", "--console=pipe"])
            .arg("-D")
            .arg(self.root())
            .arg(format!(
                "--network-namespace-path={}",
                self.net.path().display()
            ))
            .args(["-M", &self.name])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn systemd-nspawn")?;
        let nspawn_pid = child.id().context("nspawn pid")?;
        self.nspawn = Some(child);
        // The container's init is systemd-nspawn's child.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        self.init_pid = loop {
            if let Some(pid) = children(nspawn_pid).into_iter().next() {
                break pid;
            }
            self.still_running("systemd-nspawn exited before the container started")?;
            if tokio::time::Instant::now() > deadline {
                bail!("the container's init never started:\n{}", self.console());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.wait_running().await
    }

    async fn wait_running(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        let mut last = String::new();
        loop {
            if let Ok(out) = self.exec("systemctl is-system-running").await {
                last = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if last == "running" || last == "degraded" {
                    return Ok(());
                }
            }
            self.still_running("the container stopped while booting")?;
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the container did not finish booting (systemctl is-system-running: {last:?}):\n{}",
                    self.console()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `sh -c command` inside the container, as root, with a plain environment.
    pub async fn exec(&self, command: &str) -> anyhow::Result<Output> {
        self.exec_with_stdin(command, b"").await
    }

    /// Like [`Machine::exec`], with `stdin` as the command's input.
    pub async fn exec_with_stdin(&self, command: &str, stdin: &[u8]) -> anyhow::Result<Output> {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new("nsenter")
            .args(["-t", &self.init_pid.to_string(), "-a", "--"])
            .args(["env", "-i"])
            .arg(format!("PATH={CONTAINER_PATH}"))
            .args([
                "HOME=/root",
                "LANG=C.UTF-8",
                "TERM=dumb",
                "sh",
                "-c",
                command,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn nsenter")?;
        let mut pipe = child.stdin.take().context("stdin")?;
        let input = stdin.to_vec();
        let writer = tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
        let out = child.wait_with_output().await.context("nsenter output")?;
        let _ = writer.await;
        Ok(out)
    }

    /// Runs a command that must succeed; its standard output.
    pub async fn run(&self, command: &str) -> String {
        let out = self.exec(command).await.expect("nsenter runs");
        assert!(
            out.status.success(),
            "`{command}` failed in {} ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Reboots the container: `systemctl reboot` inside (which makes systemd-nspawn exit),
    /// then boots the same root again.
    pub async fn reboot(&mut self) -> anyhow::Result<()> {
        let _ = self.exec("systemctl reboot").await;
        let mut child = self.nspawn.take().context("not running")?;
        match tokio::time::timeout(Duration::from_secs(120), child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!("the container did not stop on `systemctl reboot`");
            }
        }
        self.start().await
    }

    /// How many times the container was booted.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// Writes a file into the container (creating its directory), with `mode`.
    pub fn write_file(&self, inside: &str, content: &[u8], mode: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(inside);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = File::create(&path)?;
        file.write_all(content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Reads a file of the container.
    pub fn read_file(&self, inside: &str) -> anyhow::Result<Vec<u8>> {
        std::fs::read(self.path(inside)).with_context(|| format!("read {inside}"))
    }

    /// Whether a path exists inside the container (without following a last symlink).
    pub fn exists(&self, inside: &str) -> bool {
        std::fs::symlink_metadata(self.path(inside)).is_ok()
    }

    /// Copies a file of this machine into the container.
    pub fn copy_in(&self, from: &Path, inside: &str, mode: u32) -> anyhow::Result<()> {
        let content = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
        self.write_file(inside, &content, mode)
    }

    fn kill(&mut self) {
        if self.init_pid != 0 {
            // SIGKILL to a PID namespace's init ends every process in it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init_pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.nspawn.take() {
            let _ = child.start_kill();
            if let Some(pid) = child.id() {
                // Reap it, so its mounts are gone before the root is removed.
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Child processes of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    found
}

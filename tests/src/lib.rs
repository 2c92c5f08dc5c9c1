//! The test harness: starts the real `zpanel-cp`, `zpanel-bridge` and `zpanel` binaries on
//! loopback, each in its own temporary directory, and drives them like a user would. Used
//! by the end-to-end tests in `tests/tests` and by the benchmark program.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

pub mod browser;
pub mod docker;
pub mod files;
pub mod nspawn;
pub mod pty;
pub mod web;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Polls `$cond` (an async expression yielding bool) until it holds or `$timeout` passes.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

/// Directory holding the workspace's binaries (the test executable lives in `deps/` below
/// it; the benchmark program lives beside them).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Resident and peak memory of a process, in KiB, from /proc.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A running control plane.
pub struct ControlPlane {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub bridge_url: String,
    pub pin: String,
    pub admin_token: String,
    pub stdout: String,
    extra_args: Vec<String>,
}

impl ControlPlane {
    /// Starts a control plane with a 1 s heartbeat on free loopback ports.
    pub async fn start() -> ControlPlane {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_args: &[&str]) -> ControlPlane {
        Self::start_on("127.0.0.1", extra_args).await
    }

    /// Like [`ControlPlane::start_with`], both listeners on `ip` (free ports): its URLs,
    /// and so the install command, name that address (e.g. [`nspawn::Machine::host_ip`]).
    pub async fn start_on(ip: &str, extra_args: &[&str]) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("zpanel-cp-")
            .tempdir()
            .expect("temp dir");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut cp = ControlPlane {
            child: None,
            dir,
            url: String::new(),
            bridge_url: String::new(),
            pin: String::new(),
            admin_token: String::new(),
            stdout: String::new(),
            extra_args,
        };
        cp.launch(&format!("{ip}:0"), &format!("{ip}:0"))
            .await
            .expect("control plane starts");
        cp
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("cp.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    async fn launch(&mut self, listen: &str, bridge_listen: &str) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new(bin("zpanel-cp"))
            .args([
                "serve",
                "--listen",
                listen,
                "--bridge-listen",
                bridge_listen,
                "--heartbeat-interval",
                "1s",
            ])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawn zpanel-cp")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = String::new();
        let read = async {
            while let Some(line) = lines.next_line().await? {
                printed.push_str(&line);
                printed.push('\n');
                let mut words = line.split_whitespace();
                match (words.next(), words.next_back()) {
                    (Some("web:"), Some(url)) => self.url = url.to_string(),
                    (Some("bridge:"), Some(url)) => self.bridge_url = url.to_string(),
                    (Some("CA"), Some(pin)) => self.pin = pin.to_string(),
                    (Some("admin"), Some(_)) => return Ok::<_, anyhow::Error>(()),
                    _ => {}
                }
            }
            bail!("zpanel-cp exited before it was ready")
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .context("zpanel-cp ready")??;
        self.stdout = printed;
        self.admin_token = std::fs::read_to_string(self.dir.path().join("admin-token"))?
            .trim()
            .to_string();
        self.child = Some(child);
        Ok(())
    }

    fn ports(&self) -> (String, String) {
        let authority = |url: &str| {
            url.split("://")
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string()
        };
        (authority(&self.url), authority(&self.bridge_url))
    }

    /// Stops the control plane abruptly (SIGKILL).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops it and starts it again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        let (web, bridge) = self.ports();
        let mut last = None;
        for _ in 0..50 {
            match self.launch(&web, &bridge).await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("control plane did not restart: {last:?}");
    }

    /// `zpanel-cp ARGS --data-dir DIR`: the admin command (`ca rotate`, `ca-pin`, ...) on this
    /// control plane's data directory.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("zpanel-cp"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .kill_on_drop(true);
        command
    }

    /// Runs `zpanel-cp ARGS --data-dir DATA_DIR` to its end.
    pub async fn run_admin(&self, args: &[&str]) -> Output {
        self.admin_command(args)
            .output()
            .await
            .expect("run zpanel-cp")
    }

    /// The admin's generated web password (`DATA_DIR/admin-password`).
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin-password"))
            .expect("admin-password file")
            .trim()
            .to_string()
    }

    /// A CLI logged in as the admin (reading the token from its file, as the README does).
    pub async fn admin_cli(&self) -> Cli {
        let cli = Cli::new();
        let token_file = self.dir.path().join("admin-token");
        let out = cli
            .run(&[
                "login",
                "--server",
                &self.url,
                "--token-file",
                token_file.to_str().expect("utf-8 path"),
                "--ca-pin",
                &self.pin,
            ])
            .await;
        assert!(
            out.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cli
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        http_get(&self.url, "/metrics", &self.pin)
            .await
            .unwrap_or_default()
    }

    /// A value from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Enrols and starts a daemon named `name`, and waits until the host is online.
    pub async fn add_online_host(&self, cli: &Cli, name: &str) -> Daemon {
        self.add_online_host_with(cli, name, &[], |_| {}).await
    }

    /// Like [`ControlPlane::add_online_host`], with `prepare` run on the enrolled daemon
    /// before it starts (to change its configuration) and extra `run` flags.
    pub async fn add_online_host_with(
        &self,
        cli: &Cli,
        name: &str,
        flags: &[&str],
        prepare: impl FnOnce(&Daemon),
    ) -> Daemon {
        self.add_online_host_labelled(cli, name, &[], flags, prepare)
            .await
    }

    /// Like [`ControlPlane::add_online_host_with`], the host enrolled with these labels
    /// (`KEY=VALUE`, see [`Daemon::join_labelled`]).
    pub async fn add_online_host_labelled(
        &self,
        cli: &Cli,
        name: &str,
        labels: &[&str],
        flags: &[&str],
        prepare: impl FnOnce(&Daemon),
    ) -> Daemon {
        let token = cli.join_token(1).await;
        let daemon = Daemon::join_labelled(self, &token, name, labels)
            .await
            .expect("join");
        prepare(&daemon);
        let mut all_flags = QUICK_RECONNECT.to_vec();
        all_flags.extend_from_slice(flags);
        let daemon = daemon.start_with(&all_flags).await;
        assert_eventually!(
            cli.host_status(name).await.as_deref() == Some("online"),
            Duration::from_secs(30),
            "host {name} never came online"
        );
        daemon
    }

    /// Enrols and starts a daemon named `name` that manages the test Docker engine
    /// ([`docker::endpoint`]), and waits until the host is online.
    pub async fn add_docker_host(&self, cli: &Cli, name: &str) -> Daemon {
        let endpoint = docker::endpoint();
        self.add_online_host_with(cli, name, &[], |daemon| {
            daemon.set_docker_endpoint(&endpoint)
        })
        .await
    }

    /// Enrols and starts a daemon named `name`.
    pub async fn add_host(&self, cli: &Cli, name: &str) -> Daemon {
        let token = cli.join_token(1).await;
        let daemon = Daemon::join(self, &token, name).await.expect("join");
        daemon.start().await
    }
}

/// The reconnect backoff of test daemons: quick, so tests do not wait on it.
const QUICK_RECONNECT: [&str; 4] = ["--reconnect-base", "100ms", "--reconnect-max", "1s"];

/// `host:port` and the bare host of a URL such as `https://127.0.0.1:8443/`.
pub fn authority_and_host(url: &str) -> anyhow::Result<(String, String)> {
    let authority = url
        .split("://")
        .nth(1)
        .with_context(|| format!("{url:?} is not a URL"))?
        .trim_end_matches('/')
        .to_string();
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&authority)
        .trim_matches(['[', ']'])
        .to_string();
    Ok((authority, host))
}

/// One GET over HTTPS trusting the pinned CA.
pub async fn http_get(url: &str, path: &str, pin: &str) -> anyhow::Result<String> {
    Ok(web::request(url, pin, "GET", path, &[], None).await?.body)
}

/// The `zpanel` CLI with its own config directory.
pub struct Cli {
    pub config_dir: tempfile::TempDir,
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            config_dir: tempfile::Builder::new()
                .prefix("zpanel-cli-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("zpanel"));
        command
            .args(args)
            .env("ZPANEL_CONFIG_DIR", self.config_dir.path())
            .env_remove("ZPANEL_TOKEN");
        command.kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, b"").await
    }

    pub async fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zpanel");
        let mut pipe = child.stdin.take().expect("stdin");
        let input = stdin.to_vec();
        let writer = tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
        let output = child.wait_with_output().await.expect("zpanel output");
        let _ = writer.await;
        output
    }

    /// A fresh single- or multi-use join token.
    pub async fn join_token(&self, uses: u32) -> String {
        let out = self
            .run(&["tokens", "create", "--uses", &uses.to_string(), "--json"])
            .await;
        assert!(
            out.status.success(),
            "tokens create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["token"].as_str().expect("token").to_string()
    }

    /// `zpanel tokens create --json` with `extra` flags: the token and the install command
    /// printed with it (what a user pastes on the new host).
    pub async fn create_token(&self, extra: &[&str]) -> JoinToken {
        let mut args = vec!["tokens", "create", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        assert!(
            out.status.success(),
            "tokens create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let field = |name: &str| json[name].as_str().expect(name).to_string();
        JoinToken {
            token: field("token"),
            install_command: field("install_command"),
        }
    }

    /// `zpanel hosts --json`, parsed.
    pub async fn hosts(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["hosts", "--json"]).await;
        assert!(
            out.status.success(),
            "hosts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("hosts json")
    }

    /// The host named `name` as `zpanel hosts --json` lists it.
    pub async fn host(&self, name: &str) -> Option<serde_json::Value> {
        self.hosts().await.into_iter().find(|h| h["name"] == name)
    }

    pub async fn host_status(&self, name: &str) -> Option<String> {
        self.host(name)
            .await
            .and_then(|h| h["status"].as_str().map(str::to_string))
    }
}

/// A join token and the install command `zpanel tokens create` printed with it.
pub struct JoinToken {
    pub token: String,
    pub install_command: String,
}

/// Runs `zpanel-bridge join` into `config_dir` and reads the host's id from the
/// `bridge.toml` it wrote; the output's failure is returned as the error.
pub async fn join_into(
    config_dir: &Path,
    cp: &ControlPlane,
    token: &str,
    name: &str,
    pin: &str,
    labels: &[&str],
) -> anyhow::Result<String> {
    let out = Command::new(bin("zpanel-bridge"))
        .args(["join", "--server", &cp.url, "--ca-pin", pin, "--name", name])
        .args(labels.iter().flat_map(|label| ["--label", label]))
        .arg("--config-dir")
        .arg(config_dir)
        .env("ZPANEL_JOIN_TOKEN", token)
        .output()
        .await?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let settings: toml::Value =
        toml::from_str(&std::fs::read_to_string(config_dir.join("bridge.toml"))?)?;
    Ok(settings["host_id"].as_str().context("host_id")?.to_string())
}

/// An enrolled daemon, maybe running.
pub struct Daemon {
    child: Option<Child>,
    pub config_dir: tempfile::TempDir,
    pub name: String,
    pub host_id: String,
}

impl Daemon {
    /// Runs `zpanel-bridge join`; the output's failure is returned as the error.
    pub async fn join(cp: &ControlPlane, token: &str, name: &str) -> anyhow::Result<Daemon> {
        Self::join_with_pin(cp, token, name, &cp.pin).await
    }

    /// Like [`Daemon::join`], checking the control plane's certificate against `pin`.
    pub async fn join_with_pin(
        cp: &ControlPlane,
        token: &str,
        name: &str,
        pin: &str,
    ) -> anyhow::Result<Daemon> {
        Self::enrol(cp, token, name, pin, &[]).await
    }

    /// Like [`Daemon::join`], the host enrolled with these labels (`KEY=VALUE`, each passed
    /// as `--label`).
    pub async fn join_labelled(
        cp: &ControlPlane,
        token: &str,
        name: &str,
        labels: &[&str],
    ) -> anyhow::Result<Daemon> {
        Self::enrol(cp, token, name, &cp.pin, labels).await
    }

    /// Runs `zpanel-bridge join` in a fresh config directory and reads the host's id from
    /// the `bridge.toml` it wrote.
    async fn enrol(
        cp: &ControlPlane,
        token: &str,
        name: &str,
        pin: &str,
        labels: &[&str],
    ) -> anyhow::Result<Daemon> {
        let config_dir = tempfile::Builder::new()
            .prefix("zpanel-bridge-")
            .tempdir()?;
        let host_id = join_into(config_dir.path(), cp, token, name, pin, labels).await?;
        Ok(Daemon {
            child: None,
            config_dir,
            name: name.into(),
            host_id,
        })
    }

    /// Runs `zpanel-bridge join` again in this daemon's config directory, as re-running the
    /// install does; answers the host id it enrolled as.
    pub async fn join_again(&self, cp: &ControlPlane, token: &str) -> anyhow::Result<String> {
        join_into(self.config_dir.path(), cp, token, &self.name, &cp.pin, &[]).await
    }

    pub fn log_path(&self) -> PathBuf {
        self.config_dir.path().join("bridge.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `zpanel-bridge run` with quick reconnects.
    pub async fn start(self) -> Daemon {
        self.start_with(&QUICK_RECONNECT).await
    }

    /// Starts `zpanel-bridge run` with the given reconnect backoff (base and cap).
    pub async fn start_reconnecting(self, base: &str, max: &str) -> Daemon {
        self.start_with(&["--reconnect-base", base, "--reconnect-max", max])
            .await
    }

    /// Starts `zpanel-bridge run` with these flags (and the default backoff of `run`
    /// unless they set it).
    pub async fn start_with(mut self, flags: &[&str]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let child = Command::new(bin("zpanel-bridge"))
            .arg("run")
            .arg("--config-dir")
            .arg(self.config_dir.path())
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn zpanel-bridge");
        self.child = Some(child);
        self
    }

    /// Makes the (not yet started) daemon serve files under these roots only
    /// (`[files] roots` in its `bridge.toml`).
    pub fn set_file_roots(&self, roots: &[&Path]) {
        let roots: Vec<String> = roots
            .iter()
            .map(|root| format!("{:?}", root.to_str().expect("utf-8 root")))
            .collect();
        self.append_settings(&format!("[files]\nroots = [{}]\n", roots.join(", ")));
    }

    /// Sets the (not yet started) daemon's `[policy]` in its `bridge.toml`: the capabilities
    /// it offers (every one when `None`) and the channels it allows at once (256 when `None`).
    pub fn set_policy(&self, capabilities: Option<&[&str]>, max_channels: Option<usize>) {
        let mut table = String::from("[policy]\n");
        if let Some(capabilities) = capabilities {
            let names: Vec<String> = capabilities
                .iter()
                .map(|name| format!("{name:?}"))
                .collect();
            table.push_str(&format!("capabilities = [{}]\n", names.join(", ")));
        }
        if let Some(max_channels) = max_channels {
            table.push_str(&format!("max_channels = {max_channels}\n"));
        }
        self.append_settings(&table);
    }

    /// Points the daemon at a Docker engine (`[docker] endpoint`).
    pub fn set_docker_endpoint(&self, endpoint: &str) {
        self.append_settings(&format!("[docker]\nendpoint = {endpoint:?}\n"));
    }

    /// Sets how often the (not yet started) daemon takes a metrics sample (`[metrics]
    /// interval`, e.g. `"10s"`).
    pub fn set_metrics_interval(&self, interval: &str) {
        self.append_settings(&format!("[metrics]\ninterval = {interval:?}\n"));
    }

    /// Appends a table to the daemon's `bridge.toml`.
    fn append_settings(&self, table: &str) {
        let path = self.config_dir.path().join("bridge.toml");
        let mut settings = std::fs::read_to_string(&path).expect("bridge.toml");
        settings.push('\n');
        settings.push_str(table);
        std::fs::write(&path, settings).expect("write bridge.toml");
    }

    /// A second, not yet started daemon with this one's identity (a copy of its config
    /// directory, without its log), as a cloned machine would have.
    pub fn with_same_identity(&self) -> Daemon {
        let config_dir = tempfile::Builder::new()
            .prefix("zpanel-bridge-")
            .tempdir()
            .expect("temp dir");
        for entry in std::fs::read_dir(self.config_dir.path()).expect("config dir") {
            let entry = entry.expect("config dir entry");
            if entry.file_name() != "bridge.log" {
                std::fs::copy(entry.path(), config_dir.path().join(entry.file_name()))
                    .expect("copy");
            }
        }
        Daemon {
            child: None,
            config_dir,
            name: self.name.clone(),
            host_id: self.host_id.clone(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Pins of the CA certificates in the daemon's `ca.pem` (the bundle it trusts).
    pub fn trusted_ca_pins(&self) -> Vec<String> {
        let pem = std::fs::read(self.config_dir.path().join("ca.pem")).expect("ca.pem");
        zpanel_shared::tls::certs_from_pem(&pem)
            .expect("ca.pem parses")
            .iter()
            .map(|c| zpanel_shared::tls::ca_pin(c))
            .collect()
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Sends a signal to the daemon process (e.g. SIGSTOP to make it a silent peer).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }
}

/// Stdout of a CLI run that must succeed (`what` names it if it did not), as text.
#[track_caller]
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
    stdout(out)
}

/// Stdout of a CLI run as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Stderr of a CLI run as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

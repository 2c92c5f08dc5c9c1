//! The daemon's configuration: what `join` stores in the config directory (identity and
//! where the control plane is), the runtime flags of `run`, and those of `container-shell`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_DIR: &str = "/etc/zpanel";
pub const SETTINGS_FILE: &str = "bridge.toml";
pub const KEY_FILE: &str = "key.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const CA_FILE: &str = "ca.pem";
/// Where the Docker engine answers when `[docker] endpoint` does not say.
pub const DOCKER_HOST_VARIABLE: &str = "DOCKER_HOST";
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";

#[derive(Debug, Parser)]
#[command(name = "zpanel-bridge", version, about = "Zpanel bridge daemon")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrol this host with a control plane using a join token.
    Join(JoinArgs),
    /// Keep this host's session to the control plane open.
    Run(RunArgs),
    /// A shell inside a container, relayed through the engine: what a terminal session in a
    /// container runs in its pseudo-terminal (started by the daemon, not by hand).
    #[command(hide = true)]
    ContainerShell(ContainerShellArgs),
    /// Rolls an upgrade back when the new daemon has no session by the deadline in
    /// `upgrade.json`: what the transient unit an upgrade starts runs, from the previous
    /// binary (started by the daemon, not by hand).
    #[command(hide = true)]
    UpgradeGuard(UpgradeGuardArgs),
}

#[derive(Debug, Args)]
pub struct UpgradeGuardArgs {
    #[arg(long, env = "ZPANEL_BRIDGE_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ContainerShellArgs {
    /// The engine: `unix:///path` or `tcp://host:port`.
    #[arg(long)]
    pub endpoint: String,
    /// The container, by id or name.
    #[arg(long)]
    pub container: String,
    /// The user inside the container; default: the image's.
    #[arg(long)]
    pub user: Option<String>,
    /// The command to run; default: `sh`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Control plane URL (its web listener), e.g. https://panel.example.com:8443
    #[arg(long, env = "ZPANEL_SERVER")]
    pub server: String,
    /// Join token from `zpanel tokens create`.
    #[arg(
        long,
        env = "ZPANEL_JOIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the join token from this file (`-`: stdin) instead of the command line.
    #[arg(long, env = "ZPANEL_JOIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The control plane's CA pin (sha256:<hex>), checked before the token is sent.
    #[arg(long, env = "ZPANEL_CA_PIN")]
    pub ca_pin: String,
    /// Name of this host in the panel (default: its hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// A label to select the host by, KEY=VALUE (repeatable), e.g. --label env=prod.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[arg(long, env = "ZPANEL_BRIDGE_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[arg(long, env = "ZPANEL_BRIDGE_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// First reconnect delay ceiling; doubles per failed attempt (full jitter).
    #[arg(long, env = "ZPANEL_RECONNECT_BASE", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub reconnect_base: Duration,
    /// Largest reconnect delay.
    #[arg(long, env = "ZPANEL_RECONNECT_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reconnect_max: Duration,
    /// How long a command keeps running with nobody attached before it is killed, and how
    /// long a finished command's output is kept for a client to resume.
    #[arg(long, env = "ZPANEL_EXEC_DETACH_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub exec_detach_timeout: Duration,
    /// Terminal output kept for viewers that attach with nothing (the recent screen), besides
    /// what the controller has not acknowledged: bytes, or with a KiB or MiB suffix.
    #[arg(long, env = "ZPANEL_TERMINAL_SCROLLBACK", default_value = "1MiB", value_parser = parse_bytes)]
    pub terminal_scrollback: usize,
    /// How long a terminal session keeps running with no viewer before it is killed.
    #[arg(long, env = "ZPANEL_TERMINAL_IDLE_TIMEOUT", default_value = "12h", value_parser = humantime::parse_duration)]
    pub terminal_idle_timeout: Duration,
    /// Terminal sessions this host runs at most at once.
    #[arg(long, env = "ZPANEL_TERMINAL_MAX_SESSIONS", default_value_t = 256)]
    pub terminal_max_sessions: usize,
}

/// A size in bytes: `1048576`, `512KiB`, `1MiB`.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1024,
        "MiB" | "M" => 1024 * 1024,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use bytes, KiB or MiB"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|number| number.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a size in bytes (e.g. 1MiB)"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not KEY=VALUE"))?;
    zpanel_shared::enroll::check_label(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// `bridge.toml`: written by `join`, read by `run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub host_id: String,
    pub name: String,
    /// The control plane's web URL (enrolment).
    pub server_url: String,
    /// The control plane's bridge URL (sessions).
    pub bridge_url: String,
    /// Which local account terminal sessions run as (written by hand; `join` leaves it out).
    #[serde(default, skip_serializing_if = "TerminalAccounts::is_empty")]
    pub terminal: TerminalAccounts,
    /// Which directories the file service serves (written by hand; `join` leaves it out).
    #[serde(default, skip_serializing_if = "FileRoots::is_default")]
    pub files: FileRoots,
    /// What the host offers through its session (written by hand; `join` leaves it out).
    #[serde(default, skip_serializing_if = "Policy::is_default")]
    pub policy: Policy,
    /// Where the Docker engine answers (written by hand; `join` leaves it out).
    #[serde(default, skip_serializing_if = "DockerSettings::is_default")]
    pub docker: DockerSettings,
    /// How often metrics are collected and how many are kept for the control plane (written
    /// by hand; `join` leaves it out).
    #[serde(default, skip_serializing_if = "MetricsSettings::is_default")]
    pub metrics: MetricsSettings,
}

/// `[policy]` in `bridge.toml`: what this host offers, whatever the control plane asks.
/// Absent: every capability and 256 channels. Read once at start; a restart applies changes.
/// Unknown keys are refused: a misspelt key must not quietly leave everything offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub capabilities: BTreeSet<Capability>,
    /// Channels open at once on the session, at most (at least 1).
    #[serde(deserialize_with = "at_least_one_channel")]
    pub max_channels: usize,
}

/// What a host can offer through its session, by its name in `[policy] capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Commands (`zpanel exec`).
    Exec,
    /// Terminal sessions (`zpanel shell`, the browser's terminals).
    Terminal,
    /// The file service (`zpanel ls`, `cp`, the browser's file manager).
    Files,
    /// Containers, images, volumes and networks (`zpanel docker`, the browser's containers
    /// page, shells inside containers).
    Docker,
    /// Metrics collected for the control plane, and the process list.
    Metrics,
    /// Replacing the daemon's own executable with one the control plane sends
    /// (`zpanel hosts upgrade`; only under systemd, with a rollback guard).
    Upgrade,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Exec,
        Capability::Terminal,
        Capability::Files,
        Capability::Docker,
        Capability::Metrics,
        Capability::Upgrade,
    ];

    /// Its name in `bridge.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Exec => "exec",
            Capability::Terminal => "terminal",
            Capability::Files => "files",
            Capability::Docker => "docker",
            Capability::Metrics => "metrics",
            Capability::Upgrade => "upgrade",
        }
    }

    /// What it offers, for a refusal.
    pub fn offers(self) -> &'static str {
        match self {
            Capability::Exec => "commands",
            Capability::Terminal => "terminals",
            Capability::Files => "files",
            Capability::Docker => "containers",
            Capability::Metrics => "metrics and processes",
            Capability::Upgrade => "upgrades of its daemon",
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            capabilities: Capability::ALL.into(),
            max_channels: 256,
        }
    }
}

impl Policy {
    pub fn offers(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    fn is_default(&self) -> bool {
        self == &Policy::default()
    }
}

fn at_least_one_channel<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<usize, D::Error> {
    match usize::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom(
            "max_channels must be at least 1 (to offer nothing, set capabilities = [])",
        )),
        max => Ok(max),
    }
}

/// `[files]` in `bridge.toml`: the directories served. Absent: `/` for a daemon running as
/// root, else its account's home; `roots = []` turns the file service off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRoots {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<PathBuf>>,
}

impl FileRoots {
    /// The roots to serve, the default when none are configured.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots
            .clone()
            .unwrap_or_else(crate::files::Files::default_roots)
    }

    fn is_default(&self) -> bool {
        self == &FileRoots::default()
    }
}

/// `[docker]` in `bridge.toml`: where the Docker engine answers. Absent: `DOCKER_HOST`, else
/// `unix:///var/run/docker.sock`. Unknown keys are refused like `[policy]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// `unix:///path` or `tcp://host:port`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "docker_endpoint"
    )]
    pub endpoint: Option<String>,
}

impl DockerSettings {
    /// The engine's endpoint: `[docker] endpoint`, else `DOCKER_HOST`, else the usual socket.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var(DOCKER_HOST_VARIABLE).ok())
            .filter(|endpoint| !endpoint.is_empty())
            .unwrap_or_else(|| DEFAULT_DOCKER_ENDPOINT.to_string())
    }

    fn is_default(&self) -> bool {
        self == &DockerSettings::default()
    }
}

/// Why an endpoint is not one the daemon can reach, if it is not.
pub fn check_docker_endpoint(endpoint: &str) -> Result<(), String> {
    match endpoint.split_once("://") {
        Some(("unix", path)) if path.starts_with('/') => Ok(()),
        Some(("tcp", address)) if !address.is_empty() => Ok(()),
        _ => Err(format!(
            "docker endpoint {endpoint:?} is neither unix:///path nor tcp://host:port"
        )),
    }
}

fn docker_endpoint<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let endpoint = String::deserialize(deserializer)?;
    check_docker_endpoint(&endpoint).map_err(serde::de::Error::custom)?;
    Ok(Some(endpoint))
}

/// `[metrics]` in `bridge.toml`: how often a sample is taken and how long samples are kept
/// while the control plane cannot take them. Unknown keys are refused like `[policy]`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Between two samples, 1 s to 1 h.
    #[serde(with = "metrics_interval")]
    pub interval: Duration,
    /// Samples kept for the control plane at most, as a time at the interval (at most
    /// [`MetricsSettings::MAX_BUFFERED`] samples).
    #[serde(with = "duration_text")]
    pub buffer: Duration,
}

impl Default for MetricsSettings {
    fn default() -> MetricsSettings {
        MetricsSettings {
            interval: Duration::from_secs(10),
            buffer: Duration::from_secs(2 * 3600),
        }
    }
}

impl MetricsSettings {
    /// The most samples the buffer holds, whatever `buffer` says.
    pub const MAX_BUFFERED: usize = 100_000;

    /// How many samples the buffer holds: `buffer` at the interval, at least one.
    pub fn buffered_samples(&self) -> usize {
        let samples = self.buffer.as_millis() / self.interval.as_millis().max(1);
        (samples as usize).clamp(1, Self::MAX_BUFFERED)
    }

    fn is_default(&self) -> bool {
        self == &MetricsSettings::default()
    }
}

/// Durations in `bridge.toml` as humantime writes them (`10s`, `2h`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
    }
}

/// `[metrics] interval`: a duration from 1 s to 1 h.
mod metrics_interval {
    use std::time::Duration;

    use serde::Deserializer;

    pub use super::duration_text::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let interval = super::duration_text::deserialize(deserializer)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&interval) {
            return Err(serde::de::Error::custom(
                "metrics interval must be from 1s to 1h",
            ));
        }
        Ok(interval)
    }
}

/// `[terminal]` in `bridge.toml`: the local account of each control-plane user's shells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalAccounts {
    /// For every control-plane user not in `users`; default: the daemon's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Control-plane user name → local account.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, String>,
}

impl TerminalAccounts {
    /// The configured account for a control-plane user; `None`: the daemon's own.
    pub fn account_for(&self, owner_name: &str) -> Option<&str> {
        self.users
            .get(owner_name)
            .or(self.user.as_ref())
            .map(String::as_str)
    }

    fn is_empty(&self) -> bool {
        self == &TerminalAccounts::default()
    }
}

/// The hand-written tables of `bridge.toml`, which `join` keeps (they may be written before
/// the host enrols).
#[derive(Debug, Default, Deserialize)]
pub struct HandWritten {
    #[serde(default)]
    pub terminal: TerminalAccounts,
    #[serde(default)]
    pub files: FileRoots,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub docker: DockerSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
}

impl HandWritten {
    /// The tables of `bridge.toml` in `dir`; none when there is no such file yet.
    pub fn load(dir: &Path) -> anyhow::Result<HandWritten> {
        let path = dir.join(SETTINGS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| invalid_settings(&path, &text, &e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HandWritten::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// One line for a `bridge.toml` that does not parse: the file, the line and what is wrong
/// (serde's message names a bad value and the allowed ones).
fn invalid_settings(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let line = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| format!(" line {}:", before.matches('\n').count() + 1));
    anyhow::anyhow!(
        "{} is not valid:{} {}",
        path.display(),
        line.unwrap_or_default(),
        e.message().trim_end()
    )
}

impl Settings {
    pub fn load(dir: &Path) -> anyhow::Result<Settings> {
        let path = dir.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (enrol first with `zpanel-bridge join`)",
                path.display()
            )
        })?;
        toml::from_str(&text).map_err(|e| invalid_settings(&path, &text, &e))
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self)?;
        zpanel_shared::fsutil::write_atomic(&dir.join(SETTINGS_FILE), text.as_bytes(), 0o644)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_accounts_are_optional_and_mapped_by_user_name() {
        let old = "host_id = \"h\"\nname = \"n\"\nserver_url = \"https://s\"\nbridge_url = \"https://b\"\n";
        let settings: Settings = toml::from_str(old).unwrap();
        assert_eq!(settings.terminal.account_for("alice"), None);
        assert_eq!(settings.files.roots, None);
        assert_eq!(toml::to_string(&settings).unwrap(), old);

        let text =
            format!("{old}[terminal]\nuser = \"ops\"\n\n[terminal.users]\nalice = \"alice\"\n");
        let settings: Settings = toml::from_str(&text).unwrap();
        assert_eq!(settings.terminal.account_for("alice"), Some("alice"));
        assert_eq!(settings.terminal.account_for("bob"), Some("ops"));

        let text = format!("{old}[files]\nroots = [\"/srv\", \"/var/log\"]\n");
        let settings: Settings = toml::from_str(&text).unwrap();
        assert_eq!(
            settings.files.roots(),
            [PathBuf::from("/srv"), "/var/log".into()]
        );
        let off: Settings = toml::from_str(&format!("{old}[files]\nroots = []\n")).unwrap();
        assert!(off.files.roots().is_empty());
    }

    #[test]
    fn policy_defaults_to_everything_and_names_what_is_wrong() {
        let old = "host_id = \"h\"\nname = \"n\"\nserver_url = \"https://s\"\nbridge_url = \"https://b\"\n";
        let settings: Settings = toml::from_str(old).unwrap();
        assert_eq!(settings.policy, Policy::default());
        assert!(Capability::ALL.iter().all(|c| settings.policy.offers(*c)));
        assert_eq!(settings.policy.max_channels, 256);

        let text =
            format!("{old}[policy]\ncapabilities = [\"terminal\", \"docker\"]\nmax_channels = 4\n");
        let settings: Settings = toml::from_str(&text).unwrap();
        assert!(settings.policy.offers(Capability::Terminal));
        assert!(!settings.policy.offers(Capability::Exec));
        assert_eq!(settings.policy.max_channels, 4);
        let saved: Settings = toml::from_str(&toml::to_string(&settings).unwrap()).unwrap();
        assert_eq!(saved.policy, settings.policy);

        let dir = tempfile::tempdir().unwrap();
        let load = |policy: &str| {
            std::fs::write(dir.path().join(SETTINGS_FILE), format!("{old}{policy}")).unwrap();
            Settings::load(dir.path()).unwrap_err().to_string()
        };
        let path = dir.path().join(SETTINGS_FILE).display().to_string();
        assert_eq!(
            load("[policy]\ncapabilities = [\"exec\", \"shell\"]\n"),
            format!(
                "{path} is not valid: line 6: unknown variant `shell`, \
                 expected one of `exec`, `terminal`, `files`, `docker`, `metrics`, `upgrade`"
            )
        );
        assert_eq!(
            load("[policy]\nmax_channels = 0\n"),
            format!(
                "{path} is not valid: line 6: \
                 max_channels must be at least 1 (to offer nothing, set capabilities = [])"
            )
        );
        // a misspelt key must not leave every capability offered
        assert!(
            load("[policy]\ncapabilites = [\"exec\"]\n").contains("unknown field `capabilites`")
        );
    }

    #[test]
    fn join_keeps_the_hand_written_tables() {
        let dir = tempfile::tempdir().unwrap();
        let kept = HandWritten::load(dir.path()).unwrap();
        assert_eq!(kept.policy, Policy::default());
        let text = "[policy]\ncapabilities = [\"files\"]\n\n[files]\nroots = [\"/srv\"]\n\n\
                    [docker]\nendpoint = \"tcp://127.0.0.1:2375\"\n";
        std::fs::write(dir.path().join(SETTINGS_FILE), text).unwrap();
        let kept = HandWritten::load(dir.path()).unwrap();
        assert_eq!(
            kept.policy.capabilities,
            BTreeSet::from([Capability::Files])
        );
        assert_eq!(kept.files.roots(), [PathBuf::from("/srv")]);
        assert_eq!(kept.docker.endpoint(), "tcp://127.0.0.1:2375");
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "[policy]\nmax_channels = -1\n",
        )
        .unwrap();
        assert!(HandWritten::load(dir.path()).is_err());
    }

    #[test]
    fn the_docker_endpoint_is_checked_and_kept() {
        let old = "host_id = \"h\"\nname = \"n\"\nserver_url = \"https://s\"\nbridge_url = \"https://b\"\n";
        let settings: Settings = toml::from_str(old).unwrap();
        assert_eq!(settings.docker, DockerSettings::default());
        assert_eq!(toml::to_string(&settings).unwrap(), old);

        let text = format!("{old}\n[docker]\nendpoint = \"unix:///run/docker.sock\"\n");
        let settings: Settings = toml::from_str(&text).unwrap();
        assert_eq!(settings.docker.endpoint(), "unix:///run/docker.sock");
        assert_eq!(toml::to_string(&settings).unwrap(), text);

        let dir = tempfile::tempdir().unwrap();
        let load = |docker: &str| {
            std::fs::write(dir.path().join(SETTINGS_FILE), format!("{old}{docker}")).unwrap();
            Settings::load(dir.path()).unwrap_err().to_string()
        };
        let path = dir.path().join(SETTINGS_FILE).display().to_string();
        assert_eq!(
            load("[docker]\nendpoint = \"ssh://host\"\n"),
            format!(
                "{path} is not valid: line 6: \
                 docker endpoint \"ssh://host\" is neither unix:///path nor tcp://host:port"
            )
        );
        assert!(load("[docker]\nendpont = \"unix:///x\"\n").contains("unknown field `endpont`"));
    }

    #[test]
    fn metrics_default_to_ten_seconds_and_two_hours_and_are_checked() {
        let old = "host_id = \"h\"\nname = \"n\"\nserver_url = \"https://s\"\nbridge_url = \"https://b\"\n";
        let settings: Settings = toml::from_str(old).unwrap();
        assert_eq!(settings.metrics, MetricsSettings::default());
        assert_eq!(settings.metrics.buffered_samples(), 720);
        assert!(settings.policy.offers(Capability::Metrics));

        let text = format!("{old}\n[metrics]\ninterval = \"1m\"\nbuffer = \"1day\"\n");
        let settings: Settings = toml::from_str(&text).unwrap();
        assert_eq!(settings.metrics.interval, Duration::from_secs(60));
        assert_eq!(settings.metrics.buffered_samples(), 1440);
        assert_eq!(toml::to_string(&settings).unwrap(), text);
        let huge = format!("{old}[metrics]\ninterval = \"1s\"\nbuffer = \"365days\"\n");
        let settings: Settings = toml::from_str(&huge).unwrap();
        assert_eq!(
            settings.metrics.buffered_samples(),
            MetricsSettings::MAX_BUFFERED
        );

        let dir = tempfile::tempdir().unwrap();
        let load = |metrics: &str| {
            std::fs::write(dir.path().join(SETTINGS_FILE), format!("{old}{metrics}")).unwrap();
            Settings::load(dir.path()).unwrap_err().to_string()
        };
        let path = dir.path().join(SETTINGS_FILE).display().to_string();
        assert_eq!(
            load("[metrics]\ninterval = \"100ms\"\n"),
            format!("{path} is not valid: line 6: metrics interval must be from 1s to 1h")
        );
        assert!(load("[metrics]\nbuffer = \"soon\"\n").contains("\"soon\" is not a duration"));
        assert!(load("[metrics]\nintervall = \"5s\"\n").contains("unknown field `intervall`"));
    }

    #[test]
    fn sizes_take_a_unit() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("1GB").is_err());
        assert!(parse_bytes("MiB").is_err());
    }
}

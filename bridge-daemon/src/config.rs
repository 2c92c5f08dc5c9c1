//! The daemon's configuration: what `join` stores in the config directory (identity and
//! where the control plane is) and the runtime flags of `run`.

use std::collections::BTreeMap;
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

impl Settings {
    pub fn load(dir: &Path) -> anyhow::Result<Settings> {
        let path = dir.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (enrol first with `zpanel-bridge join`)",
                path.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
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
    fn sizes_take_a_unit() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("1GB").is_err());
        assert!(parse_bytes("MiB").is_err());
    }
}

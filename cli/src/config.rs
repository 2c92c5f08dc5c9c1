//! The CLI's settings: `$ZPANEL_CONFIG_DIR/config.toml` (default `~/.config/zpanel`), written
//! by `zpanel login` with mode 0600 because it holds the API token. `ZPANEL_SERVER`,
//! `ZPANEL_TOKEN` and `ZPANEL_CA_PIN` override it for scripts.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub server: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pin: Option<String>,
}

pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ZPANEL_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither ZPANEL_CONFIG_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config").join("zpanel"))
}

impl Settings {
    pub fn load() -> anyhow::Result<Settings> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let path = config_dir()?.join("config.toml");
        let mut settings = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| {
                format!("{} is not valid; run `zpanel login` again", path.display())
            })?,
            Err(_) => match (env("ZPANEL_SERVER"), env("ZPANEL_TOKEN")) {
                (Some(server), Some(token)) => Settings {
                    server,
                    token,
                    ca_pin: None,
                },
                _ => anyhow::bail!(
                    "not logged in; run `zpanel login --server URL --token TOKEN` first"
                ),
            },
        };
        if let Some(server) = env("ZPANEL_SERVER") {
            settings.server = server;
        }
        if let Some(token) = env("ZPANEL_TOKEN") {
            settings.token = token;
        }
        if let Some(pin) = env("ZPANEL_CA_PIN") {
            settings.ca_pin = Some(pin);
        }
        Ok(settings)
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let dir = config_dir()?;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let path = dir.join("config.toml");
        zpanel_shared::fsutil::write_atomic(&path, toml::to_string(self)?.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

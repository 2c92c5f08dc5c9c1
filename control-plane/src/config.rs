//! The control plane's configuration: command-line flags, each also readable from a
//! `ZPANEL_*` environment variable (flags win), checked once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "zpanel-cp", version, about = "Zpanel control plane")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of `serve`'s flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (first start creates the data directory).
    Serve(ServeArgs),
    /// Print the pin of the control plane's CA (sha256:<hex>).
    CaPin {
        #[arg(long, env = "ZPANEL_DATA_DIR", default_value = "/var/lib/zpanel")]
        data_dir: PathBuf,
    },
    /// Set or reset a user's web password (read from --password-file, or asked for).
    Passwd(PasswdArgs),
    /// The CA: rotate it, or see how a rotation is going.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Replace the CA without reinstalling any host: control planes sharing the data
    /// directory trust both CAs while every host's certificate is re-issued over its
    /// session, then the old CA is retired. Run it again to resume.
    Rotate(CaRotateArgs),
    /// Print the CA's pin, or how far a rotation is.
    Status {
        #[arg(long, env = "ZPANEL_DATA_DIR", default_value = "/var/lib/zpanel")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct CaRotateArgs {
    #[arg(long, env = "ZPANEL_DATA_DIR", default_value = "/var/lib/zpanel")]
    pub data_dir: PathBuf,
    /// How long to wait for every host to hold a certificate of the new CA.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// After the timeout, retire the old CA anyway: hosts still on it can no longer
    /// connect and must be enrolled again.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PasswdArgs {
    #[arg(long, env = "ZPANEL_DATA_DIR", default_value = "/var/lib/zpanel")]
    pub data_dir: PathBuf,
    /// The user whose password to set.
    #[arg(default_value = "admin")]
    pub user: String,
    /// Read the new password from the first line of this file (`-`: stdin).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database, CA, certificates and the admin token live here.
    #[arg(long, env = "ZPANEL_DATA_DIR", default_value = "/var/lib/zpanel")]
    pub data_dir: PathBuf,
    /// Web listener: browser, REST, enrolment and the operator gRPC API.
    #[arg(long, env = "ZPANEL_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Bridge listener: daemons' mTLS sessions.
    #[arg(long, env = "ZPANEL_BRIDGE_LISTEN", default_value = "0.0.0.0:8444")]
    pub bridge_listen: SocketAddr,
    /// URL users and daemons reach the web listener at (default: from --listen).
    #[arg(long, env = "ZPANEL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// URL daemons reach the bridge listener at (default: the public URL's host and the
    /// bridge port).
    #[arg(long, env = "ZPANEL_BRIDGE_URL")]
    pub bridge_url: Option<String>,
    /// Serve the web listener with this certificate chain (PEM) instead of one from the
    /// internal CA.
    #[arg(long, env = "ZPANEL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "ZPANEL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on the web listener (only behind a TLS-terminating proxy).
    #[arg(long, env = "ZPANEL_INSECURE_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// How often daemons send heartbeats; a daemon silent for three intervals is offline.
    #[arg(long, env = "ZPANEL_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Lifetime of the certificates issued to hosts.
    #[arg(long, env = "ZPANEL_HOST_CERT_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub host_cert_ttl: Duration,
    /// Also enrol and run a bridge daemon for this machine (config in DATA_DIR/local-host).
    #[arg(long, env = "ZPANEL_WITH_LOCAL_HOST")]
    pub with_local_host: bool,
    /// How long a browser login lasts.
    #[arg(long, env = "ZPANEL_WEB_SESSION_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
    pub web_session_ttl: Duration,
    /// Do not record terminal sessions (recordings are on by default).
    #[arg(long, env = "ZPANEL_NO_TERMINAL_RECORDING")]
    pub no_terminal_recording: bool,
    /// Delete terminal recordings older than this.
    #[arg(long, env = "ZPANEL_RECORDING_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub recording_retention: Duration,
    /// How often alert rules are evaluated.
    #[arg(long, env = "ZPANEL_ALERT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub alert_interval: Duration,
    /// SMTP server for e-mail alert channels that name none: smtp://[USER:PASSWORD@]HOST[:PORT]
    /// (STARTTLS when offered) or smtps://... (TLS).
    #[arg(long, env = "ZPANEL_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender address of alert e-mails whose channel names none.
    #[arg(long, env = "ZPANEL_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Daemon binaries for `install.sh` and `zpanel hosts upgrade`, named
    /// `zpanel-bridge-linux-ARCH` (default: the `zpanel-bridge` beside this program, for this
    /// machine's architecture).
    #[arg(long, env = "ZPANEL_DOWNLOADS_DIR")]
    pub downloads_dir: Option<std::path::PathBuf>,
    /// Keep hosts' raw metric samples this long.
    #[arg(long, env = "ZPANEL_METRICS_RAW_RETENTION", default_value = "48h", value_parser = humantime::parse_duration)]
    pub metrics_raw_retention: Duration,
    /// Keep 1-minute metric rollups this long.
    #[arg(long, env = "ZPANEL_METRICS_MINUTE_RETENTION", default_value = "14d", value_parser = humantime::parse_duration)]
    pub metrics_minute_retention: Duration,
    /// Keep 1-hour metric rollups this long.
    #[arg(long, env = "ZPANEL_METRICS_HOUR_RETENTION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub metrics_hour_retention: Duration,
}

/// A configuration error: exits with 64 (EX_USAGE) and one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ServeArgs {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(ConfigError(
                "--heartbeat-interval must be at least 100ms".into(),
            ));
        }
        if self.host_cert_ttl < Duration::from_secs(60) {
            return Err(ConfigError("--host-cert-ttl must be at least 1m".into()));
        }
        if self.web_session_ttl < Duration::from_secs(60) {
            return Err(ConfigError("--web-session-ttl must be at least 1m".into()));
        }
        if self.alert_interval < Duration::from_secs(1) {
            return Err(ConfigError("--alert-interval must be at least 1s".into()));
        }
        if let Some(url) = &self.smtp_url {
            crate::service::alerts::notify::smtp_transport(url)
                .map_err(|e| ConfigError(format!("--smtp-url: {e}")))?;
        }
        if let Some(from) = &self.smtp_from {
            from.parse::<lettre::message::Mailbox>()
                .map_err(|e| ConfigError(format!("--smtp-from {from:?}: {e}")))?;
        }
        if self.metrics_raw_retention < Duration::from_secs(600) {
            return Err(ConfigError(
                "--metrics-raw-retention must be at least 10m".into(),
            ));
        }
        if self.metrics_minute_retention < self.metrics_raw_retention
            || self.metrics_hour_retention < self.metrics_minute_retention
        {
            return Err(ConfigError(
                "metric retentions must grow with the resolution: --metrics-raw-retention <= --metrics-minute-retention <= --metrics-hour-retention".into(),
            ));
        }
        for (flag, url) in [
            ("--public-url", &self.public_url),
            ("--bridge-url", &self.bridge_url),
        ] {
            if let Some(url) = url {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|e| ConfigError(format!("{flag} {url:?} is not a URL: {e}")))?;
                if uri.host().is_none() {
                    return Err(ConfigError(format!("{flag} {url:?} has no host")));
                }
            }
        }
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        if self.insecure_http { "http" } else { "https" }
    }

    /// The web listener's public URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("{}://{}", self.scheme(), reachable(self.listen)),
        }
    }

    /// The bridge listener's URL as daemons dial it.
    pub fn bridge_url(&self) -> String {
        if let Some(url) = &self.bridge_url {
            return url.trim_end_matches('/').to_string();
        }
        let public: hyper::Uri = self.public_url().parse().expect("validated public url");
        let host = match (self.public_url.is_some(), public.host()) {
            (true, Some(host)) => host.to_string(),
            _ => reachable(self.bridge_listen).ip().to_string(),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        format!("wss://{host}:{}", self.bridge_listen.port())
    }
}

/// An address clients can dial for a listener (an unspecified address becomes loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["zpanel-cp", "serve", "--data-dir", "/tmp/x"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            Command::Serve(args) => args,
            Command::CaPin { .. } | Command::Passwd(_) | Command::Ca { .. } => unreachable!(),
        }
    }

    #[test]
    fn derives_urls_from_listeners() {
        let serve = args(&[
            "--listen",
            "0.0.0.0:9000",
            "--bridge-listen",
            "0.0.0.0:9001",
        ]);
        assert_eq!(serve.public_url(), "https://127.0.0.1:9000");
        assert_eq!(serve.bridge_url(), "wss://127.0.0.1:9001");
        let serve = args(&[
            "--public-url",
            "https://panel.example.com/",
            "--bridge-listen",
            "0.0.0.0:9001",
        ]);
        assert_eq!(serve.public_url(), "https://panel.example.com");
        assert_eq!(serve.bridge_url(), "wss://panel.example.com:9001");
    }

    #[test]
    fn refuses_bad_values() {
        assert!(args(&["--heartbeat-interval", "1ms"]).validate().is_err());
        assert!(args(&["--public-url", "not a url"]).validate().is_err());
        assert!(args(&["--metrics-raw-retention", "1m"]).validate().is_err());
        let shrinking = [
            "--metrics-raw-retention",
            "2d",
            "--metrics-minute-retention",
            "1d",
        ];
        assert!(args(&shrinking).validate().is_err());
        assert!(args(&[]).validate().is_ok());
    }
}

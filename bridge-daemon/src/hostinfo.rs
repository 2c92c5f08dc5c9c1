//! Facts about this machine reported in the session's hello.

use std::sync::OnceLock;

use zpanel_proto::HostInfo;

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into())
}

pub fn collect() -> HostInfo {
    HostInfo {
        hostname: hostname(),
        os: os_name(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.into(),
        daemon_version: zpanel_shared::VERSION.into(),
        daemon_sha256: daemon_sha256().into(),
        systemd: under_systemd(),
    }
}

/// Lower-case hex sha256 of the running executable (empty when it cannot be read), hashed
/// the first time it is asked for: `session::run` asks on a blocking thread at start.
pub fn daemon_sha256() -> &'static str {
    static SHA256: OnceLock<String> = OnceLock::new();
    SHA256.get_or_init(|| {
        match zpanel_shared::fsutil::sha256_file(std::path::Path::new("/proc/self/exe")) {
            Ok(sha256) => sha256,
            Err(e) => {
                tracing::warn!("cannot hash this daemon's executable: {e}");
                String::new()
            }
        }
    })
}

/// Whether the daemon runs as a systemd service (systemd sets `INVOCATION_ID` for it).
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some_and(|id| !id.is_empty())
}

fn os_name() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.into())
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

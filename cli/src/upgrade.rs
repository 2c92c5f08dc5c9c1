//! `zpanel hosts upgrade HOST...|--all`: the control plane sends its daemon binary to the
//! hosts; each host's progress is printed as it comes (a line, or a JSON line), and the
//! command fails when a host named did not end upgraded or up to date.

use std::time::Duration;

use serde::Serialize;
use zpanel_proto::{UpgradeHostsRequest, UpgradeProgress};

use crate::client::{self, call_failed};
use crate::config::Settings;

/// States after which nothing more comes for a host.
const FINAL: [&str; 6] = [
    "upgraded",
    "rolled_back",
    "failed",
    "up_to_date",
    "offline",
    "unsupported",
];

#[derive(Debug, Serialize)]
struct ProgressJson<'a> {
    host: &'a str,
    state: &'a str,
    detail: &'a str,
    from_sha256: &'a str,
    to_sha256: &'a str,
}

/// Upgrades `hosts` (or every host the caller may upgrade, with `all`).
pub async fn upgrade(
    settings: &Settings,
    hosts: Vec<String>,
    all: bool,
    rollback_after: Option<Duration>,
    json: bool,
) -> anyhow::Result<()> {
    let rollback_after_secs = match rollback_after {
        None => 0,
        Some(limit) if limit.as_secs() >= 1 && limit.subsec_nanos() == 0 => {
            u32::try_from(limit.as_secs())
                .map_err(|_| anyhow::anyhow!("--rollback-after is too long"))?
        }
        Some(_) => anyhow::bail!("--rollback-after takes whole seconds, at least 1s (e.g. 2m)"),
    };
    let mut client = client::connect(settings).await?;
    let mut progress = client
        .upgrade_hosts(UpgradeHostsRequest {
            hosts,
            all,
            rollback_after_secs,
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut finals: Vec<UpgradeProgress> = Vec::new();
    while let Some(message) = progress.message().await.map_err(call_failed)? {
        if json {
            let line = ProgressJson {
                host: &message.host,
                state: &message.state,
                detail: &message.detail,
                from_sha256: &message.from_sha256,
                to_sha256: &message.to_sha256,
            };
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!("{}", line(&message));
        }
        if FINAL.contains(&message.state.as_str()) {
            finals.push(message);
        }
    }
    match verdict(&finals, all) {
        Some(error) => Err(anyhow::anyhow!(error)),
        None => Ok(()),
    }
}

/// One progress message for people: `web-1: upgraded (host web-1 runs 3f2a…)`.
fn line(message: &UpgradeProgress) -> String {
    if message.detail.is_empty() {
        format!("{}: {}", message.host, message.state)
    } else {
        format!("{}: {} ({})", message.host, message.state, message.detail)
    }
}

/// Why the command fails, if it does: a host that did not end upgraded or up to date (with
/// `all`, hosts offline or unable to be upgraded this way are not failures).
fn verdict(finals: &[UpgradeProgress], all: bool) -> Option<String> {
    let missed: Vec<String> = finals
        .iter()
        .filter(|p| match p.state.as_str() {
            "upgraded" | "up_to_date" => false,
            "offline" | "unsupported" => !all,
            _ => true,
        })
        .map(|p| format!("{} ({})", p.host, p.state))
        .collect();
    if missed.is_empty() {
        return None;
    }
    let hosts = if finals.len() == 1 { "host" } else { "hosts" };
    Some(format!(
        "{} of {} {hosts} not upgraded: {}",
        missed.len(),
        finals.len(),
        missed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(host: &str, state: &str) -> UpgradeProgress {
        UpgradeProgress {
            host: host.into(),
            state: state.into(),
            ..UpgradeProgress::default()
        }
    }

    #[test]
    fn the_command_fails_for_hosts_left_behind() {
        let finals = [
            progress("a", "upgraded"),
            progress("b", "up_to_date"),
            progress("c", "offline"),
        ];
        assert_eq!(
            verdict(&finals, false).as_deref(),
            Some("1 of 3 hosts not upgraded: c (offline)")
        );
        assert_eq!(verdict(&finals, true), None);
        let rolled_back = [progress("d", "rolled_back")];
        assert_eq!(
            verdict(&rolled_back, true).as_deref(),
            Some("1 of 1 host not upgraded: d (rolled_back)")
        );
        let mut sending = progress("a", "sending");
        assert_eq!(line(&sending), "a: sending");
        sending.detail = "sending 10 bytes".into();
        assert_eq!(line(&sending), "a: sending (sending 10 bytes)");
    }
}

//! `zpanel hosts upgrade`: the control plane's daemon binary sent to hosts over their
//! sessions. Per host: offline, unsupported (no binary for its architecture, no systemd),
//! up to date, or: the binary streamed on an upgrade channel within the host's input window,
//! `UpgradeDone` (swapped in, restarting), the old session's end, then the host's next
//! session: on the new sha256 it is upgraded, on the old one its guard rolled back, none in
//! time failed. A few hosts at a time; each one's outcome audited as `host.upgrade`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use zpanel_proto::{OpenError, UpgradeDone, UpgradeStart, open};
use zpanel_shared::frame::MAX_CHUNK_BYTES;

use super::relay::{HostEvent, RelayError, Upload};
use super::{AppState, HostView, ServiceError, audit, route_error};
use crate::access::{Action, Principal};
use crate::downloads::{DaemonBinary, file_name};
use crate::router::{Channel, ChannelEvent, HostRouter, RouteError};
use crate::store::HostRecord;

/// How long a new binary has to open a session before its guard rolls it back, unless the
/// request says.
pub const DEFAULT_ROLLBACK_AFTER: Duration = Duration::from_secs(120);
const MAX_ROLLBACK_AFTER: Duration = Duration::from_secs(3600);
/// Hosts upgraded at once.
const PARALLEL: usize = 4;
/// How long a host has to restart once its binary is swapped in.
const RESTART_WAIT: Duration = Duration::from_secs(60);
/// Beyond the rollback time limit, how long a host has to come back (on either binary).
const RETURN_MARGIN: Duration = Duration::from_secs(60);

/// Where a host's upgrade is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeState {
    Sending,
    Restarting,
    Upgraded,
    RolledBack,
    Failed,
    UpToDate,
    Offline,
    Unsupported,
}

impl UpgradeState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeState::Sending => "sending",
            UpgradeState::Restarting => "restarting",
            UpgradeState::Upgraded => "upgraded",
            UpgradeState::RolledBack => "rolled_back",
            UpgradeState::Failed => "failed",
            UpgradeState::UpToDate => "up_to_date",
            UpgradeState::Offline => "offline",
            UpgradeState::Unsupported => "unsupported",
        }
    }
}

/// One host's state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeProgress {
    /// The host's name.
    pub host: String,
    pub state: UpgradeState,
    /// One line for people.
    pub detail: String,
    pub from_sha256: String,
    pub to_sha256: String,
}

/// Which hosts to upgrade, and the rollback time limit.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// Names or ids; empty with `all`.
    pub hosts: Vec<String>,
    /// Every host the caller may upgrade.
    pub all: bool,
    /// `None`: [`DEFAULT_ROLLBACK_AFTER`].
    pub rollback_after: Option<Duration>,
}

impl HostEvent for UpgradeDone {
    fn pick(event: ChannelEvent) -> Option<Self> {
        match event {
            ChannelEvent::UpgradeDone(done) => Some(done),
            _ => None,
        }
    }
}

/// A host's final state, and what it ran before and is offered.
struct Outcome {
    state: UpgradeState,
    detail: String,
    from: String,
    to: String,
}

fn outcome(state: UpgradeState, detail: impl Into<String>, from: &str, to: &str) -> Outcome {
    Outcome {
        state,
        detail: detail.into(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// The first 12 hex digits of a sha256, for details.
fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

impl AppState {
    /// Upgrades hosts (authorised and resolved before anything starts); their progress
    /// comes on the receiver, each host's last message final. The upgrades go on when the
    /// receiver is dropped: a binary half swapped in is never abandoned.
    pub async fn upgrade_hosts(
        self: &Arc<Self>,
        principal: &Principal,
        request: UpgradeRequest,
    ) -> Result<mpsc::Receiver<UpgradeProgress>, ServiceError> {
        let rollback_after = request.rollback_after.unwrap_or(DEFAULT_ROLLBACK_AFTER);
        if rollback_after < Duration::from_secs(1) || rollback_after > MAX_ROLLBACK_AFTER {
            return Err(ServiceError::InvalidArgument(format!(
                "the rollback time limit must be from 1s to {}s",
                MAX_ROLLBACK_AFTER.as_secs()
            )));
        }
        let hosts = self.upgrade_targets(principal, &request).await?;
        let (progress, receiver) = mpsc::channel(64);
        let (state, principal) = (self.clone(), principal.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(hosts)
                .for_each_concurrent(PARALLEL, |host| {
                    let (state, principal, progress) =
                        (state.clone(), principal.clone(), progress.clone());
                    async move {
                        state
                            .upgrade_host(&principal, host, rollback_after, &progress)
                            .await
                    }
                })
                .await;
        });
        Ok(receiver)
    }

    /// The hosts named (each one authorised, as a refusal is audited), or every host the
    /// caller may upgrade.
    async fn upgrade_targets(
        &self,
        principal: &Principal,
        request: &UpgradeRequest,
    ) -> Result<Vec<HostRecord>, ServiceError> {
        if !request.all {
            if request.hosts.is_empty() {
                return Err(ServiceError::InvalidArgument(
                    "name the hosts to upgrade, or ask for all of them".into(),
                ));
            }
            let mut hosts: Vec<HostRecord> = Vec::new();
            for name in &request.hosts {
                let host = self.host_for(principal, Action::UpgradeHost, name).await?;
                if !hosts.iter().any(|h| h.id == host.id) {
                    hosts.push(host);
                }
            }
            return Ok(hosts);
        }
        if !request.hosts.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "name hosts or ask for all of them, not both".into(),
            ));
        }
        let visible: Vec<HostRecord> = self
            .store
            .list_hosts()
            .await?
            .into_iter()
            .filter(|h| audit::check(principal, Action::ListHosts, Some(&h.workspace_id)).is_ok())
            .collect();
        let allowed: Vec<HostRecord> = visible
            .iter()
            .filter(|h| audit::check(principal, Action::UpgradeHost, Some(&h.workspace_id)).is_ok())
            .cloned()
            .collect();
        if allowed.is_empty()
            && let Some(first) = visible.first()
        {
            // the caller sees hosts but may upgrade none: refused (and audited) as such
            self.authorize(principal, Action::UpgradeHost, Some(&first.workspace_id))
                .await?;
        }
        Ok(allowed)
    }

    /// Upgrades one host, reports its final state and audits it.
    async fn upgrade_host(
        self: &Arc<Self>,
        principal: &Principal,
        host: HostRecord,
        rollback_after: Duration,
        progress: &mpsc::Sender<UpgradeProgress>,
    ) {
        let report = |state: UpgradeState, detail: String, from: &str, to: &str| {
            let message = UpgradeProgress {
                host: host.name.clone(),
                state,
                detail,
                from_sha256: from.to_string(),
                to_sha256: to.to_string(),
            };
            async move {
                // the caller may have gone; the upgrade goes on
                let _ = progress.send(message).await;
            }
        };
        let end = self.upgrade_one(&host, rollback_after, &report).await;
        let result = match end.state {
            UpgradeState::Upgraded | UpgradeState::UpToDate => "ok".to_string(),
            state => format!("{}: {}", state.as_str(), end.detail),
        };
        self.audit(
            self.entry(principal, "host.upgrade")
                .host(&host.id, &host.workspace_id)
                .target(&host.name)
                .detail(format!("from {} to {}", end.from, end.to))
                .outcome(result),
        )
        .await;
        tracing::info!(host = %host.name, state = end.state.as_str(), from = %end.from, to = %end.to, "host upgrade: {}", end.detail);
        report(end.state, end.detail, &end.from, &end.to).await;
    }

    async fn upgrade_one<F: Future<Output = ()>>(
        self: &Arc<Self>,
        host: &HostRecord,
        rollback_after: Duration,
        report: &impl Fn(UpgradeState, String, &str, &str) -> F,
    ) -> Outcome {
        let name = &host.name;
        if !self.router.is_online(&host.id) {
            let from = &host.daemon_sha256;
            return outcome(
                UpgradeState::Offline,
                format!("host {name} is offline"),
                from,
                "",
            );
        }
        // what the live session's hello said
        let host = match self.store.find_host(&host.id).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                return outcome(
                    UpgradeState::Failed,
                    format!("host {name} was deleted"),
                    "",
                    "",
                );
            }
            Err(e) => return outcome(UpgradeState::Failed, e.to_string(), "", ""),
        };
        let from = host.daemon_sha256.clone();
        let binary = match self.daemon_binary(&host.arch).await {
            Ok(Some(binary)) => binary,
            Ok(None) => {
                let detail = format!(
                    "this control plane has no daemon binary for {} (put {} in --downloads-dir)",
                    if host.arch.is_empty() {
                        "its architecture"
                    } else {
                        &host.arch
                    },
                    file_name(if host.arch.is_empty() {
                        "ARCH"
                    } else {
                        &host.arch
                    })
                );
                return outcome(UpgradeState::Unsupported, detail, &from, "");
            }
            Err(e) => return outcome(UpgradeState::Failed, e.to_string(), &from, ""),
        };
        let to = binary.sha256.clone();
        if from == to {
            let detail = format!("host {name} already runs {}", short(&to));
            return outcome(UpgradeState::UpToDate, detail, &from, &to);
        }
        if !host.systemd {
            let detail = "the daemon does not run under systemd; upgrade it with install.sh";
            return outcome(UpgradeState::Unsupported, detail, &from, &to);
        }
        let detail = format!("sending {} bytes", binary.size);
        report(UpgradeState::Sending, detail, &from, &to).await;
        let channel = match self.send_binary(&host, &binary, rollback_after).await {
            Ok(channel) => channel,
            Err(failed) => return Outcome { from, to, ..failed },
        };
        let detail = match channel {
            Some(_) => format!("host {name} swapped the binary in and restarts"),
            None => {
                format!("host {name} had the whole binary when its session ended; waiting for it")
            }
        };
        report(UpgradeState::Restarting, detail, &from, &to).await;
        if let Some(channel) = channel
            && !session_ends(channel).await
        {
            let detail = format!(
                "host {name} did not restart within {} s of swapping the binary in; its guard \
                 rolls back after {} s",
                RESTART_WAIT.as_secs(),
                rollback_after.as_secs()
            );
            return outcome(UpgradeState::Failed, detail, &from, &to);
        }
        self.comes_back(&host, rollback_after, &from, &to).await
    }

    /// Streams the binary and waits for `UpgradeDone`; the channel (for the session's end),
    /// none when the session ended after the host had the whole binary (the answer may
    /// have been lost as the daemon restarted: its next session tells), or the final
    /// outcome (`from` and `to` filled by the caller).
    async fn send_binary(
        &self,
        host: &HostRecord,
        binary: &DaemonBinary,
        rollback_after: Duration,
    ) -> Result<Option<Channel>, Outcome> {
        let failed = |detail: String| outcome(UpgradeState::Failed, detail, "", "");
        let request = UpgradeStart {
            sha256: binary.sha256.clone(),
            size: binary.size,
            rollback_after_secs: rollback_after.as_secs() as u32,
        };
        let channel = match self
            .router
            .open_channel(&host.id, open::Request::Upgrade(request))
            .await
        {
            Ok(channel) => channel,
            Err(RouteError::Refused {
                code: OpenError::Forbidden | OpenError::Refused,
                message,
                ..
            }) => {
                let detail = format!("host {}: {message}", host.name);
                return Err(outcome(UpgradeState::Unsupported, detail, "", ""));
            }
            Err(RouteError::Offline) => {
                let detail = format!("host {} is offline", host.name);
                return Err(outcome(UpgradeState::Offline, detail, "", ""));
            }
            Err(e) => return Err(failed(route_error(host, e).to_string())),
        };
        let mut upload: Upload<UpgradeDone> = Upload::new(channel, 0);
        let mut file = tokio::fs::File::open(&binary.path).await.map_err(|e| {
            failed(format!(
                "cannot read the daemon binary {}: {e}",
                binary.path.display()
            ))
        })?;
        let lost = |e: RelayError| failed(e.on(host, "upgrade").to_string());
        while upload.verdict().is_none() {
            let mut chunk = BytesMut::with_capacity(MAX_CHUNK_BYTES);
            let read = file.read_buf(&mut chunk).await.map_err(|e| {
                failed(format!(
                    "cannot read the daemon binary {}: {e}",
                    binary.path.display()
                ))
            })?;
            if read == 0 {
                break;
            }
            upload
                .write_at(upload.sent(), chunk.freeze())
                .await
                .map_err(lost)?;
        }
        let done = match upload.finish().await {
            Ok(done) => done,
            Err(RelayError::Lost(_)) if upload.acked() == binary.size => return Ok(None),
            Err(e) => return Err(lost(e)),
        };
        if !done.error.is_empty() {
            return Err(failed(format!("host {}: {}", host.name, done.error)));
        }
        Ok(Some(upload.into_channel()))
    }

    /// Waits for the host's next session: on `to` it is upgraded, on `from` rolled back.
    async fn comes_back(
        &self,
        host: &HostRecord,
        rollback_after: Duration,
        from: &str,
        to: &str,
    ) -> Outcome {
        let name = &host.name;
        let deadline = tokio::time::Instant::now() + rollback_after + RETURN_MARGIN;
        let mut changes = self.router.changes();
        loop {
            changes.borrow_and_update();
            if self.router.is_online(&host.id) {
                // recorded before the session is registered
                let running = match self.store.find_host(&host.id).await {
                    Ok(Some(current)) => current.daemon_sha256,
                    Ok(None) => {
                        let detail = format!("host {name} was deleted");
                        return outcome(UpgradeState::Failed, detail, from, to);
                    }
                    Err(e) => return outcome(UpgradeState::Failed, e.to_string(), from, to),
                };
                return if running == to {
                    let detail = format!("host {name} runs {}", short(to));
                    outcome(UpgradeState::Upgraded, detail, from, to)
                } else if running == from {
                    let detail = format!(
                        "the new daemon had no session within {} s; host {name} is back on {}",
                        rollback_after.as_secs(),
                        short(from)
                    );
                    outcome(UpgradeState::RolledBack, detail, from, to)
                } else {
                    let detail = format!(
                        "host {name} came back running another daemon ({})",
                        short(&running)
                    );
                    outcome(UpgradeState::Failed, detail, from, to)
                };
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        let detail = "the control plane is shutting down".to_string();
                        return outcome(UpgradeState::Failed, detail, from, to);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let detail = format!(
                        "host {name} did not come back within {} s of the upgrade; see \
                         `journalctl -u zpanel-bridge` on it",
                        (rollback_after + RETURN_MARGIN).as_secs()
                    );
                    return outcome(UpgradeState::Failed, detail, from, to);
                }
            }
        }
    }

    /// The control plane's daemon binary for `arch`, hashed on a blocking thread.
    async fn daemon_binary(
        self: &Arc<Self>,
        arch: &str,
    ) -> Result<Option<DaemonBinary>, ServiceError> {
        let (state, arch) = (self.clone(), arch.to_string());
        tokio::task::spawn_blocking(move || state.downloads.daemon(&arch))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(format!("cannot read the daemon binary: {e}")))
    }

    /// Ids of the listed hosts an upgrade would change: under systemd, with a binary for
    /// their architecture that is not the one they run.
    pub async fn upgrades_available(self: &Arc<Self>, hosts: &[HostView]) -> HashSet<String> {
        let arches: HashSet<String> = hosts
            .iter()
            .filter(|view| view.record.systemd)
            .map(|view| view.record.arch.clone())
            .collect();
        if arches.is_empty() {
            return HashSet::new();
        }
        let state = self.clone();
        let offered: HashMap<String, String> = tokio::task::spawn_blocking(move || {
            arches
                .into_iter()
                .filter_map(|arch| {
                    let binary = state.downloads.daemon(&arch).ok().flatten()?;
                    Some((arch, binary.sha256))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        hosts
            .iter()
            .filter(|view| {
                view.record.systemd
                    && offered
                        .get(&view.record.arch)
                        .is_some_and(|sha256| *sha256 != view.record.daemon_sha256)
            })
            .map(|view| view.record.id.clone())
            .collect()
    }
}

/// Waits for the session that swapped the binary in to end (the daemon restarting): true,
/// or false when it is still there after [`RESTART_WAIT`].
async fn session_ends(mut channel: Channel) -> bool {
    let ended = async {
        loop {
            match channel.events.recv().await {
                Some(ChannelEvent::Closed(_)) | None => return,
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(RESTART_WAIT, ended).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_the_wire_names_them() {
        let all = [
            UpgradeState::Sending,
            UpgradeState::Restarting,
            UpgradeState::Upgraded,
            UpgradeState::RolledBack,
            UpgradeState::Failed,
            UpgradeState::UpToDate,
            UpgradeState::Offline,
            UpgradeState::Unsupported,
        ];
        let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "sending",
                "restarting",
                "upgraded",
                "rolled_back",
                "failed",
                "up_to_date",
                "offline",
                "unsupported"
            ]
        );
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
    }
}

//! Docker on hosts as every adapter sees it (ARCHITECTURE.md "Docker"): requests answered
//! at once, logs, stats and event watches, pulls and imports. The daemon talks to the
//! engine; the control plane authorises, audits every change and relays.

use bytes::Bytes;
use zpanel_proto::{
    ContainerVerb, DockerError, DockerEventsWatch, DockerImport, DockerLogs, DockerOutcome,
    DockerPull, DockerReply, DockerRequest, DockerStatsWatch, DockerUpdate, PruneKind,
    PullProgress, StreamChunk, StreamKind, docker_reply, docker_request, docker_update, open,
    open_result,
};

use super::audit::{PendingAudit, outcome};
use super::relay::{HostEvent, OutputReader, Relay, Upload, next_event};
use super::{Action, AppState, Principal, ServiceError};
use crate::router::{Channel, ChannelEvent};
use crate::store::HostRecord;

/// The service error for a Docker failure reported by a daemon.
pub fn docker_error(kind: DockerError, message: String) -> ServiceError {
    match kind {
        DockerError::NotFound => ServiceError::NotFound(message),
        DockerError::Conflict => ServiceError::Conflict(message),
        DockerError::Invalid => ServiceError::InvalidArgument(message),
        DockerError::Unavailable => ServiceError::Unavailable(message),
        DockerError::Engine | DockerError::None => ServiceError::Engine(message),
    }
}

/// How a change is audited: `docker.ACTION`, its target and detail.
struct Change {
    action: &'static str,
    target: String,
    detail: String,
}

fn change(action: &'static str, target: &str, detail: String) -> Option<Change> {
    Some(Change {
        action,
        target: target.to_string(),
        detail,
    })
}

/// Refuses a request that does not name the object it is about.
fn named(name: &str, what: &str) -> Result<(), ServiceError> {
    if name.trim().is_empty() {
        Err(ServiceError::InvalidArgument(format!(
            "no {what} given: name it by id or name"
        )))
    } else {
        Ok(())
    }
}

/// What a prune removes, as people say it.
pub fn prune_name(kind: PruneKind) -> Option<&'static str> {
    match kind {
        PruneKind::Containers => Some("containers"),
        PruneKind::Images => Some("images"),
        PruneKind::Volumes => Some("volumes"),
        PruneKind::Networks => Some("networks"),
        PruneKind::Unspecified => None,
    }
}

/// An audit detail: the parts that say something, joined ("image busybox, started").
fn detail(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The flags of a request that are set, for the audit detail ("force, volumes").
fn flags(flags: &[(bool, &str)]) -> String {
    let set: Vec<&str> = flags
        .iter()
        .map(|&(set, name)| if set { name } else { "" })
        .collect();
    detail(&set)
}

/// What a request needs, and how it is audited when it changes something.
fn classify(op: &docker_request::Op) -> Result<(Action, Option<Change>), ServiceError> {
    use docker_request::Op;
    Ok(match op {
        Op::Engine(_) | Op::Containers(_) | Op::Images(_) | Op::Volumes(_) | Op::Networks(_) => {
            (Action::ViewDocker, None)
        }
        Op::Top(container) | Op::Stats(container) => {
            named(&container.container, "container")?;
            (Action::ViewDocker, None)
        }
        Op::Inspect(container) => {
            named(&container.container, "container")?;
            (Action::UseDocker, None)
        }
        Op::Create(spec) => {
            named(&spec.image, "image")?;
            let image = format!("image {}", spec.image);
            let started = if spec.start { "started" } else { "" };
            (
                Action::ManageDocker,
                change("docker.create", &spec.name, detail(&[&image, started])),
            )
        }
        Op::Action(action) => {
            named(&action.container, "container")?;
            let timeout = action
                .timeout_seconds
                .map(|seconds| format!("timeout {seconds} s"))
                .unwrap_or_default();
            let (needs, name, detail) = match action.verb() {
                ContainerVerb::Start => (Action::UseDocker, "docker.start", String::new()),
                ContainerVerb::Stop => (Action::UseDocker, "docker.stop", timeout),
                ContainerVerb::Restart => (Action::UseDocker, "docker.restart", timeout),
                ContainerVerb::Kill => (Action::UseDocker, "docker.kill", action.signal.clone()),
                ContainerVerb::Pause => (Action::UseDocker, "docker.pause", String::new()),
                ContainerVerb::Unpause => (Action::UseDocker, "docker.unpause", String::new()),
                ContainerVerb::Remove => (
                    Action::ManageDocker,
                    "docker.remove",
                    flags(&[(action.force, "force"), (action.volumes, "volumes")]),
                ),
                ContainerVerb::Unspecified => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "no action given for container {}: start, stop, restart, kill, pause, unpause or remove",
                        action.container
                    )));
                }
            };
            (needs, change(name, &action.container, detail))
        }
        Op::Rename(rename) => {
            named(&rename.container, "container")?;
            named(&rename.name, "new name")?;
            let detail = format!("to {}", rename.name);
            (
                Action::ManageDocker,
                change("docker.rename", &rename.container, detail),
            )
        }
        Op::RemoveImage(image) => {
            named(&image.image, "image")?;
            let detail = flags(&[(image.force, "force")]);
            (
                Action::ManageDocker,
                change("docker.image.remove", &image.image, detail),
            )
        }
        Op::Prune(prune) => {
            let what = prune_name(prune.what()).ok_or_else(|| {
                ServiceError::InvalidArgument(
                    "say what to prune: containers, images, volumes or networks".into(),
                )
            })?;
            let detail = flags(&[(prune.all, "all")]);
            (Action::ManageDocker, change("docker.prune", what, detail))
        }
        Op::CreateVolume(volume) => (
            Action::ManageDocker,
            change("docker.volume.create", &volume.name, volume.driver.clone()),
        ),
        Op::RemoveVolume(volume) => {
            named(&volume.name, "volume")?;
            let detail = flags(&[(volume.force, "force")]);
            (
                Action::ManageDocker,
                change("docker.volume.remove", &volume.name, detail),
            )
        }
        Op::CreateNetwork(network) => {
            named(&network.name, "network name")?;
            let internal = if network.internal { "internal" } else { "" };
            (
                Action::ManageDocker,
                change(
                    "docker.network.create",
                    &network.name,
                    detail(&[&network.driver, internal]),
                ),
            )
        }
        Op::RemoveNetwork(network) => {
            named(&network.network, "network")?;
            (
                Action::ManageDocker,
                change("docker.network.remove", &network.network, String::new()),
            )
        }
    })
}

/// The audit entry's target and detail once the reply is known: a container created
/// without a name is named by the engine, a prune says what it removed.
fn completed(change: &mut Change, reply: &DockerReply) {
    match &reply.result {
        Some(docker_reply::Result::Container(container)) if change.target.is_empty() => {
            change.target = container.name.clone();
        }
        Some(docker_reply::Result::Pruned(pruned)) => {
            let removed = format!(
                "{} removed, {} bytes reclaimed",
                pruned.deleted.len(),
                pruned.space_reclaimed
            );
            change.detail = detail(&[&change.detail, &removed]);
        }
        _ => {}
    }
}

/// The image id of a pull's or import's outcome, or its error.
fn image_id(host: &HostRecord, outcome: DockerOutcome) -> Result<String, ServiceError> {
    let kind = outcome.error();
    if kind != DockerError::None {
        return Err(docker_error(
            kind,
            format!("host {}: {}", host.name, outcome.message),
        ));
    }
    match outcome.reply.and_then(|reply| reply.result) {
        Some(docker_reply::Result::ImageId(id)) => Ok(id),
        _ => Err(ServiceError::Internal(format!(
            "host {} ended without the image's id",
            host.name
        ))),
    }
}

/// A container's logs: chunks of streams STDOUT and STDERR until both end.
pub struct DockerLogsChannel {
    channel: Channel,
    output: OutputReader,
    pub host: HostRecord,
}

impl Relay for DockerLogsChannel {
    type Item = StreamChunk;

    /// The next chunk (stream, offset, bytes; eof ends its stream); `None` when the logs
    /// ended. What is returned counts as consumed.
    async fn next(&mut self) -> Result<Option<StreamChunk>, ServiceError> {
        self.output
            .next(&mut self.channel)
            .await
            .map_err(|e| e.on(&self.host, "log stream"))
    }
}

/// Stats samples of a container, or the engine's events, while the channel is open.
pub struct DockerWatchChannel {
    channel: Channel,
    pub host: HostRecord,
    /// "stats watch" or "event watch", for errors.
    what: &'static str,
}

impl Relay for DockerWatchChannel {
    type Item = DockerUpdate;

    /// The next update; an error when the watch ended (a stats watch ends when the
    /// container is gone).
    async fn next(&mut self) -> Result<Option<DockerUpdate>, ServiceError> {
        next_event(&mut self.channel)
            .await
            .map(Some)
            .map_err(|e| e.on(&self.host, self.what))
    }
}

/// What a pull reports.
#[derive(Debug)]
pub enum PullEvent {
    Progress(PullProgress),
    /// The pull ended with this image id.
    Done(String),
}

/// What a pull's channel carries: progress, then the outcome.
enum PullUpdate {
    Progress(PullProgress),
    Done(Box<DockerOutcome>),
}

impl HostEvent for PullUpdate {
    fn pick(event: ChannelEvent) -> Option<Self> {
        match event {
            ChannelEvent::DockerUpdated(DockerUpdate {
                update: Some(docker_update::Update::Progress(progress)),
            }) => Some(PullUpdate::Progress(progress)),
            ChannelEvent::DockerDone(outcome) => Some(PullUpdate::Done(Box::new(outcome))),
            _ => None,
        }
    }
}

/// An image being pulled: progress, then the image id. Audited when it ends.
pub struct DockerPullChannel {
    channel: Channel,
    pub host: HostRecord,
    audit: PendingAudit,
    ended: bool,
}

impl Relay for DockerPullChannel {
    type Item = PullEvent;

    /// The next progress report, then [`PullEvent::Done`], then `None`.
    async fn next(&mut self) -> Result<Option<PullEvent>, ServiceError> {
        if self.ended {
            return Ok(None);
        }
        let result = match next_event(&mut self.channel).await {
            Ok(PullUpdate::Progress(progress)) => return Ok(Some(PullEvent::Progress(progress))),
            Ok(PullUpdate::Done(done)) => image_id(&self.host, *done),
            Err(e) => Err(e.on(&self.host, "pull")),
        };
        self.ended = true;
        self.audit.finish(outcome(&result)).await;
        result.map(|id| Some(PullEvent::Done(id)))
    }
}

/// A tarball being imported as an image: content in, then the image id. Audited when it
/// ends.
pub struct DockerImportChannel {
    upload: Upload<DockerOutcome>,
    pub host: HostRecord,
    audit: PendingAudit,
}

impl DockerImportChannel {
    /// The host holds every byte below this offset.
    pub fn acked(&self) -> u64 {
        self.upload.acked()
    }

    /// Content at `offset` (bytes the host already has are skipped). Waits while too much
    /// is unacknowledged. An error ends the import.
    pub async fn write_at(&mut self, offset: u64, payload: Bytes) -> Result<(), ServiceError> {
        let written = match self.upload.write_at(offset, payload).await {
            Err(e) => Err(e.on(&self.host, "import")),
            // The host answered before the end of the tarball: a refusal.
            Ok(()) => match self.upload.verdict().cloned() {
                None => Ok(()),
                Some(done) => Err(match image_id(&self.host, done) {
                    Err(e) => e,
                    Ok(_) => ServiceError::Internal(format!(
                        "host {} ended the import before the end of the tarball",
                        self.host.name
                    )),
                }),
            },
        };
        if written.is_err() {
            self.audit.finish(outcome(&written)).await;
        }
        written
    }

    /// Content following what was written so far.
    pub async fn write(&mut self, payload: Bytes) -> Result<(), ServiceError> {
        self.write_at(self.upload.sent(), payload).await
    }

    /// Ends the tarball and waits for the host's image id.
    pub async fn finish(mut self) -> Result<String, ServiceError> {
        let result = match self.upload.finish().await {
            Ok(done) => image_id(&self.host, done),
            Err(e) => Err(e.on(&self.host, "import")),
        };
        self.audit.finish(outcome(&result)).await;
        self.upload.release();
        result
    }
}

impl AppState {
    /// A request answered at once. Changes are audited, failed ones too.
    pub async fn docker(
        &self,
        principal: &Principal,
        host: &str,
        request: DockerRequest,
    ) -> Result<DockerReply, ServiceError> {
        let op = request.op.as_ref().ok_or_else(|| {
            ServiceError::InvalidArgument("empty Docker request: say what to do".into())
        })?;
        let (action, change) = classify(op)?;
        let host = self.host_for(principal, action, host).await?;
        let reply = match self.open_on(&host, open::Request::Docker(request)).await {
            Ok(channel) => match &channel.opened.reply {
                Some(open_result::Reply::Docker(reply)) => Ok(reply.clone()),
                _ => Err(ServiceError::Internal(format!(
                    "host {} answered a Docker request without a result",
                    host.name
                ))),
            },
            Err(e) => Err(e),
        };
        if let Some(mut change) = change {
            if let Ok(reply) = &reply {
                completed(&mut change, reply);
            }
            self.audit(
                self.entry(principal, change.action)
                    .host(&host.id, &host.workspace_id)
                    .target(change.target)
                    .detail(change.detail)
                    .outcome(outcome(&reply)),
            )
            .await;
        }
        reply
    }

    /// Streams a container's logs.
    pub async fn docker_logs(
        &self,
        principal: &Principal,
        host: &str,
        logs: DockerLogs,
    ) -> Result<DockerLogsChannel, ServiceError> {
        named(&logs.container, "container")?;
        let host = self.host_for(principal, Action::UseDocker, host).await?;
        let channel = self.open_on(&host, open::Request::DockerLogs(logs)).await?;
        Ok(DockerLogsChannel {
            channel,
            output: OutputReader::new(&[(StreamKind::Stdout, 0), (StreamKind::Stderr, 0)]),
            host,
        })
    }

    /// Watches a container's stats.
    pub async fn docker_stats(
        &self,
        principal: &Principal,
        host: &str,
        container: String,
    ) -> Result<DockerWatchChannel, ServiceError> {
        named(&container, "container")?;
        let request = open::Request::DockerStats(DockerStatsWatch { container });
        self.docker_watch(principal, host, request, "stats watch")
            .await
    }

    /// Watches the engine's events.
    pub async fn docker_events(
        &self,
        principal: &Principal,
        host: &str,
    ) -> Result<DockerWatchChannel, ServiceError> {
        let request = open::Request::DockerEvents(DockerEventsWatch {});
        self.docker_watch(principal, host, request, "event watch")
            .await
    }

    async fn docker_watch(
        &self,
        principal: &Principal,
        host: &str,
        request: open::Request,
        what: &'static str,
    ) -> Result<DockerWatchChannel, ServiceError> {
        let host = self.host_for(principal, Action::ViewDocker, host).await?;
        let channel = self.open_on(&host, request).await?;
        Ok(DockerWatchChannel {
            channel,
            host,
            what,
        })
    }

    /// Starts pulling an image; the pull is audited when it ends.
    pub async fn docker_pull(
        &self,
        principal: &Principal,
        host: &str,
        image: String,
    ) -> Result<DockerPullChannel, ServiceError> {
        let (host, channel, audit) = self
            .docker_transfer(principal, host, "docker.pull", &image, |image| {
                open::Request::DockerPull(DockerPull { image })
            })
            .await?;
        Ok(DockerPullChannel {
            channel,
            host,
            audit,
            ended: false,
        })
    }

    /// Starts importing a tarball as an image; the import is audited when it ends.
    pub async fn docker_import(
        &self,
        principal: &Principal,
        host: &str,
        image: String,
    ) -> Result<DockerImportChannel, ServiceError> {
        let (host, channel, audit) = self
            .docker_transfer(principal, host, "docker.import", &image, |image| {
                open::Request::DockerImport(DockerImport { image })
            })
            .await?;
        Ok(DockerImportChannel {
            upload: Upload::new(channel, 0),
            host,
            audit,
        })
    }

    /// Opens a pull or an import of `image`: authorised, and audited now if it fails to
    /// start, else when it ends.
    async fn docker_transfer(
        &self,
        principal: &Principal,
        host: &str,
        action: &'static str,
        image: &str,
        request: impl FnOnce(String) -> open::Request,
    ) -> Result<(HostRecord, Channel, PendingAudit), ServiceError> {
        named(image, "image")?;
        let host = self.host_for(principal, Action::ManageDocker, host).await?;
        let mut audit = self.pending_audit(
            self.entry(principal, action)
                .host(&host.id, &host.workspace_id)
                .target(image),
        );
        let opened = self.open_on(&host, request(image.to_string())).await;
        if opened.is_err() {
            audit.finish(outcome(&opened)).await;
        }
        Ok((host, opened?, audit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpanel_proto::{ContainerAction, ContainerRef, ContainerSpec, DockerPrune, PruneReport};

    #[test]
    fn requests_need_the_right_role_and_are_audited_when_they_change_something() {
        use docker_request::Op;
        let container = || ContainerRef {
            container: "web".into(),
        };
        let action = |verb: ContainerVerb| {
            Op::Action(ContainerAction {
                container: "web".into(),
                verb: verb as i32,
                force: true,
                ..ContainerAction::default()
            })
        };
        let (needs, change) = classify(&Op::Top(container())).unwrap();
        assert_eq!(needs, Action::ViewDocker);
        assert!(change.is_none());
        let (needs, change) = classify(&Op::Inspect(container())).unwrap();
        assert_eq!(needs, Action::UseDocker);
        assert!(change.is_none());
        let (needs, change) = classify(&action(ContainerVerb::Stop)).unwrap();
        assert_eq!(needs, Action::UseDocker);
        assert_eq!(change.unwrap().action, "docker.stop");
        let (needs, change) = classify(&action(ContainerVerb::Remove)).unwrap();
        assert_eq!(needs, Action::ManageDocker);
        let change = change.unwrap();
        assert_eq!(
            (change.action, change.target.as_str()),
            ("docker.remove", "web")
        );
        assert_eq!(change.detail, "force");
        assert!(matches!(
            classify(&action(ContainerVerb::Unspecified)),
            Err(ServiceError::InvalidArgument(_))
        ));
        assert!(matches!(
            classify(&Op::Top(ContainerRef::default())),
            Err(ServiceError::InvalidArgument(_))
        ));
        assert!(matches!(
            classify(&Op::Prune(DockerPrune::default())),
            Err(ServiceError::InvalidArgument(_))
        ));
    }

    #[test]
    fn audit_entries_name_what_was_created_and_what_a_prune_removed() {
        use docker_request::Op;
        let spec = ContainerSpec {
            image: "busybox".into(),
            start: true,
            ..ContainerSpec::default()
        };
        let (_, change) = classify(&Op::Create(spec)).unwrap();
        let mut change = change.unwrap();
        assert_eq!(change.detail, "image busybox, started");
        let created = DockerReply {
            result: Some(docker_reply::Result::Container(
                zpanel_proto::ContainerSummary {
                    name: "brave_turing".into(),
                    ..Default::default()
                },
            )),
        };
        completed(&mut change, &created);
        assert_eq!(change.target, "brave_turing");

        let prune = DockerPrune {
            what: PruneKind::Images as i32,
            all: true,
        };
        let (_, change) = classify(&Op::Prune(prune)).unwrap();
        let mut change = change.unwrap();
        let pruned = DockerReply {
            result: Some(docker_reply::Result::Pruned(PruneReport {
                deleted: vec!["sha256:1".into(), "sha256:2".into()],
                space_reclaimed: 42,
            })),
        };
        completed(&mut change, &pruned);
        assert_eq!(change.target, "images");
        assert_eq!(change.detail, "all, 2 removed, 42 bytes reclaimed");
    }

    #[test]
    fn engine_errors_map_to_service_errors() {
        assert!(matches!(
            docker_error(DockerError::NotFound, "x".into()),
            ServiceError::NotFound(_)
        ));
        assert!(matches!(
            docker_error(DockerError::Conflict, "x".into()),
            ServiceError::Conflict(_)
        ));
        assert!(matches!(
            docker_error(DockerError::Invalid, "x".into()),
            ServiceError::InvalidArgument(_)
        ));
        assert!(matches!(
            docker_error(DockerError::Unavailable, "x".into()),
            ServiceError::Unavailable(_)
        ));
        assert!(matches!(
            docker_error(DockerError::Engine, "x".into()),
            ServiceError::Engine(_)
        ));
    }
}

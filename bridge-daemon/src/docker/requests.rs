//! Requests answered at once: the engine, containers (list, inspect, create, actions, rename,
//! top, one stats sample), images, prune, volumes and networks.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, ListNetworksOptions, ListVolumesOptions, PruneContainersOptions,
    PruneImagesOptionsBuilder, PruneVolumesOptions, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder, RenameContainerOptionsBuilder,
    RestartContainerOptions, StatsOptionsBuilder, StopContainerOptions, TopOptions,
};
use futures_util::StreamExt;
use zpanel_proto::docker_reply::Result as Reply;
use zpanel_proto::docker_request::Op;
use zpanel_proto::{
    ContainerAction, ContainerListing, ContainerStats, ContainerSummary, ContainerTop,
    ContainerVerb, DockerEngine, DockerError, DockerPrune, DockerReply, DockerRequest,
    ImageListing, NetworkListing, NetworkSummary, PruneKind, PruneReport, TopRow, VolumeListing,
};

use super::{Docker, DockerFailure, REQUEST_TIMEOUT, convert, image_name, object_name};

/// Why a request failed: what the engine said, or what the daemon refused before asking.
pub(super) enum Failed {
    Engine(EngineError),
    Refused(DockerFailure),
}

impl From<EngineError> for Failed {
    fn from(e: EngineError) -> Failed {
        Failed::Engine(e)
    }
}

impl From<DockerFailure> for Failed {
    fn from(failure: DockerFailure) -> Failed {
        Failed::Refused(failure)
    }
}

impl Docker {
    /// One request, answered at once.
    pub async fn request(&self, request: DockerRequest) -> Result<DockerReply, DockerFailure> {
        let op = request.op.ok_or_else(|| {
            DockerFailure::invalid(
                "empty docker request: this daemon may be older than the control plane",
            )
        })?;
        let describes_engine = matches!(op, Op::Engine(_));
        let (kind, name) = subject(&op);
        let result = match self.client().await {
            Ok(client) => self.settle(run(&client, &self.endpoint, op).await),
            Err(failure) => Err(failure),
        };
        let result = match result {
            Ok(result) => result,
            // That no engine answers is the answer.
            Err(failure) if describes_engine => Reply::Engine(DockerEngine {
                available: false,
                message: failure.message,
                endpoint: self.endpoint.clone(),
                ..DockerEngine::default()
            }),
            Err(failure) => return Err(failure.naming(kind, &name)),
        };
        Ok(DockerReply {
            result: Some(result),
        })
    }

    /// A request's failure as the one the wire knows.
    pub(super) fn settle<T>(&self, result: Result<T, Failed>) -> Result<T, DockerFailure> {
        result.map_err(|failed| match failed {
            Failed::Engine(e) => self.failure(&e),
            Failed::Refused(failure) => failure,
        })
    }
}

/// What a request is about, as the user named it, for its error line.
fn subject(op: &Op) -> (&'static str, String) {
    match op {
        Op::Inspect(r) | Op::Top(r) | Op::Stats(r) => ("container", r.container.clone()),
        Op::Create(spec) => ("container", spec.name.clone()),
        Op::Action(action) => ("container", action.container.clone()),
        Op::Rename(rename) => ("container", rename.container.clone()),
        Op::RemoveImage(remove) => ("image", remove.image.clone()),
        Op::CreateVolume(create) => ("volume", create.name.clone()),
        Op::RemoveVolume(remove) => ("volume", remove.name.clone()),
        Op::CreateNetwork(create) => ("network", create.name.clone()),
        Op::RemoveNetwork(remove) => ("network", remove.network.clone()),
        Op::Engine(_)
        | Op::Containers(_)
        | Op::Images(_)
        | Op::Prune(_)
        | Op::Volumes(_)
        | Op::Networks(_) => ("", String::new()),
    }
}

/// One request to the engine at `endpoint`.
async fn run(client: &bollard::Docker, endpoint: &str, op: Op) -> Result<Reply, Failed> {
    Ok(match op {
        Op::Engine(_) => {
            let (version, info) = tokio::try_join!(client.version(), client.info())?;
            let count = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
            Reply::Engine(DockerEngine {
                available: true,
                message: String::new(),
                version: version.version.unwrap_or_default(),
                api_version: version.api_version.unwrap_or_default(),
                os: version.os.unwrap_or_default(),
                arch: version.arch.unwrap_or_default(),
                containers: count(info.containers),
                running: count(info.containers_running),
                images: count(info.images),
                endpoint: endpoint.to_string(),
            })
        }
        Op::Containers(list) => {
            let options = ListContainersOptionsBuilder::new().all(list.all).build();
            let containers = client.list_containers(Some(options)).await?;
            Reply::Containers(ContainerListing {
                containers: containers.into_iter().map(convert::container).collect(),
            })
        }
        Op::Inspect(reference) => {
            let container = object_name("container", &reference.container)?;
            let inspected = client
                .inspect_container(container, None::<InspectContainerOptions>)
                .await?;
            Reply::InspectJson(serde_json::to_string(&inspected).map_err(EngineError::from)?)
        }
        Op::Create(spec) => {
            let start = spec.start;
            let (options, body) = convert::create(spec)?;
            let created = client.create_container(Some(options), body).await?;
            if start {
                client.start_container(&created.id, None).await?;
            }
            Reply::Container(summary(client, &created.id).await?)
        }
        Op::Action(action) => act(client, action).await?,
        Op::Rename(rename) => {
            let container = object_name("container", &rename.container)?;
            object_name("container", &rename.name)?;
            let options = RenameContainerOptionsBuilder::new()
                .name(&rename.name)
                .build();
            client.rename_container(container, options).await?;
            Reply::Container(summary(client, &rename.name).await?)
        }
        Op::Top(reference) => {
            let container = object_name("container", &reference.container)?;
            let top = client.top_processes(container, None::<TopOptions>).await?;
            Reply::Top(ContainerTop {
                titles: top.titles.unwrap_or_default(),
                processes: top
                    .processes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|fields| TopRow { fields })
                    .collect(),
            })
        }
        Op::Stats(reference) => Reply::Stats(stats_sample(client, &reference.container).await?),
        Op::Images(list) => {
            let options = ListImagesOptionsBuilder::new().all(list.all).build();
            let images = client.list_images(Some(options)).await?;
            Reply::Images(ImageListing {
                images: images.into_iter().map(convert::image).collect(),
            })
        }
        Op::RemoveImage(remove) => {
            let image = image_name(&remove.image)?;
            let options = RemoveImageOptionsBuilder::new().force(remove.force).build();
            client.remove_image(image, Some(options), None).await?;
            Reply::Removed(remove.image)
        }
        Op::Prune(prune) => Reply::Pruned(prune_unused(client, prune).await?),
        Op::Volumes(_) => {
            let listed = client.list_volumes(None::<ListVolumesOptions>).await?;
            Reply::Volumes(VolumeListing {
                volumes: listed
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(convert::volume)
                    .collect(),
            })
        }
        Op::CreateVolume(create) => {
            let request = VolumeCreateRequest {
                name: Some(create.name).filter(|name| !name.is_empty()),
                driver: Some(create.driver).filter(|driver| !driver.is_empty()),
                labels: Some(create.labels),
                ..VolumeCreateRequest::default()
            };
            Reply::Volume(convert::volume(client.create_volume(request).await?))
        }
        Op::RemoveVolume(remove) => {
            let volume = object_name("volume", &remove.name)?;
            let options = RemoveVolumeOptionsBuilder::new()
                .force(remove.force)
                .build();
            client.remove_volume(volume, Some(options)).await?;
            Reply::Removed(remove.name)
        }
        Op::Networks(_) => {
            let listed = client.list_networks(None::<ListNetworksOptions>).await?;
            // The list leaves out the containers connected; inspecting each says them.
            let described = listed
                .into_iter()
                .filter_map(|network| network.id)
                .map(|id| {
                    let client = client.clone();
                    async move { network(&client, &id).await }
                });
            let networks = futures_util::future::join_all(described).await;
            Reply::Networks(NetworkListing {
                networks: networks.into_iter().collect::<Result<_, _>>()?,
            })
        }
        Op::CreateNetwork(create) => {
            if create.name.is_empty() {
                return Err(DockerFailure::invalid("a network needs a name").into());
            }
            let request = NetworkCreateRequest {
                name: create.name,
                driver: Some(create.driver).filter(|driver| !driver.is_empty()),
                labels: Some(create.labels),
                internal: Some(create.internal),
                ..NetworkCreateRequest::default()
            };
            let created = client.create_network(request).await?;
            Reply::Network(network(client, &created.id).await?)
        }
        Op::RemoveNetwork(remove) => {
            let network = object_name("network", &remove.network)?;
            client.remove_network(network).await?;
            Reply::Removed(remove.network)
        }
    })
}

/// A container's summary, as the list shows it.
async fn summary(client: &bollard::Docker, container: &str) -> Result<ContainerSummary, Failed> {
    let id = client
        .inspect_container(container, None::<InspectContainerOptions>)
        .await?
        .id
        .unwrap_or_default();
    let filters = HashMap::from([("id", vec![id.as_str()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let found = client
        .list_containers(Some(options))
        .await?
        .into_iter()
        .next();
    found.map(convert::container).ok_or_else(|| {
        DockerFailure::new(
            DockerError::NotFound,
            format!("container {container} is gone (removed meanwhile)"),
        )
        .into()
    })
}

async fn act(client: &bollard::Docker, action: ContainerAction) -> Result<Reply, Failed> {
    let container = object_name("container", &action.container)?;
    let timeout = action
        .timeout_seconds
        .map(|t| i32::try_from(t).unwrap_or(i32::MAX));
    // A stop waits for the container as long as it was told to, then the usual time.
    let patient = || {
        let waiting = Duration::from_secs(u64::from(action.timeout_seconds.unwrap_or(10)));
        client.clone().with_timeout(REQUEST_TIMEOUT + waiting)
    };
    match action.verb() {
        ContainerVerb::Start => client.start_container(container, None).await?,
        ContainerVerb::Stop => {
            let options = StopContainerOptions {
                t: timeout,
                signal: None,
            };
            patient().stop_container(container, Some(options)).await?
        }
        ContainerVerb::Restart => {
            let options = RestartContainerOptions {
                t: timeout,
                signal: None,
            };
            patient()
                .restart_container(container, Some(options))
                .await?
        }
        ContainerVerb::Kill => {
            let signal = match action.signal.as_str() {
                "" => "SIGKILL",
                signal => signal,
            };
            let options = KillContainerOptionsBuilder::new().signal(signal).build();
            client.kill_container(container, Some(options)).await?
        }
        ContainerVerb::Pause => client.pause_container(container).await?,
        ContainerVerb::Unpause => client.unpause_container(container).await?,
        ContainerVerb::Remove => {
            let options = RemoveContainerOptionsBuilder::new()
                .force(action.force)
                .v(action.volumes)
                .build();
            client.remove_container(container, Some(options)).await?;
            return Ok(Reply::Removed(action.container));
        }
        ContainerVerb::Unspecified => {
            return Err(DockerFailure::invalid(
                "unknown container action: this daemon may be older than the control plane",
            )
            .into());
        }
    }
    Ok(Reply::Container(summary(client, container).await?))
}

/// One stats sample, with the previous reading the engine keeps, so CPU % is meaningful.
pub(super) async fn stats_sample(
    client: &bollard::Docker,
    container: &str,
) -> Result<ContainerStats, Failed> {
    let container = object_name("container", container)?;
    let options = StatsOptionsBuilder::new().stream(false).build();
    match client.stats(container, Some(options)).next().await {
        Some(sample) => Ok(convert::stats(container, sample?)),
        None => Err(DockerFailure::new(
            DockerError::Engine,
            format!("the engine sent no stats for {container}"),
        )
        .into()),
    }
}

async fn network(client: &bollard::Docker, id: &str) -> Result<NetworkSummary, Failed> {
    Ok(convert::network(client.inspect_network(id, None).await?))
}

async fn prune_unused(client: &bollard::Docker, prune: DockerPrune) -> Result<PruneReport, Failed> {
    let reclaimed = |bytes: Option<i64>| bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
    Ok(match prune.what() {
        PruneKind::Containers => {
            let pruned = client
                .prune_containers(None::<PruneContainersOptions>)
                .await?;
            PruneReport {
                deleted: pruned.containers_deleted.unwrap_or_default(),
                space_reclaimed: reclaimed(pruned.space_reclaimed),
            }
        }
        PruneKind::Images => {
            // Unused images with a tag too, not only dangling ones.
            let every = HashMap::from([("dangling", vec!["false"])]);
            let options = match prune.all {
                true => PruneImagesOptionsBuilder::new().filters(&every).build(),
                false => PruneImagesOptionsBuilder::new().build(),
            };
            let pruned = client.prune_images(Some(options)).await?;
            PruneReport {
                deleted: pruned
                    .images_deleted
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|image| image.deleted.or(image.untagged))
                    .collect(),
                space_reclaimed: reclaimed(pruned.space_reclaimed),
            }
        }
        PruneKind::Volumes => {
            let pruned = client.prune_volumes(None::<PruneVolumesOptions>).await?;
            PruneReport {
                deleted: pruned.volumes_deleted.unwrap_or_default(),
                space_reclaimed: reclaimed(pruned.space_reclaimed),
            }
        }
        PruneKind::Networks => {
            let pruned = client.prune_networks(None).await?;
            PruneReport {
                deleted: pruned.networks_deleted.unwrap_or_default(),
                space_reclaimed: 0,
            }
        }
        PruneKind::Unspecified => {
            return Err(DockerFailure::invalid(
                "prune what: containers, images, volumes or networks",
            )
            .into());
        }
    })
}

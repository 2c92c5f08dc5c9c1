//! The engine itself (`info`), `prune`, and volumes and networks: list, create, remove.

use std::collections::BTreeMap;

use serde::Serialize;
use zpanel_proto::{
    DockerEmpty, DockerEngine, DockerPrune, NetworkCreate, NetworkRemove, NetworkSummary,
    PruneKind, VolumeCreate, VolumeRemove, VolumeSummary, docker_reply, docker_request,
};

use super::{each, request, short_id, sorted_labels, unexpected};
use crate::client;
use crate::config::Settings;
use crate::display;
use crate::files::progress::human_bytes;

#[derive(Debug, Serialize)]
struct EngineJson<'a> {
    available: bool,
    message: &'a str,
    version: &'a str,
    api_version: &'a str,
    os: &'a str,
    arch: &'a str,
    containers: u32,
    running: u32,
    images: u32,
    endpoint: &'a str,
}

impl<'a> From<&'a DockerEngine> for EngineJson<'a> {
    fn from(e: &'a DockerEngine) -> Self {
        EngineJson {
            available: e.available,
            message: &e.message,
            version: &e.version,
            api_version: &e.api_version,
            os: &e.os,
            arch: &e.arch,
            containers: e.containers,
            running: e.running,
            images: e.images,
            endpoint: &e.endpoint,
        }
    }
}

/// `info [--json]`: the engine; exits 1 when none answers (the daemon's line says why).
pub async fn info(settings: &Settings, host: &str, json: bool) -> anyhow::Result<i32> {
    let mut client = client::connect(settings).await?;
    let engine = match request(
        &mut client,
        host,
        docker_request::Op::Engine(DockerEmpty {}),
    )
    .await?
    {
        docker_reply::Result::Engine(engine) => engine,
        _ => return Err(unexpected("the engine's description")),
    };
    if json {
        display::print_json(&EngineJson::from(&engine), "the engine")?;
        return Ok(i32::from(!engine.available));
    }
    if !engine.available {
        anyhow::bail!("host {host}: {}", engine.message);
    }
    print!("{}", describe(&engine));
    Ok(0)
}

fn describe(e: &DockerEngine) -> String {
    format!(
        "endpoint:    {}\n\
         version:     {} (API {})\n\
         system:      {}/{}\n\
         containers:  {} ({} running)\n\
         images:      {}\n",
        e.endpoint, e.version, e.api_version, e.os, e.arch, e.containers, e.running, e.images
    )
}

/// `prune containers|images|volumes|networks [-a]`: what went, then the space reclaimed.
pub async fn prune(
    settings: &Settings,
    host: &str,
    what: PruneKind,
    all: bool,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let op = docker_request::Op::Prune(DockerPrune {
        what: what as i32,
        all,
    });
    let report = match request(&mut client, host, op).await? {
        docker_reply::Result::Pruned(report) => report,
        _ => return Err(unexpected("what was pruned")),
    };
    for deleted in &report.deleted {
        println!("deleted {deleted}");
    }
    println!("reclaimed {}", human_bytes(report.space_reclaimed as f64));
    Ok(())
}

// === volumes ===

#[derive(Debug, Serialize)]
struct VolumeJson<'a> {
    name: &'a str,
    driver: &'a str,
    mountpoint: &'a str,
    created_at: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
}

impl<'a> From<&'a VolumeSummary> for VolumeJson<'a> {
    fn from(v: &'a VolumeSummary) -> Self {
        VolumeJson {
            name: &v.name,
            driver: &v.driver,
            mountpoint: &v.mountpoint,
            created_at: &v.created_at,
            labels: sorted_labels(&v.labels),
        }
    }
}

/// `volumes [ls] [--json]`.
pub async fn volumes(settings: &Settings, host: &str, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let volumes = match request(
        &mut client,
        host,
        docker_request::Op::Volumes(DockerEmpty {}),
    )
    .await?
    {
        docker_reply::Result::Volumes(listing) => listing.volumes,
        _ => return Err(unexpected("a volume list")),
    };
    if json {
        let rows: Vec<VolumeJson> = volumes.iter().map(VolumeJson::from).collect();
        return display::print_json(&rows, "volumes");
    }
    let rows = volumes.iter().map(|v| [v.driver.clone(), v.name.clone()]);
    print!("{}", display::table(["DRIVER", "VOLUME NAME"], rows));
    Ok(())
}

/// `volumes create NAME [--driver D]`: prints its name.
pub async fn create_volume(
    settings: &Settings,
    host: &str,
    create: VolumeCreate,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    match request(&mut client, host, docker_request::Op::CreateVolume(create)).await? {
        docker_reply::Result::Volume(volume) => {
            println!("{}", volume.name);
            Ok(())
        }
        _ => Err(unexpected("the new volume")),
    }
}

/// `volumes rm [-f] NAME...`.
pub async fn remove_volumes(
    settings: &Settings,
    host: &str,
    names: &[String],
    force: bool,
) -> anyhow::Result<i32> {
    each(settings, host, names, |name| {
        docker_request::Op::RemoveVolume(VolumeRemove {
            name: name.into(),
            force,
        })
    })
    .await
}

// === networks ===

#[derive(Debug, Serialize)]
struct NetworkJson<'a> {
    id: &'a str,
    name: &'a str,
    driver: &'a str,
    scope: &'a str,
    internal: bool,
    created: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    containers: u32,
}

impl<'a> From<&'a NetworkSummary> for NetworkJson<'a> {
    fn from(n: &'a NetworkSummary) -> Self {
        NetworkJson {
            id: &n.id,
            name: &n.name,
            driver: &n.driver,
            scope: &n.scope,
            internal: n.internal,
            created: &n.created,
            labels: sorted_labels(&n.labels),
            containers: n.containers,
        }
    }
}

/// `networks [ls] [--json]`.
pub async fn networks(settings: &Settings, host: &str, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let networks = match request(
        &mut client,
        host,
        docker_request::Op::Networks(DockerEmpty {}),
    )
    .await?
    {
        docker_reply::Result::Networks(listing) => listing.networks,
        _ => return Err(unexpected("a network list")),
    };
    if json {
        let rows: Vec<NetworkJson> = networks.iter().map(NetworkJson::from).collect();
        return display::print_json(&rows, "networks");
    }
    let rows = networks.iter().map(|n| {
        [
            short_id(&n.id),
            n.name.clone(),
            n.driver.clone(),
            n.scope.clone(),
        ]
    });
    print!(
        "{}",
        display::table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows)
    );
    Ok(())
}

/// `networks create NAME [--driver D] [--internal]`: prints its id.
pub async fn create_network(
    settings: &Settings,
    host: &str,
    create: NetworkCreate,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    match request(&mut client, host, docker_request::Op::CreateNetwork(create)).await? {
        docker_reply::Result::Network(network) => {
            println!("{}", network.id);
            Ok(())
        }
        _ => Err(unexpected("the new network")),
    }
}

/// `networks rm NAME...`.
pub async fn remove_networks(
    settings: &Settings,
    host: &str,
    names: &[String],
) -> anyhow::Result<i32> {
    each(settings, host, names, |name| {
        docker_request::Op::RemoveNetwork(NetworkRemove {
            network: name.into(),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_reads_as_a_few_lines() {
        let engine = DockerEngine {
            available: true,
            version: "27.3.1".into(),
            api_version: "1.47".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            containers: 5,
            running: 2,
            images: 3,
            endpoint: "unix:///var/run/docker.sock".into(),
            ..DockerEngine::default()
        };
        assert_eq!(
            describe(&engine),
            "endpoint:    unix:///var/run/docker.sock\n\
             version:     27.3.1 (API 1.47)\n\
             system:      linux/x86_64\n\
             containers:  5 (2 running)\n\
             images:      3\n"
        );
    }
}

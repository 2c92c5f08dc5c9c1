//! What the engine says, in the wire's terms: container, image, volume and network
//! summaries, a stats sample computed as `docker stats` does, events and pull progress; and
//! what a `ContainerSpec` asks, in the engine's.

use std::collections::HashMap;

use bollard::models as engine;
use bollard::query_parameters::{CreateContainerOptions, CreateContainerOptionsBuilder};
use zpanel_proto::{
    ContainerSpec, ContainerStats, ContainerSummary, DockerEvent, ImageSummary, NetworkSummary,
    PortBinding, PullProgress, VolumeSummary,
};

use super::DockerFailure;

// === what the engine says ===

pub fn container(summary: engine::ContainerSummary) -> ContainerSummary {
    let status = summary.status.unwrap_or_default();
    let health = match summary.health.and_then(|health| health.status) {
        Some(engine::ContainerSummaryHealthStatusEnum::HEALTHY) => "healthy".to_string(),
        Some(engine::ContainerSummaryHealthStatusEnum::UNHEALTHY) => "unhealthy".to_string(),
        Some(engine::ContainerSummaryHealthStatusEnum::STARTING) => "starting".to_string(),
        _ => health_in(&status).to_string(),
    };
    let name = summary
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default();
    ContainerSummary {
        id: summary.id.unwrap_or_default(),
        name: name.trim_start_matches('/').to_string(),
        image: summary.image.unwrap_or_default(),
        image_id: summary.image_id.unwrap_or_default(),
        command: summary.command.unwrap_or_default(),
        created: summary.created.unwrap_or_default(),
        state: summary
            .state
            .map(|state| state.to_string())
            .unwrap_or_default(),
        status,
        health,
        ports: summary
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(port)
            .collect(),
        labels: summary.labels.unwrap_or_default(),
    }
}

/// The health an engine older than API 1.52 only states in the status: "Up 5 minutes
/// (healthy)", "(health: starting)".
fn health_in(status: &str) -> &'static str {
    if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("(health: starting)") {
        "starting"
    } else {
        ""
    }
}

fn port(port: engine::PortSummary) -> PortBinding {
    PortBinding {
        host_port: port.public_port.map(u32::from).unwrap_or_default(),
        container_port: u32::from(port.private_port),
        protocol: port
            .typ
            .map(|protocol| protocol.to_string())
            .filter(|protocol| !protocol.is_empty())
            .unwrap_or_else(|| "tcp".into()),
        host_ip: port.ip.unwrap_or_default(),
    }
}

/// One stats sample as `docker stats` shows it: CPU % from the difference to the previous
/// reading (the container's CPU time over the host's, times the CPUs online), memory less
/// the inactive page cache, network and block I/O summed over interfaces and devices.
pub fn stats(container: &str, sample: engine::ContainerStatsResponse) -> ContainerStats {
    let (cpu, previous) = (
        sample.cpu_stats.unwrap_or_default(),
        sample.precpu_stats.unwrap_or_default(),
    );
    let total = |stats: &engine::ContainerCpuStats| {
        stats
            .cpu_usage
            .as_ref()
            .and_then(|usage| usage.total_usage)
            .unwrap_or_default()
    };
    let cpu_delta = total(&cpu).saturating_sub(total(&previous));
    let system_delta = cpu
        .system_cpu_usage
        .unwrap_or_default()
        .saturating_sub(previous.system_cpu_usage.unwrap_or_default());
    let online = cpu.online_cpus.filter(|n| *n > 0).unwrap_or_else(|| {
        let per_cpu = cpu.cpu_usage.as_ref().and_then(|u| u.percpu_usage.as_ref());
        per_cpu.map_or(1, |cpus| u32::try_from(cpus.len()).unwrap_or(1))
    });
    let cpu_percent = match (cpu_delta, system_delta) {
        (0, _) | (_, 0) => 0.0,
        (cpu, system) => cpu as f64 / system as f64 * f64::from(online) * 100.0,
    };
    let memory = sample.memory_stats.unwrap_or_default();
    let usage = memory.usage.unwrap_or_default();
    let inactive = memory.stats.as_ref().and_then(|stats| {
        // cgroup v1 names it total_inactive_file, v2 inactive_file
        stats
            .get("total_inactive_file")
            .or_else(|| stats.get("inactive_file"))
            .copied()
    });
    let networks = sample.networks.unwrap_or_default();
    let net = |bytes: fn(&engine::ContainerNetworkStats) -> Option<u64>| {
        networks.values().filter_map(bytes).sum()
    };
    let block = sample
        .blkio_stats
        .and_then(|blkio| blkio.io_service_bytes_recursive)
        .unwrap_or_default();
    let block_bytes = |op: &str| {
        block
            .iter()
            .filter(|entry| {
                entry
                    .op
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(op))
            })
            .filter_map(|entry| entry.value)
            .sum()
    };
    ContainerStats {
        container: container.to_string(),
        read_at_ms: sample.read.as_deref().map_or(0, unix_ms),
        cpu_percent,
        memory_bytes: usage.saturating_sub(inactive.filter(|i| *i < usage).unwrap_or(0)),
        memory_limit_bytes: memory.limit.unwrap_or_default(),
        net_rx_bytes: net(|n| n.rx_bytes),
        net_tx_bytes: net(|n| n.tx_bytes),
        block_read_bytes: block_bytes("read"),
        block_write_bytes: block_bytes("write"),
        pids: sample
            .pids_stats
            .and_then(|pids| pids.current)
            .and_then(|current| u32::try_from(current).ok())
            .unwrap_or_default(),
    }
}

/// Whether a sample says nothing: read at the zero time, as an engine sends them for a
/// container that is not running.
pub fn is_empty(sample: &engine::ContainerStatsResponse) -> bool {
    sample.read.as_deref().is_none_or(|read| unix_ms(read) == 0)
}

/// Unix milliseconds of an RFC 3339 time; 0 for none (an engine's zero time, year 1).
fn unix_ms(time: &str) -> i64 {
    humantime::parse_rfc3339_weak(time)
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_millis()).ok())
        .unwrap_or(0)
}

pub fn event(message: engine::EventMessage) -> DockerEvent {
    let actor = message.actor.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    let action = message.action.unwrap_or_default();
    let exit_code = match action.as_str() {
        "die" => attributes
            .get("exitCode")
            .and_then(|code| code.parse().ok()),
        _ => None,
    };
    let time_ms = match message.time_nano {
        Some(nanos) if nanos > 0 => nanos / 1_000_000,
        _ => message.time.unwrap_or_default().saturating_mul(1000),
    };
    DockerEvent {
        kind: message.typ.map(|kind| kind.to_string()).unwrap_or_default(),
        action,
        id: actor.id.unwrap_or_default(),
        name: attributes.get("name").cloned().unwrap_or_default(),
        time_ms,
        exit_code,
    }
}

pub fn image(image: engine::ImageSummary) -> ImageSummary {
    ImageSummary {
        id: image.id,
        tags: image
            .repo_tags
            .into_iter()
            .filter(|tag| tag != "<none>:<none>")
            .collect(),
        size: u64::try_from(image.size).unwrap_or_default(),
        created: image.created,
        containers: image.containers,
    }
}

pub fn volume(volume: engine::Volume) -> VolumeSummary {
    VolumeSummary {
        name: volume.name,
        driver: volume.driver,
        mountpoint: volume.mountpoint,
        created_at: volume.created_at.unwrap_or_default(),
        labels: volume.labels,
    }
}

pub fn network(network: engine::NetworkInspect) -> NetworkSummary {
    NetworkSummary {
        id: network.id.unwrap_or_default(),
        name: network.name.unwrap_or_default(),
        driver: network.driver.unwrap_or_default(),
        scope: network.scope.unwrap_or_default(),
        internal: network.internal.unwrap_or_default(),
        created: network.created.unwrap_or_default(),
        labels: network.labels.unwrap_or_default(),
        containers: network
            .containers
            .map_or(0, |c| u32::try_from(c.len()).unwrap_or(u32::MAX)),
    }
}

pub fn progress(info: engine::CreateImageInfo) -> PullProgress {
    let detail = info.progress_detail.unwrap_or_default();
    let bytes = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok()).unwrap_or_default();
    PullProgress {
        id: info.id.unwrap_or_default(),
        status: info.status.unwrap_or_default(),
        current: bytes(detail.current),
        total: bytes(detail.total),
    }
}

// === what a spec asks ===

/// `docker create` of a spec: its name and the engine's container configuration. What the
/// engine would misread (a restart policy, a negative CPU count) is refused here.
pub fn create(
    spec: ContainerSpec,
) -> Result<(CreateContainerOptions, engine::ContainerCreateBody), DockerFailure> {
    if spec.image.is_empty() {
        return Err(DockerFailure::invalid(
            "a container needs an image: name one",
        ));
    }
    let mut options = CreateContainerOptionsBuilder::new();
    if !spec.name.is_empty() {
        options = options.name(&spec.name);
    }
    let memory = match spec.memory_bytes {
        0 => None,
        bytes => Some(i64::try_from(bytes).map_err(|_| {
            DockerFailure::invalid(format!("a memory limit of {bytes} bytes is too large"))
        })?),
    };
    let cpus = spec.cpus;
    let nano_cpus = if cpus == 0.0 {
        None
    } else if cpus.is_finite() && cpus > 0.0 && cpus < 1e6 {
        Some((cpus * 1e9).round() as i64)
    } else {
        return Err(DockerFailure::invalid(format!(
            "a CPU limit of {cpus} is not a positive number of CPUs"
        )));
    };
    let mut exposed = Vec::new();
    let mut bindings: engine::PortMap = HashMap::new();
    for port in &spec.ports {
        let key = port_key(port)?;
        exposed.push(key.clone());
        let binding = engine::PortBinding {
            host_ip: Some(port.host_ip.clone()).filter(|ip| !ip.is_empty()),
            host_port: Some(match port.host_port {
                0 => String::new(),
                host => host.to_string(),
            }),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    let some = |text: String| Some(text).filter(|text| !text.is_empty());
    let host_config = engine::HostConfig {
        binds: Some(spec.volumes).filter(|volumes| !volumes.is_empty()),
        port_bindings: Some(bindings).filter(|bindings| !bindings.is_empty()),
        restart_policy: restart_policy(&spec.restart)?,
        memory,
        nano_cpus,
        network_mode: some(spec.network),
        ..engine::HostConfig::default()
    };
    let body = engine::ContainerCreateBody {
        image: Some(spec.image),
        cmd: Some(spec.command).filter(|command| !command.is_empty()),
        env: Some(spec.env).filter(|env| !env.is_empty()),
        exposed_ports: Some(exposed).filter(|ports| !ports.is_empty()),
        labels: Some(spec.labels).filter(|labels| !labels.is_empty()),
        tty: Some(spec.tty),
        open_stdin: Some(spec.interactive),
        working_dir: some(spec.workdir),
        user: some(spec.user),
        host_config: Some(host_config),
        ..engine::ContainerCreateBody::default()
    };
    Ok((options.build(), body))
}

/// `80/tcp` for a port.
fn port_key(port: &PortBinding) -> Result<String, DockerFailure> {
    let protocol = match port.protocol.as_str() {
        "" => "tcp",
        protocol @ ("tcp" | "udp" | "sctp") => protocol,
        other => {
            return Err(DockerFailure::invalid(format!(
                "port protocol {other:?} is not tcp, udp or sctp"
            )));
        }
    };
    if !(1..=65535).contains(&port.container_port) || port.host_port > 65535 {
        return Err(DockerFailure::invalid(format!(
            "port {}:{} is not a port number (1 to 65535)",
            port.host_port, port.container_port
        )));
    }
    Ok(format!("{}/{protocol}", port.container_port))
}

/// "no", "always", "unless-stopped", "on-failure" or "on-failure:N".
fn restart_policy(text: &str) -> Result<Option<engine::RestartPolicy>, DockerFailure> {
    use engine::RestartPolicyNameEnum as Name;
    let (name, retries) = match text.split_once(':') {
        Some(("on-failure", count)) => {
            let count = count.parse::<u32>().map_err(|_| {
                DockerFailure::invalid(format!(
                    "restart policy {text:?}: the retry count is not a number"
                ))
            })?;
            (Name::ON_FAILURE, Some(i64::from(count)))
        }
        None if text.is_empty() => return Ok(None),
        None => match text {
            "no" => (Name::NO, None),
            "always" => (Name::ALWAYS, None),
            "unless-stopped" => (Name::UNLESS_STOPPED, None),
            "on-failure" => (Name::ON_FAILURE, None),
            _ => return Err(unknown_restart_policy(text)),
        },
        Some(_) => return Err(unknown_restart_policy(text)),
    };
    Ok(Some(engine::RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }))
}

fn unknown_restart_policy(text: &str) -> DockerFailure {
    DockerFailure::invalid(format!(
        "restart policy {text:?} is not no, always, unless-stopped, on-failure or on-failure:N"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_bad_ones_are_named() {
        let policy =
            |text: &str| restart_policy(text).map(|p| p.map(|p| (p.name, p.maximum_retry_count)));
        use engine::RestartPolicyNameEnum as Name;
        assert_eq!(policy(""), Ok(None));
        assert_eq!(policy("always"), Ok(Some((Some(Name::ALWAYS), None))));
        assert_eq!(
            policy("on-failure:3"),
            Ok(Some((Some(Name::ON_FAILURE), Some(3))))
        );
        assert_eq!(
            policy("sometimes").unwrap_err().message,
            "restart policy \"sometimes\" is not no, always, unless-stopped, on-failure or on-failure:N"
        );
        assert!(policy("on-failure:x").is_err());
        assert!(policy("always:2").is_err());
    }

    #[test]
    fn cpu_percent_is_computed_like_docker_stats() {
        let cpu = |total: u64, system: u64| engine::ContainerCpuStats {
            cpu_usage: Some(engine::ContainerCpuUsage {
                total_usage: Some(total),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(4),
            ..Default::default()
        };
        let sample = engine::ContainerStatsResponse {
            cpu_stats: Some(cpu(300, 2000)),
            precpu_stats: Some(cpu(100, 1000)),
            memory_stats: Some(engine::ContainerMemoryStats {
                usage: Some(1000),
                limit: Some(4000),
                stats: Some([("inactive_file".to_string(), 300)].into()),
                ..Default::default()
            }),
            read: Some("2024-01-02T03:04:05.678901234Z".into()),
            ..Default::default()
        };
        let stats = stats("web", sample);
        assert_eq!(stats.cpu_percent, 80.0);
        assert_eq!((stats.memory_bytes, stats.memory_limit_bytes), (700, 4000));
        assert_eq!(stats.read_at_ms, 1_704_164_645_678);
    }

    #[test]
    fn health_is_read_from_the_status() {
        assert_eq!(health_in("Up 5 minutes (healthy)"), "healthy");
        assert_eq!(health_in("Up 1 second (health: starting)"), "starting");
        assert_eq!(health_in("Up 2 hours (unhealthy)"), "unhealthy");
        assert_eq!(health_in("Exited (0) 2 hours ago"), "");
    }
}

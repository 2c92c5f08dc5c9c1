//! Containers: `ps`, `inspect`, `create` and `run` (which follows the logs of what it
//! started until it ends, and exits with its code), the verbs that change a container's
//! state (`start`, `stop`, `kill`, `rm`, ...), `rename` and `top`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use zpanel_proto::{
    ContainerAction, ContainerList, ContainerRef, ContainerRename, ContainerSpec, ContainerSummary,
    DockerLogs, PortBinding, docker_reply, docker_request,
};

use super::logs::{self, LogsEnd};
use super::{each, request, short_id, sorted_labels, unexpected};
use crate::client::{self, Client};
use crate::config::Settings;
use crate::display::{self, ago};

/// How much of a command `ps` shows, quotes included, as docker does.
const COMMAND_CHARS: usize = 20;
/// After `run`'s logs end, how often and how many times the container is asked whether it
/// exited (the engine may still be recording its exit).
const EXIT_POLL_EVERY: Duration = Duration::from_millis(100);
const EXIT_POLLS: u32 = 50;

#[derive(Debug, Serialize)]
struct ContainerJson<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    image_id: &'a str,
    command: &'a str,
    /// Unix seconds, as the API says it.
    created: i64,
    state: &'a str,
    status: &'a str,
    health: &'a str,
    ports: Vec<PortJson<'a>>,
    labels: BTreeMap<&'a str, &'a str>,
}

#[derive(Debug, Serialize)]
struct PortJson<'a> {
    host_port: u32,
    container_port: u32,
    protocol: &'a str,
    host_ip: &'a str,
}

impl<'a> From<&'a ContainerSummary> for ContainerJson<'a> {
    fn from(c: &'a ContainerSummary) -> Self {
        ContainerJson {
            id: &c.id,
            name: &c.name,
            image: &c.image,
            image_id: &c.image_id,
            command: &c.command,
            created: c.created,
            state: &c.state,
            status: &c.status,
            health: &c.health,
            ports: c
                .ports
                .iter()
                .map(|p| PortJson {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: &p.protocol,
                    host_ip: &p.host_ip,
                })
                .collect(),
            labels: sorted_labels(&c.labels),
        }
    }
}

/// The containers on `host` (running ones, or `all`), newest first.
pub async fn list(
    client: &mut Client,
    host: &str,
    all: bool,
) -> anyhow::Result<Vec<ContainerSummary>> {
    let op = docker_request::Op::Containers(ContainerList { all });
    match request(client, host, op).await? {
        docker_reply::Result::Containers(listing) => Ok(listing.containers),
        _ => Err(unexpected("a container list")),
    }
}

/// `ps [-a] [--json]`.
pub async fn ps(settings: &Settings, host: &str, all: bool, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let containers = list(&mut client, host, all).await?;
    if json {
        let rows: Vec<ContainerJson> = containers.iter().map(ContainerJson::from).collect();
        return display::print_json(&rows, "containers");
    }
    print!("{}", table(&containers, zpanel_shared::unix_now()));
    Ok(())
}

fn table(containers: &[ContainerSummary], now: i64) -> String {
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    display::table(
        header,
        containers.iter().map(|c| {
            [
                short_id(&c.id),
                c.image.clone(),
                display::truncate(&format!("\"{}\"", c.command), COMMAND_CHARS),
                ago(c.created, now),
                c.status.clone(),
                ports(&c.ports),
                c.name.clone(),
            ]
        }),
    )
}

/// Ports as `docker ps` shows them: `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 443/tcp`.
fn ports(ports: &[PortBinding]) -> String {
    let shown: Vec<String> = ports
        .iter()
        .map(|p| {
            let protocol = if p.protocol.is_empty() {
                "tcp"
            } else {
                &p.protocol
            };
            let container = format!("{}/{protocol}", p.container_port);
            match (p.host_port, p.host_ip.as_str()) {
                (0, _) => container,
                (port, "") => format!("0.0.0.0:{port}->{container}"),
                (port, ip) if ip.contains(':') => format!("[{ip}]:{port}->{container}"),
                (port, ip) => format!("{ip}:{port}->{container}"),
            }
        })
        .collect();
    shown.join(", ")
}

/// The engine's inspect document of a container.
async fn inspect_document(
    client: &mut Client,
    host: &str,
    container: &str,
) -> anyhow::Result<Value> {
    let op = docker_request::Op::Inspect(ContainerRef {
        container: container.into(),
    });
    match request(client, host, op).await? {
        docker_reply::Result::InspectJson(text) => serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("the host's inspect document of {container} is not JSON: {e}")
        }),
        _ => Err(unexpected("an inspect document")),
    }
}

/// `inspect C`: the engine's document, pretty.
pub async fn inspect(settings: &Settings, host: &str, container: &str) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let document = inspect_document(&mut client, host, container).await?;
    display::print_json(&document, "the inspect document")
}

/// What `create` and `run` do once the container is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `create`: leave it created; print its id.
    Create,
    /// `run -d`: start it; print its id.
    Detached,
    /// `run`: start it and follow its logs until it ends; exit with its code.
    Attached,
}

/// `create` and `run`: the exit code of `zpanel`.
pub async fn create(
    settings: &Settings,
    host: &str,
    mut spec: ContainerSpec,
    launch: Launch,
) -> anyhow::Result<i32> {
    if launch == Launch::Attached && spec.interactive {
        anyhow::bail!(
            "run cannot attach stdin (-i): add -d, then open a shell with zpanel docker {host} exec -it CONTAINER"
        );
    }
    spec.start = launch != Launch::Create;
    let mut client = client::connect(settings).await?;
    let container = match request(&mut client, host, docker_request::Op::Create(spec)).await? {
        docker_reply::Result::Container(container) => container,
        _ => return Err(unexpected("the new container")),
    };
    if launch != Launch::Attached {
        println!("{}", container.id);
        return Ok(0);
    }
    let name = if container.name.is_empty() {
        short_id(&container.id)
    } else {
        container.name.clone()
    };
    let follow = DockerLogs {
        container: container.id.clone(),
        follow: true,
        ..DockerLogs::default()
    };
    let followed = tokio::select! {
        followed = logs::print(&mut client, host, follow) => followed?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "zpanel: stopped following {name}; it keeps running: zpanel docker {host} logs -f {name}"
            );
            return Ok(130);
        }
    };
    if followed == LogsEnd::OutputClosed {
        return Ok(logs::OUTPUT_CLOSED_EXIT);
    }
    exit_code(&mut client, host, &container.id, &name).await
}

/// The exit code of a container whose logs ended.
async fn exit_code(client: &mut Client, host: &str, id: &str, name: &str) -> anyhow::Result<i32> {
    for _ in 0..EXIT_POLLS {
        if let Some(code) = exited(&inspect_document(client, host, id).await?) {
            return Ok(code);
        }
        tokio::time::sleep(EXIT_POLL_EVERY).await;
    }
    anyhow::bail!(
        "the logs of {name} ended but it is running again; follow them with: zpanel docker {host} logs -f {name}"
    )
}

/// A container's exit code from its inspect document, once it is not running.
fn exited(document: &Value) -> Option<i32> {
    let state = document.get("State")?;
    if state.get("Running").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    let code = state.get("ExitCode").and_then(Value::as_i64)?;
    i32::try_from(code).ok()
}

/// `start`, `stop`, `restart`, `kill`, `pause`, `unpause` and `rm` on each container:
/// `action` with each name in turn.
pub async fn act(
    settings: &Settings,
    host: &str,
    containers: &[String],
    action: ContainerAction,
) -> anyhow::Result<i32> {
    each(settings, host, containers, |name| {
        docker_request::Op::Action(ContainerAction {
            container: name.into(),
            ..action.clone()
        })
    })
    .await
}

/// `rename C NAME`.
pub async fn rename(
    settings: &Settings,
    host: &str,
    container: String,
    name: String,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let op = docker_request::Op::Rename(ContainerRename { container, name });
    request(&mut client, host, op).await?;
    Ok(())
}

/// `top C`: the container's processes as the engine lists them.
pub async fn top(settings: &Settings, host: &str, container: &str) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let op = docker_request::Op::Top(ContainerRef {
        container: container.into(),
    });
    let top = match request(&mut client, host, op).await? {
        docker_reply::Result::Top(top) => top,
        _ => return Err(unexpected("a process list")),
    };
    let rows = top.processes.into_iter().map(|row| row.fields);
    print!("{}", display::columns(&top.titles, rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::parse::binding as port;
    use serde_json::json;

    #[test]
    fn the_table_reads_like_docker_ps() {
        let now = 1_800_000_000;
        let web = ContainerSummary {
            id: "0123456789abcdef0123".into(),
            name: "web".into(),
            image: "zpanel-test/busybox:latest".into(),
            command: "sh -c 'while true; do date; sleep 1; done'".into(),
            created: now - 300,
            state: "running".into(),
            status: "Up 5 minutes".into(),
            ports: vec![port("0.0.0.0", 8080, 80, "tcp"), port("", 0, 53, "udp")],
            ..ContainerSummary::default()
        };
        let old = ContainerSummary {
            id: "fedcba9876543210".into(),
            name: "old".into(),
            image: "busybox".into(),
            command: "true".into(),
            created: now - 2 * 86400,
            state: "exited".into(),
            status: "Exited (0) 2 days ago".into(),
            ..ContainerSummary::default()
        };
        assert_eq!(
            table(&[web, old], now),
            "CONTAINER ID  IMAGE                       COMMAND               CREATED  STATUS                 PORTS                         NAMES\n\
             0123456789ab  zpanel-test/busybox:latest  \"sh -c 'while true;…  5m ago   Up 5 minutes           0.0.0.0:8080->80/tcp, 53/udp  web\n\
             fedcba987654  busybox                     \"true\"                2d ago   Exited (0) 2 days ago                                old\n"
        );
    }

    #[test]
    fn ports_name_their_address_and_protocol() {
        assert_eq!(ports(&[]), "");
        assert_eq!(ports(&[port("", 8080, 80, "")]), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            ports(&[
                port("::", 8080, 80, "tcp"),
                port("127.0.0.1", 53, 53, "udp")
            ]),
            "[::]:8080->80/tcp, 127.0.0.1:53->53/udp"
        );
    }

    #[test]
    fn the_exit_code_is_known_once_the_container_stopped() {
        let stopped = json!({"State": {"Running": false, "ExitCode": 3}});
        assert_eq!(exited(&stopped), Some(3));
        assert_eq!(
            exited(&json!({"State": {"Running": true, "ExitCode": 0}})),
            None
        );
        assert_eq!(exited(&json!({"State": {}})), None);
        assert_eq!(exited(&json!({})), None);
    }
}

//! Docker on hosts for the browser and scripts (see ARCHITECTURE.md "Docker"): JSON for
//! requests answered at once, Server-Sent Events for logs, stats and engine events,
//! JSON lines for a pull's progress, and a streamed request body for an import.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Deserializer, Serialize};
use zpanel_proto::{
    ContainerAction, ContainerList, ContainerRef, ContainerRename, ContainerSpec, ContainerStats,
    ContainerSummary, ContainerVerb, DockerEmpty, DockerEngine, DockerEvent, DockerLogs,
    DockerPrune, DockerRequest, ImageList, ImageRemove, ImageSummary, NetworkCreate, NetworkRemove,
    NetworkSummary, PortBinding, PruneKind, PullProgress, StreamChunk, StreamKind, VolumeCreate,
    VolumeRemove, VolumeSummary, docker_reply, docker_request, docker_update,
};

use super::auth::Caller;
use super::{body, query};
use crate::recording::take_utf8;
use crate::service::docker::{PullEvent, prune_name};
use crate::service::relay::items;
use crate::service::{AppState, ServiceError};

/// Where every Docker route of a host lives.
const BASE: &str = "/api/v1/hosts/{host}/docker";

pub fn routes() -> Router<Arc<AppState>> {
    let route = |path: &str| format!("{BASE}{path}");
    Router::new()
        .route(BASE, get(engine))
        .route(&route("/containers"), get(containers).post(create))
        .route(
            &route("/containers/{id}"),
            get(inspect).delete(remove_container),
        )
        .route(&route("/containers/{id}/{verb}"), post(act))
        .route(&route("/containers/{id}/top"), get(top))
        .route(&route("/containers/{id}/stats"), get(stats))
        .route(&route("/containers/{id}/stats/stream"), get(stats_stream))
        .route(&route("/containers/{id}/logs"), get(logs))
        .route(&route("/events"), get(events))
        .route(&route("/images"), get(images))
        .route(&route("/images/pull"), post(pull))
        .route(&route("/images/import"), post(import))
        .route(&route("/images/{id}"), delete(remove_image))
        .route(&route("/prune"), post(prune))
        .route(&route("/volumes"), get(volumes).post(create_volume))
        .route(&route("/volumes/{name}"), delete(remove_volume))
        .route(&route("/networks"), get(networks).post(create_network))
        .route(&route("/networks/{id}"), delete(remove_network))
}

// === conversions ===

/// A query flag: `1`, `true`, `yes`, `on` or present without a value; `0`, `false`, `no`
/// or `off`.
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let value = String::deserialize(deserializer)?;
    match value.as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "{other:?} is not a flag: use 1 or 0"
        ))),
    }
}

fn sorted(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

#[derive(Serialize)]
struct EngineJson {
    available: bool,
    message: String,
    version: String,
    api_version: String,
    os: String,
    arch: String,
    containers: u32,
    running: u32,
    images: u32,
    endpoint: String,
}

impl From<DockerEngine> for EngineJson {
    fn from(engine: DockerEngine) -> Self {
        EngineJson {
            available: engine.available,
            message: engine.message,
            version: engine.version,
            api_version: engine.api_version,
            os: engine.os,
            arch: engine.arch,
            containers: engine.containers,
            running: engine.running,
            images: engine.images,
            endpoint: engine.endpoint,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortJson {
    #[serde(default)]
    host_port: u32,
    container_port: u32,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    host_ip: String,
}

impl From<PortBinding> for PortJson {
    fn from(port: PortBinding) -> Self {
        PortJson {
            host_port: port.host_port,
            container_port: port.container_port,
            protocol: port.protocol,
            host_ip: port.host_ip,
        }
    }
}

impl From<PortJson> for PortBinding {
    fn from(port: PortJson) -> Self {
        PortBinding {
            host_port: port.host_port,
            container_port: port.container_port,
            protocol: port.protocol,
            host_ip: port.host_ip,
        }
    }
}

#[derive(Serialize)]
struct ContainerJson {
    id: String,
    name: String,
    image: String,
    image_id: String,
    command: String,
    created: i64,
    state: String,
    status: String,
    health: String,
    ports: Vec<PortJson>,
    labels: BTreeMap<String, String>,
}

impl From<ContainerSummary> for ContainerJson {
    fn from(container: ContainerSummary) -> Self {
        ContainerJson {
            id: container.id,
            name: container.name,
            image: container.image,
            image_id: container.image_id,
            command: container.command,
            created: container.created,
            state: container.state,
            status: container.status,
            health: container.health,
            ports: container.ports.into_iter().map(PortJson::from).collect(),
            labels: sorted(container.labels),
        }
    }
}

/// What to create, as the page posts it.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct SpecJson {
    image: String,
    name: String,
    command: Vec<String>,
    env: Vec<String>,
    ports: Vec<PortJson>,
    volumes: Vec<String>,
    restart: String,
    memory_bytes: u64,
    cpus: f64,
    labels: HashMap<String, String>,
    start: bool,
    tty: bool,
    interactive: bool,
    workdir: String,
    user: String,
    network: String,
}

impl From<SpecJson> for ContainerSpec {
    fn from(spec: SpecJson) -> Self {
        ContainerSpec {
            image: spec.image,
            name: spec.name,
            command: spec.command,
            env: spec.env,
            ports: spec.ports.into_iter().map(PortBinding::from).collect(),
            volumes: spec.volumes,
            restart: spec.restart,
            memory_bytes: spec.memory_bytes,
            cpus: spec.cpus,
            labels: spec.labels,
            start: spec.start,
            tty: spec.tty,
            interactive: spec.interactive,
            workdir: spec.workdir,
            user: spec.user,
            network: spec.network,
        }
    }
}

#[derive(Serialize)]
struct StatsJson {
    container: String,
    read_at_ms: i64,
    cpu_percent: f64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    pids: u32,
}

impl From<ContainerStats> for StatsJson {
    fn from(stats: ContainerStats) -> Self {
        StatsJson {
            container: stats.container,
            read_at_ms: stats.read_at_ms,
            cpu_percent: stats.cpu_percent,
            memory_bytes: stats.memory_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            net_rx_bytes: stats.net_rx_bytes,
            net_tx_bytes: stats.net_tx_bytes,
            block_read_bytes: stats.block_read_bytes,
            block_write_bytes: stats.block_write_bytes,
            pids: stats.pids,
        }
    }
}

#[derive(Serialize)]
struct EventJson {
    kind: String,
    action: String,
    id: String,
    name: String,
    time_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
}

impl From<DockerEvent> for EventJson {
    fn from(event: DockerEvent) -> Self {
        EventJson {
            kind: event.kind,
            action: event.action,
            id: event.id,
            name: event.name,
            time_ms: event.time_ms,
            exit_code: event.exit_code,
        }
    }
}

#[derive(Serialize)]
struct ImageJson {
    id: String,
    tags: Vec<String>,
    size: u64,
    created: i64,
    containers: i64,
}

impl From<ImageSummary> for ImageJson {
    fn from(image: ImageSummary) -> Self {
        ImageJson {
            id: image.id,
            tags: image.tags,
            size: image.size,
            created: image.created,
            containers: image.containers,
        }
    }
}

#[derive(Serialize)]
struct ProgressJson {
    id: String,
    status: String,
    current: u64,
    total: u64,
}

impl From<PullProgress> for ProgressJson {
    fn from(progress: PullProgress) -> Self {
        ProgressJson {
            id: progress.id,
            status: progress.status,
            current: progress.current,
            total: progress.total,
        }
    }
}

#[derive(Serialize)]
struct VolumeJson {
    name: String,
    driver: String,
    mountpoint: String,
    created_at: String,
    labels: BTreeMap<String, String>,
}

impl From<VolumeSummary> for VolumeJson {
    fn from(volume: VolumeSummary) -> Self {
        VolumeJson {
            name: volume.name,
            driver: volume.driver,
            mountpoint: volume.mountpoint,
            created_at: volume.created_at,
            labels: sorted(volume.labels),
        }
    }
}

#[derive(Serialize)]
struct NetworkJson {
    id: String,
    name: String,
    driver: String,
    scope: String,
    internal: bool,
    created: String,
    labels: BTreeMap<String, String>,
    containers: u32,
}

impl From<NetworkSummary> for NetworkJson {
    fn from(network: NetworkSummary) -> Self {
        NetworkJson {
            id: network.id,
            name: network.name,
            driver: network.driver,
            scope: network.scope,
            internal: network.internal,
            created: network.created,
            labels: sorted(network.labels),
            containers: network.containers,
        }
    }
}

/// A container verb in a path (`start`, `stop`, ...).
fn verb(name: &str) -> Result<ContainerVerb, ServiceError> {
    match name {
        "start" => Ok(ContainerVerb::Start),
        "stop" => Ok(ContainerVerb::Stop),
        "restart" => Ok(ContainerVerb::Restart),
        "kill" => Ok(ContainerVerb::Kill),
        "pause" => Ok(ContainerVerb::Pause),
        "unpause" => Ok(ContainerVerb::Unpause),
        other => Err(ServiceError::NotFound(format!(
            "no container action {other:?}: start, stop, restart, kill, pause, unpause or rename"
        ))),
    }
}

/// What a prune's `what` names.
fn prune_kind(what: &str) -> Result<PruneKind, ServiceError> {
    [
        PruneKind::Containers,
        PruneKind::Images,
        PruneKind::Volumes,
        PruneKind::Networks,
    ]
    .into_iter()
    .find(|kind| prune_name(*kind) == Some(what))
    .ok_or_else(|| {
        ServiceError::InvalidArgument(format!(
            "cannot prune {what:?}: say containers, images, volumes or networks"
        ))
    })
}

/// A log query's `tail`: a number of lines, or `all` (or nothing) for every line.
fn tail(value: Option<&str>) -> Result<Option<u32>, ServiceError> {
    match value {
        None | Some("" | "all") => Ok(None),
        Some(lines) => lines.parse().map(Some).map_err(|_| {
            ServiceError::InvalidArgument(format!(
                "tail {lines:?} is not a number of lines (or all)"
            ))
        }),
    }
}

/// A log query's `since`: Unix seconds, or a duration back from `now` (`10m`, `2h`).
fn since(value: Option<&str>, now: i64) -> Result<i64, ServiceError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(seconds);
    }
    humantime::parse_duration(value)
        .map(|ago| now.saturating_sub(ago.as_secs() as i64))
        .map_err(|_| {
            ServiceError::InvalidArgument(format!(
                "since {value:?} is neither Unix seconds nor a duration like 10m"
            ))
        })
}

/// Text of one log stream: bytes decoded as UTF-8 (lossily), a character split between
/// chunks kept whole.
#[derive(Default)]
struct Utf8Text {
    held: Vec<u8>,
}

impl Utf8Text {
    /// The text of `bytes` after what was held; an incomplete character at the end is held
    /// for the next chunk unless this is the `last`.
    fn decode(&mut self, bytes: &[u8], last: bool) -> String {
        self.held.extend_from_slice(bytes);
        let mut text = take_utf8(&mut self.held);
        if last && !self.held.is_empty() {
            self.held.clear();
            text.push(char::REPLACEMENT_CHARACTER);
        }
        text
    }
}

/// Log chunks as Server-Sent Events: `log` for text, then `end` with the reason.
#[derive(Default)]
struct LogEvents {
    stdout: Utf8Text,
    stderr: Utf8Text,
    ended: bool,
}

impl LogEvents {
    /// The events for the next chunk, an error, or (`None`) the end of the chunks.
    fn events(&mut self, item: Option<Result<StreamChunk, ServiceError>>) -> Vec<Event> {
        let end = |reason: String| sse("end", serde_json::json!({ "reason": reason }));
        match item {
            Some(Ok(chunk)) => {
                let (name, text) = if chunk.stream == StreamKind::Stderr as i32 {
                    ("stderr", &mut self.stderr)
                } else {
                    ("stdout", &mut self.stdout)
                };
                let text = text.decode(&chunk.payload, chunk.eof);
                if text.is_empty() {
                    return Vec::new();
                }
                sse("log", serde_json::json!({ "stream": name, "text": text }))
                    .into_iter()
                    .collect()
            }
            Some(Err(e)) => {
                self.ended = true;
                end(e.to_string()).into_iter().collect()
            }
            None if self.ended => Vec::new(),
            None => end("end of the logs".into()).into_iter().collect(),
        }
    }
}

fn sse(name: &str, data: impl Serialize) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}

// === requests answered at once ===

/// Asks the host; the answer's result.
async fn ask(
    state: &AppState,
    caller: &Caller,
    host: &str,
    op: docker_request::Op,
) -> Result<docker_reply::Result, ServiceError> {
    let request = DockerRequest { op: Some(op) };
    state
        .docker(&caller.principal, host, request)
        .await?
        .result
        .ok_or_else(|| unexpected("a result"))
}

fn unexpected(what: &str) -> ServiceError {
    ServiceError::Internal(format!("the host answered a Docker request without {what}"))
}

/// The container in an answer.
fn container_of(result: docker_reply::Result) -> Result<Json<ContainerJson>, ServiceError> {
    match result {
        docker_reply::Result::Container(container) => Ok(Json(container.into())),
        _ => Err(unexpected("the container")),
    }
}

/// `201 Created` with `value` as JSON.
fn created(value: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// The request's body as JSON, or its default when it has none.
fn optional_body<T: Default>(
    sent: Result<Option<Json<T>>, JsonRejection>,
    what: &str,
) -> Result<T, ServiceError> {
    body(
        sent.map(|sent| sent.unwrap_or_else(|| Json(T::default()))),
        what,
    )
}

#[derive(Deserialize)]
struct AllQuery {
    #[serde(default, deserialize_with = "flag")]
    all: bool,
}

#[derive(Deserialize)]
struct ForceQuery {
    #[serde(default, deserialize_with = "flag")]
    force: bool,
    #[serde(default, deserialize_with = "flag")]
    volumes: bool,
}

async fn engine(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    caller: Caller,
) -> Result<Json<EngineJson>, ServiceError> {
    let op = docker_request::Op::Engine(DockerEmpty {});
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Engine(engine) => Ok(Json(engine.into())),
        _ => Err(unexpected("the engine")),
    }
}

async fn containers(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    wanted: Result<Query<AllQuery>, QueryRejection>,
    caller: Caller,
) -> Result<Json<Vec<ContainerJson>>, ServiceError> {
    let all = query(wanted, "container query")?.all;
    let op = docker_request::Op::Containers(ContainerList { all });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Containers(listing) => Ok(Json(
            listing.containers.into_iter().map(Into::into).collect(),
        )),
        _ => Err(unexpected("the containers")),
    }
}

async fn create(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    spec: Result<Json<SpecJson>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let spec = body(spec, "container spec")?;
    let op = docker_request::Op::Create(spec.into());
    let Json(container) = container_of(ask(&state, &caller, &host, op).await?)?;
    Ok(created(container))
}

async fn inspect(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Response, ServiceError> {
    let op = docker_request::Op::Inspect(ContainerRef { container: id });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::InspectJson(document) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            document,
        )
            .into_response()),
        _ => Err(unexpected("the inspect document")),
    }
}

/// What a container action takes: `timeout_seconds` (stop, restart), `signal` (kill),
/// `name` (rename).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ActionJson {
    timeout_seconds: Option<u32>,
    signal: String,
    name: String,
}

async fn act(
    State(state): State<Arc<AppState>>,
    Path((host, id, verb_name)): Path<(String, String, String)>,
    headers: HeaderMap,
    caller: Caller,
    sent: Result<Option<Json<ActionJson>>, JsonRejection>,
) -> Result<Json<ContainerJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let action = optional_body(sent, "container action")?;
    let op = if verb_name == "rename" {
        docker_request::Op::Rename(ContainerRename {
            container: id,
            name: action.name,
        })
    } else {
        docker_request::Op::Action(ContainerAction {
            container: id,
            verb: verb(&verb_name)? as i32,
            timeout_seconds: action.timeout_seconds,
            signal: action.signal,
            ..ContainerAction::default()
        })
    };
    container_of(ask(&state, &caller, &host, op).await?)
}

async fn remove_container(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    wanted: Result<Query<ForceQuery>, QueryRejection>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<StatusCode, ServiceError> {
    caller.check_change(&headers, &state)?;
    let wanted = query(wanted, "removal")?;
    let op = docker_request::Op::Action(ContainerAction {
        container: id,
        verb: ContainerVerb::Remove as i32,
        force: wanted.force,
        volumes: wanted.volumes,
        ..ContainerAction::default()
    });
    ask(&state, &caller, &host, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct TopJson {
    titles: Vec<String>,
    processes: Vec<Vec<String>>,
}

async fn top(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<TopJson>, ServiceError> {
    let op = docker_request::Op::Top(ContainerRef { container: id });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Top(top) => Ok(Json(TopJson {
            titles: top.titles,
            processes: top.processes.into_iter().map(|row| row.fields).collect(),
        })),
        _ => Err(unexpected("the processes")),
    }
}

async fn stats(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<StatsJson>, ServiceError> {
    let op = docker_request::Op::Stats(ContainerRef { container: id });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Stats(stats) => Ok(Json(stats.into())),
        _ => Err(unexpected("the stats")),
    }
}

async fn images(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    wanted: Result<Query<AllQuery>, QueryRejection>,
    caller: Caller,
) -> Result<Json<Vec<ImageJson>>, ServiceError> {
    let all = query(wanted, "image query")?.all;
    let op = docker_request::Op::Images(ImageList { all });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Images(listing) => {
            Ok(Json(listing.images.into_iter().map(Into::into).collect()))
        }
        _ => Err(unexpected("the images")),
    }
}

async fn remove_image(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    wanted: Result<Query<ForceQuery>, QueryRejection>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<StatusCode, ServiceError> {
    caller.check_change(&headers, &state)?;
    let force = query(wanted, "removal")?.force;
    let op = docker_request::Op::RemoveImage(ImageRemove { image: id, force });
    ask(&state, &caller, &host, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneJson {
    what: String,
    #[serde(default)]
    all: bool,
}

#[derive(Serialize)]
struct PrunedJson {
    deleted: Vec<String>,
    space_reclaimed: u64,
}

async fn prune(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    sent: Result<Json<PruneJson>, JsonRejection>,
) -> Result<Json<PrunedJson>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let sent = body(sent, "prune")?;
    let op = docker_request::Op::Prune(DockerPrune {
        what: prune_kind(&sent.what)? as i32,
        all: sent.all,
    });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Pruned(pruned) => Ok(Json(PrunedJson {
            deleted: pruned.deleted,
            space_reclaimed: pruned.space_reclaimed,
        })),
        _ => Err(unexpected("what was pruned")),
    }
}

async fn volumes(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    caller: Caller,
) -> Result<Json<Vec<VolumeJson>>, ServiceError> {
    let op = docker_request::Op::Volumes(DockerEmpty {});
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Volumes(listing) => {
            Ok(Json(listing.volumes.into_iter().map(Into::into).collect()))
        }
        _ => Err(unexpected("the volumes")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreateJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    labels: HashMap<String, String>,
}

async fn create_volume(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    sent: Result<Json<VolumeCreateJson>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let sent = body(sent, "volume")?;
    let op = docker_request::Op::CreateVolume(VolumeCreate {
        name: sent.name,
        driver: sent.driver,
        labels: sent.labels,
    });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Volume(volume) => Ok(created(VolumeJson::from(volume))),
        _ => Err(unexpected("the volume")),
    }
}

async fn remove_volume(
    State(state): State<Arc<AppState>>,
    Path((host, name)): Path<(String, String)>,
    wanted: Result<Query<ForceQuery>, QueryRejection>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<StatusCode, ServiceError> {
    caller.check_change(&headers, &state)?;
    let force = query(wanted, "removal")?.force;
    let op = docker_request::Op::RemoveVolume(VolumeRemove { name, force });
    ask(&state, &caller, &host, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn networks(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    caller: Caller,
) -> Result<Json<Vec<NetworkJson>>, ServiceError> {
    let op = docker_request::Op::Networks(DockerEmpty {});
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Networks(listing) => {
            Ok(Json(listing.networks.into_iter().map(Into::into).collect()))
        }
        _ => Err(unexpected("the networks")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkCreateJson {
    name: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    labels: HashMap<String, String>,
    #[serde(default)]
    internal: bool,
}

async fn create_network(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    sent: Result<Json<NetworkCreateJson>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let sent = body(sent, "network")?;
    let op = docker_request::Op::CreateNetwork(NetworkCreate {
        name: sent.name,
        driver: sent.driver,
        labels: sent.labels,
        internal: sent.internal,
    });
    match ask(&state, &caller, &host, op).await? {
        docker_reply::Result::Network(network) => Ok(created(NetworkJson::from(network))),
        _ => Err(unexpected("the network")),
    }
}

async fn remove_network(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<StatusCode, ServiceError> {
    caller.check_change(&headers, &state)?;
    let op = docker_request::Op::RemoveNetwork(NetworkRemove { network: id });
    ask(&state, &caller, &host, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

// === streams ===

/// Server-Sent Events while the client listens.
fn event_stream(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default, deserialize_with = "flag")]
    follow: bool,
    tail: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    timestamps: bool,
    since: Option<String>,
}

async fn logs(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    wanted: Result<Query<LogsQuery>, QueryRejection>,
    caller: Caller,
) -> Result<Response, ServiceError> {
    let wanted = query(wanted, "log query")?;
    let logs = DockerLogs {
        container: id,
        follow: wanted.follow,
        tail: tail(wanted.tail.as_deref())?,
        timestamps: wanted.timestamps,
        since: since(wanted.since.as_deref(), zpanel_shared::unix_now())?,
    };
    let channel = state.docker_logs(&caller.principal, &host, logs).await?;
    let mut events = LogEvents::default();
    let chunks = items(channel)
        .map(Some)
        .chain(futures_util::stream::once(async { None }));
    Ok(event_stream(chunks.flat_map(move |item| {
        futures_util::stream::iter(events.events(item))
    })))
}

async fn stats_stream(
    State(state): State<Arc<AppState>>,
    Path((host, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Response, ServiceError> {
    let channel = state.docker_stats(&caller.principal, &host, id).await?;
    let events = items(channel).filter_map(|update| async move {
        match update {
            Ok(update) => match update.update? {
                docker_update::Update::Stats(stats) => sse("stats", StatsJson::from(stats)),
                _ => None,
            },
            Err(e) => sse("end", serde_json::json!({ "reason": e.to_string() })),
        }
    });
    Ok(event_stream(events))
}

async fn events(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    caller: Caller,
) -> Result<Response, ServiceError> {
    let channel = state.docker_events(&caller.principal, &host).await?;
    // The stream ends with the watch; the page's EventSource connects again.
    let events = items(channel).filter_map(|update| async move {
        match update.ok()?.update? {
            docker_update::Update::Event(event) => sse("docker", EventJson::from(event)),
            _ => None,
        }
    });
    Ok(event_stream(events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullJson {
    image: String,
}

/// One line of a pull's answer.
fn json_line(value: impl Serialize) -> Bytes {
    let mut line = serde_json::to_vec(&value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn pull(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    sent: Result<Json<PullJson>, JsonRejection>,
) -> Result<Response, ServiceError> {
    caller.check_change(&headers, &state)?;
    let image = body(sent, "pull")?.image;
    let channel = state.docker_pull(&caller.principal, &host, image).await?;
    let lines = items(channel).map(|event| {
        Ok::<_, Infallible>(match event {
            Ok(PullEvent::Progress(progress)) => json_line(ProgressJson::from(progress)),
            Ok(PullEvent::Done(image_id)) => {
                json_line(serde_json::json!({ "done": true, "image_id": image_id }))
            }
            Err(e) => json_line(serde_json::json!({ "error": e.to_string() })),
        })
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(lines),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ImportQuery {
    image: String,
}

async fn import(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    wanted: Result<Query<ImportQuery>, QueryRejection>,
    headers: HeaderMap,
    caller: Caller,
    tarball: Body,
) -> Result<Json<serde_json::Value>, ServiceError> {
    caller.check_change(&headers, &state)?;
    let image = query(wanted, "import: say ?image=REPO[:TAG]")?.image;
    let mut import = state.docker_import(&caller.principal, &host, image).await?;
    let mut chunks = tarball.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| ServiceError::InvalidArgument(format!("the upload was cut off: {e}")))?;
        import.write(chunk).await?;
    }
    let image_id = import.finish().await?;
    Ok(Json(serde_json::json!({ "image_id": image_id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_like_people_write_them() {
        #[derive(Deserialize)]
        struct Q {
            #[serde(default, deserialize_with = "flag")]
            all: bool,
        }
        let parse = |q: &str| {
            let uri: axum::http::Uri = format!("/x?{q}").parse().unwrap();
            Query::<Q>::try_from_uri(&uri).map(|Query(q)| q.all)
        };
        assert_eq!(parse("all=1").ok(), Some(true));
        assert_eq!(parse("all=true").ok(), Some(true));
        assert_eq!(parse("all").ok(), Some(true));
        assert_eq!(parse("all=0").ok(), Some(false));
        assert_eq!(parse("").ok(), Some(false));
        assert!(parse("all=maybe").is_err());
    }

    #[test]
    fn log_queries() {
        assert_eq!(tail(None).unwrap(), None);
        assert_eq!(tail(Some("all")).unwrap(), None);
        assert_eq!(tail(Some("20")).unwrap(), Some(20));
        assert!(tail(Some("-1")).is_err());
        assert_eq!(since(None, 1000).unwrap(), 0);
        assert_eq!(since(Some("900"), 1000).unwrap(), 900);
        assert_eq!(since(Some("10m"), 1000).unwrap(), 400);
        assert!(since(Some("yesterday"), 1000).is_err());
    }

    #[test]
    fn text_split_inside_a_character_stays_whole() {
        let mut text = Utf8Text::default();
        let bytes = "né à".as_bytes();
        // "é" is two bytes: split them between chunks.
        assert_eq!(text.decode(&bytes[..2], false), "n");
        assert_eq!(text.decode(&bytes[2..], false), "é à");
        // Invalid bytes are replaced, not held.
        assert_eq!(text.decode(b"a\xffb", false), "a\u{fffd}b");
        // A truncated character at the very end is shown as replaced.
        assert_eq!(text.decode(&"€".as_bytes()[..2], false), "");
        assert_eq!(text.decode(b"", true), "\u{fffd}");
    }

    #[test]
    fn logs_end_with_a_reason() {
        let mut events = LogEvents::default();
        let chunk = |stream: StreamKind, payload: &'static [u8], eof| StreamChunk {
            stream: stream as i32,
            offset: 0,
            payload: Bytes::from_static(payload),
            eof,
        };
        assert_eq!(
            events
                .events(Some(Ok(chunk(StreamKind::Stdout, b"hi\n", false))))
                .len(),
            1
        );
        assert!(
            events
                .events(Some(Ok(chunk(StreamKind::Stderr, b"", true))))
                .is_empty()
        );
        assert_eq!(events.events(None).len(), 1);
        let mut failed = LogEvents::default();
        let gone = ServiceError::Unavailable("container removed".into());
        assert_eq!(failed.events(Some(Err(gone))).len(), 1);
        assert!(failed.events(None).is_empty());
    }

    #[test]
    fn container_json_has_the_documented_fields() {
        let container = ContainerSummary {
            id: "abc".into(),
            name: "web".into(),
            ports: vec![PortBinding {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            labels: HashMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            ..ContainerSummary::default()
        };
        let json = serde_json::to_value(ContainerJson::from(container)).unwrap();
        let fields = [
            "id", "name", "image", "image_id", "command", "created", "state", "status", "health",
            "ports", "labels",
        ];
        assert_eq!(json.as_object().unwrap().len(), fields.len());
        assert!(fields.iter().all(|field| json.get(field).is_some()));
        assert_eq!(json["ports"][0]["host_port"], 8080);
        assert_eq!(json["labels"]["a"], "1");
    }

    #[test]
    fn specs_refuse_unknown_fields() {
        let spec: SpecJson =
            serde_json::from_str(r#"{"image":"busybox","memory_bytes":8388608,"start":true}"#)
                .unwrap();
        let spec = ContainerSpec::from(spec);
        assert_eq!((spec.memory_bytes, spec.start), (8_388_608, true));
        assert!(serde_json::from_str::<SpecJson>(r#"{"image":"busybox","memory":"8m"}"#).is_err());
        assert!(matches!(prune_kind("images"), Ok(PruneKind::Images)));
        assert!(prune_kind("everything").is_err());
        assert!(verb("explode").is_err());
    }
}

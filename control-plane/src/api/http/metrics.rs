//! Host metrics for the browser, scripts and Prometheus (see ARCHITECTURE.md "Metrics and
//! alerts"): a host's history and its top processes, the fleet overview, the live samples
//! over a WebSocket, and the latest sample of every host in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zpanel_proto::{ProcessInfo, ProcessSort};

use super::auth::{Caller, check_origin};
use super::query;
use crate::service::metrics::{LatestSample, LiveMetrics, MetricsQuery};
use crate::service::{AppState, ServiceError};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/hosts/{host}/metrics", get(history))
        .route("/api/v1/hosts/{host}/processes", get(processes))
        .route("/api/v1/metrics/overview", get(overview))
        .route("/api/v1/metrics/live", get(live))
        .route("/metrics/hosts", get(prometheus))
}

/// `{latest}`: the sample's time, each host-wide metric as a number and each metric with
/// instances as an object by instance.
fn latest_json(sample: &LatestSample) -> Value {
    let mut json = Map::new();
    json.insert("at".into(), sample.at.into());
    for v in &sample.values {
        let number = serde_json::json!(v.value);
        if v.instance.is_empty() {
            json.insert(v.metric.into(), number);
        } else if let Value::Object(instances) = json
            .entry(v.metric)
            .or_insert_with(|| Value::Object(Map::new()))
        {
            instances.insert(v.instance.clone(), number);
        }
    }
    Value::Object(json)
}

/// A duration such as `1h`, `24h`, `7d` or `90s`.
fn duration(text: &str, what: &str) -> Result<Duration, ServiceError> {
    humantime::parse_duration(text).map_err(|e| {
        ServiceError::InvalidArgument(format!("bad {what} {text:?}: {e} (say 1h, 24h, 7d, 30d)"))
    })
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    /// Comma-separated metric names (none: all).
    #[serde(default)]
    metric: String,
    range: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    step: Option<i64>,
}

#[derive(Serialize)]
struct SeriesJson {
    metric: String,
    instance: String,
    /// `[at, avg, min, max]`
    points: Vec<(i64, f64, f64, f64)>,
}

#[derive(Serialize)]
struct HistoryJson {
    host: String,
    host_name: String,
    since: i64,
    until: i64,
    step: i64,
    resolution: &'static str,
    series: Vec<SeriesJson>,
}

async fn history(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    params: Result<Query<HistoryQuery>, QueryRejection>,
    caller: Caller,
) -> Result<Json<HistoryJson>, ServiceError> {
    let params = query(params, "metrics query")?;
    let until = params.until.unwrap_or(0);
    let since = match (&params.range, params.since) {
        (Some(range), None) => {
            let end = if until > 0 {
                until
            } else {
                crate::store::now()
            };
            end - duration(range, "range")?.as_secs() as i64
        }
        (None, since) => since.unwrap_or(0),
        (Some(_), Some(_)) => {
            return Err(ServiceError::InvalidArgument(
                "give range or since, not both".into(),
            ));
        }
    };
    let metrics = params
        .metric
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(String::from)
        .collect();
    let metrics_query = MetricsQuery {
        host,
        metrics,
        since,
        until,
        step: params.step.unwrap_or(0),
    };
    let answer = state
        .query_metrics(&caller.principal, metrics_query)
        .await?;
    Ok(Json(HistoryJson {
        host: answer.host.id,
        host_name: answer.host.name,
        since: answer.since,
        until: answer.until,
        step: answer.step,
        resolution: answer.resolution.name(),
        series: answer
            .series
            .into_iter()
            .map(|series| SeriesJson {
                metric: series.metric,
                instance: series.instance,
                points: series
                    .points
                    .iter()
                    .map(|p| (p.at, p.avg, p.min, p.max))
                    .collect(),
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub struct ProcessesQuery {
    sort: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct ProcessJson {
    pid: u32,
    parent_pid: u32,
    name: String,
    user: String,
    cpu_percent: f64,
    memory: u64,
    command: String,
    state: String,
    started_at: i64,
}

impl From<ProcessInfo> for ProcessJson {
    fn from(p: ProcessInfo) -> Self {
        ProcessJson {
            pid: p.pid,
            parent_pid: p.parent_pid,
            name: p.name,
            user: p.user,
            cpu_percent: p.cpu_percent,
            memory: p.memory,
            command: p.command,
            state: p.state,
            started_at: p.started_at,
        }
    }
}

#[derive(Serialize)]
struct ProcessesJson {
    summary: Value,
    total: u32,
    processes: Vec<ProcessJson>,
}

async fn processes(
    State(state): State<Arc<AppState>>,
    Path(host): Path<String>,
    params: Result<Query<ProcessesQuery>, QueryRejection>,
    caller: Caller,
) -> Result<Json<ProcessesJson>, ServiceError> {
    let params = query(params, "process query")?;
    let sort = match params.sort.as_deref() {
        None | Some("cpu") => ProcessSort::Cpu,
        Some("memory") => ProcessSort::Memory,
        Some(other) => {
            return Err(ServiceError::InvalidArgument(format!(
                "sort {other:?} is not cpu or memory"
            )));
        }
    };
    let (host, listing) = state
        .list_processes(&caller.principal, &host, sort, params.limit.unwrap_or(0))
        .await?;
    let summary = listing.summary.map_or(Value::Null, |sample| {
        let at = sample.at_ms.div_euclid(1000);
        latest_json(&LatestSample::from_sample(&host.id, at, &sample))
    });
    Ok(Json(ProcessesJson {
        summary,
        total: listing.total,
        processes: listing.processes.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    range: Option<String>,
}

#[derive(Serialize)]
struct OverviewJson {
    host: String,
    name: String,
    status: &'static str,
    labels: BTreeMap<String, String>,
    latest: Value,
    cpu: Vec<(i64, f64)>,
    memory: Vec<(i64, f64)>,
}

async fn overview(
    State(state): State<Arc<AppState>>,
    params: Result<Query<OverviewQuery>, QueryRejection>,
    caller: Caller,
) -> Result<Json<Vec<OverviewJson>>, ServiceError> {
    let params = query(params, "overview query")?;
    let range = duration(params.range.as_deref().unwrap_or("1h"), "range")?;
    let hosts = state.metrics_overview(&caller.principal, range).await?;
    Ok(Json(
        hosts
            .into_iter()
            .map(|host| OverviewJson {
                host: host.view.record.id,
                name: host.view.record.name,
                status: if host.view.online {
                    "online"
                } else {
                    "offline"
                },
                labels: host.view.record.labels,
                latest: host.latest.as_deref().map_or(Value::Null, latest_json),
                cpu: host.cpu,
                memory: host.memory,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct LiveQuery {
    host: Option<String>,
}

/// The live samples over a WebSocket: the latest known sample of each host at once, then
/// every sample as it is stored.
async fn live(
    State(state): State<Arc<AppState>>,
    params: Result<Query<LiveQuery>, QueryRejection>,
    headers: HeaderMap,
    caller: Caller,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ServiceError> {
    check_origin(&headers, &state)?;
    let params = query(params, "live query")?;
    let feed = state
        .live_metrics(&caller.principal, params.host.as_deref())
        .await?;
    let known = state
        .metric_hosts(&caller.principal)
        .await?
        .into_iter()
        .filter(|view| feed.wants(&view.record.id))
        .filter_map(|view| state.latest_sample(&view.record.id))
        .collect();
    Ok(upgrade.on_upgrade(move |socket| relay_live(socket, state, feed, known)))
}

fn sample_message(sample: &LatestSample) -> Message {
    let message = serde_json::json!({
        "type": "sample",
        "host": sample.host_id,
        "at": sample.at,
        "values": latest_json(sample),
    });
    Message::Text(Utf8Bytes::from(message.to_string()))
}

async fn relay_live(
    socket: WebSocket,
    state: Arc<AppState>,
    mut feed: LiveMetrics,
    known: Vec<Arc<LatestSample>>,
) {
    let (mut sink, mut stream) = socket.split();
    for sample in known {
        if sink.send(sample_message(&sample)).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            sample = feed.next(&state) => match sample {
                Some(sample) => {
                    if sink.send(sample_message(&sample)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            message = stream.next() => match message {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A Prometheus metric family made from one of ours: its name, help, our metric, and the
/// label its instances go in.
struct Family {
    name: &'static str,
    help: &'static str,
    metric: &'static str,
    instance_label: Option<&'static str>,
}

const fn family(
    name: &'static str,
    help: &'static str,
    metric: &'static str,
    instance_label: Option<&'static str>,
) -> Family {
    Family {
        name,
        help,
        metric,
        instance_label,
    }
}

const FAMILIES: [Family; 18] = [
    family(
        "zpanel_host_cpu_percent",
        "CPU busy, all cores, 0 to 100.",
        "cpu",
        None,
    ),
    family(
        "zpanel_host_cpu_core_percent",
        "CPU busy per core, 0 to 100.",
        "cpu.core",
        Some("core"),
    ),
    family(
        "zpanel_host_load1",
        "Load average over 1 minute.",
        "load1",
        None,
    ),
    family(
        "zpanel_host_load5",
        "Load average over 5 minutes.",
        "load5",
        None,
    ),
    family(
        "zpanel_host_load15",
        "Load average over 15 minutes.",
        "load15",
        None,
    ),
    family(
        "zpanel_host_memory_used_bytes",
        "Memory used (total minus available).",
        "memory.used",
        None,
    ),
    family(
        "zpanel_host_memory_total_bytes",
        "Memory installed.",
        "memory.total",
        None,
    ),
    family(
        "zpanel_host_swap_used_bytes",
        "Swap used.",
        "swap.used",
        None,
    ),
    family(
        "zpanel_host_swap_total_bytes",
        "Swap size.",
        "swap.total",
        None,
    ),
    family(
        "zpanel_host_disk_used_bytes",
        "File system space used.",
        "disk.used",
        Some("mount"),
    ),
    family(
        "zpanel_host_disk_total_bytes",
        "File system size.",
        "disk.total",
        Some("mount"),
    ),
    family(
        "zpanel_host_disk_read_bytes_per_second",
        "Bytes read from block devices per second.",
        "disk.read",
        None,
    ),
    family(
        "zpanel_host_disk_write_bytes_per_second",
        "Bytes written to block devices per second.",
        "disk.write",
        None,
    ),
    family(
        "zpanel_host_network_receive_bytes_per_second",
        "Bytes received per second.",
        "net.rx",
        Some("interface"),
    ),
    family(
        "zpanel_host_network_transmit_bytes_per_second",
        "Bytes sent per second.",
        "net.tx",
        Some("interface"),
    ),
    family(
        "zpanel_host_uptime_seconds",
        "Time since the host booted.",
        "uptime",
        None,
    ),
    family(
        "zpanel_host_processes",
        "Processes running.",
        "processes",
        None,
    ),
    family(
        "zpanel_host_up",
        "1 while the host's daemon is connected, else 0.",
        "",
        None,
    ),
];

/// A label value in the text format: backslash, double quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The latest sample of every host the caller sees, in the Prometheus text format.
async fn prometheus(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<impl IntoResponse, ServiceError> {
    let hosts = state.metric_hosts(&caller.principal).await?;
    let hosts: Vec<_> = hosts
        .into_iter()
        .map(|view| {
            let labels = format!(
                "host=\"{}\",host_id=\"{}\"",
                label_value(&view.record.name),
                label_value(&view.record.id)
            );
            let latest = state.latest_sample(&view.record.id);
            (view.online, labels, latest)
        })
        .collect();
    let mut out = String::new();
    for family in &FAMILIES {
        let name = family.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} gauge", family.help);
        for (online, labels, latest) in &hosts {
            if family.metric.is_empty() {
                let _ = writeln!(out, "{name}{{{labels}}} {}", u8::from(*online));
                continue;
            }
            let Some(latest) = latest else {
                continue;
            };
            let at_ms = latest.at * 1000;
            for (instance, value) in latest.instances(family.metric) {
                let instance = match family.instance_label {
                    Some(label) => format!(",{label}=\"{}\"", label_value(instance)),
                    None => String::new(),
                };
                let _ = writeln!(out, "{name}{{{labels}{instance}}} {value} {at_ms}");
            }
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::metrics::MetricValue;

    #[test]
    fn latest_samples_read_as_numbers_and_objects() {
        let sample = LatestSample {
            host_id: "h1".into(),
            at: 1_800_000_000,
            values: vec![
                MetricValue {
                    metric: "cpu",
                    instance: String::new(),
                    value: 12.5,
                },
                MetricValue {
                    metric: "disk.percent",
                    instance: "/".into(),
                    value: 51.2,
                },
                MetricValue {
                    metric: "disk.percent",
                    instance: "/data".into(),
                    value: 7.0,
                },
            ],
        };
        assert_eq!(
            latest_json(&sample),
            serde_json::json!({"at": 1_800_000_000, "cpu": 12.5, "disk.percent": {"/": 51.2, "/data": 7.0}})
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}

//! Host metrics (ARCHITECTURE.md "Metrics and alerts"): the writer that validates and stores
//! the samples daemons send and acknowledges them, the latest sample of every host and its
//! live broadcast, the rollup and expiry job, and the queries every adapter calls (history
//! at the resolution a range needs, the fleet overview, the top processes now).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    MetricAck, MetricBatch, MetricSample, ProcessList, ProcessListing, ProcessSort, open,
    open_result,
};

use super::audit::check;
use super::{Action, AppState, HostView, Principal, ServiceError};
use crate::metrics::{DropReason, Metrics};
use crate::router::{HostRouter, SessionHandle};
use crate::store::{
    HostRecord, MetricExpiry, PointRow, RawRow, Resolution, SeriesRecord, Store, bucket,
};

/// Batches waiting for the writer; a batch that does not fit is left unacknowledged.
const QUEUE_BATCHES: usize = 512;
/// The writer stores at most this many values in one transaction...
const FLUSH_VALUES: usize = 5000;
/// ...or what arrived within this time after the first batch.
const FLUSH_WAIT: Duration = Duration::from_millis(100);
/// Samples further ahead of the control plane's clock are refused.
const FUTURE_SLACK: i64 = 60;
/// Samples this close to leaving the raw retention are refused too: the rollup job must
/// see a sample's whole minute before the expiry deletes the first of it.
const PAST_MARGIN: i64 = 120;
/// How often buckets are rolled up and old values deleted.
const ROLLUP_EVERY: Duration = Duration::from_secs(60);
/// Samples a live viewer may fall behind by before it skips ahead.
const LIVE_BACKLOG: usize = 256;
/// Instances of one metric a sample may carry (cores, mounts, interfaces), and the longest
/// name of one; more is refused as invalid.
const MAX_INSTANCES: usize = 256;
const MAX_INSTANCE_BYTES: usize = 256;
/// Points a query answers per series by default, at most, and in the overview.
const DEFAULT_POINTS: i64 = 300;
const MAX_POINTS: i64 = 10_000;
const OVERVIEW_POINTS: i64 = 60;
/// Processes a listing may ask for, and what 0 means.
const MAX_PROCESSES: u32 = 500;
const DEFAULT_PROCESSES: u32 = 20;

/// How long values are kept at each resolution.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw: Duration,
    pub minute: Duration,
    pub hour: Duration,
}

impl Retention {
    fn seconds(self, resolution: Resolution) -> i64 {
        let kept = match resolution {
            Resolution::Raw => self.raw,
            Resolution::Minute => self.minute,
            Resolution::Hour => self.hour,
        };
        kept.as_secs() as i64
    }
}

// === samples as metric values ===

/// One value of a sample: a metric (see the table in ARCHITECTURE.md) and its instance
/// ("" for host-wide metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub metric: &'static str,
    pub instance: String,
    pub value: f64,
}

fn value(metric: &'static str, instance: impl Into<String>, value: f64) -> MetricValue {
    MetricValue {
        metric,
        instance: instance.into(),
        value,
    }
}

/// `part` of `whole` in percent, when there is a whole.
fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// Every value a sample carries, as stored and charted.
pub fn sample_values(sample: &MetricSample) -> Vec<MetricValue> {
    let mut values = vec![
        value("cpu", "", sample.cpu_percent),
        value("load1", "", sample.load1),
        value("load5", "", sample.load5),
        value("load15", "", sample.load15),
        value("memory.used", "", sample.memory_used as f64),
        value("memory.total", "", sample.memory_total as f64),
        value("swap.used", "", sample.swap_used as f64),
        value("swap.total", "", sample.swap_total as f64),
        value("disk.read", "", sample.disk_read_bps),
        value("disk.write", "", sample.disk_write_bps),
        value("uptime", "", sample.uptime_seconds as f64),
        value("processes", "", f64::from(sample.processes)),
    ];
    if let Some(used) = percent(sample.memory_used, sample.memory_total) {
        values.push(value("memory.percent", "", used));
    }
    if let Some(used) = percent(sample.swap_used, sample.swap_total) {
        values.push(value("swap.percent", "", used));
    }
    for (core, busy) in sample.cpu_cores.iter().enumerate() {
        values.push(value("cpu.core", core.to_string(), *busy));
    }
    for disk in &sample.disks {
        values.push(value("disk.used", &disk.mount, disk.used as f64));
        values.push(value("disk.total", &disk.mount, disk.total as f64));
        if let Some(used) = percent(disk.used, disk.total) {
            values.push(value("disk.percent", &disk.mount, used));
        }
    }
    for network in &sample.networks {
        values.push(value("net.rx", &network.interface, network.rx_bps));
        values.push(value("net.tx", &network.interface, network.tx_bps));
    }
    values
}

/// A host's newest sample: its time (Unix seconds, by the control plane's clock) and its
/// values.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestSample {
    pub host_id: String,
    pub at: i64,
    pub values: Vec<MetricValue>,
}

impl LatestSample {
    /// A sample as it arrived (the process listing's summary).
    pub fn from_sample(host_id: &str, at: i64, sample: &MetricSample) -> LatestSample {
        LatestSample {
            host_id: host_id.to_string(),
            at,
            values: sample_values(sample),
        }
    }

    /// The value of a metric's instance ("" for host-wide metrics).
    pub fn value(&self, metric: &str, instance: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|v| v.metric == metric && v.instance == instance)
            .map(|v| v.value)
    }

    /// Every instance of a metric with its value.
    pub fn instances<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = (&'a str, f64)> {
        self.values
            .iter()
            .filter(move |v| v.metric == metric)
            .map(|v| (v.instance.as_str(), v.value))
    }
}

// === validation ===

/// Samples and values refused, by [`DropReason`].
type DropCounts = [u64; DropReason::ALL.len()];

/// A host's newest stored sample: the second it is stored at, and its corrected time in
/// milliseconds (what tells a resend from a new sample).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LastSample {
    at: i64,
    ms: i64,
}

impl LastSample {
    /// After a restart only the stored second is known: every time that rounds to it or
    /// before counts as already stored.
    fn stored_at(at: i64) -> LastSample {
        LastSample {
            at,
            ms: at * 1000 + 499,
        }
    }
}

/// The samples of a batch worth storing, each at its second with its valid values, and
/// what was refused. `last` is the host's newest stored sample, moved on by every sample
/// taken. A sample's time is corrected by the clocks' difference and rounded to the
/// second; one that rounds onto the previous sample's second (its collection ran late, the
/// next one early) takes the next second.
fn admit(
    batch: &MetricBatch,
    received_ms: i64,
    now: i64,
    raw_retention: i64,
    last: &mut Option<LastSample>,
) -> (Vec<(i64, Vec<MetricValue>)>, DropCounts) {
    let mut dropped = DropCounts::default();
    // The clocks' difference in whole seconds: a resend after a reconnect measures a few
    // milliseconds differently, and must still land on the same seconds.
    let skew_ms = (received_ms.saturating_sub(batch.sent_at_ms))
        .saturating_add(500)
        .div_euclid(1000)
        .saturating_mul(1000);
    let interval_ms = i64::from(batch.interval_ms.clamp(1000, 3_600_000));
    let mut taken = Vec::new();
    for sample in &batch.samples {
        let ms = sample.at_ms.saturating_add(skew_ms);
        let mut at = ms.saturating_add(500).div_euclid(1000);
        let reason = if at > now + FUTURE_SLACK {
            Some(DropReason::Future)
        } else if at < now - raw_retention + PAST_MARGIN {
            Some(DropReason::Past)
        } else {
            match *last {
                Some(last) if ms <= last.ms => Some(DropReason::Duplicate),
                Some(last) if ms - last.ms < interval_ms / 2 => Some(DropReason::TooFrequent),
                Some(last) => {
                    at = at.max(last.at + 1);
                    None
                }
                None => None,
            }
        };
        if let Some(reason) = reason {
            dropped[reason as usize] += 1;
            continue;
        }
        let mut values = sample_values(sample);
        let mut instances: HashMap<&'static str, usize> = HashMap::new();
        let before = values.len();
        values.retain(|v| {
            let count = instances.entry(v.metric).or_default();
            *count += 1;
            v.value.is_finite()
                && v.value >= 0.0
                && *count <= MAX_INSTANCES
                && v.instance.len() <= MAX_INSTANCE_BYTES
        });
        dropped[DropReason::Invalid as usize] += (before - values.len()) as u64;
        *last = Some(LastSample { at, ms });
        taken.push((at, values));
    }
    (taken, dropped)
}

// === the service ===

/// A batch as it came off a session.
struct Incoming {
    session: Arc<SessionHandle>,
    batch: MetricBatch,
    received_ms: i64,
}

/// The metrics side of the control plane: the writer's queue, the latest sample of every
/// host and the live broadcast.
pub struct MetricsService {
    queue: mpsc::Sender<Incoming>,
    latest: RwLock<HashMap<String, Arc<LatestSample>>>,
    live: broadcast::Sender<Arc<LatestSample>>,
    retention: Retention,
    counters: Arc<Metrics>,
}

impl MetricsService {
    /// The service and its writer (run it with [`MetricsWriter::run`]).
    pub fn new(
        store: Store,
        retention: Retention,
        counters: Arc<Metrics>,
    ) -> (Arc<MetricsService>, MetricsWriter) {
        let (queue, incoming) = mpsc::channel(QUEUE_BATCHES);
        let service = Arc::new(MetricsService {
            queue,
            latest: RwLock::default(),
            live: broadcast::Sender::new(LIVE_BACKLOG),
            retention,
            counters,
        });
        let writer = MetricsWriter {
            service: service.clone(),
            store,
            incoming,
            hosts: HashMap::new(),
            next_series_id: 1,
        };
        (service, writer)
    }

    /// Hands a session's batch to the writer without waiting. A batch that does not fit
    /// stays unacknowledged: the daemon sends it again.
    pub fn submit(&self, session: &Arc<SessionHandle>, batch: MetricBatch) {
        let incoming = Incoming {
            session: session.clone(),
            batch,
            received_ms: zpanel_shared::unix_now_ms(),
        };
        if self.queue.try_send(incoming).is_err() {
            Metrics::add(&self.counters.metric_batches_refused, 1);
            tracing::debug!(host = %session.host_id, "metrics writer busy: batch left for the daemon to resend");
        }
    }

    /// A host's newest stored sample.
    pub fn latest(&self, host_id: &str) -> Option<Arc<LatestSample>> {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        latest.get(host_id).cloned()
    }

    /// Samples as they are stored (the newest of each host per write).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LatestSample>> {
        self.live.subscribe()
    }

    /// Makes `sample` the host's latest and sends it to live viewers, unless a newer one is
    /// known.
    fn publish(&self, sample: LatestSample) {
        let sample = Arc::new(sample);
        {
            let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
            if latest
                .get(&sample.host_id)
                .is_some_and(|known| known.at >= sample.at)
            {
                return;
            }
            latest.insert(sample.host_id.clone(), sample.clone());
        }
        let _ = self.live.send(sample);
    }
}

// === the writer ===

/// What the writer knows of a host.
#[derive(Default)]
struct HostState {
    /// The newest stored sample, once read from the database.
    last: Option<LastSample>,
    loaded: bool,
    /// The session whose batches arrive, and the sequence number it sends next: a batch
    /// beyond it means one was left out, and is left for the daemon to send again.
    session: Option<(u64, u64)>,
    /// Series ids by metric and instance.
    series: HashMap<&'static str, HashMap<String, i64>>,
}

/// One transaction's worth of batches.
#[derive(Default)]
struct Flush {
    new_series: Vec<SeriesRecord>,
    rows: Vec<RawRow>,
    dropped: DropCounts,
    acks: Vec<(Arc<SessionHandle>, u64)>,
    newest: HashMap<String, LatestSample>,
}

/// Stores batches in order, many hosts per transaction, then acknowledges them and
/// publishes the newest samples.
pub struct MetricsWriter {
    service: Arc<MetricsService>,
    store: Store,
    incoming: mpsc::Receiver<Incoming>,
    hosts: HashMap<String, HostState>,
    next_series_id: i64,
}

/// A stored metric's name as [`sample_values`] spells it (series of other names are not
/// the writer's to extend).
fn known_metric(metric: &str) -> Option<&'static str> {
    const NAMES: [&str; 20] = [
        "cpu",
        "cpu.core",
        "load1",
        "load5",
        "load15",
        "memory.used",
        "memory.total",
        "memory.percent",
        "swap.used",
        "swap.total",
        "swap.percent",
        "disk.used",
        "disk.total",
        "disk.percent",
        "disk.read",
        "disk.write",
        "net.rx",
        "net.tx",
        "uptime",
        "processes",
    ];
    NAMES.into_iter().find(|name| *name == metric)
}

impl MetricsWriter {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(e) = self.load().await {
            tracing::error!("cannot read metric series: {e:#}");
        }
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                incoming = self.incoming.recv() => match incoming {
                    Some(incoming) => incoming,
                    None => return,
                },
            };
            let mut flush = Flush::default();
            self.take(first, &mut flush).await;
            let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
            while flush.rows.len() < FLUSH_VALUES {
                match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                    Ok(Some(incoming)) => self.take(incoming, &mut flush).await,
                    Ok(None) | Err(_) => break,
                }
            }
            self.commit(flush).await;
        }
    }

    /// Reads the known series (and so the next id to give).
    async fn load(&mut self) -> Result<(), crate::store::StoreError> {
        self.hosts.clear();
        self.next_series_id = 1;
        for series in self.store.metric_series().await? {
            self.next_series_id = self.next_series_id.max(series.id + 1);
            let Some(metric) = known_metric(&series.metric) else {
                continue;
            };
            self.hosts
                .entry(series.host_id)
                .or_default()
                .series
                .entry(metric)
                .or_default()
                .insert(series.instance, series.id);
        }
        Ok(())
    }

    /// Validates a batch into `flush`.
    async fn take(&mut self, incoming: Incoming, flush: &mut Flush) {
        let Incoming {
            session,
            batch,
            received_ms,
        } = incoming;
        let host_id = &session.host_id;
        let host = self.hosts.entry(host_id.clone()).or_default();
        if !host.loaded {
            match self.store.last_metric_at(host_id).await {
                Ok(last_at) => {
                    host.last = last_at.map(LastSample::stored_at);
                    host.loaded = true;
                }
                Err(e) => {
                    tracing::warn!(host = %host_id, "cannot read the newest stored sample: {e:#}");
                    Metrics::add(&self.service.counters.metric_batches_refused, 1);
                    return;
                }
            }
        }
        let next_seq = batch.first_seq + batch.samples.len() as u64;
        match host.session {
            Some((id, expected)) if id == session.session_id && batch.first_seq > expected => {
                Metrics::add(&self.service.counters.metric_batches_refused, 1);
                return;
            }
            Some((id, expected)) if id == session.session_id => {
                host.session = Some((id, expected.max(next_seq)));
            }
            _ => host.session = Some((session.session_id, next_seq)),
        }
        let now = crate::store::now();
        let raw_retention = self.service.retention.seconds(Resolution::Raw);
        let (samples, dropped) = admit(&batch, received_ms, now, raw_retention, &mut host.last);
        for (total, n) in flush.dropped.iter_mut().zip(dropped) {
            *total += n;
        }
        for (at, values) in &samples {
            for v in values {
                let ids = host.series.entry(v.metric).or_default();
                let series_id = match ids.get(&v.instance) {
                    Some(&id) => id,
                    None => {
                        let id = self.next_series_id;
                        self.next_series_id += 1;
                        ids.insert(v.instance.clone(), id);
                        flush.new_series.push(SeriesRecord {
                            id,
                            host_id: host_id.clone(),
                            metric: v.metric.to_string(),
                            instance: v.instance.clone(),
                        });
                        id
                    }
                };
                flush.rows.push(RawRow {
                    series_id,
                    at: *at,
                    value: v.value,
                });
            }
        }
        if let Some((at, values)) = samples.into_iter().last() {
            flush.newest.insert(
                host_id.clone(),
                LatestSample {
                    host_id: host_id.clone(),
                    at,
                    values,
                },
            );
        }
        flush.acks.push((session, next_seq));
    }

    /// Stores what `flush` holds, then acknowledges and publishes it. When the database
    /// fails nothing is acknowledged (the daemons send it all again) and what the writer
    /// believed about the hosts is read again.
    async fn commit(&mut self, flush: Flush) {
        if let Err(e) = self
            .store
            .store_metric_values(&flush.new_series, &flush.rows)
            .await
        {
            tracing::warn!("cannot store {} metric values: {e:#}", flush.rows.len());
            let refused = flush.acks.len() as u64;
            Metrics::add(&self.service.counters.metric_batches_refused, refused);
            if let Err(e) = self.load().await {
                tracing::error!("cannot read metric series: {e:#}");
            }
            return;
        }
        for reason in DropReason::ALL {
            let n = flush.dropped[reason as usize];
            if n > 0 {
                self.service.counters.dropped(reason, n);
            }
        }
        for (session, next_seq) in flush.acks {
            let ack = Body::MetricsAck(MetricAck { next_seq });
            if let Err(mpsc::error::TrySendError::Full(ack)) = session.outbound.try_send(ack) {
                tokio::spawn(async move {
                    let _ = session.outbound.send(ack).await;
                });
            }
        }
        for sample in flush.newest.into_values() {
            self.service.publish(sample);
        }
    }
}

/// Rolls up and expires every minute (at once at start, for what a stopped control plane
/// left), until `shutdown`.
pub async fn keep_metrics(store: Store, retention: Retention, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ROLLUP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = store.roll_up_metrics().await {
            tracing::warn!("cannot roll up metrics: {e:#}");
        }
        let now = crate::store::now();
        let expiry = MetricExpiry {
            raw_before: now - retention.seconds(Resolution::Raw),
            minute_before: now - retention.seconds(Resolution::Minute),
            hour_before: now - retention.seconds(Resolution::Hour),
        };
        if let Err(e) = store.expire_metrics(expiry).await {
            tracing::warn!("cannot delete old metrics: {e:#}");
        }
    }
}

// === queries ===

/// Which history to read: a host, metrics (a name also selects the names below it:
/// `disk` is every `disk.*`; none: all), a range (Unix seconds; `until` 0 is now, `since` 0
/// an hour before `until`) and a step in seconds (0: about 300 points).
#[derive(Debug, Clone, Default)]
pub struct MetricsQuery {
    pub host: String,
    pub metrics: Vec<String>,
    pub since: i64,
    pub until: i64,
    pub step: i64,
}

/// One point: the start of its step, and the average, minimum and maximum in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone)]
pub struct SeriesPoints {
    pub metric: String,
    pub instance: String,
    pub points: Vec<Point>,
}

/// A host's history.
#[derive(Debug)]
pub struct MetricsAnswer {
    pub host: HostRecord,
    pub since: i64,
    pub until: i64,
    pub step: i64,
    pub resolution: Resolution,
    pub series: Vec<SeriesPoints>,
}

/// A small chart: `(at, avg)` points.
pub type Chart = Vec<(i64, f64)>;

/// A host in the fleet overview: its status, labels, latest sample and the CPU and memory
/// (percent used) of the range.
pub struct HostOverview {
    pub view: HostView,
    pub latest: Option<Arc<LatestSample>>,
    pub cpu: Chart,
    pub memory: Chart,
}

/// The resolution and step for a range: the finest whose retention still covers `since`
/// and whose rows fit the step (raw below 60 s, minutes below an hour, else hours), the
/// step rounded up to whole rows. `step` 0 asks for about [`DEFAULT_POINTS`].
pub fn resolution_for(
    since: i64,
    until: i64,
    step: i64,
    now: i64,
    retention: Retention,
) -> (Resolution, i64) {
    let step = if step > 0 {
        step
    } else {
        ((until - since) / DEFAULT_POINTS).max(1)
    };
    let fits = [
        (Resolution::Raw, step < 60),
        (Resolution::Minute, step < 3600),
        (Resolution::Hour, true),
    ];
    let resolution = fits
        .into_iter()
        .find(|&(resolution, fits)| {
            fits && (resolution == Resolution::Hour || since >= now - retention.seconds(resolution))
        })
        .map_or(Resolution::Hour, |(resolution, _)| resolution);
    let width = resolution.seconds();
    (resolution, (step + width - 1) / width * width)
}

/// Whether `metric` is asked for by `names` (a name selects itself and the names below it).
fn selected(metric: &str, names: &[String]) -> bool {
    names.is_empty()
        || names.iter().any(|name| {
            metric == name
                || metric
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
}

/// Instances in their natural order: cores by number, the rest by name.
fn instance_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

/// Points grouped by series, in the order of `series`.
fn group_points(series: &[SeriesRecord], rows: Vec<PointRow>) -> Vec<SeriesPoints> {
    let mut points: HashMap<i64, Vec<Point>> = HashMap::new();
    for row in rows {
        points.entry(row.series_id).or_default().push(Point {
            at: row.at,
            avg: row.avg,
            min: row.min,
            max: row.max,
        });
    }
    series
        .iter()
        .map(|s| SeriesPoints {
            metric: s.metric.clone(),
            instance: s.instance.clone(),
            points: points.remove(&s.id).unwrap_or_default(),
        })
        .collect()
}

/// The live samples of the hosts a caller sees (or of one host), as they are stored.
pub struct LiveMetrics {
    samples: broadcast::Receiver<Arc<LatestSample>>,
    principal: Principal,
    /// One host, or (`None`) every host the caller sees, refreshed as hosts change.
    host: Option<String>,
    visible: HashSet<String>,
    changes: watch::Receiver<u64>,
}

impl LiveMetrics {
    /// Whether a host's samples are for this viewer.
    pub fn wants(&self, host_id: &str) -> bool {
        match &self.host {
            Some(host) => host == host_id,
            None => self.visible.contains(host_id),
        }
    }

    /// The next sample to show; `None` when the control plane is shutting down.
    pub async fn next(&mut self, state: &AppState) -> Option<Arc<LatestSample>> {
        loop {
            tokio::select! {
                sample = self.samples.recv() => match sample {
                    Ok(sample) if self.wants(&sample.host_id) => return Some(sample),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.changes.changed(), if self.host.is_none() => {
                    if changed.is_err() {
                        return None;
                    }
                    if let Ok(hosts) = state.metric_hosts(&self.principal).await {
                        self.visible = hosts.into_iter().map(|view| view.record.id).collect();
                    }
                }
            }
        }
    }
}

impl AppState {
    /// A host's newest stored sample (what alert rules and the live views read).
    pub fn latest_sample(&self, host_id: &str) -> Option<Arc<LatestSample>> {
        self.telemetry.latest(host_id)
    }

    /// The hosts whose metrics the caller may see.
    pub async fn metric_hosts(&self, principal: &Principal) -> Result<Vec<HostView>, ServiceError> {
        let mut hosts = self.list_hosts(principal).await?;
        hosts.retain(|view| {
            check(
                principal,
                Action::ViewMetrics,
                Some(&view.record.workspace_id),
            )
            .is_ok()
        });
        Ok(hosts)
    }

    /// A host's history (see [`MetricsQuery`]).
    pub async fn query_metrics(
        &self,
        principal: &Principal,
        query: MetricsQuery,
    ) -> Result<MetricsAnswer, ServiceError> {
        let host = self
            .host_for(principal, Action::ViewMetrics, &query.host)
            .await?;
        let now = crate::store::now();
        let until = if query.until > 0 { query.until } else { now };
        let since = if query.since > 0 {
            query.since
        } else {
            until - 3600
        };
        if since >= until {
            return Err(ServiceError::InvalidArgument(
                "the range is empty: since must be before until".into(),
            ));
        }
        if query.step < 0 {
            return Err(ServiceError::InvalidArgument(
                "step must be a positive number of seconds".into(),
            ));
        }
        let (resolution, step) =
            resolution_for(since, until, query.step, now, self.telemetry.retention);
        if (until - since) / step > MAX_POINTS {
            return Err(ServiceError::InvalidArgument(format!(
                "{} points per series are too many (at most {MAX_POINTS}); ask for a larger step",
                (until - since) / step
            )));
        }
        let mut series = self
            .store
            .host_metric_series(std::slice::from_ref(&host.id))
            .await?;
        series.retain(|s| selected(&s.metric, &query.metrics));
        series.sort_by(|a, b| {
            a.metric
                .cmp(&b.metric)
                .then_with(|| instance_order(&a.instance, &b.instance))
        });
        let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
        let since = bucket(since, step);
        let rows = self
            .store
            .metric_points(resolution, &ids, since, until, step)
            .await?;
        Ok(MetricsAnswer {
            host,
            since,
            until,
            step,
            resolution,
            series: group_points(&series, rows),
        })
    }

    /// Every host the caller sees with its latest sample and the CPU and memory of the last
    /// `range`, about 60 points each.
    pub async fn metrics_overview(
        &self,
        principal: &Principal,
        range: Duration,
    ) -> Result<Vec<HostOverview>, ServiceError> {
        let hosts = self.metric_hosts(principal).await?;
        let now = crate::store::now();
        let since = now - (range.as_secs() as i64).max(60);
        let step = ((now - since) / OVERVIEW_POINTS).max(1);
        let (resolution, step) = resolution_for(since, now, step, now, self.telemetry.retention);
        let since = bucket(since, step);
        let host_ids: Vec<String> = hosts.iter().map(|view| view.record.id.clone()).collect();
        let mut series = self.store.host_metric_series(&host_ids).await?;
        series.retain(|s| s.metric == "cpu" || s.metric == "memory.percent");
        let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
        let rows = self
            .store
            .metric_points(resolution, &ids, since, now + 1, step)
            .await?;
        let mut by_host: HashMap<String, (Chart, Chart)> = HashMap::new();
        for (s, points) in series.iter().zip(group_points(&series, rows)) {
            let chart = points.points.iter().map(|p| (p.at, p.avg)).collect();
            let charts = by_host.entry(s.host_id.clone()).or_default();
            if s.metric == "cpu" {
                charts.0 = chart;
            } else {
                charts.1 = chart;
            }
        }
        Ok(hosts
            .into_iter()
            .map(|view| {
                let (cpu, memory) = by_host.remove(&view.record.id).unwrap_or_default();
                HostOverview {
                    latest: self.latest_sample(&view.record.id),
                    view,
                    cpu,
                    memory,
                }
            })
            .collect())
    }

    /// The live samples of one host (by id or name) or of every host the caller sees.
    pub async fn live_metrics(
        &self,
        principal: &Principal,
        host: Option<&str>,
    ) -> Result<LiveMetrics, ServiceError> {
        let samples = self.telemetry.subscribe();
        let (host, visible) = match host {
            Some(host) => {
                let host = self.host_for(principal, Action::ViewMetrics, host).await?;
                (Some(host.id), HashSet::new())
            }
            None => {
                let hosts = self.metric_hosts(principal).await?;
                (None, hosts.into_iter().map(|view| view.record.id).collect())
            }
        };
        Ok(LiveMetrics {
            samples,
            principal: principal.clone(),
            host,
            visible,
            changes: self.router.changes(),
        })
    }

    /// The top processes of a host now, with a fresh sample.
    pub async fn list_processes(
        &self,
        principal: &Principal,
        host: &str,
        sort: ProcessSort,
        limit: u32,
    ) -> Result<(HostRecord, ProcessListing), ServiceError> {
        if limit > MAX_PROCESSES {
            return Err(ServiceError::InvalidArgument(format!(
                "at most {MAX_PROCESSES} processes can be listed"
            )));
        }
        let host = self.host_for(principal, Action::ViewMetrics, host).await?;
        let request = open::Request::Processes(ProcessList {
            sort: sort as i32,
            limit: if limit == 0 { DEFAULT_PROCESSES } else { limit },
        });
        let channel = self.open_on(&host, request).await?;
        match channel.opened.reply.clone() {
            Some(open_result::Reply::Processes(listing)) => Ok((host, listing)),
            _ => Err(ServiceError::Internal(format!(
                "host {} answered the process list without processes",
                host.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use zpanel_proto::{DiskUsage, NetworkRate};

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const RAW_RETENTION: i64 = 48 * 3600;

    fn sample(at: i64, cpu: f64) -> MetricSample {
        MetricSample {
            at_ms: at * 1000,
            cpu_percent: cpu,
            memory_total: 1000,
            memory_used: 250,
            ..MetricSample::default()
        }
    }

    fn batch(samples: Vec<MetricSample>, interval_s: u32) -> MetricBatch {
        MetricBatch {
            first_seq: 0,
            samples,
            sent_at_ms: NOW * 1000,
            interval_ms: interval_s * 1000,
        }
    }

    /// The times taken and the drop counts by reason label.
    fn admitted(
        batch: &MetricBatch,
        received_ms: i64,
        last: &mut Option<LastSample>,
    ) -> (Vec<i64>, Vec<(&'static str, u64)>) {
        let (taken, dropped) = admit(batch, received_ms, NOW, RAW_RETENTION, last);
        let counts = DropReason::ALL
            .into_iter()
            .map(|reason| (reason.label(), dropped[reason as usize]))
            .filter(|(_, n)| *n > 0)
            .collect();
        (taken.iter().map(|(at, _)| *at).collect(), counts)
    }

    #[test]
    fn bad_samples_are_dropped_and_counted_by_reason() {
        let mut last = Some(LastSample::stored_at(NOW - 100));
        let samples = vec![
            sample(NOW - 100, 1.0),               // the last stored one again
            sample(NOW - 150, 1.0),               // older still
            sample(NOW + 61, 1.0),                // a minute ahead
            sample(NOW - RAW_RETENTION - 1, 1.0), // beyond the retention
            sample(NOW - 90, 1.0),                // fine
            sample(NOW - 89, 1.0),                // 1 s after, the interval is 10 s
            sample(NOW - 80, f64::NAN),           // fine but for its CPU value
            sample(NOW - 70, -3.0),               // fine but for its CPU value
            sample(NOW - 60, f64::INFINITY),      // fine but for its CPU value
        ];
        let (taken, dropped) = admitted(&batch(samples, 10), NOW * 1000, &mut last);
        assert_eq!(taken, [NOW - 90, NOW - 80, NOW - 70, NOW - 60]);
        assert_eq!(
            dropped,
            [
                ("future", 1),
                ("past", 1),
                ("duplicate", 2),
                ("too_frequent", 1),
                ("invalid", 3)
            ]
        );
        assert_eq!(last.map(|last| last.at), Some(NOW - 60));
    }

    #[test]
    fn invalid_values_go_alone() {
        let mut bad = sample(NOW, f64::NAN);
        bad.load1 = -1.0;
        bad.disks = (0..MAX_INSTANCES + 1)
            .map(|n| DiskUsage {
                mount: format!("/m{n}"),
                total: 10,
                used: 5,
                ..DiskUsage::default()
            })
            .collect();
        bad.networks = vec![NetworkRate {
            interface: "x".repeat(MAX_INSTANCE_BYTES + 1),
            rx_bps: 1.0,
            tx_bps: 1.0,
        }];
        let (taken, dropped) = admit(
            &batch(vec![bad], 10),
            NOW * 1000,
            NOW,
            RAW_RETENTION,
            &mut None,
        );
        let values = &taken[0].1;
        assert_eq!(dropped[DropReason::Invalid as usize], 2 + 3 + 2);
        assert!(values.iter().all(|v| v.value.is_finite() && v.value >= 0.0));
        assert_eq!(
            values.iter().filter(|v| v.metric == "disk.used").count(),
            MAX_INSTANCES
        );
        assert!(values.iter().all(|v| v.metric != "net.rx"));
        assert!(
            values
                .iter()
                .any(|v| v.metric == "memory.percent" && v.value == 25.0)
        );
    }

    #[test]
    fn times_are_corrected_by_whole_seconds_of_skew() {
        // A daemon 2 h behind, and a few milliseconds of travel either way.
        for travel_ms in [3, 480, -300] {
            let mut skewed = batch(vec![sample(NOW - 7200 - 10, 1.0)], 10);
            skewed.sent_at_ms = (NOW - 7200) * 1000;
            let (taken, _) = admitted(&skewed, NOW * 1000 + travel_ms, &mut None);
            assert_eq!(taken, [NOW - 10], "travel {travel_ms} ms");
        }
        // Rounded to the nearest second.
        let mut late = batch(vec![sample(NOW - 10, 1.0)], 1);
        late.samples[0].at_ms += 499;
        assert_eq!(admitted(&late, NOW * 1000, &mut None).0, [NOW - 10]);
        late.samples[0].at_ms += 1;
        assert_eq!(admitted(&late, NOW * 1000, &mut None).0, [NOW - 9]);
    }

    #[test]
    fn jittered_samples_keep_a_second_each() {
        // Every second at about half past, some collections late by a few milliseconds.
        let samples: Vec<MetricSample> = [498, 503, 497, 502, 499]
            .iter()
            .enumerate()
            .map(|(n, late)| MetricSample {
                at_ms: (NOW - 10 + n as i64) * 1000 + late,
                ..sample(0, 1.0)
            })
            .collect();
        let mut last = None;
        let (taken, dropped) = admitted(&batch(samples.clone(), 1), NOW * 1000, &mut last);
        assert_eq!(taken, [NOW - 10, NOW - 8, NOW - 7, NOW - 6, NOW - 5]);
        assert!(dropped.is_empty());
        // Sent again after a reconnect: all of them are known.
        let (taken, dropped) = admitted(&batch(samples, 1), NOW * 1000 + 7, &mut last);
        assert!(taken.is_empty());
        assert_eq!(dropped, [("duplicate", 5)]);
    }

    #[test]
    fn one_second_samples_are_not_too_frequent() {
        let samples = (0..5).map(|n| sample(NOW - 10 + n, 1.0)).collect();
        let (taken, dropped) = admitted(&batch(samples, 1), NOW * 1000, &mut None);
        assert_eq!(taken.len(), 5);
        assert!(dropped.is_empty());
    }

    #[test]
    fn the_resolution_is_the_finest_the_step_and_retention_allow() {
        let retention = Retention {
            raw: Duration::from_secs(RAW_RETENTION as u64),
            minute: Duration::from_secs(14 * 86400),
            hour: Duration::from_secs(365 * 86400),
        };
        let choose = |range: i64, step: i64| {
            let (resolution, step) = resolution_for(NOW - range, NOW, step, NOW, retention);
            (resolution.name(), step)
        };
        assert_eq!(choose(3600, 0), ("raw", 12));
        assert_eq!(choose(86400, 0), ("1m", 300));
        assert_eq!(choose(7 * 86400, 0), ("1m", 2040));
        assert_eq!(choose(30 * 86400, 0), ("1h", 10800));
        assert_eq!(choose(3600, 90), ("1m", 120), "steps fit whole rows");
        assert_eq!(choose(3 * 86400, 10), ("1m", 60), "raw is gone by then");
        assert_eq!(choose(20 * 86400, 60), ("1h", 3600), "so are minutes");
    }

    #[test]
    fn a_name_selects_the_metrics_below_it() {
        let names = ["disk".to_string(), "cpu".into()];
        assert!(selected("disk.percent", &names));
        assert!(selected("cpu", &names));
        assert!(!selected("cpu.core", &["cpu.c".to_string()]));
        assert!(!selected("memory.used", &names));
        assert!(selected("memory.used", &[]));
    }

    #[test]
    fn latest_samples_answer_by_metric_and_instance() {
        let mut s = sample(NOW, 12.5);
        s.cpu_cores = vec![10.0, 15.0];
        let latest = LatestSample::from_sample("h1", NOW, &s);
        assert_eq!(latest.value("cpu", ""), Some(12.5));
        assert_eq!(latest.value("memory.percent", ""), Some(25.0));
        assert_eq!(latest.value("swap.percent", ""), None, "no swap");
        let cores: Vec<(&str, f64)> = latest.instances("cpu.core").collect();
        assert_eq!(cores, [("0", 10.0), ("1", 15.0)]);
        assert_eq!(instance_order("2", "10"), std::cmp::Ordering::Less);
    }
}

//! Alerts (ARCHITECTURE.md "Metrics and alerts"): rules and notification channels of a
//! workspace (checked, audited), the evaluator that fires and resolves alerts every
//! `--alert-interval`, and the alert history. Sending is in [`notify`].

pub mod notify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use zpanel_shared::alerts::{DEFAULT_COOLDOWN_SECONDS, RuleSpec};

use tokio_util::sync::CancellationToken;

use super::access::check_name;
use super::audit::check;
use super::{Action, AppState, Principal, ServiceError};
use crate::router::HostRouter;
use crate::store::{
    AlertChannelRecord, AlertEventFilter, AlertEventRecord, AlertRuleRecord, HostRecord,
    NewAlertEvent, RawSample, StoreError, now,
};
use notify::{Notice, Notifier, TELEGRAM_API};

/// The metrics a rule may watch (ARCHITECTURE.md "Metric names"), and whether each has
/// instances (a core, a mount, an interface).
pub const METRICS: [(&str, bool); 20] = [
    ("cpu", false),
    ("cpu.core", true),
    ("load1", false),
    ("load5", false),
    ("load15", false),
    ("memory.used", false),
    ("memory.total", false),
    ("memory.percent", false),
    ("swap.used", false),
    ("swap.total", false),
    ("swap.percent", false),
    ("disk.used", true),
    ("disk.total", true),
    ("disk.percent", true),
    ("disk.read", false),
    ("disk.write", false),
    ("net.rx", true),
    ("net.tx", true),
    ("uptime", false),
    ("processes", false),
];
/// A rule's cooldown when a request names none.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(DEFAULT_COOLDOWN_SECONDS);
/// Longest `for` of a metric rule: its window must stay within the raw samples kept.
const MAX_METRIC_FOR: u64 = 24 * 3600;
/// Longest `for` of an offline rule, and longest cooldown.
const MAX_FOR: u64 = 30 * 24 * 3600;
/// The first sample in a metric rule's window may come this long after the window's start
/// (beyond one interval).
const WINDOW_SLACK: i64 = 10;
/// Most events one history query answers.
const MAX_EVENTS: u32 = 1000;
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
const CHANNEL_KINDS: [&str; 4] = ["webhook", "email", "slack", "telegram"];

/// A rule's comparison of a sample with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl FromStr for Comparison {
    type Err = ServiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            ">" => Ok(Comparison::Above),
            ">=" => Ok(Comparison::AtLeast),
            "<" => Ok(Comparison::Below),
            "<=" => Ok(Comparison::AtMost),
            other => Err(ServiceError::InvalidArgument(format!(
                "unknown comparison {other:?}; use >, >=, < or <="
            ))),
        }
    }
}

impl Comparison {
    /// Whether `value` meets the condition.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    /// Whether `a` is further in the condition's direction than `b` (the worse value).
    fn worse(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Above | Comparison::AtLeast => a > b,
            Comparison::Below | Comparison::AtMost => a < b,
        }
    }
}

/// What a rule sees on one host at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The condition held for the whole window (on the worst instance, and its latest value).
    Holds { instance: String, value: f64 },
    /// The latest sample of every instance with recent samples misses the condition (the
    /// worst one reported), or the host is back online.
    Clear { instance: String, value: f64 },
    /// Neither: no recent samples, or the condition holds but not for long enough yet.
    Unknown,
}

/// How far before a metric rule's window the evaluator reads, to tell the host's sampling
/// interval and whether its samples are recent.
fn lookback(interval: i64) -> i64 {
    (3 * interval).max(60) + WINDOW_SLACK
}

/// Judges a metric rule on one host's raw samples (oldest first, any instances) at `now`.
/// `interval` is the evaluation interval; an instance sampled less often counts with its own
/// spacing (the gap between its two newest samples). An instance without a sample in the
/// last three intervals has no say. With `for_seconds` 0 only the latest sample counts.
pub fn judge(
    comparison: Comparison,
    threshold: f64,
    for_seconds: u64,
    samples: &[RawSample],
    now: i64,
    interval: i64,
) -> Reading {
    let mut by_instance: BTreeMap<&str, Vec<&RawSample>> = BTreeMap::new();
    for sample in samples {
        by_instance
            .entry(sample.instance.as_str())
            .or_default()
            .push(sample);
    }
    let window_start = now - for_seconds as i64;
    let mut holding: Option<(&str, f64)> = None;
    let mut worst_latest: Option<(&str, f64)> = None;
    let mut any_latest_meets = false;
    let worse = |candidate: Option<(&str, f64)>, value: f64| {
        candidate.is_none_or(|(_, current)| comparison.worse(value, current))
    };
    for (instance, series) in by_instance {
        let Some(latest) = series.last() else {
            continue;
        };
        let spacing = match series.len() {
            0 | 1 => 0,
            n => latest.at - series[n - 2].at,
        };
        let step = interval.max(spacing);
        if latest.at < now - 3 * step {
            continue;
        }
        if worse(worst_latest, latest.value) {
            worst_latest = Some((instance, latest.value));
        }
        let latest_meets = comparison.holds(latest.value, threshold);
        any_latest_meets |= latest_meets;
        let held = if for_seconds == 0 {
            latest_meets
        } else {
            let window: Vec<&&RawSample> = series.iter().filter(|s| s.at >= window_start).collect();
            window.first().is_some_and(|oldest| {
                oldest.at <= window_start + step + WINDOW_SLACK
                    && window.iter().all(|s| comparison.holds(s.value, threshold))
            })
        };
        if held && worse(holding, latest.value) {
            holding = Some((instance, latest.value));
        }
    }
    match (holding, worst_latest) {
        (Some((instance, value)), _) => Reading::Holds {
            instance: instance.into(),
            value,
        },
        (None, Some((instance, value))) if !any_latest_meets => Reading::Clear {
            instance: instance.into(),
            value,
        },
        _ => Reading::Unknown,
    }
}

/// Judges an offline rule: fires once the host has been offline for `for_seconds` (the
/// value is how long, in seconds), clears when it is online.
pub fn judge_offline(for_seconds: u64, online: bool, offline_since: i64, now: i64) -> Reading {
    let offline_for = now - offline_since;
    if online {
        Reading::Clear {
            instance: String::new(),
            value: 0.0,
        }
    } else if offline_for >= for_seconds as i64 {
        Reading::Holds {
            instance: String::new(),
            value: offline_for as f64,
        }
    } else {
        Reading::Unknown
    }
}

/// `disk.percent{/}`, or the bare metric without an instance.
pub fn metric_label(metric: &str, instance: &str) -> String {
    if instance.is_empty() {
        metric.into()
    } else {
        format!("{metric}{{{instance}}}")
    }
}

/// A value as people read it: whole numbers bare, others with at most two decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn duration(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// A rule's condition: `cpu > 90 for 5m`, `offline for 2m`.
pub fn condition(rule: &AlertRuleRecord) -> String {
    if rule.spec.kind == "offline" {
        return format!("offline for {}", duration(rule.spec.for_seconds));
    }
    format!(
        "{} {} {} for {}",
        metric_label(&rule.spec.metric, &rule.spec.instance),
        rule.spec.comparison,
        number(rule.spec.threshold),
        duration(rule.spec.for_seconds)
    )
}

/// An event's one-line summary: `cpu 97.1 > 90 for 5m`, `cpu 42, no longer > 90`,
/// `offline for 5m`, `back online`.
pub fn summary(rule: &AlertRuleRecord, firing: bool, instance: &str, value: f64) -> String {
    let label = metric_label(&rule.spec.metric, instance);
    match (rule.spec.kind.as_str(), firing) {
        ("offline", true) => format!("offline for {}", duration(value.max(0.0) as u64)),
        ("offline", false) => "back online".into(),
        (_, true) => format!(
            "{label} {} {} {} for {}",
            number(value),
            rule.spec.comparison,
            number(rule.spec.threshold),
            duration(rule.spec.for_seconds)
        ),
        (_, false) => format!(
            "{label} {}, no longer {} {}",
            number(value),
            rule.spec.comparison,
            number(rule.spec.threshold)
        ),
    }
}

/// Whether a host with `labels` is one a rule with `selector` watches.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Alerting's settings and the notification sender, kept in [`AppState`].
pub struct Alerts {
    /// `--alert-interval`: how often rules are evaluated.
    pub interval: Duration,
    /// When this control plane started: a host offline since before counts as offline
    /// from then (its sessions may have ended with the previous process).
    pub started_at: i64,
    pub notifier: Notifier,
}

impl Alerts {
    pub fn new(
        interval: Duration,
        smtp_url: Option<String>,
        smtp_from: Option<String>,
    ) -> anyhow::Result<Alerts> {
        Ok(Alerts {
            interval,
            started_at: now(),
            notifier: Notifier::new(smtp_url, smtp_from)?,
        })
    }
}

/// Evaluates every rule every interval and sends notifications, until `shutdown`.
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    tokio::spawn(notify::run(state.clone(), shutdown.clone()));
    let mut tick = tokio::time::interval(state.alerts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = evaluate(&state, now()).await {
            tracing::warn!("cannot evaluate alert rules: {e:#}");
        }
    }
}

/// One evaluation of every rule on every host it watches.
async fn evaluate(state: &AppState, at: i64) -> Result<(), StoreError> {
    let rules = state.store.alert_rules().await?;
    if rules.is_empty() {
        return Ok(());
    }
    let hosts = state.store.list_hosts().await?;
    let channels = state.store.alert_channels().await?;
    let open: HashMap<(String, String), bool> = state
        .store
        .alert_states()
        .await?
        .into_iter()
        .map(|s| ((s.rule_id, s.host_id), s.notified))
        .collect();
    let online: HashSet<String> = state.router.online_hosts().into_iter().collect();
    let interval = state.alerts.interval.as_secs().max(1) as i64;
    let mut notified_any = false;
    for rule in &rules {
        let comparison = rule.spec.comparison.parse::<Comparison>().ok();
        let watched = hosts.iter().filter(|h| {
            h.workspace_id == rule.workspace_id && selects(&rule.spec.selector, &h.labels)
        });
        for host in watched {
            let reading = if rule.spec.kind == "offline" {
                let offline_since = host
                    .last_seen
                    .unwrap_or(host.enrolled_at)
                    .max(state.alerts.started_at);
                judge_offline(
                    rule.spec.for_seconds,
                    online.contains(&host.id),
                    offline_since,
                    at,
                )
            } else {
                let Some(comparison) = comparison else {
                    continue;
                };
                let since = at - rule.spec.for_seconds as i64 - lookback(interval);
                let instance = Some(rule.spec.instance.as_str()).filter(|i| !i.is_empty());
                let samples = state
                    .store
                    .metric_window(&host.id, &rule.spec.metric, instance, since)
                    .await?;
                judge(
                    comparison,
                    rule.spec.threshold,
                    rule.spec.for_seconds,
                    &samples,
                    at,
                    interval,
                )
            };
            let was_notified = open.get(&(rule.id.clone(), host.id.clone())).copied();
            let (firing, instance, value, notified) = match (reading, was_notified) {
                (Reading::Holds { instance, value }, None) => {
                    let last_resolve = state.store.last_alert_resolve(&rule.id, &host.id).await?;
                    let cooled = last_resolve
                        .is_none_or(|resolved| at - resolved >= rule.spec.cooldown_seconds as i64);
                    (true, instance, value, cooled)
                }
                (Reading::Clear { instance, value }, Some(notified)) => {
                    (false, instance, value, notified)
                }
                _ => continue,
            };
            notified_any |= notified;
            record(
                state, rule, host, &channels, firing, instance, value, notified, at,
            )
            .await?;
        }
    }
    if notified_any {
        state.alerts.notifier.wake();
    }
    Ok(())
}

/// Records a firing or resolve with its deliveries.
#[allow(clippy::too_many_arguments)]
async fn record(
    state: &AppState,
    rule: &AlertRuleRecord,
    host: &HostRecord,
    channels: &[AlertChannelRecord],
    firing: bool,
    instance: String,
    value: f64,
    notified: bool,
    at: i64,
) -> Result<(), StoreError> {
    let summary = summary(rule, firing, &instance, value);
    let targets: Vec<(String, String)> = channels
        .iter()
        .filter(|c| c.workspace_id == rule.workspace_id && rule.spec.channels.contains(&c.name))
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    let event = NewAlertEvent {
        rule: rule.clone(),
        host_id: host.id.clone(),
        host_name: host.name.clone(),
        host_labels: host.labels.clone(),
        state: if firing { "firing" } else { "resolved" },
        value,
        instance,
        at,
        summary,
        notified,
    };
    state.store.record_alert_event(&event, &targets).await?;
    tracing::info!(
        rule = %rule.name,
        host = %host.name,
        state = event.state,
        notified,
        "alert: {}",
        event.summary
    );
    Ok(())
}

// === rules and channels ===

/// A rule to create, as an adapter received it.
#[derive(Debug, Clone, Default)]
pub struct RuleRequest {
    pub name: String,
    /// Default: the default workspace.
    pub workspace: Option<String>,
    /// An empty severity is a warning.
    pub spec: RuleSpec,
}

/// A channel to create, as an adapter received it.
#[derive(Debug, Clone, Default)]
pub struct ChannelRequest {
    pub name: String,
    pub workspace: Option<String>,
    pub kind: String,
    pub url: String,
    pub to: Vec<String>,
    pub smtp_url: String,
    pub from: String,
    pub chat_id: String,
    pub secret: String,
}

/// A rule as answered, with its workspace's name.
#[derive(Debug, Clone)]
pub struct RuleView {
    pub rule: AlertRuleRecord,
    pub workspace: String,
}

/// A channel as answered: never its secret or SMTP URL.
#[derive(Debug, Clone)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub url: String,
    pub to: Vec<String>,
    pub from: String,
    pub chat_id: String,
    pub has_secret: bool,
    pub workspace: String,
    pub created_at: i64,
}

/// Which alert events to list.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub host: Option<String>,
    pub rule: Option<String>,
    pub active: bool,
    /// 0: 100.
    pub limit: u32,
}

/// Checks a rule request and makes the record (without id, workspace and creator).
pub fn check_rule(request: &RuleRequest) -> Result<AlertRuleRecord, ServiceError> {
    let invalid = |message: String| Err(ServiceError::InvalidArgument(message));
    check_name("alert rule", &request.name)?;
    let severity = match request.spec.severity.as_str() {
        "" => "warning",
        known if SEVERITIES.contains(&known) => known,
        other => {
            return invalid(format!(
                "unknown severity {other:?}; use info, warning or critical"
            ));
        }
    };
    let mut rule = AlertRuleRecord {
        id: String::new(),
        workspace_id: String::new(),
        name: request.name.clone(),
        spec: RuleSpec {
            kind: request.spec.kind.clone(),
            for_seconds: request.spec.for_seconds,
            severity: severity.into(),
            selector: request.spec.selector.clone(),
            cooldown_seconds: request.spec.cooldown_seconds,
            ..RuleSpec::default()
        },
        created_at: now(),
        created_by: String::new(),
    };
    match request.spec.kind.as_str() {
        "metric" => {
            let Some(&(metric, has_instances)) = METRICS
                .iter()
                .find(|(name, _)| *name == request.spec.metric)
            else {
                let known: Vec<&str> = METRICS.iter().map(|(name, _)| *name).collect();
                return invalid(format!(
                    "unknown metric {:?}; metrics are {}",
                    request.spec.metric,
                    known.join(", ")
                ));
            };
            if !request.spec.instance.is_empty() && !has_instances {
                return invalid(format!(
                    "metric {metric} has no instances; leave out the instance"
                ));
            }
            request.spec.comparison.parse::<Comparison>()?;
            if !request.spec.threshold.is_finite() {
                return invalid("the threshold must be a number (not NaN or infinite)".into());
            }
            if request.spec.for_seconds > MAX_METRIC_FOR {
                return invalid(format!(
                    "a metric rule's for is at most {}",
                    duration(MAX_METRIC_FOR)
                ));
            }
            rule.spec.metric = metric.into();
            rule.spec.instance = request.spec.instance.clone();
            rule.spec.comparison = request.spec.comparison.clone();
            rule.spec.threshold = request.spec.threshold;
        }
        "offline" => {
            if request.spec.for_seconds > MAX_FOR {
                return invalid(format!(
                    "an offline rule's for is at most {}",
                    duration(MAX_FOR)
                ));
            }
        }
        other => {
            return invalid(format!(
                "unknown rule kind {other:?}; use metric or offline"
            ));
        }
    }
    if request.spec.cooldown_seconds > MAX_FOR {
        return invalid(format!("the cooldown is at most {}", duration(MAX_FOR)));
    }
    for (key, value) in &request.spec.selector {
        zpanel_shared::enroll::check_label(key, value).map_err(ServiceError::InvalidArgument)?;
    }
    for channel in &request.spec.channels {
        if !rule.spec.channels.contains(channel) {
            rule.spec.channels.push(channel.clone());
        }
    }
    Ok(rule)
}

/// Checks a URL a channel posts to.
fn check_url(what: &str, url: &str) -> Result<(), ServiceError> {
    let bad = |why: String| ServiceError::InvalidArgument(format!("bad {what} URL {url:?}: {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("use http:// or https:// and a host".into()));
    }
    Ok(())
}

/// Checks a channel request and makes the record (without id and workspace). `notifier`
/// supplies the server's SMTP defaults an e-mail channel may rely on.
pub fn check_channel(
    request: &ChannelRequest,
    notifier: &Notifier,
) -> Result<AlertChannelRecord, ServiceError> {
    let invalid = |message: &str| Err(ServiceError::InvalidArgument(message.into()));
    check_name("alert channel", &request.name)?;
    let mut channel = AlertChannelRecord {
        name: request.name.clone(),
        kind: request.kind.clone(),
        created_at: now(),
        ..Default::default()
    };
    match request.kind.as_str() {
        "webhook" | "slack" => {
            check_url(&request.kind, &request.url)?;
            channel.url = request.url.clone();
            if request.kind == "webhook" {
                channel.secret = request.secret.clone();
            }
        }
        "telegram" => {
            let base = Some(request.url.as_str())
                .filter(|u| !u.is_empty())
                .unwrap_or(TELEGRAM_API);
            check_url("Telegram API", base)?;
            if request.chat_id.is_empty() {
                return invalid("a telegram channel needs a chat id");
            }
            if request.secret.is_empty() {
                return invalid("a telegram channel needs its bot token as the secret");
            }
            channel.url = base.trim_end_matches('/').into();
            channel.chat_id = request.chat_id.clone();
            channel.secret = request.secret.clone();
        }
        "email" => {
            if request.to.is_empty() {
                return invalid("an email channel needs at least one recipient");
            }
            for to in &request.to {
                to.parse::<lettre::message::Mailbox>().map_err(|e| {
                    ServiceError::InvalidArgument(format!("bad recipient {to:?}: {e}"))
                })?;
            }
            if request.smtp_url.is_empty() {
                if notifier.smtp_url.is_none() {
                    return invalid(
                        "no SMTP server: give the channel an SMTP URL or start the control plane with --smtp-url",
                    );
                }
            } else {
                notify::smtp_transport(&request.smtp_url).map_err(ServiceError::InvalidArgument)?;
            }
            if request.from.is_empty() {
                if notifier.smtp_from.is_none() {
                    return invalid(
                        "no sender: give the channel a from address or start the control plane with --smtp-from",
                    );
                }
            } else {
                request
                    .from
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|e| {
                        ServiceError::InvalidArgument(format!("bad sender {:?}: {e}", request.from))
                    })?;
            }
            channel.to = request.to.clone();
            channel.smtp_url = request.smtp_url.clone();
            channel.from = request.from.clone();
        }
        other => {
            return Err(ServiceError::InvalidArgument(format!(
                "unknown channel kind {other:?}; use {}",
                CHANNEL_KINDS.join(", ")
            )));
        }
    }
    Ok(channel)
}

fn channel_view(channel: AlertChannelRecord, workspace: String) -> ChannelView {
    ChannelView {
        has_secret: !channel.secret.is_empty(),
        id: channel.id,
        name: channel.name,
        kind: channel.kind,
        url: channel.url,
        to: channel.to,
        from: channel.from,
        chat_id: channel.chat_id,
        workspace,
        created_at: channel.created_at,
    }
}

impl AppState {
    /// The workspaces whose alerts the caller sees (`None`: all), and every workspace's
    /// name by id.
    async fn alert_scope(
        &self,
        principal: &Principal,
    ) -> Result<(Option<Vec<String>>, HashMap<String, String>), ServiceError> {
        let visible = principal.visible_workspaces().map(|workspaces| {
            workspaces
                .into_iter()
                .filter(|w| check(principal, Action::ViewMetrics, Some(w)).is_ok())
                .collect()
        });
        Ok((visible, self.workspace_names().await?))
    }

    /// The rules the caller sees, by name.
    pub async fn alert_rules(&self, principal: &Principal) -> Result<Vec<RuleView>, ServiceError> {
        let (visible, names) = self.alert_scope(principal).await?;
        Ok(self
            .store
            .alert_rules()
            .await?
            .into_iter()
            .filter(|r| visible.as_ref().is_none_or(|v| v.contains(&r.workspace_id)))
            .map(|rule| RuleView {
                workspace: names.get(&rule.workspace_id).cloned().unwrap_or_default(),
                rule,
            })
            .collect())
    }

    pub async fn alert_rule_create(
        &self,
        principal: &Principal,
        request: RuleRequest,
    ) -> Result<RuleView, ServiceError> {
        let workspace = self
            .workspace_for(
                principal,
                Action::ManageAlerts,
                request.workspace.as_deref(),
            )
            .await?;
        let mut rule = check_rule(&request)?;
        let channels = self.store.alert_channels().await?;
        for name in &rule.spec.channels {
            if !channels
                .iter()
                .any(|c| &c.name == name && c.workspace_id == workspace.id)
            {
                return Err(ServiceError::InvalidArgument(format!(
                    "unknown channel {name:?} in workspace {}; `zpanel alerts channels list` shows them",
                    workspace.name
                )));
            }
        }
        rule.id = uuid::Uuid::new_v4().to_string();
        rule.workspace_id = workspace.id.clone();
        rule.created_by = principal.user_name.clone();
        self.store.insert_alert_rule(&rule).await?;
        self.audit(
            self.entry(principal, "alert.rule.create")
                .workspace(&workspace.id)
                .target(&rule.name)
                .detail(format!("{} ({})", condition(&rule), rule.spec.severity)),
        )
        .await;
        Ok(RuleView {
            rule,
            workspace: workspace.name,
        })
    }

    /// Deletes a rule (by id or name) and its open alerts; the history stays.
    pub async fn alert_rule_delete(
        &self,
        principal: &Principal,
        id_or_name: &str,
    ) -> Result<(), ServiceError> {
        let rule = self
            .store
            .find_alert_rule(id_or_name)
            .await?
            .filter(|r| principal.role_in(&r.workspace_id).is_some())
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "unknown alert rule {id_or_name:?}; `zpanel alerts list` shows them"
                ))
            })?;
        self.authorize(principal, Action::ManageAlerts, Some(&rule.workspace_id))
            .await?;
        self.store.delete_alert_rule(&rule.id).await?;
        self.audit(
            self.entry(principal, "alert.rule.delete")
                .workspace(&rule.workspace_id)
                .target(&rule.name),
        )
        .await;
        Ok(())
    }

    /// The channels the caller sees, by name (without secrets).
    pub async fn alert_channels(
        &self,
        principal: &Principal,
    ) -> Result<Vec<ChannelView>, ServiceError> {
        let (visible, names) = self.alert_scope(principal).await?;
        Ok(self
            .store
            .alert_channels()
            .await?
            .into_iter()
            .filter(|c| visible.as_ref().is_none_or(|v| v.contains(&c.workspace_id)))
            .map(|c| {
                let workspace = names.get(&c.workspace_id).cloned().unwrap_or_default();
                channel_view(c, workspace)
            })
            .collect())
    }

    pub async fn alert_channel_create(
        &self,
        principal: &Principal,
        request: ChannelRequest,
    ) -> Result<ChannelView, ServiceError> {
        let workspace = self
            .workspace_for(
                principal,
                Action::ManageAlerts,
                request.workspace.as_deref(),
            )
            .await?;
        let mut channel = check_channel(&request, &self.alerts.notifier)?;
        channel.id = uuid::Uuid::new_v4().to_string();
        channel.workspace_id = workspace.id.clone();
        self.store.insert_alert_channel(&channel).await?;
        self.audit(
            self.entry(principal, "alert.channel.create")
                .workspace(&workspace.id)
                .target(&channel.name)
                .detail(&channel.kind),
        )
        .await;
        Ok(channel_view(channel, workspace.name))
    }

    /// A channel the caller may manage, by id or name.
    async fn managed_channel(
        &self,
        principal: &Principal,
        id_or_name: &str,
    ) -> Result<AlertChannelRecord, ServiceError> {
        let channel = self
            .store
            .find_alert_channel(id_or_name)
            .await?
            .filter(|c| principal.role_in(&c.workspace_id).is_some())
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "unknown alert channel {id_or_name:?}; `zpanel alerts channels list` shows them"
                ))
            })?;
        self.authorize(principal, Action::ManageAlerts, Some(&channel.workspace_id))
            .await?;
        Ok(channel)
    }

    /// Deletes a channel no rule names.
    pub async fn alert_channel_delete(
        &self,
        principal: &Principal,
        id_or_name: &str,
    ) -> Result<(), ServiceError> {
        let channel = self.managed_channel(principal, id_or_name).await?;
        let users: Vec<String> = self
            .store
            .alert_rules()
            .await?
            .into_iter()
            .filter(|r| {
                r.workspace_id == channel.workspace_id && r.spec.channels.contains(&channel.name)
            })
            .map(|r| r.name)
            .collect();
        if !users.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "channel {} is used by rule {}; delete those rules first",
                channel.name,
                users.join(", ")
            )));
        }
        self.store.delete_alert_channel(&channel.id).await?;
        self.audit(
            self.entry(principal, "alert.channel.delete")
                .workspace(&channel.workspace_id)
                .target(&channel.name),
        )
        .await;
        Ok(())
    }

    /// Sends a test notification on a channel now: `Err` carries why it failed.
    pub async fn alert_channel_test(
        &self,
        principal: &Principal,
        id_or_name: &str,
    ) -> Result<Result<(), String>, ServiceError> {
        let channel = self.managed_channel(principal, id_or_name).await?;
        let sent = self
            .alerts
            .notifier
            .send(&channel, &Notice::test(&channel.name))
            .await;
        self.audit(
            self.entry(principal, "alert.channel.test")
                .workspace(&channel.workspace_id)
                .target(&channel.name)
                .outcome(match &sent {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("failed: {e}"),
                }),
        )
        .await;
        Ok(sent)
    }

    /// The alert history the caller sees, newest first.
    pub async fn alert_events(
        &self,
        principal: &Principal,
        query: EventQuery,
    ) -> Result<Vec<AlertEventRecord>, ServiceError> {
        let (workspaces, _) = self.alert_scope(principal).await?;
        let limit = match query.limit {
            0 => 100,
            n => n.min(MAX_EVENTS),
        };
        let filter = AlertEventFilter {
            workspaces,
            host: query.host.filter(|h| !h.is_empty()),
            rule: query.rule.filter(|r| !r.is_empty()),
            active: query.active,
            limit,
        };
        Ok(self.store.alert_events(&filter).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(instance: &str, at: i64, value: f64) -> RawSample {
        RawSample {
            instance: instance.into(),
            at,
            value,
        }
    }

    /// Samples every `step` seconds from `from` to `to` (inclusive) with `value`.
    fn series(instance: &str, from: i64, to: i64, step: i64, value: f64) -> Vec<RawSample> {
        (from..=to)
            .step_by(step as usize)
            .map(|at| sample(instance, at, value))
            .collect()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn fires_only_after_the_whole_window_met_the_condition() {
        let above = Comparison::Above;
        // five minutes of samples above 90, every 10 s
        let full = series("", NOW - 300, NOW, 10, 95.0);
        assert_eq!(
            judge(above, 90.0, 300, &full, NOW, 10),
            Reading::Holds {
                instance: String::new(),
                value: 95.0
            }
        );
        // samples for only two minutes: not yet, and not resolved either
        let short = series("", NOW - 120, NOW, 10, 95.0);
        assert_eq!(judge(above, 90.0, 300, &short, NOW, 10), Reading::Unknown);
        // one dip inside the window
        let mut dip = full.clone();
        dip[10].value = 50.0;
        assert_eq!(judge(above, 90.0, 300, &dip, NOW, 10), Reading::Unknown);
        // for 0: the latest sample alone
        let mut latest = dip.clone();
        latest.last_mut().unwrap().value = 91.0;
        assert!(matches!(
            judge(above, 90.0, 0, &latest, NOW, 10),
            Reading::Holds { .. }
        ));
    }

    #[test]
    fn resolves_when_the_latest_sample_misses_and_says_nothing_without_samples() {
        let mut samples = series("", NOW - 300, NOW, 10, 95.0);
        samples.last_mut().unwrap().value = 12.5;
        assert_eq!(
            judge(Comparison::AtLeast, 90.0, 300, &samples, NOW, 10),
            Reading::Clear {
                instance: String::new(),
                value: 12.5
            }
        );
        // nothing in the last three intervals: no opinion
        let stale = series("", NOW - 300, NOW - 31, 10, 12.5);
        assert_eq!(
            judge(Comparison::AtLeast, 90.0, 300, &stale, NOW, 10),
            Reading::Unknown
        );
        assert_eq!(
            judge(Comparison::Below, 1.0, 0, &[], NOW, 10),
            Reading::Unknown
        );
    }

    #[test]
    fn a_host_sampled_less_often_than_the_evaluation_counts_with_its_own_spacing() {
        // evaluated every second, sampled every 10 s, the latest 8 s ago
        let samples = series("", NOW - 68, NOW - 8, 10, 20.0);
        assert!(matches!(
            judge(Comparison::Above, 10.0, 60, &samples, NOW, 1),
            Reading::Holds { .. }
        ));
    }

    #[test]
    fn any_instance_fires_and_the_worst_is_reported() {
        let mut samples = series("/", NOW - 60, NOW, 10, 50.0);
        samples.extend(series("/data", NOW - 60, NOW, 10, 97.0));
        samples.extend(series("/boot", NOW - 60, NOW, 10, 93.0));
        samples.sort_by_key(|s| s.at);
        assert_eq!(
            judge(Comparison::Above, 90.0, 60, &samples, NOW, 10),
            Reading::Holds {
                instance: "/data".into(),
                value: 97.0
            }
        );
        // resolved only when no instance meets the condition any more
        let mut one_left = series("/", NOW - 60, NOW, 10, 50.0);
        one_left.push(sample("/data", NOW, 95.0));
        assert_eq!(
            judge(Comparison::Above, 90.0, 60, &one_left, NOW, 10),
            Reading::Unknown
        );
        let clear: Vec<RawSample> = one_left
            .into_iter()
            .map(|mut s| {
                s.value = s.value.min(60.0);
                s
            })
            .collect();
        assert_eq!(
            judge(Comparison::Above, 90.0, 60, &clear, NOW, 10),
            Reading::Clear {
                instance: "/data".into(),
                value: 60.0
            }
        );
    }

    #[test]
    fn offline_rules_fire_after_their_duration_and_clear_when_back() {
        assert_eq!(judge_offline(300, false, NOW - 100, NOW), Reading::Unknown);
        assert_eq!(
            judge_offline(300, false, NOW - 300, NOW),
            Reading::Holds {
                instance: String::new(),
                value: 300.0
            }
        );
        assert!(matches!(
            judge_offline(0, true, NOW - 1000, NOW),
            Reading::Clear { .. }
        ));
    }

    #[test]
    fn selectors_need_every_label() {
        let labels = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("role".to_string(), "web".to_string()),
        ]);
        let selector = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selects(&selector(&[]), &labels));
        assert!(selects(&selector(&[("env", "prod")]), &labels));
        assert!(!selects(
            &selector(&[("env", "prod"), ("role", "db")]),
            &labels
        ));
        assert!(!selects(&selector(&[("zone", "a")]), &labels));
    }

    fn request() -> RuleRequest {
        RuleRequest {
            name: "high-cpu".into(),
            workspace: None,
            spec: RuleSpec {
                kind: "metric".into(),
                metric: "cpu".into(),
                comparison: ">".into(),
                threshold: 90.0,
                for_seconds: 300,
                cooldown_seconds: 300,
                ..Default::default()
            },
        }
    }

    /// `request()` with its spec changed by `change`.
    fn changed(change: impl FnOnce(&mut RuleSpec)) -> RuleRequest {
        let mut request = request();
        change(&mut request.spec);
        request
    }

    fn refusal(request: RuleRequest) -> String {
        check_rule(&request).unwrap_err().to_string()
    }

    #[test]
    fn rules_are_checked_with_one_line_errors() {
        let rule = check_rule(&request()).unwrap();
        assert_eq!(rule.spec.severity, "warning");
        assert_eq!(condition(&rule), "cpu > 90 for 5m");
        let unknown = refusal(changed(|s| s.metric = "cpu.total".into()));
        assert!(
            unknown.starts_with("unknown metric \"cpu.total\"; metrics are cpu, cpu.core, load1"),
            "{unknown}"
        );
        assert!(unknown.ends_with("uptime, processes"), "{unknown}");
        assert!(refusal(changed(|s| s.threshold = f64::NAN)).contains("not NaN"));
        assert!(refusal(changed(|s| s.comparison = "=".into())).contains("use >, >=, < or <="));
        assert!(refusal(changed(|s| s.instance = "/".into())).contains("has no instances"));
        assert!(
            refusal(changed(|s| s.severity = "fatal".into())).contains("info, warning or critical")
        );
        let offline = check_rule(&changed(|s| {
            s.kind = "offline".into();
            s.metric = "cpu".into();
            s.for_seconds = 120;
        }))
        .unwrap();
        assert_eq!(
            (offline.spec.metric.as_str(), condition(&offline).as_str()),
            ("", "offline for 2m")
        );
    }

    #[test]
    fn summaries_read_as_one_line() {
        let rule = check_rule(&changed(|s| s.metric = "disk.percent".into())).unwrap();
        assert_eq!(
            summary(&rule, true, "/", 97.126),
            "disk.percent{/} 97.13 > 90 for 5m"
        );
        assert_eq!(
            summary(&rule, false, "/", 42.0),
            "disk.percent{/} 42, no longer > 90"
        );
    }

    #[test]
    fn channels_are_checked_with_one_line_errors() {
        let notifier = Notifier::new(None, None).unwrap();
        let webhook = ChannelRequest {
            name: "hook".into(),
            kind: "webhook".into(),
            url: "https://example.com/hook".into(),
            secret: "s3cret".into(),
            ..Default::default()
        };
        assert_eq!(check_channel(&webhook, &notifier).unwrap().secret, "s3cret");
        let bad = check_channel(
            &ChannelRequest {
                url: "ftp://example.com".into(),
                ..webhook.clone()
            },
            &notifier,
        )
        .unwrap_err()
        .to_string();
        assert!(bad.starts_with("bad webhook URL"), "{bad}");
        let email = ChannelRequest {
            name: "ops-mail".into(),
            kind: "email".into(),
            to: vec!["ops@example.com".into()],
            ..Default::default()
        };
        let refused =
            |request: &ChannelRequest| check_channel(request, &notifier).unwrap_err().to_string();
        assert!(refused(&email).contains("--smtp-url"));
        assert!(
            refused(&ChannelRequest {
                to: vec![],
                ..email.clone()
            })
            .contains("recipient")
        );
        let with_server = ChannelRequest {
            smtp_url: "smtp://127.0.0.1:2525".into(),
            from: "zpanel@example.com".into(),
            ..email
        };
        assert!(check_channel(&with_server, &notifier).is_ok());
        let telegram = check_channel(
            &ChannelRequest {
                name: "tg".into(),
                kind: "telegram".into(),
                chat_id: "42".into(),
                secret: "123:abc".into(),
                ..Default::default()
            },
            &notifier,
        )
        .unwrap();
        assert_eq!(telegram.url, TELEGRAM_API);
    }
}

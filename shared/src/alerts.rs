//! The JSON of alert rules, notification channels and alert events: what the HTTP API answers
//! and what `zpanel alerts --json` prints, one type each so the two cannot drift. The CLI
//! builds them from the gRPC forms (here, next to the types); the control plane from its
//! service views (`api/http/alerts.rs`). A channel's secrets have no field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zpanel_proto::{AlertChannel, AlertDelivery, AlertEvent, AlertRule};

/// What a rule's author chooses: a metric condition or `offline`, the hosts it selects and
/// the channels it notifies. The same in the HTTP body that creates a rule (absent fields take
/// these defaults), the stored rule and every answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// `metric` or `offline`.
    #[serde(default = "metric_kind")]
    pub kind: String,
    #[serde(default)]
    pub metric: String,
    /// Empty: any instance.
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub comparison: String,
    #[serde(default)]
    pub threshold: f64,
    #[serde(default)]
    pub for_seconds: u64,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Names of channels of the rule's workspace.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: u64,
}

/// A rule's cooldown when its author names none: 5 minutes.
pub const DEFAULT_COOLDOWN_SECONDS: u64 = 300;

fn metric_kind() -> String {
    "metric".into()
}

fn default_cooldown() -> u64 {
    DEFAULT_COOLDOWN_SECONDS
}

/// A rule as answered.
#[derive(Debug, Clone, Serialize)]
pub struct RuleJson {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub workspace: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A channel, never its secrets: `has_secret` says whether it holds one.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelJson {
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

/// A firing or resolve in the alert history, with its notifications.
#[derive(Debug, Clone, Serialize)]
pub struct EventJson {
    pub id: i64,
    pub rule: String,
    pub host_id: String,
    pub host_name: String,
    pub state: String,
    pub severity: String,
    pub value: f64,
    pub at: i64,
    pub summary: String,
    pub notified: bool,
    pub deliveries: Vec<DeliveryJson>,
}

/// One notification of an event on one channel.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryJson {
    pub channel: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: String,
    /// `None` until it was sent.
    pub sent_at: Option<i64>,
}

/// `None` for 0, the "not sent" of stored and gRPC deliveries.
pub fn sent_at(at: i64) -> Option<i64> {
    (at > 0).then_some(at)
}

// === from the gRPC forms ===

impl From<&AlertRule> for RuleSpec {
    fn from(r: &AlertRule) -> Self {
        RuleSpec {
            kind: r.kind.clone(),
            metric: r.metric.clone(),
            instance: r.instance.clone(),
            comparison: r.comparison.clone(),
            threshold: r.threshold,
            for_seconds: r.for_seconds,
            severity: r.severity.clone(),
            selector: r.selector.clone().into_iter().collect(),
            channels: r.channels.clone(),
            cooldown_seconds: r.cooldown_seconds,
        }
    }
}

impl From<&AlertRule> for RuleJson {
    fn from(r: &AlertRule) -> Self {
        RuleJson {
            id: r.id.clone(),
            name: r.name.clone(),
            spec: RuleSpec::from(r),
            workspace: r.workspace.clone(),
            created_at: r.created_at,
            created_by: r.created_by.clone(),
        }
    }
}

impl From<&AlertChannel> for ChannelJson {
    fn from(c: &AlertChannel) -> Self {
        ChannelJson {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: c.kind.clone(),
            url: c.url.clone(),
            to: c.to.clone(),
            from: c.from.clone(),
            chat_id: c.chat_id.clone(),
            has_secret: c.has_secret,
            workspace: c.workspace.clone(),
            created_at: c.created_at,
        }
    }
}

impl From<&AlertEvent> for EventJson {
    fn from(e: &AlertEvent) -> Self {
        EventJson {
            id: e.id,
            rule: e.rule.clone(),
            host_id: e.host_id.clone(),
            host_name: e.host_name.clone(),
            state: e.state.clone(),
            severity: e.severity.clone(),
            value: e.value,
            at: e.at,
            summary: e.summary.clone(),
            notified: e.notified,
            deliveries: e.deliveries.iter().map(DeliveryJson::from).collect(),
        }
    }
}

impl From<&AlertDelivery> for DeliveryJson {
    fn from(d: &AlertDelivery) -> Self {
        DeliveryJson {
            channel: d.channel.clone(),
            status: d.status.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            sent_at: sent_at(d.sent_at),
        }
    }
}

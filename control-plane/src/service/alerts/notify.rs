//! Alert notifications (ARCHITECTURE.md "Metrics and alerts"): what a firing, a resolve or a
//! test says, and how it reaches each kind of channel (a signed JSON webhook, a Slack
//! incoming webhook, Telegram's bot API, e-mail over SMTP). Deliveries are rows in the store;
//! [`run`] starts a task for each one that is due, so a channel that is down never delays
//! another, and retries with a doubling delay until the last attempt.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::service::AppState;
use crate::store::{AlertChannelRecord, AlertEventRecord, now};

/// Longest one attempt may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one delivery in all; after the last failure it is marked `failed`.
pub const MAX_ATTEMPTS: u32 = 8;
/// Delay after the first failed attempt; it doubles after each further one, up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(10);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
/// How often the sender looks for due deliveries when nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// Where Telegram's bot API is when a channel names no other.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// What one notification says.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `firing`, `resolved` or `test`.
    pub event: String,
    pub rule: String,
    pub severity: String,
    pub host: NoticeHost,
    pub metric: String,
    pub instance: String,
    pub comparison: String,
    pub threshold: f64,
    pub for_seconds: u64,
    pub value: f64,
    pub at: i64,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoticeHost {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl From<&AlertEventRecord> for Notice {
    fn from(event: &AlertEventRecord) -> Self {
        Notice {
            event: event.state.clone(),
            rule: event.rule_name.clone(),
            severity: event.severity.clone(),
            host: NoticeHost {
                id: event.host_id.clone(),
                name: event.host_name.clone(),
                labels: event.host_labels.clone(),
            },
            metric: event.metric.clone(),
            instance: event.instance.clone(),
            comparison: event.comparison.clone(),
            threshold: event.threshold,
            for_seconds: event.for_seconds,
            value: event.value,
            at: event.at,
            summary: event.summary.clone(),
        }
    }
}

impl Notice {
    /// The test notification a channel's `test` sends.
    pub fn test(channel: &str) -> Notice {
        Notice {
            event: "test".into(),
            rule: "test".into(),
            severity: "info".into(),
            host: NoticeHost {
                id: String::new(),
                name: String::new(),
                labels: BTreeMap::new(),
            },
            metric: String::new(),
            instance: String::new(),
            comparison: String::new(),
            threshold: 0.0,
            for_seconds: 0,
            value: 0.0,
            at: now(),
            summary: format!("a test notification on channel {channel}"),
        }
    }

    /// `[zpanel] FIRING critical high-cpu on web1`: the e-mail subject and the first words
    /// of chat messages.
    pub fn headline(&self) -> String {
        if self.event == "test" {
            return "[zpanel] TEST notification".into();
        }
        format!(
            "[zpanel] {} {} {} on {}",
            self.event.to_uppercase(),
            self.severity,
            self.rule,
            self.host.name
        )
    }

    /// The one line a chat message is.
    fn line(&self) -> String {
        format!("{}: {}", self.headline(), self.summary)
    }

    /// An e-mail's text: the summary, then the details.
    fn text(&self) -> String {
        let mut text = format!("{}\n\n", self.summary);
        if self.event != "test" {
            text.push_str(&format!(
                "rule: {}\nseverity: {}\nhost: {} ({})\n",
                self.rule, self.severity, self.host.name, self.host.id
            ));
            if !self.metric.is_empty() {
                text.push_str(&format!(
                    "condition: {} {} {} for {}s\nvalue: {}\n",
                    super::metric_label(&self.metric, &self.instance),
                    self.comparison,
                    self.threshold,
                    self.for_seconds,
                    self.value
                ));
            }
        }
        text.push_str(&format!("at: {}\n", rfc3339(self.at)));
        text
    }
}

fn rfc3339(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An error and its causes on one line, without URLs (a webhook's or bot's URL is a
/// secret of its own).
fn error_line(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut line = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// The HMAC-SHA256 of `<timestamp>.<body>` under `secret`, as the webhook's signature
/// header carries it (`sha256=<hex>`).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An SMTP transport for a URL: `smtps://` (TLS from the start) or `smtp://` with STARTTLS
/// when the server offers it (unless the URL says `tls=` itself), user and password in the
/// URL.
pub fn smtp_transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|e| format!("the SMTP URL is not a URL: {e}"))?;
    match parsed.scheme() {
        "smtps" => {}
        "smtp" if parsed.query_pairs().any(|(key, _)| key == "tls") => {}
        "smtp" => {
            parsed.query_pairs_mut().append_pair("tls", "opportunistic");
        }
        scheme => {
            return Err(format!(
                "the SMTP URL's scheme is {scheme:?}; use smtp:// or smtps://"
            ));
        }
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(parsed.as_str())
        .map(|builder| builder.timeout(Some(SEND_TIMEOUT)).build())
        .map_err(|e| format!("bad SMTP URL: {e}"))
}

/// Sends notifications; shared by the delivery tasks and channel tests.
pub struct Notifier {
    http: reqwest::Client,
    /// `--smtp-url` and `--smtp-from`: for e-mail channels that name none of their own.
    pub smtp_url: Option<String>,
    pub smtp_from: Option<String>,
    wake: tokio::sync::Notify,
    /// Deliveries a task is sending now.
    in_flight: Mutex<HashSet<i64>>,
}

impl Notifier {
    pub fn new(smtp_url: Option<String>, smtp_from: Option<String>) -> anyhow::Result<Notifier> {
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .user_agent(concat!("zpanel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            http,
            smtp_url,
            smtp_from,
            wake: tokio::sync::Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// Tells the sender that new deliveries are waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends one notice on one channel, within [`SEND_TIMEOUT`]; the error is one line.
    pub async fn send(&self, channel: &AlertChannelRecord, notice: &Notice) -> Result<(), String> {
        match tokio::time::timeout(SEND_TIMEOUT, self.send_now(channel, notice)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", SEND_TIMEOUT.as_secs())),
        }
    }

    async fn send_now(&self, channel: &AlertChannelRecord, notice: &Notice) -> Result<(), String> {
        match channel.kind.as_str() {
            "webhook" => {
                let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
                let mut headers = Vec::new();
                if !channel.secret.is_empty() {
                    let timestamp = now();
                    headers.push(("x-zpanel-timestamp", timestamp.to_string()));
                    headers.push((
                        "x-zpanel-signature",
                        signature(&channel.secret, timestamp, &body),
                    ));
                }
                self.post(&channel.url, body, &headers).await
            }
            "slack" => {
                let body = serde_json::json!({ "text": notice.line() });
                self.post(&channel.url, body.to_string().into_bytes(), &[])
                    .await
            }
            "telegram" => {
                let base = if channel.url.is_empty() {
                    TELEGRAM_API
                } else {
                    channel.url.trim_end_matches('/')
                };
                let url = format!("{base}/bot{}/sendMessage", channel.secret);
                let body = serde_json::json!({ "chat_id": channel.chat_id, "text": notice.line() });
                self.post(&url, body.to_string().into_bytes(), &[]).await
            }
            "email" => self.email(channel, notice).await,
            other => Err(format!("unknown channel kind {other:?}")),
        }
    }

    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<(), String> {
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(error_line)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }

    async fn email(&self, channel: &AlertChannelRecord, notice: &Notice) -> Result<(), String> {
        let given = |own: &str, default: &Option<String>| {
            Some(own.to_string())
                .filter(|v| !v.is_empty())
                .or_else(|| default.clone())
        };
        let url = given(&channel.smtp_url, &self.smtp_url).ok_or(
            "no SMTP server: give the channel an SMTP URL or start the control plane with --smtp-url",
        )?;
        let from = given(&channel.from, &self.smtp_from).ok_or(
            "no sender: give the channel a from address or start the control plane with --smtp-from",
        )?;
        let mut message = Message::builder()
            .from(
                from.parse::<Mailbox>()
                    .map_err(|e| format!("bad sender {from:?}: {e}"))?,
            )
            .subject(notice.headline());
        for to in &channel.to {
            message = message.to(to
                .parse::<Mailbox>()
                .map_err(|e| format!("bad recipient {to:?}: {e}"))?);
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(notice.text())
            .map_err(|e| format!("cannot build the e-mail: {e}"))?;
        smtp_transport(&url)?
            .send(message)
            .await
            .map_err(|e| format!("SMTP: {e}"))?;
        Ok(())
    }
}

/// How long after failed attempt number `attempts` (1 for the first) the next one is due.
pub fn retry_delay(attempts: u32) -> Duration {
    let doubled = FIRST_RETRY_DELAY.saturating_mul(1 << attempts.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY_DELAY)
}

/// Removes a delivery from the in-flight set when its task ends, however it ends.
struct InFlight {
    state: Arc<AppState>,
    id: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.state.alerts.notifier.in_flight.lock() {
            in_flight.remove(&self.id);
        }
    }
}

/// Starts a task for every pending delivery that is due (those of before a restart too),
/// when woken and every second, until `shutdown`.
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = state.alerts.notifier.wake.notified() => {}
        }
        let due = match state.store.due_alert_deliveries(now()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!("cannot read alert deliveries: {e:#}");
                continue;
            }
        };
        for id in due {
            let fresh = match state.alerts.notifier.in_flight.lock() {
                Ok(mut in_flight) => in_flight.insert(id),
                Err(_) => false,
            };
            if fresh {
                let guard = InFlight {
                    state: state.clone(),
                    id,
                };
                tokio::spawn(deliver(guard));
            }
        }
    }
}

/// One attempt of one delivery, and its record.
async fn deliver(guard: InFlight) {
    let InFlight { state, id } = &guard;
    let loaded = match state.store.alert_delivery(*id).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(delivery = id, "cannot read an alert delivery: {e:#}");
            return;
        }
    };
    let (delivery, event, channel) = loaded;
    if delivery.status != "pending" {
        return;
    }
    let result = match &channel {
        Some(channel) => {
            state
                .alerts
                .notifier
                .send(channel, &Notice::from(&event))
                .await
        }
        None => Err("the channel was deleted".into()),
    };
    let attempts = delivery.attempts + 1;
    let retry_at = match (&result, &channel) {
        (Err(_), Some(_)) if attempts < MAX_ATTEMPTS => {
            Some(now() + retry_delay(attempts).as_secs() as i64)
        }
        _ => None,
    };
    if let Err(error) = &result {
        tracing::warn!(
            channel = %delivery.channel_name,
            rule = %event.rule_name,
            host = %event.host_name,
            attempts,
            "alert notification failed: {error}"
        );
    }
    if let Err(e) = state
        .store
        .alert_delivery_attempted(*id, result.err().as_deref(), retry_at)
        .await
    {
        tracing::warn!(delivery = id, "cannot record an alert delivery: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_ten_seconds_up_to_ten_minutes() {
        let delays: Vec<u64> = (1..MAX_ATTEMPTS)
            .map(|n| retry_delay(n).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 600]);
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        let signed = signature("Jefe", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signed, format!("sha256={expected}"));
        assert_ne!(signed, signature("other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn smtp_urls_are_checked_and_smtp_gets_opportunistic_starttls() {
        assert!(smtp_transport("smtp://127.0.0.1:2525").is_ok());
        assert!(smtp_transport("smtps://user:pass@mail.example.com").is_ok());
        assert!(smtp_transport("smtp://mail.example.com?tls=required").is_ok());
        let wrong = smtp_transport("http://mail.example.com").unwrap_err();
        assert!(wrong.contains("use smtp:// or smtps://"), "{wrong}");
        assert!(smtp_transport("not a url").is_err());
    }

    #[test]
    fn headlines_name_the_state_severity_rule_and_host() {
        let mut notice = Notice::test("ops");
        assert_eq!(notice.headline(), "[zpanel] TEST notification");
        notice.event = "firing".into();
        notice.severity = "critical".into();
        notice.rule = "high-cpu".into();
        notice.host.name = "web1".into();
        assert_eq!(
            notice.headline(),
            "[zpanel] FIRING critical high-cpu on web1"
        );
    }
}

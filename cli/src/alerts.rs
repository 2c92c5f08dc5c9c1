//! `zpanel alerts`: alert rules (list, create, delete), the alert history, and notification
//! channels (list, add, remove, test). Secrets (a webhook's key, a bot token, an SMTP
//! password) come from files or stdin, never from the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use zpanel_proto::{
    AlertChannel, AlertEvent, AlertRule, CreateAlertChannelRequest, CreateAlertRuleRequest,
    DeleteAlertChannelRequest, DeleteAlertRuleRequest, ListAlertChannelsRequest,
    ListAlertEventsRequest, ListAlertRulesRequest, TestAlertChannelRequest,
};

use zpanel_shared::alerts::{ChannelJson, EventJson, RuleJson};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display;

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// List the alert rules.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a rule: a metric beyond a threshold for a while (--metric, --above or
    /// --below, --for), or a host offline for a while (--offline).
    Create(CreateArgs),
    /// Delete a rule (its history stays).
    Delete {
        /// The rule's name or id.
        name: String,
    },
    /// The alert history, newest first.
    History {
        /// Only this host (name or id).
        #[arg(long)]
        host: Option<String>,
        /// Only this rule (name or id).
        #[arg(long)]
        rule: Option<String>,
        /// Only alerts firing now.
        #[arg(long)]
        active: bool,
        /// At most this many events (default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Notification channels: list, add, remove, test.
    Channels {
        #[command(subcommand)]
        command: ChannelsCommand,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["metric", "offline"])))]
#[command(group(ArgGroup::new("comparison").args(["above", "below"]).requires("metric")))]
struct CreateArgs {
    /// The rule's name.
    name: String,
    /// The metric to watch (cpu, memory.percent, disk.percent, load1, ...).
    #[arg(long)]
    metric: Option<String>,
    /// One instance of the metric (a mount, an interface, a core); default: any.
    #[arg(long, requires = "metric")]
    instance: Option<String>,
    /// Fire when the metric is above this.
    #[arg(long, allow_negative_numbers = true, value_name = "X")]
    above: Option<f64>,
    /// Fire when the metric is below this.
    #[arg(long, allow_negative_numbers = true, value_name = "X")]
    below: Option<f64>,
    /// How long the condition must hold.
    #[arg(long = "for", value_name = "DURATION", default_value = "0s", requires = "metric", value_parser = humantime::parse_duration)]
    for_: Duration,
    /// Fire when a host has been offline this long.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    offline: Option<Duration>,
    /// info, warning or critical.
    #[arg(long, default_value = "warning")]
    severity: String,
    /// Only hosts with this label (KEY=VALUE; repeat for several, all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::docker::parse::label)]
    selector: Vec<(String, String)>,
    /// Notify this channel (repeat for several).
    #[arg(long = "channel", value_name = "NAME")]
    channels: Vec<String>,
    /// After a resolve, a new firing within this time is recorded but not notified.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    cooldown: Duration,
    /// The workspace (default: default).
    #[arg(long)]
    workspace: Option<String>,
    /// Print the created rule as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ChannelsCommand {
    /// List the channels (secrets are never shown).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a channel: a signed webhook, a Slack incoming webhook, a Telegram chat or e-mail.
    Add(Box<AddChannelArgs>),
    /// Remove a channel no rule uses.
    Remove {
        /// The channel's name or id.
        name: String,
    },
    /// Send a test notification now.
    Test {
        /// The channel's name or id.
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["webhook", "slack", "telegram", "email"])))]
struct AddChannelArgs {
    /// The channel's name.
    name: String,
    /// POST signed JSON to this URL.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// The webhook's HMAC-SHA256 key, read from this file (`-`: stdin).
    #[arg(long, value_name = "FILE", requires = "webhook")]
    secret_file: Option<PathBuf>,
    /// POST {"text": ...} to this Slack-compatible incoming webhook URL.
    #[arg(long, value_name = "URL")]
    slack: Option<String>,
    /// Send to this Telegram chat (with --bot-token-file); a group's id is negative.
    #[arg(
        long,
        value_name = "CHAT_ID",
        requires = "bot_token_file",
        allow_hyphen_values = true
    )]
    telegram: Option<String>,
    /// The Telegram bot token, read from this file (`-`: stdin).
    #[arg(long, value_name = "FILE", requires = "telegram")]
    bot_token_file: Option<PathBuf>,
    /// The Telegram bot API's base URL (default https://api.telegram.org).
    #[arg(long, value_name = "URL", requires = "telegram")]
    api_url: Option<String>,
    /// E-mail these addresses (comma-separated).
    #[arg(long, value_name = "ADDR[,ADDR]", value_delimiter = ',')]
    email: Vec<String>,
    /// The SMTP server (smtp://HOST[:PORT] with STARTTLS when offered, or smtps://...);
    /// default: the control plane's --smtp-url. With a password, use --smtp-url-file.
    #[arg(
        long,
        value_name = "URL",
        requires = "email",
        conflicts_with = "smtp_url_file"
    )]
    smtp_url: Option<String>,
    /// Read the SMTP URL (with its user and password) from this file (`-`: stdin).
    #[arg(long, value_name = "FILE", requires = "email")]
    smtp_url_file: Option<PathBuf>,
    /// The sender address; default: the control plane's --smtp-from.
    #[arg(long, value_name = "ADDR", requires = "email")]
    from: Option<String>,
    /// The workspace (default: default).
    #[arg(long)]
    workspace: Option<String>,
    /// Print the added channel as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `zpanel alerts ...`.
pub async fn run(settings: &Settings, args: AlertsArgs) -> anyhow::Result<()> {
    match args.command {
        AlertsCommand::List { json } => list(settings, json).await,
        AlertsCommand::Create(args) => create(settings, args).await,
        AlertsCommand::Delete { name } => {
            let mut client = client::connect(settings).await?;
            client
                .delete_alert_rule(DeleteAlertRuleRequest { rule: name.clone() })
                .await
                .map_err(call_failed)?;
            println!("deleted alert rule {name}");
            Ok(())
        }
        AlertsCommand::History {
            host,
            rule,
            active,
            limit,
            json,
        } => {
            let request = ListAlertEventsRequest {
                host: host.unwrap_or_default(),
                rule: rule.unwrap_or_default(),
                active,
                limit: limit.unwrap_or(0),
            };
            history(settings, request, json).await
        }
        AlertsCommand::Channels { command } => channels(settings, command).await,
    }
}

// === rules ===

fn duration(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// `cpu > 90 for 5m`, `disk.percent{/} > 90 for 10m`, `offline for 2m`.
fn condition(rule: &AlertRule) -> String {
    if rule.kind == "offline" {
        return format!("offline for {}", duration(rule.for_seconds));
    }
    let metric = if rule.instance.is_empty() {
        rule.metric.clone()
    } else {
        format!("{}{{{}}}", rule.metric, rule.instance)
    };
    format!(
        "{metric} {} {} for {}",
        rule.comparison,
        rule.threshold,
        duration(rule.for_seconds)
    )
}

/// `k=v,k2=v2`.
fn selector(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = labels.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn rule_table(rules: &[AlertRule]) -> String {
    display::table(
        [
            "NAME",
            "KIND",
            "CONDITION",
            "SEVERITY",
            "SELECTOR",
            "CHANNELS",
        ],
        rules.iter().map(|r| {
            [
                r.name.clone(),
                r.kind.clone(),
                condition(r),
                r.severity.clone(),
                display::cell(&selector(&r.selector)),
                display::cell(&r.channels.join(",")),
            ]
        }),
    )
}

async fn list(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let rules = client
        .list_alert_rules(ListAlertRulesRequest {})
        .await
        .map_err(call_failed)?
        .into_inner()
        .rules;
    if json {
        let rows: Vec<RuleJson> = rules.iter().map(RuleJson::from).collect();
        return display::print_json(&rows, "alert rules");
    }
    if rules.is_empty() {
        println!("no alert rules; create one with `zpanel alerts create`");
        return Ok(());
    }
    print!("{}", rule_table(&rules));
    Ok(())
}

async fn create(settings: &Settings, args: CreateArgs) -> anyhow::Result<()> {
    let (kind, comparison, threshold, for_) = match (&args.metric, args.offline) {
        (Some(_), _) => {
            let (comparison, threshold) = match (args.above, args.below) {
                (Some(x), None) => (">", x),
                (None, Some(x)) => ("<", x),
                _ => anyhow::bail!("a metric rule needs --above X or --below X"),
            };
            ("metric", comparison, threshold, args.for_)
        }
        (None, Some(offline)) => ("offline", "", 0.0, offline),
        (None, None) => anyhow::bail!("give --metric M or --offline DURATION"),
    };
    let rule = AlertRule {
        name: args.name,
        kind: kind.into(),
        metric: args.metric.unwrap_or_default(),
        instance: args.instance.unwrap_or_default(),
        comparison: comparison.into(),
        threshold,
        for_seconds: for_.as_secs(),
        severity: args.severity,
        selector: args.selector.into_iter().collect(),
        channels: args.channels,
        cooldown_seconds: args.cooldown.as_secs(),
        workspace: args.workspace.unwrap_or_default(),
        ..Default::default()
    };
    let mut client = client::connect(settings).await?;
    let created = client
        .create_alert_rule(CreateAlertRuleRequest { rule: Some(rule) })
        .await
        .map_err(call_failed)?
        .into_inner();
    if args.json {
        return display::print_json(&RuleJson::from(&created), "the alert rule");
    }
    println!(
        "created alert rule {} in workspace {}: {} ({})",
        created.name,
        created.workspace,
        condition(&created),
        created.severity
    );
    Ok(())
}

// === history ===

/// How an event was notified: `no (cooldown)`, or each channel's delivery status.
fn notified(event: &AlertEvent) -> String {
    if !event.notified {
        return "no (cooldown)".into();
    }
    event
        .deliveries
        .iter()
        .map(|d| match d.status.as_str() {
            "sent" => format!("{} sent", d.channel),
            status => format!("{} {status} ({} tries)", d.channel, d.attempts),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn history(
    settings: &Settings,
    request: ListAlertEventsRequest,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let events = client
        .list_alert_events(request)
        .await
        .map_err(call_failed)?
        .into_inner()
        .events;
    if json {
        let rows: Vec<EventJson> = events.iter().map(EventJson::from).collect();
        return display::print_json(&rows, "alert events");
    }
    if events.is_empty() {
        println!("no alert events");
        return Ok(());
    }
    let now = zpanel_shared::unix_now();
    print!(
        "{}",
        display::table(
            [
                "WHEN", "RULE", "HOST", "STATE", "SEVERITY", "SUMMARY", "NOTIFIED"
            ],
            events.iter().map(|e| [
                display::ago(e.at, now),
                e.rule.clone(),
                e.host_name.clone(),
                e.state.clone(),
                e.severity.clone(),
                display::truncate(&e.summary, 60),
                display::cell(&notified(e)),
            ]),
        )
    );
    Ok(())
}

// === channels ===

/// Where a channel sends: its URL, its recipients or its chat.
fn destination(c: &AlertChannel) -> String {
    match c.kind.as_str() {
        "email" => c.to.join(","),
        "telegram" => format!("chat {}", c.chat_id),
        _ => c.url.clone(),
    }
}

/// A secret from a file (`-`: stdin); `what` names it in the error.
fn secret(path: &Path, what: &str) -> anyhow::Result<String> {
    zpanel_shared::process::read_secret(None, Some(path))
        .with_context(|| format!("cannot read the {what}"))
}

async fn channels(settings: &Settings, command: ChannelsCommand) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    match command {
        ChannelsCommand::List { json } => {
            let channels = client
                .list_alert_channels(ListAlertChannelsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .channels;
            if json {
                let rows: Vec<ChannelJson> = channels.iter().map(ChannelJson::from).collect();
                return display::print_json(&rows, "alert channels");
            }
            if channels.is_empty() {
                println!("no alert channels; add one with `zpanel alerts channels add`");
                return Ok(());
            }
            print!(
                "{}",
                display::table(
                    ["NAME", "KIND", "DESTINATION", "SECRET", "WORKSPACE"],
                    channels.iter().map(|c| [
                        c.name.clone(),
                        c.kind.clone(),
                        display::truncate(&destination(c), 60),
                        if c.has_secret { "yes" } else { "no" }.into(),
                        c.workspace.clone(),
                    ]),
                )
            );
            Ok(())
        }
        ChannelsCommand::Add(args) => {
            let json = args.json;
            let channel = channel_request(*args)?;
            let added = client
                .create_alert_channel(CreateAlertChannelRequest {
                    channel: Some(channel),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if json {
                return display::print_json(&ChannelJson::from(&added), "the alert channel");
            }
            println!(
                "added {} channel {} in workspace {} ({})",
                added.kind,
                added.name,
                added.workspace,
                destination(&added)
            );
            Ok(())
        }
        ChannelsCommand::Remove { name } => {
            client
                .delete_alert_channel(DeleteAlertChannelRequest {
                    channel: name.clone(),
                })
                .await
                .map_err(call_failed)?;
            println!("removed alert channel {name}");
            Ok(())
        }
        ChannelsCommand::Test { name } => {
            let answer = client
                .test_alert_channel(TestAlertChannelRequest {
                    channel: name.clone(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            anyhow::ensure!(
                answer.ok,
                "the test notification on {name} failed: {}",
                answer.error
            );
            println!("sent a test notification on {name}");
            Ok(())
        }
    }
}

/// The channel `channels add` asks for, with its secrets read from their files.
fn channel_request(args: AddChannelArgs) -> anyhow::Result<AlertChannel> {
    let mut channel = AlertChannel {
        name: args.name,
        workspace: args.workspace.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(url) = args.webhook {
        channel.kind = "webhook".into();
        channel.url = url;
        if let Some(path) = &args.secret_file {
            channel.secret = secret(path, "webhook secret")?;
        }
    } else if let Some(url) = args.slack {
        channel.kind = "slack".into();
        channel.url = url;
    } else if let Some(chat_id) = args.telegram {
        channel.kind = "telegram".into();
        channel.chat_id = chat_id;
        channel.url = args.api_url.unwrap_or_default();
        if let Some(path) = &args.bot_token_file {
            channel.secret = secret(path, "bot token")?;
        }
    } else {
        channel.kind = "email".into();
        channel.to = args.email;
        channel.from = args.from.unwrap_or_default();
        channel.smtp_url = match (args.smtp_url, &args.smtp_url_file) {
            (Some(url), _) => {
                anyhow::ensure!(
                    !url.contains('@'),
                    "an SMTP URL with a user or password goes in a file: --smtp-url-file FILE"
                );
                url
            }
            (None, Some(path)) => secret(path, "SMTP URL")?,
            (None, None) => String::new(),
        };
    }
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_like_the_rule() {
        let mut rule = AlertRule {
            kind: "metric".into(),
            metric: "cpu".into(),
            comparison: ">".into(),
            threshold: 90.0,
            for_seconds: 300,
            ..Default::default()
        };
        assert_eq!(condition(&rule), "cpu > 90 for 5m");
        rule.metric = "disk.percent".into();
        rule.instance = "/".into();
        rule.comparison = "<".into();
        rule.threshold = 2.5;
        rule.for_seconds = 0;
        assert_eq!(condition(&rule), "disk.percent{/} < 2.5 for 0s");
        rule.kind = "offline".into();
        rule.for_seconds = 120;
        assert_eq!(condition(&rule), "offline for 2m");
    }

    #[test]
    fn a_group_chat_id_is_negative() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            args: AddChannelArgs,
        }
        let parsed = <Command as clap::Parser>::try_parse_from([
            "add",
            "team",
            "--telegram",
            "-100200300",
            "--bot-token-file",
            "token.txt",
        ])
        .expect("a negative chat id parses");
        assert_eq!(parsed.args.telegram.as_deref(), Some("-100200300"));
    }

    #[test]
    fn the_history_says_how_each_channel_was_notified() {
        let mut event = AlertEvent {
            notified: false,
            ..Default::default()
        };
        assert_eq!(notified(&event), "no (cooldown)");
        event.notified = true;
        event.deliveries = vec![
            zpanel_proto::AlertDelivery {
                channel: "mail".into(),
                status: "sent".into(),
                attempts: 1,
                ..Default::default()
            },
            zpanel_proto::AlertDelivery {
                channel: "hook".into(),
                status: "pending".into(),
                attempts: 3,
                ..Default::default()
            },
        ];
        assert_eq!(notified(&event), "mail sent, hook pending (3 tries)");
    }
}

//! Alerts end to end: a real control plane evaluating every second, a real daemon sampling
//! every second, a real SMTP server (Python's aiosmtpd, writing a Maildir), an HTTP receiver
//! in this process that checks every webhook signature and records what Slack and Telegram
//! channels post to it, and a webhook on a closed port.
//! A metric rule (`processes` above a threshold, crossed both ways by starting and killing
//! `sleep` processes on this machine, which is the host) fires, resolves, fires again inside
//! its cooldown (recorded, not notified) and resolves, while the same rule selecting a label
//! the host does not have never fires; an offline rule fires when the daemon stops and
//! resolves when it is back. Also what a viewer and bad input are told.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use zpanel_tests::web::Browser;
use zpanel_tests::{Cli, ControlPlane, assert_eventually, ok, stderr, stdout};

const HOST: &str = "alert-host";
/// The host's label: the metric rule selects it, its twin selects `env=prod`.
const LABEL: &str = "env=test";
const SECRET: &str = "webhook-test-secret";
/// Where on the receiver the signed webhook posts, and where the Slack channel does.
const WEBHOOK_PATH: &str = "/alerts";
const SLACK_PATH: &str = "/slack";
/// The Telegram channel's bot token and chat.
const BOT_TOKEN: &str = "123456:test-bot-token";
const CHAT_ID: &str = "100200300";
const WAIT: Duration = Duration::from_secs(60);
/// `sleep` processes started to cross the threshold, and the margin to other processes
/// that come and go on this machine meanwhile.
const EXTRA_PROCESSES: usize = 300;
const MARGIN: usize = 150;

fn json(out: &Output, what: &str) -> Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

/// A failure with one line on stderr containing `needle`.
fn refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "should have failed: {}", stdout(out));
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// A loopback port nothing listens on (for a moment).
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

// === the SMTP server ===

/// aiosmtpd with its Maildir handler, on a free loopback port.
struct SmtpServer {
    _child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start() -> SmtpServer {
        let check = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .await
            .expect("python3 runs");
        assert!(
            check.status.success(),
            "aiosmtpd is missing: python3 -m pip install --user aiosmtpd (scripts/test installs it)"
        );
        let maildir = tempfile::Builder::new()
            .prefix("zpanel-maildir-")
            .tempdir()
            .expect("temp dir");
        let port = free_port().await;
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn aiosmtpd");
        assert_eventually!(
            TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
            Duration::from_secs(30),
            "aiosmtpd never listened on port {port}"
        );
        SmtpServer {
            _child: child,
            port,
            maildir,
        }
    }

    /// The subjects of the messages received so far.
    fn subjects(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        let mut subjects: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|message| {
                message
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            })
            .collect();
        subjects.sort();
        subjects
    }
}

// === the HTTP receiver ===

/// What the receiver got: webhook bodies with a valid signature, the JSON posted unsigned to
/// other paths (Slack's and Telegram's) by path, and how many requests it refused.
#[derive(Default)]
struct Received {
    bodies: Vec<Value>,
    unsigned: Vec<(String, Value)>,
    /// Requests on the webhook path without a valid signature, and bodies that are not JSON.
    refused: usize,
}

/// Reads one HTTP/1.1 request: its header lines and its body.
async fn read_request(stream: &mut TcpStream) -> Option<(Vec<String>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..header_end]).to_string();
    let lines: Vec<String> = head.lines().map(str::to_string).collect();
    let length: usize = lines
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = data[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Some((lines, body))
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

/// Whether `X-Zpanel-Signature` is the HMAC-SHA256 of `<timestamp>.<body>` under SECRET.
fn signed(lines: &[String], body: &[u8]) -> bool {
    let (Some(timestamp), Some(signature)) = (
        header(lines, "x-zpanel-timestamp"),
        header(lines, "x-zpanel-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Starts the receiver on a free port; answers 200 to a signed request on the webhook path
/// and to any JSON on another path, 401 otherwise.
async fn receiver() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Received::default()));
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Some((lines, body)) = read_request(&mut stream).await else {
                    return;
                };
                // `POST /path HTTP/1.1`
                let path = lines
                    .first()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or_default()
                    .to_string();
                let good = signed(&lines, &body);
                let status = {
                    let mut received = record.lock().expect("lock");
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(value) if path == WEBHOOK_PATH && good => {
                            received.bodies.push(value);
                            "200 OK"
                        }
                        Ok(value) if path != WEBHOOK_PATH => {
                            received.unsigned.push((path, value));
                            "200 OK"
                        }
                        _ => {
                            received.refused += 1;
                            "401 Unauthorized"
                        }
                    }
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, received)
}

/// The events of `rule` the receiver got, in order: `firing`, `resolved`, ...
fn webhook_events(received: &Mutex<Received>, rule: &str) -> Vec<String> {
    received
        .lock()
        .expect("lock")
        .bodies
        .iter()
        .filter(|b| b["rule"] == rule)
        .map(|b| b["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The JSON bodies posted unsigned to `path`, in order.
fn posted(received: &Mutex<Received>, path: &str) -> Vec<Value> {
    received
        .lock()
        .expect("lock")
        .unsigned
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, body)| body.clone())
        .collect()
}

/// The `text`s posted to `path` that contain `needle`, in order.
fn texts(received: &Mutex<Received>, path: &str, needle: &str) -> Vec<String> {
    posted(received, path)
        .iter()
        .filter_map(|b| b["text"].as_str())
        .filter(|text| text.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Whether `texts` are one chat message each starting with these headlines.
fn headlines(texts: &[String], expected: &[&str]) -> bool {
    texts.len() == expected.len()
        && texts
            .iter()
            .zip(expected)
            .all(|(text, headline)| text.starts_with(&format!("{headline}: ")))
}

// === the host ===

/// Processes on this machine as the daemon counts them (`/proc`'s numbered entries).
fn processes_now() -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .count()
}

/// `sleep` processes that raise the host's process count while they live.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn start() -> Sleepers {
        Sleepers(
            (0..EXTRA_PROCESSES)
                .map(|_| {
                    Command::new("sleep")
                        .arg("600")
                        .kill_on_drop(true)
                        .spawn()
                        .expect("spawn sleep")
                })
                .collect(),
        )
    }

    async fn stop(mut self) {
        for child in &mut self.0 {
            let _ = child.kill().await;
        }
    }
}

/// `zpanel alerts history --json`, parsed.
async fn history(cli: &Cli, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["alerts", "history", "--json"];
    all.extend_from_slice(args);
    let out = cli.run(&all).await;
    json(&out, "alerts history")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The states of a rule's events, oldest first.
async fn states(cli: &Cli, rule: &str) -> Vec<String> {
    let mut states: Vec<String> = history(cli, &["--rule", rule])
        .await
        .iter()
        .map(|e| e["state"].as_str().unwrap_or_default().to_string())
        .collect();
    states.reverse();
    states
}

fn delivery<'a>(event: &'a Value, channel: &str) -> &'a Value {
    event["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["channel"] == channel))
        .unwrap_or_else(|| panic!("no delivery on {channel} in {event}"))
}

async fn add_viewer(cp: &ControlPlane, admin: &Cli) -> Cli {
    ok(
        &admin
            .run(&["users", "add", "watcher", "--role", "viewer"])
            .await,
        "users add",
    );
    let token = json(
        &admin
            .run(&["api-tokens", "create", "--user", "watcher", "--json"])
            .await,
        "api-tokens create",
    );
    let viewer = Cli::new();
    ok(
        &viewer
            .run(&[
                "login",
                "--server",
                &cp.url,
                "--token",
                token["token"].as_str().expect("token"),
                "--ca-pin",
                &cp.pin,
            ])
            .await,
        "viewer login",
    );
    viewer
}

/// `zpanel alerts channels add ARGS...`, which must succeed (`what` names it if not).
async fn add_channel(cli: &Cli, args: &[&str], what: &str) {
    let mut command = vec!["alerts", "channels", "add"];
    command.extend_from_slice(args);
    ok(&cli.run(&command).await, what);
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("secret file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_fire_and_resolve_on_every_channel_kind() {
    let smtp = SmtpServer::start().await;
    let (receiver_port, received) = receiver().await;
    let closed_port = free_port().await;
    let cp = ControlPlane::start_with(&[
        "--alert-interval",
        "1s",
        "--smtp-url",
        &format!("smtp://127.0.0.1:{}", smtp.port),
        "--smtp-from",
        "zpanel@example.test",
    ])
    .await;
    let admin = cp.admin_cli().await;
    let daemon = cp
        .add_online_host_labelled(&admin, HOST, &[LABEL], &[], |daemon| {
            daemon.set_metrics_interval("1s")
        })
        .await;
    let secrets = tempfile::tempdir().expect("temp dir");

    // channels: e-mail through the server's SMTP settings, a signed webhook (its secret on
    // stdin), a signed webhook nobody listens to, Slack, and Telegram (its bot token in a
    // file, its bot API on the receiver)
    add_channel(&admin, &["mail", "--email", "ops@example.test"], "add mail").await;
    ok(
        &admin
            .run_with_stdin(
                &[
                    "alerts",
                    "channels",
                    "add",
                    "hook",
                    "--webhook",
                    &format!("http://127.0.0.1:{receiver_port}{WEBHOOK_PATH}"),
                    "--secret-file",
                    "-",
                ],
                format!("{SECRET}\n").as_bytes(),
            )
            .await,
        "add hook",
    );
    let dead_secret = write_secret(secrets.path(), "dead", "another-secret");
    add_channel(
        &admin,
        &[
            "dead",
            "--webhook",
            &format!("http://127.0.0.1:{closed_port}/"),
            "--secret-file",
            dead_secret.to_str().expect("utf-8"),
        ],
        "add dead",
    )
    .await;
    add_channel(
        &admin,
        &[
            "slack",
            "--slack",
            &format!("http://127.0.0.1:{receiver_port}{SLACK_PATH}"),
        ],
        "add slack",
    )
    .await;
    let bot_token = write_secret(secrets.path(), "bot-token", BOT_TOKEN);
    add_channel(
        &admin,
        &[
            "telegram",
            "--telegram",
            CHAT_ID,
            "--bot-token-file",
            bot_token.to_str().expect("utf-8"),
            "--api-url",
            &format!("http://127.0.0.1:{receiver_port}"),
        ],
        "add telegram",
    )
    .await;
    let telegram_path = format!("/bot{BOT_TOKEN}/sendMessage");
    let channels = json(
        &admin.run(&["alerts", "channels", "list", "--json"]).await,
        "channels list",
    );
    let hook = channels
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "hook"))
        .expect("hook listed");
    assert_eq!(hook["has_secret"], true);
    assert!(
        hook.get("secret").is_none(),
        "a secret was answered: {hook}"
    );
    let table = stdout(&admin.run(&["alerts", "channels", "list"]).await);
    assert!(
        !table.contains(SECRET) && !table.contains(BOT_TOKEN),
        "{table}"
    );

    // a test notification is signed too
    let tested = ok(
        &admin.run(&["alerts", "channels", "test", "hook"]).await,
        "test",
    );
    assert!(tested.contains("sent a test notification"), "{tested}");
    assert_eq!(webhook_events(&received, "test"), ["test"]);
    ok(
        &admin.run(&["alerts", "channels", "test", "telegram"]).await,
        "test telegram",
    );
    let tests = posted(&received, &telegram_path);
    assert_eq!(tests.len(), 1, "{tests:?}");
    assert_eq!(tests[0]["chat_id"], CHAT_ID);
    assert_eq!(
        tests[0]["text"],
        "[zpanel] TEST notification: a test notification on channel telegram"
    );
    refused(
        &admin.run(&["alerts", "channels", "test", "dead"]).await,
        "the test notification on dead failed",
    );

    // what a viewer and bad input are told
    let viewer = add_viewer(&cp, &admin).await;
    refused(
        &viewer
            .run(&[
                "alerts", "create", "sneaky", "--metric", "cpu", "--above", "1",
            ])
            .await,
        "role viewer may not manage alert rules and notification channels",
    );
    for (args, told) in [
        (
            &["--metric", "cpu.total", "--above", "1"][..],
            "unknown metric \"cpu.total\"; metrics are cpu, cpu.core, load1, load5, load15",
        ),
        (&["--metric", "cpu", "--above", "NaN"], "not NaN"),
        (
            &["--offline", "1m", "--channel", "pager"],
            "unknown channel \"pager\"",
        ),
    ] {
        let mut create = vec!["alerts", "create", "bad"];
        create.extend_from_slice(args);
        refused(&admin.run(&create).await, told);
    }

    // the metric rule: more processes than now plus a margin, for 2 s, on hosts labelled
    // env=test; its twin on env=prod hosts, which this one is not
    let threshold = processes_now() + MARGIN;
    let created = ok(
        &admin
            .run(&[
                "alerts",
                "create",
                "many-processes",
                "--metric",
                "processes",
                "--above",
                &threshold.to_string(),
                "--for",
                "2s",
                "--severity",
                "critical",
                "--selector",
                LABEL,
                "--channel",
                "mail",
                "--channel",
                "hook",
                "--channel",
                "dead",
                "--channel",
                "slack",
                "--channel",
                "telegram",
                "--cooldown",
                "1h",
            ])
            .await,
        "create rule",
    );
    assert!(
        created.contains(&format!("processes > {threshold} for 2s")),
        "{created}"
    );
    ok(
        &admin
            .run(&[
                "alerts",
                "create",
                "prod-processes",
                "--metric",
                "processes",
                "--above",
                &threshold.to_string(),
                "--for",
                "2s",
                "--selector",
                "env=prod",
            ])
            .await,
        "create the env=prod rule",
    );
    refused(
        &admin
            .run(&["alerts", "create", "many-processes", "--offline", "1m"])
            .await,
        "already exists",
    );
    let listed = ok(&viewer.run(&["alerts", "list"]).await, "viewer lists rules");
    let header = listed.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "KIND",
        "CONDITION",
        "SEVERITY",
        "SELECTOR",
        "CHANNELS",
    ] {
        assert!(header.contains(column), "{listed}");
    }
    assert!(listed.contains("mail,hook,dead,slack,telegram"), "{listed}");
    assert!(
        listed.contains(LABEL) && listed.contains("env=prod"),
        "{listed}"
    );

    let sleepers = Sleepers::start();
    assert_eventually!(
        states(&admin, "many-processes").await == ["firing"],
        WAIT,
        "the rule never fired: {:?}",
        history(&admin, &[]).await
    );
    sleepers.stop().await;
    assert_eventually!(
        states(&admin, "many-processes").await == ["firing", "resolved"],
        WAIT,
        "the rule never resolved: {:?}",
        history(&admin, &[]).await
    );
    // (both rules are evaluated in the same passes, and many went by while it was firing)
    let prod = history(&admin, &["--rule", "prod-processes"]).await;
    assert!(prod.is_empty(), "a rule for env=prod fired: {prod:?}");
    assert_eventually!(
        smtp.subjects()
            == [
                "[zpanel] FIRING critical many-processes on alert-host",
                "[zpanel] RESOLVED critical many-processes on alert-host",
            ],
        WAIT,
        "e-mails: {:?}",
        smtp.subjects()
    );
    assert_eventually!(
        webhook_events(&received, "many-processes") == ["firing", "resolved"],
        WAIT,
        "webhooks: {:?}",
        received.lock().expect("lock").bodies
    );
    let chat = [
        "[zpanel] FIRING critical many-processes on alert-host",
        "[zpanel] RESOLVED critical many-processes on alert-host",
    ];
    assert_eventually!(
        headlines(&texts(&received, SLACK_PATH, "many-processes"), &chat),
        WAIT,
        "slack: {:?}",
        posted(&received, SLACK_PATH)
    );
    assert_eventually!(
        headlines(&texts(&received, &telegram_path, "many-processes"), &chat),
        WAIT,
        "telegram: {:?}",
        received.lock().expect("lock").unsigned
    );
    assert!(
        posted(&received, &telegram_path)
            .iter()
            .all(|b| b["chat_id"] == CHAT_ID),
        "{:?}",
        posted(&received, &telegram_path)
    );
    let firing = received
        .lock()
        .expect("lock")
        .bodies
        .iter()
        .find(|b| b["rule"] == "many-processes")
        .cloned()
        .expect("the firing webhook");
    assert_eq!(firing["event"], "firing");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["host"]["name"], HOST);
    assert_eq!(firing["host"]["id"], daemon.host_id.as_str());
    assert_eq!(firing["metric"], "processes");
    assert_eq!(firing["comparison"], ">");
    assert_eq!(firing["threshold"].as_f64(), Some(threshold as f64));
    assert_eq!(firing["for_seconds"], 2);
    assert!(firing["value"].as_f64().unwrap_or_default() > threshold as f64);

    // again inside the cooldown: recorded, not notified
    let sleepers = Sleepers::start();
    assert_eventually!(
        states(&admin, "many-processes").await == ["firing", "resolved", "firing"],
        WAIT,
        "the rule never fired again"
    );
    let active = history(&admin, &["--active"]).await;
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["notified"], false);
    assert_eq!(active[0]["deliveries"], Value::Array(Vec::new()));
    sleepers.stop().await;
    assert_eventually!(
        states(&admin, "many-processes").await.len() == 4,
        WAIT,
        "the second alert never resolved"
    );
    let events = history(&admin, &["--rule", "many-processes"]).await;
    assert_eq!(events[0]["state"], "resolved");
    assert_eq!(events[0]["notified"], false);

    // the channels that work were delivered at once; the dead one is retried and recorded
    let first = events.last().expect("first event");
    for channel in ["mail", "hook", "slack", "telegram"] {
        assert_eq!(delivery(first, channel)["status"], "sent", "{first}");
        assert_eq!(delivery(first, channel)["attempts"], 1, "{first}");
    }
    assert_eventually!(
        history(&admin, &["--rule", "many-processes"])
            .await
            .last()
            .is_some_and(|e| delivery(e, "dead")["attempts"].as_u64() >= Some(2)),
        WAIT,
        "the dead channel was not retried"
    );
    let events = history(&admin, &["--rule", "many-processes"]).await;
    let dead = delivery(events.last().expect("first event"), "dead");
    assert_eq!(dead["status"], "pending", "{dead}");
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("error sending request")),
        "{dead}"
    );
    assert_eq!(
        smtp.subjects().len(),
        2,
        "no e-mail inside the cooldown: {:?}",
        smtp.subjects()
    );
    assert_eq!(webhook_events(&received, "many-processes").len(), 2);
    assert_eq!(texts(&received, SLACK_PATH, "many-processes").len(), 2);
    assert_eq!(texts(&received, &telegram_path, "many-processes").len(), 2);

    // the offline rule: the daemon stops, then comes back
    ok(
        &admin
            .run(&[
                "alerts",
                "create",
                "host-down",
                "--offline",
                "2s",
                "--channel",
                "hook",
            ])
            .await,
        "create offline rule",
    );
    let mut daemon = daemon;
    daemon.kill().await;
    assert_eventually!(
        webhook_events(&received, "host-down") == ["firing"],
        WAIT,
        "no firing of the offline rule: {:?}",
        history(&admin, &[]).await
    );
    let daemon = daemon.start().await;
    assert_eventually!(
        webhook_events(&received, "host-down") == ["firing", "resolved"],
        WAIT,
        "no resolve of the offline rule: {:?}",
        history(&admin, &[]).await
    );
    let table = ok(
        &admin.run(&["alerts", "history", "--host", HOST]).await,
        "history table",
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("WHEN"), "{table}");
    assert!(
        lines[1].contains("host-down") && lines[1].contains("back online"),
        "{table}"
    );
    assert!(table.contains("no (cooldown)"), "{table}");
    assert_eq!(
        received.lock().expect("lock").refused,
        0,
        "the receiver refused a request (a webhook without a valid signature?)"
    );

    // the same over HTTP: the history, a rule created and deleted, a channel without secrets
    let web = Browser::with_token(&cp, &cp.admin_token);
    let answer = web
        .call("GET", "/api/v1/alerts/events?rule=host-down&limit=1", None)
        .await
        .expect("events");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let latest = answer.json();
    assert_eq!(latest.as_array().map(Vec::len), Some(1), "{latest}");
    assert_eq!(latest[0]["state"], "resolved");
    assert_eq!(latest[0]["summary"], "back online");
    assert_eq!(delivery(&latest[0], "hook")["status"], "sent");
    let rule = serde_json::json!({
        "name": "busy", "metric": "load1", "comparison": ">=", "threshold": 64,
        "for_seconds": 60, "selector": {"env": "prod"}, "channels": ["mail"],
    });
    let answer = web
        .call("POST", "/api/v1/alerts/rules", Some(&rule))
        .await
        .expect("create over HTTP");
    assert_eq!(answer.status, 201, "{}", answer.body);
    let created = answer.json();
    assert_eq!(
        (
            &created["kind"],
            &created["severity"],
            &created["cooldown_seconds"],
            &created["workspace"]
        ),
        (
            &Value::from("metric"),
            &Value::from("warning"),
            &Value::from(300),
            &Value::from("default")
        )
    );
    let answer = web
        .call("DELETE", "/api/v1/alerts/rules/busy", None)
        .await
        .expect("delete over HTTP");
    assert_eq!(answer.status, 204, "{}", answer.body);
    let channels = web
        .call("GET", "/api/v1/alerts/channels", None)
        .await
        .expect("channels")
        .body;
    assert!(channels.contains("\"has_secret\":true"), "{channels}");
    assert!(!channels.contains(SECRET), "{channels}");

    // a channel in use stays; deleting the rule frees it
    refused(
        &admin.run(&["alerts", "channels", "remove", "hook"]).await,
        "used by rule host-down, many-processes",
    );
    ok(
        &admin.run(&["alerts", "delete", "host-down"]).await,
        "delete rule",
    );
    drop(daemon);
}

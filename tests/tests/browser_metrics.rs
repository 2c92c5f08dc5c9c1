//! The metrics and alerts pages in a browser: Chromium (driven by `tests/browser/metrics.mjs`)
//! sees a host that samples every second in the fleet overview with its CPU, a sparkline and
//! its label chips, filters the overview by a label typed and by a chip clicked and sorts it
//! by a column; sees the host's CPU chart drawn with points that grow as live samples come (a
//! screenshot), its top processes and the 24 h range; then creates a webhook channel, tests
//! it, and creates a rule through the forms, and a viewer sees the rules without a form. This
//! side answers whether the control plane really holds what the page created. Screenshots
//! land in `target/debug/browser/`.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use zpanel_tests::ControlPlane;
use zpanel_tests::browser::{BrowserScript, artifacts_dir};
use zpanel_tests::web::Browser;

/// Longest silence from the script between two commands (a step waits up to 60 s).
const SCRIPT_SILENCE: Duration = Duration::from_secs(180);
const HOST: &str = "metrics-host";
/// The host's labels; the script filters the fleet overview by the first.
const LABELS: [&str; 2] = ["env=test", "role=metrics"];
const VIEWER: &str = "watcher";
const VIEWER_PASSWORD: &str = "watcher-password-1";

#[tokio::test]
async fn a_browser_charts_live_metrics_and_manages_alerts() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp
        .add_online_host_labelled(&cli, HOST, &LABELS, &[], |daemon| {
            daemon.set_metrics_interval("1s")
        })
        .await;
    let admin = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .expect("admin login");
    let added = admin
        .call(
            "POST",
            "/api/v1/users",
            Some(&json!({"name": VIEWER, "role": "viewer", "password": VIEWER_PASSWORD})),
        )
        .await
        .expect("add the viewer");
    assert_eq!(added.status, 200, "adding the viewer: {}", added.body);

    // A port nothing listens on: the channel's test notification fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let webhook_url = format!(
        "http://127.0.0.1:{}/hook",
        closed.local_addr().expect("port").port()
    );
    drop(closed);

    std::fs::create_dir_all(artifacts_dir()).expect("artifacts dir");
    let screenshot = artifacts_dir().join("metrics.png");
    let url = cp.url.clone();
    let password = cp.admin_password();
    let mut browser = BrowserScript::spawn(
        "metrics.mjs",
        &[
            ("ZPANEL_URL", &url),
            ("ZPANEL_PASSWORD", &password),
            ("ZPANEL_HOST", HOST),
            ("ZPANEL_LABELS", &LABELS.join(" ")),
            ("ZPANEL_VIEWER", VIEWER),
            ("ZPANEL_VIEWER_PASSWORD", VIEWER_PASSWORD),
            ("ZPANEL_WEBHOOK_URL", &webhook_url),
            (
                "ZPANEL_SCREENSHOT",
                screenshot.to_str().expect("utf-8 path"),
            ),
        ],
    )
    .expect("the browser script starts");

    let failure = browser
        .serve(SCRIPT_SILENCE, |command| stored(&admin, command))
        .await;
    browser
        .assert_passed("the browser metrics test", failure, &cp)
        .await;
}

/// The answer to `rule NAME` or `channel NAME`: the control plane's JSON of it on one line,
/// or "missing".
async fn stored(admin: &Browser, command: String) -> anyhow::Result<String> {
    let (kind, name) = command
        .split_once(' ')
        .context("the script sent a command without a name")?;
    let path = match kind {
        "rule" => "/api/v1/alerts/rules",
        "channel" => "/api/v1/alerts/channels",
        _ => anyhow::bail!("unknown command from the script: {command}"),
    };
    let answer = admin.call("GET", path, None).await?;
    anyhow::ensure!(
        answer.status == 200,
        "GET {path}: {} {}",
        answer.status,
        answer.body
    );
    let found = answer
        .json()
        .as_array()
        .and_then(|all| all.iter().find(|x| x["name"] == name).cloned());
    Ok(found.map_or_else(|| "missing".to_string(), |x| x.to_string()))
}

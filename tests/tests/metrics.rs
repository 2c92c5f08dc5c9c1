//! Metrics end to end: a real daemon sampling every second into a real control plane. The
//! history answers CPU, memory and disk points; the control plane is killed for about 15 s
//! while the daemon keeps running, and after the restart every second of the outage has a
//! raw point (the daemon held them and sent them again); `/metrics/hosts` answers the
//! Prometheus text with the host's name and refuses a caller without a token; `zpanel
//! metrics` prints a table and JSON, and `zpanel top --once` lists a process this test
//! started.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use zpanel_tests::{Cli, ControlPlane, assert_eventually, http_get, ok, stderr};

const HOST: &str = "metrics-host";
const WAIT: Duration = Duration::from_secs(60);
/// How long the control plane stays down.
const OUTAGE: Duration = Duration::from_secs(15);

/// `zpanel metrics HOST ARGS... --json`, parsed.
async fn history(cli: &Cli, args: &[&str]) -> Value {
    let mut all = vec!["metrics", HOST, "--json"];
    all.extend_from_slice(args);
    let out = cli.run(&all).await;
    serde_json::from_str(&ok(&out, "metrics --json")).expect("metrics --json is JSON")
}

/// The times of a metric's points (host-wide, or its first instance).
fn point_times(answer: &Value, metric: &str) -> Vec<i64> {
    answer["series"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|series| series["metric"] == metric)
        .and_then(|series| series["points"].as_array())
        .map(|points| points.iter().filter_map(|p| p[0].as_i64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn samples_are_stored_queried_and_survive_a_control_plane_outage() {
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp
        .add_online_host_with(&cli, HOST, &[], |daemon| daemon.set_metrics_interval("1s"))
        .await;
    let mut sleeper = Command::new("sleep")
        .arg("987")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sleep starts");
    let sleeper_pid = sleeper.id().expect("sleep's pid").to_string();

    // Samples arrive and the history answers them.
    assert_eventually!(
        {
            let answer = history(&cli, &["--since", "5m"]).await;
            [
                "cpu",
                "memory.used",
                "memory.percent",
                "disk.read",
                "uptime",
            ]
            .iter()
            .all(|metric| !point_times(&answer, metric).is_empty())
        },
        WAIT,
        "no cpu, memory and disk points from {HOST}"
    );
    let answer = history(&cli, &["--since", "5m", "--metric", "memory"]).await;
    assert_eq!(answer["host_name"], HOST);
    assert_eq!(answer["resolution"], "raw");
    assert!(
        answer["series"]
            .as_array()
            .expect("series")
            .iter()
            .all(|s| s["metric"]
                .as_str()
                .is_some_and(|m| m.starts_with("memory."))),
        "only memory.*: {answer}"
    );
    let table = ok(
        &cli.run(&["metrics", HOST, "--since", "5m"]).await,
        "metrics",
    );
    let header = table.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["METRIC", "INSTANCE", "LAST", "MIN", "AVG", "MAX"]
    );
    let cpu_row = table
        .lines()
        .find(|line| line.starts_with("cpu "))
        .unwrap_or_else(|| panic!("no cpu row: {table}"));
    assert!(cpu_row.ends_with('%'), "cpu in percent: {cpu_row}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("memory.total") && l.contains("iB")),
        "memory in binary units: {table}"
    );

    // The Prometheus exposition: the host by name, with a token only.
    let token_header = format!("Bearer {}", cp.admin_token);
    let scrape = zpanel_tests::web::request(
        &cp.url,
        &cp.pin,
        "GET",
        "/metrics/hosts",
        &[("Authorization", &token_header)],
        None,
    )
    .await
    .expect("scrape");
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    let up = format!("zpanel_host_up{{host=\"{HOST}\",");
    assert!(scrape.body.contains(&up), "{}", scrape.body);
    assert!(
        scrape
            .body
            .lines()
            .any(|l| l.starts_with(&format!("zpanel_host_cpu_percent{{host=\"{HOST}\","))),
        "{}",
        scrape.body
    );
    let anonymous =
        zpanel_tests::web::request(&cp.url, &cp.pin, "GET", "/metrics/hosts", &[], None)
            .await
            .expect("anonymous scrape");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    // The top processes include the sleep started above.
    let top = ok(
        &cli.run(&["top", HOST, "--once", "--sort", "memory", "--limit", "500"])
            .await,
        "top --once",
    );
    assert!(top.contains("load") && top.contains("memory"), "{top}");
    assert!(
        top.lines().any(
            |l| l.split_whitespace().next() == Some(sleeper_pid.as_str())
                && l.contains("sleep 987")
        ),
        "sleep {sleeper_pid} not listed: {top}"
    );

    // The control plane goes away for a while; the daemon keeps sampling.
    let stored_before: i64 = point_times(
        &history(&cli, &["--since", "1m", "--step", "1s"]).await,
        "cpu",
    )
    .last()
    .copied()
    .expect("a cpu point");
    cp.kill().await;
    tokio::time::sleep(OUTAGE).await;
    cp.restart().await;
    let restarted = zpanel_shared::unix_now();
    assert_eventually!(
        cli.host_status(HOST).await.as_deref() == Some("online"),
        WAIT,
        "{HOST} did not come back"
    );
    let since = (stored_before - 2).to_string();
    let until = (restarted + 2).to_string();
    let window = [
        "--since",
        since.as_str(),
        "--until",
        until.as_str(),
        "--step",
        "1s",
        "--metric",
        "cpu",
    ];
    assert_eventually!(
        point_times(&history(&cli, &window).await, "cpu").last() >= Some(&(restarted + 1)),
        WAIT,
        "the samples after the restart never arrived"
    );
    let seconds: BTreeSet<i64> = point_times(&history(&cli, &window).await, "cpu")
        .into_iter()
        .collect();
    let missing: Vec<i64> = (stored_before..=restarted)
        .filter(|at| !seconds.contains(at))
        .collect();
    assert!(
        missing.len() <= 1,
        "seconds without a point across the outage ({stored_before}..={restarted}): {missing:?}"
    );
    assert!(
        cp.metrics()
            .await
            .contains("zpanel_metric_samples_dropped_total{reason=\"future\"} 0"),
        "{}",
        cp.metrics().await
    );

    // Errors are one line.
    let unknown = cli.run(&["metrics", "no-such-host"]).await;
    assert!(!unknown.status.success());
    assert_eq!(
        stderr(&unknown).trim().lines().count(),
        1,
        "{}",
        stderr(&unknown)
    );
    assert!(
        stderr(&unknown).contains("unknown host"),
        "{}",
        stderr(&unknown)
    );
    let page = http_get(&cp.url, "/metrics", &cp.pin)
        .await
        .expect("/metrics");
    assert!(
        page.contains("zpanel_metric_batches_refused_total"),
        "{page}"
    );
    let _ = sleeper.kill().await;
}

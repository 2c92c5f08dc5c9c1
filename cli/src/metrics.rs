//! `metrics HOST`: a host's metrics over a range as a table (the last value, minimum,
//! average and maximum of each series, in its unit), or the whole answer as JSON. The units
//! here are also what `top` shows.

use anyhow::Context;
use zpanel_proto::{MetricSeries, QueryMetricsRequest, QueryMetricsResponse};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display;
use crate::files::progress::human_bytes;

pub struct MetricsOptions {
    /// Unix seconds; `until` 0 is now.
    pub since: i64,
    pub until: i64,
    /// Seconds per point; 0 lets the control plane choose.
    pub step: u32,
    pub metrics: Vec<String>,
    pub json: bool,
}

/// A value in its metric's unit: percent, bytes, bytes per second, seconds of uptime,
/// a load or a count.
pub fn format_value(metric: &str, value: f64) -> String {
    match metric {
        "cpu" | "cpu.core" => format!("{value:.1}%"),
        m if m.ends_with(".percent") => format!("{value:.1}%"),
        "disk.read" | "disk.write" | "net.rx" | "net.tx" => format!("{}/s", human_bytes(value)),
        m if m.starts_with("memory.") || m.starts_with("swap.") || m.starts_with("disk.") => {
            human_bytes(value)
        }
        "uptime" => uptime(value as u64),
        "load1" | "load5" | "load15" => format!("{value:.2}"),
        _ => format!("{value:.0}"),
    }
}

/// Seconds as days, hours and minutes ("3d 4h", "5h 12m", "42m", "12s").
pub fn uptime(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// One table row: METRIC, INSTANCE, LAST, MIN, AVG, MAX (the average of the points).
fn row(series: &MetricSeries) -> [String; 6] {
    let unit = |value: f64| format_value(&series.metric, value);
    let points = &series.points;
    let (last, min, avg, max) = match points.last() {
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
        Some(last) => {
            let min = points.iter().map(|p| p.min).fold(f64::INFINITY, f64::min);
            let max = points
                .iter()
                .map(|p| p.max)
                .fold(f64::NEG_INFINITY, f64::max);
            let avg = points.iter().map(|p| p.avg).sum::<f64>() / points.len() as f64;
            (unit(last.avg), unit(min), unit(avg), unit(max))
        }
    };
    [
        series.metric.clone(),
        display::cell(&series.instance),
        last,
        min,
        avg,
        max,
    ]
}

fn table(answer: &QueryMetricsResponse) -> String {
    display::table(
        ["METRIC", "INSTANCE", "LAST", "MIN", "AVG", "MAX"],
        answer.series.iter().map(row),
    )
}

fn json(answer: &QueryMetricsResponse) -> serde_json::Value {
    let series: Vec<serde_json::Value> = answer
        .series
        .iter()
        .map(|s| {
            let points: Vec<(i64, f64, f64, f64)> = s
                .points
                .iter()
                .map(|p| (p.at, p.avg, p.min, p.max))
                .collect();
            serde_json::json!({"metric": s.metric, "instance": s.instance, "points": points})
        })
        .collect();
    serde_json::json!({
        "host": answer.host_id,
        "host_name": answer.host_name,
        "since": answer.since,
        "until": answer.until,
        "step": answer.step,
        "resolution": answer.resolution,
        "series": series,
    })
}

/// `metrics HOST [--since] [--until] [--step] [--metric]... [--json]`.
pub async fn metrics(
    settings: &Settings,
    host: &str,
    options: MetricsOptions,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let answer = client
        .query_metrics(QueryMetricsRequest {
            host: host.into(),
            metrics: options.metrics,
            since: options.since,
            until: options.until,
            step: options.step,
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    if options.json {
        return display::print_json(&json(&answer), "metrics");
    }
    let empty = answer.series.iter().all(|s| s.points.is_empty());
    if empty {
        println!(
            "no samples from host {} between {} and {}",
            answer.host_name,
            display::rfc3339(answer.since),
            display::rfc3339(answer.until)
        );
        return Ok(());
    }
    print!("{}", table(&answer));
    Ok(())
}

/// The step option in whole seconds.
pub fn step_seconds(step: Option<std::time::Duration>) -> anyhow::Result<u32> {
    step.map_or(Ok(0), |step| {
        u32::try_from(step.as_secs().max(1)).context("the step is too long")
    })
}

#[cfg(test)]
mod tests {
    use zpanel_proto::MetricPoint;

    use super::*;

    #[test]
    fn values_read_in_their_units() {
        assert_eq!(format_value("cpu", 12.345), "12.3%");
        assert_eq!(format_value("disk.percent", 51.0), "51.0%");
        assert_eq!(
            format_value("memory.used", 3.0 * 1024.0 * 1024.0 * 1024.0),
            "3.0 GiB"
        );
        assert_eq!(format_value("disk.total", 2048.0), "2.0 KiB");
        assert_eq!(format_value("net.rx", 1536.0), "1.5 KiB/s");
        assert_eq!(format_value("load1", 0.4212), "0.42");
        assert_eq!(
            format_value("uptime", 3.0 * 86400.0 + 4.0 * 3600.0 + 5.0),
            "3d 4h"
        );
        assert_eq!(format_value("processes", 123.0), "123");
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(5 * 3600 + 12 * 60), "5h 12m");
    }

    #[test]
    fn rows_summarise_the_points() {
        let point = |at, avg, min, max| MetricPoint { at, avg, min, max };
        let series = MetricSeries {
            metric: "cpu".into(),
            instance: String::new(),
            points: vec![point(0, 10.0, 5.0, 20.0), point(60, 30.0, 25.0, 40.0)],
        };
        assert_eq!(
            row(&series),
            ["cpu", "-", "30.0%", "5.0%", "20.0%", "40.0%"]
        );
    }

    #[test]
    fn times_are_durations_ago_unix_seconds_or_rfc3339() {
        let now = 1_800_000_000;
        let parse_time = crate::docker::parse::since_at;
        assert_eq!(parse_time("5m", now).unwrap(), now - 300);
        assert_eq!(parse_time("1700000000", now).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("1970-01-01T00:01:00Z", now).unwrap(), 60);
        assert!(parse_time("yesterday", now).is_err());
    }
}

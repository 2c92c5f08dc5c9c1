//! `stats`: CPU, memory, network and block I/O of containers (the running ones, or those
//! named), as one sample (`--no-stream`) or as a table redrawn every second until Ctrl-C;
//! `--json` prints an array of one sample each, or one JSON line per sample as they come.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use zpanel_proto::{
    ContainerRef, ContainerStats, ContainerSummary, DockerStatsWatch, DockerWatchRequest,
    docker_reply, docker_request, docker_update, docker_watch_request,
};

use super::{containers, request, short_id, unexpected};
use crate::client::{self, Client, status_message};
use crate::config::Settings;
use crate::display;
use crate::files::progress::human_bytes;

/// How often the live table is redrawn.
const REDRAW_EVERY: Duration = Duration::from_secs(1);

pub struct StatsOptions {
    /// Containers by id, id prefix or name; empty: every running one.
    pub containers: Vec<String>,
    /// Keep sampling until interrupted.
    pub stream: bool,
    pub json: bool,
}

/// A container whose stats are shown.
#[derive(Debug, Clone)]
struct Target {
    /// As the request names it.
    ask: String,
    id: String,
    name: String,
}

impl Target {
    /// The container `ask` names, as `listing` knows it (it may not).
    fn find(ask: &str, listing: &[ContainerSummary]) -> Target {
        let known = listing
            .iter()
            .find(|c| c.id == ask || c.name == ask)
            .or_else(|| listing.iter().find(|c| c.id.starts_with(ask)));
        Target {
            ask: ask.into(),
            id: known.map_or_else(|| ask.into(), |c| c.id.clone()),
            name: known.map(|c| c.name.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize)]
struct StatsJson<'a> {
    container: &'a str,
    name: &'a str,
    read_at_ms: i64,
    cpu_percent: f64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    pids: u32,
}

impl<'a> StatsJson<'a> {
    fn new(target: &'a Target, s: &ContainerStats) -> Self {
        StatsJson {
            container: &target.id,
            name: &target.name,
            read_at_ms: s.read_at_ms,
            cpu_percent: s.cpu_percent,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            net_rx_bytes: s.net_rx_bytes,
            net_tx_bytes: s.net_tx_bytes,
            block_read_bytes: s.block_read_bytes,
            block_write_bytes: s.block_write_bytes,
            pids: s.pids,
        }
    }
}

/// `stats [--no-stream] [--json] [C...]`: the exit code of `zpanel` (1 when a container's
/// stats could not be read).
pub async fn stats(settings: &Settings, host: &str, options: StatsOptions) -> anyhow::Result<i32> {
    let mut client = client::connect(settings).await?;
    let named = !options.containers.is_empty();
    let listing = containers::list(&mut client, host, named).await?;
    let asks: Vec<&str> = if named {
        options.containers.iter().map(String::as_str).collect()
    } else {
        listing.iter().map(|c| c.id.as_str()).collect()
    };
    let targets: Vec<Target> = asks.iter().map(|ask| Target::find(ask, &listing)).collect();
    if options.stream && !targets.is_empty() {
        live(client, host, targets, options.json).await
    } else {
        once(&mut client, host, &targets, options.json).await
    }
}

/// One sample of each.
async fn once(
    client: &mut Client,
    host: &str,
    targets: &[Target],
    json: bool,
) -> anyhow::Result<i32> {
    let mut samples = Vec::new();
    let mut failed = false;
    for target in targets {
        let op = docker_request::Op::Stats(ContainerRef {
            container: target.ask.clone(),
        });
        match request(client, host, op).await {
            Ok(docker_reply::Result::Stats(sample)) => samples.push((target, sample)),
            Ok(_) => return Err(unexpected("a stats sample")),
            Err(e) => {
                eprintln!("zpanel: {e:#}");
                failed = true;
            }
        }
    }
    if json {
        let rows: Vec<StatsJson> = samples.iter().map(|(t, s)| StatsJson::new(t, s)).collect();
        display::print_json(&rows, "stats")?;
    } else {
        print!("{}", table(samples.iter().map(|(t, s)| (*t, s))));
    }
    Ok(i32::from(failed))
}

/// What one watch reports to the live table.
enum Watched {
    Sample(ContainerStats),
    /// The container is gone, or the watch failed (with the reason).
    Ended(Option<String>),
}

/// Samples of each as they come, until every watch ended (or Ctrl-C).
async fn live(client: Client, host: &str, targets: Vec<Target>, json: bool) -> anyhow::Result<i32> {
    let (tx, mut updates) = mpsc::channel(64);
    for (index, target) in targets.iter().enumerate() {
        let request = DockerWatchRequest {
            host: host.into(),
            what: Some(docker_watch_request::What::Stats(DockerStatsWatch {
                container: target.ask.clone(),
            })),
        };
        tokio::spawn(watch(client.clone(), request, index, tx.clone()));
    }
    drop(tx);
    let clear = !json && std::io::stdout().is_terminal();
    let mut latest: BTreeMap<usize, ContainerStats> = BTreeMap::new();
    let mut failed = false;
    let mut redraw = tokio::time::interval(REDRAW_EVERY);
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Some((index, Watched::Sample(sample))) => {
                    if json {
                        let line = serde_json::to_string(&StatsJson::new(&targets[index], &sample))?;
                        println!("{line}");
                    }
                    latest.insert(index, sample);
                }
                Some((index, Watched::Ended(reason))) => {
                    latest.remove(&index);
                    if let Some(reason) = reason {
                        eprintln!("zpanel: {reason}");
                        failed = true;
                    }
                }
                None => break,
            },
            _ = redraw.tick(), if !json && !latest.is_empty() => {
                let rows = latest.iter().map(|(&index, sample)| (&targets[index], sample));
                let text = table(rows);
                if clear {
                    print!("\x1b[H\x1b[2J{text}");
                } else {
                    print!("{text}");
                }
            }
        }
    }
    Ok(i32::from(failed))
}

/// Relays one container's samples until its watch ends.
async fn watch(
    mut client: Client,
    request: DockerWatchRequest,
    index: usize,
    tx: mpsc::Sender<(usize, Watched)>,
) {
    let ended = match client.docker_watch(request).await {
        Err(status) => Some(status_message(&status)),
        Ok(response) => {
            let mut updates = response.into_inner();
            loop {
                match updates.message().await {
                    Ok(Some(update)) => {
                        if let Some(docker_update::Update::Stats(sample)) = update.update
                            && tx.send((index, Watched::Sample(sample))).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(status) => break Some(status_message(&status)),
                }
            }
        }
    };
    let _ = tx.send((index, Watched::Ended(ended))).await;
}

fn table<'a>(rows: impl Iterator<Item = (&'a Target, &'a ContainerStats)>) -> String {
    let header = [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ];
    let pair = |a: u64, b: u64| format!("{} / {}", human_bytes(a as f64), human_bytes(b as f64));
    display::table(
        header,
        rows.map(|(target, s)| {
            let memory_percent = if s.memory_limit_bytes > 0 {
                s.memory_bytes as f64 * 100.0 / s.memory_limit_bytes as f64
            } else {
                0.0
            };
            [
                short_id(&target.id),
                display::cell(&target.name),
                format!("{:.2}%", s.cpu_percent),
                pair(s.memory_bytes, s.memory_limit_bytes),
                format!("{memory_percent:.2}%"),
                pair(s.net_rx_bytes, s.net_tx_bytes),
                pair(s.block_read_bytes, s.block_write_bytes),
                s.pids.to_string(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_found_by_id_prefix_or_name() {
        let listing = [ContainerSummary {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            ..ContainerSummary::default()
        }];
        for ask in ["web", "0123", "0123456789abcdef"] {
            let target = Target::find(ask, &listing);
            assert_eq!(
                (target.id.as_str(), target.name.as_str()),
                ("0123456789abcdef", "web")
            );
            assert_eq!(target.ask, ask);
        }
        let unknown = Target::find("db", &listing);
        assert_eq!((unknown.id.as_str(), unknown.name.as_str()), ("db", ""));
    }

    #[test]
    fn the_table_reads_like_docker_stats() {
        let target = Target {
            ask: "web".into(),
            id: "0123456789abcdef".into(),
            name: "web".into(),
        };
        let sample = ContainerStats {
            cpu_percent: 12.345,
            memory_bytes: 16 << 20,
            memory_limit_bytes: 64 << 20,
            net_rx_bytes: 1536,
            net_tx_bytes: 512,
            block_read_bytes: 0,
            block_write_bytes: 2 << 20,
            pids: 3,
            ..ContainerStats::default()
        };
        assert_eq!(
            table(std::iter::once((&target, &sample))),
            "CONTAINER ID  NAME  CPU %   MEM USAGE / LIMIT    MEM %   NET I/O          BLOCK I/O      PIDS\n\
             0123456789ab  web   12.35%  16.0 MiB / 64.0 MiB  25.00%  1.5 KiB / 512 B  0 B / 2.0 MiB  3\n"
        );
    }
}

//! `top HOST`: the host now (CPU, load, memory, swap, uptime, processes) and its top
//! processes, redrawn in place every interval on a terminal until Ctrl-C or `q`; printed
//! once with `--once` or when stdout is not a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use zpanel_proto::{ListProcessesRequest, MetricSample, ProcessListing, ProcessSort};

use crate::client::{self, Client, call_failed};
use crate::config::Settings;
use crate::display;
use crate::files::progress::human_bytes;
use crate::metrics::{format_value, uptime};
use crate::tty::{RawMode, window_size};

pub struct TopOptions {
    pub sort: ProcessSort,
    pub limit: u32,
    pub interval: Duration,
    pub once: bool,
}

/// "1.2 GiB / 3.8 GiB (31.6%)"
fn used_of(used: u64, total: u64) -> String {
    let percent = if total > 0 {
        format!(
            " ({})",
            format_value("memory.percent", used as f64 * 100.0 / total as f64)
        )
    } else {
        String::new()
    };
    format!(
        "{} / {}{percent}",
        human_bytes(used as f64),
        human_bytes(total as f64)
    )
}

/// The header: the host now.
fn header(host: &str, s: &MetricSample) -> String {
    format!(
        "{host}  up {}  load {:.2} {:.2} {:.2}\n\
         cpu {}  processes {}\n\
         memory {}  swap {}\n",
        uptime(s.uptime_seconds),
        s.load1,
        s.load5,
        s.load15,
        format_value("cpu", s.cpu_percent),
        s.processes,
        used_of(s.memory_used, s.memory_total),
        used_of(s.swap_used, s.swap_total),
    )
}

/// The header and the process table, each line at most `width` characters.
fn screen(host: &str, listing: &ProcessListing, width: usize) -> String {
    let summary = listing.summary.clone().unwrap_or_default();
    let rows = listing.processes.iter().map(|p| {
        [
            p.pid.to_string(),
            display::cell(&p.user),
            format!("{:.1}", p.cpu_percent),
            human_bytes(p.memory as f64),
            display::cell(&p.state),
            display::cell(if p.command.is_empty() {
                &p.name
            } else {
                &p.command
            }),
        ]
    });
    let table = display::table(["PID", "USER", "CPU %", "MEMORY", "STATE", "COMMAND"], rows);
    let lines: Vec<String> = table
        .lines()
        .map(|line| display::truncate(line, width))
        .collect();
    format!("{}\n{}\n", header(host, &summary), lines.join("\n"))
}

async fn listing(
    client: &mut Client,
    host: &str,
    options: &TopOptions,
) -> anyhow::Result<ProcessListing> {
    Ok(client
        .list_processes(ListProcessesRequest {
            host: host.into(),
            sort: options.sort as i32,
            limit: options.limit,
        })
        .await
        .map_err(call_failed)?
        .into_inner())
}

/// Waits for `q` or Ctrl-C on a terminal in raw mode.
async fn quit_key() {
    let mut stdin = tokio::io::stdin();
    let mut key = [0u8; 1];
    loop {
        match stdin.read(&mut key).await {
            Ok(0) | Err(_) => return std::future::pending().await,
            Ok(_) if matches!(key[0], b'q' | b'Q' | 3) => return,
            Ok(_) => {}
        }
    }
}

/// `top HOST [--sort] [--limit] [--interval] [--once]`.
pub async fn top(settings: &Settings, host: &str, options: TopOptions) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let live = !options.once && std::io::stdout().is_terminal();
    if !live {
        let first = listing(&mut client, host, &options).await?;
        print!("{}", screen(host, &first, usize::MAX));
        return Ok(());
    }
    let raw = RawMode::enter()?;
    let quit = quit_key();
    tokio::pin!(quit);
    let mut tick = tokio::time::interval(options.interval);
    loop {
        tokio::select! {
            _ = &mut quit, if raw.is_some() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let now = listing(&mut client, host, &options).await;
        let text = match now {
            Ok(now) => screen(host, &now, window_size().cols as usize),
            Err(e) => {
                drop(raw);
                return Err(e);
            }
        };
        // Raw mode does not turn "\n" into a new line's start by itself.
        let text = text.replace('\n', "\r\n");
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "\x1b[H\x1b[2J{text}")?;
        stdout.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use zpanel_proto::ProcessInfo;

    use super::*;

    #[test]
    fn the_screen_has_the_host_then_its_processes() {
        let listing = ProcessListing {
            summary: Some(MetricSample {
                cpu_percent: 12.5,
                load1: 0.5,
                memory_total: 4 << 30,
                memory_used: 1 << 30,
                uptime_seconds: 90_000,
                processes: 42,
                ..MetricSample::default()
            }),
            total: 42,
            processes: vec![ProcessInfo {
                pid: 7,
                user: "root".into(),
                cpu_percent: 3.3,
                memory: 2048,
                command: "sleep 600".into(),
                state: "sleeping".into(),
                ..ProcessInfo::default()
            }],
        };
        assert_eq!(
            screen("web1", &listing, 80),
            "web1  up 1d 1h  load 0.50 0.00 0.00\n\
             cpu 12.5%  processes 42\n\
             memory 1.0 GiB / 4.0 GiB (25.0%)  swap 0 B / 0 B\n\
             \n\
             PID  USER  CPU %  MEMORY   STATE     COMMAND\n\
             7    root  3.3    2.0 KiB  sleeping  sleep 600\n"
        );
    }
}

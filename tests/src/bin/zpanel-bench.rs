//! `zpanel-bench`: measures Zpanel side by side with OpenSSH in one run on loopback (exec
//! latency, exec throughput with the memory of all three binaries, idle daemon memory, many
//! idle bridge sessions held by one control plane, files: `zpanel cp` against scp both ways
//! and the first page of a huge directory against `ls` over ssh, and terminals: keystroke
//! echo and output throughput against `ssh -tt` and terminado; access: what authorisation,
//! logins and the audit chain cost; Docker: `ps` against the docker CLI and the throughput of
//! following a container's logs against `docker logs -f`; metrics: the idle daemon's memory
//! and CPU against prometheus-node-exporter, ingest on SQLite and a 30-day query; lifecycle:
//! install on a booted Debian, upgrade against scp + ssh, CA rotation and revocation, see
//! `zpanel-bench/lifecycle.rs`) and prints tables of medians and ratios.
//! Build and run: `cargo build --release --workspace && target/release/zpanel-bench`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    BRIDGE_PROTOCOL_MIN_VERSION, BRIDGE_PROTOCOL_VERSION, DiskUsage, Heartbeat, Hello, HostInfo,
    MetricBatch, MetricSample, NetworkRate,
};
use zpanel_shared::enroll::{ENROLL_PATH, EnrollRequest, EnrollResponse};
use zpanel_shared::frame::{self, DEFAULT_MAX_FRAME_BYTES};
use zpanel_shared::tls::{ServerTrust, certs_from_pem, key_from_pem};
use zpanel_tests::files::{add_host_serving, sha256_file, write_random};
use zpanel_tests::web::{Browser, Screen, Socket, read_until, send_json, type_text};
use zpanel_tests::{Cli, ControlPlane, memory_kib};

// A crate root looks for modules beside it: the section lives in a directory of the bench's name.
#[path = "zpanel-bench/lifecycle.rs"]
mod lifecycle;

/// The host the exec and throughput runs target.
const HOST: &str = "bench-host";
const WARMUP_RUNS: usize = 3;
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
const STREAM_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a daemon (and the reference exporter) sits idle before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// Memory samples while bytes stream.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Read buffer of the bench's own WebSocket clients. Only the control plane's memory is
/// measured; this keeps the load generator itself small (tungstenite's default is 128 KiB).
const CLIENT_READ_BUFFER: usize = 8 * 1024;
/// What "bounded memory while streaming" means here: far below the bytes streamed.
const BOUNDED: &str = "< 64 MiB (bounded)";
const BOUNDED_KIB: u64 = 64 * 1024;
const SSHD: &str = "/usr/sbin/sshd";
/// What Debian's own sshd_config runs for scp and sftp.
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

#[derive(Debug, Parser)]
#[command(about = "Benchmarks Zpanel against OpenSSH on this machine (loopback traffic only)")]
struct Args {
    /// Timed runs of `exec HOST -- true` per peer (after 3 warm-up runs each).
    #[arg(long, default_value_t = 50)]
    exec_runs: usize,
    /// Bytes streamed per throughput run (K, M, G suffixes are powers of 1024, as for head).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    throughput_bytes: u64,
    /// Throughput runs per peer; the median is reported.
    #[arg(long, default_value_t = 3)]
    throughput_runs: usize,
    /// Idle bridge sessions opened against one control plane (0 skips the test).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Enrolments in flight at once while preparing the sessions.
    #[arg(long, default_value_t = 64)]
    enroll_concurrency: usize,
    /// Session handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Leave out OpenSSH (Zpanel numbers only, no ratios).
    #[arg(long)]
    skip_ssh: bool,
    /// Let ssh's remote shell read the user's ~/.bashrc (by default sshd runs in a private
    /// mount namespace where it is empty, as on a fresh host).
    #[arg(long)]
    ssh_keep_bashrc: bool,
    /// Leave out the prometheus-node-exporter memory reference.
    #[arg(long)]
    skip_node_exporter: bool,
    /// Keystrokes typed one at a time into each terminal (echo latency).
    #[arg(long, default_value_t = 1000)]
    keystrokes: usize,
    /// Size of the file `cat` prints in each terminal (K, M, G suffixes as above).
    #[arg(long, default_value = "200M", value_parser = parse_size)]
    terminal_bytes: u64,
    /// Terminal throughput runs per peer; the median is reported.
    #[arg(long, default_value_t = 5)]
    terminal_runs: usize,
    /// Leave out the terminal benchmark.
    #[arg(long)]
    skip_terminals: bool,
    /// Leave out terminado (installed from PyPI into a venv beside this binary on first use).
    #[arg(long)]
    skip_terminado: bool,
    /// Size of the file `zpanel cp` and scp copy each way (K, M, G suffixes as above).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    file_bytes: u64,
    /// Copies per peer and direction; the median is reported.
    #[arg(long, default_value_t = 3)]
    file_runs: usize,
    /// Entries (empty files) of the directory whose first page is listed.
    #[arg(long, default_value_t = 100_000)]
    dir_entries: usize,
    /// Timed listings of that first page per peer (after one warm-up each).
    #[arg(long, default_value_t = 10)]
    dir_runs: usize,
    /// Leave out the file benchmark.
    #[arg(long)]
    skip_files: bool,
    /// Timed requests and logins per kind in the access benchmark.
    #[arg(long, default_value_t = 200)]
    access_runs: usize,
    /// Audited requests sent (16 at a time) before the audit chain is verified.
    #[arg(long, default_value_t = 20_000)]
    audit_entries: usize,
    /// Leave out the access benchmark.
    #[arg(long)]
    skip_access: bool,
    /// The Docker engine the daemon manages in the Docker benchmark (default: the
    /// `ZPANEL_TEST_DOCKER_HOST` or `DOCKER_HOST` environment variable).
    #[arg(long)]
    docker_endpoint: Option<String>,
    /// Timed `ps` listings per peer in the Docker benchmark (after 3 warm-up runs each).
    #[arg(long, default_value_t = 30)]
    docker_runs: usize,
    /// Containers that exist (created, not running) while `ps -a` is timed.
    #[arg(long, default_value_t = 20)]
    docker_containers: usize,
    /// Bytes a container prints as fast as it can while its logs are followed (K, M, G
    /// suffixes as above).
    #[arg(long, default_value = "100M", value_parser = parse_size)]
    docker_log_bytes: u64,
    /// Log-follow runs per peer; the median is reported.
    #[arg(long, default_value_t = 3)]
    docker_log_runs: usize,
    /// Leave out the Docker benchmark.
    #[arg(long)]
    skip_docker: bool,
    /// Seconds the idle daemon (a sample every 10 s) and node-exporter (scraped every 10 s)
    /// are watched side by side in the metrics benchmark.
    #[arg(long, default_value_t = 300)]
    metrics_seconds: u64,
    /// Leave out the metrics benchmark.
    #[arg(long)]
    skip_metrics: bool,
    #[command(flatten)]
    lifecycle: lifecycle::Args,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 1G, 512M or 1048576"))?;
    let multiplier: u64 = match unit.trim_end_matches(['B', 'b']).trim_end_matches('i') {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(format!("unknown unit in {text:?}; use K, M or G")),
    };
    number
        .checked_mul(multiplier)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any thread or child exists: every idle session holds a socket in this process.
    let open_files = raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = run(args, open_files) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })
}

fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            getrlimit(Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(soft)
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

async fn run(args: Args, open_files: u64) -> anyhow::Result<()> {
    ensure!(
        args.exec_runs > 0 && args.throughput_runs > 0,
        "--exec-runs and --throughput-runs must be at least 1"
    );
    ensure!(
        args.skip_terminals || (args.keystrokes > 0 && args.terminal_runs > 0),
        "--keystrokes and --terminal-runs must be at least 1 (or pass --skip-terminals)"
    );
    ensure!(
        args.skip_files || (args.file_runs > 0 && args.dir_entries > 0 && args.dir_runs > 0),
        "--file-runs, --dir-entries and --dir-runs must be at least 1 (or pass --skip-files)"
    );
    let machine = Machine::describe().await;
    println!("{}", machine.render(open_files));
    let mut report = Report::default();

    // === peers: OpenSSH (new connection per command, and a ControlMaster) ===
    let mut sshd = if args.skip_ssh {
        None
    } else {
        Some(
            Sshd::start(args.ssh_keep_bashrc)
                .await
                .context("starting sshd")?,
        )
    };
    if let Some(sshd) = sshd.as_mut() {
        sshd.start_master()
            .await
            .context("starting an ssh ControlMaster")?;
        println!(
            "sshd listening on 127.0.0.1:{} (ssh ControlMaster up); {}",
            sshd.port, sshd.note
        );
        report.notes.push(format!("OpenSSH: {}.", sshd.note));
    }

    // === zpanel: one control plane and one host, serving a temporary directory ===
    let files_dir = FilesDir::new()?;
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = add_host_serving(&cp, &cli, HOST, &[&files_dir.served]).await;
    let bridge_pid = daemon.pid().context("zpanel-bridge is not running")?;
    let cp_pid = cp.pid().context("zpanel-cp is not running")?;
    // The server side, whose memory is sampled while bytes stream.
    let watched = [("zpanel-cp", cp_pid), ("zpanel-bridge", bridge_pid)];
    println!("zpanel-cp and zpanel-bridge ({HOST}) are up; host online");

    let exporter = if args.skip_node_exporter {
        None
    } else {
        NodeExporter::start().await
    };
    tokio::time::sleep(IDLE_SETTLE).await;
    let bridge_idle = memory_kib(bridge_pid).0;
    let exporter_idle = exporter.as_ref().map(|e| memory_kib(e.pid).0);
    println!(
        "idle RSS: zpanel-bridge {}, node-exporter {}",
        kib(bridge_idle),
        exporter_idle.map(kib).unwrap_or("-".into())
    );

    // === exec latency ===
    let zpanel_exec = || cli.command(&["exec", HOST, "--", "true"]);
    let mut peers: Vec<(&str, CommandFactory<'_>)> = vec![("zpanel", Box::new(zpanel_exec))];
    if let Some(sshd) = sshd.as_ref() {
        peers.push(("ssh", Box::new(|| sshd.client(&["true"]))));
        peers.push(("ssh-cm", Box::new(|| sshd.via_master(&["true"]))));
    }
    let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for run in 0..WARMUP_RUNS + args.exec_runs {
        // Interleaved, so noise on this shared machine hits every peer alike.
        for (name, command) in &peers {
            let took = timed(command())
                .await
                .with_context(|| format!("{name}: exec true"))?;
            if run >= WARMUP_RUNS {
                latencies.entry(name).or_default().push(took);
            }
        }
    }
    drop(peers);
    let exec_count = WARMUP_RUNS + args.exec_runs;
    let bridge_after_execs = memory_kib(bridge_pid).0;
    let exporter_after_scrapes = match exporter.as_ref() {
        Some(exporter) => Some(exporter.scrape(3).await?),
        None => None,
    };
    let stats: BTreeMap<&str, Stats> = latencies
        .iter()
        .map(|(name, runs)| (*name, Stats::of(runs)))
        .collect();
    for (name, s) in &stats {
        println!(
            "exec true, {name}: median {:.1} ms, p90 {:.1} ms over {} runs",
            ms(s.median),
            ms(s.p90),
            s.n
        );
    }
    let zp = &stats["zpanel"];
    let ssh = stats.get("ssh");
    let in_ms = |v: f64| format!("{v:.1} ms");
    report.versus(
        "`exec true` latency, median",
        ms(zp.median),
        ssh.map(|s| ("ssh, new connection", ms(s.median))),
        in_ms,
        "< 1.0x ssh",
        ssh.map(|s| zp.median < s.median),
    );
    report.versus(
        "`exec true` latency, p90",
        ms(zp.p90),
        ssh.map(|s| ("ssh, new connection", ms(s.p90))),
        in_ms,
        "-",
        None,
    );
    if let Some(cm) = stats.get("ssh-cm") {
        report.versus(
            "`exec true` latency, median, vs a reused ssh connection",
            ms(zp.median),
            Some(("ssh ControlMaster", ms(cm.median))),
            in_ms,
            "reference only",
            None,
        );
    }
    let in_kib = |k: f64| kib(k as u64);
    report.versus(
        "zpanel-bridge RSS, idle 5 s after connecting",
        bridge_idle as f64,
        exporter_idle.map(|k| ("node-exporter idle, reference", k as f64)),
        in_kib,
        "< 15 MiB",
        Some(bridge_idle < 15 * 1024),
    );
    report.versus(
        &format!("zpanel-bridge RSS, idle after {exec_count} execs"),
        bridge_after_execs as f64,
        exporter_after_scrapes.map(|k| ("node-exporter after 3 scrapes, reference", k as f64)),
        in_kib,
        "< 15 MiB",
        Some(bridge_after_execs < 15 * 1024),
    );
    drop(exporter);

    // === throughput ===
    let bytes = args.throughput_bytes;
    let count = bytes.to_string();
    let mut zpanel_runs = Vec::new();
    let mut ssh_runs = Vec::new();
    let mut peaks = Peaks::new();
    for run in 1..=args.throughput_runs {
        let streamed = stream(
            cli.command(&["exec", HOST, "--", "head", "-c", &count, "/dev/zero"]),
            bytes,
            &watched,
        )
        .await
        .context("zpanel: exec head")?;
        println!(
            "throughput run {run}, zpanel: {:.0} MB/s",
            streamed.mb_per_s
        );
        keep_peaks(&mut peaks, streamed.peaks);
        zpanel_runs.push(streamed.mb_per_s);
        if let Some(sshd) = sshd.as_ref() {
            let streamed = stream(
                sshd.client(&["head", "-c", &count, "/dev/zero"]),
                bytes,
                &[],
            )
            .await
            .context("ssh: head")?;
            println!("throughput run {run}, ssh: {:.0} MB/s", streamed.mb_per_s);
            let entry = peaks.entry("ssh client").or_default();
            *entry = (*entry).max(streamed.peaks.get("client").copied().unwrap_or(0));
            ssh_runs.push(streamed.mb_per_s);
        }
    }
    report.notes.push(format!(
        "Throughput runs (MB/s, in order): zpanel {}; ssh {}.",
        list_runs(&zpanel_runs),
        if ssh_runs.is_empty() {
            "-".into()
        } else {
            list_runs(&ssh_runs)
        }
    ));
    let zpanel_mbs = median_f64(&zpanel_runs);
    let ssh_mbs = (!ssh_runs.is_empty()).then(|| median_f64(&ssh_runs));
    let size = human_bytes(bytes);
    report.versus(
        &format!(
            "exec `head -c {size}` throughput, median of {}",
            args.throughput_runs
        ),
        zpanel_mbs,
        ssh_mbs.map(|s| ("ssh", s)),
        in_mb_per_s,
        ">= 0.8x ssh",
        ssh_mbs.map(|s| zpanel_mbs >= 0.8 * s),
    );
    let client_peak = peaks.get("client").copied().unwrap_or(0);
    let ssh_client_peak = peaks.get("ssh client").copied();
    report.row(
        &format!("client peak RSS while streaming {size}"),
        format!("{} (zpanel CLI)", kib(client_peak)),
        ssh_client_peak.map(|k| format!("{} (ssh client)", kib(k))),
        ssh_client_peak.map(|k| ratio(client_peak as f64, k as f64)),
        BOUNDED,
        Some(client_peak < BOUNDED_KIB),
    );
    for name in ["zpanel-cp", "zpanel-bridge"] {
        let peak = peaks.get(name).copied().unwrap_or(0);
        report.row(
            &format!("{name} peak RSS (VmHWM) while streaming {size}"),
            kib(peak),
            None,
            None,
            BOUNDED,
            Some(peak < BOUNDED_KIB),
        );
    }
    let bridge_after_streams = memory_kib(bridge_pid).0;
    report.row(
        &format!("zpanel-bridge RSS, idle after the {size} streams"),
        kib(bridge_after_streams),
        None,
        None,
        "(information)",
        None,
    );

    // === files ===
    let files_report = if args.skip_files {
        None
    } else {
        let zpanel = Zpanel {
            cp: &cp,
            cli: &cli,
            watched: &watched,
        };
        Some(
            files(&args, &zpanel, sshd.as_ref(), &files_dir)
                .await
                .context("files")?,
        )
    };
    drop(files_dir);

    // === terminals ===
    let terminal_report = if args.skip_terminals {
        None
    } else {
        Some(
            terminals(&args, &cp, sshd.as_ref())
                .await
                .context("terminals")?,
        )
    };

    // === access ===
    let access_report = if args.skip_access {
        None
    } else {
        Some(access(&args, &cp, &cli).await.context("access")?)
    };

    // === docker ===
    let docker_report = if args.skip_docker {
        None
    } else {
        Some(docker(&args, &cp, &cli).await.context("docker")?)
    };

    // Quiet the machine for the sessions test.
    drop(daemon);
    drop(cli);
    drop(cp);
    if let Some(mut sshd) = sshd.take() {
        sshd.stop().await;
    }

    // === metrics ===
    let metrics_report = if args.skip_metrics {
        None
    } else {
        Some(metrics(&args).await.context("metrics")?)
    };

    // === lifecycle ===
    let lifecycle_report = if args.lifecycle.skip_lifecycle {
        None
    } else {
        Some(
            lifecycle::run(&args.lifecycle, args.skip_ssh)
                .await
                .context("lifecycle")?,
        )
    };

    // === idle sessions ===
    if args.sessions > 0 {
        let result = idle_sessions(&args).await.context("idle sessions")?;
        result.report(&mut report);
    }

    println!();
    println!("{}", machine.render(open_files));
    println!("{}", report.render());
    if let Some(files) = files_report {
        println!("\nFiles:\n\n{}", files.render());
    }
    if let Some(terminals) = terminal_report {
        println!("\nTerminals:\n\n{}", terminals.render());
    }
    if let Some(access) = access_report {
        println!("\nAccess:\n\n{}", access.render());
    }
    if let Some(docker) = docker_report {
        println!("\nDocker:\n\n{}", docker.render());
    }
    if let Some(metrics) = metrics_report {
        println!("\nMetrics:\n\n{}", metrics.render());
    }
    if let Some(lifecycle) = lifecycle_report {
        println!("\nLifecycle:\n\n{}", lifecycle.render());
    }
    Ok(())
}

/// The host the Docker benchmark targets.
const DOCKER_HOST_NAME: &str = "bench-docker";
/// The image the Docker benchmark's containers run (built offline by `scripts/test`).
const DOCKER_IMAGE: &str = zpanel_tests::docker::TEST_IMAGE;

/// `zpanel docker HOST ps -a` against `docker ps -a` on the same engine, and the throughput of
/// following the logs of a container that prints as fast as it can, through zpanel and with
/// `docker logs -f`.
async fn docker(args: &Args, cp: &ControlPlane, cli: &Cli) -> anyhow::Result<Report> {
    ensure!(
        args.docker_runs > 0 && args.docker_log_runs > 0,
        "--docker-runs and --docker-log-runs must be at least 1 (or pass --skip-docker)"
    );
    let endpoint = args
        .docker_endpoint
        .clone()
        .or_else(|| std::env::var(zpanel_tests::docker::ENDPOINT_VARIABLE).ok())
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .context("no Docker engine: pass --docker-endpoint unix:///PATH (or --skip-docker)")?;
    let docker_cli = |args: &[&str]| {
        let mut command = Command::new("docker");
        command.arg("-H").arg(&endpoint).args(args);
        command
    };
    let mut report = Report::default();
    let token = cli.join_token(1).await;
    let daemon = zpanel_tests::Daemon::join(cp, &token, DOCKER_HOST_NAME).await?;
    daemon.set_docker_endpoint(&endpoint);
    let _daemon = daemon.start().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli.host_status(DOCKER_HOST_NAME).await.as_deref() != Some("online") {
        ensure!(
            Instant::now() < deadline,
            "{DOCKER_HOST_NAME} never came online"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Containers to list (created, never started), removed at the end.
    let prefix = format!("zp-bench-{}", std::process::id());
    let mut names: Vec<String> = (0..args.docker_containers)
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    for name in &names {
        let out = quiet_output(docker_cli(&[
            "create",
            "--name",
            name,
            DOCKER_IMAGE,
            "true",
        ]))
        .await?;
        succeeded("docker create", &out)?;
    }
    let result = docker_measure(args, cli, &docker_cli, &prefix, &mut names, &mut report).await;
    let mut remove = vec!["rm", "-f"];
    remove.extend(names.iter().map(String::as_str));
    let _ = quiet_output(docker_cli(&remove)).await;
    result?;
    println!("docker: {}", report.render());
    Ok(report)
}

async fn docker_measure(
    args: &Args,
    cli: &Cli,
    docker_cli: &impl Fn(&[&str]) -> Command,
    prefix: &str,
    names: &mut Vec<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    // `ps -a`, interleaved, so noise hits both peers alike.
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for run in 0..WARMUP_RUNS + args.docker_runs {
        for name in ["zpanel", "docker"] {
            let command = match name {
                "zpanel" => cli.command(&["docker", DOCKER_HOST_NAME, "ps", "-a"]),
                _ => docker_cli(&["ps", "-a"]),
            };
            let took = timed(command)
                .await
                .with_context(|| format!("{name} ps -a"))?;
            if run >= WARMUP_RUNS {
                times.entry(name).or_default().push(took);
            }
        }
    }
    let zp = Stats::of(&times["zpanel"]);
    let peer = Stats::of(&times["docker"]);
    let in_ms = |v: f64| format!("{v:.1} ms");
    report.versus(
        &format!(
            "`ps -a` with {} containers, median of {}",
            args.docker_containers, args.docker_runs
        ),
        ms(zp.median),
        Some(("docker ps -a, local socket", ms(peer.median))),
        in_ms,
        "<= 2.0x docker (one more hop over the network)",
        Some(zp.median.as_secs_f64() <= 2.0 * peer.median.as_secs_f64()),
    );
    report.versus(
        "`ps -a`, p90",
        ms(zp.p90),
        Some(("docker ps -a", ms(peer.p90))),
        in_ms,
        "-",
        None,
    );

    // Log follow: a fresh container per run and peer prints `bytes` as fast as it can while
    // the peer follows its logs from the start until it exits.
    let bytes = args.docker_log_bytes;
    let script = format!(
        "yes 'zpanel benchmark log line: 0123456789abcdefghijklmnopqrstuvwxyz' | head -c {bytes}"
    );
    let mut runs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 1..=args.docker_log_runs {
        for peer in ["zpanel", "docker"] {
            let name = format!("{prefix}-logs-{peer}-{run}");
            names.push(name.clone());
            let out = quiet_output(docker_cli(&[
                "run",
                "-d",
                "--name",
                &name,
                DOCKER_IMAGE,
                "sh",
                "-c",
                &script,
            ]))
            .await?;
            succeeded("docker run", &out)?;
            let command = match peer {
                "zpanel" => cli.command(&["docker", DOCKER_HOST_NAME, "logs", "-f", &name]),
                _ => docker_cli(&["logs", "-f", &name]),
            };
            let streamed = stream(command, bytes, &[])
                .await
                .with_context(|| format!("{peer}: logs -f"))?;
            println!(
                "docker logs -f run {run}, {peer}: {:.0} MB/s",
                streamed.mb_per_s
            );
            runs.entry(peer).or_default().push(streamed.mb_per_s);
        }
    }
    report.notes.push(format!(
        "Log-follow runs (MB/s, in order): zpanel {}; docker {}.",
        list_runs(&runs["zpanel"]),
        list_runs(&runs["docker"])
    ));
    let zp = median_f64(&runs["zpanel"]);
    let peer = median_f64(&runs["docker"]);
    report.versus(
        &format!(
            "follow the logs of a container printing {} as fast as it can, median of {}",
            human_bytes(bytes),
            args.docker_log_runs
        ),
        zp,
        Some(("docker logs -f, local socket", peer)),
        in_mb_per_s,
        ">= 0.8x docker",
        Some(zp >= 0.8 * peer),
    );
    Ok(())
}

/// Runs a command to completion with its output captured.
async fn quiet_output(mut command: Command) -> anyhow::Result<std::process::Output> {
    command.stdin(Stdio::null());
    Ok(command.output().await?)
}

/// Timed logins: fewer than the burst of logins one address may make at once.
const LOGIN_RUNS: usize = 15;

/// What authorisation and the audit chain cost: an authorised request as an admin and as a
/// workspace member, a login (argon2id), how many audited requests a second the control
/// plane takes, and how fast `zpanel audit verify` walks the chain.
async fn access(args: &Args, cp: &ControlPlane, cli: &Cli) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let run = |what: &str, out: std::process::Output| succeeded(what, &out);
    run(
        "users add",
        cli.run_with_stdin(
            &[
                "users",
                "add",
                "bench-dev",
                "--role",
                "developer",
                "--password-stdin",
            ],
            b"bench password 123\n",
        )
        .await,
    )?;
    let out = cli
        .run(&["api-tokens", "create", "--user", "bench-dev", "--json"])
        .await;
    run("api-tokens create", out.clone())?;
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let developer = Browser::with_token(cp, created["token"].as_str().context("token")?);
    let admin = Browser::with_token(cp, &cp.admin_token);

    // Authorised requests, each on a fresh TLS connection, interleaved.
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for _ in 0..args.access_runs {
        for (name, caller) in [("admin", &admin), ("developer", &developer)] {
            let started = Instant::now();
            let response = caller.call("GET", "/api/v1/hosts", None).await?;
            ensure!(response.status == 200, "GET /api/v1/hosts: {response:?}");
            times.entry(name).or_default().push(started.elapsed());
        }
    }
    // Logins, within the per-address burst the control plane allows.
    for _ in 0..LOGIN_RUNS {
        let started = Instant::now();
        let login =
            zpanel_tests::web::post_login(cp, &cp.url, "bench-dev", "bench password 123").await?;
        ensure!(login.status == 200, "login: {login:?}");
        times.entry("login").or_default().push(started.elapsed());
    }
    let admin_stats = Stats::of(&times["admin"]);
    let developer_stats = Stats::of(&times["developer"]);
    let login_stats = Stats::of(&times["login"]);
    let in_ms = |v: f64| format!("{v:.2} ms");
    report.versus(
        "GET /api/v1/hosts with a member's token (fresh TLS connection), median",
        ms(developer_stats.median),
        Some(("admin token", ms(admin_stats.median))),
        in_ms,
        "~1.0x (the membership check is cheap)",
        Some(developer_stats.median.as_secs_f64() < 1.5 * admin_stats.median.as_secs_f64()),
    );
    report.row(
        &format!("login with a password (argon2id, then a session), median of {LOGIN_RUNS}"),
        in_ms(ms(login_stats.median)),
        None,
        None,
        "(information)",
        None,
    );

    // Audited refusals (a developer may not read the audit log), 16 clients at a time.
    let clients = 16;
    let per_client = args.audit_entries.div_ceil(clients);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..clients {
        let developer = developer.clone();
        workers.spawn(async move {
            for _ in 0..per_client {
                let response = developer.call("GET", "/api/v1/audit", None).await?;
                ensure!(response.status == 403, "{response:?}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let sent = clients * per_client;
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    report.row(
        &format!("audited refusals per second, {clients} clients"),
        format!("{rate:.0} /s"),
        None,
        None,
        "(information)",
        None,
    );

    let started = Instant::now();
    let out = cli.run(&["audit", "verify"]).await;
    let took = started.elapsed();
    run("audit verify", out.clone())?;
    let verified = String::from_utf8_lossy(&out.stdout);
    let entries: f64 = verified
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .context("audit verify printed no count")?;
    report.row(
        &format!("`zpanel audit verify` over {entries:.0} entries"),
        format!(
            "{:.0} ms ({:.0} entries/s)",
            ms(took),
            entries / took.as_secs_f64()
        ),
        None,
        None,
        "(information)",
        None,
    );
    println!("access: {}", report.render());
    Ok(report)
}

// === measurements ===

/// Builds the command one peer runs for one exec.
type CommandFactory<'a> = Box<dyn Fn() -> Command + 'a>;

/// Wall time of one command from spawn to exit; fails unless it exits successfully.
async fn timed(command: Command) -> anyhow::Result<Duration> {
    timed_within(command, EXEC_TIMEOUT).await
}

/// [`timed`] with its own time limit.
async fn timed_within(mut command: Command, limit: Duration) -> anyhow::Result<Duration> {
    let program = quiet(&mut command);
    let started = Instant::now();
    let out = tokio::time::timeout(limit, command.output())
        .await
        .context("timed out")??;
    let took = started.elapsed();
    succeeded(&program, &out)?;
    Ok(took)
}

/// [`timed`] for a long command, sampling the peak memory of the client and of `watched`
/// processes meanwhile.
async fn timed_sampled(
    mut command: Command,
    watched: &[(&'static str, u32)],
) -> anyhow::Result<(Duration, Peaks)> {
    let program = quiet(&mut command);
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("spawn {program}"))?;
    let sampler = PeakSampler::start(watched, child.id().context("client pid")?);
    let out = tokio::time::timeout(STREAM_TIMEOUT, child.wait_with_output()).await;
    let took = started.elapsed();
    let peaks = sampler.stop().await?;
    succeeded(&program, &out.context("timed out")??)?;
    Ok((took, peaks))
}

/// No input, output and errors piped, killed if dropped; returns the program's name.
fn quiet(command: &mut Command) -> String {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.as_std().get_program().to_string_lossy().to_string()
}

fn succeeded(program: &str, out: &std::process::Output) -> anyhow::Result<()> {
    ensure!(
        out.status.success(),
        "{program} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Peak resident memory (KiB) by process: "client" and the watched processes.
type Peaks = BTreeMap<&'static str, u64>;

/// Samples the peak memory (VmHWM, and RSS in case the kernel hides it) of processes every
/// [`SAMPLE_EVERY`] until stopped.
struct PeakSampler {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Peaks>,
}

impl PeakSampler {
    fn start(watched: &[(&'static str, u32)], client_pid: u32) -> PeakSampler {
        let mut pids = watched.to_vec();
        pids.push(("client", client_pid));
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let done = done.clone();
            async move {
                let mut peaks = Peaks::new();
                while !done.load(Ordering::Relaxed) {
                    for (name, pid) in &pids {
                        let (rss, hwm) = memory_kib(*pid);
                        let entry = peaks.entry(name).or_default();
                        *entry = (*entry).max(rss).max(hwm);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
                peaks
            }
        });
        PeakSampler { done, task }
    }

    async fn stop(self) -> anyhow::Result<Peaks> {
        self.done.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// Raises each peak in `into` to the one in `peaks`.
fn keep_peaks(into: &mut Peaks, peaks: Peaks) {
    for (name, peak) in peaks {
        let entry = into.entry(name).or_default();
        *entry = (*entry).max(peak);
    }
}

struct Streamed {
    mb_per_s: f64,
    peaks: Peaks,
}

/// Runs a command writing `expected` bytes to stdout, counts them here, and samples the
/// peak memory of the client process and of `watched` processes meanwhile.
async fn stream(
    mut command: Command,
    expected: u64,
    watched: &[(&'static str, u32)],
) -> anyhow::Result<Streamed> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().context("spawn")?;
    let client_pid = child.id().context("client pid")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let sampler = PeakSampler::start(watched, client_pid);
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let counted = async {
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = stdout.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((total, status))
    };
    let outcome = tokio::time::timeout(STREAM_TIMEOUT, counted).await;
    let took = started.elapsed();
    let peaks = sampler.stop().await?;
    let (total, status) = outcome.context("timed out")??;
    let errors = errors.await.unwrap_or_default();
    ensure!(status.success(), "exited with {status}: {}", errors.trim());
    ensure!(
        total == expected,
        "received {total} bytes, expected {expected}"
    );
    Ok(Streamed {
        mb_per_s: total as f64 / took.as_secs_f64() / 1e6,
        peaks,
    })
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    median: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(runs: &[Duration]) -> Stats {
        let mut sorted = runs.to_vec();
        sorted.sort();
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        Stats {
            n,
            median,
            p90: percentile(&sorted, 0.9),
            p99: percentile(&sorted, 0.99),
            max: sorted[n - 1],
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// MB/s of runs, in order: "558, 539, 498".
fn list_runs(runs: &[f64]) -> String {
    runs.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

// === OpenSSH ===

/// `sshd` on a free loopback port with its own host key, client key and config.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    master: bool,
    /// How the remote side runs commands (see [`hide_bashrc`]).
    note: String,
}

impl Sshd {
    async fn start(keep_bashrc: bool) -> anyhow::Result<Sshd> {
        ensure!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install -y openssh-server (or pass --skip-ssh)"
        );
        std::fs::create_dir_all("/run/sshd").context("mkdir /run/sshd")?;
        let dir = tempfile::Builder::new().prefix("zpanel-sshd-").tempdir()?;
        ssh_keys(dir.path()).await?;
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )?;
        let port = free_port()?;
        let d = dir.path().display();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\n\
             Subsystem sftp {SFTP_SERVER}\n"
        );
        std::fs::write(dir.path().join("sshd_config"), config)?;
        let log = std::fs::File::create(dir.path().join("sshd.log"))?;
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        let (mut command, note) = match user_bashrc(&user) {
            Some(bashrc) if !keep_bashrc => hide_bashrc(dir.path(), &bashrc).await,
            Some(bashrc) => (
                Command::new(SSHD),
                format!(
                    "ssh runs commands with the user's {} as is",
                    bashrc.display()
                ),
            ),
            None => (
                Command::new(SSHD),
                "ssh runs commands with the user's login shell".into(),
            ),
        };
        let child = command
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawn sshd")?;
        let sshd = Sshd {
            child,
            dir,
            port,
            user,
            master: false,
            note,
        };
        if let Err(e) = ssh_ready(|| sshd.client(&["true"])).await {
            let log = std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default();
            bail!(
                "ssh to the test sshd fails: {e:#}; sshd log: {}",
                log.trim()
            );
        }
        Ok(sshd)
    }

    /// The bench's client options; `port_flag` is `-p` for ssh and `-P` for scp.
    fn base_args(&self, port_flag: &str) -> Vec<String> {
        ssh_client_args(&self.dir.path().join("client_key"), port_flag, self.port)
    }

    /// `ssh` with the bench's options, then `options`, `user@127.0.0.1` and `remote`.
    fn ssh(&self, options: &[&str], remote: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(self.base_args("-p"))
            .args(options)
            .arg(format!("{}@127.0.0.1", self.user))
            .args(remote);
        command
    }

    /// `scp` with the bench's options, then `options`, copying `from` to `to`; either is
    /// [`Sshd::remote`]. OpenSSH 9 speaks SFTP to the server's `sftp` subsystem.
    fn scp(&self, options: &[&str], from: &str, to: &str) -> Command {
        let mut command = Command::new("scp");
        command
            .args(self.base_args("-P"))
            .args(options)
            .args([from, to]);
        command
    }

    /// `user@127.0.0.1:PATH`, a path on the "host" as scp names it.
    fn remote(&self, path: &Path) -> String {
        format!("{}@127.0.0.1:{}", self.user, path.display())
    }

    /// `ssh ... user@127.0.0.1 CMD`: a new connection (key exchange, authentication) each time.
    fn client(&self, remote: &[&str]) -> Command {
        self.ssh(&[], remote)
    }

    /// `ControlPath=...` of the ControlMaster.
    fn control_path_option(&self) -> String {
        format!("ControlPath={}", self.dir.path().join("cm").display())
    }

    /// `-o ControlMaster=no -o ControlPath=...`: through the ControlMaster.
    fn master_options(&self) -> [String; 4] {
        [
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            self.control_path_option(),
        ]
    }

    /// The same command through the ControlMaster: a new channel on a live connection.
    fn via_master(&self, remote: &[&str]) -> Command {
        let options = self.master_options();
        self.ssh(&options.each_ref().map(String::as_str), remote)
    }

    /// An interactive login shell in a remote PTY (`-tt`: although stdin is a pipe), with no
    /// escape character.
    fn terminal(&self) -> Command {
        let mut command = self.ssh(&["-tt", "-e", "none"], &[]);
        command.env("TERM", TERMINAL_TYPE);
        command
    }

    async fn start_master(&mut self) -> anyhow::Result<()> {
        let control_path = self.control_path_option();
        let out = self
            .ssh(&["-M", "-N", "-f", "-o", &control_path], &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(EXEC_TIMEOUT, out)
            .await
            .context("timed out")??;
        ensure!(
            out.status.success(),
            "ssh -M: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.master = true;
        Ok(())
    }

    fn stop_master_now(&mut self) {
        if std::mem::take(&mut self.master) {
            let control_path = self.control_path_option();
            let _ = self
                .ssh(&["-O", "exit", "-o", &control_path], &[])
                .into_std()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    async fn stop(&mut self) {
        self.stop_master_now();
        let _ = self.child.kill().await;
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop_master_now();
    }
}

/// The login user's `~/.bashrc` when their shell is bash: sshd runs every command as
/// `bash -c CMD`, and bash started by sshd reads `~/.bashrc` even when not interactive.
fn user_bashrc(user: &str) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))?;
    let (home, shell) = (fields.get(5)?, fields.get(6)?);
    let bashrc = Path::new(home).join(".bashrc");
    (shell.ends_with("/bash") && bashrc.exists()).then_some(bashrc)
}

/// A host key and a client key (ed25519, no passphrase) in `dir`: `host_key`, `client_key`
/// and their `.pub` files.
async fn ssh_keys(dir: &Path) -> anyhow::Result<()> {
    for key in ["host_key", "client_key"] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(key))
            .output()
            .await
            .context("ssh-keygen")?;
        succeeded("ssh-keygen", &out)?;
    }
    Ok(())
}

/// Waits until `probe` (an ssh running `true`) succeeds, for 15 s at most; its last error
/// otherwise.
async fn ssh_ready(probe: impl Fn() -> Command) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match timed(probe()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// OpenSSH client options of the bench: only `key`, no config file, no known hosts, no
/// prompts; `port_flag` is `-p` for ssh and `-P` for scp.
fn ssh_client_args(key: &Path, port_flag: &str, port: u16) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        key.display().to_string(),
        port_flag.into(),
        port.to_string(),
    ];
    for option in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "LogLevel=ERROR",
    ] {
        args.extend(["-o".into(), option.into()]);
    }
    args
}

/// Starts sshd in a private mount namespace where `bashrc` is an empty file, so ssh is
/// measured as on a freshly installed host rather than with this machine's shell set-up
/// (a developer's `~/.bashrc` can take longer than the whole ssh exchange). Nothing
/// changes outside that namespace. Falls back to a plain sshd when namespaces are refused.
async fn hide_bashrc(dir: &Path, bashrc: &Path) -> (Command, String) {
    let empty = dir.join("empty-bashrc");
    let script = r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#;
    let namespaced = |program: &str| {
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&empty)
            .arg(bashrc)
            .arg(program);
        command
    };
    let probe = match std::fs::write(&empty, b"") {
        Ok(()) => namespaced("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success()),
        Err(_) => false,
    };
    if probe {
        (
            namespaced(SSHD),
            format!(
                "sshd runs in a private mount namespace where {} is empty",
                bashrc.display()
            ),
        )
    } else {
        (
            Command::new(SSHD),
            format!(
                "could not hide {} from ssh (no mount namespace); ssh includes it",
                bashrc.display()
            ),
        )
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// === prometheus-node-exporter (memory reference) ===

struct NodeExporter {
    _child: Child,
    pid: u32,
    port: u16,
}

impl NodeExporter {
    /// Starts the exporter if it is installed; `None` (with a note) when it is not.
    async fn start() -> Option<NodeExporter> {
        if !Path::new(NODE_EXPORTER).exists() {
            println!(
                "note: {NODE_EXPORTER} is missing (apt-get install -y prometheus-node-exporter); no memory reference"
            );
            return None;
        }
        let port = free_port().ok()?;
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let pid = child.id()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                println!(
                    "note: prometheus-node-exporter did not listen within 10 s; no memory reference"
                );
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(NodeExporter {
            _child: child,
            pid,
            port,
        })
    }

    /// Scrapes `/metrics` `times` times and returns its RSS afterwards.
    async fn scrape(&self, times: usize) -> anyhow::Result<u64> {
        for _ in 0..times {
            let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
            tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut body = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut body))
                .await
                .context("scrape timed out")??;
        }
        Ok(memory_kib(self.pid).0)
    }
}

// === terminals: keystroke echo and `cat` throughput in a shell ===

/// Keystrokes per line: the line is cleared after each, so it never wraps.
const LINE_KEYSTROKES: usize = 100;
/// Untimed keystrokes per peer before the timed ones.
const WARMUP_KEYSTROKES: usize = 20;
/// What every peer's shell runs first: the same short prompt, no prompt command (a
/// `~/.bashrc` may set a slow one) and the same size (ssh has no local terminal to copy a
/// size from). The quotes keep the echoed command line from matching the marker.
const QUIET_SHELL: &str =
    "export PS1='> ' PROMPT_COMMAND=''; stty cols 200 rows 50; echo SHELL-''READY\r";
const TERMINAL_TYPE: &str = "xterm-256color";
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// The issue's bound for the p99 echo on loopback.
const ECHO_TARGET: Duration = Duration::from_millis(2);
/// The page acknowledges the output it has written every 32 KiB or 64 messages, or 100 ms
/// after a write (`web/src/connection.js`); the bench does the same.
const ACK_EVERY_BYTES: u64 = 32 * 1024;
const ACK_EVERY_MESSAGES: u32 = 64;
const ACK_DELAY: Duration = Duration::from_millis(100);
/// How much the bench asks an ssh pipe for at once.
const READ_CHUNK: usize = 64 * 1024;
const TERMINADO_VERSION: &str = "0.18.1";
const TERMINADO_SERVER: &str = include_str!("../../bench/terminado_server.py");
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Line length of the file `cat` prints, newline included.
const CAT_LINE_BYTES: u64 = 100;

/// One peer's terminal: a shell in a PTY, keystrokes in, what it prints out.
enum Tty {
    /// The browser's protocol: WebSocket to the control plane, which relays to the daemon.
    Zpanel(Box<ZpanelTty>),
    /// `ssh -tt` to the loopback sshd: keystrokes on its stdin, the screen on its stdout.
    Ssh(SshTty),
    /// terminado's WebSocket (JSON arrays), one hop to its PTY.
    Terminado(TerminadoTty),
}

impl Tty {
    async fn send(&mut self, keys: &str) -> anyhow::Result<()> {
        match self {
            Tty::Zpanel(tty) => {
                tty.send(keys).await;
                Ok(())
            }
            Tty::Ssh(tty) => Ok(tty.stdin.write_all(keys.as_bytes()).await?),
            Tty::Terminado(tty) => tty.send(keys).await,
        }
    }

    /// The next piece of output.
    async fn output(&mut self) -> anyhow::Result<Bytes> {
        match self {
            Tty::Zpanel(tty) => tty.output().await,
            Tty::Ssh(tty) => tty.output().await,
            Tty::Terminado(tty) => tty.output().await,
        }
    }
}

struct ZpanelTty {
    socket: Socket,
    /// Output offset after everything received, and the offset last acknowledged.
    received: u64,
    acked: u64,
    /// Output messages since the last acknowledgement.
    unacked_messages: u32,
    /// When the page's delayed acknowledgement would be sent.
    ack_due: Option<tokio::time::Instant>,
}

impl ZpanelTty {
    /// Logs in as the admin and opens a new terminal on the bench host.
    async fn open(cp: &ControlPlane) -> anyhow::Result<ZpanelTty> {
        let browser = Browser::login(cp, "admin", &cp.admin_password()).await?;
        let mut socket = browser.terminal(HOST, "").await?;
        let mut screen = Screen::default();
        let attached = read_until(&mut socket, &mut screen, EXEC_TIMEOUT, |s| {
            s.attached.is_some()
        })
        .await;
        ensure!(attached, "no attached message: {:?}", screen.messages);
        Ok(ZpanelTty {
            socket,
            received: screen.end(),
            acked: screen.end(),
            unacked_messages: 0,
            ack_due: None,
        })
    }

    async fn ack(&mut self) {
        self.ack_due = None;
        if self.received > self.acked {
            let ack = serde_json::json!({"type": "ack", "offset": self.received});
            send_json(&mut self.socket, ack).await;
            self.acked = self.received;
            self.unacked_messages = 0;
        }
    }

    async fn send(&mut self, keys: &str) {
        if self
            .ack_due
            .is_some_and(|due| due <= tokio::time::Instant::now())
        {
            self.ack().await;
        }
        type_text(&mut self.socket, keys).await;
    }

    async fn output(&mut self) -> anyhow::Result<Bytes> {
        loop {
            let message = match self.ack_due {
                Some(due) => match tokio::time::timeout_at(due, self.socket.next()).await {
                    Ok(message) => message,
                    Err(_) => {
                        self.ack().await;
                        continue;
                    }
                },
                None => self.socket.next().await,
            };
            match message.context("the terminal socket closed")?? {
                Message::Binary(bytes) => {
                    self.received += bytes.len() as u64;
                    self.unacked_messages += 1;
                    if self.received - self.acked >= ACK_EVERY_BYTES
                        || self.unacked_messages >= ACK_EVERY_MESSAGES
                    {
                        self.ack().await;
                    } else if self.ack_due.is_none() {
                        self.ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
                    }
                    return Ok(bytes);
                }
                Message::Text(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    ensure!(
                        !matches!(value["type"].as_str(), Some("error" | "exit" | "skip")),
                        "the control plane said {text}"
                    );
                }
                Message::Close(frame) => bail!("the control plane closed the terminal: {frame:?}"),
                _ => {}
            }
        }
    }
}

struct SshTty {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    buffer: BytesMut,
}

impl SshTty {
    fn open(sshd: &Sshd) -> anyhow::Result<SshTty> {
        let mut child = sshd
            .terminal()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn ssh -tt")?;
        Ok(SshTty {
            stdin: child.stdin.take().context("stdin")?,
            stdout: child.stdout.take().context("stdout")?,
            _child: child,
            buffer: BytesMut::new(),
        })
    }

    async fn output(&mut self) -> anyhow::Result<Bytes> {
        self.buffer.reserve(READ_CHUNK);
        let n = self.stdout.read_buf(&mut self.buffer).await?;
        ensure!(n > 0, "ssh exited");
        Ok(self.buffer.split().freeze())
    }
}

struct TerminadoTty {
    socket: WebSocketStream<TcpStream>,
}

impl TerminadoTty {
    /// A new WebSocket, and with it a new shell.
    async fn open(port: u16) -> anyhow::Result<TerminadoTty> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://127.0.0.1:{port}/websocket");
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await?;
        Ok(TerminadoTty { socket })
    }

    async fn send(&mut self, keys: &str) -> anyhow::Result<()> {
        let message = serde_json::json!(["stdin", keys]).to_string();
        Ok(self.socket.send(Message::Text(message.into())).await?)
    }

    async fn output(&mut self) -> anyhow::Result<Bytes> {
        loop {
            match self.socket.next().await.context("terminado closed")?? {
                Message::Text(text) => {
                    let (kind, data): (String, serde_json::Value) =
                        serde_json::from_str(&text).context("a terminado message")?;
                    match (kind.as_str(), data) {
                        ("stdout", serde_json::Value::String(text)) => {
                            return Ok(Bytes::from(text));
                        }
                        ("disconnect", _) => bail!("terminado: the shell exited"),
                        _ => {}
                    }
                }
                Message::Close(frame) => bail!("terminado closed the socket: {frame:?}"),
                _ => {}
            }
        }
    }
}

/// `tests/bench/terminado_server.py` on a free loopback port.
struct Terminado {
    _child: Child,
    /// Its stdout, kept open so that it never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
    port: u16,
    /// What the server printed when it was ready: terminado's and tornado's versions.
    versions: String,
}

impl Terminado {
    async fn start() -> anyhow::Result<Terminado> {
        let python = terminado_python().await?;
        let dir = tempfile::Builder::new()
            .prefix("zpanel-terminado-")
            .tempdir()?;
        let script = dir.path().join("terminado_server.py");
        std::fs::write(&script, TERMINADO_SERVER)?;
        let log_path = dir.path().join("terminado.log");
        let port = free_port()?;
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log_path)?))
            .kill_on_drop(true)
            .spawn()
            .context("spawn the terminado server")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut versions = String::new();
        let ready = tokio::time::timeout(EXEC_TIMEOUT, stdout.read_line(&mut versions)).await;
        if !matches!(ready, Ok(Ok(n)) if n > 0) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the terminado server did not start: {}", log.trim());
        }
        Ok(Terminado {
            _child: child,
            _stdout: stdout,
            _dir: dir,
            port,
            versions: versions.trim().to_string(),
        })
    }
}

/// A Python that has terminado: a venv beside this binary, made with `python3 -m venv` and
/// filled from PyPI the first time.
async fn terminado_python() -> anyhow::Result<PathBuf> {
    let venv = zpanel_tests::bin_dir().join("terminado-venv");
    let python = venv.join("bin").join("python");
    let mut probe = Command::new(&python);
    probe.args(["-c", "import terminado"]);
    if timed(probe).await.is_ok() {
        return Ok(python);
    }
    println!(
        "installing terminado {TERMINADO_VERSION} from PyPI into {}",
        venv.display()
    );
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(&venv);
    timed(create)
        .await
        .context("python3 -m venv (on Debian: apt-get install -y python3-venv)")?;
    let mut install = Command::new(venv.join("bin").join("pip"));
    install.args([
        "install",
        "--quiet",
        &format!("terminado=={TERMINADO_VERSION}"),
    ]);
    timed_within(install, INSTALL_TIMEOUT)
        .await
        .context("pip install terminado")?;
    Ok(python)
}

/// One terminal peer and what was measured through it.
struct TtyPeer {
    name: &'static str,
    tty: Tty,
    echoes: Vec<Duration>,
    /// MB/s of each `cat` run.
    runs: Vec<f64>,
}

impl TtyPeer {
    fn new(name: &'static str, tty: Tty) -> TtyPeer {
        TtyPeer {
            name,
            tty,
            echoes: Vec::new(),
            runs: Vec::new(),
        }
    }
}

/// Reads output until `needle` appears in it; returns how many bytes that took (up to the
/// end of the piece holding the needle).
async fn wait_for(tty: &mut Tty, needle: &str, timeout: Duration) -> anyhow::Result<u64> {
    let contains = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(needle);
    let keep = needle.len().saturating_sub(1);
    let search = async {
        let mut total = 0u64;
        // The last bytes of the output so far, for a needle split across two pieces.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let piece = tty.output().await?;
            total += piece.len() as u64;
            let mut seam = std::mem::take(&mut tail);
            seam.extend_from_slice(&piece[..piece.len().min(keep)]);
            if contains(&seam) || contains(&piece) {
                return Ok::<_, anyhow::Error>(total);
            }
            tail = if piece.len() >= keep {
                piece[piece.len() - keep..].to_vec()
            } else {
                seam[seam.len().saturating_sub(keep)..].to_vec()
            };
        }
    };
    tokio::time::timeout(timeout, search)
        .await
        .with_context(|| format!("{needle:?} did not appear within {timeout:?}"))?
}

/// Types `count` keystrokes on a fresh line, each once the previous one's echo is back, and
/// returns each echo's time; then clears the line (Ctrl-U).
async fn echo_line(tty: &mut Tty, count: usize) -> anyhow::Result<Vec<Duration>> {
    // The echo of a `z` comes after whatever clearing the previous line printed.
    tty.send("z").await?;
    wait_for(tty, "z", ECHO_TIMEOUT).await?;
    let mut echoes = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        tty.send("a").await?;
        wait_for(tty, "a", ECHO_TIMEOUT).await?;
        echoes.push(started.elapsed());
    }
    tty.send("\x15").await?;
    Ok(echoes)
}

/// Runs `cat FILE` in the shell and counts what the terminal shows until a marker echoed
/// after it (a PTY turns every `\n` into `\r\n`); MB/s from sending the command to the marker.
async fn cat_throughput(tty: &mut Tty, file: &Path, size: u64, run: usize) -> anyhow::Result<f64> {
    // The shell echoes the command line too: the quotes split the marker there.
    let command = format!("cat '{}'; echo CAT-''DONE-{run}\r", file.display());
    let started = Instant::now();
    tty.send(&command).await?;
    let shown = wait_for(tty, &format!("CAT-DONE-{run}"), STREAM_TIMEOUT).await?;
    let took = started.elapsed();
    // Every line's newline arrives as two bytes; anything less means output was lost.
    let expected = size + size / CAT_LINE_BYTES;
    ensure!(
        shown >= expected,
        "the terminal showed {shown} bytes for a file of {size} (at least {expected} expected)"
    );
    Ok(shown as f64 / took.as_secs_f64() / 1e6)
}

/// A file of `size` bytes of printable ASCII in lines of [`CAT_LINE_BYTES`].
fn text_file(path: &Path, size: u64) -> anyhow::Result<()> {
    const LINE: usize = CAT_LINE_BYTES as usize;
    let block: Vec<u8> = (0..10_000 * LINE)
        .map(|i| match i % LINE {
            i if i == LINE - 1 => b'\n',
            column => b' ' + ((column + i / LINE) % 95) as u8,
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = size;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        std::io::Write::write_all(&mut out, &block[..take])?;
        left -= take as u64;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// Keystroke echo and `cat` throughput through Zpanel's browser protocol, `ssh -tt` and
/// terminado, interleaved so that noise hits every peer alike.
async fn terminals(args: &Args, cp: &ControlPlane, sshd: Option<&Sshd>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let terminado = if args.skip_terminado {
        None
    } else {
        let server = Terminado::start()
            .await
            .context("starting terminado (--skip-terminado leaves it out)")?;
        println!(
            "terminado listening on 127.0.0.1:{} ({})",
            server.port, server.versions
        );
        report
            .notes
            .push(format!("terminado peer: {}.", server.versions));
        Some(server)
    };
    let zpanel = ZpanelTty::open(cp)
        .await
        .context("zpanel: open a terminal")?;
    let mut peers = vec![TtyPeer::new("zpanel", Tty::Zpanel(Box::new(zpanel)))];
    if let Some(sshd) = sshd {
        peers.push(TtyPeer::new("ssh -tt", Tty::Ssh(SshTty::open(sshd)?)));
    }
    if let Some(server) = &terminado {
        let tty = TerminadoTty::open(server.port)
            .await
            .context("terminado: open a terminal")?;
        peers.push(TtyPeer::new("terminado", Tty::Terminado(tty)));
    }
    for peer in &mut peers {
        let set_up = async {
            peer.tty.send(QUIET_SHELL).await?;
            wait_for(&mut peer.tty, "SHELL-READY", EXEC_TIMEOUT).await?;
            echo_line(&mut peer.tty, WARMUP_KEYSTROKES).await
        };
        set_up
            .await
            .with_context(|| format!("{}: setting up the shell", peer.name))?;
    }

    // Keystroke echo, one line per peer in turn.
    let mut left = args.keystrokes;
    while left > 0 {
        let line = left.min(LINE_KEYSTROKES);
        for peer in &mut peers {
            let echoes = echo_line(&mut peer.tty, line)
                .await
                .with_context(|| format!("{}: keystroke echo", peer.name))?;
            peer.echoes.extend(echoes);
        }
        left -= line;
    }
    let echo: Vec<(&str, Stats)> = peers
        .iter()
        .map(|p| (p.name, Stats::of(&p.echoes)))
        .collect();
    for (name, s) in &echo {
        println!(
            "keystroke echo, {name}: median {:.3} ms, p99 {:.3} ms over {} keystrokes",
            ms(s.median),
            ms(s.p99),
            s.n
        );
    }

    // `cat` throughput, runs interleaved.
    let dir = tempfile::Builder::new()
        .prefix("zpanel-bench-cat-")
        .tempdir()?;
    let file = dir.path().join("lines.txt");
    text_file(&file, args.terminal_bytes)?;
    for run in 1..=args.terminal_runs {
        for peer in &mut peers {
            let mb_per_s = cat_throughput(&mut peer.tty, &file, args.terminal_bytes, run)
                .await
                .with_context(|| format!("{}: cat", peer.name))?;
            println!(
                "terminal throughput run {run}, {}: {mb_per_s:.0} MB/s",
                peer.name
            );
            peer.runs.push(mb_per_s);
        }
    }
    report_terminals(args, &peers, &echo, &mut report);
    Ok(report)
}

/// The terminal rows: Zpanel against terminado and `ssh -tt`, and every peer in the notes.
fn report_terminals(args: &Args, peers: &[TtyPeer], echo: &[(&str, Stats)], report: &mut Report) {
    let echo_of = |name: &str| echo.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
    let zp = echo[0].1;
    let terminado = echo_of("terminado");
    let ssh = echo_of("ssh -tt");
    let p99_met = zp.p99 < ECHO_TARGET
        && terminado.is_none_or(|t| zp.p99.as_secs_f64() <= 1.5 * t.p99.as_secs_f64());
    let echo_rows = [
        (
            "median",
            zp.median,
            "terminado",
            terminado.map(|s| s.median),
            "-",
            None,
        ),
        (
            "p99",
            zp.p99,
            "terminado",
            terminado.map(|s| s.p99),
            "< 1.5x terminado and < 2 ms",
            Some(p99_met),
        ),
        (
            "median",
            zp.median,
            "ssh -tt",
            ssh.map(|s| s.median),
            "-",
            None,
        ),
        ("p99", zp.p99, "ssh -tt", ssh.map(|s| s.p99), "-", None),
    ];
    for (what, zpanel, name, peer, target, met) in echo_rows {
        report.versus(
            &format!("keystroke echo, {what} of {}, vs {name}", args.keystrokes),
            ms(zpanel),
            peer.map(|p| (name, ms(p))),
            |v| format!("{v:.2} ms"),
            target,
            met,
        );
    }
    let mbs_of = |name: &str| {
        peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| median_f64(&p.runs))
    };
    let zp_mbs = median_f64(&peers[0].runs);
    let (ssh_mbs, terminado_mbs) = (mbs_of("ssh -tt"), mbs_of("terminado"));
    let size = human_bytes(args.terminal_bytes);
    let throughput_rows = [
        (
            "ssh -tt",
            ssh_mbs,
            ">= 0.8x ssh -tt",
            ssh_mbs.map(|s| zp_mbs >= 0.8 * s),
        ),
        ("terminado", terminado_mbs, "-", None),
    ];
    for (name, peer, target, met) in throughput_rows {
        report.versus(
            &format!(
                "`cat` of {size} in the terminal, median of {}, vs {name}",
                args.terminal_runs
            ),
            zp_mbs,
            peer.map(|p| (name, p)),
            in_mb_per_s,
            target,
            met,
        );
    }
    let echoes: Vec<String> = peers
        .iter()
        .zip(echo)
        .map(|(peer, (name, s))| {
            let slow = peer.echoes.iter().filter(|e| **e > ECHO_TARGET).count();
            format!(
                "{name} {:.2} / {:.2} / {:.2} / {:.2}, {slow}",
                ms(s.median),
                ms(s.p90),
                ms(s.p99),
                ms(s.max)
            )
        })
        .collect();
    report.notes.push(format!(
        "Keystroke echo (ms), median / p90 / p99 / max, and how many keystrokes took over {} ms: {}.",
        ms(ECHO_TARGET),
        echoes.join("; ")
    ));
    let runs: Vec<String> = peers
        .iter()
        .map(|p| format!("{} {}", p.name, list_runs(&p.runs)))
        .collect();
    report.notes.push(format!(
        "Terminal throughput runs (MB/s, in order): {}.",
        runs.join("; ")
    ));
}

// === files: `zpanel cp` against scp, and the first page of a large directory ===

/// Entries in the first page of a listing, as the file browser asks for it.
const LIST_PAGE: usize = 500;
/// The bound for showing that first page.
const LIST_TARGET: Duration = Duration::from_millis(100);
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// A pause after each listing: a stopped `zpanel ls` may leave its next page's directory
/// scan running on the host.
const LIST_SETTLE: Duration = Duration::from_millis(250);
/// Listings of the whole directory per peer (`zpanel ls` asks for it page by page).
const WHOLE_LISTING_RUNS: usize = 3;
/// Seed of the copied file's pseudo-random content (the same file in every run).
const RANDOM_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The file benchmark's directories: `served` is the daemon's only root (the host's side,
/// also what scp reaches), `local` the operator's side.
struct FilesDir {
    _dir: tempfile::TempDir,
    served: PathBuf,
    local: PathBuf,
}

impl FilesDir {
    fn new() -> anyhow::Result<FilesDir> {
        let dir = tempfile::Builder::new()
            .prefix("zpanel-bench-files-")
            .tempdir()?;
        let served = dir.path().join("served");
        let local = dir.path().join("local");
        std::fs::create_dir(&served)?;
        std::fs::create_dir(&local)?;
        Ok(FilesDir {
            _dir: dir,
            served,
            local,
        })
    }
}

/// Zpanel as the file benchmark uses it.
struct Zpanel<'a> {
    cp: &'a ControlPlane,
    cli: &'a Cli,
    /// zpanel-cp and zpanel-bridge, whose memory is sampled while files copy.
    watched: &'a [(&'static str, u32)],
}

/// `zpanel cp` against scp each way, then the first page of a large directory.
async fn files(
    args: &Args,
    zpanel: &Zpanel<'_>,
    sshd: Option<&Sshd>,
    dir: &FilesDir,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    copies(args, zpanel, sshd, dir, &mut report)
        .await
        .context("copies")?;
    listings(args, zpanel, sshd, dir, &mut report)
        .await
        .context("listings")?;
    Ok(report)
}

/// One peer copying the file one way, and the MB/s of its runs.
struct Copy<'a> {
    /// "upload" (local to host) or "download" (host to local).
    direction: &'static str,
    peer: &'static str,
    command: CommandFactory<'a>,
    /// Where the copy lands; removed before and after every run.
    destination: &'a Path,
    runs: Vec<f64>,
}

async fn copies(
    args: &Args,
    zpanel: &Zpanel<'_>,
    sshd: Option<&Sshd>,
    dir: &FilesDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    let bytes = args.file_bytes;
    let size = human_bytes(bytes);
    // The same content on both sides: the local file to upload, the host's to download.
    let source = dir.local.join("source.bin");
    let hosted = dir.served.join("source.bin");
    let started = Instant::now();
    let sha256 = tokio::task::spawn_blocking({
        let (source, hosted) = (source.clone(), hosted.clone());
        let size = usize::try_from(bytes)?;
        move || {
            write_random(&source, size, RANDOM_SEED);
            std::fs::copy(&source, &hosted).map(|_| sha256_file(&source))
        }
    })
    .await?
    .context("copying the file to the host's side")?;
    println!(
        "files: wrote {size} of pseudo-random bytes on each side in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let uploaded = dir.served.join("uploaded.bin");
    let downloaded = dir.local.join("downloaded.bin");
    let local_source = source.display().to_string();
    let local_destination = downloaded.display().to_string();
    let zpanel_destination = format!("{HOST}:{}", uploaded.display());
    let zpanel_source = format!("{HOST}:{}", hosted.display());
    let (scp_destination, scp_source, master) = match sshd {
        Some(sshd) => (
            sshd.remote(&uploaded),
            sshd.remote(&hosted),
            sshd.master_options(),
        ),
        None => Default::default(),
    };
    let master = master.each_ref().map(String::as_str);
    let (local_source, local_destination) = (&local_source, &local_destination);
    let (scp_destination, scp_source) = (&scp_destination, &scp_source);
    let copy = |direction, peer, destination, command| Copy {
        direction,
        peer,
        command,
        destination,
        runs: Vec::new(),
    };
    let mut uploads = vec![copy(
        "upload",
        "zpanel",
        &uploaded,
        Box::new(|| {
            zpanel
                .cli
                .command(&["cp", local_source, &zpanel_destination])
        }),
    )];
    let mut downloads = vec![copy(
        "download",
        "zpanel",
        &downloaded,
        Box::new(|| {
            zpanel
                .cli
                .command(&["cp", &zpanel_source, local_destination])
        }),
    )];
    if let Some(sshd) = sshd {
        for (peer, options) in [("scp", &[][..]), ("scp ControlMaster", &master[..])] {
            uploads.push(copy(
                "upload",
                peer,
                &uploaded,
                Box::new(move || sshd.scp(options, local_source, scp_destination)),
            ));
            downloads.push(copy(
                "download",
                peer,
                &downloaded,
                Box::new(move || sshd.scp(options, scp_source, local_destination)),
            ));
        }
    }
    let mut copies = uploads;
    copies.append(&mut downloads);

    let mut peaks = Peaks::new();
    for run in 1..=args.file_runs {
        // Interleaved, so noise on this shared machine hits every peer alike.
        for copy in &mut copies {
            let what = format!("{} {} run {run}", copy.peer, copy.direction);
            remove_if_there(copy.destination)?;
            let watched = if copy.peer == "zpanel" {
                zpanel.watched
            } else {
                &[]
            };
            let (took, sampled) = timed_sampled((copy.command)(), watched)
                .await
                .with_context(|| what.clone())?;
            if copy.peer == "zpanel" {
                keep_peaks(&mut peaks, sampled);
            }
            // Outside the timed part: the size after every run, the content after the first.
            check_copy(copy.destination, bytes, (run == 1).then_some(&sha256))
                .await
                .with_context(|| what.clone())?;
            remove_if_there(copy.destination)?;
            let mb_per_s = bytes as f64 / took.as_secs_f64() / 1e6;
            println!("files: {what}: {mb_per_s:.0} MB/s");
            copy.runs.push(mb_per_s);
        }
    }
    report_copies(args, &copies, &peaks, report);
    Ok(())
}

/// The copy rows: `zpanel cp` each way against scp (and scp through the ControlMaster),
/// Zpanel's peak memory, every run in the notes.
fn report_copies(args: &Args, copies: &[Copy<'_>], peaks: &Peaks, report: &mut Report) {
    let size = human_bytes(args.file_bytes);
    let median_of = |direction: &str, peer: &str| {
        copies
            .iter()
            .find(|c| c.direction == direction && c.peer == peer)
            .map(|c| median_f64(&c.runs))
    };
    for (direction, how) in [("upload", "local to host"), ("download", "host to local")] {
        let zp = median_of(direction, "zpanel").unwrap_or_default();
        let rows = [
            ("scp", ">= 1.0x scp"),
            ("scp ControlMaster", "reference only"),
        ];
        for (peer, target) in rows {
            let theirs = median_of(direction, peer);
            let met = (peer == "scp").then(|| theirs.map(|s| zp >= s)).flatten();
            report.versus(
                &format!(
                    "`zpanel cp` {direction} ({how}) of {size}, median of {}, vs {peer}",
                    args.file_runs
                ),
                zp,
                theirs.map(|s| (peer, s)),
                in_mb_per_s,
                target,
                met,
            );
        }
    }
    let peak = |name: &str| peaks.get(name).copied().unwrap_or(0);
    report.row(
        &format!(
            "peak RSS (VmHWM) while `zpanel cp` copies {size}: CLI / zpanel-cp / zpanel-bridge"
        ),
        format!(
            "{} / {} / {}",
            kib(peak("client")),
            kib(peak("zpanel-cp")),
            kib(peak("zpanel-bridge"))
        ),
        None,
        None,
        BOUNDED,
        Some(peaks.values().all(|k| *k < BOUNDED_KIB)),
    );
    let runs: Vec<String> = copies
        .iter()
        .map(|c| format!("{} {} {}", c.peer, c.direction, list_runs(&c.runs)))
        .collect();
    report.notes.push(format!(
        "File copy runs (MB/s, in order): {}.",
        runs.join("; ")
    ));
}

fn remove_if_there(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A copy has `size` bytes and, when `sha256` is given, that content.
async fn check_copy(path: &Path, size: u64, sha256: Option<&String>) -> anyhow::Result<()> {
    let found = std::fs::metadata(path)
        .with_context(|| format!("the copy {} is missing", path.display()))?
        .len();
    ensure!(
        found == size,
        "the copy {} holds {found} bytes, not {size}",
        path.display()
    );
    if let Some(expected) = sha256 {
        let path = path.to_path_buf();
        let found = tokio::task::spawn_blocking(move || sha256_file(&path)).await?;
        ensure!(
            &found == expected,
            "the copy's content differs: sha256 {found}, expected {expected}"
        );
    }
    Ok(())
}

/// One way of getting the first page of a directory.
enum Lister<'a> {
    /// `GET /api/v1/hosts/HOST/files?path=DIR&limit=500` with the browser's cookie.
    Web(&'a Browser, String),
    /// A command printing one name per line; timed until the page's last line arrived.
    Lines(CommandFactory<'a>),
}

impl Lister<'_> {
    /// Time to get `page` entries (the web API's page must hold exactly that many).
    async fn time(&self, page: usize) -> anyhow::Result<Duration> {
        match self {
            Lister::Web(browser, path) => {
                let started = Instant::now();
                let response = browser.call("GET", path, None).await?;
                let took = started.elapsed();
                let listed = response.json()["entries"].as_array().map(Vec::len);
                ensure!(
                    response.status == 200 && listed == Some(page),
                    "{path} answered {} with {listed:?} entries (expected {page}): {}",
                    response.status,
                    response.body.chars().take(200).collect::<String>()
                );
                Ok(took)
            }
            Lister::Lines(command) => first_lines(command(), page).await,
        }
    }
}

/// Time from spawn until `lines` lines of output arrived; the command is stopped then, as
/// `| head` would stop it. Fails when it printed fewer.
async fn first_lines(mut command: Command, lines: usize) -> anyhow::Result<Duration> {
    let program = quiet(&mut command);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawn {program}"))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).split(b'\n');
    let count = async {
        let mut count = 0;
        while count < lines && stdout.next_segment().await?.is_some() {
            count += 1;
        }
        Ok::<_, std::io::Error>(count)
    };
    let count = tokio::time::timeout(LIST_TIMEOUT, count)
        .await
        .context("timed out")??;
    let took = started.elapsed();
    if count < lines {
        succeeded(&program, &child.wait_with_output().await?)?;
        bail!("{program} printed {count} lines, expected {lines}");
    }
    Ok(took)
}

/// Times each lister `runs` times (after one warm-up each), interleaved, with a pause after
/// each listing so that work a stopped listing left on the host does not slow the next one.
async fn time_listings<'a>(
    listers: &[(&'a str, Lister<'_>)],
    lines: usize,
    runs: usize,
) -> anyhow::Result<BTreeMap<&'a str, Stats>> {
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for run in 0..=runs {
        for (peer, lister) in listers {
            let took = lister.time(lines).await.with_context(|| peer.to_string())?;
            if run > 0 {
                times.entry(peer).or_default().push(took);
            }
            tokio::time::sleep(LIST_SETTLE).await;
        }
    }
    Ok(times
        .iter()
        .map(|(peer, runs)| (*peer, Stats::of(runs)))
        .collect())
}

/// `count` empty files named `entry-000000`, ... in a new directory.
fn empty_files(dir: &Path, count: usize) -> std::io::Result<()> {
    std::fs::create_dir(dir)?;
    for i in 0..count {
        std::fs::File::create(dir.join(format!("entry-{i:06}")))?;
    }
    Ok(())
}

async fn listings(
    args: &Args,
    zpanel: &Zpanel<'_>,
    sshd: Option<&Sshd>,
    dir: &FilesDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    let entries = args.dir_entries;
    // Named relative to the daemon's root (its first), so the query needs no escaping.
    let name = format!("dir-{entries}");
    let path = dir.served.join(&name);
    let started = Instant::now();
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || empty_files(&path, entries)
    })
    .await?
    .context("creating the directory to list")?;
    println!(
        "files: created {entries} empty files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let page = entries.min(LIST_PAGE);
    let browser = Browser::login(zpanel.cp, "admin", &zpanel.cp.admin_password()).await?;
    let api_path = format!("/api/v1/hosts/{HOST}/files?path={name}&limit={LIST_PAGE}");
    let remote = format!("{HOST}:{name}");
    let zpanel_ls = || zpanel.cli.command(&["ls", &remote]);
    let ls_all = format!("ls {}", path.display());
    let ls = format!("{ls_all} | head -{page}");
    let ls_f = format!("ls -f {} | head -{page}", path.display());
    let mut pages: Vec<(&str, Lister<'_>)> = vec![
        ("web API", Lister::Web(&browser, api_path)),
        ("zpanel ls", Lister::Lines(Box::new(zpanel_ls))),
    ];
    let mut wholes: Vec<(&str, Lister<'_>)> =
        vec![("zpanel ls", Lister::Lines(Box::new(zpanel_ls)))];
    if let Some(sshd) = sshd {
        pages.push((
            "ssh ls",
            Lister::Lines(Box::new(|| sshd.via_master(&[&ls]))),
        ));
        pages.push((
            "ssh ls -f",
            Lister::Lines(Box::new(|| sshd.via_master(&[&ls_f]))),
        ));
        wholes.push((
            "ssh ls",
            Lister::Lines(Box::new(|| sshd.via_master(&[&ls_all]))),
        ));
    }
    let stats = time_listings(&pages, page, args.dir_runs)
        .await
        .context("first page")?;
    let whole = time_listings(&wholes, entries, WHOLE_LISTING_RUNS)
        .await
        .context("whole listing")?;
    report_listings(args, page, &stats, &whole, report);
    Ok(())
}

/// The listing rows: the first page through the web API and `zpanel ls` against `ls` over
/// ssh, sorted and not, then the whole directory; every peer's spread in the notes.
fn report_listings(
    args: &Args,
    page: usize,
    stats: &BTreeMap<&str, Stats>,
    whole: &BTreeMap<&str, Stats>,
    report: &mut Report,
) {
    let entries = args.dir_entries;
    // No `|` in a row: it would split the Markdown table's cell.
    let references = [
        ("ssh ls", "`ls` (sorted)"),
        ("ssh ls -f", "`ls -f` (unsorted)"),
    ];
    let ways = [
        ("web API", "through the web API"),
        ("zpanel ls", "with `zpanel ls HOST:DIR`"),
    ];
    for (peer, how) in ways {
        let zp = stats[peer].median;
        for (i, (reference, what)) in references.iter().enumerate() {
            let label = format!("{reference}, ControlMaster");
            let theirs = stats.get(reference).map(|s| (label.as_str(), ms(s.median)));
            report.versus(
                &format!(
                    "first page ({page} of {entries} entries) {how}, median of {}, vs {what}",
                    args.dir_runs
                ),
                ms(zp),
                theirs,
                |v| format!("{v:.1} ms"),
                if i == 0 { "< 100 ms" } else { "-" },
                (i == 0).then_some(zp < LIST_TARGET),
            );
        }
    }
    report.versus(
        &format!(
            "whole listing of {entries} entries with `zpanel ls HOST:DIR`, median of {WHOLE_LISTING_RUNS}, vs `ls`"
        ),
        ms(whole["zpanel ls"].median),
        whole
            .get("ssh ls")
            .map(|s| ("ssh ls, ControlMaster", ms(s.median))),
        |v| format!("{v:.0} ms"),
        "(information)",
        None,
    );
    let spreads: Vec<String> = stats
        .iter()
        .map(|(peer, s)| {
            format!(
                "{peer} {:.1} / {:.1} / {:.1}",
                ms(s.median),
                ms(s.p90),
                ms(s.max)
            )
        })
        .collect();
    report.notes.push(format!(
        "First page of {entries} entries (ms), median / p90 / max: {}.",
        spreads.join("; ")
    ));
}

// === idle sessions: a load generator of synthetic daemons ===

struct SessionsResult {
    target: usize,
    enrolled: usize,
    enroll_took: Duration,
    online: u64,
    online_took: Duration,
    heartbeat: Duration,
    rss_fresh: u64,
    rss_before: u64,
    rss_after: u64,
    hwm_after: u64,
    online_after_settle: u64,
    settle: Duration,
    cpu_percent: f64,
    handshake: Option<Stats>,
    failures: BTreeMap<String, usize>,
    retries: usize,
    dropped: BTreeMap<String, usize>,
    listen_overflows: u64,
}

impl SessionsResult {
    fn report(&self, report: &mut Report) {
        let n = self.target;
        let all = self.online as usize >= n && self.online_after_settle as usize >= n;
        report.row(
            &format!(
                "idle bridge sessions online (heartbeat {:?}, {} s held)",
                self.heartbeat,
                self.settle.as_secs()
            ),
            format!(
                "{} / {n} after {:.1} s",
                self.online_after_settle,
                self.online_took.as_secs_f64()
            ),
            None,
            None,
            &format!("{n}"),
            Some(all),
        );
        report.row(
            &format!(
                "zpanel-cp RSS holding {} idle sessions",
                self.online_after_settle
            ),
            format!("{} (peak {})", kib(self.rss_after), kib(self.hwm_after)),
            None,
            None,
            if n >= 10_000 {
                "< 1 GiB for 10,000"
            } else {
                "< 1 GiB for 10,000 (fewer here: see per session)"
            },
            (n >= 10_000).then_some(all && self.rss_after < 1024 * 1024),
        );
        let per_session = self.rss_after.saturating_sub(self.rss_before) as f64
            / (self.online_after_settle.max(1)) as f64;
        report.row(
            "zpanel-cp RSS per idle session (after minus before)",
            format!("{per_session:.1} KiB"),
            None,
            None,
            "< 105 KiB (1 GiB / 10,000)",
            Some(per_session < 1024.0 * 1024.0 / 10_000.0),
        );
        report.row(
            &format!(
                "zpanel-cp CPU holding {} idle sessions",
                self.online_after_settle
            ),
            format!("{:.0} % of one core", self.cpu_percent),
            None,
            None,
            "(information)",
            None,
        );
        if let Some(handshake) = self.handshake {
            report.row(
                "session handshake (TCP+TLS+WebSocket+hello to welcome), median / p90 / p99 / max",
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0} ms",
                    ms(handshake.median),
                    ms(handshake.p90),
                    ms(handshake.p99),
                    ms(handshake.max)
                ),
                None,
                None,
                "(information)",
                None,
            );
        }
        report.row(
            &format!("enrolment of {} hosts over the HTTP API", self.enrolled),
            format!(
                "{:.1} s ({:.0} /s)",
                self.enroll_took.as_secs_f64(),
                self.enrolled as f64 / self.enroll_took.as_secs_f64().max(1e-9)
            ),
            None,
            None,
            "(information)",
            None,
        );
        report.notes.push(format!(
            "Idle sessions: zpanel-cp RSS {} fresh, {} after enrolling {} hosts (before sessions), {} with the sessions open.",
            kib(self.rss_fresh),
            kib(self.rss_before),
            self.enrolled,
            kib(self.rss_after)
        ));
        if self.listen_overflows > 0 {
            report.notes.push(format!(
                "Idle sessions: the kernel counted {} listen-queue overflows while the sessions opened \
                 (TcpExt ListenOverflows; SYNs dropped and retransmitted after 1 s).",
                self.listen_overflows
            ));
        }
        if self.retries > 0 {
            report.notes.push(format!(
                "Idle sessions: {} handshakes were retried.",
                self.retries
            ));
        }
        for (reason, count) in &self.failures {
            report.notes.push(format!(
                "Idle sessions: {count} sessions never opened: {reason}"
            ));
        }
        for (reason, count) in &self.dropped {
            report.notes.push(format!(
                "Idle sessions: {count} sessions dropped after opening: {reason}"
            ));
        }
    }
}

#[derive(Default)]
struct SessionCounters {
    welcomed: AtomicUsize,
    /// The heartbeat interval the control plane asked for in its welcome.
    heartbeat_ms: AtomicU64,
    retries: AtomicUsize,
    failures: Mutex<BTreeMap<String, usize>>,
    dropped: Mutex<BTreeMap<String, usize>>,
    handshakes: Mutex<Vec<Duration>>,
}

impl SessionCounters {
    fn count(map: &Mutex<BTreeMap<String, usize>>, reason: String) {
        let reason: String = reason.chars().take(160).collect();
        *map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }
}

/// One enrolled synthetic host: its name and TLS client configuration (own key and cert).
struct SyntheticHost {
    name: String,
    tls: Arc<rustls::ClientConfig>,
}

/// Where synthetic hosts dial.
struct BridgeTarget {
    authority: String,
    server_name: ServerName<'static>,
    session_url: String,
}

async fn idle_sessions(args: &Args) -> anyhow::Result<SessionsResult> {
    let n = args.sessions;
    println!("idle sessions: starting a fresh control plane for {n} sessions");
    let cp = ControlPlane::start().await;
    let cp_pid = cp.pid().context("zpanel-cp is not running")?;
    let cli = cp.admin_cli().await;
    let uses = u32::try_from(n)
        .ok()
        .filter(|u| *u <= 100_000)
        .context("at most 100000 sessions (join token uses)")?;
    let token = cli.join_token(uses).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_fresh = memory_kib(cp_pid).0;

    // Enrol every host through the HTTP API, as `zpanel-bridge join` does.
    let web = WebClient::new(&cp.url, &cp.pin)?;
    let started = Instant::now();
    let hosts: Vec<anyhow::Result<SyntheticHost>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (web, token) = (&web, token.as_str());
            async move {
                tokio::time::timeout(
                    Duration::from_secs(120),
                    enroll(web, token, format!("bench-{i:05}")),
                )
                .await?
            }
        })
        .buffer_unordered(args.enroll_concurrency.max(1))
        .collect()
        .await;
    let enroll_took = started.elapsed();
    let mut enrolled = Vec::with_capacity(n);
    let mut enroll_errors: BTreeMap<String, usize> = BTreeMap::new();
    for host in hosts {
        match host {
            Ok(host) => enrolled.push(host),
            Err(e) => *enroll_errors.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    println!(
        "idle sessions: enrolled {} hosts in {:.1} s",
        enrolled.len(),
        enroll_took.as_secs_f64()
    );
    ensure!(
        enroll_errors.is_empty() || !enrolled.is_empty(),
        "no host could enrol: {enroll_errors:?}"
    );
    let enrolled_count = enrolled.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = memory_kib(cp_pid).0;

    // Open one session per host from this process.
    let target = Arc::new(bridge_target(&cp.bridge_url)?);
    let counters = Arc::new(SessionCounters::default());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut sessions = JoinSet::new();
    let overflows_before = listen_overflows();
    let started = Instant::now();
    for host in enrolled {
        let (target, counters, gate) = (target.clone(), counters.clone(), gate.clone());
        sessions.spawn(hold_session(host, target, counters, gate));
    }
    let deadline = Duration::from_secs(120) + Duration::from_millis(10 * n as u64);
    let mut online = 0;
    let mut last_progress = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let now_online = cp.metric("zpanel_hosts_online").await;
        if now_online > online {
            last_progress = Instant::now();
        }
        online = now_online;
        if online as usize >= enrolled_count {
            break;
        }
        let settled =
            counters.welcomed.load(Ordering::Relaxed) + failed_total(&counters) >= enrolled_count;
        if started.elapsed() > deadline
            || (settled && last_progress.elapsed() > Duration::from_secs(10))
        {
            println!("idle sessions: stopped waiting with {online} of {enrolled_count} online");
            break;
        }
        if last_line.elapsed() > Duration::from_secs(5) {
            println!(
                "idle sessions: {online} online after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_line = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let online_took = started.elapsed();
    let listen_overflows = listen_overflows().saturating_sub(overflows_before);
    println!(
        "idle sessions: {online} online after {:.1} s",
        online_took.as_secs_f64()
    );

    // Hold them for several heartbeat intervals: the control plane declares a session dead
    // after three silent intervals, so every session still online has kept up its heartbeats.
    let settle = Duration::from_secs(10);
    let cpu_started = cpu_time(cp_pid);
    let settle_started = Instant::now();
    tokio::time::sleep(settle).await;
    let cpu_percent = (cpu_time(cp_pid) - cpu_started).as_secs_f64()
        / settle_started.elapsed().as_secs_f64()
        * 100.0;
    let (rss_after, hwm_after) = memory_kib(cp_pid);
    let online_after_settle = cp.metric("zpanel_hosts_online").await;
    println!(
        "idle sessions: {online_after_settle} online after holding {settle:?}; zpanel-cp RSS {}",
        kib(rss_after)
    );

    sessions.abort_all();
    while sessions.join_next().await.is_some() {}
    let handshake = {
        let handshakes = counters
            .handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (!handshakes.is_empty()).then(|| Stats::of(&handshakes))
    };
    let mut failures =
        std::mem::take(&mut *counters.failures.lock().unwrap_or_else(|p| p.into_inner()));
    for (reason, count) in enroll_errors {
        *failures
            .entry(format!("enrolment failed: {reason}"))
            .or_default() += count;
    }
    let dropped = std::mem::take(&mut *counters.dropped.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(SessionsResult {
        target: n,
        enrolled: enrolled_count,
        enroll_took,
        online,
        online_took,
        heartbeat: Duration::from_millis(counters.heartbeat_ms.load(Ordering::Relaxed)),
        rss_fresh,
        rss_before,
        rss_after,
        hwm_after,
        online_after_settle,
        settle,
        cpu_percent,
        handshake,
        failures,
        retries: counters.retries.load(Ordering::Relaxed),
        dropped,
        listen_overflows,
    })
}

/// The kernel's count of connections dropped because a listener's accept queue was full
/// (this network namespace, all listeners).
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

fn failed_total(counters: &SessionCounters) -> usize {
    counters
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .sum()
}

fn bridge_target(bridge_url: &str) -> anyhow::Result<BridgeTarget> {
    let (authority, host) = zpanel_tests::authority_and_host(bridge_url)?;
    Ok(BridgeTarget {
        server_name: ServerName::try_from(host)?,
        session_url: format!("{}/v1/session", bridge_url.trim_end_matches('/')),
        authority,
    })
}

/// HTTPS to the control plane's web API, trusting its pinned CA.
struct WebClient {
    authority: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl WebClient {
    fn new(url: &str, pin: &str) -> anyhow::Result<WebClient> {
        let (authority, host) = zpanel_tests::authority_and_host(url)?;
        let config =
            zpanel_shared::tls::client_config(ServerTrust::Pin(pin.into()), None, &[b"http/1.1"])?;
        Ok(WebClient {
            authority,
            server_name: ServerName::try_from(host)?,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// One `POST` with a JSON body on its own connection; returns the status and body.
    async fn post_json(&self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request("POST", path, "Content-Type: application/json", body)
            .await
    }

    /// One `GET` with an API token on its own connection; returns the status and body.
    async fn get(&self, path: &str, token: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let authorization = format!("Authorization: Bearer {token}");
        self.request("GET", path, &authorization, b"").await
    }

    /// One request with one extra header line on its own connection; returns the status
    /// and body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        header: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .context("connect")?;
        let mut tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .context("tls")?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            body.len()
        );
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(body).await?;
        tls.flush().await?;
        let mut response = Vec::new();
        // The server may close without a TLS close_notify; what arrived is the answer.
        let _ = tls.read_to_end(&mut response).await;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("incomplete HTTP response")?;
        let status = String::from_utf8_lossy(&response[..split])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status")?;
        Ok((status, response[split + 4..].to_vec()))
    }
}

/// Enrols one synthetic host: its own key, a CSR, one use of the join token.
async fn enroll(web: &WebClient, token: &str, name: String) -> anyhow::Result<SyntheticHost> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.clone());
    let request = EnrollRequest {
        token: token.into(),
        csr_pem: params.serialize_request(&key)?.pem()?,
        name: name.clone(),
        hostname: name.clone(),
        os: "bench".into(),
        kernel: String::new(),
        arch: std::env::consts::ARCH.into(),
        daemon_version: "bench".into(),
        labels: [("role".to_string(), "bench".to_string())].into(),
        previous_cert_pem: None,
    };
    let (status, body) = web
        .post_json(ENROLL_PATH, &serde_json::to_vec(&request)?)
        .await?;
    ensure!(
        status == 200,
        "enrolment answered {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    let enrolled: EnrollResponse = serde_json::from_slice(&body).context("enrolment answer")?;
    let ca = certs_from_pem(enrolled.ca_pem.as_bytes())?;
    let chain = certs_from_pem(enrolled.cert_pem.as_bytes())?;
    let key = key_from_pem(key.serialize_pem().as_bytes())?;
    let tls = zpanel_shared::tls::client_config(
        ServerTrust::Cas(ca),
        Some((chain, key)),
        &[b"http/1.1"],
    )?;
    Ok(SyntheticHost {
        name,
        tls: Arc::new(tls),
    })
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Opens a session for `host` (retrying a few times, as a daemon would), then keeps it
/// alive: a ping every heartbeat interval, a pong for every ping.
async fn hold_session(
    host: SyntheticHost,
    target: Arc<BridgeTarget>,
    counters: Arc<SessionCounters>,
    gate: Arc<Semaphore>,
) {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 0;
    let (ws, interval) = loop {
        attempt += 1;
        let opened = {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            let started = Instant::now();
            let opened =
                tokio::time::timeout(Duration::from_secs(60), open_session(&host, &target)).await;
            match opened {
                Ok(Ok(opened)) => {
                    counters
                        .handshakes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(started.elapsed());
                    Ok(opened)
                }
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("no welcome within 60 s".to_string()),
            }
        };
        match opened {
            Ok(opened) => break opened,
            Err(reason) if attempt >= ATTEMPTS => {
                SessionCounters::count(&counters.failures, reason);
                return;
            }
            Err(_) => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    };
    counters.welcomed.fetch_add(1, Ordering::Relaxed);
    counters
        .heartbeat_ms
        .store(interval.as_millis() as u64, Ordering::Relaxed);
    let reason = keep_alive(ws, interval).await;
    SessionCounters::count(&counters.dropped, reason);
}

async fn open_session(
    host: &SyntheticHost,
    target: &BridgeTarget,
) -> anyhow::Result<(Ws, Duration)> {
    let tcp = TcpStream::connect(&target.authority)
        .await
        .context("tcp connect")?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(host.tls.clone())
        .connect(target.server_name.clone(), tcp)
        .await
        .context("tls")?;
    let config = zpanel_shared::transport::websocket_config(DEFAULT_MAX_FRAME_BYTES)
        .read_buffer_size(CLIENT_READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(target.session_url.as_str(), tls, Some(config))
            .await
            .context("websocket")?;
    let hello = Hello {
        min_version: BRIDGE_PROTOCOL_MIN_VERSION,
        max_version: BRIDGE_PROTOCOL_VERSION,
        host: Some(HostInfo {
            hostname: host.name.clone(),
            os: "bench".into(),
            kernel: String::new(),
            arch: std::env::consts::ARCH.into(),
            daemon_version: "bench".into(),
            ..Default::default()
        }),
    };
    ws.send(Message::Binary(frame::encode(Body::Hello(hello))))
        .await
        .context("hello")?;
    let welcome = match ws.next().await {
        Some(Ok(Message::Binary(bytes))) => match frame::decode(bytes, DEFAULT_MAX_FRAME_BYTES)? {
            Body::Welcome(welcome) => welcome,
            Body::Close(close) => bail!("refused: {}", close.reason),
            _ => bail!("first frame is not a welcome"),
        },
        other => bail!("no welcome: {other:?}"),
    };
    Ok((
        ws,
        Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100))),
    ))
}

/// What a synthetic daemon answers the control plane's next message with: a pong to a ping,
/// nothing to the rest (frames other than pings and closes are handed to `other`), or why
/// the session ended (`Err`).
fn answer(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    other: impl FnOnce(Body),
) -> Result<Option<Body>, String> {
    match message {
        Some(Ok(Message::Binary(bytes))) => match frame::decode(bytes, DEFAULT_MAX_FRAME_BYTES) {
            Ok(Body::Ping(beat)) => Ok(Some(Body::Pong(beat))),
            Ok(Body::Close(close)) => Err(format!("closed by the control plane: {}", close.reason)),
            Ok(body) => {
                other(body);
                Ok(None)
            }
            Err(e) => Err(format!("bad frame: {e}")),
        },
        Some(Ok(Message::Close(_))) | None => Err("the control plane closed the connection".into()),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(format!("transport: {e}")),
    }
}

/// Keeps a session alive until it ends; returns why it ended.
async fn keep_alive(mut ws: Ws, interval: Duration) -> String {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    loop {
        if let Err(why) = turn(&mut ws, &mut tick, &mut nonce, |_| {}).await {
            return why;
        }
    }
}

/// One turn of a synthetic daemon's session: the control plane's next message answered (see
/// [`answer`]), or a ping numbered after `nonce` when `tick` comes first; then the reply, if
/// any, sent. `Err`: why the session ended.
async fn turn(
    ws: &mut Ws,
    tick: &mut tokio::time::Interval,
    nonce: &mut u64,
    other: impl FnOnce(Body),
) -> Result<(), String> {
    let reply = tokio::select! {
        message = ws.next() => answer(message, other)?,
        _ = tick.tick() => {
            *nonce += 1;
            Some(Body::Ping(Heartbeat { nonce: *nonce }))
        }
    };
    if let Some(body) = reply {
        ws.send(Message::Binary(frame::encode(body)))
            .await
            .map_err(|e| format!("transport: {e}"))?;
    }
    Ok(())
}

// === metrics: the idle daemon against node-exporter, ingest, a 30-day query ===

/// The host whose idle daemon is watched, and the one whose 30 days are queried.
const METRICS_HOST: &str = "bench-metrics";
const MONTH_HOST: &str = "bench-month";
/// How often the idle daemon takes a sample and node-exporter is scraped.
const METRICS_INTERVAL: &str = "10s";
const SCRAPE_EVERY: Duration = Duration::from_secs(10);
/// Memory samples of both while idle.
const IDLE_SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Synthetic hosts that send samples at once, how long ingest is counted (after a warm-up),
/// and the batches each host has in flight (like a daemon catching up after an outage).
const INGEST_HOSTS: usize = 50;
const INGEST_WARMUP: Duration = Duration::from_secs(3);
const INGEST_COUNTED: Duration = Duration::from_secs(20);
const INGEST_WINDOW: u64 = 4;
const INGEST_BATCH: u64 = 100;
/// The ingest target, stored values per second.
const INGEST_TARGET: f64 = 50_000.0;
/// The month of one host is filled at one sample a minute; then queried this often.
const MONTH_DAYS: i64 = 30;
const MONTH_SPACING: i64 = 60;
const QUERY_RUNS: usize = 50;
const QUERY_TARGET: Duration = Duration::from_millis(50);

async fn metrics(args: &Args) -> anyhow::Result<Report> {
    let mut report = Report::default();
    println!("metrics: starting a fresh control plane");
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let web = WebClient::new(&cp.url, &cp.pin)?;

    idle_telemetry(args, &cp, &cli, &web, &mut report).await?;
    ingest(&cp, &cli, &web, &mut report).await?;
    month_query(&mut cp, &cli, &mut report).await?;
    Ok(report)
}

/// (a) A daemon taking a sample every 10 s into a control plane, and node-exporter scraped
/// every 10 s, watched side by side: median RSS and CPU time.
async fn idle_telemetry(
    args: &Args,
    cp: &ControlPlane,
    cli: &Cli,
    web: &WebClient,
    report: &mut Report,
) -> anyhow::Result<()> {
    let daemon = cp
        .add_online_host_with(cli, METRICS_HOST, &[], |daemon| {
            daemon.set_metrics_interval(METRICS_INTERVAL)
        })
        .await;
    let bridge_pid = daemon.pid().context("zpanel-bridge is not running")?;
    let exporter = if args.skip_node_exporter {
        None
    } else {
        NodeExporter::start().await
    };
    tokio::time::sleep(IDLE_SETTLE).await;
    let window = Duration::from_secs(args.metrics_seconds.max(1));
    println!(
        "metrics: watching the idle daemon{} for {} s",
        if exporter.is_some() {
            " and node-exporter"
        } else {
            ""
        },
        window.as_secs()
    );
    let scrapes = AtomicU64::new(0);
    let scraping = async {
        let Some(exporter) = exporter.as_ref() else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(SCRAPE_EVERY);
        loop {
            tick.tick().await;
            if exporter.scrape(1).await.is_ok() {
                scrapes.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let cpu_before = (
        cpu_time(bridge_pid),
        exporter.as_ref().map(|e| cpu_time(e.pid)),
    );
    let mut bridge_rss = Vec::new();
    let mut exporter_rss = Vec::new();
    let watching = async {
        let started = Instant::now();
        while started.elapsed() < window {
            bridge_rss.push(memory_kib(bridge_pid).0 as f64);
            if let Some(exporter) = exporter.as_ref() {
                exporter_rss.push(memory_kib(exporter.pid).0 as f64);
            }
            tokio::time::sleep(IDLE_SAMPLE_EVERY).await;
        }
    };
    tokio::select! {
        () = watching => {}
        () = scraping => {}
    }
    let bridge_cpu = cpu_time(bridge_pid) - cpu_before.0;
    let exporter_cpu = exporter
        .as_ref()
        .zip(cpu_before.1)
        .map(|(e, before)| cpu_time(e.pid) - before);

    // The daemon really collected and delivered meanwhile.
    let path = format!("/api/v1/hosts/{METRICS_HOST}/metrics?metric=cpu&range=1h");
    let (status, body) = web.get(&path, &cp.admin_token).await?;
    ensure!(
        status == 200,
        "{path} answered {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    let stored = point_count(&serde_json::from_slice(&body)?);
    ensure!(
        stored > 0,
        "the idle daemon's samples never reached the control plane"
    );

    let bridge_median = median_f64(&bridge_rss);
    let exporter_median = (!exporter_rss.is_empty()).then(|| median_f64(&exporter_rss));
    let seconds = window.as_secs();
    report.versus(
        &format!(
            "zpanel-bridge RSS, idle, a sample every {METRICS_INTERVAL}, median over {seconds} s"
        ),
        bridge_median,
        exporter_median.map(|k| ("node-exporter, scraped every 10 s", k)),
        |k| kib(k as u64),
        "< node-exporter",
        exporter_median.map(|peer| bridge_median < peer),
    );
    report.versus(
        &format!("zpanel-bridge CPU time over those {seconds} s"),
        bridge_cpu.as_secs_f64(),
        exporter_cpu.map(|cpu| ("node-exporter", cpu.as_secs_f64())),
        |s| format!("{s:.2} s"),
        "< node-exporter",
        exporter_cpu.map(|peer| bridge_cpu < peer),
    );
    report.notes.push(format!(
        "Idle: {stored} points of the daemon's cpu series (total and per core) stored in the \
         last hour; node-exporter scraped {} times. The control plane runs the harness's 1 s \
         heartbeat (the default is 10 s), so the daemon also sent ten times its usual pings.",
        scrapes.load(Ordering::Relaxed)
    ));
    Ok(())
}

/// Points in a metrics answer, over every series.
fn point_count(answer: &serde_json::Value) -> usize {
    answer["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|s| s["points"].as_array())
                .map(Vec::len)
                .sum()
        })
        .unwrap_or(0)
}

/// A plausible sample of a small server: 2 cores, 2 file systems, 2 interfaces, no swap
/// (25 stored values); `n` varies it.
fn bench_sample(at_ms: i64, n: u64) -> MetricSample {
    let wave = (n % 60) as f64;
    let disk = |mount: &str, device: &str, total: u64, used: u64| DiskUsage {
        mount: mount.into(),
        device: device.into(),
        fs_type: "ext4".into(),
        total,
        used,
    };
    let network = |interface: &str, rx_bps: f64, tx_bps: f64| NetworkRate {
        interface: interface.into(),
        rx_bps,
        tx_bps,
    };
    MetricSample {
        at_ms,
        cpu_percent: 10.0 + wave / 2.0,
        cpu_cores: vec![8.0 + wave / 3.0, 12.0 + wave / 4.0],
        load1: 0.3 + wave / 100.0,
        load5: 0.2,
        load15: 0.1,
        memory_total: 4 << 30,
        memory_used: (1 << 30) + (n % 1000) * 4096,
        swap_total: 0,
        swap_used: 0,
        disks: vec![
            disk("/", "/dev/vda1", 40 << 30, (12 << 30) + n * 512),
            disk("/srv", "/dev/vdb", 100 << 30, 30 << 30),
        ],
        disk_read_bps: 1000.0 * wave,
        disk_write_bps: 5000.0 + wave,
        networks: vec![
            network("eth0", 2000.0 + wave, 1500.0),
            network("docker0", 10.0, 20.0),
        ],
        uptime_seconds: 86_400 + n,
        processes: 150,
    }
}

/// (b) Stored values per second: synthetic hosts send batches of samples over real bridge
/// sessions as fast as the control plane acknowledges them.
async fn ingest(
    cp: &ControlPlane,
    cli: &Cli,
    web: &WebClient,
    report: &mut Report,
) -> anyhow::Result<()> {
    let values_per_sample = zpanel_cp::service::metrics::sample_values(&bench_sample(0, 0)).len();
    let token = cli.join_token(INGEST_HOSTS as u32).await;
    let target = Arc::new(bridge_target(&cp.bridge_url)?);
    let acked = Arc::new(AtomicU64::new(0));
    let mut feeders = JoinSet::new();
    for i in 0..INGEST_HOSTS {
        let host = enroll(web, &token, format!("bench-ingest-{i:03}")).await?;
        let (ws, heartbeat) = open_session(&host, &target).await?;
        feeders.spawn(feed_samples(ws, heartbeat, acked.clone()));
    }
    println!("metrics: {INGEST_HOSTS} hosts sending samples");
    tokio::time::sleep(INGEST_WARMUP).await;
    let cp_pid = cp.pid().context("zpanel-cp is not running")?;
    let (acked_before, cpu_before, started) = (
        acked.load(Ordering::Relaxed),
        cpu_time(cp_pid),
        Instant::now(),
    );
    tokio::time::sleep(INGEST_COUNTED).await;
    let samples = acked.load(Ordering::Relaxed) - acked_before;
    let elapsed = started.elapsed();
    let cp_cpu = cpu_time(cp_pid) - cpu_before;
    if let Some(ended) = feeders.try_join_next() {
        bail!("a sending session ended early: {}", ended?);
    }
    feeders.abort_all();
    let page = cp.metrics().await;
    let counted = |name: &str| -> u64 {
        page.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let dropped = counted("zpanel_metric_samples_dropped_total");
    let refused = counted("zpanel_metric_batches_refused_total");
    ensure!(
        dropped == 0,
        "the control plane dropped {dropped} samples of the ingest run"
    );
    let per_second = (samples * values_per_sample as u64) as f64 / elapsed.as_secs_f64();
    println!("metrics: ingest {per_second:.0} values/s");
    report.row(
        &format!(
            "ingest on SQLite, {INGEST_HOSTS} hosts over bridge sessions, {} s",
            INGEST_COUNTED.as_secs()
        ),
        format!(
            "{per_second:.0} values/s ({:.0} samples/s)",
            per_second / values_per_sample as f64
        ),
        None,
        None,
        "50,000 values/s",
        Some(per_second >= INGEST_TARGET),
    );
    report.notes.push(format!(
        "Ingest: {values_per_sample} values per sample, {samples} samples acknowledged in \
         {:.1} s, none dropped, {refused} batches left for a resend (writer queue full); \
         zpanel-cp used {:.0} % of one core.",
        elapsed.as_secs_f64(),
        100.0 * cp_cpu.as_secs_f64() / elapsed.as_secs_f64()
    ));
    Ok(())
}

/// Sends samples on a session as its acknowledgements allow (at most [`INGEST_WINDOW`]
/// batches unacknowledged), one a second of the host's past, and counts the acknowledged
/// ones into `acked`; answers pings and pings back. Returns why the session ended.
async fn feed_samples(mut ws: Ws, heartbeat: Duration, acked: Arc<AtomicU64>) -> String {
    // Far enough back that a 20 s run at one sample a second never reaches the present,
    // well within the 48 h of raw values kept.
    let start_ms = zpanel_shared::unix_now_ms() - 40 * 3600 * 1000;
    let (mut next_seq, mut acknowledged) = (0u64, 0u64);
    let mut tick = tokio::time::interval(heartbeat);
    let mut nonce = 0u64;
    loop {
        if next_seq - acknowledged < INGEST_WINDOW * INGEST_BATCH {
            let samples = (next_seq..next_seq + INGEST_BATCH)
                .map(|n| bench_sample(start_ms + n as i64 * 1000, n))
                .collect();
            let batch = MetricBatch {
                first_seq: next_seq,
                samples,
                sent_at_ms: zpanel_shared::unix_now_ms(),
                interval_ms: 1000,
            };
            next_seq += INGEST_BATCH;
            if let Err(e) = ws
                .send(Message::Binary(frame::encode(Body::Metrics(batch))))
                .await
            {
                return format!("transport: {e}");
            }
            continue;
        }
        let counted = |body| {
            if let Body::MetricsAck(ack) = body {
                let now = ack.next_seq.clamp(acknowledged, next_seq);
                acked.fetch_add(now - acknowledged, Ordering::Relaxed);
                acknowledged = now;
            }
        };
        if let Err(why) = turn(&mut ws, &mut tick, &mut nonce, counted).await {
            return why;
        }
    }
}

/// (c) One host's 30 days (a sample a minute, rolled up and expired as the control plane
/// keeps them), then `range=30d` over HTTP, timed.
async fn month_query(cp: &mut ControlPlane, cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let month = cp.add_host(cli, MONTH_HOST).await;
    drop(month);
    let host_id = cli
        .hosts()
        .await
        .into_iter()
        .find(|host| host["name"] == MONTH_HOST)
        .and_then(|host| host["id"].as_str().map(str::to_string))
        .context("the month host is not listed")?;
    // The control plane keeps its series ids in memory: fill while it is stopped.
    cp.kill().await;
    let filling = Instant::now();
    let rows = fill_month(&cp.data_dir().join("zpanel.db"), &host_id).await?;
    let filled = filling.elapsed();
    cp.restart().await;
    println!(
        "metrics: {MONTH_DAYS} days of {MONTH_HOST} filled ({rows} raw values) in {:.1} s",
        filled.as_secs_f64()
    );

    let web = WebClient::new(&cp.url, &cp.pin)?;
    let path = format!("/api/v1/hosts/{MONTH_HOST}/metrics?range=30d");
    let mut times = Vec::new();
    let mut points = 0;
    for run in 0..WARMUP_RUNS + QUERY_RUNS {
        let started = Instant::now();
        let (status, body) = web.get(&path, &cp.admin_token).await?;
        let took = started.elapsed();
        ensure!(
            status == 200,
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        points = point_count(&answer);
        ensure!(
            answer["resolution"] == "1h" && points > 0,
            "the 30-day query answered no hourly points: {answer}"
        );
        if run >= WARMUP_RUNS {
            times.push(took);
        }
    }
    let stats = Stats::of(&times);
    let p95 = percentile(
        &{
            let mut sorted = times.clone();
            sorted.sort();
            sorted
        },
        0.95,
    );
    report.row(
        &format!("30-day query of one host, every metric (`range=30d`, {points} points), median of {QUERY_RUNS}"),
        format!("{:.1} ms", ms(stats.median)),
        None,
        None,
        "< 50 ms",
        Some(stats.median < QUERY_TARGET),
    );
    report.row(
        "30-day query, p95",
        format!("{:.1} ms", ms(p95)),
        None,
        None,
        "< 50 ms",
        Some(p95 < QUERY_TARGET),
    );
    report.notes.push(format!(
        "30 days: {rows} raw values stored through the store API in {:.1} s, rolled up and \
         expired to what the control plane keeps (raw 48 h, minutes 14 days, hours); each \
         query is a fresh TLS connection with the admin's API token.",
        filled.as_secs_f64()
    ));
    Ok(())
}

/// Writes a month of samples of `host_id`, one a minute, into the control plane's database
/// through its store, then rolls them up and expires them with the default retention.
/// Returns how many raw values were written.
async fn fill_month(database: &Path, host_id: &str) -> anyhow::Result<usize> {
    use zpanel_cp::store::{MetricExpiry, RawRow, SeriesRecord, Store};
    const DAY: i64 = 86_400;
    const ROWS_PER_WRITE: usize = 50_000;
    let store = Store::open(database).await?;
    let first_id = store
        .metric_series()
        .await?
        .iter()
        .map(|series| series.id)
        .max()
        .unwrap_or(0)
        + 1;
    let series: Vec<SeriesRecord> = zpanel_cp::service::metrics::sample_values(&bench_sample(0, 0))
        .into_iter()
        .zip(first_id..)
        .map(|(value, id)| SeriesRecord {
            id,
            host_id: host_id.to_string(),
            metric: value.metric.to_string(),
            instance: value.instance,
        })
        .collect();
    let now = zpanel_shared::unix_now();
    let start = now - MONTH_DAYS * DAY;
    let mut rows = Vec::with_capacity(ROWS_PER_WRITE + series.len());
    let mut written = 0;
    let mut new_series = series.clone();
    for (n, at) in (start..now).step_by(MONTH_SPACING as usize).enumerate() {
        let values = zpanel_cp::service::metrics::sample_values(&bench_sample(at * 1000, n as u64));
        rows.extend(values.iter().zip(&series).map(|(value, series)| RawRow {
            series_id: series.id,
            at,
            value: value.value,
        }));
        if rows.len() >= ROWS_PER_WRITE {
            store.store_metric_values(&new_series, &rows).await?;
            written += rows.len();
            new_series.clear();
            rows.clear();
        }
    }
    store.store_metric_values(&new_series, &rows).await?;
    written += rows.len();
    store.roll_up_metrics().await?;
    store
        .expire_metrics(MetricExpiry {
            raw_before: now - 2 * DAY,
            minute_before: now - 14 * DAY,
            hour_before: now - 365 * DAY,
        })
        .await?;
    Ok(written)
}

// === the machine and the report ===

struct Machine {
    cpus: usize,
    cpu_model: String,
    memory: String,
    os: String,
    kernel: String,
    ssh: String,
}

impl Machine {
    async fn describe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map(kib)
            .unwrap_or_default();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_default();
        let ssh = match Command::new("ssh").arg("-V").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(_) => "not installed".into(),
        };
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory,
            os,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            ssh,
        }
    }

    fn render(&self, open_files: u64) -> String {
        format!(
            "machine: {} CPUs ({}), {} RAM, {}, Linux {}; {}; open-files limit {open_files}",
            self.cpus, self.cpu_model, self.memory, self.os, self.kernel, self.ssh
        )
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<[String; 6]>,
    notes: Vec<String>,
}

impl Report {
    fn row(
        &mut self,
        metric: &str,
        zpanel: String,
        peer: Option<String>,
        ratio: Option<String>,
        target: &str,
        met: Option<bool>,
    ) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        self.rows.push([
            metric.to_string(),
            zpanel,
            peer.unwrap_or_else(|| "-".into()),
            ratio.unwrap_or_else(|| "-".into()),
            target.to_string(),
            met.to_string(),
        ]);
    }

    /// A row of Zpanel's value against a peer's (named in its cell) and their ratio; `show`
    /// writes a value with its unit.
    fn versus(
        &mut self,
        metric: &str,
        zpanel: f64,
        peer: Option<(&str, f64)>,
        show: impl Fn(f64) -> String,
        target: &str,
        met: Option<bool>,
    ) {
        self.row(
            metric,
            show(zpanel),
            peer.map(|(name, value)| format!("{} ({name})", show(value))),
            peer.map(|(_, value)| ratio(zpanel, value)),
            target,
            met,
        );
    }

    /// A Markdown table (pasted into BENCHMARKS.md as is).
    fn render(&self) -> String {
        let mut out = String::from(
            "| metric | zpanel | peer | ratio | target | met |\n|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        for note in &self.notes {
            let _ = write!(out, "\n{note}");
        }
        out
    }
}

fn in_mb_per_s(mb_per_s: f64) -> String {
    format!("{mb_per_s:.0} MB/s")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(zpanel: f64, peer: f64) -> String {
    if peer > 0.0 {
        format!("{:.2}x", zpanel / peer)
    } else {
        "-".into()
    }
}

/// KiB as a human size (MiB above 10 MiB).
fn kib(kib: u64) -> String {
    if kib >= 1024 * 1024 {
        format!("{:.2} GiB", kib as f64 / (1024.0 * 1024.0))
    } else if kib >= 10 * 1024 {
        format!("{:.0} MiB", kib as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

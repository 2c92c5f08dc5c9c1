//! Zpanel control plane: the web/gRPC API, the bridge listener, the router, the CA and the
//! store. `main.rs` parses flags and calls [`run`].
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod bridge;
pub mod ca;
pub mod config;
pub mod downloads;
pub mod install;
pub mod metrics;
pub mod recording;
pub mod router;
pub mod service;
pub mod store;
mod web;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bridge::HostAllowList;
use crate::ca::{Authorities, CaState, ServerCertificate};
use crate::config::{PasswdArgs, ServeArgs};
use crate::metrics::Metrics;
use crate::router::{HostRouter, LocalRouter};
use crate::service::AppState;
use crate::store::Store;

/// How often last-seen times of online hosts are written to the database.
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(30);
/// How often recordings are flushed to disk, and old ones deleted.
const RECORDING_FLUSH: Duration = Duration::from_secs(1);
const RECORDING_PRUNE: Duration = Duration::from_secs(3600);
/// The first admin's generated password, inside the data directory.
const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// The CA directory inside the data directory.
pub fn ca_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("ca")
}

/// Runs the control plane until `shutdown` is cancelled.
pub async fn run(mut args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone();
    create_private_dir(&data_dir)?;
    let store = Store::open(&data_dir.join("zpanel.db"))
        .await
        .context("cannot open the database")?;
    // A control plane starting in the middle of a CA rotation comes up in its phase.
    let rotation = store.ca_rotation().await?;
    let authorities = Authorities::load(&ca_dir(&data_dir), rotation.as_ref())
        .context("cannot load or create the CA")?;
    let admin_token_path = data_dir.join("admin-token");
    if let Some(token) = store.bootstrap_admin().await? {
        zpanel_shared::fsutil::write_atomic(
            &admin_token_path,
            format!("{token}\n").as_bytes(),
            0o600,
        )
        .with_context(|| format!("cannot write {}", admin_token_path.display()))?;
    }
    let admin_password_path = data_dir.join(ADMIN_PASSWORD_FILE);
    bootstrap_admin_password(&store, &admin_password_path).await?;
    store.mark_all_offline().await?;
    let allowed_hosts = HostAllowList::default();
    for host_id in store.allowed_host_ids().await? {
        allowed_hosts.allow(&host_id);
    }

    let web_listener = listen(args.listen)?;
    let bridge_listener = listen(args.bridge_listen)?;
    args.listen = web_listener.local_addr()?;
    args.bridge_listen = bridge_listener.local_addr()?;
    let public_url = args.public_url();
    let bridge_url = args.bridge_url();

    let ca = Arc::new(CaState::new(
        authorities,
        server_names(&args, &public_url, &bridge_url),
    )?);
    let bridge_tls = bridge::tls_config(ca.clone(), allowed_hosts.clone())?;
    let web_tls = if args.insecure_http {
        None
    } else if let (Some(cert), Some(key_path)) = (&args.tls_cert, &args.tls_key) {
        Some(web::tls_config_from_files(cert, key_path)?)
    } else {
        Some(web::tls_config_resolving(Arc::new(ServerCertificate(
            ca.clone(),
        )))?)
    };

    let metrics = Arc::new(Metrics::default());
    let retention = service::metrics::Retention {
        raw: args.metrics_raw_retention,
        minute: args.metrics_minute_retention,
        hour: args.metrics_hour_retention,
    };
    let (telemetry, metrics_writer) =
        service::metrics::MetricsService::new(store.clone(), retention, metrics.clone());
    let state = Arc::new(AppState {
        store,
        router: Arc::new(LocalRouter::new(metrics.clone())),
        metrics,
        allowed_hosts,
        public_url: public_url.clone(),
        bridge_url: bridge_url.clone(),
        heartbeat_interval: args.heartbeat_interval,
        host_cert_ttl: args.host_cert_ttl,
        record_terminals: !args.no_terminal_recording,
        recordings: recording::Recordings::new(data_dir.clone()),
        limits: Default::default(),
        web_session_ttl: args.web_session_ttl,
        alerts: service::alerts::Alerts::new(
            args.alert_interval,
            args.smtp_url.clone(),
            args.smtp_from.clone(),
        )?,
        telemetry,
        install_script: install::InstallScript::render(&public_url),
        downloads: downloads::Downloads::new(args.downloads_dir.clone()),
        ca,
    });

    let pin = state.ca.pin();
    println!("zpanel control plane ready");
    println!("  web:         {public_url}");
    println!("  bridge:      {bridge_url}");
    println!("  CA pin:      {pin}");
    if admin_password_path.exists() {
        println!(
            "  web login:   admin, password in {}",
            admin_password_path.display()
        );
    }
    // Last: scripts (and the test harness) read up to this line.
    println!("  admin token: {}", admin_token_path.display());
    // Migrated and listening: systemd (Type=notify) may start what depends on us.
    zpanel_shared::systemd::ready(&format!(
        "serving {public_url}; hosts connect to {bridge_url}"
    ));
    zpanel_shared::systemd::spawn_watchdog();

    tokio::spawn(flush_last_seen(state.clone(), shutdown.clone()));
    tokio::spawn(service::lifecycle::follow_ca_rotation(
        state.clone(),
        ca_dir(&data_dir),
        rotation,
        shutdown.clone(),
    ));
    tokio::spawn(service::alerts::run(state.clone(), shutdown.clone()));
    tokio::spawn(metrics_writer.run(shutdown.clone()));
    tokio::spawn(service::metrics::keep_metrics(
        state.store.clone(),
        retention,
        shutdown.clone(),
    ));
    let recordings = tokio::spawn(keep_recordings(
        state.clone(),
        args.recording_retention,
        shutdown.clone(),
    ));
    if args.with_local_host {
        tokio::spawn(local_host(
            state.clone(),
            data_dir.join("local-host"),
            shutdown.clone(),
        ));
    }
    let app = api::http::router(state.clone()).merge(
        tonic::service::Routes::new(api::grpc::service(state.clone()))
            .prepare()
            .into_axum_router(),
    );
    tokio::join!(
        web::serve(web_listener, web_tls, app, shutdown.clone()),
        bridge::serve(
            bridge_listener,
            Arc::new(bridge_tls),
            state.clone(),
            shutdown.clone()
        ),
    );
    let _ = recordings.await;
    let online = state.router.online_hosts();
    state.store.touch_hosts(&online, store::now()).await?;
    Ok(())
}

/// Gives the admin a random web password while it has none, in `path` (0600).
async fn bootstrap_admin_password(store: &Store, path: &Path) -> anyhow::Result<()> {
    let needs_password = store
        .credentials("admin")
        .await?
        .is_some_and(|admin| admin.password_hash.is_none());
    if !needs_password {
        return Ok(());
    }
    let password = service::login::generate_password();
    zpanel_shared::fsutil::write_atomic(path, format!("{password}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    service::login::set_password(store, "admin", &password).await?;
    Ok(())
}

/// `zpanel-cp passwd`: sets a user's web password in the data directory's database.
pub async fn passwd(args: PasswdArgs) -> anyhow::Result<()> {
    let db = args.data_dir.join("zpanel.db");
    anyhow::ensure!(
        db.exists(),
        "no control plane data in {}; start `zpanel-cp serve --data-dir {}` once first",
        args.data_dir.display(),
        args.data_dir.display()
    );
    let password = match &args.password_file {
        Some(path) if path.as_os_str() == "-" => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => {
            let first = rpassword::prompt_password(format!("new password for {}: ", args.user))?;
            let again = rpassword::prompt_password("again: ")?;
            anyhow::ensure!(first == again, "the passwords differ; nothing changed");
            first
        }
    };
    let password = password.trim_end_matches(['\r', '\n']);
    let store = Store::open(&db).await.context("cannot open the database")?;
    service::login::set_password(&store, &args.user, password).await?;
    let entry = store::AuditEntry::new("zpanel-cp passwd", "user.password")
        .credential("local: access to the data directory")
        .target(&args.user)
        .detail("password set; browser sessions ended");
    store.audit(&entry).await?;
    let generated = args.data_dir.join(ADMIN_PASSWORD_FILE);
    if args.user == "admin" && generated.exists() {
        std::fs::remove_file(&generated)
            .with_context(|| format!("cannot remove {}", generated.display()))?;
    }
    println!(
        "password of {} set; their browser sessions were ended",
        args.user
    );
    Ok(())
}

/// Flushes recordings every second (and once more at shutdown) and deletes old ones.
async fn keep_recordings(state: Arc<AppState>, retention: Duration, shutdown: CancellationToken) {
    let mut flush = tokio::time::interval(RECORDING_FLUSH);
    let mut prune = tokio::time::interval(RECORDING_PRUNE);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = flush.tick() => state.recordings.flush(&state.store).await,
            _ = prune.tick() => state.recordings.prune(retention),
        }
    }
    state.recordings.flush(&state.store).await;
}

/// Pending connections a listener queues. A fleet reconnecting after a restart arrives
/// faster than handshakes complete; the default of 128 would drop SYNs into 1 s retries.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .with_context(|| format!("cannot listen on {addr}"))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// Names the control plane's own certificate is valid for.
fn server_names(args: &ServeArgs, public_url: &str, bridge_url: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(hostname.trim().to_string());
    }
    for url in [public_url, bridge_url] {
        if let Some(host) = url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
        {
            names.push(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            );
        }
    }
    for addr in [args.listen, args.bridge_listen] {
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
    }
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    names
}

async fn flush_last_seen(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let online = state.router.online_hosts();
        if let Err(e) = state.store.touch_hosts(&online, store::now()).await {
            tracing::warn!("cannot record last-seen times: {e:#}");
        }
    }
}

/// `--with-local-host`: enrols this machine once (config in `dir`) and runs its daemon.
async fn local_host(state: Arc<AppState>, dir: std::path::PathBuf, shutdown: CancellationToken) {
    if let Err(e) = run_local_host(&state, &dir, shutdown).await {
        tracing::error!("local host daemon: {e:#}");
    }
}

async fn run_local_host(
    state: &AppState,
    dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bridge = std::env::current_exe()?.with_file_name("zpanel-bridge");
    anyhow::ensure!(
        bridge.exists(),
        "{} not found next to zpanel-cp; build it with `cargo build`",
        bridge.display()
    );
    if !dir.join("bridge.toml").exists() {
        let system = access::Principal {
            user_id: "system".into(),
            user_name: "system".into(),
            admin: true,
            memberships: Default::default(),
            token: None,
        };
        let token = state
            .create_join_token(&system, Duration::from_secs(600), 1, None)
            .await?;
        let name =
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "local".into());
        let status = tokio::process::Command::new(&bridge)
            .args([
                "join",
                "--server",
                &state.public_url,
                "--ca-pin",
                &token.ca_pin,
                "--name",
                name.trim(),
            ])
            .arg("--config-dir")
            .arg(dir)
            .env("ZPANEL_JOIN_TOKEN", &token.token)
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(
            status.success(),
            "enrolling the local host failed ({status})"
        );
        tracing::info!(name = name.trim(), "local host enrolled");
    }
    let mut child = tokio::process::Command::new(&bridge)
        .arg("run")
        .arg("--config-dir")
        .arg(dir)
        .kill_on_drop(true)
        .spawn()?;
    tokio::select! {
        status = child.wait() => anyhow::bail!("local host daemon exited ({})", status?),
        _ = shutdown.cancelled() => Ok(()),
    }
}

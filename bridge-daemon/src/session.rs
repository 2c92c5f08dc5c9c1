//! The daemon's side of the bridge session: dial the control plane with the host's
//! certificate, say hello, keep the session alive with heartbeats, serve channels (each
//! attached to an exec job, a terminal session, a file transfer or a Docker stream), and
//! reconnect with capped exponential backoff and full jitter when it drops.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    BRIDGE_PROTOCOL_MIN_VERSION, BRIDGE_PROTOCOL_VERSION, ChannelAck, ChannelData, Close,
    FileCommit, Heartbeat, Hello, Open, OpenError, OpenResult, TerminalListing, TerminalResize,
    open, open_result,
};
use zpanel_shared::backoff::Backoff;
use zpanel_shared::frame::{self, DEFAULT_MAX_FRAME_BYTES};
use zpanel_shared::replay::DEFAULT_WINDOW_BYTES;
use zpanel_shared::transport::{self, SessionEnd};

use crate::channel::{
    Attached, Refusal, Target, admit, exec_refusal, serve_channel, terminal_refusal,
};
use crate::config::{Capability, Policy, RunArgs, Settings};
use crate::docker::{self, Docker, DockerChannel};
use crate::exec::Jobs;
use crate::files::{self, FileChannel, Files};
use crate::telemetry::Telemetry;
use crate::terminal::{ContainerShells, TerminalLimits, Terminals};
use crate::upgrade::{Installation, UpgradeChannel};
use crate::{certificate, hostinfo, upgrade};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const OUTBOUND_QUEUE: usize = 128;
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args.config_dir)?;
    let jobs = Jobs::new(DEFAULT_WINDOW_BYTES, args.exec_detach_timeout);
    tokio::spawn(jobs.clone().reap_forever());
    let limits = TerminalLimits {
        window: DEFAULT_WINDOW_BYTES,
        scrollback: args.terminal_scrollback,
        idle_timeout: args.terminal_idle_timeout,
        max_sessions: args.terminal_max_sessions,
    };
    let docker = Docker::new(settings.docker.endpoint());
    let containers = ContainerShells {
        endpoint: docker.endpoint().to_string(),
        program: None,
    };
    let terminals = Terminals::new(limits, settings.terminal.clone(), containers);
    tokio::spawn(terminals.clone().reap_forever());
    let files = Files::new(&settings.files.roots()).map_err(anyhow::Error::msg)?;
    tokio::spawn(files.clone().reap_forever());
    let policy = Arc::new(settings.policy.clone());
    let telemetry = Telemetry::new(&settings.metrics);
    // hashes the executable (for the hello) off the async threads, once
    let config_dir = args.config_dir.clone();
    let installation = tokio::task::spawn_blocking(move || {
        let installation = Installation::detect(&config_dir);
        upgrade::at_start(&installation);
        installation
    })
    .await
    .context("cannot inspect this daemon's installation")?;
    let installation = Arc::new(installation);
    if policy.offers(Capability::Metrics) {
        tokio::spawn(telemetry.clone().collect_forever());
    }
    tracing::info!(host = %settings.host_id, name = %settings.name, bridge = %settings.bridge_url, capabilities = ?policy.capabilities, max_channels = policy.max_channels, docker = %docker.endpoint(), "zpanel-bridge starting");
    // Ready once configured and about to connect, not once connected: a host must start
    // (and boot) while its control plane is down.
    zpanel_shared::systemd::ready(&format!("connecting to {}", settings.bridge_url));
    zpanel_shared::systemd::spawn_watchdog();
    let mut backoff = Backoff::new(args.reconnect_base, args.reconnect_max);
    loop {
        let started = Instant::now();
        // Read at every attempt: the certificate may have been renewed since the last one.
        let connected = match certificate::tls_config(&args.config_dir) {
            Ok(tls) => connect(&settings, Arc::new(tls)).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok(ws) => {
                zpanel_shared::systemd::status(&format!("connected to {}", settings.bridge_url));
                let work = Work {
                    jobs: jobs.clone(),
                    terminals: terminals.clone(),
                    files: files.clone(),
                    docker: docker.clone(),
                    policy: policy.clone(),
                    telemetry: telemetry.clone(),
                    installation: installation.clone(),
                };
                let end = serve(ws, work, &args.config_dir, &settings.name).await;
                tracing::warn!("session ended: {end:#}");
                zpanel_shared::systemd::status(&format!("disconnected ({end:#}); reconnecting"));
            }
            Err(e) => {
                tracing::warn!("cannot open a session with {}: {e:#}", settings.bridge_url);
                zpanel_shared::systemd::status(&format!(
                    "cannot reach {} ({e:#}); retrying",
                    settings.bridge_url
                ));
            }
        }
        if started.elapsed() > HEALTHY_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::info!("reconnecting in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

async fn connect(settings: &Settings, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Ws> {
    let uri: hyper::Uri = settings
        .bridge_url
        .parse()
        .context("bridge_url in bridge.toml is not a URL")?;
    let host = uri
        .host()
        .context("bridge_url has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let session_url = format!(
        "{}{}",
        settings.bridge_url.trim_end_matches('/'),
        "/v1/session"
    );
    let attempt = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .context("tcp connect")?;
        let _ = tcp.set_nodelay(true);
        let server_name = rustls_pki_types::ServerName::try_from(host.clone())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_failure(&e))?;
        let config = transport::websocket_config(DEFAULT_MAX_FRAME_BYTES);
        // With TLS 1.3 the server's verdict on our certificate arrives here, not above.
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(session_url.as_str(), stream, Some(config))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Io(io) => tls_failure(&io),
                    other => anyhow::anyhow!("websocket handshake: {other}"),
                })?;
        let hello = Hello {
            min_version: BRIDGE_PROTOCOL_MIN_VERSION,
            max_version: BRIDGE_PROTOCOL_VERSION,
            host: Some(hostinfo::collect()),
        };
        ws.send(Message::Binary(frame::encode(Body::Hello(hello))))
            .await?;
        Ok::<_, anyhow::Error>(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .context("timed out")?
}

/// One line for a failed TLS exchange, naming the likely cause when the control plane
/// refused our certificate.
fn tls_failure(e: &std::io::Error) -> anyhow::Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => anyhow::anyhow!(
            "the control plane refused this host's certificate ({alert:?}): the host was revoked or \
             deleted, its certificate expired, or it belongs to another control plane; re-enrol with \
             `zpanel-bridge join`"
        ),
        Some(tls) => anyhow::anyhow!("tls: {tls}"),
        None => anyhow::anyhow!("tls: {e}"),
    }
}

/// What outlives sessions: the exec jobs and terminal sessions channels attach to, the
/// file service (with its interrupted uploads), the Docker engine, the policy every
/// session is served under (read at start), the samples the control plane has not
/// stored yet, and where the daemon runs from (for upgrades).
#[derive(Clone)]
struct Work {
    jobs: Arc<Jobs>,
    terminals: Arc<Terminals>,
    files: Arc<Files>,
    docker: Arc<Docker>,
    policy: Arc<Policy>,
    telemetry: Arc<Telemetry>,
    installation: Arc<Installation>,
}

/// Runs one session after the hello: waits for the welcome, then serves frames.
async fn serve(mut ws: Ws, work: Work, config_dir: &Path, name: &str) -> anyhow::Error {
    let welcome = match tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Binary(bytes)))) => match frame::decode(bytes, DEFAULT_MAX_FRAME_BYTES)
        {
            Ok(Body::Welcome(welcome)) => welcome,
            Ok(Body::Close(close)) => {
                return anyhow::anyhow!("control plane refused the session: {}", close.reason);
            }
            Ok(_) => return anyhow::anyhow!("control plane sent something other than a welcome"),
            Err(e) => return e.into(),
        },
        other => return anyhow::anyhow!("no welcome from the control plane ({other:?})"),
    };
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    let max_frame = (welcome.max_frame_bytes as usize).clamp(64 * 1024, DEFAULT_MAX_FRAME_BYTES);
    tracing::info!(version = welcome.version, ?interval, "session open");
    // a session is what an upgrade waits for: this binary is here to stay
    let installation = work.installation.clone();
    tokio::task::spawn_blocking(move || upgrade::commit(&installation));
    let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (renewed, renewal_answers) = mpsc::channel(4);
    let metrics = tokio::spawn(work.telemetry.clone().send(outbound.clone(), max_frame));
    let session = DaemonSession {
        outbound: outbound.clone(),
        work,
        attachments: Arc::default(),
        answering: Arc::default(),
        renewed,
    };
    let renewal = tokio::spawn(certificate::renew(
        config_dir.to_path_buf(),
        name.to_string(),
        welcome.renew_certificate_after,
        outbound.clone(),
        renewal_answers,
    ));
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        let mut nonce = 0u64;
        loop {
            tick.tick().await;
            nonce += 1;
            if outbound
                .send(Body::Ping(Heartbeat { nonce }))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let end = transport::run(ws, outbound_rx, interval * 3, max_frame, |body| {
        session.on_frame(body)
    })
    .await;
    heartbeat.abort();
    renewal.abort();
    metrics.abort();
    session.detach_all();
    anyhow::Error::new(end)
}

struct Attachment {
    target: Arc<Target>,
    cancel: CancellationToken,
}

type Attachments = Arc<Mutex<HashMap<u64, Attachment>>>;

fn lock(attachments: &Attachments) -> std::sync::MutexGuard<'_, HashMap<u64, Attachment>> {
    attachments.lock().unwrap_or_else(|p| p.into_inner())
}

/// Detaches and forgets a channel that ends from this side.
fn forget(attachments: &Attachments, channel_id: u64) {
    if let Some(attachment) = lock(attachments).remove(&channel_id) {
        attachment.target.detach(false);
    }
}

// === impl DaemonSession ===

pub(crate) struct DaemonSession {
    outbound: mpsc::Sender<Body>,
    work: Work,
    /// Shared with the tasks of file and Docker channels, which drop their attachment when
    /// refused.
    attachments: Attachments,
    /// Held by each task answering a file, Docker or process request: a channel open on the
    /// control plane's side with nothing attached here. The clones beyond this one are those
    /// channels.
    answering: Arc<()>,
    /// Answers to certificate renewals, for the renewal task.
    renewed: mpsc::Sender<certificate::Renewal>,
}

impl DaemonSession {
    fn attachments(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Attachment>> {
        lock(&self.attachments)
    }

    /// Channels open on this session, for `[policy] max_channels`.
    fn open_channels(&self) -> usize {
        self.attachments().len() + (Arc::strong_count(&self.answering) - 1)
    }

    fn target(&self, channel_id: u64) -> Option<Arc<Target>> {
        let target = self
            .attachments()
            .get(&channel_id)
            .map(|a| a.target.clone());
        if target.is_none() {
            tracing::debug!(channel_id, "frame for an unknown channel ignored");
        }
        target
    }

    pub(crate) fn on_frame(&self, body: Body) -> Result<(), SessionEnd> {
        match body {
            Body::Ping(beat) => {
                let _ = self.outbound.try_send(Body::Pong(beat));
            }
            Body::Pong(_) => {}
            Body::MetricsAck(ack) => self.work.telemetry.acknowledge(ack.next_seq),
            Body::RenewNow(_) => {
                let _ = self.renewed.try_send(certificate::Renewal::Now);
            }
            Body::Open(open) => self.open(open),
            Body::Data(ChannelData {
                channel_id,
                chunk: Some(chunk),
            }) => {
                if let Some(target) = self.target(channel_id)
                    && let Err(reason) = target.input(chunk)
                {
                    self.close(channel_id, &reason);
                }
            }
            Body::Ack(ChannelAck {
                channel_id,
                ack: Some(ack),
            }) => {
                if let Some(target) = self.target(channel_id)
                    && let Err(reason) = target.ack(ack)
                {
                    self.close(channel_id, &reason);
                }
            }
            Body::ExecSignal(signal) => {
                if let Some(target) = self.target(signal.channel_id) {
                    target.signal(signal.signal);
                }
            }
            Body::TerminalResize(TerminalResize {
                channel_id,
                size: Some(size),
            }) => {
                if let Some(target) = self.target(channel_id) {
                    target.resize(&size);
                }
            }
            Body::FileCommit(FileCommit { channel_id, sha256 }) => {
                let written = match self.target(channel_id).as_deref() {
                    Some(Target::File(file)) => file.commit(sha256),
                    Some(_) => false,
                    None => true,
                };
                if !written {
                    tracing::debug!(
                        channel_id,
                        "file commit for a channel that writes no file ignored"
                    );
                }
            }
            Body::Close(close) => self.detach(close.channel_id, close.release),
            Body::CertificateRenewed(answer) => {
                let _ = self.renewed.try_send(certificate::Renewal::Answer(answer));
            }
            Body::Data(_) | Body::Ack(_) | Body::TerminalResize(_) => {
                tracing::debug!("empty data, ack or resize frame ignored");
            }
            Body::Hello(_)
            | Body::Welcome(_)
            | Body::OpenResult(_)
            | Body::ExecExited(_)
            | Body::RenewCertificate(_)
            | Body::FileDone(_)
            | Body::FileChanged(_)
            | Body::DockerUpdate(_)
            | Body::DockerDone(_)
            | Body::UpgradeDone(_)
            | Body::Metrics(_) => {
                return Err(SessionEnd::Protocol(
                    "frame not allowed from the control plane".into(),
                ));
            }
        }
        Ok(())
    }

    fn open(&self, open: Open) {
        let channel_id = open.channel_id;
        let Some(request) = open.request else {
            let message = "unknown open request: this daemon may be older than the control plane";
            return self.answer(channel_id, Err((OpenError::BadRequest, message.into())));
        };
        if let Err(refusal) = admit(&self.work.policy, &request, self.open_channels()) {
            return self.answer(channel_id, Err(refusal));
        }
        let (jobs, terminals) = (&self.work.jobs, &self.work.terminals);
        let (files, docker) = (&self.work.files, &self.work.docker);
        let attached = match request {
            open::Request::ExecStart(start) => jobs
                .start(
                    &start.exec_id,
                    &start.argv,
                    Duration::from_millis(start.timeout_ms),
                )
                .map(|job| Attached::exec(job, 0, 0))
                .map_err(exec_refusal),
            open::Request::ExecAttach(attach) => jobs
                .get(&attach.exec_id)
                .and_then(|job| {
                    job.resume_from(attach.stdout_offset, attach.stderr_offset)?;
                    Ok(Attached::exec(
                        job,
                        attach.stdout_offset,
                        attach.stderr_offset,
                    ))
                })
                .map_err(exec_refusal),
            open::Request::TerminalOpen(request) => terminals
                .open(&request)
                .map(Attached::terminal)
                .map_err(terminal_refusal),
            open::Request::TerminalAttach(request) => terminals
                .attach(&request)
                .map(Attached::terminal)
                .map_err(terminal_refusal),
            open::Request::TerminalList(list) => {
                let sessions = terminals.list(&list.owner_id);
                let reply = open_result::Reply::Terminals(TerminalListing { sessions });
                return self.answer(channel_id, Ok(Some(reply)));
            }
            open::Request::TerminalKill(kill) => {
                let killed = terminals.kill(&kill.session_id, &kill.owner_id);
                return self.answer(channel_id, killed.map(|()| None).map_err(terminal_refusal));
            }
            open::Request::Upgrade(request) => {
                let upgrade = UpgradeChannel::new(&self.work.installation, request);
                return self.open_prepared(channel_id, Target::Upgrade(upgrade));
            }
            open::Request::Processes(request) => {
                let telemetry = self.work.telemetry.clone();
                return self
                    .answer_later(async move { telemetry.processes(channel_id, request).await });
            }
            open::Request::File(request) => {
                let files = files.clone();
                return self.answer_later(async move {
                    files::answer(channel_id, files.request(request).await)
                });
            }
            open::Request::Docker(request) => {
                let docker = docker.clone();
                return self.answer_later(async move {
                    docker::answer(channel_id, docker.request(request).await)
                });
            }
            open::Request::FileRead(read) => {
                let file = Target::File(FileChannel::read(files, read));
                return self.open_prepared(channel_id, file);
            }
            open::Request::FileWrite(write) => {
                let file = Target::File(FileChannel::write(files, write));
                return self.open_prepared(channel_id, file);
            }
            open::Request::FileWatch(watch) => {
                let file = Target::File(FileChannel::watch(files, watch));
                return self.open_prepared(channel_id, file);
            }
            open::Request::DockerLogs(logs) => {
                let logs = Target::Docker(DockerChannel::logs(docker, logs));
                return self.open_prepared(channel_id, logs);
            }
            open::Request::DockerStats(stats) => {
                let stats = Target::Docker(DockerChannel::stats(docker, stats));
                return self.open_prepared(channel_id, stats);
            }
            open::Request::DockerEvents(events) => {
                let events = Target::Docker(DockerChannel::events(docker, events));
                return self.open_prepared(channel_id, events);
            }
            open::Request::DockerPull(pull) => {
                let pull = Target::Docker(DockerChannel::pull(docker, pull));
                return self.open_prepared(channel_id, pull);
            }
            open::Request::DockerImport(import) => {
                let import = Target::Docker(DockerChannel::import(docker, import));
                return self.open_prepared(channel_id, import);
            }
        };
        let Attached {
            target,
            opened,
            senders,
        } = match attached {
            Ok(attached) => attached,
            Err(refusal) => return self.answer(channel_id, Err(refusal)),
        };
        let (target, cancel) = self.attach(channel_id, target);
        let opened = OpenResult {
            channel_id,
            ..opened
        };
        let outbound = self.outbound.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve_channel(&target, channel_id, opened, senders, &outbound) => {}
            }
        });
    }

    /// Records a channel's attachment, closing the channels it replaces.
    fn attach(&self, channel_id: u64, target: Target) -> (Arc<Target>, CancellationToken) {
        let replaced: Vec<(u64, String)> = self
            .attachments()
            .iter()
            .filter_map(|(id, old)| Some((*id, target.replaces(&old.target)?)))
            .collect();
        for (old, reason) in replaced {
            self.end_channel(old, &reason, true);
        }
        let target = Arc::new(target);
        let cancel = CancellationToken::new();
        self.attachments().insert(
            channel_id,
            Attachment {
                target: target.clone(),
                cancel: cancel.clone(),
            },
        );
        (target, cancel)
    }

    /// Opens a file or Docker channel: attached at once (so a close or a newer upload of
    /// the same id finds it), prepared (a path opened on a blocking thread, the engine
    /// reached), then answered and served. A refused one is detached again; one whose work
    /// fails midway (a read, an engine gone) is closed with the reason.
    fn open_prepared(&self, channel_id: u64, target: Target) {
        let (target, cancel) = self.attach(channel_id, target);
        let attachments = self.attachments.clone();
        let outbound = self.outbound.clone();
        tokio::spawn(async move {
            let (opened, senders) = match target.prepare(channel_id).await {
                Ok(prepared) => prepared,
                Err(refusal) => {
                    forget(&attachments, channel_id);
                    let _ = outbound.send(Body::OpenResult(refusal)).await;
                    return;
                }
            };
            let opened = OpenResult {
                channel_id,
                ..opened
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve_channel(&target, channel_id, opened, senders, &outbound) => {}
                reason = target.failed() => {
                    forget(&attachments, channel_id);
                    let close = Close {
                        channel_id,
                        reason,
                        release: false,
                        superseded: false,
                    };
                    let _ = outbound.send(Body::Close(close)).await;
                }
            }
        });
    }

    /// Answers a request whose answer takes time (a file, Docker or process request) from a
    /// task of its own, so the frame handler never waits; the channel counts as open
    /// meanwhile.
    fn answer_later(&self, answer: impl Future<Output = OpenResult> + Send + 'static) {
        let (outbound, answering) = (self.outbound.clone(), self.answering.clone());
        tokio::spawn(async move {
            let sent = outbound.send(Body::OpenResult(answer.await)).await;
            drop(answering);
            sent
        });
    }

    /// Answers an open with the result alone: a refusal, or a reply after which the control
    /// plane drops the channel.
    fn answer(&self, channel_id: u64, answer: Result<Option<open_result::Reply>, Refusal>) {
        let result = match answer {
            Ok(reply) => OpenResult {
                channel_id,
                reply,
                ..OpenResult::default()
            },
            Err((error, message)) => OpenResult {
                channel_id,
                error: error as i32,
                message,
                ..OpenResult::default()
            },
        };
        let outbound = self.outbound.clone();
        tokio::spawn(async move { outbound.send(Body::OpenResult(result)).await });
    }

    /// Ends a channel from this side.
    fn close(&self, channel_id: u64, reason: &str) {
        self.end_channel(channel_id, reason, false);
    }

    /// Ends a channel from this side; `superseded` when a newer viewer took its place.
    fn end_channel(&self, channel_id: u64, reason: &str, superseded: bool) {
        self.detach(channel_id, false);
        let close = Close {
            channel_id,
            reason: reason.into(),
            release: false,
            superseded,
        };
        let _ = self.outbound.try_send(Body::Close(close));
    }

    fn detach(&self, channel_id: u64, release: bool) {
        if let Some(attachment) = self.attachments().remove(&channel_id) {
            attachment.cancel.cancel();
            attachment.target.detach(release);
        }
    }

    fn detach_all(&self) {
        for (_, attachment) in self.attachments().drain() {
            attachment.cancel.cancel();
            attachment.target.detach(false);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use zpanel_proto::{
        ExecStart, TerminalAttach, TerminalKill, TerminalList, TerminalMode, TerminalOpen,
    };

    use super::*;
    use crate::config::TerminalAccounts;
    use zpanel_proto::{StreamAck, StreamChunk, StreamKind, TerminalSize};

    fn session() -> (DaemonSession, mpsc::Receiver<Body>) {
        session_serving(&[])
    }

    /// A session whose file service serves `roots`.
    fn session_serving(roots: &[std::path::PathBuf]) -> (DaemonSession, mpsc::Receiver<Body>) {
        session_with(roots, Policy::default(), "")
    }

    /// A session whose file service serves `roots` and whose Docker engine answers at
    /// `docker_endpoint`, under `policy`.
    pub(crate) fn session_with(
        roots: &[std::path::PathBuf],
        policy: Policy,
        docker_endpoint: &str,
    ) -> (DaemonSession, mpsc::Receiver<Body>) {
        let (outbound, frames) = mpsc::channel(1024);
        let limits = TerminalLimits {
            window: DEFAULT_WINDOW_BYTES,
            scrollback: 1 << 20,
            idle_timeout: Duration::from_secs(600),
            max_sessions: 8,
        };
        let docker = Docker::new(docker_endpoint.to_string());
        let containers = ContainerShells {
            endpoint: docker_endpoint.to_string(),
            program: None,
        };
        let session = DaemonSession {
            outbound,
            work: Work {
                jobs: Jobs::new(DEFAULT_WINDOW_BYTES, Duration::from_secs(600)),
                terminals: Terminals::new(limits, TerminalAccounts::default(), containers),
                files: Files::new(roots).unwrap(),
                docker,
                policy: Arc::new(policy),
                telemetry: Telemetry::new(&crate::config::MetricsSettings::default()),
                installation: Arc::new(crate::upgrade::tests::not_under_systemd()),
            },
            attachments: Arc::default(),
            answering: Arc::default(),
            renewed: mpsc::channel(1).0,
        };
        (session, frames)
    }

    pub(crate) fn open(session: &DaemonSession, channel_id: u64, request: open::Request) {
        let open = Open {
            channel_id,
            request: Some(request),
        };
        session.on_frame(Body::Open(open)).unwrap();
    }

    /// Reads frames until `wanted` picks one, skipping the others.
    pub(crate) async fn expect<T>(
        frames: &mut mpsc::Receiver<Body>,
        mut wanted: impl FnMut(&Body) -> Option<T>,
    ) -> T {
        let found = async {
            loop {
                let body = frames.recv().await.expect("the session is open");
                if let Some(found) = wanted(&body) {
                    return found;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), found)
            .await
            .expect("the expected frame came")
    }

    pub(crate) fn opened(channel_id: u64) -> impl FnMut(&Body) -> Option<OpenResult> {
        move |body| match body {
            Body::OpenResult(result) if result.channel_id == channel_id => Some(result.clone()),
            _ => None,
        }
    }

    /// Picks a chunk of `channel_id`'s output (for `expect`).
    pub(crate) fn chunk_on(channel_id: u64) -> impl FnMut(&Body) -> Option<StreamChunk> {
        move |body| match body {
            Body::Data(ChannelData {
                channel_id: id,
                chunk: Some(chunk),
            }) if *id == channel_id => Some(chunk.clone()),
            _ => None,
        }
    }

    /// Output of `channel_id` until it holds `needle`, acknowledging what arrives.
    async fn output_until(
        session: &DaemonSession,
        frames: &mut mpsc::Receiver<Body>,
        channel_id: u64,
        needle: &str,
    ) -> String {
        let mut text = String::new();
        while !text.contains(needle) {
            let chunk = expect(frames, chunk_on(channel_id)).await;
            text.push_str(&String::from_utf8_lossy(&chunk.payload));
            let ack = StreamAck {
                stream: StreamKind::Stdout as i32,
                offset: chunk.offset + chunk.payload.len() as u64,
            };
            let ack = ChannelAck {
                channel_id,
                ack: Some(ack),
            };
            session.on_frame(Body::Ack(ack)).unwrap();
        }
        text
    }

    #[tokio::test]
    async fn exec_channels_answer_with_empty_terminal_fields() {
        let (session, mut frames) = session();
        let start = ExecStart {
            exec_id: "e1".into(),
            argv: vec!["echo".into(), "hi".into()],
            timeout_ms: 0,
        };
        open(&session, 1, open::Request::ExecStart(start));
        let result = expect(&mut frames, opened(1)).await;
        assert_eq!(
            (result.error(), result.output_offset, result.reply),
            (OpenError::None, 0, None)
        );
        assert_eq!(output_until(&session, &mut frames, 1, "hi\n").await, "hi\n");
        let exit = expect(&mut frames, |body| match body {
            Body::ExecExited(exited) => exited.exit,
            _ => None,
        })
        .await;
        assert_eq!(exit.code, 0);
    }

    #[tokio::test]
    async fn the_policy_refuses_what_it_does_not_offer_and_more_channels_than_it_allows() {
        use crate::config::Capability;
        use zpanel_proto::{FileRequest, FileStat, file_request};
        let policy = Policy {
            capabilities: [Capability::Exec].into(),
            max_channels: 1,
        };
        let (session, mut frames) = session_with(&[std::env::temp_dir()], policy, "");
        let stat = FileRequest {
            op: Some(file_request::Op::Stat(FileStat { path: "/".into() })),
        };
        open(&session, 1, open::Request::File(stat));
        let refused = expect(&mut frames, opened(1)).await;
        assert_eq!(
            (refused.error(), refused.message.as_str()),
            (
                OpenError::Forbidden,
                "this host's policy does not offer files (\"files\" is not in bridge.toml [policy] capabilities)"
            )
        );

        let start = |exec_id: &str| {
            open::Request::ExecStart(ExecStart {
                exec_id: exec_id.into(),
                argv: vec!["cat".into()],
                timeout_ms: 0,
            })
        };
        open(&session, 2, start("e1"));
        assert_eq!(
            expect(&mut frames, opened(2)).await.error(),
            OpenError::None
        );
        open(&session, 3, start("e2"));
        let refused = expect(&mut frames, opened(3)).await;
        assert_eq!(
            (refused.error(), refused.message.as_str()),
            (
                OpenError::Refused,
                "this host already has 1 channel open, the most its policy allows (bridge.toml [policy] max_channels)"
            )
        );
        assert!(
            session.work.jobs.get("e2").is_err(),
            "a refused exec started"
        );

        session
            .on_frame(Body::Close(Close {
                channel_id: 2,
                reason: String::new(),
                release: true,
                superseded: false,
            }))
            .unwrap();
        open(&session, 4, start("e3"));
        assert_eq!(
            expect(&mut frames, opened(4)).await.error(),
            OpenError::None
        );
    }

    #[tokio::test]
    async fn processes_are_listed_unless_the_policy_turns_metrics_off() {
        use zpanel_proto::{MetricAck, ProcessList, ProcessSort};
        let (session, mut frames) = session();
        let list = || {
            open::Request::Processes(ProcessList {
                sort: ProcessSort::Memory as i32,
                limit: 5,
            })
        };
        open(&session, 1, list());
        let result = expect(&mut frames, opened(1)).await;
        let Some(open_result::Reply::Processes(listing)) = result.reply else {
            panic!("no processes in {result:?}");
        };
        assert!(listing.summary.is_some() && listing.total >= 1);
        assert!(!listing.processes.is_empty() && listing.processes.len() <= 5);
        // an acknowledgement of samples never sent is harmless
        let ack = MetricAck { next_seq: 42 };
        session.on_frame(Body::MetricsAck(ack)).unwrap();

        let policy = Policy {
            capabilities: [crate::config::Capability::Exec].into(),
            max_channels: 8,
        };
        let (session, mut frames) = session_with(&[], policy, "");
        open(&session, 2, list());
        let refused = expect(&mut frames, opened(2)).await;
        assert_eq!(
            (refused.error(), refused.message.as_str()),
            (
                OpenError::Forbidden,
                "this host's policy does not offer metrics and processes \
                 (\"metrics\" is not in bridge.toml [policy] capabilities)"
            )
        );
    }

    #[tokio::test]
    async fn terminal_channels_type_take_over_list_and_kill() {
        let (session, mut frames) = session();
        let request = TerminalOpen {
            session_id: "t".into(),
            owner_id: "u1".into(),
            owner_name: "alice".into(),
            size: Some(TerminalSize { cols: 80, rows: 24 }),
            ..TerminalOpen::default()
        };
        open(&session, 1, open::Request::TerminalOpen(request));
        let result = expect(&mut frames, opened(1)).await;
        let Some(open_result::Reply::Terminal(info)) = result.reply else {
            panic!("no terminal in {result:?}");
        };
        assert_eq!((info.session_id.as_str(), result.output_offset), ("t", 0));

        let typed = Bytes::from_static(b"echo $((6*7))\r");
        let chunk = StreamChunk {
            stream: StreamKind::Stdin as i32,
            offset: 0,
            payload: typed.clone(),
            eof: false,
        };
        let data = ChannelData {
            channel_id: 1,
            chunk: Some(chunk),
        };
        session.on_frame(Body::Data(data)).unwrap();
        output_until(&session, &mut frames, 1, "42\r\n").await;
        session
            .on_frame(Body::TerminalResize(TerminalResize {
                channel_id: 1,
                size: Some(TerminalSize {
                    cols: 120,
                    rows: 40,
                }),
            }))
            .unwrap();

        let take_over = TerminalAttach {
            session_id: "t".into(),
            owner_id: "u1".into(),
            mode: TerminalMode::Control as i32,
            output_offset: None,
            size: None,
        };
        open(&session, 2, open::Request::TerminalAttach(take_over));
        let closed = expect(&mut frames, |body| match body {
            Body::Close(close) => Some(close.clone()),
            _ => None,
        })
        .await;
        assert_eq!(
            (closed.channel_id, closed.reason.as_str(), closed.superseded),
            (1, "another viewer took control of this session", true)
        );
        let result = expect(&mut frames, opened(2)).await;
        assert_eq!(result.stdin_offset, typed.len() as u64);
        let Some(open_result::Reply::Terminal(info)) = result.reply else {
            panic!("no terminal in {result:?}");
        };
        assert_eq!(
            info.size,
            Some(TerminalSize {
                cols: 120,
                rows: 40
            })
        );

        let list = TerminalList {
            owner_id: "u1".into(),
        };
        open(&session, 3, open::Request::TerminalList(list));
        let result = expect(&mut frames, opened(3)).await;
        let Some(open_result::Reply::Terminals(listing)) = result.reply else {
            panic!("no listing in {result:?}");
        };
        assert_eq!(listing.sessions.len(), 1);

        let kill = |owner_id: &str| {
            open::Request::TerminalKill(TerminalKill {
                session_id: "t".into(),
                owner_id: owner_id.into(),
            })
        };
        open(&session, 4, kill("u2"));
        assert_eq!(
            expect(&mut frames, opened(4)).await.error(),
            OpenError::Refused
        );
        open(&session, 5, kill("u1"));
        assert_eq!(
            expect(&mut frames, opened(5)).await.error(),
            OpenError::None
        );
        let exited = expect(&mut frames, |body| match body {
            Body::ExecExited(exited) => Some(exited.channel_id),
            _ => None,
        })
        .await;
        assert_eq!(exited, 2);
        assert!(session.attachments().contains_key(&2));
        assert!(!session.attachments().contains_key(&1));
    }

    #[tokio::test]
    async fn files_are_served_through_channels() {
        use zpanel_proto::{
            FileDone, FileError, FileRead, FileReply, FileRequest, FileStat, FileWrite, file_reply,
            file_request,
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"0123456789").unwrap();
        let (session, mut frames) = session_serving(&[root.path().to_path_buf()]);

        // answered at once; a relative path is under the first root
        let stat = FileRequest {
            op: Some(file_request::Op::Stat(FileStat { path: "f".into() })),
        };
        open(&session, 1, open::Request::File(stat));
        let result = expect(&mut frames, opened(1)).await;
        let Some(open_result::Reply::File(FileReply {
            result: Some(file_reply::Result::Info(info)),
        })) = result.reply
        else {
            panic!("no info in {result:?}");
        };
        assert_eq!(info.path, root.path().join("f").display().to_string());
        assert!(!session.attachments().contains_key(&1));

        // a refusal names the file error and leaves no attachment behind
        let missing = FileRead {
            path: "missing".into(),
            ..FileRead::default()
        };
        open(&session, 2, open::Request::FileRead(missing));
        let result = expect(&mut frames, opened(2)).await;
        assert_eq!(
            (result.error(), result.file_error()),
            (OpenError::NotFound, FileError::NotFound)
        );
        assert!(!session.attachments().contains_key(&2));

        // a read from an offset: its chunks count from there
        let read = FileRead {
            path: "f".into(),
            offset: 4,
            ..FileRead::default()
        };
        open(&session, 3, open::Request::FileRead(read));
        assert_eq!(
            expect(&mut frames, opened(3)).await.error(),
            OpenError::None
        );
        let data = expect(&mut frames, chunk_on(3)).await;
        assert_eq!((data.offset, &data.payload[..]), (4, &b"456789"[..]));
        let end = expect(&mut frames, chunk_on(3)).await;
        assert_eq!((end.offset, end.eof), (10, true));
        let ack = StreamAck {
            stream: StreamKind::Stdout as i32,
            offset: 10,
        };
        session
            .on_frame(Body::Ack(ChannelAck {
                channel_id: 3,
                ack: Some(ack),
            }))
            .unwrap();
        assert!(session.attachments().contains_key(&3));

        // a write: content on stdin, then FileDone
        let write = FileWrite {
            path: "g".into(),
            ..FileWrite::default()
        };
        open(&session, 4, open::Request::FileWrite(write));
        assert_eq!(expect(&mut frames, opened(4)).await.stdin_offset, 0);
        let chunk = StreamChunk {
            stream: StreamKind::Stdin as i32,
            offset: 0,
            payload: Bytes::from_static(b"hello"),
            eof: true,
        };
        session
            .on_frame(Body::Data(ChannelData {
                channel_id: 4,
                chunk: Some(chunk),
            }))
            .unwrap();
        let done = expect(&mut frames, |body| match body {
            Body::FileDone(FileDone {
                channel_id: 4,
                result: Some(result),
            }) => Some(result.clone()),
            _ => None,
        })
        .await;
        assert_eq!(done.info.unwrap().size, 5);
        assert_eq!(std::fs::read(root.path().join("g")).unwrap(), b"hello");
    }
}

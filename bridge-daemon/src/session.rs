//! The daemon's side of the bridge session: dial the control plane with the host's
//! certificate, say hello, keep the session alive with heartbeats, serve channels, and
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
    BRIDGE_PROTOCOL_MIN_VERSION, BRIDGE_PROTOCOL_VERSION, CertificateRenewed, ChannelAck,
    ChannelData, Close, ExecExited, Heartbeat, Hello, Open, OpenError, OpenResult, StreamAck,
    StreamKind, open,
};
use zpanel_shared::backoff::Backoff;
use zpanel_shared::frame::{self, DEFAULT_MAX_FRAME_BYTES};
use zpanel_shared::replay::StreamSender;
use zpanel_shared::transport::{self, SessionEnd};

use crate::config::{RunArgs, Settings};
use crate::exec::{ExecError, ExecJob, Jobs};
use crate::{certificate, hostinfo};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const OUTBOUND_QUEUE: usize = 128;
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args.config_dir)?;
    let jobs = Jobs::new(
        zpanel_shared::replay::DEFAULT_WINDOW_BYTES,
        args.exec_detach_timeout,
    );
    tokio::spawn(jobs.clone().reap_forever());
    tracing::info!(host = %settings.host_id, name = %settings.name, bridge = %settings.bridge_url, "zpanel-bridge starting");
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
                let end = serve(ws, jobs.clone(), &args.config_dir, &settings.name).await;
                tracing::warn!("session ended: {end:#}");
            }
            Err(e) => tracing::warn!("cannot open a session with {}: {e:#}", settings.bridge_url),
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
            "the control plane refused this host's certificate ({alert:?}): the host was deleted, \
             its certificate expired, or it belongs to another control plane; re-enrol with \
             `zpanel-bridge join`"
        ),
        Some(tls) => anyhow::anyhow!("tls: {tls}"),
        None => anyhow::anyhow!("tls: {e}"),
    }
}

/// Runs one session after the hello: waits for the welcome, then serves frames.
async fn serve(mut ws: Ws, jobs: Arc<Jobs>, config_dir: &Path, name: &str) -> anyhow::Error {
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
    let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (renewed, renewal_answers) = mpsc::channel(1);
    let session = DaemonSession {
        outbound: outbound.clone(),
        jobs,
        attachments: Mutex::new(HashMap::new()),
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
    session.detach_all();
    anyhow::Error::new(end)
}

struct Attachment {
    job: Arc<ExecJob>,
    number: u64,
    cancel: CancellationToken,
}

struct DaemonSession {
    outbound: mpsc::Sender<Body>,
    jobs: Arc<Jobs>,
    attachments: Mutex<HashMap<u64, Attachment>>,
    /// Answers to certificate renewals, for the renewal task.
    renewed: mpsc::Sender<CertificateRenewed>,
}

impl DaemonSession {
    fn attachments(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Attachment>> {
        self.attachments.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_frame(&self, body: Body) -> Result<(), SessionEnd> {
        match body {
            Body::Ping(beat) => {
                let _ = self.outbound.try_send(Body::Pong(beat));
            }
            Body::Pong(_) => {}
            Body::Open(open) => self.open(open),
            Body::Data(ChannelData {
                channel_id,
                chunk: Some(chunk),
            }) => {
                let job = self.attachments().get(&channel_id).map(|a| a.job.clone());
                match job {
                    Some(job) if chunk.stream() == StreamKind::Stdin => {
                        if let Err(e) = job.stdin(chunk.offset, chunk.payload, chunk.eof) {
                            self.close(channel_id, &e.to_string());
                        }
                    }
                    Some(_) => self.close(channel_id, "only stdin may be sent to a command"),
                    None => tracing::debug!(channel_id, "data for an unknown channel ignored"),
                }
            }
            Body::Ack(ChannelAck {
                channel_id,
                ack: Some(ack),
            }) => {
                let job = self.attachments().get(&channel_id).map(|a| a.job.clone());
                if let Some(stream) = job.as_ref().and_then(|job| job.stream(ack.stream()))
                    && let Err(e) = stream.with(|buffer| buffer.ack(ack.offset))
                {
                    self.close(channel_id, &e.to_string());
                }
            }
            Body::ExecSignal(signal) => {
                if let Some(attachment) = self.attachments().get(&signal.channel_id) {
                    attachment.job.signal(signal.signal);
                }
            }
            Body::Close(close) => self.detach(close.channel_id, close.release),
            Body::CertificateRenewed(answer) => {
                let _ = self.renewed.try_send(answer);
            }
            Body::Data(_) | Body::Ack(_) => tracing::debug!("empty data or ack frame ignored"),
            Body::Hello(_)
            | Body::Welcome(_)
            | Body::OpenResult(_)
            | Body::ExecExited(_)
            | Body::RenewCertificate(_) => {
                return Err(SessionEnd::Protocol(
                    "frame not allowed from the control plane".into(),
                ));
            }
        }
        Ok(())
    }

    fn open(&self, open: Open) {
        let channel_id = open.channel_id;
        let attached = match open.request {
            Some(open::Request::ExecStart(start)) => self
                .jobs
                .start(
                    &start.exec_id,
                    &start.argv,
                    Duration::from_millis(start.timeout_ms),
                )
                .map(|job| (job, 0, 0)),
            Some(open::Request::ExecAttach(attach)) => {
                self.jobs.get(&attach.exec_id).and_then(|job| {
                    job.resume_from(attach.stdout_offset, attach.stderr_offset)?;
                    Ok((job, attach.stdout_offset, attach.stderr_offset))
                })
            }
            None => Err(ExecError::EmptyCommand),
        };
        let (job, stdout_from, stderr_from) = match attached {
            Ok(attached) => attached,
            Err(e) => {
                let error = match e {
                    ExecError::NotFound(_) => OpenError::NotFound,
                    ExecError::Spawn(_) => OpenError::SpawnFailed,
                    ExecError::Stream(_) => OpenError::ReplayLost,
                    _ => OpenError::BadRequest,
                };
                let result = OpenResult {
                    channel_id,
                    error: error as i32,
                    message: e.to_string(),
                    stdin_offset: 0,
                };
                let outbound = self.outbound.clone();
                tokio::spawn(async move { outbound.send(Body::OpenResult(result)).await });
                return;
            }
        };
        // One attachment per job in this session: a newer one replaces an older one.
        let replaced: Vec<u64> = self
            .attachments()
            .iter()
            .filter(|(_, a)| a.job.id == job.id)
            .map(|(id, _)| *id)
            .collect();
        for old in replaced {
            self.close(old, "superseded by a newer attachment");
        }
        let cancel = CancellationToken::new();
        let number = job.attach();
        self.attachments().insert(
            channel_id,
            Attachment {
                job: job.clone(),
                number,
                cancel: cancel.clone(),
            },
        );
        let outbound = self.outbound.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve_attachment(&job, channel_id, stdout_from, stderr_from, &outbound) => {}
            }
        });
    }

    /// Ends a channel from this side.
    fn close(&self, channel_id: u64, reason: &str) {
        self.detach(channel_id, false);
        let close = Close {
            channel_id,
            reason: reason.into(),
            release: false,
        };
        let _ = self.outbound.try_send(Body::Close(close));
    }

    fn detach(&self, channel_id: u64, release: bool) {
        if let Some(attachment) = self.attachments().remove(&channel_id) {
            attachment.cancel.cancel();
            attachment.job.detach(attachment.number, release);
        }
    }

    fn detach_all(&self) {
        for (_, attachment) in self.attachments().drain() {
            attachment.cancel.cancel();
            attachment.job.detach(attachment.number, false);
        }
    }
}

/// Serves one attachment: the open result, both output streams from the client's offsets,
/// stdin acknowledgements, and the exit status once the output is complete.
async fn serve_attachment(
    job: &ExecJob,
    channel_id: u64,
    stdout_from: u64,
    stderr_from: u64,
    outbound: &mpsc::Sender<Body>,
) -> Option<()> {
    let opened = OpenResult {
        channel_id,
        error: OpenError::None as i32,
        message: String::new(),
        stdin_offset: job.stdin_offset(),
    };
    outbound.send(Body::OpenResult(opened)).await.ok()?;
    let output = async {
        let (out, err) = tokio::join!(
            pump(job, StreamKind::Stdout, stdout_from, channel_id, outbound),
            pump(job, StreamKind::Stderr, stderr_from, channel_id, outbound),
        );
        out?;
        err?;
        let mut exit = job.exit();
        let exit = *exit.wait_for(Option::is_some).await.ok()?;
        outbound
            .send(Body::ExecExited(ExecExited { channel_id, exit }))
            .await
            .ok()
    };
    let stdin_acks = async {
        let mut written = job.stdin_written();
        loop {
            let offset = *written.borrow_and_update();
            let ack = StreamAck {
                stream: StreamKind::Stdin as i32,
                offset,
            };
            if offset > 0 {
                outbound
                    .send(Body::Ack(ChannelAck {
                        channel_id,
                        ack: Some(ack),
                    }))
                    .await
                    .ok()?;
            }
            written.changed().await.ok()?;
        }
    };
    tokio::select! {
        done = output => done,
        none = stdin_acks => none,
    }
}

/// Sends one output stream from `offset` on; ends after the end-of-stream chunk.
async fn pump(
    job: &ExecJob,
    kind: StreamKind,
    offset: u64,
    channel_id: u64,
    outbound: &mpsc::Sender<Body>,
) -> Option<()> {
    let stream = job.stream(kind)?;
    let mut sender = StreamSender::new(kind, offset);
    loop {
        match sender.next(stream).await {
            Ok(Some(chunk)) => {
                let data = ChannelData {
                    channel_id,
                    chunk: Some(chunk),
                };
                outbound.send(Body::Data(data)).await.ok()?;
            }
            Ok(None) => return Some(()),
            Err(e) => {
                tracing::warn!(exec = %job.id, "output stream: {e}");
                return None;
            }
        }
    }
}

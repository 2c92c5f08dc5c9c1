//! The bridge listener: accepts daemons' mTLS connections, checks the client certificate
//! against the CA and the list of enrolled hosts during the TLS handshake, negotiates the
//! protocol version, registers the session with the router and dispatches its frames.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_util::sync::CancellationToken;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    BRIDGE_PROTOCOL_MIN_VERSION, BRIDGE_PROTOCOL_VERSION, CertificateRenewed, Close, Hello, Welcome,
};
use zpanel_shared::frame::{self, DEFAULT_MAX_FRAME_BYTES};
use zpanel_shared::replay::DEFAULT_WINDOW_BYTES;
use zpanel_shared::transport::{self, SessionEnd};

use crate::ca::{CaState, ServerCertificate};
use crate::metrics::Metrics;
use crate::router::{ChannelEvent, Delivery, SessionHandle};
use crate::service::AppState;
use crate::store::HostFacts;

/// The WebSocket path daemons open.
pub const SESSION_PATH: &str = "/v1/session";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames queued for a daemon before senders wait.
const OUTBOUND_QUEUE: usize = 128;

/// Ids of the hosts allowed to connect: enrolled and not deleted. Checked during the TLS
/// handshake, so a deleted host's certificate gets no further than that.
#[derive(Debug, Default, Clone)]
pub struct HostAllowList(Arc<RwLock<HashSet<String>>>);

impl HostAllowList {
    pub fn allow(&self, host_id: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_id.to_string());
    }

    pub fn revoke(&self, host_id: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host_id);
    }

    pub fn contains(&self, host_id: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(host_id)
    }
}

/// Client verification: a chain to a trusted CA (webpki, with expiry; the CAs change
/// during a rotation) whose common name is an allowed host.
#[derive(Debug)]
struct HostCertVerifier {
    cas: Arc<CaState>,
    allowed: HostAllowList,
}

impl ClientCertVerifier for HostCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The trusted CAs change at runtime; hints are optional and daemons have one
        // certificate to offer anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .cas
            .verify_client_cert(end_entity, intermediates, now)?;
        match crate::ca::host_identity(end_entity).map(|identity| identity.host_id) {
            Some(host_id) if self.allowed.contains(&host_id) => Ok(verified),
            Some(host_id) => Err(rustls::Error::General(format!(
                "host {host_id} is not enrolled here, or was revoked or deleted"
            ))),
            None => Err(rustls::Error::General(
                "client certificate has no common name".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &zpanel_shared::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &zpanel_shared::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        zpanel_shared::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS for the bridge listener: the server certificate of the current CA, and mandatory
/// client certificates from a trusted CA naming an allowed host. Both are read from `cas` at
/// every handshake, so a CA rotation takes effect without a restart.
pub fn tls_config(
    cas: Arc<CaState>,
    allowed: HostAllowList,
) -> Result<ServerConfig, rustls::Error> {
    let provider = zpanel_shared::tls::provider();
    let verifier = Arc::new(HostCertVerifier {
        cas: cas.clone(),
        allowed,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServerCertificate(cas)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: a resumed handshake skips client-certificate verification, and
    // with it the check that the host is still enrolled. Daemons reconnect rarely.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Accepts daemons until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let sessions = Arc::new(AtomicU64::new(1));
    loop {
        let Some((stream, peer)) = crate::web::accept(&listener, &shutdown).await else {
            return;
        };
        let session_id = sessions.fetch_add(1, Ordering::Relaxed);
        let (acceptor, state, shutdown) = (acceptor.clone(), state.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(reason) =
                handle_connection(stream, acceptor, state.clone(), session_id, shutdown).await
            {
                Metrics::add(&state.metrics.handshakes_refused, 1);
                tracing::info!(%peer, "bridge connection refused: {reason}");
            }
        });
    }
}

/// Runs one connection: handshake, then the session. Errors are handshake refusals.
async fn handle_connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    session_id: u64,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "tls handshake timed out".to_string())?
        .map_err(|e| format!("tls: {e}"))?;
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or("no client certificate")?;
    let identity =
        crate::ca::host_identity(client_cert).ok_or("no client certificate naming a host")?;
    let (host_id, cert_not_after) = (identity.host_id, identity.not_after);
    // Which CA issued the certificate the host holds: during a CA rotation a host still on
    // the old CA renews at once.
    let authorities = state.ca.authorities();
    let cert_ca_pin = authorities.issuer_pin(client_cert).unwrap_or_default();
    let renew_now = cert_ca_pin != authorities.issuing.pin();
    // The verifier checked this during the handshake; checking again here also covers a
    // host deleted while the handshake ran.
    if !state.allowed_hosts.contains(&host_id) {
        return Err(format!("host {host_id} is not enrolled"));
    }
    // The callback's signature is tungstenite's; its error type is theirs.
    #[allow(clippy::result_large_err)]
    let check_path = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() == SESSION_PATH {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some("unknown path".into()));
            *refusal.status_mut() = hyper::StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let config = transport::websocket_config(DEFAULT_MAX_FRAME_BYTES);
    let mut ws = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(tls, check_path, Some(config)),
    )
    .await
    .map_err(|_| "websocket handshake timed out".to_string())?
    .map_err(|e| format!("websocket: {e}"))?;

    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next()).await;
    let refused_frame = |reason: String| {
        Metrics::add(&state.metrics.frames_rejected, 1);
        Err(format!("host {host_id}: {reason}"))
    };
    let hello = match first {
        Ok(Some(Ok(Message::Binary(bytes)))) => match frame::decode(bytes, DEFAULT_MAX_FRAME_BYTES)
        {
            Ok(Body::Hello(hello)) => hello,
            Ok(_) => return refused_frame("first frame is not a hello".into()),
            Err(e) => return refused_frame(e.to_string()),
        },
        Ok(Some(Ok(_))) => return refused_frame("first message is not a binary frame".into()),
        Ok(Some(Err(e @ tokio_tungstenite::tungstenite::Error::Capacity(_)))) => {
            return refused_frame(e.to_string());
        }
        _ => return Err(format!("host {host_id}: no hello")),
    };
    let Some(version) = negotiate(&hello) else {
        let reason = format!(
            "protocol versions {}..={} are not supported; this control plane speaks {BRIDGE_PROTOCOL_MIN_VERSION}..={BRIDGE_PROTOCOL_VERSION}",
            hello.min_version, hello.max_version
        );
        let close = Body::Close(Close {
            channel_id: 0,
            reason: reason.clone(),
            release: false,
            superseded: false,
        });
        let _ = futures_util::SinkExt::send(&mut ws, Message::Binary(frame::encode(close))).await;
        return Err(format!("host {host_id}: {reason}"));
    };

    let facts = hello.host.map(|h| HostFacts {
        hostname: h.hostname,
        os: h.os,
        kernel: h.kernel,
        arch: h.arch,
        daemon_version: h.daemon_version,
        daemon_sha256: h.daemon_sha256,
        systemd: h.systemd,
    });
    let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let session = Arc::new(SessionHandle::new(
        host_id.clone(),
        session_id,
        outbound_tx.clone(),
    ));
    let heartbeat = state.heartbeat_interval;
    let welcome = Welcome {
        version,
        heartbeat_interval_ms: heartbeat.as_millis() as u32,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
        window_bytes: DEFAULT_WINDOW_BYTES as u32,
        renew_certificate_after: if renew_now {
            zpanel_shared::unix_now()
        } else {
            state.renew_after(cert_not_after)
        },
    };
    let _ = outbound_tx.try_send(Body::Welcome(welcome));
    if let Err(e) = state
        .store
        .host_connected(&host_id, &facts.unwrap_or_default())
        .await
    {
        tracing::warn!(host = %host_id, "cannot record host connection: {e:#}");
    }
    if let Err(e) = state.store.set_host_ca_pin(&host_id, &cert_ca_pin).await {
        tracing::warn!(host = %host_id, "cannot record the CA of the host's certificate: {e:#}");
    }
    state.router.register(session.clone());
    Metrics::add(&state.metrics.sessions_accepted, 1);
    tracing::info!(host = %host_id, session = session_id, version, "host online");

    let run = transport::run(
        ws,
        outbound_rx,
        heartbeat * 3,
        DEFAULT_MAX_FRAME_BYTES,
        |body| on_frame(&session, &state, body),
    );
    let end = tokio::select! {
        end = run => {
            if end.is_refused_input() {
                Metrics::add(&state.metrics.frames_rejected, 1);
            }
            end.to_string()
        }
        _ = session.ended.cancelled() => "replaced by a newer session or disconnected".to_string(),
        _ = shutdown.cancelled() => "control plane shutting down".to_string(),
    };
    let was_current = state.router.unregister(&session);
    session.fail_all(&end);
    if was_current && let Err(e) = state.store.host_disconnected(&host_id).await {
        tracing::warn!(host = %host_id, "cannot record the host's disconnection: {e:#}");
    }
    tracing::info!(host = %host_id, session = session_id, "host session ended: {end}");
    Ok(())
}

/// The highest version both sides speak, if any.
fn negotiate(hello: &Hello) -> Option<u32> {
    let version = hello.max_version.min(BRIDGE_PROTOCOL_VERSION);
    (version >= hello.min_version.max(BRIDGE_PROTOCOL_MIN_VERSION)).then_some(version)
}

/// Dispatches one frame from a daemon. Never waits; refusing a frame never affects other
/// channels or hosts.
fn on_frame(
    session: &Arc<SessionHandle>,
    state: &Arc<AppState>,
    body: Body,
) -> Result<(), SessionEnd> {
    let metrics = &state.metrics;
    let (channel_id, delivery) = match body {
        Body::Ping(beat) => {
            let _ = session.outbound.try_send(Body::Pong(beat));
            return Ok(());
        }
        Body::Pong(_) => return Ok(()),
        Body::Metrics(batch) => {
            state.telemetry.submit(session, batch);
            return Ok(());
        }
        Body::OpenResult(result) => (result.channel_id, session.deliver_open_result(result)),
        Body::Data(data) => {
            let Some(chunk) = data.chunk else {
                Metrics::add(&metrics.frames_rejected, 1);
                return Ok(());
            };
            Metrics::add(&metrics.bytes_routed, chunk.payload.len() as u64);
            (
                data.channel_id,
                session.deliver(data.channel_id, ChannelEvent::Data(chunk)),
            )
        }
        Body::Ack(ack) => match ack.ack {
            Some(inner) => (
                ack.channel_id,
                session.deliver(ack.channel_id, ChannelEvent::Ack(inner)),
            ),
            None => (ack.channel_id, Delivery::UnknownChannel),
        },
        Body::ExecExited(exited) => {
            let event = ChannelEvent::Exited(exited.exit.unwrap_or_default());
            (exited.channel_id, session.deliver(exited.channel_id, event))
        }
        Body::FileDone(done) => {
            let event = ChannelEvent::FileDone(done.result.unwrap_or_default());
            (done.channel_id, session.deliver(done.channel_id, event))
        }
        Body::FileChanged(changed) => match changed.change {
            Some(change) => {
                let event = ChannelEvent::FileChanged(change);
                (
                    changed.channel_id,
                    session.deliver(changed.channel_id, event),
                )
            }
            None => return Ok(()),
        },
        Body::DockerUpdate(updated) => match updated.update {
            Some(update) => {
                let event = ChannelEvent::DockerUpdated(update);
                (
                    updated.channel_id,
                    session.deliver(updated.channel_id, event),
                )
            }
            None => return Ok(()),
        },
        Body::DockerDone(done) => {
            let event = ChannelEvent::DockerDone(done.outcome.unwrap_or_default());
            (done.channel_id, session.deliver(done.channel_id, event))
        }
        Body::Close(close) => (close.channel_id, session.channel_closed(close)),
        Body::UpgradeDone(done) => {
            let channel_id = done.channel_id;
            (
                channel_id,
                session.deliver(channel_id, ChannelEvent::UpgradeDone(done)),
            )
        }
        Body::RenewCertificate(renew) => {
            renew_certificate(session, state, renew.csr_pem);
            return Ok(());
        }
        Body::Hello(_)
        | Body::Welcome(_)
        | Body::Open(_)
        | Body::ExecSignal(_)
        | Body::CertificateRenewed(_)
        | Body::TerminalResize(_)
        | Body::FileCommit(_)
        | Body::MetricsAck(_)
        | Body::RenewNow(_) => {
            // counted as refused input when the session ends
            return Err(SessionEnd::Protocol(
                "frame not allowed from a daemon".into(),
            ));
        }
    };
    match delivery {
        Delivery::Delivered => {}
        Delivery::UnknownChannel => {
            Metrics::add(&metrics.frames_rejected, 1);
            tracing::debug!(host = %session.host_id, channel_id, "frame for an unknown channel ignored");
        }
        Delivery::Overflow => {
            Metrics::add(&metrics.frames_rejected, 1);
            tracing::warn!(host = %session.host_id, channel_id, "channel closed: daemon overran its flow-control window");
            let reason = "flow-control window overrun".to_string();
            let _ = session.outbound.try_send(Body::Close(Close {
                channel_id,
                reason,
                release: false,
                superseded: false,
            }));
        }
    }
    Ok(())
}

/// Signs a renewed certificate for the session's host, one renewal at a time per session.
fn renew_certificate(session: &Arc<SessionHandle>, state: &Arc<AppState>, csr_pem: String) {
    if session.renewing.swap(true, Ordering::SeqCst) {
        return;
    }
    let (session, state) = (session.clone(), state.clone());
    tokio::spawn(async move {
        let answer = match state
            .renew_host_certificate(&session.host_id, &csr_pem)
            .await
        {
            Ok(cert) => CertificateRenewed {
                renew_after: state.renew_after(cert.expires_at),
                cert_pem: cert.cert_pem,
                expires_at: cert.expires_at,
                error: String::new(),
                ca_pem: cert.ca_bundle,
            },
            Err(e) => CertificateRenewed {
                error: e.to_string(),
                ..Default::default()
            },
        };
        let _ = session
            .outbound
            .send(Body::CertificateRenewed(answer))
            .await;
        session.renewing.store(false, Ordering::SeqCst);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_highest_common_version() {
        let hello = |min, max| Hello {
            min_version: min,
            max_version: max,
            host: None,
        };
        assert_eq!(negotiate(&hello(1, 1)), Some(1));
        assert_eq!(negotiate(&hello(1, 9)), Some(BRIDGE_PROTOCOL_VERSION));
        assert_eq!(
            negotiate(&hello(
                BRIDGE_PROTOCOL_VERSION + 1,
                BRIDGE_PROTOCOL_VERSION + 3
            )),
            None
        );
        assert_eq!(negotiate(&hello(0, 0)), None);
    }
}

//! The web listener: HTTPS (or plain HTTP behind a proxy) with HTTP/1.1 and HTTP/2 on one
//! port, carrying both the axum routes and the tonic gRPC service.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

pub fn tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<TlsAcceptor> {
    let mut config = ServerConfig::builder_with_provider(zpanel_shared::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Like [`tls_config`], the certificate chosen at every handshake (the internal CA's, which a
/// CA rotation replaces at runtime).
pub fn tls_config_resolving(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> anyhow::Result<TlsAcceptor> {
    let mut config = ServerConfig::builder_with_provider(zpanel_shared::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub fn tls_config_from_files(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let chain = zpanel_shared::tls::certs_from_pem(&read(cert)?)
        .with_context(|| format!("{}", cert.display()))?;
    let key_der = zpanel_shared::tls::key_from_pem(&read(key)?)
        .with_context(|| format!("{}", key.display()))?;
    tls_config(chain, key_der)
}

/// The next connection with Nagle off, or `None` once `shutdown` is cancelled. Accept errors
/// (such as running out of file descriptors) are logged and retried after a pause.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    tracing::warn!("accept on {:?} failed: {e}", listener.local_addr().ok());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    loop {
        let Some((stream, peer)) = accept(&listener, &shutdown).await else {
            return;
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            // Handlers see the client's address (login rate limits, audit) as `ConnectInfo`.
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(e)) => return tracing::debug!("web tls handshake failed: {e}"),
                        Err(_) => return tracing::debug!("web tls handshake timed out"),
                    }
                }
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!("web connection ended: {e}");
            }
        });
    }
}

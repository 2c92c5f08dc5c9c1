//! The host's identity on disk: its key (made on the host, never sent), its certificate and
//! the CA it trusts. The TLS configuration is read from them at every connection, and the
//! certificate is renewed over the live session well before it expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{CertificateParams, DnType, KeyPair};
use tokio::sync::mpsc;
use zpanel_proto::frame::Body;
use zpanel_proto::{CertificateRenewed, RenewCertificate};
use zpanel_shared::tls::{ServerTrust, certs_from_pem, key_from_pem};
use zpanel_shared::unix_now;

use crate::config::{CA_FILE, CERT_FILE, KEY_FILE, SETTINGS_FILE};

/// How long the control plane has to answer a renewal request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// When a renewal failed, try again after this long.
const RETRY_AFTER: i64 = 300;

/// A certificate signing request for `key`, naming the host.
pub fn csr_pem(key: &KeyPair, name: &str) -> anyhow::Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(params.serialize_request(key)?.pem()?)
}

fn read(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (enrol with `zpanel-bridge join`)",
            path.display()
        )
    })
}

/// The client TLS configuration: this host's certificate and key, trusting the CA.
pub fn tls_config(dir: &Path) -> anyhow::Result<rustls::ClientConfig> {
    client_config(dir, &read(dir, CERT_FILE)?)
}

fn client_config(dir: &Path, cert_pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let ca = certs_from_pem(&read(dir, CA_FILE)?)?;
    let chain = certs_from_pem(cert_pem)?;
    let key = key_from_pem(&read(dir, KEY_FILE)?)?;
    Ok(zpanel_shared::tls::client_config(
        ServerTrust::Cas(ca),
        Some((chain, key)),
        &[b"http/1.1"],
    )?)
}

/// Renews the certificate when the control plane said to (`renew_after`, unix seconds; 0
/// means never), for as long as the session lasts.
pub async fn renew(
    dir: PathBuf,
    name: String,
    mut renew_after: i64,
    outbound: mpsc::Sender<Body>,
    mut answers: mpsc::Receiver<CertificateRenewed>,
) {
    if renew_after <= 0 {
        return;
    }
    loop {
        let wait = (renew_after - unix_now()).max(0) as u64;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let csr_pem = match renewal_request(&dir, &name) {
            Ok(csr_pem) => csr_pem,
            Err(e) => {
                tracing::error!("cannot make a renewal request: {e:#}");
                return;
            }
        };
        if outbound
            .send(Body::RenewCertificate(RenewCertificate { csr_pem }))
            .await
            .is_err()
        {
            return;
        }
        renew_after = match tokio::time::timeout(ANSWER_TIMEOUT, answers.recv()).await {
            Ok(None) => return,
            Ok(Some(answer)) if !answer.error.is_empty() => {
                tracing::warn!("certificate renewal refused: {}", answer.error);
                unix_now() + RETRY_AFTER
            }
            Ok(Some(answer)) => match install(&dir, &answer) {
                Ok(()) => {
                    tracing::info!(expires_at = answer.expires_at, "certificate renewed");
                    answer.renew_after
                }
                Err(e) => {
                    tracing::warn!("renewed certificate not installed: {e:#}");
                    unix_now() + RETRY_AFTER
                }
            },
            Err(_) => {
                tracing::warn!("no answer to the certificate renewal within {ANSWER_TIMEOUT:?}");
                unix_now() + RETRY_AFTER
            }
        };
    }
}

/// A CSR for the key the host already has (renewal keeps the key).
fn renewal_request(dir: &Path, name: &str) -> anyhow::Result<String> {
    let key_pem =
        String::from_utf8(read(dir, KEY_FILE)?).context("the host key is not PEM text")?;
    let key = KeyPair::from_pem(&key_pem).context("the host key cannot be parsed")?;
    csr_pem(&key, name)
}

/// Replaces the certificate file atomically, after checking that it goes with our key.
fn install(dir: &Path, answer: &CertificateRenewed) -> anyhow::Result<()> {
    client_config(dir, answer.cert_pem.as_bytes())
        .context("the new certificate does not fit this host's key")?;
    zpanel_shared::fsutil::write_atomic(&dir.join(CERT_FILE), answer.cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// Refuses to start when the config directory is missing pieces, with one clear line.
pub fn check_enrolled(dir: &Path) -> anyhow::Result<()> {
    for file in [SETTINGS_FILE, CA_FILE, CERT_FILE, KEY_FILE] {
        if !dir.join(file).exists() {
            bail!(
                "{} is missing; enrol this host first with `zpanel-bridge join`",
                dir.join(file).display()
            );
        }
    }
    Ok(())
}

//! The host's identity on disk: its key (made on the host, never sent), its certificate and
//! the CAs it trusts. The TLS configuration is read from them at every connection, and the
//! certificate is renewed over the live session well before it expires, or at once when
//! the control plane asks (a CA rotation), taking the CA bundle the answer carries.

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
    client_config(
        &read(dir, CA_FILE)?,
        &read(dir, CERT_FILE)?,
        &read(dir, KEY_FILE)?,
    )
}

fn client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<rustls::ClientConfig> {
    let ca = certs_from_pem(ca_pem)?;
    let chain = certs_from_pem(cert_pem)?;
    let key = key_from_pem(key_pem)?;
    Ok(zpanel_shared::tls::client_config(
        ServerTrust::Cas(ca),
        Some((chain, key)),
        &[b"http/1.1"],
    )?)
}

/// What the session hands the renewal task.
pub enum Renewal {
    /// The control plane's answer to our `RenewCertificate`.
    Answer(CertificateRenewed),
    /// The control plane asks for a renewal now (`RenewNow`: a CA rotation).
    Now,
}

/// Renews the certificate when the control plane said to (`renew_after`, unix seconds; 0
/// means never) or asks to (`RenewNow`), for as long as the session lasts.
pub async fn renew(
    dir: PathBuf,
    name: String,
    mut renew_after: i64,
    outbound: mpsc::Sender<Body>,
    mut inbox: mpsc::Receiver<Renewal>,
) {
    loop {
        let due = async {
            if renew_after > 0 {
                let wait = (renew_after - unix_now()).max(0) as u64;
                tokio::time::sleep(Duration::from_secs(wait)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = due => {}
            message = inbox.recv() => match message {
                None => return,
                Some(Renewal::Now) => tracing::info!("the control plane asks for a certificate renewal now"),
                // an answer to a request we gave up on
                Some(Renewal::Answer(_)) => continue,
            },
        }
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
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        let answer = loop {
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(None) => return,
                // already renewing
                Ok(Some(Renewal::Now)) => continue,
                Ok(Some(Renewal::Answer(answer))) => break Some(answer),
                Err(_) => break None,
            }
        };
        renew_after = match answer {
            Some(answer) if !answer.error.is_empty() => {
                tracing::warn!("certificate renewal refused: {}", answer.error);
                unix_now() + RETRY_AFTER
            }
            Some(answer) => match install(&dir, &answer) {
                Ok(()) => {
                    tracing::info!(expires_at = answer.expires_at, "certificate renewed");
                    answer.renew_after
                }
                Err(e) => {
                    tracing::warn!("renewed certificate not installed: {e:#}");
                    unix_now() + RETRY_AFTER
                }
            },
            None => {
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

/// Replaces the CA bundle (when the answer has one) and then the certificate, each file
/// atomically, after checking that they parse and that the certificate goes with our key.
/// The bundle goes first: a crash in between leaves a certificate the bundle still trusts
/// the control plane with (during a CA rotation the bundle holds both CAs).
fn install(dir: &Path, answer: &CertificateRenewed) -> anyhow::Result<()> {
    let ca_pem = if answer.ca_pem.is_empty() {
        read(dir, CA_FILE)?
    } else {
        answer.ca_pem.as_bytes().to_vec()
    };
    client_config(&ca_pem, answer.cert_pem.as_bytes(), &read(dir, KEY_FILE)?)
        .context("the new certificate or CA bundle does not fit this host's key")?;
    if !answer.ca_pem.is_empty() && read(dir, CA_FILE)? != ca_pem {
        zpanel_shared::fsutil::write_atomic(&dir.join(CA_FILE), &ca_pem, 0o644)?;
        let cas = certs_from_pem(&ca_pem).map(|cas| cas.len()).unwrap_or(0);
        tracing::info!(cas, "trusted CAs updated");
    }
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

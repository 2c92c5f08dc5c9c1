//! TLS helpers both ends use: the crypto provider, CA pins (`sha256:<hex>` of the CA
//! certificate's DER) and the verifier a client uses to trust the control plane.
//!
//! Trust rule: a server chain that contains the pinned CA (or one of the CAs a daemon was
//! given at enrolment) is the control plane, whatever name it is reached by: the CA only
//! issues server-auth certificates to the control plane (host certificates are client-auth
//! only, which webpki enforces). Anything else must be valid for its name under the public
//! web roots.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA pin must look like sha256:<64 hex digits>, got {0:?}")]
    BadPin(String),
    #[error("no certificate in PEM data")]
    NoCertificate,
    #[error("no private key in PEM data")]
    NoKey,
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The pin of a CA certificate: `sha256:` and the hex SHA-256 of its DER encoding.
pub fn ca_pin(ca_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(ca_der)))
}

/// Checks the form of a pin and returns it normalised to lower case.
pub fn parse_pin(pin: &str) -> Result<String, TlsError> {
    let hex_part = pin
        .trim()
        .strip_prefix("sha256:")
        .ok_or_else(|| TlsError::BadPin(pin.into()))?;
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(TlsError::BadPin(pin.into()));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        other => TlsError::Pem(other.to_string()),
    })
}

/// Whom a client trusts as its server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// A chain containing the CA with this pin, else the public web roots.
    Pin(String),
    /// Chains issued by any of these CAs (a daemon's trust after enrolment).
    Cas(Vec<CertificateDer<'static>>),
    /// The public web roots only.
    Public,
}

#[derive(Debug)]
struct ServerVerifier {
    trust: ServerTrust,
    provider: Arc<CryptoProvider>,
    public: Arc<WebPkiServerVerifier>,
}

impl ServerVerifier {
    fn new(trust: ServerTrust) -> Result<Self, TlsError> {
        let provider = provider();
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let public = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()?;
        Ok(ServerVerifier {
            trust,
            provider,
            public,
        })
    }

    /// Verifies the chain under `cas`, accepting any server name (see the module docs).
    fn verify_under(
        &self,
        cas: &[CertificateDer<'_>],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca.clone().into_owned())?;
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        match verifier.verify_server_cert(end_entity, intermediates, server_name, &[], now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            ServerTrust::Pin(pin) => {
                if let Some(ca) = intermediates.iter().find(|c| ca_pin(c) == *pin) {
                    return self.verify_under(
                        std::slice::from_ref(ca),
                        end_entity,
                        &[],
                        server_name,
                        now,
                    );
                }
                self.public.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )
            }
            ServerTrust::Cas(cas) => {
                self.verify_under(cas, end_entity, intermediates, server_name, now)
            }
            ServerTrust::Public => self.public.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration trusting `trust`, optionally presenting a client certificate,
/// speaking the given ALPN protocols.
pub fn client_config(
    trust: ServerTrust,
    client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier::new(trust)?));
    let mut config = match client_identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_checked_and_normalised() {
        let pin = ca_pin(b"not really a certificate");
        assert_eq!(
            parse_pin(&pin.to_uppercase().replace("SHA256", "sha256")).unwrap(),
            pin
        );
        assert!(parse_pin("sha256:abc").is_err());
        assert!(parse_pin(&pin.replace("sha256:", "md5:")).is_err());
    }
}

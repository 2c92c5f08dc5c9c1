//! The internal certificate authority: created on first start in `DATA_DIR/ca`, it signs
//! hosts' CSRs (client-auth certificates whose common name is the host id) and the
//! control plane's own server certificates (issued fresh at every start).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use zpanel_shared::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA files in {0} are unreadable: {1}")]
    Corrupt(PathBuf, String),
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
}

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate issued to a host.
pub struct HostCertificate {
    pub cert_pem: String,
    pub serial: String,
    pub expires_at: i64,
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        if !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name("Zpanel CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
            params.not_after = OffsetDateTime::now_utc() + time::Duration::days(3650);
            params.serial_number = Some(random_serial());
            let cert = params.self_signed(&key)?;
            fsutil::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)
                .map_err(io(&key_path))?;
            fsutil::write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)
                .map_err(io(&cert_path))?;
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let corrupt =
            |e: &dyn std::fmt::Display| CaError::Corrupt(dir.to_path_buf(), e.to_string());
        let key = KeyPair::from_pem(&key_pem).map_err(|e| corrupt(&e))?;
        let cert_der = zpanel_shared::tls::certs_from_pem(cert_pem.as_bytes())
            .map_err(|e| corrupt(&e))?
            .remove(0);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| corrupt(&e))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn pin(&self) -> String {
        zpanel_shared::tls::ca_pin(&self.cert_der)
    }

    /// A server certificate for the control plane's listeners, valid for `names` (DNS names
    /// or IP addresses). Returns the chain (leaf then CA) and the key.
    pub fn issue_server_cert(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Zpanel control plane");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }

    /// Signs a host's CSR. Only the CSR's public key is used: the subject is the host id,
    /// the usage is client authentication, the lifetime is ours.
    pub fn sign_host_csr(
        &self,
        csr_pem: &str,
        host_id: &str,
        ttl: Duration,
    ) -> Result<HostCertificate, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(host_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        let not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::days(30));
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = not_after;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(HostCertificate {
            cert_pem: cert.pem(),
            serial: serial_hex,
            expires_at: not_after.unix_timestamp(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Zpanel");
    dn
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// What the control plane reads from a host's certificate.
pub struct HostIdentity {
    /// The subject's common name: the host id.
    pub host_id: String,
    /// When the certificate expires (unix seconds).
    pub not_after: i64,
}

/// Reads a host certificate (DER); `None` when it does not parse or names no host.
pub fn host_identity(cert: &[u8]) -> Option<HostIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let host_id = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(HostIdentity {
        host_id,
        not_after: parsed.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_reloads_and_signs_host_csrs() {
        let dir = std::env::temp_dir().join(format!("zpanel-ca-test-{}", uuid::Uuid::new_v4()));
        let ca = Ca::load_or_create(&dir).unwrap();
        let again = Ca::load_or_create(&dir).unwrap();
        assert_eq!(ca.pin(), again.pin());

        let host_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&host_key)
            .unwrap()
            .pem()
            .unwrap();
        let issued = ca
            .sign_host_csr(&csr, "host-1", Duration::from_secs(3600))
            .unwrap();
        let der = zpanel_shared::tls::certs_from_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        assert_eq!(
            host_identity(&der).map(|i| i.host_id).as_deref(),
            Some("host-1")
        );
        assert!(
            ca.sign_host_csr("garbage", "h", Duration::from_secs(60))
                .is_err()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

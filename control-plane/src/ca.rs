//! The internal certificate authority: created on first start in `DATA_DIR/ca`, it signs
//! hosts' CSRs (client-auth certificates whose common name is the host id) and the
//! control plane's own server certificates (issued fresh at every start). During a CA
//! rotation two CAs are in force ([`Authorities`]); [`CaState`] holds the ones in force and
//! the TLS material made from them, swapped whole when the rotation moves on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::PublicKeyData;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

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
    #[error("{0} is not the key of {1}")]
    KeyMismatch(PathBuf, PathBuf),
    #[error(
        "no CA with pin {1} in {0} (ca.pem or next.pem); was the CA directory changed by hand?"
    )]
    Missing(PathBuf, String),
    #[error("tls: {0}")]
    Tls(String),
}

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The DER of the subject name, to tell which CA issued a certificate.
    subject: Vec<u8>,
}

/// A certificate issued to a host.
pub struct HostCertificate {
    pub cert_pem: String,
    pub serial: String,
    pub expires_at: i64,
    /// Pin of the CA that signed it.
    pub ca_pin: String,
    /// The CAs the host should trust from now on (PEM): the signing CA, or during a CA
    /// rotation both.
    pub ca_bundle: String,
}

/// The CA's files in `DATA_DIR/ca`: the one in force, and the next one while a rotation runs.
pub const CERT_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca.key";
pub const NEXT_CERT_FILE: &str = "next.pem";
pub const NEXT_KEY_FILE: &str = "next.key";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + use<> {
    let path = path.to_path_buf();
    move |source| CaError::Io { path, source }
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            Ca::create(&cert_path, &key_path, "Zpanel CA")?;
        }
        Ca::load(&cert_path, &key_path)
    }

    /// Makes a new CA (a self-signed certificate valid for ten years) and writes its key
    /// (0600) and certificate, the key first.
    pub fn create(cert_path: &Path, key_path: &Path, common_name: &str) -> Result<Ca, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
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
        fsutil::write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(io_error(key_path))?;
        fsutil::write_atomic(cert_path, cert.pem().as_bytes(), 0o644)
            .map_err(io_error(cert_path))?;
        Ca::load(cert_path, key_path)
    }

    /// Loads a CA from its certificate and key files; refuses a key that is not the
    /// certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io_error(cert_path))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(io_error(key_path))?;
        let corrupt = |e: &dyn std::fmt::Display| {
            CaError::Corrupt(
                cert_path.parent().unwrap_or(cert_path).to_path_buf(),
                e.to_string(),
            )
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| corrupt(&e))?;
        let cert_der = zpanel_shared::tls::certs_from_pem(cert_pem.as_bytes())
            .map_err(|e| corrupt(&e))?
            .remove(0);
        let (subject, spki) = {
            let (_, parsed) =
                x509_parser::parse_x509_certificate(&cert_der).map_err(|e| corrupt(&e))?;
            (
                parsed.subject().as_raw().to_vec(),
                parsed.tbs_certificate.subject_pki.raw.to_vec(),
            )
        };
        if key.subject_public_key_info() != spki {
            return Err(CaError::KeyMismatch(
                key_path.to_path_buf(),
                cert_path.to_path_buf(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| corrupt(&e))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
            subject,
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

    /// Whether this CA issued `cert` (DER): its issuer is our subject. Rotated CAs have
    /// names of their own, so the name tells them apart (the signature was checked by the
    /// TLS handshake).
    pub fn issued(&self, cert: &[u8]) -> bool {
        x509_parser::parse_x509_certificate(cert)
            .is_ok_and(|(_, parsed)| parsed.issuer().as_raw() == self.subject.as_slice())
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
            ca_pin: self.pin(),
            ca_bundle: self.cert_pem.clone(),
        })
    }
}

/// Where a CA rotation stands (the `ca_rotation` row; see ARCHITECTURE.md "Certificate
/// lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Both CAs are trusted, the server certificates are still the old CA's, and hosts'
    /// certificates are issued by the new one.
    Overlap,
    /// Only the new CA is trusted, and it issues everything.
    Retire,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Overlap => "overlap",
            Phase::Retire => "retire",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        [Phase::Overlap, Phase::Retire]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// A CA rotation in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_pin: String,
    pub new_pin: String,
    pub phase: Phase,
    pub started_at: i64,
}

/// The CAs in force, as the rotation's phase says.
pub struct Authorities {
    /// Signs the control plane's server certificates; its pin is the one join tokens, the
    /// CLI and `/ca.pem` carry.
    pub current: Arc<Ca>,
    /// Signs hosts' certificates.
    pub issuing: Arc<Ca>,
    /// Client certificates chaining to one of these are accepted, `current` first.
    pub trusted: Vec<Arc<Ca>>,
}

impl Authorities {
    /// What the CA files in `dir` and the rotation row say is in force. A retired CA's files
    /// move while the row still says `retire`, so the new CA is found by its pin under
    /// either name, with whichever key fits.
    pub fn load(dir: &Path, rotation: Option<&Rotation>) -> Result<Authorities, CaError> {
        let Some(rotation) = rotation else {
            let ca = Arc::new(Ca::load_or_create(dir)?);
            return Ok(Authorities::single(ca));
        };
        let new = Arc::new(find_ca(dir, &rotation.new_pin)?);
        match rotation.phase {
            Phase::Retire => Ok(Authorities::single(new)),
            Phase::Overlap => {
                let old = Arc::new(find_ca(dir, &rotation.old_pin)?);
                Ok(Authorities {
                    current: old.clone(),
                    issuing: new.clone(),
                    trusted: vec![old, new],
                })
            }
        }
    }

    fn single(ca: Arc<Ca>) -> Authorities {
        Authorities {
            current: ca.clone(),
            issuing: ca.clone(),
            trusted: vec![ca],
        }
    }

    /// The CA certificates daemons should trust (PEM, `current` first: enrolment checks the
    /// first one against the join token's pin).
    pub fn bundle_pem(&self) -> String {
        let mut bundle = String::new();
        for ca in &self.trusted {
            bundle.push_str(ca.cert_pem());
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
        }
        bundle
    }

    /// The host a machine enrolled as before, when `cert_pem` is a host certificate that a
    /// trusted CA signed and `csr_pem` is a validly signed request for the same key: the
    /// request's signature proves the machine still holds the key the certificate names.
    pub fn previous_host(&self, cert_pem: &str, csr_pem: &str) -> Option<String> {
        let cert_der = zpanel_shared::tls::certs_from_pem(cert_pem.as_bytes())
            .ok()?
            .remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).ok()?;
        let signed = self.trusted.iter().any(|ca| {
            x509_parser::parse_x509_certificate(ca.cert_der())
                .is_ok_and(|(_, ca)| cert.verify_signature(Some(ca.public_key())).is_ok())
        });
        let (_, csr_pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).ok()?;
        let (_, csr) = X509CertificationRequest::from_der(&csr_pem.contents).ok()?;
        let same_key = csr.verify_signature().is_ok()
            && csr.certification_request_info.subject_pki.raw == cert.public_key().raw;
        (signed && same_key)
            .then(|| host_identity(&cert_der))
            .flatten()
            .map(|identity| identity.host_id)
    }

    /// The pin of the trusted CA that issued `cert` (DER).
    pub fn issuer_pin(&self, cert: &[u8]) -> Option<String> {
        self.trusted
            .iter()
            .find(|ca| ca.issued(cert))
            .map(|ca| ca.pin())
    }
}

/// The CA in `dir` whose certificate has `pin`, as `ca.pem` or `next.pem`, with the key of
/// `ca.key` or `next.key` that fits it.
pub fn find_ca(dir: &Path, pin: &str) -> Result<Ca, CaError> {
    for cert_file in [CERT_FILE, NEXT_CERT_FILE] {
        let cert_path = dir.join(cert_file);
        let Ok(pem) = std::fs::read(&cert_path) else {
            continue;
        };
        let matches = zpanel_shared::tls::certs_from_pem(&pem)
            .is_ok_and(|certs| zpanel_shared::tls::ca_pin(&certs[0]) == pin);
        if !matches {
            continue;
        }
        let mut last = None;
        for key_file in [KEY_FILE, NEXT_KEY_FILE] {
            match Ca::load(&cert_path, &dir.join(key_file)) {
                Ok(ca) => return Ok(ca),
                Err(e) => last = Some(e),
            }
        }
        return Err(last.expect("two keys tried"));
    }
    Err(CaError::Missing(dir.to_path_buf(), pin.to_string()))
}

/// The CAs in force and the TLS material made from them, swapped as a whole when a
/// rotation moves on: the bridge and web listeners read it at every handshake.
pub struct CaState {
    live: RwLock<Arc<Live>>,
    server_names: Vec<String>,
}

struct Live {
    authorities: Arc<Authorities>,
    server_key: Arc<CertifiedKey>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for CaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaState")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

impl CaState {
    /// Issues the listeners' server certificate (valid for `server_names`) from
    /// `authorities.current`.
    pub fn new(authorities: Authorities, server_names: Vec<String>) -> Result<CaState, CaError> {
        let live = Live::new(authorities, &server_names)?;
        Ok(CaState {
            live: RwLock::new(Arc::new(live)),
            server_names,
        })
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn authorities(&self) -> Arc<Authorities> {
        self.live().authorities.clone()
    }

    /// Puts other CAs in force (a new server certificate when the current CA changed).
    pub fn install(&self, authorities: Authorities) -> Result<(), CaError> {
        let live = Live::new(authorities, &self.server_names)?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        Ok(())
    }

    /// The pin of the current CA.
    pub fn pin(&self) -> String {
        self.live().authorities.current.pin()
    }

    /// The current CA's certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.live().authorities.current.cert_pem().to_string()
    }

    /// The CAs daemons trust from now on (PEM).
    pub fn bundle_pem(&self) -> String {
        self.live().authorities.bundle_pem()
    }

    /// Signs a host's CSR with the issuing CA.
    pub fn sign_host_csr(
        &self,
        csr_pem: &str,
        host_id: &str,
        ttl: Duration,
    ) -> Result<HostCertificate, CaError> {
        let authorities = self.authorities();
        let mut cert = authorities.issuing.sign_host_csr(csr_pem, host_id, ttl)?;
        cert.ca_bundle = authorities.bundle_pem();
        Ok(cert)
    }

    /// Checks a client certificate chain against the trusted CAs (webpki, with expiry).
    pub fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.live()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    /// The listeners' certificate and key.
    pub fn server_key(&self) -> Arc<CertifiedKey> {
        self.live().server_key.clone()
    }
}

/// The listeners' server certificate, read from the [`CaState`] at every handshake.
#[derive(Debug)]
pub struct ServerCertificate(pub Arc<CaState>);

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.server_key())
    }
}

impl Live {
    fn new(authorities: Authorities, server_names: &[String]) -> Result<Live, CaError> {
        let provider = zpanel_shared::tls::provider();
        let (chain, key) = authorities.current.issue_server_cert(server_names)?;
        let tls = |e: rustls::Error| CaError::Tls(e.to_string());
        let server_key = Arc::new(CertifiedKey::from_der(chain, key, &provider).map_err(tls)?);
        let mut roots = RootCertStore::empty();
        for ca in &authorities.trusted {
            roots.add(ca.cert_der().clone()).map_err(tls)?;
        }
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| CaError::Tls(e.to_string()))?;
        Ok(Live {
            authorities: Arc::new(authorities),
            server_key,
            client_verifier,
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

//! `zpanel-bridge join`: checks the control plane's CA against the pin *before* the join
//! token leaves the host, makes the host's key (it never leaves the host), sends a CSR and
//! stores the signed certificate and settings in the config directory.

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};
use rcgen::KeyPair;
use zpanel_shared::enroll::{CA_PATH, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody};
use zpanel_shared::fsutil::write_atomic;
use zpanel_shared::tls::{ServerTrust, ca_pin, certs_from_pem, parse_pin};

use crate::config::{CA_FILE, CERT_FILE, HandWritten, JoinArgs, KEY_FILE, Settings};
use crate::{hostinfo, http};

pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let pin = parse_pin(&args.ca_pin)?;
    let token = zpanel_shared::process::read_secret(args.token.clone(), args.token_file.as_deref())
        .context("cannot read the join token")?;
    let server = args.server.trim_end_matches('/').to_string();
    let trust = ServerTrust::Pin(pin.clone());
    // A host enrolled again (or configured before it enrolls) keeps its hand-written
    // tables; a file that does not parse stops here, before the token is spent.
    let kept = HandWritten::load(&args.config_dir)?;

    let (status, body) = http::request(
        Method::GET,
        &format!("{server}{CA_PATH}"),
        None,
        trust.clone(),
    )
    .await?;
    if status != StatusCode::OK {
        bail!("{server} answered {status} for its CA certificate; is it a Zpanel control plane?");
    }
    let server_ca =
        certs_from_pem(&body).context("the server's CA certificate is not valid PEM")?;
    let server_pin = ca_pin(&server_ca[0]);
    if server_pin != pin {
        bail!(
            "the server's CA is {server_pin}, not {pin}: refusing to send the join token (check --ca-pin)"
        );
    }

    let info = hostinfo::collect();
    let name = args.name.clone().unwrap_or_else(|| info.hostname.clone());
    let previous = previous_identity(&args.config_dir, &server);
    let (key, previous_cert_pem) = match previous {
        Some((key, cert_pem)) => (key, Some(cert_pem)),
        None => (KeyPair::generate()?, None),
    };
    let csr_pem = crate::certificate::csr_pem(&key, &name)?;
    let request = EnrollRequest {
        token,
        csr_pem,
        name,
        hostname: info.hostname,
        os: info.os,
        kernel: info.kernel,
        arch: info.arch,
        daemon_version: info.daemon_version,
        labels: args.labels.iter().cloned().collect(),
        previous_cert_pem,
    };
    let (status, body) = http::request(
        Method::POST,
        &format!("{server}{ENROLL_PATH}"),
        Some(serde_json::to_vec(&request)?),
        trust,
    )
    .await?;
    if status != StatusCode::OK {
        let reason = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| status.to_string());
        bail!("enrolment refused: {reason}");
    }
    let enrolled: EnrollResponse =
        serde_json::from_slice(&body).context("the server's enrolment answer is not valid")?;
    let issued_ca = certs_from_pem(enrolled.ca_pem.as_bytes())?;
    if ca_pin(&issued_ca[0]) != pin {
        bail!("the server answered with a CA that does not match the pin; nothing was saved");
    }

    let dir = &args.config_dir;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.join(CERT_FILE), enrolled.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&dir.join(CA_FILE), enrolled.ca_pem.as_bytes(), 0o644)?;
    Settings {
        host_id: enrolled.host_id.clone(),
        name: enrolled.name.clone(),
        server_url: server,
        bridge_url: enrolled.bridge_url,
        terminal: kept.terminal,
        files: kept.files,
        policy: kept.policy,
        docker: kept.docker,
        metrics: kept.metrics,
    }
    .save(dir)?;
    println!(
        "enrolled as {} ({}); start the daemon with: zpanel-bridge run --config-dir {}",
        enrolled.name,
        enrolled.host_id,
        dir.display()
    );
    Ok(())
}

/// The key and certificate of an earlier enrolment with the same control plane, if this
/// config directory holds one: joining again with them keeps the host's identity.
fn previous_identity(dir: &std::path::Path, server: &str) -> Option<(KeyPair, String)> {
    let settings = Settings::load(dir).ok()?;
    if settings.server_url.trim_end_matches('/') != server {
        return None;
    }
    let key_pem = std::fs::read_to_string(dir.join(KEY_FILE)).ok()?;
    let cert_pem = std::fs::read_to_string(dir.join(CERT_FILE)).ok()?;
    let key = KeyPair::from_pem(&key_pem).ok()?;
    Some((key, cert_pem))
}

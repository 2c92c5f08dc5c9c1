//! The gRPC connection to the control plane: TLS with the CA pin (or the public web roots,
//! or plain HTTP for `http://` URLs), and the API token on every call.

use std::sync::Arc;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use zpanel_proto::operator_client::OperatorClient;
use zpanel_shared::tls::ServerTrust;

use crate::config::Settings;

pub type Client = OperatorClient<InterceptedService<Channel, Auth>>;

#[derive(Clone)]
pub struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub async fn connect(settings: &Settings) -> anyhow::Result<Client> {
    let uri: Uri = settings
        .server
        .parse()
        .with_context(|| format!("server {:?} is not a URL", settings.server))?;
    let host = uri
        .host()
        .context("server URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = match uri.scheme_str() {
        Some("https") => {
            let trust = match &settings.ca_pin {
                Some(pin) => ServerTrust::Pin(zpanel_shared::tls::parse_pin(pin)?),
                None => ServerTrust::Public,
            };
            Some(Arc::new(zpanel_shared::tls::client_config(
                trust,
                None,
                &[b"h2"],
            )?))
        }
        Some("http") => None,
        _ => anyhow::bail!("server URL must start with https:// or http://"),
    };
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    // The connector does TLS itself, so tonic sees a plain http URI with the same authority.
    let endpoint = Endpoint::from_shared(format!(
        "http://{}",
        uri.authority().context("server URL has no host")?
    ))?;
    let connector = tower::service_fn(move |_: Uri| {
        let (host, tls) = (host.clone(), tls.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let io: Box<dyn Io> = match tls {
                Some(config) => {
                    let name = rustls_pki_types::ServerName::try_from(host)?;
                    Box::new(
                        tokio_rustls::TlsConnector::from(config)
                            .connect(name, tcp)
                            .await?,
                    )
                }
                None => Box::new(tcp),
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(TokioIo::new(io))
        }
    });
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {}", settings.server, error_chain(&e)))?;
    let token = MetadataValue::try_from(format!("Bearer {}", settings.token))
        .context("the API token has invalid characters")?;
    Ok(OperatorClient::with_interceptor(channel, Auth(token)))
}

/// An error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// One line for a failed call.
pub fn status_message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    }
}

/// A failed call as an error of one line.
pub fn call_failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(status_message(&status))
}

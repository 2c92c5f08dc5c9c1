//! A minimal HTTP(S) client for enrolment (two requests in the daemon's life), built on
//! hyper and our own TLS trust rules.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use zpanel_shared::tls::ServerTrust;

const TIMEOUT: Duration = Duration::from_secs(20);
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

pub async fn request(
    method: Method,
    url: &str,
    json_body: Option<Vec<u8>>,
    trust: ServerTrust,
) -> anyhow::Result<(StatusCode, Bytes)> {
    tokio::time::timeout(TIMEOUT, request_inner(method, url, json_body, trust))
        .await
        .with_context(|| format!("{url}: no answer within {TIMEOUT:?}"))?
}

async fn request_inner(
    method: Method,
    url: &str,
    json_body: Option<Vec<u8>>,
    trust: ServerTrust,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let host = uri
        .host()
        .with_context(|| format!("{url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => anyhow::bail!("{url:?} must start with https:// or http://"),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let body = Full::new(Bytes::from(json_body.unwrap_or_default()));
    let request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    let response = if https {
        let config = zpanel_shared::tls::client_config(trust, None, &[b"http/1.1"])?;
        let server_name = ServerName::try_from(host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(server_name, tcp)
            .await
            .with_context(|| format!("TLS with {host}:{port} failed (is --ca-pin right?)"))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    Ok(response)
}

async fn send<IO>(io: IO, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the response: {e}"))?
        .to_bytes();
    Ok((status, body))
}

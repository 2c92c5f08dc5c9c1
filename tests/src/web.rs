//! A browser's view of the control plane without a browser: HTTPS requests with cookies
//! and headers of our choosing, and the terminal WebSocket, trusting the pinned CA.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{ControlPlane, authority_and_host};

/// An HTTP response, whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy), and as it came.
    pub body: String,
    pub bytes: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

async fn tls_connect(url: &str, pin: &str) -> anyhow::Result<TlsStream<TcpStream>> {
    let (authority, host) = authority_and_host(url)?;
    let tcp = TcpStream::connect(&authority).await?;
    tcp.set_nodelay(true)?;
    let config = zpanel_shared::tls::client_config(
        zpanel_shared::tls::ServerTrust::Pin(pin.into()),
        None,
        &[b"http/1.1"],
    )?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from(host)?, tcp)
        .await?)
}

/// One HTTP/1.1 request over a fresh TLS connection, with a JSON body or none.
pub async fn request(
    url: &str,
    pin: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> anyhow::Result<HttpResponse> {
    let json = body.map(|b| b.to_string()).unwrap_or_default();
    let mut all_headers = headers.to_vec();
    if body.is_some() {
        all_headers.push(("Content-Type", "application/json"));
    }
    request_bytes(url, pin, method, path, &all_headers, json.as_bytes()).await
}

/// One HTTP/1.1 request over a fresh TLS connection with raw bytes as its body.
pub async fn request_bytes(
    url: &str,
    pin: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    let (authority, _) = authority_and_host(url)?;
    let mut tls = tls_connect(url, pin).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    // TLS keeps what the socket would not take yet: without a flush, a busy machine leaves
    // the body's last records unsent and both sides wait for each other.
    tls.flush().await?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let bytes = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).to_string(),
        bytes,
    })
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok());
        let rest = &body[line_end + 2..];
        match size {
            Some(size) if size > 0 && rest.len() >= size => {
                out.extend_from_slice(&rest[..size]);
                body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
            }
            _ => break,
        }
    }
    out
}

/// `POST /api/v1/login` as a page on `origin` would send it.
pub async fn post_login(
    cp: &ControlPlane,
    origin: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<HttpResponse> {
    let body = serde_json::json!({"user": user, "password": password});
    let headers = [("Origin", origin)];
    request(
        &cp.url,
        &cp.pin,
        "POST",
        "/api/v1/login",
        &headers,
        Some(&body),
    )
    .await
}

/// A logged-in browser (its session cookie and CSRF token), or a script calling the same
/// API with an API token.
#[derive(Clone)]
pub struct Browser {
    pub url: String,
    pub pin: String,
    pub cookie: String,
    pub csrf: String,
    /// Set for a script: sent as `Authorization: Bearer` instead of the cookie.
    pub bearer: Option<String>,
}

pub type Socket = WebSocketStream<TlsStream<TcpStream>>;

impl Browser {
    /// Logs in with a user name and password.
    pub async fn login(cp: &ControlPlane, user: &str, password: &str) -> anyhow::Result<Browser> {
        let response = post_login(cp, &cp.url, user, password).await?;
        anyhow::ensure!(response.status == 200, "login: {response:?}");
        let set_cookie = response.header("set-cookie").context("no cookie")?;
        let cookie = set_cookie
            .split(';')
            .next()
            .context("empty cookie")?
            .to_string();
        Ok(Browser {
            url: cp.url.clone(),
            pin: cp.pin.clone(),
            cookie,
            csrf: response.json()["csrf"].as_str().unwrap_or("").to_string(),
            bearer: None,
        })
    }

    /// A script using an API token.
    pub fn with_token(cp: &ControlPlane, token: &str) -> Browser {
        Browser {
            url: cp.url.clone(),
            pin: cp.pin.clone(),
            cookie: String::new(),
            csrf: String::new(),
            bearer: Some(format!("Bearer {token}")),
        }
    }

    /// The credential headers: the cookie with our Origin and CSRF token, or the token.
    fn credentials(&self) -> Vec<(&str, &str)> {
        match &self.bearer {
            Some(bearer) => vec![("Authorization", bearer.as_str())],
            None => vec![
                ("Cookie", self.cookie.as_str()),
                ("Origin", self.url.as_str()),
                ("X-CSRF-Token", self.csrf.as_str()),
            ],
        }
    }

    /// A request with the cookie, our Origin and the CSRF token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<HttpResponse> {
        let headers = self.credentials();
        request(&self.url, &self.pin, method, path, &headers, body).await
    }

    /// A request with the cookie, our Origin, the CSRF token, more headers and raw bytes.
    pub async fn call_with_body(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<HttpResponse> {
        let mut all = self.credentials();
        all.extend_from_slice(headers);
        request_bytes(&self.url, &self.pin, method, path, &all, body).await
    }

    /// Reads the Server-Sent Events stream at `path` until `done` holds for the text so far
    /// (false when the stream ends or 20 s pass first).
    pub async fn events_until(&self, path: &str, done: impl Fn(&str) -> bool) -> bool {
        let Ok((authority, _)) = authority_and_host(&self.url) else {
            return false;
        };
        let Ok(mut tls) = tls_connect(&self.url, &self.pin).await else {
            return false;
        };
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nCookie: {}\r\n\r\n",
            self.cookie
        );
        if tls.write_all(head.as_bytes()).await.is_err() || tls.flush().await.is_err() {
            return false;
        }
        let mut seen = String::new();
        let mut buf = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&seen) {
            match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => return false,
            }
        }
        true
    }

    /// Opens a terminal WebSocket (`query` as in ARCHITECTURE.md) from `origin`.
    pub async fn terminal_from(
        &self,
        host: &str,
        query: &str,
        origin: &str,
    ) -> anyhow::Result<Socket> {
        let ws_url = format!(
            "{}/api/v1/hosts/{host}/terminal?{query}",
            self.url.replacen("https://", "wss://", 1)
        );
        let mut request = ws_url.into_client_request()?;
        match &self.bearer {
            Some(bearer) => request
                .headers_mut()
                .insert("Authorization", bearer.parse()?),
            None => request.headers_mut().insert("Cookie", self.cookie.parse()?),
        };
        request.headers_mut().insert("Origin", origin.parse()?);
        let tls = tls_connect(&self.url, &self.pin).await?;
        let (socket, _) = tokio_tungstenite::client_async(request, tls).await?;
        Ok(socket)
    }

    pub async fn terminal(&self, host: &str, query: &str) -> anyhow::Result<Socket> {
        self.terminal_from(host, query, &self.url).await
    }
}

/// What a terminal socket said, gathered: control messages and output bytes.
#[derive(Default, Debug)]
pub struct Screen {
    pub attached: Option<serde_json::Value>,
    pub output: Vec<u8>,
    pub messages: Vec<serde_json::Value>,
    pub closed: Option<u16>,
}

impl Screen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).to_string()
    }

    /// The `output_offset` of the `attached` message.
    pub fn start(&self) -> u64 {
        self.attached
            .as_ref()
            .and_then(|a| a["output_offset"].as_u64())
            .unwrap_or(0)
    }

    /// Input the session has acknowledged.
    pub fn input_acked(&self) -> u64 {
        let attached = self
            .attached
            .as_ref()
            .and_then(|a| a["input_offset"].as_u64())
            .unwrap_or(0);
        self.messages
            .iter()
            .filter(|m| m["type"] == "input_ack")
            .filter_map(|m| m["offset"].as_u64())
            .fold(attached, u64::max)
    }

    /// Output offset after everything received.
    pub fn end(&self) -> u64 {
        self.start() + self.output.len() as u64
    }
}

/// Reads from a terminal socket into `screen` until `done` holds or `timeout` passes,
/// acknowledging output as it comes. Returns whether `done` held.
pub async fn read_until(
    socket: &mut Socket,
    screen: &mut Screen,
    timeout: Duration,
    done: impl Fn(&Screen) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(screen) {
        let next = tokio::time::timeout_at(deadline, socket.next()).await;
        match next {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return done(screen),
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                screen.output.extend_from_slice(&bytes);
                let ack = serde_json::json!({"type": "ack", "offset": screen.end()});
                let _ = socket.send(Message::Text(ack.to_string().into())).await;
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                if value["type"] == "attached" {
                    screen.attached = Some(value);
                } else {
                    screen.messages.push(value);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                screen.closed = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                return done(screen);
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    true
}

/// Sends keystrokes (one binary message).
pub async fn type_text(socket: &mut Socket, text: &str) {
    socket
        .send(Message::Binary(text.as_bytes().to_vec().into()))
        .await
        .expect("send keystrokes");
}

/// Sends a JSON control message.
pub async fn send_json(socket: &mut Socket, value: serde_json::Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .expect("send control message");
}

//! Bad input end to end: join tokens that are unknown, expired or used up, wrong CA pins,
//! client certificates the bridge listener must refuse, malformed bridge frames, failing
//! `zpanel exec` and login calls. Each bad input gets one clear line and changes nothing;
//! no secret ever reaches a log.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use zpanel_proto::frame::Body;
use zpanel_proto::{
    ChannelAck, ChannelData, Close, Heartbeat, Hello, StreamAck, StreamChunk, StreamKind,
};
use zpanel_shared::frame;
use zpanel_shared::tls::{ServerTrust, certs_from_pem, client_config, key_from_pem};
use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually, stderr, stdout};

const ONLINE_WITHIN: Duration = Duration::from_secs(20);
/// Longest the tests wait for anything read from a raw bridge session.
const READ_WITHIN: Duration = Duration::from_secs(10);

// === helpers ===

/// Asserts a failure message is one non-empty line and returns it trimmed.
#[track_caller]
fn one_line(message: &str) -> &str {
    let line = message.trim();
    assert!(!line.is_empty(), "expected a one-line message, got nothing");
    assert!(!line.contains('\n'), "expected one line, got:\n{line}");
    line
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn host_names(hosts: &[serde_json::Value]) -> Vec<String> {
    let mut names: Vec<String> = hosts
        .iter()
        .filter_map(|h| h["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn wait_online(cli: &Cli, name: &str) {
    assert_eventually!(
        cli.host_status(name).await.as_deref() == Some("online"),
        ONLINE_WITHIN,
        "{name} never came online"
    );
}

fn process_alive(pid: Option<u32>) -> bool {
    pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// A join token that expires after `ttl`.
async fn join_token_with_ttl(cli: &Cli, ttl: &str) -> String {
    let out = cli
        .run(&["tokens", "create", "--ttl", ttl, "--uses", "1", "--json"])
        .await;
    assert!(out.status.success(), "tokens create: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    json["token"].as_str().expect("token").to_string()
}

/// Neither the control plane's stdout and log nor any daemon's log holds a secret.
#[track_caller]
fn assert_no_secrets(cp: &ControlPlane, daemons: &[&Daemon], secrets: &[&str]) {
    let mut places = vec![
        ("control plane stdout".to_string(), cp.stdout.clone()),
        ("control plane log".to_string(), cp.log()),
    ];
    for daemon in daemons {
        places.push((format!("log of daemon {}", daemon.name), daemon.log()));
    }
    for secret in secrets.iter().chain([&cp.admin_token.as_str()]) {
        assert!(secret.len() >= 16, "{secret:?} does not look like a token");
        for (place, text) in &places {
            assert!(
                !text.contains(secret),
                "the {place} contains the secret {secret}"
            );
        }
    }
}

fn settings(config_dir: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(config_dir.join("bridge.toml")).expect("bridge.toml"))
        .expect("toml")
}

// === raw bridge client ===

type RawSession = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Opens the bridge WebSocket with the identity in a daemon's config directory, as
/// `zpanel-bridge run` does, but sends nothing.
async fn raw_connect(config_dir: &Path) -> anyhow::Result<RawSession> {
    let read = |name: &str| std::fs::read(config_dir.join(name));
    let ca = certs_from_pem(&read("ca.pem")?)?;
    let chain = certs_from_pem(&read("cert.pem")?)?;
    let key = key_from_pem(&read("key.pem")?)?;
    let config = client_config(ServerTrust::Cas(ca), Some((chain, key)), &[b"http/1.1"])?;
    let bridge_url = settings(config_dir)["bridge_url"]
        .as_str()
        .expect("bridge_url")
        .trim_end_matches('/')
        .to_string();
    let authority = bridge_url
        .split("://")
        .nth(1)
        .expect("bridge url authority")
        .to_string();
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&authority)
        .to_string();
    let tcp = TcpStream::connect(&authority).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from(host)?, tcp)
        .await?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(format!("{bridge_url}/v1/session"), tls, None)
            .await?;
    Ok(ws)
}

/// Sends one frame, ignoring a peer that already hung up.
async fn send(ws: &mut RawSession, body: Body) {
    let _ = ws.send(Message::Binary(frame::encode(body))).await;
}

fn hello(min_version: u32, max_version: u32) -> Body {
    Body::Hello(Hello {
        min_version,
        max_version,
        host: None,
    })
}

/// The next frame from the control plane; `None` once the session is closed.
async fn next_body(ws: &mut RawSession) -> Option<Body> {
    loop {
        match tokio::time::timeout(READ_WITHIN, ws.next())
            .await
            .expect("the control plane went silent")
        {
            Some(Ok(Message::Binary(bytes))) => {
                return Some(frame::decode(bytes, usize::MAX).expect("a valid frame"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(text))) => panic!("the control plane sent text: {text}"),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
        }
    }
}

/// Waits until the control plane closes the session, skipping frames it still sends.
async fn wait_closed(ws: &mut RawSession) {
    while next_body(ws).await.is_some() {}
}

/// A raw session past the handshake: hello sent, welcome received.
async fn raw_session(config_dir: &Path) -> RawSession {
    let mut ws = raw_connect(config_dir)
        .await
        .expect("raw bridge connection");
    send(
        &mut ws,
        hello(
            zpanel_proto::BRIDGE_PROTOCOL_MIN_VERSION,
            zpanel_proto::BRIDGE_PROTOCOL_VERSION,
        ),
    )
    .await;
    match next_body(&mut ws).await {
        Some(Body::Welcome(_)) => ws,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// A control plane with a real daemon `other` online and an enrolled host `raw` whose
/// identity the test uses for its own bridge sessions.
struct Bridge {
    cp: ControlPlane,
    cli: Cli,
    other: Daemon,
    raw: Daemon,
}

impl Bridge {
    async fn start() -> Bridge {
        let cp = ControlPlane::start().await;
        let cli = cp.admin_cli().await;
        let other = cp.add_host(&cli, "other").await;
        let token = cli.join_token(1).await;
        let raw = Daemon::join(&cp, &token, "raw").await.expect("join raw");
        wait_online(&cli, "other").await;
        Bridge {
            cp,
            cli,
            other,
            raw,
        }
    }

    fn raw_dir(&self) -> &Path {
        self.raw.config_dir.path()
    }

    /// The control plane and the other host's session are unharmed.
    async fn assert_others_unharmed(&self) {
        assert!(process_alive(self.cp.pid()), "the control plane died");
        let out = self.cli.run(&["exec", "other", "--", "echo", "ok"]).await;
        assert!(
            out.status.success(),
            "exec on other failed: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "ok\n");
        assert_eq!(
            self.cli.host_status("other").await.as_deref(),
            Some("online")
        );
        assert_no_secrets(&self.cp, &[&self.other], &[]);
    }

    /// Sends `violation` on a fresh session (after the welcome when `after_welcome`) and
    /// checks that only that session ends, counted as a rejected frame, with `log_reason`
    /// in the control plane's log.
    async fn assert_violation_closes_session(
        &self,
        after_welcome: bool,
        violation: Message,
        log_reason: &str,
    ) {
        let rejected = self.cp.metric("zpanel_frames_rejected_total").await;
        let mut ws = if after_welcome {
            raw_session(self.raw_dir()).await
        } else {
            raw_connect(self.raw_dir())
                .await
                .expect("raw bridge connection")
        };
        let _ = ws.send(violation).await;
        wait_closed(&mut ws).await;
        assert_eventually!(
            self.cp.log().contains(log_reason),
            READ_WITHIN,
            "the control plane log does not give the reason {log_reason:?}:\n{}",
            self.cp.log()
        );
        assert_eq!(
            self.cli.host_status("raw").await.as_deref(),
            Some("offline"),
            "the violating session is still registered"
        );
        assert_eventually!(
            self.cp.metric("zpanel_frames_rejected_total").await > rejected,
            READ_WITHIN,
            "zpanel_frames_rejected_total did not grow past {rejected} after {log_reason:?}"
        );
        self.assert_others_unharmed().await;
    }
}

// === 1. join tokens ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_join_token_is_refused_and_adds_no_host() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let before = cli.hosts().await;
    let unknown = "zpj_0123456789abcdef0123456789abcdef";

    let error = Daemon::join(&cp, unknown, "intruder")
        .await
        .err()
        .expect("an unknown token must be refused")
        .to_string();
    let line = one_line(&error);
    assert!(
        line.contains("join token is not known to this control plane"),
        "unclear refusal: {line}"
    );
    assert!(
        !line.contains(unknown),
        "the refusal echoes the token: {line}"
    );
    assert_eq!(
        cli.hosts().await,
        before,
        "a refused join changed the host list"
    );
    assert_no_secrets(&cp, &[], &[unknown]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_join_token_is_refused_and_adds_no_host() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let before = cli.hosts().await;
    let token = join_token_with_ttl(&cli, "1s").await;
    // The token expires at most 1 s after the creation returned (whole seconds).
    let created_by = unix_now();
    assert_eventually!(
        unix_now() > created_by + 1,
        Duration::from_secs(5),
        "the clock stopped"
    );

    let error = Daemon::join(&cp, &token, "late")
        .await
        .err()
        .expect("an expired token must be refused")
        .to_string();
    let line = one_line(&error);
    assert!(
        line.contains("join token has expired"),
        "unclear refusal: {line}"
    );
    assert_eq!(
        cli.hosts().await,
        before,
        "a refused join changed the host list"
    );
    assert_no_secrets(&cp, &[], &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_join_token_is_refused_and_adds_no_host() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(1).await;
    let first = Daemon::join(&cp, &token, "first")
        .await
        .expect("the first use of the token works");
    let after_first = cli.hosts().await;
    assert_eq!(host_names(&after_first), ["first"]);

    let error = Daemon::join(&cp, &token, "second")
        .await
        .err()
        .expect("a used-up token must be refused")
        .to_string();
    let line = one_line(&error);
    assert!(
        line.contains("join token has no uses left"),
        "unclear refusal: {line}"
    );
    assert_eq!(
        cli.hosts().await,
        after_first,
        "a refused join changed the host list"
    );
    assert_no_secrets(&cp, &[&first], &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_joins_with_a_single_use_token_have_one_winner() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(1).await;

    let (a, b) = tokio::join!(
        Daemon::join(&cp, &token, "racer-a"),
        Daemon::join(&cp, &token, "racer-b")
    );
    let (winner, loser) = match (a, b) {
        (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser.to_string()),
        (Ok(_), Ok(_)) => panic!("both joins won with a single-use token"),
        (Err(a), Err(b)) => panic!("both joins lost: {a:#} / {b:#}"),
    };
    let line = one_line(&loser);
    assert!(
        line.contains("join token has no uses left"),
        "unclear refusal: {line}"
    );
    assert_eq!(
        host_names(&cli.hosts().await),
        std::slice::from_ref(&winner.name)
    );
    assert_no_secrets(&cp, &[&winner], &[&token]);
}

// === 2. CA pins ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_pin_is_refused_before_the_token_is_sent() {
    let (a, b) = tokio::join!(ControlPlane::start(), ControlPlane::start());
    assert_ne!(a.pin, b.pin);
    let cli_b = b.admin_cli().await;
    let token = cli_b.join_token(1).await;

    let error = Daemon::join_with_pin(&b, &token, "pinned", &a.pin)
        .await
        .err()
        .expect("a wrong pin must be refused")
        .to_string();
    let line = one_line(&error);
    assert!(
        line.contains("--ca-pin"),
        "the refusal does not point at the pin: {line}"
    );
    assert!(
        cli_b.hosts().await.is_empty(),
        "a refused join added a host"
    );

    // The single-use token still works: it never left the host.
    let daemon = Daemon::join_with_pin(&b, &token, "pinned", &b.pin)
        .await
        .expect("the same token with the right pin");
    assert_eq!(host_names(&cli_b.hosts().await), ["pinned"]);
    assert_no_secrets(&b, &[&daemon], &[&token]);
    assert_no_secrets(&a, &[], &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_ca_pin_is_a_clear_error() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(1).await;

    let error = Daemon::join_with_pin(&cp, &token, "badpin", "sha256:abc")
        .await
        .err()
        .expect("a malformed pin must be refused")
        .to_string();
    let line = one_line(&error);
    assert!(
        line.contains("CA pin must look like sha256:<64 hex digits>"),
        "unclear refusal: {line}"
    );
    assert!(
        line.contains("sha256:abc"),
        "the refusal does not quote the pin: {line}"
    );
    assert!(cli.hosts().await.is_empty(), "a refused join added a host");
    // Nothing was sent: the token is still good.
    Daemon::join(&cp, &token, "goodpin")
        .await
        .expect("the token still works");
    assert_no_secrets(&cp, &[], &[&token]);
}

// === 3. client certificates at the bridge listener ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_control_plane_is_refused_at_tls() {
    let (a, b) = tokio::join!(ControlPlane::start(), ControlPlane::start());
    let (cli_a, cli_b) = (a.admin_cli().await, b.admin_cli().await);
    let token = cli_b.join_token(1).await;
    let daemon = Daemon::join(&b, &token, "stranger").await.expect("join B");
    // Point the daemon at A and make it trust A: only its certificate is B's.
    let dir = daemon.config_dir.path();
    let mut bridge_toml = settings(dir);
    bridge_toml["bridge_url"] = toml::Value::String(a.bridge_url.clone());
    std::fs::write(
        dir.join("bridge.toml"),
        toml::to_string(&bridge_toml).unwrap(),
    )
    .unwrap();
    std::fs::copy(a.data_dir().join("ca/ca.pem"), dir.join("ca.pem")).unwrap();

    let refused = a.metric("zpanel_handshakes_refused_total").await;
    let daemon = daemon.start().await;
    assert_eventually!(
        a.metric("zpanel_handshakes_refused_total").await >= refused + 2,
        ONLINE_WITHIN,
        "A did not refuse the foreign certificate (log: {})",
        a.log()
    );
    assert_eventually!(
        a.log().contains("bridge connection refused: tls:"),
        READ_WITHIN,
        "A's log does not say why:\n{}",
        a.log()
    );
    assert_eq!(a.metric("zpanel_sessions_accepted_total").await, 0);
    assert!(cli_a.hosts().await.is_empty());
    assert_eq!(
        cli_b.host_status("stranger").await.as_deref(),
        Some("offline")
    );
    assert_eventually!(
        daemon.log().contains("cannot open a session"),
        READ_WITHIN,
        "the daemon log does not report the refusal:\n{}",
        daemon.log()
    );
    assert_no_secrets(&a, &[&daemon], &[&token]);
    assert_no_secrets(&b, &[&daemon], &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_at_tls() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(1).await;
    let daemon = Daemon::join(&cp, &token, "stale").await.expect("join");
    let dir = daemon.config_dir.path();

    // Our CA's signature, the host's own key and id, but a lifetime that ended yesterday.
    let ca_pem = std::fs::read_to_string(cp.data_dir().join("ca/ca.pem")).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(cp.data_dir().join("ca/ca.key")).unwrap())
            .unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let host_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("key.pem")).unwrap()).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, daemon.host_id.clone());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(2);
    params.not_after = now - time::Duration::days(1);
    let expired = params.signed_by(&host_key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), expired.pem()).unwrap();

    let refused = cp.metric("zpanel_handshakes_refused_total").await;
    let daemon = daemon.start().await;
    assert_eventually!(
        cp.metric("zpanel_handshakes_refused_total").await >= refused + 2,
        ONLINE_WITHIN,
        "the expired certificate was not refused (log: {})",
        cp.log()
    );
    let log = cp.log();
    assert!(
        log.contains("bridge connection refused: tls:") && log.to_lowercase().contains("expired"),
        "the log does not say the certificate expired:\n{log}"
    );
    assert_eq!(cp.metric("zpanel_sessions_accepted_total").await, 0);
    assert_eq!(cli.host_status("stale").await.as_deref(), Some("offline"));
    assert_no_secrets(&cp, &[&daemon], &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_host_is_cut_off_and_refused_at_tls() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_host(&cli, "doomed").await;
    wait_online(&cli, "doomed").await;
    assert_eq!(cp.metric("zpanel_hosts_online").await, 1);
    let refused = cp.metric("zpanel_handshakes_refused_total").await;

    let out = cli.run(&["hosts", "rm", "doomed"]).await;
    assert!(out.status.success(), "hosts rm: {}", stderr(&out));
    assert!(stdout(&out).contains(&daemon.host_id));
    // The session ends at once, not at the next missed heartbeat.
    assert!(
        cli.hosts().await.is_empty(),
        "the deleted host is still listed"
    );
    assert_eq!(
        cp.metric("zpanel_hosts_online").await,
        0,
        "the deleted host's session is still registered"
    );
    assert_eventually!(
        daemon.log().contains("session ended"),
        READ_WITHIN,
        "the daemon's session did not end:\n{}",
        daemon.log()
    );

    // Its reconnects get no further than TLS: no second "host online", only refusals.
    let sessions = |log: String| log.matches("host online").count();
    assert_eventually!(
        cp.metric("zpanel_handshakes_refused_total").await >= refused + 2 || sessions(cp.log()) > 1,
        ONLINE_WITHIN,
        "the deleted host neither reconnected nor was refused (log: {})",
        cp.log()
    );
    assert_eq!(
        sessions(cp.log()),
        1,
        "the deleted host was let back in (a resumed TLS session skips the client certificate check?):\n{}",
        cp.log()
    );
    assert_eq!(
        cp.metric("zpanel_hosts_online").await,
        0,
        "the deleted host has a session again"
    );
    assert!(
        cp.log()
            .contains(&format!("host {} is not enrolled", daemon.host_id)),
        "the log does not say why:\n{}",
        cp.log()
    );
    assert!(
        cli.hosts().await.is_empty(),
        "a refused reconnect brought the host back"
    );
    assert_eventually!(
        daemon.log().matches("cannot open a session").count() >= 2,
        READ_WITHIN,
        "the daemon log does not report the refusals:\n{}",
        daemon.log()
    );
    // And it says why, so whoever reads it knows to re-enrol.
    let log = daemon.log();
    let refusal = log
        .lines()
        .rev()
        .find(|l| l.contains("cannot open a session"))
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        refusal.contains("refused") && refusal.contains("certificate"),
        "the daemon log does not say its certificate was refused: {refusal}"
    );
    assert_no_secrets(&cp, &[&daemon], &[]);
}

// === 4. malformed frames ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_only_that_session() {
    let bridge = Bridge::start().await;
    let garbage = Message::binary(vec![0xffu8; 16]);
    bridge
        .assert_violation_closes_session(true, garbage, "protocol violation: malformed frame")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_only_that_session() {
    let bridge = Bridge::start().await;
    let oversized = Message::binary(vec![0u8; 1024 * 1024 + 1]);
    bridge
        .assert_violation_closes_session(true, oversized, "Message too long: 1048577 > 1048576")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_closes_only_that_session() {
    let bridge = Bridge::start().await;
    let text = Message::text("hello, is this thing binary?");
    bridge
        .assert_violation_closes_session(
            true,
            text,
            "protocol violation: text message on a binary session",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_frame_that_is_not_a_hello_closes_only_that_session() {
    let bridge = Bridge::start().await;
    let refused = bridge.cp.metric("zpanel_handshakes_refused_total").await;
    let ping = Message::Binary(frame::encode(Body::Ping(Heartbeat { nonce: 1 })));
    bridge
        .assert_violation_closes_session(false, ping, "first frame is not a hello")
        .await;
    assert!(bridge.cp.metric("zpanel_handshakes_refused_total").await > refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_closes_only_that_session() {
    let bridge = Bridge::start().await;
    let again = Message::Binary(frame::encode(hello(1, 1)));
    bridge
        .assert_violation_closes_session(
            true,
            again,
            "protocol violation: frame not allowed from a daemon",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_for_unknown_channels_are_ignored() {
    let bridge = Bridge::start().await;
    let rejected = bridge.cp.metric("zpanel_frames_rejected_total").await;
    let mut ws = raw_session(bridge.raw_dir()).await;
    assert_eventually!(
        bridge.cli.host_status("raw").await.as_deref() == Some("online"),
        ONLINE_WITHIN,
        "raw session not online"
    );

    let chunk = StreamChunk {
        stream: StreamKind::Stdout as i32,
        offset: 0,
        payload: bytes::Bytes::from_static(b"stray"),
        eof: false,
    };
    send(
        &mut ws,
        Body::Data(ChannelData {
            channel_id: 4242,
            chunk: Some(chunk),
        }),
    )
    .await;
    let ack = StreamAck {
        stream: StreamKind::Stdin as i32,
        offset: 5,
    };
    send(
        &mut ws,
        Body::Ack(ChannelAck {
            channel_id: 4243,
            ack: Some(ack),
        }),
    )
    .await;
    send(
        &mut ws,
        Body::Close(Close {
            channel_id: 4244,
            reason: "stray".into(),
            release: true,
            superseded: true,
        }),
    )
    .await;
    send(&mut ws, Body::Ping(Heartbeat { nonce: 77 })).await;
    match next_body(&mut ws).await {
        Some(Body::Pong(Heartbeat { nonce: 77 })) => {}
        other => panic!("expected the pong for nonce 77, got {other:?}"),
    }
    assert_eq!(
        bridge.cli.host_status("raw").await.as_deref(),
        Some("online")
    );
    assert!(
        bridge.cp.metric("zpanel_frames_rejected_total").await >= rejected + 3,
        "stray frames were not counted"
    );
    bridge.assert_others_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_unsupported_versions_gets_a_close_naming_them() {
    let bridge = Bridge::start().await;
    let refused = bridge.cp.metric("zpanel_handshakes_refused_total").await;
    let mut ws = raw_connect(bridge.raw_dir())
        .await
        .expect("raw bridge connection");
    send(&mut ws, hello(99, 99)).await;
    let reason = match next_body(&mut ws).await {
        Some(Body::Close(Close { reason, .. })) => reason,
        other => panic!("expected a close, got {other:?}"),
    };
    let line = one_line(&reason);
    assert!(
        line.contains("99..=99"),
        "the close reason does not name the offered versions: {line}"
    );
    let supported = format!(
        "{}..={}",
        zpanel_proto::BRIDGE_PROTOCOL_MIN_VERSION,
        zpanel_proto::BRIDGE_PROTOCOL_VERSION
    );
    assert!(
        line.contains(&supported),
        "the close reason does not name the supported versions: {line}"
    );
    wait_closed(&mut ws).await;
    assert!(bridge.cp.metric("zpanel_handshakes_refused_total").await > refused);
    assert_eq!(
        bridge.cli.host_status("raw").await.as_deref(),
        Some("offline")
    );
    bridge.assert_others_unharmed().await;
}

// === 5. exec and login errors ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_errors_are_one_clear_line() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let up = cp.add_host(&cli, "up").await;
    let mut down = cp.add_host(&cli, "down").await;
    wait_online(&cli, "up").await;
    wait_online(&cli, "down").await;
    down.kill().await;
    assert_eventually!(
        cli.host_status("down").await.as_deref() == Some("offline"),
        ONLINE_WITHIN,
        "down never went offline"
    );

    let out = cli.run(&["exec", "nope", "--", "true"]).await;
    assert!(!out.status.success());
    assert!(
        one_line(&stderr(&out)).contains("unknown host"),
        "unclear: {}",
        stderr(&out)
    );

    let out = cli.run(&["exec", "down", "--", "true"]).await;
    assert!(!out.status.success());
    assert!(
        one_line(&stderr(&out)).contains("offline"),
        "unclear: {}",
        stderr(&out)
    );

    let out = cli.run(&["exec", "up", "--", "no-such-command-zp"]).await;
    assert_eq!(out.status.code(), Some(127), "stderr: {}", stderr(&out));
    assert!(
        one_line(&stderr(&out)).contains("no-such-command-zp: command not found"),
        "unclear: {}",
        stderr(&out)
    );

    // The failures changed nothing: the host still runs commands.
    let out = cli.run(&["exec", "up", "--", "echo", "ok"]).await;
    assert!(out.status.success(), "exec: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    assert_no_secrets(&cp, &[&up, &down], &[]);

    // A usage error is one line too (checked last: clap's default is a usage block).
    let out = cli.run(&["exec", "up"]).await;
    assert!(!out.status.success());
    let usage = stderr(&out);
    assert!(
        usage.contains("COMMAND"),
        "the usage error does not name the missing command: {usage}"
    );
    one_line(&usage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_are_one_clear_line_and_save_nothing() {
    let cp = ControlPlane::start().await;

    let stranger = Cli::new();
    let out = stranger.run(&["hosts"]).await;
    assert!(!out.status.success());
    assert!(
        one_line(&stderr(&out)).contains("not logged in"),
        "unclear: {}",
        stderr(&out)
    );
    let out = stranger.run(&["exec", "any", "--", "true"]).await;
    assert!(!out.status.success());
    assert!(
        one_line(&stderr(&out)).contains("not logged in"),
        "unclear: {}",
        stderr(&out)
    );

    let bad_token = "zpa_not-a-real-token-0123456789";
    let out = stranger
        .run(&[
            "login", "--server", &cp.url, "--token", bad_token, "--ca-pin", &cp.pin,
        ])
        .await;
    assert!(!out.status.success());
    let line = one_line(&stderr(&out)).to_string();
    assert!(
        line.contains("login failed") && line.contains("invalid API token"),
        "unclear: {line}"
    );
    assert!(
        !line.contains(bad_token),
        "the error echoes the token: {line}"
    );
    assert!(
        !stranger.config_dir.path().join("config.toml").exists(),
        "a failed login saved its settings"
    );

    // A saved configuration whose token is wrong.
    let config = format!(
        "server = {:?}\ntoken = {bad_token:?}\nca_pin = {:?}\n",
        cp.url, cp.pin
    );
    std::fs::write(stranger.config_dir.path().join("config.toml"), config).unwrap();
    let out = stranger.run(&["hosts"]).await;
    assert!(!out.status.success());
    let line = one_line(&stderr(&out)).to_string();
    assert!(line.contains("invalid API token"), "unclear: {line}");
    assert!(
        !line.contains(bad_token),
        "the error echoes the token: {line}"
    );
    assert_no_secrets(&cp, &[], &[bad_token]);
}

// === 6. secrets ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_output_or_logs() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let good = cli.join_token(2).await;
    let spent = cli.join_token(1).await;
    let expired = join_token_with_ttl(&cli, "1s").await;
    let unknown = "zpj_fedcba9876543210fedcba9876543210";

    let first = Daemon::join(&cp, &good, "first")
        .await
        .expect("join first")
        .start()
        .await;
    let second = Daemon::join(&cp, &good, "second")
        .await
        .expect("join second")
        .start()
        .await;
    let third = Daemon::join(&cp, &spent, "third")
        .await
        .expect("join third")
        .start()
        .await;
    let refusals = [
        Daemon::join(&cp, &good, "x1").await.err().expect("used up"),
        Daemon::join(&cp, &spent, "x2")
            .await
            .err()
            .expect("used up"),
        Daemon::join(&cp, unknown, "x3")
            .await
            .err()
            .expect("unknown"),
        Daemon::join_with_pin(&cp, &spent, "x4", "sha256:abc")
            .await
            .err()
            .expect("bad pin"),
    ];
    let created_by = unix_now();
    assert_eventually!(
        unix_now() > created_by + 1,
        Duration::from_secs(5),
        "the clock stopped"
    );
    let late = Daemon::join(&cp, &expired, "x5")
        .await
        .err()
        .expect("expired");
    for name in ["first", "second", "third"] {
        wait_online(&cli, name).await;
    }
    let out = cli.run(&["exec", "first", "--", "echo", "ok"]).await;
    assert!(out.status.success(), "exec: {}", stderr(&out));

    let secrets = [good.as_str(), spent.as_str(), expired.as_str(), unknown];
    for refusal in refusals.iter().chain([&late]) {
        let line = one_line(&refusal.to_string()).to_string();
        for secret in secrets {
            assert!(!line.contains(secret), "a refusal echoes a token: {line}");
        }
    }
    assert_no_secrets(&cp, &[&first, &second, &third], &secrets);
}

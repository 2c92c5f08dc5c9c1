//! The control plane's other faces: plain HTTP behind a proxy (`--insecure-http`, with h2c
//! gRPC), the landing page, `/healthz`, `zpanel-cp ca-pin`, and the persisted host status.

use std::time::Duration;

use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually, bin, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_http_mode_still_pins_the_ca_for_enrolment() {
    let cp = ControlPlane::start_with(&["--insecure-http"]).await;
    assert!(cp.url.starts_with("http://"), "{}", cp.url);
    let cli = Cli::new();
    let out = cli
        .run(&["login", "--server", &cp.url, "--token", &cp.admin_token])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = cli.join_token(1).await;

    // the pin is still checked (over /api/v1/ca.pem) before the token is sent
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let refused = Daemon::join_with_pin(&cp, &token, "plain", &wrong)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("refusing to send the join token"),
        "{refused}"
    );

    let daemon = Daemon::join(&cp, &token, "plain")
        .await
        .unwrap()
        .start()
        .await;
    assert_eventually!(
        cli.host_status("plain").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "never online"
    );
    let out = cli.run(&["exec", "plain", "--", "echo", "h2c"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "h2c\n");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_page_health_pin_and_persisted_status() {
    let mut cp = ControlPlane::start().await;
    let page = http_get(&cp.url, "/", &cp.pin).await.unwrap();
    assert!(page.contains("<title>Zpanel</title>"), "{page}");
    assert_eq!(
        http_get(&cp.url, "/healthz", &cp.pin).await.unwrap(),
        "ok\n"
    );
    let metrics = cp.metrics().await;
    for name in [
        "zpanel_hosts_online",
        "zpanel_channels_open",
        "zpanel_bytes_routed_total",
        "zpanel_frames_rejected_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name}")),
            "{name} missing: {metrics}"
        );
    }

    let out = tokio::process::Command::new(bin("zpanel-cp"))
        .arg("ca-pin")
        .arg("--data-dir")
        .arg(cp.data_dir())
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cp.pin);
    let missing = tokio::process::Command::new(bin("zpanel-cp"))
        .args(["ca-pin", "--data-dir", "/nonexistent/zpanel"])
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr)
            .trim()
            .lines()
            .count(),
        1
    );

    // bad configuration: exit 64 and one line
    let bad = tokio::process::Command::new(bin("zpanel-cp"))
        .args(["serve", "--heartbeat-interval", "1ms", "--data-dir"])
        .arg(cp.data_dir())
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );

    // the status survives in the database, and a restart starts everyone offline
    let cli = cp.admin_cli().await;
    let mut daemon = cp.add_online_host(&cli, "kept").await;
    daemon.kill().await;
    cp.restart().await;
    let hosts = cli.hosts().await;
    assert_eq!(hosts[0]["status"], "offline");
    assert!(hosts[0]["last_seen"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_certificate_for_the_web_listener() {
    // an operator's own CA and a certificate for localhost, as PEM files
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("web.pem"), dir.path().join("web.key"));
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let cp = ControlPlane::start_with(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ])
    .await;
    let own_pin = zpanel_shared::tls::ca_pin(ca_cert.der());
    // the web listener now presents the operator's chain: the internal CA's pin no longer
    // matches it, the operator's does
    let cli = Cli::new();
    let login = |pin: &str| {
        let args = [
            "login",
            "--server",
            &cp.url,
            "--token",
            &cp.admin_token,
            "--ca-pin",
            pin,
        ];
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let cli = &cli;
        async move {
            cli.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .await
        }
    };
    assert!(!login(&cp.pin).await.status.success());
    let out = login(&own_pin).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cli.hosts().await.is_empty());

    // a key that does not parse is one clear line at start
    std::fs::write(&key_path, "not a key").unwrap();
    let bad = tokio::process::Command::new(bin("zpanel-cp"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bridge-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("web.key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_given_at_join_are_kept() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(2).await;
    let join = |labels: &'static [&'static str]| {
        let mut command = tokio::process::Command::new(bin("zpanel-bridge"));
        command
            .args([
                "join", "--server", &cp.url, "--ca-pin", &cp.pin, "--name", "labelled",
            ])
            .env("ZPANEL_JOIN_TOKEN", &token);
        for label in labels {
            command.args(["--label", label]);
        }
        let dir = tempfile::tempdir().unwrap();
        command.arg("--config-dir").arg(dir.path());
        async move { (command.output().await.unwrap(), dir) }
    };
    let (bad, _) = join(&["env prod"]).await;
    assert!(!bad.status.success());
    let line = String::from_utf8_lossy(&bad.stderr);
    assert!(line.contains("KEY=VALUE"), "{line}");

    let (out, _dir) = join(&["env=prod", "role=db"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts = cli.hosts().await;
    assert_eq!(
        hosts[0]["labels"],
        serde_json::json!({"env": "prod", "role": "db"})
    );
    let table = String::from_utf8_lossy(&cli.run(&["hosts"]).await.stdout).to_string();
    assert!(table.contains("env=prod,role=db"), "{table}");
}

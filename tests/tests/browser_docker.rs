//! The Docker page in a browser: Chromium (driven by `tests/browser/docker.mjs`) lists a
//! container running in the test engine, follows its logs, draws its stats, opens a shell in
//! it (`echo zp-$((6*7))` prints zp-42), runs a second container from the form with a memory
//! limit, sees the first one stop without a reload, removes the second, imports a tarball as
//! an image, and a viewer sees no action. This side starts the container, stops it when asked, and answers what the engine
//! really holds. Screenshots land in `target/debug/browser/`.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use zpanel_tests::ControlPlane;
use zpanel_tests::browser::{BrowserScript, artifacts_dir};
use zpanel_tests::docker::{Cleanup, TEST_IMAGE, docker, docker_ok, unique_name};
use zpanel_tests::web::Browser;

/// Longest silence from the script between two commands (a step waits up to 30 s; the
/// failed pull up to 60 s).
const SCRIPT_SILENCE: Duration = Duration::from_secs(180);
/// The viewer the script signs in as last.
const VIEWER: &str = "watcher";
const VIEWER_PASSWORD: &str = "watcher-password-1";

#[tokio::test]
async fn a_browser_runs_follows_and_opens_a_shell_in_containers() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_docker_host(&cli, "docker-host").await;
    let admin = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .expect("admin login");
    let viewer = admin
        .call(
            "POST",
            "/api/v1/users",
            Some(&json!({"name": VIEWER, "role": "viewer", "password": VIEWER_PASSWORD})),
        )
        .await
        .expect("add the viewer");
    assert_eq!(viewer.status, 200, "adding the viewer: {}", viewer.body);

    let name = unique_name("browser");
    let mut cleanup = Cleanup::new();
    for suffix in ["", "-run"] {
        cleanup.container(&format!("{name}{suffix}"));
    }
    cleanup.images.push(format!("{name}-imported:v1"));
    cleanup.volumes.push(format!("{name}-vol"));
    cleanup.networks.push(format!("{name}-net"));
    // A line a second on each stream, numbered, so the page can tell later lines apart.
    let script = "echo zp-first-line; i=0; while true; do i=$((i+1)); \
                  echo zp-tick-$i; echo zp-err-$i >&2; sleep 1; done";
    // No network: a container's network interface appearing on this machine makes Chromium
    // drop its connections (ERR_NETWORK_CHANGED), which the page lives through, but slower.
    docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        TEST_IMAGE,
        "sh",
        "-c",
        script,
    ])
    .await;

    // A root file system tarball for the page to import.
    let dir = tempfile::tempdir().expect("temp dir");
    let tarball = dir.path().join("rootfs.tar");
    let tarball = tarball.to_str().expect("utf-8 path");
    docker_ok(&["export", "--output", tarball, &name]).await;

    std::fs::create_dir_all(artifacts_dir()).expect("artifacts dir");
    let screenshot = artifacts_dir().join("docker.png");
    let url = cp.url.clone();
    let password = cp.admin_password();
    let mut browser = BrowserScript::spawn(
        "docker.mjs",
        &[
            ("ZPANEL_URL", &url),
            ("ZPANEL_PASSWORD", &password),
            ("ZPANEL_HOST", "docker-host"),
            ("ZPANEL_CONTAINER", &name),
            ("ZPANEL_IMAGE", TEST_IMAGE),
            ("ZPANEL_TARBALL", tarball),
            ("ZPANEL_VIEWER", VIEWER),
            ("ZPANEL_VIEWER_PASSWORD", VIEWER_PASSWORD),
            (
                "ZPANEL_SCREENSHOT",
                screenshot.to_str().expect("utf-8 path"),
            ),
        ],
    )
    .expect("the browser script starts");

    let failure = browser
        .serve(SCRIPT_SILENCE, |command| answer(name.clone(), command))
        .await;
    browser
        .assert_passed("the browser Docker test", failure, &cp)
        .await;
}

/// The answer to one of the script's commands about a container whose name starts with
/// `ours` (it names no other): `stop NAME` stops it ("done"), `memory NAME` is its memory
/// limit in bytes, `exists NAME` whether the engine still has it.
async fn answer(ours: String, command: String) -> anyhow::Result<String> {
    let (verb, container) = command
        .split_once(' ')
        .context("the script sent a command without a container")?;
    anyhow::ensure!(
        container.starts_with(&ours),
        "the script named {container:?}, not one of this test's containers"
    );
    match verb {
        "stop" => {
            docker_ok(&["stop", "--time", "1", container]).await;
            Ok("done".into())
        }
        "memory" => {
            Ok(docker_ok(&["inspect", "--format", "{{.HostConfig.Memory}}", container]).await)
        }
        "exists" => Ok(docker(&["inspect", container])
            .await
            .status
            .success()
            .to_string()),
        _ => anyhow::bail!("unknown command from the script: {command}"),
    }
}

//! Nothing is lost across a reconnect: a control-plane restart in the middle of a command's
//! output, and the host comes back online on its own.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use zpanel_tests::{ControlPlane, assert_eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_survives_a_control_plane_restart_whole_and_once() {
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_host(&cli, "steady").await;
    assert_eventually!(
        cli.host_status("steady").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "offline"
    );

    let lines = 20_000;
    let script = format!(
        "i=1; while [ $i -le {lines} ]; do echo \"line $i\"; if [ $((i % 500)) -eq 0 ]; then sleep 0.05; fi; i=$((i+1)); done"
    );
    let mut child = cli
        .command(&["exec", "steady", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // wait for some output, then restart the control plane under the stream
    while received.len() < 20_000 {
        let n = out.read(&mut buf).await.unwrap();
        assert!(n > 0, "output ended early");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the command must still be running at the restart"
    );
    cp.restart().await;
    out.read_to_end(&mut received).await.unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "exec failed after the restart: {status}");

    let expected: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert_eq!(received.len(), expected.len(), "bytes lost or repeated");
    assert_eq!(
        hex::encode(Sha256::digest(&received)),
        hex::encode(Sha256::digest(expected.as_bytes()))
    );
    assert_eventually!(
        cli.host_status("steady").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "host did not come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_survives_a_control_plane_restart() {
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_host(&cli, "pipe").await;
    assert_eventually!(
        cli.host_status("pipe").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "offline"
    );

    let mut child = cli
        .command(&["exec", "pipe", "--", "sha256sum"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let (first, second) = data.split_at(data.len() / 2);
    tokio::io::AsyncWriteExt::write_all(&mut stdin, first)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cp.restart().await;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, second)
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success());
    let remote = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        remote.split_whitespace().next().unwrap(),
        hex::encode(Sha256::digest(&data))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_survives_the_host_going_silent_and_coming_back() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_host(&cli, "flaky").await;
    assert_eventually!(
        cli.host_status("flaky").await.as_deref() == Some("online"),
        Duration::from_secs(20),
        "offline"
    );
    let lines = 5_000;
    let script = format!(
        "i=1; while [ $i -le {lines} ]; do echo \"line $i\"; if [ $((i % 100)) -eq 0 ]; then sleep 0.05; fi; i=$((i+1)); done"
    );
    let mut child = cli
        .command(&["exec", "flaky", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while received.len() < 5_000 {
        let n = out.read(&mut buf).await.unwrap();
        assert!(n > 0, "output ended early");
        received.extend_from_slice(&buf[..n]);
    }
    // the daemon stops answering (as when its network drops): the control plane declares it
    // dead, the exec's channel closes, and the CLI waits to resume
    daemon.signal(nix::sys::signal::Signal::SIGSTOP);
    assert_eventually!(
        cli.host_status("flaky").await.as_deref() == Some("offline"),
        Duration::from_secs(10),
        "silence not detected"
    );
    daemon.signal(nix::sys::signal::Signal::SIGCONT);
    out.read_to_end(&mut received).await.unwrap();
    let status = child.wait().await.unwrap();
    assert!(
        status.success(),
        "exec failed after the host came back: {status}"
    );
    let expected: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert_eq!(received.len(), expected.len(), "bytes lost or repeated");
    assert_eq!(
        hex::encode(Sha256::digest(&received)),
        hex::encode(Sha256::digest(expected.as_bytes()))
    );
}

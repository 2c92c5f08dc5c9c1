//! Nothing is lost across a reconnect: a control-plane restart in the middle of a command's
//! output, and the host comes back online on its own.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use zpanel_tests::{Cli, ControlPlane, assert_eventually};

/// A command printing numbered lines, pausing briefly every `pause_every` lines so that it is
/// still running when the test breaks something.
struct NumberedLines {
    child: tokio::process::Child,
    out: tokio::process::ChildStdout,
    received: Vec<u8>,
    lines: u32,
}

impl NumberedLines {
    fn start(cli: &Cli, host: &str, lines: u32, pause_every: u32) -> NumberedLines {
        let script = format!(
            "i=1; while [ $i -le {lines} ]; do echo \"line $i\"; \
             if [ $((i % {pause_every})) -eq 0 ]; then sleep 0.05; fi; i=$((i+1)); done"
        );
        let mut child = cli
            .command(&["exec", host, "--", "sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        NumberedLines {
            child,
            out,
            received: Vec::new(),
            lines,
        }
    }

    /// Reads until at least `bytes` arrived; the command must still be running then.
    async fn read_at_least(&mut self, bytes: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        while self.received.len() < bytes {
            let n = self.out.read(&mut buf).await.unwrap();
            assert!(n > 0, "output ended early");
            self.received.extend_from_slice(&buf[..n]);
        }
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the command finished too soon"
        );
    }

    /// Reads the rest: every line must arrive once, in order, and the exec succeed.
    async fn finish_whole_and_once(mut self) {
        self.out.read_to_end(&mut self.received).await.unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "exec failed: {status}");
        let expected: String = (1..=self.lines).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            self.received.len(),
            expected.len(),
            "bytes lost or repeated"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&self.received)),
            hex::encode(Sha256::digest(expected.as_bytes()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_survives_a_control_plane_restart_whole_and_once() {
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_online_host(&cli, "steady").await;
    let mut stream = NumberedLines::start(&cli, "steady", 20_000, 500);
    stream.read_at_least(20_000).await;
    cp.restart().await;
    stream.finish_whole_and_once().await;
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
    let _daemon = cp.add_online_host(&cli, "pipe").await;

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
    let daemon = cp.add_online_host(&cli, "flaky").await;
    let mut stream = NumberedLines::start(&cli, "flaky", 5_000, 100);
    stream.read_at_least(5_000).await;
    // the daemon stops answering (as when its network drops): the control plane declares it
    // dead, the exec's channel closes, and the CLI waits to resume
    daemon.signal(nix::sys::signal::Signal::SIGSTOP);
    assert_eventually!(
        cli.host_status("flaky").await.as_deref() == Some("offline"),
        Duration::from_secs(10),
        "silence not detected"
    );
    daemon.signal(nix::sys::signal::Signal::SIGCONT);
    stream.finish_whole_and_once().await;
}

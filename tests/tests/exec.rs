//! End to end: a control plane, an enrolled daemon and the CLI, all real processes on
//! loopback; `zpanel exec` streams, forwards stdin and reports exit codes.

use std::time::Duration;

use sha2::{Digest, Sha256};
use zpanel_tests::{ControlPlane, assert_eventually, memory_kib, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_login_list_and_exec() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, "web-1").await;

    let hosts = cli.hosts().await;
    let host = &hosts[0];
    assert_eq!(host["id"], daemon.host_id.as_str());
    assert!(host["last_seen"].is_string());
    assert!(!host["os"].as_str().unwrap().is_empty());
    assert_eq!(host["arch"], std::env::consts::ARCH);
    assert_eq!(host["labels"], serde_json::json!({}));
    let table = stdout(&cli.run(&["hosts"]).await);
    assert!(
        table.contains("web-1") && table.contains("online"),
        "{table}"
    );

    // stdout and stderr are separate streams; the exit code comes back
    let out = cli
        .run(&[
            "exec",
            "web-1",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    assert_eq!(out.status.code(), Some(3));

    // by id as well as by name
    let out = cli.run(&["exec", &daemon.host_id, "--", "true"]).await;
    assert_eq!(out.status.code(), Some(0));

    // stdin is forwarded
    let out = cli
        .run_with_stdin(&["exec", "web-1", "--", "cat"], b"hi\n")
        .await;
    assert_eq!(stdout(&out), "hi\n");
    assert!(out.status.success());

    // -n: no stdin
    let out = cli
        .run_with_stdin(&["exec", "-n", "web-1", "--", "wc", "-c"], b"ignored")
        .await;
    assert_eq!(stdout(&out).trim(), "0");

    // a signal becomes 128+N
    let out = cli
        .run(&["exec", "web-1", "--", "sh", "-c", "kill -TERM $$"])
        .await;
    assert_eq!(out.status.code(), Some(128 + 15));

    // --timeout kills the whole process group
    let marker = format!("zp-timeout-{}", std::process::id());
    let script = format!("sleep 300 & exec -a {marker} sleep 300");
    let out = cli
        .run(&[
            "exec",
            "web-1",
            "--timeout",
            "1s",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .await;
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(
        stderr(&out).trim(),
        "zpanel: command timed out after 1s on web-1"
    );
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "timed-out process still running");

    // Ctrl-C cancels the remote command
    let marker = format!("zp-interrupt-{}", std::process::id());
    let script = format!("exec -a {marker} sleep 300");
    let child = cli
        .command(&["exec", "web-1", "--", "bash", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = || {
        let ps = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        !ps.stdout.is_empty()
    };
    assert_eventually!(
        running(),
        Duration::from_secs(10),
        "remote command never started"
    );
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(!running(), "remote command survived Ctrl-C");

    // a closed local pipe (`| head`) cancels the command quietly, like SIGPIPE would
    let mut child = cli
        .command(&["exec", "web-1", "--", "seq", "1", "100000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 2];
    tokio::io::AsyncReadExt::read_exact(child.stdout.as_mut().unwrap(), &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"1\n");
    drop(child.stdout.take());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(stderr(&out), "");

    // arguments arrive exactly, with no shell in between
    let out = cli
        .run(&[
            "exec", "web-1", "--", "printf", "%s|", "a b", "$HOME", "'q'",
        ])
        .await;
    assert_eq!(stdout(&out), "a b|$HOME|'q'|");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_and_input_stream_intact_with_bounded_memory() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, "big").await;

    // 256 MiB out: far more than any window, so only flow control keeps memory flat
    let out = cli
        .run(&[
            "exec",
            "big",
            "--",
            "sh",
            "-c",
            "head -c 268435456 /dev/urandom | tee /dev/stderr | sha256sum",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        stderr(&out).chars().take(200).collect::<String>()
    );
    assert_eq!(out.stderr.len(), 268_435_456);
    let remote_sum = stdout(&out).split_whitespace().next().unwrap().to_string();
    assert_eq!(hex::encode(Sha256::digest(&out.stderr)), remote_sum);

    // 64 MiB in through stdin
    let input: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let out = cli
        .run_with_stdin(&["exec", "big", "--", "sha256sum"], &input)
        .await;
    assert_eq!(
        stdout(&out).split_whitespace().next().unwrap(),
        hex::encode(Sha256::digest(&input))
    );

    let (_, cp_peak) = memory_kib(cp.pid().unwrap());
    let (_, daemon_peak) = memory_kib(daemon.pid().unwrap());
    assert!(cp_peak < 200 * 1024, "control plane peak RSS {cp_peak} KiB");
    assert!(
        daemon_peak < 200 * 1024,
        "daemon peak RSS {daemon_peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_block_other_commands() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_online_host(&cli, "busy").await;

    // a reader that never reads: the command fills its window and waits
    let mut stalled = cli
        .command(&["exec", "busy", "--", "cat", "/dev/zero"])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let out = cli
            .run(&["exec", "busy", "--", "echo", &i.to_string()])
            .await;
        assert_eq!(stdout(&out), format!("{i}\n"));
    }
    stalled.kill().await.unwrap();
}

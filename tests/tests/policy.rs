//! The daemon's own policy (`[policy]` in `bridge.toml`) end to end: a real control plane,
//! real daemons and the real CLI. A host refuses what it does not offer (`zpanel exec`,
//! `zpanel ls`, `zpanel shell` print one line and exit non-zero) and more channels than it
//! allows at once; a name it does not know stops `zpanel-bridge run` at start.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use zpanel_tests::{ControlPlane, Daemon, assert_eventually, bin, stderr, stdout};

/// What a refused command prints: one line, and nothing on stdout.
fn assert_refused(out: &Output, expected: &str) {
    assert_eq!(stderr(out), format!("zpanel: {expected}\n"));
    assert_eq!(stdout(out), "");
    assert!(!out.status.success(), "refused, yet exited with success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_what_its_policy_does_not_offer() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _terminal_only = cp
        .add_online_host_with(&cli, "terminal-only", &[], |daemon| {
            daemon.set_policy(Some(&["terminal"]), None)
        })
        .await;
    let _exec_only = cp
        .add_online_host_with(&cli, "exec-only", &[], |daemon| {
            daemon.set_policy(Some(&["exec", "docker"]), None)
        })
        .await;
    let _open = cp.add_online_host(&cli, "open").await;

    let out = cli
        .run(&["exec", "terminal-only", "--", "echo", "hi"])
        .await;
    assert_refused(
        &out,
        "host terminal-only: this host's policy does not offer commands \
         (\"exec\" is not in bridge.toml [policy] capabilities)",
    );
    // the file commands name the location instead of the host
    let out = cli.run(&["ls", "terminal-only:/"]).await;
    assert_refused(
        &out,
        "terminal-only:/: this host's policy does not offer files \
         (\"files\" is not in bridge.toml [policy] capabilities)",
    );
    // what it offers works
    let out = cli
        .run_with_stdin(
            &["shell", "terminal-only"],
            b"echo piped-$((2+3))\nexit 4\n",
        )
        .await;
    assert!(stdout(&out).contains("piped-5"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    let out = cli
        .run_with_stdin(&["shell", "exec-only"], b"exit 0\n")
        .await;
    assert_refused(
        &out,
        "host exec-only: this host's policy does not offer terminals \
         (\"terminal\" is not in bridge.toml [policy] capabilities)",
    );
    let out = cli.run(&["exec", "exec-only", "--", "echo", "hi"]).await;
    assert_eq!(
        (stdout(&out).as_str(), out.status.code()),
        ("hi\n", Some(0))
    );

    // a host with no [policy] offers everything
    let out = cli.run(&["exec", "open", "--", "echo", "hi"]).await;
    assert_eq!(
        (stdout(&out).as_str(), out.status.code()),
        ("hi\n", Some(0)),
        "{}",
        stderr(&out)
    );
    let out = cli.run(&["ls", "open:/"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_more_channels_than_its_policy_allows() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _host = cp
        .add_online_host_with(&cli, "one-channel", &[], |daemon| {
            daemon.set_policy(None, Some(1))
        })
        .await;

    // `cat` holds the host's one channel until its input ends; the echo proves it is open
    let mut holder = cli
        .command(&["exec", "one-channel", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zpanel exec");
    let mut input = holder.stdin.take().expect("stdin");
    let mut output = BufReader::new(holder.stdout.take().expect("stdout"));
    input.write_all(b"held\n").await.unwrap();
    let mut line = String::new();
    output.read_line(&mut line).await.unwrap();
    assert_eq!(line, "held\n");

    let full = "this host already has 1 channel open, the most its policy allows \
                (bridge.toml [policy] max_channels)";
    let out = cli.run(&["exec", "one-channel", "--", "true"]).await;
    assert_refused(&out, &format!("host one-channel: {full}"));
    let out = cli.run(&["ls", "one-channel:/"]).await;
    assert_refused(&out, &format!("one-channel:/: {full}"));

    // the end of the first command frees the channel
    drop(input);
    let status = holder.wait().await.unwrap();
    assert!(status.success(), "the holding command failed: {status}");
    let mut refusals = Vec::new();
    assert_eventually!(
        {
            let out = cli
                .run(&["exec", "one-channel", "--", "echo", "again"])
                .await;
            let accepted = out.status.success() && stdout(&out) == "again\n";
            refusals.push(stderr(&out));
            accepted
        },
        Duration::from_secs(30),
        "the host never accepted a channel again: {:?}",
        refusals.last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_the_daemon_cannot_read_stops_it_at_start() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(2).await;

    let unknown = Daemon::join(&cp, &token, "unknown-capability")
        .await
        .expect("join");
    unknown.set_policy(Some(&["exec", "shell"]), None);
    let message = run_fails(&unknown).await;
    assert!(
        message.ends_with(
            ": unknown variant `shell`, expected one of `exec`, `terminal`, `files`, `docker`, `metrics`, `upgrade`"
        ),
        "{message}"
    );

    let no_channels = Daemon::join(&cp, &token, "no-channels")
        .await
        .expect("join");
    no_channels.set_policy(None, Some(0));
    let message = run_fails(&no_channels).await;
    assert!(
        message.ends_with(
            ": max_channels must be at least 1 (to offer nothing, set capabilities = [])"
        ),
        "{message}"
    );
}

/// Runs `zpanel-bridge run` for a daemon that must refuse to start: its one line on stderr,
/// which names the file and the line.
async fn run_fails(daemon: &Daemon) -> String {
    let run = Command::new(bin("zpanel-bridge"))
        .arg("run")
        .arg("--config-dir")
        .arg(daemon.config_dir.path())
        .kill_on_drop(true)
        .output();
    // Only a guard against a daemon that starts anyway: a refusal comes before any network.
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("zpanel-bridge run kept running with a bad [policy]")
        .expect("spawn zpanel-bridge");
    assert!(!out.status.success(), "zpanel-bridge run succeeded");
    let message = stderr(&out);
    let path = daemon.config_dir.path().join("bridge.toml");
    let prefix = format!("zpanel-bridge: {} is not valid: line ", path.display());
    assert!(
        message.starts_with(&prefix) && message.lines().count() == 1,
        "{message:?}"
    );
    message.trim_end().to_string()
}

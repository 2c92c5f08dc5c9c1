//! `zpanel shell` and `zpanel sessions` end to end, the CLI in a real pseudo-terminal: a
//! real control plane, a real daemon and a real shell on the host.

use std::time::Duration;

use zpanel_tests::pty::PtyCli;
use zpanel_tests::{Cli, ControlPlane, Daemon, assert_eventually, stderr, stdout};

const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "box";

async fn setup() -> (ControlPlane, Cli, Daemon) {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, HOST).await;
    (cp, cli, daemon)
}

fn shell(cli: &Cli, args: &[&str]) -> PtyCli {
    let mut all = vec!["shell", HOST];
    all.extend_from_slice(args);
    PtyCli::spawn(cli, &all, 100, 30).expect("zpanel shell in a terminal")
}

/// The session id of the hint `~.` prints.
fn detached_session_id(text: &str) -> String {
    let rest = text
        .split("detached from session ")
        .nth(1)
        .unwrap_or_else(|| panic!("no detach message in {text:?}"));
    rest.split(';').next().unwrap_or_default().to_string()
}

async fn sessions_json(cli: &Cli) -> Vec<serde_json::Value> {
    let out = cli.run(&["sessions", HOST, "--json"]).await;
    assert!(out.status.success(), "sessions: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("sessions json")
}

/// The id of the one session on the host.
async fn only_session_id(cli: &Cli) -> String {
    let sessions = sessions_json(cli).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    sessions[0]["id"].as_str().expect("session id").to_string()
}

#[tokio::test]
async fn a_shell_runs_commands_follows_the_window_and_exits_with_the_shells_code() {
    let (_cp, cli, _daemon) = setup().await;
    let mut term = shell(&cli, &[]);
    term.type_text("echo $((6*7))\r");
    term.expect("42\r\n", WAIT).await;
    term.type_text("stty size\r");
    term.expect("30 100", WAIT).await;

    term.resize(120, 40);
    assert_eventually!(
        {
            term.type_text("stty size\r");
            term.shows("40 120", Duration::from_secs(1)).await
        },
        WAIT,
        "the shell never saw the new size: {:?}",
        term.text()
    );

    term.type_text("exit 3\r");
    assert_eq!(term.exit_code(WAIT).await.unwrap(), 3);
}

#[tokio::test]
async fn detach_list_reattach_with_earlier_output_and_kill() {
    let (_cp, cli, _daemon) = setup().await;
    let mut term = shell(&cli, &[]);
    term.type_text("echo before-$((1+1))\r");
    term.expect("before-2", WAIT).await;
    term.type_text("~?");
    term.expect("~.  detach", WAIT).await;
    term.type_text("~.");
    term.expect("reattach with: zpanel shell box --attach ", WAIT)
        .await;
    assert_eq!(term.exit_code(WAIT).await.unwrap(), 0);
    let id = detached_session_id(&term.text());
    assert!(
        term.text()
            .contains(&format!("reattach with: zpanel shell box --attach {id}")),
        "{:?}",
        term.text()
    );

    let listed = cli.run(&["sessions", HOST]).await;
    assert!(listed.status.success(), "sessions: {}", stderr(&listed));
    let table = stdout(&listed);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("LAST ACTIVITY"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("session {id} not listed: {table}"));
    assert!(row.contains("100x30"), "{row}");
    let json = sessions_json(&cli).await;
    let session = json
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("listed");
    assert_eq!(session["viewers"], 0, "{session}");

    // Attaching again shows the earlier output, and the shell carries on.
    let mut again = shell(&cli, &["--attach", &id]);
    again.expect("before-2", WAIT).await;
    again.type_text("echo after-$((2+3))\r");
    again.expect("after-5", WAIT).await;

    let killed = cli.run(&["sessions", "kill", HOST, &id]).await;
    assert!(killed.status.success(), "kill: {}", stderr(&killed));
    assert!(stdout(&killed).contains(&id), "{}", stdout(&killed));
    // The shell got SIGHUP: the attached CLI exits as the shell did.
    assert_eq!(again.exit_code(WAIT).await.unwrap(), 128 + 1);
    assert_eventually!(
        !sessions_json(&cli)
            .await
            .iter()
            .any(|s| s["id"] == id.as_str()),
        WAIT,
        "session {id} still listed after kill"
    );
}

#[tokio::test]
async fn a_watcher_sees_the_output_and_cannot_type() {
    let (_cp, cli, _daemon) = setup().await;
    let mut term = shell(&cli, &[]);
    term.type_text("echo ready-$((1+1))\r");
    term.expect("ready-2", WAIT).await;
    let id = only_session_id(&cli).await;

    let mut watcher = shell(&cli, &["--attach", &id, "--watch"]);
    watcher.expect("ready-2", WAIT).await;
    watcher.expect("read-only", WAIT).await;
    watcher.type_text("echo typed-by-$((3+3))-watcher\r");
    term.type_text("echo from-$((4+4))-controller\r");
    watcher.expect("from-8-controller", WAIT).await;
    assert!(
        !term.text().contains("typed-by"),
        "the watcher's keys reached the shell: {:?}",
        term.text()
    );
    watcher.type_text("\r~.");
    watcher
        .expect(&format!("zpanel shell box --attach {id} --watch"), WAIT)
        .await;
    assert_eq!(watcher.exit_code(WAIT).await.unwrap(), 0);

    term.type_text("exit\r");
    assert_eq!(term.exit_code(WAIT).await.unwrap(), 0);
}

#[tokio::test]
async fn a_newer_controller_takes_the_session_over_and_the_older_one_leaves() {
    let (_cp, cli, _daemon) = setup().await;
    let mut first = shell(&cli, &[]);
    first.type_text("echo first-$((1+1))\r");
    first.expect("first-2", WAIT).await;
    let id = only_session_id(&cli).await;

    let mut second = shell(&cli, &["--attach", &id]);
    second.expect("first-2", WAIT).await;
    first
        .expect(
            &format!("take it back with: zpanel shell box --attach {id}"),
            WAIT,
        )
        .await;
    assert_eq!(first.exit_code(WAIT).await.unwrap(), 255);
    second.type_text("echo second-$((2+2))\r");
    second.expect("second-4", WAIT).await;
    second.type_text("exit\r");
    assert_eq!(second.exit_code(WAIT).await.unwrap(), 0);
}

#[tokio::test]
async fn the_shell_survives_a_control_plane_restart_and_keys_typed_meanwhile_arrive() {
    let (mut cp, cli, _daemon) = setup().await;
    let mut term = shell(&cli, &[]);
    term.type_text("echo one-$((0+1))\r");
    term.expect("one-1", WAIT).await;

    cp.kill().await;
    term.expect("[connection lost; reconnecting…]", WAIT).await;
    term.type_text("echo during-$((3*3))\r");
    cp.restart().await;
    term.expect("[reconnected]", WAIT).await;
    term.expect("during-9", WAIT).await;
    term.type_text("echo two-$((1+1))\r");
    term.expect("two-2", WAIT).await;
    let text = term.text();
    assert_eq!(
        text.matches("one-1").count(),
        1,
        "output repeated: {text:?}"
    );
    assert_eq!(text.matches("during-9").count(), 1, "{text:?}");

    term.type_text("exit\r");
    assert_eq!(term.exit_code(WAIT).await.unwrap(), 0);
}

#[tokio::test]
async fn output_the_host_no_longer_holds_is_reported_as_skipped() {
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(1).await;
    let _daemon = Daemon::join(&cp, &token, HOST)
        .await
        .expect("join")
        .start_with(&[
            "--terminal-scrollback",
            "1KiB",
            "--reconnect-base",
            "100ms",
            "--reconnect-max",
            "1s",
        ])
        .await;
    assert_eventually!(
        cli.host_status(HOST).await.as_deref() == Some("online"),
        WAIT,
        "host never came online"
    );
    let mut term = shell(&cli, &[]);
    term.type_text("echo ready-$((1+1))\r");
    term.expect("ready-2", WAIT).await;
    term.type_text("sleep 1; seq 1 20000; echo done-$((1+1))\r");
    term.expect("done-$((1+1))", WAIT).await;
    // The shell prints 100 KiB while nobody is attached; the host keeps the last 1 KiB.
    cp.kill().await;
    term.expect("[connection lost; reconnecting…]", WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.restart().await;
    term.expect("bytes of output skipped]", WAIT).await;
    term.expect("done-2", WAIT).await;
    assert!(!term.text().contains("\n100\r\n"), "{:?}", term.text());
}

#[tokio::test]
async fn it_gives_up_re_attaching_with_the_command_to_do_it_later() {
    let (mut cp, cli, _daemon) = setup().await;
    let mut term = shell(&cli, &["--resume-for", "1s"]);
    term.type_text("echo up-$((1+1))\r");
    term.expect("up-2", WAIT).await;
    let id = only_session_id(&cli).await;
    cp.kill().await;
    term.expect(
        &format!("zpanel: lost the connection to session {id} on box: "),
        WAIT,
    )
    .await;
    term.expect(
        &format!("; reattach with: zpanel shell box --attach {id}\r\n"),
        WAIT,
    )
    .await;
    assert_eq!(term.exit_code(WAIT).await.unwrap(), 255);
}

#[tokio::test]
async fn piped_input_works_without_a_terminal_and_ends_the_shell() {
    let (_cp, cli, _daemon) = setup().await;
    let out = cli
        .run_with_stdin(&["shell", HOST], b"echo piped-$((2+3))\nexit 4\n")
        .await;
    assert!(stdout(&out).contains("piped-5"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // Without an `exit`, the end of the input ends the shell as Ctrl-D would.
    let out = cli
        .run_with_stdin(&["shell", HOST], b"echo no-exit-$((1+6))\n")
        .await;
    assert!(stdout(&out).contains("no-exit-7"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test]
async fn failures_are_one_line_and_not_zero() {
    let (_cp, cli, _daemon) = setup().await;
    for args in [
        vec!["shell", "no-such-host"],
        vec!["shell", HOST, "--attach", "no-such-session"],
        vec!["sessions", "no-such-host"],
        vec!["sessions", "kill", HOST, "no-such-session"],
    ] {
        let out = cli.run(&args).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        let message = stderr(&out);
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message:?}");
        assert!(message.starts_with("zpanel: "), "{args:?}: {message:?}");
    }
}

//! Terminal sessions end to end through the browser's WebSocket protocol: a real control
//! plane, a real daemon and a real shell in a PTY.

use std::time::Duration;

use zpanel_tests::web::{Browser, Screen, Socket, read_until, send_json, type_text};
use zpanel_tests::{ControlPlane, Daemon, assert_eventually};

const WAIT: Duration = Duration::from_secs(20);

async fn setup() -> (ControlPlane, Daemon, Browser) {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = cp.add_online_host(&cli, "term").await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .expect("login");
    (cp, daemon, browser)
}

/// Opens (or attaches with `query`) and waits for `attached`.
async fn attach(browser: &Browser, query: &str) -> (Socket, Screen) {
    let mut socket = browser.terminal("term", query).await.expect("terminal");
    let mut screen = Screen::default();
    assert!(
        read_until(&mut socket, &mut screen, WAIT, |s| s.attached.is_some()).await,
        "no attached message: {screen:?}"
    );
    (socket, screen)
}

fn session_id(screen: &Screen) -> String {
    screen.attached.as_ref().unwrap()["session"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn expect(socket: &mut Socket, screen: &mut Screen, needle: &str) {
    let found = read_until(socket, screen, WAIT, |s| s.text().contains(needle)).await;
    assert!(found, "{needle:?} never appeared in: {:?}", screen.text());
}

/// Resizes the terminal to `(cols, rows)` and waits for `stty size` to print `expected`.
async fn resize_and_check(
    socket: &mut Socket,
    screen: &mut Screen,
    (cols, rows): (u32, u32),
    expected: &str,
) {
    send_json(
        socket,
        serde_json::json!({"type": "resize", "cols": cols, "rows": rows}),
    )
    .await;
    type_text(socket, "stty size\r").await;
    expect(socket, screen, expected).await;
}

#[tokio::test]
async fn a_shell_echoes_resizes_and_survives_its_viewer() {
    let (_cp, _daemon, browser) = setup().await;
    let (mut socket, mut screen) = attach(&browser, "cols=80&rows=24").await;
    let id = session_id(&screen);
    assert_eq!(screen.start(), 0);
    type_text(&mut socket, "echo $((6*7))\r").await;
    expect(&mut socket, &mut screen, "42").await;
    type_text(&mut socket, "stty size\r").await;
    expect(&mut socket, &mut screen, "24 80").await;
    resize_and_check(&mut socket, &mut screen, (132, 40), "40 132").await;
    // out-of-range sizes are clamped, not fatal
    resize_and_check(&mut socket, &mut screen, (100000, 0), "1 4096").await;

    // Close the viewer: the shell keeps running and prints while nobody watches.
    type_text(&mut socket, "sleep 1; echo printed-while-$((1+1))-away\r").await;
    let offset = screen.end();
    drop(socket);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Re-attach exactly where we were: the missed output arrives once.
    let (mut socket, mut again) = attach(&browser, &format!("session={id}&offset={offset}")).await;
    assert_eq!(again.start(), offset);
    expect(&mut socket, &mut again, "printed-while-2-away").await;
    assert_eq!(again.text().matches("printed-while-2-away").count(), 1);
    assert!(!again.text().contains("42"), "output was repeated");
    drop(socket);

    // A viewer with no state (a reloaded page) sees the recent screen.
    let (mut socket, mut fresh) = attach(&browser, &format!("session={id}")).await;
    expect(&mut socket, &mut fresh, "printed-while-2-away").await;
    assert!(fresh.text().contains("42"), "{}", fresh.text());

    // The shell's exit ends the session for the viewer.
    type_text(&mut socket, "exit 3\r").await;
    assert!(read_until(&mut socket, &mut fresh, WAIT, |s| s.closed.is_some()).await);
    let exit = fresh.messages.iter().find(|m| m["type"] == "exit");
    assert_eq!(exit.map(|m| m["code"].clone()), Some(serde_json::json!(3)));
    assert_eq!(fresh.closed, Some(1000));
}

#[tokio::test]
async fn output_printed_during_a_control_plane_restart_arrives_once_in_order() {
    let (mut cp, _daemon, browser) = setup().await;
    let (mut socket, mut screen) = attach(&browser, "").await;
    let id = session_id(&screen);
    type_text(
        &mut socket,
        "for i in $(seq 1 60); do echo n-$i; sleep 0.05; done; echo loop-done\r",
    )
    .await;
    expect(&mut socket, &mut screen, "n-5\r\n").await;
    cp.kill().await;
    drop(socket);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cp.restart().await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .expect("login after restart");
    let offset = screen.end();
    let (mut socket, mut rest) = attach(&browser, &format!("session={id}&offset={offset}")).await;
    assert_eq!(rest.start(), offset, "output was skipped");
    expect(&mut socket, &mut rest, "loop-done\r\n").await;
    let all = format!("{}{}", screen.text(), rest.text());
    let numbers: Vec<u32> = all
        .split("\r\n")
        // a line may start with the shell's control sequences, ended by a carriage return
        .filter_map(|line| line.rsplit('\r').next()?.strip_prefix("n-"))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers, (1..=60).collect::<Vec<_>>(), "{all}");
}

#[tokio::test]
async fn a_watcher_sees_what_the_controller_does_and_cannot_type() {
    let (_cp, _daemon, browser) = setup().await;
    let (mut control, mut controller) = attach(&browser, "").await;
    let id = session_id(&controller);
    let (mut watch, mut watcher) = attach(&browser, &format!("session={id}&mode=watch")).await;
    assert_eq!(watcher.attached.as_ref().unwrap()["mode"], "watch");
    type_text(&mut watch, "echo from-the-watcher\r").await;
    type_text(&mut control, "echo $((6*7))-seen\r").await;
    expect(&mut control, &mut controller, "42-seen").await;
    expect(&mut watch, &mut watcher, "42-seen").await;
    assert!(!controller.text().contains("from-the-watcher"));

    // A second controller takes over; the first is told why.
    let (mut second, mut second_screen) = attach(&browser, &format!("session={id}")).await;
    assert!(read_until(&mut control, &mut controller, WAIT, |s| s.closed.is_some()).await);
    let reason = controller.messages.iter().find(|m| m["type"] == "error");
    assert!(reason.is_some(), "{:?}", controller.messages);
    assert_eq!(
        controller.closed,
        Some(4009),
        "the replaced viewer must not retry"
    );
    type_text(&mut second, "echo second-here\r").await;
    expect(&mut second, &mut second_screen, "second-here").await;
}

#[tokio::test]
async fn detached_sessions_end_after_the_idle_timeout_and_can_be_killed() {
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let idle = ["--terminal-idle-timeout", "2s"];
    let _daemon = cp.add_online_host_with(&cli, "term", &idle, |_| {}).await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let list = || async {
        browser
            .call("GET", "/api/v1/hosts/term/terminals", None)
            .await
            .unwrap()
            .json()
    };

    let (socket, screen) = attach(&browser, "").await;
    let idle = session_id(&screen);
    let listed = list().await;
    assert_eq!(listed[0]["id"], idle.as_str(), "{listed}");
    assert_eq!(listed[0]["owner"], "admin");
    drop(socket);
    assert_eventually!(
        list().await.as_array().is_some_and(|a| a.is_empty()),
        WAIT,
        "the detached session was never reaped"
    );
    let mut gone = browser
        .terminal("term", &format!("session={idle}"))
        .await
        .unwrap();
    let mut screen = Screen::default();
    read_until(&mut gone, &mut screen, WAIT, |s| s.closed.is_some()).await;
    assert_eq!(screen.closed, Some(4004), "{screen:?}");

    // Killing a session ends its shell and tells its viewer.
    let (mut socket, mut screen) = attach(&browser, "").await;
    let id = session_id(&screen);
    let killed = browser
        .call(
            "DELETE",
            &format!("/api/v1/hosts/term/terminals/{id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(killed.status, 204, "{killed:?}");
    assert!(read_until(&mut socket, &mut screen, WAIT, |s| s.closed.is_some()).await);
}

#[tokio::test]
async fn floods_and_stalled_viewers_stay_bounded() {
    let (cp, daemon, browser) = setup().await;
    // A paste larger than every window: back-pressured, never dropped.
    let (mut socket, mut screen) = attach(&browser, "").await;
    type_text(&mut socket, "stty -echo; wc -c; stty echo\r").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let line = format!("{}\n", "x".repeat(1023));
    let paste = line.repeat(6 * 1024); // 6 MiB in 1 KiB lines
    // Like the page, keep at most 1 MiB of input unacknowledged.
    let mut sent = 0u64;
    for piece in paste.as_bytes().chunks(256 * 1024) {
        let room = |s: &Screen| s.input_acked() + 768 * 1024 >= sent;
        assert!(
            read_until(&mut socket, &mut screen, WAIT, room).await,
            "input stalled"
        );
        type_text(&mut socket, std::str::from_utf8(piece).unwrap()).await;
        sent += piece.len() as u64;
    }
    type_text(&mut socket, "\x04").await;
    expect(&mut socket, &mut screen, &format!("{}", 6 * 1024 * 1024)).await;

    // A viewer that stops reading a flood holds the daemon to its window, and another
    // terminal on the same host stays live meanwhile.
    let (mut flood, _) = attach(&browser, "").await;
    type_text(&mut flood, "yes flood-line-of-some-length\r").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut other, mut other_screen) = attach(&browser, "").await;
    type_text(&mut other, "echo $((6*7))-alive\r").await;
    expect(&mut other, &mut other_screen, "42-alive").await;
    let (rss_kib, _) = zpanel_tests::memory_kib(daemon.pid().unwrap());
    assert!(rss_kib < 200 * 1024, "daemon grew to {rss_kib} KiB");
    let (cp_rss_kib, _) = zpanel_tests::memory_kib(cp.pid().unwrap());
    assert!(
        cp_rss_kib < 300 * 1024,
        "control plane grew to {cp_rss_kib} KiB"
    );
    type_text(&mut flood, "\x03").await;
}

/// Runs SQL statements on the control plane's database.
fn sql(cp: &ControlPlane, statement: &str) {
    let out = std::process::Command::new("sqlite3")
        .arg(cp.data_dir().join("zpanel.db"))
        .arg(statement)
        .output()
        .expect("the sqlite3 command (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn another_users_session_and_expired_logins_are_refused() {
    let (cp, _daemon, admin) = setup().await;
    let (_socket, screen) = attach(&admin, "").await;
    let id = session_id(&screen);

    sql(
        &cp,
        "INSERT INTO users (id, name, role, created_at) VALUES ('u-bob', 'bob', 'member', 0);
         INSERT INTO workspace_members (workspace_id, user_id, role, created_at) VALUES ('default', 'u-bob', 'developer', 0)",
    );
    let mut passwd = tokio::process::Command::new(zpanel_tests::bin("zpanel-cp"))
        .args(["passwd", "bob", "--password-file", "-", "--data-dir"])
        .arg(cp.data_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = passwd.stdin.take().unwrap();
    stdin.write_all(b"bob's long password\n").await.unwrap();
    drop(stdin);
    assert!(passwd.wait().await.unwrap().success());
    let bob = Browser::login(&cp, "bob", "bob's long password")
        .await
        .unwrap();

    // Bob can neither type into nor watch the admin's session, nor see or end it.
    for query in [format!("session={id}"), format!("session={id}&mode=watch")] {
        let mut socket = bob.terminal("term", &query).await.unwrap();
        let mut refused = Screen::default();
        read_until(&mut socket, &mut refused, WAIT, |s| s.closed.is_some()).await;
        assert_eq!(refused.closed, Some(4003), "{query}: {refused:?}");
        let error = &refused.messages[0]["message"];
        assert!(error.as_str().unwrap().contains("may not"), "{error}");
        assert!(refused.output.is_empty());
    }
    let listed = bob
        .call("GET", "/api/v1/hosts/term/terminals", None)
        .await
        .unwrap();
    assert_eq!(listed.json(), serde_json::json!([]));
    let everyone = bob
        .call("GET", "/api/v1/hosts/term/terminals?all=true", None)
        .await
        .unwrap();
    assert_eq!(everyone.status, 403);
    let kill = bob
        .call(
            "DELETE",
            &format!("/api/v1/hosts/term/terminals/{id}"),
            None,
        )
        .await
        .unwrap();
    assert!(kill.status >= 400, "{kill:?}");
    let still = admin
        .call("GET", "/api/v1/hosts/term/terminals", None)
        .await
        .unwrap();
    assert_eq!(still.json()[0]["id"], id.as_str());

    // Bob's own terminal works; the admin may watch it but not type into it.
    let (_bob_socket, bob_screen) = attach(&bob, "").await;
    let bob_id = session_id(&bob_screen);
    let (_watch, watching) = attach(&admin, &format!("session={bob_id}&mode=watch")).await;
    assert_eq!(watching.attached.as_ref().unwrap()["mode"], "watch");
    let mut socket = admin
        .terminal("term", &format!("session={bob_id}"))
        .await
        .unwrap();
    let mut refused = Screen::default();
    read_until(&mut socket, &mut refused, WAIT, |s| s.closed.is_some()).await;
    assert_eq!(refused.closed, Some(4003), "{refused:?}");

    // An expired login is refused, for the API and the terminal alike.
    sql(&cp, "UPDATE web_sessions SET expires_at = 0");
    let expired = bob.call("GET", "/api/v1/session", None).await.unwrap();
    assert_eq!(expired.status, 401);
    let upgrade = bob.terminal("term", "").await;
    assert!(upgrade.is_err_and(|e| e.to_string().contains("401")));
}

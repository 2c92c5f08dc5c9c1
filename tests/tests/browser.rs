//! The browser end to end: Chromium (driven by `tests/browser/terminal.mjs`) logs in, opens
//! a terminal on a real host, reloads, lives through a control-plane restart, and checks
//! that the terminal WebSocket refuses a foreign Origin. Screenshots land in
//! `target/debug/browser/`.

use std::time::Duration;

use zpanel_tests::ControlPlane;
use zpanel_tests::browser::{BrowserScript, artifacts_dir};

/// Longest silence from the script between two commands (a step waits up to 90 s).
const SCRIPT_SILENCE: Duration = Duration::from_secs(180);

#[tokio::test]
async fn a_browser_terminal_survives_reload_and_control_plane_restart() {
    let mut cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = cp.add_online_host(&cli, "browser-host").await;
    std::fs::create_dir_all(artifacts_dir()).expect("artifacts dir");
    let screenshot = artifacts_dir().join("terminal.png");

    let url = cp.url.clone();
    let password = cp.admin_password();
    let mut script = BrowserScript::spawn(
        "terminal.mjs",
        &[
            ("ZPANEL_URL", &url),
            ("ZPANEL_USER", "admin"),
            ("ZPANEL_PASSWORD", &password),
            ("ZPANEL_HOST", "browser-host"),
            (
                "ZPANEL_SCREENSHOT",
                screenshot.to_str().expect("utf-8 path"),
            ),
        ],
    )
    .expect("the browser script starts");

    let mut failure = None;
    loop {
        match script.next_command(SCRIPT_SILENCE).await {
            Ok(Some(command)) if command == "kill" => cp.kill().await,
            Ok(Some(command)) if command == "start" => cp.restart().await,
            Ok(Some(command)) => {
                failure = Some(format!("unknown command from the script: {command}"));
                break;
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(format!("{e:#}"));
                break;
            }
        }
        if let Err(e) = script.reply("done").await {
            failure = Some(format!("cannot answer the script: {e:#}"));
            break;
        }
    }
    script.assert_passed("the browser test", failure, &cp).await;
}

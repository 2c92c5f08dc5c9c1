//! The file manager and the editor in a browser: Chromium (driven by
//! `tests/browser/files.mjs`) uploads by drag and drop, edits and saves, meets a file changed
//! on disk (the conflict dialog, overwrite, compare) and deletes, against a real control plane
//! and a daemon serving a temporary directory. This side answers the script's questions about
//! that directory, so every result is checked on the host's disk. Screenshots land in
//! `target/debug/browser/`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use zpanel_tests::browser::{BrowserScript, artifacts_dir};
use zpanel_tests::{ControlPlane, Daemon, assert_eventually};

/// Longest silence from the script between two commands (a step waits up to 30 s).
const SCRIPT_SILENCE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_browser_uploads_edits_and_settles_a_conflict() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The daemon reports real paths: the page sees the canonical one.
    let root = dir.path().canonicalize().expect("canonical temp dir");
    std::fs::write(root.join("seed.txt"), "here before the test\n").expect("seed");
    std::fs::create_dir_all(root.join("etc/app")).expect("seed folder");
    std::fs::write(root.join("etc/app/app.toml"), "[server]\nport = 8080\n").expect("seed");

    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let token = cli.join_token(1).await;
    let daemon = Daemon::join(&cp, &token, "files-host").await.expect("join");
    daemon.set_file_roots(&[&root]);
    let _daemon = daemon.start().await;
    assert_eventually!(
        cli.host_status("files-host").await.as_deref() == Some("online"),
        Duration::from_secs(30),
        "the host never came online"
    );
    std::fs::create_dir_all(artifacts_dir()).expect("artifacts dir");
    let screenshot = artifacts_dir().join("files.png");

    let url = cp.url.clone();
    let password = cp.admin_password();
    let mut script = BrowserScript::spawn(
        "files.mjs",
        &[
            ("ZPANEL_URL", &url),
            ("ZPANEL_USER", "admin"),
            ("ZPANEL_PASSWORD", &password),
            ("ZPANEL_HOST", "files-host"),
            ("ZPANEL_FILES_ROOT", root.to_str().expect("utf-8 path")),
            (
                "ZPANEL_SCREENSHOT",
                screenshot.to_str().expect("utf-8 path"),
            ),
        ],
    )
    .expect("the browser script starts");

    let failure = script
        .serve(SCRIPT_SILENCE, |command| {
            let reply = answer(&root, &command);
            async move { reply }
        })
        .await;
    script
        .assert_passed("the browser files test", failure, &cp)
        .await;
}

/// The answer to one of the script's commands about files under `root`:
/// `read NAME` → the content as a JSON string (null when missing);
/// `write NAME JSON` → writes the JSON string, "done".
fn answer(root: &Path, command: &str) -> anyhow::Result<String> {
    let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "read" => {
            let path = inside(root, rest)?;
            let content = match std::fs::read_to_string(&path) {
                Ok(content) => Some(content),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            Ok(serde_json::to_string(&content)?)
        }
        "write" => {
            let (name, json) = rest.split_once(' ').context("write NAME JSON")?;
            let content: String = serde_json::from_str(json).context("write's JSON string")?;
            let path = inside(root, name)?;
            std::fs::write(&path, content)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok("done".into())
        }
        _ => anyhow::bail!("unknown command from the script: {command}"),
    }
}

/// `root/NAME` for a plain file name (the script names nothing else).
fn inside(root: &Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    anyhow::ensure!(
        !name.is_empty() && !name.contains('/') && name != "..",
        "the script named {name:?}, not a file name"
    );
    Ok(root.join(name))
}

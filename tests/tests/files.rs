//! Files on a host end to end through the web API: a real control plane, a real daemon
//! serving a temporary directory as its only root, real files. The attack table tries to
//! leave the root every way we know; nothing outside may be read, written or touched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zpanel_tests::web::{Browser, HttpResponse};
use zpanel_tests::{ControlPlane, Daemon};

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    _cp: ControlPlane,
    _daemon: Daemon,
    browser: Browser,
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// A host serving `DIR/root`, beside `DIR/outside/secret.txt`, with symlinks pointing out.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::fs::set_permissions(
        outside.join("secret.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(root.join("sub/file.txt"), "hello files\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link_out")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", root.join("sub/rel_link")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("link_etc")).unwrap();
    std::os::unix::fs::symlink("file.txt", root.join("sub/inner_link")).unwrap();

    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = zpanel_tests::files::add_host_serving(&cp, &cli, "files", &[&root]).await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    Setup {
        _cp: cp,
        _daemon: daemon,
        browser,
        _dir: dir,
        root,
        outside,
    }
}

/// A query string value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Setup {
    fn path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.root.display())
    }

    async fn get(&self, what: &str, path: &str) -> HttpResponse {
        let url = format!("/api/v1/hosts/files/files/{what}?path={}", encode(path));
        self.browser.call("GET", &url, None).await.unwrap()
    }

    async fn op(&self, body: serde_json::Value) -> HttpResponse {
        self.browser
            .call("POST", "/api/v1/hosts/files/files/op", Some(&body))
            .await
            .unwrap()
    }

    async fn put(&self, path: &str, content: &[u8], headers: &[(&str, &str)]) -> HttpResponse {
        let url = format!("/api/v1/hosts/files/files/content?path={}", encode(path));
        self.browser
            .call_with_body("PUT", &url, headers, content)
            .await
            .unwrap()
    }

    /// Everything outside the root is as `setup` left it.
    fn outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["secret.txt"],
            "something was created outside the root"
        );
        let secret = self.outside.join("secret.txt");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the outside file's mode changed");
    }
}

fn refused(response: &HttpResponse, statuses: &[u16], case: &str) {
    assert!(
        statuses.contains(&response.status),
        "{case}: expected one of {statuses:?}, got {response:?}"
    );
    let error = response.json()["error"].as_str().unwrap_or("").to_string();
    assert!(!error.is_empty(), "{case}: no error line in {response:?}");
    assert!(
        !error.contains('\n'),
        "{case}: error is not one line: {error}"
    );
    assert!(
        !response.body.contains("secret\""),
        "{case}: leaked {response:?}"
    );
}

#[tokio::test]
async fn the_attack_table_never_leaves_the_root() {
    let s = setup().await;
    let secret = s.outside.join("secret.txt");
    let secret = secret.to_str().unwrap();
    let outside = s.outside.to_str().unwrap();
    let long_name = s.path(&"n".repeat(300));
    let reads: Vec<(&str, String)> = vec![
        ("dot-dot", s.path("../outside/secret.txt")),
        (
            "dot-dot in the middle",
            s.path("sub/../../outside/secret.txt"),
        ),
        ("absolute path outside", secret.to_string()),
        ("/etc/passwd", "/etc/passwd".into()),
        ("relative dot-dot", "../outside/secret.txt".into()),
        ("symlink to a folder outside", s.path("link_out/secret.txt")),
        ("relative symlink out", s.path("sub/rel_link")),
        ("symlink to /etc", s.path("link_etc/passwd")),
        (
            "NUL byte",
            format!("{}\0/../../outside/secret.txt", s.path("sub")),
        ),
        ("very long name", long_name.clone()),
        ("a directory as a file", s.path("sub")),
        ("the root's parent", format!("{}/..", s.root.display())),
    ];
    for (case, path) in &reads {
        let response = s.get("content", path).await;
        refused(&response, &[400, 403, 404], case);
        assert_ne!(response.body, "secret", "{case}");
    }
    // Percent-encoding is never decoded twice: "%2e%2e" is a plain (missing) name.
    let encoded = format!("{}/%2e%2e/outside/secret.txt", s.root.display());
    refused(&s.get("stat", &encoded).await, &[404], "encoded dot-dot");

    let changes: Vec<(&str, serde_json::Value)> = vec![
        (
            "mkdir through a symlink",
            serde_json::json!({"op": "mkdir", "path": s.path("link_out/new"), "parents": true}),
        ),
        (
            "rename out of the root",
            serde_json::json!({"op": "rename", "from": s.path("sub/file.txt"), "to": format!("{outside}/moved")}),
        ),
        (
            "rename into a symlink",
            serde_json::json!({"op": "rename", "from": s.path("sub/file.txt"), "to": s.path("link_out/moved")}),
        ),
        (
            "copy from outside",
            serde_json::json!({"op": "copy", "from": secret, "to": s.path("stolen")}),
        ),
        (
            "copy through a symlink",
            serde_json::json!({"op": "copy", "from": s.path("link_out/secret.txt"), "to": s.path("stolen")}),
        ),
        (
            "chmod through a symlink",
            serde_json::json!({"op": "chmod", "path": s.path("link_out/secret.txt"), "mode": 0o777}),
        ),
        (
            "delete outside",
            serde_json::json!({"op": "delete", "path": secret}),
        ),
        (
            "delete through a symlink",
            serde_json::json!({"op": "delete", "path": s.path("link_out/secret.txt")}),
        ),
        (
            "delete the root",
            serde_json::json!({"op": "delete", "path": s.root.to_str().unwrap(), "recursive": true}),
        ),
        (
            "delete a non-empty folder without recursive",
            serde_json::json!({"op": "delete", "path": s.path("sub")}),
        ),
    ];
    for (case, body) in &changes {
        refused(&s.op(body.clone()).await, &[400, 403, 404, 409], case);
    }
    for (case, path) in [
        ("write through a symlink", s.path("link_out/new.txt")),
        ("write outside", format!("{outside}/new.txt")),
        ("write with dot-dot", s.path("../outside/new.txt")),
        ("write over a directory", s.path("sub")),
    ] {
        refused(&s.put(&path, b"x", &[]).await, &[400, 403, 404], case);
    }
    // Deleting the symlink itself removes the link, never its target.
    let removed = s
        .op(serde_json::json!({"op": "delete", "path": s.path("link_out")}))
        .await;
    assert_eq!(removed.status, 200, "{removed:?}");
    assert!(!s.root.join("link_out").exists());
    s.outside_untouched();

    // What stays inside works, symlinks inside the root included.
    let inner = s.get("content", &s.path("sub/inner_link")).await;
    assert_eq!(inner.body, "hello files\n");
    let relative = s.get("content", "sub/./file.txt").await;
    assert_eq!(relative.body, "hello files\n", "{relative:?}");
    let found = s.get("find", &s.root.display().to_string()).await;
    assert_eq!(found.status, 200, "{found:?}");
    let search = s
        .browser
        .call(
            "GET",
            &format!(
                "/api/v1/hosts/files/files/find?path={}&content=secret",
                encode(s.root.to_str().unwrap())
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        search.json()["matches"],
        serde_json::json!([]),
        "{search:?}"
    );
    let archive = s.get("archive", s.root.to_str().unwrap()).await;
    assert_eq!(archive.status, 200);
    assert!(archive.body.contains("hello files"));
    assert!(!archive.body.contains("secret\0") && !archive.body.ends_with("secret"));
}

#[tokio::test]
async fn writes_are_atomic_and_refuse_conflicts() {
    let s = setup().await;
    let path = s.path("sub/file.txt");
    std::fs::set_permissions(
        s.root.join("sub/file.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let read = s.get("content", &path).await;
    let version = read.header("etag").unwrap().to_string();
    assert_eq!(read.body, "hello files\n");

    // Someone changes the file on disk after the editor read it.
    std::fs::write(s.root.join("sub/file.txt"), "changed underneath\n").unwrap();
    let conflict = s
        .put(&path, b"my edit\n", &[("If-Match", version.as_str())])
        .await;
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(
        conflict.json()["error"],
        "changed on disk: reload, overwrite or compare"
    );
    assert!(conflict.json()["current"]["version"].is_string());
    assert_eq!(
        std::fs::read_to_string(s.root.join("sub/file.txt")).unwrap(),
        "changed underneath\n"
    );

    // Reload, then save: it goes through, keeping the file's mode.
    let current = s.get("content", &path).await;
    let version = current.header("etag").unwrap().to_string();
    let saved = s
        .put(&path, b"my edit\n", &[("If-Match", version.as_str())])
        .await;
    assert_eq!(saved.status, 200, "{saved:?}");
    let expected = hex::encode(Sha256::digest(b"my edit\n"));
    assert_eq!(saved.json()["sha256"], expected.as_str());
    let on_disk = s.root.join("sub/file.txt");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "my edit\n");
    let mode = std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(s.root.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with(".zpanel"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Create-only refuses an existing file; a new one is created with parents.
    let exists = s.put(&path, b"x", &[("If-None-Match", "*")]).await;
    assert_eq!(exists.status, 409, "{exists:?}");
    let created = s
        .put(
            &s.path("new/deep/a.txt"),
            b"new\n",
            &[("If-None-Match", "*")],
        )
        .await;
    assert_eq!(
        created.status, 404,
        "no parents without asking: {created:?}"
    );
    let url = format!(
        "/api/v1/hosts/files/files/content?path={}&parents=true",
        encode(&s.path("new/deep/a.txt"))
    );
    let created = s
        .browser
        .call_with_body("PUT", &url, &[("If-None-Match", "*")], b"new\n")
        .await
        .unwrap();
    assert_eq!(created.status, 200, "{created:?}");
    assert_eq!(
        std::fs::read_to_string(s.root.join("new/deep/a.txt")).unwrap(),
        "new\n"
    );

    // A larger upload streams through with its checksum, and ranges read parts of it.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let uploaded = s.put(&s.path("big.bin"), &big, &[]).await;
    assert_eq!(uploaded.status, 200, "{uploaded:?}");
    assert_eq!(
        uploaded.json()["sha256"],
        hex::encode(Sha256::digest(&big)).as_str()
    );
    assert_eq!(std::fs::read(s.root.join("big.bin")).unwrap(), big);
    let url = format!(
        "/api/v1/hosts/files/files/content?path={}",
        encode(&s.path("sub/file.txt"))
    );
    let part = s
        .browser
        .call_with_body("GET", &url, &[("Range", "bytes=3-6")], b"")
        .await
        .unwrap();
    assert_eq!(part.status, 206, "{part:?}");
    assert_eq!(part.body, "edit");
    assert_eq!(part.header("content-range"), Some("bytes 3-6/8"));
}

#[tokio::test]
async fn listings_page_and_watches_push_changes() {
    let s = setup().await;
    let many = s.root.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..25 {
        std::fs::write(many.join(format!("f{i:02}")), format!("{i}")).unwrap();
    }
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let url = format!(
            "/api/v1/hosts/files/files?path={}&limit=10&after={}",
            encode(many.to_str().unwrap()),
            encode(&after)
        );
        let page = s.browser.call("GET", &url, None).await.unwrap().json();
        let entries = page["entries"].as_array().unwrap().clone();
        assert!(entries.len() <= 10);
        names.extend(
            entries
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string()),
        );
        after = page["next_after"].as_str().unwrap().to_string();
        if after.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    assert_eq!(names, expected);

    let url = format!(
        "/api/v1/hosts/files/files?path={}",
        encode(s.root.to_str().unwrap())
    );
    let listing = s.browser.call("GET", &url, None).await.unwrap().json();
    let link = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "link_etc")
        .cloned()
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "/etc");

    // A watch on a folder sees a file appear.
    let url = format!(
        "/api/v1/hosts/files/files/watch?path={}",
        encode(many.to_str().unwrap())
    );
    let watcher = {
        let browser = s.browser.clone();
        tokio::spawn(async move {
            browser
                .events_until(&url, |text| {
                    text.contains("event: change") && text.contains("appeared")
                })
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !watcher.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = std::fs::remove_file(many.join("appeared"));
        std::fs::write(many.join("appeared"), "!").unwrap();
    }
    assert!(watcher.await.unwrap(), "no change event arrived");
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[tokio::test]
async fn changes_are_audited() {
    let s = setup().await;
    let made = s
        .op(serde_json::json!({"op": "mkdir", "path": s.path("made/here"), "parents": true}))
        .await;
    assert_eq!(made.status, 200, "{made:?}");
    assert!(exists(&s.root.join("made/here")));
    let renamed = s
        .op(serde_json::json!({"op": "rename", "from": s.path("made"), "to": s.path("renamed")}))
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    let written = s.put(&s.path("renamed/w.txt"), b"w", &[]).await;
    assert_eq!(written.status, 200, "{written:?}");
    let deleted = s
        .op(serde_json::json!({"op": "delete", "path": s.path("renamed"), "recursive": true}))
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert!(!exists(&s.root.join("renamed")));
    let audit = std::process::Command::new("sqlite3")
        .arg(s._cp.data_dir().join("zpanel.db"))
        .arg("SELECT action, detail, outcome FROM audit_log WHERE action LIKE 'file.%' ORDER BY id")
        .output()
        .expect("the sqlite3 command (scripts/test installs it)");
    let rows = String::from_utf8_lossy(&audit.stdout).to_string();
    for action in ["file.mkdir|", "file.rename|", "file.write|", "file.delete|"] {
        assert!(rows.contains(action), "{action} missing in:\n{rows}");
    }
    assert!(rows.contains("renamed/w.txt (1 bytes"), "{rows}");
}

/// A tmpfs of `size` mounted on `dir` for the life of the value (the tests run as root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (the end-to-end tests run as root)");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}",
            dir.display()
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_leaves_the_old_file_and_a_growing_file_downloads_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("disk");
    let _disk = SmallDisk::mount(&root, "2m");
    std::fs::write(root.join("keep.txt"), "the old content\n").unwrap();
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let _daemon = zpanel_tests::files::add_host_serving(&cp, &cli, "full", &[&root]).await;
    let browser = Browser::login(&cp, "admin", &cp.admin_password())
        .await
        .unwrap();
    let path = encode(root.join("keep.txt").to_str().unwrap());
    let url = format!("/api/v1/hosts/full/files/content?path={path}");
    let big = vec![b'x'; 4 * 1024 * 1024];
    let full = browser
        .call_with_body("PUT", &url, &[], &big)
        .await
        .unwrap();
    assert_eq!(full.status, 507, "{full:?}");
    assert!(full.json()["error"].as_str().is_some());
    assert_eq!(
        std::fs::read_to_string(root.join("keep.txt")).unwrap(),
        "the old content\n"
    );
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep.txt"], "a temporary file was left behind");

    // A file that grows while it is downloaded ends where it was when the read began.
    let growing = dir.path().join("growing.log");
    std::fs::write(&growing, vec![b'a'; 32 * 1024 * 1024]).unwrap();
    let whole = dir.path().to_path_buf();
    let _served = zpanel_tests::files::add_host_serving(&cp, &cli, "grow", &[&whole]).await;
    let writer = {
        let growing = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            for _ in 0..200 {
                file.write_all(&[b'b'; 64 * 1024]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let url = format!(
        "/api/v1/hosts/grow/files/content?path={}",
        encode(growing.to_str().unwrap())
    );
    let read = browser.call("GET", &url, None).await.unwrap();
    writer.join().unwrap();
    assert_eq!(read.status, 200);
    let length: usize = read.header("content-length").unwrap().parse().unwrap();
    assert_eq!(
        read.bytes.len(),
        length,
        "the body does not match its length"
    );
    let on_disk = std::fs::read(&growing).unwrap();
    assert!(length >= 32 * 1024 * 1024 && on_disk.starts_with(&read.bytes));
}

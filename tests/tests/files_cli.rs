//! The file commands of `zpanel` end to end: a real control plane, daemons serving temporary
//! directories as their only root, the real CLI. Listings (paged, long, JSON), `cat`,
//! `mkdir -p`, `mv` and `rm -r`; copies both ways, of trees and between hosts, with equal
//! checksums; an upload cut by a control-plane restart that resumes where the host was;
//! edits that save, and edits that refuse to overwrite a file that changed meanwhile; one
//! clear line for paths outside the root.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use zpanel_tests::files::{add_host_serving, sha256_file, write_random};
use zpanel_tests::{Cli, ControlPlane, Daemon, bin, memory_kib, stderr, stdout};

const MIB: usize = 1024 * 1024;
const HOST: &str = "files";

struct Setup {
    cp: ControlPlane,
    cli: Cli,
    _daemon: Daemon,
    /// Holds `root` (served by the host), `local` (this machine's side) and whatever a test
    /// puts outside the root.
    dir: tempfile::TempDir,
    root: PathBuf,
    local: PathBuf,
}

async fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("zpanel-files-cli-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let local = dir.path().join("local");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&local).unwrap();
    let cp = ControlPlane::start().await;
    let cli = cp.admin_cli().await;
    let daemon = add_host_serving(&cp, &cli, HOST, &[&root]).await;
    Setup {
        cp,
        cli,
        _daemon: daemon,
        dir,
        root,
        local,
    }
}

impl Setup {
    /// `files:ROOT/relative` (`files:ROOT` for "").
    fn remote(&self, relative: &str) -> String {
        let root = self.root.display();
        if relative.is_empty() {
            format!("{HOST}:{root}")
        } else {
            format!("{HOST}:{root}/{relative}")
        }
    }

    /// Runs `zpanel` in the local directory, with `EDITOR` set when given.
    async fn run(&self, args: &[&str], editor: Option<&Path>) -> Output {
        let mut command = self.cli.command(args);
        command
            .current_dir(&self.local)
            .env_remove("VISUAL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(editor) = editor {
            command.env("EDITOR", editor);
        }
        command.output().await.unwrap()
    }

    /// Runs `zpanel`, which must succeed; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None).await;
        assert!(
            out.status.success(),
            "zpanel {args:?} failed: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs `zpanel`, which must fail with exactly one line on stderr; that line.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None).await;
        assert!(!out.status.success(), "zpanel {args:?} succeeded");
        let text = stderr(&out);
        assert_eq!(text.lines().count(), 1, "not one line: {text:?}");
        text.trim_end().to_string()
    }
}

/// An executable script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The files in `dir` whose name starts with a dot, with their sizes: the temporary files
/// of transfers in progress, or left behind.
fn hidden_files(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().ok()?.len();
            name.starts_with('.').then_some((name, size))
        })
        .collect()
}

/// Waits until a transfer's temporary file in `dir` holds at least 16 MiB (the transfer
/// must still be running then); its name.
async fn transfer_under_way(child: &mut tokio::process::Child, dir: &Path) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the transfer ended too soon"
        );
        if let Some((name, size)) = hidden_files(dir).into_iter().next()
            && size >= 16 * MIB as u64
        {
            return name;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transfer never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Setup {
    /// Starts `zpanel ARGS` in the local directory without waiting for it.
    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.cli
            .command(args)
            .current_dir(&self.local)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_cat_mkdir_mv_and_rm_work_on_a_hosts_files() {
    let s = setup().await;
    std::fs::write(s.root.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(s.root.join(".hidden"), "h").unwrap();
    std::fs::create_dir(s.root.join("sub")).unwrap();
    std::os::unix::fs::symlink("a.txt", s.root.join("link")).unwrap();

    assert_eq!(s.ok(&["ls", &s.remote("")]).await, "a.txt\nlink\nsub\n");
    assert_eq!(
        s.ok(&["ls", "--all", &s.remote("")]).await,
        ".hidden\na.txt\nlink\nsub\n"
    );
    // a relative path is under the host's first root
    assert_eq!(s.ok(&["ls", "files:"]).await, "a.txt\nlink\nsub\n");
    assert_eq!(s.ok(&["cat", "files:a.txt"]).await, "alpha\n");
    assert_eq!(s.ok(&["ls", &s.remote("a.txt")]).await, "a.txt\n");

    let long = s.ok(&["ls", "-l", &s.remote("")]).await;
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 3, "{long}");
    assert!(
        lines[0].starts_with("-rw") && lines[0].contains(" 6  ") && lines[0].ends_with("  a.txt"),
        "{long}"
    );
    assert!(
        lines[1].starts_with('l') && lines[1].ends_with("  link -> a.txt"),
        "{long}"
    );
    assert!(
        lines[2].starts_with('d') && lines[2].ends_with("  sub"),
        "{long}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["ls", "--json", &s.remote("")]).await).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["name"], "a.txt");
    assert_eq!(entries[0]["type"], "file");
    assert_eq!(entries[0]["size"], 6);
    assert_eq!(entries[0]["path"], s.root.join("a.txt").to_str().unwrap());
    assert_eq!(entries[1]["type"], "symlink");
    assert_eq!(entries[1]["target"], "a.txt");
    assert_eq!(entries[2]["type"], "directory");

    // a big directory comes in pages (of 10,000), all of it, in name order
    std::fs::create_dir(s.root.join("many")).unwrap();
    let names: Vec<String> = (0..10_500).map(|i| format!("f{i:05}")).collect();
    for name in &names {
        std::fs::write(s.root.join("many").join(name), "").unwrap();
    }
    let listed = s.ok(&["ls", &s.remote("many")]).await;
    assert_eq!(listed.lines().collect::<Vec<_>>(), names);

    s.ok(&["mkdir", "-p", &s.remote("x/y/z")]).await;
    assert!(s.root.join("x/y/z").is_dir());
    s.ok(&["mkdir", "-p", &s.remote("x/y/z")]).await;
    let line = s.fails(&["mkdir", &s.remote("q/r")]).await;
    assert_eq!(
        line,
        format!("zpanel: {}: no such file or directory", s.remote("q/r"))
    );

    // into a directory, then to a new name
    s.ok(&["mv", &s.remote("a.txt"), &s.remote("x/y")]).await;
    assert!(!s.root.join("a.txt").exists());
    assert_eq!(
        std::fs::read_to_string(s.root.join("x/y/a.txt")).unwrap(),
        "alpha\n"
    );
    s.ok(&["mv", &s.remote("x/y/a.txt"), &s.remote("x/renamed.txt")])
        .await;
    assert!(s.root.join("x/renamed.txt").is_file());

    let line = s.fails(&["rm", &s.remote("x")]).await;
    assert_eq!(
        line,
        format!("zpanel: {}: is a directory (use -r)", s.remote("x"))
    );
    s.ok(&["rm", "-r", &s.remote("x")]).await;
    assert!(!s.root.join("x").exists());
    s.ok(&["rm", &s.remote("link")]).await;
    assert!(s.root.join("link").symlink_metadata().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_keep_their_sha256_both_ways_for_trees_and_between_hosts() {
    let s = setup().await;
    let big = s.local.join("big.bin");
    write_random(&big, 50 * MIB, 7);
    let sum = sha256_file(&big);

    s.ok(&["cp", "big.bin", &s.remote("big.bin")]).await;
    assert_eq!(sha256_file(&s.root.join("big.bin")), sum);
    // a directory receives the copy under the source's name
    s.ok(&["mkdir", &s.remote("in")]).await;
    s.ok(&["cp", "big.bin", &s.remote("in")]).await;
    assert_eq!(sha256_file(&s.root.join("in/big.bin")), sum);

    std::fs::create_dir(s.local.join("down")).unwrap();
    s.ok(&["cp", &s.remote("big.bin"), "down"]).await;
    assert_eq!(sha256_file(&s.local.join("down/big.bin")), sum);
    // a local name with a colon
    s.ok(&["cp", &s.remote("big.bin"), "./a:b"]).await;
    assert_eq!(sha256_file(&s.local.join("a:b")), sum);
    assert!(
        hidden_files(&s.root).is_empty(),
        "{:?}",
        hidden_files(&s.root)
    );
    assert!(hidden_files(&s.local.join("down")).is_empty());

    // trees, with -r
    let tree = s.local.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("a.txt"), "a\n").unwrap();
    std::fs::write(tree.join("sub/b.txt"), "b\n").unwrap();
    write_random(&tree.join("sub/deeper/c.bin"), MIB, 3);
    let c_sum = sha256_file(&tree.join("sub/deeper/c.bin"));
    let line = s.fails(&["cp", "tree", &s.remote("tree")]).await;
    assert_eq!(line, "zpanel: tree: is a directory (use -r)");
    s.ok(&["cp", "-r", "tree", &s.remote("")]).await;
    assert_eq!(
        std::fs::read_to_string(s.root.join("tree/sub/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(sha256_file(&s.root.join("tree/sub/deeper/c.bin")), c_sum);
    s.ok(&["cp", "-r", &s.remote("tree"), "back"]).await;
    assert_eq!(
        std::fs::read_to_string(s.local.join("back/a.txt")).unwrap(),
        "a\n"
    );
    assert_eq!(sha256_file(&s.local.join("back/sub/deeper/c.bin")), c_sum);

    // on one host, the host copies
    s.ok(&["cp", &s.remote("big.bin"), &s.remote("copy.bin")])
        .await;
    assert_eq!(sha256_file(&s.root.join("copy.bin")), sum);

    // from one host to another, through the CLI
    let other_root = s.dir.path().join("other");
    std::fs::create_dir(&other_root).unwrap();
    let _other = add_host_serving(&s.cp, &s.cli, "other", &[&other_root]).await;
    let other = format!("other:{}", other_root.display());
    s.ok(&["cp", &s.remote("big.bin"), &format!("{other}/big.bin")])
        .await;
    assert_eq!(sha256_file(&other_root.join("big.bin")), sum);
    s.ok(&["cp", "-r", &s.remote("tree"), &other]).await;
    assert_eq!(
        sha256_file(&other_root.join("tree/sub/deeper/c.bin")),
        c_sum
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_a_control_plane_restart_resumes_where_the_host_was() {
    let mut s = setup().await;
    let big = s.local.join("big.bin");
    write_random(&big, 256 * MIB, 11);
    let sum = sha256_file(&big);

    let mut child = s.spawn(&["cp", "big.bin", &s.remote("big.bin")]);
    let pid = child.id().unwrap();
    let first = transfer_under_way(&mut child, &s.root).await;
    s.cp.restart().await;

    // every temporary file seen from now on is the one the upload started in
    let mut seen = BTreeSet::from([first]);
    let mut peak_kib = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        seen.extend(hidden_files(&s.root).into_iter().map(|(name, _)| name));
        peak_kib = peak_kib.max(memory_kib(pid).1);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "cp failed: {}", stderr(&out));
    assert_eq!(seen.len(), 1, "the upload started over: {seen:?}");
    assert_eq!(sha256_file(&s.root.join("big.bin")), sum);
    assert!(hidden_files(&s.root).is_empty());
    assert!(
        peak_kib < 96 * 1024,
        "zpanel cp held {peak_kib} KiB for a 256 MiB file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_by_a_control_plane_restart_resumes_unless_the_file_changed() {
    let mut s = setup().await;
    let big = s.root.join("big.bin");
    write_random(&big, 256 * MIB, 13);
    let sum = sha256_file(&big);

    let mut child = s.spawn(&["cp", &s.remote("big.bin"), "down.bin"]);
    transfer_under_way(&mut child, &s.local).await;
    s.cp.restart().await;
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "cp failed: {}", stderr(&out));
    assert_eq!(sha256_file(&s.local.join("down.bin")), sum);
    assert!(hidden_files(&s.local).is_empty());

    // the file changes while the connection is down: the download says so and leaves nothing
    let mut child = s.spawn(&["cp", &s.remote("big.bin"), "again.bin"]);
    transfer_under_way(&mut child, &s.local).await;
    s.cp.kill().await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&big)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"more"))
        .unwrap();
    s.cp.restart().await;
    let out = child.wait_with_output().await.unwrap();
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        format!(
            "zpanel: {}: changed on disk during the download; run the command again\n",
            s.remote("big.bin")
        )
    );
    assert!(!s.local.join("again.bin").exists());
    assert!(
        hidden_files(&s.local).is_empty(),
        "{:?}",
        hidden_files(&s.local)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_saves_a_change_and_never_overwrites_a_file_changed_meanwhile() {
    let s = setup().await;
    let conf = s.root.join("app.conf");
    std::fs::write(&conf, "port = 80\n").unwrap();
    let appends = script(
        &s.local,
        "append.sh",
        "echo 'added by the editor' >> \"$1\"\n",
    );

    let out = s
        .run(&["edit", &s.remote("app.conf")], Some(&appends))
        .await;
    assert!(out.status.success(), "edit failed: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "port = 80\nadded by the editor\n"
    );

    // nothing changed, nothing written
    let before = std::fs::metadata(&conf).unwrap().modified().unwrap();
    let unchanged = script(&s.local, "unchanged.sh", "true\n");
    let out = s
        .run(&["edit", &s.remote("app.conf")], Some(&unchanged))
        .await;
    assert!(out.status.success(), "edit failed: {}", stderr(&out));
    assert!(stderr(&out).contains("no changes"), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(&conf).unwrap().modified().unwrap(),
        before
    );

    // someone else changes the file while the editor is open
    let races = script(
        &s.local,
        "races.sh",
        &format!(
            "echo mine >> \"$1\"\n{} exec {HOST} -- sh -c 'echo theirs >> {}'\n",
            bin("zpanel").display(),
            conf.display()
        ),
    );
    let out = s.run(&["edit", &s.remote("app.conf")], Some(&races)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let theirs = "port = 80\nadded by the editor\ntheirs\n";
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), theirs);
    let text = stderr(&out);
    let first = text.lines().next().unwrap();
    assert!(first.contains("changed on disk"), "{text}");
    let kept = first
        .split("kept in ")
        .nth(1)
        .expect("where the edit is kept")
        .to_string();
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "port = 80\nadded by the editor\nmine\n"
    );
    let overwrite = format!("zpanel edit {} --from {kept} --force", s.remote("app.conf"));
    assert!(text.contains(&overwrite), "{text}");

    // the kept edit overwrites the host's file when asked to
    let out = s
        .run(
            &["edit", &s.remote("app.conf"), "--from", &kept, "--force"],
            Some(&unchanged),
        )
        .await;
    assert!(out.status.success(), "edit failed: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "port = 80\nadded by the editor\nmine\n"
    );
    assert!(!Path::new(&kept).exists(), "the kept copy stayed");
    assert!(
        hidden_files(&s.root).is_empty(),
        "{:?}",
        hidden_files(&s.root)
    );

    // a file that does not exist yet is created
    let out = s
        .run(&["edit", &s.remote("new.conf")], Some(&appends))
        .await;
    assert!(out.status.success(), "edit failed: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(s.root.join("new.conf")).unwrap(),
        "added by the editor\n"
    );

    // a symlink is edited through, and stays a symlink
    std::os::unix::fs::symlink("new.conf", s.root.join("link.conf")).unwrap();
    let out = s
        .run(&["edit", &s.remote("link.conf")], Some(&appends))
        .await;
    assert!(out.status.success(), "edit failed: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(s.root.join("new.conf")).unwrap(),
        "added by the editor\nadded by the editor\n"
    );
    let link = s.root.join("link.conf").symlink_metadata().unwrap();
    assert!(link.file_type().is_symlink());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_root_and_missing_files_are_refused_in_one_line() {
    let s = setup().await;
    let outside = s.dir.path().join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, s.root.join("out")).unwrap();
    std::fs::write(s.local.join("here.txt"), "here").unwrap();

    let escape = format!("{HOST}:{}/../outside.txt", s.root.display());
    for (args, path) in [
        (vec!["cat", escape.as_str()], escape.clone()),
        (vec!["ls", "files:/etc"], "files:/etc".into()),
        (
            vec!["cp", "here.txt", "files:/etc/here.txt"],
            "files:/etc/here.txt".into(),
        ),
        (vec!["cp", &escape, "copy.txt"], escape.clone()),
        (vec!["cat", &s.remote("out")], s.remote("out")),
        (vec!["rm", &escape], escape.clone()),
    ] {
        let line = s.fails(&args).await;
        assert_eq!(
            line,
            format!("zpanel: {path}: outside the roots this host serves"),
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert!(!s.local.join("copy.txt").exists());

    let line = s.fails(&["cat", &s.remote("missing.txt")]).await;
    assert_eq!(
        line,
        format!(
            "zpanel: {}: no such file or directory",
            s.remote("missing.txt")
        )
    );
    let line = s.fails(&["cp", "nope.txt", &s.remote("x")]).await;
    assert_eq!(line, "zpanel: nope.txt: no such file or directory");
    let line = s.fails(&["cat", &s.remote("")]).await;
    assert_eq!(line, format!("zpanel: {}: is a directory", s.remote("")));
    let line = s.fails(&["cat", "./here.txt"]).await;
    assert!(line.contains("expected HOST:PATH"), "{line}");
    let line = s.fails(&["ls", "nowhere:/"]).await;
    assert!(line.starts_with("zpanel: nowhere:/: "), "{line}");
}

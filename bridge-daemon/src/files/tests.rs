//! The file service against real directories: a temporary root beside an "outside"
//! directory whose content must never be read, written or changed through the service.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use zpanel_proto::{
    FileChanged, FileChmod, FileChown, FileCopy, FileDelete, FileFind, FileFound, FileInfo,
    FileList, FileListing, FileMkdir, FileRename, FileStat, FileType, FileWatch, file_change,
    file_request,
};
use zpanel_shared::replay::Read;

use super::*;

const SECRET: &[u8] = b"the secret outside the root";

/// A served root and, beside it, a directory outside every root.
struct Fixture {
    _base: TempDir,
    root: PathBuf,
    outside: PathBuf,
    files: Arc<Files>,
}

impl Fixture {
    fn new() -> Fixture {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), SECRET).unwrap();
        std::fs::write(root.join("a/file"), b"inside").unwrap();
        let files = Files::new(std::slice::from_ref(&root)).unwrap();
        Fixture {
            _base: base,
            root,
            outside,
            files,
        }
    }

    /// An absolute path under the root.
    fn at(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root.display())
    }

    async fn op(&self, op: file_request::Op) -> Result<FileReply, FileFailure> {
        self.files.request(FileRequest { op: Some(op) }).await
    }

    async fn stat(&self, path: &str) -> Result<FileInfo, FileFailure> {
        let op = file_request::Op::Stat(FileStat { path: path.into() });
        self.op(op).await.map(info)
    }

    async fn list(&self, path: &str, after: &str, limit: u32) -> FileListing {
        let list = FileList {
            path: path.into(),
            after: after.into(),
            limit,
        };
        match self.op(file_request::Op::List(list)).await.unwrap().result {
            Some(file_reply::Result::Listing(listing)) => listing,
            other => panic!("not a listing: {other:?}"),
        }
    }

    async fn find(&self, find: FileFind) -> FileFound {
        match self.op(file_request::Op::Find(find)).await.unwrap().result {
            Some(file_reply::Result::Found(found)) => found,
            other => panic!("not a find result: {other:?}"),
        }
    }

    /// Reads through a read channel, acknowledging like a client; the buffer never holds
    /// more than the window.
    async fn read(&self, request: FileRead) -> Result<(FileInfo, Vec<u8>), FileFailure> {
        let channel = FileChannel::read(&self.files, request);
        let (opened, _) = channel.prepare().await?;
        let Some(open_result::Reply::File(FileReply {
            result: Some(file_reply::Result::Info(info)),
        })) = opened.reply
        else {
            panic!("no info in {opened:?}");
        };
        let output = channel.output(StreamKind::Stdout).unwrap();
        let mut content = Vec::new();
        loop {
            let read = tokio::time::timeout(
                Duration::from_secs(20),
                output.read_at(content.len() as u64, 1 << 20),
            )
            .await
            .expect("the read went on")
            .unwrap();
            match read {
                Read::Data(bytes) => content.extend_from_slice(&bytes),
                Read::Eof => break,
                Read::Pending => unreachable!(),
            }
            let held = output.with(|buffer| buffer.end() - buffer.acked());
            assert!(
                held <= DEFAULT_WINDOW_BYTES as u64,
                "{held} bytes unacknowledged"
            );
            output
                .with(|buffer| buffer.ack(content.len() as u64))
                .unwrap();
        }
        Ok((info, content))
    }

    /// Starts a write: the channel and where its input resumes.
    async fn start_write(
        &self,
        request: FileWrite,
    ) -> Result<(Arc<FileChannel>, u64), FileFailure> {
        let channel = FileChannel::write(&self.files, request);
        let (opened, _) = channel.prepare().await?;
        Ok((channel, opened.stdin_offset))
    }

    /// Writes `content` whole and returns the verdict.
    async fn write(&self, request: FileWrite, content: &[u8]) -> Result<FileWritten, FileFailure> {
        let (channel, from) = self.start_write(request).await?;
        Ok(finish_write(&channel, from, content).await)
    }
}

fn info(reply: FileReply) -> FileInfo {
    match reply.result {
        Some(file_reply::Result::Info(info)) => info,
        other => panic!("not an info: {other:?}"),
    }
}

fn stdin(offset: u64, payload: &[u8], eof: bool) -> StreamChunk {
    StreamChunk {
        stream: StreamKind::Stdin as i32,
        offset,
        payload: Bytes::copy_from_slice(payload),
        eof,
    }
}

/// Sends `content` from `from` (in chunks, within the input window) with the end of
/// input, and waits for `FileDone`.
async fn finish_write(channel: &Arc<FileChannel>, from: u64, content: &[u8]) -> FileWritten {
    let written = channel.input_written().unwrap();
    let mut offset = from;
    for piece in content[from as usize..].chunks(64 * 1024) {
        let mut written = written.clone();
        let room = offset.saturating_sub(DEFAULT_WINDOW_BYTES as u64 / 2);
        written.wait_for(|w| *w >= room).await.unwrap();
        channel.input(stdin(offset, piece, false)).unwrap();
        offset += piece.len() as u64;
    }
    channel.input(stdin(offset, b"", true)).unwrap();
    let (outbound, mut frames) = mpsc::channel(8);
    let sent = tokio::time::timeout(Duration::from_secs(20), channel.finish(7, &outbound)).await;
    sent.expect("the write ended").unwrap();
    match frames.recv().await {
        Some(Body::FileDone(FileDone {
            channel_id: 7,
            result: Some(result),
        })) => result,
        other => panic!("not a FileDone: {other:?}"),
    }
}

fn sha256(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

fn write_request(path: &str) -> FileWrite {
    FileWrite {
        path: path.into(),
        ..FileWrite::default()
    }
}

/// Temporary files left in a directory.
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".zpanel-"))
        .collect()
}

fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, link, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        // set_path refuses `..`; write the name bytes as a hostile archive would.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if !link.is_empty() {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

// === the attack table ===

/// What an attack tries, and the refusal it must get.
struct Attack {
    what: &'static str,
    expect: FileError,
}

async fn attempt(fx: &Fixture, what: &str) -> Result<(), FileFailure> {
    let root = fx.root.display().to_string();
    let outside = fx.outside.display().to_string();
    let read = |path: String| FileRead {
        path,
        ..FileRead::default()
    };
    let tar_write = |path: &str| FileWrite {
        path: path.into(),
        tar: true,
        parents: true,
        ..FileWrite::default()
    };
    let unpack = |entries: Vec<u8>| async move {
        let written = fx.write(tar_write(&fx.at("unpacked")), &entries).await?;
        match written.error() {
            FileError::None => Ok(()),
            kind => Err(FileFailure::new(kind, written.message)),
        }
    };
    match what {
        "relative ../" => fx.read(read("../outside/secret".into())).await.map(drop),
        "root/.." => fx
            .read(read(format!("{root}/../outside/secret")))
            .await
            .map(drop),
        "a/../../" => fx
            .read(read(fx.at("a/../../outside/secret")))
            .await
            .map(drop),
        "absolute escape" => fx.read(read(format!("{outside}/secret"))).await.map(drop),
        "/etc/passwd" => fx.read(read("/etc/passwd".into())).await.map(drop),
        "%2e%2e stays a name" => fx
            .read(read(fx.at("%2e%2e/outside/secret")))
            .await
            .map(drop),
        "NUL" => fx.read(read(fx.at("a/file\0/../../x"))).await.map(drop),
        "symlink to /etc" => fx.read(read(fx.at("etc/passwd"))).await.map(drop),
        "symlink to an outside file" => fx.read(read(fx.at("secret-link"))).await.map(drop),
        "symlink to a parent outside" => fx.read(read(fx.at("up/outside/secret"))).await.map(drop),
        "magic link" => fx.read(read(fx.at("magic/secret"))).await.map(drop),
        "write through a symlink" => fx
            .write(write_request(&fx.at("out/new")), b"x")
            .await
            .map(drop),
        "mkdir through a symlink" => {
            let mkdir = FileMkdir {
                path: fx.at("out/newdir"),
                parents: true,
                mode: 0,
            };
            fx.op(file_request::Op::Mkdir(mkdir)).await.map(drop)
        }
        "rename out of the root" => {
            let rename = FileRename {
                from: fx.at("a/file"),
                to: format!("{outside}/moved"),
                overwrite: true,
            };
            fx.op(file_request::Op::Rename(rename)).await.map(drop)
        }
        "rename through a symlink" => {
            let rename = FileRename {
                from: fx.at("a/file"),
                to: fx.at("out/moved"),
                overwrite: true,
            };
            fx.op(file_request::Op::Rename(rename)).await.map(drop)
        }
        "copy from outside" => {
            let copy = FileCopy {
                from: format!("{outside}/secret"),
                to: fx.at("copied"),
                ..FileCopy::default()
            };
            fx.op(file_request::Op::Copy(copy)).await.map(drop)
        }
        "copy through a symlink" => {
            let copy = FileCopy {
                from: fx.at("secret-link"),
                to: fx.at("copied"),
                ..FileCopy::default()
            };
            fx.op(file_request::Op::Copy(copy)).await.map(drop)
        }
        "delete a root" | "delete root/." | "delete a/.." => {
            let path = match what {
                "delete a root" => root.clone(),
                "delete root/." => format!("{root}/."),
                _ => fx.at("a/.."),
            };
            let delete = FileDelete {
                path,
                recursive: true,
            };
            fx.op(file_request::Op::Delete(delete)).await.map(drop)
        }
        "delete through a symlink" => {
            let delete = FileDelete {
                path: fx.at("out/secret"),
                recursive: true,
            };
            fx.op(file_request::Op::Delete(delete)).await.map(drop)
        }
        "chmod a symlink" => {
            let chmod = FileChmod {
                path: fx.at("secret-link"),
                mode: 0o777,
            };
            fx.op(file_request::Op::Chmod(chmod)).await.map(drop)
        }
        "chown through a symlink" => {
            let chown = FileChown {
                path: fx.at("out/secret"),
                owner: "0".into(),
                group: String::new(),
            };
            fx.op(file_request::Op::Chown(chown)).await.map(drop)
        }
        "very long name" => fx.read(read(fx.at(&"n".repeat(300)))).await.map(drop),
        "very long path" => fx.read(read(fx.at(&"d/".repeat(2100)))).await.map(drop),
        "directory read as a file" => fx.read(read(fx.at("a"))).await.map(drop),
        "a fifo is not opened" => fx.read(read(fx.at("fifo"))).await.map(drop),
        "directory written as a file" => fx.write(write_request(&fx.at("a")), b"x").await.map(drop),
        "list a file" => {
            let list = FileList {
                path: fx.at("a/file"),
                ..FileList::default()
            };
            fx.op(file_request::Op::List(list)).await.map(drop)
        }
        "tar entry with .." => {
            let entries = [("../escaped", tar::EntryType::Regular, "", b"x" as &[u8])];
            unpack(tar_of(&entries)).await
        }
        "tar entry with an absolute path" => {
            let path = format!("{outside}/escaped");
            let path: &'static str = Box::leak(path.into_boxed_str());
            unpack(tar_of(&[(
                path,
                tar::EntryType::Regular,
                "",
                b"x" as &[u8],
            )]))
            .await
        }
        "tar symlink out" => {
            let entries = [(
                "link",
                tar::EntryType::Symlink,
                "../../outside",
                b"" as &[u8],
            )];
            unpack(tar_of(&entries)).await
        }
        "tar absolute symlink" => {
            let entries = [("link", tar::EntryType::Symlink, "/etc", b"" as &[u8])];
            unpack(tar_of(&entries)).await
        }
        "tar entry through its own symlink" => {
            let entries = [
                ("dot", tar::EntryType::Symlink, ".", b"" as &[u8]),
                ("dot/x", tar::EntryType::Regular, "", b"x"),
            ];
            unpack(tar_of(&entries)).await
        }
        "tar hard link out" => {
            let entries = [(
                "hard",
                tar::EntryType::Link,
                "../../outside/secret",
                b"" as &[u8],
            )];
            unpack(tar_of(&entries)).await
        }
        other => panic!("no such attack: {other}"),
    }
}

#[tokio::test]
async fn attacks_are_refused_and_nothing_outside_is_touched() {
    let fx = Fixture::new();
    symlink("/etc", fx.root.join("etc")).unwrap();
    symlink(fx.outside.join("secret"), fx.root.join("secret-link")).unwrap();
    symlink("..", fx.root.join("up")).unwrap();
    symlink(&fx.outside, fx.root.join("out")).unwrap();
    symlink("/proc/self/cwd", fx.root.join("magic")).unwrap();
    let root_dir = rustix::fs::open(
        &fx.root,
        rustix::fs::OFlags::PATH,
        rustix::fs::Mode::empty(),
    );
    rustix::fs::mkfifoat(
        root_dir.unwrap(),
        "fifo",
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let attacks = [
        ("relative ../", FileError::OutsideRoots),
        ("root/..", FileError::OutsideRoots),
        ("a/../../", FileError::OutsideRoots),
        ("absolute escape", FileError::OutsideRoots),
        ("/etc/passwd", FileError::OutsideRoots),
        ("%2e%2e stays a name", FileError::NotFound),
        ("NUL", FileError::Invalid),
        ("symlink to /etc", FileError::OutsideRoots),
        ("symlink to an outside file", FileError::OutsideRoots),
        ("symlink to a parent outside", FileError::OutsideRoots),
        ("magic link", FileError::OutsideRoots),
        ("write through a symlink", FileError::OutsideRoots),
        ("mkdir through a symlink", FileError::OutsideRoots),
        ("rename out of the root", FileError::OutsideRoots),
        ("rename through a symlink", FileError::OutsideRoots),
        ("copy from outside", FileError::OutsideRoots),
        ("copy through a symlink", FileError::OutsideRoots),
        ("delete a root", FileError::Invalid),
        ("delete root/.", FileError::Invalid),
        ("delete a/..", FileError::Invalid),
        ("delete through a symlink", FileError::OutsideRoots),
        ("chmod a symlink", FileError::Invalid),
        ("chown through a symlink", FileError::OutsideRoots),
        ("very long name", FileError::Invalid),
        ("very long path", FileError::Invalid),
        ("directory read as a file", FileError::IsADirectory),
        ("a fifo is not opened", FileError::Invalid),
        ("directory written as a file", FileError::IsADirectory),
        ("list a file", FileError::NotADirectory),
        ("tar entry with ..", FileError::OutsideRoots),
        ("tar entry with an absolute path", FileError::OutsideRoots),
        ("tar symlink out", FileError::OutsideRoots),
        ("tar absolute symlink", FileError::OutsideRoots),
        ("tar entry through its own symlink", FileError::OutsideRoots),
        ("tar hard link out", FileError::OutsideRoots),
    ]
    .map(|(what, expect)| Attack { what, expect });
    assert!(attacks.len() >= 20);
    let secret_mode = std::fs::metadata(fx.outside.join("secret"))
        .unwrap()
        .permissions();
    for attack in &attacks {
        let failure = match attempt(&fx, attack.what).await {
            Ok(()) => panic!("{}: not refused", attack.what),
            Err(failure) => failure,
        };
        assert_eq!(
            failure.kind, attack.expect,
            "{}: {}",
            attack.what, failure.message
        );
        let message = &failure.message;
        assert!(
            !message.is_empty() && !message.contains('\n') && !message.ends_with('.'),
            "{}: {message:?} is not one line",
            attack.what
        );
        assert!(
            !message.starts_with(char::is_uppercase),
            "{}: {message}",
            attack.what
        );
        // nothing outside changed
        let names: Vec<_> = std::fs::read_dir(&fx.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{}: outside changed", attack.what);
        assert_eq!(std::fs::read(fx.outside.join("secret")).unwrap(), SECRET);
        let mode = std::fs::metadata(fx.outside.join("secret"))
            .unwrap()
            .permissions();
        assert_eq!(mode, secret_mode, "{}", attack.what);
    }
    assert!(!fx.root.parent().unwrap().join("escaped").exists());
    // the symlinks themselves are described, never followed
    let link = fx.stat(&fx.at("secret-link")).await.unwrap();
    assert_eq!(link.r#type(), FileType::Symlink);
    assert_eq!(
        link.symlink_target,
        fx.outside.join("secret").display().to_string()
    );
    // deleting a symlink that points out removes the symlink only
    let delete = FileDelete {
        path: fx.at("out"),
        recursive: false,
    };
    fx.op(file_request::Op::Delete(delete)).await.unwrap();
    assert_eq!(std::fs::read(fx.outside.join("secret")).unwrap(), SECRET);
    // `%2e%2e` is an ordinary name: made inside the root
    let mkdir = FileMkdir {
        path: fx.at("%2e%2e"),
        parents: false,
        mode: 0,
    };
    fx.op(file_request::Op::Mkdir(mkdir)).await.unwrap();
    assert!(fx.root.join("%2e%2e").is_dir());
}

#[tokio::test]
async fn a_hard_link_inside_a_root_is_inside() {
    // A hard link is the file itself, not a pointer: one made inside a root (by someone
    // who could already read the file) is served like any file there.
    let fx = Fixture::new();
    std::fs::hard_link(fx.outside.join("secret"), fx.root.join("hard")).unwrap();
    let read = FileRead {
        path: fx.at("hard"),
        ..FileRead::default()
    };
    assert_eq!(fx.read(read).await.unwrap().1, SECRET);
}

#[test]
fn a_symlink_swapped_in_after_a_check_never_leads_out() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.root.join("x")).unwrap();
    std::fs::write(fx.root.join("x/secret"), b"inside").unwrap();
    symlink(&fx.outside, fx.root.join("y")).unwrap();
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (stop, swaps) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let swapper = {
        let (root, stop, swaps) = (fx.root.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let dir = rustix::fs::open(&root, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                rustix::fs::renameat_with(&dir, "x", &dir, "y", rustix::fs::RenameFlags::EXCHANGE)
                    .unwrap();
                swaps.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while swaps.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let roots = fx.files.roots.clone();
    let (mut inside, mut refused) = (0, 0);
    for attempt in 0..100_000 {
        if attempt >= 3000 && inside > 0 && refused > 0 {
            break;
        }
        let read = FileRead {
            path: fx.at("x/secret"),
            ..FileRead::default()
        };
        match transfer::open_read(&roots, &read) {
            Ok((_, transfer::Source::File { file, .. })) => {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut content).unwrap();
                assert_eq!(content, b"inside", "read outside the root");
                inside += 1;
            }
            Ok(_) => unreachable!(),
            Err(failure) => {
                assert!(
                    matches!(failure.kind, FileError::OutsideRoots | FileError::NotFound),
                    "{failure:?}"
                );
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    assert!(
        inside > 0 && refused > 0,
        "inside {inside}, refused {refused}"
    );
}

// === requests ===

#[tokio::test]
async fn listings_come_in_name_order_by_pages() {
    let fx = Fixture::new();
    let dir = fx.root.join("many");
    std::fs::create_dir(&dir).unwrap();
    for n in (0..25).rev() {
        std::fs::write(dir.join(format!("f{n:02}")), vec![b'x'; n]).unwrap();
    }
    symlink("f00", dir.join("link")).unwrap();
    let path = fx.at("many");
    let first = fx.list(&path, "", 10).await;
    assert_eq!(first.directory.as_ref().unwrap().path, path);
    let names: Vec<_> = first.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        (0..10).map(|n| format!("f{n:02}")).collect::<Vec<_>>()
    );
    assert_eq!(first.next_after, "f09");
    assert_eq!(first.entries[3].size, 3);
    assert_eq!(first.entries[3].r#type(), FileType::File);
    assert_eq!(first.entries[3].version.len(), 16);
    assert!(!first.entries[3].owner.is_empty() && first.entries[3].modified_ns > 0);
    let second = fx.list(&path, &first.next_after, 10).await;
    assert_eq!(second.entries[0].path, "f10");
    let last = fx.list(&path, &second.next_after, 10).await;
    let names: Vec<_> = last.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["f20", "f21", "f22", "f23", "f24", "link"]);
    assert_eq!(last.next_after, "");
    assert_eq!(last.entries[5].symlink_target, "f00");
    // the default page holds everything here
    assert_eq!(fx.list(&path, "", 0).await.entries.len(), 26);

    // pages of a larger directory, walked to the end, hold every name once in order
    let dir = fx.root.join("more");
    std::fs::create_dir(&dir).unwrap();
    let mut expected: Vec<String> = (0..2000u32)
        .map(|n| format!("{:x}", n.wrapping_mul(2_654_435_761)))
        .collect();
    for name in &expected {
        std::fs::write(dir.join(name), b"").unwrap();
    }
    expected.sort();
    let (path, mut after, mut seen) = (fx.at("more"), String::new(), Vec::new());
    loop {
        let page = fx.list(&path, &after, 300).await;
        assert!(page.entries.len() <= 300);
        seen.extend(page.entries.into_iter().map(|e| e.path));
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn names_change_through_their_directory() {
    let fx = Fixture::new();
    let mkdir = FileMkdir {
        path: fx.at("new/deep/dir"),
        parents: true,
        mode: 0o700,
    };
    let made = info(fx.op(file_request::Op::Mkdir(mkdir.clone())).await.unwrap());
    assert_eq!((made.r#type(), made.mode), (FileType::Directory, 0o700));
    // again with parents: fine; without: it exists
    fx.op(file_request::Op::Mkdir(mkdir.clone())).await.unwrap();
    let again = FileMkdir {
        parents: false,
        ..mkdir
    };
    let exists = fx.op(file_request::Op::Mkdir(again)).await.unwrap_err();
    assert_eq!(exists.kind, FileError::Exists);

    let rename = |from: &str, to: &str, overwrite| {
        file_request::Op::Rename(FileRename {
            from: fx.at(from),
            to: fx.at(to),
            overwrite,
        })
    };
    std::fs::write(fx.root.join("other"), b"other").unwrap();
    let refused = fx.op(rename("a/file", "other", false)).await.unwrap_err();
    assert_eq!(refused.kind, FileError::Exists);
    assert_eq!(std::fs::read(fx.root.join("other")).unwrap(), b"other");
    let moved = info(fx.op(rename("a/file", "other", true)).await.unwrap());
    assert_eq!((moved.path, moved.size), (fx.at("other"), 6));

    let copy = |from: &str, to: &str, recursive| {
        file_request::Op::Copy(FileCopy {
            from: fx.at(from),
            to: fx.at(to),
            recursive,
            overwrite: false,
        })
    };
    std::fs::write(fx.root.join("a/b/leaf"), b"leaf").unwrap();
    std::fs::set_permissions(
        fx.root.join("a/b/leaf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    symlink("leaf", fx.root.join("a/b/leaf-link")).unwrap();
    let refused = fx.op(copy("a", "a-copy", false)).await.unwrap_err();
    assert_eq!(refused.kind, FileError::IsADirectory);
    fx.op(copy("a", "a-copy", true)).await.unwrap();
    assert_eq!(
        std::fs::read(fx.root.join("a-copy/b/leaf")).unwrap(),
        b"leaf"
    );
    let mode = std::fs::metadata(fx.root.join("a-copy/b/leaf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(
        std::fs::read_link(fx.root.join("a-copy/b/leaf-link")).unwrap(),
        Path::new("leaf")
    );
    // a copy into itself does not walk into the copy
    fx.op(copy("a", "a/inner", true)).await.unwrap();
    assert!(fx.root.join("a/inner/b/leaf").exists());
    assert!(!fx.root.join("a/inner/inner").exists());
    let file = info(fx.op(copy("other", "a/other-copy", false)).await.unwrap());
    assert_eq!(file.size, 6);
    assert!(temps(&fx.root.join("a")).is_empty());

    let chmod = FileChmod {
        path: fx.at("other"),
        mode: 0o600,
    };
    assert_eq!(
        info(fx.op(file_request::Op::Chmod(chmod)).await.unwrap()).mode,
        0o600
    );
    let own = fx.stat(&fx.at("other")).await.unwrap();
    let chown = FileChown {
        path: fx.at("other"),
        owner: own.owner.clone(),
        group: own.group.clone(),
    };
    let chowned = info(fx.op(file_request::Op::Chown(chown)).await.unwrap());
    assert_eq!((chowned.owner, chowned.group), (own.owner, own.group));
    let chown = FileChown {
        path: fx.at("other"),
        owner: "no-such-user-zp".into(),
        group: String::new(),
    };
    let refused = fx.op(file_request::Op::Chown(chown)).await.unwrap_err();
    assert_eq!(refused.kind, FileError::Invalid);

    let delete = |path: &str, recursive| {
        file_request::Op::Delete(FileDelete {
            path: fx.at(path),
            recursive,
        })
    };
    let refused = fx.op(delete("a", false)).await.unwrap_err();
    assert_eq!(refused.kind, FileError::IsADirectory);
    let deleted = info(fx.op(delete("a", true)).await.unwrap());
    assert_eq!(deleted.r#type(), FileType::Directory);
    assert!(!fx.root.join("a").exists());
    let gone = fx.op(delete("a", true)).await.unwrap_err();
    assert_eq!(gone.kind, FileError::NotFound);
    assert!(gone.message.contains(&fx.at("a")), "{}", gone.message);
}

#[tokio::test]
async fn find_matches_names_and_content_within_its_bounds() {
    let fx = Fixture::new();
    for n in 0..30 {
        let text = if n % 3 == 0 { "needle here" } else { "hay" };
        std::fs::write(fx.root.join(format!("a/b/f{n:02}.txt")), text).unwrap();
    }
    std::fs::write(fx.root.join("a/b/skip.log"), "needle").unwrap();
    let big = std::fs::File::create(fx.root.join("a/big.txt")).unwrap();
    big.set_len(17 * 1024 * 1024).unwrap();
    let find = FileFind {
        path: fx.at("a"),
        name_glob: "*.txt".into(),
        content: String::new(),
        limit: 5,
    };
    let found = fx.find(find.clone()).await;
    assert_eq!(found.matches.len(), 5);
    assert!(found.truncated);
    assert_eq!(found.matches[0].path, fx.at("a/b/f00.txt"));
    let found = fx
        .find(FileFind {
            content: "needle".into(),
            limit: 0,
            ..find.clone()
        })
        .await;
    let names: Vec<_> = found.matches.iter().map(|m| m.path.clone()).collect();
    let wanted: Vec<_> = (0..30)
        .step_by(3)
        .map(|n| fx.at(&format!("a/b/f{n:02}.txt")))
        .collect();
    assert_eq!(names, wanted);
    assert!(!found.truncated);
    let bad = FileFind {
        name_glob: "[".into(),
        ..find
    };
    let refused = fx.op(file_request::Op::Find(bad)).await.unwrap_err();
    assert_eq!(refused.kind, FileError::Invalid);
}

// === reads ===

#[tokio::test]
async fn reads_stream_a_range_and_stop_at_the_size_when_opened() {
    let fx = Fixture::new();
    let content: Vec<u8> = (0..10 * 1024 * 1024).map(|n| (n % 251) as u8).collect();
    std::fs::write(fx.root.join("big"), &content).unwrap();
    let read = FileRead {
        path: fx.at("big"),
        ..FileRead::default()
    };
    let (info, whole) = fx.read(read.clone()).await.unwrap();
    assert_eq!(
        (info.size, whole.len()),
        (content.len() as u64, content.len())
    );
    assert!(whole == content);

    let range = FileRead {
        offset: 1000,
        length: 5000,
        ..read.clone()
    };
    let channel = FileChannel::read(&fx.files, range);
    channel.prepare().await.unwrap();
    assert_eq!(channel.origin(), 1000);
    let output = channel.output(StreamKind::Stdout).unwrap();
    let Read::Data(first) = output.read_at(0, 1 << 20).await.unwrap() else {
        panic!("no data");
    };
    assert_eq!(&first[..], &content[1000..1000 + first.len()]);

    // growing after the open changes nothing of what is sent
    let mut growing = std::fs::OpenOptions::new()
        .append(true)
        .open(fx.root.join("a/file"))
        .unwrap();
    let grow = FileRead {
        path: fx.at("a/file"),
        ..FileRead::default()
    };
    let channel = FileChannel::read(&fx.files, grow);
    channel.prepare().await.unwrap();
    std::io::Write::write_all(&mut growing, b" and more").unwrap();
    let output = channel.output(StreamKind::Stdout).unwrap();
    let mut got = Vec::new();
    while let Read::Data(bytes) = output.read_at(got.len() as u64, 1 << 20).await.unwrap() {
        got.extend_from_slice(&bytes);
    }
    assert_eq!(got, b"inside");

    let stale = FileRead {
        version: "0000000000000000".into(),
        ..read
    };
    assert_eq!(fx.read(stale).await.unwrap_err().kind, FileError::Conflict);
}

#[tokio::test]
async fn directories_travel_as_tar_both_ways() {
    let fx = Fixture::new();
    std::fs::write(fx.root.join("a/b/leaf"), b"leaf").unwrap();
    symlink("../file", fx.root.join("a/b/link")).unwrap();
    let read = FileRead {
        path: fx.at("a"),
        tar: true,
        ..FileRead::default()
    };
    let (info, archive) = fx.read(read).await.unwrap();
    assert_eq!(info.r#type(), FileType::Directory);
    let mut names = Vec::new();
    for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert_eq!(names, ["a", "a/b", "a/b/leaf", "a/b/link", "a/file"]);

    let write = FileWrite {
        path: fx.at("restored/here"),
        tar: true,
        parents: true,
        ..FileWrite::default()
    };
    let written = fx.write(write, &archive).await.unwrap();
    assert_eq!(written.error(), FileError::None, "{}", written.message);
    assert_eq!(written.sha256, sha256(&archive));
    let here = fx.root.join("restored/here");
    assert_eq!(std::fs::read(here.join("a/b/leaf")).unwrap(), b"leaf");
    assert_eq!(std::fs::read(here.join("a/b/link")).unwrap(), b"inside");
}

// === writes ===

#[tokio::test]
async fn a_write_commits_at_the_end_of_input() {
    let fx = Fixture::new();
    let content = vec![b'z'; 6 * 1024 * 1024];
    let request = FileWrite {
        sha256: sha256(&content),
        ..write_request(&fx.at("new/file"))
    };
    let missing_dir = fx.write(request.clone(), &content).await.unwrap_err();
    assert_eq!(missing_dir.kind, FileError::NotFound);
    let request = FileWrite {
        parents: true,
        ..request
    };
    let written = fx.write(request, &content).await.unwrap();
    assert_eq!(written.error(), FileError::None, "{}", written.message);
    assert_eq!(written.sha256, sha256(&content));
    let info = written.info.unwrap();
    assert_eq!((info.size, info.mode), (content.len() as u64, 0o644));
    assert!(std::fs::read(fx.root.join("new/file")).unwrap() == content);
    assert!(temps(&fx.root.join("new")).is_empty());

    // replacing keeps the mode
    std::fs::set_permissions(
        fx.root.join("a/file"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let written = fx
        .write(write_request(&fx.at("a/file")), b"replaced")
        .await
        .unwrap();
    assert_eq!(written.info.unwrap().mode, 0o600);
    assert_eq!(std::fs::read(fx.root.join("a/file")).unwrap(), b"replaced");
}

#[tokio::test]
async fn a_refused_write_leaves_the_target_as_it_was() {
    let fx = Fixture::new();
    let target = fx.root.join("a/file");
    let version = fx.stat(&fx.at("a/file")).await.unwrap().version;

    // the file changed since the version the writer read: refused at once...
    std::fs::write(&target, b"changed by someone").unwrap();
    let stale = FileWrite {
        expected_version: version.clone(),
        ..write_request(&fx.at("a/file"))
    };
    let refused = fx.write(stale.clone(), b"mine").await.unwrap_err();
    assert_eq!(refused.kind, FileError::Conflict);
    // ...or at the commit, when it changes while the content arrives
    let current = fx.stat(&fx.at("a/file")).await.unwrap().version;
    let (channel, _) = fx
        .start_write(FileWrite {
            expected_version: current,
            ..stale
        })
        .await
        .unwrap();
    std::fs::write(&target, b"changed again!").unwrap();
    let written = finish_write(&channel, 0, b"mine").await;
    assert_eq!(written.error(), FileError::Conflict, "{}", written.message);
    assert_eq!(std::fs::read(&target).unwrap(), b"changed again!");

    // create only
    let create_only = FileWrite {
        create_only: true,
        ..write_request(&fx.at("a/file"))
    };
    let refused = fx.write(create_only, b"mine").await.unwrap_err();
    assert_eq!(refused.kind, FileError::Exists);
    let (channel, _) = fx
        .start_write(FileWrite {
            create_only: true,
            ..write_request(&fx.at("a/late"))
        })
        .await
        .unwrap();
    std::fs::write(fx.root.join("a/late"), b"first").unwrap();
    let written = finish_write(&channel, 0, b"mine").await;
    assert_eq!(written.error(), FileError::Exists);
    assert_eq!(std::fs::read(fx.root.join("a/late")).unwrap(), b"first");

    // a wrong checksum
    let checked = FileWrite {
        sha256: sha256(b"something else"),
        ..write_request(&fx.at("a/file"))
    };
    let written = fx.write(checked, b"mine").await.unwrap();
    assert_eq!(written.error(), FileError::Checksum);
    assert!(written.message.contains("sha256"), "{}", written.message);
    assert_eq!(std::fs::read(&target).unwrap(), b"changed again!");

    // a channel that drops before the end of input
    let (channel, _) = fx
        .start_write(write_request(&fx.at("a/file")))
        .await
        .unwrap();
    channel.input(stdin(0, b"half", false)).unwrap();
    channel.detach();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read(&target).unwrap(), b"changed again!");
    assert!(
        temps(&fx.root.join("a")).is_empty(),
        "{:?}",
        temps(&fx.root.join("a"))
    );
}

#[tokio::test]
async fn an_interrupted_upload_resumes_where_it_stopped() {
    let fx = Fixture::new();
    let content: Vec<u8> = (0..300_000u32).map(|n| (n % 7) as u8).collect();
    let request = FileWrite {
        upload_id: "u1".into(),
        sha256: sha256(&content),
        ..write_request(&fx.at("a/upload"))
    };
    let (channel, from) = fx.start_write(request.clone()).await.unwrap();
    assert_eq!(from, 0);
    channel.input(stdin(0, &content[..100_000], false)).unwrap();
    let mut written = channel.input_written().unwrap();
    written.wait_for(|w| *w == 100_000).await.unwrap();
    channel.detach();

    // another path cannot take the upload over
    let elsewhere = FileWrite {
        path: fx.at("a/elsewhere"),
        ..request.clone()
    };
    let refused = fx.start_write(elsewhere).await.err().unwrap();
    assert_eq!(refused.kind, FileError::Invalid);

    let (channel, from) = fx.start_write(request).await.unwrap();
    assert_eq!(from, 100_000);
    let written = finish_write(&channel, from, &content).await;
    assert_eq!(written.error(), FileError::None, "{}", written.message);
    assert!(std::fs::read(fx.root.join("a/upload")).unwrap() == content);
    assert!(temps(&fx.root.join("a")).is_empty());
}

#[tokio::test]
async fn a_file_commit_checks_the_sha256_learnt_while_sending() {
    let fx = Fixture::new();
    let target = fx.root.join("a/file");
    let content = vec![b'c'; 3 * 1024 * 1024 + 5];
    // FileCommit arrives before the last (eof) chunk: the frame handler only records it
    let committed = async |sha256: String, content: &[u8]| {
        let (channel, _) = fx
            .start_write(write_request(&fx.at("a/file")))
            .await
            .unwrap();
        assert!(channel.commit(sha256));
        finish_write(&channel, 0, content).await
    };

    let written = committed(sha256(b"something else"), &content).await;
    assert_eq!(written.error(), FileError::Checksum, "{}", written.message);
    assert_eq!(std::fs::read(&target).unwrap(), b"inside");
    assert!(temps(&fx.root.join("a")).is_empty());

    let written = committed("not a sha256".into(), &content).await;
    assert_eq!(written.error(), FileError::Invalid, "{}", written.message);
    let written = committed(sha256(&content).to_uppercase(), &content).await;
    assert_eq!(written.error(), FileError::Invalid, "{}", written.message);
    assert_eq!(std::fs::read(&target).unwrap(), b"inside");

    let written = committed(sha256(&content), &content).await;
    assert_eq!(written.error(), FileError::None, "{}", written.message);
    assert_eq!(written.sha256, sha256(&content));
    assert!(std::fs::read(&target).unwrap() == content);

    // only writes take it
    let watch = FileChannel::watch(&fx.files, FileWatch::default());
    assert!(!watch.commit(sha256(b"")));
}

// === watches ===

#[tokio::test]
async fn watches_report_changes_until_the_channel_closes() {
    let fx = Fixture::new();
    let channel = FileChannel::watch(&fx.files, FileWatch { path: fx.at("a") });
    channel.prepare().await.unwrap();
    let (outbound, mut frames) = mpsc::channel(64);
    let forwarding = {
        let channel = channel.clone();
        tokio::spawn(async move { channel.finish(3, &outbound).await })
    };
    let next = async |frames: &mut mpsc::Receiver<Body>| match tokio::time::timeout(
        Duration::from_secs(10),
        frames.recv(),
    )
    .await
    {
        Ok(Some(Body::FileChanged(FileChanged {
            channel_id: 3,
            change: Some(change),
        }))) => (change.kind(), change.path),
        other => panic!("no change: {other:?}"),
    };
    std::fs::write(fx.root.join("a/new"), b"x").unwrap();
    assert_eq!(
        next(&mut frames).await,
        (file_change::Kind::Created, fx.at("a/new"))
    );
    while frames.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    while frames.try_recv().is_ok() {}
    std::fs::remove_file(fx.root.join("a/new")).unwrap();
    assert_eq!(
        next(&mut frames).await,
        (file_change::Kind::Removed, fx.at("a/new"))
    );

    // a burst becomes one change for the directory
    for n in 0..400 {
        std::fs::write(fx.root.join(format!("a/burst{n}")), b"").unwrap();
    }
    let mut changes = vec![next(&mut frames).await];
    while let Ok(Some(Body::FileChanged(more))) =
        tokio::time::timeout(Duration::from_millis(500), frames.recv()).await
    {
        let change = more.change.unwrap();
        changes.push((change.kind(), change.path));
    }
    assert!(changes.len() < 400, "{} changes", changes.len());
    assert!(changes.contains(&(file_change::Kind::Modified, fx.at("a"))));

    channel.detach();
    tokio::time::timeout(Duration::from_secs(5), forwarding)
        .await
        .expect("the watch ended")
        .unwrap();
    assert_eq!(
        fx.files.watches.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_daemon_with_no_roots_serves_no_files() {
    let files = Files::new(&[]).unwrap();
    let stat = FileRequest {
        op: Some(file_request::Op::Stat(FileStat { path: "/".into() })),
    };
    let refused = files.request(stat).await.unwrap_err();
    assert_eq!(refused.kind, FileError::Permission);
    assert!(
        refused.message.contains("[files] roots"),
        "{}",
        refused.message
    );
    let read = FileChannel::read(&files, FileRead::default());
    assert_eq!(
        read.prepare().await.err().unwrap().kind,
        FileError::Permission
    );
    assert!(Files::new(&["relative".into()]).is_err());
}

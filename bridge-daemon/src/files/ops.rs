//! File requests answered at once: list, stat, mkdir, rename, copy, delete, chmod, chown
//! and find. Each runs on a blocking thread; every path is opened beneath its root (see
//! `resolve`) and every change to a name goes through its parent's handle (`*at` calls).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobMatcher};
use memchr::memmem;
use nix::unistd::{Group, User};
use rustix::fs::{AtFlags, Dir, Gid, Mode, OFlags, RawDir, RenameFlags, Uid};
use rustix::io::Errno;
use zpanel_proto::{
    FileChmod, FileChown, FileCopy, FileDelete, FileError, FileFind, FileFound, FileInfo, FileList,
    FileListing, FileMkdir, FileRename, FileReply, file_reply, file_request,
};

use super::info::{Meta, Names};
use super::resolve::{Located, Roots, beneath, child, shown};
use super::{FileFailure, temp_name};

/// Entries of a listing page when the request does not say, and at most.
const LIST_DEFAULT: u32 = 1000;
const LIST_MAX: u32 = 10_000;
/// Bytes of directory entries a listing reads per system call.
const LIST_READ_BUFFER: usize = 64 * 1024;
/// Matches of a find when the request does not say, and at most.
const FIND_DEFAULT: u32 = 100;
const FIND_MAX: u32 = 10_000;
/// A find stops (truncated) after this long or after reading this much content.
const FIND_TIME_BUDGET: Duration = Duration::from_secs(10);
const FIND_BYTES_BUDGET: u64 = 256 * 1024 * 1024;
/// Files larger than this are not searched for content.
const FIND_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Directories deeper than this below the starting point are not walked (find, copy,
/// delete).
pub(super) const MAX_DEPTH: usize = 256;
/// Mode of directories made when the request does not say.
pub(super) const DEFAULT_DIR_MODE: u32 = 0o755;
/// `statfs` magic numbers of the kernel's pseudo file systems, which find and tar skip.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// Runs one request.
pub fn run(roots: &Roots, op: file_request::Op) -> Result<FileReply, FileFailure> {
    use file_request::Op;
    let result = match op {
        Op::List(request) => file_reply::Result::Listing(list(roots, &request)?),
        Op::Stat(request) => file_reply::Result::Info(stat(&roots.locate(&request.path)?)?),
        Op::Mkdir(request) => file_reply::Result::Info(mkdir(roots, &request)?),
        Op::Rename(request) => file_reply::Result::Info(rename(roots, &request)?),
        Op::Copy(request) => file_reply::Result::Info(copy(roots, &request)?),
        Op::Delete(request) => file_reply::Result::Info(delete(roots, &request)?),
        Op::Chmod(request) => file_reply::Result::Info(chmod(roots, &request)?),
        Op::Chown(request) => file_reply::Result::Info(chown(roots, &request)?),
        Op::Find(request) => file_reply::Result::Found(find(roots, &request)?),
    };
    Ok(FileReply {
        result: Some(result),
    })
}

/// The absolute name of `name` in the directory displayed as `dir`.
pub(super) fn joined(dir: &str, name: &str) -> String {
    Path::new(dir).join(name).to_string_lossy().into_owned()
}

fn entry_name(name: &CStr) -> Option<PathBuf> {
    let bytes = name.to_bytes();
    (bytes != b"." && bytes != b"..").then(|| PathBuf::from(OsStr::from_bytes(bytes)))
}

/// The names in a directory (not `.` and `..`).
pub(super) fn names(dir: impl AsFd) -> Result<Vec<PathBuf>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        if let Some(name) = entry_name(entry?.file_name()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The info of a path, not following a final symlink.
pub(super) fn stat(at: &Located) -> Result<FileInfo, FileFailure> {
    let fd = at.open(OFlags::PATH | OFlags::NOFOLLOW)?;
    let meta = Meta::of(&fd).map_err(|e| at.failure(e))?;
    Ok(Names::default().describe(at.display.clone(), &meta, &fd, Path::new("")))
}

/// The info of `name` in `dir` (displayed as `display`).
pub(super) fn stat_at(dir: impl AsFd, name: &str, display: &str) -> Result<FileInfo, FileFailure> {
    let meta = Meta::at(&dir, Path::new(name)).map_err(|e| FileFailure::from_errno(display, e))?;
    Ok(Names::default().describe(display.to_string(), &meta, &dir, Path::new(name)))
}

// === list ===

fn list(roots: &Roots, request: &FileList) -> Result<FileListing, FileFailure> {
    let at = roots.locate(&request.path)?;
    let dir = at.open(OFlags::RDONLY | OFlags::DIRECTORY)?;
    let meta = Meta::of(&dir).map_err(|e| at.failure(e))?;
    let limit = match request.limit {
        0 => LIST_DEFAULT,
        n => n.min(LIST_MAX),
    } as usize;
    // The `limit + 1` smallest names after `after` (one more tells whether a page follows),
    // in a max-heap whose largest is replaced in place: names are compared as raw bytes (as
    // shown, for the rare name that is not UTF-8) and only those that enter the page are
    // copied, into buffers the heap reuses.
    let keep = limit + 1;
    let mut page: BinaryHeap<ListedName> = BinaryHeap::with_capacity(keep.min(1024));
    let mut buffer = Vec::with_capacity(LIST_READ_BUFFER);
    let mut entries_read = RawDir::new(&dir, buffer.spare_capacity_mut());
    while let Some(entry) = entries_read.next() {
        let entry = entry.map_err(|e| at.failure(e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || *shown_bytes(name) <= *request.after.as_bytes() {
            continue;
        }
        if page.len() < keep {
            page.push(ListedName(name.to_vec()));
        } else if let Some(mut largest) = page.peek_mut()
            && shown_cmp(name, &largest.0).is_lt()
        {
            largest.0.clear();
            largest.0.extend_from_slice(name);
        }
    }
    let page = page.into_sorted_vec();
    let more = page.len() > limit;
    let mut names = Names::default();
    let mut entries = Vec::with_capacity(limit.min(page.len()));
    for ListedName(raw) in page.into_iter().take(limit) {
        let name = Path::new(OsStr::from_bytes(&raw));
        // An entry removed since the directory was read is left out.
        let Ok(entry) = Meta::at(&dir, name) else {
            continue;
        };
        let shown_name = String::from_utf8_lossy(&raw).into_owned();
        entries.push(names.describe(shown_name, &entry, &dir, name));
    }
    let next_after = match (more, entries.last()) {
        (true, Some(last)) => last.path.clone(),
        _ => String::new(),
    };
    Ok(FileListing {
        directory: Some(names.info(at.display.clone(), &meta, String::new())),
        entries,
        next_after,
    })
}

/// A name in a listing page, ordered as shown.
#[derive(PartialEq, Eq)]
struct ListedName(Vec<u8>);

impl Ord for ListedName {
    fn cmp(&self, other: &Self) -> Ordering {
        shown_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for ListedName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A name's bytes as shown: itself when it is UTF-8 (no copy), else its lossy form.
fn shown_bytes(name: &[u8]) -> Cow<'_, [u8]> {
    match String::from_utf8_lossy(name) {
        Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
        Cow::Owned(text) => Cow::Owned(text.into_bytes()),
    }
}

/// Names in the order listings show them.
fn shown_cmp(a: &[u8], b: &[u8]) -> Ordering {
    shown_bytes(a).cmp(&shown_bytes(b))
}

// === mkdir ===

/// Makes the directory `at` and every missing one above it (beneath its root); returns an
/// `O_PATH` handle of it.
pub(super) fn make_dirs(at: &Located) -> Result<OwnedFd, FileFailure> {
    let root = at.open_root()?;
    let mut prefix = PathBuf::new();
    for component in at.rel.components() {
        let parent = prefix.clone();
        prefix.push(component);
        let Component::Normal(name) = component else {
            continue;
        };
        match beneath(
            &root,
            &prefix,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        ) {
            Ok(_) => continue,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(at.with_rel(prefix).failure(e)),
        }
        let dir = beneath(
            &root,
            &parent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| at.with_rel(parent.clone()).failure(e))?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(DEFAULT_DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(at.with_rel(prefix).failure(e)),
        }
    }
    beneath(
        &root,
        &at.rel,
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .map_err(|e| at.failure(e))
}

fn mkdir(roots: &Roots, request: &FileMkdir) -> Result<FileInfo, FileFailure> {
    let at = roots.locate(&request.path)?;
    if at.rel.as_os_str().is_empty() && request.parents {
        return stat(&at);
    }
    let (parent, name) = at.split()?;
    let parent = if request.parents {
        make_dirs(&at.with_rel(parent))?
    } else {
        at.with_rel(parent).open(OFlags::PATH | OFlags::DIRECTORY)?
    };
    let mode = match request.mode & 0o7777 {
        0 => DEFAULT_DIR_MODE,
        mode => mode,
    };
    match rustix::fs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(mode)) {
        Ok(()) => {
            if request.mode != 0 {
                // As `mkdir -m`: the mode asked for, whatever the umask.
                let made = child(
                    &parent,
                    Path::new(&name),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                )
                .map_err(|e| at.failure(e))?;
                rustix::fs::fchmod(&made, Mode::from_raw_mode(mode)).map_err(|e| at.failure(e))?;
            }
        }
        Err(Errno::EXIST)
            if request.parents && Meta::at(&parent, Path::new(&name)).is_ok_and(|m| m.is_dir()) => {
        }
        Err(e) => return Err(at.failure(e)),
    }
    stat_at(&parent, &name, &at.display)
}

// === rename ===

fn rename(roots: &Roots, request: &FileRename) -> Result<FileInfo, FileFailure> {
    let from = roots.locate(&request.from)?;
    let to = roots.locate(&request.to)?;
    let (from_dir, from_name) = from.open_parent()?;
    let (to_dir, to_name) = to.open_parent()?;
    let flags = if request.overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(&from_dir, &from_name, &to_dir, &to_name, flags).map_err(
        |e| match e {
            Errno::NOENT => from.failure(e),
            Errno::XDEV => FileFailure::invalid(format!(
                "cannot move {} to {}: they are on different file systems; copy, then delete",
                shown(&from.display),
                shown(&to.display)
            )),
            Errno::INVAL => FileFailure::invalid(format!(
                "cannot move {} to {}: a directory cannot move into itself (or this file system \
                 cannot refuse to overwrite; allow overwriting)",
                shown(&from.display),
                shown(&to.display)
            )),
            e => to.failure(e),
        },
    )?;
    stat_at(&to_dir, &to_name, &to.display)
}

// === copy ===

fn copy(roots: &Roots, request: &FileCopy) -> Result<FileInfo, FileFailure> {
    let from = roots.locate(&request.from)?;
    let to = roots.locate(&request.to)?;
    let (source, meta) = from.open_readable()?;
    let (to_dir, to_name) = to.open_parent()?;
    let copy = Copy {
        overwrite: request.overwrite,
        display: &to.display,
    };
    let Some(source) = source else {
        return Err(FileFailure::invalid(format!(
            "{} is neither a file nor a directory; only those are copied",
            shown(&from.display)
        )));
    };
    if meta.is_dir() {
        if !request.recursive {
            return Err(FileFailure::new(
                FileError::IsADirectory,
                format!(
                    "{} is a directory; copy it with recursive",
                    shown(&from.display)
                ),
            ));
        }
        copy.dir(&source, &meta, &to_dir, &to_name)?;
    } else {
        copy.file(File::from(source), &meta, &to_dir, &to_name)?;
    }
    stat_at(&to_dir, &to_name, &to.display)
}

/// One copy: its options, and the destination for messages.
struct Copy<'a> {
    overwrite: bool,
    display: &'a str,
}

impl Copy<'_> {
    fn failure(&self, e: Errno) -> FileFailure {
        FileFailure::from_errno(self.display, e)
    }

    /// Copies a file's content and mode to a temporary name beside the destination, then
    /// renames it into place.
    fn file(
        &self,
        mut source: File,
        meta: &Meta,
        dir: &OwnedFd,
        name: &str,
    ) -> Result<(), FileFailure> {
        let temp = temp_name("copy");
        let fd = rustix::fs::openat(
            dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.failure(e))?;
        let mut target = File::from(fd);
        let written = std::io::copy(&mut source, &mut target)
            .map_err(|e| self.failure(Errno::from_io_error(&e).unwrap_or(Errno::IO)))
            .and_then(|_| {
                rustix::fs::fchmod(&target, Mode::from_raw_mode(meta.permissions()))
                    .map_err(|e| self.failure(e))
            })
            .and_then(|()| {
                let flags = if self.overwrite {
                    RenameFlags::empty()
                } else {
                    RenameFlags::NOREPLACE
                };
                rustix::fs::renameat_with(dir, temp.as_str(), dir, name, flags)
                    .map_err(|e| self.failure(e))
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Copies a directory tree: directories, files and symlinks (as symlinks); other kinds
    /// are left out. The new directory itself is never walked into (a copy into itself).
    fn dir(
        &self,
        source: &OwnedFd,
        meta: &Meta,
        parent: &OwnedFd,
        name: &str,
    ) -> Result<(), FileFailure> {
        let made = self.make_dir(parent, name)?;
        let made_meta = Meta::of(&made).map_err(|e| self.failure(e))?;
        self.tree(source, &made, &made_meta, 0)?;
        rustix::fs::fchmod(&made, Mode::from_raw_mode(meta.permissions()))
            .map_err(|e| self.failure(e))
    }

    fn make_dir(&self, parent: &OwnedFd, name: &str) -> Result<OwnedFd, FileFailure> {
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST)
                if self.overwrite
                    && Meta::at(parent, Path::new(name)).is_ok_and(|m| m.is_dir()) => {}
            Err(e) => return Err(self.failure(e)),
        }
        child(parent, Path::new(name), OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| self.failure(e))
    }

    fn tree(
        &self,
        source: &OwnedFd,
        target: &OwnedFd,
        made: &Meta,
        depth: usize,
    ) -> Result<(), FileFailure> {
        if depth > MAX_DEPTH {
            return Err(FileFailure::invalid(format!(
                "cannot copy to {}: the tree is more than {MAX_DEPTH} directories deep",
                shown(self.display)
            )));
        }
        for name in names(source).map_err(|e| self.failure(e))? {
            let Ok(meta) = Meta::at(source, &name) else {
                continue;
            };
            let shown_name = name.to_string_lossy();
            if meta.is_dir() {
                if meta.same_file(made) {
                    continue;
                }
                let from = child(source, &name, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| self.failure(e))?;
                let to = self.make_dir(target, &shown_name)?;
                self.tree(&from, &to, made, depth + 1)?;
                rustix::fs::fchmod(&to, Mode::from_raw_mode(meta.permissions()))
                    .map_err(|e| self.failure(e))?;
            } else if meta.is_file() {
                let from = child(source, &name, OFlags::RDONLY | OFlags::NONBLOCK)
                    .map_err(|e| self.failure(e))?;
                self.file(File::from(from), &meta, target, &shown_name)?;
            } else if meta.is_symlink() {
                let link = rustix::fs::readlinkat(source, &name, Vec::new())
                    .map_err(|e| self.failure(e))?;
                if self.overwrite {
                    let _ = rustix::fs::unlinkat(target, &name, AtFlags::empty());
                }
                rustix::fs::symlinkat(link.as_c_str(), target, &name)
                    .map_err(|e| self.failure(e))?;
            }
        }
        Ok(())
    }
}

// === delete ===

fn delete(roots: &Roots, request: &FileDelete) -> Result<FileInfo, FileFailure> {
    let at = roots.locate(&request.path)?;
    let (dir, name) = at.open_parent()?;
    let info = stat_at(&dir, &name, &at.display)?;
    let meta = Meta::at(&dir, Path::new(&name)).map_err(|e| at.failure(e))?;
    if meta.is_dir() {
        if !request.recursive {
            return Err(FileFailure::new(
                FileError::IsADirectory,
                format!(
                    "{} is a directory; delete it with recursive",
                    shown(&at.display)
                ),
            ));
        }
        remove_tree(&dir, Path::new(&name), 0).map_err(|e| at.failure(e))?;
    } else {
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()).map_err(|e| at.failure(e))?;
    }
    Ok(info)
}

/// Removes a directory and everything in it, never following a symlink.
pub(super) fn remove_tree(parent: &OwnedFd, name: &Path, depth: usize) -> Result<(), Errno> {
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Err(Errno::NOTEMPTY | Errno::EXIST) if depth < MAX_DEPTH => {}
        other => return other,
    }
    let dir = child(parent, name, OFlags::RDONLY | OFlags::DIRECTORY)?;
    for entry in names(&dir)? {
        match Meta::at(&dir, &entry) {
            Ok(meta) if meta.is_dir() => remove_tree(&dir, &entry, depth + 1)?,
            Ok(_) => rustix::fs::unlinkat(&dir, &entry, AtFlags::empty())?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

// === chmod, chown ===

fn chmod(roots: &Roots, request: &FileChmod) -> Result<FileInfo, FileFailure> {
    let at = roots.locate(&request.path)?;
    let fd = at.open(OFlags::PATH | OFlags::NOFOLLOW)?;
    let meta = Meta::of(&fd).map_err(|e| at.failure(e))?;
    if meta.is_symlink() {
        return Err(FileFailure::invalid(format!(
            "{} is a symbolic link, which has no mode of its own; change its target instead",
            shown(&at.display)
        )));
    }
    if request.mode > 0o7777 {
        return Err(FileFailure::invalid(format!(
            "mode {:o} for {} has more than permission bits (at most 7777)",
            request.mode,
            shown(&at.display)
        )));
    }
    // Linux has no fchmod for an O_PATH handle; its /proc link names exactly the file
    // opened beneath the root (what glibc's fchmodat does for AT_SYMLINK_NOFOLLOW).
    let handle = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(handle.as_str(), Mode::from_raw_mode(request.mode)).map_err(|e| match e {
        Errno::NOENT => FileFailure::new(
            FileError::Io,
            format!(
                "cannot change the mode of {}: /proc is not mounted on this host",
                shown(&at.display)
            ),
        ),
        e => at.failure(e),
    })?;
    stat(&at)
}

fn chown(roots: &Roots, request: &FileChown) -> Result<FileInfo, FileFailure> {
    let at = roots.locate(&request.path)?;
    let owner = match request.owner.as_str() {
        "" => None,
        name => Some(Uid::from_raw(user_id(name)?)),
    };
    let group = match request.group.as_str() {
        "" => None,
        name => Some(Gid::from_raw(group_id(name)?)),
    };
    let fd = at.open(OFlags::PATH | OFlags::NOFOLLOW)?;
    rustix::fs::chownat(&fd, "", owner, group, AtFlags::EMPTY_PATH).map_err(|e| at.failure(e))?;
    stat(&at)
}

fn user_id(name: &str) -> Result<u32, FileFailure> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(FileFailure::invalid(format!(
            "no user named {} on this host; use an existing user or a numeric id",
            shown(name)
        ))),
    }
}

fn group_id(name: &str) -> Result<u32, FileFailure> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(FileFailure::invalid(format!(
            "no group named {} on this host; use an existing group or a numeric id",
            shown(name)
        ))),
    }
}

// === find ===

/// True for a directory on /proc or /sys, which walks skip (endless, and some of their
/// files have side effects when read).
pub(super) fn is_pseudo_fs(dir: impl AsFd) -> bool {
    // `f_type`'s width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let is_pseudo = |kind| kind as i64 == PROC_SUPER_MAGIC || kind as i64 == SYSFS_MAGIC;
    rustix::fs::fstatfs(dir).is_ok_and(|fs| is_pseudo(fs.f_type))
}

/// One find: what matches, and what it may still spend.
struct Finder {
    glob: Option<GlobMatcher>,
    content: Option<memmem::Finder<'static>>,
    limit: usize,
    deadline: Instant,
    bytes_left: u64,
    names: Names,
    matches: Vec<FileInfo>,
    truncated: bool,
}

fn find(roots: &Roots, request: &FileFind) -> Result<FileFound, FileFailure> {
    let at = roots.locate(&request.path)?;
    let dir = at.open(OFlags::RDONLY | OFlags::DIRECTORY)?;
    let glob = match request.name_glob.as_str() {
        "" => None,
        glob => Some(
            GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| FileFailure::invalid(format!("name pattern {}: {e}", shown(glob))))?
                .compile_matcher(),
        ),
    };
    let content = (!request.content.is_empty())
        .then(|| memmem::Finder::new(request.content.as_bytes()).into_owned());
    let limit = match request.limit {
        0 => FIND_DEFAULT,
        n => n.min(FIND_MAX),
    } as usize;
    let mut finder = Finder {
        glob,
        content,
        limit,
        deadline: Instant::now() + FIND_TIME_BUDGET,
        bytes_left: FIND_BYTES_BUDGET,
        names: Names::default(),
        matches: Vec::new(),
        truncated: false,
    };
    finder.walk(&dir, &at.display, 0);
    Ok(FileFound {
        matches: finder.matches,
        truncated: finder.truncated,
    })
}

impl Finder {
    /// Walks a directory in name order; returns false once the search must stop.
    fn walk(&mut self, dir: &OwnedFd, display: &str, depth: usize) -> bool {
        let Ok(mut names) = names(dir) else {
            return true;
        };
        names.sort();
        for name in names {
            if Instant::now() > self.deadline {
                self.truncated = true;
                return false;
            }
            let Ok(meta) = Meta::at(dir, &name) else {
                continue;
            };
            let shown_name = name.to_string_lossy();
            let path = joined(display, &shown_name);
            let name_matches = self
                .glob
                .as_ref()
                .is_none_or(|glob| glob.is_match(shown_name.as_ref()));
            if name_matches && self.content_matches(dir, &name, &meta) {
                if self.matches.len() == self.limit {
                    self.truncated = true;
                    return false;
                }
                let info = self.names.describe(path.clone(), &meta, dir, &name);
                self.matches.push(info);
            }
            if meta.is_dir() {
                if depth >= MAX_DEPTH {
                    self.truncated = true;
                    continue;
                }
                let Ok(sub) = child(dir, &name, OFlags::RDONLY | OFlags::DIRECTORY) else {
                    continue;
                };
                if is_pseudo_fs(&sub) {
                    continue;
                }
                if !self.walk(&sub, &path, depth + 1) {
                    return false;
                }
            }
        }
        true
    }

    /// True when no content is asked for, or when this regular file (of a searchable size)
    /// holds it.
    fn content_matches(&mut self, dir: &OwnedFd, name: &Path, meta: &Meta) -> bool {
        let Some(needle) = &self.content else {
            return true;
        };
        if !meta.is_file() || meta.size == 0 || meta.size > FIND_MAX_FILE_BYTES {
            return false;
        }
        if meta.size > self.bytes_left {
            self.truncated = true;
            return false;
        }
        self.bytes_left -= meta.size;
        let Ok(fd) = child(dir, name, OFlags::RDONLY | OFlags::NONBLOCK) else {
            return false;
        };
        let mut file = File::from(fd).take(meta.size);
        let keep = needle.needle().len().saturating_sub(1);
        let mut buffer = vec![0u8; 64 * 1024 + keep];
        let mut held = 0;
        loop {
            let read = match file.read(&mut buffer[held..]) {
                Ok(0) | Err(_) => return false,
                Ok(read) => read,
            };
            let end = held + read;
            if needle.find(&buffer[..end]).is_some() {
                return true;
            }
            let tail = keep.min(end);
            buffer.copy_within(end - tail..end, 0);
            held = tail;
        }
    }
}

//! Confinement: which served root a path belongs to, and opening it beneath that root's
//! directory handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so `..`,
//! absolute symlinks, symlinks pointing out and symlinks swapped in after a check all fail
//! inside the kernel. Nothing here compares a resolved path with a root as a string, and no
//! path a client sent is ever opened from `/`.

use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use zpanel_proto::FileError;

use super::FileFailure;
use super::info::Meta;

/// Longest path accepted, as the kernel's `PATH_MAX`.
const MAX_PATH_BYTES: usize = 4096;
/// `openat2` answers EAGAIN when a rename raced a `..` lookup; it is safe to retry.
const RETRIES: usize = 16;

/// The directories the daemon serves, in configured order (relative paths go under the
/// first).
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<PathBuf>,
}

/// A path a client sent, placed under its root: what to open (`rel`, beneath `root`) and how
/// to name it in answers (`display`, absolute).
#[derive(Debug, Clone)]
pub struct Located {
    pub root: PathBuf,
    /// Below the root; empty for the root itself. Holds only normal names and `..`.
    pub rel: PathBuf,
    pub display: String,
}

impl Roots {
    /// Roots from the configuration: absolute paths without `..`.
    pub fn new(roots: &[PathBuf]) -> Result<Roots, String> {
        let mut checked = Vec::with_capacity(roots.len());
        for root in roots {
            if !root.is_absolute() || root.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!(
                    "[files] root {} must be an absolute path without ..",
                    root.display()
                ));
            }
            checked.push(root.components().collect::<PathBuf>());
        }
        Ok(Roots { roots: checked })
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The roots as one line, for messages.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        names.join(", ")
    }

    /// Places `path` under the root that lexically contains it (the longest one), or under
    /// the first root when it is relative. The kernel does the rest when it is opened.
    pub fn locate(&self, path: &str) -> Result<Located, FileFailure> {
        if path.is_empty() {
            return Err(FileFailure::invalid("empty path: name a file or directory"));
        }
        if path.contains('\0') {
            return Err(FileFailure::invalid(format!(
                "{} contains a NUL byte; remove it",
                shown(path)
            )));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(FileFailure::invalid(format!(
                "path of {} bytes is longer than {MAX_PATH_BYTES}; use a shorter one",
                path.len()
            )));
        }
        let wanted = Path::new(path);
        let (root, rest) = if wanted.is_absolute() {
            let found = self
                .roots
                .iter()
                .filter(|root| wanted.starts_with(root))
                .max_by_key(|root| root.components().count());
            let Some(root) = found else {
                return Err(FileFailure::new(
                    FileError::OutsideRoots,
                    format!(
                        "{} is outside the directories this host serves ({}); use a path inside \
                         them or ask the host's admin to add a root in bridge.toml",
                        shown(path),
                        self.describe()
                    ),
                ));
            };
            let rest = wanted.strip_prefix(root).unwrap_or(Path::new(""));
            (root, rest)
        } else {
            let root = self.roots.first().ok_or_else(|| {
                FileFailure::new(FileError::OutsideRoots, "this host serves no directories")
            })?;
            (root, wanted)
        };
        let rel: PathBuf = rest
            .components()
            .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
            .collect();
        Ok(Located {
            display: display(root, &rel),
            root: root.clone(),
            rel,
        })
    }
}

impl Located {
    /// The parent (below the root) and the last name, for operations on a name. The root
    /// itself, and paths ending in `..`, have none.
    pub fn split(&self) -> Result<(PathBuf, String), FileFailure> {
        let name = match self.rel.components().next_back() {
            Some(Component::Normal(name)) => name.to_string_lossy().into_owned(),
            Some(_) => {
                return Err(FileFailure::invalid(format!(
                    "{} ends in ..; name the file or directory itself",
                    shown(&self.display)
                )));
            }
            None => {
                return Err(FileFailure::invalid(format!(
                    "{} is a served root: it cannot be created, renamed, moved or deleted; name \
                     something inside it",
                    shown(&self.display)
                )));
            }
        };
        let parent = self.rel.parent().unwrap_or(Path::new("")).to_path_buf();
        Ok((parent, name))
    }

    /// The same root with `rel` replaced, for a parent or a child.
    pub fn with_rel(&self, rel: PathBuf) -> Located {
        Located {
            display: display(&self.root, &rel),
            root: self.root.clone(),
            rel,
        }
    }

    /// Opens the root's directory. Roots come from the configuration, so this is the one
    /// open by absolute path.
    pub fn open_root(&self) -> Result<OwnedFd, FileFailure> {
        rustix::fs::open(
            &self.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            FileFailure::new(
                if e == Errno::NOENT {
                    FileError::NotFound
                } else {
                    FileError::Io
                },
                format!(
                    "served root {} cannot be opened ({}); ask the host's admin to fix [files] \
                     roots in bridge.toml",
                    self.root.display(),
                    errno_text(e)
                ),
            )
        })
    }

    /// Opens the path beneath its root (symlinks are followed while they stay beneath it).
    pub fn open(&self, flags: OFlags) -> Result<OwnedFd, FileFailure> {
        let root = self.open_root()?;
        beneath(&root, &self.rel, flags, Mode::empty()).map_err(|e| self.failure(e))
    }

    /// Opens a file or directory for reading, without opening anything else (a device's
    /// open has effects): an `O_PATH` handle first, and only a file or directory is then
    /// reopened, through that very handle. Returns the readable handle, if any, and what the
    /// path is.
    pub fn open_readable(&self) -> Result<(Option<OwnedFd>, Meta), FileFailure> {
        let fd = self.open(OFlags::PATH)?;
        let meta = Meta::of(&fd).map_err(|e| self.failure(e))?;
        let readable = if meta.is_dir() {
            rustix::fs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        } else if meta.is_file() {
            // The /proc link of the handle reopens exactly the file found beneath the root.
            let handle = format!("/proc/self/fd/{}", fd.as_raw_fd());
            rustix::fs::open(
                handle.as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        } else {
            return Ok((None, meta));
        };
        Ok((Some(readable.map_err(|e| self.failure(e))?), meta))
    }

    /// Opens the path's parent directory (`O_PATH`) and returns it with the last name.
    pub fn open_parent(&self) -> Result<(OwnedFd, String), FileFailure> {
        let (parent, name) = self.split()?;
        let fd = self
            .with_rel(parent)
            .open(OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, name))
    }

    /// A failure about this path from an errno.
    pub fn failure(&self, errno: Errno) -> FileFailure {
        FileFailure::from_errno(&self.display, errno)
    }
}

/// The absolute name of `rel` under `root` (the root itself without a trailing slash).
fn display(root: &Path, rel: &Path) -> String {
    let path = match rel.as_os_str().is_empty() {
        true => root.to_path_buf(),
        false => root.join(rel),
    };
    path.to_string_lossy().into_owned()
}

/// `openat2(dir, rel, flags | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, retried
/// when the kernel asks (a concurrent rename).
pub fn beneath(dir: impl AsFd, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    at(
        dir,
        rel,
        flags,
        mode,
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens one entry of a directory without following any symlink (walks of a tree).
pub fn child(dir: impl AsFd, name: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    at(
        dir,
        name,
        flags | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

fn at(
    dir: impl AsFd,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir.as_fd(), rel, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN | Errno::INTR) if tries < RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// Checks that the kernel has `openat2` (Linux 5.6), without which files are not served.
pub fn probe() -> Result<(), String> {
    let root = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| format!("cannot open /: {}", errno_text(e)))?;
    match beneath(&root, Path::new("."), OFlags::PATH, Mode::empty()) {
        Ok(_) => Ok(()),
        Err(Errno::NOSYS) => Err(
            "this host's kernel has no openat2 (linux 5.6 or newer is needed), so the daemon \
             does not serve files; upgrade the kernel to use files"
                .into(),
        ),
        Err(e) => Err(format!("openat2 does not work here: {}", errno_text(e))),
    }
}

/// An errno as lower-case text without the error number.
pub fn errno_text(errno: Errno) -> String {
    let text = std::io::Error::from(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

/// A path for a one-line message: as it is, unless it holds control characters (escaped).
pub fn shown(path: &str) -> String {
    if path.chars().any(char::is_control) {
        let mut escaped = String::new();
        for c in path.chars() {
            if c.is_control() {
                let _ = write!(escaped, "{}", c.escape_default());
            } else {
                escaped.push(c);
            }
        }
        escaped
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_lexical_root_wins_and_relative_paths_go_under_the_first() {
        let roots = Roots::new(&["/srv".into(), "/".into(), "/srv/app/".into()]).unwrap();
        let at = roots.locate("/srv/app/x/./y").unwrap();
        assert_eq!(
            (at.root.as_path(), at.rel.as_path()),
            (Path::new("/srv/app"), Path::new("x/y"))
        );
        assert_eq!(at.display, "/srv/app/x/y");
        let at = roots.locate("etc/../hosts").unwrap();
        assert_eq!(at.root, Path::new("/srv"));
        assert_eq!(at.rel, Path::new("etc/../hosts"));
        assert_eq!(roots.locate("/srvx").unwrap().root, Path::new("/"));
        assert_eq!(roots.locate("/srv/app/").unwrap().display, "/srv/app");
        assert_eq!(roots.locate("/").unwrap().display, "/");
        assert!(Roots::new(&["relative".into()]).is_err());
        assert!(Roots::new(&["/a/../b".into()]).is_err());
    }

    #[test]
    fn names_split_off_their_parent() {
        let roots = Roots::new(&["/srv".into()]).unwrap();
        let (parent, name) = roots.locate("/srv/a/b").unwrap().split().unwrap();
        assert_eq!((parent.as_path(), name.as_str()), (Path::new("a"), "b"));
        assert!(roots.locate("/srv").unwrap().split().is_err());
        assert!(roots.locate("/srv/a/..").unwrap().split().is_err());
        assert_eq!(shown("a\nb"), "a\\nb");
    }
}

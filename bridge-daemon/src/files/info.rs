//! What the daemon says about a file: its type, size, mode, owner and group names, mtime,
//! symlink target and version, from a `stat` of a handle or of a name in a directory.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};
use rustix::fs::{AtFlags, FileType as Kind, Stat};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use zpanel_proto::{FileInfo, FileType};

/// The parts of a `stat` the file service uses, in the same widths on every architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Meta {
    // `struct stat`'s field types differ between architectures; these casts only widen.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(stat: &Stat) -> Meta {
        Meta {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            mode: stat.st_mode as u32,
            nlink: stat.st_nlink as u64,
            uid: stat.st_uid as u32,
            gid: stat.st_gid as u32,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime_ns: (stat.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(stat.st_mtime_nsec as i64),
        }
    }

    /// `fstat` of a handle (an `O_PATH` one describes a symlink itself).
    pub fn of(fd: impl AsFd) -> Result<Meta, Errno> {
        rustix::fs::fstat(fd).map(|s| Meta::from_stat(&s))
    }

    /// `fstatat` of a name in a directory, not following a symlink.
    pub fn at(dir: impl AsFd, name: &Path) -> Result<Meta, Errno> {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|s| Meta::from_stat(&s))
    }

    pub fn kind(&self) -> Kind {
        Kind::from_raw_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == Kind::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind() == Kind::RegularFile
    }

    pub fn is_symlink(&self) -> bool {
        self.kind() == Kind::Symlink
    }

    /// Permission bits, file type bits stripped.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// Changes whenever the content may have: size, mtime and inode, hashed to a short
    /// opaque string.
    pub fn version(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.ino.to_le_bytes());
        hash.update(self.size.to_le_bytes());
        hash.update(self.mtime_ns.to_le_bytes());
        hex::encode(&hash.finalize()[..8])
    }

    /// Same file (device and inode).
    pub fn same_file(&self, other: &Meta) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// User and group names by id, looked up once per request.
#[derive(Debug, Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| match User::from_uid(Uid::from_raw(uid)) {
                Ok(Some(user)) => user.name,
                _ => uid.to_string(),
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| match Group::from_gid(Gid::from_raw(gid)) {
                Ok(Some(group)) => group.name,
                _ => gid.to_string(),
            })
            .clone()
    }

    /// The wire description of a file named `path` (absolute, or a name in a listing).
    pub fn info(&mut self, path: String, meta: &Meta, symlink_target: String) -> FileInfo {
        let kind = match meta.kind() {
            Kind::RegularFile => FileType::File,
            Kind::Directory => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
            _ => FileType::Other,
        };
        FileInfo {
            path,
            r#type: kind as i32,
            size: meta.size,
            mode: meta.permissions(),
            owner: self.user(meta.uid),
            group: self.group(meta.gid),
            modified_ns: meta.mtime_ns,
            symlink_target,
            version: meta.version(),
        }
    }
}

impl Names {
    /// [`Names::info`] of `name` in `dir` (empty: the `O_PATH` handle `dir` itself), with
    /// its target when it is a symlink.
    pub fn describe(&mut self, path: String, meta: &Meta, dir: impl AsFd, name: &Path) -> FileInfo {
        let target = match meta.is_symlink() {
            true => link_target(dir, name),
            false => String::new(),
        };
        self.info(path, meta, target)
    }
}

/// Where a symlink points, as stored (`name` empty: the symlink's own `O_PATH` handle).
pub fn link_target(dir: impl AsFd, name: &Path) -> String {
    rustix::fs::readlinkat(dir, name, Vec::new())
        .map(|target| target.to_string_lossy().into_owned())
        .unwrap_or_default()
}

//! The daemon binaries the control plane hands out: to `install.sh` at
//! `/downloads/zpanel-bridge-linux-ARCH` (with `.sha256` beside it) and to hosts over their
//! session when they are upgraded. They come from `--downloads-dir` (files named
//! `zpanel-bridge-linux-ARCH`), else the `zpanel-bridge` installed beside `zpanel-cp`, for the
//! control plane's own architecture.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// The name a daemon binary is served under, for an architecture as `uname -m` prints it.
pub fn file_name(arch: &str) -> String {
    format!("zpanel-bridge-linux-{arch}")
}

/// One daemon binary on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonBinary {
    pub arch: String,
    pub path: PathBuf,
    pub size: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
}

/// Where the daemon binaries are, with their checksums computed once per file version.
#[derive(Debug)]
pub struct Downloads {
    dir: Option<PathBuf>,
    /// By path: the file's size and modification time when hashed, and the binary.
    hashed: Mutex<HashMap<PathBuf, (u64, SystemTime, DaemonBinary)>>,
}

impl Downloads {
    pub fn new(dir: Option<PathBuf>) -> Downloads {
        Downloads {
            dir,
            hashed: Mutex::new(HashMap::new()),
        }
    }

    /// The daemon binary for `arch` (`x86_64`, `aarch64`, ...), if the control plane has one.
    /// Reads and hashes the file when it is new or changed: call it off the async threads.
    pub fn daemon(&self, arch: &str) -> std::io::Result<Option<DaemonBinary>> {
        if arch.is_empty() || !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Ok(None);
        }
        let path = match &self.dir {
            Some(dir) => dir.join(file_name(arch)),
            None if arch == std::env::consts::ARCH => match sibling_daemon() {
                Some(path) => path,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        let meta = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (size, modified) = (meta.len(), meta.modified()?);
        let mut hashed = self.hashed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, m, binary)) = hashed.get(&path)
            && (*s, *m) == (size, modified)
        {
            return Ok(Some(binary.clone()));
        }
        let binary = DaemonBinary {
            arch: arch.to_string(),
            sha256: zpanel_shared::fsutil::sha256_file(&path)?,
            path: path.clone(),
            size,
        };
        hashed.insert(path, (size, modified, binary.clone()));
        Ok(Some(binary))
    }
}

/// `zpanel-bridge` in the directory `zpanel-cp` runs from.
fn sibling_daemon() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join("zpanel-bridge");
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_named_binaries_and_rehashes_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::new(Some(dir.path().to_path_buf()));
        assert_eq!(downloads.daemon("x86_64").unwrap(), None);
        assert_eq!(downloads.daemon("../etc").unwrap(), None);
        std::fs::write(dir.path().join(file_name("x86_64")), b"one").unwrap();
        let first = downloads.daemon("x86_64").unwrap().unwrap();
        assert_eq!(first.size, 3);
        assert_eq!(
            first.sha256,
            "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
        );
        std::fs::write(dir.path().join(file_name("x86_64")), b"second").unwrap();
        let second = downloads.daemon("x86_64").unwrap().unwrap();
        assert_eq!(second.size, 6);
        assert_ne!(second.sha256, first.sha256);
    }
}

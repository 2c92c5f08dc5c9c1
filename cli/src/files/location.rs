//! `HOST:PATH` arguments. `web-1:/etc/hosts` is an absolute path on host `web-1`,
//! `web-1:notes.txt` a path under the first root that host serves, and anything whose part
//! before the first `:` is empty or contains a `/` is a local path (`./a:b`, `/tmp/x`).

use std::fmt;
use std::path::PathBuf;

/// A path on a host, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// A host name or id.
    pub host: String,
    /// Absolute, or relative to the host's first root; empty for that root itself.
    pub path: String,
}

/// Where one side of a copy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

impl Location {
    pub fn parse(arg: &str) -> Location {
        match arg.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') => {
                Location::Remote(Remote {
                    host: host.to_string(),
                    path: path.to_string(),
                })
            }
            _ => Location::Local(PathBuf::from(arg)),
        }
    }
}

impl Remote {
    /// `arg` as a remote path; a local one is refused with a line saying what was expected.
    pub fn parse(arg: &str) -> anyhow::Result<Remote> {
        match Location::parse(arg) {
            Location::Remote(remote) => Ok(remote),
            Location::Local(_) => {
                anyhow::bail!("{arg}: expected HOST:PATH (e.g. web-1:/etc/hosts)")
            }
        }
    }

    /// The path as the daemon takes it: `.` (its first root) when none was written.
    pub fn wire_path(&self) -> String {
        if self.path.is_empty() {
            ".".into()
        } else {
            self.path.clone()
        }
    }

    /// The last component of the path, if it names one.
    pub fn file_name(&self) -> Option<&str> {
        self.path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|name| !name.is_empty() && *name != "." && *name != "..")
    }

    /// Whether the path was written as a directory (`web-1:/srv/`).
    pub fn names_directory(&self) -> bool {
        self.path.is_empty() || self.path.ends_with('/')
    }

    /// `name` inside this path.
    pub fn join(&self, name: &str) -> Remote {
        let base = self.path.trim_end_matches('/');
        let path = if self.path.is_empty() {
            name.to_string()
        } else if base.is_empty() {
            format!("/{name}")
        } else {
            format!("{base}/{name}")
        };
        Remote {
            host: self.host.clone(),
            path,
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str, path: &str) -> Location {
        Location::Remote(Remote {
            host: host.into(),
            path: path.into(),
        })
    }

    #[test]
    fn host_colon_path_is_remote_and_anything_with_a_slash_first_is_local() {
        assert_eq!(
            Location::parse("web-1:/etc/hosts"),
            remote("web-1", "/etc/hosts")
        );
        assert_eq!(
            Location::parse("web-1:notes.txt"),
            remote("web-1", "notes.txt")
        );
        assert_eq!(Location::parse("web-1:"), remote("web-1", ""));
        assert_eq!(Location::parse("web-1:a:b"), remote("web-1", "a:b"));
        assert_eq!(
            Location::parse("./a:b"),
            Location::Local(PathBuf::from("./a:b"))
        );
        assert_eq!(
            Location::parse("/tmp/x:y"),
            Location::Local(PathBuf::from("/tmp/x:y"))
        );
        assert_eq!(Location::parse(":x"), Location::Local(PathBuf::from(":x")));
        assert_eq!(
            Location::parse("plain"),
            Location::Local(PathBuf::from("plain"))
        );
        assert!(Remote::parse("./local").is_err());
    }

    #[test]
    fn names_join_and_split_like_paths() {
        let r = |path: &str| Remote {
            host: "h".into(),
            path: path.into(),
        };
        assert_eq!(r("/srv/").join("a").path, "/srv/a");
        assert_eq!(r("/srv").join("a").path, "/srv/a");
        assert_eq!(r("/").join("a").path, "/a");
        assert_eq!(r("").join("a").path, "a");
        assert_eq!(r("docs").join("a").path, "docs/a");
        assert_eq!(r("/srv/app.conf").file_name(), Some("app.conf"));
        assert_eq!(r("/srv/dir/").file_name(), Some("dir"));
        assert_eq!(r("/").file_name(), None);
        assert_eq!(r("").file_name(), None);
        assert_eq!(r("..").file_name(), None);
        assert_eq!(r("").wire_path(), ".");
        assert!(r("/srv/").names_directory());
        assert!(!r("/srv").names_directory());
        assert_eq!(r("/x").to_string(), "h:/x");
    }
}

//! Watches: inotify (through `notify`) on a directory, or on a file's directory filtered to
//! its name, opened beneath the root like everything else. Changes are coalesced for a
//! moment and sent as `FileChanged` frames; a burst too large to describe (or an inotify
//! queue overflow) becomes one "modified" for the directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustix::fs::OFlags;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zpanel_proto::frame::Body;
use zpanel_proto::{FileChange, FileChanged, FileError, FileInfo, file_change};

use super::FileFailure;
use super::info::Meta;
use super::ops::{joined, stat};
use super::resolve::{Roots, shown};

/// Watches this daemon runs at most at once (each is an inotify instance and a thread).
pub const MAX_WATCHES: usize = 64;
/// Changes wait this long for more before they are sent, so a burst goes out once.
const COALESCE: Duration = Duration::from_millis(100);
/// Raw changes queued between inotify and the sender; distinct changes in one burst.
const QUEUE: usize = 1024;
const MAX_BURST: usize = 256;

/// A change as inotify reported it: what happened, and to which name in the watched
/// directory (`None`: the directory itself).
type Raw = (file_change::Kind, Option<OsString>);

/// Counts the watches running; a slot is given back when its watch ends.
pub struct WatchSlot(Arc<AtomicUsize>);

impl WatchSlot {
    pub fn take(running: &Arc<AtomicUsize>) -> Result<WatchSlot, FileFailure> {
        let taken = running.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_WATCHES).then_some(n + 1)
        });
        match taken {
            Ok(_) => Ok(WatchSlot(running.clone())),
            Err(_) => Err(FileFailure::invalid(format!(
                "this host already runs {MAX_WATCHES} watches, the most it allows; close one \
                 first"
            ))),
        }
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running watch.
pub struct Watching {
    _watcher: RecommendedWatcher,
    _slot: WatchSlot,
    /// The watched directory, kept open while inotify watches it.
    _dir: OwnedFd,
    raw: mpsc::Receiver<Raw>,
    overflowed: Arc<AtomicBool>,
    /// The watched directory's absolute path, for the changes' paths.
    display_dir: String,
}

/// Starts watching `path` (a directory, or a file through its directory).
pub fn start(
    roots: &Roots,
    path: &str,
    slot: WatchSlot,
) -> Result<(FileInfo, Watching), FileFailure> {
    let at = roots.locate(path)?;
    let info = stat(&at)?;
    let fd = at.open(OFlags::PATH)?;
    let is_dir = Meta::of(&fd).map_err(|e| at.failure(e))?.is_dir();
    let (dir, display_dir, only) = if is_dir {
        (fd, at.display.clone(), None)
    } else {
        let (dir, name) = at.open_parent()?;
        let parent = at.rel.parent().unwrap_or(Path::new("")).to_path_buf();
        (dir, at.with_rel(parent).display, Some(OsString::from(name)))
    };
    // inotify takes a path: this one names exactly the directory opened beneath the root.
    let handle = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let (sender, raw) = mpsc::channel(QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let handler = {
        let overflowed = overflowed.clone();
        let handle = handle.clone();
        move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                overflowed.store(true, Ordering::SeqCst);
                return;
            };
            if event.need_rescan() {
                overflowed.store(true, Ordering::SeqCst);
                return;
            }
            let kind = match event.kind {
                EventKind::Create(_) => file_change::Kind::Created,
                EventKind::Modify(ModifyKind::Name(_)) => file_change::Kind::Renamed,
                EventKind::Modify(_) => file_change::Kind::Modified,
                EventKind::Remove(_) => file_change::Kind::Removed,
                _ => return,
            };
            for path in &event.paths {
                // Changes to the watched directory itself carry its own path.
                let name = match path == &handle {
                    true => None,
                    false => path.file_name().map(OsString::from),
                };
                if only
                    .as_ref()
                    .is_some_and(|only| name.as_ref() != Some(only))
                {
                    continue;
                }
                if sender.try_send((kind, name)).is_err() {
                    overflowed.store(true, Ordering::SeqCst);
                }
            }
        }
    };
    let mut watcher =
        notify::recommended_watcher(handler).map_err(|e| watch_failure(&at.display, &e))?;
    watcher
        .watch(&handle, RecursiveMode::NonRecursive)
        .map_err(|e| watch_failure(&at.display, &e))?;
    let watching = Watching {
        _watcher: watcher,
        _slot: slot,
        _dir: dir,
        raw,
        overflowed,
        display_dir,
    };
    Ok((info, watching))
}

fn watch_failure(display: &str, e: &notify::Error) -> FileFailure {
    let message = match &e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "cannot watch {}: the host's inotify limit is reached; raise \
             fs.inotify.max_user_watches or close other watches",
            shown(display)
        ),
        _ => format!("cannot watch {}: {e}", shown(display)),
    };
    FileFailure::new(FileError::Io, message.to_lowercase())
}

impl Watching {
    /// Sends changes as `FileChanged` frames until the channel closes (`cancel`) or the
    /// outbound queue is gone.
    pub async fn forward(
        mut self,
        channel_id: u64,
        outbound: &mpsc::Sender<Body>,
        cancel: &CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                raw = self.raw.recv() => raw,
            };
            let Some(first) = first else {
                return;
            };
            let mut burst = vec![first];
            let until = tokio::time::Instant::now() + COALESCE;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    raw = self.raw.recv() => match raw {
                        Some(raw) if burst.len() <= MAX_BURST => burst.push(raw),
                        Some(_) => self.overflowed.store(true, Ordering::SeqCst),
                        None => break,
                    },
                }
            }
            for change in self.describe(burst) {
                let frame = Body::FileChanged(FileChanged {
                    channel_id,
                    change: Some(change),
                });
                if outbound.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }

    /// A burst as changes: each distinct one once, in order, or one "modified" for the
    /// directory when it was too large or inotify lost some.
    fn describe(&self, burst: Vec<Raw>) -> Vec<FileChange> {
        let change = |kind: file_change::Kind, path: String| FileChange {
            kind: kind as i32,
            path,
        };
        let mut seen = HashSet::new();
        let distinct: Vec<Raw> = burst
            .into_iter()
            .filter(|raw| seen.insert(raw.clone()))
            .collect();
        if self.overflowed.swap(false, Ordering::SeqCst) || distinct.len() > MAX_BURST {
            return vec![change(
                file_change::Kind::Modified,
                self.display_dir.clone(),
            )];
        }
        distinct
            .into_iter()
            .map(|(kind, name)| {
                let path = match name {
                    Some(name) => joined(&self.display_dir, &name.to_string_lossy()),
                    None => self.display_dir.clone(),
                };
                change(kind, path)
            })
            .collect()
    }
}

//! Terminal recordings in asciicast v2 (what `asciinema play` plays): a JSON header line,
//! then one `[seconds, "o", text]` line per output chunk and `[seconds, "r", "COLSxROWS"]`
//! per resize. Output is written by offset, so every byte is recorded once however many
//! viewers relay it and however often they reconnect.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{Store, TerminalRecord};

/// Recordings not written to for this long are closed (reopened on the next output).
const IDLE_CLOSE: Duration = Duration::from_secs(600);

/// One session's open recording.
pub struct Recording {
    writer: BufWriter<File>,
    /// Unix time (seconds, fractional) the session started: event times count from here.
    started: f64,
    /// Output bytes recorded so far.
    recorded: u64,
    /// Bytes of an incomplete UTF-8 character at the end of the last chunk.
    carry: Vec<u8>,
    /// Written since the last flush.
    dirty: bool,
    last_write: std::time::Instant,
}

impl Recording {
    fn create(path: &Path, record: &TerminalRecord, cols: u32, rows: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut writer = BufWriter::new(file);
        if !existed {
            let header = serde_json::json!({
                "version": 2,
                "width": cols,
                "height": rows,
                "timestamp": record.created_at,
                "title": format!("{} on {}", record.owner_name, record.host_id),
                "env": {"TERM": "xterm-256color"},
            });
            writeln!(writer, "{header}")?;
        }
        Ok(Recording {
            writer,
            started: record.created_at as f64,
            recorded: record.recorded_bytes,
            carry: Vec::new(),
            dirty: !existed,
            last_write: std::time::Instant::now(),
        })
    }

    fn elapsed(&self) -> f64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        ((now - self.started).max(0.0) * 1000.0).round() / 1000.0
    }

    fn event(&mut self, kind: &str, data: &str) -> std::io::Result<()> {
        let line = serde_json::json!([self.elapsed(), kind, data]);
        writeln!(self.writer, "{line}")?;
        self.dirty = true;
        self.last_write = std::time::Instant::now();
        Ok(())
    }

    /// Records the part of `payload` (output at `offset`) not recorded yet.
    pub fn output(&mut self, offset: u64, payload: &[u8]) -> std::io::Result<()> {
        let end = offset + payload.len() as u64;
        if end <= self.recorded {
            return Ok(());
        }
        let fresh = &payload[self.recorded.saturating_sub(offset) as usize..];
        self.recorded = end;
        self.carry.extend_from_slice(fresh);
        let text = take_utf8(&mut self.carry);
        if text.is_empty() {
            return Ok(());
        }
        self.event("o", &text)
    }

    pub fn resize(&mut self, cols: u32, rows: u32) -> std::io::Result<()> {
        self.event("r", &format!("{cols}x{rows}"))
    }
}

/// Takes the longest prefix of `bytes` that is complete UTF-8 (invalid bytes become U+FFFD),
/// leaving an incomplete character at the end for the next chunk.
pub fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *bytes = keep;
    text
}

/// The open recordings of this control plane, by session id.
pub struct Recordings {
    data_dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Mutex<Recording>>>>,
}

pub type SharedRecording = Arc<Mutex<Recording>>;

impl Recordings {
    pub fn new(data_dir: PathBuf) -> Self {
        Recordings {
            data_dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, SharedRecording>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a session's recording goes, relative to the data directory.
    pub fn relative_path(host_id: &str, session_id: &str) -> String {
        format!("recordings/{host_id}/{session_id}.cast")
    }

    /// The session's recording, opened (or created) on first use.
    pub fn open(
        &self,
        record: &TerminalRecord,
        cols: u32,
        rows: u32,
    ) -> std::io::Result<SharedRecording> {
        if let Some(open) = self.map().get(&record.id) {
            return Ok(open.clone());
        }
        let recording =
            Recording::create(&self.data_dir.join(&record.recording), record, cols, rows)?;
        Ok(self
            .map()
            .entry(record.id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(recording)))
            .clone())
    }

    /// Closes a finished session's recording.
    pub fn close(&self, session_id: &str) {
        self.map().remove(session_id);
    }

    /// Flushes what was written since the last call and records how far each recording
    /// got, so a restarted control plane continues without repeating output. Recordings
    /// idle for long are closed.
    pub async fn flush(&self, store: &Store) {
        let mut progress = Vec::new();
        self.map().retain(|id, recording| {
            let mut recording = recording.lock().unwrap_or_else(|p| p.into_inner());
            if recording.dirty {
                if let Err(e) = recording.writer.flush() {
                    tracing::warn!(session = %id, "cannot write recording: {e}");
                }
                recording.dirty = false;
                progress.push((id.clone(), recording.recorded));
            }
            recording.last_write.elapsed() < IDLE_CLOSE
        });
        for (id, recorded) in progress {
            if let Err(e) = store.set_recorded_bytes(&id, recorded).await {
                tracing::warn!(session = %id, "cannot record recording progress: {e:#}");
            }
        }
    }

    /// Deletes recordings last written longer ago than `retention`.
    pub fn prune(&self, retention: Duration) {
        let root = self.data_dir.join("recordings");
        let Ok(hosts) = std::fs::read_dir(&root) else {
            return;
        };
        for host in hosts.flatten() {
            let Ok(files) = std::fs::read_dir(host.path()) else {
                continue;
            };
            for file in files.flatten() {
                let old = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .is_some_and(|age| age > retention);
                if old && let Err(e) = std::fs::remove_file(file.path()) {
                    tracing::warn!("cannot delete old recording {}: {e}", file.path().display());
                }
            }
            let _ = std::fs::remove_dir(host.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(recorded_bytes: u64) -> TerminalRecord {
        TerminalRecord {
            id: "s".into(),
            host_id: "h".into(),
            owner_id: "u".into(),
            owner_name: "admin".into(),
            created_at: zpanel_shared::unix_now(),
            recording: "recordings/h/s.cast".into(),
            recorded_bytes,
        }
    }

    #[test]
    fn keeps_split_characters_whole() {
        let mut bytes = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut bytes), "");
        bytes.push("é".as_bytes()[1]);
        bytes.extend_from_slice(b"\xffok");
        assert_eq!(take_utf8(&mut bytes), "é\u{fffd}ok");
        assert!(bytes.is_empty());
    }

    #[test]
    fn records_each_byte_once_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recordings/h/s.cast");
        let mut recording = Recording::create(&path, &record(0), 80, 24).unwrap();
        recording.output(0, b"hello ").unwrap();
        recording.output(0, b"hello world").unwrap(); // overlaps: only "world" is new
        recording.resize(100, 30).unwrap();
        recording.writer.flush().unwrap();
        drop(recording);
        // a restarted control plane knows 11 bytes were recorded
        let mut recording = Recording::create(&path, &record(11), 80, 24).unwrap();
        recording.output(6, b"world!\n").unwrap();
        recording.writer.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        assert_eq!(lines[2][2], "world");
        assert_eq!(lines[3][1], "r");
        assert_eq!(lines[3][2], "100x30");
        assert_eq!(lines[4][2], "!\n");
    }
}

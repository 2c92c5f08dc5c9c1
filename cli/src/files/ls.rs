//! `zpanel ls HOST:PATH [-l] [--json] [--all]`: a directory's entries in name order, one page
//! at a time (a directory of a million entries never sits in memory whole), or the path
//! itself when it is not a directory. Long format: type and mode, owner, group, size,
//! modification time (UTC) and name, with where a symlink points.

use std::io::Write;

use serde::Serialize;
use zpanel_proto::{FileInfo, FileType};

use super::download::OutputClosed;
use super::location::Remote;
use super::{FIRST_LIST_PAGE, LIST_PAGE, is_directory, list_page, refused, stat};
use crate::client;
use crate::config::Settings;

pub struct LsOptions {
    pub long: bool,
    pub json: bool,
    /// Show names starting with a dot.
    pub all: bool,
}

/// One entry in `--json`, the same fields as the HTTP API's `info`.
#[derive(Debug, Serialize)]
struct EntryJson<'a> {
    path: String,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: u32,
    owner: &'a str,
    group: &'a str,
    modified_ms: i64,
    target: &'a str,
    version: &'a str,
}

/// Prints the listing; returns the exit code of `zpanel`.
pub async fn ls(settings: &Settings, remote: &Remote, options: &LsOptions) -> anyhow::Result<i32> {
    match list(settings, remote, options).await {
        Ok(()) => Ok(0),
        // Our stdout is closed (`| head`): end as a process killed by SIGPIPE would.
        Err(e) if e.is::<OutputClosed>() => Ok(128 + 13),
        Err(e) => Err(e),
    }
}

async fn list(settings: &Settings, remote: &Remote, options: &LsOptions) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    let info = stat(&mut client, remote)
        .await
        .map_err(|status| refused(remote, &status))?;
    let mut out = Printer::new(options);
    if !is_directory(&mut client, remote, &info).await {
        let name = remote
            .file_name()
            .map_or_else(|| info.path.clone(), str::to_string);
        out.page(
            &info.path,
            &[FileInfo {
                path: name,
                ..info.clone()
            }],
        )?;
        return out.end();
    }
    let mut after = String::new();
    loop {
        let limit = if after.is_empty() {
            FIRST_LIST_PAGE
        } else {
            LIST_PAGE
        };
        let listing = list_page(&mut client, remote, after, limit)
            .await
            .map_err(|status| refused(remote, &status))?;
        let directory = listing.directory.map(|d| d.path).unwrap_or_default();
        let entries: Vec<FileInfo> = listing
            .entries
            .into_iter()
            .filter(|e| options.all || !e.path.starts_with('.'))
            .collect();
        out.page(&directory, &entries)?;
        if listing.next_after.is_empty() {
            return out.end();
        }
        after = listing.next_after;
    }
}

/// Writes pages of entries as they come, in the chosen format.
struct Printer {
    long: bool,
    json: bool,
    /// Entries written so far (JSON needs commas between them).
    written: u64,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    fn new(options: &LsOptions) -> Printer {
        Printer {
            long: options.long,
            json: options.json,
            written: 0,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    /// Entries of `directory` (their `path` is their name).
    fn page(&mut self, directory: &str, entries: &[FileInfo]) -> anyhow::Result<()> {
        let text = if self.json {
            let mut text = String::new();
            for entry in entries {
                text.push_str(if self.written == 0 { "[\n  " } else { ",\n  " });
                text.push_str(&serde_json::to_string(&entry_json(directory, entry))?);
                self.written += 1;
            }
            text
        } else if self.long {
            long_lines(entries)
        } else {
            entries.iter().map(|e| format!("{}\n", e.path)).collect()
        };
        self.write(&text)
    }

    fn end(mut self) -> anyhow::Result<()> {
        if self.json {
            let end = if self.written == 0 { "[]\n" } else { "\n]\n" };
            self.write(end)?;
        }
        self.out.flush().map_err(stdout_failed)
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        self.out.write_all(text.as_bytes()).map_err(stdout_failed)
    }
}

/// Why writing the listing failed; a closed stdout (`| head`) ends it quietly.
fn stdout_failed(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return OutputClosed.into();
    }
    anyhow::anyhow!("stdout: {}", super::io_reason(&e))
}

fn entry_json<'a>(directory: &str, entry: &'a FileInfo) -> EntryJson<'a> {
    let path = if entry.path.starts_with('/') {
        entry.path.clone()
    } else {
        format!("{}/{}", directory.trim_end_matches('/'), entry.path)
    };
    EntryJson {
        path,
        name: entry.path.rsplit('/').next().unwrap_or_default(),
        kind: match entry.r#type() {
            FileType::File => "file",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::Other | FileType::Unknown => "other",
        },
        size: entry.size,
        mode: entry.mode,
        owner: &entry.owner,
        group: &entry.group,
        modified_ms: entry.modified_ns / 1_000_000,
        target: &entry.symlink_target,
        version: &entry.version,
    }
}

/// `drwxr-xr-x  root  root  4096  2026-11-22 02:47  name -> target`, columns aligned
/// within the page.
fn long_lines(entries: &[FileInfo]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                mode_string(e.r#type(), e.mode),
                e.owner.clone(),
                e.group.clone(),
                e.size.to_string(),
                modified(e.modified_ns),
            ]
        })
        .collect();
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (row, entry) in rows.iter().zip(entries) {
        let [mode, owner, group, size, time] = row;
        let [_, w_owner, w_group, w_size, _] = widths;
        out.push_str(&format!(
            "{mode}  {owner:<w_owner$}  {group:<w_group$}  {size:>w_size$}  {time}  {}",
            entry.path
        ));
        if entry.r#type() == FileType::Symlink {
            out.push_str(&format!(" -> {}", entry.symlink_target));
        }
        out.push('\n');
    }
    out
}

/// `-rwsr-xr-x` from a type and permission bits, as `ls -l` shows them.
fn mode_string(kind: FileType, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::File => '-',
        FileType::Other | FileType::Unknown => '?',
    });
    let special = [(0o4000, 's'), (0o2000, 's'), (0o1000, 't')];
    for (shift, (bit, letter)) in [6u32, 3, 0].into_iter().zip(special) {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let execute = bits & 1 != 0;
        s.push(match (mode & bit != 0, execute) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `2026-11-22 02:47` (UTC) from unix nanoseconds.
fn modified(unix_ns: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string(FileType::Directory, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(FileType::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(FileType::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(FileType::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(FileType::Directory, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(FileType::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn long_lines_align_their_columns_and_show_symlink_targets() {
        let entry = |name: &str, kind: FileType, size: u64, target: &str| FileInfo {
            path: name.into(),
            r#type: kind as i32,
            size,
            mode: 0o644,
            owner: "root".into(),
            group: if size > 100 {
                "www-data".into()
            } else {
                "root".into()
            },
            modified_ns: 1_700_000_000_000_000_000,
            symlink_target: target.into(),
            version: String::new(),
        };
        let text = long_lines(&[
            entry("a.txt", FileType::File, 5, ""),
            entry("big", FileType::File, 123_456, ""),
            entry("link", FileType::Symlink, 5, "/etc/hosts"),
        ]);
        assert_eq!(
            text,
            "-rw-r--r--  root  root           5  2023-11-14 22:13  a.txt\n\
             -rw-r--r--  root  www-data  123456  2023-11-14 22:13  big\n\
             lrw-r--r--  root  root           5  2023-11-14 22:13  link -> /etc/hosts\n"
        );
    }

    #[test]
    fn json_entries_carry_their_full_path() {
        let entry = FileInfo {
            path: "a.txt".into(),
            r#type: FileType::File as i32,
            modified_ns: 1_500_000_000,
            ..FileInfo::default()
        };
        let json = serde_json::to_value(entry_json("/srv/", &entry)).unwrap();
        assert_eq!(json["path"], "/srv/a.txt");
        assert_eq!(json["name"], "a.txt");
        assert_eq!(json["type"], "file");
        assert_eq!(json["modified_ms"], 1500);
    }
}

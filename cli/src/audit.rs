//! `zpanel audit`: reading the audit log (a table, a JSON array, or an export as JSON lines,
//! always oldest first) and verifying its hash chain.

use std::io::Write;

use futures_util::TryStreamExt;
use serde::Serialize;
use zpanel_proto::{AuditEntry, ListAuditRequest, VerifyAuditRequest};

use crate::client::{self, call_failed};
use crate::config::Settings;
use crate::display::{self, rfc3339};

/// How much of a host id and of an entry's detail a table shows.
const HOST_ID_CHARS: usize = 8;
const DETAIL_CHARS: usize = 60;
/// Entries asked for at once when reading the whole log (the server's most per call).
const PAGE: u32 = 10_000;

/// Which entries to read; empty strings and 0 mean no filter.
#[derive(Debug, Default)]
pub struct AuditQuery {
    /// A host name or id.
    pub host: String,
    pub user: String,
    /// An action or a prefix of it ("file" matches "file.write").
    pub action: String,
    /// Unix seconds.
    pub since: i64,
    /// The newest this many; 0 for the most the server returns.
    pub limit: u32,
}

/// How to print the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    JsonLines,
}

/// An entry with all its fields, as the JSON outputs print it (`at` in unix seconds, as the
/// hash covers it).
#[derive(Debug, Serialize)]
struct AuditJson<'a> {
    id: i64,
    at: i64,
    actor: &'a str,
    credential: &'a str,
    action: &'a str,
    workspace_id: &'a str,
    host_id: &'a str,
    target: &'a str,
    detail: &'a str,
    outcome: &'a str,
    hash: &'a str,
}

impl<'a> From<&'a AuditEntry> for AuditJson<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        AuditJson {
            id: e.id,
            at: e.at,
            actor: &e.actor,
            credential: &e.credential,
            action: &e.action,
            workspace_id: &e.workspace_id,
            host_id: &e.host_id,
            target: &e.target,
            detail: &e.detail,
            outcome: &e.outcome,
            hash: &e.hash,
        }
    }
}

/// `--since`: a duration back from `now` ("1h", "7d") or an RFC 3339 time, as unix seconds.
pub fn since_at(text: &str, now: i64) -> Result<i64, String> {
    if let Ok(back) = humantime::parse_duration(text) {
        let back = i64::try_from(back.as_secs()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(back).max(0));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            format!("{text:?} is neither a duration (1h, 7d) nor an RFC 3339 time (2025-01-31T12:00:00Z)")
        })
}

/// [`since_at`] from now, for the command line.
pub fn parse_since(text: &str) -> Result<i64, String> {
    since_at(text, zpanel_shared::unix_now())
}

/// Prints the matching entries, oldest first (so the newest is at the bottom).
pub async fn list(
    settings: &Settings,
    query: AuditQuery,
    format: AuditFormat,
) -> anyhow::Result<()> {
    let mut client = client::connect(settings).await?;
    // The server answers at most a page at a time; without a limit, read page after page
    // (newest first) until the log is exhausted.
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut before_id = 0;
    loop {
        let asked = if query.limit == 0 { PAGE } else { query.limit };
        let page: Vec<AuditEntry> = client
            .list_audit(ListAuditRequest {
                host: query.host.clone(),
                user: query.user.clone(),
                action: query.action.clone(),
                since: query.since,
                limit: asked,
                before_id,
            })
            .await
            .map_err(call_failed)?
            .into_inner()
            .try_collect()
            .await
            .map_err(call_failed)?;
        let full = page.len() == asked as usize;
        before_id = page.last().map_or(0, |e| e.id);
        entries.extend(page);
        if query.limit != 0 || !full || before_id <= 1 {
            break;
        }
    }
    entries.reverse();
    match format {
        AuditFormat::Json => {
            let rows: Vec<AuditJson> = entries.iter().map(AuditJson::from).collect();
            display::print_json(&rows, "audit entries")
        }
        AuditFormat::JsonLines => json_lines(&entries),
        AuditFormat::Table if entries.is_empty() => {
            println!("no audit entries match");
            Ok(())
        }
        AuditFormat::Table => {
            print!("{}", table(&entries));
            Ok(())
        }
    }
}

/// One JSON object per line; a reader that stops early (`| head`) ends it quietly.
fn json_lines(entries: &[AuditEntry]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write = || -> std::io::Result<()> {
        for e in entries {
            serde_json::to_writer(&mut out, &AuditJson::from(e))?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    match write() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write the export: {e}"))
        }
        _ => Ok(()),
    }
}

fn table(entries: &[AuditEntry]) -> String {
    let header = [
        "TIME", "ACTOR", "ACTION", "HOST", "TARGET", "OUTCOME", "DETAIL",
    ];
    display::table(
        header,
        entries.iter().map(|e| {
            [
                rfc3339(e.at),
                display::cell(&e.actor),
                display::cell(&e.action),
                display::cell(&e.host_id.chars().take(HOST_ID_CHARS).collect::<String>()),
                display::cell(&e.target),
                display::cell(&e.outcome),
                display::truncate(&display::cell(&e.detail), DETAIL_CHARS),
            ]
        }),
    )
}

/// Checks the whole hash chain: 0 when it holds, 1 (with one line on stderr) where it
/// breaks.
pub async fn verify(settings: &Settings) -> anyhow::Result<i32> {
    let mut client = client::connect(settings).await?;
    let verified = client
        .verify_audit(VerifyAuditRequest {})
        .await
        .map_err(call_failed)?
        .into_inner();
    if verified.ok {
        println!("audit log verified: {} entries", verified.entries);
        return Ok(0);
    }
    eprintln!(
        "audit log broken at entry {}: {}",
        verified.broken_at, verified.reason
    );
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_back_or_a_time() {
        let now = 1_800_000_000;
        assert_eq!(since_at("1h", now), Ok(now - 3600));
        assert_eq!(since_at("7d", now), Ok(now - 7 * 86400));
        assert_eq!(since_at("1970-01-01T00:01:00Z", now), Ok(60));
        assert_eq!(since_at("1970-01-01T02:01:00+02:00", now), Ok(60));
        assert!(since_at("yesterday", now).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn the_table_shortens_host_ids_and_details_and_dashes_empty_cells() {
        let entry = AuditEntry {
            id: 7,
            at: 60,
            actor: "admin".into(),
            action: "file.write".into(),
            host_id: "0123456789abcdef".into(),
            target: "/etc/hosts".into(),
            detail: "x".repeat(100),
            outcome: "ok".into(),
            ..AuditEntry::default()
        };
        let bare = AuditEntry {
            id: 8,
            at: 61,
            actor: "admin".into(),
            action: "audit.verify".into(),
            outcome: "ok".into(),
            ..AuditEntry::default()
        };
        let text = table(&[entry, bare]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "TIME                  ACTOR  ACTION        HOST      TARGET      OUTCOME  DETAIL"
        );
        assert_eq!(
            lines[1],
            format!(
                "1970-01-01T00:01:00Z  admin  file.write    01234567  /etc/hosts  ok       {}…",
                "x".repeat(DETAIL_CHARS - 1)
            )
        );
        assert_eq!(
            lines[2],
            "1970-01-01T00:01:01Z  admin  audit.verify  -         -           ok       -"
        );
    }
}

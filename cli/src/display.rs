//! How the CLI's output reads: aligned tables, pretty JSON, and times (RFC 3339 in the JSON of
//! hosts and sessions, unix seconds in the access and docker commands' JSON as in the API, "5m
//! ago" and "in 3d" in tables).

use anyhow::Context;
use serde::Serialize;

/// A unix time as RFC 3339 (UTC); the number itself if it is out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// How long before `now` a unix time was, in its largest whole unit: "just now", "42s ago",
/// "5m ago", "3h ago", "12d ago"; "never" for 0.
pub fn ago(unix: i64, now: i64) -> String {
    if unix <= 0 {
        return "never".into();
    }
    match now.saturating_sub(unix) {
        ..5 => "just now".into(),
        seconds => format!("{} ago", span(seconds)),
    }
}

/// How long after `now` a unix time is, like [`ago`]: "in 29d", "in 5m"; a time already past
/// reads as [`ago`] does, and 0 as "never".
pub fn until(unix: i64, now: i64) -> String {
    if unix <= 0 {
        return "never".into();
    }
    match unix.saturating_sub(now) {
        ..=0 => ago(unix, now),
        seconds => format!("in {}", span(seconds)),
    }
}

/// A positive number of seconds in its largest whole unit: "42s", "5m", "3h", "12d".
fn span(seconds: i64) -> String {
    match seconds {
        ..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// A header and rows as text: each column as wide as its widest cell, two spaces apart, no
/// trailing spaces.
pub fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    columns(&header.map(String::from), rows.into_iter().map(Vec::from))
}

/// [`table`] for columns known only when the rows come (`docker top`): a row may have more
/// cells than the header, or fewer.
pub fn columns(header: &[String], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header.to_vec()).chain(rows).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints `value` as pretty JSON on stdout; `what` names it in the error.
pub fn print_json(value: &impl Serialize, what: &str) -> anyhow::Result<()> {
    let text =
        serde_json::to_string_pretty(value).with_context(|| format!("cannot encode {what}"))?;
    println!("{text}");
    Ok(())
}

/// A table cell: the text, or "-" when it is empty (so every column has a word).
pub fn cell(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.into()
    }
}

/// At most `max` characters of `text`, ending in "…" when cut, on one line.
pub fn truncate(text: &str, max: usize) -> String {
    let line = text.replace(['\n', '\r', '\t'], " ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_their_largest_whole_unit() {
        let now = 1_800_000_000;
        assert_eq!(ago(0, now), "never");
        assert_eq!(ago(now + 3, now), "just now", "a clock a little ahead");
        assert_eq!(ago(now - 4, now), "just now");
        assert_eq!(ago(now - 42, now), "42s ago");
        assert_eq!(ago(now - 5 * 60 - 59, now), "5m ago");
        assert_eq!(ago(now - 3 * 3600, now), "3h ago");
        assert_eq!(ago(now - 12 * 86400, now), "12d ago");
        assert_eq!(until(0, now), "never");
        assert_eq!(until(now + 29 * 86400 + 5, now), "in 29d");
        assert_eq!(until(now + 90, now), "in 1m");
        assert_eq!(until(now - 7200, now), "2h ago");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = [
            ["a1".to_string(), "admin".into(), String::new()],
            ["b".to_string(), "x".into(), "long cell".into()],
        ];
        assert_eq!(
            table(["ID", "OWNER", "NOTE"], rows),
            "ID  OWNER  NOTE\n\
             a1  admin\n\
             b   x      long cell\n"
        );
    }

    #[test]
    fn columns_take_as_many_cells_as_a_row_has() {
        let header = ["PID".to_string(), "CMD".into()];
        let rows = [
            vec!["1".to_string(), "sh".into()],
            vec!["22".to_string(), "sleep".into(), "60".into()],
        ];
        assert_eq!(
            columns(&header, rows),
            "PID  CMD\n\
             1    sh\n\
             22   sleep  60\n"
        );
    }

    #[test]
    fn long_cells_are_cut_on_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("two\nlines", 20), "two lines");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
        assert_eq!(cell(""), "-");
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}

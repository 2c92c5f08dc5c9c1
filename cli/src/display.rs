//! How times read in the CLI's output: RFC 3339 in JSON, "5m ago" in tables.

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
    let seconds = now.saturating_sub(unix);
    match seconds {
        ..5 => "just now".into(),
        5..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
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
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}

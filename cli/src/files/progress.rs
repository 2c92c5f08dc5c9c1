//! A transfer's progress on one line of stderr, redrawn a few times a second, and only when
//! stderr is a terminal (scripts and logs get nothing).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Progress {
    label: String,
    /// Bytes in all, when known.
    total: Option<u64>,
    enabled: bool,
    started: Instant,
    last_drawn: Option<Instant>,
    done: u64,
}

impl Progress {
    /// A progress line for `label`, shown when stderr is a terminal.
    pub fn on_terminal(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress::new(label.into(), total, std::io::stderr().is_terminal())
    }

    /// No progress line at all (the output is the content, or the transfer is small).
    pub fn hidden() -> Progress {
        Progress::new(String::new(), None, false)
    }

    fn new(label: String, total: Option<u64>, enabled: bool) -> Progress {
        Progress {
            label,
            total,
            enabled,
            started: Instant::now(),
            last_drawn: None,
            done: 0,
        }
    }

    /// `done` bytes are through; redraws if it is time.
    pub fn update(&mut self, done: u64) {
        self.done = done;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_drawn
            .is_some_and(|last| now.duration_since(last) < REDRAW_EVERY)
        {
            return;
        }
        self.last_drawn = Some(now);
        self.draw("");
    }

    /// The transfer finished, all of it: the final line stays.
    pub fn finish(&mut self) {
        if let Some(total) = self.total {
            self.done = total;
        }
        if self.enabled && self.last_drawn.is_some() {
            self.draw("\n");
            self.last_drawn = None;
        }
    }

    /// Erases the line (before an error or another message).
    pub fn clear(&mut self) {
        if self.enabled && self.last_drawn.take().is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }

    fn draw(&self, end: &str) {
        let line = line(&self.label, self.done, self.total, self.started.elapsed());
        let _ = write!(std::io::stderr(), "\r\x1b[K{line}{end}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `label  42%  1.2 GiB / 2.9 GiB  85.0 MiB/s`.
fn line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = if elapsed.as_secs_f64() > 0.0 {
        done as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    let amount = match total {
        Some(total) if total > 0 => format!(
            "{:>3}%  {} / {}",
            done.saturating_mul(100) / total,
            human_bytes(done as f64),
            human_bytes(total as f64)
        ),
        _ => human_bytes(done as f64),
    };
    format!("{label}  {amount}  {}/s", human_bytes(rate))
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(10.0 * 1024.0 * 1024.0 * 1024.0), "10.0 GiB");
    }

    #[test]
    fn the_line_has_the_share_done_the_amounts_and_the_rate() {
        let mib = 1024 * 1024;
        assert_eq!(
            line(
                "web-1:/x",
                25 * mib,
                Some(100 * mib),
                Duration::from_secs(5)
            ),
            "web-1:/x   25%  25.0 MiB / 100.0 MiB  5.0 MiB/s"
        );
        assert_eq!(
            line("x", 2048, None, Duration::from_secs(1)),
            "x  2.0 KiB  2.0 KiB/s"
        );
    }
}

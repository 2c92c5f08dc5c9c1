//! Counters the control plane exposes at `/metrics` in the Prometheus text format. (The
//! hosts' own metrics are at `/metrics/hosts`, see `api/http/metrics`.)

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub channels_open: AtomicU64,
    pub bytes_routed: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub sessions_accepted: AtomicU64,
    pub handshakes_refused: AtomicU64,
    /// Metric samples (or single values) refused, by [`DropReason`].
    pub metric_samples_dropped: [AtomicU64; DropReason::ALL.len()],
    /// Metric batches left unacknowledged for the daemon to send again.
    pub metric_batches_refused: AtomicU64,
}

/// Why the metrics writer refused a sample (or, `Invalid`, one value of a sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// More than a minute ahead of the control plane's clock.
    Future,
    /// Older than the raw retention.
    Past,
    /// Not after the host's last stored sample: a resend.
    Duplicate,
    /// Closer to the previous sample than the host's interval allows.
    TooFrequent,
    /// NaN, infinite or negative.
    Invalid,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Future,
        DropReason::Past,
        DropReason::Duplicate,
        DropReason::TooFrequent,
        DropReason::Invalid,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Future => "future",
            DropReason::Past => "past",
            DropReason::Duplicate => "duplicate",
            DropReason::TooFrequent => "too_frequent",
            DropReason::Invalid => "invalid",
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` samples (or values) refused for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        Self::add(&self.metric_samples_dropped[reason as usize], n);
    }

    pub fn render(&self, hosts_online: usize) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows = [
            (
                "zpanel_hosts_online",
                "gauge",
                "Hosts with a live bridge session.",
                hosts_online as u64,
            ),
            (
                "zpanel_channels_open",
                "gauge",
                "Channels open across all sessions.",
                load(&self.channels_open),
            ),
            (
                "zpanel_bytes_routed_total",
                "counter",
                "Stream payload bytes routed between clients and hosts.",
                load(&self.bytes_routed),
            ),
            (
                "zpanel_frames_rejected_total",
                "counter",
                "Bridge frames refused as malformed, oversized, out of order or for an unknown channel.",
                load(&self.frames_rejected),
            ),
            (
                "zpanel_sessions_accepted_total",
                "counter",
                "Bridge sessions accepted.",
                load(&self.sessions_accepted),
            ),
            (
                "zpanel_handshakes_refused_total",
                "counter",
                "Bridge connections refused during TLS or the hello.",
                load(&self.handshakes_refused),
            ),
            (
                "zpanel_metric_batches_refused_total",
                "counter",
                "Metric batches left unacknowledged (the writer was busy or an earlier batch was missing); daemons send them again.",
                load(&self.metric_batches_refused),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let name = "zpanel_metric_samples_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Metric samples (values, for reason invalid) refused by the metrics writer.\n# TYPE {name} counter"
        );
        for reason in DropReason::ALL {
            let value = load(&self.metric_samples_dropped[reason as usize]);
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {value}", reason.label());
        }
        out
    }
}

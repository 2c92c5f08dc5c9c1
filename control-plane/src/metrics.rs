//! Counters the control plane exposes at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub channels_open: AtomicU64,
    pub bytes_routed: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub sessions_accepted: AtomicU64,
    pub handshakes_refused: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, hosts_online: usize) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "zpanel_hosts_online",
            "gauge",
            "Hosts with a live bridge session.",
            hosts_online as u64,
        );
        metric(
            "zpanel_channels_open",
            "gauge",
            "Channels open across all sessions.",
            self.channels_open.load(Ordering::Relaxed),
        );
        metric(
            "zpanel_bytes_routed_total",
            "counter",
            "Stream payload bytes routed between clients and hosts.",
            self.bytes_routed.load(Ordering::Relaxed),
        );
        metric(
            "zpanel_frames_rejected_total",
            "counter",
            "Bridge frames refused as malformed, oversized, out of order or for an unknown channel.",
            self.frames_rejected.load(Ordering::Relaxed),
        );
        metric(
            "zpanel_sessions_accepted_total",
            "counter",
            "Bridge sessions accepted.",
            self.sessions_accepted.load(Ordering::Relaxed),
        );
        metric(
            "zpanel_handshakes_refused_total",
            "counter",
            "Bridge connections refused during TLS or the hello.",
            self.handshakes_refused.load(Ordering::Relaxed),
        );
        out
    }
}
